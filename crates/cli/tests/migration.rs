//! Migration, the fallback of a rotation, between the daemons as separate OS processes over
//! loopback: one member of a three-client factory stays away through the dying period, so the
//! factory cannot rotate; in its migration window the LSP invites the two present members,
//! each joins a new factory (formed at once, whatever the ladder's rung) and pays what it held
//! into its channel there through the LSP. Each ends in the new factory with exactly its
//! balance, payments go on there, and a restart in the middle changes nothing. The LSP then takes
//! the old factory on chain before T, and the away member, back, claims its balance alone.

use std::time::Duration;

use serde_json::Value;

mod common;

use common::*;

fn factory_id(c: &Node) -> Option<String> {
    status("client", c)["factory"]["id"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn present_members_migrate_into_a_new_factory_with_their_exact_balances() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let n = 3;
    let lsp_args = [
        "--no-passphrase",
        "--active-blocks",
        "150",
        "--dying-blocks",
        "150",
    ];
    let LiveFactory {
        lsp,
        uri,
        address,
        factory,
        mut clients,
    } = live_factory(dir.path(), &chain, n, &lsp_args, &["--no-passphrase"]);
    // Odd balances on both sides; the away client holds some too.
    for (i, msat) in [(0, 30_000_123), (1, 7_654_321), (2, 20_000_000)] {
        let inv = invoice(&clients[i], msat);
        assert_eq!(
            cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
            "paid"
        );
    }
    let inv = invoice(&clients[1], 4_000_007);
    assert_eq!(
        cli_with("client", "pay", &clients[2], &[&inv]).unwrap()["status"],
        "paid"
    );
    let away = clients.pop().unwrap();
    let away_balance = balance_msat(&away);
    let away = stop_client(away);
    let before: Vec<u64> = clients.iter().map(balance_msat).collect();
    assert_eq!(before, vec![30_000_123, 7_654_321 + 4_000_007]);

    let detail = cli_factory(&lsp, &factory);
    let window = detail["migration_window"].as_array().cloned();
    let window = window.unwrap_or_else(|| panic!("no migration window: {detail}"));
    let (start, end) = (window[0].as_u64().unwrap(), window[1].as_u64().unwrap());
    let dying = detail["dying_height"].as_u64().unwrap();
    let reclaim = detail["reclaim_height"].as_u64().unwrap();
    let t = detail["timeout_height"].as_u64().unwrap();
    assert!(
        dying < start && start < end && end <= reclaim && reclaim < t,
        "{detail}"
    );

    // Before the window: the factory only tries to rotate.
    chain.mine((start - 1 - tip(&chain)) as u32, &address);
    wait_for("the rotation refused", Duration::from_secs(30), || {
        status("lsp", &lsp)["events"]
            .to_string()
            .contains("cannot rotate it cooperatively")
    });
    assert!(clients
        .iter()
        .all(|c| status("client", c)["migration"].is_null()));

    // In the window: both present clients are invited and join a new factory.
    chain.mine(1, &address);
    for c in &clients {
        wait_for("the migration started", Duration::from_secs(30), || {
            !status("client", c)["migration"].is_null()
        });
    }
    let dying_entry = status("lsp", &lsp)["dying"][0].clone();
    assert_eq!(dying_entry["away"], serde_json::json!([2]), "{dying_entry}");
    assert_eq!(
        dying_entry["migrating"],
        serde_json::json!([0, 1]),
        "{dying_entry}"
    );
    wait_for("the new factory signed", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(2)
    });
    // A client killed once its new factory is signed resumes from its store.
    let killed = clients.remove(0);
    let killed_dir = killed.datadir.clone();
    let mut proc = killed.proc;
    proc.take().unwrap().sigkill();
    chain.mine(1, &address);
    let back = client_in(&killed_dir, &chain, &uri, &["--no-passphrase"]);
    clients.insert(0, back);
    for c in &clients {
        wait_for("migrated", Duration::from_secs(120), || {
            let s = status("client", c);
            s["migration"].is_null()
                && s["factory"]["id"].as_str().is_some_and(|id| id != factory)
                && balance(c)["channel"]["ready"] == true
        });
    }
    let new_factory = factory_id(&clients[0]).unwrap();
    assert_eq!(factory_id(&clients[1]).unwrap(), new_factory);
    // Exactly their balances, in the new factory.
    let after: Vec<u64> = clients.iter().map(balance_msat).collect();
    assert_eq!(after, before);
    for c in &clients {
        assert!(
            status("client", c)["events"]
                .to_string()
                .contains("migrated out"),
            "{}",
            status("client", c)["events"]
        );
    }
    // The old factory holds nothing of theirs: the LSP's side of their channels is everything.
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    for ch in channels.as_array().unwrap() {
        if ch["factory"] == factory.as_str() && ch["client"] != 2 {
            assert_eq!(ch["client_balance_msat"], 0, "{ch}");
        }
    }
    // Payments go on there, both ways.
    let inv = invoice(&clients[0], 1_111);
    assert_eq!(
        cli_with("client", "pay", &clients[1], &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance_msat(&clients[0]), before[0] + 1_111);

    // The old factory is taken on chain before T, the away client's share with it.
    chain.mine((reclaim - tip(&chain)) as u32, &address);
    wait_for("closing", Duration::from_secs(30), || {
        cli_factory(&lsp, &factory)["status"] == "closing"
    });
    while tip(&chain) < t {
        std::thread::sleep(Duration::from_millis(1200));
        let d = cli_factory(&lsp, &factory);
        let rows = d["reclaim"]["channels"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let out = |r: &Value| r["progress"] == "done" || r["progress"] == "sweeping to_local";
        if rows.len() == n && rows.iter().all(out) {
            break;
        }
        chain.mine(1, &address);
    }
    for r in cli_factory(&lsp, &factory)["reclaim"]["channels"]
        .as_array()
        .unwrap()
    {
        let height = confirmed_at(&chain, r["commitment"].as_str().unwrap());
        assert!(height < t, "{r}");
    }
    // The new factory is untouched.
    assert_eq!(cli_factory(&lsp, &new_factory)["status"], "live");
    let back = client_in(&away, &chain, &uri, &["--no-passphrase"]);
    wait_for("the away client's claim", Duration::from_secs(120), || {
        chain.mine(1, &address);
        status("client", &back)["events"]
            .to_string()
            .contains("in the LSP's commitment")
    });
    assert!(away_balance > 0);
}
