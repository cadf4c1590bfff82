//! WorkQueue semantics: names, FIFO, full/empty/closed, timeouts, owners,
//! futex sleeping across processes, and crash recovery at every window.

mod common;

use common::{spawn, watchdog, SegmentGuard, ROLE, SEGMENT};
use matrix_core::{BlockError, OwnerId};
use matrix_handler::{Block, BlockToken, HandlerError, HandlerFunctions, MatrixHandler};
use matrix_internals::{PopError, PushError, QueueError, RegistryError, WorkQueue};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

type Msg = [u64; 2];
const WAIT: Duration = Duration::from_secs(20);

fn msg(h: &impl HandlerFunctions, a: u64, b: u64) -> Block<Msg> {
    let mut block = h.allocate::<Msg>().unwrap();
    h.write_pod(&mut block, [a, b]).unwrap();
    block
}

fn owner_of<T>(h: &impl HandlerFunctions, b: &Block<T>) -> OwnerId {
    let (hdr, _) = h.matrix().block_header(b.header_offset()).unwrap();
    OwnerId(matrix_core::state::owner_of(
        hdr.state.load(Ordering::Acquire),
    ))
}

fn drain(h: &impl HandlerFunctions, q: &WorkQueue<Msg, impl HandlerFunctions>) -> Vec<Msg> {
    let mut out = Vec::new();
    loop {
        match q.pop_timeout(Duration::from_millis(300)) {
            Ok(b) => {
                out.push(h.read_pod(&b).unwrap());
                h.free(b).unwrap();
            }
            Err(PopError::Timeout) | Err(PopError::Closed) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn fifo_full_empty_len_and_owners() {
    let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "fifo", 3).unwrap();
    assert_eq!(q.capacity(), 4, "rounded up to a power of two");
    assert!(matches!(q.try_pop(), Err(PopError::Empty)));
    for i in 0..4 {
        q.try_push(msg(&h, 7, i)).unwrap();
    }
    assert_eq!(q.len(), 4);
    let back = match q.try_push(msg(&h, 7, 99)) {
        Err(PushError::Full(b)) => b,
        other => panic!("expected Full, got {other:?}"),
    };
    assert_eq!(
        h.read_pod(&back).unwrap(),
        [7, 99],
        "a full queue gives the block back"
    );
    h.free(back).unwrap();
    for i in 0..4 {
        let b = q.try_pop().unwrap();
        assert_eq!(
            owner_of(&h, &b),
            h.matrix().owner_id(),
            "the consumer adopts the block"
        );
        assert_eq!(h.read_pod(&b).unwrap(), [7, i]);
        h.free(b).unwrap();
    }
    assert!(q.is_empty());
    // Many laps around the ring.
    for i in 0..1000 {
        q.try_push(msg(&h, 1, i)).unwrap();
        let b = q.try_pop().unwrap();
        assert_eq!(h.read_pod(&b).unwrap(), [1, i]);
        h.free(b).unwrap();
    }
}

#[test]
fn pushed_blocks_belong_to_the_segment() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "owners", 8).unwrap();
    let b = msg(&h, 1, 2);
    let token = b.token();
    assert_eq!(owner_of(&h, &b), h.matrix().owner_id());
    q.try_push(b).unwrap();
    let in_queue = h.block_from_token::<Msg>(token).unwrap();
    assert_eq!(owner_of(&h, &in_queue), OwnerId::SEGMENT);
    let popped = q.try_pop().unwrap();
    assert_eq!(popped.token(), token);
    assert_eq!(owner_of(&h, &popped), h.matrix().owner_id());
    h.free(popped).unwrap();
}

#[test]
fn names_types_and_refusals() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "named", 8).unwrap();
    assert!(matches!(
        WorkQueue::<Msg, _>::create(h.share(), "named", 8),
        Err(QueueError::AlreadyExists { .. })
    ));
    assert!(matches!(
        WorkQueue::<[u64; 4], _>::open(h.share(), "named"),
        Err(QueueError::Registry(RegistryError::TypeMismatch { .. }))
    ));
    assert!(matches!(
        WorkQueue::<Msg, _>::open(h.share(), "missing"),
        Err(QueueError::Registry(RegistryError::NotFound { .. }))
    ));
    assert!(matches!(
        WorkQueue::<Msg, _>::create(h.share(), "bad name", 8),
        Err(QueueError::Registry(RegistryError::InvalidName { .. }))
    ));
    assert!(matches!(
        WorkQueue::<Msg, _>::create(h.share(), "zero", 0),
        Err(QueueError::InvalidCapacity { .. })
    ));
    // Opened by name, the same ring.
    let other = WorkQueue::<Msg, _>::open(h.share(), "named").unwrap();
    assert_eq!(other.offset(), q.offset());
    other.try_push(msg(&h, 3, 4)).unwrap();
    let b = q.try_pop().unwrap();
    assert_eq!(h.read_pod(&b).unwrap(), [3, 4]);
    // A stale handle is refused and given back.
    let again = h.block_from_token::<Msg>(b.token()).unwrap();
    h.free(b).unwrap();
    assert!(matches!(q.try_push(again), Err(PushError::Refused(..))));
    assert_eq!(q.len(), 1, "the refused push left a hole");
    assert!(
        matches!(q.try_pop(), Err(PopError::Empty)),
        "holes are skipped"
    );
    assert!(q.is_empty());
    // Not a queue at all.
    let raw = h.allocate_raw(4096).unwrap();
    assert!(matches!(
        WorkQueue::<Msg, _>::open_at(h.share(), raw.offset()),
        Err(QueueError::NotAQueue { .. })
    ));
    assert!(matches!(
        WorkQueue::<Msg, _>::open_at(h.share(), 12345),
        Err(QueueError::NotAQueue { .. })
    ));
}

/// The push hands the block to the segment with one owner CAS, checked
/// only by the segment's nonce, the header and the handle's generation (no
/// size or tag read): a block of another segment, a freed one and a stale
/// handle to a block re-allocated at the same offset are all refused, given
/// back, and leave every block's owner as it was.
#[test]
fn pushes_of_foreign_freed_and_stale_blocks_are_refused_and_change_no_owner() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let other = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "refusals", 8).unwrap();
    let me = h.matrix().owner_id();

    let foreign = msg(&other, 1, 2);
    let foreign_owner = owner_of(&other, &foreign);
    match q.try_push(foreign) {
        Err(PushError::Refused(back, HandlerError::ForeignHandle { .. })) => {
            assert_eq!(owner_of(&other, &back), foreign_owner);
            assert_eq!(other.read_pod(&back).unwrap(), [1, 2]);
            other.free(back).unwrap();
        }
        r => panic!("a block of another segment: {r:?}"),
    }

    let freed = msg(&h, 3, 4);
    let copy = h.block_from_token::<Msg>(freed.token()).unwrap();
    h.free(freed).unwrap();
    assert!(matches!(
        q.try_push(copy),
        Err(PushError::Refused(
            _,
            HandlerError::Block(BlockError::NotLive { .. })
        ))
    ));

    // The same offset again, a newer generation: the old handle is stale.
    let mut local = h.local();
    let first = local.allocate::<Msg>().unwrap();
    let stale = h.block_from_token::<Msg>(first.token()).unwrap();
    local.free(first).unwrap();
    let second = local.allocate::<Msg>().unwrap();
    assert_eq!(
        second.offset(),
        stale.offset(),
        "the cache hands it out again"
    );
    match q.try_push(stale) {
        Err(PushError::Refused(_, HandlerError::Block(BlockError::Stale { .. }))) => {}
        r => panic!("a stale handle: {r:?}"),
    }
    assert_eq!(owner_of(&h, &second), me, "the live block is still ours");

    // Three refusals, three holes, nothing to pop; a good push still works.
    assert!(matches!(q.try_pop(), Err(PopError::Empty)));
    q.try_push(second).unwrap();
    let popped = q.try_pop().unwrap();
    assert_eq!(owner_of(&h, &popped), me);
    h.free(popped).unwrap();
    assert!(q.is_empty());
}

/// Two handles of one block: once one is pushed the segment owns the
/// block, and a push of the other is refused, into the same queue or
/// another, so the block sits in one slot and is delivered once. A block
/// released to the segment is refused the same way until it is adopted.
/// (Before the push judged the owner, both pushes landed and the block was
/// queued twice; `queue_races.rs` has the concurrent form.)
#[test]
fn a_block_the_segment_owns_already_is_not_pushed_again() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "twice", 8).unwrap();
    let other = WorkQueue::<Msg, _>::create(h.share(), "elsewhere", 8).unwrap();
    let b = msg(&h, 1, 2);
    let token = b.token();
    let copies = [
        h.block_from_token::<Msg>(token).unwrap(),
        h.block_from_token::<Msg>(token).unwrap(),
    ];
    q.try_push(b).unwrap();
    for (queue, copy) in [&q, &other].into_iter().zip(copies) {
        match queue.try_push(copy) {
            Err(PushError::Refused(_, HandlerError::NotOwner { owner, .. })) => {
                assert_eq!(owner, OwnerId::SEGMENT.0)
            }
            r => panic!("a second push of a queued block: {r:?}"),
        }
    }
    let popped = q.try_pop().unwrap();
    assert_eq!(popped.token(), token);
    assert_eq!(owner_of(&h, &popped), h.matrix().owner_id());
    assert!(matches!(q.try_pop(), Err(PopError::Empty)), "a hole only");
    assert!(matches!(other.try_pop(), Err(PopError::Empty)));
    h.free(popped).unwrap();

    let released = msg(&h, 3, 4);
    h.release_to_segment(&released).unwrap();
    let back = match q.try_push(released) {
        Err(PushError::Refused(back, HandlerError::NotOwner { .. })) => back,
        r => panic!("a push of a block released to the segment: {r:?}"),
    };
    h.adopt(&back).unwrap();
    q.try_push(back).unwrap();
    let b = q.try_pop().unwrap();
    assert_eq!(h.read_pod(&b).unwrap(), [3, 4]);
    h.free(b).unwrap();
    assert!(q.is_empty());
}

#[test]
fn close_fails_pushes_and_drains_pops() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "close", 8).unwrap();
    for i in 0..3 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    q.close();
    assert!(q.is_closed());
    let b = match q.try_push(msg(&h, 0, 9)) {
        Err(PushError::Closed(b)) => b,
        other => panic!("expected Closed, got {other:?}"),
    };
    h.free(b).unwrap();
    for i in 0..3 {
        let b = q.pop_timeout(WAIT).unwrap();
        assert_eq!(h.read_pod(&b).unwrap(), [0, i]);
        h.free(b).unwrap();
    }
    assert!(matches!(q.try_pop(), Err(PopError::Closed)));
    assert!(matches!(q.pop_timeout(WAIT), Err(PopError::Closed)));
}

#[test]
fn close_wakes_blocked_consumers_and_timeouts_expire() {
    let _dog = watchdog(Duration::from_secs(30));
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "wake", 2).unwrap();
    assert!(matches!(
        q.pop_timeout(Duration::from_millis(30)),
        Err(PopError::Timeout)
    ));
    q.try_push(msg(&h, 0, 0)).unwrap();
    q.try_push(msg(&h, 0, 1)).unwrap();
    let b = match q.push_timeout(msg(&h, 0, 2), Duration::from_millis(30)) {
        Err(PushError::Timeout(b)) => b,
        other => panic!("expected Timeout, got {other:?}"),
    };
    // A blocked producer is woken by a pop.
    std::thread::scope(|s| {
        let (q2, b2) = (q.clone(), b);
        let pusher = s.spawn(move || q2.push_timeout(b2, WAIT).map_err(|e| e.to_string()));
        std::thread::sleep(Duration::from_millis(50));
        let first = q.try_pop().unwrap();
        h.free(first).unwrap();
        pusher.join().unwrap().unwrap();
    });
    drain(&h, &q);
    // Blocked consumers are woken by close.
    std::thread::scope(|s| {
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let q2 = q.clone();
                s.spawn(move || q2.pop_timeout(WAIT).map(|_| ()))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err(PopError::Closed));
        }
    });
}

/// CPU time of the calling thread, in microseconds.
fn thread_cpu_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is Linux-specific and always valid there.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    let q = WorkQueue::<Msg, _>::open(h.share(), "q").unwrap();
    let crash_at = std::env::var("CRASH_AT")
        .ok()
        .and_then(|v| v.parse::<u32>().ok());
    match role.as_str() {
        "sleeper" => {
            println!("@@ready");
            let (cpu0, t0) = (thread_cpu_us(), Instant::now());
            let b = q.pop_timeout(WAIT).unwrap();
            let (cpu, wall) = (thread_cpu_us() - cpu0, t0.elapsed().as_micros());
            let [a, _] = h.read_pod(&b).unwrap();
            println!("@@woke {cpu} {wall} {a}");
        }
        "holder" => {
            let b = q.pop_timeout(WAIT).unwrap();
            println!("@@holding {}", b.token().to_u128());
            std::thread::sleep(WAIT);
        }
        "crash-pop" => {
            matrix_internals::fault::arm(crash_at.unwrap());
            let _ = q.pop_timeout(WAIT);
            println!("@@survived");
        }
        "crash-push" => {
            let b = msg(&h, 1000, 1000);
            println!("@@pushing {}", b.token().to_u128());
            matrix_internals::fault::arm(crash_at.unwrap());
            let _ = q.push_timeout(b, WAIT);
            println!("@@survived");
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn blocked_consumer_sleeps_and_wakes_on_a_push_from_another_process() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("q-sleep");
    let h = MatrixHandler::create(g.name(), 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "q", 16).unwrap();
    let mut child = spawn("child_role", "sleeper", g.name(), &[]);
    assert_eq!(child.line().as_deref(), Some("ready"));
    std::thread::sleep(Duration::from_millis(200));
    q.try_push(msg(&h, 4242, 0)).unwrap();
    let line = child.line().expect("the sleeper reports");
    let nums: Vec<u64> = line
        .strip_prefix("woke ")
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let (cpu_us, wall_us, value) = (nums[0], nums[1], nums[2]);
    assert_eq!(value, 4242, "woke with the message pushed by the parent");
    assert!(
        cpu_us < 20_000,
        "the waiting consumer used {cpu_us} µs of CPU in {wall_us} µs"
    );
    assert!(
        cpu_us * 10 < wall_us,
        "the waiting consumer used {cpu_us} µs of CPU in {wall_us} µs"
    );
    assert!(child.wait_success(WAIT));
}

#[test]
fn sigkilled_consumer_holding_a_block_loses_nothing() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("q-holder");
    let h = MatrixHandler::create(g.name(), 2 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "q", 64).unwrap();
    for i in 0..20 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    let mut child = spawn("child_role", "holder", g.name(), &[]);
    let line = child.line().expect("holder reports");
    let token = BlockToken::from_u128(line.strip_prefix("holding ").unwrap().parse().unwrap());
    let held = h.block_from_token::<Msg>(token).unwrap();
    assert_eq!(h.read_pod(&held).unwrap(), [0, 0]);
    assert_ne!(
        owner_of(&h, &held),
        OwnerId::SEGMENT,
        "the consumer adopted it"
    );
    child.kill();
    let report = h.recover().unwrap();
    assert!(report.blocks >= 1, "{report:?}");
    assert!(
        h.block_from_token::<Msg>(token).is_err(),
        "the held block was reclaimed"
    );
    let rq = q.recover();
    assert_eq!(
        (rq.redelivered, rq.pushes_completed, rq.unplaced.len()),
        (0, 0, 0)
    );
    let got: Vec<u64> = drain(&h, &q).into_iter().map(|[_, i]| i).collect();
    assert_eq!(
        got,
        (1..20).collect::<Vec<_>>(),
        "every message still in the queue is delivered"
    );
}

/// Kills a child at crash point `point` inside a pop, then recovers.
fn crash_in_pop(point: u32, test: &str) -> (matrix_internals::QueueRecovery<Msg>, Vec<u64>) {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new(test);
    let h = MatrixHandler::create(g.name(), 2 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "q", 16).unwrap();
    for i in 0..10 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    let mut child = spawn(
        "child_role",
        "crash-pop",
        g.name(),
        &[("CRASH_AT", point.to_string())],
    );
    assert_eq!(child.line(), None, "the child died at the crash point");
    assert!(!child.wait_success(WAIT));
    let used_before = h.stats().unwrap().used_blocks;
    h.recover().unwrap();
    let report = q.recover();
    let got = drain(&h, &q).into_iter().map(|[_, i]| i).collect();
    assert!(h.stats().unwrap().used_blocks < used_before);
    (report, got)
}

#[test]
fn consumer_killed_before_adopting_its_block_loses_nothing() {
    let (report, mut got) = crash_in_pop(matrix_internals::fault::POP_CLAIMED, "q-pop-claimed");
    assert_eq!(report.redelivered, 1, "{report:?}");
    got.sort();
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "the claimed message is delivered again"
    );
}

#[test]
fn consumer_killed_after_adopting_its_block_frees_the_slot() {
    let (report, got) = crash_in_pop(matrix_internals::fault::POP_ADOPTED, "q-pop-adopted");
    assert_eq!(
        (report.pops_finished, report.redelivered),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(
        got,
        (1..10).collect::<Vec<_>>(),
        "the dead consumer had message 0"
    );
}

/// Kills a producer at crash point `point` inside a push; the parent keeps
/// pushing past its slot, then a consumer blocked in `pop_timeout` repairs it.
fn crash_in_push(point: u32, test: &str) -> (Vec<Msg>, BlockToken, MatrixHandler, SegmentGuard) {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new(test);
    let h = MatrixHandler::create(g.name(), 2 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "q", 16).unwrap();
    for i in 0..5 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    let mut child = spawn(
        "child_role",
        "crash-push",
        g.name(),
        &[("CRASH_AT", point.to_string())],
    );
    let token = BlockToken::from_u128(
        child
            .line()
            .unwrap()
            .strip_prefix("pushing ")
            .unwrap()
            .parse()
            .unwrap(),
    );
    assert_eq!(child.line(), None, "the child died at the crash point");
    assert!(!child.wait_success(WAIT));
    // Other producers are not wedged by the dead one's slot.
    for i in 5..10 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    let got = drain(&h, &q);
    h.recover().unwrap();
    (got, token, h, g)
}

#[test]
fn producer_killed_mid_push_neither_wedges_nor_leaks() {
    let (got, token, h, _g) =
        crash_in_push(matrix_internals::fault::PUSH_CLAIMED, "q-push-claimed");
    assert_eq!(
        got,
        (0..10).map(|i| [0, i]).collect::<Vec<_>>(),
        "a hole, skipped; all parent messages delivered"
    );
    assert!(
        h.block_from_token::<Msg>(token).is_err(),
        "the dead producer's block was reclaimed"
    );
}

#[test]
fn producer_killed_after_handing_its_block_over_completes_the_push() {
    let (mut got, token, h, _g) =
        crash_in_push(matrix_internals::fault::PUSH_WRITTEN, "q-push-written");
    let pos = got
        .iter()
        .position(|m| *m == [1000, 1000])
        .expect("the dead producer's message is delivered");
    got.remove(pos);
    assert_eq!(got, (0..10).map(|i| [0, i]).collect::<Vec<_>>());
    assert!(
        h.block_from_token::<Msg>(token).is_err(),
        "consumed and freed"
    );
}

#[test]
fn recover_on_a_closed_queue_hands_claimed_blocks_to_the_caller() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("q-closed-claim");
    let h = MatrixHandler::create(g.name(), 2 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "q", 16).unwrap();
    for i in 0..3 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    let mut child = spawn(
        "child_role",
        "crash-pop",
        g.name(),
        &[("CRASH_AT", matrix_internals::fault::POP_CLAIMED.to_string())],
    );
    assert_eq!(child.line(), None);
    assert!(!child.wait_success(WAIT));
    q.close();
    let got: BTreeSet<u64> = drain(&h, &q).into_iter().map(|[_, i]| i).collect();
    assert_eq!(got, BTreeSet::from([1, 2]));
    let mut report = q.recover();
    assert_eq!(report.unplaced.len(), 1, "{report:?}");
    let b = report.unplaced.pop().unwrap();
    assert_eq!(h.read_pod(&b).unwrap(), [0, 0]);
    assert_eq!(owner_of(&h, &b), h.matrix().owner_id());
    h.free(b).unwrap();
}

#[test]
fn a_full_queue_behind_a_dead_consumer_is_healed_by_a_blocked_producer() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("q-full-dead");
    let h = MatrixHandler::create(g.name(), 2 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "q", 4).unwrap();
    for i in 0..4 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    let point = matrix_internals::fault::POP_CLAIMED.to_string();
    let mut child = spawn("child_role", "crash-pop", g.name(), &[("CRASH_AT", point)]);
    assert_eq!(child.line(), None);
    assert!(!child.wait_success(WAIT));
    // The dead consumer's slot is the one the tail waits on: full.
    let b = q.try_push(msg(&h, 0, 4)).unwrap_err().into_block();
    // A blocked producer notices the dead claimant and delivers its block
    // again in place; the queue is still full of messages, so it times out.
    let b = match q.push_timeout(b, Duration::from_millis(200)) {
        Err(PushError::Timeout(b)) => b,
        other => panic!("expected Timeout, got {other:?}"),
    };
    let first = q.try_pop().unwrap();
    assert_eq!(h.read_pod(&first).unwrap(), [0, 1]);
    h.free(first).unwrap();
    q.try_push(b).unwrap();
    let got: Vec<u64> = drain(&h, &q).into_iter().map(|[_, i]| i).collect();
    assert_eq!(
        got,
        vec![2, 3, 0, 4],
        "message 0 went back in at the dead slot's next lap"
    );
    h.recover().unwrap();
}

#[test]
fn destroy_frees_the_queue_its_blocks_and_its_name() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let before = h.stats().unwrap().used_blocks;
    let q = WorkQueue::<Msg, _>::create(h.share(), "gone", 8).unwrap();
    for i in 0..5 {
        q.try_push(msg(&h, 0, i)).unwrap();
    }
    assert_eq!(q.destroy(Some("gone")).unwrap(), 5);
    assert!(matches!(
        WorkQueue::<Msg, _>::open(h.share(), "gone"),
        Err(QueueError::Registry(RegistryError::NotFound { .. }))
    ));
    // Only the root registry remains.
    assert_eq!(h.stats().unwrap().used_blocks, before + 1);
    // The name is free again.
    WorkQueue::<Msg, _>::create(h.share(), "gone", 8).unwrap();
}

/// Used bytes and blocks, to show a refused destroy changed nothing.
fn usage(h: &impl HandlerFunctions) -> (u64, u64) {
    let s = h.stats().unwrap();
    (s.used_bytes, s.used_blocks)
}

#[test]
fn destroy_under_a_name_of_another_type_changes_nothing() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let _other = WorkQueue::<u32, _>::create(h.share(), "other", 8).unwrap();
    let empty = usage(&h);
    let q = WorkQueue::<Msg, _>::create(h.share(), "mine", 8).unwrap();
    q.try_push(msg(&h, 0, 1)).unwrap();
    let full = usage(&h);
    let err = q.destroy(Some("other")).unwrap_err();
    assert!(
        matches!(
            err.error,
            QueueError::Registry(RegistryError::TypeMismatch { .. })
        ),
        "{err}"
    );
    assert_eq!(usage(&h), full, "nothing freed");
    let q = err.into_queue();
    assert!(!q.is_closed());
    assert_eq!(q.len(), 1);
    assert!(WorkQueue::<u32, _>::open(h.share(), "other").is_ok());
    assert_eq!(q.destroy(Some("mine")).unwrap(), 1);
    assert_eq!(usage(&h), empty, "the ring and the message were freed");
}

#[test]
fn destroy_under_an_unregistered_name_changes_nothing() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let empty = usage(&h);
    let q = WorkQueue::<Msg, _>::create_unnamed(h.share(), 8).unwrap();
    q.try_push(msg(&h, 0, 1)).unwrap();
    q.try_push(msg(&h, 0, 2)).unwrap();
    let full = usage(&h);
    let err = q.destroy(Some("never-registered")).unwrap_err();
    assert!(
        matches!(
            err.error,
            QueueError::Registry(RegistryError::NotFound { .. })
        ),
        "{err}"
    );
    assert_eq!(usage(&h), full, "nothing freed, no root registry made");
    let q = err.into_queue();
    assert!(!q.is_closed());
    // Registered under another queue's name: refused too.
    let named = WorkQueue::<Msg, _>::create(h.share(), "taken", 8).unwrap();
    let with_named = usage(&h);
    let err = q.destroy(Some("taken")).unwrap_err();
    assert!(
        matches!(err.error, QueueError::NotThisQueue { .. }),
        "{err}"
    );
    assert_eq!(usage(&h), with_named);
    assert_eq!(err.into_queue().destroy(None).unwrap(), 2);
    named.destroy(Some("taken")).unwrap();
    // The root registry made for "taken" stays.
    assert_eq!(usage(&h).1, empty.1 + 1);
}

#[test]
fn random_single_thread_ops_match_a_fifo_model() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let q = WorkQueue::<Msg, _>::create(h.share(), "model", 8).unwrap();
    let mut model = std::collections::VecDeque::new();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut closed = false;
    for n in 0..20_000u64 {
        match rng.u32(0..100) {
            0..=49 => match q.try_push(msg(&h, 1, n)) {
                Ok(()) => {
                    assert!(!closed && model.len() < 8);
                    model.push_back(n);
                }
                Err(PushError::Full(b)) => {
                    assert!(!closed && model.len() == 8);
                    h.free(b).unwrap();
                }
                Err(PushError::Closed(b)) => {
                    assert!(closed);
                    h.free(b).unwrap();
                }
                Err(e) => panic!("{e}"),
            },
            50..=97 => match q.try_pop() {
                Ok(b) => {
                    assert_eq!(h.read_pod(&b).unwrap()[1], model.pop_front().unwrap());
                    h.free(b).unwrap();
                }
                Err(PopError::Empty) => assert!(!closed && model.is_empty()),
                Err(PopError::Closed) => assert!(closed && model.is_empty()),
                Err(e) => panic!("{e}"),
            },
            _ => {
                // Close once, late in the run.
                if n > 15_000 && rng.u32(0..10) == 0 {
                    q.close();
                    closed = true;
                }
            }
        }
        assert_eq!(q.len(), model.len());
        assert_eq!(q.is_closed(), closed);
    }
}
