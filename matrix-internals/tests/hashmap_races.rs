//! The race matrix of `ShmHashMap`: every pair of operations that can touch
//! one slot at the same moment, on a map of 4 slots (so that removed slots
//! are reused all the time and the raced key's chain holds tombstones),
//! many rounds, with a check after each round (`matrix_testkit::race`).
//! Each pair runs with side B on a thread and, for the pairs that write,
//! in a child process. Each test prints
//! `race-matrix | pair | mode | runs | iterations | result`
//! (`MATRIX_RACE_SECONDS` sets every budget).
//!
//! A value is `[key, round, side, checksum]`, so a get that returned the
//! value of another key (a slot reused under it) or a torn copy shows.

use matrix_handler::MatrixHandler;
use matrix_internals::{fault, ShmHashMap};
use matrix_testkit::race::{self, ChildSide, RaceConfig, RaceFailure, RaceReport};
use matrix_testkit::segment::SegmentName;
use matrix_testkit::stress::child::Launcher;

type Value = [u64; 4];
type Map<'h> = ShmHashMap<u64, Value, &'h MatrixHandler>;
/// 3 keys in 4 slots.
const CAPACITY: u32 = 3;
const SEGMENT: u32 = 1 << 20;
/// Gets a reading side makes per round.
const GETS: usize = 32;
/// Other keys the reusing side inserts and removes per round.
const REUSES: u64 = 8;

fn value(key: u64, round: u64, side: u64) -> Value {
    [
        key,
        round,
        side,
        (key ^ round.rotate_left(17) ^ side.rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    ]
}

/// The side that wrote `v` for `key` in `round`, or what is wrong with it.
fn side_of(v: &Value, key: u64, round: u64) -> Result<u64, String> {
    if *v != value(v[0], v[1], v[2]) {
        return Err(format!("torn value {v:?}"));
    }
    if v[0] != key {
        return Err(format!("the value of key {} for key {key}", v[0]));
    }
    if v[1] != round {
        return Err(format!("a value of round {} in round {round}", v[1]));
    }
    Ok(v[2])
}

/// A result as one word for a child: 0 for none, `1 + side`, or `u64::MAX`
/// for a wrong value.
fn encode(v: Option<Value>, key: u64, round: u64) -> u64 {
    match v {
        None => 0,
        Some(v) => side_of(&v, key, round).map_or(u64::MAX, |s| s + 1),
    }
}

fn decode(word: u64, key: u64, round: u64) -> Result<Option<Value>, String> {
    match word {
        0 => Ok(None),
        u64::MAX => Err("the child read a wrong value".into()),
        s => Ok(Some(value(key, round, s - 1))),
    }
}

/// The raced key of `round`: five keys, so its home slot varies.
fn raced(round: u64) -> u64 {
    100 + round % 5
}

/// Empties the map, then leaves it with a filler key and, if `present`,
/// the raced key (value of side 0) placed after a filler that is then
/// removed: its chain now often has a tombstone before it, the trap for
/// an insert that claims the first free slot without searching on.
fn prepare(map: &Map<'_>, round: u64, present: bool) -> Result<u64, String> {
    for (k, _) in map.iter().collect::<Vec<_>>() {
        map.remove(&k);
    }
    let key = raced(round);
    let (f1, f2) = (1000 + round % 4, 2000 + round % 3);
    let put = |k: u64| {
        map.insert(&k, value(k, round, 0))
            .map_err(|e| e.to_string())
    };
    put(f1)?;
    put(f2)?;
    if present {
        put(key)?;
    }
    map.remove(&f1);
    Ok(key)
}

/// The map's pairs, checked: no key twice, and `key`'s value as expected.
fn check_map(map: &Map<'_>, key: u64, round: u64, want: Option<Value>) -> Result<(), String> {
    let all = map.iter().collect::<Vec<_>>();
    let copies = all.iter().filter(|(k, _)| *k == key).count();
    if copies > 1 {
        return Err(format!("key {key} is live {copies} times: {all:?}"));
    }
    for (k, v) in &all {
        if v[0] != *k {
            return Err(format!("key {k} holds the value of key {}", v[0]));
        }
    }
    let got = map.get(&key);
    if got != want {
        return Err(format!(
            "key {key} reads {got:?}, expected {want:?} (round {round})"
        ));
    }
    if map.len() != all.len() {
        return Err(format!("len {} but {} pairs", map.len(), all.len()));
    }
    // Room is given back exactly: the map takes new keys up to capacity.
    let mut extra = Vec::new();
    for k in 5000..5000 + CAPACITY as u64 {
        match map.insert(&k, value(k, round, 9)) {
            Ok(None) => extra.push(k),
            Ok(Some(_)) => return Err(format!("key {k} was there")),
            Err(_) => break,
        }
    }
    if all.len() + extra.len() != CAPACITY as usize {
        return Err(format!(
            "{} keys + {} new ones, not the capacity {CAPACITY}",
            all.len(),
            extra.len()
        ));
    }
    for k in extra {
        map.remove(&k);
    }
    Ok(())
}

const SIDES: &[ChildSide] = &[
    ChildSide {
        name: "hashmap-insert",
        // words: map offset, key, round.
        op: |h, w| {
            let map = Map::open_at(h, w[0] as u32).expect("open the map");
            encode(
                map.insert(&w[1], value(w[1], w[2], 2)).expect("insert"),
                w[1],
                w[2],
            )
        },
    },
    ChildSide {
        name: "hashmap-remove",
        op: |h, w| {
            let map = Map::open_at(h, w[0] as u32).expect("open the map");
            encode(map.remove(&w[1]), w[1], w[2])
        },
    },
    ChildSide {
        name: "hashmap-reuse",
        op: |h, w| {
            let map = Map::open_at(h, w[0] as u32).expect("open the map");
            reuse(&map, w[1], w[2]);
            0
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

fn cfg() -> RaceConfig {
    RaceConfig::default().with_env()
}

fn new_map(h: &MatrixHandler) -> Map<'_> {
    Map::create(h, CAPACITY).unwrap()
}

/// Races `op_a` here against the child side `side` on a new map in a
/// named segment. `setup` returns the round's target and the words the
/// child gets after the map's offset.
fn in_processes<T, RA>(
    side: &str,
    mut setup: impl FnMut(&Map<'_>, u64) -> Result<(T, Vec<u64>), String>,
    op_a: impl Fn(&Map<'_>, &T) -> RA,
    mut check: impl FnMut(&Map<'_>, u64, T, RA, u64) -> Result<(), String>,
) -> Result<RaceReport, RaceFailure> {
    let name = SegmentName::new("hashmap-race");
    let h = MatrixHandler::create(name.as_str(), SEGMENT).unwrap();
    let map = new_map(&h);
    race::process_pair(
        &cfg(),
        &launcher(),
        name.as_str(),
        side,
        |r| {
            let (target, words) = setup(&map, r)?;
            Ok((target, [vec![map.offset() as u64], words].concat()))
        },
        |t| op_a(&map, t),
        |r, t, a, b| check(&map, r, t, a, b),
    )
}

/// Both orders of two inserts of `key` (sides 1 and 2) over `before`.
fn check_insert_insert(
    map: &Map<'_>,
    key: u64,
    r: u64,
    before: Option<Value>,
    a: Option<Value>,
    b: Option<Value>,
) -> Result<(), String> {
    let (va, vb) = (value(key, r, 1), value(key, r, 2));
    let last = if a == before && b == Some(va) {
        vb
    } else if b == before && a == Some(vb) {
        va
    } else {
        return Err(format!(
            "before {before:?}: the inserts returned {a:?} and {b:?}"
        ));
    };
    check_map(map, key, r, Some(last))
}

#[test]
fn insert_x_insert_same_key() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| Ok((prepare(&map, r, r % 2 == 1)?, r)),
        |&(k, r)| map.insert(&k, value(k, r, 1)),
        |&(k, r)| map.insert(&k, value(k, r, 2)),
        |r, (k, _), a, b| {
            let before = (r % 2 == 1).then(|| value(k, r, 0));
            let (a, b) = (a.map_err(|e| e.to_string())?, b.map_err(|e| e.to_string())?);
            check_insert_insert(&map, k, r, before, a, b)
        },
    );
    race::record("ShmHashMap insert × insert (one key)", result, Ok(()));
}

#[test]
fn insert_x_insert_same_key_processes() {
    let result = in_processes(
        "hashmap-insert",
        |map, r| {
            let k = prepare(map, r, r % 2 == 1)?;
            Ok(((k, r), vec![k, r]))
        },
        |map, &(k, r)| map.insert(&k, value(k, r, 1)),
        |map, r, (k, _), a, b| {
            let before = (r % 2 == 1).then(|| value(k, r, 0));
            let a = a.map_err(|e| e.to_string())?;
            check_insert_insert(map, k, r, before, a, decode(b, k, r)?)
        },
    );
    race::record("ShmHashMap insert × insert (one key)", result, Ok(()));
}

/// Both orders of an insert (side 1) and a remove of `key` over `before`.
fn check_insert_remove(
    map: &Map<'_>,
    key: u64,
    r: u64,
    before: Option<Value>,
    inserted: Option<Value>,
    removed: Option<Value>,
) -> Result<(), String> {
    let v = value(key, r, 1);
    let now = if inserted == before && removed == Some(v) {
        None
    } else if removed == before && inserted.is_none() {
        Some(v)
    } else {
        return Err(format!(
            "before {before:?}: the insert returned {inserted:?}, the remove {removed:?}"
        ));
    };
    check_map(map, key, r, now)
}

#[test]
fn insert_x_remove() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| Ok((prepare(&map, r, r % 2 == 1)?, r)),
        |&(k, r)| map.insert(&k, value(k, r, 1)),
        |&(k, _)| map.remove(&k),
        |r, (k, _), inserted, removed| {
            let before = (r % 2 == 1).then(|| value(k, r, 0));
            check_insert_remove(
                &map,
                k,
                r,
                before,
                inserted.map_err(|e| e.to_string())?,
                removed,
            )
        },
    );
    race::record("ShmHashMap insert × remove", result, Ok(()));
}

#[test]
fn insert_x_remove_processes() {
    let result = in_processes(
        "hashmap-remove",
        |map, r| {
            let k = prepare(map, r, r % 2 == 1)?;
            Ok(((k, r), vec![k, r]))
        },
        |map, &(k, r)| map.insert(&k, value(k, r, 1)),
        |map, r, (k, _), inserted, removed| {
            let before = (r % 2 == 1).then(|| value(k, r, 0));
            let inserted = inserted.map_err(|e| e.to_string())?;
            check_insert_remove(map, k, r, before, inserted, decode(removed, k, r)?)
        },
    );
    race::record("ShmHashMap insert × remove", result, Ok(()));
}

fn check_remove_remove(
    map: &Map<'_>,
    key: u64,
    r: u64,
    a: Option<Value>,
    b: Option<Value>,
) -> Result<(), String> {
    let v = Some(value(key, r, 0));
    if !((a == v && b.is_none()) || (b == v && a.is_none())) {
        return Err(format!("the removes returned {a:?} and {b:?}"));
    }
    check_map(map, key, r, None)
}

#[test]
fn remove_x_remove() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| prepare(&map, r, true),
        |&k| map.remove(&k),
        |&k| map.remove(&k),
        |r, k, a, b| check_remove_remove(&map, k, r, a, b),
    );
    race::record("ShmHashMap remove × remove", result, Ok(()));
}

#[test]
fn remove_x_remove_processes() {
    let result = in_processes(
        "hashmap-remove",
        |map, r| {
            let k = prepare(map, r, true)?;
            Ok((k, vec![k, r]))
        },
        |map, &k| map.remove(&k),
        |map, r, k, a, b| check_remove_remove(map, k, r, a, decode(b, k, r)?),
    );
    race::record("ShmHashMap remove × remove", result, Ok(()));
}

/// The other keys of a reuse round (of varied home slots).
fn others(key: u64) -> impl Iterator<Item = u64> {
    (1..=REUSES).map(move |j| key + 50 * j)
}

/// Removes `key`, then inserts and removes other keys one by one (the map
/// is full, so each takes a freed slot, often `key`'s: the value buffer a
/// get of `key` reads is rewritten by the second of them there), then
/// inserts `key` again (side 2).
fn reuse(map: &Map<'_>, key: u64, round: u64) {
    map.remove(&key);
    for o in others(key) {
        map.insert(&o, value(o, round, 3))
            .expect("room for the other key");
        map.remove(&o);
    }
    map.insert(&key, value(key, round, 2)).expect("room again");
}

/// A full map (the raced key and two fillers) for a reuse round.
fn prepare_full(map: &Map<'_>, round: u64) -> Result<u64, String> {
    let key = prepare(map, round, true)?;
    let f = 3000 + round % 7;
    map.insert(&f, value(f, round, 0))
        .map_err(|e| e.to_string())?;
    Ok(key)
}

/// Gets of `key` while its slot is reused: each one is absent or a value
/// of `key` itself, never the other key's.
fn gets(map: &Map<'_>, key: u64) -> Vec<Option<Value>> {
    (0..GETS).map(|_| map.get(&key)).collect()
}

fn check_gets(map: &Map<'_>, key: u64, r: u64, got: &[Option<Value>]) -> Result<(), String> {
    for v in got.iter().flatten() {
        match side_of(v, key, r)? {
            0 | 2 => {}
            s => return Err(format!("a get of {key} returned side {s}'s value {v:?}")),
        }
    }
    if others(key).any(|o| map.contains_key(&o)) {
        return Err("another key is still there".into());
    }
    check_map(map, key, r, Some(value(key, r, 2)))
}

#[test]
fn get_x_remove_then_reuse() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| Ok((prepare_full(&map, r)?, r)),
        |&(k, _)| gets(&map, k),
        |&(k, r)| reuse(&map, k, r),
        |r, (k, _), got, ()| check_gets(&map, k, r, &got),
    );
    race::record("ShmHashMap get × remove then reuse", result, Ok(()));
}

#[test]
fn get_x_remove_then_reuse_processes() {
    let result = in_processes(
        "hashmap-reuse",
        |map, r| {
            let k = prepare_full(map, r)?;
            Ok((k, vec![k, r]))
        },
        |map, &k| gets(map, k),
        |map, r, k, got, _| check_gets(map, k, r, &got),
    );
    race::record("ShmHashMap get × remove then reuse", result, Ok(()));
}

#[test]
fn get_x_insert() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| Ok((prepare(&map, r, false)?, r)),
        |&(k, _)| gets(&map, k),
        |&(k, r)| map.insert(&k, value(k, r, 1)),
        |r, (k, _), got, inserted| {
            if inserted != Ok(None) {
                return Err(format!("the insert returned {inserted:?}"));
            }
            let v = Some(value(k, r, 1));
            // One reader's gets: absent until the insert, then its value.
            let first = got.iter().position(Option::is_some).unwrap_or(got.len());
            if got[first..].iter().any(|g| *g != v) {
                return Err(format!("the gets saw {got:?}"));
            }
            check_map(&map, k, r, v)
        },
    );
    race::record("ShmHashMap get × insert", result, Ok(()));
}

/// Two new keys whose chains meet at the same free slots: both claims CAS
/// one slot word, the loser searches on.
fn check_two_keys(
    map: &Map<'_>,
    (k1, k2): (u64, u64),
    r: u64,
    a: Option<Value>,
    b: Option<Value>,
) -> Result<(), String> {
    if a.is_some() || b.is_some() {
        return Err(format!(
            "new keys, yet the inserts returned {a:?} and {b:?}"
        ));
    }
    if map.get(&k1) != Some(value(k1, r, 1)) {
        return Err(format!("key {k1} reads {:?}", map.get(&k1)));
    }
    check_map(map, k2, r, Some(value(k2, r, 2)))
}

/// The second new key of a round: another home slot than the raced key's
/// in some rounds, the same in others.
fn second(round: u64) -> u64 {
    200 + round % 7
}

#[test]
fn insert_x_insert_two_new_keys() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| Ok(((prepare(&map, r, false)?, second(r)), r)),
        |&((k1, _), r)| map.insert(&k1, value(k1, r, 1)),
        |&((_, k2), r)| map.insert(&k2, value(k2, r, 2)),
        |r, (keys, _), a, b| {
            let (a, b) = (a.map_err(|e| e.to_string())?, b.map_err(|e| e.to_string())?);
            check_two_keys(&map, keys, r, a, b)
        },
    );
    race::record(
        "ShmHashMap insert × insert (two new keys, one free slot)",
        result,
        Ok(()),
    );
}

#[test]
fn insert_x_insert_two_new_keys_processes() {
    let result = in_processes(
        "hashmap-insert",
        |map, r| {
            let keys = (prepare(map, r, false)?, second(r));
            Ok(((keys, r), vec![keys.1, r]))
        },
        |map, &((k1, _), r)| map.insert(&k1, value(k1, r, 1)),
        |map, r, (keys, _), a, b| {
            let a = a.map_err(|e| e.to_string())?;
            check_two_keys(map, keys, r, a, decode(b, keys.1, r)?)
        },
    );
    race::record(
        "ShmHashMap insert × insert (two new keys, one free slot)",
        result,
        Ok(()),
    );
}

#[test]
fn update_x_remove() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| Ok((prepare(&map, r, true)?, r)),
        |&(k, r)| map.update(&k, |v| value(v[0], r, v[2] + 1)),
        |&(k, _)| map.remove(&k),
        |r, (k, _), updated, removed| {
            let (v0, v1) = (value(k, r, 0), value(k, r, 1));
            // Update then remove, or remove then an update that finds nothing.
            let ok = (updated == Some(v1) && removed == Some(v1))
                || (updated.is_none() && removed == Some(v0));
            if !ok {
                return Err(format!(
                    "the update returned {updated:?}, the remove {removed:?}"
                ));
            }
            check_map(&map, k, r, None)
        },
    );
    race::record("ShmHashMap update × remove", result, Ok(()));
}

/// A remove of the raced key from a full map (side A; in odd rounds it
/// stalls between its commit and its room's give-back) and, once the key
/// is seen gone, an insert of a new key (side B): the insert follows a
/// committed remove, so the map holds one key fewer than its capacity and
/// the insert must find room. Before removes kept their slot REMOVING
/// until their room was back, this insert could be refused with `Full`.
fn remove_then_new_key(map: &Map<'_>, key: u64, round: u64) -> Result<Option<Value>, String> {
    while map.contains_key(&key) {
        std::hint::spin_loop();
    }
    let n = second(round);
    map.insert(&n, value(n, round, 2))
        .map_err(|e| format!("the insert after the remove: {e}"))
}

fn check_remove_then_new_key(
    map: &Map<'_>,
    key: u64,
    r: u64,
    removed: Option<Value>,
    inserted: Option<Value>,
) -> Result<(), String> {
    if removed != Some(value(key, r, 0)) || inserted.is_some() {
        return Err(format!(
            "the remove returned {removed:?}, the insert of a new key {inserted:?}"
        ));
    }
    if map.contains_key(&key) {
        return Err(format!("key {key} is back"));
    }
    let n = second(r);
    check_map(map, n, r, Some(value(n, r, 2)))
}

#[test]
fn remove_x_insert_of_a_new_key_into_a_full_map() {
    let h = MatrixHandler::bootstrap(None, SEGMENT).unwrap();
    let map = new_map(&h);
    let result = race::pair(
        &cfg(),
        |r| Ok((prepare_full(&map, r)?, r)),
        |&(k, r)| {
            if r % 2 == 1 {
                fault::stall_at(&[fault::MAP_REMOVED]);
            }
            let removed = map.remove(&k);
            fault::stall_at(&[]);
            removed
        },
        |&(k, r)| remove_then_new_key(&map, k, r),
        |r, (k, _), removed, inserted| check_remove_then_new_key(&map, k, r, removed, inserted?),
    );
    race::record(
        "ShmHashMap remove × insert of a new key (full map)",
        result,
        Ok(()),
    );
}

#[test]
fn remove_x_insert_of_a_new_key_into_a_full_map_processes() {
    let result = in_processes(
        "hashmap-remove",
        |map, r| {
            let k = prepare_full(map, r)?;
            Ok(((k, r), vec![k, r]))
        },
        |map, &(k, r)| remove_then_new_key(map, k, r),
        |map, r, (k, _), inserted, removed| {
            check_remove_then_new_key(map, k, r, decode(removed, k, r)?, inserted?)
        },
    );
    race::record(
        "ShmHashMap remove × insert of a new key (full map)",
        result,
        Ok(()),
    );
}
