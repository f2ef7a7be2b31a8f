//! Append-only logs of checksummed records that tell a torn tail from corruption: under the
//! consensus WAL, the node's intake and the signer's double-sign guard.
//!
//! ```text
//! file   = magic:"VPBXJNL1" record*
//! record = len:u32be ‖ head_sum:[8] ‖ body:[len] ‖ body_sum:[8]
//! head_sum = SM3("vpbox/journal/head\0" ‖ len)[..8]
//! body_sum = SM3("vpbox/journal/body\0" ‖ len ‖ body)[..8]
//! ```
//!
//! The length has a checksum of its own, so a flipped bit in it is seen as such rather than
//! taken for a record that runs past the end of the file. At open, the first record that does
//! not verify is classified:
//!
//! - **torn tail** — what a crash during an append leaves, and only at the end of the file: a
//!   header cut short, a record whose (verified) length runs past the end of the file, or an
//!   unwritten extent (every byte from the bad record to the end is zero, or the last record's
//!   checksum is). Nothing acknowledged can be in it: appends are acknowledged only after
//!   [`Journal::sync`]. It is truncated, and [`Opened::torn`] says where, for the caller to log.
//! - **corruption** — anything else: a header or body that fails its checksum while the bytes
//!   are all there, a length above [`RECORD_MAX`], a wrong magic. Opening fails with
//!   [`JournalError::Corrupt`] naming the file and the byte offset of the bad record; the
//!   caller stops loudly (TigerBeetle's rule: crash on local corruption, never drop
//!   acknowledged data silently). Repair is an operator's decision.
//!
//! Appends are written at once and made durable by [`Journal::sync`], so a caller can group
//! many appends under one fsync. [`Journal::rewrite`] replaces the whole log atomically (write,
//! fsync, rename, fsync the directory).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use vpbox_sm::sm3::Sm3;

/// The first bytes of every journal file: the format and its version.
pub const MAGIC: &[u8; 8] = b"VPBXJNL1";
/// Largest record body.
pub const RECORD_MAX: usize = 16 << 20;
const HEAD: usize = 12;
const SUM: usize = 8;

/// Journal errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The log could not be read or written (a full disk: nothing is acknowledged).
    #[error("log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Local corruption: a record that is all there fails its checksum.
    #[error("log {path} is corrupt at byte {offset} ({reason}); refusing to continue")]
    Corrupt {
        /// The log.
        path: PathBuf,
        /// The byte offset of the bad record (or 0 for a bad magic).
        offset: u64,
        /// What failed.
        reason: &'static str,
    },
    /// An earlier write, fsync or rewrite failed: what is on disk is no longer known, so the
    /// log refuses everything until the process restarts and re-reads it.
    #[error("log {path} failed earlier; restart to re-read it")]
    Failed {
        /// The log.
        path: PathBuf,
    },
    /// A record body larger than [`RECORD_MAX`].
    #[error("a record of {0} bytes is larger than the log accepts")]
    TooLarge(usize),
}

/// A torn tail found and truncated at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    /// Where the torn record began (the log's new length).
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes: u64,
    /// Which kind of interrupted write it was.
    pub reason: &'static str,
}

/// What [`Journal::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The open log, positioned at its end.
    pub journal: Journal,
    /// Every record, in order.
    pub records: Vec<Vec<u8>>,
    /// The torn tail dropped, if any: the caller logs it.
    pub torn: Option<Torn>,
}

/// An open log.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    bytes: u64,
    failed: bool,
}

impl Journal {
    /// Opens (or creates) the log at `path`, truncating a torn tail; corruption is an error.
    pub fn open(path: &Path) -> Result<Opened, JournalError> {
        let io = |source| JournalError::Io { path: path.to_path_buf(), source };
        let corrupt =
            |offset, reason| JournalError::Corrupt { path: path.to_path_buf(), offset, reason };
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let mut torn = None;
        if data.len() < MAGIC.len() {
            // A crash while the file was being created: nothing was ever acknowledged in it.
            if !(MAGIC.starts_with(&data) || data.iter().all(|&b| b == 0)) {
                return Err(corrupt(0, "bad magic"));
            }
            if !data.is_empty() {
                torn =
                    Some(Torn { offset: 0, bytes: data.len() as u64, reason: "magic cut short" });
            }
            file.set_len(0).map_err(io)?;
            file.write_all(MAGIC).map_err(io)?;
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent() {
                sync_dir(dir).map_err(io)?;
            }
            let journal =
                Self { path: path.to_path_buf(), file, bytes: MAGIC.len() as u64, failed: false };
            return Ok(Opened { journal, records: Vec::new(), torn });
        }
        let parsed = parse(&data).map_err(|(offset, reason)| corrupt(offset, reason))?;
        if let Some(t) = &parsed.torn {
            file.set_len(t.offset).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let journal = Self { path: path.to_path_buf(), file, bytes: parsed.len, failed: false };
        Ok(Opened { journal, records: parsed.records, torn: parsed.torn })
    }

    fn io(&self) -> impl Fn(std::io::Error) -> JournalError + '_ {
        |source| JournalError::Io { path: self.path.clone(), source }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn usable(&self) -> Result<(), JournalError> {
        if self.failed { Err(JournalError::Failed { path: self.path.clone() }) } else { Ok(()) }
    }

    /// Marks the log failed (a caller's fsync on a [`Self::sync_handle`] failed): every later
    /// call is refused until a restart re-reads the file.
    pub fn fail(&mut self) {
        self.failed = true;
    }

    /// Appends a record; durable after the next [`Self::sync`]. A write that fails part way is
    /// cut back off, and the log then refuses everything (nothing may follow a fragment).
    pub fn append(&mut self, body: &[u8]) -> Result<(), JournalError> {
        self.usable()?;
        let rec = frame(body)?;
        if let Err(e) = self.file.write_all(&rec) {
            self.failed = true;
            let _ = self.file.set_len(self.bytes);
            return Err(self.io()(e));
        }
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Makes every append so far durable. A failed fsync fails the log: Linux reports a lost
    /// write once, so a later fsync's success would prove nothing.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.usable()?;
        let r = self.file.sync_data();
        self.failed |= r.is_err();
        r.map_err(self.io())
    }

    /// A handle on the current file, for `sync_data` outside the caller's lock (group commit).
    /// Take it anew after each append: [`Self::rewrite`] replaces the file. If that fsync fails,
    /// call [`Self::fail`].
    pub fn sync_handle(&self) -> Result<File, JournalError> {
        self.usable()?;
        self.file.try_clone().map_err(self.io())
    }

    /// Replaces the log's contents with `records`, atomically. Once the new file has replaced
    /// the old one, any failure fails the log.
    pub fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), JournalError> {
        self.usable()?;
        let tmp = self.path.with_extension("rewrite");
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(self.io())?;
        let mut bytes = 0u64;
        let mut buf = MAGIC.to_vec();
        for r in records {
            buf.extend_from_slice(&frame(r)?);
            if buf.len() > 1 << 20 {
                out.write_all(&buf).map_err(self.io())?;
                bytes += buf.len() as u64;
                buf.clear();
            }
        }
        out.write_all(&buf).map_err(self.io())?;
        bytes += buf.len() as u64;
        out.sync_all().map_err(self.io())?;
        // The handle for appends is opened before the rename, so it is the new file's.
        let appender = OpenOptions::new().append(true).open(&tmp).map_err(self.io())?;
        std::fs::rename(&tmp, &self.path).map_err(self.io())?;
        self.file = appender;
        self.bytes = bytes;
        if let Some(dir) = self.path.parent() {
            if let Err(e) = sync_dir(dir) {
                self.failed = true;
                return Err(self.io()(e));
            }
        }
        Ok(())
    }

    /// The log's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir)?.sync_all()
}

fn head_sum(len: u32) -> [u8; 8] {
    let mut h = Sm3::new();
    h.update(b"vpbox/journal/head\0");
    h.update(len.to_be_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d.0[..8]);
    out
}

fn body_sum(len: u32, body: &[u8]) -> [u8; SUM] {
    let mut h = Sm3::new();
    h.update(b"vpbox/journal/body\0");
    h.update(len.to_be_bytes());
    h.update(body);
    let d = h.finalize();
    let mut out = [0u8; SUM];
    out.copy_from_slice(&d.0[..SUM]);
    out
}

/// A record's bytes on disk.
pub fn frame(body: &[u8]) -> Result<Vec<u8>, JournalError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l as usize <= RECORD_MAX)
        .ok_or(JournalError::TooLarge(body.len()))?;
    let mut rec = Vec::with_capacity(HEAD + body.len() + SUM);
    rec.extend_from_slice(&len.to_be_bytes());
    rec.extend_from_slice(&head_sum(len));
    rec.extend_from_slice(body);
    rec.extend_from_slice(&body_sum(len, body));
    Ok(rec)
}

/// What [`parse`] found in a log's bytes.
#[derive(Debug)]
pub struct Parsed {
    /// Every record, in order.
    pub records: Vec<Vec<u8>>,
    /// The torn tail, if any: the log's bytes end at its offset once it is cut off.
    pub torn: Option<Torn>,
    /// The length of the log without its torn tail.
    pub len: u64,
}

/// Reads a whole log's bytes (magic included, at least [`MAGIC`]'s length) by the rules of the
/// module docs, without touching any file: what [`Journal::open`] does after reading, and what
/// a simulated disk uses to recover the same way. Corruption is `Err((offset, reason))`.
pub fn parse(data: &[u8]) -> Result<Parsed, (u64, &'static str)> {
    if data.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err((0, "bad magic"));
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    while at < data.len() {
        match scan(&data[at..]) {
            Scan::Record(body, used) => {
                records.push(body.to_vec());
                at += used;
            }
            Scan::Torn(reason) => {
                let bytes = (data.len() - at) as u64;
                let torn = Some(Torn { offset: at as u64, bytes, reason });
                return Ok(Parsed { records, torn, len: at as u64 });
            }
            Scan::Corrupt(reason) => return Err((at as u64, reason)),
        }
    }
    Ok(Parsed { records, torn: None, len: at as u64 })
}

enum Scan<'a> {
    Record(&'a [u8], usize),
    Torn(&'static str),
    Corrupt(&'static str),
}

/// Classifies the bytes at the start of `rest` (see the module docs).
fn scan(rest: &[u8]) -> Scan<'_> {
    let Some(head) = rest.get(..HEAD) else {
        return Scan::Torn("header cut short");
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if head[4..] != head_sum(len) {
        if rest.iter().all(|&b| b == 0) {
            return Scan::Torn("unwritten extent");
        }
        return Scan::Corrupt("header checksum");
    }
    let len = len as usize;
    if len > RECORD_MAX {
        return Scan::Corrupt("length above the maximum");
    }
    let total = HEAD + len + SUM;
    let Some(rec) = rest.get(..total) else {
        return Scan::Torn("record cut short");
    };
    let body = &rec[HEAD..HEAD + len];
    let sum = &rec[HEAD + len..];
    if *sum != body_sum(len as u32, body) {
        if rest.len() == total && sum.iter().all(|&b| b == 0) {
            return Scan::Torn("unwritten last bytes");
        }
        return Scan::Corrupt("body checksum");
    }
    Scan::Record(body, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, records: &[&[u8]]) {
        let mut j = Journal::open(path).unwrap().journal;
        for r in records {
            j.append(r).unwrap();
        }
        j.sync().unwrap();
    }

    #[test]
    fn records_survive_a_reopen_and_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write(&path, &[b"a", b"", b"ccc"]);
        let o = Journal::open(&path).unwrap();
        assert_eq!(o.records, vec![b"a".to_vec(), vec![], b"ccc".to_vec()]);
        assert_eq!(o.torn, None);
        let mut j = o.journal;
        j.rewrite([b"x".as_slice()]).unwrap();
        j.append(b"y").unwrap();
        j.sync().unwrap();
        assert_eq!(j.bytes(), std::fs::metadata(&path).unwrap().len());
        drop(j);
        assert_eq!(Journal::open(&path).unwrap().records, vec![b"x".to_vec(), b"y".to_vec()]);
    }

    /// The module docs' rule for a file shorter than the magic: a crash while the file was
    /// being created (a prefix of the magic, or an unwritten extent of zeros) is a torn tail
    /// and the log starts empty; anything else there is corruption at byte 0. A file that is
    /// exactly the magic is a whole, empty log: nothing is torn.
    #[test]
    fn a_file_shorter_than_the_magic_is_torn_or_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let fresh = Journal::open(&path).unwrap();
        assert!(fresh.records.is_empty() && fresh.torn.is_none(), "a new file is not torn");
        drop(fresh);
        assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
        let again = Journal::open(&path).unwrap();
        assert!(again.records.is_empty());
        assert_eq!(again.torn, None, "the magic alone is a whole log");
        drop(again);
        for (bytes, torn) in [(&b"VPBX"[..], 4), (&[0u8; 5][..], 5), (&b""[..], 0)] {
            std::fs::write(&path, bytes).unwrap();
            let opened = Journal::open(&path).unwrap();
            let want =
                (torn > 0).then_some(Torn { offset: 0, bytes: torn, reason: "magic cut short" });
            assert_eq!(opened.torn, want, "{bytes:?}");
            assert!(opened.records.is_empty());
            drop(opened);
            assert_eq!(std::fs::read(&path).unwrap(), MAGIC, "rewritten whole");
        }
        for bad in [&b"VPBY"[..], &b"\x00\x00\x01"[..], &b"X"[..]] {
            std::fs::write(&path, bad).unwrap();
            match Journal::open(&path) {
                Err(JournalError::Corrupt { offset: 0, reason: "bad magic", .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_all_zero_header_never_verifies() {
        // The unwritten-extent rule relies on it.
        assert_ne!(head_sum(0), [0; 8]);
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write(&path, &[b"first", b"second record"]);
        let full = std::fs::read(&path).unwrap();
        let last_at = MAGIC.len() + frame(b"first").unwrap().len();
        for cut in last_at..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let o = Journal::open(&path).unwrap();
            assert_eq!(o.records, vec![b"first".to_vec()], "cut at {cut}");
            assert_eq!(o.torn.is_some(), cut > last_at, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), last_at as u64);
        }
        // A file extended with zeros the crash never wrote.
        let mut zeros = full[..last_at].to_vec();
        zeros.extend_from_slice(&[0; 4096]);
        std::fs::write(&path, &zeros).unwrap();
        let o = Journal::open(&path).unwrap();
        assert_eq!(o.torn.map(|t| t.reason), Some("unwritten extent"));
        // The creation itself torn.
        std::fs::write(&path, &MAGIC[..3]).unwrap();
        assert!(Journal::open(&path).unwrap().records.is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
    }

    #[test]
    fn every_single_bit_flip_is_corruption_at_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let bodies: [&[u8]; 3] = [b"one", b"", b"three!"];
        write(&path, &bodies);
        let good = std::fs::read(&path).unwrap();
        let mut starts = vec![MAGIC.len()];
        for b in bodies {
            starts.push(starts.last().unwrap() + frame(b).unwrap().len());
        }
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                let expected = starts.iter().rev().find(|&&s| s <= byte).map_or(0, |&s| s) as u64;
                match Journal::open(&path) {
                    Err(JournalError::Corrupt { offset, .. }) => {
                        assert_eq!(offset, expected, "byte {byte} bit {bit}")
                    }
                    other => panic!("byte {byte} bit {bit}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn after_a_failure_the_log_refuses_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("log")).unwrap().journal;
        j.append(b"a").unwrap();
        j.fail();
        assert!(matches!(j.append(b"b"), Err(JournalError::Failed { .. })));
        assert!(matches!(j.sync(), Err(JournalError::Failed { .. })));
        assert!(matches!(j.sync_handle(), Err(JournalError::Failed { .. })));
    }

    /// RECORD_MAX is the largest body: one of exactly that size is written and read back, one
    /// byte more is refused when appended, and a verified header claiming more is corruption
    /// (not a record cut short, which would be truncated away as torn).
    #[test]
    fn the_record_size_limit_is_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut j = Journal::open(&path).unwrap().journal;
        assert!(matches!(j.append(&vec![0; RECORD_MAX + 1]), Err(JournalError::TooLarge(_))));
        j.append(&vec![7; RECORD_MAX]).unwrap();
        j.sync().unwrap();
        drop(j);
        let o = Journal::open(&path).unwrap();
        assert_eq!(o.records.len(), 1);
        assert!(o.records[0].len() == RECORD_MAX && o.records[0].iter().all(|&b| b == 7));
        assert_eq!(o.torn, None);
        drop(o);
        let over = u32::try_from(RECORD_MAX + 1).unwrap();
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&over.to_be_bytes());
        data.extend_from_slice(&head_sum(over));
        data.extend_from_slice(&[1; 64]);
        std::fs::write(&path, &data).unwrap();
        match Journal::open(&path) {
            Err(JournalError::Corrupt {
                offset: 8, reason: "length above the maximum", ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// A torn tail reports where it began and how many bytes were dropped; a last record whose
    /// checksum bytes are all zero is an unwritten end (torn), while the same in a record that
    /// is not the last is corruption.
    #[test]
    fn torn_tails_are_measured_and_only_the_last_record_may_be_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        write(&path, &[b"first", b"second"]);
        let full = std::fs::read(&path).unwrap();
        let second_at = MAGIC.len() + frame(b"first").unwrap().len();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let torn = Journal::open(&path).unwrap().torn.unwrap();
        let cut = (full.len() - 3 - second_at) as u64;
        assert_eq!(torn, Torn { offset: second_at as u64, bytes: cut, reason: "record cut short" });

        let mut unwritten = full.clone();
        let n = unwritten.len();
        unwritten[n - SUM..].fill(0);
        std::fs::write(&path, &unwritten).unwrap();
        let o = Journal::open(&path).unwrap();
        assert_eq!(o.records, vec![b"first".to_vec()]);
        assert_eq!(
            o.torn.map(|t| (t.offset, t.reason)),
            Some((second_at as u64, "unwritten last bytes"))
        );

        let mut middle = full;
        middle[second_at - SUM..second_at].fill(0);
        std::fs::write(&path, &middle).unwrap();
        match Journal::open(&path) {
            Err(JournalError::Corrupt { offset, reason: "body checksum", .. }) => {
                assert_eq!(offset, MAGIC.len() as u64)
            }
            other => panic!("{other:?}"),
        }
    }

    /// A rewrite larger than its 1 MiB write buffer keeps every record and counts its bytes:
    /// `bytes()` is the file's length, and appends after it land after the rewritten records.
    #[test]
    fn a_large_rewrite_keeps_every_record_and_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut j = Journal::open(&path).unwrap().journal;
        j.append(b"old").unwrap();
        let records: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; 1000]).collect();
        j.rewrite(records.iter().map(|r| r.as_slice())).unwrap();
        assert_eq!(j.bytes(), std::fs::metadata(&path).unwrap().len());
        j.append(b"after").unwrap();
        j.sync().unwrap();
        assert_eq!(j.bytes(), std::fs::metadata(&path).unwrap().len());
        drop(j);
        let o = Journal::open(&path).unwrap();
        assert_eq!(o.records.len(), 3001);
        assert_eq!(o.records[..3000], records[..]);
        assert_eq!(o.records[3000], b"after");
        assert_eq!(o.journal.bytes(), std::fs::metadata(&path).unwrap().len());
    }
}
