//! What one simulation runs: the LSP's clients and their behaviour, the factory shape and the
//! ladder, the fee rate, and the checks that refuse values the model cannot run.

use serde::Serialize;
use superscalar_core::shape::{FactoryConfig, MAX_STATES_PER_LAYER};
use superscalar_core::LeafKind;

/// Blocks in a simulated day.
pub const BLOCKS_PER_DAY: u32 = 144;
/// Largest factory the simulation builds (clients per factory).
pub const MAX_FACTORY_SIZE: u32 = 1024;
/// Most initial clients.
pub const MAX_CLIENTS: u32 = 1_000_000;
/// Most clients one run may see (initial plus expected arrivals).
pub const MAX_TOTAL_CLIENTS: f64 = 5_000_000.0;
/// Longest simulation, in days.
pub const MAX_DAYS: u32 = 3650;
/// Most rungs in the ladder.
pub const MAX_LADDER_SIZE: u32 = 10_000;
/// Longest active or dying period, in blocks (ten years).
pub const MAX_PERIOD_BLOCKS: u32 = 525_600;
/// Most payments per client per day (payments move balances only; this bounds the run time).
pub const MAX_PAYMENTS_PER_DAY: f64 = 100.0;
/// Most liquidity purchases per client per month.
pub const MAX_LIQUIDITY_PER_MONTH: f64 = 100.0;
/// Largest mean channel capacity, in sat (10 BTC).
pub const MAX_CAPACITY_SAT: u64 = 1_000_000_000;
/// Highest fee rate core's fee policy accepts, in sat/vB.
pub const MAX_FEE_RATE: u64 = 10_000;
/// Smallest output a channel or payout may be (P2TR dust).
pub const DUST_SAT: u64 = 330;

/// How many static (kickoff-only) levels the tree has near its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StaticLevels {
    /// The fewest that keep each factory's worst-case exit time within core's ceiling.
    Auto,
    /// Exactly this many (as core's `Shape::static_levels`).
    Fixed(u8),
}

/// The tree shape, as core's `Shape` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShapeSpec {
    /// Arity of each level from the root down (the last repeats).
    pub arity: Vec<u8>,
    /// Static levels near the root.
    pub static_levels: StaticLevels,
    /// What the leaves hold.
    #[serde(serialize_with = "leaf_name")]
    pub leaf: LeafKind,
    /// States per Decker-Wattenhofer layer.
    pub states_per_layer: u16,
    /// Blocks between two states of a layer.
    pub step_blocks: u16,
}

fn leaf_name<S: serde::Serializer>(leaf: &LeafKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&leaf_to_string(leaf))
}

/// A leaf kind as the command line writes it (`dw` or `ps:K`).
pub fn leaf_to_string(leaf: &LeafKind) -> String {
    match leaf {
        LeafKind::Dw => "dw".into(),
        LeafKind::PseudoSpilman { arity } => format!("ps:{arity}"),
    }
}

/// A leaf kind from `dw` or `ps:K`.
pub fn parse_leaf(s: &str) -> Result<LeafKind, String> {
    match s {
        "dw" => Ok(LeafKind::Dw),
        _ => match s.strip_prefix("ps:").map(str::parse::<u8>) {
            Some(Ok(arity)) => Ok(LeafKind::PseudoSpilman { arity }),
            _ => Err(format!("--leaf {s:?}: dw or ps:K with K in 2..=255")),
        },
    }
}

impl Default for ShapeSpec {
    fn default() -> Self {
        let shape = superscalar_core::Shape::default();
        ShapeSpec {
            arity: shape.arity,
            static_levels: StaticLevels::Auto,
            leaf: shape.leaf,
            states_per_layer: shape.states_per_layer,
            step_blocks: shape.step_blocks,
        }
    }
}

/// Everything one simulation run depends on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    /// Clients at the start.
    pub clients: u32,
    /// Days simulated.
    pub days: u32,
    /// Most clients per factory.
    pub factory_size: u32,
    /// Tree shape.
    pub shape: ShapeSpec,
    /// Rungs of factories in their active period at once.
    pub ladder_size: u32,
    /// Blocks a factory is active.
    pub active_blocks: u32,
    /// Blocks a factory is dying (its clients migrate out).
    pub dying_blocks: u32,
    /// New clients per day (mean of a Poisson draw).
    pub arrivals_per_day: f64,
    /// Share of clients that leave for good within a year.
    pub churn_per_year: f64,
    /// Share of a dying factory's clients that stay offline for its whole dying period.
    pub offline_share: f64,
    /// Payments per client per day (off chain).
    pub payments_per_day: f64,
    /// Liquidity purchases per client per month (off chain, from the LSP's stock).
    pub liquidity_per_month: f64,
    /// Inbound liquidity one purchase buys, in sat.
    pub liquidity_sat: u64,
    /// Market fee rate, in sat/vB (also the tree's endogenous fee rate).
    pub fee_rate: u64,
    /// Mean channel capacity of a new client, in sat.
    pub capacity_sat: u64,
    /// Seed of the pseudo-random draws.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clients: 10_000,
            days: 365,
            factory_size: 64,
            shape: ShapeSpec::default(),
            ladder_size: 33,
            active_blocks: 4320,
            dying_blocks: 432,
            arrivals_per_day: 5.5,
            churn_per_year: 0.2,
            offline_share: 0.02,
            payments_per_day: 2.0,
            liquidity_per_month: 0.1,
            liquidity_sat: 20_000,
            fee_rate: 10,
            capacity_sat: 100_000,
            seed: 1,
        }
    }
}

fn fraction(name: &str, v: f64, below_one: bool) -> Result<(), String> {
    let ok = v.is_finite() && v >= 0.0 && if below_one { v < 1.0 } else { v <= 1.0 };
    if ok {
        Ok(())
    } else if below_one {
        Err(format!("{name} must be at least 0 and below 1 (got {v})"))
    } else {
        Err(format!("{name} must be within 0..=1 (got {v})"))
    }
}

fn rate(name: &str, v: f64, max: f64) -> Result<(), String> {
    if v.is_finite() && (0.0..=max).contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} must be within 0..={max} (got {v})"))
    }
}

fn within<T: PartialOrd + std::fmt::Display>(name: &str, v: T, lo: T, hi: T) -> Result<(), String> {
    if v >= lo && v <= hi {
        Ok(())
    } else {
        Err(format!("{name} must be within {lo}..={hi} (got {v})"))
    }
}

impl SimConfig {
    /// Check every value on its own and together (core checks the shape: [`crate::prepare`]).
    pub fn validate(&self) -> Result<(), String> {
        within("--clients", self.clients, 1, MAX_CLIENTS)?;
        within("--days", self.days, 1, MAX_DAYS)?;
        within("--factory-size", self.factory_size, 1, MAX_FACTORY_SIZE)?;
        within("--active-blocks", self.active_blocks, 1, MAX_PERIOD_BLOCKS)?;
        within("--dying-blocks", self.dying_blocks, 1, MAX_PERIOD_BLOCKS)?;
        within(
            "--ladder-size",
            self.ladder_size,
            1,
            self.active_blocks.min(10_000),
        )
        .map_err(|e| format!("{e}: a new rung every active-blocks / ladder-size blocks"))?;
        rate("--arrivals-per-day", self.arrivals_per_day, 100_000.0)?;
        fraction("--churn-per-year", self.churn_per_year, true)?;
        fraction("--offline-share", self.offline_share, false)?;
        rate(
            "--payments-per-day",
            self.payments_per_day,
            MAX_PAYMENTS_PER_DAY,
        )?;
        rate(
            "--liquidity-per-month",
            self.liquidity_per_month,
            MAX_LIQUIDITY_PER_MONTH,
        )?;
        within("--fee-rate", self.fee_rate, 1, MAX_FEE_RATE)?;
        within(
            "--capacity-sat",
            self.capacity_sat,
            2 * DUST_SAT,
            MAX_CAPACITY_SAT,
        )?;
        let stock = FactoryConfig::default().stock_per_client.to_sat();
        within("--liquidity-sat", self.liquidity_sat, DUST_SAT, stock / 2)
            .map_err(|e| format!("{e}: a purchase comes from the client's share of the stock"))?;
        let total = f64::from(self.clients) + self.arrivals_per_day * f64::from(self.days);
        if total > MAX_TOTAL_CLIENTS {
            return Err(format!(
                "--clients plus --arrivals-per-day x --days is about {total:.0} clients, more than \
                 the {MAX_TOTAL_CLIENTS:.0} one run simulates"
            ));
        }
        let s = &self.shape;
        if s.arity.is_empty() || s.arity.contains(&0) {
            return Err("--arity: every level needs an arity of at least 1".into());
        }
        if s.arity.len() > 32 {
            return Err("--arity: at most 32 levels".into());
        }
        if let LeafKind::PseudoSpilman { arity } = s.leaf {
            if arity < 2 {
                return Err(format!("--leaf ps:{arity}: K must be at least 2"));
            }
        }
        within(
            "--states-per-layer",
            s.states_per_layer,
            2,
            MAX_STATES_PER_LAYER,
        )?;
        if s.step_blocks < superscalar_core::shape::MAINNET_MIN_STEP_BLOCKS {
            return Err(format!(
                "--step-blocks must be at least {} on mainnet (got {})",
                superscalar_core::shape::MAINNET_MIN_STEP_BLOCKS,
                s.step_blocks
            ));
        }
        Ok(())
    }

    /// Blocks between two rungs of the ladder.
    pub fn rung_interval(&self) -> u32 {
        (f64::from(self.active_blocks) / f64::from(self.ladder_size.max(1)))
            .round()
            .max(1.0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_are_named() {
        SimConfig::default().validate().unwrap();
        let bad = |f: fn(&mut SimConfig), name: &str| {
            let mut c = SimConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(name), "{e}");
        };
        bad(|c| c.clients = 0, "--clients");
        bad(|c| c.days = 0, "--days");
        bad(|c| c.factory_size = 0, "--factory-size");
        bad(|c| c.factory_size = 1025, "--factory-size");
        bad(|c| c.offline_share = 2.0, "--offline-share");
        bad(|c| c.offline_share = f64::NAN, "--offline-share");
        bad(|c| c.churn_per_year = 1.0, "--churn-per-year");
        bad(|c| c.ladder_size = 0, "--ladder-size");
        bad(|c| c.fee_rate = 0, "--fee-rate");
        bad(|c| c.capacity_sat = 10, "--capacity-sat");
        bad(|c| c.shape.arity = vec![2, 0], "--arity");
        bad(|c| c.shape.step_blocks = 10, "--step-blocks");
        bad(|c| c.arrivals_per_day = 1e5, "clients");
        assert_eq!(SimConfig::default().rung_interval(), 131);
        assert_eq!(
            parse_leaf("ps:3").unwrap(),
            LeafKind::PseudoSpilman { arity: 3 }
        );
        assert!(parse_leaf("ps:x").is_err());
    }
}
