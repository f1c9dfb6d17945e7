//! A discrete-event simulation of one SuperScalar LSP running a ladder of channel factories over
//! months: arrivals, churn, payments and liquidity purchases of its clients, rotations from dying
//! factories into new ones, and exits forced by clients offline through their dying period. It
//! reports on-chain transactions, vbytes and fees per user per year, the LSP's capital locked,
//! and the same clients with one on-chain channel each. Sizes and amounts come from the real
//! tree builder and fee policy of `superscalar-core` ([`costs`]); no I/O but [`write_outputs`].

#![deny(missing_docs)]

pub mod config;
pub mod costs;
pub mod model;
pub mod plot;
pub mod rng;
pub mod summary;

use std::path::Path;

pub use config::SimConfig;
pub use model::{prepare, run, run_with, Outcome};
pub use summary::Summary;

/// Name of the JSON summary [`write_outputs`] writes.
pub const SUMMARY_FILE: &str = "summary.json";

/// Write the three plots and `summary.json` of one run into `dir` (which must exist).
pub fn write_outputs(outcome: &Outcome, dir: &Path) -> Result<(), String> {
    plot::write_plots(outcome, dir)?;
    let json = serde_json::to_string_pretty(&outcome.summary).map_err(|e| e.to_string())?;
    let path = dir.join(SUMMARY_FILE);
    std::fs::write(&path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
