//! # matrix-core
//!
//! A lock-free allocator that lives inside a shared-memory segment, so that
//! several processes allocate, hand off and free blocks of one arena with no
//! copies and no system calls on the hot path.
//!
//! - [`AtomicMatrix`]: attach to a segment (create / open / anonymous) and
//!   allocate, free, consolidate, recover, walk.
//! - The segment format ([`layout`]), the block state machine ([`state`]),
//!   TLSF size classes ([`size_class`]).
//! - The engine is generic over [`Arena`], so loom can model-check the same
//!   code on a [`ModelArena`] built from ordinary memory.
//!
//! ```
//! use matrix_core::AtomicMatrix;
//! let m = AtomicMatrix::anonymous(1 << 20)?;
//! let p = m.allocate(100, 0)?;
//! m.free(p.offset() - 32, None)?;
//! assert_eq!(m.stats()?.used_bytes, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod sync;

pub mod alloc;
pub mod arena;
#[cfg(not(loom))]
mod cache;
pub mod consolidate;
pub mod error;
pub mod fault;
pub mod free_index;
pub mod layout;
#[cfg(not(loom))]
mod matrix;
pub mod name;
#[cfg(not(loom))]
pub mod observer;
#[cfg(not(loom))]
pub mod participant;
pub mod recover;
pub mod relative_ptr;
#[cfg(not(loom))]
pub mod segment;
pub mod size_class;
pub mod state;
pub mod walk;

pub use arena::{Arena, ModelArena, ModelView, OwnerId};
pub use consolidate::ConsolidationReport;
pub use error::{AllocError, BlockError, SegmentError};
pub use layout::{BlockHeader, SegmentHeader, BLOCK_HEADER_SIZE, MIN_PAYLOAD};
#[cfg(not(loom))]
pub use matrix::AtomicMatrix;
#[cfg(not(loom))]
pub use observer::Observer;
pub use recover::{RecoveryReport, RepairError};
pub use relative_ptr::RelativePtr;
#[cfg(not(loom))]
pub use segment::{unlink, CreateOptions, ScratchName};
pub use walk::{ArenaStats, BlockInfo};
