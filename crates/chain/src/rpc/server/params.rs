//! Parameters as Core's `RPCHelpMan` handles them: named parameters turned positional
//! (`transformNamedArguments`), the argument count checked (a wrong count answers the help
//! text), each argument's JSON type checked ("Wrong type passed"), and typed accessors with
//! Core's messages (`getInt`, `get_bool`, `ParseHashV`, `AmountFromValue`, ...).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::json::{Json, COIN};
use super::jsonrpc::RpcError;
use crate::rpc::codes::{RPC_INVALID_PARAMETER, RPC_MISC_ERROR, RPC_TYPE_ERROR};

/// The JSON type an argument must have (Core's `RPCArg::Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A string.
    Str,
    /// A hex string (checked by the method).
    Hex,
    /// A number.
    Num,
    /// A boolean.
    Bool,
    /// An object.
    Obj,
    /// An array.
    Arr,
    /// A number or a string (amounts).
    Amount,
    /// Anything (the method checks it: Core's `skip_type_check`).
    Any,
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Param {
    /// Its names, `|`-separated aliases (`"verbosity|verbose"`).
    pub names: &'static str,
    /// Its JSON type.
    pub ty: Ty,
    /// Whether it must be given.
    pub required: bool,
    /// For an options object (Core's `OBJ_NAMED_PARAMS`): the option names that may also be
    /// given as named parameters of their own.
    pub inner: &'static [&'static str],
}

/// A required parameter.
pub(crate) const fn req(names: &'static str, ty: Ty) -> Param {
    Param {
        names,
        ty,
        required: true,
        inner: &[],
    }
}

/// An optional parameter.
pub(crate) const fn opt(names: &'static str, ty: Ty) -> Param {
    Param {
        names,
        ty,
        required: false,
        inner: &[],
    }
}

/// An optional options object whose options may be given as named parameters.
pub(crate) const fn options(names: &'static str, inner: &'static [&'static str]) -> Param {
    Param {
        names,
        ty: Ty::Obj,
        required: false,
        inner,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected_name(ty: Ty) -> Option<&'static str> {
    match ty {
        Ty::Str | Ty::Hex => Some("string"),
        Ty::Num => Some("number"),
        Ty::Bool => Some("bool"),
        Ty::Obj => Some("object"),
        Ty::Arr => Some("array"),
        Ty::Amount | Ty::Any => None,
    }
}

/// Core's type error for a value that is not of `expected` type.
pub(crate) fn type_error(v: &Value, expected: &str) -> RpcError {
    RpcError::new(
        RPC_TYPE_ERROR,
        format!(
            "JSON value of type {} is not of expected type {expected}",
            type_name(v)
        ),
    )
}

/// Named parameters to positional ones (Core's `transformNamedArguments`).
fn transform_named(named: &Map<String, Value>, spec: &[Param]) -> Result<Vec<Value>, RpcError> {
    let mut remaining: HashMap<&str, &Value> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out: Vec<Value> = Vec::new();
    let mut hole = 0usize;
    let mut initial_hole = 0usize;
    let mut initial_param: Option<&str> = None;
    // Core's GetArgNames: an options object's inner names come first, as named-only entries.
    let expanded = spec.iter().flat_map(|p| {
        p.inner
            .iter()
            .map(|n| (*n, true))
            .chain(std::iter::once((p.names, false)))
    });
    let mut options = Map::new();
    for (names, named_only) in expanded {
        let found = names
            .split('|')
            .find_map(|n| remaining.get_key_value(n).map(|(k, v)| (*k, *v)));
        if named_only {
            if let Some((key, value)) = found {
                options.insert(key.to_string(), value.clone());
                remaining.remove(key);
            }
            continue;
        }
        if !options.is_empty() || found.is_some() {
            out.extend(std::iter::repeat(Value::Null).take(hole));
            hole = 0;
            initial_param.get_or_insert(names);
        } else {
            hole += 1;
            if out.is_empty() {
                initial_hole = hole;
            }
        }
        if let Some((key, value)) = found {
            if let Some(first) = options.keys().next() {
                return Err(RpcError::new(
                    RPC_INVALID_PARAMETER,
                    format!("Parameter {key} conflicts with parameter {first}"),
                ));
            }
            out.push(value.clone());
            remaining.remove(key);
        }
        if !options.is_empty() {
            out.push(Value::Object(std::mem::take(&mut options)));
        }
    }
    if let Some(Value::Array(positional)) = remaining.remove("args") {
        if let Some(first) = initial_param {
            if initial_hole < positional.len() {
                return Err(RpcError::new(
                    RPC_INVALID_PARAMETER,
                    format!(
                        "Parameter {first} specified twice both as positional and named argument"
                    ),
                ));
            }
        }
        let named_args = std::mem::take(&mut out);
        out = positional.clone();
        for v in named_args.into_iter().skip(positional.len()) {
            out.push(v);
        }
    }
    if let Some(key) = remaining.keys().min() {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            format!("Unknown named parameter {key}"),
        ));
    }
    Ok(out)
}

/// The arguments of a call, positional, checked against the method's parameters.
#[derive(Debug)]
pub(crate) struct Args {
    values: Vec<Value>,
}

impl Args {
    /// Check `params` (array or object) against `spec`; `usage` is the help text a wrong
    /// argument count answers with.
    pub(crate) fn parse(
        params: &Value,
        spec: &'static [Param],
        usage: &str,
    ) -> Result<Args, RpcError> {
        let values = match params {
            Value::Array(a) => a.clone(),
            Value::Object(o) => transform_named(o, spec)?,
            _ => Vec::new(),
        };
        let required = spec.iter().rposition(|p| p.required).map_or(0, |i| i + 1);
        if values.len() < required || values.len() > spec.len() {
            return Err(RpcError::new(RPC_MISC_ERROR, usage));
        }
        let mut mismatches = Json::object();
        for (i, p) in spec.iter().enumerate() {
            let v = values.get(i).unwrap_or(&Value::Null);
            if !p.required && v.is_null() {
                continue;
            }
            if let Some(expected) = expected_name(p.ty) {
                if type_name(v) != expected {
                    mismatches.push(
                        &format!("Position {} ({})", i + 1, p.names),
                        format!(
                            "JSON value of type {} is not of expected type {expected}",
                            type_name(v)
                        ),
                    );
                }
            }
        }
        if let Json::Obj(o) = &mismatches {
            if !o.is_empty() {
                return Err(RpcError::new(
                    RPC_TYPE_ERROR,
                    format!("Wrong type passed:\n{}", mismatches.write_pretty(4)),
                ));
            }
        }
        Ok(Args { values })
    }

    /// Argument `i`, `None` when absent or null.
    pub(crate) fn get(&self, i: usize) -> Option<&Value> {
        self.values.get(i).filter(|v| !v.is_null())
    }

    /// A string argument (`get_str`).
    pub(crate) fn str(&self, i: usize) -> Result<Option<&str>, RpcError> {
        match self.get(i) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(type_error(v, "string")),
        }
    }

    /// A required string argument.
    pub(crate) fn req_str(&self, i: usize) -> Result<&str, RpcError> {
        self.str(i)?
            .ok_or_else(|| type_error(&Value::Null, "string"))
    }

    /// A boolean argument (`get_bool`).
    pub(crate) fn bool(&self, i: usize) -> Result<Option<bool>, RpcError> {
        match self.get(i) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(type_error(v, "bool")),
        }
    }

    /// An integer argument of type `T` (`getInt<T>`: "JSON integer out of range" when the
    /// number is not an integer that fits).
    pub(crate) fn int<T: TryFrom<i128>>(&self, i: usize) -> Result<Option<T>, RpcError> {
        match self.get(i) {
            None => Ok(None),
            Some(v) => get_int(v).map(Some),
        }
    }

    /// A required integer argument.
    pub(crate) fn req_int<T: TryFrom<i128>>(&self, i: usize) -> Result<T, RpcError> {
        match self.values.get(i) {
            Some(v) => get_int(v),
            None => Err(type_error(&Value::Null, "number")),
        }
    }

    /// An array argument (`get_array`).
    pub(crate) fn array(&self, i: usize) -> Result<&[Value], RpcError> {
        match self.values.get(i).unwrap_or(&Value::Null) {
            Value::Array(a) => Ok(a),
            v => Err(type_error(v, "array")),
        }
    }

    /// An amount argument (`AmountFromValue`), in satoshis.
    pub(crate) fn amount(&self, i: usize) -> Result<Option<i64>, RpcError> {
        self.get(i).map(amount_from_value).transpose()
    }
}

/// Core's `getInt<T>` on a JSON value.
pub(crate) fn get_int<T: TryFrom<i128>>(v: &Value) -> Result<T, RpcError> {
    let Value::Number(n) = v else {
        return Err(type_error(v, "number"));
    };
    let out_of_range = || RpcError::new(RPC_MISC_ERROR, "JSON integer out of range");
    let wide: i128 = if let Some(i) = n.as_i64() {
        i.into()
    } else if let Some(u) = n.as_u64() {
        u.into()
    } else if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) {
        // `-0`, which serde_json reads as a real number (and, alas, `-0.0` too).
        0
    } else {
        // Written with a fraction or an exponent: Core's from_chars stops there.
        return Err(out_of_range());
    };
    T::try_from(wide).map_err(|_| out_of_range())
}

/// Core's `AmountFromValue` (eight decimals, within the money range), in satoshis.
pub(crate) fn amount_from_value(v: &Value) -> Result<i64, RpcError> {
    let invalid = || RpcError::new(RPC_TYPE_ERROR, "Invalid amount");
    let sat = match v {
        Value::String(s) => parse_fixed_point(s).ok_or_else(invalid)?,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.checked_mul(COIN).ok_or_else(invalid)?
            } else if let Some(f) = n.as_f64() {
                // The literal's text is gone; accept what has at most eight decimals.
                let scaled = f * COIN as f64;
                let rounded = scaled.round();
                if !rounded.is_finite() || (scaled - rounded).abs() > 1e-3 || rounded.abs() > 1e17 {
                    return Err(invalid());
                }
                rounded as i64
            } else {
                return Err(invalid());
            }
        }
        _ => {
            return Err(RpcError::new(
                RPC_TYPE_ERROR,
                "Amount is not a number or string",
            ))
        }
    };
    if !(0..=21_000_000 * COIN).contains(&sat) {
        return Err(RpcError::new(RPC_TYPE_ERROR, "Amount out of range"));
    }
    Ok(sat)
}

/// Core's `ParseFixedPoint(s, 8)`: `-?digits(.digits)?([eE][+-]?digits)?` with at most eight
/// decimals after the exponent is applied.
fn parse_fixed_point(s: &str) -> Option<i64> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || (mantissa.contains('.') && frac.is_empty())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (int.len() > 1 && int.starts_with('0'))
    {
        return None;
    }
    let exp: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            e.parse().ok()?
        }
    };
    let digits: String = format!("{int}{frac}");
    let point = int.len() as i64 + exp; // digits before the decimal point
    let decimals = digits.len() as i64 - point;
    if decimals > 8 {
        // Only zeros may be dropped.
        let keep = (digits.len() as i64 - (decimals - 8)).max(0) as usize;
        if digits[keep..].bytes().any(|b| b != b'0') {
            return None;
        }
    }
    let mut value: i128 = 0;
    for (i, b) in digits.bytes().enumerate() {
        let position = point - 1 - i as i64; // power of ten of this digit
        if position < -8 {
            break;
        }
        if position > 18 {
            if b != b'0' {
                return None;
            }
            continue;
        }
        value += i128::from(b - b'0') * 10i128.pow((position + 8) as u32);
        if value > i128::from(i64::MAX) {
            return None;
        }
    }
    let v = value as i64;
    Some(if neg { -v } else { v })
}

/// Core's `ParseHashV`: a 64-digit hex hash, or an `RPC_INVALID_PARAMETER` naming `name`.
pub(crate) fn parse_hash(v: &Value, name: &str) -> Result<[u8; 32], RpcError> {
    let Value::String(s) = v else {
        return Err(type_error(v, "string"));
    };
    if let Some(h) = super::encode::parse_hash_hex(s) {
        return Ok(h);
    }
    if s.len() != 64 {
        return Err(RpcError::new(
            RPC_INVALID_PARAMETER,
            format!("{name} must be of length 64 (not {}, for '{s}')", s.len()),
        ));
    }
    Err(RpcError::new(
        RPC_INVALID_PARAMETER,
        format!("{name} must be hexadecimal string (not '{s}')"),
    ))
}

/// Core's `IsHex`: an even number of hex digits, at least two.
pub(crate) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The help text of a method: its call line and description.
pub(crate) fn usage(name: &str, spec: &[Param], description: &str) -> String {
    let mut line = name.to_string();
    for p in spec {
        let n = p.names.split('|').next().unwrap_or(p.names);
        if p.required {
            line.push_str(&format!(" \"{n}\""));
        } else {
            line.push_str(&format!(" ( \"{n}\" )"));
        }
    }
    format!("{line}\n\n{description}\n")
}

/// `{"txid": ..., "vout": ...}` objects checked like Core's `RPCTypeCheckObj`.
pub(crate) fn check_object_fields(
    o: &Map<String, Value>,
    fields: &[(&str, Ty)],
) -> Result<(), RpcError> {
    for (name, ty) in fields {
        let v = o.get(*name).unwrap_or(&Value::Null);
        let ok = match ty {
            Ty::Str | Ty::Hex => v.is_string(),
            Ty::Num => v.is_number(),
            Ty::Bool => v.is_boolean(),
            Ty::Obj => v.is_object(),
            Ty::Arr => v.is_array(),
            Ty::Amount | Ty::Any => true,
        };
        if !ok {
            let expected = expected_name(*ty).unwrap_or("value");
            let message = if v.is_null() {
                format!("Missing {name}")
            } else {
                format!(
                    "JSON value of type {} for field {name} is not of expected type {expected}",
                    type_name(v)
                )
            };
            return Err(RpcError::new(RPC_TYPE_ERROR, message));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &[Param] = &[
        req("blockhash", Ty::Hex),
        opt("verbosity|verbose", Ty::Any),
        opt("extra", Ty::Bool),
    ];

    #[test]
    fn named_parameters_become_positional() {
        let a = Args::parse(&json!({"verbose": 2, "blockhash": "x"}), SPEC, "u").unwrap();
        assert_eq!(a.get(0), Some(&json!("x")));
        assert_eq!(a.get(1), Some(&json!(2)));
        let a = Args::parse(&json!({"blockhash": "x", "extra": true}), SPEC, "u").unwrap();
        assert!(a.get(1).is_none());
        assert_eq!(a.bool(2).unwrap(), Some(true));
        let e = Args::parse(&json!({"blockhash": "x", "nope": 1}), SPEC, "u").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (-8, "Unknown named parameter nope")
        );
        let a = Args::parse(&json!({"args": ["x"], "extra": false}), SPEC, "u").unwrap();
        assert_eq!(a.get(0), Some(&json!("x")));
        assert_eq!(a.bool(2).unwrap(), Some(false));
        let e = Args::parse(&json!({"args": ["x"], "blockhash": "y"}), SPEC, "u").unwrap_err();
        assert_eq!(e.code, -8);
    }

    #[test]
    fn counts_and_types_are_checked_like_core() {
        let e = Args::parse(&json!([]), SPEC, "usage").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (-1, "usage"));
        let e = Args::parse(&json!(["x", 1, true, 4]), SPEC, "usage").unwrap_err();
        assert_eq!(e.code, -1);
        let e = Args::parse(&json!([5, null, "no"]), SPEC, "u").unwrap_err();
        assert_eq!(e.code, -3);
        assert_eq!(
            e.message,
            "Wrong type passed:\n{\n    \"Position 1 (blockhash)\": \"JSON value of type number is not of expected type string\",\n    \"Position 3 (extra)\": \"JSON value of type string is not of expected type bool\"\n}"
        );
    }

    #[test]
    fn integers_and_amounts_follow_core() {
        assert_eq!(get_int::<i32>(&json!(5)).unwrap(), 5);
        assert_eq!(
            get_int::<i32>(&json!(1.5)).unwrap_err().message,
            "JSON integer out of range"
        );
        assert_eq!(get_int::<u32>(&json!(-1)).unwrap_err().code, -1);
        assert_eq!(get_int::<i32>(&json!(1u64 << 40)).unwrap_err().code, -1);
        assert_eq!(get_int::<i32>(&json!("5")).unwrap_err().code, -3);
        assert_eq!(amount_from_value(&json!(0.1)).unwrap(), 10_000_000);
        assert_eq!(amount_from_value(&json!("0.00000001")).unwrap(), 1);
        assert_eq!(amount_from_value(&json!("1e-8")).unwrap(), 1);
        assert_eq!(amount_from_value(&json!(2)).unwrap(), 200_000_000);
        assert_eq!(
            amount_from_value(&json!("0.000000001"))
                .unwrap_err()
                .message,
            "Invalid amount"
        );
        assert_eq!(
            amount_from_value(&json!(-1)).unwrap_err().message,
            "Amount out of range"
        );
        assert_eq!(
            amount_from_value(&json!(true)).unwrap_err().message,
            "Amount is not a number or string"
        );
        assert_eq!(
            amount_from_value(&json!("abc")).unwrap_err().message,
            "Invalid amount"
        );
        assert_eq!(
            amount_from_value(&json!("21000001")).unwrap_err().message,
            "Amount out of range"
        );
    }

    #[test]
    fn hashes_are_parsed_like_core() {
        let e = parse_hash(&json!("abc"), "blockhash").unwrap_err();
        assert_eq!(
            e.message,
            "blockhash must be of length 64 (not 3, for 'abc')"
        );
        let e = parse_hash(&json!("z".repeat(64)), "txid").unwrap_err();
        assert_eq!(
            e.message,
            format!("txid must be hexadecimal string (not '{}')", "z".repeat(64))
        );
        let mut h = parse_hash(&json!(format!("{}01", "0".repeat(62))), "x").unwrap();
        h.reverse();
        assert_eq!(h[31], 1);
    }
}
