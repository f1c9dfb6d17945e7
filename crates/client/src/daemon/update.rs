//! The client's side of a factory update (a Decker-Wattenhofer advance of a path it is on):
//! checked against its own state and chain view before anything is signed, signed in two
//! stages, with its leaf channel moved onto the new state's channel output before the new state
//! itself is signed.
//!
//! Order and rules:
//! 1. The LSP's proposal is checked ([`FactoryState::accept`]: signed by the LSP, the next state
//!    of a node above us, money conserved, time left before T). The state with the new index
//!    recorded is written before our nonces leave. The channel adds the new outpoint (dual
//!    state) at once.
//! 2. Stage 1 (everything beneath the ticking node) is signed; its final signatures are checked
//!    and written with the state.
//! 3. Stage 2 (the ticking node's new state): our partial signatures leave only once our channel
//!    holds the LSP's signature of our latest commitment on the new outpoint, so that whenever
//!    the new state can be published our balance can follow it down.
//! 4. The final signatures complete the update (written before anything else); the LSP's `Done`
//!    brings the secrets of the superseded stock versions.
//!
//! An update interrupted by an abort or a restart is abandoned ([`FactoryState::abandon`]): the
//! index stays used, and the channel keeps signing on the new outpoint if a commitment on it was
//! signed (the LSP may still hold our stage 2 signature); the LSP retires the outpoint otherwise.

use bitcoin::OutPoint;
use superscalar_chain::Chain;
use superscalar_core::advance::{AdvanceProposal, FactoryState};
use superscalar_core::ceremony::{AggNonceMsg, ClientCeremony, SignedTx};
use superscalar_core::channel::state::ChannelSetup;
use superscalar_core::channel::ChannelRef;
use superscalar_core::update::{UpdateBody, UpdateMsg};
use superscalar_core::{Signer, Slot};
use superscalar_store::{convert, Party};
use superscalar_wire::messages::Message;

use super::Client;

/// An update this client is signing.
pub(super) struct Updating {
    update: u64,
    stage: u8,
    ceremony: ClientCeremony,
    /// Stage 1, fully signed (once it is).
    below: Vec<SignedTx>,
    /// Where our channels' outputs move.
    moved: Vec<(ChannelRef, OutPoint)>,
    /// The sale to us this update makes, if any: its index and its channel's output.
    sold: Option<(u32, OutPoint)>,
    /// Stage 2's aggregated nonces, held until our channel holds a commitment on its new
    /// outpoint.
    held: Option<AggNonceMsg>,
}

impl Updating {
    /// The update's id.
    pub(super) fn id(&self) -> u64 {
        self.update
    }
}

impl Client {
    /// Abandons the update being signed and tells the LSP why.
    pub(super) fn refuse_update(&mut self, update: u64, why: &str) {
        let factory = self.factory.as_ref().map(|f| f.id);
        self.abandon_update(update, why);
        if let Some(factory) = factory {
            self.send_update(factory, update, UpdateBody::Abort(why.to_owned()));
        }
    }

    /// The factory's state as this client signed it: the stored snapshot, or the first state.
    pub(super) fn load_factory_state(&mut self) -> Result<(), String> {
        let Some(f) = self.factory.as_mut() else {
            return Ok(());
        };
        if f.state.is_some() {
            return Ok(());
        }
        let party = Party::Client(f.position.0);
        let stored = self
            .store
            .latest_factory_state(convert::factory_id(f.id), party)
            .map_err(|e| e.to_string())?;
        let state = match stored {
            Some((v, bytes)) if v > 0 => {
                let mut st = FactoryState::restore(f.factory.clone(), &bytes)
                    .map_err(|e| format!("factory {}: stored state: {e}", f.id))?;
                // An update interrupted by the restart is abandoned: its nonces are gone.
                st.abandon();
                if st.snapshot() != bytes {
                    self.store
                        .append_factory_state(
                            convert::factory_id(f.id),
                            party,
                            v + 1,
                            &st.snapshot(),
                        )
                        .map_err(|e| e.to_string())?;
                }
                st
            }
            _ => FactoryState::new(
                f.factory.clone(),
                f.funding,
                Signer::Client(f.position),
                f.signed.iter().cloned(),
            ),
        };
        f.signed = signed_in_order(&state, f.position);
        f.state = Some(state);
        Ok(())
    }

    /// Writes the factory state (a new version of this client's state) before anything that
    /// depends on it leaves.
    fn save_factory_state(&mut self) -> Result<(), String> {
        let f = self.factory.as_ref().ok_or("not in a factory")?;
        let st = f.state.as_ref().ok_or("no factory state")?;
        let id = convert::factory_id(f.id);
        let party = Party::Client(f.position.0);
        let next = self
            .store
            .latest_factory_state(id, party)
            .map_err(|e| e.to_string())?
            .map_or(0, |(v, _)| v + 1);
        self.store
            .append_factory_state(id, party, next, &st.snapshot())
            .map_err(|e| e.to_string())
    }

    fn send_update(&self, factory: superscalar_core::FactoryId, update: u64, body: UpdateBody) {
        self.send(Message::Update(Box::new(UpdateMsg {
            factory,
            update,
            body,
        })));
    }

    /// A step of an update from the LSP.
    pub(super) fn on_update(&mut self, msg: UpdateMsg) {
        let Some(f) = self.factory.as_ref().filter(|f| f.id == msg.factory) else {
            return self.log(format!(
                "an update of a factory we are not in ({})",
                msg.factory
            ));
        };
        if f.status != superscalar_store::FactoryStatus::Live || f.exit.is_some() {
            return self.send_update(
                msg.factory,
                msg.update,
                UpdateBody::Abort("the factory is not live for this client".into()),
            );
        }
        if let Err(e) = self.load_factory_state() {
            return self.log(e);
        }
        let (factory, update) = (msg.factory, msg.update);
        let result = match msg.body {
            UpdateBody::Advance(p) => self.on_advance(update, &p),
            UpdateBody::Sale(_) => Err("pseudo-Spilman sales are not taken by this client".into()),
            UpdateBody::AggNonces { stage, msg } => self.on_agg_nonces(update, stage, msg),
            UpdateBody::FinalSigs { stage, msg } => self.on_final_sigs(update, stage, &msg),
            UpdateBody::Done(revealed) => self.on_done(update, &revealed),
            UpdateBody::Abort(reason) => {
                self.abandon_update(update, &format!("aborted by the LSP: {reason}"));
                Ok(())
            }
            other => Err(format!("{} is not for a client", other.name())),
        };
        if let Err(e) = result {
            self.log(format!("factory {factory}: update {update} refused: {e}"));
            self.abandon_update(update, &e);
            self.send_update(factory, update, UpdateBody::Abort(e));
        }
    }

    fn on_advance(&mut self, update: u64, p: &AdvanceProposal) -> Result<(), String> {
        if self.updating.is_some() {
            // A new proposal ends the one the LSP gave up (after its restart, say).
            let old = self.updating.as_ref().map(|u| u.update).unwrap_or_default();
            self.abandon_update(old, "superseded by a new proposal");
        }
        let tip = self.tip().ok_or("no chain view")?;
        let me = self.factory.as_ref().map(|f| f.position);
        if let Some(t) = p.sale.filter(|t| Some(t.buyer) == me) {
            if !self.sale_is_ours(t.amount.to_sat()) {
                return Err(format!(
                    "the proposal sells us {} sat, not what we are buying",
                    t.amount.to_sat()
                ));
            }
        }
        // The funding output as our own chain sees it (never the LSP's word).
        let funding = self
            .factory
            .as_ref()
            .map(|f| f.funding)
            .ok_or("not in a factory")?;
        let coin = self
            .chain(|c| c.get_utxo(&funding))
            .map_err(|e| e.to_string())?
            .ok_or("the factory's funding output is not in our chain's UTXO set")?;
        let f = self.factory.as_mut().ok_or("not in a factory")?;
        if let Some(st) = f.state.as_mut() {
            st.confirm_funding(Some(&coin.txout), Some(coin.height))
                .map_err(|e| e.to_string())?;
        }
        let key = self
            .keys
            .factory_key(f.key_index)
            .map_err(|e| e.to_string())?;
        let st = f.state.as_mut().ok_or("no factory state")?;
        let ceremony = st
            .accept(p, f.position, key, tip)
            .map_err(|e| e.to_string())?;
        let mut moved = Vec::new();
        for ch in f.links.keys() {
            let slot = ch.slot(f.position);
            let current = st.outpoint(slot);
            if let Some(o) = st
                .pending_outpoint(slot, |k| ceremony.txid(k))
                .filter(|o| Some(*o) != current)
            {
                moved.push((*ch, o));
            }
        }
        let sold = match p.sale {
            Some(t) if t.buyer == f.position => {
                let j = st
                    .pending_sales()
                    .map_or(0, |s| s.len() as u32)
                    .saturating_sub(1);
                st.pending_outpoint(Slot::Sold(j), |k| ceremony.txid(k))
                    .map(|o| (j, o))
            }
            _ => None,
        };
        self.updating = Some(Updating {
            update,
            stage: 1,
            ceremony,
            below: Vec::new(),
            moved: moved.clone(),
            sold,
            held: None,
        });
        self.save_factory_state()?;
        for (ch, outpoint) in moved {
            self.add_channel_funding(ch, outpoint)?;
        }
        self.log(format!(
            "factory {}: signing the advance of {} to state {}",
            p.factory, p.node, p.to.0
        ));
        let u = self.updating.as_mut().ok_or("no update")?;
        let nonces = u.ceremony.round1().map_err(|e| e.to_string())?;
        self.send_update(
            p.factory,
            update,
            UpdateBody::Nonces {
                stage: 1,
                msg: nonces,
            },
        );
        Ok(())
    }

    fn current(&mut self, update: u64, stage: u8) -> Result<&mut Updating, String> {
        match self.updating.as_mut() {
            Some(u) if u.update == update && u.stage == stage => Ok(u),
            Some(u) => Err(format!(
                "a message of update {update} stage {stage}, but update {} is at stage {}",
                u.update, u.stage
            )),
            None => Err(format!("no update {update} is being signed")),
        }
    }

    fn on_agg_nonces(&mut self, update: u64, stage: u8, msg: AggNonceMsg) -> Result<(), String> {
        let u = self.current(update, stage)?;
        u.held = Some(msg);
        self.release_partials()
    }

    /// Sends the partial signatures of the current stage once they may leave.
    fn release_partials(&mut self) -> Result<(), String> {
        let Some(u) = self.updating.as_ref() else {
            return Ok(());
        };
        if u.held.is_none() {
            return Ok(());
        }
        if u.stage == 2 {
            let ready = u.moved.iter().all(|(ch, outpoint)| {
                self.factory
                    .as_ref()
                    .and_then(|f| f.links.get(ch))
                    .is_some_and(|l| l.channel().holds_commitment_on(outpoint))
            });
            if !ready {
                return Ok(()); // after the channels' re-signing rounds
            }
        }
        let factory = self
            .factory
            .as_ref()
            .map(|f| f.id)
            .ok_or("not in a factory")?;
        let u = self.updating.as_mut().ok_or("no update")?;
        let held = u.held.take().ok_or("no nonces")?;
        let partials = u.ceremony.round2(&held).map_err(|e| e.to_string())?;
        let (update, stage) = (u.update, u.stage);
        self.send_update(
            factory,
            update,
            UpdateBody::Partials {
                stage,
                msg: partials,
            },
        );
        Ok(())
    }

    fn on_final_sigs(
        &mut self,
        update: u64,
        stage: u8,
        msg: &superscalar_core::ceremony::FinalSigMsg,
    ) -> Result<(), String> {
        let u = self.current(update, stage)?;
        let signed = u.ceremony.finish(msg).map_err(|e| e.to_string())?.to_vec();
        let f = self.factory.as_mut().ok_or("not in a factory")?;
        let st = f.state.as_mut().ok_or("no factory state")?;
        let u = self.updating.as_mut().ok_or("no update")?;
        if stage == 1 {
            let key = self
                .keys
                .factory_key(f.key_index)
                .map_err(|e| e.to_string())?;
            let ceremony = st
                .accept_entry(&signed, f.position, key)
                .map_err(|e| e.to_string())?;
            u.below = signed;
            u.ceremony = ceremony;
            u.stage = 2;
            self.save_factory_state()?;
            let u = self.updating.as_mut().ok_or("no update")?;
            let nonces = u.ceremony.round1().map_err(|e| e.to_string())?;
            let factory = self
                .factory
                .as_ref()
                .map(|f| f.id)
                .ok_or("not in a factory")?;
            self.send_update(
                factory,
                update,
                UpdateBody::Nonces {
                    stage: 2,
                    msg: nonces,
                },
            );
            return Ok(());
        }
        let mut all = std::mem::take(&mut u.below);
        all.extend(signed);
        st.complete(all).map_err(|e| e.to_string())?;
        f.signed = signed_in_order(st, f.position);
        let sold = u.sold;
        self.updating = None;
        self.save_factory_state()?;
        let id = self.factory.as_ref().ok_or("not in a factory")?.id;
        self.log(format!(
            "factory {id}: update {update} signed; our exit path follows the new state"
        ));
        let f = self.factory.as_ref().ok_or("not in a factory")?;
        if let Some((j, _)) = sold {
            let amount = f
                .state
                .as_ref()
                .and_then(|s| s.sales().get(j as usize))
                .map_or(0, |s| s.amount.to_sat());
            let opened = f.links.contains_key(&ChannelRef::Sold(j));
            self.log(format!(
                "factory {id}: bought {amount} sat of inbound liquidity (sale {j}){}",
                if opened {
                    ""
                } else {
                    "; its channel is not open"
                }
            ));
        }
        Ok(())
    }

    fn on_done(
        &mut self,
        update: u64,
        revealed: &[superscalar_core::advance::Revealed],
    ) -> Result<(), String> {
        if self.updating.as_ref().is_some_and(|u| u.update == update) {
            return Err("done before the final signatures".into());
        }
        let f = self.factory.as_mut().ok_or("not in a factory")?;
        let st = f.state.as_mut().ok_or("no factory state")?;
        st.receive_revocations(revealed)
            .map_err(|e| e.to_string())?;
        self.save_factory_state()?;
        self.log(format!(
            "factory update {update} complete: {} superseded stock versions revoked",
            revealed.len()
        ));
        Ok(())
    }

    /// Gives up the update being signed (if it is `update`), keeping what may have been signed.
    fn abandon_update(&mut self, update: u64, why: &str) {
        if !self.updating.as_ref().is_some_and(|u| u.update == update) {
            return;
        }
        let sold = self.updating.take().and_then(|u| u.sold);
        if let Some(st) = self.factory.as_mut().and_then(|f| f.state.as_mut()) {
            st.abandon();
        }
        if let Some((j, _)) = sold {
            // Nothing was paid through the channel of a sale that did not complete.
            let ch = ChannelRef::Sold(j);
            if let Some(f) = self.factory.as_mut() {
                if f.links.remove(&ch).is_some() {
                    let id = convert::channel_id_of(f.id, f.position.0, ch);
                    if let Err(e) = self.store.remove_channel(id) {
                        self.log(format!("the abandoned sale's channel: {e}"));
                    }
                }
            }
        }
        if let Err(e) = self.save_factory_state() {
            self.log(format!("update {update}: abandoned state not written: {e}"));
        }
        self.log(format!("update {update} abandoned: {why}"));
    }

    /// The update's hold on partial signatures may be lifted (after a channel round).
    pub(super) fn update_tick(&mut self) {
        if let Err(e) = self.release_partials() {
            let update = self.updating.as_ref().map(|u| u.update).unwrap_or_default();
            let factory = self.factory.as_ref().map(|f| f.id);
            self.log(format!("update {update}: {e}"));
            self.abandon_update(update, &e);
            if let Some(factory) = factory {
                self.send_update(factory, update, UpdateBody::Abort(e));
            }
        }
    }

    /// The lost connection ends the update being signed.
    pub(super) fn update_disconnected(&mut self) {
        if let Some(update) = self.updating.as_ref().map(|u| u.update) {
            self.abandon_update(update, "the connection to the LSP was lost");
        }
    }

    /// Whether the LSP may make the channel stop signing on `outpoint`: not the channel's
    /// output in the current state, in the update being signed, or in an abandoned update the
    /// LSP could still publish.
    pub(super) fn may_retire(&self, ch: ChannelRef, outpoint: &OutPoint) -> bool {
        let Some(f) = self.factory.as_ref() else {
            return true;
        };
        let Some(st) = f.state.as_ref() else {
            return *outpoint
                != f.links
                    .get(&ch)
                    .map_or(OutPoint::null(), |l| l.channel().funding_outpoint());
        };
        let slot = ch.slot(f.position);
        if st.outpoint(slot) == Some(*outpoint) {
            return false;
        }
        if self.updating.as_ref().is_some_and(|u| {
            u.moved.contains(&(ch, *outpoint)) || u.sold.is_some_and(|s| s.1 == *outpoint)
        }) {
            return false;
        }
        let signed = f
            .links
            .get(&ch)
            .is_some_and(|l| l.channel().holds_commitment_on(outpoint));
        !(signed && st.abandoned_outpoints(slot).contains(outpoint))
    }
}

impl Client {
    /// Our side of the sold channel of sale `j` in the update being signed: the proposal we
    /// accepted sells it to us, and the channel opens on its output in the new state.
    pub(super) fn sold_channel_setup(&self, j: u32) -> Result<ChannelSetup, String> {
        let u = self
            .updating
            .as_ref()
            .filter(|u| u.sold.is_some_and(|s| s.0 == j))
            .ok_or("no update being signed sells us that channel")?;
        let st = self
            .factory
            .as_ref()
            .and_then(|f| f.state.as_ref())
            .ok_or("no factory state")?;
        st.pending_channel_setup(Slot::Sold(j), false, 0, |k| u.ceremony.txid(k))
            .map_err(|e| e.to_string())
    }
}

/// What this client holds signed: its exit path first, in publishing order (what
/// [`crate::UnilateralExit`] takes), then the rest (timeouts, punishments).
pub(super) fn signed_in_order(st: &FactoryState, me: superscalar_core::ClientId) -> Vec<SignedTx> {
    let mut out = st.exit_path(me);
    let kinds: std::collections::BTreeSet<_> = out.iter().map(|s| s.kind).collect();
    out.extend(st.signed().into_iter().filter(|s| !kinds.contains(&s.kind)));
    out
}
