//! Liquidity bought by a client: the client asks (`liquidity_request`); the LSP checks that
//! the client's leaf stock can pay it, quotes its fee with an invoice of its own (the preimage
//! drawn and written with the order) and answers (`liquidity_offer`); the client pays it through
//! its channel. The LSP holds that HTLC, sells the channel (the update of `sell_liquidity`),
//! and claims the fee only once the sale completed. A sale that cannot be made (the update
//! refused or abandoned `MAX_ATTEMPTS` times, or not made within `LspConfig::liquidity_patience`) fails the
//! HTLC back: the client pays nothing for nothing.
//!
//! Order states, written before what depends on them: `offered` → `paid` (the HTLC is held) →
//! `selling j` (written before the proposal of sale `j` leaves) → `sold j` (once the update
//! completed; the invoice is then paid and the HTLC settled) or `refunded`. After a restart, an
//! order `selling j` is `sold j` if the LSP's factory state holds sale `j` to that client for
//! that amount, and `paid` (tried again) otherwise.

use std::collections::HashMap;
use std::time::Instant;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::PublicKey;
use serde_json::{json, Value};
use superscalar_core::advance::SaleTerms;
use superscalar_core::channel::link::Intent;
use superscalar_core::{ClientId, FactoryId};
use superscalar_store::{
    convert, FactoryStatus, Invoice, InvoiceDirection, InvoiceStatus, LiquidityOrder, Msat,
    OrderStatus, PaymentHash, Preimage,
};
use superscalar_wire::invoice::{issue, InvoiceTerms};
use superscalar_wire::messages::{LiquidityOffer, LiquidityRequest, Message};

use super::channels::{hex, FORWARD_DELTA};
use super::Lsp;

/// How many abandoned sale updates an order survives.
const MAX_ATTEMPTS: u32 = 3;
/// How long the fee invoice is valid.
const OFFER_EXPIRY_SECS: u32 = 600;

/// Paid orders in memory: when first seen paid, and the sale updates tried.
#[derive(Default)]
pub(super) struct Orders {
    paid: HashMap<[u8; 32], (Instant, u32)>,
}

impl Lsp {
    /// The LSP's fee for a channel of `amount_sat`.
    pub(super) fn liquidity_fee(&self, amount_sat: u64) -> u64 {
        let proportional =
            u128::from(amount_sat) * u128::from(self.config.liquidity_fee_ppm) / 1_000_000;
        (proportional as u64).max(self.config.liquidity_fee_min.to_sat())
    }

    /// A client asks to buy inbound liquidity.
    pub(super) fn on_liquidity_request(&mut self, peer: PublicKey, req: LiquidityRequest) {
        let reply = match self.offer_liquidity(peer, &req) {
            Ok((fee_sat, bolt11)) => LiquidityOffer {
                factory: req.factory,
                amount_sat: req.amount_sat,
                fee_sat,
                bolt11,
                error: String::new(),
            },
            Err(error) => {
                self.log(format!(
                    "liquidity request of {} sat in {} refused: {error}",
                    req.amount_sat, req.factory
                ));
                LiquidityOffer {
                    factory: req.factory,
                    amount_sat: req.amount_sat,
                    fee_sat: 0,
                    bolt11: String::new(),
                    error,
                }
            }
        };
        self.send(peer, Message::LiquidityOffer(reply));
    }

    fn offer_liquidity(
        &mut self,
        peer: PublicKey,
        req: &LiquidityRequest,
    ) -> Result<(u64, String), String> {
        let f = self
            .factories
            .get(&req.factory)
            .filter(|f| f.status == FactoryStatus::Live)
            .ok_or("no live factory with that id")?;
        if self.channels.frozen.contains(&req.factory) {
            return Err("the factory is being closed".into());
        }
        let client = f
            .members
            .iter()
            .position(|m| *m == peer)
            .ok_or("you are not a member of that factory")? as u32;
        if req.amount_sat == 0 || req.amount_sat > bitcoin::Amount::MAX_MONEY.to_sat() {
            return Err("the amount must be positive".into());
        }
        let open = self
            .store
            .open_liquidity_orders()
            .map_err(|e| e.to_string())?;
        if open
            .iter()
            .any(|o| o.factory == convert::factory_id(req.factory) && o.client == client)
        {
            return Err("an order of yours is being served".into());
        }
        // The sale must be possible now: tried on a copy of the LSP's state.
        self.open_for_update(req.factory)
            .map_err(|e| format!("cannot sell it: {e}"))?;
        let (factory, st, key_index) = self
            .channels
            .states
            .get(&req.factory)
            .ok_or("no factory state")?;
        let leaf = factory
            .tree()
            .leaf_of(ClientId(client))
            .ok_or("your position has no leaf")?;
        let stock = factory
            .stock_of(ClientId(client))
            .ok_or("your leaf has no liquidity stock")?;
        let keypair = self
            .keys
            .factory_key(*key_index)
            .map_err(|e| e.to_string())?;
        let terms = SaleTerms {
            buyer: ClientId(client),
            stock,
            amount: bitcoin::Amount::from_sat(req.amount_sat),
        };
        st.clone()
            .propose_with(leaf, Some(terms), &keypair)
            .map_err(|e| format!("cannot sell it: {e}"))?;
        let delta = self
            .channels
            .leaves
            .get(&(
                req.factory,
                peer,
                superscalar_core::channel::ChannelRef::Leaf,
            ))
            .map(|l| l.link.channel().limits().1.min_cltv_expiry_delta)
            .ok_or("you have no channel yet")?;
        let fee_sat = self.liquidity_fee(req.amount_sat);
        let mut preimage = zeroize::Zeroizing::new([0u8; 32]);
        bitcoin::secp256k1::rand::RngCore::fill_bytes(
            &mut bitcoin::secp256k1::rand::thread_rng(),
            &mut preimage[..],
        );
        let hash = sha256::Hash::hash(&preimage[..]).to_byte_array();
        let transport = self.transport.clone();
        let bolt11 = issue(
            self.config.network,
            |raw| transport.sign_invoice(raw),
            &InvoiceTerms {
                payment_hash: hash,
                amount_msat: Some(fee_sat * 1000),
                description: format!(
                    "inbound liquidity: a channel of {} sat in factory {}",
                    req.amount_sat, req.factory
                ),
                expiry_secs: OFFER_EXPIRY_SECS,
                min_final_cltv_expiry_delta: delta + FORWARD_DELTA,
            },
        )
        .map_err(|e| e.to_string())?;
        self.store
            .insert_liquidity_order(
                &Invoice {
                    payment_hash: PaymentHash(hash),
                    direction: InvoiceDirection::Inbound,
                    preimage: Some(Preimage(*preimage)),
                    amount: Some(Msat(fee_sat * 1000)),
                    status: InvoiceStatus::Open,
                    bolt11: bolt11.clone(),
                    claim_deadline: None,
                },
                &LiquidityOrder {
                    payment_hash: PaymentHash(hash),
                    factory: convert::factory_id(req.factory),
                    client,
                    amount_sat: req.amount_sat,
                    fee_sat,
                    status: OrderStatus::Offered,
                },
            )
            .map_err(|e| e.to_string())?;
        self.log(format!(
            "liquidity of {} sat offered to client {client} of {} for {fee_sat} sat",
            req.amount_sat, req.factory
        ));
        Ok((fee_sat, bolt11))
    }

    /// An HTLC paying an order's fee is committed: held (`Ok(true)`) until the sale completes,
    /// or refused (`Err`); `Ok(false)` if `hash` is no order's.
    pub(super) fn order_htlc(&mut self, hash: [u8; 32], amount_msat: u64) -> Result<bool, String> {
        let Some(order) = self
            .store
            .liquidity_order(PaymentHash(hash))
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        if order.status != OrderStatus::Offered {
            return Err(format!("the order is {:?}", order.status));
        }
        if amount_msat < order.fee_sat * 1000 {
            return Err("less than the fee".into());
        }
        self.store
            .update_invoice(PaymentHash(hash), InvoiceStatus::Held, None)
            .map_err(|e| e.to_string())?;
        self.store
            .set_order_status(PaymentHash(hash), OrderStatus::Paid)
            .map_err(|e| e.to_string())?;
        self.orders.paid.insert(hash, (Instant::now(), 0));
        self.log(format!(
            "liquidity fee of {} sat held for client {}: selling {} sat",
            order.fee_sat, order.client, order.amount_sat
        ));
        Ok(true)
    }

    /// Every second: paid orders are sold (one update at a time), given up after their
    /// patience, or found sold after a restart.
    pub(super) fn orders_tick(&mut self) {
        let open = match self.store.open_liquidity_orders() {
            Ok(o) => o,
            Err(e) => return tracing::error!("liquidity orders: {e}"),
        };
        for order in open {
            let hash = order.payment_hash.0;
            let under_way = self
                .updating
                .as_ref()
                .is_some_and(|u| u.order == Some(hash));
            if under_way {
                continue;
            }
            let id = FactoryId(order.factory.0);
            if let OrderStatus::Selling(j) = order.status {
                // Interrupted (a restart): sold if the state holds the sale.
                let sold = self.factory_state(id).ok().is_some_and(|(_, st, _)| {
                    st.sales().get(j as usize).is_some_and(|s| {
                        s.buyer.0 == order.client && s.amount.to_sat() == order.amount_sat
                    })
                });
                if sold {
                    self.order_sold(hash, j);
                    continue;
                }
                if let Err(e) = self
                    .store
                    .set_order_status(order.payment_hash, OrderStatus::Paid)
                {
                    tracing::error!("order {}: {e}", hex(&hash));
                    continue;
                }
            }
            let (since, attempts) = *self.orders.paid.entry(hash).or_insert((Instant::now(), 0));
            if attempts >= MAX_ATTEMPTS || since.elapsed() > self.config.liquidity_patience {
                self.refund_order(hash, "the sale could not be made");
                continue;
            }
            if self.updating.is_some() {
                continue;
            }
            self.start_order_sale(&order);
        }
    }

    fn start_order_sale(&mut self, order: &LiquidityOrder) {
        let hash = order.payment_hash.0;
        let id = FactoryId(order.factory.0);
        let Some(members) = self
            .factories
            .get(&id)
            .filter(|f| f.status == FactoryStatus::Live)
            .map(|f| f.members.clone())
        else {
            return self.refund_order(hash, "the factory is not live");
        };
        let next = match self.factory_state(id) {
            Ok((_, st, _)) => st.sales().len() as u32,
            Err(e) => return tracing::error!("order {}: {e}", hex(&hash)),
        };
        // Written before the proposal leaves: a restart finds the sale or tries again.
        if let Err(e) = self
            .store
            .set_order_status(order.payment_hash, OrderStatus::Selling(next))
        {
            return tracing::error!("order {}: {e}", hex(&hash));
        }
        let amount = bitcoin::Amount::from_sat(order.amount_sat);
        match self.begin_sale(id, ClientId(order.client), &members, amount) {
            Ok(()) => {
                if let Some(u) = self.updating.as_mut() {
                    u.order = Some(hash);
                }
            }
            Err(e) => {
                tracing::debug!("order {}: the sale cannot start: {e}", hex(&hash));
                // Not a refusal (a participant busy or offline): tried again next tick, within
                // the order's patience.
                let _ = self
                    .store
                    .set_order_status(order.payment_hash, OrderStatus::Paid);
            }
        }
    }

    /// The sale of an order completed as sale `j`: the fee is claimed.
    pub(super) fn order_sold(&mut self, hash: [u8; 32], j: u32) {
        let preimage = match self.store.invoice(PaymentHash(hash)) {
            Ok(Some(Invoice {
                preimage: Some(p), ..
            })) => p,
            _ => return tracing::error!("order {}: its invoice is gone", hex(&hash)),
        };
        let written = self
            .store
            .set_order_status(PaymentHash(hash), OrderStatus::Sold(j))
            .and_then(|()| {
                self.store
                    .update_invoice(PaymentHash(hash), InvoiceStatus::Paid, Some(preimage))
            });
        if let Err(e) = written {
            return tracing::error!("order {}: {e}", hex(&hash));
        }
        self.orders.paid.remove(&hash);
        if let Some((key, id)) = self.incoming_with(&hash) {
            if self.push(
                key,
                Intent::Fulfill {
                    id,
                    preimage: preimage.0,
                },
            ) {
                self.poll_links(vec![key]);
            }
        }
        self.log(format!(
            "liquidity order {} sold (sale {j}); fee claimed",
            hex(&hash)
        ));
    }

    /// A sale update of an order was abandoned: tried again, within the order's patience.
    pub(super) fn order_abandoned(&mut self, hash: [u8; 32]) {
        if let Err(e) = self
            .store
            .set_order_status(PaymentHash(hash), OrderStatus::Paid)
        {
            tracing::error!("order {}: {e}", hex(&hash));
        }
        let entry = self.orders.paid.entry(hash).or_insert((Instant::now(), 0));
        entry.1 += 1;
    }

    /// Gives an order up: its fee HTLC is failed back.
    fn refund_order(&mut self, hash: [u8; 32], why: &str) {
        let written = self
            .store
            .set_order_status(PaymentHash(hash), OrderStatus::Refunded)
            .and_then(|()| {
                self.store
                    .update_invoice(PaymentHash(hash), InvoiceStatus::Cancelled, None)
            });
        if let Err(e) = written {
            return tracing::error!("order {}: {e}", hex(&hash));
        }
        self.orders.paid.remove(&hash);
        if let Some((key, id)) = self.incoming_with(&hash) {
            if self.push(key, Intent::Fail { id }) {
                self.poll_links(vec![key]);
            }
        }
        self.log(format!("liquidity order {} refunded: {why}", hex(&hash)));
    }

    /// Whether an HTLC with `hash` pays an order the LSP is serving (not to be failed back
    /// after a restart).
    pub(super) fn is_open_order(&self, hash: &[u8; 32]) -> bool {
        matches!(
            self.store.liquidity_order(PaymentHash(*hash)),
            Ok(Some(LiquidityOrder {
                status: OrderStatus::Paid | OrderStatus::Selling(_),
                ..
            }))
        )
    }

    /// The orders being served, for `status`.
    pub(super) fn orders_json(&self) -> Value {
        let open = self.store.open_liquidity_orders().unwrap_or_default();
        Value::Array(
            open.iter()
                .map(|o| {
                    json!({
                        "payment_hash": hex(&o.payment_hash.0),
                        "factory": FactoryId(o.factory.0).to_string(),
                        "client": o.client,
                        "amount_sat": o.amount_sat,
                        "fee_sat": o.fee_sat,
                        "status": match o.status {
                            OrderStatus::Selling(_) => "selling",
                            _ => "paid",
                        },
                    })
                })
                .collect(),
        )
    }
}
