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
