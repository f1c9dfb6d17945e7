//! Timeout transactions of the inverted policy: who is paid what at T.

use super::*;

impl Factory {
    /// Who is paid what by the timeout transaction of `slot` (inverted policy): every client its
    /// channels, stock still in a PS chain to the buyers it was sold to, and the rest of each
    /// stock evenly among the clients sharing it.
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
            Slot::NodeInput(n) | Slot::KickoffOut(n) => {
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

    pub(crate) fn build_timeout(
        &self,
        slot: Slot,
        spends: OutPoint,
        amounts: &Amounts,
        v: &Version,
    ) -> Result<Transaction, FactoryError> {
        let value = amounts.value(self, slot);
        let payouts = self.timeout_payouts(slot, amounts, v);
        let paid: Amount = payouts.iter().map(|p| p.1).sum();
        let mut output: Vec<TxOut> = payouts
            .iter()
            .map(|(c, a)| TxOut {
                value: *a,
                script_pubkey: self.client_payout_script(*c),
            })
            .collect();
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
