//! BOLT-3 key derivation for commitment transactions: per-commitment points, per-commitment
//! public and private keys, and revocation keys. Built on LDK's `chan_utils` / `channel_keys`.

use crate::secp::{count, SECP};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use lightning::ln::chan_utils::{derive_private_key, derive_private_revocation_key};
use lightning::ln::channel_keys::{HtlcBasepoint, HtlcKey, RevocationBasepoint, RevocationKey};

/// The per-commitment point of a per-commitment secret.
pub fn per_commitment_point(secret: &SecretKey) -> PublicKey {
    count(|c| c.pubkey_create += 1);
    PublicKey::from_secret_key(&SECP, secret)
}

/// `basepoint + SHA256(per_commitment_point || basepoint) * G` (local, remote, htlc and delayed
/// payment keys).
pub fn derive_pubkey(basepoint: &PublicKey, per_commitment_point: &PublicKey) -> PublicKey {
    let secp = &*SECP;
    count(|c| c.pubkey_create += 1);
    HtlcKey::from_basepoint(secp, &HtlcBasepoint(*basepoint), per_commitment_point).0
}

/// The secret of [`derive_pubkey`].
pub fn derive_privkey(base_secret: &SecretKey, per_commitment_point: &PublicKey) -> SecretKey {
    // LDK derives the basepoint from the secret first.
    count(|c| c.pubkey_create += 1);
    derive_private_key(&SECP, per_commitment_point, base_secret)
}

/// The revocation public key of a commitment: only the holder of the revocation base secret and
/// the per-commitment secret can sign for it.
pub fn revocation_pubkey(
    revocation_basepoint: &PublicKey,
    per_commitment_point: &PublicKey,
) -> PublicKey {
    count(|c| c.tweak_mul += 2);
    RevocationKey::from_basepoint(
        &SECP,
        &RevocationBasepoint(*revocation_basepoint),
        per_commitment_point,
    )
    .0
}

/// The revocation secret key, once the per-commitment secret has been revealed.
pub fn revocation_privkey(
    revocation_base_secret: &SecretKey,
    per_commitment_secret: &SecretKey,
) -> SecretKey {
    derive_private_revocation_key(&SECP, per_commitment_secret, revocation_base_secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sk(h: &str) -> SecretKey {
        SecretKey::from_slice(&hex_to_bytes(h)).unwrap()
    }

    fn pk(h: &str) -> PublicKey {
        PublicKey::from_slice(&hex_to_bytes(h)).unwrap()
    }

    fn hex_to_bytes(h: &str) -> Vec<u8> {
        use bitcoin::hex::FromHex;
        Vec::<u8>::from_hex(h).unwrap()
    }

    /// BOLT-3 Appendix E: key derivation test vectors.
    #[test]
    fn appendix_e_vectors() {
        let base_secret = sk("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let per_commitment_secret =
            sk("1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100");
        let base_point = pk("036d6caac248af96f6afa7f904f550253a0f3ef3f5aa2fe6838a95b216691468e2");
        let per_commitment_point_expected =
            pk("025f7117a78150fe2ef97db7cfc83bd57b2e2c0d0dd25eaf467a4a1c2a45ce1486");
        assert_eq!(per_commitment_point(&base_secret), base_point);
        let pcp = per_commitment_point(&per_commitment_secret);
        assert_eq!(pcp, per_commitment_point_expected);
        assert_eq!(
            derive_pubkey(&base_point, &pcp),
            pk("0235f2dbfaa89b57ec7b055afe29849ef7ddfeb1cefdb9ebdc43f5494984db29e5")
        );
        assert_eq!(
            derive_privkey(&base_secret, &pcp),
            sk("cbced912d3b21bf196a766651e436aff192362621ce317704ea2f75d87e7be0f")
        );
        assert_eq!(
            revocation_pubkey(&base_point, &pcp),
            pk("02916e326636d19c33f13e8c0c3a03dd157f332f3e99c317c141dd865eb01f8ff0")
        );
        assert_eq!(
            revocation_privkey(&base_secret, &per_commitment_secret),
            sk("d09ffff62ddb2297ab000cc85bcb4283fdeb6aa052affbc9dddcf33b61078110")
        );
    }
}
