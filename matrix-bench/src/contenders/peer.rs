//! The `atomic-matrix` 0.4.1 crate, through its own raw allocation API
//! (`AtomicMatrix::allocate` / `ack`), as its published benchmark uses it.

use super::{allocation_failed, BenchAlloc};
use atomic_matrix::core::matrix::helpers::HEADER_SPACE;
use atomic_matrix::prelude::{
    AtomicMatrix as PeerMatrix, BlockHeader as PeerHeader, HandlerFunctions as _,
    MatrixHandler as PeerHandler, RelativePtr as PeerPtr,
};

/// A segment `/dev/shm/matrix-<name>` made by the peer's `bootstrap`,
/// removed when the run ends (the parent removes it after a crash).
pub struct Peer {
    handler: PeerHandler,
}

impl Peer {
    /// Bootstraps a fresh segment with an arena of `size` bytes and faults it in.
    pub fn create(name: &str, size: usize) -> Peer {
        let handler = match PeerMatrix::bootstrap(Some(name.to_owned()), size) {
            Ok(handler) => handler,
            Err(e) => panic!("atomic-matrix: bootstrap of {size} bytes failed: {e:?}"),
        };
        let base = handler.base_ptr().cast_mut();
        let len = handler.segment_size() as usize;
        // SAFETY: the mapping is the peer handler's, page-aligned, and no
        // other process uses it; populating does not change a byte.
        unsafe { super::pool::populate(base, len) };
        Peer { handler }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: `die` only removes the /dev/shm file; no other process is
        // attached to this run's segment.
        let _ = unsafe { self.handler.die() };
    }
}

impl BenchAlloc for Peer {
    /// The payload offset.
    type Handle = u32;

    type Thread<'a>
        = super::Direct<'a, Self>
    where
        Self: 'a;

    #[inline(always)]
    fn thread(&self) -> super::Direct<'_, Self> {
        super::Direct(self)
    }

    #[inline]
    fn alloc(&self, size: usize) -> u32 {
        match self
            .handler
            .matrix()
            .allocate(self.handler.base_ptr(), size as u32)
        {
            Ok(ptr) => ptr.offset(),
            Err(e) => allocation_failed("atomic-matrix", size, &format_args!("{e:?}")),
        }
    }

    #[inline]
    unsafe fn free(&self, handle: u32, _size: usize) {
        let header = PeerPtr::<PeerHeader>::new(handle - HEADER_SPACE);
        self.handler.matrix().ack(&header, self.handler.base_ptr());
    }

    #[inline]
    fn payload(&self, handle: u32) -> *mut u8 {
        self.handler
            .base_ptr()
            .cast_mut()
            .wrapping_add(handle as usize)
    }
}
