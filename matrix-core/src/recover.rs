//! Recovery: reclaiming what dead participants held.
//!
//! Online, [`recover`] finds participant slots whose process is gone (or
//! whose handle was dropped), takes each one over (`RECOVERING`, so only one
//! recoverer works on it) and walks the chain for blocks carrying its owner
//! id: ALLOCATED, ACKED (killed mid-free) and COALESCING (killed
//! mid-consolidation) blocks go back to the free index; user-state blocks are
//! reported and reclaimed only on request. A carve the dead participant won
//! but never wrote a header for is rebuilt from its recorded intent.
//!
//! Each block is claimed with one CAS on its state word, which holds the
//! owner together with the state and generation: a live participant that is
//! freeing the block (`alloc::retire`) or adopting it (`alloc::set_owner`)
//! CASes the same word, so exactly one of them returns or keeps it — never
//! both.
//!
//! The one window recovery cannot close online: a participant killed between
//! a successful pop and marking the block (a few instructions) leaves that
//! one block FREE but in no bucket. Its bytes stay in the chain, and
//! [`repair`] — run when no other participant is alive — rebuilds the whole
//! free index from the chain and takes them back.

use crate::alloc::{is_carve_intent, is_hold_intent, release_block, write_header};
use crate::arena::{Arena, OwnerId};
use crate::error::{BlockError, SegmentError};
use crate::layout::{header_check, slot_state, slot_word, ParticipantSlot, MIN_BLOCK};
use crate::participant;
use crate::size_class::{class_of, FL_COUNT, SL_COUNT};
use crate::state::{self, ACKED, ALLOCATED, CACHED, COALESCING, FREE, RELEASING};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use crate::walk::walk;

/// What a recovery or repair reclaimed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Dead or detached participants whose slots were reclaimed.
    pub participants: u32,
    /// Blocks returned to the free index.
    pub blocks: u64,
    /// Bytes in those blocks.
    pub bytes: u64,
    /// Blocks in user states held by dead participants and left alone
    /// (`(header offset, state)`); pass `reclaim_user_states` to free them.
    pub user_state_blocks: Vec<(u32, u32)>,
    /// Carves rebuilt from a dead participant's intent.
    pub carves_rebuilt: u32,
    /// Blocks a dead participant was resizing, handed back to their owner:
    /// `(header offset, new generation)` — the old block, or the new one
    /// of a move that had committed (see `realloc.rs`).
    pub resized: Vec<(u32, u64)>,
}

/// Reclaims the blocks of every dead or detached participant.
///
/// Each slot is judged from one load of its slot word
/// ([`participant::is_recoverable`]: detached, or its holder or recoverer
/// definitely [`Liveness::Dead`](crate::Liveness::Dead)) and taken with one
/// CAS from exactly that word to `RECOVERING` naming this participant, so
/// a slot re-claimed, detached or taken by another recoverer since is left
/// alone. `arena` must be a participant (the recoverer must be checkable
/// by others: its own slot and lock); other views get
/// [`SegmentError::NotAParticipant`]. If reclaiming fails the slot is given
/// back, for a later recovery to try again.
pub fn recover<A: Arena>(
    arena: &A,
    reclaim_user_states: bool,
) -> Result<RecoveryReport, BlockError> {
    let seg = arena.segment();
    let Some(me) = arena.owner().slot() else {
        return Err(BlockError::Refused(SegmentError::NotAParticipant {
            operation: "recover()",
        }));
    };
    // Acquire: pairs with the Release CAS of this participant's own claim;
    // the generation cannot change while it holds the slot.
    let my_generation = match seg.participant(me) {
        Some(slot) => slot.generation(Acquire),
        None => {
            return Err(BlockError::Refused(SegmentError::NotAParticipant {
                operation: "recover()",
            }))
        }
    };
    let mut report = RecoveryReport::default();
    for (index, slot) in seg.participants().enumerate() {
        if index == me {
            continue;
        }
        // Acquire: pairs with the Release CAS that produced the word.
        let judged = slot.word.load(Acquire);
        if !participant::is_recoverable(arena, index, judged) {
            continue;
        }
        let mine = participant::recovering_word(judged, me, my_generation);
        if !participant::begin_recovery(slot, judged, mine) {
            continue;
        }
        if let Err(e) = reclaim_dead_slot(arena, index, reclaim_user_states, &mut report) {
            participant::give_back(slot, mine, judged);
            return Err(e);
        }
        participant::finish_recovery(slot, mine);
        report.participants += 1;
        // Relaxed: statistics only.
        seg.counters.recoveries.fetch_add(1, Relaxed);
    }
    if reclaim_user_states {
        // User-state blocks earlier recoveries kept for departed owners.
        reclaim_blocks_of(arena, OwnerId::DEPARTED, true, &mut report)?;
    }
    Ok(report)
}

/// Returns everything the dead holder of slot `index` left: the carves it
/// won but never wrote, every block whose state word names it, and the
/// blocks it was moving into or out of a free list. The caller has taken
/// the slot (it is `RECOVERING` in the caller's name).
pub fn reclaim_dead_slot<A: Arena>(
    arena: &A,
    index: usize,
    reclaim_user_states: bool,
    report: &mut RecoveryReport,
) -> Result<(), BlockError> {
    let Some(slot) = arena.segment().participant(index) else {
        return Err(BlockError::Corrupted {
            offset: 0,
            what: "participant slot beyond the table",
        });
    };
    // The consolidator word, if the dead claim held it (killed
    // mid-consolidation): released first, as the drain below needs it.
    clear_dead_leftovers(arena, index);
    let dead = OwnerId::of_slot(index);
    // Before anything is reclaimed by owner: a committed move hands its new
    // block to the recorded owner, which may not be the dead participant.
    // SeqCst: pairs with the resizer's intent stores.
    let intents: Vec<u64> = slot.carve_intents.iter().map(|e| e.load(SeqCst)).collect();
    report
        .resized
        .extend(crate::realloc::settle_dead_resizes(arena, dead, &intents)?);
    rebuild_dead_carves(arena, slot, report);
    let releasing = reclaim_blocks_of(arena, dead, reclaim_user_states, report)?;
    let popped: Vec<(u32, u32)> = slot
        .carve_intents
        .iter()
        // SeqCst: pairs with the popper's intent store (see free_index::pop).
        .map(|e| e.load(SeqCst))
        .filter(|&v| is_hold_intent(v))
        .map(|v| ((v as u32) & !1, (v >> 32) as u32))
        .collect();
    if releasing.is_empty() && popped.is_empty() {
        return Ok(());
    }
    place_unplaced(arena, index, &releasing, &popped, report)
}

/// Releases the consolidator word if the dead holder of slot `index` held
/// it (killed mid-consolidation). Owner ids name the slot; the caller has
/// the slot RECOVERING in its name, so the id can only be the dead claim's.
pub(crate) fn clear_dead_leftovers<A: Arena + ?Sized>(arena: &A, index: usize) {
    let dead = OwnerId::of_slot(index);
    // AcqRel: the takeover orders with the dead holder's last writes and
    // publishes the free word to the next consolidator.
    let _ = arena
        .segment()
        .consolidator
        .compare_exchange(dead.0, 0, AcqRel, Relaxed);
}

/// Reclaims every block whose state word names `dead`, and returns the
/// `(offset, word)` of those it could not place: RELEASING blocks, which
/// the dead participant may or may not have pushed.
///
/// Each block is taken with one CAS from the word judged here — owner
/// `dead`, a state recovery may take — to `(gen, me, ACKED)`. A live
/// participant freeing or adopting the same block CASes the same word, so
/// exactly one of us gets it; a lost CAS is judged again from the new word.
fn reclaim_blocks_of<A: Arena>(
    arena: &A,
    dead: OwnerId,
    reclaim_user_states: bool,
    report: &mut RecoveryReport,
) -> Result<Vec<(u32, u64)>, BlockError> {
    let me = arena.owner().0;
    let mut releasing = Vec::new();
    let blocks: Vec<_> = walk(arena).collect::<Result<_, _>>()?;
    for info in blocks {
        if info.carving || info.owner != dead {
            continue;
        }
        let Some(hdr) = arena.header(info.offset) else {
            continue;
        };
        // Acquire: pairs with the Release of the word's last change.
        let mut word = hdr.state.load(Acquire);
        let claimed = loop {
            if state::owner_of(word) != dead.0 {
                break false; // freed or adopted by a live participant meanwhile
            }
            let st = state::state_of(word);
            let take = match st {
                ALLOCATED | ACKED | COALESCING | CACHED => true,
                s if state::is_user_state(s) => reclaim_user_states,
                _ => false,
            };
            if !take {
                if st == RELEASING {
                    releasing.push((info.offset, word));
                    break false;
                }
                if !state::is_user_state(st) {
                    break false;
                }
                // Kept, but no longer under the slot's id: the next holder
                // of the slot must not inherit it. AcqRel: as below.
                match hdr.state.compare_exchange(
                    word,
                    state::with_owner(word, OwnerId::DEPARTED.0),
                    AcqRel,
                    Acquire,
                ) {
                    Ok(_) => {
                        report.user_state_blocks.push((info.offset, st));
                        break false;
                    }
                    Err(actual) => {
                        word = actual;
                        continue;
                    }
                }
            }
            // AcqRel: Acquire the holder's payload writes before the block
            // is reused; Release so a freer or adopter that Acquires the
            // word sees it taken.
            match hdr.state.compare_exchange(
                word,
                state::pack(state::generation_of(word), me, ACKED),
                AcqRel,
                Acquire,
            ) {
                Ok(_) => break true,
                Err(actual) => word = actual,
            }
        };
        if !claimed {
            continue;
        }
        // Relaxed: ordered after the claim's Acquire; the block is ours.
        let size = hdr.size.load(Relaxed);
        if size < MIN_BLOCK || info.offset as u64 + size as u64 > arena.arena_end() as u64 {
            continue; // damaged: left held under our name for `repair`
        }
        release_block(arena, hdr, info.offset, size);
        report.blocks += 1;
        report.bytes += size as u64;
    }
    Ok(releasing)
}

/// Whether a participant other than slot `dead` has recorded that it is
/// about to take the block at `offset`.
fn named_by_another_pop<A: Arena>(arena: &A, dead: usize, offset: u32) -> bool {
    arena
        .segment()
        .participants()
        .enumerate()
        .filter(|&(i, _)| i != dead)
        .any(|(_, slot)| {
            slot.carve_intents.iter().any(|e| {
                // SeqCst: pairs with the popper's intent store.
                let v = e.load(SeqCst);
                is_hold_intent(v) && (v as u32) & !1 == offset
            })
        })
}

/// Places the blocks a dead participant left between a free list and its
/// own hands: RELEASING blocks it may have pushed (`releasing`), and blocks
/// it recorded before a pop it may have completed (`popped`: offset and the
/// low 32 bits of the generation it saw).
///
/// Whether such a block is in a list cannot be read off the block. So a
/// consolidation drains every list into our hands first; afterwards a block
/// that was listed is ours (drained) or was claimed by a live popper (its
/// word changed, or that popper's intent names it), and one that is still
/// as the dead participant left it is in no list: we claim it, and the
/// consolidation merges and pushes it with the rest.
fn place_unplaced<A: Arena>(
    arena: &A,
    dead: usize,
    releasing: &[(u32, u64)],
    popped: &[(u32, u32)],
    report: &mut RecoveryReport,
) -> Result<(), BlockError> {
    let me = arena.owner().0;
    let chain: std::collections::HashSet<u32> = walk(arena)
        .map_while(Result::ok)
        .filter(|b| !b.carving)
        .map(|b| b.offset)
        .collect();
    let mut claimed_blocks = 0u64;
    let mut claimed_bytes = 0u64;
    let mut claim = |held: &mut crate::consolidate::Held, offset: u32, word: u64| {
        let Some(hdr) = arena.header(offset) else {
            return;
        };
        if named_by_another_pop(arena, dead, offset) {
            return;
        }
        // AcqRel: as every claim of a free block (see alloc::finish).
        if hdr
            .state
            .compare_exchange(
                word,
                state::pack(arena.next_generation(), me, COALESCING),
                AcqRel,
                Relaxed,
            )
            .is_ok()
        {
            // Relaxed: ordered after the claim's Acquire; the block is ours.
            let size = hdr.size.load(Relaxed);
            held.push((offset, size));
            claimed_blocks += 1;
            claimed_bytes += size as u64;
        }
    };
    let mut after_drain = |held: &mut crate::consolidate::Held| {
        let drained: std::collections::HashSet<u32> = held.iter().map(|&(o, _)| o).collect();
        for &(offset, word) in releasing {
            if !drained.contains(&offset) {
                claim(held, offset, word);
            }
        }
        for &(offset, generation) in popped {
            if drained.contains(&offset) || !chain.contains(&offset) {
                continue;
            }
            let Some(hdr) = arena.header(offset) else {
                continue;
            };
            // Acquire: pairs with the Release that published the header.
            if hdr.check.load(Acquire) != header_check(offset) {
                continue;
            }
            // Acquire: pairs with the Release of the word's last change.
            let word = hdr.state.load(Acquire);
            // Every claim of a free block takes a new generation: the one
            // recorded means nobody has claimed the block since the pop.
            if state::is_listable(state::state_of(word))
                && state::generation_of(word) as u32 == generation
            {
                claim(held, offset, word);
            }
        }
    };
    let outcome = crate::consolidate::consolidate_exclusive(arena, &mut after_drain);
    report.blocks += claimed_blocks;
    report.bytes += claimed_bytes;
    match outcome {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(BlockError::Busy {
            what: "the consolidator word stayed held",
        }),
        Err(crate::error::AllocError::Corrupted { offset, what }) => {
            Err(BlockError::Corrupted { offset, what })
        }
        Err(_) => Err(BlockError::Busy {
            what: "the free index could not be drained",
        }),
    }
}

/// Offsets where the chain walk lands on a missing header that an intent
/// explains: carves (or retracts) left unfinished. An intent whose CAS on
/// `top` never happened, or whose run was reused since, names an offset the
/// walk passes by (inside a block or beyond `top`), and must not be rebuilt:
/// that would write a header into someone else's block.
fn unfinished_intents<A: Arena>(arena: &A) -> std::collections::HashSet<u32> {
    walk(arena)
        .map_while(Result::ok)
        .filter(|b| b.carving)
        .map(|b| b.offset)
        .collect()
}

/// Rebuilds the header of a carve the dead participant won but never wrote.
fn rebuild_dead_carves<A: Arena>(arena: &A, slot: &ParticipantSlot, report: &mut RecoveryReport) {
    let seg = arena.segment();
    // SeqCst: pairs with the carver's intent store (see alloc::carve).
    if !slot
        .carve_intents
        .iter()
        .any(|e| is_carve_intent(e.load(SeqCst)))
    {
        return;
    }
    let landed = unfinished_intents(arena);
    for e in &slot.carve_intents {
        // SeqCst: intents, `top` and headers are read in the order the
        // carver wrote them (see alloc::carve).
        let v = e.load(SeqCst);
        if !is_carve_intent(v) {
            continue;
        }
        let (offset, size) = (v as u32, (v >> 32) as u32);
        // SeqCst: read `top`, then the live intents, then the header; see alloc::carve.
        let top = seg.top.load(SeqCst);
        if offset >= top || size < MIN_BLOCK || offset as u64 + size as u64 > top as u64 {
            continue;
        }
        let live_carver = seg.participants().any(|other| {
            !std::ptr::eq(other, slot)
                && other.state(Acquire) == slot_state::ACTIVE
                && other
                    .carve_intents
                    .iter()
                    .any(|x| x.load(SeqCst) as u32 == offset)
        });
        let Some(hdr) = arena.header(offset) else {
            continue;
        };
        if live_carver
            || hdr.check.load(Acquire) == header_check(offset)
            || !landed.contains(&offset)
        {
            continue;
        }
        write_header(
            hdr,
            offset,
            size,
            state::pack(arena.next_generation(), arena.owner().0, ACKED),
        );
        release_block(arena, hdr, offset, size);
        report.carves_rebuilt += 1;
        report.blocks += 1;
        report.bytes += size as u64;
    }
}

/// Rebuilds the free index from the chain. Needs the segment to itself:
/// fails with [`SegmentError::InUse`] if another participant is alive.
///
/// Every block that is FREE, ACKED, COALESCING, or ALLOCATED by a dead
/// participant (and, with `reclaim_user_states`, in a user state held by a
/// dead one) is reclaimed; adjacent ones are merged; a run ending at `top`
/// returns to the wilderness. Blocks owned by the caller or by the segment
/// are kept.
pub fn repair<A: Arena>(
    arena: &A,
    reclaim_user_states: bool,
) -> Result<RecoveryReport, RepairError> {
    // Orderings: repair runs with no other live participant and holds the
    // consolidator word, so its own stores need no ordering among
    // themselves (Relaxed); the Release stores of `top`, the slot states and
    // finally the consolidator word publish the rebuilt index to whoever
    // attaches next (they Acquire those words). Its loads are Acquire to see
    // everything dead participants published before they died.
    let seg = arena.segment();
    let me = arena.owner();
    // Only a definite *dead* lets repair rebuild under a participant: one
    // that is alive, or that cannot be told, refuses the repair.
    let (live, unknown) = participant::count_live(arena, me.slot());
    if live > 0 {
        return Err(RepairError::Segment(SegmentError::InUse {
            live_participants: live,
        }));
    }
    if unknown > 0 {
        return Err(RepairError::Segment(SegmentError::LivenessUnknown {
            participants: unknown,
        }));
    }
    let mut report = RecoveryReport::default();
    seg.consolidator.store(me.0, Release);
    for fl in 0..FL_COUNT {
        for sl in 0..SL_COUNT {
            seg.index.heads[fl][sl].store(0, Relaxed);
        }
        seg.index.sl_bitmap[fl].store(0, Relaxed);
    }
    seg.index.fl_bitmap.store(0, Relaxed);

    // Unfinished resizes first (they read the intents cleared below).
    for (index, slot) in seg.participants().enumerate() {
        if Some(index) == me.slot() {
            continue;
        }
        let intents: Vec<u64> = slot.carve_intents.iter().map(|e| e.load(Acquire)).collect();
        let settled = crate::realloc::settle_dead_resizes(arena, OwnerId::of_slot(index), &intents)
            .map_err(RepairError::Block)?;
        report.resized.extend(settled);
    }
    // Rebuild carve holes from dead intents, then walk.
    let landed = unfinished_intents(arena);
    for slot in seg.participants() {
        for e in &slot.carve_intents {
            let v = e.load(Acquire);
            let (offset, size) = (v as u32, (v >> 32) as u32);
            if is_carve_intent(v) {
                if let Some(hdr) = arena.header(offset) {
                    let top = seg.top.load(Acquire);
                    if hdr.check.load(Acquire) != header_check(offset)
                        && landed.contains(&offset)
                        && offset < top
                        && offset as u64 + size as u64 <= top as u64
                        && size >= MIN_BLOCK
                    {
                        write_header(
                            hdr,
                            offset,
                            size,
                            state::pack(arena.next_generation(), 0, FREE),
                        );
                        report.carves_rebuilt += 1;
                    }
                }
            }
            e.store(0, Relaxed);
        }
    }
    let blocks: Vec<_> = walk(arena)
        .collect::<Result<_, _>>()
        .map_err(RepairError::Block)?;
    let owner_dead = |owner: OwnerId| owner != me && owner != OwnerId::SEGMENT;
    let reclaimable = |info: &crate::walk::BlockInfo| match info.state {
        FREE | ACKED | COALESCING | RELEASING => true,
        CACHED => owner_dead(info.owner) || info.owner == OwnerId::SEGMENT,
        ALLOCATED => owner_dead(info.owner),
        s if s >= state::USER_STATE_MIN => reclaim_user_states && owner_dead(info.owner),
        _ => false,
    };
    let top = seg.top.load(Acquire);
    let mut i = 0;
    while i < blocks.len() {
        if !reclaimable(&blocks[i]) {
            if blocks[i].state >= state::USER_STATE_MIN && owner_dead(blocks[i].owner) {
                report
                    .user_state_blocks
                    .push((blocks[i].offset, blocks[i].state));
            }
            i += 1;
            continue;
        }
        let start = blocks[i].offset;
        let mut size = 0u32;
        let mut j = i;
        while j < blocks.len() && reclaimable(&blocks[j]) {
            if blocks[j].state != FREE {
                report.blocks += 1;
                report.bytes += blocks[j].size as u64;
            }
            size += blocks[j].size;
            j += 1;
        }
        let hdr = arena.header(start).expect("walked blocks are in bounds");
        hdr.size.store(size, Relaxed);
        for absorbed in &blocks[i + 1..j] {
            if let Some(h) = arena.header(absorbed.offset) {
                h.check.store(0, Relaxed);
            }
        }
        if start + size == top {
            hdr.check.store(0, Relaxed);
            seg.top.store(start, Release);
        } else {
            hdr.state.store(
                state::pack(state::generation_of(hdr.state.load(Relaxed)), 0, FREE),
                Relaxed,
            );
            crate::free_index::push(&seg.index, hdr, start, class_of(size));
        }
        i = j;
    }
    for (index, slot) in seg.participants().enumerate() {
        let word = slot.word.load(Acquire);
        if Some(index) != me.slot() && slot_word::state_of(word) != slot_state::EMPTY {
            slot.pid.store(0, Relaxed);
            let empty = slot_word::pack(slot_state::EMPTY, None, 0, slot_word::generation_of(word));
            // A CAS, not a store: a participant that attached since the
            // check keeps its claim (it holds its lock and is alive).
            if slot
                .word
                .compare_exchange(word, empty, Release, Relaxed)
                .is_ok()
            {
                report.participants += 1;
            }
        }
    }
    seg.counters.repairs.fetch_add(1, Relaxed);
    seg.consolidator.store(0, Release);
    Ok(report)
}

/// Why [`repair`] refused or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairError {
    /// Other participants are alive, or the segment itself is unusable.
    Segment(SegmentError),
    /// The chain is damaged beyond what the recorded intents explain.
    Block(BlockError),
}

impl std::fmt::Display for RepairError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairError::Segment(e) => write!(f, "repair refused: {e}"),
            RepairError::Block(e) => write!(f, "repair stopped: {e}"),
        }
    }
}

impl std::error::Error for RepairError {}
