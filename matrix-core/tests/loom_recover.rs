//! loom models of online recovery racing live participants that touch a
//! block owned by the dead participant: freeing it (into the index or into
//! a thread cache) and adopting it. The block must end up in exactly one
//! place: returned once, or held by the live participant.
#![cfg(loom)]

mod loom_common;

use loom::sync::Arc;
use loom::thread;
use loom_common::{block_at, check};
use matrix_core::alloc::{allocate, free};
use matrix_core::recover::recover;
use matrix_core::state::FREE;
use matrix_core::ModelArena;

/// Participant 1 allocates `q` and dies; participant 0 keeps a block so the
/// chain does not end at `q`. Returns `q`.
fn dead_owner_block(arena: &ModelArena) -> u32 {
    let q = allocate(&arena.participant(1), 16, 0).unwrap();
    allocate(&arena.participant(0), 16, 0).unwrap();
    arena.participant(2);
    arena.kill(1);
    q
}

/// Participant 2 received `q` and frees it while participant 0 recovers.
#[test]
fn recover_racing_a_free_of_the_dead_participants_block() {
    loom_common::model(|| {
        let arena = Arc::new(ModelArena::new(512));
        let q = dead_owner_block(&arena);
        let t = {
            let arena = arena.clone();
            thread::spawn(move || free(&arena.participant(2), q, None))
        };
        let report = recover(&arena.participant(0), false).unwrap();
        let freed = t.join().unwrap();
        assert_eq!(report.participants, 1);
        // Returned exactly once (the checker rejects a double push).
        let chain = check(&arena.participant(0));
        assert_eq!(block_at(&chain, q).2, FREE, "free: {freed:?}, report: {report:?}");
    });
}
