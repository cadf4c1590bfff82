//! Cache-line hints for the lines a push or pop is about to take.
//!
//! A slot stamp or block header that the other process wrote last sits in
//! its core's cache. Reading it and then CASing it costs two trips between
//! the cores (the read brings a shared copy, the CAS must then invalidate
//! the other one); asking for the line *for writing* first makes it one.
//! These are hints only: they never fault, whatever the address, and
//! change no memory, so a wrong address costs a wasted fetch at most.

/// Brings the line holding `p` in for writing (x86 `PREFETCHW`, supported
/// by AMD since K6 and Intel since Broadwell, a no-op before; AArch64
/// `PRFM PSTL1KEEP`); nothing elsewhere.
#[inline(always)]
pub(super) fn for_write(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: PREFETCHW reads no memory architecturally, writes none and
    // never faults, for any address.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    // SAFETY: PRFM is a hint: no architectural access, never faults.
    unsafe {
        std::arch::asm!("prfm pstl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let _ = p;
}

/// Brings the line holding `p` in for reading.
#[inline(always)]
pub(super) fn for_read(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: PREFETCHT0 is a hint: no architectural access, never faults.
    unsafe {
        std::arch::asm!("prefetcht0 [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(all(target_arch = "aarch64", not(miri)))]
    // SAFETY: PRFM is a hint: no architectural access, never faults.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let _ = p;
}
