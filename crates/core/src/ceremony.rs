//! The factory signing ceremony, as a pure state machine for each party, independent of transport.
//!
//! Round 1: every signer sends a public nonce for every transaction it signs. Round 2: the LSP
//! sends the aggregated nonces; every signer returns partial signatures. The LSP checks each
//! partial signature (a wrong one names its signer), aggregates, and sends each client the final
//! signatures of its exit path and timeout transactions; the client verifies them all before it
//! agrees that the factory is live. Two round trips regardless of N. Secret nonces stay in memory
//! and are consumed by signing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bitcoin::key::{Keypair, PublicKey};
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::secp256k1::{Message, Secp256k1};
use bitcoin::{OutPoint, Transaction, TxOut, Witness};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::factory::{Factory, FactoryError, Signer, TxKind};
use crate::ledger::Version;
use crate::musig::{
    aggregate_nonces, check_pub_nonce, AggNonce, MusigError, PartialSig, PubNonce, SecNonce,
    TweakedAggregateKey,
};
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
#[derive(Debug, Clone)]
struct Prepared {
    tx: Transaction,
    spent: TxOut,
    sighash: [u8; 32],
    key: TweakedAggregateKey,
    signers: Vec<Signer>,
}

fn prepare(
    factory: &Factory,
    kinds: &[TxKind],
    funding: OutPoint,
    v: &Version,
) -> Result<BTreeMap<TxKind, Prepared>, FactoryError> {
    let built = factory.build_set(kinds, funding, v)?;
    let mut out = BTreeMap::new();
    for kind in kinds {
        let b = &built[kind];
        let slot = factory.input_of(*kind, v);
        out.insert(
            *kind,
            Prepared {
                sighash: factory.sighash_of(*kind, &b.tx, &b.spent, v)?,
                tx: b.tx.clone(),
                spent: b.spent.clone(),
                key: factory.key_for(*kind, v)?,
                signers: factory.signers(slot, v),
            },
        );
    }
    Ok(out)
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

fn attach(p: &Prepared, kind: TxKind, sig: &Signature) -> SignedTx {
    let mut tx = p.tx.clone();
    tx.input[0].witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
        signature: *sig,
        sighash_type: bitcoin::TapSighashType::Default,
    });
    SignedTx {
        kind,
        tx,
        spent: p.spent.clone(),
    }
}

enum ClientPhase {
    Ready,
    AwaitingAggNonces(HashMap<TxKind, SecNonce>),
    AwaitingFinal,
    Live,
    Failed,
}

/// A client's side of the ceremony.
pub struct ClientCeremony {
    factory: Arc<Factory>,
    me: ClientId,
    keypair: Keypair,
    jobs: BTreeMap<TxKind, Prepared>,
    /// Job order: the exit path in publishing order, then the timeouts.
    order: Vec<TxKind>,
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
    /// timeout transactions from the shared parameters.
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
        let jobs = prepare(&factory, &order, funding, v)?;
        Ok(ClientCeremony {
            factory,
            me,
            keypair,
            jobs,
            order,
            phase: ClientPhase::Ready,
            signed: Vec::new(),
            ops: CryptoOps::default(),
        })
    }

    /// Round 1: public nonces for every transaction this client signs.
    pub fn round1(&mut self) -> Result<NonceMsg, CeremonyError> {
        if !matches!(self.phase, ClientPhase::Ready) {
            return Err(CeremonyError::WrongPhase("round 1 runs once"));
        }
        let mut secrets = HashMap::new();
        let mut nonces = Vec::new();
        for (kind, p) in &self.jobs {
            let (sec, public) = p.key.nonce_gen(&self.keypair, &p.sighash);
            self.ops.nonces += 1;
            secrets.insert(*kind, sec);
            nonces.push((*kind, public));
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
        if agg.len() != self.jobs.len() || !self.jobs.keys().all(|k| agg.contains_key(k)) {
            return Err(CeremonyError::WrongJobs {
                signer: Signer::Lsp,
                expected: self.jobs.len(),
                got: msg.nonces.len(),
            });
        }
        let ClientPhase::AwaitingAggNonces(mut secrets) =
            std::mem::replace(&mut self.phase, ClientPhase::Failed)
        else {
            unreachable!("checked above");
        };
        let mut partials = Vec::with_capacity(self.jobs.len());
        for (kind, p) in &self.jobs {
            let sec = secrets.remove(kind).expect("one secret nonce per job");
            let sig = p
                .key
                .partial_sign(sec, &self.keypair, &agg[kind], &p.sighash)?;
            self.ops.partial_signs += 1;
            partials.push((*kind, sig));
        }
        self.phase = ClientPhase::AwaitingFinal;
        Ok(PartialSigMsg {
            factory: self.factory.params().id,
            partials,
        })
    }

    /// Verify every final signature of this client's transactions; only then is the factory live.
    pub fn finish(&mut self, msg: &FinalSigMsg) -> Result<&[SignedTx], CeremonyError> {
        check_factory(self.factory.params().id, msg.factory)?;
        if !matches!(self.phase, ClientPhase::AwaitingFinal) {
            return Err(CeremonyError::WrongPhase(
                "final signatures come after round 2",
            ));
        }
        let sigs: HashMap<TxKind, Signature> = msg.signatures.iter().copied().collect();
        let secp = Secp256k1::verification_only();
        let mut signed = Vec::with_capacity(self.jobs.len());
        for kind in &self.order {
            let p = &self.jobs[kind];
            let Some(sig) = sigs.get(kind) else {
                return Err(CeremonyError::BadFinalSignature {
                    job: *kind,
                    problem: "missing",
                });
            };
            self.ops.final_verifies += 1;
            secp.verify_schnorr(sig, &Message::from_digest(p.sighash), &p.key.output_key())
                .map_err(|_| CeremonyError::BadFinalSignature {
                    job: *kind,
                    problem: "invalid",
                })?;
            signed.push(attach(p, *kind, sig));
        }
        self.signed = signed;
        self.phase = ClientPhase::Live;
        Ok(&self.signed)
    }

    /// The txid `kind` will have once signed (known before signing: for dual-state channels).
    pub fn txid(&self, kind: TxKind) -> Option<bitcoin::Txid> {
        self.jobs.get(&kind).map(|p| p.tx.compute_txid())
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

/// The LSP's side of the ceremony: it signs and coordinates every transaction.
pub struct LspCeremony {
    factory: Arc<Factory>,
    keypair: Keypair,
    jobs: BTreeMap<TxKind, Prepared>,
    own_secrets: HashMap<TxKind, SecNonce>,
    /// Public nonces per job, in the job's signer order.
    nonces: HashMap<TxKind, Vec<Option<PubNonce>>>,
    agg: HashMap<TxKind, AggNonce>,
    partials: HashMap<TxKind, Vec<Option<PartialSig>>>,
    nonce_senders: HashMap<ClientId, ()>,
    partial_senders: HashMap<ClientId, ()>,
    finals: HashMap<TxKind, SignedTx>,
    ops: CryptoOps,
    /// The clients taking part and the transactions each signs.
    participants: BTreeMap<ClientId, Vec<TxKind>>,
}

impl std::fmt::Debug for LspCeremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LspCeremony")
            .field("jobs", &self.jobs.len())
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
        let jobs = prepare(&factory, kinds, funding, v)?;
        let mut participants: BTreeMap<ClientId, Vec<TxKind>> = BTreeMap::new();
        for c in 0..factory.params().clients.len() as u32 {
            let mine: Vec<TxKind> = factory
                .client_jobs(ClientId(c), v)?
                .into_iter()
                .filter(|k| jobs.contains_key(k))
                .collect();
            if !mine.is_empty() {
                participants.insert(ClientId(c), mine);
            }
        }
        let mut own_secrets = HashMap::with_capacity(jobs.len());
        let mut nonces = HashMap::with_capacity(jobs.len());
        let mut ops = CryptoOps::default();
        for (kind, p) in &jobs {
            let (sec, public) = p.key.nonce_gen(&keypair, &p.sighash);
            ops.nonces += 1;
            own_secrets.insert(*kind, sec);
            let mut v = vec![None; p.signers.len()];
            v[0] = Some(public); // the LSP is always the first signer
            nonces.insert(*kind, v);
        }
        Ok(LspCeremony {
            factory,
            keypair,
            jobs,
            own_secrets,
            nonces,
            agg: HashMap::new(),
            partials: HashMap::new(),
            nonce_senders: HashMap::new(),
            partial_senders: HashMap::new(),
            finals: HashMap::new(),
            ops,
            participants,
        })
    }

    fn jobs_of(&self, client: ClientId) -> Result<&Vec<TxKind>, CeremonyError> {
        self.participants
            .get(&client)
            .ok_or(CeremonyError::Factory(FactoryError::UnknownClient(client)))
    }

    fn position(&self, kind: TxKind, signer: Signer) -> Option<usize> {
        self.jobs
            .get(&kind)?
            .signers
            .iter()
            .position(|s| *s == signer)
    }

    fn expect_jobs(&self, client: ClientId, kinds: &[TxKind]) -> Result<(), CeremonyError> {
        let expected = self.jobs_of(client)?.clone();
        let mut got: Vec<TxKind> = kinds.to_vec();
        got.sort();
        got.dedup();
        let mut want = expected.clone();
        want.sort();
        if got != want || kinds.len() != expected.len() {
            return Err(CeremonyError::WrongJobs {
                signer: Signer::Client(client),
                expected: expected.len(),
                got: kinds.len(),
            });
        }
        Ok(())
    }

    /// Round 1: take a client's nonces.
    pub fn receive_nonces(
        &mut self,
        client: ClientId,
        msg: &NonceMsg,
    ) -> Result<(), CeremonyError> {
        check_factory(self.factory.params().id, msg.factory)?;
        if !self.agg.is_empty() {
            return Err(CeremonyError::WrongPhase("nonces are closed"));
        }
        if self.nonce_senders.contains_key(&client) {
            return Err(CeremonyError::Duplicate(Signer::Client(client)));
        }
        let kinds: Vec<TxKind> = msg.nonces.iter().map(|n| n.0).collect();
        self.expect_jobs(client, &kinds)?;
        let signer = Signer::Client(client);
        for (kind, nonce) in &msg.nonces {
            check_pub_nonce(nonce)
                .map_err(|_| CeremonyError::MalformedNonce { signer, job: *kind })?;
        }
        for (kind, nonce) in &msg.nonces {
            let pos = self
                .position(*kind, signer)
                .ok_or(CeremonyError::WrongJobs {
                    signer,
                    expected: 0,
                    got: msg.nonces.len(),
                })?;
            self.nonces.get_mut(kind).expect("job exists")[pos] = Some(*nonce);
        }
        self.nonce_senders.insert(client, ());
        Ok(())
    }

    /// Clients whose nonces are still missing.
    pub fn missing_nonces(&self) -> Vec<ClientId> {
        self.participants
            .keys()
            .copied()
            .filter(|c| !self.nonce_senders.contains_key(c))
            .collect()
    }

    fn close_nonces(&mut self) -> Result<(), CeremonyError> {
        if !self.agg.is_empty() {
            return Ok(());
        }
        let missing = self.missing_nonces();
        if !missing.is_empty() {
            return Err(CeremonyError::Incomplete(missing.len()));
        }
        for (kind, list) in &self.nonces {
            let all: Vec<PubNonce> = list
                .iter()
                .map(|n| n.expect("all nonces received"))
                .collect();
            self.agg.insert(*kind, aggregate_nonces(&all)?);
        }
        Ok(())
    }

    /// Round 2: the aggregated nonces a client needs (once every client has sent its nonces).
    pub fn agg_nonces_for(&mut self, client: ClientId) -> Result<AggNonceMsg, CeremonyError> {
        self.close_nonces()?;
        let nonces = self
            .jobs_of(client)?
            .iter()
            .map(|k| (*k, self.agg[k]))
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
        check_factory(self.factory.params().id, msg.factory)?;
        if self.agg.is_empty() {
            return Err(CeremonyError::WrongPhase(
                "partial signatures come after the aggregated nonces",
            ));
        }
        if self.partial_senders.contains_key(&client) {
            return Err(CeremonyError::Duplicate(Signer::Client(client)));
        }
        let kinds: Vec<TxKind> = msg.partials.iter().map(|n| n.0).collect();
        self.expect_jobs(client, &kinds)?;
        let signer = Signer::Client(client);
        let pk: PublicKey = self.factory.key_of(signer);
        for (kind, partial) in &msg.partials {
            let p = &self.jobs[kind];
            let pos = self.position(*kind, signer).expect("checked job set");
            let nonce = self.nonces[kind][pos].expect("nonces closed");
            self.ops.partial_verifies += 1;
            let ok = p
                .key
                .partial_verify(partial, &nonce, &pk, &self.agg[kind], &p.sighash)
                .unwrap_or(false);
            if !ok {
                return Err(CeremonyError::BadPartialSignature { signer, job: *kind });
            }
        }
        for (kind, partial) in &msg.partials {
            let n = self.jobs[kind].signers.len();
            let pos = self.position(*kind, signer).expect("checked job set");
            self.partials.entry(*kind).or_insert_with(|| vec![None; n])[pos] = Some(*partial);
        }
        self.partial_senders.insert(client, ());
        Ok(())
    }

    /// Sign the LSP's own share, aggregate every transaction and check each final signature.
    pub fn finalize(&mut self) -> Result<(), CeremonyError> {
        if !self.finals.is_empty() {
            return Ok(());
        }
        let missing = self.participants.len() - self.partial_senders.len();
        if missing > 0 || self.agg.is_empty() {
            return Err(CeremonyError::Incomplete(missing));
        }
        let mut secrets = std::mem::take(&mut self.own_secrets);
        for (kind, p) in &self.jobs {
            let sec = secrets.remove(kind).expect("one LSP nonce per job");
            let own = p
                .key
                .partial_sign(sec, &self.keypair, &self.agg[kind], &p.sighash)?;
            self.ops.partial_signs += 1;
            let list = self
                .partials
                .entry(*kind)
                .or_insert_with(|| vec![None; p.signers.len()]);
            list[0] = Some(own);
            let all: Vec<PartialSig> = list
                .iter()
                .map(|s| s.expect("every partial received"))
                .collect();
            let sig = p.key.aggregate(&self.agg[kind], &p.sighash, &all)?;
            self.ops.aggregations += 1;
            self.finals.insert(*kind, attach(p, *kind, &sig));
        }
        Ok(())
    }

    /// The final signatures a client needs to go live.
    pub fn final_sigs_for(&self, client: ClientId) -> Result<FinalSigMsg, CeremonyError> {
        if self.finals.is_empty() {
            return Err(CeremonyError::WrongPhase("finalize first"));
        }
        let signatures = self
            .jobs_of(client)?
            .iter()
            .map(|k| {
                let k = *k;
                let w = &self.finals[&k].tx.input[0].witness;
                let sig = Signature::from_slice(&w.to_vec()[0]).expect("64-byte signature");
                (k, sig)
            })
            .collect();
        Ok(FinalSigMsg {
            factory: self.factory.params().id,
            signatures,
        })
    }

    /// The txid `kind` will have once signed (known before signing: for dual-state channels).
    pub fn txid(&self, kind: TxKind) -> Option<bitcoin::Txid> {
        self.jobs.get(&kind).map(|p| p.tx.compute_txid())
    }

    /// The clients taking part.
    pub fn participants(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.participants.keys().copied()
    }

    /// Release the funding transaction for broadcast: only once every transaction of the tree and
    /// every timeout transaction is fully signed, and only if it creates the funding output the
    /// tree spends.
    pub fn release_funding(&self, funding_tx: Transaction) -> Result<Transaction, CeremonyError> {
        if self.finals.len() != self.jobs.len() || self.finals.is_empty() {
            return Err(CeremonyError::WrongPhase(
                "the funding transaction waits until everything is signed",
            ));
        }
        let root = crate::factory::TxKind::Kickoff(crate::types::NodeId(0));
        let root_job = self.jobs.get(&root).ok_or(CeremonyError::WrongPhase(
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

    /// A fully signed transaction of the factory.
    pub fn signed(&self, kind: TxKind) -> Option<&SignedTx> {
        self.finals.get(&kind)
    }

    /// Every signed transaction.
    pub fn all_signed(&self) -> impl Iterator<Item = &SignedTx> {
        self.finals.values()
    }

    /// Number of transactions the LSP signs.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Crypto operations the LSP performed.
    pub fn ops(&self) -> CryptoOps {
        self.ops
    }
}

/// Run the whole ceremony with every party in this process (tests, demo, benchmarks): both round
/// trips, then every client verifies its final signatures. `tip` is the height of the best block
/// of the chain every party here shares.
pub fn run_in_process(
    factory: &Arc<Factory>,
    lsp_key: Keypair,
    client_keys: &[Keypair],
    funding: OutPoint,
    tip: u32,
) -> Result<(LspCeremony, Vec<ClientCeremony>), CeremonyError> {
    let mut lsp = LspCeremony::new(Arc::clone(factory), lsp_key, funding)?;
    let mut clients: Vec<ClientCeremony> = client_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            ClientCeremony::new(Arc::clone(factory), ClientId(i as u32), *k, funding, tip)
        })
        .collect::<Result<_, _>>()?;
    for c in clients.iter_mut() {
        let msg = c.round1()?;
        lsp.receive_nonces(c.client(), &msg)?;
    }
    for c in clients.iter_mut() {
        let agg = lsp.agg_nonces_for(c.client())?;
        let partials = c.round2(&agg)?;
        lsp.receive_partials(c.client(), &partials)?;
    }
    lsp.finalize()?;
    for c in clients.iter_mut() {
        let sigs = lsp.final_sigs_for(c.client())?;
        c.finish(&sigs)?;
    }
    Ok((lsp, clients))
}
