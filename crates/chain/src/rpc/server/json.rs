//! JSON as Bitcoin Core writes it: keys in the order they were added, amounts with exactly eight
//! decimals (`ValueFromAmount`), other real numbers with 16 significant digits (UniValue's
//! `setFloat`), compact output.
//!
//! Requests are read with `serde_json`; replies are built as [`Json`] values, which keep their
//! key order and know an amount from a real number.

use serde_json::Value;

/// Satoshis per bitcoin.
pub(crate) const COIN: i64 = 100_000_000;

/// A JSON value of a reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A real number (`%.16g`).
    Real(f64),
    /// An amount in satoshis, written in BTC with eight decimals.
    Amount(i64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in insertion order.
    Obj(Vec<(String, Json)>),
}

/// Build a [`Json::Obj`]: `obj! { "key" => value, ... }`.
macro_rules! obj {
    ($($k:expr => $v:expr),* $(,)?) => {
        $crate::rpc::server::json::Json::Obj(vec![$(($k.to_string(), $crate::rpc::server::json::Json::from($v))),*])
    };
}
pub(crate) use obj;

impl Json {
    /// An empty object.
    pub(crate) fn object() -> Json {
        Json::Obj(Vec::new())
    }

    /// Append a key (objects only).
    pub(crate) fn push(&mut self, key: &str, value: impl Into<Json>) {
        if let Json::Obj(o) = self {
            o.push((key.to_string(), value.into()));
        }
    }

    /// Compact text, as UniValue's `write()`.
    pub(crate) fn write(&self) -> String {
        let mut out = String::new();
        self.write_into(&mut out);
        out
    }

    fn write_into(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Real(x) => out.push_str(&format_g16(*x)),
            Json::Amount(sat) => out.push_str(&format_amount(*sat)),
            Json::Str(s) => write_string(s, out),
            Json::Arr(a) => {
                out.push('[');
                for (i, item) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write_into(out);
                }
                out.push(']');
            }
            Json::Obj(o) => {
                out.push('{');
                for (i, (k, item)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(k, out);
                    out.push(':');
                    item.write_into(out);
                }
                out.push('}');
            }
        }
    }

    /// Indented text, as UniValue's `write(indent)` (used in messages that embed JSON).
    pub(crate) fn write_pretty(&self, indent: usize) -> String {
        let mut out = String::new();
        self.pretty_into(indent, 0, &mut out);
        out
    }

    fn pretty_into(&self, indent: usize, level: usize, out: &mut String) {
        let pad = |n: usize, out: &mut String| out.push_str(&" ".repeat(n));
        match self {
            Json::Arr(a) if !a.is_empty() => {
                out.push_str("[\n");
                for (i, item) in a.iter().enumerate() {
                    pad(indent * (level + 1), out);
                    item.pretty_into(indent, level + 1, out);
                    out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
                }
                pad(indent * level, out);
                out.push(']');
            }
            Json::Obj(o) if !o.is_empty() => {
                out.push_str("{\n");
                for (i, (k, item)) in o.iter().enumerate() {
                    pad(indent * (level + 1), out);
                    write_string(k, out);
                    out.push_str(": ");
                    item.pretty_into(indent, level + 1, out);
                    out.push_str(if i + 1 < o.len() { ",\n" } else { "\n" });
                }
                pad(indent * level, out);
                out.push('}');
            }
            other => other.write_into(out),
        }
    }
}

/// Core's `ValueFromAmount` text.
pub(crate) fn format_amount(sat: i64) -> String {
    let sign = if sat < 0 { "-" } else { "" };
    let abs = sat.unsigned_abs();
    let coin = COIN as u64;
    format!("{sign}{}.{:08}", abs / coin, abs % coin)
}

/// `printf("%.16g", x)`.
pub(crate) fn format_g16(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    if !x.is_finite() {
        // UniValue cannot hold these; we never produce them.
        return "null".to_string();
    }
    const P: i32 = 16;
    let sci = format!("{:.*e}", (P - 1) as usize, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..P).contains(&exp) {
        let m = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (P - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{x:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json escapes exactly what JSON requires.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string()));
}

impl From<&Value> for Json {
    fn from(v: &Value) -> Json {
        match v {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Json::Int(i.into())
                } else if let Some(u) = n.as_u64() {
                    Json::Int(u.into())
                } else {
                    Json::Real(n.as_f64().unwrap_or(0.0))
                }
            }
            Value::String(s) => Json::Str(s.clone()),
            Value::Array(a) => Json::Arr(a.iter().map(Json::from).collect()),
            Value::Object(o) => Json::Obj(o.iter().map(|(k, v)| (k.clone(), v.into())).collect()),
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Json {
        Json::from(&v)
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl From<&String> for Json {
    fn from(s: &String) -> Json {
        Json::Str(s.clone())
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Json {
            fn from(i: $t) -> Json {
                Json::Int(i as i128)
            }
        }
    )*};
}
from_int!(i32, i64, u8, u16, u32, u64, usize);

impl From<Vec<Json>> for Json {
    fn from(a: Vec<Json>) -> Json {
        Json::Arr(a)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_with_eight_decimals() {
        assert_eq!(Json::Amount(50 * COIN).write(), "50.00000000");
        assert_eq!(Json::Amount(1).write(), "0.00000001");
        assert_eq!(Json::Amount(-123_456_789).write(), "-1.23456789");
        assert_eq!(Json::Amount(i64::MIN).write(), "-92233720368.54775808");
        let o = obj! { "b" => Json::Amount(1000), "a" => vec![Json::Amount(0)] };
        assert_eq!(o.write(), r#"{"b":0.00001000,"a":[0.00000000]}"#);
        let back: Value = serde_json::from_str(&o.write()).unwrap();
        assert_eq!(back["b"].as_f64(), Some(0.00001));
    }

    #[test]
    fn strings_are_escaped() {
        let s = Json::from("a\"b\\c\u{1}\n");
        let back: Value = serde_json::from_str(&s.write()).unwrap();
        assert_eq!(back, Value::String("a\"b\\c\u{1}\n".into()));
    }

    #[test]
    fn reals_are_written_like_univalue() {
        assert_eq!(format_g16(4.656542373906925e-10), "4.656542373906925e-10");
        assert_eq!(format_g16(1.0), "1");
        assert_eq!(format_g16(0.5), "0.5");
        assert_eq!(format_g16(1e20), "1e+20");
        assert_eq!(format_g16(123456.789), "123456.789");
        assert_eq!(format_g16(0.0001), "0.0001");
        assert_eq!(format_g16(0.00001), "1e-05");
        assert_eq!(Json::Real(2.0).write(), "2");
    }

    #[test]
    fn pretty_output_matches_univalue_indentation() {
        let o = obj! { "Position 1 (height)" => "x" };
        assert_eq!(
            o.write_pretty(4),
            "{\n    \"Position 1 (height)\": \"x\"\n}"
        );
    }
}
