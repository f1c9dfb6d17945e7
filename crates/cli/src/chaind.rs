//! `superscalar chaind`: a regtest node on the embedded chain serving Bitcoin Core's JSON-RPC,
//! until the `stop` RPC, SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use superscalar_chain::rpc::auth::Credentials;
use superscalar_chain::rpc::server::{
    Chaind, ChaindConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_RPC_BIND,
};

/// Arguments of `superscalar chaind`.
#[derive(Debug, clap::Args)]
pub struct ChaindArgs {
    /// Data directory, as Core's -datadir: the chain, the cookie and mempool.dat live in its
    /// `regtest` directory (so `bitcoin-cli -regtest -datadir=DIR -rpcport=PORT` works).
    #[arg(long)]
    datadir: PathBuf,
    /// Address to serve RPC on (port 0 picks a free port; the address line tells which).
    #[arg(long, default_value_t = DEFAULT_RPC_BIND)]
    rpc_bind: SocketAddr,
    /// User name for HTTP Basic authentication (instead of a cookie).
    #[arg(long, requires = "rpcpassword")]
    rpcuser: Option<String>,
    /// Password for HTTP Basic authentication (instead of a cookie).
    #[arg(long, requires = "rpcuser")]
    rpcpassword: Option<String>,
    /// Allow a non-loopback --rpc-bind (needs --rpcuser and --rpcpassword).
    #[arg(long)]
    rpc_allow_remote: bool,
    /// Connections served at once (more wait to be accepted; an idle keep-alive connection
    /// holds its slot for up to 30 s): raise it when more processes share this node.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    rpc_max_connections: u64,
}

/// Exit code of a bad argument (as clap's own).
const USAGE: u8 = 2;

fn usage_error(message: &str) -> ExitCode {
    error(message);
    ExitCode::from(USAGE)
}

/// A line on stderr. Like every output of a long-running server, it must not panic when nobody
/// reads any more (a closed pipe): the server's work is done either way.
fn error(message: &str) {
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

/// Run `chaind` until it is stopped.
pub fn run(args: ChaindArgs) -> ExitCode {
    if args.datadir.as_os_str().is_empty() {
        return usage_error("--datadir must not be empty");
    }
    let credentials = match (args.rpcuser, args.rpcpassword) {
        (Some(user), Some(password)) => {
            if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                return usage_error(
                    "--rpcuser must be non-empty, without ':' or control characters",
                );
            }
            if password.is_empty() {
                return usage_error("--rpcpassword must not be empty");
            }
            Some(Credentials::new(user, password))
        }
        _ => None,
    };
    if !args.rpc_bind.ip().is_loopback() {
        if !args.rpc_allow_remote {
            return usage_error(&format!(
                "--rpc-bind {} is not a loopback address; pass --rpc-allow-remote (with --rpcuser and --rpcpassword) to serve RPC beyond this machine",
                args.rpc_bind
            ));
        }
        if credentials.is_none() {
            return usage_error("--rpc-allow-remote needs --rpcuser and --rpcpassword");
        }
    }
    let handle = match Chaind::start(ChaindConfig {
        bind: args.rpc_bind,
        credentials,
        allow_remote: args.rpc_allow_remote,
        stop_on_signals: true,
        max_connections: args.rpc_max_connections as usize,
        ..ChaindConfig::new(&args.datadir)
    }) {
        Ok(h) => h,
        Err(e) => {
            error(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    if let Some(why) = &handle.mempool_load().ignored {
        let _ = writeln!(std::io::stderr(), "warning: {why}");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "chaind listening on {}", handle.local_addr());
    let _ = match handle.cookie_path() {
        Some(path) => writeln!(stdout, "chaind cookie at {}", path.display()),
        None => writeln!(
            stdout,
            "chaind authenticates with --rpcuser and --rpcpassword"
        ),
    };
    let _ = stdout.flush();
    drop(stdout);
    match handle.wait() {
        Ok(()) => {
            let _ = writeln!(std::io::stdout(), "chaind stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error(&e.to_string());
            ExitCode::FAILURE
        }
    }
}
