//! The LSP's side of forming one factory over the network, as a pure state machine: it takes
//! the clients' messages and returns the records to write and the messages to send, in that
//! order ([`Output`]). No I/O, no clock: the daemon decides when a round has waited too long.
//!
//! The steps:
//! 1. [`Formation::start`]: the parameters (every member's key, capacity and payout), the
//!    funding transaction the LSP built but has not signed, and the LSP's key. Records the
//!    factory as forming; then each member gets the parameters in proposal chunks with the
//!    funding outpoint and its position, and the output scripts beside its path (script hints),
//!    so that it aggregates only its own path's keys ([`Formation::proposal_for`], built one
//!    member at a time: with a thousand members the proposals take about 100 MB).
//! 2. Round 1: each member's nonces for the transactions it signs. Once every member's are in,
//!    each member gets the aggregated nonces of its own transactions only.
//! 3. Round 2: each member's partial signatures, each checked and attributed to its signer.
//!    Once every member's are in, the LSP records the spends it is about to sign (never two
//!    different spends of one outpoint), signs, aggregates and checks every final signature,
//!    records the signed transactions, and sends each member the final signatures of its own
//!    exit path and timeouts.
//!
//! A member that sends something wrong is named ([`FormationError::Misbehaved`]); the daemon
//! aborts this formation and starts another without it (the funding output's key changes with
//! the member set, so nothing signed here can ever be valid on chain).

use std::collections::HashMap;
use std::sync::Arc;

use bitcoin::key::Keypair;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{OutPoint, Transaction};
use superscalar_core::ceremony::{CeremonyError, LspCeremony};
use superscalar_core::codec::encode;
use superscalar_core::{ClientId, Factory, FactoryError, FactoryId, FactoryParams, Signer};
use superscalar_store::convert;
use superscalar_store::{CeremonyRound, Change, FactoryRecord, FactoryStatus, KeyIndex, Party};
use superscalar_wire::messages::{encoded_proposal_chunks, AssemblyError, Hints, Message};

/// What a step asks of the daemon: write `persist` durably, then send `send`.
#[derive(Debug, Default)]
pub struct Output {
    /// Changes to write first, in order.
    pub persist: Vec<Change>,
    /// Messages to send after.
    pub send: Vec<(PublicKey, Message)>,
}

/// Where a formation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for every member's nonces.
    Nonces,
    /// Waiting for every member's partial signatures.
    Partials,
    /// Every transaction signed; the final signatures are out.
    Signed,
}

/// Why a formation step failed.
#[derive(Debug, thiserror::Error)]
pub enum FormationError {
    /// A member sent something wrong: the formation restarts without it.
    #[error("client {node} (position {client}) misbehaved: {reason}")]
    Misbehaved {
        /// Its node id.
        node: PublicKey,
        /// Its position.
        client: u32,
        /// What it did.
        reason: String,
    },
    /// A message from a node that is not a member of this factory.
    #[error("{0} is not a member of this factory")]
    NotMember(PublicKey),
    /// A message that does not belong to this formation now.
    #[error("unexpected {0} now")]
    Unexpected(&'static str),
    /// The parameters do not make a factory.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// The LSP's own side failed.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// The parameters are too large to propose.
    #[error(transparent)]
    Proposal(#[from] AssemblyError),
    /// A label or record the store refuses.
    #[error(transparent)]
    Store(#[from] superscalar_store::StoreError),
}

/// One factory being formed.
pub struct Formation {
    factory: Arc<Factory>,
    /// The encoded parameters, for the proposals.
    encoded: Vec<u8>,
    ceremony: LspCeremony,
    members: Vec<PublicKey>,
    positions: HashMap<PublicKey, ClientId>,
    funding: OutPoint,
    phase: Phase,
}

impl std::fmt::Debug for Formation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Formation")
            .field("factory", &self.id())
            .field("members", &self.members.len())
            .field("phase", &self.phase)
            .finish()
    }
}

fn parties(n: usize) -> Vec<Party> {
    std::iter::once(Party::Lsp)
        .chain((0..n as u32).map(Party::Client))
        .collect()
}

impl Formation {
    /// Starts forming the factory of `params` (client `i` of it is the node `members[i]`),
    /// funded by output `vout` of `funding_tx` (built, not signed), signed with `keypair` (the
    /// LSP's factory key of `key_index`). The output records the factory; once written, send
    /// each member its [`Formation::proposal_for`].
    pub fn start(
        params: FactoryParams,
        members: Vec<PublicKey>,
        keypair: Keypair,
        key_index: KeyIndex,
        funding_tx: &Transaction,
        vout: u32,
    ) -> Result<(Formation, Output), FormationError> {
        if members.len() != params.clients.len() {
            return Err(FormationError::Unexpected(
                "a member list that does not match the parameters",
            ));
        }
        let encoded = encode(&params);
        let factory = Arc::new(Factory::new(params)?);
        let expected = factory.funding_output()?;
        if funding_tx.output.get(vout as usize) != Some(&expected) {
            return Err(FormationError::Unexpected(
                "a funding transaction that does not create the factory's funding output",
            ));
        }
        let funding = OutPoint::new(funding_tx.compute_txid(), vout);
        let ceremony = LspCeremony::new(Arc::clone(&factory), keypair, funding)?;
        let id = factory.params().id;
        // Parameters too large to propose are refused now, before anything is recorded.
        encoded_proposal_chunks(id, &encoded, funding, ClientId(0))?;
        let store_id = superscalar_store::FactoryId(id.0);
        let persist = vec![Change::NewFactory {
            record: FactoryRecord {
                id: store_id,
                params: encoded.clone(),
                status: FactoryStatus::Forming,
                created_height: factory.params().creation_height,
                timeout_height: factory.timeout_height(),
                funding: Some(funding),
                key_index,
            },
            round: CeremonyRound {
                factory: store_id,
                round: 1,
                participants: parties(members.len()),
            },
        }];
        let positions = members
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, ClientId(i as u32)))
            .collect();
        Ok((
            Formation {
                factory,
                encoded,
                ceremony,
                members,
                positions,
                funding,
                phase: Phase::Nonces,
            },
            Output {
                persist,
                send: Vec::new(),
            },
        ))
    }

    /// The proposal to the member at `position`: the parameters in chunks, with the funding
    /// outpoint and its position, then its script hints.
    pub fn proposal_for(
        &self,
        position: usize,
    ) -> Result<Vec<(PublicKey, Message)>, FormationError> {
        let node = *self
            .members
            .get(position)
            .ok_or(FormationError::Unexpected("a position beyond the members"))?;
        let chunks = encoded_proposal_chunks(
            self.id(),
            &self.encoded,
            self.funding,
            ClientId(position as u32),
        )?;
        let client = ClientId(position as u32);
        let hints = Message::Hints(Hints {
            factory: self.id(),
            client,
            hints: self.ceremony.script_hints_for(client)?,
        });
        Ok(chunks
            .into_iter()
            .map(|c| (node, Message::Proposal(c)))
            .chain(std::iter::once((node, hints)))
            .collect())
    }

    /// The factory.
    pub fn id(&self) -> FactoryId {
        self.factory.params().id
    }

    /// The factory's tree and transactions.
    pub fn factory(&self) -> &Arc<Factory> {
        &self.factory
    }

    /// The funding outpoint.
    pub fn funding(&self) -> OutPoint {
        self.funding
    }

    /// Where the formation is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The members, by position.
    pub fn members(&self) -> &[PublicKey] {
        &self.members
    }

    /// Members the current round still waits for.
    pub fn waiting_for(&self) -> Vec<PublicKey> {
        let missing = match self.phase {
            Phase::Nonces => self.ceremony.missing_nonces(),
            Phase::Partials => self.ceremony.missing_partials(),
            Phase::Signed => Vec::new(),
        };
        missing
            .into_iter()
            .map(|c| self.members[c.0 as usize])
            .collect()
    }

    /// The finished ceremony (every transaction signed), once [`Phase::Signed`].
    pub fn ceremony(&self) -> &LspCeremony {
        &self.ceremony
    }

    fn misbehaved(&self, node: PublicKey, e: impl std::fmt::Display) -> FormationError {
        FormationError::Misbehaved {
            node,
            client: self.positions.get(&node).map_or(u32::MAX, |c| c.0),
            reason: e.to_string(),
        }
    }

    /// Blames the signer a ceremony error names, else `sender`.
    fn blame(&self, sender: PublicKey, e: CeremonyError) -> FormationError {
        let named = match &e {
            CeremonyError::BadPartialSignature { signer, .. }
            | CeremonyError::MalformedNonce { signer, .. }
            | CeremonyError::WrongJobs { signer, .. }
            | CeremonyError::Duplicate(signer) => match signer {
                Signer::Client(c) => self.members.get(c.0 as usize).copied(),
                Signer::Lsp => None,
            },
            _ => None,
        };
        self.misbehaved(named.unwrap_or(sender), e)
    }

    /// Takes one message of a member.
    pub fn handle(&mut self, peer: PublicKey, msg: Message) -> Result<Output, FormationError> {
        let Some(&client) = self.positions.get(&peer) else {
            return Err(FormationError::NotMember(peer));
        };
        match (self.phase, msg) {
            (Phase::Nonces, Message::Nonces(m)) => {
                if m.factory != self.id() {
                    return Err(self.misbehaved(peer, "nonces for another factory"));
                }
                self.ceremony
                    .receive_nonces(client, &m)
                    .map_err(|e| self.blame(peer, e))?;
                if !self.ceremony.missing_nonces().is_empty() {
                    return Ok(Output::default());
                }
                let mut send = Vec::with_capacity(self.members.len());
                for (i, node) in self.members.iter().enumerate() {
                    let agg = self.ceremony.agg_nonces_for(ClientId(i as u32))?;
                    send.push((*node, Message::AggNonces(agg)));
                }
                self.phase = Phase::Partials;
                let id = superscalar_store::FactoryId(self.id().0);
                Ok(Output {
                    persist: vec![Change::Round {
                        round: CeremonyRound {
                            factory: id,
                            round: 2,
                            participants: parties(self.members.len()),
                        },
                        spends: Vec::new(),
                    }],
                    send,
                })
            }
            (Phase::Partials, Message::Partials(m)) => {
                if m.factory != self.id() {
                    return Err(self.misbehaved(peer, "partial signatures for another factory"));
                }
                self.ceremony
                    .receive_partials(client, &m)
                    .map_err(|e| self.blame(peer, e))?;
                if !self.ceremony.missing_partials().is_empty() {
                    return Ok(Output::default());
                }
                // What the LSP signs, recorded before finalize signs it.
                let spends = convert::spends(&self.ceremony.spends())?;
                self.ceremony.finalize()?;
                let txs = convert::signed_txs(self.ceremony.all_signed())?;
                let id = superscalar_store::FactoryId(self.id().0);
                let mut send = Vec::with_capacity(self.members.len());
                for (i, node) in self.members.iter().enumerate() {
                    let sigs = self.ceremony.final_sigs_for(ClientId(i as u32))?;
                    send.push((*node, Message::FinalSigs(sigs)));
                }
                self.phase = Phase::Signed;
                Ok(Output {
                    persist: vec![
                        Change::Round {
                            round: CeremonyRound {
                                factory: id,
                                round: 3,
                                participants: parties(self.members.len()),
                            },
                            spends,
                        },
                        Change::Signed {
                            factory: id,
                            txs,
                            status: FactoryStatus::Signed,
                        },
                    ],
                    send,
                })
            }
            (_, Message::Nonces(_)) => Err(self.misbehaved(peer, "nonces out of turn")),
            (_, Message::Partials(_)) => {
                Err(self.misbehaved(peer, "partial signatures out of turn"))
            }
            (_, other) => Err(self.misbehaved(
                peer,
                format!("{} during the signing ceremony", other.name()),
            )),
        }
    }

    /// The final signatures of `member`'s transactions again (a member that reconnects after
    /// the ceremony).
    pub fn final_sigs_for(&self, member: PublicKey) -> Option<Message> {
        let client = *self.positions.get(&member)?;
        (self.phase == Phase::Signed)
            .then(|| self.ceremony.final_sigs_for(client).ok())
            .flatten()
            .map(Message::FinalSigs)
    }
}
