//! The records the store keeps, as typed values: identifiers, statuses and the few encodings the
//! store defines itself (each with a version and tag byte). Protocol objects (factory parameters,
//! channel and factory states) are opaque bytes in the caller's own versioned encoding.

use std::fmt;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Network, OutPoint, Transaction, Txid};

use crate::error::StoreError;
use crate::keys::KeyIndex;

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                hex(&self.0, f)
            }
        }
    };
}

id32!(
    /// Identifies a factory (the same 32 bytes as `superscalar_core::FactoryId`).
    FactoryId
);
id32!(
    /// Identifies a channel.
    ChannelId
);
id32!(
    /// SHA-256 of a payment preimage.
    PaymentHash
);

/// The preimage of a payment hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Preimage(pub [u8; 32]);

impl Preimage {
    /// Its payment hash.
    pub fn payment_hash(&self) -> PaymentHash {
        PaymentHash(sha256::Hash::hash(&self.0).to_byte_array())
    }
}

impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Preimage(..)")
    }
}

/// An amount in millisatoshis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msat(pub u64);

/// What the node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A Lightning service provider that runs factories.
    Lsp,
    /// A client of an LSP.
    Client,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Lsp => "lsp",
            Role::Client => "client",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Role, StoreError> {
        match s {
            "lsp" => Ok(Role::Lsp),
            "client" => Ok(Role::Client),
            _ => Err(StoreError::corrupt(
                "node.role",
                format!("unknown role {s:?}"),
            )),
        }
    }
}

/// Who the node is: set once when the data directory is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMeta {
    /// LSP or client.
    pub role: Role,
    /// The chain.
    pub network: Network,
    /// The node identity public key.
    pub node_id: PublicKey,
}

/// Where a factory is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactoryStatus {
    /// Parameters agreed, signing ceremony under way.
    Forming,
    /// Every signature held and verified; funding not yet confirmed.
    Signed,
    /// Funding confirmed: the factory is open.
    Live,
    /// In its dying period: clients migrate out.
    Dying,
    /// Being closed or exited on chain.
    Closing,
    /// Over: nothing of it is left to watch.
    Closed,
    /// Given up before it was funded.
    Aborted,
}

impl FactoryStatus {
    /// Every status.
    pub const ALL: [FactoryStatus; 7] = [
        FactoryStatus::Forming,
        FactoryStatus::Signed,
        FactoryStatus::Live,
        FactoryStatus::Dying,
        FactoryStatus::Closing,
        FactoryStatus::Closed,
        FactoryStatus::Aborted,
    ];

    /// Name in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FactoryStatus::Forming => "forming",
            FactoryStatus::Signed => "signed",
            FactoryStatus::Live => "live",
            FactoryStatus::Dying => "dying",
            FactoryStatus::Closing => "closing",
            FactoryStatus::Closed => "closed",
            FactoryStatus::Aborted => "aborted",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<FactoryStatus, StoreError> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| StoreError::corrupt("factories.status", format!("unknown {s:?}")))
    }

    /// Whether a factory may move from `self` to `to`: only forwards, `Aborted` only before
    /// funding, nothing out of `Closed` or `Aborted`; staying put is allowed.
    pub fn can_become(self, to: FactoryStatus) -> bool {
        use FactoryStatus::*;
        if self == to {
            return true;
        }
        match (self, to) {
            (Closed | Aborted, _) => false,
            (Forming | Signed, Aborted) => true,
            (_, Aborted) => false,
            (from, to) => to > from,
        }
    }
}

impl fmt::Display for FactoryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A party of a factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// The LSP.
    Lsp,
    /// The client at this position of the factory's client list.
    Client(u32),
}

impl Party {
    /// Integer in the database: 0 for the LSP, `n + 1` for client `n`.
    pub(crate) fn code(self) -> i64 {
        match self {
            Party::Lsp => 0,
            Party::Client(n) => i64::from(n) + 1,
        }
    }

    pub(crate) fn from_code(code: i64, what: &'static str) -> Result<Party, StoreError> {
        match code {
            0 => Ok(Party::Lsp),
            n if n >= 1 && n <= i64::from(u32::MAX) + 1 => Ok(Party::Client((n - 1) as u32)),
            n => Err(StoreError::corrupt(what, format!("party code {n}"))),
        }
    }
}

impl fmt::Display for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Lsp => f.write_str("LSP"),
            Party::Client(n) => write!(f, "client {n}"),
        }
    }
}

/// What a signed transaction of a factory is (`kickoff/3`, `state/5/2`, `timeout/1`...): 1 to
/// 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxLabel(String);

impl TxLabel {
    /// A label, if 1 to 64 printable ASCII characters.
    pub fn new(label: impl Into<String>) -> Result<TxLabel, StoreError> {
        let label = label.into();
        if label.is_empty() || label.len() > 64 || !label.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StoreError::InvalidLabel(label));
        }
        Ok(TxLabel(label))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TxLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fully signed transaction of a factory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// What it is.
    pub label: TxLabel,
    /// The transaction, witnesses included.
    pub tx: Transaction,
}

/// A factory as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryRecord {
    /// The factory.
    pub id: FactoryId,
    /// The agreed parameters, in the caller's encoding.
    pub params: Vec<u8>,
    /// Where it is in its life.
    pub status: FactoryStatus,
    /// Height at which it was created.
    pub created_height: u32,
    /// Its timeout T (a block height).
    pub timeout_height: u32,
    /// The funding outpoint, once known.
    pub funding: Option<OutPoint>,
    /// Index of this node's factory key ([`crate::NodeKeys::factory_key`]).
    pub key_index: KeyIndex,
}

/// A commitment number (BOLT: below 2^48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitmentNumber(u64);

impl CommitmentNumber {
    /// The largest commitment number.
    pub const MAX: u64 = (1 << 48) - 1;

    /// A commitment number, if below 2^48.
    pub fn new(n: u64) -> Result<CommitmentNumber, StoreError> {
        if n > Self::MAX {
            return Err(StoreError::OutOfRange {
                what: "commitment number",
                value: n,
            });
        }
        Ok(CommitmentNumber(n))
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CommitmentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A channel as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// The channel.
    pub id: ChannelId,
    /// The factory whose leaf funds it.
    pub factory: FactoryId,
    /// Index of this node's channel secrets ([`crate::NodeKeys::channel_secrets`]).
    pub key_index: KeyIndex,
    /// The latest channel state, in the caller's encoding.
    pub state: Vec<u8>,
    /// The commitment number of that state.
    pub commitment_number: CommitmentNumber,
}

/// A per-commitment secret the other side revealed: it revokes its commitment `commitment`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReceivedSecret {
    /// The commitment it revokes.
    pub commitment: CommitmentNumber,
    /// The secret.
    pub secret: [u8; 32],
}

impl fmt::Debug for ReceivedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReceivedSecret({}, ..)", self.commitment)
    }
}

/// A transaction that punishes a revoked one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Punishment {
    /// The revoked transaction it answers.
    pub breach_txid: Txid,
    /// The factory concerned.
    pub factory: Option<FactoryId>,
    /// The channel concerned.
    pub channel: Option<ChannelId>,
    /// The signed punishment transaction.
    pub tx: Transaction,
}

/// What to do when a watched outpoint is spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchAction {
    /// Tell the user (or the daemon) only.
    Report,
    /// Publish this transaction (for example the newest state of a tree node).
    Broadcast(Transaction),
    /// Publish the punishments recorded for the spending transaction.
    Punish,
    /// Sweep the output to this node's wallet once it can.
    Sweep,
}

const WATCH_ENCODING_VERSION: u8 = 1;

impl WatchAction {
    /// Versioned encoding: version byte 1, tag byte (0 report, 1 broadcast + consensus
    /// transaction, 2 punish, 3 sweep).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WATCH_ENCODING_VERSION];
        match self {
            WatchAction::Report => out.push(0),
            WatchAction::Broadcast(tx) => {
                out.push(1);
                out.extend_from_slice(&serialize(tx));
            }
            WatchAction::Punish => out.push(2),
            WatchAction::Sweep => out.push(3),
        }
        out
    }

    /// Decode [`WatchAction::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<WatchAction, StoreError> {
        let what = "watch.action";
        match bytes {
            [] => Err(StoreError::corrupt(what, "empty")),
            [v, ..] if *v != WATCH_ENCODING_VERSION => {
                Err(StoreError::corrupt(what, format!("unknown version {v}")))
            }
            [_, 0] => Ok(WatchAction::Report),
            [_, 1, tx @ ..] => Ok(WatchAction::Broadcast(decode_tx(tx, what)?)),
            [_, 2] => Ok(WatchAction::Punish),
            [_, 3] => Ok(WatchAction::Sweep),
            [_, tag, ..] => Err(StoreError::corrupt(
                what,
                format!("bad tag {tag} or length"),
            )),
            [_] => Err(StoreError::corrupt(what, "no tag")),
        }
    }
}

/// A watched outpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEntry {
    /// The outpoint.
    pub outpoint: OutPoint,
    /// The factory it belongs to, if any.
    pub factory: Option<FactoryId>,
    /// What to do when it is spent.
    pub action: WatchAction,
}

/// The one spend this node ever signs of an outpoint in one role. A factory's protocol signs
/// several spends of some outputs on purpose (a node's kickoff and the timeout of the same
/// output; the states of successive versions), each in its own role (`kickoff/3`,
/// `timeout/in/3`, `state/3@v2`); what must never happen is a second, different spend in the
/// same role (a second version of a transaction that was meant to be unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// The role of the spend (the transaction's label, with its version where versions replace
    /// each other).
    pub role: TxLabel,
    /// The signature hash signed.
    pub sighash: [u8; 32],
    /// The spending transaction.
    pub txid: Txid,
}

/// A signing ceremony not yet finished: what is needed to resume or abort it after a restart.
/// Never holds a secret nonce: an interrupted round restarts with new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyRound {
    /// The factory being signed.
    pub factory: FactoryId,
    /// The round reached.
    pub round: u32,
    /// Who takes part.
    pub participants: Vec<Party>,
}

/// Which way a payment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceDirection {
    /// We are paid.
    Inbound,
    /// We pay.
    Outbound,
}

impl InvoiceDirection {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InvoiceDirection::Inbound => "inbound",
            InvoiceDirection::Outbound => "outbound",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "inbound" => Ok(InvoiceDirection::Inbound),
            "outbound" => Ok(InvoiceDirection::Outbound),
            _ => Err(StoreError::corrupt("invoices.direction", format!("{s:?}"))),
        }
    }
}

/// Where an invoice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    /// Issued (or being paid), nothing settled.
    Open,
    /// An HTLC for it is held, not yet claimed (hold invoice).
    Held,
    /// Paid: the preimage is known.
    Paid,
    /// Cancelled or failed; never paid.
    Cancelled,
}

impl InvoiceStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Open => "open",
            InvoiceStatus::Held => "held",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "open" => Ok(InvoiceStatus::Open),
            "held" => Ok(InvoiceStatus::Held),
            "paid" => Ok(InvoiceStatus::Paid),
            "cancelled" => Ok(InvoiceStatus::Cancelled),
            _ => Err(StoreError::corrupt("invoices.status", format!("{s:?}"))),
        }
    }

    /// Whether an invoice may move from `self` to `to`: open to held, paid or cancelled; held
    /// to paid, cancelled or back to open (its forward failed: payable again); cancelled back to
    /// open (a failed payment tried again); nothing out of paid; staying put is allowed.
    pub fn can_become(self, to: InvoiceStatus) -> bool {
        use InvoiceStatus::*;
        self == to
            || matches!(
                (self, to),
                (Open, Held | Paid | Cancelled)
                    | (Held, Open | Paid | Cancelled)
                    | (Cancelled, Open)
            )
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A BOLT-11 invoice and its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The payment hash.
    pub payment_hash: PaymentHash,
    /// Which way it is paid.
    pub direction: InvoiceDirection,
    /// The preimage, once known.
    pub preimage: Option<Preimage>,
    /// The amount, if the invoice has one.
    pub amount: Option<Msat>,
    /// Where it is.
    pub status: InvoiceStatus,
    /// The BOLT-11 text.
    pub bolt11: String,
    /// Height at which a held payment must be failed back if not claimed (hold invoices).
    pub claim_deadline: Option<u32>,
}

pub(crate) fn decode_tx(bytes: &[u8], what: &'static str) -> Result<Transaction, StoreError> {
    deserialize(bytes).map_err(|e| StoreError::corrupt(what, format!("transaction: {e}")))
}

pub(crate) fn encode_tx(tx: &Transaction) -> Vec<u8> {
    serialize(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_action_round_trips_and_garbage_is_typed() {
        let tx = Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn::default()],
            output: vec![],
        };
        for a in [
            WatchAction::Report,
            WatchAction::Broadcast(tx),
            WatchAction::Punish,
            WatchAction::Sweep,
        ] {
            assert_eq!(WatchAction::decode(&a.encode()).unwrap(), a);
            let mut long = a.encode();
            long.push(0);
            assert!(WatchAction::decode(&long).is_err());
        }
        for bad in [&[][..], &[1], &[2, 0], &[1, 9], &[1, 1], &[1, 1, 2, 0]] {
            assert!(matches!(
                WatchAction::decode(bad),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn status_transitions() {
        use FactoryStatus::*;
        assert!(Forming.can_become(Signed) && Signed.can_become(Live) && Live.can_become(Closing));
        assert!(Forming.can_become(Aborted) && !Live.can_become(Aborted));
        assert!(!Live.can_become(Forming) && !Closed.can_become(Live) && Closed.can_become(Closed));
        assert!(InvoiceStatus::Open.can_become(InvoiceStatus::Held));
        assert!(!InvoiceStatus::Paid.can_become(InvoiceStatus::Cancelled));
        // A forward that failed leaves the invoice payable again.
        assert!(InvoiceStatus::Held.can_become(InvoiceStatus::Open));
        assert!(!InvoiceStatus::Paid.can_become(InvoiceStatus::Open));
        assert!(InvoiceStatus::Cancelled.can_become(InvoiceStatus::Open));
        assert!(!InvoiceStatus::Cancelled.can_become(InvoiceStatus::Paid));
    }

    #[test]
    fn party_codes() {
        for p in [Party::Lsp, Party::Client(0), Party::Client(u32::MAX)] {
            assert_eq!(Party::from_code(p.code(), "t").unwrap(), p);
        }
        assert!(Party::from_code(-1, "t").is_err());
        assert!(Party::from_code(i64::from(u32::MAX) + 2, "t").is_err());
    }

    #[test]
    fn labels() {
        assert!(TxLabel::new("state/5/2").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(TxLabel::new(bad).is_err());
        }
    }
}

/// One durable change a protocol step asks for, written before the step's messages are sent
/// ([`crate::Store::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A factory now being formed, and its ceremony's first round.
    NewFactory {
        /// The factory.
        record: FactoryRecord,
        /// Its ceremony.
        round: CeremonyRound,
    },
    /// The ceremony reached a round; `spends` are what this node signs in it.
    Round {
        /// The round.
        round: CeremonyRound,
        /// Every spend this node signs from now on.
        spends: Vec<(bitcoin::OutPoint, Spend)>,
    },
    /// The ceremony is over: every transaction signed and verified.
    Signed {
        /// The factory.
        factory: FactoryId,
        /// Its signed transactions.
        txs: Vec<SignedTx>,
        /// Its status now.
        status: FactoryStatus,
    },
    /// The factory's funding outpoint.
    Funding {
        /// The factory.
        factory: FactoryId,
        /// Where it is funded.
        outpoint: bitcoin::OutPoint,
    },
    /// The next version of a party's state in a factory (the caller's encoding).
    State {
        /// The factory.
        factory: FactoryId,
        /// Whose state.
        party: Party,
        /// Its version (0 first, then each next).
        version: u64,
        /// The state.
        bytes: Vec<u8>,
    },
    /// The factory moved to a new status (`Aborted` also drops its ceremony).
    Status {
        /// The factory.
        factory: FactoryId,
        /// Its status now.
        status: FactoryStatus,
    },
}

/// A client's order of inbound liquidity at the LSP, keyed by its fee invoice's payment hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiquidityOrder {
    /// The fee invoice's payment hash.
    pub payment_hash: PaymentHash,
    /// The factory of the buyer's leaf.
    pub factory: FactoryId,
    /// The buyer's position in it.
    pub client: u32,
    /// The channel's capacity (sat).
    pub amount_sat: u64,
    /// The fee (sat).
    pub fee_sat: u64,
    /// Where it is.
    pub status: OrderStatus,
}

/// Where a liquidity order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Quoted with its fee invoice; nothing paid.
    Offered,
    /// The fee HTLC is held; the sale is to be made.
    Paid,
    /// The sale of this index is being signed.
    Selling(u32),
    /// Sold as sale `j`; the fee is (to be) claimed.
    Sold(u32),
    /// The sale could not be made; the fee HTLC was failed back.
    Refunded,
}

impl OrderStatus {
    pub(crate) fn parts(self) -> (&'static str, Option<u32>) {
        match self {
            OrderStatus::Offered => ("offered", None),
            OrderStatus::Paid => ("paid", None),
            OrderStatus::Selling(j) => ("selling", Some(j)),
            OrderStatus::Sold(j) => ("sold", Some(j)),
            OrderStatus::Refunded => ("refunded", None),
        }
    }

    pub(crate) fn from_parts(s: &str, sale: Option<u32>) -> Result<Self, StoreError> {
        Ok(match (s, sale) {
            ("offered", None) => OrderStatus::Offered,
            ("paid", None) => OrderStatus::Paid,
            ("selling", Some(j)) => OrderStatus::Selling(j),
            ("sold", Some(j)) => OrderStatus::Sold(j),
            ("refunded", None) => OrderStatus::Refunded,
            _ => {
                return Err(StoreError::corrupt(
                    "liquidity_orders.status",
                    format!("{s:?} with sale {sale:?}"),
                ))
            }
        })
    }
}
