//! The topology of a factory tree: which clients sit under which node, and which nodes carry a
//! Decker-Wattenhofer layer.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::shape::{LeafKind, Shape, ShapeError};
use crate::types::{ClientId, NodeId};

/// Most clients one factory supports.
pub const MAX_CLIENTS: usize = 65_536;

/// What a node of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// Kickoff only: its kickoff transaction's outputs feed the children directly.
    Static,
    /// Kickoff then a state transaction (a Decker-Wattenhofer layer) whose outputs feed the
    /// children.
    Dw,
    /// Kickoff then the leaf state transaction (a Decker-Wattenhofer layer) holding channels,
    /// fee coins and stock outputs.
    Leaf,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// This node.
    pub id: NodeId,
    /// Its parent (none for the root, which spends the funding output).
    pub parent: Option<NodeId>,
    /// Its children, in output order.
    pub children: Vec<NodeId>,
    /// Kind of node.
    pub kind: NodeKind,
    /// Level from the root (0).
    pub level: u8,
    /// The clients under this node (contiguous ids).
    pub clients: Range<u32>,
    /// Index of its Decker-Wattenhofer layer counted from the root (static nodes have none).
    pub layer: Option<u8>,
}

impl Node {
    /// Whether this node has a state transaction.
    pub fn has_state(&self) -> bool {
        self.kind != NodeKind::Static
    }

    /// The clients under this node.
    pub fn client_ids(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.clients.clone().map(ClientId)
    }
}

/// The whole tree of one factory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    nodes: Vec<Node>,
    leaf_of_client: Vec<NodeId>,
    leaf: LeafKind,
    levels: Vec<u8>,
}

impl Tree {
    /// Lay out `clients` clients as `shape` says. Any `clients >= 1` works: the last subtrees are
    /// smaller when the count does not fill the shape.
    pub fn new(clients: usize, shape: &Shape) -> Result<Self, ShapeError> {
        if clients == 0 {
            return Err(ShapeError::NoClients);
        }
        if clients > MAX_CLIENTS {
            return Err(ShapeError::TooManyClients(clients));
        }
        if shape.arity.is_empty() || shape.arity.contains(&0) {
            return Err(ShapeError::Arity(shape.arity.clone()));
        }
        let per_leaf = shape.leaf.clients_per_leaf();
        let leaves = (clients as u32).div_ceil(per_leaf);
        let levels = shape.levels_for(leaves);
        let static_levels = usize::from(shape.static_levels).min(levels.len());
        let mut tree = Tree {
            nodes: Vec::new(),
            leaf_of_client: vec![NodeId(0); clients],
            leaf: shape.leaf,
            levels: levels.clone(),
        };
        tree.build(None, 0, 0..leaves, clients as u32, per_leaf, static_levels);
        Ok(tree)
    }

    fn build(
        &mut self,
        parent: Option<NodeId>,
        level: usize,
        leaves: Range<u32>,
        clients: u32,
        per_leaf: u32,
        static_levels: usize,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        let first = leaves.start * per_leaf;
        let last = (leaves.end * per_leaf).min(clients);
        let is_leaf = level == self.levels.len();
        let kind = if is_leaf {
            NodeKind::Leaf
        } else if level < static_levels {
            NodeKind::Static
        } else {
            NodeKind::Dw
        };
        // Layers count only Decker-Wattenhofer nodes on the way down.
        let parent_layer = parent.and_then(|p| self.nodes[p.0 as usize].layer);
        let my_layer = match kind {
            NodeKind::Static => None,
            _ => Some(parent_layer.map_or(0, |l| l + 1)),
        };
        self.nodes.push(Node {
            id,
            parent,
            children: Vec::new(),
            kind,
            level: level as u8,
            clients: first..last,
            layer: my_layer,
        });
        if is_leaf {
            for c in first..last {
                self.leaf_of_client[c as usize] = id;
            }
            return id;
        }
        let below: u64 = self.levels[level + 1..]
            .iter()
            .map(|a| u64::from(*a))
            .product();
        let mut start = leaves.start;
        let mut children = Vec::new();
        while start < leaves.end {
            let end = (u64::from(start) + below).min(u64::from(leaves.end)) as u32;
            children.push(self.build(
                Some(id),
                level + 1,
                start..end,
                clients,
                per_leaf,
                static_levels,
            ));
            start = end;
        }
        self.nodes[id.0 as usize].children = children;
        id
    }

    /// The root node.
    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    /// A node by id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// All nodes, parents before children.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of clients.
    pub fn client_count(&self) -> usize {
        self.leaf_of_client.len()
    }

    /// The leaf holding `client`.
    pub fn leaf_of(&self, client: ClientId) -> Option<NodeId> {
        self.leaf_of_client.get(client.0 as usize).copied()
    }

    /// Nodes from the root down to the leaf holding `client`.
    pub fn path_of(&self, client: ClientId) -> Vec<NodeId> {
        let Some(mut id) = self.leaf_of(client) else {
            return Vec::new();
        };
        let mut path = vec![id];
        while let Some(p) = self.node(id).parent {
            path.push(p);
            id = p;
        }
        path.reverse();
        path
    }

    /// Leaf kind.
    pub fn leaf_kind(&self) -> LeafKind {
        self.leaf
    }

    /// Arity of each level above the leaves, from the root down.
    pub fn levels(&self) -> &[u8] {
        &self.levels
    }

    /// Stock groups of a leaf: client ranges that share one stock output.
    pub fn stock_groups(&self, leaf: NodeId) -> Vec<Range<u32>> {
        let n = self.node(leaf);
        let size = self.leaf.clients_per_stock();
        let mut groups = Vec::new();
        let mut start = n.clients.start;
        while start < n.clients.end {
            let end = (start + size).min(n.clients.end);
            groups.push(start..end);
            start = end;
        }
        groups
    }

    /// Number of Decker-Wattenhofer layers on the deepest path.
    pub fn dw_layers(&self) -> u32 {
        self.nodes
            .iter()
            .filter_map(|n| n.layer)
            .max()
            .map_or(0, |l| u32::from(l) + 1)
    }

    /// Tree transactions on the path to a leaf (a kickoff per node, a state per DW node).
    pub fn path_transactions(&self) -> u32 {
        let leaf = self.leaf_of_client[0];
        let mut count = 0;
        let mut id = Some(leaf);
        while let Some(n) = id {
            let node = self.node(n);
            count += if node.has_state() { 2 } else { 1 };
            id = node.parent;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(arity: &[u8], leaf: LeafKind, static_levels: u8) -> Shape {
        Shape {
            arity: arity.to_vec(),
            static_levels,
            leaf,
            ..Shape::default()
        }
    }

    #[test]
    fn small_factories_drop_unneeded_levels() {
        let s = shape(&[8, 4, 2], LeafKind::Dw, 0);
        let t = Tree::new(1, &s).unwrap();
        assert_eq!(t.nodes().len(), 1);
        assert_eq!(t.root().kind, NodeKind::Leaf);
        let t = Tree::new(5, &s).unwrap();
        assert_eq!(t.levels(), &[8]);
        assert_eq!(t.root().children.len(), 3);
        assert_eq!(t.node(t.root().children[2]).clients, 4..5);
    }

    #[test]
    fn the_last_arity_repeats_for_large_factories() {
        let s = shape(&[8, 4, 2], LeafKind::Dw, 1);
        let t = Tree::new(1024, &s).unwrap();
        assert_eq!(t.levels(), &[8, 4, 2, 2, 2, 2]);
        assert_eq!(t.root().kind, NodeKind::Static);
        assert_eq!(t.dw_layers(), 6);
        for c in [0u32, 511, 1023] {
            let path = t.path_of(ClientId(c));
            assert_eq!(path.len(), 7);
            assert!(t.node(*path.last().unwrap()).clients.contains(&c));
        }
    }

    #[test]
    fn ps_leaves_group_clients() {
        let s = shape(&[2], LeafKind::PseudoSpilman { arity: 3 }, 0);
        let t = Tree::new(13, &s).unwrap();
        let leaf = t.leaf_of(ClientId(12)).unwrap();
        assert_eq!(t.node(leaf).clients, 9..13);
        assert_eq!(t.stock_groups(leaf), vec![9..12, 12..13]);
    }
}
