//! `superscalar sim`: a discrete-event simulation of one LSP's factory ladder over months
//! (`superscalar-sim`), one run per factory size: prints the on-chain footprint, fees and capital
//! against one on-chain channel per user, and writes SVG plots and `summary.json`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use superscalar_sim::config::{
    parse_leaf, ShapeSpec, StaticLevels, MAX_CLIENTS, MAX_DAYS, MAX_FACTORY_SIZE, MAX_LADDER_SIZE,
    MAX_PERIOD_BLOCKS,
};
use superscalar_sim::costs::CostBook;
use superscalar_sim::{summary, Outcome, SimConfig, Summary};

use crate::daemons::{error, usage};

/// `superscalar sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Clients at the start.
    #[arg(long, default_value_t = 10_000)]
    clients: u64,
    /// Days to simulate.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Write ladder.svg, onchain_bytes.svg, capital.svg and summary.json here (created if
    /// missing; with several factory sizes, one folder size-K per size and a summary.json of
    /// all runs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Most clients per factory; a comma-separated list runs one simulation per size and prints
    /// a comparison.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    factory_size: Vec<u64>,
    /// Arity of each tree level from the root down (the last repeats).
    #[arg(long, value_delimiter = ',', default_value = "8,4,2")]
    arity: Vec<u8>,
    /// Static (kickoff-only) levels near the root, or `auto`: the fewest that keep the
    /// worst-case exit time within core's ceiling.
    #[arg(long, default_value = "auto")]
    static_levels: String,
    /// Leaf kind: `dw` (Decker-Wattenhofer, 2 clients) or `ps:K` (pseudo-Spilman, K^2 clients).
    #[arg(long, default_value = "dw")]
    leaf: String,
    /// States per Decker-Wattenhofer layer.
    #[arg(long, default_value_t = 4)]
    states_per_layer: u16,
    /// Blocks between two states of a layer (at least 144 on mainnet).
    #[arg(long, default_value_t = 144)]
    step_blocks: u16,
    /// Rungs of the ladder in their active period at once: a new rung every
    /// active-blocks / ladder-size blocks.
    #[arg(long, default_value_t = 33)]
    ladder_size: u64,
    /// Blocks a factory is active.
    #[arg(long, default_value_t = 4320)]
    active_blocks: u64,
    /// Blocks a factory is dying (its clients migrate to the newest factory).
    #[arg(long, default_value_t = 432)]
    dying_blocks: u64,
    /// New clients per day (mean).
    #[arg(long, default_value_t = 5.5)]
    arrivals_per_day: f64,
    /// Share of the clients that leave for good within a year.
    #[arg(long, default_value_t = 0.2)]
    churn_per_year: f64,
    /// Share of a dying factory's clients offline through its whole dying period (each forces
    /// an exit on chain).
    #[arg(long, default_value_t = 0.02)]
    offline_share: f64,
    /// Payments per client per day (off chain: they move balances only).
    #[arg(long, default_value_t = 2.0)]
    payments_per_day: f64,
    /// Liquidity purchases per client per month (off chain, from the LSP's stock; a splice each
    /// for one channel per user).
    #[arg(long, default_value_t = 0.1)]
    liquidity_per_month: f64,
    /// Inbound liquidity one purchase buys, in sat.
    #[arg(long, default_value_t = 20_000)]
    liquidity_sat: u64,
    /// Fee rate in sat/vB: what every transaction pays, and the tree's endogenous fee rate.
    #[arg(long, default_value_t = 10)]
    fee_rate: u64,
    /// Mean channel capacity of a client, in sat (each drawn within 0.5x..1.5x of it).
    #[arg(long, default_value_t = 100_000)]
    capacity_sat: u64,
    /// Seed of the pseudo-random draws (the same seed gives the same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn narrow(name: &str, v: u64, max: u64) -> Result<u32, String> {
    u32::try_from(v)
        .ok()
        .filter(|v| u64::from(*v) <= max)
        .ok_or_else(|| format!("{name} must be within 1..={max} (got {v})"))
}

/// The configuration of each run, checked; nothing is created before this succeeds.
fn configs(args: &SimArgs) -> Result<Vec<SimConfig>, String> {
    let static_levels = match args.static_levels.as_str() {
        "auto" => StaticLevels::Auto,
        s => StaticLevels::Fixed(s.parse::<u8>().map_err(|_| {
            format!("--static-levels {s:?}: auto or a number of levels within 0..=255")
        })?),
    };
    let shape = ShapeSpec {
        arity: args.arity.clone(),
        static_levels,
        leaf: parse_leaf(&args.leaf)?,
        states_per_layer: args.states_per_layer,
        step_blocks: args.step_blocks,
    };
    if args.factory_size.is_empty() {
        return Err("--factory-size needs at least one size".into());
    }
    let mut sizes = Vec::new();
    for s in &args.factory_size {
        let s = narrow("--factory-size", *s, u64::from(MAX_FACTORY_SIZE))?;
        if !sizes.contains(&s) {
            sizes.push(s);
        }
    }
    let base = SimConfig {
        clients: narrow("--clients", args.clients, u64::from(MAX_CLIENTS))?,
        days: narrow("--days", args.days, u64::from(MAX_DAYS))?,
        factory_size: sizes[0],
        shape,
        ladder_size: narrow(
            "--ladder-size",
            args.ladder_size,
            u64::from(MAX_LADDER_SIZE),
        )?,
        active_blocks: narrow(
            "--active-blocks",
            args.active_blocks,
            u64::from(MAX_PERIOD_BLOCKS),
        )?,
        dying_blocks: narrow(
            "--dying-blocks",
            args.dying_blocks,
            u64::from(MAX_PERIOD_BLOCKS),
        )?,
        arrivals_per_day: args.arrivals_per_day,
        churn_per_year: args.churn_per_year,
        offline_share: args.offline_share,
        payments_per_day: args.payments_per_day,
        liquidity_per_month: args.liquidity_per_month,
        liquidity_sat: args.liquidity_sat,
        fee_rate: args.fee_rate,
        capacity_sat: args.capacity_sat,
        seed: args.seed,
    };
    base.validate()?;
    Ok(sizes
        .into_iter()
        .map(|factory_size| SimConfig {
            factory_size,
            ..base.clone()
        })
        .collect())
}

/// Runs `superscalar sim`.
pub fn run(args: SimArgs) -> ExitCode {
    let configs = match configs(&args) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    // Every factory size is built (and so checked by core) before anything is written.
    let mut books = Vec::new();
    for cfg in &configs {
        match superscalar_sim::prepare(cfg) {
            Ok(b) => books.push(b),
            Err(e) => return usage(&e),
        }
    }
    if let Some(out) = &args.out {
        if out.exists() && !out.is_dir() {
            return usage(&format!("--out {}: not a directory", out.display()));
        }
    }
    let started = Instant::now();
    let outcomes = match simulate(&configs, books) {
        Ok(o) => o,
        Err(e) => return error(&e),
    };
    let elapsed = started.elapsed();
    let written = match &args.out {
        Some(out) => match write(out, &outcomes) {
            Ok(w) => w,
            Err(e) => return error(&e),
        },
        None => Vec::new(),
    };
    let summaries: Vec<Summary> = outcomes.into_iter().map(|o| o.summary).collect();
    if args.json {
        println!("{}", json(&summaries));
    } else {
        for s in &summaries {
            println!("{}", s.to_text());
        }
        if summaries.len() > 1 {
            println!("{}", summary::comparison(&summaries));
        }
        for w in &written {
            println!("wrote {}", w.display());
        }
    }
    eprintln!("simulated in {:.2} s", elapsed.as_secs_f64());
    ExitCode::SUCCESS
}

fn simulate(configs: &[SimConfig], books: Vec<CostBook>) -> Result<Vec<Outcome>, String> {
    let total: u64 = configs.iter().map(|c| u64::from(c.days)).sum();
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} days")
        {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut outcomes = Vec::new();
    for (cfg, book) in configs.iter().zip(books) {
        bar.set_message(format!("size {}", cfg.factory_size));
        let mut last = 0u32;
        let outcome = superscalar_sim::run_with(cfg, book, &mut |done, _| {
            bar.inc(u64::from(done - last));
            last = done;
        });
        match outcome {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    Ok(outcomes)
}

fn json(summaries: &[Summary]) -> String {
    let value = match summaries {
        [one] => serde_json::to_value(one),
        many => serde_json::to_value(many).map(|runs| serde_json::json!({ "runs": runs })),
    };
    value
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Write the plots and summaries: into `out` for one run, into `out/size-K` per run and a
/// `summary.json` of all runs in `out` for several. Returns the files written.
fn write(out: &Path, outcomes: &[Outcome]) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let files = |dir: &Path| {
        superscalar_sim::plot::PLOT_FILES
            .iter()
            .chain([&superscalar_sim::SUMMARY_FILE])
            .map(|f| dir.join(f))
            .collect::<Vec<_>>()
    };
    if let [one] = outcomes {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        superscalar_sim::write_outputs(one, out)?;
        return Ok(files(out));
    }
    for o in outcomes {
        let dir = out.join(format!("size-{}", o.summary.config.factory_size));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        superscalar_sim::write_outputs(o, &dir)?;
        written.extend(files(&dir));
    }
    let summaries: Vec<Summary> = outcomes.iter().map(|o| o.summary.clone()).collect();
    let path = out.join(superscalar_sim::SUMMARY_FILE);
    std::fs::write(&path, json(&summaries) + "\n")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    written.push(path);
    Ok(written)
}
