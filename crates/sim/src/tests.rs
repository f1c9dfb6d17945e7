//! Whole-run properties of the simulation.

use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Txid, Witness};
use superscalar_core::TxKind;

use crate::config::{SimConfig, BLOCKS_PER_DAY};
use crate::costs::CostBook;
use crate::model::run;

fn small() -> SimConfig {
    SimConfig {
        clients: 400,
        days: 75,
        factory_size: 8,
        arrivals_per_day: 3.0,
        churn_per_year: 0.3,
        offline_share: 0.0,
        payments_per_day: 1.0,
        liquidity_per_month: 1.0,
        seed: 42,
        ..SimConfig::default()
    }
}

fn quiet(cfg: &SimConfig) -> crate::Outcome {
    run(cfg, &mut |_, _| {}).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let cfg = SimConfig {
        offline_share: 0.05,
        ..small()
    };
    let a = quiet(&cfg);
    let b = quiet(&cfg);
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a.summary).unwrap(),
        serde_json::to_string(&b.summary).unwrap()
    );
    let c = quiet(&SimConfig { seed: 43, ..cfg });
    assert_ne!(a.summary.offchain, c.summary.offchain);
}

#[test]
fn clients_are_conserved_and_the_online_ones_end_in_factories() {
    for (offline, arrivals) in [(0.0, 0.0), (0.0, 4.0), (0.1, 4.0)] {
        let cfg = SimConfig {
            offline_share: offline,
            arrivals_per_day: arrivals,
            ..small()
        };
        let out = quiet(&cfg);
        let c = &out.summary.clients;
        assert_eq!(c.end, c.start + c.arrivals - c.churned);
        assert_eq!(out.days.last().unwrap().clients, c.end);
        assert!(c.churned > 0, "{c:?}");
        if arrivals > 0.0 {
            assert!(c.arrivals > 0);
        }
        if offline == 0.0 && arrivals == 0.0 {
            // Nobody arrived since the last rung and nobody was offline: all are placed.
            assert_eq!(c.end_not_placed, 0, "{c:?}");
        }
        // Every factory formed holds at least one and at most the configured clients.
        assert!(out.summary.factories.max_clients <= cfg.factory_size);
        let formed: u32 = out.cohorts.iter().map(|h| h.clients).sum();
        assert!(u64::from(formed) >= c.start);
    }
}

#[test]
fn with_everyone_online_each_rotation_is_one_transaction() {
    let out = quiet(&small());
    let s = &out.summary;
    assert_eq!(s.forced.exits, 0);
    assert_eq!(s.forced.vbytes, 0);
    assert_eq!(s.factories.fallbacks, 0);
    assert!(s.factories.rotations > 60, "{:?}", s.factories);
    assert_eq!(s.factories.rotation_txs, s.factories.rotations);
    // The launch's one funding transaction, then one transaction per rung.
    assert_eq!(s.onchain.launch_txs, 1);
    assert_eq!(s.onchain.txs, 1 + s.factories.rotations);
    // Every factory whose active period ended by the last rung was closed inside a rotation
    // transaction.
    let interval = s.config.rung_interval();
    let last_rung = (s.config.days * BLOCKS_PER_DAY - 1) / interval * interval;
    let expired = out
        .cohorts
        .iter()
        .filter(|c| c.active_end <= last_rung)
        .map(|c| u64::from(c.factories))
        .sum::<u64>();
    assert_eq!(s.factories.closed_in_one_tx, expired);
    assert!(s.per_user_year.vbytes > 0.0);
    assert!(s.per_user_year.ratio > 0.0);
}

#[test]
fn offline_clients_force_exits() {
    let out = quiet(&SimConfig {
        offline_share: 0.05,
        ..small()
    });
    let f = &out.summary.forced;
    assert!(f.exits > 0, "{f:?}");
    assert!(f.factories > 0);
    assert!(f.path_vbytes > 0 && f.close_vbytes > 0 && f.sweep_vbytes > 0);
    assert!(out.summary.factories.fallbacks >= f.factories);
    assert!(out.cohorts.iter().any(|c| c.fallbacks > 0));
    assert!(out.days.iter().any(|d| d.forced_vbytes > 0));
    // Each factory the offline clients held needs more than one transaction.
    assert!(out.summary.onchain.txs > 1 + out.summary.factories.rotations);
}

/// A factory of 8 whose every client stays offline: the LSP publishes the whole tree, whose
/// vbytes are those of core's own transactions; its clients' channels are closed one by one.
#[test]
fn a_forced_exit_publishes_the_tree_core_builds() {
    let cfg = SimConfig {
        clients: 8,
        factory_size: 8,
        ladder_size: 1,
        days: 40,
        arrivals_per_day: 0.0,
        churn_per_year: 0.0,
        offline_share: 1.0,
        ..SimConfig::default()
    };
    let out = quiet(&cfg);
    let f = &out.summary.forced;
    assert_eq!(f.exits, 8);
    assert_eq!(f.factories, 1);
    assert_eq!(f.rest_vbytes, 0);

    let book = CostBook::new(&cfg).unwrap();
    let factory = book.factory(8).unwrap();
    let v = factory.initial_version();
    let kinds: Vec<TxKind> = factory
        .all_jobs(&v)
        .into_iter()
        .filter(|k| matches!(k, TxKind::Kickoff(_) | TxKind::State(_)))
        .collect();
    let built = factory
        .build_set(&kinds, OutPoint::new(Txid::all_zeros(), 0), &v)
        .unwrap();
    let tree_vbytes: u64 = built
        .values()
        .map(|b| {
            let mut tx = b.tx.clone();
            tx.input[0].witness = Witness::from_slice(&[[0u8; 64]]);
            tx.vsize() as u64
        })
        .sum();
    assert_eq!(f.path_vbytes, tree_vbytes);
    let t = &out.summary.tx_sizes;
    assert_eq!(f.close_vbytes, 8 * (t.commitment + t.cpfp_child));
    // The launch's funding is core's funding amount for those 8 clients.
    let capital = out.days[0].capital_sat;
    let model = crate::costs::model_of(&factory).unwrap();
    assert!(capital > model.overhead_sat);
}

#[test]
fn outputs_are_written() {
    let cfg = SimConfig {
        offline_share: 0.05,
        days: 40,
        ..small()
    };
    let out = quiet(&cfg);
    let dir = std::env::temp_dir().join(format!("superscalar-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    crate::write_outputs(&out, &dir).unwrap();
    for name in crate::plot::PLOT_FILES {
        let svg = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(svg.starts_with("<svg"), "{name}");
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(svg.contains("<text"), "{name}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(crate::SUMMARY_FILE)).unwrap())
            .unwrap();
    assert_eq!(json["config"]["clients"], 400);
    assert!(json["per_user_year"]["vbytes"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.summary.to_text().contains("per user per year"));
    assert!(crate::summary::comparison(std::slice::from_ref(&out.summary)).contains("ratio"));
}

#[test]
fn bad_configurations_are_refused_before_anything_runs() {
    let mut called = false;
    let e = run(
        &SimConfig {
            clients: 0,
            ..small()
        },
        &mut |_, _| called = true,
    )
    .unwrap_err();
    assert!(e.contains("--clients"), "{e}");
    assert!(!called);
}
