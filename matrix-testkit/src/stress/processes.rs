//! K child processes on one named segment, passing blocks by offset.

use crate::invariants::Report;
use crate::segment::SegmentName;
use crate::stress::child::{env_var, ChildProcess, Launcher};
use crate::stress::control::{Control, Totals, MAX_WORKERS};
use crate::stress::threads::{drain_mailbox, final_check};
use crate::stress::worker::{run_worker, WorkerConfig};
use crate::stress::{ctx, StressError};
use matrix_handler::{HandlerFunctions, MatrixHandler};
use std::time::{Duration, Instant};

/// Role of a process-harness child.
pub const ROLE: &str = "process-worker";

pub(crate) const ENV_SEGMENT: &str = "MATRIX_TESTKIT_SEGMENT";
pub(crate) const ENV_CONTROL: &str = "MATRIX_TESTKIT_CONTROL";
pub(crate) const ENV_WORKER: &str = "MATRIX_TESTKIT_WORKER";
pub(crate) const ENV_OPS: &str = "MATRIX_TESTKIT_OPS";
pub(crate) const ENV_SEED: &str = "MATRIX_TESTKIT_SEED";
pub(crate) const ENV_MAX_LIVE: &str = "MATRIX_TESTKIT_MAX_LIVE";

/// How the process harness runs.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Child processes.
    pub children: usize,
    /// Operations per child.
    pub ops_per_child: u64,
    /// Segment size in bytes.
    pub segment_size: u32,
    /// Most blocks a child holds at once.
    pub max_live: usize,
    /// Random seed.
    pub seed: u64,
    /// Give up (kill everything, fail) after this long.
    pub timeout: Duration,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            children: 3,
            ops_per_child: 100_000,
            segment_size: 4 << 20,
            max_live: 256,
            seed: 1,
            timeout: Duration::from_secs(120),
        }
    }
}

/// What the process harness saw.
#[derive(Debug, Clone)]
pub struct ProcessReport {
    /// Summed worker counters (plus the blocks drained from the mailbox).
    pub totals: Totals,
    /// Participants `recover()` found after the children exited (their
    /// handles were dropped, so all of them).
    pub recovered_participants: u32,
    /// Blocks `recover()` had to reclaim: what the exiting children leaked.
    pub recovered_blocks: u64,
    /// Bytes still used at the end beyond the control block.
    pub leaked_bytes: u64,
    /// The checker's report at the end.
    pub final_report: Report,
    /// Wall time.
    pub elapsed: Duration,
}

/// What a worker child is started with.
pub(crate) struct ChildSpec<'a> {
    pub(crate) role: &'a str,
    pub(crate) segment: &'a str,
    pub(crate) ctl_offset: u32,
    pub(crate) index: usize,
    pub(crate) ops: u64,
    pub(crate) max_live: usize,
    pub(crate) seed: u64,
}

pub(crate) fn spawn_worker(
    launcher: &Launcher,
    spec: &ChildSpec<'_>,
) -> Result<ChildProcess, StressError> {
    launcher
        .spawn(
            spec.role,
            &[
                (ENV_SEGMENT, spec.segment.to_owned()),
                (ENV_CONTROL, spec.ctl_offset.to_string()),
                (ENV_WORKER, spec.index.to_string()),
                (ENV_OPS, spec.ops.to_string()),
                (ENV_MAX_LIVE, spec.max_live.to_string()),
                (ENV_SEED, spec.seed.to_string()),
            ],
        )
        .map_err(ctx("spawn child"))
}

/// The body of a worker child (process and crash harnesses).
pub(crate) fn child_main() -> Result<(), String> {
    let name: String = env_var(ENV_SEGMENT)?;
    let h = MatrixHandler::open(&name).map_err(|e| format!("open {name}: {e}"))?;
    let ctl_offset: u32 = env_var(ENV_CONTROL)?;
    let ctl = Control::attach(&h, ctl_offset).ok_or("no control block at the given offset")?;
    let cfg = WorkerConfig {
        index: env_var(ENV_WORKER)?,
        ops: env_var(ENV_OPS)?,
        max_live: env_var(ENV_MAX_LIVE)?,
        seed: env_var(ENV_SEED)?,
        ..WorkerConfig::default()
    };
    if cfg.index >= MAX_WORKERS {
        return Err(format!("worker index {} out of range", cfg.index));
    }
    run_worker(&h, ctl, &cfg);
    Ok(())
}

/// Runs the process harness: `children` processes started from `launcher`.
pub fn run_processes(
    cfg: &ProcessConfig,
    launcher: &Launcher,
) -> Result<ProcessReport, StressError> {
    let start = Instant::now();
    let name = SegmentName::new("procs");
    let h =
        MatrixHandler::create(name.as_str(), cfg.segment_size).map_err(ctx("create segment"))?;
    let ctl_offset = Control::create(&h).map_err(ctx("control block"))?;
    let ctl = Control::attach(&h, ctl_offset).ok_or_else(|| StressError::new("control block"))?;
    let mut children = Vec::new();
    for index in 0..cfg.children.min(MAX_WORKERS) {
        let seed = cfg.seed.wrapping_mul(7919).wrapping_add(index as u64);
        let spec = ChildSpec {
            role: ROLE,
            segment: name.as_str(),
            ctl_offset,
            index,
            ops: cfg.ops_per_child,
            max_live: cfg.max_live,
            seed,
        };
        children.push(spawn_worker(launcher, &spec)?);
    }
    let deadline = start + cfg.timeout;
    for child in &mut children {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.wait_timeout(left).map_err(ctx("wait for child"))? {
            Some(status) if status.success() => {}
            Some(status) => {
                return Err(StressError(format!(
                    "child {} failed: {status}",
                    child.pid()
                )))
            }
            None => {
                // Release: workers Acquire `stop` at their next safe point.
                ctl.stop.store(1, crate::sync::Ordering::Release);
                return Err(StressError(format!(
                    "child {} still running after {:?} (a hang?)",
                    child.pid(),
                    cfg.timeout
                )));
            }
        }
    }
    // The children dropped their handles: the blocks still in the mailbox
    // are live (owned by detached participants) until recovery.
    let (damaged, drained) = drain_mailbox(&h, ctl);
    let recovery = h.recover().map_err(ctx("recover"))?;
    let mut totals = ctl.totals();
    totals.overlaps += damaged;
    totals.received += drained;
    let (final_report, leaked_bytes) = final_check(&h, ctl_offset)?;
    Ok(ProcessReport {
        totals,
        recovered_participants: recovery.participants,
        recovered_blocks: recovery.blocks,
        leaked_bytes,
        final_report,
        elapsed: start.elapsed(),
    })
}
