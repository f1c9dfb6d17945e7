//! The LSP's ladder between the daemons, as separate OS processes over loopback: with a ladder
//! of 4 rungs over 40 active blocks (a rung of 10 blocks), the first client forms a factory at
//! once; a client arriving between rungs waits for the next rung, unless enough clients wait to
//! fill a factory, which forms at once; the rung is counted from the newest factory, across a
//! restart of the LSP; and each factory's timeout T follows its creation height. Bad ladder
//! options are refused before anything starts.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;

use common::*;

const RUNG: u64 = 10;

fn ladder(lsp: &Node) -> Value {
    status("lsp", lsp)["ladder"].clone()
}

/// The signed (not aborted) factories, oldest first: (id, created, timeout, members).
fn signed_factories(lsp: &Node) -> Vec<(String, u64, u64, usize)> {
    let list = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap();
    let mut out: Vec<(String, u64, u64, usize)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] != "aborted" && f["status"] != "forming")
        .map(|f| {
            let id = f["id"].as_str().unwrap().to_owned();
            let n = members(&cli_factory(lsp, &id)).len();
            (
                id,
                f["created_height"].as_u64().unwrap(),
                f["timeout_height"].as_u64().unwrap(),
                n,
            )
        })
        .collect();
    out.sort_by_key(|f| f.1);
    out
}

fn waiting(lsp: &Node) -> u64 {
    status("lsp", lsp)["waiting"].as_u64().unwrap()
}

/// Lets the LSP tick a few times, then checks that the one client waiting still waits.
fn still_waits(lsp: &Node, factories: usize) {
    std::thread::sleep(Duration::from_secs(3));
    let s = status("lsp", lsp);
    assert_eq!(s["waiting"], 1, "{s}");
    assert!(s["forming"].is_null(), "{s}");
    assert_eq!(signed_factories(lsp).len(), factories, "{s}");
}

fn mine_to(chain: &Chaind, height: u64, address: &str) {
    let now = tip(chain);
    if height > now {
        chain.mine((height - now) as u32, address);
    }
}

const LSP_ARGS: [&str; 7] = [
    "--no-passphrase",
    "--ladder-size",
    "4",
    "--active-blocks",
    "40",
    "--max-clients",
    "2",
];

#[test]
fn factories_form_a_rung_apart_unless_full() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (mut lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 1, &LSP_ARGS);
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let l = ladder(&lsp);
    assert_eq!(l["size"], 4, "{l}");
    assert_eq!(l["rung_blocks"], RUNG, "{l}");
    assert_eq!(l["active_blocks"], 40, "{l}");
    assert_eq!(l["dying_blocks"], 5, "{l}");
    // No factory yet: the first rung is due at once.
    assert_eq!(l["next_rung_height"], 0, "{l}");

    let client_args = ["--no-passphrase"];
    let a = client(dir.path(), 0, &chain, &uri, &client_args);
    wait_for("the first factory", Duration::from_secs(120), || {
        signed_factories(&lsp).len() == 1
    });
    chain.mine(1, &address);
    wait_for("a live factory", Duration::from_secs(60), || {
        factory_status(&a).as_deref() == Some("live")
    });
    let first = signed_factories(&lsp)[0].clone();
    assert_eq!(first.3, 1);
    assert_eq!(ladder(&lsp)["next_rung_height"], first.1 + RUNG);

    // A client arriving between rungs waits, up to the block before the rung.
    let b = client(dir.path(), 1, &chain, &uri, &client_args);
    wait_for("b waiting", Duration::from_secs(60), || waiting(&lsp) == 1);
    mine_to(&chain, first.1 + RUNG - 1, &address);
    still_waits(&lsp, 1);

    // A second one fills a factory (--max-clients 2): it forms at once, between rungs.
    let c = client(dir.path(), 2, &chain, &uri, &client_args);
    wait_for("the full factory", Duration::from_secs(120), || {
        signed_factories(&lsp).len() == 2
    });
    let second = signed_factories(&lsp)[1].clone();
    assert_eq!(second.3, 2, "both waiting clients are in it");
    assert!(
        second.1 < first.1 + RUNG,
        "{second:?} formed before the rung"
    );
    chain.mine(1, &address);
    for x in [&b, &c] {
        wait_for("a live factory", Duration::from_secs(60), || {
            factory_status(x).as_deref() == Some("live")
        });
    }

    // The rung counts from the newest factory, also after a restart.
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    lsp.proc.take().unwrap().wait();
    let (lsp, _) = common::lsp(dir.path(), &chain, &listen, 1, &LSP_ARGS);
    assert_eq!(ladder(&lsp)["next_rung_height"], second.1 + RUNG);

    let d = client(dir.path(), 3, &chain, &uri, &client_args);
    wait_for("d waiting", Duration::from_secs(60), || waiting(&lsp) == 1);
    mine_to(&chain, second.1 + RUNG - 1, &address);
    still_waits(&lsp, 2);
    // The rung: the one client waiting (--min-clients 1) forms the next factory.
    chain.mine(1, &address);
    wait_for(
        "the factory of the next rung",
        Duration::from_secs(120),
        || signed_factories(&lsp).len() == 3,
    );
    let third = signed_factories(&lsp)[2].clone();
    assert_eq!(third.3, 1);
    assert_eq!(third.1, second.1 + RUNG);
    chain.mine(1, &address);
    wait_for("a live factory", Duration::from_secs(60), || {
        factory_status(&d).as_deref() == Some("live")
    });
    // Each factory's T is computed from its own creation height.
    assert_eq!(third.2 - third.1, first.2 - first.1);
    assert_eq!(second.2 - second.1, first.2 - first.1);
    assert_eq!(ladder(&lsp)["next_rung_height"], third.1 + RUNG);
}

#[test]
fn bad_ladder_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let datadir = dir.path().join("lsp");
    for (args, why) in [
        (
            &["--ladder-size", "41", "--active-blocks", "40"][..],
            "--ladder-size",
        ),
        (&["--ladder-size=-1"][..], "ladder-size"),
        (&["--ladder-size", "x"][..], "ladder-size"),
        (&["--dying-blocks", "4"][..], "--dying-blocks"),
        (&["--dying-blocks", "100001"][..], "--dying-blocks"),
    ] {
        let out = Command::new(BIN)
            .args(["lsp", "run", "--no-passphrase", "--datadir"])
            .arg(&datadir)
            .args([
                "--chain-rpc",
                "http://127.0.0.1:1/",
                "--chain-cookie",
                "/nonexistent",
            ])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
