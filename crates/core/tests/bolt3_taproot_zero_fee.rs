//! Every case of `bolt03/taproot-zero-fee-commitments-test.json` (lightning/bolts at
//! 7e3e8f19986638c5978b35ed2844bd9f02c7bb01) reproduced byte for byte: the MuSig2-signed
//! commitment transaction and the signed HTLC-success / HTLC-timeout transactions.

use std::str::FromStr;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::key::{Keypair, PublicKey as BtcPublicKey};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::{Amount, OutPoint, TapSighashType, TxOut, Txid, Witness};
use serde_json::Value;
use superscalar_core::channel::commitment::{
    build_commitment, build_htlc_tx, htlc_leaves, htlc_sighash, htlc_spend_info, htlc_witness,
    obscure_factor, ChannelStatic, CommitmentKeys, CommitmentOutput, Htlc,
};
use superscalar_core::channel::keys::{derive_privkey, derive_pubkey, revocation_pubkey};
use superscalar_core::musig::{aggregate_nonces, AggregateKey, PubNonce, SecNonce};
use superscalar_core::Factory;

const VECTORS: &str = include_str!("vectors/bolt3/taproot-zero-fee-commitments-test.json");

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn secret(v: &Value) -> SecretKey {
    SecretKey::from_slice(&bytes(v)).unwrap()
}

#[test]
fn every_vector_case_reproduces_byte_for_byte() {
    let secp = Secp256k1::new();
    let j: Value = serde_json::from_str(VECTORS).unwrap();
    let local_funding = Keypair::from_secret_key(&secp, &secret(&j["local_funding_priv"]));
    let remote_funding = Keypair::from_secret_key(&secp, &secret(&j["remote_funding_priv"]));
    let funding_key = AggregateKey::new(&[
        BtcPublicKey::new(local_funding.public_key()),
        BtcPublicKey::new(remote_funding.public_key()),
    ])
    .unwrap()
    .tweaked(None)
    .unwrap();
    let funding_out = TxOut {
        value: Amount::from_sat(j["funding_amount_satoshis"].as_u64().unwrap()),
        script_pubkey: superscalar_core::channel::commitment::funding_script(&funding_key),
    };
    assert_eq!(
        funding_out.script_pubkey.to_hex_string(),
        "5120293b200c1f14a26729ab15ea196138727bc7d755c3034d597528d4150391bd69"
    );
    let pcp = PublicKey::from_slice(&bytes(&j["per_commitment_point"])).unwrap();
    let point = |k: &str| PublicKey::from_secret_key(&secp, &secret(&j[k]));
    let local_pb = point("local_payment_basepoint_secret");
    let remote_pb = point("remote_payment_basepoint_secret");
    let keys = CommitmentKeys {
        revocation: revocation_pubkey(
            &PublicKey::from_slice(&bytes(&j["revocation_basepoint"])).unwrap(),
            &pcp,
        ),
        local_delayed: derive_pubkey(&point("local_delayed_payment_basepoint_secret"), &pcp),
        local_htlc: derive_pubkey(&point("local_htlc_basepoint_secret"), &pcp),
        remote_htlc: derive_pubkey(&point("remote_htlc_basepoint_secret"), &pcp),
        remote_payment: remote_pb,
    };
    let local_htlc_sk = derive_privkey(&secret(&j["local_htlc_basepoint_secret"]), &pcp);
    let remote_htlc_sk = derive_privkey(&secret(&j["remote_htlc_basepoint_secret"]), &pcp);
    let to_self_delay = j["to_self_delay"].as_u64().unwrap() as u16;
    let preimages = j["payment_hash_to_preimage"].as_object().unwrap();
    let mut checked_commitments = 0;
    let mut checked_htlc_txs = 0;
    for case in j["tests"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let chan = ChannelStatic {
            funding_outpoint: OutPoint::new(
                Txid::from_str(j["funding_txid"].as_str().unwrap()).unwrap(),
                j["funding_index"].as_u64().unwrap() as u32,
            ),
            funding_amount: funding_out.value,
            obscure_factor: obscure_factor(&local_pb, &remote_pb),
            to_self_delay,
            dust_limit: Amount::from_sat(case["dust_limit_satoshis"].as_u64().unwrap()),
        };
        let mut htlcs = Vec::new();
        for (key, offered) in [("incoming_htlcs", false), ("outgoing_htlcs", true)] {
            for h in case[key].as_array().into_iter().flatten() {
                htlcs.push(Htlc {
                    offered,
                    amount_msat: h["amount_msat"].as_u64().unwrap(),
                    payment_hash: bytes(&h["payment_hash"]).try_into().unwrap(),
                    cltv_expiry: h["cltv_expiry"].as_u64().unwrap() as u32,
                });
            }
        }
        let mut commitment = build_commitment(
            &chan,
            &keys,
            j["commitment_number"].as_u64().unwrap(),
            case["to_local_msat"].as_u64().unwrap(),
            case["to_remote_msat"].as_u64().unwrap(),
            &htlcs,
        );
        // MuSig2 with the vector's nonces.
        let msg = Factory::sighash(&commitment.tx, &funding_out);
        let nonce = |k: &str| PubNonce(bytes(&case[k]).try_into().unwrap());
        let agg =
            aggregate_nonces(&[nonce("local_public_nonce"), nonce("remote_public_nonce")]).unwrap();
        let sec = |k: &str| {
            SecNonce::dangerous_from_bip327(&bytes(&case[k]).try_into().unwrap()).unwrap()
        };
        let local = funding_key
            .partial_sign(sec("local_secret_nonce"), &local_funding, &agg, &msg)
            .unwrap();
        let remote = funding_key
            .partial_sign(sec("remote_secret_nonce"), &remote_funding, &agg, &msg)
            .unwrap();
        let sig = funding_key.aggregate(&agg, &msg, &[local, remote]).unwrap();
        commitment.tx.input[0].witness = Witness::from_slice(&[sig.as_ref()]);
        assert_eq!(
            serialize_hex(&commitment.tx),
            case["signed_commit_tx"].as_str().unwrap(),
            "{name}"
        );
        checked_commitments += 1;

        // Second-stage transactions, in output order, split by kind.
        let txid = commitment.tx.compute_txid();
        let mut success = Vec::new();
        let mut timeout = Vec::new();
        for (vout, role) in commitment.outputs.iter().enumerate() {
            let CommitmentOutput::Htlc(i) = role else {
                continue;
            };
            let h = &htlcs[*i];
            let mut tx = build_htlc_tx(txid, vout as u32, h, &keys, to_self_delay);
            let spent = commitment.tx.output[vout].clone();
            let (timeout_leaf, success_leaf) = htlc_leaves(&keys, h);
            let leaf = if h.offered {
                timeout_leaf
            } else {
                success_leaf
            };
            let remote_msg =
                htlc_sighash(&tx, &spent, &leaf, TapSighashType::SinglePlusAnyoneCanPay);
            let local_msg = htlc_sighash(&tx, &spent, &leaf, TapSighashType::Default);
            let remote_sig = secp.sign_schnorr_no_aux_rand(
                &Message::from_digest(remote_msg),
                &Keypair::from_secret_key(&secp, &remote_htlc_sk),
            );
            let local_sig = secp.sign_schnorr_no_aux_rand(
                &Message::from_digest(local_msg),
                &Keypair::from_secret_key(&secp, &local_htlc_sk),
            );
            let preimage = (!h.offered).then(|| {
                let ph = hex::encode(h.payment_hash);
                <[u8; 32]>::try_from(bytes(&preimages[&ph])).unwrap()
            });
            tx.input[0].witness = htlc_witness(
                &remote_sig,
                &local_sig,
                preimage,
                &leaf,
                &htlc_spend_info(&keys, h),
            );
            if h.offered {
                timeout.push(serialize_hex(&tx));
            } else {
                success.push(serialize_hex(&tx));
            }
        }
        let expect = |k: &str| -> Vec<String> {
            case[k]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            success,
            expect("signed_htlc_success_txs"),
            "{name}: HTLC-success"
        );
        assert_eq!(
            timeout,
            expect("signed_htlc_timeout_txs"),
            "{name}: HTLC-timeout"
        );
        checked_htlc_txs += success.len() + timeout.len();
    }
    assert_eq!(checked_commitments, 11);
    assert_eq!(checked_htlc_txs, 16);
}
