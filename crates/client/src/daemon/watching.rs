//! The client's watcher, on its own chain connection: every new block is scanned for a kickoff
//! of our path (answered with our newest state of that node, which wins because its delay is
//! shorter), a revoked commitment of our channel (answered with a justice transaction to our
//! payout script), or a superseded stock output (punished); see [`crate::watch::Watcher`].
//!
//! It also decides when the client must exit on its own: an HTLC we received whose expiry comes
//! closer than the time our exit path takes plus a margin, or an HTLC we offered that expired
//! some blocks ago without the LSP settling it. (The factory's timeout needs no exit: under the
//! inverted policy the timeout transactions pay us at T.) A closed channel's HTLCs are settled
//! on chain by the close ([`super::closing`]) and by the watcher's claims on the LSP's
//! commitment; a preimage revealed on chain settles our payment.
//!
//! The watcher is rebuilt when our exit path changes (after an update), keeping the height it
//! has scanned to; after a restart it scans again from the funding output's confirmation.

use bitcoin::hex::DisplayHex;
use bitcoin::{FeeRate, OutPoint, Txid};
use superscalar_chain::Chain;
use superscalar_core::channel::deadlines::{must_go_onchain, DEFAULT_MARGIN_BLOCKS};
use superscalar_store::FactoryStatus;

use super::Client;
use crate::watch::{WatchEvent, Watcher};

/// The fee rate of the watcher's answers (justice transactions and punishments).
const ANSWER_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(1_250);

/// The watcher and what it was built from.
pub(super) struct Watching {
    watcher: Watcher,
    /// The txids of the exit path it watches.
    path: Vec<Txid>,
}

/// Blocks past its expiry that an HTLC we offered waits for the LSP before we exit to take it
/// back on chain.
const OFFERED_GRACE_BLOCKS: u32 = 3;

impl Client {
    /// Scans the blocks that came since the last tick, answers what it sees, and starts the exit
    /// when an HTLC or the timeout comes too close.
    pub(super) fn watch_tick(&mut self) {
        // A factory joined in this run has no state built yet (it is built at start, and by
        // the first update): the watcher and the exit deadlines need it from the start.
        if self.factory.as_ref().is_some_and(|f| f.state.is_none()) {
            if let Err(e) = self.load_factory_state() {
                tracing::warn!("watcher: {e}");
            }
        }
        let Some(f) = self.factory.as_ref() else {
            return;
        };
        if !matches!(f.status, FactoryStatus::Live | FactoryStatus::Closing) {
            return;
        }
        let Some(st) = f.state.as_ref() else {
            return;
        };
        let path = st.exit_path(f.position);
        let txids: Vec<Txid> = path.iter().map(|s| s.tx.compute_txid()).collect();
        let channels: Vec<_> = f
            .links
            .values()
            .flat_map(|l| {
                l.channel()
                    .funding_outpoints()
                    .into_iter()
                    .map(|o| (l.channel().clone(), o))
            })
            .collect();
        let rebuild = self.watching.as_ref().map_or(true, |w| w.path != txids);
        if rebuild {
            let from = match self.watching.as_ref() {
                Some(w) => w.watcher.next_height(),
                None => {
                    let funding = f.funding;
                    match self.funding_height(funding) {
                        Some(h) => h,
                        None => return,
                    }
                }
            };
            let payout = f.factory.client_payout_script(f.position);
            let watcher = Watcher::new(vec![path], channels.clone(), payout, ANSWER_FEE_RATE, from)
                .with_punishments(st.armed_punishments());
            self.watching = Some(Watching {
                watcher,
                path: txids,
            });
        }
        let Some(w) = self.watching.as_mut() else {
            return;
        };
        // The newest revocation secrets arm the justice answers; the preimages of our own
        // invoices claim HTLCs of the LSP's commitment if it closes a channel.
        w.watcher.set_channels(channels);
        let preimages: Vec<([u8; 32], [u8; 32])> = f
            .links
            .values()
            .flat_map(|l| l.channel().committed_htlcs())
            .filter(|h| !h.offered_by_us)
            .filter_map(|h| {
                self.store
                    .invoice(superscalar_store::PaymentHash(h.payment_hash))
                    .ok()
                    .flatten()
                    .filter(|i| i.direction == superscalar_store::InvoiceDirection::Inbound)
                    .and_then(|i| i.preimage)
                    .map(|p| (h.payment_hash, p.0))
            })
            .collect();
        let Some(w) = self.watching.as_mut() else {
            return;
        };
        w.watcher.add_preimages(preimages);
        let chain = std::sync::Arc::clone(&self.chain);
        let events = tokio::task::block_in_place(|| w.watcher.poll(chain.as_ref()));
        match events {
            Ok(events) => {
                for e in events {
                    self.on_watch_event(e);
                }
            }
            Err(e) => tracing::warn!("watcher: {e}"),
        }
        self.exit_if_too_close();
    }

    /// The height the funding output confirmed at, by our chain (the first block to scan).
    fn funding_height(&self, funding: OutPoint) -> Option<u32> {
        match self.chain(|c| c.get_utxo(&funding)) {
            Ok(Some(coin)) => Some(coin.height),
            // Spent already: scan from the factory's creation.
            Ok(None) => self
                .factory
                .as_ref()
                .map(|f| f.factory.params().creation_height),
            Err(_) => None,
        }
    }

    fn on_watch_event(&mut self, e: WatchEvent) {
        let line = match &e {
            WatchEvent::NewestState { kickoff, state } => format!(
                "watcher: kickoff {kickoff} of our path is on chain; our newest state {state} broadcast"
            ),
            WatchEvent::Justice {
                revoked, justice, ..
            } => format!(
                "watcher: the LSP published revoked commitment {revoked}; justice transaction {justice} broadcast"
            ),
            WatchEvent::Punished { stock, punishment } => format!(
                "watcher: superseded stock output {stock} punished by {punishment}"
            ),
            WatchEvent::Sale { input, sale } => {
                format!("watcher: our sale {sale} broadcast after {input}")
            }
            WatchEvent::ChannelClosed { commitment, .. } => {
                format!("watcher: our channel's output was spent on chain by {commitment}")
            }
            WatchEvent::OtherState { kickoff, state } => format!(
                "watcher: another state {state} than our newest spent kickoff {kickoff}"
            ),
            WatchEvent::Claimed {
                commitment, claim, ..
            } => format!("watcher: our output in the LSP's commitment {commitment} claimed by {claim}"),
            WatchEvent::HtlcResolved {
                payment_hash,
                offered,
                preimage,
                ..
            } => {
                let hash = payment_hash.to_lower_hex_string();
                match (offered, preimage) {
                    // A payment of ours, settled on chain: the preimage is the proof.
                    (true, Some(p)) => {
                        if let Err(e) = self.store.update_invoice(
                            superscalar_store::PaymentHash(*payment_hash),
                            superscalar_store::InvoiceStatus::Paid,
                            Some(superscalar_store::Preimage(*p)),
                        ) {
                            tracing::debug!("payment {hash}: {e}");
                        }
                        format!("watcher: our payment {hash} was settled on chain")
                    }
                    (true, None) => format!("watcher: our HTLC {hash} came back on chain"),
                    (false, Some(_)) => format!("watcher: HTLC {hash} paid to us on chain"),
                    (false, None) => format!("watcher: HTLC {hash} to us timed out on chain"),
                }
            }
            WatchEvent::AnswerFailed { tx, reason, .. } => {
                return tracing::info!("watcher: answer {tx} refused: {reason}");
            }
        };
        self.log(line);
    }

    /// Starts the exit when an HTLC of our channel or the factory's timeout is closer than our
    /// exit path takes plus a margin.
    fn exit_if_too_close(&mut self) {
        let Some(f) = self.factory.as_ref() else {
            return;
        };
        if f.exit.is_some() || f.status != FactoryStatus::Live {
            return;
        }
        let (Some(st), Some(tip)) = (f.state.as_ref(), self.tip()) else {
            return;
        };
        let odo = st.odometer();
        let close = |expiry: u32| {
            must_go_onchain(
                &f.factory,
                odo,
                f.position,
                expiry,
                tip,
                DEFAULT_MARGIN_BLOCKS,
            )
        };
        // An HTLC we received must be claimed on chain before it expires; one we offered comes
        // back by timeout only after it expired (until then the LSP may still settle it, and
        // leaving early would force every payer of a slow payee out of its factory).
        let htlc = f.links.values().find_map(|l| {
            l.channel().committed_htlcs().into_iter().find(|h| {
                if h.offered_by_us {
                    tip >= h.cltv_expiry.saturating_add(OFFERED_GRACE_BLOCKS)
                } else {
                    close(h.cltv_expiry)
                }
            })
        });
        let reason = match htlc {
            Some(h) if h.offered_by_us => format!(
                "our HTLC of {} msat expired at {} and the LSP has not settled it",
                h.amount_msat, h.cltv_expiry
            ),
            Some(h) => format!(
                "an HTLC of {} msat expires at {}: too close to settle it off chain",
                h.amount_msat, h.cltv_expiry
            ),
            None => return,
        };
        self.log(format!("exiting alone: {reason}"));
        match self.start_exit() {
            Ok(()) => self.step_exit(),
            Err(e) => self.log(format!("cannot exit: {}", e.message)),
        }
    }
}
