//! The ledger: signed transactions, SM3-linked blocks with Merkle roots, and the write-once
//! anchor contract, stored in RocksDB.
//!
//! - [`tx`]: the canonical transaction encoding, signed (SM2) in the `VPBOX/tx/v1` domain.
//! - [`merkle`]: the SM3 Merkle tree over a block's transaction hashes, with proofs.
//! - [`block`]: block headers linked by SM3 hash.
//! - [`contract`]: the anchor contract's exact answers (DESIGN.md §1).
//! - [`governance`]: the consortium's roots and nodes, and the configuration transactions
//!   that change them with the approval of more than two thirds of the member banks.
//! - [`slip`]: the electronic sales slip and the anchor a POSP computes from it.
//! - [`Ledger`]: RocksDB column families; one atomic, synced write batch per block.
//! - [`disk`]: what a ledger takes on disk.

pub mod block;
pub mod contract;
pub mod disk;
mod error;
pub mod governance;
pub mod merkle;
mod record;
pub mod slip;
pub mod state;
mod store;
pub mod tx;
mod txrecord;
mod wire;

pub use error::Error;
#[doc(hidden)]
pub use record::{
    NUMBERED_FROM, inline as inline_anchor_record, numbered as numbered_anchor_record,
};
pub use store::{
    AnchorRecord, BlockWrite, ENGINE_LOG_MAX, ENGINE_LOGS_KEPT, Executed, Ledger, Receipt,
    STATE_CHECKPOINT, StateSource, TrustChanges, Written, without_perf_counters,
};

/// The decoders of the ledger's own records, for the fuzz targets (`fuzz/`): a ledger's files
/// are local state, but a ledger may be copied from another box, and a corrupt record must be
/// refused, never panic or allocate without bound. Each gives the record encoded again from
/// what was decoded, in the form written today.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{Error, record, txrecord};

    /// An anchor's record, decoded and encoded again.
    pub fn anchor_record(raw: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(record::decode(raw)?.encode())
    }

    /// A transaction's record, decoded and encoded again: `None` for one written before the
    /// receipts moved in (its outcomes are elsewhere).
    pub fn tx_record(raw: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let t = txrecord::decode(raw)?;
        Ok(t.codes.map(|codes| txrecord::encode(t.height, t.index, codes, t.tx)))
    }
}
