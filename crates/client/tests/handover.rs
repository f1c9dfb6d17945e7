//! Key handover (`superscalar_core::handover`) on the embedded chain: each client of a dying
//! factory is paid what it holds there by a contract whose claim reveals its old factory key;
//! once every client has handed over, the LSP alone signs the old factory's key path. Atomic both
//! ways: the client cannot take the money without revealing the key, and the LSP cannot learn the
//! key without paying.

mod common;

use bitcoin::key::{Keypair, Secp256k1};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction};
use common::*;
use superscalar_chain::{Chain, RejectReason};
use superscalar_core::close::{CloseCoordinator, CloseSigner, CloseTerms};
use superscalar_core::handover::{
    HandoverContract, HandoverError, HandoverExpectation, HandoverOffer, MIN_CLAIM_WINDOW,
};
use superscalar_core::{ClientId, FactoryConfig, Signer};
use superscalar_wallet::burn_script;

const RATE: FeeRate = FeeRate::from_sat_per_vb_u32(2);

fn p2tr(k: &Keypair) -> ScriptBuf {
    ScriptBuf::new_p2tr(
        &Secp256k1::verification_only(),
        k.x_only_public_key().0,
        None,
    )
}

/// Client i's key in the new factory.
fn new_key(i: u32) -> Keypair {
    keypair(0x0300_0000 + i)
}

/// What client i holds in the old factory in these tests.
fn owed(h: &Harness, i: u32) -> Amount {
    h.factory
        .client_close_amount(&[capacity(i).to_sat() * 1000 / 4])
}

/// The LSP locks client i's amount in a contract on chain and makes its offer.
fn offer(h: &mut Harness, i: u32, refund_in: u32) -> (HandoverOffer, HandoverExpectation) {
    let tip = h.chain.tip().unwrap().height;
    let contract = HandoverContract {
        lsp: h.lsp_key.x_only_public_key().0,
        client: new_key(i).x_only_public_key().0,
        refund_height: tip + refund_in,
        value: owed(h, i),
    };
    h.lsp_wallet.sync(&h.chain).unwrap();
    let tx = h
        .lsp_wallet
        .build_payment(&contract.script_pubkey(), contract.value, RATE)
        .unwrap();
    let vout = tx
        .output
        .iter()
        .position(|o| *o == contract.output())
        .unwrap() as u32;
    h.chain.submit_transaction(&tx).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let outpoint = OutPoint::new(tx.compute_txid(), vout);
    let old_key = h.factory.params().clients[i as usize].key;
    let offer = HandoverOffer::new(
        contract,
        outpoint,
        p2tr(&new_key(i)),
        RATE,
        &h.lsp_key,
        old_key,
    )
    .unwrap();
    let expectation = HandoverExpectation {
        lsp: h.lsp_key.x_only_public_key().0,
        client: new_key(i).x_only_public_key().0,
        old_key,
        owed: owed(h, i),
        payout: p2tr(&new_key(i)),
        outpoint,
        max_fee_rate: FeeRate::from_sat_per_vb_u32(5),
        tip: h.chain.tip().unwrap().height,
    };
    (offer, expectation)
}

#[test]
fn every_client_hands_over_and_the_lsp_alone_closes_the_old_factory() {
    let mut h = build(3, FactoryConfig::regtest());
    let mut recovered = Vec::new();
    for i in 0..3u32 {
        let (offer, expected) = offer(&mut h, i, 100);
        offer.verify(&expected).unwrap();
        let claim = offer
            .complete(&h.client_keys[i as usize].secret_key(), &new_key(i))
            .unwrap();
        // Before the claim is seen, the LSP has nothing to read the key from.
        assert_eq!(offer.recover_key(&offer.claim), None);
        let txid = h.chain.submit_transaction(&claim).unwrap();
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        // The transaction that reveals the key pays the client what it held, less the fee.
        let paid = h.chain.get_utxo(&OutPoint::new(txid, 0)).unwrap().unwrap();
        assert_eq!(paid.txout.script_pubkey, p2tr(&new_key(i)));
        assert!(paid.txout.value >= owed(&h, i) - RATE.fee_vb(claim.vsize() as u64 + 1).unwrap());
        // The LSP reads the key out of the confirmed claim.
        let confirmed = confirmed_tx(&h, txid);
        assert!(offer.lsp_signature(&confirmed).is_some());
        let key = offer
            .recover_key(&confirmed)
            .expect("the claim reveals the key");
        assert_eq!(key, h.client_keys[i as usize].secret_key());
        recovered.push(Keypair::from_secret_key(&Secp256k1::new(), &key));
    }
    // With every client's old key, the LSP signs the funding output's key path alone.
    let terms = CloseTerms {
        factory: h.factory.params().id,
        funding: h.funding,
        clients: vec![Amount::ZERO; 3],
        lsp_script: p2tr(&h.lsp_key),
        fee_rate: RATE,
        successor: None,
    };
    let mut coordinator = CloseCoordinator::new(&h.factory, &terms).unwrap();
    let (mut lsp, nonce) = CloseSigner::lsp(&h.factory, h.lsp_key, &terms, None).unwrap();
    coordinator.add_nonce(Signer::Lsp, nonce).unwrap();
    let mut signers = Vec::new();
    let mut agg = None;
    for (i, key) in recovered.iter().enumerate() {
        let who = Signer::Client(ClientId(i as u32));
        let expected = superscalar_core::close::ClientExpectation {
            client: ClientId(i as u32),
            funding: h.funding,
            owed: Amount::ZERO,
            min_fee_rate: RATE,
            successor: None,
        };
        let (s, n) = CloseSigner::client(&h.factory, *key, &terms, &expected, None).unwrap();
        agg = coordinator.add_nonce(who, n).unwrap();
        signers.push((who, s));
    }
    let agg = agg.unwrap();
    coordinator
        .add_partial(Signer::Lsp, lsp.sign(&agg).unwrap())
        .unwrap();
    let mut tx = None;
    for (who, s) in &mut signers {
        tx = coordinator
            .add_partial(*who, s.sign(&agg).unwrap())
            .unwrap();
    }
    let tx = tx.unwrap();
    h.chain.submit_transaction(&tx).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(h.chain.get_utxo(&h.funding).unwrap().is_none());
}

#[test]
fn the_client_cannot_take_the_money_without_revealing_its_key() {
    let mut h = build(2, FactoryConfig::regtest());
    let (offer, expected) = offer(&mut h, 0, 100);
    offer.verify(&expected).unwrap();
    // Another secret (its other client's old key, its new key) does not decrypt the LSP's
    // signature: the chain refuses the claim.
    for wrong in [h.client_keys[1].secret_key(), new_key(0).secret_key()] {
        assert_eq!(
            offer.complete(&wrong, &new_key(0)).unwrap_err(),
            HandoverError::WrongKey
        );
        let forged = offer.complete_with(&wrong, &new_key(0)).unwrap();
        let err = h.chain.submit_transaction(&forged).unwrap_err();
        assert!(
            matches!(
                err.reject_reason(),
                Some(RejectReason::ScriptInvalid { .. })
            ),
            "{err}"
        );
    }
    // A changed claim (less fee, another payout) has another sighash: the decrypted signature
    // does not sign it.
    let good = offer
        .complete(&h.client_keys[0].secret_key(), &new_key(0))
        .unwrap();
    for edit in [
        &(|t: &mut Transaction| t.output[0].value += Amount::from_sat(100))
            as &dyn Fn(&mut Transaction),
        &|t: &mut Transaction| t.output[0].script_pubkey = p2tr(&new_key(9)),
    ] {
        let mut changed = good.clone();
        edit(&mut changed);
        let err = h.chain.submit_transaction(&changed).unwrap_err();
        assert!(
            matches!(
                err.reject_reason(),
                Some(RejectReason::ScriptInvalid { .. })
            ),
            "{err}"
        );
    }
    // The client cannot use the refund (the LSP's key alone signs it).
    let refund = offer
        .contract
        .refund_tx(
            expected.outpoint,
            p2tr(&new_key(0)),
            Amount::from_sat(500),
            &new_key(0),
        )
        .unwrap();
    assert!(h.chain.submit_transaction(&refund).is_err());
    // The one claim that works reveals the key.
    let txid = h.chain.submit_transaction(&good).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        offer.recover_key(&confirmed_tx(&h, txid)),
        Some(h.client_keys[0].secret_key())
    );
}

#[test]
fn the_lsp_cannot_learn_the_key_without_paying() {
    let mut h = build(2, FactoryConfig::regtest());
    let refund_in = MIN_CLAIM_WINDOW + 10;
    let (offer, expected) = offer(&mut h, 1, refund_in);
    offer.verify(&expected).unwrap();
    let refund_to = p2tr(&h.lsp_key);
    let refund = offer
        .contract
        .refund_tx(
            expected.outpoint,
            refund_to,
            Amount::from_sat(500),
            &h.lsp_key,
        )
        .unwrap();
    // While the client may claim, the LSP cannot take the contract back.
    let err = h.chain.submit_transaction(&refund).unwrap_err();
    assert!(
        matches!(err.reject_reason(), Some(RejectReason::NonFinal { .. })),
        "{err}"
    );
    // A signature of its own on the claim (or the refund) tells the LSP nothing.
    let mut own = offer.claim.clone();
    let fake = offer
        .complete_with(&h.client_keys[0].secret_key(), &new_key(1))
        .unwrap();
    own.input[0].witness = fake.input[0].witness.clone();
    assert_eq!(offer.recover_key(&own), None);
    assert_eq!(offer.recover_key(&refund), None);
    // A client that never claims loses the contract, not its key: after the refund height the
    // LSP takes its money back, and the refund reveals nothing.
    let tip = h.chain.tip().unwrap().height;
    h.chain
        .mine_blocks(offer.contract.refund_height - tip, &burn_script())
        .unwrap();
    let txid = h.chain.submit_transaction(&refund).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(offer.recover_key(&confirmed_tx(&h, txid)), None);
}

#[test]
fn a_client_refuses_an_offer_that_is_not_what_it_expects() {
    let mut h = build(2, FactoryConfig::regtest());
    let (good, expected) = offer(&mut h, 0, 100);
    good.verify(&expected).unwrap();
    let refuse = |o: &HandoverOffer, e: &HandoverExpectation| o.verify(e).unwrap_err();
    // Less than it holds.
    let mut e = expected.clone();
    e.owed += Amount::from_sat(1);
    assert!(matches!(
        refuse(&good, &e),
        HandoverError::WrongAmount { .. }
    ));
    // Encrypted under another key than its old factory key: the signature would reveal
    // something else, or nothing.
    let other = HandoverOffer::new(
        good.contract.clone(),
        expected.outpoint,
        expected.payout.clone(),
        RATE,
        &h.lsp_key,
        h.factory.params().clients[1].key,
    )
    .unwrap();
    assert_eq!(refuse(&other, &expected), HandoverError::WrongKey);
    let mut relabelled = other.clone();
    relabelled.old_key = expected.old_key;
    assert_eq!(refuse(&relabelled, &expected), HandoverError::BadAdaptor);
    // A tampered encrypted signature; a claim to another payout; a fee above its limit.
    let mut tampered = good.clone();
    tampered.encrypted[40] ^= 1;
    assert!(matches!(
        refuse(&tampered, &expected),
        HandoverError::BadAdaptor | HandoverError::Malformed(_)
    ));
    let mut e = expected.clone();
    e.payout = p2tr(&new_key(7));
    assert!(matches!(refuse(&good, &e), HandoverError::BadClaim(_)));
    let greedy = HandoverOffer::new(
        good.contract.clone(),
        expected.outpoint,
        expected.payout.clone(),
        FeeRate::from_sat_per_vb_u32(50),
        &h.lsp_key,
        expected.old_key,
    )
    .unwrap();
    assert!(matches!(
        refuse(&greedy, &expected),
        HandoverError::WrongAmount { .. }
    ));
    // A refund height that leaves it too little time to claim.
    let mut e = expected.clone();
    e.tip = good.contract.refund_height - MIN_CLAIM_WINDOW + 1;
    assert!(matches!(
        refuse(&good, &e),
        HandoverError::RefundTooSoon { .. }
    ));
    // Another client key, another LSP key, another contract outpoint.
    let mut e = expected.clone();
    e.client = new_key(5).x_only_public_key().0;
    assert!(matches!(refuse(&good, &e), HandoverError::WrongContract(_)));
    let mut e = expected.clone();
    e.lsp = new_key(5).x_only_public_key().0;
    assert!(matches!(refuse(&good, &e), HandoverError::WrongContract(_)));
    let mut e = expected.clone();
    e.outpoint.vout ^= 1;
    assert!(matches!(refuse(&good, &e), HandoverError::BadClaim(_)));
}
