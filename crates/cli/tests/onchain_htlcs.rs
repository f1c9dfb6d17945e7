//! HTLCs settled on chain, with the daemons as separate OS processes over loopback: a payee
//! that holds an incoming HTLC (`--fault hold-htlcs`) and exits claims it with its HTLC-success
//! second stage (paid for by its fee coin's change) and then into its payout; the LSP learns the
//! preimage from the chain and settles the payer's HTLC off chain, and sweeps its own balance of
//! the payee's commitment. When the payer has left first, the LSP takes the payer's HTLC on the
//! payer's commitment with the preimage the payee revealed, before the payer can time it out.

use std::time::Duration;

use serde_json::json;
use superscalar_chain::Chain;

mod common;

use common::*;

fn events(n: &Node, role: &str) -> String {
    status(role, n)["events"].to_string()
}

fn tx_of(chain: &Chaind, txid: &str) -> bitcoin::Transaction {
    let hex = chain
        .rpc
        .call("getrawtransaction", &[json!(txid), json!(false)])
        .unwrap();
    bitcoin::consensus::encode::deserialize_hex(hex.as_str().unwrap()).unwrap()
}

/// Two clients in one factory, and a payment of 12,000 sat from the payer (given 30,000 sat by
/// the LSP) that the payee (`--fault hold-htlcs`) takes and never settles.
struct Held {
    chain: Chaind,
    lsp: Node,
    uri: String,
    address: String,
    payer: Node,
    payee: Node,
    hash: String,
    /// The payer's `pay` call, answered paid or pending.
    paying: std::thread::JoinHandle<std::process::Output>,
}

fn held_payment(dir: &std::path::Path) -> Held {
    let chain = chaind(&dir.join("chain"));
    let (lsp, uri) = lsp(dir, &chain, "127.0.0.1:0", 2, &["--no-passphrase"]);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let payer = client(dir, 0, &chain, &uri, &["--no-passphrase"]);
    let payee = client(
        dir,
        1,
        &chain,
        &uri,
        &["--no-passphrase", "--fault", "hold-htlcs"],
    );
    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in [&payer, &payee] {
        wait_for("channel ready", Duration::from_secs(90), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    let inv = invoice(&payer, 30_000_000);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let reply = cli_with("client", "invoice", &payee, &["--amount-msat", "12000000"]).unwrap();
    let inv = reply["invoice"].as_str().unwrap().to_owned();
    let hash = reply["payment_hash"].as_str().unwrap().to_owned();
    let (datadir, api) = (payer.datadir.clone(), payer.api.clone());
    let paying = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .args(["client", "pay", &inv, "--json", "--api", &api, "--datadir"])
            .arg(&datadir)
            .output()
            .unwrap()
    });
    wait_for(
        "the payee holding the HTLC",
        Duration::from_secs(60),
        || balance(&payee)["channel"]["htlcs"] == 1,
    );
    assert_eq!(balance_msat(&payee), 0);
    Held {
        chain,
        lsp,
        uri,
        address,
        payer,
        payee,
        hash,
        paying,
    }
}

#[test]
fn a_payee_holding_an_htlc_claims_it_on_chain_and_the_lsp_settles_the_payer_with_its_preimage() {
    let dir = tempfile::tempdir().unwrap();
    let Held {
        chain,
        lsp,
        uri,
        address,
        payer,
        payee,
        hash,
        paying,
    } = held_payment(dir.path());

    // The payee exits: its path, its commitment, the HTLC-success, then the claims. It is
    // SIGKILLed once its HTLC-success is out, and restarted from its database: the close goes on
    // from what the chain shows (every transaction of it is rebuilt the same).
    cli("client", "exit", &payee.datadir, &payee.api).unwrap();
    let start = std::time::Instant::now();
    let mut payee = payee;
    let mut killed = false;
    let s = loop {
        if !killed {
            let s = cli("client", "exit-status", &payee.datadir, &payee.api).unwrap();
            if s["log"].to_string().contains("HTLC transaction ") {
                payee.proc.take().unwrap().sigkill();
                payee = client_in(
                    &payee.datadir,
                    &chain,
                    &uri,
                    &["--no-passphrase", "--fault", "hold-htlcs"],
                );
                killed = true;
                continue;
            }
        }
        let s = cli("client", "exit-status", &payee.datadir, &payee.api).unwrap();
        if s["channel_closed"] == true && s["done"] == true {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "exit stuck: {s}"
        );
        chain.mine(if s["done"] == true { 2 } else { 1 }, &address);
        std::thread::sleep(Duration::from_millis(400));
    };
    assert!(killed, "the payee was restarted in the middle of its close");
    let log = s["log"].to_string();
    assert!(
        log.contains(&format!("HTLC {hash} is in our payout")),
        "{s}"
    );
    // The claim of the HTLC's second stage pays the payee about the HTLC's amount.
    let marker = format!("HTLC {hash} claimed (");
    let i = log.find(&marker).expect("the claim's txid in the log");
    let claim = tx_of(&chain, &log[i + marker.len()..][..64]);
    let value = claim.output[0].value.to_sat();
    assert!((11_000..12_000).contains(&value), "{value}");

    // The LSP learnt the preimage on chain and settled the payer's HTLC off chain.
    wait_for("the payer settled", Duration::from_secs(60), || {
        let b = balance(&payer);
        b["channel"]["htlcs"] == 0 && b["balance_msat"] == 18_000_000u64
    });
    // The payer's call was answered: paid, or still pending when its wait ran out.
    let out = paying.join().unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        reply["status"] == "paid" || reply["status"] == "pending",
        "{reply} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&lsp, "lsp");
    assert!(
        ev.contains(&format!("payment {hash} settled on chain")),
        "{ev}"
    );
    // The LSP swept its own balance of the payee's commitment.
    let marker = "claimed by ";
    let i = ev.find(marker).expect("the LSP's sweep");
    let sweep: bitcoin::Txid = ev[i + marker.len()..][..64].parse().unwrap();
    wait_for("the sweep confirmed", Duration::from_secs(60), || {
        chain.mine(1, &address);
        matches!(
            chain.rpc.tx_status(&sweep),
            Ok(superscalar_chain::TxStatus::Confirmed { .. })
        )
    });
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in [&payer, &payee] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}

#[test]
fn when_both_ends_go_on_chain_the_lsp_takes_the_payers_htlc_with_the_payees_preimage() {
    let dir = tempfile::tempdir().unwrap();
    let Held {
        chain,
        lsp,
        address,
        payer,
        payee,
        hash,
        paying,
        ..
    } = held_payment(dir.path());
    // The payer leaves first, its HTLC in flight; the payee holds until its own deadline makes
    // it exit, and claims the HTLC with its preimage.
    cli("client", "exit", &payer.datadir, &payer.api).unwrap();
    let start = std::time::Instant::now();
    let payer_status = loop {
        let s = cli("client", "exit-status", &payer.datadir, &payer.api).unwrap();
        if s["channel_closed"] == true {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "payer's exit stuck: {s}\npayee: {}\nLSP: {}",
            cli("client", "exit-status", &payee.datadir, &payee.api).unwrap(),
            events(&lsp, "lsp")
        );
        chain.mine(1, &address);
        std::thread::sleep(Duration::from_millis(300));
    };
    // The payer's HTLC went to the LSP with the payee's preimage, not back by timeout.
    let log = payer_status["log"].to_string();
    assert!(
        log.contains(&format!("HTLC {hash} was spent by the LSP first")),
        "{payer_status}\npayee: {}\npayee events: {}\nLSP: {}",
        cli("client", "exit-status", &payee.datadir, &payee.api).unwrap(),
        status("client", &payee),
        events(&lsp, "lsp")
    );
    let ev = events(&lsp, "lsp");
    assert!(
        ev.contains(&format!("payment {hash} settled on chain")),
        "{ev}"
    );
    let payer_events = status("client", &payer)["events"].to_string();
    assert!(
        payer_events.contains(&format!("our payment {hash} was settled on chain")),
        "{payer_events}"
    );
    let s = cli("client", "exit-status", &payee.datadir, &payee.api).unwrap();
    assert!(
        s["log"].to_string().contains("exiting alone") || s["exiting"] == true,
        "{s}"
    );
    let _ = paying.join().unwrap();
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in [&payer, &payee] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}
