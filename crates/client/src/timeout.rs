//! Collecting the inverted-policy timeout payout at T: publish the timeout transaction of the
//! highest output on the client's path that is still unspent on chain, and of its leaf outputs
//! once the leaf is on chain; zero-fee ones are paid for with the client's fee coin.

use bitcoin::key::Keypair;
use bitcoin::{Amount, FeeRate, OutPoint, Txid};
use superscalar_chain::{Chain, ChainError, TxStatus};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, Factory, TxKind, Version};
use thiserror::Error;

use superscalar_chain::RejectReason;
use superscalar_wallet::{OnchainWallet, WalletError};

use crate::bump::{fee_coin_child, BumpError};

/// A timeout claim that cannot proceed.
#[derive(Debug, Error)]
pub enum TimeoutError {
    /// T has not come yet.
    #[error("the timeout transactions confirm from height {timeout}; the next block is {next}")]
    TooEarly {
        /// First height at which they confirm.
        timeout: u32,
        /// Height of the next block.
        next: u32,
    },
    /// The chain failed or refused.
    #[error(transparent)]
    Chain(#[from] Box<ChainError>),
    /// A zero-fee timeout could not be paid for.
    #[error(transparent)]
    Bump(#[from] BumpError),
    /// The wallet could not pay for a zero-fee timeout.
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

impl From<ChainError> for TimeoutError {
    fn from(e: ChainError) -> Self {
        TimeoutError::Chain(Box::new(e))
    }
}

/// What a timeout claim did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeoutClaim {
    /// Timeout transactions broadcast (with their fee-coin child when zero-fee).
    pub sent: Vec<Txid>,
    /// Zero-fee timeouts left for later: no fee coin free and no wallet coins to pay for them.
    pub unpaid: Vec<Slot>,
}

/// A client's view of its factory: what it needs to claim its payout.
#[derive(Debug, Clone, Copy)]
pub struct ClientView<'a> {
    /// The factory.
    pub factory: &'a Factory,
    /// The client.
    pub client: ClientId,
    /// Its verified signed transactions (exit path and timeouts).
    pub signed: &'a [SignedTx],
    /// The funding outpoint.
    pub funding: OutPoint,
    /// The client's factory key (spends its fee coin).
    pub key: &'a Keypair,
    /// The factory version `signed` belongs to.
    pub version: &'a Version,
}

/// Publish what the client needs at T (already-published timeouts are skipped).
pub fn claim_timeouts(
    chain: &dyn Chain,
    view: &ClientView<'_>,
    fee_rate: FeeRate,
    mut wallet: Option<&mut OnchainWallet>,
) -> Result<TimeoutClaim, TimeoutError> {
    let ClientView {
        factory,
        client,
        signed,
        funding,
        version,
        ..
    } = *view;
    let next = chain.tip()?.height + 1;
    if next < factory.timeout_height() {
        return Err(TimeoutError::TooEarly {
            timeout: factory.timeout_height(),
            next,
        });
    }
    let txid_of = |k: TxKind| {
        signed
            .iter()
            .find(|s| s.kind == k)
            .map(|s| s.tx.compute_txid())
    };
    let mut claim = TimeoutClaim::default();
    let mut fee_coin_used = false;
    for slot in factory.client_slots(client, version) {
        let Some(op) = factory.slot_outpoint(slot, funding, version, txid_of) else {
            continue;
        };
        let Some(timeout) = signed.iter().find(|s| s.kind == TxKind::Timeout(slot)) else {
            continue;
        };
        let is_tree = matches!(slot, Slot::NodeInput(_) | Slot::KickoffOut(_));
        if chain.get_utxo(&op)?.is_none() {
            // Spent already: by the next transaction of the path (go deeper) or by this timeout.
            continue;
        }
        let txid = timeout.tx.compute_txid();
        if chain.tx_status(&txid)? == TxStatus::Unknown {
            let paid: Amount = timeout.tx.output.iter().map(|o| o.value).sum();
            if paid < timeout.spent.value {
                chain.submit_transaction(&timeout.tx)?;
            } else if !pay_zero_fee(
                chain,
                view,
                timeout,
                fee_rate,
                &mut fee_coin_used,
                wallet.as_deref_mut(),
                &txid_of,
            )? {
                claim.unpaid.push(slot);
                continue;
            }
            claim.sent.push(txid);
        }
        if is_tree {
            // This output's timeout pays everything beneath it.
            break;
        }
    }
    Ok(claim)
}

/// Pay for a zero-fee timeout: with the client's fee coin if it is free, else from the wallet.
/// Returns false when neither can.
fn pay_zero_fee(
    chain: &dyn Chain,
    view: &ClientView<'_>,
    timeout: &SignedTx,
    fee_rate: FeeRate,
    fee_coin_used: &mut bool,
    wallet: Option<&mut OnchainWallet>,
    txid_of: &dyn Fn(TxKind) -> Option<Txid>,
) -> Result<bool, TimeoutError> {
    let ClientView {
        factory,
        client,
        funding,
        key,
        version,
        ..
    } = *view;
    if !*fee_coin_used {
        if let Some(coin_op) =
            factory.slot_outpoint(Slot::FeeCoin(client), funding, version, txid_of)
        {
            if let Some(coin) = chain.get_utxo(&coin_op)? {
                let payout = factory.params().clients[client.0 as usize].payout.clone();
                let child = fee_coin_child(
                    &timeout.tx,
                    Amount::ZERO,
                    (coin_op, coin.txout),
                    key,
                    payout,
                    fee_rate,
                )?;
                match chain.submit_package(&timeout.tx, &child) {
                    Ok(_) => {
                        *fee_coin_used = true;
                        return Ok(true);
                    }
                    // The fee coin is already spent by a transaction waiting in the mempool.
                    Err(e) if matches!(e.reject_reason(), Some(RejectReason::Conflict { .. })) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        *fee_coin_used = true;
    }
    let Some(w) = wallet else { return Ok(false) };
    w.sync(chain)?;
    if w.balance().confirmed == Amount::ZERO {
        return Ok(false);
    }
    let vout = timeout
        .tx
        .output
        .iter()
        .position(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey))
        .ok_or(BumpError::NoAnchor)? as u32;
    let child = match w.build_anchor_child(&timeout.tx, Amount::ZERO, vout, fee_rate) {
        Ok(child) => child,
        // No confirmed coin left (a TRUC child cannot stack on unconfirmed ones): later.
        Err(WalletError::InsufficientFunds { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    w.broadcast_package(chain, &timeout.tx, &child)?;
    Ok(true)
}
