//! The handler API: round trips, lifecycle, errors, consolidation.

mod common;

use common::{assert_consistent, SegmentGuard};
use matrix_handler::{
    AllocError, BlockError, HandlerError, HandlerFunctions, MatrixHandler, Pod, SegmentError,
    ShmSafe, Zeroable, USER_STATE_MIN,
};
use std::sync::atomic::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable, ShmSafe)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u32,
}

#[test]
fn create_open_bootstrap_unlink() {
    let g = SegmentGuard::new("entry");
    let a = MatrixHandler::create(g.as_str(), 1 << 20).unwrap();
    let b = MatrixHandler::open(g.as_str()).unwrap();
    let c = MatrixHandler::bootstrap(Some(g.as_str()), 1 << 20).unwrap();
    let mut block = a.allocate::<u64>().unwrap();
    a.write_pod(&mut block, 42).unwrap();
    let seen = b.block_at::<u64>(block.offset()).unwrap();
    assert_eq!(c.read_pod(&seen).unwrap(), 42);
    matrix_handler::unlink(g.as_str()).unwrap();
    assert!(matches!(
        MatrixHandler::open(g.as_str()),
        Err(HandlerError::Segment(SegmentError::NotFound { .. }))
    ));
    assert!(matches!(
        matrix_handler::unlink("a/b"),
        Err(HandlerError::Segment(SegmentError::InvalidName { .. }))
    ));
    let anon = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    assert!(anon.matrix().name().is_none());
}

#[test]
fn typed_round_trips() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let mut a = h.allocate::<u8>().unwrap();
    h.write_pod(&mut a, 7u8).unwrap();
    assert_eq!(h.read_pod(&a).unwrap(), 7);
    let mut t = h.allocate::<Tick>().unwrap();
    let tick = Tick {
        seq: 9,
        price: 101.25,
        qty: 3,
        side: 1,
    };
    h.write_pod(&mut t, tick).unwrap();
    assert_eq!(h.read_pod(&t).unwrap(), tick);
    // A String is not ShmSafe (it owns a heap pointer): `allocate` refuses it
    // at compile time, and only the unchecked accessors work on raw bytes.
    let raw = h
        .allocate_raw(std::mem::size_of::<String>() as u32)
        .unwrap();
    let mut s = h.block_at::<String>(raw.offset()).unwrap();
    // SAFETY: freshly allocated, large and aligned enough for a String, used
    // by this thread only.
    unsafe {
        h.write(&mut s, String::from("not plain data"));
        assert_eq!(h.read(&s).as_str(), "not plain data");
        h.read_mut(&s).push('!');
        assert_eq!(std::ptr::read(h.read(&s)), "not plain data!");
    }
    let mut arr = h.allocate_slice::<u32>(1000).unwrap();
    let values: Vec<u32> = (0..1000).collect();
    h.write_slice(&mut arr, &values).unwrap();
    let mut back = vec![0u32; 1000];
    h.read_slice(&arr, &mut back).unwrap();
    assert_eq!(back, values);
    assert!(matches!(
        h.write_slice(&mut arr, &[0u32; 1001]),
        Err(HandlerError::Block(BlockError::TooSmall { .. }))
    ));
    for b in [h.free(a), h.free(t), h.free(s), h.free(arr)] {
        b.unwrap();
    }
    assert_consistent(&h);
}

#[test]
fn raw_sizes_from_one_byte_to_most_of_the_arena() {
    let h = MatrixHandler::bootstrap(None, 4 << 20).unwrap();
    let total = h.stats().unwrap().total_bytes as u32;
    for size in [
        1u32,
        15,
        16,
        17,
        100,
        4096,
        65_536,
        1 << 20,
        total / 2,
        total - 64,
    ] {
        let p = h
            .allocate_raw(size)
            .unwrap_or_else(|e| panic!("{size}: {e}"));
        assert_eq!(p.offset() % 16, 0);
        h.free_raw(p).unwrap();
        h.consolidate().unwrap();
    }
    assert!(matches!(
        h.allocate_raw(u32::MAX),
        Err(HandlerError::AllocationFailed(AllocError::TooLarge {
            requested: 4294967295,
            ..
        }))
    ));
    assert_consistent(&h);
}

#[test]
fn lifecycle_states() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let b = h.allocate::<u64>().unwrap();
    assert_eq!(
        h.get_state(&b, Ordering::Acquire),
        matrix_handler::STATE_ALLOCATED
    );
    for reserved in [0, 1, 2, 3, 4, 48] {
        assert_eq!(
            h.set_state(&b, reserved),
            Err(HandlerError::ReservedStatus(reserved))
        );
        assert_eq!(
            h.transition_state(&b, 1, reserved, Ordering::AcqRel),
            Err(HandlerError::ReservedStatus(reserved))
        );
    }
    h.set_state(&b, USER_STATE_MIN).unwrap();
    assert_eq!(h.get_state(&b, Ordering::Acquire), 49);
    assert_eq!(h.transition_state(&b, 49, 50, Ordering::AcqRel), Ok(49));
    assert_eq!(
        h.transition_state(&b, 49, 51, Ordering::AcqRel),
        Err(HandlerError::TransitionFailed(50))
    );
    // Free blocks are not the user's to move.
    assert_eq!(
        h.transition_state(&b, 0, 60, Ordering::AcqRel),
        Err(HandlerError::ReservedStatus(0))
    );
    // A block in a user state is freed explicitly.
    h.free(b).unwrap();
    assert_consistent(&h);
}

#[test]
fn fill_until_out_of_memory_then_free_all_and_allocate_almost_everything() {
    let h = MatrixHandler::bootstrap(None, 2 << 20).unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut live = Vec::new();
    let err = loop {
        match h.allocate_raw(rng.u32(16..256)) {
            Ok(p) => live.push(p),
            Err(e) => break e,
        }
    };
    match err {
        HandlerError::AllocationFailed(AllocError::OutOfMemory {
            requested,
            largest_free,
        }) => {
            assert!(
                (largest_free as u64) < requested,
                "largest {largest_free} would have fit {requested}"
            )
        }
        other => panic!("expected out of memory, got {other:?}"),
    }
    assert_consistent(&h);
    rng.shuffle(&mut live);
    for p in live {
        h.free_raw(p).unwrap();
    }
    assert_consistent(&h);
    let total = h.stats().unwrap().total_bytes;
    let big = h
        .allocate_raw((total * 95 / 100) as u32)
        .expect("consolidation merges everything");
    h.free_raw(big).unwrap();
    h.consolidate().unwrap();
    let s = h.stats().unwrap();
    assert_eq!((s.used_bytes, s.free_blocks), (0, 1));
}

#[test]
fn double_free_stale_blocks_and_bad_offsets_change_nothing() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let keep = h.allocate::<[u8; 256]>().unwrap();
    let a = h.allocate::<u64>().unwrap();
    let (a_header, a_gen) = (a.header_offset(), a.generation());
    h.free(a).unwrap();
    assert_eq!(
        h.free_at(a_header),
        Err(HandlerError::Block(BlockError::DoubleFree {
            offset: a_header
        }))
    );
    assert_consistent(&h);

    // Stale: the same offset is allocated again with a new generation.
    let again = h.allocate::<u64>().unwrap();
    assert_eq!(again.header_offset(), a_header);
    assert_ne!(again.generation(), a_gen);
    let stale_token = matrix_handler::BlockToken::new(a_header + 32, a_gen, h.segment_nonce());
    assert!(matches!(
        h.block_from_token::<u64>(stale_token),
        Err(HandlerError::Block(BlockError::Stale { .. }))
    ));
    let before = h.stats().unwrap();
    let end = h.segment_size();
    let inside = keep.offset() + 64;
    let bad: Vec<u32> = vec![
        0,
        1,
        8,
        15,
        16,
        31,
        32,
        64,
        4095,
        end,
        end - 16,
        end + 4096,
        u32::MAX,
        u32::MAX - 15,
        keep.header_offset() + 1,
        keep.header_offset() + 16,
        inside,
        inside + 16,
        keep.offset(),
        keep.offset() + 128,
    ];
    assert_eq!(bad.len(), 20);
    for offset in bad {
        assert!(h.free_at(offset).is_err(), "free_at({offset}) accepted");
        assert!(
            h.block_at::<u64>(offset).is_err() || offset == keep.offset(),
            "block_at({offset}) accepted"
        );
        assert_consistent(&h);
    }
    assert_eq!(
        h.stats().unwrap(),
        before,
        "refused operations changed the arena"
    );
    assert!(h.read_pod(&again).is_ok(), "the live block is untouched");
    h.free(again).unwrap();
    h.free(keep).unwrap();
}

#[test]
fn block_at_validates_type_and_size() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let small = h.allocate::<u32>().unwrap();
    assert!(matches!(
        h.block_at::<[u64; 8]>(small.offset()),
        Err(HandlerError::Block(BlockError::TooSmall { .. }))
    ));
    assert!(matches!(
        h.block_at::<u64>(small.offset()),
        Err(HandlerError::Block(BlockError::TypeMismatch { .. }))
    ));
    let same = h.block_at::<u32>(small.offset()).unwrap();
    assert_eq!(same.generation(), small.generation());
    let raw = h.allocate_raw(64).unwrap();
    h.block_at::<[u8; 64]>(raw.offset())
        .expect("untyped bytes take any type that fits");
    h.free(small).unwrap();
    assert!(matches!(
        h.block_at::<u32>(same.offset()),
        Err(HandlerError::Block(BlockError::NotLive { .. }))
    ));
    assert!(h.free(same).is_err(), "second handle to a freed block");
}

#[test]
fn shared_handles_keep_the_mapping_alive() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let shared = h.share();
    drop(h);
    let mut b = shared.allocate::<u64>().unwrap();
    shared.write_pod(&mut b, 5).unwrap();
    let t = std::thread::spawn(move || {
        let v = shared.read_pod(&b).unwrap();
        shared.free(b).unwrap();
        v
    });
    assert_eq!(t.join().unwrap(), 5);
}

#[test]
fn public_types_are_send_and_sync_where_promised() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<MatrixHandler>();
    send_sync::<matrix_handler::SharedHandler>();
    send_sync::<matrix_handler::Block<u64>>();
    send_sync::<HandlerError>();
}

#[test]
fn adopt_and_release_refuse_a_stale_handle() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let a = h.allocate::<u64>().unwrap();
    let stale = h.block_at::<u64>(a.offset()).unwrap(); // a second handle
    h.free(a).unwrap();
    let b = h.allocate::<u64>().unwrap(); // same offset, next generation
    assert_eq!(b.offset(), stale.offset());
    assert!(matches!(
        h.adopt(&stale),
        Err(HandlerError::Block(BlockError::Stale { .. }))
    ));
    assert!(matches!(
        h.release_to_segment(&stale),
        Err(HandlerError::Block(BlockError::Stale { .. }))
    ));
    h.release_to_segment(&b).unwrap();
    h.adopt(&b).unwrap();
    h.free(b).unwrap();
}
