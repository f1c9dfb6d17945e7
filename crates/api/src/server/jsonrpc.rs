//! JSON-RPC 2.0 envelopes: a body parsed into calls, the calls handed to the daemon in order, and
//! the daemon's answers wrapped into responses.

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};

use super::{Request, MAX_BATCH, REQUEST_TIMEOUT};
use crate::error::ApiError;

/// A valid request object.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    /// `None` for a notification.
    id: Option<Value>,
    method: String,
    /// An object or an array.
    params: Value,
}

/// One request object of a body: a call, or why it is none (answered with `id`).
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Call(Call),
    Invalid { id: Value, error: ApiError },
}

/// A parsed body.
#[derive(Debug, Clone, PartialEq)]
enum Body {
    Single(Entry),
    Batch(Vec<Entry>),
}

/// Parse a body; an error is answered alone, with id `null`.
fn parse_body(bytes: &[u8]) -> Result<Body, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(ApiError::parse_error)?;
    match value {
        Value::Array(batch) if batch.is_empty() => {
            Err(ApiError::invalid_request("Invalid Request: empty batch"))
        }
        Value::Array(batch) if batch.len() > MAX_BATCH => Err(ApiError::invalid_request(format!(
            "Invalid Request: batch of {} requests, at most {MAX_BATCH} allowed",
            batch.len()
        ))),
        Value::Array(batch) => Ok(Body::Batch(batch.into_iter().map(parse_entry).collect())),
        single => Ok(Body::Single(parse_entry(single))),
    }
}

/// Check one request object.
fn parse_entry(value: Value) -> Entry {
    let invalid = |id: Value, message: &str| Entry::Invalid {
        id,
        error: ApiError::invalid_request(format!("Invalid Request: {message}")),
    };
    let Value::Object(mut request) = value else {
        return invalid(Value::Null, "not an object");
    };
    let id = match request.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => Some(id),
        Some(_) => return invalid(Value::Null, "id must be a number, a string or null"),
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    match request.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return invalid(answer_id, "jsonrpc must be \"2.0\""),
    }
    let method = match request.remove("method") {
        Some(Value::String(m)) => m,
        _ => return invalid(answer_id, "method must be a string"),
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => return invalid(answer_id, "params must be an object or an array"),
    };
    Entry::Call(Call { id, method, params })
}

/// A JSON-RPC 2.0 response object.
fn response(id: Value, result: Result<Value, ApiError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(error) => json!({"jsonrpc": "2.0", "error": error, "id": id}),
    }
}

/// A call on its way: handed to the daemon, or already answered.
enum Pending {
    Waiting(oneshot::Receiver<Result<Value, ApiError>>),
    Done(Result<Value, ApiError>),
}

fn timed_out() -> ApiError {
    ApiError::internal("timed out")
}

/// Hand `call` to the daemon.
async fn submit(tx: &mpsc::Sender<Request>, call: &mut Call, deadline: Instant) -> Pending {
    let (reply, answer) = oneshot::channel();
    let request = Request {
        method: std::mem::take(&mut call.method),
        params: std::mem::take(&mut call.params),
        reply,
    };
    match timeout_at(deadline, tx.send(request)).await {
        Err(_) => Pending::Done(Err(timed_out())),
        Ok(Err(_)) => Pending::Done(Err(ApiError::internal("shutting down"))),
        Ok(Ok(())) => Pending::Waiting(answer),
    }
}

/// Wait for the daemon's answer.
async fn outcome(pending: Pending, deadline: Instant) -> Result<Value, ApiError> {
    match pending {
        Pending::Done(r) => r,
        Pending::Waiting(answer) => match timeout_at(deadline, answer).await {
            Err(_) => Err(timed_out()),
            Ok(Err(_)) => Err(ApiError::internal(
                "the daemon dropped the request without answering",
            )),
            Ok(Ok(r)) => r,
        },
    }
}

/// Answer a body: every call is handed to the daemon in order (a batch's all at once), then
/// the answers are collected. `None` when there is nothing to answer (notifications only).
pub(crate) async fn answer(bytes: &[u8], tx: &mpsc::Sender<Request>) -> Option<Value> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let (entries, batch) = match parse_body(bytes) {
        Err(e) => return Some(response(Value::Null, Err(e))),
        Ok(Body::Single(entry)) => (vec![entry], false),
        Ok(Body::Batch(entries)) => (entries, true),
    };
    let mut pending = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry {
            Entry::Call(mut call) => {
                let p = submit(tx, &mut call, deadline).await;
                pending.push((call.id, p));
            }
            Entry::Invalid { id, error } => pending.push((Some(id), Pending::Done(Err(error)))),
        }
    }
    let mut responses = Vec::with_capacity(pending.len());
    for (id, p) in pending {
        let result = outcome(p, deadline).await;
        if let Some(id) = id {
            responses.push(response(id, result));
        }
    }
    match (batch, responses.len()) {
        (_, 0) => None,
        (false, _) => responses.pop(),
        (true, _) => Some(Value::Array(responses)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{INVALID_REQUEST, PARSE_ERROR};

    fn call(id: Option<Value>, method: &str, params: Value) -> Entry {
        Entry::Call(Call {
            id,
            method: method.into(),
            params,
        })
    }

    fn invalid_code(entry: &Entry) -> (Value, i64) {
        match entry {
            Entry::Invalid { id, error } => (id.clone(), error.code),
            Entry::Call(c) => panic!("valid: {c:?}"),
        }
    }

    fn single(body: &str) -> Entry {
        match parse_body(body.as_bytes()).unwrap() {
            Body::Single(e) => e,
            b => panic!("not single: {b:?}"),
        }
    }

    #[test]
    fn parses_requests_and_notifications() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1]}"#),
            call(Some(json!(1)), "m", json!([1]))
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":"a","method":"m","params":null}"#),
            call(Some(json!("a")), "m", json!({}))
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#),
            call(Some(Value::Null), "m", json!({}))
        );
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"m","params":{"a":1}}"#),
            call(None, "m", json!({"a": 1}))
        );
    }

    #[test]
    fn refuses_what_is_no_request() {
        assert_eq!(parse_body(b"{").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_body(b"").unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_body(b"[]").unwrap_err().code, INVALID_REQUEST);
        let too_many = format!("[{}]", vec!["1"; MAX_BATCH + 1].join(","));
        assert_eq!(
            parse_body(too_many.as_bytes()).unwrap_err().code,
            INVALID_REQUEST
        );
        let cases = [
            ("3", Value::Null),
            (r#"{"jsonrpc":"1.0","id":4,"method":"m"}"#, json!(4)),
            (r#"{"id":4,"method":"m"}"#, json!(4)),
            (r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#, Value::Null),
            (r#"{"jsonrpc":"2.0","id":5,"method":7}"#, json!(5)),
            (r#"{"jsonrpc":"2.0","id":5}"#, json!(5)),
            (
                r#"{"jsonrpc":"2.0","id":6,"method":"m","params":3}"#,
                json!(6),
            ),
        ];
        for (body, id) in cases {
            assert_eq!(invalid_code(&single(body)), (id, INVALID_REQUEST), "{body}");
        }
    }

    #[tokio::test]
    async fn answers_in_order_and_skips_notifications() {
        let (tx, mut rx) = mpsc::channel::<Request>(8);
        let daemon = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(r) = rx.recv().await {
                seen.push(r.method.clone());
                let params = r.params.clone();
                r.reply(Ok(params));
            }
            seen
        });
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"a","params":[1]},
                        {"jsonrpc":"2.0","method":"b"},
                        7,
                        {"jsonrpc":"2.0","id":"x","method":"c","params":{"k":2}}]"#;
        let got = answer(body, &tx).await.unwrap();
        assert_eq!(
            got,
            json!([
                {"jsonrpc": "2.0", "result": [1], "id": 1},
                {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request: not an object"}, "id": null},
                {"jsonrpc": "2.0", "result": {"k": 2}, "id": "x"},
            ])
        );
        let only_notifications = br#"[{"jsonrpc":"2.0","method":"d"}]"#;
        assert_eq!(answer(only_notifications, &tx).await, None);
        drop(tx);
        assert_eq!(daemon.await.unwrap(), ["a", "b", "c", "d"]);
    }
}
