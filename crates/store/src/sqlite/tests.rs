//! Tests that need the store's insides: migrations from old versions, refused databases, and
//! damaged records written behind the API's back.

use super::migrations::{Migration, MIGRATIONS};
use super::*;
use bitcoin::secp256k1::{Secp256k1, SecretKey};

fn node_meta() -> NodeMeta {
    let secp = Secp256k1::new();
    NodeMeta {
        role: Role::Lsp,
        network: Network::Regtest,
        node_id: PublicKey::from_secret_key(&secp, &SecretKey::from_slice(&[7; 32]).unwrap()),
    }
}

fn factory(id: u8) -> FactoryRecord {
    FactoryRecord {
        id: FactoryId([id; 32]),
        params: vec![1, 2, 3, id],
        status: FactoryStatus::Forming,
        created_height: 100,
        timeout_height: 5000,
        funding: None,
        key_index: KeyIndex::new(id as u32).unwrap(),
    }
}

fn tx(n: u32) -> bitcoin::Transaction {
    bitcoin::Transaction {
        version: bitcoin::transaction::Version::non_standard(3),
        lock_time: bitcoin::absolute::LockTime::from_consensus(n),
        input: vec![bitcoin::TxIn::default()],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(1000 + n as u64),
            script_pubkey: bitcoin::ScriptBuf::new(),
        }],
    }
}

#[test]
fn connection_settings_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let q = |p: &str| -> String {
        store
            .conn
            .pragma_query_value(None, p, |r| r.get::<_, rusqlite::types::Value>(0))
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert_eq!(q("journal_mode"), "Text(\"wal\")");
    assert_eq!(q("synchronous"), "Integer(2)");
    assert_eq!(q("foreign_keys"), "Integer(1)");
    assert_eq!(
        store.schema_version().unwrap(),
        migrations::current_version()
    );
    assert!(migrations::current_version() >= 2);
}

#[test]
fn a_version_1_database_with_data_migrates_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    let f = factory(1);
    let channel = ChannelRecord {
        id: ChannelId([9; 32]),
        factory: f.id,
        key_index: KeyIndex::new(0).unwrap(),
        state: b"channel state 3".to_vec(),
        commitment_number: CommitmentNumber::new(3).unwrap(),
    };
    let secret = ReceivedSecret {
        commitment: CommitmentNumber::new(2).unwrap(),
        secret: [0x55; 32],
    };
    let preimage = Preimage([0x42; 32]);
    let op = OutPoint {
        txid: tx(1).compute_txid(),
        vout: 0,
    };
    let spend = Spend {
        role: TxLabel::new("-").unwrap(),
        sighash: [3; 32],
        txid: tx(2).compute_txid(),
    };
    {
        // The program as it was at schema version 1.
        let mut v1 = Store::open_with(&path, MIGRATIONS, 1).unwrap();
        assert_eq!(v1.schema_version().unwrap(), 1);
        v1.init_node(&node_meta()).unwrap();
        v1.insert_factory(&f).unwrap();
        v1.append_factory_state(f.id, Party::Client(0), 0, b"v0")
            .unwrap();
        v1.append_factory_state(f.id, Party::Client(0), 1, b"v1")
            .unwrap();
        v1.add_signed_txs(
            f.id,
            &[SignedTx {
                label: TxLabel::new("kickoff/0").unwrap(),
                tx: tx(1),
            }],
        )
        .unwrap();
        v1.insert_channel(&channel).unwrap();
        v1.save_channel_update(
            channel.id,
            &channel.state,
            channel.commitment_number,
            Some(secret),
        )
        .unwrap();
        // Version 1 kept one spend per outpoint, without a role.
        v1.conn
            .execute(
                "INSERT INTO signed_outpoints (txid, vout, sighash, spend_txid) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    &op.txid.to_byte_array()[..],
                    op.vout,
                    &spend.sighash[..],
                    &spend.txid.to_byte_array()[..]
                ],
            )
            .unwrap();
        v1.watch(&WatchEntry {
            outpoint: op,
            factory: Some(f.id),
            action: WatchAction::Punish,
        })
        .unwrap();
        // Invoices as version 1 wrote them (no claim deadline column yet).
        v1.conn
            .execute(
                "INSERT INTO invoices (payment_hash, direction, preimage, amount_msat, status, bolt11) \
                 VALUES (?1, 'inbound', ?2, 5000, 'paid', 'lnbcrt1...')",
                params![&preimage.payment_hash().0[..], &preimage.0[..]],
            )
            .unwrap();
        assert!(v1
            .conn
            .execute("UPDATE invoices SET claim_deadline = 1", [])
            .is_err());
    }
    let mut store = Store::open_file(&path).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        migrations::current_version()
    );
    assert_eq!(store.node().unwrap(), Some(node_meta()));
    assert_eq!(store.factory(f.id).unwrap(), Some(f.clone()));
    assert_eq!(
        store.factory_state_history(f.id, Party::Client(0)).unwrap(),
        vec![(0, b"v0".to_vec()), (1, b"v1".to_vec())]
    );
    assert_eq!(store.signed_txs(f.id).unwrap()[0].tx, tx(1));
    assert_eq!(store.channel(channel.id).unwrap(), Some(channel.clone()));
    assert_eq!(store.received_secrets(channel.id).unwrap(), vec![secret]);
    assert_eq!(
        store.recorded_spend(op, &spend.role).unwrap(),
        Some(spend.clone())
    );
    assert_eq!(store.watch_list().unwrap().len(), 1);
    let inv = store.invoice(preimage.payment_hash()).unwrap().unwrap();
    assert_eq!(inv.status, InvoiceStatus::Paid);
    assert_eq!(inv.preimage, Some(preimage));
    assert_eq!(inv.amount, Some(Msat(5000)));
    assert_eq!(inv.claim_deadline, None);
    // What version 2 added works on the migrated data.
    store
        .set_claim_deadline(preimage.payment_hash(), Some(700))
        .unwrap();
    assert_eq!(
        store
            .invoice(preimage.payment_hash())
            .unwrap()
            .unwrap()
            .claim_deadline,
        Some(700)
    );
    assert_eq!(store.unwatch_factory(f.id).unwrap(), 1);
    let indexes: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' \
             AND name IN ('invoices_by_status', 'watch_by_factory')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 2);
    // Opening again changes nothing.
    drop(store);
    assert_eq!(
        Store::open_file(&path).unwrap().schema_version().unwrap(),
        migrations::current_version()
    );
}

#[test]
fn a_failed_migration_leaves_the_previous_version_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    Store::open_with(&path, MIGRATIONS, 1)
        .unwrap()
        .init_node(&node_meta())
        .unwrap();
    let broken = [
        Migration {
            description: "first schema",
            sql: MIGRATIONS[0].sql,
        },
        Migration {
            description: "half-good step",
            sql: "CREATE TABLE half (a INTEGER); ALTER TABLE nonexistent ADD COLUMN b INTEGER;",
        },
    ];
    let err = Store::open_with(&path, &broken, 2).unwrap_err();
    assert!(
        matches!(err, StoreError::Migration { version: 2, .. }),
        "{err:?}"
    );
    let store = Store::open_with(&path, MIGRATIONS, 1).unwrap();
    assert_eq!(store.schema_version().unwrap(), 1);
    let half: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'half'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(half, 0);
    assert_eq!(store.node().unwrap(), Some(node_meta()));
}

#[test]
fn a_newer_or_foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    drop(Store::open_file(&path).unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Store::open_file(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported
            } if supported == migrations::current_version()
        ),
        "{err:?}"
    );

    let other = dir.path().join("other.sqlite3");
    {
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE accounts (id INTEGER)")
            .unwrap();
    }
    assert!(matches!(
        Store::open_file(&other),
        Err(StoreError::NotOurDatabase(0))
    ));
    {
        let conn = Connection::open(&other).unwrap();
        conn.pragma_update(None, "application_id", 1234).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    assert!(matches!(
        Store::open_file(&other),
        Err(StoreError::NotOurDatabase(1234))
    ));
}

#[test]
fn files_that_are_not_databases_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.sqlite3");
    std::fs::write(&garbage, vec![0xa5u8; 8192]).unwrap();
    assert!(matches!(
        Store::open_file(&garbage),
        Err(StoreError::Sqlite(_))
    ));

    // A real store cut in half.
    let path = dir.path().join(DB_FILE_NAME);
    {
        let mut store = Store::open_file(&path).unwrap();
        store.init_node(&node_meta()).unwrap();
        for i in 0..50 {
            store.insert_factory(&factory(i)).unwrap();
        }
    }
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192);
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    // Either opening or reading fails with a typed error; nothing panics.
    if let Ok(store) = Store::open_file(&path) {
        assert!(store.factories().is_err());
    }
}

#[test]
fn damaged_records_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.init_node(&node_meta()).unwrap();
    let f = factory(1);
    store.insert_factory(&f).unwrap();
    let channel = ChannelRecord {
        id: ChannelId([9; 32]),
        factory: f.id,
        key_index: KeyIndex::new(0).unwrap(),
        state: vec![1],
        commitment_number: CommitmentNumber::new(0).unwrap(),
    };
    store.insert_channel(&channel).unwrap();
    store
        .add_signed_txs(
            f.id,
            &[SignedTx {
                label: TxLabel::new("kickoff/0").unwrap(),
                tx: tx(1),
            }],
        )
        .unwrap();
    let op = OutPoint {
        txid: tx(1).compute_txid(),
        vout: 0,
    };
    store
        .watch(&WatchEntry {
            outpoint: op,
            factory: None,
            action: WatchAction::Report,
        })
        .unwrap();
    let preimage = Preimage([1; 32]);
    store
        .insert_invoice(&Invoice {
            payment_hash: preimage.payment_hash(),
            direction: InvoiceDirection::Inbound,
            preimage: None,
            amount: None,
            status: InvoiceStatus::Open,
            bolt11: "lnbcrt".into(),
            claim_deadline: None,
        })
        .unwrap();
    store
        .record_spends(&[(
            op,
            Spend {
                role: TxLabel::new("kickoff/0").unwrap(),
                sighash: [1; 32],
                txid: op.txid,
            },
        )])
        .unwrap();

    // Write damage behind the API's back (as a bad disk or an editor would).
    let damage = |store: &Store, sql: &str| {
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA ignore_check_constraints = ON; PRAGMA foreign_keys = OFF; {sql}; \
                 PRAGMA ignore_check_constraints = OFF; PRAGMA foreign_keys = ON;"
            ))
            .unwrap()
    };
    let corrupt = |r: std::result::Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("{what}: {other:?}"),
    };

    damage(&store, "UPDATE factories SET status = 'bogus'");
    corrupt(store.factory(f.id).map(drop), "status");
    corrupt(store.factories().map(drop), "status in list");
    damage(
        &store,
        "UPDATE factories SET status = 'forming', funding_txid = x'0102', funding_vout = 1",
    );
    corrupt(store.factory(f.id).map(drop), "short txid");
    damage(
        &store,
        "UPDATE factories SET funding_txid = NULL, funding_vout = NULL, key_index = -5",
    );
    corrupt(store.factory(f.id).map(drop), "key index");
    damage(&store, "UPDATE factories SET key_index = 1");
    assert_eq!(store.factory(f.id).unwrap(), Some(f.clone()));

    damage(&store, "UPDATE factory_txs SET raw_tx = x'deadbeef'");
    corrupt(store.signed_txs(f.id).map(drop), "raw tx");
    damage(
        &store,
        &format!(
            "UPDATE factory_txs SET raw_tx = x'{}'",
            bitcoin::consensus::encode::serialize_hex(&tx(2))
        ),
    );
    corrupt(store.signed_txs(f.id).map(drop), "txid mismatch");

    damage(&store, "UPDATE watch SET action = x'0109'");
    corrupt(store.watch_list().map(drop), "watch tag");
    corrupt(store.watched(op).map(drop), "watch tag");
    damage(&store, "UPDATE watch SET action = x'02'");
    corrupt(store.watched(op).map(drop), "watch version");

    damage(
        &store,
        "UPDATE channels SET commitment_number = 281474976710656",
    );
    corrupt(store.channel(channel.id).map(drop), "commitment number");
    damage(
        &store,
        "UPDATE channels SET commitment_number = 0, channel_id = x'00'",
    );
    corrupt(store.channels(f.id).map(drop), "channel id");

    damage(&store, "UPDATE invoices SET preimage = zeroblob(32)");
    corrupt(store.invoice(preimage.payment_hash()).map(drop), "preimage");
    damage(
        &store,
        "UPDATE invoices SET preimage = NULL, status = 'weird'",
    );
    corrupt(
        store.invoice(preimage.payment_hash()).map(drop),
        "invoice status",
    );
    damage(
        &store,
        "UPDATE invoices SET status = 'open', amount_msat = -1",
    );
    corrupt(
        store.invoice(preimage.payment_hash()).map(drop),
        "negative amount",
    );

    damage(&store, "UPDATE node SET node_id = zeroblob(33)");
    corrupt(store.node().map(drop), "node id");
    damage(&store, "UPDATE node SET network = 'moon'");
    corrupt(store.node().map(drop), "network");

    // signed_spends is append-only even for raw SQL: damage it by rebuilding the row.
    damage(
        &store,
        "DROP TRIGGER signed_spends_no_update; UPDATE signed_spends SET sighash = x'00'",
    );
    corrupt(
        store
            .recorded_spend(op, &TxLabel::new("kickoff/0").unwrap())
            .map(drop),
        "sighash",
    );
}

#[test]
fn histories_and_signed_spends_are_append_only_in_sql_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let f = factory(1);
    store.insert_factory(&f).unwrap();
    store
        .append_factory_state(f.id, Party::Lsp, 0, b"zero")
        .unwrap();
    store
        .record_spends(&[(
            OutPoint::null(),
            Spend {
                role: TxLabel::new("kickoff/0").unwrap(),
                sighash: [1; 32],
                txid: tx(1).compute_txid(),
            },
        )])
        .unwrap();
    for sql in [
        "UPDATE factory_states SET state = x'00'",
        "DELETE FROM factory_states",
        "UPDATE signed_spends SET sighash = zeroblob(32)",
        "DELETE FROM signed_spends",
    ] {
        let err = store.conn.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[test]
fn liquidity_orders_move_through_their_states_and_damage_is_a_typed_error() {
    use bitcoin::hashes::{sha256, Hash};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.init_node(&node_meta()).unwrap();
    let f = factory(1);
    store.insert_factory(&f).unwrap();
    let preimage = [4u8; 32];
    let hash = PaymentHash(sha256::Hash::hash(&preimage).to_byte_array());
    let invoice = Invoice {
        payment_hash: hash,
        direction: InvoiceDirection::Inbound,
        preimage: Some(Preimage(preimage)),
        amount: Some(Msat(1_000_000)),
        status: InvoiceStatus::Open,
        bolt11: "lnbcrt10u1...".into(),
        claim_deadline: None,
    };
    let order = LiquidityOrder {
        payment_hash: hash,
        factory: f.id,
        client: 3,
        amount_sat: 50_000,
        fee_sat: 1_000,
        status: OrderStatus::Offered,
    };
    // An order whose hash is not its invoice's, or of no factory, is refused; nothing written.
    let mut other = order.clone();
    other.payment_hash = PaymentHash([1; 32]);
    assert!(store.insert_liquidity_order(&invoice, &other).is_err());
    let mut orphan = order.clone();
    orphan.factory = FactoryId([9; 32]);
    assert!(store.insert_liquidity_order(&invoice, &orphan).is_err());
    assert_eq!(store.invoice(hash).unwrap(), None);

    store.insert_liquidity_order(&invoice, &order).unwrap();
    assert_eq!(store.liquidity_order(hash).unwrap(), Some(order.clone()));
    assert_eq!(store.invoice(hash).unwrap(), Some(invoice.clone()));
    assert!(matches!(
        store.insert_liquidity_order(&invoice, &order),
        Err(StoreError::InvoiceExists(_))
    ));
    assert!(store.open_liquidity_orders().unwrap().is_empty());
    for status in [OrderStatus::Paid, OrderStatus::Selling(2)] {
        store.set_order_status(hash, status).unwrap();
        let open = store.open_liquidity_orders().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].status, status);
    }
    store.set_order_status(hash, OrderStatus::Sold(2)).unwrap();
    assert!(store.open_liquidity_orders().unwrap().is_empty());
    assert_eq!(
        store.liquidity_order(hash).unwrap().unwrap().status,
        OrderStatus::Sold(2)
    );
    assert!(store
        .set_order_status(PaymentHash([2; 32]), OrderStatus::Paid)
        .is_err());

    // A status without its sale index, written behind the API's back, is a typed error.
    store
        .conn
        .execute(
            "UPDATE liquidity_orders SET sale = NULL WHERE payment_hash = ?1",
            [&hash.0[..]],
        )
        .unwrap();
    assert!(matches!(
        store.liquidity_order(hash),
        Err(StoreError::Corrupt { .. })
    ));
}
