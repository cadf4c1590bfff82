//! # matrix-handler
//!
//! The typed API over the shared-memory allocator of `matrix-core`.
//!
//! ```text
//! [ matrix-internals ]  iter, workers, tables      (built on HandlerFunctions)
//! [ MatrixHandler / SharedHandler ]  typed blocks, lifecycle, sharing
//! [ AtomicMatrix ]      raw offsets, sizes, bytes   (escape hatch: raw_matrix)
//! [ /dev/shm/<name> ]   the segment
//! ```
//!
//! - [`MatrixHandler`] owns this process's mapping; [`SharedHandler`]s from
//!   [`MatrixHandler::share`] go to other threads and keep the mapping alive.
//! - [`Block<T>`] is an ownership token with a generation: stale use is
//!   refused, not aliased. [`Block::offset`] / [`HandlerFunctions::block_at`]
//!   (or [`Block::token`] / [`HandlerFunctions::block_from_token`]) carry a
//!   block across a process boundary.
//! - Plain-old-data types (`bytemuck::Pod`) get safe `read_pod` / `write_pod`;
//!   the specification's `read` / `read_mut` / `write` stay `unsafe` for
//!   other types.
//! - Lifecycle: states 0–3 belong to the allocator (FREE, ALLOCATED, ACKED,
//!   COALESCING), 4–48 are reserved, and states from [`USER_STATE_MIN`] (49)
//!   up are yours. A block in a user state is never reclaimed automatically:
//!   free it when its lifecycle ends.
//!
//! ```
//! use matrix_handler::{HandlerFunctions, MatrixHandler, USER_STATE_MIN};
//! use std::sync::atomic::Ordering;
//!
//! let handler = MatrixHandler::bootstrap(None, 1 << 20)?;
//! let mut block = handler.allocate::<[u64; 4]>()?;
//! handler.write_pod(&mut block, [1, 2, 3, 4])?;
//! handler.set_state(&block, USER_STATE_MIN)?; // READY
//! assert_eq!(handler.transition_state(&block, 49, 50, Ordering::AcqRel)?, 49);
//! assert_eq!(handler.read_pod(&block)?, [1, 2, 3, 4]);
//! handler.free(block)?;
//! # Ok::<(), matrix_handler::HandlerError>(())
//! ```

mod block;
mod error;
mod functions;
mod handler;

pub use block::{layout_tag, Block, BlockToken};
pub use bytemuck::{Pod, Zeroable};
pub use error::HandlerError;
pub use functions::HandlerFunctions;
pub use handler::{unlink, MatrixHandler, SharedHandler};
pub use matrix_core::state::{
    ACKED as STATE_ACKED, ALLOCATED as STATE_ALLOCATED, COALESCING as STATE_COALESCING,
    FREE as STATE_FREE, USER_STATE_MIN,
};
pub use matrix_core::{
    AllocError, ArenaStats, AtomicMatrix, BlockError, RecoveryReport, RelativePtr, SegmentError,
};

/// The workspace README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
