//! Vocabulary types of a factory: identifiers, state indices and amounts.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one factory of an LSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FactoryId(pub [u8; 32]);

impl Serialize for FactoryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::encoding::hex_array::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for FactoryId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::encoding::hex_array::deserialize(d).map(FactoryId)
    }
}

impl fmt::Display for FactoryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A factory id that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a factory id is 64 hex digits")]
pub struct ParseFactoryIdError;

impl std::str::FromStr for FactoryId {
    type Err = ParseFactoryIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use bitcoin::hex::FromHex;
        <[u8; 32]>::from_hex(s)
            .map(FactoryId)
            .map_err(|_| ParseFactoryIdError)
    }
}

/// A node of the factory tree (index into the tree's arena; the root is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// A client of a factory (its position in the factory's client list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub u32);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}

/// Index of a Decker-Wattenhofer state within one layer: 0 is the first (oldest) state; a higher
/// index is newer and has a shorter relative delay.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct StateIndex(pub u16);

/// An amount in millisatoshis (Lightning balances).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct Msat(pub u64);

impl Msat {
    /// Whole satoshis, rounded down.
    pub fn to_sat_floor(self) -> u64 {
        self.0 / 1000
    }

    /// From satoshis.
    pub fn from_sat(sat: u64) -> Self {
        Msat(sat * 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_id_round_trips_as_hex_and_rejects_garbage() {
        let id = FactoryId([0xab; 32]);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(serde_json::from_str::<FactoryId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<FactoryId>("\"zz\"").is_err());
        assert!(serde_json::from_str::<FactoryId>(&format!("\"{}\"", "é".repeat(32))).is_err());
    }
}

#[cfg(test)]
mod factory_id_tests {
    use super::FactoryId;

    #[test]
    fn factory_ids_parse_back_from_their_display() {
        let id = FactoryId([0xab; 32]);
        assert_eq!(id.to_string().parse::<FactoryId>(), Ok(id));
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(66)] {
            assert!(bad.parse::<FactoryId>().is_err(), "{bad}");
        }
    }
}
