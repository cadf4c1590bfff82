//! Hostile segments: random corruption, then the safe API.
//!
//! ```text
//!  parent                          child (one batch of proptest cases)
//!  for each batch:                 for each case:
//!    spawn child (seed, cases) ──►   print "case <n> <case>"   (last words)
//!    read its stdout in a thread     build a segment, corrupt bytes,
//!    wait with a timeout             open / allocate / write / free / walk /
//!    crash or hang: report the       consolidate / recover / check
//!    batch seed and the last case    (panics are caught and shrunk by proptest)
//!                                  print "summary ..."
//! ```
//!
//! A case may corrupt the live mapping (a buggy peer writing garbage) or the
//! file of a closed segment (then `open` must refuse it or cope). What the
//! safe API may do is return typed errors or correct results: never panic,
//! hang, SIGSEGV or SIGBUS, and every block it hands out lies inside the
//! arena and can be written.

use crate::invariants::audit;
use crate::segment::SegmentName;
use crate::stress::child::{env_var, Launcher};
use crate::stress::{ctx, StressError};
use matrix_core::layout::{FreeIndex, ParticipantSlot, ARENA_START};
use matrix_core::size_class::{FL_COUNT, SL_COUNT};
use matrix_core::{SegmentHeader, BLOCK_HEADER_SIZE};
use matrix_handler::{Block, HandlerFunctions, MatrixHandler};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::io::BufRead;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Role of a hostile-batch child.
pub const ROLE: &str = "hostile-batch";
const ENV_SEED: &str = "MATRIX_TESTKIT_HOSTILE_SEED";
const ENV_CASES: &str = "MATRIX_TESTKIT_HOSTILE_CASES";
const SEGMENT_SIZE: u32 = 64 << 10;

/// Where a corruption lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot {
    /// `top`.
    Top,
    /// A bucket head (low word: the offset).
    Head {
        /// First level.
        fl: u8,
        /// Second level.
        sl: u8,
    },
    /// A second-level bitmap.
    SlBitmap(u8),
    /// The first-level bitmap.
    FlBitmap,
    /// The consolidation word.
    Consolidator,
    /// The generation source.
    Generations,
    /// `arena_end`.
    ArenaEnd,
    /// `segment_size` (low word).
    SegmentSize,
    /// `init_state`.
    InitState,
    /// `magic` (low word).
    Magic,
    /// A byte of a participant slot.
    Participant {
        /// Slot index (modulo the table size).
        slot: u8,
        /// Byte within the slot (modulo 64).
        byte: u8,
    },
    /// Any byte of the segment header.
    HeaderByte(u32),
    /// A byte of a block header of the chain (picked by index).
    Block {
        /// Which block (modulo the chain length).
        pick: u16,
        /// Byte within the 32-byte header.
        byte: u8,
    },
    /// Any byte of the arena.
    ArenaByte(u32),
}

/// What is written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// One byte.
    Byte(u8),
    /// A 32-bit word (at the spot rounded down to 4).
    Word(u32),
    /// The offset of a chain block plus `delta * 8` (plausible-looking links).
    NearBlock {
        /// Which block.
        pick: u16,
        /// Distance in 8-byte steps.
        delta: i8,
    },
    /// Zero word.
    Zero,
    /// All-ones word.
    Max,
}

/// One write of garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// Where.
    pub spot: Spot,
    /// What.
    pub value: Value,
}

/// One hostile case: a workload, then corruption, then the safe API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostileCase {
    /// Seed of the workload run before the corruption.
    pub setup: u64,
    /// Corrupt the file of the closed segment and re-open it (instead of
    /// corrupting the live mapping).
    pub reopen: bool,
    /// The writes.
    pub writes: Vec<Corruption>,
    /// Seed of the operations run after the corruption.
    pub ops: u64,
}

/// Strategy for a corruption spot, weighted towards the index and headers.
pub fn spot() -> impl Strategy<Value = Spot> {
    prop_oneof![
        2 => Just(Spot::Top),
        6 => (0u8..FL_COUNT as u8, 0u8..SL_COUNT as u8).prop_map(|(fl, sl)| Spot::Head { fl, sl }),
        1 => (0u8..FL_COUNT as u8).prop_map(Spot::SlBitmap),
        1 => Just(Spot::FlBitmap),
        1 => Just(Spot::Consolidator),
        1 => Just(Spot::Generations),
        1 => Just(Spot::ArenaEnd),
        1 => Just(Spot::SegmentSize),
        1 => Just(Spot::InitState),
        1 => Just(Spot::Magic),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(slot, byte)| Spot::Participant { slot, byte }),
        2 => any::<u32>().prop_map(Spot::HeaderByte),
        12 => (any::<u16>(), 0u8..32).prop_map(|(pick, byte)| Spot::Block { pick, byte }),
        2 => any::<u32>().prop_map(Spot::ArenaByte),
    ]
}

/// Strategy for a written value.
pub fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => any::<u8>().prop_map(Value::Byte),
        3 => any::<u32>().prop_map(Value::Word),
        4 => (any::<u16>(), -8i8..8).prop_map(|(pick, delta)| Value::NearBlock { pick, delta }),
        1 => Just(Value::Zero),
        1 => Just(Value::Max),
    ]
}

/// Strategy for a whole case.
pub fn hostile_case() -> impl Strategy<Value = HostileCase> {
    (
        any::<u64>(),
        prop::bool::weighted(0.3),
        prop::collection::vec((spot(), value()), 1..6),
        any::<u64>(),
    )
        .prop_map(|(setup, reopen, writes, ops)| HostileCase {
            setup,
            reopen,
            writes: writes
                .into_iter()
                .map(|(spot, value)| Corruption { spot, value })
                .collect(),
            ops,
        })
}

/// What the safe API did across cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Cases run.
    pub cases: u64,
    /// Re-opens refused with a typed error.
    pub open_refused: u64,
    /// Allocations that succeeded (each checked in bounds and written).
    pub allocations: u64,
    /// Operations refused with a typed error.
    pub refused: u64,
    /// Chain walks that ended in an error (corruption detected).
    pub walk_errors: u64,
    /// Blocks handed out after corruption that overlap a live block: the
    /// corruption was not detected (not memory-unsafe, but not correct).
    pub overlaps: u64,
    /// Blocks handed out outside the arena (must stay 0).
    pub out_of_bounds: u64,
}

impl Outcomes {
    fn add(&mut self, o: &Outcomes) {
        self.cases += o.cases;
        self.open_refused += o.open_refused;
        self.allocations += o.allocations;
        self.refused += o.refused;
        self.walk_errors += o.walk_errors;
        self.overlaps += o.overlaps;
        self.out_of_bounds += o.out_of_bounds;
    }

    fn to_line(self) -> String {
        format!(
            "summary {} {} {} {} {} {} {}",
            self.cases,
            self.open_refused,
            self.allocations,
            self.refused,
            self.walk_errors,
            self.overlaps,
            self.out_of_bounds
        )
    }

    fn from_line(line: &str) -> Option<Outcomes> {
        let v: Vec<u64> = line
            .strip_prefix("summary ")?
            .split(' ')
            .filter_map(|x| x.parse().ok())
            .collect();
        (v.len() == 7).then(|| Outcomes {
            cases: v[0],
            open_refused: v[1],
            allocations: v[2],
            refused: v[3],
            walk_errors: v[4],
            overlaps: v[5],
            out_of_bounds: v[6],
        })
    }
}

/// Byte offset of `spot` in the segment, given the chain, the arena length
/// and the stride of the participant table.
fn locate(spot: Spot, chain: &[u32], arena_len: u32, stride: usize) -> u32 {
    let seg = |field: usize| field as u32;
    let index = offset_of!(SegmentHeader, index);
    match spot {
        Spot::Top => seg(offset_of!(SegmentHeader, top)),
        Spot::Head { fl, sl } => {
            seg(index + offset_of!(FreeIndex, heads) + (fl as usize * SL_COUNT + sl as usize) * 8)
        }
        Spot::SlBitmap(fl) => seg(index + offset_of!(FreeIndex, sl_bitmap) + fl as usize * 4),
        Spot::FlBitmap => seg(index + offset_of!(FreeIndex, fl_bitmap)),
        Spot::Consolidator => seg(offset_of!(SegmentHeader, consolidator)),
        Spot::Generations => seg(offset_of!(SegmentHeader, generations)),
        Spot::ArenaEnd => seg(offset_of!(SegmentHeader, arena_end)),
        Spot::SegmentSize => seg(offset_of!(SegmentHeader, segment_size)),
        Spot::InitState => seg(offset_of!(SegmentHeader, init_state)),
        Spot::Magic => seg(offset_of!(SegmentHeader, magic)),
        Spot::Participant { slot, byte } => {
            let slots = matrix_core::layout::TABLE_OFFSET;
            let n = matrix_core::layout::DEFAULT_PARTICIPANTS;
            seg(slots
                + (slot as usize % n) * stride
                + (byte as usize % size_of::<ParticipantSlot>()))
        }
        Spot::HeaderByte(x) => x % ARENA_START,
        Spot::Block { pick, byte } => match chain.len() {
            0 => ARENA_START + byte as u32,
            n => chain[pick as usize % n] + byte as u32,
        },
        Spot::ArenaByte(x) => ARENA_START + x % arena_len.max(1),
    }
}

/// The bytes to write for `value` at `at`, and where (rounded for words).
fn encode(value: Value, at: u32, chain: &[u32]) -> (u32, Vec<u8>) {
    let word = |w: u32| (at & !3, w.to_le_bytes().to_vec());
    match value {
        Value::Byte(b) => (at, vec![b]),
        Value::Word(w) => word(w),
        Value::NearBlock { pick, delta } => {
            let base = if chain.is_empty() {
                ARENA_START
            } else {
                chain[pick as usize % chain.len()]
            };
            word(base.wrapping_add_signed(delta as i32 * 8))
        }
        Value::Zero => word(0),
        Value::Max => word(u32::MAX),
    }
}

fn write_live(h: &MatrixHandler, at: u32, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        let offset = at as usize + i;
        if offset >= h.segment_size() as usize {
            return;
        }
        // SAFETY: `offset` is inside the live mapping, which `h` keeps
        // mapped. Every byte of the segment may be viewed as an AtomicU8
        // (alignment 1, any bit pattern valid); other views of it are
        // atomics too, and no other thread touches this segment.
        let byte = unsafe { &*(h.base_ptr().add(offset) as *const AtomicU8) };
        byte.store(b, Ordering::Relaxed);
    }
}

/// The workload run before corruption: leaves live blocks, free blocks in
/// the lists, user states, and sometimes a detached participant.
fn setup(h: &MatrixHandler, name: &str, seed: u64) -> Vec<Block<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut live = Vec::new();
    let peer = rng.bool().then(|| MatrixHandler::open(name).ok()).flatten();
    for _ in 0..rng.usize(4..40) {
        let who = match &peer {
            Some(p) if rng.u32(0..4) == 0 => p,
            _ => h,
        };
        if let Ok(b) = who.allocate_slice::<u8>(rng.usize(0..600)) {
            live.push(b);
        }
    }
    for _ in 0..live.len() / 3 {
        let b = live.swap_remove(rng.usize(0..live.len()));
        let _ = h.free(b);
    }
    if rng.bool() {
        let _ = h.consolidate();
    }
    for b in live.iter().take(3) {
        let _ = h.set_state(b, 49 + rng.u32(0..4));
    }
    drop(peer);
    live
}

/// Everything the safe API offers, on a possibly corrupt segment.
fn exercise(h: &MatrixHandler, known: &[u32], seed: u64, out: &mut Outcomes) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let segment_size = h.segment_size() as u64;
    let walk: Result<Vec<_>, _> = h.matrix().blocks().take(1 << 16).collect();
    if walk.is_err() {
        out.walk_errors += 1;
    }
    let _ = h.stats();
    let _ = audit(h.matrix());
    let mut fresh: Vec<Block<u8>> = Vec::new();
    for round in 0..3 {
        for _ in 0..rng.usize(4..16) {
            let n = rng.usize(0..2048);
            match h.allocate_slice::<u8>(n) {
                Ok(mut b) => {
                    out.allocations += 1;
                    let start = b.header_offset() as u64;
                    let end = b.offset() as u64 + n.max(1) as u64;
                    if start < ARENA_START as u64 || end > segment_size {
                        out.out_of_bounds += 1;
                        continue; // never write outside the arena
                    }
                    let overlaps = fresh.iter().any(|o| {
                        start < o.offset() as u64 + o.len().max(1) as u64
                            && (o.header_offset() as u64) < end
                    });
                    if overlaps {
                        out.overlaps += 1;
                    }
                    if h.write_slice(&mut b, &vec![0xA5; n]).is_err() {
                        out.refused += 1;
                    }
                    fresh.push(b);
                }
                Err(_) => out.refused += 1,
            }
        }
        for &payload in known
            .iter()
            .chain(fresh.iter().map(|b| b.offset()).collect::<Vec<_>>().iter())
        {
            if let Ok(b) = h.block_at::<u8>(payload) {
                let mut buf = vec![0u8; b.len().min(4096)];
                let _ = h.read_slice(&b, &mut buf);
                let _ = h.set_state(&b, 50);
                let _ = h.transition_state(&b, 50, 51, Ordering::AcqRel);
            } else {
                out.refused += 1;
            }
        }
        for _ in 0..fresh.len() / 2 {
            let b = fresh.swap_remove(rng.usize(0..fresh.len()));
            if h.free(b).is_err() {
                out.refused += 1;
            }
        }
        if round == 1 {
            for &payload in known {
                if h.free_at(payload.wrapping_sub(BLOCK_HEADER_SIZE)).is_err() {
                    out.refused += 1;
                }
            }
        }
        let _ = h.free_at(rng.u32(..));
        let _ = h.consolidate();
        let _ = h.recover();
        let _ = h.matrix().blocks().take(1 << 16).count();
    }
    if rng.u32(0..4) == 0 {
        let _ = h.matrix().repair(true);
    }
    let _ = h.stats();
    let _ = audit(h.matrix());
}

/// Runs one case; the returned outcomes count what happened.
pub fn run_case(case: &HostileCase) -> Outcomes {
    let mut out = Outcomes {
        cases: 1,
        ..Outcomes::default()
    };
    let name = SegmentName::new("hostile");
    let Ok(h) = MatrixHandler::create(name.as_str(), SEGMENT_SIZE) else {
        return out;
    };
    let live = setup(&h, name.as_str(), case.setup);
    let known: Vec<u32> = live.iter().map(|b| b.offset()).collect();
    let chain: Vec<u32> = audit(h.matrix()).chain.iter().map(|b| b.offset).collect();
    let arena_len = h.segment_size() - ARENA_START;
    let stride = std::mem::size_of::<matrix_core::layout::SlotEntry>();
    let writes: Vec<(u32, Vec<u8>)> = case
        .writes
        .iter()
        .map(|c| encode(c.value, locate(c.spot, &chain, arena_len, stride), &chain))
        .collect();
    let h = if case.reopen {
        drop(h);
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(name.path()) {
            for (at, bytes) in &writes {
                let _ = file.write_at(bytes, *at as u64);
            }
        }
        match MatrixHandler::open(name.as_str()) {
            Ok(h) => h,
            Err(_) => {
                out.open_refused += 1;
                return out;
            }
        }
    } else {
        for (at, bytes) in &writes {
            write_live(&h, *at, bytes);
        }
        h
    };
    exercise(&h, &known, case.ops, &mut out);
    out
}

pub(crate) fn child_main() -> Result<(), String> {
    let seed: u64 = env_var(ENV_SEED)?;
    let cases: u32 = env_var(ENV_CASES)?;
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let total = std::cell::RefCell::new(Outcomes::default());
    let n = std::cell::Cell::new(0u32);
    let result = runner.run(&hostile_case(), |case| {
        n.set(n.get() + 1);
        // The last line a crashed child printed names the case that killed it.
        println!("case {} {case:?}", n.get());
        let o = run_case(&case);
        if o.out_of_bounds != 0 {
            return Err(TestCaseError::fail(format!(
                "a block outside the arena was handed out: {o:?}"
            )));
        }
        total.borrow_mut().add(&o);
        Ok(())
    });
    println!("{}", total.borrow().to_line());
    result.map_err(|e| format!("hostile case failed: {e}"))
}

/// How the hostile-segment harness runs.
#[derive(Debug, Clone)]
pub struct HostileConfig {
    /// Total cases (split into batches).
    pub cases: u32,
    /// Cases per child process.
    pub batch: u32,
    /// Children running at once.
    pub parallel: usize,
    /// Seed of the first batch (batch `i` uses `seed + i`).
    pub seed: u64,
    /// A batch still running after this long is a hang.
    pub batch_timeout: Duration,
}

impl Default for HostileConfig {
    fn default() -> Self {
        HostileConfig {
            cases: 10_000,
            batch: 500,
            parallel: 2,
            seed: 1,
            batch_timeout: Duration::from_secs(180),
        }
    }
}

/// What the hostile harness saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostileReport {
    /// Batches (child processes) run.
    pub batches: u64,
    /// Summed outcomes.
    pub outcomes: Outcomes,
}

struct Batch {
    seed: u64,
    child: crate::stress::child::ChildProcess,
    reader: std::thread::JoinHandle<(Option<String>, Option<Outcomes>)>,
    started: Instant,
}

/// Runs the hostile harness: batches of cases, each in a child process.
pub fn run_hostile(cfg: &HostileConfig, launcher: &Launcher) -> Result<HostileReport, StressError> {
    let batches = cfg.cases.div_ceil(cfg.batch.max(1)) as u64;
    let mut report = HostileReport::default();
    let mut running: Vec<Batch> = Vec::new();
    let mut next = 0u64;
    while next < batches || !running.is_empty() {
        while next < batches && running.len() < cfg.parallel.max(1) {
            let cases = cfg.batch.min(cfg.cases - (next as u32) * cfg.batch);
            let seed = cfg.seed.wrapping_add(next);
            let mut child = launcher
                .spawn(
                    ROLE,
                    &[(ENV_SEED, seed.to_string()), (ENV_CASES, cases.to_string())],
                )
                .map_err(ctx("spawn hostile batch"))?;
            let stdout = child
                .take_stdout()
                .ok_or_else(|| StressError::new("no stdout pipe"))?;
            let reader = std::thread::spawn(move || {
                let (mut last_case, mut summary) = (None, None);
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if line.starts_with("case ") {
                        last_case = Some(line);
                    } else if let Some(o) = Outcomes::from_line(&line) {
                        summary = Some(o);
                    }
                }
                (last_case, summary)
            });
            running.push(Batch {
                seed,
                child,
                reader,
                started: Instant::now(),
            });
            next += 1;
        }
        let mut i = 0;
        while i < running.len() {
            let b = &mut running[i];
            let status = b.child.try_wait().map_err(ctx("wait for hostile batch"))?;
            let timed_out = status.is_none() && b.started.elapsed() > cfg.batch_timeout;
            if status.is_none() && !timed_out {
                i += 1;
                continue;
            }
            let mut b = running.swap_remove(i);
            if timed_out {
                let _ = b.child.kill();
            }
            let (last_case, summary) = b.reader.join().unwrap_or((None, None));
            let status = b.child.try_wait().ok().flatten();
            // A killed batch never ran its name guards' destructors.
            matrix_core::ScratchName::remove_leftovers_of(b.child.pid());
            match (status, summary) {
                (Some(s), Some(o)) if s.success() => {
                    report.batches += 1;
                    report.outcomes.add(&o);
                }
                (s, _) => {
                    let how = if timed_out {
                        format!("hung (still running after {:?})", cfg.batch_timeout)
                    } else {
                        format!("died: {s:?}")
                    };
                    return Err(StressError(format!(
                        "hostile batch with seed {} {how}; last case started: {}",
                        b.seed,
                        last_case.unwrap_or_else(|| "none".into())
                    )));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(report)
}
