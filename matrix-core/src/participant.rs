//! Participant slots: claiming, releasing, and telling a live process from a dead one.

use crate::arena::OwnerId;
use crate::error::SegmentError;
use crate::layout::{slot_state, ParticipantSlot, SegmentHeader};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), and whether it is a zombie; `None` if it is gone.
pub fn process_start_time(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let zombie = fields.next()? == "Z";
    // `rest` starts at field 3 (state); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, zombie))
}

/// Whether the process that claimed `slot` is still running (a zombie, or a
/// new process that reused the pid, counts as gone).
pub fn holder_alive(slot: &ParticipantSlot) -> bool {
    // Acquire: pairs with the Release store of the pid in `claim`, which
    // follows the start-time store read below.
    let pid = slot.pid.load(Acquire);
    if pid == 0 {
        return false;
    }
    match process_start_time(pid) {
        Some((start, zombie)) => !zombie && start == slot.start_time.load(Acquire),
        None => false,
    }
}

/// Claims a free slot for this process; returns its index and owner id.
pub(crate) fn claim(seg: &SegmentHeader) -> Result<(usize, OwnerId), SegmentError> {
    let pid = std::process::id();
    let start = process_start_time(pid).map(|(s, _)| s).unwrap_or(0);
    for (index, slot) in seg.participants.iter().enumerate() {
        // Acquire: a slot freed by recovery is reused only after its blocks were reclaimed.
        if slot
            .state
            .compare_exchange(slot_state::EMPTY, slot_state::CLAIMING, Acquire, Relaxed)
            .is_ok()
        {
            // Relaxed: published by the Release store of the pid just below.
            slot.start_time.store(start, Relaxed);
            // Release: a liveness check that Acquires the pid sees its start time.
            slot.pid.store(pid, Release);
            // AcqRel: the generation names this claim; recoverers Acquire it
            // with the slot state and see the claim's earlier stores.
            let generation = slot.generation.fetch_add(1, AcqRel).wrapping_add(1);
            for e in &slot.carve_intents {
                // Relaxed: published by the Release store of ACTIVE below.
                e.store(0, Relaxed);
            }
            // Release: pid, start time and generation are visible with ACTIVE.
            slot.state.store(slot_state::ACTIVE, Release);
            let _ = generation;
            return Ok((index, OwnerId::of_slot(index)));
        }
    }
    Err(SegmentError::TooManyParticipants {
        max: seg.participants.len(),
    })
}

/// Marks the slot detached: its blocks go back at the next `recover()`.
pub(crate) fn detach(seg: &SegmentHeader, index: usize) {
    // Release: everything this participant did happens before a recoverer's Acquire.
    seg.participants[index]
        .state
        .store(slot_state::DETACHED, Release);
}

/// A participant slot as tools see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    /// Slot index.
    pub slot: usize,
    /// `slot_state::*`.
    pub state: u32,
    /// Process id.
    pub pid: u32,
    /// Owner id its blocks carry.
    pub owner: OwnerId,
    /// Whether the process is alive.
    pub alive: bool,
}

/// Lists the non-empty slots.
pub fn list(seg: &SegmentHeader) -> Vec<ParticipantInfo> {
    seg.participants
        .iter()
        .enumerate()
        .filter_map(|(index, slot)| {
            // Acquire: pairs with the Release stores of the slot state, so the
            // pid and generation read next belong to that state.
            let state = slot.state.load(Acquire);
            (state != slot_state::EMPTY).then(|| ParticipantInfo {
                slot: index,
                state,
                pid: slot.pid.load(Acquire),
                owner: OwnerId::of_slot(index),
                alive: state != slot_state::DETACHED && holder_alive(slot),
            })
        })
        .collect()
}
