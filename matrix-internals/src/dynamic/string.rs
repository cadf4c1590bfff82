//! `ShmString` (UTF-8) and `ShmBytes` (raw bytes) over `ShmVec<u8>`.

use super::{DynError, OwnsBlocks, ShmVec};
use matrix_handler::{BlockToken, HandlerFunctions, ResizeKind, ShmSafe};

/// A growable UTF-8 string in the segment. Every method that adds bytes
/// takes `&str` or `char`, so the bytes stay UTF-8; bytes changed behind
/// its back (another process writing the buffer) are caught when read
/// ([`DynError::InvalidUtf8`]).
#[derive(ShmSafe, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ShmString {
    bytes: ShmVec<u8>,
}

impl ShmString {
    /// An empty string; allocates nothing.
    pub const fn new() -> Self {
        Self {
            bytes: ShmVec::new(),
        }
    }

    /// An empty string with room for `capacity` bytes.
    ///
    /// # Errors
    /// As [`ShmVec::try_reserve`].
    pub fn with_capacity<H: HandlerFunctions>(h: &H, capacity: usize) -> Result<Self, DynError> {
        Ok(Self {
            bytes: ShmVec::with_capacity(h, capacity)?,
        })
    }

    /// A copy of `s`.
    ///
    /// # Errors
    /// As [`ShmVec::try_reserve`].
    pub fn from_str<H: HandlerFunctions>(h: &H, s: &str) -> Result<Self, DynError> {
        Ok(Self {
            bytes: ShmVec::from_slice(h, s.as_bytes())?,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes the buffer holds without growing.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The buffer's token.
    pub fn token(&self) -> BlockToken {
        self.bytes.token()
    }

    /// Makes room for `additional` more bytes.
    ///
    /// # Errors
    /// As [`ShmVec::try_reserve`].
    pub fn try_reserve<H: HandlerFunctions>(
        &mut self,
        h: &H,
        additional: usize,
    ) -> Result<Option<ResizeKind>, DynError> {
        self.bytes.try_reserve(h, additional)
    }

    /// Appends `s`.
    ///
    /// # Errors
    /// As [`ShmVec::try_reserve`].
    pub fn push_str<H: HandlerFunctions>(&mut self, h: &H, s: &str) -> Result<(), DynError> {
        self.bytes.extend_from_slice(h, s.as_bytes())
    }

    /// Appends `c`.
    ///
    /// # Errors
    /// As [`ShmVec::try_reserve`].
    pub fn push<H: HandlerFunctions>(&mut self, h: &H, c: char) -> Result<(), DynError> {
        self.push_str(h, c.encode_utf8(&mut [0; 4]))
    }

    /// Shortens the string to `len` bytes, which must be a character
    /// boundary.
    ///
    /// # Errors
    /// [`DynError::NotCharBoundary`]; as [`as_str`](Self::as_str).
    pub fn truncate<H: HandlerFunctions>(&mut self, h: &H, len: usize) -> Result<(), DynError> {
        if len >= self.len() {
            return Ok(());
        }
        if !self.as_str(h)?.is_char_boundary(len) {
            return Err(DynError::NotCharBoundary { index: len });
        }
        self.bytes.truncate(h, len)
    }

    /// Empties the string; keeps the buffer.
    ///
    /// # Errors
    /// As [`ShmVec::clear`].
    pub fn clear<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        self.bytes.clear(h)
    }

    /// Shrinks the buffer to the length.
    ///
    /// # Errors
    /// As [`ShmVec::shrink_to_fit`].
    pub fn shrink_to_fit<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        self.bytes.shrink_to_fit(h)
    }

    /// The string, read in place, its UTF-8 checked.
    ///
    /// # Errors
    /// As [`ShmVec::as_slice`], or [`DynError::InvalidUtf8`].
    pub fn as_str<'a, H: HandlerFunctions>(&'a self, h: &'a H) -> Result<&'a str, DynError> {
        std::str::from_utf8(self.bytes.as_slice(h)?).map_err(|e| DynError::InvalidUtf8 {
            valid_up_to: e.valid_up_to(),
        })
    }

    /// The bytes, read in place.
    ///
    /// # Errors
    /// As [`ShmVec::as_slice`].
    pub fn as_bytes<'a, H: HandlerFunctions>(&'a self, h: &'a H) -> Result<&'a [u8], DynError> {
        self.bytes.as_slice(h)
    }

    /// See [`ShmVec::adopt`].
    ///
    /// # Errors
    /// As [`ShmVec::adopt`].
    pub fn adopt<H: HandlerFunctions>(&self, h: &H) -> Result<(), DynError> {
        self.bytes.adopt(h)
    }

    /// See [`ShmVec::release_to_segment`].
    ///
    /// # Errors
    /// As [`ShmVec::adopt`].
    pub fn release_to_segment<H: HandlerFunctions>(&self, h: &H) -> Result<(), DynError> {
        self.bytes.release_to_segment(h)
    }
}

impl OwnsBlocks for ShmString {
    fn free_blocks<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        self.bytes.free_blocks(h)
    }
    fn visit_blocks<H: HandlerFunctions>(&self, h: &H, visit: &mut dyn FnMut(BlockToken)) {
        self.bytes.visit_blocks(h, visit)
    }
}

/// A growable byte buffer in the segment: a [`ShmVec<u8>`] with byte-string
/// names.
#[derive(ShmSafe, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ShmBytes {
    bytes: ShmVec<u8>,
}

impl ShmBytes {
    /// An empty buffer; allocates nothing.
    pub const fn new() -> Self {
        Self {
            bytes: ShmVec::new(),
        }
    }

    /// A copy of `bytes`.
    ///
    /// # Errors
    /// As [`ShmVec::try_reserve`].
    pub fn from_slice<H: HandlerFunctions>(h: &H, bytes: &[u8]) -> Result<Self, DynError> {
        Ok(Self {
            bytes: ShmVec::from_slice(h, bytes)?,
        })
    }

    /// The underlying vector.
    pub fn as_vec(&self) -> &ShmVec<u8> {
        &self.bytes
    }

    /// The underlying vector, for every `ShmVec` operation.
    pub fn as_vec_mut(&mut self) -> &mut ShmVec<u8> {
        &mut self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `bytes`.
    ///
    /// # Errors
    /// As [`ShmVec::try_reserve`].
    pub fn extend_from_slice<H: HandlerFunctions>(
        &mut self,
        h: &H,
        bytes: &[u8],
    ) -> Result<(), DynError> {
        self.bytes.extend_from_slice(h, bytes)
    }

    /// The bytes, read in place.
    ///
    /// # Errors
    /// As [`ShmVec::as_slice`].
    pub fn as_slice<'a, H: HandlerFunctions>(&'a self, h: &'a H) -> Result<&'a [u8], DynError> {
        self.bytes.as_slice(h)
    }
}

impl OwnsBlocks for ShmBytes {
    fn free_blocks<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        self.bytes.free_blocks(h)
    }
    fn visit_blocks<H: HandlerFunctions>(&self, h: &H, visit: &mut dyn FnMut(BlockToken)) {
        self.bytes.visit_blocks(h, visit)
    }
}
