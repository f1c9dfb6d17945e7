//! Persisting one party's view of a factory: [`FactoryState::snapshot`] writes everything the
//! state holds but the LSP's stock secrets, [`FactoryState::restore`] reads it back for the
//! factory given (the LSP adds its secrets back, re-derived from its seed, with
//! [`FactoryState::with_secrets`]).
//!
//! The encoding is LDK's serialization framework, as in [`crate::codec`] and the channel's
//! snapshot: a version byte, the factory's id and a digest of its parameters, the fields, and a
//! trailing TLV stream (empty in version 1) through which later versions may add odd (optional)
//! fields. The revocation secrets a client received are written (they arm its punishments); the
//! LSP's stock secrets are not.
//!
//! What is read is checked before it is used: every list length against what is left of the
//! input before anything is allocated, every enum tag, that the snapshot is of the factory
//! given, that the odometer and the stock versions fit the factory's tree and stocks, that
//! every node, client, stock and sale named exists, that `me` is a party of the factory and
//! that the root kickoff held spends the funding outpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::{OutPoint, Txid};
use lightning::io;
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{BigSize, Readable, Writeable, Writer};
use thiserror::Error;

use super::{Abandoned, FactoryState, Pending, Superseded};
use crate::ceremony::SignedTx;
use crate::codec::{
    read_extensions, read_list_with, read_slice_list, tag, write_list, write_no_tlvs, MAX_LIST,
    MIN_SIGNED_TX_LEN, SALE_LEN, STOCK_VERSION_LEN,
};
use crate::factory::{Factory, Signer, Slot, TxKind};
use crate::ledger::{Sale, StockVersion, Version};
use crate::revocation::StockRevocations;
use crate::types::{FactoryId, NodeId, StateIndex};

/// The version of the encoding [`FactoryState::snapshot`] writes.
pub const STATE_SNAPSHOT_VERSION: u8 = 1;

/// Smallest encoding of a version: three empty lists (odometer digits, sales, stocks).
const MIN_VERSION_LEN: usize = 3;
/// Smallest encoding of a superseded stock version: stock, version, hash, its factory version
/// and an empty list of punishments.
const MIN_SUPERSEDED_LEN: usize = 4 + 4 + 32 + MIN_VERSION_LEN + 1;
/// Smallest encoding of an abandoned update: its version, node and an empty list.
const MIN_ABANDONED_LEN: usize = MIN_VERSION_LEN + 4 + 1;

/// A factory state snapshot refused by [`FactoryState::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateSnapshotError {
    /// The bytes do not decode as a snapshot.
    #[error("the factory state snapshot does not decode: {0}")]
    Decode(DecodeError),
    /// A version this code does not read.
    #[error("unknown factory state snapshot version {0}")]
    UnknownVersion(u8),
    /// The snapshot is of another factory (another id, or other parameters).
    #[error("the snapshot is of another factory")]
    WrongFactory,
    /// The snapshot decodes but does not describe a state of this factory.
    #[error("inconsistent factory state snapshot: {0}")]
    Inconsistent(&'static str),
}

impl From<DecodeError> for StateSnapshotError {
    fn from(e: DecodeError) -> Self {
        StateSnapshotError::Decode(e)
    }
}

use StateSnapshotError::Inconsistent;

/// SHA-256 of the factory's encoded parameters: a snapshot is restored with exactly these.
fn params_digest(factory: &Factory) -> [u8; 32] {
    let mut bytes = Vec::new();
    // Writing into a vector fails only on a key with no encoding: what was written is still
    // this factory's, and the same on both sides.
    let _ = factory.params().write(&mut bytes);
    sha256::Hash::hash(&bytes).to_byte_array()
}

/// A version, written with one odometer digit per node of the factory's tree.
struct VersionOf<'a>(&'a Version, usize);

impl Writeable for VersionOf<'_> {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        let VersionOf(v, nodes) = *self;
        BigSize(nodes as u64).write(w)?;
        for n in 0..nodes as u32 {
            match v.odo.state(NodeId(n)) {
                None => 0u8.write(w)?,
                Some(s) => (1u8, s.0).write(w)?,
            }
        }
        write_list(w, &v.sales)?;
        write_list(w, &v.stocks)
    }
}

/// Option tags.
fn write_option<W: Writer, T>(
    w: &mut W,
    value: &Option<T>,
    write: impl FnOnce(&mut W, &T) -> Result<(), io::Error>,
) -> Result<(), io::Error> {
    match value {
        None => 0u8.write(w),
        Some(v) => {
            1u8.write(w)?;
            write(w, v)
        }
    }
}

/// Writes the version-1 snapshot of a factory state.
struct Snapshot<'a>(&'a FactoryState);

impl Writeable for Snapshot<'_> {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        let s = self.0;
        let nodes = s.factory.tree().nodes().len();
        STATE_SNAPSHOT_VERSION.write(w)?;
        s.factory.params().id.write(w)?;
        params_digest(&s.factory).write(w)?;
        s.funding.write(w)?;
        s.me.write(w)?;
        VersionOf(&s.version, nodes).write(w)?;
        BigSize(s.latest.len() as u64).write(w)?;
        s.latest.values().try_for_each(|t| t.write(w))?;
        write_option(w, &s.pending, |w, p| {
            VersionOf(&p.next, nodes).write(w)?;
            p.node.write(w)?;
            p.advance.write(w)?;
            write_option(w, &p.below, |w, b| write_list(w, b))?;
            write_list(w, &p.resigned)?;
            write_option(w, &p.spends, |w, o| o.write(w))
        })?;
        s.revocations.write(w)?;
        BigSize(s.superseded.len() as u64).write(w)?;
        for sup in &s.superseded {
            sup.stock.write(w)?;
            sup.version.write(w)?;
            sup.hash.to_byte_array().write(w)?;
            VersionOf(&sup.at, nodes).write(w)?;
            write_list(w, &sup.punishments)?;
        }
        let owed: Vec<(u32, u32)> = s.owed.iter().copied().collect();
        write_list(w, &owed)?;
        write_list(w, &s.last_superseded)?;
        let spent: Vec<OutPoint> = s.spent.iter().copied().collect();
        write_list(w, &spent)?;
        s.open.write(w)?;
        let used: Vec<(Txid, u16)> = s.used.iter().map(|(t, i)| (*t, i.0)).collect();
        write_list(w, &used)?;
        BigSize(s.abandoned.len() as u64).write(w)?;
        for a in &s.abandoned {
            VersionOf(&a.version, nodes).write(w)?;
            a.node.write(w)?;
            write_list(w, &a.below)?;
        }
        write_no_tlvs(w)
    }
}

/// The factory's odometer at the digits read (one per node, `None` for static nodes), moved
/// there parents first (a tick resets the layers beneath it).
fn odometer(
    factory: &Factory,
    digits: &[Option<StateIndex>],
) -> Result<crate::odometer::Odometer, StateSnapshotError> {
    let tree = factory.tree();
    if digits.len() != tree.nodes().len() {
        return Err(Inconsistent(
            "the odometer does not have one digit per node of the tree",
        ));
    }
    let mut odo = factory.initial_odometer();
    let mut stack = vec![tree.root().id];
    while let Some(n) = stack.pop() {
        if let Some(to) = digits[n.0 as usize].filter(|s| s.0 > 0) {
            odo.tick_to(tree, n, to)
                .map_err(|_| Inconsistent("a state index beyond its layer"))?;
        }
        stack.extend(tree.node(n).children.iter().copied());
    }
    if (0..digits.len()).any(|i| odo.state(NodeId(i as u32)) != digits[i]) {
        return Err(Inconsistent(
            "the odometer's layers are not those of the factory's tree",
        ));
    }
    Ok(odo)
}

/// Reads a version of `factory`'s state and checks that it fits the factory.
fn read_version(r: &mut &[u8], factory: &Factory) -> Result<Version, StateSnapshotError> {
    let digits = read_list_with(r, 1, MAX_LIST, |r| -> Result<_, DecodeError> {
        Ok(match tag(r)? {
            0 => None,
            1 => Some(StateIndex(Readable::read(r)?)),
            _ => return Err(DecodeError::InvalidValue),
        })
    })?;
    let sales: Vec<Sale> = read_slice_list(r, SALE_LEN, MAX_LIST)?;
    let stocks: Vec<StockVersion> = read_slice_list(r, STOCK_VERSION_LEN, MAX_LIST)?;
    let initial = &factory.params().stock_hashes;
    if stocks.len() != factory.stocks().len() || initial.len() != stocks.len() {
        return Err(Inconsistent(
            "not one version per stock output of the factory",
        ));
    }
    if stocks
        .iter()
        .zip(initial)
        .any(|(sv, h)| sv.version == 0 && sv.hash != *h)
    {
        return Err(Inconsistent(
            "a stock's first version does not have the factory's hash",
        ));
    }
    let clients = factory.params().clients.len();
    if sales
        .iter()
        .any(|s| s.stock as usize >= stocks.len() || s.buyer.0 as usize >= clients)
    {
        return Err(Inconsistent(
            "a sale of an unknown stock or to an unknown client",
        ));
    }
    Ok(Version {
        odo: odometer(factory, &digits)?,
        sales,
        stocks,
    })
}

/// Whether every node, client, stock and sale `slot` names exists (sales: in `v`).
fn slot_exists(factory: &Factory, slot: Slot, v: &Version) -> bool {
    let node = |n: NodeId| (n.0 as usize) < factory.tree().nodes().len();
    match slot {
        Slot::NodeInput(n) | Slot::KickoffOut(n) => node(n),
        Slot::Channel(c) | Slot::FeeCoin(c) => (c.0 as usize) < factory.params().clients.len(),
        Slot::Stock(s) => (s as usize) < factory.stocks().len(),
        Slot::Sold(j) | Slot::Change(j) => (j as usize) < v.sales.len(),
        Slot::TimeoutPart { top, node: n, .. } => node(top) && node(n),
    }
}

/// Whether everything `kind` names exists (sales: in `v`).
fn kind_exists(factory: &Factory, kind: TxKind, v: &Version) -> bool {
    match kind {
        TxKind::Kickoff(n) | TxKind::State(n) => (n.0 as usize) < factory.tree().nodes().len(),
        TxKind::Sale(j) => (j as usize) < v.sales.len(),
        TxKind::Timeout(s) | TxKind::Punish(s) => slot_exists(factory, s, v),
    }
}

/// Reads a list of signed transactions of version `v`.
fn read_signed(
    r: &mut &[u8],
    factory: &Factory,
    v: &Version,
) -> Result<Vec<SignedTx>, StateSnapshotError> {
    let txs: Vec<SignedTx> = read_slice_list(r, MIN_SIGNED_TX_LEN, MAX_LIST)?;
    if txs.iter().any(|t| !kind_exists(factory, t.kind, v)) {
        return Err(Inconsistent(
            "a signed transaction of a node, client, stock or sale the factory does not have",
        ));
    }
    Ok(txs)
}

/// Reads a node id of the factory's tree.
fn read_node(r: &mut &[u8], factory: &Factory) -> Result<NodeId, StateSnapshotError> {
    let node = NodeId::read(r)?;
    if node.0 as usize >= factory.tree().nodes().len() {
        return Err(Inconsistent("a node the factory's tree does not have"));
    }
    Ok(node)
}

/// Reads an option written by [`write_option`].
fn read_option<'a, T>(
    r: &mut &'a [u8],
    read: impl FnOnce(&mut &'a [u8]) -> Result<T, StateSnapshotError>,
) -> Result<Option<T>, StateSnapshotError> {
    match tag(r)? {
        0 => Ok(None),
        1 => read(r).map(Some),
        _ => Err(DecodeError::InvalidValue.into()),
    }
}

/// A set from a list written in order: items must strictly increase (a set has one encoding,
/// and no item is silently dropped).
fn into_set<T: Ord>(items: Vec<T>) -> Result<BTreeSet<T>, StateSnapshotError> {
    if items.windows(2).any(|p| p[0] >= p[1]) {
        return Err(DecodeError::InvalidValue.into());
    }
    Ok(items.into_iter().collect())
}

/// A map from a list written in key order: keys must strictly increase.
fn into_map<K: Ord + Copy, V>(items: Vec<(K, V)>) -> Result<BTreeMap<K, V>, StateSnapshotError> {
    if items.windows(2).any(|p| p[0].0 >= p[1].0) {
        return Err(DecodeError::InvalidValue.into());
    }
    Ok(items.into_iter().collect())
}

/// Everything of a factory state as written: all but the factory and the LSP's secrets.
struct Decoded {
    funding: OutPoint,
    me: Signer,
    version: Version,
    latest: BTreeMap<TxKind, SignedTx>,
    pending: Option<Pending>,
    revocations: StockRevocations,
    superseded: Vec<Superseded>,
    owed: BTreeSet<(u32, u32)>,
    last_superseded: Vec<(u32, u32)>,
    spent: BTreeSet<OutPoint>,
    open: bool,
    used: BTreeMap<Txid, StateIndex>,
    abandoned: Vec<Abandoned>,
}

impl Decoded {
    /// Reads a snapshot after its version byte, to the end of the input, for `factory`.
    fn read(r: &mut &[u8], factory: &Factory) -> Result<Self, StateSnapshotError> {
        let id = FactoryId::read(r)?;
        let digest = <[u8; 32]>::read(r)?;
        if id != factory.params().id || digest != params_digest(factory) {
            return Err(StateSnapshotError::WrongFactory);
        }
        let funding = OutPoint::read(r)?;
        let me = Signer::read(r)?;
        let version = read_version(r, factory)?;
        let latest = read_signed(r, factory, &version)?;
        let latest = into_map(latest.into_iter().map(|t| (t.kind, t)).collect())?;
        let pending = read_option(r, |r| {
            let next = read_version(r, factory)?;
            Ok(Pending {
                node: read_node(r, factory)?,
                advance: Readable::read(r)?,
                below: read_option(r, |r| read_signed(r, factory, &next))?,
                resigned: read_slice_list(r, 4, MAX_LIST)?,
                spends: read_option(r, |r| Ok(OutPoint::read(r)?))?,
                next,
            })
        })?;
        let revocations = StockRevocations::read(r)?;
        let superseded = read_list_with(r, MIN_SUPERSEDED_LEN, MAX_LIST, |r| {
            let stock = u32::read(r)?;
            let version = u32::read(r)?;
            let hash = sha256::Hash::from_byte_array(Readable::read(r)?);
            let at = read_version(r, factory)?;
            Ok::<_, StateSnapshotError>(Superseded {
                stock,
                version,
                hash,
                punishments: read_signed(r, factory, &at)?,
                at,
            })
        })?;
        let owed = into_set(read_slice_list(r, 8, MAX_LIST)?)?;
        let last_superseded = read_slice_list(r, 8, MAX_LIST)?;
        let spent = into_set(read_slice_list(r, 36, MAX_LIST)?)?;
        let open = bool::read(r)?;
        let used: Vec<(Txid, u16)> = read_slice_list(r, 34, MAX_LIST)?;
        let used = into_map(used.into_iter().map(|(t, i)| (t, StateIndex(i))).collect())?;
        let abandoned = read_list_with(r, MIN_ABANDONED_LEN, MAX_LIST, |r| {
            let version = read_version(r, factory)?;
            Ok::<_, StateSnapshotError>(Abandoned {
                node: read_node(r, factory)?,
                below: read_signed(r, factory, &version)?,
                version,
            })
        })?;
        read_extensions(r)?;
        Ok(Decoded {
            funding,
            me,
            version,
            latest,
            pending,
            revocations,
            superseded,
            owed,
            last_superseded,
            spent,
            open,
            used,
            abandoned,
        })
    }

    /// What ties the fields to each other and to the factory, beyond what reading checked.
    fn check(&self, factory: &Factory) -> Result<(), StateSnapshotError> {
        if let Signer::Client(c) = self.me {
            if c.0 as usize >= factory.params().clients.len() {
                return Err(Inconsistent("a client the factory does not have"));
            }
        }
        let root = self
            .latest
            .get(&TxKind::Kickoff(factory.tree().root().id))
            .ok_or(Inconsistent("no root kickoff"))?;
        let spends = root.tx.input.first().map(|i| i.previous_output);
        if spends != Some(self.funding) || factory.funding_output().ok() != Some(root.spent.clone())
        {
            return Err(Inconsistent(
                "the root kickoff does not spend the factory's funding output",
            ));
        }
        let stocks = factory.stocks().len();
        if let Some(p) = &self.pending {
            if p.advance && (!factory.tree().node(p.node).has_state() || p.spends.is_some()) {
                return Err(Inconsistent(
                    "an advance of a static node, or spending a PS-factory output",
                ));
            }
            if !p.advance && p.below.is_some() {
                return Err(Inconsistent("a sale signed in two stages"));
            }
            if p.resigned.iter().any(|s| *s as usize >= stocks) {
                return Err(Inconsistent("an unknown stock re-signed"));
            }
        }
        let known = |s: u32| (s as usize) < stocks;
        if !self.superseded.iter().all(|s| known(s.stock))
            || !self.owed.iter().all(|(s, _)| known(*s))
            || !self.last_superseded.iter().all(|(s, _)| known(*s))
        {
            return Err(Inconsistent("a superseded version of an unknown stock"));
        }
        Ok(())
    }
}

impl FactoryState {
    /// The state as bytes, without the LSP's stock secrets (what a daemon persists after
    /// every change).
    pub fn snapshot(&self) -> Vec<u8> {
        Snapshot(self).encode()
    }

    /// The state saved by [`FactoryState::snapshot`], for `factory` (the one it was saved
    /// with); the LSP adds its stock secrets back with [`FactoryState::with_secrets`]. Refuses,
    /// never panicking, bytes that do not decode or do not describe a state of this factory.
    pub fn restore(
        factory: Arc<Factory>,
        bytes: &[u8],
    ) -> Result<FactoryState, StateSnapshotError> {
        let mut r = bytes;
        let version = u8::read(&mut r)?;
        if version != STATE_SNAPSHOT_VERSION {
            return Err(StateSnapshotError::UnknownVersion(version));
        }
        let d = Decoded::read(&mut r, &factory)?;
        d.check(&factory)?;
        Ok(FactoryState {
            factory,
            funding: d.funding,
            me: d.me,
            lsp_secrets: None,
            version: d.version,
            latest: d.latest,
            pending: d.pending,
            revocations: d.revocations,
            superseded: d.superseded,
            owed: d.owed,
            last_superseded: d.last_superseded,
            spent: d.spent,
            open: d.open,
            used: d.used,
            abandoned: d.abandoned,
        })
    }
}
