//! Persisting a party's factory state: `FactoryState::snapshot` and `FactoryState::restore` for
//! the LSP and the clients when fresh, after advances (with revocations), in the middle of an
//! advance, after an abandoned one and with liquidity sales (merged into a DW advance, and
//! pseudo-Spilman); restored parties sign the next update and still refuse a used index; bytes
//! that are not a snapshot of this factory are refused without a panic; the LSP's snapshot holds
//! none of its stock secrets.

use std::sync::{Arc, OnceLock};

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, OutPoint, Txid};
use proptest::prelude::*;
use superscalar_core::advance::{
    AdvanceError, FactoryState, SaleTerms, StateSnapshotError, STATE_SNAPSHOT_VERSION,
};
use superscalar_core::ceremony::{run_in_process, ClientCeremony, LspCeremony, SignedTx};
use superscalar_core::revocation::StockSecrets;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, LeafKind, Signer, Slot,
    StateIndex, TxKind,
};

/// The factory's creation height, where its funding confirms; updates are signed one later.
const HEIGHT: u32 = 100;
const TIP: u32 = HEIGHT + 1;
const STOCK_SEED: [u8; 32] = [0x5e; 32];

fn keypair(seed: u32) -> Keypair {
    let mut sk = [0u8; 32];
    sk[..4].copy_from_slice(&seed.to_be_bytes());
    sk[31] = 1;
    Keypair::from_seckey_slice(&Secp256k1::new(), &sk).unwrap()
}

/// A factory signed in process (its funding outpoint made up), with what each party signed.
struct Harness {
    factory: Arc<Factory>,
    lsp_key: Keypair,
    client_keys: Vec<Keypair>,
    funding: OutPoint,
    secrets: StockSecrets,
    lsp_signed: Vec<SignedTx>,
    client_signed: Vec<Vec<SignedTx>>,
}

fn params(n: u32, config: FactoryConfig, edit: impl FnOnce(&mut FactoryParams)) -> FactoryParams {
    let mut p = FactoryParams {
        id: FactoryId([n as u8; 32]),
        config,
        lsp_key: PublicKey::new(keypair(0xffff_0000).public_key()),
        clients: (0..n)
            .map(|i| {
                ClientSpec::new(
                    PublicKey::new(keypair(i + 1).public_key()),
                    Amount::from_sat(50_000 + 1_000 * u64::from(i % 7)),
                )
            })
            .collect(),
        creation_height: HEIGHT,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&StockSecrets::new(STOCK_SEED));
    edit(&mut p);
    p
}

fn build(n: u32, config: FactoryConfig) -> Harness {
    build_with(n, config, |_| {})
}

fn build_with(n: u32, config: FactoryConfig, edit: impl FnOnce(&mut FactoryParams)) -> Harness {
    let factory = Arc::new(Factory::new(params(n, config, edit)).unwrap());
    let lsp_key = keypair(0xffff_0000);
    let client_keys: Vec<Keypair> = (0..n).map(|i| keypair(i + 1)).collect();
    let funding = OutPoint::new(Txid::from_byte_array([9; 32]), 1);
    let (lsp, clients) = run_in_process(&factory, lsp_key, &client_keys, funding, HEIGHT).unwrap();
    Harness {
        factory,
        lsp_key,
        client_keys,
        funding,
        secrets: StockSecrets::new(STOCK_SEED),
        lsp_signed: lsp.all_signed().cloned().collect(),
        client_signed: clients.iter().map(|c| c.signed().to_vec()).collect(),
    }
}

fn ps_config() -> FactoryConfig {
    let mut c = FactoryConfig::regtest();
    c.shape.arity = vec![2];
    c.shape.leaf = LeafKind::PseudoSpilman { arity: 2 };
    c
}

/// Every party's view of the factory.
struct States {
    lsp: FactoryState,
    clients: Vec<FactoryState>,
}

/// Every party's state after the first ceremony, the funding seen confirmed.
fn states(h: &Harness) -> States {
    let open = |mut st: FactoryState| {
        let out = h.factory.funding_output().unwrap();
        st.confirm_funding(Some(&out), Some(HEIGHT)).unwrap();
        st
    };
    States {
        lsp: open(
            FactoryState::new(
                h.factory.clone(),
                h.funding,
                Signer::Lsp,
                h.lsp_signed.clone(),
            )
            .with_secrets(h.secrets.clone()),
        ),
        clients: h
            .client_signed
            .iter()
            .enumerate()
            .map(|(i, signed)| {
                open(FactoryState::new(
                    h.factory.clone(),
                    h.funding,
                    Signer::Client(ClientId(i as u32)),
                    signed.clone(),
                ))
            })
            .collect(),
    }
}

/// Both rounds of one ceremony, up to the LSP's aggregation.
fn rounds(lsp: &mut LspCeremony, ceremonies: &mut [(ClientId, ClientCeremony)]) {
    for (c, cc) in ceremonies.iter_mut() {
        lsp.receive_nonces(*c, &cc.round1().unwrap()).unwrap();
    }
    for (c, cc) in ceremonies.iter_mut() {
        let agg = lsp.agg_nonces_for(*c).unwrap();
        lsp.receive_partials(*c, &cc.round2(&agg).unwrap()).unwrap();
    }
    lsp.finalize().unwrap();
}

/// An advance after its first stage (everyone holds it fully signed) and the second stage's
/// rounds: every party's state has `below` set.
struct Stage2 {
    lsp: LspCeremony,
    entries: Vec<(ClientId, ClientCeremony)>,
    lsp_signed: Vec<SignedTx>,
    signed: Vec<(ClientId, Vec<SignedTx>)>,
}

fn stage_one_then_entry(
    h: &Harness,
    s: &mut States,
    mut lsp: LspCeremony,
    mut ceremonies: Vec<(ClientId, ClientCeremony)>,
) -> Stage2 {
    rounds(&mut lsp, &mut ceremonies);
    let mut signed = Vec::new();
    for (c, cc) in ceremonies.iter_mut() {
        cc.finish(&lsp.final_sigs_for(*c).unwrap()).unwrap();
        signed.push((*c, cc.signed().to_vec()));
    }
    let lsp_signed: Vec<SignedTx> = lsp.all_signed().cloned().collect();
    let mut lsp2 = s.lsp.propose_entry(&lsp_signed, &h.lsp_key).unwrap();
    let participants: Vec<ClientId> = lsp2.participants().collect();
    let mut entries: Vec<(ClientId, ClientCeremony)> = participants
        .into_iter()
        .map(|c| {
            let i = c.0 as usize;
            let mine = &signed.iter().find(|(b, _)| *b == c).unwrap().1;
            let cc = s.clients[i]
                .accept_entry(mine, c, h.client_keys[i])
                .unwrap();
            (c, cc)
        })
        .collect();
    rounds(&mut lsp2, &mut entries);
    Stage2 {
        lsp: lsp2,
        entries,
        lsp_signed,
        signed,
    }
}

/// Every party completes and the clients receive the superseded versions' secrets.
fn complete_all(s: &mut States, lsp_signed: Vec<SignedTx>, signed: Vec<(ClientId, Vec<SignedTx>)>) {
    for (c, sig) in &signed {
        s.clients[c.0 as usize].complete(sig.clone()).unwrap();
    }
    s.lsp.complete(lsp_signed).unwrap();
    let revealed = s.lsp.reveal().unwrap();
    for (c, _) in &signed {
        s.clients[c.0 as usize]
            .receive_revocations(&revealed)
            .unwrap();
    }
}

/// The second stage finished on every side, then completed.
fn finish_stage2(s: &mut States, mut st: Stage2) {
    for (c, cc) in st.entries.iter_mut() {
        cc.finish(&st.lsp.final_sigs_for(*c).unwrap()).unwrap();
        let all = &mut st.signed.iter_mut().find(|(b, _)| b == c).unwrap().1;
        all.extend(cc.signed().iter().cloned());
    }
    st.lsp_signed.extend(st.lsp.all_signed().cloned());
    complete_all(s, st.lsp_signed, st.signed);
}

/// An update's whole ceremony, every participant online.
fn sign_update(
    h: &Harness,
    s: &mut States,
    mut lsp: LspCeremony,
    mut ceremonies: Vec<(ClientId, ClientCeremony)>,
) {
    if s.lsp.pending_entry().is_some() {
        let st = stage_one_then_entry(h, s, lsp, ceremonies);
        finish_stage2(s, st);
    } else {
        rounds(&mut lsp, &mut ceremonies);
        let signed = ceremonies
            .iter_mut()
            .map(|(c, cc)| {
                cc.finish(&lsp.final_sigs_for(*c).unwrap()).unwrap();
                (*c, cc.signed().to_vec())
            })
            .collect();
        complete_all(s, lsp.all_signed().cloned().collect(), signed);
    }
}

/// The LSP proposes an advance of `client`'s leaf; every participant accepts.
fn start_advance(
    h: &Harness,
    s: &mut States,
    client: u32,
    sale: Option<SaleTerms>,
) -> (LspCeremony, Vec<(ClientId, ClientCeremony)>) {
    let leaf = h.factory.tree().leaf_of(ClientId(client)).unwrap();
    let (proposal, lsp) = s.lsp.propose_with(leaf, sale, &h.lsp_key).unwrap();
    let participants: Vec<ClientId> = lsp.participants().collect();
    let ceremonies = participants
        .into_iter()
        .map(|c| {
            let i = c.0 as usize;
            let cc = s.clients[i]
                .accept(&proposal, c, h.client_keys[i], TIP)
                .unwrap();
            (c, cc)
        })
        .collect();
    (lsp, ceremonies)
}

fn advance_with(h: &Harness, s: &mut States, client: u32, sale: Option<SaleTerms>) {
    let (lsp, ceremonies) = start_advance(h, s, client, sale);
    sign_update(h, s, lsp, ceremonies);
}

/// The LSP proposes a pseudo-Spilman sale; every client of the stock accepts.
fn start_ps_sale(
    h: &Harness,
    s: &mut States,
    terms: SaleTerms,
) -> (LspCeremony, Vec<(ClientId, ClientCeremony)>) {
    let (proposal, lsp) = s.lsp.propose_sale(terms, &h.lsp_key).unwrap();
    let participants: Vec<ClientId> = lsp.participants().collect();
    let ceremonies = participants
        .into_iter()
        .map(|c| {
            let i = c.0 as usize;
            let cc = s.clients[i]
                .accept_sale(&proposal, c, h.client_keys[i], TIP)
                .unwrap();
            (c, cc)
        })
        .collect();
    (lsp, ceremonies)
}

/// `st` restored from its snapshot (the LSP's secrets added back): byte for byte the same
/// snapshot, and the same answers.
fn round_trip(h: &Harness, st: &FactoryState) -> FactoryState {
    let bytes = st.snapshot();
    assert_eq!(bytes[0], STATE_SNAPSHOT_VERSION);
    let mut back = FactoryState::restore(Arc::clone(&h.factory), &bytes).unwrap();
    let lsp = st.reveal().is_ok();
    if lsp {
        // Without its secrets the restored LSP proposes nothing.
        assert!(matches!(back.reveal(), Err(AdvanceError::NotLsp)));
        back = back.with_secrets(h.secrets.clone());
    }
    assert_eq!(back.snapshot(), bytes, "a second snapshot is the first");
    assert_eq!(back.version(), st.version());
    assert_eq!(back.signed(), st.signed());
    assert_eq!(back.funding(), st.funding());
    assert_eq!(back.is_open(), st.is_open());
    assert_eq!(back.is_settled(), st.is_settled());
    assert_eq!(back.pending_entry(), st.pending_entry());
    assert_eq!(back.armed_punishments(), st.armed_punishments());
    assert_eq!(back.spent_outpoints(), st.spent_outpoints());
    assert_eq!(back.revocations(), st.revocations());
    assert_eq!(back.superseded().len(), st.superseded().len());
    assert_eq!(back.abandoned().len(), st.abandoned().len());
    if lsp {
        assert_eq!(back.reveal().unwrap(), st.reveal().unwrap());
    }
    for c in 0..h.client_keys.len() as u32 {
        let c = ClientId(c);
        assert_eq!(back.exit_path(c), st.exit_path(c));
        assert_eq!(back.abandoned_exit_paths(c), st.abandoned_exit_paths(c));
        let slot = Slot::Channel(c);
        assert_eq!(back.outpoint(slot), st.outpoint(slot));
        assert_eq!(back.abandoned_outpoints(slot), st.abandoned_outpoints(slot));
    }
    for s in 0..h.factory.stocks().len() as u32 {
        assert_eq!(back.outpoint(Slot::Stock(s)), st.outpoint(Slot::Stock(s)));
    }
    for j in 0..st.version().sales.len() as u32 {
        for slot in [Slot::Sold(j), Slot::Change(j)] {
            assert_eq!(back.outpoint(slot), st.outpoint(slot));
        }
    }
    back
}

/// Every party restored from its snapshot.
fn restart(h: &Harness, s: &States) -> States {
    States {
        lsp: round_trip(h, &s.lsp),
        clients: s.clients.iter().map(|c| round_trip(h, c)).collect(),
    }
}

fn terms(h: &Harness, buyer: u32, sat: u64) -> SaleTerms {
    SaleTerms {
        buyer: ClientId(buyer),
        stock: h.factory.stock_of(ClientId(buyer)).unwrap(),
        amount: Amount::from_sat(sat),
    }
}

#[test]
fn states_round_trip_through_advances_and_restored_parties_sign_the_next() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = restart(&h, &states(&h));
    eprintln!(
        "4 clients, fresh: LSP {} bytes, client {} bytes",
        s.lsp.snapshot().len(),
        s.clients[0].snapshot().len()
    );
    // One advance with a sale merged into the new leaf state, then restart.
    advance_with(&h, &mut s, 0, Some(terms(&h, 0, 40_000)));
    assert!(s.clients[0].is_settled());
    assert!(!s.clients[0].armed_punishments().is_empty());
    s = restart(&h, &s);
    // The whole next advance with the restored parties.
    advance_with(&h, &mut s, 0, None);
    assert!(s.clients.iter().all(|c| c.is_settled()));
    eprintln!(
        "4 clients, 2 advances: LSP {} bytes, client {} bytes",
        s.lsp.snapshot().len(),
        s.clients[0].snapshot().len()
    );
    s = restart(&h, &s);
    assert_eq!(s.clients[0].superseded().len(), 2);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    assert!(s.clients[0].revocations().stored(stock) > 0);
    // And one more, on the other leaf, after that restart.
    advance_with(&h, &mut s, 3, None);
    restart(&h, &s);
}

#[test]
fn a_state_in_the_middle_of_an_advance_round_trips_and_completes_after_the_restart() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    advance_with(&h, &mut s, 0, None);
    // Proposed and accepted, nothing signed.
    let (lsp, ceremonies) = start_advance(&h, &mut s, 0, Some(terms(&h, 1, 20_000)));
    let mut s = restart(&h, &s);
    assert!(!s.lsp.is_settled());
    // Stage 1 done, stage 2's rounds done: `below` held by everyone.
    let stage2 = stage_one_then_entry(&h, &mut s, lsp, ceremonies);
    let mut s = restart(&h, &s);
    assert!(s.lsp.pending_entry().is_some());
    finish_stage2(&mut s, stage2);
    let s = restart(&h, &s);
    assert!(s.clients.iter().all(|c| c.is_settled()));
    assert_eq!(s.lsp.version().sales.len(), 1);
}

#[test]
fn an_abandoned_advance_survives_a_restart_and_its_index_stays_used() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (lsp, ceremonies) = start_advance(&h, &mut s, 0, Some(terms(&h, 0, 20_000)));
    let stage2 = stage_one_then_entry(&h, &mut s, lsp, ceremonies);
    for (c, _) in &stage2.entries {
        s.clients[c.0 as usize].abandon();
    }
    s.lsp.abandon();
    let mut s = restart(&h, &s);
    assert_eq!(s.clients[0].abandoned().len(), 1);
    assert!(!s.clients[0].is_settled());
    assert_eq!(s.clients[0].abandoned_exit_paths(ClientId(0)).len(), 1);

    // A second, different state at the used index is refused exactly as before the restart.
    let mut forgetful = states(&h).lsp;
    let (b, _) = forgetful.propose(leaf, &h.lsp_key).unwrap();
    assert_eq!((b.from, b.to), (StateIndex(0), StateIndex(1)));
    for c in [0u32, 1] {
        let before = s.clients[c as usize].snapshot();
        let err = s.clients[c as usize]
            .accept(&b, ClientId(c), h.client_keys[c as usize], TIP)
            .unwrap_err();
        assert!(
            matches!(
                err,
                AdvanceError::IndexUsed {
                    used: StateIndex(1),
                    got: StateIndex(1),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(s.clients[c as usize].snapshot(), before, "nothing changed");
    }
    // The restored LSP moves past the used index: 0 -> 2, and the abandoned update is gone.
    advance_with(&h, &mut s, 0, None);
    assert_eq!(s.clients[0].odometer().state(leaf), Some(StateIndex(2)));
    let s = restart(&h, &s);
    assert!(s.clients[0].is_settled());
    assert!(s.clients[0].abandoned().is_empty());
}

#[test]
fn pseudo_spilman_sales_round_trip() {
    let h = build(4, ps_config());
    let mut s = states(&h);
    let (lsp, ceremonies) = start_ps_sale(&h, &mut s, terms(&h, 0, 20_000));
    // Mid-sale: the spent PS-factory output is recorded on every side.
    let mut s = restart(&h, &s);
    assert_eq!(s.lsp.spent_outpoints().len(), 1);
    sign_update(&h, &mut s, lsp, ceremonies);
    let mut s = restart(&h, &s);
    assert!(s.clients[0].outpoint(Slot::Sold(0)).is_some());
    assert_eq!(
        s.clients[0].exit_path(ClientId(0)).last().unwrap().kind,
        TxKind::Sale(0)
    );
    // A second sale from the restored parties, then an advance that cuts the chain through.
    let (lsp, ceremonies) = start_ps_sale(&h, &mut s, terms(&h, 1, 15_000));
    sign_update(&h, &mut s, lsp, ceremonies);
    let mut s = restart(&h, &s);
    advance_with(&h, &mut s, 0, None);
    let s = restart(&h, &s);
    assert!(s.lsp.version().sales.iter().all(|x| x.merged));
}

/// The LSP's secrets of every stock version up to one past the current ones.
fn stock_secrets(h: &Harness, st: &FactoryState) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for (s, sv) in st.version().stocks.iter().enumerate() {
        for v in 0..=sv.version + 1 {
            out.push(h.secrets.secret(s as u32, v));
        }
    }
    out
}

#[test]
fn the_lsp_snapshot_holds_no_stock_secret() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let bytes = s.lsp.snapshot();
    for secret in stock_secrets(&h, &s.lsp) {
        assert!(!bytes.windows(32).any(|w| w == secret));
    }
    advance_with(&h, &mut s, 0, None);
    advance_with(&h, &mut s, 0, None);
    let (_lsp, _ceremonies) = start_advance(&h, &mut s, 3, None);
    let bytes = s.lsp.snapshot();
    let secrets = stock_secrets(&h, &s.lsp);
    assert!(secrets.len() > 4);
    for secret in secrets {
        assert!(!bytes.windows(32).any(|w| w == secret));
    }
    // The client holds the revealed secret of its stock's superseded version (it arms the
    // punishment), never that of the current one.
    let st = &s.clients[0];
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    let current = st.version().stocks[stock as usize].version;
    assert_eq!(
        st.revocations().secret(stock, current - 1),
        Some(h.secrets.secret(stock, current - 1))
    );
    let bytes = st.snapshot();
    for v in [current, current + 1] {
        assert!(!bytes.windows(32).any(|w| w == h.secrets.secret(stock, v)));
    }
}

/// Snapshots of a client and the LSP after two advances (superseded versions, revocations,
/// sales) and an abandoned one, for the decoding tests.
fn fixture() -> &'static (Arc<Factory>, Vec<Vec<u8>>) {
    static FIXTURE: OnceLock<(Arc<Factory>, Vec<Vec<u8>>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let h = build(4, FactoryConfig::regtest());
        let mut s = states(&h);
        advance_with(&h, &mut s, 0, Some(terms(&h, 0, 20_000)));
        advance_with(&h, &mut s, 2, None);
        let (lsp, ceremonies) = start_advance(&h, &mut s, 0, None);
        let stage2 = stage_one_then_entry(&h, &mut s, lsp, ceremonies);
        let mid = vec![s.lsp.snapshot(), s.clients[0].snapshot()];
        for (c, _) in &stage2.entries {
            s.clients[c.0 as usize].abandon();
        }
        s.lsp.abandon();
        let mut all = vec![s.lsp.snapshot(), s.clients[0].snapshot()];
        all.extend(mid);
        (h.factory.clone(), all)
    })
}

/// Whatever a restore accepts, the state answers without a panic.
fn use_state(st: &FactoryState, factory: &Factory) {
    let _ = st.snapshot();
    let _ = st.signed();
    let _ = st.armed_punishments();
    let _ = st.is_settled();
    for c in 0..factory.params().clients.len() as u32 {
        let _ = st.exit_path(ClientId(c));
        let _ = st.abandoned_exit_paths(ClientId(c));
        let _ = st.outpoint(Slot::Channel(ClientId(c)));
        let _ = st.abandoned_outpoints(Slot::Channel(ClientId(c)));
    }
}

#[test]
fn every_truncation_is_refused() {
    let (factory, snapshots) = fixture();
    for bytes in snapshots {
        assert!(FactoryState::restore(factory.clone(), bytes).is_ok());
        for cut in 0..bytes.len() {
            assert!(
                FactoryState::restore(factory.clone(), &bytes[..cut]).is_err(),
                "a snapshot cut at {cut} of {} was accepted",
                bytes.len()
            );
        }
    }
}

#[test]
fn unknown_versions_other_factories_and_trailing_fields_are_refused() {
    let (factory, snapshots) = fixture();
    let bytes = &snapshots[1];
    for v in [0u8, 2, 0xff] {
        let mut b = bytes.clone();
        b[0] = v;
        assert_eq!(
            FactoryState::restore(factory.clone(), &b).unwrap_err(),
            StateSnapshotError::UnknownVersion(v)
        );
    }
    // Another factory: other parameters (same id), or another id.
    let config = factory.params().config.clone();
    for edit in [
        (|p: &mut FactoryParams| p.creation_height += 1) as fn(&mut FactoryParams),
        |p| p.clients[3].capacity += Amount::from_sat(1),
        |p| p.id = FactoryId([0xaa; 32]),
    ] {
        let other = Arc::new(Factory::new(params(4, config.clone(), edit)).unwrap());
        assert_eq!(
            FactoryState::restore(other, bytes).unwrap_err(),
            StateSnapshotError::WrongFactory
        );
    }
    // A factory with other clients (another number of them).
    let other = Arc::new(Factory::new(params(5, config, |p| p.id = FactoryId([4; 32]))).unwrap());
    assert!(FactoryState::restore(other, bytes).is_err());
    // An odd extension is skipped, an even one refused, garbage refused.
    let mut odd = bytes.clone();
    odd.extend_from_slice(&[1, 2, 0xaa, 0xbb]);
    let back = FactoryState::restore(factory.clone(), &odd).unwrap();
    assert_eq!(&back.snapshot(), bytes);
    let mut even = bytes.clone();
    even.extend_from_slice(&[2, 0]);
    assert!(matches!(
        FactoryState::restore(factory.clone(), &even),
        Err(StateSnapshotError::Decode(_))
    ));
    for garbage in [&[][..], &[1], &[1; 100], &[0xff; 1000]] {
        assert!(FactoryState::restore(factory.clone(), garbage).is_err());
    }
    // A huge list count right after the header is refused before anything is allocated.
    let mut huge = bytes[..1 + 32 + 32 + 36 + 1].to_vec();
    huge.extend_from_slice(&[0xfe, 0x00, 0x0f, 0xff, 0xff]);
    assert!(FactoryState::restore(factory.clone(), &huge).is_err());
}

#[test]
fn a_funding_outpoint_or_party_that_is_not_the_factorys_is_refused() {
    let (factory, snapshots) = fixture();
    let bytes = &snapshots[1];
    // The funding outpoint follows the version byte, the id and the parameters' digest.
    let at = 1 + 32 + 32;
    let mut other = bytes.clone();
    other[at] ^= 1;
    assert!(matches!(
        FactoryState::restore(factory.clone(), &other),
        Err(StateSnapshotError::Inconsistent(_))
    ));
    // `me`: client 0 (tag 1, then a u32) becomes client 4 of a 4-client factory, or a bad tag.
    let me = at + 36;
    assert_eq!(&bytes[me..me + 5], &[1, 0, 0, 0, 0]);
    let mut stranger = bytes.clone();
    stranger[me + 4] = 4;
    assert!(matches!(
        FactoryState::restore(factory.clone(), &stranger),
        Err(StateSnapshotError::Inconsistent(_))
    ));
    let mut tag = bytes.clone();
    tag[me] = 2;
    assert!(matches!(
        FactoryState::restore(factory.clone(), &tag),
        Err(StateSnapshotError::Decode(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn altered_snapshots_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let (factory, snapshots) = fixture();
        let mut bytes = snapshots[which].clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(st) = FactoryState::restore(factory.clone(), &bytes) {
            use_state(&st, factory);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let (factory, snapshots) = fixture();
        let _ = FactoryState::restore(factory.clone(), &bytes);
        // After a valid header (version, factory id, parameters' digest).
        let mut framed = snapshots[0][..1 + 32 + 32].to_vec();
        framed.extend_from_slice(&bytes);
        let _ = FactoryState::restore(factory.clone(), &framed);
    }
}

#[test]
fn leaf_channels_open_at_the_opening_balances_of_the_parameters() {
    // A successor factory: clients 0 and 2 roll balances in (2 with every satoshi of its
    // capacity), client 1 starts at zero.
    let h = build_with(3, FactoryConfig::regtest(), |p| {
        p.opening_msat = vec![12_345_678, 0, 51_000_000];
    });
    let st = states(&h);
    for (i, opening) in [12_345_678u64, 0, 51_000_000].into_iter().enumerate() {
        let c = ClientId(i as u32);
        let capacity_msat = h.factory.params().clients[i].capacity.to_sat() * 1000;
        let lsp = st.lsp.leaf_channel_setup(c, true).unwrap();
        let client = st.clients[i].leaf_channel_setup(c, false).unwrap();
        assert_eq!(lsp.funding.value.to_sat() * 1000, capacity_msat);
        assert_eq!(client.our_balance_msat, opening);
        assert_eq!(lsp.our_balance_msat, capacity_msat - opening);
        assert_eq!(lsp.funding_outpoint, client.funding_outpoint);
    }
    // A new factory's clients start at zero.
    let h = build(2, FactoryConfig::regtest());
    let st = states(&h);
    assert_eq!(
        st.clients[1]
            .leaf_channel_setup(ClientId(1), false)
            .unwrap()
            .our_balance_msat,
        0
    );
    // Opening balances above a capacity, or not one per client, are refused.
    let capacity_msat = 50_000_000;
    let over = params(2, FactoryConfig::regtest(), |p| {
        p.opening_msat = vec![capacity_msat + 1, 0];
    });
    let e = Factory::new(over).unwrap_err().to_string();
    assert!(e.contains("more than its capacity"), "{e}");
    let short = params(2, FactoryConfig::regtest(), |p| p.opening_msat = vec![1]);
    let e = Factory::new(short).unwrap_err().to_string();
    assert!(e.contains("1 opening balances for 2 clients"), "{e}");
}
