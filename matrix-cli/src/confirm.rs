//! Telling a real finding from an operation in flight, on a segment in use.
//!
//! One pass of the checker reads the chain at one moment and the free lists
//! a moment later; with live participants, a block popped, pushed, cached or
//! released in between looks stranded or wrongly listed although nothing is
//! wrong. So on a segment in use every problem a pass finds is looked at
//! again, twice, [`SETTLE`] apart (long enough for any allocate, free or
//! push in flight to finish), and reported only if both looks see the same
//! block word (generation, owner and state: nobody claimed, freed or
//! released the block meanwhile) and the same broken condition:
//!
//! * a FREE block in no list: its bucket read as a consistent snapshot (the
//!   head's tag, which changes on every push and pop, equal before and
//!   after the traversal), the block not in it, and no live participant's
//!   hold intent naming it (a pop between its head CAS and its claim);
//! * a listed block that is neither FREE nor RELEASING: the same snapshot,
//!   the block in it;
//! * anything else: seen again by a fresh pass, with the block word (when
//!   the finding names a block) unchanged across that pass.
//!
//! A finding that changes between the looks was in flight and is dropped.
//! When a bucket never holds still long enough for a consistent snapshot,
//! the answer is *undecidable*, and fsck says "inconclusive" instead of
//! guessing.

use crate::fsck::Finding;
use crate::sync::Ordering::{Acquire, SeqCst};
use matrix_core::alloc::is_hold_intent;
use matrix_core::layout::{header_check, MIN_BLOCK, NIL};
use matrix_core::size_class::{class_of, FL_COUNT, SL_COUNT};
use matrix_core::state::{self, FREE};
use matrix_core::{Arena, Liveness};
use std::collections::HashSet;
use std::time::Duration;

/// Time between the two looks at a finding.
pub const SETTLE: Duration = Duration::from_millis(20);

/// Traversals of one bucket before its snapshot is given up as undecidable.
const SNAPSHOT_TRIES: usize = 16;

/// What the second look says about a finding of the first pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Seen twice, unchanged: real.
    Confirmed,
    /// Changed or gone between the looks: an operation in flight.
    InFlight,
    /// The segment changed under the look too fast to tell.
    Undecidable,
}

/// One look at one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// The condition holds, with this block word (0 when it names no block).
    Holds(u64),
    /// It does not hold (any more).
    Gone,
    /// It could not be told.
    Unstable,
}

/// The identity of a finding across passes.
pub type Key = (&'static str, Option<u32>, Option<usize>);

/// The identity of `f` across passes.
pub fn key(f: &Finding) -> Key {
    (f.kind, f.offset, f.slot)
}

/// Judges each of `findings` (problems of one pass over `arena`) by two
/// more looks [`SETTLE`] apart; `fresh_pass` runs one more pass and returns
/// the keys of the problems it found.
pub fn confirm<A: Arena>(
    arena: &A,
    findings: &[Finding],
    mut fresh_pass: impl FnMut() -> HashSet<Key>,
) -> Vec<Verdict> {
    let mut first = Vec::new();
    for round in 0..2 {
        std::thread::sleep(SETTLE);
        let looks = look_all(arena, findings, &mut fresh_pass);
        if round == 0 {
            first = looks;
            continue;
        }
        return first
            .iter()
            .zip(looks)
            .map(|(&a, b)| match (a, b) {
                (Look::Unstable, _) | (_, Look::Unstable) => Verdict::Undecidable,
                (Look::Holds(x), Look::Holds(y)) if x == y => Verdict::Confirmed,
                _ => Verdict::InFlight,
            })
            .collect();
    }
    unreachable!("two rounds always return")
}

fn look_all<A: Arena>(
    arena: &A,
    findings: &[Finding],
    fresh_pass: &mut impl FnMut() -> HashSet<Key>,
) -> Vec<Look> {
    let generic: Vec<bool> = findings
        .iter()
        .map(|f| !matches!(f.kind, "stranded-free-block" | "listed-block-not-free"))
        .collect();
    let before: Vec<Option<u64>> = findings.iter().map(|f| word_at(arena, f.offset)).collect();
    let fresh = if generic.iter().any(|&g| g) {
        fresh_pass()
    } else {
        HashSet::new()
    };
    findings
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if !generic[i] {
                return match f.kind {
                    "stranded-free-block" => look_stranded(arena, f.offset),
                    _ => look_listed_not_free(arena, f.offset, f.bucket),
                };
            }
            if !fresh.contains(&key(f)) {
                return Look::Gone;
            }
            match (before[i], word_at(arena, f.offset)) {
                (Some(a), Some(b)) if a == b => Look::Holds(a),
                (None, None) => Look::Holds(0),
                _ => Look::Gone,
            }
        })
        .collect()
}

/// The state word of the genuine block header at `offset`, if there is one.
fn word_at<A: Arena>(arena: &A, offset: Option<u32>) -> Option<u64> {
    let hdr = arena.header(offset?)?;
    // Acquire: pairs with the Release that published the header.
    if hdr.check.load(Acquire) != header_check(offset?) {
        return None;
    }
    // Acquire: pairs with the Release of the word's last change.
    Some(hdr.state.load(Acquire))
}

/// A FREE block in no list, and no live participant about to claim it.
fn look_stranded<A: Arena>(arena: &A, offset: Option<u32>) -> Look {
    let Some(offset) = offset else {
        return Look::Gone;
    };
    let Some(word) = word_at(arena, Some(offset)) else {
        return Look::Gone;
    };
    if state::state_of(word) != FREE || popped_by_a_live_participant(arena, offset) {
        return Look::Gone;
    }
    let Some(hdr) = arena.header(offset) else {
        return Look::Gone;
    };
    // Relaxed: a FREE block's size changes only under a claim, which
    // changes the word; the word is compared again below.
    let size = hdr.size.load(crate::sync::Ordering::Relaxed);
    if size < MIN_BLOCK {
        return Look::Gone;
    }
    let class = class_of(size);
    let Some(listed) = bucket_snapshot(arena, class.fl, class.sl) else {
        return Look::Unstable;
    };
    if listed.contains(&offset) || word_at(arena, Some(offset)) != Some(word) {
        return Look::Gone;
    }
    if popped_by_a_live_participant(arena, offset) {
        return Look::Gone;
    }
    Look::Holds(word)
}

/// A listed block that no free list may hold (neither FREE nor RELEASING).
fn look_listed_not_free<A: Arena>(
    arena: &A,
    offset: Option<u32>,
    bucket: Option<[usize; 2]>,
) -> Look {
    let (Some(offset), Some([fl, sl])) = (offset, bucket) else {
        return Look::Gone;
    };
    if fl >= FL_COUNT || sl >= SL_COUNT {
        return Look::Gone;
    }
    let Some(word) = word_at(arena, Some(offset)) else {
        return Look::Gone;
    };
    if state::is_listable(state::state_of(word)) {
        return Look::Gone;
    }
    let Some(listed) = bucket_snapshot(arena, fl, sl) else {
        return Look::Unstable;
    };
    if !listed.contains(&offset) || word_at(arena, Some(offset)) != Some(word) {
        return Look::Gone;
    }
    Look::Holds(word)
}

/// Whether a participant that is (or may be) alive recorded a pop of the
/// block at `offset` that it has not finished.
fn popped_by_a_live_participant<A: Arena>(arena: &A, offset: u32) -> bool {
    arena
        .segment()
        .participants()
        .enumerate()
        .filter(|&(i, _)| crate::view::slot_liveness(arena, i) != Liveness::Dead)
        .any(|(_, slot)| {
            slot.carve_intents.iter().any(|e| {
                // SeqCst: pairs with the popper's intent store, made before
                // its head CAS (see free_index::pop).
                let v = e.load(SeqCst);
                is_hold_intent(v) && (v as u32) & !1 == offset
            })
        })
}

/// The offsets in bucket `[fl][sl]`, read while the bucket did not change:
/// its head word (tag and offset; the tag changes on every push and pop)
/// is the same before and after the traversal. `None` if it never held
/// still for [`SNAPSHOT_TRIES`] traversals.
fn bucket_snapshot<A: Arena>(arena: &A, fl: usize, sl: usize) -> Option<HashSet<u32>> {
    let head = &arena.segment().index.heads[fl][sl];
    let limit = (arena.arena_end().saturating_sub(arena.arena_start()) / MIN_BLOCK) as usize + 2;
    for _ in 0..SNAPSHOT_TRIES {
        // SeqCst (both head loads and the links): the traversal's reads are
        // ordered between the two loads of the head, so a link rewritten by
        // a push (which writes the link, then CASes the head) during the
        // traversal makes the second load see a new tag.
        let before = head.load(SeqCst);
        let mut seen = HashSet::new();
        let mut offset = before as u32;
        while offset != NIL && seen.len() < limit && seen.insert(offset) {
            match arena.header(offset) {
                Some(hdr) => offset = hdr.next_free.load(SeqCst),
                None => break,
            }
        }
        if head.load(SeqCst) == before {
            return Some(seen);
        }
        std::thread::yield_now();
    }
    None
}
