//! Partial cooperative close: some clients are absent, so the funding output cannot be spent by
//! its key path (it needs everyone). Instead the tree is published only as far down as the
//! absent clients make necessary, and every output whose signers are all present is spent by
//! its key path in one transaction that pays each present client its balance and the LSP the
//! rest.
//!
//! The plan ([`Factory::partial_close_plan`]) is a pure function of the absent set: from the
//! root down, a node whose clients are all present is closed whole (its `NodeInput` output is an
//! input of the close, signed by the LSP and its clients); a node with an absent client is
//! published (its kickoff, and its state at the current version) and its children with a present
//! client are visited in turn, while a child whose clients are all absent is left as it is: its
//! output stays on chain, and its clients exit from it alone (or are paid at T) exactly as they
//! would have. A leaf with both is published too, and the present clients' channels (and the
//! channels they bought and merged into the leaf) are inputs of the close, each signed by the LSP
//! and its client; their fee coins are then their own outputs on chain, so what such a client is
//! paid leaves its fee coin out ([`PartialPlan::fee_coin_in_close`]). The leaf's stock stays
//! with its hashlock and the LSP's delayed sweep.
//!
//! The close transaction: version 2, the plan's inputs in order (sequence `0xfffffffd`), one
//! output per present client in client order to its payout script (dust to the fee, as in the
//! full close), then the LSP's remainder; its fee is the terms' rate on its signed size (one
//! 64-byte signature per input). Each input is one MuSig2 session among its signers over the
//! BIP-341 key-path sighash of that input (which commits to every input and output), so each
//! client signs once (or once per bought channel) and checks, as in the full close, that it is
//! paid exactly what its records say. The published tree transactions are the pre-signed ones
//! of the current version; the close can be broadcast once they confirm (after their relative
//! delays), well before T, when the timeouts of the closed outputs would compete with it.

use std::collections::HashMap;

use bitcoin::absolute::LockTime;
use bitcoin::key::Keypair;
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::{
    transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use serde::{Deserialize, Serialize};

use super::{CloseError, CloseRecord, CloseTerms};
use crate::factory::{Factory, Signer, Slot};
use crate::ledger::Version;
use crate::musig::{AggNonce, ParsedNonce, PartialSig, PubNonce, SecNonce, TweakedAggregateKey};
use crate::tree::NodeKind;
use crate::types::{ClientId, FactoryId, NodeId};
use crate::TxKind;

/// The terms of a partial cooperative close, as the LSP proposes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialCloseTerms {
    /// The factory.
    pub factory: FactoryId,
    /// Its funding outpoint.
    pub funding: OutPoint,
    /// What each present client is paid, by position; `None` for an absent client.
    pub clients: Vec<Option<Amount>>,
    /// Where the LSP's remainder goes.
    pub lsp_script: ScriptBuf,
    /// The close's fee rate.
    pub fee_rate: FeeRate,
}

impl PartialCloseTerms {
    /// The absent clients.
    pub fn absent(&self) -> Vec<ClientId> {
        (0..self.clients.len() as u32)
            .filter(|c| self.clients[*c as usize].is_none())
            .map(ClientId)
            .collect()
    }
}

/// Which tree transactions a partial close publishes and which outputs it spends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialPlan {
    /// Tree transactions to publish first, parents before children.
    pub published: Vec<TxKind>,
    /// The outputs the close spends, in input order.
    pub inputs: Vec<Slot>,
}

impl PartialPlan {
    /// Whether `client`'s fee coin is inside the close's inputs (its node is closed whole), so
    /// that the close pays it back; otherwise it is the client's own output on chain.
    pub fn fee_coin_in_close(&self, factory: &Factory, client: ClientId) -> bool {
        self.inputs.iter().any(|s| match s {
            Slot::NodeInput(n) => factory.tree().node(*n).clients.contains(&client.0),
            _ => false,
        })
    }
}

/// One input of a partial close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialInput {
    /// The output spent.
    pub slot: Slot,
    /// Its value and script.
    pub spent: TxOut,
    /// Who signs it (the LSP first).
    pub signers: Vec<Signer>,
}

/// A partial close built from its terms, not yet signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialClose {
    /// What it publishes and spends.
    pub plan: PartialPlan,
    /// The published tree transactions, unsigned, in `plan.published` order (their txids are
    /// those of the signed ones).
    pub published: Vec<Transaction>,
    /// The close transaction (empty witnesses).
    pub tx: Transaction,
    /// Its inputs.
    pub inputs: Vec<PartialInput>,
    /// Each client's output index: `None` for an absent client or an amount below dust.
    pub client_outputs: Vec<Option<u32>>,
    /// The LSP's output index, or `None` for a remainder below dust.
    pub lsp_output: Option<u32>,
    /// The close's fee.
    pub fee: Amount,
}

impl PartialClose {
    /// The close's signed size: one 64-byte key-path signature per input.
    pub fn close_vsize(&self) -> u64 {
        let mut tx = self.tx.clone();
        for input in &mut tx.input {
            input.witness = Witness::from_slice(&[[0u8; 64]]);
        }
        tx.vsize() as u64
    }

    /// The published tree transactions' signed size (each a one-input key-path spend).
    pub fn published_vsize(&self) -> u64 {
        self.published
            .iter()
            .map(|t| t.base_size() as u64 + 17)
            .sum()
    }

    /// The key-path sighash of input `i`.
    fn sighash(&self, i: usize) -> [u8; 32] {
        let prevouts: Vec<TxOut> = self.inputs.iter().map(|x| x.spent.clone()).collect();
        SighashCache::new(&self.tx)
            .taproot_key_spend_signature_hash(i, &Prevouts::All(&prevouts), TapSighashType::Default)
            .map(bitcoin::hashes::Hash::to_byte_array)
            .unwrap_or([0u8; 32])
    }
}

impl Factory {
    /// The plan of a partial close with `absent` clients (see the module's rules).
    pub fn partial_close_plan(&self, absent: &[ClientId]) -> Result<PartialPlan, CloseError> {
        let n = self.params().clients.len();
        let mut is_absent = vec![false; n];
        for c in absent {
            *is_absent
                .get_mut(c.0 as usize)
                .ok_or(CloseError::NotAParty(Signer::Client(*c)))? = true;
        }
        let present_in = |node: NodeId| {
            self.tree()
                .node(node)
                .client_ids()
                .filter(|c| !is_absent[c.0 as usize])
                .count()
        };
        let all_present = |node: NodeId| {
            let nd = self.tree().node(node);
            present_in(node) == (nd.clients.end - nd.clients.start) as usize
        };
        let root = NodeId(0);
        if present_in(root) == 0 {
            return Err(CloseError::NobodyPresent);
        }
        let mut plan = PartialPlan {
            published: Vec::new(),
            inputs: Vec::new(),
        };
        let mut stack = vec![root];
        while let Some(node) = stack.pop() {
            if all_present(node) {
                plan.inputs.push(Slot::NodeInput(node));
                continue;
            }
            let nd = self.tree().node(node);
            plan.published.push(TxKind::Kickoff(node));
            if nd.has_state() {
                plan.published.push(TxKind::State(node));
            }
            if nd.kind == NodeKind::Leaf {
                for c in nd.client_ids().filter(|c| !is_absent[c.0 as usize]) {
                    plan.inputs.push(Slot::Channel(c));
                }
                continue;
            }
            // Children in tree order: pushed reversed onto the stack.
            for child in nd.children.iter().rev() {
                if present_in(*child) > 0 {
                    stack.push(*child);
                }
            }
        }
        Ok(plan)
    }

    /// The partial close of `terms` at version `v` (see the module's rules), checked against
    /// this factory.
    pub fn partial_close(
        &self,
        terms: &PartialCloseTerms,
        v: &Version,
    ) -> Result<PartialClose, CloseError> {
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
        let mut plan = self.partial_close_plan(&terms.absent())?;
        // The channels present clients bought and merged into a published leaf are theirs too.
        let mut bought = Vec::new();
        for slot in &plan.inputs {
            if let Slot::Channel(c) = slot {
                bought.extend(
                    v.sales_of(*c)
                        .into_iter()
                        .filter(|j| v.sales[*j as usize].merged)
                        .map(Slot::Sold),
                );
            }
        }
        plan.inputs.extend(bought);
        let built = self.build_set(&plan.published, terms.funding, v)?;
        let published: Vec<Transaction> =
            plan.published.iter().map(|k| built[k].tx.clone()).collect();
        let txids: HashMap<TxKind, bitcoin::Txid> = built
            .iter()
            .map(|(k, b)| (*k, b.tx.compute_txid()))
            .collect();
        let amounts = self.amounts(v)?;
        let mut inputs = Vec::with_capacity(plan.inputs.len());
        for slot in &plan.inputs {
            let outpoint = self
                .slot_outpoint(*slot, terms.funding, v, |k| txids.get(&k).copied())
                .ok_or(CloseError::OutOfOrder(
                    "an input of the plan is not published",
                ))?;
            inputs.push((
                outpoint,
                PartialInput {
                    slot: *slot,
                    spent: TxOut {
                        value: amounts.value(self, *slot),
                        script_pubkey: self.script_pubkey_at(*slot, v)?,
                    },
                    signers: self.signers(*slot, v),
                },
            ));
        }
        let available = inputs
            .iter()
            .try_fold(Amount::ZERO, |a, (_, i)| a.checked_add(i.spent.value))
            .unwrap_or(Amount::MAX_MONEY);
        let paid = terms
            .clients
            .iter()
            .flatten()
            .try_fold(Amount::ZERO, |a, b| a.checked_add(*b))
            .filter(|p| *p <= available)
            .ok_or(CloseError::Insufficient {
                needed: Amount::MAX_MONEY,
                available,
            })?;
        let mut tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|(op, _)| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::from_slice(&[[0u8; 64]]),
                })
                .collect(),
            output: Vec::new(),
        };
        let mut client_outputs = Vec::with_capacity(n);
        for (c, amount) in terms.clients.iter().enumerate() {
            let script = self.client_payout_script(ClientId(c as u32));
            match amount {
                Some(a) if *a >= script.minimal_non_dust() => {
                    client_outputs.push(Some(tx.output.len() as u32));
                    tx.output.push(TxOut {
                        value: *a,
                        script_pubkey: script,
                    });
                }
                _ => client_outputs.push(None),
            }
        }
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
        let remainder = available
            .checked_sub(paid)
            .and_then(|r| r.checked_sub(fee_for(&tx)));
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
        for input in &mut tx.input {
            input.witness = Witness::new();
        }
        let out: Amount = tx.output.iter().map(|o| o.value).sum();
        Ok(PartialClose {
            plan,
            published,
            fee: available - out,
            tx,
            inputs: inputs.into_iter().map(|(_, i)| i).collect(),
            client_outputs,
            lsp_output,
        })
    }
}

/// What a client's records say a partial close must pay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialExpectation {
    /// The client's position.
    pub client: ClientId,
    /// The funding outpoint it watches.
    pub funding: OutPoint,
    /// Its balances (msat) in its channel and the channels it bought, as its records say.
    pub balances_msat: Vec<u64>,
    /// The least fee rate it accepts.
    pub min_fee_rate: FeeRate,
}

/// One party's side of a partial close: a secret nonce per input it signs, in memory only.
pub struct PartialCloseSigner {
    keypair: Keypair,
    me: Signer,
    close: PartialClose,
    /// (input, key, sighash, secret nonce) for each input this party signs.
    sessions: Vec<(usize, TweakedAggregateKey, [u8; 32], Option<SecNonce>)>,
    record: CloseRecord,
}

impl std::fmt::Debug for PartialCloseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartialCloseSigner({})", self.close.tx.compute_txid())
    }
}

impl PartialCloseSigner {
    /// A present client's side: checks `terms` against its records, then makes one public nonce
    /// per input it signs.
    pub fn client(
        factory: &Factory,
        keypair: Keypair,
        terms: &PartialCloseTerms,
        v: &Version,
        expected: &PartialExpectation,
        signed_before: Option<&CloseRecord>,
    ) -> Result<(Self, Vec<(u32, PubNonce)>), CloseError> {
        let client = expected.client;
        if terms.funding != expected.funding {
            return Err(CloseError::WrongFunding {
                expected: expected.funding,
                offered: terms.funding,
            });
        }
        let close = factory.partial_close(terms, v)?;
        let offered = terms
            .clients
            .get(client.0 as usize)
            .copied()
            .flatten()
            .ok_or(CloseError::NotAParty(Signer::Client(client)))?;
        let sat: u64 = expected.balances_msat.iter().map(|m| m / 1000).sum();
        let mut owed = Amount::from_sat(sat);
        if close.plan.fee_coin_in_close(factory, client) {
            owed += factory.params().config.client_fee_coin;
        }
        if offered != owed {
            return Err(CloseError::WrongAmount {
                client,
                expected: owed,
                offered,
            });
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
            (terms, v),
            close,
            signed_before,
        )
    }

    /// The LSP's side of a partial close it proposed.
    pub fn lsp(
        factory: &Factory,
        keypair: Keypair,
        terms: &PartialCloseTerms,
        v: &Version,
        signed_before: Option<&CloseRecord>,
    ) -> Result<(Self, Vec<(u32, PubNonce)>), CloseError> {
        let close = factory.partial_close(terms, v)?;
        Self::start(
            factory,
            Signer::Lsp,
            keypair,
            (terms, v),
            close,
            signed_before,
        )
    }

    fn start(
        factory: &Factory,
        me: Signer,
        keypair: Keypair,
        (terms, v): (&PartialCloseTerms, &Version),
        close: PartialClose,
        signed_before: Option<&CloseRecord>,
    ) -> Result<(Self, Vec<(u32, PubNonce)>), CloseError> {
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
        let mut sessions = Vec::new();
        let mut nonces = Vec::new();
        for (i, input) in close.inputs.iter().enumerate() {
            if !input.signers.contains(&me) {
                continue;
            }
            let key = factory.signing_key_at(input.slot, v)?;
            let sighash = close.sighash(i);
            let (nonce, public) = key.nonce_gen(&keypair, &sighash);
            nonces.push((i as u32, public));
            sessions.push((i, key, sighash, Some(nonce)));
        }
        if sessions.is_empty() {
            return Err(CloseError::NotAParty(me));
        }
        let record = CloseRecord {
            terms: CloseTerms {
                factory: terms.factory,
                funding: terms.funding,
                clients: terms
                    .clients
                    .iter()
                    .map(|a| a.unwrap_or(Amount::ZERO))
                    .collect(),
                lsp_script: terms.lsp_script.clone(),
                fee_rate: terms.fee_rate,
                successor: None,
            },
            txid,
        };
        Ok((
            PartialCloseSigner {
                keypair,
                me,
                close,
                sessions,
                record,
            },
            nonces,
        ))
    }

    /// The partial close this party is signing.
    pub fn close(&self) -> &PartialClose {
        &self.close
    }

    /// The record to persist before [`PartialCloseSigner::sign`]'s partial signatures leave.
    pub fn record(&self) -> CloseRecord {
        self.record.clone()
    }

    /// The partial signatures of the inputs this party signs, under their aggregated nonces
    /// (once: the secret nonces are consumed).
    pub fn sign(&mut self, aggs: &[(u32, AggNonce)]) -> Result<Vec<(u32, PartialSig)>, CloseError> {
        let mut out = Vec::with_capacity(self.sessions.len());
        for (i, _, _, nonce) in &self.sessions {
            if nonce.is_none() {
                return Err(CloseError::OutOfOrder(
                    "this close's nonces were already used",
                ));
            }
            if !aggs.iter().any(|(j, _)| *j as usize == *i) {
                return Err(CloseError::OutOfOrder("an aggregated nonce is missing"));
            }
        }
        for (i, key, sighash, nonce) in &mut self.sessions {
            let agg = aggs
                .iter()
                .find(|(j, _)| *j as usize == *i)
                .map(|(_, a)| *a)
                .expect("checked above");
            let nonce = nonce.take().expect("checked above");
            let partial = key
                .partial_sign(nonce, &self.keypair, &agg, sighash)
                .map_err(|e| CloseError::Musig(self.me, e))?;
            out.push((*i as u32, partial));
        }
        Ok(out)
    }
}

/// One input's MuSig2 session at the coordinator.
#[derive(Debug)]
struct InputSession {
    signers: Vec<Signer>,
    keys: Vec<bitcoin::PublicKey>,
    key: TweakedAggregateKey,
    sighash: [u8; 32],
    nonces: Vec<Option<PubNonce>>,
    agg: Option<AggNonce>,
    partials: Vec<Option<PartialSig>>,
}

/// The LSP's coordination of a partial close: per input, its signers' nonces, then their
/// partial signatures.
#[derive(Debug)]
pub struct PartialCloseCoordinator {
    close: PartialClose,
    inputs: Vec<InputSession>,
}

impl PartialCloseCoordinator {
    /// Coordinates the partial close of `terms` at version `v` (built and checked here).
    pub fn new(
        factory: &Factory,
        terms: &PartialCloseTerms,
        v: &Version,
    ) -> Result<Self, CloseError> {
        let close = factory.partial_close(terms, v)?;
        let inputs = close
            .inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                Ok(InputSession {
                    keys: input.signers.iter().map(|s| factory.key_of(*s)).collect(),
                    key: factory.signing_key_at(input.slot, v)?,
                    sighash: close.sighash(i),
                    nonces: vec![None; input.signers.len()],
                    partials: vec![None; input.signers.len()],
                    signers: input.signers.clone(),
                    agg: None,
                })
            })
            .collect::<Result<_, CloseError>>()?;
        Ok(PartialCloseCoordinator { close, inputs })
    }

    /// The close being signed.
    pub fn close(&self) -> &PartialClose {
        &self.close
    }

    fn slot(&self, signer: Signer, input: u32) -> Result<(usize, usize), CloseError> {
        let i = input as usize;
        let at = self
            .inputs
            .get(i)
            .and_then(|s| s.signers.iter().position(|x| *x == signer))
            .ok_or(CloseError::NotAParty(signer))?;
        Ok((i, at))
    }

    /// Takes `signer`'s public nonces (one per input it signs, all at once); returns the
    /// aggregated nonces of the inputs this completes.
    pub fn add_nonces(
        &mut self,
        signer: Signer,
        nonces: &[(u32, PubNonce)],
    ) -> Result<Vec<(u32, AggNonce)>, CloseError> {
        let mine: Vec<usize> = (0..self.inputs.len())
            .filter(|i| self.inputs[*i].signers.contains(&signer))
            .collect();
        if mine.is_empty() {
            return Err(CloseError::NotAParty(signer));
        }
        let mut given: Vec<usize> = nonces.iter().map(|(i, _)| *i as usize).collect();
        given.sort_unstable();
        if given != mine {
            return Err(CloseError::OutOfOrder(
                "one nonce per input the signer signs is expected, no more",
            ));
        }
        for (input, nonce) in nonces {
            let (i, at) = self.slot(signer, *input)?;
            let s = &self.inputs[i];
            if s.agg.is_some() {
                return Err(CloseError::OutOfOrder("the nonces are already aggregated"));
            }
            if s.nonces[at].is_some() {
                return Err(CloseError::Duplicate(signer, "nonce"));
            }
            ParsedNonce::parse(nonce).map_err(|e| CloseError::Musig(signer, e))?;
        }
        let mut done = Vec::new();
        for (input, nonce) in nonces {
            let (i, at) = self.slot(signer, *input)?;
            let s = &mut self.inputs[i];
            s.nonces[at] = Some(*nonce);
            if s.nonces.iter().any(Option::is_none) {
                continue;
            }
            let parsed: Vec<ParsedNonce> = s
                .nonces
                .iter()
                .flatten()
                .map(ParsedNonce::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| CloseError::Musig(signer, e))?;
            let refs: Vec<&ParsedNonce> = parsed.iter().collect();
            let (agg, _) = s
                .key
                .open_session(&refs, &s.sighash)
                .map_err(|e| CloseError::Musig(signer, e))?;
            s.agg = Some(agg);
            done.push((*input, agg));
        }
        Ok(done)
    }

    /// The aggregated nonces `signer` needs to sign, once all of them are known.
    pub fn aggs_for(&self, signer: Signer) -> Option<Vec<(u32, AggNonce)>> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.signers.contains(&signer))
            .map(|(i, s)| s.agg.map(|a| (i as u32, a)))
            .collect()
    }

    /// Parties still to send their nonces (before every input is aggregated) or partial
    /// signatures (after).
    pub fn missing(&self) -> Vec<Signer> {
        let aggregated = self.inputs.iter().all(|s| s.agg.is_some());
        let mut out: Vec<Signer> = Vec::new();
        for s in &self.inputs {
            for (at, signer) in s.signers.iter().enumerate() {
                let gap = if aggregated {
                    s.partials[at].is_none()
                } else {
                    s.nonces[at].is_none()
                };
                if gap && !out.contains(signer) {
                    out.push(*signer);
                }
            }
        }
        out
    }

    /// Takes `signer`'s partial signatures (each checked now: a bad one is refused and names
    /// its signer); once every input is signed, the signed close transaction.
    pub fn add_partials(
        &mut self,
        signer: Signer,
        partials: &[(u32, PartialSig)],
    ) -> Result<Option<Transaction>, CloseError> {
        for (input, partial) in partials {
            let (i, at) = self.slot(signer, *input)?;
            let s = &self.inputs[i];
            let agg = s.agg.ok_or(CloseError::OutOfOrder(
                "partial signature before every nonce of its input",
            ))?;
            if s.partials[at].is_some() {
                return Err(CloseError::Duplicate(signer, "partial signature"));
            }
            let nonce = s.nonces[at].expect("every nonce is in once aggregated");
            let ok = s
                .key
                .partial_verify(partial, &nonce, &s.keys[at], &agg, &s.sighash)
                .map_err(|e| CloseError::Musig(signer, e))?;
            if !ok {
                return Err(CloseError::BadPartial(signer));
            }
        }
        for (input, partial) in partials {
            let (i, at) = self.slot(signer, *input)?;
            self.inputs[i].partials[at] = Some(*partial);
        }
        if self
            .inputs
            .iter()
            .any(|s| s.partials.iter().any(Option::is_none))
        {
            return Ok(None);
        }
        let mut tx = self.close.tx.clone();
        for (i, s) in self.inputs.iter().enumerate() {
            let agg = s.agg.expect("signed inputs are aggregated");
            let partials: Vec<PartialSig> = s.partials.iter().flatten().copied().collect();
            let sig = s
                .key
                .aggregate(&agg, &s.sighash, &partials)
                .map_err(|e| CloseError::Musig(signer, e))?;
            tx.input[i].witness = Witness::from_slice(&[sig.as_ref()]);
        }
        Ok(Some(tx))
    }
}
