//! [`BitcoindRpc`]: the [`Chain`] interface over Bitcoin Core's JSON-RPC, against a real bitcoind
//! or `superscalar chaind`.
//!
//! Requirements on the node: Bitcoin Core 28 or newer (JSON-RPC 2.0 envelopes, `submitpackage`,
//! TRUC and P2A policy), started with `-server=1` and `-txindex=1` (`tx_status` looks confirmed
//! transactions up by txid; [`BitcoindRpc::connect`] refuses a node without the index). Mining
//! (`mine_blocks`, `mine_block_with`) works on regtest only and is refused elsewhere.
//!
//! A refused transaction comes back as the same typed [`RejectReason`] `EmbeddedChain` gives: the
//! class is read from Core's reject reason, and the details Core's message does not carry (which
//! input is missing, which mempool transaction conflicts, the locks not yet reached) are looked up
//! on the node right after the refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bitcoin::consensus::{deserialize, encode::serialize_hex};
use bitcoin::hashes::Hash;
use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{
    Address, Amount, Block, BlockHash, FeeRate, Network, OutPoint, Script, ScriptBuf, Transaction,
    TxOut, Txid, Weight,
};
use serde_json::{json, Value};

use crate::consensus::{check_sequence_locks, SpentContext};
use crate::error::{ChainError, RejectReason};
use crate::index::Coin;
use crate::mempool::PackageAcceptance;
use crate::rpc::auth::Auth;
use crate::rpc::codes::{
    RPC_DESERIALIZATION_ERROR, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER,
    RPC_VERIFY_ALREADY_IN_CHAIN, RPC_VERIFY_ERROR, RPC_VERIFY_REJECTED,
};
use crate::rpc::reject::RejectClass;
use crate::{Chain, ChainTip, TxStatus};

/// Largest block weight (BIP141), less what a coinbase needs.
const MAX_TEMPLATE_WEIGHT: u64 = 4_000_000 - 4_000;
/// Largest virtual size of a block, hence of any transaction.
const MAX_BLOCK_VSIZE: u64 = 1_000_000;
/// Largest answer read (a block's hex is at most 8 MB); a longer one is refused.
const MAX_ANSWER_SIZE: u64 = 64 * 1024 * 1024;
/// How long one RPC call may take before it counts as failed (mining many blocks is slow).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// An error answered by the node (Core's code and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// Core's error code.
    pub code: i32,
    /// Core's message.
    pub message: String,
}

/// A call that failed: the node answered an error, or the call did not get an answer.
#[derive(Debug)]
pub enum CallError {
    /// The node answered with an error object.
    Rpc(RpcError),
    /// No usable answer (connection, HTTP status, authentication, JSON).
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rpc(e) => write!(f, "RPC error {}: {}", e.code, e.message),
            CallError::Transport(m) => write!(f, "no answer: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    fn into_chain(self, method: &str) -> ChainError {
        match self {
            CallError::Rpc(e) => ChainError::Rpc {
                method: method.to_string(),
                code: Some(e.code),
                message: e.message,
            },
            CallError::Transport(message) => ChainError::Rpc {
                method: method.to_string(),
                code: None,
                message,
            },
        }
    }
}

/// The [`Chain`] interface over Bitcoin Core's JSON-RPC.
pub struct BitcoindRpc {
    url: String,
    auth: Auth,
    agent: ureq::Agent,
    network: Network,
    next_id: AtomicU64,
}

impl std::fmt::Debug for BitcoindRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitcoindRpc")
            .field("url", &self.url)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

fn btc_to_sat(v: &Value) -> Option<u64> {
    let btc = v.as_f64()?;
    if !(0.0..=21_000_000.0).contains(&btc) {
        return None;
    }
    Some((btc * 100_000_000.0).round() as u64)
}

/// A fee rate in BTC/kvB (Core's unit) as a [`FeeRate`].
fn btc_per_kvb_to_rate(v: &Value) -> Option<FeeRate> {
    let sat_per_kvb = btc_to_sat(v)?;
    Some(FeeRate::from_sat_per_kwu(sat_per_kvb / 4))
}

fn field<'a>(v: &'a Value, name: &str, method: &str) -> Result<&'a Value, ChainError> {
    v.get(name).ok_or_else(|| ChainError::Rpc {
        method: method.to_string(),
        code: None,
        message: format!("answer has no field `{name}`"),
    })
}

fn bad_answer(method: &str, what: impl std::fmt::Display) -> ChainError {
    ChainError::Rpc {
        method: method.to_string(),
        code: None,
        message: format!("unexpected answer: {what}"),
    }
}

fn parse_hash<T: std::str::FromStr>(v: &Value, method: &str) -> Result<T, ChainError>
where
    T::Err: std::fmt::Display,
{
    v.as_str()
        .ok_or_else(|| bad_answer(method, "hash is not a string"))?
        .parse()
        .map_err(|e| bad_answer(method, e))
}

fn as_u32(v: &Value, method: &str) -> Result<u32, ChainError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad_answer(method, format!("{v} is not a u32")))
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .build()
}

impl BitcoindRpc {
    /// Connect to the node at `url` (e.g. `http://127.0.0.1:18443`), checking that it answers,
    /// which network it runs and that its transaction index is on.
    pub fn connect(url: impl Into<String>, auth: Auth) -> Result<Self, ChainError> {
        let mut rpc = Self::unchecked(url, auth);
        let info = rpc.call_chain("getblockchaininfo", &[])?;
        let chain = field(&info, "chain", "getblockchaininfo")?
            .as_str()
            .unwrap_or_default();
        rpc.network = match chain {
            "main" => Network::Bitcoin,
            "test" => Network::Testnet,
            "testnet4" => Network::Testnet4,
            "signet" => Network::Signet,
            "regtest" => Network::Regtest,
            other => return Err(bad_answer("getblockchaininfo", format!("chain {other}"))),
        };
        let indexes = rpc.call_chain("getindexinfo", &[json!("txindex")])?;
        if indexes.get("txindex").is_none() {
            return Err(ChainError::Rpc {
                method: "getindexinfo".into(),
                code: None,
                message: "the node has no transaction index: start bitcoind with -txindex=1 \
                          (tx_status looks confirmed transactions up by txid)"
                    .into(),
            });
        }
        Ok(rpc)
    }

    /// A client that has not called the node yet (network assumed regtest).
    pub(crate) fn unchecked(url: impl Into<String>, auth: Auth) -> Self {
        BitcoindRpc {
            url: url.into(),
            auth,
            agent: agent(CALL_TIMEOUT),
            network: Network::Regtest,
            next_id: AtomicU64::new(1),
        }
    }

    /// The same client with another limit on how long one call may take (120 s by default, for
    /// long mining calls); a node that does not answer in time is a [`ChainError::Rpc`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.agent = agent(timeout);
        self
    }

    /// The node's network.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The URL this client calls.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Call `method` with positional `params`: the result, or the node's error.
    pub fn call(&self, method: &str, params: &[Value]) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let credentials = self
            .auth
            .credentials()
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = match self
            .agent
            .post(&self.url)
            .set("Authorization", &credentials.basic_header())
            .send_json(request)
        {
            Ok(r) => r,
            // Legacy (1.0) servers answer errors with HTTP 500/404/400 and a JSON body.
            Err(ureq::Error::Status(400 | 404 | 500, r)) => r,
            Err(ureq::Error::Status(401, _)) => {
                return Err(CallError::Transport(
                    "authentication refused (HTTP 401): check the cookie file or user and \
                     password"
                        .into(),
                ))
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(CallError::Transport(format!(
                    "HTTP {code} {}",
                    r.status_text()
                )))
            }
            Err(e) => return Err(CallError::Transport(e.to_string())),
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response.into_reader(), MAX_ANSWER_SIZE + 1),
            &mut bytes,
        )
        .map_err(|e| CallError::Transport(format!("cannot read the answer: {e}")))?;
        if bytes.len() as u64 > MAX_ANSWER_SIZE {
            return Err(CallError::Transport(format!(
                "answer too large (over {MAX_ANSWER_SIZE} bytes)"
            )));
        }
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Transport(format!("answer is not JSON: {e}")))?;
        if let Some(err) = body.get("error").filter(|e| !e.is_null()) {
            let code = err
                .get("code")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(0);
            let message = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            return Err(CallError::Rpc(RpcError { code, message }));
        }
        if body.get("id") != Some(&json!(id)) {
            return Err(CallError::Transport(format!(
                "answer to request {id} carries id {}",
                body.get("id").unwrap_or(&Value::Null)
            )));
        }
        Ok(body.get("result").cloned().unwrap_or(Value::Null))
    }

    fn call_chain(&self, method: &str, params: &[Value]) -> Result<Value, ChainError> {
        self.call(method, params).map_err(|e| e.into_chain(method))
    }

    fn require_regtest(&self) -> Result<(), ChainError> {
        if self.network == Network::Regtest {
            Ok(())
        } else {
            Err(ChainError::Unsupported(
                "mining: only on a regtest node (this node runs another network)",
            ))
        }
    }

    /// Height and median time past of the tip, read in one call.
    fn tip_and_mtp(&self) -> Result<(u32, u32), ChainError> {
        let info = self.call_chain("getblockchaininfo", &[])?;
        Ok((
            as_u32(
                field(&info, "blocks", "getblockchaininfo")?,
                "getblockchaininfo",
            )?,
            as_u32(
                field(&info, "mediantime", "getblockchaininfo")?,
                "getblockchaininfo",
            )?,
        ))
    }

    fn header(&self, hash: &BlockHash) -> Result<Value, ChainError> {
        self.call_chain("getblockheader", &[json!(hash.to_string()), json!(true)])
    }

    /// An output as the node sees it, mempool included or not: (output, height, coinbase).
    fn txout(
        &self,
        outpoint: &OutPoint,
        include_mempool: bool,
    ) -> Result<Option<(TxOut, Option<u32>, bool)>, ChainError> {
        const M: &str = "gettxout";
        let v = self.call_chain(
            M,
            &[
                json!(outpoint.txid.to_string()),
                json!(outpoint.vout),
                json!(include_mempool),
            ],
        )?;
        if v.is_null() {
            return Ok(None);
        }
        let value = btc_to_sat(field(&v, "value", M)?).ok_or_else(|| bad_answer(M, "value"))?;
        let script_hex = field(field(&v, "scriptPubKey", M)?, "hex", M)?
            .as_str()
            .ok_or_else(|| bad_answer(M, "scriptPubKey.hex"))?;
        let script = ScriptBuf::from_hex(script_hex).map_err(|e| bad_answer(M, e))?;
        let confirmations = field(&v, "confirmations", M)?.as_u64().unwrap_or(0);
        let height = if confirmations == 0 {
            None
        } else {
            let best: BlockHash = parse_hash(field(&v, "bestblock", M)?, M)?;
            let best_height = as_u32(field(&self.header(&best)?, "height", M)?, M)?;
            // The block `confirmations - 1` below the best one.
            let height = u32::try_from(confirmations - 1)
                .ok()
                .and_then(|depth| best_height.checked_sub(depth))
                .ok_or_else(|| {
                    bad_answer(
                        M,
                        format!("{confirmations} confirmations under a best block at height {best_height}"),
                    )
                })?;
            Some(height)
        };
        let coinbase = v.get("coinbase").and_then(Value::as_bool).unwrap_or(false);
        Ok(Some((
            TxOut {
                value: Amount::from_sat(value),
                script_pubkey: script,
            },
            height,
            coinbase,
        )))
    }

    /// Median time past of the block at `height`.
    fn mtp_at(&self, height: u32) -> Result<u32, ChainError> {
        let hash: BlockHash = parse_hash(
            &self.call_chain("getblockhash", &[json!(height)])?,
            "getblockhash",
        )?;
        as_u32(
            field(&self.header(&hash)?, "mediantime", "getblockheader")?,
            "getblockheader",
        )
    }

    /// Our typed reason for a refusal the node reported as `message`, with the details looked up.
    fn reject_reason(&self, tx: Option<&Transaction>, message: &str) -> RejectReason {
        let class = RejectClass::of(message);
        let Some(tx) = tx else {
            return match class {
                RejectClass::Decode => RejectReason::Decode(message.to_string()),
                _ => RejectReason::Other(message.to_string()),
            };
        };
        // Lookups that fail leave the detail at what Core said.
        self.detailed_reason(tx, class, message)
            .unwrap_or_else(|| fallback_reason(tx, class, message))
    }

    fn detailed_reason(
        &self,
        tx: &Transaction,
        class: RejectClass,
        message: &str,
    ) -> Option<RejectReason> {
        let txid = tx.compute_txid();
        Some(match class {
            RejectClass::MissingInput => {
                for (input, i) in tx.input.iter().enumerate() {
                    if self.txout(&i.previous_output, true).ok()?.is_none() {
                        return Some(RejectReason::MissingInput {
                            input,
                            outpoint: i.previous_output,
                        });
                    }
                }
                return None;
            }
            RejectClass::Conflict => {
                let outpoints: Vec<Value> = tx
                    .input
                    .iter()
                    .map(|i| json!({"txid": i.previous_output.txid.to_string(), "vout": i.previous_output.vout}))
                    .collect();
                let spends = self
                    .call_chain("gettxspendingprevout", &[Value::Array(outpoints)])
                    .ok()?;
                for (input, (i, s)) in tx.input.iter().zip(spends.as_array()?).enumerate() {
                    if let Some(by) = s.get("spendingtxid") {
                        let by: Txid = parse_hash(by, "gettxspendingprevout").ok()?;
                        if by != txid {
                            return Some(RejectReason::Conflict {
                                input,
                                outpoint: i.previous_output,
                                by,
                            });
                        }
                    }
                }
                // TRUC sibling eviction: the transaction it would replace spends another output
                // of the same parent; Core names it ("rejecting replacement <txid>").
                let by: Txid = message
                    .split("rejecting replacement ")
                    .nth(1)?
                    .get(..64)?
                    .parse()
                    .ok()?;
                RejectReason::Conflict {
                    input: 0,
                    outpoint: tx.input.first()?.previous_output,
                    by,
                }
            }
            RejectClass::ImmatureCoinbase => {
                let next = self.tip_and_mtp().ok()?.0.checked_add(1)?;
                for (input, i) in tx.input.iter().enumerate() {
                    if let Some((_, Some(h), true)) = self.txout(&i.previous_output, false).ok()? {
                        let mature_at = h.checked_add(100)?;
                        if next < mature_at {
                            return Some(RejectReason::ImmatureCoinbase {
                                input,
                                outpoint: i.previous_output,
                                height: next,
                                mature_at,
                            });
                        }
                    }
                }
                return None;
            }
            RejectClass::InputsBelowOutputs => {
                let mut inputs = Amount::ZERO;
                for i in &tx.input {
                    let value = self.txout(&i.previous_output, true).ok()??.0.value;
                    inputs = inputs.checked_add(value)?;
                }
                let outputs = tx
                    .output
                    .iter()
                    .try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value))?;
                RejectReason::InputsBelowOutputs { inputs, outputs }
            }
            RejectClass::NonFinal => {
                let (tip, mtp) = self.tip_and_mtp().ok()?;
                RejectReason::NonFinal {
                    lock_time: tx.lock_time.to_consensus_u32(),
                    height: tip.checked_add(1)?,
                    mtp,
                }
            }
            RejectClass::SequenceLocked => {
                let (tip, mtp) = self.tip_and_mtp().ok()?;
                let next = tip.checked_add(1)?;
                let mut spent = Vec::with_capacity(tx.input.len());
                for i in &tx.input {
                    let (_, height, _) = self.txout(&i.previous_output, true).ok()??;
                    let height = height.unwrap_or(next);
                    let prev_mtp = self.mtp_at(height.saturating_sub(1)).ok()?;
                    spent.push(SpentContext { height, prev_mtp });
                }
                return check_sequence_locks(tx, &spent, next, mtp).err();
            }
            RejectClass::FeeTooLow => {
                // "min relay fee not met, <fee> < <minimum fee>" (sat, for the package's size).
                let debug = message.split_once(", ").map(|(_, d)| d)?;
                let (fee, min_fee) = debug.split_once(" < ")?;
                let fee: u64 = fee.trim().parse().ok()?;
                let min_fee: u64 = min_fee.trim().parse().ok()?;
                let vsize = tx.vsize() as u64;
                RejectReason::FeeTooLow {
                    fee: Amount::from_sat(fee),
                    vsize,
                    rate: fee.checked_mul(1000)? / vsize.max(1),
                    min: min_fee.checked_mul(1000)? / vsize.max(1),
                }
            }
            _ => return None,
        })
    }

    fn submit_hex(&self, hex: String, tx: Option<&Transaction>) -> Result<Txid, ChainError> {
        const M: &str = "sendrawtransaction";
        let txid = tx.map(Transaction::compute_txid);
        // The trait says a transaction already in the mempool is refused (Core accepts it again
        // silently).
        if let Some(txid) = txid {
            if self
                .call("getmempoolentry", &[json!(txid.to_string())])
                .is_ok()
            {
                return Err(ChainError::Rejected {
                    txid,
                    reason: RejectReason::AlreadyInMempool(txid),
                });
            }
        }
        // maxfeerate 0: no ceiling, as the embedded chain.
        match self.call(M, &[json!(hex), json!(0)]) {
            Ok(v) => parse_hash(&v, M),
            Err(CallError::Rpc(e))
                if matches!(
                    e.code,
                    RPC_VERIFY_ERROR
                        | RPC_VERIFY_REJECTED
                        | RPC_VERIFY_ALREADY_IN_CHAIN
                        | RPC_DESERIALIZATION_ERROR
                ) =>
            {
                let txid = txid.unwrap_or_else(Txid::all_zeros);
                let reason = if e.code == RPC_VERIFY_ALREADY_IN_CHAIN {
                    RejectReason::AlreadyConfirmed(txid)
                } else if e.code == RPC_DESERIALIZATION_ERROR {
                    RejectReason::Decode(e.message.clone())
                } else {
                    self.reject_reason(tx, &e.message)
                };
                Err(ChainError::Rejected { txid, reason })
            }
            Err(e) => Err(e.into_chain(M)),
        }
    }

    /// A descriptor paying `payout` (an address when it has one, else `raw()`).
    fn payout_descriptor(&self, payout: &Script) -> String {
        match Address::from_script(payout, self.network) {
            Ok(a) => format!("addr({a})"),
            Err(_) => format!("raw({})", payout.as_bytes().to_lower_hex_string()),
        }
    }
}

/// The transaction of a refused package whose error says why, and that error: the first error that
/// is not a fee shortfall (a zero-fee parent is refused alone before the package is judged), else
/// the first error.
pub(crate) fn package_error<'a>(
    result: &Value,
    parent: &'a Transaction,
    child: &'a Transaction,
) -> Option<(&'a Transaction, String)> {
    let errors: Vec<(&Transaction, String)> = [parent, child]
        .into_iter()
        .filter_map(|tx| {
            let err = result
                .get("tx-results")?
                .get(tx.compute_wtxid().to_string())?
                .get("error")?
                .as_str()?;
            Some((tx, err.to_string()))
        })
        .collect();
    errors
        .iter()
        .find(|(_, e)| RejectClass::of(e) != RejectClass::FeeTooLow)
        .or(errors.first())
        .cloned()
}

/// What can be said of a refusal without looking anything up.
fn fallback_reason(tx: &Transaction, class: RejectClass, message: &str) -> RejectReason {
    let m = message.to_string();
    match class {
        RejectClass::Decode => RejectReason::Decode(m),
        RejectClass::Consensus => RejectReason::Consensus(m),
        RejectClass::AlreadyConfirmed => RejectReason::AlreadyConfirmed(tx.compute_txid()),
        RejectClass::AlreadyInMempool => RejectReason::AlreadyInMempool(tx.compute_txid()),
        RejectClass::ScriptInvalid => {
            // "mempool-script-verify-flag-failed (<script error>), <debug naming the input>"
            let inner = message
                .split_once('(')
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(e, _)| e.to_string())
                .unwrap_or_else(|| m.clone());
            let input = message
                .split("input ")
                .nth(1)
                .and_then(|r| {
                    r.split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|d| d.parse().ok())
                })
                .unwrap_or(0);
            RejectReason::ScriptInvalid {
                input,
                message: inner,
            }
        }
        RejectClass::NonStandard => RejectReason::NonStandard(m),
        RejectClass::Dust => RejectReason::Dust(m),
        RejectClass::Truc => RejectReason::Truc(m),
        RejectClass::TooLongMempoolChain => RejectReason::TooLongMempoolChain(m),
        RejectClass::Package => RejectReason::Package(m),
        RejectClass::MissingEphemeralSpend => {
            // The parent's output below its dust threshold (its P2A anchor).
            let vout = tx
                .output
                .iter()
                .position(|o| o.value < o.script_pubkey.minimal_non_dust())
                .unwrap_or(0);
            RejectReason::MissingEphemeralSpend(OutPoint::new(tx.compute_txid(), vout as u32))
        }
        // Details unknown (the lookups failed): say what Core said.
        RejectClass::MissingInput
        | RejectClass::Conflict
        | RejectClass::ImmatureCoinbase
        | RejectClass::InputsBelowOutputs
        | RejectClass::NonFinal
        | RejectClass::SequenceLocked
        | RejectClass::FeeTooLow
        | RejectClass::Other => RejectReason::Other(m),
    }
}

impl Chain for BitcoindRpc {
    fn tip(&self) -> Result<ChainTip, ChainError> {
        const M: &str = "getblockchaininfo";
        let info = self.call_chain(M, &[])?;
        Ok(ChainTip {
            height: as_u32(field(&info, "blocks", M)?, M)?,
            hash: parse_hash(field(&info, "bestblockhash", M)?, M)?,
        })
    }

    fn median_time_past(&self) -> Result<u32, ChainError> {
        Ok(self.tip_and_mtp()?.1)
    }

    fn submit_transaction(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        self.submit_hex(serialize_hex(tx), Some(tx))
    }

    fn submit_raw_transaction(&self, bytes: &[u8]) -> Result<Txid, ChainError> {
        let tx: Option<Transaction> = deserialize(bytes).ok();
        self.submit_hex(bytes.to_lower_hex_string(), tx.as_ref())
    }

    fn submit_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<PackageAcceptance, ChainError> {
        const M: &str = "submitpackage";
        let child_txid = child.compute_txid();
        let parent_txid = parent.compute_txid();
        let package = json!([serialize_hex(parent), serialize_hex(child)]);
        let result = match self.call(M, &[package, json!(0)]) {
            Ok(v) => v,
            Err(CallError::Rpc(e)) if e.code == RPC_INVALID_PARAMETER || e.code == -25 => {
                return Err(ChainError::Rejected {
                    txid: child_txid,
                    reason: RejectReason::Package(e.message),
                })
            }
            Err(CallError::Rpc(e)) if e.code == RPC_DESERIALIZATION_ERROR => {
                return Err(ChainError::Rejected {
                    txid: child_txid,
                    reason: RejectReason::Decode(e.message),
                })
            }
            Err(e) => return Err(e.into_chain(M)),
        };
        let results = field(&result, "tx-results", M)?
            .as_object()
            .ok_or_else(|| bad_answer(M, "tx-results is not an object"))?;
        let by_wtxid = |tx: &Transaction| results.get(&tx.compute_wtxid().to_string());
        let msg = field(&result, "package_msg", M)?
            .as_str()
            .unwrap_or_default();
        if msg != "success" {
            if let Some((tx, err)) = package_error(&result, parent, child) {
                // The dust a child fails to spend is the parent's.
                let judged = match RejectClass::of(&err) {
                    RejectClass::MissingEphemeralSpend => parent,
                    _ => tx,
                };
                let reason = self.reject_reason(Some(judged), &err);
                return Err(ChainError::Rejected {
                    txid: tx.compute_txid(),
                    reason,
                });
            }
            let reason = self.reject_reason(Some(child), msg);
            let reason = match reason {
                RejectReason::Other(m) => RejectReason::Package(m),
                r => r,
            };
            return Err(ChainError::Rejected {
                txid: child_txid,
                reason,
            });
        }
        let mut fee = Amount::ZERO;
        let mut vsize = 0u64;
        for tx in [parent, child] {
            let r = by_wtxid(tx).ok_or_else(|| bad_answer(M, "a transaction has no result"))?;
            let tx_vsize = r.get("vsize").and_then(Value::as_u64).unwrap_or(0);
            // No transaction is larger than a block.
            if tx_vsize > MAX_BLOCK_VSIZE {
                return Err(bad_answer(M, format!("vsize {tx_vsize}")));
            }
            vsize += tx_vsize;
            fee = fee
                .checked_add(
                    r.get("fees")
                        .and_then(|f| f.get("base"))
                        .and_then(btc_to_sat)
                        .map(Amount::from_sat)
                        .unwrap_or(Amount::ZERO),
                )
                .ok_or_else(|| bad_answer(M, "fees"))?;
        }
        Ok(PackageAcceptance {
            parent: parent_txid,
            child: child_txid,
            fee,
            vsize,
        })
    }

    fn mine_blocks(&self, count: u32, payout: &Script) -> Result<Vec<BlockHash>, ChainError> {
        const M: &str = "generatetodescriptor";
        self.require_regtest()?;
        let v = self.call_chain(M, &[json!(count), json!(self.payout_descriptor(payout))])?;
        v.as_array()
            .ok_or_else(|| bad_answer(M, "not an array"))?
            .iter()
            .map(|h| parse_hash(h, M))
            .collect()
    }

    fn mine_block_with(
        &self,
        txs: &[Transaction],
        payout: &Script,
    ) -> Result<BlockHash, ChainError> {
        const M: &str = "generateblock";
        self.require_regtest()?;
        let weight: u64 = txs.iter().map(|t| t.weight().to_wu()).sum();
        if Weight::from_wu(weight) > Weight::from_wu(MAX_TEMPLATE_WEIGHT) {
            return Err(ChainError::BlockTemplate(format!(
                "transactions weigh {weight} WU, more than a block holds"
            )));
        }
        let raw: Vec<Value> = txs.iter().map(|t| json!(serialize_hex(t))).collect();
        match self.call(
            M,
            &[json!(self.payout_descriptor(payout)), Value::Array(raw)],
        ) {
            Ok(v) => parse_hash(field(&v, "hash", M)?, M),
            Err(CallError::Rpc(e)) if e.code == RPC_VERIFY_ERROR => {
                Err(ChainError::BlockRejected {
                    hash: BlockHash::all_zeros(),
                    reason: e.message,
                })
            }
            Err(CallError::Rpc(e)) if e.code == RPC_DESERIALIZATION_ERROR => {
                Err(ChainError::BlockTemplate(e.message))
            }
            Err(e) => Err(e.into_chain(M)),
        }
    }

    fn tx_status(&self, txid: &Txid) -> Result<TxStatus, ChainError> {
        const M: &str = "getrawtransaction";
        let v = match self.call(M, &[json!(txid.to_string()), json!(1)]) {
            Ok(v) => v,
            Err(CallError::Rpc(e)) if e.code == RPC_INVALID_ADDRESS_OR_KEY => {
                return Ok(TxStatus::Unknown)
            }
            Err(e) => return Err(e.into_chain(M)),
        };
        let confirmations = v.get("confirmations").and_then(Value::as_u64).unwrap_or(0);
        match v.get("blockhash") {
            Some(hash) if confirmations > 0 => {
                let block_hash: BlockHash = parse_hash(hash, M)?;
                let height = as_u32(
                    field(&self.header(&block_hash)?, "height", "getblockheader")?,
                    "getblockheader",
                )?;
                Ok(TxStatus::Confirmed {
                    height,
                    block_hash,
                    confirmations: u32::try_from(confirmations)
                        .map_err(|_| bad_answer(M, "confirmations"))?,
                })
            }
            _ => Ok(TxStatus::InMempool),
        }
    }

    fn get_utxo(&self, outpoint: &OutPoint) -> Result<Option<Coin>, ChainError> {
        Ok(self
            .txout(outpoint, false)?
            .and_then(|(txout, height, is_coinbase)| {
                height.map(|height| Coin {
                    txout,
                    height,
                    is_coinbase,
                })
            }))
    }

    fn block_at(&self, height: u32) -> Result<Option<Block>, ChainError> {
        let hash = match self.call("getblockhash", &[json!(height)]) {
            Ok(h) => h,
            Err(CallError::Rpc(e)) if e.code == RPC_INVALID_PARAMETER => return Ok(None),
            Err(e) => return Err(e.into_chain("getblockhash")),
        };
        let hex = self.call_chain("getblock", &[hash, json!(0)])?;
        let bytes = Vec::<u8>::from_hex(hex.as_str().unwrap_or_default())
            .map_err(|e| bad_answer("getblock", e))?;
        deserialize(&bytes)
            .map(Some)
            .map_err(|e| bad_answer("getblock", e))
    }

    fn estimate_fee_rate(&self, target_blocks: u16) -> Result<FeeRate, ChainError> {
        let est = self.call_chain("estimatesmartfee", &[json!(target_blocks.max(1))])?;
        let floor = {
            let info = self.call_chain("getmempoolinfo", &[])?;
            let min = info.get("mempoolminfee").and_then(btc_per_kvb_to_rate);
            let relay = info.get("minrelaytxfee").and_then(btc_per_kvb_to_rate);
            min.into_iter()
                .chain(relay)
                .max()
                .unwrap_or(FeeRate::from_sat_per_vb_u32(1))
        };
        // Without enough data (a fresh regtest node) Core gives no estimate: fall back to the
        // node's own minimum.
        Ok(est
            .get("feerate")
            .and_then(btc_per_kvb_to_rate)
            .map_or(floor, |r| r.max(floor)))
    }
}
