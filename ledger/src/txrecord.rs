//! A committed transaction's record in the ledger's `txs` column family: where it is, its
//! receipt's outcomes and its encoding, under its hash.
//!
//! `1:u8 height:LEB128 index:LEB128 runs:LEB128 (code:u8 count:LEB128)* tx` — the outcome
//! codes ([`PutOutcome::code`](crate::contract::PutOutcome::code)) in runs of one code, in
//! order (a day-end batch's 5,000 `Success` are one run, three bytes), then the transaction's
//! canonical encoding to the end. The numbers are minimal LEB128, as in an anchor's record
//! ([`crate::record`]).
//!
//! Why: the receipt had a family of its own (`receipts`: the hash again as its key, the height
//! and index again, a filter entry), 49 bytes a transaction on disk, which for an individually
//! signed anchor was a fifth of its transaction's cost; the fixed-width height and index took
//! 12 bytes where 3 to 5 do. Measured on 2026-12-06 with `vpbox bench anchors` (ARCHITECTURE.md,
//! the ledger).
//!
//! **Records written before** (until 2026-12-06) are `height:u64be index:u32be tx`, their
//! receipts in the `receipts` family (`height:u64be index:u32be code*`). Their first byte is
//! the height's top byte, 0 for any height below 2^56, so the two forms are told apart by it:
//! a ledger written before opens as it is, its old transactions' receipts read from
//! `receipts`, its new ones' from their records. Nothing is rewritten. A binary from before
//! reads a new record's first twelve bytes as its height and index and fails to decode the rest:
//! it cannot serve those transactions, to clients or to peers. The upgrade is one way; going
//! back is not supported.

use crate::Error;
use crate::record::{leb128, push_leb128};
use crate::tx::BATCH_MAX;
use crate::wire::Reader;

/// The first byte of a record in the current form; a record written before starts with 0.
const CURRENT: u8 = 1;

/// The most outcomes a record may hold: one per pair of the largest batch. Its own number, so
/// that a smaller batch limit later still reads the records written under this one.
const OUTCOMES_MAX: u64 = 10_000;
const _: () = assert!(BATCH_MAX as u64 <= OUTCOMES_MAX, "a batch's receipt must fit a record");

/// The record of the transaction encoded as `tx`, at `index` in block `height`, whose receipt's
/// outcome codes are `codes`.
pub(crate) fn encode(
    height: u64,
    index: u32,
    codes: impl IntoIterator<Item = u8>,
    tx: &[u8],
) -> Vec<u8> {
    let mut runs: Vec<(u8, u64)> = Vec::new();
    for c in codes {
        match runs.last_mut() {
            Some((code, count)) if *code == c => *count += 1,
            _ => runs.push((c, 1)),
        }
    }
    let mut out = Vec::with_capacity(16 + 11 * runs.len() + tx.len());
    out.push(CURRENT);
    push_leb128(&mut out, height);
    push_leb128(&mut out, index.into());
    push_leb128(&mut out, runs.len() as u64);
    for (code, count) in runs {
        out.push(code);
        push_leb128(&mut out, count);
    }
    out.extend_from_slice(tx);
    out
}

/// A transaction's record, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TxRecord<'a> {
    pub(crate) height: u64,
    pub(crate) index: u32,
    /// The receipt's outcome codes, unchecked; `None` for a record written before they moved
    /// in (its receipt is in the `receipts` family).
    pub(crate) codes: Option<Vec<u8>>,
    /// The transaction's encoding, undecoded.
    pub(crate) tx: &'a [u8],
}

/// Decodes a record of either form: an error when it is malformed (numbers not minimal, a run
/// empty or of the code of the run before it: a record in the current form has one encoding,
/// the one [`encode`] writes), holds more outcomes than a receipt can (memory is bounded by
/// [`OUTCOMES_MAX`] whatever the record claims), or starts with a byte neither form starts
/// with.
pub(crate) fn decode(raw: &[u8]) -> Result<TxRecord<'_>, Error> {
    let mut r = Reader::new(raw, "transaction record");
    match r.u8()? {
        CURRENT => {
            let height = leb128(&mut r)?;
            let index =
                u32::try_from(leb128(&mut r)?).map_err(|_| r.fail("an index past 32 bits"))?;
            // Each run takes two bytes at least: the loop ends with the record.
            let runs = leb128(&mut r)?;
            let mut codes = Vec::new();
            for _ in 0..runs {
                let code = r.u8()?;
                let count = leb128(&mut r)?;
                if count == 0 {
                    return Err(r.fail("an empty run of outcomes"));
                }
                // Runs as `encode` writes them, so that a record has one form.
                if codes.last() == Some(&code) {
                    return Err(r.fail("a run of the same outcome as the run before it"));
                }
                let total = (codes.len() as u64).saturating_add(count);
                if total > OUTCOMES_MAX {
                    return Err(r.fail("more outcomes than a receipt holds"));
                }
                codes.resize(total as usize, code);
            }
            let tx = r.take(r.rest_len())?;
            Ok(TxRecord { height, index, codes: Some(codes), tx })
        }
        0 => {
            // The top byte of the height was the 0 just read.
            let mut low = Reader::new(raw, "transaction record");
            let (height, index) = (low.u64()?, low.u32()?);
            let tx = low.take(low.rest_len())?;
            Ok(TxRecord { height, index, codes: None, tx })
        }
        _ => Err(r.fail("a record in neither known form")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_their_outcomes_in_runs() {
        let tx = [7u8; 178];
        for codes in [
            vec![],
            vec![0],
            vec![3],
            vec![0; BATCH_MAX as usize],
            vec![0, 0, 1, 1, 1, 0, 2],
            (0..1000).map(|i| (i % 4) as u8).collect(),
        ] {
            for (height, index) in [(0, 0), (1, 0), (300, 499), (u64::MAX, u32::MAX)] {
                let rec = encode(height, index, codes.iter().copied(), &tx);
                let got = decode(&rec).unwrap();
                assert_eq!(got, TxRecord { height, index, codes: Some(codes.clone()), tx: &tx });
            }
        }
        // A batch's outcomes, all `Success`, are one run of three bytes; a small height and
        // index a byte each.
        let rec = encode(5, 1, [0; 5000], &tx);
        assert_eq!(rec[..8], [CURRENT, 5, 1, 1, 0, 0x88, 0x27, 7]);
        assert_eq!(rec.len(), 7 + tx.len());
    }

    #[test]
    fn records_written_before_read_back_without_outcomes() {
        let mut rec = 0x0000_0102_0304_0506u64.to_be_bytes().to_vec();
        rec.extend_from_slice(&9u32.to_be_bytes());
        rec.extend_from_slice(&[1, 2, 3]);
        let got = decode(&rec).unwrap();
        assert_eq!(
            got,
            TxRecord { height: 0x0000_0102_0304_0506, index: 9, codes: None, tx: &[1, 2, 3] }
        );
        assert!(decode(&rec[..11]).is_err(), "short of its index");
    }

    #[test]
    fn malformed_records_are_refused() {
        let head = |tail: &[u8]| [&[CURRENT, 1, 0][..], tail].concat();
        let runs_past = {
            let mut v = head(&[2, 0]);
            push_leb128(&mut v, OUTCOMES_MAX);
            v.extend_from_slice(&[1, 1]);
            v
        };
        for (rec, why) in [
            (vec![], "truncated"),
            (vec![2, 0, 0], "neither known form"),
            (vec![0xff], "neither known form"),
            (vec![CURRENT], "truncated"),
            (vec![CURRENT, 0x80, 0x00, 0, 0], "shortest form"),
            (vec![CURRENT, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0], "index past 32 bits"),
            (head(&[1, 0, 0]), "empty run"),
            (head(&[2, 0, 1, 0, 1]), "same outcome as the run before it"),
            (head(&[3, 0, 1, 1, 1, 1, 1]), "same outcome as the run before it"),
            (head(&[1, 0]), "truncated"),
            (head(&[3, 0, 1]), "truncated"),
            (head(&[0xff, 0xff, 0xff, 0xff, 0x0f]), "truncated"),
            (runs_past, "more outcomes than a receipt holds"),
        ] {
            let err = decode(&rec).unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {rec:02x?}: {err}");
        }
        // A run of the most outcomes a receipt holds is accepted.
        let mut max = head(&[1, 0]);
        push_leb128(&mut max, OUTCOMES_MAX);
        assert_eq!(decode(&max).unwrap().codes.unwrap().len(), OUTCOMES_MAX as usize);
    }
}
