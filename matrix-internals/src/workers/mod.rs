//! Moving blocks between threads and processes.
//!
//! - [`WorkQueue`]: a bounded multi-producer multi-consumer queue of
//!   `Block<T>` living in the segment, created under a name and opened by
//!   that name from any process. Blocks change owner as they travel
//!   (producer → segment → consumer), so a participant's death loses
//!   nothing once `recover()` has run.
//! - [`WorkerPool`]: N threads running a job for every block of a queue,
//!   with graceful shutdown and panic reporting.

mod pool;
mod queue;

pub use pool::{PanicReport, PoolReport, WorkerPool};
pub(crate) use queue::is_queue_magic;
pub use queue::{
    DestroyError, PopError, PushError, QueueError, QueueRecovery, QueueStats, WorkQueue,
    CLAIMANTS_LISTED, MAX_QUEUE_CAPACITY,
};
