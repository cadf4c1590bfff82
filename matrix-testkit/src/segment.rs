//! Unique segment names that clean up after themselves.

use crate::sync::{AtomicU32, Ordering};
use std::path::PathBuf;

/// A segment name unique to this process, test and call
/// (`mtk-<pid>-<counter>-<label>`), unlinked from `/dev/shm` when dropped,
/// also while unwinding from a panic.
#[derive(Debug)]
pub struct SegmentName {
    name: String,
    owner_pid: u32,
}

impl SegmentName {
    /// A fresh name; `label` (letters, digits, `._-`) says which test made it.
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // Relaxed: only uniqueness within this process is needed.
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let pid = std::process::id();
        SegmentName {
            name: format!("mtk-{pid}-{n}-{label}"),
            owner_pid: pid,
        }
    }

    /// Adopts a name made elsewhere (e.g. by a parent process); dropping it
    /// unlinks nothing.
    pub fn borrowed(name: &str) -> Self {
        SegmentName {
            name: name.to_owned(),
            owner_pid: 0,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// Its path in `/dev/shm`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/dev/shm").join(&self.name)
    }
}

impl Drop for SegmentName {
    fn drop(&mut self) {
        // Only the process that made the name removes the file (a forked or
        // re-executed child holding a copy must not).
        if self.owner_pid == std::process::id() {
            let _ = std::fs::remove_file(self.path());
        }
    }
}
