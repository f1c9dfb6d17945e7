//! Keys derived from the node's seed with BIP-32, at fixed documented paths, so that no private
//! key is ever stored: only the seed (encrypted) and the indices that name keys.
//!
//! All paths are hardened, under purpose `9735'` and coin type `0'` (mainnet) or `1'` (any test
//! network):
//!
//! | path | key |
//! |---|---|
//! | `m/9735'/coin'/0'/0'` | node identity key (BOLT-8 transport, node id) |
//! | `m/9735'/coin'/1'/i'` | this node's key in the factory of key index `i` (fresh per factory) |
//! | `m/9735'/coin'/2'/i'/k'` | base secret `k` of the channel of key index `i` (see [`ChannelBaseSecrets`]) |
//! | `m/9735'/coin'/3'/i'` | the LSP's stock revocation seed of the factory of key index `i` |
//! | `m/9735'/coin'/4'/0'` | the seed of the node's on-chain wallet (its BIP-86 keys derive from it) |
//! | `m/9735'/coin'/5'/i'/c'/k'` | base secret `k` (1 to 5) of the leaf channel of client `c` in the factory of key index `i` (its funding key is the factory key) |
//!
//! Key indices are handed out by [`crate::Store::allocate_key_index`], which never hands out
//! the same index twice for one family.

use std::fmt;

use bitcoin::bip32::{ChildNumber, DerivationPath, Xpriv};
use bitcoin::secp256k1::{All, Keypair, PublicKey, Secp256k1, SecretKey};
use bitcoin::Network;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::seed::Seed;

/// BIP-43 purpose of every path.
pub const PURPOSE: u32 = 9735;

/// A key derivation that failed.
#[derive(Debug, Error)]
pub enum KeyError {
    /// An index at or above 2^31 cannot be hardened.
    #[error("key index {0} is out of range (must be below 2^31)")]
    IndexOutOfRange(u32),
    /// BIP-32 refused the derivation (probability about 2^-127).
    #[error("BIP-32 derivation failed: {0}")]
    Bip32(#[from] bitcoin::bip32::Error),
}

/// Which kind of object a key index names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// A factory this node takes part in.
    Factory,
    /// A channel this node has.
    Channel,
}

impl KeyFamily {
    /// The hardened path component of the family.
    fn component(self) -> u32 {
        match self {
            KeyFamily::Factory => 1,
            KeyFamily::Channel => 2,
        }
    }

    /// Name in the database.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            KeyFamily::Factory => "factory",
            KeyFamily::Channel => "channel",
        }
    }
}

/// The index of a key within its family (below 2^31: every path component is hardened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyIndex(u32);

impl KeyIndex {
    /// The largest index.
    pub const MAX: u32 = (1 << 31) - 1;

    /// An index, if below 2^31.
    pub fn new(index: u32) -> Result<KeyIndex, KeyError> {
        if index > Self::MAX {
            return Err(KeyError::IndexOutOfRange(index));
        }
        Ok(KeyIndex(index))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for KeyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which base secret of a channel (the last component of its path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ChannelSecretKind {
    /// The funding key (`k = 0`).
    Funding = 0,
    /// The payment base secret (`k = 1`).
    Payment = 1,
    /// The delayed payment base secret (`k = 2`).
    DelayedPayment = 2,
    /// The HTLC base secret (`k = 3`).
    Htlc = 3,
    /// The revocation base secret (`k = 4`).
    Revocation = 4,
    /// The seed of the per-commitment secrets (shachain) (`k = 5`: the derived key's bytes).
    CommitmentSeed = 5,
}

/// The base secrets of one channel.
pub struct ChannelBaseSecrets {
    /// The funding key.
    pub funding: Keypair,
    /// Payment base secret.
    pub payment: SecretKey,
    /// Delayed payment base secret.
    pub delayed_payment: SecretKey,
    /// HTLC base secret.
    pub htlc: SecretKey,
    /// Revocation base secret.
    pub revocation: SecretKey,
    /// Seed of the per-commitment secrets.
    pub commitment_seed: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for ChannelBaseSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelBaseSecrets(..)")
    }
}

impl Drop for ChannelBaseSecrets {
    fn drop(&mut self) {
        self.funding.non_secure_erase();
        self.payment.non_secure_erase();
        self.delayed_payment.non_secure_erase();
        self.htlc.non_secure_erase();
        self.revocation.non_secure_erase();
    }
}

/// The BIP-32 master key of a node's seed, from which its keys are derived on demand.
pub struct NodeKeys {
    master: Xpriv,
    coin: u32,
    secp: Secp256k1<All>,
}

impl fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKeys(..)")
    }
}

impl Drop for NodeKeys {
    fn drop(&mut self) {
        self.master.private_key.non_secure_erase();
    }
}

fn hardened(i: u32) -> Result<ChildNumber, KeyError> {
    Ok(ChildNumber::from_hardened_idx(i)?)
}

impl NodeKeys {
    /// The master key of `seed` for `network`.
    pub fn new(seed: &Seed, network: Network) -> Result<NodeKeys, KeyError> {
        let bip39 = seed.bip39_seed();
        let master = Xpriv::new_master(network, &bip39[..])?;
        let coin = if network == Network::Bitcoin { 0 } else { 1 };
        Ok(NodeKeys {
            master,
            coin,
            secp: Secp256k1::new(),
        })
    }

    fn derive(&self, tail: &[u32]) -> Result<SecretKey, KeyError> {
        let mut path = vec![hardened(PURPOSE)?, hardened(self.coin)?];
        for &i in tail {
            path.push(hardened(i)?);
        }
        let mut child = self
            .master
            .derive_priv(&self.secp, &DerivationPath::from(path))?;
        let key = child.private_key;
        child.private_key.non_secure_erase();
        Ok(key)
    }

    /// The node identity secret key (`m/9735'/coin'/0'/0'`).
    pub fn node_secret(&self) -> Result<SecretKey, KeyError> {
        self.derive(&[0, 0])
    }

    /// The node id: the public key of [`NodeKeys::node_secret`].
    pub fn node_id(&self) -> Result<PublicKey, KeyError> {
        let mut secret = self.node_secret()?;
        let id = PublicKey::from_secret_key(&self.secp, &secret);
        secret.non_secure_erase();
        Ok(id)
    }

    /// This node's key in the factory of key index `index` (`m/9735'/coin'/1'/index'`).
    pub fn factory_key(&self, index: KeyIndex) -> Result<Keypair, KeyError> {
        let mut secret = self.derive(&[KeyFamily::Factory.component(), index.get()])?;
        let keypair = Keypair::from_secret_key(&self.secp, &secret);
        secret.non_secure_erase();
        Ok(keypair)
    }

    /// One base secret of the channel of key index `index` (`m/9735'/coin'/2'/index'/k'`).
    pub fn channel_secret(
        &self,
        index: KeyIndex,
        kind: ChannelSecretKind,
    ) -> Result<SecretKey, KeyError> {
        self.derive(&[KeyFamily::Channel.component(), index.get(), kind as u32])
    }

    /// All base secrets of the channel of key index `index`.
    pub fn channel_secrets(&self, index: KeyIndex) -> Result<ChannelBaseSecrets, KeyError> {
        let mut funding = self.channel_secret(index, ChannelSecretKind::Funding)?;
        let mut seed_key = self.channel_secret(index, ChannelSecretKind::CommitmentSeed)?;
        let secrets = ChannelBaseSecrets {
            funding: Keypair::from_secret_key(&self.secp, &funding),
            payment: self.channel_secret(index, ChannelSecretKind::Payment)?,
            delayed_payment: self.channel_secret(index, ChannelSecretKind::DelayedPayment)?,
            htlc: self.channel_secret(index, ChannelSecretKind::Htlc)?,
            revocation: self.channel_secret(index, ChannelSecretKind::Revocation)?,
            commitment_seed: Zeroizing::new(seed_key.secret_bytes()),
        };
        funding.non_secure_erase();
        seed_key.non_secure_erase();
        Ok(secrets)
    }

    /// The secrets of this node's side of the leaf channel of client `client` in the factory of
    /// key index `factory` (`m/9735'/coin'/5'/factory'/client'/k'`); the channel output's key is
    /// this node's factory key, so that is its funding key.
    pub fn leaf_channel_secrets(
        &self,
        factory: KeyIndex,
        client: u32,
    ) -> Result<superscalar_core::channel::state::ChannelSecrets, KeyError> {
        self.channel_secrets_under(factory, [5, factory.get(), client])
    }

    /// The base secrets derived under `prefix` (`.../k'` for each kind), with the factory key
    /// of `factory` as the funding key.
    fn channel_secrets_under(
        &self,
        factory: KeyIndex,
        prefix: [u32; 3],
    ) -> Result<superscalar_core::channel::state::ChannelSecrets, KeyError> {
        let d =
            |kind: ChannelSecretKind| self.derive(&[prefix[0], prefix[1], prefix[2], kind as u32]);
        let mut seed_key = d(ChannelSecretKind::CommitmentSeed)?;
        let secrets = superscalar_core::channel::state::ChannelSecrets {
            payment: d(ChannelSecretKind::Payment)?,
            delayed_payment: d(ChannelSecretKind::DelayedPayment)?,
            htlc: d(ChannelSecretKind::Htlc)?,
            revocation: d(ChannelSecretKind::Revocation)?,
            seed: seed_key.secret_bytes(),
            funding: self.factory_key(factory)?,
        };
        seed_key.non_secure_erase();
        Ok(secrets)
    }

    /// The secrets of this node's side of channel `channel` of client `client` in the factory of
    /// key index `factory`: [`NodeKeys::leaf_channel_secrets`] for the leaf channel; the channel
    /// of sale `j` uses `m/9735'/coin'/6'/factory'/j'/k'` (its output's key is the factory key
    /// too). A sale abandoned before it completed never carried a payment, so the next sale of
    /// the same index may use the same secrets.
    pub fn channel_secrets_of(
        &self,
        factory: KeyIndex,
        client: u32,
        channel: superscalar_core::channel::ChannelRef,
    ) -> Result<superscalar_core::channel::state::ChannelSecrets, KeyError> {
        let j = match channel {
            superscalar_core::channel::ChannelRef::Leaf => {
                return self.leaf_channel_secrets(factory, client)
            }
            superscalar_core::channel::ChannelRef::Sold(j) => j,
        };
        self.channel_secrets_under(factory, [6, factory.get(), j])
    }

    /// The seed of the node's on-chain wallet (`m/9735'/coin'/4'/0'`, the derived key's bytes).
    pub fn wallet_seed(&self) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let mut secret = self.derive(&[4, 0])?;
        let seed = Zeroizing::new(secret.secret_bytes());
        secret.non_secure_erase();
        Ok(seed)
    }

    /// The LSP's stock revocation seed of the factory of key index `index`
    /// (`m/9735'/coin'/3'/index'`, the derived key's bytes).
    pub fn stock_revocation_seed(&self, index: KeyIndex) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let mut secret = self.derive(&[3, index.get()])?;
        let seed = Zeroizing::new(secret.secret_bytes());
        secret.non_secure_erase();
        Ok(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::bip32::Xpub;
    use std::str::FromStr;

    #[test]
    fn paths_are_the_documented_ones() {
        let seed = Seed::from_mnemonic(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
             abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
             abandon abandon abandon art",
        )
        .unwrap();
        let keys = NodeKeys::new(&seed, Network::Regtest).unwrap();
        let secp = Secp256k1::new();
        let master = Xpriv::new_master(Network::Regtest, &seed.bip39_seed()[..]).unwrap();
        let at = |p: &str| {
            master
                .derive_priv(&secp, &DerivationPath::from_str(p).unwrap())
                .unwrap()
                .private_key
        };
        assert_eq!(keys.node_secret().unwrap(), at("m/9735'/1'/0'/0'"));
        let i = KeyIndex::new(7).unwrap();
        assert_eq!(
            keys.factory_key(i).unwrap().secret_key(),
            at("m/9735'/1'/1'/7'")
        );
        let ch = keys.channel_secrets(i).unwrap();
        assert_eq!(ch.funding.secret_key(), at("m/9735'/1'/2'/7'/0'"));
        assert_eq!(ch.payment, at("m/9735'/1'/2'/7'/1'"));
        assert_eq!(ch.delayed_payment, at("m/9735'/1'/2'/7'/2'"));
        assert_eq!(ch.htlc, at("m/9735'/1'/2'/7'/3'"));
        assert_eq!(ch.revocation, at("m/9735'/1'/2'/7'/4'"));
        assert_eq!(
            *ch.commitment_seed,
            at("m/9735'/1'/2'/7'/5'").secret_bytes()
        );
        assert_eq!(
            *keys.stock_revocation_seed(i).unwrap(),
            at("m/9735'/1'/3'/7'").secret_bytes()
        );
        // Mainnet uses coin type 0.
        let main = NodeKeys::new(&seed, Network::Bitcoin).unwrap();
        let mmaster = Xpriv::new_master(Network::Bitcoin, &seed.bip39_seed()[..]).unwrap();
        let expect = mmaster
            .derive_priv(
                &secp,
                &DerivationPath::from_str("m/9735'/0'/0'/0'").unwrap(),
            )
            .unwrap();
        assert_eq!(
            main.node_id().unwrap(),
            Xpub::from_priv(&secp, &expect).public_key
        );
        // Distinct indices give distinct keys; out-of-range indices are refused.
        assert_ne!(
            keys.factory_key(KeyIndex::new(8).unwrap()).unwrap(),
            keys.factory_key(i).unwrap()
        );
        assert!(matches!(
            KeyIndex::new(1 << 31),
            Err(KeyError::IndexOutOfRange(_))
        ));
    }
}
