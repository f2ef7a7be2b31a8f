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
    /// A transaction whose signature is no SM2 signature at all (r or s zero, or not below
    /// the curve order): its signature is bad, rather than its form.
    #[error("malformed transaction: signature out of range (r and s must be in [1, n-1])")]
    SignatureOutOfRange,
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
    /// The state map's checkpoint could not be written (a full disk, I/O errors), or a stopped
    /// ledger has none to measure (`disk::stopped_bytes`).
    #[error("state map checkpoint: {0}")]
    Checkpoint(String),
    /// RocksDB failed (a full disk, I/O errors).
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
}
