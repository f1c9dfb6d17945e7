//! `sweep`: what the factory paid this client on chain (its cooperative close output, timeout
//! payouts, its balance claimed from a commitment, what is left of its fee coin) goes to an
//! address of the user's own wallet in one transaction. Every such output pays the client's
//! payout script (a key-path P2TR of its factory key), so the client finds them by scanning its
//! own chain from the factory's creation (or `from_height`) and keeps those still unspent.

use bitcoin::{Address, FeeRate, OutPoint, TxOut};
use serde_json::{json, Value};
use superscalar_api::ApiError;
use superscalar_chain::Chain;

use super::Client;

/// The most blocks one sweep scans (about a month on mainnet): `from_height` narrows it.
const MAX_SCAN_BLOCKS: u32 = 5_000;

impl Client {
    /// Sweeps every unspent output paying our payout script to `address`.
    pub(super) fn sweep(&mut self, params: &Value) -> Result<Value, ApiError> {
        let text = params
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_params("address: where to send the coins"))?;
        let destination = text
            .parse::<Address<_>>()
            .map_err(|e| ApiError::invalid_params(format!("address {text:?}: {e}")))?
            .require_network(self.config.network)
            .map_err(|e| ApiError::invalid_params(format!("address {text:?}: {e}")))?
            .script_pubkey();
        let fee_rate = match params.get("fee_rate") {
            None | Some(Value::Null) => FeeRate::from_sat_per_vb_u32(2),
            Some(v) => v
                .as_u64()
                .filter(|r| (1..=10_000).contains(r))
                .map(|r| FeeRate::from_sat_per_vb_u32(r as u32))
                .ok_or_else(|| {
                    ApiError::invalid_params("fee_rate: sat/vB, a whole number from 1 to 10000")
                })?,
        };
        let f = self
            .factory
            .as_ref()
            .ok_or_else(|| ApiError::app(-2, "not in a factory: nothing of ours on chain"))?;
        let payout = f.factory.client_payout_script(f.position);
        let key_index = f.key_index;
        let created = f.factory.params().creation_height;
        let tip = self
            .chain(|c| c.tip())
            .map_err(|e| ApiError::app(-5, format!("no chain view: {e}")))?
            .height;
        let from = match params.get("from_height") {
            None | Some(Value::Null) => created,
            Some(v) => v
                .as_u64()
                .filter(|h| *h <= u64::from(tip))
                .map(|h| h as u32)
                .ok_or_else(|| {
                    ApiError::invalid_params(format!("from_height: a height up to the tip {tip}"))
                })?,
        };
        if tip - from.min(tip) > MAX_SCAN_BLOCKS {
            return Err(ApiError::invalid_params(format!(
                "from_height: more than {MAX_SCAN_BLOCKS} blocks to scan from {from}; give a \
                 later one"
            )));
        }
        let mut found: Vec<(OutPoint, TxOut)> = Vec::new();
        for height in from..=tip {
            let block = self
                .chain(|c| c.block_at(height))
                .map_err(|e| ApiError::app(-5, format!("block {height}: {e}")))?;
            let Some(block) = block else { continue };
            for tx in &block.txdata {
                let txid = tx.compute_txid();
                for (vout, o) in tx.output.iter().enumerate() {
                    if o.script_pubkey == payout {
                        found.push((OutPoint::new(txid, vout as u32), o.clone()));
                    }
                }
            }
        }
        let mut coins = Vec::new();
        for (op, o) in found {
            if matches!(self.chain(|c| c.get_utxo(&op)), Ok(Some(_))) {
                coins.push((op, o));
            }
        }
        let keypair = self
            .keys
            .factory_key(key_index)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let tx =
            crate::bump::sweep_own_coins(&coins, &keypair, destination, fee_rate).map_err(|e| {
                ApiError::app(
                    -4,
                    format!("{e} (confirmed outputs to our payout from block {from})"),
                )
            })?;
        let txid = self
            .chain(|c| c.submit_transaction(&tx))
            .map_err(|e| ApiError::app(-5, format!("the sweep was refused: {e}")))?;
        let total: bitcoin::Amount = coins.iter().map(|(_, o)| o.value).sum();
        let amount = tx.output[0].value;
        self.log(format!(
            "swept {} coins ({} sat) to {text} in {txid}",
            coins.len(),
            amount.to_sat()
        ));
        Ok(json!({
            "txid": txid.to_string(),
            "inputs": coins.iter().map(|(o, _)| o.to_string()).collect::<Vec<_>>(),
            "amount_sat": amount.to_sat(),
            "fee_sat": (total - amount).to_sat(),
        }))
    }
}
