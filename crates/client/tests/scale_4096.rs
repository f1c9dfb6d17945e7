//! Scale: a factory of 4096 clients (`SUPERSCALAR_SCALE_CLIENTS` to choose another N) is built,
//! signed by every party in process and funded on the embedded chain; every transaction the LSP
//! signed passes our mempool's standardness checks; the last client exits alone. Prints the time
//! of each step and the memory: peak RSS of the whole test, and the LSP's live state (RSS before
//! and after dropping it). Ignored by default (minutes):
//!
//! ```sh
//! cargo test -p superscalar-client --test scale_4096 -- --ignored --nocapture
//! ```

mod common;

use std::time::Instant;

use common::*;
use superscalar_chain::Chain;
use superscalar_client::{ExitProgress, UnilateralExit};
use superscalar_core::{ClientId, FactoryConfig, TxKind};
use superscalar_wallet::burn_script;

#[test]
#[ignore = "minutes and about 2 GB: cargo test -p superscalar-client --test scale_4096 -- --ignored --nocapture"]
fn a_factory_of_4096_clients_is_built_signed_funded_and_its_last_client_exits() {
    let n: u32 = std::env::var("SUPERSCALAR_SCALE_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let start = Instant::now();
    let h = build(n, FactoryConfig::regtest());
    let built = start.elapsed();
    let (rss_built, _) = rss_mb();
    println!(
        "N={n}: built, signed and funded in {:.1} s; {} transactions signed by the LSP; RSS {rss_built} MB",
        built.as_secs_f64(),
        h.lsp.job_count()
    );

    // Every transaction of the factory relays.
    let mut largest = (0u64, None);
    let mut split = 0;
    for s in h.lsp.all_signed() {
        assert_standard(s);
        if s.tx.weight().to_wu() > largest.0 {
            largest = (s.tx.weight().to_wu(), Some(s.kind));
        }
        if matches!(
            s.kind,
            TxKind::Timeout(superscalar_core::factory::Slot::TimeoutPart { .. })
        ) {
            split += 1;
        }
    }
    println!(
        "every transaction standard; the heaviest is {:?} at {} WU; {split} timeout parts",
        largest.1, largest.0
    );
    if n >= 4096 {
        assert!(split > 0, "the root's timeout is split");
    }

    // The LSP's live state: what is freed when the LSP's ceremony goes (the clients' first).
    let last = ClientId(n - 1);
    let path = h.clients[last.0 as usize].signed().to_vec();
    let Harness {
        chain,
        lsp,
        clients,
        factory,
        ..
    } = h;
    drop(clients);
    trim_heap();
    let (rss_lsp, _) = rss_mb();
    drop(lsp);
    trim_heap();
    let (rss_none, _) = rss_mb();
    println!(
        "RSS with the LSP and no clients {rss_lsp} MB, without the LSP {rss_none} MB: LSP live \
         state about {} MB",
        rss_lsp.saturating_sub(rss_none)
    );

    // The last client exits alone on the embedded chain.
    let exit_start = Instant::now();
    let mut exit = UnilateralExit::new(&path).unwrap();
    for _ in 0..1_000 {
        if exit.step(&chain, None).unwrap() == ExitProgress::Done {
            break;
        }
        chain.mine_blocks(1, &burn_script()).unwrap();
    }
    let published = path
        .iter()
        .filter(|s| matches!(s.kind, TxKind::Kickoff(_) | TxKind::State(_)))
        .filter(|s| {
            chain
                .tx_status(&s.tx.compute_txid())
                .unwrap()
                .confirmations()
                > 0
        })
        .count();
    assert_eq!(
        published,
        factory.tree().path_transactions() as usize,
        "the whole path of the last client is on chain"
    );
    let (_, peak) = rss_mb();
    println!(
        "client {} exited in {:.1} s ({published} transactions); total {:.1} s; peak RSS {peak} MB",
        last.0,
        exit_start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}
