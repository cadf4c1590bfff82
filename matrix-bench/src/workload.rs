//! The workloads, generic over [`BenchAlloc`].
//!
//! | kind      | threads | one op                                   |
//! |-----------|---------|------------------------------------------|
//! | `pair64`  | 1       | alloc(64), write, read, free             |
//! | `size`    | 1       | the same pair at `--size` bytes          |
//! | `mixed`   | 1 or more | one alloc (32–544 B) or one free of a random live block, 70 % / 30 %, live set ≤ `--live` per thread |
//! | `handoff` | 2       | A allocates 32–544 B and queues it, B pops and frees: one block handed over |
//!
//! `mixed` first fills each thread's live set up to its cap and then runs
//! `warmup` steps of churn (both untimed: the fragmentation rows age the
//! heap this way), so the timed part runs at the steady state; `pair64`,
//! `size` and `handoff` run `warmup` untimed ops first. With `processes`
//! above 1 (ours only), that many − 1 other processes stay attached to the
//! segment during the run, every other one allocating (see
//! `contenders::ours`). One thread is timed by its CPU time;
//! with several threads the time is the wall time from the first thread's
//! start to the last thread's end, and ns/op divides it by the ops of all
//! threads (the inverse of throughput). See `clock`.

use crate::clock::{Stamp, Timing};
use crate::contenders::BenchAlloc;
use crate::touch::Touch;
use crossbeam_queue::ArrayQueue;
use serde::{Deserialize, Serialize};
use std::sync::Barrier;

/// The seed every `mixed` and `handoff` run starts from (xor the thread id).
pub const SEED: u64 = 0x6D61_7472_6978_2D62;
/// Smallest and largest request of `mixed` and `handoff`.
pub const MIXED_SIZES: std::ops::RangeInclusive<usize> = 32..=544;
/// Bounded queue between the two `handoff` threads.
pub const QUEUE_CAPACITY: usize = 1024;

/// What a workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// alloc(64) + free pairs.
    Pair64,
    /// alloc + free pairs at one size.
    Size,
    /// Random sizes and frees over a bounded live set.
    Mixed,
    /// Blocks allocated on one thread, freed on another.
    Handoff,
}

impl Kind {
    /// The command-line name.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Pair64 => "pair64",
            Kind::Size => "size",
            Kind::Mixed => "mixed",
            Kind::Handoff => "handoff",
        }
    }

    /// Parses a [`key`](Self::key).
    pub fn parse(text: &str) -> Option<Kind> {
        [Kind::Pair64, Kind::Size, Kind::Mixed, Kind::Handoff]
            .into_iter()
            .find(|k| k.key() == text)
    }
}

/// One workload with all its parameters: what a child process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Spec {
    /// What it does.
    pub kind: Kind,
    /// Threads sharing the allocator.
    pub threads: usize,
    /// Block size of `pair64` (64) and `size`.
    pub size: usize,
    /// Segment / pool size in bytes.
    pub arena: u64,
    /// Live-set cap per thread (`mixed`).
    pub live: usize,
    /// Timed ops, all threads together.
    pub ops: u64,
    /// Untimed ops before the timed part (`mixed`: churn steps after the fill).
    pub warmup: u64,
    /// Processes attached to the segment, the measuring one included (ours only above 1).
    #[serde(default = "one")]
    pub processes: usize,
}

fn one() -> usize {
    1
}

/// What a child reports.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// Timed ops.
    pub ops: u64,
    /// Threads of the workload.
    pub threads: usize,
    /// Wall time of the timed part.
    pub elapsed_ns: u64,
    /// CPU time of the timed part, all threads together.
    pub cpu_ns: u64,
    /// Free blocks left after freeing every block and one consolidation
    /// (ours only).
    pub free_blocks_after: Option<u64>,
}

impl Outcome {
    /// Nanoseconds per op: thread CPU time on one thread, wall time on
    /// several (see `clock`).
    pub fn ns_per_op(&self) -> f64 {
        let ns = if self.threads == 1 {
            self.cpu_ns
        } else {
            self.elapsed_ns
        };
        ns as f64 / self.ops.max(1) as f64
    }
}

/// Runs a single-threaded workload. Panics if `spec` needs threads.
pub fn run_local<A: BenchAlloc>(alloc: &A, spec: &Spec, touch: Touch) -> Outcome {
    assert_eq!(
        spec.threads,
        1,
        "{} with {} threads needs a thread-safe allocator",
        spec.kind.key(),
        spec.threads
    );
    // The thread's handle is dropped (and returns what it cached) before
    // `finish` counts the free blocks.
    let timing = {
        let thread = alloc.thread();
        match spec.kind {
            Kind::Pair64 | Kind::Size => pairs(&thread, spec.size, spec.warmup, spec.ops, touch),
            Kind::Mixed => {
                let (start, end) =
                    mixed_thread(&thread, spec.live, 0, spec.warmup, spec.ops, touch, None);
                Timing::between(start, end)
            }
            Kind::Handoff => panic!("handoff needs two threads"),
        }
    };
    finish(alloc, spec, timing)
}

/// Runs any workload on an allocator that threads may share.
pub fn run_shared<A: BenchAlloc + Sync>(alloc: &A, spec: &Spec, touch: Touch) -> Outcome {
    match (spec.kind, spec.threads) {
        (Kind::Handoff, _) => {
            if spec.warmup > 0 {
                handoff(alloc, spec.warmup, touch);
            }
            let timing = handoff(alloc, spec.ops, touch);
            finish(alloc, spec, timing)
        }
        (Kind::Mixed, threads) if threads > 1 => {
            let timing = mixed_threads(alloc, spec, touch);
            finish(alloc, spec, timing)
        }
        _ => run_local(alloc, spec, touch),
    }
}

fn finish<A: BenchAlloc>(alloc: &A, spec: &Spec, timing: Timing) -> Outcome {
    let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let free_blocks_after = if spec.kind == Kind::Mixed {
        alloc.after_free_all()
    } else {
        None
    };
    Outcome {
        ops: spec.ops,
        threads: spec.threads,
        elapsed_ns: nanos(timing.wall),
        cpu_ns: nanos(timing.cpu),
        free_blocks_after,
    }
}

/// A live block and what was written into it.
struct Live<H> {
    handle: H,
    size: u32,
    seed: u64,
}

#[inline(always)]
fn pair<A: BenchAlloc>(alloc: &A, size: usize, touch: Touch, seed: u64) {
    let handle = alloc.alloc(size);
    let ptr = alloc.payload(handle);
    // SAFETY: `handle` is a live block of `size` bytes that only this thread
    // knows; it is freed exactly once, right here.
    unsafe {
        touch.put(ptr, size, seed);
        touch.check(ptr, size, seed);
        alloc.free(handle, size);
    }
}

fn pairs<A: BenchAlloc>(alloc: &A, size: usize, warmup: u64, ops: u64, touch: Touch) -> Timing {
    for seed in 0..warmup {
        pair(alloc, size, touch, seed);
    }
    let start = Stamp::now();
    for seed in warmup..warmup + ops {
        pair(alloc, size, touch, seed);
    }
    Timing::between(start, Stamp::now())
}

/// One step of the mixed workload: 70 % alloc (unless the live set is at
/// its cap), 30 % free of a uniformly chosen live block.
#[inline(always)]
fn mixed_step<A: BenchAlloc>(
    alloc: &A,
    rng: &mut fastrand::Rng,
    live: &mut Vec<Live<A::Handle>>,
    cap: usize,
    touch: Touch,
    next_seed: &mut u64,
) {
    let roll = rng.u32(0..100);
    if live.is_empty() || (roll < 70 && live.len() < cap) {
        let size = rng.usize(MIXED_SIZES);
        let handle = alloc.alloc(size);
        *next_seed += 1;
        // SAFETY: a fresh block of `size` bytes owned by this thread.
        unsafe { touch.put(alloc.payload(handle), size, *next_seed) };
        live.push(Live {
            handle,
            size: size as u32,
            seed: *next_seed,
        });
    } else {
        let victim = live.swap_remove(rng.usize(..live.len()));
        release(alloc, victim, touch);
    }
}

#[inline(always)]
fn release<A: BenchAlloc>(alloc: &A, block: Live<A::Handle>, touch: Touch) {
    let size = block.size as usize;
    // SAFETY: the block left the live set, so this is its only owner, and
    // it was touched with this seed when allocated; freed exactly once.
    unsafe {
        touch.check(alloc.payload(block.handle), size, block.seed);
        alloc.free(block.handle, size);
    }
}

/// One thread of `mixed`: fill the live set to `cap` and run `churn`
/// steps (untimed), wait for the others, run `ops` timed steps, free
/// everything left (untimed).
fn mixed_thread<A: BenchAlloc>(
    alloc: &A,
    cap: usize,
    thread: u64,
    churn: u64,
    ops: u64,
    touch: Touch,
    start_line: Option<&Barrier>,
) -> (Stamp, Stamp) {
    let mut rng = fastrand::Rng::with_seed(SEED ^ thread);
    let mut live = Vec::with_capacity(cap);
    let mut next_seed = thread << 48;
    while live.len() < cap {
        mixed_step(alloc, &mut rng, &mut live, cap, touch, &mut next_seed);
    }
    for _ in 0..churn {
        mixed_step(alloc, &mut rng, &mut live, cap, touch, &mut next_seed);
    }
    if let Some(barrier) = start_line {
        barrier.wait();
    }
    let start = Stamp::now();
    for _ in 0..ops {
        mixed_step(alloc, &mut rng, &mut live, cap, touch, &mut next_seed);
    }
    let end = Stamp::now();
    for block in live.drain(..) {
        release(alloc, block, touch);
    }
    (start, end)
}

fn mixed_threads<A: BenchAlloc + Sync>(alloc: &A, spec: &Spec, touch: Touch) -> Timing {
    let threads = spec.threads;
    let barrier = Barrier::new(threads);
    let per_thread = spec.ops / threads as u64;
    let churn = spec.warmup / threads as u64;
    let spans: Vec<(Stamp, Stamp)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    pin_to_cpu(t as usize);
                    let thread = alloc.thread();
                    mixed_thread(
                        &thread,
                        spec.live,
                        t,
                        churn,
                        per_thread,
                        touch,
                        Some(barrier),
                    )
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a mixed thread panicked"))
            .collect()
    });
    Timing::across(&spans)
}

/// Thread A allocates and queues `ops` blocks, thread B pops and frees
/// them. The wall time runs from A's start to B's end.
fn handoff<A: BenchAlloc + Sync>(alloc: &A, ops: u64, touch: Touch) -> Timing {
    let queue: ArrayQueue<Live<A::Handle>> = ArrayQueue::new(QUEUE_CAPACITY);
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            pin_to_cpu(0);
            let alloc = alloc.thread();
            let mut rng = fastrand::Rng::with_seed(SEED);
            barrier.wait();
            let start = Stamp::now();
            for seed in 0..ops {
                let size = rng.usize(MIXED_SIZES);
                let handle = alloc.alloc(size);
                // SAFETY: a fresh block owned by this thread until queued.
                unsafe { touch.put(alloc.payload(handle), size, seed) };
                let mut block = Live {
                    handle,
                    size: size as u32,
                    seed,
                };
                let mut waits = 0u32;
                while let Err(back) = queue.push(block) {
                    block = back;
                    wait_a_little(&mut waits);
                }
            }
            (start, Stamp::now())
        });
        let consumer = scope.spawn(|| {
            pin_to_cpu(1);
            let alloc = alloc.thread();
            barrier.wait();
            let start = Stamp::now();
            let mut done = 0;
            let mut waits = 0u32;
            while done < ops {
                match queue.pop() {
                    Some(block) => {
                        release(&alloc, block, touch);
                        done += 1;
                        waits = 0;
                    }
                    None => wait_a_little(&mut waits),
                }
            }
            (start, Stamp::now())
        });
        let produced = producer.join().expect("the handoff producer panicked");
        let consumed = consumer.join().expect("the handoff consumer panicked");
        Timing::across(&[produced, consumed])
    })
}

/// Spins a handoff thread makes on a full or empty queue before it yields.
const SPINS_BEFORE_YIELD: u32 = 1 << 10;

/// The wait of a handoff thread on a full or empty queue: spin (both
/// threads stay in lock-step, so the allocator sees the cross-thread
/// traffic it is measured on), and yield only after tens of microseconds,
/// when the partner was evidently descheduled on a busy 2-core machine.
#[inline]
fn wait_a_little(waits: &mut u32) {
    *waits += 1;
    if *waits < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Pins the calling thread to the `index`-th CPU this process may use
/// (modulo their number), so the two threads of a workload run on two
/// cores for all contenders alike, instead of being stacked on one core
/// (which turns a shared-allocator workload into alternating single-thread
/// bursts) when another process keeps the other core busy. Best effort.
fn pin_to_cpu(index: usize) {
    // SAFETY: cpu_set_t is plain old data; all zeros is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: pid 0 is this thread; `allowed` is a valid out-pointer of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut allowed) } != 0 {
        return;
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the size of the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .collect();
    if cpus.len() < 2 {
        return;
    }
    // SAFETY: as above.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the chosen cpu is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpus[index % cpus.len()], &mut one) };
    // SAFETY: pid 0 is this thread; `one` is a valid set of `size` bytes.
    unsafe { libc::sched_setaffinity(0, size, &one) };
}
