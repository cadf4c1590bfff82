//! # matrix-bench
//!
//! Side-by-side benchmarks of this workspace's allocator against `rlsf`
//! (alone and behind a `Mutex`), the system allocator and `atomic-matrix`
//! 0.4.1, on the same workloads, in one run.
//!
//! ```text
//! cargo run --release -p matrix-bench -- [--quick] [--json FILE] [--verify]
//! cargo run --release -p matrix-bench -- --single ours pair64 --ops 1000000
//! ```
//!
//! The first form is the parent: it plans the rows (`plan`), re-executes
//! itself once per contender × workload × repetition (`runner`), and
//! prints the tables (`report`). The second form is one child (`child`):
//! one contender, one workload, a fixed op count — also what
//! `callgrind.sh` profiles.

mod child;
mod clock;
mod contenders;
mod dynamic;
mod lto;
mod machine;
mod plan;
mod plots;
mod report;
mod runner;
mod targets;
mod touch;
mod workload;

use clap::Parser;
use contenders::Contender;
use plan::{Mode, Plan};
use report::Report;
use runner::Runner;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use workload::{Kind, Spec};

/// Side-by-side allocator benchmarks: ours, rlsf, rlsf + Mutex, system malloc, atomic-matrix 0.4.1.
#[derive(Parser, Debug)]
#[command(name = "matrix-bench", version)]
struct Args {
    /// Short runs and 5 repetitions (under 2 minutes).
    #[arg(long)]
    quick: bool,
    /// Only the dynamic-container rows (ShmVec / ShmString vs Vec / String)
    #[arg(long)]
    dynamic: bool,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Fill every byte of every block and check it before free (not timed);
    /// any mismatch fails the run.
    #[arg(long)]
    verify: bool,
    /// Only these contenders (comma-separated keys: ours, rlsf, rlsf-mutex, system, atomic-matrix).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    contenders: Option<Vec<String>>,
    /// Only the rows whose label contains TEXT (e.g. "mixed", "MiB arena").
    #[arg(long, value_name = "TEXT")]
    rows: Option<String>,
    /// Leave out the rows whose arena is above SIZE (suffixes k, m, g),
    /// e.g. the 1 GiB and 3.9 GiB scaling rows in a quick check.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_arena: Option<u64>,
    /// Repetitions (default: 5 with --quick, 9 otherwise, 1 with --verify).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Run the children from this binary as it was built, instead of
    /// building them with the `bench-lto` profile (LTO, one codegen unit).
    #[arg(long)]
    no_lto: bool,
    /// Also draw the run's PNG plots into DIR (e.g. `docs`).
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Only draw the plots of a saved JSON run (needs --plots DIR); runs nothing.
    #[arg(long, value_name = "FILE", requires = "plots")]
    plots_from: Option<PathBuf>,

    /// Run one contender on one workload in this process and print its
    /// result line (workloads: pair64, size, mixed, handoff).
    #[arg(long, num_args = 2, value_names = ["CONTENDER", "WORKLOAD"])]
    single: Option<Vec<String>>,
    /// --single: timed ops (all threads together).
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// --single: untimed ops first (pair64, size, handoff; mixed: churn steps after the fill).
    #[arg(long)]
    warmup: Option<u64>,
    /// --single: threads (mixed: 1 or more; handoff is always 2).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// --single: block size of `size` (suffixes k, m, g).
    #[arg(long, default_value = "64", value_parser = parse_bytes)]
    size: u64,
    /// --single: segment / pool size (suffixes k, m, g).
    #[arg(long, default_value = "64m", value_parser = parse_bytes)]
    arena: u64,
    /// --single: live-set cap per thread of `mixed`.
    #[arg(long, default_value_t = plan::MIXED_LIVE)]
    live: usize,
    /// --single: processes attached to ours' segment, this one included
    /// (the others are started here; every other one allocates).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Stay attached to segment NAME until stdin closes (a helper of --processes).
    #[arg(long, value_name = "NAME", hide = true)]
    attach: Option<String>,
    /// --attach: allocate and free small blocks while attached.
    #[arg(long, hide = true)]
    allocating: bool,
    /// --single: name of the /dev/shm segment (default: unique per process).
    #[arg(long, value_name = "NAME")]
    shm_name: Option<String>,
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let n: u64 = digits.parse().map_err(|e| format!("{text}: {e}"))?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        other => return Err(format!("unknown unit {other:?} (use k, m or g)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is too large"))
}

fn main() {
    let args = Args::parse();
    if args.dynamic {
        std::process::exit(dynamic::run());
    }
    if let Some(name) = &args.attach {
        contenders::ours::attached_helper(name, args.allocating);
        return;
    }
    if let (Some(from), Some(dir)) = (&args.plots_from, &args.plots) {
        let doc = std::fs::read_to_string(from)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()));
        match doc {
            Ok(doc) => std::process::exit(draw(&doc, dir)),
            Err(e) => {
                eprintln!("cannot read {}: {e}", from.display());
                std::process::exit(2);
            }
        }
    }
    match &args.single {
        Some(pair) => single(&args, &pair[0], &pair[1]),
        None => std::process::exit(parent(&args)),
    }
}

/// Draws the plots of a JSON run into `dir`; returns the exit status.
fn draw(doc: &serde_json::Value, dir: &std::path::Path) -> i32 {
    match plots::render(doc, dir) {
        Ok(files) => {
            for file in files {
                eprintln!("wrote {}", file.display());
            }
            0
        }
        Err(e) => {
            eprintln!("cannot draw the plots into {}: {e}", dir.display());
            1
        }
    }
}

/// `--single`: one run in this process.
fn single(args: &Args, contender: &str, workload: &str) {
    let Some(contender) = Contender::parse(contender) else {
        eprintln!(
            "unknown contender {contender:?}; one of ours, rlsf, rlsf-mutex, system, atomic-matrix"
        );
        std::process::exit(2);
    };
    let Some(kind) = Kind::parse(workload) else {
        eprintln!("unknown workload {workload:?}; one of pair64, size, mixed, handoff");
        std::process::exit(2);
    };
    let threads = if kind == Kind::Handoff {
        2
    } else {
        args.threads.max(1)
    };
    let size = if kind == Kind::Pair64 {
        64
    } else {
        args.size as usize
    };
    let warmup = args.warmup.unwrap_or(if kind == Kind::Mixed {
        0
    } else {
        args.ops / 10
    });
    let spec = Spec {
        kind,
        threads,
        size,
        arena: args.arena,
        live: args.live,
        ops: args.ops,
        warmup,
        processes: args.processes.max(1),
    };
    let name = args
        .shm_name
        .clone()
        .unwrap_or_else(|| format!("matrix-bench-{}-single", std::process::id()));
    let outcome = child::run(contender, &spec, args.verify, &name);
    eprintln!(
        "{} {}: {:.2} ns/op over {} ops{}",
        contender.key(),
        runner::describe(&spec),
        outcome.ns_per_op(),
        outcome.ops,
        outcome.free_blocks_after.map_or(String::new(), |n| format!(
            ", {n} free block(s) after free-all + consolidate"
        ))
    );
}

/// The whole run; returns the exit status.
fn parent(args: &Args) -> i32 {
    let started = Instant::now();
    let mode = match (args.verify, args.quick) {
        (true, _) => Mode::Verify,
        (false, true) => Mode::Quick,
        (false, false) => Mode::Full,
    };
    let budget = mode.budget();
    let mut machine = machine::Machine::detect();
    let mem_available = machine::meminfo("MemAvailable:").unwrap_or(machine.memory_bytes);
    let mut plan = Plan::new(mode, machine.shm_free_bytes, mem_available);
    if let Some(filter) = &args.rows {
        plan.retain_rows(filter);
    }
    if let Some(max) = args.max_arena {
        plan.cap_arena(max);
    }
    let only = match &args.contenders {
        None => None,
        Some(keys) => {
            let mut list = Vec::new();
            for key in keys {
                match Contender::parse(key) {
                    Some(c) => list.push(c),
                    None => {
                        eprintln!("unknown contender {key:?}");
                        return 2;
                    }
                }
            }
            Some(list)
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this program's path to start children: {e}");
            return 2;
        }
    };
    let (exe, build) = if args.no_lto {
        (exe, lto::Build::ThisBinary)
    } else {
        match lto::build_children(&exe) {
            Ok(child) => (child, lto::Build::Lto),
            Err(e) => {
                eprintln!(
                    "cannot build the LTO children ({e}); pass --no-lto to measure this binary"
                );
                return 2;
            }
        }
    };
    machine.build = build.describe().to_owned();
    let runner = Runner {
        exe: &exe,
        verify: args.verify,
        timeout: Duration::from_secs(budget.timeout_s),
        only,
    };
    let reps = args.reps.unwrap_or(budget.reps).max(1);
    let results = runner.run(&plan, reps);
    machine.load_at_end = machine::load_average();
    let command = command_line();
    let report = Report {
        command: &command,
        mode,
        machine: &machine,
        plan: &plan,
        results: &results,
        elapsed_s: started.elapsed().as_secs_f64(),
        reps,
    };
    println!("{}", report.markdown());
    let json = report.json();
    println!("\n#### JSON\n\n```json\n{json}\n```");
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, &json) {
            eprintln!("cannot write {}: {e}", path.display());
            return 1;
        }
    }
    if let Some(dir) = &args.plots {
        let doc = serde_json::from_str(&json).expect("the report's own JSON parses");
        if draw(&doc, dir) != 0 {
            return 1;
        }
    }
    for failure in report.failures() {
        eprintln!("FAILED: {failure}");
    }
    if mode == Mode::Verify && report.ours_failed() {
        eprintln!("VERIFY FAILED: our allocator failed a workload (see above)");
        return 1;
    }
    0
}

/// How this run was started, as a cargo command.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        "cargo run --release -p matrix-bench".to_owned()
    } else {
        format!("cargo run --release -p matrix-bench -- {}", args.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(parse_bytes("64"), Ok(64));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("3x").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
