//! The one place this crate takes its atomics from.
//!
//! Normally these are `std`'s atomics, whose layout equals the integer they
//! wrap, which is what lets them live in a shared mapping. Under `--cfg loom`
//! they are loom's model-checked atomics; those are *not* layout compatible,
//! so under loom only the structures built in ordinary memory
//! ([`crate::raw::ModelArena`]) are used.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Spin hint or, under loom, a yield so the model can schedule another thread.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Orders a SeqCst read-modify-write before a following SeqCst load of
/// another word, under loom only. The memory model already gives this order
/// (all SeqCst operations take part in one total order) and the hardware
/// does too, so normal builds need nothing; loom does not model SeqCst loads
/// (it treats them as Acquire, tokio-rs/loom#180) but does model SeqCst
/// fences, so under loom a fence stands in for the guarantee.
#[inline(always)]
pub(crate) fn seqcst_store_load() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}
