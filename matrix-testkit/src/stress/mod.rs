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
    let result = match role.as_str() {
        processes::ROLE => processes::child_main(),
        crash::ROLE => crash::child_main(),
        hostile::ROLE => hostile::child_main(),
        other => Err(format!("unknown role {other}")),
    };
    Some(match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child {} ({role}): {e}", std::process::id());
            2
        }
    })
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
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, test) in chosen {
        let start = std::time::Instant::now();
        println!("test {name} ...");
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok ({:.1?})", start.elapsed()),
            Err(_) => {
                println!("test {name} ... FAILED ({:.1?})", start.elapsed());
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} failed: {failed:?}",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    std::process::exit(if failed.is_empty() { 0 } else { 101 });
}
