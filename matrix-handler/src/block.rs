//! Typed handles to blocks.

use matrix_core::{RelativePtr, BLOCK_HEADER_SIZE};
use std::fmt;
use std::marker::PhantomData;

/// A typed handle to an allocated block: the nonce of the segment it lives
/// in, its payload offset, the generation it was allocated at, and how many
/// `T` it holds.
///
/// A `Block` is an ownership token, not a reference: it is not `Clone`, and
/// `free` consumes it. Every safe operation checks its generation against
/// the block header, so a handle kept after its block was freed and the
/// memory re-allocated is refused ([`BlockError::Stale`]) instead of
/// aliasing the new occupant, and its segment nonce against the segment's,
/// so a handle used with another segment's handler is refused
/// ([`HandlerError::ForeignHandle`]) instead of resolving its offset in the
/// wrong mapping.
///
/// To send a block to another process, pass [`Block::token`] (offset and
/// generation) or [`Block::offset`] and rebuild it there with
/// `block_from_token` / `block_at`.
///
/// [`BlockError::Stale`]: matrix_core::BlockError::Stale
/// [`HandlerError::ForeignHandle`]: crate::HandlerError::ForeignHandle
pub struct Block<T> {
    nonce: u64,
    offset: u32,
    generation: u64,
    len: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Block<T> {
    pub(crate) fn new(nonce: u64, offset: u32, generation: u64, len: u32) -> Self {
        Self {
            nonce,
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

    /// Nonce of the segment the block lives in.
    #[inline]
    pub fn nonce(&self) -> u64 {
        self.nonce
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

    /// Segment nonce, offset and generation, for handing the block to
    /// another process (see [`BlockToken`]).
    #[inline]
    pub fn token(&self) -> BlockToken {
        BlockToken::new(self.offset, self.generation, self.nonce)
    }
}

impl<T> fmt::Debug for Block<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("type", &std::any::type_name::<T>())
            .field("nonce", &format_args!("{:#018x}", self.nonce))
            .field("offset", &self.offset)
            .field("generation", &self.generation)
            .field("len", &self.len)
            .finish()
    }
}

/// A block's segment nonce, payload offset and generation, safe to send
/// across processes; turn it back into a [`Block`] with `block_from_token`
/// on a handler of the same segment (another segment refuses it).
///
/// The offset and generation share one `u64`, the token's
/// [`word`](Self::word):
///
/// ```text
///  63                         28 27                 0
/// +-----------------------------+--------------------+
/// | generation, low 36 bits     | payload offset / 16|
/// +-----------------------------+--------------------+
/// ```
///
/// Payload offsets are multiples of 16, so 28 bits hold any offset of a
/// 4 GiB segment; the word carries the low [`TOKEN_GENERATION_BITS`] bits
/// of the block's 40-bit generation, and `block_from_token` compares those.
/// Structures inside one segment (a queue slot) store only the word and
/// rebuild the token with [`from_word`](Self::from_word) and that segment's
/// nonce; to send a whole token, use [`to_u128`](Self::to_u128) /
/// [`from_u128`](Self::from_u128).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct BlockToken {
    word: u64,
    nonce: u64,
}

/// Bits of the generation a [`BlockToken`] carries.
pub const TOKEN_GENERATION_BITS: u32 = 36;

impl BlockToken {
    /// The token of the block at payload `offset` (a multiple of 16) with
    /// `generation`, in the segment with `nonce`.
    #[inline]
    pub const fn new(offset: u32, generation: u64, nonce: u64) -> Self {
        let mask = (1u64 << TOKEN_GENERATION_BITS) - 1;
        Self {
            word: ((generation & mask) << 28) | (offset as u64 >> 4),
            nonce,
        }
    }
    /// A token from its [`word`](Self::word) and the nonce of the segment
    /// the block lives in.
    #[inline]
    pub const fn from_word(word: u64, nonce: u64) -> Self {
        Self { word, nonce }
    }
    /// Payload offset.
    #[inline]
    pub const fn offset(self) -> u32 {
        ((self.word & ((1 << 28) - 1)) << 4) as u32
    }
    /// The low [`TOKEN_GENERATION_BITS`] bits of the generation.
    #[inline]
    pub const fn generation(self) -> u64 {
        self.word >> 28
    }
    /// Whether a block's full `generation` is the one this token names.
    #[inline]
    pub const fn matches_generation(self, generation: u64) -> bool {
        generation & ((1 << TOKEN_GENERATION_BITS) - 1) == self.generation()
    }
    /// Nonce of the segment the block lives in.
    #[inline]
    pub const fn nonce(self) -> u64 {
        self.nonce
    }
    /// Offset and generation in one `u64`: what a structure inside the
    /// segment stores.
    #[inline]
    pub const fn word(self) -> u64 {
        self.word
    }
    /// The whole token in one integer: `nonce << 64 | word`.
    #[inline]
    pub const fn to_u128(self) -> u128 {
        ((self.nonce as u128) << 64) | self.word as u128
    }
    /// The token [`to_u128`](Self::to_u128) made.
    #[inline]
    pub const fn from_u128(value: u128) -> Self {
        Self {
            word: value as u64,
            nonce: (value >> 64) as u64,
        }
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
