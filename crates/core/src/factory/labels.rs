//! Short printable names of a factory's outputs and transactions (`kickoff/0`, `state/3`,
//! `timeout/in/1`, `punish/stock/2`), as logs, tables and the store label them.

use std::fmt;

use super::{Slot, TxKind};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientId, NodeId};

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
        for l in labels {
            assert!(
                l.len() <= 64 && l.bytes().all(|b| b.is_ascii_graphic()),
                "{l}"
            );
        }
    }
}
