//! matrix-testkit (in progress).
pub mod invariants;
pub mod model;
pub mod runner;
pub mod segment;
pub mod strategy;
pub mod stress;
mod sync;
pub use invariants::{
    audit, check_arena, check_invariants, check_matrix, Audit, ChainBlock, Report, Violation,
    ViolationKind,
};
pub use model::{Divergence, Op, ShadowModel};
pub use runner::{run_ops, ModelConfig, ModelRunner, RunStats};
