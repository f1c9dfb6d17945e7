//! What the mempool needs to know about the active chain: headers, unspent outputs, confirmed txids.
//!
//! Built only from blocks the kernel has connected, and rebuilt from the kernel's block files on open.

use std::collections::HashMap;

use bitcoin::{Block, BlockHash, OutPoint, TxOut, Txid};

use crate::policy::is_unspendable;

/// An unspent output with the context that relative locks and coinbase maturity need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    /// The output itself.
    pub txout: TxOut,
    /// Height of the block that created it.
    pub height: u32,
    /// Whether it was created by a coinbase transaction.
    pub is_coinbase: bool,
}

/// Index of the active chain, maintained block by block.
#[derive(Debug, Default)]
pub(crate) struct ChainIndex {
    /// Hash and timestamp of each block, by height (genesis at 0).
    headers: Vec<(BlockHash, u32)>,
    utxos: HashMap<OutPoint, Coin>,
    confirmed: HashMap<Txid, u32>,
}

impl ChainIndex {
    /// An index holding only the genesis block (whose coinbase is unspendable, as in Core).
    pub(crate) fn new(genesis: &Block) -> Self {
        ChainIndex {
            headers: vec![(genesis.block_hash(), genesis.header.time)],
            ..Default::default()
        }
    }

    /// Height of the tip.
    pub(crate) fn tip_height(&self) -> u32 {
        (self.headers.len() - 1) as u32
    }

    /// Hash of the tip.
    pub(crate) fn tip_hash(&self) -> BlockHash {
        self.headers[self.headers.len() - 1].0
    }

    /// Hash of the block at `height`.
    pub(crate) fn hash_at(&self, height: u32) -> Option<BlockHash> {
        self.headers.get(height as usize).map(|h| h.0)
    }

    /// Timestamp of the block at `height`.
    pub(crate) fn time_at(&self, height: u32) -> Option<u32> {
        self.headers.get(height as usize).map(|h| h.1)
    }

    /// Median time past of the block at `height` (median of it and its ten predecessors).
    pub(crate) fn mtp_at(&self, height: u32) -> u32 {
        let end = (height as usize).min(self.headers.len() - 1) + 1;
        let start = end.saturating_sub(11);
        let mut times: Vec<u32> = self.headers[start..end].iter().map(|h| h.1).collect();
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// Unspent output at `outpoint`.
    pub(crate) fn coin(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.utxos.get(outpoint)
    }

    /// Height at which `txid` confirmed.
    pub(crate) fn confirmed_height(&self, txid: &Txid) -> Option<u32> {
        self.confirmed.get(txid).copied()
    }

    /// Apply a block the kernel connected on top of the tip.
    pub(crate) fn connect(&mut self, block: &Block) {
        let height = self.headers.len() as u32;
        debug_assert_eq!(block.header.prev_blockhash, self.tip_hash());
        for (position, tx) in block.txdata.iter().enumerate() {
            let txid = tx.compute_txid();
            let is_coinbase = position == 0;
            if !is_coinbase {
                for input in &tx.input {
                    self.utxos.remove(&input.previous_output);
                }
            }
            for (vout, txout) in tx.output.iter().enumerate() {
                if is_unspendable(&txout.script_pubkey) {
                    continue;
                }
                self.utxos.insert(
                    OutPoint::new(txid, vout as u32),
                    Coin {
                        txout: txout.clone(),
                        height,
                        is_coinbase,
                    },
                );
            }
            self.confirmed.insert(txid, height);
        }
        self.headers.push((block.block_hash(), block.header.time));
    }

    /// Number of unspent outputs.
    pub(crate) fn utxo_count(&self) -> usize {
        self.utxos.len()
    }
}

/// Lookups for the RPC server.
impl ChainIndex {
    /// Height of the active-chain block with hash `hash`.
    pub(crate) fn height_of(&self, hash: &BlockHash) -> Option<u32> {
        self.headers
            .iter()
            .rposition(|(h, _)| h == hash)
            .map(|i| i as u32)
    }
}
