//! Cooperative close (`superscalar_core::close`) of a funded factory on the embedded chain
//! (Bitcoin Core's engine): every party signs one key-path spend of the funding output paying
//! each its balance; a client refuses a close that pays it anything but what its records say;
//! amounts below dust go to the fee; bad partial signatures name their signer; a party that
//! signed one close never signs another.

mod common;

use bitcoin::key::{Keypair, Secp256k1};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction};
use common::*;
use superscalar_chain::Chain;
use superscalar_core::close::{
    ClientExpectation, CloseCoordinator, CloseError, CloseRecord, CloseSigner, CloseTerms,
};
use superscalar_core::musig::PartialSig;
use superscalar_core::{ClientId, FactoryConfig, NodeId, Signer, TxKind};
use superscalar_wallet::burn_script;

const RATE: FeeRate = FeeRate::from_sat_per_vb_u32(3);

fn lsp_script(h: &Harness) -> ScriptBuf {
    let secp = Secp256k1::verification_only();
    ScriptBuf::new_p2tr(&secp, h.lsp_key.x_only_public_key().0, None)
}

/// What client i is owed in these tests: half its capacity in its channel, its fee coin.
fn owed(h: &Harness, i: u32) -> Amount {
    h.factory
        .client_close_amount(&[capacity(i).to_sat() * 1000 / 2 + 999])
}

fn terms(h: &Harness) -> CloseTerms {
    CloseTerms {
        factory: h.factory.params().id,
        funding: h.funding,
        clients: (0..h.client_keys.len() as u32)
            .map(|i| owed(h, i))
            .collect(),
        lsp_script: lsp_script(h),
        fee_rate: RATE,
        successor: None,
    }
}

fn expectation(h: &Harness, i: u32) -> ClientExpectation {
    ClientExpectation {
        client: ClientId(i),
        funding: h.funding,
        owed: owed(h, i),
        min_fee_rate: FeeRate::from_sat_per_vb_u32(1),
        successor: None,
    }
}

/// Every party signs `terms` (each client checking them against `expected(i)`): the signed
/// close, or the first refusal with who refused.
fn sign_all(
    h: &Harness,
    terms: &CloseTerms,
    expected: impl Fn(u32) -> ClientExpectation,
) -> Result<Transaction, (Signer, CloseError)> {
    let mut coordinator = CloseCoordinator::new(&h.factory, terms).map_err(|e| (Signer::Lsp, e))?;
    let mut signers = Vec::new();
    let (lsp, nonce) =
        CloseSigner::lsp(&h.factory, h.lsp_key, terms, None).map_err(|e| (Signer::Lsp, e))?;
    signers.push((Signer::Lsp, lsp));
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
        let partial = signer.sign(&agg).unwrap();
        done = coordinator
            .add_partial(*who, partial)
            .map_err(|e| (*who, e))?;
    }
    let tx = done.expect("every partial signature is in");
    // Each client completes the same transaction from the aggregated signature alone, and
    // refuses a signature of anything else.
    let sig = bitcoin::secp256k1::schnorr::Signature::from_slice(&tx.input[0].witness[0]).unwrap();
    let mut wrong = sig.serialize();
    wrong[63] ^= 1;
    let wrong = bitcoin::secp256k1::schnorr::Signature::from_slice(&wrong).unwrap();
    for (_, signer) in &signers {
        assert_eq!(signer.complete(&sig).unwrap(), tx);
        assert_eq!(signer.complete(&wrong), Err(CloseError::BadSignature));
    }
    Ok(tx)
}

fn funding_unspent(h: &Harness) -> bool {
    h.chain.get_utxo(&h.funding).unwrap().is_some()
}

#[test]
fn every_party_signs_and_the_close_confirms_paying_each_its_balance() {
    let h = build(8, FactoryConfig::regtest());
    let terms = terms(&h);
    let close = h.factory.close_tx(&terms).unwrap();
    let tx = sign_all(&h, &terms, |i| expectation(&h, i)).unwrap();
    assert_eq!(tx.compute_txid(), close.tx.compute_txid());
    let txid = h.chain.submit_transaction(&tx).unwrap();
    // The fee paid is the rate asked, on the transaction's real size.
    let fee = h.chain.mempool_fee(&txid).unwrap();
    assert_eq!(fee, close.fee);
    assert!(fee >= RATE.fee_vb(tx.vsize() as u64).unwrap());
    assert!(fee <= RATE.fee_vb(tx.vsize() as u64 + 1).unwrap());
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(!funding_unspent(&h));
    // Each client is paid exactly what it is owed, to its payout script; the LSP the rest.
    let funding_value = h.factory.funding_output().unwrap().value;
    let mut paid = Amount::ZERO;
    for i in 0..8u32 {
        let vout = close.client_outputs[i as usize].expect("above dust");
        let coin = h
            .chain
            .get_utxo(&OutPoint::new(txid, vout))
            .unwrap()
            .unwrap();
        assert_eq!(coin.txout.value, owed(&h, i));
        assert_eq!(
            coin.txout.script_pubkey,
            h.factory.client_payout_script(ClientId(i))
        );
        paid += coin.txout.value;
    }
    let lsp = h
        .chain
        .get_utxo(&OutPoint::new(txid, close.lsp_output.unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(lsp.txout.script_pubkey, lsp_script(&h));
    assert_eq!(paid + lsp.txout.value + fee, funding_value);
    // The tree is void: its root kickoff spends an output that no longer exists.
    let kickoff = h.clients[0]
        .signed()
        .iter()
        .find(|s| s.kind == TxKind::Kickoff(NodeId(0)))
        .unwrap()
        .tx
        .clone();
    assert!(h.chain.submit_transaction(&kickoff).is_err());
}

#[test]
fn a_client_refuses_a_close_that_pays_it_anything_but_its_balance() {
    let h = build(6, FactoryConfig::regtest());
    for delta in [-1i64, 1, -10_000] {
        let mut terms = terms(&h);
        let wrong = owed(&h, 3).to_sat() as i64 + delta;
        terms.clients[3] = Amount::from_sat(wrong as u64);
        let (who, e) = sign_all(&h, &terms, |i| expectation(&h, i)).unwrap_err();
        assert_eq!(who, Signer::Client(ClientId(3)), "{delta}");
        assert_eq!(
            e,
            CloseError::WrongAmount {
                client: ClientId(3),
                expected: owed(&h, 3),
                offered: Amount::from_sat(wrong as u64),
            }
        );
        assert!(e.to_string().contains("client 3"), "{e}");
    }
    // A close moving one client's money to another: the one paid less refuses.
    let mut terms = terms(&h);
    terms.clients[1] -= Amount::from_sat(500);
    terms.clients[2] += Amount::from_sat(500);
    let (who, _) = sign_all(&h, &terms, |i| expectation(&h, i)).unwrap_err();
    assert_eq!(who, Signer::Client(ClientId(1)));
    // Another funding outpoint, too low a fee rate, another factory: refused.
    let key = h.client_keys[0];
    let mut t = self::terms(&h);
    t.funding = OutPoint::new(t.funding.txid, t.funding.vout + 1);
    assert!(matches!(
        CloseSigner::client(&h.factory, key, &t, &expectation(&h, 0), None),
        Err(CloseError::WrongFunding { .. })
    ));
    let mut t = self::terms(&h);
    t.fee_rate = FeeRate::ZERO;
    assert!(matches!(
        CloseSigner::client(&h.factory, key, &t, &expectation(&h, 0), None),
        Err(CloseError::FeeRateTooLow { .. })
    ));
    let mut t = self::terms(&h);
    t.factory.0[0] ^= 1;
    assert!(matches!(
        CloseSigner::client(&h.factory, key, &t, &expectation(&h, 0), None),
        Err(CloseError::WrongFactory { .. })
    ));
    let mut t = self::terms(&h);
    t.clients.pop();
    assert!(matches!(
        h.factory.close_tx(&t),
        Err(CloseError::ClientCount { .. })
    ));
    let mut t = self::terms(&h);
    t.clients[0] = Amount::MAX_MONEY;
    assert!(matches!(
        h.factory.close_tx(&t),
        Err(CloseError::Insufficient { .. })
    ));
    let mut t = self::terms(&h);
    t.lsp_script = ScriptBuf::from_bytes(vec![0x6a]);
    assert_eq!(h.factory.close_tx(&t), Err(CloseError::BadLspScript));
    // Someone else's key cannot sign as client 0.
    let t = self::terms(&h);
    assert!(matches!(
        CloseSigner::client(&h.factory, h.client_keys[1], &t, &expectation(&h, 0), None),
        Err(CloseError::NotAParty(_))
    ));
    // Nothing was spent.
    assert!(funding_unspent(&h));
}

#[test]
fn amounts_below_dust_go_to_the_fee_and_the_close_still_confirms() {
    let h = build(4, FactoryConfig::regtest());
    let mut terms = terms(&h);
    terms.clients[2] = Amount::from_sat(200);
    terms.clients[0] = Amount::ZERO;
    let close = h.factory.close_tx(&terms).unwrap();
    assert_eq!(close.client_outputs[0], None);
    assert_eq!(close.client_outputs[2], None);
    assert_eq!(close.tx.output.len(), 3);
    let tx = sign_all(&h, &terms, |i| ClientExpectation {
        owed: terms.clients[i as usize],
        ..expectation(&h, i)
    })
    .unwrap();
    let txid = h.chain.submit_transaction(&tx).unwrap();
    let fee = h.chain.mempool_fee(&txid).unwrap();
    assert_eq!(fee, close.fee);
    assert!(fee >= RATE.fee_vb(tx.vsize() as u64).unwrap() + Amount::from_sat(200));
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(!funding_unspent(&h));

    // A remainder below the LSP's dust goes to the fee too: the clients take all but a few sat.
    let h = build(2, FactoryConfig::regtest());
    let mut terms = self::terms(&h);
    let funding = h.factory.funding_output().unwrap().value;
    let no_lsp = h.factory.close_tx(&terms).unwrap();
    let fee = no_lsp.fee;
    terms.clients[1] = funding - terms.clients[0] - fee - Amount::from_sat(100);
    let close = h.factory.close_tx(&terms).unwrap();
    assert_eq!(close.lsp_output, None);
    assert_eq!(close.tx.output.len(), 2);
    let tx = sign_all(&h, &terms, |i| ClientExpectation {
        owed: terms.clients[i as usize],
        ..expectation(&h, i)
    })
    .unwrap();
    h.chain.submit_transaction(&tx).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(!funding_unspent(&h));
}

#[test]
fn a_bad_partial_signature_names_its_signer_and_completes_nothing() {
    let h = build(3, FactoryConfig::regtest());
    let terms = terms(&h);
    let mut coordinator = CloseCoordinator::new(&h.factory, &terms).unwrap();
    let (mut lsp, nonce) = CloseSigner::lsp(&h.factory, h.lsp_key, &terms, None).unwrap();
    assert_eq!(coordinator.add_nonce(Signer::Lsp, nonce).unwrap(), None);
    // A second nonce from the LSP, a nonce from nobody, a partial signature too early.
    assert_eq!(
        coordinator.add_nonce(Signer::Lsp, nonce),
        Err(CloseError::Duplicate(Signer::Lsp, "nonce"))
    );
    let stranger = Signer::Client(ClientId(7));
    assert_eq!(
        coordinator.add_nonce(stranger, nonce),
        Err(CloseError::NotAParty(stranger))
    );
    assert!(matches!(
        coordinator.add_partial(Signer::Lsp, PartialSig([1; 32])),
        Err(CloseError::OutOfOrder(_))
    ));
    let mut clients = Vec::new();
    let mut agg = None;
    for i in 0..3u32 {
        let (s, nonce) = CloseSigner::client(
            &h.factory,
            h.client_keys[i as usize],
            &terms,
            &expectation(&h, i),
            None,
        )
        .unwrap();
        clients.push(s);
        agg = coordinator
            .add_nonce(Signer::Client(ClientId(i)), nonce)
            .unwrap();
    }
    let agg = agg.unwrap();
    assert_eq!(coordinator.missing().len(), 4);
    let good_lsp = lsp.sign(&agg).unwrap();
    // The nonce is gone once used.
    assert!(matches!(lsp.sign(&agg), Err(CloseError::OutOfOrder(_))));
    assert_eq!(
        coordinator.add_partial(Signer::Lsp, good_lsp).unwrap(),
        None
    );
    // Client 1 sends client 0's partial signature, then garbage: refused, named, not kept.
    let p0 = clients[0].sign(&agg).unwrap();
    let c1 = Signer::Client(ClientId(1));
    assert_eq!(
        coordinator.add_partial(c1, p0),
        Err(CloseError::BadPartial(c1))
    );
    assert!(matches!(
        coordinator.add_partial(c1, PartialSig([0xff; 32])),
        Err(CloseError::BadPartial(_)) | Err(CloseError::Musig(_, _))
    ));
    assert_eq!(
        coordinator
            .add_partial(Signer::Client(ClientId(0)), p0)
            .unwrap(),
        None
    );
    assert_eq!(coordinator.missing(), vec![c1, Signer::Client(ClientId(2))]);
    let p1 = clients[1].sign(&agg).unwrap();
    assert_eq!(coordinator.add_partial(c1, p1).unwrap(), None);
    let p2 = clients[2].sign(&agg).unwrap();
    let tx = coordinator
        .add_partial(Signer::Client(ClientId(2)), p2)
        .unwrap()
        .unwrap();
    h.chain.submit_transaction(&tx).unwrap();
}

#[test]
fn a_party_that_signed_one_close_signs_no_other() {
    let h = build(3, FactoryConfig::regtest());
    let first = terms(&h);
    let key: Keypair = h.client_keys[0];
    let (signer, _) =
        CloseSigner::client(&h.factory, key, &first, &expectation(&h, 0), None).unwrap();
    let record: CloseRecord = signer.record();
    assert_eq!(
        record.txid,
        h.factory.close_tx(&first).unwrap().tx.compute_txid()
    );
    // The same close again (fresh nonces after a restart): signed.
    assert!(
        CloseSigner::client(&h.factory, key, &first, &expectation(&h, 0), Some(&record)).is_ok()
    );
    // Another close, even one paying this client the same: refused.
    let mut other = first.clone();
    other.fee_rate = FeeRate::from_sat_per_vb_u32(4);
    assert_eq!(
        CloseSigner::client(&h.factory, key, &other, &expectation(&h, 0), Some(&record))
            .unwrap_err(),
        CloseError::AlreadySigned {
            signed: record.txid
        }
    );
    assert!(matches!(
        CloseSigner::lsp(&h.factory, h.lsp_key, &other, Some(&record)),
        Err(CloseError::AlreadySigned { .. })
    ));
    // A close whose partial signatures are not all in cannot be published: the funding stays.
    assert!(funding_unspent(&h));
}
