//! The exit package: everything a client's wallet must keep to leave the factory alone, with any
//! Bitcoin node, as JSON.

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{Amount, OutPoint, Txid};
use serde::{Deserialize, Serialize};
use superscalar_core::ceremony::SignedTx;
use superscalar_core::{ClientId, Factory, FactoryId, TxKind};

/// One transaction of an exit package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagedTx {
    /// Role in the tree (kickoff, state or timeout, with its node or output).
    pub role: String,
    /// Its txid.
    pub txid: Txid,
    /// Raw signed transaction, hex.
    pub hex: String,
    /// The transaction whose output it spends.
    pub parent: Txid,
    /// Blocks its parent must have been confirmed before it is valid (BIP68).
    pub relative_delay: u32,
    /// Height it must wait for (nLockTime + 1), if any.
    pub absolute_lock: Option<u32>,
    /// Virtual size.
    pub vbytes: u64,
    /// Fee it pays (sat).
    pub fee_sat: u64,
}

/// A client's signed exit path and timeout transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitPackage {
    /// The factory.
    pub factory: FactoryId,
    /// The client.
    pub client: u32,
    /// The funding output the path starts from.
    pub funding_outpoint: OutPoint,
    /// Its value (sat).
    pub funding_value_sat: u64,
    /// Its script, hex.
    pub funding_script: String,
    /// The exit path, in publishing order: only what the client broadcasts to exit.
    pub path: Vec<PackagedTx>,
    /// Timeout transactions of the outputs holding the client's money.
    pub timeouts: Vec<PackagedTx>,
    /// Punishments of stock outputs, pre-signed for when their version is superseded: each is
    /// completed only with the version's revocation secret, which the LSP reveals when it
    /// supersedes the version. Not part of the exit (a live version's secret is unknown to all
    /// but the LSP), not counted in its vbytes or fees; the watcher uses them.
    pub punishments: Vec<PackagedTx>,
    /// Total vbytes of the path.
    pub path_vbytes: u64,
    /// Total fees of the path (sat).
    pub path_fee_sat: u64,
}

fn packaged(s: &SignedTx) -> PackagedTx {
    let out: Amount = s.tx.output.iter().map(|o| o.value).sum();
    let input = s.tx.input.first();
    let seq = input.map_or(bitcoin::Sequence::MAX, |i| i.sequence);
    let relative_delay = if seq.is_relative_lock_time() && seq.is_height_locked() {
        seq.0 & 0xffff
    } else {
        0
    };
    let lock = s.tx.lock_time.to_consensus_u32();
    PackagedTx {
        role: match s.kind {
            TxKind::Kickoff(n) => format!("kickoff of node {}", n.0),
            TxKind::State(n) => format!("state of node {}", n.0),
            TxKind::Timeout(slot) => format!("timeout of {slot:?}"),
            TxKind::Sale(j) => format!("liquidity sale {j}"),
            TxKind::Punish(slot) => format!("punishment of {slot:?}"),
        },
        txid: s.tx.compute_txid(),
        hex: serialize_hex(&s.tx),
        parent: input.map_or(OutPoint::null().txid, |i| i.previous_output.txid),
        relative_delay,
        absolute_lock: (lock > 0).then_some(lock + 1),
        vbytes: s.tx.vsize() as u64,
        fee_sat: s.spent.value.to_sat().saturating_sub(out.to_sat()),
    }
}

impl ExitPackage {
    /// Assemble a client's package from its verified signed transactions.
    pub fn new(
        factory: &Factory,
        client: ClientId,
        funding_outpoint: OutPoint,
        signed: &[SignedTx],
    ) -> Self {
        let of = |keep: fn(&TxKind) -> bool| -> Vec<PackagedTx> {
            signed
                .iter()
                .filter(|s| keep(&s.kind))
                .map(packaged)
                .collect()
        };
        let path = of(|k| matches!(k, TxKind::Kickoff(_) | TxKind::State(_) | TxKind::Sale(_)));
        let timeouts = of(|k| matches!(k, TxKind::Timeout(_)));
        let punishments = of(|k| matches!(k, TxKind::Punish(_)));
        let funding = signed
            .iter()
            .find(|s| s.tx.input.first().map(|i| i.previous_output) == Some(funding_outpoint))
            .map(|s| s.spent.clone());
        ExitPackage {
            factory: factory.params().id,
            client: client.0,
            funding_outpoint,
            funding_value_sat: funding.as_ref().map_or(0, |f| f.value.to_sat()),
            funding_script: funding.map_or(String::new(), |f| f.script_pubkey.to_hex_string()),
            path_vbytes: path.iter().map(|p| p.vbytes).sum(),
            path_fee_sat: path.iter().map(|p| p.fee_sat).sum(),
            path,
            timeouts,
            punishments,
        }
    }

    /// As pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serializes")
    }
}
