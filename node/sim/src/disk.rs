//! A simulated disk for the node's journals (the consensus WAL and the intake): the file's
//! bytes in memory, in the real journal format, with the mark of what the last fsync made
//! durable. A crash keeps the synced bytes and a seeded prefix of the unsynced tail (a write
//! torn at any byte); the restart re-reads the image with [`vpbox_journal::parse`], the same
//! code a real open runs, which must truncate the torn tail and lose nothing synced.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use vpbox_journal::{JournalError, MAGIC, frame, parse};
use vpbox_node::host::Log;

/// One simulated file.
#[derive(Debug, Default)]
pub struct File {
    data: Vec<u8>,
    synced: usize,
    /// Fsyncs since the file was made.
    syncs: u64,
}

/// A journal on a simulated file; the world keeps a handle on the file to crash it.
#[derive(Clone, Debug, Default)]
pub struct SimLog {
    file: Rc<RefCell<File>>,
}

impl SimLog {
    /// A new, empty file (the journal's magic, synced, as a real open writes it).
    pub fn new() -> Self {
        let file = File { data: MAGIC.to_vec(), synced: MAGIC.len(), syncs: 0 };
        Self { file: Rc::new(RefCell::new(file)) }
    }

    /// A crash: the unsynced tail is cut at `keep` of its bytes (clamped).
    pub fn crash(&self, keep: usize) {
        let mut f = self.file.borrow_mut();
        let len = (f.synced + keep).min(f.data.len());
        f.data.truncate(len);
    }

    /// How many fsyncs the journal has asked for.
    pub fn syncs(&self) -> u64 {
        self.file.borrow().syncs
    }

    /// How many bytes a crash may tear.
    pub fn unsynced(&self) -> usize {
        let f = self.file.borrow();
        f.data.len() - f.synced
    }

    /// Re-reads the file as a restart does: the records, after truncating a torn tail.
    /// Corruption (which this simulator never injects: that is the journal's own exhaustive
    /// test) is an error naming the offset.
    pub fn reopen(&self, name: &Path) -> Result<Vec<Vec<u8>>, String> {
        let mut f = self.file.borrow_mut();
        let parsed = parse(&f.data).map_err(|(offset, why)| {
            format!("{} corrupt at byte {offset}: {why}", name.display())
        })?;
        let len = usize::try_from(parsed.len).map_err(|e| e.to_string())?;
        f.data.truncate(len);
        f.synced = len;
        Ok(parsed.records)
    }
}

impl Log for SimLog {
    fn append(&mut self, body: &[u8]) -> Result<(), JournalError> {
        let rec = frame(body)?;
        self.file.borrow_mut().data.extend_from_slice(&rec);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        let mut f = self.file.borrow_mut();
        f.synced = f.data.len();
        f.syncs += 1;
        Ok(())
    }

    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), JournalError> {
        let mut data = MAGIC.to_vec();
        for r in records {
            data.extend_from_slice(&frame(r)?);
        }
        // Written to a temporary file, fsynced and renamed: all or nothing.
        let mut f = self.file.borrow_mut();
        f.synced = data.len();
        f.data = data;
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.file.borrow().data.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_what_was_synced_and_tears_the_rest_anywhere() {
        let path = Path::new("wal");
        for keep in 0..40 {
            let mut log = SimLog::new();
            log.append(b"one").unwrap();
            log.append(b"two").unwrap();
            log.sync().unwrap();
            log.append(b"three, not synced").unwrap();
            log.crash(keep);
            let records = log.reopen(path).unwrap();
            assert!(records.len() == 2 || records.len() == 3, "keep {keep}: {records:?}");
            assert_eq!(&records[..2], &[b"one".to_vec(), b"two".to_vec()]);
            assert_eq!(log.unsynced(), 0);
        }
    }
}
