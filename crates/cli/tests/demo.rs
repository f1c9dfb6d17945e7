//! The README's main command keeps working: the networked demo runs to the end with its daemons
//! as separate processes, and the in-process demo on the embedded chain.

use std::process::Command;

#[test]
fn in_process_demo_runs_to_the_end() {
    let out = Command::new(env!("CARGO_BIN_EXE_superscalar"))
        .args(["demo", "--in-process"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "transactions in two round trips",
        "25 payments between clients 0 and 1",
        "advanced twice",
        "of inbound liquidity to client 5",
        "(bought) are on chain",
        "superseded leaf state is refused",
        "watcher confirmed the newest state first",
        "client 2 exited alone",
        "the LSP gets nothing",
        "mempool       0 transactions",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn networked_demo_runs_to_the_end_and_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_superscalar"))
        .args(["demo", "--clients", "4", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "4 channels open",
        "payments settled",
        "restarted from its database",
        "exited alone",
        "timeout transactions confirmed",
        "funding (LSP wallet -> factory)",
        "every sat accounted for",
        "closed cooperatively by",
        "to the LSP + ",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Every daemon stopped: nothing holds a data directory's API cookie any more.
    for d in ["lsp", "client0", "client3", "client4", "client6"] {
        assert!(
            !data.join(d).join("api.cookie").exists(),
            "{d} still running"
        );
    }
}

#[test]
fn export_exit_prints_a_parsable_package() {
    let out = Command::new(env!("CARGO_BIN_EXE_superscalar"))
        .args(["export-exit", "--clients", "5", "--client", "4"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["client"], 4);
    assert!(!v["path"].as_array().unwrap().is_empty());
    assert!(!v["timeouts"].as_array().unwrap().is_empty());
    let bad = Command::new(env!("CARGO_BIN_EXE_superscalar"))
        .args(["export-exit", "--clients", "5", "--client", "9"])
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "a client outside the factory is an error"
    );
}
