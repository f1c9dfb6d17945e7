//! `BitcoindRpc` against a hostile or broken node: garbage, wrong ids, wrong types, absurd
//! numbers, lies in reject messages, bodies without end, silence. Every `Chain` method must
//! answer a `ChainError` (or a value), never panic: the client's watcher relies on it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{
    absolute, transaction, Amount, BlockHash, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};
use serde_json::{json, Value};
use superscalar_chain::rpc::auth::{Auth, Credentials};
use superscalar_chain::{BitcoindRpc, Chain, ChainError};

/// What the hostile node answers to one request.
enum Reply {
    /// HTTP 200 with this JSON-RPC result, the request's id echoed.
    Result(Value),
    /// HTTP 200 with this whole JSON body.
    Body(Value),
    /// These bytes, as they are (a whole HTTP response, or not).
    Raw(Vec<u8>),
    /// A 200 head announcing JSON, then bytes without end.
    Endless,
    /// Read the request, then say nothing until the client gives up.
    Silence,
}

type MakeReply = dyn Fn() -> Reply + Send + Sync;
type Script = dyn Fn(&str, &Value) -> Option<Reply> + Send + Sync;

/// A node on 127.0.0.1 that answers `getblockchaininfo` and `getindexinfo` sanely (so that
/// `connect` succeeds) unless `script` says otherwise, and every other call as `script` says
/// (JSON null when it says nothing).
struct HostileNode {
    url: String,
    stop: Arc<AtomicBool>,
}

impl Drop for HostileNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn sane(method: &str) -> Option<Value> {
    match method {
        "getblockchaininfo" => Some(json!({
            "chain": "regtest",
            "blocks": 200,
            "bestblockhash": BlockHash::all_zeros().to_string(),
            "mediantime": 1_700_000_000u32,
        })),
        "getindexinfo" => Some(json!({"txindex": {"synced": true, "best_block_height": 200}})),
        _ => None,
    }
}

fn http_response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn serve_one(stream: TcpStream, script: &Script) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = request["method"].as_str().unwrap_or("").to_string();
    let id = request["id"].clone();
    let reply = script(&method, &request["params"])
        .or_else(|| sane(&method).map(Reply::Result))
        .unwrap_or(Reply::Result(Value::Null));
    let mut stream = stream;
    match reply {
        Reply::Result(result) => {
            let body = json!({"jsonrpc": "2.0", "result": result, "id": id}).to_string();
            let _ = stream.write_all(&http_response("200 OK", body.as_bytes()));
        }
        Reply::Body(body) => {
            let _ = stream.write_all(&http_response("200 OK", body.to_string().as_bytes()));
        }
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        Reply::Endless => {
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"result\":\"",
            );
            let chunk = vec![b'a'; 1 << 16];
            // Until the client hangs up (at most 1 GiB, so a test cannot run forever).
            for _ in 0..(1 << 14) {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
        Reply::Silence => {
            // Hold the connection until the client leaves.
            let mut sink = [0u8; 1];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = stream.read(&mut sink);
        }
    }
}

impl HostileNode {
    fn start(script: impl Fn(&str, &Value) -> Option<Reply> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let script = Arc::clone(&script);
                    std::thread::spawn(move || serve_one(stream, &*script));
                }
            });
        }
        HostileNode { url, stop }
    }

    fn client(&self) -> BitcoindRpc {
        BitcoindRpc::connect(self.url.as_str(), auth())
            .unwrap()
            .with_timeout(Duration::from_secs(5))
    }
}

fn auth() -> Auth {
    Auth::UserPass(Credentials::new("u", "p"))
}

/// A transaction with `inputs` inputs and two outputs worth `value` each.
fn tx(inputs: u32, value: u64) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: (0..inputs)
            .map(|i| TxIn {
                previous_output: OutPoint::new(Txid::from_byte_array([7; 32]), i),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::from_height(5),
                witness: Witness::new(),
            })
            .collect(),
        output: vec![
            TxOut {
                value: Amount::from_sat(value),
                script_pubkey: ScriptBuf::new_p2a(),
            },
            TxOut {
                value: Amount::from_sat(value),
                script_pubkey: ScriptBuf::new_p2a(),
            },
        ],
    }
}

/// Every `Chain` method once, each answer discarded: the test fails if any panics.
fn call_everything(rpc: &BitcoindRpc) -> Vec<(&'static str, bool)> {
    let t = tx(2, 1_000);
    let child = tx(1, 500);
    let op = OutPoint::new(t.compute_txid(), 0);
    let script = ScriptBuf::new_p2a();
    vec![
        ("tip", rpc.tip().is_ok()),
        ("median_time_past", rpc.median_time_past().is_ok()),
        ("submit_transaction", rpc.submit_transaction(&t).is_ok()),
        (
            "submit_raw_transaction",
            rpc.submit_raw_transaction(&[0, 1, 2]).is_ok(),
        ),
        ("submit_package", rpc.submit_package(&t, &child).is_ok()),
        ("mine_blocks", rpc.mine_blocks(2, &script).is_ok()),
        (
            "mine_block_with",
            rpc.mine_block_with(std::slice::from_ref(&t), &script)
                .is_ok(),
        ),
        ("tx_status", rpc.tx_status(&t.compute_txid()).is_ok()),
        ("get_utxo", rpc.get_utxo(&op).is_ok()),
        ("block_at", rpc.block_at(3).is_ok()),
        ("estimate_fee_rate", rpc.estimate_fee_rate(6).is_ok()),
    ]
}

#[test]
fn garbage_answers_are_errors_never_panics() {
    let huge = json!(1e300);
    let garbage: Vec<(&str, Box<MakeReply>)> = vec![
        (
            "not JSON",
            Box::new(|| Reply::Raw(http_response("200 OK", b"<html>"))),
        ),
        (
            "HTTP 500, HTML",
            Box::new(|| Reply::Raw(http_response("500 Internal Server Error", b"<h1>oops</h1>"))),
        ),
        (
            "HTTP 503",
            Box::new(|| Reply::Raw(http_response("503 Busy", b""))),
        ),
        ("empty", Box::new(|| Reply::Raw(Vec::new()))),
        (
            "not HTTP",
            Box::new(|| Reply::Raw(b"SSH-2.0-OpenSSH\r\n".to_vec())),
        ),
        (
            "truncated",
            Box::new(|| {
                Reply::Raw(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"result\":"
                        .to_vec(),
                )
            }),
        ),
        ("array body", Box::new(|| Reply::Body(json!([1, 2, 3])))),
        ("string body", Box::new(|| Reply::Body(json!("hello")))),
        (
            "wrong id",
            Box::new(|| Reply::Body(json!({"result": 5, "error": null, "id": 987654}))),
        ),
        (
            "error of the wrong shape",
            Box::new(|| Reply::Body(json!({"result": null, "error": "bad", "id": 1}))),
        ),
        (
            "error with a huge code",
            Box::new(|| {
                Reply::Body(
                    json!({"result": null, "error": {"code": 1e300, "message": 5}, "id": 1}),
                )
            }),
        ),
        ("null", Box::new(|| Reply::Result(Value::Null))),
        ("a string", Box::new(|| Reply::Result(json!("zz")))),
        ("a negative number", Box::new(|| Reply::Result(json!(-5)))),
        (
            "a huge number",
            Box::new(move || Reply::Result(huge.clone())),
        ),
        (
            "an object of wrong types",
            Box::new(|| {
                Reply::Result(json!({
                    "blocks": -1, "bestblockhash": 5, "mediantime": "x", "hash": [],
                    "confirmations": -3, "value": "1", "scriptPubKey": {"hex": "zz"},
                    "bestblock": "00", "feerate": -1, "mempoolminfee": 1e300,
                    "minrelaytxfee": "x", "tx-results": [], "package_msg": 7,
                    "blockhash": 1, "height": -1,
                }))
            }),
        ),
        (
            "an array of wrong things",
            Box::new(|| Reply::Result(json!([null, 1, "zz", {"a": 1}]))),
        ),
    ];
    for (name, reply) in garbage {
        let reply: Arc<MakeReply> = Arc::from(reply);
        let reply1 = Arc::clone(&reply);
        // Connect sanely; everything after is garbage.
        let node = HostileNode::start(move |method, _| sane(method).is_none().then(|| reply1()));
        let rpc = node.client();
        let results = call_everything(&rpc);
        // Nothing garbage could make a submission succeed.
        for (method, ok) in &results {
            if method.starts_with("submit") {
                assert!(!ok, "{name}: {method} succeeded");
            }
        }
        // And after connect, garbage everywhere, getblockchaininfo included.
        let reply2 = Arc::clone(&reply);
        let node =
            HostileNode::start(move |method, _| (method != "getindexinfo").then(|| reply2()));
        if let Ok(rpc) = BitcoindRpc::connect(node.url.as_str(), auth()) {
            let rpc = rpc.with_timeout(Duration::from_secs(5));
            let _ = call_everything(&rpc);
        }
    }
}

fn rpc_error(code: i64, message: &str) -> Reply {
    Reply::Body(json!({"result": null, "error": {"code": code, "message": message}, "id": 1}))
}

/// A node whose answers about the chain are at the very edges of their types.
fn lying_node(reject: &'static str) -> HostileNode {
    HostileNode::start(move |method, params| {
        Some(match method {
            "getblockchaininfo" => Reply::Result(json!({
                "chain": "regtest",
                "blocks": u32::MAX,
                "bestblockhash": BlockHash::all_zeros().to_string(),
                "mediantime": u32::MAX,
            })),
            "getindexinfo" => return None,
            "getmempoolentry" => rpc_error(-5, "Transaction not in mempool"),
            "sendrawtransaction" => rpc_error(-26, reject),
            "submitpackage" => Reply::Result(json!({
                "package_msg": if reject.is_empty() { "success" } else { reject },
                "tx-results": {},
            })),
            // Outputs exist, confirmed more often than the chain is long, worth 21M BTC.
            "gettxout" => Reply::Result(json!({
                "bestblock": BlockHash::all_zeros().to_string(),
                "confirmations": if params[1] == 0 { json!(u64::MAX) } else { json!(1u64 << 33) },
                "value": 21_000_000.0,
                "scriptPubKey": {"hex": "51"},
                "coinbase": true,
            })),
            "getblockheader" => Reply::Result(json!({"height": 5, "mediantime": u32::MAX})),
            "getblockhash" => Reply::Result(json!(BlockHash::all_zeros().to_string())),
            "gettxspendingprevout" => Reply::Result(json!([{"spendingtxid": "zz"}])),
            _ => Reply::Result(Value::Null),
        })
    })
}

#[test]
fn lies_in_reject_messages_and_edge_numbers_do_not_overflow() {
    let rejects = [
        "bad-txns-inputs-missingorspent",
        "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth 3",
        "non-final",
        "non-BIP68-final",
        "bad-txns-in-belowout, value in (1) < value out (2)",
        "min relay fee not met, 18446744073709551615 < 18446744073709551615",
        "min relay fee not met, 99999999999999999999999 < 1",
        "txn-mempool-conflict",
        "insufficient fee, rejecting replacement ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        "mempool-script-verify-flag-failed (x), input 99999999999999999999",
        "missing-ephemeral-spends",
    ];
    for reject in rejects {
        let node = lying_node(reject);
        let rpc = node.client();
        for t in [tx(2, u64::MAX / 2 + 1), tx(3, 1_000)] {
            match rpc.submit_transaction(&t) {
                Err(ChainError::Rejected { .. }) => {}
                other => panic!("{reject}: {other:?}"),
            }
            match rpc.submit_package(&t, &tx(1, 10)) {
                Err(ChainError::Rejected { .. }) => {}
                other => panic!("{reject}: {other:?}"),
            }
        }
    }
    // Heights from confirmations that exceed the chain: errors, not wrapped numbers.
    let node = lying_node("");
    let rpc = node.client();
    let op = OutPoint::new(Txid::from_byte_array([7; 32]), 0);
    assert!(rpc.get_utxo(&op).is_err(), "confirmations beyond the tip");
    let op = OutPoint::new(Txid::from_byte_array([7; 32]), 1);
    assert!(rpc.get_utxo(&op).is_err(), "confirmations beyond u32");
}

#[test]
fn absurd_package_sizes_are_an_error() {
    let t = tx(1, 1_000);
    let child = tx(1, 500);
    let (pw, cw) = (
        t.compute_wtxid().to_string(),
        child.compute_wtxid().to_string(),
    );
    let node = HostileNode::start(move |method, _| {
        (method == "submitpackage").then(|| {
            Reply::Result(json!({
                "package_msg": "success",
                "tx-results": {
                    pw.clone(): {"vsize": u64::MAX, "fees": {"base": 21_000_000.0}},
                    cw.clone(): {"vsize": u64::MAX, "fees": {"base": 21_000_000.0}},
                },
            }))
        })
    });
    let rpc = node.client();
    assert!(rpc.submit_package(&t, &child).is_err());
}

#[test]
fn a_silent_node_times_out_and_an_endless_answer_is_cut_off() {
    let node = HostileNode::start(|method, _| match method {
        "estimatesmartfee" => Some(Reply::Silence),
        "getblockhash" => Some(Reply::Endless),
        _ => None,
    });
    let rpc = BitcoindRpc::connect(node.url.as_str(), auth())
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    match rpc.estimate_fee_rate(6) {
        Err(ChainError::Rpc { code: None, .. }) => {}
        other => panic!("{other:?}"),
    }
    // The endless body is refused once it passes the limit, well before the node gives up.
    let rpc = rpc.with_timeout(Duration::from_secs(60));
    match rpc.block_at(1) {
        Err(ChainError::Rpc {
            code: None,
            message,
            ..
        }) => {
            assert!(message.contains("too large"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}
