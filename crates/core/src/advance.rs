//! Decker-Wattenhofer advances: the LSP proposes the next state of one leaf's path, only the
//! clients below the node that ticks take part, and they re-sign everything beneath it (the ticking
//! state transaction, with its shorter delay and higher fee, and every transaction and timeout
//! below). Each client checks the proposal against its own odometer before it signs anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::Keypair;
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::secp256k1::{Message, Secp256k1};
use bitcoin::{Amount, OutPoint};
use thiserror::Error;

use crate::ceremony::{CeremonyError, ClientCeremony, LspCeremony, SignedTx};
use crate::factory::{Factory, FactoryError, Signer, Slot, TxKind};
use crate::odometer::{Odometer, OdometerError};
use crate::types::{ClientId, FactoryId, NodeId, StateIndex};

/// Every transaction re-signed when `node`'s state ticks: its state transaction and everything
/// beneath it, with the timeout transactions of the outputs they create; parents first.
pub fn jobs_below(factory: &Factory, node: NodeId) -> Vec<TxKind> {
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
        for slot in factory.outputs_of(*tx) {
            if factory.has_timeout(slot) {
                jobs.push(TxKind::Timeout(slot));
            }
        }
    }
    jobs
}

/// The LSP's proposal to move one node of the tree to its next state (everything beneath it is
/// re-signed at its first state).
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
    /// The stock outputs below the ticking node after the advance (they pay the higher fee).
    pub stocks_after: Vec<(u32, Amount)>,
    /// The LSP's signature over all of the above.
    pub signature: Signature,
}

fn proposal_digest(p: &AdvanceProposal) -> [u8; 32] {
    let mut data = b"superscalar/advance".to_vec();
    data.extend_from_slice(&p.factory.0);
    data.extend_from_slice(&p.node.0.to_be_bytes());
    data.extend_from_slice(&p.from.0.to_be_bytes());
    data.extend_from_slice(&p.to.0.to_be_bytes());
    for (s, a) in &p.stocks_after {
        data.extend_from_slice(&s.to_be_bytes());
        data.extend_from_slice(&a.to_sat().to_be_bytes());
    }
    sha256::Hash::hash(&data).to_byte_array()
}

/// An advance refused before anything was signed (or a failed ceremony).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdvanceError {
    /// The proposal is not signed by this factory's LSP.
    #[error("the advance is not signed by the factory's LSP")]
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
    #[error("the advance would create or destroy money: stock {stock} should hold {expected}, proposed {got}")]
    Amounts {
        /// The stock output.
        stock: u32,
        /// What it must hold.
        expected: Amount,
        /// What the proposal says.
        got: Amount,
    },
    /// Another advance is not finished.
    #[error("an earlier advance is not finished")]
    Busy,
    /// This client is not below the ticking node.
    #[error("{0} does not take part in this advance")]
    NotInvolved(ClientId),
    /// Wrong factory.
    #[error("proposal for another factory")]
    WrongFactory,
    /// The odometer cannot advance: the factory must be rotated.
    #[error(transparent)]
    Odometer(#[from] OdometerError),
    /// Building failed.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// The signing ceremony failed.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
}

/// What one party knows of the factory's current state: the odometer and the latest signed
/// transaction of every role it signs.
#[derive(Debug, Clone)]
pub struct FactoryState {
    factory: Arc<Factory>,
    funding: OutPoint,
    odo: Odometer,
    latest: BTreeMap<TxKind, SignedTx>,
    pending: Option<(Odometer, NodeId)>,
}

impl FactoryState {
    /// After the factory's first ceremony.
    pub fn new(
        factory: Arc<Factory>,
        funding: OutPoint,
        signed: impl IntoIterator<Item = SignedTx>,
    ) -> Self {
        let odo = factory.initial_odometer();
        FactoryState {
            factory,
            funding,
            odo,
            latest: signed.into_iter().map(|s| (s.kind, s)).collect(),
            pending: None,
        }
    }

    /// The current odometer.
    pub fn odometer(&self) -> &Odometer {
        &self.odo
    }

    /// The latest signed transaction of a role.
    pub fn latest(&self, kind: TxKind) -> Option<&SignedTx> {
        self.latest.get(&kind)
    }

    /// Every latest signed transaction this party holds (exit paths and timeouts).
    pub fn signed(&self) -> Vec<SignedTx> {
        self.latest.values().cloned().collect()
    }

    /// The latest signed exit path of `client` (kickoffs and states, in publishing order).
    pub fn exit_path(&self, client: ClientId) -> Vec<SignedTx> {
        let mut path = Vec::new();
        for n in self.factory.tree().path_of(client) {
            for k in [TxKind::Kickoff(n), TxKind::State(n)] {
                if let Some(s) = self.latest.get(&k) {
                    path.push(s.clone());
                }
            }
        }
        path
    }

    fn stocks_below(
        &self,
        odo: &Odometer,
        node: NodeId,
    ) -> Result<Vec<(u32, Amount)>, FactoryError> {
        let amounts = self.factory.amounts(odo)?;
        let n = self.factory.tree().node(node);
        let mut out = Vec::new();
        for c in n.clients.clone() {
            if let Some(s) = self.factory.stock_of(ClientId(c)) {
                if out.last().map(|(l, _): &(u32, Amount)| *l) != Some(s) {
                    out.push((s, amounts.value(&self.factory, Slot::Stock(s))));
                }
            }
        }
        Ok(out)
    }

    /// LSP: propose advancing `leaf`'s path and start the ceremony with the clients below the
    /// ticking node.
    pub fn propose(
        &mut self,
        leaf: NodeId,
        lsp: &Keypair,
    ) -> Result<(AdvanceProposal, LspCeremony), AdvanceError> {
        if self.pending.is_some() {
            return Err(AdvanceError::Busy);
        }
        let tree = self.factory.tree();
        let mut next = self.odo.clone();
        let changed = next.advance(tree, leaf)?;
        let mut proposal = AdvanceProposal {
            factory: self.factory.params().id,
            node: changed,
            from: self
                .odo
                .state(changed)
                .ok_or(OdometerError::NotDw(changed))?,
            to: next.state(changed).ok_or(OdometerError::NotDw(changed))?,
            stocks_after: self.stocks_below(&next, changed)?,
            signature: Signature::from_slice(&[0u8; 64]).expect("64 bytes"),
        };
        let secp = Secp256k1::signing_only();
        proposal.signature =
            secp.sign_schnorr(&Message::from_digest(proposal_digest(&proposal)), lsp);
        let jobs = jobs_below(&self.factory, changed);
        let ceremony =
            LspCeremony::for_jobs(Arc::clone(&self.factory), *lsp, self.funding, &next, &jobs)?;
        self.pending = Some((next, changed));
        Ok((proposal, ceremony))
    }

    /// Client: check a proposal against our own odometer; if it is the next state, start our
    /// share of the ceremony. Nothing changes when it is refused.
    pub fn accept(
        &mut self,
        proposal: &AdvanceProposal,
        me: ClientId,
        key: Keypair,
    ) -> Result<ClientCeremony, AdvanceError> {
        if proposal.factory != self.factory.params().id {
            return Err(AdvanceError::WrongFactory);
        }
        let secp = Secp256k1::verification_only();
        let lsp = self.factory.key_of(Signer::Lsp).inner.x_only_public_key().0;
        secp.verify_schnorr(
            &proposal.signature,
            &Message::from_digest(proposal_digest(proposal)),
            &lsp,
        )
        .map_err(|_| AdvanceError::WrongParty)?;
        if self.pending.is_some() {
            return Err(AdvanceError::Busy);
        }
        let tree = self.factory.tree();
        let changed = proposal.node;
        if changed.0 as usize >= tree.nodes().len() || !tree.node(changed).clients.contains(&me.0) {
            return Err(AdvanceError::NotInvolved(me));
        }
        let current = self
            .odo
            .state(changed)
            .ok_or(OdometerError::NotDw(changed))?;
        if proposal.from != current {
            return Err(AdvanceError::Stale {
                got: proposal.from,
                current,
            });
        }
        let expected = StateIndex(current.0 + 1);
        if proposal.to != expected {
            return Err(AdvanceError::NotNext {
                expected,
                got: proposal.to,
            });
        }
        let mut next = self.odo.clone();
        next.tick(tree, changed)?;
        let stocks = self.stocks_below(&next, changed)?;
        for ((s, want), (ps, got)) in stocks.iter().zip(&proposal.stocks_after) {
            if s != ps || want != got {
                return Err(AdvanceError::Amounts {
                    stock: *s,
                    expected: *want,
                    got: *got,
                });
            }
        }
        if stocks.len() != proposal.stocks_after.len() {
            return Err(AdvanceError::Amounts {
                stock: u32::MAX,
                expected: Amount::ZERO,
                got: Amount::ZERO,
            });
        }
        let jobs = jobs_below(&self.factory, changed);
        let ceremony = ClientCeremony::for_jobs(
            Arc::clone(&self.factory),
            me,
            key,
            self.funding,
            &next,
            Some(&jobs),
        )?;
        self.pending = Some((next, changed));
        Ok(ceremony)
    }

    /// Finish: the re-signed transactions replace the old ones and the odometer moves on.
    pub fn complete(
        &mut self,
        signed: impl IntoIterator<Item = SignedTx>,
    ) -> Result<(), AdvanceError> {
        let (next, _) = self.pending.take().ok_or(AdvanceError::Busy)?;
        for s in signed {
            self.latest.insert(s.kind, s);
        }
        self.odo = next;
        Ok(())
    }

    /// Give up an unfinished advance (the old state stays current).
    pub fn abandon(&mut self) {
        self.pending = None;
    }
}
