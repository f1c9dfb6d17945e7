//! Leaf channels on chain (Bitcoin Core's engine): after a client's unilateral exit, its channel
//! closes with a taproot zero-fee commitment that the client pays for with its factory fee coin;
//! to_local waits out to_self_delay; a revoked commitment's to_local is taken at once with the
//! revocation key.

mod common;

use bitcoin::key::{Keypair, TapTweak};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::LeafVersion;
use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, TapLeafHash,
    TapSighashType, Transaction, TxIn, TxOut, Witness,
};
use common::*;
use superscalar_chain::{Chain, RejectReason};
use superscalar_client::bump::fee_coin_child;
use superscalar_core::channel::commitment::{
    build_commitment, obscure_factor, to_local_leaf, to_local_spend_info, ChannelStatic,
    CommitmentKeys, CommitmentOutput,
};
use superscalar_core::channel::keys::{
    derive_privkey, derive_pubkey, per_commitment_point, revocation_privkey, revocation_pubkey,
};
use superscalar_core::factory::Slot;
use superscalar_core::musig::aggregate_nonces;
use superscalar_core::shachain::{index_of, SecretGenerator};
use superscalar_core::{ClientId, Factory, FactoryConfig, TxKind};
use superscalar_wallet::burn_script;

struct Side {
    payment: SecretKey,
    delayed: SecretKey,
    htlc: SecretKey,
    revocation: SecretKey,
    shachain: SecretGenerator,
}

fn side(seed: u8) -> Side {
    let k = |i: u8| SecretKey::from_slice(&[seed.wrapping_add(i); 32]).unwrap();
    Side {
        payment: k(1),
        delayed: k(2),
        htlc: k(3),
        revocation: k(4),
        shachain: SecretGenerator::new([seed; 32]),
    }
}

fn pubk(s: &SecretKey) -> PublicKey {
    PublicKey::from_secret_key(&Secp256k1::new(), s)
}

const DELAY: u16 = 6;
const CLIENT: u32 = 2;

/// The client's commitment number `n` of its channel, MuSig2-signed by client and LSP.
fn client_commitment(
    h: &Harness,
    client: &Side,
    lsp: &Side,
    n: u64,
    to_local_sat: u64,
) -> (Transaction, CommitmentKeys, SecretKey) {
    let c = ClientId(CLIENT);
    let txid_of = |k: TxKind| {
        h.clients[CLIENT as usize]
            .signed()
            .iter()
            .find(|s| s.kind == k)
            .map(|s| s.tx.compute_txid())
    };
    let funding_outpoint = h
        .factory
        .slot_outpoint(Slot::Channel(c), h.funding, txid_of)
        .unwrap();
    let capacity = capacity(CLIENT);
    let secret = SecretKey::from_slice(&client.shachain.secret(index_of(n)).unwrap()).unwrap();
    let pcp = per_commitment_point(&secret);
    let keys = CommitmentKeys {
        revocation: revocation_pubkey(&pubk(&lsp.revocation), &pcp),
        local_delayed: derive_pubkey(&pubk(&client.delayed), &pcp),
        local_htlc: derive_pubkey(&pubk(&client.htlc), &pcp),
        remote_htlc: derive_pubkey(&pubk(&lsp.htlc), &pcp),
        remote_payment: pubk(&lsp.payment),
    };
    let chan = ChannelStatic {
        funding_outpoint,
        funding_amount: capacity,
        obscure_factor: obscure_factor(&pubk(&lsp.payment), &pubk(&client.payment)),
        to_self_delay: DELAY,
        dust_limit: Amount::from_sat(330),
    };
    let commitment = build_commitment(
        &chan,
        &keys,
        n,
        to_local_sat * 1000,
        (capacity.to_sat() - to_local_sat) * 1000,
        &[],
    );
    let mut tx = commitment.tx;
    // The channel output is the factory's MuSig2(client, LSP) leaf output: both sign.
    let key = h.factory.signing_key(Slot::Channel(c)).unwrap();
    let spent = TxOut {
        value: capacity,
        script_pubkey: h.factory.script_pubkey(Slot::Channel(c)).unwrap(),
    };
    let msg = Factory::sighash(&tx, &spent);
    let (s1, p1) = key.nonce_gen(&h.client_keys[CLIENT as usize], &msg);
    let (s2, p2) = key.nonce_gen(&h.lsp_key, &msg);
    let agg = aggregate_nonces(&[p1, p2]).unwrap();
    let a = key
        .partial_sign(s1, &h.client_keys[CLIENT as usize], &agg, &msg)
        .unwrap();
    let b = key.partial_sign(s2, &h.lsp_key, &agg, &msg).unwrap();
    let sig = key.aggregate(&agg, &msg, &[a, b]).unwrap();
    tx.input[0].witness = Witness::from_slice(&[sig.as_ref()]);
    assert!(commitment.outputs.contains(&CommitmentOutput::ToLocal));
    (tx, keys, secret)
}

fn fee_coin(h: &Harness) -> (OutPoint, TxOut) {
    let txid_of = |k: TxKind| {
        h.clients[CLIENT as usize]
            .signed()
            .iter()
            .find(|s| s.kind == k)
            .map(|s| s.tx.compute_txid())
    };
    let op = h
        .factory
        .slot_outpoint(Slot::FeeCoin(ClientId(CLIENT)), h.funding, txid_of)
        .unwrap();
    (op, h.chain.get_utxo(&op).unwrap().unwrap().txout)
}

fn to_local_vout(tx: &Transaction, keys: &CommitmentKeys) -> u32 {
    let spk = ScriptBuf::new_p2tr_tweaked(to_local_spend_info(keys, DELAY).output_key());
    tx.output
        .iter()
        .position(|o| o.script_pubkey == spk)
        .unwrap() as u32
}

#[test]
fn client_closes_with_its_commitment_paid_by_the_fee_coin_and_claims_to_local_after_the_delay() {
    let h = build(3, FactoryConfig::regtest());
    exit_alone(&h, ClientId(CLIENT));
    let (client, lsp) = (side(10), side(40));
    let (commit, keys, secret) = client_commitment(&h, &client, &lsp, 7, 20_000);
    // Zero fee: refused alone; with a child spending the anchor and the fee coin, accepted.
    let err = h.chain.submit_transaction(&commit).unwrap_err();
    assert!(
        matches!(err.reject_reason(), Some(RejectReason::FeeTooLow { .. })),
        "{err}"
    );
    let payout = h.factory.client_payout_script(ClientId(CLIENT));
    let child = fee_coin_child(
        &commit,
        Amount::ZERO,
        fee_coin(&h),
        &h.client_keys[CLIENT as usize],
        payout,
        FeeRate::from_sat_per_vb_u32(2),
    )
    .unwrap();
    h.chain.submit_package(&commit, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&commit.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );

    // to_local through its script path, after to_self_delay.
    let vout = to_local_vout(&commit, &keys);
    let spent = commit.output[vout as usize].clone();
    let leaf = to_local_leaf(&keys, DELAY);
    let info = to_local_spend_info(&keys, DELAY);
    let mut claim = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(commit.compute_txid(), vout),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::from_height(DELAY),
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: spent.value - Amount::from_sat(500),
            script_pubkey: burn_script(),
        }],
    };
    let secp = Secp256k1::new();
    let delayed_sk = derive_privkey(&client.delayed, &per_commitment_point(&secret));
    let sighash = SighashCache::new(&claim)
        .taproot_script_spend_signature_hash(
            0,
            &Prevouts::All(std::slice::from_ref(&spent)),
            TapLeafHash::from_script(&leaf, LeafVersion::TapScript),
            TapSighashType::Default,
        )
        .unwrap();
    let sig = secp.sign_schnorr(
        &Message::from(sighash),
        &Keypair::from_secret_key(&secp, &delayed_sk),
    );
    let control = info
        .control_block(&(leaf.clone(), LeafVersion::TapScript))
        .unwrap();
    claim.input[0].witness =
        Witness::from_slice(&[sig.as_ref().to_vec(), leaf.to_bytes(), control.serialize()]);
    let err = h.chain.submit_transaction(&claim).unwrap_err();
    assert!(
        matches!(
            err.reject_reason(),
            Some(RejectReason::SequenceLocked { .. })
        ),
        "{err}"
    );
    h.chain
        .mine_blocks(u32::from(DELAY) - 2, &burn_script())
        .unwrap();
    assert!(
        h.chain.submit_transaction(&claim).is_err(),
        "one block early"
    );
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    h.chain.submit_transaction(&claim).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&claim.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
}

#[test]
fn a_revoked_commitment_loses_its_to_local_to_the_revocation_key_at_once() {
    let h = build(3, FactoryConfig::regtest());
    exit_alone(&h, ClientId(CLIENT));
    let (client, lsp) = (side(11), side(41));
    // Commitment 3 was revoked (its secret handed to the LSP) when commitment 4 was signed;
    // the client publishes it anyway.
    let (old, keys, old_secret) = client_commitment(&h, &client, &lsp, 3, 40_000);
    let payout = h.factory.client_payout_script(ClientId(CLIENT));
    let child = fee_coin_child(
        &old,
        Amount::ZERO,
        fee_coin(&h),
        &h.client_keys[CLIENT as usize],
        payout,
        FeeRate::from_sat_per_vb_u32(2),
    )
    .unwrap();
    h.chain.submit_package(&old, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    // The LSP derives the revocation secret and sweeps to_local on the key path, no delay.
    let secp = Secp256k1::new();
    let rev_sk = revocation_privkey(&lsp.revocation, &old_secret);
    assert_eq!(pubk(&rev_sk), keys.revocation);
    let vout = to_local_vout(&old, &keys);
    let spent = old.output[vout as usize].clone();
    let info = to_local_spend_info(&keys, DELAY);
    let mut penalty = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(old.compute_txid(), vout),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: spent.value - Amount::from_sat(500),
            script_pubkey: burn_script(),
        }],
    };
    let sighash = SighashCache::new(&penalty)
        .taproot_key_spend_signature_hash(0, &Prevouts::All(&[spent]), TapSighashType::Default)
        .unwrap();
    let tweaked = Keypair::from_secret_key(&secp, &rev_sk).tap_tweak(&secp, info.merkle_root());
    let sig = secp.sign_schnorr(&Message::from(sighash), &tweaked.to_keypair());
    penalty.input[0].witness = Witness::from_slice(&[sig.as_ref()]);
    h.chain.submit_transaction(&penalty).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&penalty.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
}
