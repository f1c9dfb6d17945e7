//! A client's encrypted backup and its restore into an empty data directory.
//!
//! The backup holds what the client needs to leave its factories alone after losing its data
//! directory: its seed words (every key derives from them), the LSP it uses, and for each
//! factory it is in (signed, live or being exited) the factory's parameters, its position, the key
//! index of its factory key, and its signed exit path and timeout transactions. It is sealed under
//! a passphrase ([`superscalar_store::backup`]). Restoring writes a new seed file and a new
//! database with those factories; `client run` then resumes them as after a restart (and an
//! exit goes on where the chain shows it).

use std::path::Path;

use bitcoin::{Network, OutPoint};
use serde::{Deserialize, Serialize};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::FactoryId;
use superscalar_store::backup::{open, seal};
use superscalar_store::seed::{
    create_seed_file, seed_path, KdfParams, Protection, Seed, SeedError,
};
use superscalar_store::{
    FactoryRecord, FactoryStatus, KeyFamily, KeyIndex, Party, Store, StoreError,
};
use zeroize::Zeroizing;

/// One factory in a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackedUpFactory {
    /// The factory.
    pub id: FactoryId,
    /// Its parameters (`superscalar_core::codec`), hex.
    pub params: String,
    /// Its status when backed up (`signed`, `live`, `closing`).
    pub status: String,
    /// Its creation height.
    pub created_height: u32,
    /// Its timeout T.
    pub timeout_height: u32,
    /// Its funding outpoint.
    pub funding: OutPoint,
    /// The key index of this client's factory key.
    pub key_index: u32,
    /// This client's position.
    pub position: u32,
    /// Its signed exit path and timeouts.
    pub signed: Vec<SignedTx>,
}

/// What a backup holds.
#[derive(Serialize, Deserialize)]
pub struct Backup {
    /// Format version (1).
    pub version: u32,
    /// The chain.
    pub network: Network,
    /// The LSP (`node_id@host:port`).
    pub lsp: String,
    /// The seed's 24 words.
    pub mnemonic: String,
    /// The next factory key index to hand out (past every one used).
    pub next_factory_index: u32,
    /// The factories.
    pub factories: Vec<BackedUpFactory>,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("network", &self.network)
            .field("lsp", &self.lsp)
            .field("factories", &self.factories.len())
            .finish_non_exhaustive()
    }
}

/// A backup or restore that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Sealing, opening or the seed file.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The backup's content is not one this program reads.
    #[error("the backup's content is unreadable: {0}")]
    Content(String),
    /// Restoring needs an empty data directory.
    #[error("{0} already holds a node (a seed or a database): restore into an empty directory")]
    NotEmpty(String),
}

/// Seals `backup` under `passphrase` and writes it to `path` (a new file, mode 0600).
pub fn write(path: &Path, backup: &Backup, passphrase: &str) -> Result<(), BackupError> {
    let json = Zeroizing::new(
        serde_json::to_vec(backup).map_err(|e| BackupError::Content(e.to_string()))?,
    );
    let sealed = seal(&json, backup.network, passphrase, KdfParams::default())?;
    superscalar_store::fs::write_new_private_atomic(path, &sealed).map_err(|source| {
        BackupError::Io {
            path: path.display().to_string(),
            source,
        }
    })
}

/// Reads and opens the backup at `path`.
pub fn read(path: &Path, network: Network, passphrase: &str) -> Result<Backup, BackupError> {
    let bytes = std::fs::read(path).map_err(|source| BackupError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let json = open(&bytes, network, passphrase)?;
    let backup: Backup =
        serde_json::from_slice(&json).map_err(|e| BackupError::Content(e.to_string()))?;
    if backup.version != 1 || backup.network != network {
        return Err(BackupError::Content(format!(
            "version {} on {}",
            backup.version, backup.network
        )));
    }
    Ok(backup)
}

fn status_of(s: &str) -> Result<FactoryStatus, BackupError> {
    FactoryStatus::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| BackupError::Content(format!("unknown status {s:?}")))
}

/// Restores `backup` into the empty `datadir`: a seed file (encrypted with `seed_passphrase`, or
/// plaintext on regtest without one) and a database with its factories.
pub fn restore(
    datadir: &Path,
    backup: &Backup,
    seed_passphrase: Option<&str>,
) -> Result<usize, BackupError> {
    let db = datadir.join(superscalar_store::DB_FILE_NAME);
    if seed_path(datadir).exists() || db.exists() {
        return Err(BackupError::NotEmpty(datadir.display().to_string()));
    }
    let seed = Seed::from_mnemonic(&backup.mnemonic)?;
    let protection = match seed_passphrase {
        Some(passphrase) => Protection::Passphrase {
            passphrase,
            kdf: KdfParams::default(),
        },
        None => Protection::NoPassphrase,
    };
    // Everything is checked before anything is written.
    let mut factories = Vec::with_capacity(backup.factories.len());
    for f in &backup.factories {
        let params = <Vec<u8> as bitcoin::hex::FromHex>::from_hex(&f.params)
            .map_err(|e| BackupError::Content(format!("factory {}: {e}", f.id)))?;
        let _: superscalar_core::FactoryParams = superscalar_core::codec::decode(&params)
            .map_err(|e| BackupError::Content(format!("factory {}: {e:?}", f.id)))?;
        let key_index = KeyIndex::new(f.key_index)
            .map_err(|e| BackupError::Content(format!("key index: {e}")))?;
        let labels = superscalar_store::convert::signed_txs(&f.signed)?;
        let state =
            serde_json::to_vec(&f.signed).map_err(|e| BackupError::Content(e.to_string()))?;
        let record = FactoryRecord {
            id: superscalar_store::FactoryId(f.id.0),
            params,
            status: status_of(&f.status)?,
            created_height: f.created_height,
            timeout_height: f.timeout_height,
            funding: Some(f.funding),
            key_index,
        };
        factories.push((record, f.position, state, labels));
    }
    create_seed_file(datadir, backup.network, &seed, protection)?;
    let mut store = Store::open(datadir)?;
    while store.allocate_key_index(KeyFamily::Factory)?.get() + 1 < backup.next_factory_index {}
    for (record, position, state, labels) in &factories {
        store.insert_factory(record)?;
        store.append_factory_state(record.id, Party::Client(*position), 0, state)?;
        store.add_signed_txs(record.id, labels)?;
    }
    Ok(factories.len())
}
