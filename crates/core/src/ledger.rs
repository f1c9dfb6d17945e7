//! A version of a factory's off-chain state: the odometer, the liquidity sales, and the current
//! version (and revocation hash) of every liquidity-stock output. Every transaction of the factory
//! is a pure function of the factory's parameters and one [`Version`].

use bitcoin::hashes::sha256;
use bitcoin::Amount;
use serde::{Deserialize, Serialize};

use crate::odometer::Odometer;
use crate::types::ClientId;

/// One sale of inbound liquidity: LSP stock moved into a new channel for the buyer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    /// The client who bought it.
    pub buyer: ClientId,
    /// The stock output it was taken from.
    pub stock: u32,
    /// Capacity of the new channel (all of it on the LSP's side at first).
    pub amount: Amount,
    /// Whether the new channel is an output of the leaf state itself (a DW-leaf sale, or a PS sale
    /// cut through at the leaf's next replacement) rather than of a sale transaction.
    pub merged: bool,
}

/// The live version of one liquidity-stock output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockVersion {
    /// How many times this stock output has been superseded.
    pub version: u32,
    /// SHA-256 of the LSP's revocation secret for this version (in the hashlock leaf).
    pub hash: sha256::Hash,
}

/// A version of the factory's off-chain state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The Decker-Wattenhofer odometer.
    pub odo: Odometer,
    /// Every liquidity sale so far, by sale index.
    pub sales: Vec<Sale>,
    /// The live version of every stock output, by stock index.
    pub stocks: Vec<StockVersion>,
}

impl Version {
    /// Unmerged sales of `stock`, in order (the PS chain of that stock output).
    pub fn chain_of(&self, stock: u32) -> Vec<u32> {
        self.sales
            .iter()
            .enumerate()
            .filter(|(_, s)| s.stock == stock && !s.merged)
            .map(|(j, _)| j as u32)
            .collect()
    }

    /// Merged sales of `stock`, in order (outputs of its leaf state).
    pub fn merged_of(&self, stock: u32) -> Vec<u32> {
        self.sales
            .iter()
            .enumerate()
            .filter(|(_, s)| s.stock == stock && s.merged)
            .map(|(j, _)| j as u32)
            .collect()
    }

    /// Every sale bought by `client`.
    pub fn sales_of(&self, client: ClientId) -> Vec<u32> {
        self.sales
            .iter()
            .enumerate()
            .filter(|(_, s)| s.buyer == client)
            .map(|(j, _)| j as u32)
            .collect()
    }
}
