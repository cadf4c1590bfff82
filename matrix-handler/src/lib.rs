#![doc = include_str!("../README.md")]

mod block;
mod error;
mod functions;
mod handler;
mod shm_safe;

// The derive names the trait as `::matrix_handler::ShmSafe`, here too.
extern crate self as matrix_handler;

pub use block::{layout_tag, Block, BlockToken, TOKEN_GENERATION_BITS};
pub use bytemuck::{Pod, Zeroable};
pub use error::HandlerError;
pub use functions::HandlerFunctions;
pub use handler::{unlink, MatrixHandler, SharedHandler};
pub use matrix_core::state::{
    ACKED as STATE_ACKED, ALLOCATED as STATE_ALLOCATED, COALESCING as STATE_COALESCING,
    FREE as STATE_FREE, USER_STATE_MIN,
};
pub use matrix_core::{
    AllocError, ArenaStats, AtomicMatrix, BlockError, OwnerId, RecoveryReport, RelativePtr,
    ResizeKind, SegmentError,
};
/// Derives [`ShmSafe`](trait@ShmSafe) after checking the type at compile time.
pub use matrix_derive::ShmSafe;
pub use shm_safe::ShmSafe;

/// The workspace README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
