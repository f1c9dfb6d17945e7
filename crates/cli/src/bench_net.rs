//! `superscalar bench-payments --network`: payments per second from one client daemon to
//! another through the LSP daemon, each a separate process on loopback, every channel step
//! written to its SQLite store (synchronous=FULL) before it is sent. Callers pay invoices
//! concurrently through the payer's control API; the channels batch what arrives during a round.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::*;

/// Runs `count` payments of `amount_msat` with `concurrency` callers at once.
pub fn run(count: u64, amount_msat: u64, concurrency: usize) -> DemoResult<()> {
    if count == 0 || !(1..=100).contains(&concurrency) {
        return Err("--count at least 1, --concurrency 1 to 100".into());
    }
    let total = amount_msat
        .checked_mul(count)
        .filter(|t| *t <= 4_000_000_000)
        .ok_or("count x amount above the payer's 4,000,000 sat")?;
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    let mut chain = start_chaind(dir)?;
    let (mut lsp, uri) = start_lsp(dir, &chain, "127.0.0.1:0", 2)?;
    chain.address = lsp.call("newaddress", json!({}))?["address"]
        .as_str()
        .ok_or("newaddress")?
        .to_owned();
    chain.mine(110)?;
    let mut clients = vec![
        start_client_with(dir, 0, &chain, &uri, 5_000_000)?,
        start_client_with(dir, 1, &chain, &uri, 5_000_000)?,
    ];
    wait("the factory", Duration::from_secs(120), || {
        Ok(lsp.call("status", json!({}))?["factories"].as_u64() == Some(1))
    })?;
    chain.mine(1)?;
    for c in &clients {
        wait("the channels", Duration::from_secs(120), || {
            Ok(c.call("balance", json!({}))?["channel"]["ready"] == true)
        })?;
    }
    // The payer gets its balance from the LSP.
    let inv = clients[0].call(
        "invoice",
        json!({ "amount_msat": total + 1_000_000, "description": "bench" }),
    )?;
    lsp.call("pay", json!({ "invoice": inv["invoice"] }))?;

    let t = Instant::now();
    let mut invoices = Vec::with_capacity(count as usize);
    for i in 0..count {
        let v = clients[1].call(
            "invoice",
            json!({ "amount_msat": amount_msat, "description": format!("bench {i}") }),
        )?;
        invoices.push(v["invoice"].as_str().ok_or("invoice")?.to_owned());
    }
    let invoice_time = t.elapsed();

    let invoices = Arc::new(invoices);
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (invoices, next) = (Arc::clone(&invoices), Arc::clone(&next));
            let api = clients[0].api.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(inv) = invoices.get(i) else {
                        return Ok(latencies);
                    };
                    let start = Instant::now();
                    let r = api
                        .call("pay", json!({ "invoice": inv }))
                        .map_err(|e| e.to_string())?;
                    if r["status"] != "paid" {
                        return Err(format!("payment {i}: {r}"));
                    }
                    latencies.push(start.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.join().map_err(|_| "a caller panicked")??);
    }
    let wall = t.elapsed();
    latencies.sort();
    let received = clients[1].call("balance", json!({}))?["balance_msat"]
        .as_u64()
        .unwrap_or(0);
    if received != total {
        return Err(format!("the payee holds {received} msat, expected {total}").into());
    }
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "bench-payments --network: {count} payments of {amount_msat} msat, client -> LSP -> client, \
         separate processes on loopback, every channel step written before it is sent"
    );
    println!(
        "  {:.1} payments/s with {concurrency} concurrent callers ({:.2} s); latency p50 {:.1} ms, \
         p90 {:.1} ms, max {:.1} ms",
        count as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
    println!(
        "  invoices (issued by the LSP for the payee's hashes): {:.1}/s one at a time",
        count as f64 / invoice_time.as_secs_f64()
    );
    stop_all(clients.iter_mut().chain([&mut lsp]));
    Ok(())
}
