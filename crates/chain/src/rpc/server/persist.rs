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

/// What became of the mempool saved at the last stop, when `chaind` started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MempoolLoad {
    /// Transactions admitted again.
    pub accepted: usize,
    /// Saved transactions no longer valid (confirmed or conflicting since), dropped.
    pub dropped: usize,
    /// Why the file was ignored as a whole (not ours, or torn by a crash), if it was.
    pub ignored: Option<String>,
}

/// Submit the transactions saved at `path` again. A missing file is an empty mempool; an
/// unreadable, foreign or torn one is ignored (and says why): it never stops a start.
pub(crate) fn load(chain: &EmbeddedChain, path: &Path) -> MempoolLoad {
    let ignored = |why: String| {
        tracing::warn!(path = %path.display(), why, "mempool file ignored");
        MempoolLoad {
            ignored: Some(format!("{}: {why}; ignored", path.display())),
            ..MempoolLoad::default()
        }
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return MempoolLoad::default(),
        Err(e) => return ignored(format!("cannot read it: {e}")),
    };
    let Some(body) = bytes.strip_prefix(MAGIC) else {
        return ignored("not a chaind mempool file".into());
    };
    let txs = match deserialize::<Vec<Transaction>>(body) {
        Ok(t) => t,
        Err(e) => return ignored(format!("corrupt (a crash while it was written?): {e}")),
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
    MempoolLoad {
        accepted,
        dropped: txs.len() - accepted,
        ignored: None,
    }
}
