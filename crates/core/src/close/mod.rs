//! Cooperative close: one key-path spend of the funding output that pays every party its
//! current balance, signed in two MuSig2 rounds by the LSP and every client.
//!
//! The LSP proposes [`CloseTerms`]: what each client is paid (its channel balances, its sold
//! channels, its fee coin back), where the LSP's remainder goes, and the fee rate. The close
//! transaction is a pure function of the terms and the factory ([`Factory::close_tx`]), so every
//! party builds it alone and signs only what it built:
//!
//! - outputs: one per client, in tree order, to the client's payout script, then the LSP's
//!   remainder (the funding value less every client's payout and the fee: the LSP funded the
//!   tree's fee reserves and pays the close's fee);
//! - an amount below its script's dust threshold (Bitcoin Core's `GetDustThreshold` at the
//!   default dust relay fee, [`bitcoin::Script::minimal_non_dust`]) gets no output and goes to the
//!   fee, as BOLT 2's closing transaction does; this holds for a client's payout and for the LSP's
//!   remainder alike;
//! - one input, the funding outpoint, spent by the key path (MuSig2 of every party), version 2,
//!   no lock time, sequence `0xfffffffd`.
//!
//! A client signs ([`CloseSigner::client`]) only if the terms name its factory and the funding
//! outpoint it watches, pay it exactly what its own records say (any other amount, more or less,
//! is refused: the two sides' records disagree), and pay at least the fee rate it asks for (a
//! close that never confirms keeps it waiting until it exits). Before its partial signature leaves
//! it persists a [`CloseRecord`]; holding one, it never signs a close with other terms (never two
//! different spends of the funding outpoint with its partial signature on them). Secret nonces
//! live only in the [`CloseSigner`] and die with it: an interrupted close starts again with fresh
//! nonces. From the moment a party sends its partial signature, the factory's channels are
//! frozen for it: a close with those balances may still be completed and published by whoever
//! holds every partial signature.
//!
//! The LSP coordinates ([`CloseCoordinator`]): it collects every public nonce, sends the
//! aggregate, checks each partial signature as it comes (a bad one names its signer) and
//! completes the transaction once all are in.
//!
//! **Rotation in one transaction.** When the terms name a [`Successor`], the close also funds
//! the next factory of the ladder: its funding output comes first (output 0), carrying the
//! amounts of the clients who move into it (`rolled`: they get no output of their own) plus
//! whatever the LSP adds from its remainder; the clients who leave are paid as in any close. So
//! the dying factory's close and its successor's funding are one on-chain transaction with one
//! input. The order that makes it safe: the terms (hence the txid, which no witness changes) are
//! fixed first; the successor's tree is then signed over the outpoint `(txid, 0)`; and a client
//! that rolls signs the close only once its own exit path in the successor is verified and its
//! opening balance there is what it rolls (the daemon's check, expressed here as the successor
//! output the client expects in [`ClientExpectation::successor`]: a client refuses terms that
//! roll it into any other output, or that roll it when it expects to be paid, or the reverse).
//! A successor output worth less than the amounts rolled into it is refused by everyone: the
//! difference would silently go to the LSP.

use bitcoin::absolute::LockTime;
use bitcoin::key::Keypair;
use bitcoin::{
    transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::factory::{Factory, FactoryError, Signer, Slot};
use crate::musig::{
    AggNonce, MusigError, ParsedNonce, PartialSig, PubNonce, SecNonce, TweakedAggregateKey,
};
use crate::types::{ClientId, FactoryId, NodeId};

pub mod msg;
pub mod partial;

pub use partial::{
    PartialClose, PartialCloseCoordinator, PartialCloseSigner, PartialCloseTerms,
    PartialExpectation, PartialInput, PartialPlan,
};

/// The terms of a cooperative close, as the LSP proposes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseTerms {
    /// The factory closed.
    pub factory: FactoryId,
    /// Its funding outpoint.
    pub funding: OutPoint,
    /// What each client is paid, by position.
    pub clients: Vec<Amount>,
    /// Where the LSP's remainder goes.
    pub lsp_script: ScriptBuf,
    /// The close's fee rate.
    pub fee_rate: FeeRate,
    /// The next factory this close also funds (a rotation), if any.
    pub successor: Option<Successor>,
}

/// The next factory's funding output in a rotation (see the module's rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Successor {
    /// The successor's funding output: its script and value.
    pub output: TxOut,
    /// The clients whose amounts go into it instead of their own outputs (ascending).
    pub rolled: Vec<ClientId>,
}

/// A close transaction built from [`CloseTerms`], not yet signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseTx {
    /// The transaction (empty witness).
    pub tx: Transaction,
    /// The funding output it spends.
    pub spent: TxOut,
    /// Each client's output index, or `None` for an amount below dust or rolled into the
    /// successor.
    pub client_outputs: Vec<Option<u32>>,
    /// The successor's funding output index (always 0), for a rotation.
    pub successor_output: Option<u32>,
    /// The LSP's output index, or `None` for a remainder below dust.
    pub lsp_output: Option<u32>,
    /// The fee: the funding value less every output (dust amounts included).
    pub fee: Amount,
}

/// What a party persists before its partial signature on a close leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRecord {
    /// The terms signed.
    pub terms: CloseTerms,
    /// The close's txid.
    pub txid: Txid,
}

/// Why a close is refused or fails.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CloseError {
    /// The terms name another factory.
    #[error("the close is for factory {offered}, not {expected}")]
    WrongFactory {
        /// Ours.
        expected: FactoryId,
        /// The terms'.
        offered: FactoryId,
    },
    /// The terms spend another outpoint than the factory's funding.
    #[error("the close spends {offered}, the funding is {expected}")]
    WrongFunding {
        /// Ours.
        expected: OutPoint,
        /// The terms'.
        offered: OutPoint,
    },
    /// Not one amount per client.
    #[error("the close pays {got} clients, the factory has {expected}")]
    ClientCount {
        /// The factory's clients.
        expected: usize,
        /// Amounts in the terms.
        got: usize,
    },
    /// A client's amount is not what its records say.
    #[error("the close pays {client} {offered}, its records say {expected}")]
    WrongAmount {
        /// The client.
        client: ClientId,
        /// What its records say.
        expected: Amount,
        /// What the terms pay it.
        offered: Amount,
    },
    /// The fee rate is below what the signer asks for.
    #[error("the close pays {offered}, at least {min} is asked")]
    FeeRateTooLow {
        /// The least fee rate the signer accepts.
        min: FeeRate,
        /// The terms'.
        offered: FeeRate,
    },
    /// The clients' payouts and the fee exceed the funding value.
    #[error("the close needs {needed} of a funding output of {available}")]
    Insufficient {
        /// The payouts and the fee.
        needed: Amount,
        /// The funding value.
        available: Amount,
    },
    /// The LSP's remainder script is not a standard payout.
    #[error("the LSP's output script is not a standard segwit payout")]
    BadLspScript,
    /// The successor in the terms is malformed.
    #[error("bad successor: {0}")]
    BadSuccessor(String),
    /// The terms roll a client into another successor than the one it expects, or roll it
    /// when it expects to be paid out, or the reverse.
    #[error("the close does not move client {client} where it expects to go")]
    WrongSuccessor {
        /// The client.
        client: ClientId,
    },
    /// This party already signed a close with other terms.
    #[error("already signed close {signed}: another close is refused")]
    AlreadySigned {
        /// The close signed before.
        signed: Txid,
    },
    /// Every client is absent: there is nothing to close cooperatively.
    #[error("every client is absent: nothing to close cooperatively")]
    NobodyPresent,
    /// A message from a party that does not sign this close.
    #[error("{0} is not a party of this factory")]
    NotAParty(Signer),
    /// A second nonce or partial signature from one party.
    #[error("{0} already sent its {1}")]
    Duplicate(Signer, &'static str),
    /// A step out of order.
    #[error("{0}")]
    OutOfOrder(&'static str),
    /// A partial signature that does not verify.
    #[error("{0}'s partial signature does not verify")]
    BadPartial(Signer),
    /// A malformed nonce or signature.
    #[error("{0}: {1}")]
    Musig(Signer, MusigError),
    /// The aggregated signature does not verify for this close.
    #[error("the close's signature does not verify")]
    BadSignature,
    /// The factory refuses (keys, scripts).
    #[error(transparent)]
    Factory(#[from] FactoryError),
}

/// Every party of `factory` in signing order: the LSP, then the clients by position.
fn parties(factory: &Factory) -> Vec<Signer> {
    std::iter::once(Signer::Lsp)
        .chain((0..factory.params().clients.len() as u32).map(|c| Signer::Client(ClientId(c))))
        .collect()
}

impl Factory {
    /// The key that signs the funding output's key path (MuSig2 of every party, tweaked).
    pub fn funding_key(&self) -> Result<TweakedAggregateKey, FactoryError> {
        self.signing_key_at(Slot::NodeInput(NodeId(0)), &self.initial_version())
    }

    /// What a client is paid at a close: its balances (msat, rounded down to the satoshi; the
    /// fractions stay with the LSP) in its channel and its sold channels, and its fee coin.
    pub fn client_close_amount(&self, balances_msat: &[u64]) -> Amount {
        let sat: u64 = balances_msat.iter().map(|m| m / 1000).sum();
        Amount::from_sat(sat) + self.params().config.client_fee_coin
    }

    /// The close transaction of `terms` (see the module's rules), checked against this factory.
    pub fn close_tx(&self, terms: &CloseTerms) -> Result<CloseTx, CloseError> {
        let id = self.params().id;
        if terms.factory != id {
            return Err(CloseError::WrongFactory {
                expected: id,
                offered: terms.factory,
            });
        }
        let n = self.params().clients.len();
        if terms.clients.len() != n {
            return Err(CloseError::ClientCount {
                expected: n,
                got: terms.clients.len(),
            });
        }
        if !crate::factory::is_standard_payout(&terms.lsp_script) {
            return Err(CloseError::BadLspScript);
        }
        let spent = self.funding_output()?;
        let available = spent.value;
        let too_much = CloseError::Insufficient {
            needed: Amount::MAX_MONEY,
            available,
        };
        let mut paid: Amount = terms
            .clients
            .iter()
            .try_fold(Amount::ZERO, |sum, a| sum.checked_add(*a))
            .filter(|sum| *sum <= available)
            .ok_or(too_much.clone())?;
        let mut outputs = Vec::with_capacity(n + 2);
        let mut rolled = vec![false; n];
        let successor_output = match &terms.successor {
            None => None,
            Some(successor) => {
                let into = check_successor(successor, &terms.clients, &mut rolled)?;
                // The LSP's addition to the successor comes out of its remainder.
                let needed = paid
                    .checked_add(successor.output.value - into)
                    .ok_or(too_much)?;
                if needed > available {
                    return Err(CloseError::Insufficient { needed, available });
                }
                paid = needed;
                outputs.push(successor.output.clone());
                Some(0)
            }
        };
        let mut client_outputs = Vec::with_capacity(n);
        for (c, amount) in terms.clients.iter().enumerate() {
            let script = self.client_payout_script(ClientId(c as u32));
            if rolled[c] {
                client_outputs.push(None);
            } else if *amount >= script.minimal_non_dust() {
                client_outputs.push(Some(outputs.len() as u32));
                outputs.push(TxOut {
                    value: *amount,
                    script_pubkey: script,
                });
            } else {
                client_outputs.push(None);
            }
        }
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: terms.funding,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                // The size of the key-path signature it will carry (SIGHASH_DEFAULT: 64 bytes).
                witness: Witness::from_slice(&[[0u8; 64]]),
            }],
            output: outputs,
        };
        let fee_for = |tx: &Transaction| {
            terms
                .fee_rate
                .fee_vb(tx.vsize() as u64)
                .unwrap_or(Amount::MAX_MONEY)
        };
        tx.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: terms.lsp_script.clone(),
        });
        let with_lsp = fee_for(&tx);
        let remainder = available
            .checked_sub(paid)
            .and_then(|r| r.checked_sub(with_lsp));
        let lsp_output = match remainder {
            Some(r) if r >= terms.lsp_script.minimal_non_dust() => {
                tx.output.last_mut().expect("pushed above").value = r;
                Some(tx.output.len() as u32 - 1)
            }
            _ => {
                tx.output.pop();
                let needed = paid.checked_add(fee_for(&tx)).unwrap_or(Amount::MAX_MONEY);
                if needed > available {
                    return Err(CloseError::Insufficient { needed, available });
                }
                None
            }
        };
        tx.input[0].witness = Witness::new();
        let out: Amount = tx.output.iter().map(|o| o.value).sum();
        Ok(CloseTx {
            fee: available - out,
            tx,
            spent,
            client_outputs,
            successor_output,
            lsp_output,
        })
    }
}

/// Checks a rotation's successor against the clients' amounts, marks the rolled clients in
/// `rolled`, and returns the sum of their amounts.
fn check_successor(
    successor: &Successor,
    clients: &[Amount],
    rolled: &mut [bool],
) -> Result<Amount, CloseError> {
    let bad = |why: String| Err(CloseError::BadSuccessor(why));
    if !successor.output.script_pubkey.is_p2tr() {
        return bad("its funding output is not P2TR".into());
    }
    if successor.output.value < successor.output.script_pubkey.minimal_non_dust() {
        return bad(format!(
            "its funding output of {} is dust",
            successor.output.value
        ));
    }
    let mut into = Amount::ZERO;
    let mut last: Option<ClientId> = None;
    for c in &successor.rolled {
        if last.is_some_and(|l| l >= *c) {
            return bad("rolled clients are not strictly ascending".into());
        }
        last = Some(*c);
        let Some(amount) = clients.get(c.0 as usize) else {
            return bad(format!("rolls client {}, which is not in the factory", c.0));
        };
        rolled[c.0 as usize] = true;
        into = into.checked_add(*amount).unwrap_or(Amount::MAX_MONEY);
    }
    if successor.output.value < into {
        return bad(format!(
            "its funding output of {} is less than the {into} rolled into it",
            successor.output.value
        ));
    }
    Ok(into)
}

/// What a client's own records say a close of its factory must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientExpectation {
    /// The client's position.
    pub client: ClientId,
    /// The funding outpoint it watches.
    pub funding: OutPoint,
    /// What it is owed ([`Factory::client_close_amount`] of its latest balances).
    pub owed: Amount,
    /// The least fee rate it accepts.
    pub min_fee_rate: FeeRate,
    /// For a client that moves into the next factory of a rotation: that factory's funding
    /// output, which the client has checked (its exit path there signed and verified, its
    /// opening balance there equal to `owed`). `None`: the client is paid out.
    pub successor: Option<TxOut>,
}

/// One party's side of a cooperative close: its secret nonce, kept in memory only.
pub struct CloseSigner {
    key: TweakedAggregateKey,
    keypair: Keypair,
    close: CloseTx,
    sighash: [u8; 32],
    nonce: Option<SecNonce>,
    terms: CloseTerms,
    me: Signer,
}

impl std::fmt::Debug for CloseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloseSigner({})", self.close.tx.compute_txid())
    }
}

impl CloseSigner {
    /// A client's side: checks `terms` against its records (`expected`; the close it signed
    /// before, if any), then makes its public nonce.
    pub fn client(
        factory: &Factory,
        keypair: Keypair,
        terms: &CloseTerms,
        expected: &ClientExpectation,
        signed_before: Option<&CloseRecord>,
    ) -> Result<(Self, PubNonce), CloseError> {
        if terms.funding != expected.funding {
            return Err(CloseError::WrongFunding {
                expected: expected.funding,
                offered: terms.funding,
            });
        }
        let close = factory.close_tx(terms)?;
        let client = expected.client;
        let offered = *terms
            .clients
            .get(client.0 as usize)
            .ok_or(CloseError::NotAParty(Signer::Client(client)))?;
        if offered != expected.owed {
            return Err(CloseError::WrongAmount {
                client,
                expected: expected.owed,
                offered,
            });
        }
        let rolls = terms
            .successor
            .as_ref()
            .filter(|s| s.rolled.contains(&client));
        match (rolls, &expected.successor) {
            (None, None) => {}
            (Some(s), Some(want)) if s.output == *want => {}
            _ => return Err(CloseError::WrongSuccessor { client }),
        }
        if terms.fee_rate < expected.min_fee_rate {
            return Err(CloseError::FeeRateTooLow {
                min: expected.min_fee_rate,
                offered: terms.fee_rate,
            });
        }
        Self::start(
            factory,
            Signer::Client(client),
            keypair,
            terms,
            close,
            signed_before,
        )
    }

    /// The LSP's side of a close it proposed (it builds the terms from its own records).
    pub fn lsp(
        factory: &Factory,
        keypair: Keypair,
        terms: &CloseTerms,
        signed_before: Option<&CloseRecord>,
    ) -> Result<(Self, PubNonce), CloseError> {
        let close = factory.close_tx(terms)?;
        Self::start(factory, Signer::Lsp, keypair, terms, close, signed_before)
    }

    fn start(
        factory: &Factory,
        me: Signer,
        keypair: Keypair,
        terms: &CloseTerms,
        close: CloseTx,
        signed_before: Option<&CloseRecord>,
    ) -> Result<(Self, PubNonce), CloseError> {
        let txid = close.tx.compute_txid();
        if let Some(record) = signed_before {
            if record.txid != txid {
                return Err(CloseError::AlreadySigned {
                    signed: record.txid,
                });
            }
        }
        if factory.key_of(me) != bitcoin::PublicKey::new(keypair.public_key()) {
            return Err(CloseError::NotAParty(me));
        }
        let key = factory.funding_key()?;
        let sighash = Factory::sighash(&close.tx, &close.spent);
        let (nonce, public) = key.nonce_gen(&keypair, &sighash);
        Ok((
            CloseSigner {
                key,
                keypair,
                close,
                sighash,
                nonce: Some(nonce),
                terms: terms.clone(),
                me,
            },
            public,
        ))
    }

    /// The close this party is signing.
    pub fn close(&self) -> &CloseTx {
        &self.close
    }

    /// The record to persist before [`CloseSigner::sign`]'s partial signature leaves.
    pub fn record(&self) -> CloseRecord {
        CloseRecord {
            terms: self.terms.clone(),
            txid: self.close.tx.compute_txid(),
        }
    }

    /// The signed close: this close with `signature` (the aggregate the LSP sent), checked
    /// against the funding output's key for this close's signature hash.
    pub fn complete(
        &self,
        signature: &bitcoin::secp256k1::schnorr::Signature,
    ) -> Result<Transaction, CloseError> {
        let msg = bitcoin::secp256k1::Message::from_digest(self.sighash);
        crate::secp::SECP
            .verify_schnorr(signature, &msg, &self.key.output_key())
            .map_err(|_| CloseError::BadSignature)?;
        let mut tx = self.close.tx.clone();
        tx.input[0].witness = Witness::from_slice(&[signature.as_ref()]);
        Ok(tx)
    }

    /// The partial signature under the aggregated nonce (once: the secret nonce is consumed).
    pub fn sign(&mut self, agg: &AggNonce) -> Result<PartialSig, CloseError> {
        let nonce = self.nonce.take().ok_or(CloseError::OutOfOrder(
            "this close's nonce was already used",
        ))?;
        self.key
            .partial_sign(nonce, &self.keypair, agg, &self.sighash)
            .map_err(|e| CloseError::Musig(self.me, e))
    }
}

/// The LSP's coordination of a close: every party's nonce, then every partial signature.
#[derive(Debug)]
pub struct CloseCoordinator {
    parties: Vec<Signer>,
    keys: Vec<bitcoin::PublicKey>,
    key: TweakedAggregateKey,
    close: CloseTx,
    sighash: [u8; 32],
    nonces: Vec<Option<PubNonce>>,
    agg: Option<AggNonce>,
    partials: Vec<Option<PartialSig>>,
}

impl CloseCoordinator {
    /// Coordinates the close of `terms` (built and checked here).
    pub fn new(factory: &Factory, terms: &CloseTerms) -> Result<Self, CloseError> {
        let close = factory.close_tx(terms)?;
        let parties = parties(factory);
        let keys = parties.iter().map(|s| factory.key_of(*s)).collect();
        let sighash = Factory::sighash(&close.tx, &close.spent);
        Ok(CloseCoordinator {
            nonces: vec![None; parties.len()],
            partials: vec![None; parties.len()],
            parties,
            keys,
            key: factory.funding_key()?,
            close,
            sighash,
            agg: None,
        })
    }

    fn index(&self, signer: Signer) -> Result<usize, CloseError> {
        self.parties
            .iter()
            .position(|s| *s == signer)
            .ok_or(CloseError::NotAParty(signer))
    }

    /// The close being signed.
    pub fn close(&self) -> &CloseTx {
        &self.close
    }

    /// Parties whose nonce (before the aggregate) or partial signature (after) is missing.
    pub fn missing(&self) -> Vec<Signer> {
        let missing = |i: usize| match self.agg {
            None => self.nonces[i].is_none(),
            Some(_) => self.partials[i].is_none(),
        };
        (0..self.parties.len())
            .filter(|i| missing(*i))
            .map(|i| self.parties[i])
            .collect()
    }

    /// Takes `signer`'s public nonce; once every party's is in, the aggregated nonce to send
    /// them all.
    pub fn add_nonce(
        &mut self,
        signer: Signer,
        nonce: PubNonce,
    ) -> Result<Option<AggNonce>, CloseError> {
        let i = self.index(signer)?;
        if self.agg.is_some() {
            return Err(CloseError::OutOfOrder("the nonces are already aggregated"));
        }
        if self.nonces[i].is_some() {
            return Err(CloseError::Duplicate(signer, "nonce"));
        }
        ParsedNonce::parse(&nonce).map_err(|e| CloseError::Musig(signer, e))?;
        self.nonces[i] = Some(nonce);
        if self.nonces.iter().any(Option::is_none) {
            return Ok(None);
        }
        let parsed: Vec<ParsedNonce> = self
            .nonces
            .iter()
            .flatten()
            .map(ParsedNonce::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| CloseError::Musig(signer, e))?;
        let refs: Vec<&ParsedNonce> = parsed.iter().collect();
        let (agg, _) = self
            .key
            .open_session(&refs, &self.sighash)
            .map_err(|e| CloseError::Musig(signer, e))?;
        self.agg = Some(agg);
        Ok(Some(agg))
    }

    /// Takes `signer`'s partial signature (checked now: a bad one is refused and names its
    /// signer); once every party's is in, the signed close transaction.
    pub fn add_partial(
        &mut self,
        signer: Signer,
        partial: PartialSig,
    ) -> Result<Option<Transaction>, CloseError> {
        let i = self.index(signer)?;
        let agg = self.agg.ok_or(CloseError::OutOfOrder(
            "partial signature before every nonce",
        ))?;
        if self.partials[i].is_some() {
            return Err(CloseError::Duplicate(signer, "partial signature"));
        }
        let nonce = self.nonces[i].expect("every nonce is in once aggregated");
        let ok = self
            .key
            .partial_verify(&partial, &nonce, &self.keys[i], &agg, &self.sighash)
            .map_err(|e| CloseError::Musig(signer, e))?;
        if !ok {
            return Err(CloseError::BadPartial(signer));
        }
        self.partials[i] = Some(partial);
        if self.partials.iter().any(Option::is_none) {
            return Ok(None);
        }
        let partials: Vec<PartialSig> = self.partials.iter().flatten().copied().collect();
        let sig = self
            .key
            .aggregate(&agg, &self.sighash, &partials)
            .map_err(|e| CloseError::Musig(signer, e))?;
        let mut tx = self.close.tx.clone();
        tx.input[0].witness = Witness::from_slice(&[sig.as_ref()]);
        Ok(Some(tx))
    }
}
