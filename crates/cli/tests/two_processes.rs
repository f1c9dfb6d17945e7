//! Two programs, one chain: `superscalar chaind` runs as its own OS process; one process (say, the
//! LSP) broadcasts a transaction through its own `BitcoindRpc` connection, another (say, a client)
//! sees it in the mempool and then confirmed once a block is mined, through its own connection.
//!
//! The two parties are this test binary run again as child processes, each executing one of the
//! `role_*` functions below (ignored as tests: they only act when the orchestrating test gives
//! them a chain to talk to).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use superscalar_chain::rpc::auth::Auth;
use superscalar_chain::{BitcoindRpc, Chain, TxStatus};
use superscalar_wallet::{burn_script, Faucet, OnchainWallet};

const URL_ENV: &str = "SUPERSCALAR_ROLE_URL";
const COOKIE_ENV: &str = "SUPERSCALAR_ROLE_COOKIE";
const TXID_ENV: &str = "SUPERSCALAR_ROLE_TXID";

/// The chain the orchestrating test handed this role, or `None` when run on its own.
fn role_chain() -> Option<BitcoindRpc> {
    let url = std::env::var(URL_ENV).ok()?;
    let cookie = PathBuf::from(std::env::var(COOKIE_ENV).ok()?);
    Some(BitcoindRpc::connect(url, Auth::CookieFile(cookie)).expect("connect to chaind"))
}

/// The broadcaster: mines itself some coins, pays an address, prints the txid.
#[test]
#[ignore = "a role of two_processes_see_one_chain_through_chaind"]
fn role_broadcaster() {
    let Some(chain) = role_chain() else { return };
    let mut faucet = Faucet::new(&chain, 1).unwrap();
    let mut wallet = OnchainWallet::from_seed([7; 32]).unwrap();
    let tx = faucet
        .pay(
            &chain,
            &wallet.new_address(),
            bitcoin::Amount::from_sat(1_000_000),
        )
        .unwrap();
    println!("broadcast {}", tx.compute_txid());
}

/// The watcher: sees the transaction wait in the mempool, then confirmed.
#[test]
#[ignore = "a role of two_processes_see_one_chain_through_chaind"]
fn role_watcher() {
    let Some(chain) = role_chain() else { return };
    let txid: bitcoin::Txid = std::env::var(TXID_ENV).unwrap().parse().unwrap();
    assert_eq!(chain.tx_status(&txid).unwrap(), TxStatus::InMempool);
    println!("in mempool {txid}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let TxStatus::Confirmed { height, .. } = chain.tx_status(&txid).unwrap() {
            println!("confirmed {txid} at {height}");
            return;
        }
        assert!(Instant::now() < deadline, "{txid} never confirmed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run this test binary as `role`, talking to the chain at `url`.
fn spawn_role(role: &str, url: &str, cookie: &std::path::Path, txid: Option<&str>) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        role,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(URL_ENV, url)
    .env(COOKIE_ENV, cookie)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(t) = txid {
        c.env(TXID_ENV, t);
    }
    c.spawn().unwrap()
}

/// What follows `prefix` on the first line of `out` that holds it (libtest may print the test's
/// name on the same line, before the role's own output).
fn line_starting(out: &mut impl BufRead, prefix: &str) -> String {
    let mut seen = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no line starting with {prefix:?} in:\n{seen}"
        );
        if let Some((_, rest)) = line.trim().split_once(prefix) {
            return rest.to_string();
        }
        seen.push_str(&line);
    }
}

/// A child process killed if the test fails before it exits.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn two_processes_see_one_chain_through_chaind() {
    let dir = tempfile::tempdir().unwrap();
    let mut chaind = Reaped(
        Command::new(env!("CARGO_BIN_EXE_superscalar"))
            .args(["chaind", "--rpc-bind", "127.0.0.1:0", "--datadir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut chaind_out = BufReader::new(chaind.0.stdout.take().unwrap());
    let addr = line_starting(&mut chaind_out, "chaind listening on ");
    let cookie = PathBuf::from(line_starting(&mut chaind_out, "chaind cookie at "));
    let url = format!("http://{addr}");

    // One process broadcasts.
    let mut broadcaster = Reaped(spawn_role("role_broadcaster", &url, &cookie, None));
    let mut broadcaster_out = BufReader::new(broadcaster.0.stdout.take().unwrap());
    let txid = line_starting(&mut broadcaster_out, "broadcast ");
    std::io::copy(&mut broadcaster_out, &mut std::io::sink()).unwrap();
    assert!(broadcaster.0.wait().unwrap().success());

    // The other sees it waiting, then confirmed once a block is mined.
    let mut watcher = Reaped(spawn_role("role_watcher", &url, &cookie, Some(&txid)));
    let mut watcher_out = BufReader::new(watcher.0.stdout.take().unwrap());
    assert_eq!(line_starting(&mut watcher_out, "in mempool "), txid);
    let miner = BitcoindRpc::connect(url.as_str(), Auth::CookieFile(cookie.clone())).unwrap();
    let height = miner.tip().unwrap().height + 1;
    miner.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        line_starting(&mut watcher_out, "confirmed "),
        format!("{txid} at {height}")
    );
    std::io::copy(&mut watcher_out, &mut std::io::sink()).unwrap();
    assert!(watcher.0.wait().unwrap().success());

    // chaind stops on request and exits cleanly.
    miner.call("stop", &[]).unwrap();
    assert!(chaind.0.wait().unwrap().success());
    assert!(!cookie.exists());
}
