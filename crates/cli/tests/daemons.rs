//! The LSP and client daemons as separate OS processes over loopback, driven only through the
//! `superscalar` CLI (the control API): `chaind` serves the chain, the LSP forms a factory from
//! the clients that join (none holds a coin), every client verifies its exit path and counts the
//! factory live only from its own chain view, a client SIGKILLed in the signing ceremony is left
//! out of the next factory, the LSP restarts from its database, and a client exits alone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::*;

#[test]
fn daemons_form_a_factory_over_loopback_and_a_client_exits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    // The others are paid at T: the LSP does not reclaim (see tests/reclaim.rs).
    let (mut lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        4,
        &["--no-passphrase", "--no-reclaim"],
    );
    assert_eq!(lsp.id.len(), 66);
    // Fund the LSP's wallet (coinbase maturity: 100 blocks).
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let listen = uri.split('@').nth(1).unwrap().to_owned();

    // The first factory's ceremony takes the victim, which stops answering in the middle of it
    // (after its nonces, before its partial signatures) and is SIGKILLed there.
    let victim = client(
        dir.path(),
        9,
        &chain,
        &uri,
        &["--no-passphrase", "--fault", "stall-before-partials"],
    );
    wait_for("the victim waiting", Duration::from_secs(60), || {
        status("lsp", &lsp)["waiting"] == 1
    });
    let mut clients: Vec<Node> = (0..3)
        .map(|i| client(dir.path(), i, &chain, &uri, &["--no-passphrase"]))
        .collect();
    wait_for(
        "the ceremony waiting for the victim",
        Duration::from_secs(60),
        || {
            let s = status("lsp", &lsp);
            s["forming"]["phase"] == "Partials" && s["forming"]["members"] == 4
        },
    );
    let victim_id = victim.id.clone();
    // SIGKILL: no goodbye, the LSP notices the dropped connection or the round's timeout.
    let _ = victim.proc.map(Proc::sigkill);
    // A fourth client comes along; the three who were aborted join again.
    clients.push(client(dir.path(), 3, &chain, &uri, &["--no-passphrase"]));
    // The factory forms with the four that remain (the first attempt may have included the
    // victim: it is aborted and formed again without it).
    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    let factories = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap();
    let live: Vec<&Value> = factories
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "signed" || f["status"] == "live")
        .collect();
    assert_eq!(live.len(), 1, "{factories}");
    let id = live[0]["id"].as_str().unwrap().to_owned();
    let detail = cli_factory(&lsp, &id);
    let members: Vec<String> = detail["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members.len(), 4, "{detail}");
    assert!(
        !members.contains(&victim_id),
        "the killed client is not a member"
    );

    // The funding confirms: every client sees it on its own chain connection.
    chain.mine(1, &address);
    for c in &clients {
        wait_for("the client's factory live", Duration::from_secs(60), || {
            factory_status(c).as_deref() == Some("live")
        });
        assert_eq!(status("client", c)["factory"]["id"], json!(id));
    }
    wait_for("the LSP's factory live", Duration::from_secs(30), || {
        cli_factory(&lsp, &id)["status"] == "live"
    });

    // The LSP is killed and restarted from its database on the same port.
    lsp.proc.take().unwrap().sigkill();
    let (lsp2, uri2) = self::lsp(
        dir.path(),
        &chain,
        &listen,
        4,
        &["--no-passphrase", "--no-reclaim"],
    );
    assert_eq!(uri2, uri, "same node id and address after a restart");
    assert_eq!(cli_factory(&lsp2, &id)["status"], "live");

    // Client 0 exits alone: its kickoffs and states go on chain as their delays pass.
    let c0 = &clients[0];
    cli("client", "exit", &c0.datadir, &c0.api).unwrap();
    let start = Instant::now();
    loop {
        let s = cli("client", "exit-status", &c0.datadir, &c0.api).unwrap();
        if s["done"] == json!(true) {
            let path = s["path"].as_array().unwrap();
            assert!(!path.is_empty());
            for t in path {
                assert!(
                    t["status"].as_str().unwrap().starts_with("confirmed"),
                    "{s}"
                );
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "exit stuck: {s}"
        );
        chain.mine(1, &address);
        std::thread::sleep(Duration::from_millis(1200));
    }
    // At T the others are paid by the pre-signed timeout transactions, which they publish
    // themselves.
    let timeout = status("client", &clients[1])["factory"]["timeout_height"]
        .as_u64()
        .unwrap();
    let tip = chain
        .rpc
        .call("getblockcount", &[])
        .unwrap()
        .as_u64()
        .unwrap();
    if tip + 1 < timeout {
        chain.mine((timeout - tip - 1) as u32, &address);
    }
    let start = Instant::now();
    let payouts: Vec<String> = clients[1..]
        .iter()
        .map(|c| {
            status("client", c)["factory"]["payout"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut scanned = timeout as u32 - 1;
    let mut paid = std::collections::HashSet::new();
    while paid.len() < payouts.len() {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "paid at T: {paid:?} of {payouts:?}"
        );
        chain.mine(1, &address);
        std::thread::sleep(Duration::from_millis(1200));
        use superscalar_chain::Chain;
        let tip = chain.rpc.tip().unwrap().height;
        while scanned <= tip {
            let block = chain.rpc.block_at(scanned).unwrap().unwrap();
            for tx in &block.txdata {
                for out in &tx.output {
                    let hex = out.script_pubkey.to_hex_string();
                    if payouts.contains(&hex) {
                        paid.insert(hex);
                    }
                }
            }
            scanned += 1;
        }
    }
    for c in &clients {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
    cli("lsp", "stop", &lsp2.datadir, &lsp2.api).unwrap();
}

#[test]
fn verbs_without_a_daemon_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let err = cli("client", "status", dir.path(), "127.0.0.1:9").unwrap_err();
    assert!(err.contains("is it running"), "{err}");
    // Hostile arguments are refused before anything starts.
    for args in [
        vec![
            "client",
            "run",
            "--datadir",
            "x",
            "--lsp",
            "nonsense",
            "--chain-rpc",
            "u",
            "--chain-cookie",
            "c",
            "--no-passphrase",
        ],
        vec![
            "client",
            "run",
            "--datadir",
            "x",
            "--lsp",
            "02aa@1.2.3.4:5",
            "--chain-rpc",
            "u",
            "--chain-cookie",
            "c",
            "--no-passphrase",
        ],
        vec![
            "lsp",
            "run",
            "--datadir",
            "x",
            "--chain-rpc",
            "u",
            "--chain-cookie",
            "c",
            "--no-passphrase",
            "--min-clients",
            "0",
        ],
        vec![
            "lsp",
            "run",
            "--datadir",
            "x",
            "--chain-rpc",
            "u",
            "--chain-cookie",
            "c",
            "--no-passphrase",
            "--proposal-window",
            "0",
        ],
        vec![
            "lsp",
            "run",
            "--datadir",
            "x",
            "--chain-rpc",
            "u",
            "--chain-cookie",
            "c",
        ],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(dir.path())
            .env_remove("SUPERSCALAR_PASSPHRASE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{args:?}"
        );
    }
}

/// Every secret a node's seed yields that must never be found in its data directory.
#[test]
fn the_lsp_dies_after_the_final_signatures_and_every_client_still_exits() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    // Seeds encrypted with a passphrase: nothing secret may be readable in any data directory.
    let (mut lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        3,
        &["--fault", "crash-after-final-sigs"],
    );
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let clients: Vec<Node> = (0..3)
        .map(|i| client(dir.path(), i, &chain, &uri, &[]))
        .collect();
    // The LSP dies once the final signatures are out, before broadcasting the funding.
    let mut proc = lsp.proc.take().unwrap();
    wait_for("the LSP to die", Duration::from_secs(90), || {
        proc.child.try_wait().unwrap().is_some()
    });
    assert!(!proc.child.wait().unwrap().success());
    drop(proc);
    for c in &clients {
        wait_for("the client signed", Duration::from_secs(30), || {
            factory_status(c).as_deref() == Some("signed")
        });
    }
    // Restarted from its database: it broadcasts the stored funding transaction again.
    let (lsp, uri2) = self::lsp(dir.path(), &chain, &listen, 3, &[]);
    assert_eq!(uri2, uri);
    wait_for(
        "the funding in the mempool",
        Duration::from_secs(30),
        || {
            chain
                .rpc
                .call("getrawmempool", &[])
                .map(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                .unwrap_or(false)
        },
    );
    chain.mine(1, &address);
    for c in &clients {
        wait_for("the client's factory live", Duration::from_secs(60), || {
            factory_status(c).as_deref() == Some("live")
        });
    }
    // Client 0 backs up, loses its data directory, and is restored from the backup into an
    // empty one; client 1 restarts from its database; client 2 runs on.
    let backup = dir.path().join("client0.backup");
    let out = Command::new(BIN)
        .args(["client", "backup", "--out"])
        .arg(&backup)
        .args(["--api", &clients[0].api, "--datadir"])
        .arg(&clients[0].datadir)
        .env("SUPERSCALAR_BACKUP_PASSPHRASE", "backup words")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut clients = clients;
    let mut lost = clients.remove(0);
    cli("client", "stop", &lost.datadir, &lost.api).unwrap();
    let _ = lost.proc.take().map(|mut p| p.child.wait());
    std::fs::remove_dir_all(&lost.datadir).unwrap();
    // The backup is refused with a wrong passphrase, and into a directory that holds a node.
    let restore = |datadir: &Path, pass: &str| {
        Command::new(BIN)
            .args(["client", "restore", "--datadir"])
            .arg(datadir)
            .arg("--from")
            .arg(&backup)
            .env("SUPERSCALAR_BACKUP_PASSPHRASE", pass)
            .env("SUPERSCALAR_PASSPHRASE", PASSPHRASE)
            .output()
            .unwrap()
    };
    let restored_dir = dir.path().join("client0-restored");
    assert!(!restore(&restored_dir, "wrong words").status.success());
    assert!(!restore(&clients[0].datadir, "backup words")
        .status
        .success());
    let out = restore(&restored_dir, "backup words");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = client_in(&restored_dir, &chain, &uri, &[]);
    assert_eq!(restored.id, lost.id, "the same node after a restore");
    let mut restarted = clients.remove(0);
    cli("client", "stop", &restarted.datadir, &restarted.api).unwrap();
    let _ = restarted.proc.take().map(|mut p| p.child.wait());
    let restarted = client_in(&restarted.datadir, &chain, &uri, &[]);
    let clients = vec![restored, restarted, clients.remove(0)];
    for c in &clients {
        assert_eq!(factory_status(c).as_deref(), Some("live"));
    }
    // Every client exits alone.
    for c in &clients {
        cli("client", "exit", &c.datadir, &c.api).unwrap();
    }
    let start = Instant::now();
    for c in &clients {
        loop {
            let s = cli("client", "exit-status", &c.datadir, &c.api).unwrap();
            if s["done"] == json!(true) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(240),
                "exit stuck: {s}"
            );
            chain.mine(1, &address);
            std::thread::sleep(Duration::from_millis(1200));
        }
    }
    for c in &clients {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for node in clients.iter().chain(std::iter::once(&lsp)) {
        assert_no_secret_in(&node.datadir, &secrets_of(&node.datadir));
    }
    // The backup file holds the seed words, encrypted.
    let secrets = secrets_of(&clients[0].datadir);
    let bytes = std::fs::read(&backup).unwrap();
    for (what, secret) in &secrets {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == &secret[..]),
            "{what} in the backup"
        );
    }
}

#[test]
fn a_client_dying_after_its_partial_signatures_gets_its_final_signatures_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 2, &["--no-passphrase"]);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let steady = client(dir.path(), 0, &chain, &uri, &["--no-passphrase"]);
    let mut dying = client(
        dir.path(),
        1,
        &chain,
        &uri,
        &["--no-passphrase", "--fault", "crash-after-partials"],
    );
    // It dies with its partial signatures out; the LSP completes the factory without knowing.
    let mut proc = dying.proc.take().unwrap();
    wait_for("the client to die", Duration::from_secs(90), || {
        proc.child.try_wait().unwrap().is_some()
    });
    drop(proc);
    wait_for("the factory signed", Duration::from_secs(60), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    // Restarted, it does not forget the factory: it asks for its final signatures.
    let back = client_in(&dying.datadir, &chain, &uri, &["--no-passphrase"]);
    assert_eq!(back.id, dying.id);
    chain.mine(1, &address);
    for c in [&steady, &back] {
        wait_for("the factory live", Duration::from_secs(60), || {
            factory_status(c).as_deref() == Some("live")
        });
    }
    assert_eq!(
        status("client", &back)["factory"]["id"],
        status("client", &steady)["factory"]["id"]
    );
    for c in [&steady, &back] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
}

#[test]
fn a_config_file_fills_the_options_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("lsp");
    std::fs::create_dir_all(&datadir).unwrap();
    std::fs::write(
        datadir.join("superscalar.toml"),
        "min-clients = 0\nno-passphrase = true\nchain-rpc = \"http://127.0.0.1:9/\"\nchain-cookie = \"/nonexistent\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["lsp", "run", "--datadir"])
            .arg(&datadir)
            .args(extra)
            .output()
            .unwrap()
    };
    // From the file: --min-clients 0 is refused as on the command line.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-clients"));
    // The command line wins: it gets past the options and fails at the chain connection.
    let out = run(&["--min-clients", "2"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An option the command does not know is refused.
    std::fs::write(datadir.join("superscalar.toml"), "no-such-option = 1\n").unwrap();
    assert_eq!(run(&[]).status.code(), Some(2));
}
