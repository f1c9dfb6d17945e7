//! BIP-327 MuSig2 with KeySort, on libsecp256k1's own implementation (`secp256k1` 0.33), converted
//! to and from rust-bitcoin 0.32 types through bytes.

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, XOnlyPublicKey};
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::TapNodeHash;
use musig::musig::{
    AggregatedNonce, KeyAggCache, PartialSignature, PublicNonce, SecretNonce, Session,
    SessionSecretRand,
};
use serde::{Deserialize, Serialize};

use crate::secp::count;
use thiserror::Error;

/// A MuSig2 failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MusigError {
    /// No keys, or a key the library refuses.
    #[error("invalid key set: {0}")]
    Keys(String),
    /// Bytes that are not a valid public nonce.
    #[error("malformed public nonce")]
    MalformedNonce,
    /// Bytes that are not a valid partial signature.
    #[error("malformed partial signature")]
    MalformedPartialSignature,
    /// The taproot tweak could not be applied (negligible probability).
    #[error("taproot tweak failed")]
    Tweak,
    /// The aggregated signature does not verify.
    #[error("aggregated signature does not verify")]
    InvalidAggregate,
}

fn to_musig_pk(pk: &PublicKey) -> Result<musig::PublicKey, MusigError> {
    count(|c| c.key_parse += 1);
    // Uncompressed: parsing it checks the curve equation, where a compressed key costs a square
    // root (a client parses every key of its factory, 1,025 at N = 1,024).
    musig::PublicKey::from_slice(&pk.inner.serialize_uncompressed())
        .map_err(|e| MusigError::Keys(e.to_string()))
}

fn from_musig_xonly(x: &musig::XOnlyPublicKey) -> XOnlyPublicKey {
    XOnlyPublicKey::from_slice(&x.to_byte_array()).expect("libsecp x-only keys are valid")
}

/// Sort keys as BIP-327 KeySort does (lexicographically by compressed serialization).
pub fn key_sort(keys: &mut [PublicKey]) {
    keys.sort_by_key(|k| k.inner.serialize());
}

/// An aggregate key before the taproot tweak.
#[derive(Clone)]
pub struct AggregateKey {
    cache: KeyAggCache,
    internal: XOnlyPublicKey,
}

impl std::fmt::Debug for AggregateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AggregateKey({})", self.internal)
    }
}

impl AggregateKey {
    /// Aggregate `keys` after KeySort (so the order given does not matter).
    pub fn new(keys: &[PublicKey]) -> Result<Self, MusigError> {
        if keys.is_empty() {
            return Err(MusigError::Keys("no keys to aggregate".into()));
        }
        let mut sorted = keys.to_vec();
        key_sort(&mut sorted);
        let converted: Vec<musig::PublicKey> =
            sorted.iter().map(to_musig_pk).collect::<Result<_, _>>()?;
        let refs: Vec<&musig::PublicKey> = converted.iter().collect();
        Ok(Self::from_refs(&refs))
    }

    /// Aggregate keys parsed once ([`CosignerKey`]) and already in KeySort order (sorted by
    /// [`key_sort`]'s order, lexicographically by compressed serialization): for a party that
    /// aggregates many subsets of one key set, parsing and sorting it once. Keys out of order
    /// give another aggregate key, which nobody else computes (nothing signed under it verifies).
    pub fn from_sorted(keys: &[&CosignerKey]) -> Result<Self, MusigError> {
        if keys.is_empty() {
            return Err(MusigError::Keys("no keys to aggregate".into()));
        }
        let refs: Vec<&musig::PublicKey> = keys.iter().map(|k| &k.0).collect();
        Ok(Self::from_refs(&refs))
    }

    fn from_refs(refs: &[&musig::PublicKey]) -> Self {
        let compute = || {
            count(|c| c.key_agg += refs.len() as u64);
            KeyAggCache::new(refs)
        };
        let cache = match SHARED_AGGREGATES.get() {
            Some(memo) => memo.get_or_compute(refs, compute),
            None => compute(),
        };
        let internal = from_musig_xonly(&cache.agg_pk());
        AggregateKey { cache, internal }
    }

    /// The aggregate key, used as a taproot internal key.
    pub fn internal_key(&self) -> XOnlyPublicKey {
        self.internal
    }

    /// The aggregate key itself, for signatures checked by a script's `<key> OP_CHECKSIG`.
    pub fn untweaked(&self) -> TweakedAggregateKey {
        TweakedAggregateKey {
            cache: self.cache,
            output: self.internal,
            musig_output: self.cache.agg_pk(),
        }
    }

    /// The key that signs for a taproot output with this internal key and `merkle_root`.
    pub fn tweaked(
        &self,
        merkle_root: Option<TapNodeHash>,
    ) -> Result<TweakedAggregateKey, MusigError> {
        let tweak = bitcoin::taproot::TapTweakHash::from_key_and_tweak(self.internal, merkle_root);
        let scalar =
            musig::Scalar::from_be_bytes(tweak.to_byte_array()).map_err(|_| MusigError::Tweak)?;
        let mut cache = self.cache;
        count(|c| c.tweak_add += 1);
        let full = cache
            .pubkey_xonly_tweak_add(&scalar)
            .map_err(|_| MusigError::Tweak)?;
        let musig_output = full.x_only_public_key().0;
        Ok(TweakedAggregateKey {
            cache,
            output: from_musig_xonly(&musig_output),
            musig_output,
        })
    }
}

/// The process's memo of key aggregations, once [`share_key_aggregation`] has been called.
static SHARED_AGGREGATES: std::sync::OnceLock<AggregateMemo> = std::sync::OnceLock::new();

/// From now on, every aggregation of a key list already aggregated in this process returns the
/// result computed the first time instead of computing it again.
///
/// For a process that runs many parties at once (the swarm load generator, whose N clients each
/// aggregate the same upper nodes' keys, the root's N + 1 keys included). An aggregation is a
/// pure function of the ordered key list, which is the memo's key (its SHA-256, over every
/// key's 33 bytes): a hit is exactly what the caller would have computed. A single party
/// never aggregates one list twice (its factory caches its own), so nothing else calls this.
pub fn share_key_aggregation() {
    SHARED_AGGREGATES.get_or_init(AggregateMemo::default);
}

/// Key aggregations by key list; each computed once, the first caller computing while the others
/// wait for it.
#[derive(Default)]
struct AggregateMemo {
    entries: std::sync::Mutex<
        std::collections::HashMap<[u8; 32], std::sync::Arc<std::sync::OnceLock<KeyAggCache>>>,
    >,
}

impl AggregateMemo {
    /// The most entries kept; past it the memo starts again empty (a swarm of 10,000 clients
    /// in factories of 1,024 holds about 20,000).
    const MAX_ENTRIES: usize = 1 << 18;

    fn get_or_compute(
        &self,
        refs: &[&musig::PublicKey],
        compute: impl FnOnce() -> KeyAggCache,
    ) -> KeyAggCache {
        let mut engine = bitcoin::hashes::sha256::Hash::engine();
        for k in refs {
            bitcoin::hashes::HashEngine::input(&mut engine, &k.serialize());
        }
        let id = bitcoin::hashes::sha256::Hash::from_engine(engine).to_byte_array();
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= Self::MAX_ENTRIES && !entries.contains_key(&id) {
                entries.clear();
            }
            entries.entry(id).or_default().clone()
        };
        *cell.get_or_init(compute)
    }
}

/// An aggregate key tweaked for one taproot output: the key its key-path signatures verify under.
#[derive(Clone)]
pub struct TweakedAggregateKey {
    cache: KeyAggCache,
    output: XOnlyPublicKey,
    musig_output: musig::XOnlyPublicKey,
}

impl std::fmt::Debug for TweakedAggregateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TweakedAggregateKey({})", self.output)
    }
}

/// A public nonce (66 bytes), as sent in round 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubNonce(#[serde(with = "crate::encoding::hex_array")] pub [u8; 66]);

/// An aggregated nonce (66 bytes), as sent by the LSP in round 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggNonce(#[serde(with = "crate::encoding::hex_array")] pub [u8; 66]);

/// A partial signature (32 bytes), as returned in round 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialSig(pub [u8; 32]);

/// A secret nonce: lives only in memory, is consumed by signing, and cannot be copied.
pub struct SecNonce(SecretNonce);

impl std::fmt::Debug for SecNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecNonce(..)")
    }
}

impl SecNonce {
    /// A secret nonce from its BIP-327 serialization (k1 || k2 || signer public key): only for
    /// reproducing published test vectors. Never sign twice with the same secret nonce.
    pub fn dangerous_from_bip327(bytes: &[u8; 97]) -> Result<Self, MusigError> {
        let pk = musig::PublicKey::from_slice(&bytes[64..])
            .map_err(|e| MusigError::Keys(e.to_string()))?;
        // Let libsecp write its own layout (magic, stored key), then put the two scalars in.
        let (template, _) = musig::musig::new_nonce_pair(
            SessionSecretRand::assume_uniformly_random([0x5a; 32]),
            None,
            None,
            pk,
            None,
            None,
        );
        let mut raw = template.dangerous_into_bytes();
        raw[4..68].copy_from_slice(&bytes[..64]);
        Ok(SecNonce(SecretNonce::dangerous_from_bytes(raw)))
    }
}

/// A signer's key pair in the form libsecp256k1's MuSig2 takes, converted once: signing with a
/// bitcoin [`Keypair`] directly converts it on every call (a point multiplication).
#[derive(Clone)]
pub struct MusigSigner {
    keypair: musig::Keypair,
    secret: musig::SecretKey,
    public: musig::PublicKey,
}

impl std::fmt::Debug for MusigSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MusigSigner({})", self.public)
    }
}

impl MusigSigner {
    /// Convert `keypair` (its secret never leaves memory).
    pub fn new(keypair: &Keypair) -> Self {
        let keypair = musig::Keypair::from_secret_bytes(keypair.secret_bytes())
            .expect("a valid keypair's secret is a valid secret key");
        MusigSigner {
            secret: keypair.secret_key(),
            public: keypair.public_key(),
            keypair,
        }
    }
}

/// A key that can sign MuSig2 partial signatures: a bitcoin [`Keypair`] (converted at each call)
/// or a [`MusigSigner`] (converted once).
pub trait SignerKey {
    /// The key in libsecp256k1's MuSig2 form.
    fn musig_signer(&self) -> std::borrow::Cow<'_, MusigSigner>;
}

impl SignerKey for Keypair {
    fn musig_signer(&self) -> std::borrow::Cow<'_, MusigSigner> {
        std::borrow::Cow::Owned(MusigSigner::new(self))
    }
}

impl SignerKey for MusigSigner {
    fn musig_signer(&self) -> std::borrow::Cow<'_, MusigSigner> {
        std::borrow::Cow::Borrowed(self)
    }
}

/// A co-signer's public key parsed once for checking its partial signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CosignerKey(musig::PublicKey);

impl CosignerKey {
    /// Parse `key` for libsecp256k1's MuSig2.
    pub fn new(key: &PublicKey) -> Result<Self, MusigError> {
        to_musig_pk(key).map(CosignerKey)
    }

    /// The key, as rust-bitcoin's type.
    pub fn to_public_key(&self) -> PublicKey {
        PublicKey::new(
            bitcoin::secp256k1::PublicKey::from_slice(&self.0.serialize_uncompressed())
                .expect("libsecp keys are valid"),
        )
    }
}

impl TweakedAggregateKey {
    /// The taproot output key.
    pub fn output_key(&self) -> XOnlyPublicKey {
        self.output
    }

    /// Generate a nonce pair for signing `msg` with `signer` under this key.
    pub fn nonce_gen(&self, signer: &impl SignerKey, msg: &[u8; 32]) -> (SecNonce, PubNonce) {
        let (sec, public) = self.nonce_gen_parsed(signer, msg);
        (sec, public.bytes)
    }

    /// [`Self::nonce_gen`], the public nonce also in parsed form.
    pub fn nonce_gen_parsed(
        &self,
        signer: &impl SignerKey,
        msg: &[u8; 32],
    ) -> (SecNonce, ParsedNonce) {
        let signer = signer.musig_signer();
        count(|c| c.nonce_gen += 1);
        let mut rand = [0u8; 32];
        bitcoin::secp256k1::rand::RngCore::fill_bytes(
            &mut bitcoin::secp256k1::rand::thread_rng(),
            &mut rand,
        );
        // Zero randomness is refused by libsecp; thread_rng never yields it in practice.
        rand[0] |= 1;
        let secrand = SessionSecretRand::assume_uniformly_random(rand);
        let (sec, public) = musig::musig::new_nonce_pair(
            secrand,
            Some(&self.cache),
            Some(signer.secret),
            signer.public,
            Some(msg),
            None,
        );
        (SecNonce(sec), ParsedNonce::from_libsecp(public))
    }

    /// A nonce pair that is a function of `seed` (and the signer's key): re-derivable after a
    /// restart instead of stored. `seed` must never be used for two different messages.
    pub fn deterministic_nonce(
        &self,
        signer: &impl SignerKey,
        seed: [u8; 32],
    ) -> (SecNonce, PubNonce) {
        let (sec, public) = self.deterministic_nonce_parsed(signer, seed);
        (sec, public.bytes)
    }

    /// [`Self::deterministic_nonce`], the public nonce also in parsed form.
    pub fn deterministic_nonce_parsed(
        &self,
        signer: &impl SignerKey,
        seed: [u8; 32],
    ) -> (SecNonce, ParsedNonce) {
        let signer = signer.musig_signer();
        count(|c| c.nonce_gen += 1);
        let secrand = SessionSecretRand::assume_unique_per_nonce_gen(seed, &signer.secret);
        let (sec, public) = musig::musig::new_nonce_pair(
            secrand,
            Some(&self.cache),
            Some(signer.secret),
            signer.public,
            None,
            None,
        );
        (SecNonce(sec), ParsedNonce::from_libsecp(public))
    }

    /// The signing session of one message under one aggregated nonce: every partial signature of
    /// that message is made, checked and combined in it (nonce processing done once).
    pub fn session(
        &self,
        agg_nonce: &AggNonce,
        msg: &[u8; 32],
    ) -> Result<SigningSession<'_>, MusigError> {
        let agg = AggregatedNonce::from_byte_array(&agg_nonce.0)
            .map_err(|_| MusigError::MalformedNonce)?;
        count(|c| c.session += 1);
        Ok(SigningSession {
            key: self,
            session: Session::new(&self.cache, agg, msg),
            msg: *msg,
        })
    }

    /// The signing session of `msg` with every signer's public nonce given (aggregated here,
    /// without a round trip through bytes).
    pub fn session_of(
        &self,
        nonces: &[&ParsedNonce],
        msg: &[u8; 32],
    ) -> Result<SigningSession<'_>, MusigError> {
        if nonces.is_empty() {
            return Err(MusigError::MalformedNonce);
        }
        let refs: Vec<&PublicNonce> = nonces.iter().map(|n| &n.parsed).collect();
        count(|c| {
            c.nonce_agg += refs.len() as u64;
            c.session += 1;
        });
        Ok(SigningSession {
            key: self,
            session: Session::new(&self.cache, AggregatedNonce::new(&refs), msg),
            msg: *msg,
        })
    }

    /// Aggregate every signer's public nonce and open the signing session of `msg`: the
    /// aggregated nonce (what the coordinator sends the signers) and the session in which every
    /// partial signature of `msg` is then checked and combined.
    pub fn open_session(
        &self,
        nonces: &[&ParsedNonce],
        msg: &[u8; 32],
    ) -> Result<(AggNonce, SigningSession<'_>), MusigError> {
        if nonces.is_empty() {
            return Err(MusigError::MalformedNonce);
        }
        let refs: Vec<&PublicNonce> = nonces.iter().map(|n| &n.parsed).collect();
        count(|c| {
            c.nonce_agg += refs.len() as u64;
            c.session += 1;
        });
        let agg = AggregatedNonce::new(&refs);
        Ok((
            AggNonce(agg.serialize()),
            SigningSession {
                key: self,
                session: Session::new(&self.cache, agg, msg),
                msg: *msg,
            },
        ))
    }

    /// Sign `msg` with `signer`, consuming the secret nonce.
    pub fn partial_sign(
        &self,
        nonce: SecNonce,
        signer: &impl SignerKey,
        agg_nonce: &AggNonce,
        msg: &[u8; 32],
    ) -> Result<PartialSig, MusigError> {
        Ok(self.session(agg_nonce, msg)?.partial_sign(nonce, signer))
    }

    /// Check one signer's partial signature.
    pub fn partial_verify(
        &self,
        partial: &PartialSig,
        nonce: &PubNonce,
        signer: &PublicKey,
        agg_nonce: &AggNonce,
        msg: &[u8; 32],
    ) -> Result<bool, MusigError> {
        self.session(agg_nonce, msg)?
            .partial_verify(partial, nonce, &CosignerKey::new(signer)?)
    }

    /// Combine partial signatures into a BIP-340 signature that verifies under the output key.
    pub fn aggregate(
        &self,
        agg_nonce: &AggNonce,
        msg: &[u8; 32],
        partials: &[PartialSig],
    ) -> Result<Signature, MusigError> {
        self.session(agg_nonce, msg)?.aggregate(partials)
    }
}

/// A MuSig2 signing session: one message, one aggregated nonce, one tweaked key.
pub struct SigningSession<'a> {
    key: &'a TweakedAggregateKey,
    session: Session,
    msg: [u8; 32],
}

impl std::fmt::Debug for SigningSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningSession({:?})", self.key)
    }
}

/// A signing session kept without its key (to be stored beside it): [`SigningSession::detach`],
/// then [`StoredSession::attach`] to the same key.
#[derive(Clone, Copy)]
pub struct StoredSession {
    session: Session,
    msg: [u8; 32],
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredSession(..)")
    }
}

impl StoredSession {
    /// The session again, under `key`: the key it was opened with (another key makes every
    /// partial signature fail to verify, and nothing it signs verifies).
    pub fn attach<'a>(&self, key: &'a TweakedAggregateKey) -> SigningSession<'a> {
        SigningSession {
            key,
            session: self.session,
            msg: self.msg,
        }
    }
}

impl SigningSession<'_> {
    /// The session without its key, to be stored and [`StoredSession::attach`]ed again.
    pub fn detach(&self) -> StoredSession {
        StoredSession {
            session: self.session,
            msg: self.msg,
        }
    }

    /// Sign with `signer`, consuming the secret nonce.
    pub fn partial_sign(&self, nonce: SecNonce, signer: &impl SignerKey) -> PartialSig {
        let signer = signer.musig_signer();
        count(|c| c.partial_sign += 1);
        PartialSig(
            self.session
                .partial_sign(nonce.0, &signer.keypair, &self.key.cache)
                .serialize(),
        )
    }

    /// Check one signer's partial signature, made with the public nonce `nonce`.
    pub fn partial_verify(
        &self,
        partial: &PartialSig,
        nonce: &PubNonce,
        signer: &CosignerKey,
    ) -> Result<bool, MusigError> {
        self.partial_verify_parsed(partial, &ParsedNonce::parse(nonce)?, signer)
    }

    /// [`Self::partial_verify`] with the signer's nonce already parsed.
    pub fn partial_verify_parsed(
        &self,
        partial: &PartialSig,
        nonce: &ParsedNonce,
        signer: &CosignerKey,
    ) -> Result<bool, MusigError> {
        let sig = PartialSignature::from_byte_array(&partial.0)
            .map_err(|_| MusigError::MalformedPartialSignature)?;
        count(|c| c.partial_verify += 1);
        Ok(self
            .session
            .partial_verify(&self.key.cache, &sig, &nonce.parsed, signer.0))
    }

    /// Combine every signer's partial signature into a BIP-340 signature, checked against the
    /// output key before it is returned.
    pub fn aggregate(&self, partials: &[PartialSig]) -> Result<Signature, MusigError> {
        let sigs: Vec<PartialSignature> = partials
            .iter()
            .map(|p| {
                PartialSignature::from_byte_array(&p.0)
                    .map_err(|_| MusigError::MalformedPartialSignature)
            })
            .collect::<Result<_, _>>()?;
        let refs: Vec<&PartialSignature> = sigs.iter().collect();
        count(|c| {
            c.sig_agg += 1;
            c.schnorr_verify += 1;
        });
        let sig = self
            .session
            .partial_sig_agg(&refs)
            .verify(&self.key.musig_output, &self.msg)
            .map_err(|_| MusigError::InvalidAggregate)?;
        Ok(Signature::from_slice(&sig.to_byte_array()).expect("64 bytes"))
    }
}

/// A public nonce with its parsed form: parsing costs two square roots, so a nonce used more
/// than once (or made here) is kept parsed.
#[derive(Clone, Copy)]
pub struct ParsedNonce {
    bytes: PubNonce,
    parsed: PublicNonce,
}

impl std::fmt::Debug for ParsedNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedNonce({:?})", self.bytes)
    }
}

impl ParsedNonce {
    /// Parse `nonce` (refused when its points are not on the curve).
    pub fn parse(nonce: &PubNonce) -> Result<Self, MusigError> {
        count(|c| c.nonce_parse += 1);
        Ok(ParsedNonce {
            bytes: *nonce,
            parsed: PublicNonce::from_byte_array(&nonce.0)
                .map_err(|_| MusigError::MalformedNonce)?,
        })
    }

    fn from_libsecp(parsed: PublicNonce) -> Self {
        ParsedNonce {
            bytes: PubNonce(parsed.serialize()),
            parsed,
        }
    }

    /// The nonce as sent.
    pub fn bytes(&self) -> PubNonce {
        self.bytes
    }
}

/// Aggregate public nonces (all of a job's signers, in any order).
pub fn aggregate_nonces(nonces: &[PubNonce]) -> Result<AggNonce, MusigError> {
    if nonces.is_empty() {
        return Err(MusigError::MalformedNonce);
    }
    count(|c| {
        c.nonce_parse += nonces.len() as u64;
        c.nonce_agg += nonces.len() as u64;
    });
    let parsed: Vec<PublicNonce> = nonces
        .iter()
        .map(|n| PublicNonce::from_byte_array(&n.0).map_err(|_| MusigError::MalformedNonce))
        .collect::<Result<_, _>>()?;
    let refs: Vec<&PublicNonce> = parsed.iter().collect();
    Ok(AggNonce(AggregatedNonce::new(&refs).serialize()))
}

/// Check that bytes parse as a public nonce.
pub fn check_pub_nonce(nonce: &PubNonce) -> Result<(), MusigError> {
    PublicNonce::from_byte_array(&nonce.0)
        .map(|_| ())
        .map_err(|_| MusigError::MalformedNonce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Message, Secp256k1};

    #[test]
    fn three_signers_produce_a_valid_bip340_signature_and_bad_partials_are_caught() {
        let secp = Secp256k1::new();
        let kps: Vec<Keypair> = (1..=3u8)
            .map(|i| Keypair::from_seckey_slice(&secp, &[i; 32]).unwrap())
            .collect();
        let pks: Vec<PublicKey> = kps.iter().map(|k| PublicKey::new(k.public_key())).collect();
        let agg = AggregateKey::new(&pks).unwrap();
        let mut reversed = pks.clone();
        reversed.reverse();
        assert_eq!(
            AggregateKey::new(&reversed).unwrap().internal_key(),
            agg.internal_key(),
            "KeySort"
        );
        let key = agg.tweaked(None).unwrap();
        let msg = [7u8; 32];
        let (secs, pubs): (Vec<_>, Vec<_>) = kps.iter().map(|k| key.nonce_gen(k, &msg)).unzip();
        let aggn = aggregate_nonces(&pubs).unwrap();
        let partials: Vec<PartialSig> = secs
            .into_iter()
            .zip(&kps)
            .map(|(s, k)| key.partial_sign(s, k, &aggn, &msg).unwrap())
            .collect();
        for i in 0..3 {
            assert!(key
                .partial_verify(&partials[i], &pubs[i], &pks[i], &aggn, &msg)
                .unwrap());
        }
        // Signer 1's signature checked as signer 2's: refused.
        assert!(!key
            .partial_verify(&partials[1], &pubs[2], &pks[2], &aggn, &msg)
            .unwrap());
        let sig = key.aggregate(&aggn, &msg, &partials).unwrap();
        secp.verify_schnorr(&sig, &Message::from_digest(msg), &key.output_key())
            .unwrap();
        let mut bad = partials.clone();
        bad[0].0[5] ^= 1;
        assert!(key.aggregate(&aggn, &msg, &bad).is_err());
    }

    #[test]
    fn crafted_nonce_strings_are_refused_not_panicking() {
        let good = format!("\"{}\"", "02".repeat(66));
        assert!(serde_json::from_str::<PubNonce>(&good).is_ok());
        // 132 bytes whose character boundaries do not fall on even offsets: the old decoder
        // sliced inside a multi-byte character and panicked.
        let multibyte = format!("\"{}\"", "\u{e9}".repeat(66));
        let cases = [
            multibyte,
            format!("\"a\u{e9}{}\"", "0".repeat(129)),
            format!("\"{}\"", "zz".repeat(66)),
            format!("\"{}\"", "02".repeat(65)),
            format!("\"{}\"", "02".repeat(67)),
            "\"\"".to_string(),
            "17".to_string(),
        ];
        for c in &cases {
            assert!(serde_json::from_str::<PubNonce>(c).is_err(), "{c}");
            assert!(serde_json::from_str::<AggNonce>(c).is_err(), "{c}");
        }
    }
}
