//! The LSP's side of a cooperative close (`close-factory`): one key-path spend of the funding
//! output paying every client its balances and fee coin and the LSP the rest, signed in two
//! MuSig2 rounds by the LSP and every client ([`superscalar_core::close`]).
//!
//! Order and rules:
//! 1. Every member must be connected, and every channel of the factory quiet (between rounds,
//!    nothing queued, no HTLC): the balances the terms pay are the channels' latest committed
//!    ones. From the proposal on, the factory's channels are frozen: no payment is forwarded
//!    into or out of them, and no update or sale starts.
//! 2. Each client checks the terms against its own records and answers with its nonce, or
//!    refuses (the close is abandoned, the refusal reported to the operator, the channels thawed).
//! 3. Once every nonce is in, the LSP records the close ([`Store::record_close`]: the terms and
//!    its spend of the funding outpoint) before the aggregated nonce goes out; from then on it
//!    only ever signs this close of the factory (a `close-factory` again proposes the recorded
//!    terms), and the channels stay frozen: a client that sent its partial signature has bound
//!    itself to these balances.
//! 4. Once every partial signature is in and checked, the signed close is stored, broadcast,
//!    and each client gets the aggregated signature (it completes and broadcasts the same
//!    transaction itself). The factory stays `live` (its tree watched: a client may still
//!    publish its exit first) until the close confirms, then it is `closed`.
//!
//! A refusal, a lost connection, or `round_timeout` without progress abandons the close. A
//! restart abandons an unfinished close the same way (its nonces are gone); a factory with a
//! recorded close stays frozen after a restart.
//!
//! The end of a factory's life: once its active period is over it is `dying`, and the LSP
//! proposes its close by itself at every block until one is signed ([`Lsp::lifecycle_tick`]),
//! because at T the inverted timeouts pay the clients all the tree holds, the LSP's channel
//! balances too.
//!
//! [`Store::record_close`]: superscalar_store::Store::record_close

use std::time::Instant;

use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, FeeRate, Transaction};
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::{Chain, TxStatus};
use superscalar_core::close::msg::{CloseBody, CloseMsg};
use superscalar_core::close::{CloseCoordinator, CloseRecord, CloseSigner, CloseTerms};
use superscalar_core::codec::{decode, encode};
use superscalar_core::{ClientId, Factory, FactoryId, Signer};
use superscalar_store::{convert, Change, FactoryStatus, Spend, TxLabel};
use superscalar_wire::messages::Message;

use super::Lsp;

/// The store label (and spend role) of a factory's cooperative close.
pub const CLOSE_LABEL: &str = "close";

/// A cooperative close being signed.
pub(super) struct Closing {
    pub(super) factory: FactoryId,
    id: u64,
    terms: CloseTerms,
    coordinator: CloseCoordinator,
    signer: CloseSigner,
    /// The members' node ids, by position.
    members: Vec<PublicKey>,
    /// Whether the aggregated nonce went out (the close is recorded).
    agg_sent: bool,
    round_started: Instant,
    pub(super) reply: Option<superscalar_api::Request>,
    /// A rotation's successor, which the close funds (its output 0).
    pub(super) successor: Option<FactoryId>,
    /// The aggregated nonce, held until the successor is signed.
    held_agg: Option<superscalar_core::musig::AggNonce>,
}

impl Closing {
    /// A close whose LSP nonce is in `coordinator`, proposed to `members`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        factory: FactoryId,
        id: u64,
        terms: CloseTerms,
        coordinator: CloseCoordinator,
        signer: CloseSigner,
        members: Vec<PublicKey>,
        successor: Option<FactoryId>,
        reply: Option<superscalar_api::Request>,
    ) -> Self {
        Closing {
            factory,
            id,
            terms,
            coordinator,
            signer,
            members,
            agg_sent: false,
            round_started: Instant::now(),
            reply,
            successor,
            held_agg: None,
        }
    }
}

/// The factory id and fee rate of a `close-factory` or `rotate-factory` request.
pub(super) fn parse_close_params(
    params: &Value,
    default_fee_rate: FeeRate,
) -> Result<(FactoryId, FeeRate), ApiError> {
    let id = params
        .get("factory")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid_params("factory: a factory id in hex"))?;
    let id: FactoryId = id
        .parse()
        .map_err(|_| ApiError::invalid_params(format!("{id:?} is not a factory id")))?;
    let fee_rate = match params.get("fee_rate") {
        None | Some(Value::Null) => default_fee_rate,
        Some(v) => v
            .as_u64()
            .filter(|r| (1..=10_000).contains(r))
            .map(|r| FeeRate::from_sat_per_vb_u32(r as u32))
            .ok_or_else(|| {
                ApiError::invalid_params("fee_rate: sat/vB, a whole number from 1 to 10000")
            })?,
    };
    Ok((id, fee_rate))
}

impl Lsp {
    /// The operator's `close-factory`: answered once the close is broadcast or abandoned.
    pub(super) fn operator_close(&mut self, request: superscalar_api::Request) {
        match self.start_close(&request.params) {
            Ok(()) => {
                if let Some(c) = self.closing.as_mut() {
                    c.reply = Some(request);
                }
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    /// What each client is owed now: its balances in every channel of the factory, rounded
    /// down to the satoshi, and its fee coin; or why the channels cannot be closed now.
    fn close_amounts(&self, id: FactoryId, factory: &Factory) -> Result<Vec<Amount>, String> {
        Ok(self
            .channel_balances(id, factory)?
            .iter()
            .map(|b| factory.client_close_amount(b))
            .collect())
    }

    /// Each client's balance in each of its channels of the factory (msat), by position; or
    /// why the channels cannot be closed now (one is opening, or a payment is under way).
    pub(super) fn channel_balances(
        &self,
        id: FactoryId,
        factory: &Factory,
    ) -> Result<Vec<Vec<u64>>, String> {
        if self.channels.offers.keys().any(|k| k.0 == id) {
            return Err("a channel of this factory is still being opened".into());
        }
        let n = factory.params().clients.len();
        let mut balances: Vec<Vec<u64>> = vec![Vec::new(); n];
        for (k, leaf) in &self.channels.leaves {
            if k.0 != id {
                continue;
            }
            let c = leaf.link.channel();
            if !leaf.link.is_quiet() || c.pending_htlcs() > 0 || !c.next_htlcs().is_empty() {
                return Err(format!(
                    "client {}'s {} channel has a payment under way",
                    leaf.client_index(),
                    leaf.channel
                ));
            }
            let i = leaf.client_index() as usize;
            balances
                .get_mut(i)
                .ok_or("a channel of an unknown client")?
                .push(c.their_balance_msat());
        }
        Ok(balances)
    }

    fn start_close(&mut self, params: &Value) -> Result<(), ApiError> {
        let (id, fee_rate) = parse_close_params(params, self.config.funding_fee_rate)?;
        self.propose_close(id, fee_rate)
    }

    /// Factory `id` as it can be closed now: its factory, its members (all connected) and its
    /// funding outpoint (unspent in our chain); or why not.
    pub(super) fn closable(
        &mut self,
        id: FactoryId,
    ) -> Result<(std::sync::Arc<Factory>, Vec<PublicKey>, bitcoin::OutPoint), ApiError> {
        if let Some(c) = &self.closing {
            return Err(ApiError::app(
                -6,
                format!("the close of factory {} is being signed", c.factory),
            ));
        }
        if let Some(r) = &self.rotating {
            return Err(ApiError::app(
                -6,
                format!("the rotation of factory {} is under way", r.factory()),
            ));
        }
        if self.updating.is_some() {
            return Err(ApiError::app(-6, "an update is being signed: try again"));
        }
        if let Some(tx) = self.signed_closes.get(&id) {
            return Err(ApiError::app(
                -6,
                format!(
                    "factory {id} is closed by {}, not yet confirmed",
                    tx.compute_txid()
                ),
            ));
        }
        let members = self
            .factories
            .get(&id)
            .filter(|f| matches!(f.status, FactoryStatus::Live | FactoryStatus::Dying))
            .map(|f| f.members.clone())
            .ok_or_else(|| ApiError::app(-4, format!("no live factory {id}")))?;
        let offline: Vec<usize> = members
            .iter()
            .enumerate()
            .filter(|(_, m)| !self.transport.is_connected(m))
            .map(|(i, _)| i)
            .collect();
        if !offline.is_empty() {
            return Err(ApiError::app(
                -5,
                format!("clients {offline:?} are not connected: every client signs a close"),
            ));
        }
        let record = self
            .store
            .factory(convert::factory_id(id))
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::app(-4, format!("no factory {id}")))?;
        let funding = record
            .funding
            .ok_or_else(|| ApiError::internal("the factory has no funding outpoint"))?;
        // A client's exit (or a close signed earlier) spent it: only exits are left.
        match self.chain(|c| c.get_utxo(&funding)) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ApiError::app(
                    -4,
                    format!(
                        "factory {id}'s funding output {funding} is spent on chain (a client \
                         exited): it cannot be closed cooperatively"
                    ),
                ))
            }
            Err(e) => return Err(ApiError::app(-6, format!("no chain view: {e}"))),
        }
        let factory = self
            .factory_state(id)
            .map(|(f, _, _)| f.clone())
            .map_err(ApiError::internal)?;
        Ok((factory, members, funding))
    }

    /// Proposes the cooperative close of factory `id` at `fee_rate` to its members (or the
    /// close recorded for it, a rotation's included).
    pub(super) fn propose_close(
        &mut self,
        id: FactoryId,
        fee_rate: FeeRate,
    ) -> Result<(), ApiError> {
        let (_, members, funding) = self.closable(id)?;
        let (factory, _, key_index) = self
            .factory_state(id)
            .map(|(f, s, k)| (f.clone(), s.clone(), *k))
            .map_err(ApiError::internal)?;
        let amounts = self
            .close_amounts(id, &factory)
            .map_err(|e| ApiError::app(-6, e))?;
        let recorded = self
            .store
            .recorded_close(convert::factory_id(id))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut successor = None;
        let (terms, signed_before) = match recorded {
            Some((txid, bytes)) => {
                let terms: CloseTerms = decode(&bytes)
                    .map_err(|e| ApiError::internal(format!("the recorded close: {e:?}")))?;
                if terms.clients != amounts {
                    return Err(ApiError::internal(format!(
                        "the close recorded for {id} ({txid}) pays other amounts than the \
                         channels hold now"
                    )));
                }
                if terms.successor.is_some() {
                    successor = Some(self.successor_of_close(&txid).ok_or_else(|| {
                        ApiError::internal(format!(
                            "the close recorded for {id} ({txid}) funds a successor we do not hold"
                        ))
                    })?);
                }
                let record = CloseRecord {
                    terms: terms.clone(),
                    txid,
                };
                (terms, Some(record))
            }
            None => {
                let terms = CloseTerms {
                    factory: id,
                    funding,
                    clients: amounts,
                    lsp_script: self.wallet.new_address().script_pubkey(),
                    fee_rate,
                    successor: None,
                };
                (terms, None)
            }
        };
        let keypair = self
            .keys
            .factory_key(key_index)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut coordinator = CloseCoordinator::new(&factory, &terms)
            .map_err(|e| ApiError::app(-6, format!("cannot close: {e}")))?;
        let (signer, nonce) = CloseSigner::lsp(&factory, keypair, &terms, signed_before.as_ref())
            .map_err(|e| ApiError::app(-6, format!("cannot close: {e}")))?;
        coordinator
            .add_nonce(Signer::Lsp, nonce)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let close_id = self.next_update_id();
        self.channels.frozen.insert(id);
        for (i, m) in members.iter().enumerate() {
            let mut t = terms.clone();
            if self.config.fault == Some(super::Fault::CloseOverpays) && i == 0 {
                t.clients[0] += Amount::from_sat(1);
            }
            self.send(
                *m,
                Message::Close(Box::new(CloseMsg {
                    factory: id,
                    close: close_id,
                    body: CloseBody::Propose(Box::new(t)),
                })),
            );
        }
        self.log(format!(
            "factory {id}: cooperative close proposed to {} clients (fee rate {} sat/vB)",
            members.len(),
            terms.fee_rate.to_sat_per_vb_ceil()
        ));
        self.closing = Some(Closing::new(
            id,
            close_id,
            terms,
            coordinator,
            signer,
            members,
            successor,
            None,
        ));
        Ok(())
    }

    /// A step of a close (or of a rotation's invitation) from a client.
    pub(super) fn on_close(&mut self, peer: PublicKey, msg: CloseMsg) {
        let inviting = self
            .rotating
            .as_ref()
            .is_some_and(|r| r.factory() == msg.factory && r.close_id() == msg.close);
        if inviting {
            return self.on_rotation_msg(peer, msg);
        }
        let Some(c) = self
            .closing
            .as_mut()
            .filter(|c| c.factory == msg.factory && c.id == msg.close)
        else {
            return tracing::debug!(%peer, "a step of no close under way ({})", msg.body.name());
        };
        let Some(position) = c.members.iter().position(|m| *m == peer) else {
            return self.refuse(
                peer,
                Some(msg.factory),
                "not a member of this factory".into(),
            );
        };
        let client = Signer::Client(ClientId(position as u32));
        match msg.body {
            CloseBody::Nonce(nonce) => match c.coordinator.add_nonce(client, nonce) {
                Ok(None) => c.round_started = Instant::now(),
                Ok(Some(agg)) => self.close_round_two(agg),
                Err(e) => self.abort_close(&format!("client {position}: {e}")),
            },
            CloseBody::Partial(partial) => match c.coordinator.add_partial(client, partial) {
                Ok(None) => c.round_started = Instant::now(),
                Ok(Some(tx)) => self.close_signed(tx),
                Err(e) => self.abort_close(&format!("client {position}: {e}")),
            },
            CloseBody::Abort(reason) => {
                self.abort_close(&format!("client {position} refused: {reason}"))
            }
            other => self.abort_close(&format!(
                "client {position} sent a {}, which is the LSP's to send",
                other.name()
            )),
        }
    }

    /// Every nonce is in: record the close, then send the aggregated nonce and sign.
    fn close_round_two(&mut self, agg: superscalar_core::musig::AggNonce) {
        let Some(successor) = self.closing.as_ref().map(|c| c.successor) else {
            return;
        };
        if successor.is_some_and(|s| !self.factories.contains_key(&s)) {
            // A rotation: nobody signs the close before the successor is signed.
            if let Some(c) = self.closing.as_mut() {
                c.held_agg = Some(agg);
            }
            return;
        }
        let Some(c) = self.closing.as_mut() else {
            return;
        };
        let close = c.coordinator.close();
        let txid = close.tx.compute_txid();
        let spend = Spend {
            role: TxLabel::new(CLOSE_LABEL).expect("a valid label"),
            sighash: Factory::sighash(&close.tx, &close.spent),
            txid,
        };
        let recorded = self.store.record_close(
            convert::factory_id(c.factory),
            c.terms.funding,
            &spend,
            &encode(&c.terms),
        );
        if let Err(e) = recorded {
            return self.abort_close(&format!("cannot record the close: {e}"));
        }
        let Some(c) = self.closing.as_mut() else {
            return;
        };
        let partial = match c.signer.sign(&agg) {
            Ok(p) => p,
            Err(e) => return self.abort_close(&format!("cannot sign: {e}")),
        };
        if let Err(e) = c.coordinator.add_partial(Signer::Lsp, partial) {
            return self.abort_close(&format!("our own partial signature: {e}"));
        }
        c.agg_sent = true;
        c.round_started = Instant::now();
        let (factory, id, members) = (c.factory, c.id, c.members.clone());
        for m in members {
            self.send(
                m,
                Message::Close(Box::new(CloseMsg {
                    factory,
                    close: id,
                    body: CloseBody::AggNonce(agg),
                })),
            );
        }
    }

    /// Every partial signature is in: store, broadcast, tell the clients.
    fn close_signed(&mut self, tx: Transaction) {
        let Some(mut c) = self.closing.take() else {
            return;
        };
        let txid = tx.compute_txid();
        let fid = convert::factory_id(c.factory);
        let stored = self.store.add_signed_txs(
            fid,
            &[superscalar_store::SignedTx {
                label: TxLabel::new(CLOSE_LABEL).expect("a valid label"),
                tx: tx.clone(),
            }],
        );
        if let Err(e) = stored {
            // Recorded: a `close-factory` again signs the same close.
            self.closing = Some(c);
            return self.abort_close(&format!("cannot store the signed close: {e}"));
        }
        self.signed_closes.insert(c.factory, tx.clone());
        if let Some(successor) = c.successor {
            self.successor_funded(successor, &tx, &c.members);
        }
        let sent = self.chain(|ch| ch.submit_transaction(&tx));
        if let Err(e) = &sent {
            tracing::warn!("close {txid}: not accepted yet: {e}");
        }
        let sig = tx.input[0]
            .witness
            .nth(0)
            .and_then(|w| Signature::from_slice(w).ok());
        if let Some(sig) = sig {
            for m in &c.members {
                self.send(
                    *m,
                    Message::Close(Box::new(CloseMsg {
                        factory: c.factory,
                        close: c.id,
                        body: CloseBody::Done(sig),
                    })),
                );
            }
        }
        let close = c.coordinator.close();
        let summary = json!({
            "factory": c.factory.to_string(),
            "txid": txid.to_string(),
            "vsize": tx.vsize(),
            "fee_sat": close.fee.to_sat(),
            "clients": c.terms.clients.iter().zip(&close.client_outputs).enumerate().map(|(i, (a, o))| json!({
                "client": i,
                "amount_sat": a.to_sat(),
                "output": o,
                "rolled": c.terms.successor.as_ref().is_some_and(|s| s.rolled.contains(&ClientId(i as u32))),
            })).collect::<Vec<_>>(),
            "successor": c.successor.map(|s| json!({
                "factory": s.to_string(),
                "output": close.successor_output,
                "value_sat": close.successor_output.map(|o| tx.output[o as usize].value.to_sat()),
            })),
            "lsp_sat": close.lsp_output.map(|o| tx.output[o as usize].value.to_sat()),
            "broadcast": sent.is_ok(),
        });
        self.log(format!(
            "factory {}: cooperative close {txid} signed and broadcast ({} vB, fee {} sat)",
            c.factory,
            tx.vsize(),
            close.fee.to_sat()
        ));
        if let Some(r) = c.reply.take() {
            r.reply(Ok(summary));
        }
    }

    /// A rotation's successor `id` is signed: the close held for it goes on.
    pub(super) fn successor_signed(&mut self, id: FactoryId) {
        let held = self
            .closing
            .as_mut()
            .filter(|c| c.successor == Some(id))
            .and_then(|c| c.held_agg.take());
        if let Some(agg) = held {
            self.close_round_two(agg);
        }
    }

    /// Abandons the close under way: every member is told; the channels thaw unless the close
    /// was recorded.
    pub(super) fn abort_close(&mut self, reason: &str) {
        let Some(mut c) = self.closing.take() else {
            return;
        };
        for m in &c.members {
            self.send(
                *m,
                Message::Close(Box::new(CloseMsg {
                    factory: c.factory,
                    close: c.id,
                    body: CloseBody::Abort(reason.to_owned()),
                })),
            );
        }
        let recorded = self
            .store
            .recorded_close(convert::factory_id(c.factory))
            .map_or(true, |r| r.is_some());
        if !recorded {
            self.channels.frozen.remove(&c.factory);
            if let Some(successor) = c.successor {
                self.void_successor(successor, reason);
                self.rotation_fallbacks.0.insert(c.factory);
            }
        }
        self.log(format!(
            "factory {}: cooperative close abandoned: {reason}{}",
            c.factory,
            if recorded {
                " (recorded: its channels stay frozen; close-factory again proposes the same terms)"
            } else {
                ""
            }
        ));
        if let Some(r) = c.reply.take() {
            r.reply(Err(ApiError::app(-7, format!("close abandoned: {reason}"))));
        }
    }

    /// A member's connection is lost: the close cannot finish.
    pub(super) fn close_disconnected(&mut self, peer: PublicKey) {
        if let Some(c) = &self.closing {
            if let Some(i) = c.members.iter().position(|m| *m == peer) {
                self.abort_close(&format!("client {i} disconnected"));
            }
        }
    }

    /// Abandons a close without progress for `round_timeout`; rebroadcasts the closes not yet
    /// confirmed and marks the confirmed ones closed.
    pub(super) fn close_tick(&mut self) {
        if self
            .closing
            .as_ref()
            .is_some_and(|c| c.round_started.elapsed() > self.config.round_timeout)
        {
            let waiting: Vec<String> = self
                .closing
                .as_ref()
                .map(|c| {
                    c.coordinator
                        .missing()
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                })
                .unwrap_or_default();
            self.abort_close(&format!("timed out waiting for {}", waiting.join(", ")));
        }
        let signed: Vec<(FactoryId, Transaction)> = self
            .signed_closes
            .iter()
            .map(|(id, tx)| (*id, tx.clone()))
            .collect();
        for (id, tx) in signed {
            let txid = tx.compute_txid();
            match self.chain(|c| c.tx_status(&txid)) {
                Ok(TxStatus::Confirmed { height, .. }) => {
                    if let Err(e) = self.mark_closed(id) {
                        tracing::warn!("factory {id}: its close confirmed, not recorded yet: {e}");
                        continue;
                    }
                    self.signed_closes.remove(&id);
                    let how = match self.successor_of_close(&txid) {
                        Some(successor) => format!("rotated into {successor}"),
                        None => "closed cooperatively".into(),
                    };
                    self.log(format!(
                        "factory {id}: {how} ({txid} confirmed at {height})"
                    ));
                }
                Ok(TxStatus::Unknown) => {
                    if let Err(e) = self.chain(|c| c.submit_transaction(&tx)) {
                        tracing::debug!("close {txid} again: {e}");
                        // The funding output spent by something else (a client's exit): the
                        // close lost, and the tree is on chain (the watcher answers it).
                        let funding = tx.input[0].previous_output;
                        if let Ok(None) = self.chain(|c| c.get_utxo(&funding)) {
                            self.signed_closes.remove(&id);
                            self.log(format!(
                                "factory {id}: the close {txid} lost: the funding output was \
                                 spent by another transaction"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// A live factory whose active period ended becomes `dying`; then, unless `auto_close` is
    /// off, the LSP proposes the rotation (or, with `--no-auto-rotate` or once a rotation of it
    /// was abandoned, the cooperative close) of each dying factory (at the funding fee rate)
    /// once a block, one factory after another, until one is signed. Under the inverted policy
    /// the timeout transactions pay the clients everything still in the tree at T, the LSP's
    /// channel balances included, so the LSP closes well before. What stops a close (a client
    /// offline, a payment in flight) is logged when it changes.
    pub(super) fn lifecycle_tick(&mut self) {
        let Ok(tip) = self.chain(|c| c.tip()).map(|t| t.height) else {
            return;
        };
        let new_tip = self.lifecycle_tip != Some(tip);
        self.lifecycle_tip = Some(tip);
        let mut ids: Vec<(FactoryId, FactoryStatus)> = self
            .factories
            .iter()
            .filter(|(_, f)| matches!(f.status, FactoryStatus::Live | FactoryStatus::Dying))
            .map(|(id, f)| (*id, f.status))
            .collect();
        ids.sort();
        for (id, status) in ids {
            let Ok((factory, _, _)) = self.factory_state(id).map(|(f, s, k)| (f.clone(), s, k))
            else {
                continue;
            };
            let cfg = &factory.params().config;
            let dying_from = factory
                .params()
                .creation_height
                .saturating_add(cfg.active_blocks);
            if tip < dying_from {
                continue;
            }
            if status == FactoryStatus::Live {
                let dying = self.store.apply(&Change::Status {
                    factory: convert::factory_id(id),
                    status: FactoryStatus::Dying,
                });
                if let Err(e) = dying {
                    tracing::warn!("factory {id}: {e}");
                    continue;
                }
                if let Some(f) = self.factories.get_mut(&id) {
                    f.status = FactoryStatus::Dying;
                }
                self.log(format!(
                    "factory {id} is dying (its active period ended at block {dying_from}; T \
                     is {}){}",
                    factory.timeout_height(),
                    if self.config.auto_close {
                        ": the LSP proposes its cooperative close at every block until it is signed"
                    } else {
                        ""
                    }
                ));
            }
            if self.signed_closes.contains_key(&id) {
                continue;
            }
            let reclaim_from = super::reclaim::reclaim_height(&factory);
            if tip >= reclaim_from && self.config.reclaim {
                self.start_reclaim(id, &format!("no cooperative close by block {reclaim_from}"));
                continue;
            }
            if self.config.auto_close {
                self.migration_tick(id, &factory, tip);
            }
            // One proposal a block for each factory, as soon as nothing else is being signed.
            if !self.config.auto_close
                || self.closing.is_some()
                || self.rotating.is_some()
                || self.updating.is_some()
                || self.signed_closes.contains_key(&id)
                || self.proposed_at.get(&id) == Some(&tip)
            {
                continue;
            }
            // A rotation keeps the clients off chain; once one was abandoned, the close.
            let rotate = self.config.auto_rotate && !self.rotation_fallbacks.0.contains(&id);
            if rotate && self.forming.is_some() {
                continue;
            }
            self.proposed_at.insert(id, tip);
            let proposed = if rotate {
                self.start_rotation(id, self.config.funding_fee_rate)
            } else {
                self.propose_close(id, self.config.funding_fee_rate)
            };
            match proposed {
                Ok(()) => {
                    self.close_blocked.remove(&id);
                }
                Err(e) => {
                    let why = e.message;
                    if self.close_blocked.get(&id) != Some(&why) {
                        let what = if rotate { "rotate" } else { "close" };
                        self.log(format!(
                            "factory {id}: cannot {what} it cooperatively: {why}"
                        ));
                        self.close_blocked.insert(id, why);
                    }
                }
            }
        }
        if new_tip {
            self.reclaim_tick();
        }
    }

    /// Records factory `id` closed (nothing of it is left to watch or sign) and forgets its
    /// channels.
    pub(super) fn mark_closed(&mut self, id: FactoryId) -> Result<(), String> {
        self.store
            .apply(&Change::Status {
                factory: convert::factory_id(id),
                status: FactoryStatus::Closed,
            })
            .map_err(|e| e.to_string())?;
        if let Some(f) = self.factories.get_mut(&id) {
            f.status = FactoryStatus::Closed;
        }
        self.channels.leaves.retain(|k, _| k.0 != id);
        self.channels.states.remove(&id);
        self.channels.frozen.remove(&id);
        Ok(())
    }

    /// `close` in the API's `status`: the close under way.
    pub(super) fn close_json(&self) -> Value {
        let Some(c) = &self.closing else {
            return Value::Null;
        };
        json!({
            "factory": c.factory.to_string(),
            "round": if c.agg_sent { 2 } else { 1 },
            "waiting_for": c.coordinator.missing().iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "elapsed_s": c.round_started.elapsed().as_secs(),
        })
    }
}
