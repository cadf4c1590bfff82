//! Block walks: counts agree with stats(), state selection, typed handles,
//! and a seeded corrupt chain ends the walk with an error.

use matrix_handler::{HandlerFunctions, MatrixHandler, STATE_ALLOCATED, STATE_FREE};
use matrix_internals::iter::{self, totals_in_state, typed_in_state};
use std::sync::atomic::{AtomicU32, Ordering};

#[test]
fn counts_match_stats_and_states_select() {
    let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut quotes = Vec::new();
    let mut raws = Vec::new();
    for i in 0..300u64 {
        let mut b = h.allocate::<[u64; 2]>().unwrap();
        h.write_pod(&mut b, [i, 0]).unwrap();
        quotes.push(b);
        raws.push(h.allocate_raw(rng.u32(16..700)).unwrap());
    }
    // Every third quote goes to user state 112, every fifth raw block is freed.
    for b in quotes.iter().step_by(3) {
        h.set_state(b, 112).unwrap();
    }
    for p in raws.iter().step_by(5) {
        h.free_raw(*p).unwrap();
    }
    h.consolidate().unwrap();
    let stats = h.stats().unwrap();
    let sums = iter::sum_by_state(&h).unwrap();
    let counts: std::collections::BTreeMap<u32, u64> =
        sums.iter().map(|(s, t)| (*s, t.blocks)).collect();
    assert_eq!(counts, stats.blocks_by_state);
    let used: u64 = sums
        .iter()
        .filter(|(s, _)| **s != STATE_FREE)
        .map(|(_, t)| t.bytes)
        .sum();
    assert_eq!(used, stats.used_bytes);
    let walked = iter::blocks(&h).count() as u64;
    assert_eq!(
        walked,
        stats.used_blocks + stats.free_blocks - (stats.wilderness_bytes > 0) as u64
    );

    let in_112: Vec<_> = iter::in_state(&h, 112).collect::<Result<_, _>>().unwrap();
    assert_eq!(in_112.len(), 100);
    assert_eq!(totals_in_state(&h, 112).unwrap().blocks, 100);
    assert!(in_112
        .iter()
        .all(|b| b.state == 112 && b.owner == h.matrix().owner_id()));
    let typed: Vec<_> = typed_in_state::<[u64; 2], _>(&h, 112)
        .collect::<Result<_, _>>()
        .unwrap();
    let mut firsts: Vec<u64> = typed.iter().map(|b| h.read_pod(b).unwrap()[0]).collect();
    firsts.sort();
    assert_eq!(firsts, (0..300).step_by(3).collect::<Vec<_>>());
    // The other quotes are still ALLOCATED and typed; raw blocks are untyped.
    assert_eq!(
        typed_in_state::<[u64; 2], _>(&h, STATE_ALLOCATED).count(),
        200
    );
    let owned = iter::owned_by(&h, h.matrix().owner_id()).count();
    assert_eq!(owned as u64, stats.used_blocks);
}

/// Scribbles on a header's `size` and `check` words.
type Damage = dyn FnOnce(&AtomicU32, &AtomicU32);

/// Walks a fresh arena of ten blocks after `damage` scribbles on block 5's header.
/// Also says whether `sum_by_state` reported the damage.
fn walk_after(
    damage: impl FnOnce(&AtomicU32, &AtomicU32),
) -> (Vec<Result<u32, iter::WalkError>>, bool) {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let blocks: Vec<_> = (0..10).map(|_| h.allocate_raw(100).unwrap()).collect();
    let header = (blocks[5].offset() - 32) as usize;
    // SAFETY: the arena is private to this test; the header of a live block
    // we own, whose `size` word is at +8 and `check` word at +24 (layout
    // pinned by matrix-core); both are u32 atomics.
    let (size, check) = unsafe {
        let base = h.base_ptr().add(header);
        (
            &*(base.add(8) as *const AtomicU32),
            &*(base.add(24) as *const AtomicU32),
        )
    };
    damage(size, check);
    (
        iter::blocks(&h).map(|r| r.map(|b| b.offset)).collect(),
        iter::sum_by_state(&h).is_err(),
    )
}

#[test]
fn a_corrupt_chain_ends_the_walk_with_an_error() {
    let cases: [(&str, Box<Damage>); 4] = [
        (
            "zero size",
            Box::new(|size, _| size.store(0, Ordering::Relaxed)),
        ),
        (
            "unaligned size",
            Box::new(|size, _| size.store(141, Ordering::Relaxed)),
        ),
        (
            "size past the end",
            Box::new(|size, _| size.store(u32::MAX - 15, Ordering::Relaxed)),
        ),
        (
            "clobbered check word",
            Box::new(|_, check| check.store(0, Ordering::Relaxed)),
        ),
    ];
    for (what, damage) in cases {
        let (walked, sum_failed) = walk_after(damage);
        assert!(sum_failed, "{what}: sum_by_state reports the damage");
        let ok = walked.iter().take_while(|r| r.is_ok()).count();
        assert!(ok <= 6, "{what}: walked {ok} blocks past the damage");
        let last = walked.last().unwrap();
        let err = last.as_ref().expect_err(what);
        assert_eq!(err.blocks_seen as usize, ok, "{what}");
        assert_eq!(walked.len(), ok + 1, "{what}: the walk stops at the error");
    }
    // A size that skips into the middle of a payload lands on no header.
    let (walked, _) = walk_after(|size, _| size.store(48, Ordering::Relaxed));
    assert!(walked.last().unwrap().is_err());
}
