//! Attacks on `ShmMap` and `ShmHashMap` that the race matrices do not make:
//! many threads churning a tiny map (room, `len` and bytes must come back
//! exactly), a scanner running beside the churn, corrupt slot words of a
//! `ShmMap` (typed errors or skips, never a panic or a hang), and keys of
//! length 0 and `MAX_KEY_LEN` next to each other in one chain.
//! `REVIEW_MAPS_OPS` sets the operations per thread (default 4,000).

use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::dynamic::{ShmBytes, ShmString};
use matrix_internals::tables::MAX_KEY_LEN;
use matrix_internals::{ShmHashMap, ShmMap, ShmMapError};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::Duration;

const THREADS: u64 = 4;

fn ops() -> u64 {
    std::env::var("REVIEW_MAPS_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_000)
}

fn used(h: &MatrixHandler) -> u64 {
    h.matrix().flush_thread_cache();
    h.stats().unwrap().used_bytes
}

/// A small xorshift, so that each thread's sequence is reproducible.
fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Runs `f` on a thread and fails if it has not ended within `limit`
/// (a corrupt word must not make an operation wait forever).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the operation hung (or panicked) on a corrupt slot word")
}

/// How many new keys a map takes before it reports full.
fn room_shm_map(h: &MatrixHandler, map: &ShmMap<ShmString, ShmString, &MatrixHandler>) -> usize {
    let mut n = 0;
    loop {
        let k = format!("room-{n}");
        let v = ShmString::from_str(h, &k).unwrap();
        match map.insert(&k, v) {
            Ok(false) => n += 1,
            Ok(true) => panic!("room key {k} was there"),
            Err(ShmMapError::Full { .. }) => {
                let mut v = v;
                matrix_internals::OwnsBlocks::free_blocks(&mut v, &h).unwrap();
                break;
            }
            Err(e) => panic!("insert of {k}: {e}"),
        }
    }
    for i in 0..n {
        assert!(map.remove(&format!("room-{i}")).unwrap());
    }
    n
}

/// Four threads insert, overwrite, read and remove six keys of a map of
/// eight slots; values are strings naming their key and writer, so a read
/// through a slot reused by another key shows. After the churn: `len` is
/// the number of keys found, a fresh map's room is there again, and
/// removing everything gives back every byte (each replaced or removed
/// value freed exactly once: a double free errors, a leak shows in bytes).
#[test]
fn shm_map_churn_gives_back_room_and_bytes() {
    let h: &'static MatrixHandler =
        Box::leak(Box::new(MatrixHandler::bootstrap(None, 8 << 20).unwrap()));
    let base = used(h);
    let map = ShmMap::<ShmString, ShmString, _>::create(h, 6).unwrap();
    let fresh_room = room_shm_map(h, &map);
    assert!(fresh_room >= map.capacity(), "room {fresh_room}");
    let after_create = used(h);
    let offset = map.offset();
    let stop = AtomicBool::new(false);
    let n = ops();
    std::thread::scope(|s| {
        // A scanner beside the churn: it sees real keys, never more than fit.
        s.spawn(|| {
            let map = ShmMap::<ShmString, ShmString, _>::open_at(h, offset).unwrap();
            let mut scans = 0u64;
            while !stop.load(Relaxed) || scans == 0 {
                let mut seen = 0usize;
                // Only the keys: the buffer a copied value names may be
                // freed and reused once the callback runs (documented on
                // `for_each`), so its text proves nothing.
                map.for_each(|k, _| {
                    assert!(k.starts_with('k'), "key {k}");
                    seen += 1;
                });
                assert!(seen <= fresh_room, "scan saw {seen} pairs");
                assert!(map.len() <= fresh_room, "len {}", map.len());
                scans += 1;
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let map = ShmMap::<ShmString, ShmString, _>::open_at(h, offset).unwrap();
                    let mut seed = 0x9E37_79B9 ^ ((t + 1) * 0x1000_0001);
                    for i in 0..n {
                        let r = next(&mut seed);
                        let k = format!("k{}", r % 6);
                        match (r >> 8) % 3 {
                            0 => {
                                let v = ShmString::from_str(h, &format!("{k}={t}/{i}")).unwrap();
                                match map.insert(&k, v) {
                                    Ok(_) => {}
                                    Err(ShmMapError::Full { .. } | ShmMapError::Busy) => {
                                        let mut v = v;
                                        matrix_internals::OwnsBlocks::free_blocks(&mut v, &h)
                                            .unwrap();
                                    }
                                    Err(e) => panic!("insert {k}: {e}"),
                                }
                            }
                            1 => {
                                map.remove(&k).unwrap();
                            }
                            _ => {
                                let got = map
                                    .get_with(&k, |v| v.as_str(h).map(str::to_owned))
                                    .unwrap();
                                if let Some(v) = got {
                                    let v = v.expect("the value read on success is readable");
                                    assert!(v.starts_with(&format!("{k}=")), "{k} read {v}");
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let ends: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        stop.store(true, Relaxed);
        for e in ends {
            if let Err(p) = e {
                std::panic::resume_unwind(p);
            }
        }
    });
    let mut live = 0;
    for i in 0..6 {
        if map.contains_key(&format!("k{i}")).unwrap() {
            live += 1;
        }
    }
    assert_eq!(map.len(), live, "len against the keys found");
    map.clear().unwrap();
    assert_eq!(map.len(), 0);
    assert_eq!(used(h), after_create, "bytes after removing every key");
    assert_eq!(room_shm_map(h, &map), fresh_room, "room after the churn");
    map.destroy().unwrap();
    assert_eq!(used(h), base);
    matrix_testkit::check_invariants(h).unwrap();
}

type Rec = [u64; 4];

fn rec(key: u64, t: u64, i: u64) -> Rec {
    [key, t, i, key ^ t.rotate_left(20) ^ i.rotate_left(40)]
}

/// The same churn on `ShmHashMap` (five keys, capacity five, so every
/// insert of a new key reuses a tombstone): no torn or foreign value is
/// ever read, and afterwards `len` matches `iter` and exactly `capacity`
/// new keys fit.
#[test]
fn hashmap_churn_keeps_room_and_len_exact() {
    let h: &'static MatrixHandler =
        Box::leak(Box::new(MatrixHandler::bootstrap(None, 4 << 20).unwrap()));
    let map = ShmHashMap::<u64, Rec, _>::create(h, 5).unwrap();
    let offset = map.offset();
    let cap = map.capacity() as u64;
    let stop = AtomicBool::new(false);
    let n = ops();
    let check = |k: u64, v: &Rec| {
        assert_eq!(v[0], k, "key {k} holds {v:?}");
        assert_eq!(v[3], rec(v[0], v[1], v[2])[3], "torn {v:?}");
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let map = ShmHashMap::<u64, Rec, _>::open_at(h, offset).unwrap();
            while !stop.load(Relaxed) {
                let all: Vec<_> = map.iter().collect();
                for (k, v) in &all {
                    check(*k, v);
                }
                assert!(all.len() as u64 <= cap + THREADS, "iter gave {}", all.len());
                assert!(map.len() as u64 <= cap, "len {}", map.len());
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let map = ShmHashMap::<u64, Rec, _>::open_at(h, offset).unwrap();
                    let mut seed = 0x51_7CC1_B727 ^ ((t + 1) * 0x1_0000_0001);
                    for i in 0..n {
                        let r = next(&mut seed);
                        let k = r % 5;
                        match (r >> 8) % 4 {
                            0 => {
                                if let Some(old) = map.insert(&k, rec(k, t, i)).unwrap() {
                                    check(k, &old);
                                }
                            }
                            1 => {
                                if let Some(old) = map.remove(&k) {
                                    check(k, &old);
                                }
                            }
                            2 => {
                                let v = map.get_or_insert(&k, rec(k, t, i)).unwrap();
                                check(k, &v);
                            }
                            _ => {
                                if let Some(v) = map.get(&k) {
                                    check(k, &v);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let ends: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        stop.store(true, Relaxed);
        for e in ends {
            if let Err(p) = e {
                std::panic::resume_unwind(p);
            }
        }
    });
    let all: Vec<_> = map.iter().collect();
    assert_eq!(map.len(), all.len(), "len against iter: {all:?}");
    let mut keys: Vec<_> = all.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), all.len(), "a key twice: {all:?}");
    for (k, _) in &all {
        assert!(map.remove(k).is_some());
    }
    assert_eq!(map.len(), 0);
    for k in 100..100 + cap {
        assert_eq!(map.insert(&k, rec(k, 9, 9)).unwrap(), None, "key {k}");
    }
    assert!(
        map.insert(&999, rec(999, 9, 9)).is_err(),
        "more than capacity"
    );
    assert_eq!(map.len() as u64, cap);
}

/// Words a corrupt segment can hold in a `ShmMap` slot: offsets past the
/// segment, into the segment header, onto a live non-entry block, claims
/// of intents that do not exist or are idle, and raw noise.
fn forged_words(foreign: u32) -> Vec<u64> {
    let mut w = vec![
        u64::MAX,
        1,
        (1 << 28) - 1,
        1 << 28,
        (1 << 28) | 1,
        (65u64 << 24) << 28,
        (1u64 << 24) << 28,
        (64u64 << 24 | 0xFF_FFFF) << 28,
        (1u64 << 27) | 1 << 40,
        (foreign as u64 / 16) | 5 << 28,
    ];
    let mut s = 0xDEAD_BEEF_u64;
    for _ in 0..40 {
        w.push(next(&mut s));
    }
    w
}

/// Every operation on a `ShmMap` whose slots hold corrupt words ends,
/// with a value or a typed error, and never hands out another key's value.
#[test]
fn shm_map_corrupt_slot_words_give_typed_errors() {
    let h: &'static MatrixHandler =
        Box::leak(Box::new(MatrixHandler::bootstrap(None, 4 << 20).unwrap()));
    let foreign = h.allocate_array::<u8>(200).unwrap().offset();
    for (n, word) in forged_words(foreign).into_iter().enumerate() {
        let out = within(Duration::from_secs(20), move || {
            let map = ShmMap::<ShmBytes, u64, _>::create(h, 6).unwrap();
            for k in 0..3u8 {
                map.insert(&[k], k as u64).unwrap();
            }
            // The slot array follows the 64-byte header and 64 intents of
            // 32 bytes; 8 slots for capacity 6.
            for i in 0..8u64 {
                let at = map.offset() as u64 + 64 + 64 * 32 + i * 8;
                // SAFETY: inside the map's block (8 slots); no other thread
                // uses this map; an aligned u64 of the mapping.
                let p = unsafe { h.base_ptr().add(at as usize) } as *mut u64;
                // SAFETY: as above.
                let old = unsafe { p.read_volatile() };
                if old == 0 || i % 2 == 0 {
                    // SAFETY: as above.
                    unsafe { p.write_volatile(word) };
                }
            }
            let mut report = Vec::new();
            for k in 0..6u8 {
                match map.get(&[k]) {
                    Ok(Some(v)) => assert_eq!(v, k as u64, "word {word:#x}: key {k}"),
                    Ok(None) => {}
                    Err(e) => report.push(e.to_string()),
                }
                let _ = map.insert(&[k], 10 + k as u64);
                if let Ok(Some(v)) = map.get(&[k]) {
                    assert_eq!(v, 10 + k as u64, "word {word:#x}: key {k} after insert");
                }
                let _ = map.remove(&[k]);
            }
            map.for_each(|_, _| {});
            let _ = map.len();
            let _ = map.recover();
            let _ = map.clear();
            report
        });
        let _ = (n, out);
    }
    matrix_testkit::check_invariants(h).unwrap();
}

/// Keys of length 0 and `MAX_KEY_LEN` (and one past it) in one map of four
/// slots, inserted, read, overwritten and removed in turn, with every byte
/// given back.
#[test]
fn shm_map_empty_and_maximal_keys_share_a_chain() {
    let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
    let map = ShmMap::<ShmBytes, u64, _>::create(&h, 3).unwrap();
    let base = used(&h);
    let big = vec![0xA5u8; MAX_KEY_LEN];
    let mut big2 = big.clone();
    *big2.last_mut().unwrap() = 0x5A;
    let too_long = vec![1u8; MAX_KEY_LEN + 1];
    assert!(matches!(
        map.insert(&too_long, 1),
        Err(ShmMapError::KeyTooLong { .. })
    ));
    assert!(matches!(
        map.get(&too_long),
        Err(ShmMapError::KeyTooLong { .. })
    ));
    for round in 0..20u64 {
        assert_eq!(map.insert(&[], round), Ok(false));
        assert_eq!(map.insert(&big, round + 1), Ok(false));
        assert_eq!(map.insert(&big2, round + 2), Ok(false));
        assert_eq!(map.get(&[]).unwrap(), Some(round));
        assert_eq!(map.get(&big).unwrap(), Some(round + 1));
        assert_eq!(map.get(&big2).unwrap(), Some(round + 2));
        assert_eq!(map.get(&big[..MAX_KEY_LEN - 1]).unwrap(), None);
        assert_eq!(map.insert(&big, 7), Ok(true));
        assert_eq!(map.len(), 3);
        assert!(map.remove(&[]).unwrap());
        assert!(map.remove(&big).unwrap());
        assert!(map.remove(&big2).unwrap());
        assert_eq!(map.len(), 0);
        assert_eq!(used(&h), base, "round {round}");
    }
}
