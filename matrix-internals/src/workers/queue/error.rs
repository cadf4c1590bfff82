//! The queue's error and report types.

use super::WorkQueue;
use super::MAX_QUEUE_CAPACITY;
use crate::tables::RegistryError;
use matrix_handler::{Block, BlockToken, HandlerError, HandlerFunctions};
use std::fmt;

/// Why a queue could not be created or opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// `create` found the name taken.
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// The capacity is 0 or above [`MAX_QUEUE_CAPACITY`].
    InvalidCapacity {
        /// The capacity asked for.
        requested: u32,
    },
    /// The offset does not hold a queue of this element type.
    NotAQueue {
        /// Payload offset.
        offset: u32,
        /// What is wrong.
        what: &'static str,
    },
    /// `destroy` found a slot claimed by a live participant: the queue is
    /// still in use.
    InUse,
    /// Looking the name up failed (missing, wrong type, registry full…).
    Registry(RegistryError),
    /// `destroy` was given a name registered for another queue.
    NotThisQueue {
        /// The name.
        name: String,
        /// Payload offset of the queue registered under it.
        registered: u32,
        /// Payload offset of the queue being destroyed.
        offset: u32,
    },
    /// Allocating or validating a block failed.
    Handler(HandlerError),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::AlreadyExists { name } => {
                write!(f, "a queue named {name:?} already exists: open it instead")
            }
            QueueError::InvalidCapacity { requested } => {
                write!(
                    f,
                    "queue capacity {requested} is not in 1..={MAX_QUEUE_CAPACITY}"
                )
            }
            QueueError::NotAQueue { offset, what } => {
                write!(f, "no queue at offset {offset}: {what}")
            }
            QueueError::InUse => write!(
                f,
                "the queue is still in use: a live participant is pushing or popping"
            ),
            QueueError::Registry(e) => write!(f, "queue name: {e}"),
            QueueError::NotThisQueue {
                name,
                registered,
                offset,
            } => write!(
                f,
                "{name:?} names the queue at offset {registered}, not this one at {offset}: \
                 pass this queue's own name, or None"
            ),
            QueueError::Handler(e) => write!(f, "queue block: {e}"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Registry(e) => Some(e),
            QueueError::Handler(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RegistryError> for QueueError {
    fn from(e: RegistryError) -> Self {
        QueueError::Registry(e)
    }
}

impl From<HandlerError> for QueueError {
    fn from(e: HandlerError) -> Self {
        QueueError::Handler(e)
    }
}

/// Why [`WorkQueue::destroy`] did not finish: the error, and the queue
/// handed back (untouched when the name was refused; see `destroy`).
pub struct DestroyError<T, H: HandlerFunctions> {
    /// What went wrong.
    pub error: QueueError,
    pub(super) queue: WorkQueue<T, H>,
}

impl<T, H: HandlerFunctions> DestroyError<T, H> {
    /// The queue that was not destroyed.
    pub fn into_queue(self) -> WorkQueue<T, H> {
        self.queue
    }
}

impl<T, H: HandlerFunctions> fmt::Debug for DestroyError<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DestroyError")
            .field("error", &self.error)
            .field("queue", &self.queue)
            .finish()
    }
}

impl<T, H: HandlerFunctions> fmt::Display for DestroyError<T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "queue at offset {} not destroyed: {}",
            self.queue.offset(),
            self.error
        )
    }
}

impl<T, H: HandlerFunctions> std::error::Error for DestroyError<T, H> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T, H: HandlerFunctions> From<DestroyError<T, H>> for QueueError {
    fn from(e: DestroyError<T, H>) -> Self {
        e.error
    }
}

/// Why a push did not happen; every variant gives the block back.
pub enum PushError<T> {
    /// Every slot is taken.
    Full(Block<T>),
    /// The queue is closed.
    Closed(Block<T>),
    /// `push_timeout` waited its whole timeout.
    Timeout(Block<T>),
    /// The block is not a live, current block of this segment, or the
    /// segment owns it already (`HandlerError::NotOwner`; see
    /// [`WorkQueue::try_push`]).
    Refused(Block<T>, HandlerError),
}

impl<T> PushError<T> {
    /// The block that was not pushed.
    pub fn into_block(self) -> Block<T> {
        match self {
            PushError::Full(b)
            | PushError::Closed(b)
            | PushError::Timeout(b)
            | PushError::Refused(b, _) => b,
        }
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full(b) => f.debug_tuple("Full").field(b).finish(),
            PushError::Closed(b) => f.debug_tuple("Closed").field(b).finish(),
            PushError::Timeout(b) => f.debug_tuple("Timeout").field(b).finish(),
            PushError::Refused(b, e) => f.debug_tuple("Refused").field(b).field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full(_) => write!(f, "the queue is full"),
            PushError::Closed(_) => write!(f, "the queue is closed"),
            PushError::Timeout(_) => write!(f, "the queue stayed full until the timeout"),
            PushError::Refused(_, e) => write!(f, "the block cannot be queued: {e}"),
        }
    }
}

impl<T> std::error::Error for PushError<T> {}

/// Why a pop returned no block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PopError {
    /// Nothing to take right now.
    Empty,
    /// Closed, and everything pushed has been taken.
    Closed,
    /// `pop_timeout` waited its whole timeout.
    Timeout,
    /// The slot held a token that is not a live block of the queue's type
    /// (the segment was damaged); the slot was skipped.
    Corrupted {
        /// The token found.
        token: BlockToken,
        /// Why it was refused.
        error: HandlerError,
    },
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Empty => write!(f, "the queue is empty"),
            PopError::Closed => write!(f, "the queue is closed and drained"),
            PopError::Timeout => write!(f, "the queue stayed empty until the timeout"),
            PopError::Corrupted { token, error } => {
                write!(
                    f,
                    "skipped a damaged queue entry {:#x}: {error}",
                    token.word()
                )
            }
        }
    }
}

impl std::error::Error for PopError {}

/// What [`WorkQueue::recover`](super::WorkQueue::recover) repaired.
#[derive(Debug)]
pub struct QueueRecovery<T> {
    /// Pushes of dead producers that were complete and are now delivered.
    pub pushes_completed: u32,
    /// Pushes of dead producers that never handed their block over; their
    /// slots became holes.
    pub pushes_abandoned: u32,
    /// Blocks a dead consumer had claimed but not adopted, delivered again.
    pub redelivered: u32,
    /// Slots of dead consumers that had already adopted their block (the
    /// handler's `recover()` reclaims those blocks).
    pub pops_finished: u32,
    /// Slots of dead consumers left for later because the queue was full
    /// (they are finished when a producer reaches them, or by another
    /// `recover()`).
    pub deferred: u32,
    /// Blocks a dead consumer had claimed but not adopted, in a queue that
    /// is closed (so they cannot be delivered again): they are now owned
    /// by the caller.
    pub unplaced: Vec<Block<T>>,
}

impl<T> Default for QueueRecovery<T> {
    fn default() -> Self {
        QueueRecovery {
            pushes_completed: 0,
            pushes_abandoned: 0,
            redelivered: 0,
            pops_finished: 0,
            deferred: 0,
            unplaced: Vec::new(),
        }
    }
}
