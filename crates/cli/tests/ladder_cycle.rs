//! The ladder through whole cycles, between the daemons as separate OS processes over
//! loopback: factories form a rung apart, one client each; every factory rotates by itself in
//! its dying period (the LSP proposes it), each rotation one transaction with one input; every
//! client ends, cycle after cycle, in a new factory with exactly its balance. One client stays
//! away: its factory, shared with a partner, cannot rotate, so the partner migrates into a new
//! factory (an off-chain payment) with exactly its balance; the LSP takes the old factory on
//! chain with every commitment confirmed before T and sweeps its share, and the away client,
//! back, claims its balance alone.
//!
//! The default run has 6 rungs; the scale run, 33 (`cargo test -p superscalar-cli --test
//! ladder_cycle -- --ignored`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::*;

/// `lsp status` shows nothing being signed or formed, and every dying factory's rotation
/// proposed at this block (or its close signed).
fn idle(lsp: &Node) -> bool {
    let s = status("lsp", lsp);
    let tip = &s["tip"];
    s["closing"].is_null()
        && s["rotating"].is_null()
        && s["forming"].is_null()
        && s["dying"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["close_signed"] == true || d["proposed_at"] == *tip)
}

fn factories(lsp: &Node) -> Vec<Value> {
    cli("lsp", "factories", &lsp.datadir, &lsp.api)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn run_ladder(rungs: u32) {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    // A rung of 2 blocks or more. The active period leaves room for the channels to open (T
    // less a worst-case exit), the dying period for the rotation before the reclaim height (T
    // less a worst-case exit and a confirmation budget) and for a migration payment (its HTLC
    // expires before T less a margin, after the new channel's final delta and two forwarding
    // deltas, after the old channel's latest expiry, its factory's timeout less its exit time
    // and margin): 120 blocks.
    let active = (rungs * 2).max(60);
    let active_arg = active.to_string();
    let rungs_arg = rungs.to_string();
    let (lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        1,
        &[
            "--no-passphrase",
            "--ladder-size",
            &rungs_arg,
            "--active-blocks",
            &active_arg,
            "--dying-blocks",
            "120",
            "--max-clients",
            "2",
        ],
    );
    let rung = u64::from(active / rungs);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110 + rungs, &address);

    // One client a rung, but two in the second (the away client and its partner); each gets an
    // odd amount once its channel is ready.
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut expected = Vec::new();
    let mut partner = None;
    for i in 0..rungs as usize {
        let next = status("lsp", &lsp)["ladder"]["next_rung_height"]
            .as_u64()
            .unwrap();
        let now = tip(&chain);
        let mut joining = Vec::new();
        if i == 1 {
            // Both wait before the rung: a full factory forms at once.
            assert!(next > now, "the second rung at {next}, the tip at {now}");
            chain.mine((next - now - 1) as u32, &address);
            joining.push(client(dir.path(), i, &chain, &uri, &["--no-passphrase"]));
            joining.push(client(
                dir.path(),
                rungs as usize,
                &chain,
                &uri,
                &["--no-passphrase"],
            ));
            wait_for("both waiting", Duration::from_secs(60), || {
                status("lsp", &lsp)["waiting"] == 2 || factories(&lsp).len() > i
            });
        } else {
            if next > now {
                chain.mine((next - now) as u32, &address);
            }
            joining.push(client(dir.path(), i, &chain, &uri, &["--no-passphrase"]));
        }
        // Signed (its funding broadcast), not only recorded.
        wait_for("the rung's factory", Duration::from_secs(120), || {
            factories(&lsp)
                .iter()
                .filter(|f| f["status"] != "aborted" && f["status"] != "forming")
                .count()
                == i + 1
        });
        chain.mine(1, &address);
        for (j, c) in joining.into_iter().enumerate() {
            wait_for("channel ready", Duration::from_secs(120), || {
                balance(&c)["channel"]["ready"] == true
            });
            let amount = 1_000_000 + 7_777 * i as u64 + 1 + 1_000 * j as u64;
            let inv = invoice(&c, amount);
            assert_eq!(
                cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
                "paid"
            );
            if j == 0 {
                expected.push(amount);
                clients.push(c);
            } else {
                partner = Some((c, amount));
            }
        }
    }
    let (partner, partner_amount) = partner.unwrap();
    assert_eq!(
        status("client", &partner)["factory"]["id"],
        status("client", &clients[1])["factory"]["id"],
        "the partner shares the away client's factory"
    );
    expected.push(partner_amount);
    clients.push(partner);
    let formed = started.elapsed();
    let first_ids: BTreeSet<String> = factories(&lsp)
        .iter()
        .filter(|f| f["status"] != "aborted")
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(first_ids.len(), rungs as usize);

    // From here one client stays away through its factory's dying period: its factory cannot
    // rotate, so the LSP takes it on chain before T; the client recovers its balance alone.
    let away = clients.remove(1);
    expected.remove(1);
    let away_factory = status("client", &away)["factory"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let away_dir = stop_client(away);

    // Two full cycles (a factory rotates at the start of its dying period, so its successor a
    // whole active period later), a block at a time, each once the LSP has nothing under way.
    let start = tip(&chain);
    let end = start + 2 * u64::from(active) + 2 * rung;
    let cycling = Instant::now();
    let mine_idle = |n: u64| {
        for _ in 0..n {
            wait_for("the LSP idle", Duration::from_secs(120), || idle(&lsp));
            chain.mine(1, &address);
            // While the LSP takes the away client's factory on chain, it steps once a block at
            // each one-second tick: blocks come no faster than that (on a real chain they come
            // every ten minutes).
            if cli_factory(&lsp, &away_factory)["status"] == "closing" {
                std::thread::sleep(Duration::from_millis(1_100));
            }
            // Likewise while the partner migrates (a new factory, its channel, a payment).
            let migrating = status("lsp", &lsp)["dying"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| !d["migrating"].as_array().unwrap().is_empty());
            if migrating {
                std::thread::sleep(Duration::from_millis(2_000));
            }
        }
        wait_for("the LSP idle", Duration::from_secs(120), || idle(&lsp));
    };
    mine_idle(end - start);
    let cycled = cycling.elapsed();
    // The away client's factory: reclaimed by the LSP, every commitment confirmed before T.
    let mut extra = 0;
    while cli_factory(&lsp, &away_factory)["status"] != "closed" {
        assert!(extra < 300, "{}", cli_factory(&lsp, &away_factory));
        mine_idle(5);
        extra += 5;
    }
    let detail = cli_factory(&lsp, &away_factory);
    let t = detail["timeout_height"].as_u64().unwrap();
    for r in detail["reclaim"]["channels"].as_array().unwrap() {
        let height = confirmed_at(&chain, r["commitment"].as_str().unwrap());
        assert!(
            height < t,
            "the LSP's commitment confirmed at {height}, T {t}"
        );
        assert!(r["swept_sat"].as_u64().unwrap() > 0, "{detail}");
    }

    // Every other factory that closed was rotated: one transaction with one input, its funding
    // output, whose output 0 funds its successor.
    let all = factories(&lsp);
    let by_funding: BTreeMap<String, String> = all
        .iter()
        .filter(|f| f["status"] != "aborted")
        .filter_map(|f| {
            Some((
                f["funding"].as_str()?.to_owned(),
                f["id"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut rotated_from = BTreeSet::new();
    for (funding, id) in &by_funding {
        let (txid, vout) = funding.split_once(':').unwrap();
        let tx = chain
            .rpc
            .call("getrawtransaction", &[json!(txid), json!(true)])
            .unwrap();
        let vin = tx["vin"].as_array().unwrap();
        let spent = format!(
            "{}:{}",
            vin[0]["txid"].as_str().unwrap_or_default(),
            vin[0]["vout"]
        );
        if let Some(old) = by_funding.get(&spent) {
            assert_eq!(vin.len(), 1, "the rotation of {old} into {id}: {tx}");
            assert_eq!(vout, "0");
            rotated_from.insert(old.clone());
        }
    }
    let closed: BTreeSet<String> = all
        .iter()
        .filter(|f| f["status"] == "closed")
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(closed.contains(&away_factory));
    assert!(!rotated_from.contains(&away_factory));
    for id in closed.iter().filter(|id| **id != away_factory) {
        assert!(rotated_from.contains(id), "{id} closed without a rotation");
    }
    assert!(
        rotated_from.len() >= 2 * (rungs as usize - 1),
        "{} rotations of {} rungs over two cycles",
        rotated_from.len(),
        rungs - 1
    );
    // Every present client is in a factory of the ladder that is not one of the first, with
    // exactly its balance.
    for (i, c) in clients.iter().enumerate() {
        wait_for("its factory live", Duration::from_secs(60), || {
            let f = status("client", c)["factory"].clone();
            f["status"] == "live" && !first_ids.contains(f["id"].as_str().unwrap())
        });
        wait_for("channel ready", Duration::from_secs(60), || {
            balance(c)["channel"]["ready"] == true
        });
        assert_eq!(balance_msat(c), expected[i], "client {i}");
    }
    // The away client, back, claims its balance from the LSP's commitment by itself.
    let back = client_in(&away_dir, &chain, &uri, &["--no-passphrase"]);
    wait_for("the away client's claim", Duration::from_secs(120), || {
        chain.mine(1, &address);
        status("client", &back)["events"]
            .to_string()
            .contains("in the LSP's commitment")
    });
    let rungs = clients.len() as u32 - 1;
    // Payments go on between the two clients whose factories are furthest from dying (the
    // LSP may be rotating another one right now).
    let mut by_dying: Vec<(u64, usize)> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = status("client", c)["factory"].clone();
            (f["dying_height"].as_u64().unwrap(), i)
        })
        .collect();
    by_dying.sort();
    let n = by_dying.len();
    let (payer, payee) = (by_dying[n - 1].1, by_dying[n - 2].1);
    // Either may have just rolled into a successor whose channel opens at its confirmation.
    let ready = |c: &Node| balance(c)["channel"]["ready"] == true;
    let mut waited = 0;
    while !(ready(&clients[payer]) && ready(&clients[payee])) {
        assert!(waited < 20, "{}", status("client", &clients[payer]));
        mine_idle(1);
        std::thread::sleep(Duration::from_millis(500));
        waited += 1;
    }
    assert!(by_dying[n - 2].0 > tip(&chain) + 1);
    let inv = invoice(&clients[payee], 3_333);
    assert_eq!(
        cli_with("client", "pay", &clients[payer], &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance_msat(&clients[payee]), expected[payee] + 3_333);
    eprintln!(
        "ladder of {} rungs: formed in {:.1} s; {} rotations over {} blocks in {:.1} s",
        rungs + 1,
        formed.as_secs_f64(),
        rotated_from.len(),
        end - start,
        cycled.as_secs_f64()
    );
}

#[test]
fn a_ladder_of_6_rotates_every_factory_through_two_cycles() {
    run_ladder(6);
}

#[test]
#[ignore = "scale run: 33 client processes, a few minutes"]
fn a_ladder_of_33_rotates_every_factory_through_two_cycles() {
    run_ladder(33);
}
