//! The signatures this node has verified: a transaction arriving again — from another peer, as
//! the answer to a body request, or resubmitted by its client — costs no second SM2
//! verification.
//!
//! An entry is the SM3 of the transaction's hash (of its body), its signature and the key it
//! verified under: the same body with another signature is another entry, and a transaction is
//! taken as verified only under that same key (a submitter who re-enrolled with a new key has
//! its old signatures checked again). Only successes are kept (failures are the
//! attacker's to choose). Bounded: [`Verified::CAPACITY`] entries, the oldest forgotten first,
//! about 6 MiB. Sans-IO and shared between the RPC and peer threads behind a mutex held only
//! for a look-up or an insert, never across a verification.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use vpbox_ledger::tx::Tx;
use vpbox_sm::sm2::PublicKey;
use vpbox_sm::sm3::{Digest, Sm3};

#[derive(Default)]
struct Inner {
    set: HashSet<Digest>,
    order: VecDeque<Digest>,
}

/// Transactions verified, with the keys they verified under.
pub struct Verified {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for Verified {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl Verified {
    /// Entries kept: a day-end burst's worth of gossiped transactions.
    pub const CAPACITY: usize = 1 << 16;

    /// A memory of at most `capacity` entries (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity: capacity.max(1) }
    }

    fn entry(tx: &Tx, key: &PublicKey) -> Digest {
        let mut h = Sm3::new();
        h.update(tx.hash().0);
        h.update(tx.signature.to_raw());
        h.update(key.to_sec1_uncompressed());
        h.finalize()
    }

    /// Whether `tx`'s signature verifies under `key`: remembered, or verified now (and then
    /// remembered if it does).
    pub fn verify(&self, tx: &Tx, key: &PublicKey) -> bool {
        let entry = Self::entry(tx, key);
        if self.inner.lock().is_ok_and(|i| i.set.contains(&entry)) {
            return true;
        }
        if !tx.verify(key).is_valid() {
            return false;
        }
        if let Ok(mut i) = self.inner.lock()
            && i.set.insert(entry)
        {
            i.order.push_back(entry);
            if i.order.len() > self.capacity
                && let Some(old) = i.order.pop_front()
            {
                i.set.remove(&old);
            }
        }
        true
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.set.len())
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpbox_ledger::tx::{Payload, TxBody};
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    fn tx(signer: &SoftwareSigner, n: u8) -> Tx {
        let body = TxBody {
            submitter: signer.public_key().fingerprint(),
            nonce: u64::from(n),
            timestamp_ms: 1,
            payload: Payload::AnchorPut { key: [n; 32], value: [n; 32] },
        };
        body.sign(signer).unwrap()
    }

    #[test]
    fn a_success_is_remembered_under_its_key_only_and_the_oldest_goes_first() {
        let (a, b) = (
            SoftwareSigner::new(SecretKey::generate().unwrap()),
            SoftwareSigner::new(SecretKey::generate().unwrap()),
        );
        let v = Verified::with_capacity(2);
        let t1 = tx(&a, 1);
        assert!(!v.verify(&t1, b.public_key()), "another key: refused");
        assert!(v.is_empty(), "a failure is not kept");
        assert!(v.verify(&t1, a.public_key()));
        assert!(v.verify(&t1, a.public_key()), "again");
        assert_eq!(v.len(), 1);
        assert!(!v.verify(&t1, b.public_key()), "remembered under a's key, not b's");
        // A forged copy (other bytes, same signature) is another transaction; the same body
        // with another transaction's signature is not taken as verified either.
        let mut forged = t1.clone();
        forged.body.nonce += 1;
        assert!(!v.verify(&forged, a.public_key()));
        let mut resigned = t1.clone();
        resigned.signature = tx(&a, 9).signature;
        assert!(!v.verify(&resigned, a.public_key()), "the signature is part of the entry");
        for n in 2..=3 {
            assert!(v.verify(&tx(&a, n), a.public_key()));
        }
        assert_eq!(v.len(), 2, "bounded");
        let inner = v.inner.lock().unwrap();
        assert!(!inner.set.contains(&Verified::entry(&t1, a.public_key())), "the oldest forgotten");
    }
}
