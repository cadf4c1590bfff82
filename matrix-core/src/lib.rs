#![doc = include_str!("../README.md")]

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
mod local;
#[cfg(not(loom))]
mod matrix;
pub mod name;
#[cfg(not(loom))]
pub mod observer;
pub mod participant;
pub mod realloc;
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
pub use local::LocalMatrix;
#[cfg(not(loom))]
pub use matrix::AtomicMatrix;
#[cfg(not(loom))]
pub use observer::Observer;
pub use participant::Liveness;
pub use realloc::{ReallocError, ResizeKind, Resized};
pub use recover::{RecoveryReport, RepairError};
pub use relative_ptr::RelativePtr;
#[cfg(not(loom))]
pub use segment::{unlink, CreateOptions, ScratchName};
pub use walk::{ArenaStats, BlockInfo};
