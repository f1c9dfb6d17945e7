//! Core's `rpc/server.cpp` control methods: `help`, `stop`, `uptime`.

use super::{find, table, Ctx, Method};
use crate::rpc::server::json::Json;
use crate::rpc::server::jsonrpc::RpcError;
use crate::rpc::server::params::{opt, usage, Args, Ty};

pub(super) static METHODS: &[Method] = &[
    Method {
        name: "help",
        category: "control",
        params: &[opt("command", Ty::Str)],
        description: "List all commands, or get help for a specified command.",
        handler: help,
    },
    Method {
        name: "stop",
        category: "control",
        params: &[opt("wait", Ty::Num)],
        description: "Request a graceful shutdown of chaind.",
        handler: stop,
    },
    Method {
        name: "uptime",
        category: "control",
        params: &[],
        description: "Returns the total uptime of the server.",
        handler: uptime,
    },
];

fn help(_: &Ctx, args: &Args) -> Result<Json, RpcError> {
    if let Some(command) = args.str(0)? {
        return Ok(match find(command) {
            Some(m) => usage(m.name, m.params, m.description),
            None => format!("help: unknown command: {command}\n"),
        }
        .into());
    }
    let mut methods = table();
    methods.sort_by_key(|m| (m.category, m.name));
    let mut out = String::new();
    let mut category = "";
    for m in methods {
        if m.category != category {
            if !category.is_empty() {
                out.push('\n');
            }
            category = m.category;
            let mut title = category.to_string();
            if let Some(first) = title.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            out.push_str(&format!("== {title} ==\n"));
        }
        let line = usage(m.name, m.params, "");
        out.push_str(line.lines().next().unwrap_or(m.name));
        out.push('\n');
    }
    Ok(out.trim_end().to_string().into())
}

fn stop(ctx: &Ctx, args: &Args) -> Result<Json, RpcError> {
    // Core sleeps for the hidden `wait` (milliseconds) after asking to stop; we cap it.
    let wait: Option<i32> = args.int(0)?;
    ctx.request_stop();
    if let Some(ms) = wait.filter(|ms| *ms > 0) {
        std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000) as u64));
    }
    Ok("Bitcoin Core stopping".into())
}

fn uptime(ctx: &Ctx, _: &Args) -> Result<Json, RpcError> {
    Ok(ctx.started.elapsed().as_secs().into())
}
