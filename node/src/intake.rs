//! The durable intake: a transaction the node acknowledges has been written and fsynced here
//! first, so it survives kill -9 and is proposed again after a restart until it is committed,
//! even if the quorum is gone for hours.
//!
//! The log is a sequence of records `len:u32 ‖ bytes ‖ sm3(bytes)[..8]`. A torn last record (a
//! crash mid-write, before any acknowledgement) is dropped at open; a bad record elsewhere is
//! corruption and opening fails. Committed transactions are forgotten by rewriting the log
//! with only the pending ones (a new file, fsynced, renamed over the old one).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use vpbox_sm::sm3::{Digest, hash};

/// Largest record (a transaction's encoding).
pub const RECORD_MAX: usize = 1 << 20;

/// Intake errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// The log could not be read or written (a full disk: the transaction is not acknowledged).
    #[error("intake log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A record before the last fails its checksum.
    #[error("intake log {path} is corrupt at byte {offset}")]
    Corrupt {
        /// The log.
        path: PathBuf,
        /// Where.
        offset: u64,
    },
    /// A transaction larger than a record may be.
    #[error("transaction of {0} bytes is larger than the intake accepts")]
    TooLarge(usize),
}

/// The durable queue of acknowledged, uncommitted transactions, keyed by transaction hash.
#[derive(Debug)]
pub struct Intake {
    path: PathBuf,
    file: File,
    pending: HashMap<Digest, Vec<u8>>,
    order: Vec<Digest>,
}

impl Intake {
    /// Opens (or creates) the log, dropping a torn tail. `key` maps a stored transaction to
    /// its hash (the ledger's `Tx::hash` of the decoded bytes).
    pub fn open(path: &Path, key: impl Fn(&[u8]) -> Option<Digest>) -> Result<Self, IntakeError> {
        let io = |source| IntakeError::Io { path: path.to_path_buf(), source };
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let mut intake =
            Self { path: path.to_path_buf(), file, pending: HashMap::new(), order: Vec::new() };
        let mut at = 0usize;
        while at < data.len() {
            match record(&data[at..]) {
                Some((bytes, used)) => {
                    if let Some(h) = key(bytes) {
                        if intake.pending.insert(h, bytes.to_vec()).is_none() {
                            intake.order.push(h);
                        }
                    }
                    at += used;
                }
                None if torn_tail(&data[at..]) => {
                    intake.file.set_len(at as u64).map_err(io)?;
                    intake.file.sync_all().map_err(io)?;
                    break;
                }
                None => {
                    return Err(IntakeError::Corrupt {
                        path: path.to_path_buf(),
                        offset: at as u64,
                    });
                }
            }
        }
        Ok(intake)
    }

    /// Records `tx` (already verified) under `hash` and makes it durable. Returns `false` if it
    /// was pending already (a duplicate submission).
    pub fn admit(&mut self, hash_of_tx: Digest, tx: &[u8]) -> Result<bool, IntakeError> {
        if self.pending.contains_key(&hash_of_tx) {
            return Ok(false);
        }
        if tx.len() > RECORD_MAX {
            return Err(IntakeError::TooLarge(tx.len()));
        }
        let io = |source| IntakeError::Io { path: self.path.clone(), source };
        let mut rec = Vec::with_capacity(tx.len() + 12);
        rec.extend_from_slice(&(tx.len() as u32).to_be_bytes());
        rec.extend_from_slice(tx);
        rec.extend_from_slice(&hash(tx).0[..8]);
        self.file.write_all(&rec).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.pending.insert(hash_of_tx, tx.to_vec());
        self.order.push(hash_of_tx);
        Ok(true)
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

    /// Forgets committed transactions, rewriting the log with what is still pending.
    pub fn committed(&mut self, hashes: &[Digest]) -> Result<(), IntakeError> {
        let before = self.pending.len();
        for h in hashes {
            self.pending.remove(h);
        }
        if self.pending.len() == before {
            return Ok(());
        }
        self.order.retain(|h| self.pending.contains_key(h));
        let io = |source| IntakeError::Io { path: self.path.clone(), source };
        let tmp = self.path.with_extension("rewrite");
        let mut out = File::create(&tmp).map_err(io)?;
        for h in &self.order {
            if let Some(tx) = self.pending.get(h) {
                out.write_all(&(tx.len() as u32).to_be_bytes()).map_err(io)?;
                out.write_all(tx).map_err(io)?;
                out.write_all(&hash(tx).0[..8]).map_err(io)?;
            }
        }
        out.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(io)?;
        Ok(())
    }
}

/// A whole, valid record at the start of `data`: its bytes and the length consumed.
fn record(data: &[u8]) -> Option<(&[u8], usize)> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    if len > RECORD_MAX {
        return None;
    }
    let bytes = data.get(4..4 + len)?;
    let sum = data.get(4 + len..12 + len)?;
    (hash(bytes).0[..8] == *sum).then_some((bytes, 12 + len))
}

/// Whether the bad bytes at `data` are an interrupted final write: too short to hold the
/// record its length announces.
fn torn_tail(data: &[u8]) -> bool {
    match data.get(..4) {
        None => true,
        Some(l) => {
            let len = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
            len <= RECORD_MAX && data.len() < 12 + len
        }
    }
}

#[cfg(test)]
mod tests {
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
            for n in 0..5u8 {
                assert!(i.admit(hash([n]), &[n]).unwrap());
            }
            assert!(!i.admit(hash([2u8]), &[2]).unwrap(), "a duplicate is not stored twice");
            i.committed(&[hash([1u8]), hash([3u8])]).unwrap();
        }
        let i = Intake::open(&path, key).unwrap();
        let left: Vec<Vec<u8>> = i.pending().map(|(_, b)| b.to_vec()).collect();
        assert_eq!(left, vec![vec![0], vec![2], vec![4]], "in arrival order");
    }

    #[test]
    fn a_torn_tail_is_dropped_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake");
        {
            let mut i = Intake::open(&path, key).unwrap();
            i.admit(hash(b"a"), b"a").unwrap();
            i.admit(hash(b"bb"), b"bb").unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        drop(f);
        let mut i = Intake::open(&path, key).unwrap();
        assert_eq!(i.len(), 2);
        i.admit(hash(b"c"), b"c").unwrap();
        drop(i);
        assert_eq!(Intake::open(&path, key).unwrap().len(), 3);
        let mut data = std::fs::read(&path).unwrap();
        data[5] ^= 0xff; // inside the first record
        std::fs::write(&path, data).unwrap();
        assert!(matches!(Intake::open(&path, key), Err(IntakeError::Corrupt { offset: 0, .. })));
    }
}
