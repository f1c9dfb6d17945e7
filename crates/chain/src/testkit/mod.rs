//! Chains for tests: the same scenario runs on the embedded chain, over RPC on `chaind`, over RPC
//! on a real `bitcoind -regtest`, or on the embedded chain with every verdict compared against real
//! Bitcoin Core's (the differential check).
//!
//! [`TestChain::from_env`] picks the backend from `SUPERSCALAR_TEST_CHAIN` (`embedded`, the
//! default; `chaind`; `bitcoind`; `differential`); the real-bitcoind backends find the binaries
//! through [`crate::rpc::process::BITCOIND_BIN_ENV`].

mod differential;

use std::sync::Mutex;

use bitcoin::{Block, BlockHash, FeeRate, OutPoint, Script, Transaction, Txid};

pub use differential::{DiffReport, Difference, Differential};

use crate::error::ChainError;
use crate::index::Coin;
use crate::mempool::PackageAcceptance;
use crate::rpc::process::{bitcoind_bin_dir, BitcoindProcess};
use crate::rpc::server::{Chaind, ChaindConfig, ChaindHandle};
use crate::rpc::BitcoindRpc;
use crate::{Chain, ChainTip, EmbeddedChain, TxStatus};

/// Environment variable choosing the backend of [`TestChain::from_env`].
pub const TEST_CHAIN_ENV: &str = "SUPERSCALAR_TEST_CHAIN";

/// Which chain a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`EmbeddedChain`] in process.
    Embedded,
    /// [`BitcoindRpc`] over `chaind` (the embedded chain behind Core's RPC), in process.
    Chaind,
    /// [`BitcoindRpc`] over a real `bitcoind -regtest` started for the test.
    Bitcoind,
    /// [`EmbeddedChain`], with every submission also judged by a real bitcoind.
    Differential,
}

impl Backend {
    /// The backend named by `SUPERSCALAR_TEST_CHAIN` (embedded when unset).
    ///
    /// Panics on an unknown name, so that a typo cannot silently test the wrong chain.
    pub fn from_env() -> Self {
        match std::env::var(TEST_CHAIN_ENV).as_deref() {
            Err(_) | Ok("") | Ok("embedded") => Backend::Embedded,
            Ok("chaind") => Backend::Chaind,
            Ok("bitcoind") => Backend::Bitcoind,
            Ok("differential") => Backend::Differential,
            Ok(other) => {
                panic!(
                    "{TEST_CHAIN_ENV}={other}: expected embedded, chaind, bitcoind or differential"
                )
            }
        }
    }
}

enum Inner {
    Embedded(EmbeddedChain),
    Rpc {
        rpc: BitcoindRpc,
        // Dropped after the client: stops the node.
        _node: BitcoindProcess,
    },
    Differential(Box<Differential>),
    Chaind {
        rpc: BitcoindRpc,
        // Field order is drop order: the client, then the server, then its directory.
        _server: ChaindHandle,
        _dir: tempfile::TempDir,
    },
}

/// A chain for tests, on any [`Backend`], with the few controls tests need beyond [`Chain`].
pub struct TestChain {
    inner: Inner,
    fee_floor: Mutex<Option<FeeRate>>,
}

impl std::fmt::Debug for TestChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestChain")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl TestChain {
    /// A fresh chain on the backend `SUPERSCALAR_TEST_CHAIN` names.
    pub fn from_env() -> Self {
        Self::new(Backend::from_env())
    }

    /// A fresh chain on `backend`. Panics when it cannot be started (tests only).
    pub fn new(backend: Backend) -> Self {
        let inner = match backend {
            Backend::Embedded => {
                Inner::Embedded(EmbeddedChain::in_memory().expect("embedded chain"))
            }
            Backend::Chaind => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let mut config = ChaindConfig::new(dir.path());
                config.bind = ([127, 0, 0, 1], 0).into();
                config.stop_on_signals = false;
                let server = Chaind::start(config).expect("start chaind");
                let url = format!("http://{}", server.local_addr());
                let rpc = BitcoindRpc::connect(url, server.auth()).expect("chaind rpc");
                Inner::Chaind {
                    rpc,
                    _server: server,
                    _dir: dir,
                }
            }
            Backend::Bitcoind | Backend::Differential => {
                let bin = bitcoind_bin_dir().unwrap_or_else(|| {
                    panic!(
                        "{TEST_CHAIN_ENV}={backend:?} needs {}",
                        crate::rpc::process::BITCOIND_BIN_ENV
                    )
                });
                let node = BitcoindProcess::start(&bin).expect("start bitcoind");
                if backend == Backend::Bitcoind {
                    Inner::Rpc {
                        rpc: node.rpc().expect("bitcoind rpc"),
                        _node: node,
                    }
                } else {
                    Inner::Differential(Box::new(
                        Differential::new(
                            EmbeddedChain::in_memory().expect("embedded chain"),
                            node,
                        )
                        .expect("differential chain"),
                    ))
                }
            }
        };
        TestChain {
            inner,
            fee_floor: Mutex::new(None),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Embedded(_) => Backend::Embedded,
            Inner::Rpc { .. } => Backend::Bitcoind,
            Inner::Chaind { .. } => Backend::Chaind,
            Inner::Differential(_) => Backend::Differential,
        }
    }

    fn chain(&self) -> &dyn Chain {
        match &self.inner {
            Inner::Embedded(c) => c,
            Inner::Rpc { rpc, .. } | Inner::Chaind { rpc, .. } => rpc,
            Inner::Differential(d) => d.as_ref(),
        }
    }

    /// Number of transactions in the mempool.
    pub fn mempool_len(&self) -> usize {
        match &self.inner {
            Inner::Embedded(c) => c.mempool_len(),
            Inner::Differential(d) => d.ours().mempool_len(),
            Inner::Rpc { rpc, .. } | Inner::Chaind { rpc, .. } => {
                rpc.call("getmempoolinfo", &[])
                    .ok()
                    .and_then(|v| v.get("size").and_then(|s| s.as_u64()))
                    .expect("getmempoolinfo") as usize
            }
        }
    }

    /// Fee paid by a mempool transaction.
    pub fn mempool_fee(&self, txid: &Txid) -> Option<bitcoin::Amount> {
        match &self.inner {
            Inner::Embedded(c) => c.mempool_fee(txid),
            Inner::Differential(d) => d.ours().mempool_fee(txid),
            Inner::Rpc { rpc, .. } | Inner::Chaind { rpc, .. } => {
                let entry = rpc
                    .call("getmempoolentry", &[txid.to_string().into()])
                    .ok()?;
                let btc = entry.get("fees")?.get("base")?.as_f64()?;
                Some(bitcoin::Amount::from_sat((btc * 1e8).round() as u64))
            }
        }
    }

    /// Make `estimate_fee_rate` answer at least `rate` (a busy fee market), on every backend.
    pub fn set_fee_floor(&self, rate: FeeRate) {
        *self.fee_floor.lock().unwrap_or_else(|e| e.into_inner()) = Some(rate);
    }

    /// The differential check's report so far (`None` on other backends).
    pub fn diff_report(&self) -> Option<DiffReport> {
        match &self.inner {
            Inner::Differential(d) => Some(d.report()),
            _ => None,
        }
    }
}

impl Chain for TestChain {
    fn tip(&self) -> Result<ChainTip, ChainError> {
        self.chain().tip()
    }
    fn median_time_past(&self) -> Result<u32, ChainError> {
        self.chain().median_time_past()
    }
    fn submit_transaction(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.chain().submit_transaction(tx)
    }
    fn submit_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<PackageAcceptance, ChainError> {
        self.chain().submit_package(parent, child)
    }
    fn mine_blocks(&self, count: u32, payout: &Script) -> Result<Vec<BlockHash>, ChainError> {
        self.chain().mine_blocks(count, payout)
    }
    fn mine_block_with(
        &self,
        txs: &[Transaction],
        payout: &Script,
    ) -> Result<BlockHash, ChainError> {
        self.chain().mine_block_with(txs, payout)
    }
    fn tx_status(&self, txid: &Txid) -> Result<TxStatus, ChainError> {
        self.chain().tx_status(txid)
    }
    fn get_utxo(&self, outpoint: &OutPoint) -> Result<Option<Coin>, ChainError> {
        self.chain().get_utxo(outpoint)
    }
    fn block_at(&self, height: u32) -> Result<Option<Block>, ChainError> {
        self.chain().block_at(height)
    }
    fn estimate_fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        let rate = self.chain().estimate_fee_rate(target_blocks)?;
        let floor = *self.fee_floor.lock().unwrap_or_else(|e| e.into_inner());
        Ok(floor.map_or(rate, |f| rate.max(f)))
    }
    fn submit_raw_transaction(&self, bytes: &[u8]) -> Result<Txid, ChainError> {
        self.chain().submit_raw_transaction(bytes)
    }
}
