//! Dynamic data inside a segment: [`ShmVec`], [`ShmString`], [`ShmBytes`],
//! [`ShmBox`], and the [`OwnsBlocks`] trait that frees nested values.
//!
//! ```text
//!  a record (any block, or a field of one)      its buffer (a block of its own)
//!  ┌──────────────────────────────┐            ┌───────────────────────────┐
//!  │ ShmVec<T> { token, len, cap }├──token────►│ T T T T T . . . (cap)     │
//!  └──────────────────────────────┘            └───────────────────────────┘
//! ```
//!
//! Every container is a `#[repr(C)]`, [`ShmSafe`](matrix_handler::ShmSafe) value holding a
//! [`BlockToken`] (segment nonce, generation,
//! offset) of its buffer, never a pointer: any process that maps the
//! segment reads it at its own mapping address, through its own handler.
//! Every read rebuilds the buffer's handle from the token, so a buffer that
//! was freed (a stale generation) or a container of another segment (a
//! foreign nonce) is a typed error, and every slice is bounded by the
//! buffer's payload.
//!
//! Capacity grows through `reallocate`: in place when the buffer is the
//! last block or its neighbour is free, else by a move (see
//! `matrix_core::realloc`); growth doubles the capacity.
//!
//! **Ownership.** One writer at a time, by design; any number of readers
//! while no writer is active. Moving a container between processes moves
//! the writer role (a queue or the registry carries the record; the
//! receiver adopts the buffers). What can be detected is refused: a
//! mutation through a participant that neither owns the buffer nor finds
//! it owned by the segment is [`DynError::NotWriter`]; a buffer being
//! resized by another writer at the same moment is refused by the
//! allocator (its state is RESIZING). A writer killed during a growth
//! leaves the old or the new buffer live (see `matrix_core::realloc`):
//! `recover()` reports which in `RecoveryReport::resized`.
//!
//! **Nesting.** Element types are `ShmSafe + Copy + OwnsBlocks`, so a
//! `ShmVec<ShmString>` or a record with container fields is one value;
//! [`OwnsBlocks::free_blocks`] frees it whole. Derive `OwnsBlocks` for a
//! record with `#[derive(matrix_internals::OwnsBlocks)]`. A type may name
//! itself through a container (a list of `ShmBox` nodes): a walk enters
//! each buffer once, so a cycle is freed once, and at most
//! [`MAX_WALK_DEPTH`] buffers deep ([`DynError::TooDeep`] beyond).

mod boxed;
mod error;
mod owns;
mod string;
mod vec;
mod walk;

pub use boxed::ShmBox;
pub use error::DynError;
/// Derives [`OwnsBlocks`](trait@OwnsBlocks) for a struct whose fields all
/// own blocks (or nothing): `free_blocks` frees each field in order.
pub use matrix_derive::OwnsBlocks;
#[doc(hidden)]
pub use matrix_handler::{BlockToken, HandlerFunctions};
pub use owns::OwnsBlocks;
pub use string::{ShmBytes, ShmString};
pub use vec::ShmVec;
pub use walk::MAX_DEPTH as MAX_WALK_DEPTH;
