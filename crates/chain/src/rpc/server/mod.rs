//! `chaind`: Bitcoin Core's JSON-RPC served from an [`EmbeddedChain`].
//!
//! [`Chaind::start`] opens (or creates) a regtest chain in `<data_dir>/regtest` and serves
//! Core's RPC on its own thread and tokio runtime. The layout is Core's, so the real
//! `bitcoin-cli -regtest -datadir=<data_dir> -rpcport=<port>` works against it: blocks and
//! chainstate in `<data_dir>/regtest`, the cookie in `<data_dir>/regtest/.cookie` (written at
//! start, readable by its owner only, removed at stop), and, like `-persistmempool`, the
//! mempool in `<data_dir>/regtest/mempool.dat` between runs.
//!
//! The HTTP side follows Core's `httpserver.cpp`/`httprpc.cpp`: POST only (405), HTTP Basic
//! authentication (401, with 250 ms more for a wrong password), 32 MiB bodies (413), 8 KiB
//! heads (431), a read and write timeout, and a cap on concurrent connections. The JSON-RPC side
//! follows `request.cpp`: 1.0/1.1 and 2.0 envelopes, batches, notifications, positional and
//! named parameters, and Core's error codes and messages. Like a node with `-txindex=1`,
//! `getrawtransaction` finds any transaction of the active chain.

mod descriptor;
mod encode;
mod http;
mod json;
mod jsonrpc;
mod methods;
mod params;
mod persist;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Semaphore};

pub use http::{MAX_BODY_SIZE, MAX_HEADERS_SIZE};
pub use methods::MAX_GENERATE_BLOCKS;
pub use persist::MempoolLoad;

use crate::policy::PolicyConfig;
use crate::rpc::auth::{Auth, AuthError, Credentials, COOKIE_FILE};
use crate::{ChainConfig, ChainError, EmbeddedChain};

/// Core's regtest RPC port, on loopback.
pub const DEFAULT_RPC_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 18443);
/// Connections served at once; more wait to be accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request head or body, or to read a reply (Core's
/// `-rpcservertimeout` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The network directory under the data directory, as Core names regtest's.
pub const NETWORK_DIR: &str = "regtest";

/// How to run `chaind`.
#[derive(Debug, Clone)]
pub struct ChaindConfig {
    /// The data directory (Core's `-datadir`); the chain lives in its `regtest` directory.
    pub data_dir: PathBuf,
    /// Where to listen; port 0 picks a free port ([`ChaindHandle::local_addr`] tells which).
    pub bind: SocketAddr,
    /// The user and password clients must send; `None` writes a fresh cookie instead.
    pub credentials: Option<Credentials>,
    /// Allow a non-loopback `bind` (refused unless `credentials` are set too).
    pub allow_remote: bool,
    /// Relay policy of the mempool.
    pub policy: PolicyConfig,
    /// Save the mempool at stop and load it at start (Core's `-persistmempool`).
    pub persist_mempool: bool,
    /// Connections served at once.
    pub max_connections: usize,
    /// Read and write timeout of a connection.
    pub timeout: Duration,
    /// Stop on SIGINT and SIGTERM (for the `superscalar chaind` process).
    pub stop_on_signals: bool,
}

impl ChaindConfig {
    /// Defaults for `data_dir`: loopback on port 18443, cookie authentication, persistent
    /// mempool.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ChaindConfig {
            data_dir: data_dir.into(),
            bind: DEFAULT_RPC_BIND,
            credentials: None,
            allow_remote: false,
            policy: PolicyConfig::default(),
            persist_mempool: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            timeout: DEFAULT_TIMEOUT,
            stop_on_signals: false,
        }
    }
}

/// Why `chaind` cannot start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ChaindError {
    /// A non-loopback address without the explicit allowance and user/password authentication.
    #[error("refusing to serve RPC on {0}: not a loopback address (allow it explicitly, with user/password authentication)")]
    RemoteBind(SocketAddr),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The chain cannot be opened.
    #[error("cannot open the chain: {0}")]
    Chain(#[from] ChainError),
    /// The cookie cannot be written.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Another I/O failure (data directory, runtime, mempool file).
    #[error("{0}")]
    Io(String),
    /// The server thread panicked.
    #[error("the chaind server thread panicked")]
    Panicked,
}

/// `chaind`, Bitcoin Core's RPC on the embedded chain.
#[derive(Debug)]
pub struct Chaind;

impl Chaind {
    /// Open the chain in `config.data_dir` and serve RPC until [`ChaindHandle::shutdown`], the
    /// `stop` RPC or (if asked) a signal.
    pub fn start(config: ChaindConfig) -> Result<ChaindHandle, ChaindError> {
        let remote_allowed = config.allow_remote && config.credentials.is_some();
        if !(config.bind.ip().is_loopback() || remote_allowed) {
            return Err(ChaindError::RemoteBind(config.bind));
        }
        let net_dir = config.data_dir.join(NETWORK_DIR);
        std::fs::create_dir_all(&net_dir)
            .map_err(|e| ChaindError::Io(format!("{}: {e}", net_dir.display())))?;
        let chain = Arc::new(EmbeddedChain::open(ChainConfig {
            data_dir: Some(net_dir.clone()),
            policy: config.policy,
        })?);
        let mempool_file = net_dir.join(persist::MEMPOOL_FILE);
        let mempool_load = if config.persist_mempool {
            let load = persist::load(&chain, &mempool_file);
            tracing::info!(load.accepted, load.dropped, "mempool loaded");
            load
        } else {
            MempoolLoad::default()
        };
        let listener = TcpListener::bind(config.bind).map_err(|source| ChaindError::Bind {
            addr: config.bind,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| ChaindError::Bind {
            addr: config.bind,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ChaindError::Io(e.to_string()))?;
        let (credentials, cookie) = match &config.credentials {
            Some(c) => (c.clone(), None),
            None => {
                let c = Credentials::random_cookie();
                let path = net_dir.join(COOKIE_FILE);
                c.write_cookie(&path)?;
                (c, Some(path))
            }
        };
        // From here on, a failure must not leave the cookie behind.
        let failed = |message: String| {
            if let Some(p) = &cookie {
                let _ = std::fs::remove_file(p);
            }
            ChaindError::Io(message)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(config.max_connections.max(1) + 2)
            .thread_name("chaind")
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start the RPC runtime: {e}")))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let ctx = Arc::new(methods::Ctx::new(
            Arc::clone(&chain),
            Some(net_dir.join("blocks")),
            Arc::clone(&stop_tx),
        ));
        let shared = Arc::new(http::Shared {
            ctx,
            credentials,
            timeout: config.timeout,
        });
        let thread = {
            let chain = Arc::clone(&chain);
            let cookie = cookie.clone();
            let stop_tx = Arc::clone(&stop_tx);
            let config = config.clone();
            std::thread::Builder::new()
                .name("chaind".into())
                .spawn(move || {
                    runtime.block_on(serve(listener, shared, stop_tx, stop_rx, &config));
                    // Let running handlers (a long generatetoaddress, say) end first.
                    runtime.shutdown_timeout(Duration::from_secs(30));
                    let mut result = Ok(());
                    if config.persist_mempool {
                        if let Err(e) = persist::save(&chain, &mempool_file) {
                            result = Err(ChaindError::Io(format!(
                                "cannot save the mempool to {}: {e}",
                                mempool_file.display()
                            )));
                        }
                    }
                    if let Some(path) = cookie {
                        let _ = std::fs::remove_file(path);
                    }
                    result
                })
                .map_err(|e| failed(format!("cannot start the RPC thread: {e}")))?
        };
        Ok(ChaindHandle {
            local_addr,
            mempool_load,
            data_dir: config.data_dir,
            cookie,
            credentials: config.credentials,
            chain,
            stop: stop_tx,
            thread: Some(thread),
        })
    }
}

/// Accept connections until asked to stop, then let open ones finish.
async fn serve(
    listener: TcpListener,
    shared: Arc<http::Shared>,
    stop_tx: Arc<watch::Sender<bool>>,
    mut stop_rx: watch::Receiver<bool>,
    config: &ChaindConfig,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen");
            return;
        }
    };
    if config.stop_on_signals {
        tokio::spawn(stop_on_signals(Arc::clone(&stop_tx)));
    }
    let max = config.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let mut stop = stop_rx.clone();
        let timeout = config.timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let io = TokioIo::new(http::WriteTimeout::new(stream, timeout));
            let service = {
                let shared = Arc::clone(&shared);
                service_fn(move |req| http::handle(req, Arc::clone(&shared)))
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_header_size(MAX_HEADERS_SIZE)
                .keep_alive(true)
                .serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    drop(listener);
    // Wait for the open connections to finish (each gives its slot back).
    let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(max as u32)).await;
}

/// Resolves once a stop was asked for.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means every sender is gone: nobody can ask any more, so stop too.
    let _ = rx.wait_for(|s| *s).await;
}

#[cfg(unix)]
async fn stop_on_signals(stop: Arc<watch::Sender<bool>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    stop.send_replace(true);
}

#[cfg(not(unix))]
async fn stop_on_signals(stop: Arc<watch::Sender<bool>>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        stop.send_replace(true);
    }
}

/// A running `chaind`. Dropping it stops the server (and waits for it).
#[derive(Debug)]
pub struct ChaindHandle {
    local_addr: SocketAddr,
    mempool_load: MempoolLoad,
    data_dir: PathBuf,
    cookie: Option<PathBuf>,
    credentials: Option<Credentials>,
    chain: Arc<EmbeddedChain>,
    stop: Arc<watch::Sender<bool>>,
    thread: Option<JoinHandle<Result<(), ChaindError>>>,
}

impl ChaindHandle {
    /// The address the server listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What became of the mempool saved at the last stop (Core's `-persistmempool`).
    pub fn mempool_load(&self) -> &MempoolLoad {
        &self.mempool_load
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The cookie file, when cookie authentication is in use.
    pub fn cookie_path(&self) -> Option<&Path> {
        self.cookie.as_deref()
    }

    /// How a client authenticates: the cookie file, or the configured user and password.
    pub fn auth(&self) -> Auth {
        match (&self.credentials, &self.cookie) {
            (Some(c), _) => Auth::UserPass(c.clone()),
            (None, Some(path)) => Auth::CookieFile(path.clone()),
            (None, None) => Auth::UserPass(Credentials::new("", "")),
        }
    }

    /// The chain the server serves (shared: in-process users see the same chain).
    pub fn chain(&self) -> &Arc<EmbeddedChain> {
        &self.chain
    }

    /// Ask the server to stop, without waiting.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Whether the server was asked to stop (by [`Self::request_stop`], the `stop` RPC or a
    /// signal).
    pub fn stop_requested(&self) -> bool {
        *self.stop.borrow()
    }

    /// Wait until the server stopped (after the `stop` RPC, a signal or
    /// [`Self::request_stop`]): the mempool is saved and the cookie removed.
    pub fn wait(mut self) -> Result<(), ChaindError> {
        self.join()
    }

    /// Stop the server and wait for it.
    pub fn shutdown(mut self) -> Result<(), ChaindError> {
        self.request_stop();
        self.join()
    }

    fn join(&mut self) -> Result<(), ChaindError> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(ChaindError::Panicked)),
            None => Ok(()),
        }
    }
}

impl Drop for ChaindHandle {
    fn drop(&mut self) {
        self.request_stop();
        if let Err(e) = self.join() {
            tracing::warn!(error = %e, "chaind did not stop cleanly");
        }
    }
}
