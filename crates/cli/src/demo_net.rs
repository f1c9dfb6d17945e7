//! `superscalar demo`: the networked demo. It starts `chaind`, one LSP and `--clients` client
//! daemons as separate OS processes on loopback, and drives them only through their control
//! API: the factory forms, the channels open, payments flow (one arriving from the LSP, then
//! clients paying each other), the LSP is SIGKILLed and restarted from its database, one client
//! exits alone, and at the factory's timeout the others publish their timeout payouts. Then a
//! second factory of new clients forms, carries payments and is closed cooperatively in one
//! transaction. It ends with balances, every on-chain transaction (vbytes, fee) and timings, and
//! stops every process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bitcoin::{Amount, Transaction, Txid};
use serde_json::{json, Value};

use crate::procs::*;

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Inbound liquidity the LSP sells the leaver (sat).
const SALE_SAT: u64 = 50_000;
/// Inbound liquidity client 0 buys (sat).
const BUY_SAT: u64 = 30_000;

fn sat(msat: &Value) -> String {
    let m = msat.as_u64().unwrap_or(0);
    format!("{:>9}", m / 1000)
}

/// One row of the on-chain summary.
struct Row {
    what: String,
    tx: Transaction,
}

/// Runs the networked demo with `clients` client daemons; `keep` keeps the data directories
/// (else they are removed).
pub fn run(clients: usize, keep: Option<PathBuf>) -> DemoResult<()> {
    if !(2..=64).contains(&clients) {
        return Err("--clients: 2 to 64".into());
    }
    let started = Instant::now();
    let temp;
    let dir = match keep {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            if std::fs::read_dir(&d)?.next().is_some() {
                return Err(format!("{} is not empty", d.display()).into());
            }
            d
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    println!(
        "superscalar demo: chaind, one LSP and {clients} clients as separate processes on loopback"
    );
    println!(
        "  working directory: {} (each daemon's debug.log is in its data directory)",
        dir.display()
    );

    // 1. The chain.
    let mut chain = start_chaind(&dir)?;

    // 2. The LSP, funded by mining to its wallet.
    let (mut lsp, uri) = start_lsp(&dir, &chain, "127.0.0.1:0", clients)?;
    let listen = uri.split('@').nth(1).ok_or("LSP address")?.to_owned();
    chain.address = lsp.call("newaddress", json!({}))?["address"]
        .as_str()
        .ok_or("newaddress")?
        .to_owned();
    chain.mine(110)?;
    println!(
        "  LSP {} listening on {listen}; 110 blocks mined to its wallet",
        &lsp.id[..16]
    );

    // 3. The clients join with no coin at all; the factory forms when all wait.
    let t_form = Instant::now();
    let mut daemons = Vec::new();
    for i in 0..clients {
        daemons.push(start_client(&dir, i, &chain, &uri)?);
    }
    wait("the factory's signatures", Duration::from_secs(120), || {
        Ok(lsp.call("status", json!({}))?["factories"].as_u64() == Some(1))
    })?;
    let formed = t_form.elapsed();
    chain.mine(1)?;
    for d in &daemons {
        wait("every channel ready", Duration::from_secs(120), || {
            Ok(d.call("balance", json!({}))?["channel"]["ready"] == true)
        })?;
    }
    let factories = lsp.call("factories", json!({}))?;
    let id = factories
        .as_array()
        .and_then(|a| a.iter().find(|f| f["status"] == "live"))
        .and_then(|f| f["id"].as_str())
        .ok_or("no live factory")?
        .to_owned();
    let detail = lsp.call("factory", json!({ "id": id }))?;
    let mut rows = Vec::new();
    if let Some(f) = detail["transactions"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["label"] == "funding"))
    {
        let txid: Txid = f["txid"].as_str().ok_or("funding txid")?.parse()?;
        rows.push(Row {
            what: "funding (LSP wallet -> factory)".into(),
            tx: chain.tx(&txid)?,
        });
    }
    println!(
        "  factory {} formed in {:.2} s: {} pre-signed transactions, {} channels open",
        &id[..16],
        formed.as_secs_f64(),
        detail["transactions"].as_array().map_or(0, |t| t.len()),
        clients
    );

    // 4. Payments. The LSP pays the first half of the clients (as a payment from elsewhere
    // would arrive); then each client pays the next one.
    let t_pay = Instant::now();
    let mut payments = 0;
    let pay = |payer: &Daemon, payee: &Daemon, msat: u64| -> DemoResult<()> {
        let inv = payee.call(
            "invoice",
            json!({ "amount_msat": msat, "description": "demo" }),
        )?;
        let bolt11 = inv["invoice"].as_str().ok_or("no invoice")?;
        let r = payer.call("pay", json!({ "invoice": bolt11 }))?;
        if r["status"] != "paid" {
            return Err(format!("payment not settled: {r}").into());
        }
        Ok(())
    };
    for d in daemons.iter().take(clients.div_ceil(2)) {
        pay(&lsp, d, 60_000_000)?;
        payments += 1;
    }
    for round in 0..2 {
        for i in 0..clients {
            let (payer, payee) = (&daemons[i], &daemons[(i + 1) % clients]);
            let b = payer.call("balance", json!({}))?;
            if b["sendable_msat"].as_u64().unwrap_or(0) >= 10_000_000 {
                pay(payer, payee, 5_000_000 + round * 1_000_000)?;
                payments += 1;
            }
        }
    }
    let pay_time = t_pay.elapsed();
    println!(
        "  {payments} payments settled in {:.2} s ({:.1} ms each, every step written before it is sent)",
        pay_time.as_secs_f64(),
        pay_time.as_secs_f64() * 1000.0 / f64::from(payments.max(1))
    );

    // 5. The LSP is SIGKILLed and restarted from its database on the same address.
    lsp.proc.kill();
    let (lsp2, uri2) = start_lsp(&dir, &chain, &listen, clients)?;
    if uri2 != uri {
        return Err("the LSP came back with another identity".into());
    }
    lsp = lsp2;
    for d in &daemons {
        wait("the clients reconnected", Duration::from_secs(60), || {
            Ok(d.call("status", json!({}))?["connected"] == true)
        })?;
    }
    pay(&daemons[0], &daemons[clients - 1], 1_000_000)?;
    println!(
        "  LSP killed (SIGKILL) and restarted from its database: channels intact, payment settled"
    );

    // 6. A state advances: the leaver's leaf path moves to its next Decker-Wattenhofer state,
    // signed by the clients below the node that ticks; their channels move onto the new state's
    // outputs, and the exit below follows the new state.
    let t_adv = Instant::now();
    let leaver_pos = daemons[clients - 1].call("status", json!({}))?["factory"]["position"]
        .as_u64()
        .ok_or("position")?;
    let adv = lsp.call("advance", json!({ "factory": id, "client": leaver_pos }))?;
    pay(&daemons[clients - 1], &daemons[0], 1_000_000)?;
    println!(
        "  state advance: node {} to state {}, signed by {} clients in {:.2} s; their channels moved onto the new outputs, payment settled",
        adv["node"],
        adv["state"],
        adv["clients"],
        t_adv.elapsed().as_secs_f64()
    );

    // 7. The LSP sells the leaver inbound liquidity: a new channel from its leaf's stock, all on
    // the LSP's side, in the leaf's next state (signed like an advance, the new channel holding
    // its first commitment before that state is signed); a payment then arrives through it.
    let t_sale = Instant::now();
    let sale = lsp.call(
        "sell_liquidity",
        json!({ "factory": id, "client": leaver_pos, "amount_sat": SALE_SAT }),
    )?;
    let sale_time = t_sale.elapsed();
    pay(&daemons[0], &daemons[clients - 1], 20_000_000)?;
    let leaver_balance = daemons[clients - 1].call("balance", json!({}))?;
    let into_sold = leaver_balance["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["channel"] != "leaf"))
        .map_or(0, |c| c["balance_msat"].as_u64().unwrap_or(0));
    println!(
        "  liquidity sale: {} sat to client {} in {:.2} s ({} channel, leaf {} now at state {}); a payment of 20000 sat came in through it: {} sat there",
        SALE_SAT,
        clients - 1,
        sale_time.as_secs_f64(),
        sale["sold"]["channel"].as_str().unwrap_or("?"),
        sale["node"],
        sale["state"],
        into_sold / 1000
    );

    // 8. A client buys inbound liquidity itself: the LSP quotes its fee with an invoice, the
    // client pays it, and the LSP takes the fee only once the sale completed.
    let t_buy = Instant::now();
    let bought = daemons[0].call("buy_liquidity", json!({ "amount_sat": BUY_SAT }))?;
    if bought["status"] != "bought" {
        return Err(format!("the purchase did not complete: {bought}").into());
    }
    println!(
        "  client 0 bought {} sat of inbound liquidity for {} sat in {:.2} s ({} channel)",
        bought["amount_sat"],
        bought["fee_sat"],
        t_buy.elapsed().as_secs_f64(),
        bought["channel"].as_str().unwrap_or("?")
    );

    // Balances now, in the channels.
    let channels = lsp.call("channels", json!({}))?;
    println!();
    println!("  channel balances (sat)               client      LSP   capacity");
    let mut client_total = 0;
    for c in channels.as_array().ok_or("channels")? {
        client_total += c["client_balance_msat"].as_u64().unwrap_or(0);
        println!(
            "    client {:>2} {:<6} {:<18} {} {} {}",
            c["client"],
            c["channel"].as_str().unwrap_or_default(),
            &c["peer"].as_str().unwrap_or_default()[..16],
            sat(&c["client_balance_msat"]),
            sat(&c["lsp_balance_msat"]),
            sat(&c["capacity_msat"]),
        );
    }
    println!(
        "    clients hold {} sat in their channels",
        client_total / 1000
    );

    // 9. One client exits alone: its path of kickoffs and states goes on chain as delays pass.
    let t_exit = Instant::now();
    let leaver = &daemons[clients - 1];
    leaver.call("exit", json!({}))?;
    let exit = loop {
        let s = leaver.call("exit-status", json!({}))?;
        if s["done"] == true {
            break s;
        }
        if t_exit.elapsed() > Duration::from_secs(120) {
            return Err(format!("the exit did not finish: {s}").into());
        }
        chain.mine(1)?;
        std::thread::sleep(Duration::from_millis(300));
    };
    for t in exit["path"].as_array().ok_or("exit path")? {
        let txid: Txid = t["txid"].as_str().ok_or("txid")?.parse()?;
        rows.push(Row {
            what: format!(
                "exit of client {}: {}",
                clients - 1,
                t["kind"].as_str().unwrap_or("")
            ),
            tx: chain.tx(&txid)?,
        });
    }
    println!(
        "  client {} exited alone in {:.1} s ({} transactions)",
        clients - 1,
        t_exit.elapsed().as_secs_f64(),
        exit["path"].as_array().map_or(0, |p| p.len())
    );

    // Each client's payout script (its fee coin and timeout payouts go there).
    let mut payouts = std::collections::HashMap::new();
    for (i, d) in daemons.iter().enumerate() {
        if let Some(p) = d.call("status", json!({}))?["factory"]["payout"].as_str() {
            payouts.insert(p.to_owned(), i);
        }
    }
    let end_balances: Vec<u64> = {
        let b: Vec<Value> = channels.as_array().cloned().unwrap_or_default();
        let mut v = vec![0; clients];
        for c in b {
            if let Some(i) = c["client"].as_u64() {
                if let Some(slot) = v.get_mut(i as usize) {
                    *slot += c["client_balance_msat"].as_u64().unwrap_or(0) / 1000;
                }
            }
        }
        v
    };

    // 10. At the timeout every client publishes the pre-signed timeout payouts of what it holds.
    let timeout = daemons[0].call("status", json!({}))?["factory"]["timeout_height"]
        .as_u64()
        .ok_or("timeout height")?;
    let tip = chain.height()?;
    if tip + 1 < timeout {
        chain.mine((timeout - tip - 1) as u32)?;
    }
    let t_timeout = Instant::now();
    // Each client publishes the timeout transactions of the outputs holding its money that are
    // still unspent (one may pay several clients, published by whichever comes first): mine
    // until no new one appears and all are confirmed.
    let mut claims: Vec<(usize, Vec<String>)> = Vec::new();
    let mut quiet = 0;
    let mut known = 0;
    while quiet < 4 {
        if t_timeout.elapsed() > Duration::from_secs(120) {
            return Err("the timeout payouts did not settle".into());
        }
        chain.mine(1)?;
        std::thread::sleep(Duration::from_millis(400));
        claims.clear();
        for (i, d) in daemons.iter().enumerate() {
            let s = d.call("status", json!({}))?;
            let txids: Vec<String> = s["factory"]["timeout_claims"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            claims.push((i, txids));
        }
        let all: Vec<&String> = claims.iter().flat_map(|c| c.1.iter()).collect();
        let confirmed = all.iter().all(|t| {
            chain
                .rpc
                .call("getrawtransaction", &[json!(t), json!(true)])
                .map(|v| v["confirmations"].as_u64().unwrap_or(0) > 0)
                .unwrap_or(false)
        });
        if all.len() == known && confirmed && known > 0 {
            quiet += 1;
        } else {
            quiet = 0;
            known = all.len();
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, txids) in &claims {
        for t in txids {
            if seen.insert(t.clone()) {
                let txid: Txid = t.parse()?;
                rows.push(Row {
                    what: format!("timeout payout (published by client {i})"),
                    tx: chain.tx(&txid)?,
                });
            }
        }
    }
    println!(
        "  timeout T = {timeout}: {} timeout transactions confirmed in {:.1} s",
        seen.len(),
        t_timeout.elapsed().as_secs_f64()
    );

    // 11. The summary.
    println!();
    println!(
        "  on-chain transactions                                          vbytes      fee (sat)"
    );
    let mut total_vb = 0;
    let mut total_fee = Amount::ZERO;
    for r in &rows {
        let fee = chain.fee(&r.tx)?;
        total_vb += r.tx.vsize();
        total_fee += fee;
        println!(
            "    {:<58} {:>8} {:>12}",
            r.what,
            r.tx.vsize(),
            fee.to_sat()
        );
    }
    println!(
        "    {:<58} {:>8} {:>12}",
        "total",
        total_vb,
        total_fee.to_sat()
    );

    // Where the factory's money went: every output of its transactions on chain that no other
    // of them spends, by owner, and the fees; together they are the funding output.
    let funding_value = rows
        .first()
        .and_then(|r| {
            let f = factories
                .as_array()?
                .iter()
                .find(|f| f["id"] == json!(id))?;
            let vout: u32 = f["funding"].as_str()?.split(':').nth(1)?.parse().ok()?;
            r.tx.output.get(vout as usize).map(|o| o.value)
        })
        .ok_or("the funding output")?;
    let factory_rows = &rows[1..];
    let spent: std::collections::HashSet<bitcoin::OutPoint> = factory_rows
        .iter()
        .flat_map(|r| r.tx.input.iter().map(|i| i.previous_output))
        .collect();
    let mut to_client = vec![Amount::ZERO; clients];
    let mut unclaimed = Amount::ZERO;
    let mut factory_fees = Amount::ZERO;
    for r in factory_rows {
        factory_fees += chain.fee(&r.tx)?;
        let txid = r.tx.compute_txid();
        for (vout, o) in r.tx.output.iter().enumerate() {
            if spent.contains(&bitcoin::OutPoint::new(txid, vout as u32)) {
                continue;
            }
            match payouts.get(&o.script_pubkey.to_hex_string()) {
                Some(i) => to_client[*i] += o.value,
                None => unclaimed += o.value,
            }
        }
    }
    println!();
    println!("  balances (sat)         in channel before T     paid on chain at T");
    for (i, paid) in to_client.iter().enumerate() {
        println!(
            "    client {i:>2}          {:>14}       {:>14}",
            end_balances[i],
            paid.to_sat()
        );
    }
    let paid_total: Amount = to_client.iter().copied().sum();
    println!(
        "    the factory's {} sat: {} to the clients + {} in outputs not claimed by a client (anchors, the leaver's channel output) + {} in fees",
        funding_value.to_sat(),
        paid_total.to_sat(),
        unclaimed.to_sat(),
        factory_fees.to_sat()
    );
    if paid_total + unclaimed + factory_fees == funding_value {
        println!("    every sat accounted for");
    } else {
        return Err("the factory's outputs and fees do not add up to its funding".into());
    }
    println!(
        "    (under the inverted timeout policy a channel still open at T pays its client the whole capacity;"
    );
    println!(
        "     this LSP runs with --no-reclaim to show it; by default it takes such a factory on chain before T,"
    );
    println!(
        "     and a factory nobody exits from is rotated into a successor, or closed cooperatively, in its dying period:)"
    );

    // 12. A second factory of new clients, ended by a cooperative close: one transaction.
    let mut second = Vec::new();
    let closed = close_second_factory(&dir, &chain, &lsp, &uri, clients, &mut second);
    println!("  finished in {:.1} s", started.elapsed().as_secs_f64());
    stop_all(
        daemons
            .iter_mut()
            .chain(second.iter_mut())
            .chain([&mut lsp]),
    );
    closed
}

/// Clients of the second factory.
const SECOND_CLIENTS: usize = 3;

/// Step 12: `SECOND_CLIENTS` new clients join; the LSP forms their factory at once
/// (`create-factory`), pays one of them, they pay each other, and the LSP closes the factory
/// cooperatively; every balance is checked against the close's outputs.
fn close_second_factory(
    dir: &std::path::Path,
    chain: &ChainNode,
    lsp: &Daemon,
    uri: &str,
    first: usize,
    daemons: &mut Vec<Daemon>,
) -> DemoResult<()> {
    let t_second = Instant::now();
    for i in first..first + SECOND_CLIENTS {
        daemons.push(start_client(dir, i, chain, uri)?);
    }
    wait("the new clients waiting", Duration::from_secs(60), || {
        Ok(lsp.call("clients", json!({}))?["waiting"]
            .as_array()
            .map_or(0, |w| w.len())
            == SECOND_CLIENTS)
    })?;
    let id = lsp.call("create-factory", json!({}))?["factory"]
        .as_str()
        .ok_or("create-factory")?
        .to_owned();
    wait("the second factory signed", Duration::from_secs(60), || {
        Ok(lsp.call("factory", json!({ "id": id }))?["status"] == "signed")
    })?;
    chain.mine(1)?;
    for d in daemons.iter() {
        wait("every channel ready", Duration::from_secs(60), || {
            Ok(d.call("balance", json!({}))?["channel"]["ready"] == true)
        })?;
    }
    let pay = |payer: &Daemon, payee: &Daemon, msat: u64| -> DemoResult<()> {
        let inv = payee.call("invoice", json!({ "amount_msat": msat }))?;
        let bolt11 = inv["invoice"].as_str().ok_or("no invoice")?;
        let r = payer.call("pay", json!({ "invoice": bolt11 }))?;
        if r["status"] != "paid" {
            return Err(format!("payment not settled: {r}").into());
        }
        Ok(())
    };
    pay(lsp, &daemons[0], 80_000_000)?;
    pay(&daemons[0], &daemons[1], 30_000_500)?;
    pay(&daemons[1], &daemons[2], 12_345_678)?;
    let before: Vec<u64> = daemons
        .iter()
        .map(|d| {
            d.call("balance", json!({}))
                .map(|b| b["balance_msat"].as_u64().unwrap_or(0))
        })
        .collect::<DemoResult<_>>()?;
    // The factory rotates into its successor: one transaction closes it and funds the next,
    // and every balance moves there to the millisatoshi. (The last payment's commitment round
    // may still be finishing: the rotation waits for quiet channels.)
    let t_rotate = Instant::now();
    let rotation = loop {
        match lsp.call("rotate_factory", json!({ "factory": id })) {
            Ok(r) => break r,
            Err(e) if e.to_string().contains("under way") && t_rotate.elapsed().as_secs() < 30 => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    };
    let rotation_txid: Txid = rotation["txid"].as_str().ok_or("rotation txid")?.parse()?;
    let successor = rotation["successor"]["factory"]
        .as_str()
        .ok_or("no successor")?
        .to_owned();
    let height = chain.height()?;
    chain.mine(1)?;
    let block_txs = chain.block_txids(height + 1)?;
    for d in daemons.iter() {
        wait(
            "the clients in the successor",
            Duration::from_secs(60),
            || {
                let f = d.call("status", json!({}))?["factory"].clone();
                Ok(f["id"] == successor.as_str() && f["status"] == "live")
            },
        )?;
        wait("every channel ready again", Duration::from_secs(60), || {
            Ok(d.call("balance", json!({}))?["channel"]["ready"] == true)
        })?;
    }
    let after: Vec<u64> = daemons
        .iter()
        .map(|d| {
            d.call("balance", json!({}))
                .map(|b| b["balance_msat"].as_u64().unwrap_or(0))
        })
        .collect::<DemoResult<_>>()?;
    if after != before {
        return Err(format!("balances moved in the rotation: {before:?} -> {after:?}").into());
    }
    let rotation_tx = chain.tx(&rotation_txid)?;
    println!(
        "  second factory {} rotated into {} by {}: {} vB, {} sat of fee, one input; its block holds \
         {} transaction(s) besides the coinbase; every balance the same to the msat",
        &id[..16],
        &successor[..16],
        &rotation_txid.to_string()[..16],
        rotation_tx.vsize(),
        chain.fee(&rotation_tx)?.to_sat(),
        block_txs.len().saturating_sub(1),
    );
    let id = successor;
    let t_close = Instant::now();
    let close = loop {
        match lsp.call("close_factory", json!({ "factory": id })) {
            Ok(c) => break c,
            Err(e) if e.to_string().contains("under way") && t_close.elapsed().as_secs() < 30 => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    };
    let txid: Txid = close["txid"].as_str().ok_or("close txid")?.parse()?;
    chain.mine(1)?;
    for d in daemons.iter() {
        wait("the clients see it closed", Duration::from_secs(60), || {
            Ok(d.call("status", json!({}))?["factory"]["status"] == "closed")
        })?;
    }
    let tx = chain.tx(&txid)?;
    let fee = chain.fee(&tx)?;
    let funding: bitcoin::OutPoint = lsp.call("factory", json!({ "id": id }))?["funding"]
        .as_str()
        .ok_or("funding")?
        .parse()?;
    let funding_value = chain
        .tx(&funding.txid)?
        .output
        .get(funding.vout as usize)
        .map(|o| o.value)
        .ok_or("the funding output")?;
    println!(
        "  its successor {} of the same {SECOND_CLIENTS} clients: closed cooperatively by {} ({:.1} s from the first factory's formation)",
        &id[..16],
        &txid.to_string()[..16],
        t_second.elapsed().as_secs_f64()
    );
    println!(
        "    one key-path spend of the funding output: {} vB, {} sat of fee",
        tx.vsize(),
        fee.to_sat()
    );
    println!(
        "    balances (sat)       in channel       paid by the close (its balance + fee coin)"
    );
    let mut paid_total = Amount::ZERO;
    for (i, (d, owed)) in daemons.iter().zip(&before).enumerate() {
        let s = d.call("status", json!({}))?;
        let paid = s["close"]["amount_sat"].as_u64().unwrap_or(0);
        let out = s["close"]["output"].as_str().unwrap_or("");
        let vout: usize = out.rsplit(':').next().unwrap_or("").parse()?;
        let payout = s["factory"]["payout"].as_str().unwrap_or("");
        let o = tx.output.get(vout).ok_or("the client's output")?;
        if o.value.to_sat() != paid || o.script_pubkey.to_hex_string() != payout {
            return Err(format!("client {}'s output is not what it reports", first + i).into());
        }
        paid_total += o.value;
        println!(
            "    client {:>2}       {:>14}       {:>14}",
            first + i,
            owed / 1000,
            paid
        );
    }
    let lsp_sat = close["lsp_sat"].as_u64().unwrap_or(0);
    println!("    LSP                               {lsp_sat:>14}");
    if paid_total + Amount::from_sat(lsp_sat) + fee == funding_value {
        println!(
            "    the factory's {} sat: {} to the clients + {lsp_sat} to the LSP + {} in fee: every sat accounted for",
            funding_value.to_sat(),
            paid_total.to_sat(),
            fee.to_sat()
        );
        Ok(())
    } else {
        Err("the close's outputs and fee do not add up to the funding".into())
    }
}
