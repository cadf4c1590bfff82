//! Thread, process and crash harnesses. Runs without libtest (`harness =
//! false`) because children re-execute this binary: `main` first checks
//! whether it was started as a child. Counts grow with environment
//! variables for soak runs: `MATRIX_TESTKIT_THREAD_OPS`,
//! `MATRIX_TESTKIT_PROCESS_OPS`, `MATRIX_TESTKIT_KILLS`.

use matrix_testkit::stress::child::Launcher;
use matrix_testkit::stress::crash::{run_crash, CrashConfig};
use matrix_testkit::stress::processes::{run_processes, ProcessConfig};
use matrix_testkit::stress::threads::{run_threads, ThreadConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn threads_pattern_checked_with_cross_thread_frees() {
    let cfg = ThreadConfig {
        threads: 2,
        ops_per_thread: env_or("MATRIX_TESTKIT_THREAD_OPS", 4_000_000),
        ..ThreadConfig::default()
    };
    let r = run_threads(&cfg).unwrap();
    println!(
        "    {:?} leaked {} B in {:.1?}",
        r.totals, r.leaked_bytes, r.elapsed
    );
    assert_eq!(r.totals.overlaps, 0, "damaged blocks: {r:?}");
    assert_eq!(r.totals.errors, 0, "{r:?}");
    assert_eq!(
        r.totals.stale, 0,
        "no participant died, so no token may go stale: {r:?}"
    );
    assert!(
        r.totals.received > 1000,
        "blocks must actually cross threads: {r:?}"
    );
    assert_eq!(r.leaked_bytes, 0, "{r:?}");
}

fn threads_on_a_nearly_full_arena() {
    let cfg = ThreadConfig {
        threads: 3,
        ops_per_thread: env_or("MATRIX_TESTKIT_THREAD_OPS", 4_000_000) / 3,
        segment_size: 160 << 10,
        max_live: 96,
        seed: 9,
        ..ThreadConfig::default()
    };
    let r = run_threads(&cfg).unwrap();
    println!(
        "    {:?} leaked {} B in {:.1?}",
        r.totals, r.leaked_bytes, r.elapsed
    );
    assert_eq!(r.totals.overlaps, 0, "{r:?}");
    assert_eq!(r.totals.errors, 0, "{r:?}");
    assert!(
        r.totals.out_of_memory > 0,
        "the arena must actually run full: {r:?}"
    );
    assert_eq!(r.leaked_bytes, 0, "{r:?}");
}

fn processes_pass_blocks_by_offset() {
    let cfg = ProcessConfig {
        children: 3,
        ops_per_child: env_or("MATRIX_TESTKIT_PROCESS_OPS", 2_000_000),
        ..ProcessConfig::default()
    };
    let r = run_processes(&cfg, &Launcher::current_exe().unwrap()).unwrap();
    println!(
        "    {:?} recovered {} participants / {} blocks, leaked {} B in {:.1?}",
        r.totals, r.recovered_participants, r.recovered_blocks, r.leaked_bytes, r.elapsed
    );
    assert_eq!(r.totals.overlaps, 0, "{r:?}");
    assert_eq!(r.totals.errors, 0, "{r:?}");
    assert_eq!(r.totals.stale, 0, "{r:?}");
    assert!(
        r.totals.received > 1000,
        "blocks must actually cross processes: {r:?}"
    );
    assert_eq!(
        r.recovered_participants, 3,
        "every exited child's slot is reclaimed: {r:?}"
    );
    assert_eq!(
        r.recovered_blocks, 0,
        "children that exit cleanly leak nothing: {r:?}"
    );
    assert_eq!(r.leaked_bytes, 0, "{r:?}");
}

fn crash_kills_recover_and_account_for_every_byte() {
    let kills = env_or("MATRIX_TESTKIT_KILLS", 150).max(100);
    let cfg = CrashConfig {
        children: 2,
        parent_threads: 1,
        kills,
        ..CrashConfig::default()
    };
    let r = run_crash(&cfg, &Launcher::current_exe().unwrap(), &mut |p| {
        println!(
            "    .. {:.0?}: {} kills, {} ops",
            p.elapsed, p.kills, p.totals.ops
        )
    })
    .unwrap();
    println!(
        "    {} kills, {} checks, {} recovered blocks ({} B), stranded {} blocks ({} B, max {} per kill), repaired {}, leaked {} B, {:?} in {:.1?}",
        r.kills, r.checks, r.recovered_blocks, r.recovered_bytes, r.stranded_blocks, r.stranded_bytes,
        r.max_stranded_per_kill, r.repaired_blocks, r.leaked_bytes, r.totals, r.elapsed
    );
    assert_eq!(r.kills, kills);
    assert_eq!(r.checks, kills, "an invariant check after every kill");
    assert_eq!(r.totals.overlaps, 0, "{r:?}");
    assert_eq!(r.totals.errors, 0, "{r:?}");
    assert!(
        r.recovered_blocks > 0,
        "kills must land while children hold blocks: {r:?}"
    );
    assert!(
        r.max_stranded_per_kill <= 1,
        "a kill may strand at most one block: {r:?}"
    );
    assert_eq!(r.leaked_bytes, 0, "after repair every byte is free: {r:?}");
}

fn main() {
    if let Some(code) = matrix_testkit::stress::run_child_role() {
        std::process::exit(code);
    }
    let tests: [(&str, fn()); 4] = [
        (
            "threads_pattern_checked_with_cross_thread_frees",
            threads_pattern_checked_with_cross_thread_frees,
        ),
        (
            "threads_on_a_nearly_full_arena",
            threads_on_a_nearly_full_arena,
        ),
        (
            "processes_pass_blocks_by_offset",
            processes_pass_blocks_by_offset,
        ),
        (
            "crash_kills_recover_and_account_for_every_byte",
            crash_kills_recover_and_account_for_every_byte,
        ),
    ];
    matrix_testkit::stress::run_tests(&tests);
}
