//! A client's unilateral exit: publish the kickoffs and states of its path in order, each once its
//! relative delay has passed, paying with the endogenous fees (and CPFP through a kickoff's anchor
//! when the wallet has coins and the fee market is above the transaction's own rate).

use bitcoin::{Amount, FeeRate, Transaction, Txid};
use superscalar_chain::{Chain, ChainError, TxStatus};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::TxKind;
use superscalar_wallet::{OnchainWallet, WalletError};
use thiserror::Error;

/// An exit that cannot proceed.
#[derive(Debug, Error)]
pub enum ExitError {
    /// The chain refused a transaction whose lock had passed.
    #[error("the chain refused {kind:?} ({txid}): {source}")]
    Refused {
        /// The transaction's role.
        kind: TxKind,
        /// Its txid.
        txid: Txid,
        /// The chain's reason.
        source: Box<ChainError>,
    },
    /// The chain backend failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The wallet could not build a CPFP child.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The exit path is empty or out of order.
    #[error("invalid exit path: {0}")]
    InvalidPath(String),
    /// A transaction spending the same output as ours confirmed (someone published another state).
    #[error("{0:?} lost: a conflicting transaction spent its input")]
    Conflicted(TxKind),
}

/// What one step of the exit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitProgress {
    /// A transaction was broadcast.
    Broadcast {
        /// Its role.
        kind: TxKind,
        /// Its txid.
        txid: Txid,
        /// Whether a CPFP child was added.
        cpfp: bool,
    },
    /// Waiting: the next transaction becomes valid in the block at `height` (or awaits
    /// confirmation when `height` is the next block).
    Waiting {
        /// The transaction waited for.
        kind: TxKind,
        /// First block height in which it can confirm.
        height: u32,
    },
    /// Every transaction of the path is confirmed.
    Done,
}

/// A unilateral exit in progress (kept by the client; resumable: it reads its state from the chain).
#[derive(Debug, Clone)]
pub struct UnilateralExit {
    path: Vec<SignedTx>,
    funding_txid: Txid,
}

fn relative_delay(tx: &Transaction) -> u32 {
    let seq = tx.input[0].sequence;
    if seq.is_relative_lock_time() && seq.is_height_locked() {
        seq.0 & 0xffff
    } else {
        0
    }
}

impl UnilateralExit {
    /// Prepare the exit from a client's signed transactions (timeouts are ignored).
    pub fn new(signed: &[SignedTx]) -> Result<Self, ExitError> {
        let path: Vec<SignedTx> = signed
            .iter()
            .filter(|s| {
                matches!(
                    s.kind,
                    TxKind::Kickoff(_) | TxKind::State(_) | TxKind::Sale(_)
                )
            })
            .cloned()
            .collect();
        let Some(first) = path.first() else {
            return Err(ExitError::InvalidPath("no tree transactions".into()));
        };
        if let Some(bad) = path.iter().find(|s| s.tx.input.len() != 1) {
            return Err(ExitError::InvalidPath(format!(
                "{:?} has {} inputs; tree transactions have exactly one",
                bad.kind,
                bad.tx.input.len()
            )));
        }
        for w in path.windows(2) {
            if w[1].tx.input[0].previous_output.txid != w[0].tx.compute_txid() {
                return Err(ExitError::InvalidPath(format!(
                    "{:?} does not spend {:?}",
                    w[1].kind, w[0].kind
                )));
            }
        }
        Ok(UnilateralExit {
            funding_txid: first.tx.input[0].previous_output.txid,
            path,
        })
    }

    /// The transactions of the path, in publishing order.
    pub fn path(&self) -> &[SignedTx] {
        &self.path
    }

    /// Make progress: broadcast the next transaction if its lock has passed, else say what it
    /// waits for. Call again after each new block.
    pub fn step(
        &mut self,
        chain: &dyn Chain,
        wallet: Option<&mut OnchainWallet>,
    ) -> Result<ExitProgress, ExitError> {
        let tip = chain.tip()?.height;
        let mut parent_height = match chain.tx_status(&self.funding_txid)? {
            TxStatus::Confirmed { height, .. } => height,
            _ => {
                return Err(ExitError::InvalidPath(
                    "the funding transaction is not confirmed".into(),
                ))
            }
        };
        for s in &self.path {
            let txid = s.tx.compute_txid();
            match chain.tx_status(&txid)? {
                TxStatus::Confirmed { height, .. } => {
                    parent_height = height;
                    continue;
                }
                TxStatus::InMempool => {
                    return Ok(ExitProgress::Waiting {
                        kind: s.kind,
                        height: tip + 1,
                    });
                }
                TxStatus::Unknown => {}
            }
            if chain.get_utxo(&s.tx.input[0].previous_output)?.is_none() {
                return Err(ExitError::Conflicted(s.kind));
            }
            let valid_at = parent_height + relative_delay(&s.tx);
            if tip + 1 < valid_at {
                return Ok(ExitProgress::Waiting {
                    kind: s.kind,
                    height: valid_at,
                });
            }
            let cpfp = self.broadcast(chain, s, wallet)?;
            return Ok(ExitProgress::Broadcast {
                kind: s.kind,
                txid,
                cpfp,
            });
        }
        Ok(ExitProgress::Done)
    }

    fn broadcast(
        &self,
        chain: &dyn Chain,
        s: &SignedTx,
        wallet: Option<&mut OnchainWallet>,
    ) -> Result<bool, ExitError> {
        let txid = s.tx.compute_txid();
        let fee = s.spent.value - s.tx.output.iter().map(|o| o.value).sum::<Amount>();
        let own_rate = FeeRate::from_sat_per_kwu(fee.to_sat() * 250 / (s.tx.vsize() as u64).max(1));
        let market = chain.estimate_fee_rate(6)?;
        let anchor =
            s.tx.output
                .iter()
                .position(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey));
        if let (Some(w), Some(vout), true) = (wallet, anchor, market > own_rate) {
            w.sync(chain).map_err(ExitError::Wallet)?;
            if w.balance().confirmed > Amount::ZERO {
                let child = w.build_anchor_child(&s.tx, fee, vout as u32, market)?;
                w.broadcast_package(chain, &s.tx, &child)
                    .map_err(|e| match e {
                        WalletError::Chain(source) => ExitError::Refused {
                            kind: s.kind,
                            txid,
                            source: Box::new(source),
                        },
                        other => ExitError::Wallet(other),
                    })?;
                return Ok(true);
            }
        }
        chain
            .submit_transaction(&s.tx)
            .map_err(|source| ExitError::Refused {
                kind: s.kind,
                txid,
                source: Box::new(source),
            })?;
        Ok(false)
    }
}
