//! proptest strategies for operation sequences.
//!
//! Exported so a downstream crate can drive [`ModelRunner`](crate::ModelRunner)
//! (or its own model) with the same distributions:
//!
//! ```
//! use matrix_testkit::strategy::ops;
//! use proptest::strategy::{Strategy, ValueTree};
//! use proptest::test_runner::TestRunner;
//!
//! let mut runner = TestRunner::deterministic();
//! let sequence = ops(10..20).new_tree(&mut runner).unwrap().current();
//! assert!((10..20).contains(&sequence.len()));
//! ```

use crate::model::{Actor, AllocKind, Expected, FreeAtTarget, Op, SizeSpec};
use matrix_core::state::USER_STATE_MIN;
use proptest::prelude::*;
use std::ops::Range;

/// Payload sizes: mostly small and medium, with the edges (0, 1, 15, 16, 17,
/// class boundaries, the whole arena, one byte more, absurd requests).
pub fn size_spec() -> impl Strategy<Value = SizeSpec> {
    prop_oneof![
        8 => (0u32..=64).prop_map(SizeSpec::Exact),
        5 => (65u32..=1024).prop_map(SizeSpec::Exact),
        2 => (1025u32..=16 << 10).prop_map(SizeSpec::Exact),
        2 => prop::sample::select(vec![
            0u32, 1, 15, 16, 17, 31, 32, 33, 47, 48, 49, 208, 223, 224, 225, 4064, 4065, 8160, 65_504,
        ])
        .prop_map(SizeSpec::Exact),
        1 => Just(SizeSpec::MaxPayload),
        1 => Just(SizeSpec::JustTooLarge),
        1 => Just(SizeSpec::Huge),
    ]
}

/// Who acts: mostly the main participant.
pub fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![4 => Just(Actor::Main), 1 => Just(Actor::Peer)]
}

/// An allocation entry point.
pub fn alloc_kind() -> impl Strategy<Value = AllocKind> {
    prop_oneof![6 => Just(AllocKind::Slice), 2 => Just(AllocKind::Raw), 1 => Just(AllocKind::Typed)]
}

/// A state argument: user states, reserved ones, and the extremes.
pub fn state_arg() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => USER_STATE_MIN..USER_STATE_MIN + 8,
        2 => 0u32..USER_STATE_MIN,
        1 => Just(u32::MAX),
    ]
}

/// An offset for `free_at`: live, freed, inside a payload, misaligned, random.
pub fn free_at_target() -> impl Strategy<Value = FreeAtTarget> {
    prop_oneof![
        3 => any::<usize>().prop_map(FreeAtTarget::Live),
        3 => any::<usize>().prop_map(FreeAtTarget::Freed),
        1 => any::<usize>().prop_map(FreeAtTarget::Payload),
        1 => (any::<usize>(), any::<u32>()).prop_map(|(i, k)| FreeAtTarget::Inside(i, k)),
        1 => any::<usize>().prop_map(FreeAtTarget::Misaligned),
        1 => prop_oneof![any::<u32>(), (0u32..1 << 20).prop_map(|x| x & !15)].prop_map(FreeAtTarget::Raw),
    ]
}

/// One operation, weighted towards allocation and free.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        24 => (actor(), size_spec(), alloc_kind()).prop_map(|(actor, size, kind)| Op::Allocate { actor, size, kind }),
        14 => (actor(), any::<usize>()).prop_map(|(actor, pick)| Op::Free { actor, pick }),
        6 => free_at_target().prop_map(|target| Op::FreeAt { target }),
        3 => any::<usize>().prop_map(|pick| Op::StaleToken { pick }),
        3 => (any::<usize>(), any::<u8>(), prop::bool::weighted(0.3))
            .prop_map(|(pick, seed, zero)| Op::Write { pick, seed, zero }),
        4 => (any::<usize>(), state_arg()).prop_map(|(pick, state)| Op::SetState { pick, state }),
        4 => (
            any::<usize>(),
            prop_oneof![3 => Just(Expected::Current), 1 => state_arg().prop_map(Expected::State)],
            state_arg()
        )
            .prop_map(|(pick, expected, next)| Op::Transition { pick, expected, next }),
        1 => any::<usize>().prop_map(|pick| Op::ReleaseToSegment { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Adopt { pick }),
        2 => Just(Op::Consolidate),
        1 => Just(Op::DetachPeer),
        1 => Just(Op::Recover),
    ]
}

/// A sequence of `len` operations.
pub fn ops(len: Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), len)
}
