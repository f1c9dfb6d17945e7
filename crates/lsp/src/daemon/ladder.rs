//! The ladder: the LSP forms its factories a rung apart, so that their lifetimes are staggered
//! and about one of them reaches its dying period per rung (a day on mainnet with the defaults:
//! 30 rungs over an active period of 4,320 blocks, so 33 factories alive at once counting the
//! three dying).
//!
//! The rule, with a ladder of `size` rungs over `active_blocks`: a rung lasts
//! `active_blocks / size` blocks (at least 1); the next rung is due a rung after the newest
//! factory's creation height (the creation height of every signed factory counts, closed or
//! not; an aborted formation does not). Clients that ask to join wait for the next rung, and a
//! factory forms with them (up to `max_clients`) once the rung is due and at least
//! `min_clients` wait; a full factory (`max_clients` waiting) forms at once, between rungs. With
//! no ladder (`size` 0), a factory forms whenever `min_clients` wait. The operator's
//! `create-factory` forms one at once either way.

use serde_json::{json, Value};
use superscalar_chain::Chain;

use super::Lsp;

/// Blocks between two rungs of a ladder of `size` rungs over `active_blocks` (`None`: no
/// ladder).
pub fn rung_blocks(size: u32, active_blocks: u32) -> Option<u32> {
    (size > 0).then(|| (active_blocks / size).max(1))
}

/// The height from which the next rung is due, given the newest factory's creation height
/// (`None`: no factory yet, so at once).
pub fn next_rung(rung: u32, newest: Option<u32>) -> u32 {
    newest.map_or(0, |h| h.saturating_add(rung))
}

/// Whether a factory forms now: `waiting` clients wait and the chain's tip is `tip` (`None`:
/// unknown, so no rung is due).
pub fn formation_due(
    waiting: usize,
    min_clients: usize,
    max_clients: usize,
    next_rung: Option<u32>,
    tip: Option<u32>,
) -> bool {
    if waiting == 0 || waiting < min_clients {
        return false;
    }
    match next_rung {
        None => true,
        Some(next) => waiting >= max_clients || tip.is_some_and(|t| t >= next),
    }
}

impl Lsp {
    /// Blocks between two rungs of the ladder (`None`: no ladder).
    fn rung_blocks(&self) -> Option<u32> {
        rung_blocks(self.config.ladder_size, self.config.factory.active_blocks)
    }

    /// The height from which the next rung is due (`None`: no ladder).
    fn next_rung(&self) -> Option<u32> {
        let newest = self.factories.values().map(|f| f.creation_height).max();
        self.rung_blocks().map(|rung| next_rung(rung, newest))
    }

    /// Whether the clients waiting form a factory now (see the module's rule).
    pub(super) fn formation_due(&self) -> bool {
        if self.forming.is_some() {
            return false;
        }
        // A client migrating out of a dying factory has a deadline: no rung to wait for.
        if self.migrant_waiting() {
            return true;
        }
        let n = self.waiting.len();
        let next = self.next_rung();
        // The chain is asked only when the answer depends on it.
        let tip = match next {
            Some(_) if n >= self.config.min_clients && n < self.config.max_clients => {
                self.chain(|c| c.tip()).ok().map(|t| t.height)
            }
            _ => None,
        };
        formation_due(
            n,
            self.config.min_clients,
            self.config.max_clients,
            next,
            tip,
        )
    }

    /// The ladder for `status` (`null`: no ladder).
    pub(super) fn ladder_json(&self) -> Value {
        let Some(rung) = self.rung_blocks() else {
            return Value::Null;
        };
        let cfg = &self.config.factory;
        json!({
            "size": self.config.ladder_size,
            "rung_blocks": rung,
            "active_blocks": cfg.active_blocks,
            "dying_blocks": cfg.dying_blocks,
            "next_rung_height": self.next_rung(),
            "min_clients": self.config.min_clients,
            "max_clients": self.config.max_clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_split_the_active_period() {
        assert_eq!(rung_blocks(0, 4320), None);
        assert_eq!(rung_blocks(30, 4320), Some(144));
        assert_eq!(rung_blocks(33, 4320), Some(130));
        // More rungs than blocks: one a block.
        assert_eq!(rung_blocks(500, 40), Some(1));
        assert_eq!(rung_blocks(u32::MAX, u32::MAX), Some(1));
        assert_eq!(next_rung(144, None), 0);
        assert_eq!(next_rung(144, Some(1000)), 1144);
        assert_eq!(next_rung(144, Some(u32::MAX)), u32::MAX);
    }

    #[test]
    fn without_a_ladder_min_clients_form_a_factory() {
        assert!(!formation_due(0, 1, 8, None, None));
        assert!(!formation_due(2, 3, 8, None, Some(10)));
        assert!(formation_due(3, 3, 8, None, None));
    }

    #[test]
    fn with_a_ladder_clients_wait_for_the_rung_unless_the_factory_is_full() {
        // Before the rung: only a full factory forms.
        assert!(!formation_due(3, 1, 8, Some(110), Some(109)));
        assert!(formation_due(8, 1, 8, Some(110), Some(109)));
        assert!(formation_due(9, 1, 8, Some(110), Some(109)));
        // At and after the rung, `min_clients` are enough.
        assert!(formation_due(1, 1, 8, Some(110), Some(110)));
        assert!(formation_due(1, 1, 8, Some(110), Some(500)));
        assert!(!formation_due(1, 2, 8, Some(110), Some(500)));
        // An unknown tip is no rung.
        assert!(!formation_due(3, 1, 8, Some(110), None));
        // Nobody waiting is never a factory.
        assert!(!formation_due(0, 0, 0, Some(0), Some(0)));
    }
}
