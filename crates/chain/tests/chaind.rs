//! `chaind` answers like Bitcoin Core: every method's result shape and values, every error with
//! Core's code and reject string, bad input refused without changing the chain, and the chain,
//! mempool and cookie across a restart.

mod chaind_support;
mod common;

use bitcoin::hashes::Hash;
use bitcoin::{absolute, OutPoint, ScriptBuf, Sequence, Transaction, TxOut};
use chaind_support::*;
use common::*;
use serde_json::{json, Value};
use superscalar_chain::Chain;

const COIN: u64 = 5_000_000_000;
const REGTEST_GENESIS: &str = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206";

fn prev(tx: &Transaction, vout: u32) -> (OutPoint, TxOut) {
    (
        OutPoint::new(tx.compute_txid(), vout),
        tx.output[vout as usize].clone(),
    )
}

/// Amount in BTC from a JSON number, in satoshis.
fn sat(v: &Value) -> u64 {
    (v.as_f64().unwrap_or_else(|| panic!("not an amount: {v}")) * 1e8).round() as u64
}

#[test]
fn chain_methods_answer_like_core_on_a_fresh_chain() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);

    assert_eq!(rpc.ok("getblockcount", json!([])), 0);
    assert_eq!(rpc.ok("getbestblockhash", json!([])), REGTEST_GENESIS);
    assert_eq!(rpc.ok("getblockhash", json!([0])), REGTEST_GENESIS);
    let info = rpc.ok("getblockchaininfo", json!([]));
    assert_eq!(info["chain"], "regtest");
    assert_eq!(info["blocks"], 0);
    assert_eq!(info["headers"], 0);
    assert_eq!(info["bestblockhash"], REGTEST_GENESIS);
    assert_eq!(info["bits"], "207fffff");
    assert_eq!(
        info["target"],
        "7fffff0000000000000000000000000000000000000000000000000000000000"
    );
    // Numbers as Core writes them: reals with 16 digits, amounts with 8 decimals.
    let (_, text) = rpc.post(r#"{"method":"getblockchaininfo","id":0}"#);
    assert!(
        text.contains(r#""difficulty":4.656542373906925e-10,"#),
        "{text}"
    );
    assert!(text.contains(r#""verificationprogress":1,"#), "{text}");
    let (_, text) = rpc.post(r#"{"method":"estimatesmartfee","params":[3],"id":0}"#);
    assert_eq!(
        text,
        "{\"result\":{\"feerate\":0.00001000,\"blocks\":3},\"error\":null,\"id\":0}\n"
    );
    assert_eq!(info["time"], 1296688602);
    assert_eq!(info["mediantime"], 1296688602);
    assert_eq!(info["verificationprogress"], 1);
    // The genesis block is years old: initial block download, as Core says.
    assert_eq!(info["initialblockdownload"], true);
    assert_eq!(info["chainwork"], format!("{:064x}", 2));
    assert_eq!(info["pruned"], false);
    assert_eq!(info["warnings"], json!([]));

    let header = rpc.ok("getblockheader", json!([REGTEST_GENESIS]));
    assert_eq!(header["hash"], REGTEST_GENESIS);
    assert_eq!(header["confirmations"], 1);
    assert_eq!(header["height"], 0);
    assert_eq!(header["version"], 1);
    assert_eq!(header["versionHex"], "00000001");
    assert_eq!(
        header["merkleroot"],
        "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    );
    assert_eq!(header["nonce"], 2);
    assert_eq!(header["nTx"], 1);
    assert!(header.get("previousblockhash").is_none());
    assert!(header.get("nextblockhash").is_none());
    let raw_header = rpc.ok("getblockheader", json!([REGTEST_GENESIS, false]));
    assert_eq!(raw_header.as_str().unwrap().len(), 160);
    assert!(raw_header.as_str().unwrap().starts_with("01000000"));

    let block0 = rpc.ok("getblock", json!([REGTEST_GENESIS, 0]));
    assert_eq!(block0.as_str().unwrap().len(), 285 * 2);
    let block1 = rpc.ok("getblock", json!([REGTEST_GENESIS]));
    assert_eq!(block1["size"], 285);
    assert_eq!(block1["strippedsize"], 285);
    assert_eq!(block1["weight"], 1140);
    assert_eq!(block1["tx"], json!([header["merkleroot"]]));
    assert_eq!(block1["coinbase_tx"]["version"], 1);
    assert_eq!(block1["coinbase_tx"]["sequence"], 4294967295u64);
    let block2 = rpc.ok(
        "getblock",
        json!({"blockhash": REGTEST_GENESIS, "verbosity": 2}),
    );
    let cb = &block2["tx"][0];
    assert_eq!(cb["txid"], header["merkleroot"]);
    assert!(cb.get("fee").is_none(), "a coinbase has no undo data");
    assert_eq!(cb["vin"][0]["coinbase"].as_str().unwrap().len(), 77 * 2);
    assert_eq!(cb["vout"][0]["value"].as_f64(), Some(50.0));
    assert_eq!(cb["vout"][0]["scriptPubKey"]["type"], "pubkey");
    assert!(cb["vout"][0]["scriptPubKey"]["desc"]
        .as_str()
        .unwrap()
        .starts_with("pk(04678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5f)#"));
    assert!(cb["vout"][0]["scriptPubKey"].get("address").is_none());
    // Verbose as a boolean means 1.
    assert_eq!(
        rpc.ok("getblock", json!([REGTEST_GENESIS, true]))["tx"],
        block1["tx"]
    );

    assert_eq!(
        rpc.ok("getchaintips", json!([])),
        json!([{"height": 0, "hash": REGTEST_GENESIS, "branchlen": 0, "status": "active"}])
    );
    assert_eq!(
        rpc.ok("getindexinfo", json!([])),
        json!({"txindex": {"synced": true, "best_block_height": 0}})
    );
    assert_eq!(rpc.ok("getindexinfo", json!(["coinstatsindex"])), json!({}));
    let net = rpc.ok("getnetworkinfo", json!([]));
    assert_eq!(net["version"], 319900);
    assert_eq!(net["protocolversion"], 70017);
    assert_eq!(net["connections"], 0);
    assert_eq!(net["relayfee"].as_f64(), Some(0.00001));
    assert_eq!(net["networks"].as_array().unwrap().len(), 5);
    assert!(rpc.ok("uptime", json!([])).as_u64().is_some());
    let help = rpc.ok("help", json!([]));
    for m in [
        "getblockchaininfo",
        "sendrawtransaction",
        "submitpackage",
        "generateblock",
        "stop",
    ] {
        assert!(help.as_str().unwrap().contains(m), "{m} missing from help");
    }
    assert!(rpc
        .ok("help", json!(["getblockhash"]))
        .as_str()
        .unwrap()
        .starts_with("getblockhash \"height\""));
    let fee = rpc.ok("estimatesmartfee", json!([6]));
    assert_eq!(fee, json!({"feerate": 0.00001, "blocks": 6}));
    assert_eq!(
        rpc.ok("estimatesmartfee", json!([1, "CONSERVATIVE"]))["blocks"],
        2
    );
    let mp = rpc.ok("getmempoolinfo", json!([]));
    assert_eq!(mp["loaded"], true);
    assert_eq!(mp["size"], 0);
    assert_eq!(mp["bytes"], 0);
    assert_eq!(mp["total_fee"].as_f64(), Some(0.0));
    assert_eq!(mp["minrelaytxfee"].as_f64(), Some(0.00001));
    assert_eq!(rpc.ok("getrawmempool", json!([])), json!([]));
    assert_eq!(rpc.ok("getrawmempool", json!([true])), json!({}));
    assert_eq!(
        rpc.ok("getrawmempool", json!([false, true])),
        json!({"txids": [], "mempool_sequence": 1})
    );

    // Errors of the chain methods, with Core's codes and messages.
    assert_eq!(
        rpc.err("getblockhash", json!([1])),
        (-8, "Block height out of range".into())
    );
    assert_eq!(
        rpc.err("getblockhash", json!([-1])),
        (-8, "Block height out of range".into())
    );
    let unknown = "00".repeat(32);
    assert_eq!(
        rpc.err("getblock", json!([unknown])),
        (-5, "Block not found".into())
    );
    assert_eq!(
        rpc.err("getblockheader", json!([unknown])),
        (-5, "Block not found".into())
    );
    assert_eq!(
        rpc.err("getblock", json!(["abc"])),
        (
            -8,
            "blockhash must be of length 64 (not 3, for 'abc')".into()
        )
    );
    assert_eq!(
        rpc.err("getblockheader", json!(["zz".repeat(32)])),
        (
            -8,
            format!(
                "hash must be hexadecimal string (not '{}')",
                "zz".repeat(32)
            )
        )
    );
    assert_eq!(
        rpc.err("getblock", json!([REGTEST_GENESIS, "1"])),
        (
            -3,
            "JSON value of type string is not of expected type number".into()
        )
    );
    assert_eq!(
        rpc.err("estimatesmartfee", json!([0])),
        (-8, "Invalid conf_target, must be between 1 and 1008".into())
    );
    assert_eq!(
        rpc.err("estimatesmartfee", json!([2, "fast"])),
        (
            -8,
            "Invalid estimate_mode parameter, must be one of: \"unset\", \"economical\", \"conservative\"".into()
        )
    );
    assert_eq!(
        rpc.err("getrawmempool", json!([true, true])),
        (
            -8,
            "Verbose results cannot contain mempool sequence values.".into()
        )
    );
    h.shutdown().unwrap();
}

#[test]
fn a_transaction_from_mempool_to_block_as_core_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(71);
    let coins = fund(&rpc, &h, &s.p2tr(), 1);
    assert_eq!(rpc.ok("getblockcount", json!([])), 101);
    let coin = coins[0].clone();

    // The coinbase output, unspent and mature.
    let utxo = rpc.ok("gettxout", json!([coin.0.txid.to_string(), 0]));
    assert_eq!(utxo["confirmations"], 101);
    assert_eq!(utxo["coinbase"], true);
    assert_eq!(sat(&utxo["value"]), COIN);
    assert_eq!(utxo["bestblock"], rpc.ok("getbestblockhash", json!([])));
    let spk = &utxo["scriptPubKey"];
    assert_eq!(spk["type"], "witness_v1_taproot");
    assert_eq!(spk["address"], address(&s.p2tr()));
    assert_eq!(
        spk["hex"],
        s.p2tr()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    assert_eq!(
        spk["asm"],
        format!("1 {}", &spk["hex"].as_str().unwrap()[4..])
    );
    assert!(spk["desc"].as_str().unwrap().starts_with("rawtr("));

    let tx = s.spend(
        coin.clone(),
        vec![out(COIN / 2, s.p2tr()), out(COIN / 2 - 10_000, burn())],
        2,
    );
    let txid = tx.compute_txid().to_string();
    let wtxid = tx.compute_wtxid().to_string();
    let vsize = tx.vsize() as u64;

    // Judged without entering the mempool.
    let judged = rpc.ok("testmempoolaccept", json!([[hex(&tx)]]));
    assert_eq!(
        judged,
        json!([{
            "txid": txid, "wtxid": wtxid, "allowed": true, "vsize": vsize,
            "fees": {
                "base": 0.0001,
                "effective-feerate": (10_000 * 1000 / vsize) as f64 / 1e8,
                "effective-includes": [wtxid],
            },
        }])
    );
    assert_eq!(rpc.ok("getrawmempool", json!([])), json!([]));

    assert_eq!(rpc.ok("sendrawtransaction", json!([hex(&tx)])), txid);
    // Sent again: its txid, like Core.
    assert_eq!(rpc.ok("sendrawtransaction", json!([hex(&tx), 0])), txid);
    assert_eq!(rpc.ok("getrawmempool", json!([])), json!([txid]));
    assert_eq!(
        rpc.ok("getrawmempool", json!({"mempool_sequence": true})),
        json!({"txids": [txid], "mempool_sequence": 2})
    );
    let entry = rpc.ok("getmempoolentry", json!([txid]));
    assert_eq!(entry["vsize"], vsize);
    assert_eq!(entry["weight"], tx.weight().to_wu());
    assert_eq!(entry["height"], 101);
    assert!(entry["time"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(entry["descendantcount"], 1);
    assert_eq!(entry["descendantsize"], vsize);
    assert_eq!(entry["ancestorcount"], 1);
    assert_eq!(entry["ancestorsize"], vsize);
    assert_eq!(entry["wtxid"], wtxid);
    assert_eq!(entry["chunkweight"], tx.weight().to_wu());
    for fee in ["base", "modified", "ancestor", "descendant", "chunk"] {
        assert_eq!(sat(&entry["fees"][fee]), 10_000, "{fee}");
    }
    assert_eq!(entry["depends"], json!([]));
    assert_eq!(entry["spentby"], json!([]));
    assert_eq!(entry["unbroadcast"], false);
    assert_eq!(rpc.ok("getrawmempool", json!([true]))[&txid], entry);
    let info = rpc.ok("getmempoolinfo", json!([]));
    assert_eq!(info["size"], 1);
    assert_eq!(info["bytes"], vsize);
    assert_eq!(sat(&info["total_fee"]), 10_000);

    // The spent coin is gone with the mempool, there without it; the new output is there at 0
    // confirmations.
    let spent = json!([coin.0.txid.to_string(), 0]);
    assert_eq!(rpc.ok("gettxout", spent.clone()), Value::Null);
    assert_eq!(
        rpc.ok("gettxout", json!([coin.0.txid.to_string(), 0, false]))["confirmations"],
        101
    );
    let fresh = rpc.ok("gettxout", json!([txid, 0]));
    assert_eq!(fresh["confirmations"], 0);
    assert_eq!(fresh["coinbase"], false);
    assert_eq!(rpc.ok("gettxout", json!([txid, 0, false])), Value::Null);
    assert_eq!(rpc.ok("gettxout", json!([txid, 7])), Value::Null);
    assert_eq!(
        rpc.ok(
            "gettxspendingprevout",
            json!([[{"txid": coin.0.txid.to_string(), "vout": 0}, {"txid": txid, "vout": 0}]])
        ),
        json!([
            {"txid": coin.0.txid.to_string(), "vout": 0, "spendingtxid": txid},
            {"txid": txid, "vout": 0},
        ])
    );
    let with_tx = rpc.ok(
        "gettxspendingprevout",
        json!({"outputs": [{"txid": coin.0.txid.to_string(), "vout": 0}], "return_spending_tx": true}),
    );
    assert_eq!(with_tx[0]["spendingtx"], hex(&tx));

    // In the mempool: no block fields.
    assert_eq!(rpc.ok("getrawtransaction", json!([txid])), hex(&tx));
    let mempool_view = rpc.ok("getrawtransaction", json!([txid, 1]));
    assert_eq!(mempool_view["txid"], txid);
    assert_eq!(mempool_view["hash"], wtxid);
    assert!(mempool_view.get("blockhash").is_none());
    assert!(mempool_view.get("confirmations").is_none());
    assert_eq!(rpc.ok("getrawtransaction", json!([txid, 2])), mempool_view);

    // Mined.
    let hashes = rpc.ok("generatetoaddress", json!([1, address(&burn())]));
    let block_hash = hashes[0].as_str().unwrap().to_string();
    assert_eq!(rpc.ok("getrawmempool", json!([])), json!([]));
    let confirmed = rpc.ok("getrawtransaction", json!([txid, 1]));
    assert_eq!(confirmed["blockhash"], block_hash);
    assert_eq!(confirmed["confirmations"], 1);
    assert_eq!(confirmed["time"], confirmed["blocktime"]);
    assert_eq!(confirmed["hex"], hex(&tx));
    assert_eq!(confirmed["version"], 2);
    assert_eq!(confirmed["size"], tx.total_size());
    assert_eq!(confirmed["vsize"], vsize);
    assert_eq!(confirmed["locktime"], 0);
    let vin = &confirmed["vin"][0];
    assert_eq!(vin["txid"], coin.0.txid.to_string());
    assert_eq!(vin["vout"], 0);
    assert_eq!(vin["scriptSig"], json!({"asm": "", "hex": ""}));
    assert_eq!(vin["txinwitness"].as_array().unwrap().len(), 1);
    assert_eq!(vin["sequence"], 0xffff_fffe_u32);
    assert_eq!(confirmed["vout"][1]["n"], 1);
    assert_eq!(
        confirmed["vout"][1]["scriptPubKey"]["type"],
        "witness_v0_scripthash"
    );
    assert!(confirmed.get("fee").is_none());
    let detailed = rpc.ok("getrawtransaction", json!([txid, 2]));
    assert_eq!(sat(&detailed["fee"]), 10_000);
    let prevout = &detailed["vin"][0]["prevout"];
    assert_eq!(prevout["generated"], true);
    assert_eq!(prevout["height"], 1);
    assert_eq!(sat(&prevout["value"]), COIN);
    assert_eq!(prevout["scriptPubKey"]["type"], "witness_v1_taproot");
    let in_block = rpc.ok("getrawtransaction", json!([txid, 1, block_hash]));
    assert_eq!(in_block["in_active_chain"], true);
    assert_eq!(in_block["blockhash"], block_hash);
    assert_eq!(
        rpc.ok(
            "getrawtransaction",
            json!({"txid": txid, "blockhash": block_hash})
        ),
        hex(&tx)
    );

    let block = rpc.ok("getblock", json!([block_hash, 2]));
    assert_eq!(block["height"], 102);
    assert_eq!(block["confirmations"], 1);
    assert_eq!(block["nTx"], 2);
    assert_eq!(block["chainwork"], format!("{:064x}", 2 * 103));
    assert_eq!(
        block["previousblockhash"],
        rpc.ok("getblockhash", json!([101]))
    );
    assert!(block.get("nextblockhash").is_none());
    assert_eq!(block["tx"][1]["txid"], txid);
    assert_eq!(sat(&block["tx"][1]["fee"]), 10_000);
    assert!(block["tx"][1]["vin"][0].get("prevout").is_none());
    assert_eq!(block["tx"][1]["hex"], hex(&tx));
    assert_eq!(block["coinbase_tx"]["witness"], "00".repeat(32));
    let block3 = rpc.ok("getblock", json!([block_hash, 3]));
    assert_eq!(block3["tx"][1]["vin"][0]["prevout"], *prevout);
    let header = rpc.ok(
        "getblockheader",
        json!([rpc.ok("getblockhash", json!([101]))]),
    );
    assert_eq!(header["nextblockhash"], block_hash);
    assert_eq!(header["confirmations"], 2);
    assert!(header["mediantime"].as_u64().unwrap() <= header["time"].as_u64().unwrap());

    let mined = rpc.ok("gettxout", json!([txid, 0]));
    assert_eq!(mined["confirmations"], 1);
    assert_eq!(
        rpc.err("sendrawtransaction", json!([hex(&tx)])),
        (-27, "Transaction outputs already in utxo set".into())
    );
    let again = rpc.ok("testmempoolaccept", json!([[hex(&tx)]]));
    assert_eq!(again[0]["allowed"], false);
    assert_eq!(again[0]["reject-reason"], "txn-already-known");
    h.shutdown().unwrap();
}

/// The tip and mempool, to check that bad input changed nothing.
fn state(rpc: &Client) -> (Value, Value) {
    (
        rpc.ok("getbestblockhash", json!([])),
        rpc.ok("getrawmempool", json!([])),
    )
}

#[test]
fn rejections_carry_core_codes_and_reject_strings() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(72);
    let coins = fund(&rpc, &h, &s.p2tr(), 3);

    // A confirmed transaction with spare outputs to build on.
    let split = s.spend(
        coins[0].clone(),
        (0..4).map(|_| out(COIN / 4 - 1_000, s.p2tr())).collect(),
        2,
    );
    rpc.ok("sendrawtransaction", json!([hex(&split)]));
    rpc.ok("generatetoaddress", json!([1, address(&burn())]));
    let pending = s.spend(prev(&split, 0), vec![out(COIN / 4 - 2_000, s.p2tr())], 2);
    rpc.ok("sendrawtransaction", json!([hex(&pending)]));
    let before = state(&rpc);

    let check = |tx: &Transaction, code: i64, reason: &str| {
        let (c, m) = rpc.err("sendrawtransaction", json!([hex(tx)]));
        assert_eq!(c, code, "{m}");
        assert!(m.starts_with(reason), "{m} does not start with {reason}");
        let t = rpc.ok("testmempoolaccept", json!([[hex(tx)]]));
        assert_eq!(t[0]["allowed"], false, "{t}");
        let expected = if reason == "bad-txns-inputs-missingorspent" {
            "missing-inputs"
        } else {
            reason
        };
        assert_eq!(t[0]["reject-reason"], expected, "{t}");
        if expected == "missing-inputs" {
            assert!(t[0].get("reject-details").is_none());
        } else {
            assert_eq!(t[0]["reject-details"], m.as_str(), "{t}");
        }
    };

    // Missing output.
    let missing = s.spend(
        (
            OutPoint::new(bitcoin::Txid::all_zeros(), 3),
            split.output[1].clone(),
        ),
        vec![out(1_000_000, s.p2tr())],
        2,
    );
    check(&missing, -25, "bad-txns-inputs-missingorspent");
    // Double spend of what `pending` spends.
    let conflict = s.spend(prev(&split, 0), vec![out(COIN / 4 - 5_000, s.p2tr())], 2);
    check(&conflict, -26, "txn-mempool-conflict");
    // Not final: nLockTime two blocks ahead.
    let height = h.chain().tip().unwrap().height;
    let mut non_final = unsigned(
        vec![prev(&split, 1).0],
        vec![out(COIN / 4 - 2_000, s.p2tr())],
        2,
    );
    non_final.lock_time = absolute::LockTime::from_height(height + 2).unwrap();
    s.sign_key_path(&mut non_final, 0, &[split.output[1].clone()]);
    check(&non_final, -26, "non-final");
    // Sequence-locked: BIP68 by height.
    let mut locked = unsigned(
        vec![prev(&split, 2).0],
        vec![out(COIN / 4 - 2_000, s.p2tr())],
        2,
    );
    locked.input[0].sequence = Sequence::from_height(10);
    s.sign_key_path(&mut locked, 0, &[split.output[2].clone()]);
    check(&locked, -26, "non-BIP68-final");
    // Fee too low: nothing at all.
    let free = s.spend(
        prev(&split, 3),
        vec![out(split.output[3].value.to_sat(), s.p2tr())],
        2,
    );
    check(&free, -26, "min relay fee not met");
    // Immature coinbase: the block just mined.
    let young = handle_coinbase(&h, height);
    let spend_young = s.spend(young, vec![out(COIN - 1_000, s.p2tr())], 2);
    check(&spend_young, -26, "bad-txns-premature-spend-of-coinbase");
    // Garbage bytes, and what is not hex at all.
    for garbage in ["00", "deadbeef", "zz", "0", ""] {
        assert_eq!(
            rpc.err("sendrawtransaction", json!([garbage])),
            (
                -22,
                "TX decode failed. Make sure the tx has at least one input.".into()
            )
        );
        assert_eq!(
            rpc.err("testmempoolaccept", json!([[garbage]])),
            (
                -22,
                format!("TX decode failed: {garbage} Make sure the tx has at least one input.")
            )
        );
    }
    assert_eq!(
        rpc.err("sendrawtransaction", json!([7])).0,
        -3,
        "a number is no hex string"
    );
    // Already confirmed, with an unspent output.
    assert_eq!(
        rpc.err("sendrawtransaction", json!([hex(&split)])),
        (-27, "Transaction outputs already in utxo set".into())
    );
    // The fee cap: default 0.10 BTC/kvB, or given; 0 disables it; 1 BTC/kvB is refused.
    let rich = s.spend(prev(&split, 3), vec![out(1_000, s.p2tr())], 2);
    assert_eq!(
        rpc.err("sendrawtransaction", json!([hex(&rich)])),
        (
            -25,
            "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)".into()
        )
    );
    let t = rpc.ok("testmempoolaccept", json!([[hex(&rich)], "0.01"]));
    assert_eq!(t[0]["allowed"], false);
    assert_eq!(t[0]["reject-reason"], "max-fee-exceeded");
    assert_eq!(
        rpc.err("sendrawtransaction", json!([hex(&rich), 1])),
        (
            -8,
            "Fee rates larger than or equal to 1BTC/kvB are not accepted".into()
        )
    );
    assert_eq!(
        rpc.err("sendrawtransaction", json!([hex(&rich), "x"])),
        (-3, "Invalid amount".into())
    );
    // A burn above maxburnamount.
    let data = <&bitcoin::script::PushBytes>::try_from(&[1u8, 2, 3][..]).unwrap();
    let burning = s.spend(
        prev(&split, 3),
        vec![
            out(1_000, ScriptBuf::new_op_return(data)),
            out(COIN / 4 - 10_000, s.p2tr()),
        ],
        2,
    );
    assert_eq!(
        rpc.err("sendrawtransaction", json!([hex(&burning)])),
        (
            -25,
            "Unspendable output exceeds maximum configured by user (maxburnamount)".into()
        )
    );
    // Unknown transactions and mempool entries.
    let unknown = "11".repeat(32);
    let no_tx =
        "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.";
    assert_eq!(
        rpc.err("getrawtransaction", json!([unknown])),
        (-5, no_tx.into())
    );
    assert_eq!(
        rpc.err("getrawtransaction", json!([unknown, 1, rpc.ok("getblockhash", json!([1]))])),
        (-5, "No such transaction found in the provided block. Use gettransaction for wallet transactions.".into())
    );
    assert_eq!(
        rpc.err(
            "getrawtransaction",
            json!([pending.compute_txid().to_string(), 0, "00".repeat(32)])
        ),
        (-5, "Block hash not found".into())
    );
    assert_eq!(
        rpc.err("getrawtransaction", json!(["4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"])),
        (-5, "The genesis block coinbase is not considered an ordinary transaction and cannot be retrieved".into())
    );
    assert_eq!(
        rpc.err("getrawtransaction", json!(["12"])),
        (
            -8,
            "parameter 1 must be of length 64 (not 2, for '12')".into()
        )
    );
    assert_eq!(
        rpc.err("getmempoolentry", json!([unknown])),
        (-5, "Transaction not in mempool".into())
    );
    assert_eq!(
        rpc.err("getmempoolancestors", json!([unknown])),
        (-5, "Transaction not in mempool".into())
    );
    assert_eq!(
        rpc.err("gettxspendingprevout", json!([[]])),
        (-8, "Invalid parameter, outputs are missing".into())
    );
    assert_eq!(
        rpc.err(
            "gettxspendingprevout",
            json!([[{"txid": unknown, "vout": -1}]])
        ),
        (-8, "Invalid parameter, vout cannot be negative".into())
    );
    assert_eq!(
        rpc.err("gettxspendingprevout", json!([[{"txid": unknown}]])),
        (-3, "Missing vout".into())
    );
    assert_eq!(
        rpc.err("testmempoolaccept", json!([[]])),
        (
            -8,
            "Array must contain between 1 and 25 transactions.".into()
        )
    );
    assert_eq!(
        rpc.err("gettxout", json!([unknown, -1])),
        (-1, "JSON integer out of range".into())
    );

    // Nothing of it changed the chain or the mempool.
    assert_eq!(state(&rpc), before);
    h.shutdown().unwrap();
}

/// The coinbase output of the block at `height`.
fn handle_coinbase(
    h: &superscalar_chain::rpc::server::ChaindHandle,
    height: u32,
) -> (OutPoint, TxOut) {
    let block = h.chain().block_at(height).unwrap().unwrap();
    prev(&block.txdata[0], 0)
}

/// A zero-fee v3 parent with a P2A anchor and one P2TR output.
fn anchored_parent(s: &Signer, coin: (OutPoint, TxOut)) -> Transaction {
    let value = coin.1.value.to_sat();
    s.spend(
        coin,
        vec![out(value, s.p2tr()), out(0, ScriptBuf::new_p2a())],
        3,
    )
}

/// A v3 child spending the parent's anchor and a confirmed coin, paying `fee`.
fn anchor_child(
    s: &Signer,
    parent: &Transaction,
    coin: (OutPoint, TxOut),
    fee: u64,
) -> Transaction {
    let anchor = prev(parent, 1);
    let value = coin.1.value.to_sat() + anchor.1.value.to_sat() - fee;
    let mut tx = unsigned(vec![anchor.0, coin.0], vec![out(value, s.p2tr())], 3);
    s.sign_key_path(&mut tx, 1, &[anchor.1, coin.1]);
    tx
}

#[test]
fn packages_are_judged_and_submitted_like_core() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(73);
    let coins = fund(&rpc, &h, &s.p2tr(), 2);
    let parent = anchored_parent(&s, coins[0].clone());
    let child = anchor_child(&s, &parent, coins[1].clone(), 2_000);
    let (p_txid, p_wtxid) = (
        parent.compute_txid().to_string(),
        parent.compute_wtxid().to_string(),
    );
    let (c_txid, c_wtxid) = (
        child.compute_txid().to_string(),
        child.compute_wtxid().to_string(),
    );
    let (pv, cv) = (parent.vsize() as u64, child.vsize() as u64);

    // The parent alone pays nothing.
    let (code, msg) = rpc.err("sendrawtransaction", json!([hex(&parent)]));
    assert_eq!(code, -26);
    assert!(msg.starts_with("min relay fee not met, 0 < "), "{msg}");
    // testmempoolaccept judges each alone (no package fee rate): the parent fails, the child is
    // not validated.
    let t = rpc.ok("testmempoolaccept", json!([[hex(&parent), hex(&child)]]));
    assert_eq!(t[0]["txid"], p_txid);
    assert_eq!(t[0]["allowed"], false);
    assert_eq!(t[0]["reject-reason"], "min relay fee not met");
    assert_eq!(t[1], json!({"txid": c_txid, "wtxid": c_wtxid}));
    // A badly formed package: Core's package error on every transaction.
    let t = rpc.ok("testmempoolaccept", json!([[hex(&child), hex(&parent)]]));
    assert_eq!(t[0]["package-error"], "package-not-sorted");
    assert!(t[0].get("allowed").is_none());
    assert_eq!(
        rpc.err("submitpackage", json!([[hex(&child), hex(&parent)]])),
        (
            -25,
            "package topology disallowed. not child-with-parents or parents depend on each other."
                .into()
        )
    );
    // A child spending its parent's coin again: Core's package error, nothing validated.
    let conflicting = anchor_child(&s, &parent, coins[0].clone(), 2_000);
    let cw = conflicting.compute_wtxid().to_string();
    assert_eq!(
        rpc.ok("submitpackage", json!([[hex(&parent), hex(&conflicting)]])),
        json!({
            "package_msg": "conflict-in-package",
            "tx-results": {
                p_wtxid.clone(): {"txid": p_txid, "error": "package-not-validated"},
                cw: {"txid": conflicting.compute_txid().to_string(), "error": "package-not-validated"},
            },
            "replaced-transactions": [],
        })
    );
    assert_eq!(
        rpc.err(
            "submitpackage",
            json!([[hex(&parent), hex(&split_of(&s, &coins[1]))]])
        ),
        (
            -25,
            "package topology disallowed. not child-with-parents or parents depend on each other."
                .into()
        )
    );
    assert_eq!(rpc.ok("getrawmempool", json!([])), json!([]));

    // Submitted together: the package fee rate carries the parent.
    let rate = 2_000 * 1000 / (pv + cv);
    let result = rpc.ok("submitpackage", json!([[hex(&parent), hex(&child)]]));
    assert_eq!(
        result,
        json!({
            "package_msg": "success",
            "tx-results": {
                p_wtxid.clone(): {"txid": p_txid, "vsize": pv, "fees": {
                    "base": 0.0, "effective-feerate": rate as f64 / 1e8,
                    "effective-includes": [p_wtxid, c_wtxid]}},
                c_wtxid.clone(): {"txid": c_txid, "vsize": cv, "fees": {
                    "base": 0.00002, "effective-feerate": rate as f64 / 1e8,
                    "effective-includes": [p_wtxid, c_wtxid]}},
            },
            "replaced-transactions": [],
        })
    );
    let mut pool: Vec<Value> = rpc
        .ok("getrawmempool", json!([]))
        .as_array()
        .unwrap()
        .clone();
    pool.sort_by_key(|v| v.as_str().unwrap().to_string());
    let mut expected = vec![json!(p_txid), json!(c_txid)];
    expected.sort_by_key(|v| v.as_str().unwrap().to_string());
    assert_eq!(pool, expected);
    let c_entry = rpc.ok("getmempoolentry", json!([c_txid]));
    assert_eq!(c_entry["ancestorcount"], 2);
    assert_eq!(c_entry["ancestorsize"], pv + cv);
    assert_eq!(c_entry["depends"], json!([p_txid]));
    assert_eq!(sat(&c_entry["fees"]["ancestor"]), 2_000);
    assert_eq!(sat(&c_entry["fees"]["chunk"]), 2_000);
    assert_eq!(
        c_entry["chunkweight"],
        parent.weight().to_wu() + child.weight().to_wu()
    );
    let p_entry = rpc.ok("getmempoolentry", json!([p_txid]));
    assert_eq!(p_entry["spentby"], json!([c_txid]));
    assert_eq!(p_entry["descendantcount"], 2);
    assert_eq!(sat(&p_entry["fees"]["chunk"]), 2_000);
    assert_eq!(
        rpc.ok("getmempoolancestors", json!([c_txid])),
        json!([p_txid])
    );
    assert_eq!(
        rpc.ok("getmempooldescendants", json!([p_txid])),
        json!([c_txid])
    );
    assert_eq!(
        rpc.ok("getmempooldescendants", json!([p_txid, true]))[&c_txid],
        c_entry
    );
    // Submitted again: both already there (no effective fee rate, as Core).
    let again = rpc.ok("submitpackage", json!([[hex(&parent), hex(&child)]]));
    assert_eq!(again["package_msg"], "success");
    assert_eq!(
        again["tx-results"][&c_wtxid],
        json!({"txid": c_txid, "vsize": cv, "fees": {"base": 0.00002}})
    );
    // Three transactions: more than chaind's mempool takes as a package.
    let (code, msg) = rpc.err(
        "submitpackage",
        json!([[hex(&parent), hex(&parent), hex(&child)]]),
    );
    assert_eq!(code, -25, "{msg}");
    // A package whose child pays too little: "transaction failed", each with its error.
    h.shutdown().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let coins = fund(&rpc, &h, &s.p2tr(), 2);
    let parent = anchored_parent(&s, coins[0].clone());
    let cheap = anchor_child(&s, &parent, coins[1].clone(), 100);
    let r = rpc.ok("submitpackage", json!([[hex(&parent), hex(&cheap)]]));
    assert_eq!(r["package_msg"], "transaction failed");
    let p = &r["tx-results"][parent.compute_wtxid().to_string()];
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .starts_with("min relay fee not met, 0 < "),
        "{r}"
    );
    let c = &r["tx-results"][cheap.compute_wtxid().to_string()];
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .starts_with("min relay fee not met, 100 < "),
        "{r}"
    );
    assert_eq!(rpc.ok("getrawmempool", json!([])), json!([]));
    // A single transaction is a package too.
    let single = s.spend(coins[1].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    let r = rpc.ok("submitpackage", json!([[hex(&single)]]));
    assert_eq!(r["package_msg"], "success");
    assert_eq!(
        r["tx-results"][single.compute_wtxid().to_string()]["fees"]["effective-includes"],
        json!([single.compute_wtxid().to_string()])
    );
    // Mined: both the single transaction and then a package child with a fresh parent.
    let mined = rpc.ok(
        "generateblock",
        json!([address(&burn()), [single.compute_txid().to_string()]]),
    );
    let block = rpc.ok("getblock", json!([mined["hash"], 1]));
    assert_eq!(block["tx"][1], single.compute_txid().to_string());
    h.shutdown().unwrap();
}

/// A transaction spending `coin` that has nothing to do with any package here.
fn split_of(s: &Signer, coin: &(OutPoint, TxOut)) -> Transaction {
    s.spend(coin.clone(), vec![out(COIN - 1_000, s.p2tr())], 2)
}

#[test]
fn generate_methods_mine_where_told_and_refuse_what_core_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(74);

    // Addresses: regtest only.
    assert_eq!(
        rpc.err(
            "generatetoaddress",
            json!([1, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"])
        ),
        (-5, "Error: Invalid address".into())
    );
    assert_eq!(
        rpc.err("generatetoaddress", json!([1, "nonsense"])),
        (-5, "Error: Invalid address".into())
    );
    assert_eq!(
        rpc.ok("generatetoaddress", json!([0, address(&s.p2tr())])),
        json!([])
    );
    assert_eq!(
        rpc.ok("generatetoaddress", json!([-3, address(&s.p2tr())])),
        json!([])
    );
    let (code, msg) = rpc.err("generatetoaddress", json!([10_001, address(&s.p2tr())]));
    assert_eq!(code, -8);
    assert!(msg.contains("at most 10000 blocks per call"), "{msg}");
    assert_eq!(rpc.ok("getblockcount", json!([])), 0);
    // P2PKH (base58) and a named call with maxtries.
    let pkh = ScriptBuf::new_p2pkh(&bitcoin::PublicKey::new(s.keypair.public_key()).pubkey_hash());
    let mined = rpc.ok(
        "generatetoaddress",
        json!({"nblocks": 2, "address": address(&pkh), "maxtries": 5}),
    );
    assert_eq!(mined.as_array().unwrap().len(), 2);
    let block = rpc.ok("getblock", json!([mined[1], 2]));
    assert_eq!(
        block["tx"][0]["vout"][0]["scriptPubKey"]["type"],
        "pubkeyhash"
    );
    assert_eq!(
        block["tx"][0]["vout"][0]["scriptPubKey"]["address"],
        address(&pkh)
    );

    // Descriptors: addr() and raw(), with or without checksum.
    let desc = format!("addr({})", address(&s.p2tr()));
    let with_checksum = rpc.ok(
        "getblock",
        json!([
            rpc.ok("generatetodescriptor", json!([1, desc.clone()]))[0],
            2
        ]),
    )["tx"][0]["vout"][0]["scriptPubKey"]["desc"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(with_checksum.starts_with("rawtr("), "{with_checksum}");
    let raw = "raw(51024e73)";
    let mined = rpc.ok("generatetodescriptor", json!([1, raw]));
    let cb_out = &rpc.ok("getblock", json!([mined[0], 2]))["tx"][0]["vout"][0]["scriptPubKey"];
    assert_eq!(cb_out["type"], "anchor");
    assert_eq!(cb_out["address"], "bcrt1pfeesnyr2tx");
    let checksum = cb_out["desc"]
        .as_str()
        .unwrap()
        .split('#')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(cb_out["desc"]
        .as_str()
        .unwrap()
        .starts_with("addr(bcrt1pfeesnyr2tx)#"));
    rpc.ok(
        "generatetodescriptor",
        json!([1, format!("addr(bcrt1pfeesnyr2tx)#{checksum}")]),
    );
    assert_eq!(
        rpc.err("generatetodescriptor", json!([1, "raw(51024e73)#aaaaaaaa"]))
            .0,
        -5
    );
    let (code, msg) = rpc.err("generatetodescriptor", json!([1, "raw(51024e73)#aaaaaaaa"]));
    assert_eq!(code, -5);
    assert!(
        msg.starts_with("Provided checksum 'aaaaaaaa' does not match computed checksum '"),
        "{msg}"
    );
    assert_eq!(
        rpc.err("generatetodescriptor", json!([1, "raw(xyz)"])),
        (-5, "Raw script is not hex".into())
    );
    let height = rpc.ok("getblockcount", json!([]));

    // generateblock: chosen transactions, from the mempool or raw, submitted or not.
    let coins = fund(&rpc, &h, &s.p2tr(), 2);
    let a = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    let b = s.spend(coins[1].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    rpc.ok("sendrawtransaction", json!([hex(&a)]));
    let tip = rpc.ok("getbestblockhash", json!([]));
    let dry = rpc.ok(
        "generateblock",
        json!([
            address(&burn()),
            [a.compute_txid().to_string(), hex(&b)],
            false
        ]),
    );
    assert!(dry["hex"].as_str().unwrap().len() > 160);
    assert_eq!(
        rpc.ok("getbestblockhash", json!([])),
        tip,
        "submit=false changes nothing"
    );
    assert_eq!(
        rpc.err(
            "generateblock",
            json!([address(&burn()), ["22".repeat(32)]])
        ),
        (
            -5,
            format!("Transaction {} not in mempool.", "22".repeat(32))
        )
    );
    assert_eq!(
        rpc.err("generateblock", json!([address(&burn()), ["beef"]])),
        (
            -22,
            "Transaction decode failed for beef. Make sure the tx has at least one input.".into()
        )
    );
    assert_eq!(
        rpc.err("generateblock", json!(["nope", []])),
        (-5, "Error: Invalid address or descriptor".into())
    );
    // A transaction spending nothing that exists: Core's TestBlockValidity error.
    let ghost = s.spend(
        (
            OutPoint::new(bitcoin::Txid::all_zeros(), 0),
            coins[0].1.clone(),
        ),
        vec![out(1_000, s.p2tr())],
        2,
    );
    let (code, msg) = rpc.err("generateblock", json!([address(&burn()), [hex(&ghost)]]));
    assert_eq!(code, -25);
    assert!(
        msg.starts_with("TestBlockValidity failed: bad-txns-inputs-missingorspent"),
        "{msg}"
    );
    assert_eq!(rpc.ok("getbestblockhash", json!([])), tip);
    let mined = rpc.ok(
        "generateblock",
        json!({"output": "raw(51024e73)", "transactions": [a.compute_txid().to_string(), hex(&b)]}),
    );
    assert!(mined.get("hex").is_none());
    let block = rpc.ok("getblock", json!([mined["hash"]]));
    assert_eq!(
        block["tx"],
        json!([
            block["tx"][0],
            a.compute_txid().to_string(),
            b.compute_txid().to_string()
        ])
    );
    assert_eq!(
        rpc.ok("getrawmempool", json!([])),
        json!([]),
        "a mined transaction leaves the mempool"
    );
    assert_eq!(
        rpc.ok("getblockcount", json!([])),
        height.as_u64().unwrap() + 103
    );
    h.shutdown().unwrap();
}

#[test]
fn bad_input_gets_core_codes_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let s = Signer::new(75);
    let coins = fund(&rpc, &h, &s.p2tr(), 1);
    let tx = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    rpc.ok("sendrawtransaction", json!([hex(&tx)]));
    let before = state(&rpc);
    let addr = h.local_addr();
    let unchanged = |what: &str| assert_eq!(state(&rpc), before, "after {what}");

    // JSON-RPC layer: (body, HTTP status, expected reply).
    let cases: &[(&str, u16, &str)] = &[
        (
            "{",
            500,
            r#"{"result":null,"error":{"code":-32700,"message":"Parse error"},"id":null}"#,
        ),
        (
            "",
            500,
            r#"{"result":null,"error":{"code":-32700,"message":"Parse error"},"id":null}"#,
        ),
        (
            "\u{0}\u{ff}",
            500,
            r#"{"result":null,"error":{"code":-32700,"message":"Parse error"},"id":null}"#,
        ),
        (
            "42",
            500,
            r#"{"result":null,"error":{"code":-32700,"message":"Top-level object parse error"},"id":null}"#,
        ),
        ("[]", 200, "[]"),
        (
            r#"{"id":1}"#,
            400,
            r#"{"result":null,"error":{"code":-32600,"message":"Missing method"},"id":1}"#,
        ),
        (
            r#"{"method":1,"id":1}"#,
            400,
            r#"{"result":null,"error":{"code":-32600,"message":"Method must be a string"},"id":1}"#,
        ),
        (
            r#"{"method":"getblockcount","params":"x","id":1}"#,
            400,
            r#"{"result":null,"error":{"code":-32600,"message":"Params must be an array or object"},"id":1}"#,
        ),
        (
            r#"{"jsonrpc":"9","method":"getblockcount","id":1}"#,
            400,
            r#"{"result":null,"error":{"code":-32600,"message":"JSON-RPC version not supported"},"id":1}"#,
        ),
        (
            r#"{"method":"nosuchmethod","id":"x"}"#,
            404,
            r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":"x"}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"nosuchmethod","id":"x"}"#,
            200,
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"x"}"#,
        ),
        (
            r#"{"method":"getblockcount","id":[1,{"a":null}]}"#,
            200,
            r#"{"result":101,"error":null,"id":[1,{"a":null}]}"#,
        ),
        (
            r#"{"jsonrpc":"1.0","method":"getblockcount","id":null}"#,
            200,
            r#"{"result":101,"error":null,"id":null}"#,
        ),
        (
            r#"{"jsonrpc":"2.0","method":"getblockcount","id":null}"#,
            200,
            r#"{"jsonrpc":"2.0","result":101,"id":null}"#,
        ),
        (r#"{"jsonrpc":"2.0","method":"getblockcount"}"#, 204, ""),
        (r#"{"jsonrpc":"2.0","method":"nosuchmethod"}"#, 204, ""),
        (r#"[{"jsonrpc":"2.0","method":"getblockcount"}]"#, 204, ""),
        (
            r#"{"method":"getblockhash","params":["1"],"id":1}"#,
            500,
            r#"{"result":null,"error":{"code":-3,"message":"Wrong type passed:\n{\n    \"Position 1 (height)\": \"JSON value of type string is not of expected type number\"\n}"},"id":1}"#,
        ),
        (
            r#"{"method":"getblockhash","params":[1e20],"id":1}"#,
            500,
            r#"{"result":null,"error":{"code":-1,"message":"JSON integer out of range"},"id":1}"#,
        ),
        (
            r#"{"method":"getblockhash","params":[4294967296],"id":1}"#,
            500,
            r#"{"result":null,"error":{"code":-1,"message":"JSON integer out of range"},"id":1}"#,
        ),
        (
            r#"{"method":"getblockhash","params":{"height":1,"extra":2},"id":1}"#,
            500,
            r#"{"result":null,"error":{"code":-8,"message":"Unknown named parameter extra"},"id":1}"#,
        ),
        (
            r#"{"method":"getblockhash","params":{"height":-7},"id":1}"#,
            500,
            r#"{"result":null,"error":{"code":-8,"message":"Block height out of range"},"id":1}"#,
        ),
        (
            r#"{"method":"getblockhash","params":[null],"id":1}"#,
            500,
            r#"{"result":null,"error":{"code":-3,"message":"Wrong type passed:\n{\n    \"Position 1 (height)\": \"JSON value of type null is not of expected type number\"\n}"},"id":1}"#,
        ),
        (
            r#"{"method":"sendrawtransaction","params":["zz"],"id":1}"#,
            500,
            r#"{"result":null,"error":{"code":-22,"message":"TX decode failed. Make sure the tx has at least one input."},"id":1}"#,
        ),
        (
            r#"{"method":"generatetoaddress","params":[1],"id":1}"#,
            500,
            "",
        ),
        (r#"{"method":"getblockcount","params":[1],"id":1}"#, 500, ""),
    ];
    for (body, status, reply) in cases {
        let (got_status, got) = rpc.post(body);
        assert_eq!(got_status, *status, "{body}: {got}");
        if reply.is_empty() && *status == 500 {
            // Wrong argument count: Core answers -1 with the method's help.
            let v: Value = serde_json::from_str(&got).unwrap();
            assert_eq!(v["error"]["code"], -1, "{body}: {got}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains('\n'),
                "{got}"
            );
        } else if reply.is_empty() {
            assert_eq!(got, "", "{body}");
        } else {
            assert_eq!(got, format!("{reply}\n"), "{body}");
        }
        unchanged(body);
    }

    // Deep nesting is a parse error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, got) = rpc.post(&deep);
    assert_eq!(status, 500);
    assert!(got.contains("-32700"), "{got}");
    let deep_id = format!(
        r#"{{"method":"getblockcount","id":{}1{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    assert_eq!(rpc.post(&deep_id).0, 500);
    unchanged("deep nesting");

    // A batch mixing good and bad requests: each answered on its own, HTTP 200.
    let (status, got) = rpc.post(
        r#"[{"method":"getblockcount","id":1},{"method":"nope","id":2},7,{"jsonrpc":"2.0","method":"getblockcount"},{"jsonrpc":"2.0","method":"getblockhash","params":[999],"id":3},{"method":"sendrawtransaction","params":["00"],"id":4}]"#,
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        v,
        json!([
            {"result": 101, "error": null, "id": 1},
            {"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": 2},
            {"result": null, "error": {"code": -32600, "message": "Invalid Request object"}, "id": 2},
            {"jsonrpc": "2.0", "error": {"code": -8, "message": "Block height out of range"}, "id": 3},
            {"result": null, "error": {"code": -22, "message": "TX decode failed. Make sure the tx has at least one input."}, "id": 4},
        ])
    );
    unchanged("batch");

    // HTTP layer.
    let auth = rpc.auth.clone();
    let (status, head, body) = http(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(
        (status, body.as_str()),
        (405, "JSONRPC server handles only POST requests"),
        "{head}"
    );
    let (status, head, _) = http(
        addr,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"jsonrpc\""),
        "{head}"
    );
    let wrong =
        superscalar_chain::rpc::auth::Credentials::new("__cookie__", "wrong").basic_header();
    let body = r#"{"method":"stop","id":1}"#;
    let (status, head, _) = http(addr, &format!("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {wrong}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    assert_eq!(status, 401, "a wrong password cannot stop the server");
    assert!(
        head.to_ascii_lowercase().contains("www-authenticate"),
        "{head}"
    );
    let (status, _, _) = http(addr, &format!("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer xyz\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    assert_eq!(status, 401);
    // A body over 32 MiB, announced or sent.
    let (status, _, _) = http(addr, &format!("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 33554433\r\n\r\n"));
    assert_eq!(status, 413);
    let mut chunked = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..33 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, _, _) = http_bytes(addr, &chunked);
    assert_eq!(status, 413);
    // Headers over 8 KiB, and what is not HTTP.
    let (status, _, _) = http(
        addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(10_000)
        ),
    );
    assert_eq!(status, 431);
    let (status, _, _) = http(addr, "BLAH\r\n\r\n");
    assert_eq!(status, 400);
    unchanged("HTTP");

    // And it still answers.
    assert_eq!(rpc.ok("getblockcount", json!([])), 101);
    h.shutdown().unwrap();
}

#[test]
fn restart_keeps_tip_and_mempool_with_a_new_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let s = Signer::new(76);
    let h = start(dir.path());
    let cookie = dir.path().join("regtest").join(".cookie");
    assert_eq!(h.cookie_path(), Some(cookie.as_path()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cookie).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let first_cookie = std::fs::read_to_string(&cookie).unwrap();
    assert!(first_cookie.starts_with("__cookie__:"));
    let rpc = Client::new(&h);
    let coins = fund(&rpc, &h, &s.p2tr(), 3);
    let plain = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    let parent = anchored_parent(&s, coins[1].clone());
    let child = anchor_child(&s, &parent, coins[2].clone(), 2_000);
    rpc.ok("sendrawtransaction", json!([hex(&plain)]));
    rpc.ok("submitpackage", json!([[hex(&parent), hex(&child)]]));
    let (tip, pool) = state(&rpc);
    assert_eq!(pool.as_array().unwrap().len(), 3);

    // Stopped by the RPC: the reply first, then the server ends.
    assert_eq!(rpc.ok("stop", json!([])), "Bitcoin Core stopping");
    h.wait().unwrap();
    assert!(!cookie.exists(), "the cookie is removed at stop");
    assert!(dir.path().join("regtest").join("mempool.dat").exists());

    let h = start(dir.path());
    let second_cookie = std::fs::read_to_string(&cookie).unwrap();
    assert_ne!(first_cookie, second_cookie, "a new cookie each start");
    let rpc = Client::new(&h);
    let (tip2, pool2) = state(&rpc);
    assert_eq!(tip2, tip);
    let sorted = |v: &Value| {
        let mut a: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        a.sort();
        a
    };
    assert_eq!(
        sorted(&pool2),
        sorted(&pool),
        "the mempool, the zero-fee parent included"
    );
    assert_eq!(rpc.ok("getblockcount", json!([])), 103);
    // The old cookie no longer opens the door.
    let old = Client {
        addr: h.local_addr(),
        auth: superscalar_chain::rpc::auth::Credentials::new(
            "__cookie__",
            first_cookie.split_once(':').unwrap().1,
        )
        .basic_header(),
    };
    assert_eq!(old.post(r#"{"method":"getblockcount","id":1}"#).0, 401);
    // Mined after the restart, all three confirm.
    rpc.ok("generatetoaddress", json!([1, address(&burn())]));
    assert_eq!(rpc.ok("getrawmempool", json!([])), json!([]));
    assert_eq!(
        rpc.ok(
            "getrawtransaction",
            json!([child.compute_txid().to_string(), 1])
        )["confirmations"],
        1
    );
    h.shutdown().unwrap();
    assert!(!cookie.exists());
    // Stopped with an empty mempool: it comes back empty.
    let h = start(dir.path());
    assert_eq!(Client::new(&h).ok("getrawmempool", json!([])), json!([]));
    drop(h);
    assert!(!cookie.exists(), "dropping the handle stops the server too");
}

#[test]
fn remote_addresses_need_an_explicit_allowance_and_a_password() {
    use superscalar_chain::rpc::auth::Credentials;
    use superscalar_chain::rpc::server::{Chaind, ChaindConfig, ChaindError};
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "0.0.0.0:0".parse().unwrap();
    let refused = Chaind::start(ChaindConfig {
        bind: any,
        ..ChaindConfig::new(dir.path())
    });
    assert!(
        matches!(refused, Err(ChaindError::RemoteBind(_))),
        "{refused:?}"
    );
    let refused = Chaind::start(ChaindConfig {
        bind: any,
        allow_remote: true,
        ..ChaindConfig::new(dir.path())
    });
    assert!(
        matches!(refused, Err(ChaindError::RemoteBind(_))),
        "a cookie is not enough"
    );
    let creds = Credentials::new("alice", "correct horse");
    let h = Chaind::start(ChaindConfig {
        bind: any,
        allow_remote: true,
        credentials: Some(creds.clone()),
        ..ChaindConfig::new(dir.path())
    })
    .unwrap();
    assert_eq!(h.cookie_path(), None);
    assert!(!dir.path().join("regtest").join(".cookie").exists());
    let port = h.local_addr().port();
    assert_ne!(port, 0);
    let rpc = Client::with_credentials(([127, 0, 0, 1], port).into(), &creds);
    assert_eq!(rpc.ok("getblockcount", json!([])), 0);
    let wrong = Client::with_credentials(
        ([127, 0, 0, 1], port).into(),
        &Credentials::new("alice", "wrong"),
    );
    assert_eq!(wrong.post(r#"{"method":"getblockcount","id":1}"#).0, 401);
    // Loopback with user and password, no allowance needed.
    h.shutdown().unwrap();
    let h = Chaind::start(ChaindConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        credentials: Some(creds.clone()),
        ..ChaindConfig::new(dir.path())
    })
    .unwrap();
    assert_eq!(
        Client::with_credentials(h.local_addr(), &creds).ok("getblockcount", json!([])),
        0
    );
    // The same data directory cannot serve twice at once.
    let twice = Chaind::start(ChaindConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ChaindConfig::new(dir.path())
    });
    assert!(twice.is_err(), "a second chaind on the same data directory");
    h.shutdown().unwrap();
}

#[test]
fn idle_and_silent_connections_do_not_pin_the_server() {
    use std::io::Write;
    use superscalar_chain::rpc::server::ChaindConfig;
    let dir = tempfile::tempdir().unwrap();
    let h = start_with(ChaindConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        max_connections: 2,
        timeout: std::time::Duration::from_millis(300),
        ..ChaindConfig::new(dir.path())
    });
    let rpc = Client::new(&h);
    // Two connections take both slots: one idle, one sending half a head and then nothing.
    let idle = std::net::TcpStream::connect(h.local_addr()).unwrap();
    let mut half = std::net::TcpStream::connect(h.local_addr()).unwrap();
    half.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Both are dropped after the timeout, and the next request is served.
    assert_eq!(rpc.ok("getblockcount", json!([])), 0);
    for mut s in [idle, half] {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    }
    // A body that never comes: 408, then the connection is closed.
    let mut slow = std::net::TcpStream::connect(h.local_addr()).unwrap();
    write!(
        slow,
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 100\r\n\r\n{{",
        rpc.auth
    )
    .unwrap();
    let (status, _, _) = read_response(&mut slow);
    assert_eq!(status, 408);
    assert_eq!(rpc.ok("getblockcount", json!([])), 0);
    h.shutdown().unwrap();
}

#[test]
fn long_mining_does_not_hold_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path());
    let rpc = Client::new(&h);
    let miner = {
        let rpc = Client {
            addr: rpc.addr,
            auth: rpc.auth.clone(),
        };
        std::thread::spawn(move || rpc.ok("generatetoaddress", json!([3000, address(&burn())])))
    };
    // While the miner works, other requests are answered with the chain as it grows.
    let mut seen_between = false;
    while !miner.is_finished() {
        let n = rpc.ok("getblockcount", json!([])).as_u64().unwrap();
        if n > 0 && n < 3000 {
            seen_between = true;
        }
    }
    let hashes = miner.join().unwrap();
    assert_eq!(hashes.as_array().unwrap().len(), 3000);
    assert!(seen_between, "no request was answered while mining");
    assert_eq!(rpc.ok("getblockcount", json!([])), 3000);
    // A stop during a long call ends it early, and its caller still gets the blocks mined.
    let miner = {
        let rpc = Client {
            addr: rpc.addr,
            auth: rpc.auth.clone(),
        };
        std::thread::spawn(move || rpc.call("generatetoaddress", json!([10_000, address(&burn())])))
    };
    while h.chain().tip().unwrap().height < 3010 {
        std::thread::yield_now();
    }
    // (Asked through the handle here; the stop RPC does the same.)
    h.request_stop();
    let partial = miner.join().unwrap().unwrap();
    assert!(partial.as_array().unwrap().len() < 10_000);
    h.wait().unwrap();
}
