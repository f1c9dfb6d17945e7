//! Leaf channels advertise a CLTV delta that covers the factory's worst-case exit, and go on chain
//! when an HTLC's remaining time falls below the current exit time plus a margin.

use bitcoin::key::{Keypair, PublicKey, Secp256k1};
use bitcoin::Amount;
use superscalar_core::channel::deadlines::{
    current_exit_blocks, min_final_cltv_expiry_delta, must_go_onchain, DEFAULT_MARGIN_BLOCKS,
};
use superscalar_core::{ClientId, ClientSpec, Factory, FactoryConfig, FactoryId, FactoryParams};

fn factory(n: usize) -> Factory {
    let secp = Secp256k1::new();
    let key = |i: u8| {
        PublicKey::new(
            Keypair::from_seckey_slice(&secp, &[i + 1; 32])
                .unwrap()
                .public_key(),
        )
    };
    Factory::new(
        FactoryParams {
            id: FactoryId([2; 32]),
            config: FactoryConfig::default(),
            lsp_key: key(200),
            clients: (0..n as u8)
                .map(|i| ClientSpec::new(key(i), Amount::from_sat(100_000)))
                .collect(),
            creation_height: 800_000,
            stock_hashes: Vec::new(),
            opening_msat: Vec::new(),
        }
        .with_stock_secrets(&superscalar_core::revocation::StockSecrets::new([0x5e; 32])),
    )
    .unwrap()
}

#[test]
fn advertised_delta_covers_the_worst_case_exit() {
    let f = factory(64);
    let delta = min_final_cltv_expiry_delta(&f, DEFAULT_MARGIN_BLOCKS);
    assert_eq!(delta, f.ewt_max() + DEFAULT_MARGIN_BLOCKS);
    let odo = f.initial_odometer();
    for c in 0..64 {
        // The first state of every layer is the slowest exit; it never exceeds EWT_max.
        assert!(current_exit_blocks(&f, &odo, ClientId(c)) <= f.ewt_max());
    }
    assert_eq!(current_exit_blocks(&f, &odo, ClientId(0)), f.ewt_max());
}

#[test]
fn channel_goes_on_chain_when_an_htlc_gets_close_to_the_current_exit_time() {
    let f = factory(16);
    let mut odo = f.initial_odometer();
    let client = ClientId(5);
    let tip = 800_100;
    let exit = current_exit_blocks(&f, &odo, client);
    let m = DEFAULT_MARGIN_BLOCKS;
    assert!(!must_go_onchain(&f, &odo, client, tip + exit + m, tip, m));
    assert!(must_go_onchain(
        &f,
        &odo,
        client,
        tip + exit + m - 1,
        tip,
        m
    ));
    assert!(must_go_onchain(&f, &odo, client, tip, tip, m), "expired");
    // Newer states have shorter delays: the same HTLC is safe for longer.
    let leaf = f.tree().leaf_of(client).unwrap();
    odo.advance(f.tree(), leaf).unwrap();
    let shorter = current_exit_blocks(&f, &odo, client);
    assert_eq!(
        shorter,
        exit - u32::from(f.params().config.shape.step_blocks)
    );
    assert!(!must_go_onchain(
        &f,
        &odo,
        client,
        tip + exit + m - 1,
        tip,
        m
    ));
}
