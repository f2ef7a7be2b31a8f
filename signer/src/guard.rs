//! The double-sign guard: for one key, every consensus position it signed and what it signed
//! there, persisted (fsync) before the signature leaves the signer.
//!
//! The signer decides what a request is by decoding its payload with the consensus crate's
//! canonical decoder ([`classify`]); the caller supplies no label. The conflict rules, against
//! `pbft.md` (Castro & Liskov, TOCS 2002) and the engine:
//!
//! | message | position | conflict | why it matters |
//! |---|---|---|---|
//! | pre-prepare | (view, seq) | any other pre-prepare (batch or result) | two proposals for one slot let a primary split the replicas (§4.2) |
//! | prepare | (view, seq) | any other prepare | a replica prepares one digest per (v, n) (§4.2); two make conflicting prepared certificates |
//! | commit | (view, seq) | any other commit | two commit votes could certify two blocks at one height |
//! | checkpoint | seq | any other checkpoint | two state digests at one checkpoint could make two stable checkpoints (§4.3) |
//! | view change | (epoch, view) | any other view change | a replica sends one VIEW-CHANGE per view, then takes no part in the old one (§4.4); two with different prepared sets could steer two new primaries apart |
//! | new view | (epoch, view) | any other new view | one primary's two NEW-VIEWs with different O sets would start replicas from different points (§4.4) |
//! | heartbeat, fetch, entries | — | none, unguarded | a heartbeat names only a view, a fetch only a height; entries carry other nodes' certificates and no vote of this node's |
//!
//! View changes and new views are keyed by epoch too: peers verify one against the
//! configuration it names, so a replica that learned of a new configuration during a view
//! change signs its (same) view change again for the new epoch; votes are keyed by position
//! alone, since a sequence number belongs to exactly one configuration.
//!
//! "Any other" means any payload whose bytes differ: the guard stores SM3 of the whole signing
//! payload, so exactly the same message may be signed again (a re-sent vote, a restart) and
//! nothing else. The engine re-signs only what its WAL recorded as an intent, so an honest
//! node never meets a refusal.
//!
//! **Bounds.** No single request can move the guard out of range:
//! - A position more than `seq_jump_max` sequence numbers above the highest one signed, or
//!   more than `view_jump_max` views above the highest view, is refused
//!   ([`Verdict::OutOfRange`]) and not recorded. A fresh guard takes its first position
//!   anywhere (a box joining a chain already long).
//! - Memory is bounded by count, not by a high-water mark: the guard remembers at most
//!   `capacity` sequence-numbered positions and `capacity` view-numbered ones, and forgets the
//!   lowest first. What it forgot is below its floor and refused ([`Verdict::TooOld`]): it
//!   cannot prove it safe. A far position (even 2^62) is one entry among `capacity`: it
//!   never makes the honest positions below it too old.
//!
//! The log is a [`vpbox_journal`] journal of 57-byte records (kind, view, seq, epoch, digest)
//! plus a floor record after compaction: a torn tail (a crash before the signature was returned) is
//! dropped, corruption refuses to start.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use vpbox_consensus::Message;
use vpbox_consensus::wire::decode_signing_payload;
use vpbox_journal::{Journal, JournalError};

/// A consensus message kind the guard keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// A pre-prepare.
    PrePrepare = 0,
    /// A prepare.
    Prepare = 1,
    /// A commit.
    Commit = 2,
    /// A checkpoint.
    Checkpoint = 3,
    /// A view change.
    ViewChange = 4,
    /// A new view.
    NewView = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::PrePrepare,
            1 => Self::Prepare,
            2 => Self::Commit,
            3 => Self::Checkpoint,
            4 => Self::ViewChange,
            5 => Self::NewView,
            _ => return None,
        })
    }

    /// Whether positions of this kind are numbered by sequence number (else by view).
    fn by_seq(self) -> bool {
        matches!(self, Self::PrePrepare | Self::Prepare | Self::Commit | Self::Checkpoint)
    }
}

/// What a consensus signature is for: the guard's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The message kind.
    pub kind: Kind,
    /// Its view (0 for checkpoints).
    pub view: u64,
    /// Its sequence number (0 for view changes and new views).
    pub seq: u64,
    /// The configuration epoch, for view changes and new views (0 for the others).
    pub epoch: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Checkpoint => write!(f, "checkpoint seq {}", self.seq),
            Kind::ViewChange => write!(f, "view-change view {} epoch {}", self.view, self.epoch),
            Kind::NewView => write!(f, "new-view view {} epoch {}", self.view, self.epoch),
            k => write!(f, "{k:?} view {} seq {}", self.view, self.seq),
        }
    }
}

/// A consensus signing payload, as the signer understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The configuration epoch it names.
    pub epoch: u64,
    /// The node it says it is from.
    pub from: u32,
    /// Its guard position; `None` for the kinds that cannot conflict.
    pub position: Option<Position>,
    /// The message kind's name, for the audit log.
    pub what: &'static str,
}

/// Decodes a consensus signing payload with the consensus crate's canonical decoder (strict:
/// one encoding per message) and derives its position.
pub fn classify(payload: &[u8]) -> Result<Classified, vpbox_consensus::Error> {
    let (epoch, from, message) = decode_signing_payload(payload)?;
    let at = |kind, view: u64, seq: u64| Some(Position { kind, view, seq, epoch: 0 });
    let by_epoch = |kind, view: u64| Some(Position { kind, view, seq: 0, epoch });
    let (position, what) = match &message {
        Message::PrePrepare(p) => (at(Kind::PrePrepare, p.view.0, p.seq.0), "pre-prepare"),
        Message::Prepare(v) => (at(Kind::Prepare, v.view.0, v.seq.0), "prepare"),
        Message::Commit(v) => (at(Kind::Commit, v.view.0, v.seq.0), "commit"),
        Message::Checkpoint(c) => (at(Kind::Checkpoint, 0, c.seq.0), "checkpoint"),
        Message::ViewChange(vc) => (by_epoch(Kind::ViewChange, vc.view.0), "view-change"),
        Message::NewView(nv) => (by_epoch(Kind::NewView, nv.view.0), "new-view"),
        Message::Heartbeat { .. } => (None, "heartbeat"),
        Message::Fetch { .. } => (None, "fetch"),
        Message::Entries(_) => (None, "entries"),
        // A kind this build does not know is refused rather than signed unguarded.
        _ => return Err(vpbox_consensus::Error::Tag { what: "message kind", tag: 0xff }),
    };
    Ok(Classified { epoch, from: from.0, position, what })
}

/// The guard's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New position: recorded durably; sign.
    Recorded,
    /// The same payload at a position signed before: sign again.
    Repeat,
    /// Something different was signed here: refuse.
    Conflict,
    /// At or below what the guard has forgotten: refuse.
    TooOld,
    /// Too far above what the guard has signed: refuse.
    OutOfRange,
}

/// The guard's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Positions remembered per class (sequence-numbered; view-numbered).
    pub capacity: usize,
    /// Largest step above the highest sequence number signed.
    pub seq_jump_max: u64,
    /// Largest step above the highest view signed.
    pub view_jump_max: u64,
}

impl Default for Limits {
    /// 100,000 positions (about 30,000 blocks of three votes and a checkpoint share, a few MiB
    /// of memory); a jump of 1,000,000 sequence numbers (weeks of blocks at the design's peak:
    /// a box down longer re-joins with a fresh guard, see SECURITY.md) or 10,000 views.
    fn default() -> Self {
        Self { capacity: 100_000, seq_jump_max: 1_000_000, view_jump_max: 10_000 }
    }
}

/// Why the guard could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The log failed or is corrupt (a full disk: the signature is refused).
    #[error("double-sign guard: {0}")]
    Journal(#[from] JournalError),
    /// The log could not be made durable: the signature is refused.
    #[error("double-sign guard fsync: {0}")]
    Sync(#[source] std::io::Error),
    /// A record passed its checksum but is not a guard record: refuse to start.
    #[error("double-sign guard log {path}: record {index} is not a guard record")]
    Unreadable {
        /// The log file.
        path: PathBuf,
        /// The record's index.
        index: usize,
    },
}

const RECORD: usize = 57;
const FLOOR: u8 = 0xf0;

/// The numbering of one class of positions: highest seen, floor of what was forgotten.
#[derive(Debug, Default, Clone, Copy)]
struct Range {
    high: Option<u64>,
    floor: Option<u64>,
}

/// The guard for one key.
#[derive(Debug)]
pub struct Guard {
    journal: Journal,
    limits: Limits,
    /// Sequence-numbered positions, keyed (seq, view, kind) so the lowest come first.
    by_seq: BTreeMap<(u64, u64, Kind), [u8; 32]>,
    /// View-numbered positions, keyed (view, epoch, kind).
    by_view: BTreeMap<(u64, u64, Kind), [u8; 32]>,
    seq: Range,
    view: Range,
    records_in_file: usize,
}

impl Guard {
    /// Opens (or creates) the log at `path`, dropping a torn last record (returned for the
    /// caller to log).
    pub fn open(
        path: &Path,
        limits: Limits,
    ) -> Result<(Self, Option<vpbox_journal::Torn>), GuardError> {
        let opened = Journal::open(path)?;
        let mut guard = Self {
            journal: opened.journal,
            limits: Limits { capacity: limits.capacity.max(1), ..limits },
            by_seq: BTreeMap::new(),
            by_view: BTreeMap::new(),
            seq: Range::default(),
            view: Range::default(),
            records_in_file: opened.records.len(),
        };
        for (index, rec) in opened.records.iter().enumerate() {
            let unreadable = || GuardError::Unreadable { path: path.to_path_buf(), index };
            match decode_record(rec).ok_or_else(unreadable)? {
                Record::Signed(pos, digest) => guard.remember(pos, digest),
                Record::Floor { seq, view } => {
                    guard.seq.floor = guard.seq.floor.max(seq);
                    guard.view.floor = guard.view.floor.max(view);
                }
            }
        }
        Ok((guard, opened.torn))
    }

    /// Checks `digest` (SM3 of the signing payload) at `position`; a new position is written
    /// and made durable before this returns.
    pub fn check(&mut self, position: Position, digest: [u8; 32]) -> Result<Verdict, GuardError> {
        let verdict = self.check_unsynced(position, digest)?;
        self.journal.sync()?;
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
        if let Some(previous) = self.lookup(position) {
            return Ok(if previous == digest { Verdict::Repeat } else { Verdict::Conflict });
        }
        let (n, range) = self.number(position);
        if range.floor.is_some_and(|f| n <= f) {
            return Ok(Verdict::TooOld);
        }
        let out_of_range = |x: u64, range: Range, jump: u64| {
            range.high.is_some_and(|h| x > h.saturating_add(jump))
        };
        if out_of_range(position.seq, self.seq, self.limits.seq_jump_max)
            || out_of_range(position.view, self.view, self.limits.view_jump_max)
        {
            return Ok(Verdict::OutOfRange);
        }
        self.journal.append(&encode_record(&Record::Signed(position, digest)))?;
        self.records_in_file += 1;
        self.remember(position, digest);
        if self.records_in_file > 4 * self.len().max(1024) {
            self.compact()?;
        }
        Ok(Verdict::Recorded)
    }

    /// A handle on the current log file for `sync_data` outside the caller's lock. Taken anew
    /// for each check: compaction replaces the file.
    pub fn sync_handle(&self) -> Result<File, GuardError> {
        Ok(self.journal.sync_handle()?)
    }

    /// Fails the guard (an fsync of its [`Self::sync_handle`] failed): it refuses every
    /// position, repeats included, until the signer restarts and re-reads its log.
    pub fn fail(&mut self) {
        self.journal.fail();
    }

    /// How many positions are remembered.
    pub fn len(&self) -> usize {
        self.by_seq.len() + self.by_view.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The guard's state as JSON fields: what it remembers and its bounds.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "positions": self.len(),
            "highSeq": self.seq.high,
            "highView": self.view.high,
            "floorSeq": self.seq.floor,
            "floorView": self.view.floor,
            "capacity": self.limits.capacity,
            "seqJumpMax": self.limits.seq_jump_max,
            "viewJumpMax": self.limits.view_jump_max,
        })
    }

    fn lookup(&self, p: Position) -> Option<[u8; 32]> {
        if p.kind.by_seq() {
            self.by_seq.get(&(p.seq, p.view, p.kind)).copied()
        } else {
            self.by_view.get(&(p.view, p.epoch, p.kind)).copied()
        }
    }

    /// The number a position is pruned by, and its class's range.
    fn number(&self, p: Position) -> (u64, Range) {
        if p.kind.by_seq() { (p.seq, self.seq) } else { (p.view, self.view) }
    }

    fn remember(&mut self, p: Position, digest: [u8; 32]) {
        // Every position's view counts for the view jump bound (a vote at view 2^62 is as
        // far out as a view change there); only view-numbered positions are pruned by view.
        self.view.high = self.view.high.max(Some(p.view));
        if p.kind.by_seq() {
            self.seq.high = self.seq.high.max(Some(p.seq));
            self.by_seq.insert((p.seq, p.view, p.kind), digest);
            while self.by_seq.len() > self.limits.capacity {
                let Some(((s, _, _), _)) = self.by_seq.pop_first() else { break };
                // Forget the whole sequence number, so a floor means "nothing known at or
                // below it" for every kind.
                while self.by_seq.first_key_value().is_some_and(|((x, _, _), _)| *x == s) {
                    self.by_seq.pop_first();
                }
                self.seq.floor = self.seq.floor.max(Some(s));
            }
        } else {
            self.by_view.insert((p.view, p.epoch, p.kind), digest);
            while self.by_view.len() > self.limits.capacity {
                let Some(((v, _, _), _)) = self.by_view.pop_first() else { break };
                while self.by_view.first_key_value().is_some_and(|((x, _, _), _)| *x == v) {
                    self.by_view.pop_first();
                }
                self.view.floor = self.view.floor.max(Some(v));
            }
        }
    }

    /// Rewrites the log with the floor and the remembered positions.
    fn compact(&mut self) -> Result<(), GuardError> {
        let mut records =
            vec![encode_record(&Record::Floor { seq: self.seq.floor, view: self.view.floor })];
        for (&(seq, view, kind), d) in &self.by_seq {
            let p = Position { kind, view, seq, epoch: 0 };
            records.push(encode_record(&Record::Signed(p, *d)));
        }
        for (&(view, epoch, kind), d) in &self.by_view {
            let p = Position { kind, view, seq: 0, epoch };
            records.push(encode_record(&Record::Signed(p, *d)));
        }
        self.journal.rewrite(records.iter().map(|r| r.as_slice()))?;
        self.records_in_file = records.len();
        Ok(())
    }
}

enum Record {
    Signed(Position, [u8; 32]),
    Floor { seq: Option<u64>, view: Option<u64> },
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut rec = Vec::with_capacity(RECORD);
    match record {
        Record::Signed(p, digest) => {
            rec.push(p.kind as u8);
            rec.extend_from_slice(&p.view.to_be_bytes());
            rec.extend_from_slice(&p.seq.to_be_bytes());
            rec.extend_from_slice(&p.epoch.to_be_bytes());
            rec.extend_from_slice(digest);
        }
        Record::Floor { seq, view } => {
            rec.push(FLOOR);
            for f in [seq, view] {
                rec.push(u8::from(f.is_some()));
                rec.extend_from_slice(&f.unwrap_or(0).to_be_bytes());
            }
        }
    }
    rec
}

fn decode_record(rec: &[u8]) -> Option<Record> {
    let u64_at = |at: usize| Some(u64::from_be_bytes(rec.get(at..at + 8)?.try_into().ok()?));
    if rec.first() == Some(&FLOOR) {
        if rec.len() != 19 || rec[1] > 1 || rec[10] > 1 {
            return None;
        }
        let seq = (rec[1] == 1).then_some(u64_at(2)?);
        let view = (rec[10] == 1).then_some(u64_at(11)?);
        return Some(Record::Floor { seq, view });
    }
    if rec.len() != RECORD {
        return None;
    }
    let kind = Kind::from_u8(rec[0])?;
    let position = Position { kind, view: u64_at(1)?, seq: u64_at(9)?, epoch: u64_at(17)? };
    Some(Record::Signed(position, rec[25..57].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(kind: Kind, view: u64, seq: u64) -> Position {
        Position { kind, view, seq, epoch: 0 }
    }

    fn open(path: &Path, limits: Limits) -> Guard {
        Guard::open(path, limits).unwrap().0
    }

    #[test]
    fn conflicting_digest_at_one_position_is_refused_and_repeats_are_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = open(&dir.path().join("g"), Limits::default());
        let p = at(Kind::Prepare, 0, 5);
        assert_eq!(g.check(p, [1; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(g.check(p, [1; 32]).unwrap(), Verdict::Repeat);
        assert_eq!(g.check(p, [2; 32]).unwrap(), Verdict::Conflict);
        // Another phase, view or seq is another position (Castro & Liskov §4.2: a replica
        // prepares one digest per (v, n); after a view change it may prepare again in v+1).
        assert_eq!(g.check(at(Kind::Commit, 0, 5), [2; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(g.check(at(Kind::Prepare, 1, 5), [2; 32]).unwrap(), Verdict::Recorded);
        // Out of order is fine.
        assert_eq!(g.check(at(Kind::Prepare, 1, 3), [3; 32]).unwrap(), Verdict::Recorded);
        for kind in [Kind::ViewChange, Kind::NewView] {
            assert_eq!(g.check(at(kind, 4, 0), [1; 32]).unwrap(), Verdict::Recorded);
            assert_eq!(g.check(at(kind, 4, 0), [2; 32]).unwrap(), Verdict::Conflict);
        }
    }

    #[test]
    fn a_far_position_is_refused_and_cannot_make_honest_votes_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { capacity: 50, seq_jump_max: 1000, view_jump_max: 10 };
        let mut g = open(&dir.path().join("g"), limits);
        // A fresh guard takes its first position anywhere; the next ones within the bounds.
        assert_eq!(g.check(at(Kind::Commit, 0, 100), [1; 32]).unwrap(), Verdict::Recorded);
        let poison = at(Kind::Checkpoint, 0, 1 << 62);
        assert_eq!(g.check(poison, [9; 32]).unwrap(), Verdict::OutOfRange);
        assert_eq!(g.check(at(Kind::ViewChange, 11, 0), [9; 32]).unwrap(), Verdict::OutOfRange);
        assert_eq!(g.check(at(Kind::Prepare, 11, 101), [9; 32]).unwrap(), Verdict::OutOfRange);
        assert_eq!(g.check(at(Kind::Prepare, 10, 1100), [9; 32]).unwrap(), Verdict::Recorded);
        // Even a far position that was signed (a fresh guard) is one entry: the honest votes
        // far below it are not too old.
        let dir2 = tempfile::tempdir().unwrap();
        let mut fresh = open(&dir2.path().join("g"), limits);
        assert_eq!(fresh.check(poison, [9; 32]).unwrap(), Verdict::Recorded);
        for seq in 1..=40 {
            assert_eq!(fresh.check(at(Kind::Commit, 0, seq), [1; 32]).unwrap(), Verdict::Recorded);
        }
    }

    #[test]
    fn the_lowest_positions_are_forgotten_first_and_refused_below_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let limits = Limits { capacity: 10, seq_jump_max: 1000, view_jump_max: 1000 };
        let mut g = open(&path, limits);
        for seq in 1..=12 {
            g.check(at(Kind::Commit, 0, seq), [seq as u8; 32]).unwrap();
        }
        assert_eq!(g.len(), 10);
        assert_eq!(g.check(at(Kind::Prepare, 0, 2), [0; 32]).unwrap(), Verdict::TooOld);
        assert_eq!(g.check(at(Kind::Prepare, 0, 3), [0; 32]).unwrap(), Verdict::Recorded);
        drop(g);
        // The same after a restart.
        let mut g = open(&path, limits);
        assert_eq!(g.check(at(Kind::Commit, 0, 12), [0; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(at(Kind::Prepare, 0, 1), [0; 32]).unwrap(), Verdict::TooOld);
    }

    #[test]
    fn the_log_survives_a_restart_and_a_torn_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        {
            let mut g = open(&path, Limits::default());
            g.check(at(Kind::Prepare, 2, 7), [1; 32]).unwrap();
            g.check(at(Kind::Checkpoint, 0, 10), [5; 32]).unwrap();
            g.check(at(Kind::ViewChange, 3, 0), [6; 32]).unwrap();
        }
        let whole = std::fs::metadata(&path).unwrap().len();
        // Half a record: the crash happened during the write, before any answer.
        let mut data = std::fs::read(&path).unwrap();
        let rec =
            vpbox_journal::frame(&encode_record(&Record::Signed(at(Kind::Prepare, 2, 8), [9; 32])))
                .unwrap();
        data.extend_from_slice(&rec[..20]);
        std::fs::write(&path, data).unwrap();
        let (mut g, torn) = Guard::open(&path, Limits::default()).unwrap();
        assert_eq!(torn.map(|t| t.offset), Some(whole));
        assert_eq!(g.len(), 3);
        assert_eq!(g.check(at(Kind::Prepare, 2, 7), [2; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(at(Kind::Checkpoint, 0, 10), [6; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(at(Kind::ViewChange, 3, 0), [7; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(at(Kind::Prepare, 2, 8), [4; 32]).unwrap(), Verdict::Recorded);
    }

    #[test]
    fn every_single_bit_flip_refuses_to_start_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        {
            let mut g = open(&path, Limits::default());
            g.check(at(Kind::Commit, 0, 1), [1; 32]).unwrap();
            g.check(at(Kind::Checkpoint, 0, 10), [2; 32]).unwrap();
            g.check(at(Kind::NewView, 1, 0), [3; 32]).unwrap();
        }
        let good = std::fs::read(&path).unwrap();
        for byte in vpbox_journal::MAGIC.len()..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                let e = Guard::open(&path, Limits::default()).expect_err("corruption");
                let text = e.to_string();
                assert!(
                    text.contains(&path.display().to_string()) && text.contains("corrupt at byte"),
                    "byte {byte} bit {bit}: {text}"
                );
            }
        }
    }

    /// The audit log's wording of a position (SECURITY.md, Audit: each line names the
    /// position), pinned: officers' searches and alerts match these words, so a change to them
    /// is a change to the audit format.
    #[test]
    fn positions_read_as_the_audit_log_writes_them() {
        let show = |kind, view, seq, epoch| Position { kind, view, seq, epoch }.to_string();
        assert_eq!(show(Kind::Checkpoint, 0, 10, 0), "checkpoint seq 10");
        assert_eq!(show(Kind::ViewChange, 3, 0, 2), "view-change view 3 epoch 2");
        assert_eq!(show(Kind::NewView, 4, 0, 1), "new-view view 4 epoch 1");
        assert_eq!(show(Kind::Prepare, 2, 7, 0), "Prepare view 2 seq 7");
        assert_eq!(show(Kind::PrePrepare, 1, 5, 0), "PrePrepare view 1 seq 5");
        assert_eq!(show(Kind::Commit, 1, 6, 0), "Commit view 1 seq 6");
    }

    /// A capacity of 0 is taken as 1: the guard always remembers its latest position, so a
    /// misconfigured bound can weaken the memory but never switch the guard off.
    #[test]
    fn a_zero_capacity_still_remembers_the_latest_position() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { capacity: 0, seq_jump_max: 1000, view_jump_max: 1000 };
        let mut g = open(&dir.path().join("g"), limits);
        assert_eq!(g.check(at(Kind::Commit, 0, 5), [1; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(g.check(at(Kind::Commit, 0, 5), [2; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.state()["capacity"], 1);
        assert_eq!(g.len(), 1);
    }

    /// Records in a guard log (module docs: one journal record per position, compacted).
    fn records_on_disk(path: &Path) -> usize {
        vpbox_journal::parse(&std::fs::read(path).unwrap()).unwrap().records.len()
    }

    /// The log is bounded: it is rewritten (a floor and the remembered positions) as soon as it
    /// holds more than 4 × max(positions, 1024) records, and not before.
    #[test]
    fn the_log_is_compacted_exactly_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let limits = Limits { capacity: 8, seq_jump_max: 10_000, view_jump_max: 1000 };
        let mut g = open(&path, limits);
        // Unsynced: the same records, without 4,096 fsyncs.
        for seq in 1..=4096u64 {
            g.check_unsynced(at(Kind::Commit, 0, seq), [1; 32]).unwrap();
        }
        assert_eq!(records_on_disk(&path), 4096, "at the bound: not yet compacted");
        g.check_unsynced(at(Kind::Commit, 0, 4097), [1; 32]).unwrap();
        g.sync_handle().unwrap().sync_data().unwrap();
        assert_eq!(records_on_disk(&path), 1 + 8, "past it: a floor and the 8 remembered");
        drop(g);
        // The floor survives the rewrite, for the class that has one only.
        let mut g = open(&path, limits);
        assert_eq!(g.state()["floorSeq"], 4089);
        assert!(g.state()["floorView"].is_null());
        assert_eq!(g.check(at(Kind::Prepare, 0, 4089), [0; 32]).unwrap(), Verdict::TooOld);
        assert_eq!(g.check(at(Kind::Prepare, 0, 4090), [0; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(g.check(at(Kind::ViewChange, 0, 0), [0; 32]).unwrap(), Verdict::Recorded);
    }

    /// View-numbered positions (view changes, new views) are bounded by `capacity` too, the
    /// lowest view forgotten first and whole — every position at it, of every kind and epoch
    /// — so that the view floor means "nothing known at or below it"; the same after a restart.
    #[test]
    fn view_changes_are_forgotten_a_whole_view_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let limits = Limits { capacity: 3, seq_jump_max: 1000, view_jump_max: 1000 };
        let mut g = open(&path, limits);
        let vc = |view, epoch| Position { kind: Kind::ViewChange, view, seq: 0, epoch };
        let nv = |view, epoch| Position { kind: Kind::NewView, view, seq: 0, epoch };
        for p in [vc(1, 0), nv(1, 0), vc(2, 0)] {
            assert_eq!(g.check(p, [1; 32]).unwrap(), Verdict::Recorded);
        }
        assert_eq!(g.len(), 3, "at capacity");
        assert_eq!(g.check(nv(2, 0), [1; 32]).unwrap(), Verdict::Recorded);
        assert_eq!(g.len(), 2, "view 1 forgotten, both its positions");
        for restarted in [false, true] {
            if restarted {
                drop(g);
                g = open(&path, limits);
            }
            assert_eq!(g.check(nv(1, 0), [2; 32]).unwrap(), Verdict::TooOld, "{restarted}");
            assert_eq!(g.check(vc(1, 1), [2; 32]).unwrap(), Verdict::TooOld, "{restarted}");
            assert_eq!(g.check(vc(2, 0), [2; 32]).unwrap(), Verdict::Conflict, "{restarted}");
            assert_eq!(g.check(nv(2, 0), [1; 32]).unwrap(), Verdict::Repeat, "{restarted}");
            assert_eq!(g.state()["floorView"], 1);
        }
    }

    /// A record that passes the journal's checksum but is not a guard record refuses to start
    /// (module docs): a floor of the wrong length or with a presence flag other than 0 or 1,
    /// a signed position of the wrong length or an unknown kind.
    #[test]
    fn a_record_that_is_not_a_guard_record_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let floor = encode_record(&Record::Floor { seq: Some(5), view: None });
        let signed = encode_record(&Record::Signed(at(Kind::Commit, 0, 9), [1; 32]));
        let variant = |base: &Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
            let mut r = base.clone();
            f(&mut r);
            r
        };
        let bad = [
            variant(&floor, &|r| r.push(0)),
            variant(&floor, &|r| {
                r.pop();
            }),
            variant(&floor, &|r| r[1] = 2),
            variant(&floor, &|r| r[10] = 2),
            variant(&signed, &|r| r.push(0)),
            variant(&signed, &|r| r[0] = 6),
        ];
        for (i, rec) in bad.iter().enumerate() {
            let _ = std::fs::remove_file(&path);
            let mut j = Journal::open(&path).unwrap().journal;
            j.append(&signed).unwrap();
            j.append(rec).unwrap();
            j.sync().unwrap();
            drop(j);
            match Guard::open(&path, Limits::default()) {
                Err(GuardError::Unreadable { index: 1, .. }) => {}
                other => panic!("variant {i}: {:?}", other.map(|_| ())),
            }
        }
        // The good ones, with either presence flag: the floor is read as written.
        for (seq, view) in [(Some(5), None), (None, Some(7)), (Some(3), Some(4))] {
            let _ = std::fs::remove_file(&path);
            let mut j = Journal::open(&path).unwrap().journal;
            j.append(&encode_record(&Record::Floor { seq, view })).unwrap();
            j.sync().unwrap();
            drop(j);
            let g = open(&path, Limits::default());
            assert_eq!(g.state()["floorSeq"], serde_json::json!(seq));
            assert_eq!(g.state()["floorView"], serde_json::json!(view));
        }
    }

    /// After a failed fsync (`fail`), the guard refuses every position — repeats included —
    /// until the signer restarts and re-reads its log.
    #[test]
    fn a_failed_guard_refuses_everything_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let mut g = open(&path, Limits::default());
        assert!(g.is_empty());
        g.check(at(Kind::Commit, 0, 1), [1; 32]).unwrap();
        assert!(!g.is_empty());
        g.fail();
        assert!(g.check(at(Kind::Commit, 0, 1), [1; 32]).is_err(), "a repeat");
        assert!(g.check(at(Kind::Commit, 0, 2), [1; 32]).is_err(), "a new position");
        assert!(g.sync_handle().is_err());
        drop(g);
        let mut g = open(&path, Limits::default());
        assert_eq!(g.check(at(Kind::Commit, 0, 1), [1; 32]).unwrap(), Verdict::Repeat);
    }

    #[test]
    fn compaction_keeps_what_the_guard_remembers_and_its_floor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let limits = Limits { capacity: 8, seq_jump_max: 1000, view_jump_max: 1000 };
        let mut g = open(&path, limits);
        for seq in 0..5000u64 {
            g.check(at(Kind::Commit, 0, seq), [(seq % 251) as u8; 32]).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() < 5 * 1024 * 70);
        drop(g);
        let mut g = open(&path, limits);
        assert_eq!(g.len(), 8);
        assert_eq!(g.check(at(Kind::Commit, 0, 4999), [0; 32]).unwrap(), Verdict::Conflict);
        assert_eq!(g.check(at(Kind::Commit, 0, 4000), [0; 32]).unwrap(), Verdict::TooOld);
    }
}
