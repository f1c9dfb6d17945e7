//! The messages of a cooperative close between the LSP and one client, and their encoding.
//!
//! A close has an id chosen by the LSP, unique among its closes, so that a message of an
//! abandoned close is never taken for one of the next. The LSP proposes the terms; each client
//! answers with its public nonce (or refuses, with `Abort`); the LSP sends the aggregated nonce;
//! each client answers with its partial signature; the LSP sends
//! `Done` with the aggregated signature (each client completes the transaction it built itself,
//! so the message stays small at any factory size), or abandons the close (`Abort`).

use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::{Amount, FeeRate, OutPoint, PublicKey, ScriptBuf, TxOut, Txid};
use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{Readable, Writeable, Writer};

use super::{CloseTerms, Successor};
use crate::codec::{
    read_key, read_list, read_script, read_tlvs, tag, write_key, write_list, write_no_tlvs,
    MAX_LIST,
};
use crate::musig::{AggNonce, PartialSig, PubNonce};
use crate::types::FactoryId;

/// The longest reason an abort carries.
pub const MAX_CLOSE_REASON: usize = 1_000;

/// One message of a cooperative close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseMsg {
    /// The factory closed.
    pub factory: FactoryId,
    /// The close's id (the LSP's, unique among its closes).
    pub close: u64,
    /// What it says.
    pub body: CloseBody,
}

/// What a close message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseBody {
    /// LSP to client: the terms.
    Propose(Box<CloseTerms>),
    /// Client to LSP: its public nonce.
    Nonce(PubNonce),
    /// LSP to client: the aggregated nonce.
    AggNonce(AggNonce),
    /// Client to LSP: its partial signature.
    Partial(PartialSig),
    /// LSP to client: the close's aggregated signature (the transaction is broadcast).
    Done(Signature),
    /// Either way: the close is abandoned (or refused), and why.
    Abort(String),
    /// LSP to client, a rotation's first step: the LSP invites the client to roll its balance
    /// in this factory, which the LSP counts as `balance_msat` (every channel summed), into
    /// the successor the close will fund.
    Invite {
        /// The client's balance in the factory, as the LSP counts it.
        balance_msat: u64,
    },
    /// Client to LSP: it rolls into the successor, as a client joining it.
    Roll {
        /// Its key for the successor (fresh: every factory has its own).
        key: PublicKey,
        /// Where its fee coin and timeout payouts in the successor go.
        payout: ScriptBuf,
        /// The capacity of its channel in the successor (at least its balance).
        capacity_sat: u64,
    },
    /// LSP to client, the fallback when the factory cannot rotate (a member is away): the
    /// client joins a new factory and pays what it holds here (`balance_msat`, as the LSP
    /// counts it) into its channel there, an ordinary payment through the LSP.
    Migrate {
        /// The client's balance in the factory, as the LSP counts it.
        balance_msat: u64,
    },
}

impl CloseBody {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            CloseBody::Propose(_) => "close proposal",
            CloseBody::Nonce(_) => "close nonce",
            CloseBody::AggNonce(_) => "close aggregated nonce",
            CloseBody::Partial(_) => "close partial signature",
            CloseBody::Done(_) => "close done",
            CloseBody::Abort(_) => "close abort",
            CloseBody::Invite { .. } => "rotation invitation",
            CloseBody::Roll { .. } => "rotation roll",
            CloseBody::Migrate { .. } => "migration invitation",
        }
    }
}

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

struct Sat(Amount);

impl Writeable for Sat {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.0.to_sat().write(w)
    }
}

impl Readable for Sat {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let sat: u64 = Readable::read(r)?;
        if sat > Amount::MAX_MONEY.to_sat() {
            return Err(DecodeError::InvalidValue);
        }
        Ok(Sat(Amount::from_sat(sat)))
    }
}

impl Writeable for CloseTerms {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.factory.write(w)?;
        write_outpoint(w, &self.funding)?;
        let clients: Vec<Sat> = self.clients.iter().map(|a| Sat(*a)).collect();
        write_list(w, &clients)?;
        self.lsp_script.write(w)?;
        self.fee_rate.to_sat_per_kwu().write(w)?;
        match &self.successor {
            None => 0u8.write(w)?,
            Some(s) => {
                1u8.write(w)?;
                s.output.value.to_sat().write(w)?;
                s.output.script_pubkey.write(w)?;
                write_list(w, &s.rolled)?;
            }
        }
        write_no_tlvs(w)
    }
}

impl Readable for CloseTerms {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let factory = Readable::read(r)?;
        let funding = read_outpoint(r)?;
        let clients: Vec<Sat> = read_list(r, 8, MAX_LIST)?;
        let lsp_script = read_script(r)?;
        let fee_rate = FeeRate::from_sat_per_kwu(Readable::read(r)?);
        let successor = match tag(r)? {
            0 => None,
            1 => {
                let Sat(value) = Readable::read(r)?;
                let script_pubkey = read_script(r)?;
                Some(Successor {
                    output: TxOut {
                        value,
                        script_pubkey,
                    },
                    rolled: read_list(r, 4, MAX_LIST)?,
                })
            }
            _ => return Err(DecodeError::InvalidValue),
        };
        read_tlvs(r)?;
        Ok(CloseTerms {
            factory,
            funding,
            clients: clients.into_iter().map(|s| s.0).collect(),
            lsp_script,
            fee_rate,
            successor,
        })
    }
}

impl Writeable for CloseMsg {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.factory.write(w)?;
        self.close.write(w)?;
        match &self.body {
            CloseBody::Propose(t) => {
                0u8.write(w)?;
                t.write(w)?;
            }
            CloseBody::Nonce(n) => {
                1u8.write(w)?;
                n.write(w)?;
            }
            CloseBody::AggNonce(n) => {
                2u8.write(w)?;
                n.write(w)?;
            }
            CloseBody::Partial(p) => {
                3u8.write(w)?;
                p.write(w)?;
            }
            CloseBody::Done(sig) => {
                4u8.write(w)?;
                sig.write(w)?;
            }
            CloseBody::Abort(reason) => {
                5u8.write(w)?;
                let cut: String = reason.chars().take(MAX_CLOSE_REASON).collect();
                cut.write(w)?;
            }
            CloseBody::Invite { balance_msat } => {
                6u8.write(w)?;
                balance_msat.write(w)?;
            }
            CloseBody::Roll {
                key,
                payout,
                capacity_sat,
            } => {
                7u8.write(w)?;
                write_key(w, key)?;
                payout.write(w)?;
                capacity_sat.write(w)?;
            }
            CloseBody::Migrate { balance_msat } => {
                8u8.write(w)?;
                balance_msat.write(w)?;
            }
        }
        write_no_tlvs(w)
    }
}

impl Readable for CloseMsg {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let factory = Readable::read(r)?;
        let close = Readable::read(r)?;
        let body = match tag(r)? {
            0 => CloseBody::Propose(Box::new(Readable::read(r)?)),
            1 => CloseBody::Nonce(Readable::read(r)?),
            2 => CloseBody::AggNonce(Readable::read(r)?),
            3 => CloseBody::Partial(Readable::read(r)?),
            4 => CloseBody::Done(Readable::read(r)?),
            5 => {
                let reason = String::read(r)?;
                if reason.chars().count() > MAX_CLOSE_REASON {
                    return Err(DecodeError::InvalidValue);
                }
                CloseBody::Abort(reason)
            }
            6 => CloseBody::Invite {
                balance_msat: Readable::read(r)?,
            },
            7 => CloseBody::Roll {
                key: read_key(r)?,
                payout: read_script(r)?,
                capacity_sat: {
                    let sat: u64 = Readable::read(r)?;
                    if sat > Amount::MAX_MONEY.to_sat() {
                        return Err(DecodeError::InvalidValue);
                    }
                    sat
                },
            },
            8 => CloseBody::Migrate {
                balance_msat: Readable::read(r)?,
            },
            _ => return Err(DecodeError::InvalidValue),
        };
        read_tlvs(r)?;
        Ok(CloseMsg {
            factory,
            close,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::types::ClientId;
    use bitcoin::hashes::Hash;
    use proptest::prelude::*;

    fn terms(successor: bool) -> CloseTerms {
        CloseTerms {
            factory: FactoryId([3; 32]),
            funding: OutPoint {
                txid: Txid::from_byte_array([9; 32]),
                vout: 2,
            },
            clients: vec![Amount::from_sat(1), Amount::ZERO, Amount::from_sat(70_000)],
            lsp_script: ScriptBuf::from_bytes(vec![0x51, 0x20, 7]),
            fee_rate: FeeRate::from_sat_per_kwu(750),
            successor: successor.then(|| Successor {
                output: TxOut {
                    value: Amount::from_sat(500_000),
                    script_pubkey: ScriptBuf::from_bytes(vec![0x51; 34]),
                },
                rolled: vec![ClientId(0), ClientId(2)],
            }),
        }
    }

    fn msgs() -> Vec<CloseMsg> {
        let m = |body| CloseMsg {
            factory: FactoryId([1; 32]),
            close: 7,
            body,
        };
        vec![
            m(CloseBody::Propose(Box::new(terms(false)))),
            m(CloseBody::Propose(Box::new(terms(true)))),
            m(CloseBody::Nonce(PubNonce([2; 66]))),
            m(CloseBody::AggNonce(AggNonce([3; 66]))),
            m(CloseBody::Partial(PartialSig([4; 32]))),
            m(CloseBody::Done(
                Signature::from_slice(&[5; 64]).expect("64 bytes"),
            )),
            m(CloseBody::Abort("wrong amount".into())),
            m(CloseBody::Invite {
                balance_msat: 12_345_678,
            }),
            m(CloseBody::Roll {
                key: PublicKey::new(
                    bitcoin::secp256k1::SecretKey::from_slice(&[3; 32])
                        .unwrap()
                        .public_key(&bitcoin::secp256k1::Secp256k1::new()),
                ),
                payout: ScriptBuf::from_bytes(vec![0x51; 34]),
                capacity_sat: 250_000,
            }),
            m(CloseBody::Migrate {
                balance_msat: 9_876_543,
            }),
        ]
    }

    #[test]
    fn round_trips() {
        for msg in msgs() {
            assert_eq!(decode::<CloseMsg>(&encode(&msg)).unwrap(), msg, "{msg:?}");
        }
    }

    #[test]
    fn refuses_bad_tags_and_amounts() {
        let mut bytes = encode(&msgs()[2]);
        bytes[40] = 9; // the body's tag
        assert!(decode::<CloseMsg>(&bytes).is_err());
        // A client amount above the 21 million bitcoin.
        let mut t = encode(&terms(false));
        let at = 32 + 36 + 1;
        t[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode::<CloseTerms>(&t).is_err());
        // An abort reason over the limit.
        let long = CloseMsg {
            factory: FactoryId([1; 32]),
            close: 1,
            body: CloseBody::Abort("x".repeat(MAX_CLOSE_REASON + 1)),
        };
        let mut bytes = Vec::new();
        long.factory.write(&mut bytes).unwrap();
        long.close.write(&mut bytes).unwrap();
        5u8.write(&mut bytes).unwrap();
        "x".repeat(MAX_CLOSE_REASON + 1).write(&mut bytes).unwrap();
        assert!(decode::<CloseMsg>(&bytes).is_err());
        // The writer cuts it.
        assert!(decode::<CloseMsg>(&encode(&long)).is_ok());
    }

    proptest! {
        #[test]
        fn truncations_fail(which in 0usize..9, cut in 0usize..10_000) {
            let bytes = encode(&msgs()[which]);
            let cut = cut % bytes.len();
            prop_assert!(decode::<CloseMsg>(&bytes[..cut]).is_err());
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode::<CloseMsg>(&bytes);
            let _ = decode::<CloseTerms>(&bytes);
        }
    }
}
