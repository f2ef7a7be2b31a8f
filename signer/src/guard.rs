//! The double-sign guard: for one key in one domain, every consensus position ever signed and
//! the digest signed there, persisted (fsync) before the signature leaves the signer.
//!
//! - A different digest at a position already signed is refused ([`Verdict::Conflict`]): this
//!   is what keeps even a compromised node process from making the HSM equivocate.
//! - The same digest again is allowed (retransmissions, restarts).
//! - A position older than the window the guard still remembers is refused
//!   ([`Verdict::TooOld`]): its record may have been pruned, so it cannot be proven safe.
//!
//! PBFT votes inside the watermark window may be signed out of order, so unlike tmkms's single
//! high-water mark the guard keeps every position within `window` sequence numbers (and
//! `window` views for view changes) behind the highest one signed.
//!
//! The log is a file of fixed 58-byte records, each with an 8-byte SM3 checksum. A torn last
//! record (a crash during the write, before the signature was returned) is dropped at load; a
//! bad record anywhere else is corruption and the guard refuses to start.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A PBFT vote phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Phase {
    /// The primary's pre-prepare.
    PrePrepare = 0,
    /// A prepare.
    Prepare = 1,
    /// A commit.
    Commit = 2,
}

impl Phase {
    pub(crate) fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::PrePrepare),
            1 => Some(Self::Prepare),
            2 => Some(Self::Commit),
            _ => None,
        }
    }
}

/// What a consensus signature is for: the guard's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    /// A vote at (view, seq, phase).
    Vote {
        /// View.
        view: u64,
        /// Sequence number.
        seq: u64,
        /// Phase.
        phase: Phase,
    },
    /// A checkpoint at `seq`.
    Checkpoint {
        /// Sequence number.
        seq: u64,
    },
    /// A view-change message for `view`.
    ViewChange {
        /// The view being changed to.
        view: u64,
    },
    /// A new-view message for `view`.
    NewView {
        /// The new view.
        view: u64,
    },
    /// A consensus message that is not a vote (a view change, new view, heartbeat, fetch or
    /// the entries answering one). Nothing is recorded: the engine legitimately re-signs these
    /// with new content (a view change re-sent after a newer checkpoint), and none of them can
    /// make two conflicting blocks commit — only votes can, and votes are always guarded.
    Message,
}

impl Position {
    fn encode(self) -> (u8, u64, u64, u8) {
        match self {
            Self::Vote { view, seq, phase } => (1, view, seq, phase as u8),
            Self::Checkpoint { seq } => (2, 0, seq, 0),
            Self::ViewChange { view } => (3, view, 0, 0),
            Self::NewView { view } => (4, view, 0, 0),
            Self::Message => (5, 0, 0, 0),
        }
    }

    fn decode(kind: u8, a: u64, b: u64, phase: u8) -> Option<Self> {
        Some(match kind {
            1 => Self::Vote { view: a, seq: b, phase: Phase::from_u8(phase)? },
            2 => Self::Checkpoint { seq: b },
            3 => Self::ViewChange { view: a },
            4 => Self::NewView { view: a },
            5 => Self::Message,
            _ => return None,
        })
    }

    /// The sequence number the window is measured in, or `None` for view-numbered positions.
    fn seq(self) -> Option<u64> {
        match self {
            Self::Vote { seq, .. } | Self::Checkpoint { seq } => Some(seq),
            Self::ViewChange { .. } | Self::NewView { .. } | Self::Message => None,
        }
    }

    fn view(self) -> u64 {
        match self {
            Self::Vote { view, .. } | Self::ViewChange { view } | Self::NewView { view } => view,
            Self::Checkpoint { .. } | Self::Message => 0,
        }
    }
}

/// The guard's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New position: recorded durably; sign.
    Recorded,
    /// Same digest at a position signed before: sign again.
    Repeat,
    /// A different digest was signed here: refuse.
    Conflict,
    /// Older than the remembered window: refuse.
    TooOld,
}

/// Why the guard could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The log could not be read or written (a full disk: the signature is refused).
    #[error("double-sign guard log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A record other than the last fails its checksum: local corruption.
    #[error("double-sign guard log {path} is corrupt at record {index}; refusing to start")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// The bad record's index.
        index: usize,
    },
}

const RECORD: usize = 58;

/// The guard for one key in one domain.
#[derive(Debug)]
pub struct Guard {
    path: PathBuf,
    file: File,
    window: u64,
    signed: BTreeMap<Position, [u8; 32]>,
    high_seq: u64,
    high_view: u64,
    records_in_file: usize,
}

impl Guard {
    /// Opens (or creates) the log at `path`, dropping a torn last record.
    pub fn open(path: &Path, window: u64) -> Result<Self, GuardError> {
        let io = |source| GuardError::Io { path: path.to_path_buf(), source };
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let mut guard = Self {
            path: path.to_path_buf(),
            file,
            window: window.max(1),
            signed: BTreeMap::new(),
            high_seq: 0,
            high_view: 0,
            records_in_file: 0,
        };
        let whole = data.len() / RECORD;
        for (index, rec) in data.chunks(RECORD).enumerate() {
            match decode_record(rec) {
                Some((pos, digest)) => {
                    guard.note(pos, digest);
                    guard.records_in_file += 1;
                }
                // A short or bad final record is a write the crash interrupted.
                None if index + 1 >= whole => {
                    let valid = (index * RECORD) as u64;
                    guard.file.set_len(valid).map_err(io)?;
                    guard.file.sync_all().map_err(io)?;
                    break;
                }
                None => return Err(GuardError::Corrupt { path: path.to_path_buf(), index }),
            }
        }
        guard.prune();
        Ok(guard)
    }

    /// Checks `digest` at `position`; a new position is written and made durable before this
    /// returns.
    pub fn check(&mut self, position: Position, digest: [u8; 32]) -> Result<Verdict, GuardError> {
        let verdict = self.check_unsynced(position, digest)?;
        self.sync()?;
        Ok(verdict)
    }

    /// As [`Self::check`], but leaves the fsync to the caller, who must call
    /// [`Self::sync_handle`]`.sync_data()` (outside its lock, so that concurrent callers share one
    /// fsync: group commit) before acting on `Recorded` *or* `Repeat` — a repeat may be of a
    /// record another caller has written but not yet made durable.
    pub fn check_unsynced(
        &mut self,
        position: Position,
        digest: [u8; 32],
    ) -> Result<Verdict, GuardError> {
        if let Some(previous) = self.signed.get(&position) {
            return Ok(if *previous == digest { Verdict::Repeat } else { Verdict::Conflict });
        }
        let too_old = match position.seq() {
            Some(seq) => seq.saturating_add(self.window) < self.high_seq,
            None => position.view().saturating_add(self.window) < self.high_view,
        };
        if too_old {
            return Ok(Verdict::TooOld);
        }
        let io = |source| GuardError::Io { path: self.path.clone(), source };
        self.file.write_all(&encode_record(position, &digest)).map_err(io)?;
        self.records_in_file += 1;
        self.note(position, digest);
        self.prune();
        if self.records_in_file > 4 * self.signed.len().max(1024) {
            self.compact()?;
        }
        Ok(Verdict::Recorded)
    }

    /// A handle on the current log file for `sync_data` outside the caller's lock. Taken anew
    /// for each check: compaction replaces the file.
    pub fn sync_handle(&self) -> Result<File, GuardError> {
        self.file.try_clone().map_err(|source| GuardError::Io { path: self.path.clone(), source })
    }

    fn sync(&self) -> Result<(), GuardError> {
        self.file.sync_data().map_err(|source| GuardError::Io { path: self.path.clone(), source })
    }

    /// How many positions are remembered.
    pub fn len(&self) -> usize {
        self.signed.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.signed.is_empty()
    }

    fn note(&mut self, position: Position, digest: [u8; 32]) {
        match position.seq() {
            Some(seq) => self.high_seq = self.high_seq.max(seq),
            None => self.high_view = self.high_view.max(position.view()),
        }
        self.signed.insert(position, digest);
    }

    fn prune(&mut self) {
        let (window, high_seq, high_view) = (self.window, self.high_seq, self.high_view);
        self.signed.retain(|p, _| match p.seq() {
            Some(seq) => seq.saturating_add(window) >= high_seq,
            None => p.view().saturating_add(window) >= high_view,
        });
    }

    /// Rewrites the log with only the remembered positions: a new file, fsynced, renamed over
    /// the old one, and the directory fsynced.
    fn compact(&mut self) -> Result<(), GuardError> {
        let io = |source| GuardError::Io { path: self.path.clone(), source };
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp).map_err(io)?;
        for (pos, digest) in &self.signed {
            out.write_all(&encode_record(*pos, digest)).map_err(io)?;
        }
        out.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path).map_err(io)?;
        self.records_in_file = self.signed.len();
        Ok(())
    }
}

fn encode_record(position: Position, digest: &[u8; 32]) -> [u8; RECORD] {
    let (kind, a, b, phase) = position.encode();
    let mut rec = [0u8; RECORD];
    rec[0] = kind;
    rec[1..9].copy_from_slice(&a.to_be_bytes());
    rec[9..17].copy_from_slice(&b.to_be_bytes());
    rec[17] = phase;
    rec[18..50].copy_from_slice(digest);
    let sum = vpbox_sm::sm3::hash(&rec[..50]);
    rec[50..].copy_from_slice(&sum.0[..8]);
    rec
}

fn decode_record(rec: &[u8]) -> Option<(Position, [u8; 32])> {
    if rec.len() != RECORD || vpbox_sm::sm3::hash(&rec[..50]).0[..8] != rec[50..] {
        return None;
    }
    let a = u64::from_be_bytes(rec[1..9].try_into().ok()?);
    let b = u64::from_be_bytes(rec[9..17].try_into().ok()?);
    let position = Position::decode(rec[0], a, b, rec[17])?;
    Some((position, rec[18..50].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(view: u64, seq: u64, phase: Phase) -> Position {
        Position::Vote { view, seq, phase }
    }

    #[test]
    fn conflicting_digest_at_one_position_is_refused_and_repeats_are_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Guard::open(&dir.path().join("g"), 100).unwrap();
        let p = vote(0, 5, Phase::Prepare);
        assert_eq!(g.check(p, [1; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(g.check(p, [1; 32]).unwrap(), Verdict::Repeat);
        assert_eq!(g.check(p, [2; 32]).unwrap(), Verdict::Conflict);
        // Another phase, view or seq is another position (Castro & Liskov §4.2: a replica
        // prepares one digest per (v, n); after a view change it may prepare again in v+1).
        assert_eq!(g.check(vote(0, 5, Phase::Commit), [2; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(g.check(vote(1, 5, Phase::Prepare), [2; 32]).unwrap(), Verdict::Recorded);
        // Out of order inside the window is fine.
        assert_eq!(g.check(vote(1, 3, Phase::Prepare), [3; 32]).unwrap(), Verdict::Recorded);
    }

    #[test]
    fn positions_behind_the_window_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Guard::open(&dir.path().join("g"), 10).unwrap();
        g.check(vote(0, 100, Phase::Commit), [1; 32]).unwrap();
        assert_eq!(g.check(vote(0, 89, Phase::Commit), [1; 32]).unwrap(), Verdict::TooOld);
        assert_eq!(g.check(vote(0, 90, Phase::Commit), [1; 32]).unwrap(), Verdict::Recorded);
        g.check(Position::ViewChange { view: 50 }, [1; 32]).unwrap();
        assert_eq!(g.check(Position::ViewChange { view: 39 }, [1; 32]).unwrap(), Verdict::TooOld);
        assert_eq!(g.check(Position::NewView { view: 45 }, [1; 32]).unwrap(), Verdict::Recorded);
    }

    #[test]
    fn the_log_survives_a_restart_and_a_torn_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        {
            let mut g = Guard::open(&path, 100).unwrap();
            g.check(vote(2, 7, Phase::Prepare), [1; 32]).unwrap();
            g.check(Position::Checkpoint { seq: 10 }, [5; 32]).unwrap();
        }
        // Half a record: the crash happened during the write, before any answer.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode_record(vote(2, 8, Phase::Prepare), &[9; 32])[..20]).unwrap();
        drop(f);
        let mut g = Guard::open(&path, 100).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g.check(vote(2, 7, Phase::Prepare), [2; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(Position::Checkpoint { seq: 10 }, [6; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(vote(2, 8, Phase::Prepare), [4; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, 3 * RECORD);
    }

    #[test]
    fn corruption_before_the_end_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        {
            let mut g = Guard::open(&path, 100).unwrap();
            for seq in 0..3 {
                g.check(vote(0, seq, Phase::Commit), [1; 32]).unwrap();
            }
        }
        let mut data = std::fs::read(&path).unwrap();
        data[RECORD + 20] ^= 1;
        std::fs::write(&path, data).unwrap();
        assert!(matches!(Guard::open(&path, 100), Err(GuardError::Corrupt { index: 1, .. })));
    }

    #[test]
    fn compaction_keeps_what_the_window_remembers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let mut g = Guard::open(&path, 8).unwrap();
        for seq in 0..5000u64 {
            g.check(vote(0, seq, Phase::Commit), [(seq % 251) as u8; 32]).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() < (5 * 1024 * RECORD) as u64);
        drop(g);
        let mut g = Guard::open(&path, 8).unwrap();
        assert_eq!(g.check(vote(0, 4999, Phase::Commit), [0; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(vote(0, 4000, Phase::Commit), [0; 32]).unwrap(), Verdict::TooOld);
    }
}
