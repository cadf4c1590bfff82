//! `matrix bench`: the standard mixed workload on this machine.
//!
//! Each thread repeats, until the time is up: with probability 70 % allocate
//! a block of a uniformly random size in 32–544 B, otherwise free a random
//! block of its own live set (always free when the live set holds 10,000
//! blocks, always allocate when it is empty). The same workload runs over a
//! matrix arena (all threads of one participant) and, as a baseline, over the
//! system allocator. Only allocator calls are timed work; the live set is
//! freed after the clock stops.

use crate::error::CliError;
use crate::sync::{AtomicU64, Ordering::Relaxed};
use indicatif::{ProgressBar, ProgressStyle};
use matrix_core::{AtomicMatrix, BLOCK_HEADER_SIZE};
use serde::Serialize;
use std::alloc::Layout;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Smallest request of the workload.
pub const MIN_SIZE: u32 = 32;
/// Largest request of the workload.
pub const MAX_SIZE: u32 = 544;
/// Live blocks per thread, at most.
pub const LIVE_LIMIT: usize = 10_000;
/// Percent of operations that allocate (when the live set allows).
pub const ALLOC_PERCENT: u32 = 70;

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Worker threads.
    pub threads: usize,
    /// Seconds per allocator.
    pub seconds: f64,
    /// Arena size for the matrix run (`None`: enough for the live sets, at least 64 MiB).
    pub arena_bytes: Option<u64>,
    /// Also run the system allocator.
    pub baseline: bool,
    /// Seed of the random sizes and choices.
    pub seed: u64,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

/// One allocator's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// `matrix` or `system`.
    pub allocator: String,
    /// Worker threads.
    pub threads: usize,
    /// Wall-clock seconds measured.
    pub seconds: f64,
    /// Allocations plus frees.
    pub ops: u64,
    /// Allocations.
    pub allocs: u64,
    /// Frees.
    pub frees: u64,
    /// Allocations refused for lack of memory (the workload then frees instead).
    pub out_of_memory: u64,
    /// Operations per second, all threads together.
    pub ops_per_sec: f64,
    /// Nanoseconds per operation within one thread.
    pub ns_per_op: f64,
}

/// The whole benchmark result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The workload in words.
    pub workload: String,
    /// CPUs the machine offers this process.
    pub cpus: usize,
    /// Size of the matrix arena used.
    pub arena_bytes: u64,
    /// One row per allocator.
    pub rows: Vec<BenchRow>,
    /// After freeing every live block and consolidating, the arena was empty again.
    pub matrix_returned_all_memory: bool,
    /// Fragmentation of the matrix arena at the end of the timed run (live sets still held).
    pub matrix_fragmentation_at_end: f64,
}

/// An allocator under test: `alloc` returns a handle, `free` takes it back.
trait Target: Sync {
    fn alloc(&self, size: u32) -> Option<usize>;
    fn free(&self, handle: usize, size: u32);
}

struct Matrix<'a>(&'a AtomicMatrix);

impl Target for Matrix<'_> {
    #[inline]
    fn alloc(&self, size: u32) -> Option<usize> {
        self.0
            .allocate(size as u64, 0)
            .ok()
            .map(|p| (p.offset() - BLOCK_HEADER_SIZE) as usize)
    }
    #[inline]
    fn free(&self, handle: usize, _size: u32) {
        // The workload frees only blocks it allocated, once; a failure here
        // is an allocator bug, which the leak check at the end reports.
        let _ = self.0.free(handle as u32, None);
    }
}

struct System;

impl Target for System {
    #[inline]
    fn alloc(&self, size: u32) -> Option<usize> {
        let layout = Layout::from_size_align(size as usize, 16).ok()?;
        // SAFETY: `layout` has a non-zero size (the workload asks for ≥ 32 B).
        let p = unsafe { std::alloc::alloc(layout) };
        (!p.is_null()).then_some(p as usize)
    }
    #[inline]
    fn free(&self, handle: usize, size: u32) {
        let layout = Layout::from_size_align(size as usize, 16).expect("valid when allocated");
        // SAFETY: `handle` came from `alloc` above with this very layout and
        // is freed exactly once (it leaves the live set here).
        unsafe { std::alloc::dealloc(handle as *mut u8, layout) }
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    allocs: u64,
    frees: u64,
    oom: u64,
}

/// One thread's share of the workload; returns its counts and its live set.
fn worker<T: Target>(
    target: &T,
    seed: u64,
    deadline: Instant,
    progress: &AtomicU64,
) -> (Counts, Vec<(usize, u32)>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut live: Vec<(usize, u32)> = Vec::with_capacity(LIVE_LIMIT);
    let mut c = Counts::default();
    loop {
        for _ in 0..256 {
            let allocate =
                live.is_empty() || (live.len() < LIVE_LIMIT && rng.u32(0..100) < ALLOC_PERCENT);
            if allocate {
                let size = rng.u32(MIN_SIZE..=MAX_SIZE);
                match target.alloc(size) {
                    Some(handle) => {
                        live.push((handle, size));
                        c.allocs += 1;
                        continue;
                    }
                    None => c.oom += 1,
                }
            }
            if !live.is_empty() {
                let (handle, size) = live.swap_remove(rng.usize(0..live.len()));
                target.free(handle, size);
                c.frees += 1;
            }
        }
        // Relaxed: a progress hint for the bar; the totals are returned by value.
        progress.fetch_add(256, Relaxed);
        if Instant::now() >= deadline {
            return (c, live);
        }
    }
}

fn run<T: Target>(
    name: &str,
    target: &T,
    o: &BenchOptions,
    bar: &ProgressBar,
    offset: Duration,
) -> BenchRow {
    let progress = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.threads)
            .map(|t| {
                let progress = &progress;
                let seed = o.seed.wrapping_add(t as u64);
                scope.spawn(move || worker(target, seed, deadline, progress))
            })
            .collect();
        while handles.iter().any(|h| !h.is_finished()) {
            bar.set_position((offset + start.elapsed()).as_millis() as u64);
            // Relaxed: only displayed.
            bar.set_message(format!(
                "{name}: {:.1} M ops",
                progress.load(Relaxed) as f64 / 1e6
            ));
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = start.elapsed();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("benchmark worker panicked"))
            .collect();
        (elapsed, results)
    });
    let (elapsed, results) = results;
    let mut total = Counts::default();
    for (c, live) in results {
        total.allocs += c.allocs;
        total.frees += c.frees;
        total.oom += c.oom;
        for (handle, size) in live {
            target.free(handle, size);
        }
    }
    let ops = total.allocs + total.frees;
    let secs = elapsed.as_secs_f64();
    BenchRow {
        allocator: name.to_owned(),
        threads: o.threads,
        seconds: (secs * 1000.0).round() / 1000.0,
        ops,
        allocs: total.allocs,
        frees: total.frees,
        out_of_memory: total.oom,
        ops_per_sec: (ops as f64 / secs).round(),
        ns_per_op: if ops == 0 {
            0.0
        } else {
            (secs * 1e9 * o.threads as f64 / ops as f64 * 10.0).round() / 10.0
        },
    }
}

/// Runs the benchmark.
pub fn bench(o: &BenchOptions) -> Result<BenchReport, CliError> {
    if o.threads == 0 || o.threads > 1024 {
        return Err(CliError::Argument(format!(
            "--threads {} is out of range: use 1 to 1024",
            o.threads
        )));
    }
    if !(o.seconds > 0.0 && o.seconds <= 3600.0) {
        return Err(CliError::Argument(format!(
            "--seconds {} is out of range: use more than 0 and at most 3600",
            o.seconds
        )));
    }
    let needed = o.threads as u64 * LIVE_LIMIT as u64 * (MAX_SIZE + BLOCK_HEADER_SIZE) as u64 * 2;
    let arena_bytes = o.arena_bytes.unwrap_or(needed.max(64 << 20));
    let matrix = AtomicMatrix::anonymous(arena_bytes)?;
    let runs = if o.baseline { 2 } else { 1 };
    let bar = if o.progress {
        ProgressBar::new((o.seconds * 1000.0) as u64 * runs)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {percent:>3}% {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    let mut rows = vec![run("matrix", &Matrix(&matrix), o, &bar, Duration::ZERO)];
    let fragmentation = matrix.stats().map(|s| s.fragmentation).unwrap_or(0.0);
    if o.baseline {
        rows.push(run(
            "system",
            &System,
            o,
            &bar,
            Duration::from_secs_f64(o.seconds),
        ));
    }
    bar.finish_and_clear();
    matrix.consolidate()?;
    let after = matrix.stats()?;
    Ok(BenchReport {
        workload: format!(
            "random {MIN_SIZE}-{MAX_SIZE} B, {ALLOC_PERCENT}% alloc / {}% free, live set <= {LIVE_LIMIT} per thread",
            100 - ALLOC_PERCENT
        ),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        arena_bytes,
        rows,
        matrix_returned_all_memory: after.used_bytes == 0,
        matrix_fragmentation_at_end: (fragmentation * 10_000.0).round() / 10_000.0,
    })
}

/// Renders the result table.
pub fn render_bench(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "workload: {}", r.workload);
    let _ = writeln!(
        out,
        "machine:  {} CPU(s); matrix arena {}",
        r.cpus,
        crate::size::format_size(r.arena_bytes)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<9} {:>7} {:>8} {:>13} {:>14} {:>9} {:>6}",
        "ALLOCATOR", "THREADS", "SECONDS", "OPS", "OPS/S", "NS/OP", "OOM"
    );
    for row in &r.rows {
        let _ = writeln!(
            out,
            "{:<9} {:>7} {:>8.2} {:>13} {:>14.0} {:>9.1} {:>6}",
            row.allocator,
            row.threads,
            row.seconds,
            row.ops,
            row.ops_per_sec,
            row.ns_per_op,
            row.out_of_memory
        );
    }
    if let [m, s] = &r.rows[..] {
        if m.ns_per_op > 0.0 {
            let _ = writeln!(
                out,
                "\nmatrix / system time per op: {:.2}x",
                m.ns_per_op / s.ns_per_op
            );
        }
    }
    let _ =
        writeln!(
        out,
        "matrix: fragmentation at the end of the run {:.4}; all memory returned after freeing: {}",
        r.matrix_fragmentation_at_end,
        if r.matrix_returned_all_memory { "yes" } else { "NO" }
    );
    out
}
