//! `LocalHandler`: the same refusals as the shared handles, on its own path.
//! (The handler reports a misaligned, out-of-bounds or header-less offset
//! as `InvalidOffset`.)

use matrix_handler::{BlockError, HandlerError, HandlerFunctions, MatrixHandler, RelativePtr};

fn handler() -> MatrixHandler {
    MatrixHandler::bootstrap(None, 1 << 20).expect("anonymous arena")
}

#[test]
fn a_double_free_through_the_local_handle_is_refused_and_changes_nothing() {
    let h = handler();
    let mut local = h.local();
    let a = local.allocate_raw(64).unwrap();
    local.free_raw(a).unwrap();
    assert!(matches!(
        local.free_raw(a),
        Err(HandlerError::Block(BlockError::DoubleFree { .. }))
    ));
    // The cached block is handed out once, not twice.
    let b = local.allocate_raw(64).unwrap();
    let c = local.allocate_raw(64).unwrap();
    assert_eq!(b.offset(), a.offset());
    assert_ne!(b.offset(), c.offset());
    // A block freed by the shared handle is refused by the local one.
    h.free_raw(c).unwrap();
    assert!(matches!(
        local.free_raw(c),
        Err(HandlerError::Block(BlockError::DoubleFree { .. }))
    ));
    local.free_raw(b).unwrap();
}

#[test]
fn a_stale_handle_is_refused_after_its_block_was_reused() {
    let h = handler();
    let mut local = h.local();
    let old = local.allocate::<u64>().unwrap();
    let (offset, generation) = (old.offset(), old.generation());
    let copy = h.block_at::<u64>(offset).unwrap();
    local.free(old).unwrap();
    let new = local.allocate::<u64>().unwrap();
    assert_eq!(new.offset(), offset, "the cached block is reused");
    assert_ne!(new.generation(), generation);
    assert!(matches!(
        local.free(copy),
        Err(HandlerError::Block(BlockError::Stale { .. }))
    ));
    // The new occupant is untouched by the refusal.
    assert_eq!(
        h.try_get_state(&new, std::sync::atomic::Ordering::Acquire)
            .unwrap(),
        1
    );
    local.free(new).unwrap();
}

#[test]
fn a_handle_of_another_segment_is_refused() {
    let a = handler();
    let b = handler();
    let block = a.allocate::<u64>().unwrap();
    let mut local_b = b.local();
    assert!(matches!(
        local_b.free(block),
        Err(HandlerError::ForeignHandle { .. })
    ));
}

#[test]
fn bogus_offsets_are_typed_errors() {
    let h = handler();
    let mut local = h.local();
    let live = local.allocate_raw(64).unwrap();
    assert!(matches!(
        local.free_raw(RelativePtr::new(8)),
        Err(HandlerError::InvalidOffset(8))
    ));
    let misaligned = local.free_at(live.offset() - 32 + 8);
    assert!(
        matches!(misaligned, Err(HandlerError::InvalidOffset(o)) if o == live.offset() - 24),
        "{misaligned:?}"
    );
    // Inside a payload: no genuine header there.
    let inside = local.free_at(live.offset() + 16);
    assert!(
        matches!(inside, Err(HandlerError::InvalidOffset(o)) if o == live.offset() + 16),
        "{inside:?}"
    );
    // Past `top`, and past the mapping.
    assert!(matches!(
        local.free_at(h.segment_size() - 16),
        Err(HandlerError::InvalidOffset(_))
    ));
    assert!(matches!(
        local.free_at(!15),
        Err(HandlerError::InvalidOffset(_))
    ));
    assert!(matches!(
        local.allocate_raw(u32::MAX),
        Err(HandlerError::AllocationFailed(_))
    ));
    local.free_raw(live).unwrap();
}

#[test]
fn dropping_the_local_handle_returns_its_blocks() {
    let h = handler();
    let before = h.stats().unwrap().used_bytes;
    {
        let mut local = h.local();
        let blocks: Vec<_> = (0..100)
            .map(|i| local.allocate_raw(16 + 8 * i).unwrap())
            .collect();
        for b in blocks {
            local.free_raw(b).unwrap();
        }
    }
    h.consolidate().unwrap();
    let stats = h.stats().unwrap();
    assert_eq!(stats.used_bytes, before);
    assert_eq!(stats.free_blocks, 1, "{stats:?}");
}

#[test]
fn a_local_handle_gives_back_its_cache_before_it_reports_out_of_memory() {
    let h = MatrixHandler::bootstrap(None, 256 << 10).expect("anonymous arena");
    let mut local = h.local();
    let blocks: Vec<_> = std::iter::from_fn(|| local.allocate_raw(1000).ok()).collect();
    assert!(blocks.len() > 100);
    for b in blocks {
        local.free_raw(b).unwrap();
    }
    // Only merging what the local handle cached makes this fit.
    let big = local
        .allocate_raw(128 << 10)
        .expect("the cached blocks were given back");
    local.free_raw(big).unwrap();
}

#[test]
fn a_free_of_a_block_with_an_impossible_size_gives_the_word_back() {
    use std::sync::atomic::Ordering::SeqCst;
    let h = handler();
    let mut local = h.local();
    let p = local.allocate_raw(64).unwrap();
    let (hdr, size) = h.raw_matrix().block_header(p.offset() - 32).unwrap();
    let word = hdr.state.load(SeqCst);
    hdr.size.store(40, SeqCst); // not a multiple of 16
    for result in [local.free_raw(p), h.free_raw(p)] {
        assert!(
            matches!(
                result,
                Err(HandlerError::Block(BlockError::Corrupted { .. }))
            ),
            "{result:?}"
        );
        assert_eq!(
            hdr.state.load(SeqCst),
            word,
            "the refused free changed the word"
        );
    }
    hdr.size.store(size, SeqCst);
    local.free_raw(p).unwrap();
}
