//! The race matrix of `ShmMap`: every pair of operations that can touch one
//! slot at the same moment, run on the same keys at once, many rounds, with
//! a check after each round (`matrix_testkit::race`). Each test prints
//! `race-matrix | pair | mode | runs | iterations | result`, as the
//! allocator's matrix does (`MATRIX_RACE_SECONDS` sets every budget).
//!
//! | pair | tests |
//! |---|---|
//! | insert × insert, one key | `insert_x_insert_same_key_{wide,narrow,processes}`, `insert_x_insert_same_key_as_a_nearer_slot_frees` |
//! | insert × insert, keys of one chain | `insert_x_insert_other_keys_narrow` |
//! | insert × remove | `insert_x_remove_{wide,narrow,processes}` |
//! | insert × get | `insert_x_get_{wide,narrow}` |
//! | remove × remove | `remove_x_remove_{wide,narrow,processes}` |
//! | remove × get | `remove_x_get_{wide,narrow}` |
//! | slot reuse after a tombstone × a get of the old key | `insert_into_reused_slot_x_get_of_old_key` |
//! | slot reuse after a tombstone × scans past it | `slot_reuse_x_scans_past_it` |
//! | recover × insert / remove / get / recover, after a writer died | `recover_x_ops_after_a_dead_writer` |
//! | recover × live writers | `recover_x_live_writers{,_processes}` |
//! | for_each × insert / remove | `for_each_x_writers_narrow` |
//!
//! Each pair runs in up to two shapes. *Wide*: 16 keys spread over a
//! 128-slot map. *Narrow*: 3 keys in a 4-slot map, so that every key is in
//! one probe chain and the sides keep meeting each other's claims and
//! tombstones, with both sides stalling inside the windows between
//! reading a slot word (or checking an entry's block, or claiming a slot)
//! and acting on what was read (`fault::stall_at`). On the protocol before
//! the fix of issue 12 the narrow forms of the pairs that had a bug failed
//! within a few hundred rounds (see `matrix-testkit`'s README).
//!
//! Values are `ShmVec<u64>` buffers holding `[key, round, side, …]`, so a
//! read that returned freed or foreign memory shows as a wrong value, and
//! every pair ends by removing everything and checking that the segment
//! has not a byte still used.

use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::dynamic::{OwnsBlocks, ShmString, ShmVec};
use matrix_internals::{fault, ShmMap};
use matrix_testkit::race::{self, ChildSide, RaceConfig};
use matrix_testkit::segment::SegmentName;
use matrix_testkit::stress::child::{self, Launcher};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

type Map<'h> = ShmMap<ShmString, ShmVec<u64>, &'h MatrixHandler>;

const SEGMENT: u32 = 8 << 20;

/// How a pair runs: the map's capacity, the keys raced per round (both
/// sides walk them in the same order), and whether both sides yield
/// inside the protocol's windows.
#[derive(Clone, Copy, Debug)]
struct Shape {
    capacity: u32,
    keys: usize,
    stall: bool,
}

/// 16 keys over a 128-slot map.
const WIDE: Shape = Shape {
    capacity: 64,
    keys: 16,
    stall: false,
};

/// 3 keys in a 4-slot map: one probe chain, both sides yielding in the
/// windows.
const NARROW: Shape = Shape {
    capacity: 3,
    keys: 3,
    stall: true,
};

/// The windows of the map's protocol a stalled side stalls in: between a
/// slot read and what is decided on it, between an entry's block checked
/// and its bytes read, and between a claim and its second scan.
const WINDOWS: &[u32] = &[
    fault::MAP_SLOT_READ,
    fault::MAP_ENTRY_CHECKED,
    fault::MAP_SLOT_CLAIMED,
];

/// The windows of a writer between unlinking an entry (remove, overwrite)
/// and freeing it, for a side whose rival judges an entry's fate.
const UNLINK_WINDOWS: &[u32] = &[fault::MAP_LINKED, fault::MAP_UNLINKED];

impl Shape {
    fn name(self) -> &'static str {
        if self.stall {
            "narrow"
        } else {
            "wide"
        }
    }

    /// Runs `op` as one side of a round (stalling in the windows if the
    /// shape says so).
    fn side<R>(self, op: impl FnOnce() -> R) -> R {
        if self.stall {
            fault::stall_at(WINDOWS);
        }
        let r = op();
        fault::stall_at(&[]);
        r
    }

    fn words(self) -> [u64; 3] {
        [self.capacity as u64, self.keys as u64, self.stall as u64]
    }

    fn from_words(w: &[u64]) -> Shape {
        Shape {
            capacity: w[0] as u32,
            keys: w[1] as usize,
            stall: w[2] != 0,
        }
    }
}

/// Child sides; words: map offset, round, the shape's three words, side.
const SIDES: &[ChildSide] = &[
    ChildSide {
        name: "map-remove",
        op: |h, words| {
            let map = Map::open_at(h, words[0] as u32).expect("open the map");
            let shape = Shape::from_words(&words[2..5]);
            shape.side(|| {
                (0..shape.keys).fold(0, |acc, i| {
                    let removed = map.remove(&key(words[1], i)).expect("remove");
                    acc | ((removed as u64) << i)
                })
            })
        },
    },
    ChildSide {
        name: "map-insert",
        op: |h, words| {
            let map = Map::open_at(h, words[0] as u32).expect("open the map");
            let shape = Shape::from_words(&words[2..5]);
            shape.side(|| {
                (0..shape.keys).fold(0, |acc, i| {
                    let v = value(h, i, words[1], words[5]);
                    let replaced = map.insert(&key(words[1], i), v).expect("insert");
                    acc | ((replaced as u64) << i)
                })
            })
        },
    },
];

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

fn cfg(shape: Shape) -> RaceConfig {
    RaceConfig {
        targets_per_round: shape.keys as u64,
        ..RaceConfig::default()
    }
    .with_env()
}

fn key(round: u64, i: usize) -> String {
    format!("key-{}-{i}", round % 3)
}

fn value(h: &MatrixHandler, i: usize, round: u64, side: u64) -> ShmVec<u64> {
    ShmVec::from_slice(h, &expected(i, round, side)).expect("value")
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

/// The end of every pair: empty the map, free it, and find the segment
/// with no block still used and every invariant holding.
fn all_back(h: &MatrixHandler, map: Map<'_>) -> Result<(), String> {
    map.destroy().map_err(|e| e.to_string())?;
    race::all_back(h)
}

/// Empties the map and inserts the keys `which` picks, with side 0's
/// value.
fn refill(
    map: &Map<'_>,
    h: &MatrixHandler,
    shape: Shape,
    round: u64,
    which: impl Fn(usize) -> bool,
) -> Result<(), String> {
    map.clear().map_err(|e| e.to_string())?;
    for i in (0..shape.keys).filter(|&i| which(i)) {
        map.insert(&key(round, i), value(h, i, round, 0))
            .map_err(|e| format!("setup insert: {e}"))?;
    }
    Ok(())
}

fn inserts(map: &Map<'_>, h: &MatrixHandler, shape: Shape, r: u64, side: u64) -> Vec<bool> {
    shape.side(|| {
        (0..shape.keys)
            .map(|i| map.insert(&key(r, i), value(h, i, r, side)).unwrap())
            .collect()
    })
}

fn removes(map: &Map<'_>, shape: Shape, r: u64) -> Vec<bool> {
    shape.side(|| {
        (0..shape.keys)
            .map(|i| map.remove(&key(r, i)).unwrap())
            .collect()
    })
}

fn gets(
    map: &Map<'_>,
    h: &MatrixHandler,
    shape: Shape,
    r: u64,
) -> Vec<Option<Result<Vec<u64>, String>>> {
    shape.side(|| (0..shape.keys).map(|i| read(map, h, &key(r, i))).collect())
}

fn bits(mask: u64, n: usize) -> Vec<bool> {
    (0..n).map(|i| mask >> i & 1 == 1).collect()
}

// ---- insert × insert, one key ----

/// Two inserts of one new key: exactly one links it, the other replaces
/// that entry, and the later one's value stays.
fn check_insert_x_insert(
    map: &Map<'_>,
    h: &MatrixHandler,
    shape: Shape,
    r: u64,
    a: &[bool],
    b: &[bool],
) -> Result<(), String> {
    let all = contents(map, h)?;
    if all.len() != shape.keys {
        return Err(format!("{} keys after inserting {}", all.len(), shape.keys));
    }
    for i in 0..shape.keys {
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
}

fn insert_x_insert_same_key(shape: Shape) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |_| false).map(|()| round),
        |&r| inserts(&map, &h, shape, r, 1),
        |&r| inserts(&map, &h, shape, r, 2),
        |_, r, a, b| check_insert_x_insert(&map, &h, shape, r, &a, &b),
    );
    let end = all_back(&h, map);
    let pair = format!("ShmMap insert × insert (one key, {})", shape.name());
    race::record(&pair, result, end);
}

#[test]
fn insert_x_insert_same_key_wide() {
    insert_x_insert_same_key(WIDE);
}

#[test]
fn insert_x_insert_same_key_narrow() {
    insert_x_insert_same_key(NARROW);
}

#[test]
fn insert_x_insert_same_key_processes() {
    let shape = NARROW;
    let name = SegmentName::new("map-race-ii");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::process_pair(
        &cfg(shape),
        &launcher(),
        name.as_str(),
        "map-insert",
        |round| {
            refill(&map, &h, shape, round, |_| false)?;
            let mut words = vec![map.offset() as u64, round];
            words.extend(shape.words());
            words.push(2);
            Ok((round, words))
        },
        |&r| inserts(&map, &h, shape, r, 1),
        |_, r, a, b| check_insert_x_insert(&map, &h, shape, r, &a, &bits(b, shape.keys)),
    );
    let end = all_back(&h, map);
    race::record("ShmMap insert × insert (one key, narrow)", result, end);
}

/// The claim order that a plain race rarely produces: one insert of the
/// key claims the chain's last free slot; the other first removes the
/// keys before it, then claims one of their tombstones, nearer the home
/// slot but later. Both second scans must still let only one link.
#[test]
fn insert_x_insert_same_key_as_a_nearer_slot_frees() {
    let shape = NARROW;
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let target = shape.keys - 1;
    let cfg = RaceConfig {
        targets_per_round: 1,
        ..cfg(shape)
    };
    let result = race::pair(
        &cfg,
        |round| refill(&map, &h, shape, round, |i| i != target).map(|()| round),
        |&r| {
            shape.side(|| {
                let removed = (0..target).all(|i| map.remove(&key(r, i)).unwrap());
                (
                    removed,
                    map.insert(&key(r, target), value(&h, target, r, 1))
                        .unwrap(),
                )
            })
        },
        |&r| {
            shape.side(|| {
                map.insert(&key(r, target), value(&h, target, r, 2))
                    .unwrap()
            })
        },
        |_, r, (removed, a), b| {
            if !removed {
                return Err("a neighbour was not removed".into());
            }
            let all = contents(&map, &h)?;
            if a == b || all.len() != 1 {
                return Err(format!("replaced: {a} and {b}; the map holds {all:?}"));
            }
            let side = if a { 1 } else { 2 };
            match all.get(&key(r, target)) {
                Some(v) if *v == expected(target, r, side) => Ok(()),
                other => Err(format!("the key reads {other:?}, not side {side}'s value")),
            }
        },
    );
    let end = all_back(&h, map);
    race::record(
        "ShmMap insert × insert (one key, a nearer slot freeing)",
        result,
        end,
    );
}

// ---- insert × insert, other keys of one chain ----

#[test]
fn insert_x_insert_other_keys_narrow() {
    let shape = NARROW;
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let mine = |side: u64, i: usize| (i % 2 == 0) == (side == 1);
    let insert_some = |r: u64, side: u64| {
        shape.side(|| {
            (0..shape.keys)
                .filter(|&i| mine(side, i))
                .map(|i| map.insert(&key(r, i), value(&h, i, r, side)).unwrap())
                .collect::<Vec<_>>()
        })
    };
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |_| false).map(|()| round),
        |&r| insert_some(r, 1),
        |&r| insert_some(r, 2),
        |_, r, a, b| {
            if a.iter().chain(&b).any(|&replaced| replaced) {
                return Err(format!("an insert of a new key replaced: {a:?} {b:?}"));
            }
            let all = contents(&map, &h)?;
            if all.len() != shape.keys {
                return Err(format!("{} keys after inserting {}", all.len(), shape.keys));
            }
            for i in 0..shape.keys {
                let side = if mine(1, i) { 1 } else { 2 };
                if all[&key(r, i)] != expected(i, r, side) {
                    return Err(format!("key {i}: {:?}", all[&key(r, i)]));
                }
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    race::record("ShmMap insert × insert (keys of one chain)", result, end);
}

// ---- insert × remove ----

/// Each outcome is one of the two orders of the two operations.
fn check_insert_x_remove(
    map: &Map<'_>,
    h: &MatrixHandler,
    shape: Shape,
    r: u64,
    inserted: &[bool],
    removed: &[bool],
) -> Result<(), String> {
    let all = contents(map, h)?;
    for i in 0..shape.keys {
        let present = all.get(&key(r, i));
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
}

fn insert_x_remove(shape: Shape) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |i| i % 2 == 0).map(|()| round),
        |&r| inserts(&map, &h, shape, r, 1),
        |&r| removes(&map, shape, r),
        |_, r, inserted, removed| check_insert_x_remove(&map, &h, shape, r, &inserted, &removed),
    );
    let end = all_back(&h, map);
    race::record(
        &format!("ShmMap insert × remove ({})", shape.name()),
        result,
        end,
    );
}

#[test]
fn insert_x_remove_wide() {
    insert_x_remove(WIDE);
}

#[test]
fn insert_x_remove_narrow() {
    insert_x_remove(NARROW);
}

#[test]
fn insert_x_remove_processes() {
    let shape = NARROW;
    let name = SegmentName::new("map-race-ir");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::process_pair(
        &cfg(shape),
        &launcher(),
        name.as_str(),
        "map-remove",
        |round| {
            refill(&map, &h, shape, round, |i| i % 2 == 0)?;
            let mut words = vec![map.offset() as u64, round];
            words.extend(shape.words());
            Ok((round, words))
        },
        |&r| inserts(&map, &h, shape, r, 1),
        |_, r, inserted, removed| {
            check_insert_x_remove(&map, &h, shape, r, &inserted, &bits(removed, shape.keys))
        },
    );
    let end = all_back(&h, map);
    race::record("ShmMap insert × remove (narrow)", result, end);
}

// ---- insert × get ----

fn insert_x_get(shape: Shape) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |i| i % 2 == 0).map(|()| round),
        |&r| inserts(&map, &h, shape, r, 1),
        |&r| gets(&map, &h, shape, r),
        |_, r, inserted, got| {
            let all = contents(&map, &h)?;
            for i in 0..shape.keys {
                let before = i % 2 == 0;
                if inserted[i] != before {
                    return Err(format!(
                        "key {i} (present before: {before}): replaced {}",
                        inserted[i]
                    ));
                }
                // The get sees the value before or after the insert, whole.
                let ok = match &got[i] {
                    None => !before,
                    Some(Ok(v)) => *v == expected(i, r, 1) || (before && *v == expected(i, r, 0)),
                    Some(Err(_)) => false,
                };
                if !ok {
                    return Err(format!(
                        "key {i} (present before: {before}): the get returned {:?}",
                        got[i]
                    ));
                }
                if all.get(&key(r, i)) != Some(&expected(i, r, 1)) {
                    return Err(format!("key {i}: now {:?}", all.get(&key(r, i))));
                }
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    race::record(
        &format!("ShmMap insert × get ({})", shape.name()),
        result,
        end,
    );
}

#[test]
fn insert_x_get_wide() {
    insert_x_get(WIDE);
}

#[test]
fn insert_x_get_narrow() {
    insert_x_get(NARROW);
}

// ---- remove × get ----

fn remove_x_get(shape: Shape) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |_| true).map(|()| round),
        |&r| gets(&map, &h, shape, r),
        |&r| removes(&map, shape, r),
        |_, r, got, removed| {
            for i in 0..shape.keys {
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
    race::record(
        &format!("ShmMap remove × get ({})", shape.name()),
        result,
        end,
    );
}

#[test]
fn remove_x_get_wide() {
    remove_x_get(WIDE);
}

#[test]
fn remove_x_get_narrow() {
    remove_x_get(NARROW);
}

// ---- remove × remove ----

fn check_remove_x_remove(map: &Map<'_>, a: &[bool], b: &[bool]) -> Result<(), String> {
    for i in 0..a.len() {
        if a[i] == b[i] {
            return Err(format!("key {i}: both removes returned {}", a[i]));
        }
    }
    if !map.is_empty() {
        return Err(format!("{} keys left", map.len()));
    }
    Ok(())
}

fn remove_x_remove(shape: Shape) {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |_| true).map(|()| round),
        |&r| removes(&map, shape, r),
        |&r| removes(&map, shape, r),
        |_, _, a, b| check_remove_x_remove(&map, &a, &b),
    );
    let end = all_back(&h, map);
    race::record(
        &format!("ShmMap remove × remove ({})", shape.name()),
        result,
        end,
    );
}

#[test]
fn remove_x_remove_wide() {
    remove_x_remove(WIDE);
}

#[test]
fn remove_x_remove_narrow() {
    remove_x_remove(NARROW);
}

#[test]
fn remove_x_remove_processes() {
    let shape = WIDE;
    let name = SegmentName::new("map-race");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::process_pair(
        &cfg(shape),
        &launcher(),
        name.as_str(),
        "map-remove",
        |round| {
            refill(&map, &h, shape, round, |_| true)?;
            let mut words = vec![map.offset() as u64, round];
            words.extend(shape.words());
            Ok((round, words))
        },
        |&r| removes(&map, shape, r),
        |_, _, a, b| check_remove_x_remove(&map, &a, &bits(b, shape.keys)),
    );
    let end = all_back(&h, map);
    race::record("ShmMap remove × remove (wide)", result, end);
}

// ---- for_each × writers ----

/// The key of [`decoy`] entries: never inserted, as long as the raced keys.
const DECOY_KEY: &str = "GARBAGE";

/// A block the size of an entry of a raced key, holding the image of an
/// entry whose key is [`DECOY_KEY`] (hash | key_len | value_size | value |
/// key; the value starts at byte 16 as it is at most 16-aligned).
fn decoy(h: &MatrixHandler) -> matrix_handler::Block<u8> {
    let value_size = std::mem::size_of::<ShmVec<u64>>();
    let mut image = vec![0u8; 16 + value_size];
    image[8..12].copy_from_slice(&(DECOY_KEY.len() as u32).to_le_bytes());
    image[12..16].copy_from_slice(&(value_size as u32).to_le_bytes());
    image.extend_from_slice(DECOY_KEY.as_bytes());
    let mut b = h.allocate_slice::<u8>(image.len()).unwrap();
    h.write_slice(&mut b, &image).unwrap();
    b
}

/// A walk over the map while one key of the chain is overwritten, removed
/// and inserted again: the keys that stay are passed once each with their
/// value, and no pair comes from freed memory.
#[test]
fn for_each_x_writers_narrow() {
    let shape = NARROW;
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let churned = shape.keys - 1;
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |_| true).map(|()| round),
        |&r| {
            shape.side(|| {
                let mut seen = Vec::new();
                map.for_each(|k, v| {
                    // The churned key's buffer may be freed meanwhile.
                    let words = (k != key(r, churned)).then(|| v.as_slice(&h).map(|s| s.to_vec()));
                    seen.push((k.to_owned(), words));
                });
                seen
            })
        },
        |&r| {
            shape.side(|| {
                let k = key(r, churned);
                // After each step, a block of an entry's size that most
                // likely reuses the entry just freed, holding what reads
                // as an entry of a key never inserted.
                let mut decoys = Vec::new();
                let mut ok = true;
                for n in 1..4 {
                    ok &= map.insert(&k, value(&h, churned, r, n)).unwrap();
                    decoys.push(decoy(&h));
                }
                ok &= map.remove(&k).unwrap();
                decoys.push(decoy(&h));
                ok &= !map.insert(&k, value(&h, churned, r, 4)).unwrap();
                for d in decoys {
                    h.free(d).unwrap();
                }
                ok
            })
        },
        |_, r, seen, ok| {
            if !ok {
                return Err("an insert or remove of the churned key went wrong".into());
            }
            if seen.iter().any(|(k, _)| k == DECOY_KEY) {
                return Err(format!(
                    "the walk passed a pair from freed memory: {seen:?}"
                ));
            }
            for i in 0..churned {
                let passed: Vec<_> = seen.iter().filter(|(k, _)| *k == key(r, i)).collect();
                match passed.as_slice() {
                    [(_, Some(Ok(v)))] if *v == expected(i, r, 0) => {}
                    other => return Err(format!("key {i} was passed as {other:?}")),
                }
            }
            let churns = seen.iter().filter(|(k, _)| *k == key(r, churned)).count();
            if churns > 2 || seen.len() != churned + churns {
                return Err(format!("the walk passed {seen:?}"));
            }
            let all = contents(&map, &h)?;
            if all.len() != shape.keys || all[&key(r, churned)] != expected(churned, r, 4) {
                return Err(format!("contents {all:?}"));
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    race::record("ShmMap for_each × writers", result, end);
}

// ---- slot reuse ----

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
        ..cfg(NARROW)
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
        |_| NARROW.side(|| read(&map, &h, "old")),
        |&r| {
            NARROW.side(|| {
                let removed = map.remove("old").unwrap();
                let inserted = map.insert("new", value(&h, 2, r, 4));
                (removed, inserted)
            })
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
    race::record(
        "ShmMap insert into a reused slot × get of the old key",
        result,
        end,
    );
}

/// One chain of 3 keys: one side removes the first and inserts a fresh key
/// (reusing a tombstone) over and over, while the other side looks up the
/// keys behind it, which are never removed: every lookup finds its key.
#[test]
fn slot_reuse_x_scans_past_it() {
    let shape = NARROW;
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |_| true).map(|()| round),
        |&r| {
            shape.side(|| {
                let mut ok = map.remove(&key(r, 0)).unwrap();
                for n in 0..4 {
                    ok &= !map.insert("fresh", value(&h, 7, r, n)).unwrap();
                    ok &= map.remove("fresh").unwrap();
                }
                ok &= !map.insert("fresh", value(&h, 7, r, 9)).unwrap();
                ok
            })
        },
        |&r| {
            shape.side(|| {
                (0..4)
                    .flat_map(|_| (1..shape.keys).map(|i| (i, read(&map, &h, &key(r, i)))))
                    .collect::<Vec<_>>()
            })
        },
        |_, r, ok, got| {
            if !ok {
                return Err("a remove or insert of the reusing side went wrong".into());
            }
            for (i, g) in got {
                if g != Some(Ok(expected(i, r, 0))) {
                    return Err(format!("key {i}, never removed, read {g:?}"));
                }
            }
            let all = contents(&map, &h)?;
            if all.len() != shape.keys || all.get("fresh") != Some(&expected(7, r, 9)) {
                return Err(format!("contents {all:?}"));
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    race::record("ShmMap slot reuse × scans past it", result, end);
}

// ---- recover ----

/// `recover` next to live writers settles nothing of theirs: it only takes
/// intents whose holder is dead.
#[test]
fn recover_x_live_writers() {
    let shape = NARROW;
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::pair(
        &cfg(shape),
        |round| refill(&map, &h, shape, round, |i| i % 2 == 0).map(|()| round),
        |_| shape.side(|| (0..8).try_fold(0, |n, _| map.recover().map(|rep| n + rep.intents))),
        |&r| {
            let inserted = inserts(&map, &h, shape, r, 1);
            let removed = removes(&map, shape, r);
            (inserted, removed)
        },
        |_, _, recovered, (inserted, removed)| {
            match recovered {
                Ok(0) => {}
                other => return Err(format!("recover settled {other:?} intents of live writers")),
            }
            for i in 0..shape.keys {
                if inserted[i] != (i % 2 == 0) || !removed[i] {
                    return Err(format!(
                        "key {i}: replaced {}, removed {}",
                        inserted[i], removed[i]
                    ));
                }
            }
            if !map.is_empty() {
                return Err(format!("{} keys left", map.len()));
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    race::record("ShmMap recover × live writers", result, end);
}

/// The same with the writer in another process: it is alive, so its
/// intents are not taken however often `recover` runs.
#[test]
fn recover_x_live_writers_processes() {
    let shape = NARROW;
    let name = SegmentName::new("map-race-rl");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let map = Map::create(&h, shape.capacity).unwrap();
    let result = race::process_pair(
        &cfg(shape),
        &launcher(),
        name.as_str(),
        "map-insert",
        |round| {
            refill(&map, &h, shape, round, |i| i % 2 == 0)?;
            let mut words = vec![map.offset() as u64, round];
            words.extend(shape.words());
            words.push(2);
            Ok((round, words))
        },
        |_| shape.side(|| (0..8).try_fold(0, |n, _| map.recover().map(|rep| n + rep.intents))),
        |_, r, recovered, replaced| {
            match recovered {
                Ok(0) => {}
                other => {
                    return Err(format!(
                        "recover settled {other:?} intents of a live writer"
                    ))
                }
            }
            let all = contents(&map, &h)?;
            for (i, replaced) in bits(replaced, shape.keys).into_iter().enumerate() {
                if replaced != (i % 2 == 0) || all.get(&key(r, i)) != Some(&expected(i, r, 2)) {
                    return Err(format!(
                        "key {i}: replaced {replaced}, now {:?}",
                        all.get(&key(r, i))
                    ));
                }
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    race::record("ShmMap recover × live writers", result, end);
}

/// The role of a writer that dies at a crash point.
const CRASH_ROLE: &str = "map-crasher";
/// The key the dead writer was working on.
const VICTIM: &str = "victim";

/// What the dead writer was doing, and where it died.
const CRASHES: &[(&str, u32)] = &[
    ("insert", fault::MAP_HANDING_OVER),
    ("insert", fault::MAP_ENTRY_READY),
    ("insert", fault::MAP_SLOT_CLAIMED),
    ("insert", fault::MAP_LINKED),
    ("overwrite", fault::MAP_ENTRY_READY),
    ("overwrite", fault::MAP_LINKED),
    ("remove", fault::MAP_UNLINKED),
];

/// A writer that opens the map, starts an operation on [`VICTIM`] and is
/// killed at the crash point it was given.
#[test]
fn crash_child() {
    if std::env::var(child::ENV_ROLE).as_deref() != Ok(CRASH_ROLE) {
        return;
    }
    child::bind_to_parent();
    let var = |name: &str| std::env::var(name).expect(name);
    let h = MatrixHandler::open(&var("MAP_SEGMENT")).unwrap();
    let map = Map::open_at(&h, var("MAP_OFFSET").parse().unwrap()).unwrap();
    fault::arm(var("MAP_POINT").parse().unwrap());
    if var("MAP_OP") == "remove" {
        map.remove(VICTIM).unwrap();
    } else {
        map.insert(VICTIM, value(&h, 5, 0, 5)).unwrap();
    }
    eprintln!("the crash point was not reached");
    std::process::exit(3);
}

/// What the live side of [`recover_x_ops_after_a_dead_writer`] did.
#[derive(Debug)]
enum Live {
    Inserted(bool),
    Removed(bool),
    Got(Option<Result<Vec<u64>, String>>),
    Recovered(usize),
}

/// A writer died in the middle of an operation on one key (at every crash
/// point of insert, overwrite and remove); then `recover` races an insert,
/// a remove or a get of that key, or a second `recover`. Whatever the
/// order, the key ends up as the live operation left it, once, one recover
/// settles the dead intent, and nothing leaks.
#[test]
fn recover_x_ops_after_a_dead_writer() {
    let name = SegmentName::new("map-race-rec");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let map = Map::create(&h, NARROW.capacity).unwrap();
    // The map's block (cached blocks are not counted as used).
    let base = h.stats().unwrap().used_bytes;
    let crasher = Launcher::current_exe_with_args([
        "crash_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .expect("current exe");
    let cfg = RaceConfig {
        targets_per_round: 1,
        ..cfg(NARROW)
    };
    // Rounds: the crash case, and the live operation (0 insert, 1 remove,
    // 2 get, 3 a second recover).
    let case = |round: u64| {
        let k = (round - 1) as usize;
        (CRASHES[k % CRASHES.len()], (k / CRASHES.len()) % 4)
    };
    let result = race::pair(
        &cfg,
        |round| {
            let ((op, point), _) = case(round);
            map.clear().map_err(|e| e.to_string())?;
            // Neighbours in the chain, and the key itself if the dead
            // writer was to overwrite or remove it.
            map.insert("neighbour", value(&h, 3, round, 0))
                .map_err(|e| e.to_string())?;
            if op != "insert" {
                map.insert(VICTIM, value(&h, 5, round, 0))
                    .map_err(|e| e.to_string())?;
            }
            let mut c = crasher
                .spawn(
                    CRASH_ROLE,
                    &[
                        ("MAP_SEGMENT", name.as_str().to_owned()),
                        ("MAP_OFFSET", map.offset().to_string()),
                        ("MAP_POINT", point.to_string()),
                        ("MAP_OP", op.to_owned()),
                    ],
                )
                .map_err(|e| e.to_string())?;
            let status = c
                .wait_timeout(Duration::from_secs(60))
                .map_err(|e| e.to_string())?
                .ok_or("the crashing writer hung")?;
            if status.signal() != Some(libc::SIGKILL) {
                return Err(format!(
                    "{op} at point {point}: not killed there ({status})"
                ));
            }
            // What the dead one still owned goes back first (as documented).
            h.recover().map_err(|e| e.to_string())?;
            Ok(round)
        },
        |_| NARROW.side(|| map.recover()),
        |&r| {
            let (_, live) = case(r);
            fault::stall_at(UNLINK_WINDOWS);
            let result = match live {
                0 => Live::Inserted(map.insert(VICTIM, value(&h, 5, r, 6)).unwrap()),
                1 => Live::Removed(map.remove(VICTIM).unwrap()),
                2 => Live::Got(read(&map, &h, VICTIM)),
                _ => Live::Recovered(map.recover().unwrap().intents),
            };
            fault::stall_at(&[]);
            result
        },
        |round, r, recovered, live| {
            let ((op, point), _) = case(round);
            let at = format!("{op} killed at point {point}");
            let recovered = recovered.map_err(|e| format!("{at}: recover: {e}"))?;
            // Only the dead writer's intent is settled, by one recover.
            let other = match live {
                Live::Recovered(n) => n,
                _ => 0,
            };
            let again = map.recover().map_err(|e| e.to_string())?;
            if recovered.intents + other != 1 || again.intents != 0 {
                return Err(format!(
                    "{at}: {recovered:?} and {other} intents, then {again:?}"
                ));
            }
            let all = contents(&map, &h)?;
            if all.len() > 2 || all.get("neighbour") != Some(&expected(3, r, 0)) {
                return Err(format!("{at}: the map holds {all:?}"));
            }
            // The key as the dead writer left it: its entry linked or not.
            let left = match (op, point) {
                ("insert", fault::MAP_LINKED) | ("overwrite", fault::MAP_LINKED) => {
                    Some(expected(5, 0, 5))
                }
                ("overwrite", _) => Some(expected(5, r, 0)),
                _ => None,
            };
            let now = all.get(VICTIM).cloned();
            let ok = match &live {
                Live::Inserted(replaced) => {
                    *replaced == left.is_some() && now == Some(expected(5, r, 6))
                }
                Live::Removed(removed) => *removed == left.is_some() && now.is_none(),
                Live::Got(got) => *got == left.clone().map(Ok) && now == left,
                Live::Recovered(_) => now == left,
            };
            if !ok {
                return Err(format!(
                    "{at}: left {left:?}; the live op gave {live:?}, the key is now {now:?}"
                ));
            }
            matrix_testkit::check_invariants(&h).map_err(|v| format!("{at}: {v}"))?;
            map.clear().map_err(|e| e.to_string())?;
            let used = h.stats().map_err(|e| e.to_string())?.used_bytes;
            if used != base {
                return Err(format!("{at}: {} bytes leaked", used as i64 - base as i64));
            }
            Ok(())
        },
    );
    let end = all_back(&h, map);
    race::record(
        "ShmMap recover × insert / remove / get / recover after a dead writer",
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
