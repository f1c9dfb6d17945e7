//! The cooperative close between the daemons, as separate OS processes over loopback, driven
//! only through the `superscalar` CLI: `lsp close-factory` spends the funding output in one
//! transaction that pays every client its balance (leaf and sold channels) and its fee coin;
//! a close that pays one client a satoshi too much is refused by that client and leaves the
//! factory as it was; bad requests are refused with a reason; a frozen client starts no payment;
//! and everyone counts the factory closed once the close confirms.

use std::time::Duration;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{OutPoint, ScriptBuf, Transaction};
use serde_json::{json, Value};
use superscalar_chain::Chain;

mod common;

use common::*;

fn position(c: &Node) -> usize {
    status("client", c)["factory"]["position"].as_u64().unwrap() as usize
}

fn payout(c: &Node) -> ScriptBuf {
    let hex = status("client", c)["factory"]["payout"]
        .as_str()
        .unwrap()
        .to_owned();
    ScriptBuf::from_hex(&hex).unwrap()
}

fn close(lsp: &Node, factory: &str, extra: &[&str]) -> Result<Value, String> {
    let mut args = vec![factory];
    args.extend(extra);
    cli_with("lsp", "close-factory", lsp, &args)
}

fn funding_of(lsp: &Node, factory: &str) -> OutPoint {
    cli_factory(lsp, factory)["funding"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn transaction(chain: &Chaind, txid: &str) -> Transaction {
    let hex = chain.rpc.call("getrawtransaction", &[json!(txid)]).unwrap();
    deserialize_hex(hex.as_str().unwrap()).unwrap()
}

#[test]
fn a_cooperative_close_pays_everyone_their_balance_and_a_wrong_amount_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let n = 4;
    // The LSP starts with the fault that proposes client 0 one satoshi too much.
    let LiveFactory {
        mut lsp,
        uri,
        address,
        factory,
        clients,
    } = live_factory(
        dir.path(),
        &chain,
        n,
        &["--no-passphrase", "--fault", "close-overpays"],
        &["--no-passphrase"],
    );
    let listen = uri.split('@').nth(1).unwrap().to_owned();
    let funding = funding_of(&lsp, &factory);
    // Clients in the order of their positions in the factory.
    let mut clients = clients;
    clients.sort_by_key(position);

    // Money moves: the LSP pays two clients, they pay others, with odd millisatoshis.
    let inv = invoice(&clients[0], 40_000_777);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let inv = invoice(&clients[3], 7_000_000);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let inv = invoice(&clients[1], 12_345_678);
    assert_eq!(
        cli_with("client", "pay", &clients[0], &[&inv]).unwrap()["status"],
        "paid"
    );
    let inv = invoice(&clients[2], 1_500);
    assert_eq!(
        cli_with("client", "pay", &clients[3], &[&inv]).unwrap()["status"],
        "paid"
    );

    // Bad requests: refused with a reason, nothing frozen.
    let err = close(&lsp, "nothex", &[]).unwrap_err();
    assert!(err.contains("not a factory id"), "{err}");
    let err = close(&lsp, &"00".repeat(32), &[]).unwrap_err();
    assert!(err.contains("no live factory"), "{err}");
    let err = close(&lsp, &factory, &["--fee-rate", "0"]).unwrap_err();
    assert!(err.contains("fee_rate"), "{err}");
    let err = close(&lsp, &factory, &["--fee-rate", "99999999"]).unwrap_err();
    assert!(err.contains("fee_rate"), "{err}");

    // The close that overpays client 0 by one satoshi: client 0 refuses it, the LSP's answer
    // names it, and nothing changed: the funding output is unspent and payments flow again.
    let err = close(&lsp, &factory, &[]).unwrap_err();
    assert!(err.contains("client 0 refused"), "{err}");
    assert!(chain.rpc.get_utxo(&funding).unwrap().is_some());
    let inv = invoice(&clients[2], 1_000_000);
    assert_eq!(
        cli_with("client", "pay", &clients[1], &[&inv]).unwrap()["status"],
        "paid"
    );
    for c in &clients {
        assert_eq!(status("client", c)["close"], Value::Null);
        assert_eq!(factory_status(c).as_deref(), Some("live"));
    }

    // The LSP restarts (from its database) without the fault.
    lsp.proc.take().unwrap().sigkill();
    let (lsp, _) = self::lsp(dir.path(), &chain, &listen, n, &["--no-passphrase"]);
    for c in &clients {
        wait_for("reconnected", Duration::from_secs(60), || {
            status("client", c)["connected"] == true
        });
    }

    // A client that is not connected cannot sign: the close is refused up front.
    let mut clients = clients;
    let c3 = stop_client(clients.pop().unwrap());
    wait_for("client 3 gone", Duration::from_secs(30), || {
        cli("lsp", "clients", &lsp.datadir, &lsp.api).unwrap()["connected"]
            .as_array()
            .map_or(0, |a| a.len())
            < n
    });
    let err = close(&lsp, &factory, &[]).unwrap_err();
    assert!(err.contains("not connected"), "{err}");
    clients.push(client_in(&c3, &chain, &uri, &["--no-passphrase"]));
    for c in &clients {
        wait_for("reconnected", Duration::from_secs(60), || {
            status("client", c)["connected"] == true
        });
    }

    // An invoice made before the close, to try paying while the factory is frozen.
    let late = invoice(&clients[0], 1_000);
    let balances: Vec<u64> = clients.iter().map(balance_msat).collect();
    let channels = cli("lsp", "channels", &lsp.datadir, &lsp.api).unwrap();
    let capacity_msat: u64 = channels
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["capacity_msat"].as_u64().unwrap())
        .sum();

    // The capital the factory locks: its funding output, reported per factory and in total.
    let detail = cli_factory(&lsp, &factory);
    let locked = detail["locked_sat"].as_u64().unwrap();
    assert_eq!(
        locked,
        chain
            .rpc
            .get_utxo(&funding)
            .unwrap()
            .unwrap()
            .txout
            .value
            .to_sat()
    );
    assert_eq!(detail["absent"], json!([]));
    assert_eq!(status("lsp", &lsp)["capital_locked_sat"], json!(locked));

    let closed = close(&lsp, &factory, &["--fee-rate", "3"]).unwrap();
    let txid = closed["txid"].as_str().unwrap().to_owned();
    let tx = transaction(&chain, &txid);
    assert_eq!(tx.input.len(), 1);
    assert_eq!(tx.input[0].previous_output, funding);
    assert_eq!(tx.input[0].witness.len(), 1, "a key-path spend");
    assert_eq!(closed["vsize"].as_u64().unwrap(), tx.vsize() as u64);
    // Each client is paid its balance (rounded down to the satoshi) and one fee coin, all the
    // same, at its own payout script.
    let mut fee_coin = None;
    for (i, c) in clients.iter().enumerate() {
        let entry = &closed["clients"][i];
        let amount = entry["amount_sat"].as_u64().unwrap();
        let coin = amount - balances[i] / 1000;
        assert!(*fee_coin.get_or_insert(coin) == coin, "{closed}");
        let out = &tx.output[entry["output"].as_u64().unwrap() as usize];
        assert_eq!(out.value.to_sat(), amount, "{closed}");
        assert_eq!(out.script_pubkey, payout(c), "{closed}");
    }
    let paid: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    assert!(closed["lsp_sat"].as_u64().unwrap() > 0, "{closed}");
    assert!(
        capacity_msat / 1000 < paid,
        "the stock and fee coins are paid too"
    );

    // Until it confirms, every client is frozen: no payment starts.
    let err = cli_with("client", "pay", &clients[2], &[&late]).unwrap_err();
    assert!(err.contains("closed"), "{err}");
    for c in &clients {
        assert_eq!(status("client", c)["close"]["txid"], json!(txid));
    }

    chain.mine(1, &address);
    assert!(chain.rpc.get_utxo(&funding).unwrap().is_none());
    for c in &clients {
        wait_for(
            "the client counts it closed",
            Duration::from_secs(60),
            || factory_status(c).as_deref() == Some("closed"),
        );
        let s = status("client", c);
        assert_eq!(s["close"]["signed"], true, "{s}");
    }
    wait_for("the LSP counts it closed", Duration::from_secs(60), || {
        cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap()[0]["status"] == "closed"
    });
    assert_eq!(status("lsp", &lsp)["capital_locked_sat"], json!(0));

    // A client sweeps what the close paid it to an address of its own wallet (here, one of the
    // LSP's, as any address would do); bad requests are refused and nothing is sent.
    let c = &clients[1];
    let paid = status("client", c)["close"]["amount_sat"].as_u64().unwrap();
    for (args, expected) in [
        (
            vec!["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
            "address",
        ),
        (vec!["notanaddress"], "address"),
        (vec![&address, "--fee-rate", "0"], "fee_rate"),
        (vec![&address, "--from-height", "99999999"], "from_height"),
    ] {
        let err = cli_with("client", "sweep", c, &args).unwrap_err();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let to = cli("lsp", "newaddress", &lsp.datadir, &lsp.api).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let swept = cli_with("client", "sweep", c, &[&to]).unwrap();
    assert_eq!(swept["inputs"].as_array().unwrap().len(), 1, "{swept}");
    assert_eq!(
        swept["amount_sat"].as_u64().unwrap() + swept["fee_sat"].as_u64().unwrap(),
        paid
    );
    chain.mine(1, &address);
    let sweep = transaction(&chain, swept["txid"].as_str().unwrap());
    assert_eq!(
        sweep.output[0].value.to_sat(),
        swept["amount_sat"].as_u64().unwrap()
    );
    let err = cli_with("client", "sweep", c, &[&to]).unwrap_err();
    assert!(err.contains("nothing to sweep"), "{err}");
    assert_eq!(cli_factory(&lsp, &factory)["locked_sat"], Value::Null);
    // Closing it again is refused.
    let err = close(&lsp, &factory, &[]).unwrap_err();
    assert!(err.contains("no live factory"), "{err}");
}

#[test]
fn the_lsp_closes_a_dying_factory_once_every_client_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chaind(&dir.path().join("chain"));
    let n = 3;
    let LiveFactory {
        lsp,
        uri,
        address,
        factory,
        mut clients,
    } = live_factory(
        dir.path(),
        &chain,
        n,
        &[
            "--no-passphrase",
            "--active-blocks",
            "200",
            "--no-auto-rotate",
        ],
        &["--no-passphrase"],
    );
    let listed = cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap();
    let funding = funding_of(&lsp, &factory);
    let inv = invoice(&clients[1], 5_000_000);
    assert_eq!(
        cli_with("lsp", "pay", &lsp, &[&inv]).unwrap()["status"],
        "paid"
    );
    let inv = invoice(&clients[0], 1_000_000);
    assert_eq!(
        cli_with("client", "pay", &clients[1], &[&inv]).unwrap()["status"],
        "paid"
    );

    // One client is away when the active period ends: the factory is dying, and the LSP
    // says why it cannot close it yet.
    let away = stop_client(clients.pop().unwrap());
    let created = listed[0]["created_height"].as_u64().unwrap();
    assert_eq!(
        status("client", &clients[0])["factory"]["dying_height"],
        json!(created + 200)
    );
    chain.mine((created + 200 - tip(&chain)) as u32, &address);
    wait_for("dying", Duration::from_secs(30), || {
        cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap()[0]["status"] == "dying"
    });
    wait_for("the reason logged", Duration::from_secs(30), || {
        status("lsp", &lsp)["events"]
            .to_string()
            .contains("not connected")
    });
    assert!(chain.rpc.get_utxo(&funding).unwrap().is_some());

    // It comes back: at the next block the LSP closes the factory, and everyone is paid.
    clients.push(client_in(&away, &chain, &uri, &["--no-passphrase"]));
    for c in &clients {
        wait_for("reconnected", Duration::from_secs(60), || {
            status("client", c)["connected"] == true
        });
    }
    let balances: Vec<u64> = clients.iter().map(balance_msat).collect();
    chain.mine(1, &address);
    for c in &clients {
        wait_for("the close signed", Duration::from_secs(60), || {
            status("client", c)["close"]["signed"] == true
        });
    }
    chain.mine(1, &address);
    assert!(chain.rpc.get_utxo(&funding).unwrap().is_none());
    // Each is paid its balance and the same fee coin.
    let mut fee_coin = None;
    for (c, owed) in clients.iter().zip(balances) {
        wait_for("closed", Duration::from_secs(60), || {
            factory_status(c).as_deref() == Some("closed")
        });
        let s = status("client", c);
        let coin = s["close"]["amount_sat"].as_u64().unwrap() - owed / 1000;
        assert_eq!(*fee_coin.get_or_insert(coin), coin, "{s}");
    }
    wait_for("the LSP counts it closed", Duration::from_secs(60), || {
        cli("lsp", "factories", &lsp.datadir, &lsp.api).unwrap()[0]["status"] == "closed"
    });
}
