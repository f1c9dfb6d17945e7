//! Claims on chain after a channel closed: what is ours in their commitment (to_remote by key
//! path, HTLCs by preimage or by timeout) and in ours (HTLC second stages paid for with a fee
//! input, then every delayed output once `to_self_delay` has passed).

use super::*;

/// An HTLC output of a commitment of this channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtlcOutput {
    /// Its index in the commitment.
    pub vout: u32,
    /// The HTLC, seen from us: `offered` when we offered it (it comes back to us by timeout).
    pub htlc: Htlc,
}

impl Channel {
    /// Claims of HTLC outputs of their published commitment: those they offered us, by preimage
    /// (when `preimages` has it), and those we offered them, by timeout once `height` has reached
    /// their expiry. One transaction per HTLC, paying `destination`.
    pub fn claim_htlcs(
        &self,
        commitment: &Transaction,
        preimages: &BTreeMap<[u8; 32], [u8; 32]>,
        height: u32,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Vec<Transaction>, ChannelError> {
        use bitcoin::sighash::{Prevouts, SighashCache};
        use bitcoin::taproot::LeafVersion;
        let (_, _, keys, state) = self.their_commitment(commitment)?;
        let secp = &*SECP;
        let point_key = Keypair::from_secret_key(
            secp,
            &derive_privkey(&self.secrets.htlc, &self.their_point_of(commitment)?),
        );
        let txid = commitment.compute_txid();
        let mut claims = Vec::new();
        for h in Self::htlc_list(&state, false) {
            let info = htlc_spend_info(&keys, &h);
            let spk = bitcoin::ScriptBuf::new_p2tr_tweaked(info.output_key());
            let Some(vout) = commitment
                .output
                .iter()
                .position(|o| o.script_pubkey == spk)
            else {
                continue;
            };
            let out = commitment.output[vout].clone();
            let (timeout_leaf, success_leaf) = htlc_leaves(&keys, &h);
            // `h.offered` is from their side: offered by them means we receive it.
            let (leaf, preimage, lock) = if h.offered {
                match preimages.get(&h.payment_hash) {
                    Some(p) => (success_leaf, Some(*p), 0),
                    None => continue,
                }
            } else if height >= h.cltv_expiry {
                (timeout_leaf, None, h.cltv_expiry)
            } else {
                continue;
            };
            let mut tx = Transaction {
                version: bitcoin::transaction::Version::TWO,
                lock_time: bitcoin::absolute::LockTime::from_consensus(lock),
                input: vec![bitcoin::TxIn {
                    previous_output: OutPoint::new(txid, vout as u32),
                    script_sig: bitcoin::ScriptBuf::new(),
                    sequence: bitcoin::Sequence::ENABLE_LOCKTIME_NO_RBF,
                    witness: Witness::new(),
                }],
                output: vec![TxOut {
                    value: out.value,
                    script_pubkey: destination.clone(),
                }],
            };
            let vsize =
                (tx.weight().to_wu() + 2 + 1 + 65 + 33 + leaf.len() as u64 + 66).div_ceil(4);
            let fee = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
            let Some(value) = out
                .value
                .checked_sub(fee)
                .filter(|v| *v >= Amount::from_sat(330))
            else {
                continue;
            };
            tx.output[0].value = value;
            let leaf_hash = bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript);
            let sighash = SighashCache::new(&tx)
                .taproot_script_spend_signature_hash(
                    0,
                    &Prevouts::All(&[out]),
                    leaf_hash,
                    TapSighashType::Default,
                )
                .map_err(|_| ChannelError::NotRevoked("sighash"))?;
            let sig = secp.sign_schnorr(&Message::from(sighash), &point_key);
            let control = info
                .control_block(&(leaf.clone(), LeafVersion::TapScript))
                .ok_or(ChannelError::NotRevoked("control block"))?;
            // The signature is checked first, so it sits on top of the stack (pushed last).
            let mut w = Witness::new();
            if let Some(p) = preimage {
                w.push(p);
            }
            w.push(sig.as_ref());
            w.push(leaf.as_bytes());
            w.push(control.serialize());
            tx.input[0].witness = w;
            claims.push(tx);
        }
        Ok(claims)
    }

    /// Our to_remote output of their commitment `commitment` (a key-path spend with our payment
    /// key, no delay), paying `destination`.
    pub fn claim_to_remote(
        &self,
        commitment: &Transaction,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        use bitcoin::key::TapTweak;
        use bitcoin::sighash::{Prevouts, SighashCache};
        self.their_commitment(commitment)?;
        let spk = to_remote_script_of(&self.mine.payment);
        // One 64-byte signature and its length.
        let (mut tx, out) = sweep(
            commitment,
            &spk,
            bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
            destination,
            1 + 65,
            fee_rate,
        )
        .map_err(|e| e.unwrap_or(ChannelError::Claim("no to_remote output of ours")))?;
        let secp = &*SECP;
        let key = Keypair::from_secret_key(secp, &self.secrets.payment).tap_tweak(secp, None);
        let sighash = SighashCache::new(&tx)
            .taproot_key_spend_signature_hash(0, &Prevouts::All(&[out]), TapSighashType::Default)
            .map_err(|_| ChannelError::Claim("sighash"))?;
        let sig = secp.sign_schnorr(&Message::from(sighash), &key.to_keypair());
        tx.input[0].witness = Witness::from_slice(&[sig.as_ref()]);
        Ok(tx)
    }

    /// The HTLC outputs of `commitment`, our latest commitment or one of theirs.
    pub fn htlc_outputs(&self, commitment: &Transaction) -> Result<Vec<HtlcOutput>, ChannelError> {
        // Ours first: both sides number their commitments alike, so a number alone does not say
        // whose a commitment is.
        if let Ok(built) = self.our_latest_built(commitment) {
            return Ok(built
                .htlcs
                .iter()
                .map(|(vout, h)| HtlcOutput {
                    vout: *vout,
                    htlc: *h,
                })
                .collect());
        }
        let (_, _, keys, state) = self.their_commitment(commitment)?;
        Ok(Self::htlc_list(&state, false)
            .into_iter()
            .filter_map(|h| {
                let spk = p2tr(&htlc_spend_info(&keys, &h));
                let vout = commitment
                    .output
                    .iter()
                    .position(|o| o.script_pubkey == spk)?;
                Some(HtlcOutput {
                    vout: vout as u32,
                    htlc: Htlc {
                        offered: !h.offered,
                        ..h
                    },
                })
            })
            .collect())
    }

    /// Our latest commitment rebuilt, when `commitment` is it (on any of our funding outpoints).
    fn our_latest_built(&self, commitment: &Transaction) -> Result<BuiltCommitment, ChannelError> {
        let outpoint = commitment
            .input
            .first()
            .ok_or(ChannelError::Claim("no input"))?
            .previous_output;
        let (_, _, _, state) = self.latest_signatures(outpoint)?;
        let n = self.our_commitment_number;
        let built = self.commitment(true, n, state, &self.our_point(n), outpoint);
        if built.tx.compute_txid() != commitment.compute_txid() {
            return Err(ChannelError::Claim("not our latest commitment"));
        }
        Ok(built)
    }

    /// The second-stage transaction of the HTLC output `vout` of our latest commitment
    /// `commitment` (confirmed): HTLC-timeout for one we offered (valid from its expiry),
    /// HTLC-success with `preimage` for one we received. The other side's signature covers only
    /// its own input and output (SIGHASH_SINGLE|ANYONECANPAY), so it spends `fee` as a second
    /// input, left unsigned for the caller (a key-path spend: its 64-byte signature is counted),
    /// and pays the change to `change`, for `fee_rate` in all. Its output 0 pays our delayed
    /// to_local script: [`Channel::claim_delayed`] takes it after `to_self_delay`.
    pub fn htlc_second_stage(
        &self,
        commitment: &Transaction,
        vout: u32,
        preimage: Option<[u8; 32]>,
        fee: (OutPoint, TxOut),
        change: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        use bitcoin::sighash::{Prevouts, SighashCache};
        use bitcoin::taproot::LeafVersion;
        let built = self.our_latest_built(commitment)?;
        let (_, _, sigs, _) = self.latest_signatures(commitment.input[0].previous_output)?;
        let i = built
            .htlcs
            .iter()
            .position(|(v, _)| *v == vout)
            .ok_or(ChannelError::Claim("no HTLC output at that index"))?;
        let h = built.htlcs[i].1;
        let their_sig = *sigs
            .get(i)
            .ok_or(ChannelError::Claim("no signature of the other side for it"))?;
        match (h.offered, preimage) {
            (true, None) => {}
            (false, Some(p))
                if crate::channel::commitment::payment_hash_matches(&p, &h.payment_hash) => {}
            (false, Some(_)) => return Err(ChannelError::Claim("the preimage does not match")),
            (false, None) => {
                return Err(ChannelError::Claim(
                    "an HTLC we received needs its preimage",
                ))
            }
            (true, Some(_)) => {
                return Err(ChannelError::Claim(
                    "an HTLC we offered comes back by timeout",
                ))
            }
        }
        let (mut tx, spent, leaf) = self.htlc_txs(&built).swap_remove(i);
        tx.input.push(bitcoin::TxIn {
            previous_output: fee.0,
            script_sig: bitcoin::ScriptBuf::new(),
            sequence: bitcoin::Sequence::ENABLE_LOCKTIME_NO_RBF,
            witness: Witness::new(),
        });
        tx.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: change,
        });
        let info = htlc_spend_info(&built.keys, &h);
        let control = info
            .control_block(&(leaf.clone(), LeafVersion::TapScript))
            .ok_or(ChannelError::Claim("control block"))?
            .serialize();
        let leaf_len = bitcoin::VarInt(leaf.len() as u64).size() + leaf.len();
        // Marker and flag; input 0: count, two signatures (one with its sighash byte), the
        // preimage, the leaf and the control block; input 1: count and one signature.
        let witness = 2
            + 1
            + 66
            + 65
            + if preimage.is_some() { 33 } else { 0 }
            + leaf_len
            + 1
            + control.len()
            + 1
            + 65;
        let vsize = (tx.weight().to_wu() + witness as u64).div_ceil(4);
        let needed = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
        tx.output[1].value = fee
            .1
            .value
            .checked_sub(needed)
            .filter(|v| *v >= Amount::from_sat(330))
            .ok_or(ChannelError::Claim("the fee input cannot pay the fee"))?;
        let secp = &*SECP;
        let point = self.our_point(self.our_commitment_number);
        let htlc_key = Keypair::from_secret_key(secp, &derive_privkey(&self.secrets.htlc, &point));
        let sighash = SighashCache::new(&tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(&[spent, fee.1]),
                bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript),
                TapSighashType::Default,
            )
            .map_err(|_| ChannelError::Claim("sighash"))?;
        let ours = secp.sign_schnorr_no_aux_rand(&Message::from(sighash), &htlc_key);
        tx.input[0].witness = htlc_witness(&their_sig, &ours, preimage, &leaf, &info);
        Ok(tx)
    }

    /// After our own commitment `commitment` confirmed and `to_self_delay` passed: take our
    /// to_local output through its delayed script path, paying `destination`.
    pub fn claim_to_local(
        &self,
        commitment: &Transaction,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        self.claim_delayed(commitment, commitment, destination, fee_rate)
    }

    /// After `holder_tx` (our commitment `commitment` itself, or one of its HTLC second stages)
    /// confirmed and `to_self_delay` passed: take its output paying our delayed to_local script,
    /// paying `destination`.
    pub fn claim_delayed(
        &self,
        commitment: &Transaction,
        holder_tx: &Transaction,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        use bitcoin::sighash::{Prevouts, SighashCache};
        use bitcoin::taproot::LeafVersion;
        let n = self.commitment_number_of(commitment)?;
        let secret = self.secrets.per_commitment_secret(n);
        let point = per_commitment_point(&secret);
        let keys = self.commitment_keys(true, &point);
        let delay = self.their_limits.to_self_delay;
        let info = crate::channel::commitment::to_local_spend_info(&keys, delay);
        let leaf = crate::channel::commitment::to_local_leaf(&keys, delay);
        let spk = bitcoin::ScriptBuf::new_p2tr_tweaked(info.output_key());
        // A signature, the leaf and a 33-byte control block, with their lengths.
        let (mut tx, out) = sweep(
            holder_tx,
            &spk,
            bitcoin::Sequence::from_height(delay),
            destination,
            1 + 65 + 34 + leaf.len() as u64 + 2,
            fee_rate,
        )
        .map_err(|e| e.unwrap_or(ChannelError::Claim("no output paying our delayed script")))?;
        let secp = &*SECP;
        let key =
            Keypair::from_secret_key(secp, &derive_privkey(&self.secrets.delayed_payment, &point));
        let sighash = SighashCache::new(&tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(&[out]),
                bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript),
                TapSighashType::Default,
            )
            .map_err(|_| ChannelError::NotRevoked("sighash"))?;
        let sig = secp.sign_schnorr(&Message::from(sighash), &key);
        let control = info
            .control_block(&(leaf.clone(), LeafVersion::TapScript))
            .ok_or(ChannelError::NotRevoked("control block"))?;
        tx.input[0].witness =
            Witness::from_slice(&[sig.as_ref().to_vec(), leaf.to_bytes(), control.serialize()]);
        Ok(tx)
    }
}

/// A transaction taking `from`'s output paying `spk` (with `sequence`) to `destination`, less
/// the fee at `fee_rate` for its size with a witness of `witness` weight units; unsigned, with
/// the output it spends. `Err(None)` when `from` has no such output.
fn sweep(
    from: &Transaction,
    spk: &bitcoin::ScriptBuf,
    sequence: bitcoin::Sequence,
    destination: bitcoin::ScriptBuf,
    witness: u64,
    fee_rate: bitcoin::FeeRate,
) -> Result<(Transaction, TxOut), Option<ChannelError>> {
    let vout = from
        .output
        .iter()
        .position(|o| o.script_pubkey == *spk)
        .ok_or(None)?;
    let out = from.output[vout].clone();
    let mut tx = Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: OutPoint::new(from.compute_txid(), vout as u32),
            script_sig: bitcoin::ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: out.value,
            script_pubkey: destination,
        }],
    };
    // The segwit marker and flag, and the witness.
    let vsize = (tx.weight().to_wu() + 2 + witness).div_ceil(4);
    let fee = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
    tx.output[0].value = out
        .value
        .checked_sub(fee)
        .filter(|v| *v >= Amount::from_sat(330))
        .ok_or(Some(ChannelError::Claim("the output cannot pay the fee")))?;
    Ok((tx, out))
}
