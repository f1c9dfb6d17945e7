//! The store's one error type: every way a read or write can fail, none of them a panic.

use std::path::PathBuf;

use bitcoin::{OutPoint, Txid};
use thiserror::Error;

use crate::records::{
    ChannelId, CommitmentNumber, FactoryId, FactoryStatus, InvoiceStatus, NodeMeta, Party,
    PaymentHash, Spend,
};

/// A store operation that failed; a failed write changed nothing.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed (I/O, a full disk, a locked or damaged database file...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Creating the data directory or database file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The database was written by a newer program.
    #[error("database schema version {found} is newer than this program's {supported}; upgrade the program")]
    SchemaTooNew {
        /// Version in the file.
        found: u32,
        /// Newest version this program knows.
        supported: u32,
    },
    /// The file is an SQLite database of some other program.
    #[error("not a superscalar database (application id {0:#x})")]
    NotOurDatabase(i32),
    /// A migration step failed; the database stays at the version before it.
    #[error("migration to schema version {version} failed: {source}")]
    Migration {
        /// The version it would have reached.
        version: u32,
        /// Why.
        source: rusqlite::Error,
    },
    /// SQLite did not accept a setting the store relies on.
    #[error("database setting {pragma} is {got:?}, expected {expected:?}")]
    Setting {
        /// The pragma.
        pragma: &'static str,
        /// What it reads back as.
        got: String,
        /// What the store needs.
        expected: &'static str,
    },
    /// Stored bytes that do not decode.
    #[error("corrupt record in {what}: {detail}")]
    Corrupt {
        /// Table and column.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A number that does not fit its column or type.
    #[error("{what} {value} is out of range")]
    OutOfRange {
        /// What it is.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// The node metadata differs from what the database was created for.
    #[error("this database belongs to {stored:?}, not {given:?}")]
    NodeMismatch {
        /// In the database.
        stored: Box<NodeMeta>,
        /// Asked for.
        given: Box<NodeMeta>,
    },
    /// A factory that exists already.
    #[error("factory {0} exists already")]
    FactoryExists(FactoryId),
    /// A factory the store does not know.
    #[error("unknown factory {0}")]
    UnknownFactory(FactoryId),
    /// A factory status change that goes backwards.
    #[error("factory {factory} cannot go from {from} to {to}")]
    FactoryStatus {
        /// The factory.
        factory: FactoryId,
        /// Current status.
        from: FactoryStatus,
        /// Asked for.
        to: FactoryStatus,
    },
    /// A funding outpoint different from the one recorded.
    #[error("factory {factory} is funded by {recorded}, not {given}")]
    FundingConflict {
        /// The factory.
        factory: FactoryId,
        /// Recorded.
        recorded: OutPoint,
        /// Asked for.
        given: OutPoint,
    },
    /// A transaction already stored with other bytes (other witnesses) or another label.
    #[error("transaction {txid} is stored already with other contents")]
    TxConflict {
        /// The transaction.
        txid: Txid,
    },
    /// A state version that is not the next one.
    #[error(
        "state version {given} of {party} in factory {factory}: the next version is {expected}"
    )]
    VersionGap {
        /// The factory.
        factory: FactoryId,
        /// The party.
        party: Party,
        /// The next version.
        expected: u64,
        /// Asked for.
        given: u64,
    },
    /// A channel that exists already.
    #[error("channel {0} exists already")]
    ChannelExists(ChannelId),
    /// A channel the store does not know.
    #[error("unknown channel {0}")]
    UnknownChannel(ChannelId),
    /// A channel update that does not move the commitment number forward.
    #[error("channel {channel} is at commitment {stored}; update to {given} refused")]
    StaleCommitment {
        /// The channel.
        channel: ChannelId,
        /// Stored number.
        stored: CommitmentNumber,
        /// Asked for.
        given: CommitmentNumber,
    },
    /// A different secret for a commitment whose secret is already stored.
    #[error("channel {channel}: a different secret for commitment {commitment} is stored")]
    SecretConflict {
        /// The channel.
        channel: ChannelId,
        /// The commitment.
        commitment: CommitmentNumber,
    },
    /// A second, different spend of an outpoint already signed: never sign it.
    #[error(
        "outpoint {outpoint} was signed for spend {recorded:?}; refusing to sign {attempted:?}"
    )]
    ConflictingSpend {
        /// The outpoint.
        outpoint: OutPoint,
        /// The spend signed before.
        recorded: Box<Spend>,
        /// The spend asked for.
        attempted: Box<Spend>,
    },
    /// A ceremony without participants or with one twice.
    #[error("ceremony of factory {0}: participants must be distinct and at least one")]
    BadParticipants(FactoryId),
    /// No pending ceremony for a factory.
    #[error("no ceremony under way for factory {0}")]
    NoCeremony(FactoryId),
    /// An invoice that exists already.
    #[error("invoice {0} exists already")]
    InvoiceExists(PaymentHash),
    /// An invoice the store does not know.
    #[error("unknown invoice {0}")]
    UnknownInvoice(PaymentHash),
    /// A preimage that does not hash to the invoice's payment hash.
    #[error("preimage does not match payment hash {0}")]
    PreimageMismatch(PaymentHash),
    /// An invoice status change not allowed (or paid without a preimage).
    #[error("invoice {hash} cannot go from {from} to {to}")]
    InvoiceStatus {
        /// The invoice.
        hash: PaymentHash,
        /// Current status.
        from: InvoiceStatus,
        /// Asked for.
        to: InvoiceStatus,
    },
    /// A transaction label that is not 1 to 64 printable ASCII characters.
    #[error("invalid transaction label {0:?}")]
    InvalidLabel(String),
    /// A punishment without a factory or channel.
    #[error("a punishment must name its factory or its channel")]
    PunishmentWithoutOwner,
}

impl StoreError {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            what,
            detail: detail.into(),
        }
    }
}
