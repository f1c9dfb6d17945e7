//! `superscalar client swarm` as its own OS process beside `chaind` and the LSP: six clients in
//! one process, each with its own node id, join, all six are signed in the LSP's factory, and
//! each counts it live once the funding confirms (the LSP sends its proposals two at a time, the
//! clients share their key aggregations). No timing is asserted.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{chaind, cli, cli_factory, lsp, members, status, wait_for, BIN};
use serde_json::Value;

const N: usize = 6;

#[test]
fn a_swarm_of_six_forms_one_factory_with_the_lsp() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    // Proposals two at a time: the others' go out as nonces come in.
    let (lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        N,
        &["--no-passphrase", "--proposal-window", "2"],
    );
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);

    let swarm_dir = dir.path().join("swarm");
    let swarm = Command::new(BIN)
        .args(["client", "swarm", "--count", &N.to_string(), "--lsp", &uri])
        .arg("--datadir")
        .arg(&swarm_dir)
        .args(["--chain-rpc", &chain.url, "--chain-cookie"])
        .arg(&chain.cookie)
        .args([
            "--no-passphrase",
            "--until",
            "live",
            "--timeout",
            "300",
            "--json",
        ])
        .env("RUST_LOG", "info,ldk=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut swarm = common::Proc { child: swarm };

    // The LSP signs one factory with the six; the funding then confirms.
    wait_for("a signed factory", Duration::from_secs(180), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);

    let stdout = swarm.child.stdout.take().unwrap();
    let out = std::io::read_to_string(stdout).unwrap();
    let code = swarm.child.wait().unwrap();
    assert!(code.success(), "the swarm failed:\n{out}");
    let line = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"))
            .to_owned()
    };
    assert_eq!(line("clients"), N.to_string(), "{out}");
    assert_eq!(line("signed"), N.to_string(), "{out}");
    assert_eq!(line("confirmed live"), N.to_string(), "{out}");

    // The per-client report: every client signed in the same factory, with its own node id.
    let json = &out[out.find('[').unwrap()..];
    let clients: Vec<Value> = serde_json::from_str(json).unwrap();
    assert_eq!(clients.len(), N);
    let ids: BTreeSet<String> = clients
        .iter()
        .map(|c| c["node_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), N, "each client has its own node id");
    let factory = clients[0]["factory"].as_str().unwrap().to_owned();
    for c in &clients {
        assert!(c["signed"].is_number(), "{c}");
        assert_eq!(c["factory"].as_str(), Some(factory.as_str()), "{c}");
        assert_eq!(c["announced"], Value::Bool(true), "{c}");
        assert!(c["bytes_received"].as_u64().unwrap() > 0, "{c}");
    }

    // The LSP's factory has exactly the swarm's clients as members.
    let detail = cli_factory(&lsp, &factory);
    let members: BTreeSet<String> = members(&detail).into_iter().collect();
    assert_eq!(members, ids, "{detail}");
    wait_for("the LSP's factory live", Duration::from_secs(30), || {
        cli_factory(&lsp, &factory)["status"] == "live"
    });
    // Each client kept its own seed and store.
    for i in 0..N {
        assert!(swarm_dir
            .join(format!("client-{i}"))
            .join("seed.enc")
            .exists());
    }
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
}

#[test]
fn a_swarm_with_bad_arguments_is_refused_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let lsp = "02aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@127.0.0.1:9";
    for (count, lsp, until) in [
        ("0", lsp, "signed"),
        ("100000", lsp, "signed"),
        ("2", "nonsense", "signed"),
        ("2", lsp, "forever"),
    ] {
        let out = Command::new(BIN)
            .args([
                "client", "swarm", "--count", count, "--lsp", lsp, "--until", until,
            ])
            .args(["--datadir", "x", "--chain-rpc", "u", "--chain-cookie", "c"])
            .arg("--no-passphrase")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{count} {lsp} {until}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    assert!(!dir.path().join("x").exists(), "nothing was created");
}
