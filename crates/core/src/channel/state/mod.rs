//! The channel state machine of one side of a leaf channel: HTLC updates, commitment signatures
//! (MuSig2 over the factory's channel output) and revocation, in lock step.
//!
//! A round: one side proposes updates (add, fulfill, fail) and sends `CommitmentSigned`; the other
//! answers `RevokeAndAck` and its own `CommitmentSigned`; the first answers `RevokeAndAck`. The
//! updates then count on both sides. Every message is checked before anything changes: a refused
//! message leaves the channel exactly as it was.
//!
//! Commitment signatures: each side publishes, ahead of time, the public "verification nonce"
//! for its next commitment, derived deterministically from its seed and the commitment number
//! (the secret half is re-derived when needed, never stored; the public half is kept in memory
//! from announcement to use); the signer adds a fresh nonce, sends its partial signature, and
//! the holder completes the signature only when it publishes its commitment.
//!
//! Here: the parameters, messages and state of a channel and the limits both sides impose;
//! `updates` (HTLC add, fulfill, fail), `signing` (commitment rounds, revocation, dual-state
//! funding outpoints) and `onchain` (justice and claims once a commitment is published).

use std::cell::OnceCell;
use std::collections::BTreeMap;

use crate::secp::SECP;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::{Keypair, PublicKey as BtcPublicKey};
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::secp256k1::{Message, PublicKey, SecretKey};
use bitcoin::{Amount, OutPoint, TapSighashType, Transaction, TxOut, Witness};
use thiserror::Error;

use crate::channel::commitment::{
    build_commitment_with, build_htlc_tx_to, htlc_leaves, htlc_sighash, htlc_spend_info,
    htlc_witness, obscure_factor, p2tr, to_local_spend_info, to_remote_script_of, ChannelStatic,
    CommitmentKeys, CommitmentOutput, Htlc,
};
use crate::channel::keys::{
    derive_privkey, derive_pubkey, per_commitment_point, revocation_pubkey,
};
use crate::factory::Factory;
use crate::musig::{
    aggregate_nonces, CosignerKey, MusigError, MusigSigner, ParsedNonce, PartialSig, PubNonce,
    TweakedAggregateKey,
};
use crate::shachain::{index_of, SecretGenerator, SecretStore, ShachainError};

mod claims;
mod onchain;
mod persist;
mod signing;
mod updates;
mod view;

pub use claims::HtlcOutput;
pub use view::HtlcView;

pub use persist::{SnapshotError, SNAPSHOT_VERSION};

/// Absolute locktimes at or above this are timestamps, not heights: never an HTLC expiry.
pub const LOCKTIME_THRESHOLD: u32 = 500_000_000;
/// Smallest dust limit either side may announce (sat): the dust threshold of a P2TR output.
pub const MIN_DUST_LIMIT_SAT: u64 = 330;
/// Largest dust limit either side may announce (sat): above it, a peer could trim the other
/// side's output to fees.
pub const MAX_DUST_LIMIT_SAT: u64 = 546;
/// Largest `to_self_delay` ever accepted (two weeks of blocks).
pub const MAX_TO_SELF_DELAY: u16 = 2016;
/// Most HTLCs one side may have pending on a zero-fee (TRUC) commitment, which must stay under
/// the 10,000 vB TRUC size limit with both sides' HTLCs.
pub const MAX_ACCEPTED_HTLCS: u16 = 114;

/// Limits one side imposes on what the other may add, and the bounds it accepts from the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Most HTLCs the other side may have pending towards us.
    pub max_accepted_htlcs: u16,
    /// Most msat in flight in HTLCs.
    pub max_htlc_value_in_flight_msat: u64,
    /// Smallest HTLC accepted.
    pub htlc_minimum_msat: u64,
    /// Balance each side must keep (msat).
    pub channel_reserve_msat: u64,
    /// Dust limit of commitments.
    pub dust_limit: Amount,
    /// Relative delay on the holder's own outputs.
    pub to_self_delay: u16,
    /// Smallest distance between the current height and an HTLC's expiry.
    pub min_cltv_expiry_delta: u32,
    /// Latest HTLC expiry (absolute height) this side allows, offered or received: the factory's
    /// timeout minus its exit time and a margin. Always below [`LOCKTIME_THRESHOLD`].
    pub max_cltv_expiry: u32,
    /// Largest `to_self_delay` this side accepts on its own outputs (at most
    /// [`MAX_TO_SELF_DELAY`]).
    pub max_to_self_delay: u16,
}

impl Default for ChannelLimits {
    fn default() -> Self {
        ChannelLimits {
            max_accepted_htlcs: MAX_ACCEPTED_HTLCS,
            max_htlc_value_in_flight_msat: u64::MAX,
            htlc_minimum_msat: 1,
            channel_reserve_msat: 0,
            dust_limit: Amount::from_sat(MIN_DUST_LIMIT_SAT),
            to_self_delay: 144,
            min_cltv_expiry_delta: 18,
            max_cltv_expiry: LOCKTIME_THRESHOLD - 1,
            max_to_self_delay: MAX_TO_SELF_DELAY,
        }
    }
}

impl ChannelLimits {
    /// The limits of a leaf channel of `factory` opened at height `tip`, with `margin` blocks of
    /// safety: received HTLCs need at least the factory's worst-case exit time plus `margin`
    /// blocks before they expire, no HTLC may expire later than the factory's timeout minus that
    /// time, and the other side may not delay our outputs beyond what is left before it.
    pub fn for_factory(factory: &Factory, tip: u32, margin: u32) -> Result<Self, ChannelError> {
        let delta = super::deadlines::min_final_cltv_expiry_delta(factory, margin);
        let timeout = factory.timeout_height();
        let max_cltv_expiry = timeout
            .checked_sub(delta)
            .filter(|&m| m > tip)
            .ok_or(ChannelError::FactoryTooShort {
                timeout,
                tip,
                delta,
            })?
            .min(LOCKTIME_THRESHOLD - 1);
        // Our outputs must be sweepable before the factory times out, after the exit.
        let room = timeout - delta - tip;
        let max_to_self_delay = u16::try_from(room)
            .unwrap_or(u16::MAX)
            .min(MAX_TO_SELF_DELAY);
        // Our own delay takes at most half the room: the other side, a few blocks further on
        // its chain, still finds it within its bound, and our sweeps keep time to confirm.
        Ok(ChannelLimits {
            min_cltv_expiry_delta: delta,
            max_cltv_expiry,
            max_to_self_delay,
            to_self_delay: ChannelLimits::default()
                .to_self_delay
                .min(max_to_self_delay / 2)
                .max(1),
            ..ChannelLimits::default()
        })
    }

    /// Check limits announced by a side (`theirs`, possibly ours) against what `ours` accepts on
    /// a channel of `capacity_msat`.
    pub fn check(&self, ours: &ChannelLimits, capacity_msat: u64) -> Result<(), ChannelError> {
        let dust = self.dust_limit.to_sat();
        if !(MIN_DUST_LIMIT_SAT..=MAX_DUST_LIMIT_SAT).contains(&dust) {
            return Err(ChannelError::DustLimitOutOfRange {
                dust_limit: dust,
                min: MIN_DUST_LIMIT_SAT,
                max: MAX_DUST_LIMIT_SAT,
            });
        }
        let max_delay = ours.max_to_self_delay.min(MAX_TO_SELF_DELAY);
        if self.to_self_delay == 0 || self.to_self_delay > max_delay {
            return Err(ChannelError::ToSelfDelayOutOfRange {
                to_self_delay: self.to_self_delay,
                max: max_delay,
            });
        }
        if self.max_accepted_htlcs == 0 || self.max_accepted_htlcs > MAX_ACCEPTED_HTLCS {
            return Err(ChannelError::MaxAcceptedHtlcsOutOfRange {
                max_accepted_htlcs: self.max_accepted_htlcs,
                max: MAX_ACCEPTED_HTLCS,
            });
        }
        if self.htlc_minimum_msat == 0 || self.htlc_minimum_msat > capacity_msat {
            return Err(ChannelError::HtlcMinimumOutOfRange {
                htlc_minimum_msat: self.htlc_minimum_msat,
                capacity_msat,
            });
        }
        if self.max_htlc_value_in_flight_msat == 0 {
            return Err(ChannelError::MaxInFlightZero);
        }
        if self.channel_reserve_msat > capacity_msat {
            return Err(ChannelError::ReserveAboveCapacity {
                reserve_msat: self.channel_reserve_msat,
                capacity_msat,
            });
        }
        if self.max_cltv_expiry >= LOCKTIME_THRESHOLD {
            return Err(ChannelError::ExpiryIsTimestamp(self.max_cltv_expiry));
        }
        Ok(())
    }
}

/// The public basepoints of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Basepoints {
    /// Payment basepoint (to_remote of the other side's commitments).
    pub payment: PublicKey,
    /// Delayed payment basepoint.
    pub delayed_payment: PublicKey,
    /// HTLC basepoint.
    pub htlc: PublicKey,
    /// Revocation basepoint.
    pub revocation: PublicKey,
}

/// The secrets of one side.
#[derive(Clone)]
pub struct ChannelSecrets {
    /// Payment base secret.
    pub payment: SecretKey,
    /// Delayed payment base secret.
    pub delayed_payment: SecretKey,
    /// HTLC base secret.
    pub htlc: SecretKey,
    /// Revocation base secret.
    pub revocation: SecretKey,
    /// Seed of the per-commitment secrets (shachain) and of the verification nonces.
    pub seed: [u8; 32],
    /// The funding key (this side's key in the channel output's MuSig2).
    pub funding: Keypair,
}

impl std::fmt::Debug for ChannelSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelSecrets(..)")
    }
}

impl ChannelSecrets {
    /// The public basepoints.
    pub fn basepoints(&self) -> Basepoints {
        let secp = &*SECP;
        Basepoints {
            payment: PublicKey::from_secret_key(secp, &self.payment),
            delayed_payment: PublicKey::from_secret_key(secp, &self.delayed_payment),
            htlc: PublicKey::from_secret_key(secp, &self.htlc),
            revocation: PublicKey::from_secret_key(secp, &self.revocation),
        }
    }

    fn per_commitment_secret(&self, n: u64) -> SecretKey {
        let s = SecretGenerator::new(self.seed)
            .secret(index_of(n))
            .expect("index_of stays in range");
        SecretKey::from_slice(&s)
            .expect("a shachain secret is a valid key with overwhelming probability")
    }

    /// Seed of the verification nonce of commitment `n` spending `funding`: distinct for every
    /// (outpoint, commitment) pair, so that one nonce never signs two messages (a channel may have
    /// commitments on two funding outpoints at once while a factory state changes).
    fn verification_seed(&self, funding: &OutPoint, n: u64) -> [u8; 32] {
        let mut data = b"superscalar/verification-nonce".to_vec();
        data.extend_from_slice(&self.seed);
        data.extend_from_slice(&bitcoin::consensus::serialize(funding));
        data.extend_from_slice(&n.to_be_bytes());
        sha256::Hash::hash(&data).to_byte_array()
    }
}

/// What the other side must know to start: its view of this side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAnnouncement {
    /// Basepoints.
    pub basepoints: Basepoints,
    /// This side's key in the channel output's MuSig2.
    pub funding_key: PublicKey,
    /// Per-commitment points of commitments 0 and 1.
    pub points: [PublicKey; 2],
    /// Verification nonce of commitment 1 (the first one signed).
    pub nonce: PubNonce,
}

/// Add an HTLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateAddHtlc {
    /// Sender's id for it (strictly increasing).
    pub id: u64,
    /// Amount.
    pub amount_msat: u64,
    /// Payment hash.
    pub payment_hash: [u8; 32],
    /// Absolute expiry.
    pub cltv_expiry: u32,
}

/// Settle an HTLC the sender received, with its preimage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateFulfillHtlc {
    /// The HTLC (the id its offerer gave it).
    pub id: u64,
    /// The preimage.
    pub preimage: [u8; 32],
}

/// Fail an HTLC the sender received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateFailHtlc {
    /// The HTLC (the id its offerer gave it).
    pub id: u64,
}

/// A signature of the receiver's next commitment and of its HTLC transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentSigned {
    /// The sender's MuSig2 partial signature.
    pub partial_sig: PartialSig,
    /// The sender's nonce for it.
    pub nonce: PubNonce,
    /// One signature per HTLC output, in output order.
    pub htlc_signatures: Vec<Signature>,
    /// The same commitment spending each other live funding outpoint (dual-state).
    pub others: Vec<OutpointSignature>,
}

/// The signatures of one commitment spending one more live funding outpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutpointSignature {
    /// The funding outpoint this commitment spends.
    pub outpoint: OutPoint,
    /// The sender's MuSig2 partial signature (with its own nonce: nonces are never shared
    /// between outpoints).
    pub partial_sig: PartialSig,
    /// The sender's nonce for it.
    pub nonce: PubNonce,
    /// One signature per HTLC output, in output order.
    pub htlc_signatures: Vec<Signature>,
}

/// A side's verification nonce for its next commitment on a newly added funding outpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FundingNonce {
    /// The new funding outpoint.
    pub outpoint: OutPoint,
    /// The commitment number the nonce is for.
    pub commitment: u64,
    /// The nonce.
    pub nonce: PubNonce,
}

/// Revocation of the sender's previous commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeAndAck {
    /// The per-commitment secret of the revoked commitment.
    pub per_commitment_secret: [u8; 32],
    /// The point of the commitment after the next one.
    pub next_point: PublicKey,
    /// The verification nonce for the sender's next commitment after the current one.
    pub next_nonce: PubNonce,
    /// The same for each other live funding outpoint.
    pub next_other_nonces: Vec<(OutPoint, PubNonce)>,
}

/// A refused message or request; the channel is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    /// An HTLC amount below the minimum.
    #[error("HTLC of {amount} msat is below the minimum of {min} msat")]
    HtlcTooSmall {
        /// The amount.
        amount: u64,
        /// The minimum.
        min: u64,
    },
    /// The offerer cannot afford it (balance minus reserve and pending HTLCs).
    #[error("cannot afford {amount} msat: {available} msat available above the reserve")]
    InsufficientBalance {
        /// The amount.
        amount: u64,
        /// What is available.
        available: u64,
    },
    /// Too many HTLCs pending.
    #[error("too many HTLCs pending (max {0})")]
    TooManyHtlcs(u16),
    /// Too much value in flight.
    #[error("value in flight would exceed {0} msat")]
    TooMuchInFlight(u64),
    /// The expiry is too close or in the past.
    #[error(
        "HTLC expiry {expiry} is too close to the current height {height} (min delta {delta})"
    )]
    ExpiryTooSoon {
        /// The expiry.
        expiry: u32,
        /// The current height.
        height: u32,
        /// The minimum delta.
        delta: u32,
    },
    /// The expiry is a timestamp (at or above the locktime threshold), not a height.
    #[error("HTLC expiry {0} is a timestamp, not a block height")]
    ExpiryIsTimestamp(u32),
    /// The expiry is later than the factory's life allows.
    #[error("HTLC expiry {expiry} is past the latest allowed expiry {max}")]
    ExpiryTooLate {
        /// The expiry.
        expiry: u32,
        /// The latest allowed expiry.
        max: u32,
    },
    /// The factory times out too soon for a channel: its exit time does not fit before.
    #[error(
        "factory timeout {timeout} leaves no room at height {tip} for an exit of {delta} blocks"
    )]
    FactoryTooShort {
        /// The factory's timeout height.
        timeout: u32,
        /// The current height.
        tip: u32,
        /// Exit time plus margin.
        delta: u32,
    },
    /// A dust limit outside the accepted range.
    #[error("dust limit {dust_limit} sat outside [{min}, {max}]")]
    DustLimitOutOfRange {
        /// The announced dust limit (sat).
        dust_limit: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A `to_self_delay` of zero or above what the factory's remaining life allows.
    #[error("to_self_delay {to_self_delay} outside [1, {max}]")]
    ToSelfDelayOutOfRange {
        /// The announced delay.
        to_self_delay: u16,
        /// Largest accepted.
        max: u16,
    },
    /// A `max_accepted_htlcs` of zero or above what a zero-fee commitment holds.
    #[error("max_accepted_htlcs {max_accepted_htlcs} outside [1, {max}]")]
    MaxAcceptedHtlcsOutOfRange {
        /// The announced value.
        max_accepted_htlcs: u16,
        /// Largest accepted.
        max: u16,
    },
    /// An HTLC minimum of zero or above the capacity.
    #[error("htlc_minimum_msat {htlc_minimum_msat} outside [1, {capacity_msat}]")]
    HtlcMinimumOutOfRange {
        /// The announced minimum.
        htlc_minimum_msat: u64,
        /// The channel capacity.
        capacity_msat: u64,
    },
    /// A zero `max_htlc_value_in_flight_msat`.
    #[error("max_htlc_value_in_flight_msat is zero")]
    MaxInFlightZero,
    /// A channel reserve above the capacity.
    #[error("channel reserve {reserve_msat} msat above the capacity {capacity_msat} msat")]
    ReserveAboveCapacity {
        /// The announced reserve.
        reserve_msat: u64,
        /// The channel capacity.
        capacity_msat: u64,
    },
    /// An initial balance above the capacity.
    #[error("initial balance {balance_msat} msat above the capacity {capacity_msat} msat")]
    BalanceAboveCapacity {
        /// The balance.
        balance_msat: u64,
        /// The channel capacity.
        capacity_msat: u64,
    },
    /// HTLC ids must increase.
    #[error("HTLC id {0} is not the next one")]
    BadHtlcId(u64),
    /// No such HTLC, or not one the sender may settle.
    #[error("no pending HTLC {0} that this side may settle")]
    UnknownHtlc(u64),
    /// The preimage does not hash to the payment hash.
    #[error("wrong preimage for HTLC {0}")]
    WrongPreimage(u64),
    /// A commitment or HTLC signature does not verify.
    #[error("invalid signature: {0}")]
    BadSignature(&'static str),
    /// A revocation secret that does not match the revoked commitment.
    #[error("the revocation secret does not match the revoked commitment")]
    WrongSecret,
    /// Shachain inconsistency.
    #[error(transparent)]
    Shachain(#[from] ShachainError),
    /// A message out of order.
    #[error("out of order: {0}")]
    WrongPhase(&'static str),
    /// The transaction is not a revoked commitment of the other side that we can punish.
    #[error("not a revoked commitment of this channel: {0}")]
    NotRevoked(&'static str),
    /// An output of a closed channel that cannot be claimed (yet, or by us).
    #[error("cannot claim on chain: {0}")]
    Claim(&'static str),
    /// MuSig2 failure.
    #[error(transparent)]
    Musig(#[from] MusigError),
}

/// An HTLC as tracked by a channel side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HtlcEntry {
    offered_by_us: bool,
    id: u64,
    amount_msat: u64,
    payment_hash: [u8; 32],
    cltv_expiry: u32,
}

/// Balances and HTLCs of one state of the channel, from this side's point of view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    ours_msat: u64,
    theirs_msat: u64,
    htlcs: BTreeMap<(bool, u64), HtlcEntry>,
}

/// The states of their revoked commitments: append-only, and shared by every copy of a channel
/// (a copy taken before a revocation sees it too, which only adds to what justice may use), so
/// that copying a channel or writing its snapshot does not grow with its history. The caller
/// writes each state once ([`Channel::revoked_states_to_write`]).
#[derive(Default)]
struct RevokedStates {
    states: BTreeMap<u64, State>,
    /// The highest commitment number whose state the caller has written.
    written: Option<u64>,
}

impl std::fmt::Debug for RevokedStates {
    // What was written is the caller's bookkeeping, not the channel's state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(&self.states).finish()
    }
}

impl State {
    fn in_flight(&self, offered_by_us: bool) -> (u64, usize) {
        self.htlcs
            .values()
            .filter(|h| h.offered_by_us == offered_by_us)
            .fold((0, 0), |(a, n), h| (a + h.amount_msat, n + 1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No round in progress.
    Idle,
    /// We started the round with our signature; waiting for their revocation, then their
    /// signature.
    SentSignature { got_revocation: bool },
    /// They started the round; we revoked and owe them our signature.
    OweSignature,
    /// We signed after revoking; their revocation ends the round.
    AwaitingFinalRevocation,
}

/// What a channel side holds, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    /// Our latest commitment number.
    pub our_commitment: u64,
    /// Their latest commitment number.
    pub their_commitment: u64,
    /// Our committed balance.
    pub balance_msat: u64,
    /// Their committed balance.
    pub their_balance_msat: u64,
    /// Our balance with the updates proposed so far.
    pub next_balance_msat: u64,
    /// Their balance with the updates proposed so far.
    pub next_their_balance_msat: u64,
    /// Committed HTLCs.
    pub htlcs: usize,
    /// HTLCs with the updates proposed so far.
    pub next_htlcs: usize,
    /// Next HTLC ids (ours, theirs).
    pub next_ids: (u64, u64),
    /// Round phase.
    pub phase: String,
    /// Lowest shachain index of their revocation secrets held.
    pub revocations_held: u64,
}

/// A commitment built for signing or checking, with what its HTLC transactions need.
pub(super) struct BuiltCommitment {
    /// The unsigned commitment transaction.
    tx: Transaction,
    /// Its HTLC outputs (output index, HTLC seen from the holder).
    htlcs: Vec<(u32, Htlc)>,
    /// Its keys (HTLC keys derived only when it has HTLC outputs).
    keys: CommitmentKeys,
    /// The script every HTLC transaction pays (the to_local script), when it has HTLC outputs.
    second_stage: Option<bitcoin::ScriptBuf>,
}

/// One side of a leaf channel.
#[derive(Debug, Clone)]
pub struct Channel {
    secrets: ChannelSecrets,
    /// Our basepoints (public halves of `secrets`).
    mine: Basepoints,
    /// Our funding key in MuSig2 form, and theirs.
    funding_signer: MusigSigner,
    their_funding_musig: CosignerKey,
    /// The to_remote scripts of our commitments and of theirs (static: no per-commitment key).
    to_remote_scripts: (bitcoin::ScriptBuf, bitcoin::ScriptBuf),
    /// Our per-commitment secrets and points derived so far and still needed (the latest, which
    /// the next round revokes, and the next): derivable from the seed, kept to derive them once.
    our_points: BTreeMap<u64, (SecretKey, PublicKey)>,
    /// Our public verification nonces announced and not yet used, by (outpoint, commitment).
    our_nonces: BTreeMap<(OutPoint, u64), ParsedNonce>,
    their: Basepoints,
    limits: ChannelLimits,
    their_limits: ChannelLimits,
    funding_key: TweakedAggregateKey,
    funding: TxOut,
    funding_outpoint: OutPoint,
    /// Other live funding outpoints (dual-state): every commitment is signed for each.
    other_fundings: Vec<OutPoint>,
    /// Funding outpoints no longer updated; their commitments are still recognised for
    /// penalties until the factory ends.
    retired_fundings: Vec<OutPoint>,
    their_other_nonces: BTreeMap<(OutPoint, u64), PubNonce>,
    /// Their signatures of our latest commitment on the other live outpoints.
    our_latest_other: BTreeMap<OutPoint, (PartialSig, PubNonce, Vec<Signature>)>,
    obscure: u64,
    committed: State,
    next: State,
    our_commitment_number: u64,
    their_commitment_number: u64,
    their_points: BTreeMap<u64, PublicKey>,
    their_nonces: BTreeMap<u64, PubNonce>,
    /// The state of each of their commitments we signed and they have not revoked yet (for
    /// claims on chain).
    their_states: BTreeMap<u64, State>,
    /// The states of their revoked commitments (for penalties), written apart from snapshots.
    revoked_states: std::sync::Arc<std::sync::Mutex<RevokedStates>>,
    their_secrets: SecretStore,
    /// Their signature of our latest commitment: (partial, their nonce, HTLC signatures, state).
    our_latest_sig: Option<(PartialSig, PubNonce, Vec<Signature>, State)>,
    next_our_id: u64,
    next_their_id: u64,
    phase: Phase,
}

/// One lock-step round started by `a`, with both sides in this process (tests, demo, benchmarks).
pub fn run_round(a: &mut Channel, b: &mut Channel) -> Result<(), ChannelError> {
    let sig_a = a.sign_commitment()?;
    let raa_b = b.receive_commitment_signed(&sig_a)?;
    let sig_b = b.sign_commitment()?;
    a.receive_revoke_and_ack(&raa_b)?;
    let raa_a = a.receive_commitment_signed(&sig_b)?;
    b.receive_revoke_and_ack(&raa_a)
}

/// Parameters both sides agree on.
#[derive(Debug, Clone)]
pub struct ChannelSetup {
    /// The channel output (a factory leaf output).
    pub funding_outpoint: OutPoint,
    /// Its script and value.
    pub funding: TxOut,
    /// The MuSig2 key of the channel output (both funding keys, taproot-tweaked).
    pub funding_key: TweakedAggregateKey,
    /// Whether this side opened the channel (the LSP does).
    pub we_opened: bool,
    /// Our balance at start (msat); the rest of the capacity is theirs.
    pub our_balance_msat: u64,
}

impl Channel {
    /// What the other side needs from us to start.
    pub fn announcement(
        secrets: &ChannelSecrets,
        funding_key: &TweakedAggregateKey,
        funding_outpoint: OutPoint,
    ) -> ChannelAnnouncement {
        let point = |n| per_commitment_point(&secrets.per_commitment_secret(n));
        let (_, nonce) = funding_key.deterministic_nonce(
            &secrets.funding,
            secrets.verification_seed(&funding_outpoint, 1),
        );
        ChannelAnnouncement {
            basepoints: secrets.basepoints(),
            funding_key: secrets.funding.public_key(),
            points: [point(0), point(1)],
            nonce,
        }
    }

    /// Open one side, given the other side's announcement and limits; refuses limits (theirs or
    /// ours) outside the bounds `limits` accepts, and a balance above the capacity.
    pub fn new(
        setup: ChannelSetup,
        secrets: ChannelSecrets,
        limits: ChannelLimits,
        theirs: ChannelAnnouncement,
        their_limits: ChannelLimits,
    ) -> Result<Self, ChannelError> {
        let capacity_msat = setup.funding.value.to_sat().saturating_mul(1000);
        let ours = setup.our_balance_msat;
        if ours > capacity_msat {
            return Err(ChannelError::BalanceAboveCapacity {
                balance_msat: ours,
                capacity_msat,
            });
        }
        // Their limits bind our outputs (delay, dust); ours bind theirs, and must be what they
        // would accept too.
        their_limits.check(&limits, capacity_msat)?;
        limits.check(&their_limits, capacity_msat)?;
        let state = State {
            ours_msat: ours,
            theirs_msat: capacity_msat - ours,
            htlcs: BTreeMap::new(),
        };
        let mine = secrets.basepoints();
        let obscure = if setup.we_opened {
            obscure_factor(&mine.payment, &theirs.basepoints.payment)
        } else {
            obscure_factor(&theirs.basepoints.payment, &mine.payment)
        };
        let their_funding_musig = CosignerKey::new(&BtcPublicKey::new(theirs.funding_key))?;
        let to_remote_scripts = (
            to_remote_script_of(&theirs.basepoints.payment),
            to_remote_script_of(&mine.payment),
        );
        Ok(Channel {
            to_remote_scripts,
            funding_signer: MusigSigner::new(&secrets.funding),
            their_funding_musig,
            our_points: BTreeMap::new(),
            our_nonces: BTreeMap::new(),
            mine,
            secrets,
            their: theirs.basepoints,
            limits,
            their_limits,
            funding_key: setup.funding_key,
            funding: setup.funding,
            funding_outpoint: setup.funding_outpoint,
            other_fundings: Vec::new(),
            retired_fundings: Vec::new(),
            their_other_nonces: BTreeMap::new(),
            our_latest_other: BTreeMap::new(),
            obscure,
            committed: state.clone(),
            next: state,
            our_commitment_number: 0,
            their_commitment_number: 0,
            their_points: BTreeMap::from([(0, theirs.points[0]), (1, theirs.points[1])]),
            their_nonces: BTreeMap::from([(1, theirs.nonce)]),
            their_states: BTreeMap::new(),
            revoked_states: Default::default(),
            their_secrets: SecretStore::new(),
            our_latest_sig: None,
            next_our_id: 0,
            next_their_id: 0,
            phase: Phase::Idle,
        })
    }

    /// Our balance in the latest state both sides committed to (msat).
    pub fn balance_msat(&self) -> u64 {
        self.committed.ours_msat
    }

    /// Their balance in the latest committed state (msat).
    pub fn their_balance_msat(&self) -> u64 {
        self.committed.theirs_msat
    }

    /// What we can offer in a new HTLC now: our balance in the next state above the reserve
    /// the other side requires (msat).
    pub fn sendable_msat(&self) -> u64 {
        self.next
            .ours_msat
            .saturating_sub(self.their_limits.channel_reserve_msat)
    }

    /// What the other side can offer us in a new HTLC now (msat).
    pub fn receivable_msat(&self) -> u64 {
        self.next
            .theirs_msat
            .saturating_sub(self.limits.channel_reserve_msat)
    }

    /// Our latest commitment number: the last one the other side signed (every older one is
    /// revoked).
    pub fn our_commitment_number(&self) -> u64 {
        self.our_commitment_number
    }

    /// Their current commitment number: the latest one they have not revoked (we may have
    /// signed the next one already).
    pub fn their_commitment_number(&self) -> u64 {
        self.their_commitment_number
    }

    /// HTLCs pending in the committed state.
    pub fn pending_htlcs(&self) -> usize {
        self.committed.htlcs.len()
    }

    /// Whether a round is in progress.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle && self.next == self.committed
    }

    /// A summary of the channel's state (for checks that a refused message changed nothing).
    pub fn summary(&self) -> ChannelSummary {
        ChannelSummary {
            our_commitment: self.our_commitment_number,
            their_commitment: self.their_commitment_number,
            balance_msat: self.committed.ours_msat,
            their_balance_msat: self.committed.theirs_msat,
            next_balance_msat: self.next.ours_msat,
            next_their_balance_msat: self.next.theirs_msat,
            htlcs: self.committed.htlcs.len(),
            next_htlcs: self.next.htlcs.len(),
            next_ids: (self.next_our_id, self.next_their_id),
            phase: format!("{:?}", self.phase),
            revocations_held: self.their_secrets.lowest_index(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 1_000_000_000;

    fn with(f: impl FnOnce(&mut ChannelLimits)) -> Result<(), ChannelError> {
        let mut l = ChannelLimits::default();
        f(&mut l);
        l.check(&ChannelLimits::default(), CAP)
    }

    #[test]
    fn dust_limit_bounds_at_their_edges() {
        for (sat, ok) in [(329, false), (330, true), (546, true), (547, false)] {
            let r = with(|l| l.dust_limit = Amount::from_sat(sat));
            assert_eq!(r.is_ok(), ok, "dust {sat}");
            if !ok {
                assert!(matches!(r, Err(ChannelError::DustLimitOutOfRange { .. })));
            }
        }
    }

    #[test]
    fn to_self_delay_bounds_at_their_edges() {
        let ours = ChannelLimits {
            max_to_self_delay: 300,
            ..ChannelLimits::default()
        };
        for (delay, ok) in [(0, false), (1, true), (300, true), (301, false)] {
            let theirs = ChannelLimits {
                to_self_delay: delay,
                ..ChannelLimits::default()
            };
            let r = theirs.check(&ours, CAP);
            assert_eq!(r.is_ok(), ok, "delay {delay}");
        }
        // Never above 2016, whatever the policy says.
        let lax = ChannelLimits {
            max_to_self_delay: u16::MAX,
            ..ChannelLimits::default()
        };
        for (delay, ok) in [(2016, true), (2017, false), (65535, false)] {
            let theirs = ChannelLimits {
                to_self_delay: delay,
                ..ChannelLimits::default()
            };
            assert_eq!(theirs.check(&lax, CAP).is_ok(), ok, "delay {delay}");
        }
    }

    #[test]
    fn htlc_count_minimum_reserve_and_expiry_bounds_at_their_edges() {
        assert!(with(|l| l.max_accepted_htlcs = 114).is_ok());
        assert!(matches!(
            with(|l| l.max_accepted_htlcs = 115),
            Err(ChannelError::MaxAcceptedHtlcsOutOfRange { .. })
        ));
        assert!(with(|l| l.max_accepted_htlcs = 0).is_err());
        assert!(with(|l| l.htlc_minimum_msat = 1).is_ok());
        assert!(matches!(
            with(|l| l.htlc_minimum_msat = 0),
            Err(ChannelError::HtlcMinimumOutOfRange { .. })
        ));
        assert!(with(|l| l.htlc_minimum_msat = CAP).is_ok());
        assert!(with(|l| l.htlc_minimum_msat = CAP + 1).is_err());
        assert!(with(|l| l.channel_reserve_msat = CAP).is_ok());
        assert!(matches!(
            with(|l| l.channel_reserve_msat = CAP + 1),
            Err(ChannelError::ReserveAboveCapacity { .. })
        ));
        assert!(matches!(
            with(|l| l.max_htlc_value_in_flight_msat = 0),
            Err(ChannelError::MaxInFlightZero)
        ));
        assert!(with(|l| l.max_cltv_expiry = LOCKTIME_THRESHOLD - 1).is_ok());
        assert!(matches!(
            with(|l| l.max_cltv_expiry = LOCKTIME_THRESHOLD),
            Err(ChannelError::ExpiryIsTimestamp(LOCKTIME_THRESHOLD))
        ));
    }
}
