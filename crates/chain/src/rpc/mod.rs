//! Bitcoin Core's JSON-RPC on both sides: [`BitcoindRpc`](client::BitcoindRpc), a [`Chain`](crate::Chain)
//! over a real bitcoind or `chaind`, and the server that makes an [`EmbeddedChain`](crate::EmbeddedChain)
//! answer like Bitcoin Core (`superscalar chaind`).

pub mod auth;
pub mod client;
pub mod codes;
pub mod process;
pub mod reject;
pub mod server;

pub use client::BitcoindRpc;
