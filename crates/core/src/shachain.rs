//! Per-commitment secrets from the BOLT-3 shachain: the sender derives any secret from one seed;
//! the receiver stores the ones it is given in O(log n) and derives all older ones.
//! Built on LDK's implementation (`lightning::ln::chan_utils`).

use lightning::ln::chan_utils::{build_commitment_secret, CounterpartyCommitmentSecrets};
use lightning::util::ser::Writeable;
use thiserror::Error;

/// The first (highest) shachain index; each new secret uses the next lower one.
pub const FIRST_INDEX: u64 = (1 << 48) - 1;

/// A secret that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShachainError {
    /// The secret does not derive the ones already received: the sender lied or skipped one.
    #[error("secret {index} is inconsistent with earlier secrets")]
    Inconsistent {
        /// Its shachain index.
        index: u64,
    },
    /// Indices are 48-bit.
    #[error("shachain index {0} is beyond 2^48 - 1")]
    IndexOutOfRange(u64),
}

/// The shachain index of the `n`-th secret (n = 0 for the first).
pub fn index_of(n: u64) -> u64 {
    FIRST_INDEX - n.min(FIRST_INDEX)
}

/// The sender's side: secrets derived from a seed.
#[derive(Clone)]
pub struct SecretGenerator {
    seed: [u8; 32],
}

impl std::fmt::Debug for SecretGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretGenerator(..)")
    }
}

impl SecretGenerator {
    /// From a secret seed.
    pub fn new(seed: [u8; 32]) -> Self {
        SecretGenerator { seed }
    }

    /// The secret at shachain `index` (BOLT-3 `generate_from_seed`).
    pub fn secret(&self, index: u64) -> Result<[u8; 32], ShachainError> {
        if index > FIRST_INDEX {
            return Err(ShachainError::IndexOutOfRange(index));
        }
        Ok(build_commitment_secret(&self.seed, index))
    }
}

/// The receiver's side: every secret received so far, in at most 49 entries.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretStore(CounterpartyCommitmentSecrets);

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretStore({} entries)", self.stored())
    }
}

impl Default for SecretStore {
    fn default() -> Self {
        SecretStore(CounterpartyCommitmentSecrets::new())
    }
}

impl SecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store the secret at `index`, checking it against every secret received before. A refused
    /// secret leaves the store unchanged.
    pub fn provide(&mut self, index: u64, secret: [u8; 32]) -> Result<(), ShachainError> {
        if index > FIRST_INDEX {
            return Err(ShachainError::IndexOutOfRange(index));
        }
        let mut next = self.0.clone();
        next.provide_secret(index, secret)
            .map_err(|()| ShachainError::Inconsistent { index })?;
        self.0 = next;
        Ok(())
    }

    /// The secret at `index`, if it was received or can be derived from one received.
    pub fn get(&self, index: u64) -> Option<[u8; 32]> {
        if index > FIRST_INDEX || index < self.0.get_min_seen_secret() {
            return None;
        }
        self.0.get_secret(index)
    }

    /// The lowest index received (2^48 when none).
    pub fn lowest_index(&self) -> u64 {
        self.0.get_min_seen_secret()
    }

    /// How many secrets the store actually keeps.
    pub fn stored(&self) -> usize {
        // LDK keeps 49 (secret, index) slots; an unused slot has index 2^48.
        let bytes = self.0.encode();
        bytes
            .chunks_exact(40)
            .take(49)
            .filter(|c| u64::from_be_bytes(c[32..40].try_into().expect("8 bytes")) != 1 << 48)
            .count()
    }
}
