//! A client's side of joining a factory over the network, as a pure state machine: it takes the
//! LSP's messages and returns the records to write and the messages to send, in that order
//! ([`Output`]). No I/O: the daemon passes its own chain tip.
//!
//! The client signs nothing before it has checked, from the parameters alone and against its own
//! chain view, that the factory is the one it asked to join: its key, capacity and payout at the
//! position the LSP names, the network, and heights that leave time for the whole life of the
//! factory and a worst-case exit ([`superscalar_core::Factory::check_heights`]). It records every
//! spend it signs before its partial signatures leave, and it counts the factory as signed only
//! once the final signature of every transaction of its exit path and timeouts verifies. The
//! factory is open only once its own chain view shows the funding output
//! ([`crate::funding::check_funding`]).

use std::sync::Arc;

use bitcoin::key::Keypair;
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, Transaction, TxOut};
use superscalar_core::ceremony::{CeremonyError, ClientCeremony, SignedTx};
use superscalar_core::codec::encode;
use superscalar_core::factory::ScriptHints;
use superscalar_core::{ClientId, Factory, FactoryError, FactoryId, Signer};
use superscalar_store::convert;
use superscalar_store::{
    CeremonyRound, Change, FactoryRecord, FactoryStatus, KeyIndex, Party, StoreError,
};
use superscalar_wire::messages::{
    AssemblyError, ErrorMsg, Join, Message, Proposal, ProposalAssembler,
};

/// What a step asks of the daemon: write `persist` durably, then send `send` to the LSP.
#[derive(Debug, Default)]
pub struct Output {
    /// Changes to write first, in order.
    pub persist: Vec<Change>,
    /// Messages to send after.
    pub send: Vec<Message>,
}

/// Why the client refuses a step.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The proposal is not the factory this client asked to join.
    #[error("proposal refused: {0}")]
    Proposal(String),
    /// The proposal's chunks do not assemble.
    #[error(transparent)]
    Assembly(#[from] AssemblyError),
    /// The factory's parameters or heights are refused.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// A ceremony message is refused (wrong factory, bad signature, wrong round).
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// The funding transaction the LSP announced does not create the factory's funding output.
    #[error("the announced funding transaction does not create the factory's funding output")]
    Funding,
    /// A message that does not belong to joining now.
    #[error("unexpected {0} now")]
    Unexpected(&'static str),
    /// A record the store refuses.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The chain.
    pub network: Network,
    /// Its factory key for this factory, and the key's index.
    pub keypair: Keypair,
    /// The index of `keypair` ([`superscalar_store::NodeKeys::factory_key`]).
    pub key_index: KeyIndex,
    /// Where its fee coin and timeout payouts go.
    pub payout: ScriptBuf,
    /// The capacity of its channel with the LSP.
    pub capacity: Amount,
}

enum State {
    Proposed(ProposalAssembler),
    AwaitingHints(Box<Proposal>),
    Signing {
        ceremony: Box<ClientCeremony>,
        round: u32,
    },
    Signed {
        ceremony: Box<ClientCeremony>,
    },
    Funded,
}

/// What a rotation's successor must be, from the close's terms that fund it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessorCheck {
    /// Its funding outpoint: the close's output 0.
    pub funding: OutPoint,
    /// Its funding output, as the terms fund it.
    pub output: TxOut,
    /// This client's opening balance in it: its balance in the factory it rolls from (msat).
    pub opening_msat: u64,
}

/// One client joining one factory.
pub struct Joining {
    request: Request,
    state: State,
    factory: Option<Arc<Factory>>,
    funding: Option<OutPoint>,
    /// Joining a rotation's successor: what it must be (`Some(None)` until the terms came).
    successor: Option<Option<SuccessorCheck>>,
}

impl std::fmt::Debug for Joining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joining")
            .field("factory", &self.factory_id())
            .field("funding", &self.funding)
            .finish()
    }
}

impl Joining {
    /// Starts joining: the join message to send the LSP.
    pub fn new(request: Request) -> (Joining, Message) {
        let join = Message::Join(Join {
            key: bitcoin::PublicKey::new(request.keypair.public_key()),
            payout: request.payout.clone(),
            capacity_sat: request.capacity.to_sat(),
        });
        (
            Joining {
                request,
                state: State::Proposed(ProposalAssembler::default()),
                factory: None,
                funding: None,
                successor: None,
            },
            join,
        )
    }

    /// This joining is a rotation's: the successor's proposal is refused until
    /// [`Joining::expect_successor`] says what it must be.
    pub fn for_rotation(mut self) -> Self {
        self.successor = Some(None);
        self
    }

    /// Whether this joining is a rotation's.
    pub fn is_rotation(&self) -> bool {
        self.successor.is_some()
    }

    /// What the rotation's successor must be (from the close's terms); refused once proposed.
    pub fn expect_successor(&mut self, check: SuccessorCheck) -> Result<(), JoinError> {
        match &self.successor {
            Some(None) if self.factory.is_none() => {
                self.successor = Some(Some(check));
                Ok(())
            }
            Some(Some(c)) if *c == check => Ok(()),
            _ => Err(JoinError::Unexpected("a successor's terms now")),
        }
    }

    /// Resumes, after a restart, a factory whose ceremony this client left after sending its
    /// partial signatures: it waits for the final signatures (checked as ever), and asks the LSP
    /// for them with the returned `resume` message.
    pub fn resume(
        request: Request,
        params: superscalar_core::FactoryParams,
        me: ClientId,
        funding: OutPoint,
    ) -> Result<(Joining, Message), JoinError> {
        let factory = Arc::new(Factory::new(params)?);
        if factory.key_of(Signer::Client(me)).inner != request.keypair.public_key() {
            return Err(JoinError::Proposal(format!(
                "position {} holds another key than ours",
                me.0
            )));
        }
        let ceremony =
            ClientCeremony::awaiting_final(Arc::clone(&factory), me, request.keypair, funding)?;
        let id = factory.params().id;
        Ok((
            Joining {
                request,
                state: State::Signing {
                    ceremony: Box::new(ceremony),
                    round: 2,
                },
                factory: Some(factory),
                funding: Some(funding),
                successor: None,
            },
            Message::Resume(superscalar_wire::messages::Resume { factory: id }),
        ))
    }

    /// The factory being joined, once proposed.
    pub fn factory_id(&self) -> Option<FactoryId> {
        self.factory.as_ref().map(|f| f.params().id)
    }

    /// The factory being joined, once proposed.
    pub fn factory(&self) -> Option<&Arc<Factory>> {
        self.factory.as_ref()
    }

    /// The funding outpoint, once proposed.
    pub fn funding(&self) -> Option<OutPoint> {
        self.funding
    }

    /// The index of this client's factory key.
    pub fn key_index(&self) -> KeyIndex {
        self.request.key_index
    }

    /// This client's position in the factory, once proposed.
    pub fn position(&self) -> Option<ClientId> {
        let me = self.request.keypair.public_key();
        let f = self.factory.as_ref()?;
        (0..f.params().clients.len() as u32)
            .map(ClientId)
            .find(|c| f.key_of(Signer::Client(*c)).inner == me)
    }

    /// Whether its partial signatures are out and it waits for the final signatures (the
    /// factory may be complete on the LSP's side: it must not be forgotten).
    pub fn awaiting_final(&self) -> bool {
        matches!(self.state, State::Signing { round: 2, .. })
    }

    /// Whether every signature of its exit path and timeouts is in and verified.
    pub fn is_signed(&self) -> bool {
        matches!(self.state, State::Signed { .. } | State::Funded)
    }

    /// Whether the LSP's error `e` ends this attempt: once proposed and until signed, a
    /// refusal that names no factory or this one means the LSP no longer counts this client in
    /// it (a round went on without it, say), so that nothing more will come: join again. Not
    /// once this client's partial signatures are out.
    pub fn ended_by(&self, e: &ErrorMsg) -> bool {
        match self.factory_id() {
            // With our partial signatures out the factory may still be completed: it is never
            // forgotten on the LSP's word (the daemon asks again with `resume`).
            Some(id) => {
                !self.is_signed() && !self.awaiting_final() && e.factory.map_or(true, |f| f == id)
            }
            None => false,
        }
    }

    /// The signed exit path and timeouts, once signed.
    pub fn signed(&self) -> &[SignedTx] {
        match &self.state {
            State::Signed { ceremony } => ceremony.signed(),
            _ => &[],
        }
    }

    /// Takes one message from the LSP; `tip` is the height of this client's own best block.
    pub fn handle(&mut self, msg: Message, tip: u32) -> Result<Output, JoinError> {
        match (&mut self.state, msg) {
            (State::Proposed(assembler), Message::Proposal(chunk)) => {
                let Some(p) = assembler.push(chunk)? else {
                    return Ok(Output::default());
                };
                let me = p.client;
                let spec = p.params.clients.get(me.0 as usize).ok_or_else(|| {
                    JoinError::Proposal(format!("no client at position {}", me.0))
                })?;
                if spec.key.inner != self.request.keypair.public_key() {
                    return Err(JoinError::Proposal(format!(
                        "position {} holds another key than ours",
                        me.0
                    )));
                }
                if spec.capacity != self.request.capacity {
                    return Err(JoinError::Proposal(format!(
                        "our channel's capacity is {} instead of the {} we asked for",
                        spec.capacity, self.request.capacity
                    )));
                }
                if spec.payout != self.request.payout {
                    return Err(JoinError::Proposal(
                        "our payout script is not the one we gave".into(),
                    ));
                }
                if p.params.config.network != self.request.network {
                    return Err(JoinError::Proposal(format!(
                        "a factory on {} while we are on {}",
                        p.params.config.network, self.request.network
                    )));
                }
                match &self.successor {
                    None if p.params.opening_msat(me) != 0 => {
                        return Err(JoinError::Proposal(format!(
                            "a new factory opening our channel with {} msat of ours",
                            p.params.opening_msat(me)
                        )));
                    }
                    None => {}
                    Some(None) => {
                        return Err(JoinError::Proposal(
                            "a successor's proposal before the terms of the close funding it"
                                .into(),
                        ))
                    }
                    Some(Some(c)) => {
                        if p.funding != c.funding {
                            return Err(JoinError::Proposal(format!(
                                "the successor spends {} instead of the close's output {}",
                                p.funding, c.funding
                            )));
                        }
                        if p.params.opening_msat(me) != c.opening_msat {
                            return Err(JoinError::Proposal(format!(
                                "the successor opens our channel with {} msat instead of our \
                                 {} msat",
                                p.params.opening_msat(me),
                                c.opening_msat
                            )));
                        }
                    }
                }
                // Its path's keys it aggregates itself; the scripts beside its path come next.
                self.state = State::AwaitingHints(Box::new(p));
                Ok(Output::default())
            }
            (State::AwaitingHints(p), Message::Hints(h)) => {
                if h.factory != p.params.id || h.client != p.client {
                    return Err(JoinError::Proposal(
                        "script hints for another factory or position".into(),
                    ));
                }
                let State::AwaitingHints(p) = std::mem::replace(
                    &mut self.state,
                    State::Proposed(ProposalAssembler::default()),
                ) else {
                    return Err(JoinError::Unexpected("hints"));
                };
                self.start_signing(*p, h.hints, tip)
            }
            (State::Signing { ceremony, round }, Message::AggNonces(m)) if *round == 1 => {
                // Recorded before the partial signatures leave: never two spends of one outpoint.
                let spends = convert::spends(&ceremony.spends())?;
                let partials = ceremony.round2(&m)?;
                *round = 2;
                let id = convert::factory_id(m.factory);
                Ok(Output {
                    persist: vec![Change::Round {
                        round: CeremonyRound {
                            factory: id,
                            round: 2,
                            participants: vec![Party::Lsp, Party::Client(ceremony.client().0)],
                        },
                        spends,
                    }],
                    send: vec![Message::Partials(partials)],
                })
            }
            (State::Signing { ceremony, round }, Message::FinalSigs(m)) if *round == 2 => {
                let signed = ceremony.finish(&m)?.to_vec();
                let me = ceremony.client();
                let state = serde_json::to_vec(&signed)
                    .map_err(|_| JoinError::Unexpected("a state that does not encode"))?;
                let txs = convert::signed_txs(&signed)?;
                let id = convert::factory_id(m.factory);
                if let State::Signing { ceremony, .. } =
                    std::mem::replace(&mut self.state, State::Funded)
                {
                    self.state = State::Signed { ceremony };
                }
                Ok(Output {
                    persist: vec![
                        Change::State {
                            factory: id,
                            party: Party::Client(me.0),
                            version: 0,
                            bytes: state,
                        },
                        Change::Signed {
                            factory: id,
                            txs,
                            status: FactoryStatus::Signed,
                        },
                    ],
                    send: Vec::new(),
                })
            }
            (State::Signed { .. }, Message::Live(live)) => {
                self.check_funding_tx(&live.funding_tx)?;
                self.state = State::Funded;
                Ok(Output::default())
            }
            (State::Proposed(_), _) => Err(JoinError::Unexpected("a message before the proposal")),
            (State::AwaitingHints(_), _) => {
                Err(JoinError::Unexpected("a message before the script hints"))
            }
            (State::Signing { .. }, Message::Proposal(_)) => Err(JoinError::Unexpected(
                "a second proposal during the ceremony",
            )),
            (State::Signing { .. }, _) => Err(JoinError::Unexpected("a message out of turn")),
            (State::Signed { .. } | State::Funded, _) => Err(JoinError::Unexpected(
                "a ceremony message after the ceremony",
            )),
        }
    }

    /// Builds this client's transactions of the proposed factory (with the LSP's script hints)
    /// and starts round 1.
    fn start_signing(
        &mut self,
        p: Proposal,
        hints: ScriptHints,
        tip: u32,
    ) -> Result<Output, JoinError> {
        let me = p.client;
        let encoded = encode(&p.params);
        let factory = Arc::new(Factory::new(p.params)?.with_script_hints(me, hints)?);
        if let Some(Some(c)) = &self.successor {
            if factory.funding_output()? != c.output {
                return Err(JoinError::Proposal(
                    "the successor's funding output is not the one the close funds".into(),
                ));
            }
        }
        let mut ceremony = ClientCeremony::new(
            Arc::clone(&factory),
            me,
            self.request.keypair,
            p.funding,
            tip,
        )?;
        let nonces = ceremony.round1()?;
        let id = convert::factory_id(factory.params().id);
        let record = FactoryRecord {
            id,
            params: encoded,
            status: FactoryStatus::Forming,
            created_height: factory.params().creation_height,
            timeout_height: factory.timeout_height(),
            funding: Some(p.funding),
            key_index: self.request.key_index,
        };
        self.factory = Some(factory);
        self.funding = Some(p.funding);
        self.state = State::Signing {
            ceremony: Box::new(ceremony),
            round: 1,
        };
        Ok(Output {
            persist: vec![Change::NewFactory {
                record,
                round: CeremonyRound {
                    factory: id,
                    round: 1,
                    participants: vec![Party::Lsp, Party::Client(me.0)],
                },
            }],
            send: vec![Message::Nonces(nonces)],
        })
    }

    /// Checks that `tx` creates the funding output the factory's tree spends.
    pub fn check_funding_tx(&self, tx: &Transaction) -> Result<(), JoinError> {
        let (Some(factory), Some(funding)) = (&self.factory, self.funding) else {
            return Err(JoinError::Unexpected(
                "a funding transaction before the proposal",
            ));
        };
        let expected = factory.funding_output()?;
        if tx.compute_txid() != funding.txid
            || tx.output.get(funding.vout as usize) != Some(&expected)
        {
            return Err(JoinError::Funding);
        }
        Ok(())
    }
}
