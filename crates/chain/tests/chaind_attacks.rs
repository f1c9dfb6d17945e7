//! Hostile input to `chaind`: numbers, hex and parameters at the edges, blocks and packages
//! built to be refused, resource exhaustion and HTTP oddities. Each answer is Core's (checked
//! against a real bitcoind 31.99 by hand where noted) and none changes the tip, the mempool or
//! the files of the data directory.

mod chaind_support;
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bitcoin::{OutPoint, ScriptBuf, Transaction, TxOut};
use chaind_support::*;
use common::*;
use serde_json::{json, Value};
use superscalar_chain::Chain;

const COIN: u64 = 5_000_000_000;
const REGTEST_GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";

fn prev(tx: &Transaction, vout: u32) -> (OutPoint, TxOut) {
    (
        OutPoint::new(tx.compute_txid(), vout),
        tx.output[vout as usize].clone(),
    )
}

/// Tip hash and mempool: what a refused request must leave alone.
fn state(rpc: &Client) -> (Value, Value) {
    (
        rpc.ok("getbestblockhash", json!([])),
        rpc.ok("getrawmempool", json!([])),
    )
}

/// One raw legacy (JSON-RPC 1.0) call: HTTP status and the parsed reply.
fn legacy(rpc: &Client, body: &str) -> (u16, Value) {
    let (status, text) = rpc.post(body);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{body}: {e}: {text}"));
    (status, v)
}

#[test]
fn numbers_hex_and_params_at_the_edges_answer_like_core() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(90);
    let coins = fund(&rpc, &h, &s.p2tr(), 1);
    let tx = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    rpc.ok("sendrawtransaction", json!([hex(&tx)]));
    let before = state(&rpc);
    let genesis_cb = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";
    let addr = address(&s.p2tr());
    let out_of_range = (-1, "JSON integer out of range");
    // (method, params as JSON text, expected code and message); all checked against Core.
    let cases: Vec<(&str, String, (i64, &str))> = vec![
        ("getblockhash", "[1e400]".into(), out_of_range),
        ("getblockhash", "[-1e400]".into(), out_of_range),
        ("getblockhash", "[0.5]".into(), out_of_range),
        ("getblockhash", "[1.0]".into(), out_of_range),
        ("getblockhash", "[1e2]".into(), out_of_range),
        ("getblockhash", "[1e-400]".into(), out_of_range),
        ("getblockhash", "[2147483648]".into(), out_of_range),
        ("getblockhash", "[-2147483649]".into(), out_of_range),
        ("getblockhash", "[4294967295]".into(), out_of_range),
        (
            "getblockhash",
            "[100000000000000000000000000000]".into(),
            out_of_range,
        ),
        (
            "getblockhash",
            "[-1]".into(),
            (-8, "Block height out of range"),
        ),
        (
            "getblockhash",
            "[2147483647]".into(),
            (-8, "Block height out of range"),
        ),
        (
            "getblock",
            format!(r#"["{REGTEST_GENESIS}","1"]"#),
            (
                -3,
                "JSON value of type string is not of expected type number",
            ),
        ),
        (
            "getblock",
            format!(r#"["{REGTEST_GENESIS}",1e400]"#),
            out_of_range,
        ),
        (
            "getblock",
            format!(r#"["0x{}"]"#, &REGTEST_GENESIS[2..]),
            (
                -8,
                "blockhash must be hexadecimal string (not '0x9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206')",
            ),
        ),
        (
            "getblock",
            format!(r#"[" {REGTEST_GENESIS}"]"#),
            (
                -8,
                "blockhash must be of length 64 (not 65, for ' 0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206')",
            ),
        ),
        (
            "getblock",
            format!(r#"["{}"]"#, &REGTEST_GENESIS[..63]),
            (
                -8,
                "blockhash must be of length 64 (not 63, for '0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e220')",
            ),
        ),
        (
            "getblock",
            format!(r#"["{}"]"#, "00".repeat(32)),
            (-5, "Block not found"),
        ),
        (
            "getblockheader",
            format!(r#"["{REGTEST_GENESIS}",1]"#),
            (
                -3,
                "Wrong type passed:\n{\n    \"Position 2 (verbose)\": \"JSON value of type number is not of expected type bool\"\n}",
            ),
        ),
        (
            "getrawtransaction",
            r#"["abc"]"#.into(),
            (
                -8,
                "parameter 1 must be of length 64 (not 3, for 'abc')",
            ),
        ),
        (
            "getrawtransaction",
            format!(r#"["{REGTEST_GENESIS}","1"]"#),
            (
                -3,
                "JSON value of type string is not of expected type number",
            ),
        ),
        (
            "gettxout",
            r#"["abc",0]"#.into(),
            (-8, "txid must be of length 64 (not 3, for 'abc')"),
        ),
        ("gettxout", format!(r#"["{genesis_cb}",-1]"#), out_of_range),
        (
            "sendrawtransaction",
            r#"["0"]"#.into(),
            (
                -22,
                "TX decode failed. Make sure the tx has at least one input.",
            ),
        ),
        (
            "sendrawtransaction",
            r#"[" 00"]"#.into(),
            (
                -22,
                "TX decode failed. Make sure the tx has at least one input.",
            ),
        ),
        (
            "sendrawtransaction",
            r#"["00",1e400]"#.into(),
            (
                -22,
                "TX decode failed. Make sure the tx has at least one input.",
            ),
        ),
        (
            "decoderawtransaction",
            r#"["0x00"]"#.into(),
            (-22, "TX decode failed"),
        ),
        (
            "generatetoaddress",
            format!(r#"[2147483648,"{addr}"]"#),
            out_of_range,
        ),
        (
            "generatetoaddress",
            r#"[-1,"bcrt1qxxx"]"#.into(),
            (-5, "Error: Invalid address"),
        ),
        (
            "estimatesmartfee",
            "[1e400]".into(),
            out_of_range,
        ),
        (
            "testmempoolaccept",
            "[[]]".into(),
            (-8, "Array must contain between 1 and 25 transactions."),
        ),
        (
            "submitpackage",
            "[[]]".into(),
            (-8, "Array must contain between 1 and 25 transactions."),
        ),
        (
            "generateblock",
            format!(r#"["{addr}",[],"yes"]"#),
            (
                -3,
                "Wrong type passed:\n{\n    \"Position 3 (submit)\": \"JSON value of type string is not of expected type bool\"\n}",
            ),
        ),
        (
            "generateblock",
            format!(r#"["{addr}",[1]]"#),
            (
                -3,
                "JSON value of type number is not of expected type string",
            ),
        ),
        (
            "generateblock",
            format!(r#"["{addr}",["zz"]]"#),
            (
                -22,
                "Transaction decode failed for zz. Make sure the tx has at least one input.",
            ),
        ),
        (
            "generateblock",
            format!(r#"["{addr}",["{REGTEST_GENESIS}"]]"#),
            (
                -5,
                "Transaction 0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206 not in mempool.",
            ),
        ),
    ];
    for (method, params, (code, message)) in &cases {
        let body = format!(r#"{{"method":"{method}","params":{params},"id":1}}"#);
        let (status, v) = legacy(&rpc, &body);
        assert_eq!(status, 500, "{body}: {v}");
        assert_eq!(
            (v["error"]["code"].as_i64(), v["error"]["message"].as_str()),
            (Some(*code), Some(*message)),
            "{body}"
        );
        assert_eq!(state(&rpc), before, "after {body}");
    }

    // What Core accepts at the edges.
    let ok = |method: &str, params: &str| {
        let body = format!(r#"{{"method":"{method}","params":{params},"id":1}}"#);
        let (status, v) = legacy(&rpc, &body);
        assert_eq!(status, 200, "{body}: {v}");
        v["result"].clone()
    };
    assert_eq!(ok("getblockhash", "[-0]"), REGTEST_GENESIS);
    assert_eq!(ok("getblockcount", "null"), 101);
    assert_eq!(ok("getblockcount", "{}"), 101);
    // Uppercase hex is a hash like any other; verbosity 4 is 3 (details and prevouts).
    let upper = ok(
        "getblock",
        &format!(r#"["{}"]"#, REGTEST_GENESIS.to_uppercase()),
    );
    assert_eq!(upper["hash"], REGTEST_GENESIS);
    let v4 = ok("getblock", &format!(r#"["{REGTEST_GENESIS}",4]"#));
    assert_eq!(v4, ok("getblock", &format!(r#"["{REGTEST_GENESIS}",3]"#)));
    assert_eq!(
        ok("getblock", &format!(r#"["{REGTEST_GENESIS}",-5]"#)),
        ok("getblock", &format!(r#"["{REGTEST_GENESIS}",0]"#))
    );
    assert_eq!(
        ok("gettxout", &format!(r#"["{genesis_cb}",4294967295]"#)),
        Value::Null
    );
    assert_eq!(
        ok("generatetoaddress", &format!(r#"[-1,"{addr}"]"#)),
        json!([])
    );
    assert_eq!(state(&rpc), before);
    h.shutdown().unwrap();
}

/// Files of the network directory and their contents (the cookie aside, which the test reads).
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn generateblock_refuses_duplicates_conflicts_and_coinbases_like_core_and_mines_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(91);
    let coins = fund(&rpc, &h, &s.p2tr(), 1);
    let a = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    let b = s.spend(coins[0].clone(), vec![out(COIN - 2_000, s.p2tr())], 2);
    let before = state(&rpc);
    let addr = address(&burn());
    let missing = |tx: &Transaction| {
        format!(
            "TestBlockValidity failed: bad-txns-inputs-missingorspent, CheckTxInputs: inputs missing/spent in transaction {}",
            tx.compute_txid()
        )
    };
    // A coinbase-shaped transaction (null prevout) among the block's transactions.
    let mut cb_like = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(vec![0x51, 0x51]),
            sequence: bitcoin::Sequence::MAX,
            witness: bitcoin::Witness::new(),
        }],
        output: vec![out(1_000, burn())],
    };
    cb_like.output[0].value = bitcoin::Amount::from_sat(1_000);
    for submit in [true, false] {
        // (transactions, Core's message): each checked against bitcoind 31.99.
        let cases = [
            (vec![hex(&a), hex(&a)], missing(&a)),
            (vec![hex(&a), hex(&b)], missing(&b)),
            (
                vec![hex(&cb_like)],
                "TestBlockValidity failed: bad-cb-multiple, more than one coinbase".to_string(),
            ),
        ];
        for (txs, message) in cases {
            let (code, got) = rpc.err("generateblock", json!([addr, txs, submit]));
            assert_eq!(
                (code, got.as_str()),
                (-25, message.as_str()),
                "submit={submit}"
            );
            assert_eq!(state(&rpc), before);
        }
    }
    // A transaction in the mempool named by txid and given in full: the same transaction twice.
    rpc.ok("sendrawtransaction", json!([hex(&a)]));
    let before = state(&rpc);
    let (code, got) = rpc.err(
        "generateblock",
        json!([addr, [a.compute_txid().to_string(), hex(&a)]]),
    );
    assert_eq!((code, got), (-25, missing(&a)));
    assert_eq!(state(&rpc), before);
    // Core's mempool refuses a coinbase with reject reason "coinbase".
    let (code, got) = rpc.err("sendrawtransaction", json!([hex(&cb_like)]));
    assert_eq!((code, got.as_str()), (-26, "coinbase"));
    let r = rpc.ok("testmempoolaccept", json!([[hex(&cb_like)]]));
    assert_eq!(r[0]["reject-reason"], "coinbase");
    assert_eq!(state(&rpc), before);
    h.shutdown().unwrap();
}
