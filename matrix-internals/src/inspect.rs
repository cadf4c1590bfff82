//! Reading the segment's shared structures from outside, without becoming a
//! participant: what an operator's tool (`matrix stat`) shows about the
//! registry and the queues found through it.
//!
//! ```text
//!  Observer (read-only, no slot) ─┐
//!  AtomicMatrix (a participant) ──┴► SegmentMemory ──► RegistryRecord::root
//!                                                      └► QueueStats::read
//! ```
//!
//! Every offset read from the segment is validated before it is resolved
//! (a live block starts there with enough payload, inside the mapping), and
//! every count is bounded, so hostile or corrupt bytes give an
//! [`InspectError`] or a damaged entry, never a panic or an access out of
//! bounds. Nothing here writes to the segment, takes a lock, or waits.
//! Values are read with the structures' own protocols (an entry's seqlock)
//! where they have one, and are otherwise a snapshot that may be stale by
//! the time it is shown.

use crate::sync::Ordering::Acquire;
use matrix_core::{alloc, state, Arena, AtomicMatrix, BlockError, BLOCK_HEADER_SIZE};
use std::fmt;

pub use crate::tables::{
    EntryDamage, EntryRecord, EntryState, ObjectBlock, ObjectKind, RegistryRecord,
};
pub use crate::workers::{QueueStats, CLAIMANTS_LISTED};
/// The read-only view tools open a segment with (`Observer::open(name)`),
/// named here so that a crate depending on this one alone can use it.
pub use matrix_core::Observer;

mod sealed {
    pub trait Sealed {}
    impl Sealed for matrix_core::Observer {}
    impl Sealed for matrix_core::AtomicMatrix {}
}

/// A mapped segment whose structures can be read: an [`Observer`] (no
/// participant slot; what tools use) or an attached [`AtomicMatrix`]
/// (`handler.matrix()`). Sealed: the readers rely on the base pointer and
/// size describing one live mapping.
pub trait SegmentMemory: Arena + sealed::Sealed {
    /// This process's base address of the mapping.
    fn base_ptr(&self) -> *const u8;
    /// Length of the mapping in bytes.
    fn mapped_len(&self) -> u64;
}

impl SegmentMemory for Observer {
    fn base_ptr(&self) -> *const u8 {
        Observer::base_ptr(self)
    }
    fn mapped_len(&self) -> u64 {
        self.segment_size()
    }
}

impl SegmentMemory for AtomicMatrix {
    fn base_ptr(&self) -> *const u8 {
        AtomicMatrix::base_ptr(self)
    }
    fn mapped_len(&self) -> u64 {
        self.segment_size() as u64
    }
}

/// Why a structure could not be read at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InspectError {
    /// No live block starts at the payload offset (garbage offset, a freed
    /// object, a damaged header).
    NoBlock {
        /// The payload offset read from the segment.
        offset: u32,
        /// What the allocator says about it.
        error: BlockError,
    },
    /// The block is smaller than the structure needs.
    TooSmall {
        /// Payload offset.
        offset: u32,
        /// Its payload bytes.
        payload: u32,
        /// Bytes the structure needs.
        needed: u64,
    },
    /// The block does not start with the structure's magic number.
    WrongMagic {
        /// Payload offset.
        offset: u32,
        /// The structure looked for.
        expected: &'static str,
        /// The first word found.
        found: u64,
    },
    /// A field holds a value the structure never writes.
    Impossible {
        /// Payload offset of the structure.
        offset: u32,
        /// Which field, and what is wrong with it.
        what: String,
    },
}

impl fmt::Display for InspectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InspectError::NoBlock { offset, error } => {
                write!(f, "no live block at payload offset {offset}: {error}")
            }
            InspectError::TooSmall {
                offset,
                payload,
                needed,
            } => write!(
                f,
                "the block at payload offset {offset} has {payload} B, the structure needs {needed} B"
            ),
            InspectError::WrongMagic {
                offset,
                expected,
                found,
            } => write!(
                f,
                "payload offset {offset} does not hold a {expected} (first word {found:#018x})"
            ),
            InspectError::Impossible { offset, what } => {
                write!(f, "payload offset {offset}: {what}")
            }
        }
    }
}

impl std::error::Error for InspectError {}

/// Checks that a live block starts at `payload_offset` with at least
/// `bytes` of payload inside the mapping; returns its payload bytes.
pub(crate) fn region<M: SegmentMemory>(
    mem: &M,
    payload_offset: u32,
    bytes: u64,
) -> Result<u32, InspectError> {
    let no_block = |error| InspectError::NoBlock {
        offset: payload_offset,
        error,
    };
    let header = payload_offset
        .checked_sub(BLOCK_HEADER_SIZE)
        .ok_or(no_block(BlockError::OutOfBounds {
            offset: payload_offset,
            arena_start: mem.arena_start(),
            arena_end: mem.arena_end(),
        }))?;
    let (hdr, size) = alloc::checked_header(mem, header).map_err(no_block)?;
    // Acquire: pairs with the Release that published the block's state.
    let st = state::state_of(hdr.state.load(Acquire));
    if !state::is_live(st) {
        return Err(no_block(BlockError::NotLive {
            offset: header,
            state: st,
        }));
    }
    let payload = size - BLOCK_HEADER_SIZE;
    if (payload as u64) < bytes {
        return Err(InspectError::TooSmall {
            offset: payload_offset,
            payload,
            needed: bytes,
        });
    }
    if payload_offset as u64 + payload as u64 > mem.mapped_len() {
        return Err(no_block(BlockError::OutOfBounds {
            offset: header,
            arena_start: mem.arena_start(),
            arena_end: mem.arena_end(),
        }));
    }
    Ok(payload)
}

/// A reference to the `T` at absolute `offset` of the mapping.
///
/// # Safety
/// `offset .. offset + size_of::<T>()` lies in a region [`region`] checked
/// for this mapping, `offset` is aligned for `T`, and `T` is made only of
/// atomics and integers (any bit pattern is valid; shared access is free of
/// data races).
pub(crate) unsafe fn at<M: SegmentMemory, T>(mem: &M, offset: u64) -> &T {
    debug_assert!(offset + std::mem::size_of::<T>() as u64 <= mem.mapped_len());
    debug_assert_eq!(offset % std::mem::align_of::<T>() as u64, 0);
    // SAFETY: forwarded to the caller: in bounds of the live mapping that
    // `mem` keeps alive for the borrow; aligned; every bit pattern valid.
    unsafe { &*(mem.base_ptr().add(offset as usize) as *const T) }
}

/// The first word of the live block at `payload_offset` (Acquire: pairs
/// with the Release store of a structure's magic), if it has 8 bytes.
pub(crate) fn first_word<M: SegmentMemory>(mem: &M, payload_offset: u32) -> Option<u64> {
    region(mem, payload_offset, 8).ok()?;
    // SAFETY: 8 bytes of live payload checked just above; payload offsets
    // are 16-aligned; an AtomicU64 is valid for any bits.
    let word: &crate::sync::AtomicU64 = unsafe { at(mem, payload_offset as u64) };
    Some(word.load(Acquire))
}
