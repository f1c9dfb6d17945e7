//! A chain in a data directory keeps its tip, its UTXOs and its confirmed transactions on reopen.

mod common;

use bitcoin::OutPoint;
use common::*;
use superscalar_chain::{Chain, ChainError, EmbeddedChain, TxStatus};

#[test]
fn reopened_chain_keeps_tip_utxos_and_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Signer::new(30);
    let (tip, txid, utxos) = {
        let chain = EmbeddedChain::open_dir(dir.path()).unwrap();
        chain.mine_blocks(1, &s.p2tr()).unwrap();
        chain.mine_blocks(100, &burn()).unwrap();
        let cb = chain.block_at(1).unwrap().unwrap().txdata[0].clone();
        let tx = s.spend(
            (OutPoint::new(cb.compute_txid(), 0), cb.output[0].clone()),
            vec![out(4_000_000_000, s.p2tr()), out(999_990_000, burn())],
            2,
        );
        chain.submit_transaction(&tx).unwrap();
        chain.mine_blocks(3, &burn()).unwrap();
        // Left in the mempool: not persisted, by design.
        let pending = s.spend(
            (OutPoint::new(tx.compute_txid(), 0), tx.output[0].clone()),
            vec![out(3_999_990_000, s.p2tr())],
            2,
        );
        chain.submit_transaction(&pending).unwrap();
        (chain.tip().unwrap(), tx.compute_txid(), chain.utxo_count())
    };
    let chain = EmbeddedChain::open_dir(dir.path()).unwrap();
    assert_eq!(chain.tip().unwrap(), tip);
    assert_eq!(chain.utxo_count(), utxos);
    assert_eq!(
        chain.tx_status(&txid).unwrap(),
        TxStatus::Confirmed {
            height: tip.height - 2,
            block_hash: chain
                .block_at(tip.height - 2)
                .unwrap()
                .unwrap()
                .block_hash(),
            confirmations: 3,
        }
    );
    let coin = chain.get_utxo(&OutPoint::new(txid, 0)).unwrap().unwrap();
    assert_eq!(coin.txout.value.to_sat(), 4_000_000_000);
    assert_eq!(coin.height, tip.height - 2);
    assert!(chain.get_utxo(&OutPoint::new(txid, 5)).unwrap().is_none());
    assert_eq!(chain.mempool_len(), 0);
    // And it keeps growing where it left off.
    chain.mine_blocks(2, &burn()).unwrap();
    assert_eq!(chain.tip().unwrap().height, tip.height + 2);
    drop(chain);
    let chain = EmbeddedChain::open_dir(dir.path()).unwrap();
    assert_eq!(chain.tip().unwrap().height, tip.height + 2);
}

#[test]
fn unusable_data_directory_is_a_typed_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = EmbeddedChain::open_dir(file.path()).unwrap_err();
    assert!(matches!(err, ChainError::Storage(_)), "{err}");
}

#[test]
fn block_at_beyond_tip_is_none() {
    let chain = EmbeddedChain::in_memory().unwrap();
    assert_eq!(chain.tip().unwrap().height, 0);
    assert!(chain.block_at(0).unwrap().is_some());
    assert!(chain.block_at(1).unwrap().is_none());
    assert!(chain.block_at(u32::MAX).unwrap().is_none());
}
