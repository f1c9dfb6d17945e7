//! The messages of the SuperScalar protocol between an LSP and its clients, their Lightning
//! message types (odd, so that a Lightning node that does not speak SuperScalar ignores them),
//! their size limits and their decoding.

use bitcoin::{Network, OutPoint, PublicKey, ScriptBuf, Transaction, Txid};
use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::ln::wire::Type;
use lightning::util::ser::{LengthLimitedRead, Readable, Writeable, Writer};
use superscalar_core::ceremony::{AggNonceMsg, FinalSigMsg, NonceMsg, PartialSigMsg};
use superscalar_core::channel::link::{ChannelOffer, LinkMsg};
use superscalar_core::channel::ChannelRef;
use superscalar_core::close::msg::CloseMsg;
use superscalar_core::codec::read_script;
use superscalar_core::update::UpdateMsg;
use superscalar_core::{ClientId, FactoryId, FactoryParams};

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this implementation still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Lightning message types of the SuperScalar protocol: the odd numbers of 54001..=54099 (clear
/// of LSPS0's 37913 and bLIP-56's 32800). Even numbers of the range stay unused, so that every
/// message is one a peer may ignore if it does not know it.
pub mod types {
    /// First message on every connection: versions and network.
    pub const HELLO: u16 = 54001;
    /// A refusal or failure, with a code and a readable reason.
    pub const ERROR: u16 = 54003;
    /// A client asks to join the next factory.
    pub const JOIN: u16 = 54005;
    /// One chunk of a factory's parameters, with the funding outpoint and the client's index.
    pub const PROPOSAL: u16 = 54007;
    /// Round 1, client to LSP: public nonces.
    pub const NONCES: u16 = 54009;
    /// Round 2, LSP to client: aggregated nonces of the client's transactions.
    pub const AGG_NONCES: u16 = 54011;
    /// Round 2, client to LSP: partial signatures.
    pub const PARTIALS: u16 = 54013;
    /// LSP to client: final signatures of the client's transactions.
    pub const FINAL_SIGS: u16 = 54015;
    /// LSP to client: the funding transaction is broadcast.
    pub const LIVE: u16 = 54017;
    /// LSP to client: a ceremony is abandoned.
    pub const ABORT: u16 = 54019;
    /// LSP to client: the output scripts beside the client's path (after its proposal).
    pub const HINTS: u16 = 54021;
    /// Client to LSP, after a restart: where is this factory (final signatures or abort)?
    pub const RESUME: u16 = 54023;
    /// LSP to client, once a factory is live: the LSP's side of the client's leaf channel.
    pub const OPEN_CHANNEL: u16 = 54025;
    /// Client to LSP: its side of the leaf channel.
    pub const ACCEPT_CHANNEL: u16 = 54027;
    /// Either way: a step of a leaf channel's rounds.
    pub const CHANNEL: u16 = 54029;
    /// Client to LSP: issue an invoice for this payment hash.
    pub const INVOICE_REQUEST: u16 = 54031;
    /// LSP to client: the invoice.
    pub const INVOICE: u16 = 54033;
    /// Either way: a step of a factory update (an advance or a liquidity sale).
    pub const UPDATE: u16 = 54035;
    /// Client to LSP: sell me inbound liquidity.
    pub const LIQUIDITY_REQUEST: u16 = 54037;
    /// LSP to client: the fee and its invoice, or why not.
    pub const LIQUIDITY_OFFER: u16 = 54039;
    /// Either way: a step of a cooperative close.
    pub const CLOSE: u16 = 54041;
    /// The highest type in use.
    pub const LAST: u16 = CLOSE;
    /// The range every SuperScalar message type falls in.
    pub const RANGE: std::ops::RangeInclusive<u16> = 54000..=54099;
}

/// The largest message body the Lightning transport carries (65,535 bytes less the type).
pub const MAX_BODY: usize = 65_533;
/// Bytes of factory parameters one proposal chunk carries at most.
pub const MAX_CHUNK: usize = 60_000;
/// Chunks one factory's parameters may span (about 15 MB: 190,000 clients).
pub const MAX_CHUNKS: u16 = 256;
/// The longest reason an error or abort message may carry.
pub const MAX_REASON: usize = 1_000;

/// The first message on every connection, from both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Newest protocol version the sender speaks.
    pub version: u16,
    /// Oldest protocol version the sender speaks.
    pub min_version: u16,
    /// The network the sender is on.
    pub network: Network,
}

impl Hello {
    /// This implementation's hello on `network`.
    pub fn ours(network: Network) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            network,
        }
    }

    /// The version both sides speak, or why there is none.
    pub fn agree(&self, theirs: &Hello) -> Result<u16, String> {
        if self.network != theirs.network {
            return Err(format!(
                "network mismatch: we are on {}, the peer on {}",
                self.network, theirs.network
            ));
        }
        if theirs.min_version > theirs.version {
            return Err(format!(
                "the peer's versions are inverted ({}..={})",
                theirs.min_version, theirs.version
            ));
        }
        let version = self.version.min(theirs.version);
        if version < self.min_version.max(theirs.min_version) {
            return Err(format!(
                "no common protocol version: we speak {}..={}, the peer {}..={}",
                self.min_version, self.version, theirs.min_version, theirs.version
            ));
        }
        Ok(version)
    }
}

/// Why a message or a step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The message could not be decoded, was too large, or is of an unknown even type.
    Malformed,
    /// No common protocol version, or another network.
    Incompatible,
    /// The message was not expected now (before hello, unknown factory, wrong round).
    Unexpected,
    /// The message was well formed but its content is refused (bad signature, wrong amount).
    Refused,
    /// The sender cannot go on (its own failure).
    Internal,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::Incompatible => 2,
            ErrorCode::Unexpected => 3,
            ErrorCode::Refused => 4,
            ErrorCode::Internal => 5,
            ErrorCode::Other(c) => c,
        }
    }

    fn from_u16(c: u16) -> Self {
        match c {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::Incompatible,
            3 => ErrorCode::Unexpected,
            4 => ErrorCode::Refused,
            5 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

/// A refusal or failure, sent before the sender drops the connection or the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    /// What kind of failure.
    pub code: ErrorCode,
    /// The factory concerned, if any.
    pub factory: Option<FactoryId>,
    /// A reason for people (sanitised by the receiver before it is shown).
    pub reason: String,
}

/// A client asks to join the LSP's next factory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The client's key for that factory (fresh per factory).
    pub key: PublicKey,
    /// Where the client's fee coin and timeout payouts go.
    pub payout: ScriptBuf,
    /// The channel capacity the client asks for, in satoshis.
    pub capacity_sat: u64,
}

/// One chunk of a factory's parameters (the whole of them exceeds one Lightning message from
/// about 800 clients on), with what the client needs to sign: the funding outpoint and its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalChunk {
    /// The factory.
    pub factory: FactoryId,
    /// The outpoint the factory spends.
    pub funding: OutPoint,
    /// The receiving client's position in the factory.
    pub client: ClientId,
    /// This chunk's index (from 0).
    pub index: u16,
    /// How many chunks the parameters take.
    pub count: u16,
    /// The chunk's bytes of the encoded [`FactoryParams`].
    pub bytes: Vec<u8>,
}

/// The LSP has broadcast the factory's funding transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The factory.
    pub factory: FactoryId,
    /// The funding transaction (the client checks it against the proposal and its own chain).
    pub funding_tx: Transaction,
}

/// The LSP abandons a ceremony (the client forgets its nonces; a new proposal may follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    /// The factory.
    pub factory: FactoryId,
    /// Why.
    pub reason: String,
}

/// LSP to client, after the proposal: the output scripts of the slots beside the client's path,
/// so that it aggregates only its own path's keys (see `superscalar_core::factory::ScriptHints`
/// for why taking them from the LSP is safe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hints {
    /// The factory.
    pub factory: FactoryId,
    /// The client they are for.
    pub client: ClientId,
    /// The scripts.
    pub hints: superscalar_core::factory::ScriptHints,
}

/// Client to LSP, after a restart in the middle of a factory's ceremony (its partial
/// signatures sent): the LSP answers with the final signatures and `live` if the factory was
/// signed, or `abort` if it was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The factory.
    pub factory: FactoryId,
}

/// One side of a leaf channel, for the other (`open_channel` from the LSP, `accept_channel`
/// from the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOpen {
    /// The factory whose leaf funds the channel.
    pub factory: FactoryId,
    /// Which of the client's channels in that factory.
    pub channel: ChannelRef,
    /// The sender's announcement and limits.
    pub offer: ChannelOffer,
}

/// A step of a leaf channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStep {
    /// The factory whose leaf funds the channel.
    pub factory: FactoryId,
    /// Which of the client's channels in that factory.
    pub channel: ChannelRef,
    /// The step.
    pub msg: LinkMsg,
}

/// The longest invoice description.
pub const MAX_DESCRIPTION: usize = 639;
/// The longest BOLT-11 invoice carried.
pub const MAX_INVOICE: usize = 7_089;

/// A client asks the LSP to issue an invoice, payable to the LSP's node id, for a payment hash
/// whose preimage only the client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRequest {
    /// The payment hash.
    pub payment_hash: [u8; 32],
    /// The amount (msat), or 0 for any.
    pub amount_msat: u64,
    /// What for.
    pub description: String,
    /// Seconds the invoice is valid.
    pub expiry_secs: u32,
}

/// The LSP's invoice, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceReply {
    /// The payment hash it is for.
    pub payment_hash: [u8; 32],
    /// The BOLT-11 text, or empty if refused.
    pub bolt11: String,
    /// Why it was refused (empty if issued).
    pub error: String,
}

/// A client asks the LSP for a channel of `amount_sat` of inbound liquidity in its leaf of
/// `factory`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiquidityRequest {
    /// The factory.
    pub factory: FactoryId,
    /// The channel's capacity (sat).
    pub amount_sat: u64,
}

/// The LSP's answer to a [`LiquidityRequest`]: the fee and an invoice for it (the LSP holds
/// the fee's HTLC until the sale completes and fails it back if it does not), or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiquidityOffer {
    /// The factory.
    pub factory: FactoryId,
    /// The channel's capacity (sat).
    pub amount_sat: u64,
    /// The fee (sat).
    pub fee_sat: u64,
    /// The BOLT-11 invoice of the fee, or empty if refused.
    pub bolt11: String,
    /// Why it was refused (empty if offered).
    pub error: String,
}

/// Why an incoming message was refused before it reached the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A message of an even type nobody here knows (BOLT-1: "it's OK to be odd").
    UnknownEvenType(u16),
    /// A message larger than its type allows.
    Oversized {
        /// The message type.
        ty: u16,
        /// Its body's length.
        len: u64,
        /// The most its type allows.
        max: usize,
    },
    /// A message that does not decode (truncated, bad value, unknown required field).
    Malformed {
        /// The message type.
        ty: u16,
        /// What was wrong.
        error: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownEvenType(ty) => write!(f, "unknown even message type {ty}"),
            Refusal::Oversized { ty, len, max } => {
                write!(
                    f,
                    "message type {ty} of {len} bytes exceeds its limit of {max}"
                )
            }
            Refusal::Malformed { ty, error } => write!(f, "malformed message type {ty}: {error}"),
        }
    }
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`ErrorMsg`].
    Error(ErrorMsg),
    /// See [`Join`].
    Join(Join),
    /// See [`ProposalChunk`].
    Proposal(ProposalChunk),
    /// Round 1: a client's public nonces.
    Nonces(NonceMsg),
    /// Round 2: aggregated nonces for one client.
    AggNonces(AggNonceMsg),
    /// Round 2: a client's partial signatures.
    Partials(PartialSigMsg),
    /// The final signatures of one client's transactions.
    FinalSigs(FinalSigMsg),
    /// See [`Live`].
    Live(Live),
    /// See [`Abort`].
    Abort(Abort),
    /// See [`Hints`].
    Hints(Hints),
    /// See [`Resume`].
    Resume(Resume),
    /// LSP to client: see [`ChannelOpen`].
    OpenChannel(Box<ChannelOpen>),
    /// Client to LSP: see [`ChannelOpen`].
    AcceptChannel(Box<ChannelOpen>),
    /// See [`ChannelStep`].
    Channel(Box<ChannelStep>),
    /// See [`InvoiceRequest`].
    InvoiceRequest(InvoiceRequest),
    /// See [`InvoiceReply`].
    Invoice(InvoiceReply),
    /// See [`LiquidityRequest`].
    LiquidityRequest(LiquidityRequest),
    /// See [`LiquidityOffer`].
    LiquidityOffer(LiquidityOffer),
    /// A step of a factory update.
    Update(Box<UpdateMsg>),
    /// A step of a cooperative close.
    Close(Box<CloseMsg>),
    /// An incoming message refused by the decoder (never sent).
    Refused(Refusal),
}

impl Message {
    /// The message's Lightning type.
    pub fn ty(&self) -> u16 {
        match self {
            Message::Hello(_) => types::HELLO,
            Message::Error(_) => types::ERROR,
            Message::Join(_) => types::JOIN,
            Message::Proposal(_) => types::PROPOSAL,
            Message::Nonces(_) => types::NONCES,
            Message::AggNonces(_) => types::AGG_NONCES,
            Message::Partials(_) => types::PARTIALS,
            Message::FinalSigs(_) => types::FINAL_SIGS,
            Message::Live(_) => types::LIVE,
            Message::Abort(_) => types::ABORT,
            Message::Hints(_) => types::HINTS,
            Message::Resume(_) => types::RESUME,
            Message::OpenChannel(_) => types::OPEN_CHANNEL,
            Message::AcceptChannel(_) => types::ACCEPT_CHANNEL,
            Message::Channel(_) => types::CHANNEL,
            Message::InvoiceRequest(_) => types::INVOICE_REQUEST,
            Message::Invoice(_) => types::INVOICE,
            Message::LiquidityRequest(_) => types::LIQUIDITY_REQUEST,
            Message::LiquidityOffer(_) => types::LIQUIDITY_OFFER,
            Message::Update(_) => types::UPDATE,
            Message::Close(_) => types::CLOSE,
            // Never sent; an even type in our range that no message uses.
            Message::Refused(_) => 54000,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::Error(_) => "error",
            Message::Join(_) => "join",
            Message::Proposal(_) => "proposal",
            Message::Nonces(_) => "nonces",
            Message::AggNonces(_) => "agg_nonces",
            Message::Partials(_) => "partials",
            Message::FinalSigs(_) => "final_sigs",
            Message::Live(_) => "live",
            Message::Abort(_) => "abort",
            Message::Hints(_) => "hints",
            Message::Resume(_) => "resume",
            Message::OpenChannel(_) => "open_channel",
            Message::AcceptChannel(_) => "accept_channel",
            Message::Channel(c) => c.msg.name(),
            Message::InvoiceRequest(_) => "invoice_request",
            Message::Invoice(_) => "invoice",
            Message::LiquidityRequest(_) => "liquidity_request",
            Message::LiquidityOffer(_) => "liquidity_offer",
            Message::Update(u) => u.body.name(),
            Message::Close(c) => c.body.name(),
            Message::Refused(_) => "refused",
        }
    }
}

/// The largest body a message type may have.
pub fn max_body(ty: u16) -> usize {
    match ty {
        types::HELLO => 256,
        types::ERROR | types::ABORT => 64 + MAX_REASON,
        types::RESUME => 64,
        types::JOIN => 33 + 8 + 2 + 10_000 + 64,
        types::OPEN_CHANNEL | types::ACCEPT_CHANNEL => 32 + 7 * 33 + 66 + 64 + 64,
        types::INVOICE_REQUEST => 32 + 8 + 2 + MAX_DESCRIPTION + 4 + 64,
        types::INVOICE => 32 + 2 + MAX_INVOICE + 2 + MAX_REASON + 64,
        types::LIQUIDITY_REQUEST => 32 + 8 + 64,
        types::LIQUIDITY_OFFER => 32 + 8 + 8 + 2 + MAX_INVOICE + 2 + MAX_REASON + 64,
        _ => MAX_BODY,
    }
}

fn write_reason<W: Writer>(w: &mut W, reason: &str) -> Result<(), io::Error> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned().write(w)
}

fn read_reason<R: io::Read>(r: &mut R) -> Result<String, DecodeError> {
    let reason = String::read(r)?;
    if reason.len() > MAX_REASON {
        return Err(DecodeError::InvalidValue);
    }
    Ok(reason)
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

/// Message bodies end in a TLV stream for later extensions (read by `superscalar_core::codec`
/// for the signing messages): these small ones carry none yet, and refuse trailing bytes.
fn end<R: LengthLimitedRead>(r: &mut R) -> Result<(), DecodeError> {
    superscalar_core::codec::read_extensions(r)
}

impl Writeable for Message {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        match self {
            Message::Hello(h) => {
                h.version.write(w)?;
                h.min_version.write(w)?;
                h.network.magic().to_bytes().write(w)
            }
            Message::Error(e) => {
                e.code.to_u16().write(w)?;
                e.factory.map(|f| f.0).unwrap_or([0; 32]).write(w)?;
                write_reason(w, &e.reason)
            }
            Message::Join(j) => {
                j.key.inner.write(w)?;
                j.capacity_sat.write(w)?;
                j.payout.write(w)
            }
            Message::Proposal(p) => {
                p.factory.write(w)?;
                write_outpoint(w, &p.funding)?;
                p.client.write(w)?;
                p.index.write(w)?;
                p.count.write(w)?;
                p.bytes.write(w)
            }
            Message::Nonces(m) => m.write(w),
            Message::AggNonces(m) => m.write(w),
            Message::Partials(m) => m.write(w),
            Message::FinalSigs(m) => m.write(w),
            Message::Live(l) => {
                l.factory.write(w)?;
                l.funding_tx.write(w)
            }
            Message::Resume(m) => m.factory.write(w),
            Message::Hints(h) => {
                h.factory.write(w)?;
                h.client.write(w)?;
                h.hints.write(w)
            }
            Message::Abort(a) => {
                a.factory.write(w)?;
                write_reason(w, &a.reason)
            }
            Message::OpenChannel(o) | Message::AcceptChannel(o) => {
                o.factory.write(w)?;
                o.channel.to_u32().write(w)?;
                o.offer.write(w)
            }
            Message::Channel(c) => {
                c.factory.write(w)?;
                c.channel.to_u32().write(w)?;
                c.msg.write(w)
            }
            Message::InvoiceRequest(i) => {
                i.payment_hash.write(w)?;
                i.amount_msat.write(w)?;
                i.description.write(w)?;
                i.expiry_secs.write(w)
            }
            Message::Invoice(i) => {
                i.payment_hash.write(w)?;
                i.bolt11.write(w)?;
                write_reason(w, &i.error)
            }
            Message::LiquidityRequest(l) => {
                l.factory.write(w)?;
                l.amount_sat.write(w)
            }
            Message::LiquidityOffer(l) => {
                l.factory.write(w)?;
                l.amount_sat.write(w)?;
                l.fee_sat.write(w)?;
                l.bolt11.write(w)?;
                write_reason(w, &l.error)
            }
            Message::Update(u) => u.write(w),
            Message::Close(c) => c.write(w),
            Message::Refused(_) => Ok(()),
        }
    }
}

impl Type for Message {
    fn type_id(&self) -> u16 {
        self.ty()
    }
}

/// Decodes the body of a message of type `ty`: `None` for an odd type that is not ours (the
/// caller ignores it), [`Message::Refused`] for anything refused (unknown even type, too large,
/// malformed), so that the refusal can be reported to the sender before it is disconnected.
pub fn read_message<R: LengthLimitedRead>(ty: u16, r: &mut R) -> Option<Message> {
    let ours = types::RANGE.contains(&ty) && ty % 2 == 1 && ty <= types::LAST;
    if !ours {
        return (ty % 2 == 0).then_some(Message::Refused(Refusal::UnknownEvenType(ty)));
    }
    let len = r.remaining_bytes();
    let max = max_body(ty);
    if len > max as u64 {
        return Some(Message::Refused(Refusal::Oversized { ty, len, max }));
    }
    Some(decode_body(ty, r).unwrap_or_else(|e| {
        Message::Refused(Refusal::Malformed {
            ty,
            error: describe(&e),
        })
    }))
}

/// Decodes one whole message body (`ty` is one of ours).
fn decode_body<R: LengthLimitedRead>(ty: u16, r: &mut R) -> Result<Message, DecodeError> {
    let whole = |r: &mut R| -> Result<Vec<u8>, DecodeError> {
        let mut bytes = vec![0u8; r.remaining_bytes() as usize];
        r.read_exact(&mut bytes)
            .map_err(|_| DecodeError::ShortRead)?;
        Ok(bytes)
    };
    use superscalar_core::codec::decode;
    let msg = match ty {
        types::HELLO => {
            let version = Readable::read(r)?;
            let min_version = Readable::read(r)?;
            let magic: [u8; 4] = Readable::read(r)?;
            let network = Network::from_magic(bitcoin::p2p::Magic::from_bytes(magic))
                .ok_or(DecodeError::InvalidValue)?;
            end(r)?;
            Message::Hello(Hello {
                version,
                min_version,
                network,
            })
        }
        types::ERROR => {
            let code = ErrorCode::from_u16(Readable::read(r)?);
            let factory: [u8; 32] = Readable::read(r)?;
            let reason = read_reason(r)?;
            end(r)?;
            Message::Error(ErrorMsg {
                code,
                factory: (factory != [0; 32]).then_some(FactoryId(factory)),
                reason,
            })
        }
        types::JOIN => {
            let key: bitcoin::secp256k1::PublicKey = Readable::read(r)?;
            let key = PublicKey::new(key);
            let capacity_sat = Readable::read(r)?;
            let payout = read_script(r)?;
            end(r)?;
            Message::Join(Join {
                key,
                payout,
                capacity_sat,
            })
        }
        types::PROPOSAL => {
            let factory = Readable::read(r)?;
            let funding = read_outpoint(r)?;
            let client = Readable::read(r)?;
            let index: u16 = Readable::read(r)?;
            let count: u16 = Readable::read(r)?;
            let bytes: Vec<u8> = Readable::read(r)?;
            end(r)?;
            if count == 0 || count > MAX_CHUNKS || index >= count || bytes.len() > MAX_CHUNK {
                return Err(DecodeError::InvalidValue);
            }
            Message::Proposal(ProposalChunk {
                factory,
                funding,
                client,
                index,
                count,
                bytes,
            })
        }
        types::NONCES => Message::Nonces(decode(&whole(r)?)?),
        types::AGG_NONCES => Message::AggNonces(decode(&whole(r)?)?),
        types::PARTIALS => Message::Partials(decode(&whole(r)?)?),
        types::FINAL_SIGS => Message::FinalSigs(decode(&whole(r)?)?),
        types::LIVE => {
            let factory = Readable::read(r)?;
            let funding_tx = Readable::read(r)?;
            end(r)?;
            Message::Live(Live {
                factory,
                funding_tx,
            })
        }
        types::ABORT => {
            let factory = Readable::read(r)?;
            let reason = read_reason(r)?;
            end(r)?;
            Message::Abort(Abort { factory, reason })
        }
        types::RESUME => {
            let factory = Readable::read(r)?;
            end(r)?;
            Message::Resume(Resume { factory })
        }
        types::HINTS => {
            let factory = Readable::read(r)?;
            let client = Readable::read(r)?;
            let hints = Readable::read(r)?;
            end(r)?;
            Message::Hints(Hints {
                factory,
                client,
                hints,
            })
        }
        types::OPEN_CHANNEL | types::ACCEPT_CHANNEL => {
            let open = ChannelOpen {
                factory: Readable::read(r)?,
                channel: ChannelRef::from_u32(Readable::read(r)?),
                offer: Readable::read(r)?,
            };
            end(r)?;
            if ty == types::OPEN_CHANNEL {
                Message::OpenChannel(Box::new(open))
            } else {
                Message::AcceptChannel(Box::new(open))
            }
        }
        // The step's own trailing TLV stream ends the body.
        types::CHANNEL => Message::Channel(Box::new(ChannelStep {
            factory: Readable::read(r)?,
            channel: ChannelRef::from_u32(Readable::read(r)?),
            msg: Readable::read(r)?,
        })),
        types::INVOICE_REQUEST => {
            let payment_hash = Readable::read(r)?;
            let amount_msat = Readable::read(r)?;
            let description = String::read(r)?;
            let expiry_secs = Readable::read(r)?;
            end(r)?;
            if description.len() > MAX_DESCRIPTION {
                return Err(DecodeError::InvalidValue);
            }
            Message::InvoiceRequest(InvoiceRequest {
                payment_hash,
                amount_msat,
                description,
                expiry_secs,
            })
        }
        types::INVOICE => {
            let payment_hash = Readable::read(r)?;
            let bolt11 = String::read(r)?;
            let error = read_reason(r)?;
            end(r)?;
            if bolt11.len() > MAX_INVOICE {
                return Err(DecodeError::InvalidValue);
            }
            Message::Invoice(InvoiceReply {
                payment_hash,
                bolt11,
                error,
            })
        }
        types::LIQUIDITY_REQUEST => {
            let factory = Readable::read(r)?;
            let amount_sat = Readable::read(r)?;
            end(r)?;
            Message::LiquidityRequest(LiquidityRequest {
                factory,
                amount_sat,
            })
        }
        types::LIQUIDITY_OFFER => {
            let factory = Readable::read(r)?;
            let amount_sat = Readable::read(r)?;
            let fee_sat = Readable::read(r)?;
            let bolt11 = String::read(r)?;
            let error = read_reason(r)?;
            end(r)?;
            if bolt11.len() > MAX_INVOICE {
                return Err(DecodeError::InvalidValue);
            }
            Message::LiquidityOffer(LiquidityOffer {
                factory,
                amount_sat,
                fee_sat,
                bolt11,
                error,
            })
        }
        // The update's own trailing TLV stream ends the body.
        types::UPDATE => Message::Update(Box::new(Readable::read(r)?)),
        // The close's own trailing TLV stream ends the body.
        types::CLOSE => Message::Close(Box::new(Readable::read(r)?)),
        _ => return Err(DecodeError::UnknownRequiredFeature),
    };
    Ok(msg)
}

/// A decoding failure in words.
fn describe(e: &DecodeError) -> String {
    match e {
        DecodeError::ShortRead => "truncated".into(),
        DecodeError::InvalidValue => "invalid value".into(),
        DecodeError::UnknownRequiredFeature => "unknown required (even) field".into(),
        DecodeError::BadLengthDescriptor => "bad length".into(),
        other => format!("{other:?}"),
    }
}

/// Splits a factory's parameters into the proposal chunks for one client.
pub fn proposal_chunks(
    params: &FactoryParams,
    funding: OutPoint,
    client: ClientId,
) -> Result<Vec<ProposalChunk>, AssemblyError> {
    let bytes = superscalar_core::codec::encode(params);
    encoded_proposal_chunks(params.id, &bytes, funding, client)
}

/// [`proposal_chunks`] from the parameters of factory `factory` already encoded (`bytes`), so
/// that a proposal to many clients encodes them once.
pub fn encoded_proposal_chunks(
    factory: FactoryId,
    bytes: &[u8],
    funding: OutPoint,
    client: ClientId,
) -> Result<Vec<ProposalChunk>, AssemblyError> {
    let count = bytes.len().div_ceil(MAX_CHUNK).max(1);
    if count > MAX_CHUNKS as usize {
        return Err(AssemblyError::TooLarge(bytes.len()));
    }
    Ok((0..count)
        .map(|i| ProposalChunk {
            factory,
            funding,
            client,
            index: i as u16,
            count: count as u16,
            bytes: bytes[i * MAX_CHUNK..((i + 1) * MAX_CHUNK).min(bytes.len())].to_vec(),
        })
        .collect())
}

/// Why proposal chunks do not make one factory's parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    /// The parameters exceed [`MAX_CHUNKS`] chunks.
    #[error("factory parameters of {0} bytes exceed the largest proposal")]
    TooLarge(usize),
    /// A chunk arrived out of order, or disagrees with the first chunk.
    #[error("proposal chunk {index} of {count} out of order or inconsistent with the first")]
    OutOfOrder {
        /// The chunk's index.
        index: u16,
        /// Its count.
        count: u16,
    },
    /// The chunks decode to no valid parameters, or to another factory's.
    #[error("factory parameters do not decode: {0}")]
    Undecodable(String),
}

/// Reassembles one factory's parameters from its proposal chunks, which arrive in order.
#[derive(Debug, Default)]
pub struct ProposalAssembler {
    first: Option<ProposalChunk>,
    bytes: Vec<u8>,
    next: u16,
}

/// A whole proposal: the parameters and what the client needs to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The factory's parameters.
    pub params: FactoryParams,
    /// The outpoint the factory spends.
    pub funding: OutPoint,
    /// The receiving client's position.
    pub client: ClientId,
}

impl ProposalAssembler {
    /// Takes the next chunk: the whole proposal once the last chunk is in. A chunk of another
    /// proposal restarts assembly only when it is a first chunk.
    pub fn push(&mut self, chunk: ProposalChunk) -> Result<Option<Proposal>, AssemblyError> {
        let bad = AssemblyError::OutOfOrder {
            index: chunk.index,
            count: chunk.count,
        };
        if chunk.count == 0 || chunk.count > MAX_CHUNKS || chunk.index >= chunk.count {
            *self = ProposalAssembler::default();
            return Err(bad);
        }
        if chunk.index == 0 {
            *self = ProposalAssembler::default();
        } else {
            let first = self.first.as_ref().ok_or(bad.clone())?;
            if chunk.index != self.next
                || chunk.count != first.count
                || chunk.factory != first.factory
                || chunk.funding != first.funding
                || chunk.client != first.client
            {
                *self = ProposalAssembler::default();
                return Err(bad);
            }
        }
        self.bytes.extend_from_slice(&chunk.bytes);
        self.next = chunk.index + 1;
        if chunk.index == 0 {
            self.first = Some(ProposalChunk {
                bytes: Vec::new(),
                ..chunk
            });
        }
        let first = self.first.as_ref().expect("set above");
        if self.next < first.count {
            return Ok(None);
        }
        let (funding, client, factory) = (first.funding, first.client, first.factory);
        let bytes = std::mem::take(&mut self.bytes);
        *self = ProposalAssembler::default();
        let params: FactoryParams = superscalar_core::codec::decode(&bytes)
            .map_err(|e| AssemblyError::Undecodable(describe(&e)))?;
        if params.id != factory {
            return Err(AssemblyError::Undecodable(
                "the parameters name another factory".into(),
            ));
        }
        Ok(Some(Proposal {
            params,
            funding,
            client,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use bitcoin::Amount;
    use proptest::prelude::*;
    use superscalar_core::advance::Revealed;
    use superscalar_core::channel::link::Update;
    use superscalar_core::channel::state::{
        CommitmentSigned, OutpointSignature, RevokeAndAck, UpdateAddHtlc, UpdateFailHtlc,
        UpdateFulfillHtlc,
    };
    use superscalar_core::close::msg::CloseBody;
    use superscalar_core::close::CloseTerms;
    use superscalar_core::codec::encode;
    use superscalar_core::musig::{AggNonce, PartialSig, PubNonce};
    use superscalar_core::update::UpdateBody;
    use superscalar_core::{ClientSpec, FactoryConfig, NodeId, TxKind};

    fn key(i: u32) -> PublicKey {
        let mut sk = [1u8; 32];
        sk[28..].copy_from_slice(&(i + 1).to_be_bytes());
        let sk = SecretKey::from_slice(&sk).unwrap();
        PublicKey::new(sk.public_key(&Secp256k1::new()))
    }

    fn params(n: u32) -> FactoryParams {
        FactoryParams {
            id: FactoryId([4; 32]),
            config: FactoryConfig::regtest(),
            lsp_key: key(1_000_000),
            clients: (0..n)
                .map(|i| ClientSpec::new(key(i), Amount::from_sat(10_000 + u64::from(i))))
                .collect(),
            creation_height: 1234,
            stock_hashes: Vec::new(),
            opening_msat: Vec::new(),
        }
    }

    fn funding() -> OutPoint {
        OutPoint::new(Txid::from_byte_array([9; 32]), 3)
    }

    fn decode(m: &Message) -> Option<Message> {
        let bytes = encode(m);
        read_message(m.ty(), &mut &bytes[..])
    }

    fn nonce() -> PubNonce {
        let mut n = [0u8; 66];
        n[..33].copy_from_slice(&key(1).inner.serialize());
        n[33..].copy_from_slice(&key(2).inner.serialize());
        PubNonce(n)
    }

    fn channel_open(factory: FactoryId) -> ChannelOpen {
        use superscalar_core::channel::state::{Basepoints, ChannelAnnouncement, ChannelLimits};
        ChannelOpen {
            factory,
            channel: ChannelRef::Sold(3),
            offer: ChannelOffer {
                announcement: ChannelAnnouncement {
                    basepoints: Basepoints {
                        payment: key(10).inner,
                        delayed_payment: key(11).inner,
                        htlc: key(12).inner,
                        revocation: key(13).inner,
                    },
                    funding_key: key(14).inner,
                    points: [key(15).inner, key(16).inner],
                    nonce: nonce(),
                },
                limits: ChannelLimits::default(),
            },
        }
    }

    fn commitment_signed() -> CommitmentSigned {
        let sig = bitcoin::secp256k1::schnorr::Signature::from_slice(&[3; 64]).unwrap();
        CommitmentSigned {
            partial_sig: PartialSig([5; 32]),
            nonce: nonce(),
            htlc_signatures: vec![sig, sig],
            others: vec![OutpointSignature {
                outpoint: funding(),
                partial_sig: PartialSig([6; 32]),
                nonce: nonce(),
                htlc_signatures: vec![sig],
            }],
        }
    }

    fn revoke() -> RevokeAndAck {
        RevokeAndAck {
            per_commitment_secret: [9; 32],
            next_point: key(20).inner,
            next_nonce: nonce(),
            next_other_nonces: vec![(funding(), nonce())],
        }
    }

    fn every_message() -> Vec<Message> {
        let f = FactoryId([1; 32]);
        let kind = TxKind::Kickoff(NodeId(0));
        vec![
            Message::Hints(Hints {
                factory: f,
                client: ClientId(3),
                hints: superscalar_core::factory::ScriptHints {
                    scripts: vec![
                        (
                            superscalar_core::Slot::NodeInput(NodeId(4)),
                            ScriptBuf::from_bytes(vec![0x51, 0x20, 1, 2]),
                        ),
                        (
                            superscalar_core::Slot::Channel(ClientId(2)),
                            ScriptBuf::new(),
                        ),
                    ],
                },
            }),
            Message::Resume(Resume { factory: f }),
            Message::OpenChannel(Box::new(channel_open(f))),
            Message::AcceptChannel(Box::new(channel_open(f))),
            Message::Channel(Box::new(ChannelStep {
                factory: f,
                channel: ChannelRef::Leaf,
                msg: LinkMsg::Propose {
                    commitment: 7,
                    updates: vec![
                        Update::Add(UpdateAddHtlc {
                            id: 1,
                            amount_msat: 5_000,
                            payment_hash: [6; 32],
                            cltv_expiry: 700,
                        }),
                        Update::Fulfill(UpdateFulfillHtlc {
                            id: 2,
                            preimage: [7; 32],
                        }),
                        Update::Fail(UpdateFailHtlc { id: 3 }),
                    ],
                    signed: commitment_signed(),
                },
            })),
            Message::Channel(Box::new(ChannelStep {
                factory: f,
                channel: ChannelRef::Leaf,
                msg: LinkMsg::Reply {
                    revoked: 6,
                    revoke: revoke(),
                    commitment: 8,
                    signed: commitment_signed(),
                },
            })),
            Message::Channel(Box::new(ChannelStep {
                factory: f,
                channel: ChannelRef::Leaf,
                msg: LinkMsg::Ack {
                    revoked: 7,
                    revoke: revoke(),
                },
            })),
            Message::Channel(Box::new(ChannelStep {
                factory: f,
                channel: ChannelRef::Leaf,
                msg: LinkMsg::TurnRequest,
            })),
            Message::Channel(Box::new(ChannelStep {
                factory: f,
                channel: ChannelRef::Leaf,
                msg: LinkMsg::TurnGrant,
            })),
            Message::Channel(Box::new(ChannelStep {
                factory: f,
                channel: ChannelRef::Leaf,
                msg: LinkMsg::Sync,
            })),
            Message::Channel(Box::new(ChannelStep {
                factory: f,
                channel: ChannelRef::Leaf,
                msg: LinkMsg::Retire(OutPoint::null()),
            })),
            Message::Update(Box::new(UpdateMsg {
                factory: f,
                update: 3,
                body: UpdateBody::Abort("busy".into()),
            })),
            Message::Close(Box::new(CloseMsg {
                factory: f,
                close: 5,
                body: CloseBody::Propose(Box::new(CloseTerms {
                    factory: f,
                    funding: OutPoint::null(),
                    clients: vec![bitcoin::Amount::from_sat(12_345); 3],
                    lsp_script: ScriptBuf::from_bytes(vec![0x51, 0x20]),
                    fee_rate: bitcoin::FeeRate::from_sat_per_kwu(500),
                    successor: None,
                })),
            })),
            Message::Close(Box::new(CloseMsg {
                factory: f,
                close: 5,
                body: CloseBody::Abort("you owe me 1 sat".into()),
            })),
            Message::Update(Box::new(UpdateMsg {
                factory: f,
                update: 4,
                body: UpdateBody::Done(vec![Revealed {
                    stock: 1,
                    version: 2,
                    secret: [9; 32],
                }]),
            })),
            Message::InvoiceRequest(InvoiceRequest {
                payment_hash: [8; 32],
                amount_msat: 12_345,
                description: "coffee".into(),
                expiry_secs: 3600,
            }),
            Message::Invoice(InvoiceReply {
                payment_hash: [8; 32],
                bolt11: "lnbcrt1...".into(),
                error: String::new(),
            }),
            Message::LiquidityRequest(LiquidityRequest {
                factory: f,
                amount_sat: 50_000,
            }),
            Message::LiquidityOffer(LiquidityOffer {
                factory: f,
                amount_sat: 50_000,
                fee_sat: 500,
                bolt11: "lnbcrt5u1...".into(),
                error: String::new(),
            }),
            Message::LiquidityOffer(LiquidityOffer {
                factory: f,
                amount_sat: 50_000,
                fee_sat: 0,
                bolt11: String::new(),
                error: "the stock cannot pay it".into(),
            }),
            Message::Hello(Hello::ours(Network::Regtest)),
            Message::Error(ErrorMsg {
                code: ErrorCode::Refused,
                factory: Some(f),
                reason: "wrong amount".into(),
            }),
            Message::Error(ErrorMsg {
                code: ErrorCode::Other(77),
                factory: None,
                reason: String::new(),
            }),
            Message::Join(Join {
                key: key(5),
                payout: ScriptBuf::from_bytes(vec![0x51, 0x20, 7]),
                capacity_sat: 100_000,
            }),
            Message::Proposal(
                proposal_chunks(&params(3), funding(), ClientId(2)).unwrap()[0].clone(),
            ),
            Message::Nonces(NonceMsg {
                factory: f,
                nonces: vec![(kind, PubNonce([2; 66]))],
            }),
            Message::AggNonces(AggNonceMsg {
                factory: f,
                nonces: vec![(kind, AggNonce([3; 66]))],
            }),
            Message::Partials(PartialSigMsg {
                factory: f,
                partials: vec![(kind, PartialSig([4; 32]))],
            }),
            Message::FinalSigs(FinalSigMsg {
                factory: f,
                signatures: Vec::new(),
            }),
            Message::Live(Live {
                factory: f,
                funding_tx: Transaction {
                    version: bitcoin::transaction::Version::TWO,
                    lock_time: bitcoin::absolute::LockTime::ZERO,
                    input: Vec::new(),
                    output: Vec::new(),
                },
            }),
            Message::Abort(Abort {
                factory: f,
                reason: "client 3 left".into(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_with_an_odd_type_of_our_range() {
        for m in every_message() {
            assert_eq!(m.ty() % 2, 1, "{}", m.name());
            assert!(types::RANGE.contains(&m.ty()));
            assert!(encode(&m).len() <= max_body(m.ty()), "{}", m.name());
            assert_eq!(decode(&m), Some(m.clone()), "{}", m.name());
        }
    }

    #[test]
    fn odd_extensions_are_skipped_even_ones_and_junk_refused() {
        for m in every_message() {
            let mut bytes = encode(&m);
            let n = bytes.len();
            // An odd TLV record (type 1, length 2) is a later version's extension.
            bytes.extend_from_slice(&[1, 2, 0xaa, 0xbb]);
            assert_eq!(
                read_message(m.ty(), &mut &bytes[..]),
                Some(m.clone()),
                "{}",
                m.name()
            );
            bytes.truncate(n);
            bytes.extend_from_slice(&[2, 1, 0]);
            assert!(
                matches!(
                    read_message(m.ty(), &mut &bytes[..]),
                    Some(Message::Refused(Refusal::Malformed { .. }))
                ),
                "{}",
                m.name()
            );
            bytes.truncate(n);
            bytes.push(0xfd);
            assert!(
                matches!(
                    read_message(m.ty(), &mut &bytes[..]),
                    Some(Message::Refused(_))
                ),
                "{}",
                m.name()
            );
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for m in every_message() {
            let bytes = encode(&m);
            for cut in 0..bytes.len() {
                let got = read_message(m.ty(), &mut &bytes[..cut]);
                assert!(
                    matches!(got, Some(Message::Refused(Refusal::Malformed { .. }))),
                    "{} cut at {cut}: {got:?}",
                    m.name()
                );
            }
        }
    }

    #[test]
    fn foreign_odd_types_are_ignored_and_even_ones_refused() {
        for ty in [1u16, 37_913, 32_801, 54_043, 54_099, 65_535] {
            assert_eq!(read_message(ty, &mut &[1u8, 2][..]), None, "{ty}");
        }
        for ty in [54_000u16, 54_002, 54_098, 32_768] {
            assert_eq!(
                read_message(ty, &mut &[][..]),
                Some(Message::Refused(Refusal::UnknownEvenType(ty)))
            );
        }
    }

    #[test]
    fn oversized_bodies_are_refused_before_decoding() {
        let big = vec![0u8; max_body(types::HELLO) + 1];
        assert!(matches!(
            read_message(types::HELLO, &mut &big[..]),
            Some(Message::Refused(Refusal::Oversized {
                ty: types::HELLO,
                ..
            }))
        ));
        let reason = "é".repeat(MAX_REASON);
        let m = Message::Abort(Abort {
            factory: FactoryId([0; 32]),
            reason,
        });
        // Long reasons are cut at a character boundary, within the limit.
        match decode(&m) {
            Some(Message::Abort(a)) => assert!(a.reason.len() <= MAX_REASON),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hellos_agree_on_the_highest_common_version_and_one_network() {
        let ours = Hello::ours(Network::Regtest);
        assert_eq!(ours.agree(&ours), Ok(PROTOCOL_VERSION));
        let later = Hello {
            version: PROTOCOL_VERSION + 3,
            min_version: MIN_PROTOCOL_VERSION,
            network: Network::Regtest,
        };
        assert_eq!(ours.agree(&later), Ok(PROTOCOL_VERSION));
        let too_new = Hello {
            version: PROTOCOL_VERSION + 3,
            min_version: PROTOCOL_VERSION + 1,
            network: Network::Regtest,
        };
        assert!(ours.agree(&too_new).unwrap_err().contains("no common"));
        let inverted = Hello {
            version: 1,
            min_version: 2,
            network: Network::Regtest,
        };
        assert!(ours.agree(&inverted).is_err());
        assert!(ours
            .agree(&Hello::ours(Network::Bitcoin))
            .unwrap_err()
            .contains("network"));
    }

    #[test]
    fn a_large_proposal_travels_in_chunks_and_reassembles() {
        let p = params(3000);
        let chunks = proposal_chunks(&p, funding(), ClientId(17)).unwrap();
        assert!(chunks.len() > 1);
        let mut a = ProposalAssembler::default();
        for (i, c) in chunks.iter().enumerate() {
            assert!(encode(&Message::Proposal(c.clone())).len() <= MAX_BODY);
            let got = a.push(c.clone()).unwrap();
            if i + 1 < chunks.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(
                    got,
                    Some(Proposal {
                        params: p.clone(),
                        funding: funding(),
                        client: ClientId(17)
                    })
                );
            }
        }
    }

    #[test]
    fn proposal_chunks_out_of_order_or_inconsistent_are_refused() {
        let chunks = proposal_chunks(&params(3000), funding(), ClientId(1)).unwrap();
        let mut a = ProposalAssembler::default();
        assert!(a.push(chunks[1].clone()).is_err());
        a.push(chunks[0].clone()).unwrap();
        assert!(a.push(chunks[2].clone()).is_err());
        a.push(chunks[0].clone()).unwrap();
        let mut other = chunks[1].clone();
        other.client = ClientId(2);
        assert!(a.push(other).is_err());
        let mut zero = chunks[0].clone();
        zero.count = 0;
        assert!(a.push(zero).is_err());
        let mut past = chunks[0].clone();
        past.index = past.count;
        assert!(a.push(past).is_err());
        // A proposal naming another factory than its parameters is refused.
        let mut lie = proposal_chunks(&params(2), funding(), ClientId(1)).unwrap();
        lie[0].factory = FactoryId([5; 32]);
        assert!(matches!(
            ProposalAssembler::default().push(lie[0].clone()),
            Err(AssemblyError::Undecodable(_))
        ));
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(ty in 54_000u16..54_100, body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read_message(ty, &mut &body[..]);
        }

        #[test]
        fn flipped_bytes_never_panic(which in 0usize..13, pos in any::<usize>(), bit in 0u8..8) {
            let m = &every_message()[which];
            let mut bytes = encode(m);
            if !bytes.is_empty() {
                let i = pos % bytes.len();
                bytes[i] ^= 1 << bit;
            }
            let _ = read_message(m.ty(), &mut &bytes[..]);
        }
    }
}
