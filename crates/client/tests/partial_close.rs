//! Partial cooperative close (`superscalar_core::close::partial`) on the embedded chain: with 2 of
//! 16 clients absent, the tree is published only down to the absent clients' subtrees, every
//! output whose signers are all present is spent by its key path in one transaction paying each
//! present client exactly its balance, and the absent clients still exit alone afterwards. Prints
//! its vbytes beside those of exiting everything.

mod common;

use bitcoin::key::Secp256k1;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction};
use common::*;
use superscalar_chain::{Chain, RejectReason};
use superscalar_core::close::{
    CloseError, PartialCloseCoordinator, PartialCloseSigner, PartialCloseTerms, PartialExpectation,
};
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, Signer, TxKind, Version};
use superscalar_wallet::burn_script;

const RATE: FeeRate = FeeRate::from_sat_per_vb_u32(2);

fn lsp_script(h: &Harness) -> ScriptBuf {
    let secp = Secp256k1::verification_only();
    ScriptBuf::new_p2tr(&secp, h.lsp_key.x_only_public_key().0, None)
}

/// Client i's channel balance in these tests (msat): 40 % of its capacity, plus a few msat.
fn balance_msat(i: u32) -> u64 {
    capacity(i).to_sat() * 400 + 7
}

fn expectation(h: &Harness, i: u32) -> PartialExpectation {
    PartialExpectation {
        client: ClientId(i),
        funding: h.funding,
        balances_msat: vec![balance_msat(i)],
        min_fee_rate: FeeRate::from_sat_per_vb_u32(1),
    }
}

/// The terms the LSP proposes with `absent` clients: each present client its balance, and its
/// fee coin when the close spends the output holding it.
fn terms(h: &Harness, absent: &[u32]) -> PartialCloseTerms {
    let absent_ids: Vec<ClientId> = absent.iter().map(|c| ClientId(*c)).collect();
    let plan = h.factory.partial_close_plan(&absent_ids).unwrap();
    let coin = h.factory.params().config.client_fee_coin;
    PartialCloseTerms {
        factory: h.factory.params().id,
        funding: h.funding,
        clients: (0..h.client_keys.len() as u32)
            .map(|i| {
                (!absent.contains(&i)).then(|| {
                    let mut a = Amount::from_sat(balance_msat(i) / 1000);
                    if plan.fee_coin_in_close(&h.factory, ClientId(i)) {
                        a += coin;
                    }
                    a
                })
            })
            .collect(),
        lsp_script: lsp_script(h),
        fee_rate: RATE,
    }
}

/// Every present party signs `terms`: the signed close, or the first refusal.
fn sign_all(
    h: &Harness,
    terms: &PartialCloseTerms,
    v: &Version,
    expected: impl Fn(u32) -> PartialExpectation,
) -> Result<Transaction, (Signer, CloseError)> {
    let mut coordinator =
        PartialCloseCoordinator::new(&h.factory, terms, v).map_err(|e| (Signer::Lsp, e))?;
    let (lsp, nonces) = PartialCloseSigner::lsp(&h.factory, h.lsp_key, terms, v, None)
        .map_err(|e| (Signer::Lsp, e))?;
    coordinator.add_nonces(Signer::Lsp, &nonces).unwrap();
    let mut signers = vec![(Signer::Lsp, lsp)];
    for (i, key) in h.client_keys.iter().enumerate() {
        if terms.clients[i].is_none() {
            continue;
        }
        let who = Signer::Client(ClientId(i as u32));
        let (signer, nonces) =
            PartialCloseSigner::client(&h.factory, *key, terms, v, &expected(i as u32), None)
                .map_err(|e| (who, e))?;
        coordinator.add_nonces(who, &nonces).unwrap();
        signers.push((who, signer));
    }
    // Every nonce is in: what is missing now is every party's partial signatures.
    assert!(coordinator.aggs_for(Signer::Lsp).is_some());
    assert_eq!(coordinator.missing().len(), signers.len());
    let mut done = None;
    for (who, signer) in &mut signers {
        let aggs = coordinator.aggs_for(*who).expect("every input aggregated");
        let partials = signer.sign(&aggs).unwrap();
        done = coordinator
            .add_partials(*who, &partials)
            .map_err(|e| (*who, e))?;
    }
    Ok(done.expect("every partial signature is in"))
}

/// Publish `txs` in order, each once its parent is confirmed and its relative lock has passed.
fn publish(h: &Harness, txs: &[Transaction]) {
    for tx in txs {
        for _ in 0..1000 {
            match h.chain.submit_transaction(tx) {
                Ok(_) => break,
                Err(e)
                    if matches!(e.reject_reason(), Some(RejectReason::SequenceLocked { .. })) =>
                {
                    h.chain.mine_blocks(1, &burn_script()).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        assert!(
            h.chain
                .tx_status(&tx.compute_txid())
                .unwrap()
                .confirmations()
                > 0
        );
    }
}

#[test]
fn two_of_sixteen_absent_the_rest_close_in_one_transaction_and_the_absent_still_exit() {
    let h = build(16, FactoryConfig::regtest());
    let v = h.version0.clone();
    let absent = [3u32, 12];
    let terms = terms(&h, &absent);
    let pc = h.factory.partial_close(&terms, &v).unwrap();
    // The absent clients' leaves are published (their present neighbours' channels are closed
    // from them); every fully present subtree is spent whole.
    assert!(pc
        .inputs
        .iter()
        .any(|i| matches!(i.slot, Slot::NodeInput(_))));
    assert!(pc.inputs.iter().any(|i| matches!(i.slot, Slot::Channel(_))));
    for c in absent {
        assert!(pc
            .inputs
            .iter()
            .all(|i| !i.signers.contains(&Signer::Client(ClientId(c)))));
        assert_eq!(pc.client_outputs[c as usize], None);
    }
    // Everyone present signs; the published tree transactions are the pre-signed ones.
    let tx = sign_all(&h, &terms, &v, |i| expectation(&h, i)).unwrap();
    assert_eq!(tx.compute_txid(), pc.tx.compute_txid());
    let signed: Vec<Transaction> = pc
        .plan
        .published
        .iter()
        .map(|k| h.lsp.signed(*k).unwrap().tx.clone())
        .collect();
    for (s, u) in signed.iter().zip(&pc.published) {
        assert_eq!(s.compute_txid(), u.compute_txid());
    }
    publish(&h, &signed);
    let txid = h.chain.submit_transaction(&tx).unwrap();
    assert_eq!(h.chain.mempool_fee(&txid).unwrap(), pc.fee);
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(h.chain.tx_status(&txid).unwrap().confirmations() > 0);
    // Each present client is paid exactly its terms; the LSP the rest.
    for i in 0..16u32 {
        let Some(vout) = pc.client_outputs[i as usize] else {
            assert!(absent.contains(&i));
            continue;
        };
        let coin = h
            .chain
            .get_utxo(&OutPoint::new(txid, vout))
            .unwrap()
            .unwrap();
        assert_eq!(Some(coin.txout.value), terms.clients[i as usize]);
        assert_eq!(
            coin.txout.script_pubkey,
            h.factory.client_payout_script(ClientId(i))
        );
    }
    let inputs: Amount = pc.inputs.iter().map(|i| i.spent.value).sum();
    let out: Amount = tx.output.iter().map(|o| o.value).sum();
    assert_eq!(inputs - out, pc.fee);
    // The vbytes, beside exiting everything (every kickoff and state of the tree).
    let full: u64 = h
        .factory
        .tree()
        .nodes()
        .iter()
        .flat_map(|n| {
            let mut k = vec![TxKind::Kickoff(n.id)];
            if n.has_state() {
                k.push(TxKind::State(n.id));
            }
            k
        })
        .map(|k| h.lsp.signed(k).unwrap().tx.vsize() as u64)
        .sum();
    let partial = pc.published_vsize() + tx.vsize() as u64;
    println!(
        "partial close, 2 of 16 absent: {} tree transactions ({} vB) + the close ({} vB, {} inputs) = {} vB; exiting everything: {} tree transactions, {} vB (channel closes not counted)",
        pc.published.len(),
        pc.published_vsize(),
        tx.vsize(),
        tx.input.len(),
        partial,
        h.factory.tree().nodes().iter().map(|n| 1 + usize::from(n.has_state())).sum::<usize>(),
        full
    );
    assert!(partial < full);
    assert_eq!(pc.close_vsize(), tx.vsize() as u64);
    // The absent clients still exit alone with what they hold: their paths (here published
    // down to their leaves, which hold present clients too) complete, and their channel outputs
    // are on chain, unspent, for their commitments.
    for c in absent {
        let mut exit =
            superscalar_client::UnilateralExit::new(h.clients[c as usize].signed()).unwrap();
        finish(&h, &mut exit);
        let channel = h
            .factory
            .slot_outpoint(Slot::Channel(ClientId(c)), h.funding, &v, |k| {
                h.clients[c as usize]
                    .signed()
                    .iter()
                    .find(|s| s.kind == k)
                    .map(|s| s.tx.compute_txid())
            })
            .unwrap();
        let coin = h.chain.get_utxo(&channel).unwrap().unwrap();
        assert_eq!(coin.txout.value, capacity(c));
    }
}

#[test]
fn an_absent_client_whose_subtree_is_not_published_exits_from_where_the_close_left_it() {
    // Both clients of one leaf absent: their leaf is left unpublished, its output on chain.
    let h = build(16, FactoryConfig::regtest());
    let v = h.version0.clone();
    let leaf = h.factory.tree().leaf_of(ClientId(6)).unwrap();
    let absent: Vec<u32> = h
        .factory
        .tree()
        .node(leaf)
        .client_ids()
        .map(|c| c.0)
        .collect();
    assert!(absent.len() >= 2, "a leaf of several clients");
    let terms = terms(&h, &absent);
    let pc = h.factory.partial_close(&terms, &v).unwrap();
    assert!(!pc.plan.published.contains(&TxKind::Kickoff(leaf)));
    assert!(pc
        .inputs
        .iter()
        .all(|i| matches!(i.slot, Slot::NodeInput(_))));
    let tx = sign_all(&h, &terms, &v, |i| expectation(&h, i)).unwrap();
    let signed: Vec<Transaction> = pc
        .plan
        .published
        .iter()
        .map(|k| h.lsp.signed(*k).unwrap().tx.clone())
        .collect();
    publish(&h, &signed);
    h.chain.submit_transaction(&tx).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    println!(
        "partial close, one leaf of {} absent of 16: {} tree transactions ({} vB) + the close ({} vB, {} inputs)",
        absent.len(),
        pc.published.len(),
        pc.published_vsize(),
        tx.vsize(),
        tx.input.len()
    );
    // An absent client exits alone from the output the close left: its leaf's kickoff and
    // state wait out their delays (each tried early and refused) and confirm; its neighbour's
    // exit then finds its whole path on chain.
    exit_alone(&h, ClientId(absent[0]));
    for c in &absent {
        let mut exit =
            superscalar_client::UnilateralExit::new(h.clients[*c as usize].signed()).unwrap();
        finish(&h, &mut exit);
        let state = h.clients[*c as usize]
            .signed()
            .iter()
            .find(|s| s.kind == TxKind::State(leaf))
            .unwrap();
        assert!(
            h.chain
                .tx_status(&state.tx.compute_txid())
                .unwrap()
                .confirmations()
                > 0
        );
    }
}

#[test]
fn a_present_client_refuses_a_wrong_amount_and_nobody_signs_for_the_absent() {
    let h = build(8, FactoryConfig::regtest());
    let v = h.version0.clone();
    let absent = [5u32];
    let good = terms(&h, &absent);
    // One sat more or less for client 2: refused by client 2.
    for delta in [1i64, -1] {
        let mut t = good.clone();
        let a = t.clients[2].unwrap().to_sat() as i64 + delta;
        t.clients[2] = Some(Amount::from_sat(a as u64));
        let err = sign_all(&h, &t, &v, |i| expectation(&h, i)).unwrap_err();
        assert_eq!(err.0, Signer::Client(ClientId(2)));
        assert!(matches!(
            err.1,
            CloseError::WrongAmount {
                client: ClientId(2),
                ..
            }
        ));
    }
    // A client in the absent one's leaf is paid without its fee coin (it is its own output on
    // chain); claiming it back inside the close is refused by that client.
    let leaf = h.factory.tree().leaf_of(ClientId(5)).unwrap();
    let neighbour = h
        .factory
        .tree()
        .node(leaf)
        .client_ids()
        .find(|c| c.0 != 5)
        .unwrap();
    let plan = h.factory.partial_close_plan(&[ClientId(5)]).unwrap();
    assert!(!plan.fee_coin_in_close(&h.factory, neighbour));
    assert!(plan.fee_coin_in_close(&h.factory, ClientId(0)));
    let mut t = good.clone();
    let coin = h.factory.params().config.client_fee_coin;
    t.clients[neighbour.0 as usize] = Some(t.clients[neighbour.0 as usize].unwrap() + coin);
    let err = sign_all(&h, &t, &v, |i| expectation(&h, i)).unwrap_err();
    assert_eq!(err.0, Signer::Client(neighbour));
    // The absent client cannot be made to sign, and an absent-only close is refused.
    let err = PartialCloseSigner::client(
        &h.factory,
        h.client_keys[5],
        &good,
        &v,
        &expectation(&h, 5),
        None,
    )
    .unwrap_err();
    assert_eq!(err, CloseError::NotAParty(Signer::Client(ClientId(5))));
    let mut all_absent = good.clone();
    all_absent.clients = vec![None; 8];
    assert_eq!(
        h.factory.partial_close(&all_absent, &v).unwrap_err(),
        CloseError::NobodyPresent
    );
    // Bad messages at the coordinator: a stranger, missing or extra nonces.
    let mut coordinator = PartialCloseCoordinator::new(&h.factory, &good, &v).unwrap();
    let (_s, nonces) = PartialCloseSigner::client(
        &h.factory,
        h.client_keys[0],
        &good,
        &v,
        &expectation(&h, 0),
        None,
    )
    .unwrap();
    assert!(coordinator
        .add_nonces(Signer::Client(ClientId(5)), &nonces)
        .is_err());
    assert!(coordinator
        .add_nonces(Signer::Client(ClientId(0)), &[])
        .is_err());
    let mut twice = nonces.clone();
    twice.extend(nonces.iter().cloned());
    assert!(coordinator
        .add_nonces(Signer::Client(ClientId(0)), &twice)
        .is_err());
    coordinator
        .add_nonces(Signer::Client(ClientId(0)), &nonces)
        .unwrap();
    assert!(matches!(
        coordinator.add_nonces(Signer::Client(ClientId(0)), &nonces),
        Err(CloseError::Duplicate(..))
    ));
    // The right terms are signed and confirm.
    let tx = sign_all(&h, &good, &v, |i| expectation(&h, i)).unwrap();
    let pc = h.factory.partial_close(&good, &v).unwrap();
    let signed: Vec<Transaction> = pc
        .plan
        .published
        .iter()
        .map(|k| h.lsp.signed(*k).unwrap().tx.clone())
        .collect();
    publish(&h, &signed);
    h.chain.submit_transaction(&tx).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        h.chain
            .tx_status(&tx.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
}
