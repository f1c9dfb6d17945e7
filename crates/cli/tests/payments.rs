//! Payments between clients of one LSP, as separate OS processes over loopback, driven only
//! through the `superscalar` CLI: once the factory is live each client's leaf channel opens;
//! the LSP issues invoices for its clients' payment hashes; the LSP pays one client (as a
//! payment arriving from elsewhere would), clients pay each other through it, bad invoices are
//! refused with a clear message, and every balance survives a SIGKILL of the LSP and a restart
//! of a client.

use std::time::Duration;

use serde_json::Value;

mod common;

use common::*;

fn balance(c: &Node) -> Value {
    cli("client", "balance", &c.datadir, &c.api).unwrap()
}

fn msat(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn invoice(c: &Node, amount_msat: u64) -> String {
    let amount = amount_msat.to_string();
    let v = cli_with(
        "client",
        "invoice",
        c,
        &["--amount-msat", &amount, "--description", "test"],
    )
    .unwrap();
    v["invoice"].as_str().unwrap().to_owned()
}

fn pay(role: &str, payer: &Node, invoice: &str) -> Result<Value, String> {
    cli_with(role, "pay", payer, &[invoice])
}

/// An invoice signed by a node that is not the LSP.
fn stranger_invoice(network: bitcoin::Network) -> String {
    let key = bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap();
    superscalar_wire::invoice::issue(
        network,
        superscalar_wire::invoice::key_signer(&key),
        &superscalar_wire::invoice::InvoiceTerms {
            payment_hash: [1; 32],
            amount_msat: Some(1_000),
            description: String::new(),
            expiry_secs: 3600,
            min_final_cltv_expiry_delta: 80,
        },
    )
    .unwrap()
}

#[test]
fn clients_pay_each_other_through_the_lsp_and_balances_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    // Encrypted seeds, so that the scan at the end means something.
    let (mut lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 3, &[]);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let mut clients: Vec<Node> = (0..3)
        .map(|i| client(dir.path(), i, &chain, &uri, &[]))
        .collect();

    // No channel before the factory is live: invoices are refused with a reason.
    let early = cli_with("client", "invoice", &clients[0], &["--amount-msat", "1000"]);
    assert!(early.is_err());

    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in &clients {
        wait_for(
            "the client's channel ready",
            Duration::from_secs(90),
            || balance(c)["channel"]["ready"] == true,
        );
        let b = balance(c);
        assert_eq!(msat(&b, "balance_msat"), 0, "{b}");
    }
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    assert_eq!(channels.as_array().unwrap().len(), 3, "{channels}");

    // The LSP pays client 0 (what a payment from elsewhere looks like to the client).
    let inv = invoice(&clients[0], 40_000_000);
    let paid = pay("lsp", &lsp, &inv).unwrap();
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(msat(&balance(&clients[0]), "balance_msat"), 40_000_000);

    // Client 0 pays client 1 through the LSP.
    let inv = invoice(&clients[1], 15_000_000);
    let paid = pay("client", &clients[0], &inv).unwrap();
    assert_eq!(paid["status"], "paid", "{paid}");
    let preimage = paid["preimage"].as_str().unwrap().to_owned();
    assert_eq!(preimage.len(), 64);
    assert_eq!(msat(&balance(&clients[0]), "balance_msat"), 25_000_000);
    assert_eq!(msat(&balance(&clients[1]), "balance_msat"), 15_000_000);

    // Refusals, each with a message and nothing changed.
    let again = pay("client", &clients[0], &inv).unwrap_err();
    assert!(again.contains("already paid"), "{again}");
    let garbage = pay("client", &clients[0], "lnbcrt1notaninvoice").unwrap_err();
    assert!(garbage.contains("invoice"), "{garbage}");
    let too_much = invoice(&clients[2], 90_000_000);
    let refused = pay("client", &clients[0], &too_much).unwrap_err();
    assert!(refused.contains("sendable"), "{refused}");
    let own = invoice(&clients[0], 1_000);
    let refused = pay("client", &clients[0], &own).unwrap_err();
    assert!(refused.contains("our own invoice"), "{refused}");
    // An invoice for another network, and one the LSP did not issue for one of its clients.
    let foreign = stranger_invoice(bitcoin::Network::Bitcoin);
    let refused = pay("client", &clients[0], &foreign).unwrap_err();
    assert!(refused.contains("is for"), "{refused}");
    let stranger = stranger_invoice(bitcoin::Network::Regtest);
    let refused = pay("client", &clients[0], &stranger).unwrap_err();
    assert!(refused.contains("through our LSP"), "{refused}");
    let refused = pay("lsp", &lsp, &stranger).unwrap_err();
    assert!(refused.contains("did not issue"), "{refused}");
    // Hostile invoice parameters.
    for (args, expected) in [
        (vec!["--amount-msat", "0"], "amount_msat"),
        (vec!["--expiry-secs", "5"], "expiry_secs"),
        (vec!["--expiry-secs", "99999999999"], "expiry-secs"),
        (vec!["--amount-msat=-5"], "amount-msat"),
    ] {
        let err = cli_with("client", "invoice", &clients[0], &args).unwrap_err();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let long = "x".repeat(640);
    let err = cli_with("client", "invoice", &clients[0], &["--description", &long]).unwrap_err();
    assert!(err.contains("639"), "{err}");
    assert_eq!(msat(&balance(&clients[0]), "balance_msat"), 25_000_000);

    // Several payments back and forth.
    for i in 0..5u64 {
        let inv = invoice(&clients[2], 1_000_000 + i);
        assert_eq!(pay("client", &clients[1], &inv).unwrap()["status"], "paid");
        let inv = invoice(&clients[1], 500_000);
        assert_eq!(pay("client", &clients[2], &inv).unwrap()["status"], "paid");
    }
    let b1 = msat(&balance(&clients[1]), "balance_msat");
    let b2 = msat(&balance(&clients[2]), "balance_msat");
    assert_eq!(b1, 15_000_000 - 5_000_010 + 2_500_000);
    assert_eq!(b2, 5_000_010 - 2_500_000);

    // The LSP is killed and restarted from its database: the channels come back as they were.
    lsp.proc.take().unwrap().sigkill();
    let (lsp, uri2) = self::lsp(dir.path(), &chain, &listen, 3, &[]);
    assert_eq!(uri2, uri);
    for c in &clients {
        wait_for("reconnected", Duration::from_secs(60), || {
            status("client", c)["connected"] == true
        });
    }
    let inv = invoice(&clients[1], 3_000_000);
    let paid = pay("client", &clients[0], &inv).unwrap();
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(msat(&balance(&clients[0]), "balance_msat"), 22_000_000);

    // Client 0 stops and starts again from its database.
    cli("client", "stop", &clients[0].datadir, &clients[0].api).unwrap();
    let c0 = clients.remove(0);
    let mut proc = c0.proc;
    if let Some(p) = proc.take() {
        p.wait();
    }
    let c0 = client_in(&c0.datadir, &chain, &uri, &[]);
    assert_eq!(msat(&balance(&c0), "balance_msat"), 22_000_000);
    wait_for("reconnected", Duration::from_secs(60), || {
        status("client", &c0)["connected"] == true
    });
    let inv = invoice(&clients[1], 2_000_000);
    assert_eq!(pay("client", &c0, &inv).unwrap()["status"], "paid");
    assert_eq!(msat(&balance(&c0), "balance_msat"), 20_000_000);

    // Every channel's balances add up to its capacity, on both sides.
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    let mut client_total = 0;
    for c in channels.as_array().unwrap() {
        assert_eq!(
            msat(c, "lsp_balance_msat") + msat(c, "client_balance_msat"),
            msat(c, "capacity_msat"),
            "{c}"
        );
        assert_eq!(c["htlcs"], 0, "{c}");
        client_total += msat(c, "client_balance_msat");
    }
    assert_eq!(client_total, 40_000_000, "only the LSP's payment came in");

    // Client 0 exits alone: its path, then its latest commitment (paid for with its fee coin),
    // then after to_self_delay its balance to its payout script.
    // `exit --wait` follows it to the end while blocks come.
    let waiter = std::process::Command::new(BIN)
        .args([
            "client",
            "exit",
            "--wait",
            "--json",
            "--api",
            &c0.api,
            "--datadir",
        ])
        .arg(&c0.datadir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiter = waiter;
    let start = std::time::Instant::now();
    let out = loop {
        if waiter.try_wait().unwrap().is_some() {
            let out = waiter.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            break out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "exit --wait stuck"
        );
        let s = cli("client", "exit-status", &c0.datadir, &c0.api).unwrap();
        let n = if s["done"] == true { 6 } else { 1 };
        chain.mine(n, &address);
        std::thread::sleep(Duration::from_millis(400));
    };
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["channel_closed"], true, "{s}");
    assert!(s["log"].to_string().contains("latest commitment"), "{s}");

    // No secret of any node in any file of its data directory (channels, invoices and all).
    cli("lsp", "stop", &lsp.datadir, &lsp.api).unwrap();
    for c in clients.iter().chain([&c0]) {
        cli("client", "stop", &c.datadir, &c.api).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    for node in clients.iter().chain([&c0, &lsp]) {
        assert_no_secret_in(&node.datadir, &secrets_of(&node.datadir));
    }
    // The scan finds a channel secret written raw or in hex.
    let secrets = secrets_of(&lsp.datadir);
    let (what, secret) = secrets
        .iter()
        .find(|(w, _)| w.starts_with("channel htlc secret 0/1"))
        .unwrap();
    for (i, bytes) in [
        [&b"x"[..], secret, b"y"].concat(),
        format!(
            "..{}..",
            bitcoin::hex::DisplayHex::to_upper_hex_string(&secret[..])
        )
        .into_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        let probe = tempfile::tempdir().unwrap();
        for f in ["a", "b", "c"] {
            std::fs::write(probe.path().join(f), &bytes).unwrap();
        }
        let found = std::panic::catch_unwind(|| assert_no_secret_in(probe.path(), &secrets));
        assert!(found.is_err(), "{what} planted ({i}) not found");
    }
}

#[test]
fn thirty_two_clients_form_a_factory_without_the_one_killed_in_the_ceremony_and_pay_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        32,
        &["--no-passphrase", "--max-clients", "32"],
    );
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    // The first ceremony takes the victim, which stops after its nonces and is SIGKILLed there.
    let victim = client(
        dir.path(),
        99,
        &chain,
        &uri,
        &["--no-passphrase", "--fault", "stall-before-partials"],
    );
    wait_for("the victim waiting", Duration::from_secs(60), || {
        status("lsp", &lsp)["waiting"] == 1
    });
    let mut clients: Vec<Node> = (0..31)
        .map(|i| client(dir.path(), i, &chain, &uri, &["--no-passphrase"]))
        .collect();
    wait_for(
        "the ceremony waiting for the victim",
        Duration::from_secs(120),
        || {
            let s = status("lsp", &lsp);
            s["forming"]["phase"] == "Partials" && s["forming"]["members"] == 32
        },
    );
    let victim_id = victim.id.clone();
    let _ = victim.proc.map(Proc::sigkill);
    clients.push(client(dir.path(), 31, &chain, &uri, &["--no-passphrase"]));
    wait_for("a signed factory of 32", Duration::from_secs(180), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    let factories = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap();
    let id = factories
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["status"] == "signed" || f["status"] == "live")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = members(&cli_factory(&lsp, &id));
    assert_eq!(members.len(), 32);
    assert!(
        !members.contains(&victim_id),
        "the killed client is not in it"
    );
    chain.mine(1, &address);
    for c in &clients {
        wait_for("every channel ready", Duration::from_secs(180), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    // The LSP pays half of them; then each pays the next one, around the ring.
    for c in &clients[..16] {
        let inv = invoice(c, 20_000_000);
        assert_eq!(pay("lsp", &lsp, &inv).unwrap()["status"], "paid");
    }
    for i in 0..32 {
        let (payer, payee) = (&clients[i], &clients[(i + 1) % 32]);
        if msat(&balance(payer), "sendable_msat") >= 3_000_000 {
            let inv = invoice(payee, 3_000_000);
            assert_eq!(pay("client", payer, &inv).unwrap()["status"], "paid");
        }
    }
    let total: u64 = clients
        .iter()
        .map(|c| msat(&balance(c), "balance_msat"))
        .sum();
    assert_eq!(
        total,
        16 * 20_000_000,
        "payments between clients create no money"
    );
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    assert_eq!(channels.as_array().unwrap().len(), 32);
    for c in channels.as_array().unwrap() {
        assert_eq!(c["htlcs"], 0, "{c}");
    }
}

#[test]
fn create_factory_wait_follows_the_ceremony_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    // It never forms a factory by itself (10 clients wanted): the operator asks.
    let (lsp, uri) = lsp(dir.path(), &chain, "127.0.0.1:0", 10, &["--no-passphrase"]);
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let nobody = cli_with("lsp", "create-factory", &lsp, &["--wait"]).unwrap_err();
    assert!(nobody.contains("no client is waiting"), "{nobody}");
    let _clients: Vec<Node> = (0..2)
        .map(|i| client(dir.path(), i, &chain, &uri, &["--no-passphrase"]))
        .collect();
    wait_for("two waiting", Duration::from_secs(60), || {
        status("lsp", &lsp)["waiting"] == 2
    });
    let out = std::process::Command::new(BIN)
        .args([
            "lsp",
            "create-factory",
            "--wait",
            "--api",
            &lsp.api,
            "--datadir",
        ])
        .arg(&lsp.datadir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": signed"), "{text}");
    // Not a terminal: no progress bar drawn on stderr.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_lsp_dying_in_the_middle_of_a_forward_fails_the_payment_back_and_it_can_be_paid_again() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let (mut lsp, uri) = lsp(
        dir.path(),
        &chain,
        "127.0.0.1:0",
        2,
        &["--no-passphrase", "--fault", "crash-after-forward"],
    );
    let address = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    chain.mine(110, &address);
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let clients: Vec<Node> = (0..2)
        .map(|i| client(dir.path(), i, &chain, &uri, &["--no-passphrase"]))
        .collect();
    wait_for("a signed factory", Duration::from_secs(120), || {
        status("lsp", &lsp)["factories"].as_u64() == Some(1)
    });
    chain.mine(1, &address);
    for c in &clients {
        wait_for("the channel ready", Duration::from_secs(90), || {
            balance(c)["channel"]["ready"] == true
        });
    }
    // The LSP's own payment is not a forward: it goes through.
    let inv = invoice(&clients[0], 30_000_000);
    assert_eq!(pay("lsp", &lsp, &inv).unwrap()["status"], "paid");
    // Client 0 pays client 1: the LSP records the forward and dies before it moves on.
    let inv = invoice(&clients[1], 10_000_000);
    let payer = clients[0].datadir.clone();
    let api = clients[0].api.clone();
    let inv2 = inv.clone();
    let paying = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .args(["client", "pay", &inv2, "--json", "--api", &api, "--datadir"])
            .arg(&payer)
            .output()
            .unwrap()
    });
    wait_for("the LSP to die", Duration::from_secs(60), || {
        lsp.proc
            .as_mut()
            .unwrap()
            .child
            .try_wait()
            .unwrap()
            .is_some()
    });
    lsp.proc.take();
    // Restarted without the fault: the rule is to fail the payer's HTLC back.
    let (lsp, _) = self::lsp(dir.path(), &chain, &listen, 2, &["--no-passphrase"]);
    let out = paying.join().unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("payment failed"), "{err}");
    // Nothing moved, nothing is left pending, and the invoice can be paid again.
    assert_eq!(msat(&balance(&clients[0]), "balance_msat"), 30_000_000);
    assert_eq!(msat(&balance(&clients[1]), "balance_msat"), 0);
    wait_for("no HTLC left", Duration::from_secs(30), || {
        balance(&clients[0])["channel"]["htlcs"] == 0
    });
    // The payee must be back too: a payment to an offline payee is refused.
    wait_for("both channels back", Duration::from_secs(60), || {
        let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
        let rows = channels.as_array().unwrap();
        rows.len() == 2
            && rows
                .iter()
                .all(|c| c["connected"] == true && c["ready"] == true)
    });
    assert_eq!(pay("client", &clients[0], &inv).unwrap()["status"], "paid");
    assert_eq!(msat(&balance(&clients[0]), "balance_msat"), 20_000_000);
    assert_eq!(msat(&balance(&clients[1]), "balance_msat"), 10_000_000);
    drop(lsp);
}
