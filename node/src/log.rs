//! An append-only log of checksummed records, the durable store under the intake and the
//! consensus WAL.
//!
//! A record is `len:u32be ‖ bytes ‖ sm3(bytes)[..8]`. A torn last record (a crash mid-write,
//! before anything was acknowledged on its strength) is dropped at open; a bad record anywhere
//! else is corruption and opening fails, naming the byte offset. Appends are written at once
//! and made durable by [`RecordLog::sync`], so a caller can group many appends under one
//! fsync. [`RecordLog::rewrite`] replaces the whole log atomically (write, fsync, rename, fsync
//! the directory).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use vpbox_sm::sm3::hash;

/// Largest record.
pub const RECORD_MAX: usize = 16 << 20;

/// Log errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The log could not be read or written (a full disk: nothing is acknowledged).
    #[error("log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A record before the last fails its checksum.
    #[error("log {path} is corrupt at byte {offset}")]
    Corrupt {
        /// The log.
        path: PathBuf,
        /// Where.
        offset: u64,
    },
    /// A record larger than [`RECORD_MAX`].
    #[error("a record of {0} bytes is larger than the log accepts")]
    TooLarge(usize),
}

/// An open log.
#[derive(Debug)]
pub struct RecordLog {
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl RecordLog {
    /// Opens (or creates) the log at `path`, dropping a torn tail; returns the records in order.
    pub fn open(path: &Path) -> Result<(Self, Vec<Vec<u8>>), LogError> {
        let io = |source| LogError::Io { path: path.to_path_buf(), source };
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let mut records = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            match record(&data[at..]) {
                Some((bytes, used)) => {
                    records.push(bytes.to_vec());
                    at += used;
                }
                None if torn_tail(&data[at..]) => {
                    file.set_len(at as u64).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    break;
                }
                None => {
                    return Err(LogError::Corrupt { path: path.to_path_buf(), offset: at as u64 });
                }
            }
        }
        Ok((Self { path: path.to_path_buf(), file, bytes: at as u64 }, records))
    }

    fn io(&self) -> impl Fn(std::io::Error) -> LogError + '_ {
        |source| LogError::Io { path: self.path.clone(), source }
    }

    /// Appends a record; durable after the next [`Self::sync`].
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        if bytes.len() > RECORD_MAX {
            return Err(LogError::TooLarge(bytes.len()));
        }
        let rec = frame(bytes);
        self.file.write_all(&rec).map_err(self.io())?;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Makes every append so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.file.sync_data().map_err(self.io())
    }

    /// Replaces the log's contents with `records`, atomically.
    pub fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), LogError> {
        let tmp = self.path.with_extension("rewrite");
        let mut out = File::create(&tmp).map_err(self.io())?;
        let mut bytes = 0u64;
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&frame(r));
            if buf.len() > 1 << 20 {
                out.write_all(&buf).map_err(self.io())?;
                bytes += buf.len() as u64;
                buf.clear();
            }
        }
        out.write_all(&buf).map_err(self.io())?;
        bytes += buf.len() as u64;
        out.sync_all().map_err(self.io())?;
        std::fs::rename(&tmp, &self.path).map_err(self.io())?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(self.io())?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(self.io())?;
        self.bytes = bytes;
        Ok(())
    }

    /// The log's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(bytes.len() + 12);
    rec.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    rec.extend_from_slice(bytes);
    rec.extend_from_slice(&hash(bytes).0[..8]);
    rec
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

    #[test]
    fn a_torn_tail_is_dropped_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        {
            let (mut log, recs) = RecordLog::open(&path).unwrap();
            assert!(recs.is_empty());
            log.append(b"a").unwrap();
            log.append(b"bb").unwrap();
            log.sync().unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        drop(f);
        let (mut log, recs) = RecordLog::open(&path).unwrap();
        assert_eq!(recs, vec![b"a".to_vec(), b"bb".to_vec()]);
        log.append(b"c").unwrap();
        log.sync().unwrap();
        drop(log);
        assert_eq!(RecordLog::open(&path).unwrap().1.len(), 3);
        let mut data = std::fs::read(&path).unwrap();
        data[5] ^= 0xff; // inside the first record
        std::fs::write(&path, data).unwrap();
        assert!(matches!(RecordLog::open(&path), Err(LogError::Corrupt { offset: 0, .. })));
    }

    #[test]
    fn rewrite_replaces_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = RecordLog::open(&path).unwrap();
        for r in [b"1", b"2", b"3"] {
            log.append(r).unwrap();
        }
        log.rewrite([b"2".as_slice()]).unwrap();
        log.append(b"4").unwrap();
        log.sync().unwrap();
        drop(log);
        assert_eq!(RecordLog::open(&path).unwrap().1, vec![b"2".to_vec(), b"4".to_vec()]);
    }
}
