//! The mempool across restarts, like Core's `-persistmempool`: its transactions, in arrival
//! order, saved to `mempool.dat` at stop and submitted again at start (those no longer valid
//! are dropped).

use std::fs;
use std::io::Write;
use std::path::Path;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::Transaction;

use crate::{Chain, EmbeddedChain};

/// The file's name in the network directory.
pub(crate) const MEMPOOL_FILE: &str = "mempool.dat";
/// The file starts with this (our format; not Core's).
const MAGIC: &[u8] = b"superscalar-chaind-mempool-v1\n";

/// Write the mempool's transactions to `path` (atomically: beside it, then renamed).
pub(crate) fn save(chain: &EmbeddedChain, path: &Path) -> std::io::Result<usize> {
    let txs = chain.mempool_transactions();
    let mut bytes = MAGIC.to_vec();
    bytes.extend(serialize(&txs));
    let tmp = path.with_extension("dat.new");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(txs.len())
}

/// Submit the transactions saved at `path` again; returns (accepted, dropped). A missing file
/// is an empty mempool; an unreadable one is reported and ignored.
pub(crate) fn load(chain: &EmbeddedChain, path: &Path) -> (usize, usize) {
    let Ok(bytes) = fs::read(path) else {
        return (0, 0);
    };
    let Some(body) = bytes.strip_prefix(MAGIC) else {
        tracing::warn!(path = %path.display(), "not a chaind mempool file; ignored");
        return (0, 0);
    };
    let Ok(txs) = deserialize::<Vec<Transaction>>(body) else {
        tracing::warn!(path = %path.display(), "corrupt mempool file; ignored");
        return (0, 0);
    };
    let mut accepted = 0;
    let mut i = 0;
    while i < txs.len() {
        let tx = &txs[i];
        match chain.submit_transaction(tx) {
            Ok(_) => accepted += 1,
            Err(e) => {
                // A parent that paid for itself only with its child (a zero-fee TRUC parent, say)
                // went in as a package: it comes back as one.
                let child = txs.get(i + 1).filter(|c| {
                    let parent = tx.compute_txid();
                    c.input
                        .iter()
                        .any(|input| input.previous_output.txid == parent)
                });
                if let Some(child) = child {
                    if chain.submit_package(tx, child).is_ok() {
                        accepted += 2;
                        i += 2;
                        continue;
                    }
                }
                tracing::info!(txid = %tx.compute_txid(), error = %e, "saved mempool transaction dropped");
            }
        }
        i += 1;
    }
    (accepted, txs.len() - accepted)
}
