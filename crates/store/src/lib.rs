//! Persistence for the SuperScalar daemons: a SQLite store with versioned migrations
//! ([`Store`]), the encrypted seed file ([`seed`]) and the keys derived from it ([`keys`]).
//!
//! What is stored: node metadata, factories with their signed transactions and per-party state
//! history, channels with the secrets the other side revealed, punishments, the watch list,
//! ceremonies under way, invoices, and the one spend ever signed of each guarded outpoint. What
//! is never stored: private keys (re-derived from the seed), the seed in plaintext (except on
//! regtest when asked), MuSig2 secret nonces.

#![deny(missing_docs)]

pub mod backup;
pub mod convert;
pub mod error;
pub mod fs;
pub mod keys;
pub mod node;
pub mod records;
pub mod seed;
pub mod sqlite;

pub use error::StoreError;
pub use keys::{ChannelBaseSecrets, ChannelSecretKind, KeyError, KeyFamily, KeyIndex, NodeKeys};
pub use records::*;
pub use seed::{create_seed_file, load_seed_file, KdfParams, Protection, Seed, SeedError};
pub use sqlite::{Store, DB_FILE_NAME};
