//! Stress harnesses: threads, processes, crash injection, hostile segments.
//!
//! Each harness is a library function returning a report, so tests assert
//! on it and the `soak` binary runs it longer. Children are the current
//! executable re-run in a role ([`child::Launcher`]); a program that uses
//! the process harnesses calls [`run_child_role`] first thing in `main`.

pub mod child;
pub mod control;
pub mod crash;
pub mod hostile;
pub mod processes;
pub mod threads;
pub mod worker;
pub mod workload;

pub use workload::{
    register_role, register_worker, run_crash_on, run_hostile_on, run_processes_on, run_threads_on,
    CheckPoint, HostileOutcome, WorkerContext, WorkloadConfig, WorkloadReport,
};

use std::fmt;

/// A harness could not run, or found the allocator wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StressError(pub String);

impl fmt::Display for StressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StressError {}

impl StressError {
    pub(crate) fn new(what: impl Into<String>) -> Self {
        StressError(what.into())
    }
}

/// Wraps any displayable error with context.
pub(crate) fn ctx<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StressError {
    move |e| StressError(format!("{what}: {e}"))
}

/// If this process was started as a harness child, runs its role and
/// returns the exit code; `None` in an ordinary process.
///
/// The role is the value of the environment variable
/// [`child::ENV_ROLE`] (`MATRIX_TESTKIT_ROLE`), set by [`child::Launcher`]:
/// roles registered with [`register_role`] / [`register_worker`] first,
/// then the built-in ones. An unknown role exits with 2.
///
/// ```no_run
/// // First thing in `main`:
/// if let Some(code) = matrix_testkit::stress::run_child_role() {
///     std::process::exit(code);
/// }
/// // ... the program proper
/// ```
pub fn run_child_role() -> Option<i32> {
    let role = std::env::var(child::ENV_ROLE).ok()?;
    child::bind_to_parent();
    let result = match workload::run_registered(&role) {
        Some(result) => result,
        None => builtin_role(&role),
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child {} ({role}): {e}", std::process::id());
            2
        }
    })
}

fn builtin_role(role: &str) -> Result<(), String> {
    match role {
        processes::ROLE => processes::child_main(),
        crash::ROLE => crash::child_main(),
        hostile::ROLE => hostile::child_main(),
        other => Err(format!(
            "unknown role {other} (register it with register_role)"
        )),
    }
}

/// A minimal test runner for `harness = false` test binaries: runs the
/// named tests whose names contain every non-flag argument, prints libtest-
/// like lines, and exits non-zero if any failed. `--list` lists them.
pub fn run_tests(tests: &[(&str, fn())]) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        std::process::exit(0);
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(n, _)| filters.iter().all(|f| n.contains(f.as_str())))
        .collect();
    let filtered_out = tests.len() - chosen.len();
    let plural = if chosen.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", chosen.len());
    let start = std::time::Instant::now();
    let mut failed = Vec::new();
    for (name, test) in chosen.iter().copied() {
        let took = std::time::Instant::now();
        let outcome = std::panic::catch_unwind(test);
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!("test {name} ... {verdict} ({:.1?})", took.elapsed());
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    // The closing line in libtest's words, so tools that sum them count these.
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        chosen.len() - failed.len(),
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    std::process::exit(if failed.is_empty() { 0 } else { 101 });
}
