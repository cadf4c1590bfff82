//! Child processes: re-executing the current binary in a role.
//!
//! ```text
//!  parent                                   child (same executable)
//!  Launcher::spawn("crash-worker", vars) ─► main(): run_child_role()
//!     env MATRIX_TESTKIT_ROLE=crash-worker      sees the role, runs it, exits
//!  ChildProcess: wait with timeout, SIGKILL, always reaped (also on drop)
//! ```
//!
//! A test binary with `harness = false` (or the `soak` binary) calls
//! [`run_child_role`](crate::stress::run_child_role) first thing in `main`;
//! a libtest binary can point the launcher at one test that does the same.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Names the role a re-executed child plays.
pub const ENV_ROLE: &str = "MATRIX_TESTKIT_ROLE";
/// The parent's pid: a child whose parent changed exits at once.
pub const ENV_PARENT: &str = "MATRIX_TESTKIT_PARENT";

/// How to start a child: program and arguments; the role goes in the environment.
#[derive(Debug, Clone)]
pub struct Launcher {
    program: PathBuf,
    args: Vec<OsString>,
    pipe_stdout: bool,
}

impl Launcher {
    /// The running executable, without arguments (for `harness = false`
    /// test binaries and programs that call `run_child_role` in `main`).
    pub fn current_exe() -> io::Result<Self> {
        Ok(Launcher {
            program: std::env::current_exe()?,
            args: Vec::new(),
            pipe_stdout: true,
        })
    }

    /// The running executable with `args` (e.g. a libtest filter naming the
    /// test that dispatches to `run_child_role`).
    pub fn current_exe_with_args<I: IntoIterator<Item = S>, S: Into<OsString>>(
        args: I,
    ) -> io::Result<Self> {
        Ok(Launcher {
            program: std::env::current_exe()?,
            args: args.into_iter().map(Into::into).collect(),
            pipe_stdout: true,
        })
    }

    /// Children write to this process's stdout instead of a pipe: for
    /// children that print more than a pipe holds (64 KiB on Linux) and
    /// whose output nobody reads while they run.
    pub fn with_inherited_stdout(mut self) -> Self {
        self.pipe_stdout = false;
        self
    }

    /// Starts a child in `role` with extra environment `vars`. Its stdout is
    /// piped unless [`with_inherited_stdout`](Self::with_inherited_stdout)
    /// was used; stderr is inherited. A piped child blocks once it wrote a
    /// pipe's worth (64 KiB) that nobody read: read a chatty child while it
    /// runs ([`ChildProcess::take_stdout`]); [`ChildProcess::output_lines`]
    /// after exit suits children that print a few lines.
    pub fn spawn(&self, role: &str, vars: &[(&str, String)]) -> io::Result<ChildProcess> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env(ENV_ROLE, role)
            .env(ENV_PARENT, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(if self.pipe_stdout {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stderr(Stdio::inherit());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        Ok(ChildProcess {
            child: cmd.spawn()?,
            status: None,
            role: role.to_owned(),
        })
    }
}

/// A running child. Dropping it kills and reaps it if it is still running.
#[derive(Debug)]
pub struct ChildProcess {
    child: std::process::Child,
    status: Option<ExitStatus>,
    role: String,
}

impl ChildProcess {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The role it was started in.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The exit status, if it has exited (reaps it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout`; `None` if it is still running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILLs it (if still running) and reaps it.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        self.child.kill()?;
        let s = self.child.wait()?;
        self.status = Some(s);
        Ok(s)
    }

    /// Everything the child wrote to stdout, after it exited (empty lines dropped).
    pub fn output_lines(&mut self) -> Vec<String> {
        use std::io::Read;
        let mut out = String::new();
        if let Some(mut pipe) = self.child.stdout.take() {
            let _ = pipe.read_to_string(&mut out);
        }
        out.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Takes the stdout pipe, to read it while the child runs.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// In a child: die with the parent (`PR_SET_PDEATHSIG`), and exit at once if
/// the parent is already gone.
pub fn bind_to_parent() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let expected: Option<i32> = std::env::var(ENV_PARENT).ok().and_then(|p| p.parse().ok());
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    if expected.is_some_and(|p| p != parent) {
        std::process::exit(3);
    }
}

/// Reads and parses a variable the parent set for this child.
pub fn env_var<T: std::str::FromStr>(name: &str) -> Result<T, String> {
    let raw = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
    raw.parse()
        .map_err(|_| format!("{name}={raw} does not parse"))
}
