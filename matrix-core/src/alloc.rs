//! allocate and free.
//!
//! ```text
//! allocate(n):  size = round16(n + 32)
//!   1. own class:   pop heads[class_of(size)] if its head block is big enough
//!   2. round up:    first non-empty bucket >= class_at_least(size) (bitmaps), pop
//!   3. wilderness:  CAS top += size
//!   4. cold path:   consolidate (or wait for the running one), retry 1-3, else OOM
//!   then: split the tail off if it can hold a block (remainder header written
//!   completely, then the size shrunk with Release, then the remainder pushed),
//!   owner + generation + ALLOCATED stored with Release.
//!
//! free(block): CAS (gen, owner, ALLOCATED|user) -> (gen, me, ACKED)
//!                  -- the double-free check and the change of hands, one CAS
//!              store (gen, 0, FREE), push (its Release publishes FREE)
//! ```
//!
//! A popped block is claimed with one CAS on its state word, from the FREE
//! word the popper judged to `(gen, me, ACKED)`: from then on it is the
//! popper's alone (a corrupt list that hands one entry to two poppers gives
//! it to one of them), and recovery returns it if the popper dies. That is
//! the whole ownership argument: every block is in exactly one of {a bucket,
//! one participant's hands, the chain as a live block}, and every change of
//! hands is one CAS on the block's state word.

use crate::arena::{Arena, OwnerId};
use crate::error::{AllocError, BlockError};
use crate::free_index;
use crate::layout::{
    header_check, BlockHeader, BLOCK_ALIGN, BLOCK_HEADER_SIZE, MIN_BLOCK, MIN_PAYLOAD,
};
use crate::size_class::{class_at_least, class_of};
use crate::state::{self, ACKED, ALLOCATED, CACHED, COALESCING, FREE, RELEASING, RESIZING};
use crate::sync::AtomicU64;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// Block size (header included) for a payload of `payload` bytes.
#[inline]
pub fn block_size_for<A: Arena>(arena: &A, payload: u64) -> Result<u32, AllocError> {
    let arena_len = (arena.arena_end() - arena.arena_start()) as u64;
    // Checked: a payload near u64::MAX must not wrap to a tiny block.
    let size = payload
        .max(MIN_PAYLOAD as u64)
        .checked_add(BLOCK_HEADER_SIZE as u64 + (BLOCK_ALIGN as u64 - 1))
        .map(|s| s & !(BLOCK_ALIGN as u64 - 1));
    match size {
        Some(size) if size <= arena_len => Ok(size as u32),
        _ => Err(AllocError::TooLarge {
            requested: payload,
            max_payload: arena_len.saturating_sub(BLOCK_HEADER_SIZE as u64),
        }),
    }
}

/// Allocates a block with at least `payload` bytes; returns its header offset.
#[inline]
pub fn allocate<A: Arena>(arena: &A, payload: u64, type_tag: u32) -> Result<u32, AllocError> {
    let size = block_size_for(arena, payload)?;
    allocate_sized(arena, size, payload, type_tag)
}

/// [`allocate`] with the block size already computed by [`block_size_for`].
///
/// The shared path holds one intent entry of this participant throughout:
/// a pop records the block it is about to take in it, a carve the memory it
/// is about to take, so a recoverer can find what this participant had in
/// hand if it dies at any instruction.
///
/// The caller holds no intent entry of its own, so it waits up to about a
/// second for a sibling thread to release one.
#[inline]
pub fn allocate_sized<A: Arena>(
    arena: &A,
    size: u32,
    payload: u64,
    type_tag: u32,
) -> Result<u32, AllocError> {
    allocate_waiting(arena, size, payload, type_tag, IntentWait::Patient)
}

/// [`allocate`] for a caller that already holds an intent entry of this
/// participant (a resize's record): it waits for another one only briefly,
/// as siblings doing the same could be waiting on the entry it holds.
pub(crate) fn allocate_holding_intent<A: Arena>(
    arena: &A,
    payload: u64,
    type_tag: u32,
) -> Result<u32, AllocError> {
    let size = block_size_for(arena, payload)?;
    allocate_waiting(arena, size, payload, type_tag, IntentWait::Brief)
}

#[inline]
fn allocate_waiting<A: Arena>(
    arena: &A,
    size: u32,
    payload: u64,
    type_tag: u32,
    wait: IntentWait,
) -> Result<u32, AllocError> {
    match take_or_carve(arena, size, payload, type_tag, wait)? {
        Shared::Block(offset) => Ok(offset),
        // Every entry stayed taken through a patient wait: a flush and a
        // consolidation (which needs an entry too) cannot change that.
        Shared::NoIntent if wait == IntentWait::Patient => Err(intents_busy()),
        Shared::NoIntent | Shared::NoFit => allocate_slow(arena, size, payload, type_tag, wait),
    }
}

/// What one try of the shared path came to.
enum Shared {
    /// The header offset of the block taken or carved, marked.
    Block(u32),
    /// Neither a listed block nor the wilderness fits.
    NoFit,
    /// No intent entry of this participant came free in the wait.
    NoIntent,
}

/// One try of the shared path under an intent entry: a block from the free
/// index, else one carved from the wilderness.
#[inline]
fn take_or_carve<A: Arena>(
    arena: &A,
    size: u32,
    payload: u64,
    type_tag: u32,
    wait: IntentWait,
) -> Result<Shared, AllocError> {
    let Some(intent) = claim_intent_waiting(arena, wait) else {
        return Ok(Shared::NoIntent);
    };
    let intent = IntentGuard(intent);
    if let Some(offset) = take_free_block(arena, size, &intent)? {
        return finish(arena, offset, size, payload, type_tag, &intent).map(Shared::Block);
    }
    Ok(carve(arena, size, &intent).map_or(Shared::NoFit, |offset| {
        Shared::Block(carved_marked(arena, offset, payload, type_tag))
    }))
}

/// An intent entry claimed by this thread; released (0) when dropped.
pub(crate) struct IntentGuard<'a>(pub(crate) &'a AtomicU64);

impl std::ops::Deref for IntentGuard<'_> {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        self.0
    }
}

impl Drop for IntentGuard<'_> {
    fn drop(&mut self) {
        // Release: whoever reads the entry unused (a recoverer, the next
        // claimer with Acquire) sees what this thread did before: the block
        // it recorded is claimed under its name or back where it was.
        self.0.store(0, Release);
    }
}

/// The value of an intent entry that records a block a pop is about to take:
/// the low 32 bits of the block's generation, its offset, and bit 0 set
/// (offsets are 16-aligned, so a carve's `size << 32 | offset` never has it).
#[inline]
pub const fn hold_intent(offset: u32, generation: u64) -> u64 {
    ((generation as u32 as u64) << 32) | offset as u64 | 1
}

/// Whether an intent value records a pop (see [`hold_intent`]).
#[inline]
pub const fn is_hold_intent(value: u64) -> bool {
    value & 1 == 1 && value != 1
}

/// Whether an intent value records a carve or retract (`size << 32 | offset`;
/// both 16-aligned, so the low four bits are clear — a resize's move intent
/// sets bit 1, see `realloc::move_intent`).
#[inline]
pub const fn is_carve_intent(value: u64) -> bool {
    value & 0xF == 0 && value != 0
}

fn carved_marked<A: Arena>(arena: &A, offset: u32, payload: u64, type_tag: u32) -> u32 {
    let hdr = arena.header(offset).expect("carved block is in bounds");
    mark_allocated(arena, hdr, payload, type_tag);
    // The caller's intent guard releases the entry: recovery that sees the
    // intent gone sees the header (Release in the guard).
    offset
}

fn intents_busy() -> AllocError {
    AllocError::IntentsBusy {
        entries: crate::layout::CARVE_INTENTS as u32,
    }
}

fn out_of_memory<A: Arena>(arena: &A, payload: u64) -> AllocError {
    // Relaxed: statistics only.
    arena.segment().counters.out_of_memory.fetch_add(1, Relaxed);
    AllocError::OutOfMemory {
        requested: payload,
        largest_free: crate::walk::largest_free_payload(arena),
    }
}

#[cold]
fn allocate_slow<A: Arena>(
    arena: &A,
    size: u32,
    payload: u64,
    type_tag: u32,
    wait: IntentWait,
) -> Result<u32, AllocError> {
    arena.flush_local_cache();
    crate::consolidate::consolidate_or_wait(arena)?;
    match take_or_carve(arena, size, payload, type_tag, wait)? {
        Shared::Block(offset) => Ok(offset),
        Shared::NoFit => Err(out_of_memory(arena, payload)),
        Shared::NoIntent => Err(intents_busy()),
    }
}

/// Pops a block of at least `size` bytes from the free index, recording it
/// in `intent` before the pop.
#[inline]
fn take_free_block<A: Arena>(
    arena: &A,
    size: u32,
    intent: &AtomicU64,
) -> Result<Option<u32>, AllocError> {
    let index = &arena.segment().index;
    // The request's own class first: a freed 4 KiB block sits in the class of
    // 4 KiB, one below where the round-up search starts.
    let own = class_of(size);
    if let Some(offset) = free_index::pop(arena, own, size, Some(intent))? {
        return Ok(Some(offset));
    }
    let Some(mut from) = class_at_least(size) else {
        return Ok(None);
    };
    // Bounded: each round either pops, or clears a bit that a concurrent
    // push may set again; after this many rounds the wilderness is tried.
    for _ in 0..64 {
        let Some(class) = free_index::find_nonempty(index, from) else {
            return Ok(None);
        };
        match free_index::pop(arena, class, 0, Some(intent))? {
            Some(offset) => return Ok(Some(offset)),
            None => {
                free_index::clear_if_empty(index, class);
                from = class;
            }
        }
    }
    Ok(None)
}

/// Claims, splits and marks a popped block.
#[inline]
fn finish<A: Arena>(
    arena: &A,
    offset: u32,
    size: u32,
    payload: u64,
    type_tag: u32,
    intent: &AtomicU64,
) -> Result<u32, AllocError> {
    let hdr = arena
        .header(offset)
        .expect("popped offsets were bounds-checked");
    crate::fault::at(crate::fault::ALLOC_POPPED);
    // A list entry must be a genuine free header (FREE, or RELEASING: pushed,
    // not yet marked FREE by its releaser); anything else is a corrupt link
    // (into a live block or a payload): hand nothing out.
    // Acquire: pairs with the Release that published the header's check.
    let check = hdr.check.load(Acquire);
    // Acquire: pairs with the pusher's Release (the push, and the word it
    // publishes).
    let word = hdr.state.load(Acquire);
    if check != header_check(offset) || !state::is_listable(state::state_of(word)) {
        return Err(AllocError::Corrupted {
            offset,
            what: "free-list entry is not a free block",
        });
    }
    // The claim: a CAS from the word judged above. A corrupt list that gives
    // one entry to two poppers gives it to one of them; the block is this
    // participant's from here on, and recovery returns it (ACKED, owner =
    // me) if this process dies before marking it.
    if !claim_listed(hdr, word, |w| {
        state::pack(state::generation_of(w), arena.owner().0, ACKED)
    }) {
        return Err(AllocError::Corrupted {
            offset,
            what: "free-list entry claimed by another participant",
        });
    }
    // Release: a recoverer that reads the entry back at the placeholder sees
    // the claim, which names this participant.
    intent.store(1, Release);
    // Relaxed: ordered after the claim's Acquire; the block is ours.
    let block_size = hdr.size.load(Relaxed);
    if block_size < size || block_size % BLOCK_ALIGN != 0 || !fits(arena, offset, block_size) {
        // A damaged block: keep it out of circulation rather than hand it
        // out (it stays ACKED under our name; `matrix fsck` reports it).
        return Err(AllocError::Corrupted {
            offset,
            what: "free block with an impossible size",
        });
    }
    if block_size - size >= MIN_BLOCK {
        let rest = offset + size;
        let rest_hdr = arena.header(rest).expect("inside a checked block");
        // Written RELEASING under our name: if we die before the push lands,
        // recovery finds the remainder by its owner.
        write_header(
            rest_hdr,
            rest,
            block_size - size,
            state::pack(arena.next_generation(), arena.owner().0, RELEASING),
        );
        crate::fault::at(crate::fault::ALLOC_SPLITTING);
        // Release: a walker that reads the new size also sees the complete
        // remainder header written just above.
        hdr.size.store(size, Release);
        push_released(arena, rest_hdr, rest, block_size - size);
    }
    mark_allocated(arena, hdr, payload, type_tag);
    Ok(offset)
}

#[inline]
fn fits<A: Arena>(arena: &A, offset: u32, size: u32) -> bool {
    size >= MIN_BLOCK && offset as u64 + size as u64 <= arena.arena_end() as u64
}

/// Hands a block this participant holds exclusively (claimed from the
/// index, carved, or cached) to the caller: next generation, owner, tag,
/// ALLOCATED.
#[inline]
pub fn mark_allocated<A: Arena>(arena: &A, hdr: &BlockHeader, payload: u64, type_tag: u32) {
    mark_allocated_as(arena, hdr, payload, type_tag, arena.next_generation());
}

/// [`mark_allocated`] with a generation the caller already took from
/// [`Arena::next_generation`] (or a range reserved from it).
///
/// A plain store is enough: the block's word names this participant in a
/// held state (ACKED or CACHED), and no other participant changes such a
/// word while its holder is alive (frees and adoptions need a live state,
/// recovery a dead owner).
#[inline(always)]
pub fn mark_allocated_as<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    payload: u64,
    type_tag: u32,
    generation: u64,
) {
    // Relaxed: published by the Release store of the state word below.
    hdr.type_tag.store(type_tag, Relaxed);
    hdr.requested
        .store(payload.min(u32::MAX as u64) as u32, Relaxed);
    // Release: whoever Acquires the state word (free, lookups, recovery,
    // walkers) sees the tag and size stored before it.
    hdr.state
        .store(state::pack(generation, arena.owner().0, ALLOCATED), Release);
}

/// Writes a complete header for a new block at `offset` with state word
/// `word`. The `check` word goes last, with Release: a reader that Acquires
/// a valid `check` sees every other field of this header.
pub(crate) fn write_header(hdr: &BlockHeader, offset: u32, size: u32, word: u64) {
    // Relaxed: published by the Release store of `check` below.
    hdr.size.store(size, Relaxed);
    hdr.next_free.store(0, Relaxed);
    hdr.reserved.store(0, Relaxed);
    hdr.type_tag.store(0, Relaxed);
    hdr.requested.store(0, Relaxed);
    hdr.state.store(word, Relaxed);
    // Release: pairs with the Acquire load of `check` by walkers,
    // `checked_header` and poppers.
    hdr.check.store(header_check(offset), Release);
}

/// Rounds a claimer spins (yielding after 64) for an intent entry of its
/// own participant, held by sibling threads for a few instructions each.
const INTENT_WAIT_ROUNDS: u32 = 1_000;

/// How long a patient claimer goes on waiting, sleeping, once its rounds
/// are over: far longer than a sibling stays descheduled or blocked, so
/// only entries that are never released (a sibling stopped for good) make
/// it give up.
#[cfg(not(loom))]
const INTENT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest single sleep of a patient claimer.
#[cfg(not(loom))]
const INTENT_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// How long a claim of an intent entry waits for a sibling to release one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum IntentWait {
    /// [`INTENT_WAIT_ROUNDS`] of spinning and yielding: for a caller with a
    /// cheap way out (a resize that can move instead of growing, a retract
    /// that can push instead), or one that already holds an entry (its
    /// siblings may be waiting for that one in turn).
    Brief,
    /// The rounds, then sleeps for up to [`INTENT_PATIENCE`]: for a caller
    /// that holds no entry and cannot go on without one (an allocation).
    /// The rounds can pass in well under a millisecond while every holder
    /// is off the CPU (preempted, or blocked in a page fault), and a yield
    /// does not hand the CPU to a thread waiting on another core's run
    /// queue or to a blocked one; a sleep leaves both the time to finish.
    Patient,
}

/// Claims a free intent entry of this participant (CAS 0 → 1, the
/// placeholder), waiting a bounded time for a sibling thread to release one
/// ([`IntentWait::Brief`]). `None` for a participant-less view or when
/// every entry stays taken: the caller must then not carve or retract (a
/// carve without an intent leaves a hole no walk can step over if the
/// carver dies).
pub(crate) fn claim_intent<A: Arena>(arena: &A) -> Option<&AtomicU64> {
    claim_intent_waiting(arena, IntentWait::Brief)
}

/// [`claim_intent`], waiting as long as `wait` says.
pub(crate) fn claim_intent_waiting<A: Arena>(arena: &A, wait: IntentWait) -> Option<&AtomicU64> {
    let slot = arena.my_slot()?;
    let try_claim = || {
        // Acquire: after the last holder's Release of 0; the Relaxed
        // pre-check only skips entries that are visibly taken.
        slot.carve_intents
            .iter()
            .find(|e| e.load(Relaxed) == 0 && e.compare_exchange(0, 1, Acquire, Relaxed).is_ok())
    };
    for round in 0..INTENT_WAIT_ROUNDS {
        if let Some(e) = try_claim() {
            return Some(e);
        }
        crate::sync::spin_hint();
        if round > 64 {
            #[cfg(not(loom))]
            std::thread::yield_now();
        }
    }
    // Under loom the rounds are the whole wait (the models have no clock).
    #[cfg(loom)]
    let _ = wait;
    #[cfg(not(loom))]
    if wait == IntentWait::Patient {
        let deadline = std::time::Instant::now() + INTENT_PATIENCE;
        let mut pause = std::time::Duration::from_micros(10);
        loop {
            std::thread::sleep(pause);
            if let Some(e) = try_claim() {
                return Some(e);
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            pause = (pause * 2).min(INTENT_MAX_PAUSE);
        }
    }
    None
}

/// Carves `size` bytes from the wilderness, recording the carve in
/// `intent`; returns the new block's offset with a complete header (ACKED,
/// owner = this participant). `None` when the wilderness is too small.
fn carve<A: Arena>(arena: &A, size: u32, intent: &AtomicU64) -> Option<u32> {
    let seg = arena.segment();
    // Relaxed: only the CAS's expected value; the CAS decides.
    let mut top = seg.top.load(Relaxed);
    loop {
        if top as u64 + size as u64 > arena.arena_end() as u64 || top < arena.arena_start() {
            return None;
        }
        // SeqCst: recovery reads `top`, then the intents (SeqCst); a carve
        // that moved `top` is visible to it as an intent or as a header.
        intent.store(((size as u64) << 32) | top as u64, SeqCst);
        match seg
            .top
            .compare_exchange_weak(top, top + size, SeqCst, Relaxed)
        {
            Ok(_) => break,
            Err(actual) => top = actual,
        }
    }
    let hdr = arena.header(top)?;
    crate::fault::at(crate::fault::CARVED);
    // Written as held by this participant: if it dies before marking the
    // block, recovery finds the header (the intent explains nothing any
    // more) and returns the block by its owner.
    write_header(
        hdr,
        top,
        size,
        state::pack(arena.next_generation(), arena.owner().0, ACKED),
    );
    crate::fault::at(crate::fault::CARVE_WRITTEN);
    Some(top)
}

/// Checks that `offset` is a genuine, sane block header and returns it with
/// its size. The size is a snapshot: a caller that acts on it must read it
/// again once it holds the block (as [`retire`] does), or validate it
/// against an unchanged state word read before and after it.
#[inline]
pub fn checked_header<A: Arena>(arena: &A, offset: u32) -> Result<(&BlockHeader, u32), BlockError> {
    if offset % BLOCK_ALIGN != 0 {
        return Err(BlockError::Misaligned { offset });
    }
    // Bounded by `top`, not just the arena end: a participant killed
    // mid-split can leave a stale (FREE) header inside a block that later
    // returns to the wilderness, and nothing above `top` is a block.
    let top = arena.segment().top.load(Acquire).min(arena.arena_end());
    if offset < arena.arena_start() || offset as u64 + MIN_BLOCK as u64 > top as u64 {
        return Err(BlockError::OutOfBounds {
            offset,
            arena_start: arena.arena_start(),
            arena_end: top,
        });
    }
    let hdr = arena.header(offset).ok_or(BlockError::OutOfBounds {
        offset,
        arena_start: arena.arena_start(),
        arena_end: top,
    })?;
    // Acquire: pairs with the Release that published the header.
    if hdr.check.load(Acquire) != header_check(offset) {
        return Err(BlockError::NotABlock { offset });
    }
    let size = hdr.size.load(Acquire);
    let end = offset as u64 + size as u64;
    // A grow into the wilderness moves `top` before it stores the larger
    // size, so a size past the `top` read above may be such a grow: judge it
    // against `top` read again. Acquire, after the size's Acquire (which
    // pairs with the grow's Release size store): it sees the grow's `top`.
    let top = if end > top as u64 {
        arena.segment().top.load(Acquire).min(arena.arena_end())
    } else {
        top
    };
    if size < MIN_BLOCK || size % BLOCK_ALIGN != 0 || end > top as u64 {
        return judge_impossible_size(arena, hdr, offset);
    }
    Ok((hdr, size))
}

/// How many times [`judge_impossible_size`] reads a header again while its
/// state word keeps changing.
const JUDGE_RETRIES: u32 = 64;

/// The verdict on a header whose size did not fit below `top`. The first
/// reading took `top`, the size and the state word one after the other, and
/// between any two of them the block can be freed, retracted into the
/// wilderness and carved again (a size of one block judged against the
/// `top` and state of the next): only an unchanged state word read before
/// the size and after `top` makes them one snapshot. A size change always
/// comes with a change of the state word (the allocator stores sizes only
/// while it holds the block under another word), so equal words mean the
/// size is that block's. Changing words end in `NotLive`: a header that is
/// being rewritten is not a live block now, and not damage.
#[cold]
fn judge_impossible_size<'a, A: Arena>(
    arena: &A,
    hdr: &'a BlockHeader,
    offset: u32,
) -> Result<(&'a BlockHeader, u32), BlockError> {
    let mut st = RESIZING;
    for _ in 0..JUDGE_RETRIES {
        // Acquire, all: the second state load cannot move before the
        // others (a seqlock reader); the size pairs with the Release store
        // of a grow, after its move of `top`, so the `top` read after it
        // covers that grow.
        let word = hdr.state.load(Acquire);
        let check = hdr.check.load(Acquire);
        let size = hdr.size.load(Acquire);
        let top = arena.segment().top.load(Acquire).min(arena.arena_end());
        if hdr.state.load(Acquire) != word {
            std::hint::spin_loop();
            continue;
        }
        st = state::state_of(word);
        if check != header_check(offset) {
            return Err(BlockError::NotABlock { offset });
        }
        let end = offset as u64 + size as u64;
        if size >= MIN_BLOCK && size % BLOCK_ALIGN == 0 && end <= top as u64 {
            return Ok((hdr, size));
        }
        // The header of a block that went back to the wilderness stays
        // readable until a carve over it rewrites it (after moving `top`):
        // a size that does not fit in a header that is not live is that
        // leftover, not damage.
        if !state::is_live(st) {
            return Err(BlockError::NotLive { offset, state: st });
        }
        return Err(BlockError::Corrupted {
            offset,
            what: "impossible block size",
        });
    }
    Err(BlockError::NotLive { offset, state: st })
}

/// What a free needs before its claim: `offset` is aligned, below `top`
/// and holds a genuine header (its `check` word). The size is not read
/// here: the claim's CAS decides whether the block is the caller's, and
/// [`retire`] validates the size it reads after that CAS, the only size it
/// acts on (a size read before could belong to an earlier occupant).
/// Returns the header and the `top` it was judged against.
#[inline(always)]
fn claimable_header<A: Arena>(arena: &A, offset: u32) -> Result<(&BlockHeader, u32), BlockError> {
    if offset % BLOCK_ALIGN != 0 {
        return Err(BlockError::Misaligned { offset });
    }
    // Bounded by `top`, as in `checked_header`: nothing above it is a block.
    // Acquire: pairs with the carve's CAS and recovery's store of `top`.
    let top = arena.segment().top.load(Acquire).min(arena.arena_end());
    let out_of_bounds = || BlockError::OutOfBounds {
        offset,
        arena_start: arena.arena_start(),
        arena_end: top,
    };
    if offset < arena.arena_start() || offset as u64 + MIN_BLOCK as u64 > top as u64 {
        return Err(out_of_bounds());
    }
    let hdr = arena.header(offset).ok_or_else(out_of_bounds)?;
    // Acquire: pairs with the Release that published the header.
    if hdr.check.load(Acquire) != header_check(offset) {
        return Err(BlockError::NotABlock { offset });
    }
    Ok((hdr, top))
}

/// What a validation that reads the size itself needs first: `offset` is
/// aligned, below `top` and holds a genuine header (its `check` word), as
/// [`checked_header`] judges them, without reading or judging the size.
///
/// For callers that read the size again under their own consistency check
/// (the handler's seqlock read of the state word, size and `top`, which
/// judges the size against that `top` and the live state exactly as
/// [`checked_header`] would); anyone else uses [`checked_header`].
#[inline(always)]
pub fn genuine_header<A: Arena>(arena: &A, offset: u32) -> Result<&BlockHeader, BlockError> {
    claimable_header(arena, offset).map(|(hdr, _)| hdr)
}

/// Frees the block whose header is at `offset`. With `generation`, the block
/// must still be that generation (a stale handle is refused).
pub fn free<A: Arena>(arena: &A, offset: u32, generation: Option<u64>) -> Result<(), BlockError> {
    let (hdr, size) = retire(arena, offset, generation, ACKED)?;
    release_block(arena, hdr, offset, size);
    Ok(())
}

/// The double-free check and the change of hands, in one CAS on the state
/// word: a live block (ALLOCATED or a user state, any owner) becomes
/// `(gen, me, into)`, where `into` is ACKED, or CACHED for a thread cache.
///
/// Exactly one of two racing frees wins; a stale generation never matches;
/// a recoverer reclaiming the block of a dead owner CASes the same word, so
/// exactly one of the freer and the recoverer gets the block. Returns the
/// header and the block size, read after the claim (a size read before it
/// could belong to an earlier occupant of the offset).
#[inline(always)]
pub fn retire<A: Arena>(
    arena: &A,
    offset: u32,
    generation: Option<u64>,
    into: u32,
) -> Result<(&BlockHeader, u32), BlockError> {
    let (hdr, top) = claimable_header(arena, offset)?;
    let me = arena.owner().0;
    // Acquire: pairs with the Release of the word's last change.
    let mut word = hdr.state.load(Acquire);
    loop {
        let (gen, st) = (state::generation_of(word), state::state_of(word));
        if let Some(expected) = generation {
            if expected != gen {
                return Err(BlockError::Stale {
                    offset,
                    expected,
                    found: gen,
                });
            }
        }
        match st {
            FREE | ACKED | CACHED | RELEASING => return Err(BlockError::DoubleFree { offset }),
            // Held by a consolidation or a resize: not this caller's to free.
            COALESCING | RESIZING => return Err(BlockError::NotLive { offset, state: st }),
            s if !state::is_live(s) => return Err(BlockError::ReservedState { offset, state: s }),
            _ => {}
        }
        // AcqRel: Acquire so the payload writes of whoever set this state
        // happen before the block is reused; Release so a recoverer that
        // Acquires the new word sees this participant's earlier writes.
        match hdr
            .state
            .compare_exchange(word, state::pack(gen, me, into), AcqRel, Acquire)
        {
            Ok(_) => break,
            Err(actual) => word = actual,
        }
    }
    crate::fault::at(crate::fault::RETIRED);
    // Relaxed: ordered after the claim's Acquire; a held block's size is
    // changed by its holder only.
    let size = hdr.size.load(Relaxed);
    let end = offset as u64 + size as u64;
    // A block ends at or below `top`. A grow at `top` that finished before
    // the claim moved `top` before its size store, and the claim's Acquire
    // sees both: a `top` read again now covers it.
    let within =
        end <= top as u64 || end <= arena.segment().top.load(Acquire).min(arena.arena_end()) as u64;
    if size < MIN_BLOCK || size % BLOCK_ALIGN != 0 || !within {
        // Given back as it was judged: a damaged block is not freed, and
        // nobody else changed the word while it was ours. Release: pairs
        // with the Acquire of whoever reads the word next.
        hdr.state.store(word, Release);
        return Err(BlockError::Corrupted {
            offset,
            what: "impossible block size",
        });
    }
    Ok((hdr, size))
}

/// Returns a block this participant holds exclusively (its word names this
/// participant in ACKED, COALESCING or CACHED) to the free index.
///
/// The FREE store needs no CAS: no other participant changes a held word
/// while its holder lives (see [`mark_allocated_as`]).
pub fn release_block<A: Arena>(arena: &A, hdr: &BlockHeader, offset: u32, size: u32) {
    // Relaxed: the block is ours; the push's Release publishes the word.
    let gen = state::generation_of(hdr.state.load(Relaxed));
    // RELEASING, still under our name: until the push lands nobody else can
    // reach the block, and if we die here recovery finds it by its owner.
    // Relaxed: the push's Release publishes the word.
    hdr.state
        .store(state::pack(gen, arena.owner().0, RELEASING), Relaxed);
    push_released(arena, hdr, offset, size);
}

/// Claims a block just popped from a free list: CAS from `word` (judged
/// listable) to `claimed(word)`. The only change a listed block's word may
/// see meanwhile is its releaser's RELEASING → FREE (same generation), so
/// the CAS is retried from the new word while it is listable and of the
/// same generation; anything else means another participant holds it.
///
/// AcqRel: Acquire orders the caller's reads of the block (its size) after
/// the claim; Release lets a recoverer that Acquires the word see it held.
#[inline]
pub(crate) fn claim_listed(hdr: &BlockHeader, mut word: u64, claimed: impl Fn(u64) -> u64) -> bool {
    let generation = state::generation_of(word);
    loop {
        if !state::is_listable(state::state_of(word)) || state::generation_of(word) != generation {
            return false;
        }
        match hdr
            .state
            .compare_exchange(word, claimed(word), AcqRel, Acquire)
        {
            Ok(_) => return true,
            Err(actual) => word = actual,
        }
    }
}

/// Pushes a block whose word is `RELEASING` under this participant, then
/// moves it to FREE with a CAS (a popper may have claimed it already: then
/// the CAS fails and the block is the popper's).
pub(crate) fn push_released<A: Arena>(arena: &A, hdr: &BlockHeader, offset: u32, size: u32) {
    // Relaxed: the block is ours until the push.
    let word = hdr.state.load(Relaxed);
    crate::fault::at(crate::fault::RELEASE_OWNER);
    free_index::push(&arena.segment().index, hdr, offset, class_of(size));
    crate::fault::at(crate::fault::RELEASE_FREE);
    // Release: a popper that Acquires FREE sees the pushed header; Relaxed
    // on failure: the popper's claim took the block, nothing to read.
    let _ = hdr.state.compare_exchange(
        word,
        state::pack(state::generation_of(word), 0, FREE),
        Release,
        Relaxed,
    );
}

/// Moves ownership of a live block from `from` to `to`.
pub fn set_owner<A: Arena>(
    arena: &A,
    offset: u32,
    from: Option<OwnerId>,
    to: OwnerId,
) -> Result<OwnerId, BlockError> {
    set_owner_of(arena, offset, None, from, to)
}

/// [`set_owner_of`] for a caller that has already read and validated the
/// block's state word: `seen` is that word, read from `hdr`, the header at
/// `offset` (checked as [`genuine_header`] or [`checked_header`] does).
///
/// One CAS from `seen` to `seen` naming `to`, after the checks
/// [`set_owner_of`] makes on a loaded word (`to` a participant or the
/// segment, a live state, the owner `from`): if it succeeds, the word did
/// not change since the caller read it, so whatever the caller validated
/// against that word (the size, tag and length, which change only with the
/// generation) still holds. If the word changed meanwhile (a free, a
/// recovery, another owner change), or the checks fail, it is judged
/// afresh by [`set_owner_of`] at the generation of `seen`: a block freed,
/// re-allocated (a new generation) or taken by someone else is refused
/// with the same typed errors, and nothing changes.
#[inline]
pub fn set_owner_from<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    offset: u32,
    seen: u64,
    from: Option<OwnerId>,
    to: OwnerId,
) -> Result<OwnerId, BlockError> {
    let current = state::owner_of(seen);
    if (to == OwnerId::SEGMENT || to.slot().is_some())
        && state::is_live(state::state_of(seen))
        && from.is_none_or(|f| f.0 == current)
        // AcqRel: as in `set_owner_of`, the hand-over orders with the free
        // or recovery that CASes the same word. Relaxed on failure: nothing
        // is read from it; `set_owner_of` loads the word again (Acquire).
        && hdr
            .state
            .compare_exchange(seen, state::with_owner(seen, to.0), AcqRel, Relaxed)
            .is_ok()
    {
        return Ok(OwnerId(current));
    }
    set_owner_again(arena, offset, state::generation_of(seen), from, to)
}

/// [`set_owner_from`] when the word changed since it was read: out of line,
/// so the CAS path stays small.
#[cold]
#[inline(never)]
fn set_owner_again<A: Arena>(
    arena: &A,
    offset: u32,
    generation: u64,
    from: Option<OwnerId>,
    to: OwnerId,
) -> Result<OwnerId, BlockError> {
    set_owner_of(arena, offset, Some(generation), from, to)
}

/// [`set_owner`], and with `generation` only while the block is still that
/// generation (a handle to a block freed and re-allocated since is refused).
///
/// One CAS on the state word from the word judged live (and of the right
/// generation and owner) to the same word with the new owner: a free, a
/// recovery or another adoption landing in between makes it fail and be
/// judged again, so a block never ends up freed under one name and owned
/// under another.
pub fn set_owner_of<A: Arena>(
    arena: &A,
    offset: u32,
    generation: Option<u64>,
    from: Option<OwnerId>,
    to: OwnerId,
) -> Result<OwnerId, BlockError> {
    if to != OwnerId::SEGMENT && to.slot().is_none() {
        return Err(BlockError::Corrupted {
            offset,
            what: "new owner is not a participant slot",
        });
    }
    let (hdr, _) = checked_header(arena, offset)?;
    // Acquire: pairs with the Release of the word's last change.
    let mut word = hdr.state.load(Acquire);
    loop {
        let st = state::state_of(word);
        if !state::is_live(st) {
            return Err(BlockError::NotLive { offset, state: st });
        }
        if let Some(expected) = generation {
            let found = state::generation_of(word);
            if found != expected {
                return Err(BlockError::Stale {
                    offset,
                    expected,
                    found,
                });
            }
        }
        let current = state::owner_of(word);
        if let Some(f) = from {
            if f.0 != current {
                return Err(BlockError::Corrupted {
                    offset,
                    what: "owner changed concurrently",
                });
            }
        }
        // AcqRel: ownership hand-over orders with the free or recovery that
        // CASes the same word.
        match hdr
            .state
            .compare_exchange(word, state::with_owner(word, to.0), AcqRel, Acquire)
        {
            Ok(_) => return Ok(OwnerId(current)),
            Err(actual) => word = actual,
        }
    }
}
