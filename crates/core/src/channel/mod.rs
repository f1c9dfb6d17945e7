//! Leaf channels: Poon-Dryja channels between the LSP and a client, funded by a factory leaf
//! output, in the BOLT taproot zero-fee-commitment format.

pub mod commitment;
pub mod deadlines;
pub mod keys;
pub mod link;
pub mod multipath;
pub mod state;
