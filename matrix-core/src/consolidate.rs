//! Consolidation: merge physically adjacent free blocks.
//!
//! ```text
//!  buckets ──pop one at a time──► held (each marked COALESCING, owner = me,
//!                                       right after its pop)
//!  held, sorted by offset:  [A][B]  [C][D][E]      [F]|top
//!  merged:                  [A  ]   [C      ]      (F retracted into the wilderness)
//!  pushed back as FREE
//! ```
//!
//! Blocks another thread popped meanwhile are simply not merged this round.
//! One consolidator runs at a time (the `consolidator` word); an allocator
//! that misses while one runs waits for it, bounded, and takes the word over
//! if the holder's process is dead. That wait is the one place the allocator
//! is not strictly lock-free; allocate and free never reach it on a hit.
//!
//! A merge stores the first block's new size (Release) and then clears the
//! `check` word of each absorbed header, so no stale header survives inside a
//! payload or in the wilderness: a valid `check` always marks a real block.

use crate::alloc::release_block;
use crate::arena::Arena;
use crate::error::AllocError;
use crate::free_index;
use crate::layout::{header_check, BLOCK_ALIGN, MIN_BLOCK};
use crate::size_class::{SizeClass, FL_COUNT, SL_COUNT};
use crate::state::{self, COALESCING};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

/// What one consolidation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsolidationReport {
    /// Whether this call ran a consolidation (false: another was running).
    pub ran: bool,
    /// Free blocks taken out of the index.
    pub blocks_in: usize,
    /// Free blocks pushed back after merging.
    pub blocks_out: usize,
    /// Bytes returned to the wilderness.
    pub bytes_to_wilderness: u64,
    /// Free blocks with impossible sizes, taken out of circulation.
    pub damaged_blocks: usize,
}

/// Blocks a consolidation holds (COALESCING under its name): `(offset, size)`.
pub(crate) type Held = Vec<(u32, u32)>;

/// Runs a consolidation unless one is already running.
pub fn consolidate<A: Arena>(arena: &A) -> Result<ConsolidationReport, AllocError> {
    consolidate_with(arena, &mut |_| {})
}

/// [`consolidate`], calling `after_drain` once every free list has been
/// drained into the consolidator's hands and before anything is merged:
/// recovery uses that moment, when no free block of a dead participant can
/// still be in a list, to claim the blocks it could not place before.
pub(crate) fn consolidate_with<A: Arena>(
    arena: &A,
    after_drain: &mut dyn FnMut(&mut Held),
) -> Result<ConsolidationReport, AllocError> {
    let seg = arena.segment();
    let me = arena.owner().0;
    // Acquire: pairs with the previous holder's Release at the end.
    if seg
        .consolidator
        .compare_exchange(0, me, Acquire, Relaxed)
        .is_err()
    {
        return Ok(ConsolidationReport::default());
    }
    let result = run(arena, after_drain);
    // Release: an allocator that Acquires the new epoch sees the merged
    // blocks pushed. Relaxed for the counter: statistics only.
    seg.consolidation_epoch.fetch_add(1, Release);
    seg.counters.consolidations.fetch_add(1, Relaxed);
    // Release: the merged blocks are pushed before the next holder starts.
    seg.consolidator.store(0, Release);
    result
}

/// The allocation miss path: consolidate, or wait (bounded) for the running
/// consolidation to finish, taking it over if its holder died.
pub(crate) fn consolidate_or_wait<A: Arena>(arena: &A) -> Result<(), AllocError> {
    let seg = arena.segment();
    let epoch = seg.consolidation_epoch.load(Acquire);
    wait_for_consolidator(arena, &mut || {
        // Acquire: pairs with the epoch's Release bump after a consolidation.
        Ok(consolidate(arena)?.ran || seg.consolidation_epoch.load(Acquire) != epoch)
    })
    .map(|_| ())
}

/// Runs a consolidation with `after_drain` (see [`consolidate_with`]),
/// waiting (bounded) for a running one to finish and taking the word over
/// from a dead holder. `None` if no consolidation could be run in time.
pub(crate) fn consolidate_exclusive<A: Arena>(
    arena: &A,
    after_drain: &mut dyn FnMut(&mut Held),
) -> Result<Option<ConsolidationReport>, AllocError> {
    let mut report = None;
    wait_for_consolidator(arena, &mut || {
        let r = consolidate_with(arena, after_drain)?;
        let ran = r.ran;
        report = Some(r);
        Ok(ran)
    })?;
    Ok(report.filter(|r| r.ran))
}

/// Calls `attempt` until it says done, up to a bound, taking the
/// consolidator word over from a dead holder in between. Returns whether an
/// attempt succeeded.
fn wait_for_consolidator<A: Arena>(
    arena: &A,
    attempt: &mut dyn FnMut() -> Result<bool, AllocError>,
) -> Result<bool, AllocError> {
    let seg = arena.segment();
    for round in 0..20_000u32 {
        if attempt()? {
            return Ok(true);
        }
        let holder = seg.consolidator.load(Acquire);
        if holder != 0 && round % 64 == 63 {
            // A holder is taken over only if it is definitely dead (nobody
            // holds its liveness lock; unknown waits). A garbage holder id
            // names no participant and is cleared as well.
            let holder_dead = match crate::arena::OwnerId(holder).slot() {
                // Owner ids name a slot, not a claim: a slot whose lock is
                // held (its holder, or a recoverer closing it) may still be
                // consolidating; only a definitely dead one is taken over.
                Some(s) => arena.liveness(s) == crate::participant::Liveness::Dead,
                None => true,
            };
            // AcqRel: taking over a dead holder's word orders with its last writes.
            if holder_dead
                && seg
                    .consolidator
                    .compare_exchange(holder, 0, AcqRel, Relaxed)
                    .is_ok()
            {
                continue;
            }
        }
        crate::sync::spin_hint();
        if round > 256 {
            #[cfg(not(loom))]
            std::thread::yield_now();
        }
    }
    Ok(false)
}

fn run<A: Arena>(
    arena: &A,
    after_drain: &mut dyn FnMut(&mut Held),
) -> Result<ConsolidationReport, AllocError> {
    let seg = arena.segment();
    let me = arena.owner().0;
    let max_blocks = ((arena.arena_end() - arena.arena_start()) / MIN_BLOCK) as usize;
    let mut held: Vec<(u32, u32)> = Vec::new();
    // Every pop counts, taken or not: a corrupt list may cycle through
    // entries that are never marked, and must not keep us popping forever.
    let mut popped = 0usize;
    let mut report = ConsolidationReport {
        ran: true,
        ..Default::default()
    };
    // Every pop is recorded here first (see `free_index::pop`): a
    // consolidator that dies between a pop and its claim leaves the block
    // findable by the next recovery.
    let Some(intent) = crate::alloc::claim_intent(arena) else {
        report.ran = false;
        return Ok(report);
    };
    let intent = crate::alloc::IntentGuard(intent);
    'buckets: for fl in 0..FL_COUNT {
        for sl in 0..SL_COUNT {
            let class = SizeClass { fl, sl };
            while let Some(offset) = free_index::pop(arena, class, 0, Some(&intent))? {
                popped += 1;
                if popped > max_blocks {
                    break 'buckets;
                }
                let hdr = arena.header(offset).expect("pop checks bounds");
                crate::fault::at(crate::fault::CONSOLIDATE_POPPED);
                // Acquire: pairs with the Release that published the check,
                // and with the pusher's Release of the FREE word.
                let check = hdr.check.load(Acquire);
                let word = hdr.state.load(Acquire);
                if state::state_of(word) == COALESCING && state::owner_of(word) == me {
                    // Popped twice: the list has a cycle. Stop taking blocks.
                    break 'buckets;
                }
                if check != header_check(offset) || !state::is_listable(state::state_of(word)) {
                    // Not a free block (a corrupt link into a live block or a
                    // payload): leave it untouched, out of the index.
                    report.damaged_blocks += 1;
                    continue;
                }
                // Claimed right after the pop, with one CAS from the word
                // judged above, under a new generation (every claim of a
                // free block takes one, so a recoverer comparing a recorded
                // generation knows whether anyone claimed the block since):
                // if we die now, recovery finds the block by its owner; a
                // corrupt list handing the entry to someone else as well
                // gives it to only one of us.
                let generation = arena.next_generation();
                if !crate::alloc::claim_listed(hdr, word, |_| {
                    state::pack(generation, me, COALESCING)
                }) {
                    report.damaged_blocks += 1;
                    continue;
                }
                // Release: a recoverer that reads the entry back at the
                // placeholder sees the claim.
                intent.store(1, Release);
                // Relaxed: ordered after the claim's Acquire; the block is ours.
                let size = hdr.size.load(Relaxed);
                if size < MIN_BLOCK
                    || size % BLOCK_ALIGN != 0
                    || offset as u64 + size as u64 > arena.arena_end() as u64
                {
                    // A damaged header: keep it out of circulation (it stays
                    // COALESCING under our name; `matrix fsck` reports it).
                    report.damaged_blocks += 1;
                    continue;
                }
                held.push((offset, size));
                if held.len() > max_blocks {
                    break 'buckets;
                }
            }
            free_index::clear_if_empty(&seg.index, class);
        }
    }
    report.blocks_in = held.len();
    drop(intent);
    after_drain(&mut held);
    held.sort_unstable_by_key(|&(offset, _)| offset);
    // Free blocks never overlap; if damaged sizes say otherwise, the later
    // block is taken out of circulation rather than handed out twice.
    let mut end = 0u64;
    held.retain(|&(offset, size)| {
        let ok = offset as u64 >= end;
        if ok {
            end = offset as u64 + size as u64;
        } else {
            report.damaged_blocks += 1;
        }
        ok
    });

    let mut i = 0;
    while i < held.len() {
        let (start, mut size) = held[i];
        let mut j = i + 1;
        while j < held.len() && start as u64 + size as u64 == held[j].0 as u64 {
            size = size.saturating_add(held[j].1);
            j += 1;
        }
        let hdr = arena.header(start).expect("held blocks are in bounds");
        if j > i + 1 {
            // Release: a walker reading the new size skips the absorbed headers.
            hdr.size.store(size, Release);
            crate::fault::at(crate::fault::CONSOLIDATE_MERGING);
            for &(absorbed, _) in &held[i + 1..j] {
                if let Some(h) = arena.header(absorbed) {
                    // Release: a walker that sees the check gone re-reads the
                    // predecessor's size and sees the merge.
                    h.check.store(0, Release);
                }
            }
        }
        // SeqCst: ordered with carvers' CAS on `top` (a stale read only
        // makes the retract's CAS fail, and the run is pushed instead).
        if start as u64 + size as u64 == seg.top.load(SeqCst) as u64 && retract(arena, start, size)
        {
            report.bytes_to_wilderness += size as u64;
        } else {
            release_block(arena, hdr, start, size);
            report.blocks_out += 1;
        }
        i = j;
    }
    Ok(report)
}

/// Returns the block `[start, start + size)`, which ends at `top`, to the
/// wilderness. Its header is invalidated first so the wilderness never holds
/// a valid-looking header; if a carver moved `top` meanwhile, it is restored.
fn retract<A: Arena>(arena: &A, start: u32, size: u32) -> bool {
    let Some(hdr) = arena.header(start) else {
        return false;
    };
    // While its header is cleared the run is recorded as an intent, as a
    // carve is: walkers step over it, and if this participant dies before
    // `top` moves, recovery rebuilds the header from the intent instead of
    // finding the chain broken at `start`.
    let Some(intent) = crate::alloc::claim_intent(arena) else {
        return false; // no intent entry free: keep the run as a free block
    };
    // SeqCst: walkers and recovery read `top`, then the intents (see alloc::carve).
    intent.store(((size as u64) << 32) | start as u64, SeqCst);
    hdr.check.store(0, Release);
    crate::fault::at(crate::fault::RETRACTING);
    // SeqCst: orders with carvers' intent stores and CAS on `top`.
    let moved = arena
        .segment()
        .top
        .compare_exchange(start + size, start, SeqCst, Relaxed)
        .is_ok();
    if !moved {
        hdr.check.store(header_check(start), Release);
    }
    // Release: whoever sees the intent gone sees `top` moved or the header back.
    intent.store(0, Release);
    moved
}
