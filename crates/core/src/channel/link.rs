//! A leaf channel between two daemons: [`Channel`]'s lock-step rounds as three messages, with
//! turns, retransmission after a reconnection, and what to persist after each step.
//!
//! A round is `Propose` (the starter's updates and its signature of the other side's next
//! commitment), `Reply` (the other side's revocation and signature) and `Ack` (the starter's
//! revocation). Only one side may start a round at a time: the LSP (the *leader*) starts rounds
//! when it is idle; the client (the *follower*) asks for a turn (`TurnRequest`), and the leader
//! grants it (`TurnGrant`) when idle and starts nothing until the follower's `Propose` arrives.
//! So the two sides never sign concurrent rounds, and no signature is ever sent for a state that
//! is then thrown away.
//!
//! Every step that changes the channel returns `persist`: the daemon writes [`Link::snapshot`]
//! before it sends the step's messages. The last message sent is part of the snapshot: after a
//! reconnection (or a restart) each side sends it again ([`Link::connected`]), and the receiver
//! recognises a message it already took by its commitment numbers and ignores it. The leader
//! starts nothing after a reconnection until the follower's `Sync` says that the follower's
//! retransmission is in.
//!
//! A message that is refused leaves the link exactly as it was.
//!
//! Dual-state (a factory update moves the channel's output): each side adds the new outpoint
//! between rounds ([`Link::add_funding`]) and sends its verification nonce for it (`Funding`);
//! the leader starts nothing until the follower's nonce is in, then re-signs the current state
//! on every live outpoint. Every later round signs on all of them, until the leader retires one
//! (`Retire`, between rounds, on both sides at the same point of the sequence).

use std::collections::VecDeque;

use bitcoin::OutPoint;
use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{BigSize, Readable, Writeable, Writer};

use crate::channel::state::{
    Channel, ChannelError, ChannelSecrets, CommitmentSigned, FundingNonce, OutpointSignature,
    RevokeAndAck, SnapshotError, UpdateAddHtlc, UpdateFailHtlc, UpdateFulfillHtlc,
};
use crate::codec::{read_list, read_tlvs, write_list, write_no_tlvs, MAX_LIST};
use crate::musig::{PartialSig, PubNonce, TweakedAggregateKey};

/// Most updates one `Propose` carries (each side has at most 114 HTLCs pending).
pub const MAX_UPDATES: usize = 512;
/// Most intents a link queues.
pub const MAX_INTENTS: usize = 4096;

/// One update of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Offer an HTLC.
    Add(UpdateAddHtlc),
    /// Settle an HTLC the sender received.
    Fulfill(UpdateFulfillHtlc),
    /// Fail an HTLC the sender received.
    Fail(UpdateFailHtlc),
}

/// A message of a leaf channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMsg {
    /// Starts a round: the sender's updates and its signature of the receiver's commitment
    /// `commitment`.
    Propose {
        /// The receiver's commitment number this signs.
        commitment: u64,
        /// The sender's updates, in order.
        updates: Vec<Update>,
        /// The signature.
        signed: CommitmentSigned,
    },
    /// Answers a `Propose`: the revocation of the sender's commitment `revoked`, and its
    /// signature of the receiver's commitment `commitment`.
    Reply {
        /// The sender's commitment this revokes.
        revoked: u64,
        /// The revocation.
        revoke: RevokeAndAck,
        /// The receiver's commitment number this signs.
        commitment: u64,
        /// The signature.
        signed: CommitmentSigned,
    },
    /// Ends a round: the revocation of the sender's commitment `revoked`.
    Ack {
        /// The sender's commitment this revokes.
        revoked: u64,
        /// The revocation.
        revoke: RevokeAndAck,
    },
    /// Follower to leader: it has updates and asks for the next round.
    TurnRequest,
    /// Leader to follower: the next round is the follower's.
    TurnGrant,
    /// After a (re)connection: the sender has sent again what the receiver may have missed.
    Sync,
    /// Dual-state: the sender signs on one more funding outpoint; its nonce for it.
    Funding(FundingNonce),
    /// Leader to follower, between rounds: both stop signing on this funding outpoint.
    Retire(OutPoint),
}

impl LinkMsg {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            LinkMsg::Propose { .. } => "propose",
            LinkMsg::Reply { .. } => "reply",
            LinkMsg::Ack { .. } => "ack",
            LinkMsg::TurnRequest => "turn_request",
            LinkMsg::TurnGrant => "turn_grant",
            LinkMsg::Sync => "sync",
            LinkMsg::Funding(_) => "funding",
            LinkMsg::Retire(_) => "retire",
        }
    }
}

/// Something a daemon wants done on the channel in a coming round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Offer an HTLC.
    Add {
        /// Amount.
        amount_msat: u64,
        /// Payment hash.
        payment_hash: [u8; 32],
        /// Absolute expiry.
        cltv_expiry: u32,
    },
    /// Settle an HTLC the other side offered.
    Fulfill {
        /// The other side's id for it.
        id: u64,
        /// The preimage.
        preimage: [u8; 32],
    },
    /// Fail an HTLC the other side offered.
    Fail {
        /// The other side's id for it.
        id: u64,
    },
}

/// What a finished round (or a refused intent) means for the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An HTLC the other side offered is committed by both sides.
    Incoming(UpdateAddHtlc),
    /// An HTLC this side offered is committed by both sides.
    Offered(UpdateAddHtlc),
    /// The other side settled an HTLC this side offered (the round is complete).
    Fulfilled {
        /// This side's id for it.
        id: u64,
        /// Its payment hash.
        payment_hash: [u8; 32],
        /// The preimage.
        preimage: [u8; 32],
    },
    /// The other side failed an HTLC this side offered (the round is complete).
    Failed {
        /// This side's id for it.
        id: u64,
        /// Its payment hash.
        payment_hash: [u8; 32],
    },
    /// This side settled or failed an HTLC the other side offered (the round is complete).
    Resolved {
        /// The other side's id for it.
        id: u64,
        /// Whether it was fulfilled.
        fulfilled: bool,
    },
    /// An intent the channel refused (nothing was sent for it).
    Refused {
        /// The intent.
        intent: Intent,
        /// Why.
        error: ChannelError,
    },
}

/// The result of one step: what to persist, send and report.
#[derive(Debug, Default)]
pub struct Step {
    /// Whether the link changed: write [`Link::snapshot`] before sending `send`.
    pub persist: bool,
    /// Messages for the other side, in order.
    pub send: Vec<LinkMsg>,
    /// What happened.
    pub events: Vec<LinkEvent>,
}

impl Step {
    /// The preimages this step learned (the other side settled HTLCs we offered): a daemon
    /// writes them with the step.
    pub fn preimages(&self) -> Vec<[u8; 32]> {
        self.events
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Fulfilled { preimage, .. } => Some(*preimage),
                _ => None,
            })
            .collect()
    }

    fn merge(&mut self, other: Step) {
        self.persist |= other.persist;
        self.send.extend(other.send);
        self.events.extend(other.events);
    }
}

/// Why a link refused a message.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The channel refused it.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// It breaks the turn rules or the numbering.
    #[error("out of turn: {0}")]
    OutOfTurn(&'static str),
    /// Too many intents queued.
    #[error("too many operations queued on this channel ({0})")]
    Busy(usize),
}

/// Who updated what in the round under way, for the events at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoundUpdate {
    ours: bool,
    update: Update,
    /// For a fulfill or fail of an HTLC we offered: its payment hash.
    payment_hash: [u8; 32],
}

/// One side of a leaf channel between daemons.
#[derive(Debug, Clone)]
pub struct Link {
    channel: Channel,
    leader: bool,
    /// The last message sent in the current or latest round (sent again after a reconnection).
    outbox: Option<LinkMsg>,
    intents: VecDeque<Intent>,
    round: Vec<RoundUpdate>,
    // Turn state of the current connection (not persisted).
    connected: bool,
    /// Leader: the follower's `Sync` arrived on this connection.
    synced: bool,
    /// Leader: the follower asked for a turn. Follower: it asked.
    requested: bool,
    /// Leader: it granted the turn. Follower: it holds the turn.
    granted: bool,
    /// Leader: a round re-signing the current state on every live outpoint is due.
    resign: bool,
    /// Leader: funding outpoints to retire at the next moment between rounds.
    retiring: Vec<OutPoint>,
}

impl Link {
    /// A link over `channel`; `leader` for the LSP's side.
    pub fn new(channel: Channel, leader: bool) -> Self {
        Link {
            channel,
            leader,
            outbox: None,
            intents: VecDeque::new(),
            round: Vec::new(),
            connected: false,
            synced: false,
            requested: false,
            granted: false,
            resign: false,
            retiring: Vec::new(),
        }
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Whether this is the leader's (the LSP's) side.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Intents queued and not yet in a round.
    pub fn queued(&self) -> usize {
        self.intents.len()
    }

    /// Whether the link is between rounds with nothing queued.
    pub fn is_quiet(&self) -> bool {
        self.channel.is_idle() && self.intents.is_empty()
    }

    /// Whether the link may change funding outpoints now: between rounds, with no turn
    /// granted or held.
    pub fn between_rounds(&self) -> bool {
        self.channel.is_idle() && !self.granted
    }

    /// Dual-state: starts signing every commitment on `outpoint` too; the `Funding` message to
    /// send. Only [`Link::between_rounds`]. The leader starts no round until the follower's
    /// nonce is in, then re-signs the current state on every live outpoint.
    pub fn add_funding(&mut self, outpoint: OutPoint) -> Result<Step, LinkError> {
        if !self.between_rounds() {
            return Err(LinkError::OutOfTurn(
                "funding outpoints change between rounds only",
            ));
        }
        let nonce = self.channel.add_funding(outpoint)?;
        Ok(Step {
            persist: true,
            send: vec![LinkMsg::Funding(nonce)],
            events: Vec::new(),
        })
    }

    /// Leader: stop signing on `outpoint` at the next moment between rounds (both sides, with
    /// a `Retire`); call [`Link::poll`] after.
    pub fn retire_funding(&mut self, outpoint: OutPoint) -> Result<(), LinkError> {
        if !self.leader {
            return Err(LinkError::OutOfTurn(
                "only the LSP retires a funding outpoint",
            ));
        }
        if !self.retiring.contains(&outpoint) {
            self.retiring.push(outpoint);
        }
        Ok(())
    }

    /// Whether the first round is done (both sides hold a commitment): payments may flow.
    pub fn is_ready(&self) -> bool {
        self.channel.commitment_numbers().0 > 0 && self.channel.commitment_numbers().1 > 0
    }

    /// Drops a queued add of `payment_hash` not yet in a round; whether there was one.
    pub fn cancel_add(&mut self, payment_hash: &[u8; 32]) -> bool {
        let before = self.intents.len();
        self.intents
            .retain(|i| !matches!(i, Intent::Add { payment_hash: h, .. } if h == payment_hash));
        self.intents.len() != before
    }

    /// Whether `payment_hash` is queued to be added.
    pub fn add_queued(&self, payment_hash: &[u8; 32]) -> bool {
        self.intents
            .iter()
            .any(|i| matches!(i, Intent::Add { payment_hash: h, .. } if h == payment_hash))
    }

    /// Whether a fulfill or fail of the other side's HTLC `id` is queued.
    pub fn resolution_queued(&self, htlc: u64) -> bool {
        self.intents.iter().any(|i| match i {
            Intent::Fulfill { id, .. } | Intent::Fail { id } => *id == htlc,
            Intent::Add { .. } => false,
        })
    }

    /// Queues `intent` for a coming round; call [`Link::poll`] after.
    pub fn push(&mut self, intent: Intent) -> Result<(), LinkError> {
        if self.intents.len() >= MAX_INTENTS {
            return Err(LinkError::Busy(self.intents.len()));
        }
        self.intents.push_back(intent);
        Ok(())
    }

    /// The connection to the other side is up: what to send again, then (follower) `Sync`.
    pub fn connected(&mut self) -> Vec<LinkMsg> {
        self.connected = true;
        self.synced = false;
        self.requested = false;
        self.granted = false;
        let mut send: Vec<LinkMsg> = self.outbox.iter().cloned().collect();
        if !self.leader {
            send.push(LinkMsg::Sync);
        }
        send
    }

    /// The connection is down: turns are void.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.synced = false;
        self.requested = false;
        self.granted = false;
    }

    /// Starts what can be started now: a round with the queued intents (leader, or follower
    /// holding the turn), a turn request (follower), or a grant (leader).
    pub fn poll(&mut self, height: u32) -> Result<Step, LinkError> {
        if !self.connected || !self.channel.is_idle() {
            return Ok(Step::default());
        }
        if self.leader && self.synced && !self.granted {
            if let Some(step) = self.retire_next()? {
                return Ok(step);
            }
        }
        if !self.channel.fundings_awaiting_nonce().is_empty() {
            // Nothing can be signed until the other side's nonce on the new outpoint is in.
            return Ok(Step::default());
        }
        if self.leader {
            if !self.synced || self.granted {
                return Ok(Step::default());
            }
            if self.resign {
                return self.propose(height, true);
            }
            if self.requested {
                self.requested = false;
                self.granted = true;
                return Ok(Step {
                    send: vec![LinkMsg::TurnGrant],
                    ..Step::default()
                });
            }
            if self.intents.is_empty() {
                // The first round gives both sides their first commitment.
                if self.channel.commitment_numbers() == (0, 0) {
                    return self.propose(height, true);
                }
                return Ok(Step::default());
            }
            return self.propose(height, false);
        }
        if self.granted {
            self.granted = false;
            return self.propose(height, true);
        }
        if !self.intents.is_empty() && !self.requested {
            self.requested = true;
            return Ok(Step {
                send: vec![LinkMsg::TurnRequest],
                ..Step::default()
            });
        }
        Ok(Step::default())
    }

    /// Applies the queued intents and signs: a `Propose` (also without updates if `always`).
    fn propose(&mut self, height: u32, always: bool) -> Result<Step, LinkError> {
        let before = self.channel.clone();
        let mut step = Step::default();
        let mut updates = Vec::new();
        let mut round = Vec::new();
        while let Some(intent) = self.intents.pop_front() {
            if updates.len() == MAX_UPDATES {
                self.intents.push_front(intent);
                break;
            }
            let applied = match intent {
                Intent::Add {
                    amount_msat,
                    payment_hash,
                    cltv_expiry,
                } => self
                    .channel
                    .add_htlc(amount_msat, payment_hash, cltv_expiry, height)
                    .map(Update::Add),
                Intent::Fulfill { id, preimage } => {
                    self.channel.fulfill_htlc(id, preimage).map(Update::Fulfill)
                }
                Intent::Fail { id } => self.channel.fail_htlc(id).map(Update::Fail),
            };
            match applied {
                Ok(update) => {
                    updates.push(update);
                    round.push(RoundUpdate {
                        ours: true,
                        update,
                        payment_hash: [0; 32],
                    });
                }
                Err(error) => step.events.push(LinkEvent::Refused { intent, error }),
            }
        }
        if updates.is_empty() && !always {
            return Ok(step);
        }
        let commitment = self.channel.commitment_numbers().1 + 1;
        let signed = match self.channel.sign_commitment() {
            Ok(s) => s,
            Err(e) => {
                self.channel = before;
                return Err(e.into());
            }
        };
        self.round = round;
        self.resign = false;
        let msg = LinkMsg::Propose {
            commitment,
            updates,
            signed,
        };
        self.outbox = Some(msg.clone());
        step.persist = true;
        step.send.push(msg);
        Ok(step)
    }

    /// Takes a message of the other side at chain height `height`. On error nothing changed.
    pub fn receive(&mut self, msg: LinkMsg, height: u32) -> Result<Step, LinkError> {
        let mut step = match msg {
            LinkMsg::Propose {
                commitment,
                updates,
                signed,
            } => self.on_propose(commitment, &updates, &signed, height)?,
            LinkMsg::Reply {
                revoked,
                revoke,
                commitment,
                signed,
            } => self.on_reply(revoked, &revoke, commitment, &signed)?,
            LinkMsg::Ack { revoked, revoke } => self.on_ack(revoked, &revoke)?,
            LinkMsg::TurnRequest => {
                if !self.leader {
                    return Err(LinkError::OutOfTurn("only the client asks for a turn"));
                }
                self.requested = true;
                Step::default()
            }
            LinkMsg::TurnGrant => {
                if self.leader {
                    return Err(LinkError::OutOfTurn("only the LSP grants a turn"));
                }
                // Even unasked (a request from before a reconnection): the leader starts
                // nothing until our proposal, which may then be empty.
                self.requested = false;
                self.granted = true;
                Step::default()
            }
            LinkMsg::Sync => {
                if !self.leader {
                    return Err(LinkError::OutOfTurn("only the client sends sync"));
                }
                self.synced = true;
                Step::default()
            }
            LinkMsg::Funding(nonce) => {
                self.channel.receive_funding_nonce(&nonce)?;
                if self.leader {
                    self.resign = true;
                }
                Step {
                    persist: true,
                    ..Step::default()
                }
            }
            LinkMsg::Retire(outpoint) => {
                if self.leader {
                    return Err(LinkError::OutOfTurn(
                        "only the LSP retires a funding outpoint",
                    ));
                }
                if !self.between_rounds() {
                    return Err(LinkError::OutOfTurn("a retirement during a round"));
                }
                if !self.channel.funding_outpoints().contains(&outpoint) {
                    // Sent again, or never added here: nothing to do.
                    Step::default()
                } else {
                    self.channel.retire_funding(outpoint)?;
                    Step {
                        persist: true,
                        ..Step::default()
                    }
                }
            }
        };
        step.merge(self.poll(height)?);
        Ok(step)
    }

    /// Leader, between rounds: retires every queued outpoint on both sides.
    fn retire_next(&mut self) -> Result<Option<Step>, LinkError> {
        let mut step = Step::default();
        for outpoint in std::mem::take(&mut self.retiring) {
            let live = self.channel.funding_outpoints();
            if !live.contains(&outpoint) || live.len() == 1 {
                continue;
            }
            self.channel.retire_funding(outpoint)?;
            step.persist = true;
            step.send.push(LinkMsg::Retire(outpoint));
        }
        Ok(step.persist.then_some(step))
    }

    fn on_propose(
        &mut self,
        commitment: u64,
        updates: &[Update],
        signed: &CommitmentSigned,
        height: u32,
    ) -> Result<Step, LinkError> {
        let ours = self.channel.commitment_numbers().0;
        if commitment <= ours && !self.channel.awaits_reply() {
            // Sent again after a reconnection: taken already (our reply is sent again too).
            return Ok(Step::default());
        }
        if commitment != ours + 1 {
            return Err(LinkError::OutOfTurn("a proposal for another commitment"));
        }
        if !self.channel.is_idle() {
            return Err(LinkError::OutOfTurn("a proposal during a round"));
        }
        if self.leader && !self.granted && self.synced {
            return Err(LinkError::OutOfTurn("a proposal without a turn"));
        }
        if updates.len() > MAX_UPDATES {
            return Err(LinkError::OutOfTurn("too many updates in one round"));
        }
        let mut channel = self.channel.clone();
        let mut round = Vec::with_capacity(updates.len());
        for update in updates {
            let payment_hash = match update {
                Update::Add(add) => {
                    channel.receive_add(add, height)?;
                    add.payment_hash
                }
                Update::Fulfill(f) => {
                    let hash = channel.htlc(true, f.id).map(|h| h.payment_hash);
                    channel.receive_fulfill(f)?;
                    hash.unwrap_or_default()
                }
                Update::Fail(f) => {
                    let hash = channel.htlc(true, f.id).map(|h| h.payment_hash);
                    channel.receive_fail(f)?;
                    hash.unwrap_or_default()
                }
            };
            round.push(RoundUpdate {
                ours: false,
                update: *update,
                payment_hash,
            });
        }
        let revoked = ours;
        let revoke = channel.receive_commitment_signed(signed)?;
        let their_next = channel.commitment_numbers().1 + 1;
        let reply_sig = channel.sign_commitment()?;
        self.channel = channel;
        self.round = round;
        self.granted = false;
        let msg = LinkMsg::Reply {
            revoked,
            revoke,
            commitment: their_next,
            signed: reply_sig,
        };
        self.outbox = Some(msg.clone());
        Ok(Step {
            persist: true,
            send: vec![msg],
            events: Vec::new(),
        })
    }

    fn on_reply(
        &mut self,
        revoked: u64,
        revoke: &RevokeAndAck,
        commitment: u64,
        signed: &CommitmentSigned,
    ) -> Result<Step, LinkError> {
        let (ours, theirs) = self.channel.commitment_numbers();
        if !self.channel.awaits_reply() {
            if revoked < theirs && commitment <= ours {
                return Ok(Step::default());
            }
            return Err(LinkError::OutOfTurn("a reply to no proposal"));
        }
        if revoked != theirs || commitment != ours + 1 {
            return Err(LinkError::OutOfTurn("a reply for other commitments"));
        }
        let mut channel = self.channel.clone();
        channel.receive_revoke_and_ack(revoke)?;
        let ack = channel.receive_commitment_signed(signed)?;
        self.channel = channel;
        let msg = LinkMsg::Ack {
            revoked: ours,
            revoke: ack,
        };
        self.outbox = Some(msg.clone());
        Ok(Step {
            persist: true,
            send: vec![msg],
            events: self.finish_round(),
        })
    }

    fn on_ack(&mut self, revoked: u64, revoke: &RevokeAndAck) -> Result<Step, LinkError> {
        let theirs = self.channel.commitment_numbers().1;
        if !self.channel.awaits_final_revocation() {
            if revoked < theirs {
                return Ok(Step::default());
            }
            return Err(LinkError::OutOfTurn("an ack of no reply"));
        }
        if revoked != theirs {
            return Err(LinkError::OutOfTurn("an ack of another commitment"));
        }
        let mut channel = self.channel.clone();
        channel.receive_revoke_and_ack(revoke)?;
        self.channel = channel;
        self.outbox = None;
        Ok(Step {
            persist: true,
            send: Vec::new(),
            events: self.finish_round(),
        })
    }

    /// The round is complete on this side: what it committed.
    fn finish_round(&mut self) -> Vec<LinkEvent> {
        std::mem::take(&mut self.round)
            .into_iter()
            .map(|r| match (r.ours, r.update) {
                (false, Update::Add(add)) => LinkEvent::Incoming(add),
                (true, Update::Add(add)) => LinkEvent::Offered(add),
                (false, Update::Fulfill(f)) => LinkEvent::Fulfilled {
                    id: f.id,
                    payment_hash: r.payment_hash,
                    preimage: f.preimage,
                },
                (false, Update::Fail(f)) => LinkEvent::Failed {
                    id: f.id,
                    payment_hash: r.payment_hash,
                },
                (true, Update::Fulfill(f)) => LinkEvent::Resolved {
                    id: f.id,
                    fulfilled: true,
                },
                (true, Update::Fail(f)) => LinkEvent::Resolved {
                    id: f.id,
                    fulfilled: false,
                },
            })
            .collect()
    }

    /// The link as bytes: the channel's snapshot (no secret of this side), the last message
    /// sent, the queued intents and the round under way.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let write = |w: &mut Vec<u8>| -> Result<(), io::Error> {
            1u8.write(w)?;
            self.leader.write(w)?;
            self.channel.snapshot().write(w)?;
            match &self.outbox {
                None => 0u8.write(w)?,
                Some(m) => {
                    1u8.write(w)?;
                    // Length-prefixed: a message's trailing TLV stream runs to the end.
                    m.encode().write(w)?;
                }
            }
            let intents: Vec<Intent> = self.intents.iter().copied().collect();
            write_list(w, &intents)?;
            write_list(w, &self.round)?;
            write_no_tlvs(w)
        };
        write(&mut out).expect("writing to a vector cannot fail");
        out
    }

    /// The link saved by [`Link::snapshot`], with this side's channel secrets and the channel
    /// output's key; disconnected.
    pub fn restore(
        bytes: &[u8],
        secrets: ChannelSecrets,
        funding_key: TweakedAggregateKey,
    ) -> Result<Link, SnapshotError> {
        let r = &mut &bytes[..];
        let decoded = (|| -> Result<_, DecodeError> {
            let version: u8 = Readable::read(r)?;
            if version != 1 {
                return Err(DecodeError::UnknownVersion);
            }
            let leader: bool = Readable::read(r)?;
            let channel: Vec<u8> = Readable::read(r)?;
            let outbox = match u8::read(r)? {
                0 => None,
                1 => Some(crate::codec::decode::<LinkMsg>(&Vec::<u8>::read(r)?)?),
                _ => return Err(DecodeError::InvalidValue),
            };
            let intents: Vec<Intent> = read_list(r, 9, MAX_INTENTS)?;
            let round: Vec<RoundUpdate> = read_list(r, 41, MAX_UPDATES)?;
            read_tlvs(r)?;
            Ok((leader, channel, outbox, intents, round))
        })();
        let (leader, channel, outbox, intents, round) = decoded.map_err(SnapshotError::Decode)?;
        let channel = Channel::restore(&channel, secrets, funding_key)?;
        Ok(Link {
            channel,
            leader,
            outbox,
            intents: intents.into(),
            round,
            connected: false,
            synced: false,
            requested: false,
            granted: false,
            resign: false,
            retiring: Vec::new(),
        })
    }
}

// ---- encoding ----

fn write_outpoint<W: Writer>(w: &mut W, o: &OutPoint) -> Result<(), io::Error> {
    use bitcoin::hashes::Hash;
    o.txid.to_byte_array().write(w)?;
    o.vout.write(w)
}

fn read_outpoint<R: io::Read>(r: &mut R) -> Result<OutPoint, DecodeError> {
    use bitcoin::hashes::Hash;
    Ok(OutPoint {
        txid: bitcoin::Txid::from_byte_array(Readable::read(r)?),
        vout: Readable::read(r)?,
    })
}

/// Most HTLC signatures one commitment carries (both sides' HTLCs).
const MAX_HTLC_SIGS: usize = 2 * crate::channel::state::MAX_ACCEPTED_HTLCS as usize;
/// Most other live funding outpoints a commitment is signed for.
const MAX_OTHERS: usize = 8;

impl Writeable for UpdateAddHtlc {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.id.write(w)?;
        self.amount_msat.write(w)?;
        self.payment_hash.write(w)?;
        self.cltv_expiry.write(w)
    }
}

impl Readable for UpdateAddHtlc {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(UpdateAddHtlc {
            id: Readable::read(r)?,
            amount_msat: Readable::read(r)?,
            payment_hash: Readable::read(r)?,
            cltv_expiry: Readable::read(r)?,
        })
    }
}

impl Writeable for Update {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match self {
            Update::Add(a) => {
                0u8.write(w)?;
                a.write(w)
            }
            Update::Fulfill(f) => {
                1u8.write(w)?;
                f.id.write(w)?;
                f.preimage.write(w)
            }
            Update::Fail(f) => {
                2u8.write(w)?;
                f.id.write(w)
            }
        }
    }
}

impl Readable for Update {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(match u8::read(r)? {
            0 => Update::Add(Readable::read(r)?),
            1 => Update::Fulfill(UpdateFulfillHtlc {
                id: Readable::read(r)?,
                preimage: Readable::read(r)?,
            }),
            2 => Update::Fail(UpdateFailHtlc {
                id: Readable::read(r)?,
            }),
            _ => return Err(DecodeError::InvalidValue),
        })
    }
}

impl Writeable for Intent {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match *self {
            Intent::Add {
                amount_msat,
                payment_hash,
                cltv_expiry,
            } => {
                0u8.write(w)?;
                Update::Add(UpdateAddHtlc {
                    id: 0,
                    amount_msat,
                    payment_hash,
                    cltv_expiry,
                })
                .write(w)
            }
            Intent::Fulfill { id, preimage } => {
                1u8.write(w)?;
                Update::Fulfill(UpdateFulfillHtlc { id, preimage }).write(w)
            }
            Intent::Fail { id } => {
                2u8.write(w)?;
                Update::Fail(UpdateFailHtlc { id }).write(w)
            }
        }
    }
}

impl Readable for Intent {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let tag = u8::read(r)?;
        Ok(match (tag, Update::read(r)?) {
            (0, Update::Add(a)) => Intent::Add {
                amount_msat: a.amount_msat,
                payment_hash: a.payment_hash,
                cltv_expiry: a.cltv_expiry,
            },
            (1, Update::Fulfill(f)) => Intent::Fulfill {
                id: f.id,
                preimage: f.preimage,
            },
            (2, Update::Fail(f)) => Intent::Fail { id: f.id },
            _ => return Err(DecodeError::InvalidValue),
        })
    }
}

impl Writeable for RoundUpdate {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.ours.write(w)?;
        self.update.write(w)?;
        self.payment_hash.write(w)
    }
}

impl Readable for RoundUpdate {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(RoundUpdate {
            ours: Readable::read(r)?,
            update: Readable::read(r)?,
            payment_hash: Readable::read(r)?,
        })
    }
}

impl Writeable for OutpointSignature {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        write_outpoint(w, &self.outpoint)?;
        self.partial_sig.write(w)?;
        self.nonce.write(w)?;
        write_list(w, &self.htlc_signatures)
    }
}

impl Readable for OutpointSignature {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(OutpointSignature {
            outpoint: read_outpoint(r)?,
            partial_sig: PartialSig::read(r)?,
            nonce: PubNonce::read(r)?,
            htlc_signatures: read_list(r, 64, MAX_HTLC_SIGS)?,
        })
    }
}

impl Writeable for CommitmentSigned {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.partial_sig.write(w)?;
        self.nonce.write(w)?;
        write_list(w, &self.htlc_signatures)?;
        write_list(w, &self.others)
    }
}

impl Readable for CommitmentSigned {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(CommitmentSigned {
            partial_sig: PartialSig::read(r)?,
            nonce: PubNonce::read(r)?,
            htlc_signatures: read_list(r, 64, MAX_HTLC_SIGS)?,
            others: read_list(r, 36 + 32 + 66 + 1, MAX_OTHERS)?,
        })
    }
}

impl Writeable for RevokeAndAck {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.per_commitment_secret.write(w)?;
        self.next_point.write(w)?;
        self.next_nonce.write(w)?;
        BigSize(self.next_other_nonces.len() as u64).write(w)?;
        for (o, n) in &self.next_other_nonces {
            write_outpoint(w, o)?;
            n.write(w)?;
        }
        Ok(())
    }
}

impl Readable for RevokeAndAck {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let per_commitment_secret = Readable::read(r)?;
        let next_point = Readable::read(r)?;
        let next_nonce = PubNonce::read(r)?;
        let n = BigSize::read(r)?.0;
        if n > MAX_OTHERS as u64 {
            return Err(DecodeError::InvalidValue);
        }
        let mut next_other_nonces = Vec::with_capacity(n as usize);
        for _ in 0..n {
            next_other_nonces.push((read_outpoint(r)?, PubNonce::read(r)?));
        }
        Ok(RevokeAndAck {
            per_commitment_secret,
            next_point,
            next_nonce,
            next_other_nonces,
        })
    }
}

impl Writeable for LinkMsg {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match self {
            LinkMsg::Propose {
                commitment,
                updates,
                signed,
            } => {
                0u8.write(w)?;
                commitment.write(w)?;
                write_list(w, updates)?;
                signed.write(w)?;
            }
            LinkMsg::Reply {
                revoked,
                revoke,
                commitment,
                signed,
            } => {
                1u8.write(w)?;
                revoked.write(w)?;
                revoke.write(w)?;
                commitment.write(w)?;
                signed.write(w)?;
            }
            LinkMsg::Ack { revoked, revoke } => {
                2u8.write(w)?;
                revoked.write(w)?;
                revoke.write(w)?;
            }
            LinkMsg::TurnRequest => 3u8.write(w)?,
            LinkMsg::TurnGrant => 4u8.write(w)?,
            LinkMsg::Sync => 5u8.write(w)?,
            LinkMsg::Funding(n) => {
                6u8.write(w)?;
                write_outpoint(w, &n.outpoint)?;
                n.commitment.write(w)?;
                n.nonce.write(w)?;
            }
            LinkMsg::Retire(o) => {
                7u8.write(w)?;
                write_outpoint(w, o)?;
            }
        }
        write_no_tlvs(w)
    }
}

impl Readable for LinkMsg {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let msg = match u8::read(r)? {
            0 => LinkMsg::Propose {
                commitment: Readable::read(r)?,
                updates: read_list(r, 9, MAX_UPDATES.min(MAX_LIST))?,
                signed: Readable::read(r)?,
            },
            1 => LinkMsg::Reply {
                revoked: Readable::read(r)?,
                revoke: Readable::read(r)?,
                commitment: Readable::read(r)?,
                signed: Readable::read(r)?,
            },
            2 => LinkMsg::Ack {
                revoked: Readable::read(r)?,
                revoke: Readable::read(r)?,
            },
            3 => LinkMsg::TurnRequest,
            4 => LinkMsg::TurnGrant,
            5 => LinkMsg::Sync,
            6 => LinkMsg::Funding(FundingNonce {
                outpoint: read_outpoint(r)?,
                commitment: Readable::read(r)?,
                nonce: PubNonce::read(r)?,
            }),
            7 => LinkMsg::Retire(read_outpoint(r)?),
            _ => return Err(DecodeError::InvalidValue),
        };
        read_tlvs(r)?;
        Ok(msg)
    }
}

/// What each side of a new leaf channel tells the other: its announcement and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOffer {
    /// Its basepoints, funding key, first points and first verification nonce.
    pub announcement: crate::channel::state::ChannelAnnouncement,
    /// The limits it imposes.
    pub limits: crate::channel::state::ChannelLimits,
}

impl Writeable for ChannelOffer {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        let a = &self.announcement;
        a.basepoints.payment.write(w)?;
        a.basepoints.delayed_payment.write(w)?;
        a.basepoints.htlc.write(w)?;
        a.basepoints.revocation.write(w)?;
        a.funding_key.write(w)?;
        a.points[0].write(w)?;
        a.points[1].write(w)?;
        a.nonce.write(w)?;
        let l = &self.limits;
        l.max_accepted_htlcs.write(w)?;
        l.max_htlc_value_in_flight_msat.write(w)?;
        l.htlc_minimum_msat.write(w)?;
        l.channel_reserve_msat.write(w)?;
        l.dust_limit.to_sat().write(w)?;
        l.to_self_delay.write(w)?;
        l.min_cltv_expiry_delta.write(w)?;
        l.max_cltv_expiry.write(w)?;
        l.max_to_self_delay.write(w)
    }
}

impl Readable for ChannelOffer {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        use crate::channel::state::{Basepoints, ChannelAnnouncement, ChannelLimits};
        let announcement = ChannelAnnouncement {
            basepoints: Basepoints {
                payment: Readable::read(r)?,
                delayed_payment: Readable::read(r)?,
                htlc: Readable::read(r)?,
                revocation: Readable::read(r)?,
            },
            funding_key: Readable::read(r)?,
            points: [Readable::read(r)?, Readable::read(r)?],
            nonce: PubNonce::read(r)?,
        };
        crate::musig::check_pub_nonce(&announcement.nonce)
            .map_err(|_| DecodeError::InvalidValue)?;
        let limits = ChannelLimits {
            max_accepted_htlcs: Readable::read(r)?,
            max_htlc_value_in_flight_msat: Readable::read(r)?,
            htlc_minimum_msat: Readable::read(r)?,
            channel_reserve_msat: Readable::read(r)?,
            dust_limit: bitcoin::Amount::from_sat(Readable::read(r)?),
            to_self_delay: Readable::read(r)?,
            min_cltv_expiry_delta: Readable::read(r)?,
            max_cltv_expiry: Readable::read(r)?,
            max_to_self_delay: Readable::read(r)?,
        };
        Ok(ChannelOffer {
            announcement,
            limits,
        })
    }
}
