//! The free index: one tagged Treiber stack per TLSF bucket, plus bitmaps.
//!
//! ```text
//!  heads[fl][sl] = tag:32 | offset:32 ──► hdr.next_free ──► hdr.next_free ──► NIL
//!  sl_bitmap[fl] bit sl ≈ "heads[fl][sl] non-empty";  fl_bitmap bit fl ≈ "sl_bitmap[fl] != 0"
//! ```
//!
//! Every push and every pop bumps the tag, so a pop whose CAS succeeds knows
//! the head did not change since it read it, and the `next_free` it read then
//! was the current one (the ABA case: popped, reused, pushed back). A 32-bit
//! tag could still repeat if one thread stalls through exactly 2^32 operations
//! on one bucket between its read and its CAS.
//!
//! Bits are set by pushers and cleared lazily by searchers that find a bucket
//! empty. Both sides re-check (Dekker-style, all `SeqCst`): a pusher stores
//! the head, then loads the bit; a clearer clears the bit, then loads the
//! head. In the single total order one of them sees the other, so no
//! non-empty bucket stays hidden once both have finished.

use crate::arena::Arena;
use crate::error::AllocError;
use crate::layout::{BlockHeader, FreeIndex, NIL};
use crate::size_class::{SizeClass, FL_COUNT, SL_COUNT};
use crate::sync::AtomicU64;
use crate::sync::Ordering::{Acquire, Relaxed, SeqCst};

#[inline]
fn bump(word: u64, offset: u32) -> u64 {
    ((word >> 32).wrapping_add(1) << 32) | offset as u64
}

/// Pushes the block at `offset` (state already stored by the caller) onto
/// the bucket of `class`. Public for model checkers (loom models in
/// `tests/loom_*.rs`); the allocator's own callers are `alloc` and
/// `consolidate`.
#[inline]
pub fn push(index: &FreeIndex, hdr: &BlockHeader, offset: u32, class: SizeClass) {
    let head = &index.heads[class.fl][class.sl];
    let mut current = head.load(Relaxed);
    loop {
        // Relaxed: published by the Release half of the CAS below.
        hdr.next_free.store(current as u32, Relaxed);
        // SeqCst: Release publishes the header (state, size, next_free) to the
        // popper that Acquires this head; SeqCst orders it before the bitmap
        // load in `set_bits` (see the module docs).
        match head.compare_exchange_weak(current, bump(current, offset), SeqCst, Relaxed) {
            Ok(_) => break,
            Err(actual) => current = actual,
        }
    }
    set_bits(index, class);
}

#[inline]
fn set_bits(index: &FreeIndex, class: SizeClass) {
    crate::sync::seqcst_store_load();
    let sl_bit = 1u32 << class.sl;
    // SeqCst loads pair with the SeqCst clear + re-check in `clear_if_empty`.
    if index.sl_bitmap[class.fl].load(SeqCst) & sl_bit == 0 {
        index.sl_bitmap[class.fl].fetch_or(sl_bit, SeqCst);
    }
    crate::sync::seqcst_store_load();
    let fl_bit = 1u32 << class.fl;
    // SeqCst: the same pattern one level up (pairs with clear_level_if_empty).
    if index.fl_bitmap.load(SeqCst) & fl_bit == 0 {
        index.fl_bitmap.fetch_or(fl_bit, SeqCst);
    }
}

/// Pops the head of `class` if its block holds at least `min_size` bytes.
/// Returns the block's offset; the caller must claim it (a CAS on its state
/// word) before using it. With `intent`, the block about to be taken is
/// recorded there (see `alloc::hold_intent`) before each attempt, so that a
/// recoverer finds it if the caller dies between the pop and the claim.
/// Public for model checkers.
#[inline]
pub fn pop<A: Arena>(
    arena: &A,
    class: SizeClass,
    min_size: u32,
    intent: Option<&AtomicU64>,
) -> Result<Option<u32>, AllocError> {
    let head = &arena.segment().index.heads[class.fl][class.sl];
    // Acquire: pairs with the pusher's Release so `next_free` and `size` of
    // the head block are the values it published.
    let mut current = head.load(Acquire);
    loop {
        let offset = current as u32;
        if offset == NIL {
            return Ok(None);
        }
        let Some(hdr) = arena.header(offset) else {
            return Err(AllocError::Corrupted {
                offset,
                what: "free-list head out of bounds",
            });
        };
        // Relaxed: a block's size changes only while it is out of every list,
        // which would also change the tagged head and fail the CAS.
        if min_size != 0 && hdr.size.load(Relaxed) < min_size {
            return Ok(None);
        }
        // Relaxed: only installed if the CAS proves the head (and so this
        // block's link) unchanged since the Acquire load.
        let next = hdr.next_free.load(Relaxed);
        if let Some(intent) = intent {
            // Relaxed: the generation only identifies the block; while it
            // stays at the head (the CAS below proves it) nobody claims it.
            let generation = crate::state::generation_of(hdr.state.load(Relaxed));
            // SeqCst: ordered before the head CAS, so a recoverer that drains
            // the index and then reads the intents (SeqCst) either popped
            // the block itself or sees this record.
            intent.store(crate::alloc::hold_intent(offset, generation), SeqCst);
        }
        match head.compare_exchange_weak(current, bump(current, next), SeqCst, Acquire) {
            Ok(_) => return Ok(Some(offset)),
            Err(actual) => current = actual,
        }
    }
}

/// The bits of a second-level bitmap that name buckets. Any other bit is
/// garbage (a corrupt segment) and must never become a bucket index.
const SL_MASK: u32 = if SL_COUNT >= 32 {
    !0
} else {
    (1u32 << SL_COUNT) - 1
};

/// The first bucket at or after `from` whose bit is set (a hint). Public
/// for model checkers.
#[inline]
pub fn find_nonempty(index: &FreeIndex, from: SizeClass) -> Option<SizeClass> {
    // Relaxed: bits are hints; a stale answer costs one failed pop.
    let sl_map = index.sl_bitmap[from.fl].load(Relaxed) & (!0u32 << from.sl) & SL_MASK;
    if sl_map != 0 {
        return Some(SizeClass {
            fl: from.fl,
            sl: sl_map.trailing_zeros() as usize,
        });
    }
    let mut fl_map =
        index.fl_bitmap.load(Relaxed) & (!0u32).checked_shl(from.fl as u32 + 1).unwrap_or(0);
    while fl_map != 0 {
        let fl = fl_map.trailing_zeros() as usize;
        if fl >= FL_COUNT {
            return None;
        }
        let sl_map = index.sl_bitmap[fl].load(Relaxed) & SL_MASK;
        if sl_map != 0 {
            return Some(SizeClass {
                fl,
                sl: sl_map.trailing_zeros() as usize,
            });
        }
        clear_level_if_empty(index, fl);
        fl_map &= fl_map - 1;
    }
    None
}

/// Clears the bit of `class` if its bucket is empty, then re-checks.
/// Public for model checkers.
pub fn clear_if_empty(index: &FreeIndex, class: SizeClass) {
    let head = &index.heads[class.fl][class.sl];
    if head.load(SeqCst) as u32 != NIL {
        return;
    }
    let sl_bit = 1u32 << class.sl;
    // SeqCst clear, then SeqCst re-load of the head: see the module docs.
    let before = index.sl_bitmap[class.fl].fetch_and(!sl_bit, SeqCst);
    crate::sync::seqcst_store_load();
    if head.load(SeqCst) as u32 != NIL {
        set_bits(index, class);
    } else if before & !sl_bit == 0 {
        clear_level_if_empty(index, class.fl);
    }
}

fn clear_level_if_empty(index: &FreeIndex, fl: usize) {
    let fl_bit = 1u32 << fl;
    // SeqCst throughout: clear, then re-check the level below, against a
    // pusher that sets the level below, then checks this bit (set_bits).
    if index.sl_bitmap[fl].load(SeqCst) != 0 {
        return;
    }
    index.fl_bitmap.fetch_and(!fl_bit, SeqCst);
    crate::sync::seqcst_store_load();
    if index.sl_bitmap[fl].load(SeqCst) != 0 {
        index.fl_bitmap.fetch_or(fl_bit, SeqCst);
    }
}

/// Offsets in the bucket of `class`, walked without popping (for checkers).
/// Exact only at quiescence; stops after `limit` entries or at a bad link.
pub fn bucket_offsets<A: Arena>(arena: &A, class: SizeClass, limit: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let mut offset = arena.segment().index.heads[class.fl][class.sl].load(Acquire) as u32;
    while offset != NIL && out.len() < limit {
        out.push(offset);
        match arena.header(offset) {
            // Acquire: pairs with the pusher's Release CAS that published the link.
            Some(h) => offset = h.next_free.load(Acquire),
            None => break,
        }
    }
    out
}
