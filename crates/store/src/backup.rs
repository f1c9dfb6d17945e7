//! Encrypted backups: any payload sealed under a passphrase, in the seed file's cryptography
//! (Argon2id, then XChaCha20-Poly1305, the header authenticated as associated data).
//!
//! Format, version 1 (integers little-endian): magic `superscalar-bkup` (16), format version (1),
//! network magic (4), Argon2id memory cost (KiB), time cost, parallelism (4 each), salt (16),
//! nonce (24), then the ciphertext with its 16-byte tag.

use bitcoin::p2p::Magic;
use bitcoin::secp256k1::rand::{rngs::OsRng, RngCore};
use bitcoin::Network;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::seed::{derive_key, KdfParams, SeedError};

const MAGIC: &[u8; 16] = b"superscalar-bkup";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 16 + 1 + 4 + 12 + 16 + 24;
/// The largest payload a backup holds.
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// Seals `payload` for `network` under `passphrase`.
pub fn seal(
    payload: &[u8],
    network: Network,
    passphrase: &str,
    kdf: KdfParams,
) -> Result<Vec<u8>, SeedError> {
    if passphrase.is_empty() {
        return Err(SeedError::EmptyPassphrase);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(SeedError::Corrupt("backup payload too large"));
    }
    let argon2 = kdf.argon2()?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&network.magic().to_bytes());
    out.extend_from_slice(&kdf.m_cost_kib.to_le_bytes());
    out.extend_from_slice(&kdf.t_cost.to_le_bytes());
    out.extend_from_slice(&kdf.p_cost.to_le_bytes());
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut nonce);
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let key = derive_key(&argon2, passphrase, &salt)?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&key[..]));
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: payload,
                aad: &out,
            },
        )
        .map_err(|_| SeedError::Corrupt("encryption failed"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Opens a backup of `network` with `passphrase`.
pub fn open(
    bytes: &[u8],
    network: Network,
    passphrase: &str,
) -> Result<Zeroizing<Vec<u8>>, SeedError> {
    if bytes.len() < HEADER_LEN + 16 || &bytes[..16] != MAGIC {
        return Err(SeedError::Corrupt("not a superscalar backup"));
    }
    if bytes[16] != VERSION {
        return Err(SeedError::UnsupportedVersion(bytes[16]));
    }
    if bytes.len() > HEADER_LEN + 16 + MAX_PAYLOAD {
        return Err(SeedError::Corrupt("backup too large"));
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&bytes[17..21]);
    let found = Network::from_magic(Magic::from_bytes(magic))
        .ok_or(SeedError::Corrupt("unknown network"))?;
    if found != network {
        return Err(SeedError::WrongNetwork {
            expected: network,
            found,
        });
    }
    let kdf = KdfParams {
        m_cost_kib: u32_at(bytes, 21),
        t_cost: u32_at(bytes, 25),
        p_cost: u32_at(bytes, 29),
    };
    let argon2 = kdf.argon2()?;
    let salt = &bytes[33..49];
    let nonce = &bytes[49..73];
    let key = derive_key(&argon2, passphrase, salt)?;
    let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&key[..]));
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: &bytes[HEADER_LEN..],
                aad: &bytes[..HEADER_LEN],
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SeedError::WrongPassphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KDF: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    #[test]
    fn round_trip_and_every_tampering_refused() {
        let sealed = seal(b"exit package", Network::Regtest, "pw", KDF).unwrap();
        assert_eq!(
            &open(&sealed, Network::Regtest, "pw").unwrap()[..],
            b"exit package"
        );
        assert!(matches!(
            open(&sealed, Network::Regtest, "other"),
            Err(SeedError::WrongPassphrase)
        ));
        assert!(matches!(
            open(&sealed, Network::Testnet, "pw"),
            Err(SeedError::WrongNetwork { .. })
        ));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&bad, Network::Regtest, "pw").is_err(), "byte {i}");
        }
        for cut in 0..sealed.len() {
            assert!(open(&sealed[..cut], Network::Regtest, "pw").is_err());
        }
        assert!(matches!(
            seal(b"x", Network::Regtest, "", KDF),
            Err(SeedError::EmptyPassphrase)
        ));
    }
}
