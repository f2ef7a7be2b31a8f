//! Builds a proof bundle from a node's ledger (`anchor_getProof`): the anchor's block with its
//! results, and every block that applied a configuration change up to it, with the admins'
//! certificate chains the verifier needs to check their approvals.

use std::sync::RwLock;

use vpbox_ledger::block::Block;
use vpbox_ledger::governance::ConfigTx;
use vpbox_ledger::tx::Payload;
use vpbox_ledger::{Error, Ledger};
use vpbox_sm::sm3::Digest;

use crate::bundle::{
    ADMINS_MAX, AnchorPart, BUNDLE_MAX, Body, Bundle, CONFIGS_MAX, ConsistencyPart, Enrollment,
    Evidence, GENESIS_MAX, GOV_BLOCKS_MAX, GovBlock, HEADERS_MAX, Outcome, Proven, StatePart,
};

fn corrupt(what: String) -> Error {
    Error::Corrupt(what)
}

/// Records read under one hold of the ledger's read lock: a proof of a large block or a long
/// span never keeps the node's commits waiting for more than one chunk. Committed blocks,
/// transactions and receipts never change, so reading them in chunks reads the same thing.
const READS_PER_LOCK: usize = 4096;

/// The ledger, locked for each read.
struct Reader<'a>(&'a RwLock<Ledger>);

impl Reader<'_> {
    fn with<T>(&self, f: impl FnOnce(&Ledger) -> Result<T, Error>) -> Result<T, Error> {
        f(&*self.0.read().map_err(|_| corrupt("ledger lock poisoned".into()))?)
    }

    fn block(&self, height: u64) -> Result<Block, Error> {
        self.with(|l| l.block(height)?.ok_or_else(|| corrupt(format!("block {height} missing"))))
    }

    /// A block with its results: the outcome codes of each transaction that executed in it (a
    /// repeat of an earlier transaction has a receipt elsewhere and no result here).
    fn evidence(&self, b: Block) -> Result<Evidence, Error> {
        let mut results = Vec::new();
        for (c, chunk) in b.tx_hashes.chunks(READS_PER_LOCK).enumerate() {
            self.with(|l| {
                for (j, h) in chunk.iter().enumerate() {
                    let i = c * READS_PER_LOCK + j;
                    if let Some(r) = l.receipt(h)? {
                        if r.height == b.header.height && r.index as usize == i {
                            results.push(Outcome {
                                index: i as u32,
                                codes: r.outcomes.iter().map(|o| o.code()).collect(),
                            });
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(Evidence {
            header: b.header,
            tx_hashes: b.tx_hashes,
            certificate: b.certificate,
            results,
        })
    }

    fn proven(&self, b: &Block, index: u32) -> Result<Proven, Error> {
        let h = b.tx_hashes.get(index as usize).ok_or_else(|| {
            corrupt(format!("block {}: no transaction at {index}", b.header.height))
        })?;
        let (_, _, tx) = self.with(|l| {
            l.transaction(h)?.ok_or_else(|| corrupt(format!("transaction {} missing", h.to_hex())))
        })?;
        Ok(Proven { index, tx: tx.encode() })
    }

    /// The certificate chain `key` enrolled last before (`height`, `index`): the payload of
    /// that Enroll transaction; for a ledger older than enrollment records, its current one.
    fn enrolled_chain(
        &self,
        key: &Digest,
        height: u64,
        index: u32,
    ) -> Result<Option<Vec<u8>>, Error> {
        let Some((h, i)) = self.with(|l| l.enrollment_before(key, height, index))? else {
            return self.with(|l| l.certificate(key));
        };
        let tx = vpbox_ledger::tx::Tx::decode(&self.proven(&self.block(h)?, i)?.tx)?;
        match tx.into_body().payload {
            Payload::Enroll(chain) => Ok(Some(chain)),
            _ => Err(corrupt(format!("block {h}: the enrollment at {i} is not an Enroll"))),
        }
    }

    /// Every block that applied configuration changes up to `height`, with those transactions
    /// and the chains their submitting and approving admins had enrolled by then.
    fn governance(&self, height: u64) -> Result<Vec<GovBlock>, BuildError> {
        let changes: Vec<(u64, Vec<u32>)> = self
            .with(|l| l.config_changes())?
            .into_iter()
            .take_while(|(h, _)| *h <= height)
            .collect();
        if changes.len() > GOV_BLOCKS_MAX {
            return Err(BuildError::TooLarge(format!(
                "{} configuration blocks lie below block {height}, above the format's limit of \
                 {GOV_BLOCKS_MAX}",
                changes.len()
            )));
        }
        let mut governance = Vec::new();
        for (h, indices) in changes {
            let b = self.block(h)?;
            let configs =
                indices.iter().map(|i| self.proven(&b, *i)).collect::<Result<Vec<_>, _>>()?;
            // Who signed them: each submitter and each approving admin, once, with the index
            // of the first transaction that needs them.
            let mut who: Vec<(Digest, u32)> = Vec::new();
            for p in &configs {
                let tx = vpbox_ledger::tx::Tx::decode(&p.tx)?;
                who.push((tx.body().submitter, p.index));
                if let Payload::Config(bytes) = &tx.body().payload {
                    let approvals = ConfigTx::decode(bytes)?.approvals;
                    who.extend(approvals.iter().map(|a| (a.admin, p.index)));
                }
            }
            who.sort_unstable_by_key(|(d, i)| (d.0, *i));
            who.dedup_by_key(|(d, _)| *d);
            let mut admins = Vec::new();
            for (d, i) in &who {
                if let Some(chain) = self.enrolled_chain(d, h, *i)? {
                    admins.push(chain);
                }
            }
            governance.push(GovBlock { evidence: self.evidence(b)?, configs, admins });
        }
        Ok(governance)
    }
}

/// The proof bundle of the anchor at `key`, or `None` when the key has none. `genesis` is the
/// genesis file's bytes. Reads the ledger in chunks, taking its read lock for each.
pub fn bundle(
    ledger: &RwLock<Ledger>,
    genesis: &[u8],
    key: &[u8; 32],
) -> Result<Option<Bundle>, BuildError> {
    let r = Reader(ledger);
    let Some(rec) = r.with(|l| l.anchor(key))? else { return Ok(None) };
    let b = r.block(rec.height)?;
    let ((_, index, tx), enrolled) = r.with(|l| {
        let found = l
            .transaction(&rec.tx)?
            .ok_or_else(|| corrupt(format!("transaction {} missing", rec.tx.to_hex())))?;
        let enrolled = l.enrollment_before(&found.2.body().submitter, rec.height, found.1)?;
        Ok((found, enrolled))
    })?;
    let Some((height, at)) = enrolled else {
        return Err(BuildError::Unprovable(format!(
            "no enrollment is recorded for the submitter of {}: this ledger was written before \
             enrollments were recorded (a node synced from the genesis by this version can prove \
             it)",
            rec.tx.to_hex()
        )));
    };
    let governance = r.governance(rec.height)?;
    let e = r.block(height)?;
    let enrollment = Enrollment { tx: r.proven(&e, at)?, evidence: r.evidence(e)? };
    let anchor = AnchorPart {
        evidence: r.evidence(b)?,
        key: *key,
        tx: Proven { index, tx: tx.encode() },
        enrollment,
    };
    let b = Bundle { genesis: genesis.to_vec(), governance, body: Body::Anchor(anchor) };
    within_limits(&b)?;
    Ok(Some(b))
}

/// Why a proof cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The heights asked for are not `1 ≤ from < to ≤ the last committed block`, or too far
    /// apart for one proof.
    #[error("{0}")]
    Span(String),
    /// The bundle would break a limit of the format (`docs/proof-format.md` §2), so no
    /// verifier would read it.
    #[error("{0}")]
    TooLarge(String),
    /// The ledger lacks a record the proof needs (it predates that record).
    #[error("{0}")]
    Unprovable(String),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] Error),
}

/// Refuses a bundle no verifier would read (the limits of `docs/proof-format.md` §2).
fn within_limits(b: &Bundle) -> Result<(), BuildError> {
    if b.genesis.len() > GENESIS_MAX {
        return Err(BuildError::TooLarge(format!(
            "the genesis is {} bytes, above the format's limit of {GENESIS_MAX}",
            b.genesis.len()
        )));
    }
    let too = |what: &str, n: usize, max: usize| {
        Err(BuildError::TooLarge(format!(
            "the proof would hold {n} {what}, above the format's limit of {max}"
        )))
    };
    if b.governance.len() > GOV_BLOCKS_MAX {
        return too("configuration blocks", b.governance.len(), GOV_BLOCKS_MAX);
    }
    for g in &b.governance {
        if g.configs.len() > CONFIGS_MAX {
            return too("configuration transactions in one block", g.configs.len(), CONFIGS_MAX);
        }
        if g.admins.len() > ADMINS_MAX {
            return too("admin certificates in one block", g.admins.len(), ADMINS_MAX);
        }
    }
    let n = b.encode().len();
    if n > BUNDLE_MAX {
        return too("bytes", n, BUNDLE_MAX);
    }
    Ok(())
}

/// A consistency proof: the certified block `to` extends the certified block `from`. Reads
/// the ledger in chunks, taking its read lock for each.
pub fn consistency(
    ledger: &RwLock<Ledger>,
    genesis: &[u8],
    from: u64,
    to: u64,
) -> Result<Bundle, BuildError> {
    let r = Reader(ledger);
    let top = r.with(|l| Ok(l.height()))?.saturating_sub(1);
    if from == 0 || from >= to || to > top {
        return Err(BuildError::Span(format!(
            "a consistency proof needs 1 ≤ from < to ≤ {top} (the last committed block); \
             asked for {from} to {to}"
        )));
    }
    if to - from - 1 > HEADERS_MAX as u64 {
        return Err(BuildError::Span(format!(
            "{} blocks apart: at most {} headers fit one proof; prove the span in steps \
             through intermediate heads",
            to - from,
            HEADERS_MAX
        )));
    }
    let governance = r.governance(to)?;
    let from_e = r.evidence(r.block(from)?)?;
    let to_e = r.evidence(r.block(to)?)?;
    let mut headers = Vec::with_capacity((to - from - 1) as usize);
    let mut h = from + 1;
    while h < to {
        let end = to.min(h + READS_PER_LOCK as u64);
        r.with(|l| {
            for height in h..end {
                let header = l.header(height)?;
                headers.push(header.ok_or_else(|| corrupt(format!("block {height} missing")))?);
            }
            Ok(())
        })?;
        h = end;
    }
    let b = Bundle {
        genesis: genesis.to_vec(),
        governance,
        body: Body::Consistency(ConsistencyPart { from: from_e, headers, to: to_e }),
    };
    within_limits(&b)?;
    Ok(b)
}

/// A state proof of `key` against the last committed block: its first value, or its absence.
/// The path and the block are read under one hold of the lock (the path is of the tip's
/// state); the block's evidence after (committed blocks never change).
pub fn state(
    ledger: &RwLock<Ledger>,
    genesis: &[u8],
    key: &[u8; 32],
) -> Result<Bundle, BuildError> {
    let r = Reader(ledger);
    let (header, path) = r.with(|l| l.state_path(key))?;
    if header.height == 0 {
        return Err(BuildError::Span(
            "no block is committed yet: the genesis block carries no certificate to prove a \
             state by"
                .into(),
        ));
    }
    let governance = r.governance(header.height)?;
    let evidence = r.evidence(r.block(header.height)?)?;
    if evidence.header != header {
        return Err(corrupt(format!("block {} differs from the tip", header.height)).into());
    }
    let b = Bundle {
        genesis: genesis.to_vec(),
        governance,
        body: Body::State(StatePart { evidence, key: *key, path }),
    };
    within_limits(&b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::CHAIN_MAX;

    fn evidence() -> Evidence {
        Evidence::blank(1, 0)
    }

    #[test]
    fn a_bundle_no_verifier_would_read_is_not_made() {
        let gov = GovBlock { evidence: evidence(), configs: Vec::new(), admins: Vec::new() };
        let anchor = AnchorPart {
            evidence: evidence(),
            key: [0; 32],
            tx: Proven { index: 0, tx: Vec::new() },
            enrollment: Enrollment {
                evidence: evidence(),
                tx: Proven { index: 0, tx: Vec::new() },
            },
        };
        let mut b = Bundle {
            genesis: Vec::new(),
            governance: vec![gov.clone(); GOV_BLOCKS_MAX],
            body: Body::Anchor(anchor),
        };
        assert!(within_limits(&b).is_ok());
        b.governance.push(gov.clone());
        let e = within_limits(&b).unwrap_err().to_string();
        assert!(e.contains("4097 configuration blocks"), "{e}");
        b.governance = vec![gov];
        b.governance[0].admins = vec![Vec::new(); ADMINS_MAX + 1];
        assert!(within_limits(&b).unwrap_err().to_string().contains("admin certificates"));
        b.genesis = vec![b' '; GENESIS_MAX + 1];
        assert!(within_limits(&b).unwrap_err().to_string().contains("the genesis is"));
        b.genesis = Vec::new();
        b.governance[0].admins = vec![vec![0; CHAIN_MAX]; ADMINS_MAX];
        let e = within_limits(&b).unwrap_err().to_string();
        assert!(e.contains("bytes, above the format's limit of 67108864"), "{e}");
    }
}
