//! Helpers for the chain tests: a key that owns mature coinbase coins and builds signed spends.
#![allow(dead_code)]

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, Secp256k1, TapTweak};
use bitcoin::script::Builder;
use bitcoin::secp256k1::{All, Message};
use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::taproot::{LeafVersion, TaprootBuilder, TaprootSpendInfo};
use bitcoin::{
    absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, TapSighashType, Transaction,
    TxIn, TxOut, Witness, XOnlyPublicKey,
};
use superscalar_chain::testkit::TestChain;
use superscalar_chain::Chain;

/// A key with taproot helpers.
pub struct Signer {
    pub secp: Secp256k1<All>,
    pub keypair: Keypair,
}

impl Signer {
    pub fn new(seed: u8) -> Self {
        let secp = Secp256k1::new();
        let keypair = Keypair::from_seckey_slice(&secp, &[seed; 32]).unwrap();
        Signer { secp, keypair }
    }

    pub fn xonly(&self) -> XOnlyPublicKey {
        self.keypair.x_only_public_key().0
    }

    /// Key-path-only P2TR output script.
    pub fn p2tr(&self) -> ScriptBuf {
        ScriptBuf::new_p2tr(&self.secp, self.xonly(), None)
    }

    /// A taproot output with one script leaf.
    pub fn leaf_output(&self, leaf: &ScriptBuf) -> (ScriptBuf, TaprootSpendInfo) {
        let info = TaprootBuilder::new()
            .add_leaf(0, leaf.clone())
            .unwrap()
            .finalize(&self.secp, self.xonly())
            .unwrap();
        (ScriptBuf::new_p2tr_tweaked(info.output_key()), info)
    }

    /// `<n> OP_CSV OP_DROP <key> OP_CHECKSIG`.
    pub fn csv_leaf(&self, blocks: u16) -> ScriptBuf {
        Builder::new()
            .push_int(i64::from(blocks))
            .push_opcode(bitcoin::opcodes::all::OP_CSV)
            .push_opcode(bitcoin::opcodes::all::OP_DROP)
            .push_x_only_key(&self.xonly())
            .push_opcode(bitcoin::opcodes::all::OP_CHECKSIG)
            .into_script()
    }

    /// `<height> OP_CLTV OP_DROP <key> OP_CHECKSIG`.
    pub fn cltv_leaf(&self, height: u32) -> ScriptBuf {
        Builder::new()
            .push_int(i64::from(height))
            .push_opcode(bitcoin::opcodes::all::OP_CLTV)
            .push_opcode(bitcoin::opcodes::all::OP_DROP)
            .push_x_only_key(&self.xonly())
            .push_opcode(bitcoin::opcodes::all::OP_CHECKSIG)
            .into_script()
    }

    /// Sign input `index` of `tx` on the key path (all `prevouts` must be this key's P2TR).
    pub fn sign_key_path(&self, tx: &mut Transaction, index: usize, prevouts: &[TxOut]) {
        let sighash = SighashCache::new(&*tx)
            .taproot_key_spend_signature_hash(
                index,
                &Prevouts::All(prevouts),
                TapSighashType::Default,
            )
            .unwrap();
        let tweaked = self.keypair.tap_tweak(&self.secp, None);
        let sig = self
            .secp
            .sign_schnorr_no_aux_rand(&Message::from(sighash), &tweaked.to_keypair());
        tx.input[index].witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
            signature: sig,
            sighash_type: TapSighashType::Default,
        });
    }

    /// Sign input `index` through `leaf` of `info`.
    pub fn sign_script_path(
        &self,
        tx: &mut Transaction,
        index: usize,
        prevouts: &[TxOut],
        leaf: &ScriptBuf,
        info: &TaprootSpendInfo,
    ) {
        let leaf_hash = bitcoin::TapLeafHash::from_script(leaf, LeafVersion::TapScript);
        let sighash = SighashCache::new(&*tx)
            .taproot_script_spend_signature_hash(
                index,
                &Prevouts::All(prevouts),
                leaf_hash,
                TapSighashType::Default,
            )
            .unwrap();
        let sig = self
            .secp
            .sign_schnorr_no_aux_rand(&Message::from(sighash), &self.keypair);
        let control = info
            .control_block(&(leaf.clone(), LeafVersion::TapScript))
            .unwrap();
        let mut w = Witness::new();
        w.push(sig.as_ref());
        w.push(leaf.as_bytes());
        w.push(control.serialize());
        tx.input[index].witness = w;
    }

    /// A one-input transaction from `prev` paying `outputs`, signed on the key path.
    pub fn spend(&self, prev: (OutPoint, TxOut), outputs: Vec<TxOut>, version: i32) -> Transaction {
        let mut tx = unsigned(vec![prev.0], outputs, version);
        self.sign_key_path(&mut tx, 0, &[prev.1]);
        tx
    }
}

/// An unsigned transaction with default sequence (RBF-free, locktime-enabled) and no lock time.
pub fn unsigned(inputs: Vec<OutPoint>, output: Vec<TxOut>, version: i32) -> Transaction {
    Transaction {
        version: transaction::Version(version),
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .into_iter()
            .map(|previous_output| TxIn {
                previous_output,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_LOCKTIME_NO_RBF,
                witness: Witness::new(),
            })
            .collect(),
        output,
    }
}

pub fn out(value: u64, script_pubkey: ScriptBuf) -> TxOut {
    TxOut {
        value: Amount::from_sat(value),
        script_pubkey,
    }
}

/// `chain` (fresh) with `n` mature coinbase coins (50 BTC each) owned by `signer`.
pub fn fund_chain(
    chain: TestChain,
    signer: &Signer,
    n: u32,
) -> (TestChain, Vec<(OutPoint, TxOut)>) {
    let hashes = chain.mine_blocks(n, &signer.p2tr()).unwrap();
    chain.mine_blocks(100, &burn()).unwrap();
    let coins = (1..=n)
        .map(|h| {
            let block = chain.block_at(h).unwrap().unwrap();
            assert_eq!(block.block_hash(), hashes[h as usize - 1]);
            let cb = &block.txdata[0];
            (OutPoint::new(cb.compute_txid(), 0), cb.output[0].clone())
        })
        .collect();
    (chain, coins)
}

/// An output script nobody in the test owns.
pub fn burn() -> ScriptBuf {
    ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([0x42; 32]))
}
