//! Revocation of the liquidity stock on the embedded chain: after an advance, a superseded stock
//! version published on chain is punished through its hashlock leaf (redistribution to the clients
//! or burn to fees), while the same punishment is worthless against the live stock version.

mod common;

use bitcoin::{Amount, OutPoint, Transaction};
use common::*;
use superscalar_chain::{Chain, RejectReason};
use superscalar_client::watch::{WatchEvent, Watcher};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::factory::Slot;
use superscalar_core::shape::Punishment;
use superscalar_core::{ClientId, FactoryConfig, NodeId, TxKind};
use superscalar_wallet::burn_script;

fn publish_when_ready(h: &Harness, tx: &Transaction) {
    for _ in 0..50 {
        match h.chain.submit_transaction(tx) {
            Ok(_) => {
                h.chain.mine_blocks(1, &burn_script()).unwrap();
                return;
            }
            Err(e) if matches!(e.reject_reason(), Some(RejectReason::SequenceLocked { .. })) => {
                h.chain.mine_blocks(1, &burn_script()).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("never valid");
}

fn publish_path(h: &Harness, path: &[SignedTx]) {
    for s in path {
        if h.chain
            .get_utxo(&OutPoint::new(s.tx.compute_txid(), 0))
            .unwrap()
            .is_some()
        {
            continue;
        }
        publish_when_ready(h, &s.tx);
    }
}

/// Consensus refuses `tx` for its script, even from a miner who ignores fees (the mempool may
/// refuse it earlier for its fee: Bitcoin Core checks fees before scripts).
fn script_failure(h: &Harness, tx: &Transaction) -> String {
    let tip = h.chain.tip().unwrap();
    let err = h
        .chain
        .mine_block_with(std::slice::from_ref(tx), &superscalar_wallet::burn_script())
        .unwrap_err();
    let words = err.to_string();
    assert!(
        matches!(err, superscalar_chain::ChainError::BlockRejected { .. })
            && (words.contains("script verification failed")
                || words.contains("script-verify-flag-failed")),
        "{err}"
    );
    assert_eq!(h.chain.tip().unwrap(), tip);
    words
}

/// The LSP publishes client 0's original (superseded) leaf state after one advance; client 0
/// punishes the old stock output with the revealed secret.
fn punish_old_stock(punishment: Punishment) {
    let config = FactoryConfig {
        punishment,
        ..FactoryConfig::regtest()
    };
    let h = build(4, config);
    let mut s = states(&h);
    advance(&h, &mut s, 0);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    // Client 0 holds the secret of stock version 0 and the punishment signed with it.
    assert!(s.clients[0].revocations().secret(stock, 0).is_some());
    let armed = s.clients[0].armed_punishments();
    assert_eq!(armed.len(), 1);
    // The old path confirms (nobody answers it in time).
    let old_path = original_path(&h, 0);
    publish_path(&h, &old_path);
    let old_leaf_state = old_path.last().unwrap();
    assert_eq!(old_leaf_state.kind, TxKind::State(leaf));
    let vout = h
        .factory
        .outputs_of(TxKind::State(leaf), &h.version0)
        .iter()
        .position(|x| *x == Slot::Stock(stock))
        .unwrap() as u32;
    let old_stock = OutPoint::new(old_leaf_state.tx.compute_txid(), vout);
    let value = h.chain.get_utxo(&old_stock).unwrap().unwrap().txout.value;
    assert_eq!(armed[0].input[0].previous_output, old_stock);
    // A wrong secret does not open the hashlock.
    let mut wrong = armed[0].clone();
    let mut w: Vec<Vec<u8>> = wrong.input[0].witness.iter().map(|x| x.to_vec()).collect();
    w[1] = vec![0x42; 32];
    wrong.input[0].witness = bitcoin::Witness::from_slice(&w);
    script_failure(&h, &wrong);
    // The right one does: client 0's watcher publishes it and it confirms.
    let mut watcher = Watcher::new(
        vec![s.clients[0].exit_path(ClientId(0))],
        vec![],
        burn_script(),
        bitcoin::FeeRate::from_sat_per_vb_u32(2),
        h.chain.tip().unwrap().height,
    )
    .with_punishments(s.clients[0].armed_punishments());
    let events = watcher.poll(&h.chain).unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::Punished { stock, .. } if *stock == old_stock)),
        "{events:?}"
    );
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        h.chain
            .tx_status(&armed[0].compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    let paid: Amount = armed[0].output.iter().map(|o| o.value).sum();
    match punishment {
        Punishment::Poison => {
            // The stock goes to the two clients sharing it, evenly, minus the fee.
            assert_eq!(armed[0].output.len(), 2);
            for (i, out) in armed[0].output.iter().enumerate() {
                assert_eq!(
                    out.script_pubkey,
                    h.factory.client_payout_script(ClientId(i as u32))
                );
            }
            let fee = value - paid;
            assert!(fee.to_sat() >= armed[0].vsize() as u64);
            assert!(fee < Amount::from_sat(1_000), "{fee}");
            let diff =
                armed[0].output[0].value.to_sat() as i64 - armed[0].output[1].value.to_sat() as i64;
            assert!(diff.abs() <= 1);
        }
        Punishment::Burn => {
            assert_eq!(paid, Amount::ZERO);
            assert!(armed[0].output[0].script_pubkey.is_op_return());
        }
    }
}

#[test]
fn a_superseded_stock_is_poisoned_to_its_clients() {
    punish_old_stock(Punishment::Poison);
}

#[test]
fn a_superseded_stock_is_burnt_to_fees() {
    punish_old_stock(Punishment::Burn);
}

#[test]
fn the_punishment_is_worthless_against_the_live_stock() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    advance(&h, &mut s, 0);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    // The newest path goes on chain: the live stock version is there.
    publish_path(&h, &s.clients[0].exit_path(ClientId(0)));
    let live_leaf = s.clients[0].latest(TxKind::State(leaf)).unwrap().tx.clone();
    let vout = h
        .factory
        .outputs_of(TxKind::State(leaf), s.clients[0].version())
        .iter()
        .position(|x| *x == Slot::Stock(stock))
        .unwrap() as u32;
    let live_stock = OutPoint::new(live_leaf.compute_txid(), vout);
    assert!(h.chain.get_utxo(&live_stock).unwrap().is_some());
    // The old punishment as signed: its input does not exist.
    let old = s.clients[0].armed_punishments().remove(0);
    let err = h.chain.submit_transaction(&old).unwrap_err();
    assert!(
        matches!(err.reject_reason(), Some(RejectReason::MissingInput { .. })),
        "{err}"
    );
    // Its signature and revealed secret, pointed at the live stock: refused by the script.
    let mut retargeted = old.clone();
    retargeted.input[0].previous_output = live_stock;
    script_failure(&h, &retargeted);
    // The live version's own punishment, with the only secret the client has (the old one):
    // refused, because the live hash is different.
    let live_punish = s.clients[0]
        .latest(TxKind::Punish(Slot::Stock(stock)))
        .unwrap()
        .clone();
    let old_secret = s.clients[0].revocations().secret(stock, 0).unwrap();
    let hash = h
        .factory
        .revocation_hash(Slot::Stock(stock), s.clients[0].version())
        .unwrap();
    let forged = h
        .factory
        .complete_punishment(&live_punish, s.clients[0].version(), &hash, &old_secret)
        .unwrap();
    script_failure(&h, &forged);
    // The live stock is untouched; the root is unaffected.
    assert!(h.chain.get_utxo(&live_stock).unwrap().is_some());
    let _ = NodeId(0);
}

#[test]
fn a_client_fails_closed_until_it_holds_the_old_versions_secret() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    // An advance whose secret is withheld.
    let (proposal, lsp) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
    let participants: Vec<ClientId> = lsp.participants().collect();
    let ccs: Vec<_> = participants
        .iter()
        .map(|c| {
            let i = c.0 as usize;
            let cc = s.clients[i]
                .accept(&proposal, *c, h.client_keys[i], tip(&h))
                .unwrap();
            (*c, cc)
        })
        .collect();
    let (lsp2, mut entries, mut lsp_signed, signed) = stage_one_then_entry(&h, &mut s, lsp, ccs);
    for (c, cc) in entries.iter_mut() {
        cc.finish(&lsp2.final_sigs_for(*c).unwrap()).unwrap();
        let mut all = signed.iter().find(|(b, _)| b == c).unwrap().1.clone();
        all.extend(cc.signed().iter().cloned());
        s.clients[c.0 as usize].complete(all).unwrap();
    }
    lsp_signed.extend(lsp2.all_signed().cloned());
    s.lsp.complete(lsp_signed).unwrap();
    // The next proposal is refused by client 0 until the secret arrives.
    let (next, _lsp2) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
    let err = s.clients[0]
        .accept(&next, ClientId(0), h.client_keys[0], tip(&h))
        .unwrap_err();
    assert!(err.to_string().contains("revocation secret"), "{err}");
    // A wrong secret is refused and changes nothing.
    let mut revealed = s.lsp.reveal().unwrap();
    let good = revealed[0];
    revealed[0].secret = [9; 32];
    assert!(s.clients[0].receive_revocations(&revealed).is_err());
    assert!(s.clients[0]
        .accept(&next, ClientId(0), h.client_keys[0], tip(&h))
        .is_err());
    // The right one opens it again.
    s.clients[0].receive_revocations(&[good]).unwrap();
    s.clients[0]
        .accept(&next, ClientId(0), h.client_keys[0], tip(&h))
        .unwrap();
}
