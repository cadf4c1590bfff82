//! The `matrix` binary against real segments in /dev/shm: every command, every
//! `--json` output parsed, exit codes, and one-line error messages.

mod common;

use common::{matrix, shm_path, unique, ChildGuard, ShmGuard};
use matrix_handler::{HandlerFunctions, MatrixHandler};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const HOLD_ENV: &str = "MATRIX_CLI_TEST_HOLD";
/// Blocks the holder child allocates and keeps ALLOCATED.
const HELD_BLOCKS: u64 = 10;
/// The user state the holder puts one more block in.
const HELD_USER_STATE: u32 = 77;

/// Not a test of its own: the body of the child process that
/// [`spawn_holder`] starts by re-running this test binary. It attaches to
/// the segment named in `MATRIX_CLI_TEST_HOLD`, allocates, reports "ready"
/// and waits to be killed (exiting by itself after a minute at most).
#[test]
#[ignore = "helper run in a child process by dead_participant_is_found_and_repaired"]
fn hold_blocks_until_killed() {
    let Ok(name) = std::env::var(HOLD_ENV) else {
        return;
    };
    let handler = MatrixHandler::open(&name).expect("child: open the segment");
    for i in 0..HELD_BLOCKS {
        handler
            .allocate_raw(100 + i as u32 * 10)
            .expect("child: allocate");
    }
    let block = handler
        .allocate::<u64>()
        .expect("child: allocate a typed block");
    handler
        .set_state(&block, HELD_USER_STATE)
        .expect("child: set a user state");
    println!("ready {}", std::process::id());
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a child that attaches to `name`, holds blocks, and waits to be killed.
fn spawn_holder(name: &str) -> ChildGuard {
    spawn_holder_under(&[], name)
}

/// [`spawn_holder`], run as `prefix... <test binary>` (e.g. under `unshare`).
fn spawn_holder_under(prefix: &[&str], name: &str) -> ChildGuard {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    common::spawn_until_ready(
        command
            .args([
                "--exact",
                "hold_blocks_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD_ENV, name),
        "holder",
    )
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v[key] == value)
}

#[test]
fn create_stat_fsck_ls_rm_round_trip() {
    let name = unique("roundtrip");
    let _guard = ShmGuard::new(&name);

    matrix(&["create", &name, "--size", "4MiB"])
        .expect(0)
        .stdout_has("created /dev/shm/");
    assert_eq!(std::fs::metadata(shm_path(&name)).unwrap().len(), 4 << 20);

    let stat = matrix(&["stat", &name])
        .expect(0)
        .stdout_has("ATMATRX1")
        .stdout_has("0 alive")
        .stdout_has("free-block sizes")
        .stdout
        .clone();
    assert!(stat.contains("READY"), "{stat}");

    let json = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(json["name"], name.as_str());
    assert_eq!(json["header"]["segment_size"], 4 << 20);
    assert_eq!(json["header"]["magic"], "ATMATRX1");
    assert_eq!(json["space"]["used_bytes"], 0);
    assert_eq!(json["participants_alive"], 0);
    assert_eq!(
        json["participants_dead"], 0,
        "the tool left no participant slot behind: {json:#}"
    );
    assert_eq!(json["participants"].as_array().unwrap().len(), 0);

    matrix(&["fsck", &name]).expect(0).stdout_has("clean");
    let fsck = matrix(&["fsck", &name, "--json"]).expect(0).json();
    assert_eq!(fsck["clean"], true);
    assert_eq!(fsck["problems"], 0);

    matrix(&["ls"]).expect(0).stdout_has(&name);
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = find(&ls, "name", &name).unwrap_or_else(|| panic!("ls --json lacks {name}: {ls:#}"));
    assert_eq!(row["size_bytes"], 4 << 20);
    assert_eq!(row["participants_alive"], 0);
    assert_eq!(row["status"], "ok");

    matrix(&["rm", &name]).expect(0).stdout_has("removed");
    assert!(!shm_path(&name).exists());
    matrix(&["rm", &name])
        .expect(2)
        .stderr_has("no segment named");
    matrix(&["stat", &name])
        .expect(2)
        .stderr_has("no segment named");
}

#[test]
fn stat_reports_blocks_by_state_and_the_histogram() {
    let name = unique("stat");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "2MiB"]).expect(0);
    {
        let handler = MatrixHandler::open(&name).unwrap();
        let blocks: Vec<_> = (0..64u32)
            .map(|i| handler.allocate_raw(48 + i * 16).unwrap())
            .collect();
        let typed = handler.allocate::<[u64; 4]>().unwrap();
        handler.set_state(&typed, 112).unwrap();
        handler.release_to_segment(&typed).unwrap();
        for p in blocks.iter().step_by(2) {
            handler.free_at(p.offset() - 32).unwrap();
        }
        for p in blocks.iter().skip(1).step_by(2) {
            handler
                .raw_matrix()
                .set_owner(p.offset() - 32, None, matrix_core::OwnerId::SEGMENT)
                .unwrap();
        }
        // Freed blocks wait in this thread's cache; return them to the index.
        handler.raw_matrix().flush_thread_cache();
    }
    let json = matrix(&["stat", &name, "--json"]).expect(0).json();
    let states = &json["blocks_by_state"];
    assert_eq!(find_state(states, 1)["blocks"], 32, "{json:#}");
    assert_eq!(find_state(states, 112)["blocks"], 1);
    assert_eq!(find_state(states, 112)["name"], "USER");
    let free_blocks: u64 = json["free_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["blocks"].as_u64().unwrap())
        .sum();
    assert!(free_blocks >= 1, "{json:#}");
    assert!(json["space"]["fragmentation"].as_f64().unwrap() > 0.0);
    let text = matrix(&["stat", &name]).expect(0).stdout.clone();
    assert!(text.contains("USER 112"), "{text}");
    assert!(text.contains('#'), "the histogram draws bars:\n{text}");
    // Sizes are human: no count of bytes past 1023 printed as `N B`
    // (the layout line's exact size in parentheses aside).
    for line in text.lines().filter(|l| !l.starts_with("layout")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[1].trim_end_matches(',') == "B" {
                // `(N B)`: an exact figure beside a human one.
                if pair[0].starts_with('(') {
                    continue;
                }
                for n in pair[0].split('-').filter_map(|p| p.parse::<u64>().ok()) {
                    assert!(n < 1024, "raw bytes in {line:?}");
                }
            }
        }
    }
}

fn find_state(states: &Value, state: u64) -> &Value {
    states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == state)
        .unwrap_or_else(|| panic!("no state {state} in {states:#}"))
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

/// `matrix ARGS` run inside a fresh PID namespace with its own `/proc`.
fn matrix_in_pid_namespace(args: &[&str]) -> common::Outcome {
    let mut command = Command::new("unshare");
    command
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            env!("CARGO_BIN_EXE_matrix"),
        ])
        .args(args);
    common::run(command)
}

/// A participant attached from another PID namespace is live to `fsck
/// --repair` and `rm` run outside it and inside a third one (where neither
/// can see the other's pid): nothing of it is reclaimed and the segment is
/// not removed. Once it is killed, `fsck --repair` reclaims its blocks.
#[test]
fn fsck_repair_and_rm_in_other_pid_namespaces_spare_a_live_participant() {
    if !unshare_works(&["--pid", "--fork", "--kill-child"])
        || !unshare_works(&["--pid", "--fork", "--mount-proc"])
    {
        return;
    }
    let name = unique("pidns");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "4MiB"]).expect(0);
    let mut holder = spawn_holder_under(&["unshare", "--pid", "--fork", "--kill-child"], &name);

    let outside = matrix(&["fsck", &name, "--repair", "--json"]).json();
    assert_eq!(outside["repair"]["recovered_blocks"], 0, "{outside:#}");
    let inside = matrix_in_pid_namespace(&["fsck", &name, "--repair", "--json"]).json();
    assert_eq!(inside["repair"]["recovered_blocks"], 0, "{inside:#}");
    matrix_in_pid_namespace(&["rm", &name])
        .expect(1)
        .stderr_has("live participant");
    matrix(&["rm", &name])
        .expect(1)
        .stderr_has("live participant");
    let live = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(live["participants_alive"], 1, "{live:#}");
    assert_eq!(live["participants"][0]["liveness"], "alive");
    assert_eq!(live["participants"][0]["blocks"], HELD_BLOCKS + 1);

    holder.kill().expect("the holder was running");
    // The namespace's init goes down with unshare; wait (bounded) until
    // its lock is gone and the repair takes its blocks.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let repaired = loop {
        let r = matrix(&["fsck", &name, "--repair", "--json"]).json();
        if r["repair"]["recovered_participants"] == 1 || std::time::Instant::now() >= deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        repaired["repair"]["recovered_participants"], 1,
        "{repaired:#}"
    );
    assert_eq!(
        repaired["repair"]["recovered_blocks"], HELD_BLOCKS,
        "{repaired:#}"
    );
}

#[test]
fn dead_participant_is_found_and_repaired() {
    let name = unique("dead");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "4MiB"]).expect(0);

    let mut holder = spawn_holder(&name);
    let live = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(live["participants_alive"], 1, "{live:#}");
    let p = &live["participants"][0];
    assert_eq!(p["alive"], true);
    assert_eq!(p["liveness"], "alive");
    assert_eq!(p["blocks"], HELD_BLOCKS + 1);
    matrix(&["fsck", &name])
        .expect(0)
        .stdout_has("1 live participant");
    matrix(&["rm", &name])
        .expect(1)
        .stderr_has("live participant")
        .stderr_has("--force");
    assert!(shm_path(&name).exists(), "rm refused, the segment stays");

    holder.kill().expect("the holder was running");
    let dead = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(dead["participants_alive"], 0);
    assert_eq!(dead["participants_dead"], 1);
    matrix(&["ls"]).expect(0).stdout_has(&name);
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    assert_eq!(find(&ls, "name", &name).unwrap()["participants_dead"], 1);

    let found = matrix(&["fsck", &name])
        .expect(1)
        .stdout_has("held-by-departed")
        .stdout_has("problems found")
        .stdout
        .clone();
    assert!(
        found.contains(&format!("{HELD_BLOCKS} block(s)")),
        "{found}"
    );
    let json = matrix(&["fsck", &name, "--json"]).expect(1).json();
    assert_eq!(json["clean"], false);
    let kinds: Vec<&str> = json["before"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"held-by-departed"), "{json:#}");
    assert!(kinds.contains(&"user-state-block-of-departed"), "{json:#}");

    let repaired = matrix(&["fsck", &name, "--repair", "--json"])
        .expect(0)
        .json();
    assert_eq!(repaired["clean"], true, "{repaired:#}");
    assert_eq!(repaired["repair"]["recovered_participants"], 1);
    assert_eq!(repaired["repair"]["recovered_blocks"], HELD_BLOCKS);
    assert_eq!(repaired["repair"]["rebuilt_index"], true);

    let after = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(
        after["header"]["recoveries"], 1,
        "one participant recovered, counted once: {after:#}"
    );
    assert_eq!(
        after["participants"].as_array().unwrap().len(),
        0,
        "no slot left behind: {after:#}"
    );
    assert_eq!(
        find_state(&after["blocks_by_state"], HELD_USER_STATE as u64)["blocks"],
        1,
        "user-state blocks are kept"
    );
    matrix(&["fsck", &name]).expect(0).stdout_has("clean");

    matrix(&["fsck", &name, "--repair", "--reclaim-user-states"])
        .expect(0)
        .stdout_has("clean");
    let empty = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(empty["space"]["used_bytes"], 0, "{empty:#}");
    matrix(&["rm", &name]).expect(0);
}

#[test]
fn rm_force_removes_a_segment_in_use() {
    let name = unique("force");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "1MiB"]).expect(0);
    let _holder = spawn_holder(&name);
    matrix(&["rm", &name]).expect(1);
    matrix(&["rm", &name, "--force"])
        .expect(0)
        .stdout_has("keep their mapping");
    assert!(!shm_path(&name).exists());
}

#[test]
fn create_refuses_bad_sizes_modes_and_existing_names() {
    let name = unique("create");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "12parsecs"])
        .expect(2)
        .stderr_has("invalid size");
    matrix(&["create", &name, "--size", "100B"])
        .expect(2)
        .stderr_has("too small");
    matrix(&["create", &name, "--size", "5GiB"])
        .expect(2)
        .stderr_has("too large");
    matrix(&["create", &name, "--mode", "9"])
        .expect(2)
        .stderr_has("octal");
    assert!(!shm_path(&name).exists(), "failed creates leave no file");
    matrix(&["create", &name, "--size", "1048576", "--mode", "640"]).expect(0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(shm_path(&name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    matrix(&["create", &name])
        .expect(2)
        .stderr_has("already exists");
}

#[test]
fn missing_and_invalid_names_are_one_line_errors() {
    matrix(&["stat"]).expect(2).stderr_has("<NAME>");
    matrix(&["fsck"]).expect(2);
    matrix(&["frobnicate"]).expect(2).stderr_has("frobnicate");
    matrix(&["stat", &unique("missing")])
        .expect(2)
        .stderr_has("no segment named");
    matrix(&["fsck", &unique("missing")])
        .expect(2)
        .stderr_has("no segment named");
    for bad in ["a/b", "..", "sp ace", "", &"x".repeat(201)] {
        for command in ["stat", "fsck", "rm", "create"] {
            matrix(&[command, bad])
                .expect(2)
                .stderr_has("invalid segment name");
        }
    }
    matrix(&["fsck", "x", "--reclaim-user-states"])
        .expect(2)
        .stderr_has("--repair");
    matrix(&["bench", "--threads", "0"])
        .expect(2)
        .stderr_has("--threads");
}

#[test]
fn foreign_files_are_skipped_and_never_touched() {
    let name = unique("foreign");
    let _guard = ShmGuard::new(&name);
    let content = b"a file some other program keeps in /dev/shm, long enough to look like anything";
    std::fs::write(shm_path(&name), content).unwrap();
    let tiny = unique("tiny");
    let _tiny_guard = ShmGuard::new(&tiny);
    std::fs::write(shm_path(&tiny), b"abc").unwrap();
    let fifo = unique("fifo");
    let _fifo_guard = ShmGuard::new(&fifo);
    let path = std::ffi::CString::new(shm_path(&fifo).to_str().unwrap()).unwrap();
    // SAFETY: plain syscall with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");

    let ls = matrix(&["ls"]).expect(0).stdout.clone();
    for skipped in [&name, &tiny, &fifo] {
        assert!(!ls.contains(skipped.as_str()), "ls listed {skipped}:\n{ls}");
    }
    let json = matrix(&["ls", "--json"]).expect(0).json();
    assert!(find(&json, "name", &name).is_none());

    for command in ["stat", "fsck"] {
        matrix(&[command, &name])
            .expect(2)
            .stderr_has("is not a matrix segment")
            .stderr_has("magic");
        matrix(&[command, &tiny])
            .expect(2)
            .stderr_has("is not a matrix segment");
        matrix(&[command, &fifo])
            .expect(2)
            .stderr_has("not a regular file");
    }
    matrix(&["fsck", &name, "--repair"])
        .expect(2)
        .stderr_has("is not a matrix segment");
    matrix(&["rm", &name]).expect(2).stderr_has("not removed");
    matrix(&["rm", &name, "--force"])
        .expect(2)
        .stderr_has("not removed");
    matrix(&["rm", &fifo, "--force"])
        .expect(2)
        .stderr_has("not removed");
    assert_eq!(
        std::fs::read(shm_path(&name)).unwrap(),
        content,
        "the foreign file is unchanged"
    );
}

#[test]
fn a_bad_magic_or_version_is_reported_not_repaired() {
    use std::io::{Seek, SeekFrom, Write};
    let name = unique("badmagic");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "1MiB"]).expect(0);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    file.write_all(b"NOTMATRX").unwrap();
    for command in ["stat", "fsck"] {
        matrix(&[command, &name])
            .expect(2)
            .stderr_has("is not a matrix segment")
            .stderr_has("magic");
    }
    matrix(&["fsck", &name, "--repair"]).expect(2);
    assert!(
        !matrix(&["ls"]).expect(0).stdout.contains(&name),
        "ls skips it"
    );

    // Our magic, another format version: listed with the reason, refused by stat.
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&matrix_core::layout::MAGIC.to_le_bytes())
        .unwrap();
    file.write_all(&99u32.to_le_bytes()).unwrap();
    matrix(&["stat", &name]).expect(2).stderr_has("version 99");
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = find(&ls, "name", &name).expect("a segment of another version is listed");
    assert!(
        row["status"].as_str().unwrap().contains("version 99"),
        "{row:#}"
    );
    matrix(&["rm", &name]).expect(2).stderr_has("--force");
    matrix(&["rm", &name, "--force"]).expect(0);
}

#[test]
fn bench_runs_and_reports() {
    let json = matrix(&["bench", "--threads", "2", "--seconds", "0.3", "--json"])
        .expect(0)
        .json();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(row["ops"].as_u64().unwrap() > 0, "{row:#}");
        assert!(row["ns_per_op"].as_f64().unwrap() > 0.0);
        assert_eq!(row["threads"], 2);
    }
    assert_eq!(rows[0]["allocator"], "matrix");
    assert_eq!(rows[1]["allocator"], "system");
    assert_eq!(json["matrix_returned_all_memory"], true);
    matrix(&[
        "bench",
        "--threads",
        "1",
        "--seconds",
        "0.2",
        "--no-baseline",
    ])
    .expect(0)
    .stdout_has("ALLOCATOR")
    .stdout_has("matrix")
    .stdout_has("all memory returned after freeing: yes");
}

#[test]
fn help_and_version_exit_zero() {
    matrix(&["--help"]).expect(0).stdout_has("fsck");
    matrix(&["--version"]).expect(0).stdout_has("matrix");
    matrix(&["fsck", "--help"]).expect(0).stdout_has("--repair");
}

#[test]
fn a_segment_abandoned_while_formatting_is_reported_not_waited_for() {
    use matrix_core::layout::SegmentHeader;
    let name = unique("abandoned");
    let _guard = ShmGuard::new(&name);
    let mut child = Command::new("true").spawn().expect("spawn `true`");
    let dead_pid = child.id();
    child.wait().expect("reap `true`");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..8].copy_from_slice(&matrix_core::layout::MAGIC.to_le_bytes());
    let state = std::mem::offset_of!(SegmentHeader, init_state);
    bytes[state..state + 4].copy_from_slice(&matrix_core::layout::init::FORMATTING.to_le_bytes());
    let pid = std::mem::offset_of!(SegmentHeader, formatter_pid);
    bytes[pid..pid + 4].copy_from_slice(&dead_pid.to_le_bytes());
    std::fs::write(shm_path(&name), &bytes).unwrap();

    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = find(&ls, "name", &name).expect("a segment being formatted is listed");
    let status = row["status"].as_str().unwrap();
    assert!(
        status.contains("FORMATTING") && status.contains(&format!("pid {dead_pid} (dead)")),
        "{row:#}"
    );
    matrix(&["stat", &name])
        .expect(2)
        .stderr_has("died while formatting");
    matrix(&["rm", &name]).expect(2).stderr_has("--force");
    matrix(&["rm", &name, "--force"]).expect(0);
}

#[test]
fn stat_names_the_processes_and_ls_says_needs_recover() {
    let name = unique("who");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "4MiB"]).expect(0);
    matrix(&["stat", &name])
        .expect(0)
        .stdout_has("no blocks yet: the whole arena");
    let mut holder = spawn_holder(&name);
    let json = matrix(&["stat", &name, "--json"]).expect(0).json();
    let p = &json["participants"][0];
    let exe = std::env::current_exe().unwrap();
    let comm: String = exe
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    assert_eq!(p["command"], comm.as_str(), "{json:#}");
    assert_eq!(p["user"], common::current_user().as_str(), "{json:#}");
    assert!(p["started_seconds_ago"].as_u64().is_some(), "{json:#}");
    matrix(&["stat", &name]).expect(0).stdout_has("COMMAND");
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = find(&ls, "name", &name).unwrap();
    assert_eq!(row["status"], "ok");
    assert_eq!(row["attached"], 1);

    // Frames of `top`: one JSON object per line.
    let top = matrix(&["top", &name, "-n", "2", "-i", "0.1", "--json"]);
    top.expect(0);
    let frames: Vec<Value> = top
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2, "{}", top.stdout);
    assert_eq!(frames[0]["alive"], 1);
    assert_eq!(frames[0]["allocations_per_second"], Value::Null);
    assert!(frames[1]["allocations_per_second"].is_number());
    assert!(frames[1]["used_bytes"].as_u64().unwrap() > 0);
    matrix(&["top", &name, "-n", "1"])
        .expect(0)
        .stdout_has("allocations/s")
        .stdout_has("1 alive");
    matrix(&["top", &name, "-i", "0"])
        .expect(2)
        .stderr_has("--interval");

    holder.kill();
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = find(&ls, "name", &name).unwrap();
    assert_eq!(row["status"], "needs recover", "{row:#}");
    assert_eq!(row["participants_dead"], 1);
    matrix(&["ls"]).expect(0).stdout_has("needs recover");
    // A dead holder's pid names no live process: no command is made up.
    let json = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(json["participants"][0]["command"], Value::Null, "{json:#}");
}

#[test]
fn rm_dead_lists_then_removes_only_segments_without_live_participants() {
    // Other segments in /dev/shm are not this test's: it looks only at its own prefix.
    let prefix = unique("dead");
    let idle = format!("{prefix}-idle");
    let _idle_guard = ShmGuard::new(&idle);
    let busy = format!("{prefix}-busy");
    let _busy_guard = ShmGuard::new(&busy);
    matrix(&["create", &idle, "--size", "1MiB"]).expect(0);
    matrix(&["create", &busy, "--size", "1MiB"]).expect(0);
    let _holder = spawn_holder(&busy);

    let listed = matrix(&["rm", "--dead", "--prefix", &prefix, "--json"])
        .expect(0)
        .json();
    let entry = find(&listed, "name", &idle).expect("the idle segment is listed");
    assert_eq!(entry["removed"], false);
    assert!(find(&listed, "name", &busy).is_none(), "{listed:#}");
    matrix(&["rm", "--dead", "--prefix", &prefix])
        .expect(0)
        .stdout_has(&format!("would remove /dev/shm/{idle}"))
        .stdout_has("--yes");
    assert!(shm_path(&idle).exists(), "listing removes nothing");

    let removed = matrix(&["rm", "--dead", "--yes", "--prefix", &prefix, "--json"])
        .expect(0)
        .json();
    assert_eq!(find(&removed, "name", &idle).unwrap()["removed"], true);
    assert!(!shm_path(&idle).exists());
    assert!(shm_path(&busy).exists(), "a segment in use stays");
    matrix(&["rm", "--dead", "--force"]).expect(2);
    matrix(&["rm", &busy, "--prefix", &prefix])
        .expect(2)
        .stderr_has("--dead");
    matrix(&["rm", "--yes", &busy])
        .expect(2)
        .stderr_has("--dead");
}

#[test]
fn create_and_rm_speak_json_and_errors_are_json_too() {
    let name = unique("json");
    let _guard = ShmGuard::new(&name);
    let created = matrix(&[
        "create", &name, "--size", "1MiB", "--mode", "0640", "--json",
    ])
    .expect(0)
    .json();
    assert_eq!(created["name"], name.as_str());
    assert_eq!(created["size"], 1 << 20);
    assert_eq!(created["mode"], "0640");
    assert_eq!(created["permissions"], "rw-r-----");
    let again = matrix(&["create", &name, "--json"]);
    again.expect(2);
    assert_one_error_json(&again, "already exists");
    let bad = matrix(&["create", &unique("m"), "--mode", "99999", "--json"]);
    bad.expect(2);
    assert_one_error_json(&bad, "--mode");
    let usage = matrix(&["stat", "--json"]);
    usage.expect(2);
    assert_one_error_json(&usage, "<NAME>");
    let removed = matrix(&["rm", &name, "--json"]).expect(0).json();
    assert_eq!(removed["name"], name.as_str());
    assert_eq!(removed["live_participants"], 0);
    let gone = matrix(&["rm", &name, "--json"]);
    gone.expect(2);
    assert_one_error_json(&gone, "no segment named");
}

fn assert_one_error_json(out: &common::Outcome, text: &str) {
    let value = out.json();
    assert!(value["error"].as_str().unwrap().contains(text), "{value:#}");
    assert_eq!(value["exit_code"], out.code.unwrap());
}

#[test]
fn names_foreign_files_and_truncated_segments_are_explained() {
    matrix(&["create", "..."])
        .expect(2)
        .stderr_has("invalid segment name");
    let foreign = unique("other");
    let _foreign_guard = ShmGuard::new(&foreign);
    std::fs::write(shm_path(&foreign), b"someone else's data, not a segment").unwrap();
    let out = matrix(&["create", &foreign, "--size", "1MiB"]);
    out.expect(2)
        .stderr_has("is not a matrix segment")
        .stderr_has("pick another name");
    assert!(!out.stderr.contains("matrix rm"), "{}", out.stderr);

    let cut = unique("cut");
    let _cut_guard = ShmGuard::new(&cut);
    matrix(&["create", &cut, "--size", "1MiB"]).expect(0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&cut))
        .unwrap()
        .set_len(64 << 10)
        .unwrap();
    let ls = matrix(&["ls", "--json"]).expect(0).json();
    let row = find(&ls, "name", &cut).expect("a truncated segment is listed");
    let status = row["status"].as_str().unwrap();
    assert!(status.starts_with("truncated:"), "{row:#}");
    assert!(status.contains("1.0 MiB"), "{row:#}");
}

#[test]
fn fsck_json_on_a_badly_damaged_segment_is_a_summary() {
    use matrix_core::state::{generation_of, pack, FREE};
    let name = unique("many");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "8MiB"]).expect(0);
    let m = matrix_core::AtomicMatrix::open(&name).unwrap();
    // 2,000 stranded free blocks: far more findings than are listed.
    for _ in 0..2000 {
        let h = m.allocate(64, 0).unwrap().offset() - matrix_core::BLOCK_HEADER_SIZE;
        let hdr = m.block_header(h).unwrap().0;
        let word = hdr.state.load(std::sync::atomic::Ordering::SeqCst);
        hdr.state.store(
            pack(generation_of(word), 0, FREE),
            std::sync::atomic::Ordering::SeqCst,
        );
    }
    m.close().unwrap();
    let short = matrix(&["fsck", &name, "--json"]);
    short.expect(1);
    let json = short.json();
    let summary = json["before"]["summary"].as_array().unwrap();
    let stranded = summary
        .iter()
        .find(|k| k["kind"] == "stranded-free-block")
        .unwrap();
    assert_eq!(stranded["count"], 2000);
    assert_eq!(json["problems"], 2000);
    let listed = json["before"]["findings"].as_array().unwrap();
    assert_eq!(listed.len(), 20, "first 20 of the kind");
    assert_eq!(json["before"]["findings_omitted"], 1980);
    assert!(listed[0]["offset"].is_u64());
    assert!(short.stdout.len() < 20_000, "{} bytes", short.stdout.len());
    let all = matrix(&["fsck", &name, "--json", "--all"]).expect(1).json();
    assert_eq!(all["before"]["findings"].as_array().unwrap().len(), 2000);
    matrix(&["fsck", &name])
        .expect(1)
        .stdout_has("1980 more of this kind (2000 in all; `--all` lists every one)");
    matrix(&["fsck", &name, "--repair"])
        .expect(0)
        .stdout_has("clean");
}
