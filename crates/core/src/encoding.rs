//! The one hex decoder for bytes that come from outside (protocol messages, files, command
//! lines): rust-bitcoin's checked decoder, which refuses any wrong length or character with an
//! error instead of panicking.

use bitcoin::hex::{DisplayHex, FromHex};

/// Decode exactly `N` bytes of hex.
pub fn decode_array<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let bytes = Vec::<u8>::from_hex(s).map_err(|e| e.to_string())?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes of hex, got {len}"))
}

/// Serde for fixed-size byte arrays as lower-case hex strings.
pub mod hex_array {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as hex.
    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&bytes.to_lower_hex_string())
    }

    /// Deserialize from hex, refusing any other length or character.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        decode_array(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_hex_decodes() {
        assert_eq!(decode_array::<2>("0aFf").unwrap(), [0x0a, 0xff]);
        for bad in [
            "", "0a", "0aff00", "+f0a", "0g0a", "\u{e9}0", "0\u{e9}", "0a f",
        ] {
            assert!(decode_array::<2>(bad).is_err(), "{bad:?}");
        }
    }
}
