//! The LSP's watcher, with the daemons as separate OS processes over loopback: a client that
//! exits publishing a commitment it revoked loses its whole channel to the LSP's justice
//! transaction (`--fault publish-revoked`).

use std::time::Duration;

use serde_json::json;
use superscalar_chain::Chain;

mod common;

use common::*;

fn events(n: &Node, role: &str) -> String {
    status(role, n)["events"].to_string()
}

#[test]
fn a_client_publishing_a_revoked_commitment_loses_its_channel_to_the_lsp() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 2, &["--no-passphrase"]);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let cheat = client(
        dir.path(),
        0,
        &chain,
        &uri,
        &["--no-passphrase", "--fault", "publish-revoked"],
    );
    let other = client(dir.path(), 1, &chain, &uri, &["--no-passphrase"]);
    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in [&cheat, &other] {
        wait_for("channel ready", Duration::from_secs(90), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    // The cheat holds 30,000 sat, then pays 25,000 away: the commitment with 30,000 is revoked.
    let inv = invoice(&cheat, 30_000_000);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let inv = invoice(&other, 25_000_000);
    assert_eq!(
        cli_with("client", "pay", &cheat, &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance(&cheat)["balance_msat"], 5_000_000u64);
    let capacity = balance(&cheat)["channel"]["capacity_msat"]
        .as_u64()
        .unwrap()
        / 1000;

    // It exits and publishes the revoked commitment after its path.
    cli("client", "exit", &cheat.datadir, &cheat.api).unwrap();
    let start = std::time::Instant::now();
    let justice = loop {
        let ev = events(&lsp, "lsp");
        if let Some(i) = ev.find("justice transaction ") {
            let txid = ev[i + "justice transaction ".len()..][..64].to_owned();
            break txid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no justice: {ev}\n{}",
            cli("client", "exit-status", &cheat.datadir, &cheat.api).unwrap()
        );
        chain.mine(1, &address);
        std::thread::sleep(Duration::from_millis(400));
    };
    // The justice transaction confirms and takes the whole channel (less its fee).
    let txid: bitcoin::Txid = justice.parse().unwrap();
    wait_for("the justice confirmed", Duration::from_secs(60), || {
        chain.mine(1, &address);
        matches!(
            chain.rpc.tx_status(&txid),
            Ok(superscalar_chain::TxStatus::Confirmed { .. })
        )
    });
    let tx: bitcoin::Transaction = {
        let hex = chain
            .rpc
            .call("getrawtransaction", &[json!(justice), json!(false)])
            .unwrap();
        bitcoin::consensus::encode::deserialize_hex(hex.as_str().unwrap()).unwrap()
    };
    let taken: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    assert!(
        taken + 2_000 > capacity && taken < capacity,
        "the channel's {capacity} sat less the fee: {taken}"
    );
    // The cheat's own claim of its balance can never be made.
    let s = cli("client", "exit-status", &cheat.datadir, &cheat.api).unwrap();
    assert_ne!(s["channel_closed"], true, "{s}");
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in [&cheat, &other] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}
