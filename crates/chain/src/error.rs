//! Errors of the chain interface: mempool policy rejections, block rejections and backend failures.

use bitcoin::{Amount, BlockHash, FeeRate, OutPoint, Txid};
use thiserror::Error;

/// Why the mempool refused a transaction or a package (Bitcoin Core 28+ relay policy).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RejectReason {
    /// The bytes do not decode as a transaction.
    #[error("transaction does not decode: {0}")]
    Decode(String),
    /// Context-free consensus checks (CheckTransaction) failed.
    #[error("transaction fails consensus checks: {0}")]
    Consensus(String),
    /// The transaction is already confirmed.
    #[error("transaction {0} is already confirmed")]
    AlreadyConfirmed(Txid),
    /// The transaction is already in the mempool.
    #[error("transaction {0} is already in the mempool")]
    AlreadyInMempool(Txid),
    /// An input spends an output that neither the chain nor the mempool has (or that is spent).
    #[error("input {input} spends {outpoint}, which is missing or already spent")]
    MissingInput {
        /// Index of the offending input.
        input: usize,
        /// The outpoint it spends.
        outpoint: OutPoint,
    },
    /// An input spends an output already spent by a mempool transaction.
    #[error("input {input} spends {outpoint}, already spent by mempool transaction {by}")]
    Conflict {
        /// Index of the offending input.
        input: usize,
        /// The contested outpoint.
        outpoint: OutPoint,
        /// The mempool transaction that spends it.
        by: Txid,
    },
    /// An input spends a coinbase output younger than 100 blocks.
    #[error("input {input} spends coinbase output {outpoint} before maturity (height {height}, spendable at {mature_at})")]
    ImmatureCoinbase {
        /// Index of the offending input.
        input: usize,
        /// The coinbase outpoint.
        outpoint: OutPoint,
        /// Height of the next block.
        height: u32,
        /// First height at which it may be spent.
        mature_at: u32,
    },
    /// The outputs are worth more than the inputs.
    #[error("outputs ({outputs}) exceed inputs ({inputs})")]
    InputsBelowOutputs {
        /// Sum of the spent outputs.
        inputs: Amount,
        /// Sum of the created outputs.
        outputs: Amount,
    },
    /// nLockTime is not yet satisfied for the next block (BIP65/BIP113).
    #[error("non-final: nLockTime {lock_time} not reached (next block height {height}, median time past {mtp})")]
    NonFinal {
        /// The transaction's nLockTime.
        lock_time: u32,
        /// Height of the next block.
        height: u32,
        /// Median time past of the tip.
        mtp: u32,
    },
    /// A BIP68 relative lock (nSequence) is not yet satisfied for the next block.
    #[error("non-BIP68-final: relative lock not reached (needs height > {min_height} / time > {min_time}; next block height {height}, median time past {mtp})")]
    SequenceLocked {
        /// Highest height at which the spend is still locked (-1 when no height lock).
        min_height: i64,
        /// Highest median time at which the spend is still locked (-1 when no time lock).
        min_time: i64,
        /// Height of the next block.
        height: u32,
        /// Median time past of the tip.
        mtp: u32,
    },
    /// A script does not verify (checked by Bitcoin Core's script interpreter).
    #[error("input {input}: script verification failed: {message}")]
    ScriptInvalid {
        /// Index of the offending input.
        input: usize,
        /// What the interpreter reported.
        message: String,
    },
    /// The transaction is not standard under relay policy.
    #[error("non-standard transaction: {0}")]
    NonStandard(String),
    /// An output is below the dust threshold where policy forbids it.
    #[error("dust: {0}")]
    Dust(String),
    /// The fee rate is below the minimum relay fee rate.
    #[error("fee too low: {} sat for {vsize} vB ({rate} sat/kvB) is below the minimum relay fee rate of {min} sat/kvB", .fee.to_sat())]
    FeeTooLow {
        /// Fee paid (for a package, by the whole package).
        fee: Amount,
        /// Virtual size (for a package, of the whole package).
        vsize: u64,
        /// The paid rate in sat/kvB.
        rate: u64,
        /// The minimum rate in sat/kvB.
        min: u64,
    },
    /// A TRUC (v3, BIP-431) rule is broken.
    #[error("TRUC violation: {0}")]
    Truc(String),
    /// A zero-fee transaction's dust output is not spent by its child in the package.
    #[error(
        "missing ephemeral spends: dust output {0} must be spent by a child in the same package"
    )]
    MissingEphemeralSpend(OutPoint),
    /// An unconfirmed ancestor or descendant limit is exceeded.
    #[error("too long unconfirmed chain: {0}")]
    TooLongMempoolChain(String),
    /// The package is not one parent and one child spending it.
    #[error("package rejected: {0}")]
    Package(String),
    /// A reason this crate does not classify, in the node's own words.
    #[error("rejected: {0}")]
    Other(String),
}

/// An error of the chain interface.
#[derive(Debug, Error)]
pub enum ChainError {
    /// The mempool refused the transaction.
    #[error("transaction {txid} rejected: {reason}")]
    Rejected {
        /// The refused transaction (all zeroes when it could not be decoded).
        txid: Txid,
        /// Why.
        reason: RejectReason,
    },
    /// Bitcoin Core's validation engine refused the block.
    #[error("block {hash} rejected by the consensus engine: {reason}")]
    BlockRejected {
        /// Hash of the refused block.
        hash: BlockHash,
        /// The engine's verdict, with our own diagnosis when we have one.
        reason: String,
    },
    /// A block cannot be built (e.g. the given transactions spend missing outputs).
    #[error("cannot build block: {0}")]
    BlockTemplate(String),
    /// The fee rate or amount requested is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend does not support the operation (e.g. mining on mainnet).
    #[error("operation not supported by this backend: {0}")]
    Unsupported(&'static str),
    /// The consensus engine failed internally.
    #[error("consensus engine error: {0}")]
    Kernel(String),
    /// The data directory could not be used.
    #[error("chain storage error: {0}")]
    Storage(String),
    /// The node's RPC failed: unreachable, refused our credentials, or answered an error that is
    /// not a verdict on a transaction.
    #[error("bitcoind RPC {method}: {message}")]
    Rpc {
        /// The RPC method called.
        method: String,
        /// Core's error code, when the node answered one.
        code: Option<i32>,
        /// What went wrong.
        message: String,
    },
}

impl ChainError {
    /// The policy reason, when the error is a mempool rejection.
    pub fn reject_reason(&self) -> Option<&RejectReason> {
        match self {
            ChainError::Rejected { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Convert a fee rate to sat/kvB for messages.
pub(crate) fn sat_per_kvb(rate: FeeRate) -> u64 {
    rate.to_sat_per_kwu() * 4
}
