//! Opening a node's data directory: its seed (created on first start), its keys and its store.

use std::path::Path;

use bitcoin::Network;

use crate::keys::{KeyError, NodeKeys};
use crate::seed::{
    create_seed_file, load_seed_file, seed_path, KdfParams, Protection, Seed, SeedError,
};
use crate::{Store, StoreError};

/// Why a data directory cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The seed file cannot be created or read.
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// The database cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keys cannot be derived.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A passphrase is required off regtest.
    #[error("a passphrase is required on {0} (--no-passphrase is for regtest only)")]
    PassphraseRequired(Network),
}

/// A node's opened data directory.
pub struct OpenedNode {
    /// Its database.
    pub store: Store,
    /// Its keys, derived from its seed.
    pub keys: NodeKeys,
    /// Its seed (for an encrypted backup).
    pub seed: Seed,
    /// Whether the seed was created now.
    pub created: bool,
}

impl std::fmt::Debug for OpenedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedNode")
            .field("store", &self.store.path())
            .field("created", &self.created)
            .finish()
    }
}

/// Opens `data_dir` for `network`, creating a fresh seed there on first start, encrypted with
/// `passphrase` (unencrypted only on regtest without one).
pub fn open_node(
    data_dir: &Path,
    network: Network,
    passphrase: Option<&str>,
) -> Result<OpenedNode, NodeError> {
    if passphrase.is_none() && network != Network::Regtest {
        return Err(NodeError::PassphraseRequired(network));
    }
    let created = !seed_path(data_dir).exists();
    if created {
        let protection = match passphrase {
            Some(passphrase) => Protection::Passphrase {
                passphrase,
                kdf: KdfParams::default(),
            },
            None => Protection::NoPassphrase,
        };
        create_seed_file(data_dir, network, &Seed::generate(), protection)?;
    }
    let seed = load_seed_file(data_dir, network, passphrase)?;
    let keys = NodeKeys::new(&seed, network)?;
    let store = Store::open(data_dir)?;
    Ok(OpenedNode {
        store,
        keys,
        seed,
        created,
    })
}
