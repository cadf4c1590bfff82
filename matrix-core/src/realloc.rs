//! Resizing a live block: in place when its physical neighbourhood allows,
//! else by moving it.
//!
//! ```text
//! reallocate(B, n):  t = block_size_for(n)
//!   hold:    my intent entry E = (B, owner, st); CAS B (g, owner, st) -> (g, me, RESIZING)
//!   shrink:  t < size: remainder header at B+t (RELEASING, me), B.size = t, push it
//!   grow 1:  B ends at `top`: carve intent, CAS top += t - size, B.size = t
//!   grow 2:  next block N FREE and at its bucket's head: pop it (hold intent),
//!            claim it (CAS), split off what B does not need, carve intent
//!            over N, clear N's check, B.size = t
//!   grow 3:  allocate B', copy, move intent (B', B), commit B -> ACKED(me),
//!            B' -> (owner, st), free B
//!   publish: B (new generation, owner, st) -- a new handle in every case
//! ```
//!
//! While a block is RESIZING nobody but its resizer changes it: a free, an
//! adoption, a state change or a read of it is refused with a typed error
//! (its state is not live). The owner and state it had wait in one of the
//! resizer's own intent entries ([`resize_intent`], written before the
//! hold's CAS and cleared only after the block is let go), never in the
//! block itself: the resizer does not hold the block when it writes the
//! record, and a store into a block one does not hold can land over the
//! record of the participant that does. A recoverer that finds the resizer
//! dead hands the block back to the recorded owner and state
//! ([`settle_dead_resizes`]); its
//! size is then the old one or the new one, never anything between, because
//! every window in which the chain would not tile is covered by an intent
//! the walks and recovery already understand:
//!
//! * a neighbour popped but not yet claimed: the hold intent (as in a pop);
//! * a neighbour claimed: its word names the resizer (ACKED), recovery frees it;
//! * a neighbour's header cleared before B's size covers it, or `top` moved
//!   before B's size covers the new bytes: a carve intent over exactly those
//!   bytes, which recovery rebuilds as a free block if B's size does not
//!   cover them;
//! * a move: before the commit B is RESIZING (restored) and B' is an
//!   ordinary ALLOCATED block of the resizer (freed); after it B is ACKED
//!   under the resizer (freed) and the *move intent* `(B', B)` tells the
//!   recoverer to hand B' to the owner recorded in B'`.reserved` (B' is
//!   the resizer's own block from its allocation on, so that store is safe).
//!
//! So a kill at any instruction leaves exactly one of old and new owned
//! by the block's owner and the other free or reclaimed by `recover()`.
//!
//! Two threads of one participant resizing the same block (two handles of
//! one generation): exactly one takes it, the other is refused with
//! `NotLive` (while it is held) or `Stale` (after), as for any two
//! resizers. Their holds must also never leave two firm records of the
//! block in the participant's entries (recovery could not tell the
//! holder's), so each first stores a *tentative* record and looks at its
//! siblings' entries: a firm record, or a tentative one in an earlier
//! entry, makes it step back; a tentative one in a later entry makes it
//! wait for that sibling to step back. (When both stepped back, both could
//! be refused.) Both are refused only if one stalls — descheduled between
//! its tentative record and its step-back — for the whole bounded wait;
//! nothing has changed then, and a retry succeeds.
//!
//! Who may resize: the block's owner, or anyone if the segment owns it.
//! A block owned by another participant is refused (`NotOwner`): a
//! recovery of that participant cannot see a block held under the
//! resizer's name, and would leave it to the slot's next holder.
//!
//! The handle rule: every successful resize, in place or not, gives the
//! block a new generation; the old handle is stale from then on. A size
//! change therefore always comes with a generation change, which is what
//! the handler's seqlock-style header reads rely on.

use crate::alloc::{
    self, claim_intent, claim_intent_waiting, hold_intent, write_header, IntentGuard, IntentWait,
};
use crate::arena::{Arena, OwnerId};
use crate::error::{AllocError, BlockError};
use crate::layout::{header_check, BlockHeader, BLOCK_HEADER_SIZE, MIN_BLOCK};
use crate::size_class::class_of;
use crate::state::{self, ACKED, ALLOCATED, RELEASING, RESIZING};
use crate::sync::AtomicU64;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// The `reserved` value of the new block of a move:
/// a marker bit, the owner and the state to hand the block back to.
#[inline]
pub const fn resize_record(owner: u32, st: u32) -> u32 {
    RECORD_MARK | ((owner & 0xFFF) << 12) | (st & 0xFFF)
}

const RECORD_MARK: u32 = 1 << 31;

/// The `(owner, state)` of a [`resize_record`], if `value` is one.
#[inline]
pub const fn decode_record(value: u32) -> Option<(u32, u32)> {
    if value & RECORD_MARK == 0 {
        return None;
    }
    Some(((value >> 12) & 0xFFF, value & 0xFFF))
}

/// The intent value of a move from `old` to `new` (header offsets): bit 1
/// set, bit 0 clear, so it is neither a hold intent (bit 0) nor a carve
/// intent (low four bits clear).
#[inline]
pub const fn move_intent(new: u32, old: u32) -> u64 {
    ((new as u64) << 32) | old as u64 | 2
}

/// Whether an intent value records a move (see [`move_intent`]).
#[inline]
pub const fn is_move_intent(value: u64) -> bool {
    value & 0xF == 2
}

/// The intent value with which a resizer records, before its hold's CAS,
/// the block it is about to hold (`offset`, 16-aligned) and the owner and
/// state to hand it back to: `owner:12 | st:12` in bits 55..32, the offset
/// in the low word with tag 4 in its low four bits — neither a hold intent
/// (bit 0), a carve intent (low four bits clear) nor a move intent (2).
#[inline]
pub const fn resize_intent(offset: u32, owner: u32, st: u32) -> u64 {
    (((owner & 0xFFF) as u64) << 44) | (((st & 0xFFF) as u64) << 32) | offset as u64 | 4
}

/// Whether an intent value is a [`resize_intent`].
#[inline]
pub const fn is_resize_intent(value: u64) -> bool {
    value & 0xF == 4
}

/// The `(offset, owner, state)` of a [`resize_intent`], if `value` is one.
#[inline]
pub const fn decode_resize_intent(value: u64) -> Option<(u32, u32, u32)> {
    if !is_resize_intent(value) {
        return None;
    }
    Some((
        value as u32 & !0xF,
        ((value >> 44) & 0xFFF) as u32,
        ((value >> 32) & 0xFFF) as u32,
    ))
}

/// The value a resizer stores in its entry just before its
/// [`resize_intent`], while it looks at its sibling entries: the same
/// fields with tag 6, which no recoverer or walk takes for a record (nor
/// for a hold, carve or move intent).
#[inline]
pub const fn tentative_resize_intent(offset: u32, owner: u32, st: u32) -> u64 {
    resize_intent(offset, owner, st) | 2
}

/// Whether an intent value is a [`tentative_resize_intent`].
#[inline]
pub const fn is_tentative_resize_intent(value: u64) -> bool {
    value & 0xF == 6
}

/// How many times a hold steps back for a sibling thread and finds the
/// block still not held by anyone before it reports the block as being
/// resized (under loom: once, so that the models reach that report).
#[cfg(not(loom))]
const HOLD_RETRIES: u32 = 64;
#[cfg(loom)]
const HOLD_RETRIES: u32 = 1;

/// Rounds a hold waits for a sibling thread to step back or to take the
/// block (a few instructions each, unless that thread is descheduled).
#[cfg(not(loom))]
const SIBLING_WAIT_ROUNDS: u32 = 1_000;
#[cfg(loom)]
const SIBLING_WAIT_ROUNDS: u32 = 4;

/// One round of a bounded wait for a sibling thread: spin, and after a
/// while give the core away (the sibling may need it).
fn pause(round: u32) {
    crate::sync::spin_hint();
    if round > 64 {
        #[cfg(not(loom))]
        std::thread::yield_now();
    }
}

/// What a hold found in the other intent entries of its participant about
/// the block it is about to take.
enum Siblings<'a> {
    /// No other entry records a resize of the block.
    Clear,
    /// An entry *later* in the slot holds a tentative record of it: that
    /// sibling steps back once it sees this one's, so this one waits.
    Behind(&'a AtomicU64),
    /// An entry *earlier* in the slot holds a tentative record of it, or
    /// any entry a firm one: this one steps back.
    Ahead(&'a AtomicU64),
}

/// Looks at the entries of this participant other than `mine` for a
/// resize record (tentative or firm) of the block at `offset`. The order
/// of the entries in the slot breaks the tie between two tentative
/// records, so that two siblings that see each other's do not both step
/// back: the earlier entry goes on.
fn siblings<'a, A: Arena>(arena: &'a A, mine: &AtomicU64, offset: u32) -> Siblings<'a> {
    let Some(slot) = arena.my_slot() else {
        return Siblings::Clear;
    };
    let mut earlier = true;
    let mut behind = None;
    for e in slot.carve_intents.iter() {
        if std::ptr::eq(e, mine) {
            earlier = false;
            continue;
        }
        // SeqCst: the look of the two-store protocol in `hold_in`.
        let v = e.load(SeqCst);
        if v as u32 & !0xF != offset {
            continue;
        }
        if is_resize_intent(v) || (earlier && is_tentative_resize_intent(v)) {
            return Siblings::Ahead(e);
        }
        if is_tentative_resize_intent(v) {
            behind = Some(e);
        }
    }
    behind.map_or(Siblings::Clear, Siblings::Behind)
}

/// Whether intent value `v` records a resize (tentative or firm) of the
/// block at `offset`.
fn names_resize_of(v: u64, offset: u32) -> bool {
    (is_resize_intent(v) || is_tentative_resize_intent(v)) && v as u32 & !0xF == offset
}

/// How a resize was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeKind {
    /// The block already had the size asked for (only the generation changed).
    Unchanged,
    /// Shrunk in place; the tail went back to the free index.
    Shrunk,
    /// Grown in place into the wilderness.
    GrownIntoWilderness,
    /// Grown in place by absorbing the free block after it.
    GrownIntoNeighbour,
    /// Moved: a new block, the bytes copied, the old block freed.
    Moved,
}

impl ResizeKind {
    /// Whether the block stayed at its offset.
    pub fn in_place(self) -> bool {
        self != ResizeKind::Moved
    }
}

/// A resized block: where it is now and its new generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resized {
    /// Header offset of the block (the old one unless `kind` is `Moved`).
    pub offset: u32,
    /// The block's new generation; handles of the old one are stale.
    pub generation: u64,
    /// How it was done.
    pub kind: ResizeKind,
}

/// Why a resize was refused. Nothing changed in any case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReallocError {
    /// The handle does not name a live block of this generation.
    Block(BlockError),
    /// The new size is too large, or no memory for a move.
    Alloc(AllocError),
    /// The block belongs to another participant.
    NotOwner {
        /// Header offset.
        offset: u32,
        /// Its owner (slot + 1).
        owner: u32,
    },
}

impl From<BlockError> for ReallocError {
    fn from(e: BlockError) -> Self {
        ReallocError::Block(e)
    }
}

impl From<AllocError> for ReallocError {
    fn from(e: AllocError) -> Self {
        ReallocError::Alloc(e)
    }
}

impl std::fmt::Display for ReallocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReallocError::Block(e) => write!(f, "cannot resize: {e}"),
            ReallocError::Alloc(e) => write!(f, "cannot resize: {e}"),
            ReallocError::NotOwner { offset, owner } => write!(
                f,
                "cannot resize the block at {offset}: it belongs to participant {owner}; \
                 adopt it first"
            ),
        }
    }
}

impl std::error::Error for ReallocError {}

/// Resizes the live block at header `offset` (of `generation`) to hold
/// `payload` bytes. `copy(from, to, len)` copies `len` payload bytes
/// between two payload offsets; it is called only for a move.
pub fn reallocate<A: Arena>(
    arena: &A,
    offset: u32,
    generation: u64,
    payload: u64,
    copy: impl FnOnce(u32, u32, u32),
) -> Result<Resized, ReallocError> {
    let new_size = alloc::block_size_for(arena, payload)?;
    // Dropped (entry cleared, Release) only after every return path below
    // has let the block go: a recoverer that finds the entry gone finds the
    // block no longer RESIZING.
    let (hdr, (owner, st), _record) = hold(arena, offset, generation)?;
    crate::fault::at(crate::fault::REALLOC_HELD);
    // Relaxed: ordered after the hold's Acquire; a held block's size is
    // changed by its holder only.
    let size = hdr.size.load(Relaxed);
    if size < MIN_BLOCK || offset as u64 + size as u64 > arena.arena_end() as u64 {
        let_go_unchanged(hdr, owner, st);
        return Err(BlockError::Corrupted {
            offset,
            what: "impossible block size",
        }
        .into());
    }
    let kind = if new_size <= size {
        if size - new_size >= MIN_BLOCK {
            split_tail(
                arena,
                hdr,
                offset,
                new_size,
                size,
                crate::fault::REALLOC_SHRINKING,
            );
            ResizeKind::Shrunk
        } else {
            ResizeKind::Unchanged
        }
    } else if grow_into_wilderness(arena, hdr, offset, size, new_size) {
        ResizeKind::GrownIntoWilderness
    } else if match grow_into_neighbour(arena, hdr, offset, size, new_size) {
        Ok(grown) => grown,
        Err(e) => {
            // Nothing of the held block changed before the error.
            let_go_unchanged(hdr, owner, st);
            return Err(e);
        }
    } {
        ResizeKind::GrownIntoNeighbour
    } else {
        return move_block(arena, hdr, offset, payload, (owner, st), copy);
    };
    crate::fault::at(crate::fault::REALLOC_SIZED);
    let generation = let_go(arena, hdr, owner, st, Some(payload));
    Ok(Resized {
        offset,
        generation,
        kind,
    })
}

/// Takes the live block at `offset` into this participant's hands:
/// RESIZING under its name, the owner and state it had recorded in an
/// intent entry of this participant ([`resize_intent`]). Returns the
/// header, that `(owner, state)` and the entry, which the caller keeps
/// until the block is let go.
fn hold<'a, A: Arena>(
    arena: &'a A,
    offset: u32,
    generation: u64,
) -> Result<(&'a BlockHeader, (u32, u32), IntentGuard<'a>), ReallocError> {
    let (hdr, _) = alloc::checked_header(arena, offset)?;
    // Patient: the resize holds no entry yet and cannot start without one,
    // as an allocation (see `alloc::IntentWait`).
    let Some(record) = claim_intent_waiting(arena, IntentWait::Patient) else {
        return Err(AllocError::Corrupted {
            offset,
            what: "no intent entry free for a resize (too many threads of one participant)",
        }
        .into());
    };
    let record = IntentGuard(record);
    let kept = hold_in(arena, hdr, &record, offset, generation)?;
    Ok((hdr, kept, record))
}

/// The hold alone, its intent entry left as it is whatever the outcome
/// (as a participant killed right after its hold, won or lost, leaves
/// it): for models of recovery. Returns the `(owner, state)` recorded
/// when the block is held.
#[doc(hidden)]
pub fn hold_and_leave<A: Arena>(
    arena: &A,
    offset: u32,
    generation: u64,
) -> Result<(u32, u32), ReallocError> {
    let (hdr, _) = alloc::checked_header(arena, offset)?;
    let record = claim_intent(arena).expect("an intent entry free");
    hold_in(arena, hdr, record, offset, generation)
}

/// The hold's protocol on this participant's intent entry `record`.
fn hold_in<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    record: &AtomicU64,
    offset: u32,
    generation: u64,
) -> Result<(u32, u32), ReallocError> {
    let me = arena.owner().0;
    let mut retries = 0;
    // Acquire: pairs with the Release of the word's last change.
    let mut word = hdr.state.load(Acquire);
    loop {
        let (gen, st, owner) = (
            state::generation_of(word),
            state::state_of(word),
            state::owner_of(word),
        );
        if gen != generation {
            return Err(BlockError::Stale {
                offset,
                expected: generation,
                found: gen,
            }
            .into());
        }
        if !state::is_live(st) {
            return Err(BlockError::NotLive { offset, state: st }.into());
        }
        if owner != me && owner != OwnerId::SEGMENT.0 {
            return Err(ReallocError::NotOwner { offset, owner });
        }
        // Two stores, with a look at the sibling entries between them, so
        // that of this participant's entries at most one holds a *firm*
        // record of this block at any time: the holder's, whenever the
        // block is RESIZING under this participant. (A sibling thread that
        // judged an older word and lost the CAS below, then died with its
        // record in place, would otherwise leave two firm records that
        // disagree, and recovery could not tell the holder's.) SeqCst,
        // both stores and the loads of the look: in the single order of
        // SeqCst operations, of two siblings that each store a tentative
        // record and then look, the later one sees the earlier one's (or
        // what replaced it: a firm record, or nothing once that sibling
        // stepped back). A record goes firm only after a look that found
        // no other record of the block, and stays in place until then
        // (waiting keeps it), so two firm records never coexist.
        record.store(tentative_resize_intent(offset, owner, st), SeqCst);
        crate::sync::seqcst_store_load();
        let mut waited = 0;
        let ahead = loop {
            match siblings(arena, record, offset) {
                Siblings::Clear => break None,
                Siblings::Ahead(e) => break Some(e),
                // A sibling stalled for the whole wait: step back as if
                // it were ahead (it goes on if it finds this entry empty).
                Siblings::Behind(e) if waited == SIBLING_WAIT_ROUNDS => break Some(e),
                Siblings::Behind(_) => {
                    pause(waited);
                    waited += 1;
                }
            }
        };
        if let Some(sibling) = ahead {
            // Placeholder again, keeping the entry. SeqCst: as above.
            record.store(1, SeqCst);
            if retries == HOLD_RETRIES {
                return Err(BlockError::NotLive {
                    offset,
                    state: RESIZING,
                }
                .into());
            }
            retries += 1;
            word = wait_for_sibling(hdr, word, sibling, offset);
            continue;
        }
        // SeqCst: like every intent (recoverers read them with SeqCst or
        // Acquire); the Release half of the CAS below publishes it to a
        // recoverer that Acquires the RESIZING word. Written before the
        // CAS so a RESIZING block never lacks its record, and into this
        // participant's own entry, so a resizer that loses the CAS damages
        // nothing: its entry names a block that is not RESIZING under it,
        // and is cleared before it returns.
        record.store(resize_intent(offset, owner, st), SeqCst);
        // AcqRel: Acquire the previous holder's writes (a hand-over);
        // Release the record to a recoverer that Acquires the word.
        match hdr
            .state
            .compare_exchange(word, state::pack(gen, me, RESIZING), AcqRel, Acquire)
        {
            Ok(_) => return Ok((owner, st)),
            Err(actual) => word = actual,
        }
    }
}

/// Waits (bounded) until the block's word is no longer `judged` (the
/// sibling took it, or anything else changed it: the caller judges it
/// again) or the sibling's entry no longer names the block (it stepped
/// back or is done). Returns the word to judge.
fn wait_for_sibling(hdr: &BlockHeader, judged: u64, sibling: &AtomicU64, offset: u32) -> u64 {
    for round in 0..SIBLING_WAIT_ROUNDS {
        // Acquire: as the hold's first load of the word.
        let word = hdr.state.load(Acquire);
        // Relaxed: only when to look again; the hold's SeqCst look decides.
        if word != judged || !names_resize_of(sibling.load(Relaxed), offset) {
            return word;
        }
        pause(round);
    }
    // Acquire: as above.
    hdr.state.load(Acquire)
}

/// Hands a held block back to `owner` in `st` with a new generation (and,
/// with `requested`, that request size); returns the generation.
fn let_go<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    owner: u32,
    st: u32,
    requested: Option<u64>,
) -> u64 {
    let generation = arena.next_generation();
    if let Some(r) = requested {
        // Relaxed: published by the Release store of the word below.
        hdr.requested.store(r.min(u32::MAX as u64) as u32, Relaxed);
    }
    // Relaxed: as above.
    hdr.reserved.store(0, Relaxed);
    // Release: whoever Acquires the word sees the size, request and record
    // stored before it. A plain store: a RESIZING word naming a live
    // participant is changed by that participant only.
    hdr.state.store(state::pack(generation, owner, st), Release);
    generation
}

/// Splits the tail `[offset + keep, offset + size)` off a held block: its
/// header is written complete (RELEASING under this participant), then the
/// held block's size shrinks with Release, then the tail is pushed.
fn split_tail<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    offset: u32,
    keep: u32,
    size: u32,
    point: u32,
) {
    let rest = offset + keep;
    let rest_hdr = arena.header(rest).expect("inside a checked block");
    write_header(
        rest_hdr,
        rest,
        size - keep,
        state::pack(arena.next_generation(), arena.owner().0, RELEASING),
    );
    crate::fault::at(point);
    // Release: a walker that reads the new size also sees the tail's header.
    hdr.size.store(keep, Release);
    alloc::push_released(arena, rest_hdr, rest, size - keep);
}

/// Grows a held block that ends at `top` by moving `top`, under a carve
/// intent over the new bytes (a recoverer rebuilds them as a free block if
/// the block's size does not cover them yet).
fn grow_into_wilderness<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    offset: u32,
    size: u32,
    new_size: u32,
) -> bool {
    let end = offset + size;
    // At least a whole block's worth: if this participant dies before the
    // size store, recovery rebuilds the new bytes as a block of their own.
    let new_size = new_size.max(size + MIN_BLOCK);
    if offset as u64 + new_size as u64 > arena.arena_end() as u64 {
        return false;
    }
    // Relaxed: a hint; the CAS below decides.
    if arena.segment().top.load(Relaxed) != end {
        return false;
    }
    let Some(intent) = claim_intent(arena) else {
        return false;
    };
    let intent = IntentGuard(intent);
    let extra = new_size - size;
    // SeqCst: as a carve's (see alloc::carve): ordered before the CAS on
    // `top`, so recovery and walks that see `top` moved see the intent.
    intent.store(((extra as u64) << 32) | end as u64, SeqCst);
    // SeqCst: as a carve's. Only `end` is expected: nothing but this block
    // can end at `top` while it is held (retracts move `top` down only over
    // free runs ending at it; carves only up).
    if arena
        .segment()
        .top
        .compare_exchange(end, offset + new_size, SeqCst, Relaxed)
        .is_err()
    {
        return false;
    }
    crate::fault::at(crate::fault::REALLOC_TOP_MOVED);
    // Release: a walker that reads the new size is past the new bytes; one
    // that read the old size lands on them and steps over them by the intent.
    hdr.size.store(new_size, Release);
    true
}

/// Grows a held block by absorbing the block after it, if that one is free,
/// big enough and at the head of its bucket.
fn grow_into_neighbour<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    offset: u32,
    size: u32,
    new_size: u32,
) -> Result<bool, ReallocError> {
    let next = offset + size;
    // At least a whole block's worth: the piece kept must hold the header
    // whose `check` is cleared below, and the split tail's header must not
    // overlap it.
    let need = (new_size - size).max(MIN_BLOCK);
    let Ok((next_hdr, next_size)) = alloc::checked_header(arena, next) else {
        return Ok(false);
    };
    // Acquire: pairs with the Release of the word's last change.
    if next_size < need || !state::is_listable(state::state_of(next_hdr.state.load(Acquire))) {
        return Ok(false);
    }
    absorb_neighbour(arena, hdr, size, (next, next_hdr, next_size), need)
}

/// The part of [`grow_into_neighbour`] after its judgement: the block at
/// `next` looked free with `judged` bytes, at least `need`. By the time it
/// is popped and claimed it can be another, smaller block at that offset
/// (split and freed again in between).
fn absorb_neighbour<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    size: u32,
    (next, next_hdr, next_size): (u32, &BlockHeader, u32),
    need: u32,
) -> Result<bool, ReallocError> {
    let Some(intent) = claim_intent(arena) else {
        return Ok(false);
    };
    let intent = IntentGuard(intent);
    if !pop_exact(arena, next, next_hdr, next_size, &intent) {
        return Ok(false);
    }
    crate::fault::at(crate::fault::REALLOC_NEIGHBOUR_POPPED);
    // Acquire: pairs with the pusher's Release (see alloc::finish).
    let word = next_hdr.state.load(Acquire);
    if next_hdr.check.load(Acquire) != header_check(next)
        || !state::is_listable(state::state_of(word))
        || !alloc::claim_listed(next_hdr, word, |w| {
            state::pack(state::generation_of(w), arena.owner().0, ACKED)
        })
    {
        return Err(AllocError::Corrupted {
            offset: next,
            what: "free-list entry is not a free block",
        }
        .into());
    }
    // Release: as in alloc::finish, the entry now points at a claimed block.
    intent.store(1, Release);
    // Relaxed: ordered after the claim's Acquire; the block is ours.
    let next_size = next_hdr.size.load(Relaxed);
    if next_size < MIN_BLOCK || next as u64 + next_size as u64 > arena.arena_end() as u64 {
        // Held under our name for `matrix fsck`, as alloc::finish does.
        return Err(AllocError::Corrupted {
            offset: next,
            what: "free block with an impossible size",
        }
        .into());
    }
    if next_size < need {
        // The size judged before the pop was that of an earlier block at
        // this offset: between the two, an allocator popped it, split it
        // and freed the front part into the same bucket, which the pop
        // found. A healthy free block, just too small: back to the index
        // (from our claim, as a free does), and the caller moves instead.
        drop(intent);
        alloc::release_block(arena, next_hdr, next, next_size);
        return Ok(false);
    }
    let absorbed = if next_size - need >= MIN_BLOCK {
        split_tail(
            arena,
            next_hdr,
            next,
            need,
            next_size,
            crate::fault::REALLOC_NEIGHBOUR_SPLIT,
        );
        need
    } else {
        next_size
    };
    // SeqCst: as a carve intent's; a walker (or recoverer) that finds the
    // neighbour's header gone finds this record of its bytes.
    intent.store(((absorbed as u64) << 32) | next as u64, SeqCst);
    // Release: pairs with the Acquire of `check` by walkers and lookups; no
    // stale header survives inside the grown payload.
    next_hdr.check.store(0, Release);
    crate::fault::at(crate::fault::REALLOC_ABSORBING);
    // Release: a walker that reads the new size is past the absorbed bytes.
    hdr.size.store(size + absorbed, Release);
    Ok(true)
}

/// Pops the block at `offset` if it is the head of its bucket, recording it
/// in `intent` first (as `free_index::pop` does). A block deeper in a list
/// is not reachable without taking the ones above it.
fn pop_exact<A: Arena>(
    arena: &A,
    offset: u32,
    hdr: &BlockHeader,
    size: u32,
    intent: &AtomicU64,
) -> bool {
    let class = class_of(size);
    let head = &arena.segment().index.heads[class.fl][class.sl];
    // Acquire: pairs with the pusher's Release, so `next_free` is its value.
    let current = head.load(Acquire);
    if current as u32 != offset {
        return false;
    }
    // Relaxed: installed only if the CAS proves the head unchanged.
    let next = hdr.next_free.load(Relaxed);
    // Relaxed: identifies the block; see free_index::pop.
    let generation = state::generation_of(hdr.state.load(Relaxed));
    // SeqCst: ordered before the head CAS (see free_index::pop).
    intent.store(hold_intent(offset, generation), SeqCst);
    let bumped = ((current >> 32).wrapping_add(1) << 32) | next as u64;
    // SeqCst: as free_index::pop's head CAS.
    head.compare_exchange(current, bumped, SeqCst, Relaxed)
        .is_ok()
}

/// Moves a held block: a new block, the payload copied, then the commit.
fn move_block<A: Arena>(
    arena: &A,
    hdr: &BlockHeader,
    offset: u32,
    payload: u64,
    (owner, st): (u32, u32),
    copy: impl FnOnce(u32, u32, u32),
) -> Result<Resized, ReallocError> {
    // Relaxed: the block is ours.
    let tag = hdr.type_tag.load(Relaxed);
    // Under the hold's record: a brief wait for a second entry (see
    // `alloc::IntentWait`).
    let new = match alloc::allocate_holding_intent(arena, payload, tag) {
        Ok(new) => new,
        Err(e) => {
            let_go_unchanged(hdr, owner, st);
            return Err(e.into());
        }
    };
    let Some(intent) = claim_intent(arena) else {
        let _ = alloc::free(arena, new, None);
        let_go_unchanged(hdr, owner, st);
        return Err(AllocError::Corrupted {
            offset,
            what: "no intent entry free for a move (too many threads of one participant)",
        }
        .into());
    };
    let intent = IntentGuard(intent);
    let new_hdr = arena.header(new).expect("allocated offsets are in bounds");
    // Relaxed: the block is ours; the old request bounds the live bytes.
    let old_len = hdr
        .requested
        .load(Relaxed)
        .min(hdr.size.load(Relaxed) - BLOCK_HEADER_SIZE);
    copy(
        offset + BLOCK_HEADER_SIZE,
        new + BLOCK_HEADER_SIZE,
        old_len.min(payload.min(u32::MAX as u64) as u32),
    );
    crate::fault::at(crate::fault::REALLOC_COPIED);
    // Relaxed: published by the Release of the commit below.
    new_hdr.reserved.store(resize_record(owner, st), Relaxed);
    // SeqCst: like every intent, read by recoverers with SeqCst.
    intent.store(move_intent(new, offset), SeqCst);
    crate::fault::at(crate::fault::REALLOC_MOVE_RECORDED);
    // The commit. Release: a recoverer that Acquires this word sees the
    // record in the new block. A store: the word is ours (RESIZING, me).
    // Relaxed load: ours.
    let gen = state::generation_of(hdr.state.load(Relaxed));
    hdr.state
        .store(state::pack(gen, arena.owner().0, ACKED), Release);
    crate::fault::at(crate::fault::REALLOC_COMMITTED);
    // Relaxed: ours; the new generation was taken by the allocation.
    let generation = state::generation_of(new_hdr.state.load(Relaxed));
    new_hdr.reserved.store(0, Relaxed);
    // Release: publishes the copied payload to whoever Acquires the word.
    new_hdr
        .state
        .store(state::pack(generation, owner, st), Release);
    crate::fault::at(crate::fault::REALLOC_HANDED);
    drop(intent);
    // Relaxed: ours (ACKED, me).
    let size = hdr.size.load(Relaxed);
    alloc::release_block(arena, hdr, offset, size);
    Ok(Resized {
        offset: new,
        generation,
        kind: ResizeKind::Moved,
    })
}

/// Hands back a held block whose size did not change, with its generation:
/// nothing about it changed, so handles to it stay good.
fn let_go_unchanged(hdr: &BlockHeader, owner: u32, st: u32) {
    // Relaxed: ours.
    let gen = state::generation_of(hdr.state.load(Relaxed));
    // Relaxed: published by the Release below.
    hdr.reserved.store(0, Relaxed);
    // Release: as in `let_go`.
    hdr.state.store(state::pack(gen, owner, st), Release);
}

/// The owner and state a block RESIZING under `dead` goes back to: the
/// record of the dead participant's resize intent naming it. Only that
/// participant writes its entries, and its holder's entry stays until the
/// block is let go, so the holder's record is among them. Another entry can
/// name the same block only if a sibling thread of the same participant
/// lost the hold's CAS (or was letting the block go) and died before
/// clearing its entry; if such records disagree, the block goes to an
/// owner other than the dead one (a block kept alive is at worst leaked; a
/// block reclaimed under a live owner would be freed while in use). No
/// record cannot come from a resize: the block goes to the dead
/// participant, to be reclaimed.
fn recorded_owner(dead: OwnerId, offset: u32, intents: &[u64]) -> (u32, u32) {
    let mut records = intents
        .iter()
        .filter_map(|&v| decode_resize_intent(v))
        .filter(|&(at, _, _)| at == offset)
        .map(|(_, owner, st)| (owner, st));
    let Some(first) = records.next() else {
        return (dead.0, ALLOCATED);
    };
    records.fold(first, |kept, r| if kept.0 == dead.0 { r } else { kept })
}

/// Settles the resizes a dead participant (`dead`, whose slot the caller
/// holds for recovery) left unfinished, given its intent entries: moves
/// past their commit hand the new block to the recorded owner; every
/// block still RESIZING under `dead` goes back to its recorded owner and
/// state with a new generation (its size is the old or the new one).
/// Returns `(header offset, generation)` of every block handed back.
pub fn settle_dead_resizes<A: Arena>(
    arena: &A,
    dead: OwnerId,
    intents: &[u64],
) -> Result<Vec<(u32, u64)>, BlockError> {
    let mut settled = Vec::new();
    for &v in intents.iter().filter(|&&v| is_move_intent(v)) {
        let (new, old) = ((v >> 32) as u32, (v as u32) & !0xF);
        let (Some(old_hdr), Some(new_hdr)) = (arena.header(old), arena.header(new)) else {
            continue;
        };
        // Acquire: pairs with the commit's Release.
        let old_word = old_hdr.state.load(Acquire);
        let committed = !(state::state_of(old_word) == RESIZING
            && state::owner_of(old_word) == dead.0
            && old_hdr.check.load(Acquire) == header_check(old));
        if !committed {
            continue; // the old block is restored below; the new one is freed
        }
        // Acquire: as above.
        let word = new_hdr.state.load(Acquire);
        let record = decode_record(new_hdr.reserved.load(Acquire));
        if let (Some((owner, st)), true) = (
            record,
            new_hdr.check.load(Acquire) == header_check(new)
                && state::state_of(word) == ALLOCATED
                && state::owner_of(word) == dead.0,
        ) {
            // AcqRel: a claim like recovery's others (see recover.rs).
            if new_hdr
                .state
                .compare_exchange(
                    word,
                    state::pack(state::generation_of(word), owner, st),
                    AcqRel,
                    Acquire,
                )
                .is_ok()
            {
                new_hdr.reserved.store(0, Relaxed);
                settled.push((new, state::generation_of(word)));
            }
        }
    }
    for info in crate::walk::walk(arena) {
        let info = info?;
        if info.carving || info.owner != dead || info.state != RESIZING {
            continue;
        }
        let Some(hdr) = arena.header(info.offset) else {
            continue;
        };
        // Acquire: pairs with the hold's Release (the record).
        let word = hdr.state.load(Acquire);
        if state::state_of(word) != RESIZING || state::owner_of(word) != dead.0 {
            continue;
        }
        let (owner, st) = recorded_owner(dead, info.offset, intents);
        let generation = arena.next_generation();
        // AcqRel: as above.
        if hdr
            .state
            .compare_exchange(word, state::pack(generation, owner, st), AcqRel, Acquire)
            .is_ok()
        {
            hdr.reserved.store(0, Relaxed);
            settled.push((info.offset, generation));
        }
    }
    Ok(settled)
}

// Over a real mapping, which loom builds do not have.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::AtomicMatrix;

    /// A sibling thread that stored a tentative record of the block and
    /// then stalls (descheduled) for a millisecond: a hold in an entry earlier in
    /// the slot waits for it, one in a later entry steps back and retries;
    /// either takes the block once the sibling steps back (its entry empty
    /// again). With both stepping back a few spins at a time, the hold
    /// gave up within microseconds and reported the block as being resized
    /// although nobody held it.
    #[test]
    fn a_hold_takes_the_block_once_a_stalled_sibling_steps_back() {
        for sibling_entry in [1, 0] {
            let m = AtomicMatrix::anonymous(1 << 20).unwrap();
            let hdr_of = |p: crate::RelativePtr<u8>| p.offset() - BLOCK_HEADER_SIZE;
            let b = hdr_of(m.allocate(64, 0).unwrap());
            let g = state::generation_of(Arena::header(&m, b).unwrap().state.load(Acquire));
            let entry = &m.my_slot().unwrap().carve_intents[sibling_entry];
            entry.store(tentative_resize_intent(b, m.owner().0, ALLOCATED), SeqCst);
            let mine = &m.my_slot().unwrap().carve_intents[1 - sibling_entry];
            let r = std::thread::scope(|s| {
                s.spawn(|| {
                    // Once the hold has begun (its entry claimed), the
                    // sibling stays 1 ms more, then steps back.
                    while mine.load(SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    entry.store(0, SeqCst);
                });
                reallocate(&m, b, g, 16, |_, _, _| {})
            });
            let r = r.unwrap_or_else(|e| {
                panic!("sibling in entry {sibling_entry}: the resize was refused: {e}")
            });
            assert_eq!(r.kind, ResizeKind::Shrunk);
            m.free(b, Some(r.generation)).unwrap();
        }
    }

    /// A grow judged the neighbour free with 1136 bytes; before its pop the
    /// neighbour was allocated as 1088 bytes (split) and freed again into
    /// the same bucket, so the pop claims a free block smaller than the
    /// grow needs. It goes back to the index, FREE and listed, and the
    /// grow reports "not in place" (the caller moves). It used to be held
    /// ACKED under the resizer, with `Corrupted` returned: a leak.
    #[test]
    fn a_claimed_neighbour_smaller_than_judged_goes_back_to_the_index() {
        let m = AtomicMatrix::anonymous(1 << 20).unwrap();
        let hdr_of = |p: crate::RelativePtr<u8>| p.offset() - BLOCK_HEADER_SIZE;
        let b = hdr_of(m.allocate(16, 0).unwrap());
        let n = hdr_of(m.allocate(1136 - 32, 0).unwrap());
        let c = hdr_of(m.allocate(16, 0).unwrap());
        m.free(n, None).unwrap();
        m.flush_thread_cache();
        let gb = state::generation_of(Arena::header(&m, b).unwrap().state.load(Acquire));
        // The judgement, as grow_into_neighbour makes it.
        let (next_hdr, judged) = alloc::checked_header(&m, n).unwrap();
        assert_eq!(judged, 1136);
        // Meanwhile: split and freed into the same bucket.
        let x = hdr_of(m.allocate(1088 - 32, 0).unwrap());
        assert_eq!(x, n);
        m.free(x, None).unwrap();
        m.flush_thread_cache();
        assert_eq!(next_hdr.size.load(Acquire), 1088);
        assert_eq!(class_of(1088), class_of(1136));
        let (hdr, (owner, st), _record) = hold(&m, b, gb).unwrap();
        let grown = absorb_neighbour(&m, hdr, 48, (n, next_hdr, judged), 1120);
        let_go_unchanged(hdr, owner, st);
        assert_eq!(grown, Ok(false));
        let w = next_hdr.state.load(Acquire);
        assert!(
            state::is_listable(state::state_of(w)),
            "the neighbour is left {} under {}",
            state::state_name(state::state_of(w)),
            state::owner_of(w)
        );
        // It is listed: an allocation of its size takes it.
        let again = hdr_of(m.allocate(1088 - 32, 0).unwrap());
        assert_eq!(again, n);
        m.free(again, None).unwrap();
        m.free(b, Some(gb)).unwrap();
        m.free(c, None).unwrap();
        m.flush_thread_cache();
        m.consolidate().unwrap();
        assert_eq!(m.stats().unwrap().used_bytes, 0);
    }
}
