//! loom models of the participant slot word: every transition is one CAS
//! from the exact word that was judged, so two recoverers never both take
//! one slot, and a recoverer that judged a slot before it was recovered and
//! claimed again never reclaims the new holder's blocks.
#![cfg(loom)]

mod loom_common;

use loom::sync::atomic::Ordering::SeqCst;
use loom::sync::Arc;
use loom::thread;
use loom_common::{block_at, check};
use matrix_core::alloc::allocate;
use matrix_core::layout::slot_state;
use matrix_core::recover::recover;
use matrix_core::state::{ALLOCATED, FREE};
use matrix_core::{Arena, ModelArena, OwnerId};

/// Two live participants (0 and 2) recover the dead participant 1 at once:
/// exactly one of them takes the slot, its block is returned once, and the
/// slot ends EMPTY.
#[test]
fn two_recoverers_of_one_dead_slot() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let q = allocate(&arena.participant(1), 16, 0).unwrap();
        allocate(&arena.participant(0), 16, 0).unwrap();
        arena.participant(2);
        arena.kill(1);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || recover(&arena.participant(2), false).unwrap())
        };
        let mine = recover(&arena.participant(0), false).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(
            mine.participants + theirs.participants,
            1,
            "{mine:?} {theirs:?}"
        );
        assert_eq!(mine.blocks + theirs.blocks, 1, "{mine:?} {theirs:?}");
        let p0 = arena.participant(0);
        let chain = check(&p0);
        assert_eq!(block_at(&chain, q).2, FREE);
        assert_eq!(
            p0.segment().participant(1).unwrap().state(SeqCst),
            slot_state::EMPTY
        );
    });
}

/// Participant 1 detached. Participant 2 recovers it, then a new live
/// participant claims a slot (slot 1 itself if it is EMPTY by then) and
/// allocates; meanwhile participant 0 recovers too. Whatever participant 0
/// judged, it never reclaims the new participant's block.
#[test]
fn recover_racing_a_new_claim_of_the_slot() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let p1 = arena.participant(1);
        let q = allocate(&p1, 16, 0).unwrap();
        allocate(&arena.participant(0), 16, 0).unwrap();
        arena.participant(2);
        arena.detach(&p1);
        drop(p1);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || {
                let first = recover(&arena.participant(2), false).unwrap();
                let fresh = arena.claim().expect("a slot is free");
                let r = allocate(&fresh, 16, 0).unwrap();
                (first, fresh.owner(), r)
            })
        };
        let mine = recover(&arena.participant(0), false).unwrap();
        let (theirs, fresh, r) = t.join().unwrap();
        assert_eq!(
            mine.participants + theirs.participants,
            1,
            "{mine:?} {theirs:?}"
        );
        let p0 = arena.participant(0);
        let chain = check(&p0);
        if r != q {
            // (The new participant may have been handed q itself, once free.)
            assert_eq!(block_at(&chain, q).2, FREE);
        }
        assert_eq!(
            block_at(&chain, r).2,
            ALLOCATED,
            "the new participant's block was reclaimed ({mine:?})"
        );
        let owner = matrix_core::state::owner_of(p0.header(r).unwrap().state.load(SeqCst));
        assert_eq!(OwnerId(owner), fresh);
    });
}
