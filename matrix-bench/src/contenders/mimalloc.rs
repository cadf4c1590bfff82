//! mimalloc (the `libmimalloc-sys` bindings, its bundled C sources built
//! with the crate's defaults): `mi_malloc` / `mi_free`.

use super::{allocation_failed, BenchAlloc};

/// mimalloc's default heap: thread-local free lists, a thread's frees of
/// another thread's blocks go to that block's page with one atomic push.
pub struct Mimalloc;

impl BenchAlloc for Mimalloc {
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
        // SAFETY: mi_malloc has no preconditions; null is handled below.
        let ptr = unsafe { libmimalloc_sys::mi_malloc(size) };
        if ptr.is_null() {
            allocation_failed("mimalloc", size, &"returned null");
        }
        ptr as usize
    }

    #[inline]
    unsafe fn free(&self, handle: usize, _size: usize) {
        // SAFETY: the caller guarantees `handle` came from mi_malloc and is live.
        unsafe { libmimalloc_sys::mi_free(handle as *mut libc::c_void) };
    }

    #[inline]
    fn payload(&self, handle: usize) -> *mut u8 {
        handle as *mut u8
    }
}
