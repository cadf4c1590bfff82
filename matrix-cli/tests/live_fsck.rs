//! `matrix fsck` against a segment that several processes churn while it
//! checks: no false alarm (no CORRUPT, no LEAK) in many runs, and a real
//! leak planted during the churn is still found.

mod common;

use common::{matrix, unique, ChildGuard, ShmGuard};
use matrix_core::state::{self, FREE};
use matrix_core::{AtomicMatrix, OwnerId, BLOCK_HEADER_SIZE};
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const CHURN_ENV: &str = "MATRIX_CLI_TEST_CHURN";
/// Processes churning the segment during the checks.
const CHURNERS: usize = 3;
/// fsck runs against the churning segment.
const RUNS: usize = 20;

/// Not a test of its own: the body of a churning child. It attaches to the
/// segment named in `MATRIX_CLI_TEST_CHURN` and allocates and frees random
/// sizes (with an occasional consolidation) until it is killed, or its
/// parent dies, or two minutes pass.
#[test]
#[ignore = "helper run in a child process by the live fsck tests"]
fn churn_until_killed() {
    let Ok(name) = std::env::var(CHURN_ENV) else {
        return;
    };
    // SAFETY: prctl with PR_SET_PDEATHSIG only sets this process's own
    // signal on parent death; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let matrix = AtomicMatrix::open(&name).expect("child: open the segment");
    let mut rng = fastrand::Rng::with_seed(std::process::id() as u64);
    let mut live: Vec<u32> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut ops = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            if live.len() < 600 && (live.is_empty() || rng.u32(0..10) < 6) {
                match matrix.allocate(rng.u64(16..1500), 0) {
                    Ok(p) => live.push(p.offset() - BLOCK_HEADER_SIZE),
                    Err(_) => {
                        for h in live.drain(..live.len() / 2) {
                            matrix.free(h, None).expect("child: free");
                        }
                    }
                }
            } else {
                let i = rng.usize(0..live.len());
                matrix.free(live.swap_remove(i), None).expect("child: free");
            }
            ops += 1;
        }
        if rng.u32(0..64) == 0 {
            let _ = matrix.consolidate();
        }
        if ops == 256 * 8 {
            println!("ready {}", std::process::id());
        }
    }
}

fn spawn_churner(name: &str) -> ChildGuard {
    let exe = std::env::current_exe().expect("test binary path");
    common::spawn_until_ready(
        Command::new(exe)
            .args([
                "--exact",
                "churn_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHURN_ENV, name),
        "churner",
    )
}

/// Problem findings (leak or corruption) of a fsck JSON report.
fn problems(report: &Value) -> Vec<Value> {
    report["before"]["findings"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|f| f["severity"] != "note")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn churning_segment(label: &str) -> (String, ShmGuard, Vec<ChildGuard>) {
    let name = unique(label);
    let guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "8MiB"]).expect(0);
    let churners = (0..CHURNERS).map(|_| spawn_churner(&name)).collect();
    (name, guard, churners)
}

#[test]
fn fsck_on_a_churning_segment_never_cries_wolf() {
    let (name, _guard, mut churners) = churning_segment("churn");
    let mut conclusive = 0;
    for run in 0..RUNS {
        let out = matrix(&["fsck", &name, "--json"]);
        let report = out.json();
        assert!(
            out.code == Some(0) || out.code == Some(3),
            "run {run}: exit {:?}, problems {:#?}",
            out.code,
            problems(&report)
        );
        assert_eq!(problems(&report), Vec::<Value>::new(), "run {run}");
        assert_eq!(report["before"]["live_participants"], CHURNERS, "run {run}");
        if out.code == Some(0) {
            conclusive += 1;
            assert_eq!(report["clean"], true);
        } else {
            assert_eq!(report["inconclusive"], true, "run {run}");
        }
        // The text form says the same.
        if run == 0 {
            let text = matrix(&["fsck", &name]);
            assert!(!text.stdout.contains("CORRUPT"), "{}", text.stdout);
            assert!(!text.stdout.contains("LEAK"), "{}", text.stdout);
        }
    }
    assert!(conclusive > 0, "every one of {RUNS} runs was inconclusive");
    for c in &mut churners {
        assert!(c.kill().is_some(), "a churner died during the checks");
    }
}

#[test]
fn a_leak_planted_during_the_churn_is_found() {
    let (name, _guard, mut churners) = churning_segment("plant");
    // What a participant killed between a pop and its claim leaves: a FREE
    // block that no free list holds.
    let planter = AtomicMatrix::open(&name).expect("open the segment");
    let header = planter.allocate(1000, 0).unwrap().offset() - BLOCK_HEADER_SIZE;
    let hdr = planter.block_header(header).unwrap().0;
    let generation = state::generation_of(hdr.state.load(Relaxed));
    hdr.state
        .store(state::pack(generation, OwnerId::SEGMENT.0, FREE), Relaxed);

    let mut found = None;
    for _ in 0..5 {
        let out = matrix(&["fsck", &name, "--json"]);
        if out.code == Some(3) {
            continue;
        }
        found = Some((out.code, out.json()));
        break;
    }
    let (code, report) = found.expect("five inconclusive runs in a row");
    assert_eq!(code, Some(1), "{report:#}");
    let problems = problems(&report);
    assert_eq!(problems.len(), 1, "exactly the planted leak: {problems:#?}");
    assert_eq!(problems[0]["kind"], "stranded-free-block");
    assert_eq!(problems[0]["offset"], header);
    for c in &mut churners {
        assert!(c.kill().is_some(), "a churner died during the checks");
    }
    drop(planter);
}

#[test]
fn a_churner_killed_during_the_churn_is_found_as_a_leak() {
    let (name, _guard, mut churners) = churning_segment("killed");
    let mut victim = churners.pop().expect("churners");
    victim.kill().expect("the victim was running");
    let mut found = None;
    for _ in 0..5 {
        let out = matrix(&["fsck", &name, "--json"]);
        if out.code == Some(3) {
            continue;
        }
        found = Some((out.code, out.json()));
        break;
    }
    let (code, report) = found.expect("five inconclusive runs in a row");
    assert_eq!(code, Some(1), "{report:#}");
    let problems = problems(&report);
    assert!(!problems.is_empty(), "{report:#}");
    // What a process killed at any instant can leave: blocks it held, and
    // (killed mid-operation) a carve, a pop or a consolidation unfinished.
    let left_by_a_death = [
        "held-by-departed",
        "dead-carve-intent",
        "dead-hold-intent",
        "unfinished-carve",
        "stranded-free-block",
        "stranded-transient-block",
        "dead-consolidator",
    ];
    for p in &problems {
        assert!(
            left_by_a_death.contains(&p["kind"].as_str().unwrap()),
            "not the dead churner's leftovers: {p:#}"
        );
    }
    let held = problems
        .iter()
        .find(|p| p["kind"] == "held-by-departed")
        .expect("the dead churner held blocks");
    assert!(held["blocks"].as_u64().unwrap() > 0, "{held:#}");
    assert_eq!(report["before"]["live_participants"], CHURNERS - 1);
    // Recovered online while the others keep churning.
    let repaired = matrix(&["fsck", &name, "--repair", "--json"]);
    let json = repaired.json();
    assert_eq!(json["repair"]["recovered_participants"], 1, "{json:#}");
    assert!(
        repaired.code == Some(0) || repaired.code == Some(3),
        "{json:#}"
    );
    for c in &mut churners {
        assert!(c.kill().is_some(), "a churner died during the checks");
    }
}
