//! The client side of SuperScalar: unilateral exit through the chain interface and the exit
//! package a wallet keeps.

#![deny(missing_docs)]

pub mod backup;
pub mod bump;
pub mod daemon;
pub mod exit;
pub mod funding;
pub mod join;
pub mod package;
pub mod swarm;
pub mod timeout;
/// The watcher (its own crate, shared with the LSP).
pub use superscalar_watch as watch;

pub use exit::{ExitError, ExitProgress, UnilateralExit};
pub use package::ExitPackage;
