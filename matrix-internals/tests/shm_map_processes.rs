//! `ShmMap` across processes: keys inserted by one process are read and
//! removed by another after the writer exited; a writer SIGKILLed at every
//! crash point of insert and remove (twice each: at the first and at a
//! later arrival) leaves, after the allocator's `recover()` and
//! `ShmMap::recover`, a map whose every key is there once with an intact
//! value, the invariants holding, and — once every key is removed — not a
//! byte still used.

mod common;

use common::{spawn, watchdog, SegmentGuard, ROLE, SEGMENT};
use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::dynamic::{ShmString, ShmVec};
use matrix_internals::fault;
use matrix_internals::ShmMap;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

type Map<H> = ShmMap<ShmString, ShmVec<ShmString>, H>;
const NAME: &str = "sessions";

fn words_of(key: u64, version: u64) -> Vec<String> {
    (0..key % 7)
        .map(|j| format!("{key}:{version}:{}", "w".repeat(j as usize * 3)))
        .collect()
}

fn value(h: &MatrixHandler, key: u64, version: u64) -> ShmVec<ShmString> {
    let mut v = ShmVec::new();
    for w in words_of(key, version) {
        v.push(h, ShmString::from_str(h, &w).unwrap()).unwrap();
    }
    v
}

fn key(k: u64) -> String {
    format!("session/{k}/{}", "#".repeat((k % 11) as usize * 9))
}

fn read(h: &MatrixHandler, v: &ShmVec<ShmString>) -> Result<Vec<String>, String> {
    v.iter(h)
        .map_err(|e| e.to_string())?
        .map(|s| s.as_str(h).map(str::to_owned).map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn child_role_map() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    let map = Map::open(&h, NAME).unwrap();
    match role.as_str() {
        "inserter" => {
            for k in 0..200 {
                assert!(!map.insert(&key(k), value(&h, k, 1)).unwrap());
            }
            for k in (0..200).step_by(3) {
                assert!(map.insert(&key(k), value(&h, k, 2)).unwrap());
            }
            println!("@@inserted");
            std::io::stdout().flush().unwrap();
        }
        "crasher" => {
            let point: u32 = std::env::var("POINT").unwrap().parse().unwrap();
            let skip: u32 = std::env::var("SKIP").unwrap().parse().unwrap();
            for k in 0..40 {
                map.insert(&key(k), value(&h, k, 1)).unwrap();
            }
            fault::arm_after(point, skip);
            // Inserts of new keys, overwrites and removes, over and over.
            for round in 2..2000u64 {
                for k in 0..60 {
                    match (k + round) % 3 {
                        0 => map
                            .insert(&key(k), value(&h, k, round))
                            .map(|_| ())
                            .unwrap(),
                        1 => map.remove(&key(k)).map(|_| ()).unwrap(),
                        _ => map
                            .insert(&key(k + 60), value(&h, k + 60, round))
                            .map(|_| ())
                            .unwrap(),
                    }
                }
            }
            eprintln!("crash point {point} (skip {skip}) never reached");
            std::process::exit(3);
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Every key once, with a value that reads whole and belongs to that key.
fn audit(
    h: &MatrixHandler,
    map: &Map<&MatrixHandler>,
) -> Result<HashMap<String, Vec<String>>, String> {
    let mut all = HashMap::new();
    let mut problems = Vec::new();
    map.for_each(|k, v| match read(h, v) {
        Ok(words) => {
            let id: u64 = k
                .split('/')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            if words.len() as u64 != id % 7
                || !words.iter().all(|w| w.starts_with(&format!("{id}:")))
            {
                problems.push(format!("{k}: {words:?} is not its value"));
            }
            if all.insert(k.to_owned(), words).is_some() {
                problems.push(format!("{k} is live twice"));
            }
        }
        Err(e) => problems.push(format!("{k}: value unreadable: {e}")),
    });
    if problems.is_empty() {
        Ok(all)
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn keys_inserted_by_one_process_are_read_and_removed_by_another() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("map-xproc");
    let h = MatrixHandler::create(g.as_str(), 16 << 20).unwrap();
    let (map, _) = Map::open_or_create(&h, NAME, 256).unwrap();
    h.matrix().flush_thread_cache();
    let base = h.stats().unwrap().used_bytes;
    let mut child = spawn("child_role_map", "inserter", g.as_str(), &[]);
    assert_eq!(child.line().as_deref(), Some("inserted"));
    assert!(child.wait_success(Duration::from_secs(30)));
    // The writer is gone: recovery must find nothing of the map's to take.
    h.recover().unwrap();
    let all = audit(&h, &map).unwrap();
    assert_eq!(all.len(), 200);
    for k in 0..200 {
        let version = if k % 3 == 0 { 2 } else { 1 };
        assert_eq!(all[&key(k)], words_of(k, version), "key {k}");
        assert!(map.remove(&key(k)).unwrap());
    }
    assert!(map.is_empty());
    h.matrix().flush_thread_cache();
    assert_eq!(
        h.stats().unwrap().used_bytes,
        base,
        "every removed value was freed"
    );
    matrix_testkit::check_invariants(&h).unwrap();
}

#[test]
fn a_writer_killed_at_every_map_crash_point_leaks_nothing() {
    let _dog = watchdog(Duration::from_secs(300));
    let mut failures = Vec::new();
    let mut kills = 0;
    for point in fault::SHM_MAP {
        for skip in [0u32, 5] {
            let g = SegmentGuard::new("map-crash");
            let h = MatrixHandler::create(g.as_str(), 16 << 20).unwrap();
            let (map, _) = Map::open_or_create(&h, NAME, 256).unwrap();
            // The root registry and the map's block.
            h.matrix().flush_thread_cache();
            let base = h.stats().unwrap().used_bytes;
            let mut child = spawn(
                "child_role_map",
                "crasher",
                g.as_str(),
                &[("POINT", point.to_string()), ("SKIP", skip.to_string())],
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(s) = child.child.try_wait().unwrap() {
                    break s;
                }
                assert!(Instant::now() < deadline, "child hung");
                std::thread::sleep(Duration::from_millis(5));
            };
            if status.signal() != Some(libc::SIGKILL) {
                failures.push(format!(
                    "point {point} skip {skip}: not killed there ({status})"
                ));
                continue;
            }
            kills += 1;
            let matrix_report = h.recover().unwrap();
            let map_report = map.recover().unwrap();
            if map_report.intents != 1 {
                failures.push(format!(
                    "point {point} skip {skip}: {map_report:?} (one intent expected)"
                ));
            }
            if let Err(v) = matrix_testkit::check_invariants(&h) {
                failures.push(format!("point {point} skip {skip}: after recovery: {v}"));
                continue;
            }
            let keys = match audit(&h, &map) {
                Ok(all) => all.len(),
                Err(e) => {
                    failures.push(format!("point {point} skip {skip}: {e}"));
                    continue;
                }
            };
            println!(
                "    point {point} skip {skip}: {keys} keys, {map_report:?}, allocator freed {} blocks",
                matrix_report.blocks
            );
            // Every key still works: overwrite, read, remove.
            let mut ids = Vec::new();
            map.for_each(|k, _| ids.push(k.to_owned()));
            for k in &ids {
                if !map.remove(k).unwrap() {
                    failures.push(format!("point {point} skip {skip}: {k} not removable"));
                }
            }
            h.matrix().flush_thread_cache();
            h.consolidate().unwrap();
            let s = h.stats().unwrap();
            if s.used_bytes != base {
                failures.push(format!(
                    "point {point} skip {skip}: {} bytes leaked ({s:?})",
                    s.used_bytes - base
                ));
            }
        }
    }
    println!("    {kills} kills at map crash points");
    assert!(failures.is_empty(), "{failures:#?}");
}
