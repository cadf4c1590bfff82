//! `ShmMap` against `std::collections::HashMap`: random insert / overwrite /
//! get / remove / clear sequences with nested values (`ShmVec<ShmString>`)
//! must match, and removing every key must give every byte back (checked
//! with matrix-testkit's invariant checker). Plus the API's edges: slot
//! reuse under churn, a full map, keys of every length, types on open.

use matrix_handler::{HandlerFunctions, MatrixHandler};
use matrix_internals::dynamic::{ShmBytes, ShmString, ShmVec};
use matrix_internals::{ShmMap, ShmMapError};
use proptest::prelude::*;
use std::collections::HashMap;

type Tags = ShmVec<ShmString>;

fn used(h: &MatrixHandler) -> u64 {
    h.matrix().flush_thread_cache();
    h.stats().unwrap().used_bytes
}

fn tags(h: &MatrixHandler, words: &[String]) -> Tags {
    let mut v = ShmVec::new();
    for w in words {
        v.push(h, ShmString::from_str(h, w).unwrap()).unwrap();
    }
    v
}

fn read_tags(h: &MatrixHandler, v: &Tags) -> Vec<String> {
    v.iter(h)
        .unwrap()
        .map(|s| s.as_str(h).unwrap().to_owned())
        .collect()
}

/// Keys of very different lengths (0 to ~400 bytes, some multi-byte).
fn key_name(i: u8) -> String {
    match i % 4 {
        0 => format!("k{i}"),
        1 => format!("µ-{i}-{}", "é".repeat(i as usize * 3)),
        2 => "x".repeat(i as usize * 17),
        _ => format!("{i:03}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, Vec<String>),
    Get(u8),
    Remove(u8),
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    let words = prop::collection::vec("[a-z0-9µ]{0,12}", 0..6);
    prop_oneof![
        6 => (0u8..24, words).prop_map(|(k, w)| Op::Insert(k, w)),
        3 => (0u8..24).prop_map(Op::Get),
        3 => (0u8..24).prop_map(Op::Remove),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shm_map_matches_std_hash_map(ops in prop::collection::vec(op(), 1..160)) {
        let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
        let map = ShmMap::<ShmString, Tags, _>::create(&h, 24).unwrap();
        let base = used(&h);
        let mut model: HashMap<String, Vec<String>> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, words) => {
                    let k = key_name(k);
                    let replaced = map.insert(&k, tags(&h, &words)).unwrap();
                    prop_assert_eq!(replaced, model.insert(k, words).is_some());
                }
                Op::Get(k) => {
                    let k = key_name(k);
                    let got = map.get_with(&k, |v| read_tags(&h, v)).unwrap();
                    prop_assert_eq!(got.as_ref(), model.get(&k));
                }
                Op::Remove(k) => {
                    let k = key_name(k);
                    prop_assert_eq!(map.remove(&k).unwrap(), model.remove(&k).is_some());
                }
                Op::Clear => {
                    prop_assert_eq!(map.clear().unwrap(), model.len());
                    model.clear();
                }
            }
            prop_assert_eq!(map.len(), model.len());
        }
        let mut seen = HashMap::new();
        map.for_each(|k, v| { seen.insert(k.to_owned(), read_tags(&h, v)); });
        prop_assert_eq!(&seen, &model);
        for k in model.keys() {
            prop_assert!(map.remove(k).unwrap());
        }
        prop_assert!(map.is_empty());
        prop_assert_eq!(used(&h), base, "removing every key gave back every block");
        matrix_testkit::check_invariants(&h).unwrap();
        map.destroy().unwrap();
        h.consolidate().unwrap();
        prop_assert_eq!(used(&h), 0);
        matrix_testkit::check_invariants(&h).unwrap();
    }
}

#[test]
fn removed_slots_are_reused_and_their_blocks_freed() {
    let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
    let map = ShmMap::<ShmString, ShmVec<u64>, _>::create(&h, 6).unwrap();
    let base = used(&h);
    // 10,000 distinct keys through a map of 8 slots: only reuse makes room.
    for i in 0..10_000u64 {
        let k = format!("key-{i}");
        assert!(!map
            .insert(&k, ShmVec::from_slice(&h, &[i, i * 2]).unwrap())
            .unwrap());
        if i >= 5 {
            assert!(map.remove(&format!("key-{}", i - 5)).unwrap());
        }
        assert!(used(&h) > base);
    }
    assert_eq!(map.len(), 5);
    for i in 9_995..10_000u64 {
        let got = map
            .get_with(&format!("key-{i}"), |v| v.as_slice(&h).unwrap().to_vec())
            .unwrap();
        assert_eq!(got, Some(vec![i, i * 2]));
        assert!(map.remove(&format!("key-{i}")).unwrap());
    }
    assert_eq!(used(&h), base);
    matrix_testkit::check_invariants(&h).unwrap();
}

#[test]
fn a_full_map_refuses_new_keys_but_takes_overwrites() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let map = ShmMap::<ShmBytes, u64, _>::create(&h, 3).unwrap();
    // 3 asked for, 4 slots: four keys fit, the fifth does not.
    for i in 0..4u8 {
        assert_eq!(map.insert(&[i], i as u64), Ok(false));
    }
    assert_eq!(map.insert(&[9], 9), Err(ShmMapError::Full { capacity: 3 }));
    assert_eq!(map.insert(&[2], 20), Ok(true));
    assert_eq!(map.get(&[2]).unwrap(), Some(20));
    assert!(map.remove(&[0]).unwrap());
    assert_eq!(map.insert(&[9], 9), Ok(false));
    assert_eq!(map.get(&[9]).unwrap(), Some(9));
    assert_eq!(map.get(&[0]).unwrap(), None);
}

#[test]
fn keys_of_every_length_and_empty_ones() {
    let h = MatrixHandler::bootstrap(None, 8 << 20).unwrap();
    let map = ShmMap::<ShmBytes, u32, _>::create(&h, 64).unwrap();
    let keys: Vec<Vec<u8>> = (0..40)
        .map(|n| (0..n * 97).map(|b| b as u8).collect())
        .collect();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(map.insert(k, i as u32), Ok(false));
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(map.get(k).unwrap(), Some(i as u32));
    }
    let long = vec![0u8; matrix_internals::tables::MAX_KEY_LEN + 1];
    assert_eq!(
        map.insert(&long, 1),
        Err(ShmMapError::KeyTooLong { len: long.len() })
    );
    map.destroy().unwrap();
    assert_eq!(used(&h), 0);
}

#[test]
fn open_checks_the_types_and_the_name() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let (m, created) = ShmMap::<ShmString, u64, _>::open_or_create(&h, "counts", 16).unwrap();
    assert!(created);
    m.insert("a", 1).unwrap();
    let (again, created) = ShmMap::<ShmString, u64, _>::open_or_create(&h, "counts", 16).unwrap();
    assert!(!created);
    assert_eq!(again.get("a").unwrap(), Some(1));
    assert!(matches!(
        ShmMap::<ShmBytes, u64, _>::open_at(&h, m.offset()),
        Err(ShmMapError::NotAMap { .. })
    ));
    assert!(matches!(
        ShmMap::<ShmString, u32, _>::open(&h, "counts"),
        Err(ShmMapError::Registry(_))
    ));
    assert!(matches!(
        ShmMap::<ShmString, u64, _>::create(&h, 0),
        Err(ShmMapError::InvalidCapacity { requested: 0 })
    ));
}

#[test]
fn a_refused_insert_leaves_the_value_with_the_caller() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let map = ShmMap::<ShmString, ShmVec<u64>, _>::create(&h, 3).unwrap();
    for i in 0..4 {
        map.insert(&format!("k{i}"), ShmVec::from_slice(&h, &[i]).unwrap())
            .unwrap();
    }
    let mut v = ShmVec::from_slice(&h, &[7u64, 8, 9]).unwrap();
    assert_eq!(
        map.insert("fifth", v),
        Err(ShmMapError::Full { capacity: 3 })
    );
    // Still the caller's: readable, writable, freed by the caller.
    assert_eq!(v.as_slice(&h).unwrap(), &[7, 8, 9]);
    v.push(&h, 10).unwrap();
    matrix_internals::dynamic::OwnsBlocks::free_blocks(&mut v, &h).unwrap();
    map.destroy().unwrap();
    assert_eq!(used(&h), 0);
}
