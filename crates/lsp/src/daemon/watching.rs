//! The LSP's watcher, on its own chain connection: for each live factory, every new block is
//! scanned for a kickoff of the tree (answered with the LSP's newest state of that node, which
//! wins because its delay is shorter: a client that publishes a superseded state gains nothing)
//! and for a revoked commitment of any of its channels with the clients (answered with a
//! justice transaction that takes the whole channel to the LSP's wallet); see
//! [`superscalar_watch::Watcher`].
//!
//! A factory's watcher is rebuilt when its newest states change (after an update), keeping the
//! height it has scanned to; after a restart it scans again from the funding output's
//! confirmation. Its channels are refreshed every tick (the newest revocation secrets).

use std::collections::HashMap;

use bitcoin::{FeeRate, ScriptBuf, Txid};
use superscalar_chain::Chain;
use superscalar_core::{ClientId, FactoryId};
use superscalar_store::FactoryStatus;
use superscalar_watch::{WatchEvent, Watcher};

use superscalar_core::channel::link::Intent;
use superscalar_store::{Invoice, InvoiceStatus, PaymentHash, Preimage};

use super::channels::{hex, Key};
use super::Lsp;

/// The fee rate of the watcher's answers (justice transactions).
const ANSWER_FEE_RATE: FeeRate = FeeRate::from_sat_per_kwu(1_250);

/// A factory's watcher and what it was built from.
pub(super) struct FactoryWatch {
    watcher: Watcher,
    /// The txids of the newest states it answers with.
    states: Vec<Txid>,
    /// The channel of each watched (channel, outpoint) pair, in the watcher's order.
    channels: Vec<Key>,
}

/// The LSP's watchers, one per live factory.
#[derive(Default)]
pub(super) struct Watching {
    factories: HashMap<FactoryId, FactoryWatch>,
    /// Where justice transactions pay (an address of the LSP's wallet, revealed once per run).
    destination: Option<ScriptBuf>,
}

impl Lsp {
    /// Scans the blocks that came since the last tick for every live factory and answers what
    /// it sees.
    pub(super) fn watch_tick(&mut self) {
        if self.config.fault == Some(super::Fault::PublishSuperseded) {
            return; // a cheating LSP does not answer its own cheat: the clients' watchers must
        }
        let live: Vec<FactoryId> = self
            .factories
            .iter()
            .filter(|(_, f)| {
                matches!(
                    f.status,
                    FactoryStatus::Live | FactoryStatus::Dying | FactoryStatus::Closing
                )
            })
            .map(|(id, _)| *id)
            .collect();
        self.watching.factories.retain(|id, _| live.contains(id));
        for id in live {
            self.watch_factory(id);
        }
    }

    fn watch_factory(&mut self, id: FactoryId) {
        if self.factory_state(id).is_err() {
            return;
        }
        let destination = match self.watching.destination.clone() {
            Some(d) => d,
            None => {
                let d = self.wallet.new_address().script_pubkey();
                self.watching.destination = Some(d.clone());
                d
            }
        };
        let Some((factory, st, _)) = self.channels.states.get(&id) else {
            return;
        };
        let clients = factory.params().clients.len() as u32;
        let paths: Vec<_> = (0..clients).map(|c| st.exit_path(ClientId(c))).collect();
        let mut states: Vec<Txid> = paths
            .iter()
            .flatten()
            .map(|s| s.tx.compute_txid())
            .collect();
        states.sort();
        states.dedup();
        let mut keys = Vec::new();
        let mut channels = Vec::new();
        let mut leaves: Vec<(&Key, &super::channels::Leaf)> = self
            .channels
            .leaves
            .iter()
            .filter(|(k, _)| k.0 == id)
            .collect();
        leaves.sort_by_key(|(k, _)| (k.1.serialize(), k.2));
        for (key, leaf) in leaves {
            for o in leaf.link.channel().funding_outpoints() {
                keys.push(*key);
                channels.push((leaf.link.channel().clone(), o));
            }
        }
        let rebuild = self
            .watching
            .factories
            .get(&id)
            .map_or(true, |w| w.states != states || w.channels != keys);
        if rebuild {
            let from = match self.watching.factories.get(&id) {
                Some(w) => w.watcher.next_height(),
                None => {
                    let funding = st.funding();
                    match self.chain(|c| c.get_utxo(&funding)) {
                        Ok(Some(coin)) => coin.height,
                        Ok(None) => factory.params().creation_height,
                        Err(_) => return,
                    }
                }
            };
            let watcher = Watcher::new(paths, channels.clone(), destination, ANSWER_FEE_RATE, from);
            self.watching.factories.insert(
                id,
                FactoryWatch {
                    watcher,
                    states,
                    channels: keys,
                },
            );
        }
        let Some(mut w) = self.watching.factories.remove(&id) else {
            return;
        };
        // The newest revocation secrets arm the justice answers; the preimages the LSP holds
        // of HTLCs its clients offered claim those HTLCs on chain if a client closes.
        let preimages = self.preimages_of_incoming(&w.channels);
        w.watcher.set_channels(channels);
        w.watcher.add_preimages(preimages);
        let events = self.chain(|c| w.watcher.poll(c as &dyn Chain));
        let keys = w.channels.clone();
        self.watching.factories.insert(id, w);
        match events {
            Ok(events) => {
                for e in events {
                    self.on_watch_event(id, &keys, e);
                }
            }
            Err(e) => tracing::warn!("watcher of {id}: {e}"),
        }
    }

    fn on_watch_event(&mut self, id: FactoryId, keys: &[Key], e: WatchEvent) {
        let client = |i: usize| {
            keys.get(i)
                .and_then(|k| self.channels.leaves.get(k))
                .map_or("?".to_owned(), |l| {
                    format!("{} channel of client {}", l.channel, l.client_index())
                })
        };
        let mut closed = None;
        let line = match &e {
            WatchEvent::NewestState { kickoff, state } => format!(
                "watcher: kickoff {kickoff} of factory {id} is on chain; our newest state {state} broadcast"
            ),
            WatchEvent::Justice {
                channel,
                revoked,
                justice,
            } => format!(
                "watcher: revoked commitment {revoked} of the {} published; justice transaction {justice} broadcast",
                client(*channel)
            ),
            WatchEvent::ChannelClosed {
                channel,
                commitment,
                htlcs,
            } => {
                closed = keys.get(*channel).map(|k| (*k, htlcs.clone()));
                format!(
                    "watcher: the {} is closed on chain by {commitment}",
                    client(*channel)
                )
            }
            WatchEvent::Claimed {
                channel,
                commitment,
                claim,
            } => format!(
                "watcher: our output in {commitment} of the {} claimed by {claim}",
                client(*channel)
            ),
            WatchEvent::HtlcResolved {
                channel,
                payment_hash,
                offered,
                preimage,
            } => {
                let line = format!(
                    "watcher: HTLC {} of the {} resolved on chain {}",
                    hex(payment_hash),
                    client(*channel),
                    if preimage.is_some() {
                        "with its preimage"
                    } else {
                        "without preimage"
                    }
                );
                self.log(line);
                return self.htlc_resolved_on_chain(*payment_hash, *offered, *preimage);
            }
            WatchEvent::OtherState { kickoff, state } => format!(
                "watcher: another state {state} than our newest spent kickoff {kickoff} of factory {id}"
            ),
            WatchEvent::Punished { stock, punishment } => {
                format!("watcher: stock output {stock} punished by {punishment}")
            }
            WatchEvent::Sale { input, sale } => format!("watcher: sale {sale} broadcast after {input}"),
            WatchEvent::AnswerFailed { tx, reason, .. } => {
                return tracing::info!("watcher: answer {tx} refused: {reason}");
            }
        };
        self.log(line);
        // A channel closed on chain carries no more payments; an HTLC the LSP offered that is
        // not in the commitment can never be claimed: its payment fails upstream.
        let Some((key, in_commitment)) = closed else {
            return;
        };
        let Some(l) = self.channels.leaves.get_mut(&key) else {
            return;
        };
        l.usable = false;
        let gone: Vec<[u8; 32]> = l
            .link
            .channel()
            .next_htlcs()
            .iter()
            .chain(l.link.channel().committed_htlcs().iter())
            .filter(|h| h.offered_by_us && !in_commitment.contains(&h.payment_hash))
            .map(|h| h.payment_hash)
            .collect();
        for hash in gone {
            self.htlc_resolved_on_chain(hash, true, None);
        }
    }

    /// The preimages the LSP holds of the HTLCs its clients offered it in `keys`' channels.
    fn preimages_of_incoming(&self, keys: &[Key]) -> Vec<([u8; 32], [u8; 32])> {
        let mut out = Vec::new();
        for l in keys.iter().filter_map(|k| self.channels.leaves.get(k)) {
            for h in l.link.channel().committed_htlcs() {
                if h.offered_by_us {
                    continue;
                }
                if let Ok(Some(Invoice {
                    preimage: Some(p), ..
                })) = self.store.invoice(PaymentHash(h.payment_hash))
                {
                    out.push((h.payment_hash, p.0));
                }
            }
        }
        out
    }

    /// An HTLC of a closed channel is settled on chain: with its preimage, the payment it carries
    /// is settled (the preimage recorded first, then the payer's HTLC fulfilled); without, an HTLC
    /// the LSP offered to a payee is gone and the payer's HTLC is failed back. Each is done once:
    /// an invoice no longer held (after a restart's rescan) is left as it is.
    fn htlc_resolved_on_chain(
        &mut self,
        hash: [u8; 32],
        offered: bool,
        preimage: Option<[u8; 32]>,
    ) {
        let invoice = match self.store.invoice(PaymentHash(hash)) {
            Ok(Some(i)) => i,
            _ => return,
        };
        let next = match preimage {
            Some(p) => {
                if invoice.status != InvoiceStatus::Paid {
                    if let Err(e) = self.store.update_invoice(
                        PaymentHash(hash),
                        InvoiceStatus::Paid,
                        Some(Preimage(p)),
                    ) {
                        return tracing::error!(
                            "invoice {}: cannot record its preimage: {e}",
                            hex(&hash)
                        );
                    }
                    self.log(format!("payment {} settled on chain", hex(&hash)));
                }
                // A payer's channel closed on chain is claimed there by the watcher instead.
                match self.incoming_with(&hash) {
                    Some((upstream, id))
                        if self
                            .channels
                            .leaves
                            .get(&upstream)
                            .is_some_and(|l| l.usable)
                            && self.push(upstream, Intent::Fulfill { id, preimage: p }) =>
                    {
                        vec![upstream]
                    }
                    _ => Vec::new(),
                }
            }
            None if offered && invoice.status == InvoiceStatus::Held => {
                self.fail_back(&hash, "the payee's channel closed on chain without it")
            }
            None => Vec::new(),
        };
        self.poll_links(next);
    }
}
