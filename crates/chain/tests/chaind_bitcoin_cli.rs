//! The real `bitcoin-cli` (built from the same Bitcoin Core sources as our engine) works
//! against `chaind` with nothing but `-regtest -datadir=DIR -rpcport=PORT`: it finds the cookie,
//! and every method it calls answers in a shape it understands.
//!
//! A real `bitcoind` then goes through the same story as `chaind`, and the answers are compared:
//! same fields, same JSON types, same error codes and reject tokens.
//!
//! Needs `SUPERSCALAR_BITCOIND_BIN` (the directory `scripts/bitcoind.sh` prints); skipped
//! without it, unless `SUPERSCALAR_REQUIRE_BITCOIND=1`.

mod chaind_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use chaind_support::*;
use common::*;
use serde_json::{json, Value};

const COIN: u64 = 5_000_000_000;

fn bitcoin_cli() -> Option<PathBuf> {
    match std::env::var_os("SUPERSCALAR_BITCOIND_BIN") {
        Some(dir) => {
            let cli = Path::new(&dir).join("bitcoin-cli");
            assert!(cli.exists(), "{} does not exist", cli.display());
            Some(cli)
        }
        None => {
            if std::env::var("SUPERSCALAR_REQUIRE_BITCOIND").as_deref() == Ok("1") {
                panic!("SUPERSCALAR_REQUIRE_BITCOIND=1 but SUPERSCALAR_BITCOIND_BIN is not set");
            }
            println!("skipped: SUPERSCALAR_BITCOIND_BIN not set");
            None
        }
    }
}

/// `bitcoin-cli -regtest -datadir=DIR -rpcport=PORT args...`: exit code, stdout, stderr.
struct Cli {
    bin: PathBuf,
    datadir: PathBuf,
    port: u16,
}

impl Cli {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg(format!("-rpcport={}", self.port))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
            String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        )
    }

    /// Run and expect success: stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "bitcoin-cli {args:?} failed: {err}");
        out
    }

    /// Run and expect success: stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

#[test]
fn bitcoin_cli_works_against_chaind() {
    let Some(bin) = bitcoin_cli() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let cli = Cli {
        bin,
        datadir: dir.path().to_path_buf(),
        port: h.local_addr().port(),
    };
    let s = Signer::new(81);
    let me = address(&s.p2tr());
    let burn_addr = address(&burn());

    assert_eq!(cli.ok(&["getblockcount"]), "0");
    let genesis = cli.ok(&["getblockhash", "0"]);
    assert_eq!(cli.ok(&["getbestblockhash"]), genesis);
    assert_eq!(cli.ok(&["-named", "getblockhash", "height=0"]), genesis);
    let info = cli.json(&["getblockchaininfo"]);
    assert_eq!(info["chain"], "regtest");
    let mined = cli.json(&["generatetoaddress", "1", &me]);
    assert_eq!(mined.as_array().unwrap().len(), 1);
    cli.json(&[
        "-named",
        "generatetoaddress",
        "nblocks=100",
        &format!("address={burn_addr}"),
    ]);
    assert_eq!(cli.ok(&["getblockcount"]), "101");
    let b1 = mined[0].as_str().unwrap();
    let header = cli.json(&["getblockheader", b1]);
    assert_eq!(header["height"], 1);
    assert_eq!(header["confirmations"], 101);
    assert_eq!(cli.ok(&["getblockheader", b1, "false"]).len(), 160);
    assert!(cli.ok(&["getblock", b1, "0"]).len() > 160);
    let block = cli.json(&["getblock", b1, "1"]);
    let coinbase_txid = block["tx"][0].as_str().unwrap().to_string();
    let block2 = cli.json(&["getblock", b1, "2"]);
    assert_eq!(block2["tx"][0]["txid"], coinbase_txid);
    let cb = cli.json(&["getrawtransaction", &coinbase_txid, "1"]);
    assert_eq!(cb["blockhash"], b1);
    let utxo = cli.json(&["gettxout", &coinbase_txid, "0"]);
    assert_eq!(utxo["scriptPubKey"]["address"], me);
    assert_eq!(utxo["coinbase"], true);

    // A transaction through sendrawtransaction, testmempoolaccept and the mempool methods.
    let coin = {
        let b = h.chain();
        let block = superscalar_chain::Chain::block_at(b.as_ref(), 1)
            .unwrap()
            .unwrap();
        (
            bitcoin::OutPoint::new(block.txdata[0].compute_txid(), 0),
            block.txdata[0].output[0].clone(),
        )
    };
    let tx = s.spend(
        coin,
        vec![out(COIN / 2, s.p2tr()), out(COIN / 2 - 10_000, s.p2tr())],
        2,
    );
    let judged = cli.json(&["testmempoolaccept", &json!([hex(&tx)]).to_string()]);
    assert_eq!(judged[0]["allowed"], true);
    let txid = cli.ok(&["sendrawtransaction", &hex(&tx)]);
    assert_eq!(txid, tx.compute_txid().to_string());
    assert_eq!(cli.json(&["getrawmempool"]), json!([txid]));
    let entry = cli.json(&["getmempoolentry", &txid]);
    assert_eq!(entry["vsize"], tx.vsize());
    assert_eq!(cli.json(&["getmempoolinfo"])["size"], 1);
    assert!(cli.json(&["estimatesmartfee", "6"])["feerate"]
        .as_f64()
        .is_some());
    assert!(cli
        .json(&["getrawtransaction", &txid, "true"])
        .get("blockhash")
        .is_none());

    // generateblock with the mempool's transaction.
    let made = cli.json(&["generateblock", &burn_addr, &json!([txid]).to_string()]);
    let hash = made["hash"].as_str().unwrap();
    assert_eq!(cli.json(&["getblock", hash, "1"])["tx"][1], txid);
    assert_eq!(cli.json(&["getrawmempool"]), json!([]));
    assert_eq!(
        cli.json(&["getrawtransaction", &txid, "1"])["confirmations"],
        1
    );

    // A zero-fee TRUC parent with its child through submitpackage, then mined.
    let parent = s.spend(
        (
            bitcoin::OutPoint::new(tx.compute_txid(), 0),
            tx.output[0].clone(),
        ),
        vec![
            out(COIN / 2, s.p2tr()),
            out(0, bitcoin::ScriptBuf::new_p2a()),
        ],
        3,
    );
    let anchor = (
        bitcoin::OutPoint::new(parent.compute_txid(), 1),
        parent.output[1].clone(),
    );
    let funding = (
        bitcoin::OutPoint::new(tx.compute_txid(), 1),
        tx.output[1].clone(),
    );
    let mut child = unsigned(
        vec![anchor.0, funding.0],
        vec![out(funding.1.value.to_sat() - 5_000, s.p2tr())],
        3,
    );
    s.sign_key_path(&mut child, 1, &[anchor.1, funding.1]);
    let package = json!([hex(&parent), hex(&child)]).to_string();
    let submitted = cli.json(&["submitpackage", &package]);
    assert_eq!(submitted["package_msg"], "success", "{submitted}");
    assert_eq!(cli.json(&["getrawmempool"]).as_array().unwrap().len(), 2);
    cli.json(&["generatetoaddress", "1", &burn_addr]);
    assert_eq!(
        cli.json(&["gettxout", &child.compute_txid().to_string(), "0"])["confirmations"],
        1
    );

    // Network, uptime, -getinfo.
    let net = cli.json(&["getnetworkinfo"]);
    assert_eq!(net["connections"], 0);
    assert!(cli.ok(&["uptime"]).parse::<u64>().is_ok());
    let getinfo = cli.ok(&["-getinfo"]);
    assert!(getinfo.contains("Chain: regtest"), "{getinfo}");
    assert!(getinfo.contains("Blocks: 103"), "{getinfo}");

    // Errors: bitcoin-cli exits with the error code and prints Core's message.
    let (code, _, err) = cli.run(&["getblockhash", "999"]);
    assert_eq!(code, 8, "{err}");
    assert_eq!(
        err,
        "error code: -8\nerror message:\nBlock height out of range"
    );
    let (code, _, err) = cli.run(&["sendrawtransaction", &hex(&child)]);
    assert_eq!(code, 27, "{err}");
    assert!(
        err.ends_with("Transaction outputs already in utxo set"),
        "{err}"
    );
    let (code, _, err) = cli.run(&["getrawtransaction", &"00".repeat(32)]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("No such mempool or blockchain transaction"),
        "{err}"
    );
    let (code, _, err) = cli.run(&["nosuchmethod"]);
    // The exit status is the code modulo 256.
    assert_eq!(code, 32601 % 256, "{err}");
    assert!(err.ends_with("Method not found"), "{err}");

    // stop: Core's words, and the server ends and removes its cookie.
    assert_eq!(cli.ok(&["stop"]), "Bitcoin Core stopping");
    h.wait().unwrap();
    assert!(!dir.path().join("regtest").join(".cookie").exists());
    let (code, _, _) = cli.run(&["getblockcount"]);
    assert_ne!(code, 0, "nothing answers after stop");
}

/// A real `bitcoind -regtest -txindex` in a temporary directory, killed when dropped.
struct Bitcoind {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Bitcoind {
    fn start(bin_dir: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(bin_dir.join("bitcoind"))
            .arg("-regtest")
            .arg(format!("-datadir={}", dir.path().display()))
            .arg(format!("-rpcport={port}"))
            .args(["-listen=0", "-txindex=1", "-server=1", "-printtoconsole=0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let cookie = dir.path().join("regtest").join(".cookie");
        for _ in 0..1200 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("bitcoind exited: {status}");
            }
            if let Ok(creds) = superscalar_chain::rpc::auth::Credentials::read_cookie(&cookie) {
                let rpc = Client::with_credentials(([127, 0, 0, 1], port).into(), &creds);
                if std::panic::catch_unwind(|| rpc.call("getblockcount", json!([])))
                    .is_ok_and(|r| r.is_ok())
                {
                    return Bitcoind { child, dir, port };
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("bitcoind did not answer within a minute");
    }

    fn client(&self) -> Client {
        let creds = superscalar_chain::rpc::auth::Credentials::read_cookie(
            &self.dir.path().join("regtest").join(".cookie"),
        )
        .unwrap();
        Client::with_credentials(([127, 0, 0, 1], self.port).into(), &creds)
    }
}

impl Drop for Bitcoind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Differences between the shapes of two answers: keys present on one side only, and leaves
/// of different JSON types.
fn shape_diff(path: &str, ours: &Value, core: &Value, out: &mut Vec<String>) {
    match (ours, core) {
        (Value::Object(a), Value::Object(b))
            if a.len() == b.len() && a.keys().chain(b.keys()).all(|k| k.len() == 64) =>
        {
            // Keyed by txid or wtxid: the keys differ between the nodes, the entries must not.
            for (i, (v, w)) in a.values().zip(b.values()).enumerate() {
                shape_diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                out.push(format!("{path}.{k}: only chaind has it"));
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}.{k}: only bitcoind has it"));
            }
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    shape_diff(&format!("{path}.{k}"), v, w, out);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                shape_diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (a, b) => {
            let kind = |v: &Value| match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            if kind(a) != kind(b) {
                out.push(format!("{path}: chaind gives {a}, bitcoind {b}"));
            }
        }
    }
}

/// One answer of the story: its name, and the result or the error code and message.
type Answer = (String, Result<Value, (i64, String)>);

/// Drive one node through the same story; the answers, by name.
fn story(rpc: &Client) -> Vec<Answer> {
    let s = Signer::new(82);
    let me = address(&s.p2tr());
    let burn_addr = address(&burn());
    let mut answers = Vec::new();
    let mut record = |name: &str, r: Result<Value, RpcErr>| {
        answers.push((name.to_string(), r.map_err(|e| (e.code, e.message))));
    };
    let blocks = rpc.ok("generatetoaddress", json!([3, me]));
    rpc.ok("generatetoaddress", json!([100, burn_addr]));
    let coin = |i: usize| {
        let b = rpc.ok("getblock", json!([blocks[i], 2]));
        let cb = &b["tx"][0];
        let txid: bitcoin::Txid = cb["txid"].as_str().unwrap().parse().unwrap();
        (
            bitcoin::OutPoint::new(txid, 0),
            out(
                (cb["vout"][0]["value"].as_f64().unwrap() * 1e8).round() as u64,
                s.p2tr(),
            ),
        )
    };
    let tx = s.spend(
        coin(0),
        vec![out(COIN / 2, s.p2tr()), out(COIN / 2 - 10_000, burn())],
        2,
    );
    let txid = tx.compute_txid().to_string();
    record(
        "testmempoolaccept",
        rpc.call("testmempoolaccept", json!([[hex(&tx)]])),
    );
    record(
        "sendrawtransaction",
        rpc.call("sendrawtransaction", json!([hex(&tx)])),
    );
    record(
        "getmempoolentry",
        rpc.call("getmempoolentry", json!([txid])),
    );
    record(
        "getrawmempool verbose",
        rpc.call("getrawmempool", json!([true])),
    );
    record(
        "getrawmempool sequence",
        rpc.call("getrawmempool", json!([false, true])),
    );
    record("getmempoolinfo", rpc.call("getmempoolinfo", json!([])));
    record("gettxout mempool", rpc.call("gettxout", json!([txid, 0])));
    record(
        "gettxspendingprevout",
        rpc.call(
            "gettxspendingprevout",
            json!([[{"txid": coin(0).0.txid.to_string(), "vout": 0}]]),
        ),
    );
    record(
        "getrawtransaction mempool 1",
        rpc.call("getrawtransaction", json!([txid, 1])),
    );
    record(
        "getrawtransaction mempool 2",
        rpc.call("getrawtransaction", json!([txid, 2])),
    );
    let parent = s.spend(
        coin(1),
        vec![out(COIN, s.p2tr()), out(0, bitcoin::ScriptBuf::new_p2a())],
        3,
    );
    let anchor = (
        bitcoin::OutPoint::new(parent.compute_txid(), 1),
        parent.output[1].clone(),
    );
    let funding = coin(2);
    let mut child = unsigned(
        vec![anchor.0, funding.0],
        vec![out(COIN - 5_000, s.p2tr())],
        3,
    );
    s.sign_key_path(&mut child, 1, &[anchor.1, funding.1]);
    record(
        "testmempoolaccept package",
        rpc.call("testmempoolaccept", json!([[hex(&parent), hex(&child)]])),
    );
    record(
        "submitpackage",
        rpc.call("submitpackage", json!([[hex(&parent), hex(&child)]])),
    );
    record(
        "submitpackage again",
        rpc.call("submitpackage", json!([[hex(&parent), hex(&child)]])),
    );
    record(
        "getmempoolentry child",
        rpc.call("getmempoolentry", json!([child.compute_txid().to_string()])),
    );
    let mined = rpc.ok("generatetoaddress", json!([1, burn_addr]));
    record("getblock 1", rpc.call("getblock", json!([mined[0], 1])));
    record("getblock 2", rpc.call("getblock", json!([mined[0], 2])));
    record("getblock 3", rpc.call("getblock", json!([mined[0], 3])));
    record(
        "getblockheader",
        rpc.call("getblockheader", json!([blocks[0]])),
    );
    record(
        "getblockchaininfo",
        rpc.call("getblockchaininfo", json!([])),
    );
    record("getnetworkinfo", rpc.call("getnetworkinfo", json!([])));
    record(
        "getrawtransaction 1",
        rpc.call("getrawtransaction", json!([txid, 1])),
    );
    record(
        "getrawtransaction 2",
        rpc.call("getrawtransaction", json!([txid, 2])),
    );
    record(
        "getrawtransaction in block",
        rpc.call("getrawtransaction", json!([txid, 2, mined[0]])),
    );
    record("gettxout", rpc.call("gettxout", json!([txid, 0])));
    record(
        "estimatesmartfee",
        rpc.call("estimatesmartfee", json!([2]))
            .map(|v| json!({"blocks": v["blocks"]})),
    );
    record(
        "generateblock",
        rpc.call("generateblock", json!([burn_addr, [], false]))
            .map(|v| json!(v.as_object().unwrap().keys().collect::<Vec<_>>())),
    );
    // Errors.
    let unknown = "00".repeat(32);
    record(
        "getblockhash out of range",
        rpc.call("getblockhash", json!([999])),
    );
    record("getblock unknown", rpc.call("getblock", json!([unknown])));
    record("getblock bad hash", rpc.call("getblock", json!(["abc"])));
    record(
        "getrawtransaction unknown",
        rpc.call("getrawtransaction", json!([unknown])),
    );
    record(
        "getmempoolentry unknown",
        rpc.call("getmempoolentry", json!([unknown])),
    );
    record(
        "sendrawtransaction garbage",
        rpc.call("sendrawtransaction", json!(["00"])),
    );
    record(
        "sendrawtransaction confirmed",
        rpc.call("sendrawtransaction", json!([hex(&child)])),
    );
    record(
        "sendrawtransaction spent",
        rpc.call("sendrawtransaction", json!([hex(&tx)])),
    );
    record(
        "testmempoolaccept spent",
        rpc.call("testmempoolaccept", json!([[hex(&tx)]])),
    );
    record(
        "testmempoolaccept confirmed",
        rpc.call("testmempoolaccept", json!([[hex(&child)]])),
    );
    record(
        "generatetoaddress bad address",
        rpc.call("generatetoaddress", json!([1, "nope"])),
    );
    record(
        "getblockhash wrong type",
        rpc.call("getblockhash", json!(["1"])),
    );
    record(
        "getblockhash unknown named",
        rpc.call("getblockhash", json!({"height": 1, "x": 2})),
    );
    record("unknown method", rpc.call("nosuchmethod", json!([])));
    answers
}

#[test]
fn chaind_and_bitcoind_answer_in_the_same_shapes() {
    let Some(cli) = bitcoin_cli() else { return };
    let core = Bitcoind::start(cli.parent().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let ours = story(&Client::new(&h));
    let theirs = story(&core.client());
    let mut diffs = Vec::new();
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
        match (a, b) {
            (Ok(a), Ok(b)) => shape_diff(name, a, b, &mut diffs),
            (Err(a), Err(b)) if a == b => {}
            (Err((ca, ma)), Err((cb, mb))) => {
                // The same code, and the same reject token (our details may say more).
                let token = |m: &str| m.split([',', '.']).next().unwrap_or("").to_string();
                if ca != cb || token(ma) != token(mb) {
                    diffs.push(format!("{name}: chaind {ca} {ma:?}, bitcoind {cb} {mb:?}"));
                }
            }
            (a, b) => diffs.push(format!("{name}: chaind {a:?}, bitcoind {b:?}")),
        }
    }
    // Values differ (hashes, times, our relay fee, our fee estimate always has data); shapes,
    // error codes and reject tokens do not.
    assert!(
        diffs.is_empty(),
        "chaind and bitcoind differ:\n{}",
        diffs.join("\n")
    );
}
