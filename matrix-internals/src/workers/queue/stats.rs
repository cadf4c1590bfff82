//! [`QueueStats`]: a queue's depth, capacity and sleepers, read without
//! attaching to the segment (from an `Observer`) or from a handle.

use super::{
    who_of, QueueHeader, Slot, WorkQueue, HEADER_BYTES, MAX_QUEUE_CAPACITY, QUEUE_MAGIC, SLOT_BYTES,
};
use crate::inspect::{at, region, InspectError, SegmentMemory};
use crate::sync::Ordering::{Acquire, Relaxed};
use matrix_core::OwnerId;
use matrix_handler::HandlerFunctions;

/// Whether `word` is the first word of a queue block.
pub(crate) fn is_queue_magic(word: u64) -> bool {
    word == QUEUE_MAGIC
}

/// Most distinct claimants [`QueueStats::claimants`] lists.
pub const CLAIMANTS_LISTED: usize = 16;

/// A snapshot of a queue's counters. Every word is read once, without a
/// lock, while others may push and pop: exact at quiescence, otherwise a
/// moment's picture (each number may be from a slightly different moment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Payload offset of the queue block.
    pub offset: u32,
    /// Slots.
    pub capacity: u32,
    /// Messages queued: positions claimed by producers and not yet taken
    /// (`tail - head`, clamped to `0..=capacity`; holes count until skipped).
    pub depth: u64,
    /// Positions taken by consumers so far (a hint that may lag a claim).
    pub head: u64,
    /// Positions claimed by producers so far (likewise).
    pub tail: u64,
    /// Consumers asleep in `pop_timeout`, waiting for a message. A waiter
    /// killed while asleep stays counted.
    pub consumers_waiting: u32,
    /// Producers asleep in `push_timeout`, waiting for a free slot.
    pub producers_waiting: u32,
    /// Whether the queue was closed.
    pub closed: bool,
    /// Slots claimed right now by a producer writing or a consumer taking
    /// a block (operations in flight, or left by a dead participant until
    /// `recover` runs).
    pub claimed_slots: u32,
    /// The owner ids holding those claims, distinct, at most
    /// [`CLAIMANTS_LISTED`].
    pub claimants: Vec<OwnerId>,
}

impl QueueStats {
    /// The queue whose payload starts at `offset`, validated like
    /// `WorkQueue::open_at` (a live block, the queue's magic, a possible
    /// capacity, room for every slot), for any element type.
    pub fn read<M: SegmentMemory>(mem: &M, offset: u32) -> Result<Self, InspectError> {
        region(mem, offset, HEADER_BYTES)?;
        // SAFETY: the header's bytes were checked just above at a payload
        // offset (16-aligned); QueueHeader is repr(C) atomics and integers.
        let q: &QueueHeader = unsafe { at(mem, offset as u64) };
        // Acquire: pairs with the Release store of the magic that ends the
        // ring's initialization (capacity and slots written before it).
        let magic = q.magic.load(Acquire);
        if magic != QUEUE_MAGIC {
            return Err(InspectError::WrongMagic {
                offset,
                expected: "work queue",
                found: magic,
            });
        }
        // Relaxed: ordered after the magic's Acquire; never changes after.
        let capacity = q.capacity.load(Relaxed);
        if !capacity.is_power_of_two() || capacity > MAX_QUEUE_CAPACITY {
            return Err(InspectError::Impossible {
                offset,
                what: format!(
                    "capacity {capacity} is not a power of two up to {MAX_QUEUE_CAPACITY}"
                ),
            });
        }
        region(mem, offset, HEADER_BYTES + capacity as u64 * SLOT_BYTES)?;
        // Relaxed (all counters): a snapshot for display; nothing is
        // dereferenced on their strength. Head first, as `len` does, so a
        // racing pop can only make the difference smaller.
        let head = q.head.load(Relaxed);
        let tail = q.tail.load(Relaxed);
        let mut claimants: Vec<OwnerId> = Vec::new();
        let mut claimed_slots = 0;
        for index in 0..capacity as u64 {
            // SAFETY: slot `index < capacity` lies in the region checked
            // above; 8-aligned; Slot is repr(C) atomics.
            let slot: &Slot = unsafe { at(mem, offset as u64 + HEADER_BYTES + index * SLOT_BYTES) };
            // Relaxed: display only, as above.
            let who = who_of(slot.stamp.load(Relaxed));
            if who != 0 {
                claimed_slots += 1;
                if claimants.len() < CLAIMANTS_LISTED && !claimants.contains(&OwnerId(who)) {
                    claimants.push(OwnerId(who));
                }
            }
        }
        Ok(QueueStats {
            offset,
            capacity,
            depth: tail.saturating_sub(head).min(capacity as u64),
            head,
            tail,
            consumers_waiting: q.consumers_waiting.load(Relaxed),
            producers_waiting: q.producers_waiting.load(Relaxed),
            closed: q.closed.load(Relaxed) != 0,
            claimed_slots,
            claimants,
        })
    }
}

impl<T, H: HandlerFunctions> WorkQueue<T, H> {
    /// This queue's [`QueueStats`], read the way a tool without a
    /// participant reads them. Takes nothing and wakes no one.
    pub fn stats(&self) -> Result<QueueStats, InspectError> {
        QueueStats::read(self.handler.matrix(), self.offset)
    }
}
