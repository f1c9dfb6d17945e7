//! The factory's absolute timeout T: the inverted policy pays the clients at T and not before;
//! lsp-sweep lets the LSP take the whole factory at T and not one block before.

mod common;

use bitcoin::{Amount, FeeRate, OutPoint};
use common::*;
use superscalar_chain::{Chain, ChainError, RejectReason};
use superscalar_client::bump::fee_coin_child;
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig, NodeId, TimeoutPolicy, TxKind};
use superscalar_wallet::burn_script;

#[test]
fn inverted_timeout_pays_every_client_at_t_and_not_before() {
    let h = build(5, FactoryConfig::regtest());
    let t = h.factory.timeout_height();
    let timeout = h
        .lsp
        .signed(TxKind::Timeout(Slot::NodeInput(NodeId(0))))
        .unwrap()
        .tx
        .clone();
    // Two blocks before T: refused by the mempool, and by the kernel in a block.
    let tip = h.chain.tip().unwrap().height;
    assert!(tip + 2 < t);
    h.chain.mine_blocks(t - 2 - tip, &burn_script()).unwrap();
    let err = h.chain.submit_transaction(&timeout).unwrap_err();
    assert!(
        matches!(err.reject_reason(), Some(RejectReason::NonFinal { .. })),
        "{err}"
    );
    let err = h
        .chain
        .mine_block_with(std::slice::from_ref(&timeout), &burn_script())
        .unwrap_err();
    assert!(matches!(err, ChainError::BlockRejected { .. }), "{err}");
    // The next block is T: accepted and confirmed.
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(h.chain.tip().unwrap().height, t - 1);
    h.chain.submit_transaction(&timeout).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&timeout.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    // Each client gets its capacity, its share of its leaf's stock and its fee coin, and an even
    // share of the tree's fee reserve (the remainder to client 0); miners the tree's fee rate;
    // the LSP nothing.
    let config = &h.factory.params().config;
    let (stock, coin) = (config.stock_per_client, config.client_fee_coin);
    let funding = h
        .factory
        .amounts(&h.factory.initial_version())
        .unwrap()
        .funding_value();
    let fee = config
        .fees
        .tree_fee_rate
        .fee_vb(timeout.vsize() as u64)
        .unwrap();
    let owed: Amount = (0..5u32).map(|i| capacity(i) + stock + coin).sum();
    let surplus = (funding - fee - owed).to_sat();
    assert!(surplus > 0, "the reserve is more than the timeout's fee");
    for i in 0..5u32 {
        let script = h.factory.client_payout_script(ClientId(i));
        let paid: Amount = timeout
            .output
            .iter()
            .filter(|o| o.script_pubkey == script)
            .map(|o| o.value)
            .sum();
        // Leaves hold 2 clients; the last leaf of 5 holds one, so its stock is one share.
        let share = surplus / 5 + if i == 0 { surplus % 5 } else { 0 };
        assert_eq!(
            paid,
            capacity(i) + stock + coin + Amount::from_sat(share),
            "client {i}"
        );
    }
    let out: Amount = timeout.output.iter().map(|o| o.value).sum();
    assert_eq!(
        funding - out,
        fee,
        "miners get the tree's fee rate, no more"
    );
    assert_eq!(
        timeout.output.len(),
        5,
        "one output per client, none for the LSP"
    );
}

#[test]
fn inverted_timeout_of_a_channel_is_paid_with_the_fee_coin_after_an_exit() {
    let h = build(3, FactoryConfig::regtest());
    let c = ClientId(2);
    exit_alone(&h, c);
    let t = h.factory.timeout_height();
    let tip = h.chain.tip().unwrap().height;
    if tip + 1 < t {
        h.chain.mine_blocks(t - 1 - tip, &burn_script()).unwrap();
    }
    let signed = h.clients[2].signed();
    let channel_timeout = signed
        .iter()
        .find(|s| s.kind == TxKind::Timeout(Slot::Channel(c)))
        .unwrap()
        .tx
        .clone();
    // Zero fee: refused alone.
    assert!(matches!(
        h.chain
            .submit_transaction(&channel_timeout)
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::FeeTooLow { .. })
    ));
    let leaf_state = signed
        .iter()
        .rev()
        .find(|s| matches!(s.kind, TxKind::State(_)))
        .unwrap();
    let vout = h
        .factory
        .outputs_of(leaf_state.kind, &h.version0)
        .iter()
        .position(|s| *s == Slot::FeeCoin(c))
        .unwrap() as u32;
    let coin_op = OutPoint::new(leaf_state.tx.compute_txid(), vout);
    let coin = h.chain.get_utxo(&coin_op).unwrap().unwrap().txout;
    let dest = h.factory.client_payout_script(c);
    let child = fee_coin_child(
        &channel_timeout,
        Amount::ZERO,
        (coin_op, coin),
        &h.client_keys[2],
        dest.clone(),
        FeeRate::from_sat_per_vb_u32(3),
    )
    .unwrap();
    h.chain.submit_package(&channel_timeout, &child).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let paid = h
        .chain
        .get_utxo(&OutPoint::new(channel_timeout.compute_txid(), 0))
        .unwrap()
        .unwrap();
    assert_eq!(paid.txout.value, capacity(2));
    assert_eq!(paid.txout.script_pubkey, dest);
}

#[test]
fn lsp_sweep_recovers_the_factory_at_t_and_not_one_block_before() {
    let config = FactoryConfig {
        timeout_policy: TimeoutPolicy::LspSweep,
        ..FactoryConfig::regtest()
    };
    let h = build(8, config);
    let t = h.factory.timeout_height();
    let value = h.factory.funding_output().unwrap().value;
    let dest = burn_script();
    let sweep = h
        .factory
        .lsp_sweep(
            Slot::NodeInput(NodeId(0)),
            &h.version0,
            h.funding,
            value,
            dest,
            Amount::from_sat(500),
            &h.lsp_key,
        )
        .unwrap();
    // No pre-signed timeout transactions under lsp-sweep.
    assert!(h
        .lsp
        .all_signed()
        .all(|s| !matches!(s.kind, TxKind::Timeout(_))));
    let tip = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(t - 2 - tip, &burn_script()).unwrap();
    // Next block is T - 1: one block too early, for the mempool and for the kernel.
    assert!(matches!(
        h.chain
            .submit_transaction(&sweep)
            .unwrap_err()
            .reject_reason(),
        Some(RejectReason::NonFinal { .. })
    ));
    assert!(matches!(
        h.chain
            .mine_block_with(std::slice::from_ref(&sweep), &burn_script()),
        Err(ChainError::BlockRejected { .. })
    ));
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    h.chain.submit_transaction(&sweep).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let out = h
        .chain
        .get_utxo(&OutPoint::new(sweep.compute_txid(), 0))
        .unwrap()
        .unwrap();
    assert_eq!(out.txout.value, value - Amount::from_sat(500));
    assert_eq!(out.height, t);
}

#[test]
fn lsp_sweep_also_takes_state_outputs_after_an_exit_started() {
    let config = FactoryConfig {
        timeout_policy: TimeoutPolicy::LspSweep,
        ..FactoryConfig::regtest()
    };
    let h = build(4, config);
    // Publish the root kickoff and state, then the LSP sweeps a state output at T.
    let root_state = h.lsp.signed(TxKind::State(NodeId(0))).unwrap().tx.clone();
    let kick = h.lsp.signed(TxKind::Kickoff(NodeId(0))).unwrap().tx.clone();
    h.chain.submit_transaction(&kick).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let delay = root_state.input[0].sequence.0 & 0xffff;
    h.chain.mine_blocks(delay, &burn_script()).unwrap();
    h.chain.submit_transaction(&root_state).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let child = h.factory.tree().root().children[0];
    let value = root_state.output[0].value;
    let sweep = h
        .factory
        .lsp_sweep(
            Slot::NodeInput(child),
            &h.version0,
            OutPoint::new(root_state.compute_txid(), 0),
            value,
            burn_script(),
            Amount::from_sat(500),
            &h.lsp_key,
        )
        .unwrap();
    let t = h.factory.timeout_height();
    let tip = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(t - 1 - tip, &burn_script()).unwrap();
    h.chain.submit_transaction(&sweep).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(
        h.chain
            .tx_status(&sweep.compute_txid())
            .unwrap()
            .confirmations(),
        1
    );
    // A kickoff output carries no sweep leaf.
    assert!(h
        .factory
        .lsp_sweep(
            Slot::KickoffOut(NodeId(0)),
            &h.version0,
            OutPoint::null(),
            value,
            burn_script(),
            Amount::from_sat(500),
            &h.lsp_key
        )
        .is_err());
}

#[test]
fn claim_timeouts_collects_each_clients_payout_after_another_client_exited() {
    use superscalar_client::timeout::{claim_timeouts, ClientView, TimeoutError};
    fn view(h: &Harness, c: u32) -> ClientView<'_> {
        ClientView {
            factory: &h.factory,
            client: ClientId(c),
            signed: h.clients[c as usize].signed(),
            funding: h.funding,
            key: &h.client_keys[c as usize],
            version: &h.version0,
        }
    }
    use superscalar_wallet::OnchainWallet;
    let mut h = build(6, FactoryConfig::regtest());
    exit_alone(&h, ClientId(3));
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let t = h.factory.timeout_height();
    let tip = h.chain.tip().unwrap().height;
    if tip + 2 < t {
        h.chain.mine_blocks(t - 2 - tip, &burn_script()).unwrap();
        let err = claim_timeouts(&h.chain, &view(&h, 0), rate, None).unwrap_err();
        assert!(matches!(err, TimeoutError::TooEarly { .. }), "{err}");
        h.chain.mine_blocks(1, &burn_script()).unwrap();
    }
    for c in 0..6u32 {
        let claim = claim_timeouts(&h.chain, &view(&h, c), rate, None).unwrap();
        if c == 2 || c == 3 {
            // The exited leaf: the channel is bumped with the fee coin; the stock waits.
            assert_eq!(claim.sent.len(), 1, "client {c}");
            assert_eq!(claim.unpaid.len(), 1, "client {c}");
        } else {
            assert!(claim.unpaid.is_empty());
        }
    }
    // Client 2 pays for the stock's timeout from its wallet.
    let mut wallet = OnchainWallet::from_seed([0x42; 32]).unwrap();
    let addr = wallet.new_address();
    h.faucet
        .fund(&h.chain, &addr, Amount::from_sat(50_000))
        .unwrap();
    let claim = claim_timeouts(&h.chain, &view(&h, 2), rate, Some(&mut wallet)).unwrap();
    assert_eq!(claim.sent.len(), 1);
    assert!(claim.unpaid.is_empty());
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(h.chain.mempool_len(), 0);
    // Every client but 3 now holds its capacity and its stock share at its payout script.
    let stock = h.factory.params().config.stock_per_client;
    let tip = h.chain.tip().unwrap().height;
    for c in [0u32, 1, 2, 4, 5] {
        let script = h.factory.client_payout_script(ClientId(c));
        let mut got = Amount::ZERO;
        for height in t..=tip {
            let block = h.chain.block_at(height).unwrap().unwrap();
            for tx in &block.txdata {
                got += tx
                    .output
                    .iter()
                    .filter(|o| o.script_pubkey == script)
                    .map(|o| o.value)
                    .sum::<Amount>();
            }
        }
        assert!(got >= capacity(c) + stock, "client {c} got {got}");
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
    let h = build_with(4, FactoryConfig::regtest(), |p| {
        p.clients[0].payout = payout
    });
    let mut st = FactoryState::new(
        h.factory.clone(),
        h.funding,
        Signer::Client(ClientId(0)),
        h.clients[0].signed().iter().cloned(),
    );
    assert!(superscalar_client::funding::check_funding(&h.chain, &mut st).unwrap());
    exit_then_wait_for_t(&h, &st, ClientId(0));
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
            claim_timeouts(&h.chain, &view, FeeRate::from_sat_per_vb_u32(2), None)
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

/// A timeout of a tree output pays the tree's fee rate itself; when the market asks more, the
/// client's own output of it pays for a child, and both confirm.
#[test]
fn a_fee_paying_timeout_is_bumped_from_the_clients_own_output_when_the_market_asks_more() {
    use superscalar_client::timeout::{claim_timeouts, ClientView};
    let h = build(4, FactoryConfig::regtest());
    let t = h.factory.timeout_height();
    let tip = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(t - 1 - tip, &burn_script()).unwrap();
    let view = ClientView {
        factory: &h.factory,
        client: ClientId(1),
        signed: h.clients[1].signed(),
        funding: h.funding,
        key: &h.client_keys[1],
        version: &h.version0,
    };
    let market = FeeRate::from_sat_per_vb_u32(25);
    let claim = claim_timeouts(&h.chain, &view, market, None).unwrap();
    let root = h
        .lsp
        .signed(TxKind::Timeout(Slot::NodeInput(NodeId(0))))
        .unwrap()
        .tx
        .clone();
    assert_eq!(claim.sent, vec![root.compute_txid()]);
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    assert_eq!(h.chain.mempool_len(), 0);
    let tip = h.chain.tip().unwrap().height;
    let block = h.chain.block_at(tip).unwrap().unwrap();
    let child = block
        .txdata
        .iter()
        .find(|tx| tx.input[0].previous_output.txid == root.compute_txid())
        .expect("the child confirmed with the timeout");
    // The child spends client 1's own output and keeps the rest for it; together they pay the
    // market's rate.
    let vout = child.input[0].previous_output.vout as usize;
    assert_eq!(
        root.output[vout].script_pubkey,
        h.factory.client_payout_script(ClientId(1))
    );
    let spent = h.factory.amounts(&h.version0).unwrap().funding_value();
    let fees = spent - root.output.iter().map(|o| o.value).sum::<Amount>()
        + root.output[vout].value
        - child.output[0].value;
    let vsize = (root.vsize() + child.vsize()) as u64;
    assert!(
        fees >= market.fee_vb(vsize).unwrap(),
        "{fees} for {vsize} vB"
    );
    assert_eq!(
        child.output[0].script_pubkey,
        h.factory.fee_coin_script(ClientId(1))
    );
    // At the tree's own rate, no child.
    let h = build(3, FactoryConfig::regtest());
    let t = h.factory.timeout_height();
    let tip = h.chain.tip().unwrap().height;
    h.chain.mine_blocks(t - 1 - tip, &burn_script()).unwrap();
    let view = ClientView {
        factory: &h.factory,
        client: ClientId(0),
        signed: h.clients[0].signed(),
        funding: h.funding,
        key: &h.client_keys[0],
        version: &h.version0,
    };
    let rate = h.factory.params().config.fees.tree_fee_rate;
    let claim = claim_timeouts(&h.chain, &view, rate, None).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let tip = h.chain.tip().unwrap().height;
    let block = h.chain.block_at(tip).unwrap().unwrap();
    assert_eq!(block.txdata.len(), 2, "coinbase and the timeout alone");
    assert_eq!(block.txdata[1].compute_txid(), claim.sent[0]);
}

#[test]
fn the_lsp_sweeps_its_stock_from_a_published_leaf_after_stock_csv_and_before_t() {
    let h = build(4, FactoryConfig::regtest());
    // Client 0's path to its leaf goes on chain.
    let path = original_path(&h, 0);
    let mut exit = superscalar_client::exit::UnilateralExit::new(&path).unwrap();
    finish(&h, &mut exit);
    let leaf = path.last().unwrap();
    let v = &h.version0;
    let slots = h.factory.outputs_of(leaf.kind, v);
    let (vout, slot) = slots
        .iter()
        .enumerate()
        .find(|(_, s)| matches!(s, Slot::Stock(_)))
        .map(|(i, s)| (i as u32, *s))
        .expect("a leaf with stock");
    let outpoint = OutPoint::new(leaf.tx.compute_txid(), vout);
    let value = leaf.tx.output[vout as usize].value;
    let dest = burn_script();
    let fee = Amount::from_sat(400);
    let sweep = h
        .factory
        .stock_sweep(slot, v, outpoint, value, dest.clone(), fee, &h.lsp_key)
        .unwrap();
    // Other slots and other keys are refused.
    assert!(h
        .factory
        .stock_sweep(
            Slot::Channel(ClientId(0)),
            v,
            outpoint,
            value,
            dest.clone(),
            fee,
            &h.lsp_key
        )
        .is_err());
    // A spend with `csv` relative lock fits in the next block once the leaf has `csv`
    // confirmations.
    let csv = u32::from(h.factory.params().config.stock_csv);
    let since = h
        .chain
        .tx_status(&leaf.tx.compute_txid())
        .unwrap()
        .confirmations();
    assert!(since < csv, "the exit left no room to test the delay");
    let err = h.chain.submit_transaction(&sweep).unwrap_err();
    assert!(
        matches!(
            err.reject_reason(),
            Some(RejectReason::SequenceLocked { .. })
        ),
        "{err}"
    );
    h.chain.mine_blocks(csv - since, &burn_script()).unwrap();
    h.chain.submit_transaction(&sweep).unwrap();
    h.chain.mine_blocks(1, &burn_script()).unwrap();
    let out = h
        .chain
        .get_utxo(&OutPoint::new(sweep.compute_txid(), 0))
        .unwrap()
        .unwrap();
    assert_eq!(out.txout.value, value - fee);
    assert!(out.height < h.factory.timeout_height());
    // A client's key cannot sign it: the leaf names the LSP's.
    let forged = h
        .factory
        .stock_sweep(slot, v, outpoint, value, dest, fee, &h.client_keys[0])
        .unwrap();
    assert!(h.chain.submit_transaction(&forged).is_err());
}
