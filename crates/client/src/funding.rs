//! When a factory counts as open for a client: its funding output, exactly as the factory's
//! parameters define it (script and amount), confirmed in the client's own chain view. The LSP's
//! word is not enough: it could name an outpoint that pays something else.

use superscalar_chain::{Chain, ChainError, TxStatus};
use superscalar_core::advance::{AdvanceError, FactoryState};
use thiserror::Error;

/// Why a factory is not open.
#[derive(Debug, Error)]
pub enum FundingError {
    /// The chain backend failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The funding outpoint is missing, unconfirmed, or holds another output.
    #[error(transparent)]
    Refused(#[from] AdvanceError),
}

/// Look the factory's funding outpoint up in our own chain view and open the factory when it
/// holds exactly the expected output, confirmed. Returns whether the factory is open; an
/// outpoint holding anything else is an error (the LSP lied about the funding).
pub fn check_funding(chain: &dyn Chain, state: &mut FactoryState) -> Result<bool, FundingError> {
    if state.is_open() {
        return Ok(true);
    }
    let funding = state.funding();
    if let Some(coin) = chain.get_utxo(&funding)? {
        state.confirm_funding(Some(&coin.txout), Some(coin.height))?;
        return Ok(true);
    }
    // Spent already (the factory is being exited or closed): read the output from the block
    // that confirmed its transaction.
    let TxStatus::Confirmed { height, .. } = chain.tx_status(&funding.txid)? else {
        // Not confirmed (yet): nothing to open.
        return Ok(false);
    };
    let seen = chain.block_at(height)?.and_then(|block| {
        block
            .txdata
            .into_iter()
            .find(|tx| tx.compute_txid() == funding.txid)
            .and_then(|tx| tx.output.get(funding.vout as usize).cloned())
    });
    state.confirm_funding(seen.as_ref(), Some(height))?;
    Ok(true)
}
