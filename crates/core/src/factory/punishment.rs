//! Punishment of superseded liquidity-stock versions (poison or burn), signed over the
//! hashlock leaf only.

use super::*;

impl Factory {
    /// The punishment of a superseded stock (or change) output worth `value` whose hashlock
    /// commits to `hash`, without its witness: poison pays the stock's clients evenly (falling
    /// back to burn when a share would be dust), burn leaves it all to miners.
    pub fn build_punishment(
        &self,
        slot: Slot,
        spends: OutPoint,
        value: Amount,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<Transaction, FactoryError> {
        let s = self
            .stock_index(slot, v)
            .ok_or_else(|| FactoryError::NoSuch(format!("punishment of {slot:?}")))?;
        let clients = self.stocks[s as usize].clients.clone();
        let burn = TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(b"superscalar stock punished"),
        };
        let mut tx = one_input_tx(
            spends,
            Sequence::ENABLE_LOCKTIME_NO_RBF,
            LockTime::ZERO,
            Vec::new(),
        );
        tx.version = transaction::Version::TWO;
        if self.params.config.punishment == Punishment::Poison {
            tx.output = clients
                .clone()
                .map(|c| TxOut {
                    value: Amount::ZERO,
                    script_pubkey: self.client_payout_script(ClientId(c)),
                })
                .collect();
            let vsize = self.punishment_vsize(&tx, slot, v, hash)?;
            let fee = self
                .params
                .config
                .fees
                .tree_fee_rate
                .fee_vb(vsize)
                .unwrap_or(Amount::MAX);
            let k = u64::from(clients.end - clients.start);
            let left = value.checked_sub(fee).map(|a| a.to_sat()).unwrap_or(0);
            if left / k >= P2TR_DUST.to_sat() {
                for (i, out) in tx.output.iter_mut().enumerate() {
                    out.value = Amount::from_sat(left / k + if i == 0 { left % k } else { 0 });
                }
                return Ok(tx);
            }
        }
        tx.output = vec![burn];
        Ok(tx)
    }

    pub(crate) fn punishment_vsize(
        &self,
        tx: &Transaction,
        slot: Slot,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<u64, FactoryError> {
        let (leaf, control) = self.revocation_path(slot, v, hash)?;
        let mut t = tx.clone();
        let mut w = Witness::new();
        w.push([0u8; 64]);
        w.push([0u8; 32]);
        w.push(leaf.as_bytes());
        w.push(control.serialize());
        t.input[0].witness = w;
        Ok(t.vsize() as u64)
    }

    /// The hashlock leaf of a stock or change output whose version has `hash`, and its control
    /// block.
    pub fn revocation_path(
        &self,
        slot: Slot,
        v: &Version,
        hash: &sha256::Hash,
    ) -> Result<(ScriptBuf, bitcoin::taproot::ControlBlock), FactoryError> {
        let s = self
            .stock_index(slot, v)
            .ok_or_else(|| FactoryError::NoSuch(format!("revocation path of {slot:?}")))?;
        // The output as it was at the version whose hash is `hash`.
        let mut at = v.clone();
        at.stocks[s as usize].hash = *hash;
        let info = self
            .spend_info(slot, &at)?
            .ok_or_else(|| FactoryError::NoSuch(format!("script tree of {slot:?}")))?;
        let leaf = self.revocation_leaf(slot, &at, hash)?;
        let control = control_block(&info, &leaf)
            .ok_or_else(|| FactoryError::NoSuch(format!("control block of {slot:?}")))?;
        Ok((leaf, control))
    }

    /// Complete a signed punishment with the revealed secret of the version it punishes.
    pub fn complete_punishment(
        &self,
        signed: &crate::ceremony::SignedTx,
        v: &Version,
        hash: &sha256::Hash,
        secret: &[u8; 32],
    ) -> Result<Transaction, FactoryError> {
        let TxKind::Punish(slot) = signed.kind else {
            return Err(FactoryError::NoSuch(format!(
                "{:?} is not a punishment",
                signed.kind
            )));
        };
        let (leaf, control) = self.revocation_path(slot, v, hash)?;
        let sig = signed.tx.input[0]
            .witness
            .nth(0)
            .ok_or_else(|| FactoryError::NoSuch("punishment signature".into()))?
            .to_vec();
        let mut tx = signed.tx.clone();
        let mut w = Witness::new();
        w.push(sig);
        w.push(secret);
        w.push(leaf.as_bytes());
        w.push(control.serialize());
        tx.input[0].witness = w;
        Ok(tx)
    }
}
