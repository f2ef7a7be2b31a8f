//! The node host's seams: what the driver ([`crate::node::Driver`]) needs from the world, as
//! small traits with the real implementation here and a simulated one in `vpbox-node-sim`.
//!
//! | seam | real | simulated |
//! |---|---|---|
//! | [`Clock`] | [`SystemClock`] (monotonic `Instant`, UTC `SystemTime`) | a virtual clock the world advances |
//! | [`Transport`] | [`Links`]: authenticated peer links over sockets | a seeded network: delay, loss, duplication, partitions, a compromised peer |
//! | [`Log`] (the consensus WAL, the intake) | [`Journal`]: a checksummed file, fsync | a journal image in memory whose unsynced tail a crash tears at a random byte, re-read with [`vpbox_journal::parse`] |
//! | [`SignQueue`] | a channel to the signer thread (`vpbox signer` over its socket) | the signer's own double-sign guard on a file, with keyed test tags |
//! | [`Writes`] (a committed block's synced write) | [`WriterThread`]: the `ledger-write` thread | the same write, landing when the world says: at once or later, and never if the node crashes first |
//!
//! The driver is otherwise plain code over these: the engine, the mempool and gossip, the
//! waiting clients, speculative execution on the real ledger (RocksDB), state transfer, and
//! membership. [`PeerFilter`] is the checking a link does before the driver sees a peer's
//! frame (replays dropped before anything is verified, envelopes only as the link's node,
//! transactions verified); the real links and the simulated network both run it.
//!
//! This is mini-redis's `run(listener, shutdown)` shape and commonware's deterministic runtime:
//! the same host code runs under `vpbox node run` and under a seeded simulator that replays any
//! failure from its seed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use vpbox_consensus::{Message, NodeId};
use vpbox_journal::{Journal, JournalError};
use vpbox_ledger::tx::Tx;
use vpbox_ledger::{BlockWrite, Written};

use crate::inbox::Outbox;
use crate::node::{Event, SignJob};
use crate::peer::{LinkStats, Links, Peer, PeerMsg, Replays};

/// Time, as the driver sees it.
pub trait Clock {
    /// Monotonic time: timers, retries, how long ago a peer was heard.
    fn now(&self) -> Instant;
    /// UTC time: what operators are shown.
    fn wall(&self) -> SystemTime;
}

/// The machine's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the real clock: the one place the driver reads it
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // the real clock
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Where the driver's frames to its peers go. Sending never blocks and never fails: a link that
/// is down or full drops the frame, and the protocol's retries recover (PBFT assumes an
/// unreliable network).
pub trait Transport {
    /// Queues `msg` for one peer.
    fn send(&self, to: NodeId, msg: &PeerMsg);
    /// Queues `msg` for every peer.
    fn broadcast(&self, msg: &PeerMsg);
    /// The peers are now these (a membership change).
    fn set_peers(&self, peers: Vec<Peer>);
}

impl Transport for Links {
    fn send(&self, to: NodeId, msg: &PeerMsg) {
        Self::send(self, to, msg);
    }

    fn broadcast(&self, msg: &PeerMsg) {
        Self::broadcast(self, msg);
    }

    fn set_peers(&self, peers: Vec<Peer>) {
        self.set(peers);
    }
}

/// An append-only log of records that a crash may tear only after its last [`Log::sync`].
pub trait Log {
    /// Appends a record; durable after the next sync.
    fn append(&mut self, body: &[u8]) -> Result<(), JournalError>;
    /// Makes every append so far durable.
    fn sync(&mut self) -> Result<(), JournalError>;
    /// Replaces the whole log with `records`, atomically and durably.
    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), JournalError>;
    /// The log's size in bytes.
    fn bytes(&self) -> u64;
}

impl Log for Journal {
    fn append(&mut self, body: &[u8]) -> Result<(), JournalError> {
        Self::append(self, body)
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        Self::sync(self)
    }

    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), JournalError> {
        Self::rewrite(self, records)
    }

    fn bytes(&self) -> u64 {
        Self::bytes(self)
    }
}

/// Where the driver's signing jobs go; each is answered later with [`Event::Signed`] (and a
/// guard refusal also with [`Event::SignerRefused`]).
pub trait SignQueue {
    /// Asks for the consensus signing `payload` to be signed; `token` comes back with the answer.
    fn sign(&self, token: u64, payload: Vec<u8>);
}

impl SignQueue for Sender<SignJob> {
    fn sign(&self, token: u64, payload: Vec<u8>) {
        // The signer thread is gone only when the process stops.
        let _ = self.send(SignJob { token, payload });
    }
}

/// Where a committed block's synced write goes ([`BlockWrite`], staged by the ledger): it is
/// carried out beside the driver, which meanwhile admits, orders and executes the blocks above
/// it, and finishes it (the ledger's tip, the waiting clients) once it has landed. One at a
/// time: the driver takes each write's result before it starts the next.
pub trait Writes {
    /// Starts `write`. That it landed is signalled by [`Event::Written`] (a hint only: the
    /// driver also asks [`Writes::poll`] at every batch of events and every tick).
    fn start(&mut self, write: BlockWrite);
    /// The outstanding write's result if it is over, without waiting (`None` when it is not,
    /// or none is outstanding).
    fn poll(&mut self) -> Option<Result<Written, String>>;
    /// Waits for the outstanding write's result (`None` when none is outstanding).
    fn wait(&mut self) -> Option<Result<Written, String>>;
    /// Whether a block of `anchors` new anchors is written beside the driver (else at once,
    /// on the driver's thread).
    fn beside(&self, anchors: usize) -> bool;
}

/// The fewest new anchors of a block that [`WriterThread`] writes beside the driver: a day-end
/// batch's block (5,000 pairs a transaction), not the signed path's. A small block's write is
/// short, and handing it to another thread and hearing back costs two wake-ups: with four
/// nodes sharing two cores, blocks of any size written beside put the signed path at
/// 4,155–5,283/s against 4,679–5,211/s at once and its p99 at 19.1–30.0 ms against 17.4–21.7
/// ms (three alternating pairs of `vpbox bench anchors`, 2026-12-07).
pub const WRITE_BESIDE_MIN: usize = 2048;

/// The real [`Writes`]: a `ledger-write` thread that carries out each write and then wakes the
/// driver with [`Event::Written`].
pub struct WriterThread {
    jobs: SyncSender<BlockWrite>,
    done: Receiver<Result<Written, String>>,
    outstanding: bool,
}

impl WriterThread {
    /// Starts the thread; `wake` is the driver's inbox.
    pub fn start(wake: Outbox) -> std::io::Result<Self> {
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<BlockWrite>(1);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("ledger-write".into()).spawn(move || {
            for write in job_rx {
                if done_tx.send(write.write().map_err(|e| e.to_string())).is_err() {
                    return;
                }
                // Never waits: a full queue means the driver is busy, and it polls anyway.
                wake.try_send(Event::Written);
            }
        })?;
        Ok(Self { jobs, done, outstanding: false })
    }

    fn gone() -> Result<Written, String> {
        Err("the ledger's writer thread is gone".into())
    }
}

impl Writes for WriterThread {
    fn start(&mut self, write: BlockWrite) {
        // Sent only once the last result was taken: the channel's one place is free.
        self.outstanding = true;
        let _ = self.jobs.send(write);
    }

    fn poll(&mut self) -> Option<Result<Written, String>> {
        if !self.outstanding {
            return None;
        }
        let result = match self.done.try_recv() {
            Ok(r) => r,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Self::gone(),
        };
        self.outstanding = false;
        Some(result)
    }

    fn wait(&mut self) -> Option<Result<Written, String>> {
        if !self.outstanding {
            return None;
        }
        self.outstanding = false;
        Some(self.done.recv().unwrap_or_else(|_| Self::gone()))
    }

    fn beside(&self, anchors: usize) -> bool {
        anchors >= WRITE_BESIDE_MIN
    }
}

/// What a peer's frame asks of the node once its link has checked it.
pub enum Admitted {
    /// For the driver.
    Event(Event),
    /// For the block server (never the driver's thread).
    WantBlocks {
        /// Blocks above this height…
        after: u64,
        /// …up to this one…
        upto: u64,
        /// …skipping this many transactions of the first block.
        skip: u32,
    },
    /// Dropped (counted in the link statistics where it is an attack or a fault).
    Nothing,
}

/// The checks one authenticated link makes on its peer's frames before the driver sees them:
/// replays within a short window are dropped before anything is verified, a consensus
/// envelope must be the link's node's own (but for the kinds the engine relays), transactions
/// are verified by `verify_tx`. The real links run one per connection; the simulator runs one
/// per simulated link.
pub struct PeerFilter {
    peer: NodeId,
    stats: Arc<LinkStats>,
    replays: Replays,
}

/// Whether a consensus envelope of this kind may come from a node other than the link's: the
/// engine relays new views and heartbeats (their signatures are their authors').
fn relayed(m: &Message) -> bool {
    matches!(m, Message::NewView(_) | Message::Heartbeat { .. })
}

/// What identifies a frame of transactions for the replay window: each decoded transaction's
/// hash (of its body) and signature, in order. The hash is the one everything after takes
/// (kept in the [`Tx`]), so a frame's bytes are not hashed once more for the window: on the
/// batch path a transaction is 320 KB. (The hash is of the body re-encoded, a copy: the
/// decoding is strict and canonical, so it could be taken over the received bytes instead.)
/// Entries that do not decode are left out: a frame that differs from one seen only by them
/// carries nothing new.
fn txs_key(txs: &[(Tx, Vec<u8>)]) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + txs.len() * 96);
    key.extend_from_slice(b"txs");
    for (tx, _) in txs {
        key.extend_from_slice(tx.hash().as_bytes());
        key.extend_from_slice(&tx.signature().to_raw());
    }
    key
}

impl PeerFilter {
    /// The filter for the authenticated link to `peer`, dropping replays within `window`
    /// ([`Replays::window_for`] the consortium's heartbeat interval).
    pub fn new(peer: NodeId, stats: Arc<LinkStats>, window: Duration) -> Self {
        Self { peer, stats, replays: Replays::new(window) }
    }

    /// Checks `msg` at time `now` (the host's wall clock reads `wall_ms`, ms since the Unix
    /// epoch). `verify_tx` checks a gossiped transaction's signature (and is given its
    /// encoding).
    pub fn admit(
        &mut self,
        msg: PeerMsg,
        now: Instant,
        wall_ms: u64,
        verify_tx: &dyn Fn(&Tx) -> bool,
    ) -> Admitted {
        // Consensus and transaction frames are never repeated by an honest peer within the
        // window (a duplicate transaction would be a no-op anyway): a replay is dropped before
        // its signatures cost anything. Requests are repeated by honest retries and pass.
        let msg = match msg {
            PeerMsg::Txs(list) => return self.admit_txs(list, now, verify_tx),
            other => other,
        };
        let replayed = match &msg {
            PeerMsg::Consensus(bytes) => self.replays.is_replay(bytes, now),
            _ => false,
        };
        if replayed {
            self.stats.replayed.fetch_add(1, Ordering::Relaxed);
            return Admitted::Nothing;
        }
        let ev = match msg {
            PeerMsg::Consensus(bytes) => match vpbox_consensus::wire::decode(&bytes) {
                Ok(env) if env.from == self.peer || relayed(&env.message) => Event::Envelope(env),
                Ok(_) => {
                    self.stats.mismatched.fetch_add(1, Ordering::Relaxed);
                    return Admitted::Nothing;
                }
                Err(_) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    return Admitted::Nothing;
                }
            },
            PeerMsg::Txs(_) => return Admitted::Nothing, // taken by `admit_txs` above
            PeerMsg::WantTxs { hashes } => Event::WantTxs(self.peer, hashes),
            PeerMsg::WantBlocks { after, upto, skip } => {
                return Admitted::WantBlocks { after, upto, skip };
            }
            PeerMsg::Blocks(b) => Event::Blocks(b),
            PeerMsg::Ping => return Admitted::Nothing,
            PeerMsg::Clock { sent_ms } => {
                let offset = i128::from(sent_ms) - i128::from(wall_ms);
                let offset =
                    i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
                self.stats.record_clock(self.peer, offset, now);
                return Admitted::Nothing;
            }
        };
        Admitted::Event(ev)
    }

    /// A frame of transactions: decoded first, for its key in the replay window
    /// ([`txs_key`]), then each one's signature checked (`verify_tx`) unless it is a replay.
    fn admit_txs(
        &mut self,
        list: Vec<Vec<u8>>,
        now: Instant,
        verify_tx: &dyn Fn(&Tx) -> bool,
    ) -> Admitted {
        let decoded: Vec<(Tx, Vec<u8>)> =
            list.into_iter().filter_map(|b| Tx::decode(&b).ok().map(|tx| (tx, b))).collect();
        // Nothing decodes: nothing to remember either (such frames would all share one key
        // and count as replays of each other).
        if decoded.is_empty() {
            return Admitted::Nothing;
        }
        if self.replays.is_replay(&txs_key(&decoded), now) {
            self.stats.replayed.fetch_add(1, Ordering::Relaxed);
            return Admitted::Nothing;
        }
        let txs: Vec<(Tx, Vec<u8>)> = decoded.into_iter().filter(|(tx, _)| verify_tx(tx)).collect();
        if txs.is_empty() {
            return Admitted::Nothing;
        }
        Admitted::Event(Event::PeerTxs(txs))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vpbox_ledger::Ledger;
    use vpbox_ledger::block::Block;
    use vpbox_ledger::tx::{Payload, TxBody};
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;
    use crate::inbox::{Inbox, Source};

    /// A frame of transactions seen again within the window is dropped before any signature is
    /// checked, also when it differs only by entries that do not decode; a frame with another
    /// transaction, or the same one under another signature, is not a replay; a transaction
    /// whose signature fails is left out of its frame.
    #[test]
    fn a_replayed_frame_of_transactions_costs_no_signature_check() {
        let s = SoftwareSigner::new(vpbox_sm::sm2::SecretKey::generate().unwrap());
        let tx = |nonce: u64| {
            TxBody {
                submitter: s.public_key().fingerprint(),
                nonce,
                timestamp_ms: 1,
                payload: Payload::AnchorPut { key: [nonce as u8; 32], value: [1; 32] },
            }
            .sign(&s)
            .unwrap()
        };
        let (a, b) = (tx(1), tx(2));
        // The same body under another signature (SM2 signatures are randomised).
        let a2 = a.body().clone().sign(&s).unwrap();
        assert_ne!(a2.encode(), a.encode());
        let stats = Arc::new(LinkStats::default());
        let mut filter = PeerFilter::new(NodeId(2), stats.clone(), Duration::from_secs(5));
        let checks = std::cell::Cell::new(0);
        let bad = b.hash();
        let verify = |t: &Tx| {
            checks.set(checks.get() + 1);
            t.hash() != bad
        };
        let t0 = Instant::now();
        let mut admit = |frame: Vec<Vec<u8>>, ms: u64| {
            let msg = PeerMsg::Txs(frame);
            match filter.admit(msg, t0 + Duration::from_millis(ms), 0, &verify) {
                Admitted::Event(Event::PeerTxs(txs)) => Some(txs),
                Admitted::Nothing => None,
                _ => panic!("a frame of transactions is an event or nothing"),
            }
        };
        let got = admit(vec![a.encode(), b.encode()], 0).expect("new");
        assert_eq!(got.len(), 1, "b's signature fails: left out");
        assert_eq!((got[0].0.hash(), &got[0].1), (a.hash(), &a.encode()));
        assert_eq!(checks.get(), 2);
        assert!(admit(vec![a.encode(), b.encode()], 10).is_none(), "the same frame");
        assert!(admit(vec![a.encode(), vec![9; 3], b.encode()], 20).is_none(), "plus garbage");
        assert_eq!(checks.get(), 2, "no signature checked for a replay");
        assert_eq!(stats.replayed.load(Ordering::Relaxed), 2);
        assert!(admit(vec![a2.encode(), b.encode()], 30).is_some(), "another signature");
        assert!(admit(vec![a.encode()], 40).is_some(), "another frame");
        assert_eq!(checks.get(), 5);
        assert!(admit(vec![vec![9; 3]], 50).is_none(), "nothing decodes: nothing");
        assert!(admit(vec![vec![9; 4]], 60).is_none());
        assert_eq!(stats.replayed.load(Ordering::Relaxed), 2, "and no replay counted");
        assert!(admit(vec![a.encode(), b.encode()], 6_000).is_some(), "past the window");
    }

    #[test]
    fn the_writer_thread_lands_a_staged_block_and_wakes_the_driver() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(dir.path()).unwrap();
        ledger.init_genesis(&Block::genesis(vpbox_sm::sm3::hash(b"writer test"), 0)).unwrap();
        let s = SoftwareSigner::new(vpbox_sm::sm2::SecretKey::generate().unwrap());
        let pairs = (0..WRITE_BESIDE_MIN as u32)
            .map(|i| (vpbox_sm::sm3::hash(i.to_be_bytes()).0, [7; 32]))
            .collect();
        let body = TxBody {
            submitter: s.public_key().fingerprint(),
            nonce: 1,
            timestamp_ms: 1,
            payload: Payload::AnchorPutBatch(pairs),
        };
        let executed = ledger.execute(&[], vec![body.sign(&s).unwrap()]).unwrap();
        let inbox = Inbox::new();
        let mut writes = WriterThread::start(inbox.outbox(Source::Local)).unwrap();
        assert!(writes.beside(executed.anchors.len()) && !writes.beside(WRITE_BESIDE_MIN - 1));
        assert!(writes.poll().is_none() && writes.wait().is_none(), "nothing outstanding");
        writes.start(ledger.stage(&executed, b"c").unwrap());
        // The wake-up comes once the write has landed; the result is there by then.
        let woken = inbox.recv(Duration::from_secs(10), 16).unwrap();
        assert!(matches!(woken.as_slice(), [Event::Written]), "{} events", woken.len());
        let written = writes.poll().expect("landed").unwrap();
        assert!(writes.poll().is_none() && writes.wait().is_none(), "taken once");
        assert_eq!(ledger.height(), 1, "the tip waits for finish");
        ledger.finish(&executed, written).unwrap();
        assert_eq!(ledger.tip(), Some(&executed.block.header));
        // A second write, waited for rather than polled (the next commit's way).
        let second = ledger.execute(&[], Vec::new()).unwrap();
        writes.start(ledger.stage(&second, b"c").unwrap());
        let written = writes.wait().expect("outstanding").unwrap();
        ledger.finish(&second, written).unwrap();
        assert_eq!(ledger.height(), 3);
    }

    #[test]
    fn a_wake_up_is_dropped_rather_than_waited_for_when_the_queue_is_full() {
        let inbox = Inbox::new();
        let out = inbox.outbox(Source::Local);
        for _ in 0..Inbox::LOCAL_CAP {
            assert!(out.try_send(Event::Written));
        }
        assert!(!out.try_send(Event::Written), "full: dropped, not blocked");
        let taken = inbox.recv(Duration::ZERO, 10).unwrap();
        assert_eq!(taken.len(), 10);
        assert!(out.try_send(Event::Written), "room again");
        drop(inbox);
        assert!(!out.try_send(Event::Written), "the driver is gone");
    }
}
