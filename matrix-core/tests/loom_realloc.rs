//! loom models of `reallocate` racing the operations that touch the block
//! it absorbs: a grow into the free neighbour reads the neighbour's size,
//! then pops it from the bucket that size names; an allocator may split
//! the neighbour and free its front part (same bucket, smaller size) in
//! between. (The models pass with LOOM_MAX_PREEMPTIONS=2 and 3; the
//! schedule where the neighbour is split and re-freed between the size
//! check and the pop was not reached by them.)
#![cfg(loom)]

mod loom_common;

use loom::sync::atomic::Ordering::SeqCst;
use loom::sync::Arc;
use loom::thread;
use loom_common::check;
use matrix_core::alloc::{allocate, free};
use matrix_core::realloc::reallocate;
use matrix_core::state::{self, ACKED, ALLOCATED, FREE};
use matrix_core::{Arena, ModelArena};

/// `[B 48][N 1136 free][C 48]` and room for a move. 1136 and 1088 share the
/// bucket [1088, 1152) (64-byte classes above 1 KiB).
#[test]
fn a_grow_into_a_neighbour_racing_its_split_and_free_in_the_same_bucket() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(48 + 1136 + 48 + 1168 + 64));
        let p0 = arena.participant(0);
        let b = allocate(&p0, 16, 0).unwrap();
        let n = allocate(&p0, 1136 - 32, 0).unwrap();
        allocate(&p0, 16, 0).unwrap();
        free(&p0, n, None).unwrap();
        let gb = state::generation_of(p0.header(b).unwrap().state.load(SeqCst));
        arena.participant(1);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || {
                // An allocation of 1088 bytes: the neighbour is the head of
                // its own bucket; split, then freed into the same bucket.
                let p1 = arena.participant(1);
                let x = allocate(&p1, 1088 - 32, 0).unwrap();
                free(&p1, x, None).unwrap();
                x
            })
        };
        // need = 1168 - 48 = 1120: in (1088, 1136].
        let r = reallocate(&p0, b, gb, 1136, |_, _, _| {});
        let x = t.join().unwrap();
        assert!(
            x == n || x >= n + 1136 + 48,
            "the allocation took the neighbour or the wilderness: {x}"
        );
        assert!(r.is_ok(), "reallocate failed on a healthy segment: {r:?}");
        let chain = check(&p0);
        for &(offset, _, st) in &chain {
            assert!(
                st == FREE || st == ALLOCATED,
                "block {offset} left {} at quiescence (r = {r:?})",
                state::state_name(st)
            );
        }
        assert!(chain.iter().all(|b| b.2 != ACKED));
    });
}

/// Two participants resize the same segment-owned block at once: exactly
/// one holds it; the other is refused (the block is not live, or its
/// handle went stale), and the chain stays whole.
#[test]
fn two_reallocates_of_one_segment_block() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let p0 = arena.participant(0);
        let b = allocate(&p0, 64, 0).unwrap();
        matrix_core::alloc::set_owner(&p0, b, None, matrix_core::OwnerId::SEGMENT).unwrap();
        allocate(&p0, 16, 0).unwrap();
        let gb = state::generation_of(p0.header(b).unwrap().state.load(SeqCst));
        arena.participant(1);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || {
                reallocate(&arena.participant(1), b, gb, 16, |_, _, _| {}).is_ok()
            })
        };
        let a = reallocate(&p0, b, gb, 32, |_, _, _| {}).is_ok();
        let other = t.join().unwrap();
        assert!(a || other, "neither resize took the block");
        assert!(
            !(a && other),
            "both resizes took one generation of the block"
        );
        let chain = check(&p0);
        let blk = chain
            .iter()
            .find(|c| c.0 == b)
            .expect("the block stays at its offset");
        assert_eq!(blk.2, ALLOCATED);
        let w = p0.header(b).unwrap().state.load(SeqCst);
        assert_eq!(state::owner_of(w), 0, "handed back to the segment");
    });
}
