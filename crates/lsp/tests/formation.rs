//! Forming a factory with the LSP's and the clients' pure state machines exchanging the wire
//! messages (encoded and decoded as on the network), each party with its own store: every
//! client ends with its exit path and timeouts signed and stored, the LSP with every
//! transaction; each client receives only what it signs; a client that cheats is named and
//! nothing it sent is counted.

use std::collections::HashMap;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, Secp256k1};
use bitcoin::secp256k1::PublicKey;
use bitcoin::{absolute, transaction, Amount, Network, OutPoint, Transaction, TxIn, Txid};
use superscalar_client::join::{JoinError, Joining, Request};
use superscalar_core::codec::encode;
use superscalar_core::revocation::StockSecrets;
use superscalar_core::{ClientSpec, FactoryConfig, FactoryId, FactoryParams};
use superscalar_lsp::formation::{Formation, FormationError, Output, Phase};
use superscalar_store::{FactoryStatus, KeyIndex, Store};
use superscalar_wire::messages::{read_message, ErrorCode, ErrorMsg, Message};

struct Client {
    node: PublicKey,
    joining: Joining,
    store: Store,
    _dir: tempfile::TempDir,
    received: usize,
}

fn keypair(i: u32) -> Keypair {
    let mut sk = [7u8; 32];
    sk[..4].copy_from_slice(&(i + 1).to_be_bytes());
    Keypair::from_seckey_slice(&Secp256k1::new(), &sk).unwrap()
}

/// Through the encoder and decoder, as on the wire.
fn wire(m: &Message) -> (Message, usize) {
    let bytes = encode(m);
    (read_message(m.ty(), &mut &bytes[..]).unwrap(), bytes.len())
}

struct Setup {
    formation: Formation,
    lsp_store: Store,
    _lsp_dir: tempfile::TempDir,
    clients: Vec<Client>,
    pending: Vec<(PublicKey, Message)>,
}

const TIP: u32 = 300;

fn setup(n: u32) -> Setup {
    let lsp_key = keypair(1_000_000);
    let mut clients = Vec::new();
    let mut joins = Vec::new();
    for i in 0..n {
        let kp = keypair(i);
        let node = keypair(2_000_000 + i).public_key();
        let payout = ClientSpec::new(bitcoin::PublicKey::new(kp.public_key()), Amount::ZERO).payout;
        let (joining, join) = Joining::new(Request {
            network: Network::Regtest,
            keypair: kp,
            key_index: KeyIndex::new(0).unwrap(),
            payout,
            capacity: Amount::from_sat(100_000 + u64::from(i)),
        });
        let Message::Join(j) = wire(&join).0 else {
            panic!("a join")
        };
        joins.push(j);
        let dir = tempfile::tempdir().unwrap();
        clients.push(Client {
            node,
            joining,
            store: Store::open(dir.path()).unwrap(),
            _dir: dir,
            received: 0,
        });
    }
    let params = FactoryParams {
        id: FactoryId([0x42; 32]),
        config: FactoryConfig::regtest(),
        lsp_key: bitcoin::PublicKey::new(lsp_key.public_key()),
        clients: joins
            .iter()
            .map(|j| ClientSpec {
                key: j.key,
                capacity: Amount::from_sat(j.capacity_sat),
                payout: j.payout.clone(),
            })
            .collect(),
        creation_height: TIP,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&StockSecrets::new([9; 32]));
    let out = superscalar_core::Factory::new(params.clone())
        .unwrap()
        .funding_output()
        .unwrap();
    let funding_tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array([1; 32]), 0),
            ..TxIn::default()
        }],
        output: vec![out],
    };
    let dir = tempfile::tempdir().unwrap();
    let mut lsp_store = Store::open(dir.path()).unwrap();
    let (formation, output) = Formation::start(
        params,
        clients.iter().map(|c| c.node).collect(),
        lsp_key,
        KeyIndex::new(0).unwrap(),
        &funding_tx,
        0,
    )
    .unwrap();
    let mut pending = apply(&mut lsp_store, output);
    for i in 0..n as usize {
        pending.extend(formation.proposal_for(i).unwrap());
    }
    Setup {
        formation,
        lsp_store,
        _lsp_dir: dir,
        clients,
        pending,
    }
}

fn apply(store: &mut Store, out: Output) -> Vec<(PublicKey, Message)> {
    for c in &out.persist {
        store.apply(c).unwrap();
    }
    out.send
}

impl Setup {
    /// Delivers the LSP's messages to the clients and theirs back, until quiet.
    fn run(&mut self, mut tamper: impl FnMut(usize, &mut Message)) -> Result<(), FormationError> {
        let by_node: HashMap<PublicKey, usize> = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c.node, i))
            .collect();
        while !self.pending.is_empty() {
            let mut replies = Vec::new();
            for (to, msg) in std::mem::take(&mut self.pending) {
                let i = by_node[&to];
                let c = &mut self.clients[i];
                let (msg, len) = wire(&msg);
                c.received += len;
                let out = c.joining.handle(msg, TIP).unwrap();
                for change in &out.persist {
                    c.store.apply(change).unwrap();
                }
                for mut m in out.send {
                    tamper(i, &mut m);
                    replies.push((c.node, wire(&m).0));
                }
            }
            for (from, msg) in replies {
                let out = self.formation.handle(from, msg)?;
                self.pending.extend(apply(&mut self.lsp_store, out));
            }
        }
        Ok(())
    }
}

#[test]
fn a_factory_forms_and_every_party_stores_what_it_signed() {
    for n in [1u32, 2, 5, 16] {
        let mut s = setup(n);
        s.run(|_, _| {}).unwrap();
        assert_eq!(s.formation.phase(), Phase::Signed);
        let id = superscalar_store::FactoryId(s.formation.id().0);
        let lsp = s.lsp_store.factory(id).unwrap().unwrap();
        assert_eq!(lsp.status, FactoryStatus::Signed);
        assert_eq!(lsp.funding, Some(s.formation.funding()));
        assert_eq!(
            s.lsp_store.signed_txs(id).unwrap().len(),
            s.formation.ceremony().job_count()
        );
        assert!(s.lsp_store.ceremony(id).unwrap().is_none());
        for c in &s.clients {
            assert!(c.joining.is_signed());
            let rec = c.store.factory(id).unwrap().unwrap();
            assert_eq!(rec.status, FactoryStatus::Signed);
            let txs = c.store.signed_txs(id).unwrap();
            assert_eq!(txs.len(), c.joining.signed().len());
            // Every stored transaction's spend was recorded before signing.
            for t in &txs {
                let spent = t.tx.input[0].previous_output;
                let spend = c
                    .store
                    .recorded_spend(spent, &t.label)
                    .unwrap()
                    .expect("recorded");
                assert_eq!(spend.txid, t.tx.compute_txid());
            }
        }
    }
}

#[test]
fn each_client_receives_only_its_share_of_the_signing_rounds() {
    // The parameters are O(N) and sent once; the rounds are O(log N) per client.
    let mut sizes = Vec::new();
    for n in [8u32, 64] {
        let mut s = setup(n);
        let params = encode(s.formation.factory().params()).len();
        s.run(|_, _| {}).unwrap();
        let most = s.clients.iter().map(|c| c.received).max().unwrap();
        sizes.push((n, most - params));
        println!(
            "N={n}: parameters {params} bytes, signing rounds at most {} bytes per client",
            most - params
        );
    }
    let (small, large) = (sizes[0].1, sizes[1].1);
    assert!(
        large < small * 3,
        "rounds grew from {small} to {large} bytes"
    );
}

#[test]
fn a_cheating_client_is_named_and_the_factory_is_not_signed() {
    let mut s = setup(5);
    let err = s
        .run(|i, m| {
            if i == 3 {
                if let Message::Partials(p) = m {
                    p.partials[0].1 .0[5] ^= 1;
                }
            }
        })
        .unwrap_err();
    match err {
        FormationError::Misbehaved { node, client, .. } => {
            assert_eq!(node, s.clients[3].node);
            assert_eq!(client, 3);
        }
        other => panic!("{other}"),
    }
    assert_eq!(s.formation.phase(), Phase::Partials);
    let id = superscalar_store::FactoryId(s.formation.id().0);
    assert_eq!(
        s.lsp_store.factory(id).unwrap().unwrap().status,
        FactoryStatus::Forming
    );
    assert!(s.lsp_store.signed_txs(id).unwrap().is_empty());
}

#[test]
fn strangers_and_out_of_turn_messages_are_refused() {
    let mut s = setup(2);
    let stranger = keypair(99).public_key();
    let msg = s.pending[0].1.clone();
    assert!(matches!(
        s.formation.handle(stranger, msg.clone()),
        Err(FormationError::NotMember(_))
    ));
    // A proposal sent back by a member is out of turn.
    assert!(matches!(
        s.formation.handle(s.clients[0].node, msg),
        Err(FormationError::Misbehaved { client: 0, .. })
    ));
}

#[test]
fn a_client_refuses_a_proposal_that_is_not_what_it_asked_for() {
    let s = setup(3);
    // Client 1's proposal delivered to client 0: another position's key.
    let (_, for_1) = s
        .pending
        .iter()
        .find(|(to, _)| *to == s.clients[1].node)
        .unwrap()
        .clone();
    let mut c0 = Joining::new(Request {
        network: Network::Regtest,
        keypair: keypair(0),
        key_index: KeyIndex::new(0).unwrap(),
        payout: ClientSpec::new(
            bitcoin::PublicKey::new(keypair(0).public_key()),
            Amount::ZERO,
        )
        .payout,
        capacity: Amount::from_sat(100_000),
    })
    .0;
    assert!(matches!(
        c0.handle(for_1.clone(), TIP),
        Err(JoinError::Proposal(_))
    ));
    // The right proposal, but our own chain is far from the factory's creation height.
    let (_, for_0) = s
        .pending
        .iter()
        .find(|(to, _)| *to == s.clients[0].node)
        .unwrap()
        .clone();
    assert_eq!(c0.handle(for_0.clone(), TIP + 500).unwrap().send.len(), 0);
    let (_, hints_0) = s
        .pending
        .iter()
        .find(|(to, m)| *to == s.clients[0].node && matches!(m, Message::Hints(_)))
        .unwrap()
        .clone();
    let err = c0.handle(hints_0.clone(), TIP + 500).unwrap_err();
    assert!(
        matches!(
            err,
            JoinError::Ceremony(superscalar_core::ceremony::CeremonyError::Factory(
                superscalar_core::FactoryError::Heights(_)
            ))
        ),
        "{err}"
    );
    // Another capacity than asked.
    let mut c0 = Joining::new(Request {
        network: Network::Regtest,
        keypair: keypair(0),
        key_index: KeyIndex::new(0).unwrap(),
        payout: ClientSpec::new(
            bitcoin::PublicKey::new(keypair(0).public_key()),
            Amount::ZERO,
        )
        .payout,
        capacity: Amount::from_sat(90_000),
    })
    .0;
    assert!(matches!(
        c0.handle(for_0.clone(), TIP),
        Err(JoinError::Proposal(_))
    ));
    // Hints for another position, or a lying hint, are refused before anything is signed.
    let mut c0 = Joining::new(Request {
        network: Network::Regtest,
        keypair: keypair(0),
        key_index: KeyIndex::new(0).unwrap(),
        payout: ClientSpec::new(
            bitcoin::PublicKey::new(keypair(0).public_key()),
            Amount::ZERO,
        )
        .payout,
        capacity: Amount::from_sat(100_000),
    })
    .0;
    c0.handle(for_0.clone(), TIP).unwrap();
    let Message::Hints(mut h) = hints_0 else {
        unreachable!("found as hints")
    };
    let mut other = h.clone();
    other.client = superscalar_core::ClientId(1);
    assert!(matches!(
        c0.handle(Message::Hints(other), TIP),
        Err(JoinError::Proposal(_))
    ));
    h.hints.scripts.pop();
    assert!(matches!(
        c0.handle(Message::Hints(h), TIP),
        Err(JoinError::Factory(_))
    ));
}

#[test]
fn a_refusal_from_the_lsp_ends_an_attempt_only_between_proposal_and_signatures() {
    let refusal = |factory: Option<FactoryId>| ErrorMsg {
        code: ErrorCode::Refused,
        factory,
        reason: "no factory is being formed".into(),
    };
    let mut s = setup(2);
    let id = s.formation.id();
    // Before the proposal: a refused join is not the end of a factory.
    assert!(!s.clients[0].joining.ended_by(&refusal(None)));
    for (to, msg) in std::mem::take(&mut s.pending) {
        let c = s.clients.iter_mut().find(|c| c.node == to).unwrap();
        c.joining.handle(wire(&msg).0, TIP).unwrap();
    }
    // In the ceremony: the LSP no longer counts this client (a round went on without it).
    let j = &s.clients[0].joining;
    assert!(j.ended_by(&refusal(None)));
    assert!(j.ended_by(&refusal(Some(id))));
    assert!(!j.ended_by(&refusal(Some(FactoryId([0x43; 32])))));
    // Signed: the factory is the client's, whatever the LSP says.
    let mut s = setup(2);
    s.run(|_, _| {}).unwrap();
    assert!(!s.clients[0].joining.ended_by(&refusal(None)));
}
