//! Factories of many sizes and shapes, funded and signed, and one client with no on-chain coins
//! of its own exiting alone on the embedded chain (Bitcoin Core's engine).

mod common;

use bitcoin::OutPoint;
use common::*;
use superscalar_chain::Chain;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, TxKind};

fn check_exit(name: &str, n: u32, shape: superscalar_core::Shape, client: u32) {
    let config = FactoryConfig {
        shape,
        ..FactoryConfig::regtest()
    };
    let h = build(n, config);
    let c = ClientId(client);
    let blocks = exit_alone(&h, c);
    // The client's leaf outputs are confirmed with the expected amounts.
    let signed = h.clients[client as usize].signed();
    let leaf_state = signed
        .iter()
        .rev()
        .find(|s| matches!(s.kind, TxKind::State(_)))
        .unwrap();
    let outputs = h.factory.outputs_of(leaf_state.kind, &h.version0);
    let txid = leaf_state.tx.compute_txid();
    let pos = |slot| outputs.iter().position(|s| *s == slot).unwrap() as u32;
    let channel = h
        .chain
        .get_utxo(&OutPoint::new(txid, pos(Slot::Channel(c))))
        .unwrap()
        .expect("channel output confirmed");
    assert_eq!(channel.txout.value, capacity(client), "{name} n={n}");
    assert_eq!(
        channel.txout.script_pubkey,
        h.factory.script_pubkey(Slot::Channel(c)).unwrap()
    );
    let coin = h
        .chain
        .get_utxo(&OutPoint::new(txid, pos(Slot::FeeCoin(c))))
        .unwrap()
        .expect("fee coin confirmed");
    assert_eq!(coin.txout.value, h.factory.params().config.client_fee_coin);
    assert!(
        blocks <= h.factory.ewt_max() + 5,
        "{name} n={n}: exit took {blocks} blocks, EWT_max {}",
        h.factory.ewt_max()
    );
}

macro_rules! exit_tests {
    ($($name:ident: $shape:expr, $n:expr;)*) => {$(
        #[test]
        fn $name() {
            let shapes = default_shapes();
            let (label, shape) = shapes[$shape].clone();
            let n: u32 = $n;
            // The last client: it sits in the smallest, last subtree.
            check_exit(label, n, shape, n - 1);
        }
    )*};
}

exit_tests! {
    binary_n1: 0, 1;
    binary_n2: 0, 2;
    binary_n3: 0, 3;
    binary_n5: 0, 5;
    binary_n8: 0, 8;
    binary_n13: 0, 13;
    binary_n64: 0, 64;
    mixed_n1: 1, 1;
    mixed_n2: 1, 2;
    mixed_n3: 1, 3;
    mixed_n5: 1, 5;
    mixed_n8: 1, 8;
    mixed_n13: 1, 13;
    mixed_n64: 1, 64;
    static_ps2_n1: 2, 1;
    static_ps2_n2: 2, 2;
    static_ps2_n3: 2, 3;
    static_ps2_n5: 2, 5;
    static_ps2_n8: 2, 8;
    static_ps2_n13: 2, 13;
    static_ps2_n64: 2, 64;
    ps3_n1: 3, 1;
    ps3_n2: 3, 2;
    ps3_n3: 3, 3;
    ps3_n5: 3, 5;
    ps3_n8: 3, 8;
    ps3_n13: 3, 13;
    ps3_n64: 3, 64;
}

#[test]
fn first_client_of_a_binary_factory_exits_too() {
    let shapes = default_shapes();
    check_exit("binary-dw", 13, shapes[0].1.clone(), 0);
}

#[test]
fn a_client_with_coins_cpfps_kickoffs_when_fees_are_high() {
    use bitcoin::{Amount, FeeRate};
    use superscalar_client::{ExitProgress, UnilateralExit};
    use superscalar_wallet::{burn_script, OnchainWallet};
    let mut h = build(4, FactoryConfig::regtest());
    let mut wallet = OnchainWallet::from_seed([0x77; 32]).unwrap();
    let addr = wallet.new_address();
    h.faucet
        .fund(&h.chain, &addr, Amount::from_sat(200_000))
        .unwrap();
    wallet.sync(&h.chain).unwrap();
    h.chain.set_fee_floor(FeeRate::from_sat_per_vb_u32(40));
    let mut exit = UnilateralExit::new(h.clients[1].signed()).unwrap();
    let mut bumped = 0;
    loop {
        match exit.step(&h.chain, Some(&mut wallet)).unwrap() {
            ExitProgress::Broadcast { kind, cpfp, .. } => {
                // Kickoffs have anchors and get a child; states rely on their own fee.
                assert_eq!(cpfp, matches!(kind, TxKind::Kickoff(_)), "{kind:?}");
                bumped += usize::from(cpfp);
                h.chain.mine_blocks(1, &burn_script()).unwrap();
            }
            ExitProgress::Waiting { .. } => {
                h.chain.mine_blocks(1, &burn_script()).unwrap();
            }
            ExitProgress::Done => break,
        }
    }
    assert_eq!(bumped, h.factory.tree().path_of(ClientId(1)).len());
    wallet.sync(&h.chain).unwrap();
    assert!(
        wallet.balance().confirmed < Amount::from_sat(200_000),
        "the wallet paid for the bumps"
    );
}

#[test]
fn a_corrupted_exit_path_is_refused_not_a_panic() {
    use superscalar_client::{ExitError, UnilateralExit};
    let h = build(2, FactoryConfig::regtest());
    let mut signed = h.clients[0].signed().to_vec();
    assert!(matches!(
        UnilateralExit::new(&[]),
        Err(ExitError::InvalidPath(_))
    ));
    // Out of order.
    signed.swap(0, 1);
    assert!(matches!(
        UnilateralExit::new(&signed),
        Err(ExitError::InvalidPath(_))
    ));
    // A transaction without inputs.
    signed.swap(0, 1);
    signed[1].tx.input.clear();
    assert!(matches!(
        UnilateralExit::new(&signed),
        Err(ExitError::InvalidPath(_))
    ));
    let package = superscalar_client::ExitPackage::new(&h.factory, ClientId(0), h.funding, &signed);
    assert!(!package.to_json().is_empty());
}

#[test]
fn the_exit_package_path_holds_only_what_the_client_broadcasts() {
    let h = build(4, FactoryConfig::regtest());
    let signed = h.clients[0].signed().to_vec();
    let package = superscalar_client::ExitPackage::new(&h.factory, ClientId(0), h.funding, &signed);
    assert!(!package.path.is_empty());
    for t in &package.path {
        assert!(
            t.role.starts_with("kickoff") || t.role.starts_with("state"),
            "{} in the path",
            t.role
        );
    }
    // The stock punishments are kept apart, and neither they nor the timeouts are counted.
    assert!(!package.punishments.is_empty());
    assert!(package
        .punishments
        .iter()
        .all(|t| t.role.starts_with("punishment")));
    assert_eq!(
        package.path_vbytes,
        package.path.iter().map(|t| t.vbytes).sum::<u64>()
    );
    let exit = superscalar_client::exit::UnilateralExit::new(&signed).unwrap();
    assert_eq!(exit.path().len(), package.path.len());
}
