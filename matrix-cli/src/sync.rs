//! The atomics this crate uses, imported from one place.
//!
//! The tool mostly *reads* words of the segment that other processes write.
//! A load that decides what else is read (a participant slot's state before
//! its pid and generation) is `Acquire`, paired with the `Release` that
//! published it; a value shown as it is (a counter, a header field) is
//! `Relaxed`. `bench` counts its progress in a process-local atomic.
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
