//! The durable intake: a transaction the node acknowledges has been written and fsynced here
//! first, so it survives kill -9 and is proposed again after a restart until it is committed,
//! even if the quorum is gone for hours.
//!
//! Stored in a [`Journal`]. Admissions are grouped: [`Intake::admit`] writes any number of
//! transactions under one fsync. Committed transactions are forgotten in memory at once and
//! from the file lazily: the log is rewritten with only the pending ones when the forgotten
//! outnumber them, by count (past 1,024) or by bytes (past 16 MiB, [`FORGOTTEN_BYTES`]), so a
//! commit costs no I/O here in the common case. A committed transaction still in the file
//! after a crash or a stop is filtered out at start (the node checks the ledger).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use vpbox_sm::sm3::Digest;

use vpbox_journal::JournalError;

use crate::host::Log;

/// Why the intake could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// The journal failed or is corrupt.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A record with a good checksum that this build cannot read as a transaction.
    #[error("intake {path}: record {index} is not a transaction this build can read")]
    Unreadable {
        /// The log.
        path: std::path::PathBuf,
        /// The record's index.
        index: usize,
    },
}

/// The bytes of forgotten (committed) transactions the log may hold beyond its pending ones'
/// before it is rewritten. By count alone (1,024), a log of day-end batches (5,000 pairs, 330
/// KB each) grew to 340 MB, and a restarted node read and hashed all of it before it answered:
/// 2.3 s of a catch-up at ten million anchors. 16 MiB is read at start in about 0.1 s.
const FORGOTTEN_BYTES: usize = 16 << 20;

/// The durable queue of acknowledged, uncommitted transactions, keyed by transaction hash.
pub struct Intake {
    log: Box<dyn Log>,
    pending: HashMap<Digest, Vec<u8>>,
    order: VecDeque<Digest>,
    /// Forgotten records still in the log: how many, and their bytes.
    forgotten: usize,
    forgotten_bytes: usize,
    /// The bytes of the pending records.
    pending_bytes: usize,
}

impl Intake {
    /// Opens (or creates) the log. `key` maps a stored transaction to its hash; a record that
    /// passed its checksum but is not a transaction (`None`) stops the node: it was
    /// acknowledged, so it is never dropped silently.
    pub fn open(path: &Path, key: impl Fn(&[u8]) -> Option<Digest>) -> Result<Self, IntakeError> {
        let (log, records) = crate::log::open(path)?;
        Self::from_log(Box::new(log), records, path, key)
    }

    /// The intake over an opened log and the records it held (`path` names it in errors).
    pub fn from_log(
        log: Box<dyn Log>,
        records: Vec<Vec<u8>>,
        path: &Path,
        key: impl Fn(&[u8]) -> Option<Digest>,
    ) -> Result<Self, IntakeError> {
        let mut intake = Self {
            log,
            pending: HashMap::new(),
            order: VecDeque::new(),
            forgotten: 0,
            forgotten_bytes: 0,
            pending_bytes: 0,
        };
        for (index, bytes) in records.into_iter().enumerate() {
            let Some(h) = key(&bytes) else {
                return Err(IntakeError::Unreadable { path: path.to_path_buf(), index });
            };
            match intake.pending.entry(h) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    intake.forgotten += 1;
                    intake.forgotten_bytes += bytes.len();
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    intake.pending_bytes += bytes.len();
                    slot.insert(bytes);
                    intake.order.push_back(h);
                }
            }
        }
        Ok(intake)
    }

    /// Records the transactions (already verified) and makes them durable with one fsync.
    /// Returns, for each, whether it was new (`false`: pending already, a duplicate).
    pub fn admit(&mut self, txs: &[(Digest, &[u8])]) -> Result<Vec<bool>, JournalError> {
        let mut fresh = Vec::with_capacity(txs.len());
        let mut wrote = false;
        for (h, bytes) in txs {
            if self.pending.contains_key(h) {
                fresh.push(false);
                continue;
            }
            self.log.append(bytes)?;
            wrote = true;
            self.pending_bytes += bytes.len();
            self.pending.insert(*h, bytes.to_vec());
            self.order.push_back(*h);
            fresh.push(true);
        }
        if wrote {
            self.log.sync()?;
        }
        Ok(fresh)
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &Digest) -> bool {
        self.pending.contains_key(hash)
    }

    /// Pending transactions in arrival order.
    pub fn pending(&self) -> impl Iterator<Item = (&Digest, &[u8])> {
        self.order.iter().filter_map(|h| self.pending.get(h).map(|b| (h, b.as_slice())))
    }

    /// How many are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none are pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets committed transactions; rewrites the log when the forgotten outnumber the
    /// pending, by count (past 1,024) or by bytes (past [`FORGOTTEN_BYTES`]).
    pub fn committed(&mut self, hashes: &[Digest]) -> Result<(), JournalError> {
        for h in hashes {
            if let Some(bytes) = self.pending.remove(h) {
                self.forgotten += 1;
                self.forgotten_bytes += bytes.len();
                self.pending_bytes -= bytes.len();
            }
        }
        while self.order.front().is_some_and(|h| !self.pending.contains_key(h)) {
            self.order.pop_front();
        }
        if self.forgotten > 1024.max(self.pending.len())
            || self.forgotten_bytes > FORGOTTEN_BYTES.max(self.pending_bytes)
        {
            self.order.retain(|h| self.pending.contains_key(h));
            let pending = &self.pending;
            self.log.rewrite(
                &mut self.order.iter().filter_map(|h| pending.get(h).map(Vec::as_slice)),
            )?;
            self.forgotten = 0;
            self.forgotten_bytes = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use vpbox_sm::sm3::hash;

    use super::*;

    fn key(b: &[u8]) -> Option<Digest> {
        Some(hash(b))
    }

    #[test]
    fn acknowledged_transactions_survive_a_restart_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake");
        {
            let mut i = Intake::open(&path, key).unwrap();
            let txs: Vec<(Digest, Vec<u8>)> = (0..5u8).map(|n| (hash([n]), vec![n])).collect();
            let refs: Vec<(Digest, &[u8])> = txs.iter().map(|(h, b)| (*h, b.as_slice())).collect();
            assert_eq!(i.admit(&refs).unwrap(), vec![true; 5]);
            assert_eq!(i.admit(&[(hash([2u8]), &[2])]).unwrap(), vec![false], "a duplicate");
            i.committed(&[hash([1u8]), hash([3u8])]).unwrap();
            let left: Vec<Vec<u8>> = i.pending().map(|(_, b)| b.to_vec()).collect();
            assert_eq!(left, vec![vec![0], vec![2], vec![4]], "in arrival order");
        }
        // Committed records may remain in the file until a rewrite; the node filters them
        // against its ledger at start. Here nothing was rewritten yet.
        let i = Intake::open(&path, key).unwrap();
        assert_eq!(i.len(), 5);
    }

    #[test]
    fn the_log_is_rewritten_once_mostly_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake");
        let mut i = Intake::open(&path, key).unwrap();
        let txs: Vec<(Digest, Vec<u8>)> =
            (0..3000u32).map(|n| (hash(n.to_be_bytes()), n.to_be_bytes().to_vec())).collect();
        let refs: Vec<(Digest, &[u8])> = txs.iter().map(|(h, b)| (*h, b.as_slice())).collect();
        i.admit(&refs).unwrap();
        let done: Vec<Digest> = txs[..2000].iter().map(|(h, _)| *h).collect();
        i.committed(&done).unwrap();
        drop(i);
        let i = Intake::open(&path, key).unwrap();
        assert_eq!(i.len(), 1000, "the rewrite kept exactly the pending ones");
        assert_eq!(i.pending().next().map(|(h, _)| *h), Some(txs[2000].0));
    }

    #[test]
    fn the_log_is_rewritten_once_its_committed_bytes_outweigh_the_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake");
        let len = |p: &Path| std::fs::metadata(p).unwrap().len() as usize;
        let mut i = Intake::open(&path, key).unwrap();
        // Few, large transactions (day-end batches): far from the count's threshold.
        let big = |n: u8| vec![n; 1 << 20];
        let txs: Vec<(Digest, Vec<u8>)> = (0..20u8).map(|n| (hash(big(n)), big(n))).collect();
        let refs: Vec<(Digest, &[u8])> = txs.iter().map(|(h, b)| (*h, b.as_slice())).collect();
        i.admit(&refs).unwrap();
        let done = |r: std::ops::Range<usize>| txs[r].iter().map(|(h, _)| *h).collect::<Vec<_>>();
        // 16 MiB forgotten: not past the threshold, the file keeps them all.
        i.committed(&done(0..16)).unwrap();
        assert!(len(&path) >= 20 << 20, "no rewrite at {} bytes", len(&path));
        // The 17th: past it and past the 3 MiB pending, rewritten to the pending ones alone.
        i.committed(&done(16..17)).unwrap();
        assert!(len(&path) < 4 << 20, "rewritten to {} bytes", len(&path));
        drop(i);
        let i = Intake::open(&path, key).unwrap();
        let left: Vec<Digest> = i.pending().map(|(h, _)| *h).collect();
        assert_eq!(left, done(17..20), "exactly the pending ones, in order");
    }
}
