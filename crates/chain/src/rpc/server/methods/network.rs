//! Core's `rpc/net.cpp`, for a node without peers.

use super::{Ctx, Method};
use crate::rpc::server::json::{obj, Json};
use crate::rpc::server::jsonrpc::RpcError;
use crate::rpc::server::params::Args;

/// Core's `CLIENT_VERSION` of the sources our engine comes from (31.99.0).
pub(crate) const CLIENT_VERSION: u32 = 319_900;
/// Core's `PROTOCOL_VERSION`.
const PROTOCOL_VERSION: u32 = 70_017;

pub(super) static METHODS: &[Method] = &[
    Method {
        name: "getnetworkinfo",
        category: "network",
        params: &[],
        description: "Returns an object containing various state info regarding P2P networking (chaind has no peers).",
        handler: getnetworkinfo,
    },
    Method {
        name: "getconnectioncount",
        category: "network",
        params: &[],
        description: "Returns the number of connections to other nodes (always 0: chaind has no peers).",
        handler: getconnectioncount,
    },
    Method {
        name: "getpeerinfo",
        category: "network",
        params: &[],
        description: "Returns data about each connected network peer (none: chaind has no peers).",
        handler: getpeerinfo,
    },
];

fn getnetworkinfo(ctx: &Ctx, _: &Args) -> Result<Json, RpcError> {
    let policy = ctx.chain.policy();
    let relay = (policy.min_relay_fee_rate.to_sat_per_kwu() * 4) as i64;
    let networks: Vec<Json> = ["ipv4", "ipv6", "onion", "i2p", "cjdns"]
        .iter()
        .map(|n| {
            obj! {
                "name" => *n,
                "limited" => true,
                "reachable" => false,
                "proxy" => "",
                "proxy_randomize_credentials" => false,
            }
        })
        .collect();
    Ok(obj! {
        "version" => CLIENT_VERSION,
        "subversion" => format!("/superscalar-chaind:{}/", env!("CARGO_PKG_VERSION")),
        "protocolversion" => PROTOCOL_VERSION,
        "localservices" => "0000000000000000",
        "localservicesnames" => Json::Arr(vec![]),
        "localrelay" => true,
        "timeoffset" => 0,
        "networkactive" => false,
        "connections" => 0,
        "connections_in" => 0,
        "connections_out" => 0,
        "networks" => networks,
        "relayfee" => Json::Amount(relay),
        "incrementalfee" => Json::Amount(100),
        "localaddresses" => Json::Arr(vec![]),
        "warnings" => Json::Arr(vec![]),
    })
}

fn getconnectioncount(_: &Ctx, _: &Args) -> Result<Json, RpcError> {
    Ok(0.into())
}

fn getpeerinfo(_: &Ctx, _: &Args) -> Result<Json, RpcError> {
    Ok(Json::Arr(vec![]))
}
