//! [`WorkerPool`]: N threads consuming one [`WorkQueue`].
//!
//! ```text
//!   producers (any process) --push--> WorkQueue --pop--> worker 0 -> job(handler, block)
//!                                                  \---> worker 1 -> job(handler, block)
//!                                                   \--> ...
//! ```
//!
//! Each worker sleeps in `pop_timeout` while the queue is empty. A job that
//! panics is caught, recorded (worker, message, block token) and the worker
//! carries on. [`WorkerPool::shutdown`] stops the workers once the queue is
//! momentarily empty (they drain what is there first); [`WorkerPool::join`]
//! waits until the queue is closed and drained.

use super::queue::{PopError, WorkQueue};
use crate::sync::{AtomicBool, AtomicU64, Ordering::*};
use matrix_handler::{Block, BlockToken, HandlerFunctions};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long an idle worker sleeps before it looks at the stop flag again
/// (shutdown also wakes it at once).
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// A job that panicked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PanicReport {
    /// Index of the worker thread.
    pub worker: usize,
    /// The panic message (or a placeholder for a non-string payload).
    pub message: String,
    /// The block the job was given. It still belongs to this participant
    /// unless the job passed it on before panicking; rebuild it with
    /// `block_from_token` to free it.
    pub block: BlockToken,
}

/// What a pool did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// Jobs run to completion.
    pub completed: u64,
    /// Jobs that panicked.
    pub panics: Vec<PanicReport>,
    /// Damaged queue entries the workers skipped (see `PopError::Corrupted`).
    pub corrupted: Vec<String>,
}

struct PoolState {
    stop: AtomicBool,
    completed: AtomicU64,
    panics: Mutex<Vec<PanicReport>>,
    corrupted: Mutex<Vec<String>>,
}

/// N threads running a job for every block popped from a [`WorkQueue`].
pub struct WorkerPool {
    state: Arc<PoolState>,
    threads: Vec<JoinHandle<()>>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.threads.len())
            .field("completed", &self.completed())
            .finish()
    }
}

impl WorkerPool {
    /// Starts `workers` threads (at least one), each with its own clone of
    /// `queue`, running `job(handler, block)` for every block popped. The
    /// block is the job's: free it, keep it or pass it on.
    pub fn start<T, H, F>(
        queue: WorkQueue<T, H>,
        workers: usize,
        job: F,
    ) -> std::io::Result<WorkerPool>
    where
        T: 'static,
        H: HandlerFunctions + Clone + Send + Sync + 'static,
        F: Fn(&H, Block<T>) + Send + Sync + 'static,
    {
        let state = Arc::new(PoolState {
            stop: AtomicBool::new(false),
            completed: AtomicU64::new(0),
            panics: Mutex::new(Vec::new()),
            corrupted: Mutex::new(Vec::new()),
        });
        let job = Arc::new(job);
        let mut threads = Vec::with_capacity(workers.max(1));
        for worker in 0..workers.max(1) {
            let (mine, shared, job) = (queue.clone(), Arc::clone(&state), Arc::clone(&job));
            let spawned = std::thread::Builder::new()
                .name(format!("matrix-worker-{worker}"))
                .spawn(move || work(worker, &mine, &shared, &*job));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    // Stop the ones already running before reporting.
                    let partial = WorkerPool {
                        state,
                        threads,
                        wake: waker(queue),
                    };
                    drop(partial.shutdown());
                    return Err(e);
                }
            }
        }
        Ok(WorkerPool {
            state,
            threads,
            wake: waker(queue),
        })
    }

    /// Jobs completed so far.
    pub fn completed(&self) -> u64 {
        // Relaxed: a progress counter; no data is read through it.
        self.state.completed.load(Relaxed)
    }

    /// Jobs that panicked so far.
    pub fn panics(&self) -> Vec<PanicReport> {
        self.state
            .panics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Graceful stop: every worker drains the blocks in the queue now, then
    /// exits. Returns what the pool did.
    pub fn shutdown(mut self) -> PoolReport {
        // Release: a worker that Acquires the flag stops after draining.
        self.state.stop.store(true, Release);
        (self.wake)();
        self.join_threads()
    }

    /// Waits until the queue is closed (by anyone, in any process) and
    /// drained, then returns what the pool did.
    pub fn join(mut self) -> PoolReport {
        self.join_threads()
    }

    fn join_threads(&mut self) -> PoolReport {
        for handle in self.threads.drain(..) {
            // A worker's own panics are caught per job; a join error would be
            // a bug in the loop itself and is reported the same way.
            if let Err(payload) = handle.join() {
                self.state
                    .panics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(PanicReport {
                        worker: usize::MAX,
                        message: panic_message(&*payload),
                        block: BlockToken::from_word(0, 0),
                    });
            }
        }
        PoolReport {
            // Relaxed: every worker has been joined, which orders its increments before this.
            completed: self.state.completed.load(Relaxed),
            panics: std::mem::take(
                &mut *self.state.panics.lock().unwrap_or_else(|e| e.into_inner()),
            ),
            corrupted: std::mem::take(
                &mut *self
                    .state
                    .corrupted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            ),
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            // Release: as in shutdown.
            self.state.stop.store(true, Release);
            (self.wake)();
            self.join_threads();
        }
    }
}

fn waker<T: 'static, H: HandlerFunctions + Send + Sync + 'static>(
    queue: WorkQueue<T, H>,
) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || queue.wake_consumers())
}

fn work<T, H: HandlerFunctions>(
    worker: usize,
    queue: &WorkQueue<T, H>,
    state: &PoolState,
    job: &(dyn Fn(&H, Block<T>) + Sync),
) {
    loop {
        // Acquire: pairs with shutdown's Release.
        let stopping = state.stop.load(Acquire);
        let popped = if stopping {
            queue.try_pop()
        } else {
            queue.pop_timeout(IDLE_WAIT)
        };
        let block = match popped {
            Ok(block) => block,
            Err(PopError::Empty) | Err(PopError::Timeout) if !stopping => continue,
            Err(PopError::Empty) | Err(PopError::Timeout) | Err(PopError::Closed) => return,
            Err(e @ PopError::Corrupted { .. }) => {
                state
                    .corrupted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(e.to_string());
                continue;
            }
        };
        let token = block.token();
        match catch_unwind(AssertUnwindSafe(|| job(queue.handler(), block))) {
            // Relaxed: a counter, read after join or as a progress hint.
            Ok(()) => drop(state.completed.fetch_add(1, Relaxed)),
            Err(payload) => {
                state
                    .panics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(PanicReport {
                        worker,
                        message: panic_message(&*payload),
                        block: token,
                    })
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
