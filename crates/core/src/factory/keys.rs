//! The MuSig2 keys of a factory's outputs, each computed once: every party's key parsed and
//! ranked in KeySort order once, each output's aggregate key cached by slot, each taproot-tweaked
//! key cached by what determines it (internal key and merkle root), each fee coin's script cached.
//! The LSP computes them all at once on every core ([`Factory::aggregate_all`]); a client only
//! those of its own path and money (the rest of its transactions' outputs come as
//! [`super::ScriptHints`]).

use std::sync::Mutex;

use super::*;
use crate::musig::CosignerKey;
use crate::par;

/// What determines a tweaked key: the internal key and the merkle root.
type TweakId = ([u8; 32], Option<TapNodeHash>);

/// Parsed keys and caches of one factory.
#[derive(Debug, Default)]
pub(super) struct KeyCache {
    /// Every party's key parsed for MuSig2, and its rank in KeySort order: the LSP at index 0,
    /// client `c` at `1 + c`.
    parties: OnceLock<(Vec<CosignerKey>, Vec<u32>)>,
    /// Tweaked keys by (internal key, merkle root).
    tweaked: Mutex<HashMap<TweakId, TweakedAggregateKey>>,
    /// Fee coin scripts by client.
    fee_scripts: OnceLock<Vec<OnceLock<ScriptBuf>>>,
}

fn parse_and_rank(keys: &[PublicKey], parsed: Vec<CosignerKey>) -> (Vec<CosignerKey>, Vec<u32>) {
    let serialized: Vec<[u8; 33]> = keys.iter().map(|k| k.inner.serialize()).collect();
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_by_key(|i| serialized[*i as usize]);
    let mut rank = vec![0u32; keys.len()];
    for (r, i) in order.iter().enumerate() {
        rank[*i as usize] = r as u32;
    }
    (parsed, rank)
}

impl Factory {
    fn party_keys(&self) -> Vec<PublicKey> {
        std::iter::once(self.params.lsp_key)
            .chain(self.params.clients.iter().map(|c| c.key))
            .collect()
    }

    /// Every party's parsed key and KeySort rank (parsed on first use, on every core when
    /// `parallel`).
    fn parties(&self, parallel: bool) -> &(Vec<CosignerKey>, Vec<u32>) {
        self.keys.parties.get_or_init(|| {
            let keys = self.party_keys();
            // A rust-bitcoin public key is a valid point: libsecp parses its serialization.
            let parse = |_: usize, k: &PublicKey| {
                CosignerKey::new(k).expect("a rust-bitcoin public key parses")
            };
            let parsed = if parallel {
                par::map(&keys, parse)
            } else {
                keys.iter().enumerate().map(|(i, k)| parse(i, k)).collect()
            };
            parse_and_rank(&keys, parsed)
        })
    }

    /// A signer's key parsed for checking its partial signatures.
    pub fn cosigner_key(&self, signer: Signer) -> &CosignerKey {
        let (parsed, _) = self.parties(false);
        match signer {
            Signer::Lsp => &parsed[0],
            Signer::Client(c) => &parsed[1 + c.0 as usize],
        }
    }

    /// The MuSig2 aggregate of `signers`' keys (KeySort order, whatever the order given).
    pub(super) fn aggregate_signers(&self, signers: &[Signer]) -> Result<AggregateKey, MusigError> {
        let (parsed, rank) = self.parties(false);
        let mut idx: Vec<usize> = signers
            .iter()
            .map(|s| match s {
                Signer::Lsp => 0,
                Signer::Client(c) => 1 + c.0 as usize,
            })
            .collect();
        if idx.iter().any(|i| *i >= parsed.len()) {
            return Err(MusigError::Keys("unknown signer".into()));
        }
        idx.sort_by_key(|i| rank[*i]);
        let keys: Vec<&CosignerKey> = idx.iter().map(|i| &parsed[*i]).collect();
        self.keys_aggregated
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        AggregateKey::from_sorted(&keys)
    }

    /// The merkle root of `slot`'s script tree at version `v` (none without scripts), computed
    /// without the output key (which [`Factory::spend_info`] also derives).
    pub(super) fn merkle_root(
        &self,
        slot: Slot,
        v: &Version,
    ) -> Result<Option<TapNodeHash>, FactoryError> {
        let leaves = self.leaves(slot, v)?;
        if leaves.is_empty() {
            return Ok(None);
        }
        let node = TaprootBuilder::with_huffman_tree(leaves.into_iter().map(|l| (1, l)))
            .map_err(|e| MusigError::Keys(e.to_string()))?
            .try_into_node_info()
            .map_err(|_| MusigError::Keys("taproot tree".into()))?;
        Ok(Some(node.node_hash()))
    }

    /// `agg` tweaked for `merkle_root`, computed once per factory.
    pub(super) fn tweaked_key(
        &self,
        agg: &AggregateKey,
        merkle_root: Option<TapNodeHash>,
    ) -> Result<TweakedAggregateKey, FactoryError> {
        let id = (agg.internal_key().serialize(), merkle_root);
        let cache = || self.keys.tweaked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache().get(&id) {
            return Ok(k.clone());
        }
        let key = agg.tweaked(merkle_root)?;
        cache().entry(id).or_insert_with(|| key.clone());
        Ok(key)
    }

    /// A client's fee coin script, computed once.
    pub(super) fn cached_fee_coin_script(
        &self,
        client: ClientId,
        compute: impl FnOnce() -> ScriptBuf,
    ) -> ScriptBuf {
        let cells = self.keys.fee_scripts.get_or_init(|| {
            (0..self.params.clients.len())
                .map(|_| OnceLock::new())
                .collect()
        });
        cells[client.0 as usize].get_or_init(compute).clone()
    }

    /// Compute, on every core, the aggregate and tweaked key of every output of the factory at
    /// version `v` and every client's fee coin script: what the LSP needs before it builds the
    /// whole tree (later lookups hit the caches).
    pub fn aggregate_all(&self, v: &Version) -> Result<(), FactoryError> {
        let mut slots = self.all_slots(v);
        slots.extend((0..self.params.clients.len() as u32).map(|c| Slot::FeeCoin(ClientId(c))));
        self.aggregate_slots(&slots, v)
    }

    /// [`Factory::aggregate_all`] for `slots` only (those of the transactions a ceremony signs).
    pub fn aggregate_slots(&self, slots: &[Slot], v: &Version) -> Result<(), FactoryError> {
        self.parties(slots.len() > 64);
        // One task per aggregate: slots sharing one (a node's input and its kickoff's output, a
        // sold channel and the buyer's channel, a change output and its stock) come after, as
        // lookups, so that no aggregate or tweak is computed twice by two threads at once.
        let mut seen = std::collections::HashSet::with_capacity(slots.len());
        let (first, then): (Vec<Slot>, Vec<Slot>) = slots
            .iter()
            .copied()
            .filter(|s| seen.insert(*s))
            .partition(|s| {
                matches!(
                    s,
                    Slot::NodeInput(_) | Slot::Channel(_) | Slot::Stock(_) | Slot::FeeCoin(_)
                )
            });
        let key = |slot: Slot| match slot {
            Slot::FeeCoin(c) => self.check_slot(slot, v).map(|_| {
                self.fee_coin_script(c);
            }),
            _ => self.signing_key_at(slot, v).map(|_| ()),
        };
        par::map(&first, |_, slot| key(*slot))
            .into_iter()
            .collect::<Result<(), _>>()?;
        for slot in then {
            key(slot)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::StockSecrets;
    use crate::types::FactoryId;
    use bitcoin::key::Keypair;

    fn factory(n: u32, policy: TimeoutPolicy) -> Factory {
        let secp = Secp256k1::new();
        let kp = |i: u32| {
            let mut sk = [3u8; 32];
            sk[..4].copy_from_slice(&i.to_be_bytes());
            Keypair::from_seckey_slice(&secp, &sk).unwrap()
        };
        let mut config = FactoryConfig::regtest();
        config.timeout_policy = policy;
        let params = FactoryParams {
            id: FactoryId([1; 32]),
            config,
            lsp_key: PublicKey::new(kp(9999).public_key()),
            clients: (0..n)
                .map(|i| {
                    ClientSpec::new(PublicKey::new(kp(i).public_key()), Amount::from_sat(50_000))
                })
                .collect(),
            creation_height: 500,
            stock_hashes: Vec::new(),
            opening_msat: Vec::new(),
        }
        .with_stock_secrets(&StockSecrets::new([4; 32]));
        Factory::new(params).unwrap()
    }

    #[test]
    fn cached_keys_are_the_keys_computed_from_scratch() {
        for policy in [TimeoutPolicy::Inverted, TimeoutPolicy::LspSweep] {
            let f = factory(12, policy);
            let v = f.initial_version();
            f.aggregate_all(&v).unwrap();
            for slot in f.all_slots(&v) {
                let keys: Vec<PublicKey> = f
                    .signers(slot, &v)
                    .into_iter()
                    .map(|s| f.key_of(s))
                    .collect();
                let fresh = AggregateKey::new(&keys).unwrap();
                let agg = f.aggregate(slot, &v).unwrap();
                assert_eq!(agg.internal_key(), fresh.internal_key(), "{slot:?}");
                let root = f
                    .spend_info(slot, &v)
                    .unwrap()
                    .and_then(|i| i.merkle_root());
                assert_eq!(f.merkle_root(slot, &v).unwrap(), root, "{slot:?}");
                assert_eq!(
                    f.signing_key_at(slot, &v).unwrap().output_key(),
                    fresh.tweaked(root).unwrap().output_key(),
                    "{slot:?}"
                );
            }
            for c in 0..12 {
                let key = f.params().clients[c].key;
                let expected = ScriptBuf::new_p2tr(
                    &Secp256k1::verification_only(),
                    key.inner.x_only_public_key().0,
                    None,
                );
                assert_eq!(f.fee_coin_script(ClientId(c as u32)), expected);
            }
        }
    }
}
