//! The transport over real loopback TCP: BOLT-8 with a pinned node id, the hellos, and every
//! refusal (a message before hello, an oversized message, a truncated one, an unknown even type),
//! each answered with a typed error before the connection is dropped. The hostile peer is a bare
//! LDK `PeerManager` that sends whatever bytes the test asks for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use bitcoin::{Network, ScriptBuf};
use lightning::ln::msgs::{DecodeError, Init, LightningError};
use lightning::ln::peer_handler::{
    CustomMessageHandler, ErroringMessageHandler, IgnoringMessageHandler, MessageHandler,
    PeerManager,
};
use lightning::ln::wire::{CustomMessageReader, Type};
use lightning::sign::KeysManager;
use lightning::types::features::{InitFeatures, NodeFeatures};
use lightning::util::ser::{LengthLimitedRead, Writeable, Writer};
use lightning_net_tokio::SocketDescriptor;
use superscalar_core::codec::encode;
use superscalar_wire::messages::{read_message, types, ErrorCode, Hello, Join, Message};
use superscalar_wire::transport::{Event, TracingLogger, Transport, TransportError};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

async fn next(rx: &mut UnboundedReceiver<Event>) -> Event {
    timeout(WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("the transport is alive")
}

async fn lsp() -> (Transport, UnboundedReceiver<Event>, SocketAddr) {
    let (t, rx) = Transport::new(&[7; 32], Network::Regtest);
    let addr = t.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (t, rx, addr)
}

fn join() -> Message {
    let secp = Secp256k1::new();
    let key = SecretKey::from_slice(&[3; 32]).unwrap().public_key(&secp);
    Message::Join(Join {
        key: bitcoin::PublicKey::new(key),
        payout: ScriptBuf::new(),
        capacity_sat: 50_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hellos_then_messages_both_ways() {
    let (lsp, mut lsp_rx, addr) = lsp().await;
    let (client, mut client_rx) = Transport::new(&[9; 32], Network::Regtest);
    client.connect(lsp.node_id(), addr).await.unwrap();
    match next(&mut client_rx).await {
        Event::Connected {
            peer,
            inbound,
            version,
        } => {
            assert_eq!(peer, lsp.node_id());
            assert!(!inbound);
            assert_eq!(version, superscalar_wire::messages::PROTOCOL_VERSION);
        }
        other => panic!("{other:?}"),
    }
    match next(&mut lsp_rx).await {
        Event::Connected { peer, inbound, .. } => {
            assert_eq!(peer, client.node_id());
            assert!(inbound);
        }
        other => panic!("{other:?}"),
    }
    client.send(lsp.node_id(), join()).unwrap();
    assert_eq!(
        next(&mut lsp_rx).await,
        Event::Message {
            peer: client.node_id(),
            msg: join()
        }
    );
    lsp.send(client.node_id(), join()).unwrap();
    assert_eq!(
        next(&mut client_rx).await,
        Event::Message {
            peer: lsp.node_id(),
            msg: join()
        }
    );
    assert_eq!(lsp.peers(), vec![client.node_id()]);
    client.disconnect(lsp.node_id());
    assert_eq!(
        next(&mut lsp_rx).await,
        Event::Disconnected {
            peer: client.node_id()
        }
    );
    assert!(matches!(
        lsp.send(client.node_id(), join()),
        Err(TransportError::NotConnected(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_node_id_fails_the_handshake() {
    let (_lsp, mut lsp_rx, addr) = lsp().await;
    let (client, _client_rx) = Transport::new(&[9; 32], Network::Regtest);
    let impostor = Transport::new(&[8; 32], Network::Regtest).0.node_id();
    let err = client.connect(impostor, addr).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Handshake { node_id, .. } if node_id == impostor),
        "{err}"
    );
    assert!(err.to_string().contains("is not"), "{err}");
    assert!(client.peers().is_empty());
    // The LSP saw nobody complete the handshake.
    assert!(timeout(Duration::from_millis(500), lsp_rx.recv())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_network_is_refused_at_hello() {
    let (lsp, mut lsp_rx, addr) = lsp().await;
    let (client, _rx) = Transport::new(&[9; 32], Network::Testnet);
    let err = client.connect(lsp.node_id(), addr).await.unwrap_err();
    assert!(err.to_string().contains("network"), "{err}");
    match next(&mut lsp_rx).await {
        Event::Refused { peer, reason } => {
            assert_eq!(peer, client.node_id());
            assert!(reason.contains("network"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next(&mut lsp_rx).await,
        Event::Disconnected {
            peer: client.node_id()
        }
    );
}

/// What the hostile peer sends: any type, any bytes.
#[derive(Debug, Clone)]
struct Raw {
    ty: u16,
    body: Vec<u8>,
}

impl Writeable for Raw {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), lightning::io::Error> {
        w.write_all(&self.body)
    }
}

impl Type for Raw {
    fn type_id(&self) -> u16 {
        self.ty
    }
}

#[derive(Default)]
struct RawState {
    outbox: Vec<(PublicKey, Raw)>,
    received: Vec<Message>,
    connected: bool,
    disconnected: bool,
}

#[derive(Default)]
struct RawHandler(Mutex<RawState>);

impl CustomMessageReader for RawHandler {
    type CustomMessage = Raw;
    fn read<R: LengthLimitedRead>(&self, ty: u16, r: &mut R) -> Result<Option<Raw>, DecodeError> {
        if let Some(msg) = read_message(ty, r) {
            self.0.lock().unwrap().received.push(msg);
        }
        Ok(None)
    }
}

impl CustomMessageHandler for RawHandler {
    fn handle_custom_message(&self, _: Raw, _: PublicKey) -> Result<(), LightningError> {
        Ok(())
    }
    fn get_and_clear_pending_msg(&self) -> Vec<(PublicKey, Raw)> {
        std::mem::take(&mut self.0.lock().unwrap().outbox)
    }
    fn peer_disconnected(&self, _: PublicKey) {
        self.0.lock().unwrap().disconnected = true;
    }
    fn peer_connected(&self, _: PublicKey, _: &Init, _: bool) -> Result<(), ()> {
        self.0.lock().unwrap().connected = true;
        Ok(())
    }
    fn provided_node_features(&self) -> NodeFeatures {
        NodeFeatures::empty()
    }
    fn provided_init_features(&self, _: PublicKey) -> InitFeatures {
        InitFeatures::empty()
    }
}

type RawManager = PeerManager<
    SocketDescriptor,
    Arc<ErroringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<IgnoringMessageHandler>,
    Arc<TracingLogger>,
    Arc<RawHandler>,
    Arc<KeysManager>,
    Arc<IgnoringMessageHandler>,
>;

struct Hostile {
    lsp: Transport,
    lsp_rx: UnboundedReceiver<Event>,
    handler: Arc<RawHandler>,
    pm: Arc<RawManager>,
}

impl Hostile {
    /// A hostile peer connected to a fresh LSP (BOLT-8 and init done), with a valid hello sent
    /// if `send_hello`.
    async fn connect(send_hello: bool) -> Self {
        let (lsp, lsp_rx, addr) = lsp().await;
        let handler = Arc::new(RawHandler::default());
        let pm: Arc<RawManager> = Arc::new(PeerManager::new(
            MessageHandler {
                chan_handler: Arc::new(ErroringMessageHandler::new()),
                route_handler: Arc::new(IgnoringMessageHandler {}),
                onion_message_handler: Arc::new(IgnoringMessageHandler {}),
                custom_message_handler: Arc::clone(&handler),
                send_only_message_handler: Arc::new(IgnoringMessageHandler {}),
            },
            0,
            &[1; 32],
            Arc::new(TracingLogger),
            Arc::new(KeysManager::new(&[5; 32], 1, 0, true)),
        ));
        let conn = lightning_net_tokio::connect_outbound(Arc::clone(&pm), lsp.node_id(), addr)
            .await
            .expect("tcp connect");
        tokio::spawn(conn);
        timeout(WAIT, async {
            while !handler.0.lock().unwrap().connected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("init exchanged");
        let mut h = Hostile {
            lsp,
            lsp_rx,
            handler,
            pm,
        };
        if send_hello {
            h.send(
                types::HELLO,
                encode(&Message::Hello(Hello::ours(Network::Regtest))),
            );
            match next(&mut h.lsp_rx).await {
                Event::Connected { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        h
    }

    fn send(&self, ty: u16, body: Vec<u8>) {
        let lsp_id = self.lsp.node_id();
        self.handler
            .0
            .lock()
            .unwrap()
            .outbox
            .push((lsp_id, Raw { ty, body }));
        self.pm.process_events();
    }

    /// Everything the LSP reports up to the disconnect, and what the hostile peer received.
    async fn until_dropped(mut self) -> (Vec<Event>, Vec<Message>) {
        let mut events = Vec::new();
        loop {
            let e = next(&mut self.lsp_rx).await;
            let done = matches!(e, Event::Disconnected { .. });
            events.push(e);
            if done {
                break;
            }
        }
        // The hostile side sees its connection closed too.
        timeout(WAIT, async {
            while !self.handler.0.lock().unwrap().disconnected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the LSP dropped the connection");
        assert!(self.lsp.peers().is_empty());
        let received = self.handler.0.lock().unwrap().received.clone();
        (events, received)
    }
}

/// Connects a hostile peer, sends `bad` (after a valid hello if `send_hello`), and returns what
/// the LSP reported and what the hostile peer received until the connection was dropped.
async fn hostile(send_hello: bool, bad: Raw) -> (Vec<Event>, Vec<Message>) {
    let h = Hostile::connect(send_hello).await;
    h.send(bad.ty, bad.body);
    h.until_dropped().await
}

/// The refusal the LSP reported and the error the hostile peer received.
fn refusal(events: &[Event], received: &[Message]) -> (String, ErrorCode, String) {
    let reason = events
        .iter()
        .find_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no refusal in {events:?}"));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Message { .. })),
        "a refused message reached the protocol: {events:?}"
    );
    let error = received
        .iter()
        .find_map(|m| match m {
            Message::Error(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error message received: {received:?}"));
    (reason, error.code, error.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_dropped() {
    let body = vec![0u8; 60_000];
    let (events, received) = hostile(
        true,
        Raw {
            ty: types::JOIN,
            body,
        },
    )
    .await;
    let (reason, code, said) = refusal(&events, &received);
    assert!(reason.contains("exceeds its limit"), "{reason}");
    assert_eq!(code, ErrorCode::Malformed);
    assert_eq!(said, reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_message_is_refused_and_dropped() {
    let mut body = encode(&join());
    body.truncate(body.len() - 3);
    let (events, received) = hostile(
        true,
        Raw {
            ty: types::JOIN,
            body,
        },
    )
    .await;
    let (reason, code, _) = refusal(&events, &received);
    assert!(reason.contains("malformed"), "{reason}");
    assert_eq!(code, ErrorCode::Malformed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_even_type_is_refused_and_dropped() {
    let (events, received) = hostile(
        true,
        Raw {
            ty: 54_002,
            body: vec![1, 2, 3],
        },
    )
    .await;
    let (reason, code, _) = refusal(&events, &received);
    assert!(
        reason.contains("unknown even message type 54002"),
        "{reason}"
    );
    assert_eq!(code, ErrorCode::Malformed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_before_hello_is_refused_and_dropped() {
    let (events, received) = hostile(
        false,
        Raw {
            ty: types::JOIN,
            body: encode(&join()),
        },
    )
    .await;
    let (reason, code, _) = refusal(&events, &received);
    assert!(reason.contains("join before hello"), "{reason}");
    assert_eq!(code, ErrorCode::Unexpected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_odd_type_is_ignored() {
    let mut h = Hostile::connect(true).await;
    h.send(54_099, vec![1, 2, 3]);
    h.send(types::JOIN, encode(&join()));
    match next(&mut h.lsp_rx).await {
        Event::Message { msg, .. } => assert_eq!(msg, join()),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.lsp.peers().len(), 1);
}
