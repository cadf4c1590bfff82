//! Time stamps with both clocks a run is measured by.
//!
//! - wall time (`Instant`): what two-thread rows report, since a thread
//!   blocked in a mutex or waiting on a queue is part of the cost;
//! - thread CPU time (`CLOCK_THREAD_CPUTIME_ID`, user + system): what
//!   single-thread rows report, since it leaves out the time the thread
//!   was not running — on a shared 2-core machine, other processes take
//!   the CPU away often enough to swamp a 20 ns operation.

use std::time::{Duration, Instant};

/// A point in both clocks, taken on the calling thread.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    wall: Instant,
    cpu: Duration,
}

impl Stamp {
    /// Now, on this thread.
    pub fn now() -> Stamp {
        Stamp {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }
}

/// How long a timed part took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// From the first thread's start to the last thread's end.
    pub wall: Duration,
    /// CPU time of all threads together.
    pub cpu: Duration,
}

impl Timing {
    /// One thread's span.
    pub fn between(start: Stamp, end: Stamp) -> Timing {
        Timing::across(&[(start, end)])
    }

    /// Several threads' spans (each `(start, end)` taken on its own thread).
    pub fn across(spans: &[(Stamp, Stamp)]) -> Timing {
        let Some(first) = spans.iter().map(|s| s.0.wall).min() else {
            return Timing::default();
        };
        let last = spans.iter().map(|s| s.1.wall).max().unwrap_or(first);
        let cpu = spans.iter().map(|s| s.1.cpu.saturating_sub(s.0.cpu)).sum();
        Timing {
            wall: last.saturating_duration_since(first),
            cpu,
        }
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances_with_work_and_spans_combine() {
        let start = Stamp::now();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let end = Stamp::now();
        let one = Timing::between(start, end);
        assert!(
            one.cpu > Duration::ZERO && one.wall > Duration::ZERO,
            "{one:?}"
        );
        let two = Timing::across(&[(start, end), (start, end)]);
        assert_eq!(two.wall, one.wall);
        assert_eq!(two.cpu, one.cpu * 2);
    }
}
