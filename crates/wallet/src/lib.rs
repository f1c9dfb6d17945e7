//! The on-chain wallet of the LSP and of clients: funding factories, CPFP children, payments.
//!
//! A BIP-86 taproot descriptor wallet (`bdk_wallet`) that learns about the chain only from blocks
//! and mempool transactions handed over through the [`Chain`] interface. [`Faucet`] pays mature
//! coinbase coins to such a wallet on regtest.

#![deny(missing_docs)]

mod faucet;

pub use faucet::{burn_script, Faucet};

use std::sync::Arc;

use bdk_wallet::chain::BlockId;
use bdk_wallet::error::CreateTxError;
use bdk_wallet::{KeychainKind, SignOptions, Wallet};
use bitcoin::bip32::Xpriv;
use bitcoin::psbt::Input as PsbtInput;
use bitcoin::{
    Address, Amount, FeeRate, Network, OutPoint, Script, ScriptBuf, Transaction, TxOut, Txid,
    Weight, Witness,
};
use superscalar_chain::{Chain, ChainError};
use thiserror::Error;

pub use bdk_wallet::Balance;

/// An error of the on-chain wallet.
#[derive(Debug, Error)]
pub enum WalletError {
    /// The chain backend failed or refused a transaction.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The wallet cannot pay what was asked.
    #[error("insufficient funds: need {needed}, have {available}")]
    InsufficientFunds {
        /// What the transaction needs, fees included.
        needed: Amount,
        /// What the wallet can spend.
        available: Amount,
    },
    /// The request is invalid (e.g. an amount below the dust limit).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The chain the wallet followed was reorganised below its checkpoint.
    #[error("the chain no longer contains the wallet's block at height {height}: rescan needed")]
    Reorg {
        /// Height of the block that no longer connects.
        height: u32,
    },
    /// Key or descriptor handling failed.
    #[error("key error: {0}")]
    Key(String),
}

/// Keys of a wallet: a BIP-32 master key on regtest.
fn descriptors(seed: &[u8; 32]) -> Result<(Xpriv, String, String), WalletError> {
    let xprv =
        Xpriv::new_master(Network::Regtest, seed).map_err(|e| WalletError::Key(e.to_string()))?;
    Ok((
        xprv,
        format!("tr({xprv}/86'/1'/0'/0/*)"),
        format!("tr({xprv}/86'/1'/0'/1/*)"),
    ))
}

/// How far ahead of the last used address the wallet watches for payments.
const LOOKAHEAD: u32 = 100;

/// A taproot descriptor wallet synchronised from a [`Chain`].
#[derive(Debug)]
pub struct OnchainWallet {
    wallet: Wallet,
    xprv: Xpriv,
}

impl OnchainWallet {
    /// A regtest wallet whose keys derive from `seed` (BIP-86 paths).
    pub fn from_seed(seed: [u8; 32]) -> Result<Self, WalletError> {
        let (xprv, external, internal) = descriptors(&seed)?;
        let wallet = Wallet::create(external, internal)
            .network(Network::Regtest)
            .lookahead(LOOKAHEAD)
            .create_wallet_no_persist()
            .map_err(|e| WalletError::Key(e.to_string()))?;
        Ok(OnchainWallet { wallet, xprv })
    }

    /// A fresh receive address.
    pub fn new_address(&mut self) -> Address {
        self.wallet
            .reveal_next_address(KeychainKind::External)
            .address
    }

    /// Whether an output script belongs to this wallet.
    pub fn is_mine(&self, script: &Script) -> bool {
        self.wallet.is_mine(script.to_owned())
    }

    /// Balance by category (confirmed, pending, immature coinbase).
    pub fn balance(&self) -> Balance {
        self.wallet.balance()
    }

    /// Height of the last block the wallet has seen.
    pub fn synced_height(&self) -> u32 {
        self.wallet.latest_checkpoint().height()
    }

    /// Spendable outputs.
    pub fn unspent(&self) -> Vec<(OutPoint, TxOut)> {
        self.wallet
            .list_unspent()
            .map(|u| (u.outpoint, u.txout))
            .collect()
    }

    /// Apply every block since the last sync, up to the chain's tip. Returns the new height.
    pub fn sync(&mut self, chain: &dyn Chain) -> Result<u32, WalletError> {
        let tip = chain.tip()?;
        let mut height = self.synced_height();
        while height < tip.height {
            let next = height + 1;
            let block = chain
                .block_at(next)?
                .ok_or(WalletError::Reorg { height: next })?;
            let prev = self.wallet.latest_checkpoint();
            if block.header.prev_blockhash != prev.hash() {
                return Err(WalletError::Reorg {
                    height: prev.height(),
                });
            }
            self.wallet
                .apply_block_connected_to(
                    &block,
                    next,
                    BlockId {
                        height: prev.height(),
                        hash: prev.hash(),
                    },
                )
                .map_err(|_| WalletError::Reorg { height: next })?;
            height = next;
        }
        Ok(height)
    }

    /// Tell the wallet about a transaction it just broadcast (its coins are spent, its change
    /// is pending).
    pub fn note_unconfirmed(&mut self, tx: &Transaction) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.wallet
            .apply_unconfirmed_txs([(Arc::new(tx.clone()), now)]);
    }

    /// Build and sign (without broadcasting) a payment of `amount` to `script` at `fee_rate`.
    pub fn build_payment(
        &mut self,
        script: &Script,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let mut builder = self.wallet.build_tx();
        builder
            .add_recipient(script.to_owned(), amount)
            .fee_rate(fee_rate);
        let psbt = builder.finish().map_err(create_err)?;
        self.sign(psbt)
    }

    /// Pay `amount` to `script`, broadcast through `chain`.
    pub fn send(
        &mut self,
        chain: &dyn Chain,
        script: &Script,
        amount: Amount,
        fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let tx = self.build_payment(script, amount, fee_rate)?;
        chain.submit_transaction(&tx)?;
        self.note_unconfirmed(&tx);
        Ok(tx)
    }

    /// Build and sign a v3 child that spends `parent`'s P2A anchor output `anchor_vout` plus wallet
    /// coins, so that parent and child together pay `package_fee_rate` (CPFP of a zero-fee parent).
    pub fn build_anchor_child(
        &mut self,
        parent: &Transaction,
        parent_fee: Amount,
        anchor_vout: u32,
        package_fee_rate: FeeRate,
    ) -> Result<Transaction, WalletError> {
        let anchor = parent
            .output
            .get(anchor_vout as usize)
            .filter(|o| superscalar_chain::policy::is_p2a(&o.script_pubkey))
            .ok_or_else(|| {
                WalletError::InvalidRequest(format!("output {anchor_vout} is not a P2A anchor"))
            })?
            .clone();
        let outpoint = OutPoint::new(parent.compute_txid(), anchor_vout);
        let parent_vsize = parent.vsize() as u64;
        // First pass to learn the child's size, second pass with the exact package fee.
        let mut fee = Amount::from_sat(1_000);
        for _ in 0..3 {
            let child = self.anchor_child_with_fee(outpoint, &anchor, fee)?;
            let needed = package_fee_rate
                .fee_vb(parent_vsize + child.vsize() as u64)
                .ok_or_else(|| WalletError::InvalidRequest("fee rate overflow".into()))?;
            let child_fee = needed.checked_sub(parent_fee).unwrap_or(Amount::ZERO);
            if child_fee == fee {
                return Ok(child);
            }
            fee = child_fee.max(Amount::from_sat(1));
        }
        self.anchor_child_with_fee(outpoint, &anchor, fee)
    }

    fn anchor_child_with_fee(
        &mut self,
        anchor: OutPoint,
        anchor_out: &TxOut,
        fee: Amount,
    ) -> Result<Transaction, WalletError> {
        let input = PsbtInput {
            witness_utxo: Some(anchor_out.clone()),
            ..Default::default()
        };
        let change = self
            .wallet
            .next_unused_address(KeychainKind::Internal)
            .script_pubkey();
        let mut builder = self.wallet.build_tx();
        // A TRUC child may have one unconfirmed ancestor only (its parent): spend confirmed coins.
        builder.exclude_below_confirmations(1);
        builder
            .version(3)
            .only_witness_utxo()
            .add_foreign_utxo(anchor, input, Weight::ZERO)
            .map_err(|e| WalletError::InvalidRequest(e.to_string()))?;
        builder.drain_to(change).fee_absolute(fee);
        let mut psbt = builder.finish().map_err(create_err)?;
        let index = psbt
            .unsigned_tx
            .input
            .iter()
            .position(|i| i.previous_output == anchor)
            .ok_or_else(|| WalletError::InvalidRequest("anchor input dropped".into()))?;
        // A P2A anchor is spent with an empty witness.
        psbt.inputs[index].final_script_witness = Some(Witness::new());
        self.sign(psbt)
    }

    /// Sign every input of `tx`, all of which must spend this wallet's unspent outputs.
    pub fn sign_transaction(&mut self, tx: Transaction) -> Result<Transaction, WalletError> {
        let mut unsigned = tx;
        for input in &mut unsigned.input {
            input.witness = Witness::new();
            input.script_sig = ScriptBuf::new();
        }
        let mut psbt = bitcoin::Psbt::from_unsigned_tx(unsigned)
            .map_err(|e| WalletError::InvalidRequest(e.to_string()))?;
        for (i, txin) in psbt.unsigned_tx.input.clone().iter().enumerate() {
            let utxo = self.wallet.get_utxo(txin.previous_output).ok_or_else(|| {
                WalletError::InvalidRequest(format!(
                    "input {i} spends {}, which is not an unspent output of this wallet",
                    txin.previous_output
                ))
            })?;
            psbt.inputs[i] = self
                .wallet
                .get_psbt_input(utxo, None, true)
                .map_err(create_err)?;
        }
        self.sign(psbt)
    }

    fn sign(&mut self, mut psbt: bitcoin::Psbt) -> Result<Transaction, WalletError> {
        if let Err((_, errors)) = psbt.sign(&self.xprv, self.wallet.secp_ctx()) {
            // Inputs finalized beforehand (a P2A anchor) need no key; anything else is an error.
            if let Some((i, e)) = errors
                .iter()
                .find(|(i, _)| psbt.inputs[**i].final_script_witness.is_none())
            {
                return Err(WalletError::Key(format!("cannot sign input {i}: {e}")));
            }
        }
        let finalized = self
            .wallet
            .finalize_psbt(&mut psbt, SignOptions::default())
            .map_err(|e| WalletError::Key(e.to_string()))?;
        if !finalized {
            return Err(WalletError::Key(
                "the wallet could not sign every input".into(),
            ));
        }
        psbt.extract_tx()
            .map_err(|e| WalletError::Key(e.to_string()))
    }

    /// Submit a zero-fee parent with a child built by [`Self::build_anchor_child`].
    pub fn broadcast_package(
        &mut self,
        chain: &dyn Chain,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), WalletError> {
        let acc = chain.submit_package(parent, child)?;
        self.note_unconfirmed(child);
        Ok((acc.parent, acc.child))
    }

    /// A fresh receive script.
    pub fn new_script(&mut self) -> ScriptBuf {
        self.new_address().script_pubkey()
    }

    /// Fee a wallet transaction paid, when all its inputs are known to the wallet.
    pub fn fee_of(&self, tx: &Transaction) -> Option<Amount> {
        self.wallet.calculate_fee(tx).ok()
    }
}

fn create_err(e: CreateTxError) -> WalletError {
    match e {
        CreateTxError::CoinSelection(f) => WalletError::InsufficientFunds {
            needed: f.needed,
            available: f.available,
        },
        other => WalletError::InvalidRequest(other.to_string()),
    }
}
