//! Blocks: a header linked to its parent by SM3 hash, the transaction hashes in order, and the
//! consensus commit certificate (opaque here; the consensus crate defines and verifies it).
//!
//! ```text
//! header = version:u8=3 height:u64 parent:[32] tx_root:[32] results_root:[32] tx_count:u32
//!          timestamp_ms:u64 gov_seq:u64 state_root:[32]
//! block  = header tx_hashes:[32]*tx_count cert_len:u32 cert
//! ```
//!
//! Everything in a header is a function of the parent and the ordered transactions, so every
//! honest node computes the same header, and its hash is the state digest consensus agrees on:
//! the timestamp is the largest of the parent's and the transactions' own timestamps (never a
//! node's clock), `results_root` commits to every put's outcome, and `state_root` to every anchor
//! so far (the [`crate::state`] map, which proves a key's first value or its absence). The view a
//! block was committed in lives in its certificate. Block 0 (genesis) has no transactions; its
//! `parent` is the SM3 hash of the genesis file, which ties the chain to its founding
//! configuration.

use vpbox_sm::sm3::{Digest, hash};

use crate::Error;
use crate::merkle;
use crate::wire::Reader;

/// Largest commit certificate accepted (N = 64 nodes × ~100 bytes).
pub const CERT_MAX: u32 = 64 * 1024;
/// Most transactions in one block.
pub const BLOCK_TX_MAX: u32 = 100_000;

/// A block header. Its SM3 hash is the block hash, and the state digest after the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Height; the genesis block is 0.
    pub height: u64,
    /// The parent's hash (for genesis: the SM3 hash of the genesis file).
    pub parent: Digest,
    /// Merkle root of the transaction hashes.
    pub tx_root: Digest,
    /// SM3 over the executed transactions' hashes and their outcome codes, in order.
    pub results_root: Digest,
    /// Number of transactions.
    pub tx_count: u32,
    /// The largest of the parent's timestamp and the transactions' timestamps.
    pub timestamp_ms: u64,
    /// The configuration transactions applied from the genesis through this block (the
    /// governance state's `seq` after it): a proof's verifier compares it with the changes it
    /// was shown, so that none can be left out.
    pub gov_seq: u64,
    /// The root of the state map ([`crate::state`]) over every anchor through this block.
    pub state_root: Digest,
}

/// The length of an encoded header.
pub const HEADER_LEN: usize = 157;
/// The header encoding's version (1 had no `gov_seq`, 2 no `state_root`).
const HEADER_VERSION: u8 = 3;

impl Header {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.push(HEADER_VERSION);
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(self.parent.as_bytes());
        out.extend_from_slice(self.tx_root.as_bytes());
        out.extend_from_slice(self.results_root.as_bytes());
        out.extend_from_slice(&self.tx_count.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&self.gov_seq.to_be_bytes());
        out.extend_from_slice(self.state_root.as_bytes());
        out
    }

    /// The block hash.
    pub fn hash(&self) -> Digest {
        hash(self.encode())
    }

    /// Decodes exactly one header ([`HEADER_LEN`] bytes, nothing after it).
    pub fn decode_exact(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "block header");
        let h = Self::decode(&mut r)?;
        r.finish()?;
        Ok(h)
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        if r.u8()? != HEADER_VERSION {
            return Err(r.fail(
                "unsupported header version (this vpbox reads version 3, with the state root; \
                 a ledger written before it cannot be read: the chain must be founded again)",
            ));
        }
        Ok(Self {
            height: r.u64()?,
            parent: Digest(r.array()?),
            tx_root: Digest(r.array()?),
            results_root: Digest(r.array()?),
            tx_count: r.u32()?,
            timestamp_ms: r.u64()?,
            gov_seq: r.u64()?,
            state_root: Digest(r.array()?),
        })
    }
}

/// A block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Transaction hashes, in execution order.
    pub tx_hashes: Vec<Digest>,
    /// The commit certificate (the consensus crate's encoding; empty for genesis).
    pub certificate: Vec<u8>,
}

impl Block {
    /// The genesis block of the chain founded by the genesis file whose SM3 hash is `genesis`.
    pub fn genesis(genesis: Digest, timestamp_ms: u64) -> Self {
        let header = Header {
            height: 0,
            parent: genesis,
            tx_root: merkle::root(&[]),
            results_root: results_root(&[]),
            tx_count: 0,
            timestamp_ms,
            gov_seq: 0,
            state_root: crate::state::ZERO,
        };
        Self { header, tx_hashes: Vec::new(), certificate: Vec::new() }
    }

    /// Whether the header's count and Merkle root match the transaction hashes.
    pub fn is_consistent(&self) -> bool {
        self.header.tx_count as usize == self.tx_hashes.len()
            && self.header.tx_root == merkle::root(&self.tx_hashes)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header.encode();
        for h in &self.tx_hashes {
            out.extend_from_slice(h.as_bytes());
        }
        out.extend_from_slice(&(self.certificate.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.certificate);
        out
    }

    /// Decodes untrusted bytes: bounded, strict, never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "block");
        let header = Header::decode(&mut r)?;
        if header.tx_count > BLOCK_TX_MAX || r.rest_len() < header.tx_count as usize * 32 {
            return Err(r.fail("transaction count out of range"));
        }
        let mut tx_hashes = Vec::with_capacity(header.tx_count as usize);
        for _ in 0..header.tx_count {
            tx_hashes.push(Digest(r.array()?));
        }
        let cert_len = r.u32()?;
        if cert_len > CERT_MAX {
            return Err(r.fail("certificate too large"));
        }
        let certificate = r.take(cert_len as usize)?.to_vec();
        r.finish()?;
        Ok(Self { header, tx_hashes, certificate })
    }
}

/// SM3 over `tx hash ‖ outcome codes` for each executed transaction, in order (a transaction
/// that had executed before contributes nothing).
pub fn results_root(results: &[(Digest, Vec<u8>)]) -> Digest {
    let mut h = vpbox_sm::sm3::Sm3::new();
    h.update(b"vpbox/results\0");
    for (tx, codes) in results {
        h.update(tx.as_bytes());
        h.update((codes.len() as u32).to_be_bytes());
        h.update(codes);
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_link() {
        let g = Block::genesis(hash(b"genesis"), 1);
        let txs = vec![hash(b"a"), hash(b"b")];
        let header = Header {
            height: 1,
            parent: g.header.hash(),
            tx_root: merkle::root(&txs),
            results_root: results_root(&[]),
            tx_count: 2,
            timestamp_ms: 2,
            gov_seq: 3,
            state_root: hash(b"state"),
        };
        let b = Block { header, tx_hashes: txs, certificate: vec![9; 100] };
        assert_eq!(header.encode().len(), HEADER_LEN);
        assert_eq!(Header::decode_exact(&header.encode()).unwrap(), header);
        assert_eq!(b.header.parent, g.header.hash());
        assert!(b.is_consistent());
        let bytes = b.encode();
        assert_eq!(Block::decode(&bytes).unwrap(), b);
        for cut in 0..bytes.len() {
            assert!(Block::decode(&bytes[..cut]).is_err());
        }
        let mut bad = b;
        bad.tx_hashes.swap(0, 1);
        assert!(!bad.is_consistent(), "order is part of the root");
    }
}
