//! The client's side of a cooperative close the LSP proposes ([`superscalar_core::close`]).
//!
//! The client signs only a close that pays it exactly what its own channels hold (its balance in
//! every channel of the factory, rounded down to the satoshi, and its fee coin) at no less than
//! [`MIN_CLOSE_FEE_RATE`], with no payment under way in any of its channels; anything else is
//! refused with the reason (`Abort`), and nothing is stored.
//!
//! Order: the proposal is checked and answered with a nonce (kept in memory only). At the
//! aggregated nonce the checks are made again against the channels as they are now, then the
//! close is recorded ([`superscalar_store::Store::record_close`]: the terms and the spend of the
//! funding outpoint) before the partial signature leaves. From the proposal on, the client
//! starts no payment and fails incoming HTLCs; once the close is recorded this lasts until the
//! close confirms (the LSP could complete and publish it with these balances), and the client
//! signs no other close of the factory. With the aggregated signature the client completes the
//! transaction it built itself, checks the signature, stores and broadcasts it on its own chain
//! connection, and counts the factory closed once its own chain shows the close confirmed.
//!
//! A client that recorded a close and never sees it confirm keeps every other way out: its
//! exit path and the timeout payouts stay valid until the funding output is spent.

use bitcoin::{FeeRate, Transaction, Txid};
use serde_json::{json, Value};
use superscalar_chain::{Chain, TxStatus};
use superscalar_core::close::msg::{CloseBody, CloseMsg};
use superscalar_core::close::{ClientExpectation, CloseRecord, CloseSigner, CloseTerms};
use superscalar_core::codec::{decode, encode};
use superscalar_core::{Factory, FactoryId};
use superscalar_store::{convert, Change, FactoryStatus, Spend, TxLabel};
use superscalar_wire::messages::Message;

use super::Client;

/// The store label (and spend role) of a factory's cooperative close.
pub const CLOSE_LABEL: &str = "close";
/// The lowest fee rate of a close this client signs (a close that never confirms keeps its
/// channels frozen until it exits).
pub const MIN_CLOSE_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(250);

/// A close being signed: the client's nonce lives here only.
pub(super) struct Signing {
    factory: FactoryId,
    id: u64,
    signer: CloseSigner,
}

/// A close this client recorded (and signed, once its partial signature left).
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) txid: Txid,
    pub(super) terms: CloseTerms,
    /// The signed transaction, once the LSP sent the aggregated signature.
    pub(super) tx: Option<Transaction>,
}

impl Client {
    /// Whether the factory's channels are frozen by a close (being signed, or recorded).
    pub(super) fn close_frozen(&self) -> bool {
        self.cooperative.is_some()
            || self.rotating.is_some()
            || self.factory.as_ref().is_some_and(|f| f.close.is_some())
    }

    /// What this client is owed now, or why its channels cannot be closed now.
    fn close_owed(&self) -> Result<bitcoin::Amount, String> {
        let f = self.factory.as_ref().ok_or("not in a factory")?;
        let mut balances = Vec::new();
        for (ch, link) in &f.links {
            let c = link.channel();
            if !link.is_quiet() || c.pending_htlcs() > 0 || !c.next_htlcs().is_empty() {
                return Err(format!("our {ch} channel has a payment under way"));
            }
            balances.push(c.balance_msat());
        }
        Ok(f.factory.client_close_amount(&balances))
    }

    /// A step of a close from the LSP.
    pub(super) fn on_close(&mut self, msg: CloseMsg) {
        let (factory, id) = (msg.factory, msg.close);
        match msg.body {
            CloseBody::Propose(terms) => {
                if let Err(why) = self.start_close(factory, id, &terms) {
                    self.log(format!("refused the LSP's close of {factory}: {why}"));
                    self.send_close(factory, id, CloseBody::Abort(why));
                }
            }
            CloseBody::AggNonce(agg) => {
                if !self
                    .cooperative
                    .as_ref()
                    .is_some_and(|s| s.factory == factory && s.id == id)
                {
                    return tracing::debug!("an aggregated nonce of no close under way");
                }
                if let Err(why) = self.sign_close(agg) {
                    self.cooperative = None;
                    self.log(format!("close of {factory} not signed: {why}"));
                    self.send_close(factory, id, CloseBody::Abort(why));
                }
            }
            CloseBody::Done(sig) => {
                let signer = self
                    .cooperative
                    .take()
                    .filter(|s| s.factory == factory && s.id == id);
                let Some(signer) = signer else {
                    return tracing::debug!("a signature of no close under way");
                };
                match signer.signer.complete(&sig) {
                    Ok(tx) => self.close_completed(tx),
                    Err(e) => self.log(format!(
                        "the LSP's signature of the close of {factory} is refused: {e}"
                    )),
                }
            }
            CloseBody::Abort(reason) => {
                if self
                    .cooperative
                    .as_ref()
                    .is_some_and(|s| s.factory == factory && s.id == id)
                {
                    self.cooperative = None;
                    self.log(format!(
                        "the LSP abandoned the close of {factory}: {reason}"
                    ));
                }
                if self
                    .rotating
                    .as_ref()
                    .is_some_and(|r| r.factory == factory && r.close == id)
                {
                    self.end_rotation(&format!("the LSP abandoned it: {reason}"));
                }
            }
            CloseBody::Invite { balance_msat } => self.on_invite(factory, id, balance_msat),
            CloseBody::Migrate { balance_msat } => self.on_migrate(factory, id, balance_msat),
            other => tracing::debug!("a {} is not for a client", other.name()),
        }
    }

    /// Sends `body` about close `id` of `factory` to the LSP.
    pub(super) fn send_close(&self, factory: FactoryId, id: u64, body: CloseBody) {
        self.send(Message::Close(Box::new(CloseMsg {
            factory,
            close: id,
            body,
        })));
    }

    fn start_close(
        &mut self,
        factory: FactoryId,
        id: u64,
        terms: &CloseTerms,
    ) -> Result<(), String> {
        let f = self.factory.as_ref().ok_or("we are in no factory")?;
        if f.id != factory {
            return Err(format!("we are not in factory {factory}"));
        }
        if f.status != FactoryStatus::Live || f.exit.is_some() {
            return Err(format!("our factory is {}", f.status));
        }
        if self.updating.is_some() || self.buying.is_some() {
            return Err("an update of the factory is under way".into());
        }
        let owed = self.close_owed()?;
        let position = self
            .factory
            .as_ref()
            .ok_or("we are in no factory")?
            .position;
        let rolls_us = terms
            .successor
            .as_ref()
            .is_some_and(|s| s.rolled.contains(&position));
        let successor = if rolls_us {
            Some(self.expect_successor(factory, id, terms)?)
        } else {
            None
        };
        let f = self.factory.as_ref().ok_or("we are in no factory")?;
        let expected = ClientExpectation {
            client: f.position,
            funding: f.funding,
            owed,
            min_fee_rate: MIN_CLOSE_FEE_RATE,
            successor,
        };
        let signed_before = f.close.as_ref().map(|r| CloseRecord {
            terms: r.terms.clone(),
            txid: r.txid,
        });
        let keypair = self
            .keys
            .factory_key(f.key_index)
            .map_err(|e| e.to_string())?;
        let (signer, nonce) = CloseSigner::client(
            &f.factory,
            keypair,
            terms,
            &expected,
            signed_before.as_ref(),
        )
        .map_err(|e| e.to_string())?;
        self.cooperative = Some(Signing {
            factory,
            id,
            signer,
        });
        self.send_close(factory, id, CloseBody::Nonce(nonce));
        self.log(format!(
            "factory {factory}: the LSP's close pays us {} sat: nonce sent",
            owed.to_sat()
        ));
        Ok(())
    }

    /// Checks again, records the close, then sends the partial signature.
    fn sign_close(&mut self, agg: superscalar_core::musig::AggNonce) -> Result<(), String> {
        let owed = self.close_owed()?;
        let f = self.factory.as_ref().ok_or("we are in no factory")?;
        let s = self.cooperative.as_ref().ok_or("no close under way")?;
        let record = s.signer.record();
        let position = f.position.0 as usize;
        if record.terms.clients.get(position) != Some(&owed) {
            return Err("our channels changed since the proposal".into());
        }
        if let Some(s) = record
            .terms
            .successor
            .as_ref()
            .filter(|s| s.rolled.contains(&f.position))
        {
            self.check_successor_signed(record.txid, &s.output)?;
        }
        let close = s.signer.close();
        let spend = Spend {
            role: TxLabel::new(CLOSE_LABEL).map_err(|e| e.to_string())?,
            sighash: Factory::sighash(&close.tx, &close.spent),
            txid: record.txid,
        };
        let (fid, funding) = (convert::factory_id(f.id), f.funding);
        self.store
            .record_close(fid, funding, &spend, &encode(&record.terms))
            .map_err(|e| format!("cannot record the close: {e}"))?;
        if let Some(f) = self.factory.as_mut() {
            f.close = Some(Recorded {
                txid: record.txid,
                terms: record.terms.clone(),
                tx: None,
            });
        }
        let s = self.cooperative.as_mut().ok_or("no close under way")?;
        let partial = s.signer.sign(&agg).map_err(|e| e.to_string())?;
        let (factory, id) = (s.factory, s.id);
        self.send_close(factory, id, CloseBody::Partial(partial));
        self.log(format!(
            "factory {factory}: close {} recorded and signed",
            record.txid
        ));
        Ok(())
    }

    /// The LSP's aggregated signature completed our close: store it, broadcast it ourselves.
    fn close_completed(&mut self, tx: Transaction) {
        let Some(f) = self.factory.as_mut() else {
            return;
        };
        let fid = convert::factory_id(f.id);
        if let Err(e) = self.store.add_signed_txs(
            fid,
            &[superscalar_store::SignedTx {
                label: TxLabel::new(CLOSE_LABEL).expect("a valid label"),
                tx: tx.clone(),
            }],
        ) {
            tracing::warn!("the signed close is not stored: {e}");
        }
        if let Some(r) = f.close.as_mut() {
            r.tx = Some(tx.clone());
        }
        let id = f.id;
        let txid = tx.compute_txid();
        if let Err(e) = self.chain(|c| c.submit_transaction(&tx)) {
            tracing::debug!("close {txid}: {e}");
        }
        self.log(format!(
            "factory {id}: close {txid} signed by all and broadcast"
        ));
    }

    /// Counts the factory closed once our own chain shows the close confirmed; broadcasts it
    /// again while it is not known.
    pub(super) fn close_tick(&mut self) {
        let Some(f) = self.factory.as_ref() else {
            return;
        };
        let Some(r) = f.close.as_ref() else {
            return;
        };
        if f.status != FactoryStatus::Live {
            return;
        }
        let (id, txid, tx) = (f.id, r.txid, r.tx.clone());
        match self.chain(|c| c.tx_status(&txid)) {
            Ok(TxStatus::Confirmed { height, .. }) => {
                let fid = convert::factory_id(id);
                if let Err(e) = self.store.apply(&Change::Status {
                    factory: fid,
                    status: FactoryStatus::Closed,
                }) {
                    return tracing::warn!("factory {id}: {e}");
                }
                let paid = self.close_payout();
                let rolled = r
                    .terms
                    .successor
                    .as_ref()
                    .is_some_and(|s| s.rolled.contains(&f.position));
                if let Some(f) = self.factory.as_mut() {
                    f.status = FactoryStatus::Closed;
                }
                if rolled {
                    self.log(format!(
                        "factory {id}: closed by its rotation ({txid} confirmed at {height}); \
                         our balance is in its successor"
                    ));
                    return self.promote_successor(txid);
                }
                self.log(format!(
                    "factory {id}: closed cooperatively ({txid} confirmed at {height}); {}",
                    paid.map_or(
                        "nothing paid to us (below dust)".into(),
                        |(vout, amount)| {
                            format!(
                                "{} sat paid to our payout at {txid}:{vout}",
                                amount.to_sat()
                            )
                        }
                    )
                ));
            }
            Ok(TxStatus::Unknown) => {
                if let Some(tx) = tx {
                    if let Err(e) = self.chain(|c| c.submit_transaction(&tx)) {
                        tracing::debug!("close {txid} again: {e}");
                    }
                }
            }
            _ => {}
        }
    }

    /// Our output of the recorded close, if above dust: its index and amount.
    fn close_payout(&self) -> Option<(u32, bitcoin::Amount)> {
        let f = self.factory.as_ref()?;
        let r = f.close.as_ref()?;
        let close = f.factory.close_tx(&r.terms).ok()?;
        let vout = close.client_outputs.get(f.position.0 as usize).copied()??;
        Some((vout, close.tx.output[vout as usize].value))
    }

    /// The close recorded for `factory` in the store (at a restart), with its signed
    /// transaction if it was completed.
    pub(super) fn load_close(&self, factory: FactoryId) -> Result<Option<Recorded>, String> {
        let fid = convert::factory_id(factory);
        let Some((txid, bytes)) = self.store.recorded_close(fid).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let terms: CloseTerms = decode(&bytes).map_err(|e| format!("stored close: {e:?}"))?;
        let tx = self
            .store
            .signed_txs(fid)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|t| t.label.as_str() == CLOSE_LABEL)
            .map(|t| t.tx);
        Ok(Some(Recorded { txid, terms, tx }))
    }

    /// `close` in the API's `status`.
    pub(super) fn close_json(&self) -> Value {
        let Some(r) = self.factory.as_ref().and_then(|f| f.close.as_ref()) else {
            return match &self.cooperative {
                Some(s) => json!({ "factory": s.factory.to_string(), "signing": true }),
                None => Value::Null,
            };
        };
        let payout = self.close_payout();
        json!({
            "txid": r.txid.to_string(),
            "signed": r.tx.is_some(),
            "amount_sat": payout.map(|(_, a)| a.to_sat()),
            "output": payout.map(|(v, _)| format!("{}:{v}", r.txid)),
        })
    }
}
