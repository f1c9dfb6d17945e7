//! A factory built, funded and signed in process on the embedded chain.
#![allow(dead_code)]

use std::sync::Arc;

use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, FeeRate, OutPoint, Transaction};
use superscalar_chain::testkit::TestChain;
use superscalar_chain::{Chain, RejectReason};
use superscalar_client::{ExitProgress, UnilateralExit};
use superscalar_core::advance::{FactoryState, SaleProposal, SaleTerms};
use superscalar_core::ceremony::{run_in_process, ClientCeremony, LspCeremony, SignedTx};
use superscalar_core::channel::state::{Channel, ChannelLimits};
use superscalar_core::factory::Slot;
use superscalar_core::revocation::StockSecrets;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, Shape,
};
use superscalar_core::{Signer, TxKind, Version};
use superscalar_wallet::{burn_script, Faucet, OnchainWallet};

pub struct Harness {
    /// The chain `SUPERSCALAR_TEST_CHAIN` names (the embedded chain by default).
    pub chain: TestChain,
    pub faucet: Faucet,
    pub lsp_wallet: OnchainWallet,
    pub lsp_key: Keypair,
    pub client_keys: Vec<Keypair>,
    pub factory: Arc<Factory>,
    pub funding_tx: Transaction,
    pub funding: OutPoint,
    pub lsp: LspCeremony,
    pub clients: Vec<ClientCeremony>,
    pub stock_secrets: StockSecrets,
    /// The factory's initial version (what `lsp` and `clients` signed).
    pub version0: Version,
}

pub fn keypair(seed: u32) -> Keypair {
    let secp = Secp256k1::new();
    let mut sk = [0u8; 32];
    sk[..4].copy_from_slice(&seed.to_be_bytes());
    sk[31] = 1;
    Keypair::from_seckey_slice(&secp, &sk).unwrap()
}

/// Capacity of client i's channel: uneven on purpose.
pub fn capacity(i: u32) -> Amount {
    Amount::from_sat(50_000 + 1_000 * u64::from(i % 7))
}

pub fn build(n: u32, config: FactoryConfig) -> Harness {
    build_with(n, config, |_| {})
}

/// The transaction `txid`, read from the block that confirmed it.
pub fn confirmed_tx(h: &Harness, txid: bitcoin::Txid) -> Transaction {
    let superscalar_chain::TxStatus::Confirmed { height, .. } = h.chain.tx_status(&txid).unwrap()
    else {
        panic!("{txid} is not confirmed");
    };
    h.chain
        .block_at(height)
        .unwrap()
        .unwrap()
        .txdata
        .into_iter()
        .find(|t| t.compute_txid() == txid)
        .unwrap()
}

/// `build`, with the parameters changed by `edit` before the factory is made.
pub fn build_with(n: u32, config: FactoryConfig, edit: impl FnOnce(&mut FactoryParams)) -> Harness {
    let chain = TestChain::from_env();
    let mut faucet = Faucet::new(&chain, 2).unwrap();
    let lsp_key = keypair(0xffff_0000);
    let client_keys: Vec<Keypair> = (0..n).map(|i| keypair(i + 1)).collect();
    let params = FactoryParams {
        id: FactoryId([n as u8; 32]),
        config,
        lsp_key: PublicKey::new(lsp_key.public_key()),
        clients: client_keys
            .iter()
            .enumerate()
            .map(|(i, k)| ClientSpec::new(PublicKey::new(k.public_key()), capacity(i as u32)))
            .collect(),
        creation_height: chain.tip().unwrap().height,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&StockSecrets::new(STOCK_SEED));
    let mut params = params;
    edit(&mut params);
    let factory = Arc::new(Factory::new(params).unwrap());
    let funding_out = factory.funding_output().unwrap();
    let mut lsp_wallet = OnchainWallet::from_seed([0x15; 32]).unwrap();
    let addr = lsp_wallet.new_address();
    faucet
        .fund(
            &chain,
            &addr,
            funding_out.value + Amount::from_sat(1_000_000),
        )
        .unwrap();
    lsp_wallet.sync(&chain).unwrap();
    // Built, not broadcast: the funding transaction goes out only after everything is signed.
    let funding_tx = lsp_wallet
        .build_payment(
            &funding_out.script_pubkey,
            funding_out.value,
            FeeRate::from_sat_per_vb_u32(2),
        )
        .unwrap();
    let vout = funding_tx
        .output
        .iter()
        .position(|o| *o == funding_out)
        .unwrap() as u32;
    let funding = OutPoint::new(funding_tx.compute_txid(), vout);
    let tip = chain.tip().unwrap().height;
    let (lsp, clients) = run_in_process(&factory, lsp_key, &client_keys, funding, tip).unwrap();
    assert!(clients.iter().all(|c| c.is_live()));
    let funding_tx = lsp.release_funding(funding_tx).unwrap();
    chain.submit_transaction(&funding_tx).unwrap();
    chain.mine_blocks(1, &burn_script()).unwrap();
    Harness {
        chain,
        faucet,
        lsp_wallet,
        lsp_key,
        client_keys,
        funding_tx,
        funding,
        lsp,
        clients,
        stock_secrets: StockSecrets::new(STOCK_SEED),
        version0: factory.initial_version(),
        factory,
    }
}

const STOCK_SEED: [u8; 32] = [0x5e; 32];

/// Every party's view of the factory's state after the first ceremony.
pub struct States {
    pub lsp: FactoryState,
    pub clients: Vec<FactoryState>,
}

/// The height of the harness chain's best block (every party's chain view here).
pub fn tip(h: &Harness) -> u32 {
    h.chain.tip().unwrap().height
}

/// Every party's state, opened once the funding output is confirmed in the chain as expected.
pub fn states(h: &Harness) -> States {
    let mut s = unopened_states(h);
    assert!(superscalar_client::funding::check_funding(&h.chain, &mut s.lsp).unwrap());
    for c in s.clients.iter_mut() {
        assert!(superscalar_client::funding::check_funding(&h.chain, c).unwrap());
    }
    s
}

/// Every party's state right after the first ceremony, before anyone checked the funding.
pub fn unopened_states(h: &Harness) -> States {
    States {
        lsp: FactoryState::new(
            h.factory.clone(),
            h.funding,
            Signer::Lsp,
            h.lsp.all_signed().cloned(),
        )
        .with_secrets(h.stock_secrets.clone()),
        clients: h
            .clients
            .iter()
            .map(|c| {
                FactoryState::new(
                    h.factory.clone(),
                    h.funding,
                    Signer::Client(c.client()),
                    c.signed().iter().cloned(),
                )
            })
            .collect(),
    }
}

/// Both rounds of one ceremony with every participant online, up to the LSP's aggregation.
pub fn rounds(lsp: &mut LspCeremony, ceremonies: &mut [(ClientId, ClientCeremony)]) {
    for (c, cc) in ceremonies.iter_mut() {
        lsp.receive_nonces(*c, &cc.round1().unwrap()).unwrap();
    }
    for (c, cc) in ceremonies.iter_mut() {
        let agg = lsp.agg_nonces_for(*c).unwrap();
        lsp.receive_partials(*c, &cc.round2(&agg).unwrap()).unwrap();
    }
    lsp.finalize().unwrap();
}

/// Stage 1 of an advance run to the end (every client holds its share fully signed), then
/// stage 2 (the ticking node's new state) up to the LSP's aggregation: the LSP holds the new
/// state fully signed and could withhold it. Returns the LSP's stage-2 ceremony, the clients'
/// stage-2 ceremonies, and everything signed in stage 1 (LSP's, then each client's).
#[allow(clippy::type_complexity)]
pub fn stage_one_then_entry(
    h: &Harness,
    s: &mut States,
    mut lsp: LspCeremony,
    mut ceremonies: Vec<(ClientId, ClientCeremony)>,
) -> (
    LspCeremony,
    Vec<(ClientId, ClientCeremony)>,
    Vec<SignedTx>,
    Vec<(ClientId, Vec<SignedTx>)>,
) {
    rounds(&mut lsp, &mut ceremonies);
    let mut below = Vec::new();
    for (c, cc) in ceremonies.iter_mut() {
        cc.finish(&lsp.final_sigs_for(*c).unwrap()).unwrap();
        below.push((*c, cc.signed().to_vec()));
    }
    let lsp_below: Vec<SignedTx> = lsp.all_signed().cloned().collect();
    let mut lsp2 = s.lsp.propose_entry(&lsp_below, &h.lsp_key).unwrap();
    let mut entries: Vec<(ClientId, ClientCeremony)> = lsp2
        .participants()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|c| {
            let i = c.0 as usize;
            let mine = &below.iter().find(|(b, _)| *b == c).unwrap().1;
            (
                c,
                s.clients[i]
                    .accept_entry(mine, c, h.client_keys[i])
                    .unwrap(),
            )
        })
        .collect();
    rounds(&mut lsp2, &mut entries);
    (lsp2, entries, lsp_below, below)
}

/// An update's ceremony with every participant online (an advance in its two stages); each
/// client completes and receives the superseded stock versions' secrets.
pub fn sign_update(
    h: &Harness,
    s: &mut States,
    mut lsp: LspCeremony,
    mut ceremonies: Vec<(ClientId, ClientCeremony)>,
) {
    let (lsp_signed, signed): (Vec<SignedTx>, Vec<(ClientId, Vec<SignedTx>)>) =
        if s.lsp.pending_entry().is_some() {
            let (lsp2, mut entries, mut lsp_signed, mut signed) =
                stage_one_then_entry(h, s, lsp, ceremonies);
            for (c, cc) in entries.iter_mut() {
                cc.finish(&lsp2.final_sigs_for(*c).unwrap()).unwrap();
                let all = &mut signed.iter_mut().find(|(b, _)| b == c).unwrap().1;
                all.extend(cc.signed().iter().cloned());
            }
            lsp_signed.extend(lsp2.all_signed().cloned());
            (lsp_signed, signed)
        } else {
            rounds(&mut lsp, &mut ceremonies);
            let signed = ceremonies
                .iter_mut()
                .map(|(c, cc)| {
                    cc.finish(&lsp.final_sigs_for(*c).unwrap()).unwrap();
                    (*c, cc.signed().to_vec())
                })
                .collect();
            (lsp.all_signed().cloned().collect(), signed)
        };
    for (c, sig) in &signed {
        s.clients[c.0 as usize]
            .complete(sig.iter().cloned())
            .unwrap();
    }
    s.lsp.complete(lsp_signed).unwrap();
    let revealed = s.lsp.reveal().unwrap();
    for (c, _) in &signed {
        s.clients[c.0 as usize]
            .receive_revocations(&revealed)
            .unwrap();
    }
}

/// Every participant's share of an update's ceremony, each started by `start`.
fn ceremonies_of(
    h: &Harness,
    s: &mut States,
    lsp: &LspCeremony,
    start: impl Fn(&mut FactoryState, ClientId, Keypair) -> ClientCeremony,
) -> Vec<(ClientId, ClientCeremony)> {
    let participants: Vec<ClientId> = lsp.participants().collect();
    participants
        .iter()
        .map(|c| {
            let i = c.0 as usize;
            (*c, start(&mut s.clients[i], *c, h.client_keys[i]))
        })
        .collect()
}

/// Propose an advance of `client`'s leaf (with an optional merged sale); every participant
/// accepts. Nothing is signed yet.
pub fn start_advance(
    h: &Harness,
    s: &mut States,
    client: u32,
    sale: Option<SaleTerms>,
) -> (LspCeremony, Vec<(ClientId, ClientCeremony)>) {
    let leaf = h.factory.tree().leaf_of(ClientId(client)).unwrap();
    let (proposal, lsp) = s.lsp.propose_with(leaf, sale, &h.lsp_key).unwrap();
    let ceremonies = ceremonies_of(h, s, &lsp, |st, c, k| {
        st.accept(&proposal, c, k, tip(h)).unwrap()
    });
    (lsp, ceremonies)
}

/// One advance of the path of `client`'s leaf, every participant online, with an optional sale
/// merged into the new leaf state.
pub fn advance_with(h: &Harness, s: &mut States, client: u32, sale: Option<SaleTerms>) {
    let (lsp, ceremonies) = start_advance(h, s, client, sale);
    sign_update(h, s, lsp, ceremonies);
}

/// One advance of the path of `client`'s leaf, every participant online.
pub fn advance(h: &Harness, s: &mut States, client: u32) {
    advance_with(h, s, client, None);
}

/// A pseudo-Spilman sale signed by the LSP and every client of the stock.
pub fn sell_ps(h: &Harness, s: &mut States, terms: SaleTerms) -> SaleProposal {
    let (proposal, lsp) = s.lsp.propose_sale(terms, &h.lsp_key).unwrap();
    let ceremonies = ceremonies_of(h, s, &lsp, |st, c, k| {
        st.accept_sale(&proposal, c, k, tip(h)).unwrap()
    });
    sign_update(h, s, lsp, ceremonies);
    proposal
}

/// A channel between the LSP and `client` on output `slot` of the version `st` holds: (LSP
/// side, client side); the client starts with `client_msat`.
pub fn open_channel(
    h: &Harness,
    st: &FactoryState,
    slot: Slot,
    client: u32,
    client_msat: u64,
    seed: u8,
) -> (Channel, Channel) {
    let v = st.version();
    let key = h.factory.signing_key_at(slot, v).unwrap();
    let value = h.factory.amounts(v).unwrap().value(&h.factory, slot);
    let outpoint = st.outpoint(slot).unwrap();
    let setup = |we_opened, our| st.channel_setup(slot, we_opened, our).unwrap();
    let ls = channel_secrets(seed, h.lsp_key);
    let cs = channel_secrets(seed.wrapping_add(50), h.client_keys[client as usize]);
    let limits = ChannelLimits::default();
    let la = Channel::announcement(&ls, &key, outpoint);
    let ca = Channel::announcement(&cs, &key, outpoint);
    let mut lsp = Channel::new(
        setup(true, value.to_sat() * 1000 - client_msat),
        ls,
        limits,
        ca,
        limits,
    )
    .unwrap();
    let mut cl = Channel::new(setup(false, client_msat), cs, limits, la, limits).unwrap();
    round(&mut lsp, &mut cl);
    (lsp, cl)
}

/// `client`'s original path (kickoffs and states of the first ceremony): superseded after an
/// advance, what a cheating party publishes.
pub fn original_path(h: &Harness, client: u32) -> Vec<superscalar_core::ceremony::SignedTx> {
    h.clients[client as usize]
        .signed()
        .iter()
        .filter(|x| matches!(x.kind, TxKind::Kickoff(_) | TxKind::State(_)))
        .cloned()
        .collect()
}

/// Confirm a zero-fee commitment `tx` with a CPFP child through its P2A anchor, paid by the LSP's
/// wallet.
pub fn confirm_with_lsp_anchor(h: &mut Harness, tx: &Transaction) {
    let anchor = tx
        .output
        .iter()
        .position(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey))
        .unwrap() as u32;
    h.lsp_wallet.sync(&h.chain).unwrap();
    let child = h
        .lsp_wallet
        .build_anchor_child(tx, Amount::ZERO, anchor, FeeRate::from_sat_per_vb_u32(2))
        .unwrap();
    h.lsp_wallet
        .broadcast_package(&h.chain, tx, &child)
        .unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        h.chain
            .tx_status(&tx.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
}

/// `client` exits alone through the newest path `st` holds, then the chain is mined to the block
/// just before T (the next block is the first in which timeout transactions confirm).
pub fn exit_then_wait_for_t(h: &Harness, st: &FactoryState, client: ClientId) {
    let mut exit = UnilateralExit::new(&st.exit_path(client)).unwrap();
    finish(h, &mut exit);
    let t = h.factory.timeout_height();
    let now = h.chain.tip().unwrap().height;
    if now + 1 < t {
        h.chain.mine_blocks(t - 1 - now, &burn_script()).unwrap();
    }
}

/// Drive `exit` to completion, mining as needed.
pub fn finish(h: &Harness, exit: &mut UnilateralExit) {
    for _ in 0..200 {
        match exit.step(&h.chain, None).unwrap() {
            ExitProgress::Done => return,
            _ => {
                h.chain.mine_blocks(1, &burn_script()).unwrap();
            }
        }
    }
    panic!("exit did not finish");
}

/// Exit `client` alone (no wallet), checking that every delayed transaction is refused before its
/// lock. Returns the number of blocks the exit took.
pub fn exit_alone(h: &Harness, client: ClientId) -> u32 {
    let c = &h.clients[client.0 as usize];
    let mut exit = UnilateralExit::new(c.signed()).unwrap();
    let start = h.chain.tip().unwrap().height;
    let mut premature_refusals = 0;
    loop {
        match exit.step(&h.chain, None).unwrap() {
            ExitProgress::Broadcast { .. } => {
                h.chain.mine_blocks(1, &burn_script()).unwrap();
            }
            ExitProgress::Waiting { kind, height } => {
                let tip = h.chain.tip().unwrap().height;
                if height > tip + 1 {
                    // Too early: the mempool refuses it for its relative lock.
                    let tx = &exit.path().iter().find(|s| s.kind == kind).unwrap().tx;
                    let err = h.chain.submit_transaction(tx).unwrap_err();
                    assert!(
                        matches!(
                            err.reject_reason(),
                            Some(RejectReason::SequenceLocked { .. })
                        ),
                        "{err}"
                    );
                    premature_refusals += 1;
                    h.chain
                        .mine_blocks(height - 1 - tip, &burn_script())
                        .unwrap();
                } else {
                    h.chain.mine_blocks(1, &burn_script()).unwrap();
                }
            }
            ExitProgress::Done => break,
        }
        assert!(
            h.chain.tip().unwrap().height < start + 10_000,
            "exit does not finish"
        );
    }
    // Every state transaction of the first (oldest) state waits out a delay: each was tried early.
    assert!(premature_refusals > 0, "no premature broadcast was tried");
    h.chain.tip().unwrap().height - start
}

pub fn default_shapes() -> Vec<(&'static str, Shape)> {
    use superscalar_core::LeafKind;
    let base = FactoryConfig::regtest().shape;
    vec![
        (
            "binary-dw",
            Shape {
                arity: vec![2],
                leaf: LeafKind::Dw,
                static_levels: 0,
                ..base.clone()
            },
        ),
        (
            "mixed-8-4-2-dw",
            Shape {
                arity: vec![8, 4, 2],
                leaf: LeafKind::Dw,
                static_levels: 0,
                ..base.clone()
            },
        ),
        (
            "static1-ps2",
            Shape {
                arity: vec![4, 2],
                leaf: LeafKind::PseudoSpilman { arity: 2 },
                static_levels: 1,
                ..base.clone()
            },
        ),
        (
            "ps3",
            Shape {
                arity: vec![2],
                leaf: LeafKind::PseudoSpilman { arity: 3 },
                static_levels: 0,
                ..base
            },
        ),
    ]
}

/// Channel secrets from a seed, with the given funding key (a factory key).
pub fn channel_secrets(
    seed: u8,
    funding: Keypair,
) -> superscalar_core::channel::state::ChannelSecrets {
    let k = |i: u8| bitcoin::secp256k1::SecretKey::from_slice(&[seed.wrapping_add(i); 32]).unwrap();
    superscalar_core::channel::state::ChannelSecrets {
        payment: k(1),
        delayed_payment: k(2),
        htlc: k(3),
        revocation: k(4),
        seed: [seed; 32],
        funding,
    }
}

/// One lock-step channel round started by `a`.
pub fn round(
    a: &mut superscalar_core::channel::state::Channel,
    b: &mut superscalar_core::channel::state::Channel,
) {
    superscalar_core::channel::state::run_round(a, b).unwrap();
}

/// Check one signed transaction of the factory against our mempool's standardness rules: Bitcoin
/// Core's `IsStandardTx` (weight at most 400,000 WU, standard outputs, at most one dust output)
/// and input checks, TRUC's 10,000 vB for a v3 transaction, and a fee of at least 1 sat/vB unless
/// it is a zero-fee transaction with a P2A anchor for its child.
pub fn assert_standard(s: &SignedTx) {
    use superscalar_chain::policy::{
        check_inputs_standard, check_standard, is_p2a, PolicyConfig, TRUC_MAX_VSIZE,
    };
    let tx = &s.tx;
    check_standard(tx, &PolicyConfig::default())
        .unwrap_or_else(|e| panic!("{:?} is not standard: {e:?}", s.kind));
    check_inputs_standard(tx, std::slice::from_ref(&s.spent))
        .unwrap_or_else(|e| panic!("{:?} has non-standard inputs: {e:?}", s.kind));
    let vsize = tx.vsize() as u64;
    if tx.version.0 == 3 {
        assert!(
            vsize <= TRUC_MAX_VSIZE,
            "{:?}: a v3 transaction of {vsize} vB",
            s.kind
        );
    }
    let out: Amount = tx.output.iter().map(|o| o.value).sum();
    let fee = s
        .spent
        .value
        .checked_sub(out)
        .expect("pays more than it spends");
    if fee == Amount::ZERO {
        assert!(
            tx.output.iter().any(|o| is_p2a(&o.script_pubkey)),
            "{:?}: zero fee without an anchor",
            s.kind
        );
    } else {
        assert!(
            fee.to_sat() >= vsize,
            "{:?}: fee {fee} below 1 sat/vB for {vsize} vB",
            s.kind
        );
    }
}

/// Resident and peak resident memory of this process, in MB (Linux; zero elsewhere).
pub fn rss_mb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Give freed heap memory back to the system, so that RSS shows what is still live.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free memory; it has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}
