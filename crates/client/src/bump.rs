//! Paying for a zero-fee transaction with the client's own fee coin (the coin the factory gives
//! every client inside its leaf), through the transaction's P2A anchor.

use bitcoin::key::{Keypair, TapTweak};
use bitcoin::secp256k1::{Message, Secp256k1};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::{
    absolute, transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, TapSighashType,
    Transaction, TxIn, TxOut, Witness,
};
use thiserror::Error;

/// A bump that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BumpError {
    /// The parent has no P2A anchor.
    #[error("the transaction has no P2A anchor")]
    NoAnchor,
    /// The outputs given do not match the inputs to sign.
    #[error("the spent outputs do not match the transaction's inputs")]
    WrongPrevouts,
    /// The fee coin cannot pay the package fee and leave a non-dust output.
    #[error("the fee coin ({coin}) cannot pay {needed} and keep a non-dust change")]
    CoinTooSmall {
        /// The coin's value.
        coin: Amount,
        /// The fee needed.
        needed: Amount,
    },
}

/// A v3 child spending `parent`'s anchor and the client's fee coin (a key-path P2TR of `key`),
/// paying `destination` the change, so that parent and child together pay `package_rate`.
pub fn fee_coin_child(
    parent: &Transaction,
    parent_fee: Amount,
    coin: (OutPoint, TxOut),
    key: &Keypair,
    destination: ScriptBuf,
    package_rate: FeeRate,
) -> Result<Transaction, BumpError> {
    let vout = parent
        .output
        .iter()
        .position(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey))
        .ok_or(BumpError::NoAnchor)? as u32;
    let anchor = parent.output[vout as usize].clone();
    let mut tx = Transaction {
        version: transaction::Version(3),
        lock_time: absolute::LockTime::ZERO,
        input: vec![
            TxIn {
                previous_output: OutPoint::new(parent.compute_txid(), vout),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
                witness: Witness::new(),
            },
            TxIn {
                previous_output: coin.0,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
                witness: Witness::new(),
            },
        ],
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: destination,
        }],
    };
    // Anchor input: empty witness; fee-coin input: one 64-byte signature.
    let child_vsize = (tx.weight().to_wu() + 2 + 66).div_ceil(4);
    let total_vsize = parent.vsize() as u64 + child_vsize;
    let needed = package_rate
        .fee_vb(total_vsize)
        .unwrap_or(Amount::MAX)
        .checked_sub(parent_fee)
        .unwrap_or(Amount::ZERO);
    let value = (coin.1.value + anchor.value)
        .checked_sub(needed)
        .filter(|v| *v >= Amount::from_sat(330))
        .ok_or(BumpError::CoinTooSmall {
            coin: coin.1.value,
            needed,
        })?;
    tx.output[0].value = value;
    let prevouts = [anchor, coin.1];
    let sighash = SighashCache::new(&tx)
        .taproot_key_spend_signature_hash(1, &Prevouts::All(&prevouts), TapSighashType::Default)
        .expect("two inputs, two prevouts");
    let secp = Secp256k1::new();
    let tweaked = key.tap_tweak(&secp, None);
    let sig = secp.sign_schnorr(&Message::from(sighash), &tweaked.to_keypair());
    tx.input[1].witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
        signature: sig,
        sighash_type: TapSighashType::Default,
    });
    Ok(tx)
}

/// A v3 child spending `parent`'s output `vout`, the client's own payout (a key-path P2TR of
/// `key`), paying `destination` the rest, so that parent and child together pay `package_rate`:
/// how a client bumps a transaction that pays it but has no anchor (a timeout that pays the
/// tree's fee rate).
pub fn own_output_child(
    parent: &Transaction,
    parent_fee: Amount,
    vout: u32,
    key: &Keypair,
    destination: ScriptBuf,
    package_rate: FeeRate,
) -> Result<Transaction, BumpError> {
    let spent = parent
        .output
        .get(vout as usize)
        .cloned()
        .ok_or(BumpError::WrongPrevouts)?;
    let mut tx = Transaction {
        version: transaction::Version(3),
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(parent.compute_txid(), vout),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: destination,
        }],
    };
    // One key-path input: a 64-byte signature.
    let child_vsize = (tx.weight().to_wu() + 2 + 66).div_ceil(4);
    let needed = package_rate
        .fee_vb(parent.vsize() as u64 + child_vsize)
        .unwrap_or(Amount::MAX)
        .checked_sub(parent_fee)
        .unwrap_or(Amount::ZERO);
    tx.output[0].value = spent
        .value
        .checked_sub(needed)
        .filter(|v| *v >= tx.output[0].script_pubkey.minimal_non_dust())
        .ok_or(BumpError::CoinTooSmall {
            coin: spent.value,
            needed,
        })?;
    sign_key_path_input(&mut tx, 0, &[spent], key)?;
    Ok(tx)
}

/// Sign input `index` of `tx`, a key-path spend of `key`'s BIP-86 output, over `prevouts` (the
/// output each input spends, in order).
pub fn sign_key_path_input(
    tx: &mut Transaction,
    index: usize,
    prevouts: &[TxOut],
    key: &Keypair,
) -> Result<(), BumpError> {
    if index >= tx.input.len() || prevouts.len() != tx.input.len() {
        return Err(BumpError::WrongPrevouts);
    }
    let sighash = SighashCache::new(&*tx)
        .taproot_key_spend_signature_hash(index, &Prevouts::All(prevouts), TapSighashType::Default)
        .map_err(|_| BumpError::WrongPrevouts)?;
    let secp = Secp256k1::new();
    let tweaked = key.tap_tweak(&secp, None);
    let sig = secp.sign_schnorr(&Message::from(sighash), &tweaked.to_keypair());
    tx.input[index].witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
        signature: sig,
        sighash_type: TapSighashType::Default,
    });
    Ok(())
}

/// A sweep that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SweepError {
    /// No coin to spend.
    #[error("nothing to sweep")]
    NoCoins,
    /// The coins cannot pay the fee and leave a non-dust output.
    #[error("the coins ({total}) cannot pay the fee of {fee} and leave more than dust")]
    TooSmall {
        /// What the coins hold.
        total: Amount,
        /// The sweep's fee.
        fee: Amount,
    },
}

/// A version-2 transaction spending `coins` (key-path P2TR outputs of `key`: the client's payout
/// and fee coins) in full to `destination`, at `fee_rate`.
pub fn sweep_own_coins(
    coins: &[(OutPoint, TxOut)],
    key: &Keypair,
    destination: ScriptBuf,
    fee_rate: FeeRate,
) -> Result<Transaction, SweepError> {
    if coins.is_empty() {
        return Err(SweepError::NoCoins);
    }
    let total: Amount = coins.iter().map(|(_, o)| o.value).sum();
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: coins
            .iter()
            .map(|(op, _)| TxIn {
                previous_output: *op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: destination,
        }],
    };
    // One 64-byte signature per input, with its witness item count and length.
    let vsize = (tx.weight().to_wu() + 2 + 66 * coins.len() as u64).div_ceil(4);
    let fee = fee_rate.fee_vb(vsize).unwrap_or(Amount::MAX);
    let dust = tx.output[0].script_pubkey.minimal_non_dust();
    tx.output[0].value = total
        .checked_sub(fee)
        .filter(|v| *v >= dust)
        .ok_or(SweepError::TooSmall { total, fee })?;
    let prevouts: Vec<TxOut> = coins.iter().map(|(_, o)| o.clone()).collect();
    let secp = Secp256k1::new();
    let tweaked = key.tap_tweak(&secp, None).to_keypair();
    let mut cache = SighashCache::new(tx.clone());
    for i in 0..coins.len() {
        let sighash = cache
            .taproot_key_spend_signature_hash(i, &Prevouts::All(&prevouts), TapSighashType::Default)
            .expect("one prevout per input");
        let sig = secp.sign_schnorr(&Message::from(sighash), &tweaked);
        tx.input[i].witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
            signature: sig,
            sighash_type: TapSighashType::Default,
        });
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn coin(i: u8, sat: u64, key: &Keypair) -> (OutPoint, TxOut) {
        let secp = Secp256k1::new();
        let spk = ScriptBuf::new_p2tr(&secp, key.x_only_public_key().0, None);
        (
            OutPoint::new(bitcoin::Txid::from_byte_array([i; 32]), u32::from(i)),
            TxOut {
                value: Amount::from_sat(sat),
                script_pubkey: spk,
            },
        )
    }

    #[test]
    fn a_sweep_spends_every_coin_signed_and_refuses_dust_or_nothing() {
        let secp = Secp256k1::new();
        let key = Keypair::from_seckey_slice(&secp, &[7; 32]).unwrap();
        let dest = coin(9, 0, &key).1.script_pubkey;
        let rate = FeeRate::from_sat_per_vb_u32(2);
        let coins = [coin(1, 10_000, &key), coin(2, 5_000, &key)];
        let tx = sweep_own_coins(&coins, &key, dest.clone(), rate).unwrap();
        assert_eq!(tx.input.len(), 2);
        let fee = Amount::from_sat(15_000) - tx.output[0].value;
        // The fee estimate is the signed size.
        assert_eq!(fee, rate.fee_vb(tx.vsize() as u64).unwrap());
        for (i, input) in tx.input.iter().enumerate() {
            assert_eq!(input.previous_output, coins[i].0);
            assert_eq!(input.witness.len(), 1);
            assert_eq!(input.witness.nth(0).unwrap().len(), 64);
        }
        assert_eq!(
            sweep_own_coins(&[], &key, dest.clone(), rate),
            Err(SweepError::NoCoins)
        );
        assert!(matches!(
            sweep_own_coins(&[coin(3, 400, &key)], &key, dest, rate),
            Err(SweepError::TooSmall { .. })
        ));
    }
}
