//! A writer killed with SIGKILL at a random moment leaves a store in which every multi-record
//! change happened whole or not at all, and which opens and goes on.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bitcoin::secp256k1::rand::{rngs::OsRng, Rng};
use common::*;
use superscalar_store::*;

const CHILD_ENV: &str = "SUPERSCALAR_STORE_CRASH_CHILD_DIR";
const FACTORY: FactoryId = FactoryId([1; 32]);
const CHANNEL: ChannelId = ChannelId([2; 32]);

/// The channel state at commitment `n`: large enough to span several database pages.
fn state(n: u64) -> Vec<u8> {
    n.to_le_bytes().repeat(2000)
}

fn secret(n: u64) -> [u8; 32] {
    let mut s = [0x5a; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

fn participants(round: u32) -> Vec<Party> {
    (0..round % 5 + 1).map(Party::Client).collect()
}

fn n(x: u64) -> CommitmentNumber {
    CommitmentNumber::new(x).unwrap()
}

/// The child: writes until it is killed, resuming from what is stored.
#[test]
#[ignore = "run as a child process by killed_writer_leaves_a_consistent_store"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = Store::open(dir.as_ref()).unwrap();
    if store.factory(FACTORY).unwrap().is_none() {
        store
            .insert_factory(&factory(1, KeyIndex::new(0).unwrap()))
            .unwrap();
        store
            .insert_channel(&ChannelRecord {
                id: CHANNEL,
                factory: FACTORY,
                key_index: KeyIndex::new(0).unwrap(),
                state: state(0),
                commitment_number: n(0),
            })
            .unwrap();
    }
    let mut next = store
        .channel(CHANNEL)
        .unwrap()
        .unwrap()
        .commitment_number
        .get()
        + 1;
    let mut round = store.ceremony(FACTORY).unwrap().map_or(0, |c| c.round) + 1;
    loop {
        store
            .save_channel_update(
                CHANNEL,
                &state(next),
                n(next),
                Some(ReceivedSecret {
                    commitment: n(next - 1),
                    secret: secret(next - 1),
                }),
            )
            .unwrap();
        store
            .record_ceremony_round(
                &CeremonyRound {
                    factory: FACTORY,
                    round,
                    participants: participants(round),
                },
                &[(outpoint(round, 0), spend(round))],
            )
            .unwrap();
        println!("progress {next}");
        next += 1;
        round += 1;
    }
}

fn check(store: &Store) -> u64 {
    let ch = store.channel(CHANNEL).unwrap().unwrap();
    let top = ch.commitment_number.get();
    assert_eq!(
        ch.state,
        state(top),
        "state and commitment number of one update"
    );
    let secrets = store.received_secrets(CHANNEL).unwrap();
    assert_eq!(secrets.len() as u64, top, "one secret per update");
    for (i, s) in secrets.iter().enumerate() {
        assert_eq!((s.commitment.get(), s.secret), (i as u64, secret(i as u64)));
    }
    if let Some(c) = store.ceremony(FACTORY).unwrap() {
        assert_eq!(
            c.participants,
            participants(c.round),
            "round and its participants"
        );
        for r in 1..=c.round {
            assert_eq!(
                store
                    .recorded_spend(outpoint(r, 0), &spend(r).role)
                    .unwrap(),
                Some(spend(r))
            );
        }
        assert_eq!(
            store
                .recorded_spend(outpoint(c.round + 1, 0), &spend(0).role)
                .unwrap(),
            None
        );
    }
    top
}

#[test]
fn killed_writer_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    for _ in 0..20 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child_writer", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait until it writes, then kill it at a random moment.
        let wait = OsRng.gen_range(3..20);
        let mut seen = 0;
        for line in lines.by_ref() {
            if line.unwrap().starts_with("progress") {
                seen += 1;
                if seen == wait {
                    break;
                }
            }
        }
        assert_eq!(seen, wait, "the child stopped writing on its own");
        std::thread::sleep(Duration::from_micros(OsRng.gen_range(0..3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(lines);

        let store = Store::open(dir.path()).unwrap();
        let top = check(&store);
        assert!(top >= last + wait as u64, "acknowledged writes survive");
        last = top;
    }
}
