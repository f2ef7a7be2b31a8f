//! What the node counts for its operators (`node_getNodes.metrics`, and through the box's
//! proxy `/metrics`): blocks and transactions committed, view changes, and how long committed
//! transactions waited. Sans-IO: the driver passes the durations; nothing here reads a clock.
//!
//! **Commit latency** is measured per transaction from its arrival at this node (a client's
//! submission, or its gossip from a peer) to the commit of its block here, so it includes the
//! wait in the pool, ordering, execution and the block's write. A transaction the node learns
//! of only in a block it fetches (it was down) is not measured.

use serde_json::{Value, json};
use std::time::Duration;

/// The histogram's upper bounds in milliseconds (Prometheus `le`, ending in +Inf): a box
/// commits in tens of milliseconds when healthy; seconds mean a view change or an overload.
pub const BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// A histogram of durations, as Prometheus reads one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Observations at or below each bound of [`BUCKETS_MS`], not cumulative; the last counts
    /// those above every bound.
    counts: [u64; BUCKETS_MS.len() + 1],
    /// The sum of all observations, in microseconds.
    sum_us: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1_000.0;
        let i = BUCKETS_MS.iter().position(|b| ms <= *b as f64).unwrap_or(BUCKETS_MS.len());
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// As JSON: `{"bucketsMs", "cumulative", "count", "sumMs"}`: `cumulative[i]` counts the
    /// observations at or below `bucketsMs[i]` (Prometheus `le`); `count` all of them.
    pub fn json(&self) -> Value {
        let mut running = 0;
        let cumulative: Vec<u64> = self.counts[..BUCKETS_MS.len()]
            .iter()
            .map(|c| {
                running += c;
                running
            })
            .collect();
        json!({
            "bucketsMs": BUCKETS_MS,
            "cumulative": cumulative,
            "count": self.count(),
            "sumMs": self.sum_us as f64 / 1_000.0,
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_the_first_bucket_that_holds_them_and_sum_up() {
        let mut h = Histogram::default();
        for ms in [0, 5, 6, 50, 51, 10_000, 10_001, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        h.observe(Duration::from_micros(5_001));
        let j = h.json();
        // le=5: 0 and 5; le=10: +6 and 5.001; le=50: +50; le=100: +51; … le=10000: +10000.
        assert_eq!(j["cumulative"], json!([2, 4, 4, 5, 6, 6, 6, 6, 6, 6, 7]));
        assert_eq!(j["count"], 9, "two above every bound count in the total only");
        assert_eq!(
            j["sumMs"],
            json!(0.0 + 5.0 + 6.0 + 50.0 + 51.0 + 10_000.0 + 10_001.0 + 60_000.0 + 5.001)
        );
        assert_eq!(
            j["bucketsMs"].as_array().unwrap().len(),
            j["cumulative"].as_array().unwrap().len()
        );
    }
}
