//! WorkQueue under P producers × C consumers, threads and processes:
//! every message is received exactly once (checked per message), and each
//! consumer sees each producer's messages in order.
//!
//! `MATRIX_QUEUE_MESSAGES` raises the message count for soak runs (default
//! 1,000,000 per run, as the acceptance criteria ask).

mod common;

use common::{spawn, watchdog, ChildGuard, SegmentGuard, ROLE, SEGMENT};
use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::{PopError, WorkQueue};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

type Msg = [u64; 2];
const QUEUE: &str = "stress";
const CAPACITY: u32 = 1024;
const WAIT: Duration = Duration::from_secs(60);

fn messages() -> u64 {
    std::env::var("MATRIX_QUEUE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Pushes `count` messages `[producer, seq]`.
fn produce(
    h: &impl HandlerFunctions,
    q: &WorkQueue<Msg, impl HandlerFunctions>,
    producer: u64,
    count: u64,
) {
    for seq in 0..count {
        let mut b = h
            .allocate::<Msg>()
            .expect("arena sized for the ring and the in-flight blocks");
        h.write_pod(&mut b, [producer, seq]).unwrap();
        q.push_timeout(b, WAIT).expect("push within the timeout");
    }
}

/// Pops until the queue is closed and drained; marks each message in
/// `seen`; returns (messages, order violations).
fn consume(
    h: &impl HandlerFunctions,
    q: &WorkQueue<Msg, impl HandlerFunctions>,
    seen: &[AtomicU8],
    per_producer: u64,
    producers: u64,
) -> (u64, u64) {
    let mut last = vec![None::<u64>; producers as usize];
    let (mut got, mut disorder) = (0, 0);
    loop {
        match q.pop_timeout(WAIT) {
            Ok(b) => {
                let [p, seq] = h.read_pod(&b).unwrap();
                assert!(
                    p < producers && seq < per_producer,
                    "garbage message {p}/{seq}"
                );
                if last[p as usize].is_some_and(|l| l >= seq) {
                    disorder += 1;
                }
                last[p as usize] = Some(seq);
                seen[(p * per_producer + seq) as usize].fetch_add(1, Ordering::Relaxed);
                h.free(b).unwrap();
                got += 1;
            }
            Err(PopError::Closed) => return (got, disorder),
            Err(e) => panic!("consumer: {e}"),
        }
    }
}

fn check_seen(seen: &[AtomicU8]) {
    let lost = seen
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) == 0)
        .count();
    let dup = seen
        .iter()
        .filter(|c| c.load(Ordering::Relaxed) > 1)
        .count();
    assert_eq!(
        (lost, dup),
        (0, 0),
        "{lost} messages lost, {dup} duplicated"
    );
}

fn threads_run(producers: u64, consumers: u64) {
    threads_run_with(producers, consumers, CAPACITY, messages());
}

fn threads_run_with(producers: u64, consumers: u64, capacity: u32, total: u64) {
    let _dog = watchdog(Duration::from_secs(120));
    let per = total / producers;
    let h = MatrixHandler::bootstrap(None, 32 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), QUEUE, capacity).unwrap();
    let seen: Vec<AtomicU8> = (0..per * producers).map(|_| AtomicU8::new(0)).collect();
    let (got, disorder) = std::thread::scope(|s| {
        let cons: Vec<_> = (0..consumers)
            .map(|_| {
                let (h, q, seen) = (h.share(), q.clone(), &seen);
                s.spawn(move || consume(&h, &q, seen, per, producers))
            })
            .collect();
        let prods: Vec<_> = (0..producers)
            .map(|p| {
                let (h, q) = (h.share(), q.clone());
                s.spawn(move || produce(&h, &q, p, per))
            })
            .collect();
        for p in prods {
            p.join().unwrap();
        }
        q.close();
        cons.into_iter()
            .map(|c| c.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert_eq!(got, per * producers);
    assert_eq!(
        disorder, 0,
        "a consumer saw a producer's messages out of order"
    );
    check_seen(&seen);
    assert_eq!(q.len(), 0);
    assert_eq!(
        h.stats().unwrap().blocks_by_state.get(&1).copied(),
        Some(2),
        "only the ring and the registry stay allocated"
    );
}

/// Rings this small make every producer and consumer meet on the same
/// slots lap after lap (push x pop of one slot, two consumers on one slot)
/// and sleep and wake all the time: a lost wake-up ends in a Timeout.
#[test]
fn small_rings_same_slot_races_and_wakeups() {
    for capacity in [1, 2, 16] {
        threads_run_with(1, 1, capacity, 100_000);
        threads_run_with(2, 2, capacity, 100_000);
    }
}

#[test]
fn threads_1x1() {
    threads_run(1, 1);
}

#[test]
fn threads_2x2() {
    threads_run(2, 2);
}

#[test]
fn threads_4x4() {
    threads_run(4, 4);
}

/// The per-message counters live in the segment so every process sees them.
fn seen_array(h: &impl HandlerFunctions, offset: u32, len: u64) -> &[AtomicU8] {
    // SAFETY: the parent allocated `len` bytes at `offset` for the counters
    // and keeps them allocated until every child has exited; AtomicU8 has
    // the layout of u8 and any byte is a valid value.
    unsafe {
        std::slice::from_raw_parts(
            h.base_ptr().add(offset as usize) as *const AtomicU8,
            len as usize,
        )
    }
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let env = |k: &str| std::env::var(k).unwrap().parse::<u64>().unwrap();
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    let q = WorkQueue::<Msg, _>::open(h.share(), QUEUE).unwrap();
    let (per, producers) = (env("PER"), env("PRODUCERS"));
    match role.as_str() {
        "producer" => {
            produce(&h, &q, env("ID"), per);
            println!("@@produced");
        }
        "consumer" => {
            let seen = seen_array(&h, env("SEEN") as u32, per * producers);
            let (got, disorder) = consume(&h, &q, seen, per, producers);
            println!("@@consumed {got} {disorder}");
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn processes_run(producers: u64, consumers: u64, test: &str) {
    let _dog = watchdog(Duration::from_secs(150));
    let total = messages();
    let per = total / producers;
    let g = SegmentGuard::new(test);
    let h = MatrixHandler::create(g.name(), 48 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), QUEUE, CAPACITY).unwrap();
    let seen_offset = h.allocate_raw((per * producers) as u32).unwrap().offset();
    let seen = seen_array(&h, seen_offset, per * producers);
    for c in seen {
        c.store(0, Ordering::Relaxed);
    }
    let env = |id: u64| {
        vec![
            ("PER", per.to_string()),
            ("PRODUCERS", producers.to_string()),
            ("SEEN", seen_offset.to_string()),
            ("ID", id.to_string()),
        ]
    };
    let mut cons: Vec<ChildGuard> = (0..consumers)
        .map(|i| spawn("child_role", "consumer", g.name(), &env(i)))
        .collect();
    let mut prods: Vec<ChildGuard> = (0..producers)
        .map(|p| spawn("child_role", "producer", g.name(), &env(p)))
        .collect();
    for p in &mut prods {
        assert_eq!(p.line().as_deref(), Some("produced"));
        assert!(p.wait_success(WAIT), "a producer failed");
    }
    q.close();
    let (mut got, mut disorder) = (0, 0);
    for c in &mut cons {
        let line = c.line().expect("consumer report");
        let mut parts = line
            .strip_prefix("consumed ")
            .expect("consumer report")
            .split(' ');
        got += parts.next().unwrap().parse::<u64>().unwrap();
        disorder += parts.next().unwrap().parse::<u64>().unwrap();
        assert!(c.wait_success(WAIT), "a consumer failed");
    }
    assert_eq!(got, per * producers);
    assert_eq!(
        disorder, 0,
        "a consumer saw a producer's messages out of order"
    );
    check_seen(seen);
    h.recover().unwrap();
    // The ring, the registry and the counters; every message block was freed.
    assert_eq!(h.stats().unwrap().blocks_by_state.get(&1).copied(), Some(3));
}

#[test]
fn processes_1x1() {
    processes_run(1, 1, "q-proc-1x1");
}

#[test]
fn processes_2x2() {
    processes_run(2, 2, "q-proc-2x2");
}

#[test]
fn processes_4x4() {
    processes_run(4, 4, "q-proc-4x4");
}
