//! Runs every contender × workload in a child process, interleaved.
//!
//! ```text
//!  rep 1:  pair64: ours rlsf system peer │ mixed: ours rlsf … │ …
//!  rep 2:  pair64: rlsf system peer ours │ mixed: rlsf … ours │ …   (order rotates)
//!  …
//!  child:  matrix-bench --single <contender> <workload> --ops N … --shm-name <unique>
//!          stdout: MATRIX-BENCH-RESULT {json}  |  MATRIX-BENCH-FAILED <message>
//!          killed by a signal  → crashed (SIGSEGV)      no answer in time → killed, "hung"
//! ```
//!
//! A contender that crashes, fails or hangs on a workload is not run on it
//! again: the cell shows what happened. The child's segment files are
//! removed after it exits, whatever the way.

use crate::child::{FAILURE_EXIT, FAILURE_TAG, RESULT_TAG};
use crate::contenders::Contender;
use crate::plan::{contenders_of, Plan};
use crate::workload::{Outcome, Spec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How a contender ended on a workload, when it did not finish normally.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Killed by a signal (named, e.g. `SIGSEGV`).
    Crashed(String),
    /// Reported a failure (allocation failed, free refused, verify mismatch).
    Failed(String),
    /// Did not finish within the timeout (seconds) and was killed.
    Hung(u64),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Crashed(signal) => write!(f, "crashed ({signal})"),
            Failure::Failed(message) => write!(f, "failed: {message}"),
            Failure::Hung(s) => write!(f, "hung (killed after {s} s)"),
        }
    }
}

/// Everything measured for one contender on one workload.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Samples {
    /// ns/op of each repetition, in run order.
    pub ns_per_op: Vec<f64>,
    /// Free blocks after freeing every block and one consolidation, per
    /// repetition (ours, mixed workloads).
    pub free_blocks_after: Vec<u64>,
    /// Why it stopped, if it did.
    pub failure: Option<Failure>,
}

/// Samples of every contender of one workload.
pub type CellResults = BTreeMap<Contender, Samples>;

/// Where the children come from and how long they may take.
pub struct Runner<'a> {
    /// This program, re-executed for each child.
    pub exe: &'a Path,
    /// Fill and check every byte.
    pub verify: bool,
    /// Per-child timeout.
    pub timeout: Duration,
    /// Contenders to run (others are left out of every cell).
    pub only: Option<Vec<Contender>>,
}

impl Runner<'_> {
    /// Runs the plan `reps` times, interleaving contenders, and returns the
    /// results per cell (same order as `plan.cells`).
    pub fn run(&self, plan: &Plan, reps: usize) -> Vec<CellResults> {
        let mut results: Vec<CellResults> = vec![CellResults::new(); plan.cells.len()];
        let used: Vec<usize> = {
            let mut cells: Vec<usize> = plan.rows.iter().map(|r| r.cell).collect();
            cells.dedup();
            cells.sort_unstable();
            cells.dedup();
            cells
        };
        let mut serial = 0u64;
        for rep in 0..reps {
            for &cell in &used {
                let spec = &plan.cells[cell];
                let mut order = self.contenders(spec);
                if !order.is_empty() {
                    let len = order.len();
                    order.rotate_left(rep % len);
                }
                let mut line = format!("[{}/{}] {}:", rep + 1, reps, describe(spec));
                for contender in order {
                    let samples = results[cell].entry(contender).or_default();
                    if samples.failure.is_some() {
                        continue;
                    }
                    serial += 1;
                    let name = format!("matrix-bench-{}-{serial}", std::process::id());
                    match self.run_child(contender, spec, &name) {
                        Ok(outcome) => {
                            samples.ns_per_op.push(outcome.ns_per_op());
                            samples.free_blocks_after.extend(outcome.free_blocks_after);
                            line.push_str(&format!(
                                " {} {:.1}",
                                contender.key(),
                                outcome.ns_per_op()
                            ));
                        }
                        Err(failure) => {
                            line.push_str(&format!(" {} {failure}", contender.key()));
                            samples.failure = Some(failure);
                        }
                    }
                }
                eprintln!("{line}");
            }
        }
        results
    }

    fn contenders(&self, spec: &Spec) -> Vec<Contender> {
        let mut all = contenders_of(spec);
        if let Some(only) = &self.only {
            all.retain(|c| only.contains(c));
        }
        all
    }

    /// Runs one child and removes its segment files afterwards.
    fn run_child(
        &self,
        contender: Contender,
        spec: &Spec,
        shm_name: &str,
    ) -> Result<Outcome, Failure> {
        let result = self.spawn_and_wait(contender, spec, shm_name);
        for path in [
            format!("/dev/shm/{shm_name}"),
            format!("/dev/shm/matrix-{shm_name}"),
        ] {
            let _ = std::fs::remove_file(path);
        }
        result
    }

    fn spawn_and_wait(
        &self,
        contender: Contender,
        spec: &Spec,
        shm_name: &str,
    ) -> Result<Outcome, Failure> {
        let mut command = Command::new(self.exe);
        command.args(child_args(contender, spec, self.verify, shm_name));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| Failure::Failed(format!("cannot start child: {e}")))?;
        let pid = child.id();
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));
        // The waiter thread owns the Child until it is reaped, so the pid
        // cannot be reused before a timeout's kill below reaches it.
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait());
        });
        let status = match receiver.recv_timeout(self.timeout) {
            Ok(status) => status,
            Err(_) => {
                // SAFETY: `pid` is our child, not yet reaped (the waiter
                // still waits on it), so it names no other process.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                let _ = receiver.recv();
                let _ = stdout.join();
                let _ = stderr.join();
                return Err(Failure::Hung(self.timeout.as_secs()));
            }
        };
        let status = status.map_err(|e| Failure::Failed(format!("cannot wait for child: {e}")))?;
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        interpret(status, &out, &err)
    }
}

/// The arguments of a `--single` child for this cell.
pub fn child_args(contender: Contender, spec: &Spec, verify: bool, shm_name: &str) -> Vec<String> {
    let mut args = vec![
        "--single".to_owned(),
        contender.key().to_owned(),
        spec.kind.key().to_owned(),
        "--threads".to_owned(),
        spec.threads.to_string(),
        "--size".to_owned(),
        spec.size.to_string(),
        "--arena".to_owned(),
        spec.arena.to_string(),
        "--live".to_owned(),
        spec.live.to_string(),
        "--ops".to_owned(),
        spec.ops.to_string(),
        "--warmup".to_owned(),
        spec.warmup.to_string(),
        "--processes".to_owned(),
        spec.processes.to_string(),
        "--shm-name".to_owned(),
        shm_name.to_owned(),
    ];
    if verify {
        args.push("--verify".to_owned());
    }
    args
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn interpret(status: ExitStatus, stdout: &str, stderr: &str) -> Result<Outcome, Failure> {
    if let Some(signal) = status.signal() {
        return Err(Failure::Crashed(signal_name(signal)));
    }
    if let Some(message) = stdout.lines().find_map(|l| l.strip_prefix(FAILURE_TAG)) {
        return Err(Failure::Failed(message.trim().to_owned()));
    }
    if status.success() {
        if let Some(json) = stdout.lines().find_map(|l| l.strip_prefix(RESULT_TAG)) {
            return serde_json::from_str(json)
                .map_err(|e| Failure::Failed(format!("unreadable result ({e}): {json}")));
        }
    }
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output");
    let code = status.code().unwrap_or(-1);
    let what = if code == FAILURE_EXIT {
        "failed"
    } else {
        "exited"
    };
    Err(Failure::Failed(format!(
        "{what} with status {code}: {last}"
    )))
}

/// `SIGSEGV`, `SIGBUS`, … or `signal N`.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// `pair64`, `mixed ×2 (64 MiB, 10,000 live)`, … for progress lines.
pub fn describe(spec: &Spec) -> String {
    use crate::plan::{bytes_label, thousands};
    use crate::workload::Kind;
    match spec.kind {
        Kind::Pair64 => "pair64".to_owned(),
        Kind::Size => format!("size {}", bytes_label(spec.size as u64)),
        Kind::Handoff => "handoff".to_owned(),
        Kind::Mixed => format!(
            "mixed ×{} ({}, {} live{}{})",
            spec.threads,
            bytes_label(spec.arena),
            thousands(spec.live as u64),
            if spec.warmup > 0 {
                format!(", after {} churn", thousands(spec.warmup))
            } else {
                String::new()
            },
            if spec.processes > 1 {
                format!(", {} processes", spec.processes)
            } else {
                String::new()
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_a_crash_with_its_name() {
        let status = ExitStatus::from_raw(libc::SIGSEGV);
        assert!(matches!(interpret(status, "", ""), Err(Failure::Crashed(s)) if s == "SIGSEGV"));
    }

    #[test]
    fn a_result_line_is_read_and_a_failure_line_wins() {
        let ok = ExitStatus::from_raw(0);
        let line = format!(
            "noise\n{RESULT_TAG}{{\"ops\":10,\"threads\":1,\"elapsed_ns\":900,\"cpu_ns\":250,\"free_blocks_after\":1}}\n"
        );
        let outcome = interpret(ok, &line, "").expect("parsed");
        assert_eq!(outcome.ns_per_op(), 25.0);
        assert_eq!(outcome.free_blocks_after, Some(1));
        let failed = ExitStatus::from_raw(FAILURE_EXIT << 8);
        let text = format!("{FAILURE_TAG}VERIFY FAILED: block changed\n");
        assert!(
            matches!(interpret(failed, &text, ""), Err(Failure::Failed(m)) if m.contains("VERIFY FAILED"))
        );
        assert!(matches!(
            interpret(ok, "", "boom\n"),
            Err(Failure::Failed(_))
        ));
    }
}
