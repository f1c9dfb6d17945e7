//! Persisting a channel side: `Channel::snapshot` and `Channel::restore` at every step of a
//! round, with HTLCs pending on both sides; what a restored side builds on chain; refused secrets
//! and keys; refused bytes; and no secret of the side in its snapshot.

use std::time::Instant;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::{Keypair, PublicKey as BtcPublicKey};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, TxOut, Txid};
use proptest::prelude::*;
use superscalar_core::channel::state::{
    Channel, ChannelError, ChannelLimits, ChannelSecrets, ChannelSetup, SnapshotError,
};
use superscalar_core::musig::{AggregateKey, TweakedAggregateKey};
use superscalar_core::shachain::{index_of, SecretGenerator};

const CAPACITY_SAT: u64 = 1_000_000;
const HEIGHT: u32 = 1_000;

fn secrets(seed: u8) -> ChannelSecrets {
    let k = |i: u8| SecretKey::from_slice(&[seed.wrapping_mul(7).wrapping_add(i); 32]).unwrap();
    ChannelSecrets {
        payment: k(1),
        delayed_payment: k(2),
        htlc: k(3),
        revocation: k(4),
        seed: [seed; 32],
        funding: Keypair::from_secret_key(&Secp256k1::new(), &k(5)),
    }
}

fn funding_key(a: &ChannelSecrets, b: &ChannelSecrets) -> TweakedAggregateKey {
    AggregateKey::new(&[
        BtcPublicKey::new(a.funding.public_key()),
        BtcPublicKey::new(b.funding.public_key()),
    ])
    .unwrap()
    .tweaked(None)
    .unwrap()
}

/// Both sides of one channel, with what restoring each needs.
struct Pair {
    a: Channel,
    b: Channel,
    sa: ChannelSecrets,
    sb: ChannelSecrets,
    key: TweakedAggregateKey,
}

/// A channel where `a` (the opener) starts with `a_msat`; the initial round not run yet.
fn fresh_pair(a_msat: u64) -> Pair {
    let (sa, sb) = (secrets(1), secrets(2));
    let key = funding_key(&sa, &sb);
    let funding = TxOut {
        value: Amount::from_sat(CAPACITY_SAT),
        script_pubkey: superscalar_core::channel::commitment::funding_script(&key),
    };
    let outpoint = OutPoint::new(Txid::from_byte_array([3; 32]), 1);
    let announce_a = Channel::announcement(&sa, &key, outpoint);
    let announce_b = Channel::announcement(&sb, &key, outpoint);
    let limits = ChannelLimits::default();
    let setup = |we_opened, our| ChannelSetup {
        funding_outpoint: outpoint,
        funding: funding.clone(),
        funding_key: key.clone(),
        we_opened,
        our_balance_msat: our,
    };
    let a = Channel::new(setup(true, a_msat), sa.clone(), limits, announce_b, limits).unwrap();
    let b = Channel::new(
        setup(false, CAPACITY_SAT * 1000 - a_msat),
        sb.clone(),
        limits,
        announce_a,
        limits,
    )
    .unwrap();
    Pair { a, b, sa, sb, key }
}

fn pair() -> Pair {
    let mut p = fresh_pair(600_000_000);
    Steps::run(&mut p, |_, _| {});
    p
}

/// `c` saved and restored: checks the restored side is the same in every respect visible
/// (summary, snapshot, every field but the secrets' values in its debug form).
fn reborn(c: &Channel, secrets: &ChannelSecrets, key: &TweakedAggregateKey) -> Channel {
    let bytes = c.snapshot();
    let back = Channel::restore(&bytes, secrets.clone(), key.clone()).unwrap();
    // The states of revoked commitments are written apart, as the daemons do.
    back.restore_revoked_states(&c.revoked_states()).unwrap();
    assert_eq!(back.summary(), c.summary());
    assert_eq!(back.snapshot(), bytes);
    assert_eq!(format!("{back:?}"), format!("{c:?}"));
    back
}

impl Pair {
    fn restore_a(&mut self) {
        self.a = reborn(&self.a, &self.sa, &self.key);
    }

    fn restore_b(&mut self) {
        self.b = reborn(&self.b, &self.sb, &self.key);
    }

    /// `a` pays `b` (HTLC, round, fulfilled, round) when `a_pays`, else the reverse.
    fn pay(&mut self, i: u64, amount: u64, a_pays: bool) {
        let (payer, payee) = if a_pays {
            (&mut self.a, &mut self.b)
        } else {
            (&mut self.b, &mut self.a)
        };
        let (pre, hash) = preimage(i);
        let add = payer.add_htlc(amount, hash, HEIGHT + 200, HEIGHT).unwrap();
        payee.receive_add(&add, HEIGHT).unwrap();
        Steps::run_between(payer, payee);
        let f = payee.fulfill_htlc(add.id, pre).unwrap();
        payer.receive_fulfill(&f).unwrap();
        Steps::run_between(payee, payer);
    }

    /// Adds an HTLC offered by `a` (or `b`) without a round; returns its id.
    fn offer(&mut self, i: u64, amount: u64, by_a: bool) -> u64 {
        let (from, to) = if by_a {
            (&mut self.a, &mut self.b)
        } else {
            (&mut self.b, &mut self.a)
        };
        let add = from
            .add_htlc(amount, preimage(i).1, HEIGHT + 100 + i as u32, HEIGHT)
            .unwrap();
        to.receive_add(&add, HEIGHT).unwrap();
        add.id
    }
}

fn preimage(i: u64) -> ([u8; 32], [u8; 32]) {
    let mut p = [0u8; 32];
    p[..8].copy_from_slice(&i.to_be_bytes());
    (p, sha256::Hash::hash(&p).to_byte_array())
}

/// The steps of a round started by `a`, with a hook after each (`0` before the first).
struct Steps;

impl Steps {
    const COUNT: usize = 6;

    fn run(p: &mut Pair, mut after: impl FnMut(usize, &mut Pair)) {
        after(0, p);
        let sig_a = p.a.sign_commitment().unwrap();
        after(1, p);
        let raa_b = p.b.receive_commitment_signed(&sig_a).unwrap();
        after(2, p);
        let sig_b = p.b.sign_commitment().unwrap();
        after(3, p);
        p.a.receive_revoke_and_ack(&raa_b).unwrap();
        after(4, p);
        let raa_a = p.a.receive_commitment_signed(&sig_b).unwrap();
        after(5, p);
        p.b.receive_revoke_and_ack(&raa_a).unwrap();
        after(6, p);
        assert!(p.a.is_idle() && p.b.is_idle());
    }

    fn run_between(a: &mut Channel, b: &mut Channel) {
        superscalar_core::channel::state::run_round(a, b).unwrap();
        assert!(a.is_idle() && b.is_idle());
    }
}

/// A channel after several payments both ways, with HTLCs pending both ways (above and below
/// the dust limit), and updates of both sides proposed for the next round.
fn busy() -> (Pair, Vec<u64>) {
    let mut p = pair();
    for i in 0..3 {
        p.pay(i, 1_000_000 + i, true);
        p.pay(100 + i, 700_000 + i, false);
    }
    let mut pending = vec![
        p.offer(10, 2_000_000, true),
        p.offer(11, 100_000, true),
        p.offer(12, 3_000_000, false),
        p.offer(13, 50_000, false),
    ];
    Steps::run(&mut p, |_, _| {});
    assert_eq!(p.a.pending_htlcs(), 4);
    // Proposed for the next round: an HTLC each way and one pending HTLC fulfilled.
    pending.push(p.offer(14, 1_500_000, true));
    pending.push(p.offer(15, 2_500_000, false));
    let f = p.b.fulfill_htlc(pending[0], preimage(10).0).unwrap();
    p.a.receive_fulfill(&f).unwrap();
    (p, pending)
}

/// After the round: more payments both ways against the other side, then every pending HTLC
/// settled; balances end where a channel never restored ends.
fn continue_and_settle(p: &mut Pair) -> (u64, u64) {
    for i in 0..4 {
        p.pay(200 + i, 300_000 + i, i % 2 == 0);
    }
    // Pending: offered by a, preimages 11 and 14 (ids 4, 5); by b, 12, 13 and 15 (ids 3 to 5).
    for (i, id) in [(11, 4), (14, 5)] {
        let f = p.b.fulfill_htlc(id, preimage(i).0).unwrap();
        p.a.receive_fulfill(&f).unwrap();
    }
    for id in [3, 4, 5] {
        let f = p.a.fail_htlc(id).unwrap();
        p.b.receive_fail(&f).unwrap();
    }
    Steps::run(p, |_, _| {});
    assert_eq!(p.a.pending_htlcs(), 0);
    (p.a.balance_msat(), p.b.balance_msat())
}

#[test]
fn a_side_restored_at_any_step_of_a_round_finishes_it_and_goes_on() {
    let expected = {
        let (mut p, _) = busy();
        Steps::run(&mut p, |_, _| {});
        continue_and_settle(&mut p)
    };
    assert_eq!(expected.0 + expected.1, CAPACITY_SAT * 1000);
    let mut phases = Vec::new();
    for step in 0..=Steps::COUNT {
        for (restore_a, restore_b) in [(true, false), (false, true), (true, true)] {
            let (mut p, _) = busy();
            Steps::run(&mut p, |k, p| {
                if k == step {
                    phases.push((p.a.summary().phase, p.b.summary().phase));
                    if restore_a {
                        p.restore_a();
                    }
                    if restore_b {
                        p.restore_b();
                    }
                }
            });
            assert_eq!(continue_and_settle(&mut p), expected, "step {step}");
        }
    }
    // Every phase of both sides was restored.
    let seen: std::collections::BTreeSet<&str> = phases
        .iter()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect();
    for phase in [
        "Idle",
        "SentSignature { got_revocation: false }",
        "SentSignature { got_revocation: true }",
        "OweSignature",
        "AwaitingFinalRevocation",
    ] {
        assert!(seen.contains(phase), "{phase} never restored: {seen:?}");
    }
}

#[test]
fn a_channel_restored_before_its_first_round_opens() {
    let mut p = fresh_pair(400_000_000);
    assert_eq!(p.a.our_commitment_number(), 0);
    p.restore_a();
    p.restore_b();
    Steps::run(&mut p, |k, p| {
        if k == 2 {
            p.restore_a();
            p.restore_b();
        }
    });
    assert_eq!(p.a.our_commitment_number(), 1);
    assert_eq!(p.b.their_commitment_number(), 1);
    p.pay(1, 5_000_000, true);
    assert_eq!(p.a.balance_msat(), 395_000_000);
}

#[test]
fn a_restored_side_signs_its_commitment_and_punishes_a_revoked_one() {
    let (mut p, _) = busy();
    Steps::run(&mut p, |_, _| {});
    // b's latest commitment, with HTLC outputs; revoked by the rounds that follow.
    let (old_b, old_b_htlcs) = p.b.signed_latest_commitment().unwrap();
    assert!(!old_b_htlcs.is_empty());
    p.pay(300, 1_000_000, true);
    p.pay(301, 1_000_000, false);
    let (a, b) = (reborn(&p.a, &p.sa, &p.key), reborn(&p.b, &p.sb, &p.key));
    for (restored, original) in [(&a, &p.a), (&b, &p.b)] {
        let (tx, htlcs) = restored.signed_latest_commitment().unwrap();
        let (tx0, htlcs0) = original.signed_latest_commitment().unwrap();
        assert_eq!(tx.compute_txid(), tx0.compute_txid());
        assert_eq!(tx, tx0);
        assert_eq!(htlcs, htlcs0);
    }
    let destination = ScriptBuf::from_bytes([&[0u8, 20][..], &[7; 20]].concat());
    let fee = FeeRate::from_sat_per_vb_u32(2);
    assert!(a.is_revoked_commitment(&old_b));
    let justice = a
        .justice_transaction(&old_b, destination.clone(), fee)
        .unwrap();
    let justice0 =
        p.a.justice_transaction(&old_b, destination.clone(), fee)
            .unwrap();
    assert_eq!(justice.compute_txid(), justice0.compute_txid());
    assert_eq!(
        justice.input.len(),
        old_b.output.len() - 1,
        "all but the anchor"
    );
    // b's latest commitment is not revoked.
    let (latest_b, _) = b.signed_latest_commitment().unwrap();
    assert!(matches!(
        a.justice_transaction(&latest_b, destination, fee),
        Err(ChannelError::NotRevoked(_))
    ));
}

#[test]
fn dual_state_fundings_round_trip() {
    let (mut p, _) = busy();
    Steps::run(&mut p, |_, _| {});
    let second = OutPoint::new(Txid::from_byte_array([9; 32]), 0);
    let na = p.a.add_funding(second).unwrap();
    let nb = p.b.add_funding(second).unwrap();
    p.b.receive_funding_nonce(&na).unwrap();
    p.a.receive_funding_nonce(&nb).unwrap();
    p.restore_a();
    p.restore_b();
    p.pay(400, 800_000, true);
    Steps::run(&mut p, |k, p| {
        if k == 3 {
            p.restore_a();
            p.restore_b();
        }
    });
    assert_eq!(p.a.funding_outpoints().len(), 2);
    let restored = reborn(&p.a, &p.sa, &p.key);
    assert_eq!(
        restored.signed_latest_commitment_on(second).unwrap(),
        p.a.signed_latest_commitment_on(second).unwrap()
    );
    p.a.retire_funding(p.a.funding_outpoints()[0]).unwrap();
    p.b.retire_funding(p.b.funding_outpoints()[0]).unwrap();
    p.restore_a();
    p.restore_b();
    p.pay(401, 800_000, false);
}

#[test]
fn other_secrets_or_another_funding_key_are_refused() {
    let (p, _) = busy();
    let bytes = p.a.snapshot();
    let restore =
        |s: ChannelSecrets, k: &TweakedAggregateKey| Channel::restore(&bytes, s, k.clone());
    assert!(restore(p.sa.clone(), &p.key).is_ok());
    // Another side's secrets altogether, the other side's own, or the right keys with another
    // seed or another funding key.
    assert_eq!(
        restore(secrets(7), &p.key).unwrap_err(),
        SnapshotError::WrongSecrets("basepoints")
    );
    assert_eq!(
        restore(p.sb.clone(), &p.key).unwrap_err(),
        SnapshotError::WrongSecrets("basepoints")
    );
    let other_seed = ChannelSecrets {
        seed: [77; 32],
        ..p.sa.clone()
    };
    assert_eq!(
        restore(other_seed, &p.key).unwrap_err(),
        SnapshotError::WrongSecrets("seed")
    );
    let other_funding = ChannelSecrets {
        funding: secrets(7).funding,
        ..p.sa.clone()
    };
    assert_eq!(
        restore(other_funding, &p.key).unwrap_err(),
        SnapshotError::WrongSecrets("funding key")
    );
    // The key of another channel, and this channel's keys tweaked differently.
    let other = funding_key(&p.sa, &secrets(7));
    assert_eq!(
        restore(p.sa.clone(), &other).unwrap_err(),
        SnapshotError::WrongFundingKey
    );
    let untweaked = AggregateKey::new(&[
        BtcPublicKey::new(p.sa.funding.public_key()),
        BtcPublicKey::new(p.sb.funding.public_key()),
    ])
    .unwrap()
    .untweaked();
    assert_eq!(
        restore(p.sa.clone(), &untweaked).unwrap_err(),
        SnapshotError::WrongFundingKey
    );
}

#[test]
fn every_truncation_and_other_versions_are_refused() {
    let (p, _) = busy();
    for c in [&p.a, &p.b] {
        let bytes = c.snapshot();
        for cut in 0..bytes.len() {
            assert!(
                Channel::restore(&bytes[..cut], p.sa.clone(), p.key.clone()).is_err(),
                "cut at {cut} of {}",
                bytes.len()
            );
        }
    }
    let mut bytes = p.a.snapshot();
    bytes[0] = 2;
    assert_eq!(
        Channel::restore(&bytes, p.sa.clone(), p.key.clone()).unwrap_err(),
        SnapshotError::UnknownVersion(2)
    );
    // Odd extensions are skipped, even ones refused, trailing garbage refused.
    let bytes = p.a.snapshot();
    let with = |tail: &[u8]| {
        let mut b = bytes.clone();
        b.extend_from_slice(tail);
        Channel::restore(&b, p.sa.clone(), p.key.clone())
    };
    assert_eq!(with(&[1, 2, 0xaa, 0xbb]).unwrap().snapshot(), bytes);
    assert!(matches!(with(&[2, 0]), Err(SnapshotError::Decode(_))));
    assert!(matches!(with(&[1, 9]), Err(SnapshotError::Decode(_))));
}

#[test]
fn no_secret_of_the_side_is_in_its_snapshot() {
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let check = |c: &Channel, s: &ChannelSecrets| {
        let bytes = c.snapshot();
        let n = c.our_commitment_number();
        let generator = SecretGenerator::new(s.seed);
        let mut secret_bytes = vec![
            ("payment", s.payment.secret_bytes()),
            ("delayed payment", s.delayed_payment.secret_bytes()),
            ("htlc", s.htlc.secret_bytes()),
            ("revocation", s.revocation.secret_bytes()),
            ("funding", s.funding.secret_bytes()),
            ("seed", s.seed),
        ];
        for (name, k) in [("current", n), ("next", n + 1), ("after next", n + 2)] {
            secret_bytes.push((name, generator.secret(index_of(k)).unwrap()));
        }
        for (name, secret) in secret_bytes {
            assert!(
                !contains(&bytes, &secret),
                "the {name} secret is in the snapshot"
            );
            // Nor any 16 bytes of it.
            for w in secret.windows(16) {
                assert!(
                    !contains(&bytes, w),
                    "part of the {name} secret is in the snapshot"
                );
            }
        }
    };
    let (mut p, _) = busy();
    Steps::run(&mut p, |_, p| {
        check(&p.a, &p.sa);
        check(&p.b, &p.sb);
    });
    // Their revocation secrets are in it: the latest one b revealed.
    let revealed = SecretGenerator::new(p.sb.seed)
        .secret(index_of(p.b.our_commitment_number() - 1))
        .unwrap();
    assert!(contains(&p.a.snapshot(), &revealed));
}

#[test]
fn snapshot_size_and_time() {
    let mut p = pair();
    let report = |label: &str, p: &Pair| {
        let bytes = p.a.snapshot();
        let runs = 200;
        let start = Instant::now();
        for _ in 0..runs {
            let b = p.a.snapshot();
            Channel::restore(&b, p.sa.clone(), p.key.clone()).unwrap();
        }
        let each = start.elapsed() / runs;
        println!(
            "snapshot {label}: {} bytes, snapshot + restore {:.1} us",
            bytes.len(),
            each.as_secs_f64() * 1e6
        );
        bytes.len()
    };
    let empty = report("0 pending HTLCs, commitment 1", &p);
    for i in 0..10 {
        p.offer(i, 1_000_000 + i, i % 2 == 0);
    }
    Steps::run(&mut p, |_, _| {});
    let ten = report("10 pending HTLCs, commitment 2", &p);
    assert!(ten > empty);
    let mut p = pair();
    for i in 0..100 {
        p.pay(i, 100_000, i % 2 == 0);
    }
    report("0 pending HTLCs after 100 payments (commitment 201)", &p);
}

/// A snapshot does not grow with the channel's history: the states of revoked commitments are
/// handed out once to be written apart, and a side restored from its snapshot and those rows
/// punishes an old commitment's HTLC outputs too; without the rows, its to_local and to_remote.
#[test]
fn revoked_states_are_written_once_apart_from_the_snapshot() {
    let mut p = pair();
    for i in 0..10 {
        p.pay(i, 1_000_000 + i, i % 2 == 0);
    }
    let (old_b, htlcs) = {
        let id = p.offer(50, 2_000_000, true);
        Steps::run(&mut p, |_, _| {});
        let old = p.b.signed_latest_commitment().unwrap();
        let f = p.b.fulfill_htlc(id, preimage(50).0).unwrap();
        p.a.receive_fulfill(&f).unwrap();
        Steps::run(&mut p, |_, _| {});
        old
    };
    assert_eq!(htlcs.len(), 1);
    let rows = p.a.revoked_states_to_write();
    assert!(rows.len() >= 20, "{}", rows.len());
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
    p.a.revoked_states_written(rows.last().unwrap().0);
    assert!(p.a.revoked_states_to_write().is_empty());
    let size = p.a.snapshot().len();
    for i in 0..40 {
        p.pay(100 + i, 1_000_000 + i, i % 2 == 0);
    }
    let more = p.a.revoked_states_to_write();
    assert_eq!(more.len(), 80, "two revoked commitments per payment");
    assert!(more[0].0 > rows.last().unwrap().0);
    assert_eq!(p.a.snapshot().len(), size, "the snapshot does not grow");
    let destination = ScriptBuf::from_bytes([&[0u8, 20][..], &[7; 20]].concat());
    let fee = FeeRate::from_sat_per_vb_u32(2);
    // Restored with every row: the whole old commitment, its HTLC output included.
    let full = Channel::restore(&p.a.snapshot(), p.sa.clone(), p.key.clone()).unwrap();
    full.restore_revoked_states(&[rows.clone(), more].concat())
        .unwrap();
    let justice = full
        .justice_transaction(&old_b, destination.clone(), fee)
        .unwrap();
    assert_eq!(
        justice.input.len(),
        old_b.output.len() - 1,
        "all but the anchor"
    );
    // From the snapshot alone: still punished, without the HTLC output.
    let bare = Channel::restore(&p.a.snapshot(), p.sa.clone(), p.key.clone()).unwrap();
    let justice = bare.justice_transaction(&old_b, destination, fee).unwrap();
    assert_eq!(justice.input.len(), old_b.output.len() - 2);
    // A row that does not decode, or does not add up, is refused and adds nothing.
    let fresh = Channel::restore(&p.a.snapshot(), p.sa.clone(), p.key.clone()).unwrap();
    assert!(fresh.restore_revoked_states(&[(1, vec![1, 2, 3])]).is_err());
    let mut wrong = rows[0].1.clone();
    wrong[7] ^= 1;
    assert!(fresh
        .restore_revoked_states(&[rows[1].clone(), (rows[0].0, wrong)])
        .is_err());
    assert!(fresh.revoked_states_to_write().is_empty());
}

proptest! {
    #[test]
    fn random_bytes_are_refused_without_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..4000),
        versioned in any::<bool>(),
    ) {
        if versioned && !bytes.is_empty() {
            bytes[0] = 1;
        }
        let s = secrets(1);
        let key = funding_key(&s, &secrets(2));
        prop_assert!(Channel::restore(&bytes, s, key).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn altered_snapshots_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (p, _) = busy();
        let mut bytes = p.a.snapshot();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(c) = Channel::restore(&bytes, p.sa.clone(), p.key.clone()) {
            let _ = c.summary();
            let _ = c.snapshot();
            let _ = c.signed_latest_commitment();
        }
    }
}
