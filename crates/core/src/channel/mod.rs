//! Leaf channels: Poon-Dryja channels between the LSP and a client, funded by a factory leaf
//! output, in the BOLT taproot zero-fee-commitment format.

pub mod commitment;
pub mod deadlines;
pub mod keys;
pub mod link;
pub mod multipath;
pub mod state;

use crate::{ClientId, Slot};

/// Which of a client's channels in a factory: its leaf channel, or one bought in a liquidity sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelRef {
    /// The client's leaf channel (output [`Slot::Channel`]).
    Leaf,
    /// The channel created by sale `j` (output [`Slot::Sold`]).
    Sold(u32),
}

impl ChannelRef {
    /// The factory output funding this channel of `client`.
    pub fn slot(self, client: ClientId) -> Slot {
        match self {
            ChannelRef::Leaf => Slot::Channel(client),
            ChannelRef::Sold(j) => Slot::Sold(j),
        }
    }

    /// The wire number: 0 for the leaf channel, `1 + j` for sale `j`.
    pub fn to_u32(self) -> u32 {
        match self {
            ChannelRef::Leaf => 0,
            ChannelRef::Sold(j) => j.saturating_add(1),
        }
    }

    /// From the wire number.
    pub fn from_u32(n: u32) -> Self {
        match n {
            0 => ChannelRef::Leaf,
            n => ChannelRef::Sold(n - 1),
        }
    }
}

impl std::fmt::Display for ChannelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelRef::Leaf => write!(f, "leaf"),
            ChannelRef::Sold(j) => write!(f, "sold/{j}"),
        }
    }
}
