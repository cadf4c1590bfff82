//! loom models of online recovery racing live participants that touch a
//! block owned by the dead participant: freeing it (into the index or into
//! a thread cache) and adopting it. The block must end up in exactly one
//! place: returned once, or held by the live participant.
#![cfg(loom)]

mod loom_common;

use loom::sync::Arc;
use loom::thread;
use loom_common::{block_at, check};
use matrix_core::alloc::{allocate, free, retire, set_owner};
use matrix_core::recover::recover;
use matrix_core::state::{owner_of as state_word_owner, ALLOCATED, CACHED, FREE};
use matrix_core::{Arena, ModelArena, OwnerId};

/// Participant 1 allocates `q` and dies; participant 0 keeps a block so the
/// chain does not end at `q`. Returns `q`.
fn dead_owner_block(arena: &ModelArena) -> u32 {
    let q = allocate(&arena.participant(1), 16, 0).unwrap();
    allocate(&arena.participant(0), 16, 0).unwrap();
    arena.participant(2);
    arena.kill(1);
    q
}

/// Runs `op` as participant 2 on the dead participant's block `q` while
/// participant 0 recovers; returns the arena, `q`, the recovery report and
/// what `op` returned.
fn race_with_recovery<R: Send + 'static>(
    op: fn(&matrix_core::ModelView<'_>, u32) -> R,
) -> (Arc<ModelArena>, u32, matrix_core::RecoveryReport, R) {
    let arena = Arc::new(ModelArena::new(512));
    let q = dead_owner_block(&arena);
    let t = {
        let arena = arena.clone();
        thread::spawn(move || op(&arena.participant(2), q))
    };
    let report = recover(&arena.participant(0), false).unwrap();
    let result = t.join().unwrap();
    (arena, q, report, result)
}

/// Participant 2 received `q` and frees it while participant 0 recovers.
#[test]
fn recover_racing_a_free_of_the_dead_participants_block() {
    loom_common::model(|| {
        let (arena, q, report, freed) = race_with_recovery(|p2, q| free(p2, q, None));
        assert_eq!(report.participants, 1);
        // Returned exactly once (the checker rejects a double push).
        let chain = check(&arena.participant(0));
        assert_eq!(
            block_at(&chain, q).2,
            FREE,
            "free: {freed:?}, report: {report:?}"
        );
    });
}

/// The thread-cache path: participant 2 retires `q` into its cache (CACHED)
/// while participant 0 recovers. Either participant 2 holds it (CACHED,
/// owned by 2, in no list) or recovery returned it; never both.
#[test]
fn recover_racing_a_free_into_a_thread_cache() {
    loom_common::model(|| {
        let (arena, q, _, held) =
            race_with_recovery(|p2, q| retire(p2, q, None, CACHED).map(|_| true));
        let p0 = arena.participant(0);
        let chain = check(&p0);
        let hdr = p0.header(q).unwrap();
        let owner = state_word_owner(hdr.state.load(loom::sync::atomic::Ordering::SeqCst));
        match held {
            Ok(true) => {
                assert_eq!(
                    block_at(&chain, q).2,
                    CACHED,
                    "held by the cache but not CACHED"
                );
                assert_eq!(
                    OwnerId(owner),
                    arena.participant(2).owner(),
                    "cached under another owner"
                );
            }
            _ => assert_eq!(block_at(&chain, q).2, FREE, "{held:?}"),
        }
    });
}

/// Participant 2 adopts `q` while participant 0 recovers: either the adopt
/// wins (q stays ALLOCATED, owned by 2) or recovery does (q is FREE and the
/// adopt is refused); recovery never frees a block someone adopted.
#[test]
fn recover_racing_an_adopt() {
    loom_common::model(|| {
        let (arena, q, _, adopted) = race_with_recovery(|p2, q| set_owner(p2, q, None, p2.owner()));
        let chain = check(&arena.participant(0));
        match adopted {
            Ok(_) => assert_eq!(block_at(&chain, q).2, ALLOCATED, "adopted, then reclaimed"),
            Err(_) => assert_eq!(block_at(&chain, q).2, FREE),
        }
    });
}
