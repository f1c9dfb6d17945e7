//! Key handover (ZmnSCPxj's assisted exit): a client of a dying factory hands the LSP its private
//! key of that factory, atomically with being paid what it holds there. Once every client has
//! handed over, the LSP alone signs the old factory's key path (its close, or the rotation that
//! funds the next factory), and nobody has to be online at the same time as anybody else.
//!
//! The exchange is a point-time-locked contract whose point is the client's old factory key `X`:
//!
//! - The LSP locks the client's amount in a [`HandoverContract`]: a taproot output with no key
//!   path (BIP-341's NUMS internal key) and two leaves, `<client> CHECKSIGVERIFY <LSP> CHECKSIG`
//!   (the claim) and `<refund height> CHECKLOCKTIMEVERIFY DROP <LSP> CHECKSIG` (the refund).
//! - It gives the client a [`HandoverOffer`]: the claim transaction (the contract's value less its
//!   fee, to the client's payout script) and its own BIP-340 signature of it *encrypted* under
//!   `X` (an adaptor signature, `schnorr_fun`): valid once, and only once, the discrete log of
//!   `X`, the old factory key, is added to it.
//! - The client checks the offer ([`HandoverOffer::verify`]) against its own records: the
//!   contract's scripts and keys, the amount it is owed, the payout, the refund height far enough
//!   ahead, and that the encrypted signature verifies under the LSP's key for exactly this claim
//!   and exactly `X`. It then completes the signature with its old key
//!   ([`HandoverOffer::complete`]) and may broadcast the claim, or hand the key to the LSP
//!   directly.
//! - The LSP reads the old key out of any claim ([`HandoverOffer::recover_key`]): the completed
//!   signature minus the encrypted one is the key.
//!
//! Why it is atomic. The client cannot take the money without revealing the key: the claim leaf
//! needs the LSP's signature of the claim transaction, the client holds it only encrypted under
//! `X`, and the one way to decrypt it (adding the discrete log of `X`) publishes, in the witness,
//! a signature from which anyone holding the encrypted one subtracts the key; a changed claim
//! (another output, amount or fee) has another sighash, for which the client has nothing. The
//! LSP cannot take the key without paying: the key exists outside the client only in a complete
//! signature of a claim transaction, and every such transaction pays the client; until the refund
//! height the LSP has no other way to spend the contract, and the client claims before it (the
//! offer is refused when the refund height leaves it less than [`MIN_CLAIM_WINDOW`] blocks).
//! The old factory key is a hardened child of the client's seed (one per factory), so revealing
//! it reveals nothing about its other keys.
//!
//! Handing over the key gives the LSP everything that key controls in the old factory (its
//! channel's key path with the LSP, its fee coin, its timeout payouts): the amount locked must be
//! all the client holds there ([`crate::Factory::client_close_amount`] of its balances, fee coin
//! included), and the client must have given up its old channel's balance (moved to the LSP by a
//! channel update, the previous state revoked) before it completes the signature, so that an exit
//! of its own afterwards pays it nothing the LSP did not already pay. This module is the
//! contract's on-chain form: the same exchange inside a channel of the new factory (a PTLC there,
//! resolved off chain when both sides are online) is not built yet.

use bitcoin::absolute::LockTime;
use bitcoin::key::{Keypair, PublicKey, Secp256k1, XOnlyPublicKey};
use bitcoin::opcodes::all::{OP_CHECKSIG, OP_CHECKSIGVERIFY, OP_CLTV, OP_DROP};
use bitcoin::script::Builder;
use bitcoin::secp256k1::{schnorr, Message, SecretKey};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::taproot::{LeafVersion, TaprootBuilder, TaprootSpendInfo};
use bitcoin::{
    transaction, Amount, FeeRate, OutPoint, ScriptBuf, Sequence, TapLeafHash, Transaction, TxIn,
    TxOut, Witness,
};
use schnorr_fun::adaptor::{Adaptor, EncryptedSign, EncryptedSignature};
use schnorr_fun::fun::marker::{EvenY, NonZero, Normal, Public, Secret, Zero};
use schnorr_fun::fun::{Point, Scalar};
use thiserror::Error;

/// Blocks a client wants between now and the contract's refund height to get its claim
/// confirmed (BOLT 2's `cltv_expiry_delta` order of magnitude).
pub const MIN_CLAIM_WINDOW: u32 = 36;

/// BIP-341's NUMS point (`H`): an internal key with no known private key, so the contract has
/// no key path.
const NUMS: [u8; 32] = [
    0x50, 0x92, 0x9b, 0x74, 0xc1, 0xa0, 0x49, 0x54, 0xb7, 0x8b, 0x4b, 0x60, 0x35, 0xe9, 0x7a, 0x5e,
    0x07, 0x8a, 0x5a, 0x0f, 0x28, 0xec, 0x96, 0xd5, 0x47, 0xbf, 0xee, 0x9a, 0xce, 0x80, 0x3a, 0xc0,
];

/// Why a handover step is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandoverError {
    /// The offer's contract is not the one the client expects.
    #[error("the contract is not the one expected: {0}")]
    WrongContract(&'static str),
    /// The claim does not pay what the client is owed, to its payout.
    #[error("the claim pays {offered} to its payout, {expected} is owed")]
    WrongAmount {
        /// What the client is owed, less the claim's fee at its fee rate.
        expected: Amount,
        /// What the claim pays.
        offered: Amount,
    },
    /// The claim is not a one-input spend of the contract paying the client's payout.
    #[error("the claim transaction is malformed: {0}")]
    BadClaim(&'static str),
    /// The refund height leaves the client too little time to claim.
    #[error("refund at height {refund}, the client needs until at least {needed}")]
    RefundTooSoon {
        /// The contract's refund height.
        refund: u32,
        /// The least the client accepts.
        needed: u32,
    },
    /// The encrypted signature does not verify for this claim, key and encryption point.
    #[error("the LSP's encrypted signature does not verify")]
    BadAdaptor,
    /// The key given to complete the signature is not the old factory key.
    #[error("the key does not match the old factory key the offer is encrypted under")]
    WrongKey,
    /// Bytes that do not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// The on-chain contract of a key handover (see the module's rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverContract {
    /// The LSP's key (signs the claim, encrypted, and the refund).
    pub lsp: XOnlyPublicKey,
    /// The client's key in the new factory (signs the claim).
    pub client: XOnlyPublicKey,
    /// The LSP may take the contract back in the blocks after this height (its refund's
    /// nLockTime).
    pub refund_height: u32,
    /// The amount locked: all the client holds in the old factory.
    pub value: Amount,
}

impl HandoverContract {
    /// `<client> OP_CHECKSIGVERIFY <LSP> OP_CHECKSIG`.
    pub fn claim_leaf(&self) -> ScriptBuf {
        Builder::new()
            .push_x_only_key(&self.client)
            .push_opcode(OP_CHECKSIGVERIFY)
            .push_x_only_key(&self.lsp)
            .push_opcode(OP_CHECKSIG)
            .into_script()
    }

    /// `<refund height> OP_CLTV OP_DROP <LSP> OP_CHECKSIG`.
    pub fn refund_leaf(&self) -> ScriptBuf {
        Builder::new()
            .push_int(i64::from(self.refund_height))
            .push_opcode(OP_CLTV)
            .push_opcode(OP_DROP)
            .push_x_only_key(&self.lsp)
            .push_opcode(OP_CHECKSIG)
            .into_script()
    }

    fn spend_info(&self) -> TaprootSpendInfo {
        let secp = Secp256k1::verification_only();
        let nums = XOnlyPublicKey::from_slice(&NUMS).expect("BIP-341's NUMS point is valid");
        TaprootBuilder::new()
            .add_leaf(1, self.claim_leaf())
            .and_then(|b| b.add_leaf(1, self.refund_leaf()))
            .expect("two leaves at depth 1")
            .finalize(&secp, nums)
            .expect("a complete tree")
    }

    /// The contract's output script.
    pub fn script_pubkey(&self) -> ScriptBuf {
        let secp = Secp256k1::verification_only();
        let info = self.spend_info();
        ScriptBuf::new_p2tr(&secp, info.internal_key(), info.merkle_root())
    }

    /// The contract's output.
    pub fn output(&self) -> TxOut {
        TxOut {
            value: self.value,
            script_pubkey: self.script_pubkey(),
        }
    }

    fn control_block(&self, leaf: &ScriptBuf) -> Vec<u8> {
        self.spend_info()
            .control_block(&(leaf.clone(), LeafVersion::TapScript))
            .expect("the leaf is in the tree")
            .serialize()
    }

    /// The claim transaction spending the contract at `outpoint`: the value less the fee at
    /// `fee_rate` on its signed size, to `payout`.
    pub fn claim_tx(
        &self,
        outpoint: OutPoint,
        payout: ScriptBuf,
        fee_rate: FeeRate,
    ) -> Transaction {
        let mut tx = one_input(outpoint, Sequence::ENABLE_RBF_NO_LOCKTIME, LockTime::ZERO);
        tx.output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey: payout,
        });
        tx.output[0].value = self
            .value
            .checked_sub(
                fee_rate
                    .fee_vb(self.claim_vsize(&tx))
                    .unwrap_or(Amount::MAX_MONEY),
            )
            .unwrap_or(Amount::ZERO);
        tx
    }

    /// The signed size of a claim `tx` (two signatures, the leaf and its control block).
    fn claim_vsize(&self, tx: &Transaction) -> u64 {
        let mut signed = tx.clone();
        signed.input[0].witness = self.claim_witness(&[0; 64], &[0; 64]);
        signed.vsize() as u64
    }

    fn claim_witness(&self, lsp_sig: &[u8; 64], client_sig: &[u8; 64]) -> Witness {
        let leaf = self.claim_leaf();
        let mut w = Witness::new();
        w.push(lsp_sig);
        w.push(client_sig);
        w.push(leaf.as_bytes());
        w.push(self.control_block(&leaf));
        w
    }

    /// The BIP-341 script-path sighash of `tx` (spending the contract) for `leaf`.
    fn sighash(&self, tx: &Transaction, leaf: &ScriptBuf) -> [u8; 32] {
        let leaf_hash = TapLeafHash::from_script(leaf, LeafVersion::TapScript);
        SighashCache::new(tx)
            .taproot_script_spend_signature_hash(
                0,
                &Prevouts::All(&[self.output()]),
                leaf_hash,
                TapSighashType::Default,
            )
            .map(bitcoin::hashes::Hash::to_byte_array)
            .unwrap_or([0; 32])
    }

    /// The LSP's refund of the contract at `outpoint` to `to`, signed (valid in the blocks after
    /// the refund height).
    pub fn refund_tx(
        &self,
        outpoint: OutPoint,
        to: ScriptBuf,
        fee: Amount,
        lsp: &Keypair,
    ) -> Result<Transaction, HandoverError> {
        let lock = LockTime::from_height(self.refund_height)
            .map_err(|_| HandoverError::WrongContract("the refund height is not a height"))?;
        let mut tx = one_input(outpoint, Sequence::ENABLE_LOCKTIME_NO_RBF, lock);
        tx.output.push(TxOut {
            value: self
                .value
                .checked_sub(fee)
                .ok_or(HandoverError::BadClaim("the fee exceeds the contract"))?,
            script_pubkey: to,
        });
        let leaf = self.refund_leaf();
        let secp = Secp256k1::new();
        let sig = secp.sign_schnorr(&Message::from_digest(self.sighash(&tx, &leaf)), lsp);
        let mut w = Witness::new();
        w.push(sig.as_ref());
        w.push(leaf.as_bytes());
        w.push(self.control_block(&leaf));
        tx.input[0].witness = w;
        Ok(tx)
    }
}

fn one_input(outpoint: OutPoint, sequence: Sequence, lock_time: LockTime) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time,
        input: vec![TxIn {
            previous_output: outpoint,
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        }],
        output: Vec::new(),
    }
}

/// What the LSP sends a client to start its handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverOffer {
    /// The contract.
    pub contract: HandoverContract,
    /// The claim transaction (unsigned).
    pub claim: Transaction,
    /// The client's old factory key, the point the LSP's signature is encrypted under.
    pub old_key: PublicKey,
    /// The LSP's encrypted signature of the claim: 32-byte nonce (x-only), 32-byte encrypted
    /// scalar, one byte whether the decryption key is negated.
    pub encrypted: [u8; 65],
}

/// What a client checks an offer against: its own records and chain view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverExpectation {
    /// The LSP's key it knows.
    pub lsp: XOnlyPublicKey,
    /// Its own key in the new factory.
    pub client: XOnlyPublicKey,
    /// Its key in the old factory, the one it hands over.
    pub old_key: PublicKey,
    /// What it holds in the old factory (balances and fee coin).
    pub owed: Amount,
    /// Where the claim must pay.
    pub payout: ScriptBuf,
    /// The outpoint of the contract, which its chain view shows confirmed with the contract's
    /// output.
    pub outpoint: OutPoint,
    /// The most fee rate it lets the claim pay (the fee comes out of its amount).
    pub max_fee_rate: FeeRate,
    /// The chain's tip height now.
    pub tip: u32,
}

type Schnorr =
    schnorr_fun::Schnorr<sha2::Sha256, schnorr_fun::fun::nonce::Deterministic<sha2::Sha256>>;

fn schnorr() -> Schnorr {
    schnorr_fun::new_with_deterministic_nonces::<sha2::Sha256>()
}

fn point(key: &PublicKey) -> Result<Point<Normal, Public, NonZero>, HandoverError> {
    Point::from_bytes(key.inner.serialize()).ok_or(HandoverError::Malformed("point"))
}

fn scalar(key: &SecretKey) -> Result<Scalar<Secret, NonZero>, HandoverError> {
    Scalar::from_bytes(key.secret_bytes())
        .and_then(|s| s.non_zero())
        .ok_or(HandoverError::Malformed("secret key"))
}

impl HandoverOffer {
    /// The LSP's offer: the claim of the contract at `outpoint` paying `payout` at `fee_rate`,
    /// its signature encrypted under the client's `old_key`.
    pub fn new(
        contract: HandoverContract,
        outpoint: OutPoint,
        payout: ScriptBuf,
        fee_rate: FeeRate,
        lsp: &Keypair,
        old_key: PublicKey,
    ) -> Result<Self, HandoverError> {
        if lsp.x_only_public_key().0 != contract.lsp {
            return Err(HandoverError::WrongContract(
                "the LSP key is not the contract's",
            ));
        }
        let claim = contract.claim_tx(outpoint, payout, fee_rate);
        let msg = contract.sighash(&claim, &contract.claim_leaf());
        let s = schnorr();
        let keypair = s.new_keypair(scalar(&lsp.secret_key())?);
        let enc = s.encrypted_sign(&keypair, &point(&old_key)?, schnorr_fun::Message::raw(&msg));
        let mut encrypted = [0u8; 65];
        encrypted[..32].copy_from_slice(&enc.R.to_xonly_bytes());
        encrypted[32..64].copy_from_slice(&enc.s_hat.to_bytes());
        encrypted[64] = u8::from(enc.needs_negation);
        Ok(HandoverOffer {
            contract,
            claim,
            old_key,
            encrypted,
        })
    }

    fn encrypted_signature(&self) -> Result<EncryptedSignature, HandoverError> {
        let r: [u8; 32] = self.encrypted[..32].try_into().expect("32 bytes");
        let s: [u8; 32] = self.encrypted[32..64].try_into().expect("32 bytes");
        Ok(EncryptedSignature {
            R: Point::<EvenY, Public>::from_xonly_bytes(r)
                .ok_or(HandoverError::Malformed("encrypted signature nonce"))?,
            s_hat: Scalar::<Public, Zero>::from_bytes(s)
                .ok_or(HandoverError::Malformed("encrypted signature scalar"))?,
            needs_negation: match self.encrypted[64] {
                0 => false,
                1 => true,
                _ => return Err(HandoverError::Malformed("encrypted signature flag")),
            },
        })
    }

    /// The client's check of the offer against its records (see the module's rules).
    pub fn verify(&self, expected: &HandoverExpectation) -> Result<(), HandoverError> {
        let c = &self.contract;
        if c.lsp != expected.lsp {
            return Err(HandoverError::WrongContract("another LSP key"));
        }
        if c.client != expected.client {
            return Err(HandoverError::WrongContract("another client key"));
        }
        if self.old_key != expected.old_key {
            return Err(HandoverError::WrongKey);
        }
        if c.value != expected.owed {
            return Err(HandoverError::WrongAmount {
                expected: expected.owed,
                offered: c.value,
            });
        }
        let needed = expected.tip.saturating_add(MIN_CLAIM_WINDOW);
        if c.refund_height < needed {
            return Err(HandoverError::RefundTooSoon {
                refund: c.refund_height,
                needed,
            });
        }
        // The claim must be exactly what the client would build itself, at a fee rate it
        // accepts.
        let tx = &self.claim;
        if tx.input.len() != 1 || tx.output.len() != 1 {
            return Err(HandoverError::BadClaim("one input and one output"));
        }
        if tx.input[0].previous_output != expected.outpoint {
            return Err(HandoverError::BadClaim("it does not spend the contract"));
        }
        if tx.output[0].script_pubkey != expected.payout {
            return Err(HandoverError::BadClaim(
                "it does not pay the client's payout",
            ));
        }
        let fee = c
            .value
            .checked_sub(tx.output[0].value)
            .ok_or(HandoverError::BadClaim("it pays more than the contract"))?;
        let most = expected
            .max_fee_rate
            .fee_vb(c.claim_vsize(tx))
            .unwrap_or(Amount::MAX_MONEY);
        if fee > most {
            return Err(HandoverError::WrongAmount {
                expected: c.value - most,
                offered: tx.output[0].value,
            });
        }
        let rebuilt = {
            let mut t = one_input(
                expected.outpoint,
                Sequence::ENABLE_RBF_NO_LOCKTIME,
                LockTime::ZERO,
            );
            t.output = tx.output.clone();
            t
        };
        if rebuilt != *tx {
            return Err(HandoverError::BadClaim("not the standard claim"));
        }
        let msg = c.sighash(tx, &c.claim_leaf());
        let s = schnorr();
        let lsp_point = Point::<EvenY, Public>::from_xonly_bytes(c.lsp.serialize())
            .ok_or(HandoverError::Malformed("LSP key"))?;
        if !s.verify_encrypted_signature(
            &lsp_point,
            &point(&self.old_key)?,
            schnorr_fun::Message::raw(&msg),
            &self.encrypted_signature()?,
        ) {
            return Err(HandoverError::BadAdaptor);
        }
        Ok(())
    }

    /// The client's completed claim: the LSP's signature decrypted with the old factory key
    /// `old` (which it reveals), and its own with its new key `client`.
    pub fn complete(
        &self,
        old: &SecretKey,
        client: &Keypair,
    ) -> Result<Transaction, HandoverError> {
        let secp = Secp256k1::new();
        if PublicKey::new(old.public_key(&secp)) != self.old_key {
            return Err(HandoverError::WrongKey);
        }
        self.complete_with(old, client)
    }

    /// [`HandoverOffer::complete`] without checking the key (what a cheating client would try).
    #[doc(hidden)]
    pub fn complete_with(
        &self,
        old: &SecretKey,
        client: &Keypair,
    ) -> Result<Transaction, HandoverError> {
        let c = &self.contract;
        let msg = c.sighash(&self.claim, &c.claim_leaf());
        let lsp_sig = schnorr()
            .decrypt_signature(scalar(old)?, self.encrypted_signature()?)
            .to_bytes();
        let secp = Secp256k1::new();
        let client_sig = secp.sign_schnorr(&Message::from_digest(msg), client);
        let mut tx = self.claim.clone();
        tx.input[0].witness = c.claim_witness(&lsp_sig, client_sig.as_ref());
        Ok(tx)
    }

    /// The old factory key, read by the LSP out of a claim of this contract seen on chain (or
    /// `None` when `tx` carries no completion of its encrypted signature).
    pub fn recover_key(&self, tx: &Transaction) -> Option<SecretKey> {
        let input = tx
            .input
            .iter()
            .find(|i| i.previous_output == self.claim.input[0].previous_output)?;
        let sig: [u8; 64] = input.witness.nth(0)?.try_into().ok()?;
        let sig = schnorr_fun::Signature::from_bytes(sig)?;
        let key = schnorr().recover_decryption_key(
            &point(&self.old_key).ok()?,
            &self.encrypted_signature().ok()?,
            &sig,
        )?;
        let secret = SecretKey::from_slice(&key.to_bytes()).ok()?;
        let secp = Secp256k1::new();
        (PublicKey::new(secret.public_key(&secp)) == self.old_key).then_some(secret)
    }

    /// The LSP's BIP-340 signature in a completed claim, checked against its key.
    pub fn lsp_signature(&self, tx: &Transaction) -> Option<schnorr::Signature> {
        let sig = schnorr::Signature::from_slice(tx.input.first()?.witness.nth(0)?).ok()?;
        let c = &self.contract;
        let msg = Message::from_digest(c.sighash(&self.claim, &c.claim_leaf()));
        Secp256k1::verification_only()
            .verify_schnorr(&sig, &msg, &c.lsp)
            .ok()
            .map(|_| sig)
    }
}
