//! Threads exiting (their caches flushing) while the handle drops and
//! another participant recovers: a block a recovery reclaimed must never be
//! pushed again by a late flush.
//!
//! The slot is detached only by the attachment's own drop, which runs after
//! every thread cache that upgraded its weak reference to flush has let go;
//! until then the slot is ACTIVE and its lock held, so no recovery reclaims
//! the cached blocks. Before, the handle's drop detached the slot while a
//! thread was still flushing, a recovery reclaimed the cached blocks, and
//! the flush pushed them a second time.

use matrix_core::{AtomicMatrix, ScratchName, BLOCK_HEADER_SIZE};
use matrix_testkit::audit;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Barrier};

const ROUNDS: usize = 400;
const THREADS: usize = 16;
/// Blocks of each of 64 sizes a thread caches: many size classes, so its
/// exit flush takes a while and can be preempted mid-way.
const BLOCKS_PER_SIZE: usize = 3;

#[test]
fn thread_exit_flushes_racing_the_handle_drop_and_recover_never_list_a_block_twice() {
    for round in 0..ROUNDS {
        let name = ScratchName::new("exit-race");
        let a = Arc::new(AtomicMatrix::create(&name, 16 << 20).unwrap());
        let b = AtomicMatrix::open(&name).unwrap();
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(THREADS + 1);
        let mut recover_errors = Vec::new();
        std::thread::scope(|s| {
            let (b, stop, barrier) = (&b, &stop, &barrier);
            let recoverer = s.spawn(move || {
                let mut errors = Vec::new();
                while !stop.load(SeqCst) {
                    if let Err(e) = b.recover(false) {
                        errors.push(e);
                    }
                }
                errors
            });
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let a = a.clone();
                    s.spawn(move || {
                        // A failure still reaches the barrier, so the other
                        // threads are not left waiting; it is raised after.
                        let filled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            let blocks: Vec<_> = (0..BLOCKS_PER_SIZE * 64)
                                .map(|i| a.allocate(16 + 16 * (i % 64) as u64, 0).unwrap())
                                .collect();
                            // Freed into this thread's cache: CACHED, still ours.
                            for p in blocks {
                                a.free(p.offset() - BLOCK_HEADER_SIZE, None).unwrap();
                            }
                        }));
                        barrier.wait();
                        drop(a);
                        if let Err(panic) = filled {
                            std::panic::resume_unwind(panic);
                        }
                        // The thread's cache flushes as the thread exits.
                    })
                })
                .collect();
            barrier.wait();
            drop(a);
            let joined: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
            // Stopped before a worker's failure is raised: the recoverer
            // must end, or the scope would wait for it forever.
            stop.store(true, SeqCst);
            for j in joined {
                if let Err(panic) = j {
                    std::panic::resume_unwind(panic);
                }
            }
            recover_errors = recoverer.join().unwrap();
        });
        assert!(
            recover_errors.is_empty(),
            "round {round}: recover failed: {recover_errors:?}"
        );
        b.recover(false).unwrap();
        let found = audit(&b);
        assert!(
            found.violations.is_empty(),
            "round {round}: {} violation(s), first: {:?}",
            found.violations.len(),
            &found.violations[..found.violations.len().min(4)]
        );
    }
}
