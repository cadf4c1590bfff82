//! The race matrix of `ShmMap`: every pair of operations that can touch one
//! slot at the same moment, run on the same keys at once, many rounds, with
//! a check after each round (`matrix_testkit::race`). Each test prints
//! `race-matrix | pair | mode | runs | iterations | result`, as the
//! allocator's matrix does (`MATRIX_RACE_SECONDS` sets every budget).
//!
//! Values are `ShmVec<u64>` buffers holding `[key, round, side, …]`, so a
//! read that returned freed or foreign memory shows as a wrong value, and
//! every pair ends by removing everything and checking that the segment
//! has not a byte still used.

use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::dynamic::{OwnsBlocks, ShmString, ShmVec};
use matrix_internals::ShmMap;
use matrix_testkit::race::{self, ChildSide, RaceConfig, RaceFailure, RaceReport};
use matrix_testkit::segment::SegmentName;
use matrix_testkit::stress::child::Launcher;
use std::collections::HashMap;

type Map<'h> = ShmMap<ShmString, ShmVec<u64>, &'h MatrixHandler>;

/// Keys raced per round (both sides walk them in the same order).
const KEYS: usize = 16;
const SEGMENT: u32 = 8 << 20;

const SIDES: &[ChildSide] = &[ChildSide {
    name: "map-remove",
    op: |h, words| {
        // words: map offset, round.
        let map = Map::open_at(h, words[0] as u32).expect("open the map");
        (0..KEYS).fold(0, |acc, i| {
            let removed = map.remove(&key(words[1], i)).expect("remove");
            acc | ((removed as u64) << i)
        })
    },
}];

/// Children re-run this binary with a filter naming this test.
#[test]
fn race_child() {
    if let Some(code) = race::run_child(SIDES) {
        std::process::exit(code);
    }
}

fn launcher() -> Launcher {
    Launcher::current_exe_with_args(["race_child", "--exact", "--nocapture", "--test-threads=1"])
        .expect("current exe")
}

fn cfg() -> RaceConfig {
    RaceConfig {
        targets_per_round: KEYS as u64,
        ..RaceConfig::default()
    }
    .with_env()
}

fn key(round: u64, i: usize) -> String {
    format!("key-{}-{i}", round % 3)
}

fn value(h: &MatrixHandler, i: usize, round: u64, side: u64) -> ShmVec<u64> {
    let mut words = vec![i as u64, round, side];
    words.extend((0..(i as u64 % 5) * 20).map(|w| w ^ side));
    ShmVec::from_slice(h, &words).expect("value")
}

fn expected(i: usize, round: u64, side: u64) -> Vec<u64> {
    let mut words = vec![i as u64, round, side];
    words.extend((0..(i as u64 % 5) * 20).map(|w| w ^ side));
    words
}

fn read(map: &Map<'_>, h: &MatrixHandler, k: &str) -> Option<Result<Vec<u64>, String>> {
    map.get_with(k, |v| {
        v.as_slice(h).map(|s| s.to_vec()).map_err(|e| e.to_string())
    })
    .expect("get")
}

/// Each key of `map` once, with its value.
fn contents(map: &Map<'_>, h: &MatrixHandler) -> Result<HashMap<String, Vec<u64>>, String> {
    let mut all = HashMap::new();
    let mut dup = None;
    map.for_each(|k, v| {
        let words = v.as_slice(h).map(|s| s.to_vec()).unwrap_or_default();
        if all.insert(k.to_owned(), words).is_some() {
            dup = Some(k.to_owned());
        }
    });
    match dup {
        Some(k) => Err(format!("key {k:?} is live twice")),
        None => Ok(all),
    }
}

fn record(pair: &str, result: Result<RaceReport, RaceFailure>, end: Result<(), String>) {
    match (&result, &end) {
        (Ok(r), Ok(())) => println!(
            "race-matrix | {pair} | {} | {} | {} | pass ({:.1?})",
            r.mode, r.runs, r.iterations, r.elapsed
        ),
        (Ok(r), Err(e)) => {
            println!(
                "race-matrix | {pair} | {} | {} | {} | FAIL at the end: {e}",
                r.mode, r.runs, r.iterations
            );
            panic!("{pair}: after {} iterations: {e}", r.iterations);
        }
        (Err(f), _) => {
            println!(
                "race-matrix | {pair} | {} | {} | {} | FAIL: {}",
                f.report.mode, f.report.runs, f.report.iterations, f.message
            );
            panic!("{pair}: {f}");
        }
    }
}

/// The end of every pair: empty the map, free it, and find the segment
/// with no block still used and every invariant holding.
fn all_back(h: &MatrixHandler, map: Map<'_>) -> Result<(), String> {
    map.destroy().map_err(|e| e.to_string())?;
    h.recover().map_err(|e| e.to_string())?;
    h.matrix().flush_thread_cache();
    h.consolidate().map_err(|e| e.to_string())?;
    matrix_testkit::check_invariants(h).map_err(|v| v.to_string())?;
    let used = h.stats().map_err(|e| e.to_string())?.used_bytes;
    if used != 0 {
        return Err(format!("{used} bytes still used after removing every key"));
    }
    Ok(())
}

fn fill(map: &Map<'_>, h: &MatrixHandler, round: u64, which: impl Fn(usize) -> bool) {
    for i in (0..KEYS).filter(|&i| which(i)) {
        map.insert(&key(round, i), value(h, i, round, 0))
            .expect("setup insert");
    }
}

#[test]
#[ignore = "BUG: two inserts of one new key now and then both link it (seen in a loaded clean-clone CI run: round 8880, key live twice); the claim + second-scan protocol has a window"]
fn insert_x_insert_same_key() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, 64).unwrap();
    let result = race::pair(
        &cfg(),
        |round| {
            map.clear().map_err(|e| e.to_string())?;
            Ok(round)
        },
        |&r| {
            (0..KEYS)
                .map(|i| map.insert(&key(r, i), value(&h, i, r, 1)).unwrap())
                .collect::<Vec<_>>()
        },
        |&r| {
            (0..KEYS)
                .map(|i| map.insert(&key(r, i), value(&h, i, r, 2)).unwrap())
                .collect::<Vec<_>>()
        },
        |_, r, a, b| {
            let all = contents(&map, &h)?;
            if all.len() != KEYS {
                return Err(format!("{} keys after inserting {KEYS}", all.len()));
            }
            for i in 0..KEYS {
                if a[i] == b[i] {
                    return Err(format!("key {i}: both inserts say replaced = {}", a[i]));
                }
                let v = &all[&key(r, i)];
                // The one that replaced is the later one: its value stays.
                let side = if a[i] { 1 } else { 2 };
                if *v != expected(i, r, side) {
                    return Err(format!("key {i}: {v:?}, not side {side}'s value"));
                }
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    record("ShmMap insert × insert (one key)", result, end);
}

#[test]
#[ignore = "BUG: a remove racing an overwriting insert of a present key now and then finds neither entry (seen in a loaded clean-clone CI run: insert replaced, remove found nothing)"]
fn insert_x_remove() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, 64).unwrap();
    let result = race::pair(
        &cfg(),
        |round| {
            map.clear().map_err(|e| e.to_string())?;
            fill(&map, &h, round, |i| i % 2 == 0);
            Ok(round)
        },
        |&r| {
            (0..KEYS)
                .map(|i| map.insert(&key(r, i), value(&h, i, r, 1)).unwrap())
                .collect::<Vec<_>>()
        },
        |&r| {
            (0..KEYS)
                .map(|i| map.remove(&key(r, i)).unwrap())
                .collect::<Vec<_>>()
        },
        |_, r, inserted, removed| {
            let all = contents(&map, &h)?;
            for i in 0..KEYS {
                let present = all.get(&key(r, i));
                // Each outcome is one of the two orders of the two operations.
                let ok = match (i % 2 == 0, inserted[i], removed[i], present) {
                    // present before: insert then remove, or remove then insert
                    (true, true, true, None) => true,
                    (true, false, true, Some(v)) => *v == expected(i, r, 1),
                    // absent before: insert then remove, or remove then insert
                    (false, false, true, None) => true,
                    (false, false, false, Some(v)) => *v == expected(i, r, 1),
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "key {i} (present before: {}): insert replaced {}, remove found {}, now {present:?}",
                        i % 2 == 0,
                        inserted[i],
                        removed[i]
                    ));
                }
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    record("ShmMap insert × remove", result, end);
}

#[test]
fn remove_x_get() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, 64).unwrap();
    let result = race::pair(
        &cfg(),
        |round| {
            map.clear().map_err(|e| e.to_string())?;
            fill(&map, &h, round, |_| true);
            Ok(round)
        },
        |&r| {
            (0..KEYS)
                .map(|i| read(&map, &h, &key(r, i)))
                .collect::<Vec<_>>()
        },
        |&r| {
            (0..KEYS)
                .map(|i| map.remove(&key(r, i)).unwrap())
                .collect::<Vec<_>>()
        },
        |_, r, got, removed| {
            for i in 0..KEYS {
                if !removed[i] {
                    return Err(format!("key {i}: remove did not find it"));
                }
                match &got[i] {
                    None => {}
                    Some(Ok(v)) if *v == expected(i, r, 0) => {}
                    other => return Err(format!("key {i}: the get returned {other:?}")),
                }
            }
            if !map.is_empty() {
                return Err(format!("{} keys left", map.len()));
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    record("ShmMap remove × get", result, end);
}

#[test]
fn remove_x_remove() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, 64).unwrap();
    let result = race::pair(
        &cfg(),
        |round| {
            map.clear().map_err(|e| e.to_string())?;
            fill(&map, &h, round, |_| true);
            Ok(round)
        },
        |&r| {
            (0..KEYS)
                .map(|i| map.remove(&key(r, i)).unwrap())
                .collect::<Vec<_>>()
        },
        |&r| {
            (0..KEYS)
                .map(|i| map.remove(&key(r, i)).unwrap())
                .collect::<Vec<_>>()
        },
        |_, _, a, b| {
            for i in 0..KEYS {
                if a[i] == b[i] {
                    return Err(format!("key {i}: both removes returned {}", a[i]));
                }
            }
            if !map.is_empty() {
                return Err(format!("{} keys left", map.len()));
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    record("ShmMap remove × remove", result, end);
}

#[test]
fn remove_x_remove_processes() {
    let name = SegmentName::new("map-race");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let map = Map::create(&h, 64).unwrap();
    let all_keys = (1u64 << KEYS) - 1;
    let result = race::process_pair(
        &cfg(),
        &launcher(),
        name.as_str(),
        "map-remove",
        |round| {
            map.clear().map_err(|e| e.to_string())?;
            fill(&map, &h, round, |_| true);
            Ok((round, vec![map.offset() as u64, round]))
        },
        |&r| {
            (0..KEYS).fold(0u64, |acc, i| {
                acc | ((map.remove(&key(r, i)).unwrap() as u64) << i)
            })
        },
        |_, _, a, b| {
            if a & b != 0 || a | b != all_keys {
                return Err(format!("removes found {a:#x} here and {b:#x} in the child"));
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    record("ShmMap remove × remove", result, end);
}

/// A full 4-slot map: removing `old` leaves one free slot, so inserting
/// `new` must reuse it, while a get of `old` runs.
#[test]
fn insert_into_reused_slot_x_get_of_old_key() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, 3).unwrap();
    for i in 0..3 {
        map.insert(&format!("fixed-{i}"), value(&h, i, 0, 9))
            .unwrap();
    }
    let cfg = RaceConfig {
        targets_per_round: 1,
        ..cfg()
    };
    let result = race::pair(
        &cfg,
        |round| {
            map.insert("old", value(&h, 1, round, 3))
                .map_err(|e| e.to_string())?;
            if map.len() != 4 {
                return Err(format!("{} keys, not a full map of 4", map.len()));
            }
            Ok(round)
        },
        |_| read(&map, &h, "old"),
        |&r| {
            let removed = map.remove("old").unwrap();
            let inserted = map.insert("new", value(&h, 2, r, 4));
            (removed, inserted)
        },
        |_, r, got, (removed, inserted)| {
            if !removed || inserted != Ok(false) {
                return Err(format!("remove {removed}, insert {inserted:?}"));
            }
            match got {
                None => {}
                Some(Ok(v)) if v == expected(1, r, 3) => {}
                other => return Err(format!("the get of the old key returned {other:?}")),
            }
            if read(&map, &h, "old").is_some() {
                return Err("the old key is still there".into());
            }
            match read(&map, &h, "new") {
                Some(Ok(v)) if v == expected(2, r, 4) => {}
                other => return Err(format!("the new key reads {other:?}")),
            }
            if !map.remove("new").unwrap() {
                return Err("the new key could not be removed".into());
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    record(
        "ShmMap insert into a reused slot × get of the old key",
        result,
        end,
    );
}

#[test]
fn values_are_freed_whole() {
    // The values' own blocks go with their entries: a value whose blocks
    // were freed elsewhere is refused at insert, and the map is unchanged.
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, 8).unwrap();
    let mut v = value(&h, 0, 0, 0);
    let copy = v;
    v.free_blocks(&h).unwrap();
    assert!(matches!(
        map.insert("k", copy),
        Err(matrix_internals::ShmMapError::Value(_))
    ));
    assert!(map.is_empty());
    all_back(&h, map).unwrap();
}
