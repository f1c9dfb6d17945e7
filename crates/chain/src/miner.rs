//! Regtest block assembly: BIP34 coinbase, BIP141 witness commitment, regtest proof of work.

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::hashes::Hash;
use bitcoin::script::Builder;
use bitcoin::{
    absolute, transaction, Amount, Block, BlockHash, CompactTarget, OutPoint, Script, ScriptBuf,
    Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Witness,
};

/// Regtest's proof-of-work limit, which never retargets.
const REGTEST_BITS: u32 = 0x207f_ffff;
/// Blocks between subsidy halvings on regtest.
const REGTEST_HALVING_INTERVAL: u32 = 150;
/// Weight reserved for the coinbase when filling a block.
pub(crate) const COINBASE_WEIGHT_RESERVE: u64 = 4_000;

/// Block subsidy at `height` on regtest.
pub fn regtest_subsidy(height: u32) -> Amount {
    let halvings = height / REGTEST_HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat((50 * 100_000_000u64) >> halvings)
}

/// Everything needed to assemble one block.
pub(crate) struct Template<'a> {
    pub prev_hash: BlockHash,
    pub height: u32,
    pub time: u32,
    pub payout: &'a Script,
    pub fees: Amount,
    pub txs: Vec<Transaction>,
}

/// Assemble and mine a block.
pub(crate) fn assemble(t: Template<'_>) -> Block {
    // BIP34: the height first; the extra push keeps the scriptSig at least 2 bytes and unique.
    let script_sig = Builder::new()
        .push_int(i64::from(t.height))
        .push_slice(t.time.to_le_bytes())
        .into_script();
    let mut coinbase = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[[0u8; 32]]),
        }],
        output: vec![TxOut {
            value: regtest_subsidy(t.height) + t.fees,
            script_pubkey: t.payout.to_owned(),
        }],
    };
    let mut txdata = Vec::with_capacity(t.txs.len() + 1);
    txdata.push(coinbase.clone());
    txdata.extend(t.txs);
    // BIP141 commitment: OP_RETURN 0xaa21a9ed || SHA256d(witness root || reserved value).
    let mut block = Block {
        header: Header {
            version: BlockVersion::from_consensus(0x2000_0000),
            prev_blockhash: t.prev_hash,
            merkle_root: TxMerkleNode::all_zeros(),
            time: t.time,
            bits: CompactTarget::from_consensus(REGTEST_BITS),
            nonce: 0,
        },
        txdata,
    };
    if let Some(witness_root) = block.witness_root() {
        let commitment = Block::compute_witness_commitment(&witness_root, &[0u8; 32]);
        let mut data = [0u8; 36];
        data[..4].copy_from_slice(&[0xaa, 0x21, 0xa9, 0xed]);
        data[4..].copy_from_slice(commitment.as_byte_array());
        coinbase.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: ScriptBuf::new_op_return(data),
        });
        block.txdata[0] = coinbase;
    }
    block.header.merkle_root = block
        .compute_merkle_root()
        .expect("a block always has a coinbase");
    let target = block.header.target();
    while block.header.validate_pow(target).is_err() {
        block.header.nonce = block.header.nonce.wrapping_add(1);
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves_every_150_blocks() {
        assert_eq!(regtest_subsidy(1), Amount::from_btc(50.0).unwrap());
        assert_eq!(regtest_subsidy(149), Amount::from_btc(50.0).unwrap());
        assert_eq!(regtest_subsidy(150), Amount::from_btc(25.0).unwrap());
        assert_eq!(regtest_subsidy(150 * 64), Amount::ZERO);
    }
}
