//! The HTTP side, as `chaind` serves it: POST only (405), HTTP Basic authentication before
//! anything of the body is read (401, a wrong password 250 ms later), a bounded body (413), and
//! the JSON-RPC answer as `application/json` (or 204 when there is none).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Method, Response, StatusCode};
use superscalar_chain::rpc::auth::Credentials;
use tokio::sync::mpsc;

use super::{jsonrpc, Request, MAX_BODY_SIZE};

/// How long a wrong password delays its 401 (Core's brute-force deterrent).
const WRONG_PASSWORD_DELAY: Duration = Duration::from_millis(250);

/// What every request handler needs.
pub(crate) struct Shared {
    /// The one accepted cookie.
    pub credentials: Credentials,
    /// The daemon's queue.
    pub tx: mpsc::Sender<Request>,
    /// How long a client may take to send a request head or body.
    pub read_timeout: Duration,
}

/// A response with `status` and a text body.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::UNAUTHORIZED, "");
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"jsonrpc\""),
    );
    r
}

/// The response closes the connection (its request's body was not read to the end).
fn closing(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Answer one HTTP request.
pub(crate) async fn handle(
    req: hyper::Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the control API handles only POST requests",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(r);
    }
    let Some(auth) = req.headers().get(AUTHORIZATION) else {
        return Ok(unauthorized());
    };
    if !shared.credentials.check_header(auth.as_bytes()) {
        tracing::warn!("control API: wrong cookie");
        // Only this connection waits.
        tokio::time::sleep(WRONG_PASSWORD_DELAY).await;
        return Ok(unauthorized());
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_SIZE as u64) {
        return Ok(closing(text(StatusCode::PAYLOAD_TOO_LARGE, "")));
    }
    let body = Limited::new(req.into_body(), MAX_BODY_SIZE);
    let bytes = match tokio::time::timeout(shared.read_timeout, body.collect()).await {
        Err(_) => return Ok(closing(text(StatusCode::REQUEST_TIMEOUT, ""))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(closing(text(StatusCode::PAYLOAD_TOO_LARGE, "")))
        }
        Ok(Err(_)) => return Ok(closing(text(StatusCode::BAD_REQUEST, ""))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let Some(answer) = jsonrpc::answer(&bytes, &shared.tx).await else {
        return Ok(text(StatusCode::NO_CONTENT, ""));
    };
    let mut body = serde_json::to_vec(&answer).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}
