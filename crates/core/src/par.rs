//! Data parallelism for the LSP's side of the signing ceremony: a map over a slice on every core,
//! with `std::thread::scope` (no thread pool, no I/O).
//!
//! Items are handed out in small batches from a shared cursor, so that a few expensive items
//! (the root's transactions have N+1 signers, a leaf's have three) do not leave a core idle.
//! The calling thread works too. The libsecp256k1 operations the workers count (see
//! [`crate::secp::op_counts`]) are added to the calling thread's counts, so that a caller
//! measuring a step sees all of its work whichever thread did it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::secp::{add_counts, op_counts};

/// 0: as many threads as the machine has cores.
static MAX_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Use at most `n` threads for parallel work (0: one per core). For benchmarks.
pub fn set_max_threads(n: usize) {
    MAX_THREADS.store(n, Ordering::Relaxed);
}

/// Threads a parallel map uses.
pub fn threads() -> usize {
    match MAX_THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// `f(i, &items[i])` for every item, on every core; the results in the items' order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    run(items.len(), items.iter().enumerate(), |(i, t)| f(i, t))
}

/// `f(i, &mut items[i])` for every item, on every core; the results in the items' order.
pub fn map_mut<T: Send, R: Send>(items: &mut [T], f: impl Fn(usize, &mut T) -> R + Sync) -> Vec<R> {
    let len = items.len();
    run(len, items.iter_mut().enumerate(), |(i, t)| f(i, t))
}

fn run<I, R>(len: usize, iter: I, f: impl Fn(I::Item) -> R + Sync) -> Vec<R>
where
    I: Iterator + Send,
    I::Item: Send,
    R: Send,
{
    let threads = threads().min(len);
    if threads <= 1 {
        return iter.map(f).collect();
    }
    // Batches small enough to balance uneven items, large enough that the lock is not contended.
    let batch = (len / (threads * 16)).max(1);
    let cursor = Mutex::new(iter.enumerate());
    let work = || {
        let mut done = Vec::new();
        loop {
            let next: Vec<(usize, I::Item)> = {
                let mut it = cursor.lock().unwrap_or_else(|e| e.into_inner());
                it.by_ref().take(batch).collect()
            };
            if next.is_empty() {
                return done;
            }
            done.extend(next.into_iter().map(|(i, item)| (i, f(item))));
        }
    };
    let mut results: Vec<Option<R>> = (0..len).map(|_| None).collect();
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(|| {
                    let before = op_counts();
                    let done = work();
                    (done, op_counts().since(&before))
                })
            })
            .collect();
        for (i, r) in work() {
            results[i] = Some(r);
        }
        for h in helpers {
            let (done, counts) = match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            add_counts(&counts);
            for (i, r) in done {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_the_items_order_and_every_item_is_mapped_once() {
        let items: Vec<u64> = (0..1000).collect();
        let out = map(&items, |i, x| {
            assert_eq!(i as u64, *x);
            x * 2
        });
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        let mut items = items;
        let idx = map_mut(&mut items, |i, x| {
            *x += 1;
            i
        });
        assert_eq!(idx, (0..1000).collect::<Vec<_>>());
        assert_eq!(items[999], 1000);
        assert!(map(&Vec::<u8>::new(), |_, x| *x).is_empty());
    }

    #[test]
    fn counts_of_worker_threads_reach_the_caller() {
        let before = op_counts();
        let items = vec![(); 64];
        map(&items, |_, _| crate::secp::count(|c| c.schnorr_verify += 1));
        assert_eq!(op_counts().since(&before).schnorr_verify, 64);
    }
}
