//! Wallets fed by the embedded chain: faucet, payments with exact balances, rebuild after restart,
//! and CPFP of a zero-fee TRUC parent through its P2A anchor.

use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Witness,
};
use superscalar_chain::{Chain, EmbeddedChain};
use superscalar_wallet::{Faucet, OnchainWallet, WalletError};

#[test]
fn faucet_payment_and_exact_balances() {
    let chain = EmbeddedChain::in_memory().unwrap();
    let mut faucet = Faucet::new(&chain, 2).unwrap();
    assert_eq!(faucet.available(), Amount::from_btc(100.0).unwrap());

    let mut alice = OnchainWallet::from_seed([1; 32]).unwrap();
    let mut bob = OnchainWallet::from_seed([2; 32]).unwrap();
    let addr = alice.new_address();
    let funding = faucet
        .fund(&chain, &addr, Amount::from_sat(1_000_000))
        .unwrap();
    alice.sync(&chain).unwrap();
    assert_eq!(alice.balance().confirmed, Amount::from_sat(1_000_000));

    let bob_addr = bob.new_address();
    let pay = alice
        .send(
            &chain,
            &bob_addr.script_pubkey(),
            Amount::from_sat(250_000),
            FeeRate::from_sat_per_vb_u32(3),
        )
        .unwrap();
    let fee = alice.fee_of(&pay).unwrap();
    assert_eq!(fee, chain.mempool_fee(&pay.compute_txid()).unwrap());
    assert!(fee.to_sat() >= 3 * pay.vsize() as u64);
    chain
        .mine_blocks(1, &superscalar_wallet::burn_script())
        .unwrap();
    alice.sync(&chain).unwrap();
    bob.sync(&chain).unwrap();
    assert_eq!(bob.balance().confirmed, Amount::from_sat(250_000));
    assert_eq!(
        alice.balance().confirmed,
        Amount::from_sat(1_000_000 - 250_000) - fee
    );
    assert_eq!(alice.balance().trusted_pending, Amount::ZERO);
    assert!(
        chain
            .tx_status(&funding.compute_txid())
            .unwrap()
            .confirmations()
            >= 2
    );
}

#[test]
fn wallet_state_is_rebuilt_from_the_chain_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_balance, bob_balance, tip) = {
        let chain = EmbeddedChain::open_dir(dir.path()).unwrap();
        let mut faucet = Faucet::new(&chain, 1).unwrap();
        let mut alice = OnchainWallet::from_seed([3; 32]).unwrap();
        let mut bob = OnchainWallet::from_seed([4; 32]).unwrap();
        // Several addresses, so the rescan must look past the first one.
        for i in 1..=5u64 {
            let a = alice.new_address();
            faucet
                .fund(&chain, &a, Amount::from_sat(100_000 * i))
                .unwrap();
        }
        alice.sync(&chain).unwrap();
        let b = bob.new_address();
        alice
            .send(
                &chain,
                &b.script_pubkey(),
                Amount::from_sat(700_000),
                FeeRate::from_sat_per_vb_u32(1),
            )
            .unwrap();
        faucet.mine(&chain, 1).unwrap();
        alice.sync(&chain).unwrap();
        bob.sync(&chain).unwrap();
        (alice.balance(), bob.balance(), chain.tip().unwrap())
    };
    // A new process: the chain reopens from disk, the wallets are recreated from their seeds.
    let chain = EmbeddedChain::open_dir(dir.path()).unwrap();
    assert_eq!(chain.tip().unwrap(), tip);
    let mut alice = OnchainWallet::from_seed([3; 32]).unwrap();
    let mut bob = OnchainWallet::from_seed([4; 32]).unwrap();
    alice.sync(&chain).unwrap();
    bob.sync(&chain).unwrap();
    assert_eq!(alice.balance(), alice_balance);
    assert_eq!(bob.balance(), bob_balance);
    assert_eq!(bob.balance().confirmed, Amount::from_sat(700_000));
    assert_eq!(alice.synced_height(), tip.height);
}

#[test]
fn insufficient_funds_is_a_typed_error() {
    let chain = EmbeddedChain::in_memory().unwrap();
    let mut faucet = Faucet::new(&chain, 1).unwrap();
    let mut alice = OnchainWallet::from_seed([5; 32]).unwrap();
    let a = alice.new_address();
    faucet.fund(&chain, &a, Amount::from_sat(10_000)).unwrap();
    alice.sync(&chain).unwrap();
    let err = alice
        .send(
            &chain,
            &a.script_pubkey(),
            Amount::from_sat(20_000),
            FeeRate::from_sat_per_vb_u32(1),
        )
        .unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { .. }),
        "{err}"
    );
    assert!(matches!(
        Faucet::new(&chain, 0),
        Err(WalletError::InvalidRequest(_))
    ));
    assert_eq!(alice.balance().confirmed, Amount::from_sat(10_000));
}

#[test]
fn wallet_bumps_a_zero_fee_truc_parent_through_its_anchor() {
    let chain = EmbeddedChain::in_memory().unwrap();
    let mut faucet = Faucet::new(&chain, 1).unwrap();
    let mut lsp = OnchainWallet::from_seed([6; 32]).unwrap();
    let a = lsp.new_address();
    let coin_tx = faucet.fund(&chain, &a, Amount::from_sat(50_000)).unwrap();
    // Another wallet owns the parent's input; the parent pays no fee and carries a 0-sat anchor.
    let mut owner = OnchainWallet::from_seed([7; 32]).unwrap();
    let o = owner.new_address();
    let src = faucet.fund(&chain, &o, Amount::from_sat(200_000)).unwrap();
    owner.sync(&chain).unwrap();
    lsp.sync(&chain).unwrap();
    let vout = src
        .output
        .iter()
        .position(|x| x.script_pubkey == o.script_pubkey())
        .unwrap() as u32;
    let dest = lsp.new_script();
    let parent_unsigned = Transaction {
        version: transaction::Version(3),
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(src.compute_txid(), vout),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(200_000),
                script_pubkey: dest,
            },
            TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_p2a(),
            },
        ],
    };
    let parent = owner.sign_transaction(parent_unsigned).unwrap();
    assert!(chain.submit_transaction(&parent).is_err());
    let target = FeeRate::from_sat_per_vb_u32(5);
    let child = lsp
        .build_anchor_child(&parent, Amount::ZERO, 1, target)
        .unwrap();
    let (p, c) = lsp.broadcast_package(&chain, &parent, &child).unwrap();
    let package_fee = chain.mempool_fee(&c).unwrap() + chain.mempool_fee(&p).unwrap();
    let package_vsize = (parent.vsize() + child.vsize()) as u64;
    assert!(
        package_fee.to_sat() >= 5 * package_vsize,
        "{package_fee} for {package_vsize} vB"
    );
    assert!(package_fee.to_sat() <= 5 * package_vsize + 5);
    faucet.mine(&chain, 1).unwrap();
    assert_eq!(chain.tx_status(&p).unwrap().confirmations(), 1);
    assert_eq!(chain.tx_status(&c).unwrap().confirmations(), 1);
    lsp.sync(&chain).unwrap();
    let _ = coin_tx;
    assert_eq!(
        lsp.balance().confirmed,
        Amount::from_sat(50_000 + 200_000) - package_fee
    );
}
