//! `ShmBox<T>`: one value in a block of its own.

use super::{walk, DynError, OwnsBlocks};
use matrix_handler::{BlockToken, HandlerFunctions, OwnerId, ShmSafe};
use std::marker::PhantomData;

/// One `T` in a block of its own, referred to by token: the way to put a
/// record (with container fields) behind one token that a queue carries.
#[derive(ShmSafe, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ShmBox<T> {
    buf: BlockToken,
    _value: PhantomData<T>,
}

impl<T: ShmSafe + Copy + OwnsBlocks> ShmBox<T> {
    /// Moves `value` into a new block.
    ///
    /// # Errors
    /// Out of memory.
    pub fn new<H: HandlerFunctions>(h: &H, value: T) -> Result<Self, DynError> {
        let b = h.allocate_with(value)?;
        Ok(Self {
            buf: b.token(),
            _value: PhantomData,
        })
    }

    /// The box of a token received from elsewhere (checked when read).
    pub fn from_token(token: BlockToken) -> Self {
        Self {
            buf: token,
            _value: PhantomData,
        }
    }

    /// The block's token (what a queue or the registry carries).
    pub fn token(&self) -> BlockToken {
        self.buf
    }

    /// The value, read in place.
    ///
    /// # Errors
    /// A stale or foreign token, a block of another type.
    pub fn get<'a, H: HandlerFunctions>(&'a self, h: &'a H) -> Result<&'a T, DynError> {
        let b = h.block_from_token::<T>(self.buf)?;
        let ptr: *const T = h.get(&b)?;
        // SAFETY: `get` validated a live block of `h`'s mapping holding a
        // T; the mapping lives while `h` is borrowed ('a), and T is
        // ShmSafe (see ShmVec::as_slice).
        Ok(unsafe { &*ptr })
    }

    /// Replaces the value (the old one is returned, with what it owns).
    ///
    /// # Errors
    /// As [`get`](Self::get), or [`DynError::NotWriter`].
    pub fn replace<H: HandlerFunctions>(&mut self, h: &H, value: T) -> Result<T, DynError> {
        let mut b = h.block_from_token::<T>(self.buf)?;
        let owner = h.owner_of(&b)?;
        if owner != h.matrix().owner_id() && owner != OwnerId::SEGMENT {
            return Err(DynError::NotWriter { owner: owner.0 });
        }
        let old = *h.get(&b)?;
        h.write_elems(&mut b, 0, &[value])?;
        Ok(old)
    }

    /// Makes this participant the block's owner (not recursive).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn adopt<H: HandlerFunctions>(&self, h: &H) -> Result<(), DynError> {
        h.adopt(&h.block_from_token::<T>(self.buf)?)?;
        Ok(())
    }
}

impl<T: ShmSafe + Copy + OwnsBlocks> OwnsBlocks for ShmBox<T> {
    fn free_blocks<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        if self.buf.nonce() == 0 {
            return Ok(());
        }
        let Some(_entered) = walk::enter(self.buf)? else {
            // A cycle back to a box this walk is freeing: freed once, there.
            return Ok(());
        };
        let b = h.block_from_token::<T>(self.buf)?;
        let mut inner = *h.get(&b)?;
        inner.free_blocks(h)?;
        h.free(b)?;
        self.buf = BlockToken::from_u128(0);
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
        if let Ok(inner) = self.get(h) {
            inner.visit_blocks(h, visit);
        }
    }
}
