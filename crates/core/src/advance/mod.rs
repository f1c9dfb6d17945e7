//! Factory state updates, as one party sees them: Decker-Wattenhofer advances (the LSP proposes
//! the next state of one leaf's path; only the clients below the node that ticks take part and
//! re-sign everything beneath it, merging any pseudo-Spilman chain into the new leaf states), and
//! liquidity sales (merged into a DW advance on any leaf, or as a pseudo-Spilman sale transaction
//! that spends only the current PS-factory output). Every stock output re-created by an advance
//! gets a new revocation hash; the superseded version's secret is revealed by the LSP after the
//! new state is signed, and a client accepts no further update until it holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::secp::SECP;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::Keypair;
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::secp256k1::Message;
use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid};
use thiserror::Error;

use crate::ceremony::{CeremonyError, ClientCeremony, LspCeremony, SignedTx};
use crate::channel::state::ChannelSetup;
use crate::factory::{Factory, FactoryError, Signer, Slot, TxKind, P2TR_DUST};
use crate::ledger::{Sale, StockVersion, Version};
use crate::odometer::{Odometer, OdometerError};
use crate::revocation::{RevocationError, StockRevocations, StockSecrets};
use crate::shape::LeafKind;
use crate::types::{ClientId, FactoryId, NodeId, StateIndex};

mod persist;
pub use persist::{StateSnapshotError, STATE_SNAPSHOT_VERSION};

/// Every transaction re-signed when `node`'s state ticks: its state transaction and everything
/// beneath it, with the timeout transactions (split ones with their parts) and punishment
/// transactions of the outputs they create; parents first.
pub fn jobs_below(factory: &Factory, node: NodeId, v: &Version) -> Vec<TxKind> {
    let tree = factory.tree();
    let mut txs = Vec::new();
    if tree.node(node).has_state() {
        txs.push(TxKind::State(node));
    }
    let mut stack: Vec<NodeId> = tree.node(node).children.iter().rev().copied().collect();
    while let Some(n) = stack.pop() {
        txs.push(TxKind::Kickoff(n));
        if tree.node(n).has_state() {
            txs.push(TxKind::State(n));
        }
        stack.extend(tree.node(n).children.iter().rev().copied());
    }
    let mut jobs = txs.clone();
    for tx in &txs {
        for slot in factory.outputs_of(*tx, v) {
            // With the parts of a split timeout: they spend its new outputs. The parts of
            // timeouts above the ticking node keep spending the outputs those were signed with.
            jobs.extend(factory.timeout_jobs(slot, None));
            if matches!(slot, Slot::Stock(_)) {
                jobs.push(TxKind::Punish(slot));
            }
        }
    }
    jobs
}

/// Stage 1 of an advance: every job of `jobs` but the ticking node's new state, which is signed
/// in stage 2, once every participant holds stage 1 fully signed.
pub fn stage_one(jobs: Vec<TxKind>, node: NodeId) -> Vec<TxKind> {
    jobs.into_iter()
        .filter(|k| *k != TxKind::State(node))
        .collect()
}

/// The transactions a pseudo-Spilman sale signs.
pub fn sale_jobs(factory: &Factory, index: u32) -> Vec<TxKind> {
    let mut jobs = vec![TxKind::Sale(index)];
    for slot in [Slot::Sold(index), Slot::Change(index)] {
        jobs.extend(factory.timeout_jobs(slot, None));
    }
    jobs.push(TxKind::Punish(Slot::Change(index)));
    jobs
}

/// What a sale gives: `amount` of the LSP's stock `stock` in a new channel for `buyer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaleTerms {
    /// The client buying inbound liquidity.
    pub buyer: ClientId,
    /// The stock output it comes from.
    pub stock: u32,
    /// Capacity of the new channel.
    pub amount: Amount,
}

/// The LSP's proposal to move one node of the tree to its next state (everything beneath it is
/// re-signed at its first state), possibly selling liquidity in the new leaf state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvanceProposal {
    /// The factory.
    pub factory: FactoryId,
    /// The node that ticks.
    pub node: NodeId,
    /// Its state before.
    pub from: StateIndex,
    /// Its state after.
    pub to: StateIndex,
    /// A sale merged into the re-signed leaf state.
    pub sale: Option<SaleTerms>,
    /// Every sale of the factory before this update (clients learn the sales of other stocks,
    /// which a rollover re-signs, and check those of their own).
    pub sales_before: Vec<Sale>,
    /// The new version and revocation hash of every stock output the advance re-creates.
    pub stock_versions: Vec<(u32, StockVersion)>,
    /// The stock outputs below the ticking node after the advance (they pay the higher fee).
    pub stocks_after: Vec<(u32, Amount)>,
    /// The LSP's signature over all of the above.
    pub signature: Signature,
}

fn push_sale(data: &mut Vec<u8>, sale: &Option<SaleTerms>) {
    match sale {
        None => data.push(0),
        Some(t) => {
            data.push(1);
            data.extend_from_slice(&t.buyer.0.to_be_bytes());
            data.extend_from_slice(&t.stock.to_be_bytes());
            data.extend_from_slice(&t.amount.to_sat().to_be_bytes());
        }
    }
}

fn push_sales(data: &mut Vec<u8>, sales: &[Sale]) {
    data.extend_from_slice(&(sales.len() as u32).to_be_bytes());
    for s in sales {
        data.extend_from_slice(&s.buyer.0.to_be_bytes());
        data.extend_from_slice(&s.stock.to_be_bytes());
        data.extend_from_slice(&s.amount.to_sat().to_be_bytes());
        data.push(u8::from(s.merged));
    }
}

fn lsp_sign(digest: [u8; 32], lsp: &Keypair) -> Signature {
    SECP.sign_schnorr(&Message::from_digest(digest), lsp)
}

impl AdvanceProposal {
    /// Sign (or re-sign) the proposal with the LSP's key.
    pub fn sign(&mut self, lsp: &Keypair) {
        self.signature = lsp_sign(proposal_digest(self), lsp);
    }
}

fn proposal_digest(p: &AdvanceProposal) -> [u8; 32] {
    let mut data = b"superscalar/advance".to_vec();
    data.extend_from_slice(&p.factory.0);
    data.extend_from_slice(&p.node.0.to_be_bytes());
    data.extend_from_slice(&p.from.0.to_be_bytes());
    data.extend_from_slice(&p.to.0.to_be_bytes());
    push_sale(&mut data, &p.sale);
    push_sales(&mut data, &p.sales_before);
    for (s, sv) in &p.stock_versions {
        data.extend_from_slice(&s.to_be_bytes());
        data.extend_from_slice(&sv.version.to_be_bytes());
        data.extend_from_slice(sv.hash.as_byte_array());
    }
    for (s, a) in &p.stocks_after {
        data.extend_from_slice(&s.to_be_bytes());
        data.extend_from_slice(&a.to_sat().to_be_bytes());
    }
    sha256::Hash::hash(&data).to_byte_array()
}

/// The LSP's proposal of a pseudo-Spilman liquidity sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleProposal {
    /// The factory.
    pub factory: FactoryId,
    /// The sale's index (the number of sales before it).
    pub index: u32,
    /// Every sale of the factory before this one.
    pub sales_before: Vec<Sale>,
    /// What is sold.
    pub terms: SaleTerms,
    /// The PS-factory output the sale transaction spends.
    pub spends: OutPoint,
    /// The LSP's signature over all of the above.
    pub signature: Signature,
}

impl SaleProposal {
    /// Sign (or re-sign) the proposal with the LSP's key.
    pub fn sign(&mut self, lsp: &Keypair) {
        self.signature = lsp_sign(sale_digest(self), lsp);
    }
}

fn sale_digest(p: &SaleProposal) -> [u8; 32] {
    let mut data = b"superscalar/sale".to_vec();
    data.extend_from_slice(&p.factory.0);
    data.extend_from_slice(&p.index.to_be_bytes());
    push_sale(&mut data, &Some(p.terms));
    push_sales(&mut data, &p.sales_before);
    data.extend_from_slice(p.spends.txid.as_byte_array());
    data.extend_from_slice(&p.spends.vout.to_be_bytes());
    sha256::Hash::hash(&data).to_byte_array()
}

/// A revealed revocation secret: `secret` revokes version `version` of stock output `stock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revealed {
    /// The stock output.
    pub stock: u32,
    /// The superseded version.
    pub version: u32,
    /// Its secret.
    pub secret: [u8; 32],
}

/// An update refused before anything was signed (or a failed ceremony).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdvanceError {
    /// The proposal is not signed by this factory's LSP.
    #[error("the update is not signed by the factory's LSP")]
    WrongParty,
    /// The proposal starts from a state that is not the current one (replayed or stale).
    #[error(
        "the advance starts from {got:?}, but the current state is {current:?} (replayed or stale)"
    )]
    Stale {
        /// The proposal's starting state.
        got: StateIndex,
        /// The current state.
        current: StateIndex,
    },
    /// The proposal does not move to the very next state.
    #[error("the advance must move to the next state ({expected:?}), not {got:?}")]
    NotNext {
        /// The next state.
        expected: StateIndex,
        /// The proposed state.
        got: StateIndex,
    },
    /// The amounts would not be those the protocol gives (money created or destroyed).
    #[error("the update would create or destroy money: stock {stock} should hold {expected}, proposed {got}")]
    Amounts {
        /// The stock output.
        stock: u32,
        /// What it must hold.
        expected: Amount,
        /// What the proposal says.
        got: Amount,
    },
    /// The proposal does not give the next version of exactly the re-created stocks.
    #[error("the advance must carry the next version (and a new revocation hash) of every stock output it re-creates")]
    Hashes,
    /// The proposal's history of sales disagrees with what this party signed.
    #[error("the proposal rewrites the sales this party signed: {0}")]
    History(String),
    /// A sale that the stock cannot pay, or that names a buyer outside the stock's group.
    #[error("invalid sale: {0}")]
    InvalidSale(String),
    /// This party already signed a spend of that outpoint.
    #[error("already signed a spend of {0}: a PS-factory output is spent by one sale only")]
    AlreadySpent(OutPoint),
    /// The sale spends another outpoint than the current PS-factory output.
    #[error("the sale spends {got}, but the current PS-factory output is {current}")]
    NotCurrentStock {
        /// What the proposal spends.
        got: OutPoint,
        /// The current PS-factory output.
        current: OutPoint,
    },
    /// Another update is not finished.
    #[error("an earlier update is not finished")]
    Busy,
    /// Fail closed: the secret of a superseded stock version has not been received.
    #[error(
        "no new state until the revocation secret of stock {stock} version {version} is received"
    )]
    RevocationOwed {
        /// The stock output.
        stock: u32,
        /// The superseded version.
        version: u32,
    },
    /// A revealed secret was refused.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// This client is not below the ticking node.
    #[error("{0} does not take part in this update")]
    NotInvolved(ClientId),
    /// Wrong factory.
    #[error("proposal for another factory")]
    WrongFactory,
    /// Only the LSP can do this (it holds the stock secrets).
    #[error("only the LSP, with its stock secrets, can propose updates")]
    NotLsp,
    /// The odometer cannot advance: the factory must be rotated.
    #[error(transparent)]
    Odometer(#[from] OdometerError),
    /// Building failed.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// The signing ceremony failed.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// The proposal would sign a second, different transaction at a state index this party
    /// has already signed at (an update that was abandoned): it must move past that index.
    #[error("{node} state {got:?} was already signed in an abandoned update (up to {used:?}): the next proposal must move past it")]
    IndexUsed {
        /// The node.
        node: NodeId,
        /// The highest index already signed there.
        used: StateIndex,
        /// The proposed index.
        got: StateIndex,
    },
    /// The factory is not open: its funding output has not been seen confirmed, with the
    /// expected script and amount, in this party's own chain view.
    #[error("the factory is not open: its funding output is not confirmed in our chain view")]
    NotOpen,
    /// The funding output seen on chain is not the factory's.
    #[error("the funding output on chain is {got:?}, expected {expected:?}")]
    WrongFunding {
        /// What the factory needs.
        expected: Box<TxOut>,
        /// What the chain holds at the funding outpoint.
        got: Option<Box<TxOut>>,
    },
}

/// An update abandoned after this party may have signed it: the LSP, which collects every
/// partial signature, could still complete and publish it until a newer update supersedes it.
#[derive(Debug, Clone)]
pub struct Abandoned {
    /// Its version.
    pub version: Version,
    /// The node that ticked (a DW advance), or the leaf of the stock sold (a PS sale).
    pub node: NodeId,
    /// What this party holds fully signed of it: everything beneath the ticking node's new state
    /// (stage 1 of an advance, completed before that state was signed).
    pub below: Vec<SignedTx>,
}

/// A superseded stock version and its punishment transactions (signed over the hashlock leaf).
#[derive(Debug, Clone)]
pub struct Superseded {
    /// The stock output.
    pub stock: u32,
    /// The superseded version.
    pub version: u32,
    /// Its revocation hash.
    pub hash: sha256::Hash,
    /// Punishments of the stock output and of the change outputs of its PS chain.
    pub punishments: Vec<SignedTx>,
    /// The factory version they were signed in.
    pub at: Version,
}

#[derive(Debug, Clone)]
struct Pending {
    next: Version,
    /// A DW advance: the node that ticks (its new state is signed last); a PS sale: the leaf of
    /// its stock.
    node: NodeId,
    /// Whether the update is a DW advance (signed in two stages).
    advance: bool,
    /// Stage 1 of an advance, held fully signed: this party's share of every transaction
    /// beneath the ticking node's new state.
    below: Option<Vec<SignedTx>>,
    /// Stocks whose version the update bumps.
    resigned: Vec<u32>,
    /// The outpoint a PS sale spends.
    spends: Option<OutPoint>,
}

/// What one party knows of the factory's current state: the version, the latest signed
/// transaction of every role it signs, and the revocation data of superseded stock versions.
#[derive(Debug, Clone)]
pub struct FactoryState {
    factory: Arc<Factory>,
    funding: OutPoint,
    me: Signer,
    lsp_secrets: Option<StockSecrets>,
    version: Version,
    latest: BTreeMap<TxKind, SignedTx>,
    pending: Option<Pending>,
    revocations: StockRevocations,
    superseded: Vec<Superseded>,
    owed: BTreeSet<(u32, u32)>,
    last_superseded: Vec<(u32, u32)>,
    spent: BTreeSet<OutPoint>,
    /// Whether the funding output was seen confirmed with the expected script and amount.
    open: bool,
    /// For each state transaction's input (the txid of its node's kickoff), the highest state
    /// index this party has started signing at: never a second, different transaction there.
    used: BTreeMap<Txid, StateIndex>,
    /// Updates abandoned after this party may have signed them: the LSP could still complete
    /// and publish them, until a completed update supersedes them.
    abandoned: Vec<Abandoned>,
}

impl FactoryState {
    /// After the factory's first ceremony, as `me` (the LSP must add its secrets with
    /// [`FactoryState::with_secrets`] before it can propose updates).
    pub fn new(
        factory: Arc<Factory>,
        funding: OutPoint,
        me: Signer,
        signed: impl IntoIterator<Item = SignedTx>,
    ) -> Self {
        let version = factory.initial_version();
        let mut revocations = StockRevocations::default();
        for (s, sv) in version.stocks.iter().enumerate() {
            revocations.expect(s as u32, sv.version, sv.hash);
        }
        FactoryState {
            factory,
            funding,
            me,
            lsp_secrets: None,
            version,
            latest: signed.into_iter().map(|s| (s.kind, s)).collect(),
            pending: None,
            revocations,
            superseded: Vec::new(),
            owed: BTreeSet::new(),
            last_superseded: Vec::new(),
            spent: BTreeSet::new(),
            open: false,
            used: BTreeMap::new(),
            abandoned: Vec::new(),
        }
    }

    /// Record what this party's own chain view holds at the funding outpoint: the output seen
    /// there and the height of the block that confirmed it (`None`: unconfirmed). The factory
    /// opens only when that is exactly the funding output (script and amount), confirmed within
    /// the factory's active period (a funding held back until near T would leave no time to
    /// exit). Until then no update is proposed or accepted (and a client takes no payment into
    /// the factory's channels). A mismatch is an error and leaves the factory closed.
    pub fn confirm_funding(
        &mut self,
        seen: Option<&TxOut>,
        confirmed_height: Option<u32>,
    ) -> Result<(), AdvanceError> {
        let expected = self.factory.funding_output()?;
        if seen != Some(&expected) {
            return Err(AdvanceError::WrongFunding {
                expected: Box::new(expected),
                got: seen.cloned().map(Box::new),
            });
        }
        let height = confirmed_height.ok_or(AdvanceError::NotOpen)?;
        self.factory.check_funding_height(height)?;
        self.open = true;
        Ok(())
    }

    /// The parameters of the channel on output `slot` of the current version, for a party that
    /// opens its side of it: refused until the factory is open, so that nobody takes payments
    /// into a channel whose factory output is not confirmed in its own chain view.
    pub fn channel_setup(
        &self,
        slot: Slot,
        we_opened: bool,
        our_balance_msat: u64,
    ) -> Result<ChannelSetup, AdvanceError> {
        if !self.open {
            return Err(AdvanceError::NotOpen);
        }
        if !matches!(slot, Slot::Channel(_) | Slot::Sold(_)) {
            return Err(FactoryError::NoSuch(format!("a channel at {slot:?}")).into());
        }
        self.setup_at(
            slot,
            &self.version,
            self.outpoint(slot),
            we_opened,
            our_balance_msat,
        )
    }

    /// The parameters of client `client`'s leaf channel of the current version, opening at the
    /// balances the factory's parameters give ([`crate::FactoryParams::opening_msat`]): the
    /// client holds its opening balance and the LSP the rest of the capacity. `lsp`: the
    /// LSP's side (it opens the channel) or the client's.
    pub fn leaf_channel_setup(
        &self,
        client: ClientId,
        lsp: bool,
    ) -> Result<ChannelSetup, AdvanceError> {
        let mut setup = self.channel_setup(Slot::Channel(client), lsp, 0)?;
        let capacity_msat = setup.funding.value.to_sat().saturating_mul(1000);
        let opening = self
            .factory
            .params()
            .opening_msat(client)
            .min(capacity_msat);
        setup.our_balance_msat = if lsp {
            capacity_msat - opening
        } else {
            opening
        };
        Ok(setup)
    }

    fn setup_at(
        &self,
        slot: Slot,
        v: &Version,
        outpoint: Option<OutPoint>,
        we_opened: bool,
        our_balance_msat: u64,
    ) -> Result<ChannelSetup, AdvanceError> {
        self.factory.check_slot(slot, v)?;
        let funding_outpoint = outpoint
            .ok_or_else(|| FactoryError::NoSuch(format!("the transaction creating {slot:?}")))?;
        Ok(ChannelSetup {
            funding_outpoint,
            funding: TxOut {
                value: self.factory.amounts(v)?.value(&self.factory, slot),
                script_pubkey: self.factory.script_pubkey_at(slot, v)?,
            },
            funding_key: self.factory.signing_key_at(slot, v)?,
            we_opened,
            our_balance_msat,
        })
    }

    /// The parameters of the channel on output `slot` of the update being signed (a sold
    /// channel opens on the new state's output before the update completes), given the txids
    /// its ceremony gives the re-signed transactions: see [`FactoryState::pending_outpoint`].
    pub fn pending_channel_setup(
        &self,
        slot: Slot,
        we_opened: bool,
        our_balance_msat: u64,
        txid_of: impl Fn(TxKind) -> Option<bitcoin::Txid>,
    ) -> Result<ChannelSetup, AdvanceError> {
        if !self.open {
            return Err(AdvanceError::NotOpen);
        }
        if !matches!(slot, Slot::Channel(_) | Slot::Sold(_)) {
            return Err(FactoryError::NoSuch(format!("a channel at {slot:?}")).into());
        }
        let pending = self
            .pending
            .as_ref()
            .ok_or_else(|| FactoryError::NoSuch("an update being signed".into()))?;
        let outpoint = self.pending_outpoint(slot, txid_of);
        self.setup_at(slot, &pending.next, outpoint, we_opened, our_balance_msat)
    }

    /// The sales of the current version, in order (index `j` funds [`Slot::Sold`]`(j)`).
    pub fn sales(&self) -> &[Sale] {
        &self.version.sales
    }

    /// The sales of the update being signed, if one is.
    pub fn pending_sales(&self) -> Option<&[Sale]> {
        self.pending.as_ref().map(|p| &p.next.sales[..])
    }

    /// The transaction an advance in progress signs last, in its second stage: the new state of
    /// the ticking node, the only way into everything beneath it (none for a PS sale).
    pub fn pending_entry(&self) -> Option<TxKind> {
        self.pending
            .as_ref()
            .filter(|p| p.advance)
            .map(|p| TxKind::State(p.node))
    }

    /// Whether the funding output has been seen confirmed as expected.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The funding outpoint.
    pub fn funding(&self) -> OutPoint {
        self.funding
    }

    /// Abandoned updates that the LSP may still complete (each is cleared when an update at its
    /// node or above completes: that newer state supersedes it).
    pub fn abandoned(&self) -> &[Abandoned] {
        &self.abandoned
    }

    /// `client`'s exit paths through each abandoned advance of which it holds the part beneath
    /// the ticking node: the current path above that node, the abandoned state of the node
    /// (unsigned here: it is on chain when this path is needed, published by the LSP), then the
    /// abandoned kickoffs and states beneath it. Used when the LSP publishes an abandoned state.
    pub fn abandoned_exit_paths(&self, client: ClientId) -> Vec<Vec<SignedTx>> {
        let tree = self.factory.tree();
        let mut paths = Vec::new();
        for a in self.abandoned.iter().filter(|a| !a.below.is_empty()) {
            let Ok(built) =
                self.factory
                    .build_set(&[TxKind::State(a.node)], self.funding, &a.version)
            else {
                continue;
            };
            let entry = &built[&TxKind::State(a.node)];
            let mut path = Vec::new();
            let mut below = false;
            for n in tree.path_of(client) {
                let from_below = |k: TxKind| a.below.iter().find(|s| s.kind == k).cloned();
                if below {
                    path.extend(from_below(TxKind::Kickoff(n)));
                    path.extend(from_below(TxKind::State(n)));
                    continue;
                }
                path.extend(self.latest.get(&TxKind::Kickoff(n)).cloned());
                if n == a.node {
                    path.push(SignedTx {
                        kind: TxKind::State(n),
                        tx: entry.tx.clone(),
                        spent: entry.spent.clone(),
                    });
                    below = true;
                } else {
                    path.extend(self.latest.get(&TxKind::State(n)).cloned());
                }
            }
            if below {
                paths.push(path);
            }
        }
        paths
    }

    /// Where `slot` is in each abandoned version (keep a channel's commitments on these
    /// outpoints until the abandoned versions are superseded).
    pub fn abandoned_outpoints(&self, slot: Slot) -> Vec<OutPoint> {
        let mut out = Vec::new();
        for v in self.abandoned.iter().map(|a| &a.version) {
            let Some(creator) = self.factory.creator_of(slot, v) else {
                continue;
            };
            let Ok(built) = self.factory.build_set(&[creator], self.funding, v) else {
                continue;
            };
            if let Some(op) = self.factory.slot_outpoint(slot, self.funding, v, |k| {
                built.get(&k).map(|b| b.tx.compute_txid())
            }) {
                out.push(op);
            }
        }
        out
    }

    /// The highest index of `node` this party has started signing at, under the node's
    /// current kickoff.
    fn used_at(&self, node: NodeId) -> Option<StateIndex> {
        let kickoff = self.latest.get(&TxKind::Kickoff(node))?.tx.compute_txid();
        self.used.get(&kickoff).copied()
    }

    fn record_tick(&mut self, node: NodeId, to: StateIndex) {
        if let Some(k) = self.latest.get(&TxKind::Kickoff(node)) {
            let entry = self.used.entry(k.tx.compute_txid()).or_insert(to);
            *entry = (*entry).max(to);
        }
    }

    /// The LSP's stock secrets (the LSP only).
    pub fn with_secrets(mut self, secrets: StockSecrets) -> Self {
        self.lsp_secrets = Some(secrets);
        self
    }

    /// The current version.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The current odometer.
    pub fn odometer(&self) -> &Odometer {
        &self.version.odo
    }

    /// The latest signed transaction of a role.
    pub fn latest(&self, kind: TxKind) -> Option<&SignedTx> {
        self.latest.get(&kind)
    }

    /// Every latest signed transaction this party holds (exit paths, sales, timeouts, punishments).
    pub fn signed(&self) -> Vec<SignedTx> {
        self.latest.values().cloned().collect()
    }

    /// Superseded stock versions with their punishments.
    pub fn superseded(&self) -> &[Superseded] {
        &self.superseded
    }

    /// Revocation secrets received.
    pub fn revocations(&self) -> &StockRevocations {
        &self.revocations
    }

    /// Outpoints this party has signed a PS-sale spend of.
    pub fn spent_outpoints(&self) -> &BTreeSet<OutPoint> {
        &self.spent
    }

    /// Where `slot` is, if this party holds the transaction that creates it.
    pub fn outpoint(&self, slot: Slot) -> Option<OutPoint> {
        self.factory
            .slot_outpoint(slot, self.funding, &self.version, |k| {
                self.latest.get(&k).map(|s| s.tx.compute_txid())
            })
    }

    /// Where `slot` will be in the update being signed, given the txids its ceremony will give
    /// the re-signed transactions (a channel signs its commitments on it before the update
    /// completes: dual-state).
    pub fn pending_outpoint(
        &self,
        slot: Slot,
        txid_of: impl Fn(TxKind) -> Option<bitcoin::Txid>,
    ) -> Option<OutPoint> {
        let pending = self.pending.as_ref()?;
        // A transaction the ceremony does not name (the ticking node's new state is signed in
        // the second stage) is built at the pending version: txids do not depend on witnesses.
        self.factory
            .slot_outpoint(slot, self.funding, &pending.next, |k| {
                txid_of(k).or_else(|| {
                    let built = self
                        .factory
                        .build_set(&[k], self.funding, &pending.next)
                        .ok()?;
                    built.get(&k).map(|b| b.tx.compute_txid())
                })
            })
    }

    /// Whether no update is in progress, none was abandoned since the last completed one, and
    /// every superseded version's secret is held: the factory-side conditions for a channel to
    /// retire its old funding outpoint.
    pub fn is_settled(&self) -> bool {
        self.pending.is_none() && self.owed.is_empty() && self.abandoned.is_empty()
    }

    /// The latest signed exit path of `client`: kickoffs and states in publishing order, then
    /// the sales of its PS chain up to the last one that created a channel of `client`.
    pub fn exit_path(&self, client: ClientId) -> Vec<SignedTx> {
        let mut path = Vec::new();
        for n in self.factory.tree().path_of(client) {
            for k in [TxKind::Kickoff(n), TxKind::State(n)] {
                if let Some(s) = self.latest.get(&k) {
                    path.push(s.clone());
                }
            }
        }
        if let Some(stock) = self.factory.stock_of(client) {
            let chain = self.version.chain_of(stock);
            let last = chain
                .iter()
                .rposition(|j| self.version.sales[*j as usize].buyer == client);
            if let Some(last) = last {
                for j in &chain[..=last] {
                    if let Some(s) = self.latest.get(&TxKind::Sale(*j)) {
                        path.push(s.clone());
                    }
                }
            }
        }
        path
    }

    /// Punishments of superseded stock versions whose secret is held, ready to broadcast.
    pub fn armed_punishments(&self) -> Vec<Transaction> {
        let mut out = Vec::new();
        for sup in &self.superseded {
            let Some(secret) = self.secret_of(sup.stock, sup.version) else {
                continue;
            };
            for p in &sup.punishments {
                if let Ok(tx) = self
                    .factory
                    .complete_punishment(p, &sup.at, &sup.hash, &secret)
                {
                    out.push(tx);
                }
            }
        }
        out
    }

    fn secret_of(&self, stock: u32, version: u32) -> Option<[u8; 32]> {
        match &self.lsp_secrets {
            Some(s) => Some(s.secret(stock, version)),
            None => self.revocations.secret(stock, version),
        }
    }

    fn check_open(&self) -> Result<(), AdvanceError> {
        if !self.open {
            return Err(AdvanceError::NotOpen);
        }
        if self.pending.is_some() {
            return Err(AdvanceError::Busy);
        }
        if let Some((stock, version)) = self.owed.iter().next() {
            return Err(AdvanceError::RevocationOwed {
                stock: *stock,
                version: *version,
            });
        }
        Ok(())
    }

    /// Stock outputs whose leaf is under `node`.
    fn stocks_under(&self, node: NodeId) -> Vec<u32> {
        let n = self.factory.tree().node(node);
        let mut out: Vec<u32> = Vec::new();
        for c in n.clients.clone() {
            if let Some(s) = self.factory.stock_of(ClientId(c)) {
                if out.last() != Some(&s) {
                    out.push(s);
                }
            }
        }
        out
    }

    fn check_sale(&self, terms: &SaleTerms) -> Result<(), AdvanceError> {
        let stocks = self.factory.stocks();
        let st = stocks
            .get(terms.stock as usize)
            .ok_or_else(|| AdvanceError::InvalidSale(format!("no stock {}", terms.stock)))?;
        if !st.clients.contains(&terms.buyer.0) {
            return Err(AdvanceError::InvalidSale(format!(
                "{} does not share stock {}",
                terms.buyer, terms.stock
            )));
        }
        if terms.amount < P2TR_DUST {
            return Err(AdvanceError::InvalidSale(format!(
                "{} is below the {} dust limit",
                terms.amount, P2TR_DUST
            )));
        }
        Ok(())
    }

    /// The version after an update, checked: the stock pays the sale and still every fee
    /// increase of the states to come.
    fn checked(&self, next: &Version) -> Result<(), AdvanceError> {
        let short = |e: FactoryError| match e {
            FactoryError::StockExhausted(_) => AdvanceError::InvalidSale(
                "the stock cannot pay it and the fee increases of the states to come".into(),
            ),
            e => AdvanceError::Factory(e),
        };
        self.factory.amounts(next).map_err(short)?;
        let worst = self.factory.worst_case(next);
        self.factory.amounts(&worst).map_err(short)?;
        // What is left of every stock still splits above dust among its clients, now and after
        // the fee increases of the states to come (its timeout and poison must relay).
        self.factory.check_stock_shares(next)?;
        self.factory.check_stock_shares(&worst)?;
        Ok(())
    }

    /// Our own stock output (none for the LSP).
    fn own_stock(&self) -> Option<u32> {
        match self.me {
            Signer::Lsp => None,
            Signer::Client(c) => self.factory.stock_of(c),
        }
    }

    /// The LSP's list of sales, checked against ours: the same history, nothing new on our own
    /// stock that we did not sign.
    fn adopt_sales(&self, theirs: &[Sale]) -> Result<Vec<Sale>, AdvanceError> {
        let ours = &self.version.sales;
        if theirs.len() < ours.len() {
            return Err(AdvanceError::History(format!(
                "{} sales, we know {}",
                theirs.len(),
                ours.len()
            )));
        }
        let own = self.own_stock();
        for (j, (a, b)) in ours.iter().zip(theirs).enumerate() {
            let same_sale = a.buyer == b.buyer && a.stock == b.stock && a.amount == b.amount;
            if !same_sale || (Some(a.stock) == own && a.merged != b.merged) {
                return Err(AdvanceError::History(format!("sale {j} differs")));
            }
        }
        if let Some(j) = theirs[ours.len()..]
            .iter()
            .position(|s| Some(s.stock) == own)
        {
            return Err(AdvanceError::History(format!(
                "sale {} of our stock was never signed by us",
                ours.len() + j
            )));
        }
        Ok(theirs.to_vec())
    }

    fn next_advance(
        &self,
        changed: NodeId,
        odo: Odometer,
        sale: Option<SaleTerms>,
        sales_before: Vec<Sale>,
        versions: &[(u32, StockVersion)],
    ) -> Result<(Version, Vec<u32>), AdvanceError> {
        let stocks = self.stocks_under(changed);
        if versions.len() != stocks.len() || versions.iter().zip(&stocks).any(|(h, s)| h.0 != *s) {
            return Err(AdvanceError::Hashes);
        }
        if let Some(own) = self.own_stock() {
            let current = self.version.stocks[own as usize].version;
            if versions
                .iter()
                .any(|(s, sv)| *s == own && sv.version != current + 1)
            {
                return Err(AdvanceError::Hashes);
            }
        }
        let mut next = Version {
            odo,
            sales: sales_before,
            ..self.version.clone()
        };
        // Cut-through: the PS chains below become outputs of the new leaf states.
        for sale in next.sales.iter_mut() {
            if stocks.contains(&sale.stock) {
                sale.merged = true;
            }
        }
        if let Some(t) = sale {
            self.check_sale(&t)?;
            if !stocks.contains(&t.stock) {
                return Err(AdvanceError::InvalidSale(format!(
                    "stock {} is not re-signed by this advance",
                    t.stock
                )));
            }
            next.sales.push(Sale {
                buyer: t.buyer,
                stock: t.stock,
                amount: t.amount,
                merged: true,
            });
        }
        for (s, sv) in versions {
            next.stocks[*s as usize] = *sv;
        }
        self.checked(&next)?;
        Ok((next, stocks))
    }

    fn stock_amounts(
        &self,
        v: &Version,
        stocks: &[u32],
    ) -> Result<Vec<(u32, Amount)>, FactoryError> {
        let amounts = self.factory.amounts(v)?;
        Ok(stocks
            .iter()
            .map(|s| (*s, amounts.value(&self.factory, Slot::Stock(*s))))
            .collect())
    }

    /// LSP: propose advancing `leaf`'s path and start the ceremony with the clients below the
    /// ticking node.
    pub fn propose(
        &mut self,
        leaf: NodeId,
        lsp: &Keypair,
    ) -> Result<(AdvanceProposal, LspCeremony), AdvanceError> {
        self.propose_with(leaf, None, lsp)
    }

    /// LSP: propose advancing `leaf`'s path with a sale merged into the new leaf state (a DW-leaf
    /// sale), and start the ceremony.
    pub fn propose_with(
        &mut self,
        leaf: NodeId,
        sale: Option<SaleTerms>,
        lsp: &Keypair,
    ) -> Result<(AdvanceProposal, LspCeremony), AdvanceError> {
        self.check_open()?;
        let secrets = self.lsp_secrets.clone().ok_or(AdvanceError::NotLsp)?;
        let tree = self.factory.tree();
        let mut odo = self.version.odo.clone();
        let changed = odo.advance_past(tree, leaf, |n| self.used_at(n))?;
        let versions: Vec<(u32, StockVersion)> = self
            .stocks_under(changed)
            .into_iter()
            .map(|s| {
                let version = self.version.stocks[s as usize].version + 1;
                let hash = secrets.hash(s, version);
                (s, StockVersion { version, hash })
            })
            .collect();
        let sales_before = self.version.sales.clone();
        let (next, resigned) =
            self.next_advance(changed, odo, sale, sales_before.clone(), &versions)?;
        let mut proposal = AdvanceProposal {
            factory: self.factory.params().id,
            node: changed,
            from: self
                .version
                .odo
                .state(changed)
                .ok_or(OdometerError::NotDw(changed))?,
            to: next
                .odo
                .state(changed)
                .ok_or(OdometerError::NotDw(changed))?,
            sale,
            sales_before,
            stock_versions: versions,
            stocks_after: self.stock_amounts(&next, &resigned)?,
            signature: Signature::from_slice(&[0u8; 64]).expect("64 bytes"),
        };
        proposal.sign(lsp);
        let jobs = stage_one(jobs_below(&self.factory, changed, &next), changed);
        let ceremony =
            LspCeremony::for_jobs(Arc::clone(&self.factory), *lsp, self.funding, &next, &jobs)?;
        self.record_tick(changed, proposal.to);
        self.pending = Some(Pending {
            next,
            node: changed,
            advance: true,
            below: None,
            resigned,
            spends: None,
        });
        Ok((proposal, ceremony))
    }

    fn check_lsp_signature(&self, digest: [u8; 32], sig: &Signature) -> Result<(), AdvanceError> {
        let secp = &*SECP;
        let lsp = self.factory.key_of(Signer::Lsp).inner.x_only_public_key().0;
        secp.verify_schnorr(sig, &Message::from_digest(digest), &lsp)
            .map_err(|_| AdvanceError::WrongParty)
    }

    /// Client: check a proposal against our own state and our own chain view (`tip`, the height
    /// of our best block); if it moves to a later state than any we signed at, conserves money
    /// and leaves time to exit before T, start our share of the ceremony. The new index is
    /// recorded before anything is signed. Nothing changes when it is refused.
    pub fn accept(
        &mut self,
        proposal: &AdvanceProposal,
        me: ClientId,
        key: Keypair,
        tip: u32,
    ) -> Result<ClientCeremony, AdvanceError> {
        if proposal.factory != self.factory.params().id {
            return Err(AdvanceError::WrongFactory);
        }
        self.check_lsp_signature(proposal_digest(proposal), &proposal.signature)?;
        self.check_open()?;
        self.factory.check_update_height(tip)?;
        let tree = self.factory.tree();
        let changed = proposal.node;
        if changed.0 as usize >= tree.nodes().len() || !tree.node(changed).clients.contains(&me.0) {
            return Err(AdvanceError::NotInvolved(me));
        }
        let current = self
            .version
            .odo
            .state(changed)
            .ok_or(OdometerError::NotDw(changed))?;
        if proposal.from != current {
            return Err(AdvanceError::Stale {
                got: proposal.from,
                current,
            });
        }
        if let Some(used) = self.used_at(changed).filter(|u| *u > current) {
            if proposal.to <= used {
                return Err(AdvanceError::IndexUsed {
                    node: changed,
                    used,
                    got: proposal.to,
                });
            }
        }
        // A later index than the next one is safe (it only uses up states): the LSP skips the
        // indices of abandoned updates, which a client that never saw them does not know.
        if proposal.to <= current {
            return Err(AdvanceError::NotNext {
                expected: StateIndex(current.0 + 1),
                got: proposal.to,
            });
        }
        let mut odo = self.version.odo.clone();
        odo.tick_to(tree, changed, proposal.to)?;
        let sales_before = self.adopt_sales(&proposal.sales_before)?;
        let (next, resigned) = self.next_advance(
            changed,
            odo,
            proposal.sale,
            sales_before,
            &proposal.stock_versions,
        )?;
        let stocks = self.stock_amounts(&next, &resigned)?;
        if stocks.len() != proposal.stocks_after.len() {
            return Err(AdvanceError::Amounts {
                stock: u32::MAX,
                expected: Amount::ZERO,
                got: Amount::ZERO,
            });
        }
        for ((s, want), (ps, got)) in stocks.iter().zip(&proposal.stocks_after) {
            if s != ps || want != got {
                return Err(AdvanceError::Amounts {
                    stock: *s,
                    expected: *want,
                    got: *got,
                });
            }
        }
        let jobs = stage_one(jobs_below(&self.factory, changed, &next), changed);
        let ceremony = ClientCeremony::for_jobs(
            Arc::clone(&self.factory),
            me,
            key,
            self.funding,
            &next,
            Some(&jobs),
        )?;
        // Recorded before anything is signed: never a different transaction at this index.
        self.record_tick(changed, proposal.to);
        self.pending = Some(Pending {
            next,
            node: changed,
            advance: true,
            below: None,
            resigned,
            spends: None,
        });
        Ok(ceremony)
    }

    /// Stage 2 of an advance, for a client: once it holds, fully signed and verified, its whole
    /// share of stage 1 (`below`: every transaction beneath the ticking node's new state, from
    /// [`ClientCeremony::finish`]), start the ceremony of that state itself. Signing it last
    /// means that whenever the LSP can publish the new state, this client can follow it down to
    /// its channel, even if the LSP withholds the final signature of the state.
    pub fn accept_entry(
        &mut self,
        below: &[SignedTx],
        me: ClientId,
        key: Keypair,
    ) -> Result<ClientCeremony, AdvanceError> {
        let entry = self.take_stage_one(below, Signer::Client(me))?;
        let v = self
            .pending
            .as_ref()
            .map(|p| p.next.clone())
            .ok_or(AdvanceError::Busy)?;
        Ok(ClientCeremony::for_jobs(
            Arc::clone(&self.factory),
            me,
            key,
            self.funding,
            &v,
            Some(&[entry]),
        )?)
    }

    /// Stage 2 of an advance, for the LSP: with stage 1 complete (`below`: every transaction
    /// of stage 1, fully signed), the ceremony of the ticking node's new state.
    pub fn propose_entry(
        &mut self,
        below: &[SignedTx],
        lsp: &Keypair,
    ) -> Result<LspCeremony, AdvanceError> {
        if self.lsp_secrets.is_none() {
            return Err(AdvanceError::NotLsp);
        }
        let entry = self.take_stage_one(below, Signer::Lsp)?;
        let v = self
            .pending
            .as_ref()
            .map(|p| p.next.clone())
            .ok_or(AdvanceError::Busy)?;
        Ok(LspCeremony::for_jobs(
            Arc::clone(&self.factory),
            *lsp,
            self.funding,
            &v,
            &[entry],
        )?)
    }

    /// Check that `below` is exactly `who`'s share of the pending advance's stage 1, each
    /// transaction the one the advance builds with a valid signature; record it, and return the
    /// transaction stage 2 signs. Nothing changes when refused.
    fn take_stage_one(&mut self, below: &[SignedTx], who: Signer) -> Result<TxKind, AdvanceError> {
        let pending = self.pending.as_ref().ok_or(AdvanceError::Busy)?;
        if !pending.advance || pending.below.is_some() {
            return Err(
                CeremonyError::WrongPhase("stage 2 follows stage 1 of an advance, once").into(),
            );
        }
        let node = pending.node;
        let v = &pending.next;
        let stage = stage_one(jobs_below(&self.factory, node, v), node);
        let mine: BTreeSet<TxKind> = match who {
            Signer::Lsp => stage.iter().copied().collect(),
            Signer::Client(c) => self
                .factory
                .client_jobs(c, v)?
                .into_iter()
                .filter(|k| stage.contains(k))
                .collect(),
        };
        let given: BTreeSet<TxKind> = below.iter().map(|s| s.kind).collect();
        if given != mine || given.len() != below.len() {
            return Err(CeremonyError::WrongJobs {
                signer: who,
                expected: mine.len(),
                got: below.len(),
            }
            .into());
        }
        let kinds: Vec<TxKind> = mine.iter().copied().collect();
        let built = self.factory.build_set(&kinds, self.funding, v)?;
        let secp = &*SECP;
        for s in below {
            let b = &built[&s.kind];
            let bad = || CeremonyError::BadFinalSignature {
                job: s.kind,
                problem: "invalid",
            };
            if s.tx.compute_txid() != b.tx.compute_txid() || s.spent != b.spent {
                return Err(bad().into());
            }
            let sig =
                s.tx.input
                    .first()
                    .and_then(|i| i.witness.nth(0))
                    .and_then(|w| Signature::from_slice(w).ok())
                    .ok_or_else(bad)?;
            let sighash = self.factory.sighash_of(s.kind, &b.tx, &b.spent, v)?;
            let key = self.factory.key_for(s.kind, v)?;
            secp.verify_schnorr(&sig, &Message::from_digest(sighash), &key.output_key())
                .map_err(|_| bad())?;
        }
        if let Some(p) = self.pending.as_mut() {
            p.below = Some(below.to_vec());
        }
        Ok(TxKind::State(node))
    }

    fn current_ps_output(&self, stock: u32) -> Result<OutPoint, AdvanceError> {
        let slot = match self.version.chain_of(stock).last() {
            Some(j) => Slot::Change(*j),
            None => Slot::Stock(stock),
        };
        self.outpoint(slot)
            .ok_or_else(|| AdvanceError::InvalidSale(format!("{slot:?} is not held")))
    }

    fn next_sale(&self, terms: &SaleTerms, before: Vec<Sale>) -> Result<Version, AdvanceError> {
        self.check_sale(terms)?;
        let leaf = self.factory.stocks()[terms.stock as usize].leaf;
        if !matches!(
            self.factory.params().config.shape.leaf,
            LeafKind::PseudoSpilman { .. }
        ) {
            return Err(AdvanceError::InvalidSale(format!(
                "{leaf} is a Decker-Wattenhofer leaf: sell with an advance (propose_with)"
            )));
        }
        let mut next = Version {
            sales: before,
            ..self.version.clone()
        };
        next.sales.push(Sale {
            buyer: terms.buyer,
            stock: terms.stock,
            amount: terms.amount,
            merged: false,
        });
        self.checked(&next)?;
        Ok(next)
    }

    /// LSP: propose a pseudo-Spilman sale from `terms.stock`'s current PS-factory output.
    pub fn propose_sale(
        &mut self,
        terms: SaleTerms,
        lsp: &Keypair,
    ) -> Result<(SaleProposal, LspCeremony), AdvanceError> {
        self.check_open()?;
        if self.lsp_secrets.is_none() {
            return Err(AdvanceError::NotLsp);
        }
        let sales_before = self.version.sales.clone();
        let next = self.next_sale(&terms, sales_before.clone())?;
        let spends = self.current_ps_output(terms.stock)?;
        if self.spent.contains(&spends) {
            return Err(AdvanceError::AlreadySpent(spends));
        }
        let index = self.version.sales.len() as u32;
        let mut proposal = SaleProposal {
            factory: self.factory.params().id,
            index,
            sales_before,
            terms,
            spends,
            signature: Signature::from_slice(&[0u8; 64]).expect("64 bytes"),
        };
        proposal.sign(lsp);
        let jobs = sale_jobs(&self.factory, index);
        let ceremony =
            LspCeremony::for_jobs(Arc::clone(&self.factory), *lsp, self.funding, &next, &jobs)?;
        // Recorded before anything is signed: this outpoint is never spent by another sale.
        self.spent.insert(spends);
        self.pending = Some(Pending {
            next,
            node: self.factory.stocks()[terms.stock as usize].leaf,
            advance: false,
            below: None,
            resigned: Vec::new(),
            spends: Some(spends),
        });
        Ok((proposal, ceremony))
    }

    /// Client of the PS factory: check a sale proposal against our state and our own chain view
    /// (`tip`); it must spend the current PS-factory output, which this client has never signed
    /// a spend of. Nothing changes when refused.
    pub fn accept_sale(
        &mut self,
        proposal: &SaleProposal,
        me: ClientId,
        key: Keypair,
        tip: u32,
    ) -> Result<ClientCeremony, AdvanceError> {
        if proposal.factory != self.factory.params().id {
            return Err(AdvanceError::WrongFactory);
        }
        self.check_lsp_signature(sale_digest(proposal), &proposal.signature)?;
        if self.spent.contains(&proposal.spends) {
            return Err(AdvanceError::AlreadySpent(proposal.spends));
        }
        self.check_open()?;
        self.factory.check_update_height(tip)?;
        let st = self
            .factory
            .stocks()
            .get(proposal.terms.stock as usize)
            .ok_or_else(|| AdvanceError::InvalidSale("no such stock".into()))?;
        if !st.clients.contains(&me.0) {
            return Err(AdvanceError::NotInvolved(me));
        }
        if proposal.index as usize != proposal.sales_before.len() {
            return Err(AdvanceError::InvalidSale(format!(
                "sale index {} is not the next one ({})",
                proposal.index,
                proposal.sales_before.len()
            )));
        }
        let current = self.current_ps_output(proposal.terms.stock)?;
        if proposal.spends != current {
            return Err(AdvanceError::NotCurrentStock {
                got: proposal.spends,
                current,
            });
        }
        let before = self.adopt_sales(&proposal.sales_before)?;
        let next = self.next_sale(&proposal.terms, before)?;
        let jobs = sale_jobs(&self.factory, proposal.index);
        let ceremony = ClientCeremony::for_jobs(
            Arc::clone(&self.factory),
            me,
            key,
            self.funding,
            &next,
            Some(&jobs),
        )?;
        self.spent.insert(proposal.spends);
        self.pending = Some(Pending {
            next,
            node: st.leaf,
            advance: false,
            below: None,
            resigned: Vec::new(),
            spends: Some(proposal.spends),
        });
        Ok(ceremony)
    }

    /// Finish: the re-signed transactions replace the old ones, the version moves on, and the
    /// punishments of every superseded stock version are kept. A client then owes itself the
    /// superseded versions' secrets ([`FactoryState::receive_revocations`]) before any new update.
    pub fn complete(
        &mut self,
        signed: impl IntoIterator<Item = SignedTx>,
    ) -> Result<(), AdvanceError> {
        let ready = self
            .pending
            .as_ref()
            .is_some_and(|p| !p.advance || p.below.is_some());
        if !ready {
            return Err(match self.pending {
                None => AdvanceError::Busy,
                Some(_) => CeremonyError::WrongPhase(
                    "an advance completes after its second stage (the ticking node's state)",
                )
                .into(),
            });
        }
        let pending = self.pending.take().ok_or(AdvanceError::Busy)?;
        let old = std::mem::replace(&mut self.version, pending.next);
        // A newer state of a node beats every abandoned update at that node or beneath it (a
        // later index at the same node, or a later state of an ancestor); abandoned updates
        // elsewhere, or above it, still stand.
        if pending.advance {
            let tree = self.factory.tree();
            let beaten = |n: NodeId| {
                let mut id = Some(n);
                while let Some(x) = id {
                    if x == pending.node {
                        return true;
                    }
                    id = tree.node(x).parent;
                }
                false
            };
            self.abandoned.retain(|a| !beaten(a.node));
        }
        self.last_superseded.clear();
        let own = self.own_stock();
        for s in &pending.resigned {
            if self.me != Signer::Lsp && Some(*s) != own {
                // Another group's stock: its clients hold its punishments and secrets.
                continue;
            }
            let ov = old.stocks[*s as usize];
            let mut punishments = Vec::new();
            let mut slots = vec![Slot::Stock(*s)];
            slots.extend(old.chain_of(*s).into_iter().map(Slot::Change));
            for slot in slots {
                if let Some(p) = self.latest.remove(&TxKind::Punish(slot)) {
                    punishments.push(p);
                }
            }
            self.superseded.push(Superseded {
                stock: *s,
                version: ov.version,
                hash: ov.hash,
                punishments,
                at: old.clone(),
            });
            let nv = self.version.stocks[*s as usize];
            self.revocations.expect(*s, nv.version, nv.hash);
            self.last_superseded.push((*s, ov.version));
            if self.lsp_secrets.is_none() {
                self.owed.insert((*s, ov.version));
            }
        }
        for s in signed {
            self.latest.insert(s.kind, s);
        }
        // Drop what no longer exists in the new version (cut-through sales and their outputs).
        let keep: BTreeSet<TxKind> = match self.me {
            Signer::Lsp => self.factory.all_jobs(&self.version).into_iter().collect(),
            Signer::Client(c) => self
                .factory
                .client_jobs(c, &self.version)?
                .into_iter()
                .collect(),
        };
        self.latest.retain(|k, _| keep.contains(k));
        let _ = pending.spends;
        Ok(())
    }

    /// LSP: the secrets of the stock versions the last update superseded (send them to the
    /// clients of those stocks).
    pub fn reveal(&self) -> Result<Vec<Revealed>, AdvanceError> {
        let secrets = self.lsp_secrets.as_ref().ok_or(AdvanceError::NotLsp)?;
        Ok(self
            .last_superseded
            .iter()
            .map(|(s, v)| Revealed {
                stock: *s,
                version: *v,
                secret: secrets.secret(*s, *v),
            })
            .collect())
    }

    /// Client: take revealed secrets; each is checked against its version's hash and the stock's
    /// shachain. A refused secret changes nothing and the client stays closed.
    pub fn receive_revocations(&mut self, revealed: &[Revealed]) -> Result<(), AdvanceError> {
        for r in revealed {
            let ours = self.me == Signer::Lsp || Some(r.stock) == self.own_stock();
            if !ours || self.revocations.secret(r.stock, r.version).is_some() {
                continue;
            }
            self.revocations.receive(r.stock, r.version, r.secret)?;
            self.owed.remove(&(r.stock, r.version));
        }
        Ok(())
    }

    /// Give up an unfinished update. The old state stays current; what may have been signed
    /// stays recorded, since a partial signature may have left: an outpoint spent by a sale,
    /// the state index of a DW advance (the next proposal must move past it), and the
    /// abandoned version itself, which the LSP could still complete and publish until a newer
    /// update completes ([`FactoryState::abandoned`], [`FactoryState::is_settled`]).
    pub fn abandon(&mut self) {
        if let Some(p) = self.pending.take() {
            self.abandoned.push(Abandoned {
                version: p.next,
                node: p.node,
                below: p.below.unwrap_or_default(),
            });
        }
    }
}
