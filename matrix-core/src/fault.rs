//! Test-only crash points.
//!
//! With the `fault-injection` feature a process can arm one point (by
//! number, and which arrival) and SIGKILL itself when it gets there, so a
//! test can stop a participant at every window the recovery argument
//! covers and check what `recover()` and `repair()` make of it. Without the
//! feature every point is an empty inline function.

/// After a pop, before the block is claimed (allocate).
pub const ALLOC_POPPED: u32 = 1;
/// After the split remainder's header is written, before it is published.
pub const ALLOC_SPLITTING: u32 = 2;
/// After `top` moved for a carve, before the block's header is written.
pub const CARVED: u32 = 3;
/// After a carved block's header is written, before it is marked.
pub const CARVE_WRITTEN: u32 = 4;
/// After the state CAS of a free (ACKED or CACHED), before the block is
/// returned or cached.
pub const RETIRED: u32 = 5;
/// After a block is marked RELEASING (a free, a split remainder, a
/// consolidation's merged run), before it is pushed.
pub const RELEASE_OWNER: u32 = 6;
/// After a RELEASING block is pushed, before it is marked FREE.
pub const RELEASE_FREE: u32 = 7;
/// In a consolidation, after a pop, before the block is claimed.
pub const CONSOLIDATE_POPPED: u32 = 8;
/// In a consolidation, after a merged size is stored, before the absorbed
/// headers are cleared.
pub const CONSOLIDATE_MERGING: u32 = 9;
/// In a consolidation, after the header of a run bordering the wilderness
/// is cleared, before `top` moves back.
pub const RETRACTING: u32 = 10;
/// After a thread cache handed out a block, before it is marked.
pub const CACHE_TAKEN: u32 = 11;
/// While attaching: the slot is ACTIVE under this process's lock, the
/// attachment not built yet.
pub const ATTACH_CLAIMED: u32 = 12;
/// While detaching: every flusher is done, the slot still ACTIVE.
pub const DETACHING: u32 = 13;
/// A resize holds its block (RESIZING), nothing else done yet.
pub const REALLOC_HELD: u32 = 14;
/// A shrink wrote the tail's header, before the block's size shrinks.
pub const REALLOC_SHRINKING: u32 = 15;
/// A grow moved `top`, before the block's size covers the new bytes.
pub const REALLOC_TOP_MOVED: u32 = 16;
/// A grow popped the neighbour, before claiming it.
pub const REALLOC_NEIGHBOUR_POPPED: u32 = 17;
/// A grow wrote the header of the neighbour's unneeded tail, before the
/// neighbour's size shrinks.
pub const REALLOC_NEIGHBOUR_SPLIT: u32 = 18;
/// A grow cleared the neighbour's header, before the block's size covers it.
pub const REALLOC_ABSORBING: u32 = 19;
/// An in-place resize set the new size, before the block is handed back.
pub const REALLOC_SIZED: u32 = 20;
/// A move allocated and filled the new block, before recording the move.
pub const REALLOC_COPIED: u32 = 21;
/// A move recorded its intent, before the commit.
pub const REALLOC_MOVE_RECORDED: u32 = 22;
/// A move committed (old block ACKED), before the new block is handed over.
pub const REALLOC_COMMITTED: u32 = 23;
/// A move handed the new block over, before the old one is freed.
pub const REALLOC_HANDED: u32 = 24;
/// The resize points.
pub const REALLOC: [u32; 11] = [
    REALLOC_HELD,
    REALLOC_SHRINKING,
    REALLOC_TOP_MOVED,
    REALLOC_NEIGHBOUR_POPPED,
    REALLOC_NEIGHBOUR_SPLIT,
    REALLOC_ABSORBING,
    REALLOC_SIZED,
    REALLOC_COPIED,
    REALLOC_MOVE_RECORDED,
    REALLOC_COMMITTED,
    REALLOC_HANDED,
];
/// Every point of the allocator proper, for tests that iterate over them
/// (the resize points, reached only by `reallocate`, are in [`REALLOC`]).
pub const ALL: [u32; 13] = [
    ALLOC_POPPED,
    ALLOC_SPLITTING,
    CARVED,
    CARVE_WRITTEN,
    RETIRED,
    RELEASE_OWNER,
    RELEASE_FREE,
    CONSOLIDATE_POPPED,
    CONSOLIDATE_MERGING,
    RETRACTING,
    CACHE_TAKEN,
    ATTACH_CLAIMED,
    DETACHING,
];

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    // Process-local test switches, not shared memory: std atomics are right.
    static POINT: AtomicU32 = AtomicU32::new(0);
    static SKIP: AtomicU32 = AtomicU32::new(0);

    /// Kill this process at the `(skip + 1)`-th arrival at `point` (0 disarms).
    pub fn arm(point: u32, skip: u32) {
        // Relaxed: read by this process's own threads only; no data depends on it.
        SKIP.store(skip, Relaxed);
        POINT.store(point, Relaxed);
    }

    /// Called at crash point `point`.
    #[inline]
    pub(crate) fn at(point: u32) {
        // Relaxed: see `arm`.
        if POINT.load(Relaxed) == point && SKIP.fetch_sub(1, Relaxed) == 0 {
            // SAFETY: raising a signal on ourselves has no memory effects.
            unsafe { libc::raise(libc::SIGKILL) };
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use armed::arm;
#[cfg(feature = "fault-injection")]
pub(crate) use armed::at;

/// Called at crash point `point` (no-op without `fault-injection`).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn at(_point: u32) {}
