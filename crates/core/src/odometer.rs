//! The Decker-Wattenhofer odometer: one state index per layer node, nSequence of each state,
//! advance with rollover (innermost first), exhaustion, and the worst-case exit time.

use bitcoin::Sequence;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::shape::Shape;
use crate::tree::Tree;
use crate::types::{NodeId, StateIndex};

/// Why the odometer cannot advance.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OdometerError {
    /// Every layer on the path is at its last state: the factory must be rotated.
    #[error("the odometer is exhausted on the path of {leaf}: every layer is at its last state; rotate the factory (cooperative close into a new one) or exit")]
    Exhausted {
        /// The leaf whose path is exhausted.
        leaf: NodeId,
    },
    /// The node has no Decker-Wattenhofer layer.
    #[error("{0} has no Decker-Wattenhofer layer")]
    NotDw(NodeId),
}

/// The current state index of every Decker-Wattenhofer node of one factory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Odometer {
    states_per_layer: u16,
    step_blocks: u16,
    /// Index by node id; `None` for static nodes.
    digits: Vec<Option<StateIndex>>,
}

impl Odometer {
    /// Every layer at its first state.
    pub fn new(tree: &Tree, shape: &Shape) -> Self {
        Odometer {
            states_per_layer: shape.states_per_layer,
            step_blocks: shape.step_blocks,
            digits: tree
                .nodes()
                .iter()
                .map(|n| n.has_state().then_some(StateIndex(0)))
                .collect(),
        }
    }

    /// The state of `node` (none for static nodes).
    pub fn state(&self, node: NodeId) -> Option<StateIndex> {
        self.digits.get(node.0 as usize).copied().flatten()
    }

    /// Relative delay, in blocks, of state `index`.
    pub fn delay_blocks(&self, index: StateIndex) -> u16 {
        self.step_blocks * (self.states_per_layer - 1 - index.0.min(self.states_per_layer - 1))
    }

    /// nSequence of the state transaction of `node` at its current state.
    pub fn sequence(&self, node: NodeId) -> Option<Sequence> {
        self.state(node)
            .map(|s| Sequence::from_height(self.delay_blocks(s)))
    }

    /// Digits along the path to `leaf`, from the outermost layer in.
    pub fn path_digits(&self, tree: &Tree, leaf: NodeId) -> Vec<StateIndex> {
        let mut id = Some(leaf);
        let mut digits = Vec::new();
        while let Some(n) = id {
            if let Some(s) = self.state(n) {
                digits.push(s);
            }
            id = tree.node(n).parent;
        }
        digits.reverse();
        digits
    }

    /// Advance the state of `leaf`'s path: the innermost layer ticks first; a layer at its last
    /// state rolls over into its parent, resetting everything beneath. Returns the node whose
    /// subtree (itself included) must be re-signed.
    pub fn advance(&mut self, tree: &Tree, leaf: NodeId) -> Result<NodeId, OdometerError> {
        self.advance_past(tree, leaf, |_| None)
    }

    /// Advance `leaf`'s path like [`Odometer::advance`], but never onto a state index at or
    /// below `used(node)`: an index some party has already signed at (in an update that was
    /// abandoned) is skipped, so that no two different transactions ever share one index.
    pub fn advance_past(
        &mut self,
        tree: &Tree,
        leaf: NodeId,
        used: impl Fn(NodeId) -> Option<StateIndex>,
    ) -> Result<NodeId, OdometerError> {
        if self.state(leaf).is_none() {
            return Err(OdometerError::NotDw(leaf));
        }
        let last = self.states_per_layer - 1;
        let mut id = Some(leaf);
        while let Some(n) = id {
            if let Some(s) = self.state(n) {
                let floor = used(n).map_or(s.0, |u| u.0.max(s.0));
                if floor < last {
                    self.digits[n.0 as usize] = Some(StateIndex(floor + 1));
                    self.reset_below(tree, n);
                    return Ok(n);
                }
            }
            id = tree.node(n).parent;
        }
        Err(OdometerError::Exhausted { leaf })
    }

    /// Move `node` to state `to` (any later state of its layer) and reset every layer beneath.
    pub fn tick_to(
        &mut self,
        tree: &Tree,
        node: NodeId,
        to: StateIndex,
    ) -> Result<(), OdometerError> {
        let s = self.state(node).ok_or(OdometerError::NotDw(node))?;
        if to.0 <= s.0 || to.0 >= self.states_per_layer {
            return Err(OdometerError::Exhausted { leaf: node });
        }
        self.digits[node.0 as usize] = Some(to);
        self.reset_below(tree, node);
        Ok(())
    }

    /// Move `node` to its next state and reset every layer beneath it (one DW step of `node`).
    pub fn tick(&mut self, tree: &Tree, node: NodeId) -> Result<(), OdometerError> {
        let s = self.state(node).ok_or(OdometerError::NotDw(node))?;
        if s.0 + 1 >= self.states_per_layer {
            return Err(OdometerError::Exhausted { leaf: node });
        }
        self.digits[node.0 as usize] = Some(StateIndex(s.0 + 1));
        self.reset_below(tree, node);
        Ok(())
    }

    fn reset_below(&mut self, tree: &Tree, node: NodeId) {
        let mut stack: Vec<NodeId> = tree.node(node).children.clone();
        while let Some(n) = stack.pop() {
            if self.digits[n.0 as usize].is_some() {
                self.digits[n.0 as usize] = Some(StateIndex(0));
            }
            stack.extend(tree.node(n).children.iter().copied());
        }
    }

    /// Whether no advance is possible on `leaf`'s path.
    pub fn is_exhausted(&self, tree: &Tree, leaf: NodeId) -> bool {
        self.path_digits(tree, leaf)
            .iter()
            .all(|d| d.0 == self.states_per_layer - 1)
    }
}

/// Worst-case exit time: every DW layer's longest delay plus a confirmation budget for every
/// transaction on the deepest path.
pub fn ewt_max(tree: &Tree, shape: &Shape, confirmation_budget: u32) -> u32 {
    // Saturating: an absurd budget or shape comes out at u32::MAX, which the EWT ceiling refuses.
    let per_layer = u32::from(shape.step_blocks) * u32::from(shape.states_per_layer - 1);
    tree.dw_layers()
        .saturating_mul(per_layer)
        .saturating_add(confirmation_budget.saturating_mul(tree.path_transactions()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::LeafKind;

    #[test]
    fn two_layers_of_four_give_sixteen_states_then_exhaust() {
        let shape = Shape {
            arity: vec![2],
            leaf: LeafKind::Dw,
            states_per_layer: 4,
            step_blocks: 10,
            static_levels: 0,
        };
        let tree = Tree::new(4, &shape).unwrap();
        assert_eq!(tree.dw_layers(), 2);
        let leaf = tree.leaf_of(crate::types::ClientId(0)).unwrap();
        let mut odo = Odometer::new(&tree, &shape);
        let mut seen = vec![odo.path_digits(&tree, leaf)];
        while odo.advance(&tree, leaf).is_ok() {
            seen.push(odo.path_digits(&tree, leaf));
        }
        assert_eq!(seen.len(), 16);
        assert_eq!(seen[4], vec![StateIndex(1), StateIndex(0)]);
        assert!(odo.is_exhausted(&tree, leaf));
        assert!(matches!(
            odo.advance(&tree, leaf),
            Err(OdometerError::Exhausted { .. })
        ));
        assert_eq!(odo.delay_blocks(StateIndex(0)), 30);
        assert_eq!(odo.delay_blocks(StateIndex(3)), 0);
    }
}
