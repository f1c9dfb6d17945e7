//! The chain as the rest of superscalar-rs sees it.
//!
//! [`Chain`] is the interface: tip, median time past, transaction and package submission, mining
//! (regtest backends), confirmation status, UTXO lookup, blocks by height and fee estimation.
//! [`EmbeddedChain`] implements it on Bitcoin Core's own validation engine (libbitcoinkernel) with a
//! regtest chainstate, behind a mempool that applies Bitcoin Core 28+ relay policy. The kernel, not
//! our code, decides whether a block is valid.

#![deny(missing_docs)]

mod consensus;
mod embedded;
mod error;
mod index;
mod mempool;
mod miner;
pub mod policy;
pub mod rpc;
pub mod testkit;

pub use embedded::{ChainConfig, EmbeddedChain};
pub use error::{ChainError, RejectReason};
pub use index::Coin;
pub use mempool::PackageAcceptance;
pub use miner::regtest_subsidy;
pub use rpc::BitcoindRpc;

use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::{Block, BlockHash, FeeRate, OutPoint, Script, Transaction, Txid};

/// Height and hash of the best block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainTip {
    /// Height of the best block (genesis is 0).
    pub height: u32,
    /// Hash of the best block.
    pub hash: BlockHash,
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Neither in the mempool nor in the active chain.
    Unknown,
    /// Waiting in the mempool.
    InMempool,
    /// In the active chain.
    Confirmed {
        /// Height of the block that holds it.
        height: u32,
        /// Hash of that block.
        block_hash: BlockHash,
        /// Number of blocks from it to the tip, itself included.
        confirmations: u32,
    },
}

impl TxStatus {
    /// Confirmations (0 when unconfirmed or unknown).
    pub fn confirmations(&self) -> u32 {
        match self {
            TxStatus::Confirmed { confirmations, .. } => *confirmations,
            _ => 0,
        }
    }
}

/// A blockchain backend: the embedded regtest chain now, a bitcoind RPC client later.
///
/// All methods take `&self` so one backend can be shared by an LSP and its clients.
pub trait Chain: Send + Sync {
    /// Height and hash of the best block.
    fn tip(&self) -> Result<ChainTip, ChainError>;

    /// Median time past of the best block (BIP113), the reference for time locks.
    fn median_time_past(&self) -> Result<u32, ChainError>;

    /// Submit one transaction to the mempool.
    fn submit_transaction(&self, tx: &Transaction) -> Result<Txid, ChainError>;

    /// Submit a parent and a child that spends it, judged together for fees (1P1C package relay).
    fn submit_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<PackageAcceptance, ChainError>;

    /// Mine `count` blocks from the mempool, paying the block rewards to `payout` (regtest only).
    fn mine_blocks(&self, count: u32, payout: &Script) -> Result<Vec<BlockHash>, ChainError>;

    /// Mine one block holding exactly `txs`, bypassing the mempool: consensus alone judges them
    /// (regtest only).
    fn mine_block_with(
        &self,
        txs: &[Transaction],
        payout: &Script,
    ) -> Result<BlockHash, ChainError>;

    /// Where a transaction is.
    fn tx_status(&self, txid: &Txid) -> Result<TxStatus, ChainError>;

    /// The unspent output at `outpoint` in the active chain (mempool spends not considered).
    fn get_utxo(&self, outpoint: &OutPoint) -> Result<Option<Coin>, ChainError>;

    /// The block at `height` in the active chain.
    fn block_at(&self, height: u32) -> Result<Option<Block>, ChainError>;

    /// A fee rate that should confirm within `target_blocks`.
    fn estimate_fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError>;

    /// Decode raw bytes and submit them as a transaction.
    fn submit_raw_transaction(&self, bytes: &[u8]) -> Result<Txid, ChainError> {
        let tx: Transaction = deserialize(bytes).map_err(|e| ChainError::Rejected {
            txid: Txid::all_zeros(),
            reason: RejectReason::Decode(e.to_string()),
        })?;
        self.submit_transaction(&tx)
    }
}
