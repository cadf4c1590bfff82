//! [`LocalHandler`]: the allocate / free fast path for one thread.

use crate::block::{layout_tag, Block};
use crate::error::HandlerError;
use crate::shm_safe::ShmSafe;
use matrix_core::{AllocError, AtomicMatrix, LocalMatrix, RelativePtr, BLOCK_HEADER_SIZE};
use std::sync::atomic::Ordering;

/// A handle for one thread that owns its block cache: allocation and free
/// without the thread-local lookup the shared handles do on every call.
/// Made by [`HandlerFunctions::local`](crate::HandlerFunctions::local).
///
/// It is neither `Send` nor `Sync`: make one on each thread that allocates
/// a lot, as with mimalloc's `mi_heap_new`. It keeps the mapping and this
/// process's participant slot alive while it exists, and its drop (or
/// [`flush`](Self::flush)) returns the blocks it keeps to the segment.
///
/// **What is checked.** Exactly what the shared handles check, on every
/// call: a handle of another segment is [`HandlerError::ForeignHandle`];
/// an offset that is misaligned, outside the arena (below its start or
/// above `top`) or not at a genuine header (its check word) is
/// [`HandlerError::InvalidOffset`]; a double free is
/// [`BlockError::DoubleFree`] and a stale handle `Stale`, both decided by
/// the one CAS on the block's state word that also takes the block; the
/// block's size is validated after that CAS (`Corrupted`, and the word is
/// given back). A refused free changes nothing.
///
/// ```
/// use matrix_handler::{HandlerFunctions, MatrixHandler};
///
/// let handler = MatrixHandler::bootstrap(None, 1 << 20)?;
/// let mut local = handler.local();
/// let a = local.allocate_raw(64)?;
/// local.free_raw(a)?;
/// // The freed block is this handle's again on its next allocation.
/// let b = local.allocate_raw(64)?;
/// assert_eq!(a.offset(), b.offset());
/// local.free_raw(b)?;
/// // A double free is refused, on this path too.
/// assert!(local.free_raw(b).is_err());
///
/// let mut block = local.allocate::<u64>()?;
/// handler.write_pod(&mut block, 7)?; // any handle may use the block
/// assert_eq!(handler.read_pod(&block)?, 7);
/// local.free(block)?;
/// # Ok::<(), matrix_handler::HandlerError>(())
/// ```
///
/// [`BlockError::DoubleFree`]: matrix_core::BlockError::DoubleFree
pub struct LocalHandler {
    local: LocalMatrix,
    nonce: u64,
}

impl LocalHandler {
    pub(crate) fn new(matrix: &AtomicMatrix) -> LocalHandler {
        LocalHandler {
            local: matrix.local(),
            // Relaxed: written once by the formatter before its Release
            // store of READY, which opening this mapping Acquired.
            nonce: matrix.header().nonce.load(Ordering::Relaxed),
        }
    }

    /// Allocates `size` untyped bytes; returns the payload offset, as
    /// [`HandlerFunctions::allocate_raw`](crate::HandlerFunctions::allocate_raw).
    ///
    /// # Errors
    /// [`HandlerError::AllocationFailed`] when the segment cannot hold it.
    #[inline(always)]
    pub fn allocate_raw(&mut self, size: u32) -> Result<RelativePtr<u8>, HandlerError> {
        Ok(self.local.allocate(size as u64, 0)?)
    }

    /// Frees the block whose header is at `header_offset`, whatever its
    /// generation (as [`HandlerFunctions::free_at`](crate::HandlerFunctions::free_at)).
    ///
    /// # Errors
    /// A bad offset, a double free or a block that is not live (see the
    /// type's documentation); nothing changes then.
    #[inline(always)]
    pub fn free_at(&mut self, header_offset: u32) -> Result<(), HandlerError> {
        Ok(self.local.free(header_offset, None)?)
    }

    /// Frees the block whose payload is `payload` (what
    /// [`allocate_raw`](Self::allocate_raw) returned), whatever its
    /// generation.
    ///
    /// # Errors
    /// As [`free_at`](Self::free_at); a payload offset below the header
    /// size is [`HandlerError::InvalidOffset`].
    #[inline(always)]
    pub fn free_raw(&mut self, payload: RelativePtr<u8>) -> Result<(), HandlerError> {
        let header = payload
            .offset()
            .checked_sub(BLOCK_HEADER_SIZE)
            .ok_or(HandlerError::InvalidOffset(payload.offset()))?;
        Ok(self.local.free(header, None)?)
    }

    /// Allocates a block for one `T`, tagged with `T`'s layout, as
    /// [`HandlerFunctions::allocate`](crate::HandlerFunctions::allocate).
    ///
    /// # Errors
    /// As [`HandlerFunctions::allocate`](crate::HandlerFunctions::allocate).
    #[inline]
    pub fn allocate<T: ShmSafe>(&mut self) -> Result<Block<T>, HandlerError> {
        let align = std::mem::align_of::<T>();
        if align > 16 {
            return Err(AllocError::Unaligned { align }.into());
        }
        let bytes = std::mem::size_of::<T>() as u64;
        let (offset, generation) = self.local.allocate_block(bytes, layout_tag::<T>())?;
        Ok(Block::new(
            self.nonce,
            offset + BLOCK_HEADER_SIZE,
            generation,
            1,
        ))
    }

    /// Frees a block; a double free, a stale handle or a handle of another
    /// segment is refused and changes nothing.
    ///
    /// # Errors
    /// [`HandlerError::ForeignHandle`], or the refusals of
    /// [`free_at`](Self::free_at) and a stale generation.
    #[inline]
    pub fn free<T>(&mut self, block: Block<T>) -> Result<(), HandlerError> {
        if block.nonce() != self.nonce {
            return Err(HandlerError::ForeignHandle {
                expected: self.nonce,
                found: block.nonce(),
            });
        }
        Ok(self
            .local
            .free(block.header_offset(), Some(block.generation()))?)
    }

    /// Returns the blocks this handle keeps to the segment, so that other
    /// threads and processes can allocate them (its drop does the same).
    pub fn flush(&mut self) {
        self.local.flush();
    }
}

impl std::fmt::Debug for LocalHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHandler")
            .field("local", &self.local)
            .finish()
    }
}
