//! Commitment signatures and revocation: the lock-step round, MuSig2 over every live funding
//! outpoint (dual-state), and our latest commitment signed for publishing.

use super::*;
use crate::secp::count;

impl Channel {
    pub(super) fn chan_static(&self, holder_is_us: bool, outpoint: OutPoint) -> ChannelStatic {
        let (to_self_delay, dust_limit) = if holder_is_us {
            // Our outputs wait for the delay they require of us.
            (self.their_limits.to_self_delay, self.limits.dust_limit)
        } else {
            (self.limits.to_self_delay, self.their_limits.dust_limit)
        };
        ChannelStatic {
            funding_outpoint: outpoint,
            funding_amount: self.funding.value,
            obscure_factor: self.obscure,
            to_self_delay,
            dust_limit,
        }
    }

    /// Keys of a commitment: ours (`holder_is_us`) at our point, or theirs at their point.
    pub(super) fn commitment_keys(&self, holder_is_us: bool, point: &PublicKey) -> CommitmentKeys {
        let mut keys = self.commitment_keys_without_htlc(holder_is_us, point);
        let (holder, counter) = self.holder_and_counter(holder_is_us);
        keys.local_htlc = derive_pubkey(&holder.htlc, point);
        keys.remote_htlc = derive_pubkey(&counter.htlc, point);
        keys
    }

    fn holder_and_counter(&self, holder_is_us: bool) -> (&Basepoints, &Basepoints) {
        if holder_is_us {
            (&self.mine, &self.their)
        } else {
            (&self.their, &self.mine)
        }
    }

    /// The keys of a commitment without HTLC outputs: its two HTLC keys are left at the
    /// basepoints (not derived: a point multiplication each), which nothing reads when the
    /// commitment has no HTLC.
    fn commitment_keys_without_htlc(
        &self,
        holder_is_us: bool,
        point: &PublicKey,
    ) -> CommitmentKeys {
        let (holder, counter) = self.holder_and_counter(holder_is_us);
        CommitmentKeys {
            revocation: revocation_pubkey(&counter.revocation, point),
            local_delayed: derive_pubkey(&holder.delayed_payment, point),
            local_htlc: holder.htlc,
            remote_htlc: counter.htlc,
            remote_payment: counter.payment,
        }
    }

    pub(super) fn htlc_list(state: &State, holder_is_us: bool) -> Vec<Htlc> {
        state
            .htlcs
            .values()
            .map(|h| Htlc {
                offered: h.offered_by_us == holder_is_us,
                amount_msat: h.amount_msat,
                payment_hash: h.payment_hash,
                cltv_expiry: h.cltv_expiry,
            })
            .collect()
    }

    /// Build the commitment of `holder_is_us` side, number `n`, at `state`.
    pub(super) fn commitment(
        &self,
        holder_is_us: bool,
        n: u64,
        state: &State,
        point: &PublicKey,
        outpoint: OutPoint,
    ) -> BuiltCommitment {
        let chan = self.chan_static(holder_is_us, outpoint);
        // HTLC keys only matter for HTLC outputs: none when every HTLC is below the dust limit.
        let untrimmed = state
            .htlcs
            .values()
            .any(|h| Amount::from_sat(h.amount_msat / 1000) >= chan.dust_limit);
        let keys = if untrimmed {
            self.commitment_keys(holder_is_us, point)
        } else {
            self.commitment_keys_without_htlc(holder_is_us, point)
        };
        let htlcs = Self::htlc_list(state, holder_is_us);
        let (local, remote) = if holder_is_us {
            (state.ours_msat, state.theirs_msat)
        } else {
            (state.theirs_msat, state.ours_msat)
        };
        let to_local = OnceCell::new();
        let to_local_script = || {
            to_local
                .get_or_init(|| p2tr(&to_local_spend_info(&keys, chan.to_self_delay)))
                .clone()
        };
        let to_remote = if holder_is_us {
            &self.to_remote_scripts.0
        } else {
            &self.to_remote_scripts.1
        };
        let c = build_commitment_with(
            &chan,
            &keys,
            n,
            local,
            remote,
            &htlcs,
            (to_local_script, || to_remote.clone()),
        );
        let htlc_outputs: Vec<(u32, Htlc)> = c
            .outputs
            .iter()
            .enumerate()
            .filter_map(|(vout, o)| match o {
                CommitmentOutput::Htlc(i) => Some((vout as u32, htlcs[*i])),
                _ => None,
            })
            .collect();
        debug_assert!(untrimmed || htlc_outputs.is_empty(), "HTLC keys derived");
        // Every HTLC transaction pays the to_local script (also when to_local itself is dust).
        let second_stage = if htlc_outputs.is_empty() {
            None
        } else {
            Some(to_local_script())
        };
        BuiltCommitment {
            tx: c.tx,
            htlcs: htlc_outputs,
            keys,
            second_stage,
        }
    }

    /// The HTLC transactions of a commitment: each with the output it spends and its leaf.
    pub(super) fn htlc_txs(
        &self,
        c: &BuiltCommitment,
    ) -> Vec<(Transaction, TxOut, bitcoin::ScriptBuf)> {
        let Some(to_local) = &c.second_stage else {
            return Vec::new();
        };
        let txid = c.tx.compute_txid();
        c.htlcs
            .iter()
            .map(|(vout, h)| {
                let tx = build_htlc_tx_to(txid, *vout, h, to_local.clone());
                let (timeout, success) = htlc_leaves(&c.keys, h);
                let leaf = if h.offered { timeout } else { success };
                (tx, c.tx.output[*vout as usize].clone(), leaf)
            })
            .collect()
    }

    /// Sign the other side's next commitment (with every update proposed so far).
    pub fn sign_commitment(&mut self) -> Result<CommitmentSigned, ChannelError> {
        let next_phase = match self.phase {
            Phase::Idle => Phase::SentSignature {
                got_revocation: false,
            },
            Phase::OweSignature => Phase::AwaitingFinalRevocation,
            _ => {
                return Err(ChannelError::WrongPhase(
                    "a signature is already outstanding",
                ))
            }
        };
        let n = self.their_commitment_number + 1;
        let point = *self.their_points.get(&n).ok_or(ChannelError::WrongPhase(
            "their next point is not known yet",
        ))?;
        let their_nonce = *self.their_nonces.get(&n).ok_or(ChannelError::WrongPhase(
            "their next verification nonce is not known yet",
        ))?;
        let mut others = Vec::with_capacity(self.other_fundings.len());
        for o in &self.other_fundings {
            let their = *self
                .their_other_nonces
                .get(&(*o, n))
                .ok_or(ChannelError::WrongPhase(
                    "their verification nonce on a new funding outpoint is not known yet",
                ))?;
            let (partial_sig, nonce, htlc_signatures) =
                self.sign_their_commitment(n, &point, their, *o)?;
            others.push(OutpointSignature {
                outpoint: *o,
                partial_sig,
                nonce,
                htlc_signatures,
            });
        }
        let (partial_sig, nonce, htlc_signatures) =
            self.sign_their_commitment(n, &point, their_nonce, self.funding_outpoint)?;
        self.their_states.insert(n, self.next.clone());
        self.phase = next_phase;
        Ok(CommitmentSigned {
            partial_sig,
            nonce,
            htlc_signatures,
            others,
        })
    }

    /// Our signatures of their commitment `n` (at `self.next`) spending `outpoint`.
    pub(super) fn sign_their_commitment(
        &self,
        n: u64,
        point: &PublicKey,
        their_nonce: PubNonce,
        outpoint: OutPoint,
    ) -> Result<(PartialSig, PubNonce, Vec<Signature>), ChannelError> {
        let built = self.commitment(false, n, &self.next, point, outpoint);
        let msg = Factory::sighash(&built.tx, &self.funding);
        let (sec, nonce) = self
            .funding_key
            .nonce_gen_parsed(&self.funding_signer, &msg);
        let their_nonce = ParsedNonce::parse(&their_nonce)?;
        let partial_sig = self
            .funding_key
            .session_of(&[&their_nonce, &nonce], &msg)?
            .partial_sign(sec, &self.funding_signer);
        let nonce = nonce.bytes();
        let secp = &*SECP;
        let htlc_txs = self.htlc_txs(&built);
        // The HTLC key is derived only when there are HTLC transactions to sign.
        let htlc_key = (!htlc_txs.is_empty()).then(|| {
            count(|c| c.pubkey_create += 1);
            Keypair::from_secret_key(secp, &derive_privkey(&self.secrets.htlc, point))
        });
        let htlc_signatures = htlc_txs
            .iter()
            .map(|(htx, spent, leaf)| {
                let m = htlc_sighash(htx, spent, leaf, TapSighashType::SinglePlusAnyoneCanPay);
                let key = htlc_key.as_ref().expect("derived when there are HTLCs");
                count(|c| c.schnorr_sign += 1);
                secp.sign_schnorr_no_aux_rand(&Message::from_digest(m), key)
            })
            .collect();
        Ok((partial_sig, nonce, htlc_signatures))
    }

    /// Check their signatures of our commitment `n` (at `self.next`) spending `outpoint`.
    pub(super) fn check_our_commitment(
        &self,
        n: u64,
        point: &PublicKey,
        outpoint: OutPoint,
        partial_sig: &PartialSig,
        nonce: &PubNonce,
        htlc_signatures: &[Signature],
    ) -> Result<(), ChannelError> {
        let built = self.commitment(true, n, &self.next, point, outpoint);
        let sighash = Factory::sighash(&built.tx, &self.funding);
        let our_nonce = self.our_verification_nonce(&outpoint, n);
        let their_nonce = ParsedNonce::parse(nonce)
            .map_err(|_| ChannelError::BadSignature("commitment nonce"))?;
        let verified = self
            .funding_key
            .session_of(&[&our_nonce, &their_nonce], &sighash)
            .and_then(|s| {
                s.partial_verify_parsed(partial_sig, &their_nonce, &self.their_funding_musig)
            });
        if !verified.unwrap_or(false) {
            return Err(ChannelError::BadSignature("commitment partial signature"));
        }
        let htlc_txs = self.htlc_txs(&built);
        if htlc_txs.len() != htlc_signatures.len() {
            return Err(ChannelError::BadSignature(
                "wrong number of HTLC signatures",
            ));
        }
        let secp = &*SECP;
        for ((htx, spent, leaf), sig) in htlc_txs.iter().zip(htlc_signatures) {
            let m = htlc_sighash(htx, spent, leaf, TapSighashType::SinglePlusAnyoneCanPay);
            count(|c| c.schnorr_verify += 1);
            secp.verify_schnorr(
                sig,
                &Message::from_digest(m),
                &built.keys.remote_htlc.x_only_public_key().0,
            )
            .map_err(|_| ChannelError::BadSignature("HTLC signature"))?;
        }
        Ok(())
    }

    /// Dual-state: start signing every commitment for `outpoint` too (the channel output of a
    /// factory state being signed). Returns our verification nonce for our next commitment on
    /// it, for the other side's [`Channel::receive_funding_nonce`]. Only between rounds.
    pub fn add_funding(&mut self, outpoint: OutPoint) -> Result<FundingNonce, ChannelError> {
        if self.phase != Phase::Idle {
            return Err(ChannelError::WrongPhase(
                "funding outpoints change between rounds only",
            ));
        }
        if outpoint != self.funding_outpoint && !self.other_fundings.contains(&outpoint) {
            self.other_fundings.push(outpoint);
            self.retired_fundings.retain(|o| *o != outpoint);
        }
        let n = self.our_commitment_number + 1;
        let nonce = self.our_verification_nonce(&outpoint, n);
        self.our_nonces.insert((outpoint, n), nonce);
        Ok(FundingNonce {
            outpoint,
            commitment: n,
            nonce: nonce.bytes(),
        })
    }

    /// Dual-state: the other side's verification nonce on an outpoint we added too.
    pub fn receive_funding_nonce(&mut self, msg: &FundingNonce) -> Result<(), ChannelError> {
        if !self.other_fundings.contains(&msg.outpoint) {
            return Err(ChannelError::WrongPhase(
                "a nonce for a funding outpoint we did not add",
            ));
        }
        if msg.commitment != self.their_commitment_number + 1 {
            return Err(ChannelError::WrongPhase(
                "a funding nonce for another commitment than their next",
            ));
        }
        self.their_other_nonces
            .insert((msg.outpoint, msg.commitment), msg.nonce);
        Ok(())
    }

    /// Dual-state: stop updating `outpoint` (call only once the new factory state is fully
    /// signed, the old one is superseded with its punishment and secret held, and the last
    /// commitment on `outpoint` is revoked). If it was the primary, the oldest other live
    /// outpoint becomes primary. Its commitments are still recognised for penalties.
    pub fn retire_funding(&mut self, outpoint: OutPoint) -> Result<(), ChannelError> {
        if self.phase != Phase::Idle {
            return Err(ChannelError::WrongPhase(
                "funding outpoints change between rounds only",
            ));
        }
        if outpoint == self.funding_outpoint {
            if self.other_fundings.is_empty() {
                return Err(ChannelError::WrongPhase("the last live funding outpoint"));
            }
            let next = self.other_fundings.remove(0);
            let sig = self.our_latest_other.remove(&next);
            if let (Some((p, nonce, h)), Some((_, _, _, state))) = (sig, self.our_latest_sig.take())
            {
                self.our_latest_sig = Some((p, nonce, h, state));
            }
            let n = self.their_commitment_number + 1;
            if let Some(nonce) = self.their_other_nonces.remove(&(next, n)) {
                self.their_nonces.insert(n, nonce);
            }
            self.funding_outpoint = next;
        } else if let Some(i) = self.other_fundings.iter().position(|o| *o == outpoint) {
            self.other_fundings.remove(i);
            self.our_latest_other.remove(&outpoint);
        } else {
            return Err(ChannelError::WrongPhase("not a live funding outpoint"));
        }
        self.their_other_nonces.retain(|(o, _), _| *o != outpoint);
        self.retired_fundings.push(outpoint);
        Ok(())
    }

    /// Every live funding outpoint, the primary first.
    pub fn funding_outpoints(&self) -> Vec<OutPoint> {
        std::iter::once(self.funding_outpoint)
            .chain(self.other_fundings.iter().copied())
            .collect()
    }

    /// Check their signature of our next commitment; revoke our previous one.
    pub fn receive_commitment_signed(
        &mut self,
        msg: &CommitmentSigned,
    ) -> Result<RevokeAndAck, ChannelError> {
        let next_phase = match self.phase {
            Phase::Idle => Phase::OweSignature,
            Phase::SentSignature {
                got_revocation: true,
            } => Phase::Idle,
            _ => return Err(ChannelError::WrongPhase("unexpected commitment signature")),
        };
        let n = self.our_commitment_number + 1;
        let point = self.our_point(n);
        self.check_our_commitment(
            n,
            &point,
            self.funding_outpoint,
            &msg.partial_sig,
            &msg.nonce,
            &msg.htlc_signatures,
        )?;
        // Dual-state: exactly one signature set per other live outpoint.
        if msg.others.len() != self.other_fundings.len() {
            return Err(ChannelError::BadSignature(
                "not one commitment signature per live funding outpoint",
            ));
        }
        for o in &self.other_fundings {
            let sig =
                msg.others
                    .iter()
                    .find(|x| x.outpoint == *o)
                    .ok_or(ChannelError::BadSignature(
                        "no commitment signature for a live funding outpoint",
                    ))?;
            self.check_our_commitment(
                n,
                &point,
                *o,
                &sig.partial_sig,
                &sig.nonce,
                &sig.htlc_signatures,
            )?;
        }
        // Revoke the previous commitment: reveal its secret, announce the one after next.
        let revoked = self.our_secret(n - 1);
        let next_secret = self.secrets.per_commitment_secret(n + 1);
        let next_point = per_commitment_point(&next_secret);
        let next_nonce = self.our_verification_nonce(&self.funding_outpoint, n + 1);
        let next_other_nonces: Vec<(OutPoint, ParsedNonce)> = self
            .other_fundings
            .iter()
            .map(|o| (*o, self.our_verification_nonce(o, n + 1)))
            .collect();
        // Keep what the next round and our latest commitment need: points n and n + 1, the
        // nonces announced for n + 1.
        let secret = self.our_secret(n);
        self.our_points.retain(|k, _| *k >= n);
        self.our_points.insert(n, (secret, point));
        self.our_points.insert(n + 1, (next_secret, next_point));
        self.our_nonces.retain(|(_, k), _| *k > n);
        self.our_nonces
            .insert((self.funding_outpoint, n + 1), next_nonce);
        for (o, nonce) in &next_other_nonces {
            self.our_nonces.insert((*o, n + 1), *nonce);
        }
        self.our_latest_other = msg
            .others
            .iter()
            .map(|x| {
                (
                    x.outpoint,
                    (x.partial_sig, x.nonce, x.htlc_signatures.clone()),
                )
            })
            .collect();
        self.our_commitment_number = n;
        self.our_latest_sig = Some((
            msg.partial_sig,
            msg.nonce,
            msg.htlc_signatures.clone(),
            self.next.clone(),
        ));
        self.phase = next_phase;
        self.finish_round_if_done();
        Ok(RevokeAndAck {
            per_commitment_secret: revoked.secret_bytes(),
            next_point,
            next_nonce: next_nonce.bytes(),
            next_other_nonces: next_other_nonces
                .into_iter()
                .map(|(o, nonce)| (o, nonce.bytes()))
                .collect(),
        })
    }

    /// Check their revocation of their previous commitment.
    pub fn receive_revoke_and_ack(&mut self, msg: &RevokeAndAck) -> Result<(), ChannelError> {
        let next_phase = match self.phase {
            Phase::SentSignature {
                got_revocation: false,
            } => Phase::SentSignature {
                got_revocation: true,
            },
            Phase::AwaitingFinalRevocation => Phase::Idle,
            _ => return Err(ChannelError::WrongPhase("unexpected revocation")),
        };
        let revoked_n = self.their_commitment_number;
        let expected = self
            .their_points
            .get(&revoked_n)
            .ok_or(ChannelError::WrongSecret)?;
        let secret = SecretKey::from_slice(&msg.per_commitment_secret)
            .map_err(|_| ChannelError::WrongSecret)?;
        if per_commitment_point(&secret) != *expected {
            return Err(ChannelError::WrongSecret);
        }
        let mut store = self.their_secrets.clone();
        store.provide(index_of(revoked_n), msg.per_commitment_secret)?;
        self.their_secrets = store;
        self.their_commitment_number = revoked_n + 1;
        self.their_points.insert(revoked_n + 2, msg.next_point);
        self.their_nonces.insert(revoked_n + 2, msg.next_nonce);
        for (o, nonce) in &msg.next_other_nonces {
            if self.other_fundings.contains(o) {
                self.their_other_nonces.insert((*o, revoked_n + 2), *nonce);
            }
        }
        self.their_other_nonces
            .retain(|(_, k), _| *k > revoked_n + 1);
        self.their_points.retain(|k, _| *k > revoked_n);
        self.their_nonces.retain(|k, _| *k > revoked_n + 1);
        self.archive_revoked_states();
        self.phase = next_phase;
        self.finish_round_if_done();
        Ok(())
    }

    /// Moves the states of their revoked commitments apart (kept for penalties, written once).
    fn archive_revoked_states(&mut self) {
        let revoked: Vec<u64> = self
            .their_states
            .range(..self.their_commitment_number)
            .map(|(n, _)| *n)
            .collect();
        if revoked.is_empty() {
            return;
        }
        let moved: Vec<(u64, State)> = revoked
            .into_iter()
            .filter_map(|n| self.their_states.remove(&n).map(|s| (n, s)))
            .collect();
        self.revoked().states.extend(moved);
    }

    /// The states of their revoked commitments (poisoning is recovered from: the map is only
    /// ever appended to).
    pub(super) fn revoked(&self) -> std::sync::MutexGuard<'_, RevokedStates> {
        self.revoked_states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state of their revoked commitment `n`, if kept.
    pub(super) fn revoked_state(&self, n: u64) -> Option<State> {
        self.revoked().states.get(&n).cloned()
    }

    pub(super) fn finish_round_if_done(&mut self) {
        if self.phase == Phase::Idle {
            self.committed = self.next.clone();
        }
    }

    /// Our per-commitment point `n` (remembered from when we announced it, or derived).
    pub(super) fn our_point(&self, n: u64) -> PublicKey {
        match self.our_points.get(&n) {
            Some((_, p)) => *p,
            None => per_commitment_point(&self.secrets.per_commitment_secret(n)),
        }
    }

    /// Our per-commitment secret `n` (remembered from its point's announcement, or derived).
    fn our_secret(&self, n: u64) -> SecretKey {
        match self.our_points.get(&n) {
            Some((s, _)) => *s,
            None => self.secrets.per_commitment_secret(n),
        }
    }

    /// Our public verification nonce of commitment `n` on `outpoint` (remembered from when we
    /// announced it, or derived: it is a function of our seed, the outpoint and `n`).
    pub(super) fn our_verification_nonce(&self, outpoint: &OutPoint, n: u64) -> ParsedNonce {
        match self.our_nonces.get(&(*outpoint, n)) {
            Some(nonce) => *nonce,
            None => {
                self.funding_key
                    .deterministic_nonce_parsed(
                        &self.funding_signer,
                        self.secrets.verification_seed(outpoint, n),
                    )
                    .1
            }
        }
    }

    /// Secrets of their revoked commitments, for penalties.
    pub fn their_revocation_secret(&self, n: u64) -> Option<[u8; 32]> {
        self.their_secrets.get(index_of(n))
    }

    /// The other side's signatures of our latest commitment on `outpoint` (funding, HTLCs), and
    /// its state.
    pub(super) fn latest_signatures(
        &self,
        outpoint: OutPoint,
    ) -> Result<(&PartialSig, &PubNonce, &[Signature], &State), ChannelError> {
        let Some((partial, nonce, htlc, state)) = &self.our_latest_sig else {
            return Err(ChannelError::WrongPhase(
                "no commitment signed by the other side yet",
            ));
        };
        if outpoint == self.funding_outpoint {
            return Ok((partial, nonce, htlc.as_slice(), state));
        }
        let (p, nonce, h) =
            self.our_latest_other
                .get(&outpoint)
                .ok_or(ChannelError::WrongPhase(
                    "no commitment signed on that funding outpoint",
                ))?;
        Ok((p, nonce, h.as_slice(), state))
    }

    /// Our latest commitment, fully signed (completes the MuSig2 signature with our nonce).
    pub fn signed_latest_commitment(
        &self,
    ) -> Result<(Transaction, Vec<Transaction>), ChannelError> {
        self.signed_latest_commitment_on(self.funding_outpoint)
    }

    /// Our latest commitment spending the live funding outpoint `outpoint`, fully signed.
    pub fn signed_latest_commitment_on(
        &self,
        outpoint: OutPoint,
    ) -> Result<(Transaction, Vec<Transaction>), ChannelError> {
        let n = self.our_commitment_number;
        let (their_partial, their_nonce, htlc_sigs, state) = self.latest_signatures(outpoint)?;
        let point = self.our_point(n);
        let built = self.commitment(true, n, state, &point, outpoint);
        let sighash = Factory::sighash(&built.tx, &self.funding);
        let (sec, our_nonce) = self.funding_key.deterministic_nonce(
            &self.funding_signer,
            self.secrets.verification_seed(&outpoint, n),
        );
        let agg = aggregate_nonces(&[our_nonce, *their_nonce])?;
        let session = self.funding_key.session(&agg, &sighash)?;
        let ours = session.partial_sign(sec, &self.funding_signer);
        let sig = session.aggregate(&[ours, *their_partial])?;
        let secp = &*SECP;
        let htlc_key = Keypair::from_secret_key(secp, &derive_privkey(&self.secrets.htlc, &point));
        let mut second = Vec::new();
        for ((mut htx, spent, leaf), (their_sig, (_, h))) in self
            .htlc_txs(&built)
            .into_iter()
            .zip(htlc_sigs.iter().zip(&built.htlcs))
        {
            let m = htlc_sighash(&htx, &spent, &leaf, TapSighashType::Default);
            let ours = secp.sign_schnorr_no_aux_rand(&Message::from_digest(m), &htlc_key);
            // The preimage of a received HTLC is added by the caller when it has it.
            let info = htlc_spend_info(&built.keys, h);
            htx.input[0].witness = htlc_witness(their_sig, &ours, None, &leaf, &info);
            second.push(htx);
        }
        let mut tx = built.tx;
        tx.input[0].witness = Witness::from_slice(&[sig.as_ref()]);
        Ok((tx, second))
    }
}
