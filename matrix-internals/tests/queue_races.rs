//! The race rows of `WorkQueue` push: the one owner CAS with which a push
//! hands its block to the segment, met on the same block at the same moment
//! by each operation that can change that block's header word, or take the
//! slot the push claims (`matrix_testkit::race`). Each test prints
//! `race-matrix | pair | mode | runs | iterations | result`, as the
//! allocator's matrix does (`MATRIX_RACE_SECONDS` sets every budget).
//!
//! | pair | tests |
//! |---|---|
//! | push × free of the block through a second handle | `push_x_free_{wide,narrow,processes}` |
//! | push × push of one block (two handles), one queue | `push_x_push_same_queue_{wide,narrow}` |
//! | push × push of one block (two handles), two queues | `push_x_push_other_queue_{wide,narrow}` |
//! | push × reallocate through a second handle | `push_x_reallocate_{wide,narrow}` |
//! | push × `recover()` of the block's dead owner | `push_x_recover_of_a_dead_owner` |
//! | push × `WorkQueue::recover` delivering a dead consumer's block again | `push_x_queue_recover_{wide,narrow}` |
//! | pop's adopt × free and reuse of the block through a second handle | `pop_x_free_and_reuse_narrow` |
//!
//! *Wide*: a fresh block each round, the two sides released together by
//! the harness's rendezvous after random spins. *Narrow*: the same, with
//! the pushing side stalling inside its windows (`fault::stall_at`): after
//! its slot claim, between the block's checks and the owner CAS, and
//! between the CAS and the publish, while its rival (a free, a resize)
//! starts once the push has claimed its slot; for `WorkQueue::recover`, a
//! 2-slot ring so that the push and the re-delivery want the same slot.
//!
//! `free` and `reallocate` have no owner rule against the segment (anyone
//! may free or resize a segment-owned block), so neither ever loses to a
//! push: when the push's CAS comes first, the free or resize still
//! succeeds and the slot is left holding a token of a dead generation,
//! which `pop` reports as `PopError::Corrupted` and skips. The rows assert
//! that exact pair of outcomes and that the block is never delivered.
//!
//! The push × push rows failed at round 1 before push judged the block's
//! owner: its CAS went from any owner to the segment, so both pushes of
//! one block landed and the block sat in two slots. The pop row failed at
//! round 13 in each of three runs before a pop's adopt CAS named the
//! generation it had checked: the consumer adopted the block's new
//! occupant, given to the segment by the second handle, under its old
//! handle.
//!
//! Every row ends by destroying its queues and finding the segment with
//! not a byte used and every invariant holding.

use matrix_core::{BlockError, OwnerId};
use matrix_handler::{
    Block, BlockToken, HandlerError, HandlerFunctions, MatrixHandler, ResizeKind, SharedHandler,
};
use matrix_internals::{fault, PopError, PushError, QueueRecovery, WorkQueue};
use matrix_testkit::race::{self, record, ChildSide, RaceConfig};
use matrix_testkit::segment::SegmentName;
use matrix_testkit::stress::child::{self, Launcher};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

type Msg = [u64; 2];
type Queue = WorkQueue<Msg, SharedHandler>;

const SEGMENT: u32 = 1 << 20;
/// The second word of every message, so that a read of another block shows.
const MARK: u64 = 0x5155_4555_4552_4143;

/// Where a stalled pusher stalls: after its slot claim, between the block's
/// checks and the owner CAS, and after the CAS.
const PUSH_WINDOWS: &[u32] = &[
    fault::PUSH_CLAIMED,
    fault::PUSH_HANDING_OVER,
    fault::PUSH_WRITTEN,
];

#[derive(Clone, Copy, Debug)]
struct Shape {
    capacity: u32,
    stall: bool,
}

const WIDE: Shape = Shape {
    capacity: 16,
    stall: false,
};

const NARROW: Shape = Shape {
    capacity: 2,
    stall: true,
};

impl Shape {
    fn name(self) -> &'static str {
        if self.stall {
            "narrow"
        } else {
            "wide"
        }
    }

    fn push<T, H: HandlerFunctions>(self, q: &WorkQueue<T, H>, block: Block<T>) -> Pushed {
        if self.stall {
            fault::stall_at(PUSH_WINDOWS);
        }
        let r = q.try_push(block);
        fault::stall_at(&[]);
        Pushed::from(r)
    }

    /// The rival of a stalled side starts once that side has claimed its
    /// slot (`claimed`: the ring's tail or head moved), after a random few
    /// spins, so that it lands inside the stalled side's windows or just
    /// after its CAS rather than wherever the scheduler puts it: on a
    /// loaded machine the two sides seldom run at once. The wait yields
    /// (the stalled side may need this core) and is bounded.
    fn follow(self, claimed: impl Fn() -> bool) {
        if !self.stall {
            return;
        }
        let mut n = 0u32;
        while !claimed() && n < 1 << 20 {
            if n % 64 == 63 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
            n += 1;
        }
        for _ in 0..fastrand::u32(0..2048) {
            std::hint::spin_loop();
        }
    }
}

/// A push's outcome. The block a refusal hands back is dropped: a `Block`
/// is a handle, and the rows judge the block by its header.
#[derive(Debug)]
enum Pushed {
    Landed,
    Full,
    Refused(HandlerError),
    /// Shown (through `Debug`) in a failure's message.
    Other(#[allow(dead_code)] String),
}

impl<T> From<Result<(), PushError<T>>> for Pushed {
    fn from(r: Result<(), PushError<T>>) -> Self {
        match r {
            Ok(()) => Pushed::Landed,
            Err(PushError::Full(_)) => Pushed::Full,
            Err(PushError::Refused(_, e)) => Pushed::Refused(e),
            Err(e) => Pushed::Other(e.to_string()),
        }
    }
}

/// The refusal of a block that was freed or resized first.
fn dead_generation(e: &HandlerError) -> bool {
    matches!(
        e,
        HandlerError::Block(BlockError::NotLive { .. } | BlockError::Stale { .. })
    )
}

/// The refusal of a block the segment already owns (another push took it).
fn already_the_segments(e: &HandlerError) -> bool {
    matches!(e, HandlerError::NotOwner { owner, .. } if *owner == OwnerId::SEGMENT.0)
}

/// Side B of the process row: frees the block of each token word.
const SIDES: &[ChildSide] = &[ChildSide {
    name: "queue-free",
    op: |h, words| {
        words.iter().enumerate().fold(0, |acc, (i, &w)| {
            let t = BlockToken::from_word(w, h.segment_nonce());
            let freed = h.block_from_token::<Msg>(t).and_then(|b| h.free(b));
            acc | ((freed.is_ok() as u64) << i)
        })
    },
}];

/// Children re-run this binary with a filter naming this test.
#[test]
fn race_child() {
    if let Some(code) = race::run_child(SIDES) {
        std::process::exit(code);
    }
}

fn launcher(entry: &str) -> Launcher {
    Launcher::current_exe_with_args([entry, "--exact", "--nocapture", "--test-threads=1"])
        .expect("current exe")
}

fn cfg() -> RaceConfig {
    RaceConfig {
        budget: Duration::from_millis(700),
        ..RaceConfig::default()
    }
    .with_env()
}

/// A round's block, fresh, with a second handle to it: what another thread
/// of the participant holding a copy of the handle (or of its token) has.
struct Twin {
    token: BlockToken,
    first: Mutex<Option<Block<Msg>>>,
    second: Mutex<Option<Block<Msg>>>,
}

impl Twin {
    fn new(h: &MatrixHandler, round: u64) -> Result<Twin, String> {
        let mut b = h.allocate::<Msg>().map_err(|e| e.to_string())?;
        h.write_pod(&mut b, [round, MARK])
            .map_err(|e| e.to_string())?;
        let copy = h
            .block_from_token::<Msg>(b.token())
            .map_err(|e| e.to_string())?;
        Ok(Twin {
            token: b.token(),
            first: Mutex::new(Some(b)),
            second: Mutex::new(Some(copy)),
        })
    }

    fn first(&self) -> Block<Msg> {
        self.first.lock().unwrap().take().expect("one use")
    }

    fn second(&self) -> Block<Msg> {
        self.second.lock().unwrap().take().expect("one use")
    }
}

fn owner_of<T>(h: &impl HandlerFunctions, b: &Block<T>) -> Result<u32, String> {
    let (hdr, _) = h
        .matrix()
        .block_header(b.header_offset())
        .map_err(|e| e.to_string())?;
    Ok(matrix_core::state::owner_of(
        hdr.state.load(Ordering::Acquire),
    ))
}

/// The queue has nothing left to deliver (holes are skipped).
fn nothing_left<T, H: HandlerFunctions>(q: &WorkQueue<T, H>) -> Result<(), String> {
    match q.try_pop() {
        Err(PopError::Empty) if q.is_empty() => Ok(()),
        Err(PopError::Empty) => Err(format!("{} positions left after a pop found none", q.len())),
        Ok(b) => Err(format!("a block still queued: {b:?}")),
        Err(e) => Err(format!("pop: {e}")),
    }
}

/// The one block `q` must deliver now: the round's, adopted by us, intact.
fn delivered(h: &MatrixHandler, q: &Queue, token: BlockToken, round: u64) -> Result<(), String> {
    let b = q.try_pop().map_err(|e| format!("the pushed block: {e}"))?;
    if b.token() != token {
        return Err(format!("delivered {b:?}, not the pushed block"));
    }
    let owner = owner_of(h, &b)?;
    if owner != h.matrix().owner_id().0 {
        return Err(format!("the popped block is owned by {owner}"));
    }
    let m = h.read_pod(&b).map_err(|e| e.to_string())?;
    if m != [round, MARK] {
        return Err(format!("the popped block holds {m:?}"));
    }
    h.free(b)
        .map_err(|e| format!("free of the popped block: {e}"))
}

/// The end of every row: the queues gone, and the segment with not a byte
/// used and every invariant holding.
fn all_back(h: &MatrixHandler, queues: Vec<Queue>) -> Result<(), String> {
    for q in queues {
        q.destroy(None).map_err(|e| e.to_string())?;
    }
    race::all_back(h)
}

// ---- push × free ----

/// The free always succeeds. Free first: the push is refused, its slot a
/// hole. Push first: the slot holds the freed block's token, and the pop
/// reports it `Corrupted` and skips it. Either way the block is free.
fn check_push_x_free(
    h: &MatrixHandler,
    q: &Queue,
    token: BlockToken,
    pushed: Pushed,
    freed: Result<(), String>,
) -> Result<(), String> {
    freed.map_err(|e| format!("the free failed: {e} (push {pushed:?})"))?;
    let popped = q.try_pop();
    match (&pushed, &popped) {
        (Pushed::Landed, Err(PopError::Corrupted { token: t, .. })) if t.word() == token.word() => {
        }
        (Pushed::Refused(e), Err(PopError::Empty)) if dead_generation(e) => {}
        _ => return Err(format!("push {pushed:?}, free ok, then pop {popped:?}")),
    }
    nothing_left(q)?;
    if let Ok(b) = h.block_from_token::<Msg>(token) {
        return Err(format!("{b:?} is live after its free"));
    }
    Ok(())
}

fn push_x_free(shape: Shape) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let q = Queue::create_unnamed(h.share(), shape.capacity).unwrap();
    let result = race::pair(
        &cfg(),
        |round| Twin::new(&h, round),
        |t| shape.push(&q, t.first()),
        |t| {
            let b = t.second();
            shape.follow(|| !q.is_empty());
            h.free(b).map_err(|e| e.to_string())
        },
        |_, t, pushed, freed| check_push_x_free(&h, &q, t.token, pushed, freed),
    );
    let end = all_back(&h, vec![q]);
    let pair = format!("WorkQueue push × free (same block, {})", shape.name());
    record(&pair, result, end);
}

#[test]
fn push_x_free_wide() {
    push_x_free(WIDE);
}

#[test]
fn push_x_free_narrow() {
    push_x_free(NARROW);
}

/// The free from another participant (a child process holding the token).
#[test]
fn push_x_free_processes() {
    let shape = NARROW;
    let name = SegmentName::new("queue-race-free");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let q = Queue::create_unnamed(h.share(), shape.capacity).unwrap();
    let result = race::process_pair(
        &cfg(),
        &launcher("race_child"),
        name.as_str(),
        "queue-free",
        |round| {
            let t = Twin::new(&h, round)?;
            let words = vec![t.token.word()];
            Ok((t, words))
        },
        |t| shape.push(&q, t.first()),
        |_, t, pushed, freed| {
            let freed = if freed == 1 {
                Ok(())
            } else {
                Err("refused in the child".to_owned())
            };
            check_push_x_free(&h, &q, t.token, pushed, freed)
        },
    );
    let end = all_back(&h, vec![q]);
    record(
        "WorkQueue push × free (same block, freed by another process, narrow)",
        result,
        end,
    );
}

// ---- push × push ----

/// Exactly one push lands; the other is refused because the segment owns
/// the block already; only the winner's queue delivers it, once.
fn check_one_push(
    h: &MatrixHandler,
    (qa, qb): (&Queue, &Queue),
    t: &Twin,
    round: u64,
    a: Pushed,
    b: Pushed,
) -> Result<(), String> {
    let winner = match (&a, &b) {
        (Pushed::Landed, Pushed::Refused(e)) if already_the_segments(e) => qa,
        (Pushed::Refused(e), Pushed::Landed) if already_the_segments(e) => qb,
        _ => {
            return Err(format!(
                "pushes {a:?} / {b:?}: exactly one must land and the other be refused"
            ))
        }
    };
    delivered(h, winner, t.token, round)?;
    nothing_left(qa)?;
    nothing_left(qb)
}

fn push_x_push(shape: Shape, two_queues: bool) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let qa = Queue::create_unnamed(h.share(), shape.capacity).unwrap();
    let qb = if two_queues {
        Queue::create_unnamed(h.share(), shape.capacity).unwrap()
    } else {
        qa.clone()
    };
    let result = race::pair(
        &cfg(),
        |round| Twin::new(&h, round).map(|t| (t, round)),
        |(t, _)| shape.push(&qa, t.first()),
        |(t, _)| shape.push(&qb, t.second()),
        |_, (t, round), a, b| check_one_push(&h, (&qa, &qb), &t, round, a, b),
    );
    let queues = if two_queues { vec![qa, qb] } else { vec![qa] };
    let end = all_back(&h, queues);
    let which = if two_queues {
        "two queues"
    } else {
        "one queue"
    };
    let pair = format!(
        "WorkQueue push × push (same block, {which}, {})",
        shape.name()
    );
    record(&pair, result, end);
}

#[test]
fn push_x_push_same_queue_wide() {
    push_x_push(WIDE, false);
}

#[test]
fn push_x_push_same_queue_narrow() {
    push_x_push(NARROW, false);
}

#[test]
fn push_x_push_other_queue_wide() {
    push_x_push(WIDE, true);
}

#[test]
fn push_x_push_other_queue_narrow() {
    push_x_push(NARROW, true);
}

// ---- push × reallocate ----

/// The resize always succeeds (its owner rule lets anyone resize a
/// segment-owned block). Resize first: the push is refused and the resized
/// block is still ours. Push first: the resized block is the segment's, and
/// the slot's token names the old generation: `Corrupted` at the pop.
fn check_push_x_reallocate(
    h: &MatrixHandler,
    q: &Queue,
    token: BlockToken,
    round: u64,
    pushed: Pushed,
    (resized, block): (Result<ResizeKind, HandlerError>, Block<Msg>),
) -> Result<(), String> {
    resized.map_err(|e| format!("the resize failed: {e} (push {pushed:?})"))?;
    let owner = owner_of(h, &block)?;
    let popped = q.try_pop();
    let me = h.matrix().owner_id().0;
    match (&pushed, &popped) {
        (Pushed::Landed, Err(PopError::Corrupted { token: t, .. }))
            if t.word() == token.word() && owner == OwnerId::SEGMENT.0 => {}
        (Pushed::Refused(e), Err(PopError::Empty)) if dead_generation(e) && owner == me => {}
        _ => {
            return Err(format!(
                "push {pushed:?}, resize ok (owner {owner}), then pop {popped:?}"
            ))
        }
    }
    nothing_left(q)?;
    let mut out = vec![[0u64; 2]; grown_len(round)];
    h.read_slice(&block, &mut out).map_err(|e| e.to_string())?;
    if out[0] != [round, MARK] || out[1..].iter().any(|m| *m != [0, 0]) {
        return Err(format!("the resized block holds {out:?}"));
    }
    h.free(block)
        .map_err(|e| format!("free of the resized block: {e}"))
}

/// Even rounds grow the block in place, odd ones past what its neighbours
/// leave, so it moves: the push then meets a RESIZING word or a freed one.
fn grown_len(round: u64) -> usize {
    if round % 2 == 0 {
        2
    } else {
        48
    }
}

fn push_x_reallocate(shape: Shape) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let q = Queue::create_unnamed(h.share(), shape.capacity).unwrap();
    // A resize in place is over long before a push has claimed its slot:
    // wider random delays let the push's CAS come first in some rounds.
    let c = RaceConfig {
        max_spins: 4096,
        ..cfg()
    };
    let result = race::pair(
        &c,
        |round| Twin::new(&h, round).map(|t| (t, round)),
        |(t, _)| shape.push(&q, t.first()),
        |(t, round)| {
            let mut b = t.second();
            shape.follow(|| !q.is_empty());
            (h.reallocate(&mut b, grown_len(*round)), b)
        },
        |_, (t, round), pushed, resized| {
            check_push_x_reallocate(&h, &q, t.token, round, pushed, resized)
        },
    );
    let end = all_back(&h, vec![q]);
    let pair = format!("WorkQueue push × reallocate (same block, {})", shape.name());
    record(&pair, result, end);
}

#[test]
fn push_x_reallocate_wide() {
    push_x_reallocate(WIDE);
}

#[test]
fn push_x_reallocate_narrow() {
    push_x_reallocate(NARROW);
}

// ---- push × recover() of the block's dead owner ----

/// Blocks of one SIGKILLed participant per round.
const DEAD_BLOCKS: usize = 8;

/// A participant died holding blocks; another pushes them (with handles
/// rebuilt from their tokens) while `recover()` reclaims the dead one's.
/// Each block goes to exactly one: the queue (recover leaves it, the pop
/// delivers it) or the recovery (the push is refused).
#[test]
fn push_x_recover_of_a_dead_owner() {
    let name = SegmentName::new("queue-race-dead-owner");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let q = WorkQueue::<u8, SharedHandler>::create_unnamed(h.share(), 16).unwrap();
    let holders = launcher("race_child");
    let c = RaceConfig {
        targets_per_round: DEAD_BLOCKS as u64,
        ..cfg()
    };
    let result = race::pair(
        &c,
        |_| {
            let (mut child, tokens) =
                race::spawn_holder(&holders, name.as_str(), DEAD_BLOCKS, 16, c.timeout)?;
            child.kill().map_err(|e| format!("kill: {e}"))?;
            let blocks = tokens
                .iter()
                .map(|&t| h.block_from_token::<u8>(t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok((tokens, Mutex::new(blocks)))
        },
        |(_, blocks)| {
            let blocks = std::mem::take(&mut *blocks.lock().unwrap());
            blocks
                .into_iter()
                .map(|b| WIDE.push(&q, b))
                .collect::<Vec<_>>()
        },
        |_| h.recover(),
        |_, (tokens, _), pushed, recovered| {
            let rec = recovered.map_err(|e| format!("recover: {e}"))?;
            let landed: Vec<BlockToken> = tokens
                .iter()
                .zip(&pushed)
                .filter(|(_, p)| matches!(p, Pushed::Landed))
                .map(|(&t, _)| t)
                .collect();
            let refused = pushed
                .iter()
                .filter(|p| matches!(p, Pushed::Refused(e) if dead_generation(e)))
                .count();
            if landed.len() + refused != DEAD_BLOCKS
                || rec.participants != 1
                || rec.blocks != refused as u64
            {
                return Err(format!(
                    "pushes {pushed:?}; recover reclaimed {rec:?}: each block must go to one"
                ));
            }
            for t in landed {
                let b = q.try_pop().map_err(|e| format!("a pushed block: {e}"))?;
                if b.token() != t || owner_of(&h, &b)? != h.matrix().owner_id().0 {
                    return Err(format!("popped {b:?}, not {t:?} adopted"));
                }
                h.free(b).map_err(|e| e.to_string())?;
            }
            nothing_left(&q)
        },
    );
    let result = race::in_processes(result);
    let end = (|| {
        q.destroy(None).map_err(|e| e.to_string())?;
        all_back(&h, vec![])
    })();
    record(
        "WorkQueue push × recover (the block's owner died)",
        result,
        end,
    );
}

// ---- push × WorkQueue::recover of a dead consumer's slot ----

/// The role of a consumer killed after claiming a slot and before adopting
/// its block.
const CRASH_ROLE: &str = "queue-crasher";

#[test]
fn crash_child() {
    if std::env::var(child::ENV_ROLE).as_deref() != Ok(CRASH_ROLE) {
        return;
    }
    child::bind_to_parent();
    let var = |name: &str| std::env::var(name).expect(name);
    let h = MatrixHandler::open(&var("QUEUE_SEGMENT")).unwrap();
    let q = Queue::open_at(h.share(), var("QUEUE_OFFSET").parse().unwrap()).unwrap();
    fault::arm(fault::POP_CLAIMED);
    let popped = q.try_pop();
    eprintln!("the crash point was not reached: {popped:?}");
    std::process::exit(3);
}

/// A consumer died holding a claimed block; `WorkQueue::recover` delivers
/// it again (claiming a slot at the tail like a producer, or in place when
/// the tail waits on its slot) while a live push wants the same tail slot.
/// Both blocks are delivered once each. A recover that finds the ring full
/// because the push took the last free slot leaves the block for later
/// (`deferred`, documented); the next recover then delivers it in place.
/// A push that meets the re-delivery half done finds the 2-slot ring full.
fn push_x_queue_recover(shape: Shape) {
    let name = SegmentName::new("queue-race-heal");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let q = Queue::create_unnamed(h.share(), shape.capacity).unwrap();
    let crasher = launcher("crash_child");
    let c = cfg();
    let result = race::pair(
        &c,
        |round| {
            let claimed = Twin::new(&h, round)?;
            if let Pushed::Landed = WIDE.push(&q, claimed.first()) {
            } else {
                return Err("setup push".into());
            }
            let mut child = crasher
                .spawn(
                    CRASH_ROLE,
                    &[
                        ("QUEUE_SEGMENT", name.as_str().to_owned()),
                        ("QUEUE_OFFSET", q.offset().to_string()),
                    ],
                )
                .map_err(|e| e.to_string())?;
            let status = child
                .wait_timeout(c.timeout)
                .map_err(|e| e.to_string())?
                .ok_or("the consumer did not die")?;
            if status.signal() != Some(libc::SIGKILL) {
                return Err(format!(
                    "the consumer was not killed at its claim: {status}"
                ));
            }
            let rec = h.recover().map_err(|e| e.to_string())?;
            if rec.blocks != 0 {
                return Err(format!("the dead consumer owned blocks: {rec:?}"));
            }
            Ok((claimed, Twin::new(&h, round)?, round))
        },
        |_| q.recover(),
        |(_, fresh, _)| shape.push(&q, fresh.first()),
        |_, (claimed, fresh, round), rep: QueueRecovery<Msg>, pushed| {
            let settled = |r: &QueueRecovery<Msg>| {
                r.pushes_completed == 0
                    && r.pushes_abandoned == 0
                    && r.pops_finished == 0
                    && r.unplaced.is_empty()
                    && r.redelivered + r.deferred == 1
            };
            if !settled(&rep) {
                return Err(format!("push {pushed:?}, recover {rep:?}"));
            }
            match pushed {
                Pushed::Landed => {}
                // The recoverer had claimed the ring's other slot for the
                // block and not yet emptied the block's old one: for that
                // moment both slots are taken, and a push is refused as
                // full. Once the recover is done there is room.
                Pushed::Full if shape.capacity == 2 && rep.redelivered == 1 => {
                    let b = h
                        .block_from_token::<Msg>(fresh.token)
                        .map_err(|e| e.to_string())?;
                    q.try_push(b)
                        .map_err(|e| format!("push after the recover: {e}"))?;
                }
                _ => return Err(format!("push {pushed:?}, recover {rep:?}")),
            }
            if rep.deferred == 1 {
                let again = q.recover();
                if !settled(&again) || again.redelivered != 1 {
                    return Err(format!("deferred, then recover {again:?}"));
                }
            }
            let mut got = Vec::new();
            for _ in 0..2 {
                let b = q.try_pop().map_err(|e| format!("pop: {e}"))?;
                got.push(b.token());
                if owner_of(&h, &b)? != h.matrix().owner_id().0
                    || h.read_pod(&b).map_err(|e| e.to_string())? != [round, MARK]
                {
                    return Err(format!("popped {b:?}: not ours or not intact"));
                }
                h.free(b).map_err(|e| e.to_string())?;
            }
            got.sort_by_key(|t| t.word());
            let mut want = vec![claimed.token, fresh.token];
            want.sort_by_key(|t| t.word());
            if got != want {
                return Err(format!("delivered {got:?}, want {want:?}"));
            }
            nothing_left(&q)
        },
    );
    let result = race::in_processes(result);
    let end = all_back(&h, vec![q]);
    let pair = format!(
        "WorkQueue push × WorkQueue::recover (a dead consumer's block, {})",
        shape.name()
    );
    record(&pair, result, end);
}

#[test]
fn push_x_queue_recover_wide() {
    push_x_queue_recover(WIDE);
}

#[test]
fn push_x_queue_recover_narrow() {
    push_x_queue_recover(NARROW);
}

// ---- pop × free and reuse of the queued block ----

/// Where a stalled consumer stalls: after its slot claim, and before the
/// one step that checks the block it found and adopts it (the window inside
/// that step, between the check and the owner CAS, is the loom model
/// `loom_owner`'s).
const POP_WINDOWS: &[u32] = &[fault::POP_CLAIMED, fault::POP_VALIDATED];

/// A pop checks the queued block, then adopts it with an owner CAS. A
/// second handle frees the queued block meanwhile (`free` has no owner
/// rule), allocates again (this thread's cache hands the same memory back,
/// a new generation) and releases the new block to the segment, inside the
/// consumer's window: the consumer stalls before its check and CAS.
/// Whatever the order, the new block stays the segment's: the pop either
/// adopted the old block first (which is then freed under it) or reports
/// `Corrupted`; it never adopts the new occupant under the old handle.
#[test]
fn pop_x_free_and_reuse_narrow() {
    let shape = NARROW;
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let q = Queue::create_unnamed(h.share(), shape.capacity).unwrap();
    let result = race::pair(
        &cfg(),
        |round| {
            let t = Twin::new(&h, round)?;
            match WIDE.push(&q, t.first()) {
                Pushed::Landed => Ok(t),
                p => Err(format!("setup push: {p:?}")),
            }
        },
        |_| {
            fault::stall_at(POP_WINDOWS);
            let popped = q.try_pop();
            fault::stall_at(&[]);
            popped
        },
        |t| {
            let b = t.second();
            shape.follow(|| q.is_empty());
            h.free(b).map_err(|e| format!("free: {e}"))?;
            let mut reused = h.allocate::<Msg>().map_err(|e| e.to_string())?;
            h.write_pod(&mut reused, [0, !MARK])
                .map_err(|e| e.to_string())?;
            h.release_to_segment(&reused).map_err(|e| e.to_string())?;
            Ok::<_, String>(reused)
        },
        |_, t, popped, reused| {
            let reused = reused?;
            let owner = owner_of(&h, &reused)?;
            let same = reused.offset() == t.token.offset();
            if owner != OwnerId::SEGMENT.0 {
                return Err(format!(
                    "the block released to the segment is owned by {owner} \
                     (same memory as the queued one: {same}); the pop gave {popped:?}"
                ));
            }
            match &popped {
                Ok(b) if b.token() == t.token => {}
                Err(PopError::Corrupted { token, .. }) if token.word() == t.token.word() => {}
                _ => return Err(format!("pop {popped:?}")),
            }
            nothing_left(&q)?;
            h.adopt(&reused).map_err(|e| e.to_string())?;
            h.free(reused).map_err(|e| e.to_string())
        },
    );
    let end = all_back(&h, vec![q]);
    record(
        "WorkQueue pop × free and reuse (same block, narrow)",
        result,
        end,
    );
}
