//! Channel parameter and HTLC expiry bounds on the embedded chain: a peer cannot announce a dust
//! limit that trims the other side's output, a `to_self_delay` that locks funds past the factory's
//! timeout, nor an HTLC expiring as a timestamp, past the factory's life, or too soon for its exit.

mod common;

use bitcoin::hashes::{sha256, Hash};
use common::*;
use superscalar_chain::Chain;
use superscalar_client::UnilateralExit;
use superscalar_core::advance::FactoryState;
use superscalar_core::channel::deadlines::{min_final_cltv_expiry_delta, DEFAULT_MARGIN_BLOCKS};
use superscalar_core::channel::state::{
    Channel, ChannelError, ChannelLimits, UpdateAddHtlc, LOCKTIME_THRESHOLD,
};
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, FactoryConfig};

/// Like `open_channel`, with each side's own limits: (LSP side, client side), or the error of
/// the first side that refuses.
fn open_with(
    h: &Harness,
    st: &FactoryState,
    client: u32,
    client_msat: u64,
    lsp_limits: ChannelLimits,
    client_limits: ChannelLimits,
) -> Result<(Channel, Channel), ChannelError> {
    let slot = Slot::Channel(ClientId(client));
    let key = h.factory.signing_key_at(slot, st.version()).unwrap();
    let value = h
        .factory
        .amounts(st.version())
        .unwrap()
        .value(&h.factory, slot);
    let outpoint = st.outpoint(slot).unwrap();
    let setup = |we_opened, our| st.channel_setup(slot, we_opened, our).unwrap();
    let ls = channel_secrets(7, h.lsp_key);
    let cs = channel_secrets(57, h.client_keys[client as usize]);
    let la = Channel::announcement(&ls, &key, outpoint);
    let ca = Channel::announcement(&cs, &key, outpoint);
    let mut lsp = Channel::new(
        setup(true, value.to_sat() * 1000 - client_msat),
        ls,
        lsp_limits,
        ca,
        client_limits,
    )?;
    let mut cl = Channel::new(setup(false, client_msat), cs, client_limits, la, lsp_limits)?;
    round(&mut lsp, &mut cl);
    Ok((lsp, cl))
}

fn factory_limits(h: &Harness) -> ChannelLimits {
    ChannelLimits::for_factory(&h.factory, tip(h), DEFAULT_MARGIN_BLOCKS).unwrap()
}

/// The regtest factory with a life long enough for HTLCs with the exit time as their delta.
fn long_config() -> FactoryConfig {
    FactoryConfig {
        active_blocks: 400,
        ..FactoryConfig::regtest()
    }
}

fn hash(n: u8) -> [u8; 32] {
    sha256::Hash::hash(&[n; 32]).to_byte_array()
}

#[test]
fn limits_for_a_factory_follow_its_timeout_and_exit_time() {
    let h = build(4, long_config());
    let l = factory_limits(&h);
    let delta = min_final_cltv_expiry_delta(&h.factory, DEFAULT_MARGIN_BLOCKS);
    assert_eq!(delta, h.factory.ewt_max() + DEFAULT_MARGIN_BLOCKS);
    assert_eq!(l.min_cltv_expiry_delta, delta);
    assert_eq!(l.max_cltv_expiry, h.factory.timeout_height() - delta);
    let room = h.factory.timeout_height() - delta - tip(&h);
    assert_eq!(u32::from(l.max_to_self_delay), room.min(2016));
    assert!(l.to_self_delay >= 1 && l.to_self_delay <= l.max_to_self_delay);
    // A factory that times out before a channel could exit has no channel limits.
    let late = h.factory.timeout_height() - delta;
    assert!(matches!(
        ChannelLimits::for_factory(&h.factory, late, DEFAULT_MARGIN_BLOCKS),
        Err(ChannelError::FactoryTooShort { .. })
    ));
}

#[test]
fn an_htlc_expiring_as_a_timestamp_is_refused_on_both_sides_and_changes_nothing() {
    let h = build(4, long_config());
    let s = states(&h);
    let t = tip(&h);
    // Even with the permissive default limits (the confirmed attack).
    for limits in [ChannelLimits::default(), factory_limits(&h)] {
        let (mut lsp, mut cl) = open_with(&h, &s.lsp, 1, 20_000_000, limits, limits).unwrap();
        let (before_l, before_c) = (lsp.summary(), cl.summary());
        assert_eq!(
            lsp.add_htlc(1_000_000, hash(1), LOCKTIME_THRESHOLD, t),
            Err(ChannelError::ExpiryIsTimestamp(LOCKTIME_THRESHOLD))
        );
        let forged = UpdateAddHtlc {
            id: 0,
            amount_msat: 1_000_000,
            payment_hash: hash(1),
            cltv_expiry: LOCKTIME_THRESHOLD,
        };
        assert_eq!(
            cl.receive_add(&forged, t),
            Err(ChannelError::ExpiryIsTimestamp(LOCKTIME_THRESHOLD))
        );
        assert_eq!(lsp.summary(), before_l);
        assert_eq!(cl.summary(), before_c);
    }
}

#[test]
fn an_htlc_expiring_past_the_factory_timeout_minus_its_exit_is_refused_at_one_block_over() {
    let h = build(4, long_config());
    let s = states(&h);
    let t = tip(&h);
    let limits = factory_limits(&h);
    let max = limits.max_cltv_expiry;
    let (mut lsp, mut cl) = open_with(&h, &s.lsp, 1, 20_000_000, limits, limits).unwrap();
    let (before_l, before_c) = (lsp.summary(), cl.summary());
    // Offering: one block over is refused, both ways.
    let over = ChannelError::ExpiryTooLate {
        expiry: max + 1,
        max,
    };
    assert_eq!(
        lsp.add_htlc(1_000_000, hash(2), max + 1, t),
        Err(over.clone())
    );
    assert_eq!(
        cl.add_htlc(1_000_000, hash(2), max + 1, t),
        Err(over.clone())
    );
    // Receiving: a peer ignoring the bound is refused too.
    let forged = UpdateAddHtlc {
        id: 0,
        amount_msat: 1_000_000,
        payment_hash: hash(2),
        cltv_expiry: max + 1,
    };
    assert_eq!(cl.receive_add(&forged, t), Err(over.clone()));
    assert_eq!(lsp.receive_add(&forged, t), Err(over));
    assert_eq!(lsp.summary(), before_l);
    assert_eq!(cl.summary(), before_c);
    // Exactly at the bound: accepted and committed.
    let add = lsp.add_htlc(1_000_000, hash(2), max, t).unwrap();
    cl.receive_add(&add, t).unwrap();
    round(&mut lsp, &mut cl);
    assert_eq!(cl.pending_htlcs(), 1);
    assert_eq!(lsp.balance_msat(), before_l.balance_msat - 1_000_000);
}

#[test]
fn a_received_htlc_with_less_than_the_exit_time_left_is_refused() {
    let h = build(4, long_config());
    let s = states(&h);
    let t = tip(&h);
    let limits = factory_limits(&h);
    let delta = limits.min_cltv_expiry_delta;
    assert!(delta > ChannelLimits::default().min_cltv_expiry_delta);
    let (mut lsp, mut cl) = open_with(&h, &s.lsp, 2, 20_000_000, limits, limits).unwrap();
    let before = cl.summary();
    // The LSP forwards with the default delta of 18: the client refuses it.
    let forged = UpdateAddHtlc {
        id: 0,
        amount_msat: 1_000_000,
        payment_hash: hash(3),
        cltv_expiry: t + delta - 1,
    };
    assert_eq!(
        cl.receive_add(&forged, t),
        Err(ChannelError::ExpiryTooSoon {
            expiry: t + delta - 1,
            height: t,
            delta,
        })
    );
    assert_eq!(cl.summary(), before);
    // The LSP itself refuses to offer it; at exactly the delta it goes through.
    assert!(matches!(
        lsp.add_htlc(1_000_000, hash(3), t + delta - 1, t),
        Err(ChannelError::ExpiryTooSoon { .. })
    ));
    let add = lsp.add_htlc(1_000_000, hash(3), t + delta, t).unwrap();
    cl.receive_add(&add, t).unwrap();
    round(&mut lsp, &mut cl);
    assert_eq!(cl.pending_htlcs(), 1);
}

#[test]
fn a_dust_limit_above_the_lsp_balance_is_refused_and_the_lsp_output_reaches_the_chain() {
    let h = build(4, long_config());
    let s = states(&h);
    let client = 3;
    let cap_msat = capacity(client).to_sat() * 1000;
    // The LSP keeps 10,000 sat; the client announces a dust limit one sat above it.
    let lsp_msat = 10_000_000;
    let limits = factory_limits(&h);
    let greedy = ChannelLimits {
        dust_limit: bitcoin::Amount::from_sat(10_001),
        ..limits
    };
    assert_eq!(
        open_with(&h, &s.lsp, client, cap_msat - lsp_msat, limits, greedy).err(),
        Some(ChannelError::DustLimitOutOfRange {
            dust_limit: 10_001,
            min: 330,
            max: 546,
        })
    );
    // One sat above the largest accepted is refused; the largest is accepted, and the client's
    // commitment then pays the LSP its 10,000 sat on chain.
    let over = ChannelLimits {
        dust_limit: bitcoin::Amount::from_sat(547),
        ..limits
    };
    assert!(open_with(&h, &s.lsp, client, cap_msat - lsp_msat, limits, over).is_err());
    let top = ChannelLimits {
        dust_limit: bitcoin::Amount::from_sat(546),
        ..limits
    };
    let (_lsp, cl) = open_with(&h, &s.lsp, client, cap_msat - lsp_msat, limits, top).unwrap();
    let (commitment, _) = cl.signed_latest_commitment().unwrap();
    let mut exit =
        UnilateralExit::new(&s.clients[client as usize].exit_path(ClientId(client))).unwrap();
    let mut hm = h;
    finish(&hm, &mut exit);
    confirm_with_lsp_anchor(&mut hm, &commitment);
    let txid = commitment.compute_txid();
    let lsp_out = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == 10_000)
        .expect("the LSP's output is in the client's commitment");
    let utxo = hm
        .chain
        .get_utxo(&bitcoin::OutPoint::new(txid, lsp_out as u32))
        .unwrap()
        .expect("confirmed");
    assert_eq!(utxo.txout.value.to_sat(), 10_000);
}

#[test]
fn a_to_self_delay_past_the_factory_life_is_refused() {
    let h = build(4, long_config());
    let s = states(&h);
    let limits = factory_limits(&h);
    let max = limits.max_to_self_delay;
    for (delay, ok) in [
        (65_535, false),
        (max + 1, false),
        (0, false),
        (max, true),
        (1, true),
    ] {
        let theirs = ChannelLimits {
            to_self_delay: delay,
            ..limits
        };
        let r = open_with(&h, &s.lsp, 0, 20_000_000, limits, theirs);
        assert_eq!(r.is_ok(), ok, "to_self_delay {delay}");
        if !ok {
            assert_eq!(
                r.err(),
                Some(ChannelError::ToSelfDelayOutOfRange {
                    to_self_delay: delay,
                    max,
                })
            );
        }
    }
}

#[test]
fn a_balance_above_the_capacity_is_an_error() {
    let h = build(4, long_config());
    let s = states(&h);
    let slot = Slot::Channel(ClientId(0));
    let key = h.factory.signing_key_at(slot, s.lsp.version()).unwrap();
    let outpoint = s.lsp.outpoint(slot).unwrap();
    let cap_msat = capacity(0).to_sat() * 1000;
    let cs = channel_secrets(3, h.client_keys[0]);
    let ls = channel_secrets(4, h.lsp_key);
    let ca = Channel::announcement(&cs, &key, outpoint);
    let limits = ChannelLimits::default();
    let setup = s.lsp.channel_setup(slot, true, cap_msat + 1).unwrap();
    assert_eq!(
        Channel::new(setup, ls.clone(), limits, ca.clone(), limits).err(),
        Some(ChannelError::BalanceAboveCapacity {
            balance_msat: cap_msat + 1,
            capacity_msat: cap_msat,
        })
    );
    let setup = s.lsp.channel_setup(slot, true, cap_msat).unwrap();
    assert_eq!(
        Channel::new(setup, ls, limits, ca, limits)
            .unwrap()
            .balance_msat(),
        cap_msat
    );
}

#[test]
fn a_client_with_several_channels_and_no_wallet_gets_every_timeout_confirmed_at_t() {
    use superscalar_chain::TxStatus;
    use superscalar_client::timeout::{claim_timeouts, ClientView};
    use superscalar_core::advance::SaleTerms;
    use superscalar_core::TxKind;
    use superscalar_wallet::burn_script;

    let h = build(4, FactoryConfig::regtest());
    let mut s = states(&h);
    // A DW leaf sale gives client 0 a second channel.
    let sold = bitcoin::Amount::from_sat(60_000);
    let terms = SaleTerms {
        buyer: ClientId(0),
        stock: h.factory.stock_of(ClientId(0)).unwrap(),
        amount: sold,
    };
    advance_with(&h, &mut s, 0, Some(terms));
    let st = &s.clients[0];
    exit_then_wait_for_t(&h, st, ClientId(0));
    let signed = st.signed();
    let view = ClientView {
        factory: &h.factory,
        client: ClientId(0),
        signed: &signed,
        funding: h.funding,
        key: &h.client_keys[0],
        version: st.version(),
    };
    let rate = bitcoin::FeeRate::from_sat_per_vb_u32(2);
    let mut first_unpaid = None;
    for _ in 0..6 {
        let claim = claim_timeouts(&h.chain, &view, rate, None).unwrap();
        first_unpaid.get_or_insert(claim.unpaid.len());
        h.chain.mine_blocks(1, &burn_script()).unwrap();
        if claim.unpaid.is_empty() && claim.sent.is_empty() {
            break;
        }
    }
    // One fee coin could pay only one of them at once: the rest waited for its change.
    assert!(first_unpaid.unwrap() >= 1);
    assert_eq!(h.chain.mempool_len(), 0);
    let payout = h.factory.client_payout_script(ClientId(0));
    let mut paid = bitcoin::Amount::ZERO;
    for slot in [Slot::Channel(ClientId(0)), Slot::Sold(0)] {
        let timeout = signed
            .iter()
            .find(|x| x.kind == TxKind::Timeout(slot))
            .unwrap();
        let status = h.chain.tx_status(&timeout.tx.compute_txid()).unwrap();
        assert!(
            matches!(status, TxStatus::Confirmed { .. }),
            "{slot:?}: {status:?}"
        );
        paid += timeout
            .tx
            .output
            .iter()
            .filter(|o| o.script_pubkey == payout)
            .map(|o| o.value)
            .sum::<bitcoin::Amount>();
    }
    // Both channels' full capacities reached the client.
    assert_eq!(paid, capacity(0) + sold);
}
