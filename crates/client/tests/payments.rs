//! An LSP and two clients of one factory, in process: the leaf channels are funded by the factory's
//! channel outputs (MuSig2 of the factory keys); client A pays client B through the LSP 1,000 times
//! with balances exact to the msat, and a payment failed downstream changes no balance.

mod common;

use bitcoin::hashes::{sha256, Hash};
use common::*;
use superscalar_core::channel::state::Channel;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig};

/// The channel of `client` in the harness' factory: (LSP side, client side); the client starts
/// with `client_msat`.
fn leaf_channel(h: &Harness, client: u32, client_msat: u64) -> (Channel, Channel) {
    let lsp = states(h).lsp;
    open_channel(
        h,
        &lsp,
        Slot::Channel(ClientId(client)),
        client,
        client_msat,
        100 + client as u8,
    )
}

#[test]
fn a_thousand_payments_between_two_clients_of_one_factory() {
    let h = build(2, FactoryConfig::regtest());
    let (mut lsp_a, mut a) = leaf_channel(&h, 0, 45_000_000);
    let (mut lsp_b, mut b) = leaf_channel(&h, 1, 0);
    let start = [
        a.balance_msat(),
        lsp_a.balance_msat(),
        lsp_b.balance_msat(),
        b.balance_msat(),
    ];
    let height = 500;
    let mut total = 0;
    for i in 0..1000u64 {
        let amount = 7 + i * 31; // msat, mostly far below any dust limit
        let mut pre = [0u8; 32];
        pre[..8].copy_from_slice(&i.to_le_bytes());
        let hash = sha256::Hash::hash(&pre).to_byte_array();
        let add = a.add_htlc(amount, hash, height + 100, height).unwrap();
        lsp_a.receive_add(&add, height).unwrap();
        round(&mut a, &mut lsp_a);
        let fwd = lsp_b.add_htlc(amount, hash, height + 60, height).unwrap();
        b.receive_add(&fwd, height).unwrap();
        round(&mut lsp_b, &mut b);
        if i % 97 == 13 {
            // B cannot take this one: failed back all the way.
            let f = b.fail_htlc(fwd.id).unwrap();
            lsp_b.receive_fail(&f).unwrap();
            round(&mut b, &mut lsp_b);
            let f = lsp_a.fail_htlc(add.id).unwrap();
            a.receive_fail(&f).unwrap();
            round(&mut lsp_a, &mut a);
            continue;
        }
        let f = b.fulfill_htlc(fwd.id, pre).unwrap();
        let got = lsp_b.receive_fulfill(&f).unwrap();
        round(&mut b, &mut lsp_b);
        let f = lsp_a.fulfill_htlc(add.id, got).unwrap();
        a.receive_fulfill(&f).unwrap();
        round(&mut lsp_a, &mut a);
        total += amount;
    }
    assert_eq!(a.balance_msat(), start[0] - total);
    assert_eq!(lsp_a.balance_msat(), start[1] + total);
    assert_eq!(lsp_b.balance_msat(), start[2] - total);
    assert_eq!(b.balance_msat(), start[3] + total);
    assert_eq!(a.their_balance_msat(), lsp_a.balance_msat());
    assert_eq!(b.their_balance_msat(), lsp_b.balance_msat());
}
