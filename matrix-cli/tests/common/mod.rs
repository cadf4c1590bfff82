//! Helpers for running the `matrix` binary against real segments.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Longest any one command may take before the test kills it and fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A segment name unique to this process, this call and `test`.
pub fn unique(test: &str) -> String {
    // Relaxed: only uniqueness within this process matters.
    format!(
        "mcli-{}-{}-{test}",
        std::process::id(),
        COUNTER.fetch_add(1, Relaxed)
    )
}

/// Path of `/dev/shm/<name>`.
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

/// Unlinks `/dev/shm/<name>` when dropped, even if the test panicked.
pub struct ShmGuard(pub String);

impl ShmGuard {
    /// Guards `name`.
    pub fn new(name: &str) -> Self {
        ShmGuard(name.to_owned())
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(shm_path(&self.0));
    }
}

/// What a finished command left.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Parses stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts the exit code and, for failures, that stderr is one clear line.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code; {self:#?}");
        if code == 2 || !self.stderr.is_empty() {
            assert_one_line(&self.stderr);
        }
        self
    }

    /// Asserts stdout contains `text`.
    #[track_caller]
    pub fn stdout_has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        self
    }

    /// Asserts stderr contains `text`.
    #[track_caller]
    pub fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// An error message must be exactly one line, with no panic or backtrace.
#[track_caller]
pub fn assert_one_line(stderr: &str) {
    assert_eq!(
        stderr.lines().count(),
        1,
        "stderr is not one line:\n{stderr}"
    );
    assert!(
        stderr.starts_with("error: "),
        "stderr does not start with `error: `: {stderr}"
    );
    for bad in ["panicked", "RUST_BACKTRACE", "internal error"] {
        assert!(!stderr.contains(bad), "stderr shows a panic: {stderr}");
    }
}

/// Runs `matrix <args>` and waits for it, at most [`COMMAND_TIMEOUT`].
pub fn matrix(args: &[&str]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_matrix"));
    command.args(args);
    run(command)
}

/// Runs a command with piped output, killing it after [`COMMAND_TIMEOUT`].
pub fn run(mut command: Command) -> Outcome {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().expect("just spawned");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = guard
        .wait_timeout(COMMAND_TIMEOUT)
        .unwrap_or_else(|| panic!("{command:?} did not finish in time"));
    Outcome {
        code: status.code(),
        stdout: out.join().expect("reader"),
        stderr: err.join().expect("reader"),
    }
}

/// Kills and reaps its child when dropped, unless it was already reaped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Waits for the child for at most `timeout`; `None` on timeout (the
    /// child is then killed and reaped by the drop).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.0.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().expect("waitpid") {
                self.0 = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` (a helper test of the same binary, stdout piped) and
/// waits up to a minute for it to print a line with `ready `; the guard
/// kills it when dropped.
pub fn spawn_until_ready(command: &mut Command, what: &str) -> ChildGuard {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn the {what}: {e}"));
    let stdout = child.stdout.take().expect("piped");
    let guard = ChildGuard(Some(child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ready ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the {what} did not get ready in time"));
    guard
}

/// The name of the user this test runs as.
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
