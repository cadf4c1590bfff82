//! Blocking push and pop: spin briefly, then sleep on a futex word.

use super::{who_of, PopError, PushError, QueueRecovery, WorkQueue, CLAIMANT_CHECK};
use crate::shm::{self, owner_alive};
use crate::sync::{fence, AtomicU32, Ordering::*};
use crossbeam_utils::Backoff;
use matrix_handler::{Block, HandlerFunctions};
use std::time::{Duration, Instant};

impl<T, H: HandlerFunctions> WorkQueue<T, H> {
    /// Pushes, sleeping while the queue is full, for at most `timeout`.
    #[inline]
    pub fn push_timeout(&self, block: Block<T>, timeout: Duration) -> Result<(), PushError<T>> {
        // A free slot at once (the common case) reads no clock.
        match self.try_push(block) {
            Err(PushError::Full(b)) => self.push_waiting(b, timeout),
            other => other,
        }
    }

    /// [`push_timeout`](Self::push_timeout) once the first try found the
    /// queue full: out of line, so the common case stays small.
    #[cold]
    #[inline(never)]
    fn push_waiting(&self, mut block: Block<T>, timeout: Duration) -> Result<(), PushError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        let q = self.header();
        let backoff = Backoff::new();
        loop {
            if backoff.is_completed() {
                let Some(budget) = remaining(deadline) else {
                    return Err(PushError::Timeout(block));
                };
                let seen = self.announce(&q.not_full, &q.producers_waiting);
                // The re-check after announcing (see `notify`).
                match self.try_push(block) {
                    Err(PushError::Full(b)) => block = b,
                    other => {
                        q.producers_waiting.fetch_sub(1, Relaxed);
                        return other;
                    }
                }
                // Acquire: pairs with `advance`'s Release.
                let pos = q.tail.load(Acquire);
                // A producer never takes a block over (may_take = false).
                let _ = self.sleep(&q.not_full, seen, budget, pos, false);
                // Relaxed: a late decrement costs at most a spurious wake.
                q.producers_waiting.fetch_sub(1, Relaxed);
            } else {
                backoff.snooze();
            }
            match self.try_push(block) {
                Err(PushError::Full(b)) => block = b,
                other => return other,
            }
        }
    }

    /// Pops, sleeping while the queue is empty, for at most `timeout`.
    #[inline]
    pub fn pop_timeout(&self, timeout: Duration) -> Result<Block<T>, PopError> {
        // A message at once (the common case) reads no clock.
        match self.try_pop() {
            Err(PopError::Empty) => self.pop_waiting(timeout),
            other => other,
        }
    }

    /// [`pop_timeout`](Self::pop_timeout) once the first try found the
    /// queue empty: out of line, so the common case stays small.
    #[cold]
    #[inline(never)]
    fn pop_waiting(&self, timeout: Duration) -> Result<Block<T>, PopError> {
        let deadline = Instant::now().checked_add(timeout);
        let q = self.header();
        let backoff = Backoff::new();
        loop {
            if backoff.is_completed() {
                let Some(budget) = remaining(deadline) else {
                    return Err(PopError::Timeout);
                };
                let seen = self.announce(&q.not_empty, &q.consumers_waiting);
                // The re-check after announcing (see `notify`).
                match self.try_pop() {
                    Err(PopError::Empty) => {}
                    other => {
                        q.consumers_waiting.fetch_sub(1, Relaxed);
                        return other;
                    }
                }
                // Acquire: pairs with `advance`'s Release.
                let pos = q.head.load(Acquire);
                let rescued = self.sleep(&q.not_empty, seen, budget, pos, true);
                // Relaxed: a late decrement costs at most a spurious wake.
                q.consumers_waiting.fetch_sub(1, Relaxed);
                if let Some(block) = rescued {
                    return Ok(block);
                }
            } else {
                backoff.snooze();
            }
            match self.try_pop() {
                Err(PopError::Empty) => {}
                other => return other,
            }
        }
    }

    /// Counts a sleeper in and returns the event value to sleep on; the
    /// caller must re-check the ring before sleeping.
    #[cold]
    fn announce(&self, event: &AtomicU32, waiting: &AtomicU32) -> u32 {
        // Relaxed + SeqCst fence: pairs with the SeqCst publish and count
        // load of `notify_published` (or the fence of `notify`): either the
        // other side sees this count, or our re-check sees its publish.
        waiting.fetch_add(1, Relaxed);
        fence(SeqCst);
        // Acquire: pairs with `wake`'s Release bump.
        event.load(Acquire)
    }

    /// Sleeps on `event` while it holds `seen`. If the slot of position
    /// `pos` (the one we wait on) is claimed by someone, sleeps at most
    /// [`CLAIMANT_CHECK`]; if that claimant died, repairs the slot instead
    /// (and returns a block recovery handed to us, see [`heal`](Self::heal)).
    #[cold]
    fn sleep(
        &self,
        event: &AtomicU32,
        seen: u32,
        budget: Duration,
        pos: u64,
        may_take: bool,
    ) -> Option<Block<T>> {
        // Acquire: pairs with the claimant's CAS.
        let who = who_of(self.slot(pos).stamp.load(Acquire));
        if who == 0 || who == self.owner {
            shm::futex_wait(event, seen, budget);
        } else if owner_alive(self.handler.matrix(), who) {
            shm::futex_wait(event, seen, budget.min(CLAIMANT_CHECK));
        } else {
            return self.heal(
                pos & (self.capacity as u64 - 1),
                &mut QueueRecovery::default(),
                may_take,
            );
        }
        None
    }
}

/// Time left until `deadline` (`None` when it has passed; no deadline
/// means an hour at a time).
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(Duration::from_secs(3600)),
        Some(d) => d
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero()),
    }
}
