//! The simulation: one LSP's clients, their factories on a ladder of staggered lifetimes, the
//! rotations that move them from dying factories to new ones, the forced exits of clients who
//! stay offline, and the same clients with one on-chain channel each, day by day.

use std::collections::VecDeque;

use serde::Serialize;
use superscalar_core::FactoryConfig;

use crate::config::{SimConfig, BLOCKS_PER_DAY, DUST_SAT};
use crate::costs::{batched_vsize, CostBook, Spend};
use crate::rng::Rng;
use crate::summary::{self, Summary};

/// What happened on chain and to the LSP's capital on one day.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayStats {
    /// The day (0 is the launch).
    pub day: u32,
    /// Factory transactions confirmed.
    pub txs: u64,
    /// Their vbytes.
    pub vbytes: u64,
    /// Their fees, in sat.
    pub fees_sat: u64,
    /// vbytes of forced exits among them.
    pub forced_vbytes: u64,
    /// Sum of the funding amounts of the factories whose funding output is unspent, in sat.
    pub capital_sat: u64,
    /// Baseline transactions (one channel per user).
    pub baseline_txs: u64,
    /// Their vbytes.
    pub baseline_vbytes: u64,
    /// Sum of the baseline channels' capacities, in sat.
    pub baseline_capital_sat: u64,
    /// Clients who have not left for good.
    pub clients: u64,
    /// Factories whose funding output is unspent.
    pub live_factories: u64,
}

/// The factories created at one height (one rung of the ladder).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cohort {
    /// Height they were created at.
    pub created_block: u32,
    /// End of their active period.
    pub active_end: u32,
    /// End of their dying period.
    pub dying_end: u32,
    /// How many factories.
    pub factories: u32,
    /// Their clients.
    pub clients: u32,
    /// How many of them could not rotate cooperatively (a client stayed offline).
    pub fallbacks: u32,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Every printed number.
    pub summary: Summary,
    /// Day by day.
    pub days: Vec<DayStats>,
    /// The ladder.
    pub cohorts: Vec<Cohort>,
}

/// Where a client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum Status {
    /// Online, waiting for the next rung to be placed in a factory.
    Waiting,
    /// In a live factory.
    InFactory,
    /// Offline through its factory's dying period: waiting for the LSP to force it out.
    Absent,
    /// Left for good.
    Gone,
}

#[derive(Debug, Clone)]
struct FactoryRec {
    cohort: u32,
    active_end: u32,
    dying_end: u32,
    members: Vec<u32>,
    absent: Vec<u32>,
    funding: u64,
    live: bool,
}

/// Running totals of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Clients at the start.
    pub clients_start: u64,
    /// Clients who arrived.
    pub arrivals: u64,
    /// Clients who left for good.
    pub churned: u64,
    /// Factories created.
    pub factories_created: u64,
    /// Their clients, summed.
    pub factory_clients: u64,
    /// The largest factory.
    pub max_factory_clients: u32,
    /// Rungs that put a transaction on chain.
    pub rotations: u64,
    /// Their transactions.
    pub rotation_txs: u64,
    /// Their vbytes.
    pub rotation_vbytes: u64,
    /// Dying factories closed inside a rotation transaction.
    pub coop_closes: u64,
    /// Dying factories with a client offline through the dying period.
    pub fallbacks: u64,
    /// Fallbacks resolved on chain within the run.
    pub fallbacks_resolved: u64,
    /// Clients forced out.
    pub forced_exits: u64,
    /// Forced-exit transactions.
    pub forced_txs: u64,
    /// Their vbytes: tree path nodes.
    pub forced_path_vbytes: u64,
    /// Their vbytes: absent clients' commitments and CPFP children.
    pub forced_close_vbytes: u64,
    /// Their vbytes: the LSP's delayed claims.
    pub forced_sweep_vbytes: u64,
    /// Their vbytes: the partial cooperative close of the rest.
    pub forced_rest_vbytes: u64,
    /// Their fees.
    pub forced_fees_sat: u64,
    /// Payouts of leaving clients in rotation transactions.
    pub payouts: u64,
    /// Payments made.
    pub payments: u64,
    /// Payments refused for lack of balance or inbound capacity.
    pub payments_failed: u64,
    /// Sat moved by payments.
    pub payment_volume_sat: u64,
    /// Liquidity purchases.
    pub liquidity_purchases: u64,
    /// Purchases refused (the client's share of the stock is used up until the next rotation).
    pub liquidity_refused: u64,
    /// Sat of liquidity bought.
    pub liquidity_sat: u64,
    /// Launch: transactions funding the first factories.
    pub bootstrap_txs: u64,
    /// Their vbytes.
    pub bootstrap_vbytes: u64,
    /// Their fees.
    pub bootstrap_fees_sat: u64,
    /// Baseline opens.
    pub baseline_opens: u64,
    /// Baseline cooperative closes.
    pub baseline_closes: u64,
    /// Baseline splices (one per liquidity purchase).
    pub baseline_splices: u64,
    /// Baseline opens of the clients present at the launch.
    pub baseline_bootstrap_opens: u64,
}

/// Run one simulation. `progress(done, total)` is called after each simulated day.
pub fn run(cfg: &SimConfig, progress: &mut dyn FnMut(u32, u32)) -> Result<Outcome, String> {
    run_with(cfg, prepare(cfg)?, progress)
}

/// The checked configuration's costs, or why it cannot run (core refuses unsafe shapes).
pub fn prepare(cfg: &SimConfig) -> Result<CostBook, String> {
    cfg.validate()?;
    CostBook::new(cfg)
}

/// Run one simulation with the sizes [`prepare`] built for `cfg`.
pub fn run_with(
    cfg: &SimConfig,
    book: CostBook,
    progress: &mut dyn FnMut(u32, u32),
) -> Result<Outcome, String> {
    if book.max_size() != cfg.factory_size {
        return Err("the factory sizes were prepared for another configuration".into());
    }
    Sim::new(cfg, book).run(progress)
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    book: CostBook,
    rng: Rng,
    /// Who is offline through a dying period: a stream of its own, so that the clients'
    /// arrivals, churn and payments do not depend on the offline share.
    offline_rng: Rng,
    status: Vec<Status>,
    factory_of: Vec<u32>,
    capacity: Vec<u64>,
    balance: Vec<u64>,
    bought: Vec<u64>,
    leaving: Vec<bool>,
    live: Vec<u32>,
    live_pos: Vec<u32>,
    waiting: Vec<u32>,
    factories: Vec<FactoryRec>,
    live_queue: VecDeque<u32>,
    pending: VecDeque<u32>,
    cohorts: Vec<Cohort>,
    next_rung: u32,
    capital: u64,
    baseline_capital: u64,
    not_gone: u64,
    live_factories: u64,
    day: DayStats,
    t: Totals,
    stock_limit: u64,
}

const NONE: u32 = u32::MAX;

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig, book: CostBook) -> Self {
        let stock = FactoryConfig::default().stock_per_client.to_sat();
        Sim {
            cfg,
            book,
            rng: Rng::new(cfg.seed),
            offline_rng: Rng::new(cfg.seed ^ 0x6f66_666c_696e_6521),
            status: Vec::new(),
            factory_of: Vec::new(),
            capacity: Vec::new(),
            balance: Vec::new(),
            bought: Vec::new(),
            leaving: Vec::new(),
            live: Vec::new(),
            live_pos: Vec::new(),
            waiting: Vec::new(),
            factories: Vec::new(),
            live_queue: VecDeque::new(),
            pending: VecDeque::new(),
            cohorts: Vec::new(),
            next_rung: cfg.rung_interval(),
            capital: 0,
            baseline_capital: 0,
            not_gone: 0,
            live_factories: 0,
            day: DayStats::default(),
            t: Totals::default(),
            // A client's purchases between rotations come from its share of the stock, less a
            // tenth kept for the fees of newer states that the stock pays.
            stock_limit: stock * 9 / 10,
        }
    }

    fn run(mut self, progress: &mut dyn FnMut(u32, u32)) -> Result<Outcome, String> {
        let mut days = Vec::with_capacity(self.cfg.days as usize);
        self.launch()?;
        for d in 0..self.cfg.days {
            let start = d * BLOCKS_PER_DAY;
            let end = start + BLOCKS_PER_DAY;
            if d > 0 {
                self.day = DayStats {
                    day: d,
                    ..DayStats::default()
                };
            }
            self.daily_activity();
            loop {
                let res = self
                    .pending
                    .front()
                    .map(|f| self.factories[*f as usize].dying_end);
                let next = match res {
                    Some(r) if r <= self.next_rung => r,
                    _ => self.next_rung,
                };
                if next >= end {
                    break;
                }
                if res == Some(next) {
                    let f = self.pending.pop_front().expect("a pending factory");
                    self.force_out(f)?;
                } else {
                    let t = self.next_rung;
                    self.next_rung += self.cfg.rung_interval();
                    self.rung(t)?;
                }
            }
            self.day.capital_sat = self.capital;
            self.day.baseline_capital_sat = self.baseline_capital;
            self.day.clients = self.not_gone;
            self.day.live_factories = self.live_factories;
            days.push(std::mem::take(&mut self.day));
            progress(d + 1, self.cfg.days);
        }
        let check = self.check_conservation();
        check?;
        let models = summary::models(&mut self.book, self.t.max_factory_clients.max(1))?;
        let summary = Summary::new(
            self.cfg,
            &self.t,
            &days,
            &self.book.tx,
            models,
            self.pending.len() as u64,
            self.count(Status::Waiting) + self.count(Status::Absent),
        );
        Ok(Outcome {
            summary,
            days,
            cohorts: self.cohorts,
        })
    }

    fn count(&self, s: Status) -> u64 {
        self.status.iter().filter(|x| **x == s).count() as u64
    }

    /// Every client is exactly once where its status says; nobody is lost.
    fn check_conservation(&self) -> Result<(), String> {
        let expected = self.t.clients_start + self.t.arrivals - self.t.churned;
        let mut in_factories = 0u64;
        for (i, f) in self.factories.iter().enumerate() {
            if !f.live || !f.absent.is_empty() {
                // Closed, or waiting for its forced exits (its present clients moved on).
                continue;
            }
            for c in &f.members {
                if self.factory_of[*c as usize] != i as u32
                    || self.status[*c as usize] != Status::InFactory
                {
                    return Err(format!(
                        "client {c} is listed in factory {i} but is not in it"
                    ));
                }
                in_factories += 1;
            }
        }
        // The others wait where their status says: offline ones in a factory waiting for its
        // forced exits, online ones in the queue for the next rung.
        let mut absent = 0u64;
        for f in &self.pending {
            let rec = &self.factories[*f as usize];
            for pos in &rec.absent {
                let c = rec.members[*pos as usize];
                if self.status[c as usize] != Status::Absent {
                    return Err(format!(
                        "client {c} is pending a forced exit but not absent"
                    ));
                }
                absent += 1;
            }
        }
        if absent != self.count(Status::Absent) {
            return Err(format!(
                "{absent} clients await a forced exit, not all absent ones"
            ));
        }
        if self
            .waiting
            .iter()
            .any(|c| self.status[*c as usize] != Status::Waiting)
            || self.waiting.len() as u64 != self.count(Status::Waiting)
        {
            return Err("the clients waiting for a rung are not those queued for it".into());
        }
        let placed = self.count(Status::InFactory);
        let others = self.count(Status::Waiting) + self.count(Status::Absent);
        if in_factories != placed || placed + others != expected || self.not_gone != expected {
            return Err(format!(
                "clients do not add up: {placed} in factories ({in_factories} listed), {others} \
                 waiting or absent, {expected} expected"
            ));
        }
        Ok(())
    }

    fn new_client(&mut self) -> u32 {
        let id = self.status.len() as u32;
        let mean = self.cfg.capacity_sat as f64;
        let cap = (mean * (0.5 + self.rng.unit())).round() as u64;
        let cap = cap.max(2 * DUST_SAT);
        self.status.push(Status::Waiting);
        self.factory_of.push(NONE);
        self.capacity.push(cap);
        self.balance.push(0);
        self.bought.push(0);
        self.leaving.push(false);
        self.live_pos.push(NONE);
        self.not_gone += 1;
        self.baseline_capital += cap;
        id
    }

    fn add_live(&mut self, c: u32) {
        self.live_pos[c as usize] = self.live.len() as u32;
        self.live.push(c);
    }

    fn remove_live(&mut self, c: u32) {
        let pos = self.live_pos[c as usize];
        if pos == NONE {
            return;
        }
        let last = self.live.pop().expect("a live client");
        if last != c {
            self.live[pos as usize] = last;
            self.live_pos[last as usize] = pos;
        }
        self.live_pos[c as usize] = NONE;
    }

    fn gone(&mut self, c: u32) {
        self.status[c as usize] = Status::Gone;
        self.factory_of[c as usize] = NONE;
        self.not_gone -= 1;
        self.t.churned += 1;
        self.baseline_capital -= self.capacity[c as usize] + self.bought[c as usize];
    }

    fn charge(&mut self, txs: u64, vbytes: u64, fees: u64) {
        self.day.txs += txs;
        self.day.vbytes += vbytes;
        self.day.fees_sat += fees;
    }

    fn fee(&self, vbytes: u64) -> u64 {
        vbytes * self.cfg.fee_rate
    }

    fn baseline(&mut self, vbytes: u64, count: u64) {
        self.day.baseline_txs += count;
        self.day.baseline_vbytes += vbytes * count;
    }

    /// The launch: the initial clients spread over the ladder's rungs, the first generation of
    /// factories expiring one rung apart, all funded by one transaction.
    fn launch(&mut self) -> Result<(), String> {
        let n = self.cfg.clients;
        let rungs = self.cfg.ladder_size;
        let interval = self.cfg.rung_interval();
        for _ in 0..n {
            self.new_client();
        }
        self.t.clients_start = u64::from(n);
        let mut outputs = 0usize;
        for r in 0..rungs {
            let lo = (u64::from(r) * u64::from(n) / u64::from(rungs)) as u32;
            let hi = (u64::from(r + 1) * u64::from(n) / u64::from(rungs)) as u32;
            if lo == hi {
                continue;
            }
            // Never past a full active period, so that every later factory expires after all
            // of the first generation.
            let active_end = ((r + 1) * interval).min(self.cfg.active_blocks);
            let members: Vec<u32> = (lo..hi).collect();
            outputs += self.form(members, 0, active_end)?.0;
        }
        let (vbytes, txs) = batched_vsize(&[Spend::KeyPath], outputs);
        let fees = self.fee(vbytes);
        self.charge(txs, vbytes, fees);
        self.t.bootstrap_txs = txs;
        self.t.bootstrap_vbytes = vbytes;
        self.t.bootstrap_fees_sat = fees;
        self.baseline(self.book.tx.baseline_open, u64::from(n));
        self.t.baseline_opens += u64::from(n);
        self.t.baseline_bootstrap_opens = u64::from(n);
        Ok(())
    }

    /// Form the factories of one cohort from `members` (as even as the size limit allows):
    /// returns how many factories and their total funding.
    fn form(
        &mut self,
        members: Vec<u32>,
        created: u32,
        active_end: u32,
    ) -> Result<(usize, u64), String> {
        let m = members.len();
        if m == 0 {
            return Ok((0, 0));
        }
        let k = self.cfg.factory_size as usize;
        let count = m.div_ceil(k);
        let cohort = self.cohorts.len() as u32;
        let dying_end = active_end + self.cfg.dying_blocks;
        self.cohorts.push(Cohort {
            created_block: created,
            active_end,
            dying_end,
            factories: count as u32,
            clients: m as u32,
            fallbacks: 0,
        });
        let mut total = 0;
        let mut start = 0;
        for i in 0..count {
            let size = m / count + usize::from(i < m % count);
            let group = members[start..start + size].to_vec();
            start += size;
            let capacities: u64 = group.iter().map(|c| self.capacity[*c as usize]).sum();
            let funding = self.book.model(size as u32)?.funding_sat(capacities);
            let id = self.factories.len() as u32;
            for c in &group {
                self.status[*c as usize] = Status::InFactory;
                self.factory_of[*c as usize] = id;
                self.add_live(*c);
            }
            self.factories.push(FactoryRec {
                cohort,
                active_end,
                dying_end,
                members: group,
                absent: Vec::new(),
                funding,
                live: true,
            });
            self.live_queue.push_back(id);
            self.capital += funding;
            self.live_factories += 1;
            total += funding;
            self.t.factories_created += 1;
            self.t.factory_clients += size as u64;
            self.t.max_factory_clients = self.t.max_factory_clients.max(size as u32);
        }
        Ok((count, total))
    }

    /// Arrivals, churn decisions, payments and liquidity purchases of one day.
    fn daily_activity(&mut self) {
        let arrivals = self.rng.poisson(self.cfg.arrivals_per_day);
        for _ in 0..arrivals {
            let c = self.new_client();
            self.waiting.push(c);
        }
        self.t.arrivals += arrivals;
        self.t.baseline_opens += arrivals;
        self.baseline(self.book.tx.baseline_open, arrivals);

        let live = self.live.len() as f64;
        let hazard = -(1.0 - self.cfg.churn_per_year).ln() / 365.0;
        for _ in 0..self.rng.poisson(hazard * live) {
            let c = self.live[self.rng.below(self.live.len() as u64) as usize];
            if !self.leaving[c as usize] {
                self.leaving[c as usize] = true;
                self.t.baseline_closes += 1;
                self.baseline(self.book.tx.baseline_close, 1);
            }
        }

        let payments = self.rng.poisson(self.cfg.payments_per_day * live);
        for _ in 0..payments {
            let c = self.live[self.rng.below(self.live.len() as u64) as usize] as usize;
            let amount = 1 + self.rng.below(self.capacity[c] / 20);
            let room = self.capacity[c] + self.bought[c];
            let ok = if self.rng.chance(0.5) {
                let ok = self.balance[c] + amount <= room;
                if ok {
                    self.balance[c] += amount;
                }
                ok
            } else {
                let ok = self.balance[c] >= amount;
                if ok {
                    self.balance[c] -= amount;
                }
                ok
            };
            self.t.payments += 1;
            if ok {
                self.t.payment_volume_sat += amount;
            } else {
                self.t.payments_failed += 1;
            }
        }

        let per_day = self.cfg.liquidity_per_month * 12.0 / 365.0;
        for _ in 0..self.rng.poisson(per_day * live) {
            let c = self.live[self.rng.below(self.live.len() as u64) as usize] as usize;
            let amount = self.cfg.liquidity_sat;
            if self.bought[c] + amount > self.stock_limit {
                self.t.liquidity_refused += 1;
                continue;
            }
            self.bought[c] += amount;
            self.baseline_capital += amount;
            self.t.liquidity_purchases += 1;
            self.t.liquidity_sat += amount;
            self.t.baseline_splices += 1;
            self.baseline(self.book.tx.baseline_splice, 1);
        }
    }

    /// A rung at height `t`: every factory whose active period is over rotates; one transaction
    /// spends the funding outputs of those whose clients are all present and creates the new
    /// factories' funding outputs and the payouts of the clients who leave.
    fn rung(&mut self, t: u32) -> Result<(), String> {
        let mut coop_inputs = 0usize;
        let mut released = 0u64;
        let mut payouts = 0usize;
        let mut payout_sat = 0u64;
        let mut moving = Vec::new();
        while let Some(&f) = self.live_queue.front() {
            if self.factories[f as usize].active_end > t {
                break;
            }
            self.live_queue.pop_front();
            let members = std::mem::take(&mut self.factories[f as usize].members);
            let mut absent = Vec::new();
            for (pos, &c) in members.iter().enumerate() {
                self.remove_live(c);
                let ci = c as usize;
                if self.offline_rng.unit() < self.cfg.offline_share {
                    absent.push(pos as u32);
                    self.status[ci] = Status::Absent;
                    continue;
                }
                if self.leaving[ci] {
                    if self.balance[ci] >= DUST_SAT {
                        payouts += 1;
                        payout_sat += self.balance[ci];
                    }
                    self.gone(c);
                    continue;
                }
                self.capacity[ci] += self.bought[ci];
                self.bought[ci] = 0;
                self.status[ci] = Status::Waiting;
                self.factory_of[ci] = NONE;
                moving.push(c);
            }
            let rec = &mut self.factories[f as usize];
            if absent.is_empty() {
                coop_inputs += 1;
                released += rec.funding;
                rec.live = false;
                self.capital -= rec.funding;
                self.live_factories -= 1;
                self.t.coop_closes += 1;
            } else {
                // Its clients who are present move on now (the LSP funds their new channels);
                // the factory itself is closed once the dying period is over.
                rec.absent = absent;
                rec.members = members;
                let cohort = rec.cohort as usize;
                self.pending.push_back(f);
                self.cohorts[cohort].fallbacks += 1;
                self.t.fallbacks += 1;
            }
        }
        moving.append(&mut self.waiting);
        if moving.is_empty() && coop_inputs == 0 {
            return Ok(());
        }
        let (new, needed) = self.form(moving, t, t + self.cfg.active_blocks)?;
        let outputs = new + payouts;
        let mut inputs = vec![Spend::KeyPath; coop_inputs];
        let (mut vbytes, mut txs) = batched_vsize(&inputs, outputs);
        if released < needed + payout_sat + self.fee(vbytes) {
            // The LSP adds a coin of its wallet (and takes the change).
            inputs.push(Spend::KeyPath);
            (vbytes, txs) = batched_vsize(&inputs, outputs);
        }
        let fees = self.fee(vbytes);
        self.charge(txs, vbytes, fees);
        self.t.rotations += 1;
        self.t.rotation_txs += txs;
        self.t.rotation_vbytes += vbytes;
        self.t.payouts += payouts as u64;
        Ok(())
    }

    /// The end of a fallback factory's dying period: the LSP publishes the tree nodes above its
    /// absent clients (each node once), closes their channels (commitment and CPFP child each),
    /// claims its delayed outputs and the stocks they share in one transaction, and closes the
    /// rest of the factory with its present clients in one more.
    fn force_out(&mut self, f: u32) -> Result<(), String> {
        let rec = self.factories[f as usize].clone();
        let size = rec.members.len() as u32;
        let rate = self.cfg.fee_rate;
        let tx = self.book.tx;
        let m = self.book.model(size)?;
        let mut absent = vec![false; size as usize];
        let mut marked = vec![false; m.nodes.len()];
        let mut stock_hit = vec![false; m.stock_clients.len()];
        for a in &rec.absent {
            absent[*a as usize] = true;
            stock_hit[m.stock_of[*a as usize] as usize] = true;
            let mut n = Some(m.leaf_of[*a as usize]);
            while let Some(id) = n {
                if marked[id as usize] {
                    break;
                }
                marked[id as usize] = true;
                n = m.nodes[id as usize].parent;
            }
        }
        let (mut path_vb, mut path_fee, mut path_txs) = (0u64, 0u64, 0u64);
        let mut rest = Vec::new();
        for (i, node) in m.nodes.iter().enumerate() {
            if !marked[i] {
                continue;
            }
            path_vb += node.kickoff_vbytes;
            path_fee += node.kickoff_fee_sat;
            path_txs += 1;
            if let Some(s) = node.state_vbytes {
                path_vb += s;
                path_fee += node.state_fee_sat;
                path_txs += 1;
            }
            if node.is_leaf {
                rest.extend(
                    node.clients
                        .clone()
                        .filter(|c| !absent[*c as usize])
                        .map(|_| Spend::KeyPath),
                );
                rest.extend(
                    node.stocks
                        .clone()
                        .filter(|s| !stock_hit[*s as usize])
                        .map(|_| Spend::KeyPath),
                );
            } else {
                rest.extend(
                    node.children
                        .iter()
                        .filter(|c| !marked[**c as usize])
                        .map(|_| Spend::KeyPath),
                );
            }
        }
        let a = rec.absent.len() as u64;
        let close_vb = a * (tx.commitment + tx.cpfp_child);
        let mut sweep = vec![tx.to_local_spend(); rec.absent.len()];
        sweep.extend(stock_hit.iter().filter(|h| **h).map(|_| tx.stock_spend()));
        let (sweep_vb, sweep_txs) = batched_vsize(&sweep, 0);
        let (rest_vb, rest_txs) = if rest.is_empty() {
            (0, 0)
        } else {
            batched_vsize(&rest, 0)
        };
        let vbytes = path_vb + close_vb + sweep_vb + rest_vb;
        let txs = path_txs + 2 * a + sweep_txs + rest_txs;
        let fees = path_fee + (close_vb + sweep_vb + rest_vb) * rate;
        self.charge(txs, vbytes, fees);
        self.day.forced_vbytes += vbytes;
        self.t.forced_exits += a;
        self.t.forced_txs += txs;
        self.t.forced_path_vbytes += path_vb;
        self.t.forced_close_vbytes += close_vb;
        self.t.forced_sweep_vbytes += sweep_vb;
        self.t.forced_rest_vbytes += rest_vb;
        self.t.forced_fees_sat += fees;
        self.t.fallbacks_resolved += 1;
        let r = &mut self.factories[f as usize];
        r.live = false;
        r.members = Vec::new();
        self.capital -= rec.funding;
        self.live_factories -= 1;
        for pos in rec.absent {
            let c = rec.members[pos as usize];
            let ci = c as usize;
            if self.leaving[ci] {
                self.gone(c);
            } else {
                // Back online later: its balance was paid on chain; it joins the next rung.
                self.capacity[ci] += self.bought[ci];
                self.bought[ci] = 0;
                self.balance[ci] = 0;
                self.status[ci] = Status::Waiting;
                self.factory_of[ci] = NONE;
                self.waiting.push(c);
            }
        }
        Ok(())
    }
}
