//! The client's side of a migration: the fallback when its dying factory cannot rotate (a
//! member is away, so nobody can sign its key path). The client joins a new factory and moves
//! what it holds in the old one there with an ordinary payment through the LSP: an HTLC from
//! its old channel to the LSP, forwarded by the LSP into its channel in the new factory, with a
//! payment hash whose preimage only the client knows. The payment is atomic as any Lightning
//! payment is: the LSP learns the preimage, and can take the old HTLC, only when the client
//! settles the new one.
//!
//! Order:
//!
//! 1. The LSP invites the client (`migrate`). The client joins a new factory as any client does
//!    (a fresh key; a channel of at least its balance), beside its factory: the new factory
//!    is its *successor* until the money has moved.
//! 2. The successor is live once the client's own chain shows its funding confirmed; its leaf
//!    channel opens then (with nothing of the client's in it).
//! 3. Once that channel is ready, the client asks the LSP for an invoice of what one of its old
//!    channels can send (the preimage written first) and offers the HTLC on that channel.
//! 4. The LSP forwards it into the new channel; the client settles it there (the invoice
//!    recorded paid before the preimage leaves). From that moment the client's money is in the
//!    new factory, so the new factory becomes the client's factory (its watcher, its exit) and
//!    the old one its *predecessor*, whose channels only finish their payments: every revoked
//!    state of the old channel gives the client at least what the latest does (nothing: the
//!    LSP holds the preimage of the one HTLC left), so it needs no watcher. The rule is that
//!    the watcher follows the money: the successor becomes the factory once it holds at least
//!    as much of the client's as the old one (a payment received there before the migration's
//!    does not move the watcher while most of the money is still in the old factory).
//! 5. Once every old channel holds nothing and is quiet, the old factory is `closed` for the
//!    client (the LSP takes it on chain before its timeout, with the away member's share).
//!
//! What the client checks: the invitation is for its own live factory, with no close, rotation
//! or exit of it under way; the successor is signed and checked as any factory it joins
//! (opening at zero); the invoice is the LSP's, for the hash and amount asked. A failed payment
//! is tried again (a fresh hash) after [`RETRY`]; a migration that makes no progress for
//! [`MIGRATION_PATIENCE`] before its successor is signed is dropped, and the LSP invites again.
//!
//! Restart: both factories are in the store (the old one live, the successor signed or live);
//! the successor is loaded beside the factory, and the steps above go on from what the channels
//! hold (the successor becomes the factory again once it holds money of ours).
//!
//! Left alone: the old factory's fee coin stays in its tree (the client's, on chain if the
//! tree is ever published); a client that bought channels in the old factory pays them out one
//! after another, and whichever factory holds less of its money meanwhile is not watched.

use std::time::{Duration, Instant};

use bitcoin::hex::DisplayHex;
use bitcoin::Amount;
use serde_json::{json, Value};
use superscalar_core::channel::deadlines::{min_final_cltv_expiry_delta, DEFAULT_MARGIN_BLOCKS};
use superscalar_core::channel::link::Intent;
use superscalar_core::channel::ChannelRef;
use superscalar_core::close::msg::CloseBody;
use superscalar_core::FactoryId;
use superscalar_store::{
    convert, Change, FactoryStatus, Invoice, InvoiceDirection, InvoiceStatus, Msat, PaymentHash,
    Preimage,
};
use superscalar_wire::messages::{InvoiceReply, InvoiceRequest, Message};

use super::{start_joining, Client, FORWARD_DELTA};

/// How long a failed migration payment waits before the next try.
const RETRY: Duration = Duration::from_secs(3);
/// How long a migration may wait for its successor to be signed before it is dropped.
pub const MIGRATION_PATIENCE: Duration = Duration::from_secs(300);

/// A migration this client is making.
pub(super) struct Migrating {
    /// The factory it leaves.
    pub(super) from: FactoryId,
    started: Instant,
    /// The invoice asked for and not answered yet: its hash, preimage and amount.
    asked: Option<([u8; 32], zeroize::Zeroizing<[u8; 32]>, u64)>,
    /// The payment under way: its hash.
    paying: Option<[u8; 32]>,
    /// When the next payment may start.
    next_try: Instant,
    /// Whether it is too late to pay out of the old factory (logged once).
    too_late: bool,
}

impl Migrating {
    fn new(from: FactoryId) -> Self {
        Migrating {
            from,
            started: Instant::now(),
            asked: None,
            paying: None,
            next_try: Instant::now(),
            too_late: false,
        }
    }
}

impl Client {
    /// The LSP invites us to migrate out of `factory` (which cannot rotate).
    pub(super) fn on_migrate(&mut self, factory: FactoryId, close: u64, balance_msat: u64) {
        if self.migrating.as_ref().is_some_and(|m| m.from == factory) {
            return; // Invited again at the next block: under way.
        }
        match self.start_migration(factory, balance_msat) {
            Ok(msg) => {
                self.send(msg);
                self.log(format!(
                    "factory {factory}: migrating our {balance_msat} msat into a new factory"
                ));
            }
            Err(why) => {
                self.log(format!("refused to migrate out of {factory}: {why}"));
                self.send_close(factory, close, CloseBody::Abort(why));
            }
        }
    }

    fn start_migration(
        &mut self,
        factory: FactoryId,
        balance_msat: u64,
    ) -> Result<Message, String> {
        let f = self.live_factory(factory)?;
        if self.rotating.is_some() || self.joining.is_some() || self.successor.is_some() {
            return Err("a rotation or migration is under way".into());
        }
        let ours: u64 = f.links.values().map(|l| l.channel().balance_msat()).sum();
        if ours == 0 {
            return Err("we hold nothing in it".into());
        }
        if ours != balance_msat {
            // Payments may be settling: what moves is what we hold when we pay.
            tracing::info!("migrating {ours} msat (the LSP counts {balance_msat} msat)");
        }
        // The new channel takes at least what we hold, with room to spare.
        let capacity = self.config.capacity.max(Amount::from_sat(
            ours.div_ceil(1000) + ours / 100_000 + 1_000,
        ));
        let (joining, join) =
            start_joining(&mut self.store, &self.keys, self.config.network, capacity)
                .map_err(|e| e.to_string())?;
        self.joining = Some(joining);
        self.migrating = Some(Migrating::new(factory));
        Ok(join)
    }

    /// The successor we migrate into (not a rotation's): its id.
    pub(super) fn migrating_into(&self) -> Option<FactoryId> {
        let s = self.successor.as_ref()?;
        let rotation = self.rotating.is_some()
            || self.factory.as_ref().is_some_and(|f| f.close.is_some())
            || s.factory.params().opening_msat(s.position) != 0;
        (!rotation).then_some(s.id)
    }

    /// We settled an HTLC in factory `fid`: if it is the successor we migrate into, our money
    /// may be there now, and then so is our factory.
    pub(super) fn received_in(&mut self, fid: FactoryId) {
        if self.migrating_into() == Some(fid) {
            self.maybe_swap();
        }
    }

    /// What of ours factory `id` holds: its channels' balances, plus the HTLCs we offered
    /// whose preimage we did not reveal (they may come back), plus those we received and
    /// settled (ours once the LSP updates the channel).
    fn held_in(&self, id: FactoryId) -> u64 {
        let Some(f) = self.slot(id) else {
            return 0;
        };
        let revealed = |hash: [u8; 32]| {
            matches!(
                self.store.invoice(PaymentHash(hash)),
                Ok(Some(i)) if i.direction == InvoiceDirection::Inbound
                    && i.status == InvoiceStatus::Paid
            )
        };
        f.links
            .values()
            .map(|l| {
                let c = l.channel();
                let htlcs: u64 = c
                    .next_htlcs()
                    .iter()
                    .filter(|h| h.offered_by_us != revealed(h.payment_hash))
                    .map(|h| h.amount_msat)
                    .sum();
                c.balance_msat().saturating_add(htlcs)
            })
            .sum()
    }

    /// The watcher follows the money: once the successor we migrate into holds at least as much
    /// of ours as our factory, it becomes our factory (the rest follows by the next payments).
    fn maybe_swap(&mut self) {
        let (Some(into), Some(from)) = (self.migrating_into(), self.factory.as_ref().map(|f| f.id))
        else {
            return;
        };
        let (there, here) = (self.held_in(into), self.held_in(from));
        if there > 0 && there >= here {
            self.swap_in_successor();
        }
    }

    /// The successor becomes our factory and our factory its predecessor.
    fn swap_in_successor(&mut self) {
        let Some(s) = self.successor.take() else {
            return;
        };
        let old = self.factory.replace(s);
        self.watching = None;
        if let (Some(old), Some(new)) = (old.as_ref(), self.factory.as_ref()) {
            self.log(format!(
                "factory {} is our factory now: our money moved in from {}",
                new.id, old.id
            ));
        }
        self.predecessor = old;
    }

    /// Every second: the migration's next step.
    pub(super) fn migration_tick(&mut self) {
        // A migration whose successor never came.
        let stale = self.migrating.as_ref().is_some_and(|m| {
            m.started.elapsed() > MIGRATION_PATIENCE
                && self.successor.is_none()
                && self.predecessor.is_none()
        });
        if stale {
            let from = self.migrating.take().map(|m| m.from);
            if self.joining.is_some() {
                self.drop_joining("the migration took too long");
            }
            if let Some(from) = from {
                self.log(format!(
                    "factory {from}: migration dropped (no new factory)"
                ));
            }
        }
        // The money moved (or, after a restart, had moved): so does our factory.
        if self.migrating_into().is_some() {
            if self.migrating.is_none() {
                if let Some(f) = self.factory.as_ref() {
                    self.migrating = Some(Migrating::new(f.id));
                }
            }
            self.maybe_swap();
        }
        self.migration_pay();
        self.finish_migration();
    }

    /// The factory whose channels we pay out of, and the one we pay into.
    fn migration_ends(&self) -> Option<(FactoryId, FactoryId)> {
        match (&self.predecessor, self.migrating_into()) {
            (Some(p), _) => Some((p.id, self.factory.as_ref()?.id)),
            (None, Some(into)) => Some((self.factory.as_ref()?.id, into)),
            (None, None) => None,
        }
    }

    /// Asks for the next migration payment's invoice, once the new channel is ready and no
    /// payment is under way.
    fn migration_pay(&mut self) {
        let Some((from, into)) = self.migration_ends() else {
            return;
        };
        let Some(m) = self.migrating.as_mut() else {
            return;
        };
        if m.asked.is_some() || Instant::now() < m.next_try {
            return;
        }
        if let Some(hash) = m.paying {
            // Under way until the old channel no longer holds it.
            let pending = self.slot(from).is_some_and(|f| {
                f.links.values().any(|l| {
                    let c = l.channel();
                    let ours = |h: &superscalar_core::channel::state::HtlcView| {
                        h.offered_by_us && h.payment_hash == hash
                    };
                    c.next_htlcs().iter().any(ours) || c.committed_htlcs().iter().any(ours)
                })
            });
            let failed = matches!(
                self.store.invoice(PaymentHash(hash)),
                Ok(Some(i)) if i.status == InvoiceStatus::Cancelled
            );
            if pending && !failed {
                return;
            }
            if let Some(m) = self.migrating.as_mut() {
                m.paying = None;
                if failed {
                    m.next_try = Instant::now() + RETRY;
                    return;
                }
            }
        }
        if !self.transport.is_connected(&self.config.lsp_id) {
            return;
        }
        if self
            .slot(from)
            .is_some_and(|f| f.status != FactoryStatus::Live)
        {
            return;
        }
        let ready = self.slot(into).is_some_and(|f| {
            f.status == FactoryStatus::Live
                && f.links.get(&ChannelRef::Leaf).is_some_and(|l| l.is_ready())
        });
        if !ready {
            return;
        }
        // The HTLC on the old channel must expire no later than the old channels allow (the
        // factory's timeout less its exit time and margin): past that, the old factory is left
        // to the LSP's reclaim, which puts our balance on chain for us.
        let (Some(tip), Some(old), Some(new)) = (self.tip(), self.slot(from), self.slot(into))
        else {
            return;
        };
        let expiry = tip
            .saturating_add(min_final_cltv_expiry_delta(
                &new.factory,
                DEFAULT_MARGIN_BLOCKS,
            ))
            .saturating_add(2 * FORWARD_DELTA);
        let latest = old
            .links
            .values()
            .map(|l| {
                let (ours, theirs) = l.channel().limits();
                ours.max_cltv_expiry.min(theirs.max_cltv_expiry)
            })
            .max()
            .unwrap_or(0);
        if expiry > latest {
            let first = self.migrating.as_ref().is_some_and(|m| !m.too_late);
            if first {
                self.log(format!(
                    "migration: too late to pay out of factory {from} (an HTLC would expire at \
                     block {expiry}, after {latest}); the LSP takes it on chain before its \
                     timeout and what we hold there comes to us on chain"
                ));
            }
            if let Some(m) = self.migrating.as_mut() {
                m.too_late = true;
            }
            return;
        }
        let Some(amount_msat) = self.slot(from).and_then(|f| {
            f.links
                .values()
                .filter(|l| l.is_ready() && l.is_quiet() && l.channel().pending_htlcs() == 0)
                .map(|l| l.channel().sendable_msat())
                .max()
                .filter(|a| *a > 0)
        }) else {
            return;
        };
        let (preimage, hash) = super::channel::fresh_preimage();
        self.send(Message::InvoiceRequest(InvoiceRequest {
            payment_hash: hash,
            amount_msat,
            description: format!("migration out of factory {from}"),
            expiry_secs: 3600,
        }));
        if let Some(m) = self.migrating.as_mut() {
            m.asked = Some((hash, preimage, amount_msat));
        }
    }

    /// The LSP's invoice for a migration payment (`false`: not one).
    pub(super) fn on_migration_invoice(&mut self, reply: &InvoiceReply) -> bool {
        let asked = self
            .migrating
            .as_mut()
            .and_then(|m| m.asked.take_if(|a| a.0 == reply.payment_hash));
        let Some((hash, preimage, amount_msat)) = asked else {
            return false;
        };
        if let Err(why) = self.pay_migration(reply, hash, &preimage, amount_msat) {
            self.log(format!("migration payment not made: {why}"));
            if let Some(m) = self.migrating.as_mut() {
                m.next_try = Instant::now() + RETRY;
            }
        }
        true
    }

    fn pay_migration(
        &mut self,
        reply: &InvoiceReply,
        hash: [u8; 32],
        preimage: &[u8; 32],
        amount_msat: u64,
    ) -> Result<(), String> {
        if !reply.error.is_empty() {
            return Err(format!("the LSP refused the invoice: {}", reply.error));
        }
        let parsed = superscalar_wire::invoice::parse(&reply.bolt11, self.config.network)
            .map_err(|e| format!("the LSP's invoice: {e}"))?;
        if parsed.payment_hash != hash
            || parsed.payee != self.config.lsp_id
            || parsed.amount_msat != Some(amount_msat)
        {
            return Err("the LSP's invoice is not the one asked for".into());
        }
        let (from, _) = self.migration_ends().ok_or("no migration")?;
        let tip = self.tip().ok_or("no chain view")?;
        let (ch, delta) = self
            .slot(from)
            .and_then(|f| {
                f.links
                    .iter()
                    .filter(|(_, l)| l.is_ready() && l.channel().sendable_msat() >= amount_msat)
                    .map(|(ch, l)| (*ch, l.channel().limits().1.min_cltv_expiry_delta))
                    .next()
            })
            .ok_or("no old channel can send it any more")?;
        let delta = (parsed.min_final_cltv_expiry_delta + FORWARD_DELTA).max(delta);
        // The preimage is written before the HTLC leaves (the new channel settles with it).
        self.store
            .insert_invoice(&Invoice {
                payment_hash: PaymentHash(hash),
                direction: InvoiceDirection::Inbound,
                preimage: Some(Preimage(*preimage)),
                amount: Some(Msat(amount_msat)),
                status: InvoiceStatus::Open,
                bolt11: reply.bolt11.clone(),
                claim_deadline: None,
            })
            .map_err(|e| e.to_string())?;
        self.push(
            from,
            ch,
            Intent::Add {
                amount_msat,
                payment_hash: hash,
                cltv_expiry: tip + delta,
            },
        )?;
        if let Some(m) = self.migrating.as_mut() {
            m.paying = Some(hash);
        }
        self.log(format!(
            "migration: paying {amount_msat} msat from factory {from} into our new channel ({})",
            hash.to_lower_hex_string()
        ));
        self.poll_link();
        Ok(())
    }

    /// The old factory holds nothing of ours any more: it is over for us.
    fn finish_migration(&mut self) {
        let Some(p) = self.predecessor.as_ref() else {
            return;
        };
        let empty = p.links.values().all(|l| {
            let c = l.channel();
            c.balance_msat() == 0
                && c.pending_htlcs() == 0
                && c.next_htlcs().is_empty()
                && l.is_quiet()
        });
        if !empty {
            return;
        }
        let id = p.id;
        if let Err(e) = self.store.apply(&Change::Status {
            factory: convert::factory_id(id),
            status: FactoryStatus::Closed,
        }) {
            return tracing::warn!("factory {id}: cannot record our migration out of it: {e}");
        }
        self.predecessor = None;
        self.migrating = None;
        let new = self.factory.as_ref().map(|f| f.id.to_string());
        self.log(format!(
            "factory {id}: migrated out (our balance is in factory {})",
            new.unwrap_or_default()
        ));
    }

    /// `migration` in the API's `status`.
    pub(super) fn migration_json(&self) -> Value {
        let Some(m) = self.migrating.as_ref() else {
            return Value::Null;
        };
        let from_balance: u64 = self
            .slot(m.from)
            .map(|f| f.links.values().map(|l| l.channel().balance_msat()).sum())
            .unwrap_or(0);
        json!({
            "from": m.from.to_string(),
            "into": self.migration_ends().map(|(_, into)| into.to_string()),
            "left_msat": from_balance,
            "paying": m.paying.map(|h| h.to_lower_hex_string()),
        })
    }
}
