//! The signing ceremony refuses what it must: wrong, malformed or missing signatures and nonces,
//! naming the signer at fault; a client does not go live on a bad or missing final signature.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, OutPoint, Txid};
use superscalar_core::ceremony::{run_in_process, CeremonyError, ClientCeremony, LspCeremony};
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, Signer,
};

fn keypair(i: u8) -> Keypair {
    Keypair::from_seckey_slice(&Secp256k1::new(), &[i + 1; 32]).unwrap()
}

struct Setup {
    factory: Arc<Factory>,
    lsp: Keypair,
    clients: Vec<Keypair>,
    funding: OutPoint,
}

fn setup(n: u8) -> Setup {
    let lsp = keypair(200);
    let clients: Vec<Keypair> = (0..n).map(keypair).collect();
    let params = FactoryParams {
        id: FactoryId([7; 32]),
        config: FactoryConfig::regtest(),
        lsp_key: PublicKey::new(lsp.public_key()),
        clients: clients
            .iter()
            .map(|k| ClientSpec::new(PublicKey::new(k.public_key()), Amount::from_sat(40_000)))
            .collect(),
        creation_height: 100,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32]));
    Setup {
        factory: Arc::new(Factory::new(params).unwrap()),
        lsp,
        clients,
        funding: OutPoint::new(Txid::from_byte_array([9; 32]), 0),
    }
}

/// LSP and clients through round 2 (partials not yet sent).
fn to_round2(s: &Setup) -> (LspCeremony, Vec<ClientCeremony>) {
    let mut lsp = LspCeremony::new(s.factory.clone(), s.lsp, s.funding).unwrap();
    let mut cs: Vec<ClientCeremony> = s
        .clients
        .iter()
        .enumerate()
        .map(|(i, k)| {
            ClientCeremony::new(s.factory.clone(), ClientId(i as u32), *k, s.funding, 100).unwrap()
        })
        .collect();
    for c in cs.iter_mut() {
        let m = c.round1().unwrap();
        lsp.receive_nonces(c.client(), &m).unwrap();
    }
    (lsp, cs)
}

#[test]
fn whole_ceremony_goes_live() {
    let s = setup(5);
    let (lsp, clients) = run_in_process(&s.factory, s.lsp, &s.clients, s.funding, 100).unwrap();
    assert!(clients.iter().all(|c| c.is_live()));
    assert_eq!(lsp.all_signed().count(), lsp.job_count());
}

#[test]
fn a_wrong_partial_signature_is_refused_and_names_its_signer() {
    let s = setup(5);
    let (mut lsp, mut cs) = to_round2(&s);
    let agg = lsp.agg_nonces_for(ClientId(3)).unwrap();
    let mut partials = cs[3].round2(&agg).unwrap();
    let job = partials.partials[1].0;
    partials.partials[1].1 .0[7] ^= 0x01;
    match lsp.receive_partials(ClientId(3), &partials) {
        Err(CeremonyError::BadPartialSignature { signer, job: j }) => {
            assert_eq!(signer, Signer::Client(ClientId(3)));
            assert_eq!(j, job);
        }
        other => panic!("expected a bad partial signature, got {other:?}"),
    }
    // Garbage bytes (not a scalar) are refused the same way.
    partials.partials[1].1 .0 = [0xff; 32];
    assert!(matches!(
        lsp.receive_partials(ClientId(3), &partials),
        Err(CeremonyError::BadPartialSignature { .. })
    ));
    // Another client's valid partials presented as client 3's: refused.
    let agg1 = lsp.agg_nonces_for(ClientId(1)).unwrap();
    let p1 = cs[1].round2(&agg1).unwrap();
    assert!(lsp.receive_partials(ClientId(3), &p1).is_err());
    // The LSP cannot finalize without every valid partial.
    assert!(matches!(lsp.finalize(), Err(CeremonyError::Incomplete(_))));
}

#[test]
fn nonce_messages_are_checked() {
    let s = setup(4);
    let mut lsp = LspCeremony::new(s.factory.clone(), s.lsp, s.funding).unwrap();
    let mut c0 =
        ClientCeremony::new(s.factory.clone(), ClientId(0), s.clients[0], s.funding, 100).unwrap();
    let m = c0.round1().unwrap();
    // Round 1 runs once.
    assert!(matches!(c0.round1(), Err(CeremonyError::WrongPhase(_))));
    // Wrong factory.
    let mut wrong = m.clone();
    wrong.factory = FactoryId([8; 32]);
    assert!(matches!(
        lsp.receive_nonces(ClientId(0), &wrong),
        Err(CeremonyError::WrongFactory { .. })
    ));
    // Nonces for another client's job set.
    assert!(matches!(
        lsp.receive_nonces(ClientId(3), &m),
        Err(CeremonyError::WrongJobs { .. })
    ));
    // A missing entry.
    let mut short = m.clone();
    short.nonces.pop();
    assert!(matches!(
        lsp.receive_nonces(ClientId(0), &short),
        Err(CeremonyError::WrongJobs { .. })
    ));
    // A malformed nonce names its sender.
    let mut bad = m.clone();
    bad.nonces[0].1 .0 = [0xee; 66];
    assert!(matches!(
        lsp.receive_nonces(ClientId(0), &bad),
        Err(CeremonyError::MalformedNonce {
            signer: Signer::Client(ClientId(0)),
            ..
        })
    ));
    lsp.receive_nonces(ClientId(0), &m).unwrap();
    assert!(matches!(
        lsp.receive_nonces(ClientId(0), &m),
        Err(CeremonyError::Duplicate(_))
    ));
    // Aggregated nonces wait for everyone.
    assert!(matches!(
        lsp.agg_nonces_for(ClientId(0)),
        Err(CeremonyError::Incomplete(3))
    ));
    // A key that is not the client's.
    assert!(matches!(
        ClientCeremony::new(s.factory.clone(), ClientId(1), s.clients[2], s.funding, 100),
        Err(CeremonyError::WrongKey(_))
    ));
    assert!(
        ClientCeremony::new(s.factory.clone(), ClientId(9), s.clients[0], s.funding, 100).is_err()
    );
}

#[test]
fn a_client_refuses_to_go_live_on_a_bad_or_missing_final_signature() {
    let s = setup(4);
    let (mut lsp, mut cs) = to_round2(&s);
    for c in cs.iter_mut() {
        let agg = lsp.agg_nonces_for(c.client()).unwrap();
        let p = c.round2(&agg).unwrap();
        lsp.receive_partials(c.client(), &p).unwrap();
    }
    // Round 2 runs once: the secret nonces are gone.
    let agg = lsp.agg_nonces_for(ClientId(0)).unwrap();
    assert!(matches!(
        cs[0].round2(&agg),
        Err(CeremonyError::WrongPhase(_))
    ));
    lsp.finalize().unwrap();
    let good = lsp.final_sigs_for(ClientId(2)).unwrap();
    // The funding transaction is not released before finalize (checked above by order) and only
    // when it creates the right output.
    let bogus = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![],
        output: vec![],
    };
    assert!(lsp.release_funding(bogus).is_err());
    // A missing signature (a timeout transaction's, the last entry).
    let mut missing = good.clone();
    let gone = missing.signatures.pop().unwrap().0;
    assert_eq!(
        cs[2].finish(&missing).unwrap_err(),
        CeremonyError::BadFinalSignature {
            job: gone,
            problem: "missing"
        }
    );
    assert!(!cs[2].is_live());
    // A signature of another transaction in place of an exit-path one.
    let mut swapped = good.clone();
    swapped.signatures[0].1 = swapped.signatures[1].1;
    assert!(matches!(
        cs[2].finish(&swapped),
        Err(CeremonyError::BadFinalSignature {
            problem: "invalid",
            ..
        })
    ));
    assert!(!cs[2].is_live());
    assert!(cs[2].signed().is_empty());
    // The real ones.
    cs[2].finish(&good).unwrap();
    assert!(cs[2].is_live());
}

#[test]
fn a_lying_lsp_cannot_make_a_client_panic_or_sign_twice() {
    let s = setup(3);
    let (mut lsp, mut cs) = to_round2(&s);
    let mut agg = lsp.agg_nonces_for(ClientId(1)).unwrap();
    // Garbage aggregated nonce bytes: a typed error, and the secret nonces are gone.
    agg.nonces[0].1 .0 = [0xab; 66];
    assert!(cs[1].round2(&agg).is_err());
    let good = lsp.agg_nonces_for(ClientId(1)).unwrap();
    assert!(matches!(
        cs[1].round2(&good),
        Err(CeremonyError::WrongPhase(_))
    ));
    // Aggregated nonces for another client's transactions: refused before signing anything.
    let other = lsp.agg_nonces_for(ClientId(0)).unwrap();
    assert!(matches!(
        cs[2].round2(&other),
        Err(CeremonyError::WrongJobs { .. })
    ));
    // The honest path still works for that client.
    let mine = lsp.agg_nonces_for(ClientId(2)).unwrap();
    assert!(cs[2].round2(&mine).is_ok());
}

#[test]
fn tiny_and_huge_amounts() {
    use superscalar_core::shape::ShapeError;
    use superscalar_core::FactoryError;
    let lsp = keypair(200);
    let clients: Vec<Keypair> = (0..3).map(keypair).collect();
    let make = |cap: Amount| {
        Factory::new(
            FactoryParams {
                id: FactoryId([7; 32]),
                config: FactoryConfig::regtest(),
                lsp_key: PublicKey::new(lsp.public_key()),
                clients: clients
                    .iter()
                    .map(|k| ClientSpec::new(PublicKey::new(k.public_key()), cap))
                    .collect(),
                creation_height: 100,
                stock_hashes: Vec::new(),
                opening_msat: Vec::new(),
            }
            .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32])),
        )
    };
    // The dust limit itself works end to end (signing included).
    let f = Arc::new(make(Amount::from_sat(330)).unwrap());
    let funding = OutPoint::new(Txid::from_byte_array([9; 32]), 0);
    run_in_process(&f, lsp, &clients, funding, 100).unwrap();
    assert!(matches!(
        make(Amount::from_sat(329)),
        Err(FactoryError::Shape(ShapeError::Amount(_)))
    ));
    // More than exists: a typed error, no overflow panic.
    assert!(matches!(
        make(Amount::MAX_MONEY),
        Err(FactoryError::Shape(ShapeError::Amount(_)))
    ));
    assert!(matches!(
        make(Amount::MAX),
        Err(FactoryError::Shape(ShapeError::Amount(_)))
    ));
    assert!(make(Amount::from_btc(1_000.0).unwrap()).is_ok());
}

#[test]
fn crafted_nonce_messages_are_refused_by_the_decoder_without_panicking() {
    let s = setup(3);
    let mut lsp = LspCeremony::new(s.factory.clone(), s.lsp, s.funding).unwrap();
    let mut c =
        ClientCeremony::new(s.factory.clone(), ClientId(0), s.clients[0], s.funding, 100).unwrap();
    let msg = serde_json::to_string(&c.round1().unwrap()).unwrap();
    let hex_nonce = {
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        v["nonces"][0][1].as_str().unwrap().to_string()
    };
    assert_eq!(hex_nonce.len(), 132);
    // Same byte length, multi-byte characters across the 2-character boundaries the old decoder
    // sliced at; a plus sign that `from_str_radix` would take; wrong lengths; not a string.
    let crafted = [
        "\u{e9}".repeat(66),
        format!("a\u{e9}{}", &hex_nonce[3..]),
        format!("+{}", &hex_nonce[1..]),
        hex_nonce[..130].to_string(),
        format!("{hex_nonce}00"),
    ];
    for bad in &crafted {
        let json = msg.replacen(&hex_nonce, bad, 1);
        assert!(serde_json::from_str::<superscalar_core::ceremony::NonceMsg>(&json).is_err());
        assert!(serde_json::from_str::<superscalar_core::ceremony::AggNonceMsg>(&json).is_err());
    }
    let not_a_string = msg.replacen(&format!("\"{hex_nonce}\""), "[1,2,3]", 1);
    assert!(serde_json::from_str::<superscalar_core::ceremony::NonceMsg>(&not_a_string).is_err());
    // Nothing reached the LSP; the real message still goes through.
    let real: superscalar_core::ceremony::NonceMsg = serde_json::from_str(&msg).unwrap();
    lsp.receive_nonces(ClientId(0), &real).unwrap();
}
