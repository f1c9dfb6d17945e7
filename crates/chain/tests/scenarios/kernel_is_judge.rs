// Scenarios shared by several test binaries (included with `include!`): each binary defines
// `new_chain()`, the chain they run on.
use bitcoin::{absolute, OutPoint, Sequence};
use common::*;
use superscalar_chain::{Chain, ChainError, RejectReason};
use superscalar_chain::testkit::TestChain;

/// A fresh chain with `n` mature coinbase coins owned by `signer`.
fn funded_chain(signer: &Signer, n: u32) -> (TestChain, Vec<(bitcoin::OutPoint, bitcoin::TxOut)>) {
    fund_chain(new_chain(), signer, n)
}

#[test]
fn csv_spend_one_block_early_is_rejected_by_kernel_then_accepted() {
    let signer = Signer::new(1);
    let (chain, coins) = funded_chain(&signer, 1);
    let delay: u16 = 10;
    let leaf = signer.csv_leaf(delay);
    let (spk, info) = signer.leaf_output(&leaf);
    let fund = signer.spend(coins[0].clone(), vec![out(100_000_000, spk)], 2);
    chain
        .mine_block_with(std::slice::from_ref(&fund), &burn())
        .unwrap();
    let confirmed_at = chain.tip().unwrap().height;

    let prev = fund.output[0].clone();
    let mut spend = unsigned(
        vec![OutPoint::new(fund.compute_txid(), 0)],
        vec![out(99_990_000, signer.p2tr())],
        2,
    );
    spend.input[0].sequence = Sequence::from_height(delay);
    signer.sign_script_path(&mut spend, 0, &[prev], &leaf, &info);

    // Valid from height confirmed_at + delay; bring the tip to one below the block before that.
    chain.mine_blocks(u32::from(delay) - 2, &burn()).unwrap();
    assert_eq!(
        chain.tip().unwrap().height,
        confirmed_at + u32::from(delay) - 2
    );
    let tip_before = chain.tip().unwrap();
    // The mempool refuses it too, but here the block goes straight to the kernel.
    let err = chain
        .mine_block_with(std::slice::from_ref(&spend), &burn())
        .unwrap_err();
    assert!(matches!(err, ChainError::BlockRejected { .. }), "{err}");
    assert!(
        err.to_string().contains("non-BIP68-final") || err.to_string().contains("relative lock"),
        "{err}"
    );
    assert_eq!(
        chain.tip().unwrap(),
        tip_before,
        "a rejected block must not move the tip"
    );

    chain.mine_blocks(1, &burn()).unwrap();
    chain.mine_block_with(&[spend.clone()], &burn()).unwrap();
    let status = chain.tx_status(&spend.compute_txid()).unwrap();
    assert_eq!(status.confirmations(), 1);
    assert_eq!(chain.tip().unwrap().height, confirmed_at + u32::from(delay));
}

#[test]
fn cltv_spend_one_block_early_is_rejected_by_kernel_then_accepted() {
    let signer = Signer::new(2);
    let (chain, coins) = funded_chain(&signer, 1);
    let lock = chain.tip().unwrap().height + 5;
    let leaf = signer.cltv_leaf(lock);
    let (spk, info) = signer.leaf_output(&leaf);
    let fund = signer.spend(coins[0].clone(), vec![out(100_000_000, spk)], 2);
    chain
        .mine_block_with(std::slice::from_ref(&fund), &burn())
        .unwrap();

    let prev = fund.output[0].clone();
    let mut spend = unsigned(
        vec![OutPoint::new(fund.compute_txid(), 0)],
        vec![out(99_990_000, signer.p2tr())],
        2,
    );
    spend.lock_time = absolute::LockTime::from_height(lock).unwrap();
    signer.sign_script_path(&mut spend, 0, &[prev], &leaf, &info);

    // nLockTime = lock is final only in blocks of height > lock.
    let tip = chain.tip().unwrap().height;
    chain.mine_blocks(lock - 1 - tip, &burn()).unwrap();
    let err = chain
        .mine_block_with(std::slice::from_ref(&spend), &burn())
        .unwrap_err();
    assert!(matches!(err, ChainError::BlockRejected { .. }), "{err}");
    assert!(err.to_string().contains("non-final"), "{err}");
    assert_eq!(chain.tip().unwrap().height, lock - 1);

    chain.mine_blocks(1, &burn()).unwrap();
    chain.mine_block_with(&[spend.clone()], &burn()).unwrap();
    assert_eq!(
        chain
            .tx_status(&spend.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
}

#[test]
fn cltv_script_with_lower_nlocktime_is_rejected_by_kernel() {
    // The script demands `lock` but the transaction only commits to lock - 1: the interpreter fails
    // even though nLockTime itself is satisfied.
    let signer = Signer::new(3);
    let (chain, coins) = funded_chain(&signer, 1);
    let lock = chain.tip().unwrap().height + 2;
    let leaf = signer.cltv_leaf(lock);
    let (spk, info) = signer.leaf_output(&leaf);
    let fund = signer.spend(coins[0].clone(), vec![out(100_000_000, spk)], 2);
    chain
        .mine_block_with(std::slice::from_ref(&fund), &burn())
        .unwrap();
    chain.mine_blocks(10, &burn()).unwrap();
    let mut spend = unsigned(
        vec![OutPoint::new(fund.compute_txid(), 0)],
        vec![out(99_990_000, signer.p2tr())],
        2,
    );
    spend.lock_time = absolute::LockTime::from_height(lock - 1).unwrap();
    signer.sign_script_path(&mut spend, 0, &[fund.output[0].clone()], &leaf, &info);
    let err = chain
        .mine_block_with(std::slice::from_ref(&spend), &burn())
        .unwrap_err();
    assert!(matches!(err, ChainError::BlockRejected { .. }), "{err}");
    let err = chain.submit_transaction(&spend).unwrap_err();
    assert!(
        matches!(
            err.reject_reason(),
            Some(RejectReason::ScriptInvalid { .. })
        ),
        "{err}"
    );
}

#[test]
fn taproot_key_path_with_wrong_signature_is_rejected_by_kernel() {
    let signer = Signer::new(4);
    let other = Signer::new(5);
    let (chain, coins) = funded_chain(&signer, 1);
    let tip = chain.tip().unwrap();
    // Signed by the wrong key.
    let bad = other.spend(coins[0].clone(), vec![out(4_999_990_000, signer.p2tr())], 2);
    let err = chain
        .mine_block_with(std::slice::from_ref(&bad), &burn())
        .unwrap_err();
    assert!(matches!(err, ChainError::BlockRejected { .. }), "{err}");
    // Our diagnosis, or Core's own words over RPC.
    let words = err.to_string();
    assert!(
        words.contains("script verification failed") || words.contains("script-verify-flag-failed"),
        "{err}"
    );
    assert_eq!(chain.tip().unwrap(), tip);
    // A correct signature with one bit flipped.
    let mut flipped = signer.spend(coins[0].clone(), vec![out(4_999_990_000, signer.p2tr())], 2);
    let mut sig = flipped.input[0].witness.to_vec();
    sig[0][10] ^= 1;
    flipped.input[0].witness = bitcoin::Witness::from_slice(&sig);
    assert!(matches!(
        chain.mine_block_with(&[flipped], &burn()),
        Err(ChainError::BlockRejected { .. })
    ));
    // The right signature is accepted.
    let good = signer.spend(coins[0].clone(), vec![out(4_999_990_000, signer.p2tr())], 2);
    chain
        .mine_block_with(std::slice::from_ref(&good), &burn())
        .unwrap();
    assert_eq!(
        chain
            .tx_status(&good.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
}

#[test]
fn immature_coinbase_spend_is_rejected_by_kernel() {
    let signer = Signer::new(6);
    let chain = new_chain();
    chain.mine_blocks(1, &signer.p2tr()).unwrap();
    chain.mine_blocks(98, &burn()).unwrap();
    let block = chain.block_at(1).unwrap().unwrap();
    let cb = &block.txdata[0];
    let spend = signer.spend(
        (OutPoint::new(cb.compute_txid(), 0), cb.output[0].clone()),
        vec![out(4_999_990_000, signer.p2tr())],
        2,
    );
    // Next block is height 100: the coinbase of height 1 matures at 101.
    let err = chain
        .mine_block_with(std::slice::from_ref(&spend), &burn())
        .unwrap_err();
    assert!(matches!(err, ChainError::BlockRejected { .. }), "{err}");
    chain.mine_blocks(1, &burn()).unwrap();
    chain.mine_block_with(&[spend], &burn()).unwrap();
}
