//! N threads of one process on one arena.

use crate::invariants::{audit, Report};
use crate::stress::control::{Control, Totals};
use crate::stress::worker::{run_worker, verify, WorkerConfig};
use crate::stress::{ctx, StressError};
use matrix_handler::{BlockToken, HandlerFunctions, MatrixHandler};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How the thread harness runs.
#[derive(Debug, Clone)]
pub struct ThreadConfig {
    /// Worker threads.
    pub threads: usize,
    /// Operations per thread.
    pub ops_per_thread: u64,
    /// Arena size in bytes.
    pub segment_size: u32,
    /// Most blocks a thread holds at once.
    pub max_live: usize,
    /// Random seed (each thread derives its own).
    pub seed: u64,
    /// Give up (and fail) if the threads have not finished by then.
    pub timeout: Duration,
}

impl Default for ThreadConfig {
    fn default() -> Self {
        ThreadConfig {
            threads: 2,
            ops_per_thread: 200_000,
            segment_size: 4 << 20,
            max_live: 256,
            seed: 1,
            timeout: Duration::from_secs(120),
        }
    }
}

/// What the thread harness saw.
#[derive(Debug, Clone)]
pub struct ThreadReport {
    /// Summed worker counters (plus blocks drained from the mailbox at the end).
    pub totals: Totals,
    /// Bytes still in use after everything was freed and consolidated,
    /// beyond the harness's own control block.
    pub leaked_bytes: u64,
    /// The checker's report after the final consolidation.
    pub final_report: Report,
    /// Wall time.
    pub elapsed: Duration,
}

/// Frees every block left in the mailbox (checking its pattern) and returns
/// how many were damaged.
pub(crate) fn drain_mailbox(h: &impl HandlerFunctions, ctl: &Control) -> (u64, u64) {
    let (mut damaged, mut drained) = (0, 0);
    for token in ctl.drain_mailbox() {
        let Ok(block) = h.block_from_token::<u8>(BlockToken::from_word(token, h.segment_nonce()))
        else {
            continue;
        };
        let intact = verify(h, &block, None).map(|(_, ok)| ok).unwrap_or(false);
        if h.free(block).is_ok() {
            drained += 1;
            if !intact {
                damaged += 1;
            }
        }
    }
    (damaged, drained)
}

/// Consolidates, checks every invariant, and measures what is still used
/// besides the control block at `ctl_offset`.
pub(crate) fn final_check(
    h: &impl HandlerFunctions,
    ctl_offset: u32,
) -> Result<(Report, u64), StressError> {
    h.consolidate().map_err(ctx("final consolidate"))?;
    let a = audit(h.matrix());
    if let Some(v) = a.violations.first() {
        return Err(StressError(format!(
            "invariants broken at the end ({} violations), first: {v}",
            a.violations.len()
        )));
    }
    let (_, ctl_size) = h
        .matrix()
        .block_header(ctl_offset - matrix_core::BLOCK_HEADER_SIZE)
        .map_err(ctx("control block"))?;
    let leaked = a.report.used_bytes.saturating_sub(ctl_size as u64);
    Ok((a.report, leaked))
}

/// Runs the thread harness on an anonymous arena.
pub fn run_threads(cfg: &ThreadConfig) -> Result<ThreadReport, StressError> {
    let start = Instant::now();
    let h = MatrixHandler::bootstrap(None, cfg.segment_size).map_err(ctx("create arena"))?;
    let ctl_offset = Control::create(&h).map_err(ctx("control block"))?;
    let (done_tx, done_rx) = mpsc::channel();
    let mut joins = Vec::new();
    for index in 0..cfg.threads.min(crate::stress::control::MAX_WORKERS) {
        let shared = h.share();
        let done = done_tx.clone();
        let wcfg = WorkerConfig {
            index,
            ops: cfg.ops_per_thread,
            max_live: cfg.max_live,
            seed: cfg.seed.wrapping_mul(1000).wrapping_add(index as u64),
            ..WorkerConfig::default()
        };
        joins.push(std::thread::spawn(move || {
            let ctl = Control::attach(&shared, ctl_offset).expect("control block");
            run_worker(&shared, ctl, &wcfg);
            let _ = done.send(());
        }));
    }
    drop(done_tx);
    let ctl = Control::attach(&h, ctl_offset)
        .ok_or_else(|| StressError::new("control block vanished"))?;
    let deadline = start + cfg.timeout;
    for _ in 0..joins.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            // Release: the workers Acquire `stop` at their next safe point.
            ctl.stop.store(1, crate::sync::Ordering::Release);
            return Err(StressError(format!(
                "threads did not finish within {:?} (a hang?)",
                cfg.timeout
            )));
        }
    }
    for j in joins {
        j.join()
            .map_err(|_| StressError::new("a worker thread panicked"))?;
    }
    let (damaged, drained) = drain_mailbox(&h, ctl);
    let mut totals = ctl.totals();
    totals.overlaps += damaged;
    totals.received += drained;
    let (final_report, leaked_bytes) = final_check(&h, ctl_offset)?;
    Ok(ThreadReport {
        totals,
        leaked_bytes,
        final_report,
        elapsed: start.elapsed(),
    })
}
