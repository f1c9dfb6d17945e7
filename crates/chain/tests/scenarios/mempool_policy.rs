// Scenarios shared by several test binaries (included with `include!`): each binary defines
// `new_chain()`, the chain they run on.
use bitcoin::{absolute, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxOut};
use common::*;
use superscalar_chain::{Chain, ChainError, RejectReason, TxStatus};
use superscalar_chain::testkit::{Backend, TestChain};

/// Whether `chain` is real Bitcoin Core, whose policy differs from ours where the README's list of
/// differences says (replacement, cluster limits, which of two reasons a package reports).
fn is_core(chain: &TestChain) -> bool {
    chain.backend() == Backend::Bitcoind
}

/// A fresh chain with `n` mature coinbase coins owned by `signer`.
fn funded_chain(signer: &Signer, n: u32) -> (TestChain, Vec<(bitcoin::OutPoint, bitcoin::TxOut)>) {
    fund_chain(new_chain(), signer, n)
}

fn reason(r: Result<impl std::fmt::Debug, ChainError>) -> RejectReason {
    match r {
        Err(ChainError::Rejected { reason, .. }) => reason,
        other => panic!("expected a mempool rejection, got {other:?}"),
    }
}

fn prev(tx: &Transaction, vout: u32) -> (OutPoint, TxOut) {
    (
        OutPoint::new(tx.compute_txid(), vout),
        tx.output[vout as usize].clone(),
    )
}

const COIN: u64 = 5_000_000_000;

/// A confirmed v2 transaction splitting a coinbase into `n` outputs of `value` owned by `s`.
fn split(
    chain: &TestChain,
    s: &Signer,
    coin: (OutPoint, TxOut),
    n: usize,
    value: u64,
) -> Transaction {
    let outs = (0..n).map(|_| out(value, s.p2tr())).collect();
    let tx = s.spend(coin, outs, 2);
    chain
        .mine_block_with(std::slice::from_ref(&tx), &burn())
        .unwrap();
    tx
}

#[test]
fn garbage_bytes_are_a_decode_error() {
    let chain = new_chain();
    for bytes in [&b""[..], &[0xde, 0xad, 0xbe, 0xef][..], &[0u8; 300][..]] {
        let r = reason(chain.submit_raw_transaction(bytes));
        assert!(matches!(r, RejectReason::Decode(_)), "{r}");
    }
}

#[test]
fn missing_and_spent_inputs() {
    let s = Signer::new(10);
    let (chain, coins) = funded_chain(&s, 1);
    let fake = (
        OutPoint::new(
            bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros()),
            7,
        ),
        out(1000, s.p2tr()),
    );
    let fake = (
        OutPoint {
            txid: fake.0.txid,
            vout: 3,
        },
        fake.1,
    );
    let r = reason(chain.submit_transaction(&s.spend(fake, vec![out(500, s.p2tr())], 2)));
    assert!(
        matches!(r, RejectReason::MissingInput { input: 0, .. }),
        "{r}"
    );
    // Spent in a block: missing afterwards.
    let a = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    chain.submit_transaction(&a).unwrap();
    chain.mine_blocks(1, &burn()).unwrap();
    let b = s.spend(coins[0].clone(), vec![out(COIN - 2_000, s.p2tr())], 2);
    assert!(matches!(
        reason(chain.submit_transaction(&b)),
        RejectReason::MissingInput { .. }
    ));
    // Already confirmed.
    assert!(matches!(
        reason(chain.submit_transaction(&a)),
        RejectReason::AlreadyConfirmed(_)
    ));
}

#[test]
fn double_spend_in_mempool_is_a_conflict() {
    let s = Signer::new(11);
    let (chain, coins) = funded_chain(&s, 1);
    let a = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    let b = s.spend(coins[0].clone(), vec![out(COIN - 50_000, s.p2tr())], 2);
    chain.submit_transaction(&a).unwrap();
    assert!(matches!(
        reason(chain.submit_transaction(&a)),
        RejectReason::AlreadyInMempool(_)
    ));
    if is_core(&chain) {
        // Core replaces (full RBF: b pays more); we refuse every conflict.
        chain.submit_transaction(&b).unwrap();
        assert_eq!(chain.tx_status(&a.compute_txid()).unwrap(), TxStatus::Unknown);
        return;
    }
    let r = reason(chain.submit_transaction(&b));
    assert!(
        matches!(r, RejectReason::Conflict { by, .. } if by == a.compute_txid()),
        "{r}"
    );
    // A block that confirms b evicts a.
    chain
        .mine_block_with(std::slice::from_ref(&b), &burn())
        .unwrap();
    assert_eq!(
        chain.tx_status(&a.compute_txid()).unwrap(),
        TxStatus::Unknown
    );
    assert_eq!(chain.mempool_len(), 0);
}

#[test]
fn immature_coinbase_is_refused_until_mature() {
    let s = Signer::new(12);
    let chain = new_chain();
    chain.mine_blocks(1, &s.p2tr()).unwrap();
    chain.mine_blocks(98, &burn()).unwrap();
    let cb = chain.block_at(1).unwrap().unwrap().txdata[0].clone();
    let tx = s.spend(prev(&cb, 0), vec![out(COIN - 1_000, s.p2tr())], 2);
    let r = reason(chain.submit_transaction(&tx));
    assert!(
        matches!(r, RejectReason::ImmatureCoinbase { mature_at: 101, .. }),
        "{r}"
    );
    chain.mine_blocks(1, &burn()).unwrap();
    chain.submit_transaction(&tx).unwrap();
}

#[test]
fn invalid_scripts_and_value_overflow_are_refused() {
    let s = Signer::new(13);
    let (chain, coins) = funded_chain(&s, 1);
    let bad = Signer::new(14).spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 2);
    assert!(matches!(
        reason(chain.submit_transaction(&bad)),
        RejectReason::ScriptInvalid { input: 0, .. }
    ));
    let mut nowitness = bad.clone();
    nowitness.input[0].witness = bitcoin::Witness::new();
    assert!(matches!(
        reason(chain.submit_transaction(&nowitness)),
        RejectReason::ScriptInvalid { .. }
    ));
    let greedy = s.spend(coins[0].clone(), vec![out(COIN + 1, s.p2tr())], 2);
    assert!(matches!(
        reason(chain.submit_transaction(&greedy)),
        RejectReason::InputsBelowOutputs { .. }
    ));
    let mut dup = unsigned(vec![coins[0].0, coins[0].0], vec![out(1_000, s.p2tr())], 2);
    s.sign_key_path(&mut dup, 0, &[coins[0].1.clone(), coins[0].1.clone()]);
    let r = reason(chain.submit_transaction(&dup));
    assert!(
        matches!(&r, RejectReason::Consensus(m) if m.contains("duplicate")),
        "{r}"
    );
    let huge = s.spend(
        coins[0].clone(),
        vec![out(21_000_000 * 100_000_000 + 1, s.p2tr())],
        2,
    );
    assert!(matches!(
        reason(chain.submit_transaction(&huge)),
        RejectReason::Consensus(_)
    ));
}

#[test]
fn nlocktime_is_enforced_for_the_next_block() {
    let s = Signer::new(15);
    let (chain, coins) = funded_chain(&s, 1);
    let lock = chain.tip().unwrap().height + 3;
    let mut tx = unsigned(vec![coins[0].0], vec![out(COIN - 1_000, s.p2tr())], 2);
    tx.lock_time = absolute::LockTime::from_height(lock).unwrap();
    s.sign_key_path(&mut tx, 0, &[coins[0].1.clone()]);
    // Next block height must exceed `lock`.
    chain.mine_blocks(2, &burn()).unwrap();
    let r = reason(chain.submit_transaction(&tx));
    assert!(matches!(r, RejectReason::NonFinal { .. }), "{r}");
    chain.mine_blocks(1, &burn()).unwrap();
    chain.submit_transaction(&tx).unwrap();
    // Time-based lock in the future.
    let mtp = chain.median_time_past().unwrap();
    let mut tt = unsigned(
        vec![OutPoint::new(tx.compute_txid(), 0)],
        vec![out(COIN - 2_000, s.p2tr())],
        2,
    );
    tt.lock_time = absolute::LockTime::from_time(mtp + 3600).unwrap();
    s.sign_key_path(&mut tt, 0, &[tx.output[0].clone()]);
    assert!(matches!(
        reason(chain.submit_transaction(&tt)),
        RejectReason::NonFinal { .. }
    ));
    // All sequences final: the lock time is ignored.
    tt.input[0].sequence = Sequence::MAX;
    s.sign_key_path(&mut tt, 0, &[tx.output[0].clone()]);
    chain.submit_transaction(&tt).unwrap();
}

#[test]
fn bip68_relative_locks_by_height_and_time() {
    let s = Signer::new(16);
    let (chain, coins) = funded_chain(&s, 1);
    let parent = split(&chain, &s, coins[0].clone(), 2, 100_000_000);
    let mut tx = unsigned(
        vec![OutPoint::new(parent.compute_txid(), 0)],
        vec![out(99_999_000, s.p2tr())],
        2,
    );
    tx.input[0].sequence = Sequence::from_height(3);
    s.sign_key_path(&mut tx, 0, &[parent.output[0].clone()]);
    // Confirmed at tip; valid in the block at tip + 3.
    chain.mine_blocks(1, &burn()).unwrap();
    let r = reason(chain.submit_transaction(&tx));
    assert!(matches!(r, RejectReason::SequenceLocked { .. }), "{r}");
    chain.mine_blocks(1, &burn()).unwrap();
    chain.submit_transaction(&tx).unwrap();
    // Version 1 ignores BIP68.
    let mut v1 = unsigned(
        vec![OutPoint::new(parent.compute_txid(), 1)],
        vec![out(99_999_000, s.p2tr())],
        1,
    );
    v1.input[0].sequence = Sequence::from_height(500);
    s.sign_key_path(&mut v1, 0, &[parent.output[1].clone()]);
    chain.submit_transaction(&v1).unwrap();
    // Time-based lock of 512 * 10 s, far beyond the regtest clock.
    let mut tl = unsigned(
        vec![OutPoint::new(tx.compute_txid(), 0)],
        vec![out(99_998_000, s.p2tr())],
        2,
    );
    tl.input[0].sequence = Sequence::from_512_second_intervals(10);
    s.sign_key_path(&mut tl, 0, &[tx.output[0].clone()]);
    chain.mine_blocks(1, &burn()).unwrap();
    assert!(matches!(
        reason(chain.submit_transaction(&tl)),
        RejectReason::SequenceLocked { .. }
    ));
}

#[test]
fn minimum_relay_fee() {
    let s = Signer::new(17);
    let (chain, coins) = funded_chain(&s, 1);
    let zero = s.spend(coins[0].clone(), vec![out(COIN, s.p2tr())], 2);
    let vsize = zero.vsize() as u64;
    let r = reason(chain.submit_transaction(&zero));
    assert!(matches!(r, RejectReason::FeeTooLow { .. }), "{r}");
    let low = s.spend(coins[0].clone(), vec![out(COIN - vsize + 1, s.p2tr())], 2);
    assert!(matches!(
        reason(chain.submit_transaction(&low)),
        RejectReason::FeeTooLow { .. }
    ));
    let exact = s.spend(coins[0].clone(), vec![out(COIN - vsize, s.p2tr())], 2);
    chain.submit_transaction(&exact).unwrap();
    assert_eq!(
        chain.mempool_fee(&exact.compute_txid()),
        Some(Amount::from_sat(vsize))
    );
}

#[test]
fn non_standard_transactions_are_refused() {
    let s = Signer::new(18);
    let (chain, coins) = funded_chain(&s, 1);
    let cases: Vec<(Vec<TxOut>, i32, &str)> = vec![
        (
            vec![out(COIN - 1_000, ScriptBuf::from_bytes(vec![0x51]))],
            2,
            "scriptpubkey",
        ),
        (vec![out(COIN - 1_000, s.p2tr())], 4, "version"),
        (vec![out(COIN - 1_000, s.p2tr())], 0, "version"),
    ];
    for (outputs, version, what) in cases {
        let tx = s.spend(coins[0].clone(), outputs, version);
        let r = reason(chain.submit_transaction(&tx));
        assert!(
            matches!(&r, RejectReason::NonStandard(m) if m.contains(what)),
            "{what}: {r}"
        );
    }
    // Two dust outputs in a fee-paying transaction.
    let tx = s.spend(
        coins[0].clone(),
        vec![
            out(COIN - 1_000, s.p2tr()),
            out(1, s.p2tr()),
            out(1, s.p2tr()),
        ],
        2,
    );
    assert!(matches!(
        reason(chain.submit_transaction(&tx)),
        RejectReason::Dust(_)
    ));
    // One dust output in a fee-paying transaction: ephemeral dust must be zero-fee.
    let tx = s.spend(
        coins[0].clone(),
        vec![out(COIN - 1_000, s.p2tr()), out(329, s.p2tr())],
        2,
    );
    assert!(matches!(
        reason(chain.submit_transaction(&tx)),
        RejectReason::Dust(_)
    ));
    // Exactly the dust threshold is fine, and so are OP_RETURN outputs, several and large
    // (Core 30+ counts only their total against MAX_STANDARD_TX_WEIGHT / 4).
    let tx = s.spend(
        coins[0].clone(),
        vec![
            out(COIN - 1_000, s.p2tr()),
            out(330, s.p2tr()),
            out(0, op_return(80)),
            out(0, op_return(300)),
        ],
        2,
    );
    chain.submit_transaction(&tx).unwrap();
}

#[test]
fn truc_topology_and_sizes() {
    let s = Signer::new(19);
    let (chain, coins) = funded_chain(&s, 2);
    // A v3 transaction over 10,000 vB.
    let big_outs: Vec<TxOut> = (0..240).map(|_| out(100_000, s.p2tr())).collect();
    let big = s.spend(coins[0].clone(), big_outs, 3);
    assert!(big.vsize() > 10_000);
    let r = reason(chain.submit_transaction(&big));
    assert!(
        matches!(&r, RejectReason::Truc(m) if m.contains("too") || m.contains("more than")),
        "{r}"
    );

    // A v3 parent and a v3 child: fine. A second child, a grandchild: refused.
    let parent = s.spend(
        coins[0].clone(),
        vec![
            out(1_000_000_000, s.p2tr()),
            out(1_000_000_000, s.p2tr()),
            out(COIN - 2_000_010_000, s.p2tr()),
        ],
        3,
    );
    chain.submit_transaction(&parent).unwrap();
    let child = s.spend(prev(&parent, 0), vec![out(999_990_000, s.p2tr())], 3);
    chain.submit_transaction(&child).unwrap();
    let sibling = s.spend(prev(&parent, 1), vec![out(999_990_000, s.p2tr())], 3);
    let r = reason(chain.submit_transaction(&sibling));
    if is_core(&chain) {
        // Core tries sibling eviction, which this sibling's fee does not pay for.
        assert!(matches!(&r, RejectReason::Conflict { .. }), "{r}");
    } else {
        assert!(
            matches!(&r, RejectReason::Truc(m) if m.contains("descendant")),
            "{r}"
        );
    }
    let grandchild = s.spend(prev(&child, 0), vec![out(999_980_000, s.p2tr())], 3);
    let r = reason(chain.submit_transaction(&grandchild));
    assert!(
        matches!(&r, RejectReason::Truc(m) if m.contains("ancestors")),
        "{r}"
    );
    // Non-v3 spending unconfirmed v3.
    let v2_child = s.spend(
        prev(&parent, 2),
        vec![out(COIN - 2_000_020_000, s.p2tr())],
        2,
    );
    let r = reason(chain.submit_transaction(&v2_child));
    assert!(
        matches!(&r, RejectReason::Truc(m) if m.contains("non-version=3")),
        "{r}"
    );

    // v3 spending unconfirmed non-v3; and a v3 child over 1,000 vB.
    let v2 = s.spend(
        coins[1].clone(),
        vec![
            out(1_000_000_000, s.p2tr()),
            out(COIN - 1_000_010_000, s.p2tr()),
        ],
        2,
    );
    chain.submit_transaction(&v2).unwrap();
    let v3_of_v2 = s.spend(prev(&v2, 0), vec![out(999_990_000, s.p2tr())], 3);
    let r = reason(chain.submit_transaction(&v3_of_v2));
    assert!(
        matches!(&r, RejectReason::Truc(m) if m.contains("cannot spend from non-version=3")),
        "{r}"
    );
    chain.mine_blocks(1, &burn()).unwrap();
    let p3 = s.spend(prev(&v2, 0), vec![out(999_990_000, s.p2tr())], 3);
    chain.submit_transaction(&p3).unwrap();
    let fat_outs: Vec<TxOut> = (0..25).map(|_| out(1_000_000, s.p2tr())).collect();
    let fat_child = s.spend(prev(&p3, 0), fat_outs, 3);
    assert!(fat_child.vsize() > 1_000);
    let r = reason(chain.submit_transaction(&fat_child));
    assert!(
        matches!(&r, RejectReason::Truc(m) if m.contains("child")),
        "{r}"
    );
    // Once the parent confirms, the same transaction is no longer a TRUC child.
    chain.mine_blocks(1, &burn()).unwrap();
    chain.submit_transaction(&fat_child).unwrap();
}

/// A zero-fee v3 parent with a P2A anchor of `anchor` sat and one P2TR output.
fn anchored_parent(s: &Signer, coin: (OutPoint, TxOut), anchor: u64) -> Transaction {
    let value = coin.1.value.to_sat() - anchor;
    s.spend(
        coin,
        vec![out(value, s.p2tr()), out(anchor, ScriptBuf::new_p2a())],
        3,
    )
}

/// A v3 child spending the parent's anchor (vout 1) and a confirmed coin, paying `fee`.
fn anchor_child(
    s: &Signer,
    parent: &Transaction,
    coin: (OutPoint, TxOut),
    fee: u64,
) -> Transaction {
    let anchor = prev(parent, 1);
    let value = coin.1.value.to_sat() + anchor.1.value.to_sat() - fee;
    let mut tx = unsigned(vec![anchor.0, coin.0], vec![out(value, s.p2tr())], 3);
    s.sign_key_path(&mut tx, 1, &[anchor.1, coin.1]);
    tx
}

#[test]
fn zero_fee_p2a_parent_needs_a_child_in_a_package() {
    let s = Signer::new(20);
    let (chain, coins) = funded_chain(&s, 2);
    let funding = split(&chain, &s, coins[1].clone(), 2, 100_000);
    let parent = anchored_parent(&s, coins[0].clone(), 0);
    // Alone: refused (zero fee).
    let r = reason(chain.submit_transaction(&parent));
    assert!(matches!(r, RejectReason::FeeTooLow { .. }), "{r}");
    // A package whose feerate is below 1 sat/vB: refused.
    let cheap = anchor_child(&s, &parent, prev(&funding, 0), 100);
    let r = reason(chain.submit_package(&parent, &cheap));
    assert!(matches!(r, RejectReason::FeeTooLow { .. }), "{r}");
    // At exactly 1 sat/vB of the package: accepted.
    let probe = anchor_child(&s, &parent, prev(&funding, 0), 1_000);
    let package_vsize = (parent.vsize() + probe.vsize()) as u64;
    let child = anchor_child(&s, &parent, prev(&funding, 0), package_vsize);
    let acc = chain.submit_package(&parent, &child).unwrap();
    assert_eq!(acc.fee, Amount::from_sat(package_vsize));
    assert_eq!(acc.vsize, package_vsize);
    // Mined together, parent first.
    chain.mine_blocks(1, &burn()).unwrap();
    let p = chain.tx_status(&parent.compute_txid()).unwrap();
    let c = chain.tx_status(&child.compute_txid()).unwrap();
    assert_eq!(p.confirmations(), 1);
    assert_eq!(c.confirmations(), 1);
    assert_eq!(chain.mempool_len(), 0);
}

#[test]
fn ephemeral_dust_rules() {
    let s = Signer::new(21);
    let (chain, coins) = funded_chain(&s, 2);
    let funding = split(&chain, &s, coins[1].clone(), 3, 100_000);
    // A 240 sat anchor is not dust; a 0 sat anchor is (ephemeral dust).
    let dusty = anchored_parent(&s, coins[0].clone(), 0);
    // Dust with a fee: refused even in a package.
    let paying = s.spend(
        coins[0].clone(),
        vec![out(COIN - 1_000, s.p2tr()), out(0, ScriptBuf::new_p2a())],
        3,
    );
    let child = anchor_child(&s, &paying, prev(&funding, 0), 2_000);
    let r = reason(chain.submit_package(&paying, &child));
    assert!(
        matches!(&r, RejectReason::Dust(m) if m.contains("zero fee") || m.contains("0-fee")),
        "{r}"
    );
    // A child that does not spend the dust: refused.
    let mut other = unsigned(
        vec![
            OutPoint::new(dusty.compute_txid(), 0),
            funding_out(&funding, 1).0,
        ],
        vec![out(COIN + 100_000 - 5_000, s.p2tr())],
        3,
    );
    s.sign_key_path(
        &mut other,
        0,
        &[dusty.output[0].clone(), funding.output[1].clone()],
    );
    s.sign_key_path(
        &mut other,
        1,
        &[dusty.output[0].clone(), funding.output[1].clone()],
    );
    let r = reason(chain.submit_package(&dusty, &other));
    assert!(
        matches!(r, RejectReason::MissingEphemeralSpend(op) if op.vout == 1),
        "{r}"
    );
    // The anchor spent with a witness is non-standard.
    let mut stuffed = anchor_child(&s, &dusty, prev(&funding, 2), 2_000);
    stuffed.input[0].witness.push([1u8]);
    let r = reason(chain.submit_package(&dusty, &stuffed));
    assert!(
        matches!(&r, RejectReason::NonStandard(m) if m.contains("P2A") || m.contains("bad-witness-nonstandard")),
        "{r}"
    );
    // Spending the dust: accepted.
    let good = anchor_child(&s, &dusty, prev(&funding, 2), 2_000);
    chain.submit_package(&dusty, &good).unwrap();
    // A 240 sat anchor on a fee-paying v3 transaction is fine on its own.
    let (ch2, coins2) = funded_chain(&s, 1);
    let fee_anchor = s.spend(
        coins2[0].clone(),
        vec![out(COIN - 1_240, s.p2tr()), out(240, ScriptBuf::new_p2a())],
        3,
    );
    ch2.submit_transaction(&fee_anchor).unwrap();
}

fn op_return(len: usize) -> ScriptBuf {
    let data = vec![7u8; len];
    let push = <&bitcoin::script::PushBytes>::try_from(&data[..]).unwrap();
    ScriptBuf::new_op_return(push)
}

fn funding_out(tx: &Transaction, vout: u32) -> (OutPoint, TxOut) {
    prev(tx, vout)
}

#[test]
fn package_shape_is_checked() {
    let s = Signer::new(22);
    let (chain, coins) = funded_chain(&s, 2);
    let a = s.spend(coins[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 3);
    let b = s.spend(coins[1].clone(), vec![out(COIN - 1_000, s.p2tr())], 3);
    let r = reason(chain.submit_package(&a, &b));
    assert!(matches!(r, RejectReason::Package(_)), "{r}");
    // A parent that pays for itself: the child is judged alone.
    let child_free = s.spend(prev(&a, 0), vec![out(COIN - 1_000, s.p2tr())], 3);
    let r = reason(chain.submit_package(&a, &child_free));
    assert!(matches!(r, RejectReason::FeeTooLow { .. }), "{r}");
    let child = s.spend(prev(&a, 0), vec![out(COIN - 2_000, s.p2tr())], 3);
    chain.submit_package(&a, &child).unwrap();
    // The parent already in the mempool is deduplicated.
    let (ch2, coins2) = funded_chain(&s, 1);
    let p = s.spend(coins2[0].clone(), vec![out(COIN - 1_000, s.p2tr())], 3);
    ch2.submit_transaction(&p).unwrap();
    let c = s.spend(prev(&p, 0), vec![out(COIN - 2_000, s.p2tr())], 3);
    let acc = ch2.submit_package(&p, &c).unwrap();
    assert_eq!(acc.fee, Amount::from_sat(2_000));
}

#[test]
fn unconfirmed_chain_limit() {
    let s = Signer::new(23);
    let (chain, coins) = funded_chain(&s, 1);
    let mut last = coins[0].clone();
    for i in 0..25u64 {
        let tx = s.spend(last.clone(), vec![out(COIN - (i + 1) * 1_000, s.p2tr())], 2);
        chain.submit_transaction(&tx).unwrap();
        last = prev(&tx, 0);
    }
    let tx = s.spend(last, vec![out(COIN - 26_000, s.p2tr())], 2);
    if is_core(&chain) {
        // Core's cluster mempool limits clusters to 64 transactions, not ancestors to 25.
        chain.submit_transaction(&tx).unwrap();
        return;
    }
    assert!(matches!(
        reason(chain.submit_transaction(&tx)),
        RejectReason::TooLongMempoolChain(_)
    ));
    // All 25 are mined in one block, in order.
    chain.mine_blocks(1, &burn()).unwrap();
    assert_eq!(chain.mempool_len(), 0);
    assert_eq!(
        chain
            .block_at(chain.tip().unwrap().height)
            .unwrap()
            .unwrap()
            .txdata
            .len(),
        26
    );
    chain.submit_transaction(&tx).unwrap();
}

#[test]
fn fee_estimate_follows_floor_and_mempool() {
    let chain = new_chain();
    assert_eq!(
        chain.estimate_fee_rate(6).unwrap(),
        bitcoin::FeeRate::from_sat_per_vb_u32(1)
    );
    chain.set_fee_floor(bitcoin::FeeRate::from_sat_per_vb_u32(50));
    assert_eq!(
        chain.estimate_fee_rate(6).unwrap(),
        bitcoin::FeeRate::from_sat_per_vb_u32(50)
    );
}
