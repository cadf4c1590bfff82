//! [`AtomicMatrix`]: one process's attachment to a segment.

use crate::alloc;
use crate::arena::{Arena, OwnerId};
use crate::consolidate::{self, ConsolidationReport};
use crate::error::{AllocError, BlockError, SegmentError};
use crate::layout::{BlockHeader, ParticipantSlot, SegmentHeader, ARENA_START, BLOCK_HEADER_SIZE};
use crate::participant::{self, ParticipantInfo};
use crate::recover::{self, RecoveryReport, RepairError};
use crate::relative_ptr::RelativePtr;
use crate::segment::{self, CreateOptions, Mapping};
use crate::walk::{self, ArenaStats, ChainWalk};

/// One process's attachment to a segment: the mapping plus a participant slot.
///
/// All allocator operations go through it. It is `Send + Sync`: every shared
/// word is atomic, and the mapping stays put until the last reference drops.
/// Dropping it detaches the participant; blocks it still owns are reclaimed
/// by the next [`recover`](Self::recover) anywhere (give a block to the
/// segment with [`set_owner`](Self::set_owner) to keep it).
pub struct AtomicMatrix {
    mapping: Mapping,
    base: *mut u8,
    arena_end: u32,
    slot: usize,
    owner: OwnerId,
}

// SAFETY: the mapping is shared memory accessed only through atomics (or
// through unsafe payload accessors whose callers take on synchronization);
// `base` is fixed for the mapping's life and nothing here is thread-local.
unsafe impl Send for AtomicMatrix {}
// SAFETY: as for Send; no method takes `&self` and mutates non-atomic state.
unsafe impl Sync for AtomicMatrix {}

impl AtomicMatrix {
    fn attach(mapping: Mapping) -> Result<Self, SegmentError> {
        let seg = mapping.header();
        let claimed = match participant::claim(seg) {
            Ok(c) => c,
            Err(SegmentError::TooManyParticipants { .. }) => {
                // Slots of dead processes are reclaimed, then claimed again.
                let base = mapping.map.as_mut_ptr();
                let guest = Guest {
                    seg,
                    base,
                    end: seg.arena_end.load(crate::sync::Ordering::Acquire),
                    len: mapping.len(),
                };
                let _ = recover::recover(&guest, false);
                participant::claim(seg)?
            }
            Err(e) => return Err(e),
        };
        let arena_end = seg.arena_end.load(crate::sync::Ordering::Acquire);
        let base = mapping.map.as_mut_ptr();
        Ok(Self {
            mapping,
            base,
            arena_end,
            slot: claimed.0,
            owner: claimed.1,
        })
    }

    /// Creates and formats a new named segment of `size` bytes in `/dev/shm`.
    pub fn create(name: &str, size: u64) -> Result<Self, SegmentError> {
        Self::create_with(name, size, &CreateOptions::default())
    }

    /// [`create`](Self::create) with options (file mode).
    pub fn create_with(
        name: &str,
        size: u64,
        options: &CreateOptions,
    ) -> Result<Self, SegmentError> {
        let mapping = segment::create(name, size, options)?;
        Self::attach(mapping).inspect_err(|_| {
            let _ = segment::unlink(name);
        })
    }

    /// Opens and validates an existing named segment.
    pub fn open(name: &str) -> Result<Self, SegmentError> {
        Self::attach(segment::open(name)?)
    }

    /// Re-formats a segment whose creator died while formatting it.
    pub fn reformat_abandoned(name: &str) -> Result<Self, SegmentError> {
        Self::attach(segment::reformat_abandoned(name)?)
    }

    /// A process-private arena with no file, for single-process use and tests.
    pub fn anonymous(size: u64) -> Result<Self, SegmentError> {
        Self::attach(segment::anonymous(size)?)
    }

    /// The segment name (`None` for an anonymous arena).
    pub fn name(&self) -> Option<&str> {
        self.mapping.name.as_deref()
    }

    /// This process's mapping base. Offsets resolve against it.
    pub fn base_ptr(&self) -> *const u8 {
        self.base
    }

    /// Segment size in bytes.
    pub fn segment_size(&self) -> u32 {
        self.mapping.len() as u32
    }

    /// Offset of the first block.
    pub fn first_block_offset(&self) -> u32 {
        ARENA_START
    }

    /// The owner id this attachment stamps on its blocks.
    pub fn owner_id(&self) -> OwnerId {
        self.owner
    }

    /// The segment header.
    pub fn header(&self) -> &SegmentHeader {
        self.mapping.header()
    }

    /// Allocates a block with room for `payload` bytes, tagged with
    /// `type_tag` (0 = untyped); returns the payload offset.
    #[inline]
    pub fn allocate(&self, payload: u64, type_tag: u32) -> Result<RelativePtr<u8>, AllocError> {
        alloc::allocate(self, payload, type_tag).map(|h| RelativePtr::new(h + BLOCK_HEADER_SIZE))
    }

    /// Frees the block whose *header* is at `header_offset`; with
    /// `generation`, only if it is still that generation.
    #[inline]
    pub fn free(&self, header_offset: u32, generation: Option<u32>) -> Result<(), BlockError> {
        alloc::free(self, header_offset, generation)
    }

    /// The validated header at `header_offset` (genuine, in bounds, sane size).
    pub fn block_header(&self, header_offset: u32) -> Result<(&BlockHeader, u32), BlockError> {
        alloc::checked_header(self, header_offset)
    }

    /// Moves a live block to another owner; `OwnerId::SEGMENT` keeps it past
    /// this participant's life. With `from`, only if it is still `from`'s.
    pub fn set_owner(
        &self,
        header_offset: u32,
        from: Option<OwnerId>,
        to: OwnerId,
    ) -> Result<OwnerId, BlockError> {
        alloc::set_owner(self, header_offset, from, to)
    }

    /// Merges adjacent free blocks (unless a consolidation is already running).
    pub fn consolidate(&self) -> Result<ConsolidationReport, AllocError> {
        consolidate::consolidate(self)
    }

    /// Reclaims the blocks of dead or detached participants.
    pub fn recover(&self, reclaim_user_states: bool) -> Result<RecoveryReport, BlockError> {
        recover::recover(self, reclaim_user_states)
    }

    /// Rebuilds the free index from the chain; needs every other participant dead.
    pub fn repair(&self, reclaim_user_states: bool) -> Result<RecoveryReport, RepairError> {
        recover::repair(self, reclaim_user_states)
    }

    /// Walks every block of the chain.
    pub fn blocks(&self) -> ChainWalk<'_, Self> {
        walk::walk(self)
    }

    /// Used / free bytes, free blocks, largest free block, fragmentation.
    pub fn stats(&self) -> Result<ArenaStats, BlockError> {
        walk::stats(self)
    }

    /// The participant table.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        participant::list(self.header())
    }
}

impl Drop for AtomicMatrix {
    fn drop(&mut self) {
        participant::detach(self.mapping.header(), self.slot);
    }
}

impl Arena for AtomicMatrix {
    #[inline]
    fn segment(&self) -> &SegmentHeader {
        self.mapping.header()
    }
    #[inline]
    fn arena_start(&self) -> u32 {
        ARENA_START
    }
    #[inline]
    fn arena_end(&self) -> u32 {
        self.arena_end
    }
    #[inline]
    fn header(&self, offset: u32) -> Option<&BlockHeader> {
        if !self.in_bounds(offset) {
            return None;
        }
        // SAFETY: `in_bounds` keeps `offset + 32 <= arena_end <= mapping
        // length` and `offset` 16-aligned; BlockHeader holds only atomics, for
        // which any bit pattern is valid; the mapping outlives `&self`.
        Some(unsafe { &*(self.base.add(offset as usize) as *const BlockHeader) })
    }
    #[inline]
    fn owner(&self) -> OwnerId {
        self.owner
    }
    fn is_alive(&self, slot: &ParticipantSlot) -> bool {
        participant::holder_alive(slot)
    }
}

/// A participant-less view used while attaching (recovering dead slots to make room).
struct Guest<'a> {
    seg: &'a SegmentHeader,
    base: *mut u8,
    end: u32,
    len: usize,
}

impl Arena for Guest<'_> {
    fn segment(&self) -> &SegmentHeader {
        self.seg
    }
    fn arena_start(&self) -> u32 {
        ARENA_START
    }
    fn arena_end(&self) -> u32 {
        self.end.min(self.len as u32)
    }
    fn header(&self, offset: u32) -> Option<&BlockHeader> {
        if !self.in_bounds(offset) {
            return None;
        }
        // SAFETY: as in AtomicMatrix::header; `arena_end` is capped by the mapping length.
        Some(unsafe { &*(self.base.add(offset as usize) as *const BlockHeader) })
    }
    fn owner(&self) -> OwnerId {
        OwnerId::SEGMENT
    }
    fn is_alive(&self, slot: &ParticipantSlot) -> bool {
        participant::holder_alive(slot)
    }
}
