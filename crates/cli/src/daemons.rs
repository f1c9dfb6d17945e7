//! `superscalar lsp ...` and `superscalar client ...`: `run` starts the daemon; every other verb
//! is a call to the running daemon's control API (JSON-RPC over loopback HTTP, authenticated by
//! the cookie file in its data directory), printed as a table or, with `--json`, as JSON.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, FeeRate, Network};
use serde_json::{json, Value};
use superscalar_api::{ApiClient, ApiClientError, COOKIE_FILE};
use superscalar_core::FactoryConfig;

/// Default control API address of the LSP.
pub const LSP_API: &str = "127.0.0.1:9736";
/// Default control API address of a client.
pub const CLIENT_API: &str = "127.0.0.1:9737";

/// Where to reach a running daemon.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The daemon's data directory (its API cookie is there).
    #[arg(long)]
    datadir: PathBuf,
    /// The daemon's control API address.
    #[arg(long)]
    api: Option<SocketAddr>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The chain connection of a daemon.
#[derive(Debug, clap::Args)]
pub struct ChainArgs {
    /// Bitcoin Core's (or `superscalar chaind`'s) JSON-RPC URL.
    #[arg(long)]
    pub(crate) chain_rpc: String,
    /// Its cookie file.
    #[arg(long)]
    pub(crate) chain_cookie: PathBuf,
    /// The chain (only regtest today).
    #[arg(long, default_value = "regtest")]
    pub(crate) network: Network,
    /// Keep the seed unencrypted (regtest only); otherwise the passphrase is read from
    /// SUPERSCALAR_PASSPHRASE.
    #[arg(long)]
    no_passphrase: bool,
}

/// `superscalar lsp`.
#[derive(Debug, clap::Subcommand)]
pub enum LspCommand {
    /// Run the LSP daemon.
    Run {
        /// Data directory (created on first start).
        #[arg(long)]
        datadir: PathBuf,
        /// A TOML file of these options (default: `<datadir>/superscalar.toml` if present); the
        /// command line wins over it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where clients connect (BOLT-8).
        #[arg(long, default_value = "127.0.0.1:9735")]
        listen: SocketAddr,
        /// The control API address (loopback only; port 0 picks one).
        #[arg(long, default_value = LSP_API)]
        api: SocketAddr,
        #[command(flatten)]
        chain: ChainArgs,
        /// Form a factory once this many clients wait at a rung of the ladder (without a
        /// ladder: once this many wait).
        #[arg(long, default_value_t = 8)]
        min_clients: usize,
        /// At most this many clients per factory.
        #[arg(long, default_value_t = 64)]
        max_clients: usize,
        /// Seconds a ceremony round waits for every member before it restarts without the late.
        #[arg(long, default_value_t = 30)]
        round_timeout: u64,
        /// At most this many members of a factory being formed have its proposal and have not
        /// answered yet (the rest get theirs as answers come in, or a second later).
        #[arg(long, default_value_t = superscalar_lsp::daemon::DEFAULT_PROPOSAL_WINDOW,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
        proposal_window: usize,
        /// Blocks a factory is active.
        #[arg(long, default_value_t = 200)]
        active_blocks: u32,
        /// Blocks a factory is dying, after its active period (default: a tenth of
        /// --active-blocks, at least 5).
        #[arg(long)]
        dying_blocks: Option<u32>,
        /// Rungs of the ladder over the active period: a factory forms at most every
        /// active-blocks / ladder-size blocks, with the clients waiting then (a full factory,
        /// --max-clients, forms at once); 0 forms one whenever --min-clients wait.
        #[arg(long, default_value_t = 30)]
        ladder_size: u32,
        /// The fee of inbound liquidity a client buys, in parts per million of the channel.
        #[arg(long, default_value_t = 10_000)]
        liquidity_fee_ppm: u32,
        /// The least fee of inbound liquidity (sat, at least 1).
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
        liquidity_fee_min_sat: u64,
        /// Seconds a paid liquidity order waits for its sale (its buyer's leaf mates online)
        /// before its fee is failed back.
        #[arg(long, default_value_t = 120)]
        liquidity_patience_secs: u64,
        /// Do not propose the cooperative close of factories in their dying period (the
        /// operator closes them with `close-factory`; what the tree holds at T pays the clients).
        #[arg(long)]
        no_auto_close: bool,
        /// In the dying period, propose the cooperative close rather than a rotation into a
        /// successor factory (which keeps every client's balance off chain).
        #[arg(long)]
        no_auto_rotate: bool,
        /// Do not take a dying factory on chain at its reclaim height when no close was signed
        /// (what the tree holds at T then pays the clients, the LSP's channel balances too).
        #[arg(long)]
        no_reclaim: bool,
        /// Inject a fault (tests only): `crash-after-final-sigs`, `crash-after-forward`,
        /// `publish-superseded`, `close-overpays`.
        #[arg(long, hide = true)]
        fault: Option<String>,
    },
    /// The LSP's state: node id, wallet, clients, factory being formed, recent events.
    Status(ApiArgs),
    /// Every factory.
    Factories(ApiArgs),
    /// One factory and its transactions.
    Factory {
        /// The factory id (hex).
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Connected and waiting clients.
    Clients(ApiArgs),
    /// Form a factory now with the clients waiting.
    CreateFactory {
        /// Wait until it is signed or aborted (a progress bar on a terminal).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A new address of the LSP's on-chain wallet.
    Newaddress(ApiArgs),
    /// Every leaf channel: its client, balances and HTLCs.
    Channels(ApiArgs),
    /// Pay an invoice this LSP issued for one of its clients, from the LSP's side of that
    /// client's channel.
    Pay {
        /// The BOLT-11 invoice.
        invoice: String,
        /// The amount, if the invoice has none (msat).
        #[arg(long)]
        amount_msat: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Advance one client's leaf path to its next Decker-Wattenhofer state, signed with the
    /// clients below the node that ticks; waits until it completes or is abandoned.
    Advance {
        /// The factory id (hex).
        factory: String,
        /// The index of the client whose leaf path advances.
        #[arg(long)]
        client: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Sell a client inbound liquidity: a new channel of AMOUNT sat from its leaf's stock, all
    /// on the LSP's side, in its leaf's next state; waits until it completes or is abandoned.
    SellLiquidity {
        /// The factory id (hex).
        factory: String,
        /// The index of the buying client in the factory.
        #[arg(long)]
        client: u32,
        /// The new channel's capacity (sat).
        #[arg(long)]
        amount_sat: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Close a factory cooperatively: one key-path spend of its funding output paying every
    /// client its balance and fee coin and the LSP the rest, signed by all; waits until it is
    /// signed and broadcast or refused.
    CloseFactory {
        /// The factory id (hex).
        factory: String,
        /// The close's fee rate (sat/vB; default: the LSP's funding fee rate).
        #[arg(long)]
        fee_rate: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Rotate a factory: one transaction closes it and funds its successor, into which every
    /// client rolls its balance (a channel that opens at it); waits until it is signed and
    /// broadcast or refused.
    RotateFactory {
        /// The factory id (hex).
        factory: String,
        /// The rotation's fee rate (sat/vB; default: the LSP's funding fee rate).
        #[arg(long)]
        fee_rate: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop the daemon.
    Stop(ApiArgs),
}

/// `superscalar client`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Run a client daemon.
    Run {
        /// Data directory (created on first start).
        #[arg(long)]
        datadir: PathBuf,
        /// A TOML file of these options (default: `<datadir>/superscalar.toml` if present); the
        /// command line wins over it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The LSP as NODE_ID@HOST:PORT (its node id is pinned).
        #[arg(long)]
        lsp: String,
        /// The control API address (loopback only; port 0 picks one).
        #[arg(long, default_value = CLIENT_API)]
        api: SocketAddr,
        #[command(flatten)]
        chain: ChainArgs,
        /// The capacity of the channel to ask for, in sat.
        #[arg(long, default_value_t = 100_000)]
        capacity_sat: u64,
        /// Inject a fault (tests only): `stall-before-partials`, `crash-after-partials`,
        /// `stall-update`, `publish-revoked`, `hold-htlcs`.
        #[arg(long, hide = true)]
        fault: Option<String>,
    },
    /// The client's state: LSP connection, factory, recent events.
    Status(ApiArgs),
    /// Exit the factory alone, on chain (goes on with each new block).
    Exit {
        /// Wait until the path is confirmed and the channel closed (a progress bar on a
        /// terminal); the exit goes on in the daemon if this is interrupted.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Where the exit is.
    ExitStatus(ApiArgs),
    /// The channel's balances: ours, the LSP's, what we can send and receive.
    Balance(ApiArgs),
    /// An invoice to be paid into our channel (issued by the LSP for a payment hash only this
    /// client knows the preimage of).
    Invoice {
        /// The amount (msat); any amount if absent.
        #[arg(long)]
        amount_msat: Option<u64>,
        /// What for.
        #[arg(long, default_value = "")]
        description: String,
        /// Seconds it is valid.
        #[arg(long, default_value_t = 3600)]
        expiry_secs: u32,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Pay an invoice (one issued through our LSP); waits for it to settle.
    Pay {
        /// The BOLT-11 invoice.
        invoice: String,
        /// The amount, if the invoice has none (msat).
        #[arg(long)]
        amount_msat: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Send every coin the factory paid us on chain (close output, timeout payouts, balances
    /// claimed, the fee coin's change) to ADDRESS in one transaction.
    Sweep {
        /// An address of our own wallet.
        address: String,
        /// The sweep's fee rate (sat/vB, default 2).
        #[arg(long)]
        fee_rate: Option<u64>,
        /// Scan our chain from this height (default: the factory's creation).
        #[arg(long)]
        from_height: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Buy inbound liquidity: the LSP sells us a channel of AMOUNT sat in our leaf for its fee
    /// (paid through our channel, held by the LSP until the sale completes, refunded if it
    /// cannot be made); waits until it is sold.
    BuyLiquidity {
        /// The new channel's capacity (sat).
        #[arg(long)]
        amount_sat: u64,
        /// The most we pay for it (sat; default 2% of the amount plus 1,000 sat).
        #[arg(long)]
        max_fee_sat: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Write an encrypted backup (seed words, factories, signed exit paths) to a new file; the
    /// passphrase is read from SUPERSCALAR_BACKUP_PASSPHRASE.
    Backup {
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Restore a backup into an empty data directory (offline: then `client run` on it). The
    /// backup's passphrase is read from SUPERSCALAR_BACKUP_PASSPHRASE, the new seed file's from
    /// SUPERSCALAR_PASSPHRASE (or --no-passphrase on regtest).
    Restore {
        /// The new, empty data directory.
        #[arg(long)]
        datadir: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The chain.
        #[arg(long, default_value = "regtest")]
        network: Network,
        /// Keep the new seed file unencrypted (regtest only).
        #[arg(long)]
        no_passphrase: bool,
    },
    /// Stop the daemon.
    Stop(ApiArgs),
    /// Run many independent clients in this one process (a load generator for the LSP).
    Swarm(crate::swarm::SwarmArgs),
}

pub(crate) fn error(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::FAILURE
}

pub(crate) fn usage(message: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {message}");
    ExitCode::from(2)
}

fn backup_passphrase() -> Result<String, String> {
    match std::env::var("SUPERSCALAR_BACKUP_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => Err("set SUPERSCALAR_BACKUP_PASSPHRASE to the backup's passphrase".into()),
    }
}

pub(crate) fn passphrase(chain: &ChainArgs) -> Result<Option<String>, String> {
    passphrase_for(chain.network, chain.no_passphrase)
}

fn passphrase_for(network: Network, no_passphrase: bool) -> Result<Option<String>, String> {
    if no_passphrase {
        if network != Network::Regtest {
            return Err("--no-passphrase is for regtest only".into());
        }
        return Ok(None);
    }
    match std::env::var("SUPERSCALAR_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Ok(Some(p)),
        _ => Err(
            "set SUPERSCALAR_PASSPHRASE to the seed's passphrase (or --no-passphrase on regtest)"
                .into(),
        ),
    }
}

/// Logs to stderr and to `<datadir>/debug.log`.
pub(crate) fn init_logs(datadir: &Path) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ldk=warn"));
    let file = std::fs::create_dir_all(datadir)
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(datadir.join("debug.log"))
        })
        .ok();
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter).with(stderr);
    match file {
        Some(f) => {
            let file_layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f));
            let _ = registry.with(file_layer).try_init();
        }
        None => {
            let _ = registry.try_init();
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Runs `superscalar lsp ...`.
pub fn lsp(command: LspCommand) -> ExitCode {
    match command {
        LspCommand::Run {
            datadir,
            config: _,
            listen,
            api,
            chain,
            min_clients,
            max_clients,
            round_timeout,
            proposal_window,
            active_blocks,
            dying_blocks,
            ladder_size,
            liquidity_fee_ppm,
            liquidity_fee_min_sat,
            liquidity_patience_secs,
            no_auto_close,
            no_auto_rotate,
            no_reclaim,
            fault,
        } => {
            let fault = match fault.as_deref() {
                None => None,
                Some("crash-after-final-sigs") => {
                    Some(superscalar_lsp::daemon::Fault::CrashAfterFinalSigs)
                }
                Some("crash-after-forward") => {
                    Some(superscalar_lsp::daemon::Fault::CrashAfterForward)
                }
                Some("publish-superseded") => {
                    Some(superscalar_lsp::daemon::Fault::PublishSuperseded)
                }
                Some("close-overpays") => Some(superscalar_lsp::daemon::Fault::CloseOverpays),
                Some(other) => return usage(&format!("unknown --fault {other:?}")),
            };
            if min_clients == 0 || max_clients < min_clients {
                return usage("need 1 <= --min-clients <= --max-clients");
            }
            if !(20..=100_000).contains(&active_blocks) {
                return usage("--active-blocks must be within 20..=100000");
            }
            let dying_blocks = dying_blocks.unwrap_or((active_blocks / 10).max(5));
            if !(5..=100_000).contains(&dying_blocks) {
                return usage("--dying-blocks must be within 5..=100000");
            }
            if ladder_size > active_blocks {
                return usage("--ladder-size must be within 0..=--active-blocks (a rung of at least one block)");
            }
            let passphrase = match passphrase(&chain) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            init_logs(&datadir);
            let config = superscalar_lsp::daemon::LspConfig {
                datadir,
                network: chain.network,
                listen,
                api,
                chain_url: chain.chain_rpc,
                chain_cookie: chain.chain_cookie,
                passphrase,
                min_clients,
                max_clients,
                ladder_size,
                round_timeout: Duration::from_secs(round_timeout.max(1)),
                proposal_window,
                factory: FactoryConfig {
                    active_blocks,
                    dying_blocks,
                    network: chain.network,
                    ..FactoryConfig::regtest()
                },
                funding_fee_rate: FeeRate::from_sat_per_vb_u32(2),
                liquidity_fee_ppm,
                liquidity_fee_min: bitcoin::Amount::from_sat(liquidity_fee_min_sat),
                liquidity_patience: Duration::from_secs(liquidity_patience_secs),
                auto_close: !no_auto_close,
                auto_rotate: !no_auto_rotate,
                reclaim: !no_reclaim,
                fault,
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return error(&e),
            };
            let result = rt.block_on(superscalar_lsp::daemon::run(config, |id, listen, api| {
                println!("lsp {id}@{listen} api {api}");
            }));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => error(&e.to_string()),
            }
        }
        LspCommand::Status(a) => call(&a, LSP_API, "status", json!({}), print_status),
        LspCommand::Factories(a) => call(&a, LSP_API, "factories", json!({}), print_factories),
        LspCommand::Factory { id, api } => {
            call(&api, LSP_API, "factory", json!({ "id": id }), print_pretty)
        }
        LspCommand::Clients(a) => call(&a, LSP_API, "clients", json!({}), print_pretty),
        LspCommand::CreateFactory { wait: false, api } => {
            call(&api, LSP_API, "create-factory", json!({}), print_pretty)
        }
        LspCommand::CreateFactory { wait: true, api } => wait_for_factory(&api),
        LspCommand::Newaddress(a) => call(&a, LSP_API, "newaddress", json!({}), |v| {
            println!("{}", v["address"].as_str().unwrap_or_default())
        }),
        LspCommand::Channels(a) => call(&a, LSP_API, "channels", json!({}), print_channels),
        LspCommand::Pay {
            invoice,
            amount_msat,
            api,
        } => call(
            &api,
            LSP_API,
            "pay",
            json!({ "invoice": invoice, "amount_msat": amount_msat }),
            print_status,
        ),
        LspCommand::Advance {
            factory,
            client,
            api,
        } => call(
            &api,
            LSP_API,
            "advance",
            json!({ "factory": factory, "client": client }),
            |v| {
                println!(
                    "{} advanced to state {} (signed by {} clients, {} stock versions revoked)",
                    v["node"], v["state"], v["clients"], v["revoked_stock_versions"]
                )
            },
        ),
        LspCommand::SellLiquidity {
            factory,
            client,
            amount_sat,
            api,
        } => call(
            &api,
            LSP_API,
            "sell_liquidity",
            json!({ "factory": factory, "client": client, "amount_sat": amount_sat }),
            |v| {
                println!(
                    "sold {} sat to client {} (channel {} at {}); {} advanced to state {}",
                    v["sold"]["amount_sat"],
                    v["sold"]["client"],
                    v["sold"]["channel"].as_str().unwrap_or("?"),
                    v["sold"]["funding"].as_str().unwrap_or("?"),
                    v["node"],
                    v["state"]
                )
            },
        ),
        LspCommand::CloseFactory {
            factory,
            fee_rate,
            api,
        } => call(
            &api,
            LSP_API,
            "close_factory",
            json!({ "factory": factory, "fee_rate": fee_rate }),
            |v| print_close(v, "closed cooperatively".into()),
        ),
        LspCommand::RotateFactory {
            factory,
            fee_rate,
            api,
        } => call(
            &api,
            LSP_API,
            "rotate_factory",
            json!({ "factory": factory, "fee_rate": fee_rate }),
            |v| {
                let into = v["successor"]["factory"].as_str().unwrap_or("?");
                print_close(v, format!("rotated into {into}"))
            },
        ),
        LspCommand::Stop(a) => call(&a, LSP_API, "stop", json!({}), |_| println!("stopping")),
    }
}

/// A close's (or a rotation's) summary line, then the table of its outputs.
fn print_close(v: &Value, how: String) {
    println!(
        "factory {} {how} by {} ({} vB, fee {} sat){}",
        v["factory"].as_str().unwrap_or("?"),
        v["txid"].as_str().unwrap_or("?"),
        v["vsize"],
        v["fee_sat"],
        if v["broadcast"] == json!(true) {
            ""
        } else {
            "; not accepted by our chain yet, broadcast again every tick"
        }
    );
    println!("{:>8}  {:>14}  output", "client", "amount (sat)");
    for c in v["clients"].as_array().into_iter().flatten() {
        let output = match c["output"].as_u64() {
            Some(o) => o.to_string(),
            None if c["rolled"] == json!(true) => "rolled into the successor".into(),
            None => "below dust: to the fee".into(),
        };
        println!(
            "{:>8}  {:>14}  {output}",
            c["client"].as_u64().unwrap_or_default(),
            c["amount_sat"].as_u64().unwrap_or_default()
        );
    }
    if let Some(lsp) = v["lsp_sat"].as_u64() {
        println!("{:>8}  {lsp:>14}", "LSP");
    }
}

/// Runs `superscalar client ...`.
pub fn client(command: ClientCommand) -> ExitCode {
    match command {
        ClientCommand::Run {
            datadir,
            config: _,
            lsp,
            api,
            chain,
            capacity_sat,
            fault,
        } => {
            let fault = match fault.as_deref() {
                None => None,
                Some("stall-before-partials") => {
                    Some(superscalar_client::daemon::Fault::StallBeforePartials)
                }
                Some("crash-after-partials") => {
                    Some(superscalar_client::daemon::Fault::CrashAfterPartials)
                }
                Some("stall-update") => Some(superscalar_client::daemon::Fault::StallUpdate),
                Some("publish-revoked") => Some(superscalar_client::daemon::Fault::PublishRevoked),
                Some("hold-htlcs") => Some(superscalar_client::daemon::Fault::HoldHtlcs),
                Some(other) => return usage(&format!("unknown --fault {other:?}")),
            };
            let (lsp_id, lsp_addr) = match parse_lsp(&lsp) {
                Ok(l) => l,
                Err(e) => return usage(&e),
            };
            let capacity = match capacity(capacity_sat) {
                Ok(c) => c,
                Err(e) => return usage(&e),
            };
            let passphrase = match passphrase(&chain) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            init_logs(&datadir);
            let config = superscalar_client::daemon::ClientConfig {
                datadir,
                network: chain.network,
                lsp_id,
                lsp_addr,
                api,
                chain_url: chain.chain_rpc,
                chain_cookie: chain.chain_cookie,
                passphrase,
                capacity,
                fault,
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return error(&e),
            };
            let result = rt.block_on(superscalar_client::daemon::run(config, |id, api| {
                println!("client {id} api {api}");
            }));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => error(&e.to_string()),
            }
        }
        ClientCommand::Status(a) => call(&a, CLIENT_API, "status", json!({}), print_status),
        ClientCommand::Exit { wait: false, api } => {
            call(&api, CLIENT_API, "exit", json!({}), print_pretty)
        }
        ClientCommand::Exit { wait: true, api } => wait_for_exit(&api),
        ClientCommand::Backup { out, api } => {
            let passphrase = match backup_passphrase() {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            let path = match std::path::absolute(&out) {
                Ok(p) => p,
                Err(e) => return usage(&format!("--out {}: {e}", out.display())),
            };
            call(
                &api,
                CLIENT_API,
                "backup",
                json!({ "path": path, "passphrase": passphrase }),
                |v| {
                    println!(
                        "backup of {} factories written to {}",
                        v["factories"], v["path"]
                    )
                },
            )
        }
        ClientCommand::Restore {
            datadir,
            from,
            network,
            no_passphrase,
        } => {
            let passphrase = match backup_passphrase() {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            let seed_passphrase = match passphrase_for(network, no_passphrase) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            let backup = match superscalar_client::backup::read(&from, network, &passphrase) {
                Ok(b) => b,
                Err(e) => return error(&e.to_string()),
            };
            match superscalar_client::backup::restore(&datadir, &backup, seed_passphrase.as_deref())
            {
                Ok(n) => {
                    println!(
                        "restored {n} factories into {}; start it with `superscalar client run --datadir {} --lsp {}`",
                        datadir.display(),
                        datadir.display(),
                        backup.lsp
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => error(&e.to_string()),
            }
        }
        ClientCommand::ExitStatus(a) => {
            call(&a, CLIENT_API, "exit-status", json!({}), print_pretty)
        }
        ClientCommand::Balance(a) => call(&a, CLIENT_API, "balance", json!({}), print_status),
        ClientCommand::Invoice {
            amount_msat,
            description,
            expiry_secs,
            api,
        } => call(
            &api,
            CLIENT_API,
            "invoice",
            json!({
                "amount_msat": amount_msat,
                "description": description,
                "expiry_secs": expiry_secs,
            }),
            |v| println!("{}", v["invoice"].as_str().unwrap_or_default()),
        ),
        ClientCommand::Pay {
            invoice,
            amount_msat,
            api,
        } => call(
            &api,
            CLIENT_API,
            "pay",
            json!({ "invoice": invoice, "amount_msat": amount_msat }),
            print_status,
        ),
        ClientCommand::Sweep {
            address,
            fee_rate,
            from_height,
            api,
        } => call(
            &api,
            CLIENT_API,
            "sweep",
            json!({ "address": address, "fee_rate": fee_rate, "from_height": from_height }),
            |v| {
                println!(
                    "swept {} sat from {} coins in {} (fee {} sat)",
                    v["amount_sat"],
                    v["inputs"].as_array().map_or(0, |a| a.len()),
                    v["txid"].as_str().unwrap_or("?"),
                    v["fee_sat"]
                )
            },
        ),
        ClientCommand::BuyLiquidity {
            amount_sat,
            max_fee_sat,
            api,
        } => call(
            &api,
            CLIENT_API,
            "buy_liquidity",
            json!({ "amount_sat": amount_sat, "max_fee_sat": max_fee_sat }),
            |v| {
                if v["status"] == "bought" {
                    println!(
                        "bought {} sat of inbound liquidity for {} sat (channel {})",
                        v["amount_sat"],
                        v["fee_sat"],
                        v["channel"].as_str().unwrap_or("?")
                    )
                } else {
                    println!(
                        "fee of {} sat paid, the sale is pending (payment {})",
                        v["fee_sat"],
                        v["payment_hash"].as_str().unwrap_or("?")
                    )
                }
            },
        ),
        ClientCommand::Stop(a) => call(&a, CLIENT_API, "stop", json!({}), |_| println!("stopping")),
        ClientCommand::Swarm(args) => crate::swarm::run(args),
    }
}

/// `--lsp NODE_ID@HOST:PORT`.
pub(crate) fn parse_lsp(lsp: &str) -> Result<(PublicKey, SocketAddr), String> {
    let (id, addr) = lsp
        .split_once('@')
        .ok_or("--lsp must be NODE_ID@HOST:PORT")?;
    let lsp_id = id
        .parse::<PublicKey>()
        .map_err(|_| format!("--lsp: {id:?} is not a node id (33 bytes in hex)"))?;
    let lsp_addr = addr
        .parse::<SocketAddr>()
        .map_err(|_| format!("--lsp: {addr:?} is not HOST:PORT"))?;
    Ok((lsp_id, lsp_addr))
}

/// `--capacity-sat`, within what the LSP accepts.
pub(crate) fn capacity(sat: u64) -> Result<Amount, String> {
    let (min, max) = (
        superscalar_lsp::daemon::MIN_CAPACITY,
        superscalar_lsp::daemon::MAX_CAPACITY,
    );
    let capacity = Amount::from_sat(sat);
    if !(min..=max).contains(&capacity) {
        return Err(format!(
            "--capacity-sat must be within {}..={}",
            min.to_sat(),
            max.to_sat()
        ));
    }
    Ok(capacity)
}

/// Calls `method` on the daemon of `a` and prints the result with `print` (or as JSON).
fn api_client(a: &ApiArgs, default_api: &str) -> ApiClient {
    let addr = a
        .api
        .map(|s| s.to_string())
        .unwrap_or_else(|| default_api.to_owned());
    ApiClient::new(format!("http://{addr}/"), a.datadir.join(COOKIE_FILE))
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// `lsp create-factory --wait`: the ceremony's rounds until the factory is signed or aborted.
fn wait_for_factory(a: &ApiArgs) -> ExitCode {
    let client = api_client(a, LSP_API);
    let id = match client.call("create-factory", json!({})) {
        Ok(v) => v["factory"].as_str().unwrap_or_default().to_owned(),
        Err(e) => return error(&e.to_string()),
    };
    let bar = progress(
        1,
        "{spinner} factory {msg} [{bar:30}] {pos}/{len} members answered",
    );
    bar.set_message(id.chars().take(16).collect::<String>());
    loop {
        let status = match client.call("status", json!({})) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                return error(&e.to_string());
            }
        };
        let forming = &status["forming"];
        if forming["factory"].as_str() == Some(id.as_str()) {
            let members = forming["members"].as_u64().unwrap_or(0);
            let waiting = forming["waiting_for"].as_u64().unwrap_or(0);
            bar.set_length(members.max(1));
            bar.set_position(members.saturating_sub(waiting));
            bar.set_message(format!(
                "{} {}",
                id.chars().take(16).collect::<String>(),
                forming["phase"].as_str().unwrap_or("")
            ));
        } else {
            let detail = match client.call("factory", json!({ "id": id })) {
                Ok(d) => d,
                Err(e) => {
                    bar.abandon();
                    return error(&e.to_string());
                }
            };
            let state = detail["status"].as_str().unwrap_or_default().to_owned();
            if state != "forming" {
                bar.finish_and_clear();
                if a.json {
                    print_pretty(&detail);
                } else {
                    println!("factory {id}: {state}");
                }
                return if state == "aborted" {
                    error("the factory was aborted (see `lsp status` for why)")
                } else {
                    ExitCode::SUCCESS
                };
            }
        }
        bar.tick();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `client exit --wait`: the exit path's transactions confirming, then the channel's close.
fn wait_for_exit(a: &ApiArgs) -> ExitCode {
    let client = api_client(a, CLIENT_API);
    if let Err(e) = client.call("exit", json!({})) {
        return error(&e.to_string());
    }
    let bar = progress(1, "{spinner} exit [{bar:30}] {pos}/{len} {msg}");
    loop {
        let s = match client.call("exit-status", json!({})) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                return error(&e.to_string());
            }
        };
        let path = s["path"].as_array().cloned().unwrap_or_default();
        let confirmed = path
            .iter()
            .filter(|t| {
                t["status"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("confirmed"))
            })
            .count() as u64;
        bar.set_length(path.len() as u64 + 1);
        let closed = s["channel_closed"] == true;
        bar.set_position(confirmed + u64::from(closed));
        let last = s["log"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        bar.set_message(last);
        // A channel below the dust limit is left to the timeout (see `exit-status`).
        let small_channel = s["channel_balance_msat"].as_u64().unwrap_or(0) < 330_000;
        if s["done"] == true && (closed || small_channel) {
            bar.finish_and_clear();
            if a.json {
                print_pretty(&s);
            } else {
                println!(
                    "exit done: {} transactions confirmed{}",
                    path.len(),
                    if closed { ", channel closed" } else { "" }
                );
            }
            return ExitCode::SUCCESS;
        }
        bar.tick();
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn call(
    a: &ApiArgs,
    default_api: &str,
    method: &str,
    params: Value,
    print: fn(&Value),
) -> ExitCode {
    let addr = a
        .api
        .map(|s| s.to_string())
        .unwrap_or_else(|| default_api.to_owned());
    let client = ApiClient::new(format!("http://{addr}/"), a.datadir.join(COOKIE_FILE));
    match client.call(method, params) {
        Ok(v) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print(&v);
            }
            ExitCode::SUCCESS
        }
        Err(ApiClientError::NotRunning { .. }) => error(&format!(
            "no daemon answers at {addr}: is it running (`run --datadir {}`), and is --api right?",
            a.datadir.display()
        )),
        Err(e) => error(&e.to_string()),
    }
}

fn print_pretty(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Key-value lines for the scalar fields, then the nested ones pretty-printed.
fn print_status(v: &Value) {
    let Some(map) = v.as_object() else {
        return print_pretty(v);
    };
    for (k, val) in map {
        match val {
            Value::Array(items) if k == "events" => {
                println!("{k}:");
                for e in items {
                    println!("  {}", e.as_str().unwrap_or_default());
                }
            }
            Value::Object(_) | Value::Array(_) => {
                println!("{k}: {}", serde_json::to_string(val).unwrap_or_default())
            }
            Value::String(s) => println!("{k}: {s}"),
            Value::Null => println!("{k}: -"),
            other => println!("{k}: {other}"),
        }
    }
}

fn print_channels(v: &Value) {
    let Some(items) = v.as_array() else {
        return print_pretty(v);
    };
    println!(
        "{:<16}  {:>6}  {:<66}  {:>14}  {:>14}  {:>5}",
        "factory", "client", "peer", "lsp msat", "client msat", "htlcs"
    );
    for c in items {
        let factory = c["factory"].as_str().unwrap_or_default();
        println!(
            "{:<16}  {:>6}  {:<66}  {:>14}  {:>14}  {:>5}",
            &factory[..factory.len().min(16)],
            c["client"],
            c["peer"].as_str().unwrap_or_default(),
            c["lsp_balance_msat"],
            c["client_balance_msat"],
            c["htlcs"],
        );
    }
}

fn print_factories(v: &Value) {
    let Some(items) = v.as_array() else {
        return print_pretty(v);
    };
    println!(
        "{:<64}  {:<8}  {:>8}  {:>8}",
        "factory", "status", "created", "timeout"
    );
    for f in items {
        println!(
            "{:<64}  {:<8}  {:>8}  {:>8}",
            f["id"].as_str().unwrap_or_default(),
            f["status"].as_str().unwrap_or_default(),
            f["created_height"],
            f["timeout_height"],
        );
    }
}
