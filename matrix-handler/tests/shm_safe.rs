//! The marker trait: what the derive accepts, and the safe accessors that
//! rely on it. What the derive refuses is in the trait's `compile_fail`
//! doc tests.

use matrix_core::ScratchName;
use matrix_handler::{
    BlockToken, HandlerError, HandlerFunctions, MatrixHandler, RelativePtr, ShmSafe,
};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[derive(ShmSafe)]
#[repr(C)]
struct Node {
    next: RelativePtr<Node>,
    len: u32,
    hits: AtomicU64,
    tokens: [BlockToken; 2],
}

#[derive(ShmSafe)]
#[repr(C, align(16))]
struct Wrapped<T> {
    inner: T,
    marker: PhantomData<T>,
}

#[derive(ShmSafe)]
#[repr(transparent)]
struct Id(u64);

#[derive(ShmSafe)]
#[repr(C)]
struct Unit;

fn size_if_shm_safe<T: ShmSafe>() -> usize {
    std::mem::size_of::<T>()
}

#[test]
fn derived_types_are_shm_safe() {
    assert_eq!(size_if_shm_safe::<Node>(), 48);
    assert_eq!(size_if_shm_safe::<Wrapped<Node>>(), 48);
    assert_eq!(size_if_shm_safe::<Wrapped<u8>>(), 16);
    assert_eq!(size_if_shm_safe::<Id>(), 8);
    assert_eq!(size_if_shm_safe::<Unit>(), 0);
    assert_eq!(size_if_shm_safe::<[AtomicU64; 3]>(), 24);
}

#[derive(ShmSafe)]
#[repr(C)]
struct Counters {
    hits: AtomicU64,
    capacity: u32,
    readers: AtomicU32,
}

#[test]
fn get_shares_atomics_between_threads_without_unsafe() {
    let name = ScratchName::new("shm-safe-get");
    let h = MatrixHandler::create(name.as_str(), 1 << 20).unwrap();
    let block = h
        .allocate_with(Counters {
            hits: AtomicU64::new(0),
            capacity: 7,
            readers: AtomicU32::new(0),
        })
        .unwrap();
    let token = block.token();
    let shared = h.share();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mine = shared.block_from_token::<Counters>(token).unwrap();
                let c = shared.get(&mine).unwrap();
                for _ in 0..10_000 {
                    // Relaxed: a counter; the scope's join orders the final read.
                    c.hits.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let c = h.get(&block).unwrap();
    assert_eq!(c.capacity, 7);
    assert_eq!(c.hits.load(Ordering::Relaxed), 20_000);
    h.free(block).unwrap();
}

#[test]
fn get_refuses_a_stale_or_foreign_handle() {
    let name = ScratchName::new("shm-safe-stale");
    let other_name = ScratchName::new("shm-safe-other");
    let h = MatrixHandler::create(name.as_str(), 1 << 20).unwrap();
    let other = MatrixHandler::create(other_name.as_str(), 1 << 20).unwrap();
    let block = h.allocate_zeroed::<[u64; 4]>().unwrap();
    assert_eq!(h.get(&block).unwrap(), &[0u64; 4]);
    assert!(matches!(
        other.get(&block),
        Err(HandlerError::ForeignHandle { .. })
    ));
    let token = block.token();
    let copy = h.block_from_token::<[u64; 4]>(token).unwrap();
    h.free(block).unwrap();
    assert!(h.get(&copy).is_err(), "a freed block is refused");
    let again = h.allocate::<[u64; 4]>().unwrap();
    assert_eq!(
        again.offset(),
        copy.offset(),
        "same memory, next generation"
    );
    assert!(h.get(&copy).is_err(), "a stale handle is refused");
    assert_eq!(h.get_slice(&again).unwrap().len(), 1);
    h.free(again).unwrap();
}

#[test]
fn get_slice_covers_every_element_of_a_slice_block() {
    let name = ScratchName::new("shm-safe-slice");
    let h = MatrixHandler::create(name.as_str(), 1 << 20).unwrap();
    let mut block = h.allocate_slice::<u64>(100).unwrap();
    let values: Vec<u64> = (0..100).collect();
    h.write_slice(&mut block, &values).unwrap();
    assert_eq!(h.get_slice(&block).unwrap(), &values[..]);
    h.free(block).unwrap();
}
