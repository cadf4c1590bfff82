//! `matrix top NAME`: one segment's space, allocation rate and
//! participants, redrawn every interval (like `top(1)`), through a
//! participant-less view.

use crate::error::CliError;
use crate::inspect::{format_age, participant_counts};
use crate::size::format_size;
use crate::sync::Ordering::Relaxed;
use crate::view::SegmentView;
use matrix_core::Arena;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// One frame of `matrix top`.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    /// Segment name.
    pub name: String,
    /// Seconds since `top` started.
    pub elapsed_seconds: f64,
    /// Arena bytes.
    pub total_bytes: u64,
    /// Bytes in blocks that are not free.
    pub used_bytes: u64,
    /// Free bytes (free blocks, thread caches and the wilderness).
    pub free_bytes: u64,
    /// Largest payload one allocation could get now.
    pub largest_free_payload: u32,
    /// Blocks that are not free.
    pub used_blocks: u64,
    /// Allocations per second since the previous frame, from the segment's
    /// generation counter (`None` in the first frame). Threads reserve
    /// generations 1,024 at a time, so it moves in steps of 1,024 per
    /// thread: a rate, not a count.
    pub allocations_per_second: Option<f64>,
    /// Consolidations since the previous frame.
    pub consolidations: u64,
    /// Out-of-memory results since the previous frame.
    pub out_of_memory: u64,
    /// Participants alive, dead or detached, and of unknown liveness.
    pub alive: usize,
    /// Dead or detached participants.
    pub dead: usize,
    /// Participants of unknown liveness.
    pub unknown: usize,
}

struct Sample {
    at: Instant,
    generations: u64,
    consolidations: u64,
    out_of_memory: u64,
}

fn sample(view: &SegmentView) -> Sample {
    let seg = view.segment();
    // Relaxed: statistics; nothing is read on the strength of them.
    Sample {
        at: Instant::now(),
        generations: seg.generations.load(Relaxed),
        consolidations: seg.counters.consolidations.load(Relaxed),
        out_of_memory: seg.counters.out_of_memory.load(Relaxed),
    }
}

/// Runs `top` on `name`: `frames` frames (`None`: until interrupted),
/// `interval` apart, written to stdout; redrawn in place on a terminal.
pub fn top(
    name: &str,
    interval: Duration,
    frames: Option<u64>,
    json: bool,
) -> Result<(), CliError> {
    let view = crate::view::open(name)?;
    let start = Instant::now();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut previous = sample(&view);
    let mut shown = 0u64;
    loop {
        let now = sample(&view);
        let stats = view.stats()?;
        let counts = participant_counts(&view);
        let dt = now.at.duration_since(previous.at).as_secs_f64();
        let frame = Frame {
            name: name.to_owned(),
            elapsed_seconds: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            total_bytes: stats.total_bytes,
            used_bytes: stats.used_bytes,
            free_bytes: stats.free_bytes,
            largest_free_payload: stats.largest_free,
            used_blocks: stats.used_blocks,
            allocations_per_second: (shown > 0 && dt > 0.0)
                .then(|| now.generations.saturating_sub(previous.generations) as f64 / dt),
            consolidations: now.consolidations.saturating_sub(previous.consolidations),
            out_of_memory: now.out_of_memory.saturating_sub(previous.out_of_memory),
            alive: counts.alive,
            dead: counts.dead,
            unknown: counts.unknown,
        };
        let text = if json {
            serde_json::to_string(&frame).map_err(|e| CliError::Io {
                op: "encode JSON",
                err: std::io::Error::other(e),
            })? + "\n"
        } else {
            render(&frame)
        };
        let mut out = std::io::stdout().lock();
        let written = if terminal && !json {
            // Home, clear, draw: the view replaces itself.
            write!(out, "\x1b[H\x1b[2J{text}")
        } else if json || shown == 0 {
            write!(out, "{text}")
        } else {
            write!(out, "\n{text}")
        };
        written
            .and_then(|()| out.flush())
            .map_err(|err| CliError::Io {
                op: "write output",
                err,
            })?;
        drop(out);
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        previous = now;
        std::thread::sleep(interval);
    }
}

/// One frame as text.
pub fn render(f: &Frame) -> String {
    let mut out = String::new();
    let percent = if f.total_bytes == 0 {
        0.0
    } else {
        f.used_bytes as f64 * 100.0 / f.total_bytes as f64
    };
    let _ = writeln!(
        out,
        "matrix top {}    up {}",
        f.name,
        format_age(f.elapsed_seconds as u64)
    );
    let _ = writeln!(
        out,
        "used     {} of {} ({percent:.1} %) in {} blocks",
        format_size(f.used_bytes),
        format_size(f.total_bytes),
        f.used_blocks
    );
    let _ = writeln!(
        out,
        "free     {}, largest free {}",
        format_size(f.free_bytes),
        format_size(f.largest_free_payload as u64)
    );
    let rate = f
        .allocations_per_second
        .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
    let _ = writeln!(
        out,
        "ops      {rate} allocations/s (steps of 1,024 per thread), {} consolidation(s), {} out-of-memory since the last frame",
        f.consolidations, f.out_of_memory
    );
    let _ = writeln!(
        out,
        "procs    {} alive, {} dead or detached, {} unknown",
        f.alive, f.dead, f.unknown
    );
    out
}
