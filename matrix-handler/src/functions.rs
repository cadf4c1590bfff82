//! [`HandlerFunctions`]: the interaction surface shared by every handle.

use crate::block::{layout_tag, Block, BlockToken, TOKEN_GENERATION_BITS};
use crate::error::HandlerError;
use bytemuck::Pod;
use matrix_core::state::{self, STATE_MAX, USER_STATE_MIN};
use matrix_core::{
    AllocError, ArenaStats, AtomicMatrix, BlockError, BlockHeader, ConsolidationReport, OwnerId,
    RecoveryReport, RelativePtr, BLOCK_HEADER_SIZE,
};
use std::sync::atomic::Ordering;

/// The operations every matrix handle offers: allocation, typed I/O,
/// lifecycle states, recovery and the raw escape hatches.
///
/// Implemented by [`MatrixHandler`](crate::MatrixHandler) and
/// [`SharedHandler`](crate::SharedHandler); code in `matrix-internals` is
/// written against `impl HandlerFunctions` so it works with either.
///
/// # Implementing this trait
///
/// Only [`matrix`](Self::matrix) is required: the other three accessors of
/// the original specification (`base_ptr`, `first_block_offset`,
/// `segment_size`) are derived from it, so a wrapper type cannot make the
/// default methods resolve offsets against a wrong base.
pub trait HandlerFunctions {
    /// The attachment all operations go through.
    fn matrix(&self) -> &AtomicMatrix;

    /// This process's mapping base.
    fn base_ptr(&self) -> *const u8 {
        self.matrix().base_ptr()
    }

    /// Offset of the first block: where chain walks start.
    fn first_block_offset(&self) -> u32 {
        self.matrix().first_block_offset()
    }

    /// Segment size in bytes.
    fn segment_size(&self) -> u32 {
        self.matrix().segment_size()
    }

    /// Allocates a block for one `T` (at least 16 bytes), tagged with `T`'s layout.
    ///
    /// # Errors
    /// [`HandlerError::AllocationFailed`] when out of memory (with the largest
    /// free block) or when `T` needs more than 16-byte alignment.
    #[inline]
    fn allocate<T>(&self) -> Result<Block<T>, HandlerError> {
        allocate_n::<T>(self.matrix(), 1)
    }

    /// Allocates a block for `len` consecutive `T`.
    fn allocate_slice<T: Pod>(&self, len: usize) -> Result<Block<T>, HandlerError> {
        allocate_n::<T>(self.matrix(), len)
    }

    /// Allocates `size` untyped bytes; returns the payload offset.
    #[inline]
    fn allocate_raw(&self, size: u32) -> Result<RelativePtr<u8>, HandlerError> {
        Ok(self.matrix().allocate(size as u64, 0)?)
    }

    /// Writes `value` into the block without any check.
    ///
    /// # Safety
    /// - `block` is live (not freed) and was allocated for a `T` by this segment.
    /// - No other thread or process reads or writes the payload concurrently.
    ///
    /// For plain-old-data types prefer the checked [`write_pod`](Self::write_pod).
    unsafe fn write<T>(&self, block: &mut Block<T>, value: T) {
        let ptr = payload_ptr::<T>(self.matrix(), block);
        // SAFETY: the caller guarantees the block is live, sized and aligned
        // for T (payloads are 16-aligned) and not accessed concurrently.
        unsafe { ptr.write(value) }
    }

    /// A shared reference to the block's `T`.
    ///
    /// # Safety
    /// - `block` is live and holds an initialized `T` written through this API.
    /// - Nobody writes the payload while the reference lives, and the block is
    ///   not freed before the reference's last use (it is not tied to `block`).
    unsafe fn read<'a, T>(&self, block: &Block<T>) -> &'a T {
        let ptr = payload_ptr::<T>(self.matrix(), block);
        // SAFETY: forwarded to the caller's guarantees above.
        unsafe { &*ptr }
    }

    /// An exclusive reference to the block's `T`.
    ///
    /// # Safety
    /// As [`read`](Self::read), and no other reference to the payload (in any
    /// thread or process) exists while this one lives.
    unsafe fn read_mut<'a, T>(&self, block: &Block<T>) -> &'a mut T {
        let ptr = payload_ptr::<T>(self.matrix(), block);
        // SAFETY: forwarded to the caller's guarantees above.
        unsafe { &mut *ptr }
    }

    /// Copies the block's `T` out, after checking the handle is current and
    /// the block live. A concurrent writer in another process can make the
    /// copy torn, but for a `Pod` type every bit pattern is a valid value.
    fn read_pod<T: Pod>(&self, block: &Block<T>) -> Result<T, HandlerError> {
        check_live(self.matrix(), block)?;
        let ptr = payload_ptr::<T>(self.matrix(), block);
        // SAFETY: the block is live and at least size_of::<T>() (checked at
        // allocation or in block_at), 16-aligned; T is Pod so any bytes are
        // a valid T. Volatile: the memory is shared with other processes.
        Ok(unsafe { ptr.read_volatile() })
    }

    /// Writes `value` after checking the handle is current and the block live.
    fn write_pod<T: Pod>(&self, block: &mut Block<T>, value: T) -> Result<(), HandlerError> {
        check_live(self.matrix(), block)?;
        let ptr = payload_ptr::<T>(self.matrix(), block);
        // SAFETY: as in read_pod; the caller holds `&mut Block`, the block's
        // ownership token, so this participant is its writer.
        unsafe { ptr.write_volatile(value) };
        Ok(())
    }

    /// Copies `values` into the block's slice (checked; `values.len()` ≤ `block.len()`).
    fn write_slice<T: Pod>(&self, block: &mut Block<T>, values: &[T]) -> Result<(), HandlerError> {
        check_live(self.matrix(), block)?;
        check_len(block, values.len())?;
        let ptr = payload_ptr::<T>(self.matrix(), block);
        // SAFETY: live block holding block.len() ≥ values.len() elements;
        // source and destination cannot overlap (one is process memory).
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), ptr, values.len()) };
        Ok(())
    }

    /// Copies the block's slice into `out` (checked; `out.len()` ≤ `block.len()`).
    fn read_slice<T: Pod>(&self, block: &Block<T>, out: &mut [T]) -> Result<(), HandlerError> {
        check_live(self.matrix(), block)?;
        check_len(block, out.len())?;
        let ptr = payload_ptr::<T>(self.matrix(), block);
        // SAFETY: as in write_slice, in the other direction; T is Pod.
        unsafe { std::ptr::copy_nonoverlapping(ptr as *const T, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Frees a block. A double free, a stale handle or a block in a reserved
    /// state is an error and changes nothing.
    #[inline]
    fn free<T>(&self, block: Block<T>) -> Result<(), HandlerError> {
        Ok(self
            .matrix()
            .free(block.header_offset(), Some(block.generation()))?)
    }

    /// Frees the block whose header is at `header_offset` (payload − 32),
    /// whatever its generation.
    #[inline]
    fn free_at(&self, header_offset: u32) -> Result<(), HandlerError> {
        Ok(self.matrix().free(header_offset, None)?)
    }

    /// Rebuilds a handle from a payload offset received from elsewhere,
    /// validating bounds, alignment, that a live block starts there, that it
    /// holds at least one `T`, and that it was not allocated for another layout.
    fn block_at<T>(&self, offset: u32) -> Result<Block<T>, HandlerError> {
        validate_block::<T>(self.matrix(), offset, None)
    }

    /// As [`block_at`](Self::block_at), and the block must still be the
    /// generation the token was made from.
    fn block_from_token<T>(&self, token: BlockToken) -> Result<Block<T>, HandlerError> {
        validate_block::<T>(
            self.matrix(),
            token.offset(),
            Some((token.generation(), (1 << TOKEN_GENERATION_BITS) - 1)),
        )
    }

    /// Makes this participant the block's owner (after receiving it from
    /// another process), so recovery ties it to this process's life.
    fn adopt<T>(&self, block: &Block<T>) -> Result<(), HandlerError> {
        check_live(self.matrix(), block)?;
        self.matrix().set_owner_of(
            block.header_offset(),
            block.generation(),
            None,
            self.matrix().owner_id(),
        )?;
        Ok(())
    }

    /// Gives the block to the segment: it outlives this participant, and
    /// recovery never reclaims it (free it explicitly).
    fn release_to_segment<T>(&self, block: &Block<T>) -> Result<(), HandlerError> {
        check_live(self.matrix(), block)?;
        self.matrix().set_owner_of(
            block.header_offset(),
            block.generation(),
            None,
            OwnerId::SEGMENT,
        )?;
        Ok(())
    }

    /// Sets a user lifecycle state (≥ [`USER_STATE_MIN`]) on a live block.
    ///
    /// # Errors
    /// [`HandlerError::ReservedStatus`] for a state below 49; a stale handle
    /// or a block that is not live is refused.
    fn set_state<T>(&self, block: &Block<T>, state: u32) -> Result<(), HandlerError> {
        if state < USER_STATE_MIN {
            return Err(HandlerError::ReservedStatus(state));
        }
        if state > STATE_MAX {
            return Err(HandlerError::StateOutOfRange { state });
        }
        let hdr = header_of(self.matrix(), block)?;
        let mut word = hdr.state.load(Ordering::Acquire);
        loop {
            check_word(block, word)?;
            let current = state::state_of(word);
            if !state::is_live(current) {
                return Err(BlockError::NotLive {
                    offset: block.header_offset(),
                    state: current,
                }
                .into());
            }
            // Release: payload writes before the state change are visible to
            // whoever Acquires the new state (the usual "mark READY" hand-off).
            match hdr.state.compare_exchange_weak(
                word,
                state::with_state(word, state),
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// The block's current state, loaded with `order`. A handle to a block
    /// that no longer exists reads whatever the header holds; use
    /// [`try_get_state`](Self::try_get_state) to have that checked.
    fn get_state<T>(&self, block: &Block<T>, order: Ordering) -> u32 {
        match header_of(self.matrix(), block) {
            Ok(hdr) => state::state_of(hdr.state.load(order)),
            Err(_) => state::FREE,
        }
    }

    /// The block's current state, refusing a stale handle.
    fn try_get_state<T>(&self, block: &Block<T>, order: Ordering) -> Result<u32, HandlerError> {
        let word = header_of(self.matrix(), block)?.state.load(order);
        check_word(block, word)?;
        Ok(state::state_of(word))
    }

    /// Atomically moves the block from `expected` to `next` (≥ 49).
    /// Returns the replaced state.
    ///
    /// # Errors
    /// - [`HandlerError::ReservedStatus`] if `next` is below 49, or `expected`
    ///   is not ALLOCATED or a user state (free blocks are not yours to move).
    /// - [`HandlerError::TransitionFailed`] with the state found otherwise.
    /// - A stale handle is refused.
    fn transition_state<T>(
        &self,
        block: &Block<T>,
        expected: u32,
        next: u32,
        success_order: Ordering,
    ) -> Result<u32, HandlerError> {
        if next < USER_STATE_MIN {
            return Err(HandlerError::ReservedStatus(next));
        }
        if !state::is_live(expected) {
            return Err(HandlerError::ReservedStatus(expected));
        }
        if next > STATE_MAX {
            return Err(HandlerError::StateOutOfRange { state: next });
        }
        let hdr = header_of(self.matrix(), block)?;
        // Failure Relaxed/Acquire as the caller's success ordering allows.
        let failure = match success_order {
            Ordering::Acquire | Ordering::AcqRel | Ordering::SeqCst => Ordering::Acquire,
            _ => Ordering::Relaxed,
        };
        // Acquire: pairs with the Release of the word's last change. The
        // word also holds the owner, which a concurrent adoption may change:
        // the CAS is retried while generation and state still match.
        let mut word = hdr.state.load(Ordering::Acquire);
        loop {
            check_word(block, word)?;
            let found = state::state_of(word);
            if found != expected {
                return Err(HandlerError::TransitionFailed(found));
            }
            match hdr.state.compare_exchange(
                word,
                state::with_state(word, next),
                success_order,
                failure,
            ) {
                Ok(_) => return Ok(expected),
                Err(actual) => word = actual,
            }
        }
    }

    /// Merges adjacent free blocks now.
    fn consolidate(&self) -> Result<ConsolidationReport, HandlerError> {
        Ok(self.matrix().consolidate()?)
    }

    /// Reclaims the blocks of dead or detached participants (user-state
    /// blocks are reported, not reclaimed).
    fn recover(&self) -> Result<RecoveryReport, HandlerError> {
        Ok(self.matrix().recover(false)?)
    }

    /// Used / free bytes, free blocks, largest free block, blocks by state.
    fn stats(&self) -> Result<ArenaStats, HandlerError> {
        Ok(self.matrix().stats()?)
    }

    /// The raw allocator, for internals that need it directly.
    fn raw_matrix(&self) -> &AtomicMatrix {
        self.matrix()
    }

    /// The raw mapping base, for internals that resolve offsets themselves.
    fn raw_base_ptr(&self) -> *const u8 {
        self.base_ptr()
    }
}

#[inline]
fn allocate_n<T>(matrix: &AtomicMatrix, len: usize) -> Result<Block<T>, HandlerError> {
    let align = std::mem::align_of::<T>();
    if align > 16 {
        return Err(AllocError::Unaligned { align }.into());
    }
    let bytes = (std::mem::size_of::<T>() as u64).saturating_mul(len as u64);
    let len32 = u32::try_from(len).map_err(|_| AllocError::TooLarge {
        requested: bytes,
        max_payload: matrix.segment_size() as u64,
    })?;
    let ptr = matrix.allocate(bytes, layout_tag::<T>())?;
    let (hdr, _) = matrix.block_header(ptr.offset() - BLOCK_HEADER_SIZE)?;
    let generation = state::generation_of(hdr.state.load(Ordering::Relaxed));
    Ok(Block::new(ptr.offset(), generation, len32))
}

#[inline]
fn payload_ptr<T>(matrix: &AtomicMatrix, block: &Block<T>) -> *mut T {
    // The offset came from this segment's allocator or was validated by
    // block_at; wrapping_add keeps this free of UB even for a forged handle,
    // which the unsafe accessors' callers promise not to pass.
    matrix.base_ptr().wrapping_add(block.offset() as usize) as *mut T
}

fn header_of<'m, T>(
    matrix: &'m AtomicMatrix,
    block: &Block<T>,
) -> Result<&'m BlockHeader, HandlerError> {
    let offset = block
        .offset()
        .checked_sub(BLOCK_HEADER_SIZE)
        .ok_or(HandlerError::InvalidOffset(block.offset()))?;
    Ok(matrix.block_header(offset)?.0)
}

fn check_word<T>(block: &Block<T>, word: u64) -> Result<(), HandlerError> {
    let found = state::generation_of(word);
    if found != block.generation() {
        return Err(BlockError::Stale {
            offset: block.header_offset(),
            expected: block.generation(),
            found,
        }
        .into());
    }
    Ok(())
}

fn check_live<T>(matrix: &AtomicMatrix, block: &Block<T>) -> Result<(), HandlerError> {
    let word = header_of(matrix, block)?.state.load(Ordering::Acquire);
    check_word(block, word)?;
    let st = state::state_of(word);
    if !state::is_live(st) {
        return Err(BlockError::NotLive {
            offset: block.header_offset(),
            state: st,
        }
        .into());
    }
    Ok(())
}

fn check_len<T>(block: &Block<T>, wanted: usize) -> Result<(), HandlerError> {
    if wanted > block.len() {
        return Err(BlockError::TooSmall {
            offset: block.header_offset(),
            payload: (block.len() * std::mem::size_of::<T>()) as u32,
            needed: (wanted * std::mem::size_of::<T>()) as u64,
        }
        .into());
    }
    Ok(())
}

fn validate_block<T>(
    matrix: &AtomicMatrix,
    offset: u32,
    // The generation the caller expects, and which of its bits it knows.
    generation: Option<(u64, u64)>,
) -> Result<Block<T>, HandlerError> {
    let header = offset
        .checked_sub(BLOCK_HEADER_SIZE)
        .ok_or(HandlerError::InvalidOffset(offset))?;
    let (hdr, size) = matrix.block_header(header)?;
    let word = hdr.state.load(Ordering::Acquire);
    let st = state::state_of(word);
    if !state::is_live(st) {
        return Err(BlockError::NotLive {
            offset: header,
            state: st,
        }
        .into());
    }
    let found = state::generation_of(word);
    if let Some((expected, mask)) = generation {
        if expected != found & mask {
            return Err(BlockError::Stale {
                offset: header,
                expected,
                found,
            }
            .into());
        }
    }
    if std::mem::align_of::<T>() > 16 {
        return Err(AllocError::Unaligned {
            align: std::mem::align_of::<T>(),
        }
        .into());
    }
    let payload = size - BLOCK_HEADER_SIZE;
    let elem = std::mem::size_of::<T>() as u64;
    if elem > payload as u64 {
        return Err(BlockError::TooSmall {
            offset: header,
            payload,
            needed: elem,
        }
        .into());
    }
    let tag = hdr.type_tag.load(Ordering::Acquire);
    if tag != 0 && tag != layout_tag::<T>() {
        return Err(BlockError::TypeMismatch {
            offset: header,
            expected: layout_tag::<T>(),
            found: tag,
        }
        .into());
    }
    let requested = (hdr.requested.load(Ordering::Acquire) as u64).min(payload as u64);
    let len = requested.max(elem).checked_div(elem).unwrap_or(1) as u32;
    Ok(Block::new(offset, found, len))
}
