//! On chain: recognising the other side's commitments and justice against revoked ones (second
//! stages included).

use super::*;

impl Channel {
    /// The commitment number a commitment transaction of this channel carries (obscured in its
    /// nSequence and nLockTime).
    pub(super) fn commitment_number_of(&self, tx: &Transaction) -> Result<u64, ChannelError> {
        let input = tx
            .input
            .first()
            .ok_or(ChannelError::NotRevoked("no input"))?;
        let ours = input.previous_output == self.funding_outpoint
            || self.other_fundings.contains(&input.previous_output)
            || self.retired_fundings.contains(&input.previous_output);
        if !ours {
            return Err(ChannelError::NotRevoked(
                "it does not spend the channel output",
            ));
        }
        let obscured = (u64::from(input.sequence.0 & 0xff_ffff) << 24)
            | u64::from(tx.lock_time.to_consensus_u32() & 0xff_ffff);
        Ok(obscured ^ self.obscure)
    }

    /// Which of their commitments `tx` is: its number, point, revocation secret (if revoked),
    /// keys and state.
    pub(super) fn their_commitment(
        &self,
        tx: &Transaction,
    ) -> Result<(u64, Option<SecretKey>, CommitmentKeys, State), ChannelError> {
        let n = self.commitment_number_of(tx)?;
        let secret = self
            .their_secrets
            .get(index_of(n))
            .map(|s| SecretKey::from_slice(&s).map_err(|_| ChannelError::WrongSecret))
            .transpose()?;
        let point = match &secret {
            Some(s) => per_commitment_point(s),
            None => *self
                .their_points
                .get(&n)
                .ok_or(ChannelError::NotRevoked("not one of their commitments"))?,
        };
        let state = match self
            .their_states
            .get(&n)
            .cloned()
            .or_else(|| self.revoked_state(n))
        {
            Some(state) => state,
            // Revoked, with its state not kept (a channel restored from a backup): its to_local
            // and to_remote are still recognised, its HTLC outputs are not.
            None if secret.is_some() => State {
                ours_msat: 0,
                theirs_msat: 0,
                htlcs: BTreeMap::new(),
            },
            None => return Err(ChannelError::NotRevoked("a commitment we never signed")),
        };
        Ok((n, secret, self.commitment_keys(false, &point), state))
    }

    /// Whether `outpoint` is one of this channel's funding outpoints: the live one, another live
    /// one (dual-state) or a retired one (its commitments are still punished).
    pub fn has_funding_outpoint(&self, outpoint: &OutPoint) -> bool {
        *outpoint == self.funding_outpoint
            || self.other_fundings.contains(outpoint)
            || self.retired_fundings.contains(outpoint)
    }

    /// Whether `tx` is a commitment of the other side that they revoked (we hold its secret).
    pub fn is_revoked_commitment(&self, tx: &Transaction) -> bool {
        matches!(self.their_commitment(tx), Ok((_, Some(_), _, _)))
    }

    /// A justice transaction for a revoked commitment of the other side published on chain: it
    /// takes the whole channel at once (their to_local and every HTLC output with the revocation
    /// key, and our own to_remote), paying `destination`.
    pub fn justice_transaction(
        &self,
        revoked: &Transaction,
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        let txid = revoked.compute_txid();
        let outputs: Vec<(OutPoint, TxOut)> = revoked
            .output
            .iter()
            .enumerate()
            .map(|(vout, o)| (OutPoint::new(txid, vout as u32), o.clone()))
            .collect();
        self.justice_over(revoked, &outputs, destination, fee_rate)
    }

    /// A justice transaction for the revoked commitment `revoked` over `outputs`: the outputs
    /// still unspent of it and of its second-stage HTLC transactions (whose output is the
    /// revoked holder's to_local script). Each output the revocation key or our payment key can
    /// spend is taken, the others are skipped; the whole pays `destination`.
    pub fn justice_over(
        &self,
        revoked: &Transaction,
        outputs: &[(OutPoint, TxOut)],
        destination: bitcoin::ScriptBuf,
        fee_rate: bitcoin::FeeRate,
    ) -> Result<Transaction, ChannelError> {
        use bitcoin::key::TapTweak;
        use bitcoin::sighash::{Prevouts, SighashCache};
        let (_, secret, keys, state) = self.their_commitment(revoked)?;
        let secret = secret.ok_or(ChannelError::NotRevoked(
            "its revocation secret was never received",
        ))?;
        let secp = &*SECP;
        let revocation = Keypair::from_secret_key(
            secp,
            &crate::channel::keys::revocation_privkey(&self.secrets.revocation, &secret),
        );
        let payment = Keypair::from_secret_key(secp, &self.secrets.payment);
        // Each output we can take, with the key (already tweaked) that signs for it.
        let mut candidates: Vec<(bitcoin::ScriptBuf, bitcoin::key::TweakedKeypair)> = Vec::new();
        let to_local =
            crate::channel::commitment::to_local_spend_info(&keys, self.limits.to_self_delay);
        candidates.push((
            bitcoin::ScriptBuf::new_p2tr_tweaked(to_local.output_key()),
            revocation.tap_tweak(secp, to_local.merkle_root()),
        ));
        candidates.push((
            crate::channel::commitment::to_remote_script(&keys),
            payment.tap_tweak(secp, None),
        ));
        for h in Self::htlc_list(&state, false) {
            let info = htlc_spend_info(&keys, &h);
            candidates.push((
                bitcoin::ScriptBuf::new_p2tr_tweaked(info.output_key()),
                revocation.tap_tweak(secp, info.merkle_root()),
            ));
        }
        let mut spent: Vec<(OutPoint, TxOut, bitcoin::key::TweakedKeypair)> = Vec::new();
        for (outpoint, out) in outputs {
            if spent.iter().any(|s| s.0 == *outpoint) {
                continue;
            }
            if let Some((_, key)) = candidates.iter().find(|(spk, _)| *spk == out.script_pubkey) {
                spent.push((*outpoint, out.clone(), *key));
            }
        }
        if spent.is_empty() {
            return Err(ChannelError::NotRevoked("nothing to take"));
        }
        let total = spent
            .iter()
            .try_fold(Amount::ZERO, |a, s| a.checked_add(s.1.value))
            .ok_or(ChannelError::NotRevoked("output values overflow"))?;
        let mut tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: spent
                .iter()
                .map(|(outpoint, _, _)| bitcoin::TxIn {
                    previous_output: *outpoint,
                    script_sig: bitcoin::ScriptBuf::new(),
                    sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: total,
                script_pubkey: destination,
            }],
        };
        let vsize = (tx.weight().to_wu() + 2 + 66 * tx.input.len() as u64).div_ceil(4);
        let fee = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
        tx.output[0].value = total
            .checked_sub(fee)
            .filter(|v| *v >= Amount::from_sat(330))
            .ok_or(ChannelError::NotRevoked("the outputs cannot pay the fee"))?;
        let prevouts: Vec<TxOut> = spent.iter().map(|s| s.1.clone()).collect();
        for (i, (_, _, key)) in spent.iter().enumerate() {
            let sighash = SighashCache::new(&tx)
                .taproot_key_spend_signature_hash(
                    i,
                    &Prevouts::All(&prevouts),
                    TapSighashType::Default,
                )
                .map_err(|_| ChannelError::NotRevoked("sighash"))?;
            let sig = secp.sign_schnorr(&Message::from(sighash), &key.to_keypair());
            tx.input[i].witness = Witness::from_slice(&[sig.as_ref()]);
        }
        Ok(tx)
    }

    pub(super) fn their_point_of(&self, tx: &Transaction) -> Result<PublicKey, ChannelError> {
        let (n, secret, _, _) = self.their_commitment(tx)?;
        match secret {
            Some(s) => Ok(per_commitment_point(&s)),
            None => self
                .their_points
                .get(&n)
                .copied()
                .ok_or(ChannelError::NotRevoked("unknown point")),
        }
    }
}
