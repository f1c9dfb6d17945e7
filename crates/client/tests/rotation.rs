//! Rotation in one transaction (`superscalar_core::close` with a `Successor`) on the embedded
//! chain: the dying factory's close funds its successor's funding output and pays the clients
//! who leave, in one on-chain transaction with one input; the successor's tree, signed over that
//! output before anyone signs the close, is spendable once it confirms. A client refuses terms
//! that move it anywhere but where it expects, and everyone refuses a successor output worth
//! less than what is rolled into it.

mod common;

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, TxOut};
use common::*;
use superscalar_chain::Chain;
use superscalar_core::ceremony::run_in_process;
use superscalar_core::close::{
    ClientExpectation, CloseCoordinator, CloseError, CloseSigner, CloseTerms, Successor,
};
use superscalar_core::revocation::StockSecrets;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, NodeId, Signer, TxKind,
};
use superscalar_wallet::burn_script;

const RATE: FeeRate = FeeRate::from_sat_per_vb_u32(2);

fn lsp_script(h: &Harness) -> ScriptBuf {
    let secp = Secp256k1::verification_only();
    ScriptBuf::new_p2tr(&secp, h.lsp_key.x_only_public_key().0, None)
}

/// What client i of the dying factory is owed: a third of its capacity, its fee coin.
fn owed(h: &Harness, i: u32) -> Amount {
    h.factory
        .client_close_amount(&[capacity(i).to_sat() * 1000 / 3])
}

/// The successor factory: the clients of the dying one that stay (fresh keys, as every factory
/// has its own), and `newcomers` more.
fn successor_factory(h: &Harness, staying: &[u32], newcomers: u32) -> (Arc<Factory>, Vec<Keypair>) {
    let keys: Vec<Keypair> = staying
        .iter()
        .map(|i| keypair(0x0100_0000 + i))
        .chain((0..newcomers).map(|i| keypair(0x0200_0000 + i)))
        .collect();
    let params = FactoryParams {
        id: FactoryId([0xa5; 32]),
        config: FactoryConfig::regtest(),
        lsp_key: PublicKey::new(h.lsp_key.public_key()),
        clients: keys
            .iter()
            .enumerate()
            .map(|(i, k)| ClientSpec::new(PublicKey::new(k.public_key()), capacity(i as u32)))
            .collect(),
        creation_height: h.chain.tip().unwrap().height,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&StockSecrets::new([0x77; 32]));
    (Arc::new(Factory::new(params).unwrap()), keys)
}

fn rotation_terms(h: &Harness, next: &Factory, staying: &[u32]) -> CloseTerms {
    CloseTerms {
        factory: h.factory.params().id,
        funding: h.funding,
        clients: (0..h.client_keys.len() as u32)
            .map(|i| owed(h, i))
            .collect(),
        lsp_script: lsp_script(h),
        fee_rate: RATE,
        successor: Some(Successor {
            output: next.funding_output().unwrap(),
            rolled: staying.iter().map(|i| ClientId(*i)).collect(),
        }),
    }
}

fn expectation(h: &Harness, i: u32, successor: Option<TxOut>) -> ClientExpectation {
    ClientExpectation {
        client: ClientId(i),
        funding: h.funding,
        owed: owed(h, i),
        min_fee_rate: FeeRate::from_sat_per_vb_u32(1),
        successor,
    }
}

/// Every party of the dying factory signs `terms`: the signed transaction, or the first refusal.
fn sign_all(
    h: &Harness,
    terms: &CloseTerms,
    expected: impl Fn(u32) -> ClientExpectation,
) -> Result<Transaction, (Signer, CloseError)> {
    let mut coordinator = CloseCoordinator::new(&h.factory, terms).map_err(|e| (Signer::Lsp, e))?;
    let (lsp, nonce) =
        CloseSigner::lsp(&h.factory, h.lsp_key, terms, None).map_err(|e| (Signer::Lsp, e))?;
    let mut signers = vec![(Signer::Lsp, lsp)];
    let mut agg = coordinator.add_nonce(Signer::Lsp, nonce).unwrap();
    for (i, key) in h.client_keys.iter().enumerate() {
        let who = Signer::Client(ClientId(i as u32));
        let (signer, nonce) =
            CloseSigner::client(&h.factory, *key, terms, &expected(i as u32), None)
                .map_err(|e| (who, e))?;
        signers.push((who, signer));
        agg = coordinator.add_nonce(who, nonce).unwrap();
    }
    let agg = agg.expect("every nonce is in");
    let mut done = None;
    for (who, signer) in &mut signers {
        done = coordinator
            .add_partial(*who, signer.sign(&agg).unwrap())
            .map_err(|e| (*who, e))?;
    }
    Ok(done.expect("every partial signature is in"))
}

#[test]
fn a_cooperative_rotation_is_exactly_one_transaction_closing_the_old_and_funding_the_new() {
    let h = build(8, FactoryConfig::regtest());
    // Six clients stay, two leave; the successor takes a newcomer (all paid for by the old
    // funding output: the one input).
    let staying = [0u32, 1, 2, 4, 5, 7];
    let (next, next_keys) = successor_factory(&h, &staying, 1);
    let terms = rotation_terms(&h, &next, &staying);
    let rotation = h.factory.close_tx(&terms).unwrap();
    assert_eq!(rotation.successor_output, Some(0));
    assert_eq!(rotation.tx.input.len(), 1);
    // Successor, the two leavers, the LSP's remainder.
    assert_eq!(rotation.tx.output.len(), 4);
    for i in staying {
        assert_eq!(rotation.client_outputs[i as usize], None);
    }
    // The successor's tree is signed over the rotation's output 0 before anyone signs the close
    // (its txid is fixed by the terms: no witness changes it).
    let new_funding = OutPoint::new(rotation.tx.compute_txid(), 0);
    let tip = h.chain.tip().unwrap().height;
    let (_new_lsp, new_clients) =
        run_in_process(&next, h.lsp_key, &next_keys, new_funding, tip).unwrap();
    assert!(new_clients.iter().all(|c| c.is_live()));
    // Now the old factory's parties sign; stayers expect exactly the successor they verified.
    let successor_out = next.funding_output().unwrap();
    let tx = sign_all(&h, &terms, |i| {
        expectation(&h, i, staying.contains(&i).then(|| successor_out.clone()))
    })
    .unwrap();
    assert_eq!(tx.compute_txid(), new_funding.txid);
    h.chain.submit_transaction(&tx).unwrap();
    let tip_before = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    // The rotation block holds exactly one transaction besides the coinbase: the close of the
    // old factory and the funding of the new one are the same transaction.
    let block = h.chain.block_at(tip_before + 1).unwrap().unwrap();
    assert_eq!(block.txdata.len(), 2, "coinbase + the rotation");
    assert_eq!(block.txdata[1].compute_txid(), new_funding.txid);
    // The old funding is spent; the leavers are paid exactly; the new funding output exists
    // with the successor's value.
    assert!(h.chain.get_utxo(&h.funding).unwrap().is_none());
    let coin = h.chain.get_utxo(&new_funding).unwrap().unwrap();
    assert_eq!(coin.txout, successor_out);
    for i in [3u32, 6] {
        let vout = rotation.client_outputs[i as usize].unwrap();
        let paid = h
            .chain
            .get_utxo(&OutPoint::new(new_funding.txid, vout))
            .unwrap()
            .unwrap();
        assert_eq!(paid.txout.value, owed(&h, i));
        assert_eq!(
            paid.txout.script_pubkey,
            h.factory.client_payout_script(ClientId(i))
        );
    }
    // Money: what the stayers rolled is inside the successor; the LSP added the rest of it and
    // keeps its remainder.
    let rolled: Amount = staying.iter().map(|i| owed(&h, *i)).sum();
    assert!(successor_out.value >= rolled);
    let lsp_out = &tx.output[rotation.lsp_output.unwrap() as usize];
    let leavers: Amount = [3u32, 6].iter().map(|i| owed(&h, *i)).sum();
    let funding_value = h.factory.funding_output().unwrap().value;
    assert_eq!(
        successor_out.value + leavers + lsp_out.value + rotation.fee,
        funding_value
    );
    // The successor is live on chain: its root kickoff spends the rotation's output.
    let kickoff = new_clients[0]
        .signed()
        .iter()
        .find(|s| s.kind == TxKind::Kickoff(NodeId(0)))
        .unwrap()
        .tx
        .clone();
    h.chain.submit_transaction(&kickoff).unwrap();
    // And the old tree is void.
    let old_kickoff = h.clients[0]
        .signed()
        .iter()
        .find(|s| s.kind == TxKind::Kickoff(NodeId(0)))
        .unwrap()
        .tx
        .clone();
    assert!(h.chain.submit_transaction(&old_kickoff).is_err());
}

#[test]
fn a_client_refuses_to_be_moved_anywhere_but_where_it_expects() {
    let h = build(4, FactoryConfig::regtest());
    let staying = [0u32, 1, 3];
    let (next, _) = successor_factory(&h, &staying, 0);
    let want = next.funding_output().unwrap();
    let terms = rotation_terms(&h, &next, &staying);
    let expect = |i: u32| expectation(&h, i, staying.contains(&i).then(|| want.clone()));
    // Another successor output (another script, or another value) for a stayer.
    let mut other = terms.clone();
    other.successor.as_mut().unwrap().output.value += Amount::from_sat(1);
    let err = sign_all(&h, &other, expect).unwrap_err();
    assert_eq!(
        err,
        (
            Signer::Client(ClientId(0)),
            CloseError::WrongSuccessor {
                client: ClientId(0)
            }
        )
    );
    let mut other = terms.clone();
    other.successor.as_mut().unwrap().output.script_pubkey = lsp_script(&h);
    assert!(matches!(
        sign_all(&h, &other, expect),
        Err((
            Signer::Client(ClientId(0)),
            CloseError::WrongSuccessor { .. }
        ))
    ));
    // A leaver rolled into the successor: its money would be in a factory it never joined.
    let mut other = terms.clone();
    other.successor.as_mut().unwrap().rolled =
        vec![ClientId(0), ClientId(1), ClientId(2), ClientId(3)];
    assert_eq!(
        sign_all(&h, &other, expect).unwrap_err(),
        (
            Signer::Client(ClientId(2)),
            CloseError::WrongSuccessor {
                client: ClientId(2)
            }
        )
    );
    // A stayer paid out instead (and a plain close where a rotation is expected).
    let mut other = terms.clone();
    other.successor.as_mut().unwrap().rolled = vec![ClientId(0), ClientId(3)];
    assert_eq!(
        sign_all(&h, &other, expect).unwrap_err().1,
        CloseError::WrongSuccessor {
            client: ClientId(1)
        }
    );
    let mut other = terms.clone();
    other.successor = None;
    assert_eq!(
        sign_all(&h, &other, expect).unwrap_err().1,
        CloseError::WrongSuccessor {
            client: ClientId(0)
        }
    );
    // A wrong amount is still a wrong amount in a rotation.
    let mut other = terms.clone();
    other.clients[1] -= Amount::from_sat(1);
    assert!(matches!(
        sign_all(&h, &other, expect).unwrap_err().1,
        CloseError::WrongAmount {
            client: ClientId(1),
            ..
        }
    ));
    // The right terms are signed, and confirm.
    let tx = sign_all(&h, &terms, expect).unwrap();
    h.chain.submit_transaction(&tx).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(h.chain.get_utxo(&h.funding).unwrap().is_none());
}

#[test]
fn malformed_successors_are_refused_by_everyone() {
    let h = build(4, FactoryConfig::regtest());
    let staying = [0u32, 2];
    let (next, _) = successor_factory(&h, &staying, 0);
    let terms = rotation_terms(&h, &next, &staying);
    let bad = |edit: &dyn Fn(&mut Successor)| {
        let mut t = terms.clone();
        edit(t.successor.as_mut().unwrap());
        let lsp = CloseCoordinator::new(&h.factory, &t).unwrap_err();
        assert!(matches!(lsp, CloseError::BadSuccessor(_)), "{lsp}");
        let client = CloseSigner::client(
            &h.factory,
            h.client_keys[1],
            &t,
            &expectation(&h, 1, None),
            None,
        )
        .unwrap_err();
        assert!(matches!(client, CloseError::BadSuccessor(_)), "{client}");
    };
    // Worth less than what is rolled into it: the difference would go to the LSP.
    let rolled = owed(&h, 0) + owed(&h, 2);
    bad(&|s| s.output.value = rolled - Amount::from_sat(1));
    // Not taproot; dust; out of order; twice; a client the factory does not have.
    bad(&|s| {
        s.output.script_pubkey =
            ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([1; 20]))
    });
    bad(&|s| s.output.value = Amount::from_sat(100));
    bad(&|s| s.rolled = vec![ClientId(2), ClientId(0)]);
    bad(&|s| s.rolled = vec![ClientId(0), ClientId(0)]);
    bad(&|s| s.rolled = vec![ClientId(0), ClientId(4)]);
    // Exactly what is rolled (the LSP adds nothing) is a valid successor.
    let mut t = terms.clone();
    t.successor.as_mut().unwrap().output.value = rolled;
    let close = h.factory.close_tx(&t).unwrap();
    assert_eq!(close.tx.output[0].value, rolled);
    // More than the funding can pay is refused.
    let mut t = terms.clone();
    t.successor.as_mut().unwrap().output.value = h.factory.funding_output().unwrap().value;
    assert!(matches!(
        h.factory.close_tx(&t),
        Err(CloseError::Insufficient { .. })
    ));
}
