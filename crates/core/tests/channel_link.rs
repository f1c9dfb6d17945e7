//! The leaf channel between daemons (`channel::link`): rounds as messages, turns, what each side
//! persists, retransmission after a dropped connection or a crash at any step, and refusals that
//! change nothing.

use std::collections::VecDeque;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::{Keypair, PublicKey};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Amount, OutPoint, TxOut};
use proptest::prelude::*;
use superscalar_core::channel::commitment::funding_script;
use superscalar_core::channel::link::{Intent, Link, LinkError, LinkEvent, LinkMsg, Step};
use superscalar_core::channel::state::{Channel, ChannelLimits, ChannelSecrets, ChannelSetup};
use superscalar_core::codec::{decode, encode};
use superscalar_core::musig::{AggregateKey, TweakedAggregateKey};

const CAPACITY_SAT: u64 = 10_000_000;
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

/// Both sides of one channel, the messages in flight each way, and what each side last wrote.
struct Net {
    links: [Link; 2],
    secrets: [ChannelSecrets; 2],
    key: TweakedAggregateKey,
    /// `inbox[i]`: messages on their way to side `i`.
    inbox: [VecDeque<LinkMsg>; 2],
    persisted: [Vec<u8>; 2],
    events: [Vec<LinkEvent>; 2],
    /// Steps taken (messages delivered and polls that sent something).
    steps: usize,
}

impl Net {
    /// Side 0 is the leader (the LSP), with the whole capacity; side 1 the follower.
    fn new() -> Net {
        let s = [secrets(1), secrets(2)];
        let key = AggregateKey::new(&[
            PublicKey::new(s[0].funding.public_key()),
            PublicKey::new(s[1].funding.public_key()),
        ])
        .unwrap()
        .tweaked(None)
        .unwrap();
        let funding = TxOut {
            value: Amount::from_sat(CAPACITY_SAT),
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
        let ann = |i: usize| Channel::announcement(&s[i], &key, OutPoint::null());
        let lsp = Channel::new(
            setup(true, CAPACITY_SAT * 1000),
            s[0].clone(),
            limits,
            ann(1),
            limits,
        )
        .unwrap();
        let client = Channel::new(setup(false, 0), s[1].clone(), limits, ann(0), limits).unwrap();
        let links = [Link::new(lsp, true), Link::new(client, false)];
        let persisted = [links[0].snapshot(), links[1].snapshot()];
        let mut net = Net {
            links,
            secrets: s,
            key,
            inbox: [VecDeque::new(), VecDeque::new()],
            persisted,
            events: [Vec::new(), Vec::new()],
            steps: 0,
        };
        net.connect();
        net
    }

    fn apply(&mut self, side: usize, step: Step) {
        if step.persist {
            self.persisted[side] = self.links[side].snapshot();
        }
        for m in step.send {
            // Every message crosses the wire encoded.
            let m: LinkMsg = decode(&encode(&m)).unwrap();
            self.inbox[1 - side].push_back(m);
        }
        self.events[side].extend(step.events);
    }

    fn connect(&mut self) {
        for side in 0..2 {
            let msgs = self.links[side].connected();
            self.apply(
                side,
                Step {
                    send: msgs,
                    ..Step::default()
                },
            );
        }
    }

    /// The connection drops: whatever is in flight is lost.
    fn drop_connection(&mut self) {
        self.inbox = [VecDeque::new(), VecDeque::new()];
        self.links[0].disconnected();
        self.links[1].disconnected();
    }

    /// Side `side` crashes and restarts from what it last wrote.
    fn crash(&mut self, side: usize) {
        self.drop_connection();
        self.links[side] = Link::restore(
            &self.persisted[side],
            self.secrets[side].clone(),
            self.key.clone(),
        )
        .unwrap();
    }

    fn poll(&mut self, side: usize) {
        let step = self.links[side].poll(HEIGHT).unwrap();
        self.apply(side, step);
    }

    /// Delivers one message, if any is in flight; whether one was.
    fn deliver_one(&mut self) -> bool {
        for side in [0, 1] {
            if let Some(m) = self.inbox[side].pop_front() {
                let step = self.links[side].receive(m, HEIGHT).unwrap();
                self.apply(side, step);
                self.steps += 1;
                return true;
            }
        }
        false
    }

    /// Runs until nothing moves, reacting to events as the daemons do: an incoming HTLC whose
    /// hash is known is fulfilled.
    fn settle(&mut self, preimages: &[[u8; 32]]) {
        for _ in 0..10_000 {
            self.poll(0);
            self.poll(1);
            for side in 0..2 {
                for e in std::mem::take(&mut self.events[side]) {
                    if let LinkEvent::Incoming(add) = e {
                        let p = preimages.iter().find(|p| {
                            sha256::Hash::hash(&p[..]).to_byte_array() == add.payment_hash
                        });
                        let intent = match p {
                            Some(p) => Intent::Fulfill {
                                id: add.id,
                                preimage: *p,
                            },
                            None => Intent::Fail { id: add.id },
                        };
                        self.links[side].push(intent).unwrap();
                    }
                }
            }
            if !self.deliver_one()
                && self.links.iter().all(|l| l.is_quiet())
                && self.inbox.iter().all(VecDeque::is_empty)
            {
                return;
            }
        }
        panic!("the link did not settle");
    }

    fn balances(&self) -> (u64, u64) {
        (
            self.links[0].channel().balance_msat(),
            self.links[1].channel().balance_msat(),
        )
    }
}

fn add(amount_msat: u64, preimage: &[u8; 32]) -> Intent {
    Intent::Add {
        amount_msat,
        payment_hash: sha256::Hash::hash(&preimage[..]).to_byte_array(),
        cltv_expiry: HEIGHT + 100,
    }
}

#[test]
fn the_first_round_then_payments_both_ways_with_concurrent_intents() {
    let mut net = Net::new();
    net.settle(&[]);
    assert!(net.links[0].is_ready() && net.links[1].is_ready());
    // The LSP pays the client; then both pay each other at once (the turns keep the rounds
    // apart).
    let p = [[1u8; 32], [2; 32], [3; 32], [4; 32]];
    net.links[0].push(add(3_000_000, &p[0])).unwrap();
    net.settle(&p);
    assert_eq!(net.balances(), (CAPACITY_SAT * 1000 - 3_000_000, 3_000_000));
    net.links[0].push(add(1_000_000, &p[1])).unwrap();
    net.links[1].push(add(500_000, &p[2])).unwrap();
    net.links[1].push(add(250_000, &p[3])).unwrap();
    net.settle(&p);
    assert_eq!(net.balances(), (CAPACITY_SAT * 1000 - 3_250_000, 3_250_000));
    // An HTLC nobody knows the preimage of is failed back: nothing moves.
    net.links[1].push(add(100_000, &[9; 32])).unwrap();
    net.settle(&p);
    assert_eq!(net.balances(), (CAPACITY_SAT * 1000 - 3_250_000, 3_250_000));
    let failed = net.links[1].channel().next_htlcs().is_empty();
    assert!(failed);
}

/// A scenario: two payments each way, with the first round; returns the final balances.
fn scenario(mut disturb: impl FnMut(&mut Net)) -> (u64, u64) {
    let p = [[1u8; 32], [2; 32], [3; 32], [4; 32]];
    let mut net = Net::new();
    net.links[0].push(add(4_000_000, &p[0])).unwrap();
    net.links[0].push(add(1_000_000, &p[1])).unwrap();
    net.links[1].push(add(700_000, &p[2])).unwrap();
    // The daemons write their intents with the link (a payment's add, a forward).
    net.persisted = [net.links[0].snapshot(), net.links[1].snapshot()];
    for _ in 0..10_000 {
        disturb(&mut net);
        net.poll(0);
        net.poll(1);
        net.events = [Vec::new(), Vec::new()];
        // As the daemons do after a restart (events may be lost in a crash): every committed
        // HTLC of the other side not being settled yet is settled from what is known.
        for side in 0..2 {
            let channel = net.links[side].channel();
            let next = channel.next_htlcs();
            let open: Vec<_> = channel
                .committed_htlcs()
                .into_iter()
                .filter(|h| !h.offered_by_us && next.contains(h))
                .filter(|h| !net.links[side].resolution_queued(h.id))
                .collect();
            for h in open {
                let pre = p
                    .iter()
                    .find(|x| sha256::Hash::hash(&x[..]).to_byte_array() == h.payment_hash);
                let intent = match pre {
                    Some(x) => Intent::Fulfill {
                        id: h.id,
                        preimage: *x,
                    },
                    None => Intent::Fail { id: h.id },
                };
                net.links[side].push(intent).unwrap();
            }
        }
        if !net.deliver_one()
            && net.links.iter().all(|l| l.is_quiet())
            && net.inbox.iter().all(VecDeque::is_empty)
        {
            // The follower's add may have been refused before the client had a balance: the
            // daemons retry; here, once.
            break;
        }
    }
    net.balances()
}

#[test]
fn a_dropped_connection_at_any_step_resumes_to_the_same_balances() {
    let expected = scenario(|_| {});
    assert!(expected.1 > 0, "{expected:?}");
    for at in 0..40 {
        let mut done = false;
        let got = scenario(|net| {
            if !done && net.steps == at {
                done = true;
                net.drop_connection();
                net.connect();
            }
        });
        assert_eq!(got, expected, "connection dropped at step {at}");
    }
}

#[test]
fn a_crash_of_either_side_at_any_step_resumes_from_its_store() {
    let expected = scenario(|_| {});
    for side in 0..2 {
        for at in 0..40 {
            let mut done = false;
            let got = scenario(|net| {
                if !done && net.steps == at {
                    done = true;
                    net.crash(side);
                    net.connect();
                }
            });
            assert_eq!(got, expected, "side {side} crashed at step {at}");
        }
    }
}

#[test]
fn both_sides_crash_at_once_at_any_step() {
    let expected = scenario(|_| {});
    for at in 0..40 {
        let mut done = false;
        let got = scenario(|net| {
            if !done && net.steps == at {
                done = true;
                net.crash(0);
                net.crash(1);
                net.connect();
            }
        });
        assert_eq!(got, expected, "both crashed at step {at}");
    }
}

#[test]
fn out_of_turn_and_misnumbered_messages_are_refused_and_change_nothing() {
    let mut net = Net::new();
    net.settle(&[]);
    let p = [5u8; 32];
    // A proposal from the follower, kept to replay it wrongly below.
    net.links[1].push(add(0, &p)).unwrap(); // refused by the channel: amount 0
    net.poll(1);
    net.links[0].push(add(2_000_000, &p)).unwrap();
    net.poll(0);
    let propose = net.inbox[1].pop_front().unwrap();
    let LinkMsg::Propose {
        commitment,
        updates,
        signed,
    } = propose.clone()
    else {
        panic!("{propose:?}");
    };
    let before = [net.links[0].snapshot(), net.links[1].snapshot()];
    let check = |net: &Net| {
        assert_eq!(net.links[0].snapshot(), before[0]);
        assert_eq!(net.links[1].snapshot(), before[1]);
    };
    // To the follower: a wrong commitment number, a turn request, sync.
    for bad in [
        LinkMsg::Propose {
            commitment: commitment + 1,
            updates: updates.clone(),
            signed: signed.clone(),
        },
        LinkMsg::TurnRequest,
        LinkMsg::Sync,
    ] {
        let mut l = net.links[1].clone();
        assert!(l.receive(bad, HEIGHT).is_err());
        assert_eq!(l.snapshot(), before[1]);
    }
    // A signature that does not verify: the updates are not applied either.
    let mut tampered = signed.clone();
    tampered.partial_sig.0[0] ^= 1;
    let mut l = net.links[1].clone();
    let r = l.receive(
        LinkMsg::Propose {
            commitment,
            updates: updates.clone(),
            signed: tampered,
        },
        HEIGHT,
    );
    assert!(matches!(r, Err(LinkError::Channel(_))), "{r:?}");
    assert_eq!(l.snapshot(), before[1]);
    // To the leader, which awaits the reply: a proposal of its own, a grant, an ack.
    let mut l = net.links[0].clone();
    assert!(l.receive(propose.clone(), HEIGHT).is_err());
    assert!(l.receive(LinkMsg::TurnGrant, HEIGHT).is_err());
    check(&net);
    // The real one goes through.
    net.inbox[1].push_front(propose);
    net.settle(&[p]);
    assert_eq!(net.balances().1, 2_000_000);
}

#[test]
fn a_proposal_without_a_turn_is_refused_once_the_follower_is_synced() {
    let mut net = Net::new();
    net.settle(&[]);
    let p = [6u8; 32];
    // The follower sneaks a proposal in without asking: build it on a copy that holds a turn.
    net.links[0].push(add(1_000_000, &p)).unwrap();
    net.settle(&[p]);
    let mut sneaky = net.links[1].clone();
    sneaky.push(add(10_000, &[7; 32])).unwrap();
    let step = sneaky.receive(LinkMsg::TurnGrant, HEIGHT).unwrap();
    let propose = step.send.into_iter().next().unwrap();
    assert!(matches!(propose, LinkMsg::Propose { .. }), "{propose:?}");
    let before = net.links[0].snapshot();
    let r = net.links[0].receive(propose, HEIGHT);
    assert!(matches!(r, Err(LinkError::OutOfTurn(_))), "{r:?}");
    assert_eq!(net.links[0].snapshot(), before);
}

#[test]
fn a_snapshot_round_trips_mid_round_and_refuses_garbage() {
    let mut net = Net::new();
    net.settle(&[]);
    net.links[0].push(add(1_000_000, &[1; 32])).unwrap();
    net.poll(0);
    for side in 0..2 {
        let snap = net.links[side].snapshot();
        let back = Link::restore(&snap, net.secrets[side].clone(), net.key.clone()).unwrap();
        assert_eq!(back.snapshot(), snap);
        for cut in 0..snap.len() {
            assert!(
                Link::restore(&snap[..cut], net.secrets[side].clone(), net.key.clone()).is_err(),
                "truncated at {cut}"
            );
        }
        // Another side's secrets are refused.
        assert!(Link::restore(&snap, net.secrets[1 - side].clone(), net.key.clone()).is_err());
    }
}

/// A second funding outpoint (the channel output of a factory state being signed).
fn new_outpoint() -> OutPoint {
    OutPoint {
        txid: bitcoin::Txid::from_byte_array([7; 32]),
        vout: 1,
    }
}

#[test]
fn dual_state_adds_an_outpoint_resigns_pays_on_both_and_retires_the_old_one() {
    let p = [[1u8; 32], [2; 32], [3; 32]];
    let mut net = Net::new();
    net.links[0].push(add(4_000_000, &p[0])).unwrap();
    net.settle(&p);
    let old = net.links[0].channel().funding_outpoint();
    let new = new_outpoint();
    // The leader adds first (with its update proposal), then the follower: the leader starts
    // nothing, not even a queued payment, until the follower's nonce is in.
    let step = net.links[0].add_funding(new).unwrap();
    net.apply(0, step);
    net.links[0].push(add(1_000_000, &p[1])).unwrap();
    net.poll(0);
    assert!(net.inbox[1]
        .iter()
        .all(|m| matches!(m, LinkMsg::Funding(_))));
    let step = net.links[1].add_funding(new).unwrap();
    net.apply(1, step);
    assert!(!net.links[1].channel().holds_commitment_on(&new));
    net.settle(&p);
    for side in 0..2 {
        let c = net.links[side].channel();
        assert_eq!(c.funding_outpoints(), vec![old, new]);
        assert!(c.holds_commitment_on(&new) && c.holds_commitment_on(&old));
        assert!(c.signed_latest_commitment_on(new).is_ok());
    }
    assert_eq!(net.balances(), (CAPACITY_SAT * 1000 - 5_000_000, 5_000_000));
    // Payments go on across a crash, signed on both outpoints.
    net.links[1].push(add(700_000, &p[2])).unwrap();
    net.crash(0);
    net.connect();
    net.settle(&p);
    assert_eq!(net.balances(), (CAPACITY_SAT * 1000 - 4_300_000, 4_300_000));
    // Only the leader retires, between rounds, on both sides at once; then `new` is primary.
    assert!(net.links[1].retire_funding(old).is_err());
    net.links[0].retire_funding(old).unwrap();
    net.settle(&p);
    for side in 0..2 {
        let c = net.links[side].channel();
        assert_eq!(c.funding_outpoints(), vec![new]);
        assert_eq!(c.funding_outpoint(), new);
        assert!(c.signed_latest_commitment().is_ok());
    }
    net.links[0].push(add(300_000, &[1; 32])).unwrap();
    net.settle(&p);
    assert_eq!(net.balances(), (CAPACITY_SAT * 1000 - 4_600_000, 4_600_000));
}

#[test]
fn an_outpoint_added_by_one_side_only_is_retired_by_the_leader_and_payments_resume() {
    let p = [[1u8; 32], [2; 32]];
    let mut net = Net::new();
    net.settle(&p);
    let new = new_outpoint();
    let step = net.links[0].add_funding(new).unwrap();
    net.apply(0, step);
    // The follower refuses the update: the leader's nonce for an outpoint it never added is
    // refused and changes nothing.
    let before = net.links[1].snapshot();
    let m = net.inbox[1].pop_front().unwrap();
    assert!(net.links[1].receive(m, HEIGHT).is_err());
    assert_eq!(net.links[1].snapshot(), before);
    // A Retire from the follower is refused too.
    let before = net.links[0].snapshot();
    assert!(net.links[0].receive(LinkMsg::Retire(new), HEIGHT).is_err());
    assert_eq!(net.links[0].snapshot(), before);
    // The update is aborted: the leader retires the outpoint (the follower has nothing to do).
    net.links[0].push(add(1_000_000, &p[0])).unwrap();
    net.links[0].retire_funding(new).unwrap();
    net.settle(&p);
    assert_eq!(net.balances(), (CAPACITY_SAT * 1000 - 1_000_000, 1_000_000));
    assert_eq!(net.links[0].channel().funding_outpoints().len(), 1);
}

proptest! {
    #[test]
    fn link_messages_decode_only_what_was_encoded(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        // Random bytes never panic; what decodes encodes back to the same bytes.
        if let Ok(m) = decode::<LinkMsg>(&bytes) {
            let again = encode(&m);
            prop_assert_eq!(decode::<LinkMsg>(&again).unwrap(), m);
        }
    }
}
