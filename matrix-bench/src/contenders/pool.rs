//! Memory for the process-local pools, and faulting mappings in before timing.

use std::ptr::NonNull;

/// Makes every page of `[ptr, ptr + len)` present and writable, so that no
/// page fault lands inside a timed loop. Uses `MADV_POPULATE_WRITE` (Linux
/// 5.14+), which leaves the contents untouched; on older kernels it reads
/// and writes back one byte per page instead.
///
/// # Safety
/// `ptr` is page-aligned, the range is one writable mapping owned by the
/// caller, and no other thread or process writes it during the call.
pub unsafe fn populate(ptr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is one mapping it owns;
    // MADV_POPULATE_WRITE only faults pages in, it does not change them.
    let rc = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_POPULATE_WRITE) };
    if rc == 0 {
        return;
    }
    let page = page_size();
    let mut at = 0;
    while at < len {
        // SAFETY: `at < len` keeps the byte inside the caller's mapping, and
        // nobody else writes it now (caller's guarantee), so writing back
        // the byte just read changes nothing.
        unsafe {
            let byte = ptr.add(at);
            byte.write_volatile(byte.read_volatile());
        }
        at += page;
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// A private anonymous mapping, faulted in, unmapped on drop: the pool the
/// rlsf contenders carve from, the same size as our segment.
pub struct Pool {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Pool is an owned mapping with no thread affinity; it hands out
// its range once (to the allocator that owns it) and only unmaps on drop.
unsafe impl Send for Pool {}
// SAFETY: `&Pool` gives access to nothing but the address and length.
unsafe impl Sync for Pool {}

impl Pool {
    /// Maps and faults in `len` bytes.
    pub fn new(len: usize) -> Pool {
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing; it aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            panic!(
                "mmap of a {len}-byte pool failed: {}",
                std::io::Error::last_os_error()
            );
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns null on success");
        // SAFETY: the mapping was just made, page-aligned, and is ours alone.
        unsafe { populate(ptr.as_ptr(), len) };
        Pool { ptr, len }
    }

    /// The whole pool as a slice pointer.
    pub fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the range is the mapping made in `new`; the allocator that
        // used it is dropped first (it is declared before the pool).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
