//! Revocation of the liquidity stock: the hashlock leaf of every stock output, the LSP's
//! per-version secrets (one BOLT-3 shachain per stock output, so a receiver keeps O(log n) of
//! them), and the clients' store of received secrets.

use std::collections::BTreeMap;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::opcodes::all::{OP_CHECKSIG, OP_EQUALVERIFY, OP_SHA256, OP_SIZE};
use bitcoin::script::Builder;
use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::ScriptBuf;
use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{BigSize, Readable, Writeable, Writer};
use thiserror::Error;

use crate::codec::MAX_LIST;
use crate::shachain::{index_of, SecretGenerator, SecretStore, FIRST_INDEX};

/// `OP_SIZE 32 OP_EQUALVERIFY OP_SHA256 <hash> OP_EQUALVERIFY <key> OP_CHECKSIG`: spendable by
/// everyone's aggregate signature together with the version's revealed secret.
pub fn hashlock_leaf(hash: &sha256::Hash, key: &XOnlyPublicKey) -> ScriptBuf {
    Builder::new()
        .push_opcode(OP_SIZE)
        .push_int(32)
        .push_opcode(OP_EQUALVERIFY)
        .push_opcode(OP_SHA256)
        .push_slice(hash.to_byte_array())
        .push_opcode(OP_EQUALVERIFY)
        .push_x_only_key(key)
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// A revocation secret that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RevocationError {
    /// The secret does not hash to the version's hash.
    #[error("the secret for stock {stock} version {version} does not match its hash")]
    WrongSecret {
        /// The stock output.
        stock: u32,
        /// Its version.
        version: u32,
    },
    /// The secret is inconsistent with the shachain of earlier secrets.
    #[error(
        "the secret for stock {stock} version {version} does not belong to the stock's shachain"
    )]
    NotInChain {
        /// The stock output.
        stock: u32,
        /// Its version.
        version: u32,
    },
    /// No hash was recorded for this version.
    #[error("no hash is known for stock {stock} version {version}")]
    UnknownVersion {
        /// The stock output.
        stock: u32,
        /// Its version.
        version: u32,
    },
}

/// The LSP's revocation secrets: one shachain per stock output.
#[derive(Clone)]
pub struct StockSecrets {
    seed: [u8; 32],
}

impl std::fmt::Debug for StockSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StockSecrets(..)")
    }
}

impl StockSecrets {
    /// From the LSP's secret seed for this factory.
    pub fn new(seed: [u8; 32]) -> Self {
        StockSecrets { seed }
    }

    fn generator(&self, stock: u32) -> SecretGenerator {
        let mut data = b"superscalar/stock-revocation".to_vec();
        data.extend_from_slice(&self.seed);
        data.extend_from_slice(&stock.to_be_bytes());
        SecretGenerator::new(sha256::Hash::hash(&data).to_byte_array())
    }

    /// The secret of `version` of stock output `stock`.
    pub fn secret(&self, stock: u32, version: u32) -> [u8; 32] {
        self.generator(stock)
            .secret(index_of(u64::from(version)))
            .expect("a u32 version is a valid shachain index")
    }

    /// Its hash (what the hashlock leaf commits to).
    pub fn hash(&self, stock: u32, version: u32) -> sha256::Hash {
        sha256::Hash::hash(&self.secret(stock, version))
    }

    /// Hashes of version 0 of `count` stock outputs (for [`crate::FactoryParams::stock_hashes`]).
    pub fn initial_hashes(&self, count: usize) -> Vec<sha256::Hash> {
        (0..count as u32).map(|s| self.hash(s, 0)).collect()
    }
}

/// A receiver's revocation secrets: the hash of every version it signed, and the secrets of the
/// superseded ones, in one shachain store per stock output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StockRevocations {
    hashes: BTreeMap<(u32, u32), sha256::Hash>,
    stores: BTreeMap<u32, SecretStore>,
}

impl StockRevocations {
    /// Remember the hash of a version this party signs.
    pub fn expect(&mut self, stock: u32, version: u32, hash: sha256::Hash) {
        self.hashes.insert((stock, version), hash);
    }

    /// Take the revealed secret of a superseded version; a refused secret changes nothing.
    pub fn receive(
        &mut self,
        stock: u32,
        version: u32,
        secret: [u8; 32],
    ) -> Result<(), RevocationError> {
        let hash = self
            .hashes
            .get(&(stock, version))
            .ok_or(RevocationError::UnknownVersion { stock, version })?;
        if sha256::Hash::hash(&secret) != *hash {
            return Err(RevocationError::WrongSecret { stock, version });
        }
        self.stores
            .entry(stock)
            .or_default()
            .provide(index_of(u64::from(version)), secret)
            .map_err(|_| RevocationError::NotInChain { stock, version })
    }

    /// The secret of a superseded version, if received.
    pub fn secret(&self, stock: u32, version: u32) -> Option<[u8; 32]> {
        self.stores.get(&stock)?.get(index_of(u64::from(version)))
    }

    /// The hash of a version.
    pub fn hash(&self, stock: u32, version: u32) -> Option<sha256::Hash> {
        self.hashes.get(&(stock, version)).copied()
    }

    /// Secrets actually kept for `stock` (at most 49, about log2 of those received).
    pub fn stored(&self, stock: u32) -> usize {
        self.stores.get(&stock).map_or(0, SecretStore::stored)
    }
}

/// The hashes (stock, version, hash) in key order, then the secret stores (stock, store).
impl Writeable for StockRevocations {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        BigSize(self.hashes.len() as u64).write(w)?;
        for ((stock, version), hash) in &self.hashes {
            stock.write(w)?;
            version.write(w)?;
            hash.to_byte_array().write(w)?;
        }
        BigSize(self.stores.len() as u64).write(w)?;
        for (stock, store) in &self.stores {
            stock.write(w)?;
            store.write(w)?;
        }
        Ok(())
    }
}

/// Keys must strictly increase (one encoding per value, no entry silently dropped), every store
/// must be one [`SecretStore`] builds from consecutive secrets, and the newest secret of each
/// must hash to the hash of its version: nothing is allocated ahead of what the input holds.
impl Readable for StockRevocations {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let count = |r: &mut R| {
            let n = BigSize::read(r)?.0;
            if n > MAX_LIST as u64 {
                return Err(DecodeError::InvalidValue);
            }
            Ok(n)
        };
        let mut hashes = BTreeMap::new();
        let mut last = None;
        for _ in 0..count(r)? {
            let key: (u32, u32) = (Readable::read(r)?, Readable::read(r)?);
            if last.is_some_and(|l| l >= key) {
                return Err(DecodeError::InvalidValue);
            }
            last = Some(key);
            hashes.insert(key, sha256::Hash::from_byte_array(Readable::read(r)?));
        }
        let mut stores = BTreeMap::new();
        let mut last = None;
        for _ in 0..count(r)? {
            let stock: u32 = Readable::read(r)?;
            if last.is_some_and(|l| l >= stock) {
                return Err(DecodeError::InvalidValue);
            }
            last = Some(stock);
            let store = SecretStore::read(r)?;
            let lowest = store.lowest_index();
            if lowest <= FIRST_INDEX {
                let version =
                    u32::try_from(FIRST_INDEX - lowest).map_err(|_| DecodeError::InvalidValue)?;
                let secret = store.get(lowest).ok_or(DecodeError::InvalidValue)?;
                if hashes.get(&(stock, version)) != Some(&sha256::Hash::hash(&secret)) {
                    return Err(DecodeError::InvalidValue);
                }
            }
            stores.insert(stock, store);
        }
        Ok(StockRevocations { hashes, stores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_secrets_are_kept_in_about_log2_slots() {
        let lsp = StockSecrets::new([7; 32]);
        let mut rx = StockRevocations::default();
        for v in 0..1000 {
            rx.expect(3, v, lsp.hash(3, v));
            rx.receive(3, v, lsp.secret(3, v)).unwrap();
        }
        assert!(rx.stored(3) <= 11, "{}", rx.stored(3));
        for v in [0, 1, 500, 999] {
            assert_eq!(rx.secret(3, v), Some(lsp.secret(3, v)));
        }
    }

    #[test]
    fn revocations_round_trip_and_a_secret_not_of_its_hash_is_refused() {
        let lsp = StockSecrets::new([7; 32]);
        let mut rx = StockRevocations::default();
        for v in 0..300 {
            rx.expect(2, v, lsp.hash(2, v));
            rx.expect(5, v, lsp.hash(5, v));
            rx.receive(2, v, lsp.secret(2, v)).unwrap();
        }
        rx.expect(5, 300, lsp.hash(5, 300));
        let bytes = rx.encode();
        let back: StockRevocations = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, rx);
        assert_eq!(back.secret(2, 17), Some(lsp.secret(2, 17)));
        // The newest secret's hash altered: the store no longer matches it.
        let mut bad = rx.clone();
        bad.hashes.insert((2, 299), lsp.hash(2, 300));
        assert!(crate::codec::decode::<StockRevocations>(&bad.encode()).is_err());
        for cut in 0..bytes.len() {
            assert!(crate::codec::decode::<StockRevocations>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn wrong_or_foreign_secrets_are_refused_and_change_nothing() {
        let lsp = StockSecrets::new([7; 32]);
        let other = StockSecrets::new([8; 32]);
        let mut rx = StockRevocations::default();
        rx.expect(0, 0, lsp.hash(0, 0));
        assert_eq!(
            rx.receive(0, 0, other.secret(0, 0)),
            Err(RevocationError::WrongSecret {
                stock: 0,
                version: 0
            })
        );
        assert_eq!(
            rx.receive(0, 1, lsp.secret(0, 1)),
            Err(RevocationError::UnknownVersion {
                stock: 0,
                version: 1
            })
        );
        assert_eq!(rx.secret(0, 0), None);
        rx.receive(0, 0, lsp.secret(0, 0)).unwrap();
        // A hash the receiver was told for version 1 whose secret is not from the same chain.
        rx.expect(0, 1, other.hash(0, 1));
        assert_eq!(
            rx.receive(0, 1, other.secret(0, 1)),
            Err(RevocationError::NotInChain {
                stock: 0,
                version: 1
            })
        );
        assert_eq!(rx.secret(0, 0), Some(lsp.secret(0, 0)));
    }
}
