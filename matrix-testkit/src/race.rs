//! The race matrix: two operations on ONE target at the same moment, many
//! times over, with a precise check after every round.
//!
//! The stress harnesses run many operations at once on *random* blocks; they
//! almost never put two operations on the same block or the same
//! participant slot at the same instant, which is where a plain load
//! followed by a CAS of another word goes wrong. A race runs rounds:
//!
//! ```text
//!  round r:  setup(r) -> target            (on the calling thread)
//!            side A (calling thread)       side B (a thread, or a child process)
//!            ── rendezvous ───────────────────────────────
//!            spin 0..max_spins              spin 0..max_spins   (random, per round)
//!            op_a(&target)                  op_b(&target)
//!            ── both done ────────────────────────────────
//!            check(r, target, result_a, result_b)   an Err fails the race
//!  until the time budget (MATRIX_RACE_SECONDS) or max_rounds is spent.
//! ```
//!
//! - [`pair`]: side B on a worker thread (kept for the whole race, or a new
//!   thread every round with [`RaceConfig::fresh_thread`], so that the thread's
//!   exit, which flushes its block cache, is part of side B).
//! - [`process_pair`]: side B in a child process (the current executable
//!   re-run, see [`crate::stress::child`]), running a [`ChildSide`] looked
//!   up by name; the target travels as a `u64` (a block token, an offset),
//!   and so does the result.
//! - [`spawn_holder`]: a child that allocates blocks, hands their tokens
//!   over its stdout and waits to be SIGKILLed: a dead participant's blocks
//!   to race `recover()` against.
//!
//! A binary whose races use child processes calls [`run_child`] first
//! thing in `main` (or in one libtest test the launcher names, see
//! `tests/race_matrix.rs`).
//!
//! Every wait is bounded by [`RaceConfig::timeout`]; a side that does not
//! come back in time (a hang) aborts the process with a message, since a
//! thread stuck inside an allocator operation cannot be taken back.

use crate::segment::SegmentName;
use crate::stress::child::{self, ChildProcess, Launcher};
use crate::sync::{AtomicU64, Ordering};
use matrix_handler::{BlockToken, HandlerFunctions, MatrixHandler};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Overrides every race's time budget, in seconds (fractions allowed), for
/// long runs.
pub const ENV_SECONDS: &str = "MATRIX_RACE_SECONDS";
/// Overrides every race's [`RaceConfig::max_spins`] (to explore other
/// relative timings).
pub const ENV_SPINS: &str = "MATRIX_RACE_SPINS";
/// Role of a child running a [`ChildSide`].
pub const ROLE: &str = "race-side";
/// Role of a child started by [`spawn_holder`].
pub const HOLDER_ROLE: &str = "race-holder";

const ENV_SEGMENT: &str = "MATRIX_RACE_SEGMENT";
const ENV_CONTROL: &str = "MATRIX_RACE_CONTROL";
const ENV_CONTROL_OFFSET: &str = "MATRIX_RACE_CONTROL_OFFSET";
const ENV_SIDE: &str = "MATRIX_RACE_SIDE";
const ENV_TIMEOUT_MS: &str = "MATRIX_RACE_TIMEOUT_MS";
const ENV_HOLD_BLOCKS: &str = "MATRIX_RACE_HOLD_BLOCKS";
const ENV_HOLD_SIZE: &str = "MATRIX_RACE_HOLD_SIZE";

/// How a race runs.
#[derive(Debug, Clone)]
pub struct RaceConfig {
    /// Run rounds for this long (see [`RaceConfig::with_env`]).
    pub budget: Duration,
    /// Stop after this many rounds even if time is left.
    pub max_rounds: u64,
    /// Each side spins a random number of iterations in `0..=max_spins`
    /// before its operation, so that every relative timing of the two
    /// operations' steps is tried.
    pub max_spins: u32,
    /// Side B on a new thread every round (its exit, with the cache flush
    /// it runs, becomes part of side B); otherwise one thread for the race.
    pub fresh_thread: bool,
    /// Random seed for the delays.
    pub seed: u64,
    /// Longest wait for the other side at a rendezvous or for a child.
    pub timeout: Duration,
    /// Targets each round races, for the report: a round whose sides walk
    /// the same list of targets in the same order (each side's progress
    /// drifts past the other's, so some pair of operations meets at every
    /// relative timing) counts that many iterations.
    pub targets_per_round: u64,
}

impl Default for RaceConfig {
    fn default() -> Self {
        RaceConfig {
            budget: Duration::from_millis(1500),
            max_rounds: u64::MAX,
            max_spins: 256,
            fresh_thread: false,
            seed: 1,
            timeout: Duration::from_secs(60),
            targets_per_round: 1,
        }
    }
}

impl RaceConfig {
    /// This configuration with the budget taken from [`ENV_SECONDS`] when it
    /// is set (and then without a round limit), and the spins from
    /// [`ENV_SPINS`].
    pub fn with_env(mut self) -> Self {
        if let Some(s) = std::env::var(ENV_SECONDS)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
        {
            self.budget = Duration::from_secs_f64(s);
            self.max_rounds = u64::MAX;
        }
        if let Some(n) = std::env::var(ENV_SPINS).ok().and_then(|v| v.parse().ok()) {
            self.max_spins = n;
        }
        self
    }
}

/// Where side B ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A thread of the calling process.
    Threads,
    /// A child process.
    Processes,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Threads => "threads",
            Mode::Processes => "processes",
        })
    }
}

/// What a race did.
#[derive(Debug, Clone)]
pub struct RaceReport {
    /// Where side B ran.
    pub mode: Mode,
    /// Rounds (thread mode) or child processes started (process mode).
    pub runs: u64,
    /// Rounds run.
    pub rounds: u64,
    /// Pairs of operations run on one target: rounds ×
    /// [`RaceConfig::targets_per_round`].
    pub iterations: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for RaceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} | {} runs | {} rounds | {} iterations | {:.1?}",
            self.mode, self.runs, self.rounds, self.iterations, self.elapsed
        )
    }
}

/// A race that found the allocator wrong (or could not run).
#[derive(Debug, Clone)]
pub struct RaceFailure {
    /// The round that failed (1-based).
    pub round: u64,
    /// What the check (or the setup) said.
    pub message: String,
    /// The race up to the failure.
    pub report: RaceReport,
}

impl fmt::Display for RaceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "round {} ({}): {}",
            self.round, self.report, self.message
        )
    }
}

impl std::error::Error for RaceFailure {}

/// Spins until `done()` or the deadline; `false` on timeout. Yields now
/// and then: on a loaded machine the other side may need this core.
fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 {
            std::thread::yield_now();
            if spins % 4096 == 0 && Instant::now() >= deadline {
                return false;
            }
        } else {
            std::hint::spin_loop();
        }
    }
    true
}

/// A side that does not come back cannot be unwound (it is inside an
/// allocator operation): report and end the process.
fn hang(what: &str, timeout: Duration) -> ! {
    eprintln!("race: {what} did not come back within {timeout:?} (a hang?); aborting");
    std::process::abort()
}

fn spin(n: u32) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// Where the two sides of a thread race meet.
#[derive(Default)]
struct Rendezvous {
    /// Last round each side arrived at.
    arrived: [AtomicU64; 2],
}

impl Rendezvous {
    fn meet(&self, side: usize, round: u64, timeout: Duration) {
        // Release/Acquire: whatever each side did before arriving (setup,
        // the previous round) happens before the other side's operation.
        self.arrived[side].store(round, Ordering::Release);
        let other = &self.arrived[1 - side];
        if !wait_until(Instant::now() + timeout, || {
            other.load(Ordering::Acquire) >= round
        }) {
            hang("the other side of the race", timeout);
        }
    }
}

struct Report {
    mode: Mode,
    runs: u64,
    per_round: u64,
    start: Instant,
}

impl Report {
    fn at(&self, rounds: u64) -> RaceReport {
        RaceReport {
            mode: self.mode,
            runs: self.runs,
            rounds,
            iterations: rounds * self.per_round,
            elapsed: self.start.elapsed(),
        }
    }
}

fn more_rounds(cfg: &RaceConfig, start: Instant, done: u64) -> bool {
    done < cfg.max_rounds && (done == 0 || start.elapsed() < cfg.budget)
}

/// Races `op_a` (on the calling thread) against `op_b` (on another thread)
/// on the target `setup` makes for each round, then hands both results to
/// `check`. Stops at the first `Err` of `setup` or `check`. When it
/// returns, side B's thread has ended, its thread-local destructors (a
/// block cache flush) included, so the caller's final checks run at
/// quiescence.
///
/// ```
/// use matrix_handler::{HandlerFunctions, MatrixHandler};
/// use matrix_testkit::race::{pair, RaceConfig};
/// let h = MatrixHandler::bootstrap(None, 1 << 20)?;
/// let cfg = RaceConfig { max_rounds: 200, ..RaceConfig::default() };
/// // Two frees of one block: exactly one may succeed.
/// let report = pair(
///     &cfg,
///     |_| Ok(h.allocate::<u64>().map_err(|e| e.to_string())?.token()),
///     |t| h.matrix().free(t.offset() - 32, Some(t.generation())).is_ok(),
///     |t| h.matrix().free(t.offset() - 32, Some(t.generation())).is_ok(),
///     |_, _, a, b| if a ^ b { Ok(()) } else { Err(format!("free results {a} / {b}")) },
/// )?;
/// assert_eq!(report.iterations, 200);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pair<T, RA, RB>(
    cfg: &RaceConfig,
    mut setup: impl FnMut(u64) -> Result<T, String>,
    op_a: impl Fn(&T) -> RA,
    op_b: impl Fn(&T) -> RB + Sync,
    mut check: impl FnMut(u64, T, RA, RB) -> Result<(), String>,
) -> Result<RaceReport, RaceFailure>
where
    T: Send + Sync,
    RB: Send,
{
    let mut rep = Report {
        mode: Mode::Threads,
        runs: 0,
        per_round: cfg.targets_per_round,
        start: Instant::now(),
    };
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let meet = Rendezvous::default();
    // The round's target and side B's result; side B waits on `round`.
    let slot: Mutex<Option<(std::sync::Arc<T>, u32)>> = Mutex::new(None);
    let result: Mutex<Option<RB>> = Mutex::new(None);
    let round_word = AtomicU64::new(0);
    let stop = AtomicU64::new(0);
    let done_word = AtomicU64::new(0);

    let side_b = |round: u64, target: &T, spins: u32| -> RB {
        meet.meet(1, round, cfg.timeout);
        spin(spins);
        op_b(target)
    };

    // Stops side B however the calling side leaves (also by a panic in
    // `check`), so the scope's join never waits for a round that never comes.
    struct Stop<'a>(&'a AtomicU64);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            // Release: side B Acquires it and leaves its loop.
            self.0.store(1, Ordering::Release);
        }
    }
    std::thread::scope(|scope| {
        let stop_guard = Stop(&stop);
        // The persistent side B: waits for a round, runs it, posts the result.
        let worker = (!cfg.fresh_thread).then(|| {
            scope.spawn(|| {
                let mut round = 0;
                loop {
                    round += 1;
                    let ok = wait_until(Instant::now() + cfg.timeout, || {
                        // Acquire: pairs with the Release publishing the round.
                        round_word.load(Ordering::Acquire) >= round
                            || stop.load(Ordering::Acquire) != 0
                    });
                    if !ok {
                        hang("the calling side of the race", cfg.timeout);
                    }
                    if stop.load(Ordering::Acquire) != 0 {
                        return;
                    }
                    let (target, spins) = slot.lock().unwrap().take().expect("a posted round");
                    let r = side_b(round, &target, spins);
                    drop(target);
                    *result.lock().unwrap() = Some(r);
                    // Release: the result and the dropped target are seen
                    // by the calling side that Acquires `done`.
                    done_word.store(round, Ordering::Release);
                }
            })
        });
        let outcome = (|| {
            let mut round = 0u64;
            while more_rounds(cfg, rep.start, round) {
                round += 1;
                rep.runs += 1;
                let target = std::sync::Arc::new(setup(round).map_err(|message| RaceFailure {
                    round,
                    message: format!("setup: {message}"),
                    report: rep.at(round - 1),
                })?);
                let (spins_a, spins_b) = (rng.u32(0..=cfg.max_spins), rng.u32(0..=cfg.max_spins));
                let (ra, rb) = if cfg.fresh_thread {
                    let t2 = std::sync::Arc::clone(&target);
                    let side_b = &side_b;
                    let b = scope.spawn(move || side_b(round, &t2, spins_b));
                    meet.meet(0, round, cfg.timeout);
                    spin(spins_a);
                    let ra = op_a(&target);
                    let deadline = Instant::now() + cfg.timeout;
                    if !wait_until(deadline, || b.is_finished()) {
                        hang("side B's thread", cfg.timeout);
                    }
                    // The thread has exited (its cache destructor ran).
                    let rb = b.join().map_err(|_| RaceFailure {
                        round,
                        message: "side B panicked".into(),
                        report: rep.at(round),
                    })?;
                    (ra, rb)
                } else {
                    *slot.lock().unwrap() = Some((std::sync::Arc::clone(&target), spins_b));
                    // Release: the posted target is seen by side B's Acquire.
                    round_word.store(round, Ordering::Release);
                    meet.meet(0, round, cfg.timeout);
                    spin(spins_a);
                    let ra = op_a(&target);
                    if !wait_until(Instant::now() + cfg.timeout, || {
                        done_word.load(Ordering::Acquire) >= round
                    }) {
                        hang("side B", cfg.timeout);
                    }
                    let rb = result.lock().unwrap().take().expect("side B posted");
                    (ra, rb)
                };
                let target = std::sync::Arc::try_unwrap(target)
                    .unwrap_or_else(|_| unreachable!("side B dropped its reference"));
                check(round, target, ra, rb).map_err(|message| RaceFailure {
                    round,
                    message,
                    report: rep.at(round),
                })?;
            }
            Ok(rep.at(round))
        })();
        drop(stop_guard);
        // An explicit join waits for the thread to end, thread-local
        // destructors (a block cache flush) included; the scope's own wait
        // ends with the closure, before them, and the caller's final checks
        // would not run at quiescence.
        if let Some(w) = worker {
            if w.join().is_err() && outcome.is_ok() {
                return Err(RaceFailure {
                    round: 0,
                    message: "side B panicked".into(),
                    report: rep.at(0),
                });
            }
        }
        outcome
    })
}

/// Most target words a [`process_pair`] round hands the child.
pub const MAX_TARGET_WORDS: usize = 64;

/// Side B of a [`process_pair`], run in a child: gets the child's own
/// handle on the segment and the round's target words (block tokens,
/// offsets), returns a result word (e.g. one bit per target).
#[derive(Clone, Copy)]
pub struct ChildSide {
    /// The name [`process_pair`] asks for.
    pub name: &'static str,
    /// The operation.
    pub op: fn(&MatrixHandler, &[u64]) -> u64,
}

/// The words parent and child share, in a block of a small control segment.
#[derive(matrix_handler::ShmSafe)]
#[repr(C)]
struct ProcControl {
    magic: AtomicU64,
    /// 1 once the child attached.
    started: AtomicU64,
    /// Round the parent posted (with `target` and `spins`).
    round: AtomicU64,
    spins: AtomicU64,
    count: AtomicU64,
    targets: [AtomicU64; MAX_TARGET_WORDS],
    /// Round the child arrived at.
    ready: AtomicU64,
    /// Round the child finished (with `result`).
    done: AtomicU64,
    result: AtomicU64,
    stop: AtomicU64,
}

const PROC_MAGIC: u64 = u64::from_le_bytes(*b"MTKRACE1");

impl ProcControl {
    fn attach(h: &impl HandlerFunctions, offset: u32) -> Option<&ProcControl> {
        let header = offset.checked_sub(matrix_core::BLOCK_HEADER_SIZE)?;
        let (_, size) = h.matrix().block_header(header).ok()?;
        if ((size - matrix_core::BLOCK_HEADER_SIZE) as usize) < std::mem::size_of::<ProcControl>() {
            return None;
        }
        // SAFETY: the payload lies inside the mapping (block_header checked
        // it against the arena), is 16-aligned and large enough for
        // ProcControl, which holds only atomics (any bit pattern is valid);
        // the borrow is tied to `h`, which keeps the mapping alive.
        Some(unsafe { &*(h.base_ptr().add(offset as usize) as *const ProcControl) })
    }
}

/// If this process was started as a race child, runs its role (a
/// [`ChildSide`] from `sides`, or the [`spawn_holder`] role) and returns the
/// exit code; `None` in an ordinary process.
pub fn run_child(sides: &[ChildSide]) -> Option<i32> {
    let role = std::env::var(child::ENV_ROLE).ok()?;
    if role != ROLE && role != HOLDER_ROLE {
        return None;
    }
    child::bind_to_parent();
    let result = if role == HOLDER_ROLE {
        holder_main()
    } else {
        side_main(sides)
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("race child {} ({role}): {e}", std::process::id());
            2
        }
    })
}

fn side_main(sides: &[ChildSide]) -> Result<(), String> {
    let name: String = child::env_var(ENV_SIDE)?;
    let side = sides
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("no child side named {name}"))?;
    let timeout = Duration::from_millis(child::env_var(ENV_TIMEOUT_MS)?);
    let segment: String = child::env_var(ENV_SEGMENT)?;
    let h = MatrixHandler::open(&segment).map_err(|e| format!("open {segment}: {e}"))?;
    let ctl_name: String = child::env_var(ENV_CONTROL)?;
    let ctl_h = MatrixHandler::open(&ctl_name).map_err(|e| format!("open {ctl_name}: {e}"))?;
    let ctl = ProcControl::attach(&ctl_h, child::env_var(ENV_CONTROL_OFFSET)?)
        .ok_or("no control block")?;
    // Acquire: pairs with the parent's Release of the magic.
    if ctl.magic.load(Ordering::Acquire) != PROC_MAGIC {
        return Err("control block without its magic".into());
    }
    // Release: the parent Acquires it before posting the first round.
    ctl.started.store(1, Ordering::Release);
    let mut round = 0;
    loop {
        round += 1;
        if !wait_until(Instant::now() + timeout, || {
            // Acquire: pairs with the parent's Release of round / stop.
            ctl.round.load(Ordering::Acquire) >= round || ctl.stop.load(Ordering::Acquire) != 0
        }) {
            return Err(format!("no round {round} within {timeout:?}"));
        }
        if ctl.stop.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        // Relaxed: published by the Release of `round` Acquired above.
        let count = (ctl.count.load(Ordering::Relaxed) as usize).min(MAX_TARGET_WORDS);
        let targets: Vec<u64> = ctl.targets[..count]
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .collect();
        let spins = ctl.spins.load(Ordering::Relaxed) as u32;
        // Release: the parent starts its side once it Acquires this.
        ctl.ready.store(round, Ordering::Release);
        spin(spins);
        let r = (side.op)(&h, &targets);
        // Relaxed: published by the Release of `done`.
        ctl.result.store(r, Ordering::Relaxed);
        // Release: the result and the operation's effects happen before the
        // parent's check, which Acquires `done`.
        ctl.done.store(round, Ordering::Release);
    }
}

/// Races `op_a` (on the calling thread) against the [`ChildSide`] named
/// `side_b`, run in one child process started from `launcher` on the named
/// `segment`. `setup` returns each round's target and the words the child
/// gets (at most [`MAX_TARGET_WORDS`]); `check` gets the child's result word.
///
/// The child stays for the whole race and exits (dropping its handle, so
/// its participant slot is detached) before this returns.
pub fn process_pair<T, RA>(
    cfg: &RaceConfig,
    launcher: &Launcher,
    segment: &str,
    side_b: &str,
    mut setup: impl FnMut(u64) -> Result<(T, Vec<u64>), String>,
    op_a: impl Fn(&T) -> RA,
    mut check: impl FnMut(u64, T, RA, u64) -> Result<(), String>,
) -> Result<RaceReport, RaceFailure> {
    let mut rep = Report {
        mode: Mode::Processes,
        runs: 0,
        per_round: cfg.targets_per_round,
        start: Instant::now(),
    };
    let fail = |round: u64, rep: &Report, message: String| RaceFailure {
        round,
        message,
        report: rep.at(round.saturating_sub(1)),
    };
    let ctl_name = SegmentName::new("race-ctl");
    let ctl_h = MatrixHandler::create(ctl_name.as_str(), 64 << 10)
        .map_err(|e| fail(0, &rep, format!("control segment: {e}")))?;
    let ctl_block = ctl_h
        .allocate::<ProcControl>()
        .map_err(|e| fail(0, &rep, format!("control block: {e}")))?;
    let ctl = ProcControl::attach(&ctl_h, ctl_block.offset()).expect("a block just allocated");
    // Release: pairs with the child's Acquire of the magic.
    ctl.magic.store(PROC_MAGIC, Ordering::Release);
    let mut child = launcher
        .spawn(
            ROLE,
            &[
                (ENV_SEGMENT, segment.to_owned()),
                (ENV_CONTROL, ctl_name.as_str().to_owned()),
                (ENV_CONTROL_OFFSET, ctl_block.offset().to_string()),
                (ENV_SIDE, side_b.to_owned()),
                (ENV_TIMEOUT_MS, cfg.timeout.as_millis().to_string()),
            ],
        )
        .map_err(|e| fail(0, &rep, format!("spawn child: {e}")))?;
    rep.runs += 1;
    let alive = |child: &mut ChildProcess| -> Result<(), String> {
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("child {} exited: {status}", child.pid())),
            Err(e) => Err(format!("wait for child: {e}")),
        }
    };
    let wait_child = |child: &mut ChildProcess, what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + cfg.timeout;
        let mut n = 0u32;
        let ok = wait_until(deadline, || {
            n = n.wrapping_add(1);
            done() || (n % 8192 == 0 && child.try_wait().ok().flatten().is_some())
        });
        if !ok {
            return Err(format!(
                "child {} not {what} within {:?}",
                child.pid(),
                cfg.timeout
            ));
        }
        if done() {
            Ok(())
        } else {
            alive(child).and(Err(format!("child exited before {what}")))
        }
    };
    // Acquire: pairs with the child's Release of `started`.
    wait_child(&mut child, "started", &|| {
        ctl.started.load(Ordering::Acquire) != 0
    })
    .map_err(|m| fail(1, &rep, m))?;
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let mut round = 0u64;
    let outcome = loop {
        if !more_rounds(cfg, rep.start, round) {
            break Ok(rep.at(round));
        }
        round += 1;
        let (target, words) = match setup(round) {
            Ok(t) if t.1.len() <= MAX_TARGET_WORDS => t,
            Ok(t) => {
                break Err(fail(
                    round,
                    &rep,
                    format!("setup: {} target words", t.1.len()),
                ))
            }
            Err(m) => break Err(fail(round, &rep, format!("setup: {m}"))),
        };
        // Relaxed: published by the Release of `round` below.
        for (slot, w) in ctl.targets.iter().zip(&words) {
            slot.store(*w, Ordering::Relaxed);
        }
        ctl.count.store(words.len() as u64, Ordering::Relaxed);
        ctl.spins
            .store(rng.u32(0..=cfg.max_spins) as u64, Ordering::Relaxed);
        // Release: the target and everything setup did happen before the
        // child's side (it Acquires the round).
        ctl.round.store(round, Ordering::Release);
        // Acquire: pairs with the child's Release of `ready`.
        if let Err(m) = wait_child(&mut child, "ready", &|| {
            ctl.ready.load(Ordering::Acquire) >= round
        }) {
            break Err(fail(round, &rep, m));
        }
        spin(rng.u32(0..=cfg.max_spins));
        let ra = op_a(&target);
        // Acquire: pairs with the child's Release of `done`.
        if let Err(m) = wait_child(&mut child, "done", &|| {
            ctl.done.load(Ordering::Acquire) >= round
        }) {
            break Err(fail(round, &rep, m));
        }
        // Relaxed: published by the Release of `done`, Acquired above.
        let rb = ctl.result.load(Ordering::Relaxed);
        if let Err(message) = check(round, target, ra, rb) {
            break Err(RaceFailure {
                round,
                message,
                report: rep.at(round),
            });
        }
    };
    // Release: the child Acquires it and exits, dropping its handle.
    ctl.stop.store(1, Ordering::Release);
    match child.wait_timeout(cfg.timeout) {
        Ok(Some(status)) if status.success() || outcome.is_err() => outcome,
        Ok(Some(status)) => Err(fail(round, &rep, format!("child exited with {status}"))),
        _ => Err(fail(round, &rep, "the child did not exit".into())),
    }
}

/// A child that opens `segment`, allocates `blocks` blocks of `size`
/// bytes, writes their tokens to its stdout and then waits (at most a
/// minute) to be killed. Returns the child and the tokens; SIGKILL it with
/// [`ChildProcess::kill`] to make its blocks a dead participant's.
pub fn spawn_holder(
    launcher: &Launcher,
    segment: &str,
    blocks: usize,
    size: usize,
    timeout: Duration,
) -> Result<(ChildProcess, Vec<BlockToken>), String> {
    let mut child = launcher
        .spawn(
            HOLDER_ROLE,
            &[
                (ENV_SEGMENT, segment.to_owned()),
                (ENV_HOLD_BLOCKS, blocks.to_string()),
                (ENV_HOLD_SIZE, size.to_string()),
            ],
        )
        .map_err(|e| format!("spawn holder: {e}"))?;
    let pipe = child.take_stdout().ok_or("holder without stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // A reader thread, so that the wait for the tokens is bounded.
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(pipe).lines();
        let mut tokens = Vec::new();
        while tokens.len() < blocks {
            match lines.next() {
                // Lines that are not tokens (a test harness's banner) are skipped.
                Some(Ok(l)) => {
                    if let Ok(t) = l.trim().parse::<u128>() {
                        tokens.push(BlockToken::from_u128(t));
                    }
                }
                _ => break,
            }
        }
        let _ = tx.send(tokens);
    });
    match rx.recv_timeout(timeout) {
        Ok(tokens) if tokens.len() == blocks => Ok((child, tokens)),
        Ok(tokens) => Err(format!(
            "holder {} sent {} of {blocks} tokens",
            child.pid(),
            tokens.len()
        )),
        Err(_) => Err(format!(
            "holder {} sent no tokens within {timeout:?}",
            child.pid()
        )),
    }
}

fn holder_main() -> Result<(), String> {
    use std::io::Write;
    let segment: String = child::env_var(ENV_SEGMENT)?;
    let blocks: usize = child::env_var(ENV_HOLD_BLOCKS)?;
    let size: usize = child::env_var(ENV_HOLD_SIZE)?;
    let h = MatrixHandler::open(&segment).map_err(|e| format!("open {segment}: {e}"))?;
    let mut out = std::io::stdout().lock();
    let mut held = Vec::new();
    for _ in 0..blocks {
        let b = h
            .allocate_slice::<u8>(size)
            .map_err(|e| format!("allocate: {e}"))?;
        writeln!(out, "\n{}", b.token().to_u128()).map_err(|e| e.to_string())?;
        held.push(b);
    }
    out.flush().map_err(|e| e.to_string())?;
    // Held until SIGKILLed; bounded in case the parent forgets.
    std::thread::sleep(Duration::from_secs(60));
    Err("not killed within 60 s".into())
}

/// The end check of a pair, once its structures are destroyed: reclaims
/// what dead participants left (`recover`), flushes this thread's cache,
/// consolidates, runs the invariant checker and requires that not a byte is
/// still used — every block of every round came back exactly once.
pub fn all_back(h: &impl HandlerFunctions) -> Result<(), String> {
    h.recover().map_err(|e| format!("recover: {e}"))?;
    h.matrix().flush_thread_cache();
    h.consolidate().map_err(|e| format!("consolidate: {e}"))?;
    h.matrix().flush_thread_cache();
    let r = crate::check_invariants(h).map_err(|v| format!("checker: {v}"))?;
    if r.used_bytes != 0 {
        return Err(format!("{} B still used at the end: {r:?}", r.used_bytes));
    }
    Ok(())
}

/// Prints a pair's table line, `race-matrix | pair | mode | runs |
/// iterations | result`, and panics if the race or the final check `end`
/// failed (a failed race also reports what `end` found after it).
pub fn record(pair: &str, result: Result<RaceReport, RaceFailure>, end: Result<(), String>) {
    match (&result, &end) {
        (Ok(r), Ok(())) => println!(
            "race-matrix | {pair} | {} | {} | {} | pass ({:.1?})",
            r.mode, r.runs, r.iterations, r.elapsed
        ),
        (Ok(r), Err(e)) => {
            println!(
                "race-matrix | {pair} | {} | {} | {} | FAIL at the end: {e}",
                r.mode, r.runs, r.iterations
            );
            panic!("{pair}: after {} iterations: {e}", r.iterations);
        }
        (Err(f), _) => {
            let extra = end
                .err()
                .map(|e| format!("; then: {e}"))
                .unwrap_or_default();
            println!(
                "race-matrix | {pair} | {} | {} | {} | FAIL: {}{extra}",
                f.report.mode, f.report.runs, f.report.iterations, f.message
            );
            panic!("{pair}: {f}{extra}");
        }
    }
}

/// `result` with its mode set to [`Mode::Processes`]: for a thread race
/// whose every round involved a child process (one killed in the setup).
pub fn in_processes(result: Result<RaceReport, RaceFailure>) -> Result<RaceReport, RaceFailure> {
    match result {
        Ok(mut r) => {
            r.mode = Mode::Processes;
            Ok(r)
        }
        Err(mut f) => {
            f.report.mode = Mode::Processes;
            Err(f)
        }
    }
}
