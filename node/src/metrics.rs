//! What the node counts for its operators (`node_getNodes.metrics`, and through the box's
//! proxy `/metrics`): blocks and transactions committed, view changes, and how long committed
//! transactions waited. Sans-IO: the driver passes the durations; nothing here reads a clock.
//!
//! **Commit latency** is measured per transaction from its arrival at this node (a client's
//! submission, or its gossip from a peer) to the commit of its block here, so it includes the
//! wait in the pool, ordering, execution and the block's write. A transaction the node learns
//! of only in a block it fetches (it was down) is not measured.

use serde_json::{Value, json};
pub use vpbox_api::metrics::{BUCKETS_MS, Histogram};

/// The node's counters since it started.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Blocks committed.
    pub blocks: u64,
    /// Transactions in them.
    pub transactions: u64,
    /// Views this node moved to (each a view change it took part in or caught up with).
    pub view_changes: u64,
    /// How long each committed transaction took from its arrival here.
    pub commit_latency: Histogram,
}

impl Metrics {
    /// As JSON for `node_getNodes.metrics`.
    pub fn json(&self) -> Value {
        json!({
            "blocksCommitted": self.blocks,
            "transactionsCommitted": self.transactions,
            "viewChanges": self.view_changes,
            "commitLatency": self.commit_latency.json(),
        })
    }
}
