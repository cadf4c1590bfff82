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

/// A resize's hold records the owner and state to hand the block back to
/// *before* its CAS on the state word, when it does not hold the block yet.
/// A resizer whose judged word went stale (here: the block was adopted
/// meanwhile, which keeps the generation) must not be able to change the
/// record of the participant that does hold the block: if that holder then
/// dies (crash point REALLOC_HELD, right after the hold), recovery must
/// reclaim the block of the dead adopter, not hand it to the segment.
/// (When the record lived in the block's `reserved` word, the stale
/// resizer's store landed over the holder's and this failed.) Participant
/// 1's hold is spelled out with the same two stores `realloc::hold` makes
/// (the resize intent in its own entry, then the CAS), since a model cannot
/// kill a thread inside a call.
#[test]
fn a_stale_resizer_never_rewrites_the_record_of_the_block_s_holder() {
    use matrix_core::realloc::resize_intent;
    use matrix_core::state::RESIZING;
    use matrix_core::OwnerId;
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let p0 = arena.participant(0);
        let b = allocate(&p0, 64, 0).unwrap();
        allocate(&p0, 16, 0).unwrap();
        matrix_core::alloc::set_owner(&p0, b, None, OwnerId::SEGMENT).unwrap();
        let gb = state::generation_of(p0.header(b).unwrap().state.load(SeqCst));
        arena.participant(1);
        arena.participant(2);
        let stale = {
            let arena = arena.clone();
            thread::spawn(move || {
                // Same size: an in-place resize that changes only the generation.
                let _ = reallocate(&arena.participant(2), b, gb, 64, |_, _, _| {});
            })
        };
        let holder = {
            let arena = arena.clone();
            thread::spawn(move || {
                let p1 = arena.participant(1);
                let me = p1.owner().0;
                if matrix_core::alloc::set_owner(&p1, b, Some(OwnerId::SEGMENT), p1.owner())
                    .is_err()
                {
                    return false;
                }
                let hdr = p1.header(b).unwrap();
                let word = state::pack(gb, me, ALLOCATED);
                p1.my_slot().unwrap().carve_intents[0]
                    .store(resize_intent(b, me, ALLOCATED), SeqCst);
                hdr.state
                    .compare_exchange(
                        word,
                        state::pack(gb, me, RESIZING),
                        loom::sync::atomic::Ordering::AcqRel,
                        loom::sync::atomic::Ordering::Acquire,
                    )
                    .is_ok()
            })
        };
        stale.join().unwrap();
        let held = holder.join().unwrap();
        if !held {
            return;
        }
        // Participant 1 dies holding the block; participant 0 recovers.
        arena.kill(1);
        matrix_core::recover::recover(&p0, false).unwrap();
        let chain = check(&p0);
        let blk = chain
            .iter()
            .find(|c| c.0 == b)
            .expect("the block is in the chain");
        assert_eq!(
            blk.2,
            FREE,
            "the dead adopter's block was handed to owner {} instead of being reclaimed",
            state::owner_of(p0.header(b).unwrap().state.load(SeqCst))
        );
    });
}

/// The control of the model above, without the stale resizer: a
/// participant that adopted a block and died holding it for a resize gets
/// it reclaimed by a recovery running while another participant frees and
/// allocates.
#[test]
fn a_dead_resizer_s_adopted_block_is_reclaimed() {
    use matrix_core::realloc::resize_intent;
    use matrix_core::state::RESIZING;
    use matrix_core::OwnerId;
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let p0 = arena.participant(0);
        let b = allocate(&p0, 64, 0).unwrap();
        let c = allocate(&p0, 16, 0).unwrap();
        matrix_core::alloc::set_owner(&p0, b, None, OwnerId::SEGMENT).unwrap();
        let gb = state::generation_of(p0.header(b).unwrap().state.load(SeqCst));
        let p1 = arena.participant(1);
        let me = p1.owner().0;
        matrix_core::alloc::set_owner(&p1, b, Some(OwnerId::SEGMENT), p1.owner()).unwrap();
        let hdr = p1.header(b).unwrap();
        p1.my_slot().unwrap().carve_intents[0].store(resize_intent(b, me, ALLOCATED), SeqCst);
        hdr.state.store(state::pack(gb, me, RESIZING), SeqCst);
        arena.kill(1);
        arena.participant(2);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || {
                let p2 = arena.participant(2);
                free(&p2, c, None).unwrap();
                allocate(&p2, 16, 0).unwrap();
            })
        };
        matrix_core::recover::recover(&p0, false).unwrap();
        t.join().unwrap();
        let chain = check(&p0);
        let blk = chain
            .iter()
            .find(|x| x.0 == b)
            .expect("the block is in the chain");
        assert_eq!(blk.2, FREE, "the dead resizer's own block is reclaimed");
    });
}

/// Two threads of one participant resize one block at once while it
/// changes hands under them: thread A adopts the segment-owned block and
/// resizes it; thread B resizes it with the word it judged before the
/// adoption (owner: the segment). At most one hold wins; then the
/// participant dies right there, every intent entry left as it was — the
/// loser's record too, which names the same block with another owner.
/// Recovery must hand the block to what the *winner* recorded: reclaimed
/// (FREE) if it was the participant's own, back to the segment
/// (ALLOCATED) if it was the segment's.
#[test]
fn two_intent_entries_naming_one_block_recover_to_the_winner_s_record() {
    use matrix_core::realloc::hold_and_leave;
    use matrix_core::OwnerId;
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let p0 = arena.participant(0);
        let b = allocate(&p0, 64, 0).unwrap();
        allocate(&p0, 16, 0).unwrap();
        matrix_core::alloc::set_owner(&p0, b, None, OwnerId::SEGMENT).unwrap();
        let gb = state::generation_of(p0.header(b).unwrap().state.load(SeqCst));
        let me = arena.participant(1).owner().0;
        let a = {
            let arena = arena.clone();
            thread::spawn(move || {
                let p1 = arena.participant(1);
                matrix_core::alloc::set_owner(&p1, b, Some(OwnerId::SEGMENT), p1.owner()).ok()?;
                hold_and_leave(&p1, b, gb).ok()
            })
        };
        let b_won = hold_and_leave(&arena.participant(1), b, gb).ok();
        let a_won = a.join().unwrap();
        assert!(a_won.is_none() || b_won.is_none(), "two holds of one block");
        let w = p0.header(b).unwrap().state.load(SeqCst);
        // Who the block belongs to if nobody holds it: the last owner.
        let owner_before = a_won.or(b_won).map_or(state::owner_of(w), |(o, _)| o);
        arena.kill(1);
        matrix_core::recover::recover(&p0, false).unwrap();
        let chain = check(&p0);
        let blk = chain
            .iter()
            .find(|c| c.0 == b)
            .expect("the block is in the chain");

        let w = p0.header(b).unwrap().state.load(SeqCst);
        if owner_before == me {
            assert_eq!(blk.2, FREE, "the dead participant's block is reclaimed");
        } else {
            assert_eq!(owner_before, OwnerId::SEGMENT.0);
            assert_eq!(blk.2, ALLOCATED, "the segment's block is kept");
            assert_eq!(state::owner_of(w), OwnerId::SEGMENT.0);
        }
    });
}

/// Two threads of one participant resize one block of theirs through two
/// handles of the same generation (one keeps the size, one shrinks it):
/// exactly one succeeds, the other is refused (the block is being resized,
/// or its handle went stale), and the chain stays whole. Siblings see each
/// other's tentative records; the one whose intent entry comes later in
/// the slot steps back, the other waits for that and goes on. (When both
/// stepped back, this failed with both refused as `NotLive`: the schedule
/// needs 3 preemptions, hence the bound.)
#[test]
fn two_sibling_threads_resizing_one_block_have_exactly_one_winner() {
    loom_common::model_with_preemptions(3, || {
        let arena = Arc::new(ModelArena::new(512));
        let p1 = arena.participant(1);
        let b = allocate(&p1, 64, 0).unwrap();
        allocate(&p1, 16, 0).unwrap();
        let gb = state::generation_of(p1.header(b).unwrap().state.load(SeqCst));
        let t = {
            let arena = arena.clone();
            thread::spawn(move || reallocate(&arena.participant(1), b, gb, 64, |_, _, _| {}))
        };
        let a = reallocate(&arena.participant(1), b, gb, 16, |_, _, _| {});
        let other = t.join().unwrap();
        assert!(
            a.is_ok() != other.is_ok(),
            "two sibling resizes of one block: {a:?} and {other:?}; exactly one must succeed"
        );
        let chain = check(&p1);
        let blk = chain
            .iter()
            .find(|c| c.0 == b)
            .expect("the block stays at its offset");
        assert_eq!(blk.2, ALLOCATED);
    });
}
