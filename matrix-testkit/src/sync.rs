//! The one place this crate takes its atomics from.
//!
//! Harness control words live in shared memory (a block of the segment under
//! test), so they must be `std`'s atomics, whose layout equals the integer
//! they wrap.

pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
