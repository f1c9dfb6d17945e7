//! Each relay-policy rule of the mempool: what it must refuse and what it must accept.
//!
//! Runs on the chain `SUPERSCALAR_TEST_CHAIN` names (the embedded chain by default).

mod common;

fn new_chain() -> superscalar_chain::testkit::TestChain {
    superscalar_chain::testkit::TestChain::from_env()
}

include!("scenarios/mempool_policy.rs");
