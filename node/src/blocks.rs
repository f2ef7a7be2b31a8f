//! The block server: answers peers' block requests (state transfer) from the committed
//! ledger, on a thread of its own, never on the driver's.
//!
//! Each peer has at most one request waiting or being served; another from it meanwhile is
//! dropped and counted (`LinkStats::busy`): it asks again on its retry timer. An answer is
//! **one frame**: at most [`BLOCKS_PER_REPLY`] blocks and about [`FRAME_BUDGET`] bytes. A
//! block whose transactions do not fit is sent in parts, one per answer, each repeating the
//! block with the next of its transactions; a request's `skip` says how many of the first
//! block's transactions the requester already has, so a block larger than one frame still
//! arrives whole over several answers.
//!
//! One frame per answer lets the requester see where an answer ends: it asks for what comes
//! next when a frame has arrived ([`crate::transfer`]). An answer in several frames had it
//! ask after the first, and the blocks of the later frames then came again from another peer
//! (a catch-up at ten million anchors fetched most blocks three times).
//!
//! Between versions nothing on the wire changed, and either side still works with the other:
//! a node of this version asking one of the older asks again after each of its frames (some
//! blocks come twice, and the copies are skipped), and an older node asking this one gets the
//! next part of a block larger than a frame once per retry period (500 ms).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};

use vpbox_consensus::NodeId;
use vpbox_ledger::Ledger;

use crate::peer::{FRAME_BUDGET, LinkStats, Links, PeerMsg};

/// Most blocks in one answer.
pub const BLOCKS_PER_REPLY: u64 = 16;
/// Requests waiting for the server, from all peers.
const WAITING_MAX: usize = 64;

/// A block request: the peer, its height, the highest block it wants, and how many of the
/// next block's transactions it has.
type Request = (NodeId, u64, u64, u32);

/// The handle the links use to hand requests to the server.
#[derive(Clone)]
pub struct BlockServer {
    jobs: SyncSender<Request>,
    busy: Arc<Mutex<HashSet<NodeId>>>,
    stats: Arc<LinkStats>,
}

impl BlockServer {
    /// Starts the server's thread.
    pub fn start(
        ledger: Arc<RwLock<Ledger>>,
        links: Links,
        stats: Arc<LinkStats>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel(WAITING_MAX);
        let busy = Arc::new(Mutex::new(HashSet::new()));
        let b = Arc::clone(&busy);
        std::thread::Builder::new()
            .name("block-server".into())
            .spawn(move || serve(&ledger, &links, &b, rx))?;
        Ok(Self { jobs, busy, stats })
    }

    /// Queues `from`'s request, unless it has one already (or the server is swamped).
    pub fn request(&self, from: NodeId, after: u64, upto: u64, skip: u32) {
        let Ok(mut busy) = self.busy.lock() else { return };
        if !busy.insert(from) {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        drop(busy);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.jobs.try_send((from, after, upto, skip))
        {
            self.stats.busy.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut busy) = self.busy.lock() {
                busy.remove(&from);
            }
        }
    }
}

fn serve(
    ledger: &RwLock<Ledger>,
    links: &Links,
    busy: &Mutex<HashSet<NodeId>>,
    rx: Receiver<Request>,
) {
    for (from, after, upto, skip) in rx {
        let frame = ledger.read().ok().and_then(|l| answer(&l, after, upto, skip as usize));
        if let Some(f) = &frame {
            links.send(from, f);
        }
        if let Ok(mut b) = busy.lock() {
            b.remove(&from);
        }
    }
}

/// The one frame that answers a request for blocks `after + 1 ..= upto`, the first without
/// its first `skip` transactions: at most [`BLOCKS_PER_REPLY`] blocks and about
/// [`FRAME_BUDGET`] bytes, and always at least one transaction of the next block when it has
/// any left, so every answer moves the requester on. `None` when there is nothing to send.
pub fn answer(ledger: &Ledger, after: u64, upto: u64, skip: usize) -> Option<PeerMsg> {
    let mut items: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    let mut bytes = 0usize;
    let last = upto.min(after.saturating_add(BLOCKS_PER_REPLY));
    'blocks: for h in after.saturating_add(1)..=last {
        let Ok(Some(block)) = ledger.block(h) else { break };
        let encoded = block.encode();
        let first = if h == after + 1 { skip.min(block.tx_hashes.len()) } else { 0 };
        if !items.is_empty() && bytes + encoded.len() + 8 > FRAME_BUDGET {
            break;
        }
        bytes += encoded.len() + 8;
        let mut item = (encoded, Vec::new());
        for t in &block.tx_hashes[first..] {
            let Ok(Some((_, _, tx))) = ledger.transaction(t) else { break 'blocks };
            let tx = tx.encode();
            // The first transaction of the answer goes whatever its size (one is at most
            // `TX_MAX`, far below `FRAME_MAX`).
            if bytes + tx.len() + 4 > FRAME_BUDGET && !(items.is_empty() && item.1.is_empty()) {
                break;
            }
            bytes += tx.len() + 4;
            item.1.push(tx);
        }
        let whole = first + item.1.len() == block.tx_hashes.len();
        if !whole && item.1.is_empty() {
            // Not one of its transactions fits after the blocks before it: the next answer.
            break;
        }
        items.push(item);
        if !whole {
            break;
        }
    }
    (!items.is_empty()).then_some(PeerMsg::Blocks(items))
}

#[cfg(test)]
mod tests {
    use vpbox_ledger::block::Block;
    use vpbox_ledger::tx::{BATCH_MAX, Payload, TxBody};
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;
    use crate::peer::FRAME_MAX;

    /// A ledger whose blocks 1 and 21 hold ten full batches each (6.4 MB, more than a frame)
    /// and blocks 2..=20 one anchor each.
    fn ledger(dir: &std::path::Path) -> Ledger {
        let mut l = Ledger::open(dir).unwrap();
        l.init_genesis(&Block::genesis(vpbox_sm::sm3::hash(b"blocks test"), 0)).unwrap();
        let s = SoftwareSigner::new(vpbox_sm::sm2::SecretKey::generate().unwrap());
        let tx = |nonce: u64, payload| {
            TxBody { submitter: s.public_key().fingerprint(), nonce, timestamp_ms: 1, payload }
                .sign(&s)
                .unwrap()
        };
        let big = |from: u64| -> Vec<_> {
            (from..from + 10)
                .map(|n| {
                    let pairs = (0..BATCH_MAX).map(|i| {
                        let mut k = [0u8; 32];
                        k[..8].copy_from_slice(&n.to_be_bytes());
                        k[8..12].copy_from_slice(&i.to_be_bytes());
                        (k, [1; 32])
                    });
                    tx(n, Payload::AnchorPutBatch(pairs.collect()))
                })
                .collect()
        };
        let e = l.execute(&[], big(0)).unwrap();
        l.commit(&e, b"cert").unwrap();
        for h in 2..=20u64 {
            let e = l
                .execute(
                    &[],
                    vec![tx(h + 100, Payload::AnchorPut { key: [h as u8; 32], value: [2; 32] })],
                )
                .unwrap();
            l.commit(&e, b"cert").unwrap();
        }
        let e = l.execute(&[], big(10)).unwrap();
        l.commit(&e, b"cert").unwrap();
        l
    }

    fn items(m: Option<PeerMsg>) -> Vec<(Block, usize)> {
        let Some(PeerMsg::Blocks(items)) = m else { panic!("a Blocks frame") };
        items.iter().map(|(b, txs)| (Block::decode(b).unwrap(), txs.len())).collect()
    }

    #[test]
    fn an_answer_is_one_frame_and_a_block_larger_than_one_comes_in_parts_over_answers() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        // The first answer: only part of block 1, as much as fits a frame.
        let first = answer(&l, 0, 20, 0).unwrap();
        assert!(first.encode().len() <= FRAME_MAX);
        assert!(first.encode().len() <= FRAME_BUDGET + 64, "about one frame's budget");
        let got = items(Some(first));
        assert_eq!(got.len(), 1, "a block sent in part ends the answer");
        let (b1, sent) = (&got[0].0, got[0].1);
        assert_eq!(b1.header.height, 1);
        assert!((1..10).contains(&sent), "part of block 1: {sent} of 10");
        // The next, skipping what came: the rest of block 1, then whole blocks up to 16 in all.
        let got = items(answer(&l, 0, 20, sent));
        assert_eq!(got[0].0.header.height, 1);
        assert_eq!(sent + got[0].1, 10, "the rest of block 1, nothing twice");
        let heights: Vec<u64> = got.iter().map(|(b, _)| b.header.height).collect();
        assert_eq!(heights, (1..=16).collect::<Vec<_>>(), "at most BLOCKS_PER_REPLY");
        assert!(got[1..].iter().all(|(b, n)| *n == b.tx_hashes.len()), "whole blocks");
        // Up to the target, and nothing past it.
        let heights: Vec<u64> =
            items(answer(&l, 16, 18, 0)).iter().map(|(b, _)| b.header.height).collect();
        assert_eq!(heights, vec![17, 18]);
        // A large block after small ones: the small ones whole, then as much of it as fits.
        let got = items(answer(&l, 16, 21, 0));
        let heights: Vec<u64> = got.iter().map(|(b, _)| b.header.height).collect();
        assert_eq!(heights, (17..=21).collect::<Vec<_>>());
        assert!((1..10).contains(&got[4].1), "part of block 21: {} of 10", got[4].1);
        // Everything of the first block already here: its header alone, then the next ones.
        let got = items(answer(&l, 0, 3, 10));
        let got: Vec<(u64, usize)> = got.iter().map(|(b, n)| (b.header.height, *n)).collect();
        assert_eq!(got, vec![(1, 0), (2, 1), (3, 1)]);
        assert!(answer(&l, 21, 30, 0).is_none(), "nothing above the tip");
    }
}
