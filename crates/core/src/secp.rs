//! One libsecp256k1 context for the whole process.
//!
//! Creating a context costs a point multiplication (its blinding), more than most of the
//! operations done with it: the commitment rounds created a dozen per round. Like LDK, which
//! keeps one randomized context per object for its lifetime, we keep one randomized context per
//! process. Signing through the `musig` crate uses that crate's own thread-local context, which
//! it rerandomizes after each nonce generation and partial signature.

use std::sync::LazyLock;

use bitcoin::secp256k1::{All, Secp256k1};

/// The process-wide context, randomized once at first use.
pub static SECP: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);
