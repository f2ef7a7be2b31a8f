use std::collections::HashMap;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use vpbox_sm::sm3::Digest;

use crate::Error;
use crate::block::{Block, Header};
use crate::contract::PutOutcome;
use crate::tx::{Payload, Tx};
use crate::wire::Reader;

const CF_BLOCKS: &str = "blocks"; // height:u64be → block encoding
const CF_BLOCK_INDEX: &str = "block_index"; // block hash → height:u64be
const CF_TXS: &str = "txs"; // tx hash → height:u64 index:u32 tx encoding
const CF_RECEIPTS: &str = "receipts"; // tx hash → height:u64 index:u32 outcome codes
const CF_ANCHORS: &str = "anchors"; // key → value:[32] tx:[32] height:u64
const CF_META: &str = "meta"; // "tip" → height:u64 hash:[32]
const TIP: &[u8] = b"tip";

/// A stored anchor: its value and where it was anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorRecord {
    /// The anchored value.
    pub value: [u8; 32],
    /// The transaction that anchored it.
    pub tx: Digest,
    /// The block height.
    pub height: u64,
}

/// A receipt: where a transaction executed and each put's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u32,
    /// One outcome per anchor put (empty for configuration transactions).
    pub outcomes: Vec<PutOutcome>,
}

/// The ledger on RocksDB.
pub struct Ledger {
    db: DB,
    tip: Option<Header>,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` and checks the tip: the stored tip block must
    /// exist, hash to the recorded tip hash, and link to its parent.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_BLOCKS, CF_BLOCK_INDEX, CF_TXS, CF_RECEIPTS, CF_ANCHORS, CF_META]
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let mut ledger = Self { db, tip: None };
        ledger.tip = ledger.check_tip()?;
        Ok(ledger)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, Error> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Corrupt(format!("column family {name} missing")))
    }

    fn check_tip(&self) -> Result<Option<Header>, Error> {
        let Some(raw) = self.db.get_cf(self.cf(CF_META)?, TIP)? else { return Ok(None) };
        let mut r = Reader::new(&raw, "tip");
        let (height, hash) = (r.u64()?, Digest(r.array()?));
        let block = self
            .block(height)?
            .ok_or_else(|| Error::Corrupt(format!("tip block {height} missing")))?;
        if block.header.hash() != hash {
            return Err(Error::Corrupt(format!(
                "block {height} does not hash to the recorded tip"
            )));
        }
        if height > 0 {
            let parent = self
                .block(height - 1)?
                .ok_or_else(|| Error::Corrupt(format!("block {} missing", height - 1)))?;
            if parent.header.hash() != block.header.parent {
                return Err(Error::Corrupt(format!("block {height} does not link to its parent")));
            }
        }
        Ok(Some(block.header))
    }

    /// The tip's header, if any block is stored.
    pub fn tip(&self) -> Option<&Header> {
        self.tip.as_ref()
    }

    /// The chain height: blocks stored (0 when empty).
    pub fn height(&self) -> u64 {
        self.tip.map_or(0, |t| t.height + 1)
    }

    /// Executes and stores `block` with its transactions `txs` (in block order) in one atomic,
    /// synced write. A transaction executed in an earlier block is skipped here (it executes at
    /// most once; its first receipt stands). Returns the receipts of this block's executions.
    pub fn apply(&mut self, block: &Block, txs: &[Tx]) -> Result<Vec<(Digest, Receipt)>, Error> {
        let h = &block.header;
        let next = self.height();
        if h.height != next {
            return Err(Error::NotNext {
                height: h.height,
                why: format!("expected height {next}"),
            });
        }
        let parent = self.tip.map_or(Digest::default(), |t| t.hash());
        if h.parent != parent {
            return Err(Error::NotNext {
                height: h.height,
                why: "parent hash differs from the tip".into(),
            });
        }
        if !block.is_consistent() || txs.len() != block.tx_hashes.len() {
            return Err(Error::NotNext {
                height: h.height,
                why: "transactions do not match the header".into(),
            });
        }
        let mut batch = WriteBatch::default();
        let mut anchored: HashMap<[u8; 32], ()> = HashMap::new();
        let mut receipts = Vec::new();
        let mut seen_in_block: HashMap<Digest, ()> = HashMap::new();
        for (index, (tx, expected)) in txs.iter().zip(&block.tx_hashes).enumerate() {
            let tx_hash = tx.hash();
            if tx_hash != *expected {
                return Err(Error::NotNext {
                    height: h.height,
                    why: format!("transaction {index} does not hash as listed"),
                });
            }
            if self.db.get_pinned_cf(self.cf(CF_TXS)?, tx_hash.as_bytes())?.is_some()
                || seen_in_block.insert(tx_hash, ()).is_some()
            {
                continue;
            }
            let pairs: Vec<([u8; 32], [u8; 32])> = match &tx.body.payload {
                Payload::AnchorPut { key, value } => vec![(*key, *value)],
                Payload::AnchorPutBatch(p) => p.clone(),
                Payload::Config(_) => vec![],
            };
            let mut outcomes = Vec::with_capacity(pairs.len());
            for (key, value) in pairs {
                let exists = anchored.contains_key(&key)
                    || self.db.get_pinned_cf(self.cf(CF_ANCHORS)?, key)?.is_some();
                if exists {
                    outcomes.push(PutOutcome::KeyExists);
                } else {
                    anchored.insert(key, ());
                    let mut rec = Vec::with_capacity(72);
                    rec.extend_from_slice(&value);
                    rec.extend_from_slice(tx_hash.as_bytes());
                    rec.extend_from_slice(&h.height.to_be_bytes());
                    batch.put_cf(self.cf(CF_ANCHORS)?, key, rec);
                    outcomes.push(PutOutcome::Success);
                }
            }
            let index = index as u32;
            let mut loc = Vec::with_capacity(12);
            loc.extend_from_slice(&h.height.to_be_bytes());
            loc.extend_from_slice(&index.to_be_bytes());
            let mut tx_rec = loc.clone();
            tx_rec.extend_from_slice(&tx.encode());
            batch.put_cf(self.cf(CF_TXS)?, tx_hash.as_bytes(), tx_rec);
            let mut receipt_rec = loc;
            receipt_rec.extend(outcomes.iter().map(|o| o.code()));
            batch.put_cf(self.cf(CF_RECEIPTS)?, tx_hash.as_bytes(), receipt_rec);
            receipts.push((tx_hash, Receipt { height: h.height, index, outcomes }));
        }
        let hash = h.hash();
        batch.put_cf(self.cf(CF_BLOCKS)?, h.height.to_be_bytes(), block.encode());
        batch.put_cf(self.cf(CF_BLOCK_INDEX)?, hash.as_bytes(), h.height.to_be_bytes());
        let mut tip = h.height.to_be_bytes().to_vec();
        tip.extend_from_slice(hash.as_bytes());
        batch.put_cf(self.cf(CF_META)?, TIP, tip);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        self.tip = Some(*h);
        Ok(receipts)
    }

    /// The anchor at `key`, if any.
    pub fn anchor(&self, key: &[u8; 32]) -> Result<Option<AnchorRecord>, Error> {
        let Some(raw) = self.db.get_pinned_cf(self.cf(CF_ANCHORS)?, key)? else { return Ok(None) };
        let mut r = Reader::new(&raw, "anchor record");
        let rec = AnchorRecord { value: r.array()?, tx: Digest(r.array()?), height: r.u64()? };
        r.finish()?;
        Ok(Some(rec))
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, Error> {
        match self.db.get_pinned_cf(self.cf(CF_BLOCKS)?, height.to_be_bytes())? {
            Some(raw) => Ok(Some(Block::decode(&raw).map_err(|e| Error::Corrupt(e.to_string()))?)),
            None => Ok(None),
        }
    }

    /// The block with hash `hash`.
    pub fn block_by_hash(&self, hash: &Digest) -> Result<Option<Block>, Error> {
        match self.db.get_pinned_cf(self.cf(CF_BLOCK_INDEX)?, hash.as_bytes())? {
            Some(raw) => self.block(Reader::new(&raw, "block index").u64()?),
            None => Ok(None),
        }
    }

    /// A committed transaction and where it is.
    pub fn transaction(&self, hash: &Digest) -> Result<Option<(u64, u32, Tx)>, Error> {
        let Some(raw) = self.db.get_pinned_cf(self.cf(CF_TXS)?, hash.as_bytes())? else {
            return Ok(None);
        };
        let mut r = Reader::new(&raw, "transaction record");
        let (height, index) = (r.u64()?, r.u32()?);
        let tx = Tx::decode(r.take(r.rest_len())?).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(Some((height, index, tx)))
    }

    /// A transaction's receipt.
    pub fn receipt(&self, hash: &Digest) -> Result<Option<Receipt>, Error> {
        let Some(raw) = self.db.get_pinned_cf(self.cf(CF_RECEIPTS)?, hash.as_bytes())? else {
            return Ok(None);
        };
        let mut r = Reader::new(&raw, "receipt");
        let (height, index) = (r.u64()?, r.u32()?);
        let outcomes = r
            .take(r.rest_len())?
            .iter()
            .map(|c| {
                PutOutcome::from_code(*c).ok_or_else(|| Error::Corrupt("bad outcome code".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Receipt { height, index, outcomes }))
    }
}

#[cfg(test)]
mod tests {
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;
    use crate::contract::{self, PutOutcome::*};
    use crate::tx::TxBody;

    fn tx(s: &SoftwareSigner, nonce: u64, payload: Payload) -> Tx {
        TxBody { submitter: s.public_key().fingerprint(), nonce, timestamp_ms: 1, payload }
            .sign(s)
            .unwrap()
    }

    fn put(s: &SoftwareSigner, nonce: u64, k: u8, v: u8) -> Tx {
        tx(s, nonce, Payload::AnchorPut { key: [k; 32], value: [v; 32] })
    }

    fn commit(ledger: &mut Ledger, txs: &[Tx]) -> Vec<(Digest, Receipt)> {
        let block = Block::new(ledger.tip(), txs.iter().map(Tx::hash).collect(), 1, 0);
        ledger.apply(&block, txs).unwrap()
    }

    #[test]
    fn anchors_are_write_once_with_the_seeds_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let r = commit(&mut ledger, &[put(&s, 1, 1, 10), put(&s, 2, 1, 11)]);
        assert_eq!(r[0].1.outcomes, vec![Success]);
        assert_eq!(r[1].1.outcomes, vec![KeyExists], "the second put in the same block loses");
        assert_eq!(KeyExists.answer(), (false, "the key exist"));
        let r = commit(&mut ledger, &[put(&s, 3, 1, 12), put(&s, 4, 2, 20)]);
        assert_eq!(r[0].1.outcomes, vec![KeyExists]);
        assert_eq!(r[1].1.outcomes, vec![Success]);
        let rec = ledger.anchor(&[1; 32]).unwrap().unwrap();
        assert_eq!((rec.value, rec.height), ([10; 32], 0), "the old value stays");
        assert_eq!(contract::get_answer(Some(rec.value)), (true, "Success", [10; 32]));
        assert_eq!(ledger.anchor(&[9; 32]).unwrap(), None);
        assert_eq!(contract::get_answer(None), (false, "the key is not exist", [0; 32]));
    }

    #[test]
    fn batches_get_a_result_per_pair_and_transactions_execute_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let first = put(&s, 1, 5, 50);
        commit(&mut ledger, std::slice::from_ref(&first));
        let batch = tx(
            &s,
            2,
            Payload::AnchorPutBatch(vec![
                ([5; 32], [1; 32]),
                ([6; 32], [60; 32]),
                ([6; 32], [61; 32]),
            ]),
        );
        let r = commit(&mut ledger, std::slice::from_ref(&batch));
        assert_eq!(r[0].1.outcomes, vec![KeyExists, Success, KeyExists]);
        // The same transactions again (a replay, or a resubmission after a crash) are skipped.
        let r = commit(&mut ledger, &[first.clone(), batch.clone()]);
        assert!(r.is_empty());
        assert_eq!(
            ledger.receipt(&batch.hash()).unwrap().unwrap().height,
            1,
            "the first receipt stands"
        );
        assert_eq!(ledger.transaction(&first.hash()).unwrap().unwrap().2, first);
        assert_eq!(ledger.height(), 3);
    }

    #[test]
    fn blocks_must_extend_the_tip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let tip_hash = {
            let mut ledger = Ledger::open(dir.path()).unwrap();
            commit(&mut ledger, &[put(&s, 1, 1, 1)]);
            commit(&mut ledger, &[put(&s, 2, 2, 2)]);
            let stale = Block::new(None, vec![], 1, 0);
            assert!(matches!(ledger.apply(&stale, &[]), Err(Error::NotNext { .. })));
            let t = put(&s, 3, 3, 3);
            let mut wrong = Block::new(ledger.tip(), vec![t.hash()], 1, 0);
            wrong.header.tx_root = Digest::default();
            assert!(matches!(ledger.apply(&wrong, &[t]), Err(Error::NotNext { .. })));
            ledger.tip().unwrap().hash()
        };
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.height(), 2);
        assert_eq!(ledger.tip().unwrap().hash(), tip_hash);
        assert_eq!(ledger.block_by_hash(&tip_hash).unwrap().unwrap().header.height, 1);
        assert_eq!(ledger.anchor(&[2; 32]).unwrap().unwrap().value, [2; 32]);
    }
}
