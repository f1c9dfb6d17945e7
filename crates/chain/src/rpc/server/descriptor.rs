//! Output descriptors as far as `chaind` needs them: the BIP-380 checksum, Core's
//! `InferDescriptor` without key information (what `scriptPubKey.desc` shows), and parsing the
//! simple descriptors `generatetodescriptor` and `generateblock` accept.

use std::str::FromStr;

use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::key::Secp256k1;
use bitcoin::{
    Address, CompressedPublicKey, Network, PublicKey, Script, ScriptBuf, XOnlyPublicKey,
};

use super::encode::{solver, TxoutType};

const INPUT_CHARSET: &str =
    "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
const CHECKSUM_CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn polymod(c: u64, val: u64) -> u64 {
    let c0 = c >> 35;
    let mut c = ((c & 0x7_ffff_ffff) << 5) ^ val;
    for (bit, k) in [
        0xf5_dee5_1989u64,
        0xa9_fdca_3312,
        0x1b_ab10_e32d,
        0x37_06b1_677a,
        0x64_4d62_6ffd,
    ]
    .iter()
    .enumerate()
    {
        if c0 >> bit & 1 == 1 {
            c ^= k;
        }
    }
    c
}

/// The BIP-380 checksum of a descriptor (without `#`), or `None` for characters outside the
/// descriptor character set.
pub(crate) fn checksum(desc: &str) -> Option<String> {
    let mut c = 1u64;
    let mut cls = 0u64;
    let mut count = 0;
    for ch in desc.chars() {
        let pos = INPUT_CHARSET.find(ch)? as u64;
        c = polymod(c, pos & 31);
        cls = cls * 3 + (pos >> 5);
        count += 1;
        if count == 3 {
            c = polymod(c, cls);
            cls = 0;
            count = 0;
        }
    }
    if count > 0 {
        c = polymod(c, cls);
    }
    for _ in 0..8 {
        c = polymod(c, 0);
    }
    c ^= 1;
    Some(
        (0..8)
            .map(|j| CHECKSUM_CHARSET[((c >> (5 * (7 - j))) & 31) as usize] as char)
            .collect(),
    )
}

fn with_checksum(desc: String) -> String {
    match checksum(&desc) {
        Some(c) => format!("{desc}#{c}"),
        None => desc,
    }
}

/// Core's `InferDescriptor(script, DUMMY_SIGNING_PROVIDER)->ToString()`, with checksum.
pub(crate) fn infer_descriptor(script: &Script) -> String {
    let bytes = script.as_bytes();
    let (kind, solutions) = solver(bytes);
    let non_hybrid = |k: &[u8]| matches!(k.first(), Some(2) | Some(3) | Some(4));
    let inner = match kind {
        TxoutType::PubKey if non_hybrid(&solutions[0]) => {
            Some(format!("pk({})", solutions[0].to_lower_hex_string()))
        }
        TxoutType::Multisig
            if solutions[1..solutions.len() - 1]
                .iter()
                .all(|k| non_hybrid(k)) =>
        {
            let keys: Vec<String> = solutions[1..solutions.len() - 1]
                .iter()
                .map(|k| k.to_lower_hex_string())
                .collect();
            Some(format!("multi({},{})", solutions[0][0], keys.join(",")))
        }
        TxoutType::WitnessV1Taproot => XOnlyPublicKey::from_slice(&solutions[0])
            .ok()
            .map(|k| format!("rawtr({k})")),
        _ => None,
    };
    let desc = inner.unwrap_or_else(|| match super::encode::address(script) {
        Some(a) => format!("addr({a})"),
        None => format!("raw({})", bytes.to_lower_hex_string()),
    });
    with_checksum(desc)
}

/// Strip and check an optional checksum (Core's `CheckChecksum` without `require_checksum`).
fn check_checksum(desc: &str) -> Result<&str, String> {
    let parts: Vec<&str> = desc.split('#').collect();
    if parts.len() > 2 {
        return Err("Multiple '#' symbols".into());
    }
    if parts.len() == 2 && parts[1].len() != 8 {
        return Err(format!(
            "Expected 8 character checksum, not {} characters",
            parts[1].len()
        ));
    }
    let computed = checksum(parts[0]).ok_or("Invalid characters in payload")?;
    if parts.len() == 2 && parts[1] != computed {
        return Err(format!(
            "Provided checksum '{}' does not match computed checksum '{computed}'",
            parts[1]
        ));
    }
    Ok(parts[0])
}

/// `name(inner)` → `inner`.
fn call<'a>(expr: &'a str, name: &str) -> Option<&'a str> {
    expr.strip_prefix(name)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_str(s).map_err(|_| {
        if Vec::<u8>::from_hex(s).is_ok() {
            format!("Pubkey '{s}' is invalid")
        } else {
            format!("key '{s}' is not valid")
        }
    })
}

fn compressed(s: &str) -> Result<CompressedPublicKey, String> {
    let key = parse_key(s)?;
    CompressedPublicKey::try_from(key).map_err(|_| "Uncompressed keys are not allowed".to_string())
}

fn xonly(s: &str) -> Result<XOnlyPublicKey, String> {
    if s.len() == 64 {
        XOnlyPublicKey::from_str(s).map_err(|_| format!("Pubkey '{s}' is invalid"))
    } else {
        Ok(parse_key(s)?.inner.x_only_public_key().0)
    }
}

/// The output script of a descriptor `generatetodescriptor` and `generateblock` accept: `addr`,
/// `raw`, `rawtr`, `pk`, `pkh`, `wpkh`, `sh(wpkh)` and key-only `tr`, with hex keys and an
/// optional checksum. The error text is Core's where Core has one.
pub(crate) fn parse_descriptor(desc: &str) -> Result<ScriptBuf, String> {
    let expr = check_checksum(desc)?;
    if let Some(a) = call(expr, "addr") {
        return Address::from_str(a)
            .ok()
            .and_then(|a| a.require_network(Network::Regtest).ok())
            .map(|a| a.script_pubkey())
            .ok_or_else(|| "Address is not valid".to_string());
    }
    if let Some(h) = call(expr, "raw") {
        return Vec::<u8>::from_hex(h)
            .map(ScriptBuf::from_bytes)
            .map_err(|_| "Raw script is not hex".to_string());
    }
    if let Some(k) = call(expr, "rawtr") {
        return Ok(ScriptBuf::new_p2tr_tweaked(
            bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(xonly(k)?),
        ));
    }
    if let Some(k) = call(expr, "pk") {
        return Ok(ScriptBuf::new_p2pk(&parse_key(k)?));
    }
    if let Some(k) = call(expr, "pkh") {
        return Ok(ScriptBuf::new_p2pkh(&parse_key(k)?.pubkey_hash()));
    }
    if let Some(k) = call(expr, "wpkh") {
        return Ok(ScriptBuf::new_p2wpkh(&compressed(k)?.wpubkey_hash()));
    }
    if let Some(k) = call(expr, "sh").and_then(|i| call(i, "wpkh")) {
        let inner = ScriptBuf::new_p2wpkh(&compressed(k)?.wpubkey_hash());
        return Ok(ScriptBuf::new_p2sh(&inner.script_hash()));
    }
    if let Some(k) = call(expr, "tr") {
        if k.contains(',') {
            return Err("chaind accepts tr() with a single key only".into());
        }
        return Ok(ScriptBuf::new_p2tr(
            &Secp256k1::verification_only(),
            xonly(k)?,
            None,
        ));
    }
    let name = expr.split('(').next().unwrap_or(expr);
    if expr.contains('(') && !name.is_empty() {
        Err(format!(
            "chaind does not support the descriptor function '{name}' (it accepts addr, raw, rawtr, pk, pkh, wpkh, sh(wpkh) and single-key tr)"
        ))
    } else {
        Err(format!("'{expr}' is not a valid descriptor function"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_bip380() {
        assert_eq!(checksum("raw(deadbeef)").as_deref(), Some("89f8spxm"));
        assert_eq!(
            checksum("addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)").as_deref(),
            Some("02wpgw69")
        );
        assert_eq!(checksum("raw(\u{e9})"), None);
    }

    #[test]
    fn inferred_descriptors_are_core_s() {
        let s = |h: &str| ScriptBuf::from_bytes(Vec::from_hex(h).unwrap());
        assert!(infer_descriptor(&s("6a04deadbeef")).starts_with("raw(6a04deadbeef)#"));
        let p2a = infer_descriptor(&s("51024e73"));
        assert!(p2a.starts_with("addr(bcrt1pfeesnyr2tx)#"), "{p2a}");
        let key = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        let pk = infer_descriptor(&s(&format!("21{key}ac")));
        assert!(pk.starts_with(&format!("pk({key})#")), "{pk}");
        let tr = infer_descriptor(&s(
            "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        ));
        assert!(tr.starts_with(&format!("rawtr({})#", &key[2..])), "{tr}");
    }

    #[test]
    fn parse_accepts_the_simple_descriptors_and_reports_core_errors() {
        assert_eq!(
            parse_descriptor("raw(deadbeef)#89f8spxm")
                .unwrap()
                .as_bytes(),
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(
            parse_descriptor("raw(deadbeef)#89f8spxx").unwrap_err(),
            "Provided checksum '89f8spxx' does not match computed checksum '89f8spxm'"
        );
        assert_eq!(
            parse_descriptor("raw(deadbeef)#89f").unwrap_err(),
            "Expected 8 character checksum, not 3 characters"
        );
        assert_eq!(
            parse_descriptor("a#b#c").unwrap_err(),
            "Multiple '#' symbols"
        );
        assert_eq!(
            parse_descriptor("raw(zz)").unwrap_err(),
            "Raw script is not hex"
        );
        assert_eq!(
            parse_descriptor("addr(nope)").unwrap_err(),
            "Address is not valid"
        );
        let a = parse_descriptor("addr(bcrt1pfeesnyr2tx)").unwrap();
        assert_eq!(a.as_bytes(), [0x51, 0x02, 0x4e, 0x73]);
        assert!(parse_descriptor("wsh(multi(1,02))").is_err());
        assert!(parse_descriptor("pk(nothex)").is_err());
        let key = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        assert!(parse_descriptor(&format!("tr({key})")).unwrap().is_p2tr());
        assert!(parse_descriptor(&format!("wpkh({key})"))
            .unwrap()
            .is_p2wpkh());
        assert!(parse_descriptor(&format!("sh(wpkh({key}))"))
            .unwrap()
            .is_p2sh());
    }
}
