//! Every kill window, deterministically: a child arms one crash point of
//! matrix-core (feature `fault-injection`), runs a workload until it
//! SIGKILLs itself there, and the parent checks what is left: `recover()`
//! reclaims the dead participant, no invariant is broken except at most one
//! stranded block, and `repair()` then accounts for every byte.
//! `harness = false`: children re-execute this binary.

use matrix_core::fault;
use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_testkit::audit;
use matrix_testkit::segment::SegmentName;
use matrix_testkit::stress::child::{env_var, Launcher};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const ROLE: &str = "crash-point";

/// The child: open the segment, arm the point, and churn until killed.
fn child() -> Result<(), String> {
    let name: String = env_var("MTK_SEGMENT")?;
    let point: u32 = env_var("MTK_POINT")?;
    let skip: u32 = env_var("MTK_SKIP")?;
    let h = MatrixHandler::open(&name).map_err(|e| e.to_string())?;
    fault::arm(point, skip);
    let mut rng = fastrand::Rng::with_seed(point as u64 * 100 + skip as u64);
    let mut live = Vec::new();
    for round in 0..2_000 {
        for _ in 0..24 {
            let n = if rng.u32(0..8) == 0 {
                rng.usize(2048..40_000)
            } else {
                rng.usize(0..1024)
            };
            if let Ok(b) = h.allocate_slice::<u8>(n) {
                live.push(b);
            }
        }
        // Free a random half, and the newest block (which borders the
        // wilderness) so consolidations retract.
        for _ in 0..live.len() / 2 {
            let b = live.swap_remove(rng.usize(0..live.len()));
            h.free(b).map_err(|e| e.to_string())?;
        }
        if let Some(b) = live.pop() {
            h.free(b).map_err(|e| e.to_string())?;
        }
        if round % 3 == 2 {
            h.consolidate().map_err(|e| e.to_string())?;
        }
    }
    Err(format!(
        "crash point {point} (skip {skip}) was never reached"
    ))
}

fn point_name(p: u32) -> &'static str {
    match p {
        fault::ALLOC_POPPED => "ALLOC_POPPED",
        fault::ALLOC_SPLITTING => "ALLOC_SPLITTING",
        fault::CARVED => "CARVED",
        fault::CARVE_WRITTEN => "CARVE_WRITTEN",
        fault::RETIRED => "RETIRED",
        fault::RELEASE_OWNER => "RELEASE_OWNER",
        fault::RELEASE_FREE => "RELEASE_FREE",
        fault::CONSOLIDATE_POPPED => "CONSOLIDATE_POPPED",
        fault::CONSOLIDATE_MERGING => "CONSOLIDATE_MERGING",
        fault::RETRACTING => "RETRACTING",
        fault::CACHE_TAKEN => "CACHE_TAKEN",
        _ => "?",
    }
}

/// Kills a child at `point` (its `skip + 1`-th arrival) and checks the aftermath.
/// Returns the number of blocks the kill stranded.
fn kill_at(point: u32, skip: u32) -> Result<u64, String> {
    let name = SegmentName::new("crashpt");
    let h = MatrixHandler::create(name.as_str(), 4 << 20).map_err(|e| e.to_string())?;
    let launcher = Launcher::current_exe().map_err(|e| e.to_string())?;
    let mut child = launcher
        .spawn(
            ROLE,
            &[
                ("MTK_SEGMENT", name.as_str().to_owned()),
                ("MTK_POINT", point.to_string()),
                ("MTK_SKIP", skip.to_string()),
            ],
        )
        .map_err(|e| e.to_string())?;
    let status = child
        .wait_timeout(Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    match status {
        Some(s) if s.signal() == Some(libc::SIGKILL) => {}
        Some(s) => return Err(format!("child did not die at the point: {s}")),
        None => return Err("child still running after 60 s".into()),
    }
    let rec = h.recover().map_err(|e| format!("recover: {e}"))?;
    if rec.participants != 1 {
        return Err(format!(
            "recover reclaimed {} participants: {rec:?}",
            rec.participants
        ));
    }
    let a = audit(h.matrix());
    let hard: Vec<String> = a.hard_violations().map(|v| v.to_string()).collect();
    if !hard.is_empty() {
        return Err(format!("after recovery: {}", hard.join("; ")));
    }
    let stranded = a.report.stranded_blocks;
    h.matrix()
        .repair(false)
        .map_err(|e| format!("repair: {e}"))?;
    h.consolidate().map_err(|e| e.to_string())?;
    let a = audit(h.matrix());
    if !a.violations.is_empty()
        || a.report.used_bytes != 0
        || a.report.free_bytes != a.report.arena_bytes
    {
        return Err(format!("after repair: {:?} {:?}", a.violations, a.report));
    }
    Ok(stranded)
}

fn every_window_recovers_with_at_most_one_stranded_block() {
    let mut failures = Vec::new();
    for point in fault::ALL {
        let mut stranded = Vec::new();
        for skip in [0u32, 3, 17] {
            match kill_at(point, skip) {
                Ok(s) => stranded.push(s),
                Err(e) => failures.push(format!("{} (skip {skip}): {e}", point_name(point))),
            }
        }
        println!(
            "    {:<20} stranded per kill {stranded:?}",
            point_name(point)
        );
        if stranded.iter().any(|&s| s > 1) {
            failures.push(format!(
                "{}: more than one block stranded by one kill: {stranded:?}",
                point_name(point)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn main() {
    if std::env::var(matrix_testkit::stress::child::ENV_ROLE).as_deref() == Ok(ROLE) {
        matrix_testkit::stress::child::bind_to_parent();
        if let Err(e) = child() {
            eprintln!("crash-point child: {e}");
            std::process::exit(2);
        }
        std::process::exit(0);
    }
    let tests: [(&str, fn()); 1] = [(
        "every_window_recovers_with_at_most_one_stranded_block",
        every_window_recovers_with_at_most_one_stranded_block,
    )];
    matrix_testkit::stress::run_tests(&tests);
}
