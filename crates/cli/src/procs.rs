//! Daemons as child processes of the `superscalar` binary (the networked demo and the
//! benchmarks over loopback): started from the running executable, driven through their control
//! API, and never left behind (SIGKILLed when dropped).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Amount, Transaction, Txid};
use serde_json::{json, Value};
use superscalar_api::{ApiClient, COOKIE_FILE};
use superscalar_chain::rpc::auth::Auth;
use superscalar_chain::BitcoindRpc;

/// Errors of the process helpers.
pub type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A child process, SIGKILLed when dropped (the demo never leaves one behind).
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Waits up to 10 s for the process to exit by itself (after `stop`), then kills it.
    pub fn wait_or_kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A daemon: its process, its data directory and its API.
pub struct Daemon {
    /// Its process.
    pub proc: Proc,
    /// Its control API.
    pub api: ApiClient,
    /// Its node id.
    pub id: String,
}

impl Daemon {
    /// Calls `method` of its API.
    pub fn call(&self, method: &str, params: Value) -> DemoResult<Value> {
        Ok(self.api.call(method, params)?)
    }
}

/// Starts `superscalar ARGS` and returns it with the first line it prints (its ready line).
pub fn spawn(log: &Path, args: &[&str]) -> DemoResult<(Proc, String)> {
    let exe = std::env::current_exe()?;
    let stderr = std::fs::File::create(log)?;
    let mut child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    let mut rest = Vec::new();
    if line.starts_with("chaind") {
        let mut second = String::new();
        out.read_line(&mut second)?;
        rest.push(second);
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    if line.is_empty() {
        let _ = child.kill();
        return Err(format!(
            "`superscalar {}` did not start: see {}",
            args.join(" "),
            log.display()
        )
        .into());
    }
    let mut text = line.trim_end().to_owned();
    for r in rest {
        text.push('\n');
        text.push_str(r.trim_end());
    }
    Ok((Proc { child: Some(child) }, text))
}

/// What the demo needs of the chain.
pub struct ChainNode {
    _proc: Proc,
    /// Its JSON-RPC.
    pub rpc: BitcoindRpc,
    /// Its URL.
    pub url: String,
    /// Its cookie file.
    pub cookie: PathBuf,
    /// Where mined coins go.
    pub address: String,
}

impl ChainNode {
    /// Mines `n` blocks to `address`.
    pub fn mine(&self, n: u32) -> DemoResult<()> {
        self.rpc
            .call("generatetoaddress", &[json!(n), json!(self.address)])?;
        Ok(())
    }

    /// The chain's height.
    pub fn height(&self) -> DemoResult<u64> {
        Ok(self
            .rpc
            .call("getblockcount", &[])?
            .as_u64()
            .ok_or("getblockcount")?)
    }

    /// The txids of the block at `height`, the coinbase first.
    pub fn block_txids(&self, height: u64) -> DemoResult<Vec<String>> {
        let hash = self.rpc.call("getblockhash", &[json!(height)])?;
        let block = self.rpc.call("getblock", &[hash, json!(1)])?;
        Ok(block["tx"]
            .as_array()
            .ok_or("getblock")?
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect())
    }

    /// A transaction by txid (confirmed or in the mempool).
    pub fn tx(&self, txid: &Txid) -> DemoResult<Transaction> {
        let hex = self
            .rpc
            .call("getrawtransaction", &[json!(txid.to_string())])?;
        Ok(deserialize_hex(hex.as_str().ok_or("getrawtransaction")?)?)
    }

    /// The fee of a transaction: its inputs' values (from their transactions) less its outputs.
    pub fn fee(&self, tx: &Transaction) -> DemoResult<Amount> {
        let mut input = Amount::ZERO;
        for i in &tx.input {
            let prev = self.tx(&i.previous_output.txid)?;
            input += prev
                .output
                .get(i.previous_output.vout as usize)
                .ok_or("missing prevout")?
                .value;
        }
        let output: Amount = tx.output.iter().map(|o| o.value).sum();
        Ok(input.checked_sub(output).unwrap_or(Amount::ZERO))
    }
}

/// Polls `f` until it holds, or fails after `timeout`.
pub fn wait(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> DemoResult<bool>,
) -> DemoResult<()> {
    let start = Instant::now();
    loop {
        if f().unwrap_or(false) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn daemon_api(datadir: &Path, api: &str) -> ApiClient {
    ApiClient::new(format!("http://{api}/"), datadir.join(COOKIE_FILE))
}

/// Starts an LSP in `dir/lsp` forming factories of exactly `clients`.
pub fn start_lsp(
    dir: &Path,
    chain: &ChainNode,
    listen: &str,
    clients: usize,
) -> DemoResult<(Daemon, String)> {
    let datadir = dir.join("lsp");
    let min = clients.to_string();
    let (proc, line) = spawn(
        &dir.join("lsp.stderr.log"),
        &[
            "lsp",
            "run",
            "--datadir",
            path_str(&datadir)?,
            "--listen",
            listen,
            "--api",
            "127.0.0.1:0",
            "--chain-rpc",
            &chain.url,
            "--chain-cookie",
            path_str(&chain.cookie)?,
            "--min-clients",
            &min,
            "--max-clients",
            &min,
            "--round-timeout",
            "20",
            "--no-passphrase",
            // The demo's first factory ends with its clients paid at T (its summary shows what
            // that costs the LSP); `tests/reclaim.rs` runs the LSP that takes it on chain first.
            "--no-reclaim",
        ],
    )?;
    // "lsp ID@LISTEN api API"
    let parts: Vec<&str> = line.split_whitespace().collect();
    if parts.len() < 4 || parts[0] != "lsp" {
        return Err(format!("unexpected LSP ready line {line:?}").into());
    }
    let uri = parts[1].to_owned();
    let api = daemon_api(&datadir, parts[3]);
    let id = uri.split('@').next().unwrap_or_default().to_owned();
    Ok((Daemon { proc, api, id }, uri))
}

/// Starts client `i` in `dir/client<i>`.
pub fn start_client(dir: &Path, i: usize, chain: &ChainNode, lsp: &str) -> DemoResult<Daemon> {
    start_client_with(dir, i, chain, lsp, 200_000)
}

/// Starts client `i` in `dir/client<i>`, asking for a channel of `capacity_sat`.
pub fn start_client_with(
    dir: &Path,
    i: usize,
    chain: &ChainNode,
    lsp: &str,
    capacity_sat: u64,
) -> DemoResult<Daemon> {
    let capacity = capacity_sat.to_string();
    let datadir = dir.join(format!("client{i}"));
    let (proc, line) = spawn(
        &dir.join(format!("client{i}.stderr.log")),
        &[
            "client",
            "run",
            "--datadir",
            path_str(&datadir)?,
            "--lsp",
            lsp,
            "--api",
            "127.0.0.1:0",
            "--chain-rpc",
            &chain.url,
            "--chain-cookie",
            path_str(&chain.cookie)?,
            "--capacity-sat",
            &capacity,
            "--no-passphrase",
        ],
    )?;
    // "client ID api API"
    let parts: Vec<&str> = line.split_whitespace().collect();
    if parts.len() < 4 || parts[0] != "client" {
        return Err(format!("unexpected client ready line {line:?}").into());
    }
    Ok(Daemon {
        proc,
        api: daemon_api(&datadir, parts[3]),
        id: parts[1].to_owned(),
    })
}

/// A path as UTF-8.
pub fn path_str(p: &Path) -> DemoResult<&str> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()).into())
}

/// Asks every daemon to stop, then waits for each (killing what does not stop in 10 s).
pub fn stop_all<'a>(daemons: impl IntoIterator<Item = &'a mut Daemon>) {
    let mut all: Vec<&mut Daemon> = daemons.into_iter().collect();
    for d in all.iter() {
        let _ = d.call("stop", json!({}));
    }
    for d in all.iter_mut() {
        d.proc.wait_or_kill();
    }
}

/// Starts `chaind` in `dir/chain`.
pub fn start_chaind(dir: &Path) -> DemoResult<ChainNode> {
    let (chain_proc, lines) = spawn(
        &dir.join("chaind.stderr.log"),
        &[
            "chaind",
            "--rpc-bind",
            "127.0.0.1:0",
            "--datadir",
            path_str(&dir.join("chain"))?,
        ],
    )?;
    let mut lines = lines.lines();
    let addr = lines
        .next()
        .and_then(|l| l.strip_prefix("chaind listening on "))
        .ok_or("chaind's first line")?
        .trim()
        .to_owned();
    let cookie = PathBuf::from(
        lines
            .next()
            .and_then(|l| l.strip_prefix("chaind cookie at "))
            .ok_or("chaind's second line")?
            .trim(),
    );
    let url = format!("http://{addr}/");
    let rpc = BitcoindRpc::connect(url.clone(), Auth::CookieFile(cookie.clone()))?;
    Ok(ChainNode {
        _proc: chain_proc,
        rpc,
        url,
        cookie,
        address: String::new(),
    })
}
