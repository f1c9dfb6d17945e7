//! Script hints: the output scripts of the nodes beside a client's path, which the LSP sends the
//! client so that it does not aggregate the keys of every other client of the factory.
//!
//! A client signs the transactions of its exit path. Each creates, beside the output the client's
//! path continues through, the outputs of the sibling subtrees (and, at the leaf, the other
//! clients' channels). Computing those scripts would mean aggregating the keys of every client
//! under every sibling: about 2.3N keys per client, O(N^2) over the factory. The client takes them
//! from the LSP instead, and computes itself everything that holds its own money: the funding
//! output and every output along its path (each aggregate includes its own key), its channel, its
//! stock and sales, every amount, every timeout and punishment.
//!
//! Why taking them on trust is safe: a hint only changes the bytes of transactions the client
//! signs, never an output that holds its money or an amount. A MuSig2 signature on a transaction
//! exists only if every key of the spent output's aggregate signed the same bytes, and the client
//! goes live only after it checked, with keys it aggregated itself, the final signature of each
//! transaction of its path over the sighash it computed itself. So if it goes live, every
//! co-signer of each of those transactions signed exactly the transaction the client built,
//! hinted scripts included. Every honest client under a sibling computes that sibling's output
//! itself (it is on its own path) and signs only the true one; so a hinted script that is signed
//! is the true one, unless every client under that sibling colludes with the LSP, and then only
//! their own money is at stake. A lying LSP gets nothing: the client's partial signatures are over
//! a transaction nobody else signs (useless to anyone, and its nonces are never reused), the
//! final signatures do not verify, and the client does not go live. A hint for an output the
//! client does not expect, or a missing one, is refused before anything is signed.

use std::collections::BTreeMap;

use super::*;

/// The output scripts of the slots beside a client's path, as the LSP computed them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScriptHints {
    /// One script per slot: the `NodeInput` of every node beside the path, and the `Channel` of
    /// every other client of the leaf.
    pub scripts: Vec<(Slot, ScriptBuf)>,
}

/// Script hints a client refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HintProblem {
    /// No script for a slot beside the path.
    #[error("no script for {0:?}, which the client's path transactions create")]
    Missing(Slot),
    /// A script for a slot the client computes itself, or that its transactions do not create.
    #[error("a script for {0:?}, which is not beside the client's path")]
    Unexpected(Slot),
    /// Two scripts for one slot.
    #[error("two scripts for {0:?}")]
    Duplicate(Slot),
    /// A script that is not a taproot output (every hinted output is a MuSig2 P2TR).
    #[error("the script for {0:?} is not P2TR")]
    NotTaproot(Slot),
}

impl Factory {
    /// The nodes beside `client`'s path: children of its path's nodes that are not on the path.
    pub fn nodes_beside_path(&self, client: ClientId) -> Vec<NodeId> {
        let path = self.tree.path_of(client);
        path.iter()
            .flat_map(|n| self.tree.node(*n).children.iter().copied())
            .filter(|c| !path.contains(c))
            .collect()
    }

    /// The slots whose scripts `client` takes from the LSP: the inputs of the nodes beside its
    /// path, the channels of the other clients of its leaf, and the parts of the split timeouts
    /// it signs that hold other clients' money (the same key sets as the nodes beside its
    /// path). None depends on the version.
    pub fn hinted_slots(&self, client: ClientId) -> Vec<Slot> {
        let mut slots: Vec<Slot> = self
            .nodes_beside_path(client)
            .into_iter()
            .map(Slot::NodeInput)
            .collect();
        if let Some(leaf) = self.tree.leaf_of(client) {
            slots.extend(
                self.tree
                    .node(leaf)
                    .client_ids()
                    .filter(|c| *c != client)
                    .map(Slot::Channel),
            );
        }
        let v = self.initial_version();
        for job in self.client_jobs(client, &v).unwrap_or_default() {
            if let TxKind::Timeout(s) = job {
                slots.extend(self.timeout_parts(s).into_iter().filter(|p| {
                    matches!(p, Slot::TimeoutPart { node, .. }
                        if !self.tree.node(*node).clients.contains(&client.0))
                }));
            }
        }
        slots
    }

    /// LSP: the script hints `client` needs ([`Factory::with_script_hints`]).
    pub fn script_hints_for(&self, client: ClientId) -> Result<ScriptHints, FactoryError> {
        if client.0 as usize >= self.params.clients.len() {
            return Err(FactoryError::UnknownClient(client));
        }
        let v = self.initial_version();
        let scripts = self
            .hinted_slots(client)
            .into_iter()
            .map(|s| Ok((s, self.script_pubkey_at(s, &v)?)))
            .collect::<Result<_, FactoryError>>()?;
        Ok(ScriptHints { scripts })
    }

    /// Client: this factory, taking the scripts of the outputs beside `client`'s path from
    /// `hints` instead of aggregating their keys (see the module documentation for why that is
    /// safe). Refused unless `hints` has exactly one P2TR script for each slot of
    /// [`Factory::hinted_slots`].
    pub fn with_script_hints(
        mut self,
        client: ClientId,
        hints: ScriptHints,
    ) -> Result<Self, FactoryError> {
        if client.0 as usize >= self.params.clients.len() {
            return Err(FactoryError::UnknownClient(client));
        }
        let expected = self.hinted_slots(client);
        let mut scripts = BTreeMap::new();
        for (slot, script) in hints.scripts {
            if !expected.contains(&slot) {
                return Err(HintProblem::Unexpected(slot).into());
            }
            if !script.is_p2tr() {
                return Err(HintProblem::NotTaproot(slot).into());
            }
            if scripts.insert(slot, script).is_some() {
                return Err(HintProblem::Duplicate(slot).into());
            }
        }
        if let Some(missing) = expected.iter().find(|s| !scripts.contains_key(s)) {
            return Err(HintProblem::Missing(*missing).into());
        }
        self.hints = scripts;
        Ok(self)
    }

    /// The hinted script of `slot`, if this factory was given one.
    pub(super) fn hinted_script(&self, slot: Slot) -> Option<ScriptBuf> {
        self.hints.get(&slot).cloned()
    }
}
