//! Closing the client's channels on chain once its exit path confirmed.
//!
//! Every channel in which we hold at least the dust limit, or which has an HTLC output we can
//! claim, is closed with our latest commitment, paid for through its P2A anchor: the first with
//! the fee coin the factory gives us, each next one with the change of the previous child (a v3
//! child has one unconfirmed parent, so each waits for the previous to confirm). Once a
//! commitment has confirmed and its `to_self_delay` has passed, our balance goes to our payout
//! script.
//!
//! HTLC outputs of those commitments go through their second stage: HTLC-success with the
//! preimage of our own invoice for an HTLC we received, HTLC-timeout from its expiry for one we
//! offered. The LSP's signature covers only its own input and output, so each second stage adds
//! the change of the previous transaction as a fee input (successes first, then timeouts by
//! expiry: the chain of fee coins never waits behind a timeout that could go later). After
//! `to_self_delay` its output goes to our payout. An HTLC output the LSP spent first (with the
//! preimage of a payment we made, or by timeout of one we did not settle in time) is skipped.
//! The last transaction of the chain pays its change to our payout; a change left when the LSP
//! took the last HTLC first stays at the fee coin's script (our key).

use bitcoin::hashes::{sha256, Hash};
use bitcoin::hex::DisplayHex;
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, TxOut};
use superscalar_chain::{Chain, TxStatus};
use superscalar_core::channel::state::HtlcOutput;
use superscalar_core::channel::ChannelRef;
use superscalar_core::Slot;
use superscalar_store::{InvoiceDirection, PaymentHash};

use super::Client;

/// The fee rate of the close: commitment packages, HTLC second stages and claims.
const CLOSE_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(500);
/// An HTLC below this is not worth its second stage and claim (left to the LSP).
const MIN_HTLC_CLAIM: Amount = Amount::from_sat(1_000);
/// The exit log's line once every balance and HTLC of ours is in our payout.
pub(super) const CHANNELS_CLOSED: &str =
    "channels closed: every balance and HTLC of ours is in our payout";

/// A coin the next transaction of the close spends for its fee.
type Coin = (OutPoint, TxOut);

/// An HTLC output of a closing channel's commitment, claimed through its second stage.
struct HtlcStep {
    ch: ChannelRef,
    commitment: Transaction,
    output: HtlcOutput,
    preimage: Option<[u8; 32]>,
}

impl Client {
    /// One step of the close of every channel, run at each tick after the exit path confirmed.
    pub(super) fn step_channel_close(&mut self) {
        let Some(f) = self.factory.as_ref() else {
            return;
        };
        let keypair = match self.keys.factory_key(f.key_index) {
            Ok(k) => k,
            Err(e) => return self.close_log(format!("channel close: {e}")),
        };
        let (closing, steps) = self.closing_channels();
        let Some(f) = self.factory.as_ref() else {
            return;
        };
        // Where the fee coin is in the state we signed last (an update may move it).
        let signed = &f.signed;
        let version = f
            .state
            .as_ref()
            .map_or_else(|| f.factory.initial_version(), |s| s.version().clone());
        let coin_op =
            f.factory
                .slot_outpoint(Slot::FeeCoin(f.position), f.funding, &version, |k| {
                    signed
                        .iter()
                        .find(|s| s.kind == k)
                        .map(|s| s.tx.compute_txid())
                });
        let fee_coin_script = f.factory.fee_coin_script(f.position);
        let amount = f
            .factory
            .amounts(&version)
            .map(|a| a.value(&f.factory, Slot::FeeCoin(f.position)));
        let mut coin = match (coin_op, amount) {
            (Some(op), Ok(value)) => Some((
                op,
                TxOut {
                    value,
                    script_pubkey: fee_coin_script.clone(),
                },
            )),
            _ => None,
        };
        let payout = f.factory.client_payout_script(f.position);
        let mut done = true;
        for (i, ch) in closing.iter().enumerate() {
            let last = i + 1 == closing.len() && steps.is_empty();
            let change = if last {
                payout.clone()
            } else {
                fee_coin_script.clone()
            };
            match self.close_one(*ch, coin.take(), &keypair, change) {
                Ok((next, closed)) => {
                    coin = next;
                    done &= closed;
                }
                Err(line) => return self.close_log(line),
            }
        }
        for (i, step) in steps.iter().enumerate() {
            let change = if i + 1 == steps.len() {
                payout.clone()
            } else {
                fee_coin_script.clone()
            };
            match self.claim_htlc(step, coin.take(), &keypair, change, &payout) {
                Ok((next, claimed)) => {
                    coin = next;
                    done &= claimed;
                }
                Err(line) => return self.close_log(line),
            }
        }
        if done {
            self.close_log(CHANNELS_CLOSED.into());
        }
    }

    /// The channels to close (holding at least the dust limit, or an HTLC output we claim) and
    /// the HTLC outputs to claim, in the order their fee coins chain.
    fn closing_channels(&self) -> (Vec<ChannelRef>, Vec<HtlcStep>) {
        let Some(f) = self.factory.as_ref() else {
            return Default::default();
        };
        let mut closing = Vec::new();
        let mut successes = Vec::new();
        let mut timeouts = Vec::new();
        for (ch, link) in &f.links {
            let channel = link.channel();
            let mut claims = false;
            if let Ok((commitment, _)) = channel.signed_latest_commitment() {
                for output in channel.htlc_outputs(&commitment).unwrap_or_default() {
                    let h = output.htlc;
                    if Amount::from_sat(h.amount_msat / 1000) < MIN_HTLC_CLAIM {
                        continue;
                    }
                    let step = |preimage| HtlcStep {
                        ch: *ch,
                        commitment: commitment.clone(),
                        output,
                        preimage,
                    };
                    if h.offered {
                        timeouts.push(step(None));
                        claims = true;
                    } else if let Some(p) = self.own_preimage(&h.payment_hash) {
                        successes.push(step(Some(p)));
                        claims = true;
                    }
                }
            }
            if claims || channel.balance_msat() >= 330_000 {
                closing.push(*ch);
            }
        }
        timeouts.sort_by_key(|s| s.output.htlc.cltv_expiry);
        successes.extend(timeouts);
        (closing, successes)
    }

    /// The preimage of one of our own invoices.
    fn own_preimage(&self, hash: &[u8; 32]) -> Option<[u8; 32]> {
        let invoice = self.store.invoice(PaymentHash(*hash)).ok()??;
        let p = invoice
            .preimage
            .filter(|_| invoice.direction == InvoiceDirection::Inbound)?
            .0;
        (sha256::Hash::hash(&p).to_byte_array() == *hash).then_some(p)
    }

    /// One channel's close: `Err` with a line for the exit log while it waits or cannot go on;
    /// `Ok` with the coin the next transaction spends (when this one's child is known) and
    /// whether our balance is in our payout.
    fn close_one(
        &mut self,
        ch: ChannelRef,
        coin: Option<Coin>,
        keypair: &bitcoin::secp256k1::Keypair,
        change: ScriptBuf,
    ) -> Result<(Option<Coin>, bool), String> {
        let f = self.factory.as_ref().ok_or("not in a factory")?;
        let link = f.links.get(&ch).ok_or("no channel")?;
        let channel = link.channel().clone();
        let payout = f.factory.client_payout_script(f.position);
        let (mut commit, _) = channel
            .signed_latest_commitment()
            .map_err(|e| format!("{ch} channel close: {e}"))?;
        if let (Some(super::Fault::PublishRevoked), ChannelRef::Leaf, Some((_, old))) =
            (self.config.fault, ch, self.cheat.as_ref())
        {
            tracing::warn!("fault: publishing a commitment we may have revoked");
            commit = old.clone();
        }
        let commit_txid = commit.compute_txid();
        let child = coin.map(|coin| {
            crate::bump::fee_coin_child(
                &commit,
                Amount::ZERO,
                coin,
                keypair,
                change,
                CLOSE_FEE_RATE,
            )
        });
        let next = child
            .as_ref()
            .and_then(|c| c.as_ref().ok())
            .map(|c| (OutPoint::new(c.compute_txid(), 0), c.output[0].clone()));
        match self.chain(|c| c.tx_status(&commit_txid)) {
            Ok(TxStatus::Confirmed { .. }) => {
                let claim = match channel.claim_to_local(&commit, payout, CLOSE_FEE_RATE) {
                    Ok(claim) => claim,
                    // Nothing of ours in it but HTLCs (or less than the fee).
                    Err(_) if channel.balance_msat() < 330_000 => return Ok((next, true)),
                    Err(e) => return Err(format!("{ch} channel close: {e}")),
                };
                let claim_txid = claim.compute_txid();
                if matches!(
                    self.chain(|c| c.tx_status(&claim_txid)),
                    Ok(TxStatus::Confirmed { .. })
                ) {
                    self.close_log(format!("{ch} channel closed: our balance is in our payout"));
                    return Ok((next, true));
                }
                match self.chain(|c| c.submit_transaction(&claim)) {
                    Ok(_) => {
                        self.close_log(format!("{ch} channel: our balance claimed ({claim_txid})"))
                    }
                    Err(e) => {
                        tracing::debug!("to_local claim: {e}");
                        self.close_log(format!(
                            "{ch} channel: our balance waits for its to_self_delay"
                        ))
                    }
                }
                Ok((next, false))
            }
            Ok(TxStatus::InMempool) => Err(format!(
                "{ch} channel: our commitment {commit_txid} waits to confirm"
            )),
            _ => {
                let funding = channel.funding_outpoint();
                match self.chain(|c| c.get_utxo(&funding)) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(format!(
                            "{ch} channel: its output is not on chain, or spent by another \
                             transaction"
                        ))
                    }
                    Err(e) => return Err(format!("{ch} channel close: {e}")),
                }
                let Some(child) = child else {
                    return Err(format!("{ch} channel close: no coin to pay its fee"));
                };
                let child = child.map_err(|e| format!("{ch} channel close: {e}"))?;
                let coin_op = child.input[1].previous_output;
                if !matches!(self.chain(|c| c.get_utxo(&coin_op)), Ok(Some(_))) {
                    return Err(format!(
                        "{ch} channel close: the coin paying its fee ({coin_op}) is not \
                         confirmed yet"
                    ));
                }
                match self.chain(|c| c.submit_package(&commit, &child)) {
                    Ok(_) => Err(format!(
                        "{ch} channel: our latest commitment {commit_txid} published with our \
                         fee coin"
                    )),
                    Err(e) => Err(format!("{ch} channel close: {e}")),
                }
            }
        }
    }

    /// One HTLC output's claim (its commitment is confirmed): `Err` with a line for the exit log
    /// while it waits; `Ok` with the coin the next transaction spends and whether it is done
    /// (in our payout, or taken by the LSP first).
    fn claim_htlc(
        &mut self,
        step: &HtlcStep,
        coin: Option<Coin>,
        keypair: &bitcoin::secp256k1::Keypair,
        change: ScriptBuf,
        payout: &ScriptBuf,
    ) -> Result<(Option<Coin>, bool), String> {
        let ch = step.ch;
        let h = step.output.htlc;
        let hash = h.payment_hash.to_lower_hex_string();
        let f = self.factory.as_ref().ok_or("not in a factory")?;
        let channel = f.links.get(&ch).ok_or("no channel")?.channel().clone();
        let Some(coin) = coin else {
            return Err(format!(
                "{ch} channel: no coin to pay for the HTLC transaction of {hash}"
            ));
        };
        let mut tx = channel
            .htlc_second_stage(
                &step.commitment,
                step.output.vout,
                step.preimage,
                coin.clone(),
                change,
                CLOSE_FEE_RATE,
            )
            .map_err(|e| format!("{ch} channel: HTLC {hash}: {e}"))?;
        let spent = step.commitment.output[step.output.vout as usize].clone();
        crate::bump::sign_key_path_input(&mut tx, 1, &[spent, coin.1.clone()], keypair)
            .map_err(|e| format!("{ch} channel: HTLC {hash}: {e}"))?;
        let txid = tx.compute_txid();
        let next = Some((OutPoint::new(txid, 1), tx.output[1].clone()));
        match self.chain(|c| c.tx_status(&txid)) {
            Ok(TxStatus::Confirmed { .. }) => {
                let claim = channel
                    .claim_delayed(&step.commitment, &tx, payout.clone(), CLOSE_FEE_RATE)
                    .map_err(|e| format!("{ch} channel: HTLC {hash}: {e}"))?;
                let claim_txid = claim.compute_txid();
                if matches!(
                    self.chain(|c| c.tx_status(&claim_txid)),
                    Ok(TxStatus::Confirmed { .. })
                ) {
                    self.close_log(format!("{ch} channel: HTLC {hash} is in our payout"));
                    return Ok((next, true));
                }
                match self.chain(|c| c.submit_transaction(&claim)) {
                    Ok(_) => {
                        self.close_log(format!("{ch} channel: HTLC {hash} claimed ({claim_txid})"))
                    }
                    Err(e) => {
                        tracing::debug!("HTLC claim: {e}");
                        self.close_log(format!(
                            "{ch} channel: HTLC {hash} waits for its to_self_delay"
                        ))
                    }
                }
                Ok((next, false))
            }
            Ok(TxStatus::InMempool) => Err(format!(
                "{ch} channel: HTLC transaction {txid} of {hash} waits to confirm"
            )),
            Ok(TxStatus::Unknown) => {
                let htlc_op = OutPoint::new(step.commitment.compute_txid(), step.output.vout);
                match self.chain(|c| c.get_utxo(&htlc_op)) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        self.close_log(format!(
                            "{ch} channel: HTLC {hash} was spent by the LSP first"
                        ));
                        return Ok((Some(coin), true));
                    }
                    Err(e) => return Err(format!("{ch} channel: HTLC {hash}: {e}")),
                }
                let tip = self
                    .chain(|c| c.tip())
                    .map_err(|e| format!("{ch} channel: {e}"))?
                    .height;
                if h.offered && tip < h.cltv_expiry {
                    return Err(format!(
                        "{ch} channel: HTLC {hash} comes back to us from height {}",
                        h.cltv_expiry + 1
                    ));
                }
                if !matches!(self.chain(|c| c.get_utxo(&coin.0)), Ok(Some(_))) {
                    return Err(format!(
                        "{ch} channel: the coin paying for HTLC {hash} ({}) is not confirmed yet",
                        coin.0
                    ));
                }
                match self.chain(|c| c.submit_transaction(&tx)) {
                    Ok(_) => Err(format!(
                        "{ch} channel: HTLC transaction {txid} of {hash} published"
                    )),
                    Err(e) => Err(format!("{ch} channel: HTLC {hash}: {e}")),
                }
            }
            Err(e) => Err(format!("{ch} channel: HTLC {hash}: {e}")),
        }
    }

    pub(super) fn close_log(&mut self, line: String) {
        if let Some(f) = self.factory.as_mut() {
            if !f.exit_log.contains(&line) {
                tracing::info!("{line}");
                f.exit_log.push(line);
            }
        }
    }
}
