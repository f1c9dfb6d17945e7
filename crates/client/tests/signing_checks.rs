//! What a client checks before it signs and before it counts a factory as open, each played as
//! the attack it defeats on the embedded chain: a factory whose timeout is already past, heights
//! that overflow, a funding outpoint that is not the factory's output, a payout script that would
//! make other clients' exits unrelayable, and updates that would leave dust.

mod common;

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::key::PublicKey;
use bitcoin::{Amount, OutPoint, ScriptBuf, WitnessVersion};
use common::*;
use superscalar_chain::Chain;
use superscalar_client::funding::{check_funding, FundingError};
use superscalar_core::advance::{AdvanceError, FactoryState, SaleTerms};
use superscalar_core::ceremony::{run_in_process, CeremonyError, ClientCeremony};
use superscalar_core::factory::Slot;
use superscalar_core::revocation::StockSecrets;
use superscalar_core::shape::ShapeError;
use superscalar_core::{
    ClientId, ClientSpec, Factory, FactoryConfig, FactoryError, FactoryId, FactoryParams, LeafKind,
    NodeId, Signer, TimeoutPolicy, TxKind,
};
use superscalar_wallet::burn_script;

fn params(n: u32, config: FactoryConfig, creation_height: u32) -> FactoryParams {
    FactoryParams {
        id: FactoryId([0x33; 32]),
        config,
        lsp_key: PublicKey::new(keypair(0xffff_0000).public_key()),
        clients: (0..n)
            .map(|i| ClientSpec::new(PublicKey::new(keypair(i + 1).public_key()), capacity(i)))
            .collect(),
        creation_height,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&StockSecrets::new([0x5e; 32]))
}

#[test]
fn a_client_refuses_to_sign_a_factory_whose_timeout_is_past() {
    // The attack: under lsp-sweep the LSP says the factory was created at height 0, so T is
    // already below the tip and it could sweep the funding output as soon as it confirms.
    let h = build(4, FactoryConfig::regtest());
    let tip = tip(&h);
    let config = FactoryConfig {
        timeout_policy: TimeoutPolicy::LspSweep,
        ..FactoryConfig::regtest()
    };
    let forged = Arc::new(Factory::new(params(4, config.clone(), 0)).unwrap());
    assert!(
        forged.timeout_height() < tip,
        "the attack's T is in the past"
    );
    let funding = OutPoint::new(h.funding_tx.compute_txid(), 0);
    for c in 0..4 {
        let err = ClientCeremony::new(
            Arc::clone(&forged),
            ClientId(c),
            h.client_keys[c as usize],
            funding,
            tip,
        )
        .unwrap_err();
        assert!(
            matches!(err, CeremonyError::Factory(FactoryError::Heights(_))),
            "{err}"
        );
    }
    // A creation height far in the future (funds locked for years) is refused too.
    let future = Arc::new(Factory::new(params(4, config.clone(), tip + 1_000)).unwrap());
    assert!(matches!(
        ClientCeremony::new(future, ClientId(0), h.client_keys[0], funding, tip),
        Err(CeremonyError::Factory(FactoryError::Heights(_)))
    ));
    // Within the tolerance of a block or two, honest views that differ still agree.
    let honest = Arc::new(Factory::new(params(4, config, tip - 2)).unwrap());
    ClientCeremony::new(honest, ClientId(0), h.client_keys[0], funding, tip).unwrap();
}

#[test]
fn heights_and_budgets_that_overflow_are_errors_not_panics() {
    for creation in [u32::MAX, u32::MAX - 10, 499_999_990, 500_000_000] {
        let err = Factory::new(params(4, FactoryConfig::regtest(), creation)).unwrap_err();
        assert!(matches!(err, FactoryError::Heights(_)), "{creation}: {err}");
    }
    let huge_budget = FactoryConfig {
        confirmation_budget: u32::MAX / 2,
        ewt_ceiling: u32::MAX,
        ..FactoryConfig::regtest()
    };
    assert!(Factory::new(params(4, huge_budget, 100)).is_err());
    let huge_periods = FactoryConfig {
        active_blocks: u32::MAX,
        dying_blocks: u32::MAX,
        ..FactoryConfig::regtest()
    };
    assert!(matches!(
        Factory::new(params(4, huge_periods, 100)),
        Err(FactoryError::Heights(_))
    ));
    // A stock delay inside the confirmation budget would let the LSP's delayed leaf win the race
    // against a buyer's sale transaction.
    let short_csv = FactoryConfig {
        stock_csv: 2,
        ..FactoryConfig::regtest()
    };
    assert!(matches!(
        Factory::new(params(4, short_csv, 100)),
        Err(FactoryError::Shape(ShapeError::Amount(_)))
    ));
}

#[test]
fn updates_too_close_to_the_timeout_are_refused() {
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (proposal, _lsp) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
    // From the height at which a new state's worst-case exit no longer ends before T.
    let late = h.factory.timeout_height() - h.factory.ewt_max();
    let err = s.clients[0]
        .accept(&proposal, ClientId(0), h.client_keys[0], late)
        .unwrap_err();
    assert!(
        matches!(err, AdvanceError::Factory(FactoryError::Heights(_))),
        "{err}"
    );
    // Nothing changed: the same proposal is accepted one block earlier.
    s.clients[0]
        .accept(&proposal, ClientId(0), h.client_keys[0], late - 1)
        .unwrap();
}

#[test]
fn a_client_opens_the_factory_only_on_its_own_view_of_the_funding_output() {
    let h = build(4, FactoryConfig::regtest());
    // The attack: the LSP names a confirmed outpoint that is not the factory's output (here the
    // change of its funding transaction, which pays the LSP's wallet).
    let wrong = (0..h.funding_tx.output.len() as u32)
        .map(|v| OutPoint::new(h.funding_tx.compute_txid(), v))
        .find(|op| *op != h.funding)
        .unwrap();
    let signed = h.clients[0].signed().to_vec();
    let mut lied_to = FactoryState::new(
        Arc::clone(&h.factory),
        wrong,
        Signer::Client(ClientId(0)),
        signed.clone(),
    );
    let err = check_funding(&h.chain, &mut lied_to).unwrap_err();
    assert!(
        matches!(
            err,
            FundingError::Refused(AdvanceError::WrongFunding { .. })
        ),
        "{err}"
    );
    assert!(!lied_to.is_open());
    // Not open: no update is accepted and none can be proposed.
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let (proposal, _lsp) = s.lsp.propose(leaf, &h.lsp_key).unwrap();
    assert!(matches!(
        lied_to.accept(&proposal, ClientId(0), h.client_keys[0], tip(&h)),
        Err(AdvanceError::NotOpen)
    ));
    // An output the funding transaction does not have is refused as well.
    let mut no_such = FactoryState::new(
        Arc::clone(&h.factory),
        OutPoint::new(h.funding_tx.compute_txid(), 99),
        Signer::Client(ClientId(0)),
        signed.clone(),
    );
    assert!(matches!(
        check_funding(&h.chain, &mut no_such),
        Err(FundingError::Refused(AdvanceError::WrongFunding {
            got: None,
            ..
        }))
    ));
    // An outpoint that is not on chain (never broadcast, or not yet confirmed) opens nothing.
    let missing = OutPoint::new(bitcoin::Txid::from_byte_array([0x42; 32]), 0);
    let mut pending = FactoryState::new(
        Arc::clone(&h.factory),
        missing,
        Signer::Client(ClientId(0)),
        signed.clone(),
    );
    assert!(!check_funding(&h.chain, &mut pending).unwrap());
    assert!(!pending.is_open());
    // The right outpoint, confirmed, opens it.
    let mut honest = FactoryState::new(
        Arc::clone(&h.factory),
        h.funding,
        Signer::Client(ClientId(0)),
        signed,
    );
    assert!(check_funding(&h.chain, &mut honest).unwrap());
    assert!(honest.is_open());
}

#[test]
fn a_funding_output_seen_with_another_script_or_amount_or_unconfirmed_is_refused() {
    let h = build(2, FactoryConfig::regtest());
    let mut st = FactoryState::new(
        Arc::clone(&h.factory),
        h.funding,
        Signer::Client(ClientId(0)),
        h.clients[0].signed().to_vec(),
    );
    let good = h.factory.funding_output().unwrap();
    let mut less = good.clone();
    less.value = Amount::from_sat(1_000);
    let mut other = good.clone();
    other.script_pubkey = burn_script();
    for bad in [&less, &other] {
        assert!(matches!(
            st.confirm_funding(Some(bad), Some(tip(&h))),
            Err(AdvanceError::WrongFunding { .. })
        ));
    }
    assert!(matches!(
        st.confirm_funding(None, Some(tip(&h))),
        Err(AdvanceError::WrongFunding { .. })
    ));
    assert!(matches!(
        st.confirm_funding(Some(&good), None),
        Err(AdvanceError::NotOpen)
    ));
    // Confirmed too late (the LSP held the funding back until near T): refused.
    let created = h.factory.params().creation_height;
    let active_end = created + h.factory.params().config.active_blocks;
    for late in [active_end, h.factory.timeout_height() - 2, u32::MAX] {
        assert!(matches!(
            st.confirm_funding(Some(&good), Some(late)),
            Err(AdvanceError::Factory(FactoryError::Heights(_)))
        ));
    }
    assert!(!st.is_open());
    st.confirm_funding(Some(&good), Some(active_end - 1))
        .unwrap();
    assert!(st.is_open());
}

#[test]
fn only_standard_payout_scripts_are_accepted() {
    let with_payout = |payout: ScriptBuf| {
        let mut p = params(4, FactoryConfig::regtest(), 100);
        p.clients[1].payout = payout;
        Factory::new(p)
    };
    // Built by hand: rust-bitcoin refuses to make some of these programs.
    let program = |v: WitnessVersion, len: usize| {
        let mut bytes = vec![
            v.to_num() + if v.to_num() > 0 { 0x50 } else { 0 },
            len as u8,
        ];
        bytes.extend(std::iter::repeat_n(7u8, len));
        let script = ScriptBuf::from_bytes(bytes);
        assert!(script.is_witness_program());
        script
    };
    // The attack: witness version 0 with a 25-byte program is a valid witness program but not a
    // standard output, so every transaction paying it (the leaf state, the timeouts above it)
    // would not relay, and the other client of the leaf could not exit.
    for bad in [
        program(WitnessVersion::V0, 25),
        program(WitnessVersion::V1, 20),
        program(WitnessVersion::V2, 32),
        ScriptBuf::new_op_return([1u8; 8]),
        ScriptBuf::new_p2a(),
        ScriptBuf::from_bytes(vec![0x76, 0xa9, 0x14]),
        ScriptBuf::new(),
    ] {
        assert!(
            matches!(
                with_payout(bad.clone()),
                Err(FactoryError::Shape(ShapeError::Amount(_)))
            ),
            "{bad:?} accepted"
        );
    }
    for good in [
        program(WitnessVersion::V0, 20),
        program(WitnessVersion::V0, 32),
        program(WitnessVersion::V1, 32),
    ] {
        with_payout(good).unwrap();
    }
}

#[test]
fn standard_payout_scripts_of_every_kind_exit_on_chain() {
    // A P2WPKH and a P2WSH payout in the same leaf as a P2TR one: every timeout relays.
    let chain = superscalar_chain::testkit::TestChain::from_env();
    let mut faucet = superscalar_wallet::Faucet::new(&chain, 2).unwrap();
    let mut p = params(4, FactoryConfig::regtest(), chain.tip().unwrap().height);
    p.clients[0].payout = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([3; 20]));
    p.clients[1].payout = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([4; 32]));
    let factory = Arc::new(Factory::new(p).unwrap());
    let out = factory.funding_output().unwrap();
    let addr =
        bitcoin::Address::from_script(&out.script_pubkey, bitcoin::Network::Regtest).unwrap();
    let funding_tx = faucet.fund(&chain, &addr, out.value).unwrap();
    let vout = funding_tx.output.iter().position(|o| *o == out).unwrap() as u32;
    let op = OutPoint::new(funding_tx.compute_txid(), vout);
    let lsp = keypair(0xffff_0000);
    let keys: Vec<_> = (0..4).map(|i| keypair(i + 1)).collect();
    let tip = chain.tip().unwrap().height;
    let (_, clients) = run_in_process(&factory, lsp, &keys, op, tip).unwrap();
    chain
        .mine_blocks(
            factory.timeout_height() - 1 - chain.tip().unwrap().height,
            &burn_script(),
        )
        .unwrap();
    // At T, the root's timeout pays every client to its own script, and relays.
    let root = clients[0]
        .signed()
        .iter()
        .find(|s| s.kind == TxKind::Timeout(Slot::NodeInput(NodeId(0))))
        .map(|s| s.tx.clone())
        .expect("every client holds the funding output's timeout");
    chain.submit_transaction(&root).unwrap();
    chain.mine_blocks(1, &burn_script()).unwrap();
    assert!(
        chain
            .tx_status(&root.compute_txid())
            .unwrap()
            .confirmations()
            > 0
    );
    let paid: Vec<ScriptBuf> = root
        .output
        .iter()
        .map(|o| o.script_pubkey.clone())
        .collect();
    assert!(paid.iter().any(|s| s.is_p2wpkh()));
    assert!(paid.iter().any(|s| s.is_p2wsh()));
}

#[test]
fn a_sale_that_would_leave_dust_shares_in_the_stock_is_refused() {
    // PS leaves of 2: a stock shared by two clients; the attack leaves ~330 sat in it, so its
    // timeout would pay each client ~165 sat, which does not relay.
    let config = FactoryConfig {
        shape: superscalar_core::Shape {
            arity: vec![2],
            leaf: LeafKind::PseudoSpilman { arity: 2 },
            static_levels: 0,
            ..FactoryConfig::regtest().shape
        },
        ..FactoryConfig::regtest()
    };
    let h = build(8, config);
    let mut s = states(&h);
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    let value = h
        .factory
        .amounts(s.lsp.version())
        .unwrap()
        .value(&h.factory, Slot::Stock(stock));
    let before = s.lsp.version().clone();
    let greedy = SaleTerms {
        buyer: ClientId(0),
        stock,
        amount: value - Amount::from_sat(1_000),
    };
    let err = s.lsp.propose_sale(greedy, &h.lsp_key).unwrap_err();
    assert!(
        matches!(
            err,
            AdvanceError::Factory(FactoryError::Dust { .. }) | AdvanceError::InvalidSale(_)
        ),
        "{err}"
    );
    assert_eq!(s.lsp.version(), &before);
    // The same on a DW advance with a merged sale, refused by the LSP and by each client.
    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    let leaf = h.factory.tree().leaf_of(ClientId(0)).unwrap();
    let stock = h.factory.stock_of(ClientId(0)).unwrap();
    let value = h
        .factory
        .amounts(s.lsp.version())
        .unwrap()
        .value(&h.factory, Slot::Stock(stock));
    let greedy = SaleTerms {
        buyer: ClientId(0),
        stock,
        amount: value - Amount::from_sat(700),
    };
    assert!(s.lsp.propose_with(leaf, Some(greedy), &h.lsp_key).is_err());
    // A client shown such a proposal (signed by the LSP) refuses it too.
    let fair = SaleTerms {
        amount: Amount::from_sat(10_000),
        ..greedy
    };
    let (mut proposal, _lsp) = s.lsp.propose_with(leaf, Some(fair), &h.lsp_key).unwrap();
    proposal.sale = Some(greedy);
    proposal.sign(&h.lsp_key);
    let err = s.clients[0]
        .accept(&proposal, ClientId(0), h.client_keys[0], tip(&h))
        .unwrap_err();
    assert!(
        matches!(
            err,
            AdvanceError::Factory(FactoryError::Dust { .. }) | AdvanceError::InvalidSale(_)
        ),
        "{err}"
    );
    // And the client's state is unchanged: the fair proposal is still acceptable.
    let (fair_proposal, _) = {
        s.lsp.abandon();
        s.lsp.propose_with(leaf, Some(fair), &h.lsp_key).unwrap()
    };
    s.clients[0]
        .accept(&fair_proposal, ClientId(0), h.client_keys[0], tip(&h))
        .unwrap();
}

/// Malicious LSP: the ceremony checks heights against the client's tip, but the funding
/// transaction is the LSP's to release. The LSP signs at height h, withholds the funding until
/// a block before T, then confirms it. `check_funding` opens the factory (right script, right
/// amount, confirmed) and channels can be set up and take payments, though no exit can
/// complete before T (EWT_max blocks are needed): at T the timeout transactions (or, under
/// `LspSweep`, the LSP alone) take the outputs. A client must not count a factory as open when
/// its funding confirmed too late for a worst-case exit before T.
#[test]
fn a_factory_funded_just_before_its_timeout_is_not_open() {
    use bitcoin::{Amount, FeeRate, OutPoint};
    use std::sync::Arc;
    use superscalar_core::advance::FactoryState;
    use superscalar_core::ceremony::run_in_process;
    use superscalar_core::revocation::StockSecrets;
    use superscalar_core::{ClientSpec, Factory, FactoryId, FactoryParams, Signer};
    use superscalar_wallet::{Faucet, OnchainWallet};

    let chain = superscalar_chain::testkit::TestChain::from_env();
    let mut faucet = Faucet::new(&chain, 2).unwrap();
    let lsp_key = keypair(0xffff_0000);
    let client_keys: Vec<_> = (0..2).map(|i| keypair(i + 1)).collect();
    let secrets = StockSecrets::new([0x5e; 32]);
    let params = FactoryParams {
        id: FactoryId([0x77; 32]),
        config: FactoryConfig {
            timeout_policy: superscalar_core::TimeoutPolicy::LspSweep,
            ..FactoryConfig::regtest()
        },
        lsp_key: bitcoin::PublicKey::new(lsp_key.public_key()),
        clients: client_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                ClientSpec::new(bitcoin::PublicKey::new(k.public_key()), capacity(i as u32))
            })
            .collect(),
        creation_height: chain.tip().unwrap().height,
        stock_hashes: Vec::new(),
        opening_msat: Vec::new(),
    }
    .with_stock_secrets(&secrets);
    let factory = Arc::new(Factory::new(params).unwrap());
    let out = factory.funding_output().unwrap();
    let mut wallet = OnchainWallet::from_seed([0x15; 32]).unwrap();
    let addr = wallet.new_address();
    faucet
        .fund(&chain, &addr, out.value + Amount::from_sat(1_000_000))
        .unwrap();
    wallet.sync(&chain).unwrap();
    let funding_tx = wallet
        .build_payment(
            &out.script_pubkey,
            out.value,
            FeeRate::from_sat_per_vb_u32(2),
        )
        .unwrap();
    let vout = funding_tx.output.iter().position(|o| *o == out).unwrap() as u32;
    let funding = OutPoint::new(funding_tx.compute_txid(), vout);
    let tip0 = chain.tip().unwrap().height;
    let (lsp, clients) = run_in_process(&factory, lsp_key, &client_keys, funding, tip0).unwrap();
    let funding_tx = lsp.release_funding(funding_tx).unwrap();
    // The LSP sits on the funding until two blocks before T.
    let t = factory.timeout_height();
    let now = chain.tip().unwrap().height;
    chain.mine_blocks(t - 3 - now, &burn_script()).unwrap();
    chain.submit_transaction(&funding_tx).unwrap();
    chain.mine_blocks(1, &burn_script()).unwrap();
    let tip = chain.tip().unwrap().height;
    assert!(tip + factory.ewt_max() > t, "no exit can complete before T");
    let mut st = FactoryState::new(
        factory.clone(),
        funding,
        Signer::Client(clients[0].client()),
        clients[0].signed().iter().cloned(),
    );
    let opened = superscalar_client::funding::check_funding(&chain, &mut st);
    assert!(
        !matches!(opened, Ok(true)) && !st.is_open(),
        "the factory counts as open at height {tip}, {} blocks before T = {t} (EWT_max {})",
        t - tip,
        factory.ewt_max()
    );
}
