//! Property tests of the partial cooperative close over random shapes, client counts and absent
//! sets: every present client's money is in exactly one input (or, in a shared leaf, in its own
//! channel), no absent client signs anything, only what the absent clients make necessary is
//! published, and the close spends exactly its inputs.

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Txid};
use proptest::prelude::*;
use superscalar_core::close::PartialCloseTerms;
use superscalar_core::factory::Slot;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, LeafKind, NodeId,
    Shape, Signer, TxKind,
};

fn factory(n: usize, shape: Shape) -> Factory {
    let secp = Secp256k1::new();
    let key = |i: usize| {
        let mut sk = [1u8; 32];
        sk[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        PublicKey::new(Keypair::from_seckey_slice(&secp, &sk).unwrap().public_key())
    };
    let params = FactoryParams {
        id: FactoryId([7; 32]),
        config: FactoryConfig {
            shape,
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
        prop::collection::vec(1u8..=4, 1..4),
        0u8..3,
        prop_oneof![
            Just(LeafKind::Dw),
            (2u8..=3).prop_map(|arity| LeafKind::PseudoSpilman { arity })
        ],
    )
        .prop_map(|(arity, static_levels, leaf)| Shape {
            arity,
            static_levels,
            leaf,
            states_per_layer: 3,
            step_blocks: 2,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_plan_covers_every_present_client_once_and_publishes_only_what_the_absent_need(
        n in 1usize..40,
        shape in shapes(),
        absent_bits in any::<u64>(),
    ) {
        let f = factory(n, shape);
        let absent: Vec<ClientId> = (0..n as u32)
            .filter(|c| absent_bits >> (c % 64) & 1 == 1)
            .map(ClientId)
            .collect();
        let is_absent = |c: u32| absent.iter().any(|a| a.0 == c);
        let plan = match f.partial_close_plan(&absent) {
            Ok(p) => p,
            Err(e) => {
                prop_assert_eq!(absent.len(), n, "refused with someone present: {}", e);
                return Ok(());
            }
        };
        let tree = f.tree();
        // Every present client: exactly one input holds its money; an absent one: none.
        for c in 0..n as u32 {
            let holding = plan.inputs.iter().filter(|s| match s {
                Slot::NodeInput(m) => tree.node(*m).clients.contains(&c),
                Slot::Channel(x) => x.0 == c,
                _ => false,
            }).count();
            prop_assert_eq!(holding, usize::from(!is_absent(c)), "client {}", c);
        }
        // Whole nodes closed have only present clients; channels closed sit in published leaves.
        let v = f.initial_version();
        for s in &plan.inputs {
            for signer in f.signers(*s, &v) {
                if let Signer::Client(c) = signer {
                    prop_assert!(!is_absent(c.0));
                }
            }
            if let Slot::Channel(c) = s {
                let leaf = tree.leaf_of(*c).unwrap();
                prop_assert!(plan.published.contains(&TxKind::Kickoff(leaf)));
            }
        }
        // Published: nodes with an absent and a present client, parents before children, each
        // with its state; nothing else.
        let mut seen = Vec::new();
        for k in &plan.published {
            let node = match k {
                TxKind::Kickoff(x) => *x,
                TxKind::State(x) => {
                    prop_assert!(seen.contains(x), "state before kickoff");
                    continue;
                }
                other => return Err(TestCaseError::fail(format!("{other:?} published"))),
            };
            let nd = tree.node(node);
            prop_assert!(nd.client_ids().any(|c| is_absent(c.0)));
            prop_assert!(nd.client_ids().any(|c| !is_absent(c.0)));
            if let Some(p) = nd.parent {
                prop_assert!(seen.contains(&p), "child before parent");
            }
            if nd.has_state() {
                prop_assert!(plan.published.contains(&TxKind::State(node)));
            }
            seen.push(node);
        }
        prop_assert_eq!(absent.is_empty(), plan.inputs == vec![Slot::NodeInput(NodeId(0))]);
        // The close spends exactly its inputs: payouts, the LSP's remainder and the fee.
        let secp = Secp256k1::verification_only();
        let lsp = f.params().lsp_key.inner.x_only_public_key().0;
        let terms = PartialCloseTerms {
            factory: f.params().id,
            funding: OutPoint::new(Txid::from_byte_array([3; 32]), 0),
            clients: (0..n as u32)
                .map(|c| (!is_absent(c)).then(|| Amount::from_sat(5_000 + u64::from(c))))
                .collect(),
            lsp_script: ScriptBuf::new_p2tr(&secp, lsp, None),
            fee_rate: FeeRate::from_sat_per_vb_u32(2),
        };
        let pc = f.partial_close(&terms, &v).unwrap();
        let inputs: Amount = pc.inputs.iter().map(|i| i.spent.value).sum();
        let outputs: Amount = pc.tx.output.iter().map(|o| o.value).sum();
        prop_assert_eq!(inputs, outputs + pc.fee);
        prop_assert!(pc.fee >= FeeRate::from_sat_per_vb_u32(2).fee_vb(pc.close_vsize()).unwrap());
        prop_assert_eq!(pc.tx.input.len(), pc.inputs.len());
        for (c, out) in pc.client_outputs.iter().enumerate() {
            prop_assert_eq!(out.is_some(), !is_absent(c as u32));
        }
        // Each published transaction spends the output its parent published (or the funding).
        for (k, tx) in pc.plan.published.iter().zip(&pc.published) {
            let input = f.input_of(*k, &v);
            let at = f.slot_outpoint(input, terms.funding, &v, |p| {
                pc.plan.published.iter().position(|q| *q == p).map(|i| pc.published[i].compute_txid())
            });
            prop_assert_eq!(Some(tx.input[0].previous_output), at);
        }
    }
}
