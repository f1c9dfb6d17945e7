//! The SQLite store: one database file per node, in WAL mode with `synchronous=FULL` (a write
//! that returned has reached the disk), foreign keys on, schema versioned by [`migrations`].
//! Every method that changes more than one record does so in one transaction: all or nothing.

pub mod migrations;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Network, OutPoint, Txid};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::StoreError;
use crate::fs::{create_private_dir, touch_private};
use crate::keys::{KeyFamily, KeyIndex};
use crate::records::*;

/// Name of the database file in a node's data directory.
pub const DB_FILE_NAME: &str = "store.sqlite3";

/// A node's persistent state.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

type Result<T> = std::result::Result<T, StoreError>;

// ---- conversions between columns and typed values; stored bytes never panic ----

fn array32(bytes: Vec<u8>, what: &'static str) -> Result<[u8; 32]> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| StoreError::corrupt(what, format!("{len} bytes, 32 expected")))
}

fn txid_of(bytes: Vec<u8>, what: &'static str) -> Result<Txid> {
    Ok(Txid::from_byte_array(array32(bytes, what)?))
}

fn u32_of(v: i64, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::corrupt(what, format!("{v} out of range")))
}

fn u64_of(v: i64, what: &'static str) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(what, format!("{v} out of range")))
}

fn i64_of(v: u64, what: &'static str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::OutOfRange { what, value: v })
}

fn key_index_of(v: i64, what: &'static str) -> Result<KeyIndex> {
    KeyIndex::new(u32_of(v, what)?)
        .map_err(|_| StoreError::corrupt(what, format!("key index {v} out of range")))
}

fn commitment_of(v: i64, what: &'static str) -> Result<CommitmentNumber> {
    CommitmentNumber::new(u64_of(v, what)?)
        .map_err(|_| StoreError::corrupt(what, format!("commitment number {v} out of range")))
}

fn signed_tx_of(label: String, raw: Vec<u8>, txid: Vec<u8>) -> Result<SignedTx> {
    let what = "factory_txs.raw_tx";
    let label =
        TxLabel::new(label).map_err(|e| StoreError::corrupt("factory_txs.label", e.to_string()))?;
    let tx = decode_tx(&raw, what)?;
    if tx.compute_txid() != txid_of(txid, "factory_txs.txid")? {
        return Err(StoreError::corrupt(
            what,
            "txid does not match the transaction",
        ));
    }
    Ok(SignedTx { label, tx })
}

struct FactoryRow {
    id: Vec<u8>,
    params: Vec<u8>,
    status: String,
    created: i64,
    timeout: i64,
    funding_txid: Option<Vec<u8>>,
    funding_vout: Option<i64>,
    key_index: i64,
}

const FACTORY_COLUMNS: &str = "factory_id, params, status, created_height, timeout_height, \
                               funding_txid, funding_vout, key_index";

impl FactoryRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<FactoryRow> {
        Ok(FactoryRow {
            id: r.get(0)?,
            params: r.get(1)?,
            status: r.get(2)?,
            created: r.get(3)?,
            timeout: r.get(4)?,
            funding_txid: r.get(5)?,
            funding_vout: r.get(6)?,
            key_index: r.get(7)?,
        })
    }

    fn record(self) -> Result<FactoryRecord> {
        let funding = match (self.funding_txid, self.funding_vout) {
            (None, None) => None,
            (Some(txid), Some(vout)) => Some(OutPoint {
                txid: txid_of(txid, "factories.funding_txid")?,
                vout: u32_of(vout, "factories.funding_vout")?,
            }),
            _ => return Err(StoreError::corrupt("factories.funding", "half an outpoint")),
        };
        Ok(FactoryRecord {
            id: FactoryId(array32(self.id, "factories.factory_id")?),
            params: self.params,
            status: FactoryStatus::parse(&self.status)?,
            created_height: u32_of(self.created, "factories.created_height")?,
            timeout_height: u32_of(self.timeout, "factories.timeout_height")?,
            funding,
            key_index: key_index_of(self.key_index, "factories.key_index")?,
        })
    }
}

type ChannelRow = (Vec<u8>, Vec<u8>, i64, Vec<u8>, i64);

fn channel_of((id, factory, key_index, state, n): ChannelRow) -> Result<ChannelRecord> {
    Ok(ChannelRecord {
        id: ChannelId(array32(id, "channels.channel_id")?),
        factory: FactoryId(array32(factory, "channels.factory_id")?),
        key_index: key_index_of(key_index, "channels.key_index")?,
        state,
        commitment_number: commitment_of(n, "channels.commitment_number")?,
    })
}

type InvoiceRow = (
    Vec<u8>,
    String,
    Option<Vec<u8>>,
    Option<i64>,
    String,
    String,
    Option<i64>,
);

const INVOICE_COLUMNS: &str =
    "payment_hash, direction, preimage, amount_msat, status, bolt11, claim_deadline";

fn invoice_of(row: InvoiceRow) -> Result<Invoice> {
    let (hash, direction, preimage, amount, status, bolt11, deadline) = row;
    let payment_hash = PaymentHash(array32(hash, "invoices.payment_hash")?);
    let preimage = preimage
        .map(|p| array32(p, "invoices.preimage").map(Preimage))
        .transpose()?;
    if let Some(p) = preimage {
        if p.payment_hash() != payment_hash {
            return Err(StoreError::corrupt(
                "invoices.preimage",
                "does not hash to the payment hash",
            ));
        }
    }
    Ok(Invoice {
        payment_hash,
        direction: InvoiceDirection::parse(&direction)?,
        preimage,
        amount: amount
            .map(|a| u64_of(a, "invoices.amount_msat").map(Msat))
            .transpose()?,
        status: InvoiceStatus::parse(&status)?,
        bolt11,
        claim_deadline: deadline
            .map(|d| u32_of(d, "invoices.claim_deadline"))
            .transpose()?,
    })
}

type PunishmentRow = (Vec<u8>, Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

fn punishment_of((txid, breach, factory, channel, raw): PunishmentRow) -> Result<Punishment> {
    let tx = decode_tx(&raw, "punishments.raw_tx")?;
    if tx.compute_txid() != txid_of(txid, "punishments.txid")? {
        return Err(StoreError::corrupt(
            "punishments.raw_tx",
            "txid does not match the transaction",
        ));
    }
    Ok(Punishment {
        breach_txid: txid_of(breach, "punishments.breach_txid")?,
        factory: factory
            .map(|f| array32(f, "punishments.factory_id").map(FactoryId))
            .transpose()?,
        channel: channel
            .map(|c| array32(c, "punishments.channel_id").map(ChannelId))
            .transpose()?,
        tx,
    })
}

fn watch_of(
    (txid, vout, factory, action): (Vec<u8>, i64, Option<Vec<u8>>, Vec<u8>),
) -> Result<WatchEntry> {
    Ok(WatchEntry {
        outpoint: OutPoint {
            txid: txid_of(txid, "watch.txid")?,
            vout: u32_of(vout, "watch.vout")?,
        },
        factory: factory
            .map(|f| array32(f, "watch.factory_id").map(FactoryId))
            .transpose()?,
        action: WatchAction::decode(&action)?,
    })
}

fn spend_of(role: String, sighash: Vec<u8>, txid: Vec<u8>) -> Result<Spend> {
    Ok(Spend {
        role: TxLabel::new(role)
            .map_err(|e| StoreError::corrupt("signed_spends.role", e.to_string()))?,
        sighash: array32(sighash, "signed_spends.sighash")?,
        txid: txid_of(txid, "signed_spends.spend_txid")?,
    })
}

/// Collect a query's rows, converting each with `f`.
fn collect<R, T>(
    rows: impl Iterator<Item = rusqlite::Result<R>>,
    f: impl Fn(R) -> Result<T>,
) -> Result<Vec<T>> {
    rows.map(|r| f(r?)).collect()
}

// ---- transaction-level helpers (used inside one SQL transaction) ----

fn require_factory(tx: &Transaction<'_>, id: FactoryId) -> Result<FactoryStatus> {
    let status: Option<String> = tx
        .query_row(
            "SELECT status FROM factories WHERE factory_id = ?1",
            [&id.0[..]],
            |r| r.get(0),
        )
        .optional()?;
    FactoryStatus::parse(&status.ok_or(StoreError::UnknownFactory(id))?)
}

fn put_signed_txs(tx: &Transaction<'_>, factory: FactoryId, txs: &[SignedTx]) -> Result<()> {
    for s in txs {
        let txid = s.tx.compute_txid();
        let raw = encode_tx(&s.tx);
        let existing: Option<(String, Vec<u8>)> = tx
            .query_row(
                "SELECT label, raw_tx FROM factory_txs WHERE factory_id = ?1 AND txid = ?2",
                params![&factory.0[..], &txid.to_byte_array()[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match existing {
            Some((label, old)) if label == s.label.as_str() && old == raw => {}
            Some(_) => return Err(StoreError::TxConflict { txid }),
            None => {
                tx.execute(
                    "INSERT INTO factory_txs (factory_id, txid, label, raw_tx) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        &factory.0[..],
                        &txid.to_byte_array()[..],
                        s.label.as_str(),
                        raw
                    ],
                )?;
            }
        }
    }
    Ok(())
}

fn put_spends(tx: &Transaction<'_>, spends: &[(OutPoint, Spend)]) -> Result<()> {
    for (outpoint, spend) in spends {
        let existing: Option<(String, Vec<u8>, Vec<u8>)> = tx
            .query_row(
                "SELECT role, sighash, spend_txid FROM signed_spends \
                 WHERE txid = ?1 AND vout = ?2 AND role = ?3",
                params![
                    &outpoint.txid.to_byte_array()[..],
                    outpoint.vout,
                    spend.role.as_str()
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        match existing {
            Some((role, sighash, txid)) => {
                let recorded = spend_of(role, sighash, txid)?;
                if recorded != *spend {
                    return Err(StoreError::ConflictingSpend {
                        outpoint: *outpoint,
                        recorded: Box::new(recorded),
                        attempted: Box::new(spend.clone()),
                    });
                }
            }
            None => {
                tx.execute(
                    "INSERT INTO signed_spends (txid, vout, role, sighash, spend_txid) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        &outpoint.txid.to_byte_array()[..],
                        outpoint.vout,
                        spend.role.as_str(),
                        &spend.sighash[..],
                        &spend.txid.to_byte_array()[..]
                    ],
                )?;
            }
        }
    }
    Ok(())
}

fn set_status(tx: &Transaction<'_>, id: FactoryId, to: FactoryStatus) -> Result<()> {
    let from = require_factory(tx, id)?;
    if !from.can_become(to) {
        return Err(StoreError::FactoryStatus {
            factory: id,
            from,
            to,
        });
    }
    tx.execute(
        "UPDATE factories SET status = ?2 WHERE factory_id = ?1",
        params![&id.0[..], to.as_str()],
    )?;
    Ok(())
}

impl Store {
    /// Open (creating if needed) the store in `data_dir` (created mode 0700), bringing its
    /// schema to the current version.
    pub fn open(data_dir: &Path) -> Result<Store> {
        create_private_dir(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        Self::open_file(&data_dir.join(DB_FILE_NAME))
    }

    /// Open (creating if needed, mode 0600) the database file at `path`, bringing its schema to
    /// the current version.
    pub fn open_file(path: &Path) -> Result<Store> {
        Self::open_with(path, migrations::MIGRATIONS, migrations::current_version())
    }

    fn open_with(path: &Path, steps: &[migrations::Migration], target: u32) -> Result<Store> {
        touch_private(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        migrations::migrate(&mut conn, steps, target)?;
        Ok(Store {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32> {
        migrations::version(&self.conn)
    }

    /// Run `f` in one immediate SQL transaction: committed if it returns `Ok`, rolled back
    /// otherwise.
    fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    // ---- node ----

    /// Record who this node is; a no-op if the same, [`StoreError::NodeMismatch`] if different.
    pub fn init_node(&mut self, meta: &NodeMeta) -> Result<()> {
        self.write(|tx| {
            if let Some(stored) = read_node(tx)? {
                if stored != *meta {
                    return Err(StoreError::NodeMismatch {
                        stored: Box::new(stored),
                        given: Box::new(*meta),
                    });
                }
                return Ok(());
            }
            tx.execute(
                "INSERT INTO node (singleton, role, network, node_id) VALUES (1, ?1, ?2, ?3)",
                params![
                    meta.role.as_str(),
                    meta.network.to_core_arg(),
                    &meta.node_id.serialize()[..]
                ],
            )?;
            Ok(())
        })
    }

    /// Who this node is, once recorded.
    pub fn node(&self) -> Result<Option<NodeMeta>> {
        read_node(&self.conn)
    }

    // ---- key indices ----

    /// A key index of `family` never handed out before (durable before it is returned).
    pub fn allocate_key_index(&mut self, family: KeyFamily) -> Result<KeyIndex> {
        self.write(|tx| {
            let next: i64 = tx
                .query_row(
                    "SELECT next_index FROM key_counters WHERE family = ?1",
                    [family.as_str()],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            let index = KeyIndex::new(u32_of(next, "key_counters.next_index")?).map_err(|_| {
                StoreError::OutOfRange {
                    what: "key index",
                    value: next as u64,
                }
            })?;
            tx.execute(
                "INSERT INTO key_counters (family, next_index) VALUES (?1, ?2) \
                 ON CONFLICT (family) DO UPDATE SET next_index = excluded.next_index",
                params![family.as_str(), next + 1],
            )?;
            Ok(index)
        })
    }

    // ---- factories ----

    /// Record a new factory.
    pub fn insert_factory(&mut self, f: &FactoryRecord) -> Result<()> {
        self.write(|tx| {
            if require_factory(tx, f.id).is_ok() {
                return Err(StoreError::FactoryExists(f.id));
            }
            tx.execute(
                &format!(
                    "INSERT INTO factories ({FACTORY_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    &f.id.0[..],
                    f.params,
                    f.status.as_str(),
                    f.created_height,
                    f.timeout_height,
                    f.funding.map(|o| o.txid.to_byte_array().to_vec()),
                    f.funding.map(|o| o.vout),
                    f.key_index.get()
                ],
            )?;
            Ok(())
        })
    }

    /// A factory.
    pub fn factory(&self, id: FactoryId) -> Result<Option<FactoryRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {FACTORY_COLUMNS} FROM factories WHERE factory_id = ?1"),
                [&id.0[..]],
                FactoryRow::read,
            )
            .optional()?
            .map(FactoryRow::record)
            .transpose()
    }

    /// Every factory, oldest first.
    pub fn factories(&self) -> Result<Vec<FactoryRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {FACTORY_COLUMNS} FROM factories ORDER BY created_height, factory_id"
        ))?;
        let rows = stmt.query_map([], FactoryRow::read)?;
        collect(rows, FactoryRow::record)
    }

    /// Move a factory to `status` (forwards only, see [`FactoryStatus::can_become`]).
    pub fn set_factory_status(&mut self, id: FactoryId, status: FactoryStatus) -> Result<()> {
        self.write(|tx| set_status(tx, id, status))
    }

    /// Record a factory's funding outpoint (once; the same again is a no-op).
    pub fn set_factory_funding(&mut self, id: FactoryId, funding: OutPoint) -> Result<()> {
        self.write(|tx| {
            require_factory(tx, id)?;
            let current: (Option<Vec<u8>>, Option<i64>) = tx.query_row(
                "SELECT funding_txid, funding_vout FROM factories WHERE factory_id = ?1",
                [&id.0[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if let (Some(txid), Some(vout)) = current {
                let recorded = OutPoint {
                    txid: txid_of(txid, "factories.funding_txid")?,
                    vout: u32_of(vout, "factories.funding_vout")?,
                };
                if recorded != funding {
                    return Err(StoreError::FundingConflict {
                        factory: id,
                        recorded,
                        given: funding,
                    });
                }
                return Ok(());
            }
            tx.execute(
                "UPDATE factories SET funding_txid = ?2, funding_vout = ?3 WHERE factory_id = ?1",
                params![&id.0[..], &funding.txid.to_byte_array()[..], funding.vout],
            )?;
            Ok(())
        })
    }

    /// Store fully signed transactions of a factory, all or none (the same again is a no-op).
    pub fn add_signed_txs(&mut self, id: FactoryId, txs: &[SignedTx]) -> Result<()> {
        self.write(|tx| {
            require_factory(tx, id)?;
            put_signed_txs(tx, id, txs)
        })
    }

    /// The signed transactions of a factory, in the order they were stored.
    pub fn signed_txs(&self, id: FactoryId) -> Result<Vec<SignedTx>> {
        let mut stmt = self.conn.prepare(
            "SELECT label, raw_tx, txid FROM factory_txs WHERE factory_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([&id.0[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        collect(rows, |(l, raw, txid)| signed_tx_of(l, raw, txid))
    }

    // ---- factory states ----

    /// Append version `version` of `party`'s state in a factory: it must be the next version
    /// (0 first); re-appending the latest version with the same bytes is a no-op.
    pub fn append_factory_state(
        &mut self,
        id: FactoryId,
        party: Party,
        version: u64,
        state: &[u8],
    ) -> Result<()> {
        self.write(|tx| {
            require_factory(tx, id)?;
            let latest: Option<(i64, Vec<u8>)> = tx
                .query_row(
                    "SELECT version, state FROM factory_states \
                     WHERE factory_id = ?1 AND party = ?2 ORDER BY version DESC LIMIT 1",
                    params![&id.0[..], party.code()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let expected = match latest {
                None => 0,
                Some((v, bytes)) => {
                    let v = u64_of(v, "factory_states.version")?;
                    if v == version && bytes == state {
                        return Ok(());
                    }
                    v + 1
                }
            };
            if version != expected {
                return Err(StoreError::VersionGap {
                    factory: id,
                    party,
                    expected,
                    given: version,
                });
            }
            tx.execute(
                "INSERT INTO factory_states (factory_id, party, version, state) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    &id.0[..],
                    party.code(),
                    i64_of(version, "state version")?,
                    state
                ],
            )?;
            Ok(())
        })
    }

    /// The latest state of `party` in a factory, with its version.
    pub fn latest_factory_state(
        &self,
        id: FactoryId,
        party: Party,
    ) -> Result<Option<(u64, Vec<u8>)>> {
        self.conn
            .query_row(
                "SELECT version, state FROM factory_states \
                 WHERE factory_id = ?1 AND party = ?2 ORDER BY version DESC LIMIT 1",
                params![&id.0[..], party.code()],
                |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)),
            )
            .optional()?
            .map(|(v, s)| Ok((u64_of(v, "factory_states.version")?, s)))
            .transpose()
    }

    /// Every state version of `party` in a factory, oldest first.
    pub fn factory_state_history(
        &self,
        id: FactoryId,
        party: Party,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT version, state FROM factory_states \
             WHERE factory_id = ?1 AND party = ?2 ORDER BY version",
        )?;
        let rows = stmt.query_map(params![&id.0[..], party.code()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get(1)?))
        })?;
        collect(rows, |(v, s)| Ok((u64_of(v, "factory_states.version")?, s)))
    }

    /// Every party that has a state in a factory.
    pub fn factory_parties(&self, id: FactoryId) -> Result<Vec<Party>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT party FROM factory_states WHERE factory_id = ?1 ORDER BY party",
        )?;
        let rows = stmt.query_map([&id.0[..]], |r| r.get::<_, i64>(0))?;
        collect(rows, |c| Party::from_code(c, "factory_states.party"))
    }

    // ---- ceremonies ----

    /// Record that a factory's signing ceremony reached `round.round` with these participants,
    /// and the spends about to be signed in it, all at once: if any outpoint was already signed
    /// for another spend, nothing is recorded (and nothing may be signed).
    pub fn record_ceremony_round(
        &mut self,
        round: &CeremonyRound,
        spends: &[(OutPoint, Spend)],
    ) -> Result<()> {
        let mut parties = round.participants.clone();
        parties.sort();
        parties.dedup();
        if parties.is_empty() || parties.len() != round.participants.len() {
            return Err(StoreError::BadParticipants(round.factory));
        }
        self.write(|tx| {
            require_factory(tx, round.factory)?;
            let id = &round.factory.0[..];
            tx.execute(
                "INSERT INTO ceremonies (factory_id, round) VALUES (?1, ?2) \
                 ON CONFLICT (factory_id) DO UPDATE SET round = excluded.round",
                params![id, round.round],
            )?;
            tx.execute(
                "DELETE FROM ceremony_participants WHERE factory_id = ?1",
                [id],
            )?;
            for p in &round.participants {
                tx.execute(
                    "INSERT INTO ceremony_participants (factory_id, party) VALUES (?1, ?2)",
                    params![id, p.code()],
                )?;
            }
            put_spends(tx, spends)
        })
    }

    /// The ceremony under way for a factory, if any.
    pub fn ceremony(&self, factory: FactoryId) -> Result<Option<CeremonyRound>> {
        let round: Option<i64> = self
            .conn
            .query_row(
                "SELECT round FROM ceremonies WHERE factory_id = ?1",
                [&factory.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        let Some(round) = round else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare(
            "SELECT party FROM ceremony_participants WHERE factory_id = ?1 ORDER BY party",
        )?;
        let rows = stmt.query_map([&factory.0[..]], |r| r.get::<_, i64>(0))?;
        let participants = collect(rows, |c| Party::from_code(c, "ceremony_participants.party"))?;
        Ok(Some(CeremonyRound {
            factory,
            round: u32_of(round, "ceremonies.round")?,
            participants,
        }))
    }

    /// Every ceremony under way (to resume or abort after a restart).
    pub fn ceremonies(&self) -> Result<Vec<CeremonyRound>> {
        let mut stmt = self
            .conn
            .prepare("SELECT factory_id FROM ceremonies ORDER BY factory_id")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let ids = collect(rows, |id| {
            Ok(FactoryId(array32(id, "ceremonies.factory_id")?))
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.ceremony(id)?);
        }
        Ok(out)
    }

    /// End a factory's ceremony: store its signed transactions, move the factory to `status`
    /// and drop the ceremony record, all at once.
    pub fn finish_ceremony(
        &mut self,
        factory: FactoryId,
        status: FactoryStatus,
        txs: &[SignedTx],
    ) -> Result<()> {
        self.write(|tx| {
            let gone = tx.execute(
                "DELETE FROM ceremonies WHERE factory_id = ?1",
                [&factory.0[..]],
            )?;
            if gone == 0 {
                require_factory(tx, factory)?;
                return Err(StoreError::NoCeremony(factory));
            }
            put_signed_txs(tx, factory, txs)?;
            set_status(tx, factory, status)
        })
    }

    /// Drop a factory's ceremony record (the spends recorded for it stay: they are never
    /// signed differently).
    pub fn abort_ceremony(&mut self, factory: FactoryId) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM ceremonies WHERE factory_id = ?1",
                [&factory.0[..]],
            )?;
            Ok(())
        })
    }

    /// Write one protocol step's change. A crash inside `NewFactory` (two transactions) leaves
    /// at most a `Forming` factory without a ceremony, which a restart aborts like any other
    /// `Forming` factory (its secret nonces are gone).
    pub fn apply(&mut self, change: &Change) -> Result<()> {
        match change {
            Change::NewFactory { record, round } => {
                self.insert_factory(record)?;
                self.record_ceremony_round(round, &[])
            }
            Change::Round { round, spends } => self.record_ceremony_round(round, spends),
            Change::Signed {
                factory,
                txs,
                status,
            } => self.finish_ceremony(*factory, *status, txs),
            Change::Funding { factory, outpoint } => self.set_factory_funding(*factory, *outpoint),
            Change::State {
                factory,
                party,
                version,
                bytes,
            } => self.append_factory_state(*factory, *party, *version, bytes),
            Change::Status { factory, status } => {
                if *status == FactoryStatus::Aborted {
                    self.abort_ceremony(*factory)?;
                }
                self.set_factory_status(*factory, *status)
            }
        }
    }

    // ---- channels ----

    /// Record a new channel.
    pub fn insert_channel(&mut self, ch: &ChannelRecord) -> Result<()> {
        self.write(|tx| {
            require_factory(tx, ch.factory)?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM channels WHERE channel_id = ?1",
                    [&ch.id.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::ChannelExists(ch.id));
            }
            tx.execute(
                "INSERT INTO channels (channel_id, factory_id, key_index, state, commitment_number) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    &ch.id.0[..],
                    &ch.factory.0[..],
                    ch.key_index.get(),
                    ch.state,
                    i64_of(ch.commitment_number.get(), "commitment number")?
                ],
            )?;
            Ok(())
        })
    }

    /// Forget a channel that never carried a payment (a sold channel whose sale was abandoned),
    /// with the secrets received in it; refused if a punishment refers to it.
    pub fn remove_channel(&mut self, id: ChannelId) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM received_secrets WHERE channel_id = ?1",
                [&id.0[..]],
            )?;
            tx.execute(
                "DELETE FROM revoked_states WHERE channel_id = ?1",
                [&id.0[..]],
            )?;
            tx.execute("DELETE FROM channels WHERE channel_id = ?1", [&id.0[..]])?;
            Ok(())
        })
    }

    /// A channel.
    pub fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>> {
        self.conn
            .query_row(
                "SELECT channel_id, factory_id, key_index, state, commitment_number \
                 FROM channels WHERE channel_id = ?1",
                [&id.0[..]],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?
            .map(channel_of)
            .transpose()
    }

    /// The channels of a factory.
    pub fn channels(&self, factory: FactoryId) -> Result<Vec<ChannelRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT channel_id, factory_id, key_index, state, commitment_number \
             FROM channels WHERE factory_id = ?1 ORDER BY channel_id",
        )?;
        let rows = stmt.query_map([&factory.0[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        collect(rows, channel_of)
    }

    /// Replace a channel's state with `state` at commitment `commitment` (never below the
    /// stored one) and store the secret the other side revealed with it, all at once.
    pub fn save_channel_update(
        &mut self,
        channel: ChannelId,
        state: &[u8],
        commitment: CommitmentNumber,
        received: Option<ReceivedSecret>,
    ) -> Result<()> {
        self.write(|tx| put_channel(tx, channel, state, commitment, received))
    }

    /// One step of a channel, in one transaction: its new state, the states of the other
    /// side's commitments it revoked (`revoked`: commitment number and encoded state, each
    /// appended once; one already stored is kept), and the preimages it learned (each known
    /// invoice becomes paid with its preimage, whatever its status: the preimage proves the
    /// payment; a preimage of no invoice here is left out).
    pub fn save_channel_step(
        &mut self,
        channel: ChannelId,
        state: &[u8],
        commitment: CommitmentNumber,
        preimages: &[Preimage],
        revoked: &[(u64, Vec<u8>)],
    ) -> Result<()> {
        for p in preimages {
            check_preimage(p.payment_hash(), Some(*p))?;
        }
        self.write(|tx| {
            for p in preimages {
                let hash = p.payment_hash();
                let Some(current) = read_invoice(tx, hash)? else {
                    continue;
                };
                if current.status == InvoiceStatus::Paid {
                    continue;
                }
                // The preimage proves the payment: it is paid, even if it was given up on.
                tx.execute(
                    "UPDATE invoices SET status = ?2, preimage = ?3 WHERE payment_hash = ?1",
                    params![&hash.0[..], InvoiceStatus::Paid.as_str(), p.0.to_vec()],
                )?;
            }
            put_channel(tx, channel, state, commitment, None)?;
            for (n, bytes) in revoked {
                tx.execute(
                    "INSERT OR IGNORE INTO revoked_states (channel_id, commitment_number, state) \
                     VALUES (?1, ?2, ?3)",
                    params![&channel.0[..], i64_of(*n, "commitment number")?, bytes],
                )?;
            }
            Ok(())
        })
    }

    /// The stored states of a channel's revoked commitments of the other side, by number.
    pub fn revoked_states(&self, channel: ChannelId) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut stmt = self.conn.prepare(
            "SELECT commitment_number, state FROM revoked_states \
             WHERE channel_id = ?1 ORDER BY commitment_number",
        )?;
        let rows = stmt.query_map([&channel.0[..]], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        collect(rows, |(n, s)| {
            Ok((
                u64::try_from(n).map_err(|_| {
                    StoreError::corrupt("revoked_states.commitment_number", n.to_string())
                })?,
                s,
            ))
        })
    }

    /// The secret revealed for a commitment of the other side, if received.
    pub fn received_secret(
        &self,
        channel: ChannelId,
        commitment: CommitmentNumber,
    ) -> Result<Option<[u8; 32]>> {
        self.conn
            .query_row(
                "SELECT secret FROM received_secrets \
                 WHERE channel_id = ?1 AND commitment_number = ?2",
                params![
                    &channel.0[..],
                    i64_of(commitment.get(), "commitment number")?
                ],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .map(|s| array32(s, "received_secrets.secret"))
            .transpose()
    }

    /// Every secret received on a channel, by commitment number.
    pub fn received_secrets(&self, channel: ChannelId) -> Result<Vec<ReceivedSecret>> {
        let mut stmt = self.conn.prepare(
            "SELECT commitment_number, secret FROM received_secrets \
             WHERE channel_id = ?1 ORDER BY commitment_number",
        )?;
        let rows = stmt.query_map([&channel.0[..]], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        collect(rows, |(n, s)| {
            Ok(ReceivedSecret {
                commitment: commitment_of(n, "received_secrets.commitment_number")?,
                secret: array32(s, "received_secrets.secret")?,
            })
        })
    }

    // ---- punishments ----

    /// Store a punishment transaction (the same again is a no-op).
    pub fn add_punishment(&mut self, p: &Punishment) -> Result<()> {
        if p.factory.is_none() && p.channel.is_none() {
            return Err(StoreError::PunishmentWithoutOwner);
        }
        self.write(|tx| {
            if let Some(f) = p.factory {
                require_factory(tx, f)?;
            }
            if let Some(c) = p.channel {
                let known: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM channels WHERE channel_id = ?1",
                        [&c.0[..]],
                        |r| r.get(0),
                    )
                    .optional()?;
                if known.is_none() {
                    return Err(StoreError::UnknownChannel(c));
                }
            }
            let txid = p.tx.compute_txid();
            let existing = tx
                .query_row(
                    "SELECT txid, breach_txid, factory_id, channel_id, raw_tx \
                     FROM punishments WHERE txid = ?1",
                    [&txid.to_byte_array()[..]],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            if let Some(row) = existing {
                if punishment_of(row)? != *p {
                    return Err(StoreError::TxConflict { txid });
                }
                return Ok(());
            }
            tx.execute(
                "INSERT INTO punishments (txid, breach_txid, factory_id, channel_id, raw_tx) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    &txid.to_byte_array()[..],
                    &p.breach_txid.to_byte_array()[..],
                    p.factory.map(|f| f.0.to_vec()),
                    p.channel.map(|c| c.0.to_vec()),
                    encode_tx(&p.tx)
                ],
            )?;
            Ok(())
        })
    }

    /// The punishments of a revoked transaction.
    pub fn punishments_for(&self, breach: Txid) -> Result<Vec<Punishment>> {
        let mut stmt = self.conn.prepare(
            "SELECT txid, breach_txid, factory_id, channel_id, raw_tx \
             FROM punishments WHERE breach_txid = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([&breach.to_byte_array()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        collect(rows, punishment_of)
    }

    // ---- watch list ----

    /// Watch an outpoint (replacing what was to be done for it).
    pub fn watch(&mut self, entry: &WatchEntry) -> Result<()> {
        self.write(|tx| {
            if let Some(f) = entry.factory {
                require_factory(tx, f)?;
            }
            tx.execute(
                "INSERT INTO watch (txid, vout, factory_id, action) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (txid, vout) DO UPDATE \
                 SET factory_id = excluded.factory_id, action = excluded.action",
                params![
                    &entry.outpoint.txid.to_byte_array()[..],
                    entry.outpoint.vout,
                    entry.factory.map(|f| f.0.to_vec()),
                    entry.action.encode()
                ],
            )?;
            Ok(())
        })
    }

    /// Stop watching an outpoint; whether it was watched.
    pub fn unwatch(&mut self, outpoint: OutPoint) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM watch WHERE txid = ?1 AND vout = ?2",
                params![&outpoint.txid.to_byte_array()[..], outpoint.vout],
            )? > 0)
        })
    }

    /// Stop watching every outpoint of a factory; how many were watched.
    pub fn unwatch_factory(&mut self, factory: FactoryId) -> Result<usize> {
        self.write(
            |tx| Ok(tx.execute("DELETE FROM watch WHERE factory_id = ?1", [&factory.0[..]])?),
        )
    }

    /// What to do if `outpoint` is spent, if watched.
    pub fn watched(&self, outpoint: OutPoint) -> Result<Option<WatchEntry>> {
        self.conn
            .query_row(
                "SELECT txid, vout, factory_id, action FROM watch WHERE txid = ?1 AND vout = ?2",
                params![&outpoint.txid.to_byte_array()[..], outpoint.vout],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?
            .map(watch_of)
            .transpose()
    }

    /// Every watched outpoint.
    pub fn watch_list(&self) -> Result<Vec<WatchEntry>> {
        let mut stmt = self
            .conn
            .prepare("SELECT txid, vout, factory_id, action FROM watch ORDER BY txid, vout")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        collect(rows, watch_of)
    }

    // ---- invoices ----

    /// Record a new invoice issued on behalf of `payee` (a client's node id): paid into its
    /// leaf channel.
    pub fn insert_routed_invoice(&mut self, inv: &Invoice, payee: &[u8; 33]) -> Result<()> {
        self.insert_invoice_inner(inv, Some(payee))
    }

    /// The client an invoice was issued for, if it was issued on behalf of one.
    pub fn route(&self, hash: PaymentHash) -> Result<Option<[u8; 33]>> {
        self.conn
            .query_row(
                "SELECT payee FROM routes WHERE payment_hash = ?1",
                [&hash.0[..]],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .map(|p| {
                <[u8; 33]>::try_from(p.as_slice())
                    .map_err(|_| StoreError::corrupt("routes.payee", "not 33 bytes"))
            })
            .transpose()
    }

    /// Record a liquidity order with its fee invoice, both at once.
    pub fn insert_liquidity_order(&mut self, inv: &Invoice, order: &LiquidityOrder) -> Result<()> {
        if inv.payment_hash != order.payment_hash {
            return Err(StoreError::corrupt(
                "liquidity_orders.payment_hash",
                "not the invoice's",
            ));
        }
        check_preimage(inv.payment_hash, inv.preimage)?;
        self.write(|tx| {
            require_factory(tx, order.factory)?;
            insert_invoice_row(tx, inv)?;
            let (status, sale) = order.status.parts();
            tx.execute(
                "INSERT INTO liquidity_orders \
                 (payment_hash, factory_id, client, amount_sat, fee_sat, status, sale) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    &order.payment_hash.0[..],
                    &order.factory.0[..],
                    order.client,
                    i64_of(order.amount_sat, "amount (sat)")?,
                    i64_of(order.fee_sat, "fee (sat)")?,
                    status,
                    sale
                ],
            )?;
            Ok(())
        })
    }

    /// A liquidity order.
    pub fn liquidity_order(&self, hash: PaymentHash) -> Result<Option<LiquidityOrder>> {
        self.conn
            .query_row(
                &format!("SELECT {ORDER_COLUMNS} FROM liquidity_orders WHERE payment_hash = ?1"),
                [&hash.0[..]],
                order_row,
            )
            .optional()?
            .map(order_of)
            .transpose()
    }

    /// The liquidity orders paid and not yet sold or refunded.
    pub fn open_liquidity_orders(&self) -> Result<Vec<LiquidityOrder>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ORDER_COLUMNS} FROM liquidity_orders \
             WHERE status IN ('paid', 'selling') ORDER BY payment_hash"
        ))?;
        let rows = stmt.query_map([], order_row)?;
        collect(rows, order_of)
    }

    /// Move a liquidity order to `status`.
    pub fn set_order_status(&mut self, hash: PaymentHash, status: OrderStatus) -> Result<()> {
        let (s, sale) = status.parts();
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE liquidity_orders SET status = ?2, sale = ?3 WHERE payment_hash = ?1",
                params![&hash.0[..], s, sale],
            )?;
            if n == 0 {
                return Err(StoreError::corrupt("liquidity_orders", "no such order"));
            }
            Ok(())
        })
    }

    /// Record a new invoice.
    pub fn insert_invoice(&mut self, inv: &Invoice) -> Result<()> {
        self.insert_invoice_inner(inv, None)
    }

    fn insert_invoice_inner(&mut self, inv: &Invoice, payee: Option<&[u8; 33]>) -> Result<()> {
        check_preimage(inv.payment_hash, inv.preimage)?;
        if inv.status == InvoiceStatus::Paid && inv.preimage.is_none() {
            return Err(StoreError::InvoiceStatus {
                hash: inv.payment_hash,
                from: InvoiceStatus::Open,
                to: InvoiceStatus::Paid,
            });
        }
        self.write(|tx| {
            insert_invoice_row(tx, inv)?;
            if let Some(payee) = payee {
                tx.execute(
                    "INSERT INTO routes (payment_hash, payee) VALUES (?1, ?2)",
                    params![&inv.payment_hash.0[..], &payee[..]],
                )?;
            }
            Ok(())
        })
    }

    /// An invoice.
    pub fn invoice(&self, hash: PaymentHash) -> Result<Option<Invoice>> {
        read_invoice(&self.conn, hash)
    }

    /// Every invoice with `status`.
    pub fn invoices_with_status(&self, status: InvoiceStatus) -> Result<Vec<Invoice>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices WHERE status = ?1 ORDER BY rowid"
        ))?;
        let rows = stmt.query_map([status.as_str()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?;
        collect(rows, invoice_of)
    }

    /// Move an invoice to `status` (see [`InvoiceStatus::can_become`]), recording its preimage
    /// if given (it must hash to the payment hash; `Paid` needs one).
    pub fn update_invoice(
        &mut self,
        hash: PaymentHash,
        status: InvoiceStatus,
        preimage: Option<Preimage>,
    ) -> Result<()> {
        check_preimage(hash, preimage)?;
        self.write(|tx| {
            let current = read_invoice(tx, hash)?.ok_or(StoreError::UnknownInvoice(hash))?;
            let preimage = preimage.or(current.preimage);
            if !current.status.can_become(status)
                || (status == InvoiceStatus::Paid && preimage.is_none())
            {
                return Err(StoreError::InvoiceStatus {
                    hash,
                    from: current.status,
                    to: status,
                });
            }
            tx.execute(
                "UPDATE invoices SET status = ?2, preimage = ?3 WHERE payment_hash = ?1",
                params![&hash.0[..], status.as_str(), preimage.map(|p| p.0.to_vec())],
            )?;
            Ok(())
        })
    }

    /// Set (or clear) the height at which a held payment of this invoice must be failed back.
    pub fn set_claim_deadline(&mut self, hash: PaymentHash, height: Option<u32>) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE invoices SET claim_deadline = ?2 WHERE payment_hash = ?1",
                params![&hash.0[..], height],
            )?;
            if n == 0 {
                return Err(StoreError::UnknownInvoice(hash));
            }
            Ok(())
        })
    }

    // ---- signed outpoints ----

    /// Record, before signing, the one spend of each outpoint this node will ever sign; all or
    /// none. The same spend again is a no-op; a different one is
    /// [`StoreError::ConflictingSpend`]: do not sign.
    pub fn record_spends(&mut self, spends: &[(OutPoint, Spend)]) -> Result<()> {
        self.write(|tx| put_spends(tx, spends))
    }

    /// The spend recorded for an outpoint in `role`, if any.
    pub fn recorded_spend(&self, outpoint: OutPoint, role: &TxLabel) -> Result<Option<Spend>> {
        self.conn
            .query_row(
                "SELECT role, sighash, spend_txid FROM signed_spends \
                 WHERE txid = ?1 AND vout = ?2 AND role = ?3",
                params![
                    &outpoint.txid.to_byte_array()[..],
                    outpoint.vout,
                    role.as_str()
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .map(|(r, s, t)| spend_of(r, s, t))
            .transpose()
    }

    /// Record, before this node's partial signature of a cooperative close leaves, the close of
    /// `factory` (`terms`: the protocol's encoding) and its spend of the funding outpoint, in one
    /// transaction. The same close again is a no-op; another close of the same factory is
    /// [`StoreError::ConflictingSpend`]: do not sign.
    pub fn record_close(
        &mut self,
        factory: FactoryId,
        funding: OutPoint,
        spend: &Spend,
        terms: &[u8],
    ) -> Result<()> {
        self.write(|tx| {
            require_factory(tx, factory)?;
            put_spends(tx, &[(funding, spend.clone())])?;
            let existing: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT txid FROM closes WHERE factory_id = ?1",
                    [&factory.0[..]],
                    |r| r.get(0),
                )
                .optional()?;
            match existing {
                Some(txid) if txid == spend.txid.to_byte_array() => Ok(()),
                Some(txid) => Err(StoreError::ConflictingSpend {
                    outpoint: funding,
                    recorded: Box::new(Spend {
                        role: spend.role.clone(),
                        sighash: [0; 32],
                        txid: txid_of(txid, "closes.txid")?,
                    }),
                    attempted: Box::new(spend.clone()),
                }),
                None => {
                    tx.execute(
                        "INSERT INTO closes (factory_id, txid, terms) VALUES (?1, ?2, ?3)",
                        params![&factory.0[..], &spend.txid.to_byte_array()[..], terms],
                    )?;
                    Ok(())
                }
            }
        })
    }

    /// The cooperative close this node signed of `factory`, if any: its txid and its terms.
    pub fn recorded_close(&self, factory: FactoryId) -> Result<Option<(Txid, Vec<u8>)>> {
        self.conn
            .query_row(
                "SELECT txid, terms FROM closes WHERE factory_id = ?1",
                [&factory.0[..]],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?
            .map(|(t, terms)| Ok((txid_of(t, "closes.txid")?, terms)))
            .transpose()
    }

    /// Every spend of `outpoint` recorded, in every role.
    pub fn recorded_spends(&self, outpoint: OutPoint) -> Result<Vec<Spend>> {
        let mut stmt = self.conn.prepare(
            "SELECT role, sighash, spend_txid FROM signed_spends \
             WHERE txid = ?1 AND vout = ?2 ORDER BY role",
        )?;
        let rows = stmt.query_map(
            params![&outpoint.txid.to_byte_array()[..], outpoint.vout],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        collect(rows, |(r, s, t)| spend_of(r, s, t))
    }
}

/// Writes a channel's state at `commitment` (never below the stored one) and the secret the
/// other side revealed with it.
fn put_channel(
    tx: &Transaction<'_>,
    channel: ChannelId,
    state: &[u8],
    commitment: CommitmentNumber,
    received: Option<ReceivedSecret>,
) -> Result<()> {
    let stored: Option<i64> = tx
        .query_row(
            "SELECT commitment_number FROM channels WHERE channel_id = ?1",
            [&channel.0[..]],
            |r| r.get(0),
        )
        .optional()?;
    let stored = commitment_of(
        stored.ok_or(StoreError::UnknownChannel(channel))?,
        "channels.commitment_number",
    )?;
    if commitment < stored {
        return Err(StoreError::StaleCommitment {
            channel,
            stored,
            given: commitment,
        });
    }
    tx.execute(
        "UPDATE channels SET state = ?2, commitment_number = ?3 WHERE channel_id = ?1",
        params![
            &channel.0[..],
            state,
            i64_of(commitment.get(), "commitment number")?
        ],
    )?;
    if let Some(secret) = received {
        put_secret(tx, channel, &secret)?;
    }
    Ok(())
}

fn check_preimage(hash: PaymentHash, preimage: Option<Preimage>) -> Result<()> {
    match preimage {
        Some(p) if p.payment_hash() != hash => Err(StoreError::PreimageMismatch(hash)),
        _ => Ok(()),
    }
}

fn read_invoice(conn: &Connection, hash: PaymentHash) -> Result<Option<Invoice>> {
    conn.query_row(
        &format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE payment_hash = ?1"),
        [&hash.0[..]],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        },
    )
    .optional()?
    .map(invoice_of)
    .transpose()
}

fn put_secret(tx: &Transaction<'_>, channel: ChannelId, s: &ReceivedSecret) -> Result<()> {
    let n = i64_of(s.commitment.get(), "commitment number")?;
    let existing: Option<Vec<u8>> = tx
        .query_row(
            "SELECT secret FROM received_secrets WHERE channel_id = ?1 AND commitment_number = ?2",
            params![&channel.0[..], n],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        Some(old) if old == s.secret => Ok(()),
        Some(_) => Err(StoreError::SecretConflict {
            channel,
            commitment: s.commitment,
        }),
        None => {
            tx.execute(
                "INSERT INTO received_secrets (channel_id, commitment_number, secret) \
                 VALUES (?1, ?2, ?3)",
                params![&channel.0[..], n, &s.secret[..]],
            )?;
            Ok(())
        }
    }
}

fn read_node(conn: &Connection) -> Result<Option<NodeMeta>> {
    let row: Option<(String, String, Vec<u8>)> = conn
        .query_row(
            "SELECT role, network, node_id FROM node WHERE singleton = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((role, network, node_id)) = row else {
        return Ok(None);
    };
    Ok(Some(NodeMeta {
        role: Role::parse(&role)?,
        network: Network::from_core_arg(&network)
            .map_err(|e| StoreError::corrupt("node.network", e.to_string()))?,
        node_id: PublicKey::from_slice(&node_id)
            .map_err(|e| StoreError::corrupt("node.node_id", e.to_string()))?,
    }))
}

/// Settings every connection needs, each checked by reading it back.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Setting {
            pragma: "journal_mode",
            got: mode,
            expected: "wal",
        });
    }
    for (pragma, value, expected) in [
        ("synchronous", "FULL", 2i64),
        ("foreign_keys", "ON", 1),
        ("secure_delete", "ON", 1),
        ("trusted_schema", "OFF", 0),
    ] {
        conn.pragma_update(None, pragma, value)?;
        let got: i64 = conn.pragma_query_value(None, pragma, |r| r.get(0))?;
        if got != expected {
            return Err(StoreError::Setting {
                pragma,
                got: got.to_string(),
                expected: value,
            });
        }
    }
    Ok(())
}

const ORDER_COLUMNS: &str = "payment_hash, factory_id, client, amount_sat, fee_sat, status, sale";

type OrderRow = (Vec<u8>, Vec<u8>, i64, i64, i64, String, Option<i64>);

fn order_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn order_of(row: OrderRow) -> Result<LiquidityOrder> {
    let (hash, factory, client, amount, fee, status, sale) = row;
    let bytes32 = |v: Vec<u8>, what: &'static str| {
        <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StoreError::corrupt(what, "not 32 bytes"))
    };
    let u32_of = |v: i64, what: &'static str| {
        u32::try_from(v).map_err(|_| StoreError::corrupt(what, format!("{v}")))
    };
    let u64_of = |v: i64, what: &'static str| {
        u64::try_from(v).map_err(|_| StoreError::corrupt(what, format!("{v}")))
    };
    Ok(LiquidityOrder {
        payment_hash: PaymentHash(bytes32(hash, "liquidity_orders.payment_hash")?),
        factory: FactoryId(bytes32(factory, "liquidity_orders.factory_id")?),
        client: u32_of(client, "liquidity_orders.client")?,
        amount_sat: u64_of(amount, "liquidity_orders.amount_sat")?,
        fee_sat: u64_of(fee, "liquidity_orders.fee_sat")?,
        status: OrderStatus::from_parts(
            &status,
            sale.map(|j| u32_of(j, "liquidity_orders.sale"))
                .transpose()?,
        )?,
    })
}

/// Writes a new invoice row; an existing payment hash is refused.
fn insert_invoice_row(tx: &Transaction<'_>, inv: &Invoice) -> Result<()> {
    let exists: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM invoices WHERE payment_hash = ?1",
            [&inv.payment_hash.0[..]],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Err(StoreError::InvoiceExists(inv.payment_hash));
    }
    tx.execute(
        &format!("INSERT INTO invoices ({INVOICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            &inv.payment_hash.0[..],
            inv.direction.as_str(),
            inv.preimage.map(|p| p.0.to_vec()),
            inv.amount
                .map(|a| i64_of(a.0, "amount (msat)"))
                .transpose()?,
            inv.status.as_str(),
            inv.bolt11,
            inv.claim_deadline
        ],
    )?;
    Ok(())
}
