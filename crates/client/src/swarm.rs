//! `superscalar client swarm`: many independent clients in one process, a load generator for the
//! LSP. Each client has its own seed and store (`DIR/client-<i>`), its own [`Transport`] (its own
//! BOLT-8 connection and node id) and drives the real [`Joining`] state machine through the same
//! steps as the client daemon ([`crate::daemon`]: [`start_joining`], [`ceremony_step`], records
//! written before messages leave, aborted factories recorded and joined again).
//!
//! What the clients share: one tokio runtime and one read-only chain connection. A single task
//! polls the chain tip a few times a second and every client takes its height from there (a
//! daemon asks its own connection at each step); the same connection checks, for
//! [`Until::Live`], whether each factory's funding output is confirmed. Unless told otherwise
//! ([`SwarmConfig::share_aggregates`]), they also share one memo of MuSig2 key aggregations:
//! every client aggregates the keys of each node on its path (the root's N + 1 keys included,
//! one point multiplication each), the same lists as its neighbours', and an aggregation is a
//! pure function of its key list, so the first client to need one computes it and the others get
//! exactly that result (on separate machines, each would compute it; on the 2 cores of a
//! benchmark, 1,024 clients computing the root's 1,025-key aggregate is the bulk of their work).
//! Nothing else is shared: each client parses, builds and checks every transaction and signature
//! of its own.
//!
//! The report says, for each client, when it asked to join, when its factory became signed
//! (every final signature of its exit path and timeouts verified), how many bytes it received,
//! and whether it saw the factory live (the LSP's announcement, checked against the factory's
//! funding output; with [`Until::Live`], the funding confirmed on the chain). Bytes received
//! are the encoded size of every protocol message the client received plus its 2-byte type; they
//! exclude BOLT-8's framing (18 bytes of length header and MAC, and 16 bytes of MAC on the body:
//! 34 bytes a message) and the transport's own hello.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, Network, OutPoint, TxOut};
use superscalar_chain::rpc::auth::Auth;
use superscalar_chain::{BitcoindRpc, Chain};
use superscalar_core::codec::encode;
use superscalar_core::FactoryId;
use superscalar_store::{Change, FactoryStatus, Store};
use superscalar_wire::messages::Message;
use superscalar_wire::transport::{Event, Transport};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::daemon::{
    abandon, ceremony_step, funding_confirmed, open_client_node, start_joining, ClientError,
};
use crate::join::Joining;

/// How often the swarm reads the chain tip and checks its progress.
const POLL: Duration = Duration::from_millis(250);
/// How long a client waits before it joins again after it left a factory being formed.
const REJOIN_DELAY: Duration = Duration::from_secs(2);
/// How long a client waits between attempts to connect.
const RECONNECT_DELAY: Duration = Duration::from_secs(3);
/// Once every client is signed, how long the swarm waits for the LSP's live announcements.
const ANNOUNCE_GRACE: Duration = Duration::from_secs(2);

/// How the swarm runs.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The clients' data directories are `datadir/client-<i>`.
    pub datadir: PathBuf,
    /// How many clients.
    pub count: usize,
    /// The chain.
    pub network: Network,
    /// The LSP's node id (pinned).
    pub lsp_id: PublicKey,
    /// The LSP's address.
    pub lsp_addr: SocketAddr,
    /// The chain connection the clients share: JSON-RPC URL.
    pub chain_url: String,
    /// Its cookie file.
    pub chain_cookie: PathBuf,
    /// The seeds' passphrase (`None`: unencrypted, regtest only).
    pub passphrase: Option<String>,
    /// The capacity of the channel each client asks for.
    pub capacity: Amount,
    /// Whether the clients share one memo of MuSig2 key aggregations
    /// ([`superscalar_core::musig::share_key_aggregation`]).
    pub share_aggregates: bool,
}

/// When the swarm stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Once every client is signed (then up to two seconds more for the LSP's live
    /// announcements).
    Signed,
    /// Once every client's factory funding is confirmed on the chain.
    Live,
}

/// Why the swarm could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// A client's node (data directory, seed, store).
    #[error("client {index}: {source}")]
    Client {
        /// Which client.
        index: usize,
        /// What failed.
        source: ClientError,
    },
    /// The shared chain connection.
    #[error("chain: {0}")]
    Chain(#[from] superscalar_chain::ChainError),
    /// Nothing to run.
    #[error("a swarm needs at least one client")]
    Empty,
}

/// What one client of the swarm did.
#[derive(Debug, Clone)]
pub struct ClientReport {
    /// Its node id.
    pub node_id: PublicKey,
    /// When it first asked to join.
    pub joined: Option<SystemTime>,
    /// When it received its first proposal chunk.
    pub proposed: Option<SystemTime>,
    /// When its factory became signed (every final signature of its exit path verified).
    pub signed: Option<SystemTime>,
    /// The factory it is signed in.
    pub factory: Option<FactoryId>,
    /// How many times it asked to join.
    pub joins: u32,
    /// Protocol messages received.
    pub messages_received: u64,
    /// Their encoded size plus 2 bytes of type each (BOLT-8 framing excluded).
    pub bytes_received: u64,
    /// Whether the LSP announced the factory live with a funding transaction that creates the
    /// factory's funding output.
    pub announced: bool,
    /// Whether the chain shows the factory's funding output confirmed (checked for
    /// [`Until::Live`] only).
    pub confirmed: bool,
    /// The last refusal, either way.
    pub last_error: Option<String>,
    /// Time spent in its ceremony steps (building, signing, verifying, writing its records).
    pub busy: Duration,
    /// The funding output it expects, once signed.
    funding: Option<(OutPoint, TxOut)>,
}

/// What the whole swarm did.
#[derive(Debug, Clone)]
pub struct SwarmReport {
    /// Each client, in order.
    pub clients: Vec<ClientReport>,
    /// Whether it stopped at its deadline rather than its goal.
    pub timed_out: bool,
}

impl SwarmReport {
    /// How many clients are signed.
    pub fn signed(&self) -> usize {
        self.clients.iter().filter(|c| c.signed.is_some()).count()
    }

    /// How many saw the live announcement.
    pub fn announced(&self) -> usize {
        self.clients.iter().filter(|c| c.announced).count()
    }

    /// How many saw the funding confirmed.
    pub fn confirmed(&self) -> usize {
        self.clients.iter().filter(|c| c.confirmed).count()
    }

    /// The first join sent.
    pub fn first_join(&self) -> Option<SystemTime> {
        self.clients.iter().filter_map(|c| c.joined).min()
    }

    /// The first proposal received.
    pub fn first_proposal(&self) -> Option<SystemTime> {
        self.clients.iter().filter_map(|c| c.proposed).min()
    }

    /// The last client signed, if every client is.
    pub fn last_signed(&self) -> Option<SystemTime> {
        if self.signed() < self.clients.len() {
            return None;
        }
        self.clients.iter().filter_map(|c| c.signed).max()
    }

    /// Time in ceremony steps per client: (mean, max).
    pub fn busy(&self) -> (Duration, Duration) {
        let n = self.clients.len().max(1) as u32;
        let sum: Duration = self.clients.iter().map(|c| c.busy).sum();
        let max = self.clients.iter().map(|c| c.busy).max();
        (sum / n, max.unwrap_or_default())
    }

    /// Bytes received per client: (mean, max).
    pub fn bytes_received(&self) -> (u64, u64) {
        let n = self.clients.len().max(1) as u64;
        let sum: u64 = self.clients.iter().map(|c| c.bytes_received).sum();
        let max = self
            .clients
            .iter()
            .map(|c| c.bytes_received)
            .max()
            .unwrap_or(0);
        (sum / n, max)
    }
}

/// The clients of a swarm, running.
pub struct Swarm {
    reports: Vec<Arc<Mutex<ClientReport>>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    confirmed: watch::Sender<Vec<OutPoint>>,
    chain: Arc<BitcoindRpc>,
    tip: Arc<AtomicU32>,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("clients", &self.reports.len())
            .finish()
    }
}

fn lock(report: &Mutex<ClientReport>) -> MutexGuard<'_, ClientReport> {
    report.lock().unwrap_or_else(|e| e.into_inner())
}

impl Swarm {
    /// Opens every client's node (created on first start), then starts them all: each connects
    /// to the LSP and asks to join. Must be called inside a multi-threaded tokio runtime.
    pub async fn start(config: SwarmConfig) -> Result<Swarm, SwarmError> {
        if config.count == 0 {
            return Err(SwarmError::Empty);
        }
        if config.share_aggregates {
            superscalar_core::musig::share_key_aggregation();
        }
        let chain = Arc::new(BitcoindRpc::connect(
            config.chain_url.clone(),
            Auth::CookieFile(config.chain_cookie.clone()),
        )?);
        let tip = tokio::task::block_in_place(|| chain.tip())?;
        let tip = Arc::new(AtomicU32::new(tip.height));
        let mut nodes = Vec::with_capacity(config.count);
        for index in 0..config.count {
            let datadir = config.datadir.join(format!("client-{index}"));
            let node = tokio::task::block_in_place(|| {
                open_client_node(&datadir, config.network, config.passphrase.as_deref())
            })
            .map_err(|source| SwarmError::Client { index, source })?;
            nodes.push(node);
        }
        let (stop, _) = watch::channel(false);
        let (confirmed, _) = watch::channel(Vec::new());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu = Arc::new(Semaphore::new(cores));
        let mut reports = Vec::with_capacity(nodes.len());
        let mut tasks = Vec::with_capacity(nodes.len());
        for node in nodes {
            let report = Arc::new(Mutex::new(ClientReport {
                node_id: node.transport.node_id(),
                joined: None,
                proposed: None,
                signed: None,
                factory: None,
                joins: 0,
                messages_received: 0,
                bytes_received: 0,
                announced: false,
                confirmed: false,
                last_error: None,
                busy: Duration::ZERO,
                funding: None,
            }));
            let member = Member {
                store: Arc::new(Mutex::new(node.store)),
                keys: node.keys,
                transport: node.transport,
                config: config.clone(),
                joining: None,
                rejoin_after: None,
                last_connect: None,
                live: false,
                tip: Arc::clone(&tip),
                cpu: Arc::clone(&cpu),
                report: Arc::clone(&report),
            };
            let (stop, confirmed) = (stop.subscribe(), confirmed.subscribe());
            tasks.push(tokio::spawn(member.run(node.events, stop, confirmed)));
            reports.push(report);
        }
        Ok(Swarm {
            reports,
            tasks,
            stop,
            confirmed,
            chain,
            tip,
        })
    }

    /// The clients' node ids, in order.
    pub fn node_ids(&self) -> Vec<PublicKey> {
        self.reports.iter().map(|r| lock(r).node_id).collect()
    }

    /// What every client did so far.
    pub fn report(&self, timed_out: bool) -> SwarmReport {
        SwarmReport {
            clients: self.reports.iter().map(|r| lock(r).clone()).collect(),
            timed_out,
        }
    }

    /// Runs until `until` holds for every client or `timeout` passes, then stops every client
    /// and reports.
    pub async fn run(self, until: Until, timeout: Duration) -> SwarmReport {
        let deadline = Instant::now() + timeout;
        let mut all_signed_at: Option<Instant> = None;
        let mut last_confirm_check: Option<Instant> = None;
        let timed_out = loop {
            tokio::time::sleep(POLL).await;
            self.poll_tip().await;
            let report = self.report(false);
            let n = report.clients.len();
            let done = match until {
                Until::Signed => {
                    if report.signed() == n {
                        let at = *all_signed_at.get_or_insert_with(Instant::now);
                        report.announced() == n || at.elapsed() >= ANNOUNCE_GRACE
                    } else {
                        false
                    }
                }
                Until::Live => {
                    let due = last_confirm_check.map_or(true, |t| t.elapsed() >= POLL * 4);
                    if due {
                        last_confirm_check = Some(Instant::now());
                        self.check_confirmations(&report).await;
                    }
                    report.confirmed() == n
                }
            };
            if done {
                break false;
            }
            if Instant::now() >= deadline {
                break true;
            }
        };
        let _ = self.stop.send(true);
        let report = self.report(timed_out);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!("a swarm client stopped abnormally: {e}");
            }
        }
        report
    }

    /// Reads the chain tip the clients use.
    async fn poll_tip(&self) {
        let chain = Arc::clone(&self.chain);
        match tokio::task::spawn_blocking(move || chain.tip()).await {
            Ok(Ok(tip)) => self.tip.store(tip.height, Ordering::Relaxed),
            Ok(Err(e)) => tracing::debug!("chain tip: {e}"),
            Err(e) => tracing::debug!("chain tip: {e}"),
        }
    }

    /// Checks each distinct funding output once and tells the clients which are confirmed.
    async fn check_confirmations(&self, report: &SwarmReport) {
        let mut fundings: Vec<(OutPoint, TxOut)> = report
            .clients
            .iter()
            .filter(|c| !c.confirmed)
            .filter_map(|c| c.funding.clone())
            .collect();
        fundings.sort_by_key(|(o, _)| *o);
        fundings.dedup_by_key(|(o, _)| *o);
        if fundings.is_empty() {
            return;
        }
        let chain = Arc::clone(&self.chain);
        let checked = tokio::task::spawn_blocking(move || {
            fundings
                .into_iter()
                .filter(|(o, out)| funding_confirmed(chain.as_ref(), o, Some(out)))
                .map(|(o, _)| o)
                .collect::<Vec<OutPoint>>()
        })
        .await;
        if let Ok(mut confirmed) = checked {
            if !confirmed.is_empty() {
                self.confirmed.send_modify(|c| {
                    c.append(&mut confirmed);
                });
            }
        }
    }
}

/// One client of the swarm.
struct Member {
    /// Shared with the blocking pool while a ceremony step runs there.
    store: Arc<Mutex<Store>>,
    keys: superscalar_store::NodeKeys,
    transport: Transport,
    config: SwarmConfig,
    joining: Option<Joining>,
    rejoin_after: Option<Instant>,
    last_connect: Option<Instant>,
    live: bool,
    tip: Arc<AtomicU32>,
    cpu: Arc<Semaphore>,
    report: Arc<Mutex<ClientReport>>,
}

impl Member {
    async fn run(
        mut self,
        mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
        mut stop: watch::Receiver<bool>,
        mut confirmed: watch::Receiver<Vec<OutPoint>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                Some(event) = events.recv() => self.on_event(event).await,
                _ = tick.tick() => self.on_tick(),
                Ok(()) = confirmed.changed() => {
                    let outpoints = confirmed.borrow_and_update().clone();
                    self.on_confirmed(&outpoints);
                }
                _ = stop.changed() => break,
            }
        }
        self.transport.disconnect_all();
    }

    fn lsp(&self) -> PublicKey {
        self.config.lsp_id
    }

    fn report(&self) -> MutexGuard<'_, ClientReport> {
        lock(&self.report)
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signed(&self) -> bool {
        self.joining.as_ref().is_some_and(Joining::is_signed)
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected { peer, .. } if peer == self.lsp() => self.maybe_join(),
            Event::Message { peer, msg } if peer == self.lsp() => {
                {
                    let mut r = self.report();
                    r.messages_received += 1;
                    r.bytes_received += encode(&msg).len() as u64 + 2;
                }
                self.on_message(msg).await;
            }
            // A factory being formed cannot finish without the LSP: start again later.
            Event::Disconnected { peer } if peer == self.lsp() && !self.signed() => {
                self.leave(Some(REJOIN_DELAY));
            }
            Event::PeerError { error, .. } => {
                self.report().last_error = Some(format!(
                    "the LSP refused: {:?}: {}",
                    error.code, error.reason
                ));
                if self.joining.as_ref().is_some_and(|j| j.ended_by(&error)) {
                    self.leave(Some(REJOIN_DELAY));
                }
            }
            _ => {}
        }
    }

    /// Forgets the factory being joined (recorded aborted) and joins again after `delay`.
    fn leave(&mut self, delay: Option<Duration>) {
        if let Some(j) = self.joining.take() {
            abandon(&mut self.store(), &j);
        }
        self.rejoin_after = delay.map(|d| Instant::now() + d);
    }

    fn maybe_join(&mut self) {
        if self.joining.is_some() || self.rejoin_after.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if !self.transport.is_connected(&self.lsp()) {
            return;
        }
        let (network, capacity) = (self.config.network, self.config.capacity);
        let started = start_joining(&mut self.store(), &self.keys, network, capacity);
        match started {
            Ok((joining, join)) => {
                self.joining = Some(joining);
                if let Err(e) = self.transport.send(self.lsp(), join) {
                    tracing::debug!("join not sent: {e}");
                }
                let mut r = self.report();
                r.joins += 1;
                r.joined.get_or_insert_with(SystemTime::now);
            }
            Err(e) => self.report().last_error = Some(format!("cannot start joining: {e}")),
        }
    }

    /// Runs `f` on the blocking pool, at most one such step a core at a time, so that the
    /// runtime's workers stay free for the network: when every client of a large swarm signs at
    /// once, a transport starved of the runtime for more than LDK's ping interval (10 s) is
    /// disconnected. The step's order (records, then messages) is `f`'s own.
    async fn off_runtime<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Joining, &mut Store) -> T + Send + 'static,
    ) -> Option<T> {
        let permit = Arc::clone(&self.cpu).acquire_owned().await.ok()?;
        let mut joining = self.joining.take()?;
        let store = Arc::clone(&self.store);
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            let out = f(&mut joining, &mut store);
            (joining, out, started.elapsed())
        })
        .await;
        match done {
            Ok((joining, out, busy)) => {
                self.joining = Some(joining);
                self.report().busy += busy;
                Some(out)
            }
            Err(e) => {
                self.report().last_error = Some(format!("a ceremony step failed: {e}"));
                self.rejoin_after = Some(Instant::now() + REJOIN_DELAY);
                None
            }
        }
    }

    async fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Abort(a) => {
                let ours = !self.signed()
                    && self
                        .joining
                        .as_ref()
                        .is_some_and(|j| j.factory_id().map_or(true, |id| id == a.factory));
                if ours {
                    self.leave(None);
                    self.maybe_join();
                }
            }
            msg @ Message::Live(_) => {
                if !self.signed() {
                    return;
                }
                let tip = self.tip.load(Ordering::Relaxed);
                match self.off_runtime(move |j, _| j.handle(msg, tip)).await {
                    Some(Ok(_)) => self.report().announced = true,
                    Some(Err(e)) => self.report().last_error = Some(e.to_string()),
                    None => {}
                }
            }
            msg @ (Message::Proposal(_)
            | Message::Hints(_)
            | Message::AggNonces(_)
            | Message::FinalSigs(_)) => {
                if matches!(msg, Message::Proposal(_)) {
                    self.report().proposed.get_or_insert_with(SystemTime::now);
                }
                if self.joining.is_none() || self.signed() {
                    // Final signatures again after the LSP restarted: we have them already.
                    return;
                }
                let (lsp, tip, transport) = (
                    self.lsp(),
                    self.tip.load(Ordering::Relaxed),
                    self.transport.clone(),
                );
                let step = self
                    .off_runtime(move |joining, store| {
                        let r = ceremony_step(joining, store, &transport, lsp, msg, tip);
                        // The funding output is computed there too, off the runtime.
                        let funding = joining.funding().zip(
                            joining
                                .factory()
                                .filter(|_| joining.is_signed())
                                .and_then(|f| f.funding_output().ok()),
                        );
                        (r, funding)
                    })
                    .await;
                match step {
                    Some((Ok(()), funding)) => self.after_step(funding),
                    Some((Err(e), _)) => {
                        // A store that fails or a proposal refused: as the daemon, leave it.
                        self.report().last_error = Some(e.to_string());
                        self.leave(Some(REJOIN_DELAY));
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }

    fn after_step(&mut self, funding: Option<(OutPoint, TxOut)>) {
        let Some(id) = self
            .joining
            .as_ref()
            .filter(|j| j.is_signed())
            .and_then(Joining::factory_id)
        else {
            return;
        };
        let mut r = self.report();
        r.signed = Some(SystemTime::now());
        r.factory = Some(id);
        r.funding = funding;
    }

    fn on_tick(&mut self) {
        if self.transport.is_connected(&self.lsp()) {
            return self.maybe_join();
        }
        let due = self
            .last_connect
            .map_or(true, |t| t.elapsed() > RECONNECT_DELAY);
        if !due {
            return;
        }
        self.last_connect = Some(Instant::now());
        let t = self.transport.clone();
        let (id, addr) = (self.lsp(), self.config.lsp_addr);
        tokio::spawn(async move {
            if let Err(e) = t.connect(id, addr).await {
                tracing::debug!("connecting to the LSP: {e}");
            }
        });
    }

    /// Counts the factory live once the chain shows its funding, as the daemon does.
    fn on_confirmed(&mut self, outpoints: &[OutPoint]) {
        if self.live {
            return;
        }
        let Some((funding, id)) = self
            .joining
            .as_ref()
            .filter(|j| j.is_signed())
            .and_then(|j| j.funding().zip(j.factory_id()))
        else {
            return;
        };
        if !outpoints.contains(&funding) {
            return;
        }
        let change = Change::Status {
            factory: superscalar_store::FactoryId(id.0),
            status: FactoryStatus::Live,
        };
        let applied = self.store().apply(&change);
        match applied {
            Ok(()) => {
                self.live = true;
                self.report().confirmed = true;
            }
            Err(e) => self.report().last_error = Some(format!("cannot record live: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(bytes: u64, signed: Option<u64>) -> ClientReport {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        ClientReport {
            node_id: PublicKey::from_slice(&[2; 33]).unwrap(),
            joined: Some(at(10)),
            proposed: Some(at(11)),
            signed: signed.map(at),
            factory: None,
            joins: 1,
            messages_received: 3,
            bytes_received: bytes,
            announced: false,
            confirmed: false,
            last_error: None,
            busy: Duration::from_millis(bytes),
            funding: None,
        }
    }

    #[test]
    fn the_report_sums_up_its_clients() {
        let mut report = SwarmReport {
            clients: vec![client(100, Some(12)), client(300, None)],
            timed_out: true,
        };
        assert_eq!(report.signed(), 1);
        assert_eq!(report.bytes_received(), (200, 300));
        assert_eq!(
            report.busy(),
            (Duration::from_millis(200), Duration::from_millis(300))
        );
        assert_eq!(report.last_signed(), None, "not every client is signed");
        report.clients[1].signed = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(15));
        assert_eq!(
            report.last_signed(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(15))
        );
        assert_eq!(
            report.first_join(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
        let empty = SwarmReport {
            clients: Vec::new(),
            timed_out: false,
        };
        assert_eq!(empty.bytes_received(), (0, 0));
        assert_eq!(empty.busy(), (Duration::ZERO, Duration::ZERO));
    }
}
