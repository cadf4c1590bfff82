//! `rlsf::Tlsf` over a private pool: alone (single-threaded) and behind a
//! `std::sync::Mutex` (threaded workloads).

use super::pool::Pool;
use super::{allocation_failed, BenchAlloc};
use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::Mutex;

/// First level up to `32 << 28` bytes (pools up to 8 GiB in one block) and
/// 16 second-level classes, the same subdivision as ours.
type Tlsf = rlsf::Tlsf<'static, u32, u16, 28, 16>;

/// Payloads are 16-byte aligned, like ours; rlsf needs no padding for that.
const ALIGN: usize = 16;

fn tlsf_over(pool: &Pool) -> Tlsf {
    let mut tlsf = Tlsf::new();
    // SAFETY: the pool outlives the Tlsf: both live in one struct whose
    // Tlsf field is declared (and so dropped) before the pool field, and the
    // pool's memory is used by nothing else.
    let added = unsafe { tlsf.insert_free_block_ptr(pool.as_slice_ptr()) };
    assert!(
        added.is_some(),
        "rlsf refused a pool of {} bytes",
        pool.as_slice_ptr().len()
    );
    tlsf
}

#[inline]
fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size, ALIGN) {
        Ok(layout) => layout,
        Err(e) => allocation_failed("rlsf", size, &e),
    }
}

/// rlsf with no lock: usable from one thread only (it is not `Sync`).
pub struct RlsfLocal {
    tlsf: UnsafeCell<Tlsf>,
    _pool: Pool,
}

impl RlsfLocal {
    /// A Tlsf over a fresh, faulted-in pool of `size` bytes.
    pub fn new(size: usize) -> RlsfLocal {
        let pool = Pool::new(size);
        RlsfLocal {
            tlsf: UnsafeCell::new(tlsf_over(&pool)),
            _pool: pool,
        }
    }
}

impl BenchAlloc for RlsfLocal {
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
        // SAFETY: RlsfLocal is not Sync (UnsafeCell), so this thread is the
        // only one that can reach the Tlsf, and no reference to it outlives
        // this call.
        let tlsf = unsafe { &mut *self.tlsf.get() };
        match tlsf.allocate(layout(size)) {
            Some(ptr) => ptr.as_ptr() as usize,
            None => allocation_failed("rlsf", size, &"pool exhausted"),
        }
    }

    #[inline]
    unsafe fn free(&self, handle: usize, _size: usize) {
        // SAFETY: as in `alloc`, this thread has the Tlsf to itself.
        let tlsf = unsafe { &mut *self.tlsf.get() };
        // SAFETY: the caller guarantees `handle` is a live block from this
        // Tlsf; every block was allocated with ALIGN.
        unsafe { tlsf.deallocate(NonNull::new_unchecked(handle as *mut u8), ALIGN) };
    }

    #[inline]
    fn payload(&self, handle: usize) -> *mut u8 {
        handle as *mut u8
    }
}

/// rlsf behind a `std::sync::Mutex`: the usual way to share it.
pub struct RlsfMutex {
    tlsf: Mutex<Tlsf>,
    _pool: Pool,
}

impl RlsfMutex {
    /// A locked Tlsf over a fresh, faulted-in pool of `size` bytes.
    pub fn new(size: usize) -> RlsfMutex {
        let pool = Pool::new(size);
        RlsfMutex {
            tlsf: Mutex::new(tlsf_over(&pool)),
            _pool: pool,
        }
    }
}

impl BenchAlloc for RlsfMutex {
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
        let mut tlsf = self
            .tlsf
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match tlsf.allocate(layout(size)) {
            Some(ptr) => ptr.as_ptr() as usize,
            None => allocation_failed("rlsf + Mutex", size, &"pool exhausted"),
        }
    }

    #[inline]
    unsafe fn free(&self, handle: usize, _size: usize) {
        let mut tlsf = self
            .tlsf
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: the caller guarantees `handle` is a live block from this
        // Tlsf; every block was allocated with ALIGN.
        unsafe { tlsf.deallocate(NonNull::new_unchecked(handle as *mut u8), ALIGN) };
    }

    #[inline]
    fn payload(&self, handle: usize) -> *mut u8 {
        handle as *mut u8
    }
}
