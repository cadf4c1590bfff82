//! [`LocalMatrix`]: a process-local handle that owns its block cache.
//!
//! The thread caches behind [`AtomicMatrix::allocate`] / `free` are found
//! through a thread-local lookup on every call (a `RefCell` borrow, the
//! attachment's id, the fork epoch). A `LocalMatrix` holds its cache
//! itself, so a cache hit is the bin pop or push and the header stores or
//! the one CAS, nothing else: the model is mimalloc's `mi_heap_*` API, a
//! heap that one thread owns and passes explicitly.
//!
//! It is `!Send` and `!Sync` (its cache is used without any
//! synchronization), and it keeps the attachment alive (a strong
//! reference), so the participant cannot be detached, and so its blocks
//! cannot be recovered, while a local handle still holds cached blocks:
//! its drop returns them to the free index first. Blocks it caches are
//! CACHED under this participant's name, exactly as in a thread cache: a
//! recovery after this process dies reclaims them, and double free, stale
//! and foreign handles meet the same one CAS on the state word.

use crate::alloc;
use crate::cache::{BlockCache, GenerationRange};
use crate::error::{AllocError, BlockError};
use crate::matrix::Attachment;
use crate::participant;
use crate::state;
use crate::sync::Ordering::Relaxed;
use crate::{Arena, AtomicMatrix, BLOCK_HEADER_SIZE};
use std::marker::PhantomData;
use std::sync::Arc;

/// A handle on an attachment for one thread, owning its block cache.
///
/// Made by [`AtomicMatrix::local`]. Allocation and free through it do the
/// same checks as through the [`AtomicMatrix`] (bounds, alignment, the
/// header's check word, one CAS on the state word that refuses a double
/// free or a stale generation, the size validated after that CAS), without
/// the thread-local lookup. Blocks freed through it are kept for its own
/// next allocations (32 per size class below 32 KiB, the same bounds as a
/// thread cache); [`flush`](Self::flush) and its drop return them to the
/// segment.
///
/// Blocks allocated through it are ordinary blocks: any handle of this or
/// another process may free them, and it may free any block of the
/// segment.
pub struct LocalMatrix {
    inner: Arc<Attachment>,
    cache: BlockCache,
    /// Bytes of the arena: the largest block (header included).
    arena_len: u64,
    /// The fork epoch at creation: another one means a forked child's copy,
    /// whose cache names blocks of the parent.
    fork_epoch: u64,
    /// `!Send + !Sync`: the cache is used without synchronization.
    _local: PhantomData<*const ()>,
}

impl AtomicMatrix {
    /// A handle for the calling thread that owns its block cache (see
    /// [`LocalMatrix`]).
    pub fn local(&self) -> LocalMatrix {
        let inner = Arc::clone(self.attachment());
        LocalMatrix {
            arena_len: (inner.arena_end() - inner.arena_start()) as u64,
            cache: BlockCache::new(&inner),
            inner,
            fork_epoch: participant::fork_epoch(),
            _local: PhantomData,
        }
    }
}

impl LocalMatrix {
    /// Whether this is a forked child's copy (its cache is the parent's).
    #[inline(always)]
    fn inherited(&self) -> bool {
        self.fork_epoch != participant::fork_epoch()
    }

    /// Allocates a block with room for `payload` bytes, tagged `type_tag`;
    /// returns its *header* offset and the generation it was given.
    #[inline(always)]
    pub fn allocate_block(
        &mut self,
        payload: u64,
        type_tag: u32,
    ) -> Result<(u32, u64), AllocError> {
        // As `alloc::block_size_for`, against the length kept here. Checked:
        // a payload near u64::MAX must not wrap to a tiny block.
        let size = match payload
            .max(crate::MIN_PAYLOAD as u64)
            .checked_add(BLOCK_HEADER_SIZE as u64 + 15)
            .map(|s| s & !15)
        {
            Some(size) if size <= self.arena_len => size as u32,
            _ => return Err(self.too_large(payload)),
        };
        if !self.inherited() {
            if let Some(offset) = self.cache.take(size) {
                let arena = &*self.inner;
                let generation = self.cache.generation(arena);
                let hdr = arena.header(offset).expect("cached offsets are in bounds");
                crate::fault::at(crate::fault::CACHE_TAKEN);
                alloc::mark_allocated_as(arena, hdr, payload, type_tag, generation);
                return Ok((offset, generation));
            }
        }
        self.allocate_shared(size, payload, type_tag)
    }

    #[cold]
    fn too_large(&self, payload: u64) -> AllocError {
        AllocError::TooLarge {
            requested: payload,
            max_payload: self.arena_len.saturating_sub(BLOCK_HEADER_SIZE as u64),
        }
    }

    /// A miss: the shared path, and once more after returning this
    /// handle's own cached blocks if the segment is out of memory.
    ///
    /// The generations come from this handle's own reserved range (the
    /// [`LocalArena`] view), not through the thread-local cache lookup of
    /// the attachment's `next_generation`; a forked child's copy takes
    /// them from the segment counter instead (its range may be the
    /// parent's, still in use there).
    #[cold]
    #[inline(never)]
    fn allocate_shared(
        &mut self,
        size: u32,
        payload: u64,
        type_tag: u32,
    ) -> Result<(u32, u64), AllocError> {
        let arena = &*self.inner;
        let inherited = self.inherited();
        let shared = |cache: &BlockCache| {
            if inherited {
                alloc::allocate_sized(arena, size, payload, type_tag)
            } else {
                let view = LocalArena {
                    inner: arena,
                    generations: &cache.generations,
                };
                alloc::allocate_sized(&view, size, payload, type_tag)
            }
        };
        let offset = match shared(&self.cache) {
            Err(AllocError::OutOfMemory { .. }) if !inherited => {
                self.cache.flush_all(arena);
                shared(&self.cache)?
            }
            other => other?,
        };
        let hdr = arena
            .header(offset)
            .expect("allocated offsets are in bounds");
        // Relaxed: this thread stored the word when it marked the block.
        let generation = state::generation_of(hdr.state.load(Relaxed));
        Ok((offset, generation))
    }

    /// Allocates as [`allocate_block`](Self::allocate_block); returns the
    /// payload offset, as [`AtomicMatrix::allocate`] does.
    #[inline(always)]
    pub fn allocate(
        &mut self,
        payload: u64,
        type_tag: u32,
    ) -> Result<crate::RelativePtr<u8>, AllocError> {
        let (offset, _) = self.allocate_block(payload, type_tag)?;
        Ok(crate::RelativePtr::new(offset + BLOCK_HEADER_SIZE))
    }

    /// Frees the block whose *header* is at `header_offset`; with
    /// `generation`, only if it is still that generation. The checks and
    /// the CAS are [`AtomicMatrix::free`]'s; the block is then kept in this
    /// handle's cache.
    #[inline(always)]
    pub fn free(&mut self, header_offset: u32, generation: Option<u64>) -> Result<(), BlockError> {
        let arena = &*self.inner;
        let (hdr, size) = alloc::retire(arena, header_offset, generation, state::CACHED)?;
        if self.inherited() || !self.cache.park(arena, header_offset, size) {
            alloc::release_block(arena, hdr, header_offset, size);
        }
        Ok(())
    }

    /// Returns this handle's cached blocks to the free index.
    pub fn flush(&mut self) {
        if !self.inherited() {
            self.cache.flush_all(&self.inner);
        }
    }
}

/// The attachment as seen by a [`LocalMatrix`]'s shared path: everything
/// is the attachment's, except that generations come from the handle's
/// reserved range (the same segment-unique ranges a thread cache reserves).
struct LocalArena<'a> {
    inner: &'a Attachment,
    generations: &'a GenerationRange,
}

impl Arena for LocalArena<'_> {
    #[inline]
    fn segment(&self) -> &crate::layout::SegmentHeader {
        self.inner.segment()
    }
    #[inline]
    fn arena_start(&self) -> u32 {
        self.inner.arena_start()
    }
    #[inline]
    fn arena_end(&self) -> u32 {
        self.inner.arena_end()
    }
    #[inline]
    fn header(&self, offset: u32) -> Option<&crate::layout::BlockHeader> {
        self.inner.header(offset)
    }
    #[inline]
    fn owner(&self) -> crate::OwnerId {
        self.inner.owner()
    }
    fn liveness(&self, index: usize) -> crate::participant::Liveness {
        self.inner.liveness(index)
    }
    fn flush_local_cache(&self) {
        self.inner.flush_local_cache();
    }
    #[inline]
    fn next_generation(&self) -> u64 {
        self.generations.take(self.inner)
    }
    #[inline]
    fn my_slot(&self) -> Option<&crate::layout::ParticipantSlot> {
        self.inner.my_slot()
    }
}

impl Drop for LocalMatrix {
    fn drop(&mut self) {
        // A forked child's copy drops its cache unflushed: the blocks are
        // the parent's, still cached in the parent's copy.
        self.flush();
    }
}

impl std::fmt::Debug for LocalMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMatrix")
            .field("owner", &self.inner.owner())
            .finish_non_exhaustive()
    }
}
