#![doc = include_str!("../README.md")]
//!
//! ## Offsets and sizes
//!
//! Every offset in this crate's API is a *payload offset* (where a block's
//! data starts, 16-aligned, 32 bytes past its header) unless its name says
//! `header_offset`: [`Block::offset`], [`BlockToken::offset`], what
//! [`allocate_raw`](HandlerFunctions::allocate_raw) returns (a
//! [`RelativePtr<u8>`]), what [`block_at`](HandlerFunctions::block_at) and
//! [`free_raw`](HandlerFunctions::free_raw) take. The header offset appears
//! only in [`free_at`](HandlerFunctions::free_at) (the specification's name,
//! kept), [`Block::header_offset`] and [`BlockInfo::offset`] of a chain walk
//! ([`BlockInfo::payload`] gives the payload kind).
//!
//! Every size is a `u32` byte count (a segment is at most `u32::MAX`
//! bytes, so nothing in it is larger): the segment size given to
//! [`MatrixHandler::create`] and returned by
//! [`segment_size`](HandlerFunctions::segment_size), and payload sizes as
//! [`allocate_raw`](HandlerFunctions::allocate_raw) takes them. Element
//! counts of slices are `usize`, as for Rust slices. The raw
//! [`AtomicMatrix`] below takes `u64` requests, so that it can report an
//! oversized request from any source as an error.

mod block;
mod error;
mod functions;
mod handler;
mod local;
mod shm_safe;

// The derive names the trait as `::matrix_handler::ShmSafe`, here too.
extern crate self as matrix_handler;

pub use block::{layout_tag, Block, BlockToken, TOKEN_GENERATION_BITS};
pub use error::HandlerError;
pub use functions::HandlerFunctions;
pub use handler::{unlink, MatrixHandler, SharedHandler};
pub use local::LocalHandler;

/// The crate `Pod` and `Zeroable` come from, for their derives in a crate
/// that depends on `matrix-handler` only:
/// `#[derive(Pod, Zeroable)] #[bytemuck(crate = "matrix_handler::bytemuck")]`.
pub use bytemuck;
pub use bytemuck::{Pod, Zeroable};

/// The padding of the segment header's hot words ([`SegmentHeader`]).
pub use crossbeam_utils::CachePadded;
pub use matrix_core::layout::SlotEntry;
pub use matrix_core::layout::{Counters, FreeIndex, ParticipantSlot, SegmentHeaderOf};
pub use matrix_core::participant::ParticipantInfo;
pub use matrix_core::state::{
    ACKED as STATE_ACKED, ALLOCATED as STATE_ALLOCATED, CACHED as STATE_CACHED,
    COALESCING as STATE_COALESCING, FREE as STATE_FREE, RELEASING as STATE_RELEASING, STATE_MAX,
    USER_STATE_MIN,
};
pub use matrix_core::walk::ChainWalk;
pub use matrix_core::{
    AllocError, Arena, ArenaStats, AtomicMatrix, BlockError, BlockHeader, BlockInfo,
    ConsolidationReport, CreateOptions, Liveness, LocalMatrix, OwnerId, RecoveryReport,
    RelativePtr, RepairError, ResizeKind, SegmentError, SegmentHeader, BLOCK_HEADER_SIZE,
    MIN_PAYLOAD,
};
pub use matrix_core::{ReallocError, Resized};
/// Derives [`ShmSafe`](trait@ShmSafe) after checking the type at compile time.
pub use matrix_derive::ShmSafe;
pub use shm_safe::ShmSafe;

/// The workspace README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
