//! Queue hand-off between two processes: messages/s and one-way latency of
//! `matrix_internals::WorkQueue` (a 64-byte block per message, allocated by
//! the producer process, freed by the consumer process, each through its
//! own `LocalHandler`, the handle a busy thread allocates with; written
//! and read with the checked `write_pod` / `read_pod`), side by side with
//! `crossbeam_queue::ArrayQueue` between two threads (a 64-byte `Box` per
//! message, allocated by the producer thread, freed by the consumer thread),
//! and — built with the `iceoryx2` feature — iceoryx2 publish-subscribe
//! between two processes (a 64-byte sample loaned from the publisher's
//! pool, returned when the subscriber drops it).
//!
//! ```text
//! cargo run --release -p matrix-bench --bin queue_handoff [-- --messages N --samples M]
//! cargo run --release -p matrix-bench --features iceoryx2 --bin queue_handoff
//! valgrind --tool=callgrind target/release/queue_handoff --one-thread N
//! ```
//!
//! Throughput: the producer pushes N messages as fast as it can; the rate
//! is N over the time from the first push to the consumer's last pop.
//! Latency: M paced messages (the next is sent once the previous was taken),
//! each stamped with CLOCK_MONOTONIC just before the push and read by the
//! consumer right after its pop; the clock is system-wide, so the two
//! processes compare stamps directly. "Spinning" consumers poll `try_pop`;
//! the "sleeping" consumer blocks in `pop_timeout` (futex) between messages.
//! The iceoryx2 subscriber polls `receive`; its publisher cannot see when a
//! sample was taken, so its paced messages are 20 µs apart instead.

use crossbeam_queue::ArrayQueue;
use matrix_handler::{HandlerFunctions, LocalHandler, MatrixHandler};
use matrix_internals::{PopError, WorkQueue};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// 64 bytes: the send stamp, the sequence number, padding.
type Msg = [u64; 8];
const QUEUE: &str = "handoff";
const CAPACITY: u32 = 1024;
const ROLE: &str = "QUEUE_HANDOFF_CONSUMER";
#[cfg(feature = "iceoryx2")]
const ICEORYX_ROLE: &str = "QUEUE_HANDOFF_ICEORYX_SUBSCRIBER";
const WAIT: Duration = Duration::from_secs(30);
/// Throughput is measured this many times; the median is reported.
const ROUNDS: usize = 3;
/// The sleeping consumer is measured on this fraction of the samples (each
/// costs a futex sleep and wake).
const SLEEPING_SHARE: u64 = 5;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn spin_for(ns: u64) {
    let until = now_ns() + ns;
    while now_ns() < until {
        std::hint::spin_loop();
    }
}

struct Args {
    messages: u64,
    samples: u64,
    /// `--one-thread N`: only push and pop N messages in this thread (for
    /// callgrind's instruction counts; nothing is timed).
    one_thread: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        messages: 1_000_000,
        samples: 100_000,
        one_thread: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&flag))
        };
        match flag.as_str() {
            "--messages" => a.messages = value(),
            "--samples" => a.samples = value(),
            "--one-thread" => a.one_thread = Some(value()),
            _ => usage(&flag),
        }
    }
    a
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "queue_handoff: bad argument {flag:?}\nusage: queue_handoff [--messages N] [--samples M] [--one-thread N]"
    );
    std::process::exit(2)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Latency percentiles of a sample, in ns.
fn percentiles(mut lat: Vec<u64>) -> (u64, u64) {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    (at(0.50), at(0.99))
}

// ---------------------------------------------------------------- consumer process

fn consumer(segment: &str, messages: u64, samples: u64) {
    // SAFETY: plain syscall: die with the benchmark's parent process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let h = MatrixHandler::open(segment).expect("open the benchmark segment");
    let q = WorkQueue::<Msg, _>::open(h.share(), QUEUE).expect("open the queue");
    let mut local = h.local();
    println!("@@ready");
    // Throughput.
    for _ in 0..ROUNDS {
        let mut got = 0;
        while got < messages {
            match q.try_pop() {
                Ok(b) => {
                    std::hint::black_box(h.read_pod(&b).unwrap());
                    local.free(b).unwrap();
                    got += 1;
                }
                Err(PopError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("consumer: {e}"),
            }
        }
        println!("@@tput {}", now_ns());
    }
    // Latency, spinning then sleeping.
    for sleeping in [false, true] {
        let samples = if sleeping {
            samples / SLEEPING_SHARE
        } else {
            samples
        };
        let mut lat = Vec::with_capacity(samples as usize);
        while (lat.len() as u64) < samples {
            let popped = if sleeping {
                q.pop_timeout(WAIT)
            } else {
                q.try_pop()
            };
            match popped {
                Ok(b) => {
                    let stamp = h.read_pod(&b).unwrap()[0];
                    lat.push(now_ns().saturating_sub(stamp));
                    local.free(b).unwrap();
                }
                Err(PopError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("consumer: {e}"),
            }
        }
        let (p50, p99) = percentiles(lat);
        println!("@@lat {p50} {p99}");
    }
}

// ---------------------------------------------------------------- producer side

struct Row {
    transport: &'static str,
    payload: &'static str,
    rate: Option<f64>,
    p50: u64,
    p99: u64,
}

struct Consumer {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Consumer {
    fn line(&mut self) -> String {
        for line in self.lines.by_ref().map_while(Result::ok) {
            if let Some(i) = line.find("@@") {
                return line[i + 2..].to_owned();
            }
        }
        panic!("the consumer process exited early");
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct SegmentName(String);

impl Drop for SegmentName {
    fn drop(&mut self) {
        let _ = matrix_handler::unlink(&self.0);
    }
}

fn send(
    h: &MatrixHandler,
    local: &mut LocalHandler,
    q: &WorkQueue<Msg, matrix_handler::SharedHandler>,
    seq: u64,
) {
    let mut b = local
        .allocate::<Msg>()
        .expect("the arena holds the ring and every in-flight block");
    let mut m = [0u64; 8];
    m[1] = seq;
    m[0] = now_ns();
    h.write_pod(&mut b, m).unwrap();
    q.push_timeout(b, WAIT).expect("push");
}

fn matrix_rows(a: &Args) -> Vec<Row> {
    let name = SegmentName(format!("matrix-bench-handoff-{}", std::process::id()));
    let h = MatrixHandler::create(&name.0, 64 << 20).expect("create the benchmark segment");
    let q = WorkQueue::<Msg, _>::create(h.share(), QUEUE, CAPACITY).expect("create the queue");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, format!("{} {} {}", name.0, a.messages, a.samples))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the consumer process");
    let stdout = child.stdout.take().unwrap();
    let mut c = Consumer {
        child,
        lines: BufReader::new(stdout).lines(),
    };
    assert_eq!(c.line(), "ready");

    let mut local = h.local();
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let start = now_ns();
        for seq in 0..a.messages {
            send(&h, &mut local, &q, seq);
        }
        let end: u64 = c.line().strip_prefix("tput ").unwrap().parse().unwrap();
        rates.push(a.messages as f64 / ((end - start) as f64 / 1e9));
    }
    let rate = median(rates);

    let mut rows = Vec::new();
    for (transport, gap_ns, samples) in [
        (
            "matrix WorkQueue, 2 processes, spinning consumer",
            2_000,
            a.samples,
        ),
        (
            "matrix WorkQueue, 2 processes, sleeping consumer (futex)",
            50_000,
            a.samples / SLEEPING_SHARE,
        ),
    ] {
        for seq in 0..samples {
            send(&h, &mut local, &q, seq);
            while !q.is_empty() {
                std::hint::spin_loop();
            }
            spin_for(gap_ns);
        }
        let line = c.line();
        let mut it = line
            .strip_prefix("lat ")
            .unwrap()
            .split(' ')
            .map(|v| v.parse::<u64>().unwrap());
        let (p50, p99) = (it.next().unwrap(), it.next().unwrap());
        let rate = rows.is_empty().then_some(rate);
        rows.push(Row {
            transport,
            payload: "64 B block",
            rate,
            p50,
            p99,
        });
    }
    assert!(
        c.child.wait().unwrap().success(),
        "the consumer process failed"
    );
    rows
}

/// The whole path of one message (allocate, write, push, pop, read, free)
/// `messages` times in one thread: what callgrind counts per message
/// (`callgrind.sh` runs it with N and with 0 and divides the difference).
fn one_thread(messages: u64) {
    let name = SegmentName(format!("matrix-bench-handoff-{}", std::process::id()));
    let h = MatrixHandler::create(&name.0, 64 << 20).expect("create the benchmark segment");
    let q = WorkQueue::<Msg, _>::create(h.share(), QUEUE, CAPACITY).expect("create the queue");
    let mut producer = h.local();
    let mut consumer = h.local();
    for seq in 0..messages {
        send(&h, &mut producer, &q, seq);
        let b = q.try_pop().expect("the message just pushed");
        std::hint::black_box(h.read_pod(&b).unwrap());
        consumer.free(b).unwrap();
    }
}

fn crossbeam_row(a: &Args) -> Row {
    let q: ArrayQueue<Box<Msg>> = ArrayQueue::new(CAPACITY as usize);
    let (messages, samples) = (a.messages, a.samples);
    std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut ends = Vec::new();
            for _ in 0..ROUNDS {
                let mut got = 0;
                while got < messages {
                    match q.pop() {
                        Some(b) => {
                            drop(std::hint::black_box(b));
                            got += 1;
                        }
                        None => std::hint::spin_loop(),
                    }
                }
                ends.push(now_ns());
            }
            let mut lat = Vec::with_capacity(samples as usize);
            while (lat.len() as u64) < samples {
                match q.pop() {
                    Some(b) => {
                        lat.push(now_ns().saturating_sub(b[0]));
                        drop(b);
                    }
                    None => std::hint::spin_loop(),
                }
            }
            (ends, percentiles(lat))
        });
        let push = |seq: u64| {
            let mut m = Box::new([0u64; 8]);
            m[1] = seq;
            m[0] = now_ns();
            while let Err(back) = q.push(m) {
                m = back;
                std::hint::spin_loop();
            }
        };
        let mut starts = Vec::new();
        for _ in 0..ROUNDS {
            starts.push(now_ns());
            for seq in 0..messages {
                push(seq);
            }
            while !q.is_empty() {
                std::hint::spin_loop();
            }
            // Let the consumer's round end before the next round starts.
            spin_for(1_000_000);
        }
        for seq in 0..samples {
            push(seq);
            while !q.is_empty() {
                std::hint::spin_loop();
            }
            spin_for(2_000);
        }
        let (ends, (p50, p99)) = consumer.join().unwrap();
        let rates = starts
            .iter()
            .zip(&ends)
            .map(|(s, e)| messages as f64 / ((e - s) as f64 / 1e9))
            .collect();
        Row {
            transport: "crossbeam ArrayQueue, 2 threads, spinning consumer",
            payload: "64 B Box",
            rate: Some(median(rates)),
            p50,
            p99,
        }
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores")
}

/// iceoryx2 publish-subscribe between two processes, as its own examples
/// set it up, with back-pressure instead of overflow so no message is lost.
#[cfg(feature = "iceoryx2")]
mod iceoryx {
    use super::*;
    use iceoryx2::prelude::*;

    fn service(
        node: &Node<ipc::Service>,
        name: &str,
    ) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Msg, ()>
    {
        let name: ServiceName = name.try_into().expect("a valid service name");
        node.service_builder(&name)
            .publish_subscribe::<Msg>()
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(CAPACITY as usize)
            .history_size(0)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
            .expect("open or create the iceoryx2 service")
    }

    /// The subscriber process: the same rounds as the matrix consumer.
    pub fn subscriber(name: &str, messages: u64, samples: u64) {
        // SAFETY: plain syscall: die with the benchmark's parent process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .expect("create an iceoryx2 node");
        let service = service(&node, name);
        let subscriber = service
            .subscriber_builder()
            .buffer_size(CAPACITY as usize)
            .create()
            .expect("create the subscriber");
        println!("@@ready");
        for _ in 0..ROUNDS {
            let mut got = 0;
            while got < messages {
                match subscriber.receive().expect("receive") {
                    Some(sample) => {
                        std::hint::black_box(*sample);
                        got += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
            println!("@@tput {}", now_ns());
        }
        let mut lat = Vec::with_capacity(samples as usize);
        while (lat.len() as u64) < samples {
            match subscriber.receive().expect("receive") {
                Some(sample) => lat.push(now_ns().saturating_sub(sample[0])),
                None => std::hint::spin_loop(),
            }
        }
        let (p50, p99) = percentiles(lat);
        println!("@@lat {p50} {p99}");
    }

    /// iceoryx2 leaves its global management segment in `/dev/shm` after
    /// its last node is gone; the one this run created (none was there
    /// before it started, or that one is older) is removed, so the bench
    /// leaves nothing behind. One another iceoryx2 program created since
    /// would be removed too: a bench run is not meant to share a machine.
    pub fn remove_global_management_since(started: std::time::SystemTime) {
        let Ok(entries) = std::fs::read_dir("/dev/shm") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.starts_with("iox2_")
                && name.ends_with(".global_mgmt")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= started);
            if ours {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn send(publisher: &iceoryx2::port::publisher::Publisher<ipc::Service, Msg, ()>, seq: u64) {
        let sample = publisher.loan_uninit().expect("loan a sample");
        let mut m = [0u64; 8];
        m[1] = seq;
        m[0] = now_ns();
        sample.write_payload(m).send().expect("send");
    }

    /// The publisher side, in this process.
    pub fn publisher_row(a: &Args) -> Row {
        let name = format!("matrix-bench/handoff/{}", std::process::id());
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .expect("create an iceoryx2 node");
        let service = service(&node, &name);
        let publisher = service
            .publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .expect("create the publisher");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ICEORYX_ROLE, format!("{name} {} {}", a.messages, a.samples))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the subscriber process");
        let stdout = child.stdout.take().unwrap();
        let mut c = Consumer {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        assert_eq!(c.line(), "ready");
        let mut rates = Vec::new();
        for _ in 0..ROUNDS {
            let start = now_ns();
            for seq in 0..a.messages {
                send(&publisher, seq);
            }
            let end: u64 = c.line().strip_prefix("tput ").unwrap().parse().unwrap();
            rates.push(a.messages as f64 / ((end - start) as f64 / 1e9));
            // Let the subscriber's round end before the next round starts.
            spin_for(1_000_000);
        }
        for seq in 0..a.samples {
            send(&publisher, seq);
            spin_for(20_000);
        }
        let line = c.line();
        let mut it = line
            .strip_prefix("lat ")
            .unwrap()
            .split(' ')
            .map(|v| v.parse::<u64>().unwrap());
        let (p50, p99) = (it.next().unwrap(), it.next().unwrap());
        assert!(
            c.child.wait().unwrap().success(),
            "the subscriber process failed"
        );
        Row {
            transport: "iceoryx2 publish-subscribe, 2 processes, spinning subscriber",
            payload: "64 B sample",
            rate: Some(median(rates)),
            p50,
            p99,
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var(ROLE) {
        let mut it = spec.split(' ');
        let segment = it.next().unwrap().to_owned();
        let nums: Vec<u64> = it.map(|v| v.parse().unwrap()).collect();
        consumer(&segment, nums[0], nums[1]);
        return;
    }
    #[cfg(feature = "iceoryx2")]
    if let Ok(spec) = std::env::var(ICEORYX_ROLE) {
        let mut it = spec.split(' ');
        let service = it.next().unwrap().to_owned();
        let nums: Vec<u64> = it.map(|v| v.parse().unwrap()).collect();
        iceoryx::subscriber(&service, nums[0], nums[1]);
        return;
    }
    let a = args();
    if let Some(messages) = a.one_thread {
        one_thread(messages);
        return;
    }
    eprintln!(
        "queue hand-off: {ROUNDS} rounds of {} messages for throughput (median shown), {} paced samples for latency",
        a.messages, a.samples
    );
    let mut rows = matrix_rows(&a);
    rows.push(crossbeam_row(&a));
    #[cfg(feature = "iceoryx2")]
    {
        let started = std::time::SystemTime::now();
        rows.push(iceoryx::publisher_row(&a));
        iceoryx::remove_global_management_since(started);
    }
    #[cfg(not(feature = "iceoryx2"))]
    eprintln!("(iceoryx2 row left out: build with --features iceoryx2)");
    let verdicts = targets(&rows);
    println!(
        "Queue hand-off, one producer → one consumer, capacity {CAPACITY} — {}",
        machine()
    );
    println!();
    println!("| transport | payload per message | messages/s | one-way p50 | one-way p99 |");
    println!("|---|---|---:|---:|---:|");
    for r in &rows {
        let rate = r
            .rate
            .map_or("—".to_owned(), |r| format!("{:.2} M", r / 1e6));
        println!(
            "| {} | {} | {} | {:.2} µs | {:.2} µs |",
            r.transport,
            r.payload,
            rate,
            r.p50 as f64 / 1e3,
            r.p99 as f64 / 1e3
        );
    }
    println!();
    println!("| target / ratio (this run) | value | |");
    println!("|---|---:|---|");
    for line in verdicts {
        println!("{line}");
    }
}

/// Messages/s every WorkQueue row must reach between two processes.
const TARGET_RATE: f64 = 10e6;
/// One-way p50 of the spinning WorkQueue consumer must stay at or below this.
const TARGET_P50_NS: u64 = 200;

/// The target lines (met / not met, and by how much) and the ratios of the
/// spinning WorkQueue row to the other transports of the same run.
fn targets(rows: &[Row]) -> Vec<String> {
    let ours = &rows[0];
    let rate = ours.rate.unwrap_or(0.0);
    let verdict = |met: bool, miss: String| {
        if met {
            "met".to_owned()
        } else {
            format!("**not met** ({miss})")
        }
    };
    let mut lines = vec![
        format!(
            "| WorkQueue, 2 processes: ≥ {:.0} M messages/s | {:.2} M | {} |",
            TARGET_RATE / 1e6,
            rate / 1e6,
            verdict(
                rate >= TARGET_RATE,
                format!("{:.0} % short", (1.0 - rate / TARGET_RATE) * 100.0)
            )
        ),
        format!(
            "| WorkQueue, 2 processes: one-way p50 ≤ {TARGET_P50_NS} ns | {} ns | {} |",
            ours.p50,
            verdict(
                ours.p50 <= TARGET_P50_NS,
                format!("{} ns over", ours.p50.saturating_sub(TARGET_P50_NS))
            )
        ),
    ];
    for other in rows.iter().skip(1).filter(|r| r.rate.is_some()) {
        let theirs = other.rate.unwrap_or(f64::NAN);
        lines.push(format!(
            "| WorkQueue ÷ {}: messages/s | {} | |",
            other.transport,
            ratio(rate / theirs)
        ));
        lines.push(format!(
            "| WorkQueue ÷ {}: p50 | {} | |",
            other.transport,
            ratio(ours.p50 as f64 / other.p50.max(1) as f64)
        ));
    }
    lines
}

/// `1.23×`, `0.0042×`: two significant digits at least.
fn ratio(x: f64) -> String {
    if x >= 0.1 || x == 0.0 || !x.is_finite() {
        format!("{x:.2}×")
    } else {
        format!("{x:.2e}×")
    }
}
