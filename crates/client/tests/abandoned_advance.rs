//! An abandoned advance never leaves two different states at one index: once a client has given
//! its partial signatures for a state of a node, the next proposal must move past that index,
//! and the abandoned state (which the LSP can complete alone with the partials it holds) loses on
//! chain to the newest one.

mod common;

use bitcoin::Amount;
use common::*;
use superscalar_chain::{Chain, TxStatus};
use superscalar_client::watch::{WatchEvent, Watcher};
use superscalar_client::UnilateralExit;
use superscalar_core::advance::{AdvanceError, SaleTerms};
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, StateIndex, TxKind};
use superscalar_wallet::burn_script;

#[test]
fn an_abandoned_advance_is_skipped_and_loses_to_the_newest_state() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    // Advance A sells client 0 some liquidity. The clients give their partial signatures; the
    // LSP aggregates A (it now holds A fully signed) but withholds the final signatures.
    let sale = SaleTerms {
        buyer: ClientId(0),
        stock,
        amount: Amount::from_sat(20_000),
    };
    let (lsp_a, ccs) = start_advance(&h, &mut s, 0, Some(sale));
    let (lsp_entry, ccs, _, _) = stage_one_then_entry(&h, &mut s, lsp_a, ccs);
    let state_a = lsp_entry.signed(TxKind::State(leaf)).unwrap().clone();
    // State 1 of the leaf: delay step x (4 - 1 - 1) = 4 blocks on regtest.
    assert_eq!(
        state_a.tx.input[0].sequence,
        bitcoin::Sequence::from_height(4)
    );
    // The clients give up waiting; A stays recorded as something the LSP may still publish.
    for (c, _) in &ccs {
        s.clients[c.0 as usize].abandon();
        assert!(!s.clients[c.0 as usize].is_settled());
        assert_eq!(s.clients[c.0 as usize].abandoned().len(), 1);
    }
    s.lsp.abandon();
    // A client still knows where its channel would be under A, to keep its commitments there.
    let under_a = s.clients[0].abandoned_outpoints(Slot::Channel(ClientId(0)));
    assert_eq!(under_a.len(), 1);
    assert_eq!(under_a[0].txid, state_a.tx.compute_txid());

    // The attack: proposal B for the same step 0 -> 1 (without the sale: a different state 1).
    let mut forgetful = states(&h).lsp;
    let (b, _) = forgetful.propose(leaf, &h.lsp_key).unwrap();
    assert_eq!((b.from, b.to), (StateIndex(0), StateIndex(1)));
    for c in [0u32, 1] {
        let before = s.clients[c as usize].version().clone();
        let err = s.clients[c as usize]
            .accept(&b, ClientId(c), h.client_keys[c as usize], tip(&h))
            .unwrap_err();
        assert!(
            matches!(
                err,
                AdvanceError::IndexUsed {
                    used: StateIndex(1),
                    got: StateIndex(1),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(s.clients[c as usize].version(), &before);
    }

    // The honest next proposal moves past the used index: 0 -> 2.
    let (lsp_c, ccs) = start_advance(&h, &mut s, 0, None);
    sign_update(&h, &mut s, lsp_c, ccs);
    assert_eq!(s.clients[0].odometer().state(leaf), Some(StateIndex(2)));
    assert!(s.clients[0].is_settled());
    assert!(s.clients[0].abandoned().is_empty());

    // The LSP publishes the kickoffs and A; client 0's watcher answers with state 2, whose delay
    // is shorter, and it confirms; A never does.
    let mut cheat_path = original_path(&h, 0);
    let last = cheat_path.len() - 1;
    assert_eq!(cheat_path[last].kind, TxKind::State(leaf));
    cheat_path[last] = state_a.clone();
    let mut attacker = UnilateralExit::new(&cheat_path).unwrap();
    let mut watcher = Watcher::new(
        vec![s.clients[0].exit_path(ClientId(0))],
        vec![],
        burn_script(),
        bitcoin::FeeRate::from_sat_per_vb_u32(2),
        tip(&h) + 1,
    );
    let newest = s.clients[0]
        .latest(TxKind::State(leaf))
        .unwrap()
        .tx
        .compute_txid();
    let mut answered = false;
    for _ in 0..60 {
        let _ = attacker.step(&h.chain, None);
        for e in watcher.poll(&h.chain).unwrap() {
            answered |= matches!(e, WatchEvent::NewestState { state, .. } if state == newest);
        }
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&newest).unwrap().confirmations() > 0 {
            break;
        }
    }
    assert!(answered, "the watcher answered the published kickoff");
    assert!(h.chain.tx_status(&newest).unwrap().confirmations() > 0);
    assert_eq!(
        h.chain.tx_status(&state_a.tx.compute_txid()).unwrap(),
        TxStatus::Unknown
    );
    // Client 0's channel is on chain with its full capacity, in the newest state.
    let channel = s.clients[0].outpoint(Slot::Channel(ClientId(0))).unwrap();
    assert_eq!(channel.txid, newest);
    assert_eq!(
        h.chain.get_utxo(&channel).unwrap().unwrap().txout.value,
        capacity(0)
    );
}

#[test]
fn an_lsp_that_forgot_nothing_skips_used_indices_itself() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(3)).unwrap();
    // Three abandoned proposals in a row at the leaf: 4 states per layer, so the leaf's last
    // index is used, and the next advance rolls over into the parent layer.
    for expected in 1..=3u16 {
        let (p, _) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
        assert_eq!((p.node, p.to), (leaf, StateIndex(expected)));
        s.lsp.abandon();
    }
    let (p, lsp) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
    assert_ne!(p.node, leaf, "the leaf layer is used up: its parent ticks");
    // Clients that never saw the abandoned proposals accept the rollover.
    let participants: Vec<ClientId> = lsp.participants().collect();
    let mut ccs = Vec::new();
    for c in participants {
        let i = c.0 as usize;
        ccs.push((
            c,
            s.clients[i]
                .accept(&p, c, h.client_keys[i], tip(&h))
                .unwrap(),
        ));
    }
    sign_update(&h, &mut s, lsp, ccs);
    let mut exit = UnilateralExit::new(&s.clients[3].exit_path(ClientId(3))).unwrap();
    finish(&h, &mut exit);
}

#[test]
fn a_channel_keeps_its_commitments_on_an_abandoned_state_the_lsp_publishes() {
    let mut h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let slot = Slot::Channel(ClientId(0));
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (mut lsp, mut client) = open_channel(&h, &s.lsp, slot, 0, 20_000_000, 60);
    // Advance A (with a sale, so that it differs from the next one); the channel signs its
    // commitments on A's outpoint too (dual-state) before the factory update is signed.
    let sale = SaleTerms {
        buyer: ClientId(1),
        stock: h.factory.stock_of(ClientId(1)).unwrap(),
        amount: Amount::from_sat(15_000),
    };
    let (lsp_a, ccs) = start_advance(&h, &mut s, 0, Some(sale));
    let mine = ccs.iter().position(|(c, _)| *c == ClientId(0)).unwrap();
    let a_out = s.clients[0]
        .pending_outpoint(slot, |k| ccs[mine].1.txid(k))
        .unwrap();
    let nl = lsp.add_funding(a_out).unwrap();
    let nc = client.add_funding(a_out).unwrap();
    lsp.receive_funding_nonce(&nc).unwrap();
    client.receive_funding_nonce(&nl).unwrap();
    round(&mut lsp, &mut client);
    let (lsp_entry, ccs, _, _) = stage_one_then_entry(&h, &mut s, lsp_a, ccs);
    let state_a = lsp_entry.signed(TxKind::State(leaf)).unwrap().clone();
    // Final signatures withheld: everyone abandons. The client keeps A's outpoint live: the
    // factory is not settled, and it still knows where its channel is under A.
    for (c, _) in &ccs {
        s.clients[c.0 as usize].abandon();
    }
    s.lsp.abandon();
    assert!(!s.clients[0].is_settled());
    assert_eq!(s.clients[0].abandoned_outpoints(slot), vec![a_out]);
    assert!(client.funding_outpoints().contains(&a_out));
    // The LSP publishes the path with A (nothing newer exists to answer it with).
    let mut cheat_path = original_path(&h, 0);
    let last = cheat_path.len() - 1;
    cheat_path[last] = state_a;
    let mut cheat = UnilateralExit::new(&cheat_path).unwrap();
    finish(&h, &mut cheat);
    assert!(h.chain.get_utxo(&a_out).unwrap().is_some());
    // The client closes its channel on A's output with its latest balance, to the sat.
    let (commit, _) = client.signed_latest_commitment_on(a_out).unwrap();
    assert!(commit
        .output
        .iter()
        .any(|o| o.value.to_sat() * 1000 == client.balance_msat()));
    confirm_with_lsp_anchor(&mut h, &commit);
    assert!(h.chain.get_utxo(&a_out).unwrap().is_none());
}

/// Root DW layer over two DW leaves of two clients each (4 clients): leaf 1 holds clients 0 and
/// 1, leaf 2 clients 2 and 3.
fn binary_dw() -> FactoryConfig {
    let mut cfg = FactoryConfig::regtest();
    cfg.shape = superscalar_core::Shape {
        arity: vec![2],
        leaf: superscalar_core::LeafKind::Dw,
        static_levels: 0,
        ..cfg.shape.clone()
    };
    cfg
}

/// The malicious LSP of the adversarial review: the abandoned advance A is a rollover of the
/// root (leaf 2 is at its last state). The clients sign A in two stages: everything beneath the
/// root's new state first, whose final signatures each of them holds, then the root's new state;
/// the LSP aggregates that one and withholds it. Optionally (`then_leaf_update`) an advance B of
/// client 0's own leaf completes under the old root state (it does not supersede A). The LSP
/// publishes the root kickoff and A's root state, which beats the old one: client 0 follows A
/// down to its channel with what it signed for A.
fn abandoned_root_rollover(then_leaf_update: bool) {
    let h = build(4, binary_dw());
    let mut s = states(&h);
    let root = superscalar_core::NodeId(0);
    for _ in 0..3 {
        advance(&h, &mut s, 2);
    }
    let (lsp_a, ccs) = start_advance(&h, &mut s, 2, None);
    assert!(
        ccs.iter().any(|(c, _)| *c == ClientId(0)),
        "a root rollover"
    );
    let (lsp_entry, ccs, _, _) = stage_one_then_entry(&h, &mut s, lsp_a, ccs);
    let root_state_a = lsp_entry.signed(TxKind::State(root)).unwrap().clone();
    for (c, _) in &ccs {
        s.clients[c.0 as usize].abandon();
    }
    s.lsp.abandon();
    if then_leaf_update {
        advance(&h, &mut s, 0);
        assert_eq!(s.clients[0].odometer().state(root), Some(StateIndex(0)));
        assert_eq!(
            s.clients[0].abandoned().len(),
            1,
            "a leaf update does not supersede a root rollover"
        );
    }
    // The LSP publishes the root kickoff and A's root state (delay 4 < 6 of the state clients
    // completed).
    let kickoff = original_path(&h, 0)
        .into_iter()
        .find(|x| x.kind == TxKind::Kickoff(root))
        .unwrap();
    let mut watcher = Watcher::new(
        vec![s.clients[0].exit_path(ClientId(0))],
        vec![],
        burn_script(),
        bitcoin::FeeRate::from_sat_per_vb_u32(2),
        tip(&h) + 1,
    );
    let mut cheat = UnilateralExit::new(&[kickoff, root_state_a.clone()]).unwrap();
    finish(&h, &mut cheat);
    // Client 0's watcher reports the state that beat its newest one: one of its abandoned
    // updates, so it exits through it.
    let events = watcher.poll(&h.chain).unwrap();
    let a_txid = root_state_a.tx.compute_txid();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::OtherState { state, .. } if *state == a_txid)),
        "{events:?}"
    );
    assert!(
        h.chain
            .tx_status(&root_state_a.tx.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    // Client 0's newest path now loses; its path through A reaches its channel.
    let paths = s.clients[0].abandoned_exit_paths(ClientId(0));
    assert_eq!(paths.len(), 1);
    let mut exit = UnilateralExit::new(&paths[0]).unwrap();
    finish(&h, &mut exit);
    let leaf_state = paths[0].last().unwrap();
    let channel = leaf_state
        .tx
        .output
        .iter()
        .position(|o| o.value == capacity(0))
        .expect("client 0's channel in A's leaf state");
    assert!(h
        .chain
        .get_utxo(&bitcoin::OutPoint::new(
            leaf_state.tx.compute_txid(),
            channel as u32
        ))
        .unwrap()
        .is_some());
}

#[test]
fn a_client_exits_through_an_abandoned_root_rollover_the_lsp_publishes() {
    abandoned_root_rollover(false);
}

#[test]
fn a_later_leaf_update_does_not_forget_an_abandoned_root_rollover() {
    abandoned_root_rollover(true);
}

#[test]
fn stage_two_needs_the_whole_of_stage_one() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let (mut lsp, mut ccs) = start_advance(&h, &mut s, 0, None);
    rounds(&mut lsp, &mut ccs);
    let (c, cc) = &mut ccs[0];
    cc.finish(&lsp.final_sigs_for(*c).unwrap()).unwrap();
    let mine = cc.signed().to_vec();
    let i = c.0 as usize;
    // Not before stage 1 is held: nothing, a part, a forged signature, or another's share.
    let mut forged = mine.clone();
    forged[0].tx.input[0].witness = bitcoin::Witness::from_slice(&[[7u8; 64]]);
    let other = {
        let (c1, cc1) = &mut ccs[1];
        cc1.finish(&lsp.final_sigs_for(*c1).unwrap()).unwrap();
        cc1.signed().to_vec()
    };
    let (c, _) = ccs[0];
    for bad in [vec![], mine[1..].to_vec(), forged, other] {
        assert!(s.clients[i]
            .accept_entry(&bad, c, h.client_keys[i])
            .is_err());
    }
    // Completing without stage 2 is refused too.
    assert!(s.clients[i].complete(mine.clone()).is_err());
    // The real share opens stage 2, once.
    s.clients[i]
        .accept_entry(&mine, c, h.client_keys[i])
        .unwrap();
    assert!(s.clients[i]
        .accept_entry(&mine, c, h.client_keys[i])
        .is_err());
}
