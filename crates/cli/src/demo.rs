//! The end-to-end demo on the embedded chain: mine, fund, pay, bump a zero-fee TRUC transaction
//! through its P2A anchor, then build, sign and fund a factory, let one client exit alone and pay
//! the others at the timeout; every block judged by Bitcoin Core's engine.

use std::path::PathBuf;
use std::time::Instant;

use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Witness,
};
use superscalar_chain::{Chain, ChainConfig, EmbeddedChain};
use superscalar_wallet::{Faucet, OnchainWallet};

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

/// One on-chain transaction of the demo, for the summary.
pub struct Row {
    pub what: &'static str,
    pub tx: Transaction,
    pub fee: Amount,
}

pub fn run(data_dir: Option<PathBuf>) -> DemoResult<()> {
    let started = Instant::now();
    let chain = EmbeddedChain::open(ChainConfig {
        data_dir: data_dir.clone(),
        ..Default::default()
    })?;
    println!("superscalar demo: embedded regtest chain on Bitcoin Core's validation engine");
    match &data_dir {
        Some(d) => println!("  chain data directory: {}", d.display()),
        None => println!("  chain data directory: temporary (removed at exit)"),
    }
    let start_height = chain.tip()?.height;
    let mut rows = Vec::new();

    // 1. A faucet mines block rewards and lets them mature.
    let mut faucet = Faucet::new(&chain, 2)?;
    println!(
        "  mined {} blocks; faucet holds {}",
        chain.tip()?.height - start_height,
        faucet.available()
    );

    // 2. The faucet funds the LSP's wallet; the LSP pays a client that starts with nothing.
    let mut lsp = OnchainWallet::from_seed(random_seed())?;
    let mut client = OnchainWallet::from_seed(random_seed())?;
    let lsp_addr = lsp.new_address();
    let funding = faucet.fund(&chain, &lsp_addr, Amount::from_sat(10_000_000))?;
    rows.push(Row {
        what: "faucet -> LSP wallet",
        fee: fee_of(&chain, &funding)?,
        tx: funding,
    });
    lsp.sync(&chain)?;

    let client_addr = client.new_address();
    let pay = lsp.send(
        &chain,
        &client_addr.script_pubkey(),
        Amount::from_sat(1_500_000),
        FeeRate::from_sat_per_vb_u32(2),
    )?;
    let pay_fee = lsp.fee_of(&pay).unwrap_or(Amount::ZERO);
    rows.push(Row {
        what: "LSP -> client payment",
        fee: pay_fee,
        tx: pay,
    });
    faucet.mine(&chain, 1)?;
    lsp.sync(&chain)?;
    client.sync(&chain)?;

    // 3. A zero-fee v3 transaction with a P2A anchor is refused alone, then confirmed with a child
    //    that pays for both (the shape every SuperScalar tree transaction uses for CPFP).
    let (coin, coin_out) = client
        .unspent()
        .into_iter()
        .next()
        .ok_or("client has no coin")?;
    let keep = client.new_script();
    let parent = client.sign_transaction(Transaction {
        version: transaction::Version(3),
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: coin,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut {
                value: coin_out.value,
                script_pubkey: keep,
            },
            TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_p2a(),
            },
        ],
    })?;
    let alone = chain.submit_transaction(&parent).map(|_| ()).unwrap_err();
    println!("  zero-fee TRUC parent alone: refused ({alone})");
    let child =
        lsp.build_anchor_child(&parent, Amount::ZERO, 1, FeeRate::from_sat_per_vb_u32(5))?;
    let (_, child_id) = lsp.broadcast_package(&chain, &parent, &child)?;
    let child_fee = chain.mempool_fee(&child_id).unwrap_or(Amount::ZERO);
    rows.push(Row {
        what: "zero-fee TRUC parent (P2A)",
        fee: Amount::ZERO,
        tx: parent.clone(),
    });
    rows.push(Row {
        what: "CPFP child spending anchor",
        fee: child_fee,
        tx: child,
    });
    faucet.mine(&chain, 1)?;
    lsp.sync(&chain)?;
    client.sync(&chain)?;

    // 4. A factory of 8 clients with no coins of their own.
    let factory_rows = crate::demo_factory::run(&chain, &mut faucet, &mut lsp)?;

    // Summary.
    let tip = chain.tip()?;
    println!();
    println!("on-chain transactions (all confirmed, every block accepted by the kernel):");
    println!(
        "  {:<28} {:<64} {:>6} {:>8} {:>9}",
        "what", "txid", "vbytes", "fee sat", "sat/vB"
    );
    for r in &rows {
        let txid = r.tx.compute_txid();
        let status = chain.tx_status(&txid)?;
        if status.confirmations() == 0 {
            return Err(format!("{} ({txid}) did not confirm", r.what).into());
        }
        let vsize = r.tx.vsize() as u64;
        println!(
            "  {:<28} {txid} {vsize:>6} {:>8} {:>9.2}",
            r.what,
            r.fee.to_sat(),
            r.fee.to_sat() as f64 / vsize as f64
        );
    }
    let package_vsize = (parent.vsize() + rows[3].tx.vsize()) as f64;
    println!(
        "  package fee rate of parent + child: {:.2} sat/vB",
        child_fee.to_sat() as f64 / package_vsize
    );
    for r in &factory_rows {
        let vsize = r.tx.vsize() as u64;
        println!(
            "  {:<28} {} {vsize:>6} {:>8} {:>9.2}",
            r.what,
            r.tx.compute_txid(),
            r.fee.to_sat(),
            r.fee.to_sat() as f64 / vsize as f64
        );
    }
    println!();
    println!("final state:");
    println!("  tip height {} ({})", tip.height, tip.hash);
    println!("  LSP wallet    {}", lsp.balance().confirmed);
    println!("  client wallet {}", client.balance().confirmed);
    println!("  faucet left   {}", faucet.available());
    println!("  mempool       {} transactions", chain.mempool_len());
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn fee_of(chain: &EmbeddedChain, tx: &Transaction) -> DemoResult<Amount> {
    let mut inputs = Amount::ZERO;
    for i in &tx.input {
        let OutPoint { txid, vout } = i.previous_output;
        // The spent output is gone from the UTXO set: find it in the funding transaction's block.
        let found = find_output(chain, txid, vout)?;
        inputs += found.value;
    }
    let outputs: Amount = tx.output.iter().map(|o| o.value).sum();
    Ok(inputs - outputs)
}

fn find_output(chain: &EmbeddedChain, txid: bitcoin::Txid, vout: u32) -> DemoResult<TxOut> {
    if let superscalar_chain::TxStatus::Confirmed { height, .. } = chain.tx_status(&txid)? {
        if let Some(block) = chain.block_at(height)? {
            if let Some(tx) = block.txdata.iter().find(|t| t.compute_txid() == txid) {
                if let Some(o) = tx.output.get(vout as usize) {
                    return Ok(o.clone());
                }
            }
        }
    }
    Err(format!("output {txid}:{vout} not found").into())
}

fn random_seed() -> [u8; 32] {
    use bitcoin::secp256k1::rand::RngCore;
    let mut seed = [0u8; 32];
    bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut seed);
    seed
}
