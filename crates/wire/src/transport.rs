//! BOLT-8 connections between the LSP and its clients: LDK's `PeerManager` over
//! `lightning-net-tokio`, with our protocol as custom messages.
//!
//! A [`Transport`] is one node: it listens (the LSP) or connects to a pinned node id (a client),
//! and turns everything that happens into [`Event`]s on one channel. After BOLT-1's `init`, each
//! side sends [`Hello`]; a peer counts as connected ([`Event::Connected`]) only once the two hellos
//! agree on a version and a network. Every refusal (a message before hello, an unknown even type,
//! an oversized or malformed message, an incompatible hello) is answered with an [`ErrorMsg`] that
//! says why, reported as [`Event::Refused`], and the connection is dropped shortly after, so that
//! the error reaches the peer first. A refused message never reaches the protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::secp256k1::PublicKey;
use bitcoin::Network;
use lightning::ln::msgs::{DecodeError, Init, LightningError};
use lightning::ln::peer_handler::{
    CustomMessageHandler, ErroringMessageHandler, IgnoringMessageHandler, MessageHandler,
    PeerManager,
};
use lightning::ln::wire::CustomMessageReader;
use lightning::sign::{KeysManager, NodeSigner, Recipient};
use lightning::types::features::{InitFeatures, NodeFeatures};
use lightning::util::logger::{Level, Logger, Record};
use lightning::util::ser::LengthLimitedRead;
use lightning_net_tokio::SocketDescriptor;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::messages::{read_message, ErrorCode, ErrorMsg, Hello, Message, Refusal};

/// How long a peer has, after BOLT-8's handshake, to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a refused peer stays connected so that our error reaches it.
const LINGER: Duration = Duration::from_millis(200);
/// How long `connect` waits for the TCP connection, the handshake and the hellos.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Something that happened on the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer completed the handshake and the hellos agree.
    Connected {
        /// Its node id.
        peer: PublicKey,
        /// Whether it connected to us.
        inbound: bool,
        /// The protocol version agreed.
        version: u16,
    },
    /// A message of the protocol from a connected peer.
    Message {
        /// Its sender.
        peer: PublicKey,
        /// The message.
        msg: Message,
    },
    /// A peer told us why it refuses something of ours.
    PeerError {
        /// The peer.
        peer: PublicKey,
        /// What it said.
        error: ErrorMsg,
    },
    /// We refused a message of a peer, told it why, and are dropping the connection.
    Refused {
        /// The peer.
        peer: PublicKey,
        /// Why.
        reason: String,
    },
    /// A peer's connection closed.
    Disconnected {
        /// The peer.
        peer: PublicKey,
    },
}

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// No TCP connection could be made.
    #[error("cannot connect to {addr}: nothing answers there, or not in time")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
    },
    /// The TCP connection closed before the handshake and hellos completed.
    #[error(
        "the connection to {addr} closed during the handshake: the node there is not {node_id} \
         (BOLT-8 refuses a wrong node id), or it closed the connection"
    )]
    Handshake {
        /// The address.
        addr: SocketAddr,
        /// The node id we pinned.
        node_id: PublicKey,
    },
    /// The hellos did not agree, or one side refused the other's first messages.
    #[error("{node_id} at {addr} and we could not agree: {reason}")]
    Refused {
        /// The address.
        addr: SocketAddr,
        /// The node id.
        node_id: PublicKey,
        /// The refusal, the peer's if it sent one.
        reason: String,
    },
    /// The handshake did not complete in time.
    #[error("no handshake with {node_id} at {addr} within {0:?}", CONNECT_TIMEOUT)]
    Timeout {
        /// The address.
        addr: SocketAddr,
        /// The node id we pinned.
        node_id: PublicKey,
    },
    /// The peer is not connected (or has not sent its hello).
    #[error("peer {0} is not connected")]
    NotConnected(PublicKey),
    /// A message that must not be sent (a refusal placeholder, or one above its size limit).
    #[error("cannot send {0}")]
    Unsendable(String),
}

/// Per-peer state of the protocol layer.
#[derive(Debug)]
struct PeerState {
    inbound: bool,
    since: Instant,
    hello: Option<u16>,
    refused: bool,
}

#[derive(Default)]
struct Inner {
    peers: HashMap<PublicKey, PeerState>,
    outbox: Vec<(PublicKey, Message)>,
    /// Refused peers, to drop once our error is out, with when they were refused.
    drop: HashMap<PublicKey, Instant>,
    /// The last refusal between us and each peer (the peer's, else ours), for a failed
    /// connect's error.
    last_error: HashMap<PublicKey, String>,
}

/// Our protocol's handler inside LDK's `PeerManager`.
pub struct WireHandler {
    network: Network,
    inner: Mutex<Inner>,
    events: mpsc::UnboundedSender<Event>,
}

impl WireHandler {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: Event) {
        // A closed receiver means the node is shutting down: nothing left to tell.
        let _ = self.events.send(event);
    }

    /// Answers a refused message with an error and marks the peer to be dropped.
    fn refuse(&self, inner: &mut Inner, peer: PublicKey, code: ErrorCode, reason: String) {
        if let Some(state) = inner.peers.get_mut(&peer) {
            if state.refused {
                return;
            }
            state.refused = true;
        }
        tracing::warn!(%peer, %reason, "refusing peer");
        inner.outbox.push((
            peer,
            Message::Error(ErrorMsg {
                code,
                factory: None,
                reason: reason.clone(),
            }),
        ));
        inner.drop.insert(peer, Instant::now());
        inner
            .last_error
            .entry(peer)
            .or_insert_with(|| format!("we refused it: {reason}"));
        self.emit(Event::Refused { peer, reason });
    }
}

impl CustomMessageReader for WireHandler {
    type CustomMessage = Message;

    fn read<R: LengthLimitedRead>(
        &self,
        message_type: u16,
        buffer: &mut R,
    ) -> Result<Option<Message>, DecodeError> {
        Ok(read_message(message_type, buffer))
    }
}

impl CustomMessageHandler for WireHandler {
    fn handle_custom_message(
        &self,
        msg: Message,
        sender_node_id: PublicKey,
    ) -> Result<(), LightningError> {
        let peer = sender_node_id;
        let mut inner = self.lock();
        if let Message::Error(error) = &msg {
            inner.last_error.insert(
                peer,
                format!("it refused us ({:?}): {}", error.code, error.reason),
            );
        }
        let Some(state) = inner.peers.get(&peer) else {
            return Ok(());
        };
        if state.refused {
            return Ok(());
        }
        let hello_done = state.hello.is_some();
        let inbound = state.inbound;
        match msg {
            Message::Refused(refusal) => {
                let code = match refusal {
                    Refusal::UnknownEvenType(_)
                    | Refusal::Oversized { .. }
                    | Refusal::Malformed { .. } => ErrorCode::Malformed,
                };
                self.refuse(&mut inner, peer, code, refusal.to_string());
            }
            Message::Error(error) => {
                drop(inner);
                self.emit(Event::PeerError { peer, error });
            }
            Message::Hello(theirs) if !hello_done => {
                match Hello::ours(self.network).agree(&theirs) {
                    Ok(version) => {
                        if let Some(state) = inner.peers.get_mut(&peer) {
                            state.hello = Some(version);
                        }
                        drop(inner);
                        self.emit(Event::Connected {
                            peer,
                            inbound,
                            version,
                        });
                    }
                    Err(why) => self.refuse(&mut inner, peer, ErrorCode::Incompatible, why),
                }
            }
            Message::Hello(_) => {
                self.refuse(
                    &mut inner,
                    peer,
                    ErrorCode::Unexpected,
                    "a second hello".to_owned(),
                );
            }
            msg if !hello_done => {
                let reason = format!("{} before hello", msg.name());
                self.refuse(&mut inner, peer, ErrorCode::Unexpected, reason);
            }
            msg => {
                drop(inner);
                self.emit(Event::Message { peer, msg });
            }
        }
        Ok(())
    }

    fn get_and_clear_pending_msg(&self) -> Vec<(PublicKey, Message)> {
        std::mem::take(&mut self.lock().outbox)
    }

    fn peer_disconnected(&self, their_node_id: PublicKey) {
        let mut inner = self.lock();
        inner.drop.remove(&their_node_id);
        inner.outbox.retain(|(p, _)| *p != their_node_id);
        let state = inner.peers.remove(&their_node_id);
        if state.as_ref().is_some_and(|s| s.inbound) {
            // Only `connect` reads these, for peers we dialled.
            inner.last_error.remove(&their_node_id);
        }
        if state.is_some() {
            drop(inner);
            self.emit(Event::Disconnected {
                peer: their_node_id,
            });
        }
    }

    fn peer_connected(
        &self,
        their_node_id: PublicKey,
        _msg: &Init,
        inbound: bool,
    ) -> Result<(), ()> {
        let mut inner = self.lock();
        inner.peers.insert(
            their_node_id,
            PeerState {
                inbound,
                since: Instant::now(),
                hello: None,
                refused: false,
            },
        );
        inner
            .outbox
            .push((their_node_id, Message::Hello(Hello::ours(self.network))));
        Ok(())
    }

    fn provided_node_features(&self) -> NodeFeatures {
        NodeFeatures::empty()
    }

    fn provided_init_features(&self, _their_node_id: PublicKey) -> InitFeatures {
        InitFeatures::empty()
    }
}

/// LDK's log lines, into `tracing`.
pub struct TracingLogger;

impl Logger for TracingLogger {
    fn log(&self, record: Record) {
        // Formatted only if the level is enabled: LDK traces every message it queues with its
        // `Debug` form (a proposal's bytes one by one), which cost the LSP a quarter of its CPU
        // time with a thousand peers when formatted up front.
        let args = record.args;
        match record.level {
            Level::Error => tracing::error!(target: "ldk", "{args}"),
            Level::Warn => tracing::warn!(target: "ldk", "{args}"),
            Level::Info => tracing::debug!(target: "ldk", "{args}"),
            Level::Debug | Level::Trace | Level::Gossip => {
                tracing::trace!(target: "ldk", "{args}")
            }
        }
    }
}

type Manager = PeerManager<
    SocketDescriptor,
    Arc<ErroringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<TracingLogger>,
    Arc<WireHandler>,
    Arc<KeysManager>,
    Arc<IgnoringMessageHandler>,
>;

/// One node's BOLT-8 endpoint for the protocol.
#[derive(Clone)]
pub struct Transport {
    pm: Arc<Manager>,
    handler: Arc<WireHandler>,
    node_id: PublicKey,
    keys: Arc<KeysManager>,
}

impl Transport {
    /// A node with the identity derived from `node_seed` (LDK's `KeysManager` derivation) on
    /// `network`, and the receiver of its events. Must be called inside a tokio runtime.
    pub fn new(node_seed: &[u8; 32], network: Network) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let keys = Arc::new(KeysManager::new(
            node_seed,
            now.as_secs(),
            now.subsec_nanos(),
            true,
        ));
        let node_id = keys
            .get_node_id(Recipient::Node)
            .expect("KeysManager always has a node key");
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = Arc::new(WireHandler {
            network,
            inner: Mutex::new(Inner::default()),
            events: tx,
        });
        let mut ephemeral = [0u8; 32];
        getrandom(&mut ephemeral);
        let pm = Arc::new(PeerManager::new(
            MessageHandler {
                chan_handler: Arc::new(ErroringMessageHandler::new()),
                route_handler: Arc::new(IgnoringMessageHandler {}),
                onion_message_handler: Arc::new(IgnoringMessageHandler {}),
                custom_message_handler: Arc::clone(&handler),
                send_only_message_handler: Arc::new(IgnoringMessageHandler {}),
            },
            now.as_secs() as u32,
            &ephemeral,
            Arc::new(TracingLogger),
            Arc::clone(&keys),
        ));
        let signer = keys;
        let transport = Transport {
            pm,
            handler,
            node_id,
            keys: signer,
        };
        transport.spawn_driver();
        (transport, rx)
    }

    /// This node's id (its BOLT-8 static key).
    pub fn node_id(&self) -> PublicKey {
        self.node_id
    }

    /// Signs a BOLT-11 invoice with this node's key (the key of its node id).
    pub fn sign_invoice(
        &self,
        invoice: &lightning_invoice::RawBolt11Invoice,
    ) -> Result<bitcoin::secp256k1::ecdsa::RecoverableSignature, crate::invoice::SignerRefused>
    {
        use lightning::sign::NodeSigner;
        self.keys
            .sign_invoice(invoice, Recipient::Node)
            .map_err(|()| crate::invoice::SignerRefused)
    }

    /// Listens on `addr` (port 0 for any) and accepts peers until the runtime stops; returns the
    /// address bound.
    pub async fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| TransportError::Listen { addr, error })?;
        let bound = listener
            .local_addr()
            .map_err(|error| TransportError::Listen { addr, error })?;
        let pm = Arc::clone(&self.pm);
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => match stream.into_std() {
                        Ok(stream) => {
                            // Each message goes out at once (a round is three small messages
                            // back and forth: Nagle would hold one behind a delayed ACK).
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(lightning_net_tokio::setup_inbound(
                                Arc::clone(&pm),
                                stream,
                            ));
                        }
                        Err(e) => tracing::warn!("accepted socket unusable: {e}"),
                    },
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(bound)
    }

    /// Connects to `node_id` at `addr` and waits until the hellos agree. A node there with
    /// another id fails BOLT-8's handshake.
    pub async fn connect(
        &self,
        node_id: PublicKey,
        addr: SocketAddr,
    ) -> Result<(), TransportError> {
        if self.is_connected(&node_id) {
            return Ok(());
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|s| s.into_std().ok())
            .ok_or(TransportError::Unreachable { addr })?;
        let _ = stream.set_nodelay(true);
        let mut conn = tokio::spawn(lightning_net_tokio::setup_outbound(
            Arc::clone(&self.pm),
            node_id,
            stream,
        ));
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            if self.is_connected(&node_id) {
                return Ok(());
            }
            tokio::select! {
                _ = &mut conn => {
                    if self.is_connected(&node_id) {
                        return Ok(());
                    }
                    return Err(match self.handler.lock().last_error.remove(&node_id) {
                        Some(reason) => TransportError::Refused { addr, node_id, reason },
                        None => TransportError::Handshake { addr, node_id },
                    });
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                conn.abort();
                self.pm.disconnect_by_node_id(node_id);
                return Err(TransportError::Timeout { addr, node_id });
            }
        }
    }

    /// Whether `peer` is connected and its hello agreed.
    pub fn is_connected(&self, peer: &PublicKey) -> bool {
        self.handler
            .lock()
            .peers
            .get(peer)
            .is_some_and(|s| s.hello.is_some() && !s.refused)
    }

    /// The peers connected with agreeing hellos.
    pub fn peers(&self) -> Vec<PublicKey> {
        self.handler
            .lock()
            .peers
            .iter()
            .filter(|(_, s)| s.hello.is_some() && !s.refused)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Queues `msg` to `peer` and flushes.
    pub fn send(&self, peer: PublicKey, msg: Message) -> Result<(), TransportError> {
        self.send_all(std::iter::once((peer, msg)))
    }

    /// Queues every message and flushes once.
    pub fn send_all(
        &self,
        msgs: impl IntoIterator<Item = (PublicKey, Message)>,
    ) -> Result<(), TransportError> {
        {
            let mut inner = self.handler.lock();
            for (peer, msg) in msgs {
                if matches!(msg, Message::Refused(_)) {
                    return Err(TransportError::Unsendable("a refusal placeholder".into()));
                }
                let len = lightning::util::ser::Writeable::serialized_length(&msg);
                let max = crate::messages::max_body(msg.ty());
                if len > max {
                    return Err(TransportError::Unsendable(format!(
                        "{} of {len} bytes (its limit is {max})",
                        msg.name()
                    )));
                }
                let ok = inner.peers.get(&peer).is_some_and(|s| {
                    (s.hello.is_some() || matches!(msg, Message::Error(_))) && !s.refused
                });
                if !ok {
                    return Err(TransportError::NotConnected(peer));
                }
                inner.outbox.push((peer, msg));
            }
        }
        self.pm.process_events();
        Ok(())
    }

    /// Drops the connection to `peer`.
    pub fn disconnect(&self, peer: PublicKey) {
        self.pm.disconnect_by_node_id(peer);
    }

    /// Drops every connection.
    pub fn disconnect_all(&self) {
        self.pm.disconnect_all_peers();
    }

    /// Flushes queued messages, drops refused peers once their error is out and peers without a
    /// hello in time, and ticks LDK's timers (pings).
    fn spawn_driver(&self) {
        let pm = Arc::clone(&self.pm);
        let handler = Arc::clone(&self.handler);
        tokio::spawn(async move {
            let mut last_tick = Instant::now();
            loop {
                tokio::time::sleep(LINGER / 4).await;
                if Arc::strong_count(&handler) <= 2 {
                    // Only the PeerManager and this task hold it: the Transport is gone.
                    pm.disconnect_all_peers();
                    return;
                }
                pm.process_events();
                let (to_drop, late) = {
                    let mut inner = handler.lock();
                    let to_drop: Vec<PublicKey> = inner
                        .drop
                        .iter()
                        .filter(|(_, at)| at.elapsed() >= LINGER)
                        .map(|(p, _)| *p)
                        .collect();
                    for p in &to_drop {
                        inner.drop.remove(p);
                    }
                    let late: Vec<PublicKey> = inner
                        .peers
                        .iter()
                        .filter(|(_, s)| s.hello.is_none() && s.since.elapsed() > HELLO_TIMEOUT)
                        .map(|(p, _)| *p)
                        .collect();
                    (to_drop, late)
                };
                for peer in to_drop {
                    pm.disconnect_by_node_id(peer);
                }
                for peer in late {
                    tracing::warn!(%peer, "no hello in time");
                    pm.disconnect_by_node_id(peer);
                }
                if last_tick.elapsed() >= Duration::from_secs(10) {
                    pm.timer_tick_occurred();
                    last_tick = Instant::now();
                }
            }
        });
    }
}

/// Fills `buf` from the OS's randomness.
fn getrandom(buf: &mut [u8]) {
    use bitcoin::secp256k1::rand::RngCore;
    bitcoin::secp256k1::rand::thread_rng().fill_bytes(buf);
}
