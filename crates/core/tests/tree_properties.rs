//! Property tests over random shapes and client counts: conservation of money, DW ordering,
//! timeout coverage and EWT_max.

use std::collections::HashMap;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, OutPoint, Txid};
use proptest::prelude::*;
use superscalar_core::factory::Slot;
use superscalar_core::tree::NodeKind;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, LeafKind, Sale, Shape,
    TimeoutPolicy, TxKind, Version,
};

fn factory(n: usize, shape: Shape, policy: TimeoutPolicy) -> Factory {
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
            timeout_policy: policy,
            ..FactoryConfig::regtest()
        },
        lsp_key: key(10_000),
        clients: (0..n)
            .map(|i| ClientSpec::new(key(i), Amount::from_sat(20_000 + 37 * i as u64)))
            .collect(),
        creation_height: 500,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32]));
    Factory::new(params).unwrap()
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        prop::collection::vec(1u8..=5, 1..4),
        0u8..3,
        prop_oneof![
            Just(LeafKind::Dw),
            (2u8..=3).prop_map(|arity| LeafKind::PseudoSpilman { arity })
        ],
        2u16..6,
        1u16..4,
    )
        .prop_map(
            |(arity, static_levels, leaf, states_per_layer, step_blocks)| Shape {
                arity,
                static_levels,
                leaf,
                states_per_layer,
                step_blocks,
            },
        )
}

fn funding() -> OutPoint {
    OutPoint::new(Txid::from_byte_array([3; 32]), 1)
}

/// The timeout of a tree output (unsplit: these factories are small) pays each client of its
/// node what it is owed plus its fee coin plus an even share of the surplus (the remainder to the
/// node's first client), and miners exactly the tree's fee rate on its signed size.
fn check_node_timeout(
    f: &Factory,
    slot: Slot,
    built: &HashMap<TxKind, superscalar_core::factory::BuiltTx>,
    amounts: &superscalar_core::factory::Amounts,
    v: &Version,
) -> Result<(), TestCaseError> {
    let b = &built[&TxKind::Timeout(slot)];
    prop_assert!(f.timeout_parts(slot).is_empty());
    let owed = f.timeout_owed(slot, amounts, v);
    let pays = f.timeout_payouts(slot, amounts, v);
    prop_assert_eq!(owed.len(), pays.len());
    prop_assert_eq!(
        b.tx.output.len(),
        pays.len(),
        "{:?}: one output per client, no anchor",
        slot
    );
    let coin = f.params().config.client_fee_coin;
    let extras: Vec<u64> = owed
        .iter()
        .zip(&pays)
        .map(|(o, p)| {
            assert_eq!(o.0, p.0);
            (p.1 - o.1 - coin).to_sat()
        })
        .collect();
    // Even shares, the remainder to the first.
    prop_assert!(extras[1..].iter().all(|e| *e == extras[extras.len() - 1]));
    prop_assert!(extras[0] >= extras[extras.len() - 1]);
    prop_assert!(extras[0] - extras[extras.len() - 1] < extras.len() as u64);
    for ((c, a), o) in pays.iter().zip(&b.tx.output) {
        prop_assert_eq!(&o.script_pubkey, &f.client_payout_script(*c));
        prop_assert_eq!(o.value, *a);
    }
    let out: Amount = b.tx.output.iter().map(|o| o.value).sum();
    prop_assert_eq!(b.spent.value, amounts.value(f, slot));
    // Signed: a 64-byte key-path signature adds 17 vB to the unsigned transaction.
    let vsize = b.tx.base_size() as u64 + 17;
    let fee = f.params().config.fees.tree_fee_rate.fee_vb(vsize).unwrap();
    prop_assert_eq!(
        b.spent.value - out,
        fee,
        "{:?}: pays the tree's fee rate",
        slot
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn money_is_conserved_and_each_client_is_in_exactly_one_leaf(
        n in 1usize..40,
        shape in shapes(),
        advances in 0usize..6,
        sales in proptest::collection::vec((0u32..40, 330u64..40_000, any::<bool>()), 0..5),
    ) {
        let f = factory(n, shape, TimeoutPolicy::Inverted);
        let mut v = f.initial_version();
        // Advance a random-ish leaf a few times (stopping at exhaustion).
        let leaf = f.tree().leaf_of(ClientId((n as u32 - 1) / 2)).unwrap();
        for _ in 0..advances {
            if v.odo.advance(f.tree(), leaf).is_err() { break; }
        }
        // Some liquidity sales, merged into leaf states or left in PS chains; those the stock
        // cannot pay are refused by `amounts`.
        for (buyer, amount, merged) in sales {
            let buyer = ClientId(buyer % n as u32);
            let stock = f.stock_of(buyer).unwrap();
            let mut next = v.clone();
            next.sales.push(Sale { buyer, stock, amount: Amount::from_sat(amount), merged });
            let worst = f.worst_case(&next);
            if f.amounts(&worst).is_ok()
                && f.check_stock_shares(&next).is_ok()
                && f.check_stock_shares(&worst).is_ok()
            {
                v = next;
            }
        }
        let all = f.all_jobs(&v);
        let built = f.build_set(&all, funding(), &v).unwrap();
        let amounts = f.amounts(&v).unwrap();
        prop_assert_eq!(amounts.funding_value(), f.amounts(&f.initial_version()).unwrap().funding_value());
        // The root's timeout pays every client its channels, stock share and fee coin, miners the
        // tree's fee rate, and the rest of the reserve to the clients: all that is not fee.
        let root = Slot::NodeInput(superscalar_core::NodeId(0));
        check_node_timeout(&f, root, &built, &amounts, &v)?;
        let pays = f.timeout_payouts(root, &amounts, &v);
        for (j, sale) in v.sales.iter().enumerate() {
            let buyer_paid = pays.iter().find(|p| p.0 == sale.buyer).unwrap().1;
            prop_assert!(buyer_paid >= f.params().clients[sale.buyer.0 as usize].capacity + sale.amount, "sale {} not paid at T", j);
            let slot = Slot::Sold(j as u32);
            let creator = f.creator_of(slot, &v).unwrap();
            let vout = f.outputs_of(creator, &v).iter().position(|s| *s == slot).unwrap();
            prop_assert_eq!(built[&creator].tx.output[vout].value, sale.amount);
        }
        for (kind, b) in &built {
            let out: Amount = b.tx.output.iter().map(|o| o.value).sum();
            prop_assert!(b.spent.value >= out, "{:?} spends more than its input", kind);
            if let (Some(fee), false) = (amounts.fee(*kind), matches!(kind, TxKind::Timeout(_) | TxKind::Punish(_))) {
                prop_assert_eq!(b.spent.value, out + fee, "{:?}: input != outputs + fee", kind);
                prop_assert!(fee.to_sat() >= b.tx.vsize() as u64, "{:?} pays below 1 sat/vB", kind);
            }
        }
        // Each client's channel appears in exactly one leaf state, with its capacity.
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for node in f.tree().nodes().iter().filter(|n| n.kind == NodeKind::Leaf) {
            let st = &built[&TxKind::State(node.id)];
            for (slot, out) in f.outputs_of(TxKind::State(node.id), &v).iter().zip(&st.tx.output) {
                if let Slot::Channel(c) = slot {
                    *seen.entry(c.0).or_default() += 1;
                    prop_assert_eq!(out.value, f.params().clients[c.0 as usize].capacity);
                }
            }
        }
        prop_assert_eq!(seen.len(), n);
        prop_assert!(seen.values().all(|v| *v == 1));
    }

    #[test]
    fn newer_states_have_shorter_delays_and_pay_at_least_as_much(n in 1usize..30, shape in shapes()) {
        let f = factory(n, shape, TimeoutPolicy::Inverted);
        let leaf = f.tree().leaf_of(ClientId(0)).unwrap();
        let mut odo = f.initial_odometer();
        let at = |odo: &superscalar_core::Odometer| Version { odo: odo.clone(), ..f.initial_version() };
        loop {
            let before = odo.clone();
            let Ok(changed) = odo.advance(f.tree(), leaf) else { break };
            let old = f.amounts(&at(&before)).unwrap();
            let new = f.amounts(&at(&odo)).unwrap();
            let kind = TxKind::State(changed);
            prop_assert!(odo.sequence(changed).unwrap().0 < before.sequence(changed).unwrap().0);
            prop_assert!(new.fee(kind).unwrap() >= old.fee(kind).unwrap());
            prop_assert!(new.fee(kind).unwrap() > old.fee(kind).unwrap() || f.params().config.fees.state_fee_step == bitcoin::FeeRate::ZERO);
        }
        prop_assert!(odo.is_exhausted(f.tree(), leaf));
    }

    #[test]
    fn every_output_holding_a_clients_money_has_a_timeout_paying_it(n in 1usize..30, shape in shapes()) {
        let f = factory(n, shape, TimeoutPolicy::Inverted);
        let v = f.initial_version();
        let amounts = f.amounts(&v).unwrap();
        for c in 0..n as u32 {
            let jobs = f.client_jobs(ClientId(c), &v).unwrap();
            for slot in f.client_slots(ClientId(c), &v) {
                prop_assert!(jobs.contains(&TxKind::Timeout(slot)));
                let pays = f.timeout_payouts(slot, &amounts, &v);
                prop_assert!(pays.iter().any(|(who, v)| who.0 == c && *v > Amount::ZERO), "{:?} does not pay client {}", slot, c);
            }
        }
        // And every tree output's timeout pays everyone at least capacity + stock share + fee
        // coin, and miners exactly the tree's fee rate.
        let built = f.build_set(&f.all_jobs(&v), funding(), &v).unwrap();
        for node in f.tree().nodes() {
            check_node_timeout(&f, Slot::NodeInput(node.id), &built, &amounts, &v)?;
            if node.has_state() {
                check_node_timeout(&f, Slot::KickoffOut(node.id), &built, &amounts, &v)?;
            }
        }
    }

    #[test]
    fn ewt_max_is_the_sum_along_the_deepest_path(n in 1usize..60, shape in shapes()) {
        let f = factory(n, shape.clone(), TimeoutPolicy::Inverted);
        let budget = f.params().config.confirmation_budget;
        let mut worst = 0;
        for c in 0..n as u32 {
            let mut sum = 0;
            for node in f.tree().path_of(ClientId(c)) {
                let nd = f.tree().node(node);
                if nd.has_state() {
                    sum += u32::from(shape.step_blocks) * u32::from(shape.states_per_layer - 1) + 2 * budget;
                } else {
                    sum += budget;
                }
            }
            worst = worst.max(sum);
        }
        prop_assert_eq!(f.ewt_max(), worst);
        prop_assert_eq!(f.timeout_height(), 500 + f.params().config.active_blocks + f.params().config.dying_blocks + worst);
    }
}

#[test]
fn unsafe_configurations_are_refused() {
    use superscalar_core::shape::ShapeError;
    use superscalar_core::FactoryError;
    let secp = Secp256k1::new();
    let k = PublicKey::new(
        Keypair::from_seckey_slice(&secp, &[5; 32])
            .unwrap()
            .public_key(),
    );
    let mk = |config: FactoryConfig, n: usize| {
        Factory::new(
            FactoryParams {
                id: FactoryId([0; 32]),
                config,
                lsp_key: k,
                clients: (0..n)
                    .map(|_| ClientSpec::new(k, Amount::from_sat(50_000)))
                    .collect(),
                creation_height: 0,
                stock_hashes: Vec::new(),
                opening_msat: Vec::new(),
            }
            .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32])),
        )
    };
    // Mainnet with a step below 144.
    let mut c = FactoryConfig::default();
    c.shape.step_blocks = 100;
    assert!(matches!(
        mk(c, 4),
        Err(FactoryError::Shape(ShapeError::StepBlocks { .. }))
    ));
    // Too many DW layers for the 2016-block ceiling on mainnet (binary, 64 clients: 6 layers).
    let mut c = FactoryConfig::default();
    c.shape.arity = vec![2];
    assert!(matches!(
        mk(c.clone(), 64),
        Err(FactoryError::Shape(ShapeError::EwtAboveCeiling { .. }))
    ));
    // Static levels bring it back under.
    c.shape.static_levels = 3;
    assert!(mk(c, 64).is_ok());
    // The default shape works on mainnet.
    assert!(mk(FactoryConfig::default(), 128).is_ok());
    // No clients, bad arity, bad states, dust capacity.
    assert!(matches!(
        mk(FactoryConfig::regtest(), 0),
        Err(FactoryError::Shape(ShapeError::NoClients))
    ));
    let mut c = FactoryConfig::regtest();
    c.shape.arity = vec![0];
    assert!(mk(c, 3).is_err());
    let mut c = FactoryConfig::regtest();
    c.shape.states_per_layer = 1;
    assert!(mk(c, 3).is_err());
    let mut c = FactoryConfig::regtest();
    c.shape.leaf = LeafKind::PseudoSpilman { arity: 1 };
    assert!(mk(c, 3).is_err());
    let mut c = FactoryConfig::regtest();
    c.stock_per_client = Amount::from_sat(400);
    assert!(matches!(mk(c, 3), Err(FactoryError::StockExhausted(_))));
}

#[test]
fn absurd_sales_are_refused_without_panicking() {
    let f = factory(
        4,
        Shape {
            arity: vec![2],
            leaf: LeafKind::PseudoSpilman { arity: 2 },
            states_per_layer: 4,
            step_blocks: 2,
            static_levels: 0,
        },
        TimeoutPolicy::Inverted,
    );
    for amount in [u64::MAX, 21_000_000 * 100_000_000, 1 << 62] {
        for merged in [true, false] {
            let mut v = f.initial_version();
            v.sales.push(Sale {
                buyer: ClientId(0),
                stock: 0,
                amount: Amount::from_sat(amount),
                merged,
            });
            assert!(f.amounts(&v).is_err());
        }
    }
    // A buyer outside the stock's group, or a stock that does not exist.
    let mut v = f.initial_version();
    v.sales.push(Sale {
        buyer: ClientId(3),
        stock: 0,
        amount: Amount::from_sat(1_000),
        merged: true,
    });
    assert!(f.amounts(&v).is_err());
    v.sales[0].stock = 99;
    assert!(f.amounts(&v).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Advances interleaved with abandoned ones: a state index, once used under one input (the
    /// node's kickoff in that version of its ancestors), is never used again there, and every
    /// advance moves the path forward (the digits, read from the root, only increase).
    #[test]
    fn abandoned_indices_are_never_reused(
        n in 2usize..24,
        shape in shapes(),
        steps in proptest::collection::vec((0u32..24, any::<bool>()), 1..40),
    ) {
        use std::collections::BTreeMap;
        use superscalar_core::{NodeId, StateIndex};
        let f = factory(n, shape, TimeoutPolicy::Inverted);
        let tree = f.tree();
        let mut odo = f.initial_odometer();
        // (node, digits of its ancestors) -> highest index used there.
        let context = |odo: &superscalar_core::Odometer, node: NodeId| -> Vec<Option<StateIndex>> {
            let mut c = Vec::new();
            let mut p = tree.node(node).parent;
            while let Some(a) = p {
                c.push(odo.state(a));
                p = tree.node(a).parent;
            }
            c
        };
        let mut used: BTreeMap<(NodeId, Vec<Option<StateIndex>>), StateIndex> = BTreeMap::new();
        for (client, abandon) in steps {
            let leaf = tree.leaf_of(ClientId(client % n as u32)).unwrap();
            if odo.state(leaf).is_none() {
                continue;
            }
            let before = odo.path_digits(tree, leaf);
            let mut next = odo.clone();
            let lookup = |node: NodeId| used.get(&(node, context(&odo, node))).copied();
            let Ok(node) = next.advance_past(tree, leaf, lookup) else {
                break;
            };
            let to = next.state(node).unwrap();
            let key = (node, context(&odo, node));
            if let Some(u) = used.get(&key) {
                prop_assert!(to > *u, "index {to:?} of {node} reused (used up to {u:?})");
            }
            prop_assert!(next.path_digits(tree, leaf) > before);
            used.insert(key, to);
            if !abandon {
                odo = next;
            }
        }
    }
}
