//! Per-thread caches: accounting, flushing, double frees, fork safety.

use matrix_core::state::CACHED;
use matrix_core::{AtomicMatrix, BlockError};
use std::sync::Arc;

#[test]
fn cached_blocks_count_as_free_and_come_back_at_thread_exit() {
    let m = Arc::new(AtomicMatrix::anonymous(4 << 20).unwrap());
    let worker = {
        let m = m.clone();
        std::thread::spawn(move || {
            let blocks: Vec<_> = (0..20).map(|_| m.allocate(100, 0).unwrap()).collect();
            for p in &blocks {
                m.free(p.offset() - 32, None).unwrap();
            }
            let s = m.stats().unwrap();
            assert_eq!(s.used_bytes, 0);
            assert!(
                s.cached_bytes > 0,
                "freed blocks sit in this thread's cache"
            );
            let cached = m
                .blocks()
                .filter(|b| b.as_ref().unwrap().state == CACHED)
                .count();
            assert_eq!(cached, 20);
        })
    };
    worker.join().unwrap();
    let s = m.stats().unwrap();
    assert_eq!(s.cached_bytes, 0, "thread exit flushes its cache");
    m.consolidate().unwrap();
    assert_eq!(m.stats().unwrap().free_blocks, 1);
}

#[test]
fn a_cached_block_cannot_be_freed_twice() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let p = m.allocate(64, 0).unwrap();
    m.free(p.offset() - 32, None).unwrap();
    assert_eq!(
        m.free(p.offset() - 32, None),
        Err(BlockError::DoubleFree {
            offset: p.offset() - 32
        })
    );
    // The next allocation of that size reuses it with a new generation.
    let q = m.allocate(64, 0).unwrap();
    assert_eq!(p, q);
}

#[test]
fn caches_stay_bounded_in_a_small_arena() {
    let m = AtomicMatrix::anonymous(256 << 10).unwrap();
    let blocks: Vec<_> = (0..400).map(|_| m.allocate(200, 0).unwrap()).collect();
    for p in blocks {
        m.free(p.offset() - 32, None).unwrap();
    }
    let s = m.stats().unwrap();
    assert!(
        s.cached_bytes <= s.total_bytes / 32,
        "{} cached of {}",
        s.cached_bytes,
        s.total_bytes
    );
}

#[test]
fn a_forked_child_does_not_reuse_the_parents_cached_blocks() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let p = m.allocate(64, 0).unwrap();
    m.free(p.offset() - 32, None).unwrap();
    // SAFETY: the child only allocates from the (MAP_SHARED anonymous)
    // arena, compares, and _exits without unwinding or running destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let q = m.allocate(64, 0);
        let code = match q {
            Ok(q) if q != p => 0,
            _ => 1,
        };
        // SAFETY: end the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child reused a cached block"
    );
    assert_eq!(
        m.allocate(64, 0).unwrap(),
        p,
        "the parent still has its cached block"
    );
}
