//! Factory configuration: tree shape, leaf kind, Decker-Wattenhofer layers, timeout policy, fees.

use bitcoin::{Amount, FeeRate, Network};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest Decker-Wattenhofer layer.
pub const MAX_STATES_PER_LAYER: u16 = 256;
/// Smallest `step_blocks` allowed on mainnet (one day).
pub const MAINNET_MIN_STEP_BLOCKS: u16 = 144;
/// Default ceiling on the worst-case exit time, the usual `max-cltv` of Lightning nodes.
pub const DEFAULT_EWT_CEILING: u32 = 2016;
/// Value of a P2A anchor on a fee-paying tree transaction (not dust: 240 sat).
pub const ANCHOR_VALUE: Amount = Amount::from_sat(240);

/// What the leaves of the tree hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeafKind {
    /// Decker-Wattenhofer leaf: LSP + 2 clients, two channels and one liquidity-stock output.
    Dw,
    /// Pseudo-Spilman leaf of arity k: k^2 clients (k^2 channels) in k PS factories of k clients,
    /// each PS-factory output being that group's liquidity stock.
    PseudoSpilman {
        /// Clients per PS factory and PS factories per leaf (k >= 2).
        arity: u8,
    },
}

impl LeafKind {
    /// Clients one leaf holds at most.
    pub fn clients_per_leaf(&self) -> u32 {
        match self {
            LeafKind::Dw => 2,
            LeafKind::PseudoSpilman { arity } => u32::from(*arity) * u32::from(*arity),
        }
    }

    /// Clients that share one stock output.
    pub fn clients_per_stock(&self) -> u32 {
        match self {
            LeafKind::Dw => 2,
            LeafKind::PseudoSpilman { arity } => u32::from(*arity),
        }
    }
}

/// What happens at the factory's absolute timeout T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TimeoutPolicy {
    /// Pre-signed transactions with nLockTime at T pay the clients (capacities and stock shares),
    /// nothing to the LSP (ZmnSCPxj's revised design; the default).
    #[default]
    Inverted,
    /// A `<T> CLTV DROP <LSP> CHECKSIG` leaf lets the LSP alone take the funding and state outputs
    /// after T (the original timeout-sig-tree).
    LspSweep,
}

/// The shape of a factory tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Arity of each level from the root down; the last entry repeats when more levels are needed,
    /// and levels that are not needed are dropped from the bottom.
    pub arity: Vec<u8>,
    /// Number of levels near the root that are kickoff-only (no Decker-Wattenhofer layer).
    pub static_levels: u8,
    /// What the leaves hold.
    pub leaf: LeafKind,
    /// States per Decker-Wattenhofer layer (2..=256).
    pub states_per_layer: u16,
    /// Blocks of relative delay between two consecutive states of a layer.
    pub step_blocks: u16,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            arity: vec![8, 4, 2],
            static_levels: 0,
            leaf: LeafKind::Dw,
            states_per_layer: 4,
            step_blocks: MAINNET_MIN_STEP_BLOCKS,
        }
    }
}

/// Endogenous fees of the tree transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeePolicy {
    /// Fee rate of kickoffs and of the first state of each layer.
    pub tree_fee_rate: FeeRate,
    /// Extra fee rate each newer state of a layer pays over the previous one.
    pub state_fee_step: FeeRate,
}

impl Default for FeePolicy {
    fn default() -> Self {
        FeePolicy {
            tree_fee_rate: FeeRate::from_sat_per_vb_u32(2),
            state_fee_step: FeeRate::from_sat_per_vb_u32(1),
        }
    }
}

/// Everything that configures a factory besides its parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryConfig {
    /// Tree shape.
    pub shape: Shape,
    /// Timeout policy.
    pub timeout_policy: TimeoutPolicy,
    /// Blocks the factory is active (clients transact).
    pub active_blocks: u32,
    /// Blocks the factory is dying (clients migrate out).
    pub dying_blocks: u32,
    /// Blocks budgeted for each transaction of an exit path to confirm.
    pub confirmation_budget: u32,
    /// Refuse shapes whose worst-case exit time exceeds this many blocks.
    pub ewt_ceiling: u32,
    /// Endogenous fees.
    pub fees: FeePolicy,
    /// Liquidity stock the LSP allocates per client (the leaf's stock is this times its clients).
    pub stock_per_client: Amount,
    /// The coin each client gets in its leaf to bump its channel's zero-fee commitment.
    pub client_fee_coin: Amount,
    /// Relative delay before the LSP may take a stock output alone.
    pub stock_csv: u16,
    /// Network the factory lives on (mainnet enforces `step_blocks >= 144`).
    pub network: Network,
    /// What the punishment of a superseded liquidity-stock version does with the stock.
    #[serde(default)]
    pub punishment: Punishment,
}

/// What happens to a superseded liquidity-stock output published on chain.
///
/// The default is [`Punishment::Poison`]: the stock goes to the clients who share it, so the
/// clients an old state would have hurt are the ones compensated (ZmnSCPxj, Delving t/1242).
/// Its protection is diluted when the LSP controls some of those clients (sockpuppets), and a
/// client may profit from publishing an old state itself while the LSP is offline; an LSP that
/// fears the latter more than it wants to compensate clients chooses [`Punishment::Burn`], which
/// gives the stock to miners (t/1143 #13) and so rewards nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Punishment {
    /// Split the stock evenly among the clients of that stock output.
    #[default]
    Poison,
    /// Burn the stock to miner fees (one zero-value OP_RETURN output).
    Burn,
}

impl Default for FactoryConfig {
    fn default() -> Self {
        FactoryConfig {
            shape: Shape::default(),
            timeout_policy: TimeoutPolicy::Inverted,
            active_blocks: 4320,
            dying_blocks: 432,
            confirmation_budget: 6,
            ewt_ceiling: DEFAULT_EWT_CEILING,
            fees: FeePolicy::default(),
            stock_per_client: Amount::from_sat(100_000),
            client_fee_coin: Amount::from_sat(10_000),
            stock_csv: 144,
            network: Network::Bitcoin,
            punishment: Punishment::Poison,
        }
    }
}

impl FactoryConfig {
    /// A configuration for regtest with short delays (tests and the demo).
    pub fn regtest() -> Self {
        FactoryConfig {
            shape: Shape {
                step_blocks: 2,
                ..Shape::default()
            },
            active_blocks: 20,
            dying_blocks: 5,
            confirmation_budget: 2,
            stock_csv: 3,
            network: Network::Regtest,
            ..FactoryConfig::default()
        }
    }
}

/// A configuration that cannot make a safe factory.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShapeError {
    /// A factory needs at least one client.
    #[error("a factory needs at least one client")]
    NoClients,
    /// An arity below 1 or an empty arity list.
    #[error(
        "invalid arity list {0:?}: every level needs arity >= 1 and the list must not be empty"
    )]
    Arity(Vec<u8>),
    /// PS leaves need k >= 2.
    #[error("pseudo-Spilman leaves need arity >= 2 (got {0}); with one client a PS factory is pointless")]
    PsArity(u8),
    /// `states_per_layer` outside 2..=256.
    #[error("states_per_layer must be in 2..=256 (got {0})")]
    StatesPerLayer(u16),
    /// `step_blocks` is zero, or below 144 on mainnet.
    #[error("step_blocks {step} is too small on {network} (minimum {min})")]
    StepBlocks {
        /// The requested step.
        step: u16,
        /// The network.
        network: Network,
        /// The minimum.
        min: u16,
    },
    /// The worst-case exit time is above the ceiling.
    #[error("worst-case exit time {ewt} blocks exceeds the ceiling of {ceiling}: use fewer Decker-Wattenhofer layers (static levels, wider arity), fewer states per layer or a smaller step")]
    EwtAboveCeiling {
        /// The computed EWT_max.
        ewt: u32,
        /// The ceiling.
        ceiling: u32,
    },
    /// An amount that cannot work (dust, zero capacity, overflow).
    #[error("invalid amount: {0}")]
    Amount(String),
    /// Too many clients for one factory.
    #[error("{0} clients is more than the supported maximum of {max}", max = crate::tree::MAX_CLIENTS)]
    TooManyClients(usize),
}

impl Shape {
    /// Check the shape on its own.
    pub fn validate(&self, network: Network) -> Result<(), ShapeError> {
        if self.arity.is_empty() || self.arity.contains(&0) {
            return Err(ShapeError::Arity(self.arity.clone()));
        }
        if let LeafKind::PseudoSpilman { arity } = self.leaf {
            if arity < 2 {
                return Err(ShapeError::PsArity(arity));
            }
        }
        if !(2..=MAX_STATES_PER_LAYER).contains(&self.states_per_layer) {
            return Err(ShapeError::StatesPerLayer(self.states_per_layer));
        }
        let min = if network == Network::Bitcoin {
            MAINNET_MIN_STEP_BLOCKS
        } else {
            1
        };
        if self.step_blocks < min {
            return Err(ShapeError::StepBlocks {
                step: self.step_blocks,
                network,
                min,
            });
        }
        // The oldest state's delay is a BIP-68 height lock: 16 bits.
        if u32::from(self.step_blocks) * u32::from(self.states_per_layer - 1) > 0xffff {
            return Err(ShapeError::Amount(format!(
                "step {} x {} states exceeds the largest relative lock of 65,535 blocks",
                self.step_blocks,
                self.states_per_layer - 1
            )));
        }
        Ok(())
    }

    /// Levels above the leaves for `leaves` leaves: the shortest prefix of the arity pattern
    /// (its last entry repeating) whose product reaches `leaves`.
    pub fn levels_for(&self, leaves: u32) -> Vec<u8> {
        let mut levels = Vec::new();
        let mut capacity: u64 = 1;
        let mut i = 0;
        while capacity < u64::from(leaves) {
            let a = self.arity[i.min(self.arity.len() - 1)];
            if a == 1 && i >= self.arity.len() - 1 {
                // An arity-1 tail would never reach the capacity: widen to binary.
                levels.push(2);
                capacity *= 2;
            } else {
                levels.push(a);
                capacity *= u64::from(a);
            }
            i += 1;
        }
        levels
    }
}
