//! Attacks on the watcher, played on the embedded chain: a revoked commitment published with
//! its HTLC second stage confirmed in the same block (the justice transaction over the whole
//! commitment is then invalid), by the LSP against a client and by a client against the LSP.
//! The watcher takes what is left, the second-stage output included, and keeps watching.

mod common;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{Amount, FeeRate, OutPoint, Transaction};
use common::*;
use superscalar_chain::{Chain, TxStatus};
use superscalar_client::watch::{WatchEvent, Watcher};
use superscalar_client::UnilateralExit;
use superscalar_core::channel::state::Channel;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, TxKind};
use superscalar_wallet::burn_script;

const FEE_RATE: FeeRate = FeeRate::from_sat_per_vb_u32(2);

/// Value of every confirmed unspent output paying `script` among the outputs of `tx`.
fn paid_to(h: &Harness, tx: &Transaction, script: &bitcoin::Script) -> Amount {
    let txid = tx.compute_txid();
    (0..tx.output.len() as u32)
        .filter_map(|v| h.chain.get_utxo(&OutPoint::new(txid, v)).unwrap())
        .filter(|c| c.txout.script_pubkey.as_script() == script)
        .map(|c| c.txout.value)
        .sum()
}

/// Client 0's factory after one advance of its leaf; the LSP publishes the superseded original
/// path and client 0's `watcher` (over its newest path and `channel`) answers with the newest
/// leaf state, which confirms. Returns the LSP's and the client's sides of the channel.
fn exit_with_channel(h: &Harness, client_msat: u64) -> (Channel, Channel, Watcher, OutPoint) {
    let mut s = states(h);
    advance(h, &mut s, 0);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (lsp, client) = open_channel(h, &s.lsp, Slot::Channel(ClientId(0)), 0, client_msat, 9);
    let funding = s.clients[0].outpoint(Slot::Channel(ClientId(0))).unwrap();
    let mut watcher = Watcher::new(
        vec![s.clients[0].exit_path(ClientId(0))],
        vec![(client.clone(), funding)],
        h.factory.client_payout_script(ClientId(0)),
        FEE_RATE,
        tip(h) + 1,
    );
    let newest = s.clients[0]
        .latest(TxKind::State(leaf))
        .unwrap()
        .tx
        .compute_txid();
    let old = original_path(h, 0);
    let mut attacker = UnilateralExit::new(&old).unwrap();
    let mut answered = false;
    for _ in 0..80 {
        let _ = attacker.step(&h.chain, None);
        for e in watcher.poll(&h.chain).unwrap() {
            answered |= matches!(e, WatchEvent::NewestState { state, .. } if state == newest);
        }
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&newest).unwrap().confirmations() > 0 {
            break;
        }
    }
    assert!(
        answered,
        "the superseded state is answered with the newest one"
    );
    assert_eq!(funding.txid, newest);
    assert!(h.chain.get_utxo(&funding).unwrap().is_some());
    (lsp, client, watcher, funding)
}

/// Publish `commitment` and its second stage `second` in one block (a miner's or a package's
/// doing), once the HTLC's expiry `expiry` has passed.
fn mine_with_second_stage(
    h: &Harness,
    commitment: &Transaction,
    second: &Transaction,
    expiry: u32,
) {
    while tip(h) < expiry {
        h.chain.mine_blocks(1, &burn_script()).unwrap();
    }
    h.chain
        .mine_block_with(&[commitment.clone(), second.clone()], &burn_script())
        .unwrap();
}

/// The watcher's answer after the attack: one justice transaction, no refusal; confirmed, it
/// spends the second-stage output and pays `payout` the whole channel less its fee.
fn assert_justice(
    h: &Harness,
    watcher: &mut Watcher,
    commitment: &Transaction,
    second: &Transaction,
    payout: &bitcoin::Script,
    at_least: Amount,
) {
    let events = watcher.poll(&h.chain).unwrap();
    assert_eq!(
        watcher.next_height(),
        tip(h) + 1,
        "the scan moved past every block"
    );
    // A second stage in the same block is reported resolved (with the preimage it revealed).
    let events: Vec<WatchEvent> = events
        .into_iter()
        .filter(|e| !matches!(e, WatchEvent::HtlcResolved { .. }))
        .collect();
    let justice = match events.as_slice() {
        [WatchEvent::ChannelClosed { commitment: c, .. }, WatchEvent::Justice {
            revoked, justice, ..
        }] => {
            assert_eq!(*c, commitment.compute_txid());
            assert_eq!(*revoked, commitment.compute_txid());
            *justice
        }
        other => panic!("expected one justice transaction, got {other:?}"),
    };
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let justice = confirmed_tx(h, justice);
    let second_out = OutPoint::new(second.compute_txid(), 0);
    assert!(justice
        .input
        .iter()
        .any(|i| i.previous_output == second_out));
    // Everything but the second stage's input and the zero-value anchor is taken.
    let cid = commitment.compute_txid();
    let taken: Amount = commitment
        .output
        .iter()
        .enumerate()
        .filter(|(v, _)| {
            justice
                .input
                .iter()
                .any(|i| i.previous_output == OutPoint::new(cid, *v as u32))
        })
        .map(|(_, o)| o.value)
        .sum::<Amount>()
        + second.output[0].value;
    let capacity_left: Amount = commitment.output.iter().map(|o| o.value).sum();
    assert_eq!(taken, capacity_left, "every output left, to the sat");
    let got = paid_to(h, &justice, payout);
    let fee = taken - got;
    assert!(fee < Amount::from_sat(1_000), "fee {fee}");
    assert!(got >= at_least, "{got} < {at_least}");
    // Nothing is left for the cheater; later polls have nothing to redo and never fail.
    h.chain.mine_blocks(3, &burn_script()).unwrap();
    assert!(watcher.poll(&h.chain).unwrap().is_empty());
    assert_eq!(watcher.next_height(), tip(h) + 1);
}

#[test]
fn lsp_revoked_commitment_with_htlc_timeout_in_the_same_block_is_punished_to_the_second_stage() {
    let h = build(4, FactoryConfig::regtest());
    let client_msat = 20_000_000;
    let (mut lsp, mut client, mut watcher, funding) = exit_with_channel(&h, client_msat);
    // The LSP offers an HTLC with a near expiry; the commitment holding it is then revoked when
    // the client fails the HTLC.
    let now = tip(&h);
    let expiry = now + 20;
    let hash = sha256::Hash::hash(&[3u8; 32]).to_byte_array();
    let add = lsp.add_htlc(15_000_000, hash, expiry, now).unwrap();
    client.receive_add(&add, now).unwrap();
    round(&mut lsp, &mut client);
    let cheater = lsp.clone();
    let fail = client.fail_htlc(add.id).unwrap();
    lsp.receive_fail(&fail).unwrap();
    round(&mut client, &mut lsp);
    assert_eq!(client.balance_msat(), client_msat);
    watcher.set_channels(vec![(client.clone(), funding)]);

    let (commitment, second) = cheater.signed_latest_commitment().unwrap();
    assert_eq!(second.len(), 1, "the HTLC-timeout");
    mine_with_second_stage(&h, &commitment, &second[0], expiry);
    // The justice over the whole commitment is now invalid: its HTLC input is gone.
    let payout = h.factory.client_payout_script(ClientId(0));
    let whole = client
        .justice_transaction(&commitment, payout.clone(), FEE_RATE)
        .unwrap();
    assert!(h.chain.submit_transaction(&whole).is_err());
    assert_justice(
        &h,
        &mut watcher,
        &commitment,
        &second[0],
        &payout,
        Amount::from_sat(client_msat / 1000),
    );
}

#[test]
fn client_revoked_commitment_with_htlc_success_in_the_same_block_is_punished_to_the_second_stage() {
    let h = build(4, FactoryConfig::regtest());
    let client_msat = 20_000_000;
    let (mut lsp, mut client, _, funding) = exit_with_channel(&h, client_msat);
    let lsp_payout = burn_script();
    let mut lsp_watcher = Watcher::new(
        vec![],
        vec![(lsp.clone(), funding)],
        lsp_payout.clone(),
        FEE_RATE,
        tip(&h) + 1,
    );
    // The LSP pays the client through an HTLC; the client learns the preimage, keeps the
    // commitment holding the HTLC, then settles it (revoking that commitment).
    let now = tip(&h);
    let preimage = [4u8; 32];
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let add = lsp.add_htlc(15_000_000, hash, now + 40, now).unwrap();
    client.receive_add(&add, now).unwrap();
    round(&mut lsp, &mut client);
    let cheater = client.clone();
    let f = client.fulfill_htlc(add.id, preimage).unwrap();
    lsp.receive_fulfill(&f).unwrap();
    round(&mut client, &mut lsp);
    let lsp_balance = lsp.balance_msat();
    assert_eq!(
        lsp_balance,
        capacity(0).to_sat() * 1000 - client_msat - 15_000_000
    );
    lsp_watcher.set_channels(vec![(lsp.clone(), funding)]);

    let (commitment, mut second) = cheater.signed_latest_commitment().unwrap();
    assert_eq!(second.len(), 1, "the HTLC-success");
    // The client adds the preimage to its HTLC-success (after both signatures).
    let mut items: Vec<Vec<u8>> = second[0].input[0]
        .witness
        .iter()
        .map(|w| w.to_vec())
        .collect();
    items.insert(2, preimage.to_vec());
    second[0].input[0].witness = bitcoin::Witness::from_slice(&items);
    mine_with_second_stage(&h, &commitment, &second[0], 0);
    assert_justice(
        &h,
        &mut lsp_watcher,
        &commitment,
        &second[0],
        &lsp_payout,
        Amount::from_sat(lsp_balance / 1000),
    );
}

/// The LSP's spend of the PS-factory output `outpoint` (of value `value`, created at version
/// `v`) through its `stock_csv` leaf, paying itself.
fn lsp_stock_sweep(
    h: &Harness,
    v: &superscalar_core::Version,
    stock: u32,
    outpoint: OutPoint,
    value: Amount,
) -> Transaction {
    use bitcoin::sighash::{Prevouts, SighashCache};
    use bitcoin::taproot::LeafVersion;
    let slot = Slot::Stock(stock);
    let leaf = h.factory.stock_leaf();
    let info = h.factory.spend_info(slot, v).unwrap().unwrap();
    let spent = bitcoin::TxOut {
        value,
        script_pubkey: h.factory.script_pubkey_at(slot, v).unwrap(),
    };
    let mut tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: outpoint,
            script_sig: bitcoin::ScriptBuf::new(),
            sequence: bitcoin::Sequence::from_height(h.factory.params().config.stock_csv),
            witness: bitcoin::Witness::new(),
        }],
        output: vec![bitcoin::TxOut {
            value: value - Amount::from_sat(1_000),
            script_pubkey: burn_script(),
        }],
    };
    let sighash = SighashCache::new(&tx)
        .taproot_script_spend_signature_hash(
            0,
            &Prevouts::All(&[spent]),
            bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript),
            bitcoin::TapSighashType::Default,
        )
        .unwrap();
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let sig = secp.sign_schnorr(&bitcoin::secp256k1::Message::from(sighash), &h.lsp_key);
    let control = info
        .control_block(&(leaf.clone(), LeafVersion::TapScript))
        .unwrap();
    tx.input[0].witness = bitcoin::Witness::from_slice(&[
        sig.as_ref().to_vec(),
        leaf.to_bytes(),
        control.serialize(),
    ]);
    tx
}

#[test]
fn ps_buyer_watcher_publishes_its_sale_chain_before_the_lsp_can_sweep_the_stock() {
    use superscalar_core::advance::SaleTerms;
    use superscalar_core::LeafKind;
    let mut config = FactoryConfig::regtest();
    config.shape.leaf = LeafKind::PseudoSpilman { arity: 2 };
    let h = build(4, config);
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    let sold = Amount::from_sat(40_000);
    let sale = sell_ps(
        &h,
        &mut s,
        SaleTerms {
            buyer: ClientId(0),
            stock,
            amount: sold,
        },
    );
    // A second sale to the same buyer spends the first one's change: a chain of two links.
    let second = Amount::from_sat(30_000);
    sell_ps(
        &h,
        &mut s,
        SaleTerms {
            buyer: ClientId(0),
            stock,
            amount: second,
        },
    );
    let ps_output = sale.spends;
    let ps_value = h
        .factory
        .amounts(&h.version0)
        .unwrap()
        .value(&h.factory, Slot::Stock(stock));
    let buyer_path = s.clients[0].exit_path(ClientId(0));
    assert!(buyer_path.iter().any(|x| x.kind == TxKind::Sale(0)));
    let mut watcher = Watcher::new(
        vec![buyer_path.clone()],
        vec![],
        h.factory.client_payout_script(ClientId(0)),
        FEE_RATE,
        tip(&h) + 1,
    )
    .with_sales(buyer_path);
    let sale_txid = s.clients[0]
        .latest(TxKind::Sale(0))
        .unwrap()
        .tx
        .compute_txid();
    let sale1_txid = s.clients[0]
        .latest(TxKind::Sale(1))
        .unwrap()
        .tx
        .compute_txid();
    let mut links = Vec::new();
    // The LSP publishes the leaf through the other client's exit (no sale in its path).
    let mut other = UnilateralExit::new(&s.clients[1].exit_path(ClientId(1))).unwrap();
    let mut published = false;
    for _ in 0..80 {
        let _ = other.step(&h.chain, None);
        for e in watcher.poll(&h.chain).unwrap() {
            match e {
                WatchEvent::Sale { input, sale } => {
                    if sale == sale_txid {
                        assert_eq!(input, ps_output);
                        published = true;
                    }
                    links.push(sale);
                }
                WatchEvent::AnswerFailed { .. } => panic!("{e:?}"),
                _ => {}
            }
        }
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&sale1_txid).unwrap().confirmations() > 0 {
            break;
        }
    }
    assert!(published, "the buyer's watcher published its sale");
    assert_eq!(
        links,
        vec![sale_txid, sale1_txid],
        "each link once, in order"
    );
    let leaf_height = match h.chain.tx_status(&ps_output.txid).unwrap() {
        TxStatus::Confirmed { height, .. } => height,
        other => panic!("the leaf is not confirmed: {other:?}"),
    };
    let sale_height = match h.chain.tx_status(&sale_txid).unwrap() {
        TxStatus::Confirmed { height, .. } => height,
        other => panic!("the sale is not confirmed: {other:?}"),
    };
    let csv = u32::from(h.factory.params().config.stock_csv);
    assert!(
        sale_height < leaf_height + csv,
        "the sale confirmed at {sale_height}, before the LSP's CSV leaf opens at {}",
        leaf_height + csv
    );
    // The bought channel is on chain with the amount sold.
    let bought = s.clients[0].outpoint(Slot::Sold(0)).unwrap();
    assert_eq!(bought.txid, sale_txid);
    assert_eq!(
        h.chain.get_utxo(&bought).unwrap().unwrap().txout.value,
        sold
    );
    let bought1 = s.clients[0].outpoint(Slot::Sold(1)).unwrap();
    assert_eq!(bought1.txid, sale1_txid);
    assert_eq!(
        h.chain.get_utxo(&bought1).unwrap().unwrap().txout.value,
        second
    );
    let sale1_status = h.chain.tx_status(&sale1_txid).unwrap();
    assert!(
        matches!(sale1_status, TxStatus::Confirmed { height, .. } if height < sale_height + csv),
        "the second link confirmed before the first one's change could be swept"
    );
    // Once its CSV has passed, the LSP's sweep of the old PS-factory output is refused: the
    // output is gone.
    let sweep = lsp_stock_sweep(&h, &h.version0, stock, ps_output, ps_value);
    while tip(&h) + 1 < leaf_height + csv {
        h.chain.mine_blocks(1, &burn_script()).unwrap();
    }
    assert!(h.chain.get_utxo(&ps_output).unwrap().is_none());
    assert!(h.chain.submit_transaction(&sweep).is_err());
    assert!(h.chain.mine_block_with(&[sweep], &burn_script()).is_err());
}

#[test]
fn without_the_buyer_watcher_the_lsp_sweeps_the_ps_output_and_the_sale_is_lost() {
    // The control of the test above: the attack is real, and the sweep built there is valid.
    use superscalar_core::advance::SaleTerms;
    use superscalar_core::LeafKind;
    let mut config = FactoryConfig::regtest();
    config.shape.leaf = LeafKind::PseudoSpilman { arity: 2 };
    let h = build(4, config);
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    let sale = sell_ps(
        &h,
        &mut s,
        SaleTerms {
            buyer: ClientId(0),
            stock,
            amount: Amount::from_sat(40_000),
        },
    );
    let ps_value = h
        .factory
        .amounts(&h.version0)
        .unwrap()
        .value(&h.factory, Slot::Stock(stock));
    let mut other = UnilateralExit::new(&s.clients[1].exit_path(ClientId(1))).unwrap();
    finish(&h, &mut other);
    let sweep = lsp_stock_sweep(&h, &h.version0, stock, sale.spends, ps_value);
    for _ in 0..10 {
        if h.chain.submit_transaction(&sweep).is_ok() {
            break;
        }
        h.chain.mine_blocks(1, &burn_script()).unwrap();
    }
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        h.chain
            .tx_status(&sweep.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    let sale0 = &s.clients[0].latest(TxKind::Sale(0)).unwrap().tx;
    assert!(h.chain.submit_transaction(sale0).is_err());
}

/// Attack (malicious LSP, watcher): the LSP confirms its CURRENT commitment (not yet revoked, so
/// the watcher's one look at that block finds nothing), then keeps updating the channel off
/// chain: it pays the client 15,000 sat through an HTLC, the client releases the preimage, and
/// the LSP revokes the commitment that is already on chain. The client now holds the secret of a
/// revoked commitment sitting on chain with the LSP's to_local still under to_self_delay: justice
/// is possible and due. Safe behaviour: once given the newer channel, the watcher punishes it
/// (the client ends with at least its latest balance).
#[test]
fn commitment_revoked_after_it_confirmed_is_punished() {
    let mut h = build(4, FactoryConfig::regtest());
    let client_msat = 20_000_000;
    let (mut lsp, mut client, mut watcher, funding) = exit_with_channel(&h, client_msat);
    // The LSP's latest commitment, confirmed while still current.
    let (commitment, _) = lsp.signed_latest_commitment().unwrap();
    confirm_with_lsp_anchor(&mut h, &commitment);
    assert!(h.chain.get_utxo(&funding).unwrap().is_none());
    // Not revoked yet: the watcher reports the channel closed and claims our to_remote in it
    // (an honest client stops updating it here; this one goes on, and is still protected).
    let events = watcher.poll(&h.chain).unwrap();
    let claim = match events.as_slice() {
        [WatchEvent::ChannelClosed { commitment: c, .. }, WatchEvent::Claimed {
            commitment: d,
            claim,
            ..
        }] if *c == commitment.compute_txid() && d == c => *claim,
        other => panic!("expected the close and our claim, got {other:?}"),
    };
    // The channel keeps going off chain: the LSP pays the client, the client fulfills.
    let now = tip(&h);
    let preimage = [7u8; 32];
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let add = lsp.add_htlc(15_000_000, hash, now + 40, now).unwrap();
    client.receive_add(&add, now).unwrap();
    round(&mut lsp, &mut client);
    let f = client.fulfill_htlc(add.id, preimage).unwrap();
    assert_eq!(
        lsp.receive_fulfill(&f).unwrap(),
        preimage,
        "the LSP has the preimage"
    );
    round(&mut client, &mut lsp);
    assert_eq!(client.balance_msat(), client_msat + 15_000_000);
    assert!(
        client.is_revoked_commitment(&commitment),
        "the client holds the secret of the commitment on chain"
    );
    watcher.set_channels(vec![(client.clone(), funding)]);
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let events = watcher.poll(&h.chain).unwrap();
    let justice = events.iter().find_map(|e| match e {
        WatchEvent::Justice { justice, .. } => Some(*justice),
        _ => None,
    });
    let Some(justice) = justice else {
        // Justice was possible: the client's own justice transaction is accepted right now.
        let payout = h.factory.client_payout_script(ClientId(0));
        let possible = client
            .justice_transaction(&commitment, payout, FEE_RATE)
            .unwrap();
        h.chain.submit_transaction(&possible).unwrap();
        panic!(
            "a revoked commitment is on chain, the LSP's to_local still locked for 144 blocks, \
             and the watcher holds its secret: no justice ({events:?}); the client keeps \
             {} sat of its {} sat balance",
            client_msat / 1000,
            client.balance_msat() / 1000
        );
    };
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let justice = confirmed_tx(&h, justice);
    let claim = confirmed_tx(&h, claim);
    // Our to_remote by the claim, the LSP's to_local by justice.
    let got: Amount = justice
        .output
        .iter()
        .chain(&claim.output)
        .map(|o| o.value)
        .sum();
    assert!(got >= Amount::from_sat(client.balance_msat() / 1000));
}
