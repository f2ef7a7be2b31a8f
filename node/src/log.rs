//! The node's durable logs (the consensus WAL and the intake) are [`vpbox_journal`] journals:
//! a torn tail is truncated and logged here, corruption stops the node naming file and offset.

use std::path::Path;

use vpbox_consensus::WalRecord;
use vpbox_consensus::wire::decode_record;
use vpbox_journal::{Journal, JournalError};

use crate::node::tracing_line;

/// Opens the journal at `path`, logging a torn tail it truncated; returns its records.
pub fn open(path: &Path) -> Result<(Journal, Vec<Vec<u8>>), JournalError> {
    let opened = Journal::open(path)?;
    if let Some(t) = &opened.torn {
        tracing_line(&format!(
            "{}: truncated a torn tail of {} bytes at byte {} ({}): an append a crash \
             interrupted before it was acknowledged",
            path.display(),
            t.bytes,
            t.offset,
            t.reason
        ));
    }
    Ok((opened.journal, opened.records))
}

/// The WAL's records as stored and as decoded.
pub type WalRecords = Vec<(Vec<u8>, WalRecord)>;

/// Opens the consensus WAL: its raw records and their decoding, in order. A record that
/// passed its checksum but does not decode stops the node like corruption does.
pub fn open_wal(path: &Path) -> Result<(Journal, WalRecords), String> {
    let (journal, raw) = open(path).map_err(|e| e.to_string())?;
    Ok((journal, decode_wal(path, raw)?))
}

/// Decodes the WAL's raw records (`path` names it in errors): a record that passed its
/// checksum but does not decode stops the node like corruption does.
pub fn decode_wal(path: &Path, raw: Vec<Vec<u8>>) -> Result<WalRecords, String> {
    let mut records = Vec::with_capacity(raw.len());
    for (index, bytes) in raw.into_iter().enumerate() {
        let record = decode_record(&bytes)
            .map_err(|e| format!("WAL {}: record {index} unreadable: {e}", path.display()))?;
        records.push((bytes, record));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use vpbox_consensus::{Digest as CDigest, Message, SeqNo, View, Vote};
    use vpbox_journal::MAGIC;
    use vpbox_sm::sm3::hash;

    use super::*;
    use crate::intake::Intake;

    /// Flips every bit of the file at `path` in turn and asks `open` to start from it: each
    /// run must refuse to start naming the file and a record's offset, never come up with an
    /// acknowledged record silently gone. All records here were synced (acknowledged).
    fn every_bit_flip_refuses_to_start(path: &Path, open: impl Fn(&Path) -> Result<usize, String>) {
        let good = std::fs::read(path).unwrap();
        let records = open(path).unwrap();
        assert!(records >= 3, "a small log of several records");
        for byte in MAGIC.len()..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(path, &bad).unwrap();
                match open(path) {
                    Err(e) => assert!(
                        e.contains(&path.display().to_string()) && e.contains("corrupt at byte"),
                        "byte {byte} bit {bit}: {e}"
                    ),
                    Ok(n) => panic!("byte {byte} bit {bit}: started with {n} of {records} records"),
                }
            }
        }
        std::fs::write(path, &good).unwrap();
    }

    #[test]
    fn a_flipped_bit_anywhere_in_the_wal_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consensus.wal");
        let (mut wal, _) = open_wal(&path).unwrap();
        let vote = |seq| Vote { view: View(1), seq: SeqNo(seq), digest: CDigest([seq as u8; 32]) };
        for r in [
            WalRecord::View { view: View(1), changing: false },
            WalRecord::Intent(Message::Prepare(vote(1))),
            WalRecord::Intent(Message::Commit(vote(1))),
        ] {
            wal.append(&vpbox_consensus::wire::encode_record(&r)).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        every_bit_flip_refuses_to_start(&path, |p| open_wal(p).map(|(_, r)| r.len()));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_the_intake_stops_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake.log");
        let key = |b: &[u8]| Some(hash(b));
        let mut intake = Intake::open(&path, key).unwrap();
        let txs: Vec<Vec<u8>> = (0..4u8).map(|n| vec![n; 5 + n as usize]).collect();
        let refs: Vec<_> = txs.iter().map(|t| (hash(t), t.as_slice())).collect();
        intake.admit(&refs).unwrap();
        drop(intake);
        every_bit_flip_refuses_to_start(&path, |p| {
            Intake::open(p, key).map(|i| i.len()).map_err(|e| e.to_string())
        });
    }

    #[test]
    fn a_torn_tail_is_truncated_and_the_acknowledged_records_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("intake.log");
        let key = |b: &[u8]| Some(hash(b));
        let mut intake = Intake::open(&path, key).unwrap();
        intake.admit(&[(hash(b"a"), b"a"), (hash(b"b"), b"b")]).unwrap();
        drop(intake);
        let full = std::fs::read(&path).unwrap();
        let mut torn = full.clone();
        // Half of a third record: a crash in the middle of an append not yet acknowledged.
        torn.extend_from_slice(&vpbox_journal::frame(b"c").unwrap()[..6]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(Intake::open(&path, key).unwrap().len(), 2);
        assert_eq!(std::fs::read(&path).unwrap(), full, "truncated back to the last record");
    }
}
