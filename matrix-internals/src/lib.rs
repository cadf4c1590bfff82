#![doc = include_str!("../README.md")]

mod sync;

pub mod dynamic;
pub mod inspect;
pub mod shm;

pub mod iter;
pub mod tables;
pub mod workers;

pub use dynamic::{DynError, OwnsBlocks, ShmBox, ShmBytes, ShmString, ShmVec};
pub use iter::{
    blocks, in_state, orphaned, orphaned_of, sum_by_state, Blocks, StateTotals, WalkError,
};
pub use tables::{
    MapError, Registry, RegistryEntry, RegistryError, ShmHashMap, ShmMap, ShmMapError,
    TypeFingerprint,
};
pub use workers::{
    DestroyError, PanicReport, PoolReport, PopError, PushError, QueueError, QueueRecovery,
    WorkQueue, WorkerPool,
};

#[cfg(feature = "fault-injection")]
#[doc(hidden)]
pub use shm::fault;

/// Everything of `matrix-handler`, which this crate's signatures use
/// (`Block`, `HandlerFunctions`, `HandlerError`, `OwnerId`, …), nameable from
/// here: a crate depending on `matrix-internals` alone names them as
/// `matrix_internals::handler::Block`.
pub mod handler {
    pub use matrix_handler::*;
}
