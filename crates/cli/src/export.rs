//! `superscalar export-exit`: build and sign a factory in process and print one client's signed
//! exit package as JSON.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Txid};
use superscalar_client::ExitPackage;
use superscalar_core::ceremony::run_in_process;
use superscalar_core::{ClientId, Factory};

/// Print the exit package of `client` in a factory of `n` clients (default shape, regtest).
pub fn run(n: usize, client: u32, summary: bool) -> Result<(), Box<dyn std::error::Error>> {
    if client as usize >= n {
        return Err(format!("client {client} does not exist in a factory of {n}").into());
    }
    let (lsp, clients) = crate::bench::keys(n);
    let factory = Arc::new(Factory::new(crate::bench::params(&lsp, &clients))?);
    let funding = OutPoint::new(Txid::from_byte_array([1; 32]), 0);
    // No chain here: the parameters' creation height stands for every party's tip.
    let tip = factory.params().creation_height;
    let (_, signed) = run_in_process(&factory, lsp, &clients, funding, tip)?;
    let package = ExitPackage::new(
        &factory,
        ClientId(client),
        funding,
        signed[client as usize].signed(),
    );
    if summary {
        let timeouts_vb: u64 = package.timeouts.iter().map(|t| t.vbytes).sum();
        println!(
            "N={n} client {client}: exit path {} transactions, {} vbytes, {} sat fees; {} timeout transactions, {} vbytes; JSON {} bytes",
            package.path.len(),
            package.path_vbytes,
            package.path_fee_sat,
            package.timeouts.len(),
            timeouts_vb,
            package.to_json().len()
        );
    } else {
        println!("{}", package.to_json());
    }
    Ok(())
}
