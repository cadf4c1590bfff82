//! `matrix stat` on the segment's named objects: the root registry's
//! entries (name, kind, type, block) and every queue's depth, capacity and
//! sleepers, read from outside while a process holds them; and corrupt
//! registry or queue bytes give a `damaged` line, never a failed `stat`.

mod common;

use common::{matrix, unique, ChildGuard, ShmGuard};
use matrix_handler::{HandlerFunctions, MatrixHandler, ShmSafe};
use matrix_internals::inspect::QueueStats;
use matrix_internals::{Registry, RegistryError, ShmHashMap, WorkQueue};
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

const OBJECTS_ENV: &str = "MATRIX_CLI_TEST_OBJECTS";
/// Slots of the full queue, all taken.
const JOBS: u32 = 4;

#[derive(ShmSafe)]
#[repr(C)]
struct Hits {
    count: AtomicU64,
}

/// Registers a typed object, a plain-old-data block, a hash map, a full
/// queue `jobs` and an empty queue `idle` in `h`'s root registry.
fn register_objects(
    h: &MatrixHandler,
) -> (
    WorkQueue<u64, matrix_handler::SharedHandler>,
    WorkQueue<u64, matrix_handler::SharedHandler>,
) {
    let registry = Registry::root(h).unwrap();
    registry
        .find_or_create("hits", || {
            Ok::<_, RegistryError>(Hits {
                count: AtomicU64::new(0),
            })
        })
        .unwrap();
    registry.find_or_create_pod("limit", 7, || 42u64).unwrap();
    ShmHashMap::<u64, u64, _>::open_or_create(h, "prices", 64).unwrap();
    let jobs = WorkQueue::<u64, _>::create(h.share(), "jobs", JOBS).unwrap();
    for i in 0..JOBS as u64 {
        let mut b = h.allocate::<u64>().unwrap();
        h.write_pod(&mut b, i).unwrap();
        jobs.try_push(b).unwrap();
    }
    let idle = WorkQueue::<u64, _>::create(h.share(), "idle", 8).unwrap();
    (jobs, idle)
}

/// Not a test of its own: the body of the child that
/// [`spawn_object_holder`] starts. It registers the objects, parks a
/// producer on the full queue and a consumer on the empty one, says
/// "ready" once both sleep, and waits to be killed (a minute at most).
#[test]
#[ignore = "helper run in a child process by the stat tests"]
fn hold_objects_until_killed() {
    let Ok(name) = std::env::var(OBJECTS_ENV) else {
        return;
    };
    let h = MatrixHandler::open(&name).expect("child: open");
    let (jobs, idle) = register_objects(&h);
    let blocked = h.allocate::<u64>().unwrap();
    let q = jobs.clone();
    std::thread::spawn(move || q.push_timeout(blocked, Duration::from_secs(60)));
    let q = idle.clone();
    std::thread::spawn(move || q.pop_timeout(Duration::from_secs(60)).map(|b| b.offset()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (j, i) = (jobs.stats().unwrap(), idle.stats().unwrap());
        if j.producers_waiting == 1 && i.consumers_waiting == 1 {
            println!("ready {}", std::process::id());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_secs(60));
}

fn spawn_object_holder(name: &str) -> ChildGuard {
    common::spawn_until_ready(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "hold_objects_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(OBJECTS_ENV, name),
        "holder",
    )
}

fn entry<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["registry"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no entry {name}: {json:#}"))
}

fn queue<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name}: {json:#}"))
}

#[test]
fn stat_lists_the_registry_and_each_queues_depth_and_sleepers() {
    let name = unique("objects");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "4MiB"]).expect(0);
    let none = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(none["registry"], Value::Null, "{none:#}");
    assert_eq!(none["registry_damaged"], Value::Null);
    matrix(&["stat", &name])
        .expect(0)
        .stdout_has("registry      none");

    let _holder = spawn_object_holder(&name);
    let json = matrix(&["stat", &name, "--json"]).expect(0).json();
    let registry = &json["registry"];
    assert_eq!(registry["capacity"], 128, "{json:#}");
    assert_eq!(registry["entries"].as_array().unwrap().len(), 5);
    assert_eq!(registry["damaged"].as_array().unwrap().len(), 0);
    for (n, kind) in [
        ("hits", "object"),
        ("limit", "object"),
        ("prices", "hash map"),
        ("jobs", "work queue"),
        ("idle", "work queue"),
    ] {
        let e = entry(&json, n);
        assert_eq!(e["kind"], kind, "{e:#}");
        assert_eq!(e["state"], "ready");
        assert_eq!(e["block_state"], "ALLOCATED");
        assert!(e["block_bytes"].as_u64().unwrap() >= e["type"]["size"].as_u64().unwrap());
        assert_eq!(e["damaged"], Value::Null);
    }
    assert_eq!(entry(&json, "limit")["type"]["size"], 8);
    assert_eq!(entry(&json, "limit")["type"]["id"], "0x0000000000000007");
    assert_eq!(entry(&json, "hits")["type"]["size"], 8);

    let jobs = queue(&json, "jobs");
    assert_eq!(jobs["capacity"], JOBS, "{jobs:#}");
    assert_eq!(jobs["depth"], JOBS);
    assert_eq!(jobs["producers_waiting"], 1);
    assert_eq!(jobs["consumers_waiting"], 0);
    assert_eq!(jobs["closed"], false);
    let idle = queue(&json, "idle");
    assert_eq!(idle["capacity"], 8);
    assert_eq!(idle["depth"], 0);
    assert_eq!(idle["consumers_waiting"], 1);
    assert_eq!(json["queues"].as_array().unwrap().len(), 2);
    assert_eq!(
        json["participants_alive"], 1,
        "stat did not attach: {json:#}"
    );

    let text = matrix(&["stat", &name]).expect(0).stdout.clone();
    assert!(
        text.contains("registry      5 of 128 names in use"),
        "{text}"
    );
    assert!(text.contains("PRODUCERS WAITING"), "{text}");
    let row = |n: &str| -> Vec<String> {
        text.lines()
            .rfind(|l| l.trim_start().starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("no line for {n}:\n{text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // NAME DEPTH CAPACITY CONSUMERS PRODUCERS CLAIMED CLOSED
    assert_eq!(
        row("jobs"),
        ["jobs", "4", "4", "0", "1", "0", "no"],
        "{text}"
    );
    assert_eq!(
        row("idle"),
        ["idle", "0", "8", "1", "0", "0", "no"],
        "{text}"
    );
}

/// A word of the segment at `at`, through a writable mapping of our own.
fn word(h: &MatrixHandler, at: usize) -> &AtomicU32 {
    // SAFETY: the tests name 4-aligned offsets inside blocks they made;
    // the handler keeps the mapping alive.
    unsafe { &*(h.base_ptr().add(at) as *const AtomicU32) }
}

#[test]
fn corrupt_registry_and_queue_bytes_are_damaged_lines_not_failures() {
    let name = unique("hostile");
    let _guard = ShmGuard::new(&name);
    matrix(&["create", &name, "--size", "4MiB"]).expect(0);
    let h = MatrixHandler::open(&name).unwrap();
    let (jobs, _idle) = register_objects(&h);
    let root = h.matrix().header().root_registry.load(SeqCst) as usize;
    let entry_at = |i: usize| root + 32 + i * 104;
    // Entry 0 (hits): state 9; entry 1 (limit): its offset into nowhere;
    // the jobs queue: capacity 3.
    word(&h, entry_at(0) + 4).store(9, SeqCst);
    word(&h, entry_at(1) + 16).store(0xFFFF_FF00, SeqCst);
    word(&h, jobs.offset() as usize + 8).store(3, SeqCst);

    let json = matrix(&["stat", &name, "--json"]).expect(0).json();
    let damaged = json["registry"]["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{json:#}");
    assert_eq!(damaged[0]["index"], 0);
    assert!(damaged[0]["damaged"].as_str().unwrap().contains("state 9"));
    assert!(entry(&json, "limit")["damaged"]
        .as_str()
        .unwrap()
        .contains("no live block"));
    // Still a queue by its magic, but listed with why it cannot be read.
    let q = queue(&json, "jobs");
    assert!(
        q["damaged"].as_str().unwrap().contains("capacity 3"),
        "{q:#}"
    );
    let text = matrix(&["stat", &name]).expect(0).stdout.clone();
    assert!(text.contains("entry 0     damaged: state 9"), "{text}");
    assert!(
        text.contains("damaged: no live block at payload offset 4294967040"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("jobs")
            && l.contains("damaged: payload offset")
            && l.contains("capacity 3 is not a power of two")),
        "{text}"
    );

    // The whole registry header: wrong magic, then an offset into nowhere.
    word(&h, root).store(0, SeqCst);
    let json = matrix(&["stat", &name, "--json"]).expect(0).json();
    assert_eq!(json["registry"], Value::Null);
    assert!(
        json["registry_damaged"]
            .as_str()
            .unwrap()
            .contains("does not hold a registry"),
        "{json:#}"
    );
    h.matrix().header().root_registry.store(17, SeqCst);
    matrix(&["stat", &name])
        .expect(0)
        .stdout_has("registry      damaged: no live block at payload offset 17");
    // Fsck still sees the allocator's structures as sound.
    matrix(&["fsck", &name]).expect(0);
    assert!(QueueStats::read(h.matrix(), jobs.offset()).is_err());
}
