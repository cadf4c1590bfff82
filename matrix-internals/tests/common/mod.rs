//! Helpers shared by the integration tests: unique segment names that are
//! unlinked even on panic, and child processes (the test binary re-executed
//! with a role) that are always killed and reaped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Environment variable selecting a child's role.
pub const ROLE: &str = "MATRIX_INTERNALS_CHILD_ROLE";
/// Environment variable naming the segment a child opens.
pub const SEGMENT: &str = "MATRIX_INTERNALS_CHILD_SEGMENT";

/// A unique segment name that is unlinked when the guard drops (also on panic).
pub use matrix_core::ScratchName as SegmentGuard;

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
    lines: Option<Lines<BufReader<ChildStdout>>>,
}

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next protocol line the child printed (the text after `@@`), or
    /// `None` when its stdout closed.
    pub fn line(&mut self) -> Option<String> {
        let lines = self
            .lines
            .get_or_insert_with(|| BufReader::new(self.child.stdout.take().unwrap()).lines());
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(i) = line.find("@@") {
                return Some(line[i + 2..].to_owned());
            }
        }
        None
    }

    /// Waits for the child to exit (killing it after `timeout`); true if it
    /// exited successfully on its own.
    pub fn wait_success(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait().unwrap() {
                Some(status) => return status.success(),
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return false;
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        // SAFETY: a plain syscall on our own, not yet reaped child.
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Re-executes this test binary running only the test `entry`, with the
/// role `role` and extra environment.
pub fn spawn(entry: &str, role: &str, segment: &str, env: &[(&str, String)]) -> ChildGuard {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(SEGMENT, segment)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard {
        child: cmd.spawn().unwrap(),
        lines: None,
    }
}

/// Kills the whole test process if a test hangs past `limit` (a watchdog
/// for multi-process tests whose children might wait on each other).
pub fn watchdog(limit: Duration) -> impl Drop {
    struct Dog(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Dog {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if seen.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("watchdog: test still running after {limit:?}; aborting");
        std::process::abort();
    });
    Dog(done)
}
