//! The LSP's side of a rotation (`rotate-factory`, and by itself in a factory's dying period):
//! the close of the factory and the funding of its successor are one transaction, whose output
//! 0 is the successor's funding output, and every client's balance moves into its channel in the
//! successor, where it opens at that balance ([`superscalar_core::FactoryParams::opening_msat`]).
//!
//! Order and rules:
//! 1. As for a close: every member connected, every channel quiet, the funding output unspent;
//!    the channels freeze. Each member is invited with its balance as the LSP counts it (every
//!    channel summed, in millisatoshis); it checks it against its own records and answers with
//!    a fresh key, its payout script and its channel's capacity in the successor (a roll), or
//!    refuses.
//! 2. With every roll in, the LSP builds the successor (the members in their old positions,
//!    each opening at its balance) and the close's terms, which roll every client into it; the
//!    successor's funding output is what the old one holds less the close's fee: the LSP's
//!    liquidity stock in the successor shrinks by what the fee takes (at most a few satoshis a
//!    client), so that the rotation spends nothing but the old funding output.
//! 3. The terms go to every member first, then the successor's proposal (its funding outpoint
//!    is the close's output 0: the close's txid is fixed by its terms, no witness changes it).
//!    Each member answers the terms with its close nonce and signs the successor's tree as it
//!    would join any factory; it signs the close only once the successor is signed and is
//!    exactly the output the terms fund.
//! 4. Once the successor is signed, the close is recorded and signed (as any close); once
//!    signed it is broadcast, stored as the successor's funding transaction, and each member
//!    told (`live`). The old factory is `closed` when the close confirms, and the successor
//!    live; its channels open at the rolled balances.
//!
//! A refusal, a lost connection or `round_timeout` without progress abandons the rotation (and
//! the successor, unless the close was recorded: then the successor waits for that close, which
//! `rotate-factory` or `close-factory` proposes again). In the dying period, a factory whose
//! rotation was abandoned is closed instead at the next block (the fallback, logged with why).

use std::collections::HashSet;
use std::time::Instant;

use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, FeeRate, ScriptBuf};
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::Chain;
use superscalar_core::close::msg::{CloseBody, CloseMsg};
use superscalar_core::close::{CloseCoordinator, CloseError, CloseSigner, CloseTerms, Successor};
use superscalar_core::revocation::StockSecrets;
use superscalar_core::{ClientId, ClientSpec, Factory, FactoryId, FactoryParams, Signer};
use superscalar_store::{convert, Change, FactoryStatus};
use superscalar_wire::messages::Message;

use super::close::Closing;
use super::{Forming, Lsp, MAX_CAPACITY, MIN_CAPACITY};
use crate::formation::Formation;

/// A member's answer to the invitation.
#[derive(Debug, Clone)]
struct Roll {
    key: bitcoin::PublicKey,
    payout: ScriptBuf,
    capacity: Amount,
}

/// A rotation waiting for its members' rolls.
pub(super) struct Rotating {
    factory: FactoryId,
    close_id: u64,
    fee_rate: FeeRate,
    members: Vec<PublicKey>,
    /// Each member's balance in the factory (msat, every channel summed).
    balances_msat: Vec<u64>,
    rolls: Vec<Option<Roll>>,
    started: Instant,
    reply: Option<superscalar_api::Request>,
}

impl Rotating {
    /// The factory rotated.
    pub(super) fn factory(&self) -> FactoryId {
        self.factory
    }

    /// The id of its close.
    pub(super) fn close_id(&self) -> u64 {
        self.close_id
    }
}

/// Factories whose rotation was abandoned: closed instead in their dying period.
#[derive(Default)]
pub(super) struct Fallbacks(pub(super) HashSet<FactoryId>);

impl Lsp {
    /// The operator's `rotate-factory`: answered once the rotation is broadcast or abandoned.
    pub(super) fn operator_rotate(&mut self, request: superscalar_api::Request) {
        let started =
            super::close::parse_close_params(&request.params, self.config.funding_fee_rate)
                .and_then(|(id, fee_rate)| self.start_rotation(id, fee_rate));
        match started {
            Ok(()) => {
                if let Some(r) = self.rotating.as_mut() {
                    r.reply = Some(request);
                } else if let Some(c) = self.closing.as_mut() {
                    c.reply = Some(request);
                }
            }
            Err(e) => request.reply(Err(e)),
        }
    }

    /// Invites every member of factory `id` to roll into a successor (or proposes again the
    /// rotation recorded for it).
    pub(super) fn start_rotation(
        &mut self,
        id: FactoryId,
        fee_rate: FeeRate,
    ) -> Result<(), ApiError> {
        if self.rotating.is_some() {
            return Err(ApiError::app(-6, "a rotation is under way"));
        }
        if self.forming.is_some() {
            return Err(ApiError::app(-6, "a factory is being formed: try again"));
        }
        let recorded = self
            .store
            .recorded_close(convert::factory_id(id))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if recorded.is_some() {
            // Recorded (with its successor, or not): only that close can be signed.
            return self.propose_close(id, fee_rate);
        }
        let (factory, members, funding) = self.closable(id)?;
        if self.closing.is_some() {
            return Err(ApiError::app(-6, "a close is being signed"));
        }
        let balances = self
            .channel_balances(id, &factory)
            .map_err(|e| ApiError::app(-6, e))?;
        let balances_msat: Vec<u64> = balances.iter().map(|b| b.iter().sum()).collect();
        let close_id = self.next_update_id();
        self.channels.frozen.insert(id);
        for (m, balance_msat) in members.iter().zip(&balances_msat) {
            self.send(
                *m,
                Message::Close(Box::new(CloseMsg {
                    factory: id,
                    close: close_id,
                    body: CloseBody::Invite {
                        balance_msat: *balance_msat,
                    },
                })),
            );
        }
        self.log(format!(
            "factory {id}: rotation proposed to {} clients (funding {funding})",
            members.len()
        ));
        self.rotating = Some(Rotating {
            factory: id,
            close_id,
            fee_rate,
            rolls: vec![None; members.len()],
            members,
            balances_msat,
            started: Instant::now(),
            reply: None,
        });
        Ok(())
    }

    /// A member's answer to a rotation's invitation (a roll, or a refusal).
    pub(super) fn on_rotation_msg(&mut self, peer: PublicKey, msg: CloseMsg) {
        let Some(r) = self
            .rotating
            .as_mut()
            .filter(|r| r.factory == msg.factory && r.close_id == msg.close)
        else {
            return tracing::debug!(%peer, "a step of no rotation under way ({})", msg.body.name());
        };
        let Some(position) = r.members.iter().position(|m| *m == peer) else {
            return self.refuse(
                peer,
                Some(msg.factory),
                "not a member of this factory".into(),
            );
        };
        match msg.body {
            CloseBody::Roll {
                key,
                payout,
                capacity_sat,
            } => {
                let capacity = Amount::from_sat(capacity_sat);
                let balance_sat = r.balances_msat[position].div_ceil(1000);
                let bad = if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
                    Some(format!(
                        "capacity {capacity} outside {MIN_CAPACITY}..={MAX_CAPACITY}"
                    ))
                } else if capacity.to_sat() < balance_sat {
                    Some(format!(
                        "capacity {capacity} below its balance of {balance_sat} sat"
                    ))
                } else if payout.len() > 42 || !payout.is_witness_program() {
                    Some("the payout must be a segwit output".into())
                } else if r.rolls.iter().flatten().any(|o| o.key == key) {
                    Some("another client rolls with that key".into())
                } else {
                    None
                };
                if let Some(why) = bad {
                    return self.abandon_rotation(&format!("client {position}: {why}"));
                }
                r.rolls[position] = Some(Roll {
                    key,
                    payout,
                    capacity,
                });
                r.started = Instant::now();
                if r.rolls.iter().all(Option::is_some) {
                    if let Err(e) = self.begin_successor() {
                        self.abandon_rotation(&e);
                    }
                }
            }
            CloseBody::Abort(reason) => {
                self.abandon_rotation(&format!("client {position} refused: {reason}"))
            }
            other => self.abandon_rotation(&format!(
                "client {position} sent a {} during the invitation",
                other.name()
            )),
        }
    }

    /// Every roll is in: build the successor and the terms, propose both, start signing. On an
    /// error the rotation is still `rotating` (the caller abandons it: everyone is told).
    fn begin_successor(&mut self) -> Result<(), String> {
        let r = self.rotating.as_ref().ok_or("no rotation")?;
        let r = Rotating {
            factory: r.factory,
            close_id: r.close_id,
            fee_rate: r.fee_rate,
            members: r.members.clone(),
            balances_msat: r.balances_msat.clone(),
            rolls: r.rolls.clone(),
            started: r.started,
            reply: None,
        };
        let old = r.factory;
        let (old_factory, _, old_key_index) = self
            .factory_state(old)
            .map(|(f, _, k)| (f.clone(), (), *k))?;
        let record = self
            .store
            .factory(convert::factory_id(old))
            .map_err(|e| e.to_string())?
            .ok_or("the factory is gone")?;
        let funding = record.funding.ok_or("no funding outpoint")?;
        let balances = self.channel_balances(old, &old_factory)?;
        let now_msat: Vec<u64> = balances.iter().map(|b| b.iter().sum()).collect();
        if now_msat != r.balances_msat {
            return Err("a balance changed during the invitation".into());
        }
        let amounts: Vec<Amount> = balances
            .iter()
            .map(|b| old_factory.client_close_amount(b))
            .collect();
        let tip = self.chain(|c| c.tip()).map_err(|e| e.to_string())?.height;
        let super::NewFactoryKeys {
            id,
            index,
            keypair,
            stock,
        } = self.new_factory_keys(tip, &old.0)?;
        let rolls: Vec<Roll> = r.rolls.iter().flatten().cloned().collect();
        let opening_msat = if r.balances_msat.iter().all(|b| *b == 0) {
            Vec::new()
        } else {
            r.balances_msat.clone()
        };
        let lsp_script = self.wallet.new_address().script_pubkey();
        let n = rolls.len() as u64;
        let mut config = self.config.factory.clone();
        // The close's fee comes out of the successor: the LSP's stock shrinks by it.
        let mut attempt = 0;
        let (params, terms, close) = loop {
            let params = FactoryParams {
                id,
                config: config.clone(),
                lsp_key: bitcoin::PublicKey::new(keypair.public_key()),
                clients: rolls
                    .iter()
                    .map(|roll| ClientSpec {
                        key: roll.key,
                        capacity: roll.capacity,
                        payout: roll.payout.clone(),
                    })
                    .collect(),
                creation_height: tip,
                stock_hashes: Vec::new(),
                opening_msat: opening_msat.clone(),
            }
            .with_stock_secrets(&StockSecrets::new(*stock));
            let output = Factory::new(params.clone())
                .and_then(|f| f.funding_output())
                .map_err(|e| format!("the successor: {e}"))?;
            let terms = CloseTerms {
                factory: old,
                funding,
                clients: amounts.clone(),
                lsp_script: lsp_script.clone(),
                fee_rate: r.fee_rate,
                successor: Some(Successor {
                    output,
                    rolled: (0..n as u32).map(ClientId).collect(),
                }),
            };
            match old_factory.close_tx(&terms) {
                Ok(close) => break (params, terms, close),
                Err(CloseError::Insufficient { needed, available }) if attempt < 4 => {
                    let short = needed.to_sat().saturating_sub(available.to_sat());
                    let less = Amount::from_sat(short.div_ceil(n.max(1)) + 1);
                    config.stock_per_client = config
                        .stock_per_client
                        .checked_sub(less)
                        .filter(|s| *s >= Amount::from_sat(1_000))
                        .ok_or_else(|| {
                            format!(
                                "the factory cannot fund its successor: {short} sat short, more \
                                 than its liquidity stock"
                            )
                        })?;
                    attempt += 1;
                }
                Err(e) => return Err(format!("the rotation's close: {e}")),
            }
        };
        let members = r.members.clone();
        let (formation, mut out) =
            Formation::start(params, members.clone(), keypair, index, &close.tx, 0)
                .map_err(|e| e.to_string())?;
        let nodes: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        out.persist.push(Change::State {
            factory: convert::factory_id(id),
            party: superscalar_store::Party::Lsp,
            version: 0,
            bytes: serde_json::to_vec(&nodes).map_err(|e| e.to_string())?,
        });
        let old_keypair = self
            .keys
            .factory_key(old_key_index)
            .map_err(|e| e.to_string())?;
        let mut coordinator =
            CloseCoordinator::new(&old_factory, &terms).map_err(|e| e.to_string())?;
        let (signer, nonce) =
            CloseSigner::lsp(&old_factory, old_keypair, &terms, None).map_err(|e| e.to_string())?;
        coordinator
            .add_nonce(Signer::Lsp, nonce)
            .map_err(|e| e.to_string())?;
        // The successor is recorded before anything about it leaves.
        for change in &out.persist {
            if let Err(e) = self.store.apply(change) {
                let _ = self.store.apply(&Change::Status {
                    factory: convert::factory_id(id),
                    status: FactoryStatus::Aborted,
                });
                return Err(format!("cannot record the successor: {e}"));
            }
        }
        // From here the rotation goes on as a close being signed and a factory being formed.
        let reply = self.rotating.take().and_then(|r| r.reply);
        // The terms first: each member checks the successor's proposal against them.
        for m in &members {
            self.send(
                *m,
                Message::Close(Box::new(CloseMsg {
                    factory: old,
                    close: r.close_id,
                    body: CloseBody::Propose(Box::new(terms.clone())),
                })),
            );
        }
        for (to, msg) in out.send {
            self.send(to, msg);
        }
        let value = close.tx.output[0].value;
        self.forming = Some(Forming {
            formation,
            funding_tx: close.tx.clone(),
            round_started: Instant::now(),
            proposals_sent: 0,
            proposals_released: Instant::now(),
            successor_of: Some(old),
        });
        self.release_proposals(true);
        self.closing = Some(Closing::new(
            old,
            r.close_id,
            terms,
            coordinator,
            signer,
            members,
            Some(id),
            reply,
        ));
        self.log(format!(
            "factory {old}: every client rolls; successor {id} ({value}, stock {} a client) \
             funded by the close {} (fee {} sat) is being signed",
            config.stock_per_client,
            close.tx.compute_txid(),
            close.fee.to_sat()
        ));
        Ok(())
    }

    /// Abandons the rotation waiting for rolls: every member is told, the channels thaw, and the
    /// factory is closed instead in its dying period.
    pub(super) fn abandon_rotation(&mut self, reason: &str) {
        let Some(mut r) = self.rotating.take() else {
            return;
        };
        for m in &r.members {
            self.send(
                *m,
                Message::Close(Box::new(CloseMsg {
                    factory: r.factory,
                    close: r.close_id,
                    body: CloseBody::Abort(reason.to_owned()),
                })),
            );
        }
        self.channels.frozen.remove(&r.factory);
        self.rotation_fallbacks.0.insert(r.factory);
        self.log(format!(
            "factory {}: rotation abandoned: {reason} (fallback: its cooperative close)",
            r.factory
        ));
        if let Some(req) = r.reply.take() {
            req.reply(Err(ApiError::app(
                -7,
                format!("rotation abandoned: {reason}"),
            )));
        }
    }

    /// The successor being formed failed, or its close was abandoned before it was recorded:
    /// the successor is void (its funding can never exist).
    pub(super) fn void_successor(&mut self, successor: FactoryId, reason: &str) {
        if self
            .forming
            .as_ref()
            .is_some_and(|f| f.formation.id() == successor)
        {
            return self.abort_forming(&[], reason);
        }
        if let Err(e) = self.store.apply(&Change::Status {
            factory: convert::factory_id(successor),
            status: FactoryStatus::Aborted,
        }) {
            tracing::warn!("successor {successor}: cannot record its abort: {e}");
        }
        self.factories.remove(&successor);
    }

    /// Times out a rotation waiting for rolls.
    pub(super) fn rotation_tick(&mut self) {
        let late = self
            .rotating
            .as_ref()
            .filter(|r| r.started.elapsed() > self.config.round_timeout)
            .map(|r| {
                r.rolls
                    .iter()
                    .enumerate()
                    .filter(|(_, roll)| roll.is_none())
                    .map(|(i, _)| i.to_string())
                    .collect::<Vec<_>>()
            });
        if let Some(late) = late {
            self.abandon_rotation(&format!(
                "timed out waiting for clients {}",
                late.join(", ")
            ));
        }
    }

    /// A member's connection is lost: the rotation cannot finish.
    pub(super) fn rotation_disconnected(&mut self, peer: PublicKey) {
        if let Some(r) = &self.rotating {
            if let Some(i) = r.members.iter().position(|m| *m == peer) {
                self.abandon_rotation(&format!("client {i} disconnected"));
            }
        }
    }

    /// `dying` in the API's `status`: the dying factories, with the height at which their
    /// rotation (or close) was last proposed and whether a close of theirs is signed.
    pub(super) fn dying_json(&self) -> Value {
        let mut dying: Vec<(&FactoryId, &super::Signed)> = self
            .factories
            .iter()
            .filter(|(_, f)| f.status == FactoryStatus::Dying)
            .collect();
        dying.sort_by_key(|(id, _)| **id);
        Value::Array(
            dying
                .into_iter()
                .map(|(id, _)| {
                    let mut entry = json!({
                        "factory": id.to_string(),
                        "proposed_at": self.proposed_at.get(id),
                        "close_signed": self.signed_closes.contains_key(id),
                        "fallback": self.rotation_fallbacks.0.contains(id),
                    });
                    if let (Some(e), Value::Object(m)) =
                        (entry.as_object_mut(), self.migration_json(id))
                    {
                        e.extend(m);
                    }
                    entry
                })
                .collect(),
        )
    }

    /// `rotating` in the API's `status`.
    pub(super) fn rotation_json(&self) -> Value {
        let Some(r) = &self.rotating else {
            return Value::Null;
        };
        json!({
            "factory": r.factory.to_string(),
            "waiting_for": r.rolls.iter().enumerate().filter(|(_, x)| x.is_none()).map(|(i, _)| i).collect::<Vec<_>>(),
            "elapsed_s": r.started.elapsed().as_secs(),
        })
    }

    /// The successor a recorded close of `old` funds, if any: the signed factory whose funding
    /// transaction is that close.
    pub(super) fn successor_of_close(&self, close: &bitcoin::Txid) -> Option<FactoryId> {
        self.factories
            .iter()
            .find(|(_, f)| f.funding_tx.compute_txid() == *close)
            .map(|(id, _)| *id)
    }

    /// The close funding `successor` is signed: it is the successor's funding transaction
    /// (stored, kept to broadcast again) and each member is told.
    pub(super) fn successor_funded(
        &mut self,
        successor: FactoryId,
        tx: &bitcoin::Transaction,
        members: &[PublicKey],
    ) {
        let stored = self.store.add_signed_txs(
            convert::factory_id(successor),
            &[superscalar_store::SignedTx {
                label: superscalar_store::TxLabel::new(super::FUNDING_LABEL)
                    .expect("a valid label"),
                tx: tx.clone(),
            }],
        );
        if let Err(e) = stored {
            tracing::error!("successor {successor}: cannot store its funding: {e}");
        }
        if let Some(f) = self.factories.get_mut(&successor) {
            f.funding_tx = tx.clone();
        }
        for m in members {
            self.send(
                *m,
                Message::Live(superscalar_wire::messages::Live {
                    factory: successor,
                    funding_tx: tx.clone(),
                }),
            );
        }
        self.log(format!(
            "successor {successor}: funded by the close {}",
            tx.compute_txid()
        ));
    }
}

/// Whether `tx` is a close not yet signed (a successor's funding while its rotation is signed).
pub(super) fn unsigned(tx: &bitcoin::Transaction) -> bool {
    tx.input.iter().all(|i| i.witness.is_empty())
}
