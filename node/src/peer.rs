//! Links between nodes: the framed protocol peers speak (the same bytes will later run inside
//! TLS through the proxy), and the thin I/O shells that carry it over Unix sockets (or, for
//! development, 127.0.0.1).
//!
//! ```text
//! frame = len:u32be body                          (len ≤ FRAME_MAX)
//! body  = version:u8=1 kind:u8 …
//!   kind 1 Consensus   a consensus envelope (vpbox_consensus::wire)
//!   kind 2 Txs         count:u32 (len:u32 tx)*     client transactions, gossiped
//!   kind 3 WantTxs     from:u32 count:u32 hash:[32]*
//!   kind 4 WantBlocks  from:u32 after:u64 upto:u64
//!   kind 5 Blocks      count:u32 (len:u32 block txcount:u32 (len:u32 tx)*)*
//! ```
//!
//! The link is not trusted: consensus envelopes are SM2-signed by their sender, transactions by
//! their submitter, and blocks carry commit certificates; the receiver checks all of them.
//! A link that cannot deliver drops messages (consensus re-sends on its timers) rather than
//! queue without bound.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vpbox_consensus::NodeId;
use vpbox_sm::sm3::Digest;

use crate::genesis::Address;

/// Longest frame.
pub const FRAME_MAX: usize = 64 << 20;
/// Most items in one list.
const LIST_MAX: usize = 100_000;
const VERSION: u8 = 1;
/// Frames queued for one peer before new ones are dropped.
const QUEUE_MAX: usize = 8192;
/// Inbound connections served at once.
const INBOUND_MAX: usize = 64;

/// What peers say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMsg {
    /// A consensus envelope, encoded.
    Consensus(Vec<u8>),
    /// Client transactions, encoded.
    Txs(Vec<Vec<u8>>),
    /// "Send me these transactions."
    WantTxs {
        /// The requester.
        from: NodeId,
        /// The transactions.
        hashes: Vec<Digest>,
    },
    /// "Send me blocks `after + 1 ..= upto`."
    WantBlocks {
        /// The requester.
        from: NodeId,
        /// The requester's height.
        after: u64,
        /// The highest wanted.
        upto: u64,
    },
    /// Committed blocks (with certificates) and their transactions.
    Blocks(Vec<(Vec<u8>, Vec<Vec<u8>>)>),
}

/// A malformed frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed peer frame: {0}")]
pub struct FrameError(&'static str);

impl PeerMsg {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = vec![VERSION];
        let put = |w: &mut Vec<u8>, b: &[u8]| {
            w.extend_from_slice(&(b.len() as u32).to_be_bytes());
            w.extend_from_slice(b);
        };
        match self {
            Self::Consensus(b) => {
                w.push(1);
                w.extend_from_slice(b);
            }
            Self::Txs(txs) => {
                w.push(2);
                w.extend_from_slice(&(txs.len() as u32).to_be_bytes());
                for t in txs {
                    put(&mut w, t);
                }
            }
            Self::WantTxs { from, hashes } => {
                w.push(3);
                w.extend_from_slice(&from.0.to_be_bytes());
                w.extend_from_slice(&(hashes.len() as u32).to_be_bytes());
                for h in hashes {
                    w.extend_from_slice(h.as_bytes());
                }
            }
            Self::WantBlocks { from, after, upto } => {
                w.push(4);
                w.extend_from_slice(&from.0.to_be_bytes());
                w.extend_from_slice(&after.to_be_bytes());
                w.extend_from_slice(&upto.to_be_bytes());
            }
            Self::Blocks(blocks) => {
                w.push(5);
                w.extend_from_slice(&(blocks.len() as u32).to_be_bytes());
                for (b, txs) in blocks {
                    put(&mut w, b);
                    w.extend_from_slice(&(txs.len() as u32).to_be_bytes());
                    for t in txs {
                        put(&mut w, t);
                    }
                }
            }
        }
        w
    }

    /// Decodes an untrusted frame body: bounded, never panics.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let mut r = Cursor(body);
        if r.take(1)? != [VERSION] {
            return Err(FrameError("unsupported version"));
        }
        let msg = match r.take(1)?[0] {
            1 => Self::Consensus(r.rest().to_vec()),
            2 => Self::Txs(r.blobs()?),
            3 => {
                let from = NodeId(r.u32()?);
                let n = r.count(32)?;
                let mut hashes = Vec::with_capacity(n);
                for _ in 0..n {
                    hashes.push(Digest(r.take(32)?.try_into().map_err(|_| FrameError("hash"))?));
                }
                Self::WantTxs { from, hashes }
            }
            4 => Self::WantBlocks { from: NodeId(r.u32()?), after: r.u64()?, upto: r.u64()? },
            5 => {
                let n = r.count(8)?;
                let mut blocks = Vec::with_capacity(n);
                for _ in 0..n {
                    let b = r.blob()?.to_vec();
                    blocks.push((b, r.blobs()?));
                }
                Self::Blocks(blocks)
            }
            _ => return Err(FrameError("unknown kind")),
        };
        if !r.0.is_empty() {
            return Err(FrameError("trailing bytes"));
        }
        Ok(msg)
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| FrameError("u32"))?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().map_err(|_| FrameError("u64"))?))
    }
    /// A count of items of at least `item_min` bytes each, checked against what remains.
    fn count(&mut self, item_min: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n > LIST_MAX || n.saturating_mul(item_min) > self.0.len() {
            return Err(FrameError("count out of range"));
        }
        Ok(n)
    }
    fn blob(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn blobs(&mut self) -> Result<Vec<Vec<u8>>, FrameError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.blob().map(<[u8]>::to_vec)).collect()
    }
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(body)
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_MAX {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

/// A queue of encoded frames for one peer's sender thread.
type Queue = SyncSender<Arc<Vec<u8>>>;

/// Outbound links to every peer: one thread and one bounded queue each. The set changes when
/// governance adds or removes nodes ([`Links::set`]).
#[derive(Clone)]
pub struct Links {
    peers: Arc<Mutex<Vec<(NodeId, Address, Queue)>>>,
}

fn start_link(id: NodeId, addr: Address) -> Option<(NodeId, Address, Queue)> {
    let (tx, rx) = sync_channel(QUEUE_MAX);
    let a = addr.clone();
    std::thread::Builder::new()
        .name(format!("link-{}", id.0))
        .spawn(move || link(a, rx))
        .map(|_| (id, addr, tx))
        .ok()
}

impl Links {
    /// Starts a link to each of `peers`.
    pub fn start(peers: Vec<(NodeId, Address)>) -> Self {
        let links = Self { peers: Arc::new(Mutex::new(Vec::new())) };
        links.set(peers);
        links
    }

    /// Makes `peers` the set: starts links to new peers (or moved ones), ends links to peers
    /// no longer in it (their thread ends when its queue's sender is dropped).
    pub fn set(&self, peers: Vec<(NodeId, Address)>) {
        let Ok(mut current) = self.peers.lock() else { return };
        current.retain(|(id, addr, _)| peers.iter().any(|(i, a)| i == id && a == addr));
        for (id, addr) in peers {
            if !current.iter().any(|(i, _, _)| *i == id) {
                current.extend(start_link(id, addr));
            }
        }
    }

    /// Sends to one peer (dropped if its queue is full).
    pub fn send(&self, to: NodeId, msg: &PeerMsg) {
        let frame = Arc::new(msg.encode());
        let Ok(peers) = self.peers.lock() else { return };
        if let Some((_, _, q)) = peers.iter().find(|(id, _, _)| *id == to) {
            offer(q, frame);
        }
    }

    /// Sends to every peer.
    pub fn broadcast(&self, msg: &PeerMsg) {
        let frame = Arc::new(msg.encode());
        let Ok(peers) = self.peers.lock() else { return };
        for (_, _, q) in peers.iter() {
            offer(q, Arc::clone(&frame));
        }
    }
}

fn offer(q: &Queue, frame: Arc<Vec<u8>>) {
    match q.try_send(frame) {
        Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
    }
}

fn connect(addr: &Address) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match addr {
        Address::Unix(p) => Box::new(BufWriter::new(UnixStream::connect(p)?)),
        Address::Tcp(a) => {
            let s = TcpStream::connect(a)?;
            s.set_nodelay(true)?;
            Box::new(BufWriter::new(s))
        }
    })
}

/// One peer's sender: connects lazily, reconnects after a failure at most every 200 ms, drops
/// what it cannot deliver.
fn link(addr: Address, rx: Receiver<Arc<Vec<u8>>>) {
    let mut stream: Option<Box<dyn Write + Send>> = None;
    let mut last_try = Instant::now() - Duration::from_secs(1);
    while let Ok(first) = rx.recv() {
        if stream.is_none() && last_try.elapsed() >= Duration::from_millis(200) {
            last_try = Instant::now();
            stream = connect(&addr).ok();
        }
        let Some(s) = stream.as_mut() else { continue };
        let mut ok = write_frame(s, &first).is_ok();
        // Drain what else is queued into the same buffered write.
        while ok {
            match rx.try_recv() {
                Ok(f) => ok = write_frame(s, &f).is_ok(),
                Err(_) => break,
            }
        }
        if !(ok && s.flush().is_ok()) {
            stream = None;
        }
    }
}

/// Accepts peers on `listener` and hands each decoded frame to `on_frame` (from one thread per
/// connection, so the handler's checks run in parallel). Malformed frames close the link.
pub fn listen(listener: UnixListener, on_frame: Arc<dyn Fn(PeerMsg) + Send + Sync>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::SeqCst) >= INBOUND_MAX {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (on_frame, gone) = (Arc::clone(&on_frame), Arc::clone(&active));
        let spawned = std::thread::Builder::new().name("peer-in".into()).spawn(move || {
            let mut r = BufReader::new(stream);
            while let Ok(Some(body)) = read_frame(&mut r) {
                match PeerMsg::decode(&body) {
                    Ok(m) => on_frame(m),
                    Err(_) => break,
                }
            }
            gone.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PeerMsg> {
        vec![
            PeerMsg::Consensus(vec![1, 2, 3]),
            PeerMsg::Txs(vec![vec![9; 10], vec![]]),
            PeerMsg::WantTxs { from: NodeId(3), hashes: vec![Digest([7; 32])] },
            PeerMsg::WantBlocks { from: NodeId(1), after: 5, upto: 9 },
            PeerMsg::Blocks(vec![(vec![1; 5], vec![vec![2; 3]]), (vec![], vec![])]),
        ]
    }

    #[test]
    fn frames_round_trip_and_truncations_fail() {
        for m in samples() {
            let b = m.encode();
            assert_eq!(PeerMsg::decode(&b).unwrap(), m);
            if !matches!(m, PeerMsg::Consensus(_)) {
                for cut in 0..b.len() {
                    assert!(PeerMsg::decode(&b[..cut]).is_err(), "{m:?} cut at {cut}");
                }
            }
        }
        assert!(PeerMsg::decode(&[1, 2, 0xff, 0xff, 0xff, 0xff]).is_err(), "a huge count");
        assert!(PeerMsg::decode(&[2, 1]).is_err(), "a future version");
    }

    #[test]
    fn a_link_delivers_over_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        std::thread::spawn(move || {
            listen(
                listener,
                Arc::new(move |m| {
                    let _ = tx.lock().map(|t| t.send(m));
                }),
            )
        });
        let links = Links::start(vec![(NodeId(2), Address::Unix(path))]);
        for m in samples() {
            links.send(NodeId(2), &m);
        }
        for m in samples() {
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), m);
        }
    }
}
