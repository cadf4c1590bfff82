//! Per-thread block caches.
//!
//! `free` moves a block ALLOCATED → CACHED with the same one CAS that detects
//! double frees, and parks its offset in the freeing thread's cache instead
//! of pushing it onto a shared stack. The next allocation of that class on
//! that thread takes it back with plain stores: an alloc + free pair then
//! costs one atomic read-modify-write instead of three, and touches no
//! cache line another thread writes.
//!
//! Cached blocks stay owned by their participant (the header says CACHED and
//! names the owner), so `recover()` reclaims them if the process dies, and
//! `stats()` counts them as free. A cache is bounded (32 blocks per class
//! below 32 KiB; four larger blocks, each at most 1/32 of the arena; at
//! most 1/16 of the arena or 8 MiB in all), and is
//! flushed back to
//! the free index when it overflows, when its thread consolidates or misses,
//! and when the thread exits. Blocks cached by *other* threads cannot be
//! merged until those threads flush: that bound is the memory a consolidation
//! may not see.
//!
//! After `fork()` a child inherits copies of the parent's caches; they name
//! blocks the parent still holds, so the child discards them unflushed.

use crate::alloc::release_block;
use crate::arena::Arena;
use crate::matrix::Attachment;
use crate::size_class::{class_of, SL_COUNT};
use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

/// Blocks kept per small size class before half of them are flushed.
const BIN_CAPACITY: usize = 32;
/// Small classes (first levels below this) get a bin each: blocks < 32 KiB.
const SMALL_LEVELS: usize = 8;
/// Larger blocks share one short list, searched for a fit.
const LARGE_CAPACITY: usize = 4;
/// Largest per-thread cache, in bytes.
const MAX_CACHE_BYTES: u64 = 8 << 20;

/// The process's fork epoch (kept in `participant.rs`, whose atfork child
/// handler bumps it); caches made under an older epoch are discarded.
#[inline]
fn fork_epoch() -> u64 {
    crate::participant::fork_epoch()
}

#[derive(Clone, Copy)]
struct Bin {
    len: u32,
    /// `(header offset, block size)`: the size is kept here so a hit needs
    /// no header read before the block is handed out.
    blocks: [(u32, u32); BIN_CAPACITY],
}

/// The few cached blocks of 32 KiB and more, oldest first.
#[derive(Clone, Copy)]
struct LargeList {
    len: u32,
    blocks: [(u32, u32); LARGE_CAPACITY],
}

impl LargeList {
    /// The newest block of at least `size` bytes (a free and the next
    /// allocation of one size meet at the top).
    #[inline(always)]
    fn take(&mut self, size: u32) -> Option<(u32, u32)> {
        let len = self.len as usize;
        let i = (0..len).rev().find(|&i| self.blocks[i].1 >= size)?;
        let found = self.blocks[i];
        self.blocks.copy_within(i + 1..len, i);
        self.len -= 1;
        Some(found)
    }

    fn take_oldest(&mut self) -> Option<(u32, u32)> {
        let len = self.len.checked_sub(1)?;
        let oldest = self.blocks[0];
        self.blocks.copy_within(1..=len as usize, 0);
        self.len = len;
        Some(oldest)
    }
}

/// Generations a thread reserves from the segment counter at a time.
const GENERATION_BATCH: u32 = 1024;

/// A range of generations reserved from the segment counter by one owner
/// (a thread cache, or one [`LocalMatrix`](crate::LocalMatrix)): the next
/// one to hand out, and the end. `Cell`s, so that an [`Arena`] view of the
/// owner (which hands generations out through `&self`) can take from it;
/// it is never shared between threads (`Cell` is not `Sync`).
#[derive(Default)]
pub(crate) struct GenerationRange {
    next: Cell<u64>,
    end: Cell<u64>,
}

impl GenerationRange {
    /// A segment-unique generation: from this reserved range, which is
    /// refilled with one RMW on the shared counter per 1,024 allocations.
    #[inline(always)]
    pub(crate) fn take(&self, arena: &Attachment) -> u64 {
        if self.next.get() == self.end.get() {
            self.reserve(arena);
        }
        let g = self.next.get();
        self.next.set(g.wrapping_add(1));
        g
    }

    #[cold]
    fn reserve(&self, arena: &Attachment) {
        // Relaxed: only the uniqueness of the RMW matters; each block's
        // state store (Release) publishes the value it is given.
        let next = arena
            .segment()
            .generations
            .fetch_add(GENERATION_BATCH as u64, Relaxed)
            .wrapping_add(1);
        self.next.set(next);
        self.end.set(next.wrapping_add(GENERATION_BATCH as u64));
    }
}

/// The blocks one owner keeps back (a thread, or one [`LocalMatrix`]), and
/// its reserved range of generations. Every block in it is CACHED under this
/// participant's name and known to nobody else.
///
/// [`LocalMatrix`]: crate::LocalMatrix
pub(crate) struct BlockCache {
    /// This cache's reserved range of generations.
    pub(crate) generations: GenerationRange,
    bins: Box<[Bin; SMALL_LEVELS * SL_COUNT]>,
    large: LargeList,
    /// Bytes that may still be parked before the whole cache is flushed
    /// (`byte_cap` minus the bytes cached; below zero means over the cap).
    room: i64,
    byte_cap: u64,
}

struct ThreadCache {
    id: u64,
    fork_epoch: u64,
    attachment: Weak<Attachment>,
    blocks: BlockCache,
}

thread_local! {
    static CACHES: RefCell<Vec<ThreadCache>> = const { RefCell::new(Vec::new()) };
}

/// The bin of every 16-byte size step below 32 KiB: a table, because the
/// class arithmetic (leading zeros, shifts, a clamp) sits on both the take
/// and the park of every block of 256 B and more.
const BIN_OF: [u8; SMALL_LIMIT as usize >> 4] = {
    let mut table = [0u8; SMALL_LIMIT as usize >> 4];
    let mut step = 0;
    while step < table.len() {
        let class = class_of((step as u32) << 4);
        table[step] = (class.fl * SL_COUNT + class.sl) as u8;
        step += 1;
    }
    table
};
/// Sizes below this get a bin: the first `SMALL_LEVELS` levels.
const SMALL_LIMIT: u32 = 1 << (SMALL_LEVELS as u32 + 7);
const _: () = assert!(SMALL_LEVELS * SL_COUNT <= u8::MAX as usize + 1);

#[inline(always)]
fn small_bin(size: u32) -> Option<usize> {
    // The linear classes of the first level are the size's 16-byte step.
    if size < 256 {
        Some((size >> 4) as usize)
    } else {
        BIN_OF.get((size >> 4) as usize).map(|&bin| bin as usize)
    }
}

impl ThreadCache {
    fn new(attachment: &Arc<Attachment>) -> Self {
        ThreadCache {
            id: attachment.id,
            fork_epoch: fork_epoch(),
            attachment: Arc::downgrade(attachment),
            blocks: BlockCache::new(attachment),
        }
    }
}

impl BlockCache {
    pub(crate) fn new(attachment: &Attachment) -> Self {
        let arena_len = (attachment.arena_end() - attachment.arena_start()) as u64;
        BlockCache {
            generations: GenerationRange::default(),
            bins: Box::new(
                [Bin {
                    len: 0,
                    blocks: [(0, 0); BIN_CAPACITY],
                }; SMALL_LEVELS * SL_COUNT],
            ),
            large: LargeList {
                len: 0,
                blocks: [(0, 0); LARGE_CAPACITY],
            },
            room: (arena_len / 16).min(MAX_CACHE_BYTES) as i64,
            byte_cap: (arena_len / 16).min(MAX_CACHE_BYTES),
        }
    }

    /// Takes a cached block of at least `size` bytes; returns its offset.
    #[inline(always)]
    pub(crate) fn take(&mut self, size: u32) -> Option<u32> {
        if let Some(bin) = small_bin(size) {
            let bin = &mut self.bins[bin];
            let top = bin.len.checked_sub(1)?;
            // Blocks of one class differ in size; the newest must hold the request.
            let (offset, block_size) = bin.blocks[top as usize];
            if block_size < size {
                return None;
            }
            bin.len = top;
            self.room += block_size as i64;
            Some(offset)
        } else {
            let (offset, s) = self.large.take(size)?;
            self.room += s as i64;
            Some(offset)
        }
    }

    /// A segment-unique generation (see [`GenerationRange::take`]).
    #[inline(always)]
    pub(crate) fn generation(&mut self, arena: &Attachment) -> u64 {
        self.generations.take(arena)
    }

    fn release_one(&mut self, arena: &Attachment, offset: u32) {
        if let Some(hdr) = arena.header(offset) {
            // Relaxed: the block is this thread's alone while cached.
            let size = hdr.size.load(Relaxed);
            self.room += size as i64;
            release_block(arena, hdr, offset, size);
        }
    }

    /// Returns every cached block to the free index.
    pub(crate) fn flush_all(&mut self, arena: &Attachment) {
        for bin in 0..self.bins.len() {
            while self.bins[bin].len > 0 {
                self.bins[bin].len -= 1;
                let (offset, _) = self.bins[bin].blocks[self.bins[bin].len as usize];
                self.release_one(arena, offset);
            }
        }
        while let Some((offset, _)) = self.large.take_oldest() {
            self.release_one(arena, offset);
        }
        self.room = self.byte_cap as i64;
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        if self.fork_epoch != fork_epoch() {
            return; // inherited across fork: the blocks are the parent's
        }
        if let Some(arena) = self.attachment.upgrade() {
            self.blocks.flush_all(&arena);
        }
        // Attachment gone: the blocks stay CACHED under a detached owner and
        // the next recover() anywhere reclaims them.
    }
}

#[inline]
fn with_cache<R>(id: u64, f: impl FnOnce(&mut ThreadCache) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            // The segment used last sits first: one comparison on the hot path.
            if caches.first().is_none_or(|c| c.id != id) {
                let found = caches.iter().position(|c| c.id == id)?;
                caches.swap(0, found);
            }
            let cache = &mut caches[0];
            if cache.fork_epoch != fork_epoch() {
                // Inherited across fork: dropped unflushed (see Drop).
                caches.clear();
                return None;
            }
            Some(f(cache))
        })
        .ok()
        .flatten()
}

/// Takes a cached block of at least `size` bytes, if this thread has one,
/// with the generation to give it. Registers this thread's cache on first use.
#[inline]
pub(crate) fn take(arena: &Arc<Attachment>, size: u32) -> Option<(u32, u64)> {
    match with_cache(arena.id, |cache| {
        let offset = cache.blocks.take(size)?;
        Some((offset, cache.blocks.generation(arena)))
    }) {
        Some(found) => found,
        None => {
            register(ThreadCache::new(arena));
            None
        }
    }
}

/// A generation for an allocation on this thread (see `ThreadCache::generation`).
#[inline]
pub(crate) fn next_generation(arena: &Attachment) -> u64 {
    with_cache(arena.id, |cache| cache.blocks.generation(arena)).unwrap_or_else(|| {
        // No cache on this thread (e.g. during its teardown): one RMW.
        arena
            .segment()
            .generations
            .fetch_add(1, Relaxed)
            .wrapping_add(1)
    })
}

fn register(cache: ThreadCache) {
    let _ = CACHES.try_with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            caches.push(cache);
        }
    });
}

/// Parks a block this thread just moved to CACHED; returns `false` if the
/// block is not cacheable here (the caller then releases it itself).
#[inline]
pub(crate) fn put(arena: &Arc<Attachment>, offset: u32, size: u32) -> bool {
    match with_cache(arena.id, |cache| cache.blocks.park(arena, offset, size)) {
        Some(done) => done,
        None => {
            let mut cache = ThreadCache::new(arena);
            let done = cache.blocks.park(arena, offset, size);
            register(cache);
            done
        }
    }
}

impl BlockCache {
    /// Parks a block this participant just moved to CACHED; `false` if it
    /// is not cacheable here (the caller then releases it itself).
    #[inline(always)]
    pub(crate) fn park(&mut self, arena: &Attachment, offset: u32, size: u32) -> bool {
        let Some(bin) = small_bin(size) else {
            return self.park_large(arena, offset, size);
        };
        let b = &mut self.bins[bin];
        if (b.len as usize) < BIN_CAPACITY {
            b.blocks[b.len as usize] = (offset, size);
            b.len += 1;
            self.room -= size as i64;
            if self.room < 0 {
                self.flush_all(arena);
            }
            true
        } else {
            self.park_in_full_bin(arena, bin, offset, size)
        }
    }

    /// A full bin: the older half goes back to the free index first.
    #[cold]
    fn park_in_full_bin(&mut self, arena: &Attachment, bin: usize, offset: u32, size: u32) -> bool {
        let half = BIN_CAPACITY / 2;
        let older: [(u32, u32); BIN_CAPACITY / 2] =
            self.bins[bin].blocks[..half].try_into().expect("half");
        self.bins[bin].blocks.copy_within(half.., 0);
        self.bins[bin].len = half as u32;
        for (o, _) in older {
            self.release_one(arena, o);
        }
        self.park(arena, offset, size)
    }

    #[inline(always)]
    fn park_large(&mut self, arena: &Attachment, offset: u32, size: u32) -> bool {
        if size as u64 > self.byte_cap / 2 {
            return false;
        }
        if self.large.len as usize == LARGE_CAPACITY {
            self.release_oldest_large(arena);
        }
        self.large.blocks[self.large.len as usize] = (offset, size);
        self.large.len += 1;
        self.room -= size as i64;
        if self.room < 0 {
            self.release_oldest_large(arena);
        }
        true
    }

    #[cold]
    fn release_oldest_large(&mut self, arena: &Attachment) {
        if let Some((offset, _)) = self.large.take_oldest() {
            self.release_one(arena, offset);
        }
    }
}

/// Flushes this thread's cache for `arena`.
pub(crate) fn flush_current(arena: &Attachment) {
    with_cache(arena.id, |cache| cache.blocks.flush_all(arena));
}
