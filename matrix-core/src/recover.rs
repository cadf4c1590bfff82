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
//! Each block is claimed through its owner word before anything else
//! (`dead -> RECLAIMING`, a CAS): a live participant that is freeing the
//! block (`alloc::retire`) or adopting it (`alloc::set_owner`) CASes the
//! same word, so exactly one of them returns or keeps it — never both.
//!
//! The one window recovery cannot close online: a participant killed between
//! a successful pop and marking the block (a few instructions) leaves that
//! one block FREE but in no bucket. Its bytes stay in the chain, and
//! [`repair`] — run when no other participant is alive — rebuilds the whole
//! free index from the chain and takes them back.

use crate::alloc::{release_block, write_free_header};
use crate::arena::{Arena, OwnerId};
use crate::error::{BlockError, SegmentError};
use crate::layout::{header_check, slot_state, slot_word, ParticipantSlot, MIN_BLOCK};
use crate::participant;
use crate::size_class::{class_of, FL_COUNT, SL_COUNT};
use crate::state::{self, ACKED, ALLOCATED, CACHED, COALESCING, FREE};
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
    let my_generation = seg.participants[me].generation(Acquire);
    let mut report = RecoveryReport::default();
    for (index, slot) in seg.participants.iter().enumerate() {
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
        clear_dead_leftovers(arena, index, slot_word::generation_of(judged));
        participant::finish_recovery(slot, mine);
        report.participants += 1;
        // Relaxed: statistics only.
        seg.counters.recoveries.fetch_add(1, Relaxed);
    }
    Ok(report)
}

/// Reclaims everything the dead holder of slot `index` left: carves it won
/// but never wrote a header for, then its blocks. The caller has taken the
/// slot (it is `RECOVERING` in the caller's name), so the slot word's
/// generation names the dead claim.
pub fn reclaim_dead_slot<A: Arena>(
    arena: &A,
    index: usize,
    reclaim_user_states: bool,
    report: &mut RecoveryReport,
) -> Result<(), BlockError> {
    let slot = &arena.segment().participants[index];
    // Acquire: pairs with the CAS that made the slot RECOVERING.
    let dead = OwnerId::new(index, slot.generation(Acquire));
    rebuild_dead_carves(arena, slot, report);
    reclaim_blocks_of(arena, dead, reclaim_user_states, report)
}

/// Releases the consolidator word if the dead claim `generation` of slot
/// `index` held it (killed mid-consolidation).
pub(crate) fn clear_dead_leftovers<A: Arena + ?Sized>(arena: &A, index: usize, generation: u32) {
    let dead = OwnerId::new(index, generation);
    // AcqRel: the takeover orders with the dead holder's last writes and
    // publishes the free word to the next consolidator.
    let _ = arena
        .segment()
        .consolidator
        .compare_exchange(dead.0, 0, AcqRel, Relaxed);
}

fn reclaim_blocks_of<A: Arena>(
    arena: &A,
    dead: OwnerId,
    reclaim_user_states: bool,
    report: &mut RecoveryReport,
) -> Result<(), BlockError> {
    let blocks: Vec<_> = walk(arena).collect::<Result<_, _>>()?;
    for info in blocks {
        if info.carving || info.owner != dead {
            continue;
        }
        let Some(hdr) = arena.header(info.offset) else {
            continue;
        };
        // Acquire: pairs with the Release of the block's last state change.
        let word = hdr.state.load(Acquire);
        let st = state::state_of(word);
        let take = match st {
            ACKED | COALESCING | CACHED => true,
            ALLOCATED => true,
            // A FREE block carrying the dead owner: it had popped the block
            // and stored its owner but not yet its state (mark_allocated, a
            // consolidation's pop). Free blocks in the index carry owner 0.
            FREE => true,
            s if s >= state::USER_STATE_MIN => {
                if !reclaim_user_states {
                    report.user_state_blocks.push((info.offset, s));
                }
                reclaim_user_states
            }
            _ => false,
        };
        if !take {
            continue;
        }
        // Claim the owner word first. AcqRel: a live participant freeing
        // (`retire`) or adopting (`set_owner`) the block CASes the same word,
        // so exactly one of us holds the block; Acquire so its state is read
        // after the claim.
        if hdr
            .owner
            .compare_exchange(dead.0, OwnerId::RECLAIMING.0, AcqRel, Relaxed)
            .is_err()
        {
            continue;
        }
        if !to_acked(hdr, reclaim_user_states) {
            // Turned into a user state meanwhile and those are not ours:
            // give the owner word back. Release: pairs with the next reader.
            hdr.owner.store(dead.0, Release);
            continue;
        }
        let size = hdr.size.load(Acquire);
        release_block(arena, hdr, info.offset, size);
        report.blocks += 1;
        report.bytes += size as u64;
    }
    Ok(())
}

/// Moves a block whose owner word this recoverer holds to ACKED (a live
/// participant's `retire` may have moved it to ACKED or CACHED already; it
/// then lost the owner word and leaves the return to us). `false` for a
/// user state that must not be reclaimed.
fn to_acked(hdr: &crate::layout::BlockHeader, reclaim_user_states: bool) -> bool {
    // Acquire: pairs with the Release of the last state change.
    let mut word = hdr.state.load(Acquire);
    loop {
        let st = state::state_of(word);
        match st {
            ACKED | COALESCING => return true,
            s if s >= state::USER_STATE_MIN && !reclaim_user_states => return false,
            // FREE: the dead participant popped it and died before marking
            // it; it is in no list, and ours now.
            ALLOCATED | CACHED | FREE => {}
            s if s >= state::USER_STATE_MIN => {}
            _ => return false,
        }
        // AcqRel: Acquire the holder's payload writes before the block is
        // reused; Release for the next reader of the state.
        match hdr.state.compare_exchange(
            word,
            state::pack(state::generation_of(word), ACKED),
            AcqRel,
            Acquire,
        ) {
            Ok(_) => return true,
            Err(actual) => word = actual,
        }
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
    if slot.carve_intents.iter().all(|e| e.load(SeqCst) <= 1) {
        return;
    }
    let landed = unfinished_intents(arena);
    for e in &slot.carve_intents {
        // SeqCst: intents, `top` and headers are read in the order the
        // carver wrote them (see alloc::carve).
        let v = e.load(SeqCst);
        if v <= 1 {
            continue;
        }
        let (offset, size) = (v as u32, (v >> 32) as u32);
        // SeqCst: read `top`, then the live intents, then the header; see alloc::carve.
        let top = seg.top.load(SeqCst);
        if offset >= top || size < MIN_BLOCK || offset as u64 + size as u64 > top as u64 {
            continue;
        }
        let live_carver = seg.participants.iter().any(|other| {
            !std::ptr::eq(&**other, slot)
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
        write_free_header(hdr, offset, size);
        hdr.state.store(
            state::pack(state::generation_of(hdr.state.load(Relaxed)), ACKED),
            Relaxed,
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

    // Rebuild carve holes from dead intents, then walk.
    let landed = unfinished_intents(arena);
    for slot in seg.participants.iter() {
        for e in &slot.carve_intents {
            let v = e.load(Acquire);
            let (offset, size) = (v as u32, (v >> 32) as u32);
            if v > 1 {
                if let Some(hdr) = arena.header(offset) {
                    let top = seg.top.load(Acquire);
                    if hdr.check.load(Acquire) != header_check(offset)
                        && landed.contains(&offset)
                        && offset < top
                        && offset as u64 + size as u64 <= top as u64
                        && size >= MIN_BLOCK
                    {
                        write_free_header(hdr, offset, size);
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
        FREE | ACKED | COALESCING => true,
        // Owner 0: a cache flush killed between clearing the owner and
        // storing FREE; no cache holds it any more.
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
            hdr.owner.store(0, Relaxed);
            hdr.state.store(
                state::pack(state::generation_of(hdr.state.load(Relaxed)), FREE),
                Relaxed,
            );
            crate::free_index::push(&seg.index, hdr, start, class_of(size));
        }
        i = j;
    }
    for (index, slot) in seg.participants.iter().enumerate() {
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
