//! Links between nodes: the framed protocol peers speak (the same bytes run inside TLS through
//! the box's proxy), and the thin I/O shells that carry it over Unix sockets. The node opens no
//! network socket: it reaches peer N by connecting to `N.sock` in its egress folder (see
//! [`crate::config`]), where the box's proxy listens.
//!
//! ```text
//! frame = len:u32be body                          (len ≤ FRAME_MAX, 8 MiB)
//! body  = version:u8=2 kind:u8 …
//!   kind 1 Consensus   a consensus envelope (vpbox_consensus::wire)
//!   kind 2 Txs         count:u32 (len:u32 tx)*     client transactions, gossiped
//!   kind 3 WantTxs     count:u32 hash:[32]*
//!   kind 4 WantBlocks  after:u64 upto:u64 skip:u32
//!   kind 5 Blocks      count:u32 (len:u32 block txcount:u32 (len:u32 tx)*)*
//!   kind 6 Ping        (an idle link's keep-alive)
//!   kind 7 Clock       sent_ms:u64                 the sender's wall clock as it wrote the frame
//! ```
//!
//! A dialer sends a Clock frame as its link opens and then every [`PING`]: the acceptor takes
//! `sent_ms` minus its own clock as the peer's clock offset (the link's one-way delay, a
//! millisecond or so in a data centre, counts as the peer being behind). Operators see it per
//! peer in `node_getNodes` (`clockOffsetMs`), on `/metrics` and in `vpbox status`, which names
//! a box whose clock is off. It is monitoring only: no decision of the node depends on it, so a
//! compromised proxy that forges one raises a false alarm and nothing else.
//!
//! Every link starts with the handshake of [`crate::link`]: each end proves which node it is.
//! A frame carries no sender: it is the link's authenticated node's (version 1 frames named
//! their sender, and a spoofed `WantBlocks` made a node send blocks to another). Links carry
//! frames one way, from the dialer to the acceptor; answers go back on the answerer's own link.
//!
//! The link is not trusted beyond its identity: consensus envelopes are SM2-signed by their
//! sender, transactions by their submitter, and blocks carry commit certificates; the receiver
//! checks all of them. A link that cannot deliver drops messages (consensus re-sends on its
//! timers) rather than queue without bound: each peer's queue holds at most
//! [`QUEUE_BYTES`] of frames.
//!
//! Inbound connections: at most [`UNAUTHENTICATED_MAX`] at once are in their handshake (a new
//! one past that closes the oldest), each closed if it has not proved a member's identity
//! within 5 s; an authenticated node has one connection (a new one replaces the old); a link
//! with no frame for [`IDLE`] is closed, and a frame must arrive whole within [`READ`] of its
//! first byte.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vpbox_consensus::NodeId;
use vpbox_sm::sm2::PublicKey;
use vpbox_sm::sm3::Digest;

use crate::link::{Conn, Identity, Members};

/// Longest frame: room for a new view of 7 nodes at the default batch size and window.
pub const FRAME_MAX: usize = 8 << 20;
/// What a sender packs into one frame of transactions or blocks before it starts another.
pub const FRAME_BUDGET: usize = 4 << 20;
/// Most items in one list.
const LIST_MAX: usize = 100_000;
const VERSION: u8 = 2;
/// Frames queued for one peer before new ones are dropped...
const QUEUE_MAX: usize = 4096;
/// ...or bytes.
pub const QUEUE_BYTES: usize = 64 << 20;
/// Inbound connections still in their handshake at once.
pub const UNAUTHENTICATED_MAX: usize = 16;
/// An authenticated link with no frame for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// A frame must arrive whole within this of its first byte.
pub const READ: Duration = Duration::from_secs(10);
/// An idle outbound link sends a ping this often.
const PING: Duration = Duration::from_secs(10);
/// An outbound link tries to connect at most this often.
const RECONNECT: Duration = Duration::from_millis(200);

/// What peers say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMsg {
    /// A consensus envelope, encoded.
    Consensus(Vec<u8>),
    /// Client transactions, encoded.
    Txs(Vec<Vec<u8>>),
    /// "Send me these transactions."
    WantTxs {
        /// The transactions.
        hashes: Vec<Digest>,
    },
    /// "Send me blocks `after + 1 ..= upto`."
    WantBlocks {
        /// The requester's height.
        after: u64,
        /// The highest wanted.
        upto: u64,
        /// How many of block `after + 1`'s transactions (in its order) the requester has.
        skip: u32,
    },
    /// Committed blocks (with certificates) and their transactions. A block whose transactions
    /// do not fit one frame comes in several items, each with the block and some of them.
    Blocks(Vec<(Vec<u8>, Vec<Vec<u8>>)>),
    /// Nothing: keeps an idle link open.
    Ping,
    /// The sender's wall clock (ms since the Unix epoch) as it wrote the frame.
    Clock {
        /// When.
        sent_ms: u64,
    },
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
            Self::WantTxs { hashes } => {
                w.push(3);
                w.extend_from_slice(&(hashes.len() as u32).to_be_bytes());
                for h in hashes {
                    w.extend_from_slice(h.as_bytes());
                }
            }
            Self::WantBlocks { after, upto, skip } => {
                w.push(4);
                w.extend_from_slice(&after.to_be_bytes());
                w.extend_from_slice(&upto.to_be_bytes());
                w.extend_from_slice(&skip.to_be_bytes());
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
            Self::Ping => w.push(6),
            Self::Clock { sent_ms } => {
                w.push(7);
                w.extend_from_slice(&sent_ms.to_be_bytes());
            }
        }
        w
    }

    /// Decodes an untrusted frame body: bounded, never panics.
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        let mut r = Cursor::new(body);
        if r.u8()? != VERSION {
            return Err(FrameError("unsupported version"));
        }
        let msg = match r.u8()? {
            1 => Self::Consensus(r.0.rest().to_vec()),
            2 => Self::Txs(r.blobs()?),
            3 => {
                let n = r.count(32)?;
                let mut hashes = Vec::with_capacity(n);
                for _ in 0..n {
                    hashes.push(Digest(r.array()?));
                }
                Self::WantTxs { hashes }
            }
            4 => Self::WantBlocks { after: r.u64()?, upto: r.u64()?, skip: r.u32()? },
            5 => {
                let n = r.count(8)?;
                let mut blocks = Vec::with_capacity(n);
                for _ in 0..n {
                    let b = r.blob()?.to_vec();
                    blocks.push((b, r.blobs()?));
                }
                Self::Blocks(blocks)
            }
            6 => Self::Ping,
            7 => Self::Clock { sent_ms: r.u64()? },
            _ => return Err(FrameError("unknown kind")),
        };
        r.0.finish().map_err(|_| FrameError("trailing bytes"))?;
        Ok(msg)
    }
}

/// The shared bounded cursor, with this format's errors, counts and blobs.
struct Cursor<'a>(vpbox_wire::Reader<'a>);

impl<'a> Cursor<'a> {
    fn new(body: &'a [u8]) -> Self {
        Self(vpbox_wire::Reader::new(body))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        self.0.take(n).map_err(|_| FrameError("truncated"))
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        self.0.u8().map_err(|_| FrameError("truncated"))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        self.0.u32().map_err(|_| FrameError("truncated"))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        self.0.u64().map_err(|_| FrameError("truncated"))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        self.0.array().map_err(|_| FrameError("truncated"))
    }
    /// A count of items of at least `item_min` bytes each, checked against what remains.
    fn count(&mut self, item_min: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n > LIST_MAX || n.saturating_mul(item_min) > self.0.remaining() {
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

impl PeerMsg {
    /// Transactions in as many frames as they need, each at most [`FRAME_BUDGET`] (a single
    /// transaction is far smaller: `vpbox_ledger::tx::TX_MAX`).
    pub fn txs_in_frames(txs: Vec<Vec<u8>>) -> Vec<Self> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        let mut bytes = 0;
        for t in txs {
            if !cur.is_empty() && bytes + t.len() + 4 > FRAME_BUDGET {
                out.push(Self::Txs(std::mem::take(&mut cur)));
                bytes = 0;
            }
            bytes += t.len() + 4;
            cur.push(t);
        }
        if !cur.is_empty() {
            out.push(Self::Txs(cur));
        }
        out
    }
}

/// Writes one frame of at most [`FRAME_MAX`] bytes; a longer body is refused unsent.
pub fn write_frame(w: &mut (impl Write + ?Sized), body: &[u8]) -> std::io::Result<()> {
    vpbox_wire::write_frame(w, body, FRAME_MAX)
}

/// Reads one frame of at most `max` bytes; `None` at a clean end of stream. Memory grows with
/// the bytes that arrive, never with the announced length.
pub use vpbox_wire::read_frame;

/// What the links saw that they refused, since the node started (`node_getNodes.links`).
#[derive(Default)]
pub struct LinkStats {
    /// Handshakes that proved a member's identity.
    pub authenticated: AtomicU64,
    /// Handshakes that failed (a wrong chain, a non-member, a bad proof, a timeout).
    pub refused: AtomicU64,
    /// Connections closed unauthenticated to make room for a new one.
    pub evicted: AtomicU64,
    /// Frames that did not decode (the link is closed).
    pub malformed: AtomicU64,
    /// Consensus envelopes whose sender was not the link's node (and not a relayed kind).
    pub mismatched: AtomicU64,
    /// Frames dropped as replays of one the same link sent recently.
    pub replayed: AtomicU64,
    /// Block requests dropped because the peer already had one waiting.
    pub busy: AtomicU64,
    /// Each peer's last clock offset (ms, its clock minus this node's) and when it came.
    clocks: Mutex<HashMap<NodeId, (i64, Instant)>>,
}

/// A peer's clock offset older than this is not reported (its link is down).
pub const CLOCK_FRESH: Duration = Duration::from_secs(60);

impl LinkStats {
    /// Records that `peer`'s clock read `offset_ms` ahead of this node's (negative: behind) at
    /// `now`.
    pub fn record_clock(&self, peer: NodeId, offset_ms: i64, now: Instant) {
        if let Ok(mut c) = self.clocks.lock() {
            c.insert(peer, (offset_ms, now));
        }
    }

    /// `peer`'s clock offset (ms), if one came within [`CLOCK_FRESH`] of `now`.
    pub fn clock_offset(&self, peer: NodeId, now: Instant) -> Option<i64> {
        let c = self.clocks.lock().ok()?;
        let (offset, at) = c.get(&peer)?;
        (now.saturating_duration_since(*at) <= CLOCK_FRESH).then_some(*offset)
    }

    /// As JSON for `node_getNodes`.
    pub fn json(&self) -> Value {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "authenticated": n(&self.authenticated),
            "refused": n(&self.refused),
            "evicted": n(&self.evicted),
            "malformed": n(&self.malformed),
            "mismatched": n(&self.mismatched),
            "replayed": n(&self.replayed),
            "busy": n(&self.busy),
        })
    }
}

/// The digests of the frames one link delivered recently: a frame seen again within the
/// window is a replay and is dropped before anything verifies it. Honest nodes re-send a
/// message only on their timers, seconds apart; the shortest is the heartbeat, and the window
/// is at most half of it ([`Replays::window_for`]), so an honest heartbeat is never dropped
/// even when its signature is deterministic (the same bytes for the same view).
pub struct Replays {
    seen: HashMap<Digest, Instant>,
    order: VecDeque<(Digest, Instant)>,
    window: Duration,
}

impl Replays {
    /// How long a frame is remembered at most.
    pub const WINDOW: Duration = Duration::from_secs(2);
    /// Most frames remembered (the oldest are forgotten first).
    pub const CAPACITY: usize = 16_384;

    /// Empty, remembering frames for `window`.
    pub fn new(window: Duration) -> Self {
        Self { seen: HashMap::new(), order: VecDeque::new(), window }
    }

    /// The window for a heartbeat interval: [`Self::WINDOW`], or half the interval if shorter.
    pub fn window_for(heartbeat_interval_ms: u64) -> Duration {
        Self::WINDOW.min(Duration::from_millis(heartbeat_interval_ms / 2))
    }

    /// Whether `frame` was seen within the window at `now`; remembers it if not.
    pub fn is_replay(&mut self, frame: &[u8], now: Instant) -> bool {
        while let Some((d, at)) = self.order.front().copied() {
            if now.saturating_duration_since(at) < self.window && self.order.len() < Self::CAPACITY
            {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&d) == Some(&at) {
                self.seen.remove(&d);
            }
        }
        let d = vpbox_sm::sm3::hash(frame);
        if self.seen.contains_key(&d) {
            return true;
        }
        self.seen.insert(d, now);
        self.order.push_back((d, now));
        false
    }
}

impl Default for Replays {
    fn default() -> Self {
        Self::new(Self::WINDOW)
    }
}

/// One peer to link to.
#[derive(Clone)]
pub struct Peer {
    /// Its node.
    pub id: NodeId,
    /// Its consensus key (its link proof must verify under it).
    pub key: PublicKey,
}

/// A queue of encoded frames for one peer's sender thread, and the bytes in it.
#[derive(Clone)]
struct Queue {
    tx: SyncSender<Arc<Vec<u8>>>,
    bytes: Arc<AtomicUsize>,
}

/// Outbound links to every peer: one thread and one bounded queue each. The set changes when
/// governance adds or removes nodes ([`Links::set`]).
#[derive(Clone)]
pub struct Links {
    me: Identity,
    members: Members,
    egress: PathBuf,
    peers: Arc<Mutex<Vec<(Peer, Queue)>>>,
}

impl Links {
    /// Starts a link to each of `peers` through its socket in `egress`, proving this node's
    /// identity as `me`. `members` (the keys inbound links are checked against) follows the
    /// same set.
    pub fn start(me: Identity, members: Members, egress: PathBuf, peers: Vec<Peer>) -> Self {
        let links = Self { me, members, egress, peers: Arc::new(Mutex::new(Vec::new())) };
        links.set(peers);
        links
    }

    /// Makes `peers` the set: starts links to new peers (or re-keyed ones),
    /// ends links to peers no longer in it (their thread ends when its queue's sender is
    /// dropped).
    pub fn set(&self, peers: Vec<Peer>) {
        self.members.set(peers.iter().map(|p| (p.id, p.key.clone())));
        let Ok(mut current) = self.peers.lock() else { return };
        current.retain(|(p, _)| peers.iter().any(|n| n.id == p.id && n.key == p.key));
        for peer in peers {
            if peer.id != self.me.id && !current.iter().any(|(p, _)| p.id == peer.id) {
                current.extend(self.start_link(peer));
            }
        }
    }

    fn start_link(&self, peer: Peer) -> Option<(Peer, Queue)> {
        let (tx, rx) = sync_channel(QUEUE_MAX);
        let queue = Queue { tx, bytes: Arc::new(AtomicUsize::new(0)) };
        let (p, me, bytes) = (peer.clone(), self.me.clone(), Arc::clone(&queue.bytes));
        let socket = crate::config::egress_socket(&self.egress, peer.id.0);
        std::thread::Builder::new()
            .name(format!("link-{}", peer.id.0))
            .spawn(move || link(me, p, &socket, rx, bytes))
            .map(|_| (peer, queue))
            .ok()
    }

    /// Sends to one peer (dropped if its queue is full).
    pub fn send(&self, to: NodeId, msg: &PeerMsg) {
        let frame = Arc::new(msg.encode());
        let Ok(peers) = self.peers.lock() else { return };
        if let Some((_, q)) = peers.iter().find(|(p, _)| p.id == to) {
            offer(q, frame);
        }
    }

    /// Sends to every peer.
    pub fn broadcast(&self, msg: &PeerMsg) {
        let frame = Arc::new(msg.encode());
        let Ok(peers) = self.peers.lock() else { return };
        for (_, q) in peers.iter() {
            offer(q, Arc::clone(&frame));
        }
    }
}

fn offer(q: &Queue, frame: Arc<Vec<u8>>) {
    let len = frame.len();
    if len > FRAME_MAX {
        tracing::error!("a frame of {len} bytes is too large to send");
        return;
    }
    if q.bytes.fetch_add(len, Ordering::SeqCst) + len > QUEUE_BYTES {
        q.bytes.fetch_sub(len, Ordering::SeqCst);
        return;
    }
    match q.tx.try_send(frame) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            q.bytes.fetch_sub(len, Ordering::SeqCst);
        }
    }
}

/// Connects and proves who this node is to `peer` (and checks it is `peer`).
fn open_link(
    me: &Identity,
    peer: &Peer,
    socket: &Path,
) -> Result<BufWriter<Box<dyn Conn>>, String> {
    let mut conn: Box<dyn Conn> =
        Box::new(UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?);
    crate::link::dial(&mut *conn, me, peer.id, peer.key.clone()).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(READ)).map_err(|e| e.to_string())?;
    Ok(BufWriter::new(conn))
}

/// One peer's sender: connects lazily, reconnects after a failure at most every 200 ms, drops
/// what it cannot deliver, pings when idle.
fn link(
    me: Identity,
    peer: Peer,
    socket: &Path,
    rx: Receiver<Arc<Vec<u8>>>,
    bytes: Arc<AtomicUsize>,
) {
    let mut stream: Option<BufWriter<Box<dyn Conn>>> = None;
    let mut last_try: Option<Instant> = None;
    let mut complained = false;
    // When this link last told the peer its clock (None: not on this connection yet).
    let mut clock_sent: Option<Instant> = None;
    loop {
        let first = match rx.recv_timeout(PING) {
            Ok(f) => {
                bytes.fetch_sub(f.len(), Ordering::SeqCst);
                f
            }
            Err(RecvTimeoutError::Timeout) if stream.is_some() => Arc::new(PeerMsg::Ping.encode()),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if stream.is_none() && last_try.is_none_or(|t| t.elapsed() >= RECONNECT) {
            last_try = Some(Instant::now());
            match open_link(&me, &peer, socket) {
                Ok(s) => {
                    stream = Some(s);
                    complained = false;
                }
                Err(e) => {
                    if !complained {
                        tracing::warn!(peer = peer.id.0, "link to node {}: {e}", peer.id.0);
                        complained = true;
                    }
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let mut ok = true;
        if clock_sent.is_none_or(|t| t.elapsed() >= PING) {
            ok = write_frame(s, &PeerMsg::Clock { sent_ms: wall_ms() }.encode()).is_ok();
            clock_sent = Some(Instant::now());
        }
        ok = ok && write_frame(s, &first).is_ok();
        // Drain what else is queued into the same buffered write.
        while ok {
            match rx.try_recv() {
                Ok(f) => {
                    bytes.fetch_sub(f.len(), Ordering::SeqCst);
                    ok = write_frame(s, &f).is_ok();
                }
                Err(_) => break,
            }
        }
        if !(ok && s.flush().is_ok()) {
            stream = None;
            clock_sent = None;
        }
    }
}

/// The host's wall clock, ms since the Unix epoch (for [`PeerMsg::Clock`]).
#[allow(clippy::disallowed_methods)] // the shell reads the clock; the filter takes it as input
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Handles the frames of one authenticated link, in order, on the link's thread. It may block
/// (the link then stops reading: backpressure to the sender, whose queue drops).
pub type LinkHandler = Box<dyn FnMut(PeerMsg) + Send>;

/// A connection's number and a handle to close it.
type Slot = (u64, Box<dyn Conn>);

/// Inbound connections: the handshakes in progress and the authenticated link of each node.
#[derive(Default)]
struct Inbound {
    next: AtomicU64,
    pending: Mutex<VecDeque<Slot>>,
    authed: Mutex<HashMap<NodeId, Slot>>,
}

impl Inbound {
    /// Registers a connection in its handshake, closing the oldest one if all slots are taken.
    fn admit(&self, conn: &dyn Conn, stats: &LinkStats) -> Option<u64> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let handle = conn.handle().ok()?;
        let mut pending = self.pending.lock().ok()?;
        if pending.len() >= UNAUTHENTICATED_MAX {
            if let Some((_, oldest)) = pending.pop_front() {
                oldest.shut();
                stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        pending.push_back((id, handle));
        Some(id)
    }

    fn handshake_done(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|(i, _)| *i != id);
        }
    }

    /// Makes `conn` the link of `peer`, closing the one it replaces.
    fn authenticated(&self, peer: NodeId, id: u64, conn: &dyn Conn) {
        let Ok(handle) = conn.handle() else { return };
        if let Ok(mut a) = self.authed.lock() {
            if let Some((_, old)) = a.insert(peer, (id, handle)) {
                old.shut();
            }
        }
    }

    fn closed(&self, peer: NodeId, id: u64) {
        if let Ok(mut a) = self.authed.lock() {
            if a.get(&peer).is_some_and(|(i, _)| *i == id) {
                a.remove(&peer);
            }
        }
    }
}

/// Accepts peers on `listener`: each connection proves a member's identity (as checked against
/// `members`) within 5 s or is closed; then `on_link` makes the handler of its frames.
pub fn listen(
    listener: UnixListener,
    me: Identity,
    members: Members,
    stats: Arc<LinkStats>,
    on_link: Arc<dyn Fn(NodeId) -> LinkHandler + Send + Sync>,
) {
    let inbound = Arc::new(Inbound::default());
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let Some(conn_id) = inbound.admit(&stream, &stats) else { continue };
        let (me, members, stats, on_link, shared) = (
            me.clone(),
            members.clone(),
            Arc::clone(&stats),
            Arc::clone(&on_link),
            Arc::clone(&inbound),
        );
        let spawned = std::thread::Builder::new().name("peer-in".into()).spawn(move || {
            let mut conn: Box<dyn Conn> = Box::new(stream);
            let inbound = shared;
            let shaken = crate::link::accept(&mut *conn, &me, &members);
            inbound.handshake_done(conn_id);
            let peer = match shaken {
                Ok(peer) => peer,
                Err(e) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("peer link refused: {e}");
                    conn.shut();
                    return;
                }
            };
            stats.authenticated.fetch_add(1, Ordering::Relaxed);
            inbound.authenticated(peer, conn_id, &*conn);
            serve_link(conn, on_link(peer), &stats);
            inbound.closed(peer, conn_id);
        });
        if spawned.is_err() {
            inbound.handshake_done(conn_id);
        }
    }
}

/// Reads an authenticated link's frames until it closes, idles past [`IDLE`], trickles a frame
/// past [`READ`] or sends one that does not decode.
fn serve_link(conn: Box<dyn Conn>, mut handler: LinkHandler, stats: &LinkStats) {
    let Ok(reader) = conn.handle() else { return };
    let mut r = BufReader::with_capacity(64 << 10, reader);
    // Wait up to IDLE for a frame to start, then up to READ for the rest of it.
    while let Ok(true) = r.fill_buf_within(IDLE) {
        let deadline = Instant::now() + READ;
        let body = match read_frame(&mut DeadlineBuf { r: &mut r, deadline }, FRAME_MAX) {
            Ok(Some(b)) => b,
            _ => break,
        };
        match PeerMsg::decode(&body) {
            Ok(m) => handler(m),
            Err(_) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    conn.shut();
}

/// A buffered reader over a link whose reads are bounded by a deadline.
trait FillWithin {
    /// Waits up to `t` for at least one byte; `false` at end of stream.
    fn fill_buf_within(&mut self, t: Duration) -> std::io::Result<bool>;
}

impl FillWithin for BufReader<Box<dyn Conn>> {
    fn fill_buf_within(&mut self, t: Duration) -> std::io::Result<bool> {
        use std::io::BufRead;
        if !self.buffer().is_empty() {
            return Ok(true);
        }
        self.get_ref().set_read_timeout(Some(t))?;
        Ok(!self.fill_buf()?.is_empty())
    }
}

struct DeadlineBuf<'a> {
    r: &'a mut BufReader<Box<dyn Conn>>,
    deadline: Instant,
}

impl Read for DeadlineBuf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.r.buffer().is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "frame too slow"));
            }
            self.r.get_ref().set_read_timeout(Some(left))?;
        }
        self.r.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PeerMsg> {
        vec![
            PeerMsg::Consensus(vec![1, 2, 3]),
            PeerMsg::Txs(vec![vec![9; 10], vec![]]),
            PeerMsg::WantTxs { hashes: vec![Digest([7; 32])] },
            PeerMsg::WantBlocks { after: 5, upto: 9, skip: 2 },
            PeerMsg::Blocks(vec![(vec![1; 5], vec![vec![2; 3]]), (vec![], vec![])]),
            PeerMsg::Ping,
            PeerMsg::Clock { sent_ms: 1_800_000_000_123 },
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
        assert!(PeerMsg::decode(&[2, 2, 0xff, 0xff, 0xff, 0xff]).is_err(), "a huge count");
        assert!(PeerMsg::decode(&[3, 6]).is_err(), "a future version");
        assert!(PeerMsg::decode(&[1, 4, 0, 0, 0, 1]).is_err(), "version 1 (a sender field)");
    }

    #[test]
    fn transactions_split_into_frames_within_the_budget() {
        let txs: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 300_000]).collect();
        let frames = PeerMsg::txs_in_frames(txs.clone());
        assert!(frames.len() > 1);
        let mut back = Vec::new();
        for f in frames {
            assert!(f.encode().len() <= FRAME_BUDGET + 16);
            let PeerMsg::Txs(t) = f else { panic!() };
            back.extend(t);
        }
        assert_eq!(back, txs);
    }

    #[test]
    fn replays_within_the_window_are_dropped() {
        let mut r = Replays::default();
        let t0 = Instant::now();
        assert!(!r.is_replay(b"a", t0));
        assert!(r.is_replay(b"a", t0 + Duration::from_millis(1500)));
        assert!(!r.is_replay(b"b", t0 + Duration::from_millis(1500)));
        // Remembered from its first sight, forgotten after the window.
        assert!(!r.is_replay(b"a", t0 + Replays::WINDOW + Duration::from_millis(1)));
        // Bounded: the oldest are forgotten first.
        let mut r = Replays::default();
        for i in 0..Replays::CAPACITY + 10 {
            assert!(!r.is_replay(&(i as u64).to_be_bytes(), t0));
        }
        assert!(r.order.len() <= Replays::CAPACITY + 1);
        assert!(r.is_replay(&((Replays::CAPACITY + 9) as u64).to_be_bytes(), t0));
    }
}
