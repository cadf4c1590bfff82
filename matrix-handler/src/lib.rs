#![doc = include_str!("../README.md")]

mod block;
mod error;
mod functions;
mod handler;

pub use block::{layout_tag, Block, BlockToken, TOKEN_GENERATION_BITS};
pub use bytemuck::{Pod, Zeroable};
pub use error::HandlerError;
pub use functions::HandlerFunctions;
pub use handler::{unlink, MatrixHandler, SharedHandler};
pub use matrix_core::state::{
    ACKED as STATE_ACKED, ALLOCATED as STATE_ALLOCATED, COALESCING as STATE_COALESCING,
    FREE as STATE_FREE, USER_STATE_MIN,
};
/// Options of [`MatrixHandler::create_with`]: mode and group.
pub use matrix_core::CreateOptions;
pub use matrix_core::{
    AllocError, ArenaStats, AtomicMatrix, BlockError, RecoveryReport, RelativePtr, SegmentError,
};

/// The workspace README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
