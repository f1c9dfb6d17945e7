//! JSON-RPC as Bitcoin Core speaks it (`rpc/request.cpp`, `httprpc.cpp`): the legacy 1.0/1.1
//! envelope and 2.0, batches and notifications, and the HTTP status of each outcome.

use serde_json::Value;

use super::json::{obj, Json};
use std::collections::{HashMap, HashSet};

use crate::rpc::codes::{
    RPC_INVALID_PARAMETER, RPC_INVALID_REQUEST, RPC_METHOD_NOT_FOUND, RPC_PARSE_ERROR,
};

/// An RPC error: Core's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcError {
    /// Core's error code (`rpc/protocol.h`).
    pub code: i32,
    /// The message.
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    fn to_json(&self) -> Json {
        obj! { "code" => self.code, "message" => self.message.as_str() }
    }
}

/// Which envelope a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// 1.0/1.1: `result` and `error` both present; errors are HTTP errors.
    Legacy,
    /// 2.0: one of `result` or `error`; HTTP 200; no reply to notifications.
    V2,
}

/// What `JSONRPCRequest::parse` keeps between the requests of a batch: Core parses each
/// element into the same object, so a malformed element is answered with the id and version
/// of whatever was parsed before it.
#[derive(Debug, Clone)]
struct RequestState {
    /// `None` when the request had no `id` member.
    id: Option<Value>,
    version: Version,
}

impl Default for RequestState {
    fn default() -> Self {
        RequestState {
            id: Some(Value::Null),
            version: Version::Legacy,
        }
    }
}

impl RequestState {
    fn is_notification(&self) -> bool {
        self.id.is_none() && self.version == Version::V2
    }
}

/// A parsed call.
struct Call<'a> {
    method: &'a str,
    params: Value,
}

fn parse<'a>(v: &'a Value, state: &mut RequestState) -> Result<Call<'a>, RpcError> {
    let Some(request) = v.as_object() else {
        return Err(RpcError::new(RPC_INVALID_REQUEST, "Invalid Request object"));
    };
    state.id = request.get("id").cloned();
    state.version = Version::Legacy;
    match request.get("jsonrpc") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "1.0" => {}
        Some(Value::String(s)) if s == "2.0" => state.version = Version::V2,
        Some(Value::String(_)) => {
            return Err(RpcError::new(
                RPC_INVALID_REQUEST,
                "JSON-RPC version not supported",
            ))
        }
        Some(_) => {
            return Err(RpcError::new(
                RPC_INVALID_REQUEST,
                "jsonrpc field must be a string",
            ))
        }
    }
    let method = match request.get("method") {
        None | Some(Value::Null) => {
            return Err(RpcError::new(RPC_INVALID_REQUEST, "Missing method"))
        }
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(RpcError::new(
                RPC_INVALID_REQUEST,
                "Method must be a string",
            ))
        }
    };
    let params = match request.get("params") {
        Some(p @ (Value::Array(_) | Value::Object(_))) => p.clone(),
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(_) => {
            return Err(RpcError::new(
                RPC_INVALID_REQUEST,
                "Params must be an array or object",
            ))
        }
    };
    Ok(Call { method, params })
}

/// Core's `JSONRPCReplyObj`.
fn reply(result: Result<Json, RpcError>, state: &RequestState) -> Json {
    let mut o = Json::object();
    if state.version == Version::V2 {
        o.push("jsonrpc", "2.0");
    }
    match result {
        Ok(r) => {
            o.push("result", r);
            if state.version == Version::Legacy {
                o.push("error", Json::Null);
            }
        }
        Err(e) => {
            if state.version == Version::Legacy {
                o.push("result", Json::Null);
            }
            o.push("error", e.to_json());
        }
    }
    if let Some(id) = &state.id {
        o.push("id", Json::from(id));
    }
    o
}

/// Core's `JSONErrorReply`: an error as an HTTP error.
fn error_reply(e: RpcError, state: &RequestState) -> HttpReply {
    let status = match e.code {
        RPC_INVALID_REQUEST => 400,
        RPC_METHOD_NOT_FOUND => 404,
        _ => 500,
    };
    HttpReply {
        status,
        body: Some(reply(Err(e), state)),
    }
}

/// The HTTP answer to a JSON-RPC body.
#[derive(Debug, Clone)]
pub(crate) struct HttpReply {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (none for 204).
    pub body: Option<Json>,
}

/// A parsed request body: like Core's UniValue, an object keeps the first of duplicate keys
/// (`find_value` finds it), where `serde_json` would keep the last, so that a body naming two
/// methods runs the one Core runs.
struct Parsed {
    /// The body, first keys kept.
    value: Value,
    /// For each request (by position in a batch; 0 alone) whose named parameters repeat a name:
    /// that name (Core refuses such a call).
    repeated_params: HashMap<usize, String>,
}

/// A JSON document with every key of every object, in order.
enum Raw {
    Scalar(Value),
    Arr(Vec<Raw>),
    Obj(Vec<(String, Raw)>),
}

impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Raw, E> {
                Ok(Raw::Scalar(Value::Bool(b)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Raw, E> {
                Ok(Raw::Scalar(Value::from(n)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Raw, E> {
                Ok(Raw::Scalar(Value::from(n)))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Raw, E> {
                Ok(Raw::Scalar(Value::from(n)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Raw, E> {
                Ok(Raw::Scalar(Value::String(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Raw, E> {
                Ok(Raw::Scalar(Value::String(s)))
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Scalar(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element()? {
                    out.push(x);
                }
                Ok(Raw::Arr(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry()? {
                    out.push((k, v));
                }
                Ok(Raw::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Raw {
    /// The value, keeping the first of duplicate keys.
    fn first_wins(self) -> Value {
        match self {
            Raw::Scalar(v) => v,
            Raw::Arr(a) => Value::Array(a.into_iter().map(Raw::first_wins).collect()),
            Raw::Obj(o) => {
                let mut map = serde_json::Map::new();
                for (k, v) in o {
                    if !map.contains_key(&k) {
                        map.insert(k, v.first_wins());
                    }
                }
                Value::Object(map)
            }
        }
    }

    /// For a request object: the first name its named parameters repeat.
    fn repeated_param(&self) -> Option<String> {
        let Raw::Obj(request) = self else {
            return None;
        };
        let (_, Raw::Obj(params)) = request.iter().find(|(k, _)| k == "params")? else {
            return None;
        };
        let mut seen = HashSet::new();
        params
            .iter()
            .find(|(k, _)| !seen.insert(k.as_str()))
            .map(|(k, _)| k.clone())
    }
}

/// Parse a request body. UniValue keeps a number's text, so Core parses `1e400` and only its
/// reader (`getInt`, `AmountFromValue`) refuses it; `serde_json` refuses the whole document
/// instead. Numbers beyond `f64` are therefore read as the largest finite magnitude, which every
/// reader refuses just as Core's does ("JSON integer out of range", "Invalid amount").
fn parse_json(body: &[u8]) -> Option<Parsed> {
    let raw = match serde_json::from_slice::<Raw>(body) {
        Ok(r) => r,
        Err(_) => serde_json::from_slice(&clamp_huge_numbers(body)?).ok()?,
    };
    let repeated_params = match &raw {
        Raw::Arr(batch) => batch
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.repeated_param()?)))
            .collect(),
        single => single
            .repeated_param()
            .map(|k| (0, k))
            .into_iter()
            .collect(),
    };
    Some(Parsed {
        value: raw.first_wins(),
        repeated_params,
    })
}

/// `body` with every number literal outside strings that overflows `f64` replaced by
/// `±1e308`; `None` when there is none.
fn clamp_huge_numbers(body: &[u8]) -> Option<Vec<u8>> {
    let is_number_byte =
        |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut in_string = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if in_string {
            out.push(b);
            match b {
                b'\\' => {
                    if let Some(&next) = body.get(i + 1) {
                        out.push(next);
                        i += 1;
                    }
                }
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
        } else if b == b'-' || b.is_ascii_digit() {
            let end = body[i..]
                .iter()
                .position(|&c| !is_number_byte(c))
                .map_or(body.len(), |n| i + n);
            let token = &body[i..end];
            let overflows = std::str::from_utf8(token)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(f64::is_infinite);
            if overflows {
                changed = true;
                out.extend_from_slice(if b == b'-' { b"-1e308" } else { b"1e308" });
            } else {
                out.extend_from_slice(token);
            }
            i = end;
            continue;
        }
        out.push(b);
        i += 1;
    }
    changed.then_some(out)
}

/// Answer an HTTP body: parse it, run each call with `exec`, wrap the results like Core.
pub(crate) fn handle_body(
    body: &[u8],
    exec: &mut dyn FnMut(&str, &Value) -> Result<Json, RpcError>,
) -> HttpReply {
    let mut state = RequestState::default();
    let Some(Parsed {
        value: request,
        repeated_params,
    }) = parse_json(body)
    else {
        return error_reply(RpcError::new(RPC_PARSE_ERROR, "Parse error"), &state);
    };
    // Core's `transformNamedArguments` refuses a name given twice.
    let mut exec = |i: usize, method: &str, params: &Value| match repeated_params.get(&i) {
        Some(name) if params.is_object() => Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            format!("Parameter {name} specified multiple times"),
        )),
        _ => exec(method, params),
    };
    match &request {
        Value::Object(_) => {
            let call = match parse(&request, &mut state) {
                Ok(c) => c,
                Err(e) => return error_reply(e, &state),
            };
            let result = exec(0, call.method, &call.params);
            if state.is_notification() {
                return HttpReply {
                    status: 204,
                    body: None,
                };
            }
            match result {
                Ok(r) => HttpReply {
                    status: 200,
                    body: Some(reply(Ok(r), &state)),
                },
                // 2.0 catches errors into an HTTP 200; legacy makes them HTTP errors.
                Err(e) if state.version == Version::V2 => HttpReply {
                    status: 200,
                    body: Some(reply(Err(e), &state)),
                },
                Err(e) => error_reply(e, &state),
            }
        }
        Value::Array(batch) => {
            let mut replies = Vec::new();
            for (i, element) in batch.iter().enumerate() {
                let result =
                    parse(element, &mut state).and_then(|call| exec(i, call.method, &call.params));
                if !state.is_notification() {
                    replies.push(reply(result, &state));
                }
            }
            if replies.is_empty() && !batch.is_empty() {
                return HttpReply {
                    status: 204,
                    body: None,
                };
            }
            HttpReply {
                status: 200,
                body: Some(Json::Arr(replies)),
            }
        }
        _ => error_reply(
            RpcError::new(RPC_PARSE_ERROR, "Top-level object parse error"),
            &state,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str) -> (u16, String) {
        let mut exec = |m: &str, p: &Value| -> Result<Json, RpcError> {
            match m {
                "echo" => Ok(Json::from(p)),
                "fail" => Err(RpcError::new(-8, "bad")),
                _ => Err(RpcError::new(RPC_METHOD_NOT_FOUND, "Method not found")),
            }
        };
        let r = handle_body(body.as_bytes(), &mut exec);
        (r.status, r.body.map(|b| b.write()).unwrap_or_default())
    }

    #[test]
    fn envelopes_and_statuses_are_core_s() {
        assert_eq!(
            run(r#"{"method":"echo","params":[1],"id":7}"#),
            (200, r#"{"result":[1],"error":null,"id":7}"#.into())
        );
        assert_eq!(
            run(r#"{"jsonrpc":"2.0","method":"echo","id":"a"}"#),
            (200, r#"{"jsonrpc":"2.0","result":[],"id":"a"}"#.into())
        );
        assert_eq!(
            run(r#"{"method":"fail","id":1}"#),
            (
                500,
                r#"{"result":null,"error":{"code":-8,"message":"bad"},"id":1}"#.into()
            )
        );
        assert_eq!(
            run(r#"{"jsonrpc":"2.0","method":"fail","id":1}"#),
            (
                200,
                r#"{"jsonrpc":"2.0","error":{"code":-8,"message":"bad"},"id":1}"#.into()
            )
        );
        assert_eq!(run(r#"{"method":"nope","id":1}"#).0, 404);
        assert_eq!(run(r#"{"id":1}"#).0, 400);
        assert_eq!(
            run("{"),
            (
                500,
                r#"{"result":null,"error":{"code":-32700,"message":"Parse error"},"id":null}"#
                    .into()
            )
        );
        assert_eq!(run("3").0, 500);
        assert_eq!(
            run(r#"{"jsonrpc":"2.0","method":"echo"}"#),
            (204, String::new())
        );
        // A 1.0 request without id is no notification.
        assert_eq!(
            run(r#"{"method":"echo"}"#),
            (200, r#"{"result":[],"error":null}"#.into())
        );
        assert_eq!(run(r#"{"jsonrpc":3,"method":"echo","id":1}"#).0, 400);
        assert_eq!(run(r#"{"jsonrpc":"3.0","method":"echo","id":1}"#).0, 400);
        assert_eq!(run(r#"{"method":"echo","params":3,"id":1}"#).0, 400);
    }

    #[test]
    fn numbers_beyond_f64_are_read_not_refused() {
        assert_eq!(
            run(r#"{"method":"echo","params":[1e400,-1E+999,"1e400",{"k\"1e400":2e400}],"id":1}"#),
            (
                200,
                r#"{"result":[1e+308,-1e+308,"1e400",{"k\"1e400":1e+308}],"error":null,"id":1}"#
                    .into()
            )
        );
        // Still refused: what is not JSON at all.
        assert_eq!(run("[1e400,").0, 500);
        assert_eq!(run("[1e]").0, 500);
        assert_eq!(clamp_huge_numbers(b"[1, 2.5e10]"), None);
    }

    #[test]
    fn the_first_of_duplicate_keys_counts_as_in_core() {
        assert_eq!(
            run(r#"{"method":"echo","method":"fail","params":[1],"params":[2],"id":1,"id":2}"#),
            (200, r#"{"result":[1],"error":null,"id":1}"#.into())
        );
        assert_eq!(
            run(r#"{"method":"echo","params":{"a":{"b":1,"b":2}},"id":1}"#),
            (
                200,
                r#"{"result":{"a":{"b":1}},"error":null,"id":1}"#.into()
            )
        );
        assert_eq!(
            run(r#"{"method":"echo","params":{"x":1,"y":2,"x":3},"id":1}"#),
            (
                500,
                r#"{"result":null,"error":{"code":-8,"message":"Parameter x specified multiple times"},"id":1}"#.into()
            )
        );
        let (status, body) = run(
            r#"[{"method":"echo","params":{"a":1}},{"method":"echo","params":{"a":1,"a":2},"id":2}]"#,
        );
        assert_eq!(status, 200);
        assert_eq!(
            body,
            r#"[{"result":{"a":1},"error":null},{"result":null,"error":{"code":-8,"message":"Parameter a specified multiple times"},"id":2}]"#
        );
    }

    #[test]
    fn batches_answer_each_element() {
        let (status, body) = run(
            r#"[{"method":"echo","id":1},5,{"jsonrpc":"2.0","method":"echo"},{"jsonrpc":"2.0","method":"fail","id":2}]"#,
        );
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0]["id"], 1);
        // The non-object element is answered with what the previous element left behind.
        assert_eq!(a[1]["error"]["code"], -32600);
        assert_eq!(a[1]["id"], 1);
        assert_eq!(a[2]["error"]["code"], -8);
        assert_eq!(run("[]"), (200, "[]".into()));
        assert_eq!(
            run(r#"[{"jsonrpc":"2.0","method":"echo"}]"#),
            (204, String::new())
        );
    }
}
