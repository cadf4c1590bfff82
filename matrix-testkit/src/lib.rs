#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! - [`invariants`]: the checker ([`check_invariants`], [`audit`]).
//! - [`model`], [`strategy`], [`runner`]: the shadow model, proptest
//!   strategies for operation sequences, and the runner that drives a real
//!   handler in lock-step with the model ([`run_ops`]).
//! - [`stress`]: thread, process, crash and hostile-segment harnesses, and
//!   the child-process plumbing they share.
//! - [`race`]: two operations on one block or slot at once, many times,
//!   with a check after every round (the race matrix).
//! - [`segment`]: unique segment names that unlink themselves.

mod sync;

pub mod invariants;
pub mod model;
pub mod race;
pub mod runner;
pub mod segment;
pub mod strategy;
pub mod stress;

pub use invariants::{
    audit, audit_of, check_arena, check_invariants, check_invariants_with, check_matrix, Audit,
    ChainBlock, Report, Violation, ViolationKind,
};
pub use model::{Divergence, Op, ShadowModel};
pub use runner::{run_ops, ModelConfig, ModelRunner, RunStats};
