//! The SQLite schema as a list of migration steps. The database's `PRAGMA user_version` is the
//! number of steps applied; each step runs in its own transaction together with the version
//! bump, so a failed step leaves the database at the version before it. Steps are never edited
//! once released: a change is a new step.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::StoreError;

/// `PRAGMA application_id` of our databases ("SSCR").
pub const APPLICATION_ID: i32 = 0x5353_4352;

/// One schema change.
pub struct Migration {
    /// What it is for.
    pub description: &'static str,
    /// The SQL, run as one batch.
    pub sql: &'static str,
}

/// Version 1: the first schema.
const V1: &str = r#"
CREATE TABLE node (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    role TEXT NOT NULL CHECK (role IN ('lsp', 'client')),
    network TEXT NOT NULL CHECK (network IN ('main', 'test', 'testnet4', 'signet', 'regtest')),
    node_id BLOB NOT NULL CHECK (length(node_id) = 33)
) STRICT;

-- The next unused key index of each key family (keys::KeyFamily).
CREATE TABLE key_counters (
    family TEXT PRIMARY KEY CHECK (family IN ('factory', 'channel')),
    next_index INTEGER NOT NULL CHECK (next_index BETWEEN 0 AND 2147483648)
) STRICT;

CREATE TABLE factories (
    factory_id BLOB PRIMARY KEY CHECK (length(factory_id) = 32),
    params BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('forming', 'signed', 'live', 'dying', 'closing', 'closed', 'aborted')),
    created_height INTEGER NOT NULL CHECK (created_height BETWEEN 0 AND 4294967295),
    timeout_height INTEGER NOT NULL CHECK (timeout_height BETWEEN 0 AND 4294967295),
    funding_txid BLOB CHECK (funding_txid IS NULL OR length(funding_txid) = 32),
    funding_vout INTEGER CHECK (funding_vout IS NULL OR funding_vout BETWEEN 0 AND 4294967295),
    key_index INTEGER NOT NULL CHECK (key_index BETWEEN 0 AND 2147483647),
    CHECK ((funding_txid IS NULL) = (funding_vout IS NULL))
) STRICT;

-- Fully signed transactions of a factory (tree, timeouts, ...).
CREATE TABLE factory_txs (
    factory_id BLOB NOT NULL REFERENCES factories (factory_id),
    txid BLOB NOT NULL CHECK (length(txid) = 32),
    label TEXT NOT NULL CHECK (length(label) BETWEEN 1 AND 64),
    raw_tx BLOB NOT NULL,
    PRIMARY KEY (factory_id, txid)
) STRICT;
CREATE INDEX factory_txs_by_label ON factory_txs (factory_id, label);

-- Append-only history of each party's state in a factory (party: 0 = LSP, n + 1 = client n).
CREATE TABLE factory_states (
    factory_id BLOB NOT NULL REFERENCES factories (factory_id),
    party INTEGER NOT NULL CHECK (party BETWEEN 0 AND 4294967296),
    version INTEGER NOT NULL CHECK (version >= 0),
    state BLOB NOT NULL,
    PRIMARY KEY (factory_id, party, version)
) STRICT;
CREATE TRIGGER factory_states_no_update BEFORE UPDATE ON factory_states
BEGIN SELECT RAISE(ABORT, 'factory_states is append-only'); END;
CREATE TRIGGER factory_states_no_delete BEFORE DELETE ON factory_states
BEGIN SELECT RAISE(ABORT, 'factory_states is append-only'); END;

CREATE TABLE channels (
    channel_id BLOB PRIMARY KEY CHECK (length(channel_id) = 32),
    factory_id BLOB NOT NULL REFERENCES factories (factory_id),
    key_index INTEGER NOT NULL CHECK (key_index BETWEEN 0 AND 2147483647),
    state BLOB NOT NULL,
    commitment_number INTEGER NOT NULL CHECK (commitment_number BETWEEN 0 AND 281474976710655)
) STRICT;
CREATE INDEX channels_by_factory ON channels (factory_id);

-- Per-commitment secrets the other side revealed, by the commitment they revoke.
CREATE TABLE received_secrets (
    channel_id BLOB NOT NULL REFERENCES channels (channel_id),
    commitment_number INTEGER NOT NULL CHECK (commitment_number BETWEEN 0 AND 281474976710655),
    secret BLOB NOT NULL CHECK (length(secret) = 32),
    PRIMARY KEY (channel_id, commitment_number)
) STRICT;

CREATE TABLE punishments (
    txid BLOB PRIMARY KEY CHECK (length(txid) = 32),
    breach_txid BLOB NOT NULL CHECK (length(breach_txid) = 32),
    factory_id BLOB REFERENCES factories (factory_id),
    channel_id BLOB REFERENCES channels (channel_id),
    raw_tx BLOB NOT NULL,
    CHECK (factory_id IS NOT NULL OR channel_id IS NOT NULL)
) STRICT;
CREATE INDEX punishments_by_breach ON punishments (breach_txid);

-- Outpoints to watch, and what to do when they are spent (records::WatchAction encoding).
CREATE TABLE watch (
    txid BLOB NOT NULL CHECK (length(txid) = 32),
    vout INTEGER NOT NULL CHECK (vout BETWEEN 0 AND 4294967295),
    factory_id BLOB REFERENCES factories (factory_id),
    action BLOB NOT NULL,
    PRIMARY KEY (txid, vout)
) STRICT;

-- Signing ceremonies under way. Never a secret nonce: they live in memory only.
CREATE TABLE ceremonies (
    factory_id BLOB PRIMARY KEY REFERENCES factories (factory_id),
    round INTEGER NOT NULL CHECK (round BETWEEN 0 AND 4294967295)
) STRICT;
CREATE TABLE ceremony_participants (
    factory_id BLOB NOT NULL REFERENCES ceremonies (factory_id) ON DELETE CASCADE,
    party INTEGER NOT NULL CHECK (party BETWEEN 0 AND 4294967296),
    PRIMARY KEY (factory_id, party)
) STRICT;

CREATE TABLE invoices (
    payment_hash BLOB PRIMARY KEY CHECK (length(payment_hash) = 32),
    direction TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    preimage BLOB CHECK (preimage IS NULL OR length(preimage) = 32),
    amount_msat INTEGER CHECK (amount_msat IS NULL OR amount_msat >= 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'held', 'paid', 'cancelled')),
    bolt11 TEXT NOT NULL,
    CHECK (status <> 'paid' OR preimage IS NOT NULL)
) STRICT;

-- Never sign two different spends of one outpoint: the spend is recorded before signing.
CREATE TABLE signed_outpoints (
    txid BLOB NOT NULL CHECK (length(txid) = 32),
    vout INTEGER NOT NULL CHECK (vout BETWEEN 0 AND 4294967295),
    sighash BLOB NOT NULL CHECK (length(sighash) = 32),
    spend_txid BLOB NOT NULL CHECK (length(spend_txid) = 32),
    PRIMARY KEY (txid, vout)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER signed_outpoints_no_update BEFORE UPDATE ON signed_outpoints
BEGIN SELECT RAISE(ABORT, 'signed_outpoints is append-only'); END;
CREATE TRIGGER signed_outpoints_no_delete BEFORE DELETE ON signed_outpoints
BEGIN SELECT RAISE(ABORT, 'signed_outpoints is append-only'); END;
"#;

/// Version 2: the height at which a held payment must be failed back (LDK fails a claimable
/// payment at its `claim_deadline`; after a restart the LSP must still know it), and the indexes
/// the daemons' periodic scans need (open invoices by status, watched outpoints by factory, to
/// drop a closed factory's watches).
const V2: &str = r#"
ALTER TABLE invoices ADD COLUMN claim_deadline INTEGER
    CHECK (claim_deadline IS NULL OR claim_deadline BETWEEN 0 AND 4294967295);
CREATE INDEX invoices_by_status ON invoices (status);
CREATE INDEX watch_by_factory ON watch (factory_id);
"#;

/// Version 3: a spend is unique per outpoint and role, not per outpoint (a factory signs a node's
/// kickoff and the timeout of the same output on purpose). Spends recorded before get the role
/// `-`.
const V3: &str = r#"
DROP TRIGGER signed_outpoints_no_update;
DROP TRIGGER signed_outpoints_no_delete;
CREATE TABLE signed_spends (
    txid BLOB NOT NULL CHECK (length(txid) = 32),
    vout INTEGER NOT NULL CHECK (vout BETWEEN 0 AND 4294967295),
    role TEXT NOT NULL CHECK (length(role) BETWEEN 1 AND 64),
    sighash BLOB NOT NULL CHECK (length(sighash) = 32),
    spend_txid BLOB NOT NULL CHECK (length(spend_txid) = 32),
    PRIMARY KEY (txid, vout, role)
) STRICT, WITHOUT ROWID;
INSERT INTO signed_spends (txid, vout, role, sighash, spend_txid)
    SELECT txid, vout, '-', sighash, spend_txid FROM signed_outpoints;
DROP TABLE signed_outpoints;
CREATE TRIGGER signed_spends_no_update BEFORE UPDATE ON signed_spends
BEGIN SELECT RAISE(ABORT, 'signed_spends is append-only'); END;
CREATE TRIGGER signed_spends_no_delete BEFORE DELETE ON signed_spends
BEGIN SELECT RAISE(ABORT, 'signed_spends is append-only'); END;
"#;

/// Version 4: the LSP's routes: for an invoice it issued on behalf of one of its clients, the
/// client's node id (the payment goes on into that client's leaf channel).
const V4: &str = r#"
CREATE TABLE routes (
    payment_hash BLOB PRIMARY KEY REFERENCES invoices (payment_hash),
    payee BLOB NOT NULL CHECK (length(payee) = 33)
) STRICT, WITHOUT ROWID;
"#;

/// Version 5: the LSP's liquidity orders: a client's request to buy inbound liquidity, its fee
/// invoice (the LSP holds the fee HTLC until the sale completes, and fails it back otherwise).
const V5: &str = r#"
CREATE TABLE liquidity_orders (
    payment_hash BLOB PRIMARY KEY REFERENCES invoices (payment_hash),
    factory_id BLOB NOT NULL REFERENCES factories (factory_id),
    client INTEGER NOT NULL CHECK (client BETWEEN 0 AND 4294967295),
    amount_sat INTEGER NOT NULL CHECK (amount_sat > 0),
    fee_sat INTEGER NOT NULL CHECK (fee_sat >= 0),
    status TEXT NOT NULL CHECK (status IN ('offered', 'paid', 'selling', 'sold', 'refunded')),
    sale INTEGER CHECK (sale IS NULL OR sale BETWEEN 0 AND 4294967295)
) STRICT, WITHOUT ROWID;
CREATE INDEX liquidity_orders_by_status ON liquidity_orders (status);
"#;

/// Version 6: the states of a channel's revoked commitments of the other side (what justice
/// against one of them needs), appended once each instead of rewritten with every step.
const V6: &str = r#"
CREATE TABLE revoked_states (
    channel_id BLOB NOT NULL REFERENCES channels (channel_id),
    commitment_number INTEGER NOT NULL CHECK (commitment_number >= 0),
    state BLOB NOT NULL,
    PRIMARY KEY (channel_id, commitment_number)
) STRICT, WITHOUT ROWID;
"#;

/// Version 7: the cooperative close each party signed of a factory (one at most, written before
/// its partial signature leaves, never changed), with its terms in the protocol's encoding.
const V7: &str = r#"
CREATE TABLE closes (
    factory_id BLOB PRIMARY KEY REFERENCES factories (factory_id),
    txid BLOB NOT NULL CHECK (length(txid) = 32),
    terms BLOB NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TRIGGER closes_no_update BEFORE UPDATE ON closes
BEGIN SELECT RAISE(ABORT, 'closes is append-only'); END;
CREATE TRIGGER closes_no_delete BEFORE DELETE ON closes
BEGIN SELECT RAISE(ABORT, 'closes is append-only'); END;
"#;

/// Every migration, in order: the schema version is the number applied.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        description: "first schema",
        sql: V1,
    },
    Migration {
        description: "invoice claim deadline; indexes for scans",
        sql: V2,
    },
    Migration {
        description: "spends unique per outpoint and role",
        sql: V3,
    },
    Migration {
        description: "routes of the invoices an LSP issues for its clients",
        sql: V4,
    },
    Migration {
        description: "the LSP's liquidity orders",
        sql: V5,
    },
    Migration {
        description: "revoked commitment states appended per channel",
        sql: V6,
    },
    Migration {
        description: "the cooperative close signed of each factory",
        sql: V7,
    },
];

/// The schema version this program writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// The database's schema version.
pub fn version(conn: &Connection) -> Result<u32, StoreError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    u32::try_from(v).map_err(|_| StoreError::corrupt("user_version", format!("{v}")))
}

/// Bring the database from its version to `target` with `steps`, one transaction per step.
pub fn migrate(conn: &mut Connection, steps: &[Migration], target: u32) -> Result<(), StoreError> {
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let found = version(conn)?;
    if found > steps.len() as u32 {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: steps.len() as u32,
        });
    }
    if app_id != APPLICATION_ID && !(app_id == 0 && found == 0) {
        return Err(StoreError::NotOurDatabase(app_id));
    }
    if found == 0 {
        // A fresh file must be empty: never build our schema into someone else's database.
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if tables != 0 {
            return Err(StoreError::NotOurDatabase(app_id));
        }
    }
    for (i, step) in steps
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(found as usize)
    {
        let next = i as u32 + 1;
        let fail = |source| StoreError::Migration {
            version: next,
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        tx.execute_batch(step.sql).map_err(fail)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(fail)?;
        tx.pragma_update(None, "user_version", next).map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}
