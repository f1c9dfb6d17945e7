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

/// Run `count` payments and print the rate.
pub fn run(count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let (mut lsp_a, mut a) = pair(1, 2, 5_000_000_000)?;
    let (mut lsp_b, mut b) = pair(1, 3, 0)?;
    let height = 1_000;
    let start = Instant::now();
    for i in 0..count {
        let mut pre = [0u8; 32];
        pre[..8].copy_from_slice(&i.to_le_bytes());
        let hash = sha256::Hash::hash(&pre).to_byte_array();
        let add = a.add_htlc(1_000 + i, hash, height + 100, height)?;
        lsp_a.receive_add(&add, height)?;
        round(&mut a, &mut lsp_a)?;
        let fwd = lsp_b.add_htlc(1_000 + i, hash, height + 60, height)?;
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
    println!(
        "{count} payments A -> LSP -> B in {secs:.2} s: {:.0} payments/s ({:.2} ms per payment, 4 commitment rounds each, one thread)",
        count as f64 / secs,
        secs * 1000.0 / count as f64
    );
    Ok(())
}
