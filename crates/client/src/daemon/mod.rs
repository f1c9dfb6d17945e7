//! `superscalar client run`: a client as a daemon. One task owns the state and takes, in order,
//! what the LSP sends (BOLT-8 to the LSP's pinned node id), what the user asks (the control
//! API) and a one-second tick (reconnecting, its own chain view, the exit's next step).
//!
//! Joining: once connected, a client without a factory asks to join with a fresh factory key
//! ([`Joining`]); every step writes its records before its messages leave. The factory counts
//! as signed once every final signature of its exit path and timeouts verifies, and as live
//! only once the client's own chain connection shows the funding output confirmed: never on
//! the LSP's word.
//!
//! Restart: a factory still forming is aborted (its secret nonces died with the process) and the
//! client joins again; a signed or live factory is resumed from the store (its signed
//! transactions are its state, version 0), and an exit under way goes on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, Network, OutPoint, Transaction, TxOut};
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::rpc::auth::Auth;
use superscalar_chain::{BitcoindRpc, Chain, TxStatus};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::codec::decode;
use superscalar_core::{ClientSpec, Factory, FactoryId, FactoryParams, Signer};
use superscalar_store::convert;
use superscalar_store::node::open_node;
use superscalar_store::{Change, FactoryStatus, KeyFamily, NodeMeta, Party, Role, Store};
use superscalar_wire::messages::{ErrorCode, ErrorMsg, Message, Resume};
use superscalar_wire::transport::{Event, Transport};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::exit::{ExitProgress, UnilateralExit};
use crate::join::{Joining, Output, Request as JoinRequest};

mod channel;
mod closing;
mod cooperative;
mod liquidity;
mod migration;
mod rotation;
mod sweep;
mod update;
mod watching;
pub use channel::FORWARD_DELTA;

/// How the client runs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Its data directory (seed, database, API cookie).
    pub datadir: PathBuf,
    /// The chain.
    pub network: Network,
    /// The LSP's node id (pinned: BOLT-8 refuses any other).
    pub lsp_id: PublicKey,
    /// The LSP's address.
    pub lsp_addr: SocketAddr,
    /// Where the control API listens (loopback).
    pub api: SocketAddr,
    /// This client's own chain connection: Bitcoin Core's (or `chaind`'s) JSON-RPC URL.
    pub chain_url: String,
    /// Its cookie file.
    pub chain_cookie: PathBuf,
    /// The seed's passphrase (`None`: unencrypted, regtest only).
    pub passphrase: Option<String>,
    /// The capacity of the channel it asks for.
    pub capacity: Amount,
    /// A fault to inject, for tests of the LSP's handling of clients that drop out.
    pub fault: Option<Fault>,
}

/// A fault a test injects into a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Take the aggregated nonces and never answer them (as if it crashed before round 2).
    StallBeforePartials,
    /// Die (abort, no clean-up) right after sending the partial signatures.
    CrashAfterPartials,
    /// In a factory update, take the second stage's aggregated nonces and never answer them.
    StallUpdate,
    /// Cheat at the exit: publish the leaf channel's commitment in which this client held the
    /// most (kept in memory when signed), even if revoked since.
    PublishRevoked,
    /// Take incoming HTLCs and never settle or fail them (a wallet gone silent), so that they
    /// are settled on chain at the exit.
    HoldHtlcs,
}

/// Why the client daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Its data directory.
    #[error(transparent)]
    Node(#[from] superscalar_store::node::NodeError),
    /// Its database.
    #[error(transparent)]
    Store(#[from] superscalar_store::StoreError),
    /// Its chain connection.
    #[error("chain: {0}")]
    Chain(#[from] superscalar_chain::ChainError),
    /// Its control API.
    #[error(transparent)]
    Api(#[from] superscalar_api::ApiServerError),
    /// A stored record it cannot use.
    #[error("stored data: {0}")]
    Corrupt(String),
}

/// The factory the client is in, once signed.
struct InFactory {
    id: FactoryId,
    factory: Arc<Factory>,
    funding: OutPoint,
    status: FactoryStatus,
    signed: Vec<SignedTx>,
    funding_tx: Option<Transaction>,
    exit: Option<UnilateralExit>,
    exit_log: Vec<String>,
    /// This client's position and the index of its factory key.
    position: superscalar_core::ClientId,
    key_index: superscalar_store::KeyIndex,
    /// The timeout transactions this client published at T.
    timeout_claims: Vec<bitcoin::Txid>,
    /// Its channels with the LSP, once opened: the leaf channel and those it bought.
    links: std::collections::BTreeMap<
        superscalar_core::channel::ChannelRef,
        superscalar_core::channel::link::Link,
    >,
    /// The factory's state as this client signed it (updates), once live.
    state: Option<superscalar_core::advance::FactoryState>,
    /// The cooperative close this client recorded (and signed) of the factory, if any.
    close: Option<cooperative::Recorded>,
}

struct Client {
    config: ClientConfig,
    store: Store,
    keys: superscalar_store::NodeKeys,
    seed: superscalar_store::Seed,
    transport: Transport,
    chain: Arc<BitcoindRpc>,
    joining: Option<Joining>,
    factory: Option<InFactory>,
    last_connect: Option<Instant>,
    rejoin_after: Option<Instant>,
    /// A `resume` to send the LSP on connecting (a ceremony interrupted by a restart).
    resume: Option<Message>,
    stop: bool,
    events: superscalar_api::EventLog,
    last_error: Option<String>,
    waiting: channel::Waiting,
    /// A purchase of inbound liquidity under way.
    buying: Option<liquidity::Buying>,
    /// Fault `publish-revoked`: the leaf channel's commitment in which we held the most.
    cheat: Option<(u64, Transaction)>,
    /// The factory update being signed.
    updating: Option<update::Updating>,
    /// The chain watcher of our factory.
    watching: Option<watching::Watching>,
    /// The cooperative close being signed (its nonce lives here only).
    cooperative: Option<cooperative::Signing>,
    /// The rotation we roll into (from the invitation until the close is recorded).
    rotating: Option<rotation::Rotating>,
    /// A rotation's successor, signed, until the close funding it confirms; or the new factory
    /// we migrate into, until our money is there.
    successor: Option<InFactory>,
    /// The factory we migrate out of, once our money is in the new one: its channels finish
    /// their payments.
    predecessor: Option<InFactory>,
    /// The migration under way.
    migrating: Option<migration::Migrating>,
    /// Our chain's tip height, read at each tick: what channel steps check HTLC expiries
    /// against (as the LSP does), without a chain call per step.
    tip: Option<u32>,
}

/// Runs the client until `stop` (API) or a fatal error. `ready` receives its node id and the
/// API's address once everything listens.
pub async fn run(
    config: ClientConfig,
    ready: impl FnOnce(PublicKey, SocketAddr),
) -> Result<(), ClientError> {
    let ClientNode {
        store,
        keys,
        seed,
        transport,
        mut events,
    } = open_client_node(
        &config.datadir,
        config.network,
        config.passphrase.as_deref(),
    )?;
    let chain = Arc::new(BitcoindRpc::connect(
        config.chain_url.clone(),
        Auth::CookieFile(config.chain_cookie.clone()),
    )?);
    let cookie = config.datadir.join(superscalar_api::COOKIE_FILE);
    let (api, mut requests) = superscalar_api::serve(config.api, &cookie).await?;
    let mut client = Client {
        config,
        store,
        keys,
        seed,
        transport,
        chain,
        joining: None,
        factory: None,
        last_connect: None,
        rejoin_after: None,
        resume: None,
        stop: false,
        events: superscalar_api::EventLog::default(),
        last_error: None,
        waiting: channel::Waiting::default(),
        buying: None,
        cheat: None,
        updating: None,
        watching: None,
        cooperative: None,
        rotating: None,
        successor: None,
        predecessor: None,
        migrating: None,
        tip: None,
    };
    client.recover()?;
    client.recover_channel().map_err(ClientError::Corrupt)?;
    client.load_factory_state().map_err(ClientError::Corrupt)?;
    ready(client.transport.node_id(), api.local_addr());
    tracing::info!(node_id = %client.transport.node_id(), "client running");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !client.stop {
        tokio::select! {
            Some(event) = events.recv() => client.on_event(event),
            Some(request) = requests.recv() => match request.method.as_str() {
                // Answered when the LSP has answered.
                "invoice" => client.request_invoice(request),
                "pay" => client.pay(request),
                "buy_liquidity" => client.buy_liquidity(request),
                _ => {
                    let method = request.method.clone();
                    let result = client.on_request(&method, &request.params);
                    request.reply(result);
                }
            },
            _ = tick.tick() => client.on_tick(),
        }
    }
    client.transport.disconnect_all();
    api.shutdown().await;
    Ok(())
}

/// A client node opened from its data directory.
pub struct ClientNode {
    /// Its database.
    pub store: Store,
    /// Its keys, derived from its seed.
    pub keys: superscalar_store::NodeKeys,
    /// Its seed (for an encrypted backup).
    pub seed: superscalar_store::Seed,
    /// Its BOLT-8 endpoint (its node id is derived from its seed).
    pub transport: Transport,
    /// What happens on `transport`.
    pub events: UnboundedReceiver<Event>,
}

/// Opens (or creates) the client node of `datadir`: its seed, its store, and its own BOLT-8
/// endpoint. Must be called inside a tokio runtime.
pub fn open_client_node(
    datadir: &Path,
    network: Network,
    passphrase: Option<&str>,
) -> Result<ClientNode, ClientError> {
    let node = open_node(datadir, network, passphrase)?;
    let mut store = node.store;
    let keys = node.keys;
    let seed = node.seed;
    let secret = keys
        .node_secret()
        .map_err(superscalar_store::node::NodeError::from)?;
    let (transport, events) = Transport::new(&secret.secret_bytes(), network);
    store.init_node(&NodeMeta {
        role: Role::Client,
        network,
        node_id: transport.node_id(),
    })?;
    Ok(ClientNode {
        store,
        keys,
        seed,
        transport,
        events,
    })
}

/// Starts joining a factory with a fresh factory key (its index recorded first): the state
/// machine and the join message to send the LSP.
pub fn start_joining(
    store: &mut Store,
    keys: &superscalar_store::NodeKeys,
    network: Network,
    capacity: Amount,
) -> Result<(Joining, Message), ClientError> {
    let index = store.allocate_key_index(KeyFamily::Factory)?;
    let keypair = keys
        .factory_key(index)
        .map_err(superscalar_store::node::NodeError::from)?;
    let payout =
        ClientSpec::new(bitcoin::PublicKey::new(keypair.public_key()), Amount::ZERO).payout;
    Ok(Joining::new(JoinRequest {
        network,
        keypair,
        key_index: index,
        payout,
        capacity,
    }))
}

/// Writes `out`'s records, then sends its messages to the LSP; nothing is sent if a write fails.
pub fn commit(
    store: &mut Store,
    transport: &Transport,
    lsp: PublicKey,
    out: Output,
) -> Result<(), superscalar_store::StoreError> {
    for change in &out.persist {
        store.apply(change)?;
    }
    for msg in out.send {
        send(transport, lsp, msg);
    }
    Ok(())
}

fn send(transport: &Transport, lsp: PublicKey, msg: Message) {
    if let Err(e) = transport.send(lsp, msg) {
        tracing::debug!("not sent: {e}");
    }
}

/// Why a ceremony step did not go through.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step's records could not be written (nothing was sent).
    #[error("cannot store the factory: {0}")]
    Store(#[from] superscalar_store::StoreError),
    /// The client refuses the LSP's message (and told the LSP why).
    #[error("{0}")]
    Refused(String),
}

/// Takes one ceremony message of the LSP (`tip`: this client's own chain tip): writes the
/// records `joining` returns, then sends its messages; a message it refuses is answered with an
/// error that says why.
pub fn ceremony_step(
    joining: &mut Joining,
    store: &mut Store,
    transport: &Transport,
    lsp: PublicKey,
    msg: Message,
    tip: u32,
) -> Result<(), StepError> {
    match joining.handle(msg, tip) {
        Ok(out) => Ok(commit(store, transport, lsp, out)?),
        Err(e) => {
            let reason = e.to_string();
            send(
                transport,
                lsp,
                Message::Error(ErrorMsg {
                    code: ErrorCode::Refused,
                    factory: joining.factory_id(),
                    reason: reason.clone(),
                }),
            );
            Err(StepError::Refused(reason))
        }
    }
}

/// Whether `chain` shows the funding output `expected` at `funding` confirmed (or the
/// transaction that created it confirmed, if it is spent already).
pub fn funding_confirmed(chain: &impl Chain, funding: &OutPoint, expected: Option<&TxOut>) -> bool {
    match chain.get_utxo(funding) {
        Ok(Some(coin)) => Some(&coin.txout) == expected,
        _ => matches!(
            chain.tx_status(&funding.txid),
            Ok(TxStatus::Confirmed { .. })
        ),
    }
}

/// Records the factory `joining` was forming as aborted (if it was recorded and is not signed).
pub fn abandon(store: &mut Store, joining: &Joining) {
    if let Some(id) = joining.factory_id() {
        if !joining.is_signed() {
            if let Err(e) = store.apply(&Change::Status {
                factory: convert::factory_id(id),
                status: FactoryStatus::Aborted,
            }) {
                tracing::warn!("factory {id}: cannot record its abort: {e}");
            }
        }
    }
}

impl Client {
    fn log(&mut self, line: String) {
        self.events.push(line);
    }

    fn chain<T>(&self, f: impl FnOnce(&BitcoindRpc) -> T) -> T {
        tokio::task::block_in_place(|| f(&self.chain))
    }

    /// Applies the restart rule: forming factories are aborted; the newest signed, live or
    /// closing one is resumed.
    fn recover(&mut self) -> Result<(), ClientError> {
        let mut records = self.store.factories()?;
        records.sort_by_key(|r| r.created_height);
        for record in records {
            let id = FactoryId(record.id.0);
            match record.status {
                FactoryStatus::Forming => {
                    // Partial signatures sent: the LSP may have completed the factory, so wait
                    // for its final signatures (or its abort) instead of forgetting it.
                    let sent_partials = self
                        .store
                        .ceremony(record.id)?
                        .is_some_and(|c| c.round >= 2);
                    if sent_partials {
                        match self.resume_joining(&record) {
                            Ok(()) => {
                                self.log(format!(
                                    "factory {id} was being signed at restart: asking the LSP"
                                ));
                                continue;
                            }
                            Err(e) => self.log(format!("factory {id}: cannot resume: {e}")),
                        }
                    }
                    self.store.apply(&Change::Status {
                        factory: record.id,
                        status: FactoryStatus::Aborted,
                    })?;
                    self.log(format!("factory {id} was forming at restart: aborted"));
                }
                FactoryStatus::Signed | FactoryStatus::Live | FactoryStatus::Closing => {
                    let params: FactoryParams = decode(&record.params)
                        .map_err(|e| ClientError::Corrupt(format!("factory {id}: {e:?}")))?;
                    let factory = Arc::new(
                        Factory::new(params)
                            .map_err(|e| ClientError::Corrupt(format!("factory {id}: {e}")))?,
                    );
                    let me = self
                        .keys
                        .factory_key(record.key_index)
                        .map_err(superscalar_store::node::NodeError::from)?
                        .public_key();
                    let position = (0..factory.params().clients.len() as u32)
                        .find(|c| {
                            factory
                                .key_of(Signer::Client(superscalar_core::ClientId(*c)))
                                .inner
                                == me
                        })
                        .ok_or_else(|| {
                            ClientError::Corrupt(format!("factory {id}: our key is not in it"))
                        })?;
                    // Version 0: what the formation signed; later versions, the state after
                    // each update (read by `load_factory_state`).
                    let (_, state) = self
                        .store
                        .factory_state_history(record.id, Party::Client(position))?
                        .into_iter()
                        .next()
                        .ok_or_else(|| {
                            ClientError::Corrupt(format!("factory {id}: no signed state"))
                        })?;
                    let signed: Vec<SignedTx> = serde_json::from_slice(&state)
                        .map_err(|e| ClientError::Corrupt(format!("factory {id}: {e}")))?;
                    let funding = record
                        .funding
                        .ok_or_else(|| ClientError::Corrupt(format!("factory {id}: no funding")))?;
                    let exit = if record.status == FactoryStatus::Closing {
                        UnilateralExit::new(&signed).ok()
                    } else {
                        None
                    };
                    let loaded = InFactory {
                        id,
                        factory,
                        funding,
                        status: record.status,
                        signed,
                        funding_tx: None,
                        exit,
                        exit_log: Vec::new(),
                        position: superscalar_core::ClientId(position),
                        key_index: record.key_index,
                        timeout_claims: Vec::new(),
                        links: Default::default(),
                        state: None,
                        close: self.load_close(id).map_err(ClientError::Corrupt)?,
                    };
                    // Two factories at once only in a rotation or a migration: the newer one is
                    // the older's successor. A rotation's is kept (it costs nothing: its
                    // funding is a close that needs our signature) until that close confirms,
                    // or until the LSP invites us to another rotation, which voids it; a
                    // migration's goes on (see `migration`).
                    let older = self.factory.as_ref().map(|f| f.id);
                    match older {
                        Some(old)
                            if matches!(
                                loaded.status,
                                FactoryStatus::Signed | FactoryStatus::Live
                            ) && self.successor.is_none() =>
                        {
                            self.log(format!(
                                "successor {id} of {old}: kept at restart, waiting for the close \
                                 that funds it"
                            ));
                            self.successor = Some(loaded);
                        }
                        _ => self.factory = Some(loaded),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Waits again for the final signatures of a factory whose ceremony this client left after
    /// its partial signatures.
    fn resume_joining(&mut self, record: &superscalar_store::FactoryRecord) -> Result<(), String> {
        let params: FactoryParams = decode(&record.params).map_err(|e| format!("{e:?}"))?;
        let keypair = self
            .keys
            .factory_key(record.key_index)
            .map_err(|e| e.to_string())?;
        let position = params
            .clients
            .iter()
            .position(|c| c.key.inner == keypair.public_key())
            .ok_or("our key is not in it")?;
        let spec = &params.clients[position];
        let request = JoinRequest {
            network: self.config.network,
            keypair,
            key_index: record.key_index,
            payout: spec.payout.clone(),
            capacity: spec.capacity,
        };
        let funding = record.funding.ok_or("no funding outpoint")?;
        let (joining, resume) = Joining::resume(
            request,
            params,
            superscalar_core::ClientId(position as u32),
            funding,
        )
        .map_err(|e| e.to_string())?;
        // Beside a factory we are in, it can only be a rotation's successor: it must not take
        // that factory's place once signed (the close that funds it is signed next).
        let joining = if self.factory.is_some() {
            joining.for_rotation()
        } else {
            joining
        };
        self.joining = Some(joining);
        self.resume = Some(resume);
        Ok(())
    }

    fn send(&self, msg: Message) {
        send(&self.transport, self.config.lsp_id, msg);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected { peer, .. } if peer == self.config.lsp_id => {
                self.log(format!("connected to the LSP {peer}"));
                if let Some(resume) = self.resume.clone() {
                    self.send(resume);
                }
                self.channel_connection(true);
                self.maybe_join();
            }
            Event::Message { peer, msg } if peer == self.config.lsp_id => self.on_message(msg),
            Event::Disconnected { peer } if peer == self.config.lsp_id => {
                self.log("disconnected from the LSP".into());
                self.channel_connection(false);
                self.update_disconnected();
                if self.rotating.is_some() {
                    self.end_rotation("the LSP disconnected");
                }
                match self.joining.as_ref() {
                    // Our partial signatures are out: the LSP may have completed the factory.
                    // Ask it on reconnecting, never forget it.
                    Some(j) if j.awaiting_final() => {
                        self.resume = j
                            .factory_id()
                            .map(|factory| Message::Resume(Resume { factory }));
                    }
                    // Before that, a factory cannot finish without us: start again later.
                    _ => self.drop_joining("the LSP disconnected"),
                }
            }
            Event::PeerError { error, .. } => {
                let line = format!("the LSP refused: {:?}: {}", error.code, error.reason);
                self.last_error = Some(line.clone());
                self.log(line.clone());
                if self.joining.as_ref().is_some_and(|j| j.ended_by(&error)) {
                    self.drop_joining(&line);
                }
            }
            Event::Refused { reason, .. } => self.log(format!("refused the LSP: {reason}")),
            _ => {}
        }
    }

    /// Forgets the factory being joined (recorded aborted if it was recorded at all).
    fn drop_joining(&mut self, why: &str) {
        self.resume = None;
        if let Some(j) = self.joining.take() {
            abandon(&mut self.store, &j);
            if let Some(id) = j.factory_id() {
                self.log(format!("factory {id}: left ({why})"));
            }
            if j.is_rotation() {
                self.end_rotation(why);
            }
        }
        if self.successor.is_none() && self.predecessor.is_none() {
            self.migrating = None;
        }
        self.rejoin_after = Some(Instant::now() + Duration::from_secs(2));
    }

    fn maybe_join(&mut self) {
        let in_factory = self
            .factory
            .as_ref()
            .is_some_and(|f| f.status != FactoryStatus::Aborted);
        if in_factory || self.joining.is_some() {
            return;
        }
        if self.rejoin_after.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if !self.transport.is_connected(&self.config.lsp_id) {
            return;
        }
        let started = start_joining(
            &mut self.store,
            &self.keys,
            self.config.network,
            self.config.capacity,
        );
        let (joining, join) = match started {
            Ok(j) => j,
            Err(e) => return self.log(format!("cannot start joining: {e}")),
        };
        self.joining = Some(joining);
        send(&self.transport, self.config.lsp_id, join);
        self.log(format!(
            "asked to join with a {} sat channel",
            self.config.capacity.to_sat()
        ));
    }

    fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Abort(a) => {
                let ours = self
                    .joining
                    .as_ref()
                    .is_some_and(|j| j.factory_id().map_or(true, |id| id == a.factory));
                if ours {
                    self.rejoin_after = None;
                    self.drop_joining(&format!("the LSP aborted it: {}", a.reason));
                    self.rejoin_after = None;
                    self.maybe_join();
                }
            }
            Message::Live(live) => self.on_live(live.factory, live.funding_tx),
            Message::OpenChannel(open) => self.on_open_channel(*open),
            Message::Channel(step) => {
                self.on_channel_step(*step);
                self.update_tick();
            }
            Message::Update(u)
                if self.config.fault == Some(Fault::StallUpdate)
                    && matches!(
                        u.body,
                        superscalar_core::update::UpdateBody::AggNonces { stage: 2, .. }
                    ) =>
            {
                self.log("fault: stalling in the update's second stage".into());
            }
            Message::Update(u) => self.on_update(*u),
            Message::Invoice(reply) => self.on_invoice(reply),
            Message::LiquidityOffer(offer) => self.on_liquidity_offer(offer),
            Message::Close(c) => self.on_close(*c),
            Message::AggNonces(_) if self.config.fault == Some(Fault::StallBeforePartials) => {
                self.log("fault injected: not answering the aggregated nonces".into());
            }
            msg @ (Message::Proposal(_)
            | Message::Hints(_)
            | Message::AggNonces(_)
            | Message::FinalSigs(_)) => {
                let Some(joining) = self.joining.as_mut() else {
                    // Final signatures again after a restart: we have them already.
                    return;
                };
                let tip = match tokio::task::block_in_place(|| self.chain.tip()) {
                    Ok(t) => t.height,
                    Err(e) => return self.log(format!("no chain view, not signing: {e}")),
                };
                let lsp = self.config.lsp_id;
                match ceremony_step(joining, &mut self.store, &self.transport, lsp, msg, tip) {
                    Ok(()) => {
                        let crash = self.config.fault == Some(Fault::CrashAfterPartials)
                            && joining.awaiting_final();
                        if crash {
                            tracing::warn!("fault injected: dying after the partial signatures");
                            std::thread::sleep(Duration::from_millis(300));
                            std::process::abort();
                        }
                        self.after_step()
                    }
                    Err(e @ StepError::Store(_)) => {
                        self.log(e.to_string());
                        self.drop_joining("store");
                    }
                    Err(StepError::Refused(reason)) => {
                        self.last_error = Some(reason.clone());
                        self.drop_joining(&reason);
                    }
                }
            }
            other => self.log(format!("ignored {} from the LSP", other.name())),
        }
    }

    /// Once the joining client has every signature, the factory is its own.
    fn after_step(&mut self) {
        let signed = self.joining.as_ref().is_some_and(|j| j.is_signed());
        if !signed {
            return;
        }
        let Some(joining) = self.joining.take() else {
            return;
        };
        self.resume = None;
        let (Some(id), Some(factory), Some(funding), Some(position)) = (
            joining.factory_id(),
            joining.factory().cloned(),
            joining.funding(),
            joining.position(),
        ) else {
            return;
        };
        let signed_factory = InFactory {
            id,
            factory,
            funding,
            status: FactoryStatus::Signed,
            signed: joining.signed().to_vec(),
            funding_tx: None,
            exit: None,
            exit_log: Vec::new(),
            position,
            key_index: joining.key_index(),
            timeout_claims: Vec::new(),
            links: Default::default(),
            state: None,
            close: None,
        };
        if joining.is_rotation() {
            return self.successor_signed(signed_factory);
        }
        if self.migrating.is_some() && self.factory.is_some() {
            self.log(format!(
                "factory {id}: every signature of our exit path and timeouts verified; we \
                 migrate into it once it is live"
            ));
            self.successor = Some(signed_factory);
            return;
        }
        self.log(format!(
            "factory {id}: every signature of our exit path and timeouts verified ({} transactions)",
            joining.signed().len()
        ));
        self.factory = Some(signed_factory);
    }

    fn on_live(&mut self, id: FactoryId, tx: Transaction) {
        let Some(f) = self
            .factory
            .as_mut()
            .filter(|f| f.id == id)
            .or(self.successor.as_mut().filter(|s| s.id == id))
        else {
            return;
        };
        let expected = f.factory.funding_output().ok();
        let ok = tx.compute_txid() == f.funding.txid
            && tx.output.get(f.funding.vout as usize) == expected.as_ref();
        if ok {
            f.funding_tx = Some(tx);
        } else {
            self.log(format!(
                "factory {id}: the LSP announced a funding transaction that does not fund it"
            ));
        }
    }

    fn on_tick(&mut self) {
        if let Ok(t) = self.chain(|c| c.tip()) {
            self.tip = Some(t.height);
        }
        if !self.transport.is_connected(&self.config.lsp_id) {
            let due = self
                .last_connect
                .map_or(true, |t| t.elapsed() > Duration::from_secs(3));
            if due {
                self.last_connect = Some(Instant::now());
                let t = self.transport.clone();
                let (id, addr) = (self.config.lsp_id, self.config.lsp_addr);
                tokio::spawn(async move {
                    if let Err(e) = t.connect(id, addr).await {
                        tracing::debug!("connecting to the LSP: {e}");
                    }
                });
            }
        } else {
            self.maybe_join();
        }
        self.check_funding();
        self.step_exit();
        self.claim_timeouts();
        self.channel_tick();
        self.buying_tick();
        self.update_tick();
        self.watch_tick();
        self.close_tick();
        self.rotation_tick();
        self.migration_tick();
    }

    /// At T (inverted policy) the pre-signed timeout transactions pay this client: publish
    /// those of the outputs holding its money, as far as the chain shows them unspent.
    fn claim_timeouts(&mut self) {
        let Some(f) = self.factory.as_ref() else {
            return;
        };
        if !matches!(f.status, FactoryStatus::Live | FactoryStatus::Closing) {
            return;
        }
        let Ok(tip) = self.chain(|c| c.tip()) else {
            return;
        };
        if tip.height + 1 < f.factory.timeout_height() {
            return;
        }
        let Ok(keypair) = self.keys.factory_key(f.key_index) else {
            return;
        };
        let version = f.factory.initial_version();
        let view = crate::timeout::ClientView {
            factory: &f.factory,
            client: f.position,
            signed: &f.signed,
            funding: f.funding,
            key: &keypair,
            version: &version,
        };
        let chain = Arc::clone(&self.chain);
        let rate = bitcoin::FeeRate::from_sat_per_vb_u32(2);
        let claim = tokio::task::block_in_place(|| {
            crate::timeout::claim_timeouts(chain.as_ref(), &view, rate, None)
        });
        match claim {
            Ok(c) if !c.sent.is_empty() => {
                let id = f.id;
                let lines: Vec<String> = c.sent.iter().map(|t| t.to_string()).collect();
                if let Some(f) = self.factory.as_mut() {
                    f.timeout_claims.extend(c.sent);
                }
                self.log(format!(
                    "factory {id}: timeout payout published: {}",
                    lines.join(", ")
                ));
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("timeout claim: {e}"),
        }
    }

    /// Our own chain view: the factory (or the one we migrate into) is live once its funding
    /// output is confirmed there.
    fn check_funding(&mut self) {
        let ids = [self.factory.as_ref().map(|f| f.id), self.migrating_into()];
        for id in ids.into_iter().flatten() {
            self.check_funding_of(id);
        }
    }

    fn check_funding_of(&mut self, id: FactoryId) {
        let Some(f) = self.slot(id) else {
            return;
        };
        if f.status != FactoryStatus::Signed {
            return;
        }
        let (id, funding) = (f.id, f.funding);
        let expected = f.factory.funding_output().ok();
        let confirmed = self.chain(|c| funding_confirmed(c, &funding, expected.as_ref()));
        if confirmed
            && self
                .store
                .apply(&Change::Status {
                    factory: convert::factory_id(id),
                    status: FactoryStatus::Live,
                })
                .is_ok()
        {
            if let Some(f) = self.slot_mut(id) {
                f.status = FactoryStatus::Live;
            }
            self.log(format!(
                "factory {id} is live: our own chain shows its funding"
            ));
        }
    }

    fn step_exit(&mut self) {
        let Some(f) = self.factory.as_mut() else {
            return;
        };
        let Some(exit) = f.exit.as_mut() else {
            return;
        };
        let chain = Arc::clone(&self.chain);
        let progress = tokio::task::block_in_place(|| exit.step(chain.as_ref(), None));
        let line = match progress {
            Ok(ExitProgress::Broadcast { kind, txid, .. }) => format!("broadcast {kind} {txid}"),
            Ok(ExitProgress::Done) => {
                if !f.exit_log.iter().any(|l| l == "exit done") {
                    f.exit_log.push("exit done".into());
                }
                self.step_channel_close();
                return;
            }
            Ok(ExitProgress::Waiting { kind, height }) => {
                format!("{kind} waits for height {height}")
            }
            Err(e) => format!("exit: {e}"),
        };
        if f.exit_log.last() != Some(&line) {
            tracing::info!("{line}");
            f.exit_log.push(line);
        }
    }

    /// What a backup holds now.
    fn backup(&mut self) -> Result<crate::backup::Backup, superscalar_store::StoreError> {
        let mut factories = Vec::new();
        for record in self.store.factories()? {
            let keep = matches!(
                record.status,
                FactoryStatus::Signed | FactoryStatus::Live | FactoryStatus::Closing
            );
            if !keep {
                continue;
            }
            for party in self.store.factory_parties(record.id)? {
                let Party::Client(position) = party else {
                    continue;
                };
                let Some((version, state)) = self.store.latest_factory_state(record.id, party)?
                else {
                    continue;
                };
                let signed = if version == 0 {
                    match serde_json::from_slice::<Vec<SignedTx>>(&state) {
                        Ok(s) => s,
                        Err(e) => {
                            self.log(format!("backup: factory {}: {e}", FactoryId(record.id.0)));
                            continue;
                        }
                    }
                } else {
                    // The state after the latest update: its exit path first.
                    let restored = decode::<FactoryParams>(&record.params)
                        .map_err(|e| format!("{e:?}"))
                        .and_then(|p| Factory::new(p).map_err(|e| e.to_string()))
                        .and_then(|f| {
                            superscalar_core::advance::FactoryState::restore(Arc::new(f), &state)
                                .map_err(|e| e.to_string())
                        });
                    match restored {
                        Ok(st) => {
                            update::signed_in_order(&st, superscalar_core::ClientId(position))
                        }
                        Err(e) => {
                            self.log(format!("backup: factory {}: {e}", FactoryId(record.id.0)));
                            continue;
                        }
                    }
                };
                factories.push(crate::backup::BackedUpFactory {
                    id: FactoryId(record.id.0),
                    params: bitcoin::hex::DisplayHex::to_lower_hex_string(&record.params[..]),
                    status: record.status.as_str().to_owned(),
                    created_height: record.created_height,
                    timeout_height: record.timeout_height,
                    funding: record.funding.unwrap_or(OutPoint::null()),
                    key_index: record.key_index.get(),
                    position,
                    signed,
                });
            }
        }
        let next_factory_index = self.store.allocate_key_index(KeyFamily::Factory)?.get() + 1;
        Ok(crate::backup::Backup {
            version: 1,
            network: self.config.network,
            lsp: format!("{}@{}", self.config.lsp_id, self.config.lsp_addr),
            mnemonic: self.seed.mnemonic().to_string(),
            next_factory_index,
            factories,
        })
    }

    /// Starts the unilateral exit (durably: the factory becomes `closing`), once.
    fn start_exit(&mut self) -> Result<(), ApiError> {
        let Some(f) = self.factory.as_ref() else {
            return Err(ApiError::app(-2, "not in a factory"));
        };
        if f.exit.is_some() {
            return Ok(());
        }
        if let Some(u) = self.updating.as_ref().map(|u| u.id()) {
            // Exiting ends the update being signed (the LSP is told).
            self.refuse_update(u, "the client is exiting");
        }
        let Some(f) = self.factory.as_mut() else {
            return Err(ApiError::app(-2, "not in a factory"));
        };
        let exit = UnilateralExit::new(&f.signed).map_err(|e| ApiError::app(-4, e.to_string()))?;
        let id = f.id;
        self.store
            .apply(&Change::Status {
                factory: convert::factory_id(id),
                status: FactoryStatus::Closing,
            })
            .map_err(|e| ApiError::app(-5, e.to_string()))?;
        if let Some(f) = self.factory.as_mut() {
            f.status = FactoryStatus::Closing;
            f.exit = Some(exit);
        }
        self.log(format!("factory {id}: exiting alone"));
        Ok(())
    }

    fn on_request(&mut self, method: &str, params: &Value) -> Result<Value, ApiError> {
        match method {
            "status" => {
                let tip = self.chain(|c| c.tip()).ok().map(|t| t.height);
                let factory = self.factory.as_ref().map(|f| {
                    json!({
                        "id": f.id.to_string(),
                        "status": f.status.as_str(),
                        "position": f.position.0,
                        "leaf_state": f.state.as_ref().and_then(|s| {
                            let leaf = f.factory.tree().leaf_of(f.position)?;
                            s.odometer().state(leaf).map(|i| i.0)
                        }),
                        "funding": f.funding.to_string(),
                        "timeout_height": f.factory.timeout_height(),
                        // From here the LSP closes the factory (cooperatively if we are online).
                        "dying_height": f.factory.params().creation_height
                            .saturating_add(f.factory.params().config.active_blocks),
                        "transactions": f.signed.len(),
                        "exiting": f.exit.is_some(),
                        "timeout_claims": f.timeout_claims.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                        "payout": f
                            .factory
                            .params()
                            .clients
                            .get(f.position.0 as usize)
                            .map(|c| c.payout.to_hex_string()),
                    })
                });
                Ok(json!({
                    "node_id": self.transport.node_id().to_string(),
                    "network": self.config.network.to_string(),
                    "lsp": format!("{}@{}", self.config.lsp_id, self.config.lsp_addr),
                    "connected": self.transport.is_connected(&self.config.lsp_id),
                    "tip": tip,
                    "joining": self.joining.as_ref().map(|j| json!({
                        "factory": j.factory_id().map(|i| i.to_string()),
                    })),
                    "factory": factory,
                    "close": self.close_json(),
                    "successor": self.successor_json(),
                    "migration": self.migration_json(),
                    "last_error": self.last_error,
                    "events": self.events.newest(20),
                }))
            }
            "sweep" => self.sweep(params),
            "exit" => {
                self.start_exit()?;
                self.step_exit();
                self.exit_status()
            }
            "exit-status" => self.exit_status(),
            "balance" => self.balance_json(),
            "backup" => {
                let path = params
                    .get("path")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| ApiError::invalid_params("path: where to write the backup"))?;
                let passphrase = params
                    .get("passphrase")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| ApiError::invalid_params("passphrase: not empty"))?;
                let backup = self
                    .backup()
                    .map_err(|e| ApiError::app(-5, e.to_string()))?;
                let n = backup.factories.len();
                crate::backup::write(std::path::Path::new(path), &backup, passphrase)
                    .map_err(|e| ApiError::app(-6, e.to_string()))?;
                self.log(format!("backup of {n} factories written to {path}"));
                Ok(json!({ "path": path, "factories": n }))
            }
            "stop" => {
                self.stop = true;
                Ok(json!("stopping"))
            }
            other => Err(ApiError::method_not_found(other)),
        }
    }

    fn exit_status(&self) -> Result<Value, ApiError> {
        let Some(f) = self.factory.as_ref() else {
            return Err(ApiError::app(-2, "not in a factory"));
        };
        let Some(exit) = f.exit.as_ref() else {
            return Ok(json!({ "exiting": false }));
        };
        let path: Vec<Value> = exit
            .path()
            .iter()
            .map(|s| {
                let txid = s.tx.compute_txid();
                let status = match self.chain(|c| c.tx_status(&txid)) {
                    Ok(TxStatus::Confirmed { height, .. }) => format!("confirmed at {height}"),
                    Ok(TxStatus::InMempool) => "in mempool".into(),
                    Ok(TxStatus::Unknown) => "not published".into(),
                    Err(e) => format!("unknown: {e}"),
                };
                json!({
                    "kind": s.kind.to_string(),
                    "txid": txid.to_string(),
                    "vsize": s.tx.vsize(),
                    "status": status,
                })
            })
            .collect();
        Ok(json!({
            "exiting": true,
            "done": f.exit_log.iter().any(|l| l == "exit done"),
            // Every balance of at least the dust limit and every HTLC of ours is in our payout.
            "channel_closed": f.exit_log.iter().any(|l| l == closing::CHANNELS_CLOSED),
            "channel_balance_msat": (!f.links.is_empty()).then(|| f.links.values().map(|l| l.channel().balance_msat()).sum::<u64>()),
            "path": path,
            "log": f.exit_log,
        }))
    }
}
