//! The transactions of the tree: which outputs each creates and spends, how each is built and
//! what its signers sign.

use super::*;

impl Factory {
    /// Outputs a tree transaction creates, in order (anchors excluded).
    pub fn outputs_of(&self, kind: TxKind, v: &Version) -> Vec<Slot> {
        match kind {
            TxKind::Kickoff(n) => {
                let node = self.tree.node(n);
                if node.has_state() {
                    vec![Slot::KickoffOut(n)]
                } else {
                    node.children.iter().map(|c| Slot::NodeInput(*c)).collect()
                }
            }
            TxKind::State(n) => {
                let node = self.tree.node(n);
                match node.kind {
                    NodeKind::Leaf => node
                        .client_ids()
                        .map(Slot::Channel)
                        .chain(
                            self.leaf_stocks(n)
                                .flat_map(|s| v.merged_of(s))
                                .map(Slot::Sold),
                        )
                        .chain(node.client_ids().map(Slot::FeeCoin))
                        .chain(self.leaf_stocks(n).map(Slot::Stock))
                        .collect(),
                    _ => node.children.iter().map(|c| Slot::NodeInput(*c)).collect(),
                }
            }
            TxKind::Sale(j) => vec![Slot::Sold(j), Slot::Change(j)],
            TxKind::Timeout(s) => self.timeout_parts(s),
            TxKind::Punish(_) => Vec::new(),
        }
    }

    /// The output a transaction spends.
    pub fn input_of(&self, kind: TxKind, v: &Version) -> Slot {
        match kind {
            TxKind::Kickoff(n) => Slot::NodeInput(n),
            TxKind::State(n) => Slot::KickoffOut(n),
            TxKind::Timeout(s) | TxKind::Punish(s) => s,
            TxKind::Sale(j) => {
                // The stock output itself, or the change of the previous sale of its chain.
                let stock = v.sales.get(j as usize).map_or(0, |s| s.stock);
                match v.chain_of(stock).into_iter().take_while(|p| *p < j).last() {
                    Some(prev) => Slot::Change(prev),
                    None => Slot::Stock(stock),
                }
            }
        }
    }

    /// The transaction that creates `slot` (none for the funding output).
    pub fn creator_of(&self, slot: Slot, v: &Version) -> Option<TxKind> {
        match slot {
            Slot::NodeInput(n) => {
                let p = self.tree.node(n).parent?;
                Some(if self.tree.node(p).has_state() {
                    TxKind::State(p)
                } else {
                    TxKind::Kickoff(p)
                })
            }
            Slot::KickoffOut(n) => Some(TxKind::Kickoff(n)),
            Slot::Channel(c) | Slot::FeeCoin(c) => self.tree.leaf_of(c).map(TxKind::State),
            Slot::Stock(s) => Some(TxKind::State(self.stocks.get(s as usize)?.leaf)),
            Slot::Sold(j) => {
                let sale = v.sales.get(j as usize)?;
                if sale.merged {
                    Some(TxKind::State(self.stocks.get(sale.stock as usize)?.leaf))
                } else {
                    Some(TxKind::Sale(j))
                }
            }
            Slot::Change(j) => Some(TxKind::Sale(j)),
            Slot::TimeoutPart { .. } => self.timeout_part_parent(slot).map(TxKind::Timeout),
        }
    }

    /// Build one transaction, given the outpoint of the output it spends.
    pub fn build_tx(
        &self,
        kind: TxKind,
        spends: OutPoint,
        amounts: &Amounts,
        v: &Version,
    ) -> Result<Transaction, FactoryError> {
        match kind {
            TxKind::Timeout(slot) => return self.build_timeout(slot, spends, amounts, v),
            TxKind::Punish(slot) => {
                let hash = self
                    .revocation_hash(slot, v)
                    .ok_or_else(|| FactoryError::NoSuch(format!("punishment of {slot:?}")))?;
                return self.build_punishment(slot, spends, amounts.value(self, slot), v, &hash);
            }
            _ => {}
        }
        let mut output = Vec::new();
        for slot in self.outputs_of(kind, v) {
            output.push(TxOut {
                value: amounts.value(self, slot),
                script_pubkey: self.script_pubkey_at(slot, v)?,
            });
        }
        let sequence = match kind {
            TxKind::Kickoff(_) => {
                output.push(TxOut {
                    value: ANCHOR_VALUE,
                    script_pubkey: ScriptBuf::new_p2a(),
                });
                Sequence::ENABLE_LOCKTIME_NO_RBF
            }
            TxKind::State(n) => v
                .odo
                .sequence(n)
                .unwrap_or(Sequence::ENABLE_LOCKTIME_NO_RBF),
            _ => Sequence::ENABLE_LOCKTIME_NO_RBF,
        };
        check_dust(kind, one_input_tx(spends, sequence, LockTime::ZERO, output))
    }

    /// The message a transaction's signers sign: the key-path sighash, or for a punishment the
    /// script-path sighash of its hashlock leaf.
    pub fn sighash_of(
        &self,
        kind: TxKind,
        tx: &Transaction,
        spent: &TxOut,
        v: &Version,
    ) -> Result<[u8; 32], FactoryError> {
        let TxKind::Punish(slot) = kind else {
            return Ok(Self::sighash(tx, spent));
        };
        let hash = self
            .revocation_hash(slot, v)
            .ok_or_else(|| FactoryError::NoSuch(format!("punishment of {slot:?}")))?;
        let leaf = self.revocation_leaf(slot, v, &hash)?;
        let leaf_hash = bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript);
        SighashCache::new(tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(std::slice::from_ref(spent)),
                leaf_hash,
                TapSighashType::Default,
            )
            .map(|h| h.to_byte_array())
            .map_err(|e| FactoryError::NoSuch(e.to_string()))
    }

    /// The key that signs `kind`: the output's tweaked key, or for a punishment the untweaked
    /// aggregate key of its hashlock leaf.
    pub fn key_for(&self, kind: TxKind, v: &Version) -> Result<TweakedAggregateKey, FactoryError> {
        match kind {
            TxKind::Punish(slot) => Ok(self.aggregate(slot, v)?.untweaked()),
            _ => self.signing_key_at(self.input_of(kind, v), v),
        }
    }

    /// The BIP-341 key-path sighash of a one-input transaction spending `spent`.
    pub fn sighash(tx: &Transaction, spent: &TxOut) -> [u8; 32] {
        SighashCache::new(tx)
            .taproot_key_spend_signature_hash(
                0,
                &Prevouts::All(std::slice::from_ref(spent)),
                TapSighashType::Default,
            )
            .map(|h| h.to_byte_array())
            .unwrap_or([0u8; 32])
    }

    /// The txid a transaction will have (witness does not change it).
    pub fn txid(tx: &Transaction) -> Txid {
        tx.compute_txid()
    }
}

/// `tx`, if every output is at or above its dust limit (P2A anchors and OP_RETURN outputs
/// excepted: zero-value anchors are ephemeral dust spent by their child).
pub(crate) fn check_dust(kind: TxKind, tx: Transaction) -> Result<Transaction, FactoryError> {
    for out in &tx.output {
        if out.script_pubkey.is_op_return() || out.script_pubkey == ScriptBuf::new_p2a() {
            continue;
        }
        let limit = out.script_pubkey.minimal_non_dust();
        if out.value < limit {
            return Err(FactoryError::Dust {
                kind,
                value: out.value,
                limit,
            });
        }
    }
    Ok(tx)
}

pub(crate) fn one_input_tx(
    spends: OutPoint,
    sequence: Sequence,
    lock_time: LockTime,
    output: Vec<TxOut>,
) -> Transaction {
    let mut tx = Transaction {
        version: transaction::Version(3),
        lock_time,
        input: vec![TxIn {
            previous_output: spends,
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        }],
        output,
    };
    if tree_tx_vsize(tx.output.len(), 0) > TRUC_MAX_VSIZE {
        tx.version = transaction::Version::TWO;
    }
    tx
}

/// A transaction built for signing, with the output it spends.
#[derive(Debug, Clone)]
pub struct BuiltTx {
    /// The (unsigned) transaction.
    pub tx: Transaction,
    /// The output it spends.
    pub spent: TxOut,
}

impl Factory {
    /// Outpoint of `slot`, given its creator's txid (the funding outpoint for the root's input).
    fn outpoint_of(
        &self,
        slot: Slot,
        built: &HashMap<TxKind, BuiltTx>,
        funding: OutPoint,
        v: &Version,
    ) -> Option<OutPoint> {
        self.slot_outpoint(slot, funding, v, |k| {
            built.get(&k).map(|b| b.tx.compute_txid())
        })
    }

    /// Where `slot` is on chain, given the txids of the factory's transactions.
    pub fn slot_outpoint(
        &self,
        slot: Slot,
        funding: OutPoint,
        v: &Version,
        txid_of: impl Fn(TxKind) -> Option<Txid>,
    ) -> Option<OutPoint> {
        match self.creator_of(slot, v) {
            None => Some(funding),
            Some(creator) => {
                let vout = self
                    .outputs_of(creator, v)
                    .iter()
                    .position(|s| *s == slot)? as u32;
                Some(OutPoint::new(txid_of(creator)?, vout))
            }
        }
    }

    /// Build `kinds` (and whatever transactions they depend on) at version `v`.
    pub fn build_set(
        &self,
        kinds: &[TxKind],
        funding: OutPoint,
        v: &Version,
    ) -> Result<HashMap<TxKind, BuiltTx>, FactoryError> {
        let amounts = self.amounts(v)?;
        let mut built: HashMap<TxKind, BuiltTx> = HashMap::new();
        for kind in kinds {
            self.build_into(*kind, funding, &amounts, v, &mut built)?;
        }
        Ok(built)
    }

    fn build_into(
        &self,
        kind: TxKind,
        funding: OutPoint,
        amounts: &Amounts,
        v: &Version,
        built: &mut HashMap<TxKind, BuiltTx>,
    ) -> Result<(), FactoryError> {
        if built.contains_key(&kind) {
            return Ok(());
        }
        if let TxKind::Sale(j) = kind {
            if v.sales.get(j as usize).map_or(true, |s| s.merged) {
                return Err(FactoryError::NoSuch(format!("{kind:?}")));
            }
        }
        let slot = self.input_of(kind, v);
        self.check_slot(slot, v)?;
        if let Some(creator) = self.creator_of(slot, v) {
            self.build_into(creator, funding, amounts, v, built)?;
        }
        let spends = self
            .outpoint_of(slot, built, funding, v)
            .ok_or_else(|| MusigError::Keys(format!("cannot locate the output {slot:?}")))?;
        let tx = self.build_tx(kind, spends, amounts, v)?;
        let spent = TxOut {
            value: amounts.value(self, slot),
            script_pubkey: self.script_pubkey_at(slot, v)?,
        };
        built.insert(kind, BuiltTx { tx, spent });
        Ok(())
    }

    /// Transactions a client signs at version `v`: its exit path in publishing order (with the
    /// sales of its stock's PS chain), then the timeout and punishment transactions of every output
    /// that holds its money.
    pub fn client_jobs(&self, client: ClientId, v: &Version) -> Result<Vec<TxKind>, FactoryError> {
        if client.0 as usize >= self.params.clients.len() {
            return Err(FactoryError::UnknownClient(client));
        }
        let path = self.tree.path_of(client);
        let mut jobs = Vec::new();
        for n in &path {
            jobs.push(TxKind::Kickoff(*n));
            if self.tree.node(*n).has_state() {
                jobs.push(TxKind::State(*n));
            }
        }
        if let Some(s) = self.stock_of(client) {
            jobs.extend(v.chain_of(s).into_iter().map(TxKind::Sale));
        }
        for slot in self.client_slots(client, v) {
            if self.has_timeout(slot) {
                jobs.push(TxKind::Timeout(slot));
            }
        }
        for slot in self.client_slots(client, v) {
            if matches!(slot, Slot::Stock(_) | Slot::Change(_)) {
                jobs.push(TxKind::Punish(slot));
            }
        }
        Ok(jobs)
    }

    /// Outputs that hold a client's money along its path (fee coin excluded): the tree outputs
    /// above it, each followed by the parts of its split timeout that hold the client's money
    /// (top down), its channels, and its stock output with the change outputs of its PS chain.
    pub fn client_slots(&self, client: ClientId, v: &Version) -> Vec<Slot> {
        let mut slots = Vec::new();
        for n in self.tree.path_of(client) {
            slots.push(Slot::NodeInput(n));
            slots.extend(self.timeout_parts_of(Slot::NodeInput(n), client));
            if self.tree.node(n).has_state() {
                slots.push(Slot::KickoffOut(n));
                slots.extend(self.timeout_parts_of(Slot::KickoffOut(n), client));
            }
        }
        slots.push(Slot::Channel(client));
        slots.extend(v.sales_of(client).into_iter().map(Slot::Sold));
        if let Some(s) = self.stock_of(client) {
            slots.push(Slot::Stock(s));
            slots.extend(v.chain_of(s).into_iter().map(Slot::Change));
        }
        slots
    }

    /// The funding output (script and value) the LSP's funding transaction must create.
    pub fn funding_output(&self) -> Result<TxOut, FactoryError> {
        let v = self.initial_version();
        let amounts = self.amounts(&v)?;
        Ok(TxOut {
            value: amounts.funding_value(),
            script_pubkey: self.script_pubkey_at(Slot::NodeInput(NodeId(0)), &v)?,
        })
    }

    /// Every transaction the LSP signs at version `v`: the whole tree, the sales, and every
    /// timeout and punishment transaction.
    pub fn all_jobs(&self, v: &Version) -> Vec<TxKind> {
        let mut jobs = Vec::new();
        for n in self.tree.nodes() {
            jobs.push(TxKind::Kickoff(n.id));
            if n.has_state() {
                jobs.push(TxKind::State(n.id));
            }
        }
        for s in 0..self.stocks.len() as u32 {
            jobs.extend(v.chain_of(s).into_iter().map(TxKind::Sale));
        }
        for slot in self.all_slots(v) {
            if self.has_timeout(slot) {
                jobs.push(TxKind::Timeout(slot));
            }
            if matches!(slot, Slot::Stock(_) | Slot::Change(_)) {
                jobs.push(TxKind::Punish(slot));
            }
        }
        jobs
    }

    /// Every output of the factory that belongs to the tree (fee coins and anchors excluded),
    /// with the parts of split timeouts.
    pub fn all_slots(&self, v: &Version) -> Vec<Slot> {
        let mut slots = Vec::new();
        let with_parts = |slots: &mut Vec<Slot>, slot: Slot| {
            for job in self.timeout_jobs(slot, None) {
                if let TxKind::Timeout(part @ Slot::TimeoutPart { .. }) = job {
                    slots.push(part);
                }
            }
        };
        for n in self.tree.nodes() {
            slots.push(Slot::NodeInput(n.id));
            with_parts(&mut slots, Slot::NodeInput(n.id));
            if n.has_state() {
                slots.push(Slot::KickoffOut(n.id));
                with_parts(&mut slots, Slot::KickoffOut(n.id));
            }
        }
        slots.extend((0..self.params.clients.len() as u32).map(|c| Slot::Channel(ClientId(c))));
        slots.extend((0..v.sales.len() as u32).map(Slot::Sold));
        slots.extend((0..self.stocks.len() as u32).map(Slot::Stock));
        for s in 0..self.stocks.len() as u32 {
            slots.extend(v.chain_of(s).into_iter().map(Slot::Change));
        }
        slots
    }
}

impl Factory {
    /// Every kickoff, state and timeout transaction within the standard weight (an upper
    /// bound: every output counted as P2TR, a 64-byte key-path signature): the timeouts are split
    /// along the tree where they must be, but a node with too many children, or a leaf with too
    /// many clients, cannot be made standard.
    pub(crate) fn check_sizes(&self) -> Result<(), FactoryError> {
        let check = |kind: TxKind, vsize: u64| {
            let weight = vsize * 4;
            if weight > MAX_STANDARD_TX_WEIGHT {
                return Err(FactoryError::TooLarge { kind, weight });
            }
            Ok(())
        };
        let timeouts = self.params.config.timeout_policy == TimeoutPolicy::Inverted;
        for n in self.tree.nodes() {
            let kick_outputs = match n.kind {
                NodeKind::Static => n.children.len(),
                _ => 1,
            };
            check(TxKind::Kickoff(n.id), tree_tx_vsize(kick_outputs, 1))?;
            if n.has_state() {
                check(TxKind::State(n.id), self.state_vsize(n.id))?;
            }
            if timeouts {
                // The timeout of the node's outputs, or of the part holding its clients' money.
                let vsize = if self.splits_timeout_at(n.id) {
                    tree_tx_vsize(n.children.len(), 0)
                } else {
                    tree_tx_vsize((n.clients.end - n.clients.start) as usize, 1)
                };
                check(TxKind::Timeout(Slot::NodeInput(n.id)), vsize)?;
            }
        }
        Ok(())
    }
}
