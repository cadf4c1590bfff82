//! The benchmark program end to end: a child run, the parent's table, a
//! crash reported as a crash, `--verify` on our allocator.
//!
//! Every run of the program has a timeout (and is killed and reaped when
//! it expires); segment names are unique per test and removed by a guard.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_matrix-bench");

/// Removes a /dev/shm segment (and the peer's `matrix-` variant) on drop,
/// also when the test panics.
struct ShmGuard(String);

impl ShmGuard {
    fn new(test: &str) -> ShmGuard {
        // Relaxed: only uniqueness matters, not ordering with anything.
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        ShmGuard(format!(
            "matrix-bench-test-{}-{n}-{test}",
            std::process::id()
        ))
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
        let _ = std::fs::remove_file(format!("/dev/shm/matrix-{}", self.0));
    }
}

/// Kills and reaps the child unless it was reaped already.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    pid: u32,
}

/// Runs the program with a deadline; panics (after killing it) if it is late.
fn run(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the benchmark program starts");
    let pid = child.id();
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let mut reaper = Reaper(Some(child));
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        let child = reaper.0.as_mut().expect("not reaped yet");
        if let Some(status) = child.try_wait().expect("try_wait works") {
            reaper.0 = None;
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "matrix-bench {args:?} did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        pid,
    }
}

fn result_line(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MATRIX-BENCH-RESULT "))
        .unwrap_or_else(|| panic!("no result line in {stdout:?}"));
    serde_json::from_str(line).expect("the result line is JSON")
}

fn leftover_segments(parent_pid: u32) -> Vec<String> {
    let prefix = format!("matrix-bench-{parent_pid}-");
    std::fs::read_dir(Path::new("/dev/shm"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.trim_start_matches("matrix-").starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_single_run_prints_its_result_and_removes_its_segment() {
    let shm = ShmGuard::new("single");
    let out = run(
        &[
            "--single",
            "ours",
            "pair64",
            "--ops",
            "20000",
            "--arena",
            "4m",
            "--shm-name",
            &shm.0,
        ],
        &[],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let result = result_line(&out.stdout);
    assert_eq!(result["ops"], 20000);
    assert!(result["elapsed_ns"].as_u64().unwrap() > 0);
    assert!(
        !Path::new(&format!("/dev/shm/{}", shm.0)).exists(),
        "the segment outlived the run"
    );
}

#[test]
fn a_mixed_run_leaves_one_free_block_after_free_all_and_consolidation() {
    for threads in ["1", "2"] {
        let shm = ShmGuard::new("mixed");
        let out = run(
            &[
                "--single",
                "ours",
                "mixed",
                "--threads",
                threads,
                "--ops",
                "100000",
                "--live",
                "2000",
                "--arena",
                "16m",
                "--shm-name",
                &shm.0,
            ],
            &[],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", out.stderr);
        assert_eq!(
            result_line(&out.stdout)["free_blocks_after"],
            1,
            "{threads} thread(s)"
        );
    }
}

#[test]
fn every_workload_runs_on_every_thread_safe_contender_in_one_child() {
    // Small op counts: this checks the wiring, not the speed.
    for contender in ["ours", "rlsf-mutex", "system"] {
        for (workload, extra) in [
            ("handoff", &[][..]),
            ("mixed", &["--threads", "2"][..]),
            ("size", &["--size", "1m"][..]),
        ] {
            let shm = ShmGuard::new("wiring");
            let mut args = vec![
                "--single",
                contender,
                workload,
                "--ops",
                "20000",
                "--live",
                "500",
                "--shm-name",
                &shm.0,
            ];
            args.extend_from_slice(extra);
            let out = run(&args, &[], Duration::from_secs(60));
            assert!(
                out.status.success(),
                "{contender} {workload}: {}",
                out.stderr
            );
            assert_eq!(result_line(&out.stdout)["ops"], 20000);
        }
    }
}

#[test]
fn a_crashed_child_is_reported_as_crashed_and_its_segment_removed() {
    let out = run(
        &[
            "--quick",
            "--rows",
            "pair64",
            "--contenders",
            "ours,rlsf",
            "--reps",
            "2",
            "--no-lto",
        ],
        &[("MATRIX_BENCH_CRASH", "ours")],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "a crashing contender must not end the run: {}",
        out.stderr
    );
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("| pair64 |"))
        .expect("a pair64 row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let heading = out
        .stdout
        .lines()
        .find(|l| l.starts_with("| workload |"))
        .expect("a table heading");
    let rlsf = heading
        .split('|')
        .map(str::trim)
        .position(|h| h == "rlsf")
        .expect("an rlsf column");
    assert_eq!(cells[3], "crashed (SIGSEGV)", "{row}");
    assert!(
        cells[rlsf]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit()),
        "rlsf still measured: {row}"
    );
    // A crash stops that contender's repetitions on the row: one run only.
    assert_eq!(
        out.stderr.matches("ours crashed (SIGSEGV)").count(),
        1,
        "{}",
        out.stderr
    );
    assert_eq!(leftover_segments(out.pid), Vec::<String>::new());
}

#[test]
fn verify_passes_for_our_allocator_on_every_workload() {
    let out = run(
        // The 1 GiB and 3.9 GiB scaling rows only in the real run: this
        // checks every workload's bytes, not the big arenas' page faults.
        &[
            "--verify",
            "--contenders",
            "ours",
            "--no-lto",
            "--max-arena",
            "64m",
        ],
        &[],
        Duration::from_secs(150),
    );
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| workload"))
        .collect();
    let ours: Vec<&str> = rows
        .iter()
        .filter(|l| {
            ![
                "| size |",
                "| arena",
                "| threads |",
                "| processes |",
                "| churn |",
            ]
            .iter()
            .any(|header| l.starts_with(header))
        })
        .map(|l| l.split('|').map(str::trim).nth(3).unwrap_or(""))
        .collect();
    assert!(ours.len() >= 9, "expected every workload row: {rows:?}");
    assert!(ours.iter().all(|cell| *cell == "verified"), "{rows:?}");
    assert!(
        out.stdout
            .contains("3.9 GiB arena, 100 live: arena 3.9 GiB above --max-arena 64 MiB"),
        "{}",
        out.stdout
    );
    assert_eq!(leftover_segments(out.pid), Vec::<String>::new());
}
