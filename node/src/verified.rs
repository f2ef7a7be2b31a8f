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
//!
//! It also remembers each submitter's key ([`Verified::submitter_key`]): a submitter is named
//! by its key's fingerprint (SM3 of its certificate's SPKI, checked at enrollment), so the key
//! enrolled under a name is the same whichever certificate carries it, and an enrollment is
//! never removed (revocation is the admission's business, decided apart). Looking it up meant
//! reading the certificate from the ledger and parsing it for every transaction: a twentieth
//! of a node's time on the signed path. At most [`Verified::KEYS`] keys, forgotten all at once
//! when full.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use vpbox_ledger::tx::Tx;
use vpbox_sm::sm2::PublicKey;
use vpbox_sm::sm3::{Digest, Sm3};

#[derive(Default)]
struct Inner {
    set: HashSet<Digest>,
    order: VecDeque<Digest>,
}

/// Transactions verified, with the keys they verified under; and submitters' keys.
pub struct Verified {
    inner: Mutex<Inner>,
    capacity: usize,
    keys: Mutex<HashMap<Digest, PublicKey>>,
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
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Submitters' keys kept: every POSP and admin of a large consortium.
    pub const KEYS: usize = 1 << 16;

    /// The key `submitter` enrolled: remembered, or `lookup`'s answer (remembered when it is a
    /// key; an error, such as a submitter not enrolled yet, is not).
    pub fn submitter_key(
        &self,
        submitter: &Digest,
        lookup: impl FnOnce() -> Result<PublicKey, String>,
    ) -> Result<PublicKey, String> {
        if let Some(key) = self.keys.lock().ok().and_then(|k| k.get(submitter).cloned()) {
            return Ok(key);
        }
        let key = lookup()?;
        if let Ok(mut k) = self.keys.lock() {
            if k.len() >= Self::KEYS {
                k.clear();
            }
            k.insert(*submitter, key.clone());
        }
        Ok(key)
    }

    fn entry(tx: &Tx, key: &PublicKey) -> Digest {
        let mut h = Sm3::new();
        h.update(tx.hash().0);
        h.update(tx.signature().to_raw());
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
    fn a_submitters_key_is_looked_up_once_and_a_failed_look_up_again() {
        let a = SoftwareSigner::new(SecretKey::generate().unwrap());
        let (who, v) = (a.public_key().fingerprint(), Verified::default());
        let calls = std::cell::Cell::new(0);
        let lookup = || {
            calls.set(calls.get() + 1);
            Ok(a.public_key().clone())
        };
        let missing = || Err::<PublicKey, _>("not enrolled".to_string());
        assert_eq!(v.submitter_key(&who, missing).unwrap_err(), "not enrolled");
        let key = v.submitter_key(&who, lookup).unwrap();
        assert_eq!(key.to_sec1_uncompressed(), a.public_key().to_sec1_uncompressed());
        assert!(v.submitter_key(&who, lookup).is_ok());
        assert_eq!(calls.get(), 1, "remembered after the first success");
        // Full: forgotten all at once, so the next look-up of `who` asks again.
        for n in 1..Verified::KEYS as u32 {
            let other = vpbox_sm::sm3::hash(n.to_be_bytes());
            v.submitter_key(&other, || Ok(a.public_key().clone())).unwrap();
        }
        assert!(v.submitter_key(&who, lookup).is_ok());
        assert_eq!(calls.get(), 1, "still there with the memory full");
        v.submitter_key(&vpbox_sm::sm3::hash(b"one more"), lookup).unwrap();
        v.submitter_key(&who, lookup).unwrap();
        assert_eq!(calls.get(), 3, "cleared by the entry past the bound");
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
        let mut body = t1.body().clone();
        body.nonce += 1;
        let forged = Tx::new(body, *t1.signature());
        assert!(!v.verify(&forged, a.public_key()));
        let resigned = Tx::new(t1.body().clone(), *tx(&a, 9).signature());
        assert!(!v.verify(&resigned, a.public_key()), "the signature is part of the entry");
        for n in 2..=3 {
            assert!(v.verify(&tx(&a, n), a.public_key()));
        }
        assert_eq!(v.len(), 2, "bounded");
        let inner = v.inner.lock().unwrap();
        assert!(!inner.set.contains(&Verified::entry(&t1, a.public_key())), "the oldest forgotten");
    }
}
