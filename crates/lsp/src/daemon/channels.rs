//! The LSP's leaf channels and its router.
//!
//! Opening: once a factory is live on the LSP's chain, each connected member is offered its
//! leaf channel (`open_channel`: the LSP's announcement and limits, derived from its seed, so
//! the same offer after a restart); the member answers with its own (`accept_channel`); the LSP
//! records the channel and starts the first round. The capacity starts on the LSP's side.
//!
//! Rounds: [`Link`] (lock-step rounds, turns, retransmission). Every step that changes a link is
//! written to the store before its messages leave; a step refused by the link changes nothing.
//!
//! Routing: an invoice the LSP issued for a client (`invoice_request`) records the payee. An
//! HTLC from a payer is forwarded only once it is committed on the payer's channel; the payee's
//! HTLC carries the same hash, `FORWARD_DELTA` blocks less. The LSP learns the preimage only
//! when the payee settles, after the LSP's HTLC to it is committed (it cannot take the payment
//! before paying it on); it records the preimage, then settles the payer's HTLC. A forward the
//! payee's channel refuses, or that the payee fails, is failed back, and the invoice may be paid
//! again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::Chain;
use superscalar_core::advance::FactoryState;
use superscalar_core::ceremony::SignedTx as CoreSignedTx;
use superscalar_core::channel::deadlines::DEFAULT_MARGIN_BLOCKS;
use superscalar_core::channel::link::{ChannelOffer, Intent, Link, LinkEvent, LinkMsg, Step};
use superscalar_core::channel::state::{Channel, ChannelLimits, ChannelSecrets, ChannelSetup};
use superscalar_core::channel::ChannelRef;
use superscalar_core::codec::decode;
use superscalar_core::{ClientId, Factory, FactoryId, FactoryParams, Signer, Slot, TxKind};
use superscalar_store::{
    convert, ChannelId, ChannelRecord, CommitmentNumber, FactoryStatus, Invoice, InvoiceDirection,
    InvoiceStatus, KeyIndex, PaymentHash, Preimage,
};
use superscalar_wire::invoice::{issue, InvoiceTerms};
use superscalar_wire::messages::{ChannelOpen, ChannelStep, InvoiceReply, InvoiceRequest, Message};

use super::{Lsp, FUNDING_LABEL};

/// Blocks the LSP keeps between the expiry of the HTLC it forwards and the one it receives.
pub const FORWARD_DELTA: u32 = 12;
/// How long an unanswered channel offer waits before it is made again.
const OFFER_RETRY: Duration = Duration::from_secs(3);
/// How long a channel that cannot be offered (its factory's funding spent, say) waits before
/// the next attempt.
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// How long an operator's payment waits for its outcome before the API answers "pending".
const PAY_WAIT: Duration = Duration::from_secs(60);

/// One channel of the LSP with a client: its leaf channel, or one the client bought.
pub(super) struct Leaf {
    factory: FactoryId,
    client: u32,
    peer: PublicKey,
    id: ChannelId,
    pub(super) channel: ChannelRef,
    /// Whether payments may use it: a sold channel opens on the output of the update that
    /// sells it, and carries payments once that update completed.
    pub(super) usable: bool,
    pub(super) link: Link,
}

impl Leaf {
    /// The client's index in its factory.
    pub(super) fn client_index(&self) -> u32 {
        self.client
    }

    /// The channel's id in the store.
    pub(super) fn id(&self) -> ChannelId {
        self.id
    }
}

/// An `open_channel` sent and not yet answered.
pub(super) struct Offer {
    client: u32,
    channel: ChannelRef,
    setup: ChannelSetup,
    secrets: ChannelSecrets,
    limits: ChannelLimits,
    key_index: KeyIndex,
    sent: Instant,
}

/// A payment the operator started, waiting for its outcome.
pub(super) struct OperatorPayment {
    reply: Option<superscalar_api::Request>,
    started: Instant,
}

/// The LSP's channels.
#[derive(Default)]
pub(super) struct Channels {
    pub(super) leaves: HashMap<Key, Leaf>,
    pub(super) offers: HashMap<Key, Offer>,
    /// Offers that could not be made, and when: tried again after `REFUSED_RETRY`.
    failed_offers: HashMap<Key, Instant>,
    /// Live factories' state as the LSP signed it (for the channels' outpoints and keys).
    pub(super) states: HashMap<FactoryId, (Arc<Factory>, FactoryState, KeyIndex)>,
    payments: HashMap<[u8; 32], OperatorPayment>,
    /// The chain height seen last.
    pub(super) tip: u32,
    /// Factories whose channels carry no new payment: a cooperative close is being signed or
    /// was recorded (see `close`).
    pub(super) frozen: std::collections::HashSet<FactoryId>,
}

/// A channel: its factory, its client's node id, and which of the client's channels.
pub(super) type Key = (FactoryId, PublicKey, ChannelRef);

impl Lsp {
    /// The factory's state from the store (cached): its signed transactions, as the LSP.
    pub(super) fn factory_state(
        &mut self,
        id: FactoryId,
    ) -> Result<&(Arc<Factory>, FactoryState, KeyIndex), String> {
        if !self.channels.states.contains_key(&id) {
            let record = self
                .store
                .factory(convert::factory_id(id))
                .map_err(|e| e.to_string())?
                .ok_or("no such factory")?;
            let params: FactoryParams = decode(&record.params).map_err(|e| format!("{e:?}"))?;
            let factory = Arc::new(Factory::new(params).map_err(|e| e.to_string())?);
            let funding = record.funding.ok_or("no funding outpoint")?;
            let txs = self
                .store
                .signed_txs(record.id)
                .map_err(|e| e.to_string())?;
            // Each transaction spends an output of the funding or of another one of them.
            let by_txid: HashMap<bitcoin::Txid, &bitcoin::Transaction> =
                txs.iter().map(|t| (t.tx.compute_txid(), &t.tx)).collect();
            let signed = txs
                .iter()
                .filter(|t| !matches!(t.label.as_str(), FUNDING_LABEL | super::CLOSE_LABEL))
                .map(|t| {
                    let kind: TxKind = t.label.as_str().parse().map_err(|e| format!("{e}"))?;
                    let prev =
                        t.tx.input
                            .first()
                            .map(|i| i.previous_output)
                            .ok_or("a transaction without input")?;
                    let spent = by_txid
                        .get(&prev.txid)
                        .and_then(|p| p.output.get(prev.vout as usize))
                        .cloned()
                        .ok_or_else(|| format!("{kind}: the output it spends is unknown"))?;
                    Ok(CoreSignedTx {
                        kind,
                        tx: t.tx.clone(),
                        spent,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let stock = self
                .keys
                .stock_revocation_seed(record.key_index)
                .map_err(|e| e.to_string())?;
            let secrets = superscalar_core::revocation::StockSecrets::new(*stock);
            let stored = self
                .store
                .latest_factory_state(record.id, superscalar_store::Party::Lsp)
                .map_err(|e| e.to_string())?;
            let state = match stored {
                // Version 0 holds the members; later versions the state after each update.
                Some((v, bytes)) if v > 0 => {
                    let mut st = FactoryState::restore(Arc::clone(&factory), &bytes)
                        .map_err(|e| format!("factory {id}: stored state: {e}"))?
                        .with_secrets(secrets);
                    // An update interrupted by a restart is abandoned: its nonces are gone.
                    st.abandon();
                    if st.snapshot() != bytes {
                        self.store
                            .append_factory_state(
                                record.id,
                                superscalar_store::Party::Lsp,
                                v + 1,
                                &st.snapshot(),
                            )
                            .map_err(|e| e.to_string())?;
                    }
                    st
                }
                _ => FactoryState::new(Arc::clone(&factory), funding, Signer::Lsp, signed)
                    .with_secrets(secrets),
            };
            self.channels
                .states
                .insert(id, (factory, state, record.key_index));
        }
        Ok(&self.channels.states[&id])
    }

    /// Loads the stored channels of the signed and live factories.
    pub(super) fn recover_channels(&mut self) -> Result<(), String> {
        let ids: Vec<(FactoryId, Vec<PublicKey>)> = self
            .factories
            .iter()
            .map(|(id, f)| (*id, f.members.clone()))
            .collect();
        for (id, members) in ids {
            let records = self
                .store
                .channels(convert::factory_id(id))
                .map_err(|e| e.to_string())?;
            if records.is_empty() {
                continue;
            }
            let (factory, st, key_index) = self.factory_state(id)?.clone_parts();
            let sales: Vec<u32> = st.sales().iter().map(|s| s.buyer.0).collect();
            for record in records {
                let leaf = (0..members.len() as u32)
                    .find(|c| convert::channel_id(id, *c) == record.id)
                    .map(|c| (c, ChannelRef::Leaf));
                let sold = || {
                    (0..sales.len() as u32)
                        .map(|j| (sales[j as usize], ChannelRef::Sold(j)))
                        .find(|(c, ch)| convert::channel_id_of(id, *c, *ch) == record.id)
                };
                let Some((client, channel)) = leaf.or_else(sold) else {
                    // The channel of a sale that never completed (abandoned at the restart):
                    // it never carried a payment.
                    self.store
                        .remove_channel(record.id)
                        .map_err(|e| e.to_string())?;
                    tracing::info!("factory {id}: the channel of an abandoned sale is forgotten");
                    continue;
                };
                let secrets = self
                    .keys
                    .channel_secrets_of(key_index, client, channel)
                    .map_err(|e| e.to_string())?;
                let key = factory
                    .signing_key(Slot::Channel(ClientId(client)))
                    .map_err(|e| e.to_string())?;
                let link = Link::restore(&record.state, secrets, key)
                    .map_err(|e| format!("{channel} channel of client {client} in {id}: {e}"))?;
                let revoked = self
                    .store
                    .revoked_states(record.id)
                    .map_err(|e| e.to_string())?;
                link.channel()
                    .restore_revoked_states(&revoked)
                    .map_err(|e| format!("{channel} channel of client {client} in {id}: {e}"))?;
                let peer = members[client as usize];
                self.channels.leaves.insert(
                    (id, peer, channel),
                    Leaf {
                        factory: id,
                        client,
                        peer,
                        id: record.id,
                        channel,
                        usable: true,
                        link,
                    },
                );
            }
        }
        // Channels sign only where the factory state may put them (an update interrupted by
        // the restart is abandoned).
        for id in self.factories.keys().copied().collect::<Vec<_>>() {
            if self.channels.states.contains_key(&id) {
                self.reconcile_fundings(id);
            }
        }
        // Forwards interrupted by the restart go on.
        self.reconcile_forwards();
        Ok(())
    }

    /// Offers a leaf channel to every connected member of a live factory that has none.
    pub(super) fn offer_channels(&mut self) {
        let live: Vec<(FactoryId, Vec<PublicKey>)> = self
            .factories
            .iter()
            .filter(|(id, f)| f.status == FactoryStatus::Live && !self.channels.frozen.contains(id))
            .map(|(id, f)| (*id, f.members.clone()))
            .collect();
        for (id, members) in live {
            for (client, peer) in members.iter().enumerate() {
                let key = (id, *peer, ChannelRef::Leaf);
                let fresh = self
                    .channels
                    .offers
                    .get(&key)
                    .is_some_and(|o| o.sent.elapsed() < OFFER_RETRY)
                    || self
                        .channels
                        .failed_offers
                        .get(&key)
                        .is_some_and(|t| t.elapsed() < REFUSED_RETRY);
                if self.channels.leaves.contains_key(&key)
                    || fresh
                    || !self.transport.is_connected(peer)
                {
                    continue;
                }
                match self.offer(id, client as u32) {
                    Ok((offer, msg)) => {
                        self.channels.offers.insert(key, offer);
                        self.send(*peer, msg);
                    }
                    Err(e) => {
                        let first = self
                            .channels
                            .failed_offers
                            .insert(key, Instant::now())
                            .is_none();
                        if first {
                            tracing::warn!("factory {id}: no channel for client {client}: {e}");
                        } else {
                            tracing::debug!("factory {id}: no channel for client {client}: {e}");
                        }
                    }
                }
            }
        }
    }

    fn offer(&mut self, id: FactoryId, client: u32) -> Result<(Offer, Message), String> {
        let (factory, state, key_index) = self.factory_state(id)?.clone_parts();
        let funding = state.funding();
        let coin = self
            .chain(|c| c.get_utxo(&funding))
            .map_err(|e| e.to_string())?
            .ok_or("the funding output is spent or unconfirmed")?;
        let mut state = state;
        state
            .confirm_funding(Some(&coin.txout), Some(coin.height))
            .map_err(|e| e.to_string())?;
        let setup = state
            .leaf_channel_setup(ClientId(client), true)
            .map_err(|e| e.to_string())?;
        self.channel_offer(&factory, key_index, client, ChannelRef::Leaf, setup)
    }

    /// The LSP's `open_channel` for channel `channel` of `client` on `setup`.
    pub(super) fn channel_offer(
        &self,
        factory: &Factory,
        key_index: KeyIndex,
        client: u32,
        channel: ChannelRef,
        setup: ChannelSetup,
    ) -> Result<(Offer, Message), String> {
        let id = factory.params().id;
        let limits = ChannelLimits::for_factory(factory, self.channels.tip, DEFAULT_MARGIN_BLOCKS)
            .map_err(|e| e.to_string())?;
        let secrets = self
            .keys
            .channel_secrets_of(key_index, client, channel)
            .map_err(|e| e.to_string())?;
        let announcement =
            Channel::announcement(&secrets, &setup.funding_key, setup.funding_outpoint);
        let msg = Message::OpenChannel(Box::new(ChannelOpen {
            factory: id,
            channel,
            offer: ChannelOffer {
                announcement,
                limits,
            },
        }));
        Ok((
            Offer {
                client,
                channel,
                setup,
                secrets,
                limits,
                key_index,
                sent: Instant::now(),
            },
            msg,
        ))
    }

    /// A member accepts its leaf channel.
    pub(super) fn on_accept_channel(&mut self, peer: PublicKey, open: ChannelOpen) {
        let key = (open.factory, peer, open.channel);
        if self.channels.leaves.contains_key(&key) {
            return; // sent again: the channel exists
        }
        let Some(offer) = self.channels.offers.remove(&key) else {
            return self.refuse(peer, Some(open.factory), "no channel was offered".into());
        };
        let channel = match Channel::new(
            offer.setup,
            offer.secrets,
            offer.limits,
            open.offer.announcement,
            open.offer.limits,
        ) {
            Ok(c) => c,
            Err(e) => {
                return self.refuse(peer, Some(open.factory), format!("channel refused: {e}"))
            }
        };
        let mut link = Link::new(channel, true);
        let id = convert::channel_id_of(open.factory, offer.client, offer.channel);
        let record = ChannelRecord {
            id,
            factory: convert::factory_id(open.factory),
            key_index: offer.key_index,
            state: link.snapshot(),
            commitment_number: CommitmentNumber::new(0).expect("0 is a commitment number"),
        };
        if let Err(e) = self.store.insert_channel(&record) {
            tracing::error!("factory {}: cannot record a channel: {e}", open.factory);
            return;
        }
        let resend = link.connected();
        self.channels.leaves.insert(
            key,
            Leaf {
                factory: open.factory,
                client: offer.client,
                peer,
                id,
                channel: offer.channel,
                usable: offer.channel == ChannelRef::Leaf,
                link,
            },
        );
        self.log(format!(
            "{} channel of client {} in factory {} opened",
            offer.channel, offer.client, open.factory
        ));
        self.send_steps(key, resend);
        self.poll_links(vec![key]);
    }

    fn send_steps(&self, key: Key, msgs: Vec<LinkMsg>) {
        for msg in msgs {
            self.send(
                key.1,
                Message::Channel(Box::new(ChannelStep {
                    factory: key.0,
                    channel: key.2,
                    msg,
                })),
            );
        }
    }

    /// Writes `leaf`'s link if the step changed it, then sends the step's messages. On a failed
    /// write the link goes back to `before` and nothing is sent.
    fn commit_step(&mut self, key: Key, before: Link, step: Step) -> Vec<LinkEvent> {
        let Some(leaf) = self.channels.leaves.get_mut(&key) else {
            return Vec::new();
        };
        if step.persist {
            // The preimages this step learned are written with it: a payee's settlement is
            // never lost, and the restart settles the payer's HTLC from the invoice.
            let n = leaf.link.channel().commitment_numbers().0;
            let revoked = leaf.link.channel().revoked_states_to_write();
            let written = CommitmentNumber::new(n).and_then(|n| {
                self.store.save_channel_step(
                    leaf.id,
                    &leaf.link.snapshot(),
                    n,
                    &step
                        .preimages()
                        .into_iter()
                        .map(Preimage)
                        .collect::<Vec<_>>(),
                    &revoked,
                )
            });
            if let Err(e) = written {
                tracing::error!("channel {}/{}: not written: {e}", key.0, leaf.client);
                leaf.link = before;
                return Vec::new();
            }
            if let Some((last, _)) = revoked.last() {
                leaf.link.channel().revoked_states_written(*last);
            }
        }
        self.send_steps(key, step.send);
        step.events
    }

    /// Dual-state: the channel of `key` signs on `outpoint` too; its nonce leaves once written.
    pub(super) fn add_leaf_funding(&mut self, key: Key, outpoint: bitcoin::OutPoint) {
        let Some(leaf) = self.channels.leaves.get_mut(&key) else {
            return;
        };
        let before = leaf.link.clone();
        match leaf.link.add_funding(outpoint) {
            Ok(step) => {
                self.commit_step(key, before, step);
            }
            Err(e) => tracing::warn!("factory {}: channel cannot add {outpoint}: {e}", key.0),
        }
    }

    /// The channel of `key` stops signing on `outpoint` (both sides, between rounds).
    pub(super) fn retire_leaf_funding(&mut self, key: Key, outpoint: bitcoin::OutPoint) {
        if let Some(leaf) = self.channels.leaves.get_mut(&key) {
            if let Err(e) = leaf.link.retire_funding(outpoint) {
                tracing::warn!("factory {}: channel cannot retire {outpoint}: {e}", key.0);
            }
        }
        self.poll_links(vec![key]);
    }

    /// A step of a client's leaf channel.
    pub(super) fn on_channel_step(&mut self, peer: PublicKey, step: ChannelStep) {
        let key = (step.factory, peer, step.channel);
        let tip = self.channels.tip;
        let Some(leaf) = self.channels.leaves.get_mut(&key) else {
            return self.refuse(peer, Some(step.factory), "no such channel".into());
        };
        let before = leaf.link.clone();
        match leaf.link.receive(step.msg, tip) {
            Ok(s) => {
                let events = self.commit_step(key, before, s);
                self.on_link_events(key, events);
                // A round may have given an update the commitments it waits for.
                self.update_progress();
            }
            Err(e) => {
                let client = leaf.client;
                self.refuse(
                    peer,
                    Some(step.factory),
                    format!("channel step refused: {e}"),
                );
                self.log(format!(
                    "client {client} of {}: channel step refused: {e}",
                    step.factory
                ));
            }
        }
    }

    /// Starts what each link can start now, and follows what that leads to.
    pub(super) fn poll_links(&mut self, mut keys: Vec<Key>) {
        let tip = self.channels.tip;
        while let Some(key) = keys.pop() {
            let Some(leaf) = self.channels.leaves.get_mut(&key) else {
                continue;
            };
            let before = leaf.link.clone();
            match leaf.link.poll(tip) {
                Ok(s) => {
                    let events = self.commit_step(key, before, s);
                    keys.extend(self.route(key, events));
                }
                Err(e) => tracing::error!("channel {}/{}: {e}", key.0, key.1),
            }
        }
    }

    fn on_link_events(&mut self, key: Key, events: Vec<LinkEvent>) {
        let mut more = self.route(key, events);
        more.push(key);
        self.poll_links(more);
    }

    /// A peer connected: its links send again what it may have missed.
    pub(super) fn channels_connected(&mut self, peer: PublicKey) {
        let keys: Vec<Key> = self
            .channels
            .leaves
            .keys()
            .filter(|k| k.1 == peer)
            .copied()
            .collect();
        for key in &keys {
            if let Some(leaf) = self.channels.leaves.get_mut(key) {
                let msgs = leaf.link.connected();
                self.send_steps(*key, msgs);
            }
        }
        self.channels.offers.retain(|k, _| k.1 != peer);
    }

    /// A peer disconnected.
    pub(super) fn channels_disconnected(&mut self, peer: PublicKey) {
        for (key, leaf) in self.channels.leaves.iter_mut() {
            if key.1 == peer {
                leaf.link.disconnected();
            }
        }
        self.channels.offers.retain(|k, _| k.1 != peer);
    }

    /// The channel of `peer` a payment of `amount_msat` goes into: of its ready channels that
    /// carry payments, outside factory `from` (where a payment of the client to itself comes
    /// from) and outside dying factories while another can take it, one that can take it (the
    /// one with the least room that does, so that the big ones stay free), else the one with
    /// the most room.
    fn payee_channel(
        &self,
        peer: &PublicKey,
        amount_msat: u64,
        from: Option<FactoryId>,
    ) -> Option<Key> {
        let dying = self.dying_factories();
        let ready: Vec<(Key, u64)> = self
            .channels
            .leaves
            .iter()
            .filter(|(k, l)| {
                k.1 == *peer
                    && l.usable
                    && l.link.is_ready()
                    && !self.channels.frozen.contains(&k.0)
                    && Some(k.0) != from
            })
            .map(|(k, l)| (*k, l.link.channel().sendable_msat()))
            .collect();
        let fits = |(k, room): &&(Key, u64)| *room >= amount_msat && !dying.contains(&k.0);
        ready
            .iter()
            .filter(fits)
            .min_by_key(|(k, room)| (*room, *k))
            .or_else(|| {
                ready
                    .iter()
                    .filter(|(_, room)| *room >= amount_msat)
                    .min_by_key(|(k, room)| (*room, *k))
            })
            .or_else(|| ready.iter().max_by_key(|(k, room)| (*room, *k)))
            .map(|(k, _)| *k)
    }

    /// The channel holding an HTLC a client offered the LSP with `hash`, and its id.
    pub(super) fn incoming_with(&self, hash: &[u8; 32]) -> Option<(Key, u64)> {
        self.channels.leaves.iter().find_map(|(k, l)| {
            l.link
                .channel()
                .committed_htlcs()
                .into_iter()
                .find(|h| !h.offered_by_us && h.payment_hash == *hash)
                .map(|h| (*k, h.id))
        })
    }

    /// Whether the LSP has an HTLC with `hash` towards a client (pending or queued).
    fn outgoing_with(&self, hash: &[u8; 32]) -> bool {
        self.channels.leaves.values().any(|l| {
            l.link.add_queued(hash)
                || l.link
                    .channel()
                    .next_htlcs()
                    .iter()
                    .any(|h| h.offered_by_us && h.payment_hash == *hash)
        })
    }

    pub(super) fn push(&mut self, key: Key, intent: Intent) -> bool {
        match self.channels.leaves.get_mut(&key) {
            Some(leaf) => match leaf.link.push(intent) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("channel {}/{}: {e}", key.0, key.1);
                    false
                }
            },
            None => false,
        }
    }

    /// Acts on what a link's step settled; returns the links to poll next.
    fn route(&mut self, key: Key, events: Vec<LinkEvent>) -> Vec<Key> {
        let mut next = Vec::new();
        for event in events {
            match event {
                LinkEvent::Incoming(add) => next.extend(self.forward(key, add)),
                LinkEvent::Fulfilled {
                    payment_hash,
                    preimage,
                    ..
                } => {
                    let hash = PaymentHash(payment_hash);
                    // The preimage is written before anything else is done with it.
                    if let Err(e) = self.store.update_invoice(
                        hash,
                        InvoiceStatus::Paid,
                        Some(Preimage(preimage)),
                    ) {
                        tracing::error!(
                            "invoice {}: cannot record its preimage: {e}",
                            hex(&payment_hash)
                        );
                    }
                    if let Some((upstream, id)) = self.incoming_with(&payment_hash) {
                        if self.push(upstream, Intent::Fulfill { id, preimage }) {
                            next.push(upstream);
                        }
                    }
                    self.log(format!("payment {} settled", hex(&payment_hash)));
                    self.finish_operator_payment(payment_hash, Ok(preimage));
                }
                LinkEvent::Failed { payment_hash, .. } => {
                    next.extend(self.fail_back(&payment_hash, "the payee failed it"));
                }
                LinkEvent::Refused { intent, error } => match intent {
                    Intent::Add { payment_hash, .. } => {
                        next.extend(
                            self.fail_back(&payment_hash, &format!("the payee's channel: {error}")),
                        );
                    }
                    other => tracing::error!("channel {}: {other:?} refused: {error}", key.0),
                },
                LinkEvent::Offered(_) | LinkEvent::Resolved { .. } => {}
            }
        }
        next
    }

    /// A payment towards `hash` cannot go on: its invoice is payable again, the payer's HTLC is
    /// failed back.
    pub(super) fn fail_back(&mut self, hash: &[u8; 32], why: &str) -> Vec<Key> {
        let mut next = Vec::new();
        if let Err(e) = self
            .store
            .update_invoice(PaymentHash(*hash), InvoiceStatus::Open, None)
        {
            tracing::warn!("invoice {}: {e}", hex(hash));
        }
        if let Some((upstream, id)) = self.incoming_with(hash) {
            if self.push(upstream, Intent::Fail { id }) {
                next.push(upstream);
            }
        }
        self.log(format!("payment {} failed: {why}", hex(hash)));
        self.finish_operator_payment(*hash, Err(why.to_owned()));
        next
    }

    /// A payer's HTLC is committed: forward it to the invoice's payee, or fail it.
    fn forward(
        &mut self,
        from: Key,
        add: superscalar_core::channel::state::UpdateAddHtlc,
    ) -> Vec<Key> {
        let hash = PaymentHash(add.payment_hash);
        let fail = |lsp: &mut Lsp, why: String| {
            lsp.log(format!("payment {} refused: {why}", hex(&add.payment_hash)));
            if lsp.push(from, Intent::Fail { id: add.id }) {
                vec![from]
            } else {
                Vec::new()
            }
        };
        if self.channels.frozen.contains(&from.0) {
            return fail(self, format!("factory {} is closing", from.0));
        }
        // The fee of a liquidity order: held until the sale completes.
        match self.order_htlc(add.payment_hash, add.amount_msat) {
            Ok(true) => return Vec::new(),
            Ok(false) => {}
            Err(e) => return fail(self, format!("liquidity order: {e}")),
        }
        let invoice = match self.store.invoice(hash) {
            Ok(Some(i)) => i,
            Ok(None) => return fail(self, "no invoice of this LSP has that hash".into()),
            Err(e) => return fail(self, format!("store: {e}")),
        };
        let payee = match self.store.route(hash) {
            Ok(Some(p)) => p,
            _ => {
                return fail(
                    self,
                    "the invoice is not for one of the LSP's clients".into(),
                )
            }
        };
        if invoice.status != InvoiceStatus::Open {
            return fail(self, format!("the invoice is {}", invoice.status));
        }
        if invoice.amount.is_some_and(|a| add.amount_msat < a.0) {
            return fail(self, "less than the invoice's amount".into());
        }
        let Ok(payee) = PublicKey::from_slice(&payee) else {
            return fail(self, "a stored route is corrupt".into());
        };
        let amount_msat = invoice.amount.map_or(add.amount_msat, |a| a.0);
        let own = (payee == from.1).then_some(from.0);
        let Some(to) = self.payee_channel(&payee, amount_msat, own) else {
            return fail(self, "the payee has no channel".into());
        };
        if !self.transport.is_connected(&payee) {
            return fail(self, "the payee is offline".into());
        }
        if let Err(e) = self.store.update_invoice(hash, InvoiceStatus::Held, None) {
            return fail(self, format!("store: {e}"));
        }
        let pushed = self.push(
            to,
            Intent::Add {
                amount_msat,
                payment_hash: add.payment_hash,
                cltv_expiry: add.cltv_expiry.saturating_sub(FORWARD_DELTA),
            },
        );
        if !pushed {
            let _ = self.store.update_invoice(hash, InvoiceStatus::Open, None);
            return fail(self, "the payee's channel is busy".into());
        }
        if self.config.fault == Some(super::Fault::CrashAfterForward) {
            tracing::warn!("fault injected: dying after recording a forward");
            std::process::abort();
        }
        vec![to]
    }

    /// After a restart: payments whose HTLC came in and whose forward is not known to be
    /// under way are forwarded again (if their invoice is held) or failed back.
    fn reconcile_forwards(&mut self) {
        let mut incoming = Vec::new();
        for (k, l) in &self.channels.leaves {
            for h in l.link.channel().committed_htlcs() {
                if !h.offered_by_us && !l.link.resolution_queued(h.id) {
                    incoming.push((*k, h));
                }
            }
        }
        for (key, h) in incoming {
            if self.is_open_order(&h.payment_hash) {
                continue; // held for its sale (`orders_tick`)
            }
            let invoice = self
                .store
                .invoice(PaymentHash(h.payment_hash))
                .ok()
                .flatten();
            match invoice {
                Some(i) if i.status == InvoiceStatus::Paid => {
                    if let Some(p) = i.preimage {
                        self.push(
                            key,
                            Intent::Fulfill {
                                id: h.id,
                                preimage: p.0,
                            },
                        );
                    }
                }
                Some(i)
                    if i.status == InvoiceStatus::Held && self.outgoing_with(&h.payment_hash) => {}
                _ => {
                    let _ = self.store.update_invoice(
                        PaymentHash(h.payment_hash),
                        InvoiceStatus::Open,
                        None,
                    );
                    self.push(key, Intent::Fail { id: h.id });
                }
            }
        }
    }

    /// A client asks for an invoice for its payment hash.
    pub(super) fn on_invoice_request(&mut self, peer: PublicKey, req: InvoiceRequest) {
        let reply = |bolt11: String, error: String| {
            Message::Invoice(InvoiceReply {
                payment_hash: req.payment_hash,
                bolt11,
                error,
            })
        };
        let msg = match self.issue_invoice(peer, &req) {
            Ok(text) => reply(text, String::new()),
            Err(e) => reply(String::new(), e),
        };
        self.send(peer, msg);
    }

    fn issue_invoice(&mut self, peer: PublicKey, req: &InvoiceRequest) -> Result<String, String> {
        let key = self
            .payee_channel(&peer, req.amount_msat, None)
            .ok_or("no ready channel with this LSP yet")?;
        let leaf = &self.channels.leaves[&key];
        let delta = leaf.link.channel().limits().1.min_cltv_expiry_delta;
        let hash = PaymentHash(req.payment_hash);
        if self
            .store
            .invoice(hash)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err("an invoice with that payment hash exists".into());
        }
        let transport = self.transport.clone();
        let text = issue(
            self.config.network,
            |raw| transport.sign_invoice(raw),
            &InvoiceTerms {
                payment_hash: req.payment_hash,
                amount_msat: (req.amount_msat > 0).then_some(req.amount_msat),
                description: req.description.clone(),
                expiry_secs: req.expiry_secs,
                min_final_cltv_expiry_delta: delta + FORWARD_DELTA,
            },
        )
        .map_err(|e| e.to_string())?;
        let invoice = Invoice {
            payment_hash: hash,
            direction: InvoiceDirection::Inbound,
            preimage: None,
            amount: (req.amount_msat > 0).then_some(superscalar_store::Msat(req.amount_msat)),
            status: InvoiceStatus::Open,
            bolt11: text.clone(),
            claim_deadline: None,
        };
        self.store
            .insert_routed_invoice(&invoice, &peer.serialize())
            .map_err(|e| e.to_string())?;
        Ok(text)
    }

    /// `pay`: the LSP pays an invoice it issued for one of its clients, from its own side of
    /// that client's channel (a payment arriving from outside, as far as the client can tell).
    pub(super) fn operator_pay(&mut self, request: superscalar_api::Request) {
        let result = self.start_operator_payment(&request.params);
        match result {
            Ok((hash, to)) => {
                // Registered before the channel moves: a refusal at the first step answers it.
                self.channels.payments.insert(
                    hash,
                    OperatorPayment {
                        reply: Some(request),
                        started: Instant::now(),
                    },
                );
                self.poll_links(vec![to]);
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    /// Checks the operator's payment and queues its HTLC: its hash and the channel to move.
    fn start_operator_payment(&mut self, params: &Value) -> Result<([u8; 32], Key), ApiError> {
        let text = params
            .get("invoice")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_params("invoice: a BOLT-11 invoice"))?;
        let parsed = superscalar_wire::invoice::parse(text, self.config.network)
            .map_err(|e| ApiError::invalid_params(e.to_string()))?;
        let hash = PaymentHash(parsed.payment_hash);
        let invoice = self
            .store
            .invoice(hash)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::app(-4, "this LSP did not issue that invoice"))?;
        if invoice.status != InvoiceStatus::Open {
            return Err(ApiError::app(
                -4,
                format!("the invoice is {}", invoice.status),
            ));
        }
        let payee = self
            .store
            .route(hash)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .and_then(|p| PublicKey::from_slice(&p).ok())
            .ok_or_else(|| ApiError::app(-4, "the invoice is for no client"))?;
        let amount_msat = match (
            invoice.amount,
            params.get("amount_msat").and_then(Value::as_u64),
        ) {
            (Some(a), _) => a.0,
            (None, Some(a)) if a > 0 => a,
            _ => {
                return Err(ApiError::invalid_params(
                    "amount_msat: the invoice has no amount",
                ))
            }
        };
        let to = self
            .payee_channel(&payee, amount_msat, None)
            .ok_or_else(|| ApiError::app(-4, "the payee has no ready channel"))?;
        if !self.transport.is_connected(&payee) {
            return Err(ApiError::app(-4, "the payee is offline"));
        }
        let tip = self.channels.tip;
        self.store
            .update_invoice(hash, InvoiceStatus::Held, None)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let pushed = self.push(
            to,
            Intent::Add {
                amount_msat,
                payment_hash: parsed.payment_hash,
                cltv_expiry: tip + parsed.min_final_cltv_expiry_delta,
            },
        );
        if !pushed {
            if let Err(e) = self.store.update_invoice(hash, InvoiceStatus::Open, None) {
                tracing::warn!("invoice {}: {e}", hex(&parsed.payment_hash));
            }
            return Err(ApiError::app(-5, "the payee's channel refused the payment"));
        }
        Ok((parsed.payment_hash, to))
    }

    fn finish_operator_payment(&mut self, hash: [u8; 32], outcome: Result<[u8; 32], String>) {
        if let Some(mut p) = self.channels.payments.remove(&hash) {
            if let Some(r) = p.reply.take() {
                r.reply(match outcome {
                    Ok(preimage) => Ok(json!({
                        "status": "paid",
                        "payment_hash": hex(&hash),
                        "preimage": hex(&preimage),
                    })),
                    Err(why) => Err(ApiError::app(-5, format!("payment failed: {why}"))),
                });
            }
        }
    }

    /// Every second: offers, timeouts of the operator's payments, and rounds to start.
    pub(super) fn channels_tick(&mut self) {
        if let Ok(t) = self.chain(|c| c.tip()) {
            self.channels.tip = t.height;
        }
        self.offer_channels();
        let late: Vec<[u8; 32]> = self
            .channels
            .payments
            .iter()
            .filter(|(_, p)| p.started.elapsed() > PAY_WAIT)
            .map(|(h, _)| *h)
            .collect();
        for h in late {
            if let Some(mut p) = self.channels.payments.remove(&h) {
                if let Some(r) = p.reply.take() {
                    r.reply(Ok(json!({ "status": "pending", "payment_hash": hex(&h) })));
                }
            }
        }
        let keys: Vec<Key> = self.channels.leaves.keys().copied().collect();
        self.poll_links(keys);
    }

    /// `channels`: every leaf channel with its balances.
    pub(super) fn channels_json(&self) -> Value {
        let mut rows: Vec<&Leaf> = self.channels.leaves.values().collect();
        rows.sort_by_key(|l| (l.factory.0, l.client, l.channel));
        Value::Array(
            rows.into_iter()
                .map(|l| {
                    let c = l.link.channel();
                    let (ours, theirs) = c.commitment_numbers();
                    json!({
                        "factory": l.factory.to_string(),
                        "client": l.client,
                        "channel": l.channel.to_string(),
                        "usable": l.usable,
                        "peer": l.peer.to_string(),
                        "connected": self.transport.is_connected(&l.peer),
                        "ready": l.link.is_ready(),
                        "capacity_msat": c.capacity_msat(),
                        "lsp_balance_msat": c.balance_msat(),
                        "client_balance_msat": c.their_balance_msat(),
                        "htlcs": c.pending_htlcs(),
                        "commitments": [ours, theirs],
                    })
                })
                .collect(),
        )
    }
}

/// Lower-case hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    use bitcoin::hex::DisplayHex;
    bytes.to_lower_hex_string()
}

trait CloneParts {
    fn clone_parts(&self) -> (Arc<Factory>, FactoryState, KeyIndex);
}

impl CloneParts for (Arc<Factory>, FactoryState, KeyIndex) {
    fn clone_parts(&self) -> (Arc<Factory>, FactoryState, KeyIndex) {
        (Arc::clone(&self.0), self.1.clone(), self.2)
    }
}
