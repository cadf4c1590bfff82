//! `reallocate` on the handler: elements kept, new ones zero, the handle
//! rule (every other handle of the old block is stale), and refusals.

use matrix_handler::{BlockError, HandlerError, HandlerFunctions, MatrixHandler, ResizeKind};

#[test]
fn growing_keeps_the_elements_zeroes_the_rest_and_renews_the_handle() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let mut b = h.allocate_array::<u64>(4).unwrap();
    h.write_elems(&mut b, 0, &[1, 2, 3, 4]).unwrap();
    let copy = b.token();
    let kind = h.reallocate(&mut b, 1000).unwrap();
    assert_eq!(kind, ResizeKind::GrownIntoWilderness);
    assert_eq!(b.len(), 1000);
    let s = h.get_slice(&b).unwrap();
    assert_eq!(&s[..4], &[1, 2, 3, 4]);
    assert!(s[4..].iter().all(|&x| x == 0));
    // Another handle to the old block is stale now.
    assert!(matches!(
        h.block_from_token::<u64>(copy),
        Err(HandlerError::Block(BlockError::Stale { .. }))
    ));
    let kind = h.reallocate(&mut b, 2).unwrap();
    assert_eq!(kind, ResizeKind::Shrunk);
    assert_eq!(h.get_slice(&b).unwrap(), &[1, 2]);
    h.free(b).unwrap();
}

#[test]
fn a_move_keeps_the_elements_and_refusals_leave_the_handle_valid() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let mut b = h.allocate_array::<u32>(8).unwrap();
    let fence = h.allocate_array::<u32>(8).unwrap();
    h.write_elems(&mut b, 0, &[9; 8]).unwrap();
    assert_eq!(h.reallocate(&mut b, 5000).unwrap(), ResizeKind::Moved);
    assert_eq!(&h.get_slice(&b).unwrap()[..8], &[9; 8]);
    let before = b.token();
    assert!(matches!(
        h.reallocate(&mut b, usize::MAX),
        Err(HandlerError::SliceTooLarge { .. })
    ));
    assert!(matches!(
        h.reallocate(&mut b, 1 << 20),
        Err(HandlerError::SliceTooLarge { .. }) | Err(HandlerError::AllocationFailed(_))
    ));
    assert_eq!(b.token(), before);
    assert_eq!(&h.get_slice(&b).unwrap()[..8], &[9; 8]);
    assert!(h.write_elems(&mut b, 4999, &[1, 2]).is_err());
    h.free(b).unwrap();
    h.free(fence).unwrap();
}

#[test]
fn raw_resizes_return_the_payload_offset() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    let p = h.allocate_raw(100).unwrap();
    let q = h.reallocate_raw(p, 10_000).unwrap();
    assert_eq!(p, q, "the last block grows in place");
    assert!(h
        .reallocate_raw(matrix_handler::RelativePtr::new(8), 10)
        .is_err());
    h.free_at(q.offset() - 32).unwrap();
}

/// The handle rule for every way a resize can go: in place (the same
/// payload offset) or moved, the new handle carries a new generation, and
/// a copy of the old handle (rebuilt from its token before the resize) is
/// refused as stale — or, after a move, as naming no live block.
#[test]
fn every_kind_of_resize_renews_the_handle_and_makes_copies_stale() {
    let h = MatrixHandler::bootstrap(None, 1 << 20).unwrap();
    // [b 64 B][n 256 B, freed][fence]: b can grow into n.
    let mut b = h.allocate_array::<u64>(4).unwrap();
    let n = h.allocate_array::<u64>(28).unwrap();
    let fence = h.allocate::<u64>().unwrap();
    h.write_elems(&mut b, 0, &[7, 8, 9, 10]).unwrap();
    h.free(n).unwrap();
    h.matrix().flush_thread_cache();
    let cases: [(usize, ResizeKind); 5] = [
        (3, ResizeKind::Unchanged),                // 24 B fits the 32 B payload
        (32, ResizeKind::GrownIntoNeighbour),      // 256 B: all of n
        (2, ResizeKind::Shrunk),                   // back to 16 B, the tail freed
        (10_000, ResizeKind::Moved),               // the fence is in the way
        (20_000, ResizeKind::GrownIntoWilderness), // now the last block
    ];
    for (len, want) in cases {
        let before = (b.offset(), b.generation(), b.token());
        let kind = h.reallocate(&mut b, len).unwrap();
        assert_eq!(kind, want, "resize to {len} elements");
        assert_ne!(b.generation(), before.1, "{kind:?}: a new generation");
        assert_eq!(
            kind.in_place(),
            b.offset() == before.0,
            "{kind:?}: the offset"
        );
        assert_eq!(b.len(), len);
        assert_eq!(&h.get_slice(&b).unwrap()[..2], &[7, 8], "{kind:?}: kept");
        match h.block_from_token::<u64>(before.2) {
            Err(HandlerError::Block(BlockError::Stale { .. })) => assert!(kind.in_place()),
            Err(HandlerError::Block(BlockError::NotLive { .. })) => assert!(!kind.in_place()),
            other => panic!("{kind:?}: a copy of the old handle gave {other:?}"),
        }
    }
    h.free(b).unwrap();
    h.free(fence).unwrap();
    h.consolidate().unwrap();
    assert_eq!(h.stats().unwrap().used_bytes, 0);
}
