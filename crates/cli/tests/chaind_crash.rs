//! `superscalar chaind` killed with SIGKILL (no clean stop: no mempool saved, a stale cookie left
//! behind) comes back: while mining, with a consistent tip no higher than what it mined; with a
//! torn or foreign `mempool.dat`, with an empty mempool and a message, not a refusal to start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use bitcoin::{
    absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use serde_json::{json, Value};
use superscalar_chain::rpc::auth::Credentials;

/// A running `superscalar chaind`.
struct Running {
    child: Child,
    addr: SocketAddr,
    cookie: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(datadir: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_superscalar"))
        .args(["chaind", "--rpc-bind", "127.0.0.1:0", "--datadir"])
        .arg(datadir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let Some(addr) = line.trim().strip_prefix("chaind listening on ") else {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("chaind did not start: {line:?} {err}");
    };
    let addr = addr.parse().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let cookie = PathBuf::from(line.trim().strip_prefix("chaind cookie at ").unwrap());
    Running {
        child,
        addr,
        cookie,
    }
}

/// A JSON-RPC call: the result (the call must succeed).
fn call(addr: SocketAddr, cookie: &Path, method: &str, params: Value) -> Value {
    let auth = Credentials::read_cookie(cookie).unwrap().basic_header();
    let body = json!({"method": method, "params": params, "id": 1}).to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method}: {reply:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{method}: {head} {body}");
    let v: Value = serde_json::from_str(body).unwrap();
    v["result"].clone()
}

impl Running {
    fn call(&self, method: &str, params: Value) -> Value {
        call(self.addr, &self.cookie, method, params)
    }

    /// Kill with SIGKILL: nothing is saved or cleaned up.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stderr_after_stop(mut self) -> String {
        assert_eq!(self.call("stop", json!([])), "Bitcoin Core stopping");
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "{status:?}: {err}");
        err
    }
}

/// P2WSH of OP_TRUE: anyone can spend it, with the witness `[OP_TRUE]`.
const ADDRESS: &str = "bcrt1qft5p2uhsdcdc3l2ua4ap5qqfg4pjaqlp250x7us7a8qqhrxrxfsqseac85";

/// A transaction spending output 0 of `coinbase` (paid to [`ADDRESS`]) back to it, with a fee.
fn spend_op_true(coinbase: &Transaction) -> Transaction {
    let op_true = ScriptBuf::from_bytes(vec![0x51]);
    assert_eq!(
        coinbase.output[0].script_pubkey,
        ScriptBuf::new_p2wsh(&op_true.wscript_hash())
    );
    let mut witness = Witness::new();
    witness.push(op_true.as_bytes());
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(coinbase.compute_txid(), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness,
        }],
        output: vec![TxOut {
            value: coinbase.output[0].value - Amount::from_sat(10_000),
            script_pubkey: coinbase.output[0].script_pubkey.clone(),
        }],
    }
}

fn tx_len(tx: &Transaction) -> usize {
    bitcoin::consensus::encode::serialize(tx).len()
}

fn coinbase_at(r: &Running, height: u64) -> Transaction {
    let hash = r.call("getblockhash", json!([height]));
    let hex = r.call("getblock", json!([hash, 0]));
    let block: bitcoin::Block =
        bitcoin::consensus::encode::deserialize_hex(hex.as_str().unwrap()).unwrap();
    block.txdata[0].clone()
}

/// The chain as the node reports it is consistent: every height's block links to the one below,
/// and the tip is the block at the height getblockcount says.
fn check_chain(r: &Running) -> u64 {
    let height = r.call("getblockcount", json!([])).as_u64().unwrap();
    let tip = r.call("getbestblockhash", json!([]));
    assert_eq!(r.call("getblockhash", json!([height])), tip);
    let mut below = r.call("getblockhash", json!([0]));
    for h in 1..=height {
        let hash = r.call("getblockhash", json!([h]));
        let header = r.call("getblockheader", json!([hash, true]));
        assert_eq!(header["height"], h);
        assert_eq!(header["previousblockhash"], below, "height {h}");
        below = hash;
    }
    height
}

#[test]
fn killed_while_mining_it_restarts_on_a_consistent_chain() {
    let dir = tempfile::tempdir().unwrap();
    let r = spawn(dir.path());
    let (addr, cookie) = (r.addr, r.cookie.clone());
    // Mine in the background; kill once some blocks are in.
    let miner = std::thread::spawn(move || {
        let body = json!({"method": "generatetoaddress", "params": [3000, ADDRESS], "id": 1});
        let auth = Credentials::read_cookie(&cookie).unwrap().basic_header();
        let body = body.to_string();
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    let mined_before_kill = loop {
        let n = r.call("getblockcount", json!([])).as_u64().unwrap();
        if n >= 300 {
            break n;
        }
    };
    r.kill();
    miner.join().unwrap();
    let stale_cookie = dir.path().join("regtest").join(".cookie");
    assert!(stale_cookie.exists(), "SIGKILL leaves the cookie behind");

    // Blocks not yet flushed are lost, as with Core (a real bitcoind killed so after mining 300
    // regtest blocks comes back at height 0): the tip is the last one flushed, and the chain
    // below it whole.
    let r = spawn(dir.path());
    let height = check_chain(&r);
    assert!(height <= mined_before_kill.max(3000), "{height}");
    // And it goes on.
    let more = r.call("generatetoaddress", json!([2, ADDRESS]));
    assert_eq!(more.as_array().unwrap().len(), 2);
    assert_eq!(
        r.call("getblockcount", json!([])).as_u64().unwrap(),
        height + 2
    );
    let err = r.stderr_after_stop();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_torn_or_foreign_mempool_file_is_ignored_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("regtest");
    // A chain and a mempool file saved by a clean stop, with one transaction.
    let r = spawn(dir.path());
    r.call("generatetoaddress", json!([101, ADDRESS]));
    let tx = spend_op_true(&coinbase_at(&r, 1));
    let txid = r.call(
        "sendrawtransaction",
        json!([bitcoin::consensus::encode::serialize_hex(&tx)]),
    );
    assert_eq!(txid, tx.compute_txid().to_string());
    let _ = r.stderr_after_stop();
    let saved = std::fs::read(net.join("mempool.dat")).unwrap();
    // It comes back from a clean stop.
    let r = spawn(dir.path());
    assert_eq!(r.call("getrawmempool", json!([])), json!([txid]));
    let _ = r.stderr_after_stop();
    let mut magic_and_huge_count = saved[..saved.len() - tx_len(&tx) - 1].to_vec();
    magic_and_huge_count.extend([0xff; 9]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"\x00\x01 not a mempool".to_vec()),
        (
            "Core's own format",
            vec![2, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0],
        ),
        ("torn", saved[..saved.len() - 7].to_vec()),
        ("trailing bytes", [saved.as_slice(), &[1, 2, 3]].concat()),
        ("an absurd count", magic_and_huge_count),
    ];
    for (what, bytes) in cases {
        std::fs::write(net.join("mempool.dat"), &bytes).unwrap();
        // A save that never finished, left beside it.
        std::fs::write(net.join("mempool.dat.new"), &bytes[..bytes.len() / 2]).unwrap();
        let r = spawn(dir.path());
        assert_eq!(r.call("getblockcount", json!([])), 101, "{what}");
        assert_eq!(r.call("getrawmempool", json!([])), json!([]), "{what}");
        // The transaction can be sent again: nothing of it half-loaded.
        r.call(
            "sendrawtransaction",
            json!([bitcoin::consensus::encode::serialize_hex(&tx)]),
        );
        let err = r.stderr_after_stop();
        assert!(
            err.contains("mempool.dat") && err.contains("ignored"),
            "{what}: no message: {err:?}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
}
