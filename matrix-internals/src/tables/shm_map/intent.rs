//! Intent entries: what each writer of a [`ShmMap`](super::ShmMap) is in the
//! middle of, so that [`ShmMap::recover`](super::ShmMap::recover) can
//! finish or undo the work of a writer that died.
//!
//! ```text
//!  ctl:  claim generation of the participant slot (32) | owner id (12) << 4 | phase (4)
//!  new:  the entry an insert links (token word), 0 before it is built
//!  old:  the entry being unlinked (overwrite, remove): from before the
//!        unlinking CAS until after the entry is freed; 0 otherwise
//! ```
//!
//! An entry is taken by one CAS of `ctl` from 0, written only by its taker,
//! and given back by storing 0 last. A recoverer takes over a dead
//! writer's entry with one CAS of `ctl` (from the word it judged dead), so
//! two recoverers never settle one intent twice.

use super::{entry, ShmMap, Slot, TOMBSTONE};
use crate::dynamic::OwnsBlocks;
use crate::shm::owner_alive;
use crate::sync::{AtomicU64, Ordering::*};
use crate::tables::{MapKey, ShmMapError};
use crossbeam_utils::Backoff;
use matrix_core::layout::slot_word;
use matrix_core::{AtomicMatrix, OwnerId};
use matrix_handler::{HandlerFunctions, ShmSafe};

/// Intent entries per map: writers at once.
pub(crate) const INTENTS: usize = 64;

#[repr(C)]
pub(crate) struct Intent {
    pub(crate) ctl: AtomicU64,
    pub(crate) new: AtomicU64,
    pub(crate) old: AtomicU64,
    _pad: AtomicU64,
}

/// What the holder of an intent is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Phase {
    /// Building an entry and handing its blocks to the segment.
    Building = 1,
    /// The entry is the segment's; linking it (overwrite or claim).
    Ready = 2,
    /// Removing (unlinking `old`, then freeing it).
    Removing = 3,
}

const PHASE_MASK: u64 = 0xF;

/// This participant's identity in a control word: its owner id and the
/// generation of its claim on its participant slot (so a later holder of
/// the same slot is not mistaken for it).
pub(crate) fn identity(matrix: &AtomicMatrix) -> u64 {
    let owner = matrix.owner_id();
    let generation = owner
        .slot()
        .and_then(|s| matrix.header().participant(s))
        // Acquire: pairs with the Release CAS that claimed the slot.
        .map(|p| slot_word::generation_of(p.word.load(Acquire)))
        .unwrap_or(0);
    (generation as u64) << 32 | ((owner.0 as u64) & 0xFFF) << 4
}

/// Whether the writer named by control word `ctl` is certainly gone.
fn holder_dead(matrix: &AtomicMatrix, ctl: u64) -> bool {
    let owner = ((ctl >> 4) & 0xFFF) as u32;
    let generation = (ctl >> 32) as u32;
    let Some(slot) = OwnerId(owner).slot() else {
        return true;
    };
    let Some(p) = matrix.header().participant(slot) else {
        return true;
    };
    // Acquire: pairs with the Release CAS that claimed the slot.
    if slot_word::generation_of(p.word.load(Acquire)) != generation {
        return true;
    }
    !owner_alive(matrix, owner)
}

/// What [`ShmMap::recover`](super::ShmMap::recover) settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapRecovery {
    /// Intents of dead writers taken over and settled.
    pub intents: usize,
    /// Blocks freed (entries and the blocks of their values).
    pub blocks_freed: usize,
    /// Claims of dead inserters turned into tombstones.
    pub claims_aborted: usize,
}

thread_local! {
    /// Where this thread starts looking for an idle intent entry, so that
    /// threads of one process do not all race for the first one.
    static START: usize = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::thread::current().id().hash(&mut h);
        std::process::id().hash(&mut h);
        h.finish() as usize % INTENTS
    };
}

impl<K: MapKey, V: ShmSafe + Copy + OwnsBlocks, H: HandlerFunctions> ShmMap<K, V, H> {
    /// Takes an idle intent entry for `phase`.
    pub(crate) fn claim_intent(&self, phase: Phase) -> Result<usize, ShmMapError> {
        let start = START.with(|s| *s);
        let backoff = Backoff::new();
        for round in 0..64u32 {
            for k in 0..INTENTS {
                let i = (start + k) % INTENTS;
                let ctl = &self.intent(i).ctl;
                // Relaxed: a hint; the CAS decides. SeqCst on success: the
                // entry is ours before anything we record in it (and before
                // our claims, which name it).
                if ctl.load(Relaxed) == 0
                    && ctl
                        .compare_exchange(0, self.me | phase as u64, SeqCst, Relaxed)
                        .is_ok()
                {
                    return Ok(i);
                }
            }
            if round % 8 == 7 {
                // Entries of dead writers come back only through recovery.
                let _ = self.recover();
            }
            backoff.snooze();
        }
        Err(ShmMapError::Busy)
    }

    /// Gives intent `i` back (its records cleared first).
    pub(crate) fn release_intent(&self, i: usize) {
        let it = self.intent(i);
        // SeqCst: cleared before the entry is idle again.
        it.new.store(0, SeqCst);
        it.old.store(0, SeqCst);
        // Release: a next taker (Acquire by its SeqCst CAS) sees the cleared records.
        it.ctl.store(0, Release);
    }

    /// Whether the claim of intent entry `i` can be aborted as abandoned:
    /// the entry is idle (its holder finished without this claim) or its
    /// holder is dead.
    pub(crate) fn claim_is_dead(&self, i: usize) -> bool {
        // Acquire: pairs with the CAS that took the entry.
        let ctl = self.intent(i).ctl.load(Acquire);
        ctl == 0 || (ctl & !PHASE_MASK != self.me && holder_dead(self.handler.matrix(), ctl))
    }

    /// Whether some slot holds the entry word `word`.
    fn is_linked(&self, word: u64) -> bool {
        // SeqCst: read after the intent was taken over (in the same order).
        (0..=self.mask).any(|i| self.slot(i).load(SeqCst) == word)
    }

    /// Whether some writer records the entry word `word` as the one it
    /// unlinks (see `recover`).
    fn is_being_unlinked(&self, word: u64) -> bool {
        // SeqCst: read after the slot scan of `is_linked`, in the order of
        // the unlinkers' record, unlink CAS and clear (see `recover`).
        (0..INTENTS).any(|i| self.intent(i).old.load(SeqCst) == word)
    }

    /// Settles what dead writers left half done (see the module docs):
    /// frees entries built but never linked and entries unlinked but not
    /// yet freed, keeps linked ones, and turns their claims into
    /// tombstones. Safe to run at any time, by any number of participants,
    /// next to live writers (it only touches intents whose holder is dead).
    /// Run it after the allocator's `recover()`.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for a check that fails.
    pub fn recover(&self) -> Result<MapRecovery, ShmMapError> {
        let matrix = self.handler.matrix();
        let mut report = MapRecovery::default();
        for ix in 0..INTENTS {
            let it = self.intent(ix);
            // Acquire: pairs with the holder's stores into the entry.
            let ctl = it.ctl.load(Acquire);
            if ctl == 0 || ctl & !PHASE_MASK == self.me || !holder_dead(matrix, ctl) {
                continue;
            }
            let phase = ctl & PHASE_MASK;
            // SeqCst: one recoverer takes it; what follows reads the
            // records after the takeover.
            if it
                .ctl
                .compare_exchange(ctl, self.me | phase, SeqCst, Relaxed)
                .is_err()
            {
                continue;
            }
            // SeqCst: after the takeover.
            let (new, old) = (it.new.load(SeqCst), it.old.load(SeqCst));
            let h = &self.handler;
            if phase == Phase::Building as u64 {
                if new != 0 {
                    report.blocks_freed += entry::free_entry::<V, H>(h, self.token(new));
                }
            } else if phase == Phase::Ready as u64 {
                // Whether the dead one's CAS linked `new`. A slot names it
                // (still linked); or a live writer unlinked it since, and
                // records it as its `old` from before its unlink CAS until
                // after it freed it; or it is freed (only an unlinker frees
                // it: its blocks are the segment's). Read in this order,
                // one of the three is seen if it was linked: a slot scan
                // that misses it comes after the unlinker recorded it, and
                // a record scan that misses it comes after the free.
                let linked = self.is_linked(new)
                    || self.is_being_unlinked(new)
                    || entry::read::<V, H>(h, self.token(new)).is_none();
                if linked {
                    if old != 0 {
                        report.blocks_freed += entry::free_entry::<V, H>(h, self.token(old));
                    }
                } else {
                    report.blocks_freed += entry::free_entry::<V, H>(h, self.token(new));
                }
            } else if phase == Phase::Removing as u64 && old != 0 && !self.is_linked(old) {
                report.blocks_freed += entry::free_entry::<V, H>(h, self.token(old));
            }
            for i in 0..=self.mask {
                // SeqCst: as in `is_linked`.
                let w = self.slot(i).load(SeqCst);
                if matches!(self.decode(w), Slot::Claimed { intent, .. } if intent == ix)
                    && self
                        .slot(i)
                        .compare_exchange(w, TOMBSTONE, SeqCst, Relaxed)
                        .is_ok()
                {
                    report.claims_aborted += 1;
                }
            }
            self.release_intent(ix);
            report.intents += 1;
        }
        Ok(report)
    }
}
