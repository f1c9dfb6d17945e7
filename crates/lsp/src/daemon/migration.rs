//! Migration, the fallback of a rotation: a dying factory with a member away cannot rotate (its
//! key path needs every member's signature), so through its [`migration_window`], at each
//! block, the LSP invites each connected member that holds
//! something there to migrate: the client joins a new factory (the LSP forms one at once for
//! migrants, whatever the ladder's rung) and pays what it holds into its channel there, an
//! ordinary payment through the LSP, whose preimage only the client knows (see the client's
//! `migration`). The LSP forwards it as any payment: it takes the old HTLC only once the client
//! settled the new one.
//!
//! What is left in the old factory is the LSP's (the migrated channels hold nothing of their
//! clients) and the away member's; the reclaim takes it on chain before T, and the away member
//! recovers its share alone. `status` lists, for each dying factory, the members away and those
//! invited to migrate.
//!
//! Payments into a dying factory's channels are avoided while the client has a channel
//! elsewhere, and a payment never goes back into the factory it comes from.

use std::collections::{HashMap, HashSet};

use bitcoin::secp256k1::PublicKey;
use serde_json::{json, Value};
use superscalar_core::channel::deadlines::{min_final_cltv_expiry_delta, DEFAULT_MARGIN_BLOCKS};
use superscalar_core::close::msg::{CloseBody, CloseMsg};
use superscalar_core::{Factory, FactoryId};
use superscalar_store::FactoryStatus;
use superscalar_wire::messages::Message;

use super::Lsp;

/// The heights between which a dying factory that cannot rotate migrates its present members
/// (`None`: its dying period is too short for it). It starts a quarter into the dying period
/// (before it, an away member has time to come back and the factory rotates), or halfway to its
/// end if that is sooner, and ends when a migration payment could no longer fit: the HTLC on the
/// old channel may expire at the latest at its factory's timeout less its exit time and margin
/// (the channel's `max_cltv_expiry`), and must leave room for the new channel's final delta (a
/// factory of the same shape: its exit time and margin), the LSP's forwarding delta twice (the
/// invoice's and the hop's) and a confirmation budget for the new factory's funding. It never
/// ends after the reclaim starts. So the dying period must exceed the exit time by about 70
/// blocks for a window to exist.
pub fn migration_window(factory: &Factory) -> Option<(u32, u32)> {
    let p = factory.params();
    let dying_from = p.creation_height.saturating_add(p.config.active_blocks);
    let delta = min_final_cltv_expiry_delta(factory, DEFAULT_MARGIN_BLOCKS);
    let end = factory
        .timeout_height()
        .saturating_sub(2 * delta)
        .saturating_sub(2 * super::channels::FORWARD_DELTA)
        .saturating_sub(p.config.confirmation_budget)
        .min(super::reclaim::reclaim_height(factory));
    let room = end.saturating_sub(dying_from);
    let start = dying_from.saturating_add((p.config.dying_blocks / 4).min(room / 2));
    (start < end).then_some((start, end))
}

/// The migrations under way.
#[derive(Default)]
pub(super) struct Migrations {
    /// Each client invited to migrate, and the factory it leaves.
    invited: HashMap<PublicKey, FactoryId>,
    /// The dying factories whose members are invited, and the height of the last invitation.
    factories: HashMap<FactoryId, u32>,
    /// The dying factories that have no migration window (logged once).
    no_window: HashSet<FactoryId>,
}

impl Lsp {
    /// At a new block, for dying factory `id` that cannot rotate because members are away:
    /// invites every connected member holding something in it to migrate.
    pub(super) fn migration_tick(&mut self, id: FactoryId, factory: &Factory, tip: u32) {
        if self.migrations.factories.get(&id) == Some(&tip) {
            return;
        }
        let Some(members) = self
            .factories
            .get(&id)
            .filter(|f| f.status == FactoryStatus::Dying)
            .map(|f| f.members.clone())
        else {
            return;
        };
        let away: Vec<usize> = (0..members.len())
            .filter(|i| !self.transport.is_connected(&members[*i]))
            .collect();
        if away.is_empty() {
            return; // Everyone is here: it rotates.
        }
        let reclaim = super::reclaim::reclaim_height(factory);
        let Some((start, end)) = migration_window(factory) else {
            if self.migrations.no_window.insert(id) {
                self.log(format!(
                    "factory {id}: clients {away:?} away, and its dying period ({} blocks) \
                     leaves no time for a migration payment: the present members' balances go \
                     on chain with it if it is not closed by block {reclaim}",
                    factory.params().config.dying_blocks,
                ));
            }
            return;
        };
        if tip < start || tip >= end {
            return;
        }
        let held = self.held_by_members(id, members.len());
        let first = !self.migrations.factories.contains_key(&id);
        self.migrations.factories.insert(id, tip);
        let mut invited = Vec::new();
        for (i, m) in members.iter().enumerate() {
            if held[i] == 0 || !self.transport.is_connected(m) {
                continue;
            }
            self.migrations.invited.insert(*m, id);
            invited.push(i);
            self.send(
                *m,
                Message::Close(Box::new(CloseMsg {
                    factory: id,
                    close: 0,
                    body: CloseBody::Migrate {
                        balance_msat: held[i],
                    },
                })),
            );
        }
        if first {
            self.log(format!(
                "factory {id}: cannot rotate (clients {away:?} away): clients {invited:?} \
                 migrate into a new factory; the rest is reclaimed from block {reclaim}"
            ));
        }
    }

    /// What each of the `n` members of factory `id` holds in its channels there.
    fn held_by_members(&self, id: FactoryId, n: usize) -> Vec<u64> {
        let mut held = vec![0u64; n];
        for (k, leaf) in &self.channels.leaves {
            if k.0 == id {
                if let Some(h) = held.get_mut(leaf.client_index() as usize) {
                    *h = h.saturating_add(leaf.link.channel().their_balance_msat());
                }
            }
        }
        held
    }

    /// Whether a client waiting to join migrates out of a dying factory (a factory forms for
    /// it at once).
    pub(super) fn migrant_waiting(&self) -> bool {
        self.waiting.iter().any(|w| {
            self.migrations.invited.get(&w.node).is_some_and(|f| {
                self.factories
                    .get(f)
                    .is_some_and(|f| f.status == FactoryStatus::Dying)
            })
        })
    }

    /// The dying factories (a payment avoids their channels while the payee has another).
    pub(super) fn dying_factories(&self) -> HashSet<FactoryId> {
        self.factories
            .iter()
            .filter(|(_, f)| f.status == FactoryStatus::Dying)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The migration part of a dying factory's `status` entry.
    pub(super) fn migration_json(&self, id: &FactoryId) -> Value {
        let members = self
            .factories
            .get(id)
            .map(|f| f.members.clone())
            .unwrap_or_default();
        let away: Vec<usize> = (0..members.len())
            .filter(|i| !self.transport.is_connected(&members[*i]))
            .collect();
        let held = self.held_by_members(*id, members.len());
        let invited: Vec<usize> = (0..members.len())
            .filter(|i| self.migrations.invited.get(&members[*i]) == Some(id) && held[*i] > 0)
            .collect();
        json!({
            "away": away,
            "migrating": invited,
            "migration_invited_at": self.migrations.factories.get(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use bitcoin::Amount;
    use superscalar_core::channel::state::ChannelLimits;
    use superscalar_core::revocation::StockSecrets;
    use superscalar_core::shape::FactoryConfig;
    use superscalar_core::{ClientSpec, FactoryParams};

    fn key(i: u32) -> bitcoin::secp256k1::PublicKey {
        let mut sk = [1u8; 32];
        sk[28..].copy_from_slice(&(i + 1).to_be_bytes());
        SecretKey::from_slice(&sk)
            .unwrap()
            .public_key(&Secp256k1::new())
    }

    fn factory(clients: u32, config: FactoryConfig) -> Factory {
        Factory::new(
            FactoryParams {
                id: FactoryId([3; 32]),
                config,
                lsp_key: key(1_000).into(),
                clients: (0..clients)
                    .map(|i| ClientSpec::new(key(i).into(), Amount::from_sat(1_000_000)))
                    .collect(),
                creation_height: 500,
                stock_hashes: Vec::new(),
                opening_msat: Vec::new(),
            }
            .with_stock_secrets(&StockSecrets::new([9; 32])),
        )
        .unwrap()
    }

    fn regtest(active: u32, dying: u32) -> FactoryConfig {
        FactoryConfig {
            active_blocks: active,
            dying_blocks: dying,
            ..FactoryConfig::regtest()
        }
    }

    #[test]
    fn the_window_lies_in_the_dying_period_and_ends_before_the_reclaim() {
        for (clients, config) in [
            (3, regtest(150, 150)),
            (2, regtest(66, 80)),
            (2, regtest(66, 120)),
            (1, regtest(20, 80)),
            (
                8,
                FactoryConfig {
                    dying_blocks: 1_100,
                    ..FactoryConfig::default()
                },
            ),
        ] {
            let f = factory(clients, config);
            let dying_from = 500 + f.params().config.active_blocks;
            let (start, end) = migration_window(&f)
                .unwrap_or_else(|| panic!("no window for {clients} clients, EWT {}", f.ewt_max()));
            assert!(dying_from <= start && start < end, "{start}..{end}");
            assert!(end <= super::super::reclaim::reclaim_height(&f));
            // An HTLC offered at the last height, for a channel in a factory of the same
            // shape, expires no later than the old channel allows.
            let delta = f.ewt_max() + DEFAULT_MARGIN_BLOCKS;
            let expiry = end + delta + 2 * super::super::channels::FORWARD_DELTA;
            let limits = ChannelLimits::for_factory(&f, end, DEFAULT_MARGIN_BLOCKS).unwrap();
            assert!(expiry <= limits.max_cltv_expiry);
            if clients == 8 {
                assert_eq!(end - start, 73, "the README's figure");
            }
            if f.params().config.dying_blocks == 120 {
                assert_eq!(end - start, 24, "the README's figure");
            }
        }
    }

    #[test]
    fn a_dying_period_shorter_than_the_exit_has_no_window() {
        // The regtest default: 5 dying blocks leave no room for a payment after the dying
        // period starts.
        assert_eq!(migration_window(&factory(2, regtest(20, 5))), None);
        // The mainnet default: the exit of the default shape (888 blocks for 8 clients) is
        // longer than the dying period (432 blocks).
        let f = factory(8, FactoryConfig::default());
        assert!(f.ewt_max() > f.params().config.dying_blocks);
        assert_eq!(migration_window(&f), None);
    }
}
