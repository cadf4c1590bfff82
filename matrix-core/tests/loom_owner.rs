//! loom models of two live participants acting on the same block at once:
//! an adoption racing a free (into the index or into a thread cache), and
//! two adoptions. The owner and the state of a block are one word, so the
//! block must end up consistent: freed under the freer's name (or in the
//! index), or live under the adopter's — never freed under one name and
//! owned under another.
//!
//! `set_owner_from` (the adoption of a consumer that validated the header
//! first: one CAS from the word it read, else `set_owner_of` at that word's
//! generation) is modelled against everything else that can change a
//! segment-owned block's word while it is being adopted: a free followed
//! by a re-allocation of the same memory (a stale word), another adoption
//! from the segment, and a user-state change by a handle holder. Recovery
//! never reclaims a segment-owned block (the segment does not die), and a
//! resize gives a new generation, which the first model covers.
#![cfg(loom)]

mod loom_common;

use loom::sync::Arc;
use loom::thread;
use loom_common::{block_at, check};
use matrix_core::alloc::{allocate, free, retire, set_owner_from, set_owner_of};
use matrix_core::recover::recover;
use matrix_core::state::{self, ALLOCATED, CACHED, FREE};
use matrix_core::{Arena, ModelArena, OwnerId};

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

/// [`live_block`], handed to the segment by participant 1 (as a push
/// does), with the state word an adopter would have read.
fn segment_owned_block(arena: &ModelArena) -> (u32, u64, u64) {
    let (q, gen) = live_block(arena);
    set_owner_of(&arena.participant(1), q, Some(gen), None, OwnerId::SEGMENT).unwrap();
    (q, gen, word_of(arena, q))
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

fn word_of(arena: &ModelArena, q: u32) -> u64 {
    arena
        .participant(1)
        .header(q)
        .unwrap()
        .state
        .load(loom::sync::atomic::Ordering::SeqCst)
}

/// Participant 0 adopts `q` from a word it read before participant 2 frees
/// `q` and allocates again (which may hand out the same memory at a new
/// generation). The adoption may only ever take the block it read: if the
/// memory is live again at another generation, it is participant 2's.
#[test]
fn adopt_from_a_seen_word_racing_a_free_and_a_reallocation() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let (q, gen) = live_block(&arena);
        let seen = word_of(&arena, q);
        let freer = {
            let arena = arena.clone();
            thread::spawn(move || {
                let p2 = arena.participant(2);
                assert!(free(&p2, q, Some(gen)).is_ok());
                allocate(&p2, 16, 0).unwrap()
            })
        };
        let p0 = arena.participant(0);
        let hdr = p0.header(q).unwrap();
        let adopted = set_owner_from(&p0, hdr, q, seen, None, p0.owner()).is_ok();
        let again = freer.join().unwrap();
        check(&arena.participant(1));
        let word = word_of(&arena, q);
        if again == q {
            assert_ne!(state::generation_of(word), gen);
            assert_eq!(
                state::owner_of(word),
                arena.participant(2).owner().0,
                "the re-allocated block names another owner (adopted: {adopted})"
            );
        } else {
            assert_eq!(state::state_of(word), FREE, "adopted: {adopted}");
        }
    });
}

/// Two participants adopt the same segment-owned block from the same seen
/// word (what two consumers of one queue slot would do): exactly one gets
/// it, and the block names that one.
#[test]
fn two_adoptions_from_the_segment_one_wins() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let (q, gen, seen) = segment_owned_block(&arena);
        let other = {
            let arena = arena.clone();
            thread::spawn(move || {
                let p2 = arena.participant(2);
                let hdr = p2.header(q).unwrap();
                set_owner_from(&p2, hdr, q, seen, Some(OwnerId::SEGMENT), p2.owner()).is_ok()
            })
        };
        let p0 = arena.participant(0);
        let hdr = p0.header(q).unwrap();
        let mine = set_owner_from(&p0, hdr, q, seen, Some(OwnerId::SEGMENT), p0.owner()).is_ok();
        let theirs = other.join().unwrap();
        assert!(
            mine != theirs,
            "exactly one adoption (mine {mine}, theirs {theirs})"
        );
        let word = word_of(&arena, q);
        let winner = if mine {
            p0.owner()
        } else {
            arena.participant(2).owner()
        };
        assert_eq!(state::owner_of(word), winner.0);
        assert_eq!(state::state_of(word), ALLOCATED);
        assert_eq!(state::generation_of(word), gen);
    });
}

/// A handle holder moves the segment-owned block to a user state while
/// participant 0 adopts it from the word it read before: the adoption's CAS
/// from the old word fails and is judged again (same generation, live), so
/// it still succeeds, and the block keeps both changes.
#[test]
fn adopt_from_a_seen_word_racing_a_user_state_change() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let (q, gen, seen) = segment_owned_block(&arena);
        let marker = {
            let arena = arena.clone();
            thread::spawn(move || {
                let p2 = arena.participant(2);
                let hdr = p2.header(q).unwrap();
                let mut word = hdr.state.load(loom::sync::atomic::Ordering::Acquire);
                while let Err(actual) = hdr.state.compare_exchange(
                    word,
                    state::with_state(word, 60),
                    loom::sync::atomic::Ordering::Release,
                    loom::sync::atomic::Ordering::Acquire,
                ) {
                    word = actual;
                }
            })
        };
        let p0 = arena.participant(0);
        let hdr = p0.header(q).unwrap();
        let adopted = set_owner_from(&p0, hdr, q, seen, Some(OwnerId::SEGMENT), p0.owner());
        marker.join().unwrap();
        assert!(adopted.is_ok(), "{adopted:?}");
        let word = word_of(&arena, q);
        assert_eq!(state::owner_of(word), p0.owner().0);
        assert_eq!(state::state_of(word), 60);
        assert_eq!(state::generation_of(word), gen);
    });
}
