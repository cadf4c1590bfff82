//! loom model of a thread's exit-time cache flush racing its participant's
//! detach and another participant's recovery. The attachment detaches in
//! its own `Drop`, which runs only after every flusher has let go of it, so
//! the flush always comes before the detach; a recovery that sees the slot
//! DETACHED then finds the cached blocks already back in the index. The
//! opposite order — the bug this ordering fixed — pushes a block twice, and
//! the second model shows the check catches it.
#![cfg(loom)]

mod loom_common;

use loom::sync::Arc;
use loom::thread;
use loom_common::check;
use matrix_core::alloc::{allocate, release_block, retire};
use matrix_core::participant::detach_slot;
use matrix_core::recover::recover;
use matrix_core::state::{CACHED, FREE};
use matrix_core::{Arena, ModelArena};

/// Participant 1 holds `q` in its thread cache (CACHED, owned by it) and a
/// live neighbour; returns the arena and `q`.
fn cached_block() -> (Arc<ModelArena>, u32) {
    let arena = Arc::new(ModelArena::new(512));
    let p1 = arena.participant(1);
    let q = allocate(&p1, 16, 0).unwrap();
    allocate(&p1, 16, 0).unwrap();
    arena.participant(0);
    retire(&p1, q, None, CACHED).unwrap();
    (arena, q)
}

/// The exiting thread's flush of `q`, then (or before it) the detach.
fn exit_and_detach(arena: &ModelArena, q: u32, flush_first: bool) {
    let p1 = arena.participant(1);
    let flush = || {
        let hdr = p1.header(q).unwrap();
        let size = hdr.size.load(loom::sync::atomic::Ordering::Relaxed);
        release_block(&p1, hdr, q, size);
    };
    let detach = || assert!(detach_slot(p1.segment().participant(1).unwrap(), 0));
    if flush_first {
        flush();
        detach();
    } else {
        detach();
        flush();
    }
}

fn race(flush_first: bool) {
    loom_common::model(move || {
        let (arena, q) = cached_block();
        let t = {
            let arena = arena.clone();
            thread::spawn(move || exit_and_detach(&arena, q, flush_first))
        };
        let report = recover(&arena.participant(0), false).unwrap();
        t.join().unwrap();
        // Listed exactly once (the checker rejects a block listed twice);
        // free, or merged into a free run by the recovery's drain.
        let chain = check(&arena.participant(0));
        if let Some(b) = chain.iter().find(|b| b.0 == q) {
            assert_eq!(b.2, FREE, "{report:?}");
        }
    });
}

#[test]
fn a_flush_before_the_detach_never_meets_a_recovery_of_its_blocks() {
    race(true);
}

#[test]
// Fails as a block listed twice, or a list entry that a merge absorbed:
// either way the checker panics.
#[should_panic]
fn a_detach_before_the_flush_would_push_a_cached_block_twice() {
    race(false);
}
