//! The `superscalar` command.

mod bench;
mod bench_net;
mod bench_payments;
mod chaind;
mod config;
mod daemons;
mod demo;
mod demo_channels;
mod demo_factory;
mod demo_net;
mod export;
mod procs;
mod sim;
mod swarm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// SuperScalar channel factories on Bitcoin.
#[derive(Debug, Parser)]
#[command(name = "superscalar", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the end-to-end demo: chaind, one LSP and client daemons as separate processes on
    /// loopback, driven through their control API (`--in-process`: the whole protocol in one
    /// process on the embedded chain, with liquidity sales and state advances).
    Demo {
        /// The in-process demo instead.
        #[arg(long)]
        in_process: bool,
        /// Client daemons to run (2 to 64).
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Keep the demo's data in this (new or empty) directory (default: a temporary one).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The signing ceremony of factories of N clients: the LSP's critical path against its raw
    /// libsecp256k1 floor, and each client's cost.
    Bench {
        /// Client counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "8,64,256,1024,4096")]
        clients: Vec<usize>,
        /// Threads for the clients' work (the clients are independent devices in reality).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Threads for the LSP's work (0: one per core).
        #[arg(long, default_value_t = 0)]
        lsp_threads: usize,
    },
    /// Payments per second through the LSP between two leaf channels, in process.
    BenchPayments {
        /// Payments to make.
        #[arg(long, default_value_t = 2000)]
        count: u64,
        /// Amount of the first payment in msat (each next one 1 msat more). The default is
        /// below the dust limit (HTLC outputs trimmed, as in the first measurements); 10000000
        /// gives every commitment an HTLC output with its second-stage signatures.
        #[arg(long, default_value_t = 1_000)]
        amount_msat: u64,
        /// Between daemons over loopback (chaind, the LSP and two clients as processes, every
        /// channel step persisted) instead of in process.
        #[arg(long)]
        network: bool,
        /// With --network: callers paying at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// A regtest node on the embedded chain serving Bitcoin Core's JSON-RPC (bitcoin-cli works
    /// against it), until the `stop` RPC, SIGINT or SIGTERM.
    Chaind(chaind::ChaindArgs),
    /// The LSP daemon and its control verbs.
    #[command(subcommand)]
    Lsp(daemons::LspCommand),
    /// A client daemon and its control verbs.
    #[command(subcommand)]
    Client(daemons::ClientCommand),
    /// Simulate one LSP's ladder of factories over months (clients arriving and leaving, payments,
    /// liquidity, rotations, forced exits of offline clients): on-chain bytes, fees and capital
    /// against one on-chain channel per user, with SVG plots.
    Sim(sim::SimArgs),
    /// Print one client's signed exit package (JSON) for a factory of N clients.
    ExportExit {
        /// Clients in the factory.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// The client whose package to print.
        #[arg(long, default_value_t = 0)]
        client: u32,
        /// Print totals instead of the JSON.
        #[arg(long)]
        summary: bool,
    },
}

fn main() -> ExitCode {
    let args = match config::apply(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Chaind(args) => return chaind::run(args),
        Command::Lsp(command) => return daemons::lsp(command),
        Command::Client(command) => return daemons::client(command),
        Command::Sim(args) => return sim::run(args),
        Command::Demo {
            in_process: true,
            data_dir,
            ..
        } => demo::run(data_dir),
        Command::Demo {
            clients, data_dir, ..
        } => demo_net::run(clients, data_dir),
        Command::Bench {
            clients,
            threads,
            lsp_threads,
        } => bench::run(&clients, threads.max(1), lsp_threads),
        Command::BenchPayments {
            count,
            amount_msat,
            network: true,
            concurrency,
        } => bench_net::run(count, amount_msat, concurrency),
        Command::BenchPayments {
            count, amount_msat, ..
        } => bench_payments::run(count, amount_msat),
        Command::ExportExit {
            clients,
            client,
            summary,
        } => export::run(clients, client, summary),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
