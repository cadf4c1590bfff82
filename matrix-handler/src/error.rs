//! The handler's error type.

use matrix_core::{AllocError, BlockError, SegmentError};
use std::fmt;

/// Errors produced by [`MatrixHandler`](crate::MatrixHandler) and
/// [`SharedHandler`](crate::SharedHandler) operations. A failed operation
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// The allocator could not provide a block (out of memory, too large,
    /// unsupported alignment); the inner error says which and by how much.
    AllocationFailed(AllocError),
    /// Setting or transitioning to (or from) a reserved internal state (0–48).
    ReservedStatus(u32),
    /// The block was not in the expected state; carries the state found.
    TransitionFailed(u32),
    /// A user state beyond the largest the state word holds
    /// ([`STATE_MAX`](matrix_core::state::STATE_MAX)).
    StateOutOfRange {
        /// The state asked for.
        state: u32,
    },
    /// The offset is outside the segment or not where a block starts.
    InvalidOffset(u32),
    /// The block operation was refused: double free, stale handle, wrong type…
    Block(BlockError),
    /// The segment could not be created, opened or removed.
    Segment(SegmentError),
    /// The handle or token was made by another segment: its nonce is not
    /// this segment's. Its offset means nothing here.
    ForeignHandle {
        /// This segment's nonce.
        expected: u64,
        /// The nonce the handle carries.
        found: u64,
    },
    /// `len` elements of `elem_size` bytes cannot fit in any block of this
    /// segment (or their byte count does not fit in 64 bits).
    SliceTooLarge {
        /// Elements asked for.
        len: u64,
        /// Bytes per element.
        elem_size: u64,
        /// Largest payload the segment could hold.
        max_payload: u64,
    },
    /// The block header kept changing while it was validated: it is being
    /// freed, re-allocated or moved between states by someone else.
    HeaderChanged {
        /// Header offset.
        offset: u32,
    },
    /// The block belongs to another participant: only its owner (or anyone,
    /// for a block the segment owns) may resize or write it through the
    /// containers. Adopt it first.
    NotOwner {
        /// Header offset.
        offset: u32,
        /// Its owner (participant slot + 1).
        owner: u32,
    },
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::AllocationFailed(e) => write!(f, "allocation failed: {e}"),
            HandlerError::ReservedStatus(s) => write!(
                f,
                "state {s} is reserved for the allocator (0-48); user states start at {}",
                matrix_core::state::USER_STATE_MIN
            ),
            HandlerError::StateOutOfRange { state } => write!(
                f,
                "state {state} is out of range: user states are {}-{}",
                matrix_core::state::USER_STATE_MIN,
                matrix_core::state::STATE_MAX
            ),
            HandlerError::TransitionFailed(s) => {
                write!(f, "state transition failed: the block is in state {s}")
            }
            HandlerError::InvalidOffset(o) => write!(f, "offset {o} does not name a block"),
            HandlerError::Block(e) => e.fmt(f),
            HandlerError::Segment(e) => e.fmt(f),
            HandlerError::ForeignHandle { expected, found } => write!(
                f,
                "the handle belongs to another segment (nonce {found:#018x}, this segment's is \
                 {expected:#018x}): use it with a handler of the segment that made it"
            ),
            HandlerError::SliceTooLarge {
                len,
                elem_size,
                max_payload,
            } => write!(
                f,
                "a slice of {len} elements of {elem_size} B cannot fit in a block: a payload \
                 holds at most {max_payload} B in this segment; ask for fewer elements"
            ),
            HandlerError::HeaderChanged { offset } => write!(
                f,
                "block at {offset} changed while it was being validated (freed, re-allocated \
                 or moved between states concurrently): retry once its owner is done with it"
            ),
            HandlerError::NotOwner { offset, owner } => write!(
                f,
                "block at {offset} belongs to participant {owner}: only its owner may resize or \
                 write it; adopt it first"
            ),
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandlerError::AllocationFailed(e) => Some(e),
            HandlerError::Block(e) => Some(e),
            HandlerError::Segment(e) => Some(e),
            _ => None,
        }
    }
}

impl From<matrix_core::ReallocError> for HandlerError {
    fn from(e: matrix_core::ReallocError) -> Self {
        match e {
            matrix_core::ReallocError::Block(e) => e.into(),
            matrix_core::ReallocError::Alloc(e) => e.into(),
            matrix_core::ReallocError::NotOwner { offset, owner } => {
                HandlerError::NotOwner { offset, owner }
            }
        }
    }
}

impl From<AllocError> for HandlerError {
    fn from(e: AllocError) -> Self {
        HandlerError::AllocationFailed(e)
    }
}

impl From<SegmentError> for HandlerError {
    fn from(e: SegmentError) -> Self {
        HandlerError::Segment(e)
    }
}

impl From<BlockError> for HandlerError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::OutOfBounds { offset, .. }
            | BlockError::Misaligned { offset }
            | BlockError::NotABlock { offset } => HandlerError::InvalidOffset(offset),
            other => HandlerError::Block(other),
        }
    }
}
