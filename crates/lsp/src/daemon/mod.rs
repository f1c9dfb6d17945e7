//! `superscalar lsp run`: the LSP as a daemon. One task owns the state and takes, in order,
//! what its peers send (BOLT-8, [`superscalar_wire`]), what the operator asks (the control API,
//! [`superscalar_api`]) and a one-second tick (round timeouts, forming the next factory, funding
//! confirmations).
//!
//! Forming: clients that sent a join wait; once `min_clients` wait at a rung of the [`ladder`]
//! (or `max_clients` wait, or on `create-factory`), the LSP builds the funding transaction from
//! its wallet (signed, not broadcast) and starts a [`Formation`] with up to `max_clients` of
//! them. Proposals go out a window at a time (the next member's as each member's nonces come in,
//! and a whole window more after a second without any answer), which bounds what waits in the
//! peers' buffers. Every step writes its records before
//! its messages leave. When every signature is in, the LSP stores the signed transactions and the
//! funding transaction, broadcasts the funding, and tells each member (`live`).
//!
//! Dropping out: a member that misbehaves, disconnects or does not answer within
//! `round_timeout` before the factory is signed aborts the formation: the factory is recorded
//! aborted, every other member is told (`abort`) and joins again with a fresh key, and the next
//! factory forms without the one that dropped out (the funding output's key depends on the
//! member set, so nothing signed for the aborted factory can ever be valid on chain).
//!
//! Restart: a factory still forming is aborted (its secret nonces died with the process; its
//! members join again); a signed factory's funding transaction is broadcast again (idempotent)
//! and each member gets its final signatures and the funding transaction again when it
//! reconnects; a live factory needs nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, FeeRate, Network, Transaction};
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::rpc::auth::Auth;
use superscalar_chain::{BitcoindRpc, Chain, TxStatus};
use superscalar_core::codec::decode;
use superscalar_core::revocation::StockSecrets;
use superscalar_core::{ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams};
use superscalar_store::convert;
use superscalar_store::node::open_node;
use superscalar_store::{
    Change, FactoryStatus, KeyFamily, NodeMeta, Role, SignedTx, Store, TxLabel,
};
use superscalar_wallet::OnchainWallet;
use superscalar_wire::messages::{Abort, ErrorCode, ErrorMsg, Join, Live, Message};
use superscalar_wire::transport::{Event, Transport};

use crate::formation::{Formation, FormationError, Output, Phase};

mod channels;
mod close;
pub mod ladder;
mod liquidity;
mod migration;
mod reclaim;
mod rotation;
mod update;
mod watching;
pub use channels::FORWARD_DELTA;
pub use close::CLOSE_LABEL;

/// The largest channel a client may ask for.
pub const MAX_CAPACITY: Amount = Amount::from_sat(100_000_000);
/// The smallest channel a client may ask for.
pub const MIN_CAPACITY: Amount = Amount::from_sat(10_000);
/// The label of a factory's funding transaction in the store.
pub const FUNDING_LABEL: &str = "funding";

/// How the LSP runs.
#[derive(Debug, Clone)]
pub struct LspConfig {
    /// Its data directory (seed, database, API cookie, log).
    pub datadir: PathBuf,
    /// The chain (regtest only for now: the on-chain wallet is regtest's).
    pub network: Network,
    /// Where clients connect (BOLT-8).
    pub listen: SocketAddr,
    /// Where the control API listens (loopback).
    pub api: SocketAddr,
    /// Bitcoin Core's (or `chaind`'s) JSON-RPC URL.
    pub chain_url: String,
    /// Its cookie file.
    pub chain_cookie: PathBuf,
    /// The seed's passphrase (`None`: unencrypted, regtest only).
    pub passphrase: Option<String>,
    /// Form a factory once this many clients wait (at a rung of the ladder, if there is one).
    pub min_clients: usize,
    /// At most this many clients per factory.
    pub max_clients: usize,
    /// Rungs of the ladder over a factory's active period (0: no ladder; see [`ladder`]).
    pub ladder_size: u32,
    /// How long a ceremony round waits for every member.
    pub round_timeout: Duration,
    /// At most this many members have been sent their proposal and not answered with their
    /// nonces (the others' proposals wait: see [`DEFAULT_PROPOSAL_WINDOW`]).
    pub proposal_window: usize,
    /// The factories' shape, delays and fees.
    pub factory: FactoryConfig,
    /// The funding transaction's fee rate.
    pub funding_fee_rate: FeeRate,
    /// The liquidity fee: parts per million of the channel sold (a client's `buy-liquidity`).
    pub liquidity_fee_ppm: u32,
    /// The least liquidity fee (at least 1 sat: the fee is paid by an HTLC).
    pub liquidity_fee_min: bitcoin::Amount,
    /// How long a paid liquidity order waits for its sale before its fee is failed back.
    pub liquidity_patience: Duration,
    /// Propose the cooperative close of each factory in its dying period at every block until
    /// one is signed (`superscalar lsp run --no-auto-close` turns it off).
    pub auto_close: bool,
    /// In the dying period, propose a rotation into a successor factory (the clients stay off
    /// chain) rather than a close, until one is abandoned (`--no-auto-rotate` turns it off).
    pub auto_rotate: bool,
    /// Take a dying factory on chain from its reclaim height when no close was signed
    /// (`superscalar lsp run --no-reclaim` turns it off: what the tree holds at T then pays the
    /// clients).
    pub reclaim: bool,
    /// A fault to inject, for tests of the restart rule.
    pub fault: Option<Fault>,
}

/// A fault a test injects into the LSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Die (abort, no clean-up) right after the final signatures of a factory are sent, before
    /// its funding transaction is broadcast.
    CrashAfterFinalSigs,
    /// Propose a cooperative close that pays client 0 one satoshi more than its channels hold
    /// (the client must refuse it).
    CloseOverpays,
    /// Die right after recording a forward (the invoice held, the payee's HTLC queued), before
    /// the payee's channel moves.
    CrashAfterForward,
    /// Cheat after an advance: publish the path down to the node that ticked, then the state
    /// that the advance superseded, as soon as the chain takes each (the clients' watchers
    /// must answer with the newest state).
    PublishSuperseded,
}

/// Why the LSP daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LspError {
    /// Its data directory.
    #[error(transparent)]
    Node(#[from] superscalar_store::node::NodeError),
    /// Its database.
    #[error(transparent)]
    Store(#[from] superscalar_store::StoreError),
    /// Its chain connection.
    #[error("chain: {0}")]
    Chain(#[from] superscalar_chain::ChainError),
    /// Its wallet.
    #[error("wallet: {0}")]
    Wallet(#[from] superscalar_wallet::WalletError),
    /// Its transport.
    #[error(transparent)]
    Transport(#[from] superscalar_wire::transport::TransportError),
    /// Its control API.
    #[error(transparent)]
    Api(#[from] superscalar_api::ApiServerError),
    /// A stored record it cannot use.
    #[error("stored data: {0}")]
    Corrupt(String),
}

/// What the LSP draws for a new factory.
struct NewFactoryKeys {
    id: FactoryId,
    index: superscalar_store::KeyIndex,
    keypair: bitcoin::key::Keypair,
    stock: zeroize::Zeroizing<[u8; 32]>,
}

/// A client waiting to join.
#[derive(Debug, Clone)]
struct Waiting {
    node: PublicKey,
    join: Join,
}

/// A factory the LSP signed, as it keeps it in memory.
struct Signed {
    members: Vec<PublicKey>,
    funding_tx: Transaction,
    /// Final signatures of each member, resent when it reconnects before the factory is live.
    final_sigs: HashMap<PublicKey, Message>,
    status: FactoryStatus,
    /// The height the factory was formed at (its rung of the ladder).
    creation_height: u32,
}

struct Forming {
    formation: Formation,
    funding_tx: Transaction,
    round_started: Instant,
    /// Members at positions below this one have been sent their proposal.
    proposals_sent: usize,
    /// When proposals were last sent.
    proposals_released: Instant,
    /// The factory whose rotation funds this one (its close's output 0), if any.
    successor_of: Option<FactoryId>,
}

/// The default [`LspConfig::proposal_window`]: a proposal
/// carries every client's key (34 kB at 1,024 clients), and LDK buffers what a peer has not yet
/// read, so sending all of them at once held about 100 MB at 1,024 clients (the LSP's peak
/// RSS went from about 60 MB to 110-240 MB, depending on how fast the clients read).
pub const DEFAULT_PROPOSAL_WINDOW: usize = 128;
/// However slow the members with a proposal are, another window is sent after this long (so
/// that members which never answer cannot hold the others' proposals back until the round
/// times out).
const PROPOSAL_RELEASE: Duration = Duration::from_secs(1);

struct Lsp {
    config: LspConfig,
    store: Store,
    keys: superscalar_store::NodeKeys,
    transport: Transport,
    chain: Arc<BitcoindRpc>,
    wallet: OnchainWallet,
    waiting: Vec<Waiting>,
    forming: Option<Forming>,
    factories: HashMap<FactoryId, Signed>,
    started: Instant,
    stop: bool,
    events: superscalar_api::EventLog,
    channels: channels::Channels,
    /// The factory update being signed.
    updating: Option<update::Updating>,
    /// Liquidity orders being served.
    orders: liquidity::Orders,
    /// The watchers of the live factories.
    watching: watching::Watching,
    /// The last update id given (ids never repeat).
    last_update_id: u64,
    /// Fault `publish-superseded`: what is left to publish, in order.
    cheat: Vec<bitcoin::Transaction>,
    /// The cooperative close being signed.
    closing: Option<close::Closing>,
    /// The rotation waiting for its members' rolls.
    rotating: Option<rotation::Rotating>,
    /// Factories whose rotation was abandoned (closed instead).
    rotation_fallbacks: rotation::Fallbacks,
    /// Migrations out of dying factories that cannot rotate.
    migrations: migration::Migrations,
    /// Signed cooperative closes not yet confirmed.
    signed_closes: HashMap<FactoryId, Transaction>,
    /// The tip the factories' lifecycle was last looked at.
    lifecycle_tip: Option<u32>,
    /// Why the automatic close of a dying factory last failed (logged when it changes).
    close_blocked: HashMap<FactoryId, String>,
    /// The tip at which each dying factory's close or rotation was last proposed.
    proposed_at: HashMap<FactoryId, u32>,
    /// How far the reclaim of each channel of a closing factory got.
    reclaims: HashMap<channels::Key, reclaim::Reclaimed>,
    /// How far the sweep of each stock output of a closing factory got.
    stock_reclaims: HashMap<bitcoin::OutPoint, reclaim::Reclaimed>,
    /// Where the reclaimed outputs go (a wallet script, drawn once per run).
    reclaim_to: Option<bitcoin::ScriptBuf>,
}

/// Runs the LSP until `stop` (API) or a fatal error. `ready` receives the node id and the
/// addresses once everything listens.
pub async fn run(
    config: LspConfig,
    ready: impl FnOnce(PublicKey, SocketAddr, SocketAddr),
) -> Result<(), LspError> {
    let node = open_node(
        &config.datadir,
        config.network,
        config.passphrase.as_deref(),
    )?;
    let mut store = node.store;
    let keys = node.keys;
    let secret = keys
        .node_secret()
        .map_err(superscalar_store::node::NodeError::from)?;
    let (transport, mut events) = Transport::new(&secret.secret_bytes(), config.network);
    store.init_node(&NodeMeta {
        role: Role::Lsp,
        network: config.network,
        node_id: transport.node_id(),
    })?;
    let chain = Arc::new(BitcoindRpc::connect(
        config.chain_url.clone(),
        Auth::CookieFile(config.chain_cookie.clone()),
    )?);
    let wallet_seed = *keys
        .wallet_seed()
        .map_err(superscalar_store::node::NodeError::from)?;
    let mut wallet = OnchainWallet::from_seed(wallet_seed)?;
    {
        let chain = Arc::clone(&chain);
        wallet = tokio::task::spawn_blocking(move || {
            let r = wallet.sync(chain.as_ref());
            r.map(|_| wallet)
        })
        .await
        .map_err(|e| LspError::Corrupt(e.to_string()))??;
    }
    let listen = transport.listen(config.listen).await?;
    let cookie = config.datadir.join(superscalar_api::COOKIE_FILE);
    let (api, mut requests) = superscalar_api::serve(config.api, &cookie).await?;
    let mut lsp = Lsp {
        config,
        store,
        keys,
        transport,
        chain,
        wallet,
        waiting: Vec::new(),
        forming: None,
        factories: HashMap::new(),
        started: Instant::now(),
        stop: false,
        events: superscalar_api::EventLog::default(),
        channels: channels::Channels::default(),
        updating: None,
        orders: Default::default(),
        watching: Default::default(),
        last_update_id: 0,
        cheat: Vec::new(),
        closing: None,
        rotating: None,
        rotation_fallbacks: Default::default(),
        migrations: Default::default(),
        signed_closes: HashMap::new(),
        lifecycle_tip: None,
        close_blocked: HashMap::new(),
        proposed_at: HashMap::new(),
        reclaims: HashMap::new(),
        stock_reclaims: HashMap::new(),
        reclaim_to: None,
    };
    lsp.recover()?;
    if let Ok(t) = lsp.chain(|c| c.tip()) {
        lsp.channels.tip = t.height;
    }
    lsp.recover_channels().map_err(LspError::Corrupt)?;
    ready(lsp.transport.node_id(), listen, api.local_addr());
    tracing::info!(node_id = %lsp.transport.node_id(), %listen, "LSP running");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !lsp.stop {
        tokio::select! {
            Some(event) = events.recv() => lsp.on_event(event),
            Some(request) = requests.recv() => {
                if request.method == "pay" {
                    // Answered when the payment settles or fails.
                    lsp.operator_pay(request);
                } else if request.method == "advance" {
                    // Answered when the update completes or is abandoned.
                    lsp.operator_advance(request);
                } else if request.method == "close_factory" {
                    // Answered when the close is broadcast or abandoned.
                    lsp.operator_close(request);
                } else if request.method == "rotate_factory" {
                    // Answered when the rotation is broadcast or abandoned.
                    lsp.operator_rotate(request);
                } else if request.method == "sell_liquidity" {
                    // Answered when the update selling it completes or is abandoned.
                    lsp.operator_sell(request);
                } else {
                    let method = request.method.clone();
                    let result = lsp.on_request(&method, &request.params);
                    request.reply(result);
                }
            }
            _ = tick.tick() => lsp.on_tick(),
        }
    }
    lsp.transport.disconnect_all();
    api.shutdown().await;
    tracing::info!("LSP stopped");
    Ok(())
}

impl Lsp {
    fn log(&mut self, line: String) {
        self.events.push(line);
    }

    /// Blocking chain calls run on this worker thread without stalling the runtime.
    fn chain<T>(&self, f: impl FnOnce(&BitcoindRpc) -> T) -> T {
        tokio::task::block_in_place(|| f(&self.chain))
    }

    /// Applies the restart rule to every stored factory.
    fn recover(&mut self) -> Result<(), LspError> {
        for record in self.store.factories()? {
            let id = FactoryId(record.id.0);
            match record.status {
                FactoryStatus::Forming => {
                    self.store.apply(&Change::Status {
                        factory: record.id,
                        status: FactoryStatus::Aborted,
                    })?;
                    self.log(format!("factory {id} was forming at restart: aborted"));
                }
                FactoryStatus::Signed
                | FactoryStatus::Live
                | FactoryStatus::Dying
                | FactoryStatus::Closing => {
                    let params: FactoryParams = decode(&record.params)
                        .map_err(|e| LspError::Corrupt(format!("factory {id}: {e:?}")))?;
                    let txs = self.store.signed_txs(record.id)?;
                    let funding_tx = match txs.iter().find(|t| t.label.as_str() == FUNDING_LABEL) {
                        Some(t) => t.tx.clone(),
                        // A rotation's successor whose close was not signed.
                        None => match self.recorded_successor_funding(&record)? {
                            Some(tx) => tx,
                            None => {
                                self.store.apply(&Change::Status {
                                    factory: record.id,
                                    status: FactoryStatus::Aborted,
                                })?;
                                self.log(format!(
                                    "successor {id}: no close of its rotation was recorded before \
                                     the restart: aborted"
                                ));
                                continue;
                            }
                        },
                    };
                    let members = self.members_of(&params)?;
                    // A recorded close binds the channels to its balances (see `close`).
                    if self.store.recorded_close(record.id)?.is_some()
                        || record.status == FactoryStatus::Closing
                    {
                        self.channels.frozen.insert(id);
                    }
                    if let Some(close) = txs.iter().find(|t| t.label.as_str() == CLOSE_LABEL) {
                        self.signed_closes.insert(id, close.tx.clone());
                    }
                    if record.status == FactoryStatus::Signed && !rotation::unsigned(&funding_tx) {
                        let r = self.chain(|c| c.submit_transaction(&funding_tx));
                        if let Err(e) = r {
                            tracing::debug!("funding of {id} again: {e}");
                        }
                        self.wallet.note_unconfirmed(&funding_tx);
                    }
                    self.factories.insert(
                        id,
                        Signed {
                            members,
                            funding_tx,
                            final_sigs: HashMap::new(),
                            status: record.status,
                            creation_height: params.creation_height,
                        },
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The funding of a rotation's successor whose close is recorded and not yet signed: that
    /// close, unsigned (`None`: no recorded close funds it).
    fn recorded_successor_funding(
        &self,
        successor: &superscalar_store::FactoryRecord,
    ) -> Result<Option<Transaction>, LspError> {
        let Some(funding) = successor.funding else {
            return Ok(None);
        };
        for record in self.store.factories()? {
            let Some((txid, bytes)) = self.store.recorded_close(record.id)? else {
                continue;
            };
            if txid != funding.txid {
                continue;
            }
            let terms: superscalar_core::close::CloseTerms = decode(&bytes)
                .map_err(|e| LspError::Corrupt(format!("a recorded close: {e:?}")))?;
            let params: FactoryParams = decode(&record.params)
                .map_err(|e| LspError::Corrupt(format!("factory params: {e:?}")))?;
            let old = Factory::new(params).map_err(|e| LspError::Corrupt(e.to_string()))?;
            let close = old
                .close_tx(&terms)
                .map_err(|e| LspError::Corrupt(format!("a recorded close: {e}")))?;
            return Ok(Some(close.tx));
        }
        Ok(None)
    }

    /// The members' node ids of a stored factory (kept in its LSP state, version 0).
    fn members_of(&self, params: &FactoryParams) -> Result<Vec<PublicKey>, LspError> {
        let state = self
            .store
            .factory_state_history(
                convert::factory_id(params.id),
                superscalar_store::Party::Lsp,
            )?
            .into_iter()
            .next()
            .filter(|(v, _)| *v == 0)
            .ok_or_else(|| LspError::Corrupt(format!("factory {}: no LSP state", params.id)))?;
        let nodes: Vec<String> = serde_json::from_slice(&state.1)
            .map_err(|e| LspError::Corrupt(format!("factory {}: {e}", params.id)))?;
        nodes
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| LspError::Corrupt(format!("node id {n}: {e}")))
            })
            .collect()
    }

    fn send(&self, to: PublicKey, msg: Message) {
        if let Err(e) = self.transport.send(to, msg) {
            tracing::debug!(%to, "not sent: {e}");
        }
    }

    /// Writes `out`'s records, then sends its messages; nothing is sent if a write fails.
    fn commit(&mut self, out: Output) -> Result<(), superscalar_store::StoreError> {
        for change in &out.persist {
            self.store.apply(change)?;
        }
        for (to, msg) in out.send {
            self.send(to, msg);
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected { peer, .. } => {
                self.on_connected(peer);
                self.channels_connected(peer);
            }
            Event::Message { peer, msg } => self.on_message(peer, msg),
            Event::Disconnected { peer } => {
                self.channels_disconnected(peer);
                self.update_disconnected(peer);
                self.close_disconnected(peer);
                self.rotation_disconnected(peer);
                self.waiting.retain(|w| w.node != peer);
                let member = self
                    .forming
                    .as_ref()
                    .is_some_and(|f| f.formation.members().contains(&peer));
                if member {
                    self.abort_forming(&[peer], "a member disconnected");
                }
            }
            Event::PeerError { peer, error } => {
                tracing::warn!(%peer, "peer error {:?}: {}", error.code, error.reason);
                let member = self
                    .forming
                    .as_ref()
                    .is_some_and(|f| f.formation.members().contains(&peer));
                if member {
                    self.abort_forming(&[peer], &format!("a member refused: {}", error.reason));
                }
                self.waiting.retain(|w| w.node != peer);
            }
            Event::Refused { peer, reason } => {
                tracing::warn!(%peer, "refused peer: {reason}");
            }
        }
    }

    fn on_connected(&mut self, peer: PublicKey) {
        // A member of a signed factory that is not live yet gets what it may have missed.
        let mut resend = Vec::new();
        for (id, f) in &self.factories {
            if f.status == FactoryStatus::Signed && f.members.contains(&peer) {
                if let Some(sigs) = f.final_sigs.get(&peer) {
                    resend.push(sigs.clone());
                }
                // A successor whose close is not signed yet has no funding to announce.
                if rotation::unsigned(&f.funding_tx) {
                    continue;
                }
                resend.push(Message::Live(Live {
                    factory: *id,
                    funding_tx: f.funding_tx.clone(),
                }));
            }
        }
        for m in resend {
            self.send(peer, m);
        }
    }

    fn refuse(&self, peer: PublicKey, factory: Option<FactoryId>, reason: String) {
        self.send(
            peer,
            Message::Error(ErrorMsg {
                code: ErrorCode::Refused,
                factory,
                reason,
            }),
        );
    }

    fn on_message(&mut self, peer: PublicKey, msg: Message) {
        match msg {
            Message::Join(join) => {
                let capacity = Amount::from_sat(join.capacity_sat);
                if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
                    return self.refuse(
                        peer,
                        None,
                        format!("capacity {capacity} outside {MIN_CAPACITY}..={MAX_CAPACITY}"),
                    );
                }
                if join.payout.len() > 42 || !join.payout.is_witness_program() {
                    return self.refuse(peer, None, "the payout must be a segwit output".into());
                }
                let forming = self
                    .forming
                    .as_ref()
                    .is_some_and(|f| f.formation.members().contains(&peer));
                if forming {
                    return self.refuse(peer, None, "already in a factory being formed".into());
                }
                self.waiting.retain(|w| w.node != peer);
                if self.waiting.len() >= self.max_waiting() {
                    return self.refuse(
                        peer,
                        None,
                        format!(
                            "{} clients are already waiting: try later",
                            self.waiting.len()
                        ),
                    );
                }
                if self.waiting.iter().any(|w| w.join.key == join.key) {
                    return self.refuse(peer, None, "another client waits with that key".into());
                }
                self.waiting.push(Waiting { node: peer, join });
                let n = self.waiting.len();
                self.log(format!("client {peer} waits to join ({n} waiting)"));
            }
            Message::Nonces(_) | Message::Partials(_) => {
                let Some(forming) = self.forming.as_mut() else {
                    return self.refuse(peer, None, "no factory is being formed".into());
                };
                match forming.formation.handle(peer, msg) {
                    Ok(out) => {
                        let progressed = !out.send.is_empty();
                        if progressed {
                            forming.round_started = Instant::now();
                        }
                        let signed = forming.formation.phase() == Phase::Signed;
                        if signed {
                            self.on_signed(out);
                        } else if let Err(e) = self.commit(out) {
                            self.abort_forming(&[], &format!("store: {e}"));
                        } else {
                            self.release_proposals(false);
                        }
                    }
                    Err(FormationError::Misbehaved { node, reason, .. }) => {
                        self.refuse(node, None, reason.clone());
                        self.abort_forming(&[node], &reason);
                    }
                    Err(FormationError::NotMember(_)) => self.refuse(
                        peer,
                        None,
                        "not a member of the factory being formed".into(),
                    ),
                    Err(e) => self.abort_forming(&[], &e.to_string()),
                }
            }
            Message::Resume(r) => self.on_resume(peer, r.factory),
            Message::AcceptChannel(open) => self.on_accept_channel(peer, *open),
            Message::Channel(step) => self.on_channel_step(peer, *step),
            Message::Update(u) => self.on_update(peer, *u),
            Message::Close(c) => self.on_close(peer, *c),
            Message::InvoiceRequest(req) => self.on_invoice_request(peer, req),
            Message::LiquidityRequest(req) => self.on_liquidity_request(peer, req),
            other => {
                self.refuse(peer, None, format!("{} is not for the LSP", other.name()));
            }
        }
    }

    /// A member restarted after sending its partial signatures: its final signatures and the
    /// funding if the factory was signed, else an abort.
    fn on_resume(&mut self, peer: PublicKey, id: FactoryId) {
        let abort = |lsp: &Lsp, reason: &str| {
            lsp.send(
                peer,
                Message::Abort(Abort {
                    factory: id,
                    reason: reason.to_owned(),
                }),
            )
        };
        if self
            .forming
            .as_ref()
            .is_some_and(|f| f.formation.id() == id)
        {
            // Its nonces died with it: this formation cannot finish.
            self.abort_forming(&[], "a member restarted during the ceremony");
            return;
        }
        match self.final_sigs_from_store(peer, id) {
            Ok(Some((sigs, funding_tx))) => {
                self.send(peer, sigs);
                self.send(
                    peer,
                    Message::Live(Live {
                        factory: id,
                        funding_tx,
                    }),
                );
            }
            Ok(None) => abort(self, "this factory was not signed"),
            Err(e) => {
                tracing::warn!(%peer, "resume of {id}: {e}");
                abort(self, "this factory is unknown here");
            }
        }
    }

    /// The final signatures of `peer`'s transactions in factory `id`, rebuilt from the stored
    /// signed transactions, and the funding transaction; `None` unless signed and `peer` is in it.
    fn final_sigs_from_store(
        &self,
        peer: PublicKey,
        id: FactoryId,
    ) -> Result<Option<(Message, Transaction)>, String> {
        let Some(record) = self
            .store
            .factory(convert::factory_id(id))
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        if !matches!(record.status, FactoryStatus::Signed | FactoryStatus::Live) {
            return Ok(None);
        }
        let params: FactoryParams = decode(&record.params).map_err(|e| format!("{e:?}"))?;
        let members = self.members_of(&params).map_err(|e| e.to_string())?;
        let Some(position) = members.iter().position(|m| *m == peer) else {
            return Ok(None);
        };
        let factory = Factory::new(params).map_err(|e| e.to_string())?;
        let client = superscalar_core::ClientId(position as u32);
        let kinds = factory
            .client_jobs(client, &factory.initial_version())
            .map_err(|e| e.to_string())?;
        let txs = self
            .store
            .signed_txs(record.id)
            .map_err(|e| e.to_string())?;
        let by_label: HashMap<&str, &Transaction> =
            txs.iter().map(|t| (t.label.as_str(), &t.tx)).collect();
        let mut signatures = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let tx = by_label
                .get(kind.to_string().as_str())
                .ok_or_else(|| format!("no stored {kind}"))?;
            let sig = tx
                .input
                .first()
                .and_then(|i| i.witness.nth(0))
                .and_then(|w| bitcoin::secp256k1::schnorr::Signature::from_slice(w).ok())
                .ok_or_else(|| format!("{kind} has no key-path signature"))?;
            signatures.push((kind, sig));
        }
        let funding_tx = by_label
            .get(FUNDING_LABEL)
            .map(|t| (*t).clone())
            .ok_or("no stored funding transaction")?;
        Ok(Some((
            Message::FinalSigs(superscalar_core::ceremony::FinalSigMsg {
                factory: id,
                signatures,
            }),
            funding_tx,
        )))
    }

    /// Every signature is in: store everything (with the funding transaction), then send the
    /// final signatures, broadcast the funding, and tell every member.
    fn on_signed(&mut self, mut out: Output) {
        let Some(forming) = self.forming.take() else {
            return;
        };
        let id = forming.formation.id();
        let members = forming.formation.members().to_vec();
        let creation_height = forming.formation.factory().params().creation_height;
        let successor_of = forming.successor_of;
        for change in &mut out.persist {
            // A successor's funding is its rotation's close, stored once signed.
            if successor_of.is_some() {
                break;
            }
            if let Change::Signed { txs, .. } = change {
                txs.push(SignedTx {
                    label: TxLabel::new(FUNDING_LABEL).expect("a valid label"),
                    tx: forming.funding_tx.clone(),
                });
            }
        }
        let final_sigs: HashMap<PublicKey, Message> = out.send.iter().cloned().collect();
        if let Err(e) = self.commit(out) {
            self.log(format!(
                "factory {id}: cannot store its signatures: {e}; aborted"
            ));
            let _ = self.store.apply(&Change::Status {
                factory: convert::factory_id(id),
                status: FactoryStatus::Aborted,
            });
            for m in &members {
                self.send(
                    *m,
                    Message::Abort(Abort {
                        factory: id,
                        reason: "the LSP could not store the factory".into(),
                    }),
                );
            }
            return;
        }
        let funding_tx = forming.funding_tx;
        self.factories.insert(
            id,
            Signed {
                members: members.clone(),
                funding_tx: funding_tx.clone(),
                final_sigs,
                status: FactoryStatus::Signed,
                creation_height,
            },
        );
        if let Some(old) = successor_of {
            self.log(format!(
                "successor {id} of factory {old} signed: the close that funds it is signed next"
            ));
            return self.successor_signed(id);
        }
        if self.config.fault == Some(Fault::CrashAfterFinalSigs) {
            tracing::warn!("fault injected: dying before the funding of {id} is broadcast");
            // Let the final signatures leave the socket buffers first.
            std::thread::sleep(Duration::from_millis(500));
            std::process::abort();
        }
        match self.chain(|c| c.submit_transaction(&funding_tx)) {
            Ok(txid) => self.log(format!("factory {id} signed; funding {txid} broadcast")),
            Err(e) => self.log(format!("factory {id} signed; funding refused for now: {e}")),
        }
        self.wallet.note_unconfirmed(&funding_tx);
        for m in &members {
            self.send(
                *m,
                Message::Live(Live {
                    factory: id,
                    funding_tx: funding_tx.clone(),
                }),
            );
        }
    }

    /// Aborts the factory being formed: records it, tells the members who did nothing wrong
    /// (they join again), and forgets the ones in `culprits`.
    fn abort_forming(&mut self, culprits: &[PublicKey], reason: &str) {
        let Some(forming) = self.forming.take() else {
            return;
        };
        let id = forming.formation.id();
        if forming.successor_of.is_some() {
            // A rotation's successor: its close cannot be signed without it.
            self.abort_close(&format!("its successor's formation failed: {reason}"));
        }
        if let Err(e) = self.store.apply(&Change::Status {
            factory: convert::factory_id(id),
            status: FactoryStatus::Aborted,
        }) {
            tracing::error!("factory {id}: cannot record its abort: {e}");
        }
        for m in forming.formation.members() {
            if !culprits.contains(m) {
                self.send(
                    *m,
                    Message::Abort(Abort {
                        factory: id,
                        reason: reason.to_owned(),
                    }),
                );
            }
        }
        self.waiting.retain(|w| !culprits.contains(&w.node));
        let names: Vec<String> = culprits.iter().map(|c| c.to_string()).collect();
        self.log(format!(
            "factory {id} aborted ({reason}); {} restart without [{}]",
            forming.formation.members().len() - culprits.len(),
            names.join(", ")
        ));
    }

    /// At most this many clients wait at once (each a connected peer that sent a join).
    fn max_waiting(&self) -> usize {
        self.config.max_clients.saturating_mul(4).max(64)
    }

    fn on_tick(&mut self) {
        if let Some(f) = &self.forming {
            if f.round_started.elapsed() > self.config.round_timeout {
                // Members not yet sent their proposal are not late.
                let reached: Vec<PublicKey> = f.formation.members()[..f.proposals_sent].to_vec();
                let late: Vec<PublicKey> = f
                    .formation
                    .waiting_for()
                    .into_iter()
                    .filter(|m| f.formation.phase() != Phase::Nonces || reached.contains(m))
                    .collect();
                self.abort_forming(&late, "a round timed out");
            } else if f.proposals_released.elapsed() >= PROPOSAL_RELEASE {
                self.release_proposals(true);
            }
        }
        if self.formation_due() {
            if let Err(e) = self.form() {
                self.log(format!("cannot form a factory: {e}"));
            }
        }
        self.check_funding();
        self.channels_tick();
        self.update_tick();
        self.close_tick();
        self.rotation_tick();
        self.lifecycle_tick();
        self.orders_tick();
        self.watch_tick();
        self.cheat_tick();
    }

    /// Marks signed factories whose funding confirmed as live.
    fn check_funding(&mut self) {
        let pending: Vec<(FactoryId, bitcoin::Txid)> = self
            .factories
            .iter()
            .filter(|(_, f)| f.status == FactoryStatus::Signed)
            .map(|(id, f)| (*id, f.funding_tx.compute_txid()))
            .collect();
        for (id, txid) in pending {
            let status = self.chain(|c| c.tx_status(&txid));
            if let Ok(TxStatus::Unknown) = status {
                // Not in our chain's mempool (refused earlier, or the node restarted): again.
                if let Some(tx) = self.factories.get(&id).map(|f| f.funding_tx.clone()) {
                    if let Err(e) = self.chain(|c| c.submit_transaction(&tx)) {
                        tracing::debug!("funding of {id} refused again: {e}");
                    }
                }
            }
            if let Ok(TxStatus::Confirmed { height, .. }) = status {
                if self
                    .store
                    .apply(&Change::Status {
                        factory: convert::factory_id(id),
                        status: FactoryStatus::Live,
                    })
                    .is_ok()
                {
                    if let Some(f) = self.factories.get_mut(&id) {
                        f.status = FactoryStatus::Live;
                        f.final_sigs.clear();
                    }
                    self.log(format!(
                        "factory {id} is live (funding confirmed at {height})"
                    ));
                }
            }
        }
    }

    /// Sends the next members their proposal, each built as it is sent: as many as keep at most
    /// `proposal_window` members with a proposal and no nonces, or a whole window more when
    /// `force` (the first, and after [`PROPOSAL_RELEASE`] without any).
    fn release_proposals(&mut self, force: bool) {
        let window = self.config.proposal_window.max(1);
        let Some(forming) = self.forming.as_mut() else {
            return;
        };
        let total = forming.formation.members().len();
        if forming.proposals_sent >= total || forming.formation.phase() != Phase::Nonces {
            return;
        }
        let answered = total - forming.formation.waiting_for().len();
        let outstanding = forming.proposals_sent.saturating_sub(answered);
        let room = if force {
            window
        } else {
            window.saturating_sub(outstanding)
        };
        let end = (forming.proposals_sent + room).min(total);
        if end == forming.proposals_sent {
            return;
        }
        let mut send = Vec::new();
        for position in forming.proposals_sent..end {
            match forming.formation.proposal_for(position) {
                Ok(proposal) => send.extend(proposal),
                // Not reached: the positions are the members' and `start` checked the size.
                Err(e) => tracing::error!(
                    "factory {}: no proposal for {position}: {e}",
                    forming.formation.id()
                ),
            }
        }
        forming.proposals_sent = end;
        forming.proposals_released = Instant::now();
        // Sending is progress: the round's clock starts again for the members just reached.
        forming.round_started = Instant::now();
        for (to, msg) in send {
            self.send(to, msg);
        }
    }

    /// Starts forming a factory with the clients waiting (up to `max_clients`).
    fn form(&mut self) -> Result<FactoryId, String> {
        if self.waiting.is_empty() {
            return Err("no client is waiting".into());
        }
        if self.forming.is_some() {
            return Err("a factory is already being formed".into());
        }
        let take = self.waiting.len().min(self.config.max_clients);
        let joined: Vec<Waiting> = self.waiting.drain(..take).collect();
        let result = self.start_formation(&joined);
        if result.is_err() {
            // Nobody was told anything: they keep waiting.
            let mut rest = std::mem::take(&mut self.waiting);
            self.waiting = joined;
            self.waiting.append(&mut rest);
        }
        result
    }

    fn start_formation(&mut self, joined: &[Waiting]) -> Result<FactoryId, String> {
        // Benchmarks time the formation from this line (scripts/bench-formation.sh).
        tracing::info!("formation starts with {} clients", joined.len());
        let chain = Arc::clone(&self.chain);
        let tip = self.chain(|c| c.tip()).map_err(|e| e.to_string())?.height;
        tokio::task::block_in_place(|| self.wallet.sync(chain.as_ref()))
            .map_err(|e| e.to_string())?;
        let NewFactoryKeys {
            id,
            index,
            keypair,
            stock,
        } = self.new_factory_keys(tip, &[])?;
        let params = FactoryParams {
            id,
            config: self.config.factory.clone(),
            lsp_key: bitcoin::PublicKey::new(keypair.public_key()),
            clients: joined
                .iter()
                .map(|w| ClientSpec {
                    key: w.join.key,
                    capacity: Amount::from_sat(w.join.capacity_sat),
                    payout: w.join.payout.clone(),
                })
                .collect(),
            creation_height: tip,
            stock_hashes: Vec::new(),
            opening_msat: Vec::new(),
        }
        .with_stock_secrets(&StockSecrets::new(*stock));
        let funding_out = Factory::new(params.clone())
            .and_then(|f| f.funding_output())
            .map_err(|e| e.to_string())?;
        let funding_tx = self
            .wallet
            .build_payment(
                &funding_out.script_pubkey,
                funding_out.value,
                self.config.funding_fee_rate,
            )
            .map_err(|e| format!("the wallet cannot fund {}: {e}", funding_out.value))?;
        let vout = funding_tx
            .output
            .iter()
            .position(|o| *o == funding_out)
            .ok_or("the wallet's transaction lacks the funding output")? as u32;
        let members: Vec<PublicKey> = joined.iter().map(|w| w.node).collect();
        let (formation, mut out) =
            Formation::start(params, members.clone(), keypair, index, &funding_tx, vout)
                .map_err(|e| e.to_string())?;
        // The members' node ids, to resume after a restart.
        let nodes: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        out.persist.push(Change::State {
            factory: convert::factory_id(id),
            party: superscalar_store::Party::Lsp,
            version: 0,
            bytes: serde_json::to_vec(&nodes).map_err(|e| e.to_string())?,
        });
        self.commit(out).map_err(|e| e.to_string())?;
        // Recorded: now the first members' proposals (the others' as nonces come in).
        self.forming = Some(Forming {
            formation,
            funding_tx,
            round_started: Instant::now(),
            proposals_sent: 0,
            proposals_released: Instant::now(),
            successor_of: None,
        });
        self.release_proposals(true);
        self.log(format!(
            "forming factory {id} with {} clients (funding {} sat)",
            members.len(),
            funding_out.value.to_sat()
        ));
        Ok(id)
    }

    /// A fresh key of the LSP for a new factory (its index allocated), the factory's stock
    /// revocation seed, and the factory's id (from the key, `tip` and `salt`).
    fn new_factory_keys(&mut self, tip: u32, salt: &[u8]) -> Result<NewFactoryKeys, String> {
        let index = self
            .store
            .allocate_key_index(KeyFamily::Factory)
            .map_err(|e| e.to_string())?;
        let keypair = self.keys.factory_key(index).map_err(|e| e.to_string())?;
        let stock = self
            .keys
            .stock_revocation_seed(index)
            .map_err(|e| e.to_string())?;
        let id = FactoryId(
            sha256::Hash::hash(
                &[
                    &keypair.public_key().serialize()[..],
                    &tip.to_be_bytes(),
                    &index.get().to_be_bytes(),
                    salt,
                ]
                .concat(),
            )
            .to_byte_array(),
        );
        Ok(NewFactoryKeys {
            id,
            index,
            keypair,
            stock,
        })
    }

    /// The LSP's coins a factory holds on chain, from its funding until it is closed: its
    /// funding output's value (`None` for a factory not funded, or over).
    fn locked(&self, record: &superscalar_store::FactoryRecord) -> Option<Amount> {
        if !matches!(
            record.status,
            FactoryStatus::Signed
                | FactoryStatus::Live
                | FactoryStatus::Dying
                | FactoryStatus::Closing
        ) {
            return None;
        }
        let funding = record.funding?;
        let f = self.factories.get(&FactoryId(record.id.0))?;
        // A rotation's successor: the coins are the old factory's, counted there until it is
        // closed (its close, the successor's funding, confirmed).
        if rotation::unsigned(&f.funding_tx) {
            return None;
        }
        let spent = f.funding_tx.input.first().map(|i| i.previous_output);
        let rotated = spent.is_some_and(|o| {
            self.store.factories().is_ok_and(|all| {
                all.iter()
                    .any(|r| r.funding == Some(o) && r.status != FactoryStatus::Closed)
            })
        });
        if rotated {
            return None;
        }
        f.funding_tx
            .output
            .get(funding.vout as usize)
            .map(|o| o.value)
    }

    /// What every factory not yet closed holds of the LSP's coins.
    fn capital_locked(&self) -> Result<Amount, String> {
        let records = self.store.factories().map_err(|e| e.to_string())?;
        Ok(records.iter().filter_map(|r| self.locked(r)).sum())
    }

    fn factory_json(&self, id: FactoryId) -> Result<Value, ApiError> {
        let record = self
            .store
            .factory(convert::factory_id(id))
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| ApiError::app(-2, format!("no factory {id}")))?;
        let members = self
            .factories
            .get(&id)
            .map(|f| f.members.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        let txs = self
            .store
            .signed_txs(record.id)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let factory = decode::<FactoryParams>(&record.params)
            .ok()
            .and_then(|p| Factory::new(p).ok());
        let dying_height = factory.as_ref().map(|f| {
            let p = f.params();
            p.creation_height.saturating_add(p.config.active_blocks)
        });
        Ok(json!({
            "id": id.to_string(),
            "status": record.status.as_str(),
            "created_height": record.created_height,
            "dying_height": dying_height,
            "reclaim_height": factory.as_ref().map(reclaim::reclaim_height),
            // Where a factory that cannot rotate migrates its present members ([from, to)).
            "migration_window": factory
                .as_ref()
                .and_then(migration::migration_window)
                .map(|(from, to)| json!([from, to])),
            "timeout_height": record.timeout_height,
            "funding": record.funding.map(|o| o.to_string()),
            "members": members,
            "locked_sat": self.locked(&record).map(|a| a.to_sat()),
            "absent": self.factories.get(&id).filter(|f| {
                matches!(f.status, FactoryStatus::Live | FactoryStatus::Dying)
            }).map(|f| {
                f.members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| !self.transport.is_connected(m))
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            }),
            "reclaim": self.reclaim_json(id),
            "transactions": txs.iter().map(|t| json!({
                "label": t.label.as_str(),
                "txid": t.tx.compute_txid().to_string(),
                "vsize": t.tx.vsize(),
            })).collect::<Vec<_>>(),
        }))
    }

    fn on_request(&mut self, method: &str, params: &Value) -> Result<Value, ApiError> {
        match method {
            "status" => {
                let tip = self.chain(|c| c.tip()).ok().map(|t| t.height);
                let balance = self.wallet.balance();
                let forming = self.forming.as_ref().map(|f| {
                    json!({
                        "factory": f.formation.id().to_string(),
                        "phase": format!("{:?}", f.formation.phase()),
                        "members": f.formation.members().len(),
                        "waiting_for": f.formation.waiting_for().len(),
                    })
                });
                Ok(json!({
                    "node_id": self.transport.node_id().to_string(),
                    "network": self.config.network.to_string(),
                    "listen": self.config.listen.to_string(),
                    "tip": tip,
                    "uptime_s": self.started.elapsed().as_secs(),
                    "wallet": {
                        "confirmed_sat": balance.confirmed.to_sat(),
                        "pending_sat": (balance.trusted_pending + balance.untrusted_pending).to_sat(),
                        "immature_sat": balance.immature.to_sat(),
                    },
                    "peers": self.transport.peers().len(),
                    "waiting": self.waiting.len(),
                    "ladder": self.ladder_json(),
                    "forming": forming,
                    "updating": self.update_json(),
                    "closing": self.close_json(),
                    "rotating": self.rotation_json(),
                    "dying": self.dying_json(),
                    "liquidity_orders": self.orders_json(),
                    "factories": self.factories.len(),
                    "capital_locked_sat": self.capital_locked().map_err(ApiError::internal)?.to_sat(),
                    "events": self.events.newest(20),
                }))
            }
            "factories" => {
                let records = self
                    .store
                    .factories()
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Ok(Value::Array(
                    records
                        .iter()
                        .map(|r| {
                            json!({
                                "id": FactoryId(r.id.0).to_string(),
                                "status": r.status.as_str(),
                                "created_height": r.created_height,
                                "timeout_height": r.timeout_height,
                                "funding": r.funding.map(|o| o.to_string()),
                                "locked_sat": self.locked(r).map(|a| a.to_sat()),
                            })
                        })
                        .collect(),
                ))
            }
            "factory" => {
                let id = params
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid_params("id: a factory id in hex"))?;
                let id: FactoryId = id
                    .parse()
                    .map_err(|_| ApiError::invalid_params(format!("{id:?} is not a factory id")))?;
                self.factory_json(id)
            }
            "clients" => Ok(json!({
                "connected": self.transport.peers().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "waiting": self.waiting.iter().map(|w| json!({
                    "node_id": w.node.to_string(),
                    "capacity_sat": w.join.capacity_sat,
                })).collect::<Vec<_>>(),
            })),
            "create-factory" => {
                let id = self.form().map_err(|e| ApiError::app(-3, e))?;
                Ok(json!({ "factory": id.to_string() }))
            }
            "channels" => Ok(self.channels_json()),
            "newaddress" => Ok(json!({ "address": self.wallet.new_address().to_string() })),
            "stop" => {
                self.stop = true;
                Ok(json!("stopping"))
            }
            other => Err(ApiError::method_not_found(other)),
        }
    }
}
