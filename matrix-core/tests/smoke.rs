//! Single-process behaviour of the allocator on anonymous arenas.

use matrix_core::{AllocError, AtomicMatrix, BlockError, BLOCK_HEADER_SIZE};

fn hdr(p: matrix_core::RelativePtr<u8>) -> u32 {
    p.offset() - BLOCK_HEADER_SIZE
}

#[test]
fn allocate_free_round_trip_returns_all_memory() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let before = m.stats().unwrap();
    let a = m.allocate(100, 0).unwrap();
    let b = m.allocate(1000, 0).unwrap();
    assert_ne!(a, b);
    assert_eq!(a.offset() % 16, 0);
    m.free(hdr(a), None).unwrap();
    m.free(hdr(b), None).unwrap();
    m.consolidate().unwrap();
    let after = m.stats().unwrap();
    assert_eq!(after.used_bytes, 0);
    assert_eq!(after.free_blocks, 1);
    assert_eq!(after.largest_free, before.largest_free);
}

#[test]
fn fill_until_oom_then_free_all_allows_one_large_block() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let mut live = Vec::new();
    let err = loop {
        match m.allocate(64, 0) {
            Ok(p) => live.push(p),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, AllocError::OutOfMemory { requested: 64, largest_free } if largest_free < 64)
    );
    let mut rng = fastrand::Rng::with_seed(7);
    rng.shuffle(&mut live);
    for p in live {
        m.free(hdr(p), None).unwrap();
    }
    let total = m.stats().unwrap().total_bytes;
    let big = m
        .allocate(total * 95 / 100, 0)
        .expect("consolidation makes room");
    m.free(hdr(big), None).unwrap();
}

#[test]
fn double_free_and_bad_offsets_are_refused() {
    let m = AtomicMatrix::anonymous(1 << 20).unwrap();
    let a = m.allocate(64, 0).unwrap();
    m.free(hdr(a), None).unwrap();
    assert_eq!(
        m.free(hdr(a), None),
        Err(BlockError::DoubleFree { offset: hdr(a) })
    );
    assert!(matches!(
        m.free(0, None),
        Err(BlockError::OutOfBounds { .. })
    ));
    assert!(matches!(
        m.free(hdr(a) + 8, None),
        Err(BlockError::Misaligned { .. })
    ));
    let b = m.allocate(256, 0).unwrap();
    assert!(matches!(
        m.free(b.offset() + 64, None),
        Err(BlockError::NotABlock { .. })
    ));
    assert!(matches!(
        m.allocate(u32::MAX as u64, 0),
        Err(AllocError::TooLarge { .. })
    ));
}

#[test]
fn a_carve_releases_its_own_intent_not_a_sibling_threads() {
    use matrix_core::{alloc, Arena, ModelArena};
    use std::sync::atomic::Ordering::SeqCst;
    let model = ModelArena::new(64 * 1024);
    let view = model.participant(0);
    let start = view.arena_start();
    // Another thread of the same participant is returning a run that starts
    // exactly at `top` to the wilderness: its intent names the same offset
    // the next carve will take.
    let sibling = (4096u64 << 32) | start as u64;
    let slot = view.my_slot().unwrap();
    slot.carve_intents[0].store(sibling, SeqCst);
    let offset = alloc::allocate(&view, 100, 0).unwrap();
    assert_eq!(offset, start, "the allocation was carved at top");
    let left: Vec<u64> = slot.carve_intents.iter().map(|e| e.load(SeqCst)).collect();
    assert_eq!(left[0], sibling, "the sibling's intent is untouched");
    assert!(
        left[1..].iter().all(|&v| v == 0),
        "the carver's own intent is released: {left:x?}"
    );
}
