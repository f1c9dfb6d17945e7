//! `superscalar bench`: the signing ceremony of factories of N clients, every party in process,
//! measured as it would run with the clients on their own machines.
//!
//! The LSP's critical path is its own steps only (building the tree, the script hints, taking
//! the nonces, checking the partial signatures, aggregating), timed in wall and CPU time while no
//! client work runs. Each client (its own copy of the factory, with the LSP's script hints) is
//! timed on its own thread's CPU clock. Beside them, the raw floor: the libsecp256k1 operations
//! the LSP must do, each at the cost of calling libsecp256k1 directly through the `secp256k1` 0.33
//! MuSig2 API (no code of ours), divided by the cores the LSP uses.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::{Amount, OutPoint, Txid};
use superscalar_core::ceremony::{
    AggNonceMsg, ClientCeremony, FinalSigMsg, LspCeremony, NonceMsg, PartialSigMsg,
};
use superscalar_core::factory::ScriptHints;
use superscalar_core::secp::{op_counts, OpCounts};
use superscalar_core::{
    par, ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams,
};

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
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32]))
}

/// CPU time of this process (every thread), in seconds.
pub(crate) fn process_cpu() -> f64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu() -> f64 {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids are defined on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Cost in seconds of each libsecp256k1 operation, called directly through `secp256k1` 0.33.
#[derive(Debug, Clone, Copy)]
struct Unit {
    key_parse: f64,
    key_agg: f64,
    tweak: f64,
    nonce_gen: f64,
    nonce_parse: f64,
    nonce_agg: f64,
    session: f64,
    partial_sign: f64,
    partial_verify: f64,
    sig_agg: f64,
    schnorr_verify: f64,
}

fn time_per(iters: u32, mut f: impl FnMut()) -> f64 {
    f(); // warm up (the thread's context, caches)
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(iters)
}

/// The raw floor's unit costs: libsecp256k1's own MuSig2 and BIP-340 operations, without any
/// wrapper of ours, in the sizes of a factory's transactions.
fn raw_unit_costs() -> BenchResult<Unit> {
    use musig::musig::{
        new_nonce_pair, AggregatedNonce, KeyAggCache, PartialSignature, PublicNonce, Session,
        SessionSecretRand,
    };
    const KEYS: usize = 64;
    const SIGNERS: usize = 3;
    let secrets: Vec<musig::SecretKey> = (0..KEYS)
        .map(|i| {
            let mut b = [0x31u8; 32];
            b[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
            musig::SecretKey::from_secret_bytes(b)
        })
        .collect::<Result<_, _>>()?;
    let pks: Vec<musig::PublicKey> = secrets
        .iter()
        .map(musig::PublicKey::from_secret_key)
        .collect();
    let serialized: Vec<[u8; 33]> = pks.iter().map(|k| k.serialize()).collect();
    let key_parse = time_per(2_000, || {
        black_box(musig::PublicKey::from_slice(black_box(&serialized[7])).ok());
    });
    let refs: Vec<&musig::PublicKey> = pks.iter().collect();
    let key_agg = time_per(100, || {
        black_box(KeyAggCache::new(black_box(&refs)));
    }) / KEYS as f64;
    // A leaf's output: the LSP and two clients.
    let base = KeyAggCache::new(&refs[..SIGNERS]);
    let tweak_scalar = musig::Scalar::from_be_bytes([0x17; 32])?;
    let tweak = time_per(2_000, || {
        let mut c = base;
        black_box(c.pubkey_xonly_tweak_add(black_box(&tweak_scalar)).ok());
    });
    let mut cache = base;
    let output = cache
        .pubkey_xonly_tweak_add(&tweak_scalar)?
        .x_only_public_key()
        .0;
    let msg = [9u8; 32];
    let mut seed = 1u64;
    let mut nonce = |i: usize| {
        seed += 1;
        let mut r = [1u8; 32];
        r[..8].copy_from_slice(&seed.to_le_bytes());
        new_nonce_pair(
            SessionSecretRand::assume_uniformly_random(r),
            Some(&cache),
            Some(secrets[i]),
            pks[i],
            Some(&msg),
            None,
        )
    };
    let nonce_gen = time_per(2_000, || {
        black_box(nonce(0));
    });
    let pairs: Vec<_> = (0..KEYS).map(|i| nonce(i % SIGNERS)).collect();
    let bytes = pairs[1].1.serialize();
    let nonce_parse = time_per(2_000, || {
        black_box(PublicNonce::from_byte_array(black_box(&bytes)).ok());
    });
    let publics: Vec<&PublicNonce> = pairs.iter().map(|p| &p.1).collect();
    let nonce_agg = time_per(500, || {
        black_box(AggregatedNonce::new(black_box(&publics)));
    }) / KEYS as f64;
    let agg = AggregatedNonce::new(&publics[..SIGNERS]);
    let session = time_per(2_000, || {
        black_box(Session::new(&cache, black_box(agg), &msg));
    });
    // Partial signing alone: a fresh nonce per signature, its generation timed apart.
    let keypair = musig::Keypair::from_secret_bytes(secrets[0].to_secret_bytes())?;
    let s = Session::new(&cache, agg, &msg);
    let both = time_per(2_000, || {
        let (sec, _) = nonce(0);
        black_box(s.partial_sign(sec, &keypair, &cache));
    });
    let partial_sign = (both - nonce_gen).max(0.0);
    // Three signers of one session: sign, verify, aggregate, verify the result.
    let (own_secrets, own_publics): (Vec<_>, Vec<PublicNonce>) =
        (0..SIGNERS).map(&mut nonce).unzip();
    let own_refs: Vec<&PublicNonce> = own_publics.iter().collect();
    let s = Session::new(&cache, AggregatedNonce::new(&own_refs), &msg);
    let mut partials: Vec<PartialSignature> = Vec::new();
    for (i, sec) in own_secrets.into_iter().enumerate() {
        let kp = musig::Keypair::from_secret_bytes(secrets[i].to_secret_bytes())?;
        partials.push(s.partial_sign(sec, &kp, &cache));
    }
    let partial_verify = time_per(2_000, || {
        black_box(s.partial_verify(&cache, black_box(&partials[1]), &own_publics[1], pks[1]));
    });
    let prefs: Vec<&PartialSignature> = partials.iter().collect();
    let sig_agg = time_per(2_000, || {
        black_box(s.partial_sig_agg(black_box(&prefs)));
    });
    let sig = s.partial_sig_agg(&prefs).assume_valid();
    if musig::schnorr::verify(&sig, &msg, &output).is_err() {
        return Err("the raw MuSig2 signature does not verify".into());
    }
    let schnorr_verify = time_per(2_000, || {
        black_box(musig::schnorr::verify(&sig, black_box(&msg), &output).is_ok());
    });
    Ok(Unit {
        key_parse,
        key_agg,
        tweak,
        nonce_gen,
        nonce_parse,
        nonce_agg,
        session,
        partial_sign,
        partial_verify,
        sig_agg,
        schnorr_verify,
    })
}

/// The raw operations of one workload: (name, count, unit cost in seconds).
fn rows(ops: &OpCounts, unit: &Unit) -> Vec<(&'static str, u64, f64)> {
    vec![
        ("key parse", ops.key_parse, unit.key_parse),
        ("key aggregation (per key)", ops.key_agg, unit.key_agg),
        ("taproot tweak", ops.tweak_add, unit.tweak),
        ("nonce generation", ops.nonce_gen, unit.nonce_gen),
        ("nonce parse", ops.nonce_parse, unit.nonce_parse),
        (
            "nonce aggregation (per nonce)",
            ops.nonce_agg,
            unit.nonce_agg,
        ),
        ("session (nonce processing)", ops.session, unit.session),
        ("partial sign", ops.partial_sign, unit.partial_sign),
        ("partial verify", ops.partial_verify, unit.partial_verify),
        ("signature aggregation", ops.sig_agg, unit.sig_agg),
        ("BIP-340 verify", ops.schnorr_verify, unit.schnorr_verify),
    ]
}

fn floor_of(ops: &OpCounts, unit: &Unit) -> f64 {
    rows(ops, unit).iter().map(|(_, n, c)| *n as f64 * c).sum()
}

/// What the LSP must do for a factory, from its structure alone: every output's key aggregated
/// once (each party's key parsed once), every output tweaked once, every fee coin's script, and per
/// transaction one nonce, one session, one partial signature, one aggregation and its check;
/// per co-signer of each transaction one nonce parsed and aggregated and one partial signature
/// verified.
fn lsp_minimum(f: &Factory, lsp: &LspCeremony, client_partials: u64) -> OpCounts {
    let tree = f.tree();
    let n = f.params().clients.len() as u64;
    let node_keys: u64 = tree
        .nodes()
        .iter()
        .map(|node| 1 + node.clients.len() as u64)
        .sum();
    let stock_keys: u64 = f.stocks().iter().map(|s| 1 + s.clients.len() as u64).sum();
    // Under the default policy a node's input and its kickoff's output share one script.
    let outputs = tree.nodes().len() as u64 + n + f.stocks().len() as u64;
    let jobs = lsp.job_count() as u64;
    OpCounts {
        key_parse: n + 1,
        key_agg: node_keys + 2 * n + stock_keys,
        tweak_add: outputs + n,
        nonce_gen: jobs,
        nonce_parse: client_partials,
        nonce_agg: jobs + client_partials,
        session: jobs,
        partial_sign: jobs,
        partial_verify: client_partials,
        sig_agg: jobs,
        schnorr_verify: jobs,
        ..OpCounts::default()
    }
}

/// Time of one LSP step: wall and CPU seconds.
#[derive(Default, Clone, Copy)]
struct Step {
    wall: f64,
    cpu: f64,
}

/// One LSP step, timed (never inlined: `valgrind --tool=callgrind
/// --toggle-collect='superscalar::bench::lsp_step*'` counts the LSP's instructions alone).
#[inline(never)]
fn lsp_step<T>(
    steps: &mut Vec<(&'static str, Step)>,
    name: &'static str,
    f: impl FnOnce() -> T,
) -> T {
    let (w, c) = (Instant::now(), process_cpu());
    let out = f();
    steps.push((
        name,
        Step {
            wall: w.elapsed().as_secs_f64(),
            cpu: process_cpu() - c,
        },
    ));
    out
}

/// A client's side: its factory copy, its ceremony and its CPU time so far.
struct Client {
    factory: Arc<Factory>,
    ceremony: ClientCeremony,
    cpu: f64,
}

/// `f` for every item on `threads` threads (the clients: independent machines in reality).
fn on_threads<T: Send, R: Send>(
    threads: usize,
    items: &mut [T],
    f: impl Fn(usize, &mut T) -> R + Sync,
) -> Vec<R> {
    let chunk = items.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks_mut(chunk)
            .enumerate()
            .map(|(t, part)| {
                let f = &f;
                s.spawn(move || {
                    part.iter_mut()
                        .enumerate()
                        .map(|(j, item)| f(t * chunk + j, item))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    })
}

/// One client step, timed on the client's thread.
fn client_step<R>(c: &mut Client, f: impl FnOnce(&mut ClientCeremony) -> R) -> R {
    let t = thread_cpu();
    let out = f(&mut c.ceremony);
    c.cpu += thread_cpu() - t;
    out
}

struct Outcome {
    n: usize,
    txs: usize,
    steps: Vec<(&'static str, Step)>,
    lsp_ops: OpCounts,
    lsp_min: OpCounts,
    client_ms: Vec<f64>,
    client_keys: Vec<u64>,
    lsp_threads: usize,
    wall: f64,
}

fn run_one(n: usize, client_threads: usize) -> BenchResult<Outcome> {
    let (lsp_key, client_keys) = keys(n);
    let p = params(&lsp_key, &client_keys);
    let funding = OutPoint::new(Txid::from_byte_array([1; 32]), 0);
    let start = Instant::now();
    let mut steps = Vec::new();
    let before = op_counts();
    let (lsp_factory, mut lsp) = lsp_step(
        &mut steps,
        "setup: factory, keys, transactions, nonces",
        || {
            let f = Arc::new(Factory::new(p.clone())?);
            let lsp = LspCeremony::new(Arc::clone(&f), lsp_key, funding)?;
            BenchResult::Ok((f, lsp))
        },
    )?;
    let hints: Vec<ScriptHints> = lsp_step(&mut steps, "script hints for every client", || {
        let ids: Vec<ClientId> = (0..n as u32).map(ClientId).collect();
        par::map(&ids, |_, c| lsp.script_hints_for(*c))
            .into_iter()
            .collect::<Result<_, _>>()
    })?;
    let lsp_ops_setup = op_counts().since(&before);
    // Each client: its own copy of the factory with the LSP's hints, then round 1.
    let mut slots: Vec<Option<ScriptHints>> = hints.into_iter().map(Some).collect();
    let made = on_threads(
        client_threads,
        &mut slots,
        |i, h| -> Result<(Client, NonceMsg), String> {
            let t = thread_cpu();
            let hints = h.take().expect("hints once");
            let f = Factory::new(p.clone())
                .and_then(|f| f.with_script_hints(ClientId(i as u32), hints))
                .map_err(|e| e.to_string())?;
            let f = Arc::new(f);
            let mut ceremony = ClientCeremony::new(
                Arc::clone(&f),
                ClientId(i as u32),
                client_keys[i],
                funding,
                // No chain in the bench: the parameters' height is the tip.
                p.creation_height,
            )
            .map_err(|e| e.to_string())?;
            let msg = ceremony.round1().map_err(|e| e.to_string())?;
            Ok((
                Client {
                    factory: f,
                    ceremony,
                    cpu: thread_cpu() - t,
                },
                msg,
            ))
        },
    );
    let (mut clients, nonces): (Vec<Client>, Vec<NonceMsg>) = made
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let before = op_counts();
    let aggs: Vec<AggNonceMsg> =
        lsp_step(&mut steps, "round 1: take the nonces, aggregate", || {
            let msgs: Vec<(ClientId, &NonceMsg)> =
                (0..n as u32).map(ClientId).zip(&nonces).collect();
            lsp.receive_all_nonces(&msgs)?;
            (0..n as u32)
                .map(|c| lsp.agg_nonces_for(ClientId(c)))
                .collect::<Result<Vec<_>, _>>()
        })?;
    drop(nonces);
    let mut lsp_ops = lsp_ops_setup.plus(&op_counts().since(&before));
    let partials: Vec<PartialSigMsg> = on_threads(client_threads, &mut clients, |i, c| {
        client_step(c, |cc| cc.round2(&aggs[i]))
    })
    .into_iter()
    .collect::<Result<_, _>>()?;
    drop(aggs);
    let before = op_counts();
    lsp_step(&mut steps, "round 2: check every partial signature", || {
        let msgs: Vec<(ClientId, &PartialSigMsg)> =
            (0..n as u32).map(ClientId).zip(&partials).collect();
        lsp.receive_all_partials(&msgs)
    })?;
    let client_partials: u64 = partials.iter().map(|m| m.partials.len() as u64).sum();
    drop(partials);
    let finals: Vec<FinalSigMsg> =
        lsp_step(&mut steps, "finalize: sign, aggregate, check", || {
            lsp.finalize()?;
            (0..n as u32)
                .map(|c| lsp.final_sigs_for(ClientId(c)))
                .collect::<Result<Vec<_>, _>>()
        })?;
    lsp_ops = lsp_ops.plus(&op_counts().since(&before));
    on_threads(client_threads, &mut clients, |i, c| {
        client_step(c, |cc| cc.finish(&finals[i]).map(|_| ()))
    })
    .into_iter()
    .collect::<Result<(), _>>()?;
    let wall = start.elapsed().as_secs_f64();
    if !clients.iter().all(|c| c.ceremony.is_live()) {
        return Err("a client did not go live".into());
    }
    Ok(Outcome {
        n,
        txs: lsp.job_count(),
        steps,
        lsp_min: lsp_minimum(&lsp_factory, &lsp, client_partials),
        lsp_ops,
        client_ms: clients.iter().map(|c| c.cpu * 1e3).collect(),
        client_keys: clients
            .iter()
            .map(|c| c.factory.keys_aggregated())
            .collect(),
        lsp_threads: par::threads(),
        wall,
    })
}

trait Plus {
    fn plus(&self, other: &Self) -> Self;
}

impl Plus for OpCounts {
    fn plus(&self, o: &OpCounts) -> OpCounts {
        OpCounts {
            pubkey_create: self.pubkey_create + o.pubkey_create,
            tweak_mul: self.tweak_mul + o.tweak_mul,
            tweak_add: self.tweak_add + o.tweak_add,
            key_parse: self.key_parse + o.key_parse,
            key_agg: self.key_agg + o.key_agg,
            nonce_gen: self.nonce_gen + o.nonce_gen,
            nonce_parse: self.nonce_parse + o.nonce_parse,
            nonce_agg: self.nonce_agg + o.nonce_agg,
            session: self.session + o.session,
            partial_sign: self.partial_sign + o.partial_sign,
            partial_verify: self.partial_verify + o.partial_verify,
            sig_agg: self.sig_agg + o.sig_agg,
            schnorr_sign: self.schnorr_sign + o.schnorr_sign,
            schnorr_verify: self.schnorr_verify + o.schnorr_verify,
        }
    }
}

fn print_outcome(o: &Outcome, unit: &Unit) {
    let total = o.steps.iter().fold(Step::default(), |a, (_, s)| Step {
        wall: a.wall + s.wall,
        cpu: a.cpu + s.cpu,
    });
    let single = floor_of(&o.lsp_min, unit);
    let floor = single / o.lsp_threads as f64;
    println!();
    println!(
        "N = {}: {} transactions, {} partial signatures from clients; whole ceremony in process {:.2} s",
        o.n, o.txs, o.lsp_min.partial_verify, o.wall
    );
    println!("  {:<44} {:>10} {:>10}", "LSP step", "wall ms", "CPU ms");
    for (name, s) in &o.steps {
        println!("  {name:<44} {:>10.1} {:>10.1}", s.wall * 1e3, s.cpu * 1e3);
    }
    println!(
        "  {:<44} {:>10.1} {:>10.1}",
        "LSP critical path",
        total.wall * 1e3,
        total.cpu * 1e3
    );
    println!(
        "  {:<32} {:>10} {:>10} {:>10} {:>12}",
        "LSP raw operations", "must do", "done", "raw us", "floor ms"
    );
    for ((name, min, cost), (_, done, _)) in rows(&o.lsp_min, unit)
        .into_iter()
        .zip(rows(&o.lsp_ops, unit))
    {
        println!(
            "  {name:<32} {min:>10} {done:>10} {:>10.2} {:>12.1}",
            cost * 1e6,
            min as f64 * cost * 1e3
        );
    }
    println!(
        "  LSP raw floor: {:.1} ms on one core, {:.1} ms on {} cores; LSP wall {:.1} ms = {:.2}x the floor; LSP CPU {:.1} ms = {:.2}x the one-core floor",
        single * 1e3,
        floor * 1e3,
        o.lsp_threads,
        total.wall * 1e3,
        total.wall / floor,
        total.cpu * 1e3,
        total.cpu / single
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max = o.client_ms.iter().copied().fold(0.0, f64::max);
    let keys: Vec<f64> = o.client_keys.iter().map(|k| *k as f64).collect();
    println!(
        "  per client (own factory copy with script hints, CPU): {:.1} ms mean, {:.1} ms max; {:.0} keys aggregated (mean), {} max",
        mean(&o.client_ms),
        max,
        mean(&keys),
        o.client_keys.iter().max().copied().unwrap_or(0)
    );
}

/// `superscalar bench`.
pub fn run(sizes: &[usize], client_threads: usize, lsp_threads: usize) -> BenchResult<()> {
    par::set_max_threads(lsp_threads);
    let profile = if cfg!(debug_assertions) {
        "dev (debug assertions on; superscalar-core at opt-level 3, dependencies at 2)"
    } else {
        "release"
    };
    let cfg = FactoryConfig::regtest();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("configuration: sizes {sizes:?}; {profile} build; {cores} cores; LSP on {} thread(s), clients on {client_threads}",
        par::threads());
    println!(
        "factory: shape {:?} ({} static levels), {:?} leaves, {:?} timeouts, regtest; every party in process, each client with its own copy of the factory and the LSP's script hints",
        cfg.shape.arity, cfg.shape.static_levels, cfg.shape.leaf, cfg.timeout_policy
    );
    let unit = raw_unit_costs()?;
    println!();
    println!("raw libsecp256k1 unit costs (secp256k1 0.33 MuSig2 API called directly, one core):");
    for (name, _, cost) in rows(&OpCounts::default(), &unit) {
        println!("  {name:<32} {:>8.2} us", cost * 1e6);
    }
    let mut outcomes = Vec::new();
    for &n in sizes {
        let o = run_one(n, client_threads)?;
        print_outcome(&o, &unit);
        outcomes.push(o);
    }
    println!();
    println!(
        "{:>6} {:>7} {:>11} {:>10} {:>10} {:>8} {:>11} {:>11} {:>10}",
        "N",
        "txs",
        "LSP wall s",
        "LSP CPU s",
        "floor s",
        "x floor",
        "client ms",
        "keys/client",
        "total s"
    );
    for o in &outcomes {
        let wall: f64 = o.steps.iter().map(|s| s.1.wall).sum();
        let cpu: f64 = o.steps.iter().map(|s| s.1.cpu).sum();
        let floor = floor_of(&o.lsp_min, &unit) / o.lsp_threads as f64;
        let client = o.client_ms.iter().sum::<f64>() / o.client_ms.len().max(1) as f64;
        let keys = o.client_keys.iter().sum::<u64>() as f64 / o.client_keys.len().max(1) as f64;
        println!(
            "{:>6} {:>7} {wall:>11.3} {cpu:>10.3} {floor:>10.3} {:>8.2} {client:>11.1} {keys:>11.0} {:>10.2}",
            o.n,
            o.txs,
            wall / floor,
            o.wall
        );
    }
    Ok(())
}
