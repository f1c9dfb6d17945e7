//! The factory signing ceremony, as a pure state machine for each party, independent of transport.
//!
//! Round 1: every signer sends a public nonce for every transaction it signs. Round 2: the LSP
//! sends the aggregated nonces; every signer returns partial signatures. The LSP checks each
//! partial signature (a wrong one names its signer), aggregates, and sends each client the final
//! signatures of its exit path and timeout transactions; the client verifies them all before it
//! agrees that the factory is live. Two round trips regardless of N. Secret nonces stay in memory
//! and are consumed by signing.
//!
//! Before round 1 the LSP gives each client the scripts of the outputs beside its path
//! ([`LspCeremony::script_hints_for`], [`Factory::with_script_hints`]), so that a client
//! aggregates only its own path's keys. The LSP's side runs on every core and takes the clients'
//! messages in batches ([`LspCeremony::receive_all_nonces`],
//! [`LspCeremony::receive_all_partials`]); each transaction's nonces are aggregated and its MuSig2
//! session opened once, and every partial signature is checked in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bitcoin::key::Keypair;
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::secp256k1::Message;
use bitcoin::{OutPoint, Transaction, TxOut, Witness};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::factory::{BuiltTx, Factory, FactoryError, ScriptHints, Signer, TxKind};
use crate::ledger::Version;
use crate::musig::{
    AggNonce, MusigError, MusigSigner, ParsedNonce, PartialSig, PubNonce, SecNonce, StoredSession,
    TweakedAggregateKey,
};
use crate::par;
use crate::secp::{count, SECP};
use crate::types::{ClientId, FactoryId};

/// Round 1: a signer's public nonces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceMsg {
    /// The factory.
    pub factory: FactoryId,
    /// One nonce per transaction the sender signs.
    pub nonces: Vec<(TxKind, PubNonce)>,
}

/// Round 2, LSP to client: aggregated nonces of the client's transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggNonceMsg {
    /// The factory.
    pub factory: FactoryId,
    /// One aggregated nonce per transaction the client signs.
    pub nonces: Vec<(TxKind, AggNonce)>,
}

/// Round 2, client to LSP: partial signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialSigMsg {
    /// The factory.
    pub factory: FactoryId,
    /// One partial signature per transaction the client signs.
    pub partials: Vec<(TxKind, PartialSig)>,
}

/// LSP to client: the final signatures of the client's transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalSigMsg {
    /// The factory.
    pub factory: FactoryId,
    /// One BIP-340 signature per transaction the client signs.
    pub signatures: Vec<(TxKind, Signature)>,
}

/// A ceremony step that cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CeremonyError {
    /// The message is for another factory.
    #[error("message for factory {got}, expected {expected}")]
    WrongFactory {
        /// The factory of this ceremony.
        expected: FactoryId,
        /// The factory named in the message.
        got: FactoryId,
    },
    /// The step does not fit the current phase.
    #[error("out of order: {0}")]
    WrongPhase(&'static str),
    /// A signer sent entries for transactions it does not sign, or omitted some.
    #[error("{signer} sent {got} entries for a set of {expected} transactions, or the wrong ones")]
    WrongJobs {
        /// The sender.
        signer: Signer,
        /// Entries expected.
        expected: usize,
        /// Entries received.
        got: usize,
    },
    /// A signer sent the same message twice.
    #[error("{0} already sent this round")]
    Duplicate(Signer),
    /// A public nonce that does not parse.
    #[error("{signer} sent a malformed nonce for {job:?}")]
    MalformedNonce {
        /// The sender.
        signer: Signer,
        /// The transaction.
        job: TxKind,
    },
    /// A partial signature that does not verify (or does not parse).
    #[error("{signer} sent an invalid partial signature for {job:?}")]
    BadPartialSignature {
        /// The sender.
        signer: Signer,
        /// The transaction.
        job: TxKind,
    },
    /// A final signature missing or invalid: the client does not go live.
    #[error("final signature for {job:?} is {problem}")]
    BadFinalSignature {
        /// The transaction.
        job: TxKind,
        /// "missing" or "invalid".
        problem: &'static str,
    },
    /// Waiting for other signers.
    #[error("still waiting for {0} signers")]
    Incomplete(usize),
    /// Building the factory failed.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// A MuSig2 operation failed.
    #[error(transparent)]
    Musig(#[from] MusigError),
    /// The key given does not match the factory's parameters.
    #[error("the key does not belong to {0}")]
    WrongKey(Signer),
}

/// How far (in blocks) a factory's creation height may be from a client's own tip: chain views
/// of honest parties differ by a block or two; more means a stale or forged height.
pub const HEIGHT_TOLERANCE_BLOCKS: u32 = 6;

/// A transaction ready to sign: what it spends and the key that signs.
#[derive(Debug)]
struct Prepared {
    kind: TxKind,
    tx: Transaction,
    spent: TxOut,
    sighash: [u8; 32],
    key: TweakedAggregateKey,
}

/// Build `kinds` (each once, in the order given) at version `v`, with their sighashes and
/// signing keys; the per-transaction work on every core when `parallel` (the LSP's side).
fn prepare(
    factory: &Factory,
    kinds: &[TxKind],
    funding: OutPoint,
    v: &Version,
    parallel: bool,
) -> Result<Vec<Prepared>, FactoryError> {
    let mut unique = Vec::with_capacity(kinds.len());
    let mut seen = std::collections::HashSet::with_capacity(kinds.len());
    for k in kinds {
        if seen.insert(*k) {
            unique.push(*k);
        }
    }
    let finish = |kind: TxKind, b: BuiltTx| -> Result<Prepared, FactoryError> {
        Ok(Prepared {
            kind,
            sighash: factory.sighash_of(kind, &b.tx, &b.spent, v)?,
            key: factory.key_for(kind, v)?,
            tx: b.tx,
            spent: b.spent,
        })
    };
    if !parallel {
        let mut built = factory.build_set(&unique, funding, v)?;
        return unique
            .iter()
            .map(|k| {
                finish(
                    *k,
                    built.remove(k).expect("build_set builds every kind asked"),
                )
            })
            .collect();
    }
    // The tree's transactions in order (each needs its parent's txid), then the timeouts and
    // punishments, which only need the txid of the transaction they spend, each on its own.
    let is_leaf = |k: &TxKind| matches!(k, TxKind::Timeout(_) | TxKind::Punish(_));
    let mut first: Vec<TxKind> = unique.iter().copied().filter(|k| !is_leaf(k)).collect();
    first.extend(
        unique
            .iter()
            .filter(|k| is_leaf(k))
            .filter_map(|k| factory.creator_of(factory.input_of(*k, v), v)),
    );
    let mut built = factory.build_set(&first, funding, v)?;
    let txids: HashMap<TxKind, bitcoin::Txid> = built
        .iter()
        .map(|(k, b)| (*k, b.tx.compute_txid()))
        .collect();
    let amounts = factory.amounts(v)?;
    let mut todo: Vec<(TxKind, Option<BuiltTx>)> = unique
        .iter()
        .map(|k| (*k, if is_leaf(k) { None } else { built.remove(k) }))
        .collect();
    drop(built);
    par::map_mut(&mut todo, |_, (kind, b)| {
        let b = match b.take() {
            Some(b) => b,
            None => {
                let slot = factory.input_of(*kind, v);
                factory.check_slot(slot, v)?;
                let spends = factory
                    .slot_outpoint(slot, funding, v, |k| txids.get(&k).copied())
                    .ok_or_else(|| FactoryError::NoSuch(format!("the output {slot:?}")))?;
                BuiltTx {
                    tx: factory.build_tx(*kind, spends, &amounts, v)?,
                    spent: TxOut {
                        value: amounts.value(factory, slot),
                        script_pubkey: factory.script_pubkey_at(slot, v)?,
                    },
                }
            }
        };
        finish(*kind, b)
    })
    .into_iter()
    .collect()
}

/// A transaction with its final key-path signature, and what it spends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// Its role.
    pub kind: TxKind,
    /// The signed transaction.
    pub tx: Transaction,
    /// The output it spends.
    pub spent: TxOut,
}

/// A spend a party is about to sign: recorded before its signature leaves the process, so
/// that no outpoint is ever signed for two different spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendToSign {
    /// Its role.
    pub kind: TxKind,
    /// The outpoint it spends.
    pub outpoint: OutPoint,
    /// The BIP-341 key-path signature hash signed.
    pub sighash: [u8; 32],
    /// The spending transaction's txid.
    pub txid: bitcoin::Txid,
}

impl Prepared {
    fn spend(&self) -> SpendToSign {
        SpendToSign {
            kind: self.kind,
            outpoint: self.tx.input[0].previous_output,
            sighash: self.sighash,
            txid: self.tx.compute_txid(),
        }
    }
}

fn attach(p: Prepared, sig: &Signature) -> SignedTx {
    let mut tx = p.tx;
    tx.input[0].witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
        signature: *sig,
        sighash_type: bitcoin::TapSighashType::Default,
    });
    SignedTx {
        kind: p.kind,
        tx,
        spent: p.spent,
    }
}

enum ClientPhase {
    Ready,
    AwaitingAggNonces(Vec<SecNonce>),
    AwaitingFinal,
    Live,
    Failed,
}

/// A client's side of the ceremony.
pub struct ClientCeremony {
    factory: Arc<Factory>,
    me: ClientId,
    signer: MusigSigner,
    /// The exit path in publishing order, then the timeouts; emptied once live (the signed
    /// transactions are in `signed`).
    jobs: Vec<Prepared>,
    phase: ClientPhase,
    signed: Vec<SignedTx>,
    ops: CryptoOps,
}

impl std::fmt::Debug for ClientCeremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCeremony")
            .field("client", &self.me)
            .finish_non_exhaustive()
    }
}

impl ClientCeremony {
    /// Start: check the factory's heights against this client's own chain view (`tip`, the
    /// height of its best block: see [`Factory::check_heights`]), then build its exit path and
    /// timeout transactions from the shared parameters (and the LSP's script hints, if the
    /// factory was given them: [`Factory::with_script_hints`]).
    pub fn new(
        factory: Arc<Factory>,
        me: ClientId,
        keypair: Keypair,
        funding: OutPoint,
        tip: u32,
    ) -> Result<Self, CeremonyError> {
        factory.check_heights(tip, HEIGHT_TOLERANCE_BLOCKS)?;
        let v = factory.initial_version();
        Self::for_jobs(factory, me, keypair, funding, &v, None)
    }

    /// Start a ceremony over some transactions only (a state update): this client's share of
    /// `kinds` (all its transactions when `None`), built at version `v`.
    pub fn for_jobs(
        factory: Arc<Factory>,
        me: ClientId,
        keypair: Keypair,
        funding: OutPoint,
        v: &Version,
        kinds: Option<&[TxKind]>,
    ) -> Result<Self, CeremonyError> {
        let order: Vec<TxKind> = factory
            .client_jobs(me, v)?
            .into_iter()
            .filter(|k| kinds.map_or(true, |ks| ks.contains(k)))
            .collect();
        if factory.key_of(Signer::Client(me)).inner != keypair.public_key() {
            return Err(CeremonyError::WrongKey(Signer::Client(me)));
        }
        let jobs = prepare(&factory, &order, funding, v, false)?;
        Ok(ClientCeremony {
            factory,
            me,
            signer: MusigSigner::new(&keypair),
            jobs,
            phase: ClientPhase::Ready,
            signed: Vec::new(),
            ops: CryptoOps::default(),
        })
    }

    /// Resume after a restart that followed round 2 (this client's partial signatures are out,
    /// its secret nonces gone): waiting for the final signatures, which need no nonce of its own.
    /// The transactions are built again from the parameters and checked as in [`Self::finish`].
    pub fn awaiting_final(
        factory: Arc<Factory>,
        me: ClientId,
        keypair: Keypair,
        funding: OutPoint,
    ) -> Result<Self, CeremonyError> {
        let v = factory.initial_version();
        let mut c = Self::for_jobs(factory, me, keypair, funding, &v, None)?;
        c.phase = ClientPhase::AwaitingFinal;
        Ok(c)
    }

    /// Round 1: public nonces for every transaction this client signs.
    pub fn round1(&mut self) -> Result<NonceMsg, CeremonyError> {
        if !matches!(self.phase, ClientPhase::Ready) {
            return Err(CeremonyError::WrongPhase("round 1 runs once"));
        }
        let mut secrets = Vec::with_capacity(self.jobs.len());
        let mut nonces = Vec::with_capacity(self.jobs.len());
        for p in &self.jobs {
            let (sec, public) = p.key.nonce_gen(&self.signer, &p.sighash);
            self.ops.nonces += 1;
            secrets.push(sec);
            nonces.push((p.kind, public));
        }
        self.phase = ClientPhase::AwaitingAggNonces(secrets);
        Ok(NonceMsg {
            factory: self.factory.params().id,
            nonces,
        })
    }

    /// Round 2: partial signatures under the aggregated nonces (consumes the secret nonces).
    pub fn round2(&mut self, msg: &AggNonceMsg) -> Result<PartialSigMsg, CeremonyError> {
        check_factory(self.factory.params().id, msg.factory)?;
        let ClientPhase::AwaitingAggNonces(_) = &self.phase else {
            return Err(CeremonyError::WrongPhase(
                "round 2 needs round 1 first, and runs once",
            ));
        };
        let agg: HashMap<TxKind, AggNonce> = msg.nonces.iter().copied().collect();
        if agg.len() != self.jobs.len()
            || msg.nonces.len() != self.jobs.len()
            || !self.jobs.iter().all(|p| agg.contains_key(&p.kind))
        {
            return Err(CeremonyError::WrongJobs {
                signer: Signer::Lsp,
                expected: self.jobs.len(),
                got: msg.nonces.len(),
            });
        }
        let ClientPhase::AwaitingAggNonces(secrets) =
            std::mem::replace(&mut self.phase, ClientPhase::Failed)
        else {
            unreachable!("checked above");
        };
        let mut partials = Vec::with_capacity(self.jobs.len());
        for (p, sec) in self.jobs.iter().zip(secrets) {
            let sig = p
                .key
                .session(&agg[&p.kind], &p.sighash)?
                .partial_sign(sec, &self.signer);
            self.ops.partial_signs += 1;
            partials.push((p.kind, sig));
        }
        self.phase = ClientPhase::AwaitingFinal;
        Ok(PartialSigMsg {
            factory: self.factory.params().id,
            partials,
        })
    }

    /// Verify every final signature of this client's transactions, each over the sighash it
    /// computed and under the key it aggregated itself; only then is the factory live.
    pub fn finish(&mut self, msg: &FinalSigMsg) -> Result<&[SignedTx], CeremonyError> {
        check_factory(self.factory.params().id, msg.factory)?;
        if !matches!(self.phase, ClientPhase::AwaitingFinal) {
            return Err(CeremonyError::WrongPhase(
                "final signatures come after round 2",
            ));
        }
        let sigs: HashMap<TxKind, Signature> = msg.signatures.iter().copied().collect();
        let secp = &*SECP;
        let mut checked = Vec::with_capacity(self.jobs.len());
        for p in &self.jobs {
            let Some(sig) = sigs.get(&p.kind) else {
                return Err(CeremonyError::BadFinalSignature {
                    job: p.kind,
                    problem: "missing",
                });
            };
            self.ops.final_verifies += 1;
            count(|c| c.schnorr_verify += 1);
            secp.verify_schnorr(sig, &Message::from_digest(p.sighash), &p.key.output_key())
                .map_err(|_| CeremonyError::BadFinalSignature {
                    job: p.kind,
                    problem: "invalid",
                })?;
            checked.push(*sig);
        }
        // Everything verified: the prepared transactions become the signed ones.
        self.signed = std::mem::take(&mut self.jobs)
            .into_iter()
            .zip(&checked)
            .map(|(p, sig)| attach(p, sig))
            .collect();
        self.phase = ClientPhase::Live;
        Ok(&self.signed)
    }

    /// The txid `kind` will have once signed (known before signing: for dual-state channels).
    pub fn txid(&self, kind: TxKind) -> Option<bitcoin::Txid> {
        self.jobs
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.tx.compute_txid())
            .or_else(|| {
                self.signed
                    .iter()
                    .find(|s| s.kind == kind)
                    .map(|s| s.tx.compute_txid())
            })
    }

    /// Every spend this client signs in this ceremony (its exit path and timeouts).
    pub fn spends(&self) -> Vec<SpendToSign> {
        self.jobs.iter().map(Prepared::spend).collect()
    }

    /// Whether the client has verified everything and considers the factory live.
    pub fn is_live(&self) -> bool {
        matches!(self.phase, ClientPhase::Live)
    }

    /// The signed exit path and timeout transactions (empty until live).
    pub fn signed(&self) -> &[SignedTx] {
        &self.signed
    }

    /// The client.
    pub fn client(&self) -> ClientId {
        self.me
    }

    /// Crypto operations this client performed.
    pub fn ops(&self) -> CryptoOps {
        self.ops
    }
}

fn check_factory(expected: FactoryId, got: FactoryId) -> Result<(), CeremonyError> {
    if expected != got {
        return Err(CeremonyError::WrongFactory { expected, got });
    }
    Ok(())
}

/// Counts of the cryptographic work a ceremony did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CryptoOps {
    /// Nonces generated.
    pub nonces: u64,
    /// Partial signatures made.
    pub partial_signs: u64,
    /// Partial signatures verified.
    pub partial_verifies: u64,
    /// Final signatures aggregated (and verified).
    pub aggregations: u64,
    /// Final signatures verified by a client.
    pub final_verifies: u64,
}

/// One transaction the LSP signs, through both rounds.
struct LspJob {
    p: Prepared,
    /// The clients who sign it with the LSP: signer position 0 is the LSP, position `1 + i` is
    /// client `clients.start + i` (every output's clients are contiguous).
    clients: std::ops::Range<u32>,
    /// The LSP's secret nonce, until it signs.
    secret: Option<SecNonce>,
    /// Public nonces by signer position, parsed once.
    nonces: Vec<Option<ParsedNonce>>,
    /// Once every nonce is in: the aggregated nonce and the signing session (nonce processing
    /// done once per transaction, for every partial signature checked and the aggregation).
    round2: Option<(AggNonce, StoredSession)>,
    /// Checked partial signatures by signer position.
    partials: Vec<Option<PartialSig>>,
}

impl LspJob {
    fn position(&self, client: ClientId) -> usize {
        1 + (client.0 - self.clients.start) as usize
    }
}

/// A partial signature received for a job: (signer position, index of the message, signature).
type Received = (usize, usize, PartialSig);

/// The contiguous range of clients among `signers` (after the LSP, first).
fn client_range(signers: &[Signer]) -> Result<std::ops::Range<u32>, FactoryError> {
    let ids: Vec<u32> = signers
        .iter()
        .filter_map(|s| match s {
            Signer::Client(c) => Some(c.0),
            Signer::Lsp => None,
        })
        .collect();
    let start = ids.first().copied().unwrap_or(0);
    let contiguous = signers.first() == Some(&Signer::Lsp)
        && ids.len() + 1 == signers.len()
        && ids.iter().enumerate().all(|(i, c)| *c == start + i as u32);
    if !contiguous {
        return Err(FactoryError::NoSuch(
            "a transaction whose co-signers are not the LSP and a range of clients".into(),
        ));
    }
    Ok(start..start + ids.len() as u32)
}

/// The LSP's side of the ceremony: it signs and coordinates every transaction.
///
/// Every step runs on all cores, one transaction per task: building and hashing the
/// transactions and generating the LSP's nonces ([`LspCeremony::new`]), parsing the clients'
/// nonces ([`LspCeremony::receive_all_nonces`]), aggregating them and opening one signing session
/// per transaction, checking every partial signature in its transaction's session
/// ([`LspCeremony::receive_all_partials`]), and signing and aggregating
/// ([`LspCeremony::finalize`]).
pub struct LspCeremony {
    factory: Arc<Factory>,
    signer: MusigSigner,
    /// Every transaction, until finalized (then dropped: the signed ones are in `signed`).
    jobs: Vec<LspJob>,
    /// Job index of each transaction.
    index: HashMap<TxKind, usize>,
    nonce_senders: HashSet<ClientId>,
    partial_senders: HashSet<ClientId>,
    /// After finalize: every signed transaction and its signature, in job order.
    signed: Vec<SignedTx>,
    sigs: Vec<Signature>,
    ops: CryptoOps,
    /// The clients taking part and the job indices of the transactions each signs.
    participants: BTreeMap<ClientId, Vec<usize>>,
}

impl std::fmt::Debug for LspCeremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LspCeremony")
            .field("jobs", &self.index.len())
            .finish_non_exhaustive()
    }
}

impl LspCeremony {
    /// Start: build every transaction and the LSP's own nonces.
    pub fn new(
        factory: Arc<Factory>,
        keypair: Keypair,
        funding: OutPoint,
    ) -> Result<Self, CeremonyError> {
        let v = factory.initial_version();
        let kinds = factory.all_jobs(&v);
        Self::for_jobs(factory, keypair, funding, &v, &kinds)
    }

    /// Start a ceremony over `kinds` only (a state update), built at version `v`; the
    /// clients taking part are those who sign any of them.
    pub fn for_jobs(
        factory: Arc<Factory>,
        keypair: Keypair,
        funding: OutPoint,
        v: &Version,
        kinds: &[TxKind],
    ) -> Result<Self, CeremonyError> {
        if factory.key_of(Signer::Lsp).inner != keypair.public_key() {
            return Err(CeremonyError::WrongKey(Signer::Lsp));
        }
        let signer = MusigSigner::new(&keypair);
        // The keys of every output these transactions spend or create, on every core first:
        // building them then only looks the keys up.
        let slots: Vec<crate::factory::Slot> = kinds
            .iter()
            .flat_map(|k| std::iter::once(factory.input_of(*k, v)).chain(factory.outputs_of(*k, v)))
            .collect();
        factory.aggregate_slots(&slots, v)?;
        let prepared = prepare(&factory, kinds, funding, v, true)?;
        let mut jobs = Vec::with_capacity(prepared.len());
        for p in prepared {
            let slot = factory.input_of(p.kind, v);
            let clients = client_range(&factory.signers(slot, v))?;
            let n = 1 + clients.len();
            jobs.push(LspJob {
                p,
                clients,
                secret: None,
                nonces: vec![None; n],
                round2: None,
                partials: vec![None; n],
            });
        }
        par::map_mut(&mut jobs, |_, job| {
            let (sec, public) = job.p.key.nonce_gen_parsed(&signer, &job.p.sighash);
            job.secret = Some(sec);
            job.nonces[0] = Some(public); // the LSP is always the first signer
        });
        let mut participants: BTreeMap<ClientId, Vec<usize>> = BTreeMap::new();
        let mut index = HashMap::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            index.insert(job.p.kind, i);
            for c in job.clients.clone() {
                participants.entry(ClientId(c)).or_default().push(i);
            }
        }
        let ops = CryptoOps {
            nonces: jobs.len() as u64,
            ..CryptoOps::default()
        };
        Ok(LspCeremony {
            factory,
            signer,
            jobs,
            index,
            nonce_senders: HashSet::new(),
            partial_senders: HashSet::new(),
            signed: Vec::new(),
            sigs: Vec::new(),
            ops,
            participants,
        })
    }

    /// The script hints `client` needs to build its transactions without aggregating the keys
    /// of the nodes beside its path ([`Factory::with_script_hints`]).
    pub fn script_hints_for(&self, client: ClientId) -> Result<ScriptHints, CeremonyError> {
        self.jobs_of(client)?;
        Ok(self.factory.script_hints_for(client)?)
    }

    fn jobs_of(&self, client: ClientId) -> Result<&Vec<usize>, CeremonyError> {
        self.participants
            .get(&client)
            .ok_or(CeremonyError::Factory(FactoryError::UnknownClient(client)))
    }

    /// The job indices of `kinds`, if they are exactly the transactions `client` signs.
    fn expect_jobs(
        &self,
        client: ClientId,
        kinds: impl ExactSizeIterator<Item = TxKind>,
    ) -> Result<Vec<usize>, CeremonyError> {
        let expected = self.jobs_of(client)?;
        let got_len = kinds.len();
        let wrong = || CeremonyError::WrongJobs {
            signer: Signer::Client(client),
            expected: expected.len(),
            got: got_len,
        };
        let idx: Vec<usize> = kinds
            .map(|k| self.index.get(&k).copied().ok_or_else(wrong))
            .collect::<Result<_, _>>()?;
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        // `expected` is in job order: equal when the same set, each once.
        if &sorted != expected {
            return Err(wrong());
        }
        Ok(idx)
    }

    fn check_sender(
        &self,
        client: ClientId,
        factory: FactoryId,
        senders: &HashSet<ClientId>,
        batch: &HashSet<ClientId>,
    ) -> Result<(), CeremonyError> {
        check_factory(self.factory.params().id, factory)?;
        if senders.contains(&client) || batch.contains(&client) {
            return Err(CeremonyError::Duplicate(Signer::Client(client)));
        }
        Ok(())
    }

    /// Round 1: take a client's nonces.
    pub fn receive_nonces(
        &mut self,
        client: ClientId,
        msg: &NonceMsg,
    ) -> Result<(), CeremonyError> {
        self.receive_all_nonces(&[(client, msg)])
    }

    /// Round 1: take many clients' nonces at once, parsing them on every core. Each message is
    /// taken or refused on its own: when any is refused, the first refusal (in the order given)
    /// is returned, and [`LspCeremony::missing_nonces`] lists who still has to send.
    pub fn receive_all_nonces(
        &mut self,
        msgs: &[(ClientId, &NonceMsg)],
    ) -> Result<(), CeremonyError> {
        if self.jobs.first().is_some_and(|j| j.round2.is_some()) || !self.signed.is_empty() {
            return Err(CeremonyError::WrongPhase("nonces are closed"));
        }
        let mut first_error = None;
        let mut batch = HashSet::new();
        let mut valid = Vec::with_capacity(msgs.len());
        for (client, msg) in msgs {
            let checked = self
                .check_sender(*client, msg.factory, &self.nonce_senders, &batch)
                .and_then(|()| self.expect_jobs(*client, msg.nonces.iter().map(|n| n.0)));
            match checked {
                Ok(idx) => {
                    batch.insert(*client);
                    valid.push((*client, *msg, idx));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let parsed = par::map(&valid, |_, (client, msg, _)| {
            msg.nonces
                .iter()
                .map(|(kind, nonce)| {
                    ParsedNonce::parse(nonce).map_err(|_| CeremonyError::MalformedNonce {
                        signer: Signer::Client(*client),
                        job: *kind,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        });
        for ((client, _, idx), nonces) in valid.into_iter().zip(parsed) {
            match nonces {
                Ok(nonces) => {
                    for (i, nonce) in idx.into_iter().zip(nonces) {
                        let job = &mut self.jobs[i];
                        let pos = job.position(client);
                        job.nonces[pos] = Some(nonce);
                    }
                    self.nonce_senders.insert(client);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Clients whose nonces are still missing.
    pub fn missing_nonces(&self) -> Vec<ClientId> {
        self.participants
            .keys()
            .copied()
            .filter(|c| !self.nonce_senders.contains(c))
            .collect()
    }

    /// Clients whose partial signatures are still missing (or were refused).
    pub fn missing_partials(&self) -> Vec<ClientId> {
        self.participants
            .keys()
            .copied()
            .filter(|c| !self.partial_senders.contains(c))
            .collect()
    }

    fn nonces_closed(&self) -> bool {
        !self.signed.is_empty() || self.jobs.first().is_some_and(|j| j.round2.is_some())
    }

    /// Once every nonce is in: aggregate each transaction's nonces and open its signing
    /// session, on every core.
    fn close_nonces(&mut self) -> Result<(), CeremonyError> {
        if self.nonces_closed() {
            return Ok(());
        }
        let missing = self.missing_nonces();
        if !missing.is_empty() {
            return Err(CeremonyError::Incomplete(missing.len()));
        }
        par::map_mut(&mut self.jobs, |_, job| {
            let all: Vec<&ParsedNonce> = job
                .nonces
                .iter()
                .map(|n| n.as_ref().expect("all nonces received"))
                .collect();
            let (agg, session) = job.p.key.open_session(&all, &job.p.sighash)?;
            job.round2 = Some((agg, session.detach()));
            Ok(())
        })
        .into_iter()
        .collect::<Result<(), MusigError>>()?;
        Ok(())
    }

    /// Round 2: the aggregated nonces a client needs (once every client has sent its nonces).
    pub fn agg_nonces_for(&mut self, client: ClientId) -> Result<AggNonceMsg, CeremonyError> {
        self.close_nonces()?;
        if !self.signed.is_empty() {
            return Err(CeremonyError::WrongPhase("the ceremony is finalized"));
        }
        let nonces = self
            .jobs_of(client)?
            .iter()
            .map(|i| {
                let job = &self.jobs[*i];
                (job.p.kind, job.round2.as_ref().expect("nonces closed").0)
            })
            .collect();
        Ok(AggNonceMsg {
            factory: self.factory.params().id,
            nonces,
        })
    }

    /// Round 2: take and check a client's partial signatures; a bad one names its signer.
    pub fn receive_partials(
        &mut self,
        client: ClientId,
        msg: &PartialSigMsg,
    ) -> Result<(), CeremonyError> {
        self.receive_all_partials(&[(client, msg)])
    }

    /// Round 2: take many clients' partial signatures at once and check every one of them, on
    /// every core, each in the signing session of its transaction. A client with any invalid
    /// partial signature is refused as a whole (none of its partial signatures is kept) and
    /// named; the others are taken. When any message is refused, the first refusal (in the
    /// order given) is returned, and [`LspCeremony::missing_partials`] lists who still has to
    /// send.
    pub fn receive_all_partials(
        &mut self,
        msgs: &[(ClientId, &PartialSigMsg)],
    ) -> Result<(), CeremonyError> {
        if !self.nonces_closed() || !self.signed.is_empty() {
            return Err(CeremonyError::WrongPhase(
                "partial signatures come after the aggregated nonces, before finalize",
            ));
        }
        let mut errors: Vec<Option<CeremonyError>> = Vec::with_capacity(msgs.len());
        let mut batch = HashSet::new();
        // The partial signatures to check, by job.
        let mut todo: HashMap<usize, Vec<Received>> = HashMap::new();
        for (m, (client, msg)) in msgs.iter().enumerate() {
            let checked = self
                .check_sender(*client, msg.factory, &self.partial_senders, &batch)
                .and_then(|()| self.expect_jobs(*client, msg.partials.iter().map(|p| p.0)));
            match checked {
                Ok(idx) => {
                    batch.insert(*client);
                    for (i, (_, partial)) in idx.into_iter().zip(&msg.partials) {
                        let pos = self.jobs[i].position(*client);
                        todo.entry(i).or_default().push((pos, m, *partial));
                    }
                    errors.push(None);
                }
                Err(e) => errors.push(Some(e)),
            }
        }
        let mut todo: Vec<(usize, Vec<Received>)> = todo.into_iter().collect();
        todo.sort_unstable_by_key(|t| t.0);
        let factory = &self.factory;
        let jobs = &self.jobs;
        // Per job, the messages whose partial signature does not verify.
        let failed: Vec<Vec<usize>> = par::map(&todo, |_, (i, partials)| {
            let job = &jobs[*i];
            let (_, stored) = job.round2.as_ref().expect("nonces closed");
            let session = stored.attach(&job.p.key);
            partials
                .iter()
                .filter(|(pos, _, partial)| {
                    let signer = Signer::Client(ClientId(job.clients.start + *pos as u32 - 1));
                    let nonce = job.nonces[*pos].as_ref().expect("nonces closed");
                    !session
                        .partial_verify_parsed(partial, nonce, factory.cosigner_key(signer))
                        .unwrap_or(false)
                })
                .map(|(_, m, _)| *m)
                .collect()
        });
        let checked: usize = todo.iter().map(|t| t.1.len()).sum();
        self.ops.partial_verifies += checked as u64;
        for ((i, _), bad) in todo.iter().zip(&failed) {
            for m in bad {
                let e = &mut errors[*m];
                if e.is_none() {
                    *e = Some(CeremonyError::BadPartialSignature {
                        signer: Signer::Client(msgs[*m].0),
                        job: self.jobs[*i].p.kind,
                    });
                }
            }
        }
        for (i, partials) in todo {
            for (pos, m, partial) in partials {
                if errors[m].is_none() {
                    self.jobs[i].partials[pos] = Some(partial);
                }
            }
        }
        let mut first = None;
        for ((client, _), e) in msgs.iter().zip(errors) {
            match e {
                None => {
                    self.partial_senders.insert(*client);
                }
                Some(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Sign the LSP's own share, aggregate every transaction and check each final signature, on
    /// every core. The ceremony's working state (nonces, sessions, partial signatures) is freed.
    pub fn finalize(&mut self) -> Result<(), CeremonyError> {
        if !self.signed.is_empty() {
            return Ok(());
        }
        let missing = self.participants.len() - self.partial_senders.len();
        if missing > 0 || !self.nonces_closed() {
            return Err(CeremonyError::Incomplete(missing));
        }
        let signer = &self.signer;
        let sigs = par::map_mut(&mut self.jobs, |_, job| {
            let sec = job
                .secret
                .take()
                .ok_or(CeremonyError::WrongPhase("the LSP's nonces are spent"))?;
            let (_, stored) = job.round2.as_ref().expect("nonces closed");
            let session = stored.attach(&job.p.key);
            job.partials[0] = Some(session.partial_sign(sec, signer));
            let all: Vec<PartialSig> = job
                .partials
                .iter()
                .map(|s| s.expect("every partial received"))
                .collect();
            Ok(session.aggregate(&all)?)
        })
        .into_iter()
        .collect::<Result<Vec<Signature>, CeremonyError>>()?;
        self.ops.partial_signs += sigs.len() as u64;
        self.ops.aggregations += sigs.len() as u64;
        self.signed = std::mem::take(&mut self.jobs)
            .into_iter()
            .zip(&sigs)
            .map(|(job, sig)| attach(job.p, sig))
            .collect();
        self.sigs = sigs;
        Ok(())
    }

    /// The final signatures a client needs to go live.
    pub fn final_sigs_for(&self, client: ClientId) -> Result<FinalSigMsg, CeremonyError> {
        if self.signed.is_empty() {
            return Err(CeremonyError::WrongPhase("finalize first"));
        }
        let signatures = self
            .jobs_of(client)?
            .iter()
            .map(|i| (self.signed[*i].kind, self.sigs[*i]))
            .collect();
        Ok(FinalSigMsg {
            factory: self.factory.params().id,
            signatures,
        })
    }

    /// The txid `kind` will have once signed (known before signing: for dual-state channels).
    pub fn txid(&self, kind: TxKind) -> Option<bitcoin::Txid> {
        let i = *self.index.get(&kind)?;
        Some(match self.jobs.get(i) {
            Some(job) => job.p.tx.compute_txid(),
            None => self.signed.get(i)?.tx.compute_txid(),
        })
    }

    /// The clients taking part.
    pub fn participants(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.participants.keys().copied()
    }

    /// Release the funding transaction for broadcast: only once every transaction of the tree and
    /// every timeout transaction is fully signed, and only if it creates the funding output the
    /// tree spends.
    pub fn release_funding(&self, funding_tx: Transaction) -> Result<Transaction, CeremonyError> {
        if self.signed.is_empty() || self.signed.len() != self.index.len() {
            return Err(CeremonyError::WrongPhase(
                "the funding transaction waits until everything is signed",
            ));
        }
        let root = crate::factory::TxKind::Kickoff(crate::types::NodeId(0));
        let root_job = self.signed(root).ok_or(CeremonyError::WrongPhase(
            "only the factory's first ceremony releases the funding transaction",
        ))?;
        let spends = root_job.tx.input[0].previous_output;
        let expected = &root_job.spent;
        let ok = spends.txid == funding_tx.compute_txid()
            && funding_tx.output.get(spends.vout as usize) == Some(expected);
        if !ok {
            return Err(CeremonyError::Factory(FactoryError::Shape(
                crate::shape::ShapeError::Amount(
                    "the funding transaction does not create the output the tree spends".into(),
                ),
            )));
        }
        Ok(funding_tx)
    }

    /// Every spend the LSP signs in this ceremony (empty once finalized).
    pub fn spends(&self) -> Vec<SpendToSign> {
        self.jobs.iter().map(|j| j.p.spend()).collect()
    }

    /// A fully signed transaction of the factory.
    pub fn signed(&self, kind: TxKind) -> Option<&SignedTx> {
        self.signed.get(*self.index.get(&kind)?)
    }

    /// Every signed transaction.
    pub fn all_signed(&self) -> impl Iterator<Item = &SignedTx> {
        self.signed.iter()
    }

    /// Number of transactions the LSP signs.
    pub fn job_count(&self) -> usize {
        self.index.len()
    }

    /// Crypto operations the LSP performed.
    pub fn ops(&self) -> CryptoOps {
        self.ops
    }
}

/// Run the whole ceremony with every party in this process (tests, demo, benchmarks): both round
/// trips, then every client verifies its final signatures. `tip` is the height of the best block
/// of the chain every party here shares. The clients' steps run on every core.
pub fn run_in_process(
    factory: &Arc<Factory>,
    lsp_key: Keypair,
    client_keys: &[Keypair],
    funding: OutPoint,
    tip: u32,
) -> Result<(LspCeremony, Vec<ClientCeremony>), CeremonyError> {
    let mut lsp = LspCeremony::new(Arc::clone(factory), lsp_key, funding)?;
    let mut clients: Vec<ClientCeremony> = par::map(client_keys, |i, k| {
        ClientCeremony::new(Arc::clone(factory), ClientId(i as u32), *k, funding, tip)
    })
    .into_iter()
    .collect::<Result<_, _>>()?;
    let nonces = par::map_mut(&mut clients, |_, c| c.round1())
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let msgs: Vec<(ClientId, &NonceMsg)> =
        clients.iter().map(|c| c.client()).zip(&nonces).collect();
    lsp.receive_all_nonces(&msgs)?;
    let aggs = clients
        .iter()
        .map(|c| lsp.agg_nonces_for(c.client()))
        .collect::<Result<Vec<_>, _>>()?;
    let partials = par::map_mut(&mut clients, |i, c| c.round2(&aggs[i]))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let msgs: Vec<(ClientId, &PartialSigMsg)> =
        clients.iter().map(|c| c.client()).zip(&partials).collect();
    lsp.receive_all_partials(&msgs)?;
    lsp.finalize()?;
    let finals = clients
        .iter()
        .map(|c| lsp.final_sigs_for(c.client()))
        .collect::<Result<Vec<_>, _>>()?;
    par::map_mut(&mut clients, |i, c| c.finish(&finals[i]).map(|_| ()))
        .into_iter()
        .collect::<Result<(), _>>()?;
    Ok((lsp, clients))
}
