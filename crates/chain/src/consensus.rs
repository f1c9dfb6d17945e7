//! Consensus checks of one transaction against the chain: the kernel's own CheckTransaction and
//! script interpreter, plus finality (BIP65/BIP113) and relative locks (BIP68) as Core computes them.

use bitcoin::consensus::serialize;
use bitcoin::{Amount, Transaction, TxOut};
use bitcoinkernel::prelude::*;
use bitcoinkernel::{verify, PrecomputedTransactionData, TxCheckResult, VERIFY_ALL};

use crate::error::RejectReason;

/// Largest amount of bitcoin that can ever exist, in satoshis.
const MAX_MONEY: u64 = 21_000_000 * 100_000_000;
/// nSequence bit that disables the relative lock (BIP68).
const SEQUENCE_DISABLE_FLAG: u32 = 1 << 31;
/// nSequence bit that makes the relative lock time-based (BIP68).
const SEQUENCE_TYPE_FLAG: u32 = 1 << 22;
/// nSequence bits that carry the lock value (BIP68).
const SEQUENCE_MASK: u32 = 0x0000_ffff;
/// Time-based relative locks count in units of 2^9 seconds.
const SEQUENCE_GRANULARITY: u32 = 9;
/// nLockTime values below this are heights, at or above it times.
const LOCKTIME_THRESHOLD: u32 = 500_000_000;

/// Convert a rust-bitcoin transaction into the kernel's representation.
pub(crate) fn to_kernel_tx(tx: &Transaction) -> Result<bitcoinkernel::Transaction, RejectReason> {
    bitcoinkernel::Transaction::new(&serialize(tx))
        .map_err(|e| RejectReason::Decode(format!("kernel refused the encoding: {e}")))
}

/// The kernel's context-free `CheckTransaction`, with a readable diagnosis when it fails.
pub(crate) fn check_transaction(tx: &Transaction) -> Result<(), RejectReason> {
    let ktx = to_kernel_tx(tx)?;
    match ktx.check() {
        TxCheckResult::Valid => Ok(()),
        TxCheckResult::Invalid(result) => Err(RejectReason::Consensus(format!(
            "{} (kernel result {result:?})",
            describe_check_failure(tx)
        ))),
    }
}

/// Name the CheckTransaction rule a transaction breaks, for error messages.
fn describe_check_failure(tx: &Transaction) -> String {
    if tx.input.is_empty() {
        return "bad-txns-vin-empty".into();
    }
    if tx.output.is_empty() {
        return "bad-txns-vout-empty".into();
    }
    let mut total = 0u64;
    for o in &tx.output {
        if o.value.to_sat() > MAX_MONEY {
            return "bad-txns-vout-toolarge".into();
        }
        total = total.saturating_add(o.value.to_sat());
    }
    if total > MAX_MONEY {
        return "bad-txns-txouttotal-toolarge".into();
    }
    let mut seen = std::collections::HashSet::new();
    if !tx.input.iter().all(|i| seen.insert(i.previous_output)) {
        return "bad-txns-inputs-duplicate".into();
    }
    if tx.is_coinbase() {
        return "bad-cb-length".into();
    }
    if tx.input.iter().any(|i| i.previous_output.is_null()) {
        return "bad-txns-prevout-null".into();
    }
    "CheckTransaction failed".into()
}

/// Verify every input script with Bitcoin Core's interpreter, given all spent outputs (for taproot).
pub(crate) fn verify_scripts(tx: &Transaction, spent: &[TxOut]) -> Result<(), RejectReason> {
    let ktx = to_kernel_tx(tx)?;
    let kspent: Vec<bitcoinkernel::TxOut> = spent
        .iter()
        .map(|o| {
            let spk = bitcoinkernel::ScriptPubkey::new(o.script_pubkey.as_bytes())
                .map_err(|e| RejectReason::Decode(e.to_string()))?;
            Ok(bitcoinkernel::TxOut::new(&spk, o.value.to_sat() as i64))
        })
        .collect::<Result<_, RejectReason>>()?;
    let precomputed = PrecomputedTransactionData::new(&ktx, &kspent).map_err(|e| {
        RejectReason::ScriptInvalid {
            input: 0,
            message: e.to_string(),
        }
    })?;
    for (i, prev) in kspent.iter().enumerate() {
        verify(
            &prev.script_pubkey(),
            Some(prev.value()),
            &ktx,
            i,
            Some(VERIFY_ALL),
            &precomputed,
        )
        .map_err(|e| RejectReason::ScriptInvalid {
            input: i,
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Sum of amounts that cannot overflow.
pub(crate) fn sum_amounts<'a>(amounts: impl Iterator<Item = &'a Amount>) -> Amount {
    amounts.fold(Amount::ZERO, |acc, a| {
        acc.checked_add(*a).unwrap_or(Amount::MAX)
    })
}

/// Core's `IsFinalTx` for a block at `height` whose predecessor has median time past `mtp`.
pub(crate) fn check_final(tx: &Transaction, height: u32, mtp: u32) -> Result<(), RejectReason> {
    let lock_time = tx.lock_time.to_consensus_u32();
    if lock_time == 0 {
        return Ok(());
    }
    let reference = if lock_time < LOCKTIME_THRESHOLD {
        height
    } else {
        mtp
    };
    if lock_time < reference || tx.input.iter().all(|i| i.sequence.0 == u32::MAX) {
        return Ok(());
    }
    Err(RejectReason::NonFinal {
        lock_time,
        height,
        mtp,
    })
}

/// The confirmation context of one spent output, for relative locks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpentContext {
    /// Height of the block that created the output (the next block's height if unconfirmed).
    pub height: u32,
    /// Median time past of the block before that one.
    pub prev_mtp: u32,
}

/// Core's `CalculateSequenceLocks` + `EvaluateSequenceLocks` for a block at `height` whose
/// predecessor has median time past `mtp`.
pub(crate) fn check_sequence_locks(
    tx: &Transaction,
    spent: &[SpentContext],
    height: u32,
    mtp: u32,
) -> Result<(), RejectReason> {
    if tx.version.0 < 2 {
        return Ok(());
    }
    let mut min_height: i64 = -1;
    let mut min_time: i64 = -1;
    for (input, ctx) in tx.input.iter().zip(spent) {
        let seq = input.sequence.0;
        if seq & SEQUENCE_DISABLE_FLAG != 0 {
            continue;
        }
        let value = i64::from(seq & SEQUENCE_MASK);
        if seq & SEQUENCE_TYPE_FLAG != 0 {
            min_time = min_time.max(i64::from(ctx.prev_mtp) + (value << SEQUENCE_GRANULARITY) - 1);
        } else {
            min_height = min_height.max(i64::from(ctx.height) + value - 1);
        }
    }
    if min_height >= i64::from(height) || min_time >= i64::from(mtp) {
        return Err(RejectReason::SequenceLocked {
            min_height,
            min_time,
            height,
            mtp,
        });
    }
    Ok(())
}
