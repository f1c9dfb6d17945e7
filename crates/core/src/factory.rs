//! A factory: its parties and configuration, the timeout T, the keys and scripts of every output,
//! the amounts at a given odometer state, and every transaction of the tree and of the timeout
//! policy, built as pure functions of those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash};
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

use crate::ledger::{StockVersion, Version};
use crate::musig::{AggregateKey, MusigError, TweakedAggregateKey};
use crate::odometer::{ewt_max, Odometer};
use crate::revocation::hashlock_leaf;
use crate::shape::Punishment;
use crate::shape::{FactoryConfig, ShapeError, TimeoutPolicy, ANCHOR_VALUE};
use crate::tree::{NodeKind, Tree};
use crate::types::{ClientId, FactoryId, NodeId};

/// Dust threshold of a P2TR output (Bitcoin Core's default policy).
pub const P2TR_DUST: Amount = Amount::from_sat(330);
/// vbytes one P2TR output adds to a transaction.
const P2TR_OUTPUT_VBYTES: u64 = 43;
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
    /// Revocation hash of version 0 of every stock output, by stock index (from the LSP's
    /// [`crate::revocation::StockSecrets`]).
    #[serde(default)]
    pub stock_hashes: Vec<sha256::Hash>,
}

impl FactoryParams {
    /// These parameters with version-0 revocation hashes of every stock output from `secrets`
    /// (none when the shape is invalid: [`Factory::new`] then says why).
    pub fn with_stock_secrets(mut self, secrets: &crate::revocation::StockSecrets) -> Self {
        self.stock_hashes = secrets.initial_hashes(self.stock_count().unwrap_or(0));
        self
    }

    /// How many stock outputs this factory has (and so how many `stock_hashes` it needs).
    pub fn stock_count(&self) -> Result<usize, ShapeError> {
        let tree = Tree::new(self.clients.len(), &self.config.shape)?;
        Ok(tree
            .nodes()
            .iter()
            .filter(|n| n.kind == NodeKind::Leaf)
            .map(|n| tree.stock_groups(n.id).len())
            .sum())
    }
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
    #[error("the liquidity stock of {0} cannot pay the fee increases of newer states (or the sales made from it): raise stock_per_client or lower state_fee_step")]
    StockExhausted(NodeId),
    /// The parameters carry the wrong number of stock revocation hashes.
    #[error(
        "the factory has {expected} stock outputs but the parameters carry {got} revocation hashes"
    )]
    StockHashes {
        /// Stock outputs.
        expected: usize,
        /// Hashes given.
        got: usize,
    },
    /// A slot or transaction that does not exist in this version of the factory.
    #[error("{0} does not exist in this version of the factory")]
    NoSuch(String),
    /// A transaction would create an output below its dust limit (it would not relay).
    #[error("{kind:?} would create an output of {value} below its dust limit of {limit}")]
    Dust {
        /// The transaction.
        kind: TxKind,
        /// The output's value.
        value: Amount,
        /// Its dust limit.
        limit: Amount,
    },
    /// The factory's heights do not fit this party's view of the chain.
    #[error("unsafe heights: {0}")]
    Heights(String),
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
    /// The channel created by a liquidity sale (index into [`Version::sales`]).
    Sold(u32),
    /// The PS-factory (stock) output a pseudo-Spilman sale leaves as change.
    Change(u32),
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
    /// A pseudo-Spilman liquidity sale (index into [`Version::sales`]).
    Sale(u32),
    /// The punishment of a stock or change output, through its hashlock leaf.
    Punish(Slot),
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
    sold: Vec<Amount>,
    change: Vec<Amount>,
    sale_fee: Amount,
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
            Slot::Sold(j) => self.sold.get(j as usize).copied().unwrap_or(Amount::ZERO),
            Slot::Change(j) => self.change.get(j as usize).copied().unwrap_or(Amount::ZERO),
        }
    }

    /// Fee of a tree transaction.
    pub fn fee(&self, kind: TxKind) -> Option<Amount> {
        match kind {
            TxKind::Kickoff(n) => Some(self.kickoff_fee[n.0 as usize]),
            TxKind::State(n) => Some(self.state_fee[n.0 as usize]),
            TxKind::Sale(_) => Some(self.sale_fee),
            TxKind::Timeout(_) | TxKind::Punish(_) => None,
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
        if cfg.stock_csv == 0 || u32::from(cfg.stock_csv) <= cfg.confirmation_budget {
            return Err(ShapeError::Amount(format!(
                "stock_csv {} must exceed the confirmation budget {}: a buyer's sale transaction must \
                 confirm before the LSP's delayed leaf can take the PS-factory output it spends",
                cfg.stock_csv, cfg.confirmation_budget
            ))
            .into());
        }
        for (i, c) in params.clients.iter().enumerate() {
            if !is_standard_payout(&c.payout) {
                return Err(ShapeError::Amount(format!(
                    "client {i} payout script must be P2TR, P2WPKH or P2WSH: any other output \
                     would make the transactions that pay it unrelayable"
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
        let timeout_height = params
            .creation_height
            .checked_add(cfg.active_blocks)
            .and_then(|h| h.checked_add(cfg.dying_blocks))
            .and_then(|h| h.checked_add(ewt))
            .filter(|t| *t < bitcoin::absolute::LOCK_TIME_THRESHOLD && *t > 0)
            .ok_or_else(|| {
                FactoryError::Heights(format!(
                    "creation height {} + active {} + dying {} + EWT_max {} is not a block height \
                     below {}",
                    params.creation_height,
                    cfg.active_blocks,
                    cfg.dying_blocks,
                    ewt,
                    bitcoin::absolute::LOCK_TIME_THRESHOLD
                ))
            })?;
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
        if params.stock_hashes.len() != stocks.len() {
            return Err(FactoryError::StockHashes {
                expected: stocks.len(),
                got: params.stock_hashes.len(),
            });
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

    /// The version the factory is created in: first states, no sales, stock version 0.
    pub fn initial_version(&self) -> Version {
        Version {
            odo: self.initial_odometer(),
            sales: Vec::new(),
            stocks: self
                .params
                .stock_hashes
                .iter()
                .map(|h| StockVersion {
                    version: 0,
                    hash: *h,
                })
                .collect(),
        }
    }

    /// `v` with every layer at its last (most expensive) state.
    pub fn worst_case(&self, v: &Version) -> Version {
        let mut last = self.initial_odometer();
        for n in self.tree.nodes() {
            if n.kind == NodeKind::Leaf {
                while last.advance(&self.tree, n.id).is_ok() {}
            }
        }
        Version {
            odo: last,
            ..v.clone()
        }
    }

    fn check_worst_case_fees(&self) -> Result<(), FactoryError> {
        let worst_version = self.worst_case(&self.initial_version());
        let worst = self.amounts(&worst_version)?;
        if worst.funding_value() > Amount::MAX_MONEY {
            return Err(ShapeError::Amount(format!(
                "the factory needs {}, more than exists",
                worst.funding_value()
            ))
            .into());
        }
        self.check_stock_shares(&worst_version)
    }

    /// Every stock (or the last change output of its PS chain) in version `v` still splits into
    /// shares above the dust limit among its clients, so that its timeout and poison
    /// transactions relay.
    pub fn check_stock_shares(&self, v: &Version) -> Result<(), FactoryError> {
        let amounts = self.amounts(v)?;
        for (s, st) in self.stocks.iter().enumerate() {
            let s = s as u32;
            let (kind, value) = match v.chain_of(s).last() {
                Some(j) => (
                    TxKind::Timeout(Slot::Change(*j)),
                    amounts.change[*j as usize],
                ),
                None => (TxKind::Timeout(Slot::Stock(s)), amounts.stock[s as usize]),
            };
            let k = u64::from(st.clients.end - st.clients.start).max(1);
            if value.to_sat() / k < P2TR_DUST.to_sat() {
                return Err(FactoryError::Dust {
                    kind,
                    value: Amount::from_sat(value.to_sat() / k),
                    limit: P2TR_DUST,
                });
            }
        }
        Ok(())
    }

    /// Check this factory's heights against a party's own view of the chain (`tip`, the height
    /// of its best block) before it signs anything for the factory: the creation height is
    /// within `tolerance` blocks of the tip, and T is still far enough ahead for the whole
    /// active and dying periods and a worst-case exit.
    pub fn check_heights(&self, tip: u32, tolerance: u32) -> Result<(), FactoryError> {
        let created = self.params.creation_height;
        if created.abs_diff(tip) > tolerance {
            return Err(FactoryError::Heights(format!(
                "creation height {created} is more than {tolerance} blocks from our tip {tip}"
            )));
        }
        let cfg = &self.params.config;
        let needed = u64::from(tip)
            + u64::from(cfg.active_blocks)
            + u64::from(cfg.dying_blocks)
            + u64::from(self.ewt)
            - u64::from(tolerance.min(tip));
        if u64::from(self.timeout_height) < needed {
            return Err(FactoryError::Heights(format!(
                "timeout {} leaves less than active + dying + EWT_max ({}) blocks after our tip \
                 {tip}",
                self.timeout_height,
                u64::from(cfg.active_blocks) + u64::from(cfg.dying_blocks) + u64::from(self.ewt)
            )));
        }
        Ok(())
    }

    /// Check that an update signed at `tip` can still be used: a state signed now must be able
    /// to reach the chain (worst-case exit) before T.
    pub fn check_update_height(&self, tip: u32) -> Result<(), FactoryError> {
        if u64::from(tip) + u64::from(self.ewt) >= u64::from(self.timeout_height) {
            return Err(FactoryError::Heights(format!(
                "at height {tip} a new state could not complete its exit (EWT_max {}) before the \
                 timeout {}: rotate or exit instead",
                self.ewt, self.timeout_height
            )));
        }
        Ok(())
    }

    // ---- keys and scripts -------------------------------------------------------------------

    /// Whether `slot` exists in version `v`.
    pub fn check_slot(&self, slot: Slot, v: &Version) -> Result<(), FactoryError> {
        let ok = match slot {
            Slot::NodeInput(n) => (n.0 as usize) < self.tree.nodes().len(),
            Slot::KickoffOut(n) => {
                (n.0 as usize) < self.tree.nodes().len() && self.tree.node(n).has_state()
            }
            Slot::Channel(c) | Slot::FeeCoin(c) => (c.0 as usize) < self.params.clients.len(),
            Slot::Stock(s) => (s as usize) < self.stocks.len() && (s as usize) < v.stocks.len(),
            Slot::Sold(j) => (j as usize) < v.sales.len(),
            Slot::Change(j) => v.sales.get(j as usize).is_some_and(|s| !s.merged),
        };
        if ok {
            Ok(())
        } else {
            Err(FactoryError::NoSuch(format!("{slot:?}")))
        }
    }

    /// The stock output a stock or change slot belongs to.
    fn stock_index(&self, slot: Slot, v: &Version) -> Option<u32> {
        match slot {
            Slot::Stock(s) => Some(s),
            Slot::Change(j) => v.sales.get(j as usize).map(|s| s.stock),
            _ => None,
        }
    }

    /// The public keys that must sign to spend `slot` on the key path (LSP first).
    pub fn signers(&self, slot: Slot, v: &Version) -> Vec<Signer> {
        let clients: Vec<ClientId> = match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) => self.tree.node(n).client_ids().collect(),
            Slot::Channel(c) => vec![c],
            Slot::Sold(j) => v
                .sales
                .get(j as usize)
                .map(|s| s.buyer)
                .into_iter()
                .collect(),
            Slot::FeeCoin(c) => return vec![Signer::Client(c)],
            Slot::Stock(_) | Slot::Change(_) => match self.stock_index(slot, v) {
                Some(s) => self.stocks[s as usize]
                    .clients
                    .clone()
                    .map(ClientId)
                    .collect(),
                None => Vec::new(),
            },
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

    fn aggregate(&self, slot: Slot, v: &Version) -> Result<&AggregateKey, FactoryError> {
        self.check_slot(slot, v)?;
        let cell = match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) => &self.node_keys[n.0 as usize],
            Slot::Channel(c) => &self.channel_keys[c.0 as usize],
            // A sold channel is MuSig2(LSP, buyer), like the buyer's first channel.
            Slot::Sold(j) => &self.channel_keys[v.sales[j as usize].buyer.0 as usize],
            Slot::Stock(_) | Slot::Change(_) => {
                let s = self.stock_index(slot, v).expect("checked above");
                &self.stock_keys[s as usize]
            }
            Slot::FeeCoin(_) => {
                return Err(MusigError::Keys("a fee coin is single-key".into()).into())
            }
        };
        if let Some(k) = cell.get() {
            return Ok(k);
        }
        let keys: Vec<PublicKey> = self
            .signers(slot, v)
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

    /// The hashlock leaf of a stock or change output whose version has revocation hash `hash`.
    pub fn revocation_leaf(
        &self,
        slot: Slot,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<ScriptBuf, FactoryError> {
        Ok(hashlock_leaf(
            hash,
            &self.aggregate(slot, v)?.internal_key(),
        ))
    }

    /// The revocation hash in a stock or change output's hashlock leaf at version `v`.
    pub fn revocation_hash(&self, slot: Slot, v: &Version) -> Option<sha256::Hash> {
        let s = self.stock_index(slot, v)?;
        v.stocks.get(s as usize).map(|sv| sv.hash)
    }

    /// The script leaves of an output.
    pub fn leaves(&self, slot: Slot, v: &Version) -> Result<Vec<ScriptBuf>, FactoryError> {
        self.check_slot(slot, v)?;
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
            Slot::Channel(_) | Slot::Sold(_) => {
                if sweep {
                    leaves.push(self.sweep_leaf());
                }
            }
            Slot::Stock(_) | Slot::Change(_) => {
                let hash = self
                    .revocation_hash(slot, v)
                    .ok_or_else(|| FactoryError::NoSuch(format!("revocation hash of {slot:?}")))?;
                leaves.push(self.stock_leaf());
                leaves.push(self.revocation_leaf(slot, v, &hash)?);
                if sweep {
                    leaves.push(self.sweep_leaf());
                }
            }
        }
        Ok(leaves)
    }

    /// Taproot spend info of an output with script leaves (internal key = the MuSig2 key).
    pub fn spend_info(
        &self,
        slot: Slot,
        v: &Version,
    ) -> Result<Option<TaprootSpendInfo>, FactoryError> {
        let leaves = self.leaves(slot, v)?;
        if leaves.is_empty() {
            return Ok(None);
        }
        let internal = self.aggregate(slot, v)?.internal_key();
        let secp = Secp256k1::verification_only();
        TaprootBuilder::with_huffman_tree(leaves.into_iter().map(|l| (1, l)))
            .map_err(|e| MusigError::Keys(e.to_string()))?
            .finalize(&secp, internal)
            .map(Some)
            .map_err(|_| MusigError::Keys("taproot tree".into()).into())
    }

    /// The key that signs key-path spends of `slot` at version `v` (MuSig2, taproot-tweaked).
    pub fn signing_key_at(
        &self,
        slot: Slot,
        v: &Version,
    ) -> Result<TweakedAggregateKey, FactoryError> {
        let root = self.spend_info(slot, v)?.and_then(|i| i.merkle_root());
        Ok(self.aggregate(slot, v)?.tweaked(root)?)
    }

    /// The key that signs key-path spends of `slot` in the initial version.
    pub fn signing_key(&self, slot: Slot) -> Result<TweakedAggregateKey, FactoryError> {
        self.signing_key_at(slot, &self.initial_version())
    }

    /// The output script of `slot` at version `v`.
    pub fn script_pubkey_at(&self, slot: Slot, v: &Version) -> Result<ScriptBuf, FactoryError> {
        if let Slot::FeeCoin(c) = slot {
            self.check_slot(slot, v)?;
            return Ok(self.client_payout_script(c));
        }
        let key = self.signing_key_at(slot, v)?.output_key();
        Ok(ScriptBuf::new_p2tr_tweaked(
            TweakedPublicKey::dangerous_assume_tweaked(key),
        ))
    }

    /// The output script of `slot` in the initial version.
    pub fn script_pubkey(&self, slot: Slot) -> Result<ScriptBuf, FactoryError> {
        self.script_pubkey_at(slot, &self.initial_version())
    }

    /// Where a client's timeout payouts and fee coin go.
    pub fn client_payout_script(&self, client: ClientId) -> ScriptBuf {
        self.params.clients[client.0 as usize].payout.clone()
    }

    /// The LSP's sweep of `slot` through its `<T-1> CLTV` leaf (lsp-sweep policy): a transaction
    /// with nLockTime T-1 paying `destination`, signed with the LSP's key.
    #[allow(clippy::too_many_arguments)]
    pub fn lsp_sweep(
        &self,
        slot: Slot,
        v: &Version,
        outpoint: OutPoint,
        value: Amount,
        destination: ScriptBuf,
        fee: Amount,
        lsp: &bitcoin::key::Keypair,
    ) -> Result<Transaction, FactoryError> {
        let leaf = self.sweep_leaf();
        let has_leaf = self.leaves(slot, v)?.contains(&leaf);
        let info = self
            .spend_info(slot, v)?
            .filter(|_| has_leaf)
            .ok_or_else(|| ShapeError::Amount(format!("{slot:?} has no sweep leaf")))?;
        let spent = TxOut {
            value,
            script_pubkey: self.script_pubkey_at(slot, v)?,
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

    /// Amounts of every output at version `v`: bottom-up, each transaction's input is its outputs
    /// plus its fee; fee increases of newer states are paid from the stock below them, and sales
    /// (with the fees of the outputs they add) from the stock they sell.
    pub fn amounts(&self, v: &Version) -> Result<Amounts, FactoryError> {
        let cfg = &self.params.config;
        let odo = &v.odo;
        let nodes = self.tree.nodes();
        let n = nodes.len();
        for sale in &v.sales {
            if sale.stock as usize >= self.stocks.len()
                || !self.stocks[sale.stock as usize]
                    .clients
                    .contains(&sale.buyer.0)
            {
                return Err(FactoryError::NoSuch(format!("{sale:?}")));
            }
        }
        let mut stock: Vec<Amount> = self
            .stocks
            .iter()
            .map(|s| cfg.stock_per_client * u64::from(s.clients.end - s.clients.start))
            .collect();
        let mut state_fee = vec![Amount::ZERO; n];
        let mut kickoff_fee = vec![Amount::ZERO; n];
        let rate = cfg.fees.tree_fee_rate;
        for node in nodes {
            let i = node.id.0 as usize;
            let kick_outputs = match node.kind {
                NodeKind::Static => node.children.len(),
                _ => 1,
            };
            kickoff_fee[i] = rate
                .fee_vb(tree_tx_vsize(kick_outputs, 1))
                .unwrap_or(Amount::MAX);
            if node.has_state() {
                let vsize = self.state_vsize(node.id);
                let idx = u64::from(odo.state(node.id).map_or(0, |s| s.0));
                let base = rate.fee_vb(vsize).unwrap_or(Amount::MAX);
                let extra = cfg
                    .fees
                    .state_fee_step
                    .fee_vb(vsize * idx)
                    .unwrap_or(Amount::MAX);
                state_fee[i] = base + extra;
                if extra > Amount::ZERO {
                    self.deduct(node.id, extra, &mut stock)?;
                }
                if node.kind == NodeKind::Leaf {
                    // Each merged sale adds one output to the leaf state; its stock pays for it.
                    let per_output = rate.fee_vb(P2TR_OUTPUT_VBYTES).unwrap_or(Amount::MAX)
                        + cfg
                            .fees
                            .state_fee_step
                            .fee_vb(P2TR_OUTPUT_VBYTES * idx)
                            .unwrap_or(Amount::MAX);
                    for s in self.leaf_stocks(node.id) {
                        for j in v.merged_of(s) {
                            let take = per_output
                                .checked_add(v.sales[j as usize].amount)
                                .ok_or(FactoryError::StockExhausted(node.id))?;
                            stock[s as usize] = stock[s as usize]
                                .checked_sub(take)
                                .filter(|a| *a >= P2TR_DUST)
                                .ok_or(FactoryError::StockExhausted(node.id))?;
                            state_fee[i] += per_output;
                        }
                    }
                }
            }
        }
        let sale_fee = rate.fee_vb(tree_tx_vsize(2, 0)).unwrap_or(Amount::MAX);
        let sold: Vec<Amount> = v.sales.iter().map(|s| s.amount).collect();
        let mut change = vec![Amount::ZERO; v.sales.len()];
        for s in 0..self.stocks.len() as u32 {
            let mut left = stock[s as usize];
            for j in v.chain_of(s) {
                let take = v.sales[j as usize]
                    .amount
                    .checked_add(sale_fee)
                    .ok_or(FactoryError::StockExhausted(self.stocks[s as usize].leaf))?;
                left = left
                    .checked_sub(take)
                    .filter(|a| *a >= P2TR_DUST)
                    .ok_or(FactoryError::StockExhausted(self.stocks[s as usize].leaf))?;
                change[j as usize] = left;
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
                    let merged: Amount = self
                        .leaf_stocks(node.id)
                        .flat_map(|s| v.merged_of(s))
                        .map(|j| sold[j as usize])
                        .sum();
                    kickoff_out[i] = channels + merged + coins + stocks + state_fee[i];
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
            sold,
            change,
            sale_fee,
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
    pub fn outputs_of(&self, kind: TxKind, v: &Version) -> Vec<Slot> {
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
                        .chain(
                            self.leaf_stocks(n)
                                .flat_map(|s| v.merged_of(s))
                                .map(Slot::Sold),
                        )
                        .chain(node.client_ids().map(Slot::FeeCoin))
                        .chain(self.leaf_stocks(n).map(Slot::Stock))
                        .collect(),
                    _ => node.children.iter().map(|c| Slot::NodeInput(*c)).collect(),
                }
            }
            TxKind::Sale(j) => vec![Slot::Sold(j), Slot::Change(j)],
            TxKind::Timeout(_) | TxKind::Punish(_) => Vec::new(),
        }
    }

    /// The output a transaction spends.
    pub fn input_of(&self, kind: TxKind, v: &Version) -> Slot {
        match kind {
            TxKind::Kickoff(n) => Slot::NodeInput(n),
            TxKind::State(n) => Slot::KickoffOut(n),
            TxKind::Timeout(s) | TxKind::Punish(s) => s,
            TxKind::Sale(j) => {
                // The stock output itself, or the change of the previous sale of its chain.
                let stock = v.sales.get(j as usize).map_or(0, |s| s.stock);
                match v.chain_of(stock).into_iter().take_while(|p| *p < j).last() {
                    Some(prev) => Slot::Change(prev),
                    None => Slot::Stock(stock),
                }
            }
        }
    }

    /// The transaction that creates `slot` (none for the funding output).
    pub fn creator_of(&self, slot: Slot, v: &Version) -> Option<TxKind> {
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
            Slot::Stock(s) => Some(TxKind::State(self.stocks.get(s as usize)?.leaf)),
            Slot::Sold(j) => {
                let sale = v.sales.get(j as usize)?;
                if sale.merged {
                    Some(TxKind::State(self.stocks.get(sale.stock as usize)?.leaf))
                } else {
                    Some(TxKind::Sale(j))
                }
            }
            Slot::Change(j) => Some(TxKind::Sale(j)),
        }
    }

    /// Build one transaction, given the outpoint of the output it spends.
    pub fn build_tx(
        &self,
        kind: TxKind,
        spends: OutPoint,
        amounts: &Amounts,
        v: &Version,
    ) -> Result<Transaction, FactoryError> {
        match kind {
            TxKind::Timeout(slot) => return self.build_timeout(slot, spends, amounts, v),
            TxKind::Punish(slot) => {
                let hash = self
                    .revocation_hash(slot, v)
                    .ok_or_else(|| FactoryError::NoSuch(format!("punishment of {slot:?}")))?;
                return self.build_punishment(slot, spends, amounts.value(self, slot), v, &hash);
            }
            _ => {}
        }
        let mut output = Vec::new();
        for slot in self.outputs_of(kind, v) {
            output.push(TxOut {
                value: amounts.value(self, slot),
                script_pubkey: self.script_pubkey_at(slot, v)?,
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
            TxKind::State(n) => v
                .odo
                .sequence(n)
                .unwrap_or(Sequence::ENABLE_LOCKTIME_NO_RBF),
            _ => Sequence::ENABLE_LOCKTIME_NO_RBF,
        };
        check_dust(kind, one_input_tx(spends, sequence, LockTime::ZERO, output))
    }

    /// Who is paid what by the timeout transaction of `slot` (inverted policy): every client its
    /// channels, stock still in a PS chain to the buyers it was sold to, and the rest of each
    /// stock evenly among the clients sharing it.
    pub fn timeout_payouts(
        &self,
        slot: Slot,
        amounts: &Amounts,
        v: &Version,
    ) -> Vec<(ClientId, Amount)> {
        let mut pay: Vec<(ClientId, Amount)> = Vec::new();
        // The stock (or change) output of `stock` holding `value`, with the chain sales after
        // `after` (exclusive) still to come out of it.
        let add_stock =
            |pay: &mut Vec<(ClientId, Amount)>, s: u32, value: Amount, after: Option<u32>| {
                let st = &self.stocks[s as usize];
                let mut left = value;
                for j in v.chain_of(s) {
                    if after.is_some_and(|a| j <= a) {
                        continue;
                    }
                    let sale = &v.sales[j as usize];
                    pay.push((sale.buyer, sale.amount));
                    left = left.checked_sub(sale.amount).unwrap_or(Amount::ZERO);
                }
                let k = u64::from(st.clients.end - st.clients.start);
                let v = left.to_sat();
                for (j, c) in st.clients.clone().enumerate() {
                    let share = v / k + if j == 0 { v % k } else { 0 };
                    pay.push((ClientId(c), Amount::from_sat(share)));
                }
            };
        let add_client = |pay: &mut Vec<(ClientId, Amount)>, c: ClientId| {
            pay.push((c, self.params.clients[c.0 as usize].capacity));
            for j in v.sales_of(c) {
                if v.sales[j as usize].merged {
                    pay.push((c, v.sales[j as usize].amount));
                }
            }
        };
        match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) => {
                let node = self.tree.node(n);
                for c in node.client_ids() {
                    add_client(&mut pay, c);
                }
                let first = self.tree.leaf_of(ClientId(node.clients.start));
                let last = self.tree.leaf_of(ClientId(node.clients.end - 1));
                if let (Some(f), Some(l)) = (first, last) {
                    for s in self.leaf_stocks(f).start..self.leaf_stocks(l).end {
                        add_stock(&mut pay, s, amounts.stock[s as usize], None);
                    }
                }
            }
            Slot::Channel(c) => pay.push((c, self.params.clients[c.0 as usize].capacity)),
            Slot::Sold(j) => {
                if let Some(sale) = v.sales.get(j as usize) {
                    pay.push((sale.buyer, sale.amount));
                }
            }
            Slot::Stock(s) => add_stock(&mut pay, s, amounts.stock[s as usize], None),
            Slot::Change(j) => {
                if let Some(sale) = v.sales.get(j as usize) {
                    add_stock(&mut pay, sale.stock, amounts.change[j as usize], Some(j));
                }
            }
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
        v: &Version,
    ) -> Result<Transaction, FactoryError> {
        let value = amounts.value(self, slot);
        let payouts = self.timeout_payouts(slot, amounts, v);
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
        check_dust(
            TxKind::Timeout(slot),
            one_input_tx(spends, Sequence::ENABLE_LOCKTIME_NO_RBF, lock, output),
        )
    }

    /// The punishment of a superseded stock (or change) output worth `value` whose hashlock
    /// commits to `hash`, without its witness: poison pays the stock's clients evenly (falling
    /// back to burn when a share would be dust), burn leaves it all to miners.
    pub fn build_punishment(
        &self,
        slot: Slot,
        spends: OutPoint,
        value: Amount,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<Transaction, FactoryError> {
        let s = self
            .stock_index(slot, v)
            .ok_or_else(|| FactoryError::NoSuch(format!("punishment of {slot:?}")))?;
        let clients = self.stocks[s as usize].clients.clone();
        let burn = TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(b"superscalar stock punished"),
        };
        let mut tx = one_input_tx(
            spends,
            Sequence::ENABLE_LOCKTIME_NO_RBF,
            LockTime::ZERO,
            Vec::new(),
        );
        tx.version = transaction::Version::TWO;
        if self.params.config.punishment == Punishment::Poison {
            tx.output = clients
                .clone()
                .map(|c| TxOut {
                    value: Amount::ZERO,
                    script_pubkey: self.client_payout_script(ClientId(c)),
                })
                .collect();
            let vsize = self.punishment_vsize(&tx, slot, v, hash)?;
            let fee = self
                .params
                .config
                .fees
                .tree_fee_rate
                .fee_vb(vsize)
                .unwrap_or(Amount::MAX);
            let k = u64::from(clients.end - clients.start);
            let left = value.checked_sub(fee).map(|a| a.to_sat()).unwrap_or(0);
            if left / k >= P2TR_DUST.to_sat() {
                for (i, out) in tx.output.iter_mut().enumerate() {
                    out.value = Amount::from_sat(left / k + if i == 0 { left % k } else { 0 });
                }
                return Ok(tx);
            }
        }
        tx.output = vec![burn];
        Ok(tx)
    }

    fn punishment_vsize(
        &self,
        tx: &Transaction,
        slot: Slot,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<u64, FactoryError> {
        let (leaf, control) = self.revocation_path(slot, v, hash)?;
        let mut t = tx.clone();
        let mut w = Witness::new();
        w.push([0u8; 64]);
        w.push([0u8; 32]);
        w.push(leaf.as_bytes());
        w.push(control.serialize());
        t.input[0].witness = w;
        Ok(t.vsize() as u64)
    }

    /// The hashlock leaf of a stock or change output whose version has `hash`, and its control
    /// block.
    pub fn revocation_path(
        &self,
        slot: Slot,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<(ScriptBuf, bitcoin::taproot::ControlBlock), FactoryError> {
        let s = self
            .stock_index(slot, v)
            .ok_or_else(|| FactoryError::NoSuch(format!("revocation path of {slot:?}")))?;
        // The output as it was at the version whose hash is `hash`.
        let mut at = v.clone();
        at.stocks[s as usize].hash = *hash;
        let info = self
            .spend_info(slot, &at)?
            .ok_or_else(|| FactoryError::NoSuch(format!("script tree of {slot:?}")))?;
        let leaf = self.revocation_leaf(slot, &at, hash)?;
        let control = control_block(&info, &leaf)
            .ok_or_else(|| FactoryError::NoSuch(format!("control block of {slot:?}")))?;
        Ok((leaf, control))
    }

    /// Complete a signed punishment with the revealed secret of the version it punishes.
    pub fn complete_punishment(
        &self,
        signed: &crate::ceremony::SignedTx,
        v: &Version,
        hash: &sha256::Hash,
        secret: &[u8; 32],
    ) -> Result<Transaction, FactoryError> {
        let TxKind::Punish(slot) = signed.kind else {
            return Err(FactoryError::NoSuch(format!(
                "{:?} is not a punishment",
                signed.kind
            )));
        };
        let (leaf, control) = self.revocation_path(slot, v, hash)?;
        let sig = signed.tx.input[0]
            .witness
            .nth(0)
            .ok_or_else(|| FactoryError::NoSuch("punishment signature".into()))?
            .to_vec();
        let mut tx = signed.tx.clone();
        let mut w = Witness::new();
        w.push(sig);
        w.push(secret);
        w.push(leaf.as_bytes());
        w.push(control.serialize());
        tx.input[0].witness = w;
        Ok(tx)
    }

    /// The message a transaction's signers sign: the key-path sighash, or for a punishment the
    /// script-path sighash of its hashlock leaf.
    pub fn sighash_of(
        &self,
        kind: TxKind,
        tx: &Transaction,
        spent: &TxOut,
        v: &Version,
    ) -> Result<[u8; 32], FactoryError> {
        let TxKind::Punish(slot) = kind else {
            return Ok(Self::sighash(tx, spent));
        };
        let hash = self
            .revocation_hash(slot, v)
            .ok_or_else(|| FactoryError::NoSuch(format!("punishment of {slot:?}")))?;
        let leaf = self.revocation_leaf(slot, v, &hash)?;
        let leaf_hash = bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript);
        SighashCache::new(tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(std::slice::from_ref(spent)),
                leaf_hash,
                TapSighashType::Default,
            )
            .map(|h| h.to_byte_array())
            .map_err(|e| FactoryError::NoSuch(e.to_string()))
    }

    /// The key that signs `kind`: the output's tweaked key, or for a punishment the untweaked
    /// aggregate key of its hashlock leaf.
    pub fn key_for(&self, kind: TxKind, v: &Version) -> Result<TweakedAggregateKey, FactoryError> {
        match kind {
            TxKind::Punish(slot) => Ok(self.aggregate(slot, v)?.untweaked()),
            _ => self.signing_key_at(self.input_of(kind, v), v),
        }
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

/// Whether a client's payout script is a standard output type that every transaction paying it
/// can carry (P2TR, P2WPKH or P2WSH).
pub fn is_standard_payout(script: &ScriptBuf) -> bool {
    script.is_p2tr() || script.is_p2wpkh() || script.is_p2wsh()
}

/// `tx`, if every output is at or above its dust limit (P2A anchors and OP_RETURN outputs
/// excepted: zero-value anchors are ephemeral dust spent by their child).
fn check_dust(kind: TxKind, tx: Transaction) -> Result<Transaction, FactoryError> {
    for out in &tx.output {
        if out.script_pubkey.is_op_return() || out.script_pubkey == ScriptBuf::new_p2a() {
            continue;
        }
        let limit = out.script_pubkey.minimal_non_dust();
        if out.value < limit {
            return Err(FactoryError::Dust {
                kind,
                value: out.value,
                limit,
            });
        }
    }
    Ok(tx)
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
        v: &Version,
    ) -> Option<OutPoint> {
        self.slot_outpoint(slot, funding, v, |k| {
            built.get(&k).map(|b| b.tx.compute_txid())
        })
    }

    /// Where `slot` is on chain, given the txids of the factory's transactions.
    pub fn slot_outpoint(
        &self,
        slot: Slot,
        funding: OutPoint,
        v: &Version,
        txid_of: impl Fn(TxKind) -> Option<Txid>,
    ) -> Option<OutPoint> {
        match self.creator_of(slot, v) {
            None => Some(funding),
            Some(creator) => {
                let vout = self
                    .outputs_of(creator, v)
                    .iter()
                    .position(|s| *s == slot)? as u32;
                Some(OutPoint::new(txid_of(creator)?, vout))
            }
        }
    }

    /// Build `kinds` (and whatever transactions they depend on) at version `v`.
    pub fn build_set(
        &self,
        kinds: &[TxKind],
        funding: OutPoint,
        v: &Version,
    ) -> Result<HashMap<TxKind, BuiltTx>, FactoryError> {
        let amounts = self.amounts(v)?;
        let mut built: HashMap<TxKind, BuiltTx> = HashMap::new();
        for kind in kinds {
            self.build_into(*kind, funding, &amounts, v, &mut built)?;
        }
        Ok(built)
    }

    fn build_into(
        &self,
        kind: TxKind,
        funding: OutPoint,
        amounts: &Amounts,
        v: &Version,
        built: &mut HashMap<TxKind, BuiltTx>,
    ) -> Result<(), FactoryError> {
        if built.contains_key(&kind) {
            return Ok(());
        }
        if let TxKind::Sale(j) = kind {
            if v.sales.get(j as usize).map_or(true, |s| s.merged) {
                return Err(FactoryError::NoSuch(format!("{kind:?}")));
            }
        }
        let slot = self.input_of(kind, v);
        self.check_slot(slot, v)?;
        if let Some(creator) = self.creator_of(slot, v) {
            self.build_into(creator, funding, amounts, v, built)?;
        }
        let spends = self
            .outpoint_of(slot, built, funding, v)
            .ok_or_else(|| MusigError::Keys(format!("cannot locate the output {slot:?}")))?;
        let tx = self.build_tx(kind, spends, amounts, v)?;
        let spent = TxOut {
            value: amounts.value(self, slot),
            script_pubkey: self.script_pubkey_at(slot, v)?,
        };
        built.insert(kind, BuiltTx { tx, spent });
        Ok(())
    }

    /// Transactions a client signs at version `v`: its exit path in publishing order (with the
    /// sales of its stock's PS chain), then the timeout and punishment transactions of every output
    /// that holds its money.
    pub fn client_jobs(&self, client: ClientId, v: &Version) -> Result<Vec<TxKind>, FactoryError> {
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
        if let Some(s) = self.stock_of(client) {
            jobs.extend(v.chain_of(s).into_iter().map(TxKind::Sale));
        }
        for slot in self.client_slots(client, v) {
            if self.has_timeout(slot) {
                jobs.push(TxKind::Timeout(slot));
            }
        }
        for slot in self.client_slots(client, v) {
            if matches!(slot, Slot::Stock(_) | Slot::Change(_)) {
                jobs.push(TxKind::Punish(slot));
            }
        }
        Ok(jobs)
    }

    /// Outputs that hold a client's money along its path (fee coin excluded): the tree outputs
    /// above it, its channels, and its stock output with the change outputs of its PS chain.
    pub fn client_slots(&self, client: ClientId, v: &Version) -> Vec<Slot> {
        let mut slots = Vec::new();
        for n in self.tree.path_of(client) {
            slots.push(Slot::NodeInput(n));
            if self.tree.node(n).has_state() {
                slots.push(Slot::KickoffOut(n));
            }
        }
        slots.push(Slot::Channel(client));
        slots.extend(v.sales_of(client).into_iter().map(Slot::Sold));
        if let Some(s) = self.stock_of(client) {
            slots.push(Slot::Stock(s));
            slots.extend(v.chain_of(s).into_iter().map(Slot::Change));
        }
        slots
    }

    /// The funding output (script and value) the LSP's funding transaction must create.
    pub fn funding_output(&self) -> Result<TxOut, FactoryError> {
        let v = self.initial_version();
        let amounts = self.amounts(&v)?;
        Ok(TxOut {
            value: amounts.funding_value(),
            script_pubkey: self.script_pubkey_at(Slot::NodeInput(NodeId(0)), &v)?,
        })
    }

    /// Every transaction the LSP signs at version `v`: the whole tree, the sales, and every
    /// timeout and punishment transaction.
    pub fn all_jobs(&self, v: &Version) -> Vec<TxKind> {
        let mut jobs = Vec::new();
        for n in self.tree.nodes() {
            jobs.push(TxKind::Kickoff(n.id));
            if n.has_state() {
                jobs.push(TxKind::State(n.id));
            }
        }
        for s in 0..self.stocks.len() as u32 {
            jobs.extend(v.chain_of(s).into_iter().map(TxKind::Sale));
        }
        for slot in self.all_slots(v) {
            if self.has_timeout(slot) {
                jobs.push(TxKind::Timeout(slot));
            }
            if matches!(slot, Slot::Stock(_) | Slot::Change(_)) {
                jobs.push(TxKind::Punish(slot));
            }
        }
        jobs
    }

    /// Every output of the factory that belongs to the tree (fee coins and anchors excluded).
    pub fn all_slots(&self, v: &Version) -> Vec<Slot> {
        let mut slots = Vec::new();
        for n in self.tree.nodes() {
            slots.push(Slot::NodeInput(n.id));
            if n.has_state() {
                slots.push(Slot::KickoffOut(n.id));
            }
        }
        slots.extend((0..self.params.clients.len() as u32).map(|c| Slot::Channel(ClientId(c))));
        slots.extend((0..v.sales.len() as u32).map(Slot::Sold));
        slots.extend((0..self.stocks.len() as u32).map(Slot::Stock));
        for s in 0..self.stocks.len() as u32 {
            slots.extend(v.chain_of(s).into_iter().map(Slot::Change));
        }
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
