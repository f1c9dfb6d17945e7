//! Per-commitment secrets from the BOLT-3 shachain: the sender derives any secret from one seed;
//! the receiver stores the ones it is given in O(log n) and derives all older ones.
//! Built on LDK's implementation (`lightning::ln::chan_utils`).

use lightning::io;
use lightning::ln::chan_utils::{build_commitment_secret, CounterpartyCommitmentSecrets};
use lightning::ln::msgs::DecodeError;
use lightning::util::ser::{Readable, Writeable, Writer};
use thiserror::Error;

/// The first (highest) shachain index; each new secret uses the next lower one.
pub const FIRST_INDEX: u64 = (1 << 48) - 1;

/// A secret that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShachainError {
    /// The secret does not derive the ones already received: the sender lied or skipped one.
    #[error("secret {index} is inconsistent with earlier secrets")]
    Inconsistent {
        /// Its shachain index.
        index: u64,
    },
    /// Indices are 48-bit.
    #[error("shachain index {0} is beyond 2^48 - 1")]
    IndexOutOfRange(u64),
}

/// The shachain index of the `n`-th secret (n = 0 for the first).
pub fn index_of(n: u64) -> u64 {
    FIRST_INDEX - n.min(FIRST_INDEX)
}

/// The sender's side: secrets derived from a seed.
#[derive(Clone)]
pub struct SecretGenerator {
    seed: [u8; 32],
}

impl std::fmt::Debug for SecretGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretGenerator(..)")
    }
}

impl SecretGenerator {
    /// From a secret seed.
    pub fn new(seed: [u8; 32]) -> Self {
        SecretGenerator { seed }
    }

    /// The secret at shachain `index` (BOLT-3 `generate_from_seed`).
    pub fn secret(&self, index: u64) -> Result<[u8; 32], ShachainError> {
        if index > FIRST_INDEX {
            return Err(ShachainError::IndexOutOfRange(index));
        }
        Ok(build_commitment_secret(&self.seed, index))
    }
}

/// The receiver's side: every secret received so far, in at most 49 entries.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretStore(CounterpartyCommitmentSecrets);

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretStore({} entries)", self.stored())
    }
}

impl Default for SecretStore {
    fn default() -> Self {
        SecretStore(CounterpartyCommitmentSecrets::new())
    }
}

impl SecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store the secret at `index`, checking it against every secret received before. A refused
    /// secret leaves the store unchanged.
    pub fn provide(&mut self, index: u64, secret: [u8; 32]) -> Result<(), ShachainError> {
        if index > FIRST_INDEX {
            return Err(ShachainError::IndexOutOfRange(index));
        }
        let mut next = self.0.clone();
        next.provide_secret(index, secret)
            .map_err(|()| ShachainError::Inconsistent { index })?;
        self.0 = next;
        Ok(())
    }

    /// The secret at `index`, if it was received or can be derived from one received.
    pub fn get(&self, index: u64) -> Option<[u8; 32]> {
        if index > FIRST_INDEX || index < self.0.get_min_seen_secret() {
            return None;
        }
        self.0.get_secret(index)
    }

    /// The lowest index received (2^48 when none).
    pub fn lowest_index(&self) -> u64 {
        self.0.get_min_seen_secret()
    }

    /// How many secrets the store actually keeps.
    pub fn stored(&self) -> usize {
        self.slots().iter().filter(|s| s.1 != UNUSED).count()
    }

    /// LDK's 49 (secret, index) slots; an unused slot has index 2^48.
    fn slots(&self) -> Vec<([u8; 32], u64)> {
        let bytes = self.0.encode();
        bytes
            .chunks_exact(40)
            .take(SLOTS)
            .map(|c| {
                let secret = c[..32].try_into().expect("32 bytes");
                (
                    secret,
                    u64::from_be_bytes(c[32..].try_into().expect("8 bytes")),
                )
            })
            .collect()
    }

    /// Whether the slots are exactly those of a store given every secret from [`FIRST_INDEX`]
    /// down to its lowest index, in order (as a channel gives them), and consistent: each
    /// secret derives the ones of its subtree held in lower slots.
    fn is_canonical(&self) -> bool {
        let slots = self.slots();
        let lowest = slots.iter().map(|s| s.1).min().unwrap_or(UNUSED);
        let shape = slots.iter().enumerate().all(|(p, &(secret, index))| {
            match expected_index(p as u32, lowest) {
                Some(expected) => index == expected,
                None => index == UNUSED && secret == [0; 32],
            }
        });
        shape
            && slots.iter().enumerate().all(|(p, &(secret, index))| {
                index == UNUSED
                    || slots[..p].iter().all(|&(lower, lower_index)| {
                        lower_index == UNUSED
                            || lower_index >> p != index >> p
                            || derive(secret, p as u32, lower_index) == lower
                    })
            })
    }
}

/// How many slots LDK keeps, and the index of an unused one.
const SLOTS: usize = 49;
const UNUSED: u64 = 1 << 48;

/// The index slot `p` holds once every secret from [`FIRST_INDEX`] down to `lowest` was given:
/// the last one given (the smallest) whose lowest set bit is `p` (index 0 for slot 48).
fn expected_index(p: u32, lowest: u64) -> Option<u64> {
    if p == 48 {
        return (lowest == 0).then_some(0);
    }
    let (base, step) = (1u64 << p, 1u64 << (p + 1));
    let first = if lowest <= base {
        base
    } else {
        base + (lowest - base).div_ceil(step) * step
    };
    (first <= FIRST_INDEX).then_some(first)
}

/// The secret at `index` derived from the secret of slot `bits` (BOLT 3: only its low `bits`
/// bits are derived).
fn derive(secret: [u8; 32], bits: u32, index: u64) -> [u8; 32] {
    build_commitment_secret(&secret, index & ((1u64 << bits) - 1))
}

/// LDK's encoding of the store (49 slots and an empty TLV stream).
impl Writeable for SecretStore {
    fn write<W: Writer>(&self, w: &mut W) -> Result<(), io::Error> {
        self.0.write(w)
    }
}

/// Only a store [`SecretStore::provide`] can build from consecutive secrets, consistent, is
/// accepted: any other would answer wrongly, or panic inside LDK on a lookup.
impl Readable for SecretStore {
    fn read<R: io::Read>(r: &mut R) -> Result<Self, DecodeError> {
        let store = SecretStore(CounterpartyCommitmentSecrets::read(r)?);
        if store.is_canonical() {
            Ok(store)
        } else {
            Err(DecodeError::InvalidValue)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(n: u64, seed: [u8; 32]) -> SecretStore {
        let generator = SecretGenerator::new(seed);
        let mut store = SecretStore::new();
        for i in 0..n {
            let index = index_of(i);
            store
                .provide(index, generator.secret(index).unwrap())
                .unwrap();
        }
        store
    }

    proptest::proptest! {
        #[test]
        fn altered_stores_never_panic(
            n in 0u64..5000,
            edits in proptest::collection::vec((0usize..SLOTS * 40, proptest::prelude::any::<u8>()), 1..4),
        ) {
            let mut bytes = store(n, [9; 32]).encode();
            for (at, value) in edits {
                bytes[at] = value;
            }
            if let Ok(s) = crate::codec::decode::<SecretStore>(&bytes) {
                for i in 0..n + 2 {
                    let _ = s.get(index_of(i));
                }
            }
        }
    }

    fn used_slots(bytes: &[u8]) -> Vec<usize> {
        (0..SLOTS)
            .filter(|&p| {
                u64::from_be_bytes(bytes[p * 40 + 32..p * 40 + 40].try_into().unwrap()) != UNUSED
            })
            .collect()
    }

    /// A flipped bit in a secret is caught when another slot's secret derives it or is derived
    /// from it (the slots do not hold what would check the others: LDK checked each secret
    /// against the slots of its time, since overwritten).
    fn flips_are_caught(n: u64) -> usize {
        let bytes = store(n, [3; 32]).encode();
        let used = used_slots(&bytes);
        let index =
            |p: usize| u64::from_be_bytes(bytes[p * 40 + 32..p * 40 + 40].try_into().unwrap());
        let related = |q: usize| {
            used.iter()
                .any(|&p| p != q && index(p.min(q)) >> p.max(q) == index(p.max(q)) >> p.max(q))
        };
        let mut caught = 0;
        for &p in &used {
            let mut bad = bytes.clone();
            bad[p * 40] ^= 1;
            let refused = crate::codec::decode::<SecretStore>(&bad).is_err();
            assert_eq!(refused, related(p), "n = {n}, slot {p}");
            caught += usize::from(refused);
        }
        caught
    }

    #[test]
    fn stores_of_consecutive_secrets_round_trip() {
        for n in [0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 1000, 4097] {
            let s = store(n, [3; 32]);
            let bytes = s.encode();
            let back: SecretStore = crate::codec::decode(&bytes).unwrap();
            assert_eq!(back, s, "n = {n}");
            assert_eq!(back.lowest_index(), s.lowest_index());
        }
    }

    #[test]
    fn a_wrong_secret_or_a_misplaced_index_is_refused() {
        let caught: usize = (1..600).map(flips_are_caught).sum();
        assert!(caught > 600);
        let bytes = store(300, [3; 32]).encode();
        let used = used_slots(&bytes);
        // An index off by one, a slot emptied, a secret in an unused slot.
        for (offset, value) in [(37, 1u8), (39, 1)] {
            let mut bad = bytes.clone();
            bad[used[1] * 40 + offset] ^= value;
            assert!(crate::codec::decode::<SecretStore>(&bad).is_err());
        }
        let unused = (0..SLOTS).find(|p| !used.contains(p)).unwrap();
        let mut bad = bytes.clone();
        bad[unused * 40] = 1;
        assert!(crate::codec::decode::<SecretStore>(&bad).is_err());
    }
}
