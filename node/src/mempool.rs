//! The transactions this node holds for consensus: admitted (durable in the intake) and not yet
//! committed, with when each arrived. Sans-IO: time is an input.
//!
//! Re-gossip: every [`REGOSSIP`], the oldest transactions that have waited more than
//! [`STALE`] (at most [`REGOSSIP_MAX`], in the intake's arrival order) are sent to the peers
//! again. A node that was down when a transaction was gossiped learns of it this way, so its
//! request timer runs too and a silent primary is replaced by a quorum, not suspected by one
//! lonely replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vpbox_ledger::tx::Tx;
use vpbox_sm::sm3::Digest;

/// Most transactions waiting for consensus before new ones are refused as busy.
pub const POOL_MAX: usize = 200_000;
/// How often old transactions are gossiped again.
pub const REGOSSIP: Duration = Duration::from_secs(2);
/// How long a transaction waits before it counts as old.
pub const STALE: Duration = Duration::from_secs(1);
/// Most transactions gossiped again at once.
pub const REGOSSIP_MAX: usize = 1000;

/// The pool.
pub struct Mempool {
    txs: HashMap<Digest, (Tx, Arc<Vec<u8>>, Instant)>,
    regossiped: Instant,
}

impl Mempool {
    /// Empty, as of `now`.
    pub fn new(now: Instant) -> Self {
        Self { txs: HashMap::new(), regossiped: now }
    }

    /// Holds `tx` (its encoding `bytes`), arrived at `now`.
    pub fn insert(&mut self, h: Digest, tx: Tx, bytes: Arc<Vec<u8>>, now: Instant) {
        self.txs.insert(h, (tx, bytes, now));
    }

    /// Forgets a committed transaction.
    pub fn remove(&mut self, h: &Digest) {
        self.txs.remove(h);
    }

    /// When `h` arrived, if it is held.
    pub fn arrived(&self, h: &Digest) -> Option<Instant> {
        self.txs.get(h).map(|(_, _, at)| *at)
    }

    /// Whether `h` is held.
    pub fn contains(&self, h: &Digest) -> bool {
        self.txs.contains_key(h)
    }

    /// The transaction `h`.
    pub fn tx(&self, h: &Digest) -> Option<&Tx> {
        self.txs.get(h).map(|(t, _, _)| t)
    }

    /// The encoding of `h`.
    pub fn bytes(&self, h: &Digest) -> Option<&Arc<Vec<u8>>> {
        self.txs.get(h).map(|(_, b, _)| b)
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Whether `more` new ones fit.
    pub fn has_room(&self, more: usize) -> bool {
        self.txs.len() + more < POOL_MAX
    }

    /// If re-gossip is due at `now`, the encodings to send again, taken from `order` (the
    /// intake's arrival order).
    pub fn regossip<'a>(
        &mut self,
        now: Instant,
        order: impl Iterator<Item = &'a Digest>,
    ) -> Option<Vec<Vec<u8>>> {
        if now.saturating_duration_since(self.regossiped) < REGOSSIP {
            return None;
        }
        self.regossiped = now;
        Some(
            order
                .filter_map(|h| self.txs.get(h))
                .filter(|(_, _, at)| now.saturating_duration_since(*at) >= STALE)
                .take(REGOSSIP_MAX)
                .map(|(_, b, _)| b.as_ref().clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use vpbox_ledger::tx::{Payload, TxBody};
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;

    #[test]
    fn old_transactions_are_gossiped_again_every_two_seconds_in_arrival_order() {
        #[allow(clippy::disallowed_methods)] // an origin; only offsets matter
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let tx = |n: u64| {
            let body = TxBody {
                submitter: s.public_key().fingerprint(),
                nonce: n,
                timestamp_ms: 1,
                payload: Payload::AnchorPut { key: [n as u8; 32], value: [0; 32] },
            };
            body.sign(&s).unwrap()
        };
        let mut pool = Mempool::new(t0);
        // Signatures are hedged (randomized): each transaction is made once.
        let txs: Vec<Tx> = (1..=3).map(tx).collect();
        let order: Vec<Digest> = txs.iter().map(Tx::hash).collect();
        for (t, at) in txs.iter().zip([0, 500, 1_600]) {
            pool.insert(t.hash(), t.clone(), Arc::new(t.encode()), ms(at));
        }
        assert_eq!(pool.regossip(ms(1_999), order.iter()), None, "not due yet");
        let again = pool.regossip(ms(2_000), order.iter().rev()).unwrap();
        assert_eq!(
            again,
            vec![txs[1].encode(), txs[0].encode()],
            "the old ones, in the given order"
        );
        assert_eq!(pool.regossip(ms(3_000), order.iter()), None, "two seconds apart");
        pool.remove(&order[0]);
        let again = pool.regossip(ms(4_000), order.iter()).unwrap();
        assert_eq!(again, vec![txs[1].encode(), txs[2].encode()]);
        assert!(pool.has_room(POOL_MAX - 4) && !pool.has_room(POOL_MAX - 2));
    }
}
