//! SuperScalar protocol core: the factory tree, the Decker-Wattenhofer odometer, the timeout
//! policies, the MuSig2 signing ceremony and the exit package. Pure code: no I/O, no clock.

#![deny(missing_docs)]

pub mod advance;
pub mod ceremony;
pub mod channel;
pub mod close;
pub mod codec;
pub mod encoding;
pub mod factory;
pub mod handover;
pub mod ledger;
pub mod musig;
pub mod odometer;
pub mod par;
pub mod revocation;
pub mod secp;
pub mod shachain;
pub mod shape;
pub mod tree;
pub mod types;
pub mod update;

pub use factory::{ClientSpec, Factory, FactoryError, FactoryParams, Signer, Slot, TxKind};
pub use ledger::{Sale, Version};
pub use odometer::Odometer;
pub use shape::{FactoryConfig, LeafKind, Shape, TimeoutPolicy};
pub use types::{ClientId, FactoryId, Msat, NodeId, StateIndex};
