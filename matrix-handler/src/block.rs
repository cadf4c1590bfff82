//! Typed handles to blocks.

use matrix_core::{RelativePtr, BLOCK_HEADER_SIZE};
use std::fmt;
use std::marker::PhantomData;

/// A typed handle to an allocated block: its payload offset, the generation
/// it was allocated at, and how many `T` it holds.
///
/// A `Block` is an ownership token, not a reference: it is not `Clone`, and
/// `free` consumes it. Every safe operation checks its generation against
/// the block header, so a handle kept after its block was freed and the
/// memory re-allocated is refused ([`BlockError::Stale`]) instead of
/// aliasing the new occupant.
///
/// To send a block to another process, pass [`Block::token`] (offset and
/// generation) or [`Block::offset`] and rebuild it there with
/// `block_from_token` / `block_at`.
///
/// [`BlockError::Stale`]: matrix_core::BlockError::Stale
pub struct Block<T> {
    offset: u32,
    generation: u64,
    len: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Block<T> {
    pub(crate) fn new(offset: u32, generation: u64, len: u32) -> Self {
        Self {
            offset,
            generation,
            len,
            _type: PhantomData,
        }
    }

    /// Payload offset from the segment base.
    #[inline]
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Offset of the block header (payload − 32), as `free_at` takes it.
    #[inline]
    pub fn header_offset(&self) -> u32 {
        self.offset - BLOCK_HEADER_SIZE
    }

    /// Generation the block was allocated at.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of `T` the block holds (1 unless made by `allocate_slice`).
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the block holds no `T` (a zero-length slice).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The payload as a typed offset.
    #[inline]
    pub fn relative_ptr(&self) -> RelativePtr<T> {
        RelativePtr::new(self.offset)
    }

    /// Offset and generation in one word, for handing the block to another
    /// process (see [`BlockToken`]).
    #[inline]
    pub fn token(&self) -> BlockToken {
        BlockToken::new(self.offset, self.generation)
    }
}

impl<T> fmt::Debug for Block<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("type", &std::any::type_name::<T>())
            .field("offset", &self.offset)
            .field("generation", &self.generation)
            .field("len", &self.len)
            .finish()
    }
}

/// A block's payload offset and generation packed in a `u64`, safe to send
/// across processes; turn it back into a [`Block`] with `block_from_token`.
///
/// ```text
///  63                         28 27                 0
/// +-----------------------------+--------------------+
/// | generation, low 36 bits     | payload offset / 16|
/// +-----------------------------+--------------------+
/// ```
///
/// Payload offsets are multiples of 16, so 28 bits hold any offset of a
/// 4 GiB segment. The token carries the low 36 bits of the block's 40-bit
/// generation; `block_from_token` compares those.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockToken(pub u64);

/// Bits of the generation a [`BlockToken`] carries.
pub const TOKEN_GENERATION_BITS: u32 = 36;

impl BlockToken {
    /// The token of the block at payload `offset` (a multiple of 16) with
    /// `generation`.
    pub fn new(offset: u32, generation: u64) -> Self {
        let mask = (1u64 << TOKEN_GENERATION_BITS) - 1;
        BlockToken(((generation & mask) << 28) | (offset as u64 >> 4))
    }
    /// Payload offset.
    pub fn offset(self) -> u32 {
        ((self.0 & ((1 << 28) - 1)) << 4) as u32
    }
    /// The low [`TOKEN_GENERATION_BITS`] bits of the generation.
    pub fn generation(self) -> u64 {
        self.0 >> 28
    }
    /// Whether a block's full `generation` is the one this token names.
    pub fn matches_generation(self, generation: u64) -> bool {
        generation & ((1 << TOKEN_GENERATION_BITS) - 1) == self.generation()
    }
}

/// The layout tag stored with blocks of `T`: a hash of its size and
/// alignment, never 0 (0 marks untyped bytes). `block_at::<T>` refuses a
/// block tagged for a different layout.
pub const fn layout_tag<T>() -> u32 {
    let size = std::mem::size_of::<T>() as u64;
    let align = std::mem::align_of::<T>() as u64;
    let mixed = (size.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ align.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        >> 32;
    (mixed as u32) | 1
}
