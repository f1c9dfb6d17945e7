//! Decker-Wattenhofer advances on the embedded chain: after several advances (with a rollover),
//! whoever publishes an old state loses the race to the newest one, which its counterparty's
//! watcher publishes; refusals of bad proposals change nothing.

mod common;

use common::*;
use superscalar_chain::{Chain, ChainError, TxStatus};
use superscalar_client::{ExitError, UnilateralExit};
use superscalar_core::advance::AdvanceError;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, StateIndex, TxKind};
use superscalar_wallet::burn_script;

#[test]
fn an_old_state_published_by_the_lsp_loses_to_the_clients_newest() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    // Five advances of client 0's leaf: the leaf layer has 4 states, so the fifth rolls over into
    // the root layer.
    for _ in 0..5 {
        advance(&h, &mut s, 0);
    }
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    assert_eq!(
        s.clients[0].odometer().path_digits(h.factory.tree(), leaf),
        vec![StateIndex(1), StateIndex(1)]
    );
    // The LSP starts an exit with the original (superseded) states: root kickoff first.
    let old_root_state = h
        .lsp
        .signed(TxKind::State(superscalar_core::NodeId(0)))
        .unwrap()
        .tx
        .clone();
    let new_root_state = s.clients[0]
        .latest(TxKind::State(superscalar_core::NodeId(0)))
        .unwrap()
        .tx
        .clone();
    assert!(
        new_root_state.input[0].sequence.0 < old_root_state.input[0].sequence.0,
        "newer = shorter delay"
    );
    let kickoff = h
        .lsp
        .signed(TxKind::Kickoff(superscalar_core::NodeId(0)))
        .unwrap()
        .tx
        .clone();
    h.chain.submit_transaction(&kickoff).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    // Client 0's watcher: its newest path, published as each delay passes.
    let mut watcher = UnilateralExit::new(&s.clients[0].exit_path(ClientId(0))).unwrap();
    let old_delay = old_root_state.input[0].sequence.0 & 0xffff;
    let mut mined = 0;
    while mined < old_delay {
        watcher.step(&h.chain, None).unwrap();
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        mined += 1;
    }
    // The newest root state is already confirmed; the old one is refused.
    assert!(
        h.chain
            .tx_status(&new_root_state.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    let err = h.chain.submit_transaction(&old_root_state).unwrap_err();
    assert!(matches!(err, ChainError::Rejected { .. }), "{err}");
    finish(&h, &mut watcher);
    // The client's channel output is confirmed with its capacity.
    let leaf_state = s.clients[0].latest(TxKind::State(leaf)).unwrap();
    let vout = h
        .factory
        .outputs_of(TxKind::State(leaf), s.clients[0].version())
        .iter()
        .position(|x| *x == Slot::Channel(ClientId(0)))
        .unwrap() as u32;
    let coin = h
        .chain
        .get_utxo(&bitcoin::OutPoint::new(leaf_state.tx.compute_txid(), vout))
        .unwrap()
        .unwrap();
    assert_eq!(coin.txout.value, capacity(0));
}

#[test]
fn an_old_state_published_by_a_client_loses_to_the_lsps_watcher() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    for _ in 0..2 {
        advance(&h, &mut s, 1);
    }
    // Client 1 publishes its original path; the LSP's watcher publishes the newest leaf state.
    let mut cheat = UnilateralExit::new(h.clients[1].signed()).unwrap();
    let mut watcher = UnilateralExit::new(&s.lsp.exit_path(ClientId(1))).unwrap();
    let leaf = h.factory.tree().leaf_of(ClientId(1)).unwrap();
    let newest = s.lsp.latest(TxKind::State(leaf)).unwrap().tx.compute_txid();
    let old = h.clients[1]
        .signed()
        .iter()
        .find(|x| x.kind == TxKind::State(leaf))
        .unwrap()
        .tx
        .compute_txid();
    let mut cheater_lost = false;
    for _ in 0..100 {
        match cheat.step(&h.chain, None) {
            Err(ExitError::Conflicted(kind)) => {
                assert_eq!(kind, TxKind::State(leaf));
                cheater_lost = true;
            }
            Err(e) => panic!("{e}"),
            Ok(_) => {}
        }
        let _ = watcher.step(&h.chain, None).unwrap();
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&newest).unwrap() != TxStatus::Unknown && cheater_lost {
            break;
        }
    }
    assert!(cheater_lost, "the old leaf state lost");
    assert!(h.chain.tx_status(&newest).unwrap().confirmations() > 0);
    assert_eq!(h.chain.tx_status(&old).unwrap(), TxStatus::Unknown);
}

#[test]
fn bad_proposals_are_refused_and_change_nothing() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (proposal, _lsp) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
    // Signed by the wrong party.
    let mut forged = proposal.clone();
    forged.signature = bitcoin::secp256k1::Secp256k1::new().sign_schnorr(
        &bitcoin::secp256k1::Message::from_digest([1; 32]),
        &h.client_keys[0],
    );
    assert!(matches!(
        s.clients[0].accept(&forged, ClientId(0), h.client_keys[0], tip(&h)),
        Err(AdvanceError::WrongParty)
    ));
    // Money created: a stock amount changed (and re-signed by the LSP so the signature is valid
    // is impossible without the key; here the client recomputes and refuses).
    let before = s.clients[0].odometer().clone();
    let mut greedy = proposal.clone();
    greedy.stocks_after[0].1 += bitcoin::Amount::from_sat(1);
    assert!(s.clients[0]
        .accept(&greedy, ClientId(0), h.client_keys[0], tip(&h))
        .is_err());
    assert_eq!(s.clients[0].odometer(), &before);
    // Not involved.
    let other_leaf_client = 3;
    if !h
        .factory
        .tree()
        .node(leaf)
        .clients
        .contains(&other_leaf_client)
    {
        assert!(matches!(
            s.clients[3].accept(&proposal, ClientId(3), h.client_keys[3], tip(&h)),
            Err(AdvanceError::NotInvolved(_))
        ));
    }
    // A second advance while the first is unfinished: refused by the LSP and by the client.
    assert!(matches!(
        s.lsp.propose(leaf, &h.lsp_key),
        Err(AdvanceError::Busy)
    ));
    let _c = s.clients[0]
        .accept(&proposal, ClientId(0), h.client_keys[0], tip(&h))
        .unwrap();
    assert!(matches!(
        s.clients[0].accept(&proposal, ClientId(0), h.client_keys[0], tip(&h)),
        Err(AdvanceError::Busy)
    ));
    // Once finished elsewhere, replaying the old proposal is refused as stale.
    s.clients[0].abandon();
    s.lsp.abandon();
    advance(&h, &mut s, 0);
    assert!(matches!(
        s.clients[0].accept(&proposal, ClientId(0), h.client_keys[0], tip(&h)),
        Err(AdvanceError::Stale { .. })
    ));
}

#[test]
fn exits_stay_valid_after_a_rollover_and_exhaustion_asks_for_rotation() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    // 4 states per layer, 2 layers: 16 states in all, 15 advances, then exhaustion.
    let leaf = h.factory.tree().leaf_of(ClientId(3)).unwrap();
    for _ in 0..15 {
        advance(&h, &mut s, 3);
    }
    match s.lsp.propose(leaf, &h.lsp_key) {
        Err(AdvanceError::Odometer(e)) => assert!(e.to_string().contains("rotate"), "{e}"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    // Client 0, in the other leaf, was re-signed by the root rollovers: its newest path exits.
    let mut exit = UnilateralExit::new(&s.clients[0].exit_path(ClientId(0))).unwrap();
    finish(&h, &mut exit);
    // And client 3's newest path too (the kickoffs it shares with client 0 are already on chain).
    let mut exit = UnilateralExit::new(&s.clients[3].exit_path(ClientId(3))).unwrap();
    finish(&h, &mut exit);
    let leaf_state = s.clients[3].latest(TxKind::State(leaf)).unwrap();
    assert!(
        h.chain
            .tx_status(&leaf_state.tx.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    // The newest states have the shortest delays: 0 blocks on both layers.
    assert_eq!(leaf_state.tx.input[0].sequence.0 & 0xffff, 0);
    // Every client's newest exit is valid and ends with its channel on chain at its capacity.
    for c in 0..4u32 {
        let st = &s.clients[c as usize];
        let mut exit = UnilateralExit::new(&st.exit_path(ClientId(c))).unwrap();
        finish(&h, &mut exit);
        let op = st.outpoint(Slot::Channel(ClientId(c))).unwrap();
        assert_eq!(
            h.chain.get_utxo(&op).unwrap().unwrap().txout.value,
            capacity(c)
        );
    }
}

#[test]
fn the_watcher_answers_a_published_kickoff_with_the_newest_state_only() {
    use superscalar_client::watch::{WatchEvent, Watcher};
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    advance(&h, &mut s, 0);
    advance(&h, &mut s, 0);
    let tip = h.chain.tip().unwrap().height;
    let mut watcher = Watcher::new(
        vec![s.clients[0].exit_path(ClientId(0))],
        vec![],
        burn_script(),
        bitcoin::FeeRate::from_sat_per_vb_u32(2),
        tip + 1,
    );
    // The LSP pushes client 0's original path; the watcher only reacts.
    let mut attacker = UnilateralExit::new(h.clients[0].signed()).unwrap();
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let newest = s.clients[0]
        .latest(TxKind::State(leaf))
        .unwrap()
        .tx
        .compute_txid();
    let mut answered = 0;
    for _ in 0..60 {
        let _ = attacker.step(&h.chain, None);
        for e in watcher.poll(&h.chain).unwrap() {
            if matches!(e, WatchEvent::NewestState { .. }) {
                answered += 1;
            }
        }
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&newest).unwrap().confirmations() > 0 {
            break;
        }
    }
    assert!(
        h.chain.tx_status(&newest).unwrap().confirmations() > 0,
        "the newest leaf state won"
    );
    assert!(answered >= 1);
    assert!(matches!(
        attacker.step(&h.chain, None),
        Err(ExitError::Conflicted(_))
    ));
    // Client 2's subtree stays off chain: the watcher of client 0 never publishes its kickoff.
    let other_leaf = h.factory.tree().leaf_of(ClientId(2)).unwrap();
    let other_kickoff = s.clients[2]
        .latest(TxKind::Kickoff(other_leaf))
        .unwrap()
        .tx
        .compute_txid();
    assert_eq!(
        h.chain.tx_status(&other_kickoff).unwrap(),
        TxStatus::Unknown
    );
}

#[test]
fn every_exit_is_valid_right_after_a_rollover() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(1)).unwrap();
    for _ in 0..4 {
        advance(&h, &mut s, 1);
    }
    // The fourth advance rolled the leaf layer over into the root layer.
    assert_eq!(
        s.clients[1].odometer().path_digits(h.factory.tree(), leaf),
        vec![StateIndex(1), StateIndex(0)]
    );
    for c in [2u32, 0, 3, 1] {
        let st = &s.clients[c as usize];
        let mut exit = UnilateralExit::new(&st.exit_path(ClientId(c))).unwrap();
        finish(&h, &mut exit);
        let op = st.outpoint(Slot::Channel(ClientId(c))).unwrap();
        assert_eq!(
            h.chain.get_utxo(&op).unwrap().unwrap().txout.value,
            capacity(c)
        );
    }
}
