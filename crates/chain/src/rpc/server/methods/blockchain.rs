//! Core's `rpc/blockchain.cpp` (and `getindexinfo` of `rpc/node.cpp`).

use std::collections::HashMap;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, OutPoint};

use super::{chain_error, now, Ctx, Method};
use crate::rpc::codes::{RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, RPC_TYPE_ERROR};
use crate::rpc::server::encode::{
    block_to_json, chainwork_hex, difficulty, header_to_json, script_pubkey_json, target_hex,
    BlockPlace, BlockVerbosity,
};
use crate::rpc::server::json::{obj, Json};
use crate::rpc::server::jsonrpc::RpcError;
use crate::rpc::server::params::{get_int, opt, parse_hash, req, Args, Ty};
use crate::Chain;

pub(super) static METHODS: &[Method] = &[
    Method {
        name: "getblockchaininfo",
        category: "blockchain",
        params: &[],
        description: "Returns an object containing various state info regarding blockchain processing.",
        handler: getblockchaininfo,
    },
    Method {
        name: "getblockcount",
        category: "blockchain",
        params: &[],
        description: "Returns the height of the most-work fully-validated chain.",
        handler: getblockcount,
    },
    Method {
        name: "getbestblockhash",
        category: "blockchain",
        params: &[],
        description: "Returns the hash of the best (tip) block in the most-work fully-validated chain.",
        handler: getbestblockhash,
    },
    Method {
        name: "getblockhash",
        category: "blockchain",
        params: &[req("height", Ty::Num)],
        description: "Returns hash of block in best-block-chain at height provided.",
        handler: getblockhash,
    },
    Method {
        name: "getblockheader",
        category: "blockchain",
        params: &[req("blockhash", Ty::Hex), opt("verbose", Ty::Bool)],
        description: "If verbose is false, returns a string that is serialized, hex-encoded data for blockheader 'hash'.\nIf verbose is true, returns an Object with information about blockheader <hash>.",
        handler: getblockheader,
    },
    Method {
        name: "getblock",
        category: "blockchain",
        params: &[req("blockhash", Ty::Hex), opt("verbosity|verbose", Ty::Any)],
        description: "If verbosity is 0, returns a string that is serialized, hex-encoded data for block 'hash'.\nIf verbosity is 1, returns an Object with information about block <hash>.\nIf verbosity is 2, returns an Object with information about block <hash> and information about each transaction.\nIf verbosity is 3, also includes prevout information for inputs.",
        handler: getblock,
    },
    Method {
        name: "gettxout",
        category: "blockchain",
        params: &[
            req("txid", Ty::Str),
            req("n", Ty::Num),
            opt("include_mempool", Ty::Bool),
        ],
        description: "Returns details about an unspent transaction output.",
        handler: gettxout,
    },
    Method {
        name: "getdifficulty",
        category: "blockchain",
        params: &[],
        description: "Returns the proof-of-work difficulty as a multiple of the minimum difficulty.",
        handler: getdifficulty,
    },
    Method {
        name: "getchaintips",
        category: "blockchain",
        params: &[],
        description: "Return information about all known tips in the block tree.",
        handler: getchaintips,
    },
    Method {
        name: "getindexinfo",
        category: "util",
        params: &[opt("index_name", Ty::Str)],
        description: "Returns the status of one or all available indices currently running in the node (chaind indexes every transaction: txindex).",
        handler: getindexinfo,
    },
];

/// Regtest's compact target: every block carries it.
const REGTEST_BITS: u32 = 0x207f_ffff;

/// Where the active-chain block at `height` sits.
pub(super) fn place(ctx: &Ctx, height: u32, tip_height: u32) -> BlockPlace {
    BlockPlace {
        height,
        tip_height,
        median_time: ctx.chain.median_time_past_at(height).unwrap_or(0),
        next: if height < tip_height {
            ctx.chain.block_hash_at(height + 1)
        } else {
            None
        },
    }
}

/// The height of the block `hash`, or Core's "Block not found".
pub(super) fn height_of(ctx: &Ctx, hash: &[u8; 32]) -> Result<u32, RpcError> {
    ctx.chain
        .block_height(&BlockHash::from_byte_array(*hash))
        .ok_or_else(|| RpcError::new(RPC_INVALID_ADDRESS_OR_KEY, "Block not found"))
}

fn blocks_size_on_disk(ctx: &Ctx) -> u64 {
    let Some(dir) = ctx.blocks_dir.as_deref() else {
        return 0;
    };
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    (n.starts_with("blk") || n.starts_with("rev")) && n.ends_with(".dat")
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn getblockchaininfo(ctx: &Ctx, _: &Args) -> Result<Json, RpcError> {
    let tip = ctx.chain.tip().map_err(chain_error)?;
    let time = ctx.chain.block_time(tip.height).unwrap_or(0);
    let mtp = ctx.chain.median_time_past_at(tip.height).unwrap_or(0);
    Ok(obj! {
        "chain" => "regtest",
        "blocks" => tip.height,
        "headers" => tip.height,
        "bestblockhash" => tip.hash.to_string(),
        "bits" => format!("{REGTEST_BITS:08x}"),
        "target" => target_hex(REGTEST_BITS),
        "difficulty" => Json::Real(difficulty(REGTEST_BITS)),
        "time" => time,
        "mediantime" => mtp,
        "verificationprogress" => Json::Real(1.0),
        // Core's rule: in initial block download while the tip is older than a day.
        "initialblockdownload" => u64::from(time) + 24 * 3600 < now(),
        "chainwork" => chainwork_hex(REGTEST_BITS, u64::from(tip.height) + 1),
        "size_on_disk" => blocks_size_on_disk(ctx),
        "pruned" => false,
        "warnings" => Json::Arr(vec![]),
    })
}

fn getblockcount(ctx: &Ctx, _: &Args) -> Result<Json, RpcError> {
    Ok(ctx.chain.tip().map_err(chain_error)?.height.into())
}

fn getbestblockhash(ctx: &Ctx, _: &Args) -> Result<Json, RpcError> {
    Ok(ctx
        .chain
        .tip()
        .map_err(chain_error)?
        .hash
        .to_string()
        .into())
}

fn getblockhash(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let height: i32 = args.req_int(0)?;
    let tip = ctx.chain.tip().map_err(chain_error)?;
    if height < 0 || height as u32 > tip.height {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            "Block height out of range",
        ));
    }
    let hash = ctx
        .chain
        .block_hash_at(height as u32)
        .ok_or_else(|| RpcError::new(RPC_INVALID_PARAMETER, "Block height out of range"))?;
    Ok(hash.to_string().into())
}

fn getblockheader(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let hash = parse_hash(args.get(0).unwrap_or(&serde_json::Value::Null), "hash")?;
    let verbose = args.bool(1)?.unwrap_or(true);
    let height = height_of(ctx, &hash)?;
    let tip = ctx.chain.tip().map_err(chain_error)?;
    let block = ctx.block(height)?;
    if !verbose {
        return Ok(serialize_hex(&block.header).into());
    }
    Ok(header_to_json(&block, place(ctx, height, tip.height)))
}

/// Core's `ParseVerbosity`.
pub(super) fn parse_verbosity(
    v: Option<&serde_json::Value>,
    default: i32,
    allow_bool: bool,
) -> Result<i32, RpcError> {
    match v {
        None => Ok(default),
        Some(serde_json::Value::Bool(b)) => {
            if allow_bool {
                Ok(i32::from(*b))
            } else {
                Err(RpcError::new(
                    RPC_TYPE_ERROR,
                    "Verbosity was boolean but only integer allowed",
                ))
            }
        }
        Some(v) => get_int(v),
    }
}

fn getblock(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let hash = parse_hash(args.get(0).unwrap_or(&serde_json::Value::Null), "blockhash")?;
    let verbosity = parse_verbosity(args.get(1), 1, true)?;
    let height = height_of(ctx, &hash)?;
    let tip = ctx.chain.tip().map_err(chain_error)?;
    let block = ctx.block(height)?;
    if verbosity <= 0 {
        return Ok(serialize_hex(&block).into());
    }
    let v = match verbosity {
        1 => BlockVerbosity::TxIds,
        2 => BlockVerbosity::Details,
        _ => BlockVerbosity::DetailsAndPrevout,
    };
    let mut prevouts = Vec::new();
    if v != BlockVerbosity::TxIds {
        let mut cache = HashMap::new();
        cache.insert(height, block.clone());
        for tx in &block.txdata {
            prevouts.push(ctx.prevouts(tx, &mut cache)?);
        }
    }
    Ok(block_to_json(
        &block,
        place(ctx, height, tip.height),
        v,
        &prevouts,
    ))
}

fn gettxout(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let txid = bitcoin::Txid::from_byte_array(parse_hash(
        args.get(0).unwrap_or(&serde_json::Value::Null),
        "txid",
    )?);
    let n: u32 = args.req_int(1)?;
    let include_mempool = args.bool(2)?.unwrap_or(true);
    let outpoint = OutPoint::new(txid, n);
    // (output, confirmations, coinbase), and the tip, read together.
    let (found, tip_hash) = ctx.chain.with_mempool(|pool, index| {
        let tip_height = index.tip_height();
        let found = (|| {
            if include_mempool {
                if pool.spender_of(&outpoint).is_some() {
                    return None;
                }
                if let Some(e) = pool.get(&txid) {
                    return e
                        .tx
                        .output
                        .get(n as usize)
                        .map(|o| (o.clone(), 0u32, false));
                }
            }
            index
                .coin(&outpoint)
                .map(|c| (c.txout.clone(), tip_height - c.height + 1, c.is_coinbase))
        })();
        (found, index.tip_hash())
    });
    let Some((txout, confirmations, coinbase)) = found else {
        return Ok(Json::Null);
    };
    Ok(obj! {
        "bestblock" => tip_hash.to_string(),
        "confirmations" => confirmations,
        "value" => Json::Amount(txout.value.to_sat() as i64),
        "scriptPubKey" => script_pubkey_json(&txout.script_pubkey),
        "coinbase" => coinbase,
    })
}

fn getdifficulty(_: &Ctx, _: &Args) -> Result<Json, RpcError> {
    Ok(Json::Real(difficulty(REGTEST_BITS)))
}

fn getchaintips(ctx: &Ctx, _: &Args) -> Result<Json, RpcError> {
    let tip = ctx.chain.tip().map_err(chain_error)?;
    Ok(Json::Arr(vec![obj! {
        "height" => tip.height,
        "hash" => tip.hash.to_string(),
        "branchlen" => 0,
        "status" => "active",
    }]))
}

fn getindexinfo(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let name = args.str(0)?.unwrap_or("");
    let tip = ctx.chain.tip().map_err(chain_error)?;
    let mut o = Json::object();
    if name.is_empty() || name == "txindex" {
        o.push(
            "txindex",
            obj! { "synced" => true, "best_block_height" => tip.height },
        );
    }
    Ok(o)
}
