//! The state transfer client: when the engine asks for the certified state up to a checkpoint
//! (`Effect::FetchState`), the node asks its peers for the blocks in turn (`WantBlocks`, one
//! peer at a time, again every [`RETRY`](crate::node) until answered) and assembles what comes
//! back. Sans-IO: time, the peers, the checks and the bodies already known are inputs; the
//! driver executes and commits each block this returns.
//!
//! A block comes whole, or in parts that each repeat it with some of its transactions (a block
//! whose transactions do not fit one frame); it is checked once (certificate, block digest —
//! the driver's `check`), staged, and returned when every body is here. A request names how
//! many of the staged block's transactions are already here (`skip`), so they are not sent
//! again.
//!
//! **Pipelined.** An answer is one frame ([`crate::blocks`]). When its last block is whole,
//! the next range (the blocks after it) is asked for before the answer's blocks are executed
//! ([`Transfer::prefetch`]), so that a peer reads and sends the next blocks while this node
//! executes and commits these: a catch-up runs at the pace of execution, not of execution plus
//! a round trip per answer. When it ends in part of a block, the rest is asked for as soon as
//! the answer is taken in. At most one request is outstanding; a lost answer is asked for
//! again after the retry period, as any, and an answer that brings nothing new (a late copy)
//! does not count as one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use vpbox_consensus::{Digest as CDigest, NodeId, SeqNo};
use vpbox_ledger::block::Block;
use vpbox_ledger::tx::Tx;
use vpbox_sm::sm3::Digest;

use crate::peer::PeerMsg;

/// A block of a state transfer whose transactions arrive in several answers.
struct Staged {
    block: Block,
    txs: HashMap<Digest, Tx>,
}

/// A state transfer in progress.
pub struct Transfer {
    /// The checkpoint to reach.
    pub seq: SeqNo,
    /// Its state digest.
    pub state: CDigest,
    asked: Option<Instant>,
    next_peer: usize,
    staged: Option<Staged>,
    /// The height after which the outstanding prefetch asked for blocks.
    prefetched: Option<u64>,
}

/// What a received block part came to.
pub enum Part {
    /// A whole block with every transaction, checked, for the driver to execute and commit.
    Ready(Box<Block>, Vec<Tx>),
    /// Staged: more parts are needed.
    Staged,
    /// Nothing new: not the next block, or only parts of the staged block already here
    /// (ignored).
    Skipped,
    /// Refused (failed `check`): the transfer asks again.
    Refused(String),
}

impl Transfer {
    /// A transfer to `seq` with state `state`.
    pub fn new(seq: SeqNo, state: CDigest) -> Self {
        Self { seq, state, asked: None, next_peer: 0, staged: None, prefetched: None }
    }

    /// The request for the blocks after `after` (the last block of an answer just received,
    /// whole, not yet executed), to the next of `peers`, unless it reaches past the target or
    /// a block above `after` waits for its parts. (A staged block at or below `after` is
    /// completed by this answer: an answer's blocks follow each other, and only its last may
    /// be a part.) Counts as the request of [`Self::request`]'s period.
    pub fn prefetch(
        &mut self,
        now: Instant,
        peers: &[NodeId],
        after: u64,
    ) -> Option<(NodeId, PeerMsg)> {
        let waits = self.staged.as_ref().is_some_and(|st| st.block.header.height > after);
        if peers.is_empty() || after >= self.seq.0 || waits {
            return None;
        }
        self.asked = Some(now);
        self.prefetched = Some(after);
        let to = peers[self.next_peer % peers.len()];
        self.next_peer += 1;
        Some((to, PeerMsg::WantBlocks { after, upto: self.seq.0, skip: 0 }))
    }

    /// Counts the outstanding request as asked at `now` (its answer is awaited from then).
    pub fn asked_at(&mut self, now: Instant) {
        self.asked = Some(now);
    }

    /// Whether a prefetch already asked for the blocks after `height`.
    pub fn prefetched(&self, height: u64) -> bool {
        self.prefetched == Some(height)
    }

    /// The request to send at `now`, if one is due: to the next of `peers` in turn, for the
    /// blocks above `height`.
    pub fn request(
        &mut self,
        now: Instant,
        retry: Duration,
        peers: &[NodeId],
        height: u64,
    ) -> Option<(NodeId, PeerMsg)> {
        if peers.is_empty() || self.asked.is_some_and(|t| now.saturating_duration_since(t) < retry)
        {
            return None;
        }
        self.asked = Some(now);
        let to = peers[self.next_peer % peers.len()];
        self.next_peer += 1;
        // The staged block's transactions already here, in its order, are not sent again.
        let skip = self.staged.as_ref().map_or(0, |st| {
            st.block.tx_hashes.iter().take_while(|h| st.txs.contains_key(*h)).count()
        });
        let skip = u32::try_from(skip).unwrap_or(u32::MAX);
        Some((to, PeerMsg::WantBlocks { after: height, upto: self.seq.0, skip }))
    }

    /// Asks again at the next [`Self::request`] (an answer was used up).
    pub fn ask_now(&mut self) {
        self.asked = None;
    }

    /// Whether a block waits for more of its parts.
    pub fn is_staged(&self) -> bool {
        self.staged.is_some()
    }

    /// Takes one received part (`block`, decoded, with some of its `tx_bytes`) when the ledger
    /// is at `height`. `check` verifies a new block's certificate; `known` finds a body this
    /// node already holds.
    pub fn part(
        &mut self,
        block: Block,
        tx_bytes: &[Vec<u8>],
        height: u64,
        check: impl Fn(&Block) -> Result<(), String>,
        known: impl Fn(&Digest) -> Option<Tx>,
    ) -> Part {
        if block.header.height != height + 1 {
            return Part::Skipped;
        }
        let new = self.staged.as_ref().is_none_or(|st| st.block.header != block.header);
        if new {
            if let Err(why) = check(&block) {
                self.staged = None;
                return Part::Refused(format!("block {}: {why}", block.header.height));
            }
            self.staged = Some(Staged { block, txs: HashMap::new() });
        }
        let Some(mut st) = self.staged.take() else { return Part::Staged };
        let wanted: HashSet<&Digest> = st.block.tx_hashes.iter().collect();
        let mut fresh = Vec::new();
        for b in tx_bytes {
            if let Ok(t) = Tx::decode(b) {
                let h = t.hash();
                if wanted.contains(&h) && !st.txs.contains_key(&h) {
                    fresh.push((h, t));
                }
            }
        }
        drop(wanted);
        let nothing_new = !new && fresh.is_empty();
        st.txs.extend(fresh);
        let mut txs = Vec::with_capacity(st.block.tx_hashes.len());
        for h in &st.block.tx_hashes {
            match st.txs.get(h).cloned().or_else(|| known(h)) {
                Some(t) => txs.push(t),
                None => break,
            }
        }
        if txs.len() < st.block.tx_hashes.len() {
            self.staged = Some(st);
            return if nothing_new { Part::Skipped } else { Part::Staged };
        }
        Part::Ready(Box::new(st.block), txs)
    }
}

#[cfg(test)]
mod tests {
    use vpbox_ledger::tx::{Payload, TxBody};
    use vpbox_sm::sm3::hash;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;

    fn txs(n: u64) -> Vec<Tx> {
        let s = SoftwareSigner::new(vpbox_sm::sm2::SecretKey::generate().unwrap());
        (0..n)
            .map(|i| {
                TxBody {
                    submitter: s.public_key().fingerprint(),
                    nonce: i,
                    timestamp_ms: 1,
                    payload: Payload::AnchorPut { key: [i as u8; 32], value: [0; 32] },
                }
                .sign(&s)
                .unwrap()
            })
            .collect()
    }

    fn block(height: u64, txs: &[Tx]) -> Block {
        let mut b = Block::genesis(hash(b"transfer test"), 0);
        b.header.height = height;
        b.tx_hashes = txs.iter().map(Tx::hash).collect();
        b.header.tx_count = txs.len() as u32;
        b
    }

    #[test]
    fn a_block_in_parts_is_checked_once_and_ready_when_whole() {
        let t = txs(3);
        let b = block(5, &t);
        let checks = std::cell::Cell::new(0);
        let check = |_: &Block| {
            checks.set(checks.get() + 1);
            Ok(())
        };
        let mut tr = Transfer::new(SeqNo(8), CDigest([0; 32]));
        let none = |_: &Digest| None;
        assert!(matches!(tr.part(b.clone(), &[t[0].encode()], 4, check, none), Part::Staged));
        // A late copy of the same part brings nothing new.
        assert!(matches!(tr.part(b.clone(), &[t[0].encode()], 4, check, none), Part::Skipped));
        assert!(tr.is_staged());
        // The next request skips the one transaction already here.
        #[allow(clippy::disallowed_methods)] // an origin; only offsets matter
        let now = Instant::now();
        let peers = [NodeId(2), NodeId(3)];
        let Some((to, PeerMsg::WantBlocks { after, upto, skip })) =
            tr.request(now, Duration::from_millis(500), &peers, 4)
        else {
            panic!("a request is due");
        };
        assert_eq!((to, after, upto, skip), (NodeId(2), 4, 8, 1));
        assert!(tr.request(now, Duration::from_millis(500), &peers, 4).is_none(), "not again yet");
        let later = now + Duration::from_millis(500);
        let (to, _) = tr.request(later, Duration::from_millis(500), &peers, 4).unwrap();
        assert_eq!(to, NodeId(3), "the peers are asked in turn");
        // The last body is one this node already holds.
        let known = |h: &Digest| (*h == t[2].hash()).then(|| t[2].clone());
        match tr.part(b, &[t[1].encode()], 4, check, known) {
            Part::Ready(block, got) => {
                assert_eq!(block.header.height, 5);
                assert_eq!(got, t);
            }
            _ => panic!("whole"),
        }
        assert_eq!(checks.get(), 1, "checked once");
        assert!(!tr.is_staged());
    }

    #[test]
    fn a_prefetch_waits_only_for_a_staged_block_above_the_answer() {
        let t = txs(2);
        let b = block(5, &t);
        let mut tr = Transfer::new(SeqNo(20), CDigest([0; 32]));
        #[allow(clippy::disallowed_methods)] // an origin; only offsets matter
        let now = Instant::now();
        let peers = [NodeId(2)];
        assert!(matches!(tr.part(b, &[t[0].encode()], 4, |_| Ok(()), |_| None), Part::Staged));
        // An answer that ends before block 5 is whole: its rest is asked for, not what follows.
        assert!(tr.prefetch(now, &peers, 4).is_none());
        // One that ends at block 5 or later, whole, completes it: what follows is asked for.
        let Some((_, PeerMsg::WantBlocks { after, skip, .. })) = tr.prefetch(now, &peers, 7) else {
            panic!("a prefetch");
        };
        assert_eq!((after, skip), (7, 0));
        assert!(tr.prefetched(7));
        assert!(tr.prefetch(now, &peers, 20).is_none(), "nothing past the target");
    }

    #[test]
    fn a_block_that_fails_its_check_or_is_not_next_is_not_staged() {
        let t = txs(1);
        let mut tr = Transfer::new(SeqNo(8), CDigest([0; 32]));
        let b = block(5, &t);
        let refuse = |_: &Block| Err("bad certificate".to_string());
        assert!(matches!(tr.part(b.clone(), &[], 4, refuse, |_| None), Part::Refused(_)));
        assert!(!tr.is_staged());
        assert!(matches!(tr.part(b, &[], 6, |_| Ok(()), |_| None), Part::Skipped));
    }
}
