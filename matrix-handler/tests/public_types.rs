//! Every type that appears in this crate's public signatures, named through
//! this crate alone (no `matrix-core` path): if one stops being re-exported,
//! this stops compiling.

#![allow(dead_code, clippy::too_many_arguments, clippy::type_complexity)]

use matrix_handler as mh;

fn names(
    _: Option<(&mh::MatrixHandler, &mh::SharedHandler, &mh::AtomicMatrix)>,
    _: Option<(&mh::Block<u64>, mh::BlockToken, mh::RelativePtr<u8>)>,
    _: Option<(
        &mh::HandlerError,
        &mh::AllocError,
        &mh::BlockError,
        &mh::SegmentError,
    )>,
    _: Option<(
        &mh::RepairError,
        &mh::RecoveryReport,
        &mh::ConsolidationReport,
    )>,
    _: Option<(
        &mh::ArenaStats,
        &mh::BlockInfo,
        &mh::ParticipantInfo,
        mh::Liveness,
    )>,
    _: Option<(
        mh::OwnerId,
        &mh::CreateOptions,
        &mh::BlockHeader,
        &mh::SegmentHeader,
    )>,
    _: Option<(&mh::ParticipantSlot, &mh::FreeIndex, &mh::Counters)>,
    _: Option<(
        &mh::CachePadded<u64>,
        mh::ChainWalk<'static, mh::AtomicMatrix>,
    )>,
    _: Option<(
        &mh::ReallocError,
        &mh::Resized,
        &mh::SegmentHeaderOf<[mh::SlotEntry]>,
    )>,
) {
}

fn bounds<A: mh::Arena, P: mh::Pod + mh::Zeroable, S: mh::ShmSafe, H: mh::HandlerFunctions>() {}

#[test]
fn constants_are_nameable() {
    let states = [
        mh::STATE_FREE,
        mh::STATE_ALLOCATED,
        mh::STATE_ACKED,
        mh::STATE_COALESCING,
        mh::STATE_CACHED,
        mh::STATE_RELEASING,
        mh::USER_STATE_MIN,
        mh::STATE_MAX,
    ];
    assert!(states.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(mh::BLOCK_HEADER_SIZE, 32);
    assert_eq!(mh::MIN_PAYLOAD, 16);
    const { assert!(mh::TOKEN_GENERATION_BITS <= 40) };
    bounds::<mh::AtomicMatrix, u64, u64, mh::MatrixHandler>();
    names(None, None, None, None, None, None, None, None, None);
}

#[test]
fn borrowed_and_counted_handles_are_handles() {
    fn takes<H: mh::HandlerFunctions>(h: H) -> u32 {
        h.segment_size()
    }
    use mh::HandlerFunctions;
    let h = mh::MatrixHandler::bootstrap(None, 1 << 16).unwrap();
    let size = h.segment_size();
    assert_eq!(takes(&h), size);
    let borrowed = &h;
    assert_eq!(takes(borrowed), size);
    assert_eq!(takes(std::sync::Arc::new(h.share())), size);
    // free_raw takes what allocate_raw returns.
    let p = takes_raw(&h);
    h.free_raw(p).unwrap();
    assert!(h.free_raw(p).is_err(), "a double free is refused");
    assert!(matches!(
        h.free_raw(mh::RelativePtr::new(8)),
        Err(mh::HandlerError::InvalidOffset(8))
    ));
}

fn takes_raw(h: &impl mh::HandlerFunctions) -> mh::RelativePtr<u8> {
    h.allocate_raw(100).unwrap()
}
