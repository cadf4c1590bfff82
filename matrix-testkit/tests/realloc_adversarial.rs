//! Adversarial tests of `reallocate`: every other operation that can touch
//! the resized block or its physical neighbour at the same moment, on real
//! threads, with the invariant checker run afterwards.

use matrix_core::state::{self, generation_of, ALLOCATED};
use matrix_core::{
    AllocError, AtomicMatrix, BlockError, ReallocError, ResizeKind, BLOCK_HEADER_SIZE,
};
use matrix_handler::{HandlerError, HandlerFunctions, MatrixHandler};
use matrix_testkit::{check_invariants, check_matrix};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Time each race runs at most (it stops at its first failure).
const BUDGET: Duration = Duration::from_millis(1500);

fn alloc(m: &AtomicMatrix, n: u64) -> (u32, u64) {
    let off = m.allocate(n, 0).unwrap().offset() - BLOCK_HEADER_SIZE;
    (off, word(m, off).map(generation_of).unwrap())
}

fn word(m: &AtomicMatrix, off: u32) -> Option<u64> {
    m.block_header(off).ok().map(|(h, _)| h.state.load(SeqCst))
}

fn payload(m: &AtomicMatrix, off: u32) -> *mut u8 {
    m.base_ptr()
        .wrapping_add((off + BLOCK_HEADER_SIZE) as usize) as *mut u8
}

fn fill(m: &AtomicMatrix, off: u32, len: usize, seed: u8) {
    let p = payload(m, off);
    for i in 0..len {
        // SAFETY: the block at `off` is live, held by the test, `len` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn holds(m: &AtomicMatrix, off: u32, len: usize, seed: u8) -> bool {
    let p = payload(m, off);
    // SAFETY: as in `fill`.
    (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

/// Quiescent end of a test: caches flushed, a consolidation, then every
/// invariant (no overlap, nothing listed twice, nothing stranded).
fn settle_and_check(m: &AtomicMatrix) -> matrix_testkit::invariants::Report {
    m.flush_thread_cache();
    m.consolidate().unwrap();
    check_matrix(m).unwrap_or_else(|v| panic!("invariant broken: {v}"))
}

/// A corruption error on a healthy segment.
fn is_corrupted(e: &BlockError) -> bool {
    matches!(e, BlockError::Corrupted { .. })
}

// ---------------------------------------------------------------------------
// Attack: a grow into the wilderness moves `top` between a reader's load of
// `top` and its load of the block's size.

/// `checked_header` (behind `block_header`, `free`, `set_owner`, `hold`)
/// loads `top`, then the block's size, and calls the block corrupt when
/// `offset + size > top`. A grow into the wilderness is the first operation
/// that makes a *live* block's size reach past a `top` read a moment
/// earlier: the reader must see the old size, the new size, or a
/// "changed/stale" answer — never "impossible block size" on a healthy
/// segment.
#[test]
fn a_grow_into_the_wilderness_never_makes_a_concurrent_lookup_see_corruption() {
    let m = AtomicMatrix::anonymous(16 << 20).unwrap();
    let stop = AtomicBool::new(false);
    let corrupted = AtomicU64::new(0);
    let lookups = AtomicU64::new(0);
    let (first, _) = alloc(&m, 16);
    m.free(first, None).unwrap();
    m.flush_thread_cache();
    m.consolidate().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            while start.elapsed() < BUDGET && corrupted.load(SeqCst) == 0 {
                // One block at the arena start, grown 48 bytes (a whole block) at a time:
                // every step moves `top`.
                let (b, mut g) = alloc(&m, 16);
                assert_eq!(b, first, "the block is carved at the arena start");
                for n in (64..64 << 10).step_by(48) {
                    let r = m.reallocate(b, g, n).unwrap();
                    assert_eq!(r.kind, ResizeKind::GrownIntoWilderness);
                    g = r.generation;
                }
                m.free(b, Some(g)).unwrap();
                m.flush_thread_cache();
                m.consolidate().unwrap();
            }
            stop.store(true, SeqCst);
        });
        s.spawn(|| {
            while !stop.load(SeqCst) {
                lookups.fetch_add(1, SeqCst);
                if let Err(e) = m.block_header(first) {
                    if is_corrupted(&e) {
                        corrupted.fetch_add(1, SeqCst);
                        eprintln!("lookup during a grow: {e}");
                    }
                }
            }
        });
    });
    assert!(lookups.load(SeqCst) > 1000);
    assert_eq!(
        corrupted.load(SeqCst),
        0,
        "a healthy block was reported corrupt while it grew into the wilderness"
    );
    settle_and_check(&m);
}

/// A peer that validates a handle (`block_at`) while the owner grows the
/// block into the wilderness, frees it (a consolidation gives it back to
/// the wilderness) and carves it again must get a handle or a typed
/// refusal, never a corruption error. (The lookup under the handler's
/// seqlock read, `checked_header`, judged a size against a `top` and a
/// state word read after it, each of which could belong to a later block
/// at the same offset: one grown, freed, retracted and carved anew in
/// between. It now judges an impossible size only from a reading taken
/// under an unchanged state word.)
#[test]
fn handler_lookups_racing_a_grow_into_the_wilderness_never_see_corruption() {
    let h = MatrixHandler::bootstrap(None, 16 << 20).unwrap();
    let stop = AtomicBool::new(false);
    let corrupted = AtomicU64::new(0);
    let first = {
        let b = h.allocate_array::<u8>(16).unwrap();
        let off = b.offset();
        h.free(b).unwrap();
        h.matrix().flush_thread_cache();
        h.consolidate().unwrap();
        off
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let start = Instant::now();
            while start.elapsed() < BUDGET && corrupted.load(SeqCst) == 0 {
                let mut b = h.allocate_array::<u8>(16).unwrap();
                assert_eq!(b.offset(), first);
                for len in (64..64 << 10).step_by(48) {
                    let kind = h.reallocate(&mut b, len).unwrap();
                    assert_eq!(kind, ResizeKind::GrownIntoWilderness);
                }
                h.free(b).unwrap();
                h.matrix().flush_thread_cache();
                h.consolidate().unwrap();
            }
            stop.store(true, SeqCst);
        });
        s.spawn(|| {
            while !stop.load(SeqCst) {
                match h.block_at::<u8>(first) {
                    Err(HandlerError::Block(e)) if is_corrupted(&e) => {
                        corrupted.fetch_add(1, SeqCst);
                        eprintln!("block_at during a grow: {e}");
                    }
                    _ => {}
                }
            }
        });
    });
    assert_eq!(corrupted.load(SeqCst), 0);
    check_invariants(&h).unwrap();
}

// ---------------------------------------------------------------------------
// Races on the resized block itself and on its neighbour (regressions).

/// Runs `round` until the budget is spent or it fails.
fn rounds(mut round: impl FnMut(u64)) -> u64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < BUDGET && n < 20_000 {
        round(n);
        n += 1;
    }
    n
}

/// A free through a second handle (same offset and generation, as a token
/// rebuilds it) racing a resize: exactly one of them gets the block; the
/// loser is refused with a typed error; nothing leaks or overlaps.
#[test]
fn a_free_through_a_second_handle_racing_a_resize_has_one_winner() {
    free_racing_resize(false);
}

/// As above, and the free's refusal says what happened: the block is being
/// resized or was moved, not "a reserved state" (which `matrix fsck` and
/// the checker classify as corruption).
#[test]
fn a_free_racing_a_resize_is_refused_as_not_live() {
    free_racing_resize(true);
}

fn free_racing_resize(strict: bool) {
    let m = AtomicMatrix::anonymous(4 << 20).unwrap();
    let n = rounds(|i| {
        let (b, g) = alloc(&m, 64);
        let _guard = alloc(&m, 64);
        let grow = if i % 2 == 0 { 4000 } else { 16 };
        let (freed, resized) = std::thread::scope(|s| {
            let f = s.spawn(|| m.free(b, Some(g)));
            let r = m.reallocate(b, g, grow);
            (f.join().unwrap(), r)
        });
        match (&freed, &resized) {
            (Ok(()), Err(ReallocError::Block(_))) => {}
            (Err(e), Ok(r)) => {
                assert!(
                    matches!(
                        e,
                        BlockError::Stale { .. }
                            | BlockError::NotLive { .. }
                            // Moved: the old block was freed under its generation.
                            | BlockError::DoubleFree { .. }
                    ) || (!strict && matches!(e, BlockError::ReservedState { state: 6, .. })),
                    "free lost with {e:?} (resize: {r:?})"
                );
                m.free(r.offset, Some(r.generation)).unwrap();
            }
            other => panic!("free / resize of one block: {other:?}"),
        }
        m.free(_guard.0, Some(_guard.1)).unwrap();
    });
    assert!(n > 100);
    let report = settle_and_check(&m);
    assert_eq!(report.used_bytes, 0, "{report:?}");
}

/// Two participants resize one segment-owned block at once (one grows,
/// one shrinks): exactly one holds it; the other gets a typed refusal.
#[test]
fn two_resizes_of_one_segment_block_have_one_winner() {
    let name = matrix_core::ScratchName::new("realloc-two");
    let a = AtomicMatrix::create(name.as_str(), 4 << 20).unwrap();
    let b_view = AtomicMatrix::open(name.as_str()).unwrap();
    let n = rounds(|_| {
        let (b, g) = alloc(&a, 256);
        a.set_owner(b, None, matrix_core::OwnerId::SEGMENT).unwrap();
        let (ra, rb) = std::thread::scope(|s| {
            let t = s.spawn(|| b_view.reallocate(b, g, 9000));
            let ra = a.reallocate(b, g, 32);
            (ra, t.join().unwrap())
        });
        let winner = match (ra, rb) {
            (Ok(r), Err(ReallocError::Block(_))) | (Err(ReallocError::Block(_)), Ok(r)) => r,
            other => panic!("two resizes of one generation: {other:?}"),
        };
        let w = word(&a, winner.offset).unwrap();
        assert_eq!(state::owner_of(w), 0, "handed back to the segment");
        assert_eq!(state::state_of(w), ALLOCATED);
        a.free(winner.offset, Some(winner.generation)).unwrap();
    });
    assert!(n > 100);
    b_view.flush_thread_cache();
    let report = settle_and_check(&a);
    assert_eq!(report.used_bytes, 0, "{report:?}");
}

/// A grow into the free neighbour racing an allocator that wants that
/// neighbour (and a consolidation draining every list): each round the
/// neighbour goes to exactly one of them, the resize never reports a
/// corrupt segment, the kept bytes survive, and the chain stays whole.
#[test]
fn a_grow_into_the_neighbour_racing_its_allocation_and_a_consolidation() {
    let m = AtomicMatrix::anonymous(8 << 20).unwrap();
    let n = rounds(|i| {
        let (b, g) = alloc(&m, 1000);
        // Larger than the thread caches keep: its free reaches the index.
        let (nb, ng) = alloc(&m, 100_000);
        let (c, gc) = alloc(&m, 64);
        fill(&m, b, 1000, i as u8);
        m.free(nb, Some(ng)).unwrap();
        m.flush_thread_cache();
        let (r, other) = std::thread::scope(|s| {
            let t = s.spawn(|| {
                if i % 3 == 2 {
                    m.consolidate().map(|_| None)
                } else {
                    m.allocate(90_000, 0)
                        .map(|p| Some(p.offset() - BLOCK_HEADER_SIZE))
                }
            });
            let r = m.reallocate(b, g, 50_000);
            (r, t.join().unwrap())
        });
        let r = r.unwrap_or_else(|e| panic!("resize failed on a healthy segment: {e}"));
        assert!(
            holds(&m, r.offset, 1000, i as u8),
            "kept bytes lost ({:?})",
            r.kind
        );
        let taken = other.unwrap_or_else(|e| panic!("the other side failed: {e}"));
        if let Some(t) = taken {
            assert!(
                t + 90_000 <= r.offset || r.offset + 50_000 <= t,
                "the allocation overlaps the resized block"
            );
            m.free(t, None).unwrap();
        }
        m.free(r.offset, Some(r.generation)).unwrap();
        m.free(c, Some(gc)).unwrap();
        m.flush_thread_cache();
    });
    assert!(n > 50);
    let report = settle_and_check(&m);
    assert_eq!(report.used_bytes, 0, "{report:?}");
}

/// The left neighbour L grows into B while B's owner frees B and another
/// thread resizes B: B is absorbed only once it is free, its resize and
/// free see a typed refusal afterwards, and nothing overlaps.
#[test]
fn the_left_neighbour_absorbing_a_block_that_is_being_freed_and_resized() {
    let m = AtomicMatrix::anonymous(8 << 20).unwrap();
    let n = rounds(|i| {
        let (l, gl) = alloc(&m, 64);
        let (b, gb) = alloc(&m, 100_000);
        let (c, gc) = alloc(&m, 64);
        let (rl, rb) = std::thread::scope(|s| {
            let t = s.spawn(|| {
                if i % 2 == 0 {
                    m.free(b, Some(gb)).map(|_| None).map_err(|e| e.to_string())
                } else {
                    m.reallocate(b, gb, 50_000)
                        .map(Some)
                        .map_err(|e| e.to_string())
                }
            });
            let rl = m.reallocate(l, gl, 20_000);
            (rl, t.join().unwrap())
        });
        let rl = rl.unwrap_or_else(|e| panic!("left resize failed: {e}"));
        let rb = rb.unwrap_or_else(|e| panic!("the block's own operation failed: {e}"));
        if let Some(rb) = rb {
            // B still exists: L's new extent does not reach into it.
            let (_, lsize) = m.block_header(rl.offset).unwrap();
            let (_, bsize) = m.block_header(rb.offset).unwrap();
            assert!(
                rl.offset + lsize <= rb.offset || rb.offset + bsize <= rl.offset,
                "the left resize ({:?}) overlaps the live block ({:?})",
                rl.kind,
                rb.kind
            );
            m.free(rb.offset, Some(rb.generation)).unwrap();
        }
        m.free(rl.offset, Some(rl.generation)).unwrap();
        m.free(c, Some(gc)).unwrap();
        m.flush_thread_cache();
        let a = matrix_testkit::audit(&m);
        assert!(a.hard_violations().next().is_none(), "{:?}", a.violations);
    });
    assert!(n > 50);
    let report = settle_and_check(&m);
    assert_eq!(report.used_bytes, 0, "{report:?}");
}

// ---------------------------------------------------------------------------
// Checked arithmetic and the handle rule.

/// Sizes at and past every limit: typed errors, no panic, the block kept.
#[test]
fn sizes_at_the_limits_get_typed_errors_and_keep_the_block() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let arena = (m.segment_size() - m.first_block_offset()) as u64;
    let (b, g) = alloc(&m, 100);
    fill(&m, b, 100, 7);
    for huge in [
        u64::MAX,
        u64::MAX - 15,
        u32::MAX as u64,
        u32::MAX as u64 + 1,
        arena,
        arena - 31,
    ] {
        match m.reallocate(b, g, huge) {
            Err(ReallocError::Alloc(
                AllocError::TooLarge { .. } | AllocError::OutOfMemory { .. },
            )) => {}
            other => panic!("payload {huge}: {other:?}"),
        }
        assert_eq!(
            word(&m, b).map(generation_of),
            Some(g),
            "a refused resize kept the handle"
        );
        assert!(holds(&m, b, 100, 7));
    }
    // The largest payload that fits the arena: the block is the only one
    // and ends at `top`, so it grows into the wilderness.
    let r = m
        .reallocate(b, g, arena - BLOCK_HEADER_SIZE as u64)
        .unwrap();
    assert_eq!(r.kind, ResizeKind::GrownIntoWilderness);
    assert!(holds(&m, b, 100, 7));
    // Zero: shrinks to the minimum block, new generation.
    let z = m.reallocate(b, r.generation, 0).unwrap();
    assert_eq!(z.kind, ResizeKind::Shrunk);
    assert_eq!(m.block_header(b).unwrap().1, 48);
    assert!(matches!(
        m.reallocate(b, r.generation, 10),
        Err(ReallocError::Block(BlockError::Stale { .. }))
    ));
    m.free(b, Some(z.generation)).unwrap();
    let report = settle_and_check(&m);
    assert_eq!(report.used_bytes, 0);
}

/// The handler's typed resize: an element count whose byte size overflows
/// or exceeds the segment is refused and the handle stays valid; a handle
/// copied before a grow (rebuilt from a token) is stale after it; a reader
/// that validated the old size cannot use the old handle to read past the
/// shrunk payload.
#[test]
fn handler_resize_limits_and_stale_copies() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let mut b = h.allocate_array::<u64>(10).unwrap();
    h.write_elems(&mut b, 0, &[5u64; 10]).unwrap();
    for len in [
        usize::MAX,
        usize::MAX / 8 + 1,
        u32::MAX as usize + 1,
        1 << 20,
    ] {
        assert!(h.reallocate(&mut b, len).is_err(), "len {len}");
        assert_eq!(h.get_slice(&b).unwrap(), &[5u64; 10]);
    }
    let copy = h.block_from_token::<u64>(b.token()).unwrap();
    h.reallocate(&mut b, 1000).unwrap();
    assert!(
        h.get_slice(&copy).is_err(),
        "a copy from before the grow is stale"
    );
    let s = h.get_slice(&b).unwrap();
    assert_eq!(&s[..10], &[5u64; 10]);
    assert!(s[10..].iter().all(|&v| v == 0), "new elements are zero");
    let old = h.block_from_token::<u64>(b.token()).unwrap();
    h.reallocate(&mut b, 2).unwrap();
    assert!(
        h.get_slice(&old).is_err(),
        "a 1000-element handle after a shrink to 2"
    );
    assert_eq!(h.get_slice(&b).unwrap(), &[5u64; 2]);
    // reallocate_raw: bad offsets are typed errors.
    assert!(h
        .reallocate_raw(matrix_core::RelativePtr::new(0), 10)
        .is_err());
    assert!(h
        .reallocate_raw(matrix_core::RelativePtr::new(b.offset() + 16), 10)
        .is_err());
    h.free(b).unwrap();
    check_invariants(&h).unwrap();
}

/// The error `HandlerFunctions::reallocate` can return after the core
/// resize succeeded: another handle frees the block (`free_at`, any
/// generation) between the resize and the zeroing of the new elements.
/// Whatever the order, the handle and the block stay consistent: on every
/// outcome in which the resize took place `block` is the new handle (the
/// old generation is stale), exactly one free succeeds, no block leaks,
/// and a handle that outlived its block is refused rather than read.
#[test]
fn handler_reallocate_racing_a_free_at_keeps_the_handle_and_the_block_consistent() {
    let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
    let barrier = std::sync::Barrier::new(2);
    let (mut late, mut total) = (0u64, 0u64);
    let n = rounds(|i| {
        h.matrix().flush_thread_cache();
        h.consolidate().unwrap();
        // The last block: its grow is in place (into the wilderness), so
        // the free by header offset can land between resize and zeroing.
        let mut b = h.allocate_array::<u64>(8).unwrap();
        h.write_elems(&mut b, 0, &[i; 8]).unwrap();
        let (old_gen, header) = (b.generation(), b.header_offset());
        let (r, f) = std::thread::scope(|s| {
            let f = s.spawn(|| {
                barrier.wait();
                h.free_at(header)
            });
            barrier.wait();
            let r = h.reallocate(&mut b, 2000);
            (r, f.join().unwrap())
        });
        total += 1;
        let resized = b.generation() != old_gen;
        match (&r, &f) {
            // The free came first: nothing resized, the handle unchanged.
            (Err(_), Ok(())) if !resized => {}
            // The free landed after the resize, before the zeroing: the
            // late error, with the handle already the new one.
            (Err(_), Ok(())) => late += 1,
            // The resize held the block: the free was refused.
            (Ok(_), Err(_)) => {
                assert!(resized);
                let s = h.get_slice(&b).unwrap();
                assert_eq!(s.len(), 2000);
                assert_eq!(&s[..8], &[i; 8], "kept elements");
                assert!(s[8..].iter().all(|&v| v == 0), "new elements are zero");
            }
            // Both done, the free after the zeroing.
            (Ok(_), Ok(())) => assert!(resized),
            other => panic!("resize / free_at of one block: {other:?}"),
        }
        if f.is_ok() {
            // Freed by the other handle: this one is refused, whatever it is.
            assert!(h.get_slice(&b).is_err(), "a handle outlived its block");
            assert!(h.free(b).is_err(), "a second free of one block");
        } else {
            h.free(b).unwrap();
        }
    });
    eprintln!("{n} rounds, {late} of {total} with the free between resize and zeroing");
    assert!(n > 100);
    h.matrix().flush_thread_cache();
    h.consolidate().unwrap();
    let report = check_invariants(&h).unwrap();
    assert_eq!(report.used_bytes, 0, "{report:?}");
}
