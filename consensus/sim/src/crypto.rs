//! Signing and verification for simulated replicas: real SM2/SM3 through `vpbox-sm`, or a
//! stub for long sweeps and throughput runs.
//!
//! The stub is the simulator's only fake: a "signature" is a keyed SM3 tag under a per-node
//! secret that only the verifier and that node know, so a Byzantine node still cannot forge
//! another's vote, but checking costs one hash instead of an SM2 verification. Digests are
//! always real SM3.

use std::collections::HashMap;
use std::rc::Rc;

use vpbox_consensus::{Digest, PublicKey, Signature, Verification, Verifier};
use vpbox_sm::{Domain, Signer, SoftwareSigner, sm2};

/// Which signature scheme a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoKind {
    /// Real SM2 signatures (≈ 0.3–0.5 ms per verification).
    Sm2,
    /// Keyed SM3 tags standing in for signatures (stated as stubbed in every report).
    Stub,
}

enum Keys {
    Sm2 { signers: Vec<SoftwareSigner>, by_key: HashMap<Vec<u8>, sm2::PublicKey> },
    Stub { secrets: Vec<[u8; 32]>, by_key: HashMap<Vec<u8>, [u8; 32]> },
}

/// Every node's keys; cheap to clone.
#[derive(Clone)]
pub struct Crypto {
    keys: Rc<Keys>,
}

impl Crypto {
    /// Keys for `n` nodes, derived from `seed` (SM2 keys are fixed per index so that real
    /// crypto runs need no OS randomness for key generation).
    pub fn new(kind: CryptoKind, n: usize, seed: u64) -> anyhow::Result<Self> {
        let keys = match kind {
            CryptoKind::Sm2 => {
                let mut signers = Vec::new();
                let mut by_key = HashMap::new();
                for i in 0..n {
                    let mut b = vpbox_sm::sm3::hash(format!("sim-key-{seed}-{i}")).0;
                    b[0] &= 0x7f;
                    b[0] |= 1;
                    let sk = sm2::SecretKey::from_bytes(&b)?;
                    by_key.insert(
                        sk.public_key().to_sec1_uncompressed().to_vec(),
                        sk.public_key().clone(),
                    );
                    signers.push(SoftwareSigner::new(sk));
                }
                Keys::Sm2 { signers, by_key }
            }
            CryptoKind::Stub => {
                let secrets: Vec<[u8; 32]> =
                    (0..n).map(|i| vpbox_sm::sm3::hash(format!("stub-{seed}-{i}")).0).collect();
                let by_key = secrets.iter().map(|s| (stub_public(s), *s)).collect();
                Keys::Stub { secrets, by_key }
            }
        };
        Ok(Self { keys: Rc::new(keys) })
    }

    /// Node `i`'s public key.
    pub fn public_key(&self, i: usize) -> PublicKey {
        match &*self.keys {
            Keys::Sm2 { signers, .. } => {
                PublicKey(signers[i].public_key().to_sec1_uncompressed().to_vec())
            }
            Keys::Stub { secrets, .. } => PublicKey(stub_public(&secrets[i])),
        }
    }

    /// Node `i` signs `payload` in the consensus domain.
    pub fn sign(&self, i: usize, payload: &[u8]) -> Signature {
        match &*self.keys {
            Keys::Sm2 { signers, .. } => match signers[i].sign(Domain::CONSENSUS, payload) {
                Ok(s) => Signature(s.to_raw().to_vec()),
                Err(_) => Signature(vec![]),
            },
            Keys::Stub { secrets, .. } => Signature(stub_tag(&secrets[i], payload)),
        }
    }
}

fn stub_public(secret: &[u8; 32]) -> Vec<u8> {
    let mut b = b"stub-public".to_vec();
    b.extend_from_slice(secret);
    vpbox_sm::sm3::hash(b).0.to_vec()
}

fn stub_tag(secret: &[u8; 32], payload: &[u8]) -> Vec<u8> {
    let mut h = vpbox_sm::sm3::Sm3::new();
    h.update(secret);
    h.update(payload);
    h.finalize().0.to_vec()
}

impl Verifier for Crypto {
    fn digest(&self, bytes: &[u8]) -> Digest {
        Digest(vpbox_sm::sm3::hash(bytes).0)
    }

    fn verify(&self, key: &PublicKey, payload: &[u8], sig: &Signature) -> Verification {
        let ok = match &*self.keys {
            Keys::Sm2 { by_key, .. } => {
                let Some(pk) = by_key.get(&key.0) else {
                    return Verification::Invalid;
                };
                match sm2::Signature::from_raw(&sig.0) {
                    Ok(s) => pk.verify_in(Domain::CONSENSUS, payload, &s).is_valid(),
                    Err(_) => false,
                }
            }
            Keys::Stub { by_key, .. } => {
                let Some(secret) = by_key.get(&key.0) else {
                    return Verification::Invalid;
                };
                stub_tag(secret, payload) == sig.0
            }
        };
        if ok { Verification::Valid } else { Verification::Invalid }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemes_accept_own_and_reject_others_signatures() {
        for kind in [CryptoKind::Stub, CryptoKind::Sm2] {
            let c = Crypto::new(kind, 2, 1).unwrap();
            let s = c.sign(0, b"vote");
            assert_eq!(c.verify(&c.public_key(0), b"vote", &s), Verification::Valid);
            assert_eq!(c.verify(&c.public_key(1), b"vote", &s), Verification::Invalid);
            assert_eq!(c.verify(&c.public_key(0), b"vote!", &s), Verification::Invalid);
        }
    }
}
