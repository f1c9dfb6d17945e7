//! The kernel, not our mempool, decides what a block may contain: relative and absolute locks and
//! taproot signatures are enforced by Bitcoin Core's engine on blocks we mine directly.
//!
//! Runs on the chain `SUPERSCALAR_TEST_CHAIN` names (the embedded chain by default).

mod common;

fn new_chain() -> superscalar_chain::testkit::TestChain {
    superscalar_chain::testkit::TestChain::from_env()
}

include!("scenarios/kernel_is_judge.rs");
