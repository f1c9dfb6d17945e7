//! A 1024-client factory: every client signs and verifies, and one client exits alone (its path
//! only) on the embedded chain.

mod common;

use common::*;
use superscalar_chain::Chain;
use superscalar_core::{ClientId, FactoryConfig};

#[test]
fn one_client_of_1024_exits_alone() {
    let h = build(1024, FactoryConfig::regtest());
    let tip_before = h.chain.tip().unwrap().height;
    let path_len = h.clients[700]
        .signed()
        .iter()
        .filter(|s| {
            matches!(
                s.kind,
                superscalar_core::TxKind::Kickoff(_) | superscalar_core::TxKind::State(_)
            )
        })
        .count();
    exit_alone(&h, ClientId(700));
    // Only its path went on chain.
    let mut published = 0;
    for height in tip_before + 1..=h.chain.tip().unwrap().height {
        published += h.chain.block_at(height).unwrap().unwrap().txdata.len() - 1;
    }
    assert_eq!(published, path_len);
    assert_eq!(
        path_len, 14,
        "levels 8,4,2,2,2,2 and the leaf: seven kickoffs and seven states"
    );
}
