//! Collecting the inverted-policy timeout payout at T: publish the timeout transaction of the
//! highest output on the client's path that is still unspent on chain, and of its leaf outputs
//! once the leaf is on chain; zero-fee ones are paid for with the client's fee coin, then with
//! the change of the child that spent it, one zero-fee timeout per block (a TRUC child cannot
//! build on an unconfirmed child): the claim is resumable, reading where the coin is from the
//! chain at every poll. A split timeout (a large factory's) is walked down the parts holding the
//! client's money, one level per block: each part's timeout goes out once the part is confirmed
//! (a TRUC transaction has at most one unconfirmed child, of at most 1,000 vB). A timeout of a
//! tree output pays its own fee (the tree's rate); when the market asks more, the client's own
//! output of it pays for a child.

use bitcoin::key::Keypair;
use bitcoin::{Amount, FeeRate, OutPoint, TxOut, Txid};
use superscalar_chain::{Chain, ChainError, TxStatus};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, Factory, TxKind, Version};
use thiserror::Error;

use superscalar_chain::RejectReason;
use superscalar_wallet::{OnchainWallet, WalletError};

use crate::bump::{fee_coin_child, own_output_child, BumpError};

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
    /// Zero-fee timeouts left for later: no fee coin (or change of it) confirmed and free, and no
    /// wallet coins to pay for them; poll again after the next block.
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
    // The fee coin, or the confirmed change of the last child it paid: used once per poll.
    let mut fee_coin = current_fee_coin(chain, view, &txid_of)?;
    for slot in factory.client_slots(client, version) {
        let Some(op) = factory.slot_outpoint(slot, funding, version, txid_of) else {
            continue;
        };
        let Some(timeout) = signed.iter().find(|s| s.kind == TxKind::Timeout(slot)) else {
            continue;
        };
        let is_tree = matches!(
            slot,
            Slot::NodeInput(_) | Slot::KickoffOut(_) | Slot::TimeoutPart { .. }
        );
        if chain.get_utxo(&op)?.is_none() {
            // Spent already: by the next transaction of the path (go deeper) or by this timeout
            // (then its part holding our money comes next), or not confirmed yet.
            continue;
        }
        let txid = timeout.tx.compute_txid();
        if chain.tx_status(&txid)? == TxStatus::Unknown {
            let paid: Amount = timeout.tx.output.iter().map(|o| o.value).sum();
            if paid < timeout.spent.value {
                submit_paying(chain, view, timeout, timeout.spent.value - paid, fee_rate)?;
            } else if !pay_zero_fee(
                chain,
                view,
                timeout,
                fee_rate,
                &mut fee_coin,
                wallet.as_deref_mut(),
            )? {
                claim.unpaid.push(slot);
                continue;
            }
            claim.sent.push(txid);
        }
        if is_tree {
            // This output's timeout pays everything beneath it (or its parts do, later).
            break;
        }
    }
    Ok(claim)
}

/// Publish a timeout that pays its own fee: alone when that fee is at least `fee_rate` on its
/// size, else with a child spending the client's own output of it (when that output is the
/// key-path P2TR of its key, as by default) so that the two pay `fee_rate` together; alone
/// again when the output cannot pay for it.
fn submit_paying(
    chain: &dyn Chain,
    view: &ClientView<'_>,
    timeout: &SignedTx,
    fee: Amount,
    fee_rate: FeeRate,
) -> Result<(), TimeoutError> {
    let ClientView {
        factory,
        client,
        key,
        ..
    } = *view;
    let own = factory.fee_coin_script(client);
    let vout = timeout
        .tx
        .output
        .iter()
        .position(|o| o.script_pubkey == own);
    let enough = fee_rate
        .fee_vb(timeout.tx.vsize() as u64)
        .is_some_and(|f| fee >= f);
    if let (false, Some(vout)) = (enough, vout) {
        match own_output_child(&timeout.tx, fee, vout as u32, key, own, fee_rate) {
            Ok(child) => {
                chain.submit_package(&timeout.tx, &child)?;
                return Ok(());
            }
            Err(BumpError::CoinTooSmall { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    chain.submit_transaction(&timeout.tx)?;
    Ok(())
}

/// Where the client's fee coin is now: the fee coin itself while it is unspent in the chain, else
/// the change output of the last fee-coin child confirmed since T (each child pays its change,
/// output 0, to the fee coin's own script, which the client's key spends). `None` when the
/// coin is spent otherwise or its latest change is not confirmed yet.
fn current_fee_coin(
    chain: &dyn Chain,
    view: &ClientView<'_>,
    txid_of: &dyn Fn(TxKind) -> Option<Txid>,
) -> Result<Option<(OutPoint, TxOut)>, TimeoutError> {
    let ClientView {
        factory,
        client,
        funding,
        version,
        ..
    } = *view;
    let Some(mut op) = factory.slot_outpoint(Slot::FeeCoin(client), funding, version, txid_of)
    else {
        return Ok(None);
    };
    if let Some(coin) = chain.get_utxo(&op)? {
        return Ok(Some((op, coin.txout)));
    }
    // Follow the chain of children confirmed from T on (the first one is broadcast when the
    // next block is T, so it confirms at T or later).
    let coin_script = factory.fee_coin_script(client);
    let tip = chain.tip()?.height;
    for height in factory.timeout_height().saturating_sub(1)..=tip {
        let Some(block) = chain.block_at(height)? else {
            continue;
        };
        for tx in &block.txdata {
            let spends = tx.input.iter().any(|i| i.previous_output == op);
            if spends
                && tx
                    .output
                    .first()
                    .is_some_and(|o| o.script_pubkey == coin_script)
            {
                op = OutPoint::new(tx.compute_txid(), 0);
            }
        }
    }
    Ok(chain.get_utxo(&op)?.map(|c| (op, c.txout)))
}

/// Pay for a zero-fee timeout: with the client's fee coin (or its change) if it is free, else
/// from the wallet. Returns false when neither can.
fn pay_zero_fee(
    chain: &dyn Chain,
    view: &ClientView<'_>,
    timeout: &SignedTx,
    fee_rate: FeeRate,
    fee_coin: &mut Option<(OutPoint, TxOut)>,
    wallet: Option<&mut OnchainWallet>,
) -> Result<bool, TimeoutError> {
    let ClientView {
        factory,
        client,
        key,
        ..
    } = *view;
    // Used at most once per poll: its change is unconfirmed until the next block.
    if let Some(coin) = fee_coin.take() {
        // The change stays a fee coin: key-path P2TR of the client's key, which signs it.
        let change = factory.fee_coin_script(client);
        match fee_coin_child(&timeout.tx, Amount::ZERO, coin, key, change, fee_rate) {
            Ok(child) => match chain.submit_package(&timeout.tx, &child) {
                Ok(_) => return Ok(true),
                // The coin is already spent by a transaction waiting in the mempool.
                Err(e) if matches!(e.reject_reason(), Some(RejectReason::Conflict { .. })) => {}
                Err(e) => return Err(e.into()),
            },
            // Too little left in the coin: the wallet may pay.
            Err(BumpError::CoinTooSmall { .. }) => {}
            Err(e) => return Err(e.into()),
        }
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
