//! Helpers shared by the handler integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// A unique segment name that is unlinked when the guard drops (also on panic).
pub struct SegmentGuard(pub String);

impl SegmentGuard {
    pub fn new(test: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        SegmentGuard(format!("matrix-test-{}-{}-{}", std::process::id(), n, test))
    }
    pub fn name(&self) -> &str {
        &self.0
    }
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/dev/shm").join(&self.0)
    }
}

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

use matrix_core::free_index::bucket_offsets;
use matrix_core::size_class::{SizeClass, FL_COUNT, SL_COUNT};
use matrix_core::state::FREE;
use matrix_handler::HandlerFunctions;
use std::collections::HashSet;

/// At quiescence: the chain tiles the arena up to the wilderness, and the
/// free index holds exactly the FREE blocks, each once.
pub fn assert_consistent(h: &impl HandlerFunctions) {
    let m = h.matrix();
    let mut end = m.first_block_offset();
    let mut free_in_chain = HashSet::new();
    for info in m.blocks() {
        let info = info.expect("chain walk");
        assert_eq!(info.offset, end, "gap or overlap at {end}");
        end = info.offset + info.size;
        if info.state == FREE {
            free_in_chain.insert(info.offset);
        }
    }
    let top = m.header().top.load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(end, top, "chain does not end at top");
    let mut listed = HashSet::new();
    for fl in 0..FL_COUNT {
        for sl in 0..SL_COUNT {
            for off in bucket_offsets(m, SizeClass { fl, sl }, 1 << 24) {
                assert!(listed.insert(off), "block {off} listed twice");
            }
        }
    }
    assert_eq!(listed, free_in_chain, "free index and FREE blocks differ");
}
