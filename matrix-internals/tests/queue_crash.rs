//! WorkQueue with producers and consumers SIGKILLed at random moments and
//! replaced, then closed, recovered and drained: no message is ever
//! delivered twice, and the only messages missing are ones a killed
//! consumer had already taken (at most one per kill).
//!
//! `MATRIX_QUEUE_KILLS` raises the number of kills for soak runs.

mod common;

use common::{spawn, watchdog, ChildGuard, SegmentGuard, ROLE, SEGMENT};
use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::{PopError, PushError, WorkQueue};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

type Msg = [u64; 2];
const QUEUE: &str = "crashy";
/// Messages one producer incarnation may send.
const PER: u64 = 100_000;
/// Producer incarnations the counters have room for.
const INCARNATIONS: u64 = 48;
const WAIT: Duration = Duration::from_secs(30);

fn kills() -> usize {
    std::env::var("MATRIX_QUEUE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

struct Shared<'a> {
    seen: &'a [AtomicU8],
    pushed: &'a [AtomicU64],
}

fn shared(h: &impl HandlerFunctions, seen: u32, pushed: u32) -> Shared<'_> {
    // SAFETY: the parent allocated both regions (PER × INCARNATIONS bytes and
    // INCARNATIONS u64s, 16-aligned) and keeps them until every child is
    // gone; atomics have the layout of their integers, any bits are valid.
    unsafe {
        Shared {
            seen: std::slice::from_raw_parts(
                h.base_ptr().add(seen as usize) as *const AtomicU8,
                (PER * INCARNATIONS) as usize,
            ),
            pushed: std::slice::from_raw_parts(
                h.base_ptr().add(pushed as usize) as *const AtomicU64,
                INCARNATIONS as usize,
            ),
        }
    }
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let env = |k: &str| std::env::var(k).unwrap().parse::<u32>().unwrap();
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    let q = WorkQueue::<Msg, _>::open(h.share(), QUEUE).unwrap();
    let s = shared(&h, env("SEEN"), env("PUSHED"));
    match role.as_str() {
        "producer" => {
            let inc = env("INC") as u64;
            for seq in 0..PER {
                let mut b = h.allocate::<Msg>().unwrap();
                h.write_pod(&mut b, [inc, seq]).unwrap();
                match q.push_timeout(b, WAIT) {
                    Ok(()) => s.pushed[inc as usize].store(seq + 1, Ordering::SeqCst),
                    Err(PushError::Closed(b)) => {
                        h.free(b).unwrap();
                        break;
                    }
                    Err(e) => panic!("producer: {e}"),
                }
                if seq % 500 == 0 {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        "consumer" => loop {
            match q.pop_timeout(WAIT) {
                Ok(b) => {
                    let [inc, seq] = h.read_pod(&b).unwrap();
                    s.seen[(inc * PER + seq) as usize].fetch_add(1, Ordering::SeqCst);
                    h.free(b).unwrap();
                }
                Err(PopError::Closed) => break,
                Err(e) => panic!("consumer: {e}"),
            }
        },
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn random_sigkills_neither_duplicate_nor_lose_messages() {
    let _dog = watchdog(Duration::from_secs(120));
    let g = SegmentGuard::new("q-crash");
    let h = MatrixHandler::create(g.name(), 32 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), QUEUE, 64).unwrap();
    let seen_at = h
        .allocate_raw((PER * INCARNATIONS) as u32)
        .unwrap()
        .offset();
    let pushed_at = h.allocate_raw(8 * INCARNATIONS as u32).unwrap().offset();
    let s = shared(&h, seen_at, pushed_at);
    s.seen.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    s.pushed.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    let env = |inc: u64| {
        vec![
            ("SEEN", seen_at.to_string()),
            ("PUSHED", pushed_at.to_string()),
            ("INC", inc.to_string()),
        ]
    };

    let mut next_inc = 0;
    let start_producer = |next_inc: &mut u64| {
        let child = spawn("child_role", "producer", g.name(), &env(*next_inc));
        *next_inc += 1;
        child
    };
    let mut producers: Vec<ChildGuard> = (0..2).map(|_| start_producer(&mut next_inc)).collect();
    let mut consumers: Vec<ChildGuard> = (0..2)
        .map(|_| spawn("child_role", "consumer", g.name(), &env(0)))
        .collect();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut consumer_kills = 0;
    for _ in 0..kills().min((INCARNATIONS - 3) as usize) {
        std::thread::sleep(Duration::from_millis(rng.u64(5..30)));
        if rng.bool() {
            let i = rng.usize(0..producers.len());
            producers[i].kill();
            producers[i] = start_producer(&mut next_inc);
        } else {
            let i = rng.usize(0..consumers.len());
            consumers[i].kill();
            consumer_kills += 1;
            consumers[i] = spawn("child_role", "consumer", g.name(), &env(0));
        }
    }
    std::thread::sleep(Duration::from_millis(30));
    q.close();
    for c in producers.iter_mut().chain(consumers.iter_mut()) {
        assert!(c.wait_success(WAIT), "a child failed");
    }
    h.recover().unwrap();
    let report = q.recover();
    let mut late = Vec::new();
    for b in report.unplaced {
        late.push(h.read_pod(&b).unwrap());
        h.free(b).unwrap();
    }
    while let Ok(b) = q.try_pop() {
        late.push(h.read_pod(&b).unwrap());
        h.free(b).unwrap();
    }
    for [inc, seq] in late {
        s.seen[(inc * PER + seq) as usize].fetch_add(1, Ordering::SeqCst);
    }

    let mut missing = 0;
    let mut delivered = 0;
    for inc in 0..next_inc {
        let pushed = s.pushed[inc as usize].load(Ordering::SeqCst);
        for seq in 0..PER {
            let n = s.seen[(inc * PER + seq) as usize].load(Ordering::SeqCst);
            assert!(n <= 1, "message {inc}/{seq} delivered {n} times");
            delivered += n as u64;
            if seq < pushed && n == 0 {
                missing += 1;
            }
            // The push in flight when a producer died may or may not have landed.
            assert!(
                n == 0 || seq <= pushed,
                "message {inc}/{seq} delivered but never pushed"
            );
        }
    }
    println!("{delivered} delivered, {missing} taken by killed consumers, {consumer_kills} consumer kills");
    assert!(delivered > 0);
    assert!(
        missing <= consumer_kills,
        "{missing} messages lost with only {consumer_kills} consumer kills"
    );
}
