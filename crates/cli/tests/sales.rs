//! Liquidity sales between the daemons, as separate OS processes over loopback, driven only
//! through the `superscalar` CLI: `lsp sell-liquidity` gives a client a new channel from its
//! leaf's stock in the leaf's next state; payments to the buyer go through it; it follows later
//! advances and survives restarts of both sides; an exit closes it with the leaf channel; and a
//! sale abandoned in its ceremony leaves no channel behind.

use std::time::Duration;

use serde_json::Value;

mod common;

use common::*;

fn sold_msat(c: &Node) -> Option<u64> {
    balance(c)["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ch| ch["channel"] != "leaf")
        .map(|ch| ch["balance_msat"].as_u64().unwrap())
}

fn sell(lsp: &Node, factory: &str, client: u32, amount_sat: u64) -> Result<Value, String> {
    let (client, amount) = (client.to_string(), amount_sat.to_string());
    cli_with(
        "lsp",
        "sell-liquidity",
        lsp,
        &[factory, "--client", &client, "--amount-sat", &amount],
    )
}

fn lsp_pays(lsp: &Node, c: &Node, amount_msat: u64) {
    let inv = invoice(c, amount_msat);
    assert_eq!(
        cli_with("lsp", "pay", lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
}

/// A factory of `n` clients, live with every channel ready: (lsp, uri, mining address,
/// factory id).
fn factory_of(
    dir: &std::path::Path,
    chain: &Chaind,
    n: usize,
    fault: Option<&str>,
) -> (Node, String, String, String, Vec<Node>) {
    factory_with(dir, chain, n, fault, &["--no-passphrase"])
}

fn factory_with(
    dir: &std::path::Path,
    chain: &Chaind,
    n: usize,
    fault: Option<&str>,
    lsp_args: &[&str],
) -> (Node, String, String, String, Vec<Node>) {
    let (lsp, uri) = lsp(dir, chain, "127.0.0.1:0", n, lsp_args);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let clients: Vec<Node> = (0..n)
        .map(|i| match (i, fault) {
            (0, Some(f)) => client(dir, i, chain, &uri, &["--no-passphrase", "--fault", f]),
            _ => client(dir, i, chain, &uri, &["--no-passphrase"]),
        })
        .collect();
    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in &clients {
        wait_for("channel ready", Duration::from_secs(90), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    let factory = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (lsp, uri, address, factory, clients)
}

fn position(c: &Node) -> u32 {
    status("client", c)["factory"]["position"].as_u64().unwrap() as u32
}

#[test]
fn a_sold_channel_carries_payments_follows_advances_survives_restarts_and_closes_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (mut lsp, uri, address, factory, mut clients) = factory_of(dir.path(), &chain, 2, None);
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let buyer = clients.remove(0);
    let other = clients.remove(0);
    let pos = position(&buyer);
    lsp_pays(&lsp, &buyer, 30_000_000);

    // Bad requests are refused with a reason, and nothing is sold.
    let err = sell(&lsp, &factory, pos, 0).unwrap_err();
    assert!(err.contains("amount_sat"), "{err}");
    let err = sell(&lsp, &factory, pos, 1_000_000_000).unwrap_err();
    assert!(err.contains("stock"), "{err}");
    let err = sell(&lsp, &factory, 7, 10_000).unwrap_err();
    assert!(err.contains("2 clients"), "{err}");
    let err = sell(&lsp, &"00".repeat(32), pos, 10_000).unwrap_err();
    assert!(err.contains("no live factory"), "{err}");
    assert_eq!(sold_msat(&buyer), None);
    assert!(status("lsp", &lsp)["updating"].is_null());

    // The sale: a new channel of 50,000 sat, all on the LSP's side.
    let sold = sell(&lsp, &factory, pos, 50_000).unwrap();
    assert_eq!(sold["sold"]["amount_sat"], 50_000, "{sold}");
    assert_eq!(sold["sold"]["channel"], "sold/0", "{sold}");
    assert_eq!(sold_msat(&buyer), Some(0));
    let b = balance(&buyer);
    assert_eq!(b["channels"].as_array().unwrap().len(), 2, "{b}");
    assert_eq!(b["balance_msat"], 30_000_000u64, "{b}");

    // A payment that fits goes into the sold channel (the smaller room), and one the sold
    // channel cannot take into the leaf channel.
    lsp_pays(&lsp, &buyer, 20_000_000);
    assert_eq!(sold_msat(&buyer), Some(20_000_000));
    lsp_pays(&lsp, &buyer, 40_000_000);
    assert_eq!(sold_msat(&buyer), Some(20_000_000));
    assert_eq!(balance(&buyer)["balance_msat"], 90_000_000u64);
    // The buyer pays out of it too.
    let inv = invoice(&other, 15_000_000);
    assert_eq!(
        cli_with("client", "pay", &buyer, &[&inv]).unwrap()["status"],
        "paid"
    );
    assert_eq!(balance(&buyer)["balance_msat"], 75_000_000u64);

    // An advance of the leaf moves the sold channel too (dual state), and it keeps working.
    advance_ok(&lsp, &factory, pos);
    lsp_pays(&lsp, &buyer, 1_000_000);
    assert_eq!(balance(&buyer)["balance_msat"], 76_000_000u64);

    // The LSP is killed and restarted from its database: three channels, balances intact.
    lsp.proc.take().unwrap().sigkill();
    let (lsp2, uri2) = self::lsp(dir.path(), &chain, &listen, 2, &["--no-passphrase"]);
    assert_eq!(uri2, uri);
    lsp = lsp2;
    for c in [&buyer, &other] {
        wait_for("reconnected", Duration::from_secs(60), || {
            status("client", c)["connected"] == true
        });
    }
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    assert_eq!(channels.as_array().unwrap().len(), 3, "{channels}");
    for c in channels.as_array().unwrap() {
        assert_eq!(
            c["lsp_balance_msat"].as_u64().unwrap() + c["client_balance_msat"].as_u64().unwrap(),
            c["capacity_msat"].as_u64().unwrap(),
            "{c}"
        );
    }
    let sold_before = sold_msat(&buyer).unwrap();
    lsp_pays(&lsp, &buyer, 2_000_000);
    assert_eq!(balance(&buyer)["balance_msat"], 78_000_000u64);

    // The buyer restarts from its database: both channels are back.
    cli("client", "stop", &buyer.datadir, &buyer.api).unwrap();
    let mut buyer = buyer;
    if let Some(p) = buyer.proc.take() {
        p.wait();
    }
    let buyer = client_in(&buyer.datadir, &chain, &uri, &["--no-passphrase"]);
    wait_for("reconnected", Duration::from_secs(60), || {
        status("client", &buyer)["connected"] == true
    });
    assert_eq!(balance(&buyer)["balance_msat"], 78_000_000u64);
    assert!(sold_msat(&buyer).unwrap() >= sold_before);

    // The buyer exits alone: its path, then the latest commitment of each channel (the second
    // paid with the change of the first's fee), then each balance.
    cli("client", "exit", &buyer.datadir, &buyer.api).unwrap();
    let start = std::time::Instant::now();
    loop {
        let s = cli("client", "exit-status", &buyer.datadir, &buyer.api).unwrap();
        if s["channel_closed"] == true && s["done"] == true {
            let log = s["log"].to_string();
            assert!(log.contains("leaf channel closed"), "{s}");
            assert!(log.contains("sold/0 channel closed"), "{s}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "exit stuck: {s}"
        );
        chain.mine(if s["done"] == true { 3 } else { 1 }, &address);
        std::thread::sleep(Duration::from_millis(400));
    }
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in [&buyer, &other] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}

fn advance_ok(lsp: &Node, factory: &str, client: u32) {
    let client = client.to_string();
    let done = cli_with("lsp", "advance", lsp, &[factory, "--client", &client]).unwrap();
    assert!(done["state"].as_u64().is_some(), "{done}");
}

#[test]
fn a_sale_abandoned_in_its_ceremony_leaves_no_channel_and_the_next_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    // The buyer takes the second stage's aggregated nonces of any update and never answers.
    let (lsp, uri, _address, factory, mut clients) =
        factory_of(dir.path(), &chain, 2, Some("stall-update"));
    let mut buyer = clients.remove(0);
    let other = clients.remove(0);
    let pos = position(&buyer);

    let bg = std::process::Command::new(BIN)
        .args([
            "lsp",
            "sell-liquidity",
            &factory,
            "--client",
            &pos.to_string(),
            "--amount-sat",
            "40000",
            "--api",
            &lsp.api,
            "--datadir",
        ])
        .arg(&lsp.datadir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "stage 2 waiting for the buyer",
        Duration::from_secs(60),
        || {
            let u = &status("lsp", &lsp)["updating"];
            u["stage"] == 2
                && u["waiting_for"]
                    .as_array()
                    .is_some_and(|w| w.contains(&pos.into()))
        },
    );
    // The sold channel was opened on the new state's output before that state is signed.
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    let sold: Vec<&Value> = channels
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["channel"] == "sold/0")
        .collect();
    assert_eq!(sold.len(), 1, "{channels}");
    assert_eq!(sold[0]["usable"], false, "{channels}");
    buyer.proc.take().unwrap().sigkill();
    let out = bg.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("abandoned"), "{err}");
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    assert_eq!(channels.as_array().unwrap().len(), 2, "{channels}");

    // The buyer comes back (without the fault): no sold channel; the next sale of the same
    // index opens one that carries a payment.
    let buyer = client_in(&buyer.datadir, &chain, &uri, &["--no-passphrase"]);
    wait_for("reconnected", Duration::from_secs(60), || {
        status("client", &buyer)["connected"] == true
    });
    assert_eq!(balance(&buyer)["channels"].as_array().unwrap().len(), 1);
    let sold = sell(&lsp, &factory, pos, 40_000).unwrap();
    assert_eq!(sold["sold"]["channel"], "sold/0", "{sold}");
    lsp_pays(&lsp, &buyer, 10_000_000);
    assert_eq!(sold_msat(&buyer), Some(10_000_000));
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in [&buyer, &other] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}

fn buy(c: &Node, amount_sat: u64, max_fee_sat: Option<u64>) -> Result<Value, String> {
    let amount = amount_sat.to_string();
    let mut args = vec!["--amount-sat", &amount];
    let max = max_fee_sat.map(|m| m.to_string());
    if let Some(m) = max.as_deref() {
        args.extend(["--max-fee-sat", m]);
    }
    cli_with("client", "buy-liquidity", c, &args)
}

#[test]
fn a_client_buys_liquidity_and_its_fee_is_taken_only_when_the_sale_completes() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (mut lsp, uri, _address, _factory, mut clients) = factory_with(
        dir.path(),
        &chain,
        2,
        None,
        &[
            "--no-passphrase",
            "--liquidity-fee-ppm",
            "20000",
            "--liquidity-fee-min-sat",
            "500",
            "--liquidity-patience-secs",
            "8",
        ],
    );
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let buyer = clients.remove(0);
    let mut other = clients.remove(0);
    lsp_pays(&lsp, &buyer, 30_000_000);

    // Refused, and nothing paid: a fee above our limit, an amount the stock cannot pay, a
    // zero amount.
    let err = buy(&buyer, 50_000, Some(999)).unwrap_err();
    assert!(err.contains("more than our limit"), "{err}");
    let err = buy(&buyer, 1_000_000_000, None).unwrap_err();
    assert!(err.contains("the LSP refused"), "{err}");
    let err = buy(&buyer, 0, None).unwrap_err();
    assert!(err.contains("amount_sat"), "{err}");
    assert_eq!(balance_msat(&buyer), 30_000_000);
    assert_eq!(sold_msat(&buyer), None);

    // Bought: 2% of 50,000 sat is 1,000 sat, paid once the channel is sold.
    let bought = buy(&buyer, 50_000, None).unwrap();
    assert_eq!(bought["status"], "bought", "{bought}");
    assert_eq!(bought["fee_sat"], 1_000, "{bought}");
    assert_eq!(bought["channel"], "sold/0", "{bought}");
    assert_eq!(balance_msat(&buyer), 29_000_000);
    lsp_pays(&lsp, &buyer, 20_000_000);
    assert_eq!(sold_msat(&buyer), Some(20_000_000));
    assert!(status("lsp", &lsp)["liquidity_orders"]
        .as_array()
        .unwrap()
        .is_empty());

    // The other client of the leaf is away: the sale cannot be made, and after the LSP's
    // patience the fee is failed back.
    cli("client", "stop", &other.datadir, &other.api).unwrap();
    if let Some(p) = other.proc.take() {
        p.wait();
    }
    let err = buy(&buyer, 30_000, None).unwrap_err();
    assert!(err.contains("its fee was not taken"), "{err}");
    assert_eq!(balance_msat(&buyer), 49_000_000);
    assert_eq!(balance(&buyer)["channels"].as_array().unwrap().len(), 2);

    // Paid while the other client is away, the LSP is killed holding the fee; it comes back,
    // the other client too, and the sale completes: the fee is taken.
    let bg = std::process::Command::new(BIN)
        .args([
            "client",
            "buy-liquidity",
            "--amount-sat",
            "30000",
            "--api",
            &buyer.api,
            "--datadir",
        ])
        .arg(&buyer.datadir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut bg = Some(bg);
    wait_for("the fee held", Duration::from_secs(60), || {
        if let Some(Ok(Some(_))) = bg.as_mut().map(|b| b.try_wait()) {
            let out = bg.take().unwrap().wait_with_output().unwrap();
            panic!(
                "the purchase ended: {} {} / {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                status("lsp", &lsp)["events"]
            );
        }
        status("lsp", &lsp)["liquidity_orders"]
            .as_array()
            .is_some_and(|o| o.len() == 1)
    });
    let bg = bg.unwrap();
    lsp.proc.take().unwrap().sigkill();
    let (lsp2, _) = self::lsp(
        dir.path(),
        &chain,
        &listen,
        2,
        &["--no-passphrase", "--liquidity-patience-secs", "60"],
    );
    lsp = lsp2;
    let other = client_in(&other.datadir, &chain, &uri, &["--no-passphrase"]);
    let out = bg.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the second sold channel", Duration::from_secs(60), || {
        balance(&buyer)["channels"].as_array().unwrap().len() == 3
    });
    wait_for("the fee taken", Duration::from_secs(60), || {
        balance_msat(&buyer) == 48_400_000
    });
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    assert_eq!(channels.as_array().unwrap().len(), 4, "{channels}");
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in [&buyer, &other] {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
}
