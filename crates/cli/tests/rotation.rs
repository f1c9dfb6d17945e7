//! Rotation between the daemons, as separate OS processes over loopback, driven only through
//! the `superscalar` CLI: `lsp rotate-factory` closes a factory and funds its successor in one
//! transaction (the block that confirms it holds nothing else); every client's balance, to the
//! millisatoshi, opens its channel in the successor, where payments go on; the old factory is
//! closed on both sides.

use std::time::Duration;

use serde_json::Value;

mod common;

use common::*;

fn client_factory(c: &Node) -> Value {
    status("client", c)["factory"].clone()
}

#[test]
fn a_rotation_is_one_transaction_and_every_balance_moves_into_the_successor() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let LiveFactory {
        lsp,
        address,
        factory,
        clients,
        ..
    } = live_factory(
        dir.path(),
        &chain,
        3,
        &["--no-passphrase", "--no-auto-close"],
        &["--no-passphrase"],
    );
    // Money moves first, with odd millisatoshis.
    let inv = invoice(&clients[0], 40_000_777);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let inv = invoice(&clients[1], 10_000_333);
    assert_eq!(
        cli_with("client", "pay", &clients[0], &[&inv]).unwrap()["status"],
        "paid"
    );
    let before: Vec<u64> = clients.iter().map(balance_msat).collect();
    assert_eq!(before[1], 10_000_333);

    // Bad requests change nothing.
    for bad in ["nothex", &"00".repeat(32)] {
        assert!(cli_with("lsp", "rotate-factory", &lsp, &[bad]).is_err());
    }
    assert!(cli_with(
        "lsp",
        "rotate-factory",
        &lsp,
        &[&factory, "--fee-rate", "0"]
    )
    .is_err());

    let height = tip(&chain);
    let locked_before = status("lsp", &lsp)["capital_locked_sat"].as_u64().unwrap();
    let out = cli_with("lsp", "rotate-factory", &lsp, &[&factory]).unwrap();
    // Until the rotation confirms, the LSP's coins are the old factory's, counted once.
    assert_eq!(
        status("lsp", &lsp)["capital_locked_sat"].as_u64(),
        Some(locked_before)
    );
    let txid = out["txid"].as_str().unwrap().to_owned();
    let successor = out["successor"]["factory"].as_str().unwrap().to_owned();
    assert_ne!(successor, factory);
    assert_eq!(out["successor"]["output"], 0, "{out}");
    for c in out["clients"].as_array().unwrap() {
        assert_eq!(c["rolled"], true, "{out}");
        assert!(c["output"].is_null(), "{out}");
    }
    // Every client holds the signed successor beside its factory until the close confirms.
    for c in &clients {
        wait_for("the successor signed", Duration::from_secs(30), || {
            status("client", c)["successor"]["factory"].as_str() == Some(successor.as_str())
        });
        assert_eq!(client_factory(c)["id"].as_str(), Some(factory.as_str()));
    }

    chain.mine(1, &address);
    // The rotation block holds exactly one transaction besides the coinbase.
    let hash = chain
        .rpc
        .call("getblockhash", &[serde_json::json!(height + 1)])
        .unwrap();
    let block = chain
        .rpc
        .call("getblock", &[hash, serde_json::json!(1)])
        .unwrap();
    let txs = block["tx"].as_array().unwrap();
    assert_eq!(txs.len(), 2, "coinbase and the rotation: {block}");
    assert_eq!(txs[1].as_str(), Some(txid.as_str()));

    for c in &clients {
        wait_for("the successor live", Duration::from_secs(60), || {
            let f = client_factory(c);
            f["id"].as_str() == Some(successor.as_str()) && f["status"] == "live"
        });
        wait_for("the channel ready", Duration::from_secs(60), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    let after: Vec<u64> = clients.iter().map(balance_msat).collect();
    assert_eq!(after, before, "every balance moved to the millisatoshi");
    let list = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap();
    let status_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| f["status"].as_str().unwrap().to_owned())
    };
    wait_for("the old factory closed", Duration::from_secs(30), || {
        let list = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .any(|f| f["id"] == factory.as_str() && f["status"] == "closed")
    });
    assert_eq!(status_of(&successor).as_deref(), Some("live"));
    assert_eq!(
        status("lsp", &lsp)["capital_locked_sat"],
        out["successor"]["value_sat"]
    );

    // Payments go on in the successor.
    let inv = invoice(&clients[2], 5_000_111);
    assert_eq!(
        cli_with("client", "pay", &clients[1], &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance_msat(&clients[2]), before[2] + 5_000_111);
}

#[test]
fn a_client_killed_after_signing_the_successor_resumes_and_the_rotation_completes() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let LiveFactory {
        lsp,
        uri,
        address,
        factory,
        mut clients,
    } = live_factory(
        dir.path(),
        &chain,
        3,
        &["--no-passphrase", "--no-auto-close"],
        &["--no-passphrase"],
    );
    let inv = invoice(&clients[0], 21_000_007);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    // Client 0 comes back with a fault: it dies right after its partial signatures of the
    // successor's tree.
    let dir0 = stop_client(clients.remove(0));
    let faulty = client_in(
        &dir0,
        &chain,
        &uri,
        &["--no-passphrase", "--fault", "crash-after-partials"],
    );
    wait_for("the channel ready", Duration::from_secs(60), || {
        balance(&faulty)["channel"]["ready"] == true
    });
    clients.insert(0, faulty);
    let before: Vec<u64> = clients.iter().map(balance_msat).collect();
    assert_eq!(before[0], 21_000_007);

    // The successor is signed by everyone, the LSP records the close and sends its aggregated
    // nonce; client 0 is gone: the rotation is abandoned, its close stays recorded.
    let e = cli_with("lsp", "rotate-factory", &lsp, &[&factory]).unwrap_err();
    assert!(e.contains("abandoned"), "{e}");
    let mut dead = clients.remove(0);
    dead.proc.take().unwrap().wait();
    let lsp_status = status("lsp", &lsp);
    assert!(lsp_status["closing"].is_null(), "{lsp_status}");

    // Back without the fault, the client asks for its successor's final signatures and keeps
    // the successor beside its factory (not in its place).
    let back = client_in(&dir0, &chain, &uri, &["--no-passphrase"]);
    wait_for("the successor kept", Duration::from_secs(60), || {
        let s = status("client", &back);
        s["successor"]["factory"].is_string() && s["factory"]["id"] == factory.as_str()
    });
    let successor = status("client", &back)["successor"]["factory"]
        .as_str()
        .unwrap()
        .to_owned();
    clients.insert(0, back);

    // The recorded rotation is proposed again and completes.
    let out = loop {
        match cli_with("lsp", "rotate-factory", &lsp, &[&factory]) {
            Ok(out) => break out,
            Err(e) if e.contains("not connected") || e.contains("under way") => {
                std::thread::sleep(Duration::from_millis(300))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(out["successor"]["factory"], successor.as_str());
    chain.mine(1, &address);
    for c in &clients {
        wait_for("the successor live", Duration::from_secs(60), || {
            let f = client_factory(c);
            f["id"].as_str() == Some(successor.as_str()) && f["status"] == "live"
        });
        wait_for("the channel ready", Duration::from_secs(60), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    let after: Vec<u64> = clients.iter().map(balance_msat).collect();
    assert_eq!(after, before);
}
