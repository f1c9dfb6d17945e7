//! The client's leaf channel with its LSP: opened when the LSP offers it and the factory is live
//! on the client's own chain; invoices (issued by the LSP for a payment hash only the client
//! knows), payments and their settlement.
//!
//! Receiving: an HTLC with the hash of one of our invoices is settled only once it is committed
//! on both sides, for at least the invoice's amount (the channel itself refuses an expiry too
//! close to take it on chain); the invoice is recorded paid before the preimage leaves.
//! Anything else is failed.
//!
//! Paying: only invoices the LSP issued (signed with its node id) until the bridge to the
//! Lightning Network exists. The HTLC expires the invoice's final delta plus the LSP's
//! forwarding delta from now; the payment is paid once the LSP settles it with the preimage.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::DisplayHex;
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::Chain;
use superscalar_core::advance::FactoryState;
use superscalar_core::channel::deadlines::DEFAULT_MARGIN_BLOCKS;
use superscalar_core::channel::link::{ChannelOffer, Intent, Link, LinkEvent, LinkMsg, Step};
use superscalar_core::channel::state::{Channel, ChannelLimits};
use superscalar_core::channel::ChannelRef;
use superscalar_core::{Signer, Slot};
use superscalar_store::{
    convert, ChannelRecord, CommitmentNumber, FactoryStatus, Invoice, InvoiceDirection,
    InvoiceStatus, Msat, PaymentHash, Preimage,
};
use superscalar_wire::messages::{ChannelOpen, ChannelStep, InvoiceReply, InvoiceRequest, Message};

use super::{Client, InFactory};
use superscalar_core::FactoryId;

/// Blocks the LSP keeps between the expiry of the HTLC it forwards and the one it receives
/// (added to the payee's final delta).
pub const FORWARD_DELTA: u32 = 12;
/// How long an API call waits for the LSP's invoice or a payment's outcome.
const WAIT: Duration = Duration::from_secs(60);

/// API calls waiting for the LSP.
#[derive(Default)]
pub(super) struct Waiting {
    invoices: HashMap<[u8; 32], (Zeroized, Option<u64>, superscalar_api::Request, Instant)>,
    payments: HashMap<[u8; 32], (superscalar_api::Request, Instant)>,
}

/// A preimage held in memory until its invoice is recorded.
pub(super) struct Zeroized(zeroize::Zeroizing<[u8; 32]>);

impl Client {
    /// Our chain's tip height as of the last tick (read now if none was read yet).
    pub(super) fn tip(&self) -> Option<u32> {
        self.tip
            .or_else(|| self.chain(|c| c.tip()).ok().map(|t| t.height))
    }

    /// Loads the stored channels of the factory the client is in: its leaf channel and those
    /// of its completed sales (the channel of a sale that never completed is forgotten: it
    /// never carried a payment).
    pub(super) fn recover_channel(&mut self) -> Result<(), String> {
        self.load_factory_state()?;
        let ids: Vec<FactoryId> = [&self.factory, &self.successor]
            .into_iter()
            .flatten()
            .map(|f| f.id)
            .collect();
        for id in ids {
            self.recover_links(id)?;
        }
        Ok(())
    }

    /// Loads the stored channels of factory `id` (ours, or the successor we migrate into).
    fn recover_links(&mut self, id: FactoryId) -> Result<(), String> {
        let ours = self.factory.as_ref().is_some_and(|f| f.id == id);
        let Some(f) = self.slot(id) else {
            return Ok(());
        };
        let mut refs = vec![ChannelRef::Leaf];
        if let Some(st) = f.state.as_ref() {
            refs.extend(
                (0..st.sales().len() as u32)
                    .filter(|j| st.sales()[*j as usize].buyer == f.position)
                    .map(ChannelRef::Sold),
            );
        }
        let (id, position, key_index) = (f.id, f.position.0, f.key_index);
        let key = f
            .factory
            .signing_key(Slot::Channel(f.position))
            .map_err(|e| e.to_string())?;
        let records = self
            .store
            .channels(convert::factory_id(id))
            .map_err(|e| e.to_string())?;
        let mut links = std::collections::BTreeMap::new();
        for record in records {
            let Some(ch) = refs
                .iter()
                .copied()
                .find(|ch| convert::channel_id_of(id, position, *ch) == record.id)
            else {
                // Only our factory's state says which sales completed.
                if ours {
                    self.store
                        .remove_channel(record.id)
                        .map_err(|e| e.to_string())?;
                    tracing::info!("factory {id}: the channel of an abandoned sale is forgotten");
                }
                continue;
            };
            let secrets = self
                .keys
                .channel_secrets_of(key_index, position, ch)
                .map_err(|e| e.to_string())?;
            let link = Link::restore(&record.state, secrets, key.clone())
                .map_err(|e| format!("{ch} channel: {e}"))?;
            let revoked = self
                .store
                .revoked_states(record.id)
                .map_err(|e| e.to_string())?;
            link.channel()
                .restore_revoked_states(&revoked)
                .map_err(|e| format!("{ch} channel: {e}"))?;
            links.insert(ch, link);
        }
        if let Some(f) = self.slot_mut(id) {
            f.links = links;
        }
        Ok(())
    }

    /// The factory with id `id` among ours, the successor we join and the one we migrate out
    /// of: the factories whose channels we hold.
    pub(super) fn slot(&self, id: FactoryId) -> Option<&InFactory> {
        [&self.factory, &self.successor, &self.predecessor]
            .into_iter()
            .flatten()
            .find(|f| f.id == id)
    }

    /// [`Client::slot`], to change.
    pub(super) fn slot_mut(&mut self, id: FactoryId) -> Option<&mut InFactory> {
        let slots = [
            &mut self.factory,
            &mut self.successor,
            &mut self.predecessor,
        ];
        find_slot(slots, id)
    }

    /// Our channels that carry payments: the leaf channel, and those of completed sales.
    pub(super) fn usable_links(&self) -> Vec<(ChannelRef, &Link)> {
        let Some(f) = self.factory.as_ref() else {
            return Vec::new();
        };
        if self.channels_frozen() {
            return Vec::new();
        }
        let sales = f.state.as_ref().map_or(0, |s| s.sales().len() as u32);
        f.links
            .iter()
            .filter(|(ch, _)| match ch {
                ChannelRef::Leaf => true,
                ChannelRef::Sold(j) => *j < sales,
            })
            .map(|(ch, l)| (*ch, l))
            .collect()
    }

    /// Our side of the channel the LSP offers, as an `accept_channel`; creates and records the
    /// channel the first time.
    pub(super) fn on_open_channel(&mut self, open: ChannelOpen) {
        let early = self
            .slot(open.factory)
            .is_some_and(|f| f.status == FactoryStatus::Signed);
        if early {
            // Live on the LSP's chain before ours shows its funding confirmed (our successor's:
            // the close): not refused, since the LSP offers again within seconds.
            return tracing::debug!("a channel of factory {} offered early", open.factory);
        }
        match self.accept_channel(&open) {
            Ok(msgs) => {
                for m in msgs {
                    self.send(m);
                }
            }
            Err(e) => {
                self.log(format!("channel offer refused: {e}"));
                self.send(Message::Error(superscalar_wire::messages::ErrorMsg {
                    code: superscalar_wire::messages::ErrorCode::Refused,
                    factory: Some(open.factory),
                    reason: e,
                }));
            }
        }
    }

    fn accept_channel(&mut self, open: &ChannelOpen) -> Result<Vec<Message>, String> {
        let tip = self.tip().ok_or("no chain view")?;
        let ours = self.factory.as_ref().is_some_and(|f| f.id == open.factory);
        let into = self.migrating_into() == Some(open.factory) && open.channel == ChannelRef::Leaf;
        let f = self
            .slot(open.factory)
            .filter(|_| ours || into)
            .ok_or("not our factory")?;
        if f.status != FactoryStatus::Live {
            return Err("the factory is not live on our chain yet".into());
        }
        let secrets = self
            .keys
            .channel_secrets_of(f.key_index, f.position.0, open.channel)
            .map_err(|e| e.to_string())?;
        let limits = ChannelLimits::for_factory(&f.factory, tip, DEFAULT_MARGIN_BLOCKS)
            .map_err(|e| e.to_string())?;
        let setup = match open.channel {
            ChannelRef::Leaf => {
                let mut state = FactoryState::new(
                    f.factory.clone(),
                    f.funding,
                    Signer::Client(f.position),
                    f.signed.iter().cloned(),
                );
                let coin = self
                    .chain(|c| c.get_utxo(&f.funding))
                    .map_err(|e| e.to_string())?
                    .ok_or("the funding output is not in our chain's UTXO set")?;
                state
                    .confirm_funding(Some(&coin.txout), Some(coin.height))
                    .map_err(|e| e.to_string())?;
                state
                    .leaf_channel_setup(f.position, false)
                    .map_err(|e| e.to_string())?
            }
            // A sold channel opens on its output in the update being signed, which our own
            // check of the proposal found selling it to us.
            ChannelRef::Sold(j) => self.sold_channel_setup(j)?,
        };
        let ours = Channel::announcement(&secrets, &setup.funding_key, setup.funding_outpoint);
        let accept = Message::AcceptChannel(Box::new(ChannelOpen {
            factory: open.factory,
            channel: open.channel,
            offer: ChannelOffer {
                announcement: ours,
                limits,
            },
        }));
        if let Some(link) = f.links.get(&open.channel) {
            // Offered again (the LSP restarted before recording it): the same answer, unless
            // the channel has moved on, which the LSP cannot have forgotten.
            if link.channel().commitment_numbers() != (0, 0) {
                return Err("this channel exists and has moved on".into());
            }
            return Ok(vec![accept]);
        }
        let (factory, position, key_index) = (f.id, f.position.0, f.key_index);
        let ch = open.channel;
        let channel = Channel::new(
            setup,
            secrets,
            limits,
            open.offer.announcement.clone(),
            open.offer.limits,
        )
        .map_err(|e| e.to_string())?;
        let mut link = Link::new(channel, false);
        self.store
            .insert_channel(&ChannelRecord {
                id: convert::channel_id_of(factory, position, ch),
                factory: convert::factory_id(factory),
                key_index,
                state: link.snapshot(),
                commitment_number: CommitmentNumber::new(0).expect("0 is a commitment number"),
            })
            .map_err(|e| e.to_string())?;
        let mut msgs = vec![accept];
        msgs.extend(
            link.connected()
                .into_iter()
                .map(|m| step_msg(factory, ch, m)),
        );
        if let Some(f) = self.slot_mut(factory) {
            f.links.insert(ch, link);
        }
        self.log(format!("factory {factory}: {ch} channel opened"));
        Ok(msgs)
    }

    /// Writes the link if the step changed it, then sends the step's messages; on a failed
    /// write the link goes back to `before` and nothing leaves.
    fn commit_link(
        &mut self,
        factory: FactoryId,
        ch: ChannelRef,
        before: Link,
        step: Step,
    ) -> Vec<LinkEvent> {
        let cheat = self.factory.as_ref().is_some_and(|f| f.id == factory)
            && self.config.fault == Some(super::Fault::PublishRevoked)
            && ch == ChannelRef::Leaf;
        let slots = [
            &mut self.factory,
            &mut self.successor,
            &mut self.predecessor,
        ];
        let Some(f) = find_slot(slots, factory) else {
            return Vec::new();
        };
        let Some(link) = f.links.get_mut(&ch) else {
            return Vec::new();
        };
        if step.persist {
            // The preimages this step learned are written with it: a proof of payment is
            // never lost.
            let preimages: Vec<Preimage> = step.preimages().into_iter().map(Preimage).collect();
            let id = convert::channel_id_of(factory, f.position.0, ch);
            let n = link.channel().commitment_numbers().0;
            let revoked = link.channel().revoked_states_to_write();
            let written = CommitmentNumber::new(n).and_then(|n| {
                self.store
                    .save_channel_step(id, &link.snapshot(), n, &preimages, &revoked)
            });
            if let Err(e) = written {
                *link = before;
                self.log(format!("channel not written, nothing sent: {e}"));
                return Vec::new();
            }
            if let Some((last, _)) = revoked.last() {
                link.channel().revoked_states_written(*last);
            }
        }
        for m in step.send {
            send_to(
                &self.transport,
                self.config.lsp_id,
                step_msg(factory, ch, m),
            );
        }
        if cheat {
            let held = link.channel().balance_msat();
            if self.cheat.as_ref().map_or(true, |c| held > c.0) {
                if let Ok((commit, _)) = link.channel().signed_latest_commitment() {
                    self.cheat = Some((held, commit));
                }
            }
        }
        step.events
    }

    /// A step of the channel from the LSP.
    pub(super) fn on_channel_step(&mut self, step: ChannelStep) {
        let Some(tip) = self.tip() else {
            return self.log("no chain view: channel step left unanswered".into());
        };
        let ours = self
            .slot(step.factory)
            .is_some_and(|f| f.links.contains_key(&step.channel));
        if !ours {
            return self.log(format!(
                "a channel step for no channel of ours ({})",
                step.msg.name()
            ));
        }
        if self.frozen(step.factory) {
            return tracing::debug!("exiting: channel step {} ignored", step.msg.name());
        }
        if let LinkMsg::Retire(outpoint) = &step.msg {
            let outpoint = *outpoint;
            if !self.may_retire(step.channel, &outpoint) {
                let why = format!("refusing to stop signing on {outpoint}: our factory state may still put the channel there");
                self.log(why.clone());
                return self.send(Message::Error(superscalar_wire::messages::ErrorMsg {
                    code: superscalar_wire::messages::ErrorCode::Refused,
                    factory: Some(step.factory),
                    reason: why,
                }));
            }
        }
        let (fid, ch) = (step.factory, step.channel);
        let Some(link) = self.slot_mut(fid).and_then(|f| f.links.get_mut(&ch)) else {
            return;
        };
        let before = link.clone();
        match link.receive(step.msg, tip) {
            Ok(s) => {
                let events = self.commit_link(fid, ch, before, s);
                self.on_link_events(fid, ch, events);
            }
            Err(e) => {
                self.log(format!("channel step refused: {e}"));
                self.send(Message::Error(superscalar_wire::messages::ErrorMsg {
                    code: superscalar_wire::messages::ErrorCode::Refused,
                    factory: Some(step.factory),
                    reason: format!("channel step refused: {e}"),
                }));
            }
        }
    }

    /// Dual-state: the channel signs on `outpoint` too (the channel output of the factory state
    /// being signed); our nonce for it leaves once written.
    pub(super) fn add_channel_funding(
        &mut self,
        ch: ChannelRef,
        outpoint: bitcoin::OutPoint,
    ) -> Result<(), String> {
        let link = self
            .factory
            .as_mut()
            .and_then(|f| f.links.get_mut(&ch))
            .ok_or("no channel")?;
        let before = link.clone();
        let step = link.add_funding(outpoint).map_err(|e| e.to_string())?;
        let persist = step.persist;
        let fid = self.factory.as_ref().map(|f| f.id).ok_or("no factory")?;
        self.commit_link(fid, ch, before, step);
        let written = self
            .factory
            .as_ref()
            .and_then(|f| f.links.get(&ch))
            .is_some_and(|l| l.channel().funding_outpoints().contains(&outpoint));
        if persist && !written {
            return Err("the channel could not be written".into());
        }
        Ok(())
    }

    /// Starts what the link can start now, and follows what comes of it.
    /// Whether our channels take no more updates: from the start of our exit, each is closed
    /// with the latest commitment it had then (an update after it was published would leave
    /// us a latest commitment that is not the one on chain); what is still pending is settled
    /// on chain.
    pub(super) fn channels_frozen(&self) -> bool {
        self.factory
            .as_ref()
            .is_some_and(|f| f.status == FactoryStatus::Closing)
    }

    /// Whether the channels of factory `id` take no more updates (its exit started).
    fn frozen(&self, id: FactoryId) -> bool {
        self.slot(id)
            .is_some_and(|f| f.status == FactoryStatus::Closing)
    }

    pub(super) fn poll_link(&mut self) {
        for (fid, ch) in self.channel_refs() {
            self.poll_channel(fid, ch);
        }
    }

    /// Which channels we have, in every factory we hold channels in.
    fn channel_refs(&self) -> Vec<(FactoryId, ChannelRef)> {
        [&self.factory, &self.successor, &self.predecessor]
            .into_iter()
            .flatten()
            .flat_map(|f| f.links.keys().map(|ch| (f.id, *ch)))
            .collect()
    }

    fn poll_channel(&mut self, fid: FactoryId, ch: ChannelRef) {
        if self.frozen(fid) {
            return;
        }
        let Some(tip) = self.tip() else {
            return;
        };
        for _ in 0..4 {
            let Some(link) = self.slot_mut(fid).and_then(|f| f.links.get_mut(&ch)) else {
                return;
            };
            let before = link.clone();
            let step = match link.poll(tip) {
                Ok(s) => s,
                Err(e) => return self.log(format!("{ch} channel: {e}")),
            };
            if step.send.is_empty() && step.events.is_empty() {
                return;
            }
            let events = self.commit_link(fid, ch, before, step);
            self.react(fid, ch, events);
        }
    }

    fn on_link_events(&mut self, fid: FactoryId, ch: ChannelRef, events: Vec<LinkEvent>) {
        self.react(fid, ch, events);
        self.poll_channel(fid, ch);
    }

    pub(super) fn push(
        &mut self,
        fid: FactoryId,
        ch: ChannelRef,
        intent: Intent,
    ) -> Result<(), String> {
        let link = self
            .slot_mut(fid)
            .and_then(|f| f.links.get_mut(&ch))
            .ok_or("no channel")?;
        link.push(intent).map_err(|e| e.to_string())
    }

    fn react(&mut self, fid: FactoryId, ch: ChannelRef, events: Vec<LinkEvent>) {
        for event in events {
            match event {
                LinkEvent::Incoming(add) if self.config.fault == Some(super::Fault::HoldHtlcs) => {
                    tracing::debug!("fault: holding an HTLC of {} msat", add.amount_msat);
                }
                LinkEvent::Incoming(add) => {
                    let settled = if self.close_frozen() {
                        Err("the factory is being closed".to_string())
                    } else {
                        self.settle_incoming(&add)
                    };
                    let intent = match settled {
                        Ok(preimage) => {
                            self.log(format!(
                                "received {} msat for {}",
                                add.amount_msat,
                                add.payment_hash.to_lower_hex_string()
                            ));
                            Intent::Fulfill {
                                id: add.id,
                                preimage,
                            }
                        }
                        Err(why) => {
                            self.log(format!("failed an HTLC of {} msat: {why}", add.amount_msat));
                            Intent::Fail { id: add.id }
                        }
                    };
                    let fulfilled = matches!(intent, Intent::Fulfill { .. });
                    if let Err(e) = self.push(fid, ch, intent) {
                        self.log(format!("{ch} channel: {e}"));
                    } else if fulfilled {
                        self.received_in(fid);
                    }
                }
                LinkEvent::Fulfilled {
                    payment_hash,
                    preimage,
                    ..
                } => {
                    if let Err(e) = self.store.update_invoice(
                        PaymentHash(payment_hash),
                        InvoiceStatus::Paid,
                        Some(Preimage(preimage)),
                    ) {
                        self.log(format!("payment settled but not recorded: {e}"));
                    }
                    self.log(format!("paid {}", payment_hash.to_lower_hex_string()));
                    self.finish_payment(payment_hash, Ok(preimage));
                }
                LinkEvent::Failed { payment_hash, .. } => {
                    self.payment_failed(payment_hash, "the LSP failed it".into())
                }
                LinkEvent::Refused {
                    intent: Intent::Add { payment_hash, .. },
                    error,
                } => self.payment_failed(payment_hash, format!("our channel refused it: {error}")),
                LinkEvent::Refused { intent, error } => {
                    self.log(format!("channel refused {intent:?}: {error}"))
                }
                LinkEvent::Offered(_) | LinkEvent::Resolved { .. } => {}
            }
        }
    }

    /// The preimage of an incoming HTLC, recorded paid; or why it is failed.
    fn settle_incoming(
        &mut self,
        add: &superscalar_core::channel::state::UpdateAddHtlc,
    ) -> Result<[u8; 32], String> {
        let hash = PaymentHash(add.payment_hash);
        let invoice = self
            .store
            .invoice(hash)
            .map_err(|e| e.to_string())?
            .filter(|i| i.direction == InvoiceDirection::Inbound)
            .ok_or("no invoice of ours has that hash")?;
        let preimage = invoice.preimage.ok_or("no preimage")?;
        if invoice.status == InvoiceStatus::Paid {
            // Decided before a restart (or a second HTLC of the same payment): take it.
            return Ok(preimage.0);
        }
        if invoice.status != InvoiceStatus::Open {
            return Err(format!("the invoice is {}", invoice.status));
        }
        if invoice.amount.is_some_and(|a| add.amount_msat < a.0) {
            return Err("less than the invoice's amount".into());
        }
        // Recorded before the preimage leaves.
        self.store
            .update_invoice(hash, InvoiceStatus::Paid, None)
            .map_err(|e| e.to_string())?;
        Ok(preimage.0)
    }

    fn payment_failed(&mut self, hash: [u8; 32], why: String) {
        if let Err(e) = self
            .store
            .update_invoice(PaymentHash(hash), InvoiceStatus::Cancelled, None)
        {
            tracing::debug!("payment {}: {e}", hash.to_lower_hex_string());
        }
        self.log(format!(
            "payment {} failed: {why}",
            hash.to_lower_hex_string()
        ));
        self.finish_payment(hash, Err(why));
    }

    fn finish_payment(&mut self, hash: [u8; 32], outcome: Result<[u8; 32], String>) {
        if self.finish_purchase(hash, &outcome) {
            return;
        }
        if let Some((request, _)) = self.waiting.payments.remove(&hash) {
            request.reply(match outcome {
                Ok(preimage) => Ok(json!({
                    "status": "paid",
                    "payment_hash": hash.to_lower_hex_string(),
                    "preimage": preimage.to_lower_hex_string(),
                })),
                Err(why) => Err(ApiError::app(-5, format!("payment failed: {why}"))),
            });
        }
    }

    /// `invoice`: asks the LSP for an invoice of a fresh payment hash; answered with it.
    pub(super) fn request_invoice(&mut self, request: superscalar_api::Request) {
        let result = (|| -> Result<([u8; 32], Zeroized, Option<u64>), ApiError> {
            let ready = self.usable_links().iter().any(|(_, l)| l.is_ready());
            if !ready {
                return Err(ApiError::app(-2, "no ready channel yet"));
            }
            let p = &request.params;
            let amount_msat =
                match p.get("amount_msat") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_u64().filter(|a| *a > 0).ok_or_else(|| {
                        ApiError::invalid_params("amount_msat: a positive integer")
                    })?),
                };
            let description = match p.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(v) => v
                    .as_str()
                    .filter(|d| d.len() <= superscalar_wire::messages::MAX_DESCRIPTION)
                    .ok_or_else(|| {
                        ApiError::invalid_params("description: text of at most 639 bytes")
                    })?
                    .to_owned(),
            };
            let expiry_secs = match p.get("expiry_secs") {
                None | Some(Value::Null) => 3600,
                Some(v) => v
                    .as_u64()
                    .and_then(|e| u32::try_from(e).ok())
                    .filter(|e| {
                        (superscalar_wire::invoice::MIN_EXPIRY_SECS
                            ..=superscalar_wire::invoice::MAX_EXPIRY_SECS)
                            .contains(e)
                    })
                    .ok_or_else(|| ApiError::invalid_params("expiry_secs: 60 to 604800"))?,
            };
            let (preimage, hash) = fresh_preimage();
            self.send(Message::InvoiceRequest(InvoiceRequest {
                payment_hash: hash,
                amount_msat: amount_msat.unwrap_or(0),
                description,
                expiry_secs,
            }));
            Ok((hash, Zeroized(preimage), amount_msat))
        })();
        match result {
            Ok((hash, preimage, amount)) => {
                self.waiting
                    .invoices
                    .insert(hash, (preimage, amount, request, Instant::now()));
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    /// The LSP's invoice: checked, recorded with its preimage, and given to the caller.
    pub(super) fn on_invoice(&mut self, reply: InvoiceReply) {
        if self.on_migration_invoice(&reply) {
            return;
        }
        let Some((preimage, amount, request, _)) =
            self.waiting.invoices.remove(&reply.payment_hash)
        else {
            return;
        };
        let result = (|| -> Result<Value, ApiError> {
            if !reply.error.is_empty() {
                return Err(ApiError::app(
                    -4,
                    format!("the LSP refused: {}", reply.error),
                ));
            }
            let parsed = superscalar_wire::invoice::parse(&reply.bolt11, self.config.network)
                .map_err(|e| ApiError::app(-4, format!("the LSP's invoice: {e}")))?;
            let mismatch = if parsed.payment_hash != reply.payment_hash {
                Some("payment hash")
            } else if parsed.payee != self.config.lsp_id {
                Some("payee")
            } else if parsed.amount_msat != amount {
                Some("amount")
            } else {
                None
            };
            if let Some(what) = mismatch {
                return Err(ApiError::app(
                    -4,
                    format!("the LSP's invoice is not the one asked for (its {what} differs)"),
                ));
            }
            self.store
                .insert_invoice(&Invoice {
                    payment_hash: PaymentHash(reply.payment_hash),
                    direction: InvoiceDirection::Inbound,
                    preimage: Some(Preimage(*preimage.0)),
                    amount: amount.map(Msat),
                    status: InvoiceStatus::Open,
                    bolt11: reply.bolt11.clone(),
                    claim_deadline: None,
                })
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(json!({
                "invoice": reply.bolt11,
                "payment_hash": reply.payment_hash.to_lower_hex_string(),
                "amount_msat": amount,
                "expires_at": parsed.expires_at,
            }))
        })();
        request.reply(result);
    }

    /// `pay`: pays an invoice the LSP issued; answered when it settles or fails.
    pub(super) fn pay(&mut self, request: superscalar_api::Request) {
        match self.start_payment(&request.params) {
            Ok(hash) => {
                self.waiting
                    .payments
                    .insert(hash, (request, Instant::now()));
                self.poll_link();
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    pub(super) fn start_payment(&mut self, params: &Value) -> Result<[u8; 32], ApiError> {
        let text = params
            .get("invoice")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_params("invoice: a BOLT-11 invoice"))?;
        let parsed = superscalar_wire::invoice::parse(text, self.config.network)
            .map_err(|e| ApiError::invalid_params(e.to_string()))?;
        if self.close_frozen() {
            return Err(ApiError::app(
                -4,
                "our factory is being closed cooperatively: no payment until it confirms",
            ));
        }
        if parsed.payee != self.config.lsp_id {
            return Err(ApiError::app(
                -4,
                "only invoices issued through our LSP can be paid (no bridge to the Lightning \
                 Network yet)",
            ));
        }
        let amount_msat = match (
            parsed.amount_msat,
            params.get("amount_msat").and_then(Value::as_u64),
        ) {
            (Some(a), _) => a,
            (None, Some(a)) if a > 0 => a,
            _ => {
                return Err(ApiError::invalid_params(
                    "amount_msat: the invoice has no amount",
                ))
            }
        };
        let hash = PaymentHash(parsed.payment_hash);
        if let Some(known) = self
            .store
            .invoice(hash)
            .map_err(|e| ApiError::internal(e.to_string()))?
        {
            match (known.direction, known.status) {
                (InvoiceDirection::Inbound, _) => {
                    return Err(ApiError::app(-4, "this is our own invoice"))
                }
                (_, InvoiceStatus::Paid) => return Err(ApiError::app(-4, "already paid")),
                (_, InvoiceStatus::Open | InvoiceStatus::Held) => {
                    return Err(ApiError::app(-4, "a payment of it is under way"))
                }
                (_, InvoiceStatus::Cancelled) => {}
            }
        }
        let tip = self
            .tip()
            .ok_or_else(|| ApiError::internal("no chain view"))?;
        // Of our ready channels, the one with the least room that can send it.
        let ready: Vec<(ChannelRef, &Link)> = self
            .usable_links()
            .into_iter()
            .filter(|(_, l)| l.is_ready())
            .collect();
        if ready.is_empty() {
            return Err(ApiError::app(-2, "no ready channel yet"));
        }
        let most = ready
            .iter()
            .map(|(_, l)| l.channel().sendable_msat())
            .max()
            .unwrap_or(0);
        let (ch, link) = ready
            .iter()
            .filter(|(_, l)| l.channel().sendable_msat() >= amount_msat)
            .min_by_key(|(ch, l)| (l.channel().sendable_msat(), *ch))
            .copied()
            .ok_or_else(|| {
                ApiError::app(
                    -4,
                    format!("{most} msat sendable in one channel, {amount_msat} msat asked"),
                )
            })?;
        let (_, theirs) = link.channel().limits();
        let delta =
            (parsed.min_final_cltv_expiry_delta + FORWARD_DELTA).max(theirs.min_cltv_expiry_delta);
        let cltv_expiry = tip + delta;
        let record = Invoice {
            payment_hash: hash,
            direction: InvoiceDirection::Outbound,
            preimage: None,
            amount: Some(Msat(amount_msat)),
            status: InvoiceStatus::Open,
            bolt11: text.trim().to_owned(),
            claim_deadline: None,
        };
        let stored = match self.store.invoice(hash) {
            Ok(Some(_)) => self.store.update_invoice(hash, InvoiceStatus::Open, None),
            _ => self.store.insert_invoice(&record),
        };
        stored.map_err(|e| ApiError::internal(e.to_string()))?;
        let fid = self
            .factory
            .as_ref()
            .map(|f| f.id)
            .ok_or_else(|| ApiError::app(-2, "not in a factory"))?;
        self.push(
            fid,
            ch,
            Intent::Add {
                amount_msat,
                payment_hash: parsed.payment_hash,
                cltv_expiry,
            },
        )
        .map_err(|e| ApiError::app(-4, e))?;
        self.log(format!(
            "paying {amount_msat} msat to {}",
            parsed.payment_hash.to_lower_hex_string()
        ));
        Ok(parsed.payment_hash)
    }

    /// `balance`: the channel's balances.
    pub(super) fn balance_json(&self) -> Result<Value, ApiError> {
        let f = self
            .factory
            .as_ref()
            .ok_or_else(|| ApiError::app(-2, "not in a factory"))?;
        let links = self.usable_links();
        let Some((_, leaf)) = links.iter().find(|(ch, _)| *ch == ChannelRef::Leaf) else {
            // Not open yet: what it opens with (after a rotation, the balance rolled in).
            let opening = f.factory.params().opening_msat(f.position);
            return Ok(json!({
                "channel": null,
                "channels": [],
                "balance_msat": opening,
                "opening_msat": opening,
            }));
        };
        let row = |ch: ChannelRef, link: &Link| {
            let c = link.channel();
            json!({
                "factory": f.id.to_string(),
                "channel": ch.to_string(),
                "ready": link.is_ready(),
                "funding": c.funding_outpoint().to_string(),
                "capacity_msat": c.capacity_msat(),
                "commitments": [c.commitment_numbers().0, c.commitment_numbers().1],
                "htlcs": c.pending_htlcs(),
                "balance_msat": c.balance_msat(),
                "lsp_balance_msat": c.their_balance_msat(),
                "sendable_msat": c.sendable_msat(),
                "receivable_msat": c.receivable_msat(),
            })
        };
        let sum =
            |get: fn(&Channel) -> u64| links.iter().map(|(_, l)| get(l.channel())).sum::<u64>();
        Ok(json!({
            "channel": row(ChannelRef::Leaf, leaf),
            "channels": links.iter().map(|(ch, l)| row(*ch, l)).collect::<Vec<_>>(),
            "balance_msat": sum(Channel::balance_msat),
            "lsp_balance_msat": sum(Channel::their_balance_msat),
            "sendable_msat": links.iter().map(|(_, l)| l.channel().sendable_msat()).max().unwrap_or(0),
            "receivable_msat": links.iter().map(|(_, l)| l.channel().receivable_msat()).max().unwrap_or(0),
        }))
    }

    /// HTLCs of the LSP committed and not being settled (their event was lost in a crash): as
    /// if they had just come in.
    fn reconcile_incoming(&mut self) {
        for (fid, ch) in self.channel_refs() {
            self.reconcile_incoming_on(fid, ch);
        }
    }

    fn reconcile_incoming_on(&mut self, fid: FactoryId, ch: ChannelRef) {
        let Some(link) = self.slot(fid).and_then(|f| f.links.get(&ch)) else {
            return;
        };
        if !link.channel().is_idle() {
            return;
        }
        let next = link.channel().next_htlcs();
        let open: Vec<_> = link
            .channel()
            .committed_htlcs()
            .into_iter()
            .filter(|h| !h.offered_by_us && next.contains(h) && !link.resolution_queued(h.id))
            .map(|h| superscalar_core::channel::state::UpdateAddHtlc {
                id: h.id,
                amount_msat: h.amount_msat,
                payment_hash: h.payment_hash,
                cltv_expiry: h.cltv_expiry,
            })
            .collect();
        if !open.is_empty() {
            self.react(fid, ch, open.into_iter().map(LinkEvent::Incoming).collect());
        }
    }

    /// Every second: the link's next step and the API calls that waited too long.
    pub(super) fn channel_tick(&mut self) {
        self.reconcile_incoming();
        self.poll_link();
        let late: Vec<[u8; 32]> = self
            .waiting
            .invoices
            .iter()
            .filter(|(_, w)| w.3.elapsed() > WAIT)
            .map(|(h, _)| *h)
            .collect();
        for h in late {
            if let Some((_, _, r, _)) = self.waiting.invoices.remove(&h) {
                r.reply(Err(ApiError::app(-3, "the LSP did not answer")));
            }
        }
        let late: Vec<[u8; 32]> = self
            .waiting
            .payments
            .iter()
            .filter(|(_, w)| w.1.elapsed() > WAIT)
            .map(|(h, _)| *h)
            .collect();
        for h in late {
            if let Some((r, _)) = self.waiting.payments.remove(&h) {
                r.reply(Ok(
                    json!({ "status": "pending", "payment_hash": h.to_lower_hex_string() }),
                ));
            }
        }
    }

    /// The connection to the LSP is up or down.
    pub(super) fn channel_connection(&mut self, up: bool) {
        let slots = [
            &mut self.factory,
            &mut self.successor,
            &mut self.predecessor,
        ];
        for f in slots.into_iter().flatten() {
            if up && f.status == FactoryStatus::Closing {
                continue;
            }
            let factory = f.id;
            for (ch, link) in f.links.iter_mut() {
                if up {
                    for m in link.connected() {
                        send_to(
                            &self.transport,
                            self.config.lsp_id,
                            step_msg(factory, *ch, m),
                        );
                    }
                } else {
                    link.disconnected();
                }
            }
        }
    }
}

/// The factory with id `id` among `slots` (borrowing only them).
fn find_slot(slots: [&mut Option<InFactory>; 3], id: FactoryId) -> Option<&mut InFactory> {
    slots.into_iter().flatten().find(|f| f.id == id)
}

fn step_msg(
    factory: superscalar_core::FactoryId,
    channel: ChannelRef,
    msg: superscalar_core::channel::link::LinkMsg,
) -> Message {
    Message::Channel(Box::new(ChannelStep {
        factory,
        channel,
        msg,
    }))
}

fn send_to(
    transport: &superscalar_wire::transport::Transport,
    lsp: bitcoin::secp256k1::PublicKey,
    msg: Message,
) {
    super::send(transport, lsp, msg);
}

/// A random payment preimage and its hash.
pub(super) fn fresh_preimage() -> (zeroize::Zeroizing<[u8; 32]>, [u8; 32]) {
    let mut preimage = zeroize::Zeroizing::new([0u8; 32]);
    bitcoin::secp256k1::rand::RngCore::fill_bytes(
        &mut bitcoin::secp256k1::rand::thread_rng(),
        &mut preimage[..],
    );
    let hash = sha256::Hash::hash(&preimage[..]).to_byte_array();
    (preimage, hash)
}
