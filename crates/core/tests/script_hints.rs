//! Script hints: each client, on its own copy of the factory, takes the scripts of the outputs
//! beside its path from the LSP and aggregates only its own path's keys. Hostile hints (a wrong
//! script, a missing or an extra one) give a typed error or a failed ceremony, never a panic and
//! never a final signature the client accepts.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use superscalar_core::ceremony::{
    CeremonyError, ClientCeremony, LspCeremony, NonceMsg, PartialSigMsg,
};
use superscalar_core::factory::{HintProblem, ScriptHints};
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryError, FactoryId, FactoryParams, NodeId,
    Signer, Slot,
};

const TIP: u32 = 100;

fn keypair(i: u32) -> Keypair {
    let mut sk = [0x21u8; 32];
    sk[..4].copy_from_slice(&(i + 1).to_be_bytes());
    Keypair::from_seckey_slice(&Secp256k1::new(), &sk).unwrap()
}

struct Setup {
    params: FactoryParams,
    lsp_key: Keypair,
    keys: Vec<Keypair>,
    funding: OutPoint,
}

fn setup(n: u32) -> Setup {
    let lsp_key = keypair(9_999);
    let keys: Vec<Keypair> = (0..n).map(keypair).collect();
    let params = FactoryParams {
        id: FactoryId([0x44; 32]),
        config: FactoryConfig::regtest(),
        lsp_key: PublicKey::new(lsp_key.public_key()),
        clients: keys
            .iter()
            .map(|k| ClientSpec::new(PublicKey::new(k.public_key()), Amount::from_sat(60_000)))
            .collect(),
        creation_height: TIP,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32]));
    Setup {
        params,
        lsp_key,
        keys,
        funding: OutPoint::new(Txid::from_byte_array([3; 32]), 1),
    }
}

/// A client's own copy of the factory, with `hints`.
fn client_factory(s: &Setup, c: u32, hints: ScriptHints) -> Result<Arc<Factory>, FactoryError> {
    Ok(Arc::new(
        Factory::new(s.params.clone())?.with_script_hints(ClientId(c), hints)?,
    ))
}

fn client(s: &Setup, c: u32, hints: ScriptHints) -> (Arc<Factory>, ClientCeremony) {
    let f = client_factory(s, c, hints).unwrap();
    let cc = ClientCeremony::new(
        Arc::clone(&f),
        ClientId(c),
        s.keys[c as usize],
        s.funding,
        TIP,
    )
    .unwrap();
    (f, cc)
}

fn lsp(s: &Setup) -> LspCeremony {
    let f = Arc::new(Factory::new(s.params.clone()).unwrap());
    LspCeremony::new(f, s.lsp_key, s.funding).unwrap()
}

/// Round 1 for everyone, batched.
fn nonces(lsp: &mut LspCeremony, clients: &mut [(Arc<Factory>, ClientCeremony)]) {
    let msgs: Vec<(ClientId, NonceMsg)> = clients
        .iter_mut()
        .map(|(_, c)| (c.client(), c.round1().unwrap()))
        .collect();
    let refs: Vec<(ClientId, &NonceMsg)> = msgs.iter().map(|(c, m)| (*c, m)).collect();
    lsp.receive_all_nonces(&refs).unwrap();
}

/// Round 2 for everyone: the clients' partial signatures.
fn partials(
    lsp: &mut LspCeremony,
    clients: &mut [(Arc<Factory>, ClientCeremony)],
) -> Vec<(ClientId, PartialSigMsg)> {
    clients
        .iter_mut()
        .map(|(_, c)| {
            let agg = lsp.agg_nonces_for(c.client()).unwrap();
            (c.client(), c.round2(&agg).unwrap())
        })
        .collect()
}

fn refs(msgs: &[(ClientId, PartialSigMsg)]) -> Vec<(ClientId, &PartialSigMsg)> {
    msgs.iter().map(|(c, m)| (*c, m)).collect()
}

#[test]
fn clients_with_hints_go_live_aggregating_only_their_own_path() {
    let s = setup(40);
    let mut lsp = lsp(&s);
    let mut clients: Vec<(Arc<Factory>, ClientCeremony)> = (0..40)
        .map(|c| client(&s, c, lsp.script_hints_for(ClientId(c)).unwrap()))
        .collect();
    nonces(&mut lsp, &mut clients);
    let msgs = partials(&mut lsp, &mut clients);
    lsp.receive_all_partials(&refs(&msgs)).unwrap();
    lsp.finalize().unwrap();
    let unhinted = Factory::new(s.params.clone()).unwrap();
    for (f, c) in clients.iter_mut() {
        let sigs = lsp.final_sigs_for(c.client()).unwrap();
        c.finish(&sigs).unwrap();
        // The client signed exactly the LSP's transactions.
        for signed in c.signed() {
            assert_eq!(lsp.signed(signed.kind), Some(signed));
        }
        // Its own path's keys (the LSP's among each), its channel and its stock: nothing else.
        let tree = f.tree();
        let path: u64 = tree
            .path_of(c.client())
            .iter()
            .map(|n| 1 + tree.node(*n).clients.len() as u64)
            .sum();
        let stock = f
            .stock_of(c.client())
            .map_or(0, |st| 1 + f.stocks()[st as usize].clients.len() as u64);
        assert_eq!(f.keys_aggregated(), path + 2 + stock, "{:?}", c.client());
    }
    // Without hints a client aggregates every sibling's keys as well.
    let unhinted = Arc::new(unhinted);
    ClientCeremony::new(
        Arc::clone(&unhinted),
        ClientId(0),
        s.keys[0],
        s.funding,
        TIP,
    )
    .unwrap();
    let hinted = clients[0].0.keys_aggregated();
    assert!(
        2 * unhinted.keys_aggregated() > 3 * hinted,
        "{} keys without hints, {hinted} with",
        unhinted.keys_aggregated()
    );
}

#[test]
fn a_wrong_script_beside_the_path_fails_the_ceremony_and_no_final_signature_is_accepted() {
    let s = setup(16);
    let mut lsp = lsp(&s);
    // Client 5 is told a wrong script for a sibling of a node on its path (another output's
    // genuine script: a valid P2TR, only not this one).
    let mut lie = lsp.script_hints_for(ClientId(5)).unwrap();
    let slot = lie.scripts[0].0;
    assert!(matches!(slot, Slot::NodeInput(_)));
    lie.scripts[0].1 = lie.scripts[1].1.clone();
    // The first transaction of its path that creates that output.
    let f = Factory::new(s.params.clone()).unwrap();
    let first = f.creator_of(slot, &f.initial_version()).unwrap();
    let mut clients: Vec<(Arc<Factory>, ClientCeremony)> = (0..16)
        .map(|c| {
            let hints = if c == 5 {
                lie.clone()
            } else {
                lsp.script_hints_for(ClientId(c)).unwrap()
            };
            client(&s, c, hints)
        })
        .collect();
    // It signs transactions nobody else builds: the LSP refuses its partial signatures and names
    // it (at the first transaction of its path), and cannot finalize.
    nonces(&mut lsp, &mut clients);
    let msgs = partials(&mut lsp, &mut clients);
    assert_eq!(
        lsp.receive_all_partials(&refs(&msgs)).unwrap_err(),
        CeremonyError::BadPartialSignature {
            signer: Signer::Client(ClientId(5)),
            job: first,
        }
    );
    assert_eq!(lsp.missing_partials(), vec![ClientId(5)]);
    assert!(matches!(lsp.finalize(), Err(CeremonyError::Incomplete(1))));
    // Valid final signatures of the true tree (from an honest ceremony) do not verify over the
    // transactions the fooled client built: it does not go live.
    let f = Arc::new(Factory::new(s.params.clone()).unwrap());
    let (honest, _) =
        superscalar_core::ceremony::run_in_process(&f, s.lsp_key, &s.keys, s.funding, TIP).unwrap();
    let sigs = honest.final_sigs_for(ClientId(5)).unwrap();
    let fooled = &mut clients[5].1;
    assert_eq!(
        fooled.finish(&sigs).unwrap_err(),
        CeremonyError::BadFinalSignature {
            job: first,
            problem: "invalid"
        }
    );
    assert!(!fooled.is_live());
    assert!(fooled.signed().is_empty());
    // The transaction it built is not the true one.
    assert_ne!(honest.txid(first), fooled.txid(first));
}

#[test]
fn missing_extra_duplicate_and_non_taproot_hints_are_refused() {
    let s = setup(16);
    let lsp = lsp(&s);
    let good = lsp.script_hints_for(ClientId(3)).unwrap();
    let refused = |hints: ScriptHints| match client_factory(&s, 3, hints) {
        Err(FactoryError::ScriptHints(p)) => p,
        other => panic!("expected refused hints, got {other:?}"),
    };
    let mut missing = good.clone();
    let (gone, _) = missing.scripts.pop().unwrap();
    assert_eq!(refused(missing), HintProblem::Missing(gone));
    assert_eq!(
        refused(ScriptHints::default()),
        HintProblem::Missing(good.scripts[0].0)
    );
    // A script for the funding output, which the client must compute itself.
    let mut extra = good.clone();
    extra
        .scripts
        .push((Slot::NodeInput(NodeId(0)), good.scripts[0].1.clone()));
    assert_eq!(
        refused(extra),
        HintProblem::Unexpected(Slot::NodeInput(NodeId(0)))
    );
    // Its own channel.
    let mut own = good.clone();
    own.scripts
        .push((Slot::Channel(ClientId(3)), good.scripts[0].1.clone()));
    assert_eq!(
        refused(own),
        HintProblem::Unexpected(Slot::Channel(ClientId(3)))
    );
    let mut twice = good.clone();
    twice.scripts.push(good.scripts[1].clone());
    assert_eq!(refused(twice), HintProblem::Duplicate(good.scripts[1].0));
    let mut not_p2tr = good.clone();
    not_p2tr.scripts[2].1 = ScriptBuf::new_op_return(b"not a key");
    assert_eq!(
        refused(not_p2tr),
        HintProblem::NotTaproot(good.scripts[2].0)
    );
    // Hints of another client.
    let other = lsp.script_hints_for(ClientId(12)).unwrap();
    assert!(matches!(refused(other), HintProblem::Unexpected(_)));
    // An unknown client.
    assert!(matches!(
        Factory::new(s.params.clone())
            .unwrap()
            .with_script_hints(ClientId(16), good.clone()),
        Err(FactoryError::UnknownClient(_))
    ));
    assert!(client_factory(&s, 3, good).is_ok());
}

#[test]
fn a_batch_with_a_cheating_client_names_it_and_takes_the_others() {
    let s = setup(12);
    let mut lsp = lsp(&s);
    let mut clients: Vec<(Arc<Factory>, ClientCeremony)> = (0..12)
        .map(|c| client(&s, c, lsp.script_hints_for(ClientId(c)).unwrap()))
        .collect();
    nonces(&mut lsp, &mut clients);
    let mut msgs = partials(&mut lsp, &mut clients);
    let good7 = msgs[7].1.clone();
    let job = msgs[7].1.partials[4].0;
    msgs[7].1.partials[4].1 .0[3] ^= 0x40;
    // Client 9's message twice in one batch: the second is a duplicate.
    msgs.push(msgs[9].clone());
    assert_eq!(
        lsp.receive_all_partials(&refs(&msgs)).unwrap_err(),
        CeremonyError::BadPartialSignature {
            signer: Signer::Client(ClientId(7)),
            job
        }
    );
    assert_eq!(lsp.missing_partials(), vec![ClientId(7)]);
    assert!(matches!(lsp.finalize(), Err(CeremonyError::Incomplete(1))));
    lsp.receive_partials(ClientId(7), &good7).unwrap();
    lsp.finalize().unwrap();
    for (_, c) in clients.iter_mut() {
        c.finish(&lsp.final_sigs_for(c.client()).unwrap()).unwrap();
    }
}

#[test]
fn with_split_timeouts_clients_still_aggregate_only_their_own_path() {
    // Above about 230 clients the root's timeouts are split into parts along the tree: the parts
    // holding other clients' money are hinted like the nodes beside the path.
    let n = 300;
    let s = setup(n);
    let mut lsp = lsp(&s);
    assert!(lsp
        .script_hints_for(ClientId(0))
        .unwrap()
        .scripts
        .iter()
        .any(|(slot, _)| matches!(slot, Slot::TimeoutPart { .. })));
    let mut clients: Vec<(Arc<Factory>, ClientCeremony)> = (0..n)
        .map(|c| client(&s, c, lsp.script_hints_for(ClientId(c)).unwrap()))
        .collect();
    nonces(&mut lsp, &mut clients);
    let msgs = partials(&mut lsp, &mut clients);
    lsp.receive_all_partials(&refs(&msgs)).unwrap();
    lsp.finalize().unwrap();
    for (f, c) in clients.iter_mut() {
        let sigs = lsp.final_sigs_for(c.client()).unwrap();
        c.finish(&sigs).unwrap();
        for signed in c.signed() {
            assert_eq!(lsp.signed(signed.kind), Some(signed));
        }
        let tree = f.tree();
        let path: u64 = tree
            .path_of(c.client())
            .iter()
            .map(|n| 1 + tree.node(*n).clients.len() as u64)
            .sum();
        let stock = f
            .stock_of(c.client())
            .map_or(0, |st| 1 + f.stocks()[st as usize].clients.len() as u64);
        assert_eq!(f.keys_aggregated(), path + 2 + stock, "{:?}", c.client());
    }
}
