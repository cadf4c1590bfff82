//! The system allocator: `libc::malloc` / `libc::free`.

use super::{allocation_failed, BenchAlloc};

/// glibc's malloc (16-byte aligned on x86-64), thread-safe with per-thread
/// arenas and caches.
pub struct System;

impl BenchAlloc for System {
    /// The payload address.
    type Handle = usize;

    type Thread<'a>
        = super::Direct<'a, Self>
    where
        Self: 'a;

    #[inline(always)]
    fn thread(&self) -> super::Direct<'_, Self> {
        super::Direct(self)
    }

    #[inline]
    fn alloc(&self, size: usize) -> usize {
        // SAFETY: malloc has no preconditions; null is handled below.
        let ptr = unsafe { libc::malloc(size) };
        if ptr.is_null() {
            allocation_failed("malloc", size, &"returned null");
        }
        ptr as usize
    }

    #[inline]
    unsafe fn free(&self, handle: usize, _size: usize) {
        // SAFETY: the caller guarantees `handle` came from malloc and is live.
        unsafe { libc::free(handle as *mut libc::c_void) };
    }

    #[inline]
    fn payload(&self, handle: usize) -> *mut u8 {
        handle as *mut u8
    }
}
