//! `ShmVec<T>`: a growable array in the segment.

use super::{walk, DynError, OwnsBlocks};
use matrix_handler::{Block, BlockToken, HandlerFunctions, OwnerId, ResizeKind, ShmSafe};
use std::marker::PhantomData;

/// A growable array of `T` whose buffer is a block of the segment; the
/// value itself (24 bytes) lives anywhere: in a block, in a record, in a
/// queue slot, on the stack.
///
/// Copying the value copies the reference to the buffer, not the elements
/// (as copying an offset would): mutate through one copy only, and free
/// once ([`OwnsBlocks::free_blocks`]); a second free is refused as stale.
#[derive(ShmSafe, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ShmVec<T> {
    buf: BlockToken,
    len: u32,
    cap: u32,
    _elem: PhantomData<T>,
}

const EMPTY: BlockToken = BlockToken::from_u128(0);

impl<T: ShmSafe + Copy + OwnsBlocks> Default for ShmVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: ShmSafe + Copy + OwnsBlocks> ShmVec<T> {
    const NOT_ZERO_SIZED: () = assert!(
        std::mem::size_of::<T>() > 0,
        "ShmVec needs elements of a non-zero size"
    );

    /// An empty vector; allocates nothing.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::NOT_ZERO_SIZED;
        Self {
            buf: EMPTY,
            len: 0,
            cap: 0,
            _elem: PhantomData,
        }
    }

    /// An empty vector with room for `capacity` elements.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve).
    pub fn with_capacity<H: HandlerFunctions>(h: &H, capacity: usize) -> Result<Self, DynError> {
        let mut v = Self::new();
        v.reserve_block(h, capacity, true)?;
        Ok(v)
    }

    /// A vector holding a copy of `values`.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve).
    pub fn from_slice<H: HandlerFunctions>(h: &H, values: &[T]) -> Result<Self, DynError> {
        let mut v = Self::with_capacity(h, values.len())?;
        v.extend_from_slice(h, values)?;
        Ok(v)
    }

    /// Elements stored.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements the buffer holds without growing.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// The buffer's token (zero nonce while nothing is allocated).
    pub fn token(&self) -> BlockToken {
        self.buf
    }

    /// The buffer's handle, validated (this segment's, current, live, at
    /// least `cap ≥ len` elements); `None` while nothing is allocated, which
    /// needs `len = cap = 0`. The value is plain bytes that another process
    /// or a torn write may have left inconsistent, so every method goes
    /// through here before it trusts `len` or `cap`.
    fn block<H: HandlerFunctions>(&self, h: &H) -> Result<Option<Block<T>>, DynError> {
        if self.buf.nonce() == 0 {
            if self.len != 0 || self.cap != 0 {
                return Err(DynError::Corrupted {
                    len: self.len,
                    capacity: 0,
                });
            }
            return Ok(None);
        }
        let b = h.block_from_token::<T>(self.buf)?;
        if self.len > self.cap || self.cap as usize > b.len() {
            return Err(DynError::Corrupted {
                len: self.len,
                capacity: b.len(),
            });
        }
        Ok(Some(b))
    }

    /// The buffer's handle for a mutation: it must be ours or the segment's.
    fn writable<H: HandlerFunctions>(&self, h: &H) -> Result<Option<Block<T>>, DynError> {
        let Some(b) = self.block(h)? else {
            return Ok(None);
        };
        let owner = h.owner_of(&b)?;
        if owner != h.matrix().owner_id() && owner != OwnerId::SEGMENT {
            return Err(DynError::NotWriter { owner: owner.0 });
        }
        Ok(Some(b))
    }

    /// Makes room for `additional` more elements; with `exact`, no more.
    /// Returns the buffer and, if it was resized, how.
    fn reserve_block<H: HandlerFunctions>(
        &mut self,
        h: &H,
        additional: usize,
        exact: bool,
    ) -> Result<(Option<Block<T>>, Option<ResizeKind>), DynError> {
        let block = self.writable(h)?;
        let need = (self.len as u64)
            .checked_add(additional as u64)
            .filter(|&n| n <= u32::MAX as u64)
            .ok_or(DynError::CapacityOverflow {
                requested: (self.len as u64).saturating_add(additional as u64),
            })?;
        if need <= self.cap as u64 {
            return Ok((block, None));
        }
        let new_cap = if exact {
            need
        } else {
            need.max(self.cap as u64 * 2).max(4).min(u32::MAX as u64)
        } as usize;
        let (b, kind) = match block {
            None => (h.allocate_array::<T>(new_cap)?, None),
            Some(mut b) => {
                let kind = h.reallocate(&mut b, new_cap)?;
                (b, Some(kind))
            }
        };
        self.buf = b.token();
        self.cap = u32::try_from(b.len()).unwrap_or(u32::MAX);
        Ok((Some(b), kind))
    }

    /// Makes room for at least `additional` more elements (the capacity at
    /// least doubles, so pushes are amortized O(1)). Returns how the buffer
    /// was resized, if it was (`None`: it had room, or was just allocated).
    ///
    /// # Errors
    /// [`DynError::CapacityOverflow`] beyond `u32::MAX` elements; out of
    /// memory; a stale or foreign buffer; [`DynError::NotWriter`].
    pub fn try_reserve<H: HandlerFunctions>(
        &mut self,
        h: &H,
        additional: usize,
    ) -> Result<Option<ResizeKind>, DynError> {
        Ok(self.reserve_block(h, additional, false)?.1)
    }

    /// Appends `value`; returns how the buffer was resized, if it was.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve).
    pub fn push<H: HandlerFunctions>(
        &mut self,
        h: &H,
        value: T,
    ) -> Result<Option<ResizeKind>, DynError> {
        let (b, kind) = self.reserve_block(h, 1, false)?;
        let mut b = b.expect("reserved a buffer");
        h.write_elems(&mut b, self.len as usize, &[value])?;
        self.len += 1;
        Ok(kind)
    }

    /// Appends copies of `values`.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve).
    pub fn extend_from_slice<H: HandlerFunctions>(
        &mut self,
        h: &H,
        values: &[T],
    ) -> Result<(), DynError> {
        if values.is_empty() {
            return Ok(());
        }
        let (b, _) = self.reserve_block(h, values.len(), false)?;
        let mut b = b.expect("reserved a buffer");
        h.write_elems(&mut b, self.len as usize, values)?;
        self.len += values.len() as u32;
        Ok(())
    }

    /// Replaces element `index` and returns the old one (with what it owns).
    ///
    /// # Errors
    /// As [`pop`](Self::pop); `Ok(None)` (nothing written) when `index` is
    /// out of range.
    pub fn replace<H: HandlerFunctions>(
        &mut self,
        h: &H,
        index: usize,
        value: T,
    ) -> Result<Option<T>, DynError> {
        if index >= self.len as usize {
            return Ok(None);
        }
        let mut b = self.writable(h)?.expect("non-empty");
        let old = self.as_slice(h)?[index];
        h.write_elems(&mut b, index, &[value])?;
        Ok(Some(old))
    }

    /// Removes the last element and gives it to the caller (with whatever
    /// blocks it owns).
    ///
    /// # Errors
    /// A stale or foreign buffer, [`DynError::NotWriter`].
    pub fn pop<H: HandlerFunctions>(&mut self, h: &H) -> Result<Option<T>, DynError> {
        if self.len == 0 {
            return Ok(None);
        }
        self.writable(h)?;
        let last = self.as_slice(h)?[self.len as usize - 1];
        self.len -= 1;
        Ok(Some(last))
    }

    /// Shortens the vector to `len` elements, freeing what the removed ones
    /// own (last first; on an error the vector keeps the ones not freed).
    ///
    /// # Errors
    /// As [`pop`](Self::pop), or an element's blocks could not be freed.
    pub fn truncate<H: HandlerFunctions>(&mut self, h: &H, len: usize) -> Result<(), DynError> {
        while self.len as usize > len {
            let mut last = self.pop(h)?.expect("longer than len");
            if let Err(e) = last.free_blocks(h) {
                self.len += 1;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes every element, freeing what they own; keeps the buffer.
    ///
    /// # Errors
    /// As [`truncate`](Self::truncate).
    pub fn clear<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        self.truncate(h, 0)
    }

    /// Shrinks the buffer to the length (frees it when empty).
    ///
    /// # Errors
    /// A stale or foreign buffer, [`DynError::NotWriter`].
    pub fn shrink_to_fit<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        let Some(mut b) = self.writable(h)? else {
            return Ok(());
        };
        if self.len == 0 {
            h.free(b)?;
            self.buf = EMPTY;
            self.cap = 0;
            return Ok(());
        }
        h.reallocate(&mut b, self.len as usize)?;
        self.buf = b.token();
        self.cap = u32::try_from(b.len()).unwrap_or(u32::MAX);
        Ok(())
    }

    /// The elements, read in place (zero-copy) at this process's mapping.
    ///
    /// # Errors
    /// A buffer that was freed (stale), of another segment (foreign), or
    /// shorter than the recorded length.
    pub fn as_slice<'a, H: HandlerFunctions>(&'a self, h: &'a H) -> Result<&'a [T], DynError> {
        let Some(b) = self.block(h)? else {
            return Ok(&[]);
        };
        let all = h.get_slice(&b)?;
        let (ptr, len) = (all.as_ptr(), self.len as usize);
        // SAFETY: `get_slice` validated `b.len() ≥ len` elements of a live
        // block inside `h`'s mapping, which lives as long as `h` is borrowed
        // ('a); T is ShmSafe, so every byte pattern there is a valid T
        // whatever another process writes later (the guarantee `get` gives,
        // which does not depend on the local handle `b` living on).
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// Element `index`, copied out.
    ///
    /// # Errors
    /// As [`as_slice`](Self::as_slice).
    pub fn get<H: HandlerFunctions>(&self, h: &H, index: usize) -> Result<Option<T>, DynError> {
        Ok(self.as_slice(h)?.get(index).copied())
    }

    /// Iterates over the elements in place.
    ///
    /// # Errors
    /// As [`as_slice`](Self::as_slice).
    pub fn iter<'a, H: HandlerFunctions>(
        &'a self,
        h: &'a H,
    ) -> Result<std::slice::Iter<'a, T>, DynError> {
        Ok(self.as_slice(h)?.iter())
    }

    /// Makes this participant the buffer's owner (the writer's hand-over
    /// after receiving the vector from another process). Not recursive:
    /// elements that own blocks are adopted by their own `adopt`.
    ///
    /// # Errors
    /// A stale or foreign buffer.
    pub fn adopt<H: HandlerFunctions>(&self, h: &H) -> Result<(), DynError> {
        if let Some(b) = self.block(h)? {
            h.adopt(&b)?;
        }
        Ok(())
    }

    /// Gives the buffer to the segment: it outlives this participant and
    /// any participant may write it (one at a time, by convention).
    ///
    /// # Errors
    /// As [`adopt`](Self::adopt).
    pub fn release_to_segment<H: HandlerFunctions>(&self, h: &H) -> Result<(), DynError> {
        if let Some(b) = self.block(h)? {
            h.release_to_segment(&b)?;
        }
        Ok(())
    }
}

impl<T: ShmSafe + Copy + OwnsBlocks> OwnsBlocks for ShmVec<T> {
    /// Frees the elements' blocks (last first), then the buffer. Any
    /// holder of the value may free it — a reader that received it
    /// through a queue is its last user — so no writer check is made.
    fn free_blocks<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        if self.buf.nonce() == 0 {
            return self.block(h).map(|_| ());
        }
        let Some(_entered) = walk::enter(self.buf)? else {
            // A cycle back to a buffer this walk is freeing: freed once, there.
            return Ok(());
        };
        while self.len > 0 {
            let mut last = self.as_slice(h)?[self.len as usize - 1];
            last.free_blocks(h)?;
            self.len -= 1;
        }
        if let Some(b) = self.block(h)? {
            h.free(b)?;
        }
        self.buf = EMPTY;
        self.cap = 0;
        Ok(())
    }

    fn visit_blocks<H: HandlerFunctions>(&self, h: &H, visit: &mut dyn FnMut(BlockToken)) {
        if self.buf.nonce() == 0 {
            return;
        }
        let Ok(Some(_entered)) = walk::enter(self.buf) else {
            return;
        };
        visit(self.buf);
        if let Ok(elems) = self.as_slice(h) {
            elems.iter().for_each(|e| e.visit_blocks(h, visit));
        }
    }
}
