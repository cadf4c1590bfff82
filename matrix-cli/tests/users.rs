//! Multi-user deployment: exact modes and groups whatever the umask, and
//! what another, unprivileged user sees. Needs root to create that user
//! (and removes it again); skipped with a printed reason otherwise.

// `..CreateOptions::default()` even where every field is given, so that
// options added later keep their defaults.
#![allow(clippy::needless_update)]

mod common;

use common::{matrix, run, unique, ShmGuard};
use matrix_handler::{CreateOptions, HandlerFunctions, MatrixHandler};
use matrix_internals::WorkQueue;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A user and its own primary group, made for the test and deleted when dropped.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    /// `None` (with the reason printed) when this test cannot make users.
    fn create() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: not root, so no unprivileged user can be made for the test");
            return None;
        }
        let name = format!("mcli{}", std::process::id());
        let made = Command::new("useradd")
            .args([
                "--no-create-home",
                "--user-group",
                "--shell",
                "/bin/false",
                &name,
            ])
            .status();
        match made {
            Ok(s) if s.success() => {}
            other => {
                println!("skipped: useradd failed ({other:?})");
                return None;
            }
        }
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, &name]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let mut user = TempUser {
            name: name.clone(),
            uid: u32::MAX,
            gid: u32::MAX,
        };
        user.uid = id("-u")?;
        user.gid = id("-g")?;
        Some(user)
    }

    /// `matrix <args>` run as this user (its uid and primary group only).
    fn matrix(&self, binary: &std::path::Path, args: &[&str]) -> common::Outcome {
        let mut command = Command::new(binary);
        command.args(args).uid(self.uid).gid(self.gid);
        run(command)
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        // userdel removes the user's own group with it (USERGROUPS_ENAB);
        // groupdel covers systems where it does not.
        let _ = Command::new("userdel").arg(&self.name).status();
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The `matrix` binary copied where any user may run it; removed when dropped.
struct PublicBinary(std::path::PathBuf);

impl PublicBinary {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("mcli-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("matrix");
        std::fs::copy(env!("CARGO_BIN_EXE_matrix"), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        PublicBinary(path)
    }
}

impl Drop for PublicBinary {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn meta(name: &str) -> std::fs::Metadata {
    std::fs::metadata(common::shm_path(name)).unwrap()
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    let name = unique("umask");
    let _guard = ShmGuard::new(&name);
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!(
            "umask 077 && exec {} create {name} --size 1MiB --mode 1777",
            env!("CARGO_BIN_EXE_matrix")
        ),
    ]);
    run(command).expect(0).stdout_has("mode 1777 (rwxrwxrwt)");
    assert_eq!(meta(&name).mode() & 0o7777, 0o1777);

    // The handler API: mode exact under the test process's umask too.
    let api = unique("api");
    let _api_guard = ShmGuard::new(&api);
    // SAFETY: umask has no preconditions; it only affects this process.
    let old = unsafe { libc::umask(0o077) };
    let made = MatrixHandler::create_with(
        &api,
        1 << 20,
        &CreateOptions {
            mode: 0o660,
            ..CreateOptions::default()
        },
    );
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    drop(made.unwrap());
    assert_eq!(meta(&api).mode() & 0o7777, 0o660);
    let bad = MatrixHandler::create_with(
        &unique("bad"),
        1 << 20,
        &CreateOptions {
            mode: 0o10600,
            ..CreateOptions::default()
        },
    );
    assert!(bad.is_err(), "a mode beyond 7777 was accepted");
}

#[test]
fn another_user_sees_what_its_permissions_allow() {
    let Some(user) = TempUser::create() else {
        return;
    };
    let binary = PublicBinary::new();
    let private = unique("private");
    let _private_guard = ShmGuard::new(&private);
    let shared = unique("shared");
    let _shared_guard = ShmGuard::new(&shared);
    let api = unique("apigroup");
    let _api_guard = ShmGuard::new(&api);

    matrix(&["create", &private, "--size", "1MiB"]).expect(0);
    matrix(&[
        "create", &shared, "--size", "1MiB", "--mode", "660", "--group", &user.name,
    ])
    .expect(0)
    .stdout_has(&format!("owner root:{}", user.name));
    assert_eq!(meta(&shared).gid(), user.gid);
    assert_eq!(meta(&shared).mode() & 0o7777, 0o660);
    {
        let h = MatrixHandler::create_with(
            &api,
            1 << 20,
            &CreateOptions {
                mode: 0o640,
                group: Some(user.gid),
                ..CreateOptions::default()
            },
        )
        .unwrap();
        let q = WorkQueue::<u64, _>::create(&h, "jobs", 8).unwrap();
        q.try_push(h.allocate::<u64>().unwrap()).unwrap();
    }
    assert_eq!(meta(&api).gid(), user.gid);
    assert_eq!(meta(&api).mode() & 0o7777, 0o640);
    matrix(&[
        "create",
        &unique("nogroup"),
        "--group",
        "no-such-group-here",
    ])
    .expect(2)
    .stderr_has("no such group");

    let ls = user.matrix(&binary.0, &["ls", "--json"]).expect(0).json();
    let row = |name: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed for the other user: {ls:#}"))
            .clone()
    };
    assert_eq!(row(&private)["status"], "permission denied");
    assert_eq!(row(&private)["owner"], "root");
    assert_eq!(row(&private)["mode"], "0600");
    assert_eq!(row(&shared)["status"], "ok", "{ls:#}");
    assert_eq!(row(&shared)["group"], user.name.as_str());
    // Read access is enough to look; the handler was dropped, not closed,
    // so its slot awaits a recover.
    assert_eq!(row(&api)["status"], "needs recover", "{ls:#}");
    assert_eq!(row(&api)["participants_dead"], 1, "{ls:#}");

    user.matrix(&binary.0, &["stat", &private])
        .expect(2)
        .stderr_has("ermission denied");
    user.matrix(&binary.0, &["stat", &shared])
        .expect(0)
        .stdout_has("0 alive");
    user.matrix(&binary.0, &["fsck", &shared]).expect(0);
    // Read permission is enough to see the registry and the queues.
    let api_stat = user
        .matrix(&binary.0, &["stat", &api, "--json"])
        .expect(0)
        .json();
    assert_eq!(api_stat["queues"][0]["name"], "jobs", "{api_stat:#}");
    assert_eq!(api_stat["queues"][0]["depth"], 1, "{api_stat:#}");
    assert_eq!(api_stat["queues"][0]["capacity"], 8, "{api_stat:#}");
    // Group members may not remove it: /dev/shm is sticky, only the owner
    // (or root) unlinks a file there.
    user.matrix(&binary.0, &["rm", &shared])
        .expect(2)
        .stderr_has("only the file's owner (root) or root may remove it");
    assert!(common::shm_path(&shared).exists());
}
