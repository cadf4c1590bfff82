//! Liveness that cannot be fooled: participants in other PID namespaces,
//! a `/proc` that shows nothing, a recorded pid that names nobody, and
//! handles inherited across `fork()` are all judged by their slot's file
//! lock; only a participant that is really gone is reclaimed.
//!
//! The cross-process cases re-run this test binary as a helper
//! (`helper_process`, driven by `MATRIX_LIVENESS_HELPER`), under
//! `unshare` where a namespace is needed. If `unshare` is refused (no
//! privileges, no namespace support), those tests say why and return.

mod common;

use common::SegmentGuard;
use matrix_core::layout::header_check;
use matrix_core::state::ALLOCATED;
use matrix_core::{AtomicMatrix, Observer, OwnerId};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const HELPER_ENV: &str = "MATRIX_LIVENESS_HELPER";
const HELPER_BLOCKS: usize = 5;
/// Longest a helper may take to answer, or a dead one to be noticed.
const WAIT: Duration = Duration::from_secs(30);

/// Entry point of the helper processes; a no-op in a normal test run.
#[test]
fn helper_process() {
    let Ok(mode) = std::env::var(HELPER_ENV) else {
        return;
    };
    let parts: Vec<&str> = mode.split(':').collect();
    let name = parts[1];
    let code = match parts[0] {
        // Attach, hold some blocks, and wait to be killed.
        "hold" => {
            let m = AtomicMatrix::open(name).expect("helper: open");
            for _ in 0..HELPER_BLOCKS {
                m.allocate(64, 0).expect("helper: allocate");
            }
            println!("ready pid={} owner={}", std::process::id(), m.owner_id().0);
            std::thread::sleep(WAIT * 2);
            0
        }
        // Attach, recover, report.
        "recover" => {
            let proc_readable = std::fs::read_to_string("/proc/self/stat").is_ok();
            let m = AtomicMatrix::open(name).expect("helper: open");
            let r = m.recover(false).expect("helper: recover");
            println!(
                "recovered participants={} blocks={} proc_readable={proc_readable}",
                r.participants, r.blocks
            );
            0
        }
        // Attach, hold blocks, fork a child that outlives this process.
        "holdfork" => {
            let m = AtomicMatrix::open(name).expect("helper: open");
            for _ in 0..HELPER_BLOCKS {
                m.allocate(64, 0).expect("helper: allocate");
            }
            // SAFETY: plain fork(2); the child only sleeps and _exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                std::thread::sleep(WAIT * 2);
                // SAFETY: _exit(2) ends the child without running the
                // parent's destructors or atexit handlers.
                unsafe { libc::_exit(0) };
            }
            println!("ready child={pid} owner={}", m.owner_id().0);
            use std::io::Write;
            std::io::stdout().flush().unwrap();
            // SAFETY: raise(3) with SIGKILL: this helper dies holding its slot.
            unsafe { libc::raise(libc::SIGKILL) };
            1
        }
        other => panic!("unknown helper mode {other}"),
    };
    std::process::exit(code);
}

/// A helper process, killed (with its process group) when dropped.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn spawn(prefix: &[&str], mode: &str) -> Helper {
        let exe = std::env::current_exe().unwrap();
        let (program, args) = match prefix.split_first() {
            Some((p, rest)) => (p.to_string(), rest.iter().map(|s| s.to_string()).collect()),
            None => (exe.to_string_lossy().into_owned(), Vec::<String>::new()),
        };
        let mut cmd = Command::new(program);
        cmd.args(args);
        if !prefix.is_empty() {
            cmd.arg(&exe);
        }
        cmd.args([
            "--exact",
            "helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn helper");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper { child, lines }
    }

    /// The first output line containing `prefix` (libtest may print its
    /// test name in front on the same line), from `prefix` on, waiting at
    /// most [`WAIT`].
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(prefix) => {
                    return line[line.find(prefix).unwrap()..].to_owned()
                }
                Ok(_) => continue,
                Err(e) => panic!("helper did not print {prefix:?}: {e}"),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the helper to exit by itself.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("helper did not exit");
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `unshare` with these flags runs here; says why not otherwise.
fn unshare_works(flags: &[&str]) -> bool {
    match Command::new("unshare").args(flags).arg("true").output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "skipping: `unshare {}` is refused here: {}",
                flags.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("skipping: cannot run unshare: {e}");
            false
        }
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {line:?} is not a number"))
}

/// ALLOCATED blocks carrying `owner`.
fn allocated_by(m: &AtomicMatrix, owner: OwnerId) -> usize {
    m.blocks()
        .map(|b| b.expect("chain walks"))
        .filter(|b| b.owner == owner && b.state == ALLOCATED)
        .count()
}

/// Recovers (bounded) until no block of `owner` is left; returns the
/// blocks reclaimed and whether a recovery reclaimed a slot that held them.
fn recover_until_reclaimed(m: &AtomicMatrix, owner: OwnerId) -> (u64, bool) {
    let deadline = Instant::now() + WAIT;
    let mut blocks = 0;
    loop {
        let before = allocated_by(m, owner);
        let r = m.recover(false).expect("recover");
        blocks += r.blocks;
        if before > 0 && allocated_by(m, owner) == 0 {
            return (blocks, r.participants > 0);
        }
        if Instant::now() >= deadline {
            return (blocks, false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A participant attached from another PID namespace (whose pid means
/// nothing here) is alive to `recover()` on this side, through a
/// participant-less observer, and from inside a third namespace with its
/// own `/proc`; once it is SIGKILLed, its blocks are reclaimed.
#[test]
fn a_participant_in_another_pid_namespace_is_not_reclaimed_until_it_dies() {
    if !unshare_works(&["--pid", "--fork", "--kill-child"])
        || !unshare_works(&["--pid", "--fork", "--mount-proc"])
    {
        return;
    }
    let name = SegmentGuard::new("pidns");
    let m = AtomicMatrix::create(&name, 1 << 20).unwrap();
    let mut holder = Helper::spawn(
        &["unshare", "--pid", "--fork", "--kill-child"],
        &format!("hold:{}", name.as_str()),
    );
    let ready = holder.line("ready");
    let owner = OwnerId(field(&ready, "owner") as u32);
    let ns_pid = field(&ready, "pid") as u32;
    assert_ne!(
        ns_pid,
        holder.child.id(),
        "the helper runs in its own PID namespace"
    );
    assert_eq!(allocated_by(&m, owner), HELPER_BLOCKS);

    let r = m.recover(false).unwrap();
    assert_eq!((r.participants, r.blocks), (0, 0), "this side: {r:?}");
    let o = Observer::open_writable(&name).unwrap();
    let r = o.recover(false).unwrap();
    assert_eq!((r.participants, r.blocks), (0, 0), "observer: {r:?}");
    drop(o);
    let inside = Helper::spawn(
        &["unshare", "--pid", "--fork", "--mount-proc"],
        &format!("recover:{}", name.as_str()),
    );
    let line = inside.line("recovered");
    assert_eq!(
        (field(&line, "participants"), field(&line, "blocks")),
        (0, 0),
        "inside another namespace: {line}"
    );
    drop(inside);
    assert_eq!(
        allocated_by(&m, owner),
        HELPER_BLOCKS,
        "the live participant keeps its blocks"
    );

    holder.kill(); // --kill-child takes the namespaced helper with it
    let (blocks, slot) = recover_until_reclaimed(&m, owner);
    assert!(slot, "the dead participant is reclaimed");
    assert_eq!(blocks, HELPER_BLOCKS as u64);
    assert_eq!(allocated_by(&m, owner), 0);
}

/// A recoverer that cannot read `/proc` at all (an empty filesystem
/// mounted over it) still sees the live participant as alive.
#[test]
fn recovery_without_a_readable_proc_reclaims_nothing_of_a_live_participant() {
    if !unshare_works(&["--mount"]) {
        return;
    }
    let name = SegmentGuard::new("noproc");
    let m = AtomicMatrix::create(&name, 1 << 20).unwrap();
    for _ in 0..HELPER_BLOCKS {
        m.allocate(64, 0).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount -t tmpfs none /proc || exit 97; exec '{}' --exact helper_process --nocapture --test-threads=1",
        exe.display()
    );
    let helper = Helper::spawn(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        &format!("recover:{}", name.as_str()),
    );
    // `Helper::spawn` appends the exe to a prefix; `sh -c` ignores the extra
    // argument (it becomes $0).
    let line = helper.line("recovered");
    if line.contains("proc_readable=true") {
        panic!("the helper could still read /proc: {line}");
    }
    assert_eq!(
        (field(&line, "participants"), field(&line, "blocks")),
        (0, 0),
        "{line}"
    );
    assert_eq!(allocated_by(&m, m.owner_id()), HELPER_BLOCKS);
}

/// The pid recorded in a slot is for display only: a slot whose pid names
/// no process (reused, or from another namespace) is not judged dead.
#[test]
fn a_recorded_pid_that_names_no_process_does_not_make_a_participant_dead() {
    let name = SegmentGuard::new("badpid");
    let a = AtomicMatrix::create(&name, 1 << 20).unwrap();
    let b = AtomicMatrix::open(&name).unwrap();
    for _ in 0..HELPER_BLOCKS {
        b.allocate(64, 0).unwrap();
    }
    let slot = b.owner_id().slot().unwrap();
    // A pid beyond pid_max names no process.
    a.header()
        .participant(slot)
        .unwrap()
        .pid
        .store(0x7FFF_FFF0, std::sync::atomic::Ordering::SeqCst);
    let r = a.recover(false).unwrap();
    assert_eq!((r.participants, r.blocks), (0, 0), "{r:?}");
    assert_eq!(allocated_by(&a, b.owner_id()), HELPER_BLOCKS);
}

/// A forked child that drops its inherited handle detaches nothing: the
/// parent's slot stays its own, and a third participant's `recover()`
/// reclaims none of the parent's blocks.
#[test]
fn a_forked_child_dropping_its_inherited_handle_leaves_the_parent_attached() {
    let name = SegmentGuard::new("forkdrop");
    let parent = AtomicMatrix::create(&name, 1 << 20).unwrap();
    for _ in 0..HELPER_BLOCKS {
        parent.allocate(64, 0).unwrap();
    }
    let slot = parent.owner_id().slot().unwrap();
    // SAFETY: fork(2); the child only drops the handle and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(parent);
        // SAFETY: _exit(2) skips the test harness's teardown in the child.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);

    let info = parent
        .participants()
        .into_iter()
        .find(|p| p.slot == slot)
        .expect("the parent's slot is listed");
    assert_eq!(
        info.state,
        matrix_core::layout::slot_state::ACTIVE,
        "the child's drop detached the parent's slot"
    );
    let third = AtomicMatrix::open(&name).unwrap();
    let r = third.recover(false).unwrap();
    assert_eq!((r.participants, r.blocks), (0, 0), "{r:?}");
    assert_eq!(allocated_by(&third, parent.owner_id()), HELPER_BLOCKS);
}

/// A forked child that outlives its parent does not keep the dead parent
/// looking alive (it must not hold the parent's liveness lock).
#[test]
fn a_forked_child_does_not_keep_a_dead_parent_alive() {
    let name = SegmentGuard::new("forkorphan");
    let m = AtomicMatrix::create(&name, 1 << 20).unwrap();
    let mut helper = Helper::spawn(&[], &format!("holdfork:{}", name.as_str()));
    let ready = helper.line("ready");
    let grandchild = field(&ready, "child") as i32;
    let owner = OwnerId(field(&ready, "owner") as u32);
    helper.wait_exit();
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the helper's child, which only sleeps.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _grandchild = KillOnDrop(grandchild);
    let (blocks, slot) = recover_until_reclaimed(&m, owner);
    assert!(slot, "the dead parent was kept alive by its child");
    assert_eq!(blocks, HELPER_BLOCKS as u64);
    assert_eq!(allocated_by(&m, owner), 0);
}

/// A recovery whose block walk fails gives the slot back: once the damage
/// is gone, the next recovery reclaims the dead participant.
#[test]
fn a_failed_recovery_gives_the_slot_back() {
    let name = SegmentGuard::new("giveback");
    let a = AtomicMatrix::create(&name, 1 << 20).unwrap();
    {
        let b = AtomicMatrix::open(&name).unwrap();
        for _ in 0..HELPER_BLOCKS {
            b.allocate(64, 0).unwrap();
        }
    } // detached, its blocks await recovery
    let last = a.allocate(64, 0).unwrap().offset() - matrix_core::BLOCK_HEADER_SIZE;
    let (hdr, _) = a.block_header(last).unwrap();
    // A header the walk cannot read: recovery fails.
    hdr.check.store(0, std::sync::atomic::Ordering::SeqCst);
    assert!(a.recover(false).is_err(), "the damaged chain is reported");
    hdr.check
        .store(header_check(last), std::sync::atomic::Ordering::SeqCst);
    let r = a.recover(false).unwrap();
    assert_eq!(r.participants, 1, "the slot was not given back: {r:?}");
    assert_eq!(r.blocks, HELPER_BLOCKS as u64, "{r:?}");
}

/// With every slot taken, an attacher takes the slot of a dead participant
/// for itself: it reclaims the dead one's blocks and becomes ACTIVE there.
#[test]
fn attaching_with_every_slot_taken_claims_a_dead_slot_for_itself() {
    use matrix_core::{Arena, Liveness};
    let name = SegmentGuard::new("full");
    let first = AtomicMatrix::create(&name, 1 << 20).unwrap();
    let mut holder = Helper::spawn(&[], &format!("hold:{}", name.as_str()));
    let owner = OwnerId(field(&holder.line("ready"), "owner") as u32);
    let dead_slot = owner.slot().unwrap();
    let mut live = Vec::new();
    while let Ok(m) = AtomicMatrix::open(&name) {
        live.push(m);
    }
    assert_eq!(first.liveness(dead_slot), Liveness::Alive);
    holder.kill();
    let deadline = Instant::now() + WAIT;
    while first.liveness(dead_slot) != Liveness::Dead && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let late = AtomicMatrix::open(&name).expect("the dead slot is taken over");
    assert_eq!(late.slot_index(), dead_slot);
    // Owner ids name the slot: the new holder has the same id, and nothing
    // of the dead one's is left under it before the new holder allocates.
    assert_eq!(late.owner_id(), owner);
    assert_eq!(
        allocated_by(&first, owner),
        0,
        "the dead one's blocks are back"
    );
    assert_eq!(first.liveness(dead_slot), Liveness::Alive);
    drop(live);
}

/// What an inherited handle refuses in a forked child, and what the
/// liveness answers are on each side.
#[test]
fn an_inherited_handle_refuses_to_act_in_the_child() {
    use matrix_core::{Arena, Liveness, SegmentError};
    let name = SegmentGuard::new("forkrefuse");
    let parent = AtomicMatrix::create(&name, 1 << 20).unwrap();
    let other = AtomicMatrix::open(&name).unwrap();
    assert_eq!(parent.liveness(parent.slot_index()), Liveness::Alive);
    assert_eq!(parent.liveness(other.slot_index()), Liveness::Alive);
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fork(2); the child checks, writes one byte and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let refused = |e: String| e.contains("inherited across fork()");
        let ok = matches!(
            parent.recover(false),
            Err(matrix_core::BlockError::Refused(
                SegmentError::InheritedHandle { .. }
            ))
        ) && matches!(
            parent.repair(false),
            Err(matrix_core::RepairError::Segment(
                SegmentError::InheritedHandle { .. }
            ))
        ) && parent.consolidate().is_err_and(|e| refused(e.to_string()))
            && parent.liveness(other.slot_index()) == Liveness::Unknown;
        let byte = [ok as u8];
        // SAFETY: write(2) of one byte from a live array to the pipe.
        unsafe { libc::write(fds[1], byte.as_ptr().cast(), 1) };
        // SAFETY: _exit(2) skips the test harness's teardown in the child.
        unsafe { libc::_exit(0) };
    }
    let mut byte = [0u8];
    // SAFETY: read(2) of one byte from the pipe into a live array.
    let got = unsafe { libc::read(fds[0], byte.as_mut_ptr().cast(), 1) };
    assert_eq!(got, 1, "the child wrote its answer");
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    for fd in fds {
        // SAFETY: close(2) of a pipe end this test opened.
        unsafe { libc::close(fd) };
    }
    assert_eq!(byte[0], 1, "the inherited handle acted in the child");
    assert_eq!(parent.liveness(other.slot_index()), Liveness::Alive);
}

/// `close` reclaims what the participant still owns and leaves its slot
/// EMPTY; a read-only observer refuses to recover.
#[test]
fn close_leaves_no_slot_and_a_read_only_observer_does_not_recover() {
    let name = SegmentGuard::new("close");
    let a = AtomicMatrix::create(&name, 1 << 20).unwrap();
    let b = AtomicMatrix::open(&name).unwrap();
    for _ in 0..HELPER_BLOCKS {
        b.allocate(64, 0).unwrap();
    }
    let owner = b.owner_id();
    let r = b.close().unwrap();
    assert_eq!(r.blocks, HELPER_BLOCKS as u64, "{r:?}");
    assert_eq!(allocated_by(&a, owner), 0);
    assert_eq!(a.participants().len(), 1, "only `a` is left");
    let o = Observer::open(&name).unwrap();
    assert!(
        o.recover(false).is_err(),
        "a read-only observer cannot recover"
    );
    assert_eq!(a.participants().len(), 1, "the observer took no slot");
}
