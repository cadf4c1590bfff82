//! Every type that appears in this crate's public signatures, named through
//! this crate alone (its own types, and the lower crates' through
//! `matrix_testkit::handler`).

#![allow(dead_code, clippy::too_many_arguments, clippy::type_complexity)]

use matrix_testkit as tk;
use tk::handler as mh;

fn names(
    _: Option<(
        &tk::Report,
        &tk::Audit,
        &tk::ChainBlock,
        &tk::Violation,
        &tk::ViolationKind,
    )>,
    _: Option<(
        &tk::ModelRunner,
        &tk::ModelConfig,
        &tk::RunStats,
        &tk::Divergence,
        &tk::Op,
    )>,
    _: Option<(&tk::ShadowModel, &tk::SegmentName, mh::SizeClass)>,
    _: Option<(
        &tk::stress::Launcher,
        &tk::stress::ChildProcess,
        &tk::stress::StressError,
    )>,
    _: Option<(
        &tk::stress::WorkloadConfig,
        &tk::stress::WorkloadReport,
        &tk::stress::CheckPoint,
    )>,
    _: Option<(
        &tk::stress::WorkerContext<'static>,
        &tk::stress::HostileOutcome,
    )>,
    _: Option<(
        &tk::stress::crash::CrashConfig,
        &tk::stress::crash::CrashReport,
    )>,
    _: Option<(&tk::stress::control::Control, &tk::stress::control::Totals)>,
    _: Option<(
        &mh::MatrixHandler,
        &mh::SharedHandler,
        &mh::AtomicMatrix,
        mh::OwnerId,
    )>,
    _: Option<(
        &mh::Block<u8>,
        mh::BlockToken,
        &mh::HandlerError,
        &mh::RecoveryReport,
    )>,
) {
}

fn bounds<A: mh::Arena, H: mh::HandlerFunctions>() {}

#[test]
fn every_signature_type_is_nameable() {
    names(None, None, None, None, None, None, None, None, None, None);
    bounds::<mh::AtomicMatrix, mh::MatrixHandler>();
}
