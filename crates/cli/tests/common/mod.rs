//! What the multi-process tests share: the `superscalar` binary started as child processes
//! (killed when dropped), `chaind`, the LSP, and calls to the daemons' control API through the
//! CLI.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use superscalar_chain::rpc::auth::Auth;
use superscalar_chain::BitcoindRpc;

pub const BIN: &str = env!("CARGO_BIN_EXE_superscalar");
/// The seed passphrase of every daemon started without `--no-passphrase`.
pub const PASSPHRASE: &str = "correct horse battery staple";

/// A child process killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Waits for the process to exit by itself (after `stop`).
    #[allow(dead_code)]
    pub fn wait(mut self) {
        let _ = self.child.wait();
    }

    pub fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `args` and returns it with its first stdout line (its "ready" line).
pub fn start(name: &str, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info,ldk=warn")
        .env("SUPERSCALAR_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        !line.is_empty(),
        "{name} printed nothing: did it fail to start?"
    );
    // Keep draining stdout so that the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    (Proc { child }, line.trim().to_owned())
}

pub struct Chaind {
    _proc: Proc,
    /// Its RPC URL.
    pub url: String,
    /// Its cookie file.
    pub cookie: PathBuf,
    /// A client of its RPC.
    pub rpc: BitcoindRpc,
}

pub fn chaind(dir: &Path) -> Chaind {
    let mut child = Command::new(BIN)
        .args([
            "chaind",
            "--rpc-bind",
            "127.0.0.1:0",
            "--rpc-max-connections",
            "256",
            "--datadir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("chaind listening on ")
        .unwrap()
        .parse()
        .unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let cookie = PathBuf::from(line.trim().strip_prefix("chaind cookie at ").unwrap());
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stdout.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let url = format!("http://{addr}/");
    let rpc = BitcoindRpc::connect(url.clone(), Auth::CookieFile(cookie.clone())).unwrap();
    Chaind {
        _proc: Proc { child },
        url,
        cookie,
        rpc,
    }
}

impl Chaind {
    pub fn mine(&self, n: u32, address: &str) {
        self.rpc
            .call("generatetoaddress", &[json!(n), json!(address)])
            .unwrap();
    }
}

/// `superscalar <role> <verb> --datadir D --api A --json`, parsed.
pub fn cli(role: &str, verb: &str, datadir: &Path, api: &str) -> Result<Value, String> {
    let out = Command::new(BIN)
        .args([role, verb, "--json", "--api", api, "--datadir"])
        .arg(datadir)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// `superscalar <role> <verb> ARGS.. --datadir D --api A --json`, parsed.
pub fn cli_with(role: &str, verb: &str, n: &Node, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(BIN)
        .args([role, verb])
        .args(args)
        .args(["--json", "--api", &n.api, "--datadir"])
        .arg(&n.datadir)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub struct Node {
    /// The process, until stopped or killed.
    pub proc: Option<Proc>,
    /// Its data directory.
    pub datadir: PathBuf,
    /// Its control API address.
    pub api: String,
    /// Its node id.
    pub id: String,
}

pub fn lsp(
    dir: &Path,
    chain: &Chaind,
    listen: &str,
    min_clients: usize,
    extra: &[&str],
) -> (Node, String) {
    let datadir = dir.join("lsp");
    let min_clients = min_clients.to_string();
    let mut args = vec![
        "lsp",
        "run",
        "--datadir",
        datadir.to_str().unwrap(),
        "--listen",
        listen,
        "--api",
        "127.0.0.1:0",
        "--chain-rpc",
        &chain.url,
        "--chain-cookie",
        chain.cookie.to_str().unwrap(),
        "--min-clients",
        &min_clients,
        "--round-timeout",
        "5",
    ];
    args.extend(extra);
    let (proc, line) = start("lsp", &args);
    // "lsp ID@LISTEN api API"
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("lsp"), "{line}");
    let uri = parts.next().unwrap().to_owned();
    assert_eq!(parts.next(), Some("api"));
    let api = parts.next().unwrap().to_owned();
    let id = uri.split('@').next().unwrap().to_owned();
    (
        Node {
            proc: Some(proc),
            datadir,
            api,
            id,
        },
        uri,
    )
}

pub fn client(dir: &Path, i: usize, chain: &Chaind, lsp_uri: &str, extra: &[&str]) -> Node {
    let capacity = (100_000 + 1_000 * i as u64).to_string();
    let mut all = vec!["--capacity-sat", &capacity];
    all.extend(extra);
    client_in(&dir.join(format!("client{i}")), chain, lsp_uri, &all)
}

pub fn client_in(datadir: &Path, chain: &Chaind, lsp_uri: &str, extra: &[&str]) -> Node {
    let datadir = datadir.to_path_buf();
    let mut args = vec![
        "client",
        "run",
        "--datadir",
        datadir.to_str().unwrap(),
        "--lsp",
        lsp_uri,
        "--api",
        "127.0.0.1:0",
        "--chain-rpc",
        &chain.url,
        "--chain-cookie",
        chain.cookie.to_str().unwrap(),
    ];
    args.extend(extra);
    let (proc, line) = start("client", &args);
    // "client ID api API"
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"client"), "{line}");
    Node {
        proc: Some(proc),
        datadir,
        api: parts[3].to_owned(),
        id: parts[1].to_owned(),
    }
}

pub fn status(role: &str, n: &Node) -> Value {
    cli(role, "status", &n.datadir, &n.api).unwrap()
}

pub fn factory_status(c: &Node) -> Option<String> {
    status("client", c)["factory"]["status"]
        .as_str()
        .map(str::to_owned)
}

pub fn cli_factory(lsp: &Node, id: &str) -> Value {
    let out = Command::new(BIN)
        .args([
            "lsp",
            "factory",
            id,
            "--json",
            "--api",
            &lsp.api,
            "--datadir",
        ])
        .arg(&lsp.datadir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The members' node ids in `lsp factory`'s answer.
pub fn members(detail: &Value) -> Vec<String> {
    detail["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// Every secret a node's seed yields that must never be found in a file: the seed, the node,
/// wallet, factory and stock secrets, and its leaf channels' base secrets.
#[allow(dead_code)]
pub fn secrets_of(datadir: &Path) -> Vec<(String, Vec<u8>)> {
    use superscalar_store::{load_seed_file, KeyIndex, NodeKeys};
    let seed = load_seed_file(datadir, bitcoin::Network::Regtest, Some(PASSPHRASE)).unwrap();
    let keys = NodeKeys::new(&seed, bitcoin::Network::Regtest).unwrap();
    let mut out = vec![
        ("seed entropy".into(), seed.entropy().to_vec()),
        ("BIP-39 seed".into(), seed.bip39_seed().to_vec()),
        (
            "node secret".into(),
            keys.node_secret().unwrap().secret_bytes().to_vec(),
        ),
        ("wallet seed".into(), keys.wallet_seed().unwrap().to_vec()),
    ];
    for i in 0..6 {
        let index = KeyIndex::new(i).unwrap();
        out.push((
            format!("factory key {i}"),
            keys.factory_key(index).unwrap().secret_bytes().to_vec(),
        ));
        out.push((
            format!("stock seed {i}"),
            keys.stock_revocation_seed(index).unwrap().to_vec(),
        ));
        for client in 0..40 {
            let s = keys.leaf_channel_secrets(index, client).unwrap();
            for (what, bytes) in [
                ("payment", s.payment.secret_bytes()),
                ("delayed payment", s.delayed_payment.secret_bytes()),
                ("htlc", s.htlc.secret_bytes()),
                ("revocation", s.revocation.secret_bytes()),
                ("commitment seed", s.seed),
            ] {
                out.push((
                    format!("channel {what} secret {i}/{client}"),
                    bytes.to_vec(),
                ));
            }
        }
    }
    out
}

/// Fails if any file under `dir` holds one of `secrets`, raw or in hex (every secret is
/// checked by its first 32 bytes, in one pass over each file).
#[allow(dead_code)]
pub fn assert_no_secret_in(dir: &Path, secrets: &[(String, Vec<u8>)]) {
    use std::collections::HashMap;
    let by_bytes: HashMap<&[u8], &str> = secrets
        .iter()
        .filter(|(_, s)| s.len() >= 32)
        .map(|(what, s)| (&s[..32], what.as_str()))
        .collect();
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for w in bytes.windows(32) {
                if let Some(what) = by_bytes.get(w) {
                    panic!("{what} found raw in {}", path.display());
                }
            }
            // Hex, either case: every run of 64 hex digits decoded.
            let hex: Vec<u8> = bytes.iter().map(|b| b.to_ascii_lowercase()).collect();
            let digit = |b: u8| match b {
                b'0'..=b'9' => Some(b - b'0'),
                b'a'..=b'f' => Some(b - b'a' + 10),
                _ => None,
            };
            for start in 0..hex.len().saturating_sub(63) {
                let window = &hex[start..start + 64];
                let decoded: Option<Vec<u8>> = window
                    .chunks(2)
                    .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
                    .collect();
                if let Some(d) = decoded {
                    if let Some(what) = by_bytes.get(&d[..]) {
                        panic!("{what} found in hex in {}", path.display());
                    }
                }
            }
        }
    }
    assert!(files >= 3, "scanned {files} files in {}", dir.display());
}

/// `client balance`.
pub fn balance(c: &Node) -> Value {
    cli("client", "balance", &c.datadir, &c.api).unwrap()
}

/// A client's balance over its channels (msat).
pub fn balance_msat(c: &Node) -> u64 {
    balance(c)["balance_msat"].as_u64().unwrap()
}

/// `client invoice --amount-msat N`: the BOLT-11 text.
pub fn invoice(c: &Node, amount_msat: u64) -> String {
    let amount = amount_msat.to_string();
    cli_with("client", "invoice", c, &["--amount-msat", &amount]).unwrap()["invoice"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A factory of `n` clients, live with every channel ready.
pub struct LiveFactory {
    pub lsp: Node,
    /// The LSP's `NODE_ID@ADDR`.
    pub uri: String,
    /// Where blocks are mined (the LSP's wallet).
    pub address: String,
    /// The factory's id (hex).
    pub factory: String,
    /// The clients, in the order they were started.
    pub clients: Vec<Node>,
}

/// Starts an LSP (`lsp_args`) funded by 110 blocks and `n` clients (`client_args`), and waits
/// until their factory is live and every channel ready.
pub fn live_factory(
    dir: &Path,
    chain: &Chaind,
    n: usize,
    lsp_args: &[&str],
    client_args: &[&str],
) -> LiveFactory {
    let (lsp, uri) = lsp(dir, chain, "127.0.0.1:0", n, lsp_args);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let clients: Vec<Node> = (0..n)
        .map(|i| client(dir, i, chain, &uri, client_args))
        .collect();
    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in &clients {
        wait_for("channel ready", Duration::from_secs(90), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    let factory = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    LiveFactory {
        lsp,
        uri,
        address,
        factory,
        clients,
    }
}

/// Stops a client through its API and waits for its process to end; its data directory stays.
pub fn stop_client(c: Node) -> PathBuf {
    cli("client", "stop", &c.datadir, &c.api).unwrap();
    let mut proc = c.proc;
    if let Some(p) = proc.take() {
        p.wait();
    }
    c.datadir
}

/// The chain's height.
pub fn tip(chain: &Chaind) -> u64 {
    chain
        .rpc
        .call("getblockcount", &[])
        .unwrap()
        .as_u64()
        .unwrap()
}

/// The height at which transaction `txid` confirmed.
pub fn confirmed_at(chain: &Chaind, txid: &str) -> u64 {
    let tx = chain
        .rpc
        .call(
            "getrawtransaction",
            &[serde_json::json!(txid), serde_json::json!(true)],
        )
        .unwrap();
    let confirmations = tx["confirmations"].as_u64().unwrap_or(0);
    assert!(confirmations > 0, "{txid} is not confirmed");
    tip(chain) + 1 - confirmations
}
