//! This workspace's allocator, through the handler API on a `/dev/shm` segment.

use super::{allocation_failed, free_failed, BenchAlloc};
use matrix_handler::{HandlerFunctions, LocalHandler, MatrixHandler};
use std::cell::UnsafeCell;

/// Payload offset minus this is the header offset `free_at` takes.
const HEADER: u32 = matrix_core::BLOCK_HEADER_SIZE;

/// A named segment created for one run and unlinked when the run ends,
/// also when it ends in a panic (the parent process removes it after a
/// crash).
pub struct Ours {
    handler: MatrixHandler,
    name: String,
}

impl Ours {
    /// Creates `/dev/shm/<name>` of `size` bytes and faults it in.
    pub fn create(name: &str, size: u64) -> Ours {
        let size = u32::try_from(size).expect("a segment is at most u32::MAX bytes");
        let handler = match MatrixHandler::create(name, size) {
            Ok(handler) => handler,
            Err(e) => panic!("ours: cannot create segment {name} of {size} bytes: {e}"),
        };
        let ours = Ours {
            handler,
            name: name.to_owned(),
        };
        let base = ours.handler.base_ptr().cast_mut();
        let len = ours.handler.segment_size() as usize;
        // SAFETY: the whole segment is this process's fresh mapping (the
        // mmap base is page-aligned) and no other participant exists yet;
        // populating does not change a byte.
        unsafe { super::pool::populate(base, len) };
        ours
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        let _ = matrix_handler::unlink(&self.name);
    }
}

impl BenchAlloc for Ours {
    /// The payload offset, as a block travels between processes.
    type Handle = u32;

    type Thread<'a> = OursThread<'a>;

    /// The thread's own [`LocalHandler`], as a user's worker thread makes
    /// one; its drop, when the thread's part ends, returns what it cached.
    fn thread(&self) -> OursThread<'_> {
        OursThread {
            local: UnsafeCell::new(self.handler.local()),
            ours: self,
        }
    }

    #[inline]
    fn alloc(&self, size: usize) -> u32 {
        match self.handler.allocate_raw(size as u32) {
            Ok(ptr) => ptr.offset(),
            Err(e) => allocation_failed("ours", size, &e),
        }
    }

    #[inline]
    unsafe fn free(&self, handle: u32, _size: usize) {
        if let Err(e) = self.handler.free_at(handle - HEADER) {
            free_failed("ours", &format_args!("payload offset {handle}"), &e)
        }
    }

    #[inline]
    fn payload(&self, handle: u32) -> *mut u8 {
        self.handler
            .base_ptr()
            .cast_mut()
            .wrapping_add(handle as usize)
    }

    fn after_free_all(&self) -> Option<u64> {
        if let Err(e) = self.handler.consolidate() {
            panic!("ours: consolidation after freeing every block failed: {e}");
        }
        match self.handler.stats() {
            Ok(stats) => Some(stats.free_blocks),
            Err(e) => panic!("ours: stats after freeing every block failed: {e}"),
        }
    }
}

/// One thread's use of [`Ours`]: `LocalHandler::allocate_raw` / `free_at`.
pub struct OursThread<'a> {
    /// `UnsafeCell`: the workloads call through `&self`; the handle is not
    /// `Sync` (nor is this type), so only this thread reaches it.
    local: UnsafeCell<LocalHandler>,
    ours: &'a Ours,
}

impl BenchAlloc for OursThread<'_> {
    type Handle = u32;

    type Thread<'b>
        = super::Direct<'b, Self>
    where
        Self: 'b;

    fn thread(&self) -> super::Direct<'_, Self> {
        super::Direct(self)
    }

    #[inline(always)]
    fn alloc(&self, size: usize) -> u32 {
        // SAFETY: this type is not Sync, so only the calling thread reaches
        // the handle, and no reference to it outlives this call (which does
        // not re-enter the workload).
        let local = unsafe { &mut *self.local.get() };
        match local.allocate_raw(size as u32) {
            Ok(ptr) => ptr.offset(),
            Err(e) => allocation_failed("ours", size, &e),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, handle: u32, _size: usize) {
        // SAFETY: as in `alloc`.
        let local = unsafe { &mut *self.local.get() };
        if let Err(e) = local.free_at(handle - HEADER) {
            free_failed("ours", &format_args!("payload offset {handle}"), &e)
        }
    }

    #[inline]
    fn payload(&self, handle: u32) -> *mut u8 {
        self.ours.payload(handle)
    }
}
