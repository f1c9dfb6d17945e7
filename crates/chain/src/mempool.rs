//! A mempool that applies Bitcoin Core 28+ relay policy in front of the consensus engine.
//!
//! Rules: inputs exist and are unspent, scripts valid (the kernel's interpreter), finality and BIP68
//! relative locks, no conflicts (no replacement), minimum relay fee, TRUC (v3) topology and sizes,
//! P2A anchors and ephemeral dust, and one-parent-one-child package acceptance.

use std::collections::{BTreeSet, HashMap, HashSet};

use bitcoin::{Amount, FeeRate, OutPoint, Transaction, TxOut, Txid, Weight};

use crate::consensus::{
    check_final, check_sequence_locks, check_transaction, sum_amounts, verify_scripts, SpentContext,
};
use crate::error::{sat_per_kvb, RejectReason};
use crate::index::ChainIndex;
use crate::policy::{
    check_inputs_standard, check_standard, dust_outputs, PolicyConfig, COINBASE_MATURITY,
    DEFAULT_ANCESTOR_LIMIT, TRUC_CHILD_MAX_VSIZE, TRUC_MAX_VSIZE, TRUC_VERSION,
};

/// A transaction waiting in the mempool.
#[derive(Debug, Clone)]
pub struct MempoolEntry {
    /// The transaction.
    pub tx: Transaction,
    /// Its fee.
    pub fee: Amount,
    /// Its virtual size.
    pub vsize: u64,
    /// Order of arrival (parents always arrive before children).
    seq: u64,
}

impl MempoolEntry {
    /// The entry's own fee rate.
    pub fn fee_rate(&self) -> FeeRate {
        fee_rate(self.fee, self.vsize)
    }
}

/// Outcome of a successful package submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageAcceptance {
    /// The parent's txid.
    pub parent: Txid,
    /// The child's txid.
    pub child: Txid,
    /// Fee of parent plus child.
    pub fee: Amount,
    /// Virtual size of parent plus child.
    pub vsize: u64,
}

/// A transaction that passed every check but the fee check.
#[derive(Debug, Clone)]
struct Checked {
    tx: Transaction,
    txid: Txid,
    fee: Amount,
    vsize: u64,
    /// Mempool (or in-package) parents.
    parents: BTreeSet<Txid>,
    /// The outputs it spends, for the script checks.
    spent: Vec<TxOut>,
}

/// The mempool.
#[derive(Debug, Default, Clone)]
pub(crate) struct Mempool {
    config: PolicyConfig,
    entries: HashMap<Txid, MempoolEntry>,
    /// Which mempool transaction spends each outpoint.
    spent_by: HashMap<OutPoint, Txid>,
    next_seq: u64,
}

pub(crate) fn fee_rate(fee: Amount, vsize: u64) -> FeeRate {
    // sat/kwu = fee * 1000 / (vsize * 4); rounded down like Core's CFeeRate.
    FeeRate::from_sat_per_kwu(fee.to_sat() * 250 / vsize.max(1))
}

impl Mempool {
    pub(crate) fn new(config: PolicyConfig) -> Self {
        Mempool {
            config,
            ..Default::default()
        }
    }

    pub(crate) fn config(&self) -> &PolicyConfig {
        &self.config
    }

    pub(crate) fn get(&self, txid: &Txid) -> Option<&MempoolEntry> {
        self.entries.get(txid)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Mempool transaction spending `outpoint`.
    pub(crate) fn spender_of(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spent_by.get(outpoint).copied()
    }

    /// All entries in arrival order.
    pub(crate) fn entries(&self) -> Vec<&MempoolEntry> {
        let mut v: Vec<&MempoolEntry> = self.entries.values().collect();
        v.sort_by_key(|e| e.seq);
        v
    }

    /// Accept one transaction alone.
    pub(crate) fn accept(
        &mut self,
        tx: &Transaction,
        chain: &ChainIndex,
    ) -> Result<Txid, RejectReason> {
        let checked = self.check(tx, chain, None)?;
        self.check_min_fee(checked.fee, checked.vsize)?;
        self.check_ephemeral_spends(&checked, None, true)?;
        // Scripts last, as Core's ATMP (PreChecks, then PolicyScriptChecks).
        verify_scripts(&checked.tx, &checked.spent)?;
        let txid = checked.txid;
        self.insert(checked);
        Ok(txid)
    }

    /// Accept a parent and a child that spends it, judging fees by the package fee rate.
    pub(crate) fn accept_package(
        &mut self,
        parent: &Transaction,
        child: &Transaction,
        chain: &ChainIndex,
    ) -> Result<PackageAcceptance, RejectReason> {
        self.accept_package_attributed(parent, child, chain)
            .map_err(|(_, reason)| reason)
    }

    /// [`Mempool::accept_package`], saying which transaction a rejection is about.
    pub(crate) fn accept_package_attributed(
        &mut self,
        parent: &Transaction,
        child: &Transaction,
        chain: &ChainIndex,
    ) -> Result<PackageAcceptance, (PackageMember, RejectReason)> {
        use PackageMember::{Child, Package, Parent};
        let parent_txid = parent.compute_txid();
        if !child
            .input
            .iter()
            .any(|i| i.previous_output.txid == parent_txid)
        {
            return Err((
                Package,
                RejectReason::Package(format!(
                    "child {} does not spend parent {parent_txid}",
                    child.compute_txid()
                )),
            ));
        }
        // A parent already known is deduplicated: only the child is new.
        if self.entries.contains_key(&parent_txid) || chain.confirmed_height(&parent_txid).is_some()
        {
            let child_txid = self.accept(child, chain).map_err(|r| (Child, r))?;
            let p = self.entries.get(&parent_txid);
            let c = &self.entries[&child_txid];
            return Ok(PackageAcceptance {
                parent: parent_txid,
                child: child_txid,
                fee: p.map_or(Amount::ZERO, |p| p.fee) + c.fee,
                vsize: p.map_or(0, |p| p.vsize) + c.vsize,
            });
        }
        let p = self.check(parent, chain, None).map_err(|r| (Parent, r))?;
        let c = self.check(child, chain, Some(&p)).map_err(|r| (Child, r))?;
        self.check_ephemeral_spends(&p, None, false)
            .map_err(|r| (Parent, r))?;
        self.check_ephemeral_spends(&c, Some(&p), false)
            .map_err(|r| (Child, r))?;
        let parent_ok_alone = self.check_min_fee(p.fee, p.vsize).is_ok();
        let fee = p.fee + c.fee;
        let vsize = p.vsize + c.vsize;
        if parent_ok_alone && dust_outputs(&p.tx, self.config.dust_relay_fee_rate).is_empty() {
            // Core accepts such a parent on its own and then judges the child alone.
            self.check_min_fee(c.fee, c.vsize).map_err(|r| (Child, r))?;
        } else {
            self.check_min_fee(fee, vsize).map_err(|r| (Package, r))?;
        }
        verify_scripts(&p.tx, &p.spent).map_err(|r| (Parent, r))?;
        verify_scripts(&c.tx, &c.spent).map_err(|r| (Child, r))?;
        let acceptance = PackageAcceptance {
            parent: p.txid,
            child: c.txid,
            fee,
            vsize,
        };
        self.insert(p);
        self.insert(c);
        Ok(acceptance)
    }

    fn check_min_fee(&self, fee: Amount, vsize: u64) -> Result<(), RejectReason> {
        let min = self.config.min_relay_fee_rate;
        let required = Amount::from_sat(sat_per_kvb(min) * vsize / 1000);
        if fee < required || (fee == Amount::ZERO && min > FeeRate::ZERO) {
            return Err(RejectReason::FeeTooLow {
                fee,
                vsize,
                rate: sat_per_kvb(fee_rate(fee, vsize)),
                min: sat_per_kvb(min),
            });
        }
        Ok(())
    }

    /// Every check except the fee rate and the scripts (Core's PreChecks): consensus against the
    /// chain, standardness, TRUC.
    fn check(
        &self,
        tx: &Transaction,
        chain: &ChainIndex,
        package_parent: Option<&Checked>,
    ) -> Result<Checked, RejectReason> {
        if tx.is_coinbase() {
            return Err(RejectReason::Consensus(
                "coinbase: a coinbase cannot be relayed".into(),
            ));
        }
        check_transaction(tx)?;
        check_standard(tx, &self.config)?;
        let txid = tx.compute_txid();
        if chain.confirmed_height(&txid).is_some() {
            return Err(RejectReason::AlreadyConfirmed(txid));
        }
        if self.entries.contains_key(&txid) {
            return Err(RejectReason::AlreadyInMempool(txid));
        }
        let next_height = chain.tip_height() + 1;
        let mtp = chain.mtp_at(chain.tip_height());

        let mut spent: Vec<TxOut> = Vec::with_capacity(tx.input.len());
        let mut contexts = Vec::with_capacity(tx.input.len());
        let mut parents = BTreeSet::new();
        for (i, input) in tx.input.iter().enumerate() {
            let outpoint = input.previous_output;
            if let Some(by) = self.spent_by.get(&outpoint) {
                return Err(RejectReason::Conflict {
                    input: i,
                    outpoint,
                    by: *by,
                });
            }
            let unconfirmed = package_parent
                .filter(|p| p.txid == outpoint.txid)
                .map(|p| &p.tx)
                .or_else(|| self.entries.get(&outpoint.txid).map(|e| &e.tx));
            if let Some(parent_tx) = unconfirmed {
                let Some(txout) = parent_tx.output.get(outpoint.vout as usize) else {
                    return Err(RejectReason::MissingInput { input: i, outpoint });
                };
                spent.push(txout.clone());
                contexts.push(SpentContext {
                    height: next_height,
                    prev_mtp: mtp,
                });
                parents.insert(outpoint.txid);
                continue;
            }
            let Some(coin) = chain.coin(&outpoint) else {
                return Err(RejectReason::MissingInput { input: i, outpoint });
            };
            if coin.is_coinbase && next_height - coin.height < COINBASE_MATURITY {
                return Err(RejectReason::ImmatureCoinbase {
                    input: i,
                    outpoint,
                    height: next_height,
                    mature_at: coin.height + COINBASE_MATURITY,
                });
            }
            spent.push(coin.txout.clone());
            contexts.push(SpentContext {
                height: coin.height,
                prev_mtp: chain.mtp_at(coin.height.saturating_sub(1)),
            });
        }
        let inputs = sum_amounts(spent.iter().map(|o| &o.value));
        let outputs = sum_amounts(tx.output.iter().map(|o| &o.value));
        if outputs > inputs {
            return Err(RejectReason::InputsBelowOutputs { inputs, outputs });
        }
        let fee = inputs - outputs;
        check_final(tx, next_height, mtp)?;
        check_sequence_locks(tx, &contexts, next_height, mtp)?;
        check_inputs_standard(tx, &spent)?;

        let vsize = tx.vsize() as u64;
        self.check_chain_limits(tx, txid, vsize, &parents, package_parent)?;

        // Ephemeral dust (Core 29): a transaction with a dust output must pay no fee at all.
        if fee != Amount::ZERO && !dust_outputs(tx, self.config.dust_relay_fee_rate).is_empty() {
            return Err(RejectReason::Dust(
                "a transaction with a dust output must pay zero fee (ephemeral dust)".into(),
            ));
        }
        Ok(Checked {
            tx: tx.clone(),
            txid,
            fee,
            vsize,
            parents,
            spent,
        })
    }

    /// TRUC (BIP-431) rules and the ancestor/descendant count limits.
    fn check_chain_limits(
        &self,
        tx: &Transaction,
        txid: Txid,
        vsize: u64,
        parents: &BTreeSet<Txid>,
        package_parent: Option<&Checked>,
    ) -> Result<(), RejectReason> {
        let parent_tx = |p: &Txid| -> &Transaction {
            match package_parent {
                Some(pp) if pp.txid == *p => &pp.tx,
                _ => &self.entries[p].tx,
            }
        };
        let ancestors = self.ancestors_of(parents, package_parent);
        let is_truc = tx.version.0 == TRUC_VERSION;
        if is_truc {
            if vsize > TRUC_MAX_VSIZE {
                return Err(RejectReason::Truc(format!(
                    "version=3 tx {txid} is {vsize} vB, more than {TRUC_MAX_VSIZE}"
                )));
            }
            if let Some(p) = parents
                .iter()
                .find(|p| parent_tx(p).version.0 != TRUC_VERSION)
            {
                return Err(RejectReason::Truc(format!(
                    "version=3 tx {txid} cannot spend from non-version=3 tx {p}"
                )));
            }
            if ancestors.len() + 1 > 2 {
                return Err(RejectReason::Truc(format!(
                    "version=3 tx {txid} would have too many ancestors ({} unconfirmed, max 1)",
                    ancestors.len()
                )));
            }
            if let Some(parent) = parents.iter().next() {
                if vsize > TRUC_CHILD_MAX_VSIZE {
                    return Err(RejectReason::Truc(format!(
                        "version=3 child tx {txid} is {vsize} vB, more than {TRUC_CHILD_MAX_VSIZE}"
                    )));
                }
                if let Some(sibling) = self.children_of(parent).into_iter().next() {
                    return Err(RejectReason::Truc(format!(
                        "version=3 tx {parent} would exceed descendant count limit: it already has child {sibling}"
                    )));
                }
            }
        } else if let Some(p) = parents
            .iter()
            .find(|p| parent_tx(p).version.0 == TRUC_VERSION)
        {
            return Err(RejectReason::Truc(format!(
                "non-version=3 tx {txid} cannot spend from version=3 tx {p}"
            )));
        }
        if ancestors.len() + 1 > DEFAULT_ANCESTOR_LIMIT {
            return Err(RejectReason::TooLongMempoolChain(format!(
                "{} unconfirmed ancestors (limit {})",
                ancestors.len(),
                DEFAULT_ANCESTOR_LIMIT - 1
            )));
        }
        for a in &ancestors {
            if self.entries.contains_key(a)
                && self.descendants_of(a).len() + 1 > DEFAULT_ANCESTOR_LIMIT - 1
            {
                return Err(RejectReason::TooLongMempoolChain(format!(
                    "ancestor {a} would exceed {DEFAULT_ANCESTOR_LIMIT} descendants"
                )));
            }
        }
        Ok(())
    }

    /// Zero-fee parents' dust outputs must all be spent by this child (Core's CheckEphemeralSpends).
    fn check_ephemeral_spends(
        &self,
        tx: &Checked,
        package_parent: Option<&Checked>,
        alone: bool,
    ) -> Result<(), RejectReason> {
        let spends: HashSet<OutPoint> = tx.tx.input.iter().map(|i| i.previous_output).collect();
        for parent in &tx.parents {
            let ptx = match package_parent {
                Some(p) if p.txid == *parent => &p.tx,
                _ => &self.entries[parent].tx,
            };
            for vout in dust_outputs(ptx, self.config.dust_relay_fee_rate) {
                let op = OutPoint::new(*parent, vout);
                if !spends.contains(&op) {
                    return Err(RejectReason::MissingEphemeralSpend(op));
                }
            }
        }
        // A dust-carrying transaction with no child in the package cannot enter alone.
        if alone && tx.fee == Amount::ZERO {
            if let Some(vout) = dust_outputs(&tx.tx, self.config.dust_relay_fee_rate).first() {
                return Err(RejectReason::MissingEphemeralSpend(OutPoint::new(
                    tx.txid, *vout,
                )));
            }
        }
        Ok(())
    }

    fn ancestors_of(
        &self,
        parents: &BTreeSet<Txid>,
        package_parent: Option<&Checked>,
    ) -> BTreeSet<Txid> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<Txid> = parents.iter().copied().collect();
        while let Some(t) = stack.pop() {
            if !out.insert(t) {
                continue;
            }
            let tx = match package_parent {
                Some(p) if p.txid == t => &p.tx,
                _ => match self.entries.get(&t) {
                    Some(e) => &e.tx,
                    None => continue,
                },
            };
            stack.extend(
                tx.input
                    .iter()
                    .map(|i| i.previous_output.txid)
                    .filter(|p| self.entries.contains_key(p)),
            );
        }
        out
    }

    fn children_of(&self, txid: &Txid) -> BTreeSet<Txid> {
        let Some(e) = self.entries.get(txid) else {
            return BTreeSet::new();
        };
        (0..e.tx.output.len() as u32)
            .filter_map(|vout| self.spent_by.get(&OutPoint::new(*txid, vout)).copied())
            .collect()
    }

    fn descendants_of(&self, txid: &Txid) -> BTreeSet<Txid> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<Txid> = self.children_of(txid).into_iter().collect();
        while let Some(t) = stack.pop() {
            if out.insert(t) {
                stack.extend(self.children_of(&t));
            }
        }
        out
    }

    fn insert(&mut self, checked: Checked) {
        for input in &checked.tx.input {
            self.spent_by.insert(input.previous_output, checked.txid);
        }
        self.entries.insert(
            checked.txid,
            MempoolEntry {
                tx: checked.tx,
                fee: checked.fee,
                vsize: checked.vsize,
                seq: self.next_seq,
            },
        );
        self.next_seq += 1;
    }

    fn remove_one(&mut self, txid: &Txid) {
        if let Some(e) = self.entries.remove(txid) {
            for input in &e.tx.input {
                if self.spent_by.get(&input.previous_output) == Some(txid) {
                    self.spent_by.remove(&input.previous_output);
                }
            }
        }
    }

    /// Remove a transaction and everything that descends from it.
    fn remove_with_descendants(&mut self, txid: &Txid) {
        let mut all = self.descendants_of(txid);
        all.insert(*txid);
        for t in all {
            self.remove_one(&t);
        }
    }

    /// Forget transactions a connected block confirmed, and evict what conflicts with it.
    pub(crate) fn remove_for_block(&mut self, txs: &[Transaction]) {
        for tx in txs {
            let txid = tx.compute_txid();
            if self.entries.contains_key(&txid) {
                self.remove_one(&txid);
            }
            for input in &tx.input {
                if let Some(conflict) = self.spent_by.get(&input.previous_output).copied() {
                    if conflict != txid {
                        self.remove_with_descendants(&conflict);
                    }
                }
            }
        }
    }

    /// Pick transactions for a block: highest ancestor-package fee rate first, parents before
    /// children, within `max_weight`.
    pub(crate) fn select_for_block(&self, max_weight: Weight) -> Vec<Transaction> {
        let mut candidates: Vec<(&Txid, FeeRate, u64)> = self
            .entries
            .iter()
            .map(|(txid, e)| {
                let anc = self.ancestors_of(&self.parents_in_pool(&e.tx), None);
                let (fee, vsize) = anc.iter().fold((e.fee, e.vsize), |(f, v), a| {
                    let ae = &self.entries[a];
                    (f + ae.fee, v + ae.vsize)
                });
                (txid, fee_rate(fee, vsize), e.seq)
            })
            .collect();
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        let mut chosen: HashSet<Txid> = HashSet::new();
        let mut ordered: Vec<&MempoolEntry> = Vec::new();
        let mut weight = Weight::ZERO;
        for (txid, _, _) in candidates {
            if chosen.contains(txid) {
                continue;
            }
            let mut group: Vec<&MempoolEntry> = self
                .ancestors_of(&self.parents_in_pool(&self.entries[txid].tx), None)
                .iter()
                .filter(|a| !chosen.contains(*a))
                .map(|a| &self.entries[a])
                .collect();
            group.push(&self.entries[txid]);
            let group_weight: Weight = group.iter().map(|e| e.tx.weight()).sum();
            if weight + group_weight > max_weight {
                continue;
            }
            weight += group_weight;
            for e in group {
                chosen.insert(e.tx.compute_txid());
                ordered.push(e);
            }
        }
        // Arrival order is a topological order.
        ordered.sort_by_key(|e| e.seq);
        ordered.into_iter().map(|e| e.tx.clone()).collect()
    }

    fn parents_in_pool(&self, tx: &Transaction) -> BTreeSet<Txid> {
        tx.input
            .iter()
            .map(|i| i.previous_output.txid)
            .filter(|p| self.entries.contains_key(p))
            .collect()
    }

    /// Fee rate a transaction needs to enter the next block, given what is waiting.
    pub(crate) fn next_block_fee_rate(&self, max_weight: Weight) -> FeeRate {
        let mut rates: Vec<(FeeRate, Weight)> = self
            .entries
            .values()
            .map(|e| (e.fee_rate(), e.tx.weight()))
            .collect();
        rates.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut used = Weight::ZERO;
        for (rate, w) in rates {
            used += w;
            if used > max_weight {
                return rate.max(self.config.min_relay_fee_rate);
            }
        }
        self.config.min_relay_fee_rate
    }
}

/// Which transaction of a package a rejection is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PackageMember {
    /// The parent.
    Parent,
    /// The child.
    Child,
    /// Both together (the package fee rate, or the package's shape).
    Package,
}

impl MempoolEntry {
    /// Order of arrival.
    pub(crate) fn arrival(&self) -> u64 {
        self.seq
    }
}

/// Read access for the RPC server (`getrawmempool`, `getmempoolentry`, ...).
impl Mempool {
    /// Core's mempool sequence number: one plus the number of additions and removals so far.
    pub(crate) fn sequence(&self) -> u64 {
        // Every transaction added is either still here or was removed.
        let added = self.next_seq;
        let removed = added - self.entries.len() as u64;
        1 + added + removed
    }

    /// In-mempool parents of a mempool transaction.
    pub(crate) fn parents_of(&self, txid: &Txid) -> BTreeSet<Txid> {
        self.entries
            .get(txid)
            .map(|e| self.parents_in_pool(&e.tx))
            .unwrap_or_default()
    }

    /// In-mempool children of a mempool transaction.
    pub(crate) fn children_of_tx(&self, txid: &Txid) -> BTreeSet<Txid> {
        self.children_of(txid)
    }

    /// In-mempool ancestors of a mempool transaction (itself excluded).
    pub(crate) fn ancestors_of_tx(&self, txid: &Txid) -> BTreeSet<Txid> {
        self.ancestors_of(&self.parents_of(txid), None)
    }

    /// In-mempool descendants of a mempool transaction (itself excluded).
    pub(crate) fn descendants_of_tx(&self, txid: &Txid) -> BTreeSet<Txid> {
        self.descendants_of(txid)
    }
}
