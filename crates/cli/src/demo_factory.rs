//! The factory part of the demo: 8 clients with no on-chain coins join one factory funded by the
//! LSP, everything is signed (two round trips), one client leaves alone, and at the timeout the
//! pre-signed transactions pay everyone else.

use std::sync::Arc;

use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf};
use superscalar_chain::{Chain, EmbeddedChain};
use superscalar_client::funding::check_funding;
use superscalar_client::timeout::{claim_timeouts, ClientView};
use superscalar_client::watch::{WatchEvent, Watcher};
use superscalar_client::{ExitProgress, UnilateralExit};
use superscalar_core::advance::{FactoryState, SaleTerms};
use superscalar_core::ceremony::{run_in_process, ClientCeremony, LspCeremony, SignedTx};
use superscalar_core::channel::deadlines::{min_final_cltv_expiry_delta, DEFAULT_MARGIN_BLOCKS};
use superscalar_core::factory::Slot;
use superscalar_core::revocation::StockSecrets;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, Signer, TxKind,
};
use superscalar_wallet::{Faucet, OnchainWallet};

use crate::demo::Row;

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

const CLIENTS: u32 = 8;
const LEAVER: u32 = 5;
/// Inbound liquidity the LSP sells to client 5.
const SOLD_SAT: u64 = 100_000;

pub fn run(
    chain: &EmbeddedChain,
    faucet: &mut Faucet,
    lsp: &mut OnchainWallet,
) -> DemoResult<Vec<Row>> {
    let mut rows = Vec::new();
    let secp = Secp256k1::new();
    let mut seed = [0u8; 32];
    bitcoin::secp256k1::rand::RngCore::fill_bytes(
        &mut bitcoin::secp256k1::rand::thread_rng(),
        &mut seed,
    );
    let key = |i: u8| {
        let mut s = seed;
        s[0] ^= i;
        Keypair::from_seckey_slice(&secp, &s)
    };
    let lsp_key = key(0xff)?;
    let client_keys: Vec<Keypair> = (0..CLIENTS as u8).map(key).collect::<Result<_, _>>()?;
    let mut stock_seed = seed;
    stock_seed[31] ^= 0x5e;
    let stock_secrets = StockSecrets::new(stock_seed);
    let params = FactoryParams {
        id: FactoryId(seed),
        // Regtest delays, with an active period long enough for leaf-channel HTLCs: an HTLC a
        // client receives needs EWT_max + a margin blocks before it expires, and must expire
        // that long before T.
        config: FactoryConfig {
            active_blocks: 200,
            ..FactoryConfig::regtest()
        },
        lsp_key: PublicKey::new(lsp_key.public_key()),
        clients: client_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                ClientSpec::new(
                    PublicKey::new(k.public_key()),
                    Amount::from_sat(200_000 + 10_000 * i as u64),
                )
            })
            .collect(),
        creation_height: chain.tip()?.height,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&stock_secrets);
    let factory = Arc::new(Factory::new(params)?);
    println!();
    println!(
        "factory: {CLIENTS} clients (none holds any coin), shape {:?}, EWT_max {} blocks, timeout T = height {}",
        factory.tree().levels(),
        factory.ewt_max(),
        factory.timeout_height()
    );

    // The LSP builds (but does not broadcast) the funding transaction; everyone signs the tree.
    let funding_out = faucet_lsp(chain, faucet, lsp, &factory)?;
    let funding_tx = lsp.build_payment(
        &funding_out.script_pubkey,
        funding_out.value,
        FeeRate::from_sat_per_vb_u32(2),
    )?;
    let vout = funding_tx
        .output
        .iter()
        .position(|o| *o == funding_out)
        .ok_or("funding output missing")? as u32;
    let funding = OutPoint::new(funding_tx.compute_txid(), vout);
    let tip = chain.tip()?.height;
    let (ceremony, clients) = run_in_process(&factory, lsp_key, &client_keys, funding, tip)?;
    println!(
        "  signed {} transactions in two round trips; every client verified its exit path and timeouts",
        ceremony.job_count()
    );
    let funding_tx = ceremony.release_funding(funding_tx)?;
    chain.submit_transaction(&funding_tx)?;
    faucet.mine(chain, 1)?;
    lsp.sync(chain)?;
    rows.push(Row {
        what: "factory funding",
        fee: lsp.fee_of(&funding_tx).unwrap_or(Amount::ZERO),
        tx: funding_tx,
    });

    // Clients 0 and 1 pay each other through the LSP over their leaf channels (funded by the
    // factory's channel outputs, MuSig2 of the factory keys).
    let (mut lsp_0, mut ch_0) = crate::demo_channels::open(
        &factory,
        funding,
        &ceremony,
        lsp_key,
        &client_keys,
        0,
        150_000_000,
        chain.tip()?.height,
    )?;
    let (mut lsp_1, mut ch_1) = crate::demo_channels::open(
        &factory,
        funding,
        &ceremony,
        lsp_key,
        &client_keys,
        1,
        20_000_000,
        chain.tip()?.height,
    )?;
    let before = (ch_0.balance_msat(), ch_1.balance_msat());
    let height = chain.tip()?.height;
    // The payee's HTLC gets exactly the delta a factory channel requires (EWT_max + margin).
    let final_expiry = height + min_final_cltv_expiry_delta(&factory, DEFAULT_MARGIN_BLOCKS);
    let started = std::time::Instant::now();
    for i in 0..20u64 {
        crate::demo_channels::pay(
            &mut ch_0,
            &mut lsp_0,
            &mut lsp_1,
            &mut ch_1,
            1_000_000 + i * 1_001,
            i,
            height,
            final_expiry,
        )?;
    }
    for i in 20..25u64 {
        crate::demo_channels::pay(
            &mut ch_1,
            &mut lsp_1,
            &mut lsp_0,
            &mut ch_0,
            333_333,
            i,
            height,
            final_expiry,
        )?;
    }
    println!(
        "  25 payments between clients 0 and 1 through the LSP in {:.2} s: client 0 {} -> {} msat, client 1 {} -> {} msat",
        started.elapsed().as_secs_f64(),
        before.0,
        ch_0.balance_msat(),
        before.1,
        ch_1.balance_msat()
    );

    // The state of client 5's leaf advances twice (only clients 4 and 5 and the LSP sign): first
    // with a liquidity sale to client 5 (a new channel in the new leaf state), then plainly.
    let mut lsp_state = FactoryState::new(
        Arc::clone(&factory),
        funding,
        Signer::Lsp,
        ceremony.all_signed().cloned(),
    )
    .with_secrets(stock_secrets.clone());
    let mut states: Vec<FactoryState> = clients
        .iter()
        .map(|c| {
            FactoryState::new(
                Arc::clone(&factory),
                funding,
                Signer::Client(c.client()),
                c.signed().iter().cloned(),
            )
        })
        .collect();
    // Each party opens the factory only once its own chain view holds the funding output.
    check_funding(chain, &mut lsp_state)?;
    for st in states.iter_mut() {
        if !check_funding(chain, st)? {
            return Err("the funding output is not confirmed".into());
        }
    }
    let leaf = factory.tree().leaf_of(ClientId(LEAVER)).ok_or("leaf")?;
    let stock = factory.stock_of(ClientId(LEAVER)).ok_or("stock")?;
    let stock_value = |st: &FactoryState| -> DemoResult<Amount> {
        Ok(factory
            .amounts(st.version())?
            .value(&factory, Slot::Stock(stock)))
    };
    let stock_before = stock_value(&lsp_state)?;
    let sale = SaleTerms {
        buyer: ClientId(LEAVER),
        stock,
        amount: Amount::from_sat(SOLD_SAT),
    };
    for sale in [Some(sale), None] {
        let (proposal, lsp_c) = lsp_state.propose_with(leaf, sale, &lsp_key)?;
        let participants: Vec<ClientId> = lsp_c.participants().collect();
        let mut ccs = Vec::new();
        for c in &participants {
            let tip = chain.tip()?.height;
            let cc = states[c.0 as usize].accept(&proposal, *c, client_keys[c.0 as usize], tip)?;
            ccs.push((*c, cc));
        }
        // Stage 1: everything beneath the leaf's new state; every client holds its share fully
        // signed before anyone signs that state (stage 2), the only way into it.
        let (lsp_below, below) = run_ceremony(lsp_c, &mut ccs)?;
        let lsp_e = lsp_state.propose_entry(&lsp_below, &lsp_key)?;
        let mut entries = Vec::new();
        for (c, mine) in &below {
            let i = c.0 as usize;
            entries.push((*c, states[i].accept_entry(mine, *c, client_keys[i])?));
        }
        let (lsp_entry, entry) = run_ceremony(lsp_e, &mut entries)?;
        for ((c, mine), (_, theirs)) in below.iter().zip(&entry) {
            states[c.0 as usize].complete(mine.iter().chain(theirs).cloned())?;
        }
        lsp_state.complete(lsp_below.into_iter().chain(lsp_entry))?;
        // The superseded stock version's secret: the clients accept nothing new without it.
        let revealed = lsp_state.reveal()?;
        for c in &participants {
            states[c.0 as usize].receive_revocations(&revealed)?;
        }
        if sale.is_some() {
            let v = states[LEAVER as usize].version();
            println!(
                "  the LSP sold {} of inbound liquidity to client {LEAVER}: a new channel of {} in its leaf's next state (stock {} -> {}, the rest paid the fees of the new output and of the newer state)",
                Amount::from_sat(SOLD_SAT),
                factory.amounts(v)?.value(&factory, Slot::Sold(0)),
                stock_before,
                stock_value(&states[LEAVER as usize])?
            );
        }
    }
    let delay = |s: &FactoryState| {
        s.latest(TxKind::State(leaf))
            .map(|t| t.tx.input[0].sequence.0 & 0xffff)
            .unwrap_or(0)
    };
    println!(
        "  client {LEAVER}'s leaf advanced twice: its state now waits {} blocks instead of {}",
        delay(&states[LEAVER as usize]),
        ceremony
            .signed(TxKind::State(leaf))
            .map(|t| t.tx.input[0].sequence.0 & 0xffff)
            .unwrap_or(0)
    );

    // The LSP publishes client 5's path with the superseded leaf state; client 5's watcher
    // publishes the newest one, which wins because its delay is shorter.
    let old_leaf_state = ceremony
        .signed(TxKind::State(leaf))
        .ok_or("old state")?
        .tx
        .clone();
    let onchain = |st: &FactoryState, slot: Slot| -> DemoResult<Amount> {
        let op = st.outpoint(slot).ok_or("outpoint")?;
        Ok(chain.get_utxo(&op)?.ok_or("not on chain")?.txout.value)
    };
    let newest_path = states[LEAVER as usize].exit_path(ClientId(LEAVER));
    let newest_leaf_state = newest_path.last().ok_or("path")?.tx.compute_txid();
    let mut watcher = Watcher::new(
        vec![newest_path.clone()],
        vec![],
        ScriptBuf::new(),
        FeeRate::from_sat_per_vb_u32(2),
        chain.tip()?.height + 1,
    );
    let mut attacker = UnilateralExit::new(&lsp_old_path(&ceremony, &factory, ClientId(LEAVER)))?;
    let start = chain.tip()?.height;
    let mut defeated = false;
    for _ in 0..200 {
        if let Ok(ExitProgress::Broadcast { txid, .. }) = attacker.step(chain, None) {
            if let Some(s) = attacker.path().iter().find(|s| s.tx.compute_txid() == txid) {
                let fee = s.spent.value - s.tx.output.iter().map(|o| o.value).sum::<Amount>();
                rows.push(Row {
                    what: "old path (LSP)",
                    fee,
                    tx: s.tx.clone(),
                });
            }
        }
        for event in watcher.poll(chain)? {
            if let WatchEvent::NewestState { state, .. } = event {
                if let Some(s) = newest_path.iter().find(|s| s.tx.compute_txid() == state) {
                    let fee = s.spent.value - s.tx.output.iter().map(|o| o.value).sum::<Amount>();
                    rows.push(Row {
                        what: "watcher: newest state",
                        fee,
                        tx: s.tx.clone(),
                    });
                }
            }
        }
        faucet.mine(chain, 1)?;
        if chain
            .tx_status(&old_leaf_state.compute_txid())?
            .confirmations()
            > 0
        {
            return Err("the superseded state confirmed".into());
        }
        if chain.tx_status(&newest_leaf_state)?.confirmations() > 0 {
            break;
        }
    }
    if let Err(e) = chain.submit_transaction(&old_leaf_state) {
        defeated = true;
        println!("  the LSP's superseded leaf state is refused: {e}");
    }
    if !defeated {
        return Err("the superseded state was not refused".into());
    }
    println!(
        "  client {LEAVER}'s watcher confirmed the newest state first ({} blocks); its channels of {} and {} (bought) are on chain",
        chain.tip()?.height - start,
        onchain(&states[LEAVER as usize], Slot::Channel(ClientId(LEAVER)))?,
        onchain(&states[LEAVER as usize], Slot::Sold(0))?,
    );

    // Client 2 leaves alone, with no coins of its own: its path only.
    let mut exit = UnilateralExit::new(&states[2].exit_path(ClientId(2)))?;
    let start = chain.tip()?.height;
    loop {
        match exit.step(chain, None)? {
            ExitProgress::Broadcast { kind, txid, .. } => {
                let s = exit
                    .path()
                    .iter()
                    .find(|s| s.tx.compute_txid() == txid)
                    .ok_or("path")?;
                let fee = s.spent.value - s.tx.output.iter().map(|o| o.value).sum::<Amount>();
                let what = if matches!(kind, TxKind::Kickoff(_)) {
                    "exit: kickoff"
                } else {
                    "exit: state"
                };
                rows.push(Row {
                    what,
                    fee,
                    tx: s.tx.clone(),
                });
                faucet.mine(chain, 1)?;
            }
            ExitProgress::Waiting { .. } => faucet.mine(chain, 1)?,
            ExitProgress::Done => break,
        }
    }
    println!(
        "  client 2 exited alone in {} blocks: channel of {} and its fee coin confirmed",
        chain.tip()?.height - start,
        factory.params().clients[2].capacity
    );

    // At T the timeout transactions pay every other client; zero-fee ones (channel and stock
    // outputs already on chain) are paid for with the clients' fee coins.
    let t = factory.timeout_height();
    let tip = chain.tip()?.height;
    if tip + 1 < t {
        faucet.mine(chain, t - 1 - tip)?;
    }
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let latest: Vec<Vec<superscalar_core::ceremony::SignedTx>> =
        states.iter().map(|s| s.signed()).collect();
    let mut sent = Vec::new();
    let mut unpaid = Vec::new();
    for c in 0..CLIENTS {
        let i = c as usize;
        let claim = claim_timeouts(
            chain,
            &ClientView {
                factory: &factory,
                client: ClientId(c),
                signed: &latest[i],
                funding,
                key: &client_keys[i],
                version: states[i].version(),
            },
            rate,
            None,
        )?;
        sent.extend(claim.sent);
        if !claim.unpaid.is_empty() {
            unpaid.push(c);
        }
    }
    // Zero-fee timeouts whose fee coins are taken: the LSP's wallet pays for them, one confirmed
    // coin per child (a TRUC child cannot build on unconfirmed ones), mining between rounds.
    for _ in 0..unpaid.len() + 1 {
        if unpaid.is_empty() {
            break;
        }
        let mut still = Vec::new();
        for c in unpaid {
            let i = c as usize;
            let view = ClientView {
                factory: &factory,
                client: ClientId(c),
                signed: &latest[i],
                funding,
                key: &client_keys[i],
                version: states[i].version(),
            };
            let claim = claim_timeouts(chain, &view, rate, Some(&mut *lsp))?;
            sent.extend(claim.sent);
            if !claim.unpaid.is_empty() {
                still.push(c);
            }
        }
        unpaid = still;
        if !unpaid.is_empty() {
            faucet.mine(chain, 1)?;
            lsp.sync(chain)?;
        }
    }
    for txid in sent {
        if let Some(s) = lsp_state
            .signed()
            .into_iter()
            .find(|s| s.tx.compute_txid() == txid)
        {
            let fee = s.spent.value - s.tx.output.iter().map(|o| o.value).sum::<Amount>();
            rows.push(Row {
                what: "timeout payout",
                fee,
                tx: s.tx.clone(),
            });
        }
    }
    faucet.mine(chain, 1)?;
    let mut paid = vec![Amount::ZERO; CLIENTS as usize];
    for r in rows.iter().filter(|r| r.what == "timeout payout") {
        for o in &r.tx.output {
            for (i, spec) in factory.params().clients.iter().enumerate() {
                if o.script_pubkey == spec.payout {
                    paid[i] += o.value;
                }
            }
        }
    }
    println!("  at T = {t} the timeout transactions paid (capacity + share of the stock; the LSP gets nothing):");
    for (i, p) in paid.iter().enumerate() {
        if i as u32 != LEAVER && i != 2 {
            println!("    client {i}: {p}");
        }
    }
    Ok(rows)
}

fn faucet_lsp(
    chain: &EmbeddedChain,
    faucet: &mut Faucet,
    lsp: &mut OnchainWallet,
    factory: &Factory,
) -> DemoResult<bitcoin::TxOut> {
    let out = factory.funding_output()?;
    let addr = lsp.new_address();
    faucet.fund(chain, &addr, out.value + Amount::from_sat(100_000))?;
    lsp.sync(chain)?;
    Ok(out)
}

/// The LSP's copy of a client's path from the first ceremony (superseded after an advance).
fn lsp_old_path(ceremony: &LspCeremony, factory: &Factory, client: ClientId) -> Vec<SignedTx> {
    let mut path = Vec::new();
    for n in factory.tree().path_of(client) {
        for k in [TxKind::Kickoff(n), TxKind::State(n)] {
            if let Some(s) = ceremony.signed(k) {
                path.push(s.clone());
            }
        }
    }
    path
}

/// Both rounds of one ceremony with every participant in this process: what the LSP holds
/// fully signed, and what each client verified and holds.
#[allow(clippy::type_complexity)]
fn run_ceremony(
    mut lsp: LspCeremony,
    ccs: &mut [(ClientId, ClientCeremony)],
) -> DemoResult<(Vec<SignedTx>, Vec<(ClientId, Vec<SignedTx>)>)> {
    for (c, cc) in ccs.iter_mut() {
        lsp.receive_nonces(*c, &cc.round1()?)?;
    }
    for (c, cc) in ccs.iter_mut() {
        let agg = lsp.agg_nonces_for(*c)?;
        lsp.receive_partials(*c, &cc.round2(&agg)?)?;
    }
    lsp.finalize()?;
    let mut signed = Vec::new();
    for (c, cc) in ccs.iter_mut() {
        cc.finish(&lsp.final_sigs_for(*c)?)?;
        signed.push((*c, cc.signed().to_vec()));
    }
    Ok((lsp.all_signed().cloned().collect(), signed))
}
