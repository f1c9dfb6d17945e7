//! `superscalar bench-payments`: payments per second from one client to another through the LSP,
//! over two leaf channels, in process (no network, no disk). Each payment is four lock-step
//! rounds: add on A's channel, forward on B's, fulfill on B's, fulfill on A's.

use std::time::Instant;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::{Keypair, PublicKey};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, OutPoint, TxOut};
use superscalar_core::channel::commitment::funding_script;
use superscalar_core::channel::state::{Channel, ChannelLimits, ChannelSecrets, ChannelSetup};
use superscalar_core::musig::AggregateKey;
use superscalar_core::secp::op_counts;

fn secrets(seed: u8) -> ChannelSecrets {
    let k = |i: u8| {
        SecretKey::from_slice(&[seed.wrapping_mul(11).wrapping_add(i); 32]).expect("valid key")
    };
    ChannelSecrets {
        payment: k(1),
        delayed_payment: k(2),
        htlc: k(3),
        revocation: k(4),
        seed: [seed; 32],
        funding: Keypair::from_secret_key(&Secp256k1::new(), &k(5)),
    }
}

use superscalar_core::channel::state::run_round as round;

fn pair(
    lsp_seed: u8,
    client_seed: u8,
    client_msat: u64,
) -> Result<(Channel, Channel), Box<dyn std::error::Error>> {
    let (ls, cs) = (secrets(lsp_seed), secrets(client_seed));
    let key = AggregateKey::new(&[
        PublicKey::new(ls.funding.public_key()),
        PublicKey::new(cs.funding.public_key()),
    ])?
    .tweaked(None)?;
    let funding = TxOut {
        value: Amount::from_sat(10_000_000),
        script_pubkey: funding_script(&key),
    };
    let setup = |we_opened, our| ChannelSetup {
        funding_outpoint: OutPoint::null(),
        funding: funding.clone(),
        funding_key: key.clone(),
        we_opened,
        our_balance_msat: our,
    };
    let limits = ChannelLimits::default();
    let (la, ca) = (
        Channel::announcement(&ls, &key, OutPoint::null()),
        Channel::announcement(&cs, &key, OutPoint::null()),
    );
    let mut lsp = Channel::new(
        setup(true, 10_000_000_000 - client_msat),
        ls,
        limits,
        ca,
        limits,
    )?;
    let mut client = Channel::new(setup(false, client_msat), cs, limits, la, limits)?;
    round(&mut lsp, &mut client)?;
    Ok((lsp, client))
}

/// Run `count` payments and print the rate, the libsecp256k1 operations they took and the raw
/// floor: those operations' cost when libsecp256k1 is called directly.
pub fn run(count: u64, amount_msat: u64) -> Result<(), Box<dyn std::error::Error>> {
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    // A's balance (5,000,000 sat, less its reserve) pays every payment.
    amount_msat
        .checked_mul(count)
        .and_then(|t| t.checked_add(count * count / 2))
        .filter(|t| *t < 4_000_000_000)
        .ok_or("--amount-msat times --count exceeds the payer's 5,000,000 sat balance")?;
    let (mut lsp_a, mut a) = pair(1, 2, 5_000_000_000)?;
    let (mut lsp_b, mut b) = pair(1, 3, 0)?;
    let height = 1_000;
    let before = op_counts();
    let start = Instant::now();
    for i in 0..count {
        let mut pre = [0u8; 32];
        pre[..8].copy_from_slice(&i.to_le_bytes());
        let hash = sha256::Hash::hash(&pre).to_byte_array();
        let add = a.add_htlc(amount_msat + i, hash, height + 100, height)?;
        lsp_a.receive_add(&add, height)?;
        round(&mut a, &mut lsp_a)?;
        let fwd = lsp_b.add_htlc(amount_msat + i, hash, height + 60, height)?;
        b.receive_add(&fwd, height)?;
        round(&mut lsp_b, &mut b)?;
        let f = b.fulfill_htlc(fwd.id, pre)?;
        let got = lsp_b.receive_fulfill(&f)?;
        round(&mut b, &mut lsp_b)?;
        let f = lsp_a.fulfill_htlc(add.id, got)?;
        a.receive_fulfill(&f)?;
        round(&mut lsp_a, &mut a)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let ops = op_counts().since(&before);
    if b.balance_msat() != amount_msat * count + (0..count).sum::<u64>() {
        return Err("the payee's balance does not add up".into());
    }
    let profile = if cfg!(debug_assertions) {
        "dev (debug assertions on; build with --release for the figures the README quotes)"
    } else {
        "release"
    };
    println!("configuration: {count} payments of {amount_msat} msat and up, A -> LSP -> B over two leaf channels, in process, one thread, {profile} build");
    println!("each payment: 4 commitment rounds (add on A's channel, add on B's, fulfil on B's, fulfil on A's), every signature checked");
    println!(
        "{count} payments in {secs:.2} s: {:.0} payments/s ({:.3} ms per payment, {:.0} commitment rounds/s)",
        count as f64 / secs,
        secs * 1000.0 / count as f64,
        4.0 * count as f64 / secs
    );
    let unit = raw_unit_costs()?;
    let per = |n: u64| n as f64 / count as f64;
    let rows = [
        (
            "k*G (public key from secret)",
            ops.pubkey_create,
            unit.pubkey_create,
        ),
        ("k*P (tweak mul)", ops.tweak_mul, unit.tweak_mul),
        ("P+t*G (taproot tweak)", ops.tweak_add, unit.tweak_add),
        ("MuSig2 nonce generation", ops.nonce_gen, unit.nonce_gen),
        ("MuSig2 nonce parse", ops.nonce_parse, unit.nonce_parse),
        (
            "MuSig2 session (aggregate + process)",
            ops.session,
            unit.session,
        ),
        ("MuSig2 partial sign", ops.partial_sign, unit.partial_sign),
        (
            "MuSig2 partial verify",
            ops.partial_verify,
            unit.partial_verify,
        ),
        ("BIP-340 sign", ops.schnorr_sign, unit.schnorr_sign),
        ("BIP-340 verify", ops.schnorr_verify, unit.schnorr_verify),
    ];
    println!();
    println!(
        "{:<38} {:>12} {:>12} {:>14}",
        "libsecp256k1 operation", "per payment", "raw us each", "raw us/payment"
    );
    let mut floor = 0.0;
    for (name, n, cost) in rows {
        let us = per(n) * cost * 1e6;
        floor += us;
        println!(
            "{name:<38} {:>12.2} {:>12.1} {us:>14.1}",
            per(n),
            cost * 1e6
        );
    }
    let wall_us = secs * 1e6 / count as f64;
    println!(
        "raw floor: {:.3} ms per payment ({:.0} payments/s); measured {:.3} ms: {:.2}x the floor",
        floor / 1000.0,
        1e6 / floor,
        wall_us / 1000.0,
        wall_us / floor
    );
    println!("the floor calls libsecp256k1 directly (rust-secp256k1 0.29 for keys and BIP-340, 0.33 for MuSig2), on this machine, now");
    Ok(())
}

/// Cost in seconds of each libsecp256k1 operation called directly, without any code of ours.
struct RawCosts {
    pubkey_create: f64,
    tweak_mul: f64,
    tweak_add: f64,
    nonce_gen: f64,
    nonce_parse: f64,
    session: f64,
    partial_sign: f64,
    partial_verify: f64,
    schnorr_sign: f64,
    schnorr_verify: f64,
}

fn time_per(iters: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(iters)
}

fn raw_unit_costs() -> Result<RawCosts, Box<dyn std::error::Error>> {
    use bitcoin::secp256k1::{Message, Scalar};
    use musig::musig::{
        new_nonce_pair, AggregatedNonce, KeyAggCache, PublicNonce, Session, SessionSecretRand,
    };
    use std::hint::black_box;
    const N: u32 = 2_000;
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(&[0x42; 32])?;
    let pk = bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &sk);
    let tweak = Scalar::from_be_bytes([0x17; 32])?;
    let pubkey_create = time_per(N, || {
        black_box(bitcoin::secp256k1::PublicKey::from_secret_key(
            &secp,
            black_box(&sk),
        ));
    });
    let tweak_mul = time_per(N, || {
        black_box(black_box(pk).mul_tweak(&secp, &tweak).ok());
    });
    let xonly = pk.x_only_public_key().0;
    let tweak_add = time_per(N, || {
        black_box(black_box(xonly).add_tweak(&secp, &tweak).ok());
    });
    let kp = Keypair::from_secret_key(&secp, &sk);
    let msg = Message::from_digest([9; 32]);
    let schnorr_sign = time_per(N, || {
        black_box(secp.sign_schnorr_no_aux_rand(black_box(&msg), &kp));
    });
    let sig = secp.sign_schnorr_no_aux_rand(&msg, &kp);
    let schnorr_verify = time_per(N, || {
        black_box(secp.verify_schnorr(&sig, black_box(&msg), &xonly).is_ok());
    });
    // MuSig2 between two signers, as on a leaf channel.
    let m_sk = [
        musig::SecretKey::from_secret_bytes([0x42; 32])?,
        musig::SecretKey::from_secret_bytes([0x43; 32])?,
    ];
    let m_kp = musig::Keypair::from_secret_bytes([0x42; 32])?;
    let m_pk = [
        musig::PublicKey::from_secret_key(&m_sk[0]),
        musig::PublicKey::from_secret_key(&m_sk[1]),
    ];
    let cache = KeyAggCache::new(&[&m_pk[0], &m_pk[1]]);
    let m = [9u8; 32];
    let mut seed = 1u64;
    let mut nonce = |i: usize| {
        seed += 1;
        let mut r = [1u8; 32];
        r[..8].copy_from_slice(&seed.to_le_bytes());
        new_nonce_pair(
            SessionSecretRand::assume_uniformly_random(r),
            Some(&cache),
            Some(m_sk[i]),
            m_pk[i],
            Some(&m),
            None,
        )
    };
    let nonce_gen = time_per(N, || {
        black_box(nonce(0));
    });
    let (_, theirs) = nonce(1);
    let bytes = theirs.serialize();
    let nonce_parse = time_per(N, || {
        black_box(PublicNonce::from_byte_array(black_box(&bytes)).ok());
    });
    let (_, ours) = nonce(0);
    let session = time_per(N, || {
        black_box(Session::new(
            &cache,
            AggregatedNonce::new(&[&ours, &theirs]),
            &m,
        ));
    });
    let both = time_per(N, || {
        let (sec, public) = nonce(0);
        let s = Session::new(&cache, AggregatedNonce::new(&[&public, &theirs]), &m);
        black_box(s.partial_sign(sec, &m_kp, &cache));
    });
    let partial_sign = (both - nonce_gen - session).max(0.0);
    let (sec, public) = nonce(0);
    let s = Session::new(&cache, AggregatedNonce::new(&[&public, &theirs]), &m);
    let partial = s.partial_sign(sec, &m_kp, &cache);
    let partial_verify = time_per(N, || {
        black_box(s.partial_verify(&cache, black_box(&partial), &public, m_pk[0]));
    });
    Ok(RawCosts {
        pubkey_create,
        tweak_mul,
        tweak_add,
        nonce_gen,
        nonce_parse,
        session,
        partial_sign,
        partial_verify,
        schnorr_sign,
        schnorr_verify,
    })
}
