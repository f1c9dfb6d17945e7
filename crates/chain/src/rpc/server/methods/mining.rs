//! Core's `rpc/mining.cpp` (regtest generation): `generatetoaddress`, `generatetodescriptor`
//! and `generateblock`.

use std::collections::HashSet;
use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::{Address, Network, ScriptBuf, Transaction, Txid};
use serde_json::Value;

use super::rawtransaction::decode_hex_tx;
use super::{chain_error, Ctx, Method};
use crate::error::RejectReason;
use crate::rpc::codes::{
    RPC_DESERIALIZATION_ERROR, RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, RPC_VERIFY_ERROR,
};
use crate::rpc::reject::to_core;
use crate::rpc::server::descriptor::parse_descriptor;
use crate::rpc::server::json::{obj, Json};
use crate::rpc::server::jsonrpc::RpcError;
use crate::rpc::server::params::{opt, req, type_error, Args, Ty};
use crate::{Chain, ChainError};

/// Most blocks one `generatetoaddress` or `generatetodescriptor` call mines. Blocks are mined
/// one at a time, so other requests are served in between; call again for more.
pub const MAX_GENERATE_BLOCKS: i64 = 10_000;

pub(super) static METHODS: &[Method] = &[
    Method {
        name: "generatetoaddress",
        category: "generating",
        params: &[
            req("nblocks", Ty::Num),
            req("address", Ty::Str),
            opt("maxtries", Ty::Num),
        ],
        description: "Mine to a specified address and return the block hashes (at most 10000 blocks per call).",
        handler: generatetoaddress,
    },
    Method {
        name: "generatetodescriptor",
        category: "generating",
        params: &[
            req("num_blocks", Ty::Num),
            req("descriptor", Ty::Str),
            opt("maxtries", Ty::Num),
        ],
        description: "Mine to a specified descriptor and return the block hashes (at most 10000 blocks per call; addr, raw, rawtr, pk, pkh, wpkh, sh(wpkh) and single-key tr descriptors).",
        handler: generatetodescriptor,
    },
    Method {
        name: "generateblock",
        category: "generating",
        params: &[
            req("output", Ty::Str),
            req("transactions", Ty::Arr),
            opt("submit", Ty::Bool),
        ],
        description: "Mine a set of ordered transactions to a specified address or descriptor and return the block hash.",
        handler: generateblock,
    },
];

/// A regtest address's output script.
fn decode_address(s: &str) -> Option<ScriptBuf> {
    Address::from_str(s)
        .ok()?
        .require_network(Network::Regtest)
        .ok()
        .map(|a| a.script_pubkey())
}

/// Mine `n` blocks to `script`, one at a time (each takes the chain's lock alone).
fn generate(ctx: &Ctx, n: i64, script: &ScriptBuf) -> Result<Json, RpcError> {
    if n > MAX_GENERATE_BLOCKS {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            format!(
                "chaind mines at most {MAX_GENERATE_BLOCKS} blocks per call (asked for {n}); call again for more"
            ),
        ));
    }
    let mut hashes = Vec::new();
    for _ in 0..n.max(0) {
        if ctx.stopping() {
            break;
        }
        let hash = ctx.chain.mine_blocks(1, script).map_err(chain_error)?;
        hashes.extend(hash.into_iter().map(|h| Json::from(h.to_string())));
    }
    Ok(Json::Arr(hashes))
}

fn generatetoaddress(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let n: i32 = args.req_int(0)?;
    let _max_tries: Option<i32> = args.int(2)?;
    let script = decode_address(args.req_str(1)?)
        .ok_or_else(|| RpcError::new(RPC_INVALID_ADDRESS_OR_KEY, "Error: Invalid address"))?;
    generate(ctx, n.into(), &script)
}

fn generatetodescriptor(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let n: i32 = args.req_int(0)?;
    let _max_tries: Option<u64> = args.int(2)?;
    let script = parse_descriptor(args.req_str(1)?)
        .map_err(|e| RpcError::new(RPC_INVALID_ADDRESS_OR_KEY, e))?;
    generate(ctx, n.into(), &script)
}

/// Core's `TestBlockValidity` message for a transaction our checks refuse in a block.
fn block_invalid(txid: Txid, reason: &RejectReason) -> RpcError {
    let token = match reason {
        RejectReason::MissingInput { .. } => return missing_or_spent(txid),
        RejectReason::NonFinal { .. } | RejectReason::SequenceLocked { .. } => {
            "bad-txns-nonfinal".to_string()
        }
        RejectReason::ScriptInvalid { message, .. } => {
            format!("block-script-verify-flag-failed ({message})")
        }
        other => to_core(other).reason,
    };
    RpcError::new(
        RPC_VERIFY_ERROR,
        format!("TestBlockValidity failed: {token}, tx {txid}: {reason}"),
    )
}

/// Core's `ConnectBlock` message for a transaction whose input is missing or already spent.
fn missing_or_spent(txid: Txid) -> RpcError {
    RpcError::new(
        RPC_VERIFY_ERROR,
        format!(
            "TestBlockValidity failed: bad-txns-inputs-missingorspent, CheckTxInputs: inputs missing/spent in transaction {txid}"
        ),
    )
}

/// What our per-transaction checks cannot see, in Core's order: a second coinbase and each
/// transaction alone (`CheckBlock`), then (as `ConnectBlock` meets them) the first transaction
/// spending an output an earlier transaction of the block already spent (a duplicate or a
/// conflict), with the transactions before it checked first.
fn check_block(ctx: &Ctx, txs: &[Transaction]) -> Result<(), RpcError> {
    if txs.iter().any(Transaction::is_coinbase) {
        return Err(RpcError::new(
            RPC_VERIFY_ERROR,
            "TestBlockValidity failed: bad-cb-multiple, more than one coinbase",
        ));
    }
    // `CheckBlock` checks every transaction alone (duplicate inputs within one, say) before
    // `ConnectBlock` spends any.
    for tx in txs {
        crate::consensus::check_transaction(tx)
            .map_err(|r| block_invalid(tx.compute_txid(), &r))?;
    }
    let mut spent = HashSet::new();
    let double = txs.iter().position(|tx| {
        let again = tx.input.iter().any(|i| spent.contains(&i.previous_output));
        spent.extend(tx.input.iter().map(|i| i.previous_output));
        again
    });
    let checked = double.map_or(txs, |k| &txs[..k]);
    ctx.chain
        .check_block_transactions(checked)
        .map_err(|(txid, r)| block_invalid(txid, &r))?;
    match double {
        Some(k) => Err(missing_or_spent(txs[k].compute_txid())),
        None => Ok(()),
    }
}

fn generateblock(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let output = args.req_str(0)?;
    let script = match parse_descriptor(output) {
        Ok(s) => s,
        Err(_) => decode_address(output).ok_or_else(|| {
            RpcError::new(
                RPC_INVALID_ADDRESS_OR_KEY,
                "Error: Invalid address or descriptor",
            )
        })?,
    };
    let mut txs: Vec<Transaction> = Vec::new();
    for v in args.array(1)? {
        let Value::String(s) = v else {
            return Err(type_error(v, "string"));
        };
        if let Some(txid) = crate::rpc::server::encode::parse_hash_hex(s).map(Txid::from_byte_array)
        {
            let tx = ctx
                .chain
                .with_mempool(|pool, _| pool.get(&txid).map(|e| e.tx.clone()))
                .ok_or_else(|| {
                    RpcError::new(
                        RPC_INVALID_ADDRESS_OR_KEY,
                        format!("Transaction {s} not in mempool."),
                    )
                })?;
            txs.push(tx);
        } else if let Some(tx) = decode_hex_tx(s) {
            txs.push(tx);
        } else {
            return Err(RpcError::new(
                RPC_DESERIALIZATION_ERROR,
                format!(
                    "Transaction decode failed for {s}. Make sure the tx has at least one input."
                ),
            ));
        }
    }
    let submit = args.bool(2)?.unwrap_or(true);
    check_block(ctx, &txs)?;
    if !submit {
        let block = ctx.chain.assemble_block(&txs, &script);
        return Ok(obj! {
            "hash" => block.block_hash().to_string(),
            "hex" => bitcoin::consensus::encode::serialize_hex(&block),
        });
    }
    match ctx.chain.mine_block_with(&txs, &script) {
        Ok(hash) => Ok(obj! { "hash" => hash.to_string() }),
        Err(ChainError::BlockRejected { reason, .. }) => Err(RpcError::new(
            RPC_VERIFY_ERROR,
            format!("TestBlockValidity failed: {reason}"),
        )),
        Err(ChainError::BlockTemplate(m)) => Err(RpcError::new(
            RPC_VERIFY_ERROR,
            format!("TestBlockValidity failed: bad-blk-weight, {m}"),
        )),
        Err(e) => Err(chain_error(e)),
    }
}
