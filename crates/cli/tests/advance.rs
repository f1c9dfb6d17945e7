//! A factory state advance between the daemons, as separate OS processes over loopback, driven
//! only through the `superscalar` CLI: `lsp advance` moves a client's leaf path to its next
//! Decker-Wattenhofer state with the clients below the ticking node; their channels move onto
//! the new state's outputs with every balance intact; payments go on, across a SIGKILL of the
//! LSP; and a client that exits afterwards publishes the new state and is paid its balance.

use std::time::Duration;

use serde_json::Value;

mod common;

use common::*;

fn advance(lsp: &Node, factory: &str, client: u32) -> Result<Value, String> {
    let client = client.to_string();
    cli_with("lsp", "advance", lsp, &[factory, "--client", &client])
}

#[test]
fn an_advance_moves_the_channels_and_the_exit_follows_the_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (mut lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 4, &["--no-passphrase"]);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let clients: Vec<Node> = (0..4)
        .map(|i| client(dir.path(), i, &chain, &uri, &["--no-passphrase"]))
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
    let factories = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap();
    let factory = factories[0]["id"].as_str().unwrap().to_owned();
    let position = |c: &Node| status("client", c)["factory"]["position"].as_u64().unwrap() as u32;

    // Money on both sides of the channels first.
    let inv = invoice(&clients[0], 30_000_000);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let inv = invoice(&clients[1], 10_000_000);
    assert_eq!(
        cli_with("client", "pay", &clients[0], &[&inv]).unwrap()["status"],
        "paid"
    );

    // Bad requests are refused with a reason and change nothing.
    let err = advance(&lsp, &"00".repeat(32), 0).unwrap_err();
    assert!(err.contains("no live factory"), "{err}");
    let err = advance(&lsp, &factory, 99).unwrap_err();
    assert!(err.contains("4 clients"), "{err}");
    let err = advance(&lsp, "zz", 0).unwrap_err();
    assert!(err.contains("not a factory id"), "{err}");

    // Two advances of client 0's path (the second ticks the same leaf again).
    let p0 = position(&clients[0]);
    for _ in 0..2 {
        let done = advance(&lsp, &factory, p0).unwrap();
        assert!(done["clients"].as_u64().unwrap() >= 1, "{done}");
    }
    assert_eq!(balance_msat(&clients[0]), 20_000_000);
    assert_eq!(balance_msat(&clients[1]), 10_000_000);
    // The channels moved: each signs on exactly one outpoint again, and payments go on.
    let inv = invoice(&clients[0], 4_000_000);
    assert_eq!(
        cli_with("client", "pay", &clients[1], &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance_msat(&clients[0]), 24_000_000);

    // The LSP is killed and restarted from its database: its state after the advances is back.
    lsp.proc.take().unwrap().sigkill();
    let (lsp, uri2) = self::lsp(dir.path(), &chain, &listen, 4, &["--no-passphrase"]);
    assert_eq!(uri2, uri);
    for c in &clients {
        wait_for("reconnected", Duration::from_secs(60), || {
            status("client", c)["connected"] == true
        });
    }
    let inv = invoice(&clients[1], 1_000_000);
    assert_eq!(
        cli_with("client", "pay", &clients[0], &[&inv]).unwrap()["status"],
        "paid"
    );
    let done = advance(&lsp, &factory, p0).unwrap();
    assert!(done["state"].as_u64().is_some(), "{done}");
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    for c in channels.as_array().unwrap() {
        assert_eq!(
            c["lsp_balance_msat"].as_u64().unwrap() + c["client_balance_msat"].as_u64().unwrap(),
            c["capacity_msat"].as_u64().unwrap(),
            "{c}"
        );
    }

    // Client 0 exits alone after the advances: the new state's path, then its latest commitment
    // on the new channel output, then its balance.
    let c0 = &clients[0];
    cli("client", "exit", &c0.datadir, &c0.api).unwrap();
    let start = std::time::Instant::now();
    loop {
        let s = cli("client", "exit-status", &c0.datadir, &c0.api).unwrap();
        if s["channel_closed"] == true && s["done"] == true {
            assert!(s["log"].to_string().contains("latest commitment"), "{s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "exit stuck: {s}"
        );
        chain.mine(if s["done"] == true { 6 } else { 1 }, &address);
        std::thread::sleep(Duration::from_millis(400));
    }
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in &clients {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}

#[test]
fn a_client_killed_in_an_update_abandons_it_and_the_next_advance_moves_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 2, &["--no-passphrase"]);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    // The victim takes the second stage's aggregated nonces of any update and never answers.
    let mut victim = client(
        dir.path(),
        0,
        &chain,
        &uri,
        &["--no-passphrase", "--fault", "stall-update"],
    );
    let other = client(dir.path(), 1, &chain, &uri, &["--no-passphrase"]);
    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in [&victim, &other] {
        wait_for("channel ready", Duration::from_secs(90), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    let factory = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let inv = invoice(&victim, 25_000_000);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let pos = status("client", &victim)["factory"]["position"]
        .as_u64()
        .unwrap() as u32;

    // The advance runs in the background; the LSP waits for the victim in stage 2.
    let bg = std::process::Command::new(BIN)
        .args([
            "lsp",
            "advance",
            &factory,
            "--client",
            &pos.to_string(),
            "--api",
            &lsp.api,
            "--datadir",
        ])
        .arg(&lsp.datadir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "stage 2 waiting for the victim",
        Duration::from_secs(60),
        || {
            let u = &status("lsp", &lsp)["updating"];
            u["stage"] == 2
                && u["waiting_for"]
                    .as_array()
                    .is_some_and(|w| w.contains(&pos.into()))
        },
    );
    victim.proc.take().unwrap().sigkill();
    let out = bg.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("abandoned"), "{err}");
    assert!(status("lsp", &lsp)["updating"].is_null());

    // It comes back from its database (without the fault): its state is the old one, with the
    // abandoned index recorded; the next advance moves past it, and balances are intact.
    let victim = client_in(&victim.datadir, &chain, &uri, &["--no-passphrase"]);
    wait_for("reconnected", Duration::from_secs(60), || {
        status("client", &victim)["connected"] == true
    });
    assert_eq!(balance_msat(&victim), 25_000_000);
    let before = status("client", &victim)["factory"]["leaf_state"].as_u64();
    let done = advance(&lsp, &factory, pos).unwrap();
    let after = status("client", &victim)["factory"]["leaf_state"].as_u64();
    assert_eq!(after, done["state"].as_u64(), "{done}");
    assert!(
        after > before.map(|b| b + 1),
        "the abandoned index is skipped: {before:?} -> {after:?}"
    );
    let inv = invoice(&other, 5_000_000);
    assert_eq!(
        cli_with("client", "pay", &victim, &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance_msat(&victim), 20_000_000);
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    assert_eq!(channels.as_array().unwrap().len(), 2, "{channels}");

    // A restarted client keeps the advanced state: stop, start, pay.
    cli("client", "stop", &other.datadir, &other.api).unwrap();
    let mut other = other;
    if let Some(p) = other.proc.take() {
        p.wait();
    }
    let other = client_in(&other.datadir, &chain, &uri, &["--no-passphrase"]);
    wait_for("reconnected", Duration::from_secs(60), || {
        status("client", &other)["connected"] == true
    });
    assert_eq!(
        status("client", &other)["factory"]["leaf_state"].as_u64(),
        done["state"].as_u64()
    );
    let inv = invoice(&other, 1_000_000);
    assert_eq!(
        cli_with("client", "pay", &victim, &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance_msat(&other), 6_000_000);
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in [&victim, &other] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}

#[test]
fn a_superseded_state_the_lsp_publishes_loses_to_the_clients_newest_state() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        2,
        &["--no-passphrase", "--fault", "publish-superseded"],
    );
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let clients: Vec<Node> = (0..2)
        .map(|i| client(dir.path(), i, &chain, &uri, &["--no-passphrase"]))
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
    let pos = status("client", &clients[0])["factory"]["position"]
        .as_u64()
        .unwrap() as u32;
    advance(&lsp, &factory, pos).unwrap();
    // The LSP now publishes the path down to the node that ticked, then tries its superseded
    // state. Each client's watcher answers every kickoff of its path with its newest state,
    // whose delay is shorter.
    let newest = |c: &Node| {
        status("client", c)["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.as_str().unwrap_or("").contains("our newest state"))
            .count()
    };
    let start = std::time::Instant::now();
    // Both clients are below the node that ticked: whichever watcher comes first answers.
    while clients.iter().map(newest).sum::<usize>() < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no answer: {}\nLSP: {}\nclient log: {}",
            status("client", &clients[0])["events"],
            status("lsp", &lsp)["events"],
            std::fs::read_to_string(clients[0].datadir.join("debug.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("watch") || l.contains("WARN"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        chain.mine(1, &address);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Long past the superseded state's delay: it never gets in.
    for _ in 0..40 {
        chain.mine(1, &address);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    for c in &clients {
        let events = status("client", c)["events"].to_string();
        assert!(!events.contains("another state"), "{events}");
    }
    let lsp_events = status("lsp", &lsp)["events"].to_string();
    // Only the kickoff got in (the 2-client tree's root ticked); the superseded state never.
    assert_eq!(
        lsp_events.matches("fault: published").count(),
        1,
        "{lsp_events}"
    );
    // The channel is still the client's: it exits with its path (the newest state is on chain
    // already) and closes its channel on the new state's output.
    let c0 = &clients[0];
    cli("client", "exit", &c0.datadir, &c0.api).unwrap();
    let start = std::time::Instant::now();
    loop {
        let s = cli("client", "exit-status", &c0.datadir, &c0.api).unwrap();
        if s["done"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "exit stuck: {s}"
        );
        chain.mine(1, &address);
        std::thread::sleep(Duration::from_millis(300));
    }
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in &clients {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}

/// Timings of successive advances of one path in a 32-client factory (the odometer rolls the
/// leaf over into its parents, which brings in more clients). Run with
/// `cargo test --release -p superscalar-cli --test advance -- --ignored --nocapture`.
#[test]
#[ignore]
fn advance_timings_with_32_clients() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        32,
        &["--no-passphrase", "--max-clients", "32"],
    );
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let clients: Vec<Node> = (0..32)
        .map(|i| client(dir.path(), i, &chain, &uri, &["--no-passphrase"]))
        .collect();
    wait_for("a signed factory", Duration::from_secs(300), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in &clients {
        wait_for("channel ready", Duration::from_secs(300), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    let factory = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..8 {
        let t = std::time::Instant::now();
        match advance(&lsp, &factory, 0) {
            Ok(done) => println!(
                "advance {i}: node {} to state {}, {} clients, {:.3} s",
                done["node"],
                done["state"],
                done["clients"],
                t.elapsed().as_secs_f64()
            ),
            Err(e) => {
                println!("advance {i}: {e}");
                break;
            }
        }
    }
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in &clients {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}
