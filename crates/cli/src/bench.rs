//! `superscalar bench`: build, sign (every party in process, each client with its own copy of the
//! factory) and fully verify factories of N clients, and compare with the cost of the crypto
//! operations alone (the floor).

use std::sync::Arc;
use std::time::Instant;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, OutPoint, Txid};
use superscalar_core::ceremony::{ClientCeremony, CryptoOps, LspCeremony};
use superscalar_core::musig::{aggregate_nonces, AggregateKey};
use superscalar_core::{ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Keys for a bench factory.
pub fn keys(n: usize) -> (Keypair, Vec<Keypair>) {
    let secp = Secp256k1::new();
    let kp = |i: u64| {
        let mut sk = [7u8; 32];
        sk[..8].copy_from_slice(&(i + 1).to_be_bytes());
        Keypair::from_seckey_slice(&secp, &sk).expect("valid key")
    };
    (kp(u64::MAX - 1), (0..n as u64).map(kp).collect())
}

/// The parameters of a bench factory of `n` clients (regtest config, default shape).
pub fn params(lsp: &Keypair, clients: &[Keypair]) -> FactoryParams {
    FactoryParams {
        id: FactoryId([0xbe; 32]),
        config: FactoryConfig::regtest(),
        lsp_key: PublicKey::new(lsp.public_key()),
        clients: clients
            .iter()
            .map(|k| ClientSpec::new(PublicKey::new(k.public_key()), Amount::from_sat(100_000)))
            .collect(),
        creation_height: 1_000,
        stock_hashes: Vec::new(),
    }
    .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32]))
}

#[derive(Default, Clone, Copy)]
struct Totals {
    keys: u64,
    ops: CryptoOps,
}

impl Totals {
    fn add(&mut self, o: CryptoOps) {
        self.ops.nonces += o.nonces;
        self.ops.partial_signs += o.partial_signs;
        self.ops.partial_verifies += o.partial_verifies;
        self.ops.aggregations += o.aggregations;
        self.ops.final_verifies += o.final_verifies;
    }
}

/// Unit costs of the crypto operations in isolation, in seconds.
struct Floor {
    key: f64,
    nonce: f64,
    sign: f64,
    verify_partial: f64,
    aggregate: f64,
    verify: f64,
}

fn time_per<F: FnMut()>(iters: u32, mut f: F) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(iters)
}

fn measure_floor() -> BenchResult<Floor> {
    let (lsp, clients) = keys(128);
    let pks: Vec<PublicKey> = clients
        .iter()
        .map(|k| PublicKey::new(k.public_key()))
        .collect();
    let key = time_per(20, || {
        let _ = AggregateKey::new(&pks);
    }) / 128.0;
    let agg = AggregateKey::new(&pks[..3])?;
    let tweaked = agg.tweaked(None)?;
    let secp = Secp256k1::new();
    let msg = [9u8; 32];
    let signers = &clients[..3];
    let nonce = time_per(2_000, || {
        let _ = tweaked.nonce_gen(&lsp, &msg);
    });
    let mut pubs = Vec::new();
    let mut secs = Vec::new();
    for k in signers {
        let (s, p) = tweaked.nonce_gen(k, &msg);
        secs.push(s);
        pubs.push(p);
    }
    let aggn = aggregate_nonces(&pubs)?;
    let partials: Vec<_> = secs
        .into_iter()
        .zip(signers)
        .map(|(s, k)| tweaked.partial_sign(s, k, &aggn, &msg))
        .collect::<Result<_, _>>()?;
    let sign = time_per(2_000, || {
        let (s, _) = tweaked.nonce_gen(&signers[0], &msg);
        let _ = tweaked.partial_sign(s, &signers[0], &aggn, &msg);
    }) - nonce;
    let verify_partial = time_per(2_000, || {
        let _ = tweaked.partial_verify(&partials[0], &pubs[0], &pks[0], &aggn, &msg);
    });
    let aggregate = time_per(2_000, || {
        let _ = tweaked.aggregate(&aggn, &msg, &partials);
    });
    let sig = tweaked.aggregate(&aggn, &msg, &partials)?;
    let verify = time_per(5_000, || {
        let _ = secp.verify_schnorr(
            &sig,
            &bitcoin::secp256k1::Message::from_digest(msg),
            &tweaked.output_key(),
        );
    });
    Ok(Floor {
        key,
        nonce,
        sign: sign.max(0.0),
        verify_partial,
        aggregate,
        verify,
    })
}

/// Run the ceremony for one N with `threads` worker threads for the clients' work.
fn run_one(n: usize, threads: usize) -> BenchResult<(f64, usize, Totals, u32)> {
    let (lsp_key, client_keys) = keys(n);
    let p = params(&lsp_key, &client_keys);
    let funding = OutPoint::new(Txid::from_byte_array([1; 32]), 0);
    let start = Instant::now();
    let lsp_factory = Arc::new(Factory::new(p.clone())?);
    let mut lsp = LspCeremony::new(Arc::clone(&lsp_factory), lsp_key, funding)?;
    // Each client builds its own factory view: no shared caches with the LSP or other clients.
    let chunk = n.div_ceil(threads);
    let mut clients: Vec<(Arc<Factory>, ClientCeremony)> = std::thread::scope(|s| {
        let handles: Vec<_> = client_keys
            .chunks(chunk)
            .enumerate()
            .map(|(t, ks)| {
                let p = p.clone();
                s.spawn(
                    move || -> Result<Vec<(Arc<Factory>, ClientCeremony)>, String> {
                        ks.iter()
                            .enumerate()
                            .map(|(j, k)| {
                                let f =
                                    Arc::new(Factory::new(p.clone()).map_err(|e| e.to_string())?);
                                let c = ClientCeremony::new(
                                    Arc::clone(&f),
                                    ClientId((t * chunk + j) as u32),
                                    *k,
                                    funding,
                                    // No chain in the bench: the parameters' height is the tip.
                                    p.creation_height,
                                )
                                .map_err(|e| e.to_string())?;
                                Ok((f, c))
                            })
                            .collect()
                    },
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect::<Result<Vec<_>, _>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    for (_, c) in clients.iter_mut() {
        let m = c.round1()?;
        lsp.receive_nonces(c.client(), &m)?;
    }
    for (_, c) in clients.iter_mut() {
        let agg = lsp.agg_nonces_for(c.client())?;
        let partials = c.round2(&agg)?;
        lsp.receive_partials(c.client(), &partials)?;
    }
    lsp.finalize()?;
    for (_, c) in clients.iter_mut() {
        let sigs = lsp.final_sigs_for(c.client())?;
        c.finish(&sigs)?;
    }
    let wall = start.elapsed().as_secs_f64();
    let mut totals = Totals::default();
    totals.keys += lsp_factory.keys_aggregated();
    totals.add(lsp.ops());
    for (f, c) in &clients {
        totals.keys += f.keys_aggregated();
        totals.add(c.ops());
    }
    let signatures = lsp.job_count();
    Ok((wall, signatures, totals, lsp_factory.ewt_max()))
}

/// `superscalar bench`.
pub fn run(sizes: &[usize], threads: usize) -> BenchResult<()> {
    let floor = measure_floor()?;
    println!("unit costs on this machine (one core): key aggregation {:.1} us/key, nonce {:.1} us, partial sign {:.1} us, partial verify {:.1} us, aggregate+verify {:.1} us, Schnorr verify {:.1} us",
        floor.key * 1e6, floor.nonce * 1e6, floor.sign * 1e6, floor.verify_partial * 1e6, floor.aggregate * 1e6, floor.verify * 1e6);
    println!("client work runs on {threads} thread(s); the LSP's on one; the floor is single-core crypto time");
    println!();
    println!(
        "{:>6} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "N",
        "wall s",
        "txs",
        "keys agg",
        "nonces",
        "p.signs",
        "p.verif",
        "aggreg",
        "f.verif",
        "floor s",
        "x floor"
    );
    for &n in sizes {
        let (wall, txs, t, _ewt) = run_one(n, threads)?;
        let o = t.ops;
        let floor_s = t.keys as f64 * floor.key
            + o.nonces as f64 * floor.nonce
            + o.partial_signs as f64 * floor.sign
            + o.partial_verifies as f64 * floor.verify_partial
            + o.aggregations as f64 * floor.aggregate
            + o.final_verifies as f64 * floor.verify;
        println!("{n:>6} {wall:>9.2} {txs:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {floor_s:>9.2} {:>7.2}",
            t.keys, o.nonces, o.partial_signs, o.partial_verifies, o.aggregations, o.final_verifies, wall / floor_s);
    }
    Ok(())
}
