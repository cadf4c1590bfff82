//! The view the allocator engine works through.
//!
//! The engine (`free_index`, `alloc`, `consolidate`, `walk`, `recover`) is
//! generic over [`Arena`], so the very same code runs on a mapped segment
//! ([`crate::AtomicMatrix`]) and on [`ModelArena`], a small arena built from
//! ordinary atomics that loom can model-check.

use crate::layout::{
    slot_state, slot_word, BlockHeader, ParticipantSlot, SegmentHeader, SegmentHeaderOf, SlotEntry,
    BLOCK_ALIGN, BLOCK_HEADER_SIZE, DEFAULT_PARTICIPANTS, MAX_PARTICIPANTS,
};

/// Participant slots of a [`ModelArena`].
pub const MODEL_PARTICIPANTS: usize = DEFAULT_PARTICIPANTS;
use crate::participant::Liveness;
use crate::sync::{AtomicU32, Ordering, Ordering::Relaxed};

/// An owner id: the participant slot + 1; 0 means "owned by the segment".
///
/// It is the owner field of a block's state word (see [`crate::state`]), so
/// it fits in [`crate::state::OWNER_BITS`] bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub u32);

impl OwnerId {
    /// Blocks owned by the segment itself (never reclaimed by recovery).
    pub const SEGMENT: OwnerId = OwnerId(0);

    /// Blocks in user states whose participant is gone: recovery hands them
    /// to this id instead of reclaiming them (unless asked to), so that a
    /// later holder of the same slot is not mistaken for their owner. A
    /// live participant may adopt them; `recover(true)` and `repair(true)`
    /// reclaim them.
    pub const DEPARTED: OwnerId = OwnerId(crate::state::OWNER_MAX);

    /// The owner id of participant `slot`.
    pub const fn of_slot(slot: usize) -> Self {
        OwnerId(slot as u32 + 1)
    }

    /// The participant slot, or `None` for [`OwnerId::SEGMENT`],
    /// [`OwnerId::DEPARTED`] or an id beyond the largest slot table.
    /// Whether that slot exists in a given segment is for its table to say
    /// ([`SegmentHeader::participant`]).
    pub fn slot(self) -> Option<usize> {
        let s = self.0 as usize;
        (s != 0 && s <= MAX_PARTICIPANTS).then(|| s - 1)
    }
}

/// A view of one arena on behalf of one participant.
///
/// Implementations must return headers only for offsets inside their own,
/// process-local bounds: the engine trusts nothing it reads from shared
/// memory, but it does trust `arena_start`, `arena_end` and `header`.
pub trait Arena {
    /// The segment header (free index, wilderness top, participant table).
    fn segment(&self) -> &SegmentHeader;
    /// First block offset.
    fn arena_start(&self) -> u32;
    /// End of the arena (exclusive).
    fn arena_end(&self) -> u32;
    /// The header at `offset`, if `offset` is 16-aligned and a whole header
    /// fits before `arena_end`. Checks nothing about its contents.
    fn header(&self, offset: u32) -> Option<&BlockHeader>;
    /// The participant acting through this view.
    fn owner(&self) -> OwnerId;
    /// Whether the participant holding slot `index` is alive, as far as
    /// this view can tell (its own slot is always alive). Only
    /// [`Liveness::Dead`] allows reclaiming what the slot holds.
    fn liveness(&self, index: usize) -> Liveness;

    /// Gives the calling thread's cached blocks back to the free index, so a
    /// consolidation can merge them. Views without thread caches do nothing.
    fn flush_local_cache(&self) {}

    /// A generation for a block being allocated, never handed out before in
    /// this segment (modulo 2^32). A re-created header cannot continue the
    /// generation of the header that was there before (a merge absorbed it
    /// and the payload overwrote it), so the value comes from the segment.
    #[inline]
    fn next_generation(&self) -> u64 {
        // Relaxed: only the uniqueness of the RMW is needed; the block's
        // state store (Release) publishes the value.
        self.segment()
            .generations
            .fetch_add(1, Relaxed)
            .wrapping_add(1)
    }

    /// The acting participant's slot.
    fn my_slot(&self) -> Option<&ParticipantSlot> {
        self.owner()
            .slot()
            .and_then(|s| self.segment().participant(s))
    }

    /// Whether `offset` could start a block: aligned and a header fits.
    #[inline]
    fn in_bounds(&self, offset: u32) -> bool {
        offset >= self.arena_start()
            && offset % BLOCK_ALIGN == 0
            && (offset as u64 + BLOCK_HEADER_SIZE as u64) <= self.arena_end() as u64
    }
}

/// A small arena in ordinary memory: one header at every 16-byte position,
/// so splits and merges can place headers anywhere, as in a real segment.
/// Used by loom models and unit tests of the engine.
///
/// Liveness is modelled by one flag per slot standing in for the slot's
/// file lock: set by whoever claims the slot before it becomes ACTIVE,
/// cleared by [`kill`](ModelArena::kill) (the kernel dropping a dead
/// holder's lock).
pub struct ModelArena {
    segment: Box<SegmentHeader>,
    headers: Vec<BlockHeader>,
    start: u32,
    end: u32,
    locks: Vec<AtomicU32>,
}

impl ModelArena {
    /// An arena of `arena_bytes` (rounded down to 16) starting at offset 4096.
    pub fn new(arena_bytes: u32) -> Self {
        let start = 4096;
        let len = arena_bytes & !(BLOCK_ALIGN - 1);
        let segment: Box<SegmentHeader> =
            Box::<SegmentHeaderOf<[SlotEntry; MODEL_PARTICIPANTS]>>::default();
        // Relaxed: the model is built before any thread of the model starts,
        // and spawning a thread orders everything before it.
        segment.arena_start.store(start, Ordering::Relaxed);
        segment.arena_end.store(start + len, Ordering::Relaxed);
        segment.top.store(start, Ordering::Relaxed);
        Self {
            segment,
            headers: (0..len / BLOCK_ALIGN).map(|_| BlockHeader::new()).collect(),
            start,
            end: start + len,
            locks: (0..MODEL_PARTICIPANTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// A view acting as participant `slot`, which is claimed (lock, then
    /// ACTIVE) on first use if it is still unused.
    pub fn participant(&self, slot: usize) -> ModelView<'_> {
        let p = self
            .segment
            .participant(slot)
            .expect("a slot of the model's table");
        let active = slot_word::pack(slot_state::ACTIVE, None, 0, 0);
        // Relaxed: views are made before the model's threads start.
        if p.word
            .compare_exchange(0, active, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.locks[slot].store(1, Ordering::Relaxed);
            p.pid.store(slot as u32 + 1, Ordering::Relaxed);
        }
        ModelView {
            arena: self,
            owner: OwnerId::of_slot(slot),
        }
    }

    /// Claims a free slot as a new live participant, as `attach` does: takes
    /// the slot's lock first, then moves it EMPTY → ACTIVE; `None` if every
    /// slot is taken. Usable inside a model's threads.
    pub fn claim(&self) -> Option<ModelView<'_>> {
        for (index, slot) in self.segment.participants().enumerate() {
            // SeqCst: stands in for the kernel's lock, which is one total
            // order with every query of it.
            if self.locks[index]
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            match crate::participant::claim_slot(slot) {
                Some(_) => {
                    return Some(ModelView {
                        arena: self,
                        owner: OwnerId::of_slot(index),
                    })
                }
                // SeqCst: as above.
                None => self.locks[index].store(0, Ordering::SeqCst),
            }
        }
        None
    }

    /// Marks the participant in `slot` dead: its lock is dropped.
    pub fn kill(&self, slot: usize) {
        // SeqCst: as in `claim`.
        self.locks[slot].store(0, Ordering::SeqCst);
    }

    /// Detaches participant `view` as dropping its handle does: ACTIVE →
    /// DETACHED, then its lock is released.
    pub fn detach(&self, view: &ModelView<'_>) {
        let index = view.owner.slot().expect("a participant view");
        let p = self
            .segment
            .participant(index)
            .expect("a view's slot is in the table");
        crate::participant::detach_slot(p, p.generation(Ordering::Acquire));
        // SeqCst: as in `claim`.
        self.locks[index].store(0, Ordering::SeqCst);
    }
}

/// One participant's view of a [`ModelArena`].
pub struct ModelView<'a> {
    arena: &'a ModelArena,
    owner: OwnerId,
}

impl Arena for ModelView<'_> {
    fn segment(&self) -> &SegmentHeader {
        &self.arena.segment
    }
    fn arena_start(&self) -> u32 {
        self.arena.start
    }
    fn arena_end(&self) -> u32 {
        self.arena.end
    }
    fn header(&self, offset: u32) -> Option<&BlockHeader> {
        if !self.in_bounds(offset) {
            return None;
        }
        self.arena
            .headers
            .get(((offset - self.arena.start) / BLOCK_ALIGN) as usize)
    }
    fn owner(&self) -> OwnerId {
        self.owner
    }
    fn liveness(&self, index: usize) -> Liveness {
        if Some(index) == self.owner.slot() {
            return Liveness::Alive;
        }
        // SeqCst: as in `ModelArena::claim`.
        match self
            .arena
            .locks
            .get(index)
            .map(|l| l.load(Ordering::SeqCst))
        {
            Some(0) => Liveness::Dead,
            Some(_) => Liveness::Alive,
            None => Liveness::Unknown,
        }
    }
}
