//! The error of a JSON-RPC call, as the daemon answers it and the client receives it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JSON-RPC 2.0: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC 2.0: not a valid request object (or an empty or too large batch).
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC 2.0: no such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC 2.0: invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC 2.0: internal error (also: shutting down, timed out).
pub const INTERNAL_ERROR: i64 = -32603;

/// Lowest application error code: JSON-RPC 2.0 reserves -32000 to -32768.
const APP_CODE_MIN: i64 = -31999;

/// A JSON-RPC error object: code, message and optional data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct ApiError {
    /// The error code: a JSON-RPC 2.0 code, or an application code from -1 down.
    pub code: i64,
    /// What went wrong, for a person.
    pub message: String,
    /// More about it, for a program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ApiError {
    /// An error with `code` and `message` and no data.
    fn new(code: i64, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// -32602: the method's parameters are wrong (`msg` says how).
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, msg)
    }

    /// -32601: the daemon has no method `method`.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    /// -32603: the daemon failed.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, msg)
    }

    /// An application error: `code` from -1 down to -31999, as the daemon documents it.
    pub fn app(code: i64, msg: impl Into<String>) -> Self {
        debug_assert!(
            (APP_CODE_MIN..=-1).contains(&code),
            "application error codes are -1 to {APP_CODE_MIN}, not {code}"
        );
        Self::new(code, msg)
    }

    /// The same error with `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700: the body is not JSON.
    pub(crate) fn parse_error(msg: impl std::fmt::Display) -> Self {
        Self::new(PARSE_ERROR, format!("Parse error: {msg}"))
    }

    /// -32600: not a valid request.
    pub(crate) fn invalid_request(msg: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_data_only_when_present() {
        assert_eq!(
            serde_json::to_value(ApiError::app(-4, "no")).unwrap(),
            json!({"code": -4, "message": "no"})
        );
        let e = ApiError::invalid_params("x").with_data(json!([1]));
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"code": -32602, "message": "x", "data": [1]})
        );
        let back: ApiError = serde_json::from_value(json!({"code": -1, "message": "m"})).unwrap();
        assert_eq!(back, ApiError::app(-1, "m"));
        assert_eq!(e.to_string(), "x (code -32602)");
    }
}
