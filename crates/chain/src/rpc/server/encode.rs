//! Bitcoin Core's JSON for scripts, transactions, headers and blocks (`core_io.cpp`,
//! `rpc/blockchain.cpp`): script assembly (`ScriptToAsmStr`), output types (`Solver`), addresses,
//! inferred descriptors, `TxToUniv`, `blockheaderToJSON` and `blockToJSON`.

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hex::DisplayHex;
use bitcoin::{Address, Block, Network, Script, Transaction, TxOut};

use super::descriptor::infer_descriptor;
use super::json::{obj, Json};

/// What `Solver` says an output script is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxoutType {
    /// Anything else.
    NonStandard,
    /// `OP_1 <0x4e73>`.
    Anchor,
    /// `<pubkey> OP_CHECKSIG`.
    PubKey,
    /// P2PKH.
    PubKeyHash,
    /// P2SH.
    ScriptHash,
    /// Bare multisig (up to 20 keys).
    Multisig,
    /// `OP_RETURN` and pushes.
    NullData,
    /// P2WPKH.
    WitnessV0KeyHash,
    /// P2WSH.
    WitnessV0ScriptHash,
    /// P2TR.
    WitnessV1Taproot,
    /// A witness program of a future version.
    WitnessUnknown,
}

impl TxoutType {
    /// Core's name (`GetTxnOutputType`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            TxoutType::NonStandard => "nonstandard",
            TxoutType::Anchor => "anchor",
            TxoutType::PubKey => "pubkey",
            TxoutType::PubKeyHash => "pubkeyhash",
            TxoutType::ScriptHash => "scripthash",
            TxoutType::Multisig => "multisig",
            TxoutType::NullData => "nulldata",
            TxoutType::WitnessV0KeyHash => "witness_v0_keyhash",
            TxoutType::WitnessV0ScriptHash => "witness_v0_scripthash",
            TxoutType::WitnessV1Taproot => "witness_v1_taproot",
            TxoutType::WitnessUnknown => "witness_unknown",
        }
    }
}

const OP_0: u8 = 0x00;
const OP_PUSHDATA1: u8 = 0x4c;
const OP_PUSHDATA2: u8 = 0x4d;
const OP_PUSHDATA4: u8 = 0x4e;
const OP_1: u8 = 0x51;
const OP_16: u8 = 0x60;
const OP_RETURN: u8 = 0x6a;
const OP_CHECKSIG: u8 = 0xac;
const OP_CHECKMULTISIG: u8 = 0xae;

/// One instruction: the opcode and, for pushes, the pushed bytes (Core's `GetScriptOp`).
/// `None` when the script ends in the middle of a push.
pub(crate) fn get_op<'a>(script: &'a [u8], pc: &mut usize) -> Option<(u8, &'a [u8])> {
    let opcode = *script.get(*pc)?;
    *pc += 1;
    if opcode > OP_PUSHDATA4 {
        return Some((opcode, &[]));
    }
    let rest = &script[*pc..];
    let (size, header): (usize, usize) = match opcode {
        OP_PUSHDATA1 => (usize::from(*rest.first()?), 1),
        OP_PUSHDATA2 => (
            usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        OP_PUSHDATA4 => (
            usize::try_from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?)).ok()?,
            4,
        ),
        n => (usize::from(n), 0),
    };
    let data = rest.get(header..header.checked_add(size)?)?;
    *pc += header + size;
    Some((opcode, data))
}

/// Core's `GetOpName`.
pub(crate) fn op_name(op: u8) -> &'static str {
    const NUMBERS: [&str; 16] = [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    // OP_NOP (0x61) to OP_CHECKSIGADD (0xba).
    const HIGH: [&str; 90] = [
        "OP_NOP",
        "OP_VER",
        "OP_IF",
        "OP_NOTIF",
        "OP_VERIF",
        "OP_VERNOTIF",
        "OP_ELSE",
        "OP_ENDIF",
        "OP_VERIFY",
        "OP_RETURN",
        "OP_TOALTSTACK",
        "OP_FROMALTSTACK",
        "OP_2DROP",
        "OP_2DUP",
        "OP_3DUP",
        "OP_2OVER",
        "OP_2ROT",
        "OP_2SWAP",
        "OP_IFDUP",
        "OP_DEPTH",
        "OP_DROP",
        "OP_DUP",
        "OP_NIP",
        "OP_OVER",
        "OP_PICK",
        "OP_ROLL",
        "OP_ROT",
        "OP_SWAP",
        "OP_TUCK",
        "OP_CAT",
        "OP_SUBSTR",
        "OP_LEFT",
        "OP_RIGHT",
        "OP_SIZE",
        "OP_INVERT",
        "OP_AND",
        "OP_OR",
        "OP_XOR",
        "OP_EQUAL",
        "OP_EQUALVERIFY",
        "OP_RESERVED1",
        "OP_RESERVED2",
        "OP_1ADD",
        "OP_1SUB",
        "OP_2MUL",
        "OP_2DIV",
        "OP_NEGATE",
        "OP_ABS",
        "OP_NOT",
        "OP_0NOTEQUAL",
        "OP_ADD",
        "OP_SUB",
        "OP_MUL",
        "OP_DIV",
        "OP_MOD",
        "OP_LSHIFT",
        "OP_RSHIFT",
        "OP_BOOLAND",
        "OP_BOOLOR",
        "OP_NUMEQUAL",
        "OP_NUMEQUALVERIFY",
        "OP_NUMNOTEQUAL",
        "OP_LESSTHAN",
        "OP_GREATERTHAN",
        "OP_LESSTHANOREQUAL",
        "OP_GREATERTHANOREQUAL",
        "OP_MIN",
        "OP_MAX",
        "OP_WITHIN",
        "OP_RIPEMD160",
        "OP_SHA1",
        "OP_SHA256",
        "OP_HASH160",
        "OP_HASH256",
        "OP_CODESEPARATOR",
        "OP_CHECKSIG",
        "OP_CHECKSIGVERIFY",
        "OP_CHECKMULTISIG",
        "OP_CHECKMULTISIGVERIFY",
        "OP_NOP1",
        "OP_CHECKLOCKTIMEVERIFY",
        "OP_CHECKSEQUENCEVERIFY",
        "OP_NOP4",
        "OP_NOP5",
        "OP_NOP6",
        "OP_NOP7",
        "OP_NOP8",
        "OP_NOP9",
        "OP_NOP10",
        "OP_CHECKSIGADD",
    ];
    match op {
        0x00 => "0",
        OP_PUSHDATA1 => "OP_PUSHDATA1",
        OP_PUSHDATA2 => "OP_PUSHDATA2",
        OP_PUSHDATA4 => "OP_PUSHDATA4",
        0x4f => "-1",
        0x50 => "OP_RESERVED",
        OP_1..=OP_16 => NUMBERS[usize::from(op - OP_1)],
        0x61..=0xba => HIGH[usize::from(op - 0x61)],
        0xff => "OP_INVALIDOPCODE",
        _ => "OP_UNKNOWN",
    }
}

/// A script number of at most four bytes, minimal encoding not required (`CScriptNum::getint`).
fn script_num(data: &[u8]) -> i64 {
    let Some((&last, _)) = data.split_last() else {
        return 0;
    };
    let mut value: i64 = 0;
    for (i, b) in data.iter().enumerate() {
        value |= i64::from(*b) << (8 * i);
    }
    if last & 0x80 != 0 {
        -(value & !(0x80i64 << (8 * (data.len() - 1))))
    } else {
        value
    }
}

/// Strict DER signature with a hash type byte (BIP66's `IsValidSignatureEncoding`).
fn is_valid_signature_encoding(sig: &[u8]) -> bool {
    let len = sig.len();
    if !(9..=73).contains(&len) || sig[0] != 0x30 || usize::from(sig[1]) != len - 3 {
        return false;
    }
    let len_r = usize::from(sig[3]);
    if 5 + len_r >= len {
        return false;
    }
    let len_s = usize::from(sig[5 + len_r]);
    if len_r + len_s + 7 != len {
        return false;
    }
    if sig[2] != 0x02 || len_r == 0 || sig[4] & 0x80 != 0 {
        return false;
    }
    if len_r > 1 && sig[4] == 0x00 && sig[5] & 0x80 == 0 {
        return false;
    }
    if sig[len_r + 4] != 0x02 || len_s == 0 || sig[len_r + 6] & 0x80 != 0 {
        return false;
    }
    if len_s > 1 && sig[len_r + 6] == 0x00 && sig[len_r + 7] & 0x80 == 0 {
        return false;
    }
    true
}

fn sighash_name(byte: u8) -> Option<&'static str> {
    Some(match byte {
        0x01 => "ALL",
        0x81 => "ALL|ANYONECANPAY",
        0x02 => "NONE",
        0x82 => "NONE|ANYONECANPAY",
        0x03 => "SINGLE",
        0x83 => "SINGLE|ANYONECANPAY",
        _ => return None,
    })
}

/// Core's `ScriptToAsmStr`; `attempt_sighash_decode` for scriptSigs.
pub(crate) fn script_to_asm(script: &[u8], attempt_sighash_decode: bool) -> String {
    let unspendable = script.first() == Some(&OP_RETURN) || script.len() > 10_000;
    let mut out = String::new();
    let mut pc = 0;
    while pc < script.len() {
        if !out.is_empty() {
            out.push(' ');
        }
        let Some((opcode, data)) = get_op(script, &mut pc) else {
            out.push_str("[error]");
            return out;
        };
        if opcode <= OP_PUSHDATA4 {
            if data.len() <= 4 {
                out.push_str(&script_num(data).to_string());
            } else if attempt_sighash_decode && !unspendable {
                // STRICTENC: strict DER and a defined hash type.
                let decoded = is_valid_signature_encoding(data)
                    .then(|| data[data.len() - 1])
                    .and_then(|b| sighash_name(b).map(|n| (b, n)));
                match decoded {
                    Some((_, name)) => {
                        out.push_str(&data[..data.len() - 1].to_lower_hex_string());
                        out.push('[');
                        out.push_str(name);
                        out.push(']');
                    }
                    None => out.push_str(&data.to_lower_hex_string()),
                }
            } else {
                out.push_str(&data.to_lower_hex_string());
            }
        } else {
            out.push_str(op_name(opcode));
        }
    }
    out
}

/// Whether the script is only pushes (and small numbers) from `start` (`IsPushOnly`).
fn is_push_only(script: &[u8], start: usize) -> bool {
    let mut pc = start;
    while pc < script.len() {
        match get_op(script, &mut pc) {
            Some((op, _)) if op <= OP_16 => {}
            _ => return false,
        }
    }
    true
}

/// The witness version and program, if the script is one (`IsWitnessProgram`).
pub(crate) fn witness_program(script: &[u8]) -> Option<(u8, &[u8])> {
    if !(4..=42).contains(&script.len()) {
        return None;
    }
    let version = match script[0] {
        OP_0 => 0,
        op @ OP_1..=OP_16 => op - OP_1 + 1,
        _ => return None,
    };
    (usize::from(script[1]) + 2 == script.len()).then(|| (version, &script[2..]))
}

fn valid_pubkey_size(key: &[u8]) -> bool {
    match key.first() {
        Some(2) | Some(3) => key.len() == 33,
        Some(4) | Some(6) | Some(7) => key.len() == 65,
        _ => false,
    }
}

/// A small number, as a multisig count (`GetScriptNumber` with minimal encoding).
fn small_number(op: u8, data: &[u8]) -> Option<i64> {
    if (OP_1..=OP_16).contains(&op) {
        return Some(i64::from(op - OP_1 + 1));
    }
    if op > OP_PUSHDATA4 {
        return None;
    }
    // Minimal push and minimal number encoding.
    let minimal_push = match data.len() {
        0 => op == OP_0,
        1 if (1..=16).contains(&data[0]) || data[0] == 0x81 => false,
        n if n <= 75 => usize::from(op) == n,
        n if n <= 255 => op == OP_PUSHDATA1,
        n if n <= 65535 => op == OP_PUSHDATA2,
        _ => true,
    };
    if !minimal_push || data.len() > 4 {
        return None;
    }
    if let Some((&last, rest)) = data.split_last() {
        if last & 0x7f == 0 && (rest.is_empty() || rest[rest.len() - 1] & 0x80 == 0) {
            return None;
        }
    }
    Some(script_num(data))
}

/// Core's `Solver`: the type, and the solutions (keys for `pubkey` and `multisig`, whose first
/// and last solutions are the required and total counts).
pub(crate) fn solver(script: &[u8]) -> (TxoutType, Vec<Vec<u8>>) {
    if script.len() == 23 && script[0] == 0xa9 && script[1] == 0x14 && script[22] == 0x87 {
        return (TxoutType::ScriptHash, vec![script[2..22].to_vec()]);
    }
    if let Some((version, program)) = witness_program(script) {
        return match (version, program.len()) {
            (0, 20) => (TxoutType::WitnessV0KeyHash, vec![program.to_vec()]),
            (0, 32) => (TxoutType::WitnessV0ScriptHash, vec![program.to_vec()]),
            (1, 32) => (TxoutType::WitnessV1Taproot, vec![program.to_vec()]),
            (1, 2) if program == [0x4e, 0x73] => (TxoutType::Anchor, vec![]),
            (0, _) => (TxoutType::NonStandard, vec![]),
            _ => (
                TxoutType::WitnessUnknown,
                vec![vec![version], program.to_vec()],
            ),
        };
    }
    if script.first() == Some(&OP_RETURN) && is_push_only(script, 1) {
        return (TxoutType::NullData, vec![]);
    }
    for size in [65usize, 33] {
        if script.len() == size + 2
            && usize::from(script[0]) == size
            && script[size + 1] == OP_CHECKSIG
            && valid_pubkey_size(&script[1..=size])
        {
            return (TxoutType::PubKey, vec![script[1..=size].to_vec()]);
        }
    }
    if script.len() == 25
        && script[..3] == [0x76, 0xa9, 0x14]
        && script[23] == 0x88
        && script[24] == OP_CHECKSIG
    {
        return (TxoutType::PubKeyHash, vec![script[3..23].to_vec()]);
    }
    if let Some(solutions) = match_multisig(script) {
        return (TxoutType::Multisig, solutions);
    }
    (TxoutType::NonStandard, vec![])
}

fn match_multisig(script: &[u8]) -> Option<Vec<Vec<u8>>> {
    if script.last() != Some(&OP_CHECKMULTISIG) {
        return None;
    }
    let mut pc = 0;
    let (op, data) = get_op(script, &mut pc)?;
    let required = small_number(op, data).filter(|n| (1..=20).contains(n))?;
    let mut keys = Vec::new();
    let (mut op, mut data) = (0u8, &[][..]);
    let mut ended = true;
    while let Some((o, d)) = get_op(script, &mut pc) {
        (op, data) = (o, d);
        if !valid_pubkey_size(d) {
            ended = false;
            break;
        }
        keys.push(d.to_vec());
    }
    if ended {
        // The loop ran out of instructions on a key (or a failed read): Core's opcode is then
        // OP_INVALIDOPCODE, which is no number.
        return None;
    }
    let total = small_number(op, data).filter(|n| (required..=20).contains(n))?;
    if keys.len() as i64 != total || pc + 1 != script.len() {
        return None;
    }
    let mut solutions = vec![vec![required as u8]];
    solutions.extend(keys);
    solutions.push(vec![total as u8]);
    Some(solutions)
}

/// The address of an output script, as `ScriptToUniv` reports it (none for bare keys,
/// multisig, data and non-standard scripts).
pub(crate) fn address(script: &Script) -> Option<String> {
    let (kind, _) = solver(script.as_bytes());
    match kind {
        TxoutType::PubKeyHash
        | TxoutType::ScriptHash
        | TxoutType::WitnessV0KeyHash
        | TxoutType::WitnessV0ScriptHash
        | TxoutType::WitnessV1Taproot
        | TxoutType::Anchor
        | TxoutType::WitnessUnknown => Address::from_script(script, Network::Regtest)
            .ok()
            .map(|a| a.to_string()),
        _ => None,
    }
}

/// Core's `ScriptToUniv` with hex and address.
pub(crate) fn script_pubkey_json(script: &Script) -> Json {
    let mut o = obj! {
        "asm" => script_to_asm(script.as_bytes(), false),
        "desc" => infer_descriptor(script),
        "hex" => script.as_bytes().to_lower_hex_string(),
    };
    if let Some(a) = address(script) {
        o.push("address", a);
    }
    o.push("type", solver(script.as_bytes()).0.name());
    o
}

/// What an input spent, for fees and verbosity 3 (Core's undo data).
#[derive(Debug, Clone)]
pub(crate) struct Prevout {
    /// The spent output.
    pub txout: TxOut,
    /// Height of the block that created it.
    pub height: u32,
    /// Whether a coinbase created it.
    pub coinbase: bool,
}

/// How much of a transaction to show (Core's `TxVerbosity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxVerbosity {
    /// Fields and, with undo data, the fee.
    Details,
    /// Also each input's prevout.
    DetailsAndPrevout,
}

/// Core's `TxToUniv`. `prevouts` plays undo data: given (one per input) for confirmed
/// non-coinbase transactions, it adds the fee (and, with [`TxVerbosity::DetailsAndPrevout`],
/// each input's prevout).
pub(crate) fn tx_to_json(
    tx: &Transaction,
    prevouts: Option<&[Prevout]>,
    verbosity: TxVerbosity,
    include_hex: bool,
) -> Json {
    let weight = tx.weight().to_wu();
    let mut entry = obj! {
        "txid" => tx.compute_txid().to_string(),
        "hash" => tx.compute_wtxid().to_string(),
        "version" => tx.version.0,
        "size" => tx.total_size(),
        "vsize" => weight.div_ceil(4),
        "weight" => weight,
        "locktime" => tx.lock_time.to_consensus_u32(),
    };
    let prevouts = prevouts.filter(|p| p.len() == tx.input.len() && !tx.is_coinbase());
    let mut vin = Vec::with_capacity(tx.input.len());
    let mut total_in: i64 = 0;
    for (i, txin) in tx.input.iter().enumerate() {
        let mut o = Json::object();
        if tx.is_coinbase() {
            o.push("coinbase", txin.script_sig.as_bytes().to_lower_hex_string());
        } else {
            o.push("txid", txin.previous_output.txid.to_string());
            o.push("vout", txin.previous_output.vout);
            o.push(
                "scriptSig",
                obj! {
                    "asm" => script_to_asm(txin.script_sig.as_bytes(), true),
                    "hex" => txin.script_sig.as_bytes().to_lower_hex_string(),
                },
            );
        }
        if !txin.witness.is_empty() {
            let items: Vec<Json> = txin
                .witness
                .iter()
                .map(|w| Json::from(w.to_lower_hex_string()))
                .collect();
            o.push("txinwitness", items);
        }
        if let Some(prevouts) = prevouts {
            let p = &prevouts[i];
            total_in = total_in.saturating_add(p.txout.value.to_sat() as i64);
            if verbosity == TxVerbosity::DetailsAndPrevout {
                o.push(
                    "prevout",
                    obj! {
                        "generated" => p.coinbase,
                        "height" => p.height,
                        "value" => Json::Amount(p.txout.value.to_sat() as i64),
                        "scriptPubKey" => script_pubkey_json(&p.txout.script_pubkey),
                    },
                );
            }
        }
        o.push("sequence", txin.sequence.0);
        vin.push(o);
    }
    entry.push("vin", vin);
    let mut total_out: i64 = 0;
    let vout: Vec<Json> = tx
        .output
        .iter()
        .enumerate()
        .map(|(n, out)| {
            total_out = total_out.saturating_add(out.value.to_sat() as i64);
            obj! {
                "value" => Json::Amount(out.value.to_sat() as i64),
                "n" => n,
                "scriptPubKey" => script_pubkey_json(&out.script_pubkey),
            }
        })
        .collect();
    entry.push("vout", vout);
    if prevouts.is_some() {
        entry.push("fee", Json::Amount(total_in - total_out));
    }
    if include_hex {
        entry.push("hex", serialize_hex(tx));
    }
    entry
}

/// Difficulty of a compact target (`GetDifficulty`).
pub(crate) fn difficulty(bits: u32) -> f64 {
    let mut shift = (bits >> 24) & 0xff;
    let mut diff = f64::from(0x0000_ffff) / f64::from(bits & 0x00ff_ffff);
    while shift < 29 {
        diff *= 256.0;
        shift += 1;
    }
    while shift > 29 {
        diff /= 256.0;
        shift -= 1;
    }
    diff
}

/// The target of a compact target, as Core prints a `uint256`.
pub(crate) fn target_hex(bits: u32) -> String {
    let target = bitcoin::Target::from_compact(bitcoin::CompactTarget::from_consensus(bits));
    target.to_be_bytes().to_lower_hex_string()
}

/// Total work of `blocks` blocks of target `bits`, as Core prints `nChainWork`.
pub(crate) fn chainwork_hex(bits: u32, blocks: u64) -> String {
    let target = bitcoin::Target::from_compact(bitcoin::CompactTarget::from_consensus(bits));
    let per_block = target.to_work().to_be_bytes();
    // Long multiplication of a 256-bit big-endian number by `blocks`.
    let mut out = [0u8; 32];
    let mut carry: u128 = 0;
    for i in (0..32).rev() {
        let v = u128::from(per_block[i]) * u128::from(blocks) + carry;
        out[i] = (v & 0xff) as u8;
        carry = v >> 8;
    }
    out.to_lower_hex_string()
}

/// Where a block sits in the active chain, for its header's JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockPlace {
    /// Its height.
    pub height: u32,
    /// Height of the tip.
    pub tip_height: u32,
    /// Its median time past.
    pub median_time: u32,
    /// The next block's hash, if any.
    pub next: Option<bitcoin::BlockHash>,
}

/// Core's `blockheaderToJSON`.
pub(crate) fn header_to_json(block: &Block, place: BlockPlace) -> Json {
    let h = &block.header;
    let bits = h.bits.to_consensus();
    let mut o = obj! {
        "hash" => block.block_hash().to_string(),
        "confirmations" => i64::from(place.tip_height) - i64::from(place.height) + 1,
        "height" => place.height,
        "version" => h.version.to_consensus(),
        "versionHex" => format!("{:08x}", h.version.to_consensus()),
        "merkleroot" => h.merkle_root.to_string(),
        "time" => h.time,
        "mediantime" => place.median_time,
        "nonce" => h.nonce,
        "bits" => format!("{bits:08x}"),
        "target" => target_hex(bits),
        "difficulty" => Json::Real(difficulty(bits)),
        "chainwork" => chainwork_hex(bits, u64::from(place.height) + 1),
        "nTx" => block.txdata.len(),
    };
    if place.height > 0 {
        o.push("previousblockhash", h.prev_blockhash.to_string());
    }
    if let Some(next) = place.next {
        o.push("nextblockhash", next.to_string());
    }
    o
}

/// Core's `coinbaseTxToJSON`.
fn coinbase_to_json(tx: &Transaction) -> Json {
    let mut o = obj! {
        "version" => tx.version.0,
        "locktime" => tx.lock_time.to_consensus_u32(),
    };
    if let Some(vin) = tx.input.first() {
        o.push("sequence", vin.sequence.0);
        o.push("coinbase", vin.script_sig.as_bytes().to_lower_hex_string());
        if let Some(w) = vin.witness.iter().next() {
            o.push("witness", w.to_lower_hex_string());
        }
    }
    o
}

/// How much of a block to show (`getblock`'s verbosity 1, 2 or 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockVerbosity {
    /// Transaction ids.
    TxIds,
    /// Transactions.
    Details,
    /// Transactions with prevouts.
    DetailsAndPrevout,
}

/// Core's `blockToJSON`; `prevouts` gives, per non-coinbase transaction, what its inputs spent.
pub(crate) fn block_to_json(
    block: &Block,
    place: BlockPlace,
    verbosity: BlockVerbosity,
    prevouts: &[Option<Vec<Prevout>>],
) -> Json {
    let mut o = header_to_json(block, place);
    let stripped: usize = bitcoin::consensus::encode::serialize(&block.header).len()
        + bitcoin::VarInt(block.txdata.len() as u64).size()
        + block.txdata.iter().map(|t| t.base_size()).sum::<usize>();
    o.push("strippedsize", stripped);
    o.push("size", block.total_size());
    o.push("weight", block.weight().to_wu());
    if let Some(cb) = block.txdata.first() {
        o.push("coinbase_tx", coinbase_to_json(cb));
    }
    let txs: Vec<Json> = match verbosity {
        BlockVerbosity::TxIds => block
            .txdata
            .iter()
            .map(|t| Json::from(t.compute_txid().to_string()))
            .collect(),
        BlockVerbosity::Details | BlockVerbosity::DetailsAndPrevout => {
            let tv = if verbosity == BlockVerbosity::Details {
                TxVerbosity::Details
            } else {
                TxVerbosity::DetailsAndPrevout
            };
            block
                .txdata
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let p = prevouts.get(i).and_then(|p| p.as_deref());
                    tx_to_json(t, p, tv, true)
                })
                .collect()
        }
    };
    o.push("tx", txs);
    o
}

/// The hex of a block hash's bytes as Core parses a `uint256` (`uint256::FromHex`).
pub(crate) fn parse_hash_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let bytes = bitcoin::hex::FromHex::from_hex(s)
        .ok()
        .map(|v: Vec<u8>| v)?;
    let mut out: [u8; 32] = bytes.try_into().ok()?;
    out.reverse();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hex::FromHex;

    fn asm(hex: &str, sig: bool) -> String {
        script_to_asm(&Vec::from_hex(hex).unwrap(), sig)
    }

    #[test]
    fn asm_matches_core() {
        // P2WPKH, P2TR, P2A, OP_RETURN, small numbers and CLTV as Core prints them.
        assert_eq!(
            asm("0014751e76e8199196d454941c45d1b3a323f1433bd6", false),
            "0 751e76e8199196d454941c45d1b3a323f1433bd6"
        );
        assert_eq!(asm("51024e73", false), "1 29518");
        assert_eq!(asm("6a04deadbeef", false), "OP_RETURN -1874767326");
        assert_eq!(asm("6a", false), "OP_RETURN");
        assert_eq!(
            asm("4f60b1b2ba", false),
            "-1 16 OP_CHECKLOCKTIMEVERIFY OP_CHECKSEQUENCEVERIFY OP_CHECKSIGADD"
        );
        assert_eq!(
            asm("02e803b175", false),
            "1000 OP_CHECKLOCKTIMEVERIFY OP_DROP"
        );
        assert_eq!(op_name(0x4c), "OP_PUSHDATA1");
        assert_eq!(op_name(0x61), "OP_NOP");
        assert_eq!(op_name(0xba), "OP_CHECKSIGADD");
        assert_eq!(asm("bbff", false), "OP_UNKNOWN OP_INVALIDOPCODE");
        assert_eq!(asm("4c05aa", false), "[error]");
        assert_eq!(asm("0002aa", false), "0 [error]");
        // A DER signature with SIGHASH_ALL in a scriptSig.
        let sig = "3044022047ac8e878352d3ebbde1c94ce3a10d057c24175747116f8288e5d794d12d482f0220217f36a485cae903c713331d877c1f64677e3622ad4010726870540656fe9dcb01";
        assert_eq!(
            asm(&format!("47{sig}"), true),
            format!("{}[ALL]", &sig[..sig.len() - 2])
        );
        assert_eq!(asm(&format!("47{sig}"), false), sig);
    }

    #[test]
    fn solver_names_match_core() {
        let t = |hex: &str| solver(&Vec::from_hex(hex).unwrap()).0.name();
        assert_eq!(
            t("0014751e76e8199196d454941c45d1b3a323f1433bd6"),
            "witness_v0_keyhash"
        );
        assert_eq!(
            t("00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
            "witness_v0_scripthash"
        );
        assert_eq!(
            t("5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c"),
            "witness_v1_taproot"
        );
        assert_eq!(t("51024e73"), "anchor");
        assert_eq!(t("52024e73"), "witness_unknown");
        assert_eq!(t("0003aabbcc"), "nonstandard");
        assert_eq!(t("6a04deadbeef"), "nulldata");
        assert_eq!(t("6a"), "nulldata");
        assert_eq!(
            t("76a914751e76e8199196d454941c45d1b3a323f1433bd688ac"),
            "pubkeyhash"
        );
        assert_eq!(
            t("a914751e76e8199196d454941c45d1b3a323f1433bd687"),
            "scripthash"
        );
        let key = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        assert_eq!(t(&format!("21{key}ac")), "pubkey");
        assert_eq!(t(&format!("5121{key}21{key}52ae")), "multisig");
        assert_eq!(t(&format!("5121{key}53ae")), "nonstandard");
        assert_eq!(t(""), "nonstandard");
    }

    #[test]
    fn regtest_work_and_difficulty() {
        assert_eq!(
            target_hex(0x207fffff),
            "7fffff0000000000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(chainwork_hex(0x207fffff, 102), format!("{:064x}", 204));
        assert_eq!(
            super::super::json::format_g16(difficulty(0x207fffff)),
            "4.656542373906925e-10"
        );
    }
}
