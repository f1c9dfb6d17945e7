//! The client's side of a rotation: its factory's close funds a successor, and its balance
//! moves into its channel there.
//!
//! Order: the LSP invites the client with its balance as the LSP counts it; the client checks
//! it against its own channels (every one quiet, summed to the millisatoshi) and answers with a
//! fresh key, its payout script and its channel's capacity in the successor (a roll; its
//! channels freeze). Then come the close's terms, which must roll the client into a successor
//! output, checked as any close's (its amount is its balance and fee coin); from them the client
//! knows the successor's funding outpoint (the close's output 0: its txid is fixed by the
//! terms) and output. It signs the successor's tree as it joins any factory, only if the
//! successor spends exactly that output and opens the client's channel at exactly its balance;
//! and it signs the close only once the successor is signed.
//!
//! The successor is kept beside the factory until the close confirms on the client's own chain:
//! then the old factory is `closed` and the successor becomes the client's factory (live once
//! its funding, the close, is confirmed; its channel then opens at the rolled balance). If the
//! close never confirms, the old factory's exit path and timeouts stay valid.
//!
//! A rotation the LSP abandons, or a lost connection, or one left hanging for
//! [`ROTATION_PATIENCE`], before the close is recorded leaves the client in its factory (the successor, if signed, is recorded aborted: its funding can never
//! exist). At a restart, a signed successor is kept (the LSP may propose the same close again;
//! its funding needs our signature, so keeping it risks nothing) until the close confirms or
//! another rotation starts, which voids it.

use bitcoin::{Amount, OutPoint, TxOut};
use serde_json::{json, Value};
use superscalar_core::close::msg::{CloseBody, CloseMsg};
use superscalar_core::close::CloseTerms;
use superscalar_core::FactoryId;
use superscalar_store::{convert, Change, FactoryStatus};
use superscalar_wire::messages::Message;

use super::{start_joining, Client, InFactory};
use crate::join::SuccessorCheck;

/// A rotation this client rolls into.
pub(super) struct Rotating {
    pub(super) factory: FactoryId,
    pub(super) close: u64,
    pub(super) balance_msat: u64,
    /// When we rolled: an LSP that never finishes does not keep our channels frozen.
    started: std::time::Instant,
}

/// How long a rotation may keep our channels frozen before its close is recorded: the LSP
/// abandons it after its round timeout, so this only ends a rotation an LSP left hanging.
pub const ROTATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

impl Client {
    /// The LSP invites us to roll factory `factory`'s balance into a successor.
    pub(super) fn on_invite(&mut self, factory: FactoryId, close: u64, balance_msat: u64) {
        match self.start_roll(factory, close, balance_msat) {
            Ok(roll) => {
                self.send(Message::Close(Box::new(CloseMsg {
                    factory,
                    close,
                    body: roll,
                })));
                self.log(format!(
                    "factory {factory}: rolling our {balance_msat} msat into its successor"
                ));
            }
            Err(why) => {
                self.log(format!("refused the LSP's rotation of {factory}: {why}"));
                self.send_close(factory, close, CloseBody::Abort(why));
            }
        }
    }

    /// Our factory, if it is `factory`, live, and neither exiting nor closing: what a rotation
    /// or a migration starts from.
    pub(super) fn live_factory(&self, factory: FactoryId) -> Result<&InFactory, String> {
        let f = self.factory.as_ref().ok_or("we are in no factory")?;
        if f.id != factory {
            return Err(format!("we are not in factory {factory}"));
        }
        if f.status != FactoryStatus::Live || f.exit.is_some() {
            return Err(format!("our factory is {}", f.status));
        }
        if f.close.is_some() {
            return Err("a close of our factory is recorded".into());
        }
        Ok(f)
    }

    fn start_roll(
        &mut self,
        factory: FactoryId,
        close: u64,
        balance_msat: u64,
    ) -> Result<CloseBody, String> {
        let f = self.live_factory(factory)?;
        if self.rotating.is_some() || self.joining.is_some() {
            return Err("a rotation is under way".into());
        }
        if self.migrating.is_some() || self.migrating_into().is_some() {
            return Err("a migration is under way".into());
        }
        let mut ours = 0u64;
        for (ch, link) in &f.links {
            let c = link.channel();
            if !link.is_quiet() || c.pending_htlcs() > 0 || !c.next_htlcs().is_empty() {
                return Err(format!("our {ch} channel has a payment under way"));
            }
            ours = ours.saturating_add(c.balance_msat());
        }
        if ours != balance_msat {
            return Err(format!(
                "our balance is {ours} msat, not the {balance_msat} msat the LSP counts"
            ));
        }
        if let Some(stale) = self.successor.take() {
            // A successor whose close we never recorded (a rotation interrupted by a restart):
            // its funding can never exist, and the LSP starts over.
            if let Err(e) = self.store.apply(&Change::Status {
                factory: convert::factory_id(stale.id),
                status: FactoryStatus::Aborted,
            }) {
                self.successor = Some(stale);
                return Err(format!("cannot void our stale successor: {e}"));
            }
            self.log(format!(
                "successor {}: void (a new rotation starts)",
                stale.id
            ));
        }
        if self.updating.is_some() || self.buying.is_some() || self.cooperative.is_some() {
            return Err("an update of the factory is under way".into());
        }
        // The channel in the successor holds at least the balance, and what we asked for.
        let capacity = self
            .config
            .capacity
            .max(Amount::from_sat(balance_msat.div_ceil(1000)));
        let (joining, join) =
            start_joining(&mut self.store, &self.keys, self.config.network, capacity)
                .map_err(|e| e.to_string())?;
        let Message::Join(join) = join else {
            return Err("no join message".into());
        };
        self.joining = Some(joining.for_rotation());
        self.rotating = Some(Rotating {
            factory,
            close,
            balance_msat,
            started: std::time::Instant::now(),
        });
        Ok(CloseBody::Roll {
            key: join.key,
            payout: join.payout,
            capacity_sat: join.capacity_sat,
        })
    }

    /// Terms that roll us into a successor: the successor output we agree to fund (the
    /// joining is told what the successor must be, or the successor we hold is checked).
    pub(super) fn expect_successor(
        &mut self,
        factory: FactoryId,
        close: u64,
        terms: &CloseTerms,
    ) -> Result<TxOut, String> {
        let f = self.factory.as_ref().ok_or("we are in no factory")?;
        let output = terms
            .successor
            .as_ref()
            .map(|s| s.output.clone())
            .ok_or("no successor")?;
        let txid = f
            .factory
            .close_tx(terms)
            .map_err(|e| e.to_string())?
            .tx
            .compute_txid();
        let funding = OutPoint::new(txid, 0);
        // The close proposed again after an interruption: the successor we signed.
        if let Some(s) = &self.successor {
            let same =
                s.funding == funding && s.factory.funding_output().ok().as_ref() == Some(&output);
            return if same {
                Ok(output)
            } else {
                Err("terms that fund another successor than the one we signed".into())
            };
        }
        let rotating = self
            .rotating
            .as_ref()
            .filter(|r| r.factory == factory && r.close == close)
            .ok_or("terms that roll us into a successor we were not invited to")?;
        let check = SuccessorCheck {
            funding,
            output: output.clone(),
            opening_msat: rotating.balance_msat,
        };
        let joining = self
            .joining
            .as_mut()
            .filter(|j| j.is_rotation())
            .ok_or("no successor being joined")?;
        joining.expect_successor(check).map_err(|e| e.to_string())?;
        Ok(output)
    }

    /// Before our partial signature of a close rolling us: the successor must be signed, and
    /// be the output the close funds.
    pub(super) fn check_successor_signed(
        &self,
        txid: bitcoin::Txid,
        output: &TxOut,
    ) -> Result<(), String> {
        let s = self
            .successor
            .as_ref()
            .ok_or("our successor is not signed yet")?;
        if s.funding != OutPoint::new(txid, 0)
            || s.factory.funding_output().ok().as_ref() != Some(output)
        {
            return Err("the close funds another successor than the one we signed".into());
        }
        Ok(())
    }

    /// The rotation ends without its close recorded (abandoned, refused, disconnected): the
    /// successor, if any, is void.
    pub(super) fn end_rotation(&mut self, why: &str) {
        let recorded = self.factory.as_ref().is_some_and(|f| f.close.is_some());
        if recorded {
            return;
        }
        let rotating = self.rotating.take();
        if self.joining.as_ref().is_some_and(|j| j.is_rotation()) {
            self.drop_joining(why);
        }
        if let Some(s) = self.successor.take() {
            if let Err(e) = self.store.apply(&Change::Status {
                factory: convert::factory_id(s.id),
                status: FactoryStatus::Aborted,
            }) {
                tracing::warn!("successor {}: cannot record its abort: {e}", s.id);
            }
        }
        if let Some(r) = rotating {
            self.log(format!("factory {}: rotation ended: {why}", r.factory));
        }
    }

    /// Ends a rotation the LSP left hanging (nothing recorded after [`ROTATION_PATIENCE`]): our
    /// channels thaw, and the LSP is told.
    pub(super) fn rotation_tick(&mut self) {
        let late = self
            .rotating
            .as_ref()
            .filter(|r| r.started.elapsed() > ROTATION_PATIENCE)
            .map(|r| (r.factory, r.close));
        let recorded = self.factory.as_ref().is_some_and(|f| f.close.is_some());
        if let (Some((factory, close)), false) = (late, recorded) {
            let why = "the LSP did not finish the rotation in time".to_owned();
            self.cooperative = None;
            self.end_rotation(&why);
            self.send_close(factory, close, CloseBody::Abort(why));
        }
    }

    /// Our factory's close confirmed: its successor, if it funds one, is our factory now.
    pub(super) fn promote_successor(&mut self, close: bitcoin::Txid) {
        let Some(s) = self.successor.take() else {
            return;
        };
        if s.funding.txid != close {
            self.successor = Some(s);
            return;
        }
        self.rotating = None;
        self.watching = None;
        let (id, opening) = (s.id, s.factory.params().opening_msat(s.position));
        self.factory = Some(s);
        self.log(format!(
            "successor {id} is our factory now: our channel opens there with {opening} msat"
        ));
    }

    /// The successor just signed (its joining completed).
    pub(super) fn successor_signed(&mut self, s: InFactory) {
        self.log(format!(
            "successor {}: every signature of our exit path and timeouts verified; the close \
             that funds it is signed next",
            s.id
        ));
        self.successor = Some(s);
    }

    /// `successor` in the API's `status`.
    pub(super) fn successor_json(&self) -> Value {
        match (&self.successor, &self.rotating) {
            (Some(s), _) => json!({
                "factory": s.id.to_string(),
                "status": s.status.as_str(),
                "funding": s.funding.to_string(),
                "opening_msat": s.factory.params().opening_msat(s.position),
            }),
            (None, Some(r)) => json!({
                "rolling_from": r.factory.to_string(),
                "balance_msat": r.balance_msat,
            }),
            (None, None) => Value::Null,
        }
    }
}
