//! Runs every example with small arguments and checks its exit code and the
//! lines that prove it did its job. `cargo test` builds the examples before
//! running tests; run on its own (`--test run_examples`), this test builds
//! them first.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Longest any example may run before the test kills it and fails.
const TIMEOUT: Duration = Duration::from_secs(180);

/// `target/<profile>/examples/<name>`, next to this test's `deps/` directory.
fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    profile_dir.join("examples").join(name)
}

/// Brings the example binaries up to date. `cargo test --test run_examples`
/// builds this test without the examples, so a binary left from an older
/// build would be tested otherwise; cargo's own up-to-date check makes this
/// cheap when they are current.
fn ensure_built() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let release = example_path("x").to_string_lossy().contains("/release/");
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "matrix-examples", "--examples"]);
        if release {
            cargo.arg("--release");
        }
        let status = run_to_end(cargo).status;
        assert!(status.success(), "building the examples failed: {status}");
    });
}

/// Kills and reaps the child when dropped.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    #[track_caller]
    fn has(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "output lacks {text:?}:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

fn run_to_end(mut command: Command) -> Finished {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait(Reaper(Some(child)), None)
}

/// Waits for the child (at most [`TIMEOUT`]), optionally sending `signal`
/// once `signal_after` has passed; collects its output.
fn wait(mut reaper: Reaper, signal: Option<(Duration, i32)>) -> Finished {
    let child = reaper.0.as_mut().expect("running");
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let mut signalled = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            reaper.0 = None;
            break status;
        }
        if let Some((after, sig)) = signal {
            if !signalled && start.elapsed() >= after {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                signalled = true;
            }
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the example did not finish in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: out.join().expect("reader"),
        stderr: err.join().expect("reader"),
    }
}

fn example(name: &str, args: &[&str]) -> Finished {
    ensure_built();
    let mut command = Command::new(example_path(name));
    command.args(args);
    run_to_end(command)
}

/// The segment an example announced, which must be gone after it exits.
#[track_caller]
fn assert_segment_removed(stdout: &str) {
    let name = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("/dev/shm/"))
        .unwrap_or_else(|| panic!("no segment named in the output:\n{stdout}"));
    let name = name.trim_end_matches([':', ',', ')']);
    assert!(
        !PathBuf::from("/dev/shm").join(name).exists(),
        "/dev/shm/{name} was left behind"
    );
}

#[test]
fn pipeline_streams_and_verifies() {
    let run = example(
        "pipeline",
        &[
            "--seconds",
            "0.5",
            "--min-size",
            "32",
            "--max-size",
            "512",
            "--consumers",
            "2",
        ],
    );
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("throughput")
        .has("messages/s")
        .has("p50")
        .has("p99.9")
        .has("verified   every message received exactly once")
        .has(" 0 lost, 0 duplicated; checksums match (0 errors")
        .has("allocator  before:")
        .has("after:")
        .has("used before = after: yes")
        .has("removed    /dev/shm/");
    assert_segment_removed(&run.stdout);
}

#[test]
fn pipeline_with_three_consumers_and_a_rate() {
    let run = example(
        "pipeline",
        &[
            "--seconds",
            "0.3",
            "--consumers",
            "3",
            "--rate",
            "20000",
            "--capacity",
            "16",
        ],
    );
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("#2 ").has(" 0 lost, 0 duplicated; checksums match");
    assert_segment_removed(&run.stdout);
}

#[test]
fn pipeline_removes_its_segment_on_ctrl_c() {
    ensure_built();
    let mut command = Command::new(example_path("pipeline"));
    command
        .args(["--seconds", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("spawn");
    let run = wait(
        Reaper(Some(child)),
        Some((Duration::from_millis(1500), libc::SIGINT)),
    );
    assert_eq!(
        run.status.code(),
        Some(130),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    run.has("interrupted")
        .has(" 0 lost, 0 duplicated")
        .has("removed");
    assert_segment_removed(&run.stdout);
}

#[test]
fn pipeline_refuses_bad_arguments() {
    for args in [
        &["--min-size", "8"][..],
        &["--max-size", "16"],
        &["--consumers", "0"],
        &["--seconds", "0"],
    ] {
        // Exit code 2 and one `error:` line, as for clap's own usage errors.
        let run = example("pipeline", args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stdout);
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.stderr
        );
    }
    let clap_own = example("pipeline", &["--consumers", "many"]);
    assert_eq!(clap_own.status.code(), Some(2), "{}", clap_own.stderr);
}

#[test]
fn pipeline_paced_sends_exactly_rate_times_seconds() {
    let run = example("pipeline", &["--seconds", "0.5", "--rate", "1000"]);
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("every message received exactly once: 500 sent, 500 received");
    assert_segment_removed(&run.stdout);
}

#[test]
fn pipeline_that_sends_nothing_does_not_verify() {
    let run = example("pipeline", &["--seconds", "0.000001"]);
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("verified"), "{}", run.stdout);
    run.has("no message was sent");
    assert_segment_removed(&run.stdout);
}

#[test]
fn lifecycle_moves_every_order_through_its_states() {
    let run = example("lifecycle", &["--orders", "500", "--consumers", "2"]);
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("set_state(3) refused")
        .has("500 orders")
        .has("READY -> CLAIMED -> DONE -> ARCHIVED -> freed")
        .has("verified: every order processed exactly once (500 = 500)")
        .has("after: used        0 B");
    assert_segment_removed(&run.stdout);
}

#[test]
fn crash_recover_reclaims_a_killed_worker() {
    let run = example("crash_recover", &["--blocks", "500", "--max-size", "256"]);
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("with SIGKILL")
        .has("recover(): 1 participant(s), 500 block(s)")
        .has("left alone: block at")
        .has("survivor block at")
        .has("verified: all memory back");
    assert_segment_removed(&run.stdout);
}

#[test]
fn registry_finds_objects_by_name_across_processes() {
    let run = example("registry", &["--races", "50"]);
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("created true")
        .has("child: app.config = max order 5000")
        .has("as another type is refused")
        .has("race: 50 names")
        .has("every name has exactly one creator (verified)")
        .has("says max_order_size = 5000");
    assert_segment_removed(&run.stdout);
    let too_many = example("registry", &["--races", "1000"]);
    assert_eq!(too_many.status.code(), Some(1));
    assert!(
        too_many.stderr.contains("--races must be at most"),
        "{}",
        too_many.stderr
    );
}

#[test]
fn hashmap_updates_from_several_processes_add_up() {
    let run = example(
        "hashmap",
        &["--workers", "3", "--trades", "20000", "--symbols", "64"],
    );
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("3 workers applied 60000 trades")
        .has("verified: map totals")
        .has("no update lost or doubled")
        .has("get(SYM000) -> None");
    assert_segment_removed(&run.stdout);
}

#[test]
fn dynamic_messages_arrive_exactly_once_and_are_freed_whole() {
    let run = example(
        "dynamic_messages",
        &[
            "--messages",
            "300",
            "--max-samples",
            "2000",
            "--consumers",
            "2",
        ],
    );
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    run.has("sent     300 records")
        .has("verify   300 of 300 records received exactly once, 0 missing, 0 more than once, 0 bad checksums: OK")
        .has("% in place");
    assert!(!run.stdout.contains("FAILED"), "{}", run.stdout);
    assert_segment_removed(&run.stdout);
}

#[test]
fn dynamic_messages_refuses_bad_arguments() {
    let run = example("dynamic_messages", &["--consumers", "0"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stdout);
}

/// Children of `pid`, from `/proc/<pid>/task/<pid>/children`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn pipeline_fails_cleanly_when_a_consumer_dies() {
    ensure_built();
    let mut command = Command::new(example_path("pipeline"));
    command
        .args(["--seconds", "60", "--consumers", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("spawn");
    let pid = child.id();
    let reaper = Reaper(Some(child));
    // Consumers are started first, then the producer.
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumer = loop {
        let kids = children_of(pid);
        if kids.len() == 3 {
            break kids[0];
        }
        assert!(
            Instant::now() < deadline,
            "the pipeline never started its children"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: plain kill(2) on a pid that is our grandchild (alive: it runs
    // for 60 s unless killed).
    unsafe { libc::kill(consumer as libc::pid_t, libc::SIGKILL) };
    let run = wait(reaper, None);
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("pipeline: consumer 0 stopped early"),
        "{}",
        run.stderr
    );
    assert_segment_removed(&run.stdout);
}

/// A pseudo-terminal of `cols` columns: (master, path of the slave side).
fn open_pty(cols: u16) -> (std::fs::File, std::ffi::CString) {
    use std::os::fd::FromRawFd;
    // SAFETY: posix_openpt takes flags only and returns a new descriptor
    // (checked), which the File below owns.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    assert!(master >= 0, "posix_openpt failed");
    // SAFETY: `master` is a pty master we own; grantpt/unlockpt/ptsname
    // only read it, ptsname's static buffer is copied out at once (this
    // test calls it from one thread), and the winsize is a valid struct.
    let slave = unsafe {
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let size = libc::winsize {
            ws_row: 24,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(
            libc::ioctl(master, libc::TIOCSWINSZ, &size),
            0,
            "TIOCSWINSZ"
        );
        let name = libc::ptsname(master);
        assert!(!name.is_null(), "ptsname");
        std::ffi::CStr::from_ptr(name).to_owned()
    };
    // SAFETY: `master` is open and owned by nobody else.
    (unsafe { std::fs::File::from_raw_fd(master) }, slave)
}

/// What a terminal shows of `raw`, segment by segment: the text between
/// carriage returns and newlines, with escape sequences taken out.
fn printed_segments(raw: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then one final letter.
            if chars.peek() == Some(&'[') {
                chars.next();
                for f in chars.by_ref() {
                    if f.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain.split(['\r', '\n']).map(str::to_owned).collect()
}

/// On an 80-column terminal the progress bar, and the `^C` the terminal
/// echoes after it, never reach the last column (so nothing wraps and
/// leaves a line behind), and Ctrl-C typed at the terminal clears the bar
/// before the results: no bar line follows.
#[test]
fn pipeline_progress_bar_fits_80_columns_and_is_cleared_on_ctrl_c() {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    ensure_built();
    let (mut master, slave) = open_pty(80);
    let tty = |flags| {
        std::fs::OpenOptions::new()
            .read(flags)
            .write(true)
            .open(slave.to_str().unwrap())
            .expect("open the pty's slave side")
    };
    let mut command = Command::new(example_path("pipeline"));
    command
        .args(["--seconds", "60"])
        .stdin(tty(true))
        .stdout(tty(false))
        .stderr(tty(false));
    // SAFETY: between fork and exec only async-signal-safe calls: a new
    // session, and the terminal on stdin made its controlling terminal, so
    // the ^C typed below reaches the example's process group.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().expect("spawn under a pty");
    drop(command); // closes our copies of the slave side
    let mut reaper = Reaper(Some(child));
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with EIO once the last holder of the slave side exits.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut raw = Vec::new();
    let start = Instant::now();
    let mut typed = false;
    let status = loop {
        while let Ok(chunk) = rx.try_recv() {
            raw.extend(chunk);
        }
        let text = String::from_utf8_lossy(&raw);
        if !typed && text.matches(" sent ").count() >= 5 {
            master.write_all(b"\x03").unwrap();
            typed = true;
        }
        let child = reaper.0.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            reaper.0 = None;
            break status;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "the example did not finish in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(500)) {
        raw.extend(chunk);
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(typed, "the bar never drew:\n{text:?}");
    assert_eq!(status.code(), Some(130), "{text}");
    let segments = printed_segments(&text);
    // The bar's redraws (`⠁ [==>   ] 0.2/60s sent …`); the report's lines
    // are printed once and may wrap like any text.
    let bars: Vec<&String> = segments.iter().filter(|s| s.contains("] ")).collect();
    assert!(bars.len() >= 5, "{text:?}");
    let widest = bars.iter().map(|s| s.chars().count()).max().unwrap();
    // The bar's line, with the `^C` the terminal echoes onto it, stays
    // short of the last column: nothing wraps.
    assert!(widest < 80, "a bar line reaches column {widest}\n{text:?}");
    let results = segments
        .iter()
        .position(|s| s.starts_with("throughput"))
        .unwrap_or_else(|| panic!("no results:\n{text:?}"));
    assert!(
        segments[results..].iter().all(|s| !s.contains(" recv ")),
        "a bar line after the results:\n{text:?}"
    );
    let before = &text[..text.find("throughput").unwrap()];
    assert!(
        before.ends_with("\r\u{1b}[2K"),
        "the line before the results was not cleared: {:?}",
        &before[before.len().saturating_sub(200)..]
    );
    assert!(text.contains("interrupted"), "{text}");
    assert_segment_removed(&text);
}
