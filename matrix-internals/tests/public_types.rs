//! Every type that appears in this crate's public signatures, named through
//! this crate alone (its own types, and `matrix-handler`'s through
//! `matrix_internals::handler`).

#![allow(dead_code, clippy::too_many_arguments, clippy::type_complexity)]

use matrix_internals as mi;
use mi::handler as mh;

type Queue = mi::WorkQueue<u64, mh::SharedHandler>;
type Map = mi::ShmHashMap<u64, u64, mh::SharedHandler>;
type Reg = mi::Registry<mh::SharedHandler>;

fn names(
    _: Option<(&Queue, &Map, &Reg, &mi::RegistryEntry, mi::TypeFingerprint)>,
    _: Option<(
        &mi::QueueError,
        &mi::PopError,
        &mi::PushError<u64>,
        &mi::DestroyError<u64, mh::SharedHandler>,
    )>,
    _: Option<(
        &mi::MapError,
        &mi::RegistryError,
        &mi::WalkError,
        &mi::QueueRecovery<u64>,
    )>,
    _: Option<(
        &mi::PoolReport,
        &mi::PanicReport,
        &mi::StateTotals,
        mi::Blocks<'static>,
    )>,
    _: Option<(
        &mh::Block<u64>,
        mh::BlockToken,
        mh::BlockInfo,
        &mh::BlockError,
    )>,
    _: Option<(
        mh::OwnerId,
        mh::RelativePtr<u8>,
        &mh::HandlerError,
        &mh::AtomicMatrix,
    )>,
    _: Option<(mi::shm::NotThere, mi::shm::Liveness)>,
    _: Option<(
        &mi::DynError,
        &mi::ShmVec<u64>,
        &mi::ShmString,
        &mi::ShmBytes,
        &mi::ShmBox<u64>,
    )>,
    _: Option<(
        &mi::inspect::Observer,
        &mi::inspect::RegistryRecord,
        &mi::inspect::EntryRecord,
        &mi::inspect::EntryDamage,
        mi::inspect::EntryState,
        mi::inspect::ObjectBlock,
        mi::inspect::ObjectKind,
        &mi::inspect::QueueStats,
        &mi::inspect::InspectError,
    )>,
) {
}

fn readable<M: mi::inspect::SegmentMemory>() {}

fn bounds<H: mh::HandlerFunctions, S: mh::ShmSafe, P: mh::Pod>() {}

#[test]
fn every_signature_type_is_nameable() {
    names(None, None, None, None, None, None, None, None, None);
    readable::<mi::inspect::Observer>();
    readable::<mh::AtomicMatrix>();
    bounds::<mh::MatrixHandler, u64, u64>();
    let _pool: Option<mi::WorkerPool> = None;
}
