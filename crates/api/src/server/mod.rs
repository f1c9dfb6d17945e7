//! The daemon's side: [`serve`] listens on loopback, writes the cookie, and hands every
//! authenticated call to the daemon as a [`Request`] on a channel.

mod http;
mod jsonrpc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use superscalar_chain::rpc::auth::{AuthError, Credentials};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::error::ApiError;

/// Largest request body (1 MiB); larger bodies get HTTP 413.
pub const MAX_BODY_SIZE: usize = 1024 * 1024;
/// Most requests in one batch; a larger batch is refused whole (-32600).
pub const MAX_BATCH: usize = 100;
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Requests waiting for the daemon at most; more wait to be queued.
pub const QUEUE_CAPACITY: usize = 1024;
/// How long the daemon may take to answer a request (a payment can take long); then -32603.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a client may take to send a request head or body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections get to finish once the server stops.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Most bytes of a request head.
const MAX_HEADERS_SIZE: usize = 8192;

/// One call for the daemon: its method and parameters, and where the answer goes.
#[derive(Debug)]
pub struct Request {
    /// The method's name.
    pub method: String,
    /// The parameters: an object (named) or an array (positional); absent or `null` is `{}`.
    pub params: Value,
    reply: oneshot::Sender<Result<Value, ApiError>>,
}

impl Request {
    /// Answer the call (dropped silently if its caller has gone).
    pub fn reply(self, r: Result<Value, ApiError>) {
        let _ = self.reply.send(r);
    }
}

/// Why the control API cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// The address is not a loopback address.
    #[error(
        "refusing to serve the control API on {addr}: it is served on loopback only \
         (127.0.0.1 or ::1), since anyone who reaches it with the cookie controls the daemon"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The address cannot be bound.
    #[error("cannot listen on {addr} for the control API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The cookie file cannot be written.
    #[error("cannot write the control API's cookie: {0}")]
    Cookie(#[source] AuthError),
}

/// A running control API server. [`ApiServer::shutdown`], or dropping it, stops it.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    cookie_path: PathBuf,
    credentials: Credentials,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

/// Serve the control API on `addr` (loopback only; port 0 picks a free port) with a fresh cookie
/// written to `cookie_path`. The daemon answers the [`Request`]s of the returned receiver, which
/// ends once the server stopped and its last connection closed.
pub async fn serve(
    addr: SocketAddr,
    cookie_path: &Path,
) -> Result<(ApiServer, mpsc::Receiver<Request>), ApiServerError> {
    if !addr.ip().to_canonical().is_loopback() {
        return Err(ApiServerError::NotLoopback { addr });
    }
    let bind_err = |source| ApiServerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let credentials = Credentials::random_cookie();
    credentials
        .write_cookie(cookie_path)
        .map_err(ApiServerError::Cookie)?;
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(http::Shared {
        credentials: credentials.clone(),
        tx,
        read_timeout: READ_TIMEOUT,
    });
    let accept = tokio::spawn(accept_loop(listener, shared, stop_rx));
    tracing::info!(addr = %local_addr, cookie = %cookie_path.display(), "control API listening");
    let server = ApiServer {
        local_addr,
        cookie_path: cookie_path.to_path_buf(),
        credentials,
        stop,
        accept: Some(accept),
    };
    Ok((server, rx))
}

impl ApiServer {
    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL clients call, e.g. `http://127.0.0.1:9737/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// The cookie file.
    pub fn cookie_path(&self) -> &Path {
        &self.cookie_path
    }

    /// Stop accepting connections (the port is closed when this returns), remove the cookie file,
    /// and let open connections finish.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.remove_cookie();
    }

    /// Remove the cookie file, unless another daemon has replaced it with its own.
    fn remove_cookie(&self) {
        match Credentials::read_cookie(&self.cookie_path) {
            Ok(c) if c == self.credentials => {
                if let Err(e) = std::fs::remove_file(&self.cookie_path) {
                    tracing::warn!(path = %self.cookie_path.display(), error = %e, "cannot remove the API cookie");
                }
            }
            _ => {}
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(accept) = self.accept.take() {
            // Dropping the loop closes the listener at once.
            accept.abort();
        }
        self.remove_cookie();
    }
}

/// Accept connections until asked to stop.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<http::Shared>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = stopped(&mut stop_rx) => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut stop_rx) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "control API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| http::handle(req, Arc::clone(&shared)));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .max_header_size(MAX_HEADERS_SIZE)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "control API connection ended");
                    }
                }
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
                }
            }
        });
    }
    tracing::info!("control API stopped");
}

/// Resolves once a stop was asked for (or nobody can ask any more).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
