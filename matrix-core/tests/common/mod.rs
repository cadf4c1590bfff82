//! Helpers shared by this crate's integration tests.

/// Unique segment names removed on drop (also on panic).
pub type SegmentGuard = matrix_core::ScratchName;
