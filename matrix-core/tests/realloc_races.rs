//! Races of `reallocate` with the operations that can touch the same block
//! or its neighbour at the same time: a free of the block (through a second
//! handle), a consolidation, a pop of the neighbour, a concurrent resize of
//! the left neighbour absorbing the same free block, and a recovery. After
//! each race the chain tiles, nothing is live twice, and every block comes
//! back.

use matrix_core::state::{generation_of, is_live, state_of};
use matrix_core::{AtomicMatrix, BlockError, ReallocError, BLOCK_HEADER_SIZE};
use std::sync::atomic::Ordering::Acquire;
use std::sync::Barrier;

const ROUNDS: usize = 3000;

fn alloc(m: &AtomicMatrix, n: u64) -> (u32, u64) {
    let off = m.allocate(n, 0).unwrap().offset() - BLOCK_HEADER_SIZE;
    (
        off,
        generation_of(m.block_header(off).unwrap().0.state.load(Acquire)),
    )
}

fn assert_whole(m: &AtomicMatrix) {
    assert!(m.blocks().all(|b| b.is_ok()), "the chain tiles");
    m.flush_thread_cache();
    m.consolidate().unwrap();
    let s = m.stats().unwrap();
    assert_eq!(s.used_bytes, 0, "{s:?}");
}

#[test]
fn reallocate_racing_a_free_of_the_same_block_has_one_winner() {
    let m = AtomicMatrix::anonymous(8 << 20).unwrap();
    let barrier = Barrier::new(2);
    let (mut resized, mut freed) = (0, 0);
    for round in 0..ROUNDS {
        let (a, ga) = alloc(&m, 64 + (round as u64 % 7) * 100);
        let fence = alloc(&m, 64);
        let (r, f) = std::thread::scope(|s| {
            let r = s.spawn(|| {
                barrier.wait();
                m.reallocate(a, ga, 5000)
            });
            let f = s.spawn(|| {
                barrier.wait();
                m.free(a, None)
            });
            (r.join().unwrap(), f.join().unwrap())
        });
        match (r, f) {
            // The free came first: the resize finds nothing live.
            (Err(ReallocError::Block(_)), Ok(())) => freed += 1,
            // The resize held the block: the free is refused (not live), the
            // resized block is freed here.
            (Ok(r), Err(BlockError::ReservedState { .. } | BlockError::DoubleFree { .. })) => {
                resized += 1;
                m.free(r.offset, Some(r.generation)).unwrap();
            }
            // The resize finished first; the free took the new block (in
            // place) or found the old one already freed (a move).
            (Ok(r), Ok(())) => {
                resized += 1;
                if !r.kind.in_place() {
                    m.free(r.offset, Some(r.generation)).unwrap();
                }
            }
            (Ok(r), Err(BlockError::DoubleFree { .. } | BlockError::NotLive { .. })) => {
                resized += 1;
                m.free(r.offset, Some(r.generation)).unwrap();
            }
            other => panic!("round {round}: {other:?}"),
        }
        m.free(fence.0, Some(fence.1)).unwrap();
    }
    println!("    resize first {resized}, free first {freed}");
    assert_whole(&m);
}

#[test]
fn two_neighbours_growing_into_the_same_free_block_never_overlap() {
    let m = AtomicMatrix::anonymous(16 << 20).unwrap();
    let barrier = Barrier::new(3);
    for round in 0..ROUNDS {
        // [a][free f][b][fence]: a grows right into f; a thread allocates
        // (and may pop f); b grows into the wilderness or moves; then the
        // bytes of every live block are checked against their owners.
        let (a, ga) = alloc(&m, 256);
        let (f, gf) = alloc(&m, 40_000);
        let (b, gb) = alloc(&m, 256);
        m.free(f, Some(gf)).unwrap();
        m.flush_thread_cache();
        let (ra, popped, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| {
                barrier.wait();
                m.reallocate(a, ga, 20_000 + round as u64 % 4000)
            });
            let tp = s.spawn(|| {
                barrier.wait();
                m.allocate(30_000, 0).ok()
            });
            let tb = s.spawn(|| {
                barrier.wait();
                m.reallocate(b, gb, 1000)
            });
            (
                ta.join().unwrap().unwrap(),
                tp.join().unwrap(),
                tb.join().unwrap().unwrap(),
            )
        });
        let mut spans = vec![ra.offset, rb.offset];
        if let Some(p) = popped {
            spans.push(p.offset() - BLOCK_HEADER_SIZE);
        }
        let mut ranges: Vec<(u32, u32)> = spans
            .iter()
            .map(|&o| (o, o + m.block_header(o).unwrap().1))
            .collect();
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "round {round}: {ranges:?} overlap");
        }
        for &o in &spans {
            assert!(is_live(state_of(
                m.block_header(o).unwrap().0.state.load(Acquire)
            )));
            m.free(o, None).unwrap();
        }
    }
    assert_whole(&m);
}

#[test]
fn reallocate_racing_consolidations_and_allocations_keeps_every_byte() {
    let m = AtomicMatrix::anonymous(16 << 20).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut rng = fastrand::Rng::with_seed(5);
            let mut live = Vec::new();
            while !stop.load(Acquire) {
                if live.len() < 32 {
                    if let Ok(p) = m.allocate(rng.u64(16..50_000), 0) {
                        live.push(p.offset() - BLOCK_HEADER_SIZE);
                    }
                } else {
                    m.free(live.swap_remove(rng.usize(0..live.len())), None)
                        .unwrap();
                }
                if rng.u32(0..64) == 0 {
                    m.consolidate().unwrap();
                }
            }
            for o in live {
                m.free(o, None).unwrap();
            }
            m.flush_thread_cache();
        });
        let mut rng = fastrand::Rng::with_seed(6);
        let mut kept: Vec<(u32, u64, u8)> = (0..8u8)
            .map(|i| {
                let (o, g) = alloc(&m, 64);
                fill(&m, o, 64, i);
                (o, g, i)
            })
            .collect();
        for _ in 0..20_000 {
            let i = rng.usize(0..kept.len());
            let (o, g, seed) = kept[i];
            if let Ok(r) = m.reallocate(o, g, rng.u64(64..30_000)) {
                assert!(holds(&m, r.offset, 64, seed));
                kept[i] = (r.offset, r.generation, seed);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        churn.join().unwrap();
        for (o, g, seed) in kept {
            assert!(holds(&m, o, 64, seed));
            m.free(o, Some(g)).unwrap();
        }
    });
    assert_whole(&m);
}

fn fill(m: &AtomicMatrix, off: u32, len: usize, seed: u8) {
    let p = m
        .base_ptr()
        .wrapping_add((off + BLOCK_HEADER_SIZE) as usize) as *mut u8;
    // SAFETY: the block at `off` is live, ours, and holds `len` bytes.
    (0..len).for_each(|i| unsafe { p.add(i).write(seed ^ i as u8) });
}

fn holds(m: &AtomicMatrix, off: u32, len: usize, seed: u8) -> bool {
    let p = m
        .base_ptr()
        .wrapping_add((off + BLOCK_HEADER_SIZE) as usize);
    // SAFETY: as in `fill`.
    (0..len).all(|i| unsafe { p.add(i).read() } == seed ^ i as u8)
}
