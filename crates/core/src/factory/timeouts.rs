//! Timeout transactions of the inverted policy: who is paid what at T.
//!
//! The timeout of a tree output pays every client below its node in one transaction, as long as
//! that transaction stays within [`TIMEOUT_SPLIT_VSIZE`] (TRUC's 10,000 vB). Above it (about 230
//! clients), the timeout is split along the tree: it pays one [`Slot::TimeoutPart`] per child of
//! the node instead, each holding what those clients are owed, and each part's own timeout (same
//! nLockTime T-1) pays them, or splits again. Fee rule: a part carries the value of the
//! `NodeInput` output of its node at the same version, i.e. its clients' payouts plus exactly the
//! fees and fee coins the tree set aside below that node; each transaction of the split tree pays
//! as fee what its input carries beyond its outputs. So the split timeout's transactions pay, in
//! total, exactly the fee the unsplit timeout would have paid (the output's value minus the
//! clients' payouts), and every client is paid exactly the same; the extra transactions cost
//! nobody anything but part of that reserve.

use super::*;

impl Factory {
    /// Who is paid what by the timeout transaction of `slot` (inverted policy): every client its
    /// channels, stock still in a PS chain to the buyers it was sold to, and the rest of each
    /// stock evenly among the clients sharing it. For a split timeout, what its parts' timeouts
    /// pay in the end.
    pub fn timeout_payouts(
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
