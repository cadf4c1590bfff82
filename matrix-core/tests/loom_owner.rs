//! loom models of two live participants acting on the same block at once:
//! an adoption racing a free (into the index or into a thread cache), and
//! two adoptions. The owner and the state of a block are one word, so the
//! block must end up consistent: freed under the freer's name (or in the
//! index), or live under the adopter's — never freed under one name and
//! owned under another.
#![cfg(loom)]

mod loom_common;

use loom::sync::Arc;
use loom::thread;
use loom_common::{block_at, check};
use matrix_core::alloc::{allocate, free, retire, set_owner_of};
use matrix_core::recover::recover;
use matrix_core::state::{self, ALLOCATED, CACHED, FREE};
use matrix_core::{Arena, ModelArena};

/// Participant 1 allocates `q` (plus a neighbour so the chain does not end
/// at `q`); returns `q` and its generation.
fn live_block(arena: &ModelArena) -> (u32, u64) {
    let p1 = arena.participant(1);
    let q = allocate(&p1, 16, 0).unwrap();
    allocate(&p1, 16, 0).unwrap();
    arena.participant(0);
    arena.participant(2);
    let word = p1
        .header(q)
        .unwrap()
        .state
        .load(loom::sync::atomic::Ordering::SeqCst);
    (q, state::generation_of(word))
}

/// Participant 2 frees `q` into its thread cache while participant 0 adopts
/// it; then the adopter dies and participant 1 recovers. The block must stay
/// in the cache under participant 2's name: the recovery of the adopter
/// never returns a block someone else holds.
#[test]
fn adopt_racing_a_free_into_a_thread_cache() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let (q, gen) = live_block(&arena);
        let freer = {
            let arena = arena.clone();
            thread::spawn(move || retire(&arena.participant(2), q, Some(gen), CACHED).is_ok())
        };
        let p0 = arena.participant(0);
        let adopted = set_owner_of(&p0, q, Some(gen), None, p0.owner()).is_ok();
        let cached = freer.join().unwrap();
        assert!(cached, "the free of a live block must succeed");
        arena.kill(0);
        recover(&arena.participant(1), false).unwrap();
        let p1 = arena.participant(1);
        let chain = check(&p1);
        let word = p1
            .header(q)
            .unwrap()
            .state
            .load(loom::sync::atomic::Ordering::SeqCst);
        assert_eq!(block_at(&chain, q).2, CACHED, "adopted: {adopted}");
        assert_eq!(
            state::owner_of(word),
            arena.participant(2).owner().0,
            "cached block owned by someone else (adopted: {adopted})"
        );
    });
}

/// Participant 2 frees `q` into the index while participant 0 adopts it:
/// either the block is FREE (once in the index) or the adoption lost.
#[test]
fn adopt_racing_a_free_into_the_index() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let (q, gen) = live_block(&arena);
        let freer = {
            let arena = arena.clone();
            thread::spawn(move || free(&arena.participant(2), q, Some(gen)).is_ok())
        };
        let p0 = arena.participant(0);
        let _ = set_owner_of(&p0, q, Some(gen), None, p0.owner());
        assert!(freer.join().unwrap());
        let chain = check(&arena.participant(1));
        assert_eq!(block_at(&chain, q).2, FREE);
    });
}

/// Two participants adopt the same block: both may succeed one after the
/// other, the block stays ALLOCATED and names one of them.
#[test]
fn two_adoptions_of_one_block() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let (q, gen) = live_block(&arena);
        let other = {
            let arena = arena.clone();
            thread::spawn(move || {
                let p2 = arena.participant(2);
                set_owner_of(&p2, q, Some(gen), None, p2.owner()).is_ok()
            })
        };
        let p0 = arena.participant(0);
        let mine = set_owner_of(&p0, q, Some(gen), None, p0.owner()).is_ok();
        assert!(other.join().unwrap() && mine);
        let chain = check(&arena.participant(1));
        assert_eq!(block_at(&chain, q).2, ALLOCATED);
        let owner = state::owner_of(
            p0.header(q)
                .unwrap()
                .state
                .load(loom::sync::atomic::Ordering::SeqCst),
        );
        assert!(owner == p0.owner().0 || owner == arena.participant(2).owner().0);
    });
}
