//! The process-wide memo of key aggregations (`share_key_aggregation`, used by the swarm): in its
//! own test binary, since once turned on it stays on for the whole process.

use bitcoin::key::{Keypair, PublicKey};
use bitcoin::secp256k1::Secp256k1;
use superscalar_core::musig::{share_key_aggregation, AggregateKey, CosignerKey};
use superscalar_core::secp::op_counts;

fn keys(n: u8, salt: u8) -> Vec<PublicKey> {
    let secp = Secp256k1::new();
    (1..=n)
        .map(|i| {
            PublicKey::new(
                Keypair::from_seckey_slice(
                    &secp,
                    &[
                        i, salt, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
                        7, 7, 7, 7, 7, 7, 7, 1,
                    ],
                )
                .unwrap()
                .public_key(),
            )
        })
        .collect()
}

#[test]
fn shared_aggregates_are_the_aggregates_computed_alone() {
    // Before sharing: every list computed afresh.
    let lists: Vec<Vec<PublicKey>> =
        vec![keys(1, 0), keys(2, 0), keys(5, 0), keys(5, 1), keys(40, 2)];
    let alone: Vec<_> = lists
        .iter()
        .map(|l| AggregateKey::new(l).unwrap().internal_key())
        .collect();
    share_key_aggregation();
    share_key_aggregation(); // idempotent
    for pass in 0..3 {
        let before = op_counts();
        for (l, expected) in lists.iter().zip(&alone) {
            assert_eq!(AggregateKey::new(l).unwrap().internal_key(), *expected);
            // Through the parsed-and-sorted entry point too (the factory's).
            let mut sorted = l.clone();
            superscalar_core::musig::key_sort(&mut sorted);
            let parsed: Vec<CosignerKey> = sorted
                .iter()
                .map(|k| CosignerKey::new(k).unwrap())
                .collect();
            let refs: Vec<&CosignerKey> = parsed.iter().collect();
            assert_eq!(
                AggregateKey::from_sorted(&refs).unwrap().internal_key(),
                *expected
            );
        }
        // Each list aggregated at most once (the first pass; none if another test of this binary
        // turned sharing on before `alone` was computed), then only looked up.
        let computed = op_counts().since(&before).key_agg;
        if pass == 0 {
            assert!(computed <= lists.iter().map(|l| l.len() as u64).sum::<u64>());
        } else {
            assert_eq!(computed, 0, "pass {pass}");
        }
    }
    // A list in another order is another list: another aggregate, computed, not looked up.
    let mut reversed = keys(5, 0);
    reversed.reverse();
    let parsed: Vec<CosignerKey> = reversed
        .iter()
        .map(|k| CosignerKey::new(k).unwrap())
        .collect();
    let refs: Vec<&CosignerKey> = parsed.iter().collect();
    assert_ne!(
        AggregateKey::from_sorted(&refs).unwrap().internal_key(),
        alone[2]
    );
}

#[test]
fn parties_aggregating_at_once_agree() {
    share_key_aggregation();
    let list = keys(64, 9);
    let expected = {
        let mut sorted = list.clone();
        superscalar_core::musig::key_sort(&mut sorted);
        sorted
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| AggregateKey::new(&list).unwrap().internal_key()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.iter().all(|r| *r == results[0]));
    assert!(!expected.is_empty());
}
