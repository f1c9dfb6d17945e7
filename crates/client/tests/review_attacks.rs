//! Attacks from the second adversarial review of the issue-9 fixes, on the embedded chain: a
//! commitment the LSP revokes after it confirmed is still punished, and a client whose payout is
//! P2WPKH still pays its zero-fee timeouts at T with its fee coin.

mod common;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{Amount, FeeRate, OutPoint, Transaction, Txid};
use common::*;
use superscalar_chain::{Chain, TxStatus};
use superscalar_client::watch::{WatchEvent, Watcher};
use superscalar_client::UnilateralExit;
use superscalar_core::channel::state::Channel;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, TxKind};
use superscalar_wallet::burn_script;

const FEE_RATE: FeeRate = FeeRate::from_sat_per_vb_u32(2);

fn confirmed_tx(h: &Harness, txid: Txid) -> Transaction {
    let TxStatus::Confirmed { height, .. } = h.chain.tx_status(&txid).unwrap() else {
        panic!("{txid} is not confirmed");
    };
    h.chain
        .block_at(height)
        .unwrap()
        .unwrap()
        .txdata
        .into_iter()
        .find(|t| t.compute_txid() == txid)
        .unwrap()
}

/// Client 0's leaf advanced once; the LSP publishes the superseded path, client 0's watcher
/// answers with the newest leaf state, which confirms: the channel's funding output is on chain.
fn leaf_on_chain_with_channel(
    h: &Harness,
    client_msat: u64,
) -> (Channel, Channel, Watcher, OutPoint) {
    let mut s = states(h);
    advance(h, &mut s, 0);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (lsp, client) = open_channel(h, &s.lsp, Slot::Channel(ClientId(0)), 0, client_msat, 9);
    let funding = s.clients[0].outpoint(Slot::Channel(ClientId(0))).unwrap();
    let mut watcher = Watcher::new(
        vec![s.clients[0].exit_path(ClientId(0))],
        vec![(client.clone(), funding)],
        h.factory.client_payout_script(ClientId(0)),
        FEE_RATE,
        tip(h) + 1,
    );
    let newest = s.clients[0]
        .latest(TxKind::State(leaf))
        .unwrap()
        .tx
        .compute_txid();
    let mut attacker = UnilateralExit::new(&original_path(h, 0)).unwrap();
    for _ in 0..80 {
        let _ = attacker.step(&h.chain, None);
        watcher.poll(&h.chain).unwrap();
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&newest).unwrap().confirmations() > 0 {
            break;
        }
    }
    assert!(h.chain.get_utxo(&funding).unwrap().is_some());
    (lsp, client, watcher, funding)
}

/// Attack (malicious LSP, watcher): the LSP confirms its CURRENT commitment (not yet revoked, so
/// the watcher's one look at that block finds nothing), then keeps updating the channel off
/// chain: it pays the client 15,000 sat through an HTLC, the client releases the preimage, and
/// the LSP revokes the commitment that is already on chain. The client now holds the secret of a
/// revoked commitment sitting on chain with the LSP's to_local still under to_self_delay: justice
/// is possible and due. Safe behaviour: once given the newer channel, the watcher punishes it
/// (the client ends with at least its latest balance).
#[test]
fn commitment_revoked_after_it_confirmed_is_punished() {
    let mut h = build(4, FactoryConfig::regtest());
    let client_msat = 20_000_000;
    let (mut lsp, mut client, mut watcher, funding) = leaf_on_chain_with_channel(&h, client_msat);
    // The LSP's latest commitment, confirmed while still current.
    let (commitment, _) = lsp.signed_latest_commitment().unwrap();
    confirm_with_lsp_anchor(&mut h, &commitment);
    assert!(h.chain.get_utxo(&funding).unwrap().is_none());
    // Not revoked yet: the watcher only reports the channel closed (an honest client stops
    // updating it here; this one goes on, and is still protected).
    let events = watcher.poll(&h.chain).unwrap();
    assert!(
        matches!(events.as_slice(), [WatchEvent::ChannelClosed { commitment: c, .. }]
            if *c == commitment.compute_txid()),
        "{events:?}"
    );
    // The channel keeps going off chain: the LSP pays the client, the client fulfills.
    let now = tip(&h);
    let preimage = [7u8; 32];
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let add = lsp.add_htlc(15_000_000, hash, now + 40, now).unwrap();
    client.receive_add(&add, now).unwrap();
    round(&mut lsp, &mut client);
    let f = client.fulfill_htlc(add.id, preimage).unwrap();
    assert_eq!(
        lsp.receive_fulfill(&f).unwrap(),
        preimage,
        "the LSP has the preimage"
    );
    round(&mut client, &mut lsp);
    assert_eq!(client.balance_msat(), client_msat + 15_000_000);
    assert!(
        client.is_revoked_commitment(&commitment),
        "the client holds the secret of the commitment on chain"
    );
    watcher.set_channels(vec![(client.clone(), funding)]);
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let events = watcher.poll(&h.chain).unwrap();
    let justice = events.iter().find_map(|e| match e {
        WatchEvent::Justice { justice, .. } => Some(*justice),
        _ => None,
    });
    let Some(justice) = justice else {
        // Justice was possible: the client's own justice transaction is accepted right now.
        let payout = h.factory.client_payout_script(ClientId(0));
        let possible = client
            .justice_transaction(&commitment, payout, FEE_RATE)
            .unwrap();
        h.chain.submit_transaction(&possible).unwrap();
        panic!(
            "a revoked commitment is on chain, the LSP's to_local still locked for 144 blocks, \
             and the watcher holds its secret: no justice ({events:?}); the client keeps \
             {} sat of its {} sat balance",
            client_msat / 1000,
            client.balance_msat() / 1000
        );
    };
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let justice = confirmed_tx(&h, justice);
    let got: Amount = justice.output.iter().map(|o| o.value).sum();
    assert!(got >= Amount::from_sat(client.balance_msat() / 1000));
}

/// `build` with client 0 paid to `payout` instead of a P2TR of its key.
fn build_with_payout(n: u32, config: FactoryConfig, payout: bitcoin::ScriptBuf) -> Harness {
    use bitcoin::key::PublicKey;
    use superscalar_core::ceremony::run_in_process;
    use superscalar_core::revocation::StockSecrets;
    use superscalar_core::{ClientSpec, Factory, FactoryId, FactoryParams};
    use superscalar_wallet::{Faucet, OnchainWallet};
    const SEED: [u8; 32] = [0x5e; 32];
    let chain = superscalar_chain::EmbeddedChain::in_memory().unwrap();
    let mut faucet = Faucet::new(&chain, 2).unwrap();
    let lsp_key = keypair(0xffff_0000);
    let client_keys: Vec<_> = (0..n).map(|i| keypair(i + 1)).collect();
    let mut clients: Vec<ClientSpec> = client_keys
        .iter()
        .enumerate()
        .map(|(i, k)| ClientSpec::new(PublicKey::new(k.public_key()), capacity(i as u32)))
        .collect();
    clients[0].payout = payout;
    let params = FactoryParams {
        id: FactoryId([0xa0 + n as u8; 32]),
        config,
        lsp_key: PublicKey::new(lsp_key.public_key()),
        clients,
        creation_height: chain.tip().unwrap().height,
        stock_hashes: Vec::new(),
    }
    .with_stock_secrets(&StockSecrets::new(SEED));
    let factory = std::sync::Arc::new(Factory::new(params).unwrap());
    let funding_out = factory.funding_output().unwrap();
    let mut lsp_wallet = OnchainWallet::from_seed([0x15; 32]).unwrap();
    let addr = lsp_wallet.new_address();
    faucet
        .fund(
            &chain,
            &addr,
            funding_out.value + Amount::from_sat(1_000_000),
        )
        .unwrap();
    lsp_wallet.sync(&chain).unwrap();
    let funding_tx = lsp_wallet
        .build_payment(&funding_out.script_pubkey, funding_out.value, FEE_RATE)
        .unwrap();
    let vout = funding_tx
        .output
        .iter()
        .position(|o| *o == funding_out)
        .unwrap() as u32;
    let funding = OutPoint::new(funding_tx.compute_txid(), vout);
    let tip = chain.tip().unwrap().height;
    let (lsp, clients) = run_in_process(&factory, lsp_key, &client_keys, funding, tip).unwrap();
    let funding_tx = lsp.release_funding(funding_tx).unwrap();
    chain.submit_transaction(&funding_tx).unwrap();
    chain.mine_blocks(1, &burn_script()).unwrap();
    Harness {
        chain,
        faucet,
        lsp_wallet,
        lsp_key,
        client_keys,
        funding_tx,
        funding,
        lsp,
        clients,
        stock_secrets: StockSecrets::new(SEED),
        version0: factory.initial_version(),
        factory,
    }
}

/// Attack surface (finding 9's fix meets finding 8's): a client registers a standard P2WPKH
/// payout of its own factory key, which `Factory::new` now accepts. Its fee coin (and every
/// change `claim_timeouts` chains) is then paid to that P2WPKH, but `fee_coin_child` signs it
/// as a key-path P2TR. Safe behaviour: the client exits, and at T its zero-fee channel timeout
/// confirms (with its fee coin or, failing that, its wallet) before the LSP's sweep leaf can
/// take the output.
#[test]
fn a_client_with_a_p2wpkh_payout_still_collects_its_timeout_at_t() {
    use superscalar_client::timeout::{claim_timeouts, ClientView};
    use superscalar_core::advance::FactoryState;
    use superscalar_core::Signer;
    let key = keypair(1);
    let wpkh = bitcoin::CompressedPublicKey(key.public_key()).wpubkey_hash();
    let payout = bitcoin::ScriptBuf::new_p2wpkh(&wpkh);
    let h = build_with_payout(4, FactoryConfig::regtest(), payout);
    let mut st = FactoryState::new(
        h.factory.clone(),
        h.funding,
        Signer::Client(ClientId(0)),
        h.clients[0].signed().iter().cloned(),
    );
    assert!(superscalar_client::funding::check_funding(&h.chain, &mut st).unwrap());
    let mut exit = UnilateralExit::new(&st.exit_path(ClientId(0))).unwrap();
    finish(&h, &mut exit);
    let t = h.factory.timeout_height();
    let now = tip(&h);
    if now + 1 < t {
        h.chain.mine_blocks(t - 1 - now, &burn_script()).unwrap();
    }
    let signed = st.signed();
    let view = ClientView {
        factory: &h.factory,
        client: ClientId(0),
        signed: &signed,
        funding: h.funding,
        key: &h.client_keys[0],
        version: st.version(),
    };
    let timeout = signed
        .iter()
        .find(|x| x.kind == TxKind::Timeout(Slot::Channel(ClientId(0))))
        .unwrap()
        .tx
        .compute_txid();
    let mut results = Vec::new();
    for _ in 0..4 {
        results.push(format!(
            "{:?}",
            claim_timeouts(&h.chain, &view, FEE_RATE, None)
        ));
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if h.chain.tx_status(&timeout).unwrap().confirmations() > 0 {
            break;
        }
    }
    assert!(
        h.chain.tx_status(&timeout).unwrap().confirmations() > 0,
        "the channel timeout never confirmed at T: {results:#?}"
    );
}
