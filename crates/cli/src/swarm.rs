//! `superscalar client swarm`: N independent clients in this one process, each with its own
//! seed, store (`DIR/client-<i>`), BOLT-8 connection and node id, all joining the LSP as the
//! client daemon does ([`superscalar_client::swarm`]; they share one read-only chain connection).
//! Prints a summary once every client is signed (or at the timeout): exit 0 if every client got
//! there, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use superscalar_client::swarm::{Swarm, SwarmConfig, SwarmReport, Until};

use crate::daemons::{
    capacity, error, init_logs, parse_lsp, passphrase, runtime, usage, ChainArgs,
};

/// The most clients one swarm runs.
pub const MAX_COUNT: usize = 10_000;

/// `superscalar client swarm`.
#[derive(Debug, clap::Args)]
pub struct SwarmArgs {
    /// How many clients.
    #[arg(long)]
    count: usize,
    /// The LSP as NODE_ID@HOST:PORT (its node id is pinned).
    #[arg(long)]
    lsp: String,
    /// Data directory: client i keeps its seed and store in DIR/client-i.
    #[arg(long)]
    datadir: PathBuf,
    #[command(flatten)]
    chain: ChainArgs,
    /// The capacity of the channel each client asks for, in sat.
    #[arg(long, default_value_t = 100_000)]
    capacity_sat: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Stop once every client is `signed`, or once every client's factory is `live` (its
    /// funding confirmed on the chain: someone has to mine a block).
    #[arg(long, default_value = "signed")]
    until: String,
    /// Every client computes every MuSig2 key aggregation itself, as on separate machines
    /// (by default the clients share one memo of them: the same key list gives the same result).
    #[arg(long)]
    no_shared_aggregates: bool,
    /// Print every client's report as JSON after the summary.
    #[arg(long)]
    json: bool,
}

/// Runs `superscalar client swarm`.
pub fn run(args: SwarmArgs) -> ExitCode {
    if !(1..=MAX_COUNT).contains(&args.count) {
        return usage(&format!("--count must be within 1..={MAX_COUNT}"));
    }
    let until = match args.until.as_str() {
        "signed" => Until::Signed,
        "live" => Until::Live,
        other => return usage(&format!("--until {other:?}: signed or live")),
    };
    let (lsp_id, lsp_addr) = match parse_lsp(&args.lsp) {
        Ok(l) => l,
        Err(e) => return usage(&e),
    };
    let capacity = match capacity(args.capacity_sat) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let passphrase = match passphrase(&args.chain) {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    init_logs(&args.datadir);
    let config = SwarmConfig {
        datadir: args.datadir,
        count: args.count,
        network: args.chain.network,
        lsp_id,
        lsp_addr,
        chain_url: args.chain.chain_rpc,
        chain_cookie: args.chain.chain_cookie,
        passphrase,
        capacity,
        share_aggregates: !args.no_shared_aggregates,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return error(&e),
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let report = rt.block_on(async {
        let swarm = Swarm::start(config).await?;
        println!("swarm {} clients started", swarm.node_ids().len());
        Ok::<_, superscalar_client::swarm::SwarmError>(swarm.run(until, timeout).await)
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => return error(&e.to_string()),
    };
    print_summary(&report);
    if args.json {
        print_json(&report);
    }
    let n = report.clients.len();
    let reached = match until {
        Until::Signed => report.signed(),
        Until::Live => report.confirmed(),
    };
    if reached == n {
        return ExitCode::SUCCESS;
    }
    let mut why: Vec<String> = report
        .clients
        .iter()
        .filter_map(|c| c.last_error.clone())
        .collect();
    why.sort();
    why.dedup();
    why.truncate(3);
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" (last errors: {})", why.join("; "))
    };
    error(&format!(
        "only {reached} of {n} clients {} within {} s{why}",
        args.until,
        timeout.as_secs()
    ))
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn seconds(from: Option<SystemTime>, to: Option<SystemTime>) -> String {
    match (from, to) {
        (Some(a), Some(b)) => format!(
            "{:.3}",
            b.duration_since(a).unwrap_or(Duration::ZERO).as_secs_f64()
        ),
        _ => "-".into(),
    }
}

fn stamp(t: Option<SystemTime>) -> String {
    t.map_or_else(|| "-".into(), |t| format!("{:.6}", unix(t)))
}

/// The summary, one `key: value` line each, for people and scripts.
fn print_summary(r: &SwarmReport) {
    let (mean, max) = r.bytes_received();
    println!("clients: {}", r.clients.len());
    println!("signed: {}", r.signed());
    println!("announced live: {}", r.announced());
    println!("confirmed live: {}", r.confirmed());
    println!("timed out: {}", r.timed_out);
    println!("first join unix s: {}", stamp(r.first_join()));
    println!("first proposal unix s: {}", stamp(r.first_proposal()));
    println!("last signed unix s: {}", stamp(r.last_signed()));
    println!(
        "wall s, first join to last signed: {}",
        seconds(r.first_join(), r.last_signed())
    );
    println!(
        "wall s, first proposal to last signed: {}",
        seconds(r.first_proposal(), r.last_signed())
    );
    let (busy_mean, busy_max) = r.busy();
    println!(
        "ceremony steps per client, ms: mean {:.1}, max {:.1}",
        busy_mean.as_secs_f64() * 1e3,
        busy_max.as_secs_f64() * 1e3
    );
    println!("bytes received per client, mean: {mean}");
    println!("bytes received per client, max: {max}");
    println!(
        "(bytes: each protocol message's encoding plus its 2-byte type; BOLT-8 framing, 34 bytes \
         a message, not counted)"
    );
    println!("process CPU s: {:.2}", crate::bench::process_cpu());
    println!(
        "peak RSS kB: {}",
        peak_rss_kb().map_or_else(|| "-".into(), |k| k.to_string())
    );
}

/// This process's peak resident set (`VmHWM`, Linux only).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn print_json(r: &SwarmReport) {
    let clients: Vec<serde_json::Value> = r
        .clients
        .iter()
        .map(|c| {
            serde_json::json!({
                "node_id": c.node_id.to_string(),
                "joins": c.joins,
                "joined": c.joined.map(unix),
                "proposed": c.proposed.map(unix),
                "signed": c.signed.map(unix),
                "factory": c.factory.map(|f| f.to_string()),
                "messages_received": c.messages_received,
                "bytes_received": c.bytes_received,
                "announced": c.announced,
                "confirmed": c.confirmed,
                "last_error": c.last_error,
                "busy_ms": c.busy.as_secs_f64() * 1e3,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&clients).unwrap_or_default()
    );
}
