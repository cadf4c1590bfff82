//! The atomics of this crate, imported from one place: process-local flags
//! and counters only (what lives in the segment is reached through the
//! handler API).
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
