/// Ledger errors. Decoding errors describe the input's defect, never echo it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not a valid encoding.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A block that does not extend the tip.
    #[error("block {height} does not extend the tip: {why}")]
    NotNext {
        /// The block's height.
        height: u64,
        /// Why.
        why: String,
    },
    /// The stored chain is inconsistent: local corruption.
    #[error("ledger corrupt: {0}")]
    Corrupt(String),
    /// RocksDB failed (a full disk, I/O errors).
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
}
