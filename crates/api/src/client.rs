//! The blocking client a command-line tool calls a daemon with.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use superscalar_chain::rpc::auth::{AuthError, Credentials};

use crate::error::ApiError;

/// How long [`ApiClient::call`] waits for an answer (a little over the server's
/// [`REQUEST_TIMEOUT`](crate::REQUEST_TIMEOUT), so the server's "timed out" arrives first).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(310);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER_SIZE: u64 = 64 * 1024 * 1024;

/// Ids of the requests of this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a call did not return the daemon's result.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// Nothing listens at the URL.
    #[error("no daemon answers at {url}: is the daemon running?")]
    NotRunning {
        /// The URL called.
        url: String,
    },
    /// The cookie file cannot be read (the daemon is not running, or this is not its data
    /// directory).
    #[error(
        "cannot read the API cookie {}: {reason} (is the daemon running, with this data directory?)",
        path.display()
    )]
    Cookie {
        /// The cookie file.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// The daemon refused the cookie.
    #[error(
        "the daemon refused the API cookie (HTTP 401): the cookie file belongs to another daemon \
         than the one at this address"
    )]
    Unauthorized,
    /// The daemon answered the call with an error.
    #[error("{0}")]
    Rpc(ApiError),
    /// The answer is not a JSON-RPC 2.0 answer to the call.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// A blocking JSON-RPC client of a daemon's control API.
#[derive(Clone)]
pub struct ApiClient {
    url: String,
    cookie_path: PathBuf,
    agent: ureq::Agent,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("url", &self.url)
            .field("cookie_path", &self.cookie_path)
            .finish_non_exhaustive()
    }
}

fn refused(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Transport(t) if t.kind() == ureq::ErrorKind::ConnectionFailed)
}

impl ApiClient {
    /// A client of the daemon at `url` (e.g. `http://127.0.0.1:9737/`) that authenticates with
    /// the cookie in `cookie_path`.
    pub fn new(url: impl Into<String>, cookie_path: PathBuf) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(CLIENT_TIMEOUT)
            // A fresh connection per call: a restarted daemon never meets a stale one.
            .max_idle_connections(0)
            .build();
        ApiClient {
            url: url.into(),
            cookie_path,
            agent,
        }
    }

    /// The URL this client calls.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cookie file this client reads.
    pub fn cookie_path(&self) -> &Path {
        &self.cookie_path
    }

    /// Call `method` with `params` (an object, an array, or `null`): the daemon's result.
    /// The cookie is read again on each call, since a restarted daemon writes a new one.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, ApiClientError> {
        let credentials = match Credentials::read_cookie(&self.cookie_path) {
            Ok(c) => c,
            Err(AuthError::Cookie { reason, .. }) => return Err(self.no_cookie(reason)),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = match self
            .agent
            .post(&self.url)
            .set("Authorization", &credentials.basic_header())
            .send_json(request)
        {
            Ok(r) => r,
            Err(ureq::Error::Status(401, _)) => return Err(ApiClientError::Unauthorized),
            Err(ureq::Error::Status(code, r)) => {
                return Err(ApiClientError::Protocol(format!(
                    "HTTP {code} {}",
                    r.status_text()
                )))
            }
            Err(e) if refused(&e) => return Err(self.not_running()),
            Err(e) => return Err(ApiClientError::Protocol(e.to_string())),
        };
        if response.status() != 200 {
            return Err(ApiClientError::Protocol(format!(
                "HTTP {} {} without an answer",
                response.status(),
                response.status_text()
            )));
        }
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(MAX_ANSWER_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ApiClientError::Protocol(format!("cannot read the answer: {e}")))?;
        if bytes.len() as u64 > MAX_ANSWER_SIZE {
            return Err(ApiClientError::Protocol(format!(
                "answer larger than {MAX_ANSWER_SIZE} bytes"
            )));
        }
        let mut answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiClientError::Protocol(format!("answer is not JSON: {e}")))?;
        if let Some(error) = answer.get_mut("error").filter(|e| !e.is_null()) {
            let error: ApiError = serde_json::from_value(error.take()).map_err(|e| {
                ApiClientError::Protocol(format!("error is not a JSON-RPC error: {e}"))
            })?;
            return Err(ApiClientError::Rpc(error));
        }
        if answer.get("id") != Some(&json!(id)) {
            return Err(ApiClientError::Protocol(format!(
                "answer to request {id} carries id {}",
                answer.get("id").unwrap_or(&Value::Null)
            )));
        }
        match answer.get_mut("result") {
            Some(result) => Ok(result.take()),
            None => Err(ApiClientError::Protocol(
                "answer has neither result nor error".into(),
            )),
        }
    }

    fn not_running(&self) -> ApiClientError {
        ApiClientError::NotRunning {
            url: self.url.clone(),
        }
    }

    /// The error for an unreadable cookie: [`ApiClientError::NotRunning`] when nothing listens
    /// at the URL either (the usual case: the daemon stopped and removed its cookie), else
    /// [`ApiClientError::Cookie`].
    fn no_cookie(&self, reason: String) -> ApiClientError {
        // Unauthenticated, so the daemon refuses it before reading anything.
        match self.agent.post(&self.url).call() {
            Err(e) if refused(&e) => self.not_running(),
            _ => ApiClientError::Cookie {
                path: self.cookie_path.clone(),
                reason,
            },
        }
    }
}
