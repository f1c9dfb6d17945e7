//! Core's `rpc/rawtransaction.cpp` and the transaction-submitting methods of `rpc/mempool.cpp`:
//! `getrawtransaction`, `decoderawtransaction`, `sendrawtransaction`, `testmempoolaccept` and
//! `submitpackage`.

use std::collections::{HashMap, HashSet};

use bitcoin::consensus::deserialize;
use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, BlockHash, OutPoint, Transaction, Txid, Wtxid};
use serde_json::Value;

use super::blockchain::parse_verbosity;
use super::{chain_error, Ctx, Method};
use crate::error::RejectReason;
use crate::mempool::{Mempool, PackageMember};
use crate::rpc::codes::{
    RPC_DESERIALIZATION_ERROR, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER,
    RPC_TRANSACTION_ERROR, RPC_VERIFY_ALREADY_IN_UTXO_SET,
};
use crate::rpc::reject::{to_core, CoreReject, ALREADY_IN_UTXO_SET, TX_DECODE_FAILED};
use crate::rpc::server::encode::{tx_to_json, TxVerbosity};
use crate::rpc::server::json::{obj, Json, COIN};
use crate::rpc::server::jsonrpc::RpcError;
use crate::rpc::server::params::{is_hex, opt, parse_hash, req, type_error, Args, Ty};
use crate::Chain;

pub(super) static METHODS: &[Method] = &[
    Method {
        name: "getrawtransaction",
        category: "rawtransactions",
        params: &[
            req("txid", Ty::Hex),
            opt("verbosity|verbose", Ty::Any),
            opt("blockhash", Ty::Hex),
        ],
        description: "Return the raw transaction data (chaind indexes every transaction, like -txindex=1).\nIf verbosity is 0, returns the serialized transaction as hex; 1, a JSON object; 2, with fee and prevouts.",
        handler: getrawtransaction,
    },
    Method {
        name: "decoderawtransaction",
        category: "rawtransactions",
        params: &[req("hexstring", Ty::Hex), opt("iswitness", Ty::Bool)],
        description: "Return a JSON object representing the serialized, hex-encoded transaction.",
        handler: decoderawtransaction,
    },
    Method {
        name: "sendrawtransaction",
        category: "rawtransactions",
        params: &[
            req("hexstring", Ty::Hex),
            opt("maxfeerate", Ty::Amount),
            opt("maxburnamount", Ty::Amount),
        ],
        description: "Submit a raw transaction (serialized, hex-encoded) to the local mempool.",
        handler: sendrawtransaction,
    },
    Method {
        name: "testmempoolaccept",
        category: "rawtransactions",
        params: &[req("rawtxs", Ty::Arr), opt("maxfeerate", Ty::Amount)],
        description: "Returns result of mempool acceptance tests indicating if raw transaction(s) (serialized, hex-encoded) would be accepted by mempool.",
        handler: testmempoolaccept,
    },
    Method {
        name: "submitpackage",
        category: "rawtransactions",
        params: &[
            req("package", Ty::Arr),
            opt("maxfeerate", Ty::Amount),
            opt("maxburnamount", Ty::Amount),
        ],
        description: "Submit a package of raw transactions (serialized, hex-encoded) to the local mempool.\nchaind's mempool takes a single transaction, or one parent and one child.",
        handler: submitpackage,
    },
];

/// Core's default `maxfeerate`: 0.10 BTC/kvB, in sat/kvB.
const DEFAULT_MAX_FEE_RATE: i64 = COIN / 10;
/// Most transactions in a package.
const MAX_PACKAGE_COUNT: usize = 25;
/// Heaviest package.
const MAX_PACKAGE_WEIGHT: u64 = 404_000;

/// Core's `DecodeHexTx`.
pub(super) fn decode_hex_tx(hex: &str) -> Option<Transaction> {
    if !is_hex(hex) {
        return None;
    }
    let bytes: Vec<u8> = bitcoin::hex::FromHex::from_hex(hex).ok()?;
    deserialize(&bytes).ok()
}

/// Core's `ParseFeeRate` of `maxfeerate`, in sat/kvB.
fn parse_fee_rate(args: &Args, i: usize) -> Result<i64, RpcError> {
    let rate = args.amount(i)?.unwrap_or(DEFAULT_MAX_FEE_RATE);
    if rate >= COIN {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            "Fee rates larger than or equal to 1BTC/kvB are not accepted",
        ));
    }
    Ok(rate)
}

/// `CFeeRate::GetFee`: the fee at `rate` sat/kvB for `vsize`, rounded up.
fn fee_at(rate: i64, vsize: u64) -> i64 {
    ((i128::from(rate) * i128::from(vsize) + 999) / 1000) as i64
}

/// `CFeeRate(fee, vsize).GetFeePerK()`: rounded down.
fn rate_of(fee: Amount, vsize: u64) -> i64 {
    (i128::from(fee.to_sat()) * 1000 / i128::from(vsize.max(1))) as i64
}

/// Whether an output burns coins (`IsUnspendable() || !HasValidOps()`).
fn burns(script: &bitcoin::Script) -> bool {
    let bytes = script.as_bytes();
    if bytes.first() == Some(&0x6a) || bytes.len() > 10_000 {
        return true;
    }
    let mut pc = 0;
    while pc < bytes.len() {
        match crate::rpc::server::encode::get_op(bytes, &mut pc) {
            Some((op, data)) if op <= 0xb9 && data.len() <= 520 => {}
            _ => return true,
        }
    }
    false
}

fn check_burn(tx: &Transaction, max_burn: i64) -> Result<(), RpcError> {
    if tx
        .output
        .iter()
        .any(|o| burns(&o.script_pubkey) && o.value.to_sat() as i64 > max_burn)
    {
        return Err(RpcError::new(
            RPC_TRANSACTION_ERROR,
            "Unspendable output exceeds maximum configured by user (maxburnamount)",
        ));
    }
    Ok(())
}

/// The error `sendrawtransaction` answers for a rejection.
pub(super) fn reject_error(reason: &RejectReason) -> RpcError {
    let core = to_core(reason);
    RpcError::new(core.code, core.message())
}

/// A rejection as `testmempoolaccept` and `submitpackage` report it: a confirmed transaction
/// is "txn-already-known" while one of its outputs is unspent, and has missing inputs after.
fn judged(reason: &RejectReason, tx: &Transaction, ctx: &Ctx) -> CoreReject {
    if let RejectReason::AlreadyConfirmed(txid) = reason {
        let unspent = ctx.chain.with_mempool(|_, index| {
            (0..tx.output.len() as u32).any(|v| index.coin(&OutPoint::new(*txid, v)).is_some())
        });
        return if unspent {
            CoreReject {
                code: RPC_VERIFY_ALREADY_IN_UTXO_SET,
                reason: "txn-already-known".into(),
                debug: String::new(),
            }
        } else {
            to_core(&RejectReason::MissingInput {
                input: 0,
                outpoint: tx
                    .input
                    .first()
                    .map(|i| i.previous_output)
                    .unwrap_or_default(),
            })
        };
    }
    to_core(reason)
}

fn getrawtransaction(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let txid = Txid::from_byte_array(parse_hash(
        args.get(0).unwrap_or(&Value::Null),
        "parameter 1",
    )?);
    let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
    if txid.to_byte_array() == genesis.header.merkle_root.to_byte_array() {
        return Err(RpcError::new(
            RPC_INVALID_ADDRESS_OR_KEY,
            "The genesis block coinbase is not considered an ordinary transaction and cannot be retrieved",
        ));
    }
    let verbosity = parse_verbosity(args.get(1), 0, true)?;
    let found = match args.get(2) {
        Some(v) => {
            let hash = BlockHash::from_byte_array(parse_hash(v, "parameter 3")?);
            let height = ctx.chain.block_height(&hash).ok_or_else(|| {
                RpcError::new(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found")
            })?;
            let block = ctx.block(height)?;
            let tx = block
                .txdata
                .iter()
                .find(|t| t.compute_txid() == txid)
                .cloned()
                .ok_or_else(|| {
                    RpcError::new(
                        RPC_INVALID_ADDRESS_OR_KEY,
                        "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
                    )
                })?;
            super::FoundTx {
                tx,
                block: Some((height, block)),
            }
        }
        None => ctx.find_transaction(&txid)?.ok_or_else(|| {
            RpcError::new(
                RPC_INVALID_ADDRESS_OR_KEY,
                "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
            )
        })?,
    };
    if verbosity <= 0 {
        return Ok(serialize_hex(&found.tx).into());
    }
    let mut result = Json::object();
    if args.get(2).is_some() {
        result.push("in_active_chain", true);
    }
    let prevouts = match (&found.block, verbosity >= 2) {
        (Some((height, block)), true) => {
            let mut cache = HashMap::new();
            cache.insert(*height, block.clone());
            ctx.prevouts(&found.tx, &mut cache)?
        }
        _ => None,
    };
    let body = tx_to_json(
        &found.tx,
        prevouts.as_deref(),
        TxVerbosity::DetailsAndPrevout,
        true,
    );
    if let (Json::Obj(r), Json::Obj(b)) = (&mut result, body) {
        r.extend(b);
    }
    if let Some((height, block)) = &found.block {
        let tip = ctx.chain.tip().map_err(chain_error)?;
        result.push("blockhash", block.block_hash().to_string());
        result.push("confirmations", tip.height - height + 1);
        result.push("time", block.header.time);
        result.push("blocktime", block.header.time);
    }
    Ok(result)
}

fn decoderawtransaction(_: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let tx = decode_hex_tx(args.req_str(0)?)
        .ok_or_else(|| RpcError::new(RPC_DESERIALIZATION_ERROR, "TX decode failed"))?;
    Ok(tx_to_json(&tx, None, TxVerbosity::Details, false))
}

/// Fee and virtual size `tx` would enter the mempool with, judged on a copy of it.
fn judge_alone(ctx: &Ctx, tx: &Transaction) -> Result<(Amount, u64), RejectReason> {
    ctx.chain.with_mempool_copy(|pool, index| {
        let txid = pool.accept(tx, index)?;
        Ok(entry_fee_vsize(pool, &txid))
    })
}

fn entry_fee_vsize(pool: &Mempool, txid: &Txid) -> (Amount, u64) {
    pool.get(txid)
        .map_or((Amount::ZERO, 0), |e| (e.fee, e.vsize))
}

fn sendrawtransaction(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let max_burn = args.amount(2)?.unwrap_or(0);
    let tx = decode_hex_tx(args.req_str(0)?)
        .ok_or_else(|| RpcError::new(RPC_DESERIALIZATION_ERROR, TX_DECODE_FAILED))?;
    check_burn(&tx, max_burn)?;
    let max_rate = parse_fee_rate(args, 1)?;
    let txid = tx.compute_txid();
    let (in_utxo_set, in_mempool) = ctx.chain.with_mempool(|pool, index| {
        let in_utxo =
            (0..tx.output.len() as u32).any(|v| index.coin(&OutPoint::new(txid, v)).is_some());
        (in_utxo, pool.get(&txid).is_some())
    });
    if in_utxo_set {
        return Err(RpcError::new(
            RPC_VERIFY_ALREADY_IN_UTXO_SET,
            ALREADY_IN_UTXO_SET,
        ));
    }
    if in_mempool {
        return Ok(txid.to_string().into());
    }
    let error = |r: &RejectReason| match r {
        // Confirmed, every output spent: Core finds its inputs missing.
        RejectReason::AlreadyConfirmed(_) => reject_error(&RejectReason::MissingInput {
            input: 0,
            outpoint: tx
                .input
                .first()
                .map(|i| i.previous_output)
                .unwrap_or_default(),
        }),
        other => reject_error(other),
    };
    if max_rate > 0 {
        let (fee, vsize) = judge_alone(ctx, &tx).map_err(|r| error(&r))?;
        if fee.to_sat() as i64 > fee_at(max_rate, vsize) {
            return Err(RpcError::new(
                RPC_TRANSACTION_ERROR,
                "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)",
            ));
        }
    }
    match ctx.chain.submit_transaction(&tx) {
        Ok(txid) => {
            ctx.note_entered([txid]);
            Ok(txid.to_string().into())
        }
        Err(e) => match e.reject_reason() {
            Some(r) => Err(error(r)),
            None => Err(chain_error(e)),
        },
    }
}

/// Decode the raw transactions of `testmempoolaccept` and `submitpackage`.
fn decode_all(raw: &[Value]) -> Result<Vec<Transaction>, RpcError> {
    raw.iter()
        .map(|v| {
            let Value::String(hex) = v else {
                return Err(type_error(v, "string"));
            };
            decode_hex_tx(hex).ok_or_else(|| {
                RpcError::new(
                    RPC_DESERIALIZATION_ERROR,
                    format!("TX decode failed: {hex} Make sure the tx has at least one input."),
                )
            })
        })
        .collect()
}

/// Core's `IsWellFormedPackage`: the package-wide error, if any.
fn package_policy_error(txs: &[Transaction]) -> Option<&'static str> {
    if txs.len() > MAX_PACKAGE_COUNT {
        return Some("package-too-many-transactions");
    }
    let weight: u64 = txs.iter().map(|t| t.weight().to_wu()).sum();
    if txs.len() > 1 && weight > MAX_PACKAGE_WEIGHT {
        return Some("package-too-large");
    }
    let txids: Vec<Txid> = txs.iter().map(Transaction::compute_txid).collect();
    let mut later: HashSet<Txid> = txids.iter().copied().collect();
    if later.len() != txs.len() {
        return Some("package-contains-duplicates");
    }
    for (tx, txid) in txs.iter().zip(&txids) {
        later.remove(txid);
        if tx
            .input
            .iter()
            .any(|i| later.contains(&i.previous_output.txid))
        {
            return Some("package-not-sorted");
        }
    }
    let mut seen: HashSet<OutPoint> = HashSet::new();
    for tx in txs {
        if tx.input.is_empty() || tx.input.iter().any(|i| seen.contains(&i.previous_output)) {
            return Some("conflict-in-package");
        }
        seen.extend(tx.input.iter().map(|i| i.previous_output));
    }
    None
}

/// Core's `IsChildWithParentsTree`.
fn is_child_with_parents_tree(txs: &[Transaction]) -> bool {
    let Some((child, parents)) = txs.split_last() else {
        return false;
    };
    let spent: HashSet<Txid> = child.input.iter().map(|i| i.previous_output.txid).collect();
    let parent_ids: HashSet<Txid> = parents.iter().map(Transaction::compute_txid).collect();
    parent_ids.iter().all(|p| spent.contains(p))
        && parents.iter().all(|p| {
            p.input
                .iter()
                .all(|i| !parent_ids.contains(&i.previous_output.txid))
        })
}

/// A transaction's outcome in `testmempoolaccept` and `submitpackage`.
#[derive(Debug, Clone)]
enum TxResult {
    /// Accepted (or would be).
    Valid {
        vsize: u64,
        fee: Amount,
        /// Effective fee rate in sat/kvB.
        rate: i64,
        includes: Vec<Wtxid>,
    },
    /// Already in the mempool.
    InMempool { vsize: u64, fee: Amount },
    /// The mempool has the same txid with another witness.
    DifferentWitness(Wtxid),
    /// Refused.
    Invalid(CoreReject),
}

fn fees_json(fee: Amount, rate: i64, includes: &[Wtxid]) -> Json {
    obj! {
        "base" => Json::Amount(fee.to_sat() as i64),
        "effective-feerate" => Json::Amount(rate),
        "effective-includes" => includes.iter().map(|w| Json::from(w.to_string())).collect::<Vec<_>>(),
    }
}

fn testmempoolaccept(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let raw = args.array(0)?;
    if raw.is_empty() || raw.len() > MAX_PACKAGE_COUNT {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            format!("Array must contain between 1 and {MAX_PACKAGE_COUNT} transactions."),
        ));
    }
    let max_rate = parse_fee_rate(args, 1)?;
    let txs = decode_all(raw)?;
    let package_error = (txs.len() > 1)
        .then(|| package_policy_error(&txs))
        .flatten();
    // Judge in order on a copy of the mempool; the first failure ends validation (Core leaves
    // the rest without an "allowed" key).
    let results: Vec<Option<TxResult>> = if package_error.is_some() {
        vec![None; txs.len()]
    } else {
        ctx.chain.with_mempool_copy(|pool, index| {
            let mut out = Vec::with_capacity(txs.len());
            let mut failed = false;
            for tx in &txs {
                if failed {
                    out.push(None);
                    continue;
                }
                match pool.accept(tx, index) {
                    Ok(txid) => {
                        let (fee, vsize) = entry_fee_vsize(pool, &txid);
                        out.push(Some(TxResult::Valid {
                            vsize,
                            fee,
                            rate: rate_of(fee, vsize),
                            includes: vec![tx.compute_wtxid()],
                        }));
                    }
                    Err(r) => {
                        failed = true;
                        out.push(Some(TxResult::Invalid(to_core(&r))));
                    }
                }
            }
            out
        })
    };
    let mut rpc_result = Vec::with_capacity(txs.len());
    let mut exit_early = false;
    for (tx, result) in txs.iter().zip(results) {
        let mut o = obj! {
            "txid" => tx.compute_txid().to_string(),
            "wtxid" => tx.compute_wtxid().to_string(),
        };
        if let Some(e) = package_error {
            o.push("package-error", e);
        }
        match (exit_early, result) {
            (true, _) | (_, None) => {}
            (
                false,
                Some(TxResult::Valid {
                    vsize,
                    fee,
                    rate,
                    includes,
                }),
            ) => {
                let max_fee = fee_at(max_rate, vsize);
                if max_fee != 0 && fee.to_sat() as i64 > max_fee {
                    o.push("allowed", false);
                    o.push("reject-reason", "max-fee-exceeded");
                    exit_early = true;
                } else {
                    o.push("allowed", true);
                    o.push("vsize", vsize);
                    o.push("fees", fees_json(fee, rate, &includes));
                }
            }
            (false, Some(TxResult::Invalid(core))) => {
                let core = match core.reason.as_str() {
                    ALREADY_IN_UTXO_SET => {
                        judged(&RejectReason::AlreadyConfirmed(tx.compute_txid()), tx, ctx)
                    }
                    _ => core,
                };
                o.push("allowed", false);
                if core.test_accept_reason() == "missing-inputs" {
                    o.push("reject-reason", "missing-inputs");
                } else {
                    o.push("reject-reason", core.reason.as_str());
                    o.push("reject-details", core.message());
                }
            }
            (false, Some(_)) => {}
        }
        rpc_result.push(o);
    }
    Ok(Json::Arr(rpc_result))
}

/// Whether a failure may succeed in a package (Core's `TX_RECONSIDERABLE` and
/// `TX_MISSING_INPUTS`).
fn reconsiderable(r: &RejectReason) -> bool {
    matches!(
        r,
        RejectReason::FeeTooLow { .. } | RejectReason::MissingInput { .. }
    )
}

fn submitpackage(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let raw = args.array(0)?;
    if raw.is_empty() || raw.len() > MAX_PACKAGE_COUNT {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            format!("Array must contain between 1 and {MAX_PACKAGE_COUNT} transactions."),
        ));
    }
    let max_rate = parse_fee_rate(args, 1)?;
    let max_burn = args.amount(2)?.unwrap_or(0);
    let txs = decode_all(raw)?;
    for tx in &txs {
        check_burn(tx, max_burn)?;
    }
    if txs.len() > 1 && !is_child_with_parents_tree(&txs) {
        return Err(RpcError::new(
            RPC_TRANSACTION_ERROR,
            "package topology disallowed. not child-with-parents or parents depend on each other.",
        ));
    }
    if txs.len() > 2 {
        return Err(RpcError::new(
            RPC_TRANSACTION_ERROR,
            "package topology disallowed. chaind's mempool takes a single transaction or one parent and one child.",
        ));
    }
    let max_rate = (max_rate > 0).then_some(max_rate);
    let (package_msg, results) = match package_policy_error(&txs) {
        Some(e) => (e.to_string(), vec![None; txs.len()]),
        None => {
            let (msg, r) = accept_package(ctx, &txs, max_rate);
            (msg, r.into_iter().map(Some).collect())
        }
    };
    let mut map = Json::object();
    for (tx, result) in txs.iter().zip(results) {
        let mut o = obj! { "txid" => tx.compute_txid().to_string() };
        match result {
            None => o.push("error", "package-not-validated"),
            Some(TxResult::DifferentWitness(w)) => o.push("other-wtxid", w.to_string()),
            Some(TxResult::Invalid(core)) => o.push("error", core.message()),
            Some(TxResult::Valid {
                vsize,
                fee,
                rate,
                includes,
            }) => {
                o.push("vsize", vsize);
                o.push("fees", fees_json(fee, rate, &includes));
            }
            Some(TxResult::InMempool { vsize, fee }) => {
                o.push("vsize", vsize);
                o.push("fees", obj! { "base" => Json::Amount(fee.to_sat() as i64) });
            }
        }
        map.push(&tx.compute_wtxid().to_string(), o);
    }
    Ok(obj! {
        "package_msg" => package_msg,
        "tx-results" => map,
        "replaced-transactions" => Json::Arr(vec![]),
    })
}

/// Core's `AcceptPackage` on our mempool: each transaction alone first, then (for a parent that
/// failed on its fee, with its child) the two as a package.
fn accept_package(
    ctx: &Ctx,
    txs: &[Transaction],
    max_rate: Option<i64>,
) -> (String, Vec<TxResult>) {
    let mut results: Vec<Option<TxResult>> = vec![None; txs.len()];
    let mut nonfinal: Vec<Option<TxResult>> = vec![None; txs.len()];
    let mut quit_early = false;
    let mut eval: Vec<usize> = Vec::new();
    let too_rich = |fee: Amount, vsize: u64| max_rate.is_some_and(|m| rate_of(fee, vsize) > m);
    let max_feerate_exceeded = || {
        TxResult::Invalid(CoreReject {
            code: RPC_TRANSACTION_ERROR,
            reason: "max feerate exceeded".into(),
            debug: String::new(),
        })
    };
    for (i, tx) in txs.iter().enumerate() {
        let txid = tx.compute_txid();
        let in_pool = ctx.chain.with_mempool(|pool, _| {
            pool.get(&txid)
                .map(|e| (e.tx.compute_wtxid(), e.vsize, e.fee))
        });
        if let Some((wtxid, vsize, fee)) = in_pool {
            results[i] = Some(if wtxid == tx.compute_wtxid() {
                TxResult::InMempool { vsize, fee }
            } else {
                TxResult::DifferentWitness(wtxid)
            });
            continue;
        }
        match judge_alone(ctx, tx) {
            Ok((fee, vsize)) if too_rich(fee, vsize) => {
                quit_early = true;
                nonfinal[i] = Some(max_feerate_exceeded());
            }
            Ok(_) => match ctx.chain.submit_transaction(tx) {
                Ok(_) => {
                    ctx.note_entered([txid]);
                    let (fee, vsize) = ctx
                        .chain
                        .with_mempool(|pool, _| entry_fee_vsize(pool, &txid));
                    results[i] = Some(TxResult::Valid {
                        vsize,
                        fee,
                        rate: rate_of(fee, vsize),
                        includes: vec![tx.compute_wtxid()],
                    });
                }
                Err(e) => {
                    quit_early = true;
                    nonfinal[i] = Some(TxResult::Invalid(match e.reject_reason() {
                        Some(r) => judged(r, tx, ctx),
                        None => CoreReject {
                            code: RPC_TRANSACTION_ERROR,
                            reason: e.to_string(),
                            debug: String::new(),
                        },
                    }));
                }
            },
            Err(r) => {
                nonfinal[i] = Some(TxResult::Invalid(judged(&r, tx, ctx)));
                if txs.len() == 1 || !reconsiderable(&r) {
                    quit_early = true;
                } else {
                    eval.push(i);
                }
            }
        }
    }
    let mut failed = quit_early;
    if !quit_early && !eval.is_empty() {
        match eval[..] {
            [p, c] => {
                let (parent, child) = (&txs[p], &txs[c]);
                // Judge on a copy first, for the client's fee rate limit.
                let trial = ctx.chain.with_mempool_copy(|pool, index| {
                    pool.accept_package_attributed(parent, child, index)
                        .map(|_| {
                            (
                                entry_fee_vsize(pool, &parent.compute_txid()),
                                entry_fee_vsize(pool, &child.compute_txid()),
                            )
                        })
                });
                let outcome = match trial {
                    Ok(((pf, pv), (cf, cv))) => {
                        if too_rich(pf, pv) {
                            Err((PackageMember::Parent, None))
                        } else if too_rich(cf, cv) {
                            Err((PackageMember::Child, None))
                        } else {
                            ctx.chain
                                .submit_package_attributed(parent, child)
                                .map(|_| ((pf, pv), (cf, cv)))
                                .map_err(|(m, r)| (m, Some(r)))
                        }
                    }
                    Err((m, r)) => Err((m, Some(r))),
                };
                match outcome {
                    Ok(((pf, pv), (cf, cv))) => {
                        ctx.note_entered([parent.compute_txid(), child.compute_txid()]);
                        let rate = rate_of(pf + cf, pv + cv);
                        let includes = vec![parent.compute_wtxid(), child.compute_wtxid()];
                        results[p] = Some(TxResult::Valid {
                            vsize: pv,
                            fee: pf,
                            rate,
                            includes: includes.clone(),
                        });
                        results[c] = Some(TxResult::Valid {
                            vsize: cv,
                            fee: cf,
                            rate,
                            includes,
                        });
                    }
                    Err((member, reason)) => {
                        failed = true;
                        let (index, tx) = match member {
                            PackageMember::Parent => (p, parent),
                            // Core reports a package fee rate failure on the child.
                            PackageMember::Child | PackageMember::Package => (c, child),
                        };
                        results[index] = Some(match reason {
                            Some(r) => TxResult::Invalid(judged(&r, tx, ctx)),
                            None => max_feerate_exceeded(),
                        });
                    }
                }
            }
            _ => {
                // One transaction left (a child whose parent entered alone): it fails again.
                failed = true;
            }
        }
    }
    let final_results = results
        .into_iter()
        .zip(nonfinal)
        .map(|(r, n)| {
            r.or(n).unwrap_or_else(|| {
                TxResult::Invalid(CoreReject {
                    code: RPC_TRANSACTION_ERROR,
                    reason: "package-not-validated".into(),
                    debug: String::new(),
                })
            })
        })
        .collect();
    let msg = if failed {
        "transaction failed"
    } else {
        "success"
    };
    (msg.to_string(), final_results)
}
