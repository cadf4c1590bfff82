//! ShmHashMap: API, full map, slot reuse (a proptest model against
//! `HashMap` with churn far beyond capacity), two threads checked for
//! single-key linearizability against a sequential model, reopening from
//! another process, and writers killed mid-operation. The races of two
//! operations on one slot are in `hashmap_races.rs`.

mod common;

use common::{spawn, watchdog, SegmentGuard, ROLE, SEGMENT};
use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::tables::MapError;
use matrix_internals::ShmHashMap;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[test]
fn insert_get_remove_update_iterate() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = ShmHashMap::<u64, [u32; 3], _>::create(h.share(), 100).unwrap();
    assert_eq!(m.capacity(), 100);
    assert!(m.is_empty());
    for k in 0..50u64 {
        assert_eq!(m.insert(&k, [k as u32, 1, 2]).unwrap(), None);
    }
    assert_eq!(m.len(), 50);
    assert_eq!(m.insert(&7, [70, 0, 0]).unwrap(), Some([7, 1, 2]));
    assert_eq!(m.get(&7), Some([70, 0, 0]));
    assert_eq!(m.get(&500), None);
    assert_eq!(m.update(&7, |[a, b, c]| [a + 1, b, c]), Some([71, 0, 0]));
    assert_eq!(
        m.update(&500, |v| v),
        None,
        "update of a missing key does nothing"
    );
    assert_eq!(m.get(&500), None);
    assert_eq!(m.remove(&7), Some([71, 0, 0]));
    assert_eq!(m.remove(&7), None);
    assert!(!m.contains_key(&7));
    assert_eq!(m.get_or_insert(&7, [1, 1, 1]).unwrap(), [1, 1, 1]);
    assert_eq!(m.get_or_insert(&7, [2, 2, 2]).unwrap(), [1, 1, 1]);
    assert_eq!(m.len(), 50);
    let all: HashMap<u64, [u32; 3]> = m.iter().collect();
    assert_eq!(all.len(), 50);
    assert_eq!(all[&7], [1, 1, 1]);
    assert_eq!(all[&8], [8, 1, 2]);
    // Reopened by offset, with the wrong types refused.
    let again = ShmHashMap::<u64, [u32; 3], _>::open_at(h.share(), m.offset()).unwrap();
    assert_eq!(again.get(&8), Some([8, 1, 2]));
    assert!(matches!(
        ShmHashMap::<u64, u64, _>::open_at(h.share(), m.offset()),
        Err(MapError::NotAMap { .. })
    ));
    assert!(matches!(
        ShmHashMap::<u32, [u32; 3], _>::open_at(h.share(), m.offset()),
        Err(MapError::NotAMap { .. })
    ));
    assert!(matches!(
        ShmHashMap::<u64, u64, _>::create(h.share(), 0),
        Err(MapError::InvalidCapacity { .. })
    ));
}

#[test]
fn large_keys_and_values() {
    #[derive(Clone, Copy, PartialEq, Debug, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Quote {
        bid: f64,
        ask: f64,
        size: [u32; 6],
    }
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = ShmHashMap::<[u8; 13], Quote, _>::create(h.share(), 10).unwrap();
    let key = *b"EURUSD.SPOT.1";
    let q = Quote {
        bid: 1.0841,
        ask: 1.0843,
        size: [1, 2, 3, 4, 5, 6],
    };
    m.insert(&key, q).unwrap();
    assert_eq!(m.get(&key), Some(q));
    assert_eq!(m.get(b"EURUSD.SPOT.2"), None);
    assert_eq!(m.iter().collect::<Vec<_>>(), vec![(key, q)]);
}

#[test]
fn a_full_map_refuses_new_keys() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = ShmHashMap::<u32, u32, _>::create(h.share(), 8).unwrap();
    for k in 0..8 {
        m.insert(&k, k).unwrap();
    }
    assert_eq!(m.insert(&8, 8), Err(MapError::Full { capacity: 8 }));
    assert_eq!(m.get(&8), None);
    // Existing keys still update, and a removed key's room and slot go to
    // the next new key.
    assert_eq!(m.insert(&3, 33).unwrap(), Some(3));
    assert_eq!(m.remove(&5), Some(5));
    assert_eq!(m.insert(&9, 9).unwrap(), None, "the removed key made room");
    assert_eq!(m.insert(&5, 55), Err(MapError::Full { capacity: 8 }));
    assert_eq!(m.get(&9), Some(9));
    assert_eq!(m.get(&5), None);
    assert_eq!(m.len(), 8);
}

#[test]
fn removed_slots_are_reused_far_beyond_capacity() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = ShmHashMap::<u64, [u64; 2], _>::create(h.share(), 16).unwrap();
    // 10,000 distinct keys through a map of 16 keys (32 slots), at most 16
    // at a time: only reuse makes room.
    for k in 0..10_000u64 {
        if k >= 16 {
            assert_eq!(m.remove(&(k - 16)), Some([k - 16, 1]));
        }
        assert_eq!(m.insert(&k, [k, 1]).unwrap(), None, "key {k}");
        assert_eq!(m.len(), (k as usize + 1).min(16));
    }
    let all: HashMap<u64, [u64; 2]> = m.iter().collect();
    assert_eq!(all.len(), 16);
    assert!((10_000 - 16..10_000).all(|k| all[&k] == [k, 1]));
    assert_eq!(
        m.insert(&20_000, [0, 0]),
        Err(MapError::Full { capacity: 16 })
    );
}

/// The classic bug of tombstone reuse: key `k` lives beyond a tombstone in
/// its chain; an insert of `k` that claimed the first free slot would
/// leave it live twice, and a remove would then uncover the stale copy.
#[test]
fn a_key_live_beyond_a_tombstone_is_overwritten_not_duplicated() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    // 4 slots: many of these pairs share a chain.
    let m = ShmHashMap::<u64, u64, _>::create(h.share(), 3).unwrap();
    for x in 0..40u64 {
        for k in 100..140u64 {
            m.insert(&x, 1).unwrap();
            m.insert(&k, 2).unwrap();
            assert_eq!(m.remove(&x), Some(1));
            assert_eq!(m.insert(&k, 3).unwrap(), Some(2));
            assert_eq!(m.iter().filter(|(key, _)| *key == k).count(), 1);
            assert_eq!(m.len(), 1);
            assert_eq!(m.remove(&k), Some(3));
            assert_eq!(m.get(&k), None, "no stale copy of {k} behind");
            assert!(m.is_empty());
        }
    }
}

#[test]
fn a_panicking_update_leaves_the_value_and_the_slot_usable() {
    let _dog = watchdog(Duration::from_secs(60));
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = ShmHashMap::<u64, u64, _>::create(h.share(), 4).unwrap();
    m.insert(&1, 10).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.update(&1, |_| panic!("the closure fails"))
    }));
    assert!(panicked.is_err());
    assert_eq!(m.get(&1), Some(10));
    // The slot's lock was handed back: writers of the key go on.
    assert_eq!(m.insert(&1, 11).unwrap(), Some(10));
    assert_eq!(m.remove(&1), Some(11));
}

#[derive(Clone, Debug)]
enum ModelOp {
    Insert(u64, u64),
    Remove(u64),
    Get(u64),
    Update(u64),
    GetOrInsert(u64, u64),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    // 48 keys for 16 places: the map is full often, and churns.
    let key = 0..48u64;
    prop_oneof![
        4 => (key.clone(), any::<u64>()).prop_map(|(k, v)| ModelOp::Insert(k, v)),
        4 => key.clone().prop_map(ModelOp::Remove),
        2 => key.clone().prop_map(ModelOp::Get),
        1 => key.clone().prop_map(ModelOp::Update),
        1 => (key, any::<u64>()).prop_map(|(k, v)| ModelOp::GetOrInsert(k, v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random operations agree with `std`'s `HashMap` holding at most 16
    /// keys, over 10,000 operations each.
    #[test]
    fn agrees_with_a_std_hashmap_under_churn(ops in prop::collection::vec(model_op(), 10_000)) {
        let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
        let m = ShmHashMap::<u64, u64, _>::create(h.share(), 16).unwrap();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let full = Err(MapError::Full { capacity: 16 });
        for op in &ops {
            match *op {
                ModelOp::Insert(k, v) => {
                    if model.len() == 16 && !model.contains_key(&k) {
                        prop_assert_eq!(m.insert(&k, v), full.clone());
                    } else {
                        prop_assert_eq!(m.insert(&k, v), Ok(model.insert(k, v)));
                    }
                }
                ModelOp::Remove(k) => prop_assert_eq!(m.remove(&k), model.remove(&k)),
                ModelOp::Get(k) => prop_assert_eq!(m.get(&k), model.get(&k).copied()),
                ModelOp::Update(k) => {
                    let want = model.get_mut(&k).map(|v| {
                        *v = v.wrapping_mul(3).wrapping_add(1);
                        *v
                    });
                    prop_assert_eq!(m.update(&k, |v| v.wrapping_mul(3).wrapping_add(1)), want);
                }
                ModelOp::GetOrInsert(k, v) => {
                    if model.len() == 16 && !model.contains_key(&k) {
                        prop_assert_eq!(m.get_or_insert(&k, v), full.clone().map(|_: Option<u64>| 0));
                    } else {
                        prop_assert_eq!(m.get_or_insert(&k, v), Ok(*model.entry(k).or_insert(v)));
                    }
                }
            }
            prop_assert_eq!(m.len(), model.len());
        }
        let all: HashMap<u64, u64> = m.iter().collect();
        prop_assert_eq!(m.iter().count(), model.len(), "no key twice");
        prop_assert_eq!(all, model);
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Insert(u64),
    Get,
    Remove,
}

#[derive(Clone, Copy, Debug)]
struct Op {
    kind: Kind,
    result: Option<u64>,
    start: u64,
    end: u64,
}

/// Whether two threads' histories on one key have a linearization: a
/// breadth-first search over (ops taken from thread 0, from thread 1) and
/// the model value. An op may be linearized next only if the other thread's
/// next op did not finish before it started.
fn linearizable(a: &[Op], b: &[Op]) -> bool {
    let threads = [a, b];
    let mut level: HashMap<(usize, usize), HashSet<Option<u64>>> =
        HashMap::from([((0, 0), HashSet::from([None]))]);
    for _ in 0..a.len() + b.len() {
        let mut next: HashMap<(usize, usize), HashSet<Option<u64>>> = HashMap::new();
        for (&(i0, i1), states) in &level {
            let idx = [i0, i1];
            for t in 0..2 {
                let Some(op) = threads[t].get(idx[t]) else {
                    continue;
                };
                if let Some(other) = threads[1 - t].get(idx[1 - t]) {
                    if other.end < op.start {
                        continue;
                    }
                }
                for &state in states {
                    if op.result != state {
                        continue;
                    }
                    let after = match op.kind {
                        Kind::Insert(v) => Some(v),
                        Kind::Get => state,
                        Kind::Remove => None,
                    };
                    let cell = if t == 0 { (i0 + 1, i1) } else { (i0, i1 + 1) };
                    next.entry(cell).or_default().insert(after);
                }
            }
        }
        if next.is_empty() {
            return false;
        }
        level = next;
    }
    true
}

#[test]
fn the_linearizability_check_rejects_an_impossible_history() {
    let op = |kind, result, start, end| Op {
        kind,
        result,
        start,
        end,
    };
    // Thread 0 inserts 1 and finishes before thread 1 reads; a read of
    // nothing afterwards is impossible.
    let a = [op(Kind::Insert(1), None, 0, 1)];
    let b = [op(Kind::Get, None, 2, 3)];
    assert!(!linearizable(&a, &b));
    // Overlapping, the read may come first.
    let b = [op(Kind::Get, None, 0, 3)];
    assert!(linearizable(&a, &b));
    // A removal returning a value nobody inserted.
    let b = [op(Kind::Remove, Some(9), 0, 3)];
    assert!(!linearizable(&a, &b));
}

#[test]
fn two_threads_of_random_ops_are_linearizable_per_key() {
    linearizable_per_key(64);
}

/// 8 keys in 16 slots: removed slots are reused all the time. Capacity 10:
/// a key re-inserted while its remove is still giving its room back, on
/// each thread, is 2 more than the 8 keys.
#[test]
fn two_threads_of_random_ops_on_a_tiny_map_are_linearizable_per_key() {
    linearizable_per_key(10);
}

fn linearizable_per_key(capacity: u32) {
    let _dog = watchdog(Duration::from_secs(120));
    const KEYS: u64 = 8;
    let ops_per_thread: usize = std::env::var("MATRIX_MAP_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = ShmHashMap::<u64, u64, _>::create(h.share(), capacity).unwrap();
    let clock = AtomicU64::new(0);
    let start = std::sync::Barrier::new(2);
    let histories: Vec<Vec<(u64, Op)>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..2u64)
            .map(|t| {
                let (m, clock, start) = (m.clone(), &clock, &start);
                s.spawn(move || {
                    start.wait();
                    let mut rng = fastrand::Rng::with_seed(t + 11);
                    let mut log = Vec::with_capacity(ops_per_thread);
                    for n in 0..ops_per_thread as u64 {
                        let key = rng.u64(0..KEYS);
                        let kind = match rng.u32(0..100) {
                            0..=39 => Kind::Insert((t << 32) | n),
                            40..=74 => Kind::Get,
                            _ => Kind::Remove,
                        };
                        let start = clock.fetch_add(1, Ordering::SeqCst);
                        let result = match kind {
                            Kind::Insert(v) => m.insert(&key, v).unwrap(),
                            Kind::Get => m.get(&key),
                            Kind::Remove => m.remove(&key),
                        };
                        let end = clock.fetch_add(1, Ordering::SeqCst);
                        log.push((
                            key,
                            Op {
                                kind,
                                result,
                                start,
                                end,
                            },
                        ));
                    }
                    log
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    // How many of thread 0's ops overlapped one of thread 1's (for the log).
    let spans1: Vec<(u64, u64)> = histories[1].iter().map(|(_, o)| (o.start, o.end)).collect();
    let overlapping = histories[0]
        .iter()
        .filter(|(_, o)| {
            let i = spans1.partition_point(|&(_, e)| e < o.start);
            spans1.get(i).is_some_and(|&(s, _)| s < o.end)
        })
        .count();
    println!("{overlapping} of {ops_per_thread} ops of thread 0 overlapped an op of thread 1");
    for key in 0..KEYS {
        let of = |t: usize| {
            histories[t]
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, op)| *op)
                .collect::<Vec<_>>()
        };
        let (a, b) = (of(0), of(1));
        assert!(
            linearizable(&a, &b),
            "key {key}: no linearization of {} + {} ops",
            a.len(),
            b.len()
        );
    }
    // At quiescence the map and its length agree.
    assert_eq!(m.iter().count(), m.len());
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    match role.as_str() {
        "reader" => {
            let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
            let ok = (0..1000u64).all(|k| m.get(&k) == Some([k, k * k]));
            println!("@@checked {ok} {}", m.len());
            for k in 1000..1100u64 {
                m.insert(&k, [k, 7]).unwrap();
            }
            assert!(
                ShmHashMap::<u64, u64, _>::open(h.share(), "prices").is_err(),
                "wrong value type refused"
            );
            println!("@@wrote");
        }
        "dying-writer" => {
            let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
            let point: u32 = std::env::var("CRASH_AT").unwrap().parse().unwrap();
            matrix_internals::fault::arm(point);
            let key: u64 = std::env::var("KEY").unwrap().parse().unwrap();
            let _ = m.insert(&key, [9, 9]);
            println!("@@survived");
        }
        "taker" => {
            // One side of a takeover race: the parent does the same at once.
            let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
            println!("@@ready");
            taker_side(&m, 1);
            println!("@@done");
        }
        "dying-remover" => {
            let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
            let point: u32 = std::env::var("CRASH_AT").unwrap().parse().unwrap();
            matrix_internals::fault::arm(point);
            let key: u64 = std::env::var("KEY").unwrap().parse().unwrap();
            let _ = m.remove(&key);
            println!("@@survived");
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn keys_and_values_survive_a_reopen_from_another_process() {
    let _dog = watchdog(Duration::from_secs(60));
    let g = SegmentGuard::new("map-reopen");
    let h = MatrixHandler::create(g.name(), 4 << 20).unwrap();
    let (m, created) =
        ShmHashMap::<u64, [u64; 2], _>::open_or_create(h.share(), "prices", 2000).unwrap();
    assert!(created);
    for k in 0..1000u64 {
        m.insert(&k, [k, k * k]).unwrap();
    }
    drop(m);
    let mut child = spawn("child_role", "reader", g.name(), &[]);
    assert_eq!(child.line().as_deref(), Some("checked true 1000"));
    assert_eq!(child.line().as_deref(), Some("wrote"));
    assert!(child.wait_success(Duration::from_secs(20)));
    let (m, created) =
        ShmHashMap::<u64, [u64; 2], _>::open_or_create(h.share(), "prices", 2000).unwrap();
    assert!(!created);
    assert_eq!(m.len(), 1100);
    assert!((1000..1100u64).all(|k| m.get(&k) == Some([k, 7])));
    assert_eq!(m.get(&5), Some([5, 25]));
    let (hdr, _) = h.matrix().block_header(m.offset() - 32).unwrap();
    assert_eq!(
        matrix_core::state::owner_of(hdr.state.load(Ordering::Acquire)),
        0,
        "the map block belongs to the segment"
    );
}

/// A map for `capacity` keys with keys 0..10 (value `[k, k * k]`) whose
/// `insert(key, [9, 9])` was killed at crash point `point` in another
/// process.
fn after_a_killed_insert(
    point: u32,
    key: u64,
    capacity: u32,
    test: &str,
) -> (SegmentGuard, MatrixHandler) {
    after_a_killed("dying-writer", point, key, capacity, test)
}

/// As [`after_a_killed_insert`], for a child in `role`.
fn after_a_killed(
    role: &str,
    point: u32,
    key: u64,
    capacity: u32,
    test: &str,
) -> (SegmentGuard, MatrixHandler) {
    let g = SegmentGuard::new(test);
    let h = MatrixHandler::create(g.name(), 1 << 20).unwrap();
    let (m, _) =
        ShmHashMap::<u64, [u64; 2], _>::open_or_create(h.share(), "prices", capacity).unwrap();
    for k in 0..10u64 {
        m.insert(&k, [k, k * k]).unwrap();
    }
    let env = [("CRASH_AT", point.to_string()), ("KEY", key.to_string())];
    let mut child = spawn("child_role", role, g.name(), &env);
    assert_eq!(child.line(), None, "killed at the crash point");
    assert!(!child.wait_success(Duration::from_secs(20)));
    (g, h)
}

#[test]
fn a_writer_killed_holding_a_value_lock_leaves_the_old_value() {
    let _dog = watchdog(Duration::from_secs(60));
    let (_g, h) = after_a_killed_insert(
        matrix_internals::fault::MAP_WRITING,
        5,
        64,
        "map-dead-writer",
    );
    let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
    assert_eq!(
        m.get(&5),
        Some([5, 25]),
        "readers see the committed value, untorn"
    );
    assert_eq!(
        m.insert(&5, [1, 1]).unwrap(),
        Some([5, 25]),
        "the dead holder's lock is taken over"
    );
    assert_eq!(m.get(&5), Some([1, 1]));
    assert_eq!(m.update(&5, |[a, b]| [a + 1, b]), Some([2, 1]));
    assert_eq!(m.len(), 10);
}

#[test]
fn an_inserter_killed_after_claiming_a_slot_does_not_block_the_key() {
    let _dog = watchdog(Duration::from_secs(60));
    let (_g, h) = after_a_killed_insert(
        matrix_internals::fault::MAP_KEY_CLAIMED,
        500,
        64,
        "map-dead-claim",
    );
    let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
    assert_eq!(m.get(&500), None);
    assert_eq!(
        m.insert(&500, [1, 2]).unwrap(),
        None,
        "the dead claim is taken over"
    );
    assert_eq!(m.get(&500), Some([1, 2]));
    assert_eq!(m.len(), 11);
    assert_eq!(m.iter().filter(|(k, _)| *k == 500).count(), 1);
}

#[test]
fn an_inserter_killed_before_committing_a_new_key_gives_its_room_back() {
    let _dog = watchdog(Duration::from_secs(60));
    // Killed holding the key's home lock and a claimed slot, key and value
    // written, not committed.
    let (_g, h) = after_a_killed_insert(
        matrix_internals::fault::MAP_WRITING,
        500,
        12,
        "map-dead-new-key",
    );
    let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
    assert_eq!(m.get(&500), None, "an uncommitted key is not in the map");
    assert_eq!(m.len(), 10);
    // 10 keys and the dead claim: the second new key needs its room back.
    assert_eq!(m.insert(&600, [6, 0]).unwrap(), None);
    assert_eq!(
        m.insert(&601, [6, 1]).unwrap(),
        None,
        "the dead claim's room"
    );
    assert_eq!(m.insert(&602, [6, 2]), Err(MapError::Full { capacity: 12 }));
    assert_eq!(m.remove(&600), Some([6, 0]));
    // Its home lock is taken over too.
    assert_eq!(m.insert(&500, [1, 2]).unwrap(), None);
    assert_eq!(m.get(&500), Some([1, 2]));
    assert_eq!(m.iter().filter(|(k, _)| *k == 500).count(), 1);
    assert_eq!(m.len(), 12);
}

#[test]
fn a_remover_killed_before_giving_its_room_back_blocks_nothing() {
    let _dog = watchdog(Duration::from_secs(60));
    // Killed between its commit (key 5 gone, slot still locked) and giving
    // the key's room back.
    let (_g, h) = after_a_killed(
        "dying-remover",
        matrix_internals::fault::MAP_REMOVED,
        5,
        12,
        "map-dead-remover",
    );
    let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
    assert_eq!(m.get(&5), None, "the remove committed");
    assert_eq!(m.len(), 9);
    // Whether the dead remover gave its room back cannot be known, so it is
    // kept: 11 keys of room from now on, never more than 12.
    assert_eq!(m.insert(&600, [6, 0]).unwrap(), None);
    assert_eq!(m.insert(&601, [6, 1]).unwrap(), None);
    assert_eq!(
        m.insert(&602, [6, 2]),
        Err(MapError::Full { capacity: 12 }),
        "refused, not waiting for the dead remover"
    );
    assert_eq!(m.remove(&600), Some([6, 0]));
    assert_eq!(m.insert(&5, [1, 2]).unwrap(), None, "the key comes back");
    assert_eq!(m.get(&5), Some([1, 2]));
    assert_eq!(m.iter().filter(|(k, _)| *k == 5).count(), 1);
    assert_eq!(m.len(), 11);
    assert_eq!(m.remove(&5), Some([1, 2]));
    assert_eq!(m.insert(&603, [6, 3]).unwrap(), None, "room is given back");
}

/// Updates of key 5 (whose lock a dead writer holds at first), an insert
/// of key 500 (whose home lock and a claimed slot a dead inserter may
/// hold) and of 50 keys of this side's own: what both sides of a takeover
/// race do at the same moment.
fn taker_side(m: &ShmHashMap<u64, [u64; 2], impl HandlerFunctions>, side: u64) {
    for _ in 0..TAKER_UPDATES {
        m.update(&5, |[a, b]| [a + 1, b]).expect("key 5 is there");
    }
    m.insert(&500, [side, 0]).expect("room for key 500");
    for k in 0..50 {
        let k = 1000 * (side + 1) + k;
        assert_eq!(m.insert(&k, [side, k]).unwrap(), None);
    }
}

const TAKER_UPDATES: u64 = 300;

/// Two participants (this process and a child) reach the locks of a dead
/// participant at the same moment, both take them over and then contend
/// with each other, a live holder: every update is applied exactly once,
/// key 500 is in the map once, and nothing is lost or duplicated.
#[test]
fn two_participants_taking_over_one_dead_holders_locks_lose_nothing() {
    let _dog = watchdog(Duration::from_secs(120));
    for (point, test) in [
        (matrix_internals::fault::MAP_WRITING, "map-takeover-lock"),
        (
            matrix_internals::fault::MAP_KEY_CLAIMED,
            "map-takeover-home",
        ),
    ] {
        for round in 0..4 {
            let key = if point == matrix_internals::fault::MAP_WRITING {
                5
            } else {
                500
            };
            let (g, h) = after_a_killed_insert(point, key, 256, test);
            let m = ShmHashMap::<u64, [u64; 2], _>::open(h.share(), "prices").unwrap();
            let mut child = spawn("child_role", "taker", g.name(), &[]);
            assert_eq!(child.line().as_deref(), Some("ready"));
            taker_side(&m, 0);
            assert_eq!(child.line().as_deref(), Some("done"), "round {round}");
            assert!(child.wait_success(Duration::from_secs(20)));
            assert_eq!(
                m.get(&5),
                Some([5 + 2 * TAKER_UPDATES, 25]),
                "round {round}"
            );
            let fives = m.iter().filter(|(k, _)| *k == 500).count();
            assert_eq!(fives, 1, "round {round}: key 500 {fives} times");
            assert!(matches!(m.get(&500), Some([0 | 1, 0])));
            assert_eq!(m.len(), 10 + 1 + 100, "round {round}");
            assert_eq!(m.iter().count(), m.len());
        }
    }
}
