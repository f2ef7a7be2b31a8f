//! The deterministic binary encoding: frames on the wire, WAL records, signing payloads and the
//! digests of batches and blocks.
//!
//! Big-endian integers, `u32` counts, one tag byte per enum, a version byte in front of every
//! frame and record. Decoding checks every count against both a fixed limit and the bytes that
//! remain before allocating, so untrusted input can neither panic the decoder nor make it
//! allocate more than a small multiple of its own length.

use crate::effect::WalRecord;
use crate::error::Error;
use crate::message::{
    Batch, Checkpoint, CheckpointProof, CommitCertificate, CommittedEntry, Entries, Envelope,
    Message, NewView, PrePrepare, PreparedProof, ViewChange, Vote,
};
use crate::types::{Digest, NodeId, SIGNATURE_MAX_LEN, SeqNo, Signature, Verifier, View};

/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Most transactions in one batch.
pub const BATCH_TXS_MAX: usize = 10_000;
/// Most items in any other list (envelopes, proofs, entries).
pub const LIST_MAX: usize = 4_096;
/// Longest frame accepted.
pub const FRAME_MAX: usize = 64 << 20;
/// Deepest nesting of envelopes (a new view holds view changes holding prepared certificates).
const DEPTH_MAX: usize = 4;
/// Domain tag in front of every signing payload.
const SIGNING_TAG: &[u8] = b"vpbox/consensus/msg/v2\0";

/// Encodes an envelope as a versioned frame.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut w = Vec::with_capacity(128);
    w.push(VERSION);
    put_envelope(&mut w, envelope);
    w
}

/// Decodes a frame from untrusted bytes.
pub fn decode(bytes: &[u8]) -> Result<Envelope, Error> {
    if bytes.len() > FRAME_MAX {
        return Err(Error::Length {
            what: "frame",
            len: bytes.len() as u64,
            max: FRAME_MAX as u64,
        });
    }
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != VERSION {
        return Err(Error::Version(v));
    }
    let e = r.envelope(0)?;
    r.finish()?;
    Ok(e)
}

/// Encodes a commit certificate on its own, as a ledger stores it beside its block.
pub fn encode_certificate(certificate: &CommitCertificate) -> Vec<u8> {
    let mut w = vec![VERSION];
    put_certificate(&mut w, certificate);
    w
}

/// Decodes a stored or received commit certificate (untrusted bytes).
pub fn decode_certificate(bytes: &[u8]) -> Result<CommitCertificate, Error> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != VERSION {
        return Err(Error::Version(v));
    }
    let c = r.certificate()?;
    r.finish()?;
    Ok(c)
}

/// Encodes a WAL record.
pub fn encode_record(record: &WalRecord) -> Vec<u8> {
    let mut w = vec![VERSION];
    match record {
        WalRecord::View { view, changing } => {
            w.push(0);
            put_u64(&mut w, view.0);
            w.push(u8::from(*changing));
        }
        WalRecord::Intent(m) => {
            w.push(1);
            put_message(&mut w, m);
        }
        WalRecord::Accepted(e) => {
            w.push(2);
            put_envelope(&mut w, e);
        }
        WalRecord::Stable(p) => {
            w.push(3);
            put_checkpoint_proof(&mut w, p);
        }
    }
    w
}

/// Decodes a WAL record; a torn or corrupt record is an error, never a panic.
pub fn decode_record(bytes: &[u8]) -> Result<WalRecord, Error> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != VERSION {
        return Err(Error::Version(v));
    }
    let rec = match r.u8()? {
        0 => {
            let view = View(r.u64()?);
            let changing = r.bool()?;
            WalRecord::View { view, changing }
        }
        1 => WalRecord::Intent(r.message(0)?),
        2 => WalRecord::Accepted(r.envelope(0)?),
        3 => WalRecord::Stable(r.checkpoint_proof(0)?),
        tag => {
            return Err(Error::Tag { what: "record", tag });
        }
    };
    r.finish()?;
    Ok(rec)
}

/// The bytes a sender signs: a domain tag, the configuration epoch the message belongs to, its
/// id and the message. The epoch keeps a vote of one membership from counting in another.
pub fn signing_payload(epoch: u64, from: NodeId, message: &Message) -> Vec<u8> {
    let mut w = Vec::with_capacity(104);
    w.extend_from_slice(SIGNING_TAG);
    put_u64(&mut w, epoch);
    put_u32(&mut w, from.0);
    put_message(&mut w, message);
    w
}

/// Parses a signing payload back into its sender and message, so that a signer (an HSM front
/// end, the simulator) can check what it is asked to sign, e.g. refuse a second, different
/// vote for one slot.
pub fn decode_signing_payload(bytes: &[u8]) -> Result<(u64, NodeId, Message), Error> {
    let rest =
        bytes.strip_prefix(SIGNING_TAG).ok_or(Error::Tag { what: "signing payload", tag: 0 })?;
    let mut r = Reader::new(rest);
    let epoch = r.u64()?;
    let from = NodeId(r.u32()?);
    let m = r.message(0)?;
    r.finish()?;
    Ok((epoch, from, m))
}

/// The digest of a batch.
pub fn batch_digest(v: &dyn Verifier, batch: &Batch) -> Digest {
    let mut w = Vec::with_capacity(8 + 32 * batch.txs.len());
    w.extend_from_slice(b"vpbox/batch\0");
    put_batch(&mut w, batch);
    v.digest(&w)
}

/// The digest of a block: what commit votes and certificates sign.
pub fn block_digest(v: &dyn Verifier, seq: SeqNo, batch: &Digest, result: &Digest) -> Digest {
    let mut w = Vec::with_capacity(96);
    w.extend_from_slice(b"vpbox/block\0");
    put_u64(&mut w, seq.0);
    w.extend_from_slice(&batch.0);
    w.extend_from_slice(&result.0);
    v.digest(&w)
}

fn put_u32(w: &mut Vec<u8>, x: u32) {
    w.extend_from_slice(&x.to_be_bytes());
}

fn put_u64(w: &mut Vec<u8>, x: u64) {
    w.extend_from_slice(&x.to_be_bytes());
}

fn put_len(w: &mut Vec<u8>, n: usize) {
    put_u32(w, u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_batch(w: &mut Vec<u8>, b: &Batch) {
    put_len(w, b.txs.len());
    for t in &b.txs {
        w.extend_from_slice(&t.0);
    }
}

fn put_sig(w: &mut Vec<u8>, s: &Signature) {
    // Signatures longer than the limit are truncated by no one: the decoder rejects them, so
    // an honest encoder never produces one.
    w.push(u8::try_from(s.0.len()).unwrap_or(u8::MAX));
    w.extend_from_slice(&s.0);
}

fn put_vote(w: &mut Vec<u8>, v: &Vote) {
    put_u64(w, v.view.0);
    put_u64(w, v.seq.0);
    w.extend_from_slice(&v.digest.0);
}

fn put_envelopes(w: &mut Vec<u8>, es: &[Envelope]) {
    put_len(w, es.len());
    for e in es {
        put_envelope(w, e);
    }
}

fn put_checkpoint_proof(w: &mut Vec<u8>, p: &CheckpointProof) {
    put_u64(w, p.seq.0);
    w.extend_from_slice(&p.state.0);
    put_envelopes(w, &p.signed);
}

fn put_certificate(w: &mut Vec<u8>, c: &CommitCertificate) {
    put_u64(w, c.view.0);
    put_u64(w, c.seq.0);
    w.extend_from_slice(&c.block.0);
    put_len(w, c.signatures.len());
    for (id, s) in &c.signatures {
        put_u32(w, id.0);
        put_sig(w, s);
    }
}

fn put_envelope(w: &mut Vec<u8>, e: &Envelope) {
    put_u32(w, e.from.0);
    put_sig(w, &e.signature);
    put_message(w, &e.message);
}

fn put_message(w: &mut Vec<u8>, m: &Message) {
    match m {
        Message::PrePrepare(p) => {
            w.push(0);
            put_u64(w, p.view.0);
            put_u64(w, p.seq.0);
            put_batch(w, &p.batch);
            match &p.result {
                None => w.push(0),
                Some(d) => {
                    w.push(1);
                    w.extend_from_slice(&d.0);
                }
            }
        }
        Message::Prepare(v) => {
            w.push(1);
            put_vote(w, v);
        }
        Message::Commit(v) => {
            w.push(2);
            put_vote(w, v);
        }
        Message::Checkpoint(c) => {
            w.push(3);
            put_u64(w, c.seq.0);
            w.extend_from_slice(&c.state.0);
        }
        Message::ViewChange(vc) => {
            w.push(4);
            put_u64(w, vc.view.0);
            put_checkpoint_proof(w, &vc.checkpoint);
            put_len(w, vc.prepared.len());
            for p in &vc.prepared {
                put_envelope(w, &p.pre_prepare);
                put_envelopes(w, &p.prepares);
            }
        }
        Message::NewView(nv) => {
            w.push(5);
            put_u64(w, nv.view.0);
            put_envelopes(w, &nv.view_changes);
            put_envelopes(w, &nv.pre_prepares);
        }
        Message::Heartbeat { view } => {
            w.push(6);
            put_u64(w, view.0);
        }
        Message::Fetch { after, view } => {
            w.push(7);
            put_u64(w, after.0);
            put_u64(w, view.0);
        }
        Message::Entries(e) => {
            w.push(8);
            match &e.checkpoint {
                None => w.push(0),
                Some(p) => {
                    w.push(1);
                    put_checkpoint_proof(w, p);
                }
            }
            put_len(w, e.entries.len());
            for c in &e.entries {
                put_batch(w, &c.batch);
                w.extend_from_slice(&c.result.0);
                put_certificate(w, &c.certificate);
            }
        }
    }
}

/// The shared bounded cursor, with this format's errors and compound reads.
struct Reader<'a>(vpbox_wire::Reader<'a>);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self(vpbox_wire::Reader::new(bytes))
    }

    fn remaining(&self) -> usize {
        self.0.remaining()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        self.0.take(n).map_err(truncated)
    }

    fn finish(&self) -> Result<(), Error> {
        self.0.finish().map_err(|vpbox_wire::Trailing(n)| Error::Trailing(n))
    }

    fn u8(&mut self) -> Result<u8, Error> {
        self.0.u8().map_err(truncated)
    }

    fn bool(&mut self) -> Result<bool, Error> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(Error::Tag { what: "bool", tag }),
        }
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.0.u32().map_err(truncated)
    }

    fn u64(&mut self) -> Result<u64, Error> {
        self.0.u64().map_err(truncated)
    }

    fn digest(&mut self) -> Result<Digest, Error> {
        self.0.array().map(Digest).map_err(truncated)
    }

    /// A count, checked against `max` and against the bytes left given each item's minimum
    /// encoded size, so the caller may allocate for it.
    fn count(&mut self, what: &'static str, max: usize, item_min: usize) -> Result<usize, Error> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Error::Length { what, len: n as u64, max: max as u64 });
        }
        let need = n.saturating_mul(item_min);
        if need > self.remaining() {
            return Err(Error::Truncated { needed: need - self.remaining() });
        }
        Ok(n)
    }

    fn batch(&mut self) -> Result<Batch, Error> {
        let n = self.count("batch", BATCH_TXS_MAX, 32)?;
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            txs.push(self.digest()?);
        }
        Ok(Batch { txs })
    }

    fn sig(&mut self) -> Result<Signature, Error> {
        let n = self.u8()? as usize;
        if n > SIGNATURE_MAX_LEN {
            return Err(Error::Length {
                what: "signature",
                len: n as u64,
                max: SIGNATURE_MAX_LEN as u64,
            });
        }
        Ok(Signature(self.take(n)?.to_vec()))
    }

    fn vote(&mut self) -> Result<Vote, Error> {
        Ok(Vote { view: View(self.u64()?), seq: SeqNo(self.u64()?), digest: self.digest()? })
    }

    fn envelopes(&mut self, depth: usize) -> Result<Vec<Envelope>, Error> {
        // An envelope is at least 4 (from) + 1 (sig len) + 1 (tag) + 8 bytes.
        let n = self.count("envelopes", LIST_MAX, 14)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.envelope(depth)?);
        }
        Ok(out)
    }

    fn checkpoint_proof(&mut self, depth: usize) -> Result<CheckpointProof, Error> {
        Ok(CheckpointProof {
            seq: SeqNo(self.u64()?),
            state: self.digest()?,
            signed: self.envelopes(depth + 1)?,
        })
    }

    fn certificate(&mut self) -> Result<CommitCertificate, Error> {
        let view = View(self.u64()?);
        let seq = SeqNo(self.u64()?);
        let block = self.digest()?;
        let n = self.count("signatures", LIST_MAX, 5)?;
        let mut signatures = Vec::with_capacity(n);
        for _ in 0..n {
            signatures.push((NodeId(self.u32()?), self.sig()?));
        }
        Ok(CommitCertificate { view, seq, block, signatures })
    }

    fn envelope(&mut self, depth: usize) -> Result<Envelope, Error> {
        if depth > DEPTH_MAX {
            return Err(Error::Depth(DEPTH_MAX));
        }
        let from = NodeId(self.u32()?);
        let signature = self.sig()?;
        let message = self.message(depth)?;
        Ok(Envelope { from, message, signature })
    }

    fn message(&mut self, depth: usize) -> Result<Message, Error> {
        Ok(match self.u8()? {
            0 => {
                let view = View(self.u64()?);
                let seq = SeqNo(self.u64()?);
                let batch = self.batch()?;
                let result = if self.bool()? { Some(self.digest()?) } else { None };
                Message::PrePrepare(PrePrepare { view, seq, batch, result })
            }
            1 => Message::Prepare(self.vote()?),
            2 => Message::Commit(self.vote()?),
            3 => Message::Checkpoint(Checkpoint { seq: SeqNo(self.u64()?), state: self.digest()? }),
            4 => {
                let view = View(self.u64()?);
                let checkpoint = self.checkpoint_proof(depth)?;
                let n = self.count("prepared", LIST_MAX, 18)?;
                let mut prepared = Vec::with_capacity(n);
                for _ in 0..n {
                    let pre_prepare = self.envelope(depth + 1)?;
                    let prepares = self.envelopes(depth + 1)?;
                    prepared.push(PreparedProof { pre_prepare, prepares });
                }
                Message::ViewChange(ViewChange { view, checkpoint, prepared })
            }
            5 => {
                let view = View(self.u64()?);
                let view_changes = self.envelopes(depth + 1)?;
                let pre_prepares = self.envelopes(depth + 1)?;
                Message::NewView(NewView { view, view_changes, pre_prepares })
            }
            6 => Message::Heartbeat { view: View(self.u64()?) },
            7 => Message::Fetch { after: SeqNo(self.u64()?), view: View(self.u64()?) },
            8 => {
                let checkpoint =
                    if self.bool()? { Some(self.checkpoint_proof(depth)?) } else { None };
                let n = self.count("entries", LIST_MAX, 4 + 32 + 52)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let batch = self.batch()?;
                    let result = self.digest()?;
                    let certificate = self.certificate()?;
                    entries.push(CommittedEntry { batch, result, certificate });
                }
                Message::Entries(Entries { checkpoint, entries })
            }
            tag => {
                return Err(Error::Tag { what: "message", tag });
            }
        })
    }
}

fn truncated(vpbox_wire::Short { needed }: vpbox_wire::Short) -> Error {
    Error::Truncated { needed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: u8) -> Digest {
        Digest([x; 32])
    }

    /// A verifier that keeps every input it digests (the bytes each digest hashes can be read
    /// back) and mixes it into 32 bytes.
    #[derive(Default)]
    struct Recording(std::cell::RefCell<Vec<Vec<u8>>>);

    impl Verifier for Recording {
        fn digest(&self, bytes: &[u8]) -> Digest {
            self.0.borrow_mut().push(bytes.to_vec());
            // Distinct inputs of the same length give distinct digests: a sum of the bytes,
            // weighted by position, spread over 32 bytes.
            let mut out = [0u8; 32];
            for (i, b) in bytes.iter().enumerate() {
                out[i % 32] = out[i % 32].wrapping_mul(31).wrapping_add(*b ^ (i / 32) as u8);
            }
            Digest(out)
        }
        fn verify(
            &self,
            _: &crate::types::PublicKey,
            _: &[u8],
            _: &Signature,
        ) -> crate::types::Verification {
            crate::types::Verification::Invalid
        }
    }

    /// What a commit certificate's signatures cover (ARCHITECTURE.md, "Wire format"; the
    /// proof format an outside verifier follows): the block digest hashes exactly
    /// `"vpbox/block\0" ‖ seq (u64 BE) ‖ batch digest ‖ result digest`, the batch digest
    /// `"vpbox/batch\0" ‖ n (u32 BE) ‖ the transaction hashes in order`; so a digest changes
    /// with any of them, and a certificate for one block does not count for another.
    #[test]
    fn the_block_and_batch_digests_hash_exactly_the_specified_bytes() {
        let v = Recording::default();
        let block = block_digest(&v, SeqNo(0x0102), &d(7), &d(9));
        let mut want = b"vpbox/block\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&[9; 32]);
        assert_eq!(v.0.borrow().last().unwrap(), &want);
        // Each input moves the digest.
        assert_ne!(block_digest(&v, SeqNo(0x0103), &d(7), &d(9)), block);
        assert_ne!(block_digest(&v, SeqNo(0x0102), &d(8), &d(9)), block);
        assert_ne!(block_digest(&v, SeqNo(0x0102), &d(7), &d(8)), block);
        assert_ne!(block_digest(&v, SeqNo(0x0102), &d(9), &d(7)), block);

        let batch = Batch { txs: vec![d(1), d(2)] };
        let digest = batch_digest(&v, &batch);
        let mut want = b"vpbox/batch\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 2]);
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(&[2; 32]);
        assert_eq!(v.0.borrow().last().unwrap(), &want);
        let swapped = Batch { txs: vec![d(2), d(1)] };
        assert_ne!(batch_digest(&v, &swapped), digest);
        assert_ne!(batch_digest(&v, &Batch { txs: vec![d(1)] }), digest);
    }

    /// A vote's signed bytes: `"vpbox/consensus/msg/v2\0" ‖ epoch (u64 BE) ‖ sender (u32 BE) ‖
    /// the message`; the same vote in another epoch or from another sender is other bytes.
    #[test]
    fn a_signing_payload_is_the_tag_the_epoch_the_sender_and_the_message() {
        let vote = Message::Commit(Vote { view: View(3), seq: SeqNo(7), digest: d(4) });
        let bytes = signing_payload(0x0a0b, NodeId(5), &vote);
        let mut want = b"vpbox/consensus/msg/v2\0".to_vec();
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        want.extend_from_slice(&[0, 0, 0, 5]);
        assert!(bytes.starts_with(&want), "{bytes:02x?}");
        assert_eq!(decode_signing_payload(&bytes).unwrap(), (0x0a0b, NodeId(5), vote.clone()));
        assert_ne!(signing_payload(0x0a0c, NodeId(5), &vote), bytes);
        assert_ne!(signing_payload(0x0a0b, NodeId(6), &vote), bytes);
    }

    fn env(from: u32, message: Message) -> Envelope {
        Envelope { from: NodeId(from), message, signature: Signature(vec![from as u8; 64]) }
    }

    fn samples() -> Vec<Envelope> {
        let pp = env(
            0,
            Message::PrePrepare(PrePrepare {
                view: View(3),
                seq: SeqNo(7),
                batch: Batch { txs: vec![d(1), d(2)] },
                result: Some(d(9)),
            }),
        );
        let prep = env(1, Message::Prepare(Vote { view: View(3), seq: SeqNo(7), digest: d(4) }));
        let ck = env(2, Message::Checkpoint(Checkpoint { seq: SeqNo(10), state: d(5) }));
        let proof = CheckpointProof { seq: SeqNo(10), state: d(5), signed: vec![ck.clone()] };
        let vc = env(
            1,
            Message::ViewChange(ViewChange {
                view: View(4),
                checkpoint: proof.clone(),
                prepared: vec![PreparedProof {
                    pre_prepare: pp.clone(),
                    prepares: vec![prep.clone()],
                }],
            }),
        );
        let nv = env(
            0,
            Message::NewView(NewView {
                view: View(4),
                view_changes: vec![vc.clone()],
                pre_prepares: vec![pp.clone()],
            }),
        );
        let entries = env(
            3,
            Message::Entries(Entries {
                checkpoint: Some(proof),
                entries: vec![CommittedEntry {
                    batch: Batch { txs: vec![d(7)] },
                    result: d(8),
                    certificate: CommitCertificate {
                        view: View(1),
                        seq: SeqNo(11),
                        block: d(6),
                        signatures: vec![(NodeId(1), Signature(vec![1; 64]))],
                    },
                }],
            }),
        );
        vec![
            pp,
            prep,
            env(2, Message::Commit(Vote { view: View(3), seq: SeqNo(7), digest: d(4) })),
            ck,
            vc,
            nv,
            env(0, Message::Heartbeat { view: View(2) }),
            env(1, Message::Fetch { after: SeqNo(5), view: View(1) }),
            entries,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for e in samples() {
            let bytes = encode(&e);
            assert_eq!(decode(&bytes).unwrap(), e);
        }
    }

    #[test]
    fn signing_payloads_parse_back() {
        for e in samples() {
            let p = signing_payload(3, e.from, &e.message);
            assert_eq!(decode_signing_payload(&p).unwrap(), (3, e.from, e.message));
            assert!(decode_signing_payload(&p[1..]).is_err());
        }
    }

    #[test]
    fn certificates_round_trip_alone() {
        let c = CommitCertificate {
            view: View(2),
            seq: SeqNo(9),
            block: d(4),
            signatures: vec![
                (NodeId(1), Signature(vec![5; 64])),
                (NodeId(3), Signature(vec![6; 64])),
            ],
        };
        let bytes = encode_certificate(&c);
        assert_eq!(decode_certificate(&bytes).unwrap(), c);
        for cut in 0..bytes.len() {
            assert!(decode_certificate(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn wal_records_round_trip() {
        let s = samples();
        let recs = vec![
            WalRecord::View { view: View(9), changing: true },
            WalRecord::Intent(s[1].message.clone()),
            WalRecord::Accepted(s[5].clone()),
            WalRecord::Stable(CheckpointProof { seq: SeqNo(0), state: d(0), signed: vec![] }),
        ];
        for r in recs {
            assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
        }
    }

    #[test]
    fn encoding_is_pinned() {
        // Golden bytes: a change here is a wire-format change and needs a version bump.
        let e = env(1, Message::Prepare(Vote { view: View(2), seq: SeqNo(3), digest: d(0xab) }));
        let mut want = vec![1, 0, 0, 0, 1, 64];
        want.extend_from_slice(&[1; 64]);
        want.push(1);
        want.extend_from_slice(&2u64.to_be_bytes());
        want.extend_from_slice(&3u64.to_be_bytes());
        want.extend_from_slice(&[0xab; 32]);
        assert_eq!(encode(&e), want);
    }

    #[test]
    fn rejects_wrong_version_trailing_bytes_and_huge_counts() {
        let mut b = encode(&samples()[0]);
        b[0] = 2;
        assert_eq!(decode(&b), Err(Error::Version(2)));
        let mut b = encode(&samples()[1]);
        b.push(0);
        assert_eq!(decode(&b), Err(Error::Trailing(1)));
        // A pre-prepare claiming 10,000 transactions but carrying none must fail before
        // allocating for them.
        let mut b = vec![VERSION, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&10_000u32.to_be_bytes());
        assert!(matches!(decode(&b), Err(Error::Truncated { .. })));
        let mut b = vec![VERSION, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&b), Err(Error::Length { .. })));
    }

    /// A frame is refused for its size only above FRAME_MAX: one of exactly FRAME_MAX bytes is
    /// read (and here refused for what it holds, its trailing bytes), one byte more is refused
    /// for its length before anything is read.
    #[test]
    fn the_frame_size_limit_is_inclusive() {
        let mut b = encode(&samples()[1]);
        let used = b.len();
        b.resize(FRAME_MAX, 0);
        assert_eq!(decode(&b), Err(Error::Trailing(FRAME_MAX - used)));
        b.push(0);
        assert_eq!(
            decode(&b),
            Err(Error::Length { what: "frame", len: FRAME_MAX as u64 + 1, max: FRAME_MAX as u64 })
        );
    }

    /// Nesting is bounded along every path an envelope can hold another (module docs: the
    /// decoder is bounded in memory and time): DEPTH_MAX envelopes deep is read, one more is
    /// refused — through new views, view changes' prepared proofs and their checkpoint proofs,
    /// and the entries' checkpoint.
    #[test]
    fn every_nesting_path_is_bounded_at_depth_max() {
        let leaf = env(9, Message::Heartbeat { view: View(1) });
        let proof = |signed: Vec<Envelope>| CheckpointProof { seq: SeqNo(1), state: d(1), signed };
        let vc = |checkpoint, prepared| ViewChange { view: View(2), checkpoint, prepared };
        type Wrap = Box<dyn Fn(Envelope) -> Message>;
        let l = leaf.clone();
        let paths: Vec<(&str, Wrap)> = vec![
            (
                "new view's view changes",
                Box::new(|e| {
                    Message::NewView(NewView {
                        view: View(2),
                        view_changes: vec![e],
                        pre_prepares: vec![],
                    })
                }),
            ),
            (
                "new view's pre-prepares",
                Box::new(|e| {
                    Message::NewView(NewView {
                        view: View(2),
                        view_changes: vec![],
                        pre_prepares: vec![e],
                    })
                }),
            ),
            (
                "prepared pre-prepare",
                Box::new(move |e| {
                    Message::ViewChange(vc(
                        proof(vec![]),
                        vec![PreparedProof { pre_prepare: e, prepares: vec![] }],
                    ))
                }),
            ),
            (
                "prepared prepares",
                Box::new(move |e| {
                    Message::ViewChange(vc(
                        proof(vec![]),
                        vec![PreparedProof { pre_prepare: l.clone(), prepares: vec![e] }],
                    ))
                }),
            ),
            (
                "view change's checkpoint",
                Box::new(move |e| Message::ViewChange(vc(proof(vec![e]), vec![]))),
            ),
            (
                "entries' checkpoint",
                Box::new(move |e| {
                    Message::Entries(Entries { checkpoint: Some(proof(vec![e])), entries: vec![] })
                }),
            ),
        ];
        for (name, wrap) in &paths {
            let mut e = leaf.clone();
            for _ in 0..DEPTH_MAX {
                e = env(0, wrap(e));
            }
            let bytes = encode(&e);
            assert_eq!(decode(&bytes).as_ref(), Ok(&e), "{name}: {DEPTH_MAX} deep");
            let deeper = env(0, wrap(e));
            assert_eq!(decode(&encode(&deeper)), Err(Error::Depth(DEPTH_MAX)), "{name}: one more");
        }
    }

    /// The decoder checks each count against the bytes left, given each item's smallest
    /// encoding (module docs): a message made only of smallest items — an entry with an empty
    /// batch and a certificate without signatures, a signature of no bytes, an unsigned
    /// heartbeat in a list — still decodes, at every list.
    #[test]
    fn lists_of_the_smallest_items_decode() {
        let tiny = Envelope {
            from: NodeId(1),
            message: Message::Heartbeat { view: View(0) },
            signature: Signature(vec![]),
        };
        let cert = |signatures| CommitCertificate {
            view: View(0),
            seq: SeqNo(1),
            block: d(1),
            signatures,
        };
        let entry = |signatures| CommittedEntry {
            batch: Batch { txs: vec![] },
            result: d(2),
            certificate: cert(signatures),
        };
        let proof = CheckpointProof { seq: SeqNo(0), state: d(3), signed: vec![tiny.clone()] };
        for m in [
            Message::Entries(Entries { checkpoint: None, entries: vec![entry(vec![])] }),
            Message::Entries(Entries {
                checkpoint: None,
                entries: vec![entry(vec![]), entry(vec![])],
            }),
            Message::Entries(Entries {
                checkpoint: None,
                entries: vec![entry(vec![(NodeId(1), Signature(vec![]))])],
            }),
            Message::NewView(NewView {
                view: View(1),
                view_changes: vec![tiny.clone()],
                pre_prepares: vec![tiny.clone(), tiny.clone()],
            }),
            Message::ViewChange(ViewChange {
                view: View(1),
                checkpoint: proof,
                prepared: vec![PreparedProof { pre_prepare: tiny, prepares: vec![] }],
            }),
        ] {
            let e = env(0, m);
            assert_eq!(decode(&encode(&e)), Ok(e.clone()), "{:?}", e.message);
        }
        let c = cert(vec![(NodeId(1), Signature(vec![])), (NodeId(2), Signature(vec![]))]);
        assert_eq!(decode_certificate(&encode_certificate(&c)), Ok(c));
    }

    /// A signature is at most SIGNATURE_MAX_LEN bytes: that many are read, one more is refused
    /// by its length. A count that promises more items than the bytes left reports exactly how
    /// many bytes are missing.
    #[test]
    fn signature_and_count_limits_are_exact() {
        let mut e = samples()[1].clone();
        e.signature = Signature(vec![7; SIGNATURE_MAX_LEN]);
        assert_eq!(decode(&encode(&e)), Ok(e.clone()));
        e.signature = Signature(vec![7; SIGNATURE_MAX_LEN + 1]);
        assert_eq!(
            decode(&encode(&e)),
            Err(Error::Length {
                what: "signature",
                len: SIGNATURE_MAX_LEN as u64 + 1,
                max: SIGNATURE_MAX_LEN as u64
            })
        );
        // A pre-prepare claiming 10 transactions (320 bytes) with 100 bytes left.
        let mut b = vec![VERSION, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&10u32.to_be_bytes());
        b.extend_from_slice(&[0; 100]);
        assert_eq!(decode(&b), Err(Error::Truncated { needed: 220 }));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut e = samples()[5].clone();
        for _ in 0..6 {
            e = env(
                0,
                Message::NewView(NewView {
                    view: View(1),
                    view_changes: vec![e],
                    pre_prepares: vec![],
                }),
            );
        }
        assert!(matches!(decode(&encode(&e)), Err(Error::Depth(_))));
    }

    /// A seeded xorshift so the test is reproducible without an RNG dependency.
    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn random_truncated_and_mutated_bytes_never_panic() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let frames: Vec<Vec<u8>> = samples().iter().map(encode).collect();
        for i in 0..20_000 {
            let mut b = frames[i % frames.len()].clone();
            match xorshift(&mut s) % 3 {
                0 => b.truncate((xorshift(&mut s) as usize) % (b.len() + 1)),
                1 => {
                    for _ in 0..1 + xorshift(&mut s) % 4 {
                        let at = (xorshift(&mut s) as usize) % b.len();
                        b[at] = xorshift(&mut s) as u8;
                    }
                }
                _ => {
                    let len = (xorshift(&mut s) % 200) as usize;
                    b = (0..len).map(|_| xorshift(&mut s) as u8).collect();
                    if !b.is_empty() {
                        b[0] = VERSION;
                    }
                }
            }
            // Whatever decodes re-encodes to the same bytes: the encoding is canonical, so a
            // signature over it cannot be replayed under a different parse.
            if let Ok(e) = decode(&b) {
                assert_eq!(encode(&e), b);
            }
            if let Ok(r) = decode_record(&b) {
                assert_eq!(encode_record(&r), b);
            }
        }
    }
}
