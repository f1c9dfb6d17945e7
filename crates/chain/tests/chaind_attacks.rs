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
    // Duplicate keys: the first counts, as in Core (serde_json alone would keep the last and
    // run `stop` here).
    let (status, v) = legacy(
        &rpc,
        r#"{"method":"getblockcount","method":"stop","params":[],"params":[1],"id":1,"id":2}"#,
    );
    assert_eq!(
        (status, &v),
        (200, &json!({"result": 101, "error": null, "id": 1}))
    );
    assert!(!h.stop_requested());
    let (status, v) = legacy(
        &rpc,
        r#"{"method":"getblockhash","params":{"height":1,"height":2},"id":1}"#,
    );
    assert_eq!(status, 500);
    assert_eq!(
        v["error"],
        json!({"code": -8, "message": "Parameter height specified multiple times"})
    );
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

/// The files under `dir` and their contents.
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
    let blocks_dir = dir.path().join("regtest").join("blocks");
    let stored = files(&blocks_dir);
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
    assert!(
        files(&blocks_dir) == stored,
        "refused blocks are not stored"
    );

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

#[test]
fn malformed_packages_are_refused_like_core_and_admit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(92);
    let coins = fund(&rpc, &h, &s.p2tr(), 2);
    let a = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    let a2 = s.spend(coins[0].clone(), vec![out(COIN - 2_000, s.p2tr())], 2);
    let b = s.spend(coins[1].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    let child = s.spend(prev(&a, 0), vec![out(COIN - 3_000, s.p2tr())], 2);
    let before = state(&rpc);
    let topology =
        "package topology disallowed. not child-with-parents or parents depend on each other.";
    // (package, Core's error), each checked against bitcoind 31.99.
    let refused = [
        (vec![hex(&a), hex(&b)], (-25, topology)),
        (vec![hex(&a), hex(&a)], (-25, topology)),
        (vec![hex(&child), hex(&a)], (-25, topology)),
        (
            vec![hex(&a); 26],
            (-8, "Array must contain between 1 and 25 transactions."),
        ),
    ];
    for (package, (code, message)) in refused {
        let (c, m) = rpc.err("submitpackage", json!([package]));
        assert_eq!((c, m.as_str()), (code, message), "{package:?}");
        assert_eq!(state(&rpc), before);
    }
    let (c, m) = rpc.err("testmempoolaccept", json!([vec![hex(&a); 26]]));
    assert_eq!(
        (c, m.as_str()),
        (-8, "Array must contain between 1 and 25 transactions.")
    );
    // testmempoolaccept names the package error on every transaction and judges none.
    for (package, error) in [
        (vec![hex(&a), hex(&a)], "package-contains-duplicates"),
        (vec![hex(&a), hex(&a2)], "conflict-in-package"),
        (vec![hex(&child), hex(&a)], "package-not-sorted"),
        (vec![hex(&a); 25], "package-contains-duplicates"),
    ] {
        let r = rpc.ok("testmempoolaccept", json!([package]));
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), package.len());
        for t in r {
            assert_eq!(t["package-error"], error, "{t}");
            assert!(t.get("allowed").is_none(), "{t}");
        }
        assert_eq!(state(&rpc), before);
    }
    // A package of one is judged like a single transaction (and here admitted).
    let r = rpc.ok("submitpackage", json!([[hex(&a)]]));
    assert_eq!(r["package_msg"], "success");
    assert_eq!(
        rpc.ok("getrawmempool", json!([])),
        json!([a.compute_txid().to_string()])
    );
    h.shutdown().unwrap();
}

/// A connection that reads responses one at a time, keeping what follows for the next one (for
/// pipelining and interim responses).
struct Conn {
    reader: std::io::BufReader<TcpStream>,
}

impl Conn {
    fn open(h: &superscalar_chain::rpc::server::ChaindHandle) -> Self {
        let s = TcpStream::connect(h.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Conn {
            reader: std::io::BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// One response: status, head and body (by Content-Length; none for 1xx and 204).
    fn response(&mut self) -> (u16, String, String) {
        use std::io::BufRead;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "closed in a head: {head:?}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, head, String::from_utf8(body).unwrap())
    }

    fn exchange(&mut self, bytes: &[u8]) -> (u16, String, String) {
        self.send(bytes);
        self.response()
    }
}

#[test]
fn http_oddities_are_served_or_refused_like_core() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let auth = rpc.auth.clone();
    let body = r#"{"method":"getblockcount","id":1}"#;
    let ok = r#"{"result":0,"error":null,"id":1}"#.to_string() + "\n";
    let post = |extra: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    // HTTP/1.0: answered, then closed.
    let mut s = Conn::open(&h);
    let (status, _, got) = s.exchange(
        format!(
            "POST / HTTP/1.0\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!((status, got.as_str()), (200, ok.as_str()));

    // Keep-alive with pipelining: three requests written at once, three answers in order.
    let mut s = Conn::open(&h);
    let one = post(&format!("Authorization: {auth}\r\n"), body);
    let notification = r#"{"jsonrpc":"2.0","method":"getblockcount"}"#;
    let two = post(&format!("Authorization: {auth}\r\n"), notification);
    s.send(format!("{one}{two}{one}").as_bytes());
    assert_eq!(s.response().2, ok);
    assert_eq!(s.response().0, 204);
    assert_eq!(s.response().2, ok);

    // A chunked body, and curl's `Expect: 100-continue` for bodies over 1 KiB.
    let mut s = Conn::open(&h);
    let (status, _, got) = s.exchange(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            &body[..5],
            body.len() - 5,
            &body[5..]
        )
        .as_bytes(),
    );
    assert_eq!((status, got.as_str()), (200, ok.as_str()));
    let padded = format!("{body}{}", " ".repeat(2_000));
    let mut s = Conn::open(&h);
    let (status, _, _) = s.exchange(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            padded.len()
        )
        .as_bytes(),
    );
    assert_eq!(status, 100, "the client is told to go on");
    let (status, _, got) = s.exchange(padded.as_bytes());
    assert_eq!((status, got.as_str()), (200, ok.as_str()));
    // Refused early (401) when the credentials are wrong, without reading the body.
    let mut s = Conn::open(&h);
    let (status, _, _) = s.exchange(
        b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic eDp5\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n",
    );
    assert_eq!(status, 401);

    // Authorization headers that are not the credentials: each a 401, none a crash.
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let creds = h.auth().credentials().unwrap();
    let no_colon = format!(
        "Basic {}",
        b64(format!("{}{}", creds.user, creds.password).as_bytes())
    );
    let lower = auth.replacen("Basic", "basic", 1);
    let mut non_utf8 = b"Basic ".to_vec();
    non_utf8.extend(b64(&[0xff, 0xfe, b':', 0x80]).as_bytes());
    let headers: Vec<Vec<u8>> = vec![
        b"Basic".to_vec(),
        b"Basic ".to_vec(),
        b"Basic =".to_vec(),
        no_colon.into_bytes(),
        lower.into_bytes(),
        non_utf8,
        b"Basic \xff\xfe\xfd".to_vec(),
        format!("Basic {}", "A".repeat(7_000)).into_bytes(),
        format!("Basic {}", b64(&vec![b':'; 5_000])).into_bytes(),
    ];
    for value in headers {
        let mut request =
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: ".to_vec();
        request.extend(&value);
        request.extend(format!("\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        let (status, _, _) = http_bytes(h.local_addr(), &request);
        assert_eq!(status, 401, "{}", String::from_utf8_lossy(&value));
    }
    // Whitespace around the credentials is tolerated (Core trims it).
    let (status, _, got) = http(
        h.local_addr(),
        &post(
            &format!("Connection: close\r\nAuthorization: {auth}  \r\n"),
            body,
        ),
    );
    assert_eq!((status, got.as_str()), (200, ok.as_str()));
    assert_eq!(rpc.ok("getblockcount", json!([])), 0);
    h.shutdown().unwrap();
}

#[test]
fn a_batch_of_100000_cheap_requests_is_answered_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let n = 100_000;
    let mut body = String::from("[");
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"method":"getblockcount","id":{i}}}"#));
    }
    body.push(']');
    assert!(body.len() < superscalar_chain::rpc::server::MAX_BODY_SIZE);
    let (status, got) = rpc.post(&body);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&got).unwrap();
    let replies = v.as_array().unwrap();
    assert_eq!(replies.len(), n);
    assert_eq!(
        replies[n - 1],
        json!({"result": 0, "error": null, "id": n - 1})
    );
    h.shutdown().unwrap();
}

#[test]
fn kept_alive_connections_gone_quiet_give_their_slot_back() {
    use superscalar_chain::rpc::server::ChaindConfig;
    let dir = tempfile::tempdir().unwrap();
    let h = start_with(ChaindConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        max_connections: 2,
        timeout: Duration::from_millis(300),
        ..ChaindConfig::new(dir.path())
    });
    let rpc = Client::new(&h);
    let body = r#"{"method":"getblockcount","id":1}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{body}",
        rpc.auth,
        body.len()
    );
    // Both slots: one request each, kept alive, then silence.
    let mut quiet: Vec<Conn> = (0..2).map(|_| Conn::open(&h)).collect();
    for c in &mut quiet {
        assert_eq!(c.exchange(request.as_bytes()).0, 200);
    }
    // A third client is served once the quiet ones time out.
    assert_eq!(rpc.ok("getblockcount", json!([])), 0);
    h.shutdown().unwrap();
}

#[test]
fn more_clients_than_slots_are_all_served() {
    use superscalar_chain::rpc::server::ChaindConfig;
    let dir = tempfile::tempdir().unwrap();
    let h = start_with(ChaindConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        max_connections: 4,
        ..ChaindConfig::new(dir.path())
    });
    let rpc = Client::new(&h);
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let c = Client {
                addr: rpc.addr,
                auth: rpc.auth.clone(),
            };
            std::thread::spawn(move || c.ok("getblockcount", json!([])))
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 0);
    }
    h.shutdown().unwrap();
}

#[test]
fn concurrent_stops_and_requests_during_shutdown_end_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(93);
    let coins = fund(&rpc, &h, &s.p2tr(), 1);
    let tx = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    rpc.ok("sendrawtransaction", json!([hex(&tx)]));
    let tip = rpc.ok("getbestblockhash", json!([]));
    let addr = h.local_addr();
    let auth = rpc.auth.clone();
    // Stops and other requests race; each either gets an answer or finds the door closed.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let auth = auth.clone();
            std::thread::spawn(move || {
                let body = if i % 2 == 0 {
                    r#"{"method":"stop","id":1}"#.to_string()
                } else {
                    format!(r#"{{"method":"generatetoaddress","params":[50,"{}"],"id":1}}"#, address(&burn()))
                };
                let request = format!(
                    "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return None;
                };
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                if s.write_all(request.as_bytes()).is_err() {
                    return None;
                }
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                Some(String::from_utf8_lossy(&answer).to_string())
            })
        })
        .collect();
    for r in racers {
        if let Some(answer) = r.join().unwrap() {
            assert!(
                answer.is_empty()
                    || answer.starts_with("HTTP/1.1 200")
                    || answer.starts_with("HTTP/1.1 503"),
                "{answer}"
            );
        }
    }
    h.wait().unwrap();
    // It comes back with everything it had: the chain (longer if mining won the race) and the
    // transaction (in the mempool, or mined).
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let height = rpc.ok("getblockcount", json!([])).as_u64().unwrap();
    assert!(height >= 101);
    assert_eq!(rpc.ok("getblockhash", json!([101])), tip);
    let found = rpc.ok(
        "getrawtransaction",
        json!([tx.compute_txid().to_string(), 1]),
    );
    assert_eq!(found["txid"], tx.compute_txid().to_string());
    h.shutdown().unwrap();
}
