//! `superscalar chaind` as its own OS process: it prints where it listens and its cookie, serves
//! RPC, stops on the `stop` RPC or SIGTERM with exit status 0 and its cookie removed, and
//! refuses hostile arguments with exit status 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use superscalar_chain::rpc::auth::Credentials;

/// A running `superscalar chaind`: the process, its address and cookie.
struct Running {
    child: Child,
    addr: SocketAddr,
    cookie: PathBuf,
    stdout: BufReader<std::process::ChildStdout>,
}

fn spawn(datadir: &std::path::Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_superscalar"))
        .args(["chaind", "--rpc-bind", "127.0.0.1:0", "--datadir"])
        .arg(datadir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("chaind listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let cookie = PathBuf::from(
        line.trim()
            .strip_prefix("chaind cookie at ")
            .unwrap_or_else(|| panic!("unexpected second line {line:?}")),
    );
    Running {
        child,
        addr,
        cookie,
        stdout,
    }
}

/// POST a JSON-RPC 1.0 call with the cookie: the reply's body.
fn call(r: &Running, method: &str) -> serde_json::Value {
    let auth = Credentials::read_cookie(&r.cookie).unwrap().basic_header();
    let body = format!(r#"{{"method":"{method}","params":[],"id":1}}"#);
    let mut s = TcpStream::connect(r.addr).unwrap();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

#[test]
fn chaind_runs_as_a_process_and_stops_on_the_stop_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = spawn(dir.path());
    assert_eq!(r.cookie, dir.path().join("regtest").join(".cookie"));
    assert!(r.cookie.exists());
    assert_eq!(call(&r, "getblockcount")["result"], 0);
    assert_eq!(call(&r, "getblockchaininfo")["result"]["chain"], "regtest");
    assert_eq!(call(&r, "stop")["result"], "Bitcoin Core stopping");
    let status = r.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!r.cookie.exists(), "the cookie is removed at stop");
    let mut rest = String::new();
    r.stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("chaind stopped"), "{rest}");
}

#[cfg(unix)]
#[test]
fn chaind_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = spawn(dir.path());
    assert_eq!(call(&r, "getblockcount")["result"], 0);
    let killed = Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = r.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!r.cookie.exists());
}

#[test]
fn hostile_arguments_are_refused_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let long = "x".repeat(100_000);
    let cases: Vec<Vec<&str>> = vec![
        vec!["chaind"],
        vec!["chaind", "--datadir", d, "--rpc-bind", "nonsense"],
        vec!["chaind", "--datadir", d, "--rpc-bind", "127.0.0.1:99999"],
        vec!["chaind", "--datadir", d, "--rpc-bind", &long],
        vec!["chaind", "--datadir", d, "--rpc-bind", "0.0.0.0:0"],
        vec![
            "chaind",
            "--datadir",
            d,
            "--rpc-bind",
            "0.0.0.0:0",
            "--rpc-allow-remote",
        ],
        vec!["chaind", "--datadir", d, "--rpcuser", "alice"],
        vec!["chaind", "--datadir", d, "--rpcpassword", "secret"],
        vec![
            "chaind",
            "--datadir",
            d,
            "--rpcuser",
            "a:b",
            "--rpcpassword",
            "secret",
        ],
        vec![
            "chaind",
            "--datadir",
            d,
            "--rpcuser",
            "alice",
            "--rpcpassword",
            "",
        ],
        vec!["chaind", "--datadir", ""],
        vec!["chaind", "--datadir", d, "--no-such-flag"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_superscalar"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown: Vec<&str> = args
            .iter()
            .map(|a| if a.len() > 40 { "<long>" } else { a })
            .collect();
        assert_eq!(out.status.code(), Some(2), "{shown:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{shown:?}: {stderr}");
        assert!(stderr.contains("error"), "{shown:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{shown:?} must not start serving");
    }
    assert!(!dir.path().join("regtest").join(".cookie").exists());
    // A data directory that is a file: a clear error (not a usage error), no panic.
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_superscalar"))
        .args(["chaind", "--rpc-bind", "127.0.0.1:0", "--datadir"])
        .arg(file.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
