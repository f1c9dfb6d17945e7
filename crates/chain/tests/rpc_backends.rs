//! Every method of the `Chain` trait, errors included, on each backend: the embedded chain itself,
//! `BitcoindRpc` against `chaind`, and `BitcoindRpc` against a real `bitcoind -regtest` (when
//! `SUPERSCALAR_BITCOIND_BIN` is set), with the same expectations for all, down to the fields of
//! each typed rejection.

mod common;

use bitcoin::hashes::Hash;
use bitcoin::{absolute, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxOut, Txid};
use common::*;
use superscalar_chain::rpc::process::{bitcoind_bin_dir, BitcoindProcess};
use superscalar_chain::testkit::{Backend, TestChain};
use superscalar_chain::{Chain, ChainError, EmbeddedChain, RejectReason, TxStatus};

const COIN: u64 = 5_000_000_000;

fn reason<T: std::fmt::Debug>(r: Result<T, ChainError>) -> RejectReason {
    match r {
        Err(ChainError::Rejected { reason, .. }) => reason,
        other => panic!("expected a mempool rejection, got {other:?}"),
    }
}

fn prev(tx: &Transaction, vout: u32) -> (OutPoint, TxOut) {
    (
        OutPoint::new(tx.compute_txid(), vout),
        tx.output[vout as usize].clone(),
    )
}

/// Drive `chain` (fresh, at genesis) through every `Chain` method.
pub fn every_chain_method(chain: &dyn Chain) {
    let s = Signer::new(40);
    // Tip, blocks, mining.
    let genesis = chain.tip().unwrap();
    assert_eq!(genesis.height, 0);
    assert_eq!(
        chain.block_at(0).unwrap().unwrap().block_hash(),
        genesis.hash
    );
    assert!(chain.block_at(1).unwrap().is_none());
    let hashes = chain.mine_blocks(3, &s.p2tr()).unwrap();
    assert_eq!(hashes.len(), 3);
    chain.mine_blocks(100, &burn()).unwrap();
    let tip = chain.tip().unwrap();
    assert_eq!(tip.height, 103);
    assert_eq!(chain.block_at(103).unwrap().unwrap().block_hash(), tip.hash);
    let mtp = chain.median_time_past().unwrap();
    let last_time = chain.block_at(103).unwrap().unwrap().header.time;
    assert!(mtp > 0 && mtp <= last_time, "{mtp} vs {last_time}");
    assert!(chain.estimate_fee_rate(6).unwrap() >= FeeRate::from_sat_per_vb_u32(1));

    // UTXOs: the coinbase of block 1.
    let block1 = chain.block_at(1).unwrap().unwrap();
    assert_eq!(block1.block_hash(), hashes[0]);
    let cb = &block1.txdata[0];
    let coin = prev(cb, 0);
    let utxo = chain.get_utxo(&coin.0).unwrap().unwrap();
    assert_eq!(utxo.txout, coin.1);
    assert_eq!(utxo.height, 1);
    assert!(utxo.is_coinbase);
    let nowhere = OutPoint::new(Txid::all_zeros(), 3);
    assert!(chain.get_utxo(&nowhere).unwrap().is_none());
    assert_eq!(
        chain.tx_status(&Txid::all_zeros()).unwrap(),
        TxStatus::Unknown
    );

    // A transaction: mempool, then confirmed.
    let split = s.spend(
        coin.clone(),
        (0..4).map(|_| out(COIN / 4 - 1_000, s.p2tr())).collect(),
        2,
    );
    let split_id = chain.submit_transaction(&split).unwrap();
    assert_eq!(split_id, split.compute_txid());
    assert_eq!(chain.tx_status(&split_id).unwrap(), TxStatus::InMempool);
    assert_eq!(
        reason(chain.submit_transaction(&split)),
        RejectReason::AlreadyInMempool(split_id)
    );
    let mined = chain.mine_blocks(1, &burn()).unwrap()[0];
    assert_eq!(
        chain.tx_status(&split_id).unwrap(),
        TxStatus::Confirmed {
            height: 104,
            block_hash: mined,
            confirmations: 1
        }
    );
    assert_eq!(
        reason(chain.submit_transaction(&split)),
        RejectReason::AlreadyConfirmed(split_id)
    );
    let coins: Vec<_> = (0..4).map(|v| prev(&split, v)).collect();
    assert_eq!(chain.get_utxo(&coins[0].0).unwrap().unwrap().height, 104);
    assert!(chain.get_utxo(&coin.0).unwrap().is_none());

    // Garbage bytes.
    for bytes in [&b""[..], &[0xde, 0xad, 0xbe, 0xef][..]] {
        assert!(matches!(
            reason(chain.submit_raw_transaction(bytes)),
            RejectReason::Decode(_)
        ));
    }
    // A missing output (input 1 of 2).
    let missing = {
        let mut tx = unsigned(
            vec![coins[0].0, nowhere],
            vec![out(COIN / 4 - 5_000, s.p2tr())],
            2,
        );
        s.sign_key_path(&mut tx, 0, &[coins[0].1.clone(), coins[0].1.clone()]);
        tx
    };
    assert_eq!(
        reason(chain.submit_transaction(&missing)),
        RejectReason::MissingInput {
            input: 1,
            outpoint: nowhere
        }
    );
    // A double spend (paying less than the first: no replacement anywhere).
    let a = s.spend(coins[0].clone(), vec![out(COIN / 4 - 11_000, s.p2tr())], 2);
    let b = s.spend(coins[0].clone(), vec![out(COIN / 4 - 3_000, s.p2tr())], 2);
    chain.submit_transaction(&a).unwrap();
    assert_eq!(
        reason(chain.submit_transaction(&b)),
        RejectReason::Conflict {
            input: 0,
            outpoint: coins[0].0,
            by: a.compute_txid()
        }
    );
    // Non-final: nLockTime two blocks ahead.
    let mut late = unsigned(vec![coins[1].0], vec![out(COIN / 4 - 3_000, s.p2tr())], 2);
    late.lock_time = absolute::LockTime::from_height(106).unwrap();
    late.input[0].sequence = Sequence::ENABLE_LOCKTIME_NO_RBF;
    s.sign_key_path(&mut late, 0, &[coins[1].1.clone()]);
    match reason(chain.submit_transaction(&late)) {
        RejectReason::NonFinal {
            lock_time, height, ..
        } => assert_eq!((lock_time, height), (106, 105)),
        r => panic!("{r}"),
    }
    // Sequence-locked: 5 blocks relative to height 104.
    let mut locked = unsigned(vec![coins[2].0], vec![out(COIN / 4 - 3_000, s.p2tr())], 2);
    locked.input[0].sequence = Sequence::from_height(5);
    s.sign_key_path(&mut locked, 0, &[coins[2].1.clone()]);
    match reason(chain.submit_transaction(&locked)) {
        RejectReason::SequenceLocked {
            min_height, height, ..
        } => assert_eq!((min_height, height), (108, 105)),
        r => panic!("{r}"),
    }
    // Fee too low: zero.
    let free = s.spend(coins[3].clone(), vec![out(COIN / 4 - 1_000, s.p2tr())], 2);
    match reason(chain.submit_transaction(&free)) {
        RejectReason::FeeTooLow { fee, vsize, .. } => {
            assert_eq!(fee.to_sat(), 0);
            assert_eq!(vsize, free.vsize() as u64);
        }
        r => panic!("{r}"),
    }
    // A package: a zero-fee v3 parent with an ephemeral P2A anchor and its child.
    let parent = s.spend(
        coins[3].clone(),
        vec![
            out(COIN / 4 - 1_000, s.p2tr()),
            out(0, ScriptBuf::new_p2a()),
        ],
        3,
    );
    let child = {
        let mut tx = unsigned(
            vec![OutPoint::new(parent.compute_txid(), 1), coins[1].0],
            vec![out(COIN / 4 - 1_000 - 2_000, s.p2tr())],
            3,
        );
        s.sign_key_path(&mut tx, 1, &[parent.output[1].clone(), coins[1].1.clone()]);
        tx
    };
    assert!(matches!(
        reason(chain.submit_transaction(&parent)),
        RejectReason::FeeTooLow { .. }
    ));
    let package = chain.submit_package(&parent, &child).unwrap();
    assert_eq!(package.parent, parent.compute_txid());
    assert_eq!(package.child, child.compute_txid());
    assert_eq!(package.fee.to_sat(), 2_000);
    assert_eq!(
        package.vsize,
        (parent.vsize() + child.vsize()) as u64,
        "{package:?}"
    );
    // Mining given transactions: the kernel refuses a non-final one, takes the locked one later.
    let before = chain.tip().unwrap();
    assert!(matches!(
        chain.mine_block_with(std::slice::from_ref(&late), &burn()),
        Err(ChainError::BlockRejected { .. })
    ));
    assert_eq!(chain.tip().unwrap(), before);
    chain.mine_blocks(1, &burn()).unwrap();
    for txid in [
        a.compute_txid(),
        parent.compute_txid(),
        child.compute_txid(),
    ] {
        assert_eq!(chain.tx_status(&txid).unwrap().confirmations(), 1);
    }
    assert_eq!(
        chain.tx_status(&b.compute_txid()).unwrap(),
        TxStatus::Unknown
    );
    // Locked through height 108: the block at 108 refuses it, the one at 109 takes it.
    chain.mine_blocks(2, &burn()).unwrap();
    assert!(matches!(
        chain.mine_block_with(std::slice::from_ref(&locked), &burn()),
        Err(ChainError::BlockRejected { .. })
    ));
    chain.mine_blocks(1, &burn()).unwrap();
    let hash = chain.mine_block_with(&[locked.clone()], &burn()).unwrap();
    assert_eq!(chain.tip().unwrap().hash, hash);
    assert_eq!(
        chain.tx_status(&locked.compute_txid()).unwrap(),
        TxStatus::Confirmed {
            height: 109,
            block_hash: hash,
            confirmations: 1
        }
    );
}

#[test]
fn every_chain_method_on_the_embedded_chain() {
    every_chain_method(&EmbeddedChain::in_memory().unwrap());
}

#[test]
fn every_chain_method_over_rpc_on_chaind() {
    every_chain_method(&TestChain::new(Backend::Chaind));
}

#[test]
fn every_chain_method_over_rpc_on_real_bitcoind() {
    let Some(bin) = bitcoind_bin_dir() else {
        return;
    };
    let node = BitcoindProcess::start(&bin).unwrap();
    every_chain_method(&node.rpc().unwrap());
}

#[test]
fn bitcoind_rpc_errors_are_typed() {
    let Some(bin) = bitcoind_bin_dir() else {
        return;
    };
    let node = BitcoindProcess::start(&bin).unwrap();
    // Wrong credentials: an RPC error, not a panic.
    let wrong = superscalar_chain::rpc::auth::Auth::UserPass(
        superscalar_chain::rpc::auth::Credentials::new("__cookie__", "wrong"),
    );
    let err = superscalar_chain::BitcoindRpc::connect(node.url(), wrong).unwrap_err();
    assert!(
        matches!(err, ChainError::Rpc { code: None, .. }) && err.to_string().contains("401"),
        "{err}"
    );
    // Nobody listening.
    let closed = format!(
        "http://127.0.0.1:{}",
        node.rpc_port().wrapping_add(1).max(1)
    );
    assert!(matches!(
        superscalar_chain::BitcoindRpc::connect(closed, node.auth()),
        Err(ChainError::Rpc { .. })
    ));
    // A node without -txindex is refused with the reason.
    let bare = BitcoindProcess::start_with(&bin, &["-txindex=0"]).unwrap();
    let err = bare.rpc().unwrap_err();
    assert!(err.to_string().contains("-txindex=1"), "{err}");
}
