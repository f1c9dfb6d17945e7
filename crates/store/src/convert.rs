//! The protocol's records (`superscalar_core`) as the store keeps them.

use bitcoin::OutPoint;
use superscalar_core::ceremony::{SignedTx as CoreSignedTx, SpendToSign};
use superscalar_core::TxKind;

use crate::records::{FactoryId, SignedTx, Spend, TxLabel};
use crate::StoreError;

/// The store's label of a factory transaction (`kickoff/3`, `timeout/in/3`...).
pub fn label(kind: TxKind) -> Result<TxLabel, StoreError> {
    TxLabel::new(kind.to_string())
}

/// The store's id of a factory.
pub fn factory_id(id: superscalar_core::FactoryId) -> FactoryId {
    FactoryId(id.0)
}

/// Signed transactions, labelled by their role.
pub fn signed_txs<'a>(
    txs: impl IntoIterator<Item = &'a CoreSignedTx>,
) -> Result<Vec<SignedTx>, StoreError> {
    txs.into_iter()
        .map(|s| {
            Ok(SignedTx {
                label: label(s.kind)?,
                tx: s.tx.clone(),
            })
        })
        .collect()
}

/// Spends about to be signed, each in the role of its transaction.
pub fn spends(spends: &[SpendToSign]) -> Result<Vec<(OutPoint, Spend)>, StoreError> {
    spends
        .iter()
        .map(|s| {
            Ok((
                s.outpoint,
                Spend {
                    role: label(s.kind)?,
                    sighash: s.sighash,
                    txid: s.txid,
                },
            ))
        })
        .collect()
}

/// The store's id of the leaf channel of client `client` in factory `factory` (the same on both
/// sides).
pub fn channel_id(factory: superscalar_core::FactoryId, client: u32) -> crate::records::ChannelId {
    use bitcoin::hashes::{sha256, Hash};
    let mut data = b"superscalar/leaf-channel".to_vec();
    data.extend_from_slice(&factory.0);
    data.extend_from_slice(&client.to_be_bytes());
    crate::records::ChannelId(sha256::Hash::hash(&data).to_byte_array())
}

/// The store's id of channel `channel` of client `client` in factory `factory` (the same on
/// both sides): [`channel_id`] for the leaf channel.
pub fn channel_id_of(
    factory: superscalar_core::FactoryId,
    client: u32,
    channel: superscalar_core::channel::ChannelRef,
) -> crate::records::ChannelId {
    use bitcoin::hashes::{sha256, Hash};
    match channel {
        superscalar_core::channel::ChannelRef::Leaf => channel_id(factory, client),
        superscalar_core::channel::ChannelRef::Sold(j) => {
            let mut data = b"superscalar/sold-channel".to_vec();
            data.extend_from_slice(&factory.0);
            data.extend_from_slice(&j.to_be_bytes());
            crate::records::ChannelId(sha256::Hash::hash(&data).to_byte_array())
        }
    }
}
