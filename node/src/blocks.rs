//! The block server: answers peers' block requests (state transfer) from the committed
//! ledger, on a thread of its own, never on the driver's.
//!
//! Each peer has at most one request waiting or being served; another from it meanwhile is
//! dropped and counted (`LinkStats::busy`): it asks again on its retry timer. An answer is at
//! most [`BLOCKS_PER_REPLY`] blocks and [`REPLY_BYTES`], in frames of at most
//! [`FRAME_BUDGET`]: a block whose transactions do not fit one frame is sent in parts, each
//! repeating the block with the next of its transactions, and a request's `skip` says how many
//! of the first block's transactions the requester already has, so a block larger than one
//! answer still arrives whole over several.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};

use vpbox_consensus::NodeId;
use vpbox_ledger::Ledger;

use crate::peer::{FRAME_BUDGET, LinkStats, Links, PeerMsg};

/// Most blocks in one answer.
pub const BLOCKS_PER_REPLY: u64 = 16;
/// Most bytes in one answer (a quarter of a peer's outbound queue).
pub const REPLY_BYTES: usize = 16 << 20;
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
        let frames = match ledger.read() {
            Ok(l) => answer(&l, after, upto, skip as usize),
            Err(_) => Vec::new(),
        };
        for f in &frames {
            links.send(from, f);
        }
        if let Ok(mut b) = busy.lock() {
            b.remove(&from);
        }
    }
}

/// The frames that answer a request for blocks `after + 1 ..= upto`, the first without its
/// first `skip` transactions.
pub fn answer(ledger: &Ledger, after: u64, upto: u64, skip: usize) -> Vec<PeerMsg> {
    let mut frames = Vec::new();
    let mut items: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    let mut frame_bytes = 0usize;
    let mut total = 0usize;
    let last = upto.min(after.saturating_add(BLOCKS_PER_REPLY));
    'blocks: for h in after.saturating_add(1)..=last {
        let Ok(Some(block)) = ledger.block(h) else { break };
        let encoded = block.encode();
        let first = if h == after + 1 { skip.min(block.tx_hashes.len()) } else { 0 };
        let mut item = (encoded.clone(), Vec::new());
        let mut sent = first;
        frame_bytes += encoded.len() + 8;
        for t in &block.tx_hashes[first..] {
            let Ok(Some((_, _, tx))) = ledger.transaction(t) else { break 'blocks };
            let tx = tx.encode();
            if total + frame_bytes + tx.len() > REPLY_BYTES {
                break;
            }
            if frame_bytes + tx.len() + 4 > FRAME_BUDGET && !(items.is_empty() && item.1.is_empty())
            {
                // This frame is full: the rest of the block goes in the next, with the block.
                items.push(std::mem::replace(&mut item, (encoded.clone(), Vec::new())));
                total += frame_bytes;
                frames.push(PeerMsg::Blocks(std::mem::take(&mut items)));
                frame_bytes = encoded.len() + 8;
            }
            frame_bytes += tx.len() + 4;
            item.1.push(tx);
            sent += 1;
        }
        items.push(item);
        if sent < block.tx_hashes.len() || total + frame_bytes >= REPLY_BYTES {
            break;
        }
    }
    if !items.is_empty() {
        frames.push(PeerMsg::Blocks(items));
    }
    frames
}
