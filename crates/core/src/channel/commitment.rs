//! Commitment and HTLC transactions of a leaf channel in the BOLT taproot zero-fee-commitment
//! format (`taproot_zero_fee_commitments`): v3, no fee, one P2A shared anchor, taproot outputs.
//! Pure functions, checked against `bolt03/taproot-zero-fee-commitments-test.json`.

use crate::secp::{count, SECP};
use bitcoin::hashes::{hash160, ripemd160, sha256, Hash};
use bitcoin::key::{TweakedPublicKey, XOnlyPublicKey};
use bitcoin::opcodes::all::{
    OP_CHECKSIG, OP_CHECKSIGVERIFY, OP_CLTV, OP_CSV, OP_EQUAL, OP_EQUALVERIFY, OP_HASH160, OP_SIZE,
};
use bitcoin::script::Builder;
use bitcoin::secp256k1::PublicKey;
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::{LeafVersion, TaprootBuilder, TaprootSpendInfo};
use bitcoin::{
    absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, TapLeafHash, TapSighashType,
    Transaction, TxIn, TxOut, Txid, Witness,
};

/// Largest value of the shared anchor; anything trimmed beyond it goes to miners.
pub const MAX_ANCHOR: Amount = Amount::from_sat(240);

/// The per-commitment keys of the commitment holder's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitmentKeys {
    /// Revocation key (the counterparty can spend with it once this commitment is revoked).
    pub revocation: PublicKey,
    /// The holder's delayed payment key (to_local and second-stage outputs).
    pub local_delayed: PublicKey,
    /// The holder's HTLC key.
    pub local_htlc: PublicKey,
    /// The counterparty's HTLC key.
    pub remote_htlc: PublicKey,
    /// The counterparty's payment key (to_remote, no per-commitment tweak).
    pub remote_payment: PublicKey,
}

/// An HTLC on a commitment, seen from the commitment holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Htlc {
    /// Offered by the holder (outgoing; resolved by HTLC-timeout) or received (incoming;
    /// resolved by HTLC-success).
    pub offered: bool,
    /// Amount in msat.
    pub amount_msat: u64,
    /// SHA256 payment hash.
    pub payment_hash: [u8; 32],
    /// Absolute expiry height.
    pub cltv_expiry: u32,
}

/// What does not change between commitments of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStatic {
    /// The funding output (a factory leaf output).
    pub funding_outpoint: OutPoint,
    /// Its value.
    pub funding_amount: Amount,
    /// `low48(SHA256(opener_payment_basepoint || accepter_payment_basepoint))`.
    pub obscure_factor: u64,
    /// Relative delay on the holder's own outputs.
    pub to_self_delay: u16,
    /// The holder's dust limit.
    pub dust_limit: Amount,
}

/// The factor that hides the commitment number in nSequence and nLockTime.
pub fn obscure_factor(
    opener_payment_basepoint: &PublicKey,
    accepter_payment_basepoint: &PublicKey,
) -> u64 {
    let mut data = opener_payment_basepoint.serialize().to_vec();
    data.extend_from_slice(&accepter_payment_basepoint.serialize());
    let h = sha256::Hash::hash(&data).to_byte_array();
    let mut low = [0u8; 8];
    low[2..].copy_from_slice(&h[26..]);
    u64::from_be_bytes(low)
}

fn xonly(k: &PublicKey) -> XOnlyPublicKey {
    k.x_only_public_key().0
}

/// `<local_delayed> CHECKSIGVERIFY <to_self_delay> CSV`: the holder's delayed claim.
pub fn to_local_leaf(keys: &CommitmentKeys, to_self_delay: u16) -> ScriptBuf {
    Builder::new()
        .push_x_only_key(&xonly(&keys.local_delayed))
        .push_opcode(OP_CHECKSIGVERIFY)
        .push_int(i64::from(to_self_delay))
        .push_opcode(OP_CSV)
        .into_script()
}

fn hash160_of_payment_hash(payment_hash: &[u8; 32]) -> [u8; 20] {
    ripemd160::Hash::hash(payment_hash).to_byte_array()
}

/// The two leaves of an HTLC output: (timeout leaf, success leaf).
pub fn htlc_leaves(keys: &CommitmentKeys, htlc: &Htlc) -> (ScriptBuf, ScriptBuf) {
    let h160 = hash160_of_payment_hash(&htlc.payment_hash);
    if htlc.offered {
        let timeout = Builder::new()
            .push_x_only_key(&xonly(&keys.local_htlc))
            .push_opcode(OP_CHECKSIGVERIFY)
            .push_x_only_key(&xonly(&keys.remote_htlc))
            .push_opcode(OP_CHECKSIG)
            .into_script();
        let success = Builder::new()
            .push_x_only_key(&xonly(&keys.remote_htlc))
            .push_opcode(OP_CHECKSIGVERIFY)
            .push_opcode(OP_SIZE)
            .push_int(32)
            .push_opcode(OP_EQUALVERIFY)
            .push_opcode(OP_HASH160)
            .push_slice(h160)
            .push_opcode(OP_EQUAL)
            .into_script();
        (timeout, success)
    } else {
        let timeout = Builder::new()
            .push_x_only_key(&xonly(&keys.remote_htlc))
            .push_opcode(OP_CHECKSIGVERIFY)
            .push_int(i64::from(htlc.cltv_expiry))
            .push_opcode(OP_CLTV)
            .into_script();
        let success = Builder::new()
            .push_opcode(OP_SIZE)
            .push_int(32)
            .push_opcode(OP_EQUALVERIFY)
            .push_opcode(OP_HASH160)
            .push_slice(h160)
            .push_opcode(OP_EQUALVERIFY)
            .push_x_only_key(&xonly(&keys.local_htlc))
            .push_opcode(OP_CHECKSIGVERIFY)
            .push_x_only_key(&xonly(&keys.remote_htlc))
            .push_opcode(OP_CHECKSIG)
            .into_script();
        (timeout, success)
    }
}

fn tree(internal: &PublicKey, leaves: &[ScriptBuf]) -> TaprootSpendInfo {
    let secp = &*SECP;
    let depth = if leaves.len() == 1 { 0 } else { 1 };
    count(|c| c.tweak_add += 1);
    let mut b = TaprootBuilder::new();
    for l in leaves {
        b = b
            .add_leaf(depth, l.clone())
            .expect("one or two leaves form a valid tree");
    }
    b.finalize(secp, xonly(internal)).expect("complete tree")
}

/// Spend info of the to_local output (and of every second-stage output).
pub fn to_local_spend_info(keys: &CommitmentKeys, to_self_delay: u16) -> TaprootSpendInfo {
    tree(&keys.revocation, &[to_local_leaf(keys, to_self_delay)])
}

/// Spend info of an HTLC output.
pub fn htlc_spend_info(keys: &CommitmentKeys, htlc: &Htlc) -> TaprootSpendInfo {
    let (timeout, success) = htlc_leaves(keys, htlc);
    tree(&keys.revocation, &[timeout, success])
}

pub(crate) fn p2tr(info: &TaprootSpendInfo) -> ScriptBuf {
    ScriptBuf::new_p2tr_tweaked(info.output_key())
}

/// The to_remote output script: key path only, BIP-86 tweak of the counterparty's payment key.
pub fn to_remote_script(keys: &CommitmentKeys) -> ScriptBuf {
    to_remote_script_of(&keys.remote_payment)
}

/// The to_remote output script paying `payment_key` (the same for every commitment of a side).
pub fn to_remote_script_of(payment_key: &PublicKey) -> ScriptBuf {
    count(|c| c.tweak_add += 1);
    ScriptBuf::new_p2tr(&SECP, xonly(payment_key), None)
}

/// What an output of a commitment transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitmentOutput {
    /// The shared P2A anchor.
    Anchor,
    /// The holder's balance.
    ToLocal,
    /// The counterparty's balance.
    ToRemote,
    /// An HTLC (index into the HTLCs given).
    Htlc(usize),
}

/// A commitment transaction (unsigned) and the role of each output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commitment {
    /// The transaction, without witness.
    pub tx: Transaction,
    /// The role of each output, by output index.
    pub outputs: Vec<CommitmentOutput>,
}

/// Build the holder's commitment transaction number `commitment_number`.
pub fn build_commitment(
    chan: &ChannelStatic,
    keys: &CommitmentKeys,
    commitment_number: u64,
    to_local_msat: u64,
    to_remote_msat: u64,
    htlcs: &[Htlc],
) -> Commitment {
    build_commitment_with(
        chan,
        keys,
        commitment_number,
        to_local_msat,
        to_remote_msat,
        htlcs,
        (
            || p2tr(&to_local_spend_info(keys, chan.to_self_delay)),
            || to_remote_script(keys),
        ),
    )
}

/// [`build_commitment`] with the to_local and to_remote scripts from the caller (to_remote does
/// not change between commitments of one side, to_local is also what HTLC transactions pay: a
/// channel computes each once). Scripts are asked for only for outputs above the dust limit.
pub(crate) fn build_commitment_with(
    chan: &ChannelStatic,
    keys: &CommitmentKeys,
    commitment_number: u64,
    to_local_msat: u64,
    to_remote_msat: u64,
    htlcs: &[Htlc],
    (to_local, to_remote): (impl FnOnce() -> ScriptBuf, impl FnOnce() -> ScriptBuf),
) -> Commitment {
    let obscured = (commitment_number ^ chan.obscure_factor) & 0xffff_ffff_ffff;
    let mut outs: Vec<(TxOut, CommitmentOutput, u32)> = Vec::new();
    let push = |value: Amount,
                spk: &mut dyn FnMut() -> ScriptBuf,
                role: CommitmentOutput,
                cltv: u32,
                outs: &mut Vec<_>| {
        if value >= chan.dust_limit {
            outs.push((
                TxOut {
                    value,
                    script_pubkey: spk(),
                },
                role,
                cltv,
            ));
        }
    };
    let mut to_local = Some(to_local);
    push(
        Amount::from_sat(to_local_msat / 1000),
        &mut || to_local.take().expect("called once")(),
        CommitmentOutput::ToLocal,
        0,
        &mut outs,
    );
    let mut to_remote = Some(to_remote);
    push(
        Amount::from_sat(to_remote_msat / 1000),
        &mut || to_remote.take().expect("called once")(),
        CommitmentOutput::ToRemote,
        0,
        &mut outs,
    );
    for (i, h) in htlcs.iter().enumerate() {
        push(
            Amount::from_sat(h.amount_msat / 1000),
            &mut || p2tr(&htlc_spend_info(keys, h)),
            CommitmentOutput::Htlc(i),
            h.cltv_expiry,
            &mut outs,
        );
    }
    let used: Amount = outs.iter().map(|o| o.0.value).sum();
    let anchor = chan
        .funding_amount
        .checked_sub(used)
        .unwrap_or(Amount::ZERO)
        .min(MAX_ANCHOR);
    outs.push((
        TxOut {
            value: anchor,
            script_pubkey: ScriptBuf::new_p2a(),
        },
        CommitmentOutput::Anchor,
        0,
    ));
    // BIP-69 order (amount, then script), identical HTLC outputs by CLTV expiry.
    outs.sort_by(|a, b| {
        a.0.value
            .cmp(&b.0.value)
            .then_with(|| {
                a.0.script_pubkey
                    .as_bytes()
                    .cmp(b.0.script_pubkey.as_bytes())
            })
            .then_with(|| a.2.cmp(&b.2))
    });
    let tx = Transaction {
        version: transaction::Version(3),
        lock_time: absolute::LockTime::from_consensus(0x2000_0000 | (obscured & 0xff_ffff) as u32),
        input: vec![TxIn {
            previous_output: chan.funding_outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence(0x8000_0000 | (obscured >> 24) as u32),
            witness: Witness::new(),
        }],
        output: outs.iter().map(|o| o.0.clone()).collect(),
    };
    Commitment {
        tx,
        outputs: outs.into_iter().map(|o| o.1).collect(),
    }
}

/// The second-stage transaction of an HTLC output: HTLC-timeout for an offered HTLC,
/// HTLC-success for a received one (v3, zero fee, output = the to_local script).
pub fn build_htlc_tx(
    commitment_txid: Txid,
    vout: u32,
    htlc: &Htlc,
    keys: &CommitmentKeys,
    to_self_delay: u16,
) -> Transaction {
    build_htlc_tx_to(
        commitment_txid,
        vout,
        htlc,
        p2tr(&to_local_spend_info(keys, to_self_delay)),
    )
}

/// [`build_htlc_tx`] paying `to_local`, the to_local script of the same commitment (every HTLC
/// transaction of a commitment pays the same script: computed once).
pub(crate) fn build_htlc_tx_to(
    commitment_txid: Txid,
    vout: u32,
    htlc: &Htlc,
    to_local: ScriptBuf,
) -> Transaction {
    Transaction {
        version: transaction::Version(3),
        lock_time: if htlc.offered {
            absolute::LockTime::from_consensus(htlc.cltv_expiry)
        } else {
            absolute::LockTime::ZERO
        },
        input: vec![TxIn {
            previous_output: OutPoint::new(commitment_txid, vout),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ZERO,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(htlc.amount_msat / 1000),
            script_pubkey: to_local,
        }],
    }
}

/// Sighash of an HTLC second-stage transaction for one of the two signers: the counterparty signs
/// with SIGHASH_SINGLE|ANYONECANPAY, the holder with SIGHASH_DEFAULT.
pub fn htlc_sighash(
    tx: &Transaction,
    spent: &TxOut,
    leaf: &ScriptBuf,
    ty: TapSighashType,
) -> [u8; 32] {
    let leaf_hash = TapLeafHash::from_script(leaf, LeafVersion::TapScript);
    let prevouts = [spent.clone()];
    let prev = if ty == TapSighashType::SinglePlusAnyoneCanPay {
        Prevouts::One(0, spent.clone())
    } else {
        Prevouts::All(&prevouts)
    };
    SighashCache::new(tx)
        .taproot_script_spend_signature_hash(0, &prev, leaf_hash, ty)
        .map(|h| h.to_byte_array())
        .unwrap_or([0; 32])
}

/// Witness of an HTLC second-stage transaction: counterparty signature (with its 0x83 sighash
/// byte), holder signature, the preimage for HTLC-success, the leaf and its control block.
pub fn htlc_witness(
    remote_sig: &bitcoin::secp256k1::schnorr::Signature,
    local_sig: &bitcoin::secp256k1::schnorr::Signature,
    preimage: Option<[u8; 32]>,
    leaf: &ScriptBuf,
    info: &TaprootSpendInfo,
) -> Witness {
    let mut w = Witness::new();
    let mut remote = remote_sig.as_ref().to_vec();
    remote.push(TapSighashType::SinglePlusAnyoneCanPay as u8);
    w.push(remote);
    w.push(local_sig.as_ref());
    if let Some(p) = preimage {
        w.push(p);
    }
    w.push(leaf.as_bytes());
    let control = info
        .control_block(&(leaf.clone(), LeafVersion::TapScript))
        .expect("the leaf is in the tree");
    w.push(control.serialize());
    w
}

/// The output key of the funding output: MuSig2 of the two funding keys, BIP-86 tweaked.
pub fn funding_script(funding_key: &crate::musig::TweakedAggregateKey) -> ScriptBuf {
    ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(
        funding_key.output_key(),
    ))
}

/// HASH160 of a preimage equals RIPEMD160 of its payment hash.
pub fn payment_hash_matches(preimage: &[u8; 32], payment_hash: &[u8; 32]) -> bool {
    sha256::Hash::hash(preimage).to_byte_array() == *payment_hash
        && hash160::Hash::hash(preimage).to_byte_array() == hash160_of_payment_hash(payment_hash)
}
