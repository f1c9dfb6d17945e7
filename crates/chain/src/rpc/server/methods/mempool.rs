//! Core's `rpc/mempool.cpp` (reading the mempool) and `rpc/fees.cpp`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bitcoin::hashes::Hash;
use bitcoin::{Amount, OutPoint, Txid};
use serde_json::Value;

use super::{chain_error, Ctx, EntryMeta, Method};
use crate::mempool::Mempool;
use crate::rpc::codes::{RPC_INVALID_ADDRESS_OR_KEY, RPC_INVALID_PARAMETER, RPC_MISC_ERROR};
use crate::rpc::server::json::{obj, Json};
use crate::rpc::server::jsonrpc::RpcError;
use crate::rpc::server::params::{
    check_object_fields, get_int, opt, options, parse_hash, req, type_error, Args, Ty,
};
use crate::Chain;

pub(super) static METHODS: &[Method] = &[
    Method {
        name: "getrawmempool",
        category: "blockchain",
        params: &[opt("verbose", Ty::Bool), opt("mempool_sequence", Ty::Bool)],
        description: "Returns all transaction ids in memory pool as a json array of string transaction ids.",
        handler: getrawmempool,
    },
    Method {
        name: "getmempoolentry",
        category: "blockchain",
        params: &[req("txid", Ty::Hex)],
        description: "Returns mempool data for given transaction.",
        handler: getmempoolentry,
    },
    Method {
        name: "getmempoolancestors",
        category: "blockchain",
        params: &[req("txid", Ty::Hex), opt("verbose", Ty::Bool)],
        description: "If txid is in the mempool, returns all in-mempool ancestors.",
        handler: getmempoolancestors,
    },
    Method {
        name: "getmempooldescendants",
        category: "blockchain",
        params: &[req("txid", Ty::Hex), opt("verbose", Ty::Bool)],
        description: "If txid is in the mempool, returns all in-mempool descendants.",
        handler: getmempooldescendants,
    },
    Method {
        name: "getmempoolinfo",
        category: "blockchain",
        params: &[],
        description: "Returns details on the active state of the TX memory pool.",
        handler: getmempoolinfo,
    },
    Method {
        name: "gettxspendingprevout",
        category: "blockchain",
        params: &[
            req("outputs", Ty::Arr),
            options("options", &["mempool_only", "return_spending_tx"]),
        ],
        description: "Scans the mempool to find transactions spending any of the given outputs.",
        handler: gettxspendingprevout,
    },
    Method {
        name: "estimatesmartfee",
        category: "util",
        params: &[req("conf_target", Ty::Num), opt("estimate_mode", Ty::Str)],
        description: "Estimates the approximate fee per kilobyte needed for a transaction to begin confirmation within conf_target blocks.",
        handler: estimatesmartfee,
    },
];

/// Fee and weight of the chunk each mempool transaction belongs to (Core's cluster mempool
/// `GetMainChunkFeerate`): each cluster is linearized by ancestor-set fee rate and cut into
/// chunks of decreasing fee rate.
fn chunks(pool: &Mempool) -> HashMap<Txid, (Amount, u64)> {
    let entries = pool.entries();
    let by_txid: HashMap<Txid, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.tx.compute_txid(), i))
        .collect();
    // Clusters: connected components over parent links.
    let mut root: Vec<usize> = (0..entries.len()).collect();
    fn find(root: &mut [usize], mut i: usize) -> usize {
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for (i, e) in entries.iter().enumerate() {
        for p in pool.parents_of(&e.tx.compute_txid()) {
            if let Some(&j) = by_txid.get(&p) {
                let (a, b) = (find(&mut root, i), find(&mut root, j));
                root[a] = b;
            }
        }
    }
    let mut clusters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..entries.len() {
        let r = find(&mut root, i);
        clusters.entry(r).or_default().push(i);
    }
    let weight = |i: usize| entries[i].tx.weight().to_wu();
    let mut out = HashMap::new();
    for members in clusters.values() {
        // Linearize: repeatedly take the remaining transaction whose remaining ancestor set has
        // the best fee rate, ancestors first.
        let mut left: BTreeSet<usize> = members.iter().copied().collect();
        let mut order: Vec<usize> = Vec::with_capacity(members.len());
        while !left.is_empty() {
            let mut best: Option<(usize, Vec<usize>, u64, u64)> = None;
            for &i in &left {
                let mut set: Vec<usize> = pool
                    .ancestors_of_tx(&entries[i].tx.compute_txid())
                    .iter()
                    .filter_map(|a| by_txid.get(a).copied())
                    .filter(|a| left.contains(a))
                    .collect();
                set.push(i);
                let fee: u64 = set.iter().map(|&j| entries[j].fee.to_sat()).sum();
                let w: u64 = set.iter().map(|&j| weight(j)).sum();
                let better = match &best {
                    None => true,
                    Some((_, _, bf, bw)) => {
                        u128::from(fee) * u128::from(*bw) > u128::from(*bf) * u128::from(w)
                    }
                };
                if better {
                    best = Some((i, set, fee, w));
                }
            }
            let Some((_, mut set, _, _)) = best else {
                break;
            };
            set.sort_by_key(|&j| entries[j].arrival());
            for j in set {
                left.remove(&j);
                order.push(j);
            }
        }
        // Chunk: merge while a later chunk pays a higher rate than the one before it.
        let mut chunked: Vec<(u64, u64, Vec<usize>)> = Vec::new();
        for i in order {
            chunked.push((entries[i].fee.to_sat(), weight(i), vec![i]));
            while chunked.len() >= 2 {
                let (lf, lw, _) = &chunked[chunked.len() - 1];
                let (pf, pw, _) = &chunked[chunked.len() - 2];
                if u128::from(*lf) * u128::from(*pw) > u128::from(*pf) * u128::from(*lw) {
                    let (lf, lw, lm) = chunked.pop().expect("two chunks");
                    let last = chunked.last_mut().expect("one chunk");
                    last.0 += lf;
                    last.1 += lw;
                    last.2.extend(lm);
                } else {
                    break;
                }
            }
        }
        for (fee, w, ms) in chunked {
            for m in ms {
                out.insert(entries[m].tx.compute_txid(), (Amount::from_sat(fee), w));
            }
        }
    }
    out
}

/// Core's `entryToJSON`.
fn entry_json(pool: &Mempool, txid: &Txid, meta: &EntryMeta, chunk: (Amount, u64)) -> Option<Json> {
    let e = pool.get(txid)?;
    let ancestors = pool.ancestors_of_tx(txid);
    let descendants = pool.descendants_of_tx(txid);
    let sum = |set: &BTreeSet<Txid>| -> (u64, Amount) {
        set.iter()
            .filter_map(|t| pool.get(t))
            .fold((e.vsize, e.fee), |(v, f), x| (v + x.vsize, f + x.fee))
    };
    let (anc_size, anc_fee) = sum(&ancestors);
    let (desc_size, desc_fee) = sum(&descendants);
    let mut depends: Vec<String> = pool
        .parents_of(txid)
        .iter()
        .map(|t| t.to_string())
        .collect();
    depends.sort();
    let mut spentby: Vec<String> = pool
        .children_of_tx(txid)
        .iter()
        .map(|t| t.to_string())
        .collect();
    spentby.sort();
    let amt = |a: Amount| Json::Amount(a.to_sat() as i64);
    Some(obj! {
        "vsize" => e.vsize,
        "weight" => e.tx.weight().to_wu(),
        "time" => meta.time,
        "height" => meta.height,
        "descendantcount" => descendants.len() + 1,
        "descendantsize" => desc_size,
        "ancestorcount" => ancestors.len() + 1,
        "ancestorsize" => anc_size,
        "wtxid" => e.tx.compute_wtxid().to_string(),
        "chunkweight" => chunk.1,
        "fees" => obj! {
            "base" => amt(e.fee),
            "modified" => amt(e.fee),
            "ancestor" => amt(anc_fee),
            "descendant" => amt(desc_fee),
            "chunk" => amt(chunk.0),
        },
        "depends" => depends.into_iter().map(Json::from).collect::<Vec<_>>(),
        "spentby" => spentby.into_iter().map(Json::from).collect::<Vec<_>>(),
        "unbroadcast" => false,
    })
}

/// Verbose entries of `txids` (all of the mempool when `None`), keyed by txid.
fn entries_json(ctx: &Ctx, txids: Option<Vec<Txid>>) -> Result<Json, RpcError> {
    let tip = ctx.chain.tip().map_err(chain_error)?;
    let (all, chunk) = ctx.chain.with_mempool(|pool, _| {
        let all: Vec<Txid> = pool.entries().iter().map(|e| e.tx.compute_txid()).collect();
        (all, chunks(pool))
    });
    let meta = ctx.entry_meta(&all, tip.height);
    let wanted = txids.unwrap_or_else(|| all.clone());
    ctx.chain.with_mempool(|pool, _| {
        let mut o = Json::object();
        for t in &wanted {
            let m = meta.get(t).copied().unwrap_or(EntryMeta {
                time: super::now(),
                height: tip.height,
            });
            let c = chunk.get(t).copied().unwrap_or_default();
            if let Some(j) = entry_json(pool, t, &m, c) {
                o.push(&t.to_string(), j);
            }
        }
        Ok(o)
    })
}

fn getrawmempool(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let verbose = args.bool(0)?.unwrap_or(false);
    let sequence = args.bool(1)?.unwrap_or(false);
    if verbose {
        if sequence {
            return Err(RpcError::new(
                RPC_INVALID_PARAMETER,
                "Verbose results cannot contain mempool sequence values.",
            ));
        }
        return entries_json(ctx, None);
    }
    let (txids, seq) = ctx.chain.with_mempool(|pool, _| {
        let txids: Vec<Json> = pool
            .entries()
            .iter()
            .map(|e| Json::from(e.tx.compute_txid().to_string()))
            .collect();
        (txids, pool.sequence())
    });
    if !sequence {
        return Ok(Json::Arr(txids));
    }
    Ok(obj! { "txids" => txids, "mempool_sequence" => seq })
}

fn mempool_txid(ctx: &Ctx, args: &Args) -> Result<Txid, RpcError> {
    let txid = Txid::from_byte_array(parse_hash(args.get(0).unwrap_or(&Value::Null), "txid")?);
    if ctx.chain.with_mempool(|pool, _| pool.get(&txid).is_none()) {
        return Err(RpcError::new(
            RPC_INVALID_ADDRESS_OR_KEY,
            "Transaction not in mempool",
        ));
    }
    Ok(txid)
}

fn getmempoolentry(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let txid = mempool_txid(ctx, args)?;
    match entries_json(ctx, Some(vec![txid]))? {
        Json::Obj(mut o) if !o.is_empty() => Ok(o.remove(0).1),
        _ => Err(RpcError::new(
            RPC_INVALID_ADDRESS_OR_KEY,
            "Transaction not in mempool",
        )),
    }
}

fn relatives(ctx: &Ctx, args: &Args, ancestors: bool) -> Result<Json, RpcError> {
    let txid = mempool_txid(ctx, args)?;
    let verbose = args.bool(1)?.unwrap_or(false);
    let set: Vec<Txid> = ctx.chain.with_mempool(|pool, _| {
        let set = if ancestors {
            pool.ancestors_of_tx(&txid)
        } else {
            pool.descendants_of_tx(&txid)
        };
        set.into_iter().collect()
    });
    if verbose {
        entries_json(ctx, Some(set))
    } else {
        Ok(Json::Arr(
            set.iter().map(|t| Json::from(t.to_string())).collect(),
        ))
    }
}

fn getmempoolancestors(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    relatives(ctx, args, true)
}

fn getmempooldescendants(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    relatives(ctx, args, false)
}

fn sat_per_kvb(rate: bitcoin::FeeRate) -> i64 {
    (rate.to_sat_per_kwu() * 4) as i64
}

fn getmempoolinfo(ctx: &Ctx, _: &Args) -> Result<Json, RpcError> {
    let policy = ctx.chain.policy();
    let (size, bytes, usage, fee) = ctx.chain.with_mempool(|pool, _| {
        let entries = pool.entries();
        let bytes: u64 = entries.iter().map(|e| e.vsize).sum();
        // An estimate of the memory the entries take (Core reports its allocator's count).
        let usage: u64 = entries
            .iter()
            .map(|e| 3 * e.tx.total_size() as u64 + 400)
            .sum();
        let fee: u64 = entries.iter().map(|e| e.fee.to_sat()).sum();
        (entries.len(), bytes, usage, fee)
    });
    let min_relay = sat_per_kvb(policy.min_relay_fee_rate);
    Ok(obj! {
        "loaded" => true,
        "size" => size,
        "bytes" => bytes,
        "usage" => usage,
        "total_fee" => Json::Amount(fee as i64),
        "maxmempool" => 300_000_000u64,
        "mempoolminfee" => Json::Amount(min_relay),
        "minrelaytxfee" => Json::Amount(min_relay),
        "incrementalrelayfee" => Json::Amount(100),
        "unbroadcastcount" => 0,
        "permitbaremultisig" => true,
        "maxdatacarriersize" => crate::policy::MAX_OP_RETURN_RELAY,
        "limitclustercount" => 64,
        "limitclustersize" => 101_000,
        "optimal" => true,
    })
}

fn gettxspendingprevout(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    let outputs = args.array(0)?;
    if outputs.is_empty() {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            "Invalid parameter, outputs are missing",
        ));
    }
    let mut mempool_only = true;
    let mut return_tx = false;
    if let Some(o) = args.get(1) {
        let Value::Object(o) = o else {
            return Err(type_error(o, "object"));
        };
        for (k, v) in o {
            let slot = match k.as_str() {
                "mempool_only" => &mut mempool_only,
                "return_spending_tx" => &mut return_tx,
                _ => {
                    return Err(RpcError::new(
                        crate::rpc::codes::RPC_TYPE_ERROR,
                        format!("Unexpected key {k}"),
                    ))
                }
            };
            match v {
                Value::Null => {}
                Value::Bool(b) => *slot = *b,
                other => {
                    return Err(RpcError::new(
                        crate::rpc::codes::RPC_TYPE_ERROR,
                        format!(
                            "JSON value of type {} for field {k} is not of expected type bool",
                            match other {
                                Value::Number(_) => "number",
                                Value::String(_) => "string",
                                Value::Array(_) => "array",
                                _ => "object",
                            }
                        ),
                    ))
                }
            }
        }
    }
    let mut requests = Vec::with_capacity(outputs.len());
    for o in outputs {
        let Value::Object(map) = o else {
            return Err(type_error(o, "object"));
        };
        check_object_fields(map, &[("txid", Ty::Str), ("vout", Ty::Num)])?;
        if let Some(k) = map.keys().find(|k| *k != "txid" && *k != "vout") {
            return Err(RpcError::new(
                crate::rpc::codes::RPC_TYPE_ERROR,
                format!("Unexpected key {k}"),
            ));
        }
        let txid = Txid::from_byte_array(parse_hash(&map["txid"], "txid")?);
        let vout: i32 = get_int(&map["vout"])?;
        if vout < 0 {
            return Err(RpcError::new(
                RPC_INVALID_PARAMETER,
                "Invalid parameter, vout cannot be negative",
            ));
        }
        requests.push((OutPoint::new(txid, vout as u32), o.clone()));
    }
    let spenders: Vec<Option<bitcoin::Transaction>> = ctx.chain.with_mempool(|pool, _| {
        requests
            .iter()
            .map(|(op, _)| {
                pool.spender_of(op)
                    .and_then(|t| pool.get(&t).map(|e| e.tx.clone()))
            })
            .collect()
    });
    if !mempool_only && spenders.iter().any(Option::is_none) {
        return Err(RpcError::new(
            RPC_MISC_ERROR,
            "Mempool lacks a relevant spend, and txospenderindex is unavailable.",
        ));
    }
    let result = requests
        .iter()
        .zip(spenders)
        .map(|((_, raw), spender)| {
            let mut o = Json::from(raw);
            if let Some(tx) = spender {
                o.push("spendingtxid", tx.compute_txid().to_string());
                if return_tx {
                    o.push("spendingtx", bitcoin::consensus::encode::serialize_hex(&tx));
                }
            }
            o
        })
        .collect();
    Ok(Json::Arr(result))
}

fn estimatesmartfee(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    const MAX_TARGET: i32 = 1008;
    let target: i32 = args.req_int(0)?;
    if !(1..=MAX_TARGET).contains(&target) {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            format!("Invalid conf_target, must be between 1 and {MAX_TARGET}"),
        ));
    }
    let mode = args.str(1)?.unwrap_or("economical");
    if !["unset", "economical", "conservative"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(mode))
    {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            "Invalid estimate_mode parameter, must be one of: \"unset\", \"economical\", \"conservative\"",
        ));
    }
    let rate = ctx
        .chain
        .estimate_fee_rate(target as u16)
        .map_err(chain_error)?;
    Ok(obj! {
        "feerate" => Json::Amount(sat_per_kvb(rate)),
        "blocks" => target.max(2),
    })
}
