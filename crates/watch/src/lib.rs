//! Watch and respond: scan each new block for a superseded factory state or a revoked channel
//! commitment, and answer with the newest state (it wins because its delay is shorter) or a
//! justice transaction, and punish a superseded liquidity-stock output that confirmed anyway.
//! When the other side closes a channel with its latest commitment, claim what is ours in it
//! (to_remote, HTLCs by preimage or timeout), and report how each HTLC output was resolved (with
//! the preimage when a spend revealed it).

use std::collections::BTreeMap;

use bitcoin::{FeeRate, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use superscalar_chain::{Chain, ChainError, TxStatus};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::channel::state::Channel;
use superscalar_core::TxKind;

/// What the watcher did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A kickoff on a watched path is on chain: our newest state for its node was broadcast (it
    /// confirms before any older state because its relative delay is shorter).
    NewestState {
        /// The kickoff seen.
        kickoff: Txid,
        /// Our newest state transaction.
        state: Txid,
    },
    /// A revoked commitment of a channel was published; our justice transaction was broadcast.
    Justice {
        /// Index of the channel (as given to the watcher).
        channel: usize,
        /// The revoked commitment.
        revoked: Txid,
        /// Our justice transaction.
        justice: Txid,
    },
    /// A superseded liquidity-stock output appeared on chain and was punished.
    Punished {
        /// The punished output.
        stock: OutPoint,
        /// The punishment transaction.
        punishment: Txid,
    },
    /// A sale of our pseudo-Spilman chain was broadcast as soon as the output it spends appeared:
    /// the LSP's CSV sweep of that output can no longer take the channel we bought.
    Sale {
        /// The PS-factory output spent.
        input: OutPoint,
        /// The sale transaction.
        sale: Txid,
    },
    /// A commitment spent a watched channel's funding output: the channel is closed on chain and
    /// takes no more updates (a commitment the other side revokes later is still punished).
    ChannelClosed {
        /// Index of the channel (as given to the watcher).
        channel: usize,
        /// The commitment on chain.
        commitment: Txid,
        /// The payment hashes of the HTLC outputs it holds (an HTLC not among them can never be
        /// claimed on chain).
        htlcs: Vec<[u8; 32]>,
    },
    /// Another state than our newest one spent a watched kickoff's output and confirmed: our
    /// newest state can no longer win there. If it is an update this party abandoned, exit
    /// through it ([`superscalar_core::advance::FactoryState::abandoned_exit_paths`]); otherwise
    /// it is an old state that beat a late answer.
    OtherState {
        /// The kickoff whose output it spent.
        kickoff: Txid,
        /// The state that confirmed.
        state: Txid,
    },
    /// The other side closed a channel with a commitment it has not revoked: one of our outputs
    /// in it (to_remote, or an HTLC by preimage or by timeout) was claimed.
    Claimed {
        /// Index of the channel (as given to the watcher).
        channel: usize,
        /// The commitment on chain.
        commitment: Txid,
        /// Our claim.
        claim: Txid,
    },
    /// An HTLC output of a closed channel's commitment was spent in a block: with its preimage
    /// (revealed in the spend) or without (a timeout, or a justice transaction). Either way it is
    /// settled on chain: a payment forwarded through it can be settled or failed upstream.
    HtlcResolved {
        /// Index of the channel (as given to the watcher).
        channel: usize,
        /// The HTLC's payment hash.
        payment_hash: [u8; 32],
        /// Whether we offered it.
        offered: bool,
        /// The preimage, when the spend revealed it.
        preimage: Option<[u8; 32]>,
    },
    /// An answer was refused by the chain backend. It stays pending: it is rebuilt and retried
    /// at every poll until it confirms or can no longer be made, and the scan goes on.
    AnswerFailed {
        /// The refused transaction.
        tx: Txid,
        /// What it answered.
        answer: Answer,
        /// Why it was refused.
        reason: String,
    },
}

/// What a pending answer of the watcher answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A kickoff: our newest state of its node.
    NewestState,
    /// A revoked commitment (or its second stage): justice.
    Justice,
    /// A superseded stock output: its punishment.
    Punishment,
    /// A PS-factory output of our sale chain: the next sale.
    Sale,
    /// A commitment the other side has not revoked: a claim of our output in it.
    Claim,
}

/// A commitment of a watched channel seen on chain (revoked already, possibly later, or never), with
/// every output that the revocation key or our payment key may spend: its own and those of the
/// transactions spending them.
#[derive(Debug, Clone)]
struct SeenCommitment {
    channel: usize,
    commitment: Transaction,
    outputs: Vec<(OutPoint, TxOut)>,
}

/// A watcher over exit paths and channels, polled after each block. It never starts an exit
/// itself: it only answers a published kickoff with the newest state of that node, so that
/// siblings stay off chain, and a revoked commitment with a justice transaction.
#[derive(Debug)]
pub struct Watcher {
    /// (kickoff, newest state) pairs of every DW node on the watched paths.
    nodes: Vec<(SignedTx, SignedTx)>,
    channels: Vec<(Channel, OutPoint)>,
    punishments: Vec<Transaction>,
    /// Our pseudo-Spilman sale chain, in order.
    sales: Vec<SignedTx>,
    /// Revoked commitments seen, answered at every poll over what is left of them.
    commitments: Vec<SeenCommitment>,
    /// Other states seen spending a watched kickoff's output (kickoff, state), reported once.
    other_states: Vec<(Txid, Txid)>,
    /// Preimages of HTLCs we received (given, or revealed on chain): they claim HTLC outputs of
    /// the other side's commitments.
    preimages: BTreeMap<[u8; 32], [u8; 32]>,
    destination: ScriptBuf,
    fee_rate: FeeRate,
    next_height: u32,
}

fn relative_delay(tx: &bitcoin::Transaction) -> u32 {
    let seq = tx.input[0].sequence;
    if seq.is_relative_lock_time() && seq.is_height_locked() {
        seq.0 & 0xffff
    } else {
        0
    }
}

impl Watcher {
    /// Watch `paths` (our newest exit paths, kickoff then state per node) and `channels` (with
    /// their funding outpoints) from block `from_height`; justice transactions pay `destination`.
    pub fn new(
        paths: Vec<Vec<SignedTx>>,
        channels: Vec<(Channel, OutPoint)>,
        destination: ScriptBuf,
        fee_rate: FeeRate,
        from_height: u32,
    ) -> Self {
        let mut nodes: Vec<(SignedTx, SignedTx)> = Vec::new();
        for path in paths {
            for pair in path.windows(2) {
                let (k, s) = (&pair[0], &pair[1]);
                let is_pair = matches!(k.kind, TxKind::Kickoff(a) if s.kind == TxKind::State(a));
                if is_pair && !nodes.iter().any(|(nk, _)| nk.kind == k.kind) {
                    nodes.push((k.clone(), s.clone()));
                }
            }
        }
        Watcher {
            nodes,
            channels,
            punishments: Vec::new(),
            sales: Vec::new(),
            commitments: Vec::new(),
            other_states: Vec::new(),
            preimages: BTreeMap::new(),
            destination,
            fee_rate,
            next_height: from_height,
        }
    }

    /// Also punish superseded stock outputs with these completed punishment transactions
    /// ([`superscalar_core::advance::FactoryState::armed_punishments`]).
    pub fn with_punishments(mut self, punishments: Vec<Transaction>) -> Self {
        self.punishments = punishments;
        self
    }

    /// Replace the armed punishments (after an update revealed more secrets).
    pub fn set_punishments(&mut self, punishments: Vec<Transaction>) {
        self.punishments = punishments;
    }

    /// Also publish our pseudo-Spilman sale chain (the `TxKind::Sale` transactions of
    /// [`superscalar_core::advance::FactoryState::exit_path`]; others are ignored): each sale is
    /// broadcast as soon as the output it spends is on chain, or in the mempool when TRUC rules
    /// allow a child there.
    pub fn with_sales(mut self, sales: Vec<SignedTx>) -> Self {
        self.set_sales(sales);
        self
    }

    /// Replace the sale chain (after a newer sale).
    pub fn set_sales(&mut self, sales: Vec<SignedTx>) {
        self.sales = sales
            .into_iter()
            .filter(|s| matches!(s.kind, TxKind::Sale(_)))
            .collect();
    }

    /// Replace the watched channels with their newer states (after each update round, so that
    /// the newest revocation secrets are known), in the same order as given before.
    pub fn set_channels(&mut self, channels: Vec<(Channel, OutPoint)>) {
        self.commitments.retain(|r| r.channel < channels.len());
        self.channels = channels;
    }

    /// Add the preimages of HTLCs we received (by payment hash): an HTLC output of a commitment
    /// of the other side is claimed with its preimage.
    pub fn add_preimages(&mut self, preimages: impl IntoIterator<Item = ([u8; 32], [u8; 32])>) {
        self.preimages.extend(preimages);
    }

    /// The height of the next block to scan.
    pub fn next_height(&self) -> u32 {
        self.next_height
    }

    /// Record what one block holds: revoked commitments of our channels and the transactions
    /// spending their outputs (second stages), and other states spending a watched kickoff's
    /// output. Reads nothing and sends nothing; returns the other states seen.
    fn scan(&mut self, block: &bitcoin::Block) -> Vec<WatchEvent> {
        let mut seen = Vec::new();
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            for (kickoff, state) in &self.nodes {
                let input = state.tx.input[0].previous_output;
                if txid != state.tx.compute_txid()
                    && tx.input.iter().any(|i| i.previous_output == input)
                {
                    let kickoff = kickoff.tx.compute_txid();
                    self.other_states.push((kickoff, txid));
                    seen.push(WatchEvent::OtherState {
                        kickoff,
                        state: txid,
                    });
                }
            }
            for (i, (channel, funding)) in self.channels.iter().enumerate() {
                // Any of its funding outpoints: a revoked commitment may spend an older
                // outpoint of the channel (dual-state, retired) that a superseded state created.
                let spends_funding = tx.input.iter().any(|inp| {
                    inp.previous_output == *funding
                        || channel.has_funding_outpoint(&inp.previous_output)
                });
                // Every commitment is kept, revoked or not yet: the other side may revoke it
                // after it confirmed (a channel updated off chain once closed), and justice is
                // tried again whenever newer secrets arrive (`set_channels`).
                if spends_funding && !self.commitments.iter().any(|r| r.commitment == *tx) {
                    self.commitments.push(SeenCommitment {
                        channel: i,
                        commitment: tx.clone(),
                        outputs: outputs_of(tx, txid),
                    });
                    let htlcs = channel
                        .htlc_outputs(tx)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|h| h.htlc.payment_hash)
                        .collect();
                    seen.push(WatchEvent::ChannelClosed {
                        channel: i,
                        commitment: txid,
                        htlcs,
                    });
                }
            }
            for r in self.commitments.iter_mut() {
                // Second stages spend the revoked commitment itself.
                let cid = r.commitment.compute_txid();
                let spends = tx.input.iter().any(|inp| inp.previous_output.txid == cid);
                if spends && !r.outputs.iter().any(|(op, _)| op.txid == txid) {
                    r.outputs.extend(outputs_of(tx, txid));
                }
                if !spends {
                    continue;
                }
                let htlcs = self.channels[r.channel]
                    .0
                    .htlc_outputs(&r.commitment)
                    .unwrap_or_default();
                for input in tx.input.iter().filter(|i| i.previous_output.txid == cid) {
                    let Some(h) = htlcs.iter().find(|h| h.vout == input.previous_output.vout)
                    else {
                        continue;
                    };
                    let preimage = revealed_preimage(&input.witness, &h.htlc.payment_hash);
                    if let Some(p) = preimage {
                        if !h.htlc.offered {
                            self.preimages.insert(h.htlc.payment_hash, p);
                        }
                    }
                    seen.push(WatchEvent::HtlcResolved {
                        channel: r.channel,
                        payment_hash: h.htlc.payment_hash,
                        offered: h.htlc.offered,
                        preimage,
                    });
                }
            }
        }
        seen
    }

    /// Whether a child of `parent` may join the mempool under TRUC rules: `parent` is one of our
    /// transactions, waiting in the mempool, with every parent of its own confirmed.
    fn truc_child_allowed(&self, chain: &dyn Chain, parent: Txid) -> Result<bool, ChainError> {
        if chain.tx_status(&parent)? != TxStatus::InMempool {
            return Ok(false);
        }
        let known = self
            .sales
            .iter()
            .chain(self.nodes.iter().flat_map(|(k, s)| [k, s]))
            .find(|t| t.tx.compute_txid() == parent);
        let Some(known) = known else {
            return Ok(false);
        };
        for input in &known.tx.input {
            if !matches!(
                chain.tx_status(&input.previous_output.txid)?,
                TxStatus::Confirmed { .. }
            ) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Broadcast `tx` unless it is already known; a refusal is recorded, never returned.
    fn send(
        chain: &dyn Chain,
        tx: &Transaction,
        answer: Answer,
        done: WatchEvent,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), ChainError> {
        let txid = tx.compute_txid();
        if chain.tx_status(&txid)? != TxStatus::Unknown {
            return Ok(());
        }
        match chain.submit_transaction(tx) {
            Ok(_) => events.push(done),
            Err(e) => events.push(WatchEvent::AnswerFailed {
                tx: txid,
                answer,
                reason: e.to_string(),
            }),
        }
        Ok(())
    }

    /// React to everything up to the tip. Every block is scanned once and the scan always moves
    /// past it; answers are (re)built and sent afterwards, and one that is refused is reported
    /// as [`WatchEvent::AnswerFailed`] and tried again at the next poll. An error is returned
    /// only when the chain cannot be read; no block is skipped then.
    pub fn poll(&mut self, chain: &dyn Chain) -> Result<Vec<WatchEvent>, ChainError> {
        let mut events = Vec::new();
        let tip = chain.tip()?.height;
        while self.next_height <= tip {
            let Some(block) = chain.block_at(self.next_height)? else {
                break;
            };
            events.extend(self.scan(&block));
            self.next_height += 1;
        }
        // Revoked commitments: take what is left of them, their second stages included.
        for r in &self.commitments {
            let mut unspent = Vec::new();
            for (op, out) in &r.outputs {
                if chain.get_utxo(op)?.is_some() {
                    unspent.push((*op, out.clone()));
                }
            }
            let (channel, _) = &self.channels[r.channel];
            if !channel.is_revoked_commitment(&r.commitment) {
                // Their latest commitment: what is ours in it.
                let commitment = r.commitment.compute_txid();
                let mut claims: Vec<Transaction> = channel
                    .claim_to_remote(&r.commitment, self.destination.clone(), self.fee_rate)
                    .into_iter()
                    .collect();
                claims.extend(
                    channel
                        .claim_htlcs(
                            &r.commitment,
                            &self.preimages,
                            tip,
                            self.destination.clone(),
                            self.fee_rate,
                        )
                        .unwrap_or_default(),
                );
                for claim in claims {
                    let spent = claim.input[0].previous_output;
                    if !unspent.iter().any(|(op, _)| *op == spent) {
                        continue;
                    }
                    let done = WatchEvent::Claimed {
                        channel: r.channel,
                        commitment,
                        claim: claim.compute_txid(),
                    };
                    Self::send(chain, &claim, Answer::Claim, done, &mut events)?;
                }
                continue;
            }
            let Ok(justice) = channel.justice_over(
                &r.commitment,
                &unspent,
                self.destination.clone(),
                self.fee_rate,
            ) else {
                continue;
            };
            let done = WatchEvent::Justice {
                channel: r.channel,
                revoked: r.commitment.compute_txid(),
                justice: justice.compute_txid(),
            };
            Self::send(chain, &justice, Answer::Justice, done, &mut events)?;
        }
        // Superseded stock outputs on chain: punish them before the LSP's CSV leaf can take them.
        for p in &self.punishments {
            let stock = p.input[0].previous_output;
            if chain.get_utxo(&stock)?.is_none() {
                continue;
            }
            let done = WatchEvent::Punished {
                stock,
                punishment: p.compute_txid(),
            };
            Self::send(chain, p, Answer::Punishment, done, &mut events)?;
        }
        // Our sale chain: each sale as soon as the PS-factory output it spends exists, before
        // the LSP's CSV leaf can sweep that output.
        for sale in &self.sales {
            let Some(input) = sale.tx.input.first().map(|i| i.previous_output) else {
                continue;
            };
            if chain.get_utxo(&input)?.is_none() && !self.truc_child_allowed(chain, input.txid)? {
                continue;
            }
            let done = WatchEvent::Sale {
                input,
                sale: sale.tx.compute_txid(),
            };
            Self::send(chain, &sale.tx, Answer::Sale, done, &mut events)?;
        }
        // Published kickoffs: answer with our newest state once its delay has passed.
        for (kickoff, state) in &self.nodes {
            let TxStatus::Confirmed { height, .. } = chain.tx_status(&kickoff.tx.compute_txid())?
            else {
                continue;
            };
            let sid = state.tx.compute_txid();
            if chain.tx_status(&sid)? != TxStatus::Unknown {
                continue;
            }
            if tip + 1 < height + relative_delay(&state.tx) {
                continue;
            }
            if chain
                .get_utxo(&state.tx.input[0].previous_output)?
                .is_none()
            {
                // Already spent by another state: ours can no longer win here.
                continue;
            }
            let done = WatchEvent::NewestState {
                kickoff: kickoff.tx.compute_txid(),
                state: sid,
            };
            Self::send(chain, &state.tx, Answer::NewestState, done, &mut events)?;
        }
        Ok(events)
    }
}

/// The preimage of `payment_hash` when a witness carries it (HTLC-success, or a claim by
/// preimage of the other side's HTLC output).
fn revealed_preimage(witness: &bitcoin::Witness, payment_hash: &[u8; 32]) -> Option<[u8; 32]> {
    use bitcoin::hashes::{sha256, Hash};
    witness.iter().find_map(|item| {
        let p: [u8; 32] = item.try_into().ok()?;
        (sha256::Hash::hash(&p).to_byte_array() == *payment_hash).then_some(p)
    })
}

fn outputs_of(tx: &Transaction, txid: Txid) -> Vec<(OutPoint, TxOut)> {
    tx.output
        .iter()
        .enumerate()
        .map(|(vout, o)| (OutPoint::new(txid, vout as u32), o.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, Block, BlockHash, Script, Sequence, TxIn, Witness};
    use proptest::prelude::*;
    use std::sync::Mutex;
    use superscalar_chain::{Coin, PackageAcceptance, RejectReason};

    /// A backend whose blocks are arbitrary, whose every output looks unspent, that refuses every
    /// transaction, and that fails to read a block when asked to.
    struct Hostile {
        blocks: Mutex<Vec<Block>>,
        kickoff: Txid,
        fail_read_at: Mutex<Option<u32>>,
        /// Once set, transactions are accepted (the refusals were transient).
        relents: std::sync::atomic::AtomicBool,
    }

    fn refuse(tx: &Transaction) -> ChainError {
        ChainError::Rejected {
            txid: tx.compute_txid(),
            reason: RejectReason::Decode("refused".into()),
        }
    }

    impl Chain for Hostile {
        fn tip(&self) -> Result<superscalar_chain::ChainTip, ChainError> {
            let n = self.blocks.lock().unwrap().len() as u32;
            Ok(superscalar_chain::ChainTip {
                height: n - 1,
                hash: BlockHash::all_zeros(),
            })
        }
        fn median_time_past(&self) -> Result<u32, ChainError> {
            Ok(0)
        }
        fn submit_transaction(&self, tx: &Transaction) -> Result<Txid, ChainError> {
            if self.relents.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(tx.compute_txid());
            }
            Err(refuse(tx))
        }
        fn submit_package(
            &self,
            parent: &Transaction,
            _: &Transaction,
        ) -> Result<PackageAcceptance, ChainError> {
            Err(refuse(parent))
        }
        fn mine_blocks(&self, _: u32, _: &Script) -> Result<Vec<BlockHash>, ChainError> {
            Err(ChainError::Unsupported("mining"))
        }
        fn mine_block_with(&self, _: &[Transaction], _: &Script) -> Result<BlockHash, ChainError> {
            Err(ChainError::Unsupported("mining"))
        }
        fn tx_status(&self, txid: &Txid) -> Result<TxStatus, ChainError> {
            Ok(if *txid == self.kickoff {
                TxStatus::Confirmed {
                    height: 0,
                    block_hash: BlockHash::all_zeros(),
                    confirmations: 1,
                }
            } else {
                TxStatus::Unknown
            })
        }
        fn get_utxo(&self, _: &OutPoint) -> Result<Option<Coin>, ChainError> {
            Ok(Some(Coin {
                txout: TxOut {
                    value: Amount::from_sat(10_000),
                    script_pubkey: ScriptBuf::new(),
                },
                height: 0,
                is_coinbase: false,
            }))
        }
        fn block_at(&self, height: u32) -> Result<Option<Block>, ChainError> {
            let mut fail = self.fail_read_at.lock().unwrap();
            if *fail == Some(height) {
                *fail = None;
                return Err(ChainError::Unsupported("backend down"));
            }
            Ok(self.blocks.lock().unwrap().get(height as usize).cloned())
        }
        fn estimate_fee_rate(&self, _: u16) -> Result<FeeRate, ChainError> {
            Ok(FeeRate::from_sat_per_vb_u32(1))
        }
    }

    fn tx(inputs: &[OutPoint], outputs: u8, tag: u32) -> Transaction {
        Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::from_consensus(tag),
            input: inputs
                .iter()
                .map(|op| TxIn {
                    previous_output: *op,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ZERO,
                    witness: Witness::new(),
                })
                .collect(),
            output: (0..outputs)
                .map(|i| TxOut {
                    value: Amount::from_sat(1_000 * u64::from(i)),
                    script_pubkey: ScriptBuf::new(),
                })
                .collect(),
        }
    }

    fn block(txdata: Vec<Transaction>) -> Block {
        Block {
            header: bitcoin::block::Header {
                version: bitcoin::block::Version::ONE,
                prev_blockhash: BlockHash::all_zeros(),
                merkle_root: bitcoin::TxMerkleNode::all_zeros(),
                time: 0,
                bits: bitcoin::CompactTarget::from_consensus(0),
                nonce: 0,
            },
            txdata,
        }
    }

    fn signed(kind: TxKind, tx: Transaction) -> SignedTx {
        SignedTx {
            kind,
            tx,
            spent: TxOut::NULL,
        }
    }

    proptest! {
        /// Whatever the blocks hold and however every answer is refused, each poll scans every
        /// block up to the tip and moves past it, reporting the refused answers (retried at the
        /// next poll); a failed read skips no block.
        #[test]
        fn the_watcher_never_stalls_on_a_block(
            blocks in prop::collection::vec(
                prop::collection::vec((0u8..4, 0u8..3, 0u32..1000), 0..5), 1..12),
            polls in prop::collection::vec(0usize..4, 1..6),
            fail_read in prop::option::of(0u32..30),
        ) {
            let node = bitcoin::Txid::from_byte_array([7; 32]);
            let kickoff = tx(&[OutPoint::new(node, 0)], 1, 1);
            let kid = kickoff.compute_txid();
            let state = tx(&[OutPoint::new(kid, 0)], 2, 2);
            let stock = OutPoint::new(bitcoin::Txid::from_byte_array([9; 32]), 1);
            let punishment = tx(&[stock], 1, 3);
            let sale = tx(&[OutPoint::new(kid, 1)], 1, 4);
            let known = [OutPoint::new(kid, 0), stock, OutPoint::new(kid, 1), OutPoint::null()];
            let make = |spec: &Vec<(u8, u8, u32)>| {
                block(
                    spec.iter()
                        .map(|(i, o, tag)| tx(&[known[*i as usize]], *o, *tag))
                        .collect(),
                )
            };
            let chain = Hostile {
                blocks: Mutex::new(vec![block(vec![kickoff.clone()])]),
                kickoff: kid,
                fail_read_at: Mutex::new(fail_read),
                relents: std::sync::atomic::AtomicBool::new(false),
            };
            let mut w = Watcher::new(
                vec![vec![
                    signed(TxKind::Kickoff(superscalar_core::NodeId(0)), kickoff),
                    signed(TxKind::State(superscalar_core::NodeId(0)), state),
                ]],
                vec![],
                ScriptBuf::new(),
                FeeRate::from_sat_per_vb_u32(1),
                0,
            )
            .with_punishments(vec![punishment])
            .with_sales(vec![signed(TxKind::Sale(0), sale)]);
            let mut next = blocks.iter();
            for add in polls {
                for spec in next.by_ref().take(add) {
                    chain.blocks.lock().unwrap().push(make(spec));
                }
                let tip = chain.tip().unwrap().height;
                let before = w.next_height();
                let events = match w.poll(&chain) {
                    Ok(events) => events,
                    Err(_) => {
                        // A read failed: nothing past the failed block was skipped.
                        prop_assert!(w.next_height() >= before);
                        prop_assert!(w.next_height() <= tip);
                        w.poll(&chain).unwrap()
                    }
                };
                prop_assert_eq!(w.next_height(), tip + 1);
                // Every answer was tried again and its refusal reported.
                let failed = events
                    .iter()
                    .filter(|e| matches!(e, WatchEvent::AnswerFailed { .. }))
                    .count();
                prop_assert_eq!(failed, 3, "{:?}", events);
            }
            // However many refusals came before, the watcher still answers once the chain
            // takes its transactions.
            chain.relents.store(true, std::sync::atomic::Ordering::Relaxed);
            let events = w.poll(&chain).unwrap();
            let has = |f: fn(&WatchEvent) -> bool| events.iter().any(f);
            prop_assert!(has(|e| matches!(e, WatchEvent::NewestState { .. })), "{:?}", events);
            prop_assert!(has(|e| matches!(e, WatchEvent::Punished { .. })), "{:?}", events);
            prop_assert!(has(|e| matches!(e, WatchEvent::Sale { .. })), "{:?}", events);
            prop_assert!(!has(|e| matches!(e, WatchEvent::AnswerFailed { .. })), "{:?}", events);
        }
    }
}
