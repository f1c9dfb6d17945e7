//! The SuperScalar LSP: forming factories with its clients over BOLT-8 ([`formation`]).

pub mod daemon;
pub mod formation;
