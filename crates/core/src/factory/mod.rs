//! A factory: its parties and configuration, the timeout T and the checks that make it safe to
//! sign (here); the keys and scripts of every output (`scripts`), the amounts at a given version
//! (`amounts`), every transaction of the tree (`transactions`), the timeout transactions
//! (`timeouts`) and the stock punishments (`punishment`), all pure functions of those.

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
use bitcoin::taproot::{LeafVersion, TapNodeHash, TaprootBuilder, TaprootSpendInfo};
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

mod amounts;
mod hints;
mod keys;
mod labels;
pub use labels::BadLabel;
mod punishment;
mod scripts;
mod timeouts;
mod transactions;

pub use amounts::{tree_tx_vsize, Amounts};
pub use hints::{HintProblem, ScriptHints};
pub use scripts::control_block;
pub use transactions::BuiltTx;
pub(crate) use transactions::{check_dust, one_input_tx};

/// Dust threshold of a P2TR output (Bitcoin Core's default policy).
pub const P2TR_DUST: Amount = Amount::from_sat(330);
/// vbytes one P2TR output adds to a transaction.
const P2TR_OUTPUT_VBYTES: u64 = 43;
/// Largest vsize of a TRUC (v3) transaction.
pub const TRUC_MAX_VSIZE: u64 = 10_000;
/// Largest weight of a standard transaction (Bitcoin Core's `MAX_STANDARD_TX_WEIGHT`).
pub const MAX_STANDARD_TX_WEIGHT: u64 = 400_000;
/// Largest vsize of a timeout transaction paying clients directly: above it, the timeout of a
/// tree output is split into a tree of timeout transactions ([`Slot::TimeoutPart`]), each a TRUC
/// transaction within TRUC's limit.
pub const TIMEOUT_SPLIT_VSIZE: u64 = TRUC_MAX_VSIZE;

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
    /// Each client's balance when its leaf channel opens, in millisatoshis, by position (empty:
    /// every client starts at zero and the LSP holds the whole capacity, as in a new factory; a
    /// successor factory starts each client at what it rolls in from the factory before).
    #[serde(default)]
    pub opening_msat: Vec<u64>,
}

impl FactoryParams {
    /// These parameters with version-0 revocation hashes of every stock output from `secrets`
    /// (none when the shape is invalid: [`Factory::new`] then says why).
    pub fn with_stock_secrets(mut self, secrets: &crate::revocation::StockSecrets) -> Self {
        self.stock_hashes = secrets.initial_hashes(self.stock_count().unwrap_or(0));
        self
    }

    /// Client `client`'s balance when its leaf channel opens (msat; 0 unless the parameters
    /// say otherwise).
    pub fn opening_msat(&self, client: ClientId) -> u64 {
        self.opening_msat
            .get(client.0 as usize)
            .copied()
            .unwrap_or(0)
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
    /// Script hints from the LSP that a client refuses.
    #[error("script hints refused: {0}")]
    ScriptHints(#[from] HintProblem),
    /// A transaction of the factory would be above the standard weight and would not relay.
    #[error(
        "{kind:?} would weigh about {weight} WU, above the standard {MAX_STANDARD_TX_WEIGHT}: \
         lower the arity of the tree or the size of its leaves"
    )]
    TooLarge {
        /// The transaction.
        kind: TxKind,
        /// Its weight (an upper bound, with a 64-byte key-path signature).
        weight: u64,
    },
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
    /// An output of a split timeout transaction (inverted policy): the money the timeout of
    /// `NodeInput(top)` (or `KickoffOut(top)` when `kickoff`) owes the clients below `node`, a
    /// descendant of `top`, spendable by the same key as `NodeInput(node)` (MuSig2 of the LSP
    /// and those clients). Its own timeout pays them, or splits again.
    TimeoutPart {
        /// The node whose output's timeout is split.
        top: NodeId,
        /// Whether that output is `KickoffOut(top)` (else `NodeInput(top)`).
        kickoff: bool,
        /// The node whose clients this output holds the money of.
        node: NodeId,
    },
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
    keys: keys::KeyCache,
    /// A client's scripts of the outputs beside its path, from the LSP (`hints`).
    hints: std::collections::BTreeMap<Slot, ScriptBuf>,
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
        if !params.opening_msat.is_empty() && params.opening_msat.len() != params.clients.len() {
            return Err(ShapeError::Amount(format!(
                "{} opening balances for {} clients",
                params.opening_msat.len(),
                params.clients.len()
            ))
            .into());
        }
        for (i, (c, opening)) in params.clients.iter().zip(&params.opening_msat).enumerate() {
            if *opening > c.capacity.to_sat().saturating_mul(1000) {
                return Err(ShapeError::Amount(format!(
                    "client {i} opens its channel with {opening} msat, more than its capacity {}",
                    c.capacity
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
            keys: keys::KeyCache::default(),
            hints: std::collections::BTreeMap::new(),
            params,
            tree,
            timeout_height,
            ewt,
            stocks,
            leaf_stocks,
        };
        // Every transaction must relay, and the stock must be able to pay for the newest state
        // of every layer.
        factory.check_sizes()?;
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

    /// Check that the funding transaction confirmed at `height` leaves the factory its active
    /// period: it confirmed before the active period ends (earlier is harmless: the funding
    /// script is this factory's alone, and T counts from the creation height).
    pub fn check_funding_height(&self, height: u32) -> Result<(), FactoryError> {
        let created = self.params.creation_height;
        let last = u64::from(created) + u64::from(self.params.config.active_blocks);
        if u64::from(height) >= last {
            return Err(FactoryError::Heights(format!(
                "the funding confirmed at height {height}, outside the active period \
                 {created}..{last}: too late to use the factory and exit before T {}",
                self.timeout_height
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
