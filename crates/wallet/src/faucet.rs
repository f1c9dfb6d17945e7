//! A regtest faucet: a wallet that owns mature coinbase coins and pays them out.

use bitcoin::{Address, Amount, FeeRate, ScriptBuf, Transaction};
use superscalar_chain::{Chain, ChainError};

use crate::{OnchainWallet, WalletError};

/// Blocks after which a coinbase output may be spent.
const COINBASE_MATURITY: u32 = 100;

/// Owner of regtest block rewards, paying test and demo wallets.
#[derive(Debug)]
pub struct Faucet {
    wallet: OnchainWallet,
}

impl Faucet {
    /// Mine `blocks` rewards to a new faucet wallet and mature them (mines `blocks + 100` blocks).
    pub fn new(chain: &dyn Chain, blocks: u32) -> Result<Self, WalletError> {
        if blocks == 0 {
            return Err(WalletError::InvalidRequest(
                "a faucet needs at least one block reward".into(),
            ));
        }
        let mut wallet = OnchainWallet::from_seed([0xfa; 32])?;
        let script = wallet.new_script();
        chain.mine_blocks(blocks, &script)?;
        chain.mine_blocks(COINBASE_MATURITY, &burn_script())?;
        wallet.sync(chain)?;
        Ok(Faucet { wallet })
    }

    /// Confirmed coins the faucet can still pay out.
    pub fn available(&self) -> Amount {
        self.wallet.balance().confirmed
    }

    /// Pay `amount` to `address` (in the mempool; mine to confirm).
    pub fn pay(
        &mut self,
        chain: &dyn Chain,
        address: &Address,
        amount: Amount,
    ) -> Result<Transaction, WalletError> {
        self.wallet.sync(chain)?;
        self.wallet.send(
            chain,
            &address.script_pubkey(),
            amount,
            FeeRate::from_sat_per_vb_u32(2),
        )
    }

    /// Pay `amount` to `address` and confirm it in a block.
    pub fn fund(
        &mut self,
        chain: &dyn Chain,
        address: &Address,
        amount: Amount,
    ) -> Result<Transaction, WalletError> {
        let tx = self.pay(chain, address, amount)?;
        chain.mine_blocks(1, &burn_script())?;
        self.wallet.sync(chain)?;
        Ok(tx)
    }

    /// Mine `count` blocks whose rewards go nowhere useful.
    pub fn mine(&mut self, chain: &dyn Chain, count: u32) -> Result<(), ChainError> {
        chain.mine_blocks(count, &burn_script()).map(|_| ())
    }
}

/// An output script nobody holds keys for (P2WSH of a hash with no known preimage script).
pub fn burn_script() -> ScriptBuf {
    use bitcoin::hashes::Hash;
    ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([0x5a; 32]))
}
