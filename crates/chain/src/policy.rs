//! Relay policy of Bitcoin Core 28+ that does not need the chain: standard scripts, dust, TRUC sizes.
//!
//! Consensus is judged by the kernel; these rules only decide what our mempool accepts and relays.

use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_PUSHNUM_1, OP_PUSHNUM_16, OP_RETURN};
use bitcoin::script::Instruction;
use bitcoin::{Amount, FeeRate, Script, Transaction, TxOut, Weight};

use crate::error::RejectReason;

/// Highest transaction version that is standard.
pub const MAX_STANDARD_TX_VERSION: i32 = 3;
/// The TRUC (BIP-431) transaction version.
pub const TRUC_VERSION: i32 = 3;
/// Largest standard transaction weight.
pub const MAX_STANDARD_TX_WEIGHT: Weight = Weight::from_wu(400_000);
/// Smallest standard serialized size without witness.
pub const MIN_STANDARD_TX_NONWITNESS_SIZE: usize = 65;
/// Largest standard scriptSig.
pub const MAX_STANDARD_SCRIPTSIG_SIZE: usize = 1650;
/// Bytes of OP_RETURN output scripts a standard transaction may carry in all (Core 30+:
/// `MAX_STANDARD_TX_WEIGHT / 4`, any number of OP_RETURN outputs).
pub const MAX_OP_RETURN_RELAY: usize = 100_000;
/// Largest standard P2WSH witness script.
pub const MAX_STANDARD_P2WSH_SCRIPT_SIZE: usize = 3600;
/// Most standard P2WSH stack items (excluding the witness script).
pub const MAX_STANDARD_P2WSH_STACK_ITEMS: usize = 100;
/// Largest standard P2WSH stack item.
pub const MAX_STANDARD_P2WSH_STACK_ITEM_SIZE: usize = 80;
/// Largest standard tapscript stack item.
pub const MAX_STANDARD_TAPSCRIPT_STACK_ITEM_SIZE: usize = 80;
/// Most dust outputs a standard transaction may have (ephemeral dust).
pub const MAX_DUST_OUTPUTS_PER_TX: usize = 1;
/// Largest TRUC transaction, in vbytes.
pub const TRUC_MAX_VSIZE: u64 = 10_000;
/// Largest TRUC child of an unconfirmed TRUC parent, in vbytes.
pub const TRUC_CHILD_MAX_VSIZE: u64 = 1_000;
/// Default limit on unconfirmed ancestors (and descendants), counting the transaction itself.
pub const DEFAULT_ANCESTOR_LIMIT: usize = 25;
/// Blocks before a coinbase output may be spent.
pub const COINBASE_MATURITY: u32 = 100;

/// Tunable relay policy, with Bitcoin Core's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Minimum relay fee rate (Core's `-minrelaytxfee`, 1000 sat/kvB in Core 28).
    pub min_relay_fee_rate: FeeRate,
    /// Fee rate used to compute dust thresholds (Core's `-dustrelayfee`, 3000 sat/kvB).
    pub dust_relay_fee_rate: FeeRate,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            min_relay_fee_rate: FeeRate::from_sat_per_vb_u32(1),
            dust_relay_fee_rate: FeeRate::from_sat_per_vb_u32(3),
        }
    }
}

/// The kind of an output script, as Bitcoin Core's `Solver` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Pay to public key.
    P2pk,
    /// Pay to public key hash.
    P2pkh,
    /// Pay to script hash.
    P2sh,
    /// Bare multisig (m-of-n, n <= 3).
    Multisig,
    /// Native segwit v0 key hash.
    P2wpkh,
    /// Native segwit v0 script hash.
    P2wsh,
    /// Taproot.
    P2tr,
    /// Pay to anchor (`OP_1 <0x4e73>`).
    P2a,
    /// A future witness version or program length.
    WitnessUnknown,
    /// Provably unspendable data carrier.
    NullData,
    /// Anything else.
    NonStandard,
}

/// Classify an output script.
pub fn classify(script: &Script) -> OutputKind {
    if is_p2a(script) {
        OutputKind::P2a
    } else if script.is_p2tr() {
        OutputKind::P2tr
    } else if script.is_p2wpkh() {
        OutputKind::P2wpkh
    } else if script.is_p2wsh() {
        OutputKind::P2wsh
    } else if script.is_witness_program() {
        let version = script.witness_version().map(|v| v.to_num()).unwrap_or(0);
        if version == 0 {
            OutputKind::NonStandard
        } else {
            OutputKind::WitnessUnknown
        }
    } else if script.is_p2pkh() {
        OutputKind::P2pkh
    } else if script.is_p2sh() {
        OutputKind::P2sh
    } else if script.is_p2pk() {
        OutputKind::P2pk
    } else if is_null_data(script) {
        OutputKind::NullData
    } else if is_bare_multisig(script) {
        OutputKind::Multisig
    } else {
        OutputKind::NonStandard
    }
}

/// `OP_1 <0x4e73>`: the pay-to-anchor output script.
pub fn is_p2a(script: &Script) -> bool {
    script.as_bytes() == [0x51, 0x02, 0x4e, 0x73]
}

/// `OP_RETURN` followed only by pushes.
fn is_null_data(script: &Script) -> bool {
    let bytes = script.as_bytes();
    if bytes.first() != Some(&OP_RETURN.to_u8()) {
        return false;
    }
    script
        .instructions()
        .skip(1)
        .all(|i| matches!(i, Ok(Instruction::PushBytes(_))) || is_small_int(&i))
}

fn is_small_int(i: &Result<Instruction<'_>, bitcoin::script::Error>) -> bool {
    match i {
        Ok(Instruction::Op(op)) => {
            let b = op.to_u8();
            b == 0 || (OP_PUSHNUM_1.to_u8()..=OP_PUSHNUM_16.to_u8()).contains(&b)
        }
        _ => false,
    }
}

/// `OP_m <key>... OP_n OP_CHECKMULTISIG` with 1 <= m <= n <= 3 (standard bare multisig).
fn is_bare_multisig(script: &Script) -> bool {
    let Ok(ins) = script.instructions().collect::<Result<Vec<_>, _>>() else {
        return false;
    };
    if ins.len() < 4 {
        return false;
    }
    let small = |i: &Instruction<'_>| match i {
        Instruction::Op(op)
            if (OP_PUSHNUM_1.to_u8()..=OP_PUSHNUM_16.to_u8()).contains(&op.to_u8()) =>
        {
            Some(usize::from(op.to_u8() - OP_PUSHNUM_1.to_u8() + 1))
        }
        _ => None,
    };
    let (Some(m), Some(n)) = (small(&ins[0]), small(&ins[ins.len() - 2])) else {
        return false;
    };
    let keys = &ins[1..ins.len() - 2];
    matches!(ins[ins.len() - 1], Instruction::Op(op) if op == OP_CHECKMULTISIG)
        && m <= n
        && n <= 3
        && keys.len() == n
        && keys
            .iter()
            .all(|k| matches!(k, Instruction::PushBytes(p) if p.len() == 33 || p.len() == 65))
}

/// Bitcoin Core's `GetDustThreshold`: the smallest value an output may carry.
pub fn dust_threshold(txout: &TxOut, dust_relay_fee_rate: FeeRate) -> Amount {
    if is_unspendable(&txout.script_pubkey) {
        return Amount::ZERO;
    }
    let out_size = txout.size() as u64;
    // Size of the input that would spend it: outpoint, scriptSig length, sequence and a
    // signature, discounted for witness programs.
    let spend_size = if txout.script_pubkey.is_witness_program() {
        32 + 4 + 1 + (107 / 4) + 4
    } else {
        32 + 4 + 1 + 107 + 4
    };
    // Core: CFeeRate::GetFee(bytes) = rate_per_kvb * bytes / 1000.
    let per_kvb = dust_relay_fee_rate.to_sat_per_kwu() * 4;
    Amount::from_sat(per_kvb * (out_size + spend_size) / 1000)
}

/// True when the script can never be spent (OP_RETURN or oversized).
pub fn is_unspendable(script: &Script) -> bool {
    script.as_bytes().first() == Some(&OP_RETURN.to_u8()) || script.len() > 10_000
}

/// Indices of the outputs below the dust threshold.
pub fn dust_outputs(tx: &Transaction, dust_relay_fee_rate: FeeRate) -> Vec<u32> {
    tx.output
        .iter()
        .enumerate()
        .filter(|(_, o)| o.value < dust_threshold(o, dust_relay_fee_rate))
        .map(|(i, _)| i as u32)
        .collect()
}

/// Bitcoin Core's `IsStandardTx`: checks that need no spent outputs.
pub fn check_standard(tx: &Transaction, config: &PolicyConfig) -> Result<(), RejectReason> {
    let version = tx.version.0;
    if !(1..=MAX_STANDARD_TX_VERSION).contains(&version) {
        return Err(RejectReason::NonStandard(format!(
            "version {version} is not standard (1 to {MAX_STANDARD_TX_VERSION})"
        )));
    }
    if tx.weight() > MAX_STANDARD_TX_WEIGHT {
        return Err(RejectReason::NonStandard(format!(
            "tx-size: weight {} exceeds {}",
            tx.weight(),
            MAX_STANDARD_TX_WEIGHT
        )));
    }
    for (i, input) in tx.input.iter().enumerate() {
        if input.script_sig.len() > MAX_STANDARD_SCRIPTSIG_SIZE {
            return Err(RejectReason::NonStandard(format!(
                "scriptsig-size: input {i} scriptSig is {} bytes",
                input.script_sig.len()
            )));
        }
        if !input.script_sig.is_push_only() {
            return Err(RejectReason::NonStandard(format!(
                "scriptsig-not-pushonly: input {i}"
            )));
        }
    }
    let mut datacarrier_left = MAX_OP_RETURN_RELAY;
    for (i, output) in tx.output.iter().enumerate() {
        match classify(&output.script_pubkey) {
            OutputKind::NonStandard => {
                return Err(RejectReason::NonStandard(format!(
                    "scriptpubkey: output {i} has a non-standard script {}",
                    output.script_pubkey
                )))
            }
            OutputKind::NullData => {
                let len = output.script_pubkey.len();
                if len > datacarrier_left {
                    return Err(RejectReason::NonStandard(format!(
                        "datacarrier: output {i} OP_RETURN script of {len} bytes exceeds what is \
                         left of the {MAX_OP_RETURN_RELAY}-byte allowance ({datacarrier_left})"
                    )));
                }
                datacarrier_left -= len;
            }
            _ => {}
        }
    }
    let dust = dust_outputs(tx, config.dust_relay_fee_rate);
    if dust.len() > MAX_DUST_OUTPUTS_PER_TX {
        return Err(RejectReason::Dust(format!(
            "{} outputs below the dust threshold (at most {MAX_DUST_OUTPUTS_PER_TX}, as ephemeral dust)",
            dust.len()
        )));
    }
    if tx.base_size() < MIN_STANDARD_TX_NONWITNESS_SIZE {
        return Err(RejectReason::NonStandard(format!(
            "tx-size-small: {} bytes without witness, minimum {}",
            tx.base_size(),
            MIN_STANDARD_TX_NONWITNESS_SIZE
        )));
    }
    Ok(())
}

/// Bitcoin Core's `IsWitnessStandard` and input checks that need the spent outputs.
pub fn check_inputs_standard(tx: &Transaction, spent: &[TxOut]) -> Result<(), RejectReason> {
    for (i, (input, prev)) in tx.input.iter().zip(spent).enumerate() {
        let spk = &prev.script_pubkey;
        match classify(spk) {
            OutputKind::NonStandard | OutputKind::WitnessUnknown => {
                // Core refuses spends of non-standard outputs (witness unknown is upgradable).
                return Err(RejectReason::NonStandard(format!(
                    "bad-txns-nonstandard-inputs: input {i} spends a non-standard or upgradable output"
                )));
            }
            OutputKind::P2a if !input.witness.is_empty() => {
                return Err(RejectReason::NonStandard(format!(
                    "bad-witness-nonstandard: input {i} spends a P2A anchor with a non-empty witness"
                )));
            }
            OutputKind::P2wsh => {
                let w = &input.witness;
                if let Some(script) = w.last() {
                    if script.len() > MAX_STANDARD_P2WSH_SCRIPT_SIZE {
                        return Err(RejectReason::NonStandard(format!(
                            "bad-witness-nonstandard: input {i} witness script too large"
                        )));
                    }
                    let items = w.len() - 1;
                    if items > MAX_STANDARD_P2WSH_STACK_ITEMS
                        || w.iter()
                            .take(items)
                            .any(|e| e.len() > MAX_STANDARD_P2WSH_STACK_ITEM_SIZE)
                    {
                        return Err(RejectReason::NonStandard(format!(
                            "bad-witness-nonstandard: input {i} P2WSH stack too large"
                        )));
                    }
                }
            }
            OutputKind::P2tr => {
                let w = &input.witness;
                if w.taproot_annex().is_some() {
                    return Err(RejectReason::NonStandard(format!(
                        "bad-witness-nonstandard: input {i} carries a taproot annex"
                    )));
                }
                // Script path: stack items besides script and control block are bounded.
                if w.len() >= 2 && w.taproot_leaf_script().is_some() {
                    let items = w.len() - 2;
                    if w.iter()
                        .take(items)
                        .any(|e| e.len() > MAX_STANDARD_TAPSCRIPT_STACK_ITEM_SIZE)
                    {
                        return Err(RejectReason::NonStandard(format!(
                            "bad-witness-nonstandard: input {i} tapscript stack item too large"
                        )));
                    }
                }
            }
            _ => {}
        }
        if !spk.is_witness_program() && !input.witness.is_empty() && !spk.is_p2sh() {
            return Err(RejectReason::NonStandard(format!(
                "bad-witness-nonstandard: input {i} has a witness but spends a non-witness output"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::ScriptBuf;

    #[test]
    fn dust_thresholds_match_core() {
        let rate = PolicyConfig::default().dust_relay_fee_rate;
        let p2a = TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_p2a(),
        };
        assert_eq!(dust_threshold(&p2a, rate), Amount::from_sat(240));
        let p2tr = TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes([&[0x51, 0x20][..], &[7u8; 32]].concat()),
        };
        assert_eq!(dust_threshold(&p2tr, rate), Amount::from_sat(330));
        let p2wpkh = TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes([&[0x00, 0x14][..], &[7u8; 20]].concat()),
        };
        assert_eq!(dust_threshold(&p2wpkh, rate), Amount::from_sat(294));
        let p2pkh = TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::from_bytes(
                [&[0x76, 0xa9, 0x14][..], &[7u8; 20], &[0x88, 0xac]].concat(),
            ),
        };
        assert_eq!(dust_threshold(&p2pkh, rate), Amount::from_sat(546));
    }

    #[test]
    fn classifies_scripts() {
        assert_eq!(classify(&ScriptBuf::new_p2a()), OutputKind::P2a);
        assert_eq!(
            classify(&ScriptBuf::from_bytes(vec![0x6a, 0x01, 0x00])),
            OutputKind::NullData
        );
        assert_eq!(
            classify(&ScriptBuf::from_bytes(vec![0x51])),
            OutputKind::NonStandard
        );
        assert_eq!(
            classify(&ScriptBuf::from_bytes(
                [&[0x52, 0x20][..], &[1u8; 32]].concat()
            )),
            OutputKind::WitnessUnknown
        );
        let mut ms = vec![0x51, 33];
        ms.extend([2u8; 33]);
        ms.extend([0x51, 0xae]);
        assert_eq!(classify(&ScriptBuf::from_bytes(ms)), OutputKind::Multisig);
    }
}
