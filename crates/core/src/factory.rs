//! A factory: its parties and configuration, the timeout T, the keys and scripts of every output,
//! the amounts at a given odometer state, and every transaction of the tree and of the timeout
//! policy, built as pure functions of those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::key::{PublicKey, TweakedPublicKey};
use bitcoin::opcodes::all::{OP_CHECKSIG, OP_CLTV, OP_CSV, OP_DROP};
use bitcoin::script::Builder;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::{LeafVersion, TaprootBuilder, TaprootSpendInfo};
use bitcoin::{
    transaction, Amount, OutPoint, ScriptBuf, Sequence, TapSighashType, Transaction, TxIn, TxOut,
    Txid, Witness,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::musig::{AggregateKey, MusigError, TweakedAggregateKey};
use crate::odometer::{ewt_max, Odometer};
use crate::shape::{FactoryConfig, ShapeError, TimeoutPolicy, ANCHOR_VALUE};
use crate::tree::{NodeKind, Tree};
use crate::types::{ClientId, FactoryId, NodeId};

/// Dust threshold of a P2TR output (Bitcoin Core's default policy).
pub const P2TR_DUST: Amount = Amount::from_sat(330);
/// Largest vsize of a TRUC (v3) transaction.
const TRUC_MAX_VSIZE: u64 = 10_000;

/// One client of a factory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSpec {
    /// The client's factory key (signs tree transactions, receives timeout payouts and its fee coin).
    pub key: PublicKey,
    /// Capacity of the client's channel with the LSP.
    pub capacity: Amount,
    /// Where the client's fee coin and timeout payouts go (chosen by the client).
    pub payout: ScriptBuf,
}

impl ClientSpec {
    /// A client paid to a key-path-only P2TR of its factory key.
    pub fn new(key: PublicKey, capacity: Amount) -> Self {
        let secp = Secp256k1::verification_only();
        let payout = ScriptBuf::new_p2tr(&secp, key.inner.x_only_public_key().0, None);
        ClientSpec {
            key,
            capacity,
            payout,
        }
    }
}

/// Everything all parties must agree on to build the same tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryParams {
    /// The factory's id.
    pub id: FactoryId,
    /// Shape, policies and amounts.
    pub config: FactoryConfig,
    /// The LSP's factory key.
    pub lsp_key: PublicKey,
    /// The clients, in tree order.
    pub clients: Vec<ClientSpec>,
    /// Height at which the factory is created (T counts from here).
    pub creation_height: u32,
}

/// A factory that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FactoryError {
    /// The configuration is unsafe or invalid.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A key operation failed.
    #[error(transparent)]
    Musig(#[from] MusigError),
    /// No such client.
    #[error("unknown client {0}")]
    UnknownClient(ClientId),
    /// The liquidity stock cannot absorb the fee increases of newer states.
    #[error("the liquidity stock of {0} cannot pay the fee increases of newer states: raise stock_per_client or lower state_fee_step")]
    StockExhausted(NodeId),
}

/// An output of the factory, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Slot {
    /// The output a node's kickoff spends (the funding output for the root).
    NodeInput(NodeId),
    /// The kickoff output a node's state transaction spends.
    KickoffOut(NodeId),
    /// A client's channel with the LSP (MuSig2 of the two).
    Channel(ClientId),
    /// A client's own coin for bumping its commitment.
    FeeCoin(ClientId),
    /// A stock output (index into [`Factory::stocks`]).
    Stock(u32),
}

/// A transaction of the factory, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TxKind {
    /// A node's kickoff.
    Kickoff(NodeId),
    /// A node's state transaction.
    State(NodeId),
    /// The inverted-policy timeout transaction of an output.
    Timeout(Slot),
}

/// A liquidity-stock output: the LSP's unsold liquidity for a group of clients of one leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    /// The leaf holding it.
    pub leaf: NodeId,
    /// The clients sharing it.
    pub clients: std::ops::Range<u32>,
}

/// Amounts of every output at one odometer state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amounts {
    node_input: Vec<Amount>,
    kickoff_out: Vec<Amount>,
    kickoff_fee: Vec<Amount>,
    state_fee: Vec<Amount>,
    stock: Vec<Amount>,
}

impl Amounts {
    /// Value of an output.
    pub fn value(&self, factory: &Factory, slot: Slot) -> Amount {
        match slot {
            Slot::NodeInput(n) => self.node_input[n.0 as usize],
            Slot::KickoffOut(n) => self.kickoff_out[n.0 as usize],
            Slot::Channel(c) => factory.params.clients[c.0 as usize].capacity,
            Slot::FeeCoin(_) => factory.params.config.client_fee_coin,
            Slot::Stock(s) => self.stock[s as usize],
        }
    }

    /// Fee of a tree transaction.
    pub fn fee(&self, kind: TxKind) -> Option<Amount> {
        match kind {
            TxKind::Kickoff(n) => Some(self.kickoff_fee[n.0 as usize]),
            TxKind::State(n) => Some(self.state_fee[n.0 as usize]),
            TxKind::Timeout(_) => None,
        }
    }

    /// The amount the funding output must carry.
    pub fn funding_value(&self) -> Amount {
        self.node_input[0]
    }
}

/// vsize of a one-input key-path-spend transaction with `p2tr` P2TR outputs and `p2a` anchors.
pub fn tree_tx_vsize(p2tr: usize, p2a: usize) -> u64 {
    let n = p2tr + p2a;
    let varint = if n < 0xfd {
        1
    } else if n <= 0xffff {
        3
    } else {
        5
    };
    // version + input count + input + output count + outputs + lock time, then (marker, flag and
    // a 64-byte signature witness) / 4 = 17 vbytes.
    (4 + 1 + 41 + varint + 43 * p2tr + 13 * p2a + 4 + 17) as u64
}

/// A factory's tree, keys and transactions.
#[derive(Debug)]
pub struct Factory {
    params: FactoryParams,
    tree: Tree,
    timeout_height: u32,
    ewt: u32,
    stocks: Vec<Stock>,
    leaf_stocks: HashMap<NodeId, std::ops::Range<u32>>,
    // Boxed so that a client, which computes only its path's keys, pays 8 bytes per other key.
    node_keys: Vec<OnceLock<Box<AggregateKey>>>,
    channel_keys: Vec<OnceLock<Box<AggregateKey>>>,
    stock_keys: Vec<OnceLock<Box<AggregateKey>>>,
    keys_aggregated: AtomicU64,
}

impl Factory {
    /// Lay out a factory and check that it is safe.
    pub fn new(params: FactoryParams) -> Result<Self, FactoryError> {
        let cfg = &params.config;
        cfg.shape.validate(cfg.network)?;
        let tree = Tree::new(params.clients.len(), &cfg.shape)?;
        let ewt = ewt_max(&tree, &cfg.shape, cfg.confirmation_budget);
        if ewt > cfg.ewt_ceiling {
            return Err(ShapeError::EwtAboveCeiling {
                ewt,
                ceiling: cfg.ewt_ceiling,
            }
            .into());
        }
        for (i, c) in params.clients.iter().enumerate() {
            if !c.payout.is_witness_program() {
                return Err(ShapeError::Amount(format!(
                    "client {i} payout script must be a segwit output (dust limits assume one)"
                ))
                .into());
            }
            if c.capacity < P2TR_DUST {
                return Err(ShapeError::Amount(format!(
                    "client {i} capacity {} is below the {} dust limit",
                    c.capacity, P2TR_DUST
                ))
                .into());
            }
        }
        if cfg.client_fee_coin < P2TR_DUST {
            return Err(ShapeError::Amount(format!(
                "client fee coin {} is dust",
                cfg.client_fee_coin
            ))
            .into());
        }
        let max_each = Amount::MAX_MONEY / params.clients.len().max(1) as u64;
        if cfg.stock_per_client > max_each || cfg.client_fee_coin > max_each {
            return Err(ShapeError::Amount(
                "stock or fee coin per client exceeds the money supply".into(),
            )
            .into());
        }
        let max_rate = bitcoin::FeeRate::from_sat_per_vb_u32(10_000);
        if cfg.fees.tree_fee_rate > max_rate || cfg.fees.state_fee_step > max_rate {
            return Err(ShapeError::Amount(
                "tree fee rates above 10,000 sat/vB are refused".into(),
            )
            .into());
        }
        if cfg.stock_per_client < P2TR_DUST {
            return Err(ShapeError::Amount(format!(
                "stock per client {} is dust",
                cfg.stock_per_client
            ))
            .into());
        }
        let total = params
            .clients
            .iter()
            .try_fold(Amount::ZERO, |a, c| a.checked_add(c.capacity))
            .ok_or_else(|| ShapeError::Amount("capacities overflow".into()))?;
        if total > Amount::MAX_MONEY {
            return Err(ShapeError::Amount("capacities exceed 21 million BTC".into()).into());
        }
        let timeout_height = params.creation_height + cfg.active_blocks + cfg.dying_blocks + ewt;
        let mut stocks = Vec::new();
        let mut leaf_stocks = HashMap::new();
        for node in tree.nodes().iter().filter(|n| n.kind == NodeKind::Leaf) {
            let start = stocks.len() as u32;
            for g in tree.stock_groups(node.id) {
                stocks.push(Stock {
                    leaf: node.id,
                    clients: g,
                });
            }
            leaf_stocks.insert(node.id, start..stocks.len() as u32);
        }
        let factory = Factory {
            node_keys: (0..tree.nodes().len()).map(|_| OnceLock::new()).collect(),
            channel_keys: (0..params.clients.len()).map(|_| OnceLock::new()).collect(),
            stock_keys: (0..stocks.len()).map(|_| OnceLock::new()).collect(),
            keys_aggregated: AtomicU64::new(0),
            params,
            tree,
            timeout_height,
            ewt,
            stocks,
            leaf_stocks,
        };
        // The stock must be able to pay for the newest state of every layer.
        factory.check_worst_case_fees()?;
        Ok(factory)
    }

    /// Public keys aggregated so far (for benchmarks).
    pub fn keys_aggregated(&self) -> u64 {
        self.keys_aggregated.load(Ordering::Relaxed)
    }

    /// The parameters.
    pub fn params(&self) -> &FactoryParams {
        &self.params
    }

    /// The tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Stock outputs, by index.
    pub fn stocks(&self) -> &[Stock] {
        &self.stocks
    }

    /// Stock indices of a leaf.
    pub fn leaf_stocks(&self, leaf: NodeId) -> std::ops::Range<u32> {
        self.leaf_stocks.get(&leaf).cloned().unwrap_or(0..0)
    }

    /// The stock a client's group shares.
    pub fn stock_of(&self, client: ClientId) -> Option<u32> {
        let leaf = self.tree.leaf_of(client)?;
        self.leaf_stocks(leaf)
            .find(|s| self.stocks[*s as usize].clients.contains(&client.0))
    }

    /// The absolute timeout T: the first block height in which timeout transactions confirm.
    pub fn timeout_height(&self) -> u32 {
        self.timeout_height
    }

    /// Worst-case exit time in blocks (EWT_max).
    pub fn ewt_max(&self) -> u32 {
        self.ewt
    }

    /// A fresh odometer (every layer at its first state).
    pub fn initial_odometer(&self) -> Odometer {
        Odometer::new(&self.tree, &self.params.config.shape)
    }

    fn check_worst_case_fees(&self) -> Result<(), FactoryError> {
        let shape = &self.params.config.shape;
        let mut odo = self.initial_odometer();
        // Every layer at its newest state is the most expensive state.
        let mut last = Odometer::new(&self.tree, shape);
        for n in self.tree.nodes() {
            if n.kind == NodeKind::Leaf {
                while last.advance(&self.tree, n.id).is_ok() {}
            }
        }
        std::mem::swap(&mut odo, &mut last);
        let worst = self.amounts(&odo)?;
        if worst.funding_value() > Amount::MAX_MONEY {
            return Err(ShapeError::Amount(format!(
                "the factory needs {}, more than exists",
                worst.funding_value()
            ))
            .into());
        }
        Ok(())
    }

    // ---- keys and scripts -------------------------------------------------------------------

    /// The public keys that must sign to spend `slot` on the key path (LSP first).
    pub fn signers(&self, slot: Slot) -> Vec<Signer> {
        let clients: Vec<ClientId> = match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) => self.tree.node(n).client_ids().collect(),
            Slot::Channel(c) => vec![c],
            Slot::FeeCoin(c) => return vec![Signer::Client(c)],
            Slot::Stock(s) => self.stocks[s as usize]
                .clients
                .clone()
                .map(ClientId)
                .collect(),
        };
        std::iter::once(Signer::Lsp)
            .chain(clients.into_iter().map(Signer::Client))
            .collect()
    }

    /// The public key of a signer.
    pub fn key_of(&self, signer: Signer) -> PublicKey {
        match signer {
            Signer::Lsp => self.params.lsp_key,
            Signer::Client(c) => self.params.clients[c.0 as usize].key,
        }
    }

    fn aggregate(&self, slot: Slot) -> Result<&AggregateKey, FactoryError> {
        let cell = match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) => &self.node_keys[n.0 as usize],
            Slot::Channel(c) => &self.channel_keys[c.0 as usize],
            Slot::Stock(s) => &self.stock_keys[s as usize],
            Slot::FeeCoin(_) => {
                return Err(MusigError::Keys("a fee coin is single-key".into()).into())
            }
        };
        if let Some(k) = cell.get() {
            return Ok(k);
        }
        let keys: Vec<PublicKey> = self
            .signers(slot)
            .into_iter()
            .map(|s| self.key_of(s))
            .collect();
        self.keys_aggregated
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let key = Box::new(AggregateKey::new(&keys)?);
        Ok(cell.get_or_init(|| key))
    }

    /// `<T-1> OP_CLTV OP_DROP <LSP> OP_CHECKSIG`: the LSP's sweep after the timeout.
    pub fn sweep_leaf(&self) -> ScriptBuf {
        Builder::new()
            .push_int(i64::from(self.timeout_height - 1))
            .push_opcode(OP_CLTV)
            .push_opcode(OP_DROP)
            .push_x_only_key(&self.params.lsp_key.inner.x_only_public_key().0)
            .push_opcode(OP_CHECKSIG)
            .into_script()
    }

    /// `<stock_csv> OP_CSV OP_DROP <LSP> OP_CHECKSIG`: the LSP takes its stock after a delay.
    pub fn stock_leaf(&self) -> ScriptBuf {
        Builder::new()
            .push_int(i64::from(self.params.config.stock_csv))
            .push_opcode(OP_CSV)
            .push_opcode(OP_DROP)
            .push_x_only_key(&self.params.lsp_key.inner.x_only_public_key().0)
            .push_opcode(OP_CHECKSIG)
            .into_script()
    }

    /// The script leaves of an output.
    pub fn leaves(&self, slot: Slot) -> Vec<ScriptBuf> {
        let sweep = self.params.config.timeout_policy == TimeoutPolicy::LspSweep;
        let mut leaves = Vec::new();
        match slot {
            Slot::NodeInput(n) => {
                // The funding output and state outputs carry the sweep; kickoff outputs do not.
                let from_state = match self.tree.node(n).parent {
                    None => true,
                    Some(p) => self.tree.node(p).has_state(),
                };
                if sweep && from_state {
                    leaves.push(self.sweep_leaf());
                }
            }
            Slot::KickoffOut(_) | Slot::FeeCoin(_) => {}
            Slot::Channel(_) => {
                if sweep {
                    leaves.push(self.sweep_leaf());
                }
            }
            Slot::Stock(_) => {
                leaves.push(self.stock_leaf());
                if sweep {
                    leaves.push(self.sweep_leaf());
                }
            }
        }
        leaves
    }

    /// Taproot spend info of an output with script leaves (internal key = the MuSig2 key).
    pub fn spend_info(&self, slot: Slot) -> Result<Option<TaprootSpendInfo>, FactoryError> {
        let leaves = self.leaves(slot);
        if leaves.is_empty() {
            return Ok(None);
        }
        let internal = self.aggregate(slot)?.internal_key();
        let depth = if leaves.len() == 1 { 0 } else { 1 };
        let mut builder = TaprootBuilder::new();
        for leaf in leaves {
            builder = builder
                .add_leaf(depth, leaf)
                .map_err(|e| MusigError::Keys(e.to_string()))?;
        }
        let secp = Secp256k1::verification_only();
        builder
            .finalize(&secp, internal)
            .map(Some)
            .map_err(|_| MusigError::Keys("taproot tree".into()).into())
    }

    /// The key that signs key-path spends of `slot` (MuSig2 aggregate, taproot-tweaked).
    pub fn signing_key(&self, slot: Slot) -> Result<TweakedAggregateKey, FactoryError> {
        let root = self.spend_info(slot)?.and_then(|i| i.merkle_root());
        Ok(self.aggregate(slot)?.tweaked(root)?)
    }

    /// The output script of `slot`.
    pub fn script_pubkey(&self, slot: Slot) -> Result<ScriptBuf, FactoryError> {
        if let Slot::FeeCoin(c) = slot {
            return Ok(self.client_payout_script(c));
        }
        let key = self.signing_key(slot)?.output_key();
        Ok(ScriptBuf::new_p2tr_tweaked(
            TweakedPublicKey::dangerous_assume_tweaked(key),
        ))
    }

    /// Where a client's timeout payouts and fee coin go.
    pub fn client_payout_script(&self, client: ClientId) -> ScriptBuf {
        self.params.clients[client.0 as usize].payout.clone()
    }

    /// The LSP's sweep of `slot` through its `<T-1> CLTV` leaf (lsp-sweep policy): a transaction
    /// with nLockTime T-1 paying `destination`, signed with the LSP's key.
    pub fn lsp_sweep(
        &self,
        slot: Slot,
        outpoint: OutPoint,
        value: Amount,
        destination: ScriptBuf,
        fee: Amount,
        lsp: &bitcoin::key::Keypair,
    ) -> Result<Transaction, FactoryError> {
        let leaf = self.sweep_leaf();
        let info = self
            .spend_info(slot)?
            .filter(|_| self.leaves(slot).contains(&leaf))
            .ok_or_else(|| ShapeError::Amount(format!("{slot:?} has no sweep leaf")))?;
        let spent = TxOut {
            value,
            script_pubkey: self.script_pubkey(slot)?,
        };
        let lock = LockTime::from_height(self.timeout_height - 1)
            .map_err(|_| ShapeError::Amount("timeout height".into()))?;
        let out_value = value
            .checked_sub(fee)
            .filter(|v| *v >= P2TR_DUST)
            .ok_or_else(|| ShapeError::Amount(format!("fee {fee} leaves dust from {value}")))?;
        let mut tx = one_input_tx(
            outpoint,
            Sequence::ENABLE_LOCKTIME_NO_RBF,
            lock,
            vec![TxOut {
                value: out_value,
                script_pubkey: destination,
            }],
        );
        tx.version = transaction::Version::TWO;
        let leaf_hash = bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript);
        let sighash = SighashCache::new(&tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(&[spent]),
                leaf_hash,
                TapSighashType::Default,
            )
            .map_err(|e| ShapeError::Amount(e.to_string()))?;
        let secp = Secp256k1::signing_only();
        let sig = secp.sign_schnorr(
            &bitcoin::secp256k1::Message::from_digest(sighash.to_byte_array()),
            lsp,
        );
        let control = control_block(&info, &leaf)
            .ok_or_else(|| ShapeError::Amount("control block".into()))?;
        let mut w = Witness::new();
        w.push(sig.as_ref());
        w.push(leaf.as_bytes());
        w.push(control.serialize());
        tx.input[0].witness = w;
        Ok(tx)
    }

    // ---- amounts ----------------------------------------------------------------------------

    /// Amounts of every output at odometer state `odo`: bottom-up, each transaction's input is its
    /// outputs plus its fee; fee increases of newer states are paid from the stock below them.
    pub fn amounts(&self, odo: &Odometer) -> Result<Amounts, FactoryError> {
        let cfg = &self.params.config;
        let nodes = self.tree.nodes();
        let n = nodes.len();
        let mut stock: Vec<Amount> = self
            .stocks
            .iter()
            .map(|s| cfg.stock_per_client * u64::from(s.clients.end - s.clients.start))
            .collect();
        let mut state_fee = vec![Amount::ZERO; n];
        let mut kickoff_fee = vec![Amount::ZERO; n];
        for node in nodes {
            let i = node.id.0 as usize;
            let kick_outputs = match node.kind {
                NodeKind::Static => node.children.len(),
                _ => 1,
            };
            kickoff_fee[i] = cfg
                .fees
                .tree_fee_rate
                .fee_vb(tree_tx_vsize(kick_outputs, 1))
                .unwrap_or(Amount::MAX);
            if node.has_state() {
                let vsize = self.state_vsize(node.id);
                let idx = u64::from(odo.state(node.id).map_or(0, |s| s.0));
                let base = cfg.fees.tree_fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
                let extra = cfg
                    .fees
                    .state_fee_step
                    .fee_vb(vsize * idx)
                    .unwrap_or(Amount::MAX);
                state_fee[i] = base + extra;
                if extra > Amount::ZERO {
                    self.deduct(node.id, extra, &mut stock)?;
                }
            }
        }
        let mut node_input = vec![Amount::ZERO; n];
        let mut kickoff_out = vec![Amount::ZERO; n];
        for node in nodes.iter().rev() {
            let i = node.id.0 as usize;
            let children_sum: Amount = node.children.iter().map(|c| node_input[c.0 as usize]).sum();
            match node.kind {
                NodeKind::Static => {
                    node_input[i] = children_sum + ANCHOR_VALUE + kickoff_fee[i];
                }
                NodeKind::Dw => {
                    kickoff_out[i] = children_sum + state_fee[i];
                    node_input[i] = kickoff_out[i] + ANCHOR_VALUE + kickoff_fee[i];
                }
                NodeKind::Leaf => {
                    let channels: Amount = node
                        .client_ids()
                        .map(|c| self.params.clients[c.0 as usize].capacity)
                        .sum();
                    let coins =
                        cfg.client_fee_coin * u64::from(node.clients.end - node.clients.start);
                    let stocks: Amount = self.leaf_stocks(node.id).map(|s| stock[s as usize]).sum();
                    kickoff_out[i] = channels + coins + stocks + state_fee[i];
                    node_input[i] = kickoff_out[i] + ANCHOR_VALUE + kickoff_fee[i];
                }
            }
        }
        Ok(Amounts {
            node_input,
            kickoff_out,
            kickoff_fee,
            state_fee,
            stock,
        })
    }

    /// Take `extra` from the stock outputs under `node`, evenly, the remainder from the first.
    fn deduct(
        &self,
        node: NodeId,
        extra: Amount,
        stock: &mut [Amount],
    ) -> Result<(), FactoryError> {
        let n = self.tree.node(node);
        let first_leaf = self.tree.leaf_of(ClientId(n.clients.start)).unwrap_or(node);
        let last_leaf = self
            .tree
            .leaf_of(ClientId(n.clients.end - 1))
            .unwrap_or(node);
        let start = self.leaf_stocks(first_leaf).start;
        let end = self.leaf_stocks(last_leaf).end;
        let count = u64::from(end - start).max(1);
        let share = extra.to_sat() / count;
        let rem = extra.to_sat() % count;
        for (k, s) in (start..end).enumerate() {
            let take = Amount::from_sat(share + if k == 0 { rem } else { 0 });
            let left = stock[s as usize]
                .checked_sub(take)
                .filter(|v| *v >= P2TR_DUST)
                .ok_or(FactoryError::StockExhausted(self.stocks[s as usize].leaf))?;
            stock[s as usize] = left;
        }
        Ok(())
    }

    fn state_vsize(&self, node: NodeId) -> u64 {
        let n = self.tree.node(node);
        match n.kind {
            NodeKind::Leaf => {
                let clients = (n.clients.end - n.clients.start) as usize;
                tree_tx_vsize(2 * clients + self.leaf_stocks(node).len(), 0)
            }
            _ => tree_tx_vsize(n.children.len(), 0),
        }
    }

    // ---- transactions -----------------------------------------------------------------------

    /// Outputs a tree transaction creates, in order (anchors excluded).
    pub fn outputs_of(&self, kind: TxKind) -> Vec<Slot> {
        match kind {
            TxKind::Kickoff(n) => {
                let node = self.tree.node(n);
                if node.has_state() {
                    vec![Slot::KickoffOut(n)]
                } else {
                    node.children.iter().map(|c| Slot::NodeInput(*c)).collect()
                }
            }
            TxKind::State(n) => {
                let node = self.tree.node(n);
                match node.kind {
                    NodeKind::Leaf => node
                        .client_ids()
                        .map(Slot::Channel)
                        .chain(node.client_ids().map(Slot::FeeCoin))
                        .chain(self.leaf_stocks(n).map(Slot::Stock))
                        .collect(),
                    _ => node.children.iter().map(|c| Slot::NodeInput(*c)).collect(),
                }
            }
            TxKind::Timeout(_) => Vec::new(),
        }
    }

    /// The output a transaction spends.
    pub fn input_of(&self, kind: TxKind) -> Slot {
        match kind {
            TxKind::Kickoff(n) => Slot::NodeInput(n),
            TxKind::State(n) => Slot::KickoffOut(n),
            TxKind::Timeout(s) => s,
        }
    }

    /// The transaction that creates `slot` (none for the funding output).
    pub fn creator_of(&self, slot: Slot) -> Option<TxKind> {
        match slot {
            Slot::NodeInput(n) => {
                let p = self.tree.node(n).parent?;
                Some(if self.tree.node(p).has_state() {
                    TxKind::State(p)
                } else {
                    TxKind::Kickoff(p)
                })
            }
            Slot::KickoffOut(n) => Some(TxKind::Kickoff(n)),
            Slot::Channel(c) | Slot::FeeCoin(c) => self.tree.leaf_of(c).map(TxKind::State),
            Slot::Stock(s) => Some(TxKind::State(self.stocks[s as usize].leaf)),
        }
    }

    /// Build one transaction, given the outpoint of the output it spends.
    pub fn build_tx(
        &self,
        kind: TxKind,
        spends: OutPoint,
        amounts: &Amounts,
        odo: &Odometer,
    ) -> Result<Transaction, FactoryError> {
        if let TxKind::Timeout(slot) = kind {
            return self.build_timeout(slot, spends, amounts);
        }
        let mut output = Vec::new();
        for slot in self.outputs_of(kind) {
            output.push(TxOut {
                value: amounts.value(self, slot),
                script_pubkey: self.script_pubkey(slot)?,
            });
        }
        let sequence = match kind {
            TxKind::Kickoff(_) => {
                output.push(TxOut {
                    value: ANCHOR_VALUE,
                    script_pubkey: ScriptBuf::new_p2a(),
                });
                Sequence::ENABLE_LOCKTIME_NO_RBF
            }
            TxKind::State(n) => odo.sequence(n).unwrap_or(Sequence::ENABLE_LOCKTIME_NO_RBF),
            TxKind::Timeout(_) => unreachable!("handled above"),
        };
        Ok(one_input_tx(spends, sequence, LockTime::ZERO, output))
    }

    /// Who is paid what by the timeout transaction of `slot` (inverted policy).
    pub fn timeout_payouts(&self, slot: Slot, amounts: &Amounts) -> Vec<(ClientId, Amount)> {
        let mut pay: Vec<(ClientId, Amount)> = Vec::new();
        let add_stock = |pay: &mut Vec<(ClientId, Amount)>, s: u32| {
            let st = &self.stocks[s as usize];
            let k = u64::from(st.clients.end - st.clients.start);
            let v = amounts.stock[s as usize].to_sat();
            for (j, c) in st.clients.clone().enumerate() {
                let share = v / k + if j == 0 { v % k } else { 0 };
                pay.push((ClientId(c), Amount::from_sat(share)));
            }
        };
        match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) => {
                let node = self.tree.node(n);
                for c in node.client_ids() {
                    pay.push((c, self.params.clients[c.0 as usize].capacity));
                }
                let first = self.tree.leaf_of(ClientId(node.clients.start));
                let last = self.tree.leaf_of(ClientId(node.clients.end - 1));
                if let (Some(f), Some(l)) = (first, last) {
                    for s in self.leaf_stocks(f).start..self.leaf_stocks(l).end {
                        add_stock(&mut pay, s);
                    }
                }
            }
            Slot::Channel(c) => pay.push((c, self.params.clients[c.0 as usize].capacity)),
            Slot::Stock(s) => add_stock(&mut pay, s),
            Slot::FeeCoin(_) => {}
        }
        // One output per client.
        let mut merged: Vec<(ClientId, Amount)> = Vec::new();
        pay.sort_by_key(|p| p.0);
        for (c, a) in pay {
            match merged.last_mut() {
                Some(last) if last.0 == c => last.1 += a,
                _ => merged.push((c, a)),
            }
        }
        merged
    }

    /// Whether `slot` has a timeout transaction under the inverted policy.
    pub fn has_timeout(&self, slot: Slot) -> bool {
        self.params.config.timeout_policy == TimeoutPolicy::Inverted
            && !matches!(slot, Slot::FeeCoin(_))
    }

    fn build_timeout(
        &self,
        slot: Slot,
        spends: OutPoint,
        amounts: &Amounts,
    ) -> Result<Transaction, FactoryError> {
        let value = amounts.value(self, slot);
        let payouts = self.timeout_payouts(slot, amounts);
        let paid: Amount = payouts.iter().map(|p| p.1).sum();
        let mut output: Vec<TxOut> = payouts
            .iter()
            .map(|(c, a)| TxOut {
                value: *a,
                script_pubkey: self.client_payout_script(*c),
            })
            .collect();
        if paid == value {
            // Zero fee: a 0-sat anchor lets the client's fee coin (or anyone) pay for it.
            output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_p2a(),
            });
        }
        let lock = LockTime::from_height(self.timeout_height - 1).map_err(|_| {
            ShapeError::Amount(format!(
                "timeout height {} is not a block height",
                self.timeout_height
            ))
        })?;
        Ok(one_input_tx(
            spends,
            Sequence::ENABLE_LOCKTIME_NO_RBF,
            lock,
            output,
        ))
    }

    /// The BIP-341 key-path sighash of a one-input transaction spending `spent`.
    pub fn sighash(tx: &Transaction, spent: &TxOut) -> [u8; 32] {
        SighashCache::new(tx)
            .taproot_key_spend_signature_hash(
                0,
                &Prevouts::All(std::slice::from_ref(spent)),
                TapSighashType::Default,
            )
            .map(|h| h.to_byte_array())
            .unwrap_or([0u8; 32])
    }

    /// The txid a transaction will have (witness does not change it).
    pub fn txid(tx: &Transaction) -> Txid {
        tx.compute_txid()
    }
}

/// A party that signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Signer {
    /// The LSP.
    Lsp,
    /// A client.
    Client(ClientId),
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Lsp => f.write_str("the LSP"),
            Signer::Client(c) => write!(f, "{c}"),
        }
    }
}

fn one_input_tx(
    spends: OutPoint,
    sequence: Sequence,
    lock_time: LockTime,
    output: Vec<TxOut>,
) -> Transaction {
    let mut tx = Transaction {
        version: transaction::Version(3),
        lock_time,
        input: vec![TxIn {
            previous_output: spends,
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        }],
        output,
    };
    if tree_tx_vsize(tx.output.len(), 0) > TRUC_MAX_VSIZE {
        tx.version = transaction::Version::TWO;
    }
    tx
}

/// A transaction built for signing, with the output it spends.
#[derive(Debug, Clone)]
pub struct BuiltTx {
    /// The (unsigned) transaction.
    pub tx: Transaction,
    /// The output it spends.
    pub spent: TxOut,
}

impl Factory {
    /// Outpoint of `slot`, given its creator's txid (the funding outpoint for the root's input).
    fn outpoint_of(
        &self,
        slot: Slot,
        built: &HashMap<TxKind, BuiltTx>,
        funding: OutPoint,
    ) -> Option<OutPoint> {
        match self.creator_of(slot) {
            None => Some(funding),
            Some(creator) => {
                let tx = &built.get(&creator)?.tx;
                let vout = self.outputs_of(creator).iter().position(|s| *s == slot)? as u32;
                Some(OutPoint::new(tx.compute_txid(), vout))
            }
        }
    }

    /// Where `slot` is on chain, given the txids of the factory's transactions.
    pub fn slot_outpoint(
        &self,
        slot: Slot,
        funding: OutPoint,
        txid_of: impl Fn(TxKind) -> Option<Txid>,
    ) -> Option<OutPoint> {
        match self.creator_of(slot) {
            None => Some(funding),
            Some(creator) => {
                let vout = self.outputs_of(creator).iter().position(|s| *s == slot)? as u32;
                Some(OutPoint::new(txid_of(creator)?, vout))
            }
        }
    }

    /// Build `kinds` (and whatever transactions they depend on) for odometer state `odo`.
    pub fn build_set(
        &self,
        kinds: &[TxKind],
        funding: OutPoint,
        odo: &Odometer,
    ) -> Result<HashMap<TxKind, BuiltTx>, FactoryError> {
        let amounts = self.amounts(odo)?;
        let mut built: HashMap<TxKind, BuiltTx> = HashMap::new();
        for kind in kinds {
            self.build_into(*kind, funding, &amounts, odo, &mut built)?;
        }
        Ok(built)
    }

    fn build_into(
        &self,
        kind: TxKind,
        funding: OutPoint,
        amounts: &Amounts,
        odo: &Odometer,
        built: &mut HashMap<TxKind, BuiltTx>,
    ) -> Result<(), FactoryError> {
        if built.contains_key(&kind) {
            return Ok(());
        }
        let slot = self.input_of(kind);
        if let Some(creator) = self.creator_of(slot) {
            self.build_into(creator, funding, amounts, odo, built)?;
        }
        let spends = self
            .outpoint_of(slot, built, funding)
            .ok_or_else(|| MusigError::Keys(format!("cannot locate the output {slot:?}")))?;
        let tx = self.build_tx(kind, spends, amounts, odo)?;
        let spent = TxOut {
            value: amounts.value(self, slot),
            script_pubkey: self.script_pubkey(slot)?,
        };
        built.insert(kind, BuiltTx { tx, spent });
        Ok(())
    }

    /// Transactions a client signs: its exit path in publishing order, then the timeout
    /// transactions of every output that holds its money.
    pub fn client_jobs(&self, client: ClientId) -> Result<Vec<TxKind>, FactoryError> {
        if client.0 as usize >= self.params.clients.len() {
            return Err(FactoryError::UnknownClient(client));
        }
        let path = self.tree.path_of(client);
        let mut jobs = Vec::new();
        for n in &path {
            jobs.push(TxKind::Kickoff(*n));
            if self.tree.node(*n).has_state() {
                jobs.push(TxKind::State(*n));
            }
        }
        for slot in self.client_slots(client) {
            if self.has_timeout(slot) {
                jobs.push(TxKind::Timeout(slot));
            }
        }
        Ok(jobs)
    }

    /// Outputs that hold a client's money along its path (fee coin excluded).
    pub fn client_slots(&self, client: ClientId) -> Vec<Slot> {
        let mut slots = Vec::new();
        for n in self.tree.path_of(client) {
            slots.push(Slot::NodeInput(n));
            if self.tree.node(n).has_state() {
                slots.push(Slot::KickoffOut(n));
            }
        }
        slots.push(Slot::Channel(client));
        if let Some(s) = self.stock_of(client) {
            slots.push(Slot::Stock(s));
        }
        slots
    }

    /// The funding output (script and value) the LSP's funding transaction must create.
    pub fn funding_output(&self) -> Result<TxOut, FactoryError> {
        let amounts = self.amounts(&self.initial_odometer())?;
        Ok(TxOut {
            value: amounts.funding_value(),
            script_pubkey: self.script_pubkey(Slot::NodeInput(NodeId(0)))?,
        })
    }

    /// Every transaction the LSP signs: the whole tree and every timeout transaction.
    pub fn all_jobs(&self) -> Vec<TxKind> {
        let mut jobs = Vec::new();
        for n in self.tree.nodes() {
            jobs.push(TxKind::Kickoff(n.id));
            if n.has_state() {
                jobs.push(TxKind::State(n.id));
            }
        }
        for slot in self.all_slots() {
            if self.has_timeout(slot) {
                jobs.push(TxKind::Timeout(slot));
            }
        }
        jobs
    }

    /// Every output of the factory that belongs to the tree (fee coins and anchors excluded).
    pub fn all_slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        for n in self.tree.nodes() {
            slots.push(Slot::NodeInput(n.id));
            if n.has_state() {
                slots.push(Slot::KickoffOut(n.id));
            }
        }
        slots.extend((0..self.params.clients.len() as u32).map(|c| Slot::Channel(ClientId(c))));
        slots.extend((0..self.stocks.len() as u32).map(Slot::Stock));
        slots
    }
}

/// Spend info helper for tests and the LSP's sweep: the control block of `leaf`.
pub fn control_block(
    info: &TaprootSpendInfo,
    leaf: &ScriptBuf,
) -> Option<bitcoin::taproot::ControlBlock> {
    info.control_block(&(leaf.clone(), LeafVersion::TapScript))
}
