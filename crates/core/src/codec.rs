//! The binary encoding of the protocol's messages and parameters, on LDK's serialization
//! framework (`Writeable` / `Readable`, BOLT-style big-endian integers, `BigSize` counts, TLV
//! streams). Every message ends in a TLV stream, so that later versions can add odd (optional)
//! fields that older readers skip; an unknown even field is refused.
//!
//! Decoders take bytes from strangers: every length is checked against what is left to read
//! before anything is allocated, every enum tag is checked, and every failure is a typed
//! [`DecodeError`], never a panic.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::p2p::Magic;
use bitcoin::secp256k1::schnorr::Signature;
use bitcoin::{Amount, FeeRate, Network, PublicKey, ScriptBuf};
use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{BigSize, Readable, Writeable, Writer};

use crate::ceremony::{AggNonceMsg, FinalSigMsg, NonceMsg, PartialSigMsg, SignedTx};
use crate::factory::{ClientSpec, FactoryParams, ScriptHints, Signer, Slot, TxKind};
use crate::ledger::{Sale, StockVersion};
use crate::musig::{AggNonce, PartialSig, PubNonce};
use crate::shape::{FactoryConfig, FeePolicy, LeafKind, Punishment, Shape, TimeoutPolicy};
use crate::types::{ClientId, FactoryId, NodeId};

pub use lightning::ln::msgs::DecodeError as CodecError;

/// Encodes `value` into a new buffer.
pub fn encode<T: Writeable>(value: &T) -> Vec<u8> {
    value.encode()
}

/// Decodes a whole buffer as one `T`: trailing bytes are an error.
pub fn decode<T: Readable>(mut bytes: &[u8]) -> Result<T, DecodeError> {
    let value = T::read(&mut bytes)?;
    if bytes.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::InvalidValue)
    }
}

/// Writes a list: its length as a `BigSize`, then each item.
pub(crate) fn write_list<W: Writer, T: Writeable>(w: &mut W, items: &[T]) -> Result<(), io::Error> {
    BigSize(items.len() as u64).write(w)?;
    items.iter().try_for_each(|i| i.write(w))
}

/// Reads a list written by [`write_list`]. Items are at least `min_item_len` bytes, so a count
/// larger than the input could hold is refused before any allocation.
pub(crate) fn read_list<R: io::Read, T: Readable>(
    r: &mut R,
    min_item_len: usize,
    max_items: usize,
) -> Result<Vec<T>, DecodeError> {
    let n = BigSize::read(r)?.0;
    if n > max_items as u64 {
        return Err(DecodeError::InvalidValue);
    }
    let n = n as usize;
    // The reader's remaining length is not known here: cap the up-front allocation instead.
    let mut items = Vec::with_capacity(n.min(64 * 1024 / min_item_len.max(1)));
    for _ in 0..n {
        items.push(T::read(r)?);
    }
    Ok(items)
}

/// Reads a list written by [`write_list`] from the rest of a byte slice, each item with `item`.
/// Items are at least `min_item_len` bytes: a count the rest of the input cannot hold, or more
/// than `max_items`, is refused before anything is allocated.
pub(crate) fn read_list_with<'a, T, E: From<DecodeError>>(
    r: &mut &'a [u8],
    min_item_len: usize,
    max_items: usize,
    mut item: impl FnMut(&mut &'a [u8]) -> Result<T, E>,
) -> Result<Vec<T>, E> {
    let n = BigSize::read(r)?.0;
    if n > max_items as u64 {
        return Err(DecodeError::InvalidValue.into());
    }
    if n.saturating_mul(min_item_len.max(1) as u64) > r.len() as u64 {
        return Err(DecodeError::ShortRead.into());
    }
    let mut items = Vec::with_capacity(n as usize);
    for _ in 0..n {
        items.push(item(r)?);
    }
    Ok(items)
}

/// [`read_list_with`] for items that read themselves.
pub(crate) fn read_slice_list<T: Readable>(
    r: &mut &[u8],
    min_item_len: usize,
    max_items: usize,
) -> Result<Vec<T>, DecodeError> {
    read_list_with(r, min_item_len, max_items, |r| T::read(r))
}

/// The most entries one list of a message may hold (a factory of 65,536 clients signs fewer
/// transactions per party, and holds fewer clients, than this).
pub const MAX_LIST: usize = 1 << 20;

/// Writes a trailing TLV stream with no fields (the extension point of every message).
pub(crate) fn write_no_tlvs<W: Writer>(_w: &mut W) -> Result<(), io::Error> {
    Ok(())
}

/// Reads a message's trailing TLV stream, to the end of the input: unknown odd records are
/// skipped, unknown even ones refused.
pub fn read_extensions<R: io::Read>(r: &mut R) -> Result<(), DecodeError> {
    read_tlvs(r)
}

/// Reads a trailing TLV stream whose records `known` may understand: given a record's type and
/// value, it answers whether it took the record; others are skipped if odd and refused if even.
/// A record's value is read whole, so it is bounded by what is left of the input.
pub(crate) fn read_tlvs_with<R: io::Read>(
    r: &mut R,
    mut known: impl FnMut(u64, &[u8]) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut last: Option<u64> = None;
    loop {
        let mut first = [0u8; 1];
        match r.read(&mut first) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(_) => return Err(DecodeError::ShortRead),
        }
        let typ = read_bigsize_after(first[0], r)?;
        if last.is_some_and(|l| typ <= l) {
            return Err(DecodeError::InvalidValue);
        }
        last = Some(typ);
        let len = BigSize::read(r)?.0;
        // Read in bounded chunks: a length beyond the input fails on the input, not on memory.
        let mut value = Vec::new();
        let mut left = len;
        let mut buf = [0u8; 256];
        while left > 0 {
            let take = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..take])
                .map_err(|_| DecodeError::ShortRead)?;
            value.extend_from_slice(&buf[..take]);
            left -= take as u64;
        }
        if !known(typ, &value)? && typ % 2 == 0 {
            return Err(DecodeError::UnknownRequiredFeature);
        }
    }
}

/// Reads a trailing TLV stream: unknown odd records are skipped, unknown even ones refused.
pub(crate) fn read_tlvs<R: io::Read>(r: &mut R) -> Result<(), DecodeError> {
    read_tlvs_with(r, |_, _| Ok(false))
}

/// Finishes reading a `BigSize` whose first byte was already read (canonical encodings only).
fn read_bigsize_after<R: io::Read>(first: u8, r: &mut R) -> Result<u64, DecodeError> {
    let mut rest = vec![first];
    let extra = match first {
        0xfd => 2,
        0xfe => 4,
        0xff => 8,
        _ => 0,
    };
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf[..extra])
        .map_err(|_| DecodeError::ShortRead)?;
    rest.extend_from_slice(&buf[..extra]);
    BigSize::read(&mut &rest[..]).map(|b| b.0)
}

macro_rules! newtype_codec {
    ($t:ty, $inner:ty) => {
        impl Writeable for $t {
            fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
                self.0.write(w)
            }
        }
        impl Readable for $t {
            fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
                Ok(Self(<$inner>::read(r)?))
            }
        }
    };
}

newtype_codec!(FactoryId, [u8; 32]);
newtype_codec!(ClientId, u32);
newtype_codec!(NodeId, u32);
newtype_codec!(PubNonce, [u8; 66]);
newtype_codec!(AggNonce, [u8; 66]);
newtype_codec!(PartialSig, [u8; 32]);

/// Reads a one-byte enum tag.
pub(crate) fn tag<R: io::Read>(r: &mut R) -> Result<u8, DecodeError> {
    u8::read(r)
}

impl Writeable for Slot {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match *self {
            Slot::NodeInput(n) => (0u8, n).write(w),
            Slot::KickoffOut(n) => (1u8, n).write(w),
            Slot::Channel(c) => (2u8, c).write(w),
            Slot::FeeCoin(c) => (3u8, c).write(w),
            Slot::Stock(i) => (4u8, i).write(w),
            Slot::Sold(i) => (5u8, i).write(w),
            Slot::Change(i) => (6u8, i).write(w),
            Slot::TimeoutPart { top, kickoff, node } => (7u8, top, kickoff, node).write(w),
        }
    }
}

impl Readable for Slot {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(match tag(r)? {
            0 => Slot::NodeInput(Readable::read(r)?),
            1 => Slot::KickoffOut(Readable::read(r)?),
            2 => Slot::Channel(Readable::read(r)?),
            3 => Slot::FeeCoin(Readable::read(r)?),
            4 => Slot::Stock(Readable::read(r)?),
            5 => Slot::Sold(Readable::read(r)?),
            6 => Slot::Change(Readable::read(r)?),
            7 => Slot::TimeoutPart {
                top: Readable::read(r)?,
                kickoff: Readable::read(r)?,
                node: Readable::read(r)?,
            },
            _ => return Err(DecodeError::InvalidValue),
        })
    }
}

impl Writeable for TxKind {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match *self {
            TxKind::Kickoff(n) => (0u8, n).write(w),
            TxKind::State(n) => (1u8, n).write(w),
            TxKind::Timeout(s) => {
                2u8.write(w)?;
                s.write(w)
            }
            TxKind::Sale(i) => (3u8, i).write(w),
            TxKind::Punish(s) => {
                4u8.write(w)?;
                s.write(w)
            }
        }
    }
}

impl Readable for TxKind {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(match tag(r)? {
            0 => TxKind::Kickoff(Readable::read(r)?),
            1 => TxKind::State(Readable::read(r)?),
            2 => TxKind::Timeout(Readable::read(r)?),
            3 => TxKind::Sale(Readable::read(r)?),
            4 => TxKind::Punish(Readable::read(r)?),
            _ => return Err(DecodeError::InvalidValue),
        })
    }
}

/// Smallest encoding of a `(TxKind, _)` list entry's kind: a tag and a `u32`.
const MIN_KIND_LEN: usize = 5;

impl Writeable for Signer {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match *self {
            Signer::Lsp => 0u8.write(w),
            Signer::Client(c) => (1u8, c).write(w),
        }
    }
}

impl Readable for Signer {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(match tag(r)? {
            0 => Signer::Lsp,
            1 => Signer::Client(Readable::read(r)?),
            _ => return Err(DecodeError::InvalidValue),
        })
    }
}

/// A signed transaction: its role, the transaction (consensus encoding) and the output it spends.
impl Writeable for SignedTx {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.kind.write(w)?;
        self.tx.write(w)?;
        self.spent.write(w)
    }
}

impl Readable for SignedTx {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(SignedTx {
            kind: Readable::read(r)?,
            tx: Readable::read(r)?,
            spent: Readable::read(r)?,
        })
    }
}

/// Smallest encoding of a [`SignedTx`]: a kind, a transaction with no input or output (version,
/// two counts, lock time) and an output with an empty script.
pub(crate) const MIN_SIGNED_TX_LEN: usize = MIN_KIND_LEN + 10 + 9;

impl Writeable for Sale {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.buyer.write(w)?;
        self.stock.write(w)?;
        self.amount.to_sat().write(w)?;
        self.merged.write(w)
    }
}

impl Readable for Sale {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(Sale {
            buyer: Readable::read(r)?,
            stock: Readable::read(r)?,
            amount: Amount::from_sat(Readable::read(r)?),
            merged: Readable::read(r)?,
        })
    }
}

/// Encoding of a [`Sale`]: buyer, stock, amount, merged flag.
pub(crate) const SALE_LEN: usize = 4 + 4 + 8 + 1;

impl Writeable for StockVersion {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.version.write(w)?;
        self.hash.to_byte_array().write(w)
    }
}

impl Readable for StockVersion {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(StockVersion {
            version: Readable::read(r)?,
            hash: sha256::Hash::from_byte_array(Readable::read(r)?),
        })
    }
}

/// Encoding of a [`StockVersion`]: version and hash.
pub(crate) const STOCK_VERSION_LEN: usize = 4 + 32;

macro_rules! signing_msg_codec {
    ($t:ident, $list:ident, $item:ty, $item_len:expr) => {
        impl Writeable for $t {
            fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
                self.factory.write(w)?;
                write_list(w, &self.$list)?;
                write_no_tlvs(w)
            }
        }
        impl Readable for $t {
            fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
                let factory = Readable::read(r)?;
                let $list: Vec<(TxKind, $item)> = read_list(r, MIN_KIND_LEN + $item_len, MAX_LIST)?;
                read_tlvs(r)?;
                Ok($t { factory, $list })
            }
        }
    };
}

signing_msg_codec!(NonceMsg, nonces, PubNonce, 66);
signing_msg_codec!(AggNonceMsg, nonces, AggNonce, 66);
signing_msg_codec!(PartialSigMsg, partials, PartialSig, 32);
signing_msg_codec!(FinalSigMsg, signatures, Signature, 64);

/// A compressed public key (the only form factory keys take).
pub(crate) fn write_key<W: Writer>(w: &mut W, key: &PublicKey) -> Result<(), io::Error> {
    if !key.compressed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "uncompressed keys have no encoding",
        ));
    }
    key.inner.write(w)
}

pub(crate) fn read_key<R: io::Read>(r: &mut R) -> Result<PublicKey, DecodeError> {
    let inner: bitcoin::secp256k1::PublicKey = Readable::read(r)?;
    Ok(PublicKey::new(inner))
}

impl Writeable for Shape {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        write_list(w, &self.arity)?;
        self.static_levels.write(w)?;
        match self.leaf {
            LeafKind::Dw => 0u8.write(w)?,
            LeafKind::PseudoSpilman { arity } => (1u8, arity).write(w)?,
        }
        self.states_per_layer.write(w)?;
        self.step_blocks.write(w)
    }
}

impl Readable for Shape {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        // A tree deeper than 64 levels would hold more clients than any factory can.
        let arity = read_list(r, 1, 64)?;
        let static_levels = Readable::read(r)?;
        let leaf = match tag(r)? {
            0 => LeafKind::Dw,
            1 => LeafKind::PseudoSpilman {
                arity: Readable::read(r)?,
            },
            _ => return Err(DecodeError::InvalidValue),
        };
        Ok(Shape {
            arity,
            static_levels,
            leaf,
            states_per_layer: Readable::read(r)?,
            step_blocks: Readable::read(r)?,
        })
    }
}

fn write_network<W: Writer>(w: &mut W, network: Network) -> Result<(), io::Error> {
    network.magic().to_bytes().write(w)
}

fn read_network<R: io::Read>(r: &mut R) -> Result<Network, DecodeError> {
    let magic: [u8; 4] = Readable::read(r)?;
    Network::from_magic(Magic::from_bytes(magic)).ok_or(DecodeError::InvalidValue)
}

impl Writeable for FactoryConfig {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.shape.write(w)?;
        match self.timeout_policy {
            TimeoutPolicy::Inverted => 0u8,
            TimeoutPolicy::LspSweep => 1u8,
        }
        .write(w)?;
        self.active_blocks.write(w)?;
        self.dying_blocks.write(w)?;
        self.confirmation_budget.write(w)?;
        self.ewt_ceiling.write(w)?;
        self.fees.tree_fee_rate.to_sat_per_kwu().write(w)?;
        self.fees.state_fee_step.to_sat_per_kwu().write(w)?;
        self.stock_per_client.to_sat().write(w)?;
        self.client_fee_coin.to_sat().write(w)?;
        self.stock_csv.write(w)?;
        write_network(w, self.network)?;
        match self.punishment {
            Punishment::Poison => 0u8,
            Punishment::Burn => 1u8,
        }
        .write(w)
    }
}

impl Readable for FactoryConfig {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let shape = Readable::read(r)?;
        let timeout_policy = match tag(r)? {
            0 => TimeoutPolicy::Inverted,
            1 => TimeoutPolicy::LspSweep,
            _ => return Err(DecodeError::InvalidValue),
        };
        let active_blocks = Readable::read(r)?;
        let dying_blocks = Readable::read(r)?;
        let confirmation_budget = Readable::read(r)?;
        let ewt_ceiling = Readable::read(r)?;
        let fees = FeePolicy {
            tree_fee_rate: FeeRate::from_sat_per_kwu(Readable::read(r)?),
            state_fee_step: FeeRate::from_sat_per_kwu(Readable::read(r)?),
        };
        let stock_per_client = Amount::from_sat(Readable::read(r)?);
        let client_fee_coin = Amount::from_sat(Readable::read(r)?);
        let stock_csv = Readable::read(r)?;
        let network = read_network(r)?;
        let punishment = match tag(r)? {
            0 => Punishment::Poison,
            1 => Punishment::Burn,
            _ => return Err(DecodeError::InvalidValue),
        };
        Ok(FactoryConfig {
            shape,
            timeout_policy,
            active_blocks,
            dying_blocks,
            confirmation_budget,
            ewt_ceiling,
            fees,
            stock_per_client,
            client_fee_coin,
            stock_csv,
            network,
            punishment,
        })
    }
}

impl Writeable for ClientSpec {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        write_key(w, &self.key)?;
        self.capacity.to_sat().write(w)?;
        self.payout.write(w)
    }
}

impl Readable for ClientSpec {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(ClientSpec {
            key: read_key(r)?,
            capacity: Amount::from_sat(Readable::read(r)?),
            payout: Readable::read(r)?,
        })
    }
}

/// A stock output's revocation hash, as bytes on the wire.
struct StockHash(sha256::Hash);

impl Writeable for StockHash {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.0.to_byte_array().write(w)
    }
}

impl Readable for StockHash {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        Ok(StockHash(sha256::Hash::from_byte_array(Readable::read(r)?)))
    }
}

/// Smallest encoding of a client: key, capacity and an empty script's length.
const MIN_CLIENT_LEN: usize = 33 + 8 + 2;

impl Writeable for FactoryParams {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.id.write(w)?;
        self.config.write(w)?;
        write_key(w, &self.lsp_key)?;
        write_list(w, &self.clients)?;
        self.creation_height.write(w)?;
        let hashes: Vec<StockHash> = self.stock_hashes.iter().copied().map(StockHash).collect();
        write_list(w, &hashes)?;
        // Opening balances: an even record, so that software that does not know them refuses
        // the parameters instead of opening every channel at zero. Absent when all are zero.
        if self.opening_msat.iter().any(|m| *m > 0) {
            let mut value = Vec::new();
            write_list(&mut value, &self.opening_msat)?;
            BigSize(OPENING_TLV).write(w)?;
            BigSize(value.len() as u64).write(w)?;
            w.write_all(&value)?;
        }
        Ok(())
    }
}

/// The TLV record type of [`FactoryParams::opening_msat`].
const OPENING_TLV: u64 = 2;

impl Readable for FactoryParams {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let id = Readable::read(r)?;
        let config = Readable::read(r)?;
        let lsp_key = read_key(r)?;
        let clients = read_list(r, MIN_CLIENT_LEN, MAX_LIST)?;
        let creation_height = Readable::read(r)?;
        let hashes: Vec<StockHash> = read_list(r, 32, MAX_LIST)?;
        let mut opening_msat = Vec::new();
        read_tlvs_with(r, |typ, value| {
            if typ != OPENING_TLV {
                return Ok(false);
            }
            let mut value = value;
            opening_msat = read_list_with(&mut value, 8, MAX_LIST, u64::read)?;
            if !value.is_empty() || opening_msat.iter().all(|m| *m == 0) {
                // Trailing bytes, or a record that should have been left out: not canonical.
                return Err(DecodeError::InvalidValue);
            }
            Ok(true)
        })?;
        Ok(FactoryParams {
            id,
            config,
            lsp_key,
            clients,
            creation_height,
            stock_hashes: hashes.into_iter().map(|h| h.0).collect(),
            opening_msat,
        })
    }
}

/// Script hints: a list of (slot, script), inside a message that carries the extensions.
impl Writeable for ScriptHints {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        BigSize(self.scripts.len() as u64).write(w)?;
        for (slot, script) in &self.scripts {
            slot.write(w)?;
            script.write(w)?;
        }
        Ok(())
    }
}

impl Readable for ScriptHints {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let n = BigSize::read(r)?.0;
        if n > MAX_LIST as u64 {
            return Err(DecodeError::InvalidValue);
        }
        let mut scripts = Vec::new();
        for _ in 0..n {
            let slot = Slot::read(r)?;
            scripts.push((slot, read_script(r)?));
        }
        Ok(ScriptHints { scripts })
    }
}

/// A script as it travels in messages: at most 10,000 bytes (consensus' script size limit).
pub fn read_script<R: io::Read>(r: &mut R) -> Result<ScriptBuf, DecodeError> {
    let script: ScriptBuf = Readable::read(r)?;
    if script.len() > 10_000 {
        return Err(DecodeError::InvalidValue);
    }
    Ok(script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::FactoryConfig;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use proptest::prelude::*;

    fn key(i: u32) -> PublicKey {
        let mut sk = [1u8; 32];
        sk[28..].copy_from_slice(&(i + 1).to_be_bytes());
        let sk = SecretKey::from_slice(&sk).unwrap();
        PublicKey::new(sk.public_key(&Secp256k1::new()))
    }

    fn params(n: usize) -> FactoryParams {
        FactoryParams {
            id: FactoryId([7; 32]),
            config: FactoryConfig {
                shape: Shape {
                    leaf: LeafKind::PseudoSpilman { arity: 3 },
                    ..Shape::default()
                },
                punishment: Punishment::Burn,
                timeout_policy: TimeoutPolicy::LspSweep,
                ..FactoryConfig::regtest()
            },
            lsp_key: key(1_000_000),
            clients: (0..n)
                .map(|i| ClientSpec::new(key(i as u32 + 1), Amount::from_sat(1000 + i as u64)))
                .collect(),
            creation_height: 123,
            stock_hashes: vec![sha256::Hash::hash(b"x"), sha256::Hash::hash(b"y")],
            opening_msat: Vec::new(),
        }
    }

    #[test]
    fn params_round_trip() {
        for n in [0, 1, 5, 300] {
            let p = params(n);
            assert_eq!(decode::<FactoryParams>(&encode(&p)).unwrap(), p);
        }
    }

    #[test]
    fn opening_balances_round_trip_as_a_required_record() {
        let mut p = params(5);
        let plain = encode(&p);
        // All zero is the plain encoding: the record is left out.
        p.opening_msat = vec![0; 5];
        assert_eq!(encode(&p), plain);
        p.opening_msat = vec![0, 1, 999_999, 0, u64::MAX];
        let bytes = encode(&p);
        assert_eq!(decode::<FactoryParams>(&bytes).unwrap(), p);
        // type 2, length 1 + 5 * 8, count 5, then the balances.
        assert_eq!(&bytes[plain.len()..plain.len() + 3], &[2, 41, 5]);
        // A decoder that did not know the record would refuse it (it is even).
        let mut tail = &bytes[plain.len()..];
        assert!(matches!(
            read_tlvs(&mut tail),
            Err(DecodeError::UnknownRequiredFeature)
        ));
        // Not canonical: a record of zeros, trailing bytes in the record, a truncated one.
        let mut zeros = plain.clone();
        zeros.extend_from_slice(&[2, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(decode::<FactoryParams>(&zeros).is_err());
        let mut trailing = plain.clone();
        trailing.extend_from_slice(&[2, 10, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        assert!(decode::<FactoryParams>(&trailing).is_err());
        assert!(decode::<FactoryParams>(&bytes[..bytes.len() - 1]).is_err());
        // An odd record after it is skipped.
        let mut odd = bytes.clone();
        odd.extend_from_slice(&[3, 1, 0xaa]);
        assert_eq!(decode::<FactoryParams>(&odd).unwrap(), p);
    }

    #[test]
    fn every_kind_round_trips() {
        let slots = [
            Slot::NodeInput(NodeId(1)),
            Slot::KickoffOut(NodeId(2)),
            Slot::Channel(ClientId(3)),
            Slot::FeeCoin(ClientId(4)),
            Slot::Stock(5),
            Slot::Sold(6),
            Slot::Change(u32::MAX),
            Slot::TimeoutPart {
                top: NodeId(0),
                kickoff: true,
                node: NodeId(7),
            },
        ];
        let mut kinds = vec![
            TxKind::Kickoff(NodeId(0)),
            TxKind::State(NodeId(9)),
            TxKind::Sale(1),
        ];
        for s in slots {
            kinds.push(TxKind::Timeout(s));
            kinds.push(TxKind::Punish(s));
        }
        let msg = NonceMsg {
            factory: FactoryId([1; 32]),
            nonces: kinds.iter().map(|k| (*k, PubNonce([9; 66]))).collect(),
        };
        assert_eq!(decode::<NonceMsg>(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn odd_extensions_are_skipped_even_ones_refused() {
        let msg = PartialSigMsg {
            factory: FactoryId([2; 32]),
            partials: vec![(TxKind::Kickoff(NodeId(0)), PartialSig([3; 32]))],
        };
        let mut bytes = encode(&msg);
        let plain = bytes.clone();
        bytes.extend_from_slice(&[1, 2, 0xaa, 0xbb, 3, 0]);
        assert_eq!(decode::<PartialSigMsg>(&bytes).unwrap(), msg);
        let mut even = plain.clone();
        even.extend_from_slice(&[2, 0]);
        assert_eq!(
            decode::<PartialSigMsg>(&even),
            Err(DecodeError::UnknownRequiredFeature)
        );
        // Records out of order, or a record longer than the message.
        let mut unordered = plain.clone();
        unordered.extend_from_slice(&[3, 0, 1, 0]);
        assert!(decode::<PartialSigMsg>(&unordered).is_err());
        let mut long = plain;
        long.extend_from_slice(&[1, 9, 0]);
        assert_eq!(decode::<PartialSigMsg>(&long), Err(DecodeError::ShortRead));
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut bytes = FactoryId([0; 32]).encode();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(decode::<FinalSigMsg>(&bytes).is_err());
        let mut within = FactoryId([0; 32]).encode();
        within.extend_from_slice(&[0xfe, 0x00, 0x0f, 0xff, 0xff]);
        assert_eq!(decode::<FinalSigMsg>(&within), Err(DecodeError::ShortRead));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode::<FactoryParams>(&bytes);
            let _ = decode::<NonceMsg>(&bytes);
            let _ = decode::<AggNonceMsg>(&bytes);
            let _ = decode::<PartialSigMsg>(&bytes);
            let _ = decode::<FinalSigMsg>(&bytes);
        }

        #[test]
        fn truncations_fail(cut in 0usize..10_000) {
            let bytes = encode(&params(40));
            let cut = cut % bytes.len();
            prop_assert!(decode::<FactoryParams>(&bytes[..cut]).is_err());
        }
    }
}
