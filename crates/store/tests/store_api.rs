//! The store's API: each record kind round-trips, every refusal is typed, and a write that fails
//! part-way changes nothing.

mod common;

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use bitcoin::Network;
use common::*;
use superscalar_store::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("node")).unwrap();
    (dir, store)
}

fn meta(role: Role, network: Network) -> NodeMeta {
    NodeMeta {
        role,
        network,
        node_id: PublicKey::from_secret_key(
            &Secp256k1::new(),
            &SecretKey::from_slice(&[3; 32]).unwrap(),
        ),
    }
}

#[test]
fn node_metadata_is_set_once() {
    let (dir, mut store) = open();
    assert_eq!(store.node().unwrap(), None);
    let m = meta(Role::Client, Network::Regtest);
    store.init_node(&m).unwrap();
    store.init_node(&m).unwrap();
    assert!(matches!(
        store.init_node(&meta(Role::Lsp, Network::Regtest)),
        Err(StoreError::NodeMismatch { .. })
    ));
    assert!(matches!(
        store.init_node(&meta(Role::Client, Network::Bitcoin)),
        Err(StoreError::NodeMismatch { .. })
    ));
    drop(store);
    let store = Store::open(&dir.path().join("node")).unwrap();
    assert_eq!(store.node().unwrap(), Some(m));
}

#[test]
fn key_indices_are_never_handed_out_twice() {
    let (dir, mut store) = open();
    let a = store.allocate_key_index(KeyFamily::Factory).unwrap();
    let b = store.allocate_key_index(KeyFamily::Factory).unwrap();
    let c = store.allocate_key_index(KeyFamily::Channel).unwrap();
    assert_eq!((a.get(), b.get(), c.get()), (0, 1, 0));
    drop(store);
    let mut store = Store::open(&dir.path().join("node")).unwrap();
    assert_eq!(
        store.allocate_key_index(KeyFamily::Factory).unwrap().get(),
        2
    );
}

#[test]
fn factories_statuses_funding_and_signed_transactions() {
    let (_dir, mut store) = open();
    let f = factory(1, KeyIndex::new(0).unwrap());
    store.insert_factory(&f).unwrap();
    assert!(matches!(
        store.insert_factory(&f),
        Err(StoreError::FactoryExists(_))
    ));
    let unknown = FactoryId([0xee; 32]);
    assert!(matches!(
        store.set_factory_status(unknown, FactoryStatus::Live),
        Err(StoreError::UnknownFactory(_))
    ));

    store
        .set_factory_status(f.id, FactoryStatus::Signed)
        .unwrap();
    assert!(matches!(
        store.set_factory_status(f.id, FactoryStatus::Forming),
        Err(StoreError::FactoryStatus { .. })
    ));
    store.set_factory_funding(f.id, outpoint(50, 1)).unwrap();
    store.set_factory_funding(f.id, outpoint(50, 1)).unwrap();
    assert!(matches!(
        store.set_factory_funding(f.id, outpoint(50, 2)),
        Err(StoreError::FundingConflict { .. })
    ));
    store.set_factory_status(f.id, FactoryStatus::Live).unwrap();
    assert!(matches!(
        store.set_factory_status(f.id, FactoryStatus::Aborted),
        Err(StoreError::FactoryStatus { .. })
    ));
    let got = store.factory(f.id).unwrap().unwrap();
    assert_eq!(got.status, FactoryStatus::Live);
    assert_eq!(got.funding, Some(outpoint(50, 1)));

    let signed = |label: &str, n| SignedTx {
        label: TxLabel::new(label).unwrap(),
        tx: tx(n),
    };
    store
        .add_signed_txs(f.id, &[signed("kickoff/0", 1), signed("state/0/0", 2)])
        .unwrap();
    store
        .add_signed_txs(f.id, &[signed("kickoff/0", 1)])
        .unwrap();
    // Same txid, other witness: refused, and the batch it came in with is not stored.
    let mut other = tx(3);
    other.input[0].witness.push([1u8; 64]);
    store
        .add_signed_txs(f.id, &[signed("timeout/0", 3)])
        .unwrap();
    assert!(matches!(
        store.add_signed_txs(
            f.id,
            &[
                signed("timeout/1", 4),
                SignedTx {
                    label: TxLabel::new("timeout/0").unwrap(),
                    tx: other,
                }
            ]
        ),
        Err(StoreError::TxConflict { .. })
    ));
    let labels: Vec<_> = store
        .signed_txs(f.id)
        .unwrap()
        .into_iter()
        .map(|s| s.label.to_string())
        .collect();
    assert_eq!(labels, ["kickoff/0", "state/0/0", "timeout/0"]);
    assert_eq!(store.factories().unwrap().len(), 1);
}

#[test]
fn factory_state_versions_are_append_only() {
    let (_dir, mut store) = open();
    let f = factory(1, KeyIndex::new(0).unwrap());
    store.insert_factory(&f).unwrap();
    let p = Party::Client(4);
    assert!(matches!(
        store.append_factory_state(f.id, p, 1, b"one"),
        Err(StoreError::VersionGap {
            expected: 0,
            given: 1,
            ..
        })
    ));
    store.append_factory_state(f.id, p, 0, b"zero").unwrap();
    store.append_factory_state(f.id, p, 1, b"one").unwrap();
    // Retrying the last append is harmless; rewriting history is not.
    store.append_factory_state(f.id, p, 1, b"one").unwrap();
    assert!(matches!(
        store.append_factory_state(f.id, p, 1, b"uno"),
        Err(StoreError::VersionGap { expected: 2, .. })
    ));
    assert!(matches!(
        store.append_factory_state(f.id, p, 0, b"zero"),
        Err(StoreError::VersionGap { expected: 2, .. })
    ));
    store
        .append_factory_state(f.id, Party::Lsp, 0, b"lsp")
        .unwrap();
    assert_eq!(
        store.latest_factory_state(f.id, p).unwrap(),
        Some((1, b"one".to_vec()))
    );
    assert_eq!(store.factory_state_history(f.id, p).unwrap().len(), 2);
    assert_eq!(store.factory_parties(f.id).unwrap(), [Party::Lsp, p]);
    assert_eq!(
        store.latest_factory_state(f.id, Party::Client(0)).unwrap(),
        None
    );
}

#[test]
fn never_two_different_spends_of_one_outpoint() {
    let (dir, mut store) = open();
    let op = outpoint(1, 0);
    store.record_spends(&[(op, spend(10))]).unwrap();
    // The same spend again (a retried signature) is fine.
    store.record_spends(&[(op, spend(10))]).unwrap();
    match store.record_spends(&[(op, spend(11))]) {
        Err(StoreError::ConflictingSpend {
            outpoint,
            recorded,
            attempted,
        }) => {
            assert_eq!(outpoint, op);
            assert_eq!(*recorded, spend(10));
            assert_eq!(*attempted, spend(11));
        }
        other => panic!("{other:?}"),
    }
    // Same transaction, other sighash (another sighash type): a different spend too.
    let mut other = spend(10);
    other.sighash[0] ^= 1;
    assert!(matches!(
        store.record_spends(&[(op, other)]),
        Err(StoreError::ConflictingSpend { .. })
    ));
    // A batch with one conflict records none of its spends.
    let fresh = outpoint(2, 0);
    assert!(store
        .record_spends(&[(fresh, spend(12)), (op, spend(13))])
        .is_err());
    assert_eq!(store.recorded_spend(fresh, &spend(12).role).unwrap(), None);
    // It holds across restarts.
    drop(store);
    let mut store = Store::open(&dir.path().join("node")).unwrap();
    assert_eq!(
        store.recorded_spend(op, &spend(10).role).unwrap(),
        Some(spend(10))
    );
    assert!(store.record_spends(&[(op, spend(14))]).is_err());
    // Another role of the same outpoint (a kickoff and the timeout of one output) is its own
    // spend, and conflicts only with itself.
    let mut timeout = spend(15);
    timeout.role = TxLabel::new("timeout/in/0").unwrap();
    store.record_spends(&[(op, timeout.clone())]).unwrap();
    assert_eq!(
        store.recorded_spends(op).unwrap(),
        vec![spend(10), timeout.clone()]
    );
    let mut other = spend(16);
    other.role = timeout.role.clone();
    assert!(store.record_spends(&[(op, other)]).is_err());
}

#[test]
fn ceremonies_record_rounds_atomically() {
    let (_dir, mut store) = open();
    let f = factory(1, KeyIndex::new(0).unwrap());
    store.insert_factory(&f).unwrap();
    let round = |r, parts: Vec<Party>| CeremonyRound {
        factory: f.id,
        round: r,
        participants: parts,
    };
    assert!(matches!(
        store.record_ceremony_round(&round(1, vec![]), &[]),
        Err(StoreError::BadParticipants(_))
    ));
    assert!(matches!(
        store.record_ceremony_round(&round(1, vec![Party::Lsp, Party::Lsp]), &[]),
        Err(StoreError::BadParticipants(_))
    ));
    let all = vec![Party::Lsp, Party::Client(0), Party::Client(1)];
    store
        .record_ceremony_round(&round(1, all.clone()), &[])
        .unwrap();
    store
        .record_ceremony_round(&round(2, all.clone()), &[(outpoint(1, 0), spend(1))])
        .unwrap();
    assert_eq!(store.ceremony(f.id).unwrap(), Some(round(2, all.clone())));

    // A round whose spends conflict with one already signed is not recorded at all.
    let fewer = vec![Party::Lsp, Party::Client(1)];
    let err = store
        .record_ceremony_round(
            &round(1, fewer.clone()),
            &[(outpoint(2, 0), spend(2)), (outpoint(1, 0), spend(3))],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::ConflictingSpend { .. }));
    assert_eq!(store.ceremony(f.id).unwrap(), Some(round(2, all.clone())));
    assert_eq!(
        store
            .recorded_spend(outpoint(2, 0), &spend(0).role)
            .unwrap(),
        None
    );

    // Restarting without a client.
    store
        .record_ceremony_round(&round(1, fewer.clone()), &[])
        .unwrap();
    assert_eq!(store.ceremonies().unwrap(), vec![round(1, fewer)]);

    // Finishing with a status that goes backwards fails whole: the ceremony stays, no
    // transaction is stored.
    store
        .set_factory_status(f.id, FactoryStatus::Signed)
        .unwrap();
    let txs = [SignedTx {
        label: TxLabel::new("kickoff/0").unwrap(),
        tx: tx(1),
    }];
    assert!(matches!(
        store.finish_ceremony(f.id, FactoryStatus::Forming, &txs),
        Err(StoreError::FactoryStatus { .. })
    ));
    assert!(store.ceremony(f.id).unwrap().is_some());
    assert!(store.signed_txs(f.id).unwrap().is_empty());
    store
        .finish_ceremony(f.id, FactoryStatus::Signed, &txs)
        .unwrap();
    assert_eq!(store.ceremony(f.id).unwrap(), None);
    assert_eq!(store.signed_txs(f.id).unwrap().len(), 1);
    assert!(matches!(
        store.finish_ceremony(f.id, FactoryStatus::Signed, &txs),
        Err(StoreError::NoCeremony(_))
    ));
    // Aborting keeps the recorded spends.
    store
        .record_ceremony_round(&round(1, vec![Party::Lsp]), &[])
        .unwrap();
    store.abort_ceremony(f.id).unwrap();
    assert!(store.ceremonies().unwrap().is_empty());
    assert_eq!(
        store
            .recorded_spend(outpoint(1, 0), &spend(0).role)
            .unwrap(),
        Some(spend(1))
    );
}

#[test]
fn channel_updates_are_all_or_nothing() {
    let (_dir, mut store) = open();
    let f = factory(1, KeyIndex::new(0).unwrap());
    store.insert_factory(&f).unwrap();
    let id = ChannelId([5; 32]);
    let n = |x| CommitmentNumber::new(x).unwrap();
    let ch = ChannelRecord {
        id,
        factory: f.id,
        key_index: KeyIndex::new(3).unwrap(),
        state: b"state 0".to_vec(),
        commitment_number: n(0),
    };
    store.insert_channel(&ch).unwrap();
    assert!(matches!(
        store.insert_channel(&ch),
        Err(StoreError::ChannelExists(_))
    ));
    assert!(matches!(
        store.insert_channel(&ChannelRecord {
            factory: FactoryId([0xee; 32]),
            id: ChannelId([6; 32]),
            ..ch.clone()
        }),
        Err(StoreError::UnknownFactory(_))
    ));
    let secret = |c, b| ReceivedSecret {
        commitment: n(c),
        secret: [b; 32],
    };
    store
        .save_channel_update(id, b"state 1", n(1), Some(secret(0, 0xa0)))
        .unwrap();
    store
        .save_channel_update(id, b"state 2", n(2), Some(secret(1, 0xa1)))
        .unwrap();
    // A different secret for commitment 1: nothing of the update is kept.
    assert!(matches!(
        store.save_channel_update(id, b"state 3", n(3), Some(secret(1, 0xff))),
        Err(StoreError::SecretConflict { .. })
    ));
    let got = store.channel(id).unwrap().unwrap();
    assert_eq!(
        (got.state.as_slice(), got.commitment_number),
        (&b"state 2"[..], n(2))
    );
    // Going backwards is refused.
    assert!(matches!(
        store.save_channel_update(id, b"state 1", n(1), None),
        Err(StoreError::StaleCommitment { .. })
    ));
    // The same secret again is fine; the state may change within a commitment number.
    store
        .save_channel_update(id, b"state 2 + htlc", n(2), Some(secret(1, 0xa1)))
        .unwrap();
    assert_eq!(
        store.received_secrets(id).unwrap(),
        vec![secret(0, 0xa0), secret(1, 0xa1)]
    );
    assert_eq!(store.received_secret(id, n(1)).unwrap(), Some([0xa1; 32]));
    assert_eq!(store.received_secret(id, n(2)).unwrap(), None);
    assert_eq!(store.channels(f.id).unwrap().len(), 1);
    assert!(matches!(
        store.save_channel_update(ChannelId([7; 32]), b"x", n(1), None),
        Err(StoreError::UnknownChannel(_))
    ));
    assert!(CommitmentNumber::new(1 << 48).is_err());
}

#[test]
fn punishments_and_watch_list() {
    let (_dir, mut store) = open();
    let f = factory(1, KeyIndex::new(0).unwrap());
    store.insert_factory(&f).unwrap();
    let breach = tx(20).compute_txid();
    let p = Punishment {
        breach_txid: breach,
        factory: Some(f.id),
        channel: None,
        tx: tx(21),
    };
    store.add_punishment(&p).unwrap();
    store.add_punishment(&p).unwrap();
    assert!(matches!(
        store.add_punishment(&Punishment {
            breach_txid: tx(22).compute_txid(),
            ..p.clone()
        }),
        Err(StoreError::TxConflict { .. })
    ));
    assert!(matches!(
        store.add_punishment(&Punishment {
            factory: None,
            ..p.clone()
        }),
        Err(StoreError::PunishmentWithoutOwner)
    ));
    assert!(matches!(
        store.add_punishment(&Punishment {
            channel: Some(ChannelId([1; 32])),
            tx: tx(23),
            ..p.clone()
        }),
        Err(StoreError::UnknownChannel(_))
    ));
    assert_eq!(store.punishments_for(breach).unwrap(), vec![p]);

    let e1 = WatchEntry {
        outpoint: outpoint(1, 0),
        factory: Some(f.id),
        action: WatchAction::Broadcast(tx(30)),
    };
    let e2 = WatchEntry {
        outpoint: outpoint(2, 1),
        factory: None,
        action: WatchAction::Sweep,
    };
    store.watch(&e1).unwrap();
    store.watch(&e2).unwrap();
    // A newer answer replaces the old one.
    let e1b = WatchEntry {
        action: WatchAction::Broadcast(tx(31)),
        ..e1.clone()
    };
    store.watch(&e1b).unwrap();
    assert_eq!(store.watched(e1.outpoint).unwrap(), Some(e1b));
    assert_eq!(store.watch_list().unwrap().len(), 2);
    assert_eq!(store.unwatch_factory(f.id).unwrap(), 1);
    assert!(store.unwatch(e2.outpoint).unwrap());
    assert!(!store.unwatch(e2.outpoint).unwrap());
    assert!(store.watch_list().unwrap().is_empty());
}

#[test]
fn invoices_follow_their_life() {
    let (_dir, mut store) = open();
    let pre = Preimage([0x11; 32]);
    let hash = pre.payment_hash();
    let inv = Invoice {
        payment_hash: hash,
        direction: InvoiceDirection::Inbound,
        preimage: None,
        amount: Some(Msat(25_000)),
        status: InvoiceStatus::Open,
        bolt11: "lnbcrt250n1...".into(),
        claim_deadline: None,
    };
    store.insert_invoice(&inv).unwrap();
    assert!(matches!(
        store.insert_invoice(&inv),
        Err(StoreError::InvoiceExists(_))
    ));
    assert!(matches!(
        store.insert_invoice(&Invoice {
            payment_hash: PaymentHash([0; 32]),
            preimage: Some(pre),
            ..inv.clone()
        }),
        Err(StoreError::PreimageMismatch(_))
    ));
    assert!(matches!(
        store.insert_invoice(&Invoice {
            payment_hash: PaymentHash([1; 32]),
            amount: Some(Msat(u64::MAX)),
            ..inv.clone()
        }),
        Err(StoreError::OutOfRange { .. })
    ));
    store
        .update_invoice(hash, InvoiceStatus::Held, None)
        .unwrap();
    store.set_claim_deadline(hash, Some(1234)).unwrap();
    assert!(matches!(
        store.update_invoice(hash, InvoiceStatus::Paid, None),
        Err(StoreError::InvoiceStatus { .. })
    ));
    assert!(matches!(
        store.update_invoice(hash, InvoiceStatus::Paid, Some(Preimage([0x12; 32]))),
        Err(StoreError::PreimageMismatch(_))
    ));
    assert_eq!(
        store
            .invoices_with_status(InvoiceStatus::Held)
            .unwrap()
            .len(),
        1
    );
    store
        .update_invoice(hash, InvoiceStatus::Paid, Some(pre))
        .unwrap();
    assert!(matches!(
        store.update_invoice(hash, InvoiceStatus::Cancelled, None),
        Err(StoreError::InvoiceStatus { .. })
    ));
    let got = store.invoice(hash).unwrap().unwrap();
    assert_eq!(got.status, InvoiceStatus::Paid);
    assert_eq!(got.preimage, Some(pre));
    assert_eq!(got.claim_deadline, Some(1234));
    assert!(matches!(
        store.update_invoice(PaymentHash([9; 32]), InvoiceStatus::Held, None),
        Err(StoreError::UnknownInvoice(_))
    ));
    assert!(matches!(
        store.set_claim_deadline(PaymentHash([9; 32]), None),
        Err(StoreError::UnknownInvoice(_))
    ));
}

#[test]
fn a_channel_step_and_the_preimages_it_learned_are_written_together() {
    let (_dir, mut store) = open();
    let f = factory(1, KeyIndex::new(0).unwrap());
    store.insert_factory(&f).unwrap();
    let id = ChannelId([5; 32]);
    let n = |x| CommitmentNumber::new(x).unwrap();
    store
        .insert_channel(&ChannelRecord {
            id,
            factory: f.id,
            key_index: KeyIndex::new(3).unwrap(),
            state: b"state 0".to_vec(),
            commitment_number: n(0),
        })
        .unwrap();
    let invoice = |pre: Preimage, status| Invoice {
        payment_hash: pre.payment_hash(),
        direction: InvoiceDirection::Outbound,
        preimage: None,
        amount: Some(Msat(1_000)),
        status,
        bolt11: "lnbcrt...".into(),
        claim_deadline: None,
    };
    let (open_one, held, unknown, paid_already) = (
        Preimage([1; 32]),
        Preimage([2; 32]),
        Preimage([3; 32]),
        Preimage([4; 32]),
    );
    store
        .insert_invoice(&invoice(open_one, InvoiceStatus::Open))
        .unwrap();
    store
        .insert_invoice(&invoice(held, InvoiceStatus::Open))
        .unwrap();
    store
        .update_invoice(held.payment_hash(), InvoiceStatus::Held, None)
        .unwrap();
    store
        .insert_invoice(&Invoice {
            preimage: Some(paid_already),
            ..invoice(paid_already, InvoiceStatus::Paid)
        })
        .unwrap();
    store
        .save_channel_step(
            id,
            b"state 1",
            n(1),
            &[open_one, held, unknown, paid_already],
            &[(3, b"revoked 3".to_vec()), (4, b"revoked 4".to_vec())],
        )
        .unwrap();
    // Revoked states are appended once: the same number again keeps the first.
    store
        .save_channel_step(id, b"state 1", n(1), &[], &[(4, b"other".to_vec())])
        .unwrap();
    assert_eq!(
        store.revoked_states(id).unwrap(),
        vec![(3, b"revoked 3".to_vec()), (4, b"revoked 4".to_vec())]
    );
    for p in [open_one, held, paid_already] {
        let got = store.invoice(p.payment_hash()).unwrap().unwrap();
        assert_eq!((got.status, got.preimage), (InvoiceStatus::Paid, Some(p)));
    }
    assert!(store.invoice(unknown.payment_hash()).unwrap().is_none());
    assert_eq!(store.channel(id).unwrap().unwrap().state, b"state 1");
    // A preimage of an invoice given up on: it was paid after all.
    let cancelled = Preimage([5; 32]);
    store
        .insert_invoice(&invoice(cancelled, InvoiceStatus::Cancelled))
        .unwrap();
    store
        .save_channel_step(id, b"state 2", n(2), &[cancelled], &[])
        .unwrap();
    let got = store.invoice(cancelled.payment_hash()).unwrap().unwrap();
    assert_eq!(
        (got.status, got.preimage),
        (InvoiceStatus::Paid, Some(cancelled))
    );
    // Going backwards is refused, preimages and all.
    let late = Preimage([6; 32]);
    store
        .insert_invoice(&invoice(late, InvoiceStatus::Open))
        .unwrap();
    assert!(store
        .save_channel_step(id, b"state 1", n(1), &[late], &[])
        .is_err());
    assert_eq!(
        store.invoice(late.payment_hash()).unwrap().unwrap().status,
        InvoiceStatus::Open
    );
    assert_eq!(store.channel(id).unwrap().unwrap().state, b"state 2");
}

#[test]
fn one_close_per_factory() {
    let (dir, mut store) = open();
    let f = factory(1, KeyIndex::new(0).unwrap());
    store.insert_factory(&f).unwrap();
    let funding = outpoint(1, 0);
    let close = |n: u32| Spend {
        role: TxLabel::new("close").unwrap(),
        ..spend(n)
    };
    assert_eq!(store.recorded_close(f.id).unwrap(), None);
    store
        .record_close(f.id, funding, &close(10), b"terms")
        .unwrap();
    // The same close again (a retried signature) is fine.
    store
        .record_close(f.id, funding, &close(10), b"terms")
        .unwrap();
    // Another close of the same factory is refused and changes nothing.
    assert!(matches!(
        store.record_close(f.id, funding, &close(11), b"other terms"),
        Err(StoreError::ConflictingSpend { .. })
    ));
    // The funding outpoint's other roles (the root kickoff) are not affected.
    store.record_spends(&[(funding, spend(12))]).unwrap();
    // A close of an unknown factory is refused.
    let unknown = factory(2, KeyIndex::new(1).unwrap());
    assert!(store
        .record_close(unknown.id, outpoint(2, 0), &close(13), b"t")
        .is_err());
    assert_eq!(
        store
            .recorded_spend(outpoint(2, 0), &close(13).role)
            .unwrap(),
        None
    );
    drop(store);
    let store = Store::open(&dir.path().join("node")).unwrap();
    assert_eq!(
        store.recorded_close(f.id).unwrap(),
        Some((close(10).txid, b"terms".to_vec()))
    );
    assert_eq!(
        store.recorded_spend(funding, &close(10).role).unwrap(),
        Some(close(10))
    );
}
