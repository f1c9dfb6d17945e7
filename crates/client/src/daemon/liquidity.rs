//! Buying inbound liquidity (`buy_liquidity`): the client asks its LSP for a channel of
//! `amount_sat` in its leaf (`liquidity_request`); the LSP answers with its fee and an invoice
//! for it (`liquidity_offer`). The client checks the offer (the amount it asked for, a fee no
//! more than its `max_fee_sat`, an invoice of that fee signed by its LSP) and pays it through
//! its channel. The LSP holds that HTLC while it sells the channel (an update the client signs
//! like an advance: the sold channel opens on its output in the new state) and settles it only
//! then; if the sale cannot be made the HTLC is failed back and the client pays nothing.

use std::time::{Duration, Instant};

use bitcoin::hex::DisplayHex;
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_core::channel::ChannelRef;
use superscalar_store::FactoryStatus;
use superscalar_wire::messages::{LiquidityOffer, LiquidityRequest, Message};

use super::Client;

/// How long a purchase waits for the LSP's offer.
const OFFER_WAIT: Duration = Duration::from_secs(60);
/// How long a paid purchase waits for its sale before the API answers "pending".
const SALE_WAIT: Duration = Duration::from_secs(180);

/// A purchase of inbound liquidity under way.
pub(super) struct Buying {
    amount_sat: u64,
    max_fee_sat: u64,
    fee_sat: u64,
    request: superscalar_api::Request,
    started: Instant,
    /// The fee's payment hash, once the offer was taken.
    hash: Option<[u8; 32]>,
}

/// The fee a client accepts by default: 2% of the channel and 1,000 sat.
pub fn default_max_fee(amount_sat: u64) -> u64 {
    amount_sat / 50 + 1_000
}

impl Client {
    /// `buy_liquidity`: asks the LSP for a channel of `amount_sat`; answered once it is sold.
    pub(super) fn buy_liquidity(&mut self, request: superscalar_api::Request) {
        match self.ask_liquidity(&request.params) {
            Ok((amount_sat, max_fee_sat)) => {
                self.buying = Some(Buying {
                    amount_sat,
                    max_fee_sat,
                    fee_sat: 0,
                    request,
                    started: Instant::now(),
                    hash: None,
                });
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    fn ask_liquidity(&mut self, params: &Value) -> Result<(u64, u64), ApiError> {
        if self.buying.is_some() {
            return Err(ApiError::app(-6, "a purchase of liquidity is under way"));
        }
        if self.close_frozen() {
            return Err(ApiError::app(
                -6,
                "our factory is being closed cooperatively",
            ));
        }
        let amount_sat = params
            .get("amount_sat")
            .and_then(Value::as_u64)
            .filter(|a| *a > 0 && *a <= bitcoin::Amount::MAX_MONEY.to_sat())
            .ok_or_else(|| {
                ApiError::invalid_params("amount_sat: the channel's capacity, in satoshis")
            })?;
        let max_fee_sat = match params.get("max_fee_sat") {
            None | Some(Value::Null) => default_max_fee(amount_sat),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| ApiError::invalid_params("max_fee_sat: satoshis"))?,
        };
        let f = self
            .factory
            .as_ref()
            .filter(|f| f.status == FactoryStatus::Live && f.exit.is_none())
            .ok_or_else(|| ApiError::app(-2, "not in a live factory"))?;
        let ready = f.links.get(&ChannelRef::Leaf).is_some_and(|l| l.is_ready());
        if !ready {
            return Err(ApiError::app(-2, "no ready channel yet"));
        }
        let factory = f.id;
        self.send(Message::LiquidityRequest(LiquidityRequest {
            factory,
            amount_sat,
        }));
        self.log(format!(
            "asking for {amount_sat} sat of inbound liquidity (fee at most {max_fee_sat} sat)"
        ));
        Ok((amount_sat, max_fee_sat))
    }

    /// The LSP's offer: checked, then its fee paid.
    pub(super) fn on_liquidity_offer(&mut self, offer: LiquidityOffer) {
        let Some(mut b) = self.buying.take() else {
            return self.log("a liquidity offer nobody asked for".into());
        };
        if b.hash.is_some() || offer.amount_sat != b.amount_sat {
            self.buying = Some(b);
            return self.log("a liquidity offer that answers no request of ours".into());
        }
        let result = (|| -> Result<[u8; 32], ApiError> {
            if !offer.error.is_empty() {
                return Err(ApiError::app(
                    -4,
                    format!("the LSP refused: {}", offer.error),
                ));
            }
            if offer.fee_sat > b.max_fee_sat {
                return Err(ApiError::app(
                    -4,
                    format!(
                        "the LSP asks {} sat, more than our limit of {} sat",
                        offer.fee_sat, b.max_fee_sat
                    ),
                ));
            }
            let parsed = superscalar_wire::invoice::parse(&offer.bolt11, self.config.network)
                .map_err(|e| ApiError::app(-4, format!("the LSP's fee invoice: {e}")))?;
            if parsed.payee != self.config.lsp_id
                || parsed.amount_msat != Some(offer.fee_sat * 1000)
            {
                return Err(ApiError::app(
                    -4,
                    "the LSP's fee invoice is not for its fee or not its own",
                ));
            }
            self.start_payment(&json!({ "invoice": offer.bolt11 }))
        })();
        match result {
            Ok(hash) => {
                b.hash = Some(hash);
                b.fee_sat = offer.fee_sat;
                self.log(format!(
                    "paying the LSP's fee of {} sat for {} sat of inbound liquidity",
                    offer.fee_sat, offer.amount_sat
                ));
                self.buying = Some(b);
                self.poll_link();
            }
            Err(e) => {
                self.log(format!("liquidity offer not taken: {}", e.message));
                b.request.reply(Err(e));
            }
        }
    }

    /// The outcome of a payment: the purchase's, if it was its fee (`true`).
    pub(super) fn finish_purchase(
        &mut self,
        hash: [u8; 32],
        outcome: &Result<[u8; 32], String>,
    ) -> bool {
        if !self.buying.as_ref().is_some_and(|b| b.hash == Some(hash)) {
            return false;
        }
        let Some(b) = self.buying.take() else {
            return false;
        };
        let channel = self.factory.as_ref().and_then(|f| {
            f.links
                .keys()
                .filter(|ch| matches!(ch, ChannelRef::Sold(_)))
                .max()
                .copied()
        });
        b.request.reply(match outcome {
            Ok(preimage) => {
                self.log(format!(
                    "bought {} sat of inbound liquidity for {} sat",
                    b.amount_sat, b.fee_sat
                ));
                Ok(json!({
                    "status": "bought",
                    "amount_sat": b.amount_sat,
                    "fee_sat": b.fee_sat,
                    "channel": channel.map(|c| c.to_string()),
                    "payment_hash": hash.to_lower_hex_string(),
                    "preimage": preimage.to_lower_hex_string(),
                }))
            }
            Err(why) => Err(ApiError::app(
                -5,
                format!("the purchase failed, its fee was not taken: {why}"),
            )),
        });
        true
    }

    /// Whether a sale to us in a proposal is the one we are buying (or we buy none).
    pub(super) fn sale_is_ours(&self, amount_sat: u64) -> bool {
        self.buying
            .as_ref()
            .map_or(true, |b| b.amount_sat == amount_sat)
    }

    /// A purchase that waited too long is answered.
    pub(super) fn buying_tick(&mut self) {
        let late = self.buying.as_ref().is_some_and(|b| match b.hash {
            None => b.started.elapsed() > OFFER_WAIT,
            Some(_) => b.started.elapsed() > SALE_WAIT,
        });
        if !late {
            return;
        }
        if let Some(b) = self.buying.take() {
            b.request.reply(match b.hash {
                None => Err(ApiError::app(-3, "the LSP did not answer")),
                Some(h) => Ok(json!({
                    "status": "pending",
                    "amount_sat": b.amount_sat,
                    "fee_sat": b.fee_sat,
                    "payment_hash": h.to_lower_hex_string(),
                })),
            });
        }
    }
}
