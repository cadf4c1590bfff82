//! Helpers shared by the runnable examples of AtomicMatrix (see `README.md`
//! next to this crate): segment clean-up guards, child processes that
//! re-execute the example itself, a monotonic clock that two processes
//! agree on, a latency histogram that lives in shared memory, and Ctrl-C
//! handling.
//!
//! ```
//! use matrix_examples::{monotonic_ns, LatencyHistogram};
//! let mut h = LatencyHistogram::default();
//! let t0 = monotonic_ns();
//! h.record(monotonic_ns() - t0);
//! h.record(1_500);
//! assert_eq!(h.count(), 2);
//! assert!(h.percentile(100.0) >= 1_500);
//! ```

mod progress;
mod sync;

pub use progress::progress_target;

use bytemuck::{Pod, Zeroable};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use sync::{AtomicBool, AtomicU32, Ordering::Relaxed};

/// A segment name unique to this process: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // Relaxed: only uniqueness within this process matters.
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Relaxed)
    )
}

/// Removes `/dev/shm/<name>` when dropped: on success, on error, and while
/// unwinding from a panic.
#[derive(Debug)]
pub struct SegmentGuard {
    name: String,
}

impl SegmentGuard {
    /// Guards the segment `name`.
    pub fn new(name: &str) -> Self {
        SegmentGuard {
            name: name.to_owned(),
        }
    }

    /// The guarded name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for SegmentGuard {
    fn drop(&mut self) {
        // Already gone is fine: the example may have removed it itself.
        let _ = matrix_handler::unlink(&self.name);
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC`: one clock for every process on the
/// machine, so a time stamp written by one process can be compared with
/// the clock of another (one-way latency).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    // Relaxed: a flag polled by the main loop; nothing is published with it.
    INTERRUPTED.store(true, Relaxed);
}

/// Makes SIGINT (Ctrl-C) and SIGTERM set a flag instead of killing the
/// process, so the example can stop its children and remove its segment.
pub fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only stores to an atomic, which is
        // async-signal-safe; the handler is a plain `extern "C"` function.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
}

/// Whether Ctrl-C (or SIGTERM) arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    // Relaxed: see `on_interrupt`.
    INTERRUPTED.load(Relaxed)
}

/// Makes this process ignore Ctrl-C (its parent coordinates the stop) and
/// die with SIGKILL if its parent dies first, so no child outlives a killed
/// example.
pub fn child_process_setup() {
    // SAFETY: plain syscall with constant arguments.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // SAFETY: plain syscall with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The parent may have died before the line above took effect.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        std::process::exit(1);
    }
}

/// A child process running this same executable in another role. It is
/// killed and reaped when dropped, unless it already exited.
#[derive(Debug)]
pub struct ChildRole {
    child: Option<Child>,
    /// The status `exited` reaped, for a later `wait_timeout`.
    status: Option<ExitStatus>,
    role: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildRole {
    /// Starts `current_exe() <args>` with stdout piped (for the "ready"
    /// handshake and result lines; a thread reads it so the child never
    /// blocks on a full pipe) and stderr inherited.
    pub fn spawn(role: &str, args: &[String]) -> std::io::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The receiver may be gone; keep draining regardless.
                let _ = tx.send(line);
            }
        });
        Ok(ChildRole {
            child: Some(child),
            status: None,
            role: role.to_owned(),
            lines,
        })
    }

    /// The child's pid (0 once reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for a line of the child's stdout starting with `prefix` and
    /// returns the rest of it; earlier lines are skipped. Fails if the child
    /// closes its stdout first or `timeout` passes.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        self.read_until(prefix, timeout, false)
    }

    /// As [`wait_for_line`](Self::wait_for_line), printing the earlier lines
    /// on this process's stdout (the child's narration).
    pub fn relay_until(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        self.read_until(prefix, timeout, true)
    }

    fn read_until(
        &mut self,
        prefix: &str,
        timeout: Duration,
        relay: bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                    if relay {
                        println!("{line}");
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{} did not report {prefix:?} in time", self.role))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("{} ended without reporting {prefix:?}", self.role))
                }
            }
        }
    }

    /// The child's exit status if it has exited (reaping it), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.status = Some(status);
        Some(status)
    }

    /// Waits for the child to exit, at most `timeout`; kills it after that.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return self
                .status
                .ok_or_else(|| format!("{} was already reaped", self.role));
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Ok(status);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    self.kill();
                    return Err(format!(
                        "{} did not finish in time and was killed",
                        self.role
                    ));
                }
                Err(e) => return Err(format!("waiting for {}: {e}", self.role)),
            }
        }
    }

    /// SIGKILLs the child and reaps it; returns how it ended.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for ChildRole {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Buckets per power of two in [`LatencyHistogram`].
const SUB_BUCKETS: u64 = 16;
/// Buckets of [`LatencyHistogram`]: 16 per power of two, up to 2^35 ns (about 34 s); longer samples land in the last bucket.
pub const HISTOGRAM_BUCKETS: usize = 512;

/// A log-linear latency histogram (16 buckets per power of two, so any
/// percentile is within ~6 % of the true value). Plain old data: it can be
/// written into a block of the segment and read by another process.
#[derive(Clone, Copy, Debug, Pod, Zeroable, matrix_handler::ShmSafe)]
#[repr(C)]
pub struct LatencyHistogram {
    buckets: [u64; HISTOGRAM_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::zeroed()
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB_BUCKETS {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as u64; // ≥ 4
    let sub = (ns >> (log - 4)) & (SUB_BUCKETS - 1);
    (((log - 3) * SUB_BUCKETS + sub) as usize).min(HISTOGRAM_BUCKETS - 1)
}

fn bucket_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB_BUCKETS {
        return index;
    }
    let log = index / SUB_BUCKETS + 3;
    let sub = index % SUB_BUCKETS;
    ((SUB_BUCKETS + sub + 1) << (log - 4)) - 1
}

impl LatencyHistogram {
    /// Counts one sample of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.buckets[bucket_of(ns)] += 1;
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `p`-th percentile (0–100), as the upper edge of its bucket, in ns.
    pub fn percentile(&self, p: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_upper(i);
            }
        }
        bucket_upper(HISTOGRAM_BUCKETS - 1)
    }
}

/// Formats nanoseconds as `850 ns`, `12.3 µs`, `4.56 ms`.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Formats a byte count: `512 B`, `4.0 KiB`, `63.9 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", bytes as f64 / 1_073_741_824.0),
    }
}

/// A one-line summary of an arena's space: used, free, largest free block,
/// fragmentation.
pub fn describe_stats(stats: &matrix_handler::ArenaStats) -> String {
    format!(
        "used {:>10}  free {:>10}  largest free block {:>10}  fragmentation {:.4}",
        format_bytes(stats.used_bytes),
        format_bytes(stats.free_bytes),
        format_bytes(stats.largest_free as u64),
        stats.fragmentation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut previous = 0;
        for ns in (0..100_000u64)
            .chain((1..36).map(|s| 1u64 << s))
            .chain([u64::MAX / 2])
        {
            let b = bucket_of(ns);
            assert!(
                bucket_upper(b) >= ns.min(bucket_upper(HISTOGRAM_BUCKETS - 1)),
                "{ns} above its bucket"
            );
            if ns >= 16 && b < HISTOGRAM_BUCKETS - 1 {
                assert!(
                    (bucket_upper(b) - ns) as f64 <= ns as f64 / 16.0 + 1.0,
                    "{ns} bucket too wide"
                );
            }
        }
        for ns in 0..100_000u64 {
            let b = bucket_of(ns);
            assert!(b >= previous, "bucket of {ns} goes backwards");
            previous = b;
        }
    }

    #[test]
    fn percentiles_follow_the_samples() {
        let mut h = LatencyHistogram::default();
        for ns in 1..=1000u64 {
            h.record(ns * 1000);
        }
        let p50 = h.percentile(50.0);
        assert!((480_000..=540_000).contains(&p50), "{p50}");
        let p99 = h.percentile(99.0);
        assert!((980_000..=1_060_000).contains(&p99), "{p99}");
        let mut other = LatencyHistogram::default();
        other.record(5);
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.percentile(0.0), 5);
    }
}
