//! On-chain sizes and amounts the simulation charges, all read from the real code: each factory
//! size is laid out by core's tree builder and priced by core's fee policy (`Factory::new`,
//! `Factory::amounts`, `Factory::outputs_of`, `tree_tx_vsize`); the other transactions (rotations,
//! channel closes, sweeps, the one-channel-per-user baseline) are rust-bitcoin transactions of the
//! real shape with dummy witnesses of the real sizes, measured by rust-bitcoin's `vsize`.

use std::ops::Range;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};
use superscalar_core::channel::commitment::{
    build_commitment, to_local_leaf, to_local_spend_info, ChannelStatic, CommitmentKeys,
};
use superscalar_core::factory::{control_block, tree_tx_vsize, FactoryError};
use superscalar_core::shape::{FeePolicy, ShapeError};
use superscalar_core::tree::NodeKind;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, NodeId, Shape, Slot,
    TxKind,
};

use crate::config::{SimConfig, StaticLevels};

/// Bytes of a BIP-340 Schnorr signature with the default sighash (a key-path witness's only item).
pub const SCHNORR_SIG_BYTES: usize = 64;
/// Relative delay of the LSP's own output on its commitment (core's channel default).
pub const TO_SELF_DELAY: u16 = 144;
/// Capacity each client gets in the factories built to read sizes; the funding amount is the sum
/// of the capacities plus an overhead that does not depend on them.
const REFERENCE_CAPACITY: u64 = 100_000;
/// Largest weight of a standard transaction.
pub const MAX_STANDARD_WEIGHT: u64 = 400_000;

/// How an input of a transaction is spent, which fixes its witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// A taproot key-path spend: one 64-byte signature (a MuSig2 aggregate or a single key).
    KeyPath,
    /// A P2A anchor: empty witness.
    Anchor,
    /// A taproot script-path spend of a one-signature leaf: signature, script, control block.
    Script {
        /// Bytes of the leaf script.
        script: usize,
        /// Bytes of the control block.
        control: usize,
    },
}

/// What an output of a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// A P2TR output (43 bytes).
    P2tr,
    /// A P2A anchor (13 bytes).
    P2a,
}

fn dummy_p2tr() -> ScriptBuf {
    let mut bytes = vec![0x51, 0x20];
    bytes.extend_from_slice(&[0x42; 32]);
    ScriptBuf::from_bytes(bytes)
}

/// A transaction of the given shape with dummy witnesses of the real sizes.
pub fn shaped_tx(inputs: &[Spend], outputs: &[Out]) -> Transaction {
    let p2tr = dummy_p2tr();
    Transaction {
        version: transaction::Version(3),
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .enumerate()
            .map(|(i, s)| TxIn {
                previous_output: OutPoint::new(Txid::all_zeros(), i as u32),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: match s {
                    Spend::KeyPath => Witness::from_slice(&[[0u8; SCHNORR_SIG_BYTES]]),
                    Spend::Anchor => Witness::new(),
                    Spend::Script { script, control } => Witness::from_slice(&[
                        vec![0u8; SCHNORR_SIG_BYTES],
                        vec![0u8; *script],
                        vec![0u8; *control],
                    ]),
                },
            })
            .collect(),
        output: outputs
            .iter()
            .map(|o| TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: match o {
                    Out::P2tr => p2tr.clone(),
                    Out::P2a => ScriptBuf::new_p2a(),
                },
            })
            .collect(),
    }
}

/// vsize of a transaction of the given shape (rust-bitcoin's `vsize` of [`shaped_tx`]).
pub fn tx_vsize(inputs: &[Spend], outputs: &[Out]) -> u64 {
    shaped_tx(inputs, outputs).vsize() as u64
}

/// vbytes and count of the standard transactions spending `inputs` to `outputs` plus change.
pub fn batched_vsize(inputs: &[Spend], outputs: usize) -> (u64, u64) {
    let one = |ins: &[Spend], outs: usize| {
        let mut o = vec![Out::P2tr; outs];
        o.push(Out::P2tr);
        let tx = shaped_tx(ins, &o);
        (tx.weight().to_wu(), tx.vsize() as u64)
    };
    let (weight, vsize) = one(inputs, outputs);
    if weight <= MAX_STANDARD_WEIGHT {
        return (vsize, 1);
    }
    let parts = weight.div_ceil(MAX_STANDARD_WEIGHT - 4_000).max(2) as usize;
    let mut total = 0;
    for p in 0..parts {
        let ins = &inputs[p * inputs.len() / parts..(p + 1) * inputs.len() / parts];
        let outs = (p + 1) * outputs / parts - p * outputs / parts;
        total += one(ins, outs).1;
    }
    (total, parts as u64)
}

/// One node of a factory tree with the sizes and fees of its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCost {
    /// Its parent (none for the root, which spends the funding output).
    pub parent: Option<u32>,
    /// Its children, in output order.
    pub children: Vec<u32>,
    /// Whether it is a leaf (its state holds channels, fee coins and stock outputs).
    pub is_leaf: bool,
    /// The clients under it.
    pub clients: Range<u32>,
    /// Its stock outputs (leaves only).
    pub stocks: Range<u32>,
    /// vsize of its kickoff, signed.
    pub kickoff_vbytes: u64,
    /// vsize of its state transaction, signed (none for a static node).
    pub state_vbytes: Option<u64>,
    /// Fee of its kickoff under the fee policy.
    pub kickoff_fee_sat: u64,
    /// Fee of its first state under the fee policy (0 for a static node).
    pub state_fee_sat: u64,
}

/// A factory of one size as core lays it out and prices it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryModel {
    /// Clients.
    pub clients: u32,
    /// Static levels used (the fewest within the exit-time ceiling when automatic).
    pub static_levels: u8,
    /// Arity of each level above the leaves.
    pub levels: Vec<u8>,
    /// Worst-case exit time, in blocks.
    pub ewt_blocks: u32,
    /// Funding amount minus the clients' capacities: stock, fee coins, anchors, tree fees.
    pub overhead_sat: u64,
    /// The nodes, parents before children.
    pub nodes: Vec<NodeCost>,
    /// The leaf of each client.
    pub leaf_of: Vec<u32>,
    /// The stock output each client shares.
    pub stock_of: Vec<u32>,
    /// The clients of each stock output.
    pub stock_clients: Vec<Range<u32>>,
}

impl FactoryModel {
    /// Nodes from the root down to `client`'s leaf.
    pub fn path_of(&self, client: u32) -> Vec<u32> {
        let mut path = Vec::new();
        let mut n = Some(self.leaf_of[client as usize]);
        while let Some(id) = n {
            path.push(id);
            n = self.nodes[id as usize].parent;
        }
        path.reverse();
        path
    }

    /// vbytes of the tree transactions (kickoffs and states) on `client`'s exit path.
    pub fn path_vbytes(&self, client: u32) -> u64 {
        self.path_of(client)
            .iter()
            .map(|n| {
                let n = &self.nodes[*n as usize];
                n.kickoff_vbytes + n.state_vbytes.unwrap_or(0)
            })
            .sum()
    }

    /// Funding amount for clients of the given total capacity.
    pub fn funding_sat(&self, capacities: u64) -> u64 {
        capacities + self.overhead_sat
    }
}

/// Sizes of the transactions that do not depend on the factory size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TxSizes {
    /// A leaf channel's commitment (to_local, to_remote, P2A anchor), signed.
    pub commitment: u64,
    /// The CPFP child of a commitment: its anchor and one wallet coin to one output.
    pub cpfp_child: u64,
    /// Witness of the LSP's delayed to_local claim (script path): script bytes.
    pub to_local_script: usize,
    /// Its control block bytes.
    pub to_local_control: usize,
    /// Witness of the LSP's delayed claim of a stock output (script path): script bytes.
    pub stock_script: usize,
    /// Its control block bytes.
    pub stock_control: usize,
    /// Baseline: a channel open (one wallet input, funding and change outputs).
    pub baseline_open: u64,
    /// Baseline: a cooperative close (the channel's key-path input, two outputs).
    pub baseline_close: u64,
    /// Baseline: a splice-in of liquidity (channel and wallet inputs, channel and change outputs).
    pub baseline_splice: u64,
}

impl TxSizes {
    /// The LSP's claim of its to_local output, as an input.
    pub fn to_local_spend(&self) -> Spend {
        Spend::Script {
            script: self.to_local_script,
            control: self.to_local_control,
        }
    }

    /// The LSP's delayed claim of a stock output, as an input.
    pub fn stock_spend(&self) -> Spend {
        Spend::Script {
            script: self.stock_script,
            control: self.stock_control,
        }
    }
}

/// Factory models by size, built on first use, and the fixed transaction sizes.
#[derive(Debug)]
pub struct CostBook {
    config: FactoryConfig,
    static_levels: StaticLevels,
    lsp: PublicKey,
    pool: Vec<ClientSpec>,
    models: Vec<Option<Box<FactoryModel>>>,
    /// Sizes of the transactions that do not depend on the factory size.
    pub tx: TxSizes,
}

fn keypair(i: u64) -> Keypair {
    let secp = Secp256k1::signing_only();
    let mut sk = [0x5au8; 32];
    sk[..8].copy_from_slice(&(i + 1).to_be_bytes());
    Keypair::from_seckey_slice(&secp, &sk).expect("a valid secret key")
}

/// The core factory configuration a simulation uses.
pub fn factory_config(cfg: &SimConfig, static_levels: u8) -> FactoryConfig {
    let defaults = FactoryConfig::default();
    FactoryConfig {
        shape: Shape {
            arity: cfg.shape.arity.clone(),
            static_levels,
            leaf: cfg.shape.leaf,
            states_per_layer: cfg.shape.states_per_layer,
            step_blocks: cfg.shape.step_blocks,
        },
        active_blocks: cfg.active_blocks,
        dying_blocks: cfg.dying_blocks,
        fees: FeePolicy {
            tree_fee_rate: FeeRate::from_sat_per_vb_u32(cfg.fee_rate as u32),
            ..defaults.fees
        },
        ..defaults
    }
}

impl CostBook {
    /// The costs of `cfg`, or why core cannot build its largest (or smallest) factory.
    pub fn new(cfg: &SimConfig) -> Result<Self, String> {
        let lsp = PublicKey::new(keypair(u64::MAX - 1).public_key());
        let pool = (0..u64::from(cfg.factory_size))
            .map(|i| {
                ClientSpec::new(
                    PublicKey::new(keypair(i).public_key()),
                    Amount::from_sat(REFERENCE_CAPACITY),
                )
            })
            .collect();
        let mut book = CostBook {
            config: factory_config(cfg, 0),
            static_levels: cfg.shape.static_levels,
            lsp,
            pool,
            models: vec![None; cfg.factory_size as usize + 1],
            tx: fixed_sizes(),
        };
        let factory = book
            .factory(cfg.factory_size)
            .map_err(|e| format!("a factory of {} clients: {e}", cfg.factory_size))?;
        book.tx = TxSizes {
            stock_script: factory.stock_leaf().len(),
            stock_control: stock_control_size(&factory)?,
            ..book.tx
        };
        book.model(cfg.factory_size)?;
        book.model(1)?;
        Ok(book)
    }

    /// The real factory of `n` clients (static levels chosen as configured).
    pub fn factory(&self, n: u32) -> Result<Factory, FactoryError> {
        let build = |s: u8| {
            let mut config = self.config.clone();
            config.shape.static_levels = s;
            let params = FactoryParams {
                id: FactoryId([0x51; 32]),
                config,
                lsp_key: self.lsp,
                clients: self.pool[..n as usize].to_vec(),
                creation_height: 800_000,
                stock_hashes: Vec::new(),
                opening_msat: Vec::new(),
            }
            .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32]));
            Factory::new(params)
        };
        match self.static_levels {
            StaticLevels::Fixed(s) => build(s),
            StaticLevels::Auto => {
                let mut s = 0u8;
                loop {
                    match build(s) {
                        Err(FactoryError::Shape(ShapeError::EwtAboveCeiling { .. })) if s < 64 => {
                            s += 1
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    /// The largest factory size of this simulation.
    pub fn max_size(&self) -> u32 {
        (self.models.len() - 1) as u32
    }

    /// The model of a factory of `n` clients (1..=the configured size), built once.
    pub fn model(&mut self, n: u32) -> Result<&FactoryModel, String> {
        let i = n as usize;
        if n == 0 || i >= self.models.len() {
            return Err(format!("no factory of {n} clients in this simulation"));
        }
        if self.models[i].is_none() {
            let f = self
                .factory(n)
                .map_err(|e| format!("a factory of {n} clients: {e}"))?;
            let m = model_of(&f).map_err(|e| format!("a factory of {n} clients: {e}"))?;
            self.models[i] = Some(Box::new(m));
        }
        Ok(self.models[i].as_deref().expect("just built"))
    }
}

fn stock_control_size(f: &Factory) -> Result<usize, String> {
    let v = f.initial_version();
    let info = f
        .spend_info(Slot::Stock(0), &v)
        .map_err(|e| e.to_string())?
        .ok_or("the stock output has no script tree")?;
    control_block(&info, &f.stock_leaf())
        .map(|c| c.size())
        .ok_or_else(|| "the stock leaf is not in its output's tree".into())
}

/// Read a factory's layout, sizes and fees from core.
pub fn model_of(f: &Factory) -> Result<FactoryModel, FactoryError> {
    let v = f.initial_version();
    let amounts = f.amounts(&v)?;
    let tree = f.tree();
    let n = tree.client_count() as u32;
    let capacities: u64 = f.params().clients.iter().map(|c| c.capacity.to_sat()).sum();
    let mut nodes = Vec::with_capacity(tree.nodes().len());
    for node in tree.nodes() {
        let kick = f.outputs_of(TxKind::Kickoff(node.id), &v).len();
        let state = node
            .has_state()
            .then(|| tree_tx_vsize(f.outputs_of(TxKind::State(node.id), &v).len(), 0));
        nodes.push(NodeCost {
            parent: node.parent.map(|p| p.0),
            children: node.children.iter().map(|c| c.0).collect(),
            is_leaf: node.kind == NodeKind::Leaf,
            clients: node.clients.clone(),
            stocks: f.leaf_stocks(node.id),
            kickoff_vbytes: tree_tx_vsize(kick, 1),
            state_vbytes: state,
            kickoff_fee_sat: amounts
                .fee(TxKind::Kickoff(node.id))
                .unwrap_or(Amount::ZERO)
                .to_sat(),
            state_fee_sat: if node.has_state() {
                amounts
                    .fee(TxKind::State(node.id))
                    .unwrap_or(Amount::ZERO)
                    .to_sat()
            } else {
                0
            },
        });
    }
    let leaf_of = (0..n)
        .map(|c| tree.leaf_of(ClientId(c)).unwrap_or(NodeId(0)).0)
        .collect();
    let stock_of = (0..n)
        .map(|c| f.stock_of(ClientId(c)).unwrap_or(0))
        .collect();
    Ok(FactoryModel {
        clients: n,
        static_levels: f.params().config.shape.static_levels,
        levels: tree.levels().to_vec(),
        ewt_blocks: f.ewt_max(),
        overhead_sat: amounts.funding_value().to_sat().saturating_sub(capacities),
        nodes,
        leaf_of,
        stock_of,
        stock_clients: f.stocks().iter().map(|s| s.clients.clone()).collect(),
    })
}

/// Sizes of the channel-close and baseline transactions (the stock sweep's witness is set from
/// a real factory by [`CostBook::new`]).
fn fixed_sizes() -> TxSizes {
    let k = |i: u64| keypair(1_000_000 + i).public_key();
    let keys = CommitmentKeys {
        revocation: k(0),
        local_delayed: k(1),
        local_htlc: k(2),
        remote_htlc: k(3),
        remote_payment: k(4),
    };
    let chan = ChannelStatic {
        funding_outpoint: OutPoint::new(Txid::all_zeros(), 0),
        funding_amount: Amount::from_sat(REFERENCE_CAPACITY),
        obscure_factor: 0x1234_5678,
        to_self_delay: TO_SELF_DELAY,
        dust_limit: Amount::from_sat(354),
    };
    // Both balances above dust: two outputs and the anchor (the most common shape).
    let mut commitment = build_commitment(&chan, &keys, 42, 60_000_000, 39_000_000, &[]).tx;
    commitment.input[0].witness = Witness::from_slice(&[[0u8; SCHNORR_SIG_BYTES]]);
    let leaf = to_local_leaf(&keys, TO_SELF_DELAY);
    let info = to_local_spend_info(&keys, TO_SELF_DELAY);
    let to_local_control = control_block(&info, &leaf).map_or(33, |c| c.size());
    TxSizes {
        commitment: commitment.vsize() as u64,
        cpfp_child: tx_vsize(&[Spend::Anchor, Spend::KeyPath], &[Out::P2tr]),
        to_local_script: leaf.len(),
        to_local_control,
        stock_script: 0,
        stock_control: 0,
        baseline_open: tx_vsize(&[Spend::KeyPath], &[Out::P2tr, Out::P2tr]),
        baseline_close: tx_vsize(&[Spend::KeyPath], &[Out::P2tr, Out::P2tr]),
        baseline_splice: tx_vsize(&[Spend::KeyPath, Spend::KeyPath], &[Out::P2tr, Out::P2tr]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::OutPoint;

    fn small(size: u32) -> SimConfig {
        SimConfig {
            factory_size: size,
            ..SimConfig::default()
        }
    }

    /// Every tree transaction of an 8-client factory, built by core and given a 64-byte key-path
    /// signature, has the vsize the model charges; the funding amount is core's.
    #[test]
    fn tree_sizes_match_the_transactions_core_builds() {
        for n in [1u32, 5, 8] {
            let book = CostBook::new(&small(8)).unwrap();
            let f = book.factory(n).unwrap();
            let m = model_of(&f).unwrap();
            let v = f.initial_version();
            let kinds: Vec<TxKind> = f
                .tree()
                .nodes()
                .iter()
                .flat_map(|node| {
                    let mut k = vec![TxKind::Kickoff(node.id)];
                    if node.has_state() {
                        k.push(TxKind::State(node.id));
                    }
                    k
                })
                .collect();
            let funding = OutPoint::new(Txid::all_zeros(), 0);
            let built = f.build_set(&kinds, funding, &v).unwrap();
            for (i, node) in m.nodes.iter().enumerate() {
                let id = NodeId(i as u32);
                let signed = |kind| {
                    let mut tx = built[&kind].tx.clone();
                    tx.input[0].witness = Witness::from_slice(&[[0u8; 64]]);
                    tx.vsize() as u64
                };
                assert_eq!(
                    node.kickoff_vbytes,
                    signed(TxKind::Kickoff(id)),
                    "n={n} {i}"
                );
                if let Some(s) = node.state_vbytes {
                    assert_eq!(s, signed(TxKind::State(id)), "n={n} {i}");
                }
                // The fee the policy assigns is what the built transaction leaves.
                let fee = |kind: TxKind| {
                    let b = &built[&kind];
                    let out: u64 = b.tx.output.iter().map(|o| o.value.to_sat()).sum();
                    b.spent.value.to_sat() - out
                };
                assert_eq!(node.kickoff_fee_sat, fee(TxKind::Kickoff(id)));
                if node.state_vbytes.is_some() {
                    assert_eq!(node.state_fee_sat, fee(TxKind::State(id)));
                }
            }
            let funding_value = f.funding_output().unwrap().value.to_sat();
            assert_eq!(
                m.funding_sat(u64::from(n) * REFERENCE_CAPACITY),
                funding_value
            );
            for c in 0..n {
                let path: Vec<u32> = f.tree().path_of(ClientId(c)).iter().map(|n| n.0).collect();
                assert_eq!(m.path_of(c), path);
                let direct: u64 = f
                    .client_jobs(ClientId(c), &v)
                    .unwrap()
                    .into_iter()
                    .filter(|k| matches!(k, TxKind::Kickoff(_) | TxKind::State(_)))
                    .map(|k| {
                        let mut tx = built[&k].tx.clone();
                        tx.input[0].witness = Witness::from_slice(&[[0u8; 64]]);
                        tx.vsize() as u64
                    })
                    .sum();
                assert_eq!(m.path_vbytes(c), direct);
            }
        }
    }

    #[test]
    fn the_overhead_does_not_depend_on_the_capacities() {
        let book = CostBook::new(&small(8)).unwrap();
        let mut f = book.factory(8).unwrap().params().clone();
        for (i, c) in f.clients.iter_mut().enumerate() {
            c.capacity = Amount::from_sat(1_000 + 7_919 * i as u64);
        }
        let total: u64 = f.clients.iter().map(|c| c.capacity.to_sat()).sum();
        let f = Factory::new(f).unwrap();
        let m = model_of(&f).unwrap();
        assert_eq!(
            m.funding_sat(total),
            f.funding_output().unwrap().value.to_sat()
        );
        let reference = model_of(&book.factory(8).unwrap()).unwrap();
        assert_eq!(m.overhead_sat, reference.overhead_sat);
    }

    #[test]
    fn fixed_sizes_are_the_known_ones() {
        let t = fixed_sizes();
        // 10.5 vB of envelope, 57.5 vB per key-path input, 43 vB per P2TR output.
        assert_eq!(t.baseline_open, 154);
        assert_eq!(t.baseline_close, 154);
        assert_eq!(t.baseline_splice, 212);
        // One key-path input, two P2TR outputs and a P2A anchor.
        assert_eq!(t.commitment, 154 + 13);
        // `<key> CHECKSIGVERIFY <144> CSV`: 33 + 1 + 3 + 1 bytes, the only leaf.
        assert_eq!(t.to_local_script, 38);
        assert_eq!(t.to_local_control, 33);
        let (v, n) = batched_vsize(&[Spend::KeyPath; 3], 2);
        assert_eq!((v, n), (tx_vsize(&[Spend::KeyPath; 3], &[Out::P2tr; 3]), 1));
        let (_, n) = batched_vsize(&vec![Spend::KeyPath; 2000], 2000);
        assert!(n >= 2);
    }

    #[test]
    fn large_factories_get_static_levels_automatically() {
        let mut book = CostBook::new(&small(256)).unwrap();
        let m = book.model(256).unwrap();
        assert!(m.static_levels >= 1);
        assert!(m.ewt_blocks <= superscalar_core::shape::DEFAULT_EWT_CEILING);
        let mut cfg = small(256);
        cfg.shape.static_levels = StaticLevels::Fixed(0);
        let e = CostBook::new(&cfg).unwrap_err();
        assert!(e.contains("worst-case exit time"), "{e}");
    }
}
