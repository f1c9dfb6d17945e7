//! The LSP's last resort, as separate OS processes over loopback: a client stays away through
//! its factory's dying period, so no cooperative close can be signed; from the factory's reclaim
//! height the LSP publishes the tree, closes every channel with its latest commitment (its fee
//! paid from the LSP's wallet through the P2A anchor) and sweeps its balances to its wallet, all
//! confirmed before T. The clients lose nothing: the present ones' watchers claim their
//! balances from the LSP's commitments, and so does the absent one once it is back.

use std::time::Duration;

use serde_json::{json, Value};

mod common;

use common::*;

fn claimed(c: &Node) -> bool {
    status("client", c)["events"]
        .to_string()
        .contains("in the LSP's commitment")
}

#[test]
fn the_lsp_takes_a_factory_with_an_absent_client_on_chain_before_t_and_keeps_its_balances() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let n = 3;
    let LiveFactory {
        mut lsp,
        uri,
        address,
        factory,
        mut clients,
    } = live_factory(
        dir.path(),
        &chain,
        n,
        &["--no-passphrase", "--active-blocks", "200"],
        &["--no-passphrase"],
    );
    // Balances on both sides of every channel.
    for (i, msat) in [(0, 30_000_000), (2, 20_000_000)] {
        let inv = invoice(&clients[i], msat);
        assert_eq!(
            cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
            "paid"
        );
    }
    let inv = invoice(&clients[1], 4_000_000);
    assert_eq!(
        cli_with("client", "pay", &clients[2], &[&inv]).unwrap()["status"],
        "paid"
    );
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    let lsp_in_channels: u64 = channels
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["lsp_balance_msat"].as_u64().unwrap() / 1000)
        .sum();

    // Client 2 goes away for good (until after the reclaim).
    let away = clients.pop().unwrap();
    let away_position = status("client", &away)["factory"]["position"].clone();
    let away = stop_client(away);
    let detail = cli_factory(&lsp, &factory);
    let dying = detail["dying_height"].as_u64().unwrap();
    let reclaim = detail["reclaim_height"].as_u64().unwrap();
    let t = detail["timeout_height"].as_u64().unwrap();
    assert!(dying < reclaim && reclaim < t, "{detail}");
    assert_eq!(detail["reclaim"], Value::Null);
    wait_for("client 2 reported absent", Duration::from_secs(30), || {
        cli_factory(&lsp, &factory)["absent"] == json!([away_position])
    });

    // Through the dying period the close cannot be signed.
    chain.mine((dying - tip(&chain)) as u32, &address);
    wait_for("the reason logged", Duration::from_secs(30), || {
        status("lsp", &lsp)["events"]
            .to_string()
            .contains("not connected")
    });
    chain.mine((reclaim - 1 - tip(&chain)) as u32, &address);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(cli_factory(&lsp, &factory)["status"], "dying");

    // From the reclaim height: the tree, the commitments, the sweeps, one block at a time.
    chain.mine(1, &address);
    wait_for("closing", Duration::from_secs(30), || {
        cli_factory(&lsp, &factory)["status"] == "closing"
    });
    // A restart in the middle goes on from the database.
    chain.mine(1, &address);
    std::thread::sleep(Duration::from_millis(1500));
    lsp.proc.take().unwrap().sigkill();
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let (lsp, _) = self::lsp(
        dir.path(),
        &chain,
        &listen,
        n,
        &["--no-passphrase", "--active-blocks", "200"],
    );
    assert_eq!(cli_factory(&lsp, &factory)["status"], "closing");
    let mut done_at = None;
    while tip(&chain) < t {
        std::thread::sleep(Duration::from_millis(1500));
        let d = cli_factory(&lsp, &factory);
        let rows = d["reclaim"]["channels"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let stocks = d["reclaim"]["stocks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // A commitment that confirmed has taken the channel out of the tree: its to_local sweep
        // may come after T (its `to_self_delay`), no timeout can take it any more.
        let out_of_tree =
            |r: &Value| r["progress"] == "done" || r["progress"] == "sweeping to_local";
        let done = |r: &Value| r["progress"] == "done";
        if rows.len() == n
            && rows.iter().all(out_of_tree)
            && !stocks.is_empty()
            && stocks.iter().all(done)
        {
            done_at = Some(tip(&chain));
            break;
        }
        chain.mine(1, &address);
    }
    let done_at = done_at.unwrap_or_else(|| {
        panic!(
            "the reclaim did not finish before T {t}: {}",
            cli_factory(&lsp, &factory)
        )
    });
    assert!(done_at < t, "done at {done_at}, T {t}");
    // Every commitment is confirmed before T.
    for r in cli_factory(&lsp, &factory)["reclaim"]["channels"]
        .as_array()
        .unwrap()
    {
        let height = confirmed_at(&chain, r["commitment"].as_str().unwrap());
        assert!(height < t, "{r}");
    }
    // Then the to_local sweeps, after `to_self_delay`.
    let mut mined = 0;
    loop {
        let d = cli_factory(&lsp, &factory);
        let rows = d["reclaim"]["channels"].as_array().cloned().unwrap();
        if rows.iter().all(|r| r["progress"] == "done") {
            break;
        }
        assert!(mined < 400, "the to_local sweeps did not finish: {d}");
        chain.mine(10, &address);
        mined += 10;
        std::thread::sleep(Duration::from_millis(1500));
    }
    wait_for("closed", Duration::from_secs(30), || {
        cli_factory(&lsp, &factory)["status"] == "closed"
    });
    // The LSP's channel balances are in its wallet, less the sweeps' fees: each sweep is
    // confirmed and pays a script of the LSP's wallet.
    let d = cli_factory(&lsp, &factory);
    let mut swept = 0;
    for r in d["reclaim"]["channels"].as_array().unwrap() {
        let Some(txid) = r["sweep"].as_str() else {
            continue;
        };
        let tx = chain
            .rpc
            .call("getrawtransaction", &[json!(txid), json!(true)])
            .unwrap();
        assert!(tx["confirmations"].as_u64().unwrap() > 0, "{tx}");
        swept += r["swept_sat"].as_u64().unwrap();
    }
    assert!(
        swept <= lsp_in_channels && swept + 3 * 1_000 > lsp_in_channels,
        "swept {swept}, the LSP held {lsp_in_channels} in its channels: {d}"
    );
    // And every stock output of the leaves, less the sweeps' fees.
    for r in d["reclaim"]["stocks"].as_array().unwrap() {
        let txid = r["sweep"].as_str().unwrap();
        let tx = chain
            .rpc
            .call("getrawtransaction", &[json!(txid), json!(true)])
            .unwrap();
        assert!(tx["confirmations"].as_u64().unwrap() > 0, "{tx}");
        assert!(r["swept_sat"].as_u64().unwrap() > 0);
    }

    // The present clients' watchers claimed their balances from the LSP's commitments.
    for c in &clients {
        wait_for("a present client's claim", Duration::from_secs(60), || {
            chain.mine(1, &address);
            claimed(c)
        });
    }
    // The absent client, back, claims its own.
    let back = client_in(&away, &chain, &uri, &["--no-passphrase"]);
    wait_for("the absent client's claim", Duration::from_secs(90), || {
        chain.mine(1, &address);
        claimed(&back)
    });
}
