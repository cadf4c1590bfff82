//! Helpers shared by this crate's integration tests.
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
