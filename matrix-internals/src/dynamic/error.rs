//! Errors of the dynamic containers.

use matrix_handler::HandlerError;
use std::fmt;

/// Why a container operation was refused. A refused operation changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynError {
    /// The handler refused: a stale or foreign buffer, out of memory, a
    /// buffer of another participant, …
    Handler(HandlerError),
    /// The buffer belongs to another live participant: only one writer.
    NotWriter {
        /// The buffer's owner (participant slot + 1).
        owner: u32,
    },
    /// The capacity asked for does not fit in 32 bits of elements.
    CapacityOverflow {
        /// Elements asked for.
        requested: u64,
    },
    /// The bytes of a string are not UTF-8 (written by another process
    /// outside this API).
    InvalidUtf8 {
        /// Bytes that are valid.
        valid_up_to: usize,
    },
    /// A string cut not on a character boundary.
    NotCharBoundary {
        /// The byte index asked for.
        index: usize,
    },
    /// The container's length or capacity exceeds its buffer, or it records
    /// elements without a buffer (written outside this API, or torn).
    Corrupted {
        /// The recorded length.
        len: u32,
        /// The buffer's elements.
        capacity: usize,
    },
    /// Freeing or walking a value went through more nested buffers than
    /// one walk may (a chain of boxes longer than the limit). Blocks are
    /// freed on the way back up, so nothing on that chain was freed.
    TooDeep {
        /// Nested buffers one walk may enter ([`MAX_WALK_DEPTH`](super::MAX_WALK_DEPTH)).
        limit: u32,
    },
}

impl From<HandlerError> for DynError {
    fn from(e: HandlerError) -> Self {
        match e {
            HandlerError::NotOwner { owner, .. } => DynError::NotWriter { owner },
            e => DynError::Handler(e),
        }
    }
}

impl fmt::Display for DynError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DynError::Handler(e) => e.fmt(f),
            DynError::NotWriter { owner } => write!(
                f,
                "the buffer belongs to participant {owner}, another writer: adopt it (or \
                 give it to the segment) before writing"
            ),
            DynError::CapacityOverflow { requested } => {
                write!(
                    f,
                    "a capacity of {requested} elements does not fit in 32 bits"
                )
            }
            DynError::InvalidUtf8 { valid_up_to } => write!(
                f,
                "the string's bytes are not UTF-8 after byte {valid_up_to} (written outside \
                 ShmString)"
            ),
            DynError::NotCharBoundary { index } => {
                write!(f, "byte {index} is not on a character boundary")
            }
            DynError::Corrupted { len, capacity } => write!(
                f,
                "the container says {len} elements but its buffer holds {capacity} (written \
                 outside this API)"
            ),
            DynError::TooDeep { limit } => write!(
                f,
                "the value nests more than {limit} buffers deep: free a long chain from its \
                 end, a piece at a time"
            ),
        }
    }
}

impl std::error::Error for DynError {}
