//! [`AtomicMatrix`]: one process's attachment to a segment.

use crate::alloc;
use crate::arena::{Arena, OwnerId};
use crate::cache;
use crate::consolidate::{self, ConsolidationReport};
use crate::error::{AllocError, BlockError, SegmentError};
use crate::layout::{BlockHeader, ParticipantSlot, SegmentHeader, ARENA_START, BLOCK_HEADER_SIZE};
use crate::participant::{self, ParticipantInfo};
use crate::recover::{self, RecoveryReport, RepairError};
use crate::relative_ptr::RelativePtr;
use crate::segment::{self, CreateOptions, Mapping};
use crate::state;
use crate::walk::{self, ArenaStats, ChainWalk};
use std::sync::Arc;

/// One process's attachment to a segment: the mapping plus a participant slot.
///
/// All allocator operations go through it. It is `Send + Sync`: every shared
/// word is atomic, and the mapping stays put until the attachment drops.
/// Dropping it detaches the participant; blocks it still owns are reclaimed
/// by the next [`recover`](Self::recover) anywhere (give a block to the
/// segment with [`set_owner`](Self::set_owner) to keep it).
///
/// Handles are per process: a child made by `fork()` must open its own.
pub struct AtomicMatrix {
    inner: Arc<Attachment>,
}

/// The state behind an [`AtomicMatrix`]; thread caches hold weak references to it.
pub(crate) struct Attachment {
    mapping: Mapping,
    base: *mut u8,
    arena_end: u32,
    slot: usize,
    owner: OwnerId,
    /// Process-unique id, the key of thread caches.
    pub(crate) id: u64,
}

// SAFETY: the mapping is shared memory accessed only through atomics (or
// through unsafe payload accessors whose callers take on synchronization);
// `base` is fixed for the mapping's life and nothing here is thread-local.
unsafe impl Send for Attachment {}
// SAFETY: as for Send; no method takes `&self` and mutates non-atomic state.
unsafe impl Sync for Attachment {}

// Process-local id source, not shared memory.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl AtomicMatrix {
    fn attach(mapping: Mapping) -> Result<Self, SegmentError> {
        let seg = mapping.segment_header();
        let claimed = match participant::claim(seg) {
            Ok(c) => c,
            Err(SegmentError::TooManyParticipants { .. }) => {
                // Slots of dead processes are reclaimed, then claimed again.
                let _ = recover::recover(&mapping, false);
                participant::claim(seg)?
            }
            Err(e) => return Err(e),
        };
        cache::install_fork_hook();
        let arena_end = mapping.arena_end();
        let base = mapping.base();
        // Relaxed: a unique number is all that is needed.
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inner = Attachment {
            mapping,
            base,
            arena_end,
            slot: claimed.0,
            owner: claimed.1,
            id,
        };
        Ok(Self {
            inner: Arc::new(inner),
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
        self.inner.mapping.name.as_deref()
    }

    /// This process's mapping base. Offsets resolve against it.
    pub fn base_ptr(&self) -> *const u8 {
        self.inner.base
    }

    /// Segment size in bytes.
    pub fn segment_size(&self) -> u32 {
        self.inner.mapping.len() as u32
    }

    /// Offset of the first block.
    pub fn first_block_offset(&self) -> u32 {
        ARENA_START
    }

    /// The owner id this attachment stamps on its blocks.
    pub fn owner_id(&self) -> OwnerId {
        self.inner.owner
    }

    /// The segment header.
    pub fn header(&self) -> &SegmentHeader {
        self.inner.mapping.segment_header()
    }

    /// Allocates a block with room for `payload` bytes, tagged with
    /// `type_tag` (0 = untyped); returns the payload offset.
    #[inline]
    pub fn allocate(&self, payload: u64, type_tag: u32) -> Result<RelativePtr<u8>, AllocError> {
        let arena = &*self.inner;
        let size = alloc::block_size_for(arena, payload)?;
        let offset = match cache::take(&self.inner, size) {
            Some((offset, generation)) => {
                let hdr = arena.header(offset).expect("cached offsets are in bounds");
                crate::fault::at(crate::fault::CACHE_TAKEN);
                alloc::mark_allocated_as(arena, hdr, payload, type_tag, generation);
                offset
            }
            None => alloc::allocate_sized(arena, size, payload, type_tag)?,
        };
        Ok(RelativePtr::new(offset + BLOCK_HEADER_SIZE))
    }

    /// Frees the block whose *header* is at `header_offset`; with
    /// `generation`, only if it is still that generation.
    #[inline]
    pub fn free(&self, header_offset: u32, generation: Option<u64>) -> Result<(), BlockError> {
        let arena = &*self.inner;
        // `retire` also makes this participant the owner: a cached block is
        // this participant's, so recovery reclaims it if this process dies.
        let (hdr, size) = alloc::retire(arena, header_offset, generation, state::CACHED)?;
        if !cache::put(&self.inner, header_offset, size) {
            alloc::release_block(arena, hdr, header_offset, size);
        }
        Ok(())
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

    /// [`set_owner`](Self::set_owner), only while the block is still
    /// `generation` (refuses a handle to a block re-allocated since).
    pub fn set_owner_of(
        &self,
        header_offset: u32,
        generation: u64,
        from: Option<OwnerId>,
        to: OwnerId,
    ) -> Result<OwnerId, BlockError> {
        alloc::set_owner_of(self, header_offset, Some(generation), from, to)
    }

    /// Merges adjacent free blocks (unless a consolidation is already running).
    pub fn consolidate(&self) -> Result<ConsolidationReport, AllocError> {
        cache::flush_current(&self.inner);
        consolidate::consolidate(&*self.inner)
    }

    /// Returns the calling thread's cached blocks to the free index.
    pub fn flush_thread_cache(&self) {
        cache::flush_current(&self.inner);
    }

    /// Reclaims the blocks of dead or detached participants.
    pub fn recover(&self, reclaim_user_states: bool) -> Result<RecoveryReport, BlockError> {
        recover::recover(self, reclaim_user_states)
    }

    /// Rebuilds the free index from the chain; needs every other participant dead.
    pub fn repair(&self, reclaim_user_states: bool) -> Result<RecoveryReport, RepairError> {
        cache::flush_current(&self.inner);
        recover::repair(&*self.inner, reclaim_user_states)
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
        cache::flush_current(&self.inner);
        participant::detach(self.inner.mapping.segment_header(), self.inner.slot);
    }
}

impl Arena for AtomicMatrix {
    #[inline]
    fn segment(&self) -> &SegmentHeader {
        self.inner.segment()
    }
    #[inline]
    fn arena_start(&self) -> u32 {
        ARENA_START
    }
    #[inline]
    fn arena_end(&self) -> u32 {
        self.inner.arena_end
    }
    #[inline]
    fn header(&self, offset: u32) -> Option<&BlockHeader> {
        self.inner.header(offset)
    }
    #[inline]
    fn owner(&self) -> OwnerId {
        self.inner.owner
    }
    fn is_alive(&self, slot: &ParticipantSlot) -> bool {
        participant::holder_alive(slot)
    }
    fn flush_local_cache(&self) {
        cache::flush_current(&self.inner);
    }
    #[inline]
    fn next_generation(&self) -> u64 {
        cache::next_generation(&self.inner)
    }
}

impl Arena for Attachment {
    #[inline]
    fn segment(&self) -> &SegmentHeader {
        self.mapping.segment_header()
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
        self.mapping.header(offset)
    }
    #[inline]
    fn owner(&self) -> OwnerId {
        self.owner
    }
    fn is_alive(&self, slot: &ParticipantSlot) -> bool {
        participant::holder_alive(slot)
    }
    fn flush_local_cache(&self) {
        cache::flush_current(self);
    }
    #[inline]
    fn next_generation(&self) -> u64 {
        cache::next_generation(self)
    }
}
