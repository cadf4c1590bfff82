//! Unique segment names that clean up after themselves.

use matrix_core::ScratchName;
use std::path::PathBuf;

/// A segment name unique to this process, test and call
/// (`matrix-scratch-<pid>-<n>-<label>`), unlinked from `/dev/shm` when
/// dropped — also while unwinding from a failed test — by the process that
/// made it. A child process given the name adopts it with
/// [`borrowed`](Self::borrowed), which removes nothing.
///
/// ```
/// use matrix_handler::MatrixHandler;
/// let name = matrix_testkit::SegmentName::new("orders");
/// let h = MatrixHandler::create(name.as_str(), 1 << 20)?;
/// drop(h);
/// let path = name.path();
/// drop(name); // the segment file is gone
/// assert!(!path.exists());
/// # Ok::<(), matrix_handler::HandlerError>(())
/// ```
#[derive(Debug)]
pub struct SegmentName(ScratchName);

impl SegmentName {
    /// A fresh name carrying `label` (characters outside the name alphabet
    /// become `_`).
    pub fn new(label: &str) -> Self {
        SegmentName(ScratchName::new(label))
    }

    /// Adopts a name made elsewhere (e.g. by a parent process); dropping it
    /// removes nothing.
    pub fn borrowed(name: &str) -> Self {
        SegmentName(ScratchName::borrowed(name))
    }

    /// Removes every segment that process `pid` named with
    /// [`new`](Self::new) and left behind (a process killed by a signal runs
    /// no destructors). Returns how many were removed.
    pub fn remove_leftovers_of(pid: u32) -> usize {
        ScratchName::remove_leftovers_of(pid)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Its path in `/dev/shm`.
    pub fn path(&self) -> PathBuf {
        self.0.path()
    }
}
