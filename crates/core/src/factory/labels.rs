//! Short printable names of a factory's outputs and transactions (`kickoff/0`, `state/3`,
//! `timeout/in/1`, `punish/stock/2`), as logs, tables and the store label them.

use std::fmt;
use std::str::FromStr;

use super::{Slot, TxKind};
use crate::types::{ClientId, NodeId};

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Slot::NodeInput(n) => write!(f, "in/{}", n.0),
            Slot::KickoffOut(n) => write!(f, "kickoff-out/{}", n.0),
            Slot::Channel(c) => write!(f, "channel/{}", c.0),
            Slot::FeeCoin(c) => write!(f, "fee-coin/{}", c.0),
            Slot::Stock(i) => write!(f, "stock/{i}"),
            Slot::Sold(i) => write!(f, "sold/{i}"),
            Slot::Change(i) => write!(f, "change/{i}"),
            Slot::TimeoutPart { top, kickoff, node } => write!(
                f,
                "part/{}/{}/{}",
                if kickoff { "kickoff-out" } else { "in" },
                top.0,
                node.0
            ),
        }
    }
}

impl fmt::Display for TxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TxKind::Kickoff(n) => write!(f, "kickoff/{}", n.0),
            TxKind::State(n) => write!(f, "state/{}", n.0),
            TxKind::Timeout(s) => write!(f, "timeout/{s}"),
            TxKind::Sale(i) => write!(f, "sale/{i}"),
            TxKind::Punish(s) => write!(f, "punish/{s}"),
        }
    }
}

/// A label that names no output or transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a factory label")]
pub struct BadLabel(pub String);

fn number(s: &str, label: &str) -> Result<u32, BadLabel> {
    // Canonical decimal only: the label of a number is unique.
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(BadLabel(label.to_owned()));
    }
    s.parse().map_err(|_| BadLabel(label.to_owned()))
}

impl FromStr for Slot {
    type Err = BadLabel;

    fn from_str(label: &str) -> Result<Self, BadLabel> {
        let bad = || BadLabel(label.to_owned());
        let parts: Vec<&str> = label.split('/').collect();
        let n = |s: &str| number(s, label);
        Ok(match parts.as_slice() {
            ["in", i] => Slot::NodeInput(NodeId(n(i)?)),
            ["kickoff-out", i] => Slot::KickoffOut(NodeId(n(i)?)),
            ["channel", i] => Slot::Channel(ClientId(n(i)?)),
            ["fee-coin", i] => Slot::FeeCoin(ClientId(n(i)?)),
            ["stock", i] => Slot::Stock(n(i)?),
            ["sold", i] => Slot::Sold(n(i)?),
            ["change", i] => Slot::Change(n(i)?),
            ["part", kind, top, node] => Slot::TimeoutPart {
                top: NodeId(n(top)?),
                kickoff: match *kind {
                    "kickoff-out" => true,
                    "in" => false,
                    _ => return Err(bad()),
                },
                node: NodeId(n(node)?),
            },
            _ => return Err(bad()),
        })
    }
}

impl FromStr for TxKind {
    type Err = BadLabel;

    fn from_str(label: &str) -> Result<Self, BadLabel> {
        let bad = || BadLabel(label.to_owned());
        let (head, rest) = label.split_once('/').ok_or_else(bad)?;
        Ok(match head {
            "kickoff" => TxKind::Kickoff(NodeId(number(rest, label)?)),
            "state" => TxKind::State(NodeId(number(rest, label)?)),
            "sale" => TxKind::Sale(number(rest, label)?),
            "timeout" => TxKind::Timeout(rest.parse().map_err(|_| bad())?),
            "punish" => TxKind::Punish(rest.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_printable_and_short() {
        let slots = [
            Slot::NodeInput(NodeId(1)),
            Slot::KickoffOut(NodeId(1)),
            Slot::Channel(ClientId(1)),
            Slot::FeeCoin(ClientId(1)),
            Slot::Stock(1),
            Slot::Sold(1),
            Slot::Change(1),
            Slot::TimeoutPart {
                top: NodeId(u32::MAX),
                kickoff: true,
                node: NodeId(u32::MAX),
            },
            Slot::TimeoutPart {
                top: NodeId(u32::MAX),
                kickoff: false,
                node: NodeId(u32::MAX),
            },
        ];
        let mut kinds = vec![
            TxKind::Kickoff(NodeId(1)),
            TxKind::State(NodeId(1)),
            TxKind::Sale(1),
        ];
        for s in slots {
            kinds.push(TxKind::Timeout(s));
            kinds.push(TxKind::Punish(s));
        }
        let labels: std::collections::HashSet<String> =
            kinds.iter().map(|k| k.to_string()).collect();
        assert_eq!(labels.len(), kinds.len());
        for k in &kinds {
            assert_eq!(k.to_string().parse::<TxKind>(), Ok(*k), "{k}");
        }
        for bad in [
            "",
            "kickoff",
            "kickoff/",
            "kickoff/01",
            "kickoff/-1",
            "kickoff/4294967296",
            "state/1/2",
            "timeout/channel",
            "timeout/part/x/1/2",
            "punish/nope/1",
            "sale/ 1",
        ] {
            assert!(bad.parse::<TxKind>().is_err(), "{bad:?}");
        }
        for l in labels {
            assert!(
                l.len() <= 64 && l.bytes().all(|b| b.is_ascii_graphic()),
                "{l}"
            );
        }
    }
}
