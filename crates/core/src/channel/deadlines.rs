//! HTLC deadlines of a leaf channel: a channel inside a factory needs the factory path on chain
//! before its commitment can confirm, so its CLTV budget must cover the exit time of that path.

use crate::factory::Factory;
use crate::odometer::Odometer;
use crate::types::ClientId;

/// Default safety margin, in blocks, on top of the exit time.
pub const DEFAULT_MARGIN_BLOCKS: u32 = 18;

/// The `min_final_cltv_expiry_delta` a leaf channel of `factory` advertises: the worst-case exit
/// time of the factory plus `margin`.
pub fn min_final_cltv_expiry_delta(factory: &Factory, margin: u32) -> u32 {
    factory.ewt_max() + margin
}

/// Blocks a unilateral exit of `client`'s path takes at the current odometer state: the relative
/// delay of each state transaction on the path plus the confirmation budget of every transaction.
pub fn current_exit_blocks(factory: &Factory, odo: &Odometer, client: ClientId) -> u32 {
    let budget = factory.params().config.confirmation_budget;
    factory
        .tree()
        .path_of(client)
        .into_iter()
        .map(|n| match odo.state(n) {
            Some(s) => u32::from(odo.delay_blocks(s)) + 2 * budget,
            None => budget,
        })
        .sum()
}

/// Whether `client`'s channel must start its exit now: an HTLC expiring at `cltv_expiry` has less
/// time left than the path's current exit time plus `margin`.
pub fn must_go_onchain(
    factory: &Factory,
    odo: &Odometer,
    client: ClientId,
    cltv_expiry: u32,
    tip_height: u32,
    margin: u32,
) -> bool {
    let remaining = cltv_expiry.saturating_sub(tip_height);
    remaining < current_exit_blocks(factory, odo, client) + margin
}
