//! [`BitcoindProcess`]: a real `bitcoind -regtest` for tests, in its own temporary data directory
//! and on its own port, stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::ChainError;
use crate::policy::PolicyConfig;
use crate::rpc::auth::{Auth, COOKIE_FILE};
use crate::rpc::client::{BitcoindRpc, CallError};
use crate::rpc::codes::RPC_IN_WARMUP;

/// Environment variable naming the directory that holds `bitcoind` and `bitcoin-cli` (what
/// `scripts/bitcoind.sh` prints).
pub const BITCOIND_BIN_ENV: &str = "SUPERSCALAR_BITCOIND_BIN";
/// Environment variable that turns a missing bitcoind into a test failure instead of a skip.
pub const REQUIRE_BITCOIND_ENV: &str = "SUPERSCALAR_REQUIRE_BITCOIND";

/// The directory with the real binaries, or `None` (printing why) when tests should skip.
///
/// Panics when [`REQUIRE_BITCOIND_ENV`] is set and the binaries are missing, so that the
/// real-bitcoind suite cannot pass by skipping.
pub fn bitcoind_bin_dir() -> Option<PathBuf> {
    let required = std::env::var_os(REQUIRE_BITCOIND_ENV).is_some_and(|v| v != "0");
    match std::env::var_os(BITCOIND_BIN_ENV).map(PathBuf::from) {
        Some(dir) if dir.join("bitcoind").is_file() => Some(dir),
        Some(dir) => {
            assert!(!required, "{} has no bitcoind", dir.display());
            eprintln!("skipped: {} has no bitcoind", dir.display());
            None
        }
        None => {
            assert!(!required, "{BITCOIND_BIN_ENV} not set");
            eprintln!("skipped: {BITCOIND_BIN_ENV} not set");
            None
        }
    }
}

/// A `bitcoind -regtest` started for a test.
pub struct BitcoindProcess {
    child: Child,
    datadir: tempfile::TempDir,
    rpc_port: u16,
    bin_dir: PathBuf,
}

impl std::fmt::Debug for BitcoindProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitcoindProcess")
            .field("datadir", &self.datadir.path())
            .field("rpc_port", &self.rpc_port)
            .finish_non_exhaustive()
    }
}

fn free_port() -> Result<u16, ChainError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ChainError::Storage(format!("no free port: {e}")))
}

/// Core's `-option=value` for a fee rate, in BTC/kvB.
fn btc_per_kvb(rate: bitcoin::FeeRate) -> String {
    let sat_per_kvb = rate.to_sat_per_kwu() * 4;
    format!(
        "{}.{:08}",
        sat_per_kvb / 100_000_000,
        sat_per_kvb % 100_000_000
    )
}

impl BitcoindProcess {
    /// Start `bitcoind -regtest` from `bin_dir` with the relay policy of [`PolicyConfig`]'s
    /// defaults (standardness enforced, the same minimum relay and dust fee rates) and a
    /// transaction index, and wait until its RPC answers.
    pub fn start(bin_dir: &Path) -> Result<Self, ChainError> {
        Self::start_with(bin_dir, &[])
    }

    /// [`Self::start`] with extra command-line arguments.
    pub fn start_with(bin_dir: &Path, extra: &[&str]) -> Result<Self, ChainError> {
        let policy = PolicyConfig::default();
        let mut last_error = None;
        // A port picked free can be taken before bitcoind binds it: try a few.
        for _ in 0..3 {
            let datadir = tempfile::tempdir().map_err(|e| ChainError::Storage(e.to_string()))?;
            let rpc_port = free_port()?;
            let child = Command::new(bin_dir.join("bitcoind"))
                .arg("-regtest")
                .arg(format!("-datadir={}", datadir.path().display()))
                .arg(format!("-rpcport={rpc_port}"))
                .arg("-rpcbind=127.0.0.1")
                .arg("-rpcallowip=127.0.0.1")
                .args([
                    "-server=1",
                    "-listen=0",
                    "-txindex=1",
                    "-persistmempool=0",
                    "-acceptnonstdtxn=0",
                    "-printtoconsole=0",
                    "-fallbackfee=0",
                ])
                .arg(format!(
                    "-minrelaytxfee={}",
                    btc_per_kvb(policy.min_relay_fee_rate)
                ))
                .arg(format!(
                    "-blockmintxfee={}",
                    btc_per_kvb(policy.min_relay_fee_rate)
                ))
                .arg(format!(
                    "-dustrelayfee={}",
                    btc_per_kvb(policy.dust_relay_fee_rate)
                ))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| {
                    ChainError::Storage(format!(
                        "cannot start {}: {e}",
                        bin_dir.join("bitcoind").display()
                    ))
                })?;
            let mut process = BitcoindProcess {
                child,
                datadir,
                rpc_port,
                bin_dir: bin_dir.to_path_buf(),
            };
            match process.wait_ready() {
                Ok(()) => return Ok(process),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ChainError::Storage("bitcoind did not start".into())))
    }

    fn wait_ready(&mut self) -> Result<(), ChainError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(ChainError::Storage(format!(
                    "bitcoind exited with {status}: {}",
                    stderr.trim()
                )));
            }
            if self.cookie_path().is_file() {
                let probe = BitcoindRpc::unchecked(self.url(), self.auth());
                match probe.call("getblockchaininfo", &[]) {
                    Ok(_) => return Ok(()),
                    Err(CallError::Rpc(e)) if e.code == RPC_IN_WARMUP => {}
                    Err(CallError::Transport(_)) => {}
                    Err(CallError::Rpc(e)) => {
                        return Err(ChainError::Rpc {
                            method: "getblockchaininfo".into(),
                            code: Some(e.code),
                            message: e.message,
                        })
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(ChainError::Storage(
                    "bitcoind did not answer within 60 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port)
    }

    /// The RPC port.
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    /// The data directory (`-datadir`).
    pub fn datadir(&self) -> &Path {
        self.datadir.path()
    }

    /// The cookie file bitcoind writes.
    pub fn cookie_path(&self) -> PathBuf {
        self.datadir.path().join("regtest").join(COOKIE_FILE)
    }

    /// Cookie authentication for this node.
    pub fn auth(&self) -> Auth {
        Auth::CookieFile(self.cookie_path())
    }

    /// A new RPC client of this node.
    pub fn rpc(&self) -> Result<BitcoindRpc, ChainError> {
        BitcoindRpc::connect(self.url(), self.auth())
    }

    /// The `bitcoin-cli` next to this `bitcoind`, with the arguments that reach this node.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(self.bin_dir.join("bitcoin-cli"));
        c.arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.path().display()))
            .arg(format!("-rpcport={}", self.rpc_port));
        c
    }

    /// Stop the node (RPC `stop`, then wait; killed if it does not exit within 30 s).
    pub fn stop(&mut self) {
        let _ = BitcoindRpc::unchecked(self.url(), self.auth()).call("stop", &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BitcoindProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
