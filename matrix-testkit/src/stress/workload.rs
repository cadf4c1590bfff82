//! The harnesses over *your* workload: your segment, your worker, your check.
//!
//! ```text
//!  you: create the segment (SegmentName), build your structure in it
//!  register_worker("log-writer", writer)      before run_child_role() in main
//!
//!  run_threads_on / run_processes_on / run_crash_on(segment, handler, cfg, …)
//!    workers: threads (run_threads_on) or children re-executing this binary
//!             in role "log-writer"; each gets a WorkerContext (handler,
//!             index, seed) and calls ctx.keep_going() between two operations
//!    crash:   SIGKILL a child, pause the survivors at keep_going(),
//!             recover(), allocator invariants, your check(after a kill),
//!             resume, start a replacement; N times
//!    end:     stop everyone, recover(), your check(final), allocator invariants
//!
//!  run_hostile_on(cases, build, exercise): your structure's bytes corrupted
//!    at random; exercising it must return (Ok or Err), never panic.
//! ```
//!
//! `keep_going` is the safe point: a worker parks there while the harness
//! inspects the segment, so every check runs at quiescence (no operation of
//! a live participant in flight), and it returns `false` once the harness
//! says stop.

use crate::invariants::{audit, Report};
use crate::stress::child::{env_var, ChildProcess, Launcher};
use crate::stress::control::{Control, MAX_WORKERS};
use crate::stress::worker::safe_point;
use crate::stress::{ctx, StressError};
use crate::sync::Ordering;
use matrix_handler::{HandlerFunctions, MatrixHandler, RecoveryReport, SharedHandler};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A worker's body: runs operations on the segment, calling
/// [`WorkerContext::keep_going`] between two of them, until it returns
/// `false`. An `Err` fails the run.
pub type WorkerFn = fn(&WorkerContext<'_>) -> Result<(), String>;

/// A role's body, run by [`run_child_role`](crate::stress::run_child_role)
/// in a child started with that role; `Err` makes the child exit with 2.
pub type RoleFn = fn() -> Result<(), String>;

enum Registered {
    Role(RoleFn),
    Worker(WorkerFn),
}

static REGISTRY: Mutex<Vec<(&'static str, Registered)>> = Mutex::new(Vec::new());

fn register(name: &'static str, what: Registered) {
    let mut list = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|(n, _)| *n != name);
    list.push((name, what));
}

/// Registers a child role: a child started with
/// [`Launcher::spawn`]`(name, …)` runs `main` from
/// [`run_child_role`](crate::stress::run_child_role). Call it before
/// `run_child_role` in `main` (in parent and children alike). The role
/// travels in the environment variable
/// [`ENV_ROLE`](crate::stress::child::ENV_ROLE).
pub fn register_role(name: &'static str, main: RoleFn) {
    register(name, Registered::Role(main));
}

/// Registers a worker for [`run_processes_on`] and [`run_crash_on`]: a child
/// started in role `name` opens the harness's segment and runs `worker`.
pub fn register_worker(name: &'static str, worker: WorkerFn) {
    register(name, Registered::Worker(worker));
}

/// Runs the registered role or worker `role`; `None` if none is registered.
pub(crate) fn run_registered(role: &str) -> Option<Result<(), String>> {
    let found = {
        let list = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        list.iter().find(|(n, _)| *n == role).map(|(_, r)| match r {
            Registered::Role(f) => Registered::Role(*f),
            Registered::Worker(f) => Registered::Worker(*f),
        })
    }?;
    Some(match found {
        Registered::Role(main) => main(),
        Registered::Worker(worker) => worker_child_main(worker),
    })
}

const ENV_SEGMENT: &str = "MATRIX_TESTKIT_SEGMENT";
const ENV_CONTROL: &str = "MATRIX_TESTKIT_CONTROL";
const ENV_WORKER: &str = "MATRIX_TESTKIT_WORKER";
const ENV_SEED: &str = "MATRIX_TESTKIT_SEED";

/// What a worker gets: its handler on the segment, its index and seed, and
/// the safe point.
pub struct WorkerContext<'a> {
    handler: &'a SharedHandler,
    ctl: &'a Control,
    index: usize,
    seed: u64,
    segment: &'a str,
}

impl WorkerContext<'_> {
    /// This worker's handle on the segment.
    pub fn handler(&self) -> &SharedHandler {
        self.handler
    }
    /// Worker index, 0 to `workers - 1` (a replacement child reuses the index
    /// of the one it replaces).
    pub fn index(&self) -> usize {
        self.index
    }
    /// A seed unique to this worker (and to each replacement).
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The segment's name (empty for an anonymous arena of `run_threads_on`).
    pub fn segment_name(&self) -> &str {
        self.segment
    }
    /// The safe point, between two operations: parks while the harness
    /// inspects the segment; `false` once it says stop. The first call
    /// marks the worker as working (kills choose among working workers).
    pub fn keep_going(&self) -> bool {
        let w = &self.ctl.workers[self.index];
        // Relaxed: a hint for the parent's choice of victim.
        if w.started.load(Ordering::Relaxed) == 0 {
            w.started.store(1, Ordering::Relaxed);
        }
        // Relaxed: statistics, read after the worker parked or exited.
        w.ops.fetch_add(1, Ordering::Relaxed);
        safe_point(self.ctl)
    }
}

fn worker_child_main(worker: WorkerFn) -> Result<(), String> {
    let name: String = env_var(ENV_SEGMENT)?;
    let h = MatrixHandler::open(&name).map_err(|e| format!("open {name}: {e}"))?;
    let ctl_offset: u32 = env_var(ENV_CONTROL)?;
    let index: usize = env_var(ENV_WORKER)?;
    if index >= MAX_WORKERS {
        return Err(format!("worker index {index} out of range"));
    }
    let shared = h.share();
    let ctl = Control::attach(&shared, ctl_offset).ok_or("no control block at that offset")?;
    let cx = WorkerContext {
        handler: &shared,
        ctl,
        index,
        seed: env_var(ENV_SEED)?,
        segment: &name,
    };
    worker(&cx)
}

/// How a workload harness runs.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Workers (threads, or child processes) running at any time.
    pub workers: usize,
    /// Children to SIGKILL ([`run_crash_on`] only).
    pub kills: u64,
    /// How long the workers run ([`run_threads_on`], [`run_processes_on`]);
    /// for [`run_crash_on`], the random gap before each kill is drawn from
    /// `gap` instead.
    pub duration: Duration,
    /// Random gap before each kill.
    pub gap: (Duration, Duration),
    /// Random seed.
    pub seed: u64,
    /// Longest wait for the workers to park or to stop.
    pub pause_timeout: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            workers: 2,
            kills: 100,
            duration: Duration::from_millis(500),
            gap: (Duration::from_millis(1), Duration::from_millis(10)),
            seed: 1,
            pause_timeout: Duration::from_secs(30),
        }
    }
}

/// When your check runs.
#[derive(Debug, Clone)]
pub enum CheckPoint {
    /// After kill number `kill` (1-based) and the `recover()` that followed,
    /// with the survivors parked.
    AfterKill {
        /// Which kill.
        kill: u64,
        /// What that `recover()` reclaimed.
        recovery: RecoveryReport,
    },
    /// After every worker stopped and a final `recover()`.
    Final,
}

/// Your check: runs at quiescence with the harness's handler; `Err` fails
/// the run with that message.
pub type CheckFn<'a> = dyn FnMut(&MatrixHandler, &CheckPoint) -> Result<(), String> + 'a;

/// What a workload harness saw.
#[derive(Debug, Clone, Default)]
pub struct WorkloadReport {
    /// Children killed.
    pub kills: u64,
    /// Participants reclaimed by `recover()` (after kills and at the end).
    pub recovered_participants: u64,
    /// Blocks reclaimed by `recover()`.
    pub recovered_blocks: u64,
    /// Your check's runs (each passed).
    pub checks: u64,
    /// `keep_going` calls of all workers (killed ones included).
    pub operations: u64,
    /// The allocator invariant checker's report at the end.
    pub final_report: Report,
    /// Wall time.
    pub elapsed: Duration,
}

fn validate(cfg: &WorkloadConfig) -> Result<(), StressError> {
    if cfg.workers == 0 || cfg.workers > MAX_WORKERS {
        return Err(StressError(format!("1 to {MAX_WORKERS} workers")));
    }
    Ok(())
}

fn hard_violations(h: &MatrixHandler, when: &str) -> Result<Report, StressError> {
    let a = audit(h.matrix());
    let hard: Vec<String> = a.hard_violations().map(|v| v.to_string()).collect();
    if !hard.is_empty() {
        return Err(StressError(format!("{when}: {}", hard.join("; "))));
    }
    Ok(a.report)
}

fn operations(ctl: &Control) -> u64 {
    // Relaxed: read after every worker parked or exited.
    ctl.workers
        .iter()
        .map(|w| w.ops.load(Ordering::Relaxed))
        .sum()
}

/// Runs `worker` on `workers` threads of this process over the handler's
/// segment for `duration`, then your check ([`CheckPoint::Final`]) and the
/// allocator's invariants.
pub fn run_threads_on(
    handler: &MatrixHandler,
    cfg: &WorkloadConfig,
    worker: WorkerFn,
    check: &mut CheckFn<'_>,
) -> Result<WorkloadReport, StressError> {
    validate(cfg)?;
    let start = Instant::now();
    let ctl_offset = Control::create(handler).map_err(ctx("control block"))?;
    let segment = handler.matrix().name().unwrap_or("").to_owned();
    let outcome: Vec<Result<(), String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..cfg.workers)
            .map(|index| {
                let shared = handler.share();
                let segment = segment.as_str();
                let seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(index as u64);
                s.spawn(move || {
                    let ctl = Control::attach(&shared, ctl_offset).ok_or("control block")?;
                    let cx = WorkerContext {
                        handler: &shared,
                        ctl,
                        index,
                        seed,
                        segment,
                    };
                    let r = worker(&cx);
                    // The thread cache goes back before the final checks.
                    shared.matrix().flush_thread_cache();
                    r
                })
            })
            .collect();
        std::thread::sleep(cfg.duration);
        let ctl = Control::attach(handler, ctl_offset).expect("control block");
        // Release: workers Acquire `stop` at their next safe point.
        ctl.stop.store(1, Ordering::Release);
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect()
    });
    for r in outcome {
        r.map_err(|e| StressError(format!("worker: {e}")))?;
    }
    let ctl = Control::attach(handler, ctl_offset).ok_or_else(|| StressError::new("control"))?;
    let mut report = WorkloadReport {
        operations: operations(ctl),
        ..WorkloadReport::default()
    };
    finish(handler, ctl_offset, check, &mut report)?;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Runs the registered worker `role` in `workers` child processes on the
/// named `segment` (which `handler` has open) for `duration`, then your
/// check ([`CheckPoint::Final`]) and the allocator's invariants.
pub fn run_processes_on(
    segment: &str,
    handler: &MatrixHandler,
    cfg: &WorkloadConfig,
    launcher: &Launcher,
    role: &str,
    check: &mut CheckFn<'_>,
) -> Result<WorkloadReport, StressError> {
    let cfg = WorkloadConfig {
        kills: 0,
        ..cfg.clone()
    };
    run_children(segment, handler, &cfg, launcher, role, check)
}

/// The crash harness over your workload: the registered worker `role` runs
/// in `workers` child processes on `segment`; `kills` times, one is
/// SIGKILLed at a random moment, the survivors park, `recover()` runs, the
/// allocator's invariants (stranded blocks allowed, see
/// [`crash`](crate::stress::crash)) and your check
/// ([`CheckPoint::AfterKill`]) must hold, and a replacement starts. At the
/// end everyone stops, and the final `recover()`, your check
/// ([`CheckPoint::Final`]) and the invariants must hold.
pub fn run_crash_on(
    segment: &str,
    handler: &MatrixHandler,
    cfg: &WorkloadConfig,
    launcher: &Launcher,
    role: &str,
    check: &mut CheckFn<'_>,
) -> Result<WorkloadReport, StressError> {
    run_children(segment, handler, cfg, launcher, role, check)
}

struct Children<'a> {
    segment: &'a str,
    launcher: &'a Launcher,
    role: &'a str,
    ctl_offset: u32,
    seed: u64,
    spawned: u64,
    list: Vec<ChildProcess>,
}

impl Children<'_> {
    fn spawn(&mut self, ctl: &Control, index: usize) -> Result<ChildProcess, StressError> {
        self.spawned += 1;
        // Relaxed: reset by the parent alone, before the child exists.
        ctl.workers[index].started.store(0, Ordering::Relaxed);
        let seed = self.seed.wrapping_mul(1_000_003).wrapping_add(self.spawned);
        self.launcher
            .spawn(
                self.role,
                &[
                    (ENV_SEGMENT, self.segment.to_owned()),
                    (ENV_CONTROL, self.ctl_offset.to_string()),
                    (ENV_WORKER, index.to_string()),
                    (ENV_SEED, seed.to_string()),
                ],
            )
            .map_err(ctx("spawn child"))
    }

    fn check_alive(&mut self, except: Option<usize>) -> Result<(), StressError> {
        for (i, child) in self.list.iter_mut().enumerate() {
            if Some(i) == except {
                continue;
            }
            if let Some(status) = child.try_wait().map_err(ctx("wait for child"))? {
                return Err(StressError(format!(
                    "child {} ({}) exited on its own: {status}",
                    child.pid(),
                    self.role
                )));
            }
        }
        Ok(())
    }
}

fn wait_parked(
    ctl: &Control,
    expected: u32,
    children: &mut Children<'_>,
    victim: Option<usize>,
    timeout: Duration,
) -> Result<(), StressError> {
    let deadline = Instant::now() + timeout;
    // Acquire: pairs with the workers' AcqRel on `parked`: their operations
    // happen before the parent inspects the segment.
    while ctl.parked.load(Ordering::Acquire) != expected {
        children.check_alive(victim)?;
        if Instant::now() >= deadline {
            return Err(StressError(format!(
                "workers did not reach keep_going() within {timeout:?}: a hang?"
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

fn run_children(
    segment: &str,
    handler: &MatrixHandler,
    cfg: &WorkloadConfig,
    launcher: &Launcher,
    role: &str,
    check: &mut CheckFn<'_>,
) -> Result<WorkloadReport, StressError> {
    validate(cfg)?;
    let start = Instant::now();
    let ctl_offset = Control::create(handler).map_err(ctx("control block"))?;
    let ctl = Control::attach(handler, ctl_offset).ok_or_else(|| StressError::new("control"))?;
    // Nobody reads the workers' output: a pipe would block a chatty one.
    let launcher = &launcher.clone().with_inherited_stdout();
    let mut children = Children {
        segment,
        launcher,
        role,
        ctl_offset,
        seed: cfg.seed,
        spawned: 0,
        list: Vec::new(),
    };
    let mut report = WorkloadReport::default();
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    let result = (|| -> Result<(), StressError> {
        for index in 0..cfg.workers {
            let child = children.spawn(ctl, index)?;
            children.list.push(child);
        }
        if cfg.kills == 0 {
            let end = Instant::now() + cfg.duration;
            while Instant::now() < end {
                children.check_alive(None)?;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        while report.kills < cfg.kills {
            let (lo, hi) = (cfg.gap.0.as_micros() as u64, cfg.gap.1.as_micros() as u64);
            let wake = Instant::now() + Duration::from_micros(rng.u64(lo..=hi.max(lo)));
            while Instant::now() < wake {
                children.check_alive(None)?;
                std::thread::sleep(Duration::from_micros(500));
            }
            let working: Vec<usize> = (0..children.list.len())
                // Relaxed: a hint; a child not yet working is not chosen.
                .filter(|&i| ctl.workers[i].started.load(Ordering::Relaxed) != 0)
                .collect();
            if working.is_empty() {
                continue;
            }
            let victim = working[rng.usize(0..working.len())];
            children.list[victim].kill().map_err(ctx("kill child"))?;
            report.kills += 1;
            // Release: pairs with the workers' Acquire of `pause`.
            ctl.pause.store(1, Ordering::Release);
            let survivors = (children.list.len() - 1) as u32;
            wait_parked(
                ctl,
                survivors,
                &mut children,
                Some(victim),
                cfg.pause_timeout,
            )?;
            let recovery = handler.recover().map_err(ctx("recover after a kill"))?;
            if recovery.participants != 1 {
                return Err(StressError(format!(
                    "recover after kill {} reclaimed {} participants, expected the dead one",
                    report.kills, recovery.participants
                )));
            }
            report.recovered_participants += 1;
            report.recovered_blocks += recovery.blocks;
            hard_violations(handler, &format!("after kill {}", report.kills))?;
            let point = CheckPoint::AfterKill {
                kill: report.kills,
                recovery,
            };
            check(handler, &point)
                .map_err(|e| StressError(format!("your check after kill {}: {e}", report.kills)))?;
            report.checks += 1;
            // Release: pairs with the workers' Acquire of `pause`.
            ctl.pause.store(0, Ordering::Release);
            wait_parked(ctl, 0, &mut children, Some(victim), cfg.pause_timeout)?;
            children.list[victim] = children.spawn(ctl, victim)?;
        }
        Ok(())
    })();
    // Whatever happened: stop everyone and let the children exit.
    // Release: workers Acquire `stop` at their next safe point.
    ctl.stop.store(1, Ordering::Release);
    ctl.pause.store(0, Ordering::Release);
    let mut exit_problem = None;
    for child in &mut children.list {
        match child.wait_timeout(cfg.pause_timeout) {
            Ok(Some(s)) if s.success() => {}
            Ok(Some(s)) => exit_problem = Some(format!("child {} exited with {s}", child.pid())),
            _ => {
                let _ = child.kill();
                exit_problem = Some(format!("child {} did not stop in time", child.pid()));
            }
        }
    }
    result?;
    if let Some(p) = exit_problem {
        return Err(StressError(p));
    }
    report.operations = operations(ctl);
    finish(handler, ctl_offset, check, &mut report)?;
    report.elapsed = start.elapsed();
    Ok(report)
}

fn finish(
    handler: &MatrixHandler,
    ctl_offset: u32,
    check: &mut CheckFn<'_>,
    report: &mut WorkloadReport,
) -> Result<(), StressError> {
    let rec = handler.recover().map_err(ctx("final recover"))?;
    report.recovered_participants += rec.participants as u64;
    report.recovered_blocks += rec.blocks;
    // Gone before your check, so it sees only your structure's blocks.
    handler
        .free_raw(matrix_handler::RelativePtr::new(ctl_offset))
        .map_err(ctx("free the control block"))?;
    check(handler, &CheckPoint::Final)
        .map_err(|e| StressError(format!("your final check: {e}")))?;
    report.checks += 1;
    report.final_report = hard_violations(handler, "at the end")?;
    Ok(())
}

/// What [`run_hostile_on`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostileOutcome {
    /// Cases run.
    pub cases: u64,
    /// Cases whose exercise returned `Ok` despite the corruption.
    pub accepted: u64,
    /// Cases whose exercise returned an error.
    pub refused: u64,
}

/// Hostile bytes against your structure: for each of `cases`, a fresh
/// anonymous arena of `segment_size` bytes, `build` makes your structure and
/// returns the payload offset and size of the bytes to corrupt (its block),
/// 1–8 random bytes of that region are overwritten with random values, then
/// `exercise` opens and uses the structure. It must return — `Ok` or a
/// typed `Err` — and never panic; a panic fails the run naming the case's
/// seed. (A fault that kills the process fails the test binary itself.)
pub fn run_hostile_on<E>(
    cases: u64,
    seed: u64,
    segment_size: u32,
    build: impl Fn(&MatrixHandler) -> Result<(u32, u32), String>,
    exercise: impl Fn(&MatrixHandler, u32) -> Result<(), E>,
) -> Result<HostileOutcome, StressError> {
    let mut outcome = HostileOutcome::default();
    for case in 0..cases {
        let case_seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(case);
        let mut rng = fastrand::Rng::with_seed(case_seed);
        let h = MatrixHandler::bootstrap(None, segment_size).map_err(ctx("anonymous arena"))?;
        let (offset, len) = build(&h).map_err(|e| StressError(format!("build: {e}")))?;
        let end = offset as u64 + len as u64;
        if len == 0 || end > h.segment_size() as u64 {
            return Err(StressError(format!(
                "build returned region [{offset}, +{len}) outside the segment"
            )));
        }
        for _ in 0..rng.u32(1..=8) {
            let at = offset as usize + rng.usize(0..len as usize);
            let value: u8 = match rng.u8(0..4) {
                0 => 0,
                1 => 0xFF,
                _ => rng.u8(..),
            };
            // SAFETY: `at` lies inside the region `build` reported, which was
            // checked against this process's private arena above; a plain
            // byte store races with nothing (no other thread or process uses
            // this arena).
            unsafe { (h.base_ptr() as *mut u8).add(at).write_volatile(value) };
        }
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exercise(&h, offset)));
        match run {
            Ok(Ok(())) => outcome.accepted += 1,
            Ok(Err(_)) => outcome.refused += 1,
            Err(_) => {
                return Err(StressError(format!(
                    "exercise panicked on hostile case {case} (seed {case_seed})"
                )))
            }
        }
        outcome.cases += 1;
    }
    Ok(outcome)
}
