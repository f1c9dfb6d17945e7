//! The LSP's side of a factory update: a Decker-Wattenhofer advance of one client's leaf path
//! (`advance`), signed with the clients below the node that ticks.
//!
//! Order and rules:
//! 1. Every participant must be connected with its channel between rounds. The proposal is
//!    made ([`superscalar_core::advance::FactoryState::propose`]: the used index is recorded) and the state written before
//!    it leaves; each participant's channel adds the channel output of the new state (dual
//!    state).
//! 2. Stage 1 (everything beneath the ticking node) is signed; then stage 2 (its new state).
//!    A client sends its stage 2 signatures only once its channel holds a commitment on the new
//!    outpoint.
//! 3. The update completes and is written before its final signatures of stage 2 leave; then the
//!    secrets of the superseded stock versions (`Done`), and each channel retires its old outpoint.
//!
//! A refusal by any participant, a lost connection, or `UPDATE_TIMEOUT` abandons the update
//! ([`superscalar_core::advance::FactoryState::abandon`]: the index stays used); channels retire the new outpoint unless a
//! commitment on it was signed (a client may have signed stage 2, and the abandoned state could
//! still be published by whoever holds every signature: only the LSP, but the client cannot know
//! that). A restart abandons an unfinished update the same way.

use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use bitcoin::OutPoint;
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::Chain;
use superscalar_core::advance::SaleTerms;
use superscalar_core::ceremony::{LspCeremony, SignedTx};
use superscalar_core::channel::ChannelRef;
use superscalar_core::update::{UpdateBody, UpdateMsg};
use superscalar_core::{ClientId, FactoryId, NodeId, Slot, TxKind};
use superscalar_store::{convert, Party};
use superscalar_wire::messages::Message;

use super::channels::Key;
use super::Lsp;

/// How long an update may take before it is abandoned.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The update being signed.
pub(super) struct Updating {
    factory: FactoryId,
    id: u64,
    node: NodeId,
    to: u16,
    stage: u8,
    /// The last stage whose aggregated nonces went out.
    agg_sent: u8,
    ceremony: LspCeremony,
    participants: Vec<(ClientId, PublicKey)>,
    below: Vec<SignedTx>,
    /// Each participant's channel outputs that move: (channel, before, after).
    moved: Vec<(Key, OutPoint, OutPoint)>,
    /// The channel a sale in this update opens, on its output in the new state.
    sold: Option<(Key, OutPoint, SaleTerms)>,
    /// The liquidity order this sale serves (its fee invoice's payment hash).
    pub(super) order: Option<[u8; 32]>,
    started: Instant,
    reply: Option<superscalar_api::Request>,
}

impl Lsp {
    /// Writes the LSP's factory state (a new version) before anything that depends on it leaves.
    pub(super) fn save_lsp_state(&mut self, id: FactoryId) -> Result<(), String> {
        let bytes = self
            .channels
            .states
            .get(&id)
            .map(|(_, st, _)| st.snapshot())
            .ok_or("no factory state")?;
        let fid = convert::factory_id(id);
        let next = self
            .store
            .latest_factory_state(fid, Party::Lsp)
            .map_err(|e| e.to_string())?
            .map_or(0, |(v, _)| v + 1);
        self.store
            .append_factory_state(fid, Party::Lsp, next, &bytes)
            .map_err(|e| e.to_string())
    }

    fn send_update(&self, peer: PublicKey, factory: FactoryId, update: u64, body: UpdateBody) {
        self.send(
            peer,
            Message::Update(Box::new(UpdateMsg {
                factory,
                update,
                body,
            })),
        );
    }

    /// The operator's `advance`: answered when the update completes or is abandoned.
    pub(super) fn operator_advance(&mut self, request: superscalar_api::Request) {
        match self.start_advance(&request.params) {
            Ok(()) => {
                if let Some(u) = self.updating.as_mut() {
                    u.reply = Some(request);
                }
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    /// The operator's `sell-liquidity`: a new channel of `amount_sat` from the client's stock,
    /// in its leaf's next state; answered when the update completes or is abandoned.
    pub(super) fn operator_sell(&mut self, request: superscalar_api::Request) {
        let amount = request.params.get("amount_sat").and_then(Value::as_u64);
        let result = match amount {
            Some(a) if a > 0 && a <= bitcoin::Amount::MAX_MONEY.to_sat() => {
                self.start_update(&request.params, Some(bitcoin::Amount::from_sat(a)))
            }
            _ => Err(ApiError::invalid_params(
                "amount_sat: the capacity of the channel to sell, in satoshis",
            )),
        };
        match result {
            Ok(()) => {
                if let Some(u) = self.updating.as_mut() {
                    u.reply = Some(request);
                }
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    fn start_advance(&mut self, params: &Value) -> Result<(), ApiError> {
        self.start_update(params, None)
    }

    fn start_update(
        &mut self,
        params: &Value,
        sale: Option<bitcoin::Amount>,
    ) -> Result<(), ApiError> {
        if self.updating.is_some() {
            return Err(ApiError::app(-6, "another update is being signed"));
        }
        let id = params
            .get("factory")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_params("factory: a factory id in hex"))?;
        let id: FactoryId = id
            .parse()
            .map_err(|_| ApiError::invalid_params(format!("{id:?} is not a factory id")))?;
        let client = params
            .get("client")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                ApiError::invalid_params("client: the index of a client in the factory")
            })?;
        let members = self
            .factories
            .get(&id)
            .filter(|f| f.status == superscalar_store::FactoryStatus::Live)
            .map(|f| f.members.clone())
            .ok_or_else(|| ApiError::app(-4, format!("no live factory {id}")))?;
        if self.channels.frozen.contains(&id) || self.closing.is_some() {
            return Err(ApiError::app(-6, format!("factory {id} is being closed")));
        }
        let client = u32::try_from(client)
            .ok()
            .filter(|c| (*c as usize) < members.len())
            .ok_or_else(|| {
                ApiError::invalid_params(format!(
                    "client: the factory has {} clients",
                    members.len()
                ))
            })?;
        self.begin_advance(id, ClientId(client), &members, sale)
            .map_err(|e| ApiError::app(-5, e))
    }

    /// Starts the sale of a channel of `amount` to `client` (a liquidity order).
    pub(super) fn begin_sale(
        &mut self,
        id: FactoryId,
        client: ClientId,
        members: &[PublicKey],
        amount: bitcoin::Amount,
    ) -> Result<(), String> {
        self.begin_advance(id, client, members, Some(amount))
    }

    /// The factory's state, open for an update: its funding output as our chain shows it,
    /// and time left before its timeout.
    pub(super) fn open_for_update(&mut self, id: FactoryId) -> Result<(), String> {
        let tip = self.channels.tip;
        self.factory_state(id)?;
        let funding = self.channels.states[&id].1.funding();
        let coin = self
            .chain(|c| c.get_utxo(&funding))
            .map_err(|e| e.to_string())?
            .ok_or("the factory's funding output is spent or unconfirmed")?;
        let (factory, st, _) = self
            .channels
            .states
            .get_mut(&id)
            .ok_or("no factory state")?;
        st.confirm_funding(Some(&coin.txout), Some(coin.height))
            .map_err(|e| e.to_string())?;
        factory.check_update_height(tip).map_err(|e| e.to_string())
    }

    fn begin_advance(
        &mut self,
        id: FactoryId,
        client: ClientId,
        members: &[PublicKey],
        sale: Option<bitcoin::Amount>,
    ) -> Result<(), String> {
        self.open_for_update(id)?;
        let (factory, st, key_index) = self
            .channels
            .states
            .get_mut(&id)
            .ok_or("no factory state")?;
        let leaf = factory
            .tree()
            .leaf_of(client)
            .ok_or("the client has no leaf")?;
        let keypair = self
            .keys
            .factory_key(*key_index)
            .map_err(|e| e.to_string())?;
        let terms = match sale {
            None => None,
            Some(amount) => {
                let stock = factory
                    .stock_of(client)
                    .ok_or("the client's leaf has no liquidity stock")?;
                Some(SaleTerms {
                    buyer: client,
                    stock,
                    amount,
                })
            }
        };
        // Proposed on a copy first: an update that cannot start (a participant offline, a
        // channel in a round) uses up no index of the odometer.
        let mut trial = st.clone();
        let (proposal, ceremony) = trial
            .propose_with(leaf, terms, &keypair)
            .map_err(|e| e.to_string())?;
        let participants: Vec<(ClientId, PublicKey)> = ceremony
            .participants()
            .map(|c| (c, members[c.0 as usize]))
            .collect();
        let mut moved = Vec::new();
        let mut problem = None;
        for (c, peer) in &participants {
            if !self.transport.is_connected(peer) {
                problem = Some(format!("client {} is not connected", c.0));
            }
            if !self
                .channels
                .leaves
                .contains_key(&(id, *peer, ChannelRef::Leaf))
            {
                problem = Some(format!("client {} has no channel yet", c.0));
            }
            for (key, l) in self
                .channels
                .leaves
                .iter()
                .filter(|(k, _)| k.0 == id && k.1 == *peer)
            {
                if !l.link.between_rounds() || !l.link.is_ready() {
                    problem = Some(format!("client {}'s {} channel is in a round", c.0, key.2));
                }
                let slot = key.2.slot(*c);
                let before = trial.outpoint(slot);
                let after = trial.pending_outpoint(slot, |k| ceremony.txid(k));
                if let (Some(b), Some(a)) = (before, after) {
                    if a != b {
                        moved.push((*key, b, a));
                    }
                }
            }
        }
        // The sold channel opens on its output in the new state, before that state is signed.
        let mut sold = None;
        if let (Some(terms), None) = (terms, problem.as_ref()) {
            let j = trial
                .pending_sales()
                .map_or(0, |s| s.len() as u32)
                .saturating_sub(1);
            match trial.pending_channel_setup(
                Slot::Sold(j),
                true,
                terms.amount.to_sat() * 1000,
                |k| ceremony.txid(k),
            ) {
                Ok(setup) => sold = Some((j, factory.clone(), *key_index, setup)),
                Err(e) => problem = Some(format!("the sold channel: {e}")),
            }
        }
        if let Some(p) = problem {
            return Err(p);
        }
        *st = trial;
        let mut sold_channel = None;
        if let (Some((j, factory, key_index, setup)), Some(terms)) = (sold, terms) {
            let key = (id, members[client.0 as usize], ChannelRef::Sold(j));
            let outpoint = setup.funding_outpoint;
            match self.channel_offer(&factory, key_index, client.0, ChannelRef::Sold(j), setup) {
                Ok(o) => sold_channel = Some((key, outpoint, terms, o)),
                Err(e) => {
                    if let Some((_, st, _)) = self.channels.states.get_mut(&id) {
                        st.abandon();
                    }
                    self.save_lsp_state(id)?;
                    return Err(format!("the sold channel: {e}"));
                }
            }
        }
        self.save_lsp_state(id)?;
        let update = self.next_update_id();
        for (_, peer) in &participants {
            self.send_update(
                *peer,
                id,
                update,
                UpdateBody::Advance(Box::new(proposal.clone())),
            );
        }
        for (key, _, after) in &moved {
            self.add_leaf_funding(*key, *after);
        }
        let sold = sold_channel.map(|(key, outpoint, terms, (offer, msg))| {
            self.channels.offers.insert(key, offer);
            self.send(key.1, msg);
            (key, outpoint, terms)
        });
        self.log(format!(
            "factory {id}: advancing {} to state {} with {} clients{}",
            proposal.node,
            proposal.to.0,
            participants.len(),
            terms.map_or(String::new(), |t| format!(
                ", selling {} sat to client {}",
                t.amount.to_sat(),
                t.buyer.0
            ))
        ));
        self.updating = Some(Updating {
            factory: id,
            id: update,
            node: proposal.node,
            to: proposal.to.0,
            stage: 1,
            agg_sent: 0,
            ceremony,
            participants,
            below: Vec::new(),
            moved,
            sold,
            order: None,
            started: Instant::now(),
            reply: None,
        });
        Ok(())
    }

    pub(super) fn next_update_id(&mut self) -> u64 {
        // Unique across restarts: the time in microseconds, never twice the same.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.last_update_id = now.max(self.last_update_id + 1);
        self.last_update_id
    }

    /// A step of an update from a participant.
    pub(super) fn on_update(&mut self, peer: PublicKey, msg: UpdateMsg) {
        let Some(u) = self
            .updating
            .as_mut()
            .filter(|u| u.factory == msg.factory && u.id == msg.update)
        else {
            return tracing::debug!(%peer, "a step of no update under way ({})", msg.body.name());
        };
        let Some(client) = u
            .participants
            .iter()
            .find(|(_, p)| *p == peer)
            .map(|(c, _)| *c)
        else {
            return self.refuse(
                peer,
                Some(msg.factory),
                "not a participant of this update".into(),
            );
        };
        let result = match msg.body {
            UpdateBody::Nonces { stage, msg } if stage == u.stage => u
                .ceremony
                .receive_nonces(client, &msg)
                .map_err(|e| e.to_string()),
            UpdateBody::Partials { stage, msg } if stage == u.stage => u
                .ceremony
                .receive_partials(client, &msg)
                .map_err(|e| e.to_string()),
            UpdateBody::Abort(reason) => Err(format!("refused by client {}: {reason}", client.0)),
            other => Err(format!("{} out of place (stage {})", other.name(), u.stage)),
        };
        if let Err(e) = result {
            return self.abort_update(&format!("client {}: {e}", client.0));
        }
        if let Err(e) = self.step_update() {
            self.abort_update(&e);
        }
    }

    /// Moves the update on once every participant has answered the current round.
    fn step_update(&mut self) -> Result<(), String> {
        let Some(u) = self.updating.as_mut() else {
            return Ok(());
        };
        let (factory, update, stage) = (u.factory, u.id, u.stage);
        if !u.ceremony.missing_nonces().is_empty() {
            return Ok(());
        }
        if u.agg_sent < stage {
            // Every nonce is in: the aggregated nonces go out, once per stage.
            let mut out = Vec::new();
            for (c, peer) in u.participants.clone() {
                let msg = u.ceremony.agg_nonces_for(c).map_err(|e| e.to_string())?;
                out.push((peer, msg));
            }
            u.agg_sent = stage;
            for (peer, msg) in out {
                self.send_update(peer, factory, update, UpdateBody::AggNonces { stage, msg });
            }
            return Ok(());
        }
        if !u.ceremony.missing_partials().is_empty() {
            return Ok(());
        }
        if stage == 2 && !self.update_channels_ready() {
            // Stage 2 completes only once every channel the new state carries holds a
            // commitment on its new output on our side: a state we cannot follow down is
            // never made publishable.
            return Ok(());
        }
        let Some(u) = self.updating.as_mut() else {
            return Ok(());
        };
        u.ceremony.finalize().map_err(|e| e.to_string())?;
        let signed: Vec<SignedTx> = u.ceremony.all_signed().cloned().collect();
        let finals: Vec<(PublicKey, superscalar_core::ceremony::FinalSigMsg)> = u
            .participants
            .iter()
            .map(|(c, p)| u.ceremony.final_sigs_for(*c).map(|m| (*p, m)))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if stage == 1 {
            let (_, st, key_index) = self
                .channels
                .states
                .get_mut(&factory)
                .ok_or("no factory state")?;
            let keypair = self
                .keys
                .factory_key(*key_index)
                .map_err(|e| e.to_string())?;
            let ceremony = st
                .propose_entry(&signed, &keypair)
                .map_err(|e| e.to_string())?;
            let u = self.updating.as_mut().ok_or("no update")?;
            u.below = signed;
            u.ceremony = ceremony;
            u.stage = 2;
            self.save_lsp_state(factory)?;
            for (peer, msg) in finals {
                self.send_update(
                    peer,
                    factory,
                    update,
                    UpdateBody::FinalSigs { stage: 1, msg },
                );
            }
            return Ok(());
        }
        let mut all = std::mem::take(&mut u.below);
        all.extend(signed);
        let node = u.node;
        let (_, st, _) = self
            .channels
            .states
            .get_mut(&factory)
            .ok_or("no factory state")?;
        let superseded = st.latest(TxKind::State(node)).map(|s| s.tx.clone());
        st.complete(all).map_err(|e| e.to_string())?;
        let revealed = st.reveal().map_err(|e| e.to_string())?;
        if self.config.fault == Some(super::Fault::PublishSuperseded) {
            self.cheat = self.cheat_path(factory, node, superseded);
        }
        // Written before the signatures that let anyone publish the new state leave.
        self.save_lsp_state(factory)?;
        let u = self.updating.take().ok_or("no update")?;
        for (peer, msg) in finals {
            self.send_update(
                peer,
                factory,
                update,
                UpdateBody::FinalSigs { stage: 2, msg },
            );
        }
        for (_, peer) in &u.participants {
            self.send_update(*peer, factory, update, UpdateBody::Done(revealed.clone()));
        }
        if let Some((key, _, _)) = u.sold {
            if let Some(l) = self.channels.leaves.get_mut(&key) {
                l.usable = true;
            }
            if let (Some(hash), ChannelRef::Sold(j)) = (u.order, key.2) {
                self.order_sold(hash, j);
            }
        }
        self.reconcile_fundings(factory);
        let line = format!(
            "factory {factory}: {} advanced to state {}, signed by {} clients{}",
            u.node,
            u.to,
            u.participants.len(),
            u.sold.map_or(String::new(), |(key, _, t)| format!(
                "; {} sat of inbound liquidity sold to client {} ({} channel)",
                t.amount.to_sat(),
                t.buyer.0,
                key.2
            ))
        );
        self.log(line);
        if let Some(reply) = u.reply {
            reply.reply(Ok(json!({
                "factory": factory.to_string(),
                "node": u.node.0,
                "state": u.to,
                "clients": u.participants.len(),
                "revoked_stock_versions": revealed.len(),
                "sold": u.sold.map(|(key, outpoint, t)| json!({
                    "client": t.buyer.0,
                    "channel": key.2.to_string(),
                    "amount_sat": t.amount.to_sat(),
                    "funding": outpoint.to_string(),
                })),
            })));
        }
        Ok(())
    }

    /// Moves the update on after a channel round (it may wait for commitments).
    pub(super) fn update_progress(&mut self) {
        if self.updating.is_some() {
            if let Err(e) = self.step_update() {
                self.abort_update(&e);
            }
        }
    }

    /// Whether every channel the update moves or opens holds, on our side, a commitment on its
    /// output in the new state.
    fn update_channels_ready(&self) -> bool {
        let Some(u) = self.updating.as_ref() else {
            return false;
        };
        let holds = |key: &Key, o: &OutPoint| {
            self.channels
                .leaves
                .get(key)
                .is_some_and(|l| l.link.channel().holds_commitment_on(o))
        };
        u.moved.iter().all(|(k, _, a)| holds(k, a))
            && u.sold.as_ref().map_or(true, |(k, o, _)| holds(k, o))
    }

    /// Makes each channel of `factory` sign only where the LSP's factory state may put it: the
    /// channel output in the current state, in the update being signed, and in abandoned
    /// updates once a commitment was signed there. Every other outpoint is retired.
    pub(super) fn reconcile_fundings(&mut self, factory: FactoryId) {
        let Some((f, st, _)) = self.channels.states.get(&factory) else {
            return;
        };
        let pending: Vec<OutPoint> = self
            .updating
            .as_ref()
            .filter(|u| u.factory == factory)
            .map(|u| {
                u.moved
                    .iter()
                    .map(|m| m.2)
                    .chain(u.sold.map(|s| s.1))
                    .collect()
            })
            .unwrap_or_default();
        let _ = f;
        let mut retire = Vec::new();
        for (key, leaf) in self.channels.leaves.iter().filter(|(k, _)| k.0 == factory) {
            let slot = key.2.slot(ClientId(leaf.client_index()));
            let current = st.outpoint(slot);
            let abandoned = st.abandoned_outpoints(slot);
            for o in leaf.link.channel().funding_outpoints() {
                let keep = Some(o) == current
                    || pending.contains(&o)
                    || (abandoned.contains(&o) && leaf.link.channel().holds_commitment_on(&o));
                if !keep {
                    retire.push((*key, o));
                }
            }
        }
        for (key, o) in retire {
            self.retire_leaf_funding(key, o);
        }
    }

    /// Abandons the update under way and tells its participants.
    pub(super) fn abort_update(&mut self, why: &str) {
        let Some(u) = self.updating.take() else {
            return;
        };
        if let Some((_, st, _)) = self.channels.states.get_mut(&u.factory) {
            st.abandon();
        }
        if let Err(e) = self.save_lsp_state(u.factory) {
            tracing::error!("factory {}: abandoned update not written: {e}", u.factory);
        }
        for (_, peer) in &u.participants {
            self.send_update(*peer, u.factory, u.id, UpdateBody::Abort(why.to_owned()));
        }
        if let Some(hash) = u.order {
            self.order_abandoned(hash);
        }
        if let Some((key, _, _)) = u.sold {
            // Nothing was paid through the channel of a sale that did not complete.
            self.channels.offers.remove(&key);
            if let Some(l) = self.channels.leaves.remove(&key) {
                if let Err(e) = self.store.remove_channel(l.id()) {
                    tracing::error!("factory {}: the abandoned sale's channel: {e}", u.factory);
                }
            }
        }
        self.reconcile_fundings(u.factory);
        self.log(format!("factory {}: update abandoned: {why}", u.factory));
        if let Some(reply) = u.reply {
            reply.reply(Err(ApiError::app(
                -7,
                format!("the update was abandoned: {why}"),
            )));
        }
    }

    /// Fault `publish-superseded`: the kickoffs and newest states from the root down to
    /// `node`'s kickoff, then `node`'s superseded state.
    fn cheat_path(
        &self,
        factory: FactoryId,
        node: NodeId,
        superseded: Option<bitcoin::Transaction>,
    ) -> Vec<bitcoin::Transaction> {
        let Some((f, st, _)) = self.channels.states.get(&factory) else {
            return Vec::new();
        };
        let tree = f.tree();
        let mut nodes = vec![node];
        let mut id = node;
        while let Some(p) = tree.node(id).parent {
            nodes.push(p);
            id = p;
        }
        nodes.reverse();
        let mut txs = Vec::new();
        for n in nodes {
            if let Some(k) = st.latest(TxKind::Kickoff(n)) {
                txs.push(k.tx.clone());
            }
            if n == node {
                break;
            }
            if let Some(s) = st.latest(TxKind::State(n)) {
                txs.push(s.tx.clone());
            }
        }
        txs.extend(superseded);
        tracing::warn!(
            "fault: publishing {} transactions ending in a superseded state",
            txs.len()
        );
        txs
    }

    /// Fault `publish-superseded`: publishes the next transaction once the chain takes it.
    pub(super) fn cheat_tick(&mut self) {
        let Some(tx) = self.cheat.first().cloned() else {
            return;
        };
        let txid = tx.compute_txid();
        let known = !matches!(
            self.chain(|c| c.tx_status(&txid)),
            Ok(superscalar_chain::TxStatus::Unknown) | Err(_)
        );
        if known || self.chain(|c| c.submit_transaction(&tx)).is_ok() {
            self.cheat.remove(0);
            self.log(format!("fault: published {txid}"));
        }
    }

    /// The update under way, for `status`.
    pub(super) fn update_json(&self) -> Value {
        let Some(u) = self.updating.as_ref() else {
            return Value::Null;
        };
        let waiting: Vec<u32> = if u.agg_sent < u.stage {
            u.ceremony.missing_nonces()
        } else {
            u.ceremony.missing_partials()
        }
        .into_iter()
        .map(|c| c.0)
        .collect();
        json!({
            "factory": u.factory.to_string(),
            "node": u.node.0,
            "state": u.to,
            "stage": u.stage,
            "clients": u.participants.iter().map(|(c, _)| c.0).collect::<Vec<_>>(),
            "waiting_for": waiting,
            "sale": u.sold.map(|(_, _, t)| json!({ "client": t.buyer.0, "amount_sat": t.amount.to_sat() })),
            "elapsed_s": u.started.elapsed().as_secs(),
        })
    }

    /// Abandons an update that takes too long.
    pub(super) fn update_tick(&mut self) {
        if self
            .updating
            .as_ref()
            .is_some_and(|u| u.started.elapsed() > UPDATE_TIMEOUT)
        {
            self.abort_update("timed out");
        }
    }

    /// A participant's connection is lost: the update cannot finish.
    pub(super) fn update_disconnected(&mut self, peer: PublicKey) {
        if self
            .updating
            .as_ref()
            .is_some_and(|u| u.participants.iter().any(|(_, p)| *p == peer))
        {
            self.abort_update("a participant disconnected");
        }
    }
}
