//! Unique segment names that clean up after themselves: `matrix-core`'s
//! [`ScratchName`](matrix_core::ScratchName), under the name the harnesses use.

/// A segment name unique to this process, test and call, unlinked from
/// `/dev/shm` when dropped (also while unwinding from a panic) by the process
/// that made it; [`SegmentName::borrowed`] adopts a name without removing it.
pub use matrix_core::ScratchName as SegmentName;
