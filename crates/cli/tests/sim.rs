//! `superscalar sim` as its own process: a small ladder writes its three SVG plots and a
//! summary.json that parses; several factory sizes write one folder each and a comparison; bad
//! values are refused with `error: ...` and exit code 2, creating nothing.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_superscalar");

fn sim(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("sim")
        .args(args)
        .output()
        .expect("the superscalar binary runs")
}

fn small<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--clients",
        "300",
        "--days",
        "60",
        "--factory-size",
        "16",
        "--offline-share",
        "0.05",
        "--out",
        out,
    ];
    v.extend_from_slice(extra);
    v
}

fn check_plots(dir: &Path) {
    for name in ["ladder.svg", "onchain_bytes.svg", "capital.svg"] {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(svg.contains("<text"), "{name}: no text");
    }
}

#[test]
fn a_small_ladder_writes_its_plots_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = sim(&small(out.to_str().unwrap(), &[]));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("per user per year"), "{stdout}");
    assert!(stdout.contains("forced exits"), "{stdout}");
    check_plots(&out);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["clients"], 300);
    assert_eq!(summary["config"]["factory_size"], 16);
    assert!(summary["per_user_year"]["vbytes"].as_f64().unwrap() > 0.0);
    assert!(
        summary["per_user_year"]["baseline_vbytes"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(summary["forced"]["exits"].as_u64().unwrap() > 0);
    assert!(summary["capital"]["max_btc"].as_f64().unwrap() > 0.0);

    // --json prints the same summary (the same seed gives the same run).
    let again = dir.path().join("again");
    let o = sim(&small(again.to_str().unwrap(), &["--json"]));
    assert!(o.status.success());
    let printed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed, summary);
}

#[test]
fn several_sizes_run_one_simulation_each() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = small(out.to_str().unwrap(), &[]);
    args[5] = "8,32";
    let o = sim(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(stdout.contains("ratio"), "{stdout}");
    for k in [8, 32] {
        check_plots(&out.join(format!("size-{k}")));
    }
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let runs = all["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["config"]["factory_size"], 32);
}

#[test]
fn bad_values_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["--clients", "0"],
        &["--days", "0"],
        &["--factory-size", "0"],
        &["--factory-size", "8,2000"],
        &["--offline-share", "2"],
        &["--offline-share", "-0.5"],
        &["--churn-per-year", "1"],
        &["--fee-rate", "0"],
        &["--ladder-size", "0"],
        &["--arity", "8,0"],
        &["--leaf", "triangle"],
        &["--static-levels", "many"],
        &["--clients", "abc"],
        &["--factory-size", "1024", "--static-levels", "0"],
    ];
    for case in cases {
        let mut args = vec!["--out", out_s];
        args.extend_from_slice(case);
        let o = sim(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{case:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{case:?}: {stderr}");
        assert!(!out.exists(), "{case:?} created the output directory");
    }
}
