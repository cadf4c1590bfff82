//! [`AtomicMatrix`]: one process's attachment to a segment.

use crate::alloc;
use crate::arena::{Arena, OwnerId};
use crate::cache;
use crate::consolidate::{self, ConsolidationReport};
use crate::error::{AllocError, BlockError, SegmentError};
use crate::layout::{slot_state, slot_word, BlockHeader, SegmentHeader, BLOCK_HEADER_SIZE};
use crate::participant::{self, Liveness, ParticipantInfo};
use crate::recover::{self, RecoveryReport, RepairError};
use crate::relative_ptr::RelativePtr;
use crate::segment::{self, CreateOptions, Mapping};
use crate::state;
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed};
use crate::walk::{self, ArenaStats, ChainWalk};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// One process's attachment to a segment: the mapping plus a participant slot.
///
/// All allocator operations go through it. It is `Send + Sync`: every shared
/// word is atomic, and the mapping stays put until the attachment drops.
/// Dropping it detaches the participant; blocks it still owns are reclaimed
/// by the next [`recover`](Self::recover) anywhere (give a block to the
/// segment with [`set_owner`](Self::set_owner) to keep it), or right away
/// with [`close`](Self::close).
///
/// Handles are per process. A child made by `fork()` inherits a copy that
/// is not its own: dropping it does nothing (no detach, no cache flush, no
/// unlock: the slot stays the parent's), and `recover`, `repair`,
/// `consolidate` and `close` refuse with
/// [`SegmentError::InheritedHandle`]. Allocating or freeing through it
/// would act in the parent's name and must not be done; the child opens
/// its own handle instead.
pub struct AtomicMatrix {
    inner: Arc<Attachment>,
}

/// The state behind an [`AtomicMatrix`]; thread caches hold weak references
/// to it. Its own `Drop` detaches the slot, so a thread cache that upgraded
/// its reference to flush finishes before the slot can be recovered.
pub(crate) struct Attachment {
    mapping: Mapping,
    base: *mut u8,
    arena_end: u32,
    slot: usize,
    owner: OwnerId,
    /// Generation of this attachment's claim of `slot`.
    generation: u32,
    /// The fork epoch at attach time: another epoch means this is a forked
    /// child's inherited copy.
    fork_epoch: u64,
    /// The process that attached (for messages).
    pid: u32,
    /// The segment file through an open file description of its own that
    /// is never mapped (a mapping keeps its description, and so its locks,
    /// alive in a forked child): it holds this participant's liveness lock.
    /// `None` for an anonymous arena.
    lock_file: Option<std::fs::File>,
    /// Entry of the lock descriptor in the table a forked child closes.
    lock_entry: Option<usize>,
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

/// How long `close` waits for a thread cache that is flushing into the
/// attachment to let go of it before it falls back to a plain detach.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Attachment {
    /// The slot this attachment holds: an index its own table gave out at
    /// claim time, so it is in that table.
    fn own_slot(&self) -> &crate::layout::ParticipantSlot {
        self.mapping
            .segment_header()
            .participant(self.slot)
            .expect("an attachment's slot is in its table")
    }

    /// Whether this is a forked child's inherited copy.
    #[inline]
    pub(crate) fn inherited(&self) -> bool {
        self.fork_epoch != participant::fork_epoch()
    }

    fn lock_fd(&self) -> Option<RawFd> {
        self.lock_file.as_ref().map(|f| f.as_raw_fd())
    }

    fn refuse_if_inherited(&self) -> Result<(), SegmentError> {
        if self.inherited() {
            Err(SegmentError::InheritedHandle {
                parent_pid: self.pid,
            })
        } else {
            Ok(())
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.inherited() {
            // The fork handler already closed this process's copy of the
            // lock descriptor; its number may name another file by now.
            std::mem::forget(self.lock_file.take());
            return;
        }
        crate::fault::at(crate::fault::DETACHING);
        // DETACHED first, then the lock goes: a liveness query never sees
        // ACTIVE without the lock while this participant is still here.
        participant::detach_slot(self.own_slot(), self.generation);
        if let Some(entry) = self.lock_entry {
            participant::unregister_lock_fd(entry);
        }
        if let Some(fd) = self.lock_fd() {
            participant::unlock(fd, participant::slot_lock(self.slot));
        }
        // The descriptors and the mapping close after this.
    }
}

/// Takes the liveness lock of slot `index` through the lock descriptor
/// (anonymous arenas have none and need none). `Ok(false)`: someone holds it.
fn lock_slot(lock: Option<RawFd>, index: usize) -> Result<bool, SegmentError> {
    match lock {
        Some(fd) => participant::try_lock(fd, participant::slot_lock(index))
            .map_err(|e| SegmentError::io("lock participant slot", e)),
        None => Ok(true),
    }
}

fn unlock_slot(lock: Option<RawFd>, index: usize) {
    if let Some(fd) = lock {
        participant::unlock(fd, participant::slot_lock(index));
    }
}

/// Opens the segment file of `mapping` again, for a description of its own
/// that holds the liveness lock; checks it is the very file mapped.
fn open_lock_file(mapping: &Mapping) -> Result<Option<std::fs::File>, SegmentError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let (Some(name), Some(mapped)) = (mapping.name.as_deref(), mapping.file.as_ref()) else {
        return Ok(None);
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(segment::segment_path(name)?)
        .map_err(|e| SegmentError::io("open segment file for its liveness lock", e))?;
    let meta = |f: &std::fs::File| {
        f.metadata()
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| SegmentError::io("stat segment file", e))
    };
    if meta(&file)? != meta(mapped)? {
        return Err(SegmentError::NotFound {
            name: name.to_owned(),
        });
    }
    Ok(Some(file))
}

/// Claims an EMPTY slot: its lock first, then `EMPTY → ACTIVE`.
fn claim_free(
    mapping: &Mapping,
    lock: Option<RawFd>,
) -> Result<Option<(usize, u32)>, SegmentError> {
    for (index, slot) in mapping.segment_header().participants().enumerate() {
        // Relaxed: a pre-filter only; `claim_slot` re-reads with Acquire.
        if slot.state(Relaxed) != slot_state::EMPTY {
            continue;
        }
        if !lock_slot(lock, index)? {
            continue;
        }
        match participant::claim_slot(slot) {
            Some(generation) => return Ok(Some((index, generation))),
            None => unlock_slot(lock, index),
        }
    }
    Ok(None)
}

/// Every slot is taken: takes the slot of a dead (or detached) participant
/// for this attacher. The judged word goes to `RECOVERING` with the slot
/// itself as recoverer while this attacher holds the slot's lock (so it is
/// identifiable and alive), the old holder's blocks are reclaimed, and the
/// slot becomes ACTIVE under a new generation.
fn claim_dead_for_self(
    mapping: &Mapping,
    lock: Option<RawFd>,
    unrecoverable: &mut Vec<usize>,
) -> Result<Option<(usize, u32)>, SegmentError> {
    let seg = mapping.segment_header();
    for (index, slot) in seg.participants().enumerate() {
        // Acquire: pairs with the Release CAS that set the word.
        let judged = slot.word.load(Acquire);
        if !participant::is_recoverable(mapping, index, judged) {
            continue;
        }
        if !lock_slot(lock, index)? {
            continue;
        }
        let generation = slot_word::generation_of(judged);
        let mine = participant::recovering_word(judged, index, generation);
        if !participant::begin_recovery(slot, judged, mine) {
            unlock_slot(lock, index);
            continue;
        }
        let mut report = RecoveryReport::default();
        if recover::reclaim_dead_slot(mapping, index, false, &mut report).is_err() {
            // Another dead slot may still be recoverable; this one is
            // named in the error if none is.
            participant::give_back(slot, mine, judged);
            unlock_slot(lock, index);
            unrecoverable.push(index);
            continue;
        }
        recover::clear_dead_leftovers(mapping, index);
        for e in &slot.carve_intents {
            // Relaxed: published by the Release CAS to ACTIVE below.
            e.store(0, Relaxed);
        }
        let next = generation.wrapping_add(1);
        let active = slot_word::pack(slot_state::ACTIVE, None, 0, next);
        // AcqRel: Release publishes the reclaimed blocks and cleared
        // intents with the new claim; nobody else may change `mine` while
        // this attacher holds the lock, so the CAS only guards against a
        // broken invariant.
        if slot
            .word
            .compare_exchange(mine, active, AcqRel, Relaxed)
            .is_err()
        {
            unlock_slot(lock, index);
            continue;
        }
        // Relaxed: statistics only.
        seg.counters.recoveries.fetch_add(1, Relaxed);
        return Ok(Some((index, next)));
    }
    Ok(None)
}

impl AtomicMatrix {
    /// The attachment behind this handle.
    pub(crate) fn attachment(&self) -> &Arc<Attachment> {
        &self.inner
    }

    fn attach(mapping: Mapping) -> Result<Self, SegmentError> {
        // Installed before the first lock descriptor is registered, so no
        // fork can copy a lock without the handler closing it.
        participant::install_fork_hook();
        let fork_epoch = participant::fork_epoch();
        let lock_file = open_lock_file(&mapping)?;
        let lock = lock_file.as_ref().map(|f| f.as_raw_fd());
        let lock_entry = match lock {
            Some(fd) => Some(participant::register_lock_fd(fd).ok_or(
                SegmentError::TooManyAttachments {
                    max: participant::MAX_LOCK_FDS,
                },
            )?),
            None => None,
        };
        let claimed = match claim_free(&mapping, lock) {
            Ok(Some(c)) => Ok(c),
            Ok(None) => {
                let mut unrecoverable = Vec::new();
                claim_dead_for_self(&mapping, lock, &mut unrecoverable).and_then(|c| {
                    c.ok_or_else(|| {
                        let (alive, unknown) = participant::count_live(&mapping, None);
                        SegmentError::TooManyParticipants {
                            max: mapping.segment_header().participant_count(),
                            alive,
                            unknown,
                            unrecoverable,
                        }
                    })
                })
            }
            Err(e) => Err(e),
        };
        let (slot, generation) = match claimed {
            Ok(c) => c,
            Err(e) => {
                if let Some(entry) = lock_entry {
                    participant::unregister_lock_fd(entry);
                }
                return Err(e);
            }
        };
        crate::fault::at(crate::fault::ATTACH_CLAIMED);
        let pid = std::process::id();
        let start = participant::process_start_time(pid).map_or(0, |(s, _)| s);
        let seg_slot = mapping
            .segment_header()
            .participant(slot)
            .expect("a claimed slot is in the table");
        // Relaxed: display only.
        seg_slot.start_time.store(start, Relaxed);
        seg_slot.pid.store(pid, Relaxed);
        let arena_end = mapping.arena_end();
        let base = mapping.base();
        // Relaxed: a unique number is all that is needed.
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inner = Attachment {
            mapping,
            base,
            arena_end,
            slot,
            owner: OwnerId::of_slot(slot),
            generation,
            fork_epoch,
            pid,
            lock_file,
            lock_entry,
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

    /// [`create`](Self::create) with options (file mode, participant slots).
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
    #[inline]
    pub fn base_ptr(&self) -> *const u8 {
        self.inner.base
    }

    /// Segment size in bytes.
    #[inline]
    pub fn segment_size(&self) -> u32 {
        self.inner.mapping.len() as u32
    }

    /// Offset of the first block.
    #[inline]
    pub fn first_block_offset(&self) -> u32 {
        self.inner.mapping.arena_start()
    }

    /// The participant slot this attachment holds.
    pub fn slot_index(&self) -> usize {
        self.inner.slot
    }

    /// The owner id this attachment stamps on its blocks.
    #[inline]
    pub fn owner_id(&self) -> OwnerId {
        self.inner.owner
    }

    /// The segment header.
    #[inline]
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

    /// Resizes the live block at `header_offset` (of `generation`) to hold
    /// `payload` bytes: in place when it can, else by moving it (see
    /// [`crate::realloc`]). Always gives the block a new generation.
    pub fn reallocate(
        &self,
        header_offset: u32,
        generation: u64,
        payload: u64,
    ) -> Result<crate::Resized, crate::ReallocError> {
        self.inner
            .refuse_if_inherited()
            .map_err(|e| crate::ReallocError::Block(BlockError::Refused(e)))?;
        let base = self.base_ptr();
        crate::realloc::reallocate(
            &*self.inner,
            header_offset,
            generation,
            payload,
            |from, to, len| {
                // SAFETY: `from` and `to` are payload offsets of two distinct
                // blocks of this mapping held by the resizer (the old one
                // RESIZING, the new one just allocated), each with at least
                // `len` payload bytes, so the ranges are in bounds and
                // disjoint.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        base.add(from as usize),
                        base.add(to as usize) as *mut u8,
                        len as usize,
                    )
                }
            },
        )
    }

    /// The validated header at `header_offset` (genuine, in bounds, sane size).
    #[inline]
    pub fn block_header(&self, header_offset: u32) -> Result<(&BlockHeader, u32), BlockError> {
        alloc::checked_header(self, header_offset)
    }

    /// The header at `header_offset` if it is aligned, below `top` and
    /// genuine (its check word), with its size neither read nor judged:
    /// for a caller that reads the size itself under a consistency check
    /// of its own (see [`alloc::genuine_header`]). Otherwise use
    /// [`block_header`](Self::block_header).
    #[inline]
    pub fn genuine_header(&self, header_offset: u32) -> Result<&BlockHeader, BlockError> {
        alloc::genuine_header(self, header_offset)
    }

    /// Moves a live block to another owner; `OwnerId::SEGMENT` keeps it past
    /// this participant's life. With `from`, only if it is still `from`'s.
    #[inline]
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
    #[inline]
    pub fn set_owner_of(
        &self,
        header_offset: u32,
        generation: u64,
        from: Option<OwnerId>,
        to: OwnerId,
    ) -> Result<OwnerId, BlockError> {
        alloc::set_owner_of(self, header_offset, Some(generation), from, to)
    }

    /// [`set_owner_of`](Self::set_owner_of) for a caller that validated the
    /// header at `header_offset` (`hdr`, from
    /// [`genuine_header`](Self::genuine_header)) and read its state word
    /// `seen`: one CAS from `seen`, else judged afresh at its generation
    /// (see [`alloc::set_owner_from`]).
    #[inline]
    pub fn set_owner_from(
        &self,
        hdr: &BlockHeader,
        header_offset: u32,
        seen: u64,
        from: Option<OwnerId>,
        to: OwnerId,
    ) -> Result<OwnerId, BlockError> {
        alloc::set_owner_from(self, hdr, header_offset, seen, from, to)
    }

    /// Merges adjacent free blocks (unless a consolidation is already running).
    pub fn consolidate(&self) -> Result<ConsolidationReport, AllocError> {
        self.inner
            .refuse_if_inherited()
            .map_err(AllocError::Refused)?;
        cache::flush_current(&self.inner);
        consolidate::consolidate(&*self.inner)
    }

    /// Returns the calling thread's cached blocks to the free index.
    pub fn flush_thread_cache(&self) {
        cache::flush_current(&self.inner);
    }

    /// Reclaims the blocks of participants that are definitely dead (their
    /// liveness lock is free) or detached; a participant whose liveness is
    /// unknown is left alone.
    pub fn recover(&self, reclaim_user_states: bool) -> Result<RecoveryReport, BlockError> {
        self.inner
            .refuse_if_inherited()
            .map_err(BlockError::Refused)?;
        recover::recover(self, reclaim_user_states)
    }

    /// Rebuilds the free index from the chain; needs every other participant
    /// definitely dead (refuses if any is alive or of unknown liveness), and
    /// no other thread of this process using the segment meanwhile: it
    /// clears the free index and every intent entry, this participant's
    /// too, which a sibling thread's allocation may be holding (that cannot
    /// be checked from here).
    pub fn repair(&self, reclaim_user_states: bool) -> Result<RecoveryReport, RepairError> {
        self.inner
            .refuse_if_inherited()
            .map_err(RepairError::Segment)?;
        cache::flush_current(&self.inner);
        recover::repair(&*self.inner, reclaim_user_states)
    }

    /// Detaches and reclaims at once what this participant still owns
    /// (blocks, cached blocks, carves), leaving its slot EMPTY: for tools
    /// and short-lived participants that must leave no trace. Blocks that
    /// should outlive it must be given to the segment first
    /// ([`set_owner`](Self::set_owner)).
    ///
    /// Other threads' caches still holding its blocks are flushed by those
    /// threads only while the attachment exists; `close` waits (bounded) to
    /// hold the attachment alone, so none can flush once it reclaims. If it
    /// cannot, it detaches as a drop does and the next `recover()` reclaims.
    pub fn close(self) -> Result<RecoveryReport, BlockError> {
        self.inner
            .refuse_if_inherited()
            .map_err(BlockError::Refused)?;
        let mut inner = self.inner.clone();
        drop(self); // flushes this thread's cache
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        let attachment = loop {
            match Arc::try_unwrap(inner) {
                Ok(a) => break a,
                Err(again) if std::time::Instant::now() < deadline => {
                    inner = again;
                    std::thread::yield_now();
                }
                Err(_) => return Ok(RecoveryReport::default()),
            }
        };
        // No thread can upgrade a weak reference any more: its blocks are
        // reclaimed by this thread alone. The slot goes ACTIVE(me) →
        // RECOVERING(by me) while the lock is held, so no other recoverer
        // takes it; then EMPTY; then the drop unlocks (its detach CAS finds
        // the slot EMPTY and does nothing).
        let slot = attachment.own_slot();
        let active = slot_word::pack(slot_state::ACTIVE, None, 0, attachment.generation);
        let mine = participant::recovering_word(active, attachment.slot, attachment.generation);
        let mut report = RecoveryReport::default();
        if participant::begin_recovery(slot, active, mine) {
            if let Err(e) =
                recover::reclaim_dead_slot(&attachment, attachment.slot, false, &mut report)
            {
                participant::give_back(slot, mine, active);
                return Err(e);
            }
            recover::clear_dead_leftovers(&attachment, attachment.slot);
            participant::finish_recovery(slot, mine);
        }
        Ok(report)
    }

    /// Walks every block of the chain.
    pub fn blocks(&self) -> ChainWalk<'_, Self> {
        walk::walk(self)
    }

    /// Used / free bytes, free blocks, largest free block, fragmentation.
    pub fn stats(&self) -> Result<ArenaStats, BlockError> {
        walk::stats(self)
    }

    /// The participant table, with liveness as this attachment sees it.
    pub fn participants(&self) -> Vec<ParticipantInfo> {
        participant::list(&*self.inner)
    }
}

impl Drop for AtomicMatrix {
    fn drop(&mut self) {
        if self.inner.inherited() {
            return; // a forked child's copy: the slot and its blocks are the parent's
        }
        cache::flush_current(&self.inner);
        // The slot is detached by the attachment's own drop, once no thread
        // cache is flushing into it any more.
    }
}

impl Arena for AtomicMatrix {
    #[inline]
    fn segment(&self) -> &SegmentHeader {
        self.inner.segment()
    }
    #[inline]
    fn arena_start(&self) -> u32 {
        self.inner.mapping.arena_start()
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
    fn liveness(&self, index: usize) -> Liveness {
        self.inner.liveness(index)
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
        self.mapping.arena_start()
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
    fn liveness(&self, index: usize) -> Liveness {
        if self.inherited() {
            // The parent's descriptor is closed in this process: nothing
            // can be told, so nothing is reclaimed through this copy.
            return Liveness::Unknown;
        }
        if index == self.slot {
            return Liveness::Alive;
        }
        self.mapping.slot_liveness(index)
    }
    fn flush_local_cache(&self) {
        cache::flush_current(self);
    }
    #[inline]
    fn next_generation(&self) -> u64 {
        cache::next_generation(self)
    }
}
