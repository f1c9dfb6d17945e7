//! Keys and scripts of every output of a factory.

use super::*;

impl Factory {
    /// Whether `slot` exists in version `v`.
    pub fn check_slot(&self, slot: Slot, v: &Version) -> Result<(), FactoryError> {
        let ok = match slot {
            Slot::NodeInput(n) => (n.0 as usize) < self.tree.nodes().len(),
            Slot::KickoffOut(n) => {
                (n.0 as usize) < self.tree.nodes().len() && self.tree.node(n).has_state()
            }
            Slot::Channel(c) | Slot::FeeCoin(c) => (c.0 as usize) < self.params.clients.len(),
            Slot::Stock(s) => (s as usize) < self.stocks.len() && (s as usize) < v.stocks.len(),
            Slot::Sold(j) => (j as usize) < v.sales.len(),
            Slot::Change(j) => v.sales.get(j as usize).is_some_and(|s| !s.merged),
            Slot::TimeoutPart { .. } => self.is_timeout_part(slot),
        };
        if ok {
            Ok(())
        } else {
            Err(FactoryError::NoSuch(format!("{slot:?}")))
        }
    }

    /// The stock output a stock or change slot belongs to.
    pub(crate) fn stock_index(&self, slot: Slot, v: &Version) -> Option<u32> {
        match slot {
            Slot::Stock(s) => Some(s),
            Slot::Change(j) => v.sales.get(j as usize).map(|s| s.stock),
            _ => None,
        }
    }

    /// The public keys that must sign to spend `slot` on the key path (LSP first).
    pub fn signers(&self, slot: Slot, v: &Version) -> Vec<Signer> {
        let clients: Vec<ClientId> = match slot {
            Slot::NodeInput(n) | Slot::KickoffOut(n) | Slot::TimeoutPart { node: n, .. } => {
                self.tree.node(n).client_ids().collect()
            }
            Slot::Channel(c) => vec![c],
            Slot::Sold(j) => v
                .sales
                .get(j as usize)
                .map(|s| s.buyer)
                .into_iter()
                .collect(),
            Slot::FeeCoin(c) => return vec![Signer::Client(c)],
            Slot::Stock(_) | Slot::Change(_) => match self.stock_index(slot, v) {
                Some(s) => self.stocks[s as usize]
                    .clients
                    .clone()
                    .map(ClientId)
                    .collect(),
                None => Vec::new(),
            },
        };
        std::iter::once(Signer::Lsp)
            .chain(clients.into_iter().map(Signer::Client))
            .collect()
    }

    /// The public key of a signer.
    pub fn key_of(&self, signer: Signer) -> PublicKey {
        match signer {
            Signer::Lsp => self.params.lsp_key,
            Signer::Client(c) => self.params.clients[c.0 as usize].key,
        }
    }

    pub(crate) fn aggregate(&self, slot: Slot, v: &Version) -> Result<&AggregateKey, FactoryError> {
        self.check_slot(slot, v)?;
        let cell = match slot {
            // A timeout part is held by the same signers as its node's outputs.
            Slot::NodeInput(n) | Slot::KickoffOut(n) | Slot::TimeoutPart { node: n, .. } => {
                &self.node_keys[n.0 as usize]
            }
            Slot::Channel(c) => &self.channel_keys[c.0 as usize],
            // A sold channel is MuSig2(LSP, buyer), like the buyer's first channel.
            Slot::Sold(j) => &self.channel_keys[v.sales[j as usize].buyer.0 as usize],
            Slot::Stock(_) | Slot::Change(_) => {
                let s = self.stock_index(slot, v).expect("checked above");
                &self.stock_keys[s as usize]
            }
            Slot::FeeCoin(_) => {
                return Err(MusigError::Keys("a fee coin is single-key".into()).into())
            }
        };
        if let Some(k) = cell.get() {
            return Ok(k);
        }
        let key = Box::new(self.aggregate_signers(&self.signers(slot, v))?);
        Ok(cell.get_or_init(|| key))
    }

    /// `<T-1> OP_CLTV OP_DROP <LSP> OP_CHECKSIG`: the LSP's sweep after the timeout.
    pub fn sweep_leaf(&self) -> ScriptBuf {
        Builder::new()
            .push_int(i64::from(self.timeout_height - 1))
            .push_opcode(OP_CLTV)
            .push_opcode(OP_DROP)
            .push_x_only_key(&self.params.lsp_key.inner.x_only_public_key().0)
            .push_opcode(OP_CHECKSIG)
            .into_script()
    }

    /// `<stock_csv> OP_CSV OP_DROP <LSP> OP_CHECKSIG`: the LSP takes its stock after a delay.
    pub fn stock_leaf(&self) -> ScriptBuf {
        Builder::new()
            .push_int(i64::from(self.params.config.stock_csv))
            .push_opcode(OP_CSV)
            .push_opcode(OP_DROP)
            .push_x_only_key(&self.params.lsp_key.inner.x_only_public_key().0)
            .push_opcode(OP_CHECKSIG)
            .into_script()
    }

    /// The hashlock leaf of a stock or change output whose version has revocation hash `hash`.
    pub fn revocation_leaf(
        &self,
        slot: Slot,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<ScriptBuf, FactoryError> {
        Ok(hashlock_leaf(
            hash,
            &self.aggregate(slot, v)?.internal_key(),
        ))
    }

    /// The revocation hash in a stock or change output's hashlock leaf at version `v`.
    pub fn revocation_hash(&self, slot: Slot, v: &Version) -> Option<sha256::Hash> {
        let s = self.stock_index(slot, v)?;
        v.stocks.get(s as usize).map(|sv| sv.hash)
    }

    /// The script leaves of an output.
    pub fn leaves(&self, slot: Slot, v: &Version) -> Result<Vec<ScriptBuf>, FactoryError> {
        self.check_slot(slot, v)?;
        let sweep = self.params.config.timeout_policy == TimeoutPolicy::LspSweep;
        let mut leaves = Vec::new();
        match slot {
            Slot::NodeInput(n) => {
                // The funding output and state outputs carry the sweep; kickoff outputs do not.
                let from_state = match self.tree.node(n).parent {
                    None => true,
                    Some(p) => self.tree.node(p).has_state(),
                };
                if sweep && from_state {
                    leaves.push(self.sweep_leaf());
                }
            }
            Slot::KickoffOut(_) | Slot::FeeCoin(_) | Slot::TimeoutPart { .. } => {}
            Slot::Channel(_) | Slot::Sold(_) => {
                if sweep {
                    leaves.push(self.sweep_leaf());
                }
            }
            Slot::Stock(_) | Slot::Change(_) => {
                let hash = self
                    .revocation_hash(slot, v)
                    .ok_or_else(|| FactoryError::NoSuch(format!("revocation hash of {slot:?}")))?;
                leaves.push(self.stock_leaf());
                leaves.push(self.revocation_leaf(slot, v, &hash)?);
                if sweep {
                    leaves.push(self.sweep_leaf());
                }
            }
        }
        Ok(leaves)
    }

    /// Taproot spend info of an output with script leaves (internal key = the MuSig2 key).
    pub fn spend_info(
        &self,
        slot: Slot,
        v: &Version,
    ) -> Result<Option<TaprootSpendInfo>, FactoryError> {
        let leaves = self.leaves(slot, v)?;
        if leaves.is_empty() {
            return Ok(None);
        }
        let internal = self.aggregate(slot, v)?.internal_key();
        let secp = Secp256k1::verification_only();
        TaprootBuilder::with_huffman_tree(leaves.into_iter().map(|l| (1, l)))
            .map_err(|e| MusigError::Keys(e.to_string()))?
            .finalize(&secp, internal)
            .map(Some)
            .map_err(|_| MusigError::Keys("taproot tree".into()).into())
    }

    /// The key that signs key-path spends of `slot` at version `v` (MuSig2, taproot-tweaked).
    pub fn signing_key_at(
        &self,
        slot: Slot,
        v: &Version,
    ) -> Result<TweakedAggregateKey, FactoryError> {
        let root = self.merkle_root(slot, v)?;
        self.tweaked_key(self.aggregate(slot, v)?, root)
    }

    /// The key that signs key-path spends of `slot` in the initial version.
    pub fn signing_key(&self, slot: Slot) -> Result<TweakedAggregateKey, FactoryError> {
        self.signing_key_at(slot, &self.initial_version())
    }

    /// The output script of `slot` at version `v`.
    pub fn script_pubkey_at(&self, slot: Slot, v: &Version) -> Result<ScriptBuf, FactoryError> {
        if let Some(hinted) = self.hinted_script(slot) {
            return Ok(hinted);
        }
        if let Slot::FeeCoin(c) = slot {
            self.check_slot(slot, v)?;
            return Ok(self.fee_coin_script(c));
        }
        let key = self.signing_key_at(slot, v)?.output_key();
        Ok(ScriptBuf::new_p2tr_tweaked(
            TweakedPublicKey::dangerous_assume_tweaked(key),
        ))
    }

    /// The output script of `slot` in the initial version.
    pub fn script_pubkey(&self, slot: Slot) -> Result<ScriptBuf, FactoryError> {
        self.script_pubkey_at(slot, &self.initial_version())
    }

    /// The script of a client's fee coin: a key-path-only P2TR of its factory key, whatever its
    /// payout script, so that the client can always spend it to bump its own transactions with
    /// the key it signs the factory with.
    pub fn fee_coin_script(&self, client: ClientId) -> ScriptBuf {
        self.cached_fee_coin_script(client, || {
            crate::secp::count(|c| c.tweak_add += 1);
            let key = self.params.clients[client.0 as usize].key;
            ScriptBuf::new_p2tr(&*crate::secp::SECP, key.inner.x_only_public_key().0, None)
        })
    }

    /// Where a client's timeout payouts go.
    pub fn client_payout_script(&self, client: ClientId) -> ScriptBuf {
        self.params.clients[client.0 as usize].payout.clone()
    }

    /// The LSP's sweep of `slot` through its `<T-1> CLTV` leaf (lsp-sweep policy): a transaction
    /// with nLockTime T-1 paying `destination`, signed with the LSP's key.
    #[allow(clippy::too_many_arguments)]
    pub fn lsp_sweep(
        &self,
        slot: Slot,
        v: &Version,
        outpoint: OutPoint,
        value: Amount,
        destination: ScriptBuf,
        fee: Amount,
        lsp: &bitcoin::key::Keypair,
    ) -> Result<Transaction, FactoryError> {
        let lock = LockTime::from_height(self.timeout_height - 1)
            .map_err(|_| ShapeError::Amount("timeout height".into()))?;
        let spend = LeafSpend {
            leaf: self.sweep_leaf(),
            sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
            lock,
        };
        self.lsp_leaf_spend(slot, v, spend, outpoint, value, destination, fee, lsp)
    }

    /// The LSP's sweep of a stock (or PS change) output `slot` of version `v` through its
    /// `<stock_csv> CSV` leaf, once that output has `stock_csv` confirmations: paying
    /// `destination`, signed with the LSP's key. Before T this is how the LSP keeps its stock
    /// from a leaf that went on chain (at T the inverted timeouts would pay it to the clients).
    #[allow(clippy::too_many_arguments)]
    pub fn stock_sweep(
        &self,
        slot: Slot,
        v: &Version,
        outpoint: OutPoint,
        value: Amount,
        destination: ScriptBuf,
        fee: Amount,
        lsp: &bitcoin::key::Keypair,
    ) -> Result<Transaction, FactoryError> {
        if !matches!(slot, Slot::Stock(_) | Slot::Change(_)) {
            return Err(ShapeError::Amount(format!("{slot:?} is not a stock output")).into());
        }
        let spend = LeafSpend {
            leaf: self.stock_leaf(),
            sequence: Sequence::from_height(self.params.config.stock_csv),
            lock: LockTime::ZERO,
        };
        self.lsp_leaf_spend(slot, v, spend, outpoint, value, destination, fee, lsp)
    }

    /// A one-input, one-output spend of `slot` through the LSP's script leaf `spend.leaf`.
    #[allow(clippy::too_many_arguments)]
    fn lsp_leaf_spend(
        &self,
        slot: Slot,
        v: &Version,
        spend: LeafSpend,
        outpoint: OutPoint,
        value: Amount,
        destination: ScriptBuf,
        fee: Amount,
        lsp: &bitcoin::key::Keypair,
    ) -> Result<Transaction, FactoryError> {
        let leaf = spend.leaf;
        let has_leaf = self.leaves(slot, v)?.contains(&leaf);
        let info = self
            .spend_info(slot, v)?
            .filter(|_| has_leaf)
            .ok_or_else(|| ShapeError::Amount(format!("{slot:?} has no such leaf")))?;
        let spent = TxOut {
            value,
            script_pubkey: self.script_pubkey_at(slot, v)?,
        };
        let out_value = value
            .checked_sub(fee)
            .filter(|v| *v >= P2TR_DUST)
            .ok_or_else(|| ShapeError::Amount(format!("fee {fee} leaves dust from {value}")))?;
        let mut tx = one_input_tx(
            outpoint,
            spend.sequence,
            spend.lock,
            vec![TxOut {
                value: out_value,
                script_pubkey: destination,
            }],
        );
        tx.version = transaction::Version::TWO;
        let leaf_hash = bitcoin::TapLeafHash::from_script(&leaf, LeafVersion::TapScript);
        let sighash = SighashCache::new(&tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(&[spent]),
                leaf_hash,
                TapSighashType::Default,
            )
            .map_err(|e| ShapeError::Amount(e.to_string()))?;
        let secp = Secp256k1::signing_only();
        let sig = secp.sign_schnorr(
            &bitcoin::secp256k1::Message::from_digest(sighash.to_byte_array()),
            lsp,
        );
        let control = control_block(&info, &leaf)
            .ok_or_else(|| ShapeError::Amount("control block".into()))?;
        let mut w = Witness::new();
        w.push(sig.as_ref());
        w.push(leaf.as_bytes());
        w.push(control.serialize());
        tx.input[0].witness = w;
        Ok(tx)
    }
}

/// Which leaf of an output the LSP spends alone, with which sequence and lock time.
struct LeafSpend {
    leaf: ScriptBuf,
    sequence: Sequence,
    lock: LockTime,
}

/// Spend info helper for tests and the LSP's sweep: the control block of `leaf`.
pub fn control_block(
    info: &TaprootSpendInfo,
    leaf: &ScriptBuf,
) -> Option<bitcoin::taproot::ControlBlock> {
    info.control_block(&(leaf.clone(), LeafVersion::TapScript))
}
