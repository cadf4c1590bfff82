//! The one place this crate takes its atomics from.
//!
//! Every structure of this crate lives in a shared mapping, so its atomics
//! must have the layout of the integers they wrap: `std`'s atomics do, loom's
//! do not. The crate therefore always uses `std`'s atomics; the lock-free
//! allocator underneath is model-checked in `matrix-core`.

pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
