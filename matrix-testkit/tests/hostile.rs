//! Hostile segments: at least 10,000 proptest cases of random corruption of
//! the segment header and block headers, each followed by open / allocate /
//! write / free / walk / consolidate / recover through the safe API. Cases
//! run in batches in child processes, so a panic, hang, SIGSEGV or SIGBUS is
//! caught and reported with the case that caused it. `harness = false`:
//! children re-execute this binary. `MATRIX_TESTKIT_HOSTILE_CASES` raises
//! the count.

use matrix_testkit::stress::child::Launcher;
use matrix_testkit::stress::hostile::{run_case, run_hostile, HostileCase, HostileConfig};

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_corruption_never_crashes_the_safe_api() {
    let cases = env_or("MATRIX_TESTKIT_HOSTILE_CASES", 10_000).max(10_000);
    let cfg = HostileConfig {
        cases,
        ..HostileConfig::default()
    };
    let r = run_hostile(&cfg, &Launcher::current_exe().unwrap()).unwrap();
    println!("    {} batches, {:?}", r.batches, r.outcomes);
    assert_eq!(r.outcomes.cases, cases as u64, "every case ran: {r:?}");
    assert_eq!(r.outcomes.out_of_bounds, 0, "{r:?}");
    // The corruption must be felt: opens refused, operations refused, walks stopped.
    assert!(
        r.outcomes.open_refused > 0 && r.outcomes.refused > 0 && r.outcomes.walk_errors > 0,
        "{r:?}"
    );
    assert!(r.outcomes.allocations > cases as u64, "{r:?}");
}

fn a_batch_that_crashes_is_reported() {
    // The harness itself must notice a child that dies: run a batch whose
    // child is killed from outside by a zero timeout.
    let cfg = HostileConfig {
        cases: 400,
        batch: 400,
        parallel: 1,
        batch_timeout: std::time::Duration::ZERO,
        ..HostileConfig::default()
    };
    let err = run_hostile(&cfg, &Launcher::current_exe().unwrap()).unwrap_err();
    assert!(err.to_string().contains("hung"), "{err}");
}

fn uncorrupted_case_is_clean() {
    let o = run_case(&HostileCase {
        setup: 5,
        reopen: false,
        writes: Vec::new(),
        ops: 6,
    });
    assert_eq!(
        (o.out_of_bounds, o.overlaps, o.walk_errors),
        (0, 0, 0),
        "{o:?}"
    );
    assert!(o.allocations > 0);
}

fn main() {
    if let Some(code) = matrix_testkit::stress::run_child_role() {
        std::process::exit(code);
    }
    let tests: [(&str, fn()); 3] = [
        ("uncorrupted_case_is_clean", uncorrupted_case_is_clean),
        (
            "a_batch_that_crashes_is_reported",
            a_batch_that_crashes_is_reported,
        ),
        (
            "random_corruption_never_crashes_the_safe_api",
            random_corruption_never_crashes_the_safe_api,
        ),
    ];
    matrix_testkit::stress::run_tests(&tests);
}
