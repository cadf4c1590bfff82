//! The command's errors and exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; `fsck` found nothing wrong |
//! | 1 | `fsck` found problems; `rm` refused a segment with live participants |
//! | 2 | error: bad arguments (clap's usage errors and the tool's own), no such segment, not a segment, I/O, … |
//! | 3 | `fsck` on a segment in use was inconclusive: it changed under every attempt too fast to tell; run it again |

use crate::size::SizeError;
use matrix_core::{AllocError, BlockError, RepairError, SegmentError};
use std::fmt;

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: `fsck` found problems, or `rm` refused.
pub const EXIT_PROBLEMS: i32 = 1;
/// Exit code: an error stopped the command (bad arguments included).
pub const EXIT_ERROR: i32 = 2;
/// Exit code: `fsck` could not reach a conclusive answer on a segment in use.
pub const EXIT_INCONCLUSIVE: i32 = 3;

/// Everything that can stop a `matrix` command. Each prints as one line.
#[derive(Debug)]
pub enum CliError {
    /// Creating, opening or validating a segment failed.
    Segment(SegmentError),
    /// The file exists but is not one of ours.
    NotASegment {
        /// The name asked for.
        name: String,
        /// What gave it away.
        why: String,
    },
    /// Walking the block chain failed (a damaged segment).
    Block(BlockError),
    /// An allocator operation failed.
    Alloc(AllocError),
    /// `repair()` refused or stopped.
    Repair(RepairError),
    /// `rm` found live participants and `--force` was not given.
    InUse {
        /// The segment.
        name: String,
        /// Pids of the live ones.
        pids: Vec<u32>,
        /// Participants whose liveness could not be told (possibly alive).
        unknown: usize,
    },
    /// A size argument was not understood.
    Size(SizeError),
    /// An argument is out of its range.
    Argument(String),
    /// The operating system refused, for a reason the message explains.
    Denied(String),
    /// Listing `/dev/shm` or writing output failed.
    Io {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        err: std::io::Error,
    },
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::InUse { .. } => EXIT_PROBLEMS,
            _ => EXIT_ERROR,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Segment(e) => e.fmt(f),
            CliError::NotASegment { name, why } => {
                write!(f, "/dev/shm/{name} is not a matrix segment: {why}")
            }
            CliError::Block(e) => write!(f, "segment damaged: {e}; run `matrix fsck`"),
            CliError::Alloc(e) => e.fmt(f),
            CliError::Repair(e) => e.fmt(f),
            CliError::InUse {
                name,
                pids,
                unknown,
            } => {
                let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "segment {name:?} has {} live participant(s) (pid {})",
                    pids.len(),
                    if list.is_empty() {
                        "-".into()
                    } else {
                        list.join(", ")
                    }
                )?;
                if *unknown > 0 {
                    write!(
                        f,
                        " and {unknown} whose liveness cannot be told (possibly alive)"
                    )?;
                }
                write!(f, "; stop them first or pass --force")
            }
            CliError::Size(e) => e.fmt(f),
            CliError::Argument(message) | CliError::Denied(message) => f.write_str(message),
            CliError::Io { op, err } => write!(f, "{op}: {err}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Segment(e) => Some(e),
            CliError::Block(e) => Some(e),
            CliError::Alloc(e) => Some(e),
            CliError::Repair(e) => Some(e),
            CliError::Size(e) => Some(e),
            CliError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

impl From<SegmentError> for CliError {
    fn from(e: SegmentError) -> Self {
        CliError::Segment(e)
    }
}

impl From<BlockError> for CliError {
    fn from(e: BlockError) -> Self {
        CliError::Block(e)
    }
}

impl From<AllocError> for CliError {
    fn from(e: AllocError) -> Self {
        CliError::Alloc(e)
    }
}

impl From<RepairError> for CliError {
    fn from(e: RepairError) -> Self {
        CliError::Repair(e)
    }
}

impl From<SizeError> for CliError {
    fn from(e: SizeError) -> Self {
        CliError::Size(e)
    }
}
