//! [`HandlerFunctions`]: the interaction surface shared by every handle.

use crate::block::{layout_tag, Block, BlockToken, TOKEN_GENERATION_BITS};
use crate::error::HandlerError;
use crate::shm_safe::ShmSafe;
use bytemuck::Pod;
use matrix_core::layout::{BLOCK_ALIGN, MIN_BLOCK};
use matrix_core::state::{self, STATE_MAX, USER_STATE_MIN};
use matrix_core::{
    AllocError, ArenaStats, AtomicMatrix, BlockError, BlockHeader, ConsolidationReport, OwnerId,
    RecoveryReport, RelativePtr, ResizeKind, BLOCK_HEADER_SIZE,
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

    /// This segment's nonce: its identity, carried by every [`Block`] and
    /// [`BlockToken`] it makes, checked by every operation that takes one.
    fn segment_nonce(&self) -> u64 {
        segment_nonce(self.matrix())
    }

    /// Allocates a block for one `T` (at least 16 bytes), tagged with `T`'s
    /// layout. Its bytes are whatever the memory held — a value, since every
    /// bit pattern of a [`ShmSafe`] type is one; use
    /// [`allocate_with`](Self::allocate_with) or
    /// [`allocate_zeroed`](Self::allocate_zeroed) to start from a known one.
    ///
    /// # Errors
    /// [`HandlerError::AllocationFailed`] when out of memory (with the largest
    /// free block) or when `T` needs more than 16-byte alignment.
    #[inline]
    fn allocate<T: ShmSafe>(&self) -> Result<Block<T>, HandlerError> {
        allocate_n::<T>(self.matrix(), 1)
    }

    /// Allocates a block for one `T` and moves `value` into it, before any
    /// other thread or process can have a handle to the block.
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate).
    fn allocate_with<T: ShmSafe>(&self, value: T) -> Result<Block<T>, HandlerError> {
        let block = allocate_n::<T>(self.matrix(), 1)?;
        let ptr = checked_payload(self.matrix(), &block, 1)?;
        // SAFETY: checked_payload proved a live block of this mapping holding
        // one T, 16-aligned. The block was allocated just now by this thread
        // and its handle has not left this function, so nothing else reads or
        // writes it (a stale handle of the previous occupant is refused by its
        // generation). Volatile: the memory is shared with other processes.
        unsafe { ptr.write_volatile(value) };
        Ok(block)
    }

    /// Allocates a block for one `T` whose bytes are all zero (a value of
    /// every [`ShmSafe`] type).
    ///
    /// # Errors
    /// As [`allocate`](Self::allocate).
    fn allocate_zeroed<T: ShmSafe>(&self) -> Result<Block<T>, HandlerError> {
        let block = allocate_n::<T>(self.matrix(), 1)?;
        let ptr = checked_payload(self.matrix(), &block, 1)?;
        // SAFETY: as in allocate_with; all-zero bytes are a valid T because
        // every bit pattern of a ShmSafe type is.
        unsafe { std::ptr::write_bytes(ptr, 0, 1) };
        Ok(block)
    }

    /// A shared reference to the block's `T`, after the checks of
    /// [`read_pod`](Self::read_pod) (this segment's handle, current
    /// generation, live block, payload large enough).
    ///
    /// This is how processes share a structure: its fields that change are
    /// atomics, which give the interior mutability, and any other field is
    /// written before the block is shared and only read afterwards. The
    /// reference borrows both the handler and the handle, so this handle
    /// cannot be freed, and its mapping cannot be dropped, while it lives.
    /// Another handle to the same block (rebuilt from a token) can still be
    /// freed meanwhile — the reference then reads the memory's next contents,
    /// still a `T` because every bit pattern is one; writing a non-atomic
    /// field through [`write_pod`](Self::write_pod) while such a reference
    /// lives is a data race, as for any memory shared with other processes.
    fn get<'a, T: ShmSafe>(&'a self, block: &'a Block<T>) -> Result<&'a T, HandlerError> {
        let ptr = checked_payload(self.matrix(), block, 1)?;
        // SAFETY: checked_payload proved a live block of this mapping whose
        // payload holds a T, 16-aligned; any bytes are a valid T (ShmSafe),
        // and the mapping outlives 'a because the handler is borrowed for 'a.
        Ok(unsafe { &*ptr })
    }

    /// The block's elements as a shared slice, checked as [`get`](Self::get)
    /// for all `block.len()` of them.
    fn get_slice<'a, T: ShmSafe>(&'a self, block: &'a Block<T>) -> Result<&'a [T], HandlerError> {
        let ptr = checked_payload(self.matrix(), block, block.len())?;
        // SAFETY: as in get, for block.len() consecutive elements, all inside
        // the payload (checked_payload compared len × size_of::<T>() with it).
        Ok(unsafe { std::slice::from_raw_parts(ptr as *const T, block.len()) })
    }

    /// Allocates a block for `len` consecutive `T`, all bytes zero (a valid
    /// value of every [`ShmSafe`] type): the array form of
    /// [`allocate_zeroed`](Self::allocate_zeroed).
    ///
    /// # Errors
    /// As [`allocate_slice`](Self::allocate_slice).
    fn allocate_array<T: ShmSafe>(&self, len: usize) -> Result<Block<T>, HandlerError> {
        let block = allocate_n::<T>(self.matrix(), len)?;
        let ptr = checked_payload(self.matrix(), &block, len)?;
        // SAFETY: as in allocate_zeroed, for `len` elements inside the
        // payload (checked_payload compared len × size_of::<T>() with it).
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(block)
    }

    /// Resizes the block to hold `len` elements, keeping the first
    /// `min(len, block.len())` of them, and returns the new handle. In place
    /// when the block can shrink, grow into the wilderness or absorb the
    /// free block after it; otherwise the elements are copied to a new block
    /// and the old one is freed. Elements beyond the old length are zero.
    ///
    /// **The handle rule:** on success `block` is replaced by a new handle
    /// that, in place or not, carries a new generation: every other handle
    /// or token of the old block (a copy made with `block_at` or
    /// `block_from_token`) is stale from then on and refused. Returns how
    /// the resize was done. Of two resizes of one block at once (through
    /// two handles on two threads, or by two participants of a
    /// segment-owned block) exactly one succeeds; the other is refused as
    /// not live or stale, its handle unchanged (two threads are both
    /// refused only if one is descheduled mid-resize for a whole bounded
    /// wait; see `matrix_core::realloc`).
    ///
    /// # Errors
    /// A stale or foreign handle, a block that is not live, a block owned
    /// by another participant ([`HandlerError::NotOwner`]), a size that
    /// cannot fit, or no memory for a move: then the block and `block` are
    /// unchanged, and `block` stays valid. One error comes after the resize:
    /// if the resized block stops being live before its new elements are
    /// zeroed (another participant freed or resized a segment-owned block
    /// meanwhile), the error is returned with `block` already replaced by
    /// the new handle (the old one is stale either way) and nothing zeroed.
    fn reallocate<T: ShmSafe>(
        &self,
        block: &mut Block<T>,
        len: usize,
    ) -> Result<ResizeKind, HandlerError> {
        check_nonce(self.matrix(), block.nonce())?;
        let elem = std::mem::size_of::<T>() as u64;
        let (bytes, len32, max_payload) = slice_bytes::<T>(self.matrix(), len)?;
        if bytes > max_payload {
            return Err(slice_too_large::<T>(len, max_payload));
        }
        let old_bytes = elem * block.len() as u64;
        let r = self
            .matrix()
            .reallocate(block.header_offset(), block.generation(), bytes)?;
        // Before anything else can fail: the old handle is stale from here.
        *block = Block::new(
            block.nonce(),
            r.offset + BLOCK_HEADER_SIZE,
            r.generation,
            len32,
        );
        if bytes > old_bytes {
            let ptr = checked_payload(self.matrix(), block, len)? as *mut u8;
            // SAFETY: checked_payload proved the payload holds `bytes` bytes
            // of a live block of this mapping that this thread just resized;
            // the range
            // [old_bytes, bytes) is inside it.
            unsafe {
                std::ptr::write_bytes(ptr.add(old_bytes as usize), 0, (bytes - old_bytes) as usize)
            };
        }
        Ok(r.kind)
    }

    /// Resizes the untyped block at payload offset `ptr` (as returned by
    /// [`allocate_raw`](Self::allocate_raw)) to `size` bytes, whatever its
    /// generation; returns its payload offset (the same one when resized in
    /// place). Bytes beyond the old size are not initialized.
    ///
    /// # Errors
    /// As [`reallocate`](Self::reallocate).
    fn reallocate_raw(
        &self,
        ptr: RelativePtr<u8>,
        size: u32,
    ) -> Result<RelativePtr<u8>, HandlerError> {
        let header = ptr
            .offset()
            .checked_sub(BLOCK_HEADER_SIZE)
            .ok_or(HandlerError::InvalidOffset(ptr.offset()))?;
        let (hdr, _) = self.matrix().block_header(header)?;
        // Acquire: pairs with the Release of the word's last change; the
        // core re-checks this generation in the CAS that takes the block.
        let generation = state::generation_of(hdr.state.load(Ordering::Acquire));
        let r = self.matrix().reallocate(header, generation, size as u64)?;
        Ok(RelativePtr::new(r.offset + BLOCK_HEADER_SIZE))
    }

    /// The block's owner: a participant, or the segment.
    ///
    /// # Errors
    /// A stale or foreign handle, or a block that is not live.
    fn owner_of<T>(&self, block: &Block<T>) -> Result<OwnerId, HandlerError> {
        check_nonce(self.matrix(), block.nonce())?;
        // Acquire: pairs with the Release of the word's last change.
        let word = header_of(self.matrix(), block)?
            .state
            .load(Ordering::Acquire);
        check_word(block, word)?;
        if !state::is_live(state::state_of(word)) {
            return Err(BlockError::NotLive {
                offset: block.header_offset(),
                state: state::state_of(word),
            }
            .into());
        }
        Ok(OwnerId(state::owner_of(word)))
    }

    /// Copies `values` into the block's elements starting at `at`, checked
    /// as [`write_slice`](Self::write_slice) (and `at + values.len()` ≤
    /// `block.len()`), for any `ShmSafe + Copy` element type.
    fn write_elems<T: ShmSafe + Copy>(
        &self,
        block: &mut Block<T>,
        at: usize,
        values: &[T],
    ) -> Result<(), HandlerError> {
        let end = at.checked_add(values.len()).filter(|&e| e <= block.len());
        let Some(end) = end else {
            return Err(HandlerError::SliceTooLarge {
                len: at as u64 + values.len() as u64,
                elem_size: std::mem::size_of::<T>() as u64,
                max_payload: block.len() as u64 * std::mem::size_of::<T>() as u64,
            });
        };
        let ptr = checked_payload(self.matrix(), block, end)?;
        // SAFETY: checked_payload proved `end` elements inside the payload of
        // a live block of this mapping; the source is process memory, so the
        // ranges cannot overlap; the caller holds `&mut Block`, the writer's
        // handle. T is Copy, so no drop is skipped.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), ptr.add(at), values.len()) };
        Ok(())
    }

    /// Allocates a block for `len` consecutive `T`.
    ///
    /// # Errors
    /// [`HandlerError::SliceTooLarge`] when `len × size_of::<T>()` overflows
    /// or `len` exceeds `u32::MAX`; [`HandlerError::AllocationFailed`] when
    /// the bytes exceed the segment or no free block fits.
    fn allocate_slice<T: Pod>(&self, len: usize) -> Result<Block<T>, HandlerError> {
        allocate_n::<T>(self.matrix(), len)
    }

    /// A handle for the calling thread that owns its block cache: the
    /// fastest allocate / free path, with the same checks (see
    /// [`LocalHandler`](crate::LocalHandler)). It is not `Send`; make one
    /// per thread.
    fn local(&self) -> crate::LocalHandler {
        crate::LocalHandler::new(self.matrix())
    }

    /// Allocates `size` untyped bytes; returns the payload offset. Free it
    /// with [`free_raw`](Self::free_raw), which takes what this returns.
    #[inline]
    fn allocate_raw(&self, size: u32) -> Result<RelativePtr<u8>, HandlerError> {
        Ok(self.matrix().allocate(size as u64, 0)?)
    }

    /// Writes `value` into the block without checking its state or generation.
    ///
    /// # Safety
    /// - `block` is live (not freed) and was allocated for a `T` by this segment.
    /// - No other thread or process reads or writes the payload concurrently.
    ///
    /// # Panics
    /// If `block` belongs to another segment or would reach past the end of
    /// this mapping (checked so that even a broken promise stays in bounds).
    ///
    /// For plain-old-data types prefer the checked [`write_pod`](Self::write_pod).
    unsafe fn write<T>(&self, block: &mut Block<T>, value: T) {
        let ptr = unchecked_payload::<T>(self.matrix(), block);
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
    ///
    /// # Panics
    /// As [`write`](Self::write).
    unsafe fn read<'a, T>(&self, block: &Block<T>) -> &'a T {
        let ptr = unchecked_payload::<T>(self.matrix(), block);
        // SAFETY: forwarded to the caller's guarantees above.
        unsafe { &*ptr }
    }

    /// An exclusive reference to the block's `T`.
    ///
    /// # Safety
    /// As [`read`](Self::read), and no other reference to the payload (in any
    /// thread or process) exists while this one lives.
    ///
    /// # Panics
    /// As [`write`](Self::write).
    unsafe fn read_mut<'a, T>(&self, block: &Block<T>) -> &'a mut T {
        let ptr = unchecked_payload::<T>(self.matrix(), block);
        // SAFETY: forwarded to the caller's guarantees above.
        unsafe { &mut *ptr }
    }

    /// Copies the block's `T` out, after checking that the handle is this
    /// segment's and current, the block live, and its payload (read from the
    /// header under the same validation) large enough for the handle's
    /// `len` elements. A concurrent writer in another process can make the
    /// copy torn, but for a `Pod` type every bit pattern is a valid value.
    fn read_pod<T: Pod>(&self, block: &Block<T>) -> Result<T, HandlerError> {
        let ptr = checked_payload(self.matrix(), block, 1)?;
        // SAFETY: checked_payload proved a live block of this mapping whose
        // payload holds at least one T, 16-aligned; T is Pod so any bytes
        // are a valid T. Volatile: the memory is shared with other processes.
        Ok(unsafe { ptr.read_volatile() })
    }

    /// Writes `value`, checked as [`read_pod`](Self::read_pod).
    fn write_pod<T: Pod>(&self, block: &mut Block<T>, value: T) -> Result<(), HandlerError> {
        let ptr = checked_payload(self.matrix(), block, 1)?;
        // SAFETY: as in read_pod; the caller holds `&mut Block`, the block's
        // ownership token, so this participant is its writer.
        unsafe { ptr.write_volatile(value) };
        Ok(())
    }

    /// Copies `values` into the block's slice, checked as
    /// [`read_pod`](Self::read_pod) and `values.len()` ≤ `block.len()`.
    fn write_slice<T: Pod>(&self, block: &mut Block<T>, values: &[T]) -> Result<(), HandlerError> {
        let ptr = checked_payload(self.matrix(), block, values.len())?;
        // SAFETY: checked_payload proved a live block of this mapping whose
        // payload holds values.len() elements; source and destination cannot
        // overlap (one is process memory).
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), ptr, values.len()) };
        Ok(())
    }

    /// Copies the block's slice into `out`, checked as
    /// [`read_pod`](Self::read_pod) and `out.len()` ≤ `block.len()`.
    fn read_slice<T: Pod>(&self, block: &Block<T>, out: &mut [T]) -> Result<(), HandlerError> {
        let ptr = checked_payload(self.matrix(), block, out.len())?;
        // SAFETY: as in write_slice, in the other direction; T is Pod.
        unsafe { std::ptr::copy_nonoverlapping(ptr as *const T, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Frees a block. A double free, a stale handle, a handle of another
    /// segment or a block in a reserved state is an error and changes nothing.
    #[inline]
    fn free<T>(&self, block: Block<T>) -> Result<(), HandlerError> {
        check_nonce(self.matrix(), block.nonce())?;
        Ok(self
            .matrix()
            .free(block.header_offset(), Some(block.generation()))?)
    }

    /// Frees the block whose header is at `header_offset`, whatever its
    /// generation: the specification's name, for code that walks headers
    /// ([`BlockInfo::offset`](crate::BlockInfo::offset)). Code holding a
    /// payload offset uses [`free_raw`](Self::free_raw) instead.
    #[inline]
    fn free_at(&self, header_offset: u32) -> Result<(), HandlerError> {
        Ok(self.matrix().free(header_offset, None)?)
    }

    /// Frees the block whose payload is `payload` (what
    /// [`allocate_raw`](Self::allocate_raw) returned, a registry entry's
    /// [`payload`](crate::BlockInfo::payload)), whatever its generation.
    /// A payload offset that names no block is
    /// [`HandlerError::InvalidOffset`]; a double free is refused.
    #[inline]
    fn free_raw(&self, payload: RelativePtr<u8>) -> Result<(), HandlerError> {
        let header = payload
            .offset()
            .checked_sub(BLOCK_HEADER_SIZE)
            .ok_or(HandlerError::InvalidOffset(payload.offset()))?;
        Ok(self.matrix().free(header, None)?)
    }

    /// Rebuilds a handle from a payload offset received from elsewhere,
    /// validating bounds, alignment, that a live block starts there, that it
    /// holds at least one `T`, and that it was not allocated for another
    /// layout. The state word is read before and after the size, tag and
    /// requested length, and must not change in between, so the handle's
    /// `len` always comes from the block it names.
    fn block_at<T>(&self, offset: u32) -> Result<Block<T>, HandlerError> {
        validate_block::<T>(self.matrix(), offset, None)
    }

    /// As [`block_at`](Self::block_at), and the token must be this
    /// segment's and the block still the generation the token was made from.
    fn block_from_token<T>(&self, token: BlockToken) -> Result<Block<T>, HandlerError> {
        check_nonce(self.matrix(), token.nonce())?;
        validate_block::<T>(
            self.matrix(),
            token.offset(),
            Some((token.generation(), (1 << TOKEN_GENERATION_BITS) - 1)),
        )
    }

    /// [`block_from_token`](Self::block_from_token), then this participant
    /// made the block's owner if `from` owns it now (as
    /// `matrix().set_owner_of(offset, generation, Some(from), owner_id())`),
    /// with one validation of the header for both: how a consumer takes a
    /// block handed over through the segment.
    ///
    /// The owner change is one CAS from the state word the validation read
    /// (twice, around the size, tag and length it checked) to that word
    /// naming this participant; if it succeeds, the block is the one
    /// validated. If the word changed in between (a free, a recovery, an
    /// owner change), the change is judged afresh by `set_owner_of` at the
    /// generation found, which refuses a block no longer live, of another
    /// generation, or not `from`'s.
    ///
    /// # Errors
    /// Those of [`block_from_token`](Self::block_from_token); then
    /// [`BlockError::NotLive`], [`BlockError::Stale`] or
    /// [`BlockError::Corrupted`] (another owner than `from`) from the owner
    /// change, which then changed nothing.
    #[inline]
    fn adopt_token<T>(&self, token: BlockToken, from: OwnerId) -> Result<Block<T>, HandlerError> {
        let matrix = self.matrix();
        check_nonce(matrix, token.nonce())?;
        let (block, view) = validate_view::<T>(
            matrix,
            token.offset(),
            Some((token.generation(), (1 << TOKEN_GENERATION_BITS) - 1)),
        )?;
        matrix.set_owner_from(
            view.hdr,
            view.offset,
            view.word,
            Some(from),
            matrix.owner_id(),
        )?;
        Ok(block)
    }

    /// Makes this participant the block's owner (after receiving it from
    /// another process), so recovery ties it to this process's life.
    fn adopt<T>(&self, block: &Block<T>) -> Result<(), HandlerError> {
        checked_header(self.matrix(), block, 0)?;
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
        checked_header(self.matrix(), block, 0)?;
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
        check_nonce(self.matrix(), block.nonce())?;
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
    /// that no longer exists reads whatever the header holds, and a handle
    /// that names no block here (another segment's, or a bad offset) reads
    /// FREE; use [`try_get_state`](Self::try_get_state) to have that checked.
    ///
    /// Any `order` is accepted: a load has no release half, so `Release`
    /// and `AcqRel` load with `Acquire` (the strongest load ordering short
    /// of `SeqCst`, which is kept for callers that ask for it) instead of
    /// panicking as a bare atomic load would.
    fn get_state<T>(&self, block: &Block<T>, order: Ordering) -> u32 {
        if check_nonce(self.matrix(), block.nonce()).is_err() {
            return state::FREE;
        }
        match header_of(self.matrix(), block) {
            Ok(hdr) => state::state_of(hdr.state.load(load_ordering(order))),
            Err(_) => state::FREE,
        }
    }

    /// The block's current state, refusing a stale handle or one of another
    /// segment. Any `order` is accepted, as in [`get_state`](Self::get_state).
    fn try_get_state<T>(&self, block: &Block<T>, order: Ordering) -> Result<u32, HandlerError> {
        check_nonce(self.matrix(), block.nonce())?;
        let word = header_of(self.matrix(), block)?
            .state
            .load(load_ordering(order));
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
    /// - A stale handle, or one of another segment, is refused.
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
        check_nonce(self.matrix(), block.nonce())?;
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

/// A borrowed handle is a handle: structures that own their handler
/// (`WorkQueue<T, H>`, `Registry<H>`) can be given `&handler`.
impl<H: HandlerFunctions> HandlerFunctions for &H {
    #[inline]
    fn matrix(&self) -> &AtomicMatrix {
        (**self).matrix()
    }
}

/// A reference-counted handle is a handle (e.g. one `Arc<MatrixHandler>`
/// shared by structures and threads).
impl<H: HandlerFunctions> HandlerFunctions for std::sync::Arc<H> {
    #[inline]
    fn matrix(&self) -> &AtomicMatrix {
        (**self).matrix()
    }
}

/// How many times a header read is retried while the state word keeps
/// changing under it before the validation gives up.
const HEADER_READ_RETRIES: u32 = 64;

#[inline]
fn segment_nonce(matrix: &AtomicMatrix) -> u64 {
    // Relaxed: written once by the formatter before its Release store of
    // READY, which creating or opening this mapping Acquired; never changed.
    matrix.header().nonce.load(Ordering::Relaxed)
}

#[inline]
fn check_nonce(matrix: &AtomicMatrix, found: u64) -> Result<(), HandlerError> {
    let expected = segment_nonce(matrix);
    if found != expected {
        return Err(HandlerError::ForeignHandle { expected, found });
    }
    Ok(())
}

/// The ordering a load can use for what the caller asked: a load cannot
/// release, so `Release` and `AcqRel` become `Acquire`.
#[inline]
fn load_ordering(order: Ordering) -> Ordering {
    match order {
        Ordering::Release | Ordering::AcqRel => Ordering::Acquire,
        other => other,
    }
}

fn slice_too_large<T>(len: usize, max_payload: u64) -> HandlerError {
    HandlerError::SliceTooLarge {
        len: len as u64,
        elem_size: std::mem::size_of::<T>() as u64,
        max_payload,
    }
}

/// The bytes of `len` elements of `T` (checked), `len` as the handle's
/// `u32`, and the largest payload this segment can hold.
#[inline]
fn slice_bytes<T>(matrix: &AtomicMatrix, len: usize) -> Result<(u64, u32, u64), HandlerError> {
    let max_payload = (matrix.segment_size() - matrix.first_block_offset())
        .saturating_sub(BLOCK_HEADER_SIZE) as u64;
    let bytes = (std::mem::size_of::<T>() as u64)
        .checked_mul(len as u64)
        .ok_or_else(|| slice_too_large::<T>(len, max_payload))?;
    let len32 = u32::try_from(len).map_err(|_| slice_too_large::<T>(len, max_payload))?;
    Ok((bytes, len32, max_payload))
}

#[inline]
fn allocate_n<T>(matrix: &AtomicMatrix, len: usize) -> Result<Block<T>, HandlerError> {
    let align = std::mem::align_of::<T>();
    if align > 16 {
        return Err(AllocError::Unaligned { align }.into());
    }
    let (bytes, len32, max_payload) = slice_bytes::<T>(matrix, len)?;
    // Refused here, before the allocator adds the header size to it.
    if bytes > max_payload {
        return Err(AllocError::TooLarge {
            requested: bytes,
            max_payload,
        }
        .into());
    }
    let ptr = matrix.allocate(bytes, layout_tag::<T>())?;
    let (hdr, _) = matrix.block_header(ptr.offset() - BLOCK_HEADER_SIZE)?;
    // Relaxed: this thread stored the word when it allocated the block.
    let generation = state::generation_of(hdr.state.load(Ordering::Relaxed));
    Ok(Block::new(
        segment_nonce(matrix),
        ptr.offset(),
        generation,
        len32,
    ))
}

/// The payload pointer for the unchecked accessors. Their callers promise a
/// live block of this segment; the two asserts keep even a broken promise
/// (a handle of another segment) from reaching outside this mapping.
#[inline]
fn unchecked_payload<T>(matrix: &AtomicMatrix, block: &Block<T>) -> *mut T {
    if let Err(e) = check_nonce(matrix, block.nonce()) {
        panic!("{e}");
    }
    let end = block.offset() as u64 + std::mem::size_of::<T>() as u64;
    assert!(
        end <= matrix.segment_size() as u64,
        "a {} B value at offset {} reaches past the {} B segment",
        std::mem::size_of::<T>(),
        block.offset(),
        matrix.segment_size()
    );
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

/// One consistent reading of a block header: the size, tag and requested
/// length all belong to the allocation that `word` names.
struct HeaderView<'m> {
    /// The header itself (genuine: its check word was valid).
    hdr: &'m BlockHeader,
    /// Header offset.
    offset: u32,
    word: u64,
    payload: u32,
    tag: u32,
    requested: u32,
}

/// Reads the header in front of `payload_offset` seqlock style: state word,
/// then size, tag and requested, then the state word again, retried until
/// both state reads agree. A generation is never reused, so equal words
/// mean no free or re-allocation (the only things that change a block's
/// size) happened in between. The size is bounded by this mapping and the
/// wilderness, so the payload it gives is safe to access.
#[inline]
fn read_header(matrix: &AtomicMatrix, payload_offset: u32) -> Result<HeaderView<'_>, HandlerError> {
    let offset = payload_offset
        .checked_sub(BLOCK_HEADER_SIZE)
        .ok_or(HandlerError::InvalidOffset(payload_offset))?;
    // Alignment, bounds against `top` and a genuine header (its check
    // word). The size is not read there: the loop below reads it between
    // two equal state words, with `top` after it, and judges it (bounds,
    // alignment, NotLive for a leftover header, else Corrupted) as
    // `block_header` would, but on one consistent snapshot.
    let hdr = matrix.genuine_header(offset)?;
    for _ in 0..HEADER_READ_RETRIES {
        // Acquire: pairs with the Release store of the state word that
        // published the allocation (owner, tag, requested, size before it).
        let word = hdr.state.load(Ordering::Acquire);
        // Acquire, all three: the second state load below cannot move
        // before them (the reader's half of the seqlock); the size load also
        // pairs with the Release store that shrinks or grows a block, which
        // the allocator makes only after the state word left the block's
        // last generation.
        let size = hdr.size.load(Ordering::Acquire);
        let tag = hdr.type_tag.load(Ordering::Acquire);
        let requested = hdr.requested.load(Ordering::Acquire);
        // Nothing above `top` is a block. Read after the size: a grow into
        // the wilderness moves `top` before it stores the larger size
        // (Release), so this Acquire load, ordered after the size's Acquire,
        // sees the `top` of any grow whose size was read. Read before the
        // second state load: `top` moves down over a block only after the
        // block was freed, which changes its word. It also pairs with the
        // carve's CAS on `top` and recovery's Release store of it.
        let top = matrix.header().top.load(Ordering::Acquire);
        // Acquire: as the first load.
        if hdr.state.load(Ordering::Acquire) != word {
            std::hint::spin_loop();
            continue;
        }
        let limit = (matrix.segment_size() as u64).min(top as u64);
        if size < MIN_BLOCK || size % BLOCK_ALIGN != 0 || offset as u64 + size as u64 > limit {
            // A leftover header over the wilderness (see the allocator's
            // checked_header) is not live: no block is there, none damaged.
            if !state::is_live(state::state_of(word)) {
                return Err(BlockError::NotLive {
                    offset,
                    state: state::state_of(word),
                }
                .into());
            }
            return Err(BlockError::Corrupted {
                offset,
                what: "impossible block size",
            }
            .into());
        }
        return Ok(HeaderView {
            hdr,
            offset,
            word,
            payload: size - BLOCK_HEADER_SIZE,
            tag,
            requested,
        });
    }
    Err(HandlerError::HeaderChanged { offset })
}

/// Validates a handle before its block is used: this segment's nonce, a
/// current generation, a live state, `count` ≤ `block.len()`, and the
/// handle's `len × size_of::<T>()` within the payload read from the header
/// under the same validation.
#[inline]
fn checked_header<'m, T>(
    matrix: &'m AtomicMatrix,
    block: &Block<T>,
    count: usize,
) -> Result<HeaderView<'m>, HandlerError> {
    check_nonce(matrix, block.nonce())?;
    let view = read_header(matrix, block.offset())?;
    check_word(block, view.word)?;
    let st = state::state_of(view.word);
    if !state::is_live(st) {
        return Err(BlockError::NotLive {
            offset: view.offset,
            state: st,
        }
        .into());
    }
    let elem = std::mem::size_of::<T>() as u64;
    if count > block.len() {
        return Err(BlockError::TooSmall {
            offset: view.offset,
            payload: (block.len() as u64)
                .saturating_mul(elem)
                .min(u32::MAX as u64) as u32,
            needed: (count as u64).saturating_mul(elem),
        }
        .into());
    }
    match (block.len() as u64).checked_mul(elem) {
        Some(bytes) if bytes <= view.payload as u64 => Ok(view),
        bytes => Err(BlockError::TooSmall {
            offset: view.offset,
            payload: view.payload,
            needed: bytes.unwrap_or(u64::MAX),
        }
        .into()),
    }
}

/// [`checked_header`], then the payload pointer.
#[inline]
fn checked_payload<T>(
    matrix: &AtomicMatrix,
    block: &Block<T>,
    count: usize,
) -> Result<*mut T, HandlerError> {
    let view = checked_header(matrix, block, count)?;
    let start = view.offset as usize + BLOCK_HEADER_SIZE as usize;
    // In bounds: read_header bounded the block by this mapping's length.
    Ok(matrix.base_ptr().wrapping_add(start) as *mut T)
}

fn validate_block<T>(
    matrix: &AtomicMatrix,
    offset: u32,
    // The generation the caller expects, and which of its bits it knows.
    generation: Option<(u64, u64)>,
) -> Result<Block<T>, HandlerError> {
    validate_view(matrix, offset, generation).map(|(block, _)| block)
}

/// [`validate_block`], and the header reading the handle was built from.
#[inline]
fn validate_view<T>(
    matrix: &AtomicMatrix,
    offset: u32,
    generation: Option<(u64, u64)>,
) -> Result<(Block<T>, HeaderView<'_>), HandlerError> {
    if std::mem::align_of::<T>() > 16 {
        return Err(AllocError::Unaligned {
            align: std::mem::align_of::<T>(),
        }
        .into());
    }
    let view = read_header(matrix, offset)?;
    let st = state::state_of(view.word);
    if !state::is_live(st) {
        return Err(BlockError::NotLive {
            offset: view.offset,
            state: st,
        }
        .into());
    }
    let found = state::generation_of(view.word);
    if let Some((expected, mask)) = generation {
        if expected != found & mask {
            return Err(BlockError::Stale {
                offset: view.offset,
                expected,
                found,
            }
            .into());
        }
    }
    let payload = view.payload as u64;
    let elem = std::mem::size_of::<T>() as u64;
    if elem > payload {
        return Err(BlockError::TooSmall {
            offset: view.offset,
            payload: view.payload,
            needed: elem,
        }
        .into());
    }
    if view.tag != 0 && view.tag != layout_tag::<T>() {
        return Err(BlockError::TypeMismatch {
            offset: view.offset,
            expected: layout_tag::<T>(),
            found: view.tag,
        }
        .into());
    }
    // requested ≤ payload, so len × elem ≤ payload: the handle never claims
    // more than the block it names.
    let requested = (view.requested as u64).min(payload);
    let len = requested.max(elem).checked_div(elem).unwrap_or(1) as u32;
    Ok((Block::new(segment_nonce(matrix), offset, found, len), view))
}
