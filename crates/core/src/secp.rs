//! One libsecp256k1 context for the whole process.
//!
//! Creating a context costs a point multiplication (its blinding), more than most of the
//! operations done with it: the commitment rounds created a dozen per round. Like LDK, which
//! keeps one randomized context per object for its lifetime, we keep one randomized context per
//! process. Signing through the `musig` crate uses that crate's own thread-local context, which
//! it rerandomizes after each nonce generation and partial signature.

use std::sync::LazyLock;

use bitcoin::secp256k1::{All, Secp256k1};

/// The process-wide context, randomized once at first use.
pub static SECP: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);

/// How many libsecp256k1 operations of each kind this thread has asked for, counted where our
/// code calls them (for benchmarks: the raw floor of a workload is these counts times the cost
/// of each operation called directly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Fixed-base multiplications `k*G` (a public key from a secret, a derived key's tweak).
    pub pubkey_create: u64,
    /// Variable-base multiplications `k*P` (revocation keys: two each).
    pub tweak_mul: u64,
    /// `P + t*G` additions (taproot output keys).
    pub tweak_add: u64,
    /// Public keys parsed for MuSig2 (a square root each).
    pub key_parse: u64,
    /// Public keys aggregated by MuSig2 key aggregation (one count per key of each aggregate).
    pub key_agg: u64,
    /// MuSig2 nonce pairs generated.
    pub nonce_gen: u64,
    /// MuSig2 public nonces parsed from bytes.
    pub nonce_parse: u64,
    /// MuSig2 public nonces summed into aggregated nonces (one count per nonce).
    pub nonce_agg: u64,
    /// MuSig2 sessions (nonce processing: the aggregated nonce, the challenge).
    pub session: u64,
    /// MuSig2 partial signatures made.
    pub partial_sign: u64,
    /// MuSig2 partial signatures checked.
    pub partial_verify: u64,
    /// MuSig2 final signatures summed from partial signatures.
    pub sig_agg: u64,
    /// BIP-340 signatures made.
    pub schnorr_sign: u64,
    /// BIP-340 signatures checked (an aggregated MuSig2 signature's check included).
    pub schnorr_verify: u64,
}

impl OpCounts {
    /// Every count minus `earlier`'s.
    pub fn since(&self, earlier: &OpCounts) -> OpCounts {
        OpCounts {
            pubkey_create: self.pubkey_create - earlier.pubkey_create,
            tweak_mul: self.tweak_mul - earlier.tweak_mul,
            tweak_add: self.tweak_add - earlier.tweak_add,
            key_parse: self.key_parse - earlier.key_parse,
            key_agg: self.key_agg - earlier.key_agg,
            nonce_gen: self.nonce_gen - earlier.nonce_gen,
            nonce_parse: self.nonce_parse - earlier.nonce_parse,
            nonce_agg: self.nonce_agg - earlier.nonce_agg,
            session: self.session - earlier.session,
            partial_sign: self.partial_sign - earlier.partial_sign,
            partial_verify: self.partial_verify - earlier.partial_verify,
            sig_agg: self.sig_agg - earlier.sig_agg,
            schnorr_sign: self.schnorr_sign - earlier.schnorr_sign,
            schnorr_verify: self.schnorr_verify - earlier.schnorr_verify,
        }
    }
}

thread_local! {
    static COUNTS: std::cell::Cell<OpCounts> = const {
        std::cell::Cell::new(OpCounts {
            pubkey_create: 0,
            tweak_mul: 0,
            tweak_add: 0,
            key_parse: 0,
            key_agg: 0,
            nonce_gen: 0,
            nonce_parse: 0,
            nonce_agg: 0,
            session: 0,
            partial_sign: 0,
            partial_verify: 0,
            sig_agg: 0,
            schnorr_sign: 0,
            schnorr_verify: 0,
        })
    };
}

/// The operations counted on this thread so far.
pub fn op_counts() -> OpCounts {
    COUNTS.with(|c| c.get())
}

/// Add `counts` (work another thread did for this one) to this thread's counts.
pub(crate) fn add_counts(counts: &OpCounts) {
    count(|c| {
        c.pubkey_create += counts.pubkey_create;
        c.tweak_mul += counts.tweak_mul;
        c.tweak_add += counts.tweak_add;
        c.key_parse += counts.key_parse;
        c.key_agg += counts.key_agg;
        c.nonce_gen += counts.nonce_gen;
        c.nonce_parse += counts.nonce_parse;
        c.nonce_agg += counts.nonce_agg;
        c.session += counts.session;
        c.partial_sign += counts.partial_sign;
        c.partial_verify += counts.partial_verify;
        c.sig_agg += counts.sig_agg;
        c.schnorr_sign += counts.schnorr_sign;
        c.schnorr_verify += counts.schnorr_verify;
    });
}

/// Count operations on this thread.
pub(crate) fn count(f: impl FnOnce(&mut OpCounts)) {
    COUNTS.with(|c| {
        let mut v = c.get();
        f(&mut v);
        c.set(v);
    });
}
