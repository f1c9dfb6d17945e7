//! Watch and respond: scan each new block for a superseded factory state or a revoked channel
//! commitment, and answer with the newest state (it wins because its delay is shorter) or a
//! justice transaction, and punish a superseded liquidity-stock output that confirmed anyway.

use bitcoin::{FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
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

    /// React to everything up to the tip.
    pub fn poll(&mut self, chain: &dyn Chain) -> Result<Vec<WatchEvent>, ChainError> {
        let mut events = Vec::new();
        let tip = chain.tip()?.height;
        // Revoked commitments: scan the new blocks for spends of the channels' funding outputs.
        while self.next_height <= tip {
            let Some(block) = chain.block_at(self.next_height)? else {
                break;
            };
            for tx in &block.txdata {
                for (i, (channel, funding)) in self.channels.iter().enumerate() {
                    if tx.input.iter().any(|inp| inp.previous_output == *funding) {
                        if let Ok(justice) =
                            channel.justice_transaction(tx, self.destination.clone(), self.fee_rate)
                        {
                            chain.submit_transaction(&justice)?;
                            events.push(WatchEvent::Justice {
                                channel: i,
                                revoked: tx.compute_txid(),
                                justice: justice.compute_txid(),
                            });
                        }
                    }
                }
            }
            self.next_height += 1;
        }
        // Superseded stock outputs on chain: punish them before the LSP's CSV leaf can take them.
        for p in &self.punishments {
            let stock = p.input[0].previous_output;
            if chain.get_utxo(&stock)?.is_none() {
                continue;
            }
            let txid = p.compute_txid();
            if chain.tx_status(&txid)? != TxStatus::Unknown {
                continue;
            }
            chain.submit_transaction(p)?;
            events.push(WatchEvent::Punished {
                stock,
                punishment: txid,
            });
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
            chain.submit_transaction(&state.tx)?;
            events.push(WatchEvent::NewestState {
                kickoff: kickoff.tx.compute_txid(),
                state: sid,
            });
        }
        Ok(events)
    }
}
