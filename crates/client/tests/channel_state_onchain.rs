//! The channel state machine's own commitments on chain (Bitcoin Core's engine), after the
//! client's unilateral exit of the factory: the client closes with its latest commitment, paid for
//! with its fee coin; when the LSP publishes a revoked commitment, the client's justice transaction
//! takes the LSP's balance at once.

mod common;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{Amount, FeeRate, OutPoint, TxOut};
use common::*;
use superscalar_chain::{Chain, RejectReason};
use superscalar_client::bump::fee_coin_child;
use superscalar_core::channel::state::{Channel, ChannelLimits, ChannelSetup};
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, TxKind};
use superscalar_wallet::burn_script;

const CLIENT: u32 = 2;

/// The leaf channel of client 2, opened by the LSP with 40,000 of its 52,000 sat; returns the LSP
/// side before and after a 10,000-sat payment to the client, and the client side after.
fn channel(h: &Harness) -> (Channel, Channel, Channel) {
    let c = ClientId(CLIENT);
    let txid_of = |k: TxKind| h.lsp.signed(k).map(|s| s.tx.compute_txid());
    let setup = |we_opened, our| ChannelSetup {
        funding_outpoint: h
            .factory
            .slot_outpoint(
                Slot::Channel(c),
                h.funding,
                &h.factory.initial_version(),
                txid_of,
            )
            .unwrap(),
        funding: TxOut {
            value: capacity(CLIENT),
            script_pubkey: h.factory.script_pubkey(Slot::Channel(c)).unwrap(),
        },
        funding_key: h.factory.signing_key(Slot::Channel(c)).unwrap(),
        we_opened,
        our_balance_msat: our,
    };
    let key = h.factory.signing_key(Slot::Channel(c)).unwrap();
    let (ls, cs) = (
        channel_secrets(50, h.lsp_key),
        channel_secrets(80, h.client_keys[CLIENT as usize]),
    );
    let limits = ChannelLimits {
        to_self_delay: 6,
        ..ChannelLimits::default()
    };
    let (la, ca) = (
        Channel::announcement(&ls, &key, setup(true, 0).funding_outpoint),
        Channel::announcement(&cs, &key, setup(true, 0).funding_outpoint),
    );
    let mut lsp = Channel::new(setup(true, 40_000_000), ls, limits, ca, limits).unwrap();
    let mut client = Channel::new(
        setup(false, capacity(CLIENT).to_sat() * 1000 - 40_000_000),
        cs,
        limits,
        la,
        limits,
    )
    .unwrap();
    round(&mut lsp, &mut client);
    let old_lsp = lsp.clone();
    let preimage = [7u8; 32];
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let tip = h.chain.tip().unwrap().height;
    let add = lsp.add_htlc(10_000_000, hash, tip + 500, tip).unwrap();
    client.receive_add(&add, tip).unwrap();
    round(&mut lsp, &mut client);
    let f = client.fulfill_htlc(add.id, preimage).unwrap();
    lsp.receive_fulfill(&f).unwrap();
    round(&mut client, &mut lsp);
    assert_eq!(
        client.balance_msat(),
        capacity(CLIENT).to_sat() * 1000 - 30_000_000
    );
    (old_lsp, lsp, client)
}

fn fee_coin(h: &Harness) -> (OutPoint, TxOut) {
    let txid_of = |k: TxKind| h.lsp.signed(k).map(|s| s.tx.compute_txid());
    let op = h
        .factory
        .slot_outpoint(
            Slot::FeeCoin(ClientId(CLIENT)),
            h.funding,
            &h.factory.initial_version(),
            txid_of,
        )
        .unwrap();
    (op, h.chain.get_utxo(&op).unwrap().unwrap().txout)
}

#[test]
fn client_closes_with_the_latest_commitment_of_the_state_machine() {
    let h = build(3, FactoryConfig::regtest());
    let (_, lsp, client) = channel(&h);
    exit_alone(&h, ClientId(CLIENT));
    let (commit, htlc_txs) = client.signed_latest_commitment().unwrap();
    assert!(htlc_txs.is_empty());
    assert!(matches!(
        h.chain
            .submit_transaction(&commit)
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::FeeTooLow { .. })
    ));
    let payout = h.factory.client_payout_script(ClientId(CLIENT));
    let child = fee_coin_child(
        &commit,
        Amount::ZERO,
        fee_coin(&h),
        &h.client_keys[CLIENT as usize],
        payout,
        FeeRate::from_sat_per_vb_u32(2),
    )
    .unwrap();
    h.chain.submit_package(&commit, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&commit.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    let mut values: Vec<u64> = commit.output.iter().map(|o| o.value.to_sat()).collect();
    values.sort();
    assert_eq!(values, vec![0, 22_000, 30_000], "anchor, client, LSP");
    assert_eq!(lsp.balance_msat(), 30_000_000);
    // The client's to_local after to_self_delay (6 blocks), refused one block early.
    let claim = client
        .claim_to_local(&commit, burn_script(), FeeRate::from_sat_per_vb_u32(2))
        .unwrap();
    h.chain.mine_blocks(4, &burn_script()).unwrap();
    assert!(matches!(
        h.chain
            .submit_transaction(&claim)
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::SequenceLocked { .. })
    ));
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    h.chain.submit_transaction(&claim).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&claim.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    assert!(claim.output[0].value > Amount::from_sat(21_500));
}

#[test]
fn a_revoked_lsp_commitment_is_punished_by_the_client() {
    let mut h = build(3, FactoryConfig::regtest());
    let (old_lsp, lsp, client) = channel(&h);
    exit_alone(&h, ClientId(CLIENT));
    // The LSP publishes its revoked commitment (40,000 sat to itself) and pays for it.
    let (old, _) = old_lsp.signed_latest_commitment().unwrap();
    let anchor = old
        .output
        .iter()
        .position(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey))
        .unwrap() as u32;
    h.lsp_wallet.sync(&h.chain).unwrap();
    let child = h
        .lsp_wallet
        .build_anchor_child(&old, Amount::ZERO, anchor, FeeRate::from_sat_per_vb_u32(2))
        .unwrap();
    h.lsp_wallet
        .broadcast_package(&h.chain, &old, &child)
        .unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    // The client takes the LSP's to_local at once with the revocation key.
    let justice = client
        .justice_transaction(&old, burn_script(), FeeRate::from_sat_per_vb_u32(2))
        .unwrap();
    h.chain.submit_transaction(&justice).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&justice.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    assert!(justice.output[0].value > Amount::from_sat(39_000));
    // Its latest commitment is not revoked: no justice against it.
    let (latest, _) = lsp.signed_latest_commitment().unwrap();
    assert!(client
        .justice_transaction(&latest, burn_script(), FeeRate::from_sat_per_vb_u32(2))
        .is_err());
}

/// Both HTLC directions in flight on client 2's channel: X (10,000 sat, LSP -> client, whose
/// preimage the client knows) and Y (8,000 sat, client -> LSP, expiring at `expiry`).
fn channel_with_htlcs(h: &Harness, expiry: u32) -> (u64, Channel, Channel, [u8; 32], [u8; 32]) {
    let (_, mut lsp, mut client) = channel(h);
    let tip = h.chain.tip().unwrap().height;
    let px = [0x11u8; 32];
    let hx = sha256::Hash::hash(&px).to_byte_array();
    let hy = sha256::Hash::hash(&[0x22u8; 32]).to_byte_array();
    let x = lsp.add_htlc(10_000_000, hx, tip + 500, tip).unwrap();
    client.receive_add(&x, tip).unwrap();
    round(&mut lsp, &mut client);
    let y = client.add_htlc(8_000_000, hy, expiry, tip).unwrap();
    lsp.receive_add(&y, tip).unwrap();
    round(&mut client, &mut lsp);
    (x.id, lsp, client, px, hx)
}

#[test]
fn htlcs_in_flight_are_claimed_by_preimage_and_by_timeout() {
    let mut h = build(3, FactoryConfig::regtest());
    let expiry = h.chain.tip().unwrap().height + 60;
    let (_, lsp, client, px, hx) = channel_with_htlcs(&h, expiry);
    exit_alone(&h, ClientId(CLIENT));
    // The LSP publishes its latest commitment with both HTLCs in flight.
    let (commit, _) = lsp.signed_latest_commitment().unwrap();
    assert_eq!(commit.output.len(), 5, "anchor, two balances, two HTLCs");
    confirm_with_lsp_anchor(&mut h, &commit);
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let preimages = std::collections::BTreeMap::from([(hx, px)]);
    // Now: only X, by preimage.
    let tip = h.chain.tip().unwrap().height;
    let claims = client
        .claim_htlcs(&commit, &preimages, tip, burn_script(), rate)
        .unwrap();
    assert_eq!(claims.len(), 1);
    h.chain.submit_transaction(&claims[0]).unwrap();
    // Y's timeout claim with its lock not reached: refused by the mempool.
    let early = client
        .claim_htlcs(&commit, &Default::default(), expiry, burn_script(), rate)
        .unwrap();
    assert_eq!(early.len(), 1);
    assert!(matches!(
        h.chain
            .submit_transaction(&early[0])
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::NonFinal { .. })
    ));
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&claims[0].compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    // At the expiry: Y back to the client by timeout.
    let tip = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(expiry - tip, &burn_script()).unwrap();
    h.chain.submit_transaction(&early[0]).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&early[0].compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
}

#[test]
fn a_revoked_client_commitment_is_punished_by_the_lsp_whole_channel() {
    let h = build(3, FactoryConfig::regtest());
    let expiry = h.chain.tip().unwrap().height + 300;
    // The client's commitment with both HTLCs in flight, then revoked by two more rounds.
    let (x, mut lsp, mut client, px, _) = channel_with_htlcs(&h, expiry);
    let revoked_client = client.clone();
    let f = client.fulfill_htlc(x, px).unwrap();
    lsp.receive_fulfill(&f).unwrap();
    round(&mut client, &mut lsp);
    exit_alone(&h, ClientId(CLIENT));
    let (old, _) = revoked_client.signed_latest_commitment().unwrap();
    let payout = h.factory.client_payout_script(ClientId(CLIENT));
    let child = fee_coin_child(
        &old,
        Amount::ZERO,
        fee_coin(&h),
        &h.client_keys[CLIENT as usize],
        payout,
        FeeRate::from_sat_per_vb_u32(2),
    )
    .unwrap();
    h.chain.submit_package(&old, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let justice = lsp
        .justice_transaction(&old, burn_script(), FeeRate::from_sat_per_vb_u32(2))
        .unwrap();
    // Every output but the anchor: the client's to_local, the LSP's to_remote, both HTLCs.
    assert_eq!(justice.input.len(), old.output.len() - 1);
    h.chain.submit_transaction(&justice).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&justice.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    let total: u64 = old.output.iter().map(|o| o.value.to_sat()).sum();
    assert!(
        justice.output[0].value.to_sat() + 1_000 > total,
        "the whole channel, less the fee"
    );
}

#[test]
fn the_watcher_punishes_a_revoked_commitment_it_sees_in_a_block() {
    use superscalar_client::watch::{WatchEvent, Watcher};
    let mut h = build(3, FactoryConfig::regtest());
    let (old_lsp, _lsp, client) = channel(&h);
    exit_alone(&h, ClientId(CLIENT));
    let c = ClientId(CLIENT);
    let txid_of = |k: TxKind| h.lsp.signed(k).map(|s| s.tx.compute_txid());
    let funding = h
        .factory
        .slot_outpoint(
            Slot::Channel(c),
            h.funding,
            &h.factory.initial_version(),
            txid_of,
        )
        .unwrap();
    let tip = h.chain.tip().unwrap().height;
    let mut watcher = Watcher::new(
        vec![],
        vec![(client, funding)],
        burn_script(),
        FeeRate::from_sat_per_vb_u32(2),
        tip + 1,
    );
    assert!(watcher.poll(&h.chain).unwrap().is_empty());
    let (old, _) = old_lsp.signed_latest_commitment().unwrap();
    let anchor = old
        .output
        .iter()
        .position(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey))
        .unwrap() as u32;
    h.lsp_wallet.sync(&h.chain).unwrap();
    let child = h
        .lsp_wallet
        .build_anchor_child(&old, Amount::ZERO, anchor, FeeRate::from_sat_per_vb_u32(2))
        .unwrap();
    h.lsp_wallet
        .broadcast_package(&h.chain, &old, &child)
        .unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let events = watcher.poll(&h.chain).unwrap();
    let justice = match events.as_slice() {
        [WatchEvent::ChannelClosed { commitment, .. }, WatchEvent::Justice {
            revoked, justice, ..
        }] if *commitment == old.compute_txid() => {
            assert_eq!(*revoked, old.compute_txid());
            *justice
        }
        other => panic!("expected one justice transaction, got {other:?}"),
    };
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(h.chain.tx_status(&justice).unwrap().confirmations(), 1);
}

/// The client closes with its own latest commitment while both HTLCs are in flight: X (received)
/// goes through HTLC-success with its preimage, Y (offered) through HTLC-timeout from its expiry,
/// each paid for by a fee input chained from the fee coin (the LSP's signature covers only its
/// own input and output), and each is claimed after `to_self_delay`. The LSP's watcher sweeps its
/// to_remote at once and learns X's preimage from the HTLC-success.
#[test]
fn the_clients_own_commitment_settles_its_htlcs_through_second_stages() {
    use superscalar_client::bump::sign_key_path_input;
    use superscalar_client::watch::{WatchEvent, Watcher};
    let h = build(3, FactoryConfig::regtest());
    let expiry = h.chain.tip().unwrap().height + 60;
    let (_, lsp, client, px, hx) = channel_with_htlcs(&h, expiry);
    exit_alone(&h, ClientId(CLIENT));
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let key = h.client_keys[CLIENT as usize];
    let fee_script = h.factory.fee_coin_script(ClientId(CLIENT));
    let tip = h.chain.tip().unwrap().height;
    let mut watcher = Watcher::new(
        vec![],
        vec![(lsp.clone(), lsp.funding_outpoint())],
        burn_script(),
        rate,
        tip + 1,
    );
    assert!(watcher.poll(&h.chain).unwrap().is_empty());
    let (commit, _) = client.signed_latest_commitment().unwrap();
    let child = fee_coin_child(
        &commit,
        Amount::ZERO,
        fee_coin(&h),
        &key,
        fee_script.clone(),
        rate,
    )
    .unwrap();
    h.chain.submit_package(&commit, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    // The LSP's watcher: the channel closed with both HTLCs in it, its to_remote swept at once.
    let events = watcher.poll(&h.chain).unwrap();
    let sweep = match events.as_slice() {
        [WatchEvent::ChannelClosed { htlcs, .. }, WatchEvent::Claimed { claim, .. }] => {
            assert_eq!(htlcs.len(), 2);
            *claim
        }
        other => panic!("expected the close and the LSP's sweep, got {other:?}"),
    };
    let outputs = client.htlc_outputs(&commit).unwrap();
    assert_eq!(outputs.len(), 2);
    let x = *outputs.iter().find(|o| !o.htlc.offered).unwrap();
    let y = *outputs.iter().find(|o| o.htlc.offered).unwrap();
    assert_eq!(x.htlc.payment_hash, hx);
    // Seen from the LSP, the same outputs the other way round.
    let theirs = lsp.htlc_outputs(&commit).unwrap();
    assert!(theirs.iter().any(|o| o.vout == x.vout && o.htlc.offered));
    assert!(theirs.iter().any(|o| o.vout == y.vout && !o.htlc.offered));
    let coin = (
        OutPoint::new(child.compute_txid(), 0),
        child.output[0].clone(),
    );
    // A wrong preimage, a preimage for a timeout, no preimage for a success: refused.
    for (vout, p) in [
        (x.vout, Some([0u8; 32])),
        (y.vout, Some(px)),
        (x.vout, None),
    ] {
        assert!(client
            .htlc_second_stage(&commit, vout, p, coin.clone(), fee_script.clone(), rate)
            .is_err());
    }
    let spent = |vout: u32| commit.output[vout as usize].clone();
    let mut success = client
        .htlc_second_stage(
            &commit,
            x.vout,
            Some(px),
            coin.clone(),
            fee_script.clone(),
            rate,
        )
        .unwrap();
    sign_key_path_input(&mut success, 1, &[spent(x.vout), coin.1.clone()], &key).unwrap();
    h.chain.submit_transaction(&success).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(h.chain.tx_status(&sweep).unwrap().confirmations(), 1);
    assert_eq!(
        h.chain
            .tx_status(&success.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    // The LSP learns X's preimage from the block.
    let events = watcher.poll(&h.chain).unwrap();
    assert!(
        events.iter().any(|e| matches!(e,
            WatchEvent::HtlcResolved { payment_hash, offered: true, preimage: Some(p), .. }
                if *payment_hash == hx && *p == px)),
        "{events:?}"
    );
    // Y: refused before its expiry, accepted from it.
    let coin = (
        OutPoint::new(success.compute_txid(), 1),
        success.output[1].clone(),
    );
    let payout = h.factory.client_payout_script(ClientId(CLIENT));
    let mut timeout = client
        .htlc_second_stage(&commit, y.vout, None, coin.clone(), payout, rate)
        .unwrap();
    sign_key_path_input(&mut timeout, 1, &[spent(y.vout), coin.1], &key).unwrap();
    assert!(matches!(
        h.chain
            .submit_transaction(&timeout)
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::NonFinal { .. })
    ));
    let tip = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(expiry - tip, &burn_script()).unwrap();
    h.chain.submit_transaction(&timeout).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    // Both second-stage outputs after to_self_delay (6 blocks), refused one block early.
    let claim_x = client
        .claim_delayed(&commit, &success, burn_script(), rate)
        .unwrap();
    let claim_y = client
        .claim_delayed(&commit, &timeout, burn_script(), rate)
        .unwrap();
    h.chain.mine_blocks(4, &burn_script()).unwrap();
    assert!(matches!(
        h.chain
            .submit_transaction(&claim_y)
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::SequenceLocked { .. })
    ));
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    h.chain.submit_transaction(&claim_x).unwrap();
    h.chain.submit_transaction(&claim_y).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    for c in [&claim_x, &claim_y] {
        assert_eq!(
            h.chain
                .tx_status(&c.compute_txid())
                .unwrap()
                .confirmations(),
            1
        );
    }
    assert!(claim_x.output[0].value > Amount::from_sat(9_500));
    assert!(claim_y.output[0].value > Amount::from_sat(7_500));
}

/// The client closes with its own commitment and never claims X: from X's expiry the LSP's
/// watcher takes it back by timeout, and reports it resolved without preimage (the payment it
/// carried can be failed upstream).
#[test]
fn the_lsp_watcher_takes_back_an_unclaimed_htlc_by_timeout() {
    use superscalar_client::watch::{WatchEvent, Watcher};
    let h = build(3, FactoryConfig::regtest());
    let created = h.chain.tip().unwrap().height;
    let (_, lsp, client, _, hx) = channel_with_htlcs(&h, created + 60);
    exit_alone(&h, ClientId(CLIENT));
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let tip = h.chain.tip().unwrap().height;
    let mut watcher = Watcher::new(
        vec![],
        vec![(lsp.clone(), lsp.funding_outpoint())],
        burn_script(),
        rate,
        tip + 1,
    );
    let (commit, _) = client.signed_latest_commitment().unwrap();
    let child = fee_coin_child(
        &commit,
        Amount::ZERO,
        fee_coin(&h),
        &h.client_keys[CLIENT as usize],
        burn_script(),
        rate,
    )
    .unwrap();
    h.chain.submit_package(&commit, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    watcher.poll(&h.chain).unwrap();
    // X was offered by the LSP at `created + 500`: nothing to claim before.
    let x_expiry = created + 500;
    let tip = h.chain.tip().unwrap().height;
    h.chain
        .mine_blocks(x_expiry - 1 - tip, &burn_script())
        .unwrap();
    let events = watcher.poll(&h.chain).unwrap();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, WatchEvent::Claimed { .. })),
        "{events:?}"
    );
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let events = watcher.poll(&h.chain).unwrap();
    let claim = match events.as_slice() {
        [WatchEvent::Claimed { claim, .. }] => *claim,
        other => panic!("expected X's timeout claim, got {other:?}"),
    };
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(h.chain.tx_status(&claim).unwrap().confirmations(), 1);
    let events = watcher.poll(&h.chain).unwrap();
    assert!(
        events.iter().any(|e| matches!(e,
            WatchEvent::HtlcResolved { payment_hash, offered: true, preimage: None, .. }
                if *payment_hash == hx)),
        "{events:?}"
    );
}
