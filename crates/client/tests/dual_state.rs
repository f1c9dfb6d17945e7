//! Dual-state channels across a factory advance, on the embedded chain: two HTLCs added just
//! before the leaf's state advances are signed on both channel outpoints (old and new leaf
//! state), and are resolved correctly whichever state ends up on chain; once the old outpoint is
//! retired, a revoked commitment on it is still punished.

mod common;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{Amount, FeeRate, OutPoint, Transaction};
use common::*;
use superscalar_chain::{Chain, RejectReason};
use superscalar_client::watch::{WatchEvent, Watcher};
use superscalar_client::UnilateralExit;
use superscalar_core::ceremony::SignedTx;
use superscalar_core::channel::state::Channel;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, TxKind};
use superscalar_wallet::burn_script;

const X_PREIMAGE: [u8; 32] = [0x11; 32];

struct Setup {
    h: Harness,
    s: States,
    lsp: Channel,
    client: Channel,
    old: OutPoint,
    new: OutPoint,
    expiry: u32,
}

/// Client 0's channel with X (10,000 sat, LSP -> client) and Y (5,000 sat, client -> LSP,
/// expiring at `expiry`) in flight, then an advance of its leaf; the channel signs on both
/// outpoints.
fn setup() -> Setup {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let old = s.lsp.outpoint(Slot::Channel(ClientId(0))).unwrap();
    let (mut lsp, mut client) =
        open_channel(&h, &s.lsp, Slot::Channel(ClientId(0)), 0, 20_000_000, 60);
    let tip = h.chain.tip().unwrap().height;
    let expiry = tip + 80;
    let hx = sha256::Hash::hash(&X_PREIMAGE).to_byte_array();
    let hy = sha256::Hash::hash(&[0x22; 32]).to_byte_array();
    let x = lsp.add_htlc(10_000_000, hx, tip + 500, tip).unwrap();
    client.receive_add(&x, tip).unwrap();
    round(&mut lsp, &mut client);
    let y = client.add_htlc(5_000_000, hy, expiry, tip).unwrap();
    lsp.receive_add(&y, tip).unwrap();
    round(&mut client, &mut lsp);
    // The leaf advances: the channel output moves to the new leaf state. Its outpoint is known
    // from the proposal, before anything is signed.
    let (lsp_ceremony, ceremonies) = start_advance(&h, &mut s, 0, None);
    let slot = Slot::Channel(ClientId(0));
    let new = s.clients[0]
        .pending_outpoint(slot, |k| ceremonies[0].1.txid(k))
        .unwrap();
    assert_eq!(
        s.lsp.pending_outpoint(slot, |k| lsp_ceremony.txid(k)),
        Some(new)
    );
    assert_ne!(old, new);
    // Dual-state: both sides add the new outpoint, exchange verification nonces, and re-sign
    // the current commitments (with both HTLCs) on both outpoints, each with its own nonces.
    let nl = lsp.add_funding(new).unwrap();
    let nc = client.add_funding(new).unwrap();
    lsp.receive_funding_nonce(&nc).unwrap();
    client.receive_funding_nonce(&nl).unwrap();
    let before = (lsp.balance_msat(), client.balance_msat());
    let sig = lsp.sign_commitment().unwrap();
    assert_eq!(sig.others.len(), 1);
    assert_ne!(sig.others[0].nonce, sig.nonce, "one nonce per outpoint");
    // A signature set that leaves out a live outpoint is refused and changes nothing.
    let mut partial = sig.clone();
    partial.others.clear();
    let summary = client.summary();
    assert!(client.receive_commitment_signed(&partial).is_err());
    assert_eq!(client.summary(), summary);
    let raa = client.receive_commitment_signed(&sig).unwrap();
    let sig = client.sign_commitment().unwrap();
    lsp.receive_revoke_and_ack(&raa).unwrap();
    let raa = lsp.receive_commitment_signed(&sig).unwrap();
    client.receive_revoke_and_ack(&raa).unwrap();
    assert_eq!(before, (lsp.balance_msat(), client.balance_msat()));
    assert_eq!(lsp.funding_outpoints(), vec![old, new]);
    // Only now is the new factory state signed (and the old stock version's secret revealed).
    assert!(!s.clients[0].is_settled());
    sign_update(&h, &mut s, lsp_ceremony, ceremonies);
    assert!(s.clients[0].is_settled());
    assert_eq!(s.clients[0].outpoint(slot), Some(new));
    Setup {
        h,
        s,
        lsp,
        client,
        old,
        new,
        expiry,
    }
}

fn publish_path(h: &Harness, path: &[SignedTx]) {
    let mut exit = UnilateralExit::new(path).unwrap();
    finish(h, &mut exit);
}

/// The LSP publishes its latest commitment on `outpoint` (CPFP from its wallet); the client
/// claims X by preimage at once and Y by timeout at its expiry.
fn resolve_on(h: &mut Harness, lsp: &Channel, client: &Channel, outpoint: OutPoint, expiry: u32) {
    let (commit, _) = lsp.signed_latest_commitment_on(outpoint).unwrap();
    assert_eq!(commit.input[0].previous_output, outpoint);
    assert_eq!(commit.output.len(), 5, "anchor, two balances, two HTLCs");
    // The client's balance output holds its latest off-chain balance to the sat.
    assert!(commit
        .output
        .iter()
        .any(|o| o.value.to_sat() * 1000 == client.balance_msat()));
    confirm_with_lsp_anchor(h, &commit);
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let hx = sha256::Hash::hash(&X_PREIMAGE).to_byte_array();
    let preimages = std::collections::BTreeMap::from([(hx, X_PREIMAGE)]);
    let tip = h.chain.tip().unwrap().height;
    let claims = client
        .claim_htlcs(&commit, &preimages, tip, burn_script(), rate)
        .unwrap();
    assert_eq!(claims.len(), 1, "X now");
    let x_value: Amount = claims[0].output.iter().map(|o| o.value).sum();
    assert!(x_value > Amount::from_sat(9_500) && x_value < Amount::from_sat(10_000));
    h.chain.submit_transaction(&claims[0]).unwrap();
    let y = client
        .claim_htlcs(&commit, &Default::default(), expiry, burn_script(), rate)
        .unwrap();
    assert_eq!(y.len(), 1, "Y at its expiry");
    assert!(matches!(
        h.chain
            .submit_transaction(&y[0])
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::NonFinal { .. })
    ));
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        h.chain
            .tx_status(&claims[0].compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    let tip = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(expiry - tip, &burn_script()).unwrap();
    h.chain.submit_transaction(&y[0]).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        h.chain
            .tx_status(&y[0].compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
}

#[test]
fn htlcs_resolve_when_the_old_state_ends_up_on_chain() {
    let Setup {
        mut h,
        lsp,
        client,
        old,
        expiry,
        ..
    } = setup();
    // The superseded leaf state confirms (nobody answered it): the channel lives at `old`.
    let old_path = original_path(&h, 0);
    publish_path(&h, &old_path);
    assert!(h.chain.get_utxo(&old).unwrap().is_some());
    resolve_on(&mut h, &lsp, &client, old, expiry);
}

#[test]
fn htlcs_resolve_when_the_new_state_ends_up_on_chain() {
    let Setup {
        mut h,
        s,
        lsp,
        client,
        new,
        expiry,
        ..
    } = setup();
    publish_path(&h, &s.clients[0].exit_path(ClientId(0)));
    assert!(h.chain.get_utxo(&new).unwrap().is_some());
    resolve_on(&mut h, &lsp, &client, new, expiry);
}

#[test]
fn a_revoked_commitment_on_a_retired_outpoint_is_still_punished() {
    let Setup {
        mut h,
        s,
        lsp: mut lsp_ch,
        client: mut client_ch,
        old,
        new,
        ..
    } = setup();
    // The new state is signed and the old one's secret is held (the advance completed): the old
    // outpoint is retired on both sides, and the next round revokes its last commitment.
    assert!(s.clients[0].is_settled() && s.lsp.is_settled());
    let revoked_lsp = lsp_ch.clone();
    lsp_ch.retire_funding(old).unwrap();
    client_ch.retire_funding(old).unwrap();
    assert_eq!(lsp_ch.funding_outpoints(), vec![new]);
    let f = client_ch.fulfill_htlc(0, X_PREIMAGE).unwrap();
    lsp_ch.receive_fulfill(&f).unwrap();
    round(&mut client_ch, &mut lsp_ch);
    let sig = lsp_ch.sign_commitment().unwrap();
    assert!(
        sig.others.is_empty(),
        "no more signatures on the retired outpoint"
    );
    let raa = client_ch.receive_commitment_signed(&sig).unwrap();
    let sig = client_ch.sign_commitment().unwrap();
    lsp_ch.receive_revoke_and_ack(&raa).unwrap();
    let raa = lsp_ch.receive_commitment_signed(&sig).unwrap();
    client_ch.receive_revoke_and_ack(&raa).unwrap();
    // The old leaf state confirms anyway and the LSP publishes its revoked commitment on it.
    // The client's watcher follows the channel at its new outpoint only, and still sees it.
    let old_path = original_path(&h, 0);
    publish_path(&h, &old_path);
    let mut watcher = Watcher::new(
        vec![],
        vec![(client_ch.clone(), new)],
        burn_script(),
        FeeRate::from_sat_per_vb_u32(2),
        h.chain.tip().unwrap().height + 1,
    );
    let (revoked, _): (Transaction, _) = revoked_lsp.signed_latest_commitment_on(old).unwrap();
    confirm_with_lsp_anchor(&mut h, &revoked);
    let events = watcher.poll(&h.chain).unwrap();
    let justice_txid = events
        .iter()
        .find_map(|e| match e {
            WatchEvent::Justice {
                justice,
                revoked: r,
                ..
            } if *r == revoked.compute_txid() => Some(*justice),
            _ => None,
        })
        .expect("the watcher punished the revoked commitment on the retired outpoint");
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(h.chain.tx_status(&justice_txid).unwrap().confirmations() > 0);
    let justice = h
        .chain
        .block_at(h.chain.tip().unwrap().height)
        .unwrap()
        .unwrap()
        .txdata
        .into_iter()
        .find(|t| t.compute_txid() == justice_txid)
        .unwrap();
    // Everything but the anchor: the LSP's balance and both HTLCs.
    let taken: Amount = justice.output.iter().map(|o| o.value).sum();
    assert!(taken > Amount::from_sat(45_000), "{taken}");
}

/// One lock-step payment of `msat` from the LSP to the client.
fn pay_client(lsp: &mut Channel, client: &mut Channel, msat: u64, nonce: u8, height: u32) {
    let preimage = [nonce; 32];
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let add = lsp.add_htlc(msat, hash, height + 200, height).unwrap();
    client.receive_add(&add, height).unwrap();
    round(lsp, client);
    let f = client.fulfill_htlc(add.id, preimage).unwrap();
    lsp.receive_fulfill(&f).unwrap();
    round(client, lsp);
}

/// One advance of client 0's leaf with the channel kept on both outpoints until the new state is
/// signed and settled, then the old outpoint retired and its last commitment revoked.
fn advance_with_channel(h: &Harness, s: &mut States, lsp: &mut Channel, client: &mut Channel) {
    let slot = Slot::Channel(ClientId(0));
    let old = s.clients[0].outpoint(slot).unwrap();
    let (lsp_ceremony, ceremonies) = start_advance(h, s, 0, None);
    let new = s.clients[0]
        .pending_outpoint(slot, |k| ceremonies[0].1.txid(k))
        .unwrap();
    let nl = lsp.add_funding(new).unwrap();
    let nc = client.add_funding(new).unwrap();
    lsp.receive_funding_nonce(&nc).unwrap();
    client.receive_funding_nonce(&nl).unwrap();
    round(lsp, client);
    sign_update(h, s, lsp_ceremony, ceremonies);
    assert!(s.clients[0].is_settled() && s.lsp.is_settled());
    lsp.retire_funding(old).unwrap();
    client.retire_funding(old).unwrap();
    round(lsp, client);
    assert_eq!(client.funding_outpoints(), vec![new]);
}

#[test]
fn after_several_advances_the_client_ends_with_its_latest_balance_to_the_sat() {
    use superscalar_client::bump::fee_coin_child;
    use superscalar_client::watch::{WatchEvent, Watcher};
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let (mut lsp, mut client) =
        open_channel(&h, &s.lsp, Slot::Channel(ClientId(0)), 0, 20_000_000, 70);
    let height = h.chain.tip().unwrap().height;
    // Payments and advances interleaved: five advances (one rollover into the root layer).
    for i in 0..5u8 {
        pay_client(
            &mut lsp,
            &mut client,
            1_234_567 + u64::from(i),
            0x30 + i,
            height,
        );
        advance_with_channel(&h, &mut s, &mut lsp, &mut client);
    }
    pay_client(&mut lsp, &mut client, 777_000, 0x40, height);
    let balance_msat = client.balance_msat();
    assert_eq!(balance_msat, 20_000_000 + 5 * 1_234_567 + 10 + 777_000);
    // The LSP publishes client 0's original path; the client's watcher answers each published
    // kickoff with its newest state, which confirms first.
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let root = superscalar_core::NodeId(0);
    let newest_root = s.clients[0]
        .latest(TxKind::State(root))
        .unwrap()
        .tx
        .compute_txid();
    let newest_leaf = s.clients[0]
        .latest(TxKind::State(leaf))
        .unwrap()
        .tx
        .compute_txid();
    let mut watcher = Watcher::new(
        vec![s.clients[0].exit_path(ClientId(0))],
        vec![],
        burn_script(),
        FeeRate::from_sat_per_vb_u32(2),
        h.chain.tip().unwrap().height + 1,
    )
    .with_punishments(s.clients[0].armed_punishments());
    let old_path = original_path(&h, 0);
    let mut attacker = UnilateralExit::new(&old_path).unwrap();
    let mut answered = 0;
    for _ in 0..100 {
        let _ = attacker.step(&h.chain, None);
        answered += watcher
            .poll(&h.chain)
            .unwrap()
            .iter()
            .filter(|e| matches!(e, WatchEvent::NewestState { .. }))
            .count();
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&newest_root).unwrap().confirmations() > 0 {
            break;
        }
    }
    assert!(answered >= 1, "the root state answered");
    assert!(h.chain.tx_status(&newest_root).unwrap().confirmations() > 0);
    // The old path is dead; the client finishes its newest path.
    assert!(attacker.step(&h.chain, None).is_err());
    let mut exit = UnilateralExit::new(&s.clients[0].exit_path(ClientId(0))).unwrap();
    finish(&h, &mut exit);
    assert!(h.chain.tx_status(&newest_leaf).unwrap().confirmations() > 0);
    // The client closes with its latest commitment on the newest outpoint, paid by its fee coin.
    let (commit, _) = client.signed_latest_commitment().unwrap();
    assert_eq!(
        commit.input[0].previous_output,
        s.clients[0].outpoint(Slot::Channel(ClientId(0))).unwrap()
    );
    let coin_op = s.clients[0].outpoint(Slot::FeeCoin(ClientId(0))).unwrap();
    let coin = h.chain.get_utxo(&coin_op).unwrap().unwrap().txout;
    let payout = h.factory.client_payout_script(ClientId(0));
    let child = fee_coin_child(
        &commit,
        Amount::ZERO,
        (coin_op, coin),
        &h.client_keys[0],
        payout,
        FeeRate::from_sat_per_vb_u32(2),
    )
    .unwrap();
    h.chain.submit_package(&commit, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    // Its to_local holds its latest off-chain balance to the sat.
    assert!(commit
        .output
        .iter()
        .any(|o| o.value.to_sat() * 1000 == balance_msat - balance_msat % 1000));
    let claim = client
        .claim_to_local(&commit, burn_script(), FeeRate::from_sat_per_vb_u32(2))
        .unwrap();
    h.chain.mine_blocks(200, &burn_script()).unwrap();
    h.chain.submit_transaction(&claim).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        h.chain
            .tx_status(&claim.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    let fee = Amount::from_sat(balance_msat / 1000) - claim.output[0].value;
    assert!(
        fee.to_sat() <= 2 * claim.vsize() as u64 + 1,
        "only the fee it chose"
    );
}
