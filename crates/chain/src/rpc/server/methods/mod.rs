//! The RPC methods, by Core's categories, and the table that dispatches to them.

mod blockchain;
mod control;
mod mempool;
mod mining;
mod network;
mod rawtransaction;

pub use mining::MAX_GENERATE_BLOCKS;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bitcoin::{Block, Transaction, Txid};
use serde_json::Value;

use super::encode::Prevout;
use super::json::Json;
use super::jsonrpc::RpcError;
use super::params::{usage, Args, Param};
use crate::rpc::codes::{RPC_INTERNAL_ERROR, RPC_METHOD_NOT_FOUND, RPC_MISC_ERROR};
use crate::{Chain, ChainError, EmbeddedChain, TxStatus};

/// When and at which height a mempool transaction was first seen (Core's entry time and
/// height).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryMeta {
    /// Unix time.
    pub time: u64,
    /// Chain height then.
    pub height: u32,
}

/// What the methods share: the chain, the server's start time and its stop switch.
pub(crate) struct Ctx {
    /// The chain.
    pub chain: Arc<EmbeddedChain>,
    /// When the server started (for `uptime`).
    pub started: Instant,
    /// The server's stop switch (set by `stop`, a signal or the handle).
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    /// The chain's `blocks` directory (for `size_on_disk`).
    pub blocks_dir: Option<std::path::PathBuf>,
    /// Entry time and height of mempool transactions, as first seen.
    meta: Mutex<HashMap<Txid, EntryMeta>>,
}

impl Ctx {
    /// A context for `chain`; `stop` asks the server to stop.
    pub(crate) fn new(
        chain: Arc<EmbeddedChain>,
        blocks_dir: Option<std::path::PathBuf>,
        stop: Arc<tokio::sync::watch::Sender<bool>>,
    ) -> Self {
        Ctx {
            chain,
            started: Instant::now(),
            stop,
            blocks_dir,
            meta: Mutex::new(HashMap::new()),
        }
    }

    /// Ask the server to stop.
    pub(crate) fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the server was asked to stop (long calls end early).
    pub(crate) fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Record that `txids` entered the mempool now (if not recorded yet).
    pub(crate) fn note_entered(&self, txids: impl IntoIterator<Item = Txid>) {
        let height = self.chain.tip().map(|t| t.height).unwrap_or(0);
        let time = now();
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        for txid in txids {
            meta.entry(txid).or_insert(EntryMeta { time, height });
        }
    }

    /// Entry time and height of mempool transactions (recording now for those not seen yet,
    /// and forgetting those that left).
    pub(crate) fn entry_meta(&self, in_pool: &[Txid], height: u32) -> HashMap<Txid, EntryMeta> {
        let mut meta = self.meta.lock().unwrap_or_else(|e| e.into_inner());
        let time = now();
        let keep: std::collections::HashSet<&Txid> = in_pool.iter().collect();
        meta.retain(|t, _| keep.contains(t));
        for t in in_pool {
            meta.entry(*t).or_insert(EntryMeta { time, height });
        }
        meta.clone()
    }

    /// Where a transaction is: the mempool, or a block of the active chain (`-txindex`).
    pub(crate) fn find_transaction(&self, txid: &Txid) -> Result<Option<FoundTx>, RpcError> {
        if let Some(tx) = self
            .chain
            .with_mempool(|pool, _| pool.get(txid).map(|e| e.tx.clone()))
        {
            return Ok(Some(FoundTx { tx, block: None }));
        }
        match self.chain.tx_status(txid).map_err(chain_error)? {
            TxStatus::Confirmed { height, .. } => {
                let block = self.block(height)?;
                let tx = block
                    .txdata
                    .iter()
                    .find(|t| t.compute_txid() == *txid)
                    .cloned();
                Ok(tx.map(|tx| FoundTx {
                    tx,
                    block: Some((height, block)),
                }))
            }
            _ => Ok(None),
        }
    }

    /// The active-chain block at `height`.
    pub(crate) fn block(&self, height: u32) -> Result<Block, RpcError> {
        self.chain
            .block_at(height)
            .map_err(chain_error)?
            .ok_or_else(|| RpcError::new(RPC_MISC_ERROR, "Block not found on disk"))
    }

    /// What each input of a confirmed transaction spent (Core's undo data), looked up in the
    /// blocks that created the outputs; `cache` keeps blocks already read.
    pub(crate) fn prevouts(
        &self,
        tx: &Transaction,
        cache: &mut HashMap<u32, Block>,
    ) -> Result<Option<Vec<Prevout>>, RpcError> {
        if tx.is_coinbase() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(tx.input.len());
        for input in &tx.input {
            let op = input.previous_output;
            let TxStatus::Confirmed { height, .. } =
                self.chain.tx_status(&op.txid).map_err(chain_error)?
            else {
                return Ok(None);
            };
            let block = match cache.entry(height) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.block(height)?),
            };
            let Some((pos, prev)) = block
                .txdata
                .iter()
                .enumerate()
                .find(|(_, t)| t.compute_txid() == op.txid)
            else {
                return Ok(None);
            };
            let Some(txout) = prev.output.get(op.vout as usize) else {
                return Ok(None);
            };
            out.push(Prevout {
                txout: txout.clone(),
                height,
                coinbase: pos == 0,
            });
        }
        Ok(Some(out))
    }
}

/// A transaction found by [`Ctx::find_transaction`].
pub(crate) struct FoundTx {
    /// The transaction.
    pub tx: Transaction,
    /// The block holding it (height and block), when confirmed.
    pub block: Option<(u32, Block)>,
}

/// Unix time now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A backend failure as an RPC error.
pub(crate) fn chain_error(e: ChainError) -> RpcError {
    RpcError::new(RPC_MISC_ERROR, e.to_string())
}

/// A method handler.
pub(crate) type Handler = fn(&Ctx, &Args) -> Result<Json, RpcError>;

/// One RPC method.
pub(crate) struct Method {
    /// Core's name.
    pub name: &'static str,
    /// Core's category (for `help`).
    pub category: &'static str,
    /// Its parameters, with Core's names.
    pub params: &'static [Param],
    /// One-line description.
    pub description: &'static str,
    /// The code.
    pub handler: Handler,
}

/// Every method `chaind` serves.
pub(crate) fn table() -> Vec<&'static Method> {
    let mut all: Vec<&'static Method> = Vec::new();
    for group in [
        blockchain::METHODS,
        control::METHODS,
        mempool::METHODS,
        mining::METHODS,
        network::METHODS,
        rawtransaction::METHODS,
    ] {
        all.extend(group.iter());
    }
    all
}

/// The method called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Method> {
    table().into_iter().find(|m| m.name == name)
}

/// Run one call: find the method, check its arguments, run it; a panic answers
/// `RPC_INTERNAL_ERROR` instead of taking the server down.
pub(crate) fn dispatch(ctx: &Ctx, name: &str, params: &Value) -> Result<Json, RpcError> {
    let Some(method) = find(name) else {
        return Err(RpcError::new(RPC_METHOD_NOT_FOUND, "Method not found"));
    };
    run_guarded(|| {
        let args = Args::parse(
            params,
            method.params,
            &usage(method.name, method.params, method.description),
        )?;
        (method.handler)(ctx, &args)
    })
}

/// Run `f`, turning a panic into `RPC_INTERNAL_ERROR`.
pub(crate) fn run_guarded(f: impl FnOnce() -> Result<Json, RpcError>) -> Result<Json, RpcError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(%what, "RPC handler panicked");
            Err(RpcError::new(
                RPC_INTERNAL_ERROR,
                format!("Internal error: {what}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_answers_internal_error() {
        let e = run_guarded(|| panic!("boom")).unwrap_err();
        assert_eq!(e.code, RPC_INTERNAL_ERROR);
        assert!(e.message.contains("boom"));
    }

    #[test]
    fn method_names_are_unique() {
        let mut names: Vec<&str> = table().iter().map(|m| m.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
