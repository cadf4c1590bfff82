//! [`WorkQueue`]: a bounded MPMC queue of blocks, shared by processes.
//!
//! A ring of `capacity` slots (a power of two) after a header, in one block
//! of the segment. Each slot has a *stamp* word, `seq << 32 | claimant`, and
//! a *value* word, the block token (`generation << 32 | payload offset`).
//! Positions count up forever in `head` / `tail`; position `p` uses slot
//! `p % capacity`, and its stamps are (`2p` and `2p + 1` wrap in 32 bits):
//!
//! ```text
//!   (2p,   0)  EMPTY    waiting for the producer of position p
//!   (2p,   o)  WRITING  producer o claimed it, is writing it
//!   (2p+1, 0)  FULL     holds a message for the consumer of position p
//!   (2p+1, o)  READING  consumer o claimed it, is taking the block
//!   (2(p+capacity), 0)  EMPTY for the next lap
//!
//!   push: CAS EMPTY -> WRITING(me); tail += 1; value = token;
//!         block owner -> segment; stamp = FULL
//!   pop:  CAS FULL -> READING(me);  head += 1; block owner segment -> me;
//!         value = 0; stamp = EMPTY(next lap)
//! ```
//!
//! This is the bounded ring with per-slot sequence numbers (Vyukov's), with
//! the claim made on the slot itself instead of on `head`/`tail`, so that
//! every in-flight operation is recorded in shared memory with the owner id
//! of the participant doing it. `head` and `tail` are hints that anyone may
//! advance past a claimed slot; they never decide ownership.
//!
//! # Ownership and crashes
//!
//! While a block is in the queue its owner is the segment; the consumer
//! adopts it. A push refuses a block the segment owns already (it may be
//! queued through another handle of it), so a block is in one slot at
//! most. A participant killed at any instruction leaves at most one
//! slot claimed with its id, and [`WorkQueue::recover`] (or a blocked
//! `pop_timeout` / `push_timeout` that notices the dead claimant) finishes
//! the job:
//!
//! | killed while | slot | what recovery does |
//! |---|---|---|
//! | WRITING, before the block went to the segment | `(2p, dead)` | publishes an empty *hole* (consumers skip it); the block is still the dead producer's, `recover()` of the handler frees it |
//! | WRITING, after the block went to the segment | `(2p, dead)` | publishes the message: the push completes |
//! | READING, before adopting | `(2p+1, dead)` | delivers the block again, still owned by the segment: claims a slot at the tail like a producer, or — when the tail waits on this very slot — turns it into FULL for its next lap. On a closed queue it hands the block to the caller of `recover()` instead (consumers may have drained past any place it could go). Nothing is lost. |
//! | READING, after adopting | `(2p+1, dead)` | frees the slot; the block is the dead consumer's, `recover()` of the handler frees it |
//!
//! A dead producer never wedges other producers (they skip its claimed
//! slot); until recovery runs, consumers stop at its slot and the ring fills
//! behind it. A dead consumer's slot stops producers one lap later. A
//! blocked `pop_timeout` / `push_timeout` checks the claimant of the slot it
//! waits on every few milliseconds and repairs it if it died; `try_push` /
//! `try_pop` never do (they never query a liveness lock).
//!
//! A recoverer itself killed while moving a block to the tail can strand
//! that one block (owned by the segment, in no slot): recovery is built for
//! one death at a time, not for the recoverer's own.
//!
//! # Waiting
//!
//! `pop_timeout` / `push_timeout` spin briefly, then sleep with a futex on an
//! event word of the header (not private: it works across processes). A
//! waiter counts itself in, then re-checks; the other side publishes, then
//! looks at the count and, if anyone waits, bumps the word and wakes. The
//! waiter has a SeqCst fence between its count and its re-check; the
//! publisher's stamp store and its load of the count are SeqCst operations
//! (recovery's rarer publishes use a fence instead), so in the single total
//! order of SeqCst operations and fences one of the two sees the other.
//!
//! # Closing
//!
//! `close()` sets a flag. A producer checks it *after* claiming its slot
//! (SeqCst both), and turns its claim into a hole if the queue is closed;
//! a consumer reports `Closed` only if, after seeing the flag, the slot at
//! `head` is still EMPTY. So every push that succeeded is popped before any
//! consumer hears `Closed`.

mod error;
mod prefetch;
mod recover;
mod stats;
mod wait;

pub use error::{DestroyError, PopError, PushError, QueueError, QueueRecovery};
pub(crate) use stats::is_queue_magic;
pub use stats::{QueueStats, CLAIMANTS_LISTED};

use crate::shm::{self, checked_region, fault, NotThere};
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering::*};
use crate::tables::{Registry, RegistryError, TypeFingerprint};
use matrix_core::{state, BlockError, OwnerId, BLOCK_HEADER_SIZE};
use matrix_handler::{layout_tag, Block, BlockToken, HandlerError, HandlerFunctions};
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

const QUEUE_MAGIC: u64 = u64::from_le_bytes(*b"MXQUEUE1");
/// Largest capacity of one queue.
pub const MAX_QUEUE_CAPACITY: u32 = 1 << 24;
/// How often a blocked call checks the claimant of the slot it waits on.
const CLAIMANT_CHECK: Duration = Duration::from_millis(10);

/// The shared header. Hot words sit 128 bytes apart so producers (tail) and
/// consumers (head) do not share a cache line.
#[repr(C)]
struct QueueHeader {
    magic: AtomicU64,
    capacity: AtomicU32,
    /// `layout_tag::<T>()` of the element type.
    elem_tag: AtomicU32,
    /// Non-zero once closed.
    closed: AtomicU32,
    _pad0: [u32; 27],
    tail: AtomicU64,
    _pad1: [u64; 15],
    head: AtomicU64,
    _pad2: [u64; 15],
    /// Bumped when a message is published while consumers sleep.
    not_empty: AtomicU32,
    consumers_waiting: AtomicU32,
    _pad3: [u64; 15],
    /// Bumped when a slot is freed while producers sleep.
    not_full: AtomicU32,
    producers_waiting: AtomicU32,
    _pad4: [u64; 15],
}

#[repr(C)]
struct Slot {
    stamp: AtomicU64,
    value: AtomicU64,
}

const HEADER_BYTES: u64 = std::mem::size_of::<QueueHeader>() as u64;
const SLOT_BYTES: u64 = std::mem::size_of::<Slot>() as u64;
const _: () = assert!(HEADER_BYTES == 640 && SLOT_BYTES == 16);
const _: () =
    assert!(std::mem::align_of::<QueueHeader>() == 8 && std::mem::align_of::<Slot>() == 8);

/// Registry type id of every queue (the element type is checked separately).
const QUEUE_TYPE_ID: u64 = crate::tables::type_id("matrix-internals::WorkQueue v1");

#[inline]
fn stamp(seq: u32, who: u32) -> u64 {
    ((seq as u64) << 32) | who as u64
}
#[inline]
fn seq_of(stamp: u64) -> u32 {
    (stamp >> 32) as u32
}
#[inline]
fn who_of(stamp: u64) -> u32 {
    stamp as u32
}
#[inline]
fn empty_seq(pos: u64) -> u32 {
    pos.wrapping_mul(2) as u32
}
#[inline]
fn full_seq(pos: u64) -> u32 {
    empty_seq(pos).wrapping_add(1)
}

/// Moves a position hint past `pos` (no-op if someone already did).
#[inline]
fn advance(word: &AtomicU64, pos: u64) {
    // Release: a participant that Acquires the new value also sees the
    // claim of slot `pos` we observed, so no claim can overtake it (the
    // close argument relies on claims happening in position order).
    let _ = word.compare_exchange(pos, pos + 1, Release, Relaxed);
}

/// Why a push refuses a block whose state word is `word`, if it does: as
/// `set_owner_of` judges a word not live or of another generation than
/// the handle's (`generation`), and — the push's own rule — a block the
/// segment owns already (it may be queued through another handle).
#[inline]
fn push_refusal(header: u32, word: u64, generation: u64) -> Option<HandlerError> {
    let (st, found) = (state::state_of(word), state::generation_of(word));
    if !state::is_live(st) {
        return Some(
            BlockError::NotLive {
                offset: header,
                state: st,
            }
            .into(),
        );
    }
    if found != generation {
        return Some(
            BlockError::Stale {
                offset: header,
                expected: generation,
                found,
            }
            .into(),
        );
    }
    (state::owner_of(word) == OwnerId::SEGMENT.0).then_some(HandlerError::NotOwner {
        offset: header,
        owner: OwnerId::SEGMENT.0,
    })
}

/// A bounded multi-producer multi-consumer queue of `Block<T>`, living in
/// the segment and shared by threads and processes; see the module docs.
///
/// The handle owns a handler (`SharedHandler`s are cheap to clone) and is
/// `Clone` when the handler is.
pub struct WorkQueue<T, H: HandlerFunctions> {
    handler: H,
    offset: u32,
    capacity: u32,
    owner: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T, H: HandlerFunctions + Clone> Clone for WorkQueue<T, H> {
    fn clone(&self) -> Self {
        WorkQueue {
            handler: self.handler.clone(),
            ..*self
        }
    }
}

impl<T, H: HandlerFunctions> fmt::Debug for WorkQueue<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue")
            .field("type", &std::any::type_name::<T>())
            .field("offset", &self.offset)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

fn fingerprint<T>() -> TypeFingerprint {
    TypeFingerprint {
        size: HEADER_BYTES as u32,
        align: 8,
        type_id: QUEUE_TYPE_ID ^ layout_tag::<T>() as u64,
    }
}

impl<T, H: HandlerFunctions> WorkQueue<T, H> {
    /// Creates a queue of `capacity` slots (rounded up to a power of two)
    /// registered under `name` in the root registry. Fails if the name exists.
    pub fn create(handler: H, name: &str, capacity: u32) -> Result<Self, QueueError> {
        match Self::open_or_create(handler, name, capacity)? {
            (queue, true) => Ok(queue),
            (_, false) => Err(QueueError::AlreadyExists {
                name: name.to_owned(),
            }),
        }
    }

    /// Opens the queue registered under `name` (refused if it was created
    /// for another element type).
    pub fn open(handler: H, name: &str) -> Result<Self, QueueError> {
        let offset = Registry::root(&handler)?.find(name, fingerprint::<T>())?;
        Self::open_at(handler, offset)
    }

    /// Opens `name`, or creates it with `capacity` slots; the flag says
    /// whether this call created it. Exactly one of several racing
    /// processes creates it.
    pub fn open_or_create(
        handler: H,
        name: &str,
        capacity: u32,
    ) -> Result<(Self, bool), QueueError> {
        let slots = Self::checked_capacity(capacity)?;
        let (offset, created) =
            Registry::root(&handler)?.find_or_create_raw(name, fingerprint::<T>(), || {
                Self::allocate_ring(&handler, slots)
            })?;
        Ok((Self::open_at(handler, offset)?, created))
    }

    /// Creates an unnamed queue; hand [`offset`](Self::offset) to others and
    /// [`open_at`](Self::open_at) it there. The block belongs to the segment.
    pub fn create_unnamed(handler: H, capacity: u32) -> Result<Self, QueueError> {
        let slots = Self::checked_capacity(capacity)?;
        let offset = Self::allocate_ring(&handler, slots)?;
        handler
            .matrix()
            .set_owner(offset - BLOCK_HEADER_SIZE, None, OwnerId::SEGMENT)
            .map_err(HandlerError::from)?;
        Self::open_at(handler, offset)
    }

    /// Opens the queue whose payload starts at `offset`, validating the
    /// block, the header and the element type.
    pub fn open_at(handler: H, offset: u32) -> Result<Self, QueueError> {
        let not = |what| QueueError::NotAQueue { offset, what };
        // SAFETY: QueueHeader is repr(C), atomics and integers, magic first.
        let hdr: &QueueHeader = unsafe { shm::structure_header(&handler, offset, QUEUE_MAGIC) }
            .map_err(|e| match e {
                NotThere::NoBlock => not("no live block of a queue's size there"),
                NotThere::WrongMagic => not("wrong magic"),
            })?;
        let capacity = hdr.capacity.load(Relaxed);
        if !capacity.is_power_of_two() || capacity > MAX_QUEUE_CAPACITY {
            return Err(not("impossible capacity"));
        }
        // Relaxed: ordered after the magic's Acquire load above.
        if hdr.elem_tag.load(Relaxed) != layout_tag::<T>() {
            return Err(not("created for another element type"));
        }
        checked_region(
            &handler,
            offset,
            HEADER_BYTES + capacity as u64 * SLOT_BYTES,
        )
        .map_err(|_| not("block smaller than its recorded capacity"))?;
        let owner = handler.matrix().owner_id().0;
        Ok(WorkQueue {
            handler,
            offset,
            capacity,
            owner,
            _type: PhantomData,
        })
    }

    fn checked_capacity(capacity: u32) -> Result<u32, QueueError> {
        if capacity == 0 || capacity > MAX_QUEUE_CAPACITY {
            return Err(QueueError::InvalidCapacity {
                requested: capacity,
            });
        }
        Ok(capacity.next_power_of_two())
    }

    /// Allocates and initializes a ring; returns its payload offset (the
    /// block is still the caller's).
    fn allocate_ring(handler: &H, capacity: u32) -> Result<u32, HandlerError> {
        let bytes = HEADER_BYTES + capacity as u64 * SLOT_BYTES;
        let offset = handler.allocate_raw(bytes as u32)?.offset();
        // SAFETY: freshly allocated payload of `bytes` bytes, known to nobody else yet.
        unsafe {
            std::ptr::write_bytes(
                handler.base_ptr().add(offset as usize) as *mut u8,
                0,
                bytes as usize,
            )
        };
        for i in 0..capacity as u64 {
            // SAFETY: slot i < capacity lies in the payload just allocated; 8-aligned.
            let slot: &Slot =
                unsafe { shm::shared(handler, offset as u64 + HEADER_BYTES + i * SLOT_BYTES) };
            // Relaxed: published by the magic's Release below.
            slot.stamp.store(stamp(empty_seq(i), 0), Relaxed);
        }
        // SAFETY: as above, the header at the start of the payload.
        let hdr: &QueueHeader = unsafe { shm::shared(handler, offset as u64) };
        hdr.capacity.store(capacity, Relaxed);
        hdr.elem_tag.store(layout_tag::<T>(), Relaxed);
        // Release: a process that Acquires the magic sees the whole ring.
        hdr.magic.store(QUEUE_MAGIC, Release);
        Ok(offset)
    }

    /// Payload offset of the queue block.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Messages in the queue (claimed positions not yet taken; exact at
    /// quiescence, an estimate under concurrency; holes count until skipped).
    pub fn len(&self) -> usize {
        let q = self.header();
        // Relaxed: an estimate; head is read first so the result is not negative
        // except by a racing pop, which the saturation absorbs.
        let head = q.head.load(Relaxed);
        let tail = q.tail.load(Relaxed);
        (tail.saturating_sub(head) as usize).min(self.capacity as usize)
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        // Acquire: pairs with close()'s store; a hint only.
        self.header().closed.load(Acquire) != 0
    }

    /// The handler this queue works through.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    #[inline]
    fn header(&self) -> &QueueHeader {
        // SAFETY: validated at open_at for the header and every slot; the
        // handler we own keeps the mapping alive.
        unsafe { shm::shared(&self.handler, self.offset as u64) }
    }

    #[inline]
    fn slot(&self, pos: u64) -> &Slot {
        let index = pos & (self.capacity as u64 - 1);
        // SAFETY: index < capacity, validated at open_at; 8-aligned.
        unsafe {
            shm::shared(
                &self.handler,
                self.offset as u64 + HEADER_BYTES + index * SLOT_BYTES,
            )
        }
    }

    /// Pushes `block` if a slot is free. Gives it back when the queue is
    /// full or closed. On success the block belongs to the segment until a
    /// consumer adopts it.
    ///
    /// A block the segment owns already is refused
    /// ([`PushError::Refused`] with [`HandlerError::NotOwner`] naming
    /// [`OwnerId::SEGMENT`]): it may be queued already, through another
    /// handle. To push a block released to the segment, adopt it first.
    #[inline]
    pub fn try_push(&self, block: Block<T>) -> Result<(), PushError<T>> {
        // Relaxed: an early exit only; the authoritative check follows the claim.
        if self.header().closed.load(Relaxed) != 0 {
            return Err(PushError::Closed(block));
        }
        match self.claim_for_push() {
            Some((slot, pos)) => self.finish_push(slot, pos, block),
            None => Err(PushError::Full(block)),
        }
    }

    fn claim_for_push(&self) -> Option<(&Slot, u64)> {
        let q = self.header();
        // Acquire: pairs with `advance`'s Release.
        let mut pos = q.tail.load(Acquire);
        loop {
            let slot = self.slot(pos);
            // The CAS below follows: one trip for the line, not two.
            prefetch::for_write(slot as *const Slot as *const u8);
            // Acquire: pairs with the consumer's Release that emptied the
            // slot, so its clearing of `value` happens before our write.
            let s = slot.stamp.load(Acquire);
            let want = empty_seq(pos);
            let diff = seq_of(s).wrapping_sub(want) as i32;
            if diff == 0 && who_of(s) == 0 {
                // SeqCst: the claim is ordered before our load of `closed`
                // and against close() + a consumer's drain check (module docs).
                if slot
                    .stamp
                    .compare_exchange_weak(s, stamp(want, self.owner), SeqCst, Relaxed)
                    .is_ok()
                {
                    advance(&q.tail, pos);
                    return Some((slot, pos));
                }
            } else if diff < 0 {
                // The slot still holds the previous lap: full, unless tail moved.
                // Acquire: as above.
                let now = q.tail.load(Acquire);
                if now == pos {
                    return None;
                }
                pos = now;
            } else {
                // Claimed for `pos` already (diff == 0) or beyond: help the hint on.
                advance(&q.tail, pos);
                // Acquire: as above.
                pos = q.tail.load(Acquire);
            }
        }
    }

    fn finish_push(&self, slot: &Slot, pos: u64, block: Block<T>) -> Result<(), PushError<T>> {
        fault::at(fault::PUSH_CLAIMED);
        let want = empty_seq(pos);
        // SeqCst: after our SeqCst claim; see the module docs on closing.
        if self.header().closed.load(SeqCst) != 0 {
            self.publish_full(slot, want);
            return Err(PushError::Closed(block));
        }
        // Relaxed: published by publish_full's Release; a recoverer that
        // sees the block owned by the segment (AcqRel CAS below) sees it too.
        slot.value.store(block.token().word(), Relaxed);
        if let Err(e) = self.give_to_segment(&block) {
            slot.value.store(0, Relaxed);
            self.publish_full(slot, want);
            return Err(PushError::Refused(block, e));
        }
        fault::at(fault::PUSH_WRITTEN);
        self.publish_full(slot, want);
        Ok(())
    }

    /// Makes the segment the block's owner, as
    /// [`release_to_segment`](HandlerFunctions::release_to_segment) does
    /// but without reading the tag and length: the owner change needs only
    /// this segment's nonce, one validated header (bounds, alignment, a
    /// genuine header, its size), its state word (a live state, the
    /// handle's generation) and one CAS from that word. The consumer
    /// validates the rest when it rebuilds the handle from the token
    /// (`adopt`).
    ///
    /// A block the segment owns already is refused: another handle of it
    /// may have been pushed, and a second slot holding it would deliver it
    /// twice (the second consumer to pop it adopts a block that another
    /// queue or participant may hold by then). So the CAS is made from the
    /// word just judged, not from any owner: a push of another handle
    /// landing between the load and the CAS makes the CAS fail, and the
    /// word is judged again. Of two pushes of one block, exactly one lands.
    #[inline]
    fn give_to_segment(&self, block: &Block<T>) -> Result<(), HandlerError> {
        let expected = self.handler.segment_nonce();
        if block.nonce() != expected {
            return Err(HandlerError::ForeignHandle {
                expected,
                found: block.nonce(),
            });
        }
        let matrix = self.handler.matrix();
        let header = block.header_offset();
        loop {
            let (hdr, _) = matrix.block_header(header)?;
            // Acquire: pairs with the Release of the word's last change.
            let word = hdr.state.load(Acquire);
            if let Some(refused) = push_refusal(header, word, block.generation()) {
                return Err(refused);
            }
            fault::at(fault::PUSH_HANDING_OVER);
            // One CAS from the word just judged (generation, live state and
            // owner in it), so the decision is on that one word.
            let owner = OwnerId(state::owner_of(word));
            match matrix.set_owner_from(hdr, header, word, Some(owner), OwnerId::SEGMENT) {
                Ok(_) => return Ok(()),
                // The owner changed since the load (or the header went bad,
                // which `block_header` then reports): judge it again.
                Err(BlockError::Corrupted { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Marks the claimed slot FULL (a message, or a hole when `value` is 0).
    #[inline]
    fn publish_full(&self, slot: &Slot, want: u32) {
        // SeqCst: a Release store (the value and the block's new owner are
        // visible to the consumer whose claim Acquires this stamp) that is
        // also ordered before the SeqCst load of the waiter count in
        // `notify_published`.
        slot.stamp.store(stamp(want.wrapping_add(1), 0), SeqCst);
        let q = self.header();
        self.notify_published(&q.not_empty, &q.consumers_waiting);
    }

    /// Wakes a sleeper of the other side if there is one, after a publish
    /// made by a SeqCst store or RMW.
    ///
    /// A waiter counts itself in, runs a SeqCst fence, then re-checks the
    /// ring (`announce`). If our load missed its count, the load precedes
    /// its fence in the SeqCst order (it read a value coherence-ordered
    /// before the count that precedes the fence), and our publish precedes
    /// the load; so the publish precedes the fence and the re-check, which
    /// follows the fence, sees it (C++20 [atomics.order] p4, which Rust
    /// follows; x86 `xchg`, ARMv8 `stlr` + `ldar`). Cheaper than a full
    /// fence on each message.
    #[inline]
    fn notify_published(&self, event: &AtomicU32, waiting: &AtomicU32) {
        // SeqCst: see above.
        if waiting.load(SeqCst) != 0 {
            self.wake(event, 1);
        }
    }

    /// Wakes a sleeper of the other side if there is one, after a publish
    /// of any ordering (recovery's paths).
    #[inline]
    fn notify(&self, event: &AtomicU32, waiting: &AtomicU32) {
        // SeqCst fence: pairs with the waiter's fence between counting itself
        // in and re-checking the ring; one of the two sees the other.
        fence(SeqCst);
        // Relaxed: ordered by the fence.
        if waiting.load(Relaxed) != 0 {
            self.wake(event, 1);
        }
    }

    #[cold]
    fn wake(&self, event: &AtomicU32, count: i32) {
        // Release: a waiter that Acquires the new value sees what we published.
        event.fetch_add(1, Release);
        shm::futex_wake(event, count);
    }

    /// Takes a block if one is there. The block is adopted: it now belongs
    /// to this participant (and dies with it unless passed on).
    #[inline]
    pub fn try_pop(&self) -> Result<Block<T>, PopError> {
        loop {
            let (slot, pos) = self.claim_for_pop()?;
            if let Some(result) = self.take(slot, pos) {
                return result;
            }
        }
    }

    fn claim_for_pop(&self) -> Result<(&Slot, u64), PopError> {
        let q = self.header();
        // Acquire: pairs with `advance`'s Release.
        let mut pos = q.head.load(Acquire);
        loop {
            let slot = self.slot(pos);
            // Acquire: pairs with publish_full's Release.
            let s = slot.stamp.load(Acquire);
            let want = full_seq(pos);
            let diff = seq_of(s).wrapping_sub(want) as i32;
            if diff == 0 && who_of(s) == 0 {
                // Acquire: pairs with publish_full's Release (value, owner).
                if slot
                    .stamp
                    .compare_exchange_weak(s, stamp(want, self.owner), Acquire, Relaxed)
                    .is_ok()
                {
                    advance(&q.head, pos);
                    return Ok((slot, pos));
                }
            } else if diff < 0 {
                // Acquire: as above.
                let now = q.head.load(Acquire);
                if now != pos {
                    pos = now;
                    continue;
                }
                if s == stamp(empty_seq(pos), 0) && self.closed_and_drained(slot, s) {
                    return Err(PopError::Closed);
                }
                return Err(PopError::Empty);
            } else {
                advance(&q.head, pos);
                // Acquire: as above.
                pos = q.head.load(Acquire);
            }
        }
    }

    /// With the slot at `head` seen EMPTY: closed, and no push can still land?
    fn closed_and_drained(&self, slot: &Slot, seen: u64) -> bool {
        // SeqCst (both): if we see the flag and then still see the slot
        // EMPTY, a later claim of it is SeqCst-after our load, and its own
        // SeqCst load of the flag sees it set: that push turns into a hole.
        self.header().closed.load(SeqCst) != 0 && slot.stamp.load(SeqCst) == seen
    }

    /// Takes the block out of a slot we claimed; `None` for a hole.
    fn take(&self, slot: &Slot, pos: u64) -> Option<Result<Block<T>, PopError>> {
        // Relaxed: our claim Acquired the publishing stamp.
        let token = BlockToken::from_word(slot.value.load(Relaxed), self.handler.segment_nonce());
        if token.word() == 0 {
            self.release_slot(slot, pos);
            return None;
        }
        self.prefetch_block(token.offset());
        fault::at(fault::POP_CLAIMED);
        let taken = self.adopt(token);
        fault::at(fault::POP_ADOPTED);
        // Relaxed: published by release_slot's Release.
        slot.value.store(0, Relaxed);
        self.release_slot(slot, pos);
        Some(taken)
    }

    /// Asks for the block's lines while they are still in the producer's
    /// cache: the header for writing (`adopt` reads it, then CASes its
    /// state word), the start of the payload for reading (the caller's
    /// next step, nearly always). Any offset is harmless (hints only).
    #[inline(always)]
    fn prefetch_block(&self, payload: u32) {
        let base = self.handler.base_ptr();
        let header = base.wrapping_add(payload.wrapping_sub(BLOCK_HEADER_SIZE) as usize);
        prefetch::for_write(header);
        let bytes = std::mem::size_of::<T>().min(128);
        let mut line = 0;
        while line < bytes {
            prefetch::for_read(base.wrapping_add(payload as usize + line));
            line += 64;
        }
    }

    /// Validates the token and moves the block from the segment to us
    /// (one header validation and one CAS; see `adopt_token`).
    #[inline]
    fn adopt(&self, token: BlockToken) -> Result<Block<T>, PopError> {
        // A stall here lets a rival free the block, allocate its memory
        // again and give it to the segment before the adoption. The window
        // between `adopt_token`'s validation and its CAS is closed by the
        // CAS starting from the validated word (generation included): see
        // the loom model `loom_owner`.
        fault::at(fault::POP_VALIDATED);
        self.handler
            .adopt_token::<T>(token, OwnerId::SEGMENT)
            .map_err(|error| PopError::Corrupted { token, error })
    }

    /// Marks the slot EMPTY for the next lap.
    #[inline]
    fn release_slot(&self, slot: &Slot, pos: u64) {
        // SeqCst: a Release store (our reads of the slot and clearing of
        // `value` happen before the next producer's Acquire of this stamp),
        // ordered before the waiter count's load (`notify_published`).
        slot.stamp
            .store(stamp(empty_seq(pos + self.capacity as u64), 0), SeqCst);
        let q = self.header();
        self.notify_published(&q.not_full, &q.producers_waiting);
    }

    /// Closes the queue: pushes fail from now on, pops drain what is left
    /// and then report [`PopError::Closed`]. Wakes every sleeper.
    pub fn close(&self) {
        let q = self.header();
        // SeqCst: see the module docs on closing.
        q.closed.store(1, SeqCst);
        self.wake(&q.not_empty, i32::MAX);
        self.wake(&q.not_full, i32::MAX);
    }

    /// Wakes every consumer sleeping in `pop_timeout` (in any process); they
    /// re-check the queue and sleep again if nothing changed.
    pub fn wake_consumers(&self) {
        self.wake(&self.header().not_empty, i32::MAX);
    }

    /// Removes the queue: closes it, frees the blocks still in it, removes
    /// `name` from the root registry (if given) and frees the ring. Returns
    /// how many queued blocks were freed.
    ///
    /// `name` is checked first: if it is not registered, holds another
    /// type, or names another queue, the queue is handed back in the error
    /// untouched (not closed, nothing freed). An error met later (a queued
    /// block that cannot be freed, a slot still claimed by a live
    /// participant) also hands the queue back, closed, with its ring still
    /// allocated, so the call can be retried.
    ///
    /// Call it once no other participant uses the queue: handles elsewhere
    /// would be left pointing at freed memory (still mapped, so it is not
    /// undefined behaviour, but their operations would act on whatever
    /// reuses it).
    pub fn destroy(self, name: Option<&str>) -> Result<usize, DestroyError<T, H>> {
        if let Some(name) = name {
            if let Err(error) = self.check_name(name) {
                return Err(DestroyError { error, queue: self });
            }
        }
        match self.tear_down(name) {
            Ok(freed) => Ok(freed),
            Err(error) => Err(DestroyError { error, queue: self }),
        }
    }

    /// That `name` is registered in the root registry, for this element
    /// type, and for this queue. Creates nothing (not even the root
    /// registry) and changes nothing.
    fn check_name(&self, name: &str) -> Result<(), QueueError> {
        // Acquire: pairs with the AcqRel CAS that published the root
        // registry, so its initialized header is visible.
        let root = self.handler.matrix().header().root_registry.load(Acquire);
        if root == 0 {
            return Err(RegistryError::NotFound {
                name: name.to_owned(),
            }
            .into());
        }
        let registered = Registry::open_at(&self.handler, root)?.find(name, fingerprint::<T>())?;
        if registered != self.offset {
            return Err(QueueError::NotThisQueue {
                name: name.to_owned(),
                registered,
                offset: self.offset,
            });
        }
        Ok(())
    }

    fn tear_down(&self, name: Option<&str>) -> Result<usize, QueueError> {
        self.close();
        let mut freed = 0;
        for block in self.recover().unplaced {
            self.handler.free(block)?;
            freed += 1;
        }
        loop {
            match self.try_pop() {
                Ok(block) => {
                    self.handler.free(block)?;
                    freed += 1;
                }
                Err(PopError::Closed) => break,
                Err(PopError::Corrupted { .. }) => {}
                Err(_) => return Err(QueueError::InUse),
            }
        }
        if let Some(name) = name {
            let registry = Registry::root(&self.handler)?;
            // Checked again: the name may have been removed or re-registered
            // while the queue was drained; only this queue's entry goes.
            if registry.find(name, fingerprint::<T>()) == Ok(self.offset) {
                registry.remove(name)?;
            }
        }
        self.handler.free_at(self.offset - BLOCK_HEADER_SIZE)?;
        Ok(freed)
    }
}
