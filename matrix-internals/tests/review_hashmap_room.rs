//! ShmHashMap room accounting around removes: removes stopped between
//! their room's give-back and their slot's unlock (a real child process
//! stopped there, and the same state written by hand), slot words of the
//! REMOVING state unlocked or naming holders that do not exist (bounded
//! outcomes), one key raced by threads in a map of capacity 1 and
//! `capacity` keys churned by four threads (never `Full`), and
//! participants killed at MAP_REMOVED, MAP_KEY_CLAIMED and MAP_WRITING in
//! maps of capacity 1 to 3 (exactly the room the crash points promise).

mod common;

use common::{spawn, watchdog, SegmentGuard, ROLE, SEGMENT};
use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::fault::{stall_at, MAP_KEY_CLAIMED, MAP_REMOVED, MAP_WRITING};
use matrix_internals::tables::MapError;
use matrix_internals::ShmHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

type Map<H> = ShmHashMap<u64, u64, H>;

/// Words of one slot of a `ShmHashMap<u64, u64>`: ctl, home lock, key and
/// two value buffers, after the 64-byte header.
const SLOT_WORDS: u64 = 5;
const LOCKED: u64 = 1;
const LIVE: u64 = 1;
const TOMBSTONE: u64 = 2;
const REMOVING: u64 = 3;

fn word(h: &impl HandlerFunctions, at: u64) -> &AtomicU64 {
    // SAFETY: `at` is an 8-aligned offset inside a map block of the
    // mapping, which `h` keeps alive; the map's words are atomics.
    unsafe { &*(h.base_ptr().add(at as usize) as *const AtomicU64) }
}

fn ctl<'a>(
    h: &'a impl HandlerFunctions,
    m: &Map<impl HandlerFunctions>,
    index: u64,
) -> &'a AtomicU64 {
    word(h, m.offset() as u64 + 64 + index * SLOT_WORDS * 8)
}

/// The room word of the header (taken room in the low 32 bits).
fn room(h: &impl HandlerFunctions, m: &Map<impl HandlerFunctions>) -> u32 {
    word(h, m.offset() as u64 + 32).load(Ordering::SeqCst) as u32
}

/// (LIVE slots, slots locked as REMOVING) among the map's 4 slots.
fn census(h: &impl HandlerFunctions, m: &Map<impl HandlerFunctions>) -> (usize, usize) {
    let states: Vec<u64> = (0..4)
        .map(|i| ctl(h, m, i).load(Ordering::SeqCst))
        .collect();
    let live = states.iter().filter(|&&c| (c >> 2) & 3 == LIVE).count();
    let removing = states
        .iter()
        .filter(|&&c| (c >> 2) & 3 == REMOVING && c & LOCKED != 0)
        .count();
    (live, removing)
}

/// The holder identity this process stamps into a slot it locks, read from
/// the slot of `key` while an update holds it.
fn my_identity(h: &impl HandlerFunctions, m: &Map<impl HandlerFunctions>, key: u64) -> u32 {
    let mut me = None;
    m.update(&key, |v| {
        for i in 0..4 {
            let c = ctl(h, m, i).load(Ordering::SeqCst);
            if c & LOCKED != 0 {
                me = Some(((c >> 4) & ((1 << 28) - 1)) as u32);
            }
        }
        v
    })
    .expect("key present");
    me.expect("the updated slot is locked")
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn review_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: plain syscall: die with the parent test process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let h = MatrixHandler::open(&std::env::var(SEGMENT).unwrap()).unwrap();
    let key: u64 = std::env::var("KEY").unwrap().parse().unwrap();
    let m = Map::open(h.share(), "room").unwrap();
    match role.as_str() {
        "cycler" => {
            // Inserts and removes its own key until the parent says stop.
            let stop = Map::open(h.share(), "stop").unwrap();
            println!("@@ready");
            while stop.get(&0).is_none() {
                assert_eq!(m.insert(&key, key).unwrap(), None);
                assert_eq!(m.remove(&key), Some(key));
            }
        }
        "dying-remover" | "dying-inserter" | "dying-updater" => {
            let point: u32 = std::env::var("CRASH_AT").unwrap().parse().unwrap();
            matrix_internals::fault::arm(point);
            match role.as_str() {
                "dying-remover" => drop(m.remove(&key)),
                "dying-inserter" => drop(m.insert(&key, 99)),
                _ => drop(m.update(&key, |_| 99)),
            }
            println!("@@survived");
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn stop(pid: i32) {
    // SAFETY: plain syscalls on our own, not yet reaped child.
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::WUNTRACED);
        assert!(libc::WIFSTOPPED(status), "child {pid} stopped");
    }
}

fn resume(pid: i32) {
    // SAFETY: as in `stop`.
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

/// Stops the cycler `pid` at random moments until it is stopped inside a
/// remove, after the remove gave its room back and before it unlocked its
/// slot: `removing` slots locked as REMOVING, no LIVE slot, no room taken.
fn stop_past_give_back(h: &MatrixHandler, m: &Map<&MatrixHandler>, pid: i32, removing: usize) {
    let mut seed = 0x2545_F491_4F6C_DD1D ^ pid as u64;
    for _ in 0..200_000 {
        stop(pid);
        if census(h, m) == (0, removing) && room(h, m) == 0 {
            return;
        }
        resume(pid);
        for _ in 0..next(&mut seed) % 2000 {
            std::hint::spin_loop();
        }
    }
    panic!("the cycler was never stopped between its give-back and its unlock");
}

/// Two removers, each stopped after giving its key's room back and before
/// unlocking its slot, hold two of the four slots of a map of capacity 3
/// that holds two keys. The map holds fewer than `capacity` keys and no
/// other insert is in flight, so an insert of a third key must not be
/// refused: it may wait for the removers (which resume), not say `Full`.
#[test]
fn an_insert_is_not_refused_for_slots_held_by_removes_whose_room_is_back() {
    let _dog = watchdog(Duration::from_secs(120));
    let g = SegmentGuard::new("map-room-stopped");
    let h = MatrixHandler::create(g.name(), 1 << 20).unwrap();
    let (m, _) = Map::open_or_create(&h, "room", 3).unwrap();
    let (flag, _) = Map::open_or_create(&h, "stop", 1).unwrap();
    let mut one = spawn(
        "review_child",
        "cycler",
        g.name(),
        &[("KEY", "1001".into())],
    );
    assert_eq!(one.line().as_deref(), Some("ready"));
    stop_past_give_back(&h, &m, one.pid(), 1);
    let mut two = spawn(
        "review_child",
        "cycler",
        g.name(),
        &[("KEY", "1002".into())],
    );
    assert_eq!(two.line().as_deref(), Some("ready"));
    stop_past_give_back(&h, &m, two.pid(), 2);
    // Both removers are stopped between `unreserve` and their unlock.
    assert_eq!(m.insert(&1, 1).unwrap(), None);
    assert_eq!(m.insert(&2, 2).unwrap(), None);
    assert_eq!((census(&h, &m), room(&h, &m), m.len()), ((2, 2), 2, 2));
    let (tx, rx) = mpsc::channel();
    let got = std::thread::scope(|s| {
        s.spawn(|| tx.send(m.insert(&3, 3)).unwrap());
        // Let the insert run against the stopped removers first (a correct
        // insert waits for them), then let them finish and stop.
        let early = rx.recv_timeout(Duration::from_millis(300)).ok();
        flag.insert(&0, 0).unwrap();
        resume(one.pid());
        resume(two.pid());
        early.unwrap_or_else(|| rx.recv().unwrap())
    });
    assert!(one.wait_success(Duration::from_secs(20)));
    assert!(two.wait_success(Duration::from_secs(20)));
    assert_eq!(got, Ok(None), "2 keys in a map of capacity 3");
    assert_eq!(m.len(), 3);
    assert_eq!(m.iter().count(), 3);
}

/// The state of the test above written by hand: two free slots locked as
/// REMOVING by this (live) process, room as a remove past its give-back
/// leaves it. The insert must wait for the unlock, not say `Full`.
#[test]
fn an_insert_waits_for_removes_holding_the_last_free_slots() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = Map::create(&h, 3).unwrap();
    m.insert(&1, 1).unwrap();
    m.insert(&2, 2).unwrap();
    let me = my_identity(&h, &m, 1) as u64;
    let forged: Vec<u64> = (0..4)
        .filter(|&i| ctl(&h, &m, i).load(Ordering::SeqCst) == 0)
        .collect();
    assert_eq!(forged.len(), 2);
    for &i in &forged {
        let removing = 1 << 32 | me << 4 | REMOVING << 2 | LOCKED;
        ctl(&h, &m, i).store(removing, Ordering::SeqCst);
    }
    assert_eq!(room(&h, &m), 2);
    let (tx, rx) = mpsc::channel();
    let got = std::thread::scope(|s| {
        s.spawn(|| tx.send(m.insert(&3, 3)).unwrap());
        let early = rx.recv_timeout(Duration::from_millis(300)).ok();
        for &i in &forged {
            // The removers' unlock: a free tombstone of the same version.
            ctl(&h, &m, i).store(1 << 32 | TOMBSTONE << 2, Ordering::SeqCst);
        }
        early.unwrap_or_else(|| rx.recv().unwrap())
    });
    assert_eq!(got, Ok(None));
    assert_eq!(m.len(), 3);
}

/// Runs `f` on a thread; fails if it has not ended within `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the operation hung (or panicked) on a forged slot word")
}

/// REMOVING words that no live participant holds — unlocked (never written
/// by the map), or locked by owner ids that were never claimed, by the
/// reserved owner 0, and by an old generation of this process's own owner
/// id — written over an empty slot and over a live key's slot of a full
/// map of capacity 3 (and, over a key, its TOMBSTONE and LIVE words locked
/// by those holders): every operation ends, no key is held twice, `len`
/// agrees with `iter`, the map never holds more than `capacity` keys, and
/// a forged word costs at most the room of the key it replaced.
#[test]
fn removing_words_of_no_live_holder_give_bounded_outcomes() {
    let h: &'static MatrixHandler =
        Box::leak(Box::new(MatrixHandler::bootstrap(None, 1 << 20).unwrap()));
    let probe = Map::create(h, 3).unwrap();
    probe.insert(&1, 1).unwrap();
    let me = my_identity(h, &probe, 1);
    let (owner, generation) = (me & 0xFFF, me >> 12);
    let old_me = ((generation + 1) & 0xFFFF) << 12 | owner;
    let holders = [0u32, 0xFFF, 0x7FF, 1 << 12 | 0xABC, old_me];
    // (state, holder or None for unlocked, over a key, its room kept)
    let mut cases = Vec::new();
    for over_a_key in [false, true] {
        cases.push((REMOVING, None, over_a_key, over_a_key));
        for holder in holders {
            cases.push((REMOVING, Some(holder), over_a_key, over_a_key));
            if over_a_key {
                cases.push((TOMBSTONE, Some(holder), true, false));
                cases.push((LIVE, Some(holder), true, false));
            }
        }
    }
    for (state, holder, over_a_key, room_kept) in cases {
        let what = format!("state {state}, holder {holder:x?}, over a key {over_a_key}");
        let w = what.clone();
        let (len, fit) = within(Duration::from_secs(20), move || {
            let what = w;
            let m = Map::create(h, 3).unwrap();
            for k in 0..3u64 {
                m.insert(&k, k * 10).unwrap();
            }
            let target = (0..4)
                .find(|&i| (ctl(h, &m, i).load(Ordering::SeqCst) != 0) == over_a_key)
                .unwrap();
            let ctl = ctl(h, &m, target);
            let cur = ctl.load(Ordering::SeqCst);
            let lock = holder.map_or(0, |x| (x as u64) << 4 | LOCKED);
            ctl.store(
                (cur & !0xFFFF_FFFF) | (cur & 2) | state << 2 | lock,
                Ordering::SeqCst,
            );
            for k in 0..6u64 {
                if let Some(v) = m.get(&k) {
                    assert_eq!(v % 1000, k * 10, "{what}: key {k} holds {v}");
                }
                let _ = m.insert(&k, 1000 + k * 10);
                if let Some(v) = m.get(&k) {
                    assert_eq!(v % 1000, k * 10, "{what}: key {k} holds {v}");
                }
                assert!(m.len() <= 3, "{what}: {} keys", m.len());
                let _ = m.update(&k, |v| v + 1000);
            }
            let all: Vec<_> = m.iter().collect();
            let mut keys: Vec<u64> = all.iter().map(|(k, _)| *k).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), all.len(), "{what}: a key twice {all:?}");
            assert_eq!(m.len(), all.len(), "{what}: len against iter");
            for k in &keys {
                assert!(m.remove(k).is_some());
            }
            (all.len() as u64, fill(&m, 500))
        });
        let room = if room_kept { 2 } else { 3 };
        assert_eq!((len, fit), (room, room), "{what}");
    }
}

/// Threads racing insert, remove, update and get of ONE key in a map of
/// capacity 1 (each insert reuses a tombstone, removes stall between their
/// commit and their room's give-back): the map never holds another key, so
/// an insert is never refused; values are never torn; at the end `len`
/// agrees with `iter` and the key's room is whole.
#[test]
fn one_key_raced_in_a_map_of_capacity_one_is_never_refused() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let m = Map::create(&h, 1).unwrap();
    let done = AtomicBool::new(false);
    // value = round << 8 | thread, with the key 7 in the top byte.
    let check = |v: u64| assert_eq!(v >> 56, 7, "foreign or torn value {v:#x}");
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let (m, check) = (&m, &check);
                s.spawn(move || {
                    stall_at(&[MAP_REMOVED, MAP_WRITING, MAP_KEY_CLAIMED]);
                    let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
                    for i in 0..6_000u64 {
                        let v = 7 << 56 | i << 8 | t;
                        match next(&mut seed) % 4 {
                            0 => {
                                let old = m.insert(&7, v).expect("never Full");
                                old.map(check);
                            }
                            1 => drop(m.remove(&7).map(check)),
                            2 => drop(m.update(&7, |o| {
                                check(o);
                                v
                            })),
                            _ => drop(m.get(&7).map(check)),
                        }
                    }
                })
            })
            .collect();
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let all: Vec<_> = m.iter().collect();
                assert!(all.len() <= 2, "iter {all:?}");
                all.iter().for_each(|&(k, v)| {
                    assert_eq!(k, 7);
                    check(v)
                });
            }
        });
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
    });
    assert_eq!(m.iter().count(), m.len());
    assert!(m.len() <= 1);
    m.remove(&7);
    assert_eq!(m.insert(&8, 8).unwrap(), None);
    assert_eq!(m.insert(&9, 9), Err(MapError::Full { capacity: 1 }));
}

/// A map of `capacity` holding `keys` (key k, value k), then a child in
/// `role` on `key` killed at `point`.
fn after_deaths(
    g: &SegmentGuard,
    capacity: u32,
    keys: u64,
    deaths: &[(&str, u32, u64)],
) -> MatrixHandler {
    let h = MatrixHandler::create(g.name(), 1 << 20).unwrap();
    let (m, _) = Map::open_or_create(h.share(), "room", capacity).unwrap();
    for k in 0..keys {
        m.insert(&k, k).unwrap();
    }
    for &(role, point, key) in deaths {
        let env = [("CRASH_AT", point.to_string()), ("KEY", key.to_string())];
        let mut child = spawn("review_child", role, g.name(), &env);
        assert_eq!(child.line(), None, "{role} killed at {point}");
        assert!(!child.wait_success(Duration::from_secs(20)));
    }
    h
}

/// How many new keys (from `from`) fit before `Full`.
fn fill(m: &Map<impl HandlerFunctions>, from: u64) -> u64 {
    let mut n = 0;
    loop {
        match m.insert(&(from + n), from + n) {
            Ok(None) => n += 1,
            Ok(Some(_)) => panic!("key {} was already there", from + n),
            Err(MapError::Full { .. }) => return n,
            Err(e) => panic!("{e}"),
        }
        assert!(n <= m.capacity() as u64, "more than capacity");
    }
}

/// Removes every key; returns how many there were (iter and len agree).
fn drain(m: &Map<impl HandlerFunctions>) -> u64 {
    let keys: Vec<u64> = m.iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), m.len());
    for k in &keys {
        assert!(m.remove(k).is_some(), "key {k}");
    }
    assert_eq!(m.len(), 0);
    keys.len() as u64
}

/// A remover killed between its commit and its give-back costs exactly one
/// key of room (two such deaths, two keys), never more and never a wait;
/// the removed keys stay gone and can come back.
#[test]
fn removers_killed_before_their_give_back_cost_one_key_of_room_each() {
    let _dog = watchdog(Duration::from_secs(120));
    for capacity in 1..=3u32 {
        for dead in 1..=capacity as u64 {
            let g = SegmentGuard::new("map-room-dead-removers");
            let deaths: Vec<_> = (0..dead)
                .map(|k| ("dying-remover", MAP_REMOVED, k))
                .collect();
            let h = after_deaths(&g, capacity, capacity as u64, &deaths);
            let m = Map::open(h.share(), "room").unwrap();
            let left = capacity as u64 - dead;
            assert_eq!(m.len() as u64, left, "cap {capacity}, {dead} dead");
            assert!((0..dead).all(|k| m.get(&k).is_none()));
            assert_eq!(fill(&m, 100), 0, "cap {capacity}: room of the dead kept");
            assert_eq!(drain(&m), left);
            assert_eq!(
                fill(&m, 200),
                left,
                "cap {capacity}: room after {dead} deaths"
            );
            drain(&m);
            if left > 0 {
                assert_eq!(m.insert(&0, 5).unwrap(), None, "a removed key comes back");
                assert_eq!(m.get(&0), Some(5));
            }
        }
    }
}

/// An inserter killed after claiming a slot (MAP_KEY_CLAIMED) or with key
/// and value written (MAP_WRITING), in a map one key short of full, and a
/// writer killed holding a key's value lock: no room is lost, the dead
/// insert's key is not in the map, and exactly `capacity` keys fit again.
#[test]
fn inserters_and_writers_killed_in_a_tiny_map_lose_no_room() {
    let _dog = watchdog(Duration::from_secs(120));
    for capacity in 1..=3u32 {
        for (role, point) in [
            ("dying-inserter", MAP_KEY_CLAIMED),
            ("dying-inserter", MAP_WRITING),
            ("dying-updater", MAP_WRITING),
        ] {
            let g = SegmentGuard::new("map-room-dead-inserter");
            let keys = capacity as u64 - 1;
            let (keys, key) = if role == "dying-updater" {
                (capacity as u64, 0)
            } else {
                (keys, 77)
            };
            let h = after_deaths(&g, capacity, keys, &[(role, point, key)]);
            let m = Map::open(h.share(), "room").unwrap();
            let what = format!("cap {capacity}, {role} at {point}");
            assert_eq!(m.len() as u64, keys, "{what}");
            assert_eq!(
                m.get(&key),
                (role == "dying-updater").then_some(0),
                "{what}"
            );
            assert_eq!(fill(&m, 100), capacity as u64 - keys, "{what}");
            assert_eq!(drain(&m), capacity as u64, "{what}");
            assert_eq!(fill(&m, 200), capacity as u64, "{what}: room whole");
            assert_eq!(drain(&m), capacity as u64, "{what}");
            assert_eq!(m.insert(&key, 1).unwrap(), None, "{what}: key reusable");
            assert_eq!(m.update(&key, |v| v + 1), Some(2), "{what}");
        }
    }
}

/// Four threads churning exactly `capacity` keys in maps of capacity 2 and
/// 3 (4 slots: removes past their give-back can hold the last free ones):
/// no key outside those is ever in the map, so no insert is refused; at
/// the end `len` agrees with `iter` and the whole room is back.
#[test]
fn capacity_keys_churned_by_four_threads_are_never_refused() {
    for capacity in [2u32, 3] {
        let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
        let m = Map::create(&h, capacity).unwrap();
        let keys = capacity as u64;
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let m = &m;
                s.spawn(move || {
                    if t % 2 == 0 {
                        stall_at(&[MAP_REMOVED]);
                    }
                    let mut seed = 0xD1B5_4A32_D192_ED03 ^ (t + 1) << 8 ^ keys;
                    for i in 0..8_000u64 {
                        let r = next(&mut seed);
                        let k = r % keys;
                        if r >> 8 & 1 == 0 {
                            let old = m.insert(&k, k << 32 | i).expect("never Full");
                            assert!(old.is_none_or(|v| v >> 32 == k), "key {k}: {old:?}");
                        } else if let Some(v) = m.remove(&k) {
                            assert_eq!(v >> 32, k, "key {k}");
                        }
                    }
                });
            }
        });
        assert_eq!(m.iter().count(), m.len());
        drain(&m);
        assert_eq!(fill(&m, 100), keys, "capacity {capacity}: room whole");
    }
}
