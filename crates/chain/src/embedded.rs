//! [`EmbeddedChain`]: a regtest chain validated by Bitcoin Core's own engine, in process.
//!
//! Blocks are built here and handed to libbitcoinkernel's `ChainstateManager`; a block counts only
//! when the kernel has made it the tip (its `process_block` answer alone is not trusted: it reports
//! a new block even when the block then fails to connect).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::{
    Amount, Block, BlockHash, FeeRate, OutPoint, Script, Transaction, TxOut, Txid, Weight,
};
use bitcoinkernel::prelude::*;
use bitcoinkernel::{
    BlockValidationResult, BlockValidationStateRef, ChainType, ChainstateManager, Context,
    ContextBuilder, ValidationMode,
};

use crate::consensus::{
    check_final, check_sequence_locks, check_transaction, sum_amounts, verify_scripts, SpentContext,
};
use crate::error::{ChainError, RejectReason};
use crate::index::{ChainIndex, Coin};
use crate::mempool::{Mempool, PackageAcceptance};
use crate::miner::{assemble, Template, COINBASE_WEIGHT_RESERVE};
use crate::policy::{PolicyConfig, COINBASE_MATURITY};
use crate::{Chain, ChainTip, TxStatus};

/// Largest block weight (BIP141).
const MAX_BLOCK_WEIGHT: u64 = 4_000_000;

/// How to open an [`EmbeddedChain`].
#[derive(Debug, Clone, Default)]
pub struct ChainConfig {
    /// Where blocks and chainstate live; `None` keeps everything in a temporary directory that is
    /// removed when the chain is dropped.
    pub data_dir: Option<PathBuf>,
    /// Relay policy of the mempool.
    pub policy: PolicyConfig,
}

type Verdicts = Arc<Mutex<HashMap<[u8; 32], (ValidationMode, BlockValidationResult)>>>;

struct Inner {
    // Field order is drop order: the chainstate manager goes before its context and directory.
    chainman: ChainstateManager,
    _context: Context,
    verdicts: Verdicts,
    index: ChainIndex,
    mempool: Mempool,
    fee_floor: FeeRate,
    _tempdir: Option<tempfile::TempDir>,
}

/// A regtest chain on Bitcoin Core's validation engine, with a policy-enforcing mempool.
pub struct EmbeddedChain {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for EmbeddedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedChain").finish_non_exhaustive()
    }
}

fn kernel_err(e: impl std::fmt::Display) -> ChainError {
    ChainError::Kernel(e.to_string())
}

fn to_kernel_block(block: &Block) -> Result<bitcoinkernel::Block, ChainError> {
    bitcoinkernel::Block::new(&serialize(block)).map_err(kernel_err)
}

fn from_kernel_block(block: &bitcoinkernel::Block) -> Result<Block, ChainError> {
    let bytes = block.consensus_encode().map_err(kernel_err)?;
    deserialize(&bytes).map_err(kernel_err)
}

fn rejected(txid: Txid, reason: RejectReason) -> ChainError {
    ChainError::Rejected { txid, reason }
}

impl EmbeddedChain {
    /// A fresh regtest chain held in a temporary directory, with default policy.
    pub fn in_memory() -> Result<Self, ChainError> {
        Self::open(ChainConfig::default())
    }

    /// Open (or create) a regtest chain in `data_dir`, keeping its blocks across restarts.
    pub fn open_dir(data_dir: impl AsRef<Path>) -> Result<Self, ChainError> {
        Self::open(ChainConfig {
            data_dir: Some(data_dir.as_ref().to_path_buf()),
            ..Default::default()
        })
    }

    /// Open a chain as configured.
    pub fn open(config: ChainConfig) -> Result<Self, ChainError> {
        let (dir, tempdir, in_memory) = match &config.data_dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| ChainError::Storage(format!("{}: {e}", d.display())))?;
                (d.clone(), None, false)
            }
            None => {
                let t = tempfile::tempdir().map_err(|e| ChainError::Storage(e.to_string()))?;
                (t.path().to_path_buf(), Some(t), true)
            }
        };
        let verdicts: Verdicts = Arc::default();
        let sink = Arc::clone(&verdicts);
        let context = ContextBuilder::new()
            .chain_type(ChainType::Regtest)
            .with_block_checked_validation(
                move |block: bitcoinkernel::Block, state: BlockValidationStateRef<'_>| {
                    if let Ok(mut v) = sink.lock() {
                        v.insert(block.hash().to_bytes(), (state.mode(), state.result()));
                    }
                },
            )
            .build()
            .map_err(kernel_err)?;
        let path = |sub: &str| -> Result<String, ChainError> {
            dir.join(sub)
                .to_str()
                .map(str::to_owned)
                .ok_or_else(|| ChainError::Storage(format!("{} is not UTF-8", dir.display())))
        };
        let chainman = ChainstateManager::builder(&context, &path("chainstate")?, &path("blocks")?)
            .map_err(kernel_err)?
            .block_tree_db_in_memory(in_memory)
            .chainstate_db_in_memory(in_memory)
            .build()
            .map_err(|e| {
                ChainError::Storage(format!("cannot open chainstate in {}: {e}", dir.display()))
            })?;
        chainman.import_blocks().map_err(kernel_err)?;

        let index = Self::rebuild_index(&chainman)?;
        Ok(EmbeddedChain {
            inner: Mutex::new(Inner {
                chainman,
                _context: context,
                verdicts,
                index,
                mempool: Mempool::new(config.policy),
                fee_floor: config.policy.min_relay_fee_rate,
                _tempdir: tempdir,
            }),
        })
    }

    /// Replay the kernel's active chain into a fresh index.
    fn rebuild_index(chainman: &ChainstateManager) -> Result<ChainIndex, ChainError> {
        let chain = chainman.active_chain();
        let read = |height: i32| -> Result<Block, ChainError> {
            let entry = chain
                .at_height(height as usize)
                .ok_or_else(|| ChainError::Storage(format!("block {height} missing")))?;
            from_kernel_block(&chainman.read_block_data(&entry).map_err(kernel_err)?)
        };
        let mut index = ChainIndex::new(&read(0)?);
        for height in 1..=chain.height() {
            index.connect(&read(height)?);
        }
        Ok(index)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the index consistent (updates happen after the
        // kernel accepted a block), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set the fee rate the estimator will not go below (to simulate a busy fee market).
    pub fn set_fee_floor(&self, rate: FeeRate) {
        self.lock().fee_floor = rate;
    }

    /// Number of transactions waiting in the mempool.
    pub fn mempool_len(&self) -> usize {
        self.lock().mempool.len()
    }

    /// Transactions waiting in the mempool, parents before children.
    pub fn mempool_transactions(&self) -> Vec<Transaction> {
        self.lock()
            .mempool
            .entries()
            .into_iter()
            .map(|e| e.tx.clone())
            .collect()
    }

    /// Fee paid by a mempool transaction.
    pub fn mempool_fee(&self, txid: &Txid) -> Option<Amount> {
        self.lock().mempool.get(txid).map(|e| e.fee)
    }

    /// The mempool transaction that spends `outpoint`, if any.
    pub fn mempool_spender(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.lock().mempool.spender_of(outpoint)
    }

    /// Number of unspent outputs in the active chain.
    pub fn utxo_count(&self) -> usize {
        self.lock().index.utxo_count()
    }

    /// The relay policy in force.
    pub fn policy(&self) -> PolicyConfig {
        *self.lock().mempool.config()
    }
}

impl Inner {
    /// Build, hand to the kernel and (if the kernel made it the tip) index one block.
    fn mine(&mut self, txs: Vec<Transaction>, payout: &Script) -> Result<BlockHash, ChainError> {
        let height = self.index.tip_height() + 1;
        let mtp = self.index.mtp_at(self.index.tip_height());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        let fees = self.template_fees(&txs);
        let block = assemble(Template {
            prev_hash: self.index.tip_hash(),
            height,
            time: now.max(mtp + 1),
            payout,
            fees,
            txs,
        });
        let hash = block.block_hash();
        let kblock = to_kernel_block(&block)?;
        let _ = self.chainman.process_block(&kblock);
        let tip = self.chainman.active_chain().tip().block_hash().to_bytes();
        if tip != hash.to_byte_array() {
            let verdict = self
                .verdicts
                .lock()
                .ok()
                .and_then(|v| v.get(&hash.to_byte_array()).copied());
            let engine = match verdict {
                Some((mode, result)) => format!("{mode:?} ({result:?})"),
                None => "not connected".to_string(),
            };
            let reason = match self.diagnose(&block.txdata[1..]) {
                Some(d) => format!("{engine}; diagnosis: {d}"),
                None => engine,
            };
            return Err(ChainError::BlockRejected { hash, reason });
        }
        self.index.connect(&block);
        self.mempool.remove_for_block(&block.txdata[1..]);
        tracing::debug!(height, %hash, txs = block.txdata.len() - 1, "mined block");
        Ok(hash)
    }

    /// Fees the block's transactions pay, as far as their inputs are known.
    fn template_fees(&self, txs: &[Transaction]) -> Amount {
        let mut created: HashMap<OutPoint, TxOut> = HashMap::new();
        let mut total = Amount::ZERO;
        for tx in txs {
            let inputs: Option<Vec<Amount>> = tx
                .input
                .iter()
                .map(|i| {
                    created
                        .get(&i.previous_output)
                        .map(|o| o.value)
                        .or_else(|| self.index.coin(&i.previous_output).map(|c| c.txout.value))
                })
                .collect();
            if let Some(inputs) = inputs {
                let inputs = sum_amounts(inputs.iter());
                let outputs = sum_amounts(tx.output.iter().map(|o| &o.value));
                total += inputs.checked_sub(outputs).unwrap_or(Amount::ZERO);
            }
            let txid = tx.compute_txid();
            for (vout, o) in tx.output.iter().enumerate() {
                created.insert(OutPoint::new(txid, vout as u32), o.clone());
            }
        }
        total
    }

    /// Our own reading of why the kernel refused a block's transactions (the kernel gives only a
    /// category); the kernel's verdict stands regardless.
    fn diagnose(&self, txs: &[Transaction]) -> Option<String> {
        self.check_block_txs(txs)
            .err()
            .map(|(txid, r)| format!("tx {txid}: {r}"))
    }

    /// Our own consensus checks of a block's transactions on top of the tip: the first
    /// transaction that fails and why.
    pub(crate) fn check_block_txs(&self, txs: &[Transaction]) -> Result<(), (Txid, RejectReason)> {
        let height = self.index.tip_height() + 1;
        let mtp = self.index.mtp_at(self.index.tip_height());
        let mut created: HashMap<OutPoint, (TxOut, SpentContext)> = HashMap::new();
        for tx in txs {
            let txid = tx.compute_txid();
            let fail = |r: RejectReason| Err((txid, r));
            if let Err(r) = check_transaction(tx) {
                return fail(r);
            }
            let mut spent = Vec::new();
            let mut contexts = Vec::new();
            for (i, input) in tx.input.iter().enumerate() {
                let op = input.previous_output;
                if let Some((o, c)) = created.remove(&op) {
                    spent.push(o);
                    contexts.push(c);
                } else if let Some(coin) = self.index.coin(&op) {
                    if coin.is_coinbase && height - coin.height < COINBASE_MATURITY {
                        return fail(RejectReason::ImmatureCoinbase {
                            input: i,
                            outpoint: op,
                            height,
                            mature_at: coin.height + COINBASE_MATURITY,
                        });
                    }
                    spent.push(coin.txout.clone());
                    contexts.push(SpentContext {
                        height: coin.height,
                        prev_mtp: self.index.mtp_at(coin.height.saturating_sub(1)),
                    });
                } else {
                    return fail(RejectReason::MissingInput {
                        input: i,
                        outpoint: op,
                    });
                }
            }
            let inputs = sum_amounts(spent.iter().map(|o| &o.value));
            let outputs = sum_amounts(tx.output.iter().map(|o| &o.value));
            if outputs > inputs {
                return fail(RejectReason::InputsBelowOutputs { inputs, outputs });
            }
            if let Err(r) = check_final(tx, height, mtp)
                .and_then(|_| check_sequence_locks(tx, &contexts, height, mtp))
                .and_then(|_| verify_scripts(tx, &spent))
            {
                return fail(r);
            }
            for (vout, o) in tx.output.iter().enumerate() {
                let ctx = SpentContext {
                    height,
                    prev_mtp: mtp,
                };
                created.insert(OutPoint::new(txid, vout as u32), (o.clone(), ctx));
            }
        }
        Ok(())
    }
}

impl Chain for EmbeddedChain {
    fn tip(&self) -> Result<ChainTip, ChainError> {
        let inner = self.lock();
        Ok(ChainTip {
            height: inner.index.tip_height(),
            hash: inner.index.tip_hash(),
        })
    }

    fn median_time_past(&self) -> Result<u32, ChainError> {
        let inner = self.lock();
        Ok(inner.index.mtp_at(inner.index.tip_height()))
    }

    fn submit_transaction(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner
            .mempool
            .accept(tx, &inner.index)
            .map_err(|r| rejected(tx.compute_txid(), r))
    }

    fn submit_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<PackageAcceptance, ChainError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner
            .mempool
            .accept_package(parent, child, &inner.index)
            .map_err(|r| rejected(child.compute_txid(), r))
    }

    fn mine_blocks(&self, count: u32, payout: &Script) -> Result<Vec<BlockHash>, ChainError> {
        let mut inner = self.lock();
        let max = Weight::from_wu(MAX_BLOCK_WEIGHT - COINBASE_WEIGHT_RESERVE);
        (0..count)
            .map(|_| {
                let txs = inner.mempool.select_for_block(max);
                inner.mine(txs, payout)
            })
            .collect()
    }

    fn mine_block_with(
        &self,
        txs: &[Transaction],
        payout: &Script,
    ) -> Result<BlockHash, ChainError> {
        let weight: u64 = txs.iter().map(|t| t.weight().to_wu()).sum();
        if weight + COINBASE_WEIGHT_RESERVE > MAX_BLOCK_WEIGHT {
            return Err(ChainError::BlockTemplate(format!(
                "transactions weigh {weight} WU, more than a block holds"
            )));
        }
        self.lock().mine(txs.to_vec(), payout)
    }

    fn tx_status(&self, txid: &Txid) -> Result<TxStatus, ChainError> {
        let inner = self.lock();
        if let Some(height) = inner.index.confirmed_height(txid) {
            let tip = inner.index.tip_height();
            return Ok(TxStatus::Confirmed {
                height,
                block_hash: inner
                    .index
                    .hash_at(height)
                    .unwrap_or_else(BlockHash::all_zeros),
                confirmations: tip - height + 1,
            });
        }
        if inner.mempool.get(txid).is_some() {
            return Ok(TxStatus::InMempool);
        }
        Ok(TxStatus::Unknown)
    }

    fn get_utxo(&self, outpoint: &OutPoint) -> Result<Option<Coin>, ChainError> {
        Ok(self.lock().index.coin(outpoint).cloned())
    }

    fn block_at(&self, height: u32) -> Result<Option<Block>, ChainError> {
        let inner = self.lock();
        if height > inner.index.tip_height() {
            return Ok(None);
        }
        let chain = inner.chainman.active_chain();
        let Some(entry) = chain.at_height(height as usize) else {
            return Ok(None);
        };
        let block = inner.chainman.read_block_data(&entry).map_err(kernel_err)?;
        from_kernel_block(&block).map(Some)
    }

    fn estimate_fee_rate(&self, _target_blocks: u16) -> Result<FeeRate, ChainError> {
        let inner = self.lock();
        let max = Weight::from_wu(MAX_BLOCK_WEIGHT - COINBASE_WEIGHT_RESERVE);
        Ok(inner.mempool.next_block_fee_rate(max).max(inner.fee_floor))
    }
}

impl EmbeddedChain {
    /// Timestamp of the block at `height`.
    pub fn block_time(&self, height: u32) -> Option<u32> {
        self.lock().index.time_at(height)
    }
}

/// Lookups and dry runs for the RPC server (`superscalar chaind`).
impl EmbeddedChain {
    /// Height of the active-chain block with hash `hash`.
    pub fn block_height(&self, hash: &BlockHash) -> Option<u32> {
        self.lock().index.height_of(hash)
    }

    /// Hash of the active-chain block at `height`, without reading the block.
    pub fn block_hash_at(&self, height: u32) -> Option<BlockHash> {
        self.lock().index.hash_at(height)
    }

    /// Median time past of the active-chain block at `height`.
    pub fn median_time_past_at(&self, height: u32) -> Option<u32> {
        let inner = self.lock();
        (height <= inner.index.tip_height()).then(|| inner.index.mtp_at(height))
    }

    /// Run `f` on the mempool and the chain index, under the chain's lock.
    pub(crate) fn with_mempool<R>(&self, f: impl FnOnce(&Mempool, &ChainIndex) -> R) -> R {
        let inner = self.lock();
        f(&inner.mempool, &inner.index)
    }

    /// Run `f` on a copy of the mempool (to judge transactions without admitting them).
    pub(crate) fn with_mempool_copy<R>(&self, f: impl FnOnce(&mut Mempool, &ChainIndex) -> R) -> R {
        let inner = self.lock();
        let mut copy = inner.mempool.clone();
        f(&mut copy, &inner.index)
    }

    /// Submit a parent and child, saying which one a rejection is about.
    pub(crate) fn submit_package_attributed(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<PackageAcceptance, (crate::mempool::PackageMember, RejectReason)> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner
            .mempool
            .accept_package_attributed(parent, child, &inner.index)
    }

    /// Our consensus checks of `txs` as a block on top of the tip (the kernel is not asked).
    pub(crate) fn check_block_transactions(
        &self,
        txs: &[Transaction],
    ) -> Result<(), (Txid, RejectReason)> {
        self.lock().check_block_txs(txs)
    }

    /// Assemble (and mine) a block on the tip holding exactly `txs`, without submitting it.
    pub(crate) fn assemble_block(&self, txs: &[Transaction], payout: &Script) -> Block {
        let inner = self.lock();
        let height = inner.index.tip_height() + 1;
        let mtp = inner.index.mtp_at(inner.index.tip_height());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        assemble(Template {
            prev_hash: inner.index.tip_hash(),
            height,
            time: now.max(mtp + 1),
            payout,
            fees: inner.template_fees(txs),
            txs: txs.to_vec(),
        })
    }
}
