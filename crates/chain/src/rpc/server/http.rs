//! HTTP as Core's `httpserver.cpp` and `httprpc.cpp` serve it: POST only, HTTP Basic
//! authentication (a wrong password costs 250 ms), bounded headers and bodies, timeouts, and the
//! JSON-RPC reply with its status.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::jsonrpc::{handle_body, RpcError};
use super::methods::{dispatch, Ctx};
use crate::rpc::auth::Credentials;
use crate::rpc::codes::RPC_INTERNAL_ERROR;

/// Largest request body (Core's `MAX_BODY_SIZE`, 32 MiB); larger bodies get HTTP 413.
pub const MAX_BODY_SIZE: usize = 32 * 1024 * 1024;
/// Largest request head (Core's `MAX_HEADERS_SIZE`); larger heads get HTTP 431.
pub const MAX_HEADERS_SIZE: usize = 8192;
/// How long a wrong password delays its 401 (Core's brute-force deterrent).
const WRONG_PASSWORD_DELAY: Duration = Duration::from_millis(250);

/// What every request handler needs.
pub(crate) struct Shared {
    /// The methods' context.
    pub ctx: Arc<Ctx>,
    /// The one accepted user and password.
    pub credentials: Credentials,
    /// Read (and write) timeout.
    pub timeout: Duration,
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

fn closing(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Answer one HTTP request.
pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "JSONRPC server handles only POST requests",
        ));
    }
    let Some(auth) = req.headers().get(AUTHORIZATION) else {
        return Ok(unauthorized());
    };
    if !shared.credentials.check_header(auth.as_bytes()) {
        tracing::warn!("incorrect RPC password attempt");
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
    let bytes = match tokio::time::timeout(shared.timeout, body.collect()).await {
        Err(_) => return Ok(closing(text(StatusCode::REQUEST_TIMEOUT, ""))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(closing(text(StatusCode::PAYLOAD_TOO_LARGE, "")))
        }
        Ok(Err(_)) => return Ok(closing(text(StatusCode::BAD_REQUEST, ""))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let ctx = Arc::clone(&shared.ctx);
    let reply = tokio::task::spawn_blocking(move || {
        handle_body(&bytes, &mut |method, params| dispatch(&ctx, method, params))
    })
    .await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            // A panic outside a handler (handlers catch their own).
            let err = RpcError::new(RPC_INTERNAL_ERROR, format!("Internal error: {e}"));
            let body = format!(
                "{{\"result\":null,\"error\":{{\"code\":{},\"message\":{}}},\"id\":null}}\n",
                err.code,
                serde_json::to_string(&err.message).unwrap_or_default()
            );
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(r);
        }
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match reply.body {
        Some(json) => {
            let mut r = Response::new(Full::new(Bytes::from(json.write() + "\n")));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        None => Response::new(Full::new(Bytes::new())),
    };
    *response.status_mut() = status;
    Ok(response)
}

/// A stream whose writes fail after `timeout` without progress, so a client that stops
/// reading cannot hold its connection (and its slot) forever.
pub(crate) struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.stalled = None;
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, poll)
    }
}

use std::future::Future as _;
