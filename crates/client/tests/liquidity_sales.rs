//! Liquidity sales on the embedded chain: a DW-leaf sale re-signs the leaf state with a new channel
//! for the buyer; pseudo-Spilman sales spend only the current PS-factory output; the buyer pays and
//! receives more than any one of its channels (local multipath); its unilateral exit pays it every
//! channel; a second spend of a PS-factory output is refused by every honest signer; the next DW
//! replacement of a PS leaf cuts the chain through into the leaf state, and the old chain is
//! punished if published.

mod common;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{Amount, OutPoint, Transaction};
use common::*;
use superscalar_chain::{Chain, TxStatus};
use superscalar_client::watch::{WatchEvent, Watcher};
use superscalar_client::UnilateralExit;
use superscalar_core::advance::{AdvanceError, FactoryState, SaleTerms};
use superscalar_core::channel::multipath::split;
use superscalar_core::channel::state::Channel;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, LeafKind, TxKind};
use superscalar_wallet::burn_script;

const HEIGHT: u32 = 500;

/// `amount_msat` over the client's channels `pairs` (LSP side, client side), split across them,
/// every part sharing one payment hash: from the LSP to the client, or back.
fn pay_multipath(pairs: &mut [(Channel, Channel)], amount_msat: u64, nonce: u8, to_client: bool) {
    let avail: Vec<u64> = pairs
        .iter()
        .map(|(l, c)| if to_client { l } else { c }.sendable_msat())
        .collect();
    let parts = split(amount_msat, &avail).unwrap();
    assert!(parts.iter().filter(|p| **p > 0).count() > 1, "{parts:?}");
    let preimage = [nonce; 32];
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    for ((l, c), part) in pairs.iter_mut().zip(&parts) {
        if *part == 0 {
            continue;
        }
        let (from, to) = if to_client { (l, c) } else { (c, l) };
        let add = from.add_htlc(*part, hash, HEIGHT + 100, HEIGHT).unwrap();
        to.receive_add(&add, HEIGHT).unwrap();
        round(from, to);
        let f = to.fulfill_htlc(add.id, preimage).unwrap();
        assert_eq!(from.receive_fulfill(&f).unwrap(), preimage);
        round(to, from);
    }
}

fn lsp_pays(pairs: &mut [(Channel, Channel)], amount_msat: u64, nonce: u8) {
    pay_multipath(pairs, amount_msat, nonce, true);
}

fn client_pays(pairs: &mut [(Channel, Channel)], amount_msat: u64, nonce: u8) {
    pay_multipath(pairs, amount_msat, nonce, false);
}

fn balances(pairs: &[(Channel, Channel)]) -> (u64, u64) {
    (
        pairs.iter().map(|(l, _)| l.balance_msat()).sum(),
        pairs.iter().map(|(_, c)| c.balance_msat()).sum(),
    )
}

/// Value of `slot` on chain as created by `creator`'s newest transaction in `st`.
fn onchain_value(h: &Harness, st: &FactoryState, slot: Slot) -> Option<Amount> {
    let op = st.outpoint(slot)?;
    Some(h.chain.get_utxo(&op).unwrap()?.txout.value)
}

fn ps_config() -> FactoryConfig {
    let mut c = FactoryConfig::regtest();
    c.shape.leaf = LeafKind::PseudoSpilman { arity: 2 };
    c
}

#[test]
fn a_dw_leaf_sale_gives_the_buyer_a_new_channel_it_pays_and_exits_with() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    let amounts = |st: &FactoryState| h.factory.amounts(st.version()).unwrap();
    let stock_before = amounts(&s.lsp).value(&h.factory, Slot::Stock(stock));
    let funding_before = amounts(&s.lsp).funding_value();
    let sold = Amount::from_sat(60_000);
    let terms = SaleTerms {
        buyer: ClientId(0),
        stock,
        amount: sold,
    };
    advance_with(&h, &mut s, 0, Some(terms));
    // The new channel holds exactly the amount sold; the stock paid it plus the fees of the new
    // output and of the newer state; no money appeared or vanished.
    let after = amounts(&s.lsp);
    assert_eq!(after.value(&h.factory, Slot::Sold(0)), sold);
    assert_eq!(
        amounts(&s.clients[0]).value(&h.factory, Slot::Sold(0)),
        sold
    );
    assert_eq!(after.funding_value(), funding_before);
    let stock_after = after.value(&h.factory, Slot::Stock(stock));
    assert!(stock_after < stock_before - sold);
    assert!(stock_before - sold - stock_after < Amount::from_sat(1_000));
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let leaf_tx = &s.clients[0].latest(TxKind::State(leaf)).unwrap().tx;
    assert!(leaf_tx.output.iter().any(|o| o.value == sold));

    // The buyer's channels: its first (50,000 sat, all on the LSP's side) and the new one.
    let mut pairs = vec![
        open_channel(&h, &s.lsp, Slot::Channel(ClientId(0)), 0, 0, 100),
        open_channel(&h, &s.lsp, Slot::Sold(0), 0, 0, 110),
    ];
    let (lsp0, c0) = balances(&pairs);
    // It receives more than either channel can hold alone, then pays more than either holds.
    lsp_pays(&mut pairs, 100_000_000, 1);
    client_pays(&mut pairs, 95_000_000, 2);
    let (lsp1, c1) = balances(&pairs);
    assert_eq!(c1, c0 + 100_000_000 - 95_000_000);
    assert_eq!(lsp1, lsp0 - 5_000_000);
    // More than both can carry is refused before anything is offered.
    let avail: Vec<u64> = pairs.iter().map(|(_, c)| c.sendable_msat()).collect();
    assert!(split(avail.iter().sum::<u64>() + 1, &avail).is_err());

    // Its unilateral exit (no coins, newest path) puts both channels on chain.
    let mut exit = UnilateralExit::new(&s.clients[0].exit_path(ClientId(0))).unwrap();
    finish(&h, &mut exit);
    assert_eq!(
        onchain_value(&h, &s.clients[0], Slot::Channel(ClientId(0))),
        Some(capacity(0))
    );
    assert_eq!(onchain_value(&h, &s.clients[0], Slot::Sold(0)), Some(sold));
    // A sale larger than the stock is refused up front.
    let mut s2 = states(&h);
    let leaf1 = h.factory.tree().leaf_of(ClientId(2)).unwrap();
    let too_much = SaleTerms {
        buyer: ClientId(2),
        stock: h.factory.stock_of(ClientId(2)).unwrap(),
        amount: Amount::from_sat(10_000_000),
    };
    assert!(matches!(
        s2.lsp.propose_with(leaf1, Some(too_much), &h.lsp_key),
        Err(AdvanceError::InvalidSale(_))
    ));
}

#[test]
fn ps_sales_spend_only_the_current_stock_output_once_and_exit_with_every_channel() {
    let h = build(4, ps_config());
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    assert_eq!(h.factory.stock_of(ClientId(1)), Some(stock));
    let first = sell_ps(
        &h,
        &mut s,
        SaleTerms {
            buyer: ClientId(0),
            stock,
            amount: Amount::from_sat(40_000),
        },
    );
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let leaf_txid = s.lsp.latest(TxKind::State(leaf)).unwrap().tx.compute_txid();
    // The sale spends the PS-factory output of the leaf state and never a channel output.
    let sale0 = s.clients[0].latest(TxKind::Sale(0)).unwrap().tx.clone();
    assert_eq!(sale0.input[0].previous_output, first.spends);
    assert_eq!(first.spends.txid, leaf_txid);
    assert_eq!(
        Some(first.spends),
        FactoryState::outpoint(&s.clients[0], Slot::Stock(stock))
    );
    // A second sale spends the first one's change.
    sell_ps(
        &h,
        &mut s,
        SaleTerms {
            buyer: ClientId(0),
            stock,
            amount: Amount::from_sat(30_000),
        },
    );
    let sale1 = s.clients[1].latest(TxKind::Sale(1)).unwrap().tx.clone();
    assert_eq!(
        sale1.input[0].previous_output,
        OutPoint::new(sale0.compute_txid(), 1)
    );
    // A dishonest LSP re-proposes a spend of the first PS-factory output: every honest signer
    // refuses, having recorded that it signed a spend of it.
    let mut again = first.clone();
    again.index = s.lsp.version().sales.len() as u32;
    again.sales_before = s.lsp.version().sales.clone();
    again.terms.amount = Amount::from_sat(5_000);
    again.sign(&h.lsp_key);
    for c in [0u32, 1] {
        let before = s.clients[c as usize].version().clone();
        let err = s.clients[c as usize]
            .accept_sale(&again, ClientId(c), h.client_keys[c as usize], tip(&h))
            .unwrap_err();
        assert_eq!(err, AdvanceError::AlreadySpent(first.spends), "{err}");
        assert_eq!(s.clients[c as usize].version(), &before);
    }
    // A client of the other PS factory is not asked.
    assert!(s.clients[2]
        .accept_sale(&again, ClientId(2), h.client_keys[2], tip(&h))
        .is_err());
    // The buyer pays across its three channels.
    let mut pairs = vec![
        open_channel(&h, &s.lsp, Slot::Channel(ClientId(0)), 0, 0, 100),
        open_channel(&h, &s.lsp, Slot::Sold(0), 0, 0, 110),
        open_channel(&h, &s.lsp, Slot::Sold(1), 0, 0, 120),
    ];
    lsp_pays(&mut pairs, 110_000_000, 3);
    client_pays(&mut pairs, 100_000_000, 4);
    assert_eq!(balances(&pairs).1, 10_000_000);
    // Its exit publishes the path and the PS chain, and every channel of the buyer is on chain.
    let path = s.clients[0].exit_path(ClientId(0));
    assert!(path.iter().any(|x| x.kind == TxKind::Sale(1)));
    let mut exit = UnilateralExit::new(&path).unwrap();
    finish(&h, &mut exit);
    assert_eq!(
        onchain_value(&h, &s.clients[0], Slot::Channel(ClientId(0))),
        Some(capacity(0))
    );
    assert_eq!(
        onchain_value(&h, &s.clients[0], Slot::Sold(0)),
        Some(Amount::from_sat(40_000))
    );
    assert_eq!(
        onchain_value(&h, &s.clients[0], Slot::Sold(1)),
        Some(Amount::from_sat(30_000))
    );
    // The other client of the PS factory keeps its channel too.
    assert_eq!(
        onchain_value(&h, &s.clients[1], Slot::Channel(ClientId(1))),
        Some(capacity(1))
    );
}

#[test]
fn a_ps_cut_through_merges_the_chain_and_the_old_chain_is_punished() {
    let h = build(4, ps_config());
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    for amount in [40_000, 30_000] {
        sell_ps(
            &h,
            &mut s,
            SaleTerms {
                buyer: ClientId(0),
                stock,
                amount: Amount::from_sat(amount),
            },
        );
    }
    let old_sale0 = s.clients[0].latest(TxKind::Sale(0)).unwrap().clone();
    // The next DW replacement of the leaf: the chain is cut through into the new leaf state.
    advance(&h, &mut s, 0);
    for st in [&s.lsp, &s.clients[0], &s.clients[1]] {
        assert!(st.version().sales.iter().all(|x| x.merged));
        assert!(st.latest(TxKind::Sale(0)).is_none());
    }
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let leaf_tx = s.clients[0].latest(TxKind::State(leaf)).unwrap().tx.clone();
    assert_eq!(
        s.clients[0].outpoint(Slot::Sold(1)).unwrap().txid,
        leaf_tx.compute_txid()
    );
    let exit_path = s.clients[0].exit_path(ClientId(0));
    assert!(exit_path
        .iter()
        .all(|x| matches!(x.kind, TxKind::Kickoff(_) | TxKind::State(_))));
    // The old leaf version and its whole chain are punishable.
    let armed = s.clients[0].armed_punishments();
    assert_eq!(armed.len(), 3, "stock and two change outputs");
    // The LSP publishes the old leaf state and the old chain's first sale (which spends the old
    // PS-factory output); the watcher punishes the change output that sale created.
    let old_path = original_path(&h, 0);
    let mut cheat = UnilateralExit::new(&old_path).unwrap();
    finish(&h, &mut cheat);
    h.chain.submit_transaction(&old_sale0.tx).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let mut watcher = Watcher::new(
        vec![],
        vec![],
        burn_script(),
        bitcoin::FeeRate::from_sat_per_vb_u32(2),
        h.chain.tip().unwrap().height,
    )
    .with_punishments(armed.clone());
    let events = watcher.poll(&h.chain).unwrap();
    let change0 = OutPoint::new(old_sale0.tx.compute_txid(), 1);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::Punished { stock, .. } if *stock == change0)),
        "{events:?}"
    );
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let punished: Vec<&Transaction> = armed
        .iter()
        .filter(|t| t.input[0].previous_output == change0)
        .collect();
    assert_eq!(punished.len(), 1);
    assert!(matches!(
        h.chain.tx_status(&punished[0].compute_txid()).unwrap(),
        TxStatus::Confirmed { .. }
    ));
}

#[test]
fn every_exit_stays_valid_after_a_ps_cut_through() {
    let h = build(4, ps_config());
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(2)).unwrap();
    sell_ps(
        &h,
        &mut s,
        SaleTerms {
            buyer: ClientId(3),
            stock,
            amount: Amount::from_sat(25_000),
        },
    );
    advance(&h, &mut s, 2);
    for c in 0..4u32 {
        let mut exit = UnilateralExit::new(&s.clients[c as usize].exit_path(ClientId(c))).unwrap();
        finish(&h, &mut exit);
        assert_eq!(
            onchain_value(&h, &s.clients[c as usize], Slot::Channel(ClientId(c))),
            Some(capacity(c))
        );
    }
    assert_eq!(
        onchain_value(&h, &s.clients[3], Slot::Sold(0)),
        Some(Amount::from_sat(25_000))
    );
}

#[test]
fn an_advance_that_rewrites_the_sales_a_client_signed_is_refused() {
    let h = build(4, ps_config());
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    sell_ps(
        &h,
        &mut s,
        SaleTerms {
            buyer: ClientId(0),
            stock,
            amount: Amount::from_sat(40_000),
        },
    );
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (proposal, _c) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
    let before = s.clients[1].version().clone();
    // The sale forgotten (the LSP would keep the stock it sold).
    let mut forgot = proposal.clone();
    forgot.sales_before.clear();
    forgot.sign(&h.lsp_key);
    let err = s.clients[1]
        .accept(&forgot, ClientId(1), h.client_keys[1], tip(&h))
        .unwrap_err();
    assert!(matches!(err, AdvanceError::History(_)), "{err}");
    // A sale of this stock the client never signed.
    let mut invented = proposal.clone();
    invented.sales_before.push(superscalar_core::Sale {
        buyer: ClientId(1),
        stock,
        amount: Amount::from_sat(1_000),
        merged: false,
    });
    invented.sign(&h.lsp_key);
    let err = s.clients[1]
        .accept(&invented, ClientId(1), h.client_keys[1], tip(&h))
        .unwrap_err();
    assert!(matches!(err, AdvanceError::History(_)), "{err}");
    // A changed amount.
    let mut cheaper = proposal.clone();
    cheaper.sales_before[0].amount = Amount::from_sat(1_000);
    cheaper.sign(&h.lsp_key);
    assert!(matches!(
        s.clients[1].accept(&cheaper, ClientId(1), h.client_keys[1], tip(&h)),
        Err(AdvanceError::History(_))
    ));
    assert_eq!(s.clients[1].version(), &before);
    // The honest proposal is accepted.
    s.clients[1]
        .accept(&proposal, ClientId(1), h.client_keys[1], tip(&h))
        .unwrap();
}
