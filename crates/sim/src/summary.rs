//! The numbers a run reports, and their text form.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{leaf_to_string, SimConfig, StaticLevels};
use crate::costs::{CostBook, TxSizes};
use crate::model::{DayStats, Totals};

/// A factory size as core builds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Clients.
    pub clients: u32,
    /// Static levels used.
    pub static_levels: u8,
    /// Arity of each level above the leaves.
    pub levels: Vec<u8>,
    /// Tree nodes.
    pub nodes: u32,
    /// Worst-case exit time, in blocks.
    pub ewt_blocks: u32,
    /// Funding amount minus the clients' capacities, in sat.
    pub overhead_sat: u64,
    /// Shortest exit path (kickoffs and states), in vbytes.
    pub path_vbytes_min: u64,
    /// Longest exit path, in vbytes.
    pub path_vbytes_max: u64,
}

/// The models of the largest factory the run formed (and of the configured size, if larger).
pub fn models(book: &mut CostBook, largest_used: u32) -> Result<Vec<ModelInfo>, String> {
    let mut out = Vec::new();
    let mut sizes = vec![largest_used];
    let configured = book.max_size();
    if configured != largest_used {
        sizes.push(configured);
    }
    for n in sizes {
        let m = book.model(n)?;
        let paths: Vec<u64> = (0..m.clients).map(|c| m.path_vbytes(c)).collect();
        out.push(ModelInfo {
            clients: m.clients,
            static_levels: m.static_levels,
            levels: m.levels.clone(),
            nodes: m.nodes.len() as u32,
            ewt_blocks: m.ewt_blocks,
            overhead_sat: m.overhead_sat,
            path_vbytes_min: paths.iter().copied().min().unwrap_or(0),
            path_vbytes_max: paths.iter().copied().max().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Clients over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clients {
    /// At the start.
    pub start: u64,
    /// Arrived.
    pub arrivals: u64,
    /// Left for good.
    pub churned: u64,
    /// At the end (start + arrivals - churned).
    pub end: u64,
    /// At the end, waiting for the next rung or for a forced exit (not in a factory).
    pub end_not_placed: u64,
    /// Client-years simulated (clients summed over the days / 365).
    pub user_years: f64,
}

/// The factories.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Factories {
    /// Created (the launch included).
    pub created: u64,
    /// Mean clients per factory.
    pub mean_clients: f64,
    /// The largest.
    pub max_clients: u32,
    /// Rungs that put a rotation transaction on chain.
    pub rotations: u64,
    /// Their transactions (one each unless a rung exceeds the standard size).
    pub rotation_txs: u64,
    /// vbytes of the rotation transactions.
    pub rotation_vbytes: u64,
    /// Dying factories closed within a rotation transaction (every client present).
    pub closed_in_one_tx: u64,
    /// Dying factories with a client offline through the dying period (forced exits).
    pub fallbacks: u64,
    /// Fallbacks still waiting for the end of their dying period when the run ended.
    pub fallbacks_pending_at_end: u64,
    /// Payouts of leaving clients in rotation transactions.
    pub payouts: u64,
    /// The factory sizes as core builds them.
    pub models: Vec<ModelInfo>,
}

/// On-chain footprint of the factories.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Onchain {
    /// Transactions.
    pub txs: u64,
    /// Mean transactions per day.
    pub txs_per_day_mean: f64,
    /// Most transactions in a day.
    pub txs_per_day_max: u64,
    /// vbytes.
    pub vbytes: u64,
    /// Mean vbytes per day.
    pub vbytes_per_day_mean: f64,
    /// Most vbytes in a day.
    pub vbytes_per_day_max: u64,
    /// Fees, in sat.
    pub fees_sat: u64,
    /// The launch's funding transactions.
    pub launch_txs: u64,
    /// Their vbytes.
    pub launch_vbytes: u64,
}

/// Exits forced by clients offline through their dying period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forced {
    /// Clients forced out.
    pub exits: u64,
    /// Factories resolved so.
    pub factories: u64,
    /// Transactions.
    pub txs: u64,
    /// vbytes in all.
    pub vbytes: u64,
    /// vbytes of the published tree nodes (each node once per factory).
    pub path_vbytes: u64,
    /// vbytes of the absent clients' commitments and their CPFP children.
    pub close_vbytes: u64,
    /// vbytes of the LSP's delayed claims (to_local outputs, shared stocks).
    pub sweep_vbytes: u64,
    /// vbytes of the partial cooperative close of the rest of the factory.
    pub rest_vbytes: u64,
    /// Fees, in sat.
    pub fees_sat: u64,
    /// Share of all factory vbytes.
    pub share_of_vbytes: f64,
    /// Mean vbytes per forced-out client.
    pub vbytes_per_exit: f64,
}

/// The one-channel-per-user baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    /// Channel opens (the launch's included).
    pub opens: u64,
    /// Cooperative closes.
    pub closes: u64,
    /// Splices (one per liquidity purchase).
    pub splices: u64,
    /// Transactions.
    pub txs: u64,
    /// vbytes.
    pub vbytes: u64,
    /// Mean vbytes per day.
    pub vbytes_per_day_mean: f64,
    /// Opens of the clients present at the launch.
    pub launch_opens: u64,
}

/// Per user per year, the launch excluded (steady state) and included.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerUserYear {
    /// Factories: vbytes.
    pub vbytes: f64,
    /// Factories: fees, in sat.
    pub fees_sat: f64,
    /// One channel per user: vbytes (opens, closes and splices).
    pub baseline_vbytes: f64,
    /// One channel per user without splices (opens and closes only).
    pub baseline_vbytes_no_splices: f64,
    /// One channel per user: fees, in sat.
    pub baseline_fees_sat: f64,
    /// Factories' vbytes over the baseline's.
    pub ratio: f64,
    /// Factories' vbytes over the baseline's without splices.
    pub ratio_no_splices: f64,
    /// Factories: vbytes, the launch included.
    pub vbytes_with_launch: f64,
    /// One channel per user: vbytes, the launch's opens included.
    pub baseline_vbytes_with_launch: f64,
}

/// The LSP's capital locked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capital {
    /// Mean over the days, in BTC.
    pub mean_btc: f64,
    /// Highest, in BTC.
    pub max_btc: f64,
    /// At the end, in BTC.
    pub end_btc: f64,
    /// One channel per user (the capacities): mean, in BTC.
    pub baseline_mean_btc: f64,
    /// One channel per user: highest, in BTC.
    pub baseline_max_btc: f64,
}

/// Off-chain activity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffChain {
    /// Payments tried.
    pub payments: u64,
    /// Refused for lack of balance or inbound capacity.
    pub payments_failed: u64,
    /// Sat moved.
    pub payment_volume_sat: u64,
    /// Liquidity purchases.
    pub liquidity_purchases: u64,
    /// Refused (the client's share of the stock used up until its next rotation).
    pub liquidity_refused: u64,
    /// Sat bought.
    pub liquidity_sat: u64,
}

/// Every number a run prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The configuration.
    pub config: SimConfig,
    /// Blocks between two rungs.
    pub rung_interval_blocks: u32,
    /// Clients.
    pub clients: Clients,
    /// Factories and rotations.
    pub factories: Factories,
    /// On chain.
    pub onchain: Onchain,
    /// Forced exits.
    pub forced: Forced,
    /// One channel per user.
    pub baseline: Baseline,
    /// Per user per year.
    pub per_user_year: PerUserYear,
    /// Capital locked.
    pub capital: Capital,
    /// Payments and liquidity.
    pub offchain: OffChain,
    /// Sizes of the transactions outside the tree.
    pub tx_sizes: TxSizes,
}

const SAT_PER_BTC: f64 = 100_000_000.0;

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl Summary {
    /// The summary of a finished run.
    pub(crate) fn new(
        cfg: &SimConfig,
        t: &Totals,
        days: &[DayStats],
        tx: &TxSizes,
        models: Vec<ModelInfo>,
        pending: u64,
        not_placed: u64,
    ) -> Self {
        let n = days.len().max(1) as f64;
        let sum = |f: fn(&DayStats) -> u64| days.iter().map(f).sum::<u64>();
        let max = |f: fn(&DayStats) -> u64| days.iter().map(f).max().unwrap_or(0);
        let user_years = days.iter().map(|d| d.clients as f64).sum::<f64>() / 365.0;
        let per_year = |x: f64| ratio(x, user_years);
        let txs = sum(|d| d.txs);
        let vbytes = sum(|d| d.vbytes);
        let fees = sum(|d| d.fees_sat);
        let baseline_vbytes = sum(|d| d.baseline_vbytes);
        let launch_opens_vb = t.baseline_bootstrap_opens * tx.baseline_open;
        let steady = (vbytes - t.bootstrap_vbytes) as f64;
        let baseline_steady = (baseline_vbytes - launch_opens_vb) as f64;
        let splices_vb = (t.baseline_splices * tx.baseline_splice) as f64;
        let forced_vb = t.forced_path_vbytes
            + t.forced_close_vbytes
            + t.forced_sweep_vbytes
            + t.forced_rest_vbytes;
        Summary {
            config: cfg.clone(),
            rung_interval_blocks: cfg.rung_interval(),
            clients: Clients {
                start: t.clients_start,
                arrivals: t.arrivals,
                churned: t.churned,
                end: t.clients_start + t.arrivals - t.churned,
                end_not_placed: not_placed,
                user_years,
            },
            factories: Factories {
                created: t.factories_created,
                mean_clients: ratio(t.factory_clients as f64, t.factories_created as f64),
                max_clients: t.max_factory_clients,
                rotations: t.rotations,
                rotation_txs: t.rotation_txs,
                rotation_vbytes: t.rotation_vbytes,
                closed_in_one_tx: t.coop_closes,
                fallbacks: t.fallbacks,
                fallbacks_pending_at_end: pending,
                payouts: t.payouts,
                models,
            },
            onchain: Onchain {
                txs,
                txs_per_day_mean: txs as f64 / n,
                txs_per_day_max: max(|d| d.txs),
                vbytes,
                vbytes_per_day_mean: vbytes as f64 / n,
                vbytes_per_day_max: max(|d| d.vbytes),
                fees_sat: fees,
                launch_txs: t.bootstrap_txs,
                launch_vbytes: t.bootstrap_vbytes,
            },
            forced: Forced {
                exits: t.forced_exits,
                factories: t.fallbacks_resolved,
                txs: t.forced_txs,
                vbytes: forced_vb,
                path_vbytes: t.forced_path_vbytes,
                close_vbytes: t.forced_close_vbytes,
                sweep_vbytes: t.forced_sweep_vbytes,
                rest_vbytes: t.forced_rest_vbytes,
                fees_sat: t.forced_fees_sat,
                share_of_vbytes: ratio(forced_vb as f64, vbytes as f64),
                vbytes_per_exit: ratio(forced_vb as f64, t.forced_exits as f64),
            },
            baseline: Baseline {
                opens: t.baseline_opens,
                closes: t.baseline_closes,
                splices: t.baseline_splices,
                txs: sum(|d| d.baseline_txs),
                vbytes: baseline_vbytes,
                vbytes_per_day_mean: baseline_vbytes as f64 / n,
                launch_opens: t.baseline_bootstrap_opens,
            },
            per_user_year: PerUserYear {
                vbytes: per_year(steady),
                fees_sat: per_year((fees - t.bootstrap_fees_sat) as f64),
                baseline_vbytes: per_year(baseline_steady),
                baseline_vbytes_no_splices: per_year(baseline_steady - splices_vb),
                baseline_fees_sat: per_year(baseline_steady * cfg.fee_rate as f64),
                ratio: ratio(steady, baseline_steady),
                ratio_no_splices: ratio(steady, baseline_steady - splices_vb),
                vbytes_with_launch: per_year(vbytes as f64),
                baseline_vbytes_with_launch: per_year(baseline_vbytes as f64),
            },
            capital: Capital {
                mean_btc: sum(|d| d.capital_sat) as f64 / n / SAT_PER_BTC,
                max_btc: max(|d| d.capital_sat) as f64 / SAT_PER_BTC,
                end_btc: days.last().map_or(0, |d| d.capital_sat) as f64 / SAT_PER_BTC,
                baseline_mean_btc: sum(|d| d.baseline_capital_sat) as f64 / n / SAT_PER_BTC,
                baseline_max_btc: max(|d| d.baseline_capital_sat) as f64 / SAT_PER_BTC,
            },
            offchain: OffChain {
                payments: t.payments,
                payments_failed: t.payments_failed,
                payment_volume_sat: t.payment_volume_sat,
                liquidity_purchases: t.liquidity_purchases,
                liquidity_refused: t.liquidity_refused,
                liquidity_sat: t.liquidity_sat,
            },
            tx_sizes: *tx,
        }
    }

    /// A readable report of the run.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let f = &self.factories;
        let o = &self.onchain;
        let x = &self.forced;
        let p = &self.per_user_year;
        let b = &self.baseline;
        let mut s = String::new();
        let statics = match c.shape.static_levels {
            StaticLevels::Auto => "auto".to_string(),
            StaticLevels::Fixed(n) => n.to_string(),
        };
        let _ = writeln!(
            s,
            "superscalar sim: {} clients, {} days, factories of up to {} clients (arity {}, {} \
             leaves, static levels {statics}, {} states per layer), ladder of {} (a rung every {} \
             blocks), active {} + dying {} blocks, fee rate {} sat/vB, seed {}",
            c.clients,
            c.days,
            c.factory_size,
            c.shape
                .arity
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
            leaf_to_string(&c.shape.leaf),
            c.shape.states_per_layer,
            c.ladder_size,
            self.rung_interval_blocks,
            c.active_blocks,
            c.dying_blocks,
            c.fee_rate,
            c.seed
        );
        let cl = &self.clients;
        let _ = writeln!(
            s,
            "clients:      {} at the start, {} arrived, {} left, {} at the end ({} not in a \
             factory at that moment); {:.0} client-years",
            cl.start, cl.arrivals, cl.churned, cl.end, cl.end_not_placed, cl.user_years
        );
        let _ = writeln!(
            s,
            "factories:    {} created, {:.1} clients on average (largest {})",
            f.created, f.mean_clients, f.max_clients
        );
        for m in &f.models {
            let _ = writeln!(
                s,
                "              {} clients as core builds it: levels {:?} ({} static), {} nodes, \
                 EWT {} blocks, funding = capacities + {} sat, exit path {}..{} vB",
                m.clients,
                m.levels,
                m.static_levels,
                m.nodes,
                m.ewt_blocks,
                m.overhead_sat,
                m.path_vbytes_min,
                m.path_vbytes_max
            );
        }
        let _ = writeln!(
            s,
            "rotations:    {} rungs, {} transactions ({} vB); dying factories closed in the \
             rotation transaction: {}, fallbacks (a client offline through the dying period): {} \
             ({} still in their dying period at the end); {} leaving clients paid out",
            f.rotations,
            f.rotation_txs,
            f.rotation_vbytes,
            f.closed_in_one_tx,
            f.fallbacks,
            f.fallbacks_pending_at_end,
            f.payouts
        );
        let _ = writeln!(
            s,
            "on chain:     {:.2} transactions a day (max {}), {:.0} vB a day (max {}); {} \
             transactions, {} vB, {} sat of fees in all (launch: {} transaction, {} vB)",
            o.txs_per_day_mean,
            o.txs_per_day_max,
            o.vbytes_per_day_mean,
            o.vbytes_per_day_max,
            o.txs,
            o.vbytes,
            o.fees_sat,
            o.launch_txs,
            o.launch_vbytes
        );
        let _ = writeln!(
            s,
            "forced exits: {} clients in {} factories: {} transactions, {} vB ({:.0} vB each; \
             tree nodes {}, channel closes {}, LSP claims {}, rest {}), {:.0}% of all vB, {} sat \
             of fees",
            x.exits,
            x.factories,
            x.txs,
            x.vbytes,
            x.vbytes_per_exit,
            x.path_vbytes,
            x.close_vbytes,
            x.sweep_vbytes,
            x.rest_vbytes,
            x.share_of_vbytes * 100.0,
            x.fees_sat
        );
        let _ = writeln!(
            s,
            "one channel per user: {} opens, {} closes, {} splices: {} transactions, {} vB \
             ({:.0} vB a day)",
            b.opens, b.closes, b.splices, b.txs, b.vbytes, b.vbytes_per_day_mean
        );
        let _ = writeln!(
            s,
            "per user per year (launch excluded): factories {:.1} vB, {:.0} sat; one channel per \
             user {:.1} vB ({:.1} vB without splices), {:.0} sat; ratio {:.3} ({:.3} without \
             splices)",
            p.vbytes,
            p.fees_sat,
            p.baseline_vbytes,
            p.baseline_vbytes_no_splices,
            p.baseline_fees_sat,
            p.ratio,
            p.ratio_no_splices
        );
        let _ = writeln!(
            s,
            "per user per year (launch included): factories {:.1} vB; one channel per user {:.1} \
             vB",
            p.vbytes_with_launch, p.baseline_vbytes_with_launch
        );
        let k = &self.capital;
        let _ = writeln!(
            s,
            "LSP capital locked: mean {:.3} BTC, max {:.3} BTC, at the end {:.3} BTC (one channel \
             per user: mean {:.3} BTC, max {:.3} BTC)",
            k.mean_btc, k.max_btc, k.end_btc, k.baseline_mean_btc, k.baseline_max_btc
        );
        let q = &self.offchain;
        let _ = writeln!(
            s,
            "off chain:    {} payments ({} refused), {} sat moved; {} liquidity purchases ({} \
             refused), {} sat",
            q.payments,
            q.payments_failed,
            q.payment_volume_sat,
            q.liquidity_purchases,
            q.liquidity_refused,
            q.liquidity_sat
        );
        s
    }
}

/// A table comparing runs of different factory sizes.
pub fn comparison(runs: &[Summary]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6} {:>8} {:>11} {:>12} {:>13} {:>13} {:>8} {:>8} {:>7} {:>11}",
        "size",
        "mean",
        "vB/user/yr",
        "sat/user/yr",
        "channel vB",
        "no splices",
        "ratio",
        "ratio*",
        "forced",
        "capital BTC"
    );
    for r in runs {
        let p = &r.per_user_year;
        let _ = writeln!(
            s,
            "{:>6} {:>8.1} {:>11.1} {:>12.0} {:>13.1} {:>13.1} {:>8.3} {:>8.3} {:>7} {:>11.3}",
            r.config.factory_size,
            r.factories.mean_clients,
            p.vbytes,
            p.fees_sat,
            p.baseline_vbytes,
            p.baseline_vbytes_no_splices,
            p.ratio,
            p.ratio_no_splices,
            r.forced.exits,
            r.capital.mean_btc
        );
    }
    let _ = writeln!(
        s,
        "(per user per year, launch excluded; size: most clients per factory, mean: clients per \
         factory formed; channel vB: one channel per user with a splice per liquidity purchase; \
         ratio: factories / channels, ratio*: against channels without splices; capital: mean)"
    );
    s
}
