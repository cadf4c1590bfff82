//! `soak`: the crash harness for a fixed time, with progress and a summary.
//!
//! ```text
//! cargo run --release -p matrix-testkit --bin soak -- --seconds 60 --threads 2 --processes 2 --kills 20
//! ```
//!
//! `--processes` child processes and `--threads` threads of this process run
//! pattern-checked workers on one named segment, passing blocks by offset;
//! `--kills` children are SIGKILLed at random moments spread over the run,
//! each followed by `recover()` and a full invariant check at quiescence
//! (one kill in `--early-kill-every` hits a child 1–4 ms into its life). At
//! the end everything stops, the segment is repaired and consolidated, and
//! every byte must be free again. Exit status 0 only with no damaged block,
//! no violation and no leaked byte.

use clap::Parser;
use matrix_testkit::stress::child::Launcher;
use matrix_testkit::stress::crash::{run_crash, CrashConfig, Progress};
use std::time::Duration;

/// Soak the allocator: threads, processes and SIGKILLs on one segment.
#[derive(Parser, Debug)]
#[command(name = "soak", version, about)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Worker threads in this process.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Worker child processes.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Children to SIGKILL over the run.
    #[arg(long, default_value_t = 20)]
    kills: u64,
    /// Segment size in MiB.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..4096))]
    segment_mib: u32,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress: u64,
    /// One kill in this many hits a child 1–4 ms into its life (0: never).
    #[arg(long, default_value_t = 3)]
    early_kill_every: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if let Some(code) = matrix_testkit::stress::run_child_role() {
        std::process::exit(code);
    }
    let args = Args::parse();
    let cfg = CrashConfig {
        children: args.processes,
        parent_threads: args.threads,
        kills: args.kills,
        duration: Some(Duration::from_secs(args.seconds)),
        segment_size: args.segment_mib << 20,
        seed: args.seed,
        progress_every: Duration::from_secs(args.progress.max(1)),
        early_kill_every: args.early_kill_every,
        ..CrashConfig::default()
    };
    println!(
        "soak: {} s, {} threads, {} processes, {} kills, {} MiB segment, seed {}",
        args.seconds, args.threads, args.processes, args.kills, args.segment_mib, args.seed
    );
    let mut max_fragmentation = 0.0f64;
    let mut on_progress = |p: &Progress| {
        max_fragmentation = max_fragmentation.max(p.fragmentation);
        println!(
            "[{:>4.0}s] ops {:>11}  kills {:>3}/{}  checks {:>3}  overlaps {}  stale tokens {}  stranded {}  free {:.2} MiB  fragmentation {:.3}",
            p.elapsed.as_secs_f64(),
            p.totals.ops,
            p.kills,
            args.kills,
            p.checks,
            p.totals.overlaps,
            p.totals.stale,
            p.stranded_blocks,
            mib(p.free_bytes),
            p.fragmentation
        );
    };
    let launcher = match Launcher::current_exe() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("soak: cannot find this executable: {e}");
            std::process::exit(2);
        }
    };
    let report = match run_crash(&cfg, &launcher, &mut on_progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: FAILED: {e}");
            std::process::exit(1);
        }
    };
    let t = &report.totals;
    let f = &report.final_report;
    println!("soak summary ({:.1} s)", report.elapsed.as_secs_f64());
    println!("  ops                {}", t.ops);
    println!("  allocations/frees  {} / {}", t.allocations, t.frees);
    println!(
        "  blocks passed      {} sent, {} received, {} tokens stale after a kill",
        t.sent, t.received, t.stale
    );
    println!("  overlaps           {}", t.overlaps);
    println!("  errors             {}", t.errors);
    println!("  leaked bytes       {}", report.leaked_bytes);
    println!(
        "  recoveries         {} participants, {} blocks ({:.2} MiB) reclaimed after {} kills",
        report.recoveries,
        report.recovered_blocks,
        mib(report.recovered_bytes),
        report.kills
    );
    println!(
        "  invariant checks   {} passed at quiescence",
        report.checks
    );
    println!(
        "  stranded           {} blocks ({} B) after online recovery, at most {} per kill",
        report.stranded_blocks, report.stranded_bytes, report.max_stranded_per_kill
    );
    println!(
        "  fragmentation      {:.3} worst seen while running, {:.3} at the end ({} free blocks, {:.2} MiB free)",
        max_fragmentation,
        f.fragmentation,
        f.free_blocks,
        mib(f.free_bytes)
    );
    let clean = t.overlaps == 0
        && t.errors == 0
        && report.leaked_bytes == 0
        && report.stranded_blocks == 0
        && report.max_stranded_per_kill == 0;
    println!(
        "  verdict            {}",
        if clean { "PASS" } else { "FAIL" }
    );
    std::process::exit(if clean { 0 } else { 1 });
}
