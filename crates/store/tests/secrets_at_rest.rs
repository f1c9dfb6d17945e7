//! A full run of the store as a daemon uses it, then every file of the data directory is
//! searched for the seed, every derived private key and a MuSig2 secret nonce: none may appear,
//! raw or as hex.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bitcoin::hex::DisplayHex;
use bitcoin::secp256k1::rand::{rngs::OsRng, RngCore};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::Network;
use common::*;
use superscalar_store::*;

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The ways a secret could be written: its bytes, and its hex in either case.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    vec![
        secret.to_vec(),
        secret.to_lower_hex_string().into_bytes(),
        secret.to_upper_hex_string().into_bytes(),
    ]
}

fn assert_absent(dir: &Path, secrets: &[(String, Vec<u8>)]) -> Vec<String> {
    // Every form of every secret, indexed by its first four bytes so that each file is read
    // once (a naive search of each needle is slow in an unoptimised test build).
    let mut needles: Vec<(u32, &str, Vec<u8>)> = secrets
        .iter()
        .flat_map(|(what, secret)| {
            forms(secret).into_iter().map(move |form| {
                let prefix = u32::from_le_bytes(form[..4].try_into().unwrap());
                (prefix, what.as_str(), form)
            })
        })
        .collect();
    needles.sort_by_key(|n| n.0);
    let files = files(dir);
    for (name, bytes) in &files {
        for at in 0..bytes.len().saturating_sub(3) {
            let prefix = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            let first = needles.partition_point(|n| n.0 < prefix);
            for (p, what, form) in &needles[first..] {
                if *p != prefix {
                    break;
                }
                assert!(!bytes[at..].starts_with(form), "{what} found in {name}");
            }
        }
    }
    files.into_iter().map(|(n, _)| n).collect()
}

#[test]
fn no_secret_reaches_any_file_of_the_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("lsp");
    let passphrase = "a passphrase nobody guesses 7431";
    let network = Network::Regtest;
    let secp = Secp256k1::new();

    // The seed, encrypted.
    let seed = Seed::generate();
    create_seed_file(
        &data,
        network,
        &seed,
        Protection::Passphrase {
            passphrase,
            kdf: TEST_KDF,
        },
    )
    .unwrap();
    let seed = load_seed_file(&data, network, Some(passphrase)).unwrap();
    let keys = NodeKeys::new(&seed, network).unwrap();

    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("BIP-39 entropy".into(), seed.entropy().to_vec()),
        ("BIP-39 seed".into(), seed.bip39_seed().to_vec()),
        ("mnemonic".into(), seed.mnemonic().as_bytes().to_vec()),
        ("passphrase".into(), passphrase.as_bytes().to_vec()),
        (
            "node secret".into(),
            keys.node_secret().unwrap().secret_bytes().to_vec(),
        ),
    ];

    // A MuSig2 secret nonce (132 bytes in libsecp's format) that lives in memory only.
    let mut sec_nonce = [0u8; 132];
    OsRng.fill_bytes(&mut sec_nonce);
    secrets.push(("secret nonce".into(), sec_nonce.to_vec()));

    let mut store = Store::open(&data).unwrap();
    store
        .init_node(&NodeMeta {
            role: Role::Lsp,
            network,
            node_id: keys.node_id().unwrap(),
        })
        .unwrap();

    let mut stored_secret = Vec::new();
    for f in 0..3u8 {
        let index = store.allocate_key_index(KeyFamily::Factory).unwrap();
        let factory_key = keys.factory_key(index).unwrap();
        secrets.push((
            format!("factory key {index}"),
            factory_key.secret_bytes().to_vec(),
        ));
        secrets.push((
            format!("stock seed {index}"),
            keys.stock_revocation_seed(index).unwrap().to_vec(),
        ));
        // Parameters hold public keys only.
        let mut params = factory_key.public_key().serialize().to_vec();
        params.extend_from_slice(&[f; 100]);
        let id = FactoryId([f + 1; 32]);
        store
            .insert_factory(&FactoryRecord {
                params,
                ..factory(f + 1, index)
            })
            .unwrap();
        // The ceremony: round 1, nonces go out (the secret one stays in memory), round 2.
        let parties = vec![Party::Lsp, Party::Client(0), Party::Client(1)];
        for round in 1..=2 {
            store
                .record_ceremony_round(
                    &CeremonyRound {
                        factory: id,
                        round,
                        participants: parties.clone(),
                    },
                    &[(outpoint(100 + f as u32, 0), spend(200 + f as u32))],
                )
                .unwrap();
        }
        // A "signature" made with the secret nonce is public; the nonce is not stored.
        let txs: Vec<_> = (0..4)
            .map(|i| SignedTx {
                label: TxLabel::new(format!("state/{i}")).unwrap(),
                tx: tx(1000 * f as u32 + i),
            })
            .collect();
        store
            .finish_ceremony(id, FactoryStatus::Signed, &txs)
            .unwrap();
        store
            .set_factory_funding(id, outpoint(300 + f as u32, 0))
            .unwrap();
        store.set_factory_status(id, FactoryStatus::Live).unwrap();
        for (v, party) in parties.iter().enumerate() {
            store
                .append_factory_state(id, *party, 0, &[v as u8; 64])
                .unwrap();
            store
                .append_factory_state(id, *party, 1, &[v as u8 + 10; 64])
                .unwrap();
        }
        store
            .watch(&WatchEntry {
                outpoint: outpoint(400 + f as u32, 0),
                factory: Some(id),
                action: WatchAction::Broadcast(tx(500 + f as u32)),
            })
            .unwrap();

        // Two channels per factory.
        for c in 0..2u8 {
            let index = store.allocate_key_index(KeyFamily::Channel).unwrap();
            let base = keys.channel_secrets(index).unwrap();
            for (what, bytes) in [
                ("funding", base.funding.secret_bytes()),
                ("payment", base.payment.secret_bytes()),
                ("delayed", base.delayed_payment.secret_bytes()),
                ("htlc", base.htlc.secret_bytes()),
                ("revocation", base.revocation.secret_bytes()),
                ("commitment seed", *base.commitment_seed),
            ] {
                secrets.push((format!("channel {index} {what}"), bytes.to_vec()));
            }
            // The state blob holds basepoints (public).
            let mut state = Vec::new();
            for sk in [
                &base.payment,
                &base.delayed_payment,
                &base.htlc,
                &base.revocation,
            ] {
                state.extend_from_slice(&PublicKey::from_secret_key(&secp, sk).serialize());
            }
            let cid = ChannelId([f * 16 + c + 1; 32]);
            store
                .insert_channel(&ChannelRecord {
                    id: cid,
                    factory: id,
                    key_index: index,
                    state: state.clone(),
                    commitment_number: CommitmentNumber::new(0).unwrap(),
                })
                .unwrap();
            for n in 1..20u64 {
                let mut secret = [0u8; 32];
                OsRng.fill_bytes(&mut secret);
                stored_secret = secret.to_vec();
                state.push(n as u8);
                store
                    .save_channel_update(
                        cid,
                        &state,
                        CommitmentNumber::new(n).unwrap(),
                        Some(ReceivedSecret {
                            commitment: CommitmentNumber::new(n - 1).unwrap(),
                            secret,
                        }),
                    )
                    .unwrap();
            }
            store
                .add_punishment(&Punishment {
                    breach_txid: tx(600).compute_txid(),
                    factory: Some(id),
                    channel: Some(cid),
                    tx: tx(700 + (f * 2 + c) as u32),
                })
                .unwrap();
        }
    }
    for i in 0..5u8 {
        let pre = Preimage([i + 0x70; 32]);
        store
            .insert_invoice(&Invoice {
                payment_hash: pre.payment_hash(),
                direction: InvoiceDirection::Inbound,
                preimage: None,
                amount: Some(Msat(1000 * i as u64)),
                status: InvoiceStatus::Open,
                bolt11: format!("lnbcrt{i}"),
                claim_deadline: None,
            })
            .unwrap();
        store
            .update_invoice(pre.payment_hash(), InvoiceStatus::Paid, Some(pre))
            .unwrap();
    }

    // While the store is open its write-ahead log holds the recent writes: search it too.
    let names = assert_absent(&data, &secrets);
    for suffix in [
        "seed.enc",
        "store.sqlite3",
        "store.sqlite3-wal",
        "store.sqlite3-shm",
    ] {
        let name = names
            .iter()
            .find(|n| n.ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} missing from {names:?}"));
        let mode = std::fs::metadata(name).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    // The search does find what is stored (a secret the other side revealed).
    assert!(files(&data)
        .iter()
        .any(|(_, bytes)| contains(bytes, &stored_secret)));
    let scanner_finds_it = std::panic::catch_unwind(|| {
        assert_absent(&data, &[("stored secret".into(), stored_secret.clone())])
    });
    assert!(scanner_finds_it.is_err());

    // And after a clean close (log checkpointed into the database).
    drop(store);
    assert_absent(&data, &secrets);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    // The store reopens with everything in it.
    let store = Store::open(&data).unwrap();
    assert_eq!(store.factories().unwrap().len(), 3);
    assert_eq!(
        store
            .invoices_with_status(InvoiceStatus::Paid)
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_plaintext_seed_is_regtest_only_and_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = Seed::generate();
    assert!(matches!(
        create_seed_file(tmp.path(), Network::Signet, &seed, Protection::NoPassphrase),
        Err(SeedError::PlaintextRefused(Network::Signet))
    ));
    assert!(!tmp.path().join("seed.enc").exists());
    let path = create_seed_file(
        tmp.path(),
        Network::Regtest,
        &seed,
        Protection::NoPassphrase,
    )
    .unwrap();
    let bytes = std::fs::read(path).unwrap();
    assert!(contains(&bytes, b"UNENCRYPTED-REGTEST-ONLY"));
    let back = load_seed_file(tmp.path(), Network::Regtest, None).unwrap();
    assert_eq!(back.entropy(), seed.entropy());
    assert!(matches!(
        load_seed_file(tmp.path(), Network::Bitcoin, None),
        Err(SeedError::WrongNetwork { .. })
    ));
}

#[test]
fn a_wrong_passphrase_or_a_damaged_seed_file_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = Seed::generate();
    let protection = Protection::Passphrase {
        passphrase: "right",
        kdf: TEST_KDF,
    };
    let path = create_seed_file(tmp.path(), Network::Signet, &seed, protection).unwrap();
    assert!(matches!(
        load_seed_file(tmp.path(), Network::Signet, Some("wrong")),
        Err(SeedError::WrongPassphrase)
    ));
    assert!(matches!(
        load_seed_file(tmp.path(), Network::Signet, None),
        Err(SeedError::PassphraseRequired)
    ));
    // The default costs are the real ones (64 MiB) and work too.
    let other = tmp.path().join("other");
    create_seed_file(
        &other,
        Network::Bitcoin,
        &seed,
        Protection::Passphrase {
            passphrase: "right",
            kdf: KdfParams::default(),
        },
    )
    .unwrap();
    assert_eq!(
        load_seed_file(&other, Network::Bitcoin, Some("right"))
            .unwrap()
            .entropy(),
        seed.entropy()
    );
    // Damage: the last byte (tag), a cut file, an empty file, garbage.
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x80;
    for (bytes, wrong_pass) in [
        (flipped, true),
        (good[..good.len() - 5].to_vec(), false),
        (Vec::new(), false),
        (vec![0x42; good.len()], false),
    ] {
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let r = load_seed_file(tmp.path(), Network::Signet, Some("right"));
        if wrong_pass {
            assert!(matches!(r, Err(SeedError::WrongPassphrase)), "{r:?}");
        } else {
            assert!(matches!(r, Err(SeedError::Corrupt(_))), "{r:?}");
        }
    }
}
