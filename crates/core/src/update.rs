//! The messages of one factory update between the LSP and one client, and their encoding.
//!
//! An update is a Decker-Wattenhofer advance ([`AdvanceProposal`], possibly with a liquidity
//! sale merged into the new leaf state) or a pseudo-Spilman sale ([`SaleProposal`]). Each has an
//! id chosen by the LSP, unique among its updates of that factory, so that a message of an
//! abandoned update is never taken for one of the next. An advance is signed in two stages
//! (everything beneath the ticking node, then its new state); a sale in one. The LSP ends an
//! update with the revocation secrets of the superseded stock versions (`Done`), or abandons it
//! (`Abort`, which a client also sends to refuse a proposal).

use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::{Amount, OutPoint, Txid};
use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{Readable, Writeable, Writer};

use crate::advance::{AdvanceProposal, Revealed, SaleProposal, SaleTerms};
use crate::ceremony::{AggNonceMsg, FinalSigMsg, NonceMsg, PartialSigMsg};
use crate::codec::{read_list, read_tlvs, tag, write_list, write_no_tlvs, MAX_LIST};
use crate::ledger::{Sale, StockVersion};
use crate::types::{FactoryId, NodeId, StateIndex};

/// The longest reason an abort carries.
pub const MAX_ABORT_REASON: usize = 1_000;

/// One message of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateMsg {
    /// The factory.
    pub factory: FactoryId,
    /// The update's id (the LSP's, unique among its updates of the factory).
    pub update: u64,
    /// What it says.
    pub body: UpdateBody,
}

/// What an update message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateBody {
    /// LSP to client: a Decker-Wattenhofer advance.
    Advance(Box<AdvanceProposal>),
    /// LSP to client: a pseudo-Spilman sale.
    Sale(Box<SaleProposal>),
    /// Client to LSP: its public nonces for `stage` (1 or 2).
    Nonces {
        /// The stage.
        stage: u8,
        /// The nonces.
        msg: NonceMsg,
    },
    /// LSP to client: the aggregated nonces of its transactions in `stage`.
    AggNonces {
        /// The stage.
        stage: u8,
        /// The nonces.
        msg: AggNonceMsg,
    },
    /// Client to LSP: its partial signatures of `stage`.
    Partials {
        /// The stage.
        stage: u8,
        /// The signatures.
        msg: PartialSigMsg,
    },
    /// LSP to client: the final signatures of its transactions in `stage`.
    FinalSigs {
        /// The stage.
        stage: u8,
        /// The signatures.
        msg: FinalSigMsg,
    },
    /// LSP to client: the update is complete; the secrets of the stock versions it superseded.
    Done(Vec<Revealed>),
    /// Either way: the update is abandoned (or refused), and why.
    Abort(String),
}

impl UpdateBody {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            UpdateBody::Advance(_) => "advance",
            UpdateBody::Sale(_) => "sale",
            UpdateBody::Nonces { .. } => "nonces",
            UpdateBody::AggNonces { .. } => "aggregated nonces",
            UpdateBody::Partials { .. } => "partial signatures",
            UpdateBody::FinalSigs { .. } => "final signatures",
            UpdateBody::Done(_) => "done",
            UpdateBody::Abort(_) => "abort",
        }
    }
}

// ---- encoding ----

fn write_outpoint<W: Writer>(w: &mut W, o: &OutPoint) -> Result<(), io::Error> {
    use bitcoin::hashes::Hash;
    o.txid.to_byte_array().write(w)?;
    o.vout.write(w)
}

fn read_outpoint<R: io::Read>(r: &mut R) -> Result<OutPoint, DecodeError> {
    use bitcoin::hashes::Hash;
    Ok(OutPoint {
        txid: Txid::from_byte_array(Readable::read(r)?),
        vout: Readable::read(r)?,
    })
}

fn write_terms<W: Writer>(w: &mut W, t: &SaleTerms) -> Result<(), io::Error> {
    t.buyer.write(w)?;
    t.stock.write(w)?;
    t.amount.to_sat().write(w)
}

fn read_terms<R: io::Read>(r: &mut R) -> Result<SaleTerms, DecodeError> {
    Ok(SaleTerms {
        buyer: Readable::read(r)?,
        stock: Readable::read(r)?,
        amount: Amount::from_sat(Readable::read(r)?),
    })
}

/// Most stock outputs one proposal lists.
const MAX_STOCKS: usize = 1 << 16;

struct StockEntry(u32, StockVersion);

impl Writeable for StockEntry {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.0.write(w)?;
        self.1.write(w)
    }
}

impl Readable for StockEntry {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(StockEntry(Readable::read(r)?, Readable::read(r)?))
    }
}

struct StockAmount(u32, Amount);

impl Writeable for StockAmount {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.0.write(w)?;
        self.1.to_sat().write(w)
    }
}

impl Readable for StockAmount {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(StockAmount(
            Readable::read(r)?,
            Amount::from_sat(Readable::read(r)?),
        ))
    }
}

impl Writeable for Revealed {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.stock.write(w)?;
        self.version.write(w)?;
        self.secret.write(w)
    }
}

impl Readable for Revealed {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(Revealed {
            stock: Readable::read(r)?,
            version: Readable::read(r)?,
            secret: Readable::read(r)?,
        })
    }
}

impl Writeable for AdvanceProposal {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.factory.write(w)?;
        self.node.write(w)?;
        self.from.0.write(w)?;
        self.to.0.write(w)?;
        match &self.sale {
            None => 0u8.write(w)?,
            Some(t) => {
                1u8.write(w)?;
                write_terms(w, t)?;
            }
        }
        write_list(w, &self.sales_before)?;
        let versions: Vec<StockEntry> = self
            .stock_versions
            .iter()
            .map(|(s, v)| StockEntry(*s, *v))
            .collect();
        write_list(w, &versions)?;
        let after: Vec<StockAmount> = self
            .stocks_after
            .iter()
            .map(|(s, a)| StockAmount(*s, *a))
            .collect();
        write_list(w, &after)?;
        self.signature.write(w)
    }
}

impl Readable for AdvanceProposal {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let factory = Readable::read(r)?;
        let node: NodeId = Readable::read(r)?;
        let from = StateIndex(Readable::read(r)?);
        let to = StateIndex(Readable::read(r)?);
        let sale = match tag(r)? {
            0 => None,
            1 => Some(read_terms(r)?),
            _ => return Err(DecodeError::InvalidValue),
        };
        let sales_before: Vec<Sale> = read_list(r, 17, MAX_LIST)?;
        let stock_versions: Vec<StockEntry> = read_list(r, 40, MAX_STOCKS)?;
        let stocks_after: Vec<StockAmount> = read_list(r, 12, MAX_STOCKS)?;
        let signature: Signature = Readable::read(r)?;
        Ok(AdvanceProposal {
            factory,
            node,
            from,
            to,
            sale,
            sales_before,
            stock_versions: stock_versions.into_iter().map(|e| (e.0, e.1)).collect(),
            stocks_after: stocks_after.into_iter().map(|e| (e.0, e.1)).collect(),
            signature,
        })
    }
}

impl Writeable for SaleProposal {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.factory.write(w)?;
        self.index.write(w)?;
        write_list(w, &self.sales_before)?;
        write_terms(w, &self.terms)?;
        write_outpoint(w, &self.spends)?;
        self.signature.write(w)
    }
}

impl Readable for SaleProposal {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(SaleProposal {
            factory: Readable::read(r)?,
            index: Readable::read(r)?,
            sales_before: read_list(r, 17, MAX_LIST)?,
            terms: read_terms(r)?,
            spends: read_outpoint(r)?,
            signature: Readable::read(r)?,
        })
    }
}

fn read_stage<R: io::Read>(r: &mut R) -> Result<u8, DecodeError> {
    let stage = u8::read(r)?;
    if !(1..=2).contains(&stage) {
        return Err(DecodeError::InvalidValue);
    }
    Ok(stage)
}

impl Writeable for UpdateMsg {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.factory.write(w)?;
        self.update.write(w)?;
        match &self.body {
            UpdateBody::Advance(p) => {
                0u8.write(w)?;
                p.write(w)?;
            }
            UpdateBody::Sale(p) => {
                1u8.write(w)?;
                p.write(w)?;
            }
            UpdateBody::Nonces { stage, msg } => {
                2u8.write(w)?;
                stage.write(w)?;
                msg.write(w)?;
            }
            UpdateBody::AggNonces { stage, msg } => {
                3u8.write(w)?;
                stage.write(w)?;
                msg.write(w)?;
            }
            UpdateBody::Partials { stage, msg } => {
                4u8.write(w)?;
                stage.write(w)?;
                msg.write(w)?;
            }
            UpdateBody::FinalSigs { stage, msg } => {
                5u8.write(w)?;
                stage.write(w)?;
                msg.write(w)?;
            }
            UpdateBody::Done(revealed) => {
                6u8.write(w)?;
                write_list(w, revealed)?;
            }
            UpdateBody::Abort(reason) => {
                7u8.write(w)?;
                let cut: String = reason.chars().take(MAX_ABORT_REASON).collect();
                cut.write(w)?;
            }
        }
        write_no_tlvs(w)
    }
}

impl Readable for UpdateMsg {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let factory = Readable::read(r)?;
        let update = Readable::read(r)?;
        let body = match tag(r)? {
            0 => UpdateBody::Advance(Box::new(Readable::read(r)?)),
            1 => UpdateBody::Sale(Box::new(Readable::read(r)?)),
            2 => UpdateBody::Nonces {
                stage: read_stage(r)?,
                msg: Readable::read(r)?,
            },
            3 => UpdateBody::AggNonces {
                stage: read_stage(r)?,
                msg: Readable::read(r)?,
            },
            4 => UpdateBody::Partials {
                stage: read_stage(r)?,
                msg: Readable::read(r)?,
            },
            5 => UpdateBody::FinalSigs {
                stage: read_stage(r)?,
                msg: Readable::read(r)?,
            },
            6 => UpdateBody::Done(read_list(r, 40, MAX_STOCKS)?),
            7 => {
                let reason = String::read(r)?;
                if reason.chars().count() > MAX_ABORT_REASON {
                    return Err(DecodeError::InvalidValue);
                }
                UpdateBody::Abort(reason)
            }
            _ => return Err(DecodeError::InvalidValue),
        };
        read_tlvs(r)?;
        Ok(UpdateMsg {
            factory,
            update,
            body,
        })
    }
}
