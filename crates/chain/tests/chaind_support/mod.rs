//! A tiny JSON-RPC client and raw HTTP helpers for the `chaind` tests, and funding through RPC.
//! Test files using it also declare `mod common;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bitcoin::hex::DisplayHex;
use bitcoin::{Address, Network, OutPoint, ScriptBuf, TxOut};
use serde_json::{json, Value};
use superscalar_chain::rpc::auth::Credentials;
use superscalar_chain::rpc::server::{Chaind, ChaindConfig, ChaindHandle};
use superscalar_chain::Chain;

/// A JSON-RPC error: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcErr {
    pub code: i64,
    pub message: String,
}

/// A client of one chaind.
pub struct Client {
    pub addr: SocketAddr,
    pub auth: String,
}

impl Client {
    pub fn new(handle: &ChaindHandle) -> Self {
        let creds = handle.auth().credentials().unwrap();
        Client {
            addr: handle.local_addr(),
            auth: creds.basic_header(),
        }
    }

    pub fn with_credentials(addr: SocketAddr, creds: &Credentials) -> Self {
        Client {
            addr,
            auth: creds.basic_header(),
        }
    }

    /// POST `body` with our credentials: the HTTP status, headers and body.
    pub fn post(&self, body: &str) -> (u16, String) {
        let (status, _, body) = http(
            self.addr,
            &format!(
                "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.auth,
                body.len()
            ),
        );
        (status, body)
    }

    /// Call `method` (JSON-RPC 2.0).
    pub fn call(&self, method: &str, params: Value) -> Result<Value, RpcErr> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let (status, text) = self.post(&body.to_string());
        assert_eq!(status, 200, "{method}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(v["id"], 1);
        match v.get("error") {
            Some(e) => Err(RpcErr {
                code: e["code"].as_i64().unwrap(),
                message: e["message"].as_str().unwrap().to_string(),
            }),
            None => Ok(v["result"].clone()),
        }
    }

    /// A call that must succeed.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        self.call(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params}: {e:?}"))
    }

    /// A call that must fail: its code and message.
    pub fn err(&self, method: &str, params: Value) -> (i64, String) {
        match self.call(method, params.clone()) {
            Err(e) => (e.code, e.message),
            Ok(v) => panic!("{method} {params} succeeded: {v}"),
        }
    }
}

/// Send raw bytes, read the whole answer (the server closes or we asked it to): status,
/// head and body.
pub fn http(addr: SocketAddr, request: &str) -> (u16, String, String) {
    http_bytes(addr, request.as_bytes())
}

pub fn http_bytes(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // The server may answer (and close) before it read everything.
    let _ = s.write_all(request);
    read_response(&mut s)
}

/// Read one HTTP response (by Content-Length, or to the end).
pub fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            panic!(
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let mut body = buf[head_end + 4..].to_vec();
    match length {
        Some(n) => {
            while body.len() < n {
                let k = s.read(&mut chunk).unwrap_or(0);
                if k == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..k]);
            }
            body.truncate(n);
        }
        None if status == 204 || status == 304 => {}
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    (status, head, String::from_utf8_lossy(&body).to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Start chaind on 127.0.0.1 port 0 in `dir`.
pub fn start(dir: &Path) -> ChaindHandle {
    start_with(ChaindConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ChaindConfig::new(dir)
    })
}

pub fn start_with(config: ChaindConfig) -> ChaindHandle {
    Chaind::start(config).unwrap()
}

/// The regtest address of an output script.
pub fn address(script: &ScriptBuf) -> String {
    Address::from_script(script, Network::Regtest)
        .unwrap()
        .to_string()
}

/// Mine `n` blocks to `script` through RPC; then 100 more to a burn script so they mature.
/// Returns the coinbase coins of the first `n` blocks.
pub fn fund(
    rpc: &Client,
    handle: &ChaindHandle,
    script: &ScriptBuf,
    n: u32,
) -> Vec<(OutPoint, TxOut)> {
    let start = handle.chain().tip().unwrap().height;
    let hashes = rpc.ok("generatetoaddress", json!([n, address(script)]));
    assert_eq!(hashes.as_array().unwrap().len(), n as usize);
    rpc.ok(
        "generatetodescriptor",
        json!([
            100,
            format!(
                "raw({})",
                super::common::burn().as_bytes().to_lower_hex_string()
            )
        ]),
    );
    (start + 1..=start + n)
        .map(|h| {
            let block = handle.chain().block_at(h).unwrap().unwrap();
            let cb = &block.txdata[0];
            (OutPoint::new(cb.compute_txid(), 0), cb.output[0].clone())
        })
        .collect()
}

/// Serialized hex of a transaction.
pub fn hex(tx: &bitcoin::Transaction) -> String {
    bitcoin::consensus::encode::serialize_hex(tx)
}
