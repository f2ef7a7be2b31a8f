//! The proof bundle: one self-contained file that proves an anchor to someone who holds only
//! the consortium's genesis hash (or its founding roots). `docs/proof-format.md` describes
//! every byte; this is its one encoder and its bounded decoder.
//!
//! ```text
//! bundle      = magic:"VPBOX-PROOF\0" version:u8=2 kind:u8 genesis:bytes
//!               ngov:u32 govblock* body
//! body        = kind 1: anchor | kind 2: consistency | kind 3: state
//! govblock    = evidence nconfig:u32 proven* nadmin:u32 chain:bytes*
//! anchor      = evidence key:[32] proven enrollment
//! enrollment  = evidence proven                    (the submitter's Enroll transaction)
//! consistency = from:evidence nheaders:u32 header:[157]* to:evidence
//! state       = evidence key:[32] path
//! path        = nsib:u16 sibling:[32]*nsib (0x00 | 0x01 key:[32] value:[32] tx:[32] height:u64)
//! evidence    = header:[157] ntx:u32 tx_hash:[32]*ntx certificate:bytes
//!               nresult:u32 (index:u32 codes:bytes)*
//! proven      = index:u32 tx:bytes
//! bytes       = len:u32 data                       (every integer big-endian)
//! ```
//!
//! - `genesis` is the genesis file, byte for byte (its SM3 is the chain's identity).
//! - A `govblock` is a block that applied configuration transactions, with those
//!   transactions (`proven`) and the certificate chains of the admins who approved them; the
//!   bundle carries every such block from the genesis up to the anchor's block, oldest first,
//!   so that the verifier follows the membership epoch by epoch.
//! - `evidence` is a block as the ledger stores it (header, every transaction hash,
//!   commit certificate) with the block's execution results (the executed transactions'
//!   indices and outcome codes), from which the verifier recomputes `tx_root`,
//!   `results_root` and the digest the certificate signs.
//! - `anchor` names the key, the transaction that anchored it (and its index in the block) and
//!   the submitter's enrollment: the certified block and Enroll transaction (signed by the
//!   submitter's own key) whose certificate chain the ledger admitted the submitter by, so the
//!   verdict's "submitted by … of bank …" is that chain and no other a bank could issue for the
//!   same public key.
//! - `consistency` proves that the certified block `to` extends the certified block `from`:
//!   the headers strictly between them link `to` back to `from` by their parent hashes.
//! - `state` proves what the certified block's `state_root` says of `key`: its first value
//!   (the path ends at its leaf) or that it was never anchored (the path ends at an empty
//!   subtree or at another key's leaf); see `vpbox_ledger::state`.
//!
//! The encoding is canonical: each value has exactly one encoding, and decoding refuses
//! anything after the end. The decoder is bounded: every count is checked against the bytes
//! that remain before anything is allocated, and the whole bundle against [`BUNDLE_MAX`].

use serde_json::{Value, json};
use vpbox_ledger::block::{BLOCK_TX_MAX, CERT_MAX, Header};
use vpbox_ledger::state::{Path, Terminal};
use vpbox_ledger::tx::{BATCH_MAX, TX_MAX};
use vpbox_sm::sm3::Digest;
use vpbox_wire::Reader;

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 12] = b"VPBOX-PROOF\0";
/// The format version this build writes and reads.
pub const VERSION: u8 = 2;
/// The largest bundle read (a full block's hashes and results are about 4 MiB).
pub const BUNDLE_MAX: usize = 64 * 1024 * 1024;
/// The largest genesis file carried.
pub const GENESIS_MAX: usize = 1024 * 1024;
/// The most configuration blocks one bundle carries.
pub const GOV_BLOCKS_MAX: usize = 4096;
/// The most configuration transactions proven in one block.
pub const CONFIGS_MAX: usize = 256;
/// The most admin certificate chains carried for one block.
pub const ADMINS_MAX: usize = 1024;
/// The largest certificate chain (a leaf and its issuing CAs).
pub const CHAIN_MAX: usize = 64 * 1024;
/// The length of an encoded header.
pub const HEADER_LEN: usize = vpbox_ledger::block::HEADER_LEN;
/// The most headers between the two heads of a consistency proof (about 35 MiB, leaving room
/// for two full heads and the configuration blocks); a longer span is proven in steps,
/// through intermediate heads.
pub const HEADERS_MAX: usize = 300_000;
/// The kind byte of an anchor proof.
pub const KIND_ANCHOR: u8 = 1;
/// The kind byte of a consistency proof.
pub const KIND_CONSISTENCY: u8 = 2;
/// The kind byte of a state proof (a key's first value, or its absence).
pub const KIND_STATE: u8 = 3;

/// Why bytes are not a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a vpbox proof bundle.
    #[error("not a vpbox proof bundle (the file does not start with VPBOX-PROOF)")]
    Magic,
    /// A version this build does not read.
    #[error("proof bundle version {0}: this vpbox reads version {VERSION}")]
    Version(u8),
    /// Larger than [`BUNDLE_MAX`].
    #[error("the bundle is {0} bytes, above the {BUNDLE_MAX}-byte limit")]
    TooLarge(usize),
    /// The bytes end inside a field.
    #[error("the bundle is truncated inside {0}")]
    Truncated(&'static str),
    /// A count or length is above its limit or above the bytes that remain.
    #[error("{what}: {got} is above the limit of {max}")]
    Limit {
        /// Which field.
        what: &'static str,
        /// What the bundle says.
        got: u64,
        /// The limit.
        max: u64,
    },
    /// Bytes after the end.
    #[error("{0} bytes after the end of the bundle")]
    Trailing(usize),
    /// A state path that is truncated, deeper than 256 or ends with an unknown tag.
    #[error("{0}")]
    StatePath(&'static str),
    /// A kind this build does not know.
    #[error("unknown proof kind {0} (1 is an anchor, 2 a consistency proof, 3 a state proof)")]
    Kind(u8),
}

/// One executed transaction's outcome codes (`0` success, `1` key exists, `2` not admitted,
/// `3` configuration refused), by its index in the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The transaction's index in the block.
    pub index: u32,
    /// One code per put (one for other transactions).
    pub codes: Vec<u8>,
}

/// A block as stored, with its execution results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The header (its SM3 is the block hash).
    pub header: Header,
    /// Every transaction hash of the block, in order.
    pub tx_hashes: Vec<Digest>,
    /// The commit certificate, as `vpbox_consensus::wire` encodes it.
    pub certificate: Vec<u8>,
    /// The outcomes of the transactions that executed in this block, in block order.
    pub results: Vec<Outcome>,
}

/// A transaction of a block, as signed (`body ‖ r ‖ s`), and its index there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// Its index in the block.
    pub index: u32,
    /// The encoded transaction.
    pub tx: Vec<u8>,
}

/// A block that applied configuration transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovBlock {
    /// The block.
    pub evidence: Evidence,
    /// The configuration transactions it applied, in block order.
    pub configs: Vec<Proven>,
    /// The certificate chains (leaf first, DER concatenated) of the admins who submitted and
    /// approved them.
    pub admins: Vec<Vec<u8>>,
}

/// The anchor proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorPart {
    /// The block that anchored it.
    pub evidence: Evidence,
    /// The anchor key.
    pub key: [u8; 32],
    /// The transaction that anchored it.
    pub tx: Proven,
    /// The block and the Enroll transaction of the submitter's certificate.
    pub enrollment: Enrollment,
}

/// A submitter's enrollment: its block and its Enroll transaction, whose payload is the
/// certificate chain (leaf first, DER concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// The block.
    pub evidence: Evidence,
    /// The Enroll transaction.
    pub tx: Proven,
}

/// Two certified heads and the headers that link the later one to the earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyPart {
    /// The earlier block.
    pub from: Evidence,
    /// The headers strictly between them, oldest first.
    pub headers: Vec<Header>,
    /// The later block.
    pub to: Evidence,
}

/// A key's path from a certified block's state root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePart {
    /// The block whose header's `state_root` the path leads to.
    pub evidence: Evidence,
    /// The key asked about.
    pub key: [u8; 32],
    /// Its path: to its own leaf (anchored) or to where it would be (never anchored).
    pub path: Path,
}

/// What a bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// An anchor (kind 1).
    Anchor(AnchorPart),
    /// That one certified block extends another (kind 2).
    Consistency(ConsistencyPart),
    /// What a certified block's state says of a key: its first value, or its absence (kind 3).
    State(StatePart),
}

/// A proof bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The genesis file's bytes.
    pub genesis: Vec<u8>,
    /// Every block that applied a configuration change up to the proven block, oldest first.
    pub governance: Vec<GovBlock>,
    /// What it proves.
    pub body: Body,
}

impl Bundle {
    /// The height of the last block the bundle proves (the anchor's, or the later head).
    pub fn height(&self) -> u64 {
        match &self.body {
            Body::Anchor(a) => a.evidence.header.height,
            Body::Consistency(c) => c.to.header.height,
            Body::State(s) => s.evidence.header.height,
        }
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_be_bytes());
    w.extend_from_slice(b);
}

fn put_evidence(w: &mut Vec<u8>, e: &Evidence) {
    w.extend_from_slice(&e.header.encode());
    w.extend_from_slice(&(e.tx_hashes.len() as u32).to_be_bytes());
    for h in &e.tx_hashes {
        w.extend_from_slice(h.as_bytes());
    }
    put_bytes(w, &e.certificate);
    w.extend_from_slice(&(e.results.len() as u32).to_be_bytes());
    for r in &e.results {
        w.extend_from_slice(&r.index.to_be_bytes());
        put_bytes(w, &r.codes);
    }
}

fn put_proven(w: &mut Vec<u8>, p: &Proven) {
    w.extend_from_slice(&p.index.to_be_bytes());
    put_bytes(w, &p.tx);
}

impl Bundle {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = MAGIC.to_vec();
        w.push(VERSION);
        w.push(match self.body {
            Body::Anchor(_) => KIND_ANCHOR,
            Body::Consistency(_) => KIND_CONSISTENCY,
            Body::State(_) => KIND_STATE,
        });
        put_bytes(&mut w, &self.genesis);
        w.extend_from_slice(&(self.governance.len() as u32).to_be_bytes());
        for g in &self.governance {
            put_evidence(&mut w, &g.evidence);
            w.extend_from_slice(&(g.configs.len() as u32).to_be_bytes());
            for p in &g.configs {
                put_proven(&mut w, p);
            }
            w.extend_from_slice(&(g.admins.len() as u32).to_be_bytes());
            for a in &g.admins {
                put_bytes(&mut w, a);
            }
        }
        match &self.body {
            Body::Anchor(a) => {
                put_evidence(&mut w, &a.evidence);
                w.extend_from_slice(&a.key);
                put_proven(&mut w, &a.tx);
                put_evidence(&mut w, &a.enrollment.evidence);
                put_proven(&mut w, &a.enrollment.tx);
            }
            Body::Consistency(c) => {
                put_evidence(&mut w, &c.from);
                w.extend_from_slice(&(c.headers.len() as u32).to_be_bytes());
                for h in &c.headers {
                    w.extend_from_slice(&h.encode());
                }
                put_evidence(&mut w, &c.to);
            }
            Body::State(st) => {
                put_evidence(&mut w, &st.evidence);
                w.extend_from_slice(&st.key);
                st.path.encode_into(&mut w);
            }
        }
        w
    }

    /// Decodes untrusted bytes (bounded; see the module's notes).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > BUNDLE_MAX {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut r = Cursor(Reader::new(bytes));
        if r.take(MAGIC.len(), "the magic").ok() != Some(&MAGIC[..]) {
            return Err(DecodeError::Magic);
        }
        let v = r.u8("the version")?;
        if v != VERSION {
            return Err(DecodeError::Version(v));
        }
        let kind = r.u8("the kind")?;
        if !(KIND_ANCHOR..=KIND_STATE).contains(&kind) {
            return Err(DecodeError::Kind(kind));
        }
        let genesis = r.bytes("the genesis", GENESIS_MAX)?.to_vec();
        // A block's evidence is at least a header and three counts.
        let ngov = r.count("the configuration block count", GOV_BLOCKS_MAX, HEADER_LEN + 12)?;
        let mut governance = Vec::with_capacity(ngov);
        for _ in 0..ngov {
            let evidence = r.evidence()?;
            let n = r.count("a configuration transaction count", CONFIGS_MAX, 8)?;
            let configs = (0..n).map(|_| r.proven()).collect::<Result<_, _>>()?;
            let n = r.count("an admin count", ADMINS_MAX, 4)?;
            let admins = (0..n)
                .map(|_| r.bytes("an admin certificate chain", CHAIN_MAX).map(<[u8]>::to_vec))
                .collect::<Result<_, _>>()?;
            governance.push(GovBlock { evidence, configs, admins });
        }
        let body = if kind == KIND_ANCHOR {
            let evidence = r.evidence()?;
            let key = r.array("the anchor key")?;
            let tx = r.proven()?;
            let enrollment = Enrollment { evidence: r.evidence()?, tx: r.proven()? };
            Body::Anchor(AnchorPart { evidence, key, tx, enrollment })
        } else if kind == KIND_STATE {
            let evidence = r.evidence()?;
            let key = r.array("the state key")?;
            let path = Path::decode(&mut r.0).map_err(DecodeError::StatePath)?;
            Body::State(StatePart { evidence, key, path })
        } else {
            let from = r.evidence()?;
            let n = r.count("the header count", HEADERS_MAX, HEADER_LEN)?;
            let headers = (0..n).map(|_| r.header()).collect::<Result<_, _>>()?;
            let to = r.evidence()?;
            Body::Consistency(ConsistencyPart { from, headers, to })
        };
        r.0.finish().map_err(|t| DecodeError::Trailing(t.0))?;
        Ok(Self { genesis, governance, body })
    }

    /// The JSON rendering (`vpbox proof show`): every field, byte strings as lowercase hex
    /// with `0x`, the genesis as its text. It is a view for people and tools; the binary
    /// encoding is what is verified.
    pub fn to_json(&self) -> Value {
        let hex0x = |b: &[u8]| format!("0x{}", hex::encode(b));
        let evidence = |e: &Evidence| {
            json!({
                "header": hex0x(&e.header.encode()),
                "height": e.header.height,
                "blockHash": hex0x(e.header.hash().as_bytes()),
                "txHashes": e.tx_hashes.iter().map(|h| hex0x(h.as_bytes())).collect::<Vec<_>>(),
                "certificate": hex0x(&e.certificate),
                "results": e.results.iter().map(|r| json!({
                    "index": r.index, "codes": r.codes,
                })).collect::<Vec<_>>(),
            })
        };
        let proven = |p: &Proven| json!({ "index": p.index, "tx": hex0x(&p.tx) });
        json!({
            "version": VERSION,
            "kind": match self.body {
                Body::Anchor(_) => "anchor",
                Body::Consistency(_) => "consistency",
                Body::State(_) => "state",
            },
            "genesis": String::from_utf8_lossy(&self.genesis),
            "genesisHash": hex0x(vpbox_sm::sm3::hash(&self.genesis).as_bytes()),
            "governance": self.governance.iter().map(|g| json!({
                "block": evidence(&g.evidence),
                "configs": g.configs.iter().map(proven).collect::<Vec<_>>(),
                "admins": g.admins.iter().map(|a| hex0x(a)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "anchor": match &self.body {
                Body::Anchor(a) => json!({
                    "block": evidence(&a.evidence),
                    "key": hex0x(&a.key),
                    "tx": proven(&a.tx),
                    "enrollment": {
                        "block": evidence(&a.enrollment.evidence),
                        "tx": proven(&a.enrollment.tx),
                    },
                }),
                Body::Consistency(_) | Body::State(_) => Value::Null,
            },
            "consistency": match &self.body {
                Body::Consistency(c) => json!({
                    "from": evidence(&c.from),
                    "headers": c.headers.iter().map(|h| hex0x(&h.encode())).collect::<Vec<_>>(),
                    "to": evidence(&c.to),
                }),
                Body::Anchor(_) | Body::State(_) => Value::Null,
            },
            "state": match &self.body {
                Body::State(st) => json!({
                    "block": evidence(&st.evidence),
                    "key": hex0x(&st.key),
                    "siblings": st.path.siblings.iter().map(|h| hex0x(h.as_bytes())).collect::<Vec<_>>(),
                    "leaf": match &st.path.terminal {
                        Terminal::Empty => Value::Null,
                        Terminal::Leaf(l) => json!({
                            "key": hex0x(&l.key),
                            "value": hex0x(&l.value),
                            "tx": hex0x(l.tx.as_bytes()),
                            "height": l.height,
                        }),
                    },
                }),
                _ => Value::Null,
            },
        })
    }
}

/// The bundle's reader: the shared bounded cursor with the bundle's errors.
struct Cursor<'a>(Reader<'a>);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        self.0.take(n).map_err(|_| DecodeError::Truncated(what))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.0.u8().map_err(|_| DecodeError::Truncated(what))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.0.u32().map_err(|_| DecodeError::Truncated(what))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        self.0.array().map_err(|_| DecodeError::Truncated(what))
    }

    /// A count of items of at least `min_len` bytes each, at most `max`.
    fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        let fits = self.0.remaining() / min_len.max(1);
        if n > max || n > fits {
            return Err(DecodeError::Limit { what, got: n as u64, max: max.min(fits) as u64 });
        }
        Ok(n)
    }

    fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::Limit { what, got: n as u64, max: max as u64 });
        }
        self.take(n, what)
    }

    fn proven(&mut self) -> Result<Proven, DecodeError> {
        let index = self.u32("a transaction index")?;
        let tx = self.bytes("a transaction", TX_MAX)?.to_vec();
        Ok(Proven { index, tx })
    }

    fn header(&mut self) -> Result<Header, DecodeError> {
        let raw = self.take(HEADER_LEN, "a block header")?;
        Header::decode_exact(raw).map_err(|_| DecodeError::Limit {
            what: "a block header's version",
            got: u64::from(raw[0]),
            max: 3,
        })
    }

    fn evidence(&mut self) -> Result<Evidence, DecodeError> {
        let header = self.header()?;
        let n = self.count("a block's transaction count", BLOCK_TX_MAX as usize, 32)?;
        let tx_hashes: Vec<Digest> = (0..n)
            .map(|_| self.array("a transaction hash").map(Digest))
            .collect::<Result<_, _>>()?;
        let certificate = self.bytes("a commit certificate", CERT_MAX as usize)?.to_vec();
        let n = self.count("a block's result count", tx_hashes.len(), 8)?;
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            let index = self.u32("a result index")?;
            let codes = self.bytes("a result's codes", BATCH_MAX as usize)?.to_vec();
            results.push(Outcome { index, codes });
        }
        Ok(Evidence { header, tx_hashes, certificate, results })
    }
}

#[cfg(test)]
impl Evidence {
    /// A block at `height` of `tx_count` transactions with zero hashes and roots, for tests.
    pub(crate) fn blank(height: u64, tx_count: u32) -> Self {
        let zero = Digest([0; 32]);
        let header = Header {
            height,
            parent: zero,
            tx_root: zero,
            results_root: zero,
            tx_count,
            timestamp_ms: 0,
            gov_seq: 0,
            state_root: zero,
        };
        Self {
            header,
            tx_hashes: vec![zero; tx_count as usize],
            certificate: Vec::new(),
            results: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Bundle {
        let header = Header {
            height: 7,
            parent: Digest([1; 32]),
            tx_root: Digest([2; 32]),
            results_root: Digest([3; 32]),
            tx_count: 2,
            timestamp_ms: 1_764_000_000_000,
            gov_seq: 1,
            state_root: Digest([6; 32]),
        };
        let evidence = Evidence {
            header,
            tx_hashes: vec![Digest([4; 32]), Digest([5; 32])],
            certificate: vec![1, 2, 3],
            results: vec![Outcome { index: 1, codes: vec![0, 1] }],
        };
        Bundle {
            genesis: b"{\"chain_id\":\"x\"}".to_vec(),
            governance: vec![GovBlock {
                evidence: evidence.clone(),
                configs: vec![Proven { index: 0, tx: vec![9; 40] }],
                admins: vec![vec![7; 20]],
            }],
            body: Body::Anchor(AnchorPart {
                evidence: evidence.clone(),
                key: [6; 32],
                tx: Proven { index: 1, tx: vec![8; 50] },
                enrollment: Enrollment { evidence, tx: Proven { index: 0, tx: vec![5; 30] } },
            }),
        }
    }

    #[test]
    fn a_bundle_round_trips_and_its_encoding_is_the_only_one() {
        let b = sample();
        let bytes = b.encode();
        assert_eq!(&bytes[..12], MAGIC);
        assert_eq!(Bundle::decode(&bytes).unwrap(), b);
        // Every strict prefix is truncated; one byte more is trailing.
        for cut in 0..bytes.len() {
            assert!(Bundle::decode(&bytes[..cut]).is_err(), "prefix of {cut} bytes");
        }
        let mut more = bytes;
        more.push(0);
        assert_eq!(Bundle::decode(&more), Err(DecodeError::Trailing(1)));
        let json = b.to_json();
        assert_eq!(json["anchor"]["block"]["height"], 7);
        assert_eq!(json["governance"][0]["configs"][0]["index"], 0);
        // A consistency proof too.
        let Body::Anchor(a) = &b.body else { unreachable!() };
        let mut c = b.clone();
        let mid = Header { height: 8, ..a.evidence.header };
        c.body = Body::Consistency(ConsistencyPart {
            from: a.evidence.clone(),
            headers: vec![mid],
            to: a.evidence.clone(),
        });
        let bytes = c.encode();
        assert_eq!(bytes[13], KIND_CONSISTENCY);
        assert_eq!(Bundle::decode(&bytes).unwrap(), c);
        assert_eq!(
            c.to_json()["consistency"]["headers"][0],
            format!("0x{}", hex::encode(mid.encode()))
        );
        let mut other = bytes;
        other[13] = 4;
        assert_eq!(Bundle::decode(&other), Err(DecodeError::Kind(4)));
        // A state proof: the key's path rides after the block.
        let mut st = sample();
        let Body::Anchor(a) = &st.body else { unreachable!() };
        let leaf = vpbox_ledger::state::Leaf {
            key: [7; 32],
            value: [8; 32],
            tx: Digest([9; 32]),
            height: 3,
        };
        st.body = Body::State(StatePart {
            evidence: a.evidence.clone(),
            key: [7; 32],
            path: Path { siblings: vec![Digest([1; 32]); 3], terminal: Terminal::Leaf(leaf) },
        });
        let bytes = st.encode();
        assert_eq!(bytes[13], KIND_STATE);
        assert_eq!(Bundle::decode(&bytes).unwrap(), st);
        assert_eq!(st.to_json()["state"]["leaf"]["height"], 3);
        for cut in 1..=(2 + 3 * 32 + 1 + 104) {
            assert!(Bundle::decode(&bytes[..bytes.len() - cut]).is_err(), "cut {cut}");
        }
        let mut deep = bytes.clone();
        let at = bytes.len() - (2 + 3 * 32 + 1 + 104);
        deep[at..at + 2].copy_from_slice(&257u16.to_be_bytes());
        assert_eq!(
            Bundle::decode(&deep),
            Err(DecodeError::StatePath("the state path is deeper than 256"))
        );
    }

    #[test]
    fn the_decoder_names_what_is_wrong_and_allocates_nothing_for_a_lie() {
        let mut bytes = sample().encode();
        bytes[12] = 1;
        assert_eq!(Bundle::decode(&bytes), Err(DecodeError::Version(1)));
        assert_eq!(Bundle::decode(b"PK\x03\x04"), Err(DecodeError::Magic));
        // A governance count of 4 billion in a short file: refused before allocating.
        let mut lie = MAGIC.to_vec();
        lie.push(VERSION);
        lie.push(KIND_ANCHOR);
        lie.extend_from_slice(&0u32.to_be_bytes());
        lie.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Bundle::decode(&lie), Err(DecodeError::Limit { got: 4_294_967_295, .. })));
        assert_eq!(
            Bundle::decode(&vec![0; BUNDLE_MAX + 1]),
            Err(DecodeError::TooLarge(BUNDLE_MAX + 1))
        );
        assert_eq!(Bundle::decode(&vec![0; BUNDLE_MAX]), Err(DecodeError::Magic), "at the limit");
        // Two configuration blocks announced, room for less than one: a limit, not a
        // truncation found after allocating.
        let mut short = lie[..18].to_vec();
        short.extend_from_slice(&2u32.to_be_bytes());
        short.extend_from_slice(&[0; 294]); // one block needs 169 at least
        assert_eq!(
            Bundle::decode(&short),
            Err(DecodeError::Limit { what: "the configuration block count", got: 2, max: 1 })
        );
    }

    #[test]
    fn the_limits_are_the_documented_ones_and_inclusive() {
        // docs/proof-format.md §2.
        assert_eq!(
            (BUNDLE_MAX, GENESIS_MAX, GOV_BLOCKS_MAX, CONFIGS_MAX, ADMINS_MAX, CHAIN_MAX),
            (64 << 20, 1 << 20, 4096, 256, 1024, 64 << 10)
        );
        assert_eq!((HEADERS_MAX, HEADER_LEN), (300_000, 157));
        // A genesis of exactly the limit is read; one byte more is refused.
        let mut b = sample();
        b.genesis = vec![b' '; GENESIS_MAX];
        assert_eq!(Bundle::decode(&b.encode()).unwrap(), b);
        b.genesis.push(b' ');
        assert!(matches!(
            Bundle::decode(&b.encode()),
            Err(DecodeError::Limit { what: "the genesis", .. })
        ));
        // A count that exactly fits the bytes left is read (the hashes are there).
        let mut b = sample();
        let Body::Anchor(a) = &mut b.body else { unreachable!() };
        a.evidence.tx_hashes = vec![Digest([9; 32]); 3];
        assert_eq!(Bundle::decode(&b.encode()).unwrap(), b);
    }
}
