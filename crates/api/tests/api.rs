//! The control API over real loopback TCP: each test runs its own server on port 0 with its own
//! cookie in its own temporary directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};
use superscalar_api::{
    serve, ApiClient, ApiClientError, ApiError, ApiServer, ApiServerError, Request, COOKIE_FILE,
    INTERNAL_ERROR, INVALID_REQUEST, MAX_BATCH, METHOD_NOT_FOUND, PARSE_ERROR,
};
use superscalar_chain::rpc::auth::Credentials;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::Receiver;
use tokio::task::JoinHandle;

const LOOPBACK: &str = "127.0.0.1:0";

/// A server on a free loopback port, its cookie in a fresh directory.
async fn start() -> (TempDir, ApiServer, Receiver<Request>) {
    let dir = tempfile::tempdir().unwrap();
    let (server, rx) = serve(LOOPBACK.parse().unwrap(), &dir.path().join(COOKIE_FILE))
        .await
        .unwrap();
    (dir, server, rx)
}

fn client(server: &ApiServer) -> ApiClient {
    ApiClient::new(server.url(), server.cookie_path().to_path_buf())
}

/// A daemon that answers `echo` with its params, `fail` with an application error, drops
/// `drop` unanswered and knows no other method; it returns the methods it saw.
fn daemon(mut rx: Receiver<Request>) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(request) = rx.recv().await {
            seen.push(request.method.clone());
            match request.method.as_str() {
                "echo" => {
                    let params = request.params.clone();
                    request.reply(Ok(params));
                }
                "fail" => request.reply(Err(ApiError::app(-5, "no such factory"))),
                "drop" => drop(request),
                other => {
                    let e = ApiError::method_not_found(other);
                    request.reply(Err(e));
                }
            }
        }
        seen
    })
}

/// `client.call` off the runtime's thread.
async fn call(client: &ApiClient, method: &str, params: Value) -> Result<Value, ApiClientError> {
    let client = client.clone();
    let method = method.to_string();
    tokio::task::spawn_blocking(move || client.call(&method, params))
        .await
        .unwrap()
}

/// An HTTP answer: status, head, body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{}",
            self.head
        );
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Send `head` (without its final empty line) and `body` on a fresh connection, reading the
/// answer while the body is written (the server may answer before reading it all).
async fn raw(addr: SocketAddr, head: &str, body: Vec<u8>) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let request = format!("{head}\r\nConnection: close\r\n\r\n");
    let write = tokio::spawn(async move {
        // The server may close before reading all of it: errors are expected then.
        if writer.write_all(request.as_bytes()).await.is_ok() {
            let _ = writer.write_all(&body).await;
        }
        writer
    });
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    drop(write.await);
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no HTTP answer");
    let head = String::from_utf8(bytes[..split].to_vec()).unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    Answer {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    }
}

/// POST `body` with the server's cookie.
async fn post(server: &ApiServer, body: impl Into<Vec<u8>>) -> Answer {
    let body = body.into();
    let credentials = Credentials::read_cookie(server.cookie_path()).unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}",
        server.local_addr(),
        credentials.basic_header(),
        body.len()
    );
    raw(server.local_addr(), &head, body).await
}

fn rpc_code(r: Result<Value, ApiClientError>) -> i64 {
    match r {
        Err(ApiClientError::Rpc(e)) => e.code,
        other => panic!("not an RPC error: {other:?}"),
    }
}

#[tokio::test]
async fn round_trip_through_the_daemon() {
    let (_dir, server, rx) = start().await;
    let daemon = daemon(rx);
    let client = client(&server);
    let params = json!({"factory": "f1", "amount_msat": 1000, "nested": [1, {"a": null}]});
    assert_eq!(call(&client, "echo", params.clone()).await.unwrap(), params);
    assert_eq!(
        call(&client, "echo", json!([1, "x"])).await.unwrap(),
        json!([1, "x"])
    );
    // Absent or null params are an empty object.
    assert_eq!(call(&client, "echo", Value::Null).await.unwrap(), json!({}));
    match call(&client, "fail", json!({})).await {
        Err(ApiClientError::Rpc(e)) => {
            assert_eq!(e, ApiError::app(-5, "no such factory"));
        }
        other => panic!("{other:?}"),
    }
    // A handler that drops the request without answering.
    assert_eq!(
        rpc_code(call(&client, "drop", json!({})).await),
        INTERNAL_ERROR
    );
    server.shutdown().await;
    assert_eq!(
        daemon.await.unwrap(),
        ["echo", "echo", "echo", "fail", "drop"]
    );
}

#[tokio::test]
async fn unknown_method_reaches_the_client_as_method_not_found() {
    let (_dir, server, rx) = start().await;
    let _daemon = daemon(rx);
    match call(&client(&server), "nosuchmethod", json!({})).await {
        Err(ApiClientError::Rpc(e)) => {
            assert_eq!(e.code, METHOD_NOT_FOUND);
            assert!(e.message.contains("nosuchmethod"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_or_missing_cookie_is_refused_before_the_daemon() {
    let (dir, server, mut rx) = start().await;
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"echo"}"#.to_vec();
    let no_auth = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}",
        body.len()
    );
    let a = raw(server.local_addr(), &no_auth, body.clone()).await;
    assert_eq!(a.status, 401);
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{}",
        a.head
    );
    let wrong = Credentials::random_cookie();
    let wrong_auth = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}",
        wrong.basic_header(),
        body.len()
    );
    assert_eq!(
        raw(server.local_addr(), &wrong_auth, body).await.status,
        401
    );
    // The client with another daemon's cookie.
    let other_cookie = dir.path().join("other.cookie");
    wrong.write_cookie(&other_cookie).unwrap();
    let client = ApiClient::new(server.url(), other_cookie);
    assert!(matches!(
        call(&client, "echo", json!({})).await,
        Err(ApiClientError::Unauthorized)
    ));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn only_post_is_served() {
    let (_dir, server, mut rx) = start().await;
    let credentials = Credentials::read_cookie(server.cookie_path()).unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {}",
        credentials.basic_header()
    );
    let a = raw(server.local_addr(), &head, Vec::new()).await;
    assert_eq!(a.status, 405);
    assert!(a.head.to_ascii_lowercase().contains("allow: post"));
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn bodies_over_one_mib_are_refused() {
    let (_dir, server, mut rx) = start().await;
    let big = {
        let padding = "x".repeat(2 * 1024 * 1024);
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"echo","params":["{padding}"]}}"#)
    };
    // Declared too large.
    assert_eq!(post(&server, big.clone()).await.status, 413);
    // Found too large while reading: a chunked body.
    let credentials = Credentials::read_cookie(server.cookie_path()).unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked",
        credentials.basic_header()
    );
    let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
    chunked.extend_from_slice(big.as_bytes());
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(raw(server.local_addr(), &head, chunked).await.status, 413);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn malformed_json_is_a_parse_error() {
    let (_dir, server, mut rx) = start().await;
    let a = post(&server, r#"{"jsonrpc":"2.0","id":1,"#).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["error"]["code"], PARSE_ERROR);
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn only_json_rpc_2_0_requests_are_served() {
    let (_dir, server, mut rx) = start().await;
    let v = post(&server, r#"{"jsonrpc":"1.0","id":7,"method":"echo"}"#)
        .await
        .json();
    assert_eq!(v["error"]["code"], INVALID_REQUEST);
    assert_eq!(v["id"], 7);
    let v = post(&server, "42").await.json();
    assert_eq!(v["error"]["code"], INVALID_REQUEST);
    assert_eq!(v["id"], Value::Null);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn a_batch_is_answered_in_order_without_its_notifications() {
    let (_dir, server, rx) = start().await;
    let daemon = daemon(rx);
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": [1]},
        {"jsonrpc": "2.0", "method": "echo", "params": {"note": true}},
        {"jsonrpc": "2.0", "id": "b", "method": "fail"},
        {"jsonrpc": "2.0", "id": null, "method": "echo"},
    ]);
    let a = post(&server, batch.to_string()).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json(),
        json!([
            {"jsonrpc": "2.0", "result": [1], "id": 1},
            {"jsonrpc": "2.0", "error": {"code": -5, "message": "no such factory"}, "id": "b"},
            {"jsonrpc": "2.0", "result": {}, "id": null},
        ])
    );
    // Notifications only: nothing to answer.
    let a = post(
        &server,
        json!([{"jsonrpc": "2.0", "method": "echo"}]).to_string(),
    )
    .await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    server.shutdown().await;
    assert_eq!(
        daemon.await.unwrap(),
        ["echo", "echo", "fail", "echo", "echo"]
    );
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let (_dir, server, rx) = start().await;
    let daemon = daemon(rx);
    let request = |i: usize| json!({"jsonrpc": "2.0", "id": i, "method": "echo"});
    let too_many: Vec<Value> = (0..=MAX_BATCH).map(request).collect();
    let v = post(&server, Value::Array(too_many).to_string())
        .await
        .json();
    assert_eq!(v["error"]["code"], INVALID_REQUEST);
    assert_eq!(v["id"], Value::Null);
    let just_enough: Vec<Value> = (0..MAX_BATCH).map(request).collect();
    let v = post(&server, Value::Array(just_enough).to_string())
        .await
        .json();
    assert_eq!(v.as_array().unwrap().len(), MAX_BATCH);
    server.shutdown().await;
    assert_eq!(daemon.await.unwrap().len(), MAX_BATCH);
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(LOOPBACK).unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn no_server_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/", closed_port());
    // With a cookie left behind (a crashed daemon) and without one.
    let stale: PathBuf = dir.path().join(COOKIE_FILE);
    Credentials::random_cookie().write_cookie(&stale).unwrap();
    for cookie in [stale, dir.path().join("absent.cookie")] {
        match call(&ApiClient::new(url.clone(), cookie), "echo", json!({})).await {
            Err(ApiClientError::NotRunning { url: u }) => assert_eq!(u, url),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreadable_cookie_is_a_cookie_error() {
    let (_dir, server, mut rx) = start().await;
    std::fs::remove_file(server.cookie_path()).unwrap();
    match call(&client(&server), "echo", json!({})).await {
        Err(e @ ApiClientError::Cookie { .. }) => {
            let ApiClientError::Cookie { path, .. } = &e else {
                unreachable!()
            };
            assert_eq!(path, server.cookie_path());
            assert!(e.to_string().contains("data directory"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[cfg(unix)]
#[tokio::test]
async fn the_cookie_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, server, _rx) = start().await;
    assert_eq!(server.cookie_path(), dir.path().join("api.cookie"));
    let mode = std::fs::metadata(server.cookie_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let c = Credentials::read_cookie(server.cookie_path()).unwrap();
    assert_eq!(c.user, "__cookie__");
    assert_eq!(c.password.len(), 64);
}

#[tokio::test]
async fn a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = dir.path().join(COOKIE_FILE);
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0"] {
        match serve(addr.parse().unwrap(), &cookie).await {
            Err(e @ ApiServerError::NotLoopback { .. }) => {
                assert!(e.to_string().contains("loopback"), "{e}")
            }
            Err(e) => panic!("{addr}: {e}"),
            Ok(_) => panic!("{addr} served"),
        }
        assert!(!cookie.exists());
    }
}

#[tokio::test]
async fn shutdown_closes_the_port_and_removes_the_cookie() {
    let (_dir, server, rx) = start().await;
    let daemon = daemon(rx);
    let client = client(&server);
    assert_eq!(call(&client, "echo", json!([])).await.unwrap(), json!([]));
    let cookie = server.cookie_path().to_path_buf();
    server.shutdown().await;
    assert!(!cookie.exists());
    assert!(matches!(
        call(&client, "echo", json!([])).await,
        Err(ApiClientError::NotRunning { .. })
    ));
    // The daemon's receiver ends once the last connection closed.
    assert_eq!(daemon.await.unwrap(), ["echo"]);
}

#[tokio::test]
async fn dropping_the_server_removes_the_cookie() {
    let (_dir, server, _rx) = start().await;
    let cookie = server.cookie_path().to_path_buf();
    assert!(cookie.exists());
    drop(server);
    assert!(!cookie.exists());
}

#[tokio::test]
async fn a_daemon_gone_is_shutting_down() {
    let (_dir, server, rx) = start().await;
    drop(rx);
    match call(&client(&server), "echo", json!({})).await {
        Err(ApiClientError::Rpc(e)) => {
            assert_eq!(e.code, INTERNAL_ERROR);
            assert_eq!(e.message, "shutting down");
        }
        other => panic!("{other:?}"),
    }
}
