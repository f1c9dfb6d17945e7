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
//! (re-derivable, never stored); the signer adds a fresh nonce, sends its partial signature, and
//! the holder completes the signature only when it publishes its commitment.

use std::collections::BTreeMap;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::{Keypair, PublicKey as BtcPublicKey};
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::{Amount, OutPoint, TapSighashType, Transaction, TxOut, Witness};
use thiserror::Error;

use super::commitment::{
    build_commitment, build_htlc_tx, htlc_leaves, htlc_sighash, htlc_spend_info, htlc_witness,
    obscure_factor, ChannelStatic, CommitmentKeys, CommitmentOutput, Htlc,
};
use super::keys::{derive_privkey, derive_pubkey, per_commitment_point, revocation_pubkey};
use crate::factory::Factory;
use crate::musig::{aggregate_nonces, MusigError, PartialSig, PubNonce, TweakedAggregateKey};
use crate::shachain::{index_of, SecretGenerator, SecretStore, ShachainError};

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
        Ok(ChannelLimits {
            min_cltv_expiry_delta: delta,
            max_cltv_expiry,
            max_to_self_delay,
            to_self_delay: ChannelLimits::default()
                .to_self_delay
                .min(max_to_self_delay),
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
        let secp = Secp256k1::signing_only();
        Basepoints {
            payment: PublicKey::from_secret_key(&secp, &self.payment),
            delayed_payment: PublicKey::from_secret_key(&secp, &self.delayed_payment),
            htlc: PublicKey::from_secret_key(&secp, &self.htlc),
            revocation: PublicKey::from_secret_key(&secp, &self.revocation),
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

/// One side of a leaf channel.
#[derive(Debug, Clone)]
pub struct Channel {
    secrets: ChannelSecrets,
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
    their_funding: PublicKey,
    /// The state of each of their commitments we signed (for claims and penalties on chain).
    their_states: BTreeMap<u64, State>,
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
        Ok(Channel {
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
            their_funding: theirs.funding_key,
            their_states: BTreeMap::new(),
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

    /// HTLCs pending in the committed state.
    pub fn pending_htlcs(&self) -> usize {
        self.committed.htlcs.len()
    }

    /// Whether a round is in progress.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle && self.next == self.committed
    }

    // ---- updates --------------------------------------------------------------------------

    fn check_add(
        &self,
        state: &State,
        offered_by_us: bool,
        add: &UpdateAddHtlc,
        height: u32,
    ) -> Result<(), ChannelError> {
        // The receiver's limits apply.
        let limits = if offered_by_us {
            &self.their_limits
        } else {
            &self.limits
        };
        if add.amount_msat < limits.htlc_minimum_msat || add.amount_msat == 0 {
            return Err(ChannelError::HtlcTooSmall {
                amount: add.amount_msat,
                min: limits.htlc_minimum_msat.max(1),
            });
        }
        let (flight, count) = state.in_flight(offered_by_us);
        if count + 1 > usize::from(limits.max_accepted_htlcs) {
            return Err(ChannelError::TooManyHtlcs(limits.max_accepted_htlcs));
        }
        if flight.saturating_add(add.amount_msat) > limits.max_htlc_value_in_flight_msat {
            return Err(ChannelError::TooMuchInFlight(
                limits.max_htlc_value_in_flight_msat,
            ));
        }
        let balance = if offered_by_us {
            state.ours_msat
        } else {
            state.theirs_msat
        };
        let available = balance.saturating_sub(limits.channel_reserve_msat);
        if add.amount_msat > available {
            return Err(ChannelError::InsufficientBalance {
                amount: add.amount_msat,
                available,
            });
        }
        if add.cltv_expiry >= LOCKTIME_THRESHOLD {
            return Err(ChannelError::ExpiryIsTimestamp(add.cltv_expiry));
        }
        // Both sides' latest expiry applies, whichever side offers: an HTLC must resolve while
        // the factory can still be exited.
        let max = self
            .limits
            .max_cltv_expiry
            .min(self.their_limits.max_cltv_expiry);
        if add.cltv_expiry > max {
            return Err(ChannelError::ExpiryTooLate {
                expiry: add.cltv_expiry,
                max,
            });
        }
        if add.cltv_expiry < height.saturating_add(limits.min_cltv_expiry_delta) {
            return Err(ChannelError::ExpiryTooSoon {
                expiry: add.cltv_expiry,
                height,
                delta: limits.min_cltv_expiry_delta,
            });
        }
        Ok(())
    }

    fn apply_add(state: &mut State, offered_by_us: bool, add: &UpdateAddHtlc) {
        if offered_by_us {
            state.ours_msat -= add.amount_msat;
        } else {
            state.theirs_msat -= add.amount_msat;
        }
        state.htlcs.insert(
            (offered_by_us, add.id),
            HtlcEntry {
                offered_by_us,
                id: add.id,
                amount_msat: add.amount_msat,
                payment_hash: add.payment_hash,
                cltv_expiry: add.cltv_expiry,
            },
        );
    }

    fn ensure_can_update(&self) -> Result<(), ChannelError> {
        match self.phase {
            Phase::Idle => Ok(()),
            _ => Err(ChannelError::WrongPhase(
                "updates wait until the current round is complete",
            )),
        }
    }

    /// Offer an HTLC to the other side.
    pub fn add_htlc(
        &mut self,
        amount_msat: u64,
        payment_hash: [u8; 32],
        cltv_expiry: u32,
        height: u32,
    ) -> Result<UpdateAddHtlc, ChannelError> {
        self.ensure_can_update()?;
        let add = UpdateAddHtlc {
            id: self.next_our_id,
            amount_msat,
            payment_hash,
            cltv_expiry,
        };
        self.check_add(&self.next, true, &add, height)?;
        Self::apply_add(&mut self.next, true, &add);
        self.next_our_id += 1;
        Ok(add)
    }

    /// Take an HTLC the other side offers.
    pub fn receive_add(&mut self, add: &UpdateAddHtlc, height: u32) -> Result<(), ChannelError> {
        self.ensure_can_update()?;
        if add.id != self.next_their_id {
            return Err(ChannelError::BadHtlcId(add.id));
        }
        self.check_add(&self.next, false, add, height)?;
        Self::apply_add(&mut self.next, false, add);
        self.next_their_id += 1;
        Ok(())
    }

    fn settle(state: &mut State, offered_by_us: bool, id: u64, success: bool) {
        let h = state
            .htlcs
            .remove(&(offered_by_us, id))
            .expect("checked by the caller");
        // Fulfilled: the receiver of the HTLC gets it; failed: it returns to its offerer.
        let to_us = offered_by_us != success;
        if to_us {
            state.ours_msat += h.amount_msat;
        } else {
            state.theirs_msat += h.amount_msat;
        }
    }

    fn find(&self, offered_by_us: bool, id: u64) -> Result<HtlcEntry, ChannelError> {
        // Only HTLCs already committed by both sides can be settled.
        match (
            self.committed.htlcs.get(&(offered_by_us, id)),
            self.next.htlcs.get(&(offered_by_us, id)),
        ) {
            (Some(h), Some(_)) => Ok(*h),
            _ => Err(ChannelError::UnknownHtlc(id)),
        }
    }

    /// Settle an HTLC the other side offered us, with its preimage.
    pub fn fulfill_htlc(
        &mut self,
        id: u64,
        preimage: [u8; 32],
    ) -> Result<UpdateFulfillHtlc, ChannelError> {
        self.ensure_can_update()?;
        let h = self.find(false, id)?;
        if sha256::Hash::hash(&preimage).to_byte_array() != h.payment_hash {
            return Err(ChannelError::WrongPreimage(id));
        }
        Self::settle(&mut self.next, false, id, true);
        Ok(UpdateFulfillHtlc { id, preimage })
    }

    /// The other side settles an HTLC we offered; returns the preimage to pass upstream.
    pub fn receive_fulfill(&mut self, msg: &UpdateFulfillHtlc) -> Result<[u8; 32], ChannelError> {
        self.ensure_can_update()?;
        let h = self.find(true, msg.id)?;
        if sha256::Hash::hash(&msg.preimage).to_byte_array() != h.payment_hash {
            return Err(ChannelError::WrongPreimage(msg.id));
        }
        Self::settle(&mut self.next, true, msg.id, true);
        Ok(msg.preimage)
    }

    /// Fail an HTLC the other side offered us.
    pub fn fail_htlc(&mut self, id: u64) -> Result<UpdateFailHtlc, ChannelError> {
        self.ensure_can_update()?;
        self.find(false, id)?;
        Self::settle(&mut self.next, false, id, false);
        Ok(UpdateFailHtlc { id })
    }

    /// The other side fails an HTLC we offered.
    pub fn receive_fail(&mut self, msg: &UpdateFailHtlc) -> Result<(), ChannelError> {
        self.ensure_can_update()?;
        self.find(true, msg.id)?;
        Self::settle(&mut self.next, true, msg.id, false);
        Ok(())
    }

    // ---- commitments ----------------------------------------------------------------------

    fn chan_static(&self, holder_is_us: bool, outpoint: OutPoint) -> ChannelStatic {
        let (to_self_delay, dust_limit) = if holder_is_us {
            // Our outputs wait for the delay they require of us.
            (self.their_limits.to_self_delay, self.limits.dust_limit)
        } else {
            (self.limits.to_self_delay, self.their_limits.dust_limit)
        };
        ChannelStatic {
            funding_outpoint: outpoint,
            funding_amount: self.funding.value,
            obscure_factor: self.obscure,
            to_self_delay,
            dust_limit,
        }
    }

    /// Keys of a commitment: ours (`holder_is_us`) at our point, or theirs at their point.
    fn commitment_keys(&self, holder_is_us: bool, point: &PublicKey) -> CommitmentKeys {
        let mine = self.secrets.basepoints();
        let (holder, counter) = if holder_is_us {
            (mine, self.their)
        } else {
            (self.their, mine)
        };
        CommitmentKeys {
            revocation: revocation_pubkey(&counter.revocation, point),
            local_delayed: derive_pubkey(&holder.delayed_payment, point),
            local_htlc: derive_pubkey(&holder.htlc, point),
            remote_htlc: derive_pubkey(&counter.htlc, point),
            remote_payment: counter.payment,
        }
    }

    fn htlc_list(state: &State, holder_is_us: bool) -> Vec<Htlc> {
        state
            .htlcs
            .values()
            .map(|h| Htlc {
                offered: h.offered_by_us == holder_is_us,
                amount_msat: h.amount_msat,
                payment_hash: h.payment_hash,
                cltv_expiry: h.cltv_expiry,
            })
            .collect()
    }

    /// Build the commitment of `holder_is_us` side, number `n`, at `state`.
    fn commitment(
        &self,
        holder_is_us: bool,
        n: u64,
        state: &State,
        point: &PublicKey,
        outpoint: OutPoint,
    ) -> (Transaction, Vec<(u32, Htlc)>, CommitmentKeys) {
        let keys = self.commitment_keys(holder_is_us, point);
        let htlcs = Self::htlc_list(state, holder_is_us);
        let (local, remote) = if holder_is_us {
            (state.ours_msat, state.theirs_msat)
        } else {
            (state.theirs_msat, state.ours_msat)
        };
        let c = build_commitment(
            &self.chan_static(holder_is_us, outpoint),
            &keys,
            n,
            local,
            remote,
            &htlcs,
        );
        let htlc_outputs = c
            .outputs
            .iter()
            .enumerate()
            .filter_map(|(vout, o)| match o {
                CommitmentOutput::Htlc(i) => Some((vout as u32, htlcs[*i])),
                _ => None,
            })
            .collect();
        (c.tx, htlc_outputs, keys)
    }

    fn htlc_txs(
        &self,
        commitment: &Transaction,
        htlcs: &[(u32, Htlc)],
        keys: &CommitmentKeys,
        to_self_delay: u16,
    ) -> Vec<(Transaction, TxOut, bitcoin::ScriptBuf)> {
        let txid = commitment.compute_txid();
        htlcs
            .iter()
            .map(|(vout, h)| {
                let tx = build_htlc_tx(txid, *vout, h, keys, to_self_delay);
                let (timeout, success) = htlc_leaves(keys, h);
                let leaf = if h.offered { timeout } else { success };
                (tx, commitment.output[*vout as usize].clone(), leaf)
            })
            .collect()
    }

    /// Sign the other side's next commitment (with every update proposed so far).
    pub fn sign_commitment(&mut self) -> Result<CommitmentSigned, ChannelError> {
        let next_phase = match self.phase {
            Phase::Idle => Phase::SentSignature {
                got_revocation: false,
            },
            Phase::OweSignature => Phase::AwaitingFinalRevocation,
            _ => {
                return Err(ChannelError::WrongPhase(
                    "a signature is already outstanding",
                ))
            }
        };
        let n = self.their_commitment_number + 1;
        let point = *self.their_points.get(&n).ok_or(ChannelError::WrongPhase(
            "their next point is not known yet",
        ))?;
        let their_nonce = *self.their_nonces.get(&n).ok_or(ChannelError::WrongPhase(
            "their next verification nonce is not known yet",
        ))?;
        let mut others = Vec::with_capacity(self.other_fundings.len());
        for o in &self.other_fundings {
            let their = *self
                .their_other_nonces
                .get(&(*o, n))
                .ok_or(ChannelError::WrongPhase(
                    "their verification nonce on a new funding outpoint is not known yet",
                ))?;
            let (partial_sig, nonce, htlc_signatures) =
                self.sign_their_commitment(n, &point, their, *o)?;
            others.push(OutpointSignature {
                outpoint: *o,
                partial_sig,
                nonce,
                htlc_signatures,
            });
        }
        let (partial_sig, nonce, htlc_signatures) =
            self.sign_their_commitment(n, &point, their_nonce, self.funding_outpoint)?;
        self.their_states.insert(n, self.next.clone());
        self.phase = next_phase;
        Ok(CommitmentSigned {
            partial_sig,
            nonce,
            htlc_signatures,
            others,
        })
    }

    /// Our signatures of their commitment `n` (at `self.next`) spending `outpoint`.
    fn sign_their_commitment(
        &self,
        n: u64,
        point: &PublicKey,
        their_nonce: PubNonce,
        outpoint: OutPoint,
    ) -> Result<(PartialSig, PubNonce, Vec<Signature>), ChannelError> {
        let (tx, htlcs, keys) = self.commitment(false, n, &self.next, point, outpoint);
        let msg = Factory::sighash(&tx, &self.funding);
        let (sec, nonce) = self.funding_key.nonce_gen(&self.secrets.funding, &msg);
        let agg = aggregate_nonces(&[their_nonce, nonce])?;
        let partial_sig = self
            .funding_key
            .partial_sign(sec, &self.secrets.funding, &agg, &msg)?;
        let secp = Secp256k1::signing_only();
        let htlc_key = Keypair::from_secret_key(&secp, &derive_privkey(&self.secrets.htlc, point));
        let htlc_signatures = self
            .htlc_txs(&tx, &htlcs, &keys, self.limits.to_self_delay)
            .iter()
            .map(|(htx, spent, leaf)| {
                let m = htlc_sighash(htx, spent, leaf, TapSighashType::SinglePlusAnyoneCanPay);
                secp.sign_schnorr_no_aux_rand(&Message::from_digest(m), &htlc_key)
            })
            .collect();
        Ok((partial_sig, nonce, htlc_signatures))
    }

    /// Check their signatures of our commitment `n` (at `self.next`) spending `outpoint`.
    fn check_our_commitment(
        &self,
        n: u64,
        point: &PublicKey,
        outpoint: OutPoint,
        partial_sig: &PartialSig,
        nonce: &PubNonce,
        htlc_signatures: &[Signature],
    ) -> Result<(), ChannelError> {
        let (tx, htlcs, keys) = self.commitment(true, n, &self.next, point, outpoint);
        let sighash = Factory::sighash(&tx, &self.funding);
        let (_, our_nonce) = self.funding_key.deterministic_nonce(
            &self.secrets.funding,
            self.secrets.verification_seed(&outpoint, n),
        );
        let agg = aggregate_nonces(&[our_nonce, *nonce])
            .map_err(|_| ChannelError::BadSignature("commitment nonce"))?;
        let their_funding = BtcPublicKey::new(self.their_funding_key());
        if !self
            .funding_key
            .partial_verify(partial_sig, nonce, &their_funding, &agg, &sighash)
            .unwrap_or(false)
        {
            return Err(ChannelError::BadSignature("commitment partial signature"));
        }
        let htlc_txs = self.htlc_txs(&tx, &htlcs, &keys, self.their_limits.to_self_delay);
        if htlc_txs.len() != htlc_signatures.len() {
            return Err(ChannelError::BadSignature(
                "wrong number of HTLC signatures",
            ));
        }
        let secp = Secp256k1::verification_only();
        for ((htx, spent, leaf), sig) in htlc_txs.iter().zip(htlc_signatures) {
            let m = htlc_sighash(htx, spent, leaf, TapSighashType::SinglePlusAnyoneCanPay);
            secp.verify_schnorr(
                sig,
                &Message::from_digest(m),
                &keys.remote_htlc.x_only_public_key().0,
            )
            .map_err(|_| ChannelError::BadSignature("HTLC signature"))?;
        }
        Ok(())
    }

    /// Dual-state: start signing every commitment for `outpoint` too (the channel output of a
    /// factory state being signed). Returns our verification nonce for our next commitment on
    /// it, for the other side's [`Channel::receive_funding_nonce`]. Only between rounds.
    pub fn add_funding(&mut self, outpoint: OutPoint) -> Result<FundingNonce, ChannelError> {
        if self.phase != Phase::Idle {
            return Err(ChannelError::WrongPhase(
                "funding outpoints change between rounds only",
            ));
        }
        if outpoint != self.funding_outpoint && !self.other_fundings.contains(&outpoint) {
            self.other_fundings.push(outpoint);
            self.retired_fundings.retain(|o| *o != outpoint);
        }
        let n = self.our_commitment_number + 1;
        let (_, nonce) = self.funding_key.deterministic_nonce(
            &self.secrets.funding,
            self.secrets.verification_seed(&outpoint, n),
        );
        Ok(FundingNonce {
            outpoint,
            commitment: n,
            nonce,
        })
    }

    /// Dual-state: the other side's verification nonce on an outpoint we added too.
    pub fn receive_funding_nonce(&mut self, msg: &FundingNonce) -> Result<(), ChannelError> {
        if !self.other_fundings.contains(&msg.outpoint) {
            return Err(ChannelError::WrongPhase(
                "a nonce for a funding outpoint we did not add",
            ));
        }
        if msg.commitment != self.their_commitment_number + 1 {
            return Err(ChannelError::WrongPhase(
                "a funding nonce for another commitment than their next",
            ));
        }
        self.their_other_nonces
            .insert((msg.outpoint, msg.commitment), msg.nonce);
        Ok(())
    }

    /// Dual-state: stop updating `outpoint` (call only once the new factory state is fully
    /// signed, the old one is superseded with its punishment and secret held, and the last
    /// commitment on `outpoint` is revoked). If it was the primary, the oldest other live
    /// outpoint becomes primary. Its commitments are still recognised for penalties.
    pub fn retire_funding(&mut self, outpoint: OutPoint) -> Result<(), ChannelError> {
        if self.phase != Phase::Idle {
            return Err(ChannelError::WrongPhase(
                "funding outpoints change between rounds only",
            ));
        }
        if outpoint == self.funding_outpoint {
            if self.other_fundings.is_empty() {
                return Err(ChannelError::WrongPhase("the last live funding outpoint"));
            }
            let next = self.other_fundings.remove(0);
            let sig = self.our_latest_other.remove(&next);
            if let (Some((p, nonce, h)), Some((_, _, _, state))) = (sig, self.our_latest_sig.take())
            {
                self.our_latest_sig = Some((p, nonce, h, state));
            }
            let n = self.their_commitment_number + 1;
            if let Some(nonce) = self.their_other_nonces.remove(&(next, n)) {
                self.their_nonces.insert(n, nonce);
            }
            self.funding_outpoint = next;
        } else if let Some(i) = self.other_fundings.iter().position(|o| *o == outpoint) {
            self.other_fundings.remove(i);
            self.our_latest_other.remove(&outpoint);
        } else {
            return Err(ChannelError::WrongPhase("not a live funding outpoint"));
        }
        self.their_other_nonces.retain(|(o, _), _| *o != outpoint);
        self.retired_fundings.push(outpoint);
        Ok(())
    }

    /// Every live funding outpoint, the primary first.
    pub fn funding_outpoints(&self) -> Vec<OutPoint> {
        std::iter::once(self.funding_outpoint)
            .chain(self.other_fundings.iter().copied())
            .collect()
    }

    /// Check their signature of our next commitment; revoke our previous one.
    pub fn receive_commitment_signed(
        &mut self,
        msg: &CommitmentSigned,
    ) -> Result<RevokeAndAck, ChannelError> {
        let next_phase = match self.phase {
            Phase::Idle => Phase::OweSignature,
            Phase::SentSignature {
                got_revocation: true,
            } => Phase::Idle,
            _ => return Err(ChannelError::WrongPhase("unexpected commitment signature")),
        };
        let n = self.our_commitment_number + 1;
        let point = per_commitment_point(&self.secrets.per_commitment_secret(n));
        self.check_our_commitment(
            n,
            &point,
            self.funding_outpoint,
            &msg.partial_sig,
            &msg.nonce,
            &msg.htlc_signatures,
        )?;
        // Dual-state: exactly one signature set per other live outpoint.
        if msg.others.len() != self.other_fundings.len() {
            return Err(ChannelError::BadSignature(
                "not one commitment signature per live funding outpoint",
            ));
        }
        for o in &self.other_fundings {
            let sig =
                msg.others
                    .iter()
                    .find(|x| x.outpoint == *o)
                    .ok_or(ChannelError::BadSignature(
                        "no commitment signature for a live funding outpoint",
                    ))?;
            self.check_our_commitment(
                n,
                &point,
                *o,
                &sig.partial_sig,
                &sig.nonce,
                &sig.htlc_signatures,
            )?;
        }
        // Revoke the previous commitment: reveal its secret, announce the one after next.
        let revoked = self.secrets.per_commitment_secret(n - 1);
        let next_point = per_commitment_point(&self.secrets.per_commitment_secret(n + 1));
        let (_, next_nonce) = self.funding_key.deterministic_nonce(
            &self.secrets.funding,
            self.secrets
                .verification_seed(&self.funding_outpoint, n + 1),
        );
        let next_other_nonces = self
            .other_fundings
            .iter()
            .map(|o| {
                let (_, nonce) = self.funding_key.deterministic_nonce(
                    &self.secrets.funding,
                    self.secrets.verification_seed(o, n + 1),
                );
                (*o, nonce)
            })
            .collect();
        self.our_latest_other = msg
            .others
            .iter()
            .map(|x| {
                (
                    x.outpoint,
                    (x.partial_sig, x.nonce, x.htlc_signatures.clone()),
                )
            })
            .collect();
        self.our_commitment_number = n;
        self.our_latest_sig = Some((
            msg.partial_sig,
            msg.nonce,
            msg.htlc_signatures.clone(),
            self.next.clone(),
        ));
        self.phase = next_phase;
        self.finish_round_if_done();
        Ok(RevokeAndAck {
            per_commitment_secret: revoked.secret_bytes(),
            next_point,
            next_nonce,
            next_other_nonces,
        })
    }

    /// Check their revocation of their previous commitment.
    pub fn receive_revoke_and_ack(&mut self, msg: &RevokeAndAck) -> Result<(), ChannelError> {
        let next_phase = match self.phase {
            Phase::SentSignature {
                got_revocation: false,
            } => Phase::SentSignature {
                got_revocation: true,
            },
            Phase::AwaitingFinalRevocation => Phase::Idle,
            _ => return Err(ChannelError::WrongPhase("unexpected revocation")),
        };
        let revoked_n = self.their_commitment_number;
        let expected = self
            .their_points
            .get(&revoked_n)
            .ok_or(ChannelError::WrongSecret)?;
        let secret = SecretKey::from_slice(&msg.per_commitment_secret)
            .map_err(|_| ChannelError::WrongSecret)?;
        if per_commitment_point(&secret) != *expected {
            return Err(ChannelError::WrongSecret);
        }
        let mut store = self.their_secrets.clone();
        store.provide(index_of(revoked_n), msg.per_commitment_secret)?;
        self.their_secrets = store;
        self.their_commitment_number = revoked_n + 1;
        self.their_points.insert(revoked_n + 2, msg.next_point);
        self.their_nonces.insert(revoked_n + 2, msg.next_nonce);
        for (o, nonce) in &msg.next_other_nonces {
            if self.other_fundings.contains(o) {
                self.their_other_nonces.insert((*o, revoked_n + 2), *nonce);
            }
        }
        self.their_other_nonces
            .retain(|(_, k), _| *k > revoked_n + 1);
        self.their_points.retain(|k, _| *k > revoked_n);
        self.their_nonces.retain(|k, _| *k > revoked_n + 1);
        self.phase = next_phase;
        self.finish_round_if_done();
        Ok(())
    }

    fn finish_round_if_done(&mut self) {
        if self.phase == Phase::Idle {
            self.committed = self.next.clone();
        }
    }

    fn their_funding_key(&self) -> PublicKey {
        self.their_funding
    }

    /// Secrets of their revoked commitments, for penalties.
    pub fn their_revocation_secret(&self, n: u64) -> Option<[u8; 32]> {
        self.their_secrets.get(index_of(n))
    }

    /// The commitment number a commitment transaction of this channel carries (obscured in its
    /// nSequence and nLockTime).
    fn commitment_number_of(&self, tx: &Transaction) -> Result<u64, ChannelError> {
        let input = tx
            .input
            .first()
            .ok_or(ChannelError::NotRevoked("no input"))?;
        let ours = input.previous_output == self.funding_outpoint
            || self.other_fundings.contains(&input.previous_output)
            || self.retired_fundings.contains(&input.previous_output);
        if !ours {
            return Err(ChannelError::NotRevoked(
                "it does not spend the channel output",
            ));
        }
        let obscured = (u64::from(input.sequence.0 & 0xff_ffff) << 24)
            | u64::from(tx.lock_time.to_consensus_u32() & 0xff_ffff);
        Ok(obscured ^ self.obscure)
    }

    /// Which of their commitments `tx` is: its number, point, revocation secret (if revoked),
    /// keys and state.
    fn their_commitment(
        &self,
        tx: &Transaction,
    ) -> Result<(u64, Option<SecretKey>, CommitmentKeys, State), ChannelError> {
        let n = self.commitment_number_of(tx)?;
        let secret = self
            .their_secrets
            .get(index_of(n))
            .map(|s| SecretKey::from_slice(&s).map_err(|_| ChannelError::WrongSecret))
            .transpose()?;
        let point = match &secret {
            Some(s) => per_commitment_point(s),
            None => *self
                .their_points
                .get(&n)
                .ok_or(ChannelError::NotRevoked("not one of their commitments"))?,
        };
        let state = self
            .their_states
            .get(&n)
            .cloned()
            .ok_or(ChannelError::NotRevoked("a commitment we never signed"))?;
        Ok((n, secret, self.commitment_keys(false, &point), state))
    }

    /// Whether `tx` is a commitment of the other side that they revoked (we hold its secret).
    pub fn is_revoked_commitment(&self, tx: &Transaction) -> bool {
        matches!(self.their_commitment(tx), Ok((_, Some(_), _, _)))
    }

    /// A justice transaction for a revoked commitment of the other side published on chain: it
    /// takes the whole channel at once (their to_local and every HTLC output with the revocation
    /// key, and our own to_remote), paying `destination`.
    pub fn justice_transaction(
        &self,
        revoked: &Transaction,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        let txid = revoked.compute_txid();
        let outputs: Vec<(OutPoint, TxOut)> = revoked
            .output
            .iter()
            .enumerate()
            .map(|(vout, o)| (OutPoint::new(txid, vout as u32), o.clone()))
            .collect();
        self.justice_over(revoked, &outputs, destination, fee_rate)
    }

    /// A justice transaction for the revoked commitment `revoked` over `outputs`: the outputs
    /// still unspent of it and of its second-stage HTLC transactions (whose output is the
    /// revoked holder's to_local script). Each output the revocation key or our payment key can
    /// spend is taken, the others are skipped; the whole pays `destination`.
    pub fn justice_over(
        &self,
        revoked: &Transaction,
        outputs: &[(OutPoint, TxOut)],
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        use bitcoin::key::TapTweak;
        use bitcoin::sighash::{Prevouts, SighashCache};
        let (_, secret, keys, state) = self.their_commitment(revoked)?;
        let secret = secret.ok_or(ChannelError::NotRevoked(
            "its revocation secret was never received",
        ))?;
        let secp = Secp256k1::new();
        let revocation = Keypair::from_secret_key(
            &secp,
            &super::keys::revocation_privkey(&self.secrets.revocation, &secret),
        );
        let payment = Keypair::from_secret_key(&secp, &self.secrets.payment);
        // Each output we can take, with the key (already tweaked) that signs for it.
        let mut candidates: Vec<(bitcoin::ScriptBuf, bitcoin::key::TweakedKeypair)> = Vec::new();
        let to_local = super::commitment::to_local_spend_info(&keys, self.limits.to_self_delay);
        candidates.push((
            bitcoin::ScriptBuf::new_p2tr_tweaked(to_local.output_key()),
            revocation.tap_tweak(&secp, to_local.merkle_root()),
        ));
        candidates.push((
            super::commitment::to_remote_script(&keys),
            payment.tap_tweak(&secp, None),
        ));
        for h in Self::htlc_list(&state, false) {
            let info = htlc_spend_info(&keys, &h);
            candidates.push((
                bitcoin::ScriptBuf::new_p2tr_tweaked(info.output_key()),
                revocation.tap_tweak(&secp, info.merkle_root()),
            ));
        }
        let mut spent: Vec<(OutPoint, TxOut, bitcoin::key::TweakedKeypair)> = Vec::new();
        for (outpoint, out) in outputs {
            if spent.iter().any(|s| s.0 == *outpoint) {
                continue;
            }
            if let Some((_, key)) = candidates.iter().find(|(spk, _)| *spk == out.script_pubkey) {
                spent.push((*outpoint, out.clone(), *key));
            }
        }
        if spent.is_empty() {
            return Err(ChannelError::NotRevoked("nothing to take"));
        }
        let total = spent
            .iter()
            .try_fold(Amount::ZERO, |a, s| a.checked_add(s.1.value))
            .ok_or(ChannelError::NotRevoked("output values overflow"))?;
        let mut tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: spent
                .iter()
                .map(|(outpoint, _, _)| bitcoin::TxIn {
                    previous_output: *outpoint,
                    script_sig: bitcoin::ScriptBuf::new(),
                    sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: total,
                script_pubkey: destination,
            }],
        };
        let vsize = (tx.weight().to_wu() + 2 + 66 * tx.input.len() as u64).div_ceil(4);
        let fee = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
        tx.output[0].value = total
            .checked_sub(fee)
            .filter(|v| *v >= Amount::from_sat(330))
            .ok_or(ChannelError::NotRevoked("the outputs cannot pay the fee"))?;
        let prevouts: Vec<TxOut> = spent.iter().map(|s| s.1.clone()).collect();
        for (i, (_, _, key)) in spent.iter().enumerate() {
            let sighash = SighashCache::new(&tx)
                .taproot_key_spend_signature_hash(
                    i,
                    &Prevouts::All(&prevouts),
                    TapSighashType::Default,
                )
                .map_err(|_| ChannelError::NotRevoked("sighash"))?;
            let sig = secp.sign_schnorr(&Message::from(sighash), &key.to_keypair());
            tx.input[i].witness = Witness::from_slice(&[sig.as_ref()]);
        }
        Ok(tx)
    }

    /// Claims of HTLC outputs of their published commitment: those they offered us, by preimage
    /// (when `preimages` has it), and those we offered them, by timeout once `height` has reached
    /// their expiry. One transaction per HTLC, paying `destination`.
    pub fn claim_htlcs(
        &self,
        commitment: &Transaction,
        preimages: &BTreeMap<[u8; 32], [u8; 32]>,
        height: u32,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Vec<Transaction>, ChannelError> {
        use bitcoin::sighash::{Prevouts, SighashCache};
        use bitcoin::taproot::LeafVersion;
        let (_, _, keys, state) = self.their_commitment(commitment)?;
        let secp = Secp256k1::new();
        let point_key = Keypair::from_secret_key(
            &secp,
            &derive_privkey(&self.secrets.htlc, &self.their_point_of(commitment)?),
        );
        let txid = commitment.compute_txid();
        let mut claims = Vec::new();
        for h in Self::htlc_list(&state, false) {
            let info = htlc_spend_info(&keys, &h);
            let spk = bitcoin::ScriptBuf::new_p2tr_tweaked(info.output_key());
            let Some(vout) = commitment
                .output
                .iter()
                .position(|o| o.script_pubkey == spk)
            else {
                continue;
            };
            let out = commitment.output[vout].clone();
            let (timeout_leaf, success_leaf) = htlc_leaves(&keys, &h);
            // `h.offered` is from their side: offered by them means we receive it.
            let (leaf, preimage, lock) = if h.offered {
                match preimages.get(&h.payment_hash) {
                    Some(p) => (success_leaf, Some(*p), 0),
                    None => continue,
                }
            } else if height >= h.cltv_expiry {
                (timeout_leaf, None, h.cltv_expiry)
            } else {
                continue;
            };
            let mut tx = Transaction {
                version: bitcoin::transaction::Version::TWO,
                lock_time: bitcoin::absolute::LockTime::from_consensus(lock),
                input: vec![bitcoin::TxIn {
                    previous_output: OutPoint::new(txid, vout as u32),
                    script_sig: bitcoin::ScriptBuf::new(),
                    sequence: bitcoin::Sequence::ENABLE_LOCKTIME_NO_RBF,
                    witness: Witness::new(),
                }],
                output: vec![TxOut {
                    value: out.value,
                    script_pubkey: destination.clone(),
                }],
            };
            let vsize =
                (tx.weight().to_wu() + 2 + 1 + 65 + 33 + leaf.len() as u64 + 66).div_ceil(4);
            let fee = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
            let Some(value) = out
                .value
                .checked_sub(fee)
                .filter(|v| *v >= Amount::from_sat(330))
            else {
                continue;
            };
            tx.output[0].value = value;
            let leaf_hash = bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript);
            let sighash = SighashCache::new(&tx)
                .taproot_script_spend_signature_hash(
                    0,
                    &Prevouts::All(&[out]),
                    leaf_hash,
                    TapSighashType::Default,
                )
                .map_err(|_| ChannelError::NotRevoked("sighash"))?;
            let sig = secp.sign_schnorr(&Message::from(sighash), &point_key);
            let control = info
                .control_block(&(leaf.clone(), LeafVersion::TapScript))
                .ok_or(ChannelError::NotRevoked("control block"))?;
            // The signature is checked first, so it sits on top of the stack (pushed last).
            let mut w = Witness::new();
            if let Some(p) = preimage {
                w.push(p);
            }
            w.push(sig.as_ref());
            w.push(leaf.as_bytes());
            w.push(control.serialize());
            tx.input[0].witness = w;
            claims.push(tx);
        }
        Ok(claims)
    }

    fn their_point_of(&self, tx: &Transaction) -> Result<PublicKey, ChannelError> {
        let (n, secret, _, _) = self.their_commitment(tx)?;
        match secret {
            Some(s) => Ok(per_commitment_point(&s)),
            None => self
                .their_points
                .get(&n)
                .copied()
                .ok_or(ChannelError::NotRevoked("unknown point")),
        }
    }

    /// After our own commitment `commitment` (number `n` of ours) confirmed and `to_self_delay`
    /// passed: take our to_local output through its delayed script path.
    pub fn claim_to_local(
        &self,
        commitment: &Transaction,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        use bitcoin::sighash::{Prevouts, SighashCache};
        use bitcoin::taproot::LeafVersion;
        let n = self.commitment_number_of(commitment)?;
        let secret = self.secrets.per_commitment_secret(n);
        let point = per_commitment_point(&secret);
        let keys = self.commitment_keys(true, &point);
        let delay = self.their_limits.to_self_delay;
        let info = super::commitment::to_local_spend_info(&keys, delay);
        let leaf = super::commitment::to_local_leaf(&keys, delay);
        let spk = bitcoin::ScriptBuf::new_p2tr_tweaked(info.output_key());
        let vout = commitment
            .output
            .iter()
            .position(|o| o.script_pubkey == spk)
            .ok_or(ChannelError::NotRevoked("no to_local output of ours"))?;
        let out = commitment.output[vout].clone();
        let mut tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: OutPoint::new(commitment.compute_txid(), vout as u32),
                script_sig: bitcoin::ScriptBuf::new(),
                sequence: bitcoin::Sequence::from_height(delay),
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: out.value,
                script_pubkey: destination,
            }],
        };
        let vsize = (tx.weight().to_wu() + 2 + 1 + 65 + 34 + leaf.len() as u64 + 2).div_ceil(4);
        let fee = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
        tx.output[0].value = out
            .value
            .checked_sub(fee)
            .filter(|v| *v >= Amount::from_sat(330))
            .ok_or(ChannelError::NotRevoked("to_local cannot pay the fee"))?;
        let secp = Secp256k1::new();
        let key = Keypair::from_secret_key(
            &secp,
            &derive_privkey(&self.secrets.delayed_payment, &point),
        );
        let sighash = SighashCache::new(&tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(&[out]),
                bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript),
                TapSighashType::Default,
            )
            .map_err(|_| ChannelError::NotRevoked("sighash"))?;
        let sig = secp.sign_schnorr(&Message::from(sighash), &key);
        let control = info
            .control_block(&(leaf.clone(), LeafVersion::TapScript))
            .ok_or(ChannelError::NotRevoked("control block"))?;
        tx.input[0].witness =
            Witness::from_slice(&[sig.as_ref().to_vec(), leaf.to_bytes(), control.serialize()]);
        Ok(tx)
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

    /// Our latest commitment, fully signed (completes the MuSig2 signature with our nonce).
    pub fn signed_latest_commitment(
        &self,
    ) -> Result<(Transaction, Vec<Transaction>), ChannelError> {
        self.signed_latest_commitment_on(self.funding_outpoint)
    }

    /// Our latest commitment spending the live funding outpoint `outpoint`, fully signed.
    pub fn signed_latest_commitment_on(
        &self,
        outpoint: OutPoint,
    ) -> Result<(Transaction, Vec<Transaction>), ChannelError> {
        let n = self.our_commitment_number;
        let Some((primary_partial, primary_nonce, primary_htlc, state)) = &self.our_latest_sig
        else {
            return Err(ChannelError::WrongPhase(
                "no commitment signed by the other side yet",
            ));
        };
        let (their_partial, their_nonce, htlc_sigs) = if outpoint == self.funding_outpoint {
            (primary_partial, primary_nonce, primary_htlc)
        } else {
            let (p, nonce, h) =
                self.our_latest_other
                    .get(&outpoint)
                    .ok_or(ChannelError::WrongPhase(
                        "no commitment signed on that funding outpoint",
                    ))?;
            (p, nonce, h)
        };
        let point = per_commitment_point(&self.secrets.per_commitment_secret(n));
        let (mut tx, htlcs, keys) = self.commitment(true, n, state, &point, outpoint);
        let sighash = Factory::sighash(&tx, &self.funding);
        let (sec, our_nonce) = self.funding_key.deterministic_nonce(
            &self.secrets.funding,
            self.secrets.verification_seed(&outpoint, n),
        );
        let agg = aggregate_nonces(&[our_nonce, *their_nonce])?;
        let ours = self
            .funding_key
            .partial_sign(sec, &self.secrets.funding, &agg, &sighash)?;
        let sig = self
            .funding_key
            .aggregate(&agg, &sighash, &[ours, *their_partial])?;
        tx.input[0].witness = Witness::from_slice(&[sig.as_ref()]);
        let secp = Secp256k1::signing_only();
        let htlc_key = Keypair::from_secret_key(&secp, &derive_privkey(&self.secrets.htlc, &point));
        let mut second = Vec::new();
        for ((mut htx, spent, leaf), (their_sig, (_, h))) in self
            .htlc_txs(&tx, &htlcs, &keys, self.their_limits.to_self_delay)
            .into_iter()
            .zip(htlc_sigs.iter().zip(&htlcs))
        {
            let m = htlc_sighash(&htx, &spent, &leaf, TapSighashType::Default);
            let ours = secp.sign_schnorr_no_aux_rand(&Message::from_digest(m), &htlc_key);
            // The preimage of a received HTLC is added by the caller when it has it.
            let info = htlc_spend_info(&keys, h);
            htx.input[0].witness = htlc_witness(their_sig, &ours, None, &leaf, &info);
            second.push(htx);
        }
        Ok((tx, second))
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
