//! Crash injection: children SIGKILLed at random moments.
//!
//! ```text
//!  loop until `kills` done (and `duration` over):
//!    sleep a random gap            children (and parent threads) run workers
//!    SIGKILL a running child, reap it
//!    pause: every survivor parks at a safe point (between two operations)
//!    recover()                     exactly the dead child is reclaimed
//!    audit()                       no violation except stranded blocks,
//!                                  at most one new stranded block per kill
//!    resume, start a replacement child
//!  stop; all exit; drain the mailbox; recover(); repair(); consolidate
//!  → no violation, and every byte is free except the control block
//! ```
//!
//! A block is *stranded* when a participant dies between a successful pop
//! and recording its ownership (or between the steps that return a block to
//! the index): FREE in no list, or ACKED/COALESCING owned by nobody. The
//! design allows that for one block per death, and `repair()` (offline)
//! takes it back; the harness measures both.

use crate::invariants::{audit, Report};
use crate::segment::SegmentName;
use crate::stress::child::{ChildProcess, Launcher};
use crate::stress::control::{Control, Totals, MAX_WORKERS};
use crate::stress::processes::{spawn_worker, ChildSpec};
use crate::stress::threads::{drain_mailbox, final_check};
use crate::stress::worker::{run_worker, WorkerConfig};
use crate::stress::{ctx, StressError};
use crate::sync::Ordering;
use matrix_handler::{HandlerFunctions, MatrixHandler};
use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Role of a crash-harness child (a worker that runs until stopped or killed).
pub const ROLE: &str = "crash-worker";

pub(crate) fn child_main() -> Result<(), String> {
    crate::stress::processes::child_main()
}

/// How the crash harness runs.
#[derive(Debug, Clone)]
pub struct CrashConfig {
    /// Child processes running at any time.
    pub children: usize,
    /// Worker threads in the parent process, running alongside.
    pub parent_threads: usize,
    /// Children to kill.
    pub kills: u64,
    /// Run at least this long (kills are spread over it); `None`: as fast
    /// as the gaps allow.
    pub duration: Option<Duration>,
    /// Random gap before each kill, when there is no duration.
    pub gap: (Duration, Duration),
    /// Segment size in bytes.
    pub segment_size: u32,
    /// Most blocks a worker holds at once.
    pub max_live: usize,
    /// Random seed.
    pub seed: u64,
    /// Longest wait for the workers to park (or to exit at the end).
    pub pause_timeout: Duration,
    /// Interval between progress callbacks.
    pub progress_every: Duration,
    /// One kill in this many (0 = none) hits a child 1–4 ms after it
    /// started working: while it is still filling the segment, splitting
    /// large free blocks, with remainders and first carves in flight.
    pub early_kill_every: u64,
}

impl Default for CrashConfig {
    fn default() -> Self {
        CrashConfig {
            children: 2,
            parent_threads: 0,
            kills: 100,
            duration: None,
            gap: (Duration::from_millis(2), Duration::from_millis(25)),
            segment_size: 4 << 20,
            max_live: 128,
            seed: 1,
            pause_timeout: Duration::from_secs(30),
            progress_every: Duration::from_secs(5),
            early_kill_every: 3,
        }
    }
}

/// A progress snapshot, handed to the callback every few seconds.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Time since start.
    pub elapsed: Duration,
    /// Kills so far.
    pub kills: u64,
    /// Invariant checks passed (one per kill).
    pub checks: u64,
    /// Summed worker counters.
    pub totals: Totals,
    /// Blocks stranded so far (waiting for the final repair).
    pub stranded_blocks: u64,
    /// Free bytes right now (weakly consistent while workers run).
    pub free_bytes: u64,
    /// Fragmentation right now (weakly consistent).
    pub fragmentation: f64,
}

/// What the crash harness saw.
#[derive(Debug, Clone, Default)]
pub struct CrashReport {
    /// Children killed.
    pub kills: u64,
    /// Participants reclaimed by `recover()` (after kills and at the end).
    pub recoveries: u64,
    /// Blocks reclaimed by `recover()` after kills.
    pub recovered_blocks: u64,
    /// Bytes in them.
    pub recovered_bytes: u64,
    /// Invariant checks run at quiescence after a kill (all passed).
    pub checks: u64,
    /// Summed worker counters.
    pub totals: Totals,
    /// Blocks stranded by kills (taken back by the final repair).
    pub stranded_blocks: u64,
    /// Bytes in them.
    pub stranded_bytes: u64,
    /// Most blocks newly stranded by a single kill.
    pub max_stranded_per_kill: u64,
    /// Blocks the final `repair()` reclaimed (beyond FREE ones re-indexed).
    pub repaired_blocks: u64,
    /// Bytes still used at the end beyond the control block.
    pub leaked_bytes: u64,
    /// The first few blocks still used at the end (besides the control block).
    pub leaked_blocks: Vec<crate::invariants::ChainBlock>,
    /// The checker's report at the end.
    pub final_report: Report,
    /// Wall time.
    pub elapsed: Duration,
}

struct Run<'a> {
    cfg: &'a CrashConfig,
    launcher: &'a Launcher,
    name: SegmentName,
    h: MatrixHandler,
    ctl_offset: u32,
    children: Vec<ChildProcess>,
    rng: fastrand::Rng,
    spawned: u64,
    report: CrashReport,
    stranded: HashSet<u32>,
    start: Instant,
    /// The child just killed, not yet replaced.
    victim: Option<usize>,
    /// The child spawned last, a candidate for an early kill.
    last_spawned: Option<usize>,
}

impl Run<'_> {
    fn ctl(&self) -> &Control {
        Control::attach(&self.h, self.ctl_offset).expect("the control block is segment-owned")
    }

    fn spawn(&mut self, index: usize) -> Result<ChildProcess, StressError> {
        self.spawned += 1;
        // Relaxed: the parent alone resets it, before the child exists.
        self.ctl().workers[index]
            .started
            .store(0, Ordering::Relaxed);
        let seed = self
            .cfg
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.spawned);
        let spec = ChildSpec {
            role: ROLE,
            segment: self.name.as_str(),
            ctl_offset: self.ctl_offset,
            index,
            ops: 0,
            max_live: self.cfg.max_live,
            seed,
        };
        spawn_worker(self.launcher, &spec)
    }

    /// Fails if a child exited on its own (it must only die when killed).
    fn check_children(&mut self) -> Result<(), StressError> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if Some(i) == self.victim {
                continue;
            }
            if let Some(status) = child.try_wait().map_err(ctx("wait for child"))? {
                return Err(StressError(format!(
                    "child {} exited on its own: {status}",
                    child.pid()
                )));
            }
        }
        Ok(())
    }

    fn wait_parked(&mut self, expected: u32) -> Result<(), StressError> {
        let deadline = Instant::now() + self.cfg.pause_timeout;
        // Acquire: pairs with the workers' AcqRel on `parked`, so their
        // operations happen before the parent's inspection.
        while self.ctl().parked.load(Ordering::Acquire) != expected {
            self.check_children()?;
            if Instant::now() >= deadline {
                return Err(StressError(format!(
                    "workers did not reach a safe point within {:?} ({} of {expected} parked): a hang?",
                    self.cfg.pause_timeout,
                    self.ctl().parked.load(Ordering::Acquire)
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn kill_one(&mut self, early: Option<usize>) -> Result<(), StressError> {
        let index = match early {
            Some(index) => {
                // The child just spawned: wait until it works, then give it
                // 1–4 ms of life.
                let deadline = Instant::now() + self.cfg.pause_timeout;
                // Relaxed: a hint; the kill lands wherever the child is.
                while self.ctl().workers[index].started.load(Ordering::Relaxed) == 0 {
                    self.check_children()?;
                    if Instant::now() >= deadline {
                        return Err(StressError::new("a new child never started working"));
                    }
                    std::thread::yield_now();
                }
                std::thread::sleep(Duration::from_micros(self.rng.u64(1_000..4_000)));
                index
            }
            None => {
                let started: Vec<usize> = (0..self.children.len())
                    // Relaxed: a hint; a child not yet started is simply not chosen.
                    .filter(|&i| self.ctl().workers[i].started.load(Ordering::Relaxed) != 0)
                    .collect();
                if started.is_empty() {
                    return Ok(());
                }
                started[self.rng.usize(0..started.len())]
            }
        };
        self.children[index].kill().map_err(ctx("kill child"))?;
        self.victim = Some(index);
        self.report.kills += 1;

        // Quiescence: every survivor parks between two operations.
        // Release: pairs with the workers' Acquire of `pause`.
        self.ctl().pause.store(1, Ordering::Release);
        let survivors = (self.children.len() - 1 + self.cfg.parent_threads) as u32;
        // A replacement child spawned after the previous kill may still be
        // starting; it parks as soon as it reaches its loop.
        self.wait_parked(survivors)?;

        let rec = self.h.recover().map_err(ctx("recover after a kill"))?;
        if rec.participants != 1 {
            return Err(StressError(format!(
                "recover after kill {} reclaimed {} participants, expected exactly the dead one",
                self.report.kills, rec.participants
            )));
        }
        self.report.recoveries += rec.participants as u64;
        self.report.recovered_blocks += rec.blocks;
        self.report.recovered_bytes += rec.bytes;

        let a = audit(self.h.matrix());
        let hard: Vec<String> = a.hard_violations().map(|v| v.to_string()).collect();
        if !hard.is_empty() {
            return Err(StressError(format!(
                "after kill {} and recovery: {} violations: {}",
                self.report.kills,
                hard.len(),
                hard.join("; ")
            )));
        }
        let now: HashSet<u32> = a
            .violations
            .iter()
            .filter(|v| v.is_stranding())
            .map(|v| v.offset)
            .collect();
        let new = now.difference(&self.stranded).count() as u64;
        self.report.max_stranded_per_kill = self.report.max_stranded_per_kill.max(new);
        self.report.stranded_blocks = now.len() as u64;
        self.report.stranded_bytes = a.report.stranded_bytes;
        self.stranded = now;
        self.report.checks += 1;
        if self.ctl().totals().overlaps != 0 {
            return Err(StressError(format!(
                "workers found damaged blocks by kill {}",
                self.report.kills
            )));
        }

        // Release: pairs with the workers' Acquire of `pause`.
        self.ctl().pause.store(0, Ordering::Release);
        self.wait_parked(0)?;
        self.children[index] = self.spawn(index)?;
        self.victim = None;
        self.last_spawned = Some(index);
        Ok(())
    }

    fn progress(&self) -> Progress {
        let stats = self.h.stats().ok();
        Progress {
            elapsed: self.start.elapsed(),
            kills: self.report.kills,
            checks: self.report.checks,
            totals: self.ctl().totals(),
            stranded_blocks: self.report.stranded_blocks,
            free_bytes: stats.as_ref().map(|s| s.free_bytes).unwrap_or(0),
            fragmentation: stats.map(|s| s.fragmentation).unwrap_or(0.0),
        }
    }
}

/// Runs the crash harness. `progress` is called every `progress_every`.
pub fn run_crash(
    cfg: &CrashConfig,
    launcher: &Launcher,
    progress: &mut dyn FnMut(&Progress),
) -> Result<CrashReport, StressError> {
    if cfg.children == 0 || cfg.children + cfg.parent_threads > MAX_WORKERS {
        return Err(StressError(format!(
            "1 to {MAX_WORKERS} workers (children + parent threads)"
        )));
    }
    let start = Instant::now();
    let name = SegmentName::new("crash");
    let h =
        MatrixHandler::create(name.as_str(), cfg.segment_size).map_err(ctx("create segment"))?;
    let ctl_offset = Control::create(&h).map_err(ctx("control block"))?;
    let mut run = Run {
        cfg,
        launcher,
        name,
        h,
        ctl_offset,
        children: Vec::new(),
        rng: fastrand::Rng::with_seed(cfg.seed),
        spawned: 0,
        report: CrashReport::default(),
        stranded: HashSet::new(),
        start,
        victim: None,
        last_spawned: None,
    };
    for index in 0..cfg.children {
        let child = run.spawn(index)?;
        run.children.push(child);
    }
    let (done_tx, done_rx) = mpsc::channel();
    let mut threads = Vec::new();
    for t in 0..cfg.parent_threads {
        let shared = run.h.share();
        let done = done_tx.clone();
        let wcfg = WorkerConfig {
            index: cfg.children + t,
            ops: 0,
            max_live: cfg.max_live,
            seed: cfg.seed.wrapping_add(77 + t as u64),
            // A killed receiver would strand the parent's sent blocks for the
            // parent's whole life (see `WorkerConfig::send`).
            send: false,
            ..WorkerConfig::default()
        };
        threads.push(std::thread::spawn(move || {
            let ctl = Control::attach(&shared, ctl_offset).expect("control block");
            run_worker(&shared, ctl, &wcfg);
            let _ = done.send(());
        }));
    }
    drop(done_tx);

    let result = drive(&mut run, progress);
    // Whatever happened: stop everyone, and let the children exit.
    // Release: workers Acquire `stop` at their next safe point.
    run.ctl().stop.store(1, Ordering::Release);
    run.ctl().pause.store(0, Ordering::Release);
    let mut exit_problem = None;
    for child in &mut run.children {
        match child.wait_timeout(cfg.pause_timeout) {
            Ok(Some(s)) if s.success() => {}
            Ok(Some(s)) => {
                exit_problem = Some(format!("child {} exited with {s} at stop", child.pid()))
            }
            _ => {
                let _ = child.kill();
                exit_problem = Some(format!(
                    "child {} did not stop within {:?}",
                    child.pid(),
                    cfg.pause_timeout
                ));
            }
        }
    }
    for _ in 0..threads.len() {
        if done_rx.recv_timeout(cfg.pause_timeout).is_err() {
            return Err(StressError::new(
                "a parent worker thread did not stop (a hang?)",
            ));
        }
    }
    for t in threads {
        t.join()
            .map_err(|_| StressError::new("a parent worker thread panicked"))?;
    }
    result?;
    if let Some(p) = exit_problem {
        return Err(StressError(p));
    }
    finish(run)
}

fn drive(run: &mut Run<'_>, progress: &mut dyn FnMut(&Progress)) -> Result<(), StressError> {
    let cfg = run.cfg;
    let mut last_progress = Instant::now();
    loop {
        let elapsed = run.start.elapsed();
        let duration_over = cfg.duration.is_none_or(|d| elapsed >= d);
        if run.report.kills >= cfg.kills && duration_over {
            return Ok(());
        }
        let gap = match cfg.duration {
            Some(d) if run.report.kills < cfg.kills => {
                let left = d.saturating_sub(elapsed);
                let per_kill = left / (cfg.kills - run.report.kills).max(1) as u32;
                per_kill.mul_f64(0.5 + run.rng.f64())
            }
            Some(_) => Duration::from_millis(100),
            None => {
                let (lo, hi) = (cfg.gap.0.as_micros() as u64, cfg.gap.1.as_micros() as u64);
                Duration::from_micros(run.rng.u64(lo..=hi.max(lo)))
            }
        };
        let wake = Instant::now() + gap;
        while Instant::now() < wake {
            run.check_children()?;
            if last_progress.elapsed() >= cfg.progress_every {
                progress(&run.progress());
                last_progress = Instant::now();
            }
            std::thread::sleep(
                wake.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(5)),
            );
        }
        if run.report.kills < cfg.kills {
            let early = (cfg.early_kill_every != 0 && run.rng.u64(0..cfg.early_kill_every) == 0)
                .then_some(run.last_spawned)
                .flatten();
            run.kill_one(early)?;
        }
    }
}

fn finish(run: Run<'_>) -> Result<CrashReport, StressError> {
    let mut report = run.report.clone();
    let h = &run.h;
    let ctl =
        Control::attach(h, run.ctl_offset).ok_or_else(|| StressError::new("control block"))?;
    let (damaged, drained) = drain_mailbox(h, ctl);
    let rec = h.recover().map_err(ctx("final recover"))?;
    report.recoveries += rec.participants as u64;
    let a = audit(h.matrix());
    let hard: Vec<String> = a.hard_violations().map(|v| v.to_string()).collect();
    if !hard.is_empty() {
        return Err(StressError(format!(
            "after all children exited: {}",
            hard.join("; ")
        )));
    }
    report.stranded_blocks = a.report.stranded_blocks;
    report.stranded_bytes = a.report.stranded_bytes;
    let repaired = h.matrix().repair(false).map_err(ctx("final repair"))?;
    report.repaired_blocks = repaired.blocks;
    let mut totals = ctl.totals();
    totals.overlaps += damaged;
    totals.received += drained;
    report.totals = totals;
    let (final_report, leaked) = final_check(h, run.ctl_offset)?;
    report.final_report = final_report;
    report.leaked_bytes = leaked;
    let ctl_header = run.ctl_offset - matrix_core::BLOCK_HEADER_SIZE;
    report.leaked_blocks = audit(h.matrix())
        .chain
        .into_iter()
        .filter(|b| !matrix_core::state::is_free(b.state) && b.offset != ctl_header)
        .take(16)
        .collect();
    report.elapsed = run.start.elapsed();
    Ok(report)
}
