//! An anchor's record in the ledger's `anchors` column family, and the table of the
//! transactions those records name by number.
//!
//! A record holds the anchored value and names the transaction that anchored it, in one of two
//! forms, told apart by their length:
//!
//! - **inline**, 65 to 72 bytes: `value:[32] tx:[32] height`. A transaction that anchors fewer
//!   than [`NUMBERED_FROM`] keys in its block: a POSP's individually signed anchor. The height
//!   is a LEB128 of one to seven bytes (65 to 71 in all) when it is below 2^49, which a ledger
//!   reaches after 17 million years of blocks a second, and a `u64be` (72 in all) at 2^49 or
//!   above, so that the two never share a length. Records written before (until 2026-12-06)
//!   are all of the 72-byte form and read as they are; nothing is rewritten.
//! - **numbered**, 33 to 42 bytes: `value:[32] number:LEB128` (7 bits a byte, least
//!   significant first, minimal: no final byte of 0 but for the number 0 itself). A
//!   transaction that anchors [`NUMBERED_FROM`] keys or more: a day-end batch. `number`
//!   indexes the `anchor_txs` family, `number:u64be → height:u64be tx:[32]`, written in the
//!   same synced write batch as the records; numbers are given from 0 up, in block order, and
//!   the whole table is read into memory when the ledger opens ([`Numbered`]).
//!
//! Why: the 5,000 anchors of a batch share its hash and height, 40 of an inline record's 72
//! bytes. Numbered, each costs 38 bytes less on disk, and the memtable and the compactions copy
//! that much less: measured on 2026-12-06, a ledger of ten million batch anchors takes 141
//! bytes per anchor in all (`vpbox bench growth`; 179 with inline records), and the mix of
//! `vpbox bench anchors` 153 (190). zstd found the same repetition, at a cost in compactions
//! the two cores did not have (ARCHITECTURE.md, the ledger). A transaction under the threshold
//! keeps its hash in its records: a table entry is 40 bytes in memory, so the table holds at
//! most one entry per [`NUMBERED_FROM`] anchors — 16 MB at a hundred million anchors, whoever
//! submits (up to twice that while its vector grows, and a second copy while a checkpoint's
//! comparison runs). The count of numbers given is committed with them (`meta`, `numbered`)
//! and checked against the table at open, with the last entry's height against the tip.
//!
//! The first open by this version adds the `anchor_txs` family to an older ledger; from then
//! on an older binary, which does not name it, cannot open the ledger: the upgrade is one way.
//! A binary from before the LEB128 height reads a 65- to 71-byte record as a numbered one with
//! trailing bytes and refuses it as corrupt: that upgrade is one way too.
//!
//! Why the LEB128 height: the eight-byte height was six or seven bytes of zeros in every
//! individually signed anchor's record; measured on 2026-12-06, `vpbox bench anchors`' mix
//! goes from 150.0 (149.9–150.1) to 149.6–149.7 bytes per anchor in three runs (ARCHITECTURE.md, the ledger).
//!
//! Nothing else changes: the state map's leaf is `(key, value, tx, height)` whichever form
//! holds it, so roots, proofs and checkpoints are the same, and a ledger written before the
//! numbered form (inline records only, no table) opens as it is.

use vpbox_sm::sm3::Digest;

use crate::Error;
use crate::state::Leaf;
use crate::store::Writing;
use crate::wire::Reader;

/// A transaction anchoring at least this many keys in its block is named by number in their
/// records (see the module's docs).
#[doc(hidden)]
pub const NUMBERED_FROM: usize = 256;

/// The length of an inline record whose height is a `u64be`: a height at
/// [`INLINE_LEB128_BELOW`] or above.
const INLINE_FIXED_LEN: usize = 72;

/// An inline record's height below this is a LEB128 of at most seven bytes, so the record is
/// 65 to 71 bytes; a numbered record is at most 42.
const INLINE_LEB128_BELOW: u64 = 1 << 49;

/// The shortest inline record: a one-byte height.
const INLINE_MIN_LEN: usize = 65;

/// The longest LEB128 encoding of a `u64`.
const NUMBER_MAX_LEN: usize = 10;

/// The inline record of `value`, anchored by `tx` at `height`. Public, as [`numbered`] is.
#[doc(hidden)]
pub fn inline(value: &[u8; 32], tx: &Digest, height: u64) -> Vec<u8> {
    let mut rec = Vec::with_capacity(INLINE_FIXED_LEN);
    rec.extend_from_slice(value);
    rec.extend_from_slice(tx.as_bytes());
    if height < INLINE_LEB128_BELOW {
        push_leb128(&mut rec, height);
    } else {
        rec.extend_from_slice(&height.to_be_bytes());
    }
    rec
}

/// The numbered record of `value`, anchored by the transaction numbered `number`. Public for
/// the benchmarks' raw RocksDB, which writes the records a ledger writes.
#[doc(hidden)]
pub fn numbered(value: &[u8; 32], number: u64) -> Vec<u8> {
    let mut rec = Vec::with_capacity(32 + NUMBER_MAX_LEN);
    rec.extend_from_slice(value);
    push_leb128(&mut rec, number);
    rec
}

/// Appends `n` as a minimal LEB128 (see the module's docs).
pub(crate) fn push_leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// How a record names its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Names {
    /// By hash, with the block's height (inline).
    Tx { tx: Digest, height: u64 },
    /// By its number in the table (numbered).
    Number(u64),
}

/// A record as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) value: [u8; 32],
    pub(crate) names: Names,
}

impl Stored {
    /// The record in the form written today: what [`decode`] gives back for any record but
    /// an older 72-byte inline one whose height is below 2^49 (written shorter now).
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self.names {
            Names::Tx { tx, height } => inline(&self.value, &tx, height),
            Names::Number(n) => numbered(&self.value, n),
        }
    }
}

/// Decodes a record of either form.
pub(crate) fn decode(raw: &[u8]) -> Result<Stored, Error> {
    let mut r = Reader::new(raw, "anchor record");
    let value = r.array()?;
    let names = match raw.len() {
        ..INLINE_MIN_LEN => Names::Number(leb128(&mut r)?),
        // Seven bytes of LEB128 at most (the length says so): below 2^49.
        INLINE_MIN_LEN..INLINE_FIXED_LEN => {
            Names::Tx { tx: Digest(r.array()?), height: leb128(&mut r)? }
        }
        INLINE_FIXED_LEN => Names::Tx { tx: Digest(r.array()?), height: r.u64()? },
        // Neither form, whatever its bytes: a height at 2^49 or above has the 72-byte form
        // alone (below, the 72-byte form of records written before is read too).
        _ => return Err(r.fail("a record longer than either form")),
    };
    r.finish()?;
    Ok(Stored { value, names })
}

/// A minimal LEB128 `u64` (see the module's docs).
pub(crate) fn leb128(r: &mut Reader<'_>) -> Result<u64, Error> {
    let mut n = 0u64;
    for i in 0..NUMBER_MAX_LEN {
        let b = r.u8()?;
        let bits = u64::from(b & 0x7f);
        if i == NUMBER_MAX_LEN - 1 && bits > 1 {
            return Err(r.fail("a number past 64 bits"));
        }
        n |= bits << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(r.fail("a number not in its shortest form"));
            }
            return Ok(n);
        }
    }
    Err(r.fail("a number past 64 bits"))
}

/// The numbered transactions, by number: each one's height and hash.
#[derive(Debug, Clone, Default)]
pub(crate) struct Numbered(Vec<(u64, Digest)>);

impl Numbered {
    /// The table from its entries in key order (a scan of `anchor_txs`): each must hold the
    /// next number, from 0.
    pub(crate) fn from_entries<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        entries: impl IntoIterator<Item = Result<(K, V), Error>>,
    ) -> Result<Self, Error> {
        let mut table = Vec::new();
        for entry in entries {
            let (k, v) = entry?;
            let (k, v) = (k.as_ref(), v.as_ref());
            let want = table.len() as u64;
            if k != want.to_be_bytes() {
                let held: String = k.iter().map(|b| format!("{b:02x}")).collect();
                return Err(Error::Corrupt(format!(
                    "the numbered transactions' table holds {held} where number {want} belongs"
                )));
            }
            let entry = (v.len() == 40).then(|| {
                let (height, tx) = v.split_at(8);
                Some((u64::from_be_bytes(height.try_into().ok()?), Digest(tx.try_into().ok()?)))
            });
            let Some(entry) = entry.flatten() else {
                return Err(Error::Corrupt(format!(
                    "numbered transaction {want}: an entry of {} bytes, not 40",
                    v.len()
                )));
            };
            table.push(entry);
        }
        Ok(Self(table))
    }

    /// The number the next transaction gets.
    pub(crate) fn next(&self) -> u64 {
        self.0.len() as u64
    }

    /// The table's entry of a transaction numbered `number`: key and value.
    pub(crate) fn entry(number: u64, height: u64, tx: &Digest) -> ([u8; 8], [u8; 40]) {
        let mut v = [0; 40];
        v[..8].copy_from_slice(&height.to_be_bytes());
        v[8..].copy_from_slice(tx.as_bytes());
        (number.to_be_bytes(), v)
    }

    /// The height of the last numbered transaction, if any.
    pub(crate) fn last_height(&self) -> Option<u64> {
        self.0.last().map(|(height, _)| *height)
    }

    /// Adds the next transaction (once its entry is written).
    pub(crate) fn push(&mut self, height: u64, tx: Digest) {
        self.0.push((height, tx));
    }

    /// The state map's leaf of the record `raw` at `key`: an error when it is malformed or
    /// names a number the table does not hold.
    pub(crate) fn leaf(&self, key: [u8; 32], raw: &[u8]) -> Result<Leaf, Error> {
        let Stored { value, names } = decode(raw)?;
        self.resolve(key, value, names)
    }

    /// [`Self::leaf`], or `None` for a record of the block being written (`writing`, staged by
    /// `Ledger::stage`: its records may be in the store before the ledger's tip is that
    /// block). Readers leave them out until the block is finished, as before its write landed.
    pub(crate) fn committed_leaf(
        &self,
        key: [u8; 32],
        raw: &[u8],
        writing: Option<&Writing>,
    ) -> Result<Option<Leaf>, Error> {
        let Stored { value, names } = decode(raw)?;
        if writing.is_some_and(|w| w.names(names)) {
            return Ok(None);
        }
        self.resolve(key, value, names).map(Some)
    }

    fn resolve(&self, key: [u8; 32], value: [u8; 32], names: Names) -> Result<Leaf, Error> {
        let (tx, height) = match names {
            Names::Tx { tx, height } => (tx, height),
            Names::Number(n) => {
                let entry = usize::try_from(n).ok().and_then(|i| self.0.get(i));
                let &(height, tx) = entry.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "the anchor at {} names transaction number {n}, which the ledger does \
                         not hold ({} numbered)",
                        Digest(key).to_hex(),
                        self.0.len()
                    ))
                })?;
                (tx, height)
            }
        };
        Ok(Leaf { key, value, tx, height })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number_of(raw: &[u8]) -> Result<u64, Error> {
        match decode(raw)?.names {
            Names::Number(n) => Ok(n),
            other => panic!("not numbered: {other:?}"),
        }
    }

    #[test]
    fn numbers_round_trip_at_every_length() {
        let value = [9; 32];
        let mut edges = vec![0, 1, u64::MAX, u64::MAX - 1];
        for bits in [7, 14, 21, 28, 35, 42, 49, 56, 63] {
            edges.extend([(1u64 << bits) - 1, 1 << bits, (1 << bits) + 1]);
        }
        for n in edges {
            let rec = numbered(&value, n);
            let len = 32 + (64 - n.leading_zeros()).div_ceil(7).max(1) as usize;
            assert_eq!(rec.len(), len, "{n}");
            assert_eq!(number_of(&rec).unwrap(), n, "{n}");
            assert_eq!(decode(&rec).unwrap().value, value);
            assert_eq!(decode(&rec).unwrap().encode(), rec, "{n}");
        }
        assert_eq!(numbered(&value, 300)[32..], [0xac, 0x02]);
    }

    #[test]
    fn inline_records_round_trip_at_every_length() {
        let tx = Digest([5; 32]);
        let mut edges = vec![0, 1, INLINE_LEB128_BELOW, u64::MAX];
        for bits in [7, 14, 21, 28, 35, 42, 49] {
            edges.extend([(1u64 << bits) - 1, 1 << bits]);
        }
        for height in edges {
            let rec = inline(&[3; 32], &tx, height);
            let len = match height {
                ..INLINE_LEB128_BELOW => {
                    64 + (64 - height.leading_zeros()).div_ceil(7).max(1) as usize
                }
                _ => INLINE_FIXED_LEN,
            };
            assert_eq!(rec.len(), len, "{height}");
            let s = decode(&rec).unwrap();
            assert_eq!(s.value, [3; 32]);
            assert_eq!(s.names, Names::Tx { tx, height }, "{height}");
            assert_eq!(s.encode(), rec, "{height}");
        }
        assert_eq!(inline(&[3; 32], &tx, 300)[64..], [0xac, 0x02]);
        assert_eq!(inline(&[3; 32], &tx, 1 << 49)[64..], [0, 2, 0, 0, 0, 0, 0, 0]);
    }

    /// A record written before the LEB128 height, `u64be` whatever the height, still reads.
    #[test]
    fn an_inline_record_written_before_reads_as_it_did() {
        let tx = Digest([5; 32]);
        let old = [&[3u8; 32][..], tx.as_bytes(), &7u64.to_be_bytes()].concat();
        assert_eq!(decode(&old).unwrap().names, Names::Tx { tx, height: 7 });
        assert_eq!(decode(&old).unwrap().encode().len(), 65, "written short now");
    }

    #[test]
    fn malformed_records_are_refused() {
        let value = [1u8; 32];
        let with = |tail: &[u8]| [&value[..], tail].concat();
        for (tail, why) in [
            (&[][..], "truncated"),
            (&[0x80][..], "truncated"),
            (&[0x80, 0x00][..], "not in its shortest form"),
            (&[0x81, 0x80, 0x00][..], "not in its shortest form"),
            (&[0xff; 10][..], "past 64 bits"),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..], "past 64 bits"),
            (&[0x80; 11][..], "past 64 bits"),
            (&[0x05, 0x00][..], "trailing bytes"),
        ] {
            let err = decode(&with(tail)).unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {tail:02x?}: {err}");
        }
        assert!(decode(&value[..31]).is_err(), "short value");
        // The largest number in ten bytes is accepted.
        let max = with(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(number_of(&max).unwrap(), u64::MAX);
        assert_eq!(number_of(&with(&[0x00])).unwrap(), 0);
        // 43 to 64 bytes and 73 are neither an inline record nor a number.
        for len in (43..=64).chain([73]) {
            assert!(decode(&vec![0x81u8; len]).is_err(), "{len}");
            assert!(decode(&vec![0u8; len]).is_err(), "{len}");
        }
        // An inline record's LEB128 height is minimal and ends where the record does.
        let tx = [2u8; 32];
        let inline_with = |tail: &[u8]| [&value[..], &tx[..], tail].concat();
        // Found by the fuzz target: 73 and 74 bytes with a valid LEB128 height of 9 and 10
        // bytes, which the 72-byte form holds.
        for tail in [&[0xff; 9][..], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1]] {
            let mut tail = tail.to_vec();
            *tail.last_mut().unwrap() &= 0x7f;
            let err = decode(&inline_with(&tail)).unwrap_err();
            assert!(err.to_string().contains("longer than either form"), "{tail:02x?}: {err}");
        }
        for (tail, why) in [
            (&[0x80, 0x00][..], "not in its shortest form"),
            (&[0x80, 0x80][..], "truncated"),
            (&[0x05, 0x00][..], "trailing bytes"),
            (&[0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80][..], "truncated"),
        ] {
            let err = decode(&inline_with(tail)).unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {tail:02x?}: {err}");
        }
    }

    #[test]
    fn the_table_resolves_numbers_and_refuses_gaps() {
        let (k0, v0) = Numbered::entry(0, 7, &Digest([7; 32]));
        let (k1, v1) = Numbered::entry(1, 9, &Digest([9; 32]));
        let table =
            Numbered::from_entries([Ok((&k0[..], &v0[..])), Ok((&k1[..], &v1[..]))]).unwrap();
        assert_eq!(table.next(), 2);
        let leaf = table.leaf([4; 32], &numbered(&[6; 32], 1)).unwrap();
        assert_eq!(leaf, Leaf { key: [4; 32], value: [6; 32], tx: Digest([9; 32]), height: 9 });
        let inline_leaf = table.leaf([4; 32], &inline(&[6; 32], &Digest([2; 32]), 3)).unwrap();
        assert_eq!(inline_leaf.tx, Digest([2; 32]));
        assert_eq!(inline_leaf.height, 3);
        let err = table.leaf([4; 32], &numbered(&[6; 32], 2)).unwrap_err();
        assert!(matches!(err, Error::Corrupt(ref m) if m.contains("number 2")), "{err}");

        let gap = Numbered::from_entries([Ok((&k1[..], &v1[..]))]).unwrap_err();
        assert!(matches!(gap, Error::Corrupt(ref m) if m.contains("number 0")), "{gap}");
        let short = Numbered::from_entries([Ok((&k0[..], &v0[..39]))]).unwrap_err();
        assert!(short.to_string().contains("transaction 0: an entry of 39 bytes"), "{short}");
        let mut table = Numbered::default();
        assert_eq!(table.last_height(), None);
        table.push(4, Digest([4; 32]));
        assert_eq!(table.last_height(), Some(4));
        table.push(6, Digest([6; 32]));
        assert_eq!(table.last_height(), Some(6));
        assert_eq!(table.next(), 2);
        assert_eq!(table.leaf([0; 32], &numbered(&[0; 32], 1)).unwrap().height, 6);
    }
}
