#![doc = include_str!("../README.md")]

pub mod bench;
pub mod confirm;
pub mod error;
pub mod fsck;
pub mod inspect;
pub mod manage;
pub mod objects;
pub mod size;
mod sync;
pub mod top;
pub mod users;
pub mod view;

pub use error::{CliError, EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_PROBLEMS};
pub use view::SegmentView;
