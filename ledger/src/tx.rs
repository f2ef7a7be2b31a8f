//! The canonical transaction encoding.
//!
//! ```text
//! tx      = body signature:[64]            (SM2 r‖s over the body, domain VPBOX/tx/v1)
//! body    = version:u8=1 kind:u8 submitter:[32] nonce:u64 timestamp_ms:u64 payload
//! payload = kind 1 AnchorPut       key:[32] value:[32]
//!         | kind 2 AnchorPutBatch  count:u32 (1..=BATCH_MAX) (key:[32] value:[32])*count
//!         | kind 3 Config          len:u32 (≤ CONFIG_MAX) bytes
//!         | kind 4 Enroll          len:u32 (≤ CERT_MAX) certificate DER ‖ issuing CAs' DER
//!         | kind 5 Crl             len:u32 (≤ CRL_MAX) CRL DER ‖ its issuing CA's chain DER
//! ```
//! `submitter` is the SM3 fingerprint of the submitter's SPKI. The transaction hash is SM3 of
//! the body: the signature is not part of the identity, so a resubmission with a fresh signature
//! is still the same transaction and executes at most once.

use std::sync::OnceLock;

use vpbox_sm::sm2::{PublicKey, Signature};
use vpbox_sm::sm3::{Digest, hash};
use vpbox_sm::{Domain, Signer, Verification};

use crate::Error;
use crate::wire::Reader;

/// Encoding version.
pub const VERSION: u8 = 1;
/// Most pairs in one batch (the day-end path): ~640 KiB of payload.
pub const BATCH_MAX: u32 = 10_000;
/// Largest configuration payload.
pub const CONFIG_MAX: u32 = 64 * 1024;
/// Largest certificate in an enrollment.
pub const CERT_MAX: u32 = 16 * 1024;
/// Largest CRL (about 10,000 revoked serials).
pub const CRL_MAX: u32 = 512 * 1024;
/// Largest encoded transaction.
pub const TX_MAX: usize = 2 + 32 + 16 + 4 + (BATCH_MAX as usize) * 64 + 64;

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Anchor one slip: `put(key, value)`.
    AnchorPut {
        /// The anchor key.
        key: [u8; 32],
        /// The anchor value.
        value: [u8; 32],
    },
    /// Anchor many slips under one signature; each pair gets its own result.
    AnchorPutBatch(Vec<([u8; 32], [u8; 32])>),
    /// A configuration change (governance), opaque to the ledger.
    Config(Vec<u8>),
    /// Enrolls the submitter's certificate (DER, followed by the DER of its issuing CAs when
    /// its bank issues from one), signed with the certified key: from this block on, its
    /// transactions are admitted while the certificate is.
    Enroll(Vec<u8>),
    /// Publishes a bank's CRL (DER, signed by the bank's root or an issuing CA; an issuing
    /// CA's CRL is followed by that CA's certificate chain): from this block on, every node
    /// refuses the revoked certificates' transactions.
    Crl(Vec<u8>),
}

/// The signed part of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBody {
    /// SM3 fingerprint of the submitter's SPKI.
    pub submitter: Digest,
    /// Client-chosen; with the timestamp it makes each transaction distinct.
    pub nonce: u64,
    /// The client's clock; nodes reject transactions outside their acceptance window.
    pub timestamp_ms: u64,
    /// What it does.
    pub payload: Payload,
}

/// A signed transaction. Its hash (SM3 of the encoded body) is taken at most once: when it is
/// signed, or at its first [`Self::hash`]. A node hashed each transaction five to seven times
/// on its way (the verified-signature memo, the RPC's answer, the intake, the pool,
/// execution), each time encoding the body again: for a day-end batch of 10,000 pairs, 640 KB
/// each time. The fields are private so that the hash kept always is the body's; a decoder
/// that never asks (the proxy counting a batch's pairs) never hashes.
#[derive(Debug, Clone)]
pub struct Tx {
    body: TxBody,
    signature: Signature,
    hash: OnceLock<Digest>,
}

/// Equal when the body and signature are: whether the hash was taken yet is not part of it.
impl PartialEq for Tx {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.signature == other.signature
    }
}

impl Eq for Tx {}

impl TxBody {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.payload_len());
        out.push(VERSION);
        out.push(match self.payload {
            Payload::AnchorPut { .. } => 1,
            Payload::AnchorPutBatch(_) => 2,
            Payload::Config(_) => 3,
            Payload::Enroll(_) => 4,
            Payload::Crl(_) => 5,
        });
        out.extend_from_slice(self.submitter.as_bytes());
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        match &self.payload {
            Payload::AnchorPut { key, value } => {
                out.extend_from_slice(key);
                out.extend_from_slice(value);
            }
            Payload::AnchorPutBatch(pairs) => {
                out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
                for (k, v) in pairs {
                    out.extend_from_slice(k);
                    out.extend_from_slice(v);
                }
            }
            Payload::Config(bytes) | Payload::Enroll(bytes) | Payload::Crl(bytes) => {
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
        out
    }

    fn payload_len(&self) -> usize {
        match &self.payload {
            Payload::AnchorPut { .. } => 64,
            Payload::AnchorPutBatch(p) => 4 + 64 * p.len(),
            Payload::Config(b) | Payload::Enroll(b) | Payload::Crl(b) => 4 + b.len(),
        }
    }

    /// The transaction hash: SM3 of the encoded body.
    pub fn hash(&self) -> Digest {
        hash(self.encode())
    }

    /// Signs the body.
    pub fn sign(self, signer: &dyn Signer) -> Result<Tx, vpbox_sm::Error> {
        let encoded = self.encode();
        let signature = signer.sign(Domain::TX, &encoded)?;
        Ok(Tx { hash: OnceLock::from(hash(&encoded)), body: self, signature })
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        if r.u8()? != VERSION {
            return Err(r.fail("unsupported version"));
        }
        let kind = r.u8()?;
        let submitter = Digest(r.array()?);
        let nonce = r.u64()?;
        let timestamp_ms = r.u64()?;
        let payload = match kind {
            1 => Payload::AnchorPut { key: r.array()?, value: r.array()? },
            2 => {
                let count = r.u32()?;
                if count == 0 || count > BATCH_MAX {
                    return Err(r.fail("batch size out of range"));
                }
                // Bounded by BATCH_MAX, and the bytes must be there before we allocate.
                if r.rest_len() < count as usize * 64 {
                    return Err(r.fail("truncated"));
                }
                let mut pairs = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    pairs.push((r.array()?, r.array()?));
                }
                Payload::AnchorPutBatch(pairs)
            }
            3 => Payload::Config(bytes(r, CONFIG_MAX, "configuration payload too large")?),
            4 => Payload::Enroll(bytes(r, CERT_MAX, "certificate too large")?),
            5 => Payload::Crl(bytes(r, CRL_MAX, "CRL too large")?),
            _ => return Err(r.fail("unknown kind")),
        };
        Ok(Self { submitter, nonce, timestamp_ms, payload })
    }
}

/// A length-prefixed byte string of at most `max` bytes.
fn bytes(r: &mut Reader<'_>, max: u32, too_large: &'static str) -> Result<Vec<u8>, Error> {
    let len = r.u32()?;
    if len > max {
        return Err(r.fail(too_large));
    }
    Ok(r.take(len as usize)?.to_vec())
}

impl Tx {
    /// The transaction of `body` and `signature`, which is not checked ([`Self::verify`]).
    pub fn new(body: TxBody, signature: Signature) -> Self {
        Self { body, signature, hash: OnceLock::new() }
    }

    /// The signed body.
    pub fn body(&self) -> &TxBody {
        &self.body
    }

    /// The signed body, taken.
    pub fn into_body(self) -> TxBody {
        self.body
    }

    /// The SM2 signature over the encoded body in [`Domain::TX`].
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The canonical encoding: body ‖ signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body.encode();
        out.extend_from_slice(&self.signature.to_raw());
        out
    }

    /// Decodes untrusted bytes: bounded, strict (no trailing bytes), never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > TX_MAX {
            return Err(Error::Malformed { what: "transaction", why: "too large" });
        }
        let mut r = Reader::new(bytes, "transaction");
        let body = TxBody::decode(&mut r)?;
        let signature = Signature::from_raw(r.take(64)?).map_err(|_| Error::SignatureOutOfRange)?;
        r.finish()?;
        Ok(Self::new(body, signature))
    }

    /// The transaction hash (of the body), taken at the first call.
    pub fn hash(&self) -> Digest {
        *self.hash.get_or_init(|| self.body.hash())
    }

    /// Checks the signature against `submitter`, whose fingerprint must be the body's.
    pub fn verify(&self, submitter: &PublicKey) -> Verification {
        if submitter.fingerprint() != self.body.submitter {
            return Verification::Invalid;
        }
        submitter.verify_in(Domain::TX, &self.body.encode(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vpbox_sm::SoftwareSigner;
    use vpbox_sm::sm2::SecretKey;

    use super::*;

    fn signer() -> SoftwareSigner {
        SoftwareSigner::new(SecretKey::generate().unwrap())
    }

    fn body(s: &SoftwareSigner, payload: Payload) -> TxBody {
        TxBody {
            submitter: s.public_key().fingerprint(),
            nonce: 7,
            timestamp_ms: 1_700_000_000_000,
            payload,
        }
    }

    #[test]
    fn round_trip_and_signature() {
        let s = signer();
        for payload in [
            Payload::AnchorPut { key: [1; 32], value: [2; 32] },
            Payload::AnchorPutBatch(vec![([3; 32], [4; 32]), ([5; 32], [6; 32])]),
            Payload::Config(b"add node 5".to_vec()),
        ] {
            let tx = body(&s, payload).sign(&s).unwrap();
            let bytes = tx.encode();
            let back = Tx::decode(&bytes).unwrap();
            assert_eq!(back, tx);
            assert_eq!(back.hash(), tx.hash(), "taken at decoding's first ask, kept at signing");
            assert_eq!(back.hash(), hash(&bytes[..bytes.len() - 64]), "the body's bytes'");
            assert_eq!(back.verify(s.public_key()), Verification::Valid);
            for cut in 0..bytes.len() {
                assert!(Tx::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn tampering_and_wrong_submitters_are_invalid() {
        let s = signer();
        let tx = body(&s, Payload::AnchorPut { key: [1; 32], value: [2; 32] }).sign(&s).unwrap();
        let mut changed = tx.body().clone();
        changed.payload = Payload::AnchorPut { key: [1; 32], value: [3; 32] };
        let bad = Tx::new(changed, *tx.signature());
        assert_ne!(bad.hash(), tx.hash());
        assert_eq!(bad.verify(s.public_key()), Verification::Invalid);
        let other = signer();
        assert_eq!(tx.verify(other.public_key()), Verification::Invalid);
        // A transaction signed for another purpose does not pass.
        let forged =
            Tx::new(tx.body().clone(), s.sign(Domain::CONSENSUS, &tx.body().encode()).unwrap());
        assert_eq!(forged.verify(s.public_key()), Verification::Invalid);
    }

    #[test]
    fn a_signature_out_of_range_is_its_own_error() {
        let s = signer();
        let tx = body(&s, Payload::AnchorPut { key: [1; 32], value: [2; 32] }).sign(&s).unwrap();
        let bytes = tx.encode();
        for sig in [[0u8; 64], [0xff; 64]] {
            let mut bad = bytes[..bytes.len() - 64].to_vec();
            bad.extend_from_slice(&sig);
            assert!(matches!(Tx::decode(&bad), Err(Error::SignatureOutOfRange)));
        }
    }

    #[test]
    fn transactions_are_equal_by_body_and_signature_whether_hashed_yet_or_not() {
        let s = signer();
        let b = body(&s, Payload::AnchorPut { key: [1; 32], value: [2; 32] });
        let a = b.clone().sign(&s).unwrap(); // hashed when signed
        let decoded = Tx::decode(&a.encode()).unwrap(); // not hashed yet
        assert_eq!(decoded, a);
        let resigned = b.clone().sign(&s).unwrap();
        assert_ne!(resigned, a, "same body, another signature");
        let mut other = b;
        other.nonce += 1;
        assert_ne!(Tx::new(other, *a.signature()), a, "same signature, another body");
        assert_eq!(decoded.hash(), a.hash());
    }

    #[test]
    fn the_hash_ignores_the_signature() {
        let s = signer();
        let b = body(&s, Payload::AnchorPut { key: [1; 32], value: [2; 32] });
        let a = b.clone().sign(&s).unwrap();
        let c = b.sign(&s).unwrap();
        assert_ne!(a.signature, c.signature);
        assert_eq!(a.hash(), c.hash());
    }

    #[test]
    fn batch_bounds_are_enforced_before_allocation() {
        let mut bytes = vec![VERSION, 2];
        bytes.extend_from_slice(&[0; 48]);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Tx::decode(&bytes),
            Err(Error::Malformed { why: "batch size out of range", .. })
        ));
        let mut bytes = vec![VERSION, 2];
        bytes.extend_from_slice(&[0; 48]);
        bytes.extend_from_slice(&BATCH_MAX.to_be_bytes());
        assert!(matches!(Tx::decode(&bytes), Err(Error::Malformed { why: "truncated", .. })));
    }

    /// The layout in the module docs, written out byte by byte from the spec rather than with
    /// `encode`: version 1, the kind codes 1–5, big-endian integers, u32 length prefixes.
    #[test]
    fn every_kind_encodes_as_the_documented_layout_and_round_trips() {
        let s = signer();
        let fp = s.public_key().fingerprint();
        let head = |kind: u8| {
            let mut h = vec![1, kind];
            h.extend_from_slice(fp.as_bytes());
            h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
            h.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
            h
        };
        let prefixed = |kind: u8, b: &[u8]| {
            let mut h = head(kind);
            h.extend_from_slice(&(b.len() as u32).to_be_bytes());
            h.extend_from_slice(b);
            h
        };
        let cases = [
            (
                Payload::AnchorPut { key: [1; 32], value: [2; 32] },
                [head(1), [1; 32].to_vec(), [2; 32].to_vec()].concat(),
            ),
            (
                Payload::AnchorPutBatch(vec![([3; 32], [4; 32]), ([5; 32], [6; 32])]),
                [
                    head(2),
                    vec![0, 0, 0, 2],
                    [3; 32].to_vec(),
                    [4; 32].to_vec(),
                    [5; 32].to_vec(),
                    [6; 32].to_vec(),
                ]
                .concat(),
            ),
            (Payload::Config(b"add node 5".to_vec()), prefixed(3, b"add node 5")),
            (Payload::Enroll(b"certificate DER".to_vec()), prefixed(4, b"certificate DER")),
            (Payload::Crl(b"CRL DER".to_vec()), prefixed(5, b"CRL DER")),
            (Payload::Config(Vec::new()), prefixed(3, b"")),
        ];
        for (payload, expected) in cases {
            let b = body(&s, payload);
            assert_eq!(b.encode(), expected, "{:?}", b.payload);
            assert_eq!(b.hash(), hash(&expected), "the hash is SM3 of the body");
            let tx = b.sign(&s).unwrap();
            let bytes = tx.encode();
            assert_eq!(bytes[..expected.len()], expected[..]);
            assert_eq!(bytes[expected.len()..], tx.signature.to_raw()[..]);
            let back = Tx::decode(&bytes).unwrap();
            assert_eq!(back, tx);
            assert_eq!(back.verify(s.public_key()), Verification::Valid);
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                Tx::decode(&longer),
                Err(Error::Malformed { why: "trailing bytes", .. })
            ));
        }
        // Unknown versions and kinds.
        let tx = body(&s, Payload::Config(vec![1])).sign(&s).unwrap().encode();
        for (at, byte, why) in [
            (0, 0, "unsupported version"),
            (0, 2, "unsupported version"),
            (1, 0, "unknown kind"),
            (1, 6, "unknown kind"),
        ] {
            let mut bad = tx.clone();
            bad[at] = byte;
            assert!(
                matches!(Tx::decode(&bad), Err(Error::Malformed { why: w, .. }) if w == why),
                "{at} {byte}"
            );
        }
    }

    /// The bounds as docs/jsonrpc.md publishes them to client implementers: a batch of 1 to
    /// 10,000 pairs, a configuration of at most 64 KiB, an enrollment of 16 KiB, a CRL of
    /// 512 KiB; the largest transaction is the full batch, 640,118 bytes. Each limit is
    /// accepted at the limit and refused one above it.
    #[test]
    fn each_size_limit_is_accepted_at_the_limit_and_refused_above_it() {
        let s = signer();
        assert_eq!(BATCH_MAX, 10_000);
        let full: Vec<_> = (0..BATCH_MAX)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                (k, [9; 32])
            })
            .collect();
        let tx = body(&s, Payload::AnchorPutBatch(full.clone())).sign(&s).unwrap();
        let bytes = tx.encode();
        assert_eq!(bytes.len(), 640_118);
        assert_eq!(TX_MAX, 640_118);
        assert_eq!(Tx::decode(&bytes).unwrap(), tx);
        let mut over = bytes.clone();
        over.push(0);
        assert!(matches!(Tx::decode(&over), Err(Error::Malformed { why: "too large", .. })));
        // One pair more, or none, is refused by the count, before the pairs are read.
        let mut count_over = bytes[..50].to_vec();
        count_over.extend_from_slice(&(BATCH_MAX + 1).to_be_bytes());
        count_over.extend_from_slice(&bytes[54..]);
        assert!(matches!(
            Tx::decode(&count_over),
            Err(Error::Malformed { why: "batch size out of range", .. })
        ));
        let empty = body(&s, Payload::AnchorPutBatch(vec![])).sign(&s).unwrap().encode();
        assert!(matches!(
            Tx::decode(&empty),
            Err(Error::Malformed { why: "batch size out of range", .. })
        ));
        let one = body(&s, Payload::AnchorPutBatch(full[..1].to_vec())).sign(&s).unwrap();
        assert_eq!(Tx::decode(&one.encode()).unwrap(), one);

        type Make = fn(Vec<u8>) -> Payload;
        let limits: [(Make, u32, &str); 3] = [
            (Payload::Config, 65_536, "configuration payload too large"),
            (Payload::Enroll, 16_384, "certificate too large"),
            (Payload::Crl, 524_288, "CRL too large"),
        ];
        for (make, max, why) in limits {
            let at = body(&s, make(vec![7; max as usize])).sign(&s).unwrap();
            assert_eq!(Tx::decode(&at.encode()).unwrap(), at, "{why}");
            let above = body(&s, make(vec![7; max as usize + 1])).sign(&s).unwrap();
            assert!(
                matches!(Tx::decode(&above.encode()), Err(Error::Malformed { why: w, .. }) if w == why),
                "{why}"
            );
        }
    }

    #[test]
    fn a_signature_binds_the_submitter_fingerprint() {
        let s = signer();
        let other = signer();
        // Signed by the right key but naming another submitter: invalid for both keys.
        let mut b = body(&s, Payload::AnchorPut { key: [1; 32], value: [2; 32] });
        b.submitter = other.public_key().fingerprint();
        let tx = b.sign(&s).unwrap();
        assert_eq!(tx.verify(s.public_key()), Verification::Invalid);
        assert_eq!(tx.verify(other.public_key()), Verification::Invalid);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Tx::decode(&bytes);
        }
    }
}
