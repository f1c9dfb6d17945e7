//! Our typed mempool rejections in Bitcoin Core's words, and back.
//!
//! Core reports a refused transaction as a validation state: a short reject reason (the token
//! clients match on, such as `non-BIP68-final`) and a debug message, joined as
//! `"<reason>, <debug>"` in `sendrawtransaction` errors and given apart by `testmempoolaccept`.
//! [`to_core`] is what `chaind` answers; [`RejectClass::of`] is how [`crate::BitcoindRpc`] reads
//! an answer, from `chaind` or a real bitcoind, before it fills in the details it looks up.

use crate::error::RejectReason;
use crate::rpc::codes::{
    RPC_DESERIALIZATION_ERROR, RPC_TRANSACTION_ERROR, RPC_TRANSACTION_REJECTED,
    RPC_VERIFY_ALREADY_IN_UTXO_SET,
};

/// Core's `sendrawtransaction` message for bytes that do not decode.
pub const TX_DECODE_FAILED: &str = "TX decode failed. Make sure the tx has at least one input.";
/// Core's message for a transaction whose outputs are already in the UTXO set.
pub const ALREADY_IN_UTXO_SET: &str = "Transaction outputs already in utxo set";

/// A rejection as Bitcoin Core reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreReject {
    /// The RPC error code `sendrawtransaction` answers with.
    pub code: i32,
    /// The reject reason (`testmempoolaccept`'s `reject-reason`).
    pub reason: String,
    /// The debug message (may be empty).
    pub debug: String,
}

impl CoreReject {
    fn new(code: i32, reason: impl Into<String>, debug: impl Into<String>) -> Self {
        CoreReject {
            code,
            reason: reason.into(),
            debug: debug.into(),
        }
    }

    /// The message of a `sendrawtransaction` error (`ValidationState::ToString`).
    pub fn message(&self) -> String {
        if self.debug.is_empty() {
            self.reason.clone()
        } else {
            format!("{}, {}", self.reason, self.debug)
        }
    }

    /// The reject reason `testmempoolaccept` reports (Core says `missing-inputs` there).
    pub fn test_accept_reason(&self) -> &str {
        if self.reason == "bad-txns-inputs-missingorspent" {
            "missing-inputs"
        } else {
            &self.reason
        }
    }
}

/// Split one of our messages that starts with Core's reject token (`"token: details"`).
fn token_and_rest(message: &str, fallback: &str) -> (String, String) {
    let (head, rest) = match message.split_once(": ") {
        Some((h, r)) => (h, r),
        None => (message, ""),
    };
    let head = head.trim();
    let looks_like_token = !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if looks_like_token && !rest.is_empty() {
        (head.to_string(), rest.to_string())
    } else if looks_like_token && message.split_whitespace().count() == 1 {
        (head.to_string(), String::new())
    } else {
        (fallback.to_string(), message.to_string())
    }
}

/// Bitcoin Core's report of one of our rejections.
pub fn to_core(reason: &RejectReason) -> CoreReject {
    use RejectReason as R;
    match reason {
        R::Decode(_) => CoreReject::new(RPC_DESERIALIZATION_ERROR, TX_DECODE_FAILED, ""),
        R::Consensus(m) => {
            // Our consensus messages read "bad-txns-xxx (kernel result ...)".
            let (token, rest) = match m.split_once(' ') {
                // Core's `MemPoolAccept` refuses a coinbase with the bare reason "coinbase".
                Some(("coinbase:", _)) => ("coinbase".to_string(), String::new()),
                Some((t, r)) if t.starts_with("bad-") => (t.to_string(), r.to_string()),
                _ if m.starts_with("bad-") => (m.clone(), String::new()),
                _ => ("bad-txns".to_string(), m.clone()),
            };
            CoreReject::new(RPC_TRANSACTION_REJECTED, token, rest)
        }
        R::AlreadyConfirmed(_) => {
            CoreReject::new(RPC_VERIFY_ALREADY_IN_UTXO_SET, ALREADY_IN_UTXO_SET, "")
        }
        R::AlreadyInMempool(_) => {
            CoreReject::new(RPC_TRANSACTION_REJECTED, "txn-already-in-mempool", "")
        }
        R::MissingInput { input, outpoint } => CoreReject::new(
            RPC_TRANSACTION_ERROR,
            "bad-txns-inputs-missingorspent",
            format!("input {input} spends {outpoint}, which is missing or already spent"),
        ),
        R::Conflict {
            input,
            outpoint,
            by,
        } => CoreReject::new(
            RPC_TRANSACTION_REJECTED,
            "txn-mempool-conflict",
            format!("input {input} spends {outpoint}, already spent by {by}"),
        ),
        R::ImmatureCoinbase {
            height, mature_at, ..
        } => CoreReject::new(
            RPC_TRANSACTION_REJECTED,
            "bad-txns-premature-spend-of-coinbase",
            format!(
                "tried to spend coinbase at depth {}",
                100u32.saturating_sub(mature_at.saturating_sub(*height))
            ),
        ),
        R::InputsBelowOutputs { inputs, outputs } => CoreReject::new(
            RPC_TRANSACTION_REJECTED,
            "bad-txns-in-belowout",
            format!(
                "value in ({}) < value out ({})",
                inputs.to_btc(),
                outputs.to_btc()
            ),
        ),
        R::NonFinal { .. } => CoreReject::new(RPC_TRANSACTION_REJECTED, "non-final", ""),
        R::SequenceLocked { .. } => {
            CoreReject::new(RPC_TRANSACTION_REJECTED, "non-BIP68-final", "")
        }
        R::ScriptInvalid { input, message } => CoreReject::new(
            RPC_TRANSACTION_REJECTED,
            format!("mempool-script-verify-flag-failed ({message})"),
            format!("input {input}"),
        ),
        R::NonStandard(m) => {
            let (token, rest) = match m.split_once(' ') {
                // "version 4 is not standard (1 to 3)"
                Some(("version", _)) => ("version".to_string(), m.clone()),
                _ => token_and_rest(m, "non-standard"),
            };
            CoreReject::new(RPC_TRANSACTION_REJECTED, token, rest)
        }
        R::Dust(m) => CoreReject::new(RPC_TRANSACTION_REJECTED, "dust", m.clone()),
        R::FeeTooLow {
            fee, vsize, min, ..
        } => CoreReject::new(
            RPC_TRANSACTION_REJECTED,
            "min relay fee not met",
            format!("{} < {}", fee.to_sat(), min * vsize / 1000),
        ),
        R::Truc(m) => CoreReject::new(RPC_TRANSACTION_REJECTED, "TRUC-violation", m.clone()),
        R::MissingEphemeralSpend(op) => CoreReject::new(
            RPC_TRANSACTION_REJECTED,
            "missing-ephemeral-spends",
            format!("dust output {op} is not spent by a child in the same package"),
        ),
        R::TooLongMempoolChain(m) => CoreReject::new(
            RPC_TRANSACTION_REJECTED,
            "too-long-mempool-chain",
            m.clone(),
        ),
        R::Package(m) => {
            let (token, rest) = token_and_rest(m, "package-not-child-with-parents");
            CoreReject::new(RPC_TRANSACTION_ERROR, token, rest)
        }
        R::Other(m) => {
            let (token, rest) = token_and_rest(m, "rejected");
            CoreReject::new(RPC_TRANSACTION_REJECTED, token, rest)
        }
    }
}

/// The class of a rejection, read from Core's reject reason (or a whole error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectClass {
    /// Bytes that do not decode.
    Decode,
    /// Context-free consensus checks failed (`bad-txns-...`).
    Consensus,
    /// Already confirmed.
    AlreadyConfirmed,
    /// Already in the mempool.
    AlreadyInMempool,
    /// An input is missing or spent.
    MissingInput,
    /// An input is spent by a mempool transaction (or a replacement failed).
    Conflict,
    /// Coinbase spent too early.
    ImmatureCoinbase,
    /// Outputs above inputs.
    InputsBelowOutputs,
    /// nLockTime not reached.
    NonFinal,
    /// BIP68 relative lock not reached.
    SequenceLocked,
    /// A script does not verify.
    ScriptInvalid,
    /// Not standard.
    NonStandard,
    /// Dust output.
    Dust,
    /// Fee below the relay or mempool minimum.
    FeeTooLow,
    /// TRUC rule broken.
    Truc,
    /// Ephemeral dust not spent in the package.
    MissingEphemeralSpend,
    /// Ancestor, descendant or cluster limit.
    TooLongMempoolChain,
    /// Not an acceptable package.
    Package,
    /// A reason we do not know.
    Other,
}

impl RejectClass {
    /// The class of our own rejection.
    pub fn of_reason(reason: &RejectReason) -> Self {
        use RejectReason as R;
        match reason {
            R::Decode(_) => Self::Decode,
            R::Consensus(_) => Self::Consensus,
            R::AlreadyConfirmed(_) => Self::AlreadyConfirmed,
            R::AlreadyInMempool(_) => Self::AlreadyInMempool,
            R::MissingInput { .. } => Self::MissingInput,
            R::Conflict { .. } => Self::Conflict,
            R::ImmatureCoinbase { .. } => Self::ImmatureCoinbase,
            R::InputsBelowOutputs { .. } => Self::InputsBelowOutputs,
            R::NonFinal { .. } => Self::NonFinal,
            R::SequenceLocked { .. } => Self::SequenceLocked,
            R::ScriptInvalid { .. } => Self::ScriptInvalid,
            R::NonStandard(_) => Self::NonStandard,
            R::Dust(_) => Self::Dust,
            R::FeeTooLow { .. } => Self::FeeTooLow,
            R::Truc(_) => Self::Truc,
            R::MissingEphemeralSpend(_) => Self::MissingEphemeralSpend,
            R::TooLongMempoolChain(_) => Self::TooLongMempoolChain,
            R::Package(_) => Self::Package,
            R::Other(_) => Self::Other,
        }
    }

    /// The class of a Core reject reason or error message (`"<reason>, <debug>"`).
    pub fn of(message: &str) -> Self {
        let m = message.trim();
        let starts = |p: &str| m.starts_with(p);
        if starts("TX decode failed") || starts("tx decode failed") {
            Self::Decode
        } else if starts(ALREADY_IN_UTXO_SET) || starts("txn-already-known") {
            Self::AlreadyConfirmed
        } else if starts("txn-already-in-mempool") || starts("txn-same-nonwitness-data-in-mempool")
        {
            Self::AlreadyInMempool
        } else if starts("bad-txns-inputs-missingorspent")
            || starts("missing-inputs")
            || starts("Inputs missing or spent")
        {
            Self::MissingInput
        } else if starts("txn-mempool-conflict")
            || starts("insufficient fee")
            || starts("bip125-replacement-disallowed")
            || starts("replacement-")
            || starts("too many potential replacements")
            || starts("bad-txns-spends-conflicting-tx")
            || starts("conflict-in-package")
        {
            Self::Conflict
        } else if starts("bad-txns-premature-spend-of-coinbase") {
            Self::ImmatureCoinbase
        } else if starts("bad-txns-in-belowout") {
            Self::InputsBelowOutputs
        } else if starts("non-final") {
            Self::NonFinal
        } else if starts("non-BIP68-final") {
            Self::SequenceLocked
        } else if starts("mempool-script-verify-flag-failed")
            || starts("mandatory-script-verify-flag-failed")
            || starts("block-script-verify-flag-failed")
            || starts("non-mandatory-script-verify-flag")
        {
            Self::ScriptInvalid
        } else if starts("dust") {
            Self::Dust
        } else if starts("min relay fee not met") || starts("mempool min fee not met") {
            Self::FeeTooLow
        } else if starts("TRUC-violation") {
            Self::Truc
        } else if starts("missing-ephemeral-spends") {
            Self::MissingEphemeralSpend
        } else if starts("too-long-mempool-chain") || starts("too-large-cluster") {
            Self::TooLongMempoolChain
        } else if starts("package-")
            || starts("package topology disallowed")
            || starts("Transaction rejected due to invalid package")
        {
            Self::Package
        } else if starts("bad-txns-") || starts("bad-tx") || starts("coinbase") {
            Self::Consensus
        } else if [
            "version",
            "tx-size",
            "scriptsig-size",
            "scriptsig-not-pushonly",
            "scriptpubkey",
            "bare-multisig",
            "multi-op-return",
            "datacarrier",
            "bad-witness-nonstandard",
            "bad-txns-nonstandard-inputs",
            "non-standard",
            "tx-size-small",
        ]
        .iter()
        .any(|p| starts(p))
        {
            Self::NonStandard
        } else {
            Self::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, OutPoint, Txid};

    fn all_reasons() -> Vec<RejectReason> {
        let op = OutPoint::new(Txid::all_zeros(), 1);
        vec![
            RejectReason::Decode("x".into()),
            RejectReason::Consensus("bad-txns-vin-empty (kernel result X)".into()),
            RejectReason::AlreadyConfirmed(Txid::all_zeros()),
            RejectReason::AlreadyInMempool(Txid::all_zeros()),
            RejectReason::MissingInput {
                input: 0,
                outpoint: op,
            },
            RejectReason::Conflict {
                input: 0,
                outpoint: op,
                by: Txid::all_zeros(),
            },
            RejectReason::ImmatureCoinbase {
                input: 0,
                outpoint: op,
                height: 110,
                mature_at: 200,
            },
            RejectReason::InputsBelowOutputs {
                inputs: Amount::from_sat(1),
                outputs: Amount::from_sat(2),
            },
            RejectReason::NonFinal {
                lock_time: 5,
                height: 4,
                mtp: 0,
            },
            RejectReason::SequenceLocked {
                min_height: 10,
                min_time: -1,
                height: 4,
                mtp: 0,
            },
            RejectReason::ScriptInvalid {
                input: 1,
                message: "Invalid Schnorr signature".into(),
            },
            RejectReason::NonStandard("version 4 is not standard (1 to 3)".into()),
            RejectReason::NonStandard("scriptpubkey: output 0 has a non-standard script".into()),
            RejectReason::NonStandard("tx-size-small: 60 bytes without witness".into()),
            RejectReason::Dust("2 outputs below the dust threshold".into()),
            RejectReason::FeeTooLow {
                fee: Amount::ZERO,
                vsize: 110,
                rate: 0,
                min: 100,
            },
            RejectReason::Truc("version=3 tx is too big".into()),
            RejectReason::MissingEphemeralSpend(op),
            RejectReason::TooLongMempoolChain("26 unconfirmed ancestors".into()),
            RejectReason::Package("package-not-child-with-parents: child does not spend".into()),
        ]
    }

    #[test]
    fn every_reason_reads_back_as_its_own_class() {
        for r in all_reasons() {
            let core = to_core(&r);
            assert_eq!(
                RejectClass::of(&core.message()),
                RejectClass::of_reason(&r),
                "{r:?} -> {core:?}"
            );
            assert_eq!(
                RejectClass::of(core.test_accept_reason()),
                RejectClass::of_reason(&r),
                "{r:?} -> {core:?}"
            );
        }
    }

    #[test]
    fn core_strings_are_core_s() {
        let fee = to_core(&RejectReason::FeeTooLow {
            fee: Amount::ZERO,
            vsize: 110,
            rate: 0,
            min: 100,
        });
        assert_eq!(fee.message(), "min relay fee not met, 0 < 11");
        let missing = to_core(&all_reasons()[4]);
        assert_eq!(missing.code, -25);
        assert_eq!(missing.test_accept_reason(), "missing-inputs");
        assert_eq!(to_core(&all_reasons()[1]).reason, "bad-txns-vin-empty");
        assert_eq!(to_core(&all_reasons()[11]).reason, "version");
        assert_eq!(to_core(&all_reasons()[12]).reason, "scriptpubkey");
        assert_eq!(to_core(&all_reasons()[2]).code, -27);
        assert_eq!(to_core(&all_reasons()[0]).code, -22);
    }
}
