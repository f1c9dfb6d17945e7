//! The LSP and client daemons as separate OS processes over loopback, driven only through the
//! `superscalar` CLI (the control API): `chaind` serves the chain, the LSP forms a factory from
//! the clients that join (none holds a coin), every client verifies its exit path and counts the
//! factory live only from its own chain view, a client SIGKILLed in the signing ceremony is left
//! out of the next factory, the LSP restarts from its database, and a client exits alone.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    chaind, cli, cli_factory, lsp, members, start, status, wait_for, Chaind, Node, Proc, BIN,
};
use serde_json::{json, Value};

fn client(dir: &Path, i: usize, chain: &Chaind, lsp_uri: &str, fault: Option<&str>) -> Node {
    let datadir = dir.join(format!("client{i}"));
    let capacity = (100_000 + 1_000 * i as u64).to_string();
    let mut args = vec![
        "client",
        "run",
        "--datadir",
        datadir.to_str().unwrap(),
        "--lsp",
        lsp_uri,
        "--api",
        "127.0.0.1:0",
        "--chain-rpc",
        &chain.url,
        "--chain-cookie",
        chain.cookie.to_str().unwrap(),
        "--no-passphrase",
        "--capacity-sat",
        &capacity,
    ];
    if let Some(f) = fault {
        args.extend(["--fault", f]);
    }
    let (proc, line) = start(&format!("client {i}"), &args);
    // "client ID api API"
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts.first(), Some(&"client"), "{line}");
    Node {
        proc: Some(proc),
        datadir,
        api: parts[3].to_owned(),
        id: parts[1].to_owned(),
    }
}

fn factory_status(c: &Node) -> Option<String> {
    status("client", c)["factory"]["status"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn daemons_form_a_factory_over_loopback_and_a_client_exits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (mut lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 4);
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
    let victim = client(dir.path(), 9, &chain, &uri, Some("stall-before-partials"));
    wait_for("the victim waiting", Duration::from_secs(60), || {
        status("lsp", &lsp)["waiting"] == 1
    });
    let mut clients: Vec<Node> = (0..3)
        .map(|i| client(dir.path(), i, &chain, &uri, None))
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
    clients.push(client(dir.path(), 3, &chain, &uri, None));
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
    let members = members(&detail);
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
    let (lsp2, uri2) = self::lsp(dir.path(), &chain, &listen, 4);
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
