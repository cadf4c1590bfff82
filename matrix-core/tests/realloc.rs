//! `reallocate`: every path (shrink, grow into the wilderness, grow into a
//! free neighbour, move), the bytes it keeps, the handle rule, and what it
//! refuses.

use matrix_core::state::{self, generation_of, state_of};
use matrix_core::{AtomicMatrix, BlockError, ReallocError, ResizeKind, BLOCK_HEADER_SIZE};

fn alloc(m: &AtomicMatrix, n: u64) -> (u32, u64) {
    let off = m.allocate(n, 0).unwrap().offset() - BLOCK_HEADER_SIZE;
    let (hdr, _) = m.block_header(off).unwrap();
    (
        off,
        generation_of(hdr.state.load(std::sync::atomic::Ordering::Acquire)),
    )
}

fn fill(m: &AtomicMatrix, off: u32, len: usize, seed: u8) {
    let p = m
        .base_ptr()
        .wrapping_add((off + BLOCK_HEADER_SIZE) as usize) as *mut u8;
    for i in 0..len {
        // SAFETY: the block at `off` is live, ours and holds `len` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn holds(m: &AtomicMatrix, off: u32, len: usize, seed: u8) -> bool {
    let p = m
        .base_ptr()
        .wrapping_add((off + BLOCK_HEADER_SIZE) as usize);
    // SAFETY: as in `fill`.
    (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

fn word(m: &AtomicMatrix, off: u32) -> u64 {
    m.block_header(off)
        .unwrap()
        .0
        .state
        .load(std::sync::atomic::Ordering::Acquire)
}

fn settled(m: &AtomicMatrix) {
    m.flush_thread_cache();
    m.consolidate().unwrap();
    let s = m.stats().unwrap();
    assert_eq!(s.used_bytes, 0, "{s:?}");
    assert!(s.free_blocks <= 1, "{s:?}");
}

#[test]
fn the_last_block_grows_into_the_wilderness_and_keeps_its_offset() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let (a, ga) = alloc(&m, 100);
    fill(&m, a, 100, 3);
    let r = m.reallocate(a, ga, 5000).unwrap();
    assert_eq!(r.kind, ResizeKind::GrownIntoWilderness);
    assert_eq!(r.offset, a);
    assert_ne!(r.generation, ga);
    assert!(holds(&m, a, 100, 3));
    let (_, size) = m.block_header(a).unwrap();
    assert!(size >= 5000 + BLOCK_HEADER_SIZE);
    // The handle rule: the old generation is stale now.
    assert!(matches!(
        m.reallocate(a, ga, 10),
        Err(ReallocError::Block(BlockError::Stale { .. }))
    ));
    assert!(matches!(m.free(a, Some(ga)), Err(BlockError::Stale { .. })));
    m.free(a, Some(r.generation)).unwrap();
    settled(&m);
}

#[test]
fn a_block_grows_into_its_free_neighbour_and_returns_what_it_does_not_need() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let (a, ga) = alloc(&m, 1000);
    // Larger than the thread caches keep, so it goes to the free index.
    let (b, gb) = alloc(&m, 100_000);
    let (c, gc) = alloc(&m, 64);
    fill(&m, a, 1000, 9);
    m.free(b, Some(gb)).unwrap();
    m.flush_thread_cache();
    let r = m.reallocate(a, ga, 20_000).unwrap();
    assert_eq!(r.kind, ResizeKind::GrownIntoNeighbour);
    assert_eq!(r.offset, a);
    assert!(holds(&m, a, 1000, 9));
    // The unneeded tail of the neighbour is a free block right after `a`.
    let (_, size) = m.block_header(a).unwrap();
    let tail = a + size;
    assert!(tail < c);
    assert_eq!(state_of(word(&m, tail)), state::FREE);
    // The chain still tiles: walk it and find no damage.
    assert!(m.blocks().all(|b| b.is_ok()));
    m.free(a, Some(r.generation)).unwrap();
    m.free(c, Some(gc)).unwrap();
    settled(&m);
}

#[test]
fn shrinking_splits_the_tail_off_in_place() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let (a, ga) = alloc(&m, 10_000);
    let (c, gc) = alloc(&m, 64);
    fill(&m, a, 500, 1);
    let r = m.reallocate(a, ga, 500).unwrap();
    assert_eq!(r.kind, ResizeKind::Shrunk);
    assert_eq!(r.offset, a);
    assert!(holds(&m, a, 500, 1));
    let (_, size) = m.block_header(a).unwrap();
    assert_eq!(size, 512 + BLOCK_HEADER_SIZE);
    // A resize to the same class keeps the size but still renews the handle.
    let r2 = m.reallocate(a, r.generation, 510).unwrap();
    assert_eq!(r2.kind, ResizeKind::Unchanged);
    assert_ne!(r2.generation, r.generation);
    m.free(a, Some(r2.generation)).unwrap();
    m.free(c, Some(gc)).unwrap();
    settled(&m);
}

#[test]
fn a_boxed_in_block_moves_with_its_bytes_owner_and_state() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let (a, ga) = alloc(&m, 256);
    let (c, gc) = alloc(&m, 64);
    fill(&m, a, 256, 77);
    // A user state and the segment as owner survive the move.
    let (hdr, _) = m.block_header(a).unwrap();
    hdr.state.store(
        state::pack(ga, 0, state::USER_STATE_MIN + 3),
        std::sync::atomic::Ordering::Release,
    );
    let r = m.reallocate(a, ga, 4096).unwrap();
    assert_eq!(r.kind, ResizeKind::Moved);
    assert_ne!(r.offset, a);
    assert!(holds(&m, r.offset, 256, 77));
    let w = word(&m, r.offset);
    assert_eq!(state_of(w), state::USER_STATE_MIN + 3);
    assert_eq!(state::owner_of(w), 0);
    assert_eq!(generation_of(w), r.generation);
    // The old block is free.
    assert!(!state::is_live(state_of(word(&m, a))));
    m.free(r.offset, Some(r.generation)).unwrap();
    m.free(c, Some(gc)).unwrap();
    settled(&m);
}

#[test]
fn refused_resizes_change_nothing() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let (a, ga) = alloc(&m, 64);
    let before = word(&m, a);
    assert!(matches!(
        m.reallocate(a, ga, u64::MAX),
        Err(ReallocError::Alloc(_))
    ));
    assert!(matches!(
        m.reallocate(a, ga, 2 << 20),
        Err(ReallocError::Alloc(_))
    ));
    assert!(matches!(
        m.reallocate(a + 16, ga, 10),
        Err(ReallocError::Block(_))
    ));
    assert!(matches!(
        m.reallocate(a, ga + 1, 10),
        Err(ReallocError::Block(BlockError::Stale { .. }))
    ));
    // A block of another participant is not ours to resize.
    let (hdr, _) = m.block_header(a).unwrap();
    let theirs = state::with_owner(before, 7);
    hdr.state
        .store(theirs, std::sync::atomic::Ordering::Release);
    assert!(matches!(
        m.reallocate(a, ga, 1000),
        Err(ReallocError::NotOwner { owner: 7, .. })
    ));
    assert_eq!(word(&m, a), theirs);
    hdr.state
        .store(before, std::sync::atomic::Ordering::Release);
    // Out of memory for a move: the block stays as it was, handle and all.
    let (_b, _) = alloc(&m, 700_000);
    assert!(matches!(
        m.reallocate(a, ga, 400_000),
        Err(ReallocError::Alloc(_))
    ));
    assert_eq!(word(&m, a), before);
    m.free(a, Some(ga)).unwrap();
    // Freed: not live any more.
    assert!(matches!(
        m.reallocate(a, ga, 10),
        Err(ReallocError::Block(BlockError::NotLive { .. }))
    ));
}

#[test]
fn random_resizes_keep_every_byte_and_the_arena_whole() {
    let m = AtomicMatrix::anonymous(4 << 20).unwrap();
    let mut rng = fastrand::Rng::with_seed(12);
    let mut live: Vec<(u32, u64, usize, u8)> = Vec::new();
    let mut kinds = std::collections::HashMap::new();
    for step in 0..4000 {
        match rng.u32(0..10) {
            0..=3 => {
                let n = rng.usize(0..3000);
                if let Ok(p) = m.allocate(n as u64, 0) {
                    let off = p.offset() - BLOCK_HEADER_SIZE;
                    let seed = rng.u8(..);
                    fill(&m, off, n, seed);
                    live.push((off, generation_of(word(&m, off)), n, seed));
                }
            }
            4..=6 if !live.is_empty() => {
                let i = rng.usize(0..live.len());
                let (off, gen, n, seed) = live[i];
                let to = rng.usize(0..20_000);
                match m.reallocate(off, gen, to as u64) {
                    Ok(r) => {
                        let kept = n.min(to);
                        assert!(holds(&m, r.offset, kept, seed), "step {step}");
                        *kinds.entry(format!("{:?}", r.kind)).or_insert(0) += 1;
                        live[i] = (r.offset, r.generation, kept, seed);
                    }
                    Err(ReallocError::Alloc(_)) => assert_eq!(word(&m, off) >> 24, gen),
                    Err(e) => panic!("step {step}: {e}"),
                }
            }
            _ if !live.is_empty() => {
                let (off, gen, n, seed) = live.swap_remove(rng.usize(0..live.len()));
                assert!(holds(&m, off, n, seed), "step {step}");
                m.free(off, Some(gen)).unwrap();
            }
            _ => {}
        }
    }
    for (off, gen, n, seed) in live.drain(..) {
        assert!(holds(&m, off, n, seed));
        m.free(off, Some(gen)).unwrap();
    }
    settled(&m);
    for k in [
        "Shrunk",
        "GrownIntoWilderness",
        "GrownIntoNeighbour",
        "Moved",
    ] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "{k} never ran: {kinds:?}"
        );
    }
}

#[test]
fn the_chain_tiles_after_every_resize_among_large_fillers() {
    use matrix_core::OwnerId;
    let m = AtomicMatrix::anonymous(4 << 20).unwrap();
    let mut rng = fastrand::Rng::with_seed(1703);
    let mut kept = Vec::new();
    for _ in 0..12 {
        let (off, g) = alloc(&m, 64);
        m.set_owner(off, None, OwnerId::SEGMENT).unwrap();
        kept.push((off, g));
    }
    let mut filler = Vec::new();
    for round in 0..20_000u32 {
        if filler.len() < 24 {
            let n = if rng.bool() {
                rng.u64(40_000..90_000)
            } else {
                rng.u64(16..2000)
            };
            if let Ok(p) = m.allocate(n, 0) {
                filler.push(p.offset() - BLOCK_HEADER_SIZE);
            }
        }
        if rng.u32(0..3) == 0 && !filler.is_empty() {
            let off = filler.swap_remove(rng.usize(0..filler.len()));
            m.free(off, None).unwrap();
        }
        if round % 16 == 0 {
            m.flush_thread_cache();
        }
        let i = rng.usize(0..kept.len());
        let (off, g) = kept[i];
        let to = rng.u64(16..60_000);
        let r = m.reallocate(off, g, to);
        if let Ok(r) = &r {
            kept[i] = (r.offset, r.generation);
        }
        if let Some(Err(e)) = m.blocks().find(|b| b.is_err()) {
            panic!("round {round}: after {r:?} of {off}: {e}");
        }
    }
}
