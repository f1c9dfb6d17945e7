//! Persisting one side of a channel: [`Channel::snapshot`] writes its state without any secret of
//! this side, [`Channel::restore`] reads it back with the secrets the caller re-derives from its
//! seed.
//!
//! The encoding is LDK's serialization framework, as in [`crate::codec`]: a version byte, the
//! fields, and a trailing TLV stream (empty in version 1) through which later versions may add
//! odd (optional) fields. Nothing secret of this side is written: not its base secrets, seed or
//! funding key, nor its per-commitment secrets (re-derived from the seed); its verification
//! nonces are written as public nonces only. The other side's revocation secrets are written:
//! they are what punishes a revoked commitment.
//!
//! What is read is checked before it is used: every list length before allocating, every enum
//! tag, every key, that each state's balances and HTLCs add up to the capacity, that the limits
//! are in their bounds, and that the secrets and the funding key given are this channel's.

use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{BigSize, Readable, Writeable, Writer};

use super::*;
use crate::codec::{read_extensions, read_list, read_script, tag, write_list, write_no_tlvs};
use crate::shachain::FIRST_INDEX;

/// The version of the encoding [`Channel::snapshot`] writes.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Most HTLCs one state holds: each side may have at most [`MAX_ACCEPTED_HTLCS`] pending.
const MAX_HTLCS: usize = 2 * MAX_ACCEPTED_HTLCS as usize;
/// Most entries of a list bounded by nothing but the channel's life (the states of every
/// commitment of the other side signed so far). Lengths are still checked against the input
/// before anything is allocated.
const MAX_COMMITMENTS: usize = u32::MAX as usize;
/// Most live or retired funding outpoints, and nonces or signatures kept per outpoint.
const MAX_FUNDINGS: usize = 1 << 16;

/// A snapshot refused by [`Channel::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// The bytes do not decode as a snapshot.
    #[error("the snapshot does not decode: {0}")]
    Decode(DecodeError),
    /// A version this code does not read.
    #[error("unknown snapshot version {0}")]
    UnknownVersion(u8),
    /// The snapshot decodes but does not describe a valid channel.
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(&'static str),
    /// The secrets given are not this side's (`what` differs).
    #[error("the secrets are not this channel side's: its {0} differs")]
    WrongSecrets(&'static str),
    /// The funding key given is not the channel output's.
    #[error("the funding key is not this channel output's")]
    WrongFundingKey,
    /// A key or nonce of the snapshot that MuSig2 refuses.
    #[error(transparent)]
    Musig(#[from] MusigError),
}

impl From<DecodeError> for SnapshotError {
    fn from(e: DecodeError) -> Self {
        SnapshotError::Decode(e)
    }
}

impl Writeable for Basepoints {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        (
            self.payment,
            self.delayed_payment,
            self.htlc,
            self.revocation,
        )
            .write(w)
    }
}

impl Readable for Basepoints {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let (payment, delayed_payment, htlc, revocation) = Readable::read(r)?;
        Ok(Basepoints {
            payment,
            delayed_payment,
            htlc,
            revocation,
        })
    }
}

impl Writeable for ChannelLimits {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.max_accepted_htlcs.write(w)?;
        self.max_htlc_value_in_flight_msat.write(w)?;
        self.htlc_minimum_msat.write(w)?;
        self.channel_reserve_msat.write(w)?;
        self.dust_limit.to_sat().write(w)?;
        self.to_self_delay.write(w)?;
        self.min_cltv_expiry_delta.write(w)?;
        self.max_cltv_expiry.write(w)?;
        self.max_to_self_delay.write(w)
    }
}

impl Readable for ChannelLimits {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(ChannelLimits {
            max_accepted_htlcs: Readable::read(r)?,
            max_htlc_value_in_flight_msat: Readable::read(r)?,
            htlc_minimum_msat: Readable::read(r)?,
            channel_reserve_msat: Readable::read(r)?,
            dust_limit: Amount::from_sat(Readable::read(r)?),
            to_self_delay: Readable::read(r)?,
            min_cltv_expiry_delta: Readable::read(r)?,
            max_cltv_expiry: Readable::read(r)?,
            max_to_self_delay: Readable::read(r)?,
        })
    }
}

impl Writeable for HtlcEntry {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        (
            self.offered_by_us,
            self.id,
            self.amount_msat,
            self.payment_hash,
            self.cltv_expiry,
        )
            .write(w)
    }
}

impl Readable for HtlcEntry {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let (offered_by_us, id, amount_msat, payment_hash, cltv_expiry) = Readable::read(r)?;
        Ok(HtlcEntry {
            offered_by_us,
            id,
            amount_msat,
            payment_hash,
            cltv_expiry,
        })
    }
}

/// Smallest encoding of an HTLC: flag, id, amount, hash, expiry.
const HTLC_LEN: usize = 1 + 8 + 8 + 32 + 4;

impl Writeable for State {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.ours_msat.write(w)?;
        self.theirs_msat.write(w)?;
        let htlcs: Vec<HtlcEntry> = self.htlcs.values().copied().collect();
        write_list(w, &htlcs)
    }
}

impl Readable for State {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let ours_msat = Readable::read(r)?;
        let theirs_msat = Readable::read(r)?;
        let htlcs: Vec<HtlcEntry> = read_list(r, HTLC_LEN, MAX_HTLCS)?;
        Ok(State {
            ours_msat,
            theirs_msat,
            htlcs: into_map(htlcs, |h| ((h.offered_by_us, h.id), h))?,
        })
    }
}

impl Writeable for Phase {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match self {
            Phase::Idle => 0u8,
            Phase::SentSignature {
                got_revocation: false,
            } => 1,
            Phase::SentSignature {
                got_revocation: true,
            } => 2,
            Phase::OweSignature => 3,
            Phase::AwaitingFinalRevocation => 4,
        }
        .write(w)
    }
}

impl Readable for Phase {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(match tag(r)? {
            0 => Phase::Idle,
            1 => Phase::SentSignature {
                got_revocation: false,
            },
            2 => Phase::SentSignature {
                got_revocation: true,
            },
            3 => Phase::OweSignature,
            4 => Phase::AwaitingFinalRevocation,
            _ => return Err(DecodeError::InvalidValue),
        })
    }
}

/// Their signatures of one commitment on one funding outpoint: partial signature, nonce, HTLC
/// signatures.
type CommitmentSigs = (PartialSig, PubNonce, Vec<Signature>);

fn write_sigs<W: Writer>(
    w: &mut W,
    partial: &PartialSig,
    nonce: &PubNonce,
    htlcs: &[Signature],
) -> io::Result<()> {
    partial.write(w)?;
    nonce.write(w)?;
    write_list(w, htlcs)
}

fn read_sigs<R: io::Read>(r: &mut R) -> Result<CommitmentSigs, DecodeError> {
    Ok((
        Readable::read(r)?,
        Readable::read(r)?,
        read_list(r, 64, MAX_HTLCS)?,
    ))
}

/// A map from a list written in key order: keys must strictly increase (a map has one
/// encoding, and no entry is silently dropped).
fn into_map<T, K: Ord + Copy, V>(
    items: Vec<T>,
    entry: impl Fn(T) -> (K, V),
) -> Result<BTreeMap<K, V>, DecodeError> {
    let mut map = BTreeMap::new();
    let mut last = None;
    for item in items {
        let (k, v) = entry(item);
        if last.is_some_and(|l| l >= k) {
            return Err(DecodeError::InvalidValue);
        }
        last = Some(k);
        map.insert(k, v);
    }
    Ok(map)
}

/// A map whose values are written each with its own writer (values of no `Writeable` type).
fn write_map<W: Writer, K: Writeable, V>(
    w: &mut W,
    map: &BTreeMap<K, V>,
    value: impl Fn(&mut W, &V) -> io::Result<()>,
) -> io::Result<()> {
    BigSize(map.len() as u64).write(w)?;
    for (k, v) in map {
        k.write(w)?;
        value(w, v)?;
    }
    Ok(())
}

/// Reads a map written by [`write_map`], at most `max` entries, keys strictly increasing.
fn read_map<R: io::Read, K: Readable + Ord + Copy, V>(
    r: &mut R,
    max: usize,
    value: impl Fn(&mut R) -> Result<V, DecodeError>,
) -> Result<BTreeMap<K, V>, DecodeError> {
    let n = BigSize::read(r)?.0;
    if n > max as u64 {
        return Err(DecodeError::InvalidValue);
    }
    let mut map = BTreeMap::new();
    let mut last: Option<K> = None;
    // One entry at a time: nothing is allocated ahead of what the input holds.
    for _ in 0..n {
        let k = K::read(r)?;
        if last.is_some_and(|l| l >= k) {
            return Err(DecodeError::InvalidValue);
        }
        last = Some(k);
        map.insert(k, value(r)?);
    }
    Ok(map)
}

/// The public part of a channel, as written: everything but this side's secrets and what is
/// recomputed from them.
struct Decoded {
    mine: Basepoints,
    our_funding: PublicKey,
    funding_output_key: bitcoin::XOnlyPublicKey,
    /// Our point of `our_commitment_number`: checks the seed given on restore.
    our_point: PublicKey,
    our_nonces: BTreeMap<(OutPoint, u64), PubNonce>,
    their: Basepoints,
    their_funding: PublicKey,
    limits: ChannelLimits,
    their_limits: ChannelLimits,
    funding: TxOut,
    funding_outpoint: OutPoint,
    other_fundings: Vec<OutPoint>,
    retired_fundings: Vec<OutPoint>,
    their_other_nonces: BTreeMap<(OutPoint, u64), PubNonce>,
    our_latest_other: BTreeMap<OutPoint, CommitmentSigs>,
    obscure: u64,
    committed: State,
    next: State,
    our_commitment_number: u64,
    their_commitment_number: u64,
    their_points: BTreeMap<u64, PublicKey>,
    their_nonces: BTreeMap<u64, PubNonce>,
    their_states: BTreeMap<u64, State>,
    their_secrets: SecretStore,
    our_latest_sig: Option<(CommitmentSigs, State)>,
    next_our_id: u64,
    next_their_id: u64,
    phase: Phase,
}

/// Writes the version-1 snapshot of a channel.
struct Snapshot<'a>(&'a Channel);

impl Writeable for Snapshot<'_> {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        let c = self.0;
        SNAPSHOT_VERSION.write(w)?;
        c.mine.write(w)?;
        c.secrets.funding.public_key().write(w)?;
        c.funding_key.output_key().serialize().write(w)?;
        c.our_point(c.our_commitment_number).write(w)?;
        write_map(w, &c.our_nonces, |w, n| n.bytes().write(w))?;
        c.their.write(w)?;
        c.their_funding_musig.to_public_key().inner.write(w)?;
        c.limits.write(w)?;
        c.their_limits.write(w)?;
        c.funding.value.to_sat().write(w)?;
        c.funding.script_pubkey.write(w)?;
        c.funding_outpoint.write(w)?;
        write_list(w, &c.other_fundings)?;
        write_list(w, &c.retired_fundings)?;
        write_map(w, &c.their_other_nonces, |w, n| n.write(w))?;
        write_map(w, &c.our_latest_other, |w, (p, n, h)| {
            write_sigs(w, p, n, h)
        })?;
        c.obscure.write(w)?;
        c.committed.write(w)?;
        c.next.write(w)?;
        c.our_commitment_number.write(w)?;
        c.their_commitment_number.write(w)?;
        write_map(w, &c.their_points, |w, p| p.write(w))?;
        write_map(w, &c.their_nonces, |w, n| n.write(w))?;
        write_map(w, &c.their_states, |w, s| s.write(w))?;
        c.their_secrets.write(w)?;
        match &c.our_latest_sig {
            None => 0u8.write(w)?,
            Some((partial, nonce, htlcs, state)) => {
                1u8.write(w)?;
                write_sigs(w, partial, nonce, htlcs)?;
                state.write(w)?;
            }
        }
        c.next_our_id.write(w)?;
        c.next_their_id.write(w)?;
        c.phase.write(w)?;
        write_no_tlvs(w)
    }
}

impl Decoded {
    /// Reads a snapshot after its version byte, to the end of the input.
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let nonce = |r: &mut R| PubNonce::read(r);
        let decoded = Decoded {
            mine: Readable::read(r)?,
            our_funding: Readable::read(r)?,
            funding_output_key: bitcoin::XOnlyPublicKey::from_slice(&<[u8; 32]>::read(r)?)
                .map_err(|_| DecodeError::InvalidValue)?,
            our_point: Readable::read(r)?,
            our_nonces: read_map(r, MAX_FUNDINGS, nonce)?,
            their: Readable::read(r)?,
            their_funding: Readable::read(r)?,
            limits: Readable::read(r)?,
            their_limits: Readable::read(r)?,
            funding: TxOut {
                value: Amount::from_sat(Readable::read(r)?),
                script_pubkey: read_script(r)?,
            },
            funding_outpoint: Readable::read(r)?,
            other_fundings: read_list(r, 36, MAX_FUNDINGS)?,
            retired_fundings: read_list(r, 36, MAX_FUNDINGS)?,
            their_other_nonces: read_map(r, MAX_FUNDINGS, nonce)?,
            our_latest_other: read_map(r, MAX_FUNDINGS, read_sigs)?,
            obscure: Readable::read(r)?,
            committed: Readable::read(r)?,
            next: Readable::read(r)?,
            our_commitment_number: Readable::read(r)?,
            their_commitment_number: Readable::read(r)?,
            their_points: read_map(r, MAX_COMMITMENTS, |r| PublicKey::read(r))?,
            their_nonces: read_map(r, MAX_COMMITMENTS, nonce)?,
            their_states: read_map(r, MAX_COMMITMENTS, |r| State::read(r))?,
            their_secrets: Readable::read(r)?,
            our_latest_sig: match tag(r)? {
                0 => None,
                1 => Some((read_sigs(r)?, State::read(r)?)),
                _ => return Err(DecodeError::InvalidValue),
            },
            next_our_id: Readable::read(r)?,
            next_their_id: Readable::read(r)?,
            phase: Readable::read(r)?,
        };
        read_extensions(r)?;
        Ok(decoded)
    }

    /// What a channel's state must satisfy whatever its history (so that nothing the channel
    /// then does with it overflows or fails an internal check).
    fn check(&self) -> Result<(), SnapshotError> {
        let capacity_msat = self.funding.value.to_sat().saturating_mul(1000);
        let total = |s: &State| {
            s.htlcs
                .values()
                .try_fold(s.ours_msat.checked_add(s.theirs_msat)?, |t, h| {
                    t.checked_add(h.amount_msat)
                })
        };
        let states = [&self.committed, &self.next]
            .into_iter()
            .chain(self.their_states.values())
            .chain(self.our_latest_sig.iter().map(|(_, s)| s));
        for s in states {
            if total(s) != Some(capacity_msat) {
                return Err(SnapshotError::Inconsistent(
                    "a state's balances and HTLCs do not add up to the capacity",
                ));
            }
        }
        self.their_limits
            .check(&self.limits, capacity_msat)
            .and_then(|()| self.limits.check(&self.their_limits, capacity_msat))
            .map_err(|_| SnapshotError::Inconsistent("limits out of their bounds"))?;
        if self.our_commitment_number >= FIRST_INDEX || self.their_commitment_number >= FIRST_INDEX
        {
            return Err(SnapshotError::Inconsistent(
                "a commitment number beyond the shachain",
            ));
        }
        if self.next_our_id == u64::MAX || self.next_their_id == u64::MAX {
            return Err(SnapshotError::Inconsistent("HTLC ids exhausted"));
        }
        Ok(())
    }
}

impl Channel {
    /// The channel's state as bytes, without any secret of this side (what a daemon persists).
    pub fn snapshot(&self) -> Vec<u8> {
        Snapshot(self).encode()
    }

    /// The channel saved by [`Channel::snapshot`], with this side's secrets (re-derived by the
    /// caller from its seed) and the channel output's MuSig2 key; refuses bytes that do not
    /// decode, and secrets or a key that do not match the snapshot.
    pub fn restore(
        bytes: &[u8],
        secrets: ChannelSecrets,
        funding_key: TweakedAggregateKey,
    ) -> Result<Channel, SnapshotError> {
        let mut r = bytes;
        let version = u8::read(&mut r)?;
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnknownVersion(version));
        }
        let d = Decoded::read(&mut r)?;
        d.check()?;
        let mine = secrets.basepoints();
        if mine != d.mine {
            return Err(SnapshotError::WrongSecrets("basepoints"));
        }
        if secrets.funding.public_key() != d.our_funding {
            return Err(SnapshotError::WrongSecrets("funding key"));
        }
        if funding_key.output_key() != d.funding_output_key {
            return Err(SnapshotError::WrongFundingKey);
        }
        // Our per-commitment secrets: the latest and the next, as the channel keeps them once
        // it has a commitment signed by the other side (none before).
        let n = d.our_commitment_number;
        let derive = |n| {
            let secret = secrets.per_commitment_secret(n);
            (secret, per_commitment_point(&secret))
        };
        let latest = derive(n);
        if latest.1 != d.our_point {
            return Err(SnapshotError::WrongSecrets("seed"));
        }
        let our_points = if n == 0 {
            BTreeMap::new()
        } else {
            BTreeMap::from([(n, latest), (n + 1, derive(n + 1))])
        };
        let our_nonces = d
            .our_nonces
            .iter()
            .map(|(k, nonce)| Ok((*k, ParsedNonce::parse(nonce)?)))
            .collect::<Result<_, MusigError>>()?;
        let their_funding_musig = CosignerKey::new(&BtcPublicKey::new(d.their_funding))?;
        let to_remote_scripts = (
            to_remote_script_of(&d.their.payment),
            to_remote_script_of(&mine.payment),
        );
        // A snapshot written before revoked states were kept apart holds them all: they are
        // moved apart, to be written once with the next step.
        let (current, revoked): (BTreeMap<u64, State>, BTreeMap<u64, State>) = d
            .their_states
            .into_iter()
            .partition(|(n, _)| *n >= d.their_commitment_number);
        Ok(Channel {
            funding_signer: MusigSigner::new(&secrets.funding),
            secrets,
            mine,
            their_funding_musig,
            to_remote_scripts,
            our_points,
            our_nonces,
            their: d.their,
            limits: d.limits,
            their_limits: d.their_limits,
            funding_key,
            funding: d.funding,
            funding_outpoint: d.funding_outpoint,
            other_fundings: d.other_fundings,
            retired_fundings: d.retired_fundings,
            their_other_nonces: d.their_other_nonces,
            our_latest_other: d.our_latest_other,
            obscure: d.obscure,
            committed: d.committed,
            next: d.next,
            our_commitment_number: d.our_commitment_number,
            their_commitment_number: d.their_commitment_number,
            their_points: d.their_points,
            their_nonces: d.their_nonces,
            their_states: current,
            revoked_states: std::sync::Arc::new(std::sync::Mutex::new(RevokedStates {
                states: revoked,
                written: None,
            })),
            their_secrets: d.their_secrets,
            our_latest_sig: d
                .our_latest_sig
                .map(|((partial, nonce, htlcs), state)| (partial, nonce, htlcs, state)),
            next_our_id: d.next_our_id,
            next_their_id: d.next_their_id,
            phase: d.phase,
        })
    }

    /// The states of their commitments revoked since the last
    /// [`Channel::revoked_states_written`] (commitment number, encoding), for the caller to
    /// write with the step that revoked them (then restored with
    /// [`Channel::restore_revoked_states`]).
    pub fn revoked_states_to_write(&self) -> Vec<(u64, Vec<u8>)> {
        let archive = self.revoked();
        archive
            .states
            .range(archive.written.map_or(0, |w| w + 1)..)
            .map(|(n, s)| (*n, s.encode()))
            .collect()
    }

    /// The states of all their revoked commitments kept (commitment number, encoding).
    pub fn revoked_states(&self) -> Vec<(u64, Vec<u8>)> {
        self.revoked()
            .states
            .iter()
            .map(|(n, s)| (*n, s.encode()))
            .collect()
    }

    /// Records that the states of their revoked commitments up to number `n` are written.
    pub fn revoked_states_written(&self, n: u64) {
        let mut archive = self.revoked();
        archive.written = Some(archive.written.map_or(n, |w| w.max(n)));
    }

    /// Adds the states of their revoked commitments read back from storage (as written).
    /// Refuses a state that does not decode, or whose balances and HTLCs do not add up to the
    /// capacity, and adds nothing then.
    pub fn restore_revoked_states(&self, rows: &[(u64, Vec<u8>)]) -> Result<(), SnapshotError> {
        let capacity_msat = self.funding.value.to_sat().saturating_mul(1000);
        let mut decoded = Vec::with_capacity(rows.len());
        for (n, bytes) in rows {
            let state = State::read(&mut &bytes[..])?;
            let mut total = state.ours_msat.checked_add(state.theirs_msat);
            for h in state.htlcs.values() {
                total = total.and_then(|t| t.checked_add(h.amount_msat));
            }
            if total != Some(capacity_msat) {
                return Err(SnapshotError::Inconsistent(
                    "a revoked state's balances and HTLCs do not add up to the capacity",
                ));
            }
            decoded.push((*n, state));
        }
        let mut archive = self.revoked();
        for (n, state) in decoded {
            archive.written = Some(archive.written.map_or(n, |w| w.max(n)));
            archive.states.entry(n).or_insert(state);
        }
        Ok(())
    }
}
