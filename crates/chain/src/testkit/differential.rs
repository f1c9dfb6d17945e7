//! [`Differential`]: the embedded chain, with every transaction, package and block it is given also
//! judged by a real bitcoind that follows the same chain, and every disagreement recorded.
//!
//! Transactions are judged by Core's `testmempoolaccept` (and relayed to it when both accept, so
//! both mempools stay alike); packages by `submitpackage` (Core has no dry run that applies
//! package fee rates); every block we mine is handed to Core with `submitblock`, and a block our
//! engine refuses is put to Core with `generateblock` without submitting it. Verdicts are compared
//! by class ([`RejectClass`]): accepted, or rejected for the same kind of reason.

use std::io::Write;
use std::sync::Mutex;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hex::DisplayHex;
use bitcoin::{Address, Block, BlockHash, FeeRate, Network, OutPoint, Script, Transaction, Txid};
use serde_json::{json, Value};

use crate::error::ChainError;
use crate::index::Coin;
use crate::mempool::PackageAcceptance;
use crate::rpc::client::{package_error, CallError};
use crate::rpc::process::BitcoindProcess;
use crate::rpc::reject::RejectClass;
use crate::rpc::BitcoindRpc;
use crate::{Chain, ChainTip, EmbeddedChain, TxStatus};

/// Environment variable naming a file the differential check appends its records to (one JSON
/// object per comparison).
pub const DIFF_LOG_ENV: &str = "SUPERSCALAR_DIFF_LOG";

/// A verdict: accepted, or rejected with a class and the words.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Rejected(RejectClass, String),
}

impl Verdict {
    fn of_ours<T>(r: &Result<T, ChainError>) -> Self {
        match r {
            Ok(_) => Verdict::Accepted,
            Err(ChainError::Rejected { reason, .. }) => {
                Verdict::Rejected(RejectClass::of_reason(reason), reason.to_string())
            }
            Err(ChainError::BlockRejected { reason, .. }) => {
                Verdict::Rejected(RejectClass::Consensus, reason.clone())
            }
            Err(e) => Verdict::Rejected(RejectClass::Other, e.to_string()),
        }
    }

    fn of_core(message: &str) -> Self {
        Verdict::Rejected(RejectClass::of(message), message.to_string())
    }

    fn agrees(&self, other: &Verdict) -> bool {
        match (self, other) {
            (Verdict::Accepted, Verdict::Accepted) => true,
            (Verdict::Rejected(a, _), Verdict::Rejected(b, _)) => a == b,
            _ => false,
        }
    }

    fn class(&self) -> String {
        match self {
            Verdict::Accepted => "accepted".into(),
            Verdict::Rejected(class, _) => format!("{class:?}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Verdict::Accepted => "accepted".into(),
            Verdict::Rejected(class, words) => format!("rejected ({class:?}): {words}"),
        }
    }
}

/// One disagreement between our chain and Bitcoin Core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// What was judged: `tx`, `package` or `block`.
    pub kind: &'static str,
    /// The transaction (the child, for a package) or block.
    pub id: String,
    /// Our verdict.
    pub ours: String,
    /// Core's verdict.
    pub core: String,
}

/// Counts of the comparisons made so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Verdicts compared.
    pub compared: usize,
    /// Of those, how many agreed.
    pub agreed: usize,
    /// The others.
    pub differences: Vec<Difference>,
}

/// The embedded chain, with Bitcoin Core as a second judge of everything submitted to it.
pub struct Differential {
    ours: EmbeddedChain,
    core: BitcoindRpc,
    report: Mutex<DiffReport>,
    // Dropped last: stops the node.
    _node: BitcoindProcess,
}

impl Differential {
    /// Pair a fresh embedded chain with a fresh regtest bitcoind (both at genesis).
    pub fn new(ours: EmbeddedChain, node: BitcoindProcess) -> Result<Self, ChainError> {
        let core = node.rpc()?;
        let (a, b) = (ours.tip()?, core.tip()?);
        if a != b {
            return Err(ChainError::InvalidArgument(format!(
                "the two chains start apart: ours at {} {}, Core at {} {}",
                a.height, a.hash, b.height, b.hash
            )));
        }
        Ok(Differential {
            ours,
            core,
            report: Mutex::new(DiffReport::default()),
            _node: node,
        })
    }

    /// Our chain.
    pub fn ours(&self) -> &EmbeddedChain {
        &self.ours
    }

    /// The comparisons so far.
    pub fn report(&self) -> DiffReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, kind: &'static str, id: String, ours: &Verdict, core: &Verdict) {
        let agreed = ours.agrees(core);
        {
            let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
            r.compared += 1;
            if agreed {
                r.agreed += 1;
            } else {
                r.differences.push(Difference {
                    kind,
                    id: id.clone(),
                    ours: ours.describe(),
                    core: core.describe(),
                });
            }
        }
        if let Some(path) = std::env::var_os(DIFF_LOG_ENV) {
            let line = json!({
                "kind": kind,
                "pair": format!("{kind} {} {}", ours.class(), core.class()),
                "id": id,
                "agreed": agreed,
                "ours": ours.describe(),
                "core": core.describe(),
                "test": std::thread::current().name().unwrap_or("?"),
            });
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                // One write per record: appends from parallel tests do not interleave.
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
        }
    }

    /// Core's verdict on one transaction (hex), without changing its mempool.
    fn core_test_accept(&self, hex: &str) -> Verdict {
        match self
            .core
            .call("testmempoolaccept", &[json!([hex]), json!(0)])
        {
            Ok(v) => {
                let r = &v[0];
                if r.get("allowed").and_then(Value::as_bool) == Some(true) {
                    Verdict::Accepted
                } else {
                    let reason = r
                        .get("reject-reason")
                        .and_then(Value::as_str)
                        .unwrap_or("?");
                    Verdict::of_core(reason)
                }
            }
            Err(CallError::Rpc(e)) => Verdict::of_core(&e.message),
            Err(CallError::Transport(e)) => panic!("bitcoind unreachable: {e}"),
        }
    }

    fn core_send(&self, hex: &str) {
        let _ = self
            .core
            .call("sendrawtransaction", &[json!(hex), json!(0)]);
    }

    /// Hand the blocks we mined to Core; a block Core refuses is a (consensus!) difference.
    fn mirror_blocks(&self, hashes: &[BlockHash]) -> Result<(), ChainError> {
        let tip = self.ours.tip()?.height;
        let first = tip + 1 - hashes.len() as u32;
        for height in first..=tip {
            let block = self
                .ours
                .block_at(height)?
                .ok_or_else(|| ChainError::Storage(format!("block {height} missing")))?;
            let verdict = match self
                .core
                .call("submitblock", &[json!(serialize_hex(&block))])
            {
                Ok(Value::Null) => Verdict::Accepted,
                Ok(v) => Verdict::of_core(v.as_str().unwrap_or("?")),
                Err(CallError::Rpc(e)) => Verdict::of_core(&e.message),
                Err(CallError::Transport(e)) => panic!("bitcoind unreachable: {e}"),
            };
            self.record(
                "block",
                block.block_hash().to_string(),
                &Verdict::Accepted,
                &verdict,
            );
        }
        Ok(())
    }

    fn descriptor(payout: &Script) -> String {
        match Address::from_script(payout, Network::Regtest) {
            Ok(a) => format!("addr({a})"),
            Err(_) => format!("raw({})", payout.as_bytes().to_lower_hex_string()),
        }
    }
}

impl Drop for Differential {
    fn drop(&mut self) {
        let r = self.report();
        eprintln!(
            "differential check: {} verdicts compared, {} agreed, {} differ",
            r.compared,
            r.agreed,
            r.differences.len()
        );
        for d in &r.differences {
            eprintln!("  {} {}: ours {}; Core {}", d.kind, d.id, d.ours, d.core);
        }
    }
}

impl Chain for Differential {
    fn tip(&self) -> Result<ChainTip, ChainError> {
        self.ours.tip()
    }

    fn median_time_past(&self) -> Result<u32, ChainError> {
        self.ours.median_time_past()
    }

    fn submit_transaction(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        let hex = serialize_hex(tx);
        let core = self.core_test_accept(&hex);
        let ours = self.ours.submit_transaction(tx);
        let verdict = Verdict::of_ours(&ours);
        self.record("tx", tx.compute_txid().to_string(), &verdict, &core);
        if verdict == Verdict::Accepted && core == Verdict::Accepted {
            self.core_send(&hex);
        }
        ours
    }

    fn submit_raw_transaction(&self, bytes: &[u8]) -> Result<Txid, ChainError> {
        let hex = bytes.to_lower_hex_string();
        let core = self.core_test_accept(&hex);
        let ours = self.ours.submit_raw_transaction(bytes);
        let verdict = Verdict::of_ours(&ours);
        let id = ours
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_else(|_| format!("raw {} bytes", bytes.len()));
        self.record("tx", id, &verdict, &core);
        if verdict == Verdict::Accepted && core == Verdict::Accepted {
            self.core_send(&hex);
        }
        ours
    }

    fn submit_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<PackageAcceptance, ChainError> {
        let ours = self.ours.submit_package(parent, child);
        let package = json!([serialize_hex(parent), serialize_hex(child)]);
        let core = match self.core.call("submitpackage", &[package, json!(0)]) {
            Ok(v) if v.get("package_msg").and_then(Value::as_str) == Some("success") => {
                Verdict::Accepted
            }
            Ok(v) => Verdict::of_core(&package_error(&v, parent, child).map_or_else(
                || {
                    v.get("package_msg")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                },
                |(_, e)| e,
            )),
            Err(CallError::Rpc(e)) => Verdict::of_core(&e.message),
            Err(CallError::Transport(e)) => panic!("bitcoind unreachable: {e}"),
        };
        self.record(
            "package",
            child.compute_txid().to_string(),
            &Verdict::of_ours(&ours),
            &core,
        );
        ours
    }

    fn mine_blocks(&self, count: u32, payout: &Script) -> Result<Vec<BlockHash>, ChainError> {
        let hashes = self.ours.mine_blocks(count, payout)?;
        self.mirror_blocks(&hashes)?;
        Ok(hashes)
    }

    fn mine_block_with(
        &self,
        txs: &[Transaction],
        payout: &Script,
    ) -> Result<BlockHash, ChainError> {
        let ours = self.ours.mine_block_with(txs, payout);
        match &ours {
            Ok(hash) => self.mirror_blocks(std::slice::from_ref(hash))?,
            Err(ChainError::BlockRejected { .. }) => {
                // Would Core's engine take a block of exactly these transactions?
                let raw: Vec<Value> = txs.iter().map(|t| json!(serialize_hex(t))).collect();
                let core = match self.core.call(
                    "generateblock",
                    &[
                        json!(Self::descriptor(payout)),
                        Value::Array(raw),
                        json!(false),
                    ],
                ) {
                    Ok(_) => Verdict::Accepted,
                    Err(CallError::Rpc(e)) => Verdict::of_core(&e.message),
                    Err(CallError::Transport(e)) => panic!("bitcoind unreachable: {e}"),
                };
                // Any refusal of a block counts as a consensus refusal on both sides.
                let core = match core {
                    Verdict::Rejected(_, w) => Verdict::Rejected(RejectClass::Consensus, w),
                    a => a,
                };
                self.record(
                    "block",
                    format!("{} transactions", txs.len()),
                    &Verdict::of_ours(&ours),
                    &core,
                );
            }
            Err(_) => {}
        }
        ours
    }

    fn tx_status(&self, txid: &Txid) -> Result<TxStatus, ChainError> {
        self.ours.tx_status(txid)
    }

    fn get_utxo(&self, outpoint: &OutPoint) -> Result<Option<Coin>, ChainError> {
        self.ours.get_utxo(outpoint)
    }

    fn block_at(&self, height: u32) -> Result<Option<Block>, ChainError> {
        self.ours.block_at(height)
    }

    fn estimate_fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        self.ours.estimate_fee_rate(target_blocks)
    }
}
