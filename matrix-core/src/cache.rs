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
use std::cell::RefCell;
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

/// Generations a thread reserves from the segment counter at a time.
const GENERATION_BATCH: u32 = 1024;

struct ThreadCache {
    id: u64,
    /// Next generation of this thread's reserved range, and how many are left.
    generation_next: u64,
    generations_left: u32,
    fork_epoch: u64,
    attachment: Weak<Attachment>,
    bins: Box<[Bin; SMALL_LEVELS * SL_COUNT]>,
    large: Vec<(u32, u32)>,
    bytes: u64,
    byte_cap: u64,
}

thread_local! {
    static CACHES: RefCell<Vec<ThreadCache>> = const { RefCell::new(Vec::new()) };
}

#[inline]
fn small_bin(size: u32) -> Option<usize> {
    let class = class_of(size);
    (class.fl < SMALL_LEVELS).then_some(class.fl * SL_COUNT + class.sl)
}

impl ThreadCache {
    fn new(attachment: &Arc<Attachment>) -> Self {
        let arena_len = (attachment.arena_end() - attachment.arena_start()) as u64;
        ThreadCache {
            id: attachment.id,
            generation_next: 0,
            generations_left: 0,
            fork_epoch: fork_epoch(),
            attachment: Arc::downgrade(attachment),
            bins: Box::new(
                [Bin {
                    len: 0,
                    blocks: [(0, 0); BIN_CAPACITY],
                }; SMALL_LEVELS * SL_COUNT],
            ),
            large: Vec::with_capacity(LARGE_CAPACITY + 1),
            bytes: 0,
            byte_cap: (arena_len / 16).min(MAX_CACHE_BYTES),
        }
    }

    #[inline]
    fn take(&mut self, size: u32) -> Option<u32> {
        if let Some(bin) = small_bin(size) {
            let bin = &mut self.bins[bin];
            let top = bin.len.checked_sub(1)?;
            // Blocks of one class differ in size; the newest must hold the request.
            let (offset, block_size) = bin.blocks[top as usize];
            if block_size < size {
                return None;
            }
            bin.len = top;
            self.bytes = self.bytes.saturating_sub(block_size as u64);
            Some(offset)
        } else {
            let i = self.large.iter().position(|&(_, s)| s >= size)?;
            let (offset, s) = self.large.swap_remove(i);
            self.bytes -= s as u64;
            Some(offset)
        }
    }

    /// A segment-unique generation: from this thread's reserved range, which
    /// is refilled with one RMW on the shared counter per 1,024 allocations.
    #[inline]
    fn generation(&mut self, arena: &Attachment) -> u64 {
        if self.generations_left == 0 {
            // Relaxed: only the uniqueness of the RMW matters; each block's
            // state store (Release) publishes the value it is given.
            self.generation_next = arena
                .segment()
                .generations
                .fetch_add(GENERATION_BATCH as u64, Relaxed)
                .wrapping_add(1);
            self.generations_left = GENERATION_BATCH;
        }
        let g = self.generation_next;
        self.generation_next = g.wrapping_add(1);
        self.generations_left -= 1;
        g
    }

    fn release_one(&mut self, arena: &Attachment, offset: u32) {
        if let Some(hdr) = arena.header(offset) {
            // Relaxed: the block is this thread's alone while cached.
            let size = hdr.size.load(Relaxed);
            self.bytes = self.bytes.saturating_sub(size as u64);
            release_block(arena, hdr, offset, size);
        }
    }

    fn flush_all(&mut self, arena: &Attachment) {
        for bin in 0..self.bins.len() {
            while self.bins[bin].len > 0 {
                self.bins[bin].len -= 1;
                let (offset, _) = self.bins[bin].blocks[self.bins[bin].len as usize];
                self.release_one(arena, offset);
            }
        }
        for (offset, _) in std::mem::take(&mut self.large) {
            self.release_one(arena, offset);
        }
        self.bytes = 0;
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        if self.fork_epoch != fork_epoch() {
            return; // inherited across fork: the blocks are the parent's
        }
        if let Some(arena) = self.attachment.upgrade() {
            self.flush_all(&arena);
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
        let offset = cache.take(size)?;
        Some((offset, cache.generation(arena)))
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
    with_cache(arena.id, |cache| cache.generation(arena)).unwrap_or_else(|| {
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
    match with_cache(arena.id, |cache| park(cache, arena, offset, size)) {
        Some(done) => done,
        None => {
            let mut cache = ThreadCache::new(arena);
            let done = park(&mut cache, arena, offset, size);
            register(cache);
            done
        }
    }
}

#[inline]
fn park(cache: &mut ThreadCache, arena: &Attachment, offset: u32, size: u32) -> bool {
    let Some(bin) = small_bin(size) else {
        return park_large(cache, arena, offset, size);
    };
    let b = &mut cache.bins[bin];
    if (b.len as usize) < BIN_CAPACITY {
        b.blocks[b.len as usize] = (offset, size);
        b.len += 1;
        cache.bytes += size as u64;
        if cache.bytes > cache.byte_cap {
            cache.flush_all(arena);
        }
        true
    } else {
        park_in_full_bin(cache, arena, bin, offset, size)
    }
}

/// A full bin: the older half goes back to the free index first.
#[cold]
fn park_in_full_bin(
    cache: &mut ThreadCache,
    arena: &Attachment,
    bin: usize,
    offset: u32,
    size: u32,
) -> bool {
    let half = BIN_CAPACITY / 2;
    let older: [(u32, u32); BIN_CAPACITY / 2] =
        cache.bins[bin].blocks[..half].try_into().expect("half");
    cache.bins[bin].blocks.copy_within(half.., 0);
    cache.bins[bin].len = half as u32;
    for (o, _) in older {
        cache.release_one(arena, o);
    }
    park(cache, arena, offset, size)
}

#[cold]
fn park_large(cache: &mut ThreadCache, arena: &Attachment, offset: u32, size: u32) -> bool {
    if size as u64 > cache.byte_cap / 2 {
        return false;
    }
    cache.large.push((offset, size));
    cache.bytes += size as u64;
    if cache.large.len() > LARGE_CAPACITY || cache.bytes > cache.byte_cap {
        let (o, _) = cache.large.remove(0);
        cache.release_one(arena, o);
    }
    true
}

/// Flushes this thread's cache for `arena`.
pub(crate) fn flush_current(arena: &Attachment) {
    with_cache(arena.id, |cache| cache.flush_all(arena));
}
