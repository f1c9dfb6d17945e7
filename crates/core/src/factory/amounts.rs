//! Amounts of every output at one version of a factory: fees paid from the stock, sales.

use super::*;

/// Amounts of every output at one odometer state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amounts {
    pub(super) node_input: Vec<Amount>,
    pub(super) kickoff_out: Vec<Amount>,
    pub(super) kickoff_fee: Vec<Amount>,
    pub(super) state_fee: Vec<Amount>,
    pub(super) stock: Vec<Amount>,
    pub(super) sold: Vec<Amount>,
    pub(super) change: Vec<Amount>,
    pub(super) sale_fee: Amount,
    /// `owed_prefix[c]`: what the inverted timeouts owe clients `0..c` (channels, merged sales,
    /// stock shares), so that a node's clients' sum is one subtraction.
    pub(super) owed_prefix: Vec<Amount>,
    /// Per node: what a timeout of an output holding the node's clients' money needs (see
    /// `timeouts`): their payouts and fee coins, plus the fees of its transaction(s).
    pub(super) timeout_need: Vec<Amount>,
}

impl Amounts {
    /// Value of an output.
    pub fn value(&self, factory: &Factory, slot: Slot) -> Amount {
        match slot {
            Slot::NodeInput(n) => self.node_input[n.0 as usize],
            Slot::KickoffOut(n) => self.kickoff_out[n.0 as usize],
            Slot::Channel(c) => factory.params.clients[c.0 as usize].capacity,
            Slot::FeeCoin(_) => factory.params.config.client_fee_coin,
            Slot::Stock(s) => self.stock[s as usize],
            Slot::Sold(j) => self.sold.get(j as usize).copied().unwrap_or(Amount::ZERO),
            Slot::Change(j) => self.change.get(j as usize).copied().unwrap_or(Amount::ZERO),
            // What the split timeout above it allots to the node's clients (see `timeouts`).
            Slot::TimeoutPart { .. } => factory.timeout_part_value(self, slot),
        }
    }

    /// Fee of a tree transaction.
    pub fn fee(&self, kind: TxKind) -> Option<Amount> {
        match kind {
            TxKind::Kickoff(n) => Some(self.kickoff_fee[n.0 as usize]),
            TxKind::State(n) => Some(self.state_fee[n.0 as usize]),
            TxKind::Sale(_) => Some(self.sale_fee),
            TxKind::Timeout(_) | TxKind::Punish(_) => None,
        }
    }

    /// The amount the funding output must carry.
    pub fn funding_value(&self) -> Amount {
        self.node_input[0]
    }
}

/// vsize of a one-input key-path-spend transaction with `p2tr` P2TR outputs and `p2a` anchors.
pub fn tree_tx_vsize(p2tr: usize, p2a: usize) -> u64 {
    let n = p2tr + p2a;
    let varint = if n < 0xfd {
        1
    } else if n <= 0xffff {
        3
    } else {
        5
    };
    // version + input count + input + output count + outputs + lock time, then (marker, flag and
    // a 64-byte signature witness) / 4 = 17 vbytes.
    (4 + 1 + 41 + varint + 43 * p2tr + 13 * p2a + 4 + 17) as u64
}

impl Factory {
    /// Amounts of every output at version `v`: bottom-up, each transaction's input is its outputs
    /// plus its fee; fee increases of newer states are paid from the stock below them, and sales
    /// (with the fees of the outputs they add) from the stock they sell.
    pub fn amounts(&self, v: &Version) -> Result<Amounts, FactoryError> {
        let cfg = &self.params.config;
        let odo = &v.odo;
        let nodes = self.tree.nodes();
        let n = nodes.len();
        for sale in &v.sales {
            if sale.stock as usize >= self.stocks.len()
                || !self.stocks[sale.stock as usize]
                    .clients
                    .contains(&sale.buyer.0)
            {
                return Err(FactoryError::NoSuch(format!("{sale:?}")));
            }
        }
        let mut stock: Vec<Amount> = self
            .stocks
            .iter()
            .map(|s| cfg.stock_per_client * u64::from(s.clients.end - s.clients.start))
            .collect();
        let mut state_fee = vec![Amount::ZERO; n];
        let mut kickoff_fee = vec![Amount::ZERO; n];
        let rate = cfg.fees.tree_fee_rate;
        for node in nodes {
            let i = node.id.0 as usize;
            let kick_outputs = match node.kind {
                NodeKind::Static => node.children.len(),
                _ => 1,
            };
            kickoff_fee[i] = rate
                .fee_vb(tree_tx_vsize(kick_outputs, 1))
                .unwrap_or(Amount::MAX);
            if node.has_state() {
                let vsize = self.state_vsize(node.id);
                let idx = u64::from(odo.state(node.id).map_or(0, |s| s.0));
                let base = rate.fee_vb(vsize).unwrap_or(Amount::MAX);
                let extra = cfg
                    .fees
                    .state_fee_step
                    .fee_vb(vsize * idx)
                    .unwrap_or(Amount::MAX);
                state_fee[i] = base + extra;
                if extra > Amount::ZERO {
                    self.deduct(node.id, extra, &mut stock)?;
                }
                if node.kind == NodeKind::Leaf {
                    // Each merged sale adds one output to the leaf state; its stock pays for it.
                    let per_output = rate.fee_vb(P2TR_OUTPUT_VBYTES).unwrap_or(Amount::MAX)
                        + cfg
                            .fees
                            .state_fee_step
                            .fee_vb(P2TR_OUTPUT_VBYTES * idx)
                            .unwrap_or(Amount::MAX);
                    for s in self.leaf_stocks(node.id) {
                        for j in v.merged_of(s) {
                            let take = per_output
                                .checked_add(v.sales[j as usize].amount)
                                .ok_or(FactoryError::StockExhausted(node.id))?;
                            stock[s as usize] = stock[s as usize]
                                .checked_sub(take)
                                .filter(|a| *a >= P2TR_DUST)
                                .ok_or(FactoryError::StockExhausted(node.id))?;
                            state_fee[i] += per_output;
                        }
                    }
                }
            }
        }
        let sale_fee = rate.fee_vb(tree_tx_vsize(2, 0)).unwrap_or(Amount::MAX);
        let sold: Vec<Amount> = v.sales.iter().map(|s| s.amount).collect();
        let mut change = vec![Amount::ZERO; v.sales.len()];
        for s in 0..self.stocks.len() as u32 {
            let mut left = stock[s as usize];
            for j in v.chain_of(s) {
                let take = v.sales[j as usize]
                    .amount
                    .checked_add(sale_fee)
                    .ok_or(FactoryError::StockExhausted(self.stocks[s as usize].leaf))?;
                left = left
                    .checked_sub(take)
                    .filter(|a| *a >= P2TR_DUST)
                    .ok_or(FactoryError::StockExhausted(self.stocks[s as usize].leaf))?;
                change[j as usize] = left;
            }
        }
        let mut node_input = vec![Amount::ZERO; n];
        let mut kickoff_out = vec![Amount::ZERO; n];
        for node in nodes.iter().rev() {
            let i = node.id.0 as usize;
            let children_sum: Amount = node.children.iter().map(|c| node_input[c.0 as usize]).sum();
            match node.kind {
                NodeKind::Static => {
                    node_input[i] = children_sum + ANCHOR_VALUE + kickoff_fee[i];
                }
                NodeKind::Dw => {
                    kickoff_out[i] = children_sum + state_fee[i];
                    node_input[i] = kickoff_out[i] + ANCHOR_VALUE + kickoff_fee[i];
                }
                NodeKind::Leaf => {
                    let channels: Amount = node
                        .client_ids()
                        .map(|c| self.params.clients[c.0 as usize].capacity)
                        .sum();
                    let coins =
                        cfg.client_fee_coin * u64::from(node.clients.end - node.clients.start);
                    let stocks: Amount = self.leaf_stocks(node.id).map(|s| stock[s as usize]).sum();
                    let merged: Amount = self
                        .leaf_stocks(node.id)
                        .flat_map(|s| v.merged_of(s))
                        .map(|j| sold[j as usize])
                        .sum();
                    kickoff_out[i] = channels + merged + coins + stocks + state_fee[i];
                    node_input[i] = kickoff_out[i] + ANCHOR_VALUE + kickoff_fee[i];
                }
            }
        }
        let mut amounts = Amounts {
            node_input,
            kickoff_out,
            kickoff_fee,
            state_fee,
            stock,
            sold,
            change,
            sale_fee,
            owed_prefix: Vec::new(),
            timeout_need: Vec::new(),
        };
        if cfg.timeout_policy == TimeoutPolicy::Inverted {
            self.fill_timeout_needs(&mut amounts, v);
        }
        Ok(amounts)
    }

    /// Take `extra` from the stock outputs under `node`, evenly, the remainder from the first.
    pub(crate) fn deduct(
        &self,
        node: NodeId,
        extra: Amount,
        stock: &mut [Amount],
    ) -> Result<(), FactoryError> {
        let n = self.tree.node(node);
        let first_leaf = self.tree.leaf_of(ClientId(n.clients.start)).unwrap_or(node);
        let last_leaf = self
            .tree
            .leaf_of(ClientId(n.clients.end - 1))
            .unwrap_or(node);
        let start = self.leaf_stocks(first_leaf).start;
        let end = self.leaf_stocks(last_leaf).end;
        let count = u64::from(end - start).max(1);
        let share = extra.to_sat() / count;
        let rem = extra.to_sat() % count;
        for (k, s) in (start..end).enumerate() {
            let take = Amount::from_sat(share + if k == 0 { rem } else { 0 });
            let left = stock[s as usize]
                .checked_sub(take)
                .filter(|v| *v >= P2TR_DUST)
                .ok_or(FactoryError::StockExhausted(self.stocks[s as usize].leaf))?;
            stock[s as usize] = left;
        }
        Ok(())
    }

    pub(crate) fn state_vsize(&self, node: NodeId) -> u64 {
        let n = self.tree.node(node);
        match n.kind {
            NodeKind::Leaf => {
                let clients = (n.clients.end - n.clients.start) as usize;
                tree_tx_vsize(2 * clients + self.leaf_stocks(node).len(), 0)
            }
            _ => tree_tx_vsize(n.children.len(), 0),
        }
    }
}
