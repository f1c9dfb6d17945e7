//! SuperScalar's messages between the LSP and its clients, carried as Lightning custom messages
//! over BOLT-8 (LDK's `PeerManager` with `lightning-net-tokio`).
//!
//! The protocol lives in odd message types 54001..=54099 (see [`messages`]): odd so that a
//! Lightning peer that does not know them ignores them, and clear of LSPS0 (37913) and bLIP-56
//! (32800). The first message each way is [`messages::Hello`], which fixes the protocol version and
//! the network; anything else before it, any even type we do not know, any message above its size
//! limit and any message that does not decode is answered with a typed [`messages::ErrorMsg`] and
//! the connection is dropped.

pub mod invoice;
pub mod messages;
pub mod transport;
