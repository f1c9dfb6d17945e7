//! Timeout transactions of the inverted policy: who is paid what at T.
//!
//! The timeout of a tree output pays every client below its node in one transaction, as long as
//! that transaction stays within [`TIMEOUT_SPLIT_VSIZE`] (TRUC's 10,000 vB). Above it (about 230
//! clients), the timeout is split along the tree: it pays one [`Slot::TimeoutPart`] per child of
//! the node instead, each holding what those clients are owed, and each part's own timeout (same
//! nLockTime T-1) pays them, or splits again.
//!
//! Amounts. A tree output carries, besides what its clients are owed (channels, sales, stock),
//! the fee coins and the fee reserve of every transaction of the tree beneath it. Its timeout
//! spends none of that on the tree, so it pays:
//! - each client what it is owed, plus its fee coin (which pays for bumping the client's own
//!   output, child pays for parent, when the market wants more than the signed rate);
//! - miners the tree's fee rate (`FeePolicy::tree_fee_rate`) on the timeout transaction itself
//!   (and, when split, on each transaction of the split);
//! - the rest of the reserve (the surplus) to the node's clients, evenly, the remainder of the
//!   division to the node's first client: under the inverted policy an LSP that did not close
//!   before T forfeits the factory to the clients, and the reserve is the LSP's money like the
//!   stock is.
//!
//! A split timeout gives each part exactly what its own timeout needs (its clients' payouts,
//! fee coins and the fees of the transactions beneath it) plus its clients' share of the
//! surplus, so every client is paid the same whether its timeout is split or not, but for the
//! split's own fees. Should an output ever hold less than its timeout needs (a fee rate the
//! reserve cannot pay), the timeout pays what the clients are owed and fee coins if they fit,
//! and the rest as fee, and a split's parts carry their node's tree value as before.
//! Leaf outputs (channels, stock, sales) carry no reserve: their timeouts pay all they hold at
//! zero fee, with a P2A anchor for the fee coin to pay for.

use super::*;

impl Factory {
    /// Who is paid what by the timeout transaction of `slot` (inverted policy), one entry per
    /// client in client order: what it is owed (see [`Factory::timeout_owed`]), and for tree
    /// outputs its fee coin and share of the fee reserve (see the module's rule). For a split
    /// timeout, what its parts' timeouts pay in the end.
    pub fn timeout_payouts(
        &self,
        slot: Slot,
        amounts: &Amounts,
        v: &Version,
    ) -> Vec<(ClientId, Amount)> {
        let Some(n) = timeout_node(slot).filter(|n| {
            (n.0 as usize) < amounts.timeout_need.len() && (n.0 as usize) < self.tree.nodes().len()
        }) else {
            return self.timeout_owed(slot, amounts, v);
        };
        let parts = self.timeout_parts(slot);
        if !parts.is_empty() {
            return parts
                .iter()
                .flat_map(|p| self.timeout_payouts(*p, amounts, v))
                .collect();
        }
        let node = self.tree.node(n);
        let owed_of = |r: std::ops::Range<u32>| {
            amounts.owed_prefix[r.end as usize] - amounts.owed_prefix[r.start as usize]
        };
        let value = amounts.value(self, slot);
        let need = amounts.timeout_need[n.0 as usize];
        let coin = self.params.config.client_fee_coin;
        let coins = coin * u64::from(node.clients.end - node.clients.start);
        node.client_ids()
            .map(|c| {
                let extra = if value >= need {
                    coin + surplus_share(value - need, node.clients.clone(), c.0..c.0 + 1)
                } else if value >= owed_of(node.clients.clone()) + coins {
                    coin
                } else {
                    Amount::ZERO
                };
                (c, owed_of(c.0..c.0 + 1) + extra)
            })
            .collect()
    }

    /// What the inverted timeout of `slot` owes each client, fee coins and reserve aside: its
    /// channels, stock still in a PS chain to the buyers it was sold to, and the rest of each
    /// stock evenly among the clients sharing it; one entry per client, in client order.
    pub fn timeout_owed(
        &self,
        slot: Slot,
        amounts: &Amounts,
        v: &Version,
    ) -> Vec<(ClientId, Amount)> {
        let mut pay: Vec<(ClientId, Amount)> = Vec::new();
        // The stock (or change) output of `stock` holding `value`, with the chain sales after
        // `after` (exclusive) still to come out of it.
        let add_stock =
            |pay: &mut Vec<(ClientId, Amount)>, s: u32, value: Amount, after: Option<u32>| {
                let st = &self.stocks[s as usize];
                let mut left = value;
                for j in v.chain_of(s) {
                    if after.is_some_and(|a| j <= a) {
                        continue;
                    }
                    let sale = &v.sales[j as usize];
                    pay.push((sale.buyer, sale.amount));
                    left = left.checked_sub(sale.amount).unwrap_or(Amount::ZERO);
                }
                let k = u64::from(st.clients.end - st.clients.start);
                let v = left.to_sat();
                for (j, c) in st.clients.clone().enumerate() {
                    let share = v / k + if j == 0 { v % k } else { 0 };
                    pay.push((ClientId(c), Amount::from_sat(share)));
                }
            };
        let add_client = |pay: &mut Vec<(ClientId, Amount)>, c: ClientId| {
            pay.push((c, self.params.clients[c.0 as usize].capacity));
            for j in v.sales_of(c) {
                if v.sales[j as usize].merged {
                    pay.push((c, v.sales[j as usize].amount));
                }
            }
        };
        match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) | Slot::TimeoutPart { node: n, .. } => {
                let node = self.tree.node(n);
                for c in node.client_ids() {
                    add_client(&mut pay, c);
                }
                let first = self.tree.leaf_of(ClientId(node.clients.start));
                let last = self.tree.leaf_of(ClientId(node.clients.end - 1));
                if let (Some(f), Some(l)) = (first, last) {
                    for s in self.leaf_stocks(f).start..self.leaf_stocks(l).end {
                        add_stock(&mut pay, s, amounts.stock[s as usize], None);
                    }
                }
            }
            Slot::Channel(c) => pay.push((c, self.params.clients[c.0 as usize].capacity)),
            Slot::Sold(j) => {
                if let Some(sale) = v.sales.get(j as usize) {
                    pay.push((sale.buyer, sale.amount));
                }
            }
            Slot::Stock(s) => add_stock(&mut pay, s, amounts.stock[s as usize], None),
            Slot::Change(j) => {
                if let Some(sale) = v.sales.get(j as usize) {
                    add_stock(&mut pay, sale.stock, amounts.change[j as usize], Some(j));
                }
            }
            Slot::FeeCoin(_) => {}
        }
        // One output per client.
        let mut merged: Vec<(ClientId, Amount)> = Vec::new();
        pay.sort_by_key(|p| p.0);
        for (c, a) in pay {
            match merged.last_mut() {
                Some(last) if last.0 == c => last.1 += a,
                _ => merged.push((c, a)),
            }
        }
        merged
    }

    /// Fill in what the timeouts of `amounts`'s version need (the module's rule): what each
    /// client is owed, and per node what a timeout of its clients' money needs.
    pub(super) fn fill_timeout_needs(&self, amounts: &mut Amounts, v: &Version) {
        let owed = self.timeout_owed(Slot::NodeInput(NodeId(0)), amounts, v);
        let n = self.params.clients.len();
        let mut prefix = Vec::with_capacity(n + 1);
        let mut total = Amount::ZERO;
        prefix.push(total);
        let mut k = 0;
        for c in 0..n as u32 {
            while k < owed.len() && owed[k].0 .0 == c {
                total = total.checked_add(owed[k].1).unwrap_or(Amount::MAX);
                k += 1;
            }
            prefix.push(total);
        }
        let cfg = &self.params.config;
        let fee = |outputs: usize| {
            cfg.fees
                .tree_fee_rate
                .fee_vb(tree_tx_vsize(outputs, 0))
                .unwrap_or(Amount::MAX)
        };
        let add = |a: Amount, b: Amount| a.checked_add(b).unwrap_or(Amount::MAX);
        let nodes = self.tree.nodes();
        let mut need = vec![Amount::ZERO; nodes.len()];
        // Children come after their parent in `nodes`.
        for node in nodes.iter().rev() {
            let i = node.id.0 as usize;
            need[i] = if self.splits_timeout_at(node.id) {
                node.children
                    .iter()
                    .fold(fee(node.children.len()), |a, c| add(a, need[c.0 as usize]))
            } else {
                let k = node.clients.end - node.clients.start;
                let owed = prefix[node.clients.end as usize] - prefix[node.clients.start as usize];
                add(
                    add(owed, cfg.client_fee_coin * u64::from(k)),
                    fee(k as usize),
                )
            };
        }
        amounts.owed_prefix = prefix;
        amounts.timeout_need = need;
    }

    /// Value of a timeout part: what its parent's timeout needs for the part's clients plus their
    /// share of the parent's surplus (the module's rule), or, should the parent hold less than it
    /// needs, the node's tree value.
    pub(crate) fn timeout_part_value(&self, amounts: &Amounts, part: Slot) -> Amount {
        let (Some(node), Some(parent)) = (timeout_node(part), self.timeout_part_parent(part))
        else {
            return Amount::ZERO;
        };
        let fallback = amounts
            .node_input
            .get(node.0 as usize)
            .copied()
            .unwrap_or(Amount::ZERO);
        let Some(up) = timeout_node(parent) else {
            return fallback;
        };
        let (Some(need), Some(up_need)) = (
            amounts.timeout_need.get(node.0 as usize),
            amounts.timeout_need.get(up.0 as usize),
        ) else {
            return fallback;
        };
        let up_value = amounts.value(self, parent);
        if up_value < *up_need {
            return fallback;
        }
        *need
            + surplus_share(
                up_value - *up_need,
                self.tree.node(up).clients.clone(),
                self.tree.node(node).clients.clone(),
            )
    }

    /// Whether `slot` has a timeout transaction under the inverted policy.
    pub fn has_timeout(&self, slot: Slot) -> bool {
        self.params.config.timeout_policy == TimeoutPolicy::Inverted
            && !matches!(slot, Slot::FeeCoin(_))
    }

    /// Whether the timeout of an output holding the money of `node`'s clients (its tree outputs,
    /// or a part) is split: paying each of them directly would take more than
    /// [`TIMEOUT_SPLIT_VSIZE`], and the node has children to split it among.
    pub fn splits_timeout_at(&self, node: NodeId) -> bool {
        let Some(n) = self.tree.nodes().get(node.0 as usize) else {
            return false;
        };
        !n.children.is_empty()
            && tree_tx_vsize((n.clients.end - n.clients.start) as usize, 0) > TIMEOUT_SPLIT_VSIZE
    }

    /// The outputs of the timeout transaction of `slot` when it is split: one part per child of
    /// its node, in the children's order. None when it pays the clients directly.
    pub fn timeout_parts(&self, slot: Slot) -> Vec<Slot> {
        let (top, kickoff, node) = match slot {
            Slot::NodeInput(n) => (n, false, n),
            Slot::KickoffOut(n) => (n, true, n),
            Slot::TimeoutPart { top, kickoff, node } => (top, kickoff, node),
            _ => return Vec::new(),
        };
        if !self.has_timeout(slot) || !self.splits_timeout_at(node) {
            return Vec::new();
        }
        self.tree
            .node(node)
            .children
            .iter()
            .map(|c| Slot::TimeoutPart {
                top,
                kickoff,
                node: *c,
            })
            .collect()
    }

    /// The output whose timeout transaction creates `part`: the split tree output, or the part
    /// above it.
    pub fn timeout_part_parent(&self, part: Slot) -> Option<Slot> {
        let Slot::TimeoutPart { top, kickoff, node } = part else {
            return None;
        };
        let parent = self.tree.nodes().get(node.0 as usize)?.parent?;
        Some(match (parent == top, kickoff) {
            (true, false) => Slot::NodeInput(top),
            (true, true) => Slot::KickoffOut(top),
            (false, _) => Slot::TimeoutPart {
                top,
                kickoff,
                node: parent,
            },
        })
    }

    /// Whether `part` is an output of this factory's split timeouts.
    pub(crate) fn is_timeout_part(&self, part: Slot) -> bool {
        let Slot::TimeoutPart { top, kickoff, .. } = part else {
            return false;
        };
        if top.0 as usize >= self.tree.nodes().len()
            || (kickoff && !self.tree.node(top).has_state())
        {
            return false;
        }
        let mut slot = part;
        while let Some(parent) = self.timeout_part_parent(slot) {
            if !self.timeout_parts(parent).contains(&slot) {
                return false;
            }
            if !matches!(parent, Slot::TimeoutPart { .. }) {
                return true;
            }
            slot = parent;
        }
        false
    }

    /// The parts of the timeout of `slot` that hold `client`'s money, from the top down (none
    /// when that timeout is not split).
    pub fn timeout_parts_of(&self, slot: Slot, client: ClientId) -> Vec<Slot> {
        let mut parts = Vec::new();
        let mut at = slot;
        while let Some(part) = self.timeout_parts(at).into_iter().find(|p| match p {
            Slot::TimeoutPart { node, .. } => self.tree.node(*node).clients.contains(&client.0),
            _ => false,
        }) {
            parts.push(part);
            at = part;
        }
        parts
    }

    /// The timeout transactions of `slot`: its own, then, when it is split, those of the parts
    /// beneath it, parents first (only those of the parts holding `client`'s money, when given).
    pub fn timeout_jobs(&self, slot: Slot, client: Option<ClientId>) -> Vec<TxKind> {
        if !self.has_timeout(slot) {
            return Vec::new();
        }
        let mut jobs = Vec::new();
        let mut stack = vec![slot];
        while let Some(s) = stack.pop() {
            jobs.push(TxKind::Timeout(s));
            for part in self.timeout_parts(s).into_iter().rev() {
                let holds = |c: ClientId| match part {
                    Slot::TimeoutPart { node, .. } => self.tree.node(node).clients.contains(&c.0),
                    _ => false,
                };
                if client.map_or(true, holds) {
                    stack.push(part);
                }
            }
        }
        jobs
    }

    pub(crate) fn build_timeout(
        &self,
        slot: Slot,
        spends: OutPoint,
        amounts: &Amounts,
        v: &Version,
    ) -> Result<Transaction, FactoryError> {
        let value = amounts.value(self, slot);
        let parts = self.timeout_parts(slot);
        let mut output: Vec<TxOut> = if parts.is_empty() {
            self.timeout_payouts(slot, amounts, v)
                .iter()
                .map(|(c, a)| TxOut {
                    value: *a,
                    script_pubkey: self.client_payout_script(*c),
                })
                .collect()
        } else {
            // Split: each part carries its node's input value at this version (the module's
            // fee rule), and is spent by its own timeout.
            parts
                .iter()
                .map(|p| {
                    Ok(TxOut {
                        value: amounts.value(self, *p),
                        script_pubkey: self.script_pubkey_at(*p, v)?,
                    })
                })
                .collect::<Result<_, FactoryError>>()?
        };
        let paid = output
            .iter()
            .try_fold(Amount::ZERO, |a, o| a.checked_add(o.value))
            .filter(|p| *p <= value)
            .ok_or_else(|| {
                ShapeError::Amount(format!(
                    "the timeout of {slot:?} would pay more than the {value} it spends"
                ))
            })?;
        if paid == value {
            // Zero fee: a 0-sat anchor lets the client's fee coin (or anyone) pay for it.
            output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: ScriptBuf::new_p2a(),
            });
        }
        let lock = LockTime::from_height(self.timeout_height - 1).map_err(|_| {
            ShapeError::Amount(format!(
                "timeout height {} is not a block height",
                self.timeout_height
            ))
        })?;
        check_dust(
            TxKind::Timeout(slot),
            one_input_tx(spends, Sequence::ENABLE_LOCKTIME_NO_RBF, lock, output),
        )
    }
}

/// The node whose clients' money a tree output or timeout part holds.
fn timeout_node(slot: Slot) -> Option<NodeId> {
    match slot {
        Slot::NodeInput(n) | Slot::KickoffOut(n) | Slot::TimeoutPart { node: n, .. } => Some(n),
        _ => None,
    }
}

/// The share of `surplus` split evenly among the clients `over` (the remainder to the first)
/// that goes to the clients `of`.
fn surplus_share(surplus: Amount, over: std::ops::Range<u32>, of: std::ops::Range<u32>) -> Amount {
    let k = u64::from(over.end.saturating_sub(over.start)).max(1);
    let (q, rem) = (surplus.to_sat() / k, surplus.to_sat() % k);
    let mine = u64::from(of.end.saturating_sub(of.start));
    Amount::from_sat(q * mine + if of.contains(&over.start) { rem } else { 0 })
}
