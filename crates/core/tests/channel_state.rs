//! The leaf-channel state machine in process: an LSP and two clients of one factory; client A pays
//! client B through the LSP a thousand times; a failed payment changes nothing; invalid messages
//! are refused and leave the channel unchanged.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::{Keypair, PublicKey as BtcPublicKey};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, OutPoint, TxOut, Txid};
use superscalar_core::channel::state::{
    Channel, ChannelError, ChannelLimits, ChannelSecrets, ChannelSetup,
};
use superscalar_core::musig::AggregateKey;

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

/// A channel where the LSP (opener) starts with `lsp_msat` and the client with the rest.
fn pair(lsp_seed: u8, client_seed: u8, lsp_msat: u64) -> (Channel, Channel) {
    let (ls, cs) = (secrets(lsp_seed), secrets(client_seed));
    let key = AggregateKey::new(&[
        BtcPublicKey::new(ls.funding.public_key()),
        BtcPublicKey::new(cs.funding.public_key()),
    ])
    .unwrap()
    .tweaked(None)
    .unwrap();
    let funding = TxOut {
        value: Amount::from_sat(CAPACITY_SAT),
        script_pubkey: superscalar_core::channel::commitment::funding_script(&key),
    };
    let outpoint = OutPoint::new(Txid::from_byte_array([lsp_seed ^ client_seed; 32]), 0);
    let la = Channel::announcement(&ls, &key, outpoint);
    let ca = Channel::announcement(&cs, &key, outpoint);
    let limits = ChannelLimits {
        to_self_delay: 144,
        ..ChannelLimits::default()
    };
    let setup = |we_opened, our| ChannelSetup {
        funding_outpoint: outpoint,
        funding: funding.clone(),
        funding_key: key.clone(),
        we_opened,
        our_balance_msat: our,
    };
    let mut lsp = Channel::new(setup(true, lsp_msat), ls, limits, ca, limits).unwrap();
    let mut client = Channel::new(
        setup(false, CAPACITY_SAT * 1000 - lsp_msat),
        cs,
        limits,
        la,
        limits,
    )
    .unwrap();
    // The initial round: both sides sign commitment 1 of the starting balances.
    round(&mut lsp, &mut client).unwrap();
    (lsp, client)
}

/// One lock-step round started by `a`.
fn round(a: &mut Channel, b: &mut Channel) -> Result<(), ChannelError> {
    let sig_a = a.sign_commitment()?;
    let raa_b = b.receive_commitment_signed(&sig_a)?;
    let sig_b = b.sign_commitment()?;
    a.receive_revoke_and_ack(&raa_b)?;
    let raa_a = a.receive_commitment_signed(&sig_b)?;
    b.receive_revoke_and_ack(&raa_a)?;
    assert!(a.is_idle() && b.is_idle());
    Ok(())
}

fn preimage(i: u64) -> ([u8; 32], [u8; 32]) {
    let mut p = [0u8; 32];
    p[..8].copy_from_slice(&i.to_be_bytes());
    (p, sha256::Hash::hash(&p).to_byte_array())
}

struct Net {
    a_client: Channel,
    a_lsp: Channel,
    b_lsp: Channel,
    b_client: Channel,
}

impl Net {
    fn new() -> Self {
        // A starts with 600k sat in its channel; B's channel is LSP liquidity.
        let (a_lsp, a_client) = pair(1, 2, 400_000_000);
        let (b_lsp, b_client) = pair(1, 3, 900_000_000);
        Net {
            a_client,
            a_lsp,
            b_lsp,
            b_client,
        }
    }

    /// A pays B `amount` msat through the LSP; B fails it instead when `fail` is set.
    fn pay(&mut self, i: u64, amount: u64, fail: bool) -> Result<(), ChannelError> {
        let (pre, hash) = preimage(i);
        let add = self.a_client.add_htlc(amount, hash, HEIGHT + 200, HEIGHT)?;
        self.a_lsp.receive_add(&add, HEIGHT)?;
        round(&mut self.a_client, &mut self.a_lsp)?;
        let fwd = self.b_lsp.add_htlc(amount, hash, HEIGHT + 150, HEIGHT)?;
        self.b_client.receive_add(&fwd, HEIGHT)?;
        round(&mut self.b_lsp, &mut self.b_client)?;
        if fail {
            let f = self.b_client.fail_htlc(fwd.id)?;
            self.b_lsp.receive_fail(&f)?;
            round(&mut self.b_client, &mut self.b_lsp)?;
            let f = self.a_lsp.fail_htlc(add.id)?;
            self.a_client.receive_fail(&f)?;
            round(&mut self.a_lsp, &mut self.a_client)?;
        } else {
            let f = self.b_client.fulfill_htlc(fwd.id, pre)?;
            let got = self.b_lsp.receive_fulfill(&f)?;
            round(&mut self.b_client, &mut self.b_lsp)?;
            let f = self.a_lsp.fulfill_htlc(add.id, got)?;
            self.a_client.receive_fulfill(&f)?;
            round(&mut self.a_lsp, &mut self.a_client)?;
        }
        Ok(())
    }

    fn balances(&self) -> [u64; 4] {
        [
            self.a_client.balance_msat(),
            self.a_lsp.balance_msat(),
            self.b_lsp.balance_msat(),
            self.b_client.balance_msat(),
        ]
    }
}

#[test]
fn a_thousand_payments_through_the_lsp_are_exact_to_the_msat() {
    let mut net = Net::new();
    let start = net.balances();
    let mut total = 0u64;
    for i in 0..1000u64 {
        let amount = 1_000 + i * 37 + (i % 3); // odd msat amounts, some below the dust limit
        net.pay(i, amount, false).unwrap();
        total += amount;
    }
    let end = net.balances();
    assert_eq!(end[0], start[0] - total, "A paid");
    assert_eq!(end[1], start[1] + total, "the LSP received on A's channel");
    assert_eq!(end[2], start[2] - total, "the LSP paid on B's channel");
    assert_eq!(end[3], start[3] + total, "B received");
    // Both sides of each channel agree.
    assert_eq!(net.a_client.their_balance_msat(), net.a_lsp.balance_msat());
    assert_eq!(net.b_client.their_balance_msat(), net.b_lsp.balance_msat());
    assert_eq!(
        net.a_client.pending_htlcs() + net.b_client.pending_htlcs(),
        0
    );
    // The latest commitments are fully signed and spend the channel output.
    let (tx, htlc_txs) = net.b_client.signed_latest_commitment().unwrap();
    assert_eq!(tx.input.len(), 1);
    assert_eq!(tx.input[0].witness.len(), 1);
    assert!(htlc_txs.is_empty());
    // Every revoked commitment of the LSP is recoverable by the client from O(log n) storage.
    assert!(net.a_client.their_revocation_secret(1).is_some());
}

#[test]
fn a_payment_failed_downstream_changes_no_balance() {
    let mut net = Net::new();
    net.pay(0, 5_000_000, false).unwrap();
    let before = net.balances();
    net.pay(1, 7_000_000, true).unwrap();
    assert_eq!(net.balances(), before);
}

#[test]
fn invalid_updates_are_refused_and_change_nothing() {
    let (mut lsp, mut client) = pair(5, 6, 500_000_000);
    let before = (lsp.balance_msat(), client.balance_msat());
    let (pre, hash) = preimage(1);
    // Above the balance, zero, expiring too soon.
    assert!(matches!(
        client.add_htlc(600_000_000, hash, HEIGHT + 100, HEIGHT),
        Err(ChannelError::InsufficientBalance { .. })
    ));
    assert!(matches!(
        client.add_htlc(0, hash, HEIGHT + 100, HEIGHT),
        Err(ChannelError::HtlcTooSmall { .. })
    ));
    assert!(matches!(
        client.add_htlc(1_000, hash, HEIGHT + 5, HEIGHT),
        Err(ChannelError::ExpiryTooSoon { .. })
    ));
    // A well-formed add, then a replay of the same id.
    let add = client
        .add_htlc(2_000_000, hash, HEIGHT + 100, HEIGHT)
        .unwrap();
    lsp.receive_add(&add, HEIGHT).unwrap();
    assert!(matches!(
        lsp.receive_add(&add, HEIGHT),
        Err(ChannelError::BadHtlcId(_))
    ));
    // A forged commitment signature: refused, and the honest one still works afterwards.
    let mut sig = client.sign_commitment().unwrap();
    let honest = sig.clone();
    sig.partial_sig.0[3] ^= 1;
    assert!(matches!(
        lsp.receive_commitment_signed(&sig),
        Err(ChannelError::BadSignature(_))
    ));
    let raa = lsp.receive_commitment_signed(&honest).unwrap();
    // A revocation with the wrong secret: refused.
    let mut bad = raa.clone();
    bad.per_commitment_secret[0] ^= 1;
    assert!(matches!(
        client.receive_revoke_and_ack(&bad),
        Err(ChannelError::WrongSecret)
    ));
    client.receive_revoke_and_ack(&raa).unwrap();
    let sig = lsp.sign_commitment().unwrap();
    let raa = client.receive_commitment_signed(&sig).unwrap();
    lsp.receive_revoke_and_ack(&raa).unwrap();
    // Updates during a round are refused; out-of-order messages too.
    assert!(matches!(
        client.receive_revoke_and_ack(&raa),
        Err(ChannelError::WrongPhase(_))
    ));
    // A fulfill with the wrong preimage: refused; the right one settles.
    assert!(matches!(
        lsp.fulfill_htlc(add.id, [9; 32]),
        Err(ChannelError::WrongPreimage(_))
    ));
    assert!(matches!(
        lsp.fulfill_htlc(77, pre),
        Err(ChannelError::UnknownHtlc(77))
    ));
    let f = lsp.fulfill_htlc(add.id, pre).unwrap();
    let mut wrong = f;
    wrong.preimage = [8; 32];
    assert!(matches!(
        client.receive_fulfill(&wrong),
        Err(ChannelError::WrongPreimage(_))
    ));
    client.receive_fulfill(&f).unwrap();
    round(&mut lsp, &mut client).unwrap();
    assert_eq!(client.balance_msat(), before.1 - 2_000_000);
    assert_eq!(lsp.balance_msat(), before.0 + 2_000_000);
}

#[test]
fn htlc_limits_are_enforced() {
    // The LSP accepts at most 2 HTLCs and 10,000 sat in flight from the client.
    let limits = ChannelLimits {
        max_accepted_htlcs: 2,
        max_htlc_value_in_flight_msat: 10_000_000,
        ..ChannelLimits::default()
    };
    let default = ChannelLimits::default();
    let (ls, cs) = (secrets(9), secrets(10));
    let key = AggregateKey::new(&[
        BtcPublicKey::new(ls.funding.public_key()),
        BtcPublicKey::new(cs.funding.public_key()),
    ])
    .unwrap()
    .tweaked(None)
    .unwrap();
    let funding = TxOut {
        value: Amount::from_sat(CAPACITY_SAT),
        script_pubkey: superscalar_core::channel::commitment::funding_script(&key),
    };
    let setup = |we_opened, our| ChannelSetup {
        funding_outpoint: OutPoint::null(),
        funding: funding.clone(),
        funding_key: key.clone(),
        we_opened,
        our_balance_msat: our,
    };
    let make = || {
        let lsp = Channel::new(
            setup(true, 0),
            secrets(9),
            limits,
            Channel::announcement(&cs, &key, OutPoint::null()),
            default,
        )
        .unwrap();
        let client = Channel::new(
            setup(false, CAPACITY_SAT * 1000),
            secrets(10),
            default,
            Channel::announcement(&ls, &key, OutPoint::null()),
            limits,
        )
        .unwrap();
        (lsp, client)
    };
    let (mut lsp, mut client) = make();
    for i in 0..2 {
        let add = client
            .add_htlc(1_000_000, preimage(i).1, HEIGHT + 100, HEIGHT)
            .unwrap();
        lsp.receive_add(&add, HEIGHT).unwrap();
    }
    assert!(matches!(
        client.add_htlc(1_000_000, preimage(3).1, HEIGHT + 100, HEIGHT),
        Err(ChannelError::TooManyHtlcs(2))
    ));
    round(&mut client, &mut lsp).unwrap();
    assert_eq!(lsp.pending_htlcs(), 2);

    let (mut lsp, mut client) = make();
    let big = client
        .add_htlc(9_000_000, preimage(4).1, HEIGHT + 100, HEIGHT)
        .unwrap();
    lsp.receive_add(&big, HEIGHT).unwrap();
    assert!(matches!(
        client.add_htlc(2_000_000, preimage(5).1, HEIGHT + 100, HEIGHT),
        Err(ChannelError::TooMuchInFlight(_))
    ));
    round(&mut client, &mut lsp).unwrap();
    assert_eq!(lsp.pending_htlcs(), 1);
}
