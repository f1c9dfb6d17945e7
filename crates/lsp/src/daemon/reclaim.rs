//! The LSP's last resort for a dying factory that no cooperative close ended: under the inverted
//! timeout policy the timeout transactions pay the clients everything the tree still holds at T,
//! the LSP's channel balances included. So from [`reclaim_height`] on (late enough for the
//! cooperative close to be tried through most of the dying period, early enough for the whole
//! tree, at its worst-case delays, and then the commitments to confirm before T) the LSP takes
//! the factory on chain:
//!
//! 1. It publishes the tree: the newest state of every node on every client's path, parents
//!    first, each as soon as its inputs are confirmed and its relative delay lets it in (the
//!    tree's transactions pay their own fees from the tree's fee reserves).
//! 2. Once a channel's output is confirmed, it publishes its latest commitment of that channel
//!    with a child through the commitment's P2A anchor, paid from its on-chain wallet.
//! 3. Once that commitment has confirmed and its `to_self_delay` has passed, it sweeps its
//!    to_local output to its wallet; and each liquidity stock output of a leaf on chain, once its
//!    `stock_csv` has passed.
//!
//! The channels must be out of the tree before T (their commitments confirmed); the to_local
//! sweeps may come later. Once every channel is swept and every stock output too, the factory is
//! `closed`.
//!
//! The clients, present or not, lose nothing: each one's watcher claims its to_remote output
//! from the LSP's commitment whenever it looks (an absent client once it is back), and their fee
//! coins and what the timeouts pay at T stay theirs. The factory is `closing` from the first
//! step, durably, so a restarted LSP goes on. A channel whose output another transaction spent
//! (the client's own commitment) is left to the watcher; HTLC outputs of our commitment are not
//! claimed here yet.

use std::collections::HashSet;

use bitcoin::{Amount, FeeRate, OutPoint, Transaction, Txid};
use serde_json::{json, Value};
use superscalar_chain::{Chain, TxStatus};
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, Factory, FactoryId};
use superscalar_store::{convert, Change, FactoryStatus};

use super::Lsp;

/// Blocks kept in hand beyond the tree's worst-case exit time and one confirmation budget for
/// the commitments.
pub const RECLAIM_MARGIN_BLOCKS: u32 = 2;
/// The package fee rate of the LSP's commitments and the rate of its to_local sweeps.
const RECLAIM_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(500);
/// The size of a stock sweep: one script-path input (signature, `<csv> CSV DROP <key>
/// CHECKSIG` leaf, a control block of up to two levels) and one P2TR output, rounded up.
const STOCK_SWEEP_VBYTES: u64 = 160;

/// The height from which the LSP takes a dying factory on chain: T less the tree's worst-case
/// exit time, one more confirmation budget (the commitments) and [`RECLAIM_MARGIN_BLOCKS`]; never
/// before the dying period starts.
pub fn reclaim_height(factory: &Factory) -> u32 {
    let p = factory.params();
    let dying_from = p.creation_height.saturating_add(p.config.active_blocks);
    factory
        .timeout_height()
        .saturating_sub(factory.ewt_max())
        .saturating_sub(p.config.confirmation_budget)
        .saturating_sub(RECLAIM_MARGIN_BLOCKS)
        .max(dying_from)
}

/// How far a channel's reclaim got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelReclaim {
    /// Its output is not confirmed yet (the tree above it is on its way).
    AwaitingOutput,
    /// Our commitment with its fee child is in the mempool.
    CommitmentPublished,
    /// Our commitment confirmed; the to_local sweep waits for `to_self_delay` or to confirm.
    Sweeping,
    /// Our balance is in our wallet, or there was nothing of ours to sweep.
    Done,
    /// Another transaction (the client's commitment) spent its output: the watcher claims.
    ClosedByClient,
}

/// A channel's (or stock output's) reclaim: how far it got, and what the LSP published for it.
#[derive(Debug, Clone, Default)]
pub(super) struct Reclaimed {
    /// The factory (kept for stock outputs, which are keyed by outpoint).
    factory: Option<FactoryId>,
    /// The client, for a channel.
    client: Option<u32>,
    progress: Option<ChannelReclaim>,
    /// Our commitment, once published.
    commitment: Option<Txid>,
    /// Our to_local sweep, once built: its txid and what it pays our wallet.
    sweep: Option<(Txid, Amount)>,
}

impl ChannelReclaim {
    fn as_str(self) -> &'static str {
        match self {
            ChannelReclaim::AwaitingOutput => "awaiting its output",
            ChannelReclaim::CommitmentPublished => "commitment published",
            ChannelReclaim::Sweeping => "sweeping to_local",
            ChannelReclaim::Done => "done",
            ChannelReclaim::ClosedByClient => "closed by the client",
        }
    }
}

impl Lsp {
    /// Starts the reclaim of `id` (durably: the factory becomes `closing`).
    pub(super) fn start_reclaim(&mut self, id: FactoryId, why: &str) {
        let closing = self.store.apply(&Change::Status {
            factory: convert::factory_id(id),
            status: FactoryStatus::Closing,
        });
        if let Err(e) = closing {
            return tracing::warn!("factory {id}: cannot start its reclaim: {e}");
        }
        if let Some(f) = self.factories.get_mut(&id) {
            f.status = FactoryStatus::Closing;
        }
        if self.closing.as_ref().is_some_and(|c| c.factory == id) {
            self.abort_close("the LSP takes the factory on chain");
        }
        self.channels.frozen.insert(id);
        self.log(format!(
            "factory {id}: {why}: the LSP publishes the tree and closes every channel with its \
             latest commitment, to keep its balances before T"
        ));
    }

    /// One step of every reclaim under way, at each new block.
    pub(super) fn reclaim_tick(&mut self) {
        let ids: Vec<FactoryId> = self
            .factories
            .iter()
            .filter(|(_, f)| f.status == FactoryStatus::Closing)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return;
        }
        let chain = std::sync::Arc::clone(&self.chain);
        if let Err(e) = tokio::task::block_in_place(|| self.wallet.sync(chain.as_ref())) {
            tracing::warn!("reclaim: wallet sync: {e}");
        }
        for id in ids {
            if let Err(e) = self.reclaim_factory(id) {
                tracing::warn!("factory {id}: reclaim: {e}");
            }
        }
    }

    fn reclaim_factory(&mut self, id: FactoryId) -> Result<(), String> {
        let (factory, state, key_index) = self
            .factory_state(id)
            .map(|(f, s, k)| (f.clone(), s.clone(), *k))?;
        // 1. The tree, parents first; then the stock outputs of the leaves on chain.
        let mut seen = HashSet::new();
        let mut stocks = Vec::new();
        for c in 0..factory.params().clients.len() as u32 {
            for step in state.exit_path(ClientId(c)) {
                let txid = step.tx.compute_txid();
                if seen.insert(txid) {
                    self.publish_when_ready(&step.tx, txid);
                    for (vout, slot) in factory
                        .outputs_of(step.kind, state.version())
                        .iter()
                        .enumerate()
                    {
                        if matches!(slot, Slot::Stock(_) | Slot::Change(_)) {
                            let value = step.tx.output.get(vout).map(|o| o.value);
                            if let Some(value) = value {
                                stocks.push((*slot, OutPoint::new(txid, vout as u32), value));
                            }
                        }
                    }
                }
            }
        }
        if !stocks.is_empty() {
            let lsp = self
                .keys
                .factory_key(key_index)
                .map_err(|e| e.to_string())?;
            for (slot, outpoint, value) in &stocks {
                self.sweep_stock(
                    id,
                    &factory,
                    state.version(),
                    *slot,
                    *outpoint,
                    *value,
                    &lsp,
                );
            }
        }
        let stocks_done = stocks.iter().all(|(_, o, _)| {
            self.stock_reclaims
                .get(o)
                .is_some_and(|r| r.progress == Some(ChannelReclaim::Done))
        });
        // 2 and 3. Every channel of the factory.
        let keys: Vec<_> = self
            .channels
            .leaves
            .keys()
            .filter(|k| k.0 == id)
            .copied()
            .collect();
        let mut channels_done = true;
        for key in keys {
            let progress = self.reclaim_channel(&key)?;
            channels_done &= progress == ChannelReclaim::Done;
            let client = self.channels.leaves.get(&key).map(|l| l.client_index());
            let entry = self.reclaims.entry(key).or_default();
            entry.client = client;
            let was = entry.progress.replace(progress);
            if was != Some(progress) {
                self.log(format!(
                    "factory {id}: reclaim of client {}'s {} channel: {}",
                    client.map_or("?".into(), |c| c.to_string()),
                    key.2,
                    progress.as_str()
                ));
            }
        }
        // Every channel closed with our commitment and swept, every stock swept: nothing of
        // ours is left in the tree, and no revoked commitment can appear any more.
        if channels_done && stocks_done {
            self.mark_closed(id)?;
            self.log(format!(
                "factory {id}: reclaim complete: every channel balance and stock of ours is in our \
                 wallet"
            ));
        }
        Ok(())
    }

    /// Broadcasts a tree transaction once every output it spends is confirmed (its relative
    /// delay may still hold it back: it is tried again at the next block).
    fn publish_when_ready(&self, tx: &Transaction, txid: Txid) {
        if !matches!(self.chain(|c| c.tx_status(&txid)), Ok(TxStatus::Unknown)) {
            return;
        }
        let ready = tx
            .input
            .iter()
            .all(|i| matches!(self.chain(|c| c.get_utxo(&i.previous_output)), Ok(Some(_))));
        if ready {
            if let Err(e) = self.chain(|c| c.submit_transaction(tx)) {
                tracing::debug!("reclaim: {txid} not yet: {e}");
            }
        }
    }

    fn reclaim_channel(&mut self, key: &super::channels::Key) -> Result<ChannelReclaim, String> {
        let Some(leaf) = self.channels.leaves.get(key) else {
            return Ok(ChannelReclaim::Done);
        };
        let channel = leaf.link.channel().clone();
        // Our commitment on whichever of its live outputs reached the chain.
        let mut awaiting = true;
        for outpoint in channel.funding_outpoints() {
            let (commit, _) = channel
                .signed_latest_commitment_on(outpoint)
                .map_err(|e| e.to_string())?;
            let txid = commit.compute_txid();
            match self.chain(|c| c.tx_status(&txid)) {
                Ok(TxStatus::Confirmed { .. }) => {
                    self.reclaims.entry(*key).or_default().commitment = Some(txid);
                    return self.sweep_to_local(key, &channel, &commit);
                }
                Ok(TxStatus::InMempool) => return Ok(ChannelReclaim::CommitmentPublished),
                _ => {}
            }
            match self.chain(|c| c.get_utxo(&outpoint)) {
                Ok(Some(_)) => {
                    self.publish_commitment(&commit)?;
                    self.reclaims.entry(*key).or_default().commitment = Some(txid);
                    return Ok(ChannelReclaim::CommitmentPublished);
                }
                Ok(None) => {
                    // Spent by another transaction, or not on chain yet.
                    let parent = outpoint.txid;
                    if matches!(
                        self.chain(|c| c.tx_status(&parent)),
                        Ok(TxStatus::Confirmed { .. })
                    ) {
                        awaiting = false;
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(if awaiting {
            ChannelReclaim::AwaitingOutput
        } else {
            ChannelReclaim::ClosedByClient
        })
    }

    /// Our zero-fee commitment with a child through its P2A anchor paid from our wallet.
    fn publish_commitment(&mut self, commit: &Transaction) -> Result<(), String> {
        let anchor = commit
            .output
            .iter()
            .position(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey))
            .ok_or("our commitment has no anchor")?;
        let child = self
            .wallet
            .build_anchor_child(commit, Amount::ZERO, anchor as u32, RECLAIM_FEE_RATE)
            .map_err(|e| format!("no wallet coin for the commitment's fee: {e}"))?;
        let chain = std::sync::Arc::clone(&self.chain);
        tokio::task::block_in_place(|| {
            self.wallet
                .broadcast_package(chain.as_ref(), commit, &child)
        })
        .map_err(|e| format!("commitment {}: {e}", commit.compute_txid()))?;
        Ok(())
    }

    fn sweep_to_local(
        &mut self,
        key: &super::channels::Key,
        channel: &superscalar_core::channel::state::Channel,
        commit: &Transaction,
    ) -> Result<ChannelReclaim, String> {
        let destination = self.reclaim_destination();
        let Ok(sweep) = channel.claim_to_local(commit, destination, RECLAIM_FEE_RATE) else {
            // Nothing of ours in it (or less than the sweep's fee).
            return Ok(ChannelReclaim::Done);
        };
        self.reclaims.entry(*key).or_default().sweep =
            Some((sweep.compute_txid(), sweep.output[0].value));
        let to_local = sweep.input[0].previous_output;
        let spent = self.chain(|c| c.get_utxo(&to_local));
        if matches!(spent, Ok(None)) {
            return Ok(ChannelReclaim::Done);
        }
        if let Err(e) = self.chain(|c| c.submit_transaction(&sweep)) {
            tracing::debug!("reclaim: to_local sweep not yet: {e}");
        }
        Ok(ChannelReclaim::Sweeping)
    }

    /// Sweeps a stock output of a leaf on chain to our wallet once its `stock_csv` has passed.
    #[allow(clippy::too_many_arguments)]
    fn sweep_stock(
        &mut self,
        id: FactoryId,
        factory: &Factory,
        v: &superscalar_core::ledger::Version,
        slot: Slot,
        outpoint: OutPoint,
        value: Amount,
        lsp: &bitcoin::key::Keypair,
    ) {
        if self
            .stock_reclaims
            .get(&outpoint)
            .is_some_and(|r| r.progress == Some(ChannelReclaim::Done))
        {
            return;
        }
        let creator_confirmed = matches!(
            self.chain(|c| c.tx_status(&outpoint.txid)),
            Ok(TxStatus::Confirmed { .. })
        );
        if !creator_confirmed {
            return;
        }
        let destination = self.reclaim_destination();
        // One script-path input (signature, leaf, control block) and one P2TR output.
        let fee = RECLAIM_FEE_RATE
            .fee_vb(STOCK_SWEEP_VBYTES)
            .unwrap_or(Amount::from_sat(1_000));
        let sweep = match factory.stock_sweep(slot, v, outpoint, value, destination, fee, lsp) {
            Ok(s) => s,
            Err(e) => return tracing::debug!("factory {id}: stock {outpoint}: {e}"),
        };
        let entry = self.stock_reclaims.entry(outpoint).or_default();
        entry.factory = Some(id);
        entry.sweep = Some((sweep.compute_txid(), sweep.output[0].value));
        let progress = match self.chain(|c| c.get_utxo(&outpoint)) {
            Ok(None) => ChannelReclaim::Done,
            _ => {
                if let Err(e) = self.chain(|c| c.submit_transaction(&sweep)) {
                    tracing::debug!("reclaim: stock sweep not yet: {e}");
                }
                ChannelReclaim::Sweeping
            }
        };
        let was = self
            .stock_reclaims
            .entry(outpoint)
            .or_default()
            .progress
            .replace(progress);
        if was != Some(progress) && progress == ChannelReclaim::Done {
            self.log(format!(
                "factory {id}: stock {outpoint} swept to our wallet"
            ));
        }
    }

    /// The wallet script reclaimed outputs go to (drawn once per run).
    fn reclaim_destination(&mut self) -> bitcoin::ScriptBuf {
        match &self.reclaim_to {
            Some(d) => d.clone(),
            None => {
                let d = self.wallet.new_script();
                self.reclaim_to = Some(d.clone());
                d
            }
        }
    }

    /// `reclaim` in `factory ID`: each channel's progress, `null` unless the factory is closing.
    pub(super) fn reclaim_json(&self, id: FactoryId) -> Value {
        let rows: Vec<Value> = self
            .reclaims
            .iter()
            .filter(|(k, _)| k.0 == id)
            .map(|(k, r)| {
                json!({
                    "client": r.client,
                    "channel": k.2.to_string(),
                    "progress": r.progress.map(ChannelReclaim::as_str),
                    "commitment": r.commitment.map(|t| t.to_string()),
                    "sweep": r.sweep.map(|(t, _)| t.to_string()),
                    "swept_sat": r.sweep.map(|(_, a)| a.to_sat()),
                })
            })
            .collect();
        let stocks: Vec<Value> = self
            .stock_reclaims
            .iter()
            .filter(|(_, r)| r.factory == Some(id))
            .map(|(o, r)| {
                json!({
                    "stock": o.to_string(),
                    "progress": r.progress.map(ChannelReclaim::as_str),
                    "sweep": r.sweep.map(|(t, _)| t.to_string()),
                    "swept_sat": r.sweep.map(|(_, a)| a.to_sat()),
                })
            })
            .collect();
        match self.factories.get(&id) {
            Some(f) if f.status == FactoryStatus::Closing || !rows.is_empty() => {
                json!({ "channels": rows, "stocks": stocks })
            }
            _ => Value::Null,
        }
    }
}
