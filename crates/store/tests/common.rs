//! Fixtures shared by the store's integration tests.
#![allow(dead_code)]

use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, Transaction, TxIn, TxOut};
use superscalar_store::*;

/// A transaction distinct for each `n`.
pub fn tx(n: u32) -> Transaction {
    Transaction {
        version: transaction::Version::non_standard(3),
        lock_time: absolute::LockTime::from_consensus(n),
        input: vec![TxIn::default()],
        output: vec![TxOut {
            value: Amount::from_sat(1000 + n as u64),
            script_pubkey: ScriptBuf::new(),
        }],
    }
}

/// Output `vout` of `tx(n)`.
pub fn outpoint(n: u32, vout: u32) -> OutPoint {
    OutPoint {
        txid: tx(n).compute_txid(),
        vout,
    }
}

/// A spend of something by `tx(n)`.
pub fn spend(n: u32) -> Spend {
    Spend {
        role: TxLabel::new("kickoff/0").unwrap(),
        sighash: [n as u8; 32],
        txid: tx(n).compute_txid(),
    }
}

/// A factory in formation.
pub fn factory(id: u8, key_index: KeyIndex) -> FactoryRecord {
    FactoryRecord {
        id: FactoryId([id; 32]),
        params: vec![id; 40],
        status: FactoryStatus::Forming,
        created_height: 200,
        timeout_height: 9000,
        funding: None,
        key_index,
    }
}

/// Cheap Argon2 costs for tests.
pub const TEST_KDF: KdfParams = KdfParams {
    m_cost_kib: 256,
    t_cost: 1,
    p_cost: 1,
};
