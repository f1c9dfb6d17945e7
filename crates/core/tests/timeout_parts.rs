//! Split timeouts: above TRUC's 10,000 vB the timeout of a tree output becomes a tree of timeout
//! transactions along the factory's tree, which pays every client exactly what the unsplit
//! timeout would, out of the same fee reserve; advances re-sign the parts beneath the ticking
//! node only; a factory whose transactions cannot be made standard is refused.

use std::collections::{BTreeMap, HashMap};

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, Txid, Witness};
use superscalar_core::advance::jobs_below;
use superscalar_core::factory::{
    tree_tx_vsize, BuiltTx, Slot, TIMEOUT_SPLIT_VSIZE, TRUC_MAX_VSIZE,
};
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryError, FactoryId, FactoryParams, LeafKind,
    NodeId, Shape, TxKind, Version,
};

fn factory(n: usize, shape: Shape) -> Result<Factory, FactoryError> {
    let secp = Secp256k1::new();
    let key = |i: usize| {
        let mut sk = [1u8; 32];
        sk[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        PublicKey::new(Keypair::from_seckey_slice(&secp, &sk).unwrap().public_key())
    };
    let params = FactoryParams {
        id: FactoryId([1; 32]),
        config: FactoryConfig {
            shape,
            ..FactoryConfig::regtest()
        },
        lsp_key: key(100_000),
        clients: (0..n)
            .map(|i| ClientSpec::new(key(i), Amount::from_sat(20_000 + 37 * i as u64)))
            .collect(),
        creation_height: 500,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32]));
    Factory::new(params)
}

fn default_shape() -> Shape {
    FactoryConfig::regtest().shape
}

fn funding() -> OutPoint {
    OutPoint::new(Txid::from_byte_array([3; 32]), 1)
}

/// `tx` with a 64-byte key-path signature, as signed.
fn with_signature(tx: &Transaction) -> Transaction {
    let mut tx = tx.clone();
    tx.input[0].witness = Witness::from_slice(&[[0u8; 64]]);
    tx
}

/// Walk the timeout tree of `top` in `built`: what each payout script receives in the end, the
/// fees of its transactions, and how many there are. Checks each transaction on the way: TRUC
/// size when v3, at least 1 sat/vB.
fn walk(
    f: &Factory,
    top: Slot,
    built: &HashMap<TxKind, BuiltTx>,
) -> (BTreeMap<ScriptBuf, Amount>, Amount, usize) {
    let mut paid = BTreeMap::new();
    let mut fees = Amount::ZERO;
    let mut count = 0;
    let mut stack = vec![top];
    while let Some(slot) = stack.pop() {
        let b = &built[&TxKind::Timeout(slot)];
        let tx = with_signature(&b.tx);
        count += 1;
        let out: Amount = tx.output.iter().map(|o| o.value).sum();
        let fee = b.spent.value - out;
        fees += fee;
        let vsize = tx.vsize() as u64;
        assert!(tx.weight().to_wu() <= 400_000, "{slot:?}");
        if tx.version.0 == 3 {
            assert!(vsize <= TRUC_MAX_VSIZE, "{slot:?}: {vsize} vB");
        }
        assert!(fee.to_sat() >= vsize, "{slot:?}: {fee} for {vsize} vB");
        let parts = f.timeout_parts(slot);
        if parts.is_empty() {
            for o in &tx.output {
                *paid.entry(o.script_pubkey.clone()).or_insert(Amount::ZERO) += o.value;
            }
        } else {
            assert_eq!(
                tx.output.len(),
                parts.len(),
                "{slot:?}: one output per part"
            );
            for (part, o) in parts.iter().zip(&tx.output) {
                assert_eq!(f.timeout_part_parent(*part), Some(slot));
                let spent = &built[&TxKind::Timeout(*part)];
                assert_eq!(spent.tx.input[0].previous_output.txid, b.tx.compute_txid());
                assert_eq!(&spent.spent, o, "{part:?} spends its output of {slot:?}");
                stack.push(*part);
            }
        }
    }
    (paid, fees, count)
}

/// Every split timeout of `f` at `v` pays each client exactly what the unsplit one would (its
/// payouts), and its transactions' fees add up to what the unsplit timeout would pay: the
/// output's value minus the payouts.
fn check_split_timeouts(f: &Factory, v: &Version) -> usize {
    let built = f.build_set(&f.all_jobs(v), funding(), v).unwrap();
    let amounts = f.amounts(v).unwrap();
    let mut splits = 0;
    for n in f.tree().nodes() {
        let mut tops = vec![Slot::NodeInput(n.id)];
        if n.has_state() {
            tops.push(Slot::KickoffOut(n.id));
        }
        for top in tops {
            let (paid, fees, count) = walk(f, top, &built);
            let want: Amount = f
                .timeout_payouts(top, &amounts, v)
                .iter()
                .map(|(c, a)| {
                    let script = f.client_payout_script(*c);
                    assert_eq!(paid.get(&script), Some(a), "{top:?} pays {c} {a}");
                    *a
                })
                .sum();
            assert_eq!(
                paid.len(),
                n.clients.len(),
                "{top:?}: one payout per client"
            );
            let value = amounts.value(f, top);
            assert_eq!(
                fees,
                value - want,
                "{top:?}: the split's fees are the unsplit fee"
            );
            let big = tree_tx_vsize(n.clients.len(), 0) > TIMEOUT_SPLIT_VSIZE;
            assert_eq!(count > 1, big && !n.children.is_empty(), "{top:?}");
            if count > 1 {
                splits += 1;
            }
        }
    }
    splits
}

#[test]
fn a_split_timeout_pays_each_client_exactly_from_the_same_reserve() {
    // 230 clients fit in one TRUC transaction; 231 do not.
    let f = factory(230, default_shape()).unwrap();
    assert_eq!(check_split_timeouts(&f, &f.initial_version()), 0);
    for n in [231, 1000, 4096] {
        let f = factory(n, default_shape()).unwrap();
        let splits = check_split_timeouts(&f, &f.initial_version());
        assert!(splits >= 2, "{n} clients: the root's outputs split");
    }
    // With static levels and pseudo-Spilman leaves too.
    let shape = Shape {
        arity: vec![4, 4, 2],
        static_levels: 1,
        leaf: LeafKind::PseudoSpilman { arity: 3 },
        ..default_shape()
    };
    let f = factory(1111, shape).unwrap();
    assert!(check_split_timeouts(&f, &f.initial_version()) > 0);
}

#[test]
fn a_client_signs_the_parts_holding_its_money_and_no_others() {
    let f = factory(1024, default_shape()).unwrap();
    let v = f.initial_version();
    for c in [0u32, 517, 1023] {
        let jobs = f.client_jobs(ClientId(c), &v).unwrap();
        let parts: Vec<Slot> = jobs
            .iter()
            .filter_map(|k| match k {
                TxKind::Timeout(s @ Slot::TimeoutPart { .. }) => Some(*s),
                _ => None,
            })
            .collect();
        // The root's two outputs split into parts of 128 clients: one part each for client c.
        assert_eq!(parts.len(), 2, "client {c}: {parts:?}");
        for p in parts {
            let Slot::TimeoutPart { node, .. } = p else {
                unreachable!()
            };
            assert!(f.tree().node(node).clients.contains(&c));
            assert!(f
                .signers(p, &v)
                .contains(&superscalar_core::Signer::Client(ClientId(c))));
        }
    }
    // A part that does not exist is refused.
    let bogus = Slot::TimeoutPart {
        top: NodeId(1),
        kickoff: false,
        node: NodeId(2),
    };
    assert!(f.check_slot(bogus, &v).is_err());
}

#[test]
fn an_advance_re_signs_the_parts_beneath_the_ticking_node_only() {
    // Two nodes of 256 clients under the root, each with 128 leaves of two: the timeouts of the
    // root's and of those nodes' outputs split.
    let shape = Shape {
        arity: vec![2, 128],
        static_levels: 0,
        leaf: LeafKind::Dw,
        states_per_layer: 2,
        ..default_shape()
    };
    let f = factory(512, shape).unwrap();
    let v0 = f.initial_version();
    let mut v = v0.clone();
    let leaf = f.tree().leaf_of(ClientId(0)).unwrap();
    let root = NodeId(0);
    while v.odo.advance(f.tree(), leaf).unwrap() != root {}
    let jobs = jobs_below(&f, root, &v);
    let x = f.tree().root().children[0];
    let parts_of = |top: NodeId| {
        jobs.iter()
            .filter(|k| matches!(k, TxKind::Timeout(Slot::TimeoutPart { top: t, .. }) if *t == top))
            .count()
    };
    // Both outputs of each child re-created beneath the new root state: 128 parts each.
    assert_eq!(parts_of(x), 256);
    // The root's own outputs are not re-created, nor their timeouts' parts re-signed.
    assert_eq!(parts_of(root), 0);
    assert!(!jobs.contains(&TxKind::Timeout(Slot::NodeInput(root))));
    assert_eq!(check_split_timeouts(&f, &v), 6);
    // The re-signed parts spend the re-created outputs' new timeouts: new transactions.
    let old = f.build_set(&f.all_jobs(&v0), funding(), &v0).unwrap();
    let new = f.build_set(&jobs, funding(), &v).unwrap();
    for (k, b) in &new {
        if let TxKind::Timeout(Slot::TimeoutPart { .. }) = k {
            assert_ne!(old[k].tx, b.tx, "{k:?}");
        }
    }
}

#[test]
fn a_factory_whose_transactions_cannot_be_standard_is_refused() {
    // One pseudo-Spilman leaf of 2,500 clients: its state transaction alone is 5,000 outputs.
    let shape = Shape {
        arity: vec![1],
        static_levels: 0,
        leaf: LeafKind::PseudoSpilman { arity: 50 },
        ..default_shape()
    };
    match factory(2500, shape) {
        Err(FactoryError::TooLarge { kind, weight }) => {
            assert!(matches!(kind, TxKind::State(_)), "{kind:?}");
            assert!(weight > 400_000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
