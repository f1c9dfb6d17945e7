//! The factory part of the demo: 8 clients with no on-chain coins join one factory funded by the
//! LSP, everything is signed (two round trips), one client leaves alone, and at the timeout the
//! pre-signed transactions pay everyone else.

use std::sync::Arc;

use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, FeeRate, OutPoint};
use superscalar_chain::{Chain, EmbeddedChain};
use superscalar_client::timeout::{claim_timeouts, ClientView};
use superscalar_client::{ExitProgress, UnilateralExit};
use superscalar_core::ceremony::run_in_process;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams, TxKind,
};
use superscalar_wallet::{Faucet, OnchainWallet};

use crate::demo::Row;

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

const CLIENTS: u32 = 8;
const LEAVER: u32 = 5;

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
    let params = FactoryParams {
        id: FactoryId(seed),
        config: FactoryConfig::regtest(),
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
    };
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
    let (ceremony, clients) = run_in_process(&factory, lsp_key, &client_keys, funding)?;
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

    // One client leaves alone: its path only, each state after its relative delay.
    let leaver = &clients[LEAVER as usize];
    let mut exit = UnilateralExit::new(leaver.signed())?;
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
                rows.push(Row {
                    what: if matches!(kind, TxKind::Kickoff(_)) {
                        "exit: kickoff"
                    } else {
                        "exit: state"
                    },
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
        "  client {LEAVER} exited alone in {} blocks: channel of {} and its fee coin confirmed",
        chain.tip()?.height - start,
        factory.params().clients[LEAVER as usize].capacity
    );

    // At T the timeout transactions pay every other client; zero-fee ones (channel and stock
    // outputs already on chain) are paid for with the clients' fee coins.
    let t = factory.timeout_height();
    let tip = chain.tip()?.height;
    if tip + 1 < t {
        faucet.mine(chain, t - 1 - tip)?;
    }
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let mut sent = Vec::new();
    let mut unpaid = Vec::new();
    for c in 0..CLIENTS {
        let i = c as usize;
        let claim = claim_timeouts(
            chain,
            &ClientView {
                factory: &factory,
                client: ClientId(c),
                signed: clients[i].signed(),
                funding,
                key: &client_keys[i],
            },
            rate,
            None,
        )?;
        sent.extend(claim.sent);
        if !claim.unpaid.is_empty() {
            unpaid.push(c);
        }
    }
    // Zero-fee timeouts whose fee coins are taken: the LSP's wallet pays for them.
    for c in unpaid {
        let i = c as usize;
        let claim = claim_timeouts(
            chain,
            &ClientView {
                factory: &factory,
                client: ClientId(c),
                signed: clients[i].signed(),
                funding,
                key: &client_keys[i],
            },
            rate,
            Some(&mut *lsp),
        )?;
        sent.extend(claim.sent);
    }
    for txid in sent {
        if let Some(s) = ceremony.all_signed().find(|s| s.tx.compute_txid() == txid) {
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
        if i as u32 != LEAVER {
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
