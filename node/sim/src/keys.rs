//! The nodes' consensus keys in a simulated world, and the check of their signatures.
//!
//! Every node has a real SM2 key (the genesis names its public key, as a real one does). A
//! signature is, by default, a keyed SM3 tag under a per-node secret that only the world's
//! signer and verifier know — a compromised node still cannot forge another's vote, but a
//! check costs one hash instead of an SM2 verification, which lets the sweep run hundreds of
//! seeds in CI. With `sm2`, signatures are real SM2 in the consensus domain, checked by the
//! node's own [`Sm2Verifier`].

use std::rc::Rc;

use vpbox_consensus::{Digest as CDigest, PublicKey as CKey, Signature, Verification, Verifier};
use vpbox_node::node::Sm2Verifier;
use vpbox_sm::sm2::{PublicKey, SecretKey};
use vpbox_sm::sm3::{Sm3, hash};
use vpbox_sm::{Domain, Signer, SoftwareSigner};

/// Every node's key.
pub struct Keys {
    signers: Vec<SoftwareSigner>,
    secrets: Vec<[u8; 32]>,
    sec1: Vec<Vec<u8>>,
    seed: u64,
    sm2: Option<Sm2Verifier>,
}

fn secret(label: &str) -> [u8; 32] {
    let mut b = hash(label).0;
    // Below the curve order, never zero.
    b[0] &= 0x7f;
    b[0] |= 1;
    b
}

impl Keys {
    /// Keys for `n` nodes, derived from `seed`.
    pub fn new(n: usize, seed: u64, sm2: bool) -> anyhow::Result<Self> {
        let mut signers = Vec::new();
        for i in 0..n {
            // Fixed per index: key generation costs no randomness and no time per seed.
            signers.push(SoftwareSigner::new(SecretKey::from_bytes(&secret(&format!(
                "node-sim-key-{i}"
            )))?));
        }
        let secrets = (0..n).map(|i| hash(format!("node-sim-tag-{seed}-{i}")).0).collect();
        let sec1 = signers.iter().map(|s| s.public_key().to_sec1_uncompressed().to_vec()).collect();
        Ok(Self { signers, secrets, sec1, seed, sm2: sm2.then(Sm2Verifier::default) })
    }

    /// Node `i`'s public key.
    pub fn public_key(&self, i: usize) -> PublicKey {
        self.signers[i].public_key().clone()
    }

    /// The client's key.
    pub fn client_secret(&self) -> [u8; 32] {
        secret(&format!("node-sim-client-{}", self.seed % 16))
    }

    /// Node `i` signs a consensus signing payload.
    pub fn sign(&self, i: usize, payload: &[u8]) -> Signature {
        if self.sm2.is_some() {
            return match self.signers[i].sign(Domain::CONSENSUS, &hash(payload).0) {
                Ok(s) => Signature(s.to_raw().to_vec()),
                Err(_) => Signature(Vec::new()),
            };
        }
        Signature(tag(&self.secrets[i], payload).to_vec())
    }
}

fn tag(secret: &[u8; 32], payload: &[u8]) -> [u8; 32] {
    let mut h = Sm3::new();
    h.update(b"vpbox-node-sim tag\0");
    h.update(secret);
    h.update(payload);
    h.finalize().0
}

/// Checks the world's signatures (keyed tags, or SM2 through the node's own verifier).
#[derive(Clone)]
pub struct SimVerifier(pub Rc<Keys>);

impl Verifier for SimVerifier {
    fn digest(&self, bytes: &[u8]) -> CDigest {
        CDigest(hash(bytes).0)
    }

    fn verify(&self, key: &CKey, payload: &[u8], sig: &Signature) -> Verification {
        if let Some(v) = &self.0.sm2 {
            return v.verify(key, payload, sig);
        }
        let Some(i) = self.0.sec1.iter().position(|k| *k == key.0) else {
            return Verification::Invalid;
        };
        if tag(&self.0.secrets[i], payload).as_slice() == sig.0.as_slice() {
            Verification::Valid
        } else {
            Verification::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_tag_verifies_under_its_key_only() {
        for sm2 in [false, true] {
            let keys = Rc::new(Keys::new(3, 9, sm2).unwrap());
            let v = SimVerifier(Rc::clone(&keys));
            let s = keys.sign(1, b"vote");
            let key = |i: usize| CKey(keys.sec1[i].clone());
            assert_eq!(v.verify(&key(1), b"vote", &s), Verification::Valid);
            assert_eq!(v.verify(&key(0), b"vote", &s), Verification::Invalid);
            assert_eq!(v.verify(&key(1), b"vote!", &s), Verification::Invalid);
        }
    }
}
