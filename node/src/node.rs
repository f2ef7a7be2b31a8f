//! The node process: the thin shell that drives the consensus engine.
//!
//! One thread (the *driver*) owns the engine, the speculative chain, the consensus WAL and the
//! intake, and carries out the engine's effects in order:
//!
//! | effect | what the driver does |
//! |---|---|
//! | `Persist` | appends to the WAL; one fsync covers every input queued in a round, before any other effect of the round (group commit, see `Driver::pump`) |
//! | `Sign` | hands the payload's SM3 digest and its position to the signer thread, which asks `vpbox signer` over its socket and answers `Input::Signed` |
//! | `Send`/`Broadcast` | queues the encoded envelope on the peer links |
//! | `SetTimer`/`CancelTimer` | keeps a deadline per timer; the loop sleeps until the nearest |
//! | `Execute` | runs the batch on the ledger speculatively (no write) on top of the blocks executed above the tip; parks it and asks peers for any transaction body it lacks |
//! | `Rollback` | drops speculative blocks above the height |
//! | `Commit` | writes the speculative block with its certificate in one synced RocksDB batch, forgets its transactions in the intake, answers waiting clients |
//! | `FetchState` | asks peers for the certified blocks up to the checkpoint, checks every certificate and re-executes every block, then answers `Input::StateFetched` |
//! | `Heard` | notes the peer as alive at that height (what `node_getNodes` shows of it) |
//!
//! The driver reaches the world only through the seams of [`crate::host`] (clock, transport,
//! logs, signer): [`Driver::open`] makes the real ones, and the seeded simulator
//! (`vpbox-node-sim`) drives the same code with simulated ones through [`Driver::start`],
//! [`Driver::handle`], [`Driver::tick`] and [`Driver::deadline`].
//!
//! Other threads only feed the driver through its [`Inbox`], one bounded queue per source read
//! in turn: the JSON-RPC handlers (transactions whose signatures they have already checked),
//! each peer's authenticated link (decoded envelopes, and gossiped transactions it has
//! checked), and the signer thread. Block requests from peers never reach the driver: the
//! block server ([`crate::blocks`]) answers them from the committed ledger. Each transaction is
//! verified once per node, on the thread that received it, in parallel with the others.
//!
//! A state digest is a block hash: the header commits to the parent, the ordered transactions
//! and every put's outcome, so replicas that agree on it agree on the ledger.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vpbox_consensus::wire::{
    batch_digest, block_digest, decode_certificate, decode_record, encode_certificate,
    encode_record,
};
use vpbox_consensus::{
    Batch, CommittedEntry, Config, Digest as CDigest, Effect, Engine, Envelope, Input, Member,
    Message, NodeId, PublicKey as CKey, SeqNo, Signature as CSig, Timer, Verification as CVer,
    Verifier, WalRecord, verify_certificate,
};
use vpbox_ledger::block::Block;
use vpbox_ledger::governance::State;
use vpbox_ledger::tx::Tx;
use vpbox_ledger::{Executed, Ledger, Receipt};
use vpbox_signer_client::{Client, ClientError};
use vpbox_sm::Domain;
use vpbox_sm::sm2::{PublicKey, Signature};
use vpbox_sm::sm3::{Digest, hash};

use crate::genesis::{Genesis, NodeEntry};
use crate::host::{Clock, Log, SignQueue, SystemClock, Transport, WriterThread, Writes};
use crate::inbox::{Closed, Inbox, Outbox};
use crate::intake::Intake;
use crate::mempool::Mempool;
use crate::peer::{FRAME_BUDGET, LinkStats, Links, PeerMsg};
use crate::status::Status;
use crate::transfer::{Part, Transfer};
use vpbox_proof::epochs::derive_configs;

/// The most clients waiting for one transaction (a put with `wait`, or a wait by its hash):
/// each holds a channel until the commit (an abandoned one too), so a client that asks again
/// and again, or a transaction that never commits, holds no more. Past it a wait by hash is
/// answered `Busy` (-32004: retry) and a put with `wait` is told pending (it is stored). An
/// abandoned wait counts until the commit: 16 clients that gave up on a transaction that does
/// not commit make the next wait for it `Busy`.
const WAITERS_MAX: usize = 16;

/// Transactions to admit (each with its encoding) and the client to answer, if a client sent
/// them (gossip has none).
type Group = (Vec<(Tx, Vec<u8>)>, Option<(Option<Stored>, Reply)>);

/// How often a parked execution or a state fetch asks its peers again.
const RETRY: Duration = Duration::from_millis(500);
/// A state fetch that commits no block for this long is not counted as catching up
/// ([`Driver::catching_up`]).
const STALLED: Duration = Duration::from_secs(5);

/// How a submitted transaction fared.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Durable in the intake; not committed yet (or the wait ended first).
    Accepted(Digest),
    /// Committed, now or before (a duplicate gets the first result).
    Committed {
        /// The transaction.
        hash: Digest,
        /// Its receipt.
        receipt: Receipt,
        /// Whether it had been submitted before.
        duplicate: bool,
    },
    /// The pool is full (or, for a wait, too many wait already); retry later.
    Busy,
    /// Awaited, and neither committed nor in this node's pool: unknown here.
    Unknown,
    /// The node failed to store it (a full disk): not acknowledged.
    Failed(String),
}

/// Where a client's answers go: a thread that blocks for them (a call handled on one of the
/// RPC server's blocking threads), or a task of the RPC server's event loop that awaits them
/// (a small `anchor_put`: no thread is held while the transaction is stored or committed).
/// Either way the driver only sends: it never waits for the client.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A thread waits in `recv_timeout`.
    Thread(Sender<Outcome>),
    /// A task awaits `recv`.
    Task(tokio::sync::mpsc::UnboundedSender<Outcome>),
}

impl Reply {
    /// Sends `outcome`; it comes back if the client is gone (its wait ran out).
    pub fn send(&self, outcome: Outcome) -> Result<(), Outcome> {
        match self {
            Self::Thread(s) => s.send(outcome).map_err(|e| e.0),
            Self::Task(s) => s.send(outcome).map_err(|e| e.0),
        }
    }
}

/// A client's view of whether the transaction it waits on is stored: set by the driver once the
/// transaction is durable in the intake, read by the client when its wait for the commit runs
/// out, to answer "pending" (stored: it will commit) or "retry" (not stored yet). A flag the
/// client reads, not a message: the driver never wakes a waiting client but to answer it.
#[derive(Debug, Clone, Default)]
pub struct Stored(Arc<std::sync::atomic::AtomicBool>);

impl Stored {
    /// Marks the transaction durable.
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the driver said the transaction is durable.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl From<Sender<Outcome>> for Reply {
    fn from(s: Sender<Outcome>) -> Self {
        Self::Thread(s)
    }
}

/// What the driver is told.
pub enum Event {
    /// Client transactions, already verified; answered once each is durable (or, with
    /// `wait`, committed).
    Submit {
        /// The transactions and their encodings.
        txs: Vec<(Tx, Vec<u8>)>,
        /// Answer only after commit (`Some`), and say when the transaction is stored there (a
        /// waiting submission holds one transaction: the flag is set when any of its
        /// transactions is stored).
        wait: Option<Stored>,
        /// Where the answer goes (one per transaction, same order).
        reply: Reply,
    },
    /// A client waits for a transaction submitted before (`tx_getTransactionReceipt` with
    /// `wait`): answered `Committed` at once if it is, at its commit if it is in the pool,
    /// else `Unknown`.
    Await {
        /// The transaction's hash.
        hash: Digest,
        /// Where the answer goes.
        reply: Reply,
        /// Set once the driver holds the transaction and counts the client among its waiters:
        /// a wait that runs out after is "pending", before it "retry".
        stored: Stored,
    },
    /// Transactions gossiped by a peer, already verified.
    PeerTxs(Vec<(Tx, Vec<u8>)>),
    /// A consensus envelope from a peer (its signature is checked by the engine).
    Envelope(Envelope),
    /// A peer (the link's authenticated node) wants transaction bodies.
    WantTxs(NodeId, Vec<Digest>),
    /// Blocks from a peer (unchecked).
    Blocks(Vec<(Vec<u8>, Vec<Vec<u8>>)>),
    /// The signer's answer (`None`: it failed; the engine recovers on its timers).
    Signed(u64, Option<Vec<u8>>),
    /// `node_getNodes`.
    Nodes(Sender<Value>),
    /// The signer's double-sign guard refused one of this node's messages.
    SignerRefused(String),
    /// A committed block's write may have landed ([`crate::host::Writes`]).
    Written,
    /// The process is asked to stop (SIGTERM or SIGINT): the driver finishes the batch of
    /// events in hand, saves the state map's checkpoint and returns.
    Stop,
}

/// SM2/SM3 verification of consensus signatures: the signer signs the SM3 digest of the
/// signing payload in the consensus domain. Whose key counts is the engine's business (its
/// configurations); this checks a signature under the key it is given, keeping parsed keys.
#[derive(Clone, Default)]
pub struct Sm2Verifier {
    keys: Arc<RwLock<HashMap<Vec<u8>, PublicKey>>>,
}

impl Sm2Verifier {
    /// The parsed key for SEC1 `bytes` (kept for the next time).
    fn key(&self, bytes: &[u8]) -> Option<PublicKey> {
        if let Some(k) = self.keys.read().ok()?.get(bytes) {
            return Some(k.clone());
        }
        let k = PublicKey::from_sec1(bytes).ok()?;
        let mut keys = self.keys.write().ok()?;
        if keys.len() > 4096 {
            keys.clear();
        }
        keys.insert(bytes.to_vec(), k.clone());
        Some(k)
    }
}

impl Verifier for Sm2Verifier {
    fn digest(&self, bytes: &[u8]) -> CDigest {
        CDigest(hash(bytes).0)
    }

    fn verify(&self, key: &CKey, payload: &[u8], sig: &CSig) -> CVer {
        let ok = self.key(&key.0).is_some_and(|pk| {
            Signature::from_raw(&sig.0)
                .is_ok_and(|s| pk.verify_in(Domain::CONSENSUS, &hash(payload).0, &s).is_valid())
        });
        if ok { CVer::Valid } else { CVer::Invalid }
    }
}

/// A job for the signer thread.
pub struct SignJob {
    /// The engine's token.
    pub token: u64,
    /// The consensus signing payload: the signer decodes and hashes it itself.
    pub payload: Vec<u8>,
}

/// Runs signing jobs against the signer socket, one at a time, reconnecting as needed. A
/// refusal by the signer's double-sign guard is reported to the driver
/// ([`Event::SignerRefused`]) so that `node_getNodes` and `vpbox status` show it.
pub fn signer_thread(socket: PathBuf, key: String, jobs: Receiver<SignJob>, events: Outbox) {
    let mut client: Option<Client> = None;
    for job in jobs {
        let mut answer = None;
        for attempt in 0..20 {
            if client.is_none() {
                client = Client::connect(&socket).ok();
            }
            let Some(c) = client.as_mut() else {
                std::thread::sleep(Duration::from_millis(100 * (attempt + 1).min(5)));
                continue;
            };
            match c.sign(&key, Domain::CONSENSUS, &job.payload) {
                Ok(sig) => {
                    answer = Some(sig.to_raw().to_vec());
                    break;
                }
                Err(ClientError::Refused(status, msg)) => {
                    tracing::warn!(status = ?status, "signer refused: {status:?} {msg}");
                    if status.is_guard_refusal() {
                        let _ = events.send(Event::SignerRefused(format!("{status:?}: {msg}")));
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!("signer: {e}; reconnecting");
                    client = None;
                }
            }
        }
        if events.send(Event::Signed(job.token, answer)).is_err() {
            return;
        }
    }
}

/// An informational event of the node (`vpbox_log` sends it to journald or standard error).
/// Never carries keys or PINs.
pub fn tracing_line(msg: &str) {
    tracing::info!("{msg}");
}

struct Parked {
    seq: SeqNo,
    token: u64,
    batch: Batch,
    asked: Option<Instant>,
}

/// What a driver is made of: its identity and founding file, the ledger, and the seams of
/// [`crate::host`] it reaches the world through. [`Driver::open`] makes the real ones; the
/// simulator makes simulated ones.
pub struct Host<V> {
    /// This node.
    pub id: NodeId,
    /// The founding file.
    pub genesis: Arc<Genesis>,
    /// Checks consensus signatures.
    pub verifier: V,
    /// The ledger (RocksDB), shared with the API and the block server.
    pub ledger: Arc<RwLock<Ledger>>,
    /// The consensus WAL and its records.
    pub wal: (Box<dyn Log>, crate::log::WalRecords),
    /// The durable intake.
    pub intake: Intake,
    /// The peer links.
    pub transport: Box<dyn Transport>,
    /// The signer.
    pub signer: Box<dyn SignQueue>,
    /// Where committed blocks' synced writes go.
    pub writes: Box<dyn Writes>,
    /// The clocks.
    pub clock: Box<dyn Clock>,
    /// What the links refused (shown in `node_getNodes`).
    pub link_stats: Arc<LinkStats>,
    /// Stops the node on a failure it cannot continue past (the process exits; the simulator
    /// fails the seed).
    pub fatal: fn(&str) -> !,
}

/// The driver's state.
pub struct Driver<V: Verifier + Clone = Sm2Verifier> {
    id: NodeId,
    genesis: Arc<Genesis>,
    verifier: V,
    engine: Engine<V>,
    ledger: Arc<RwLock<Ledger>>,
    /// Executed blocks above the ledger's tip, in order (a block's height is its seq): the one
    /// being written first, if any ([`Self::writing`]), then the uncommitted ones.
    spec: Vec<Executed>,
    /// The height of the committed block whose write is under way ([`Writes`]): it stays first
    /// in `spec` until [`Self::finish_write`], and the blocks above it execute on it meanwhile.
    writing: Option<u64>,
    writes: Box<dyn Writes>,
    wal: Box<dyn Log>,
    wal_dirty: bool,
    wal_compacted_at: u64,
    wal_records: Vec<Vec<u8>>,
    intake: Intake,
    pool: Mempool,
    parked: Option<Parked>,
    fetch: Option<Transfer>,
    timers: HashMap<Timer, Instant>,
    waiters: HashMap<Digest, Vec<Reply>>,
    links: Box<dyn Transport>,
    signer: Box<dyn SignQueue>,
    clock: Box<dyn Clock>,
    fatal: fn(&str) -> !,
    status: Status,
    inputs: VecDeque<Input>,
    link_stats: Arc<LinkStats>,
    metrics: crate::metrics::Metrics,
    /// [`Event::Stop`] came.
    stopping: bool,
    /// Whether a state fetch is under way and advancing, as of the last tick
    /// ([`Self::catching_up`]).
    catching_up: Arc<AtomicBool>,
    /// When the state fetch under way started or last committed a block.
    fetch_progress: Option<Instant>,
}

/// Opening the node failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

fn err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

/// The real node's threads that [`Driver::open`] reaches the world through.
pub struct Threads {
    /// The peer links.
    pub links: Links,
    /// What the links refused.
    pub link_stats: Arc<LinkStats>,
    /// The signer thread's queue.
    pub signer: Sender<SignJob>,
    /// The driver's inbox, through which the `ledger-write` thread wakes it.
    pub wake: crate::inbox::Outbox,
}

impl Driver {
    /// Opens the node's state under `data_dir` (its WAL and intake journals) and restores the
    /// engine from it, with the real clock, links, signer and ledger writer.
    pub fn open(
        id: NodeId,
        genesis: Arc<Genesis>,
        data_dir: &Path,
        ledger: Arc<RwLock<Ledger>>,
        threads: Threads,
    ) -> Result<Self, StartError> {
        let Threads { links, link_stats, signer, wake } = threads;
        let (wal, wal_records) =
            crate::log::open_wal(&data_dir.join("consensus.wal")).map_err(StartError)?;
        let intake =
            Intake::open(&data_dir.join("intake.log"), |b| Tx::decode(b).ok().map(|t| t.hash()))
                .map_err(|e| err("intake")(&e))?;
        Self::start(Host {
            id,
            genesis,
            verifier: Sm2Verifier::default(),
            ledger,
            wal: (Box::new(wal), wal_records),
            intake,
            transport: Box::new(links),
            signer: Box::new(signer),
            writes: Box::new(WriterThread::start(wake).map_err(|e| err("thread")(&e))?),
            clock: Box::new(SystemClock),
            link_stats,
            fatal,
        })
    }
}

impl<V: Verifier + Clone> Driver<V> {
    /// Makes the driver from its parts and restores the engine from the WAL, the ledger and
    /// the intake.
    pub fn start(host: Host<V>) -> Result<Self, StartError> {
        let Host {
            id,
            genesis,
            verifier,
            ledger,
            wal: (wal, wal_records),
            intake,
            transport,
            signer,
            writes,
            clock,
            link_stats,
            fatal,
        } = host;
        let config = genesis.consensus_config().map_err(|e| err("genesis")(&e))?;
        let engine = Engine::new(id, config, genesis.params.clone(), verifier.clone())
            .map_err(|e| err("consensus")(&e))?;
        let wal_compacted_at = wal.bytes();
        let now = clock.now();
        let mut d = Self {
            id,
            genesis,
            verifier,
            engine,
            ledger,
            spec: Vec::new(),
            writing: None,
            writes,
            wal,
            wal_dirty: false,
            wal_compacted_at,
            wal_records: Vec::new(),
            intake,
            pool: Mempool::new(now),
            parked: None,
            fetch: None,
            timers: HashMap::new(),
            waiters: HashMap::new(),
            links: transport,
            signer,
            clock,
            fatal,
            status: Status::default(),
            inputs: VecDeque::new(),
            link_stats,
            metrics: crate::metrics::Metrics::default(),
            stopping: false,
            catching_up: Arc::new(AtomicBool::new(false)),
            fetch_progress: None,
        };
        d.restore(wal_records)?;
        d.publish_catching_up();
        Ok(d)
    }

    fn restore(&mut self, wal_records: crate::log::WalRecords) -> Result<(), StartError> {
        let mut records = Vec::new();
        for (bytes, r) in wal_records {
            records.push(r);
            self.wal_records.push(bytes);
        }
        let (committed, state, recent) = {
            let ledger = self.ledger.read().map_err(|_| StartError("ledger lock".into()))?;
            let tip = *ledger.tip().ok_or_else(|| StartError("ledger has no genesis".into()))?;
            let window = self.genesis.params.window;
            let mut recent = Vec::new();
            for h in tip.height.saturating_sub(window).max(1)..=tip.height {
                if let Some(entry) = ledger.block(h).ok().flatten().and_then(|b| entry_of(&b)) {
                    recent.push(entry);
                }
            }
            (SeqNo(tip.height), CDigest(tip.hash().0), recent)
        };
        self.inputs.push_back(Input::Restore {
            records,
            committed,
            state,
            recent,
            configs: self.configs(),
        });
        // Acknowledged transactions not committed yet are proposed again.
        let pending: Vec<(Digest, Vec<u8>)> =
            self.intake.pending().map(|(h, b)| (*h, b.to_vec())).collect();
        let mut done = Vec::new();
        for (h, bytes) in pending {
            let committed = self
                .ledger
                .read()
                .map(|l| l.transaction(&h).ok().flatten().is_some())
                .unwrap_or(false);
            if committed {
                done.push(h);
            } else if let Ok(tx) = Tx::decode(&bytes) {
                self.pool.insert(h, tx, Arc::new(bytes), self.clock.now());
                self.inputs.push_back(Input::Transaction(CDigest(h.0)));
            }
        }
        self.intake.committed(&done).map_err(|e| err("intake")(&e))?;
        self.pump();
        Ok(())
    }

    /// Runs until every sender of the inbox is gone, or [`Event::Stop`]: then it saves the
    /// state map's checkpoint ([`Ledger::save_state`]), so that the next start opens the
    /// ledger without hashing every anchor again. Everything acknowledged is durable before
    /// that, so a stop that does not get this far (a crash, SIGKILL) loses nothing: the next
    /// start only takes longer. Whether the checkpoint was saved is what it returns.
    pub fn run(mut self, inbox: Inbox) -> bool {
        loop {
            let wait = self.deadline().saturating_duration_since(self.clock.now());
            match inbox.recv(wait, 4096) {
                Ok(batch) if batch.is_empty() => {}
                Ok(batch) => self.handle(batch),
                Err(Closed) => return false,
            }
            if self.stopping {
                break;
            }
            self.tick();
        }
        self.finish_write(true);
        let saved = match self.ledger.read() {
            Ok(l) => {
                l.save_state().map(|()| l.height().saturating_sub(1)).map_err(|e| e.to_string())
            }
            Err(_) => Err("the ledger's lock is poisoned".into()),
        };
        match saved {
            Ok(tip) => {
                tracing::info!(tip, "stopped; the state map is saved as of block {tip}");
                true
            }
            Err(e) => {
                tracing::warn!(
                    "stopped; the state map could not be saved ({e}): the next start rebuilds \
                     it from the anchors"
                );
                false
            }
        }
    }

    /// A flag that says, as of the last [`Self::tick`], whether the node is catching up
    /// (fetching committed blocks from its peers, and committing them): what can wait, such as
    /// the checkpoint's check, waits while it is set.
    pub fn catching_up(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.catching_up)
    }

    /// When [`Self::tick`] is next due: the nearest timer, or a retry period from now.
    pub fn deadline(&self) -> Instant {
        let now = self.clock.now();
        let retry = now + RETRY;
        self.timers.values().min().map_or(retry, |t| (*t).min(retry))
    }

    /// Fires the timers that are due, retries parked executions, state fetches and gossip, and
    /// carries out what follows.
    pub fn tick(&mut self) {
        self.finish_write(false);
        let now = self.clock.now();
        let mut due: Vec<(Instant, Timer)> =
            self.timers.iter().filter(|(_, t)| **t <= now).map(|(k, t)| (*t, *k)).collect();
        // In deadline order, so that a run is the same whatever the map's order.
        due.sort_unstable();
        for (_, t) in due {
            self.timers.remove(&t);
            self.inputs.push_back(Input::Timeout(t));
        }
        self.retry();
        self.pump();
        self.publish_catching_up();
    }

    /// Sets [`Self::catching_up`]'s flag: a state fetch is under way and committed a block (or
    /// started) within [`STALLED`]. A fetch that does not advance — its peers silent, or its
    /// blocks refused or re-executing differently, as a corrupt ledger makes them — is not
    /// catching up: what waits on it, the checkpoint's check first of all, goes on.
    fn publish_catching_up(&self) {
        let now = self.clock.now();
        let advancing = self.fetch.is_some()
            && self.fetch_progress.is_some_and(|t| now.saturating_duration_since(t) < STALLED);
        self.catching_up.store(advancing, Ordering::Relaxed);
    }

    /// Takes a batch of events from the inbox.
    pub fn handle(&mut self, batch: Vec<Event>) {
        self.events(batch);
    }

    fn events(&mut self, batch: Vec<Event>) {
        self.finish_write(false);
        let mut submits = Vec::new();
        let mut awaits = Vec::new();
        let mut gossip = Vec::new();
        for ev in batch {
            match ev {
                Event::Submit { txs, wait, reply } => submits.push((txs, wait, reply)),
                Event::Await { hash, reply, stored } => awaits.push((hash, reply, stored)),
                Event::PeerTxs(txs) => gossip.extend(txs),
                Event::Envelope(env) => self.inputs.push_back(Input::Message(env)),
                Event::WantTxs(from, hashes) => self.serve_txs(from, &hashes),
                Event::Blocks(blocks) => self.on_blocks(blocks),
                Event::Signed(token, Some(sig)) => {
                    self.inputs.push_back(Input::Signed { token, signature: CSig(sig) })
                }
                Event::Signed(_, None) => {}
                Event::Nodes(reply) => {
                    let _ = reply.send(self.nodes());
                }
                Event::SignerRefused(reason) => {
                    self.status.refused(reason, self.clock.now(), self.clock.wall())
                }
                Event::Stop => self.stopping = true,
                // Taken above: the write's result, if it is there.
                Event::Written => {}
            }
        }
        // The gossip and every client's submission of the batch in one write (one fsync).
        let mut groups: Vec<Group> = Vec::with_capacity(submits.len() + 1);
        if !gossip.is_empty() {
            groups.push((gossip, None));
        }
        groups.extend(submits.into_iter().map(|(txs, wait, reply)| (txs, Some((wait, reply)))));
        if !groups.is_empty() {
            self.admit(groups);
        }
        // After the submissions of the same batch, so that a client's submit and wait sent
        // one after the other find the transaction in the pool.
        for (hash, reply, stored) in awaits {
            self.await_tx(hash, reply, &stored);
        }
        self.pump();
    }

    /// A client's wait for a transaction: its receipt now, a place among its waiters (past
    /// [`WAITERS_MAX`], `Busy`), or `Unknown`.
    fn await_tx(&mut self, hash: Digest, reply: Reply, stored: &Stored) {
        let outcome = if let Some(receipt) = self.committed_receipt(&hash) {
            Outcome::Committed { hash, receipt, duplicate: true }
        } else if !self.pool.contains(&hash) {
            Outcome::Unknown
        } else {
            match self.wait_for(hash, reply) {
                Ok(()) => stored.set(),
                Err(back) => {
                    let _ = back.send(Outcome::Busy);
                }
            }
            return;
        };
        let _ = reply.send(outcome);
    }

    /// The receipt of `hash` if it is committed (none if the ledger cannot say).
    fn committed_receipt(&self, hash: &Digest) -> Option<Receipt> {
        self.ledger.read().ok().and_then(|l| l.receipt(hash).ok().flatten())
    }

    /// Answers `reply` when `hash` commits, unless [`WAITERS_MAX`] wait for it already (then
    /// `reply` comes back).
    fn wait_for(&mut self, hash: Digest, reply: Reply) -> Result<(), Reply> {
        let waiters = self.waiters.entry(hash).or_default();
        if waiters.len() >= WAITERS_MAX {
            return Err(reply);
        }
        waiters.push(reply);
        Ok(())
    }

    /// Stores new transactions durably — every group's in one write and one fsync (group
    /// commit: the clients whose submissions arrived together share it) — proposes them,
    /// gossips the clients' ones, and answers each client, in its transactions' order.
    fn admit(&mut self, groups: Vec<Group>) {
        /// A transaction's answer: known at once, or once the write is done.
        enum Slot {
            Now(Outcome),
            Stored(Digest),
        }
        let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(groups.len());
        let mut clients = Vec::with_capacity(groups.len());
        // Each new transaction, and whether a client sent it (those are gossiped).
        let mut fresh: Vec<(Digest, Tx, Vec<u8>, bool)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (txs, client) in groups {
            let mut answers = Vec::with_capacity(txs.len());
            for (tx, bytes) in txs {
                let h = tx.hash();
                if let Some(receipt) = self.committed_receipt(&h) {
                    answers.push(Slot::Now(Outcome::Committed {
                        hash: h,
                        receipt,
                        duplicate: true,
                    }));
                } else if self.pool.contains(&h) {
                    answers.push(Slot::Now(Outcome::Accepted(h)));
                } else if seen.contains(&h) {
                    // Sent twice in this batch (two clients, or a client and the gossip): its
                    // answer is the write's, as the first one's.
                    answers.push(Slot::Stored(h));
                } else if !self.pool.has_room(fresh.len()) {
                    answers.push(Slot::Now(Outcome::Busy));
                } else {
                    answers.push(Slot::Stored(h));
                    seen.insert(h);
                    fresh.push((h, tx, bytes, client.is_some()));
                }
            }
            slots.push(answers);
            clients.push(client);
        }
        let stored = {
            let refs: Vec<(Digest, &[u8])> =
                fresh.iter().map(|(h, _, b, _)| (*h, b.as_slice())).collect();
            self.intake.admit(&refs)
        };
        let failure = stored.as_ref().err().map(|e| e.to_string());
        if let Some(f) = &failure {
            tracing_line(&format!("intake: {f}"));
        } else {
            let mut gossip = Vec::new();
            let now = self.clock.now();
            for (h, tx, bytes, from_client) in fresh {
                let bytes = Arc::new(bytes);
                if from_client {
                    gossip.push(bytes.as_ref().clone());
                }
                self.pool.insert(h, tx, bytes, now);
                self.inputs.push_back(Input::Transaction(CDigest(h.0)));
            }
            for frame in PeerMsg::txs_in_frames(gossip) {
                self.links.broadcast(&frame);
            }
        }
        for (answers, client) in slots.into_iter().zip(clients) {
            let Some((wait, reply)) = client else { continue };
            for slot in answers {
                let outcome = match (slot, &failure) {
                    (Slot::Now(o), _) => o,
                    (Slot::Stored(_), Some(f)) => Outcome::Failed(f.clone()),
                    (Slot::Stored(h), None) => Outcome::Accepted(h),
                };
                match (outcome, &wait) {
                    (Outcome::Accepted(h), Some(stored)) => {
                        stored.set();
                        // Past the waiters' cap it is stored all the same: told pending.
                        if let Err(reply) = self.wait_for(h, reply.clone()) {
                            let _ = reply.send(Outcome::Accepted(h));
                        }
                    }
                    (o, _) => {
                        let _ = reply.send(o);
                    }
                }
            }
        }
    }

    /// Feeds queued inputs to the engine and carries out its effects until nothing is left.
    ///
    /// Group commit: every queued input is handed to the engine first, its `Persist` effects
    /// appended to the WAL at once and the others kept in order; one fsync then covers them
    /// all, and only after it are the kept effects carried out. No message leaves before what
    /// it depends on is durable (a `Send` that came before a `Persist` waits for it too), and
    /// a burst of votes costs one fsync instead of one each. Effects that feed the engine again
    /// (`Execute` → `Executed`) start the next round. A stable checkpoint's record is the one
    /// `Persist` kept in order with the others (synced by the round's last fsync): the engine
    /// makes a checkpoint stable in the very round that commits its block when the peers'
    /// votes came first, and the record waits for that block's write.
    fn pump(&mut self) {
        let mut kept = Vec::new();
        while !self.inputs.is_empty() {
            while let Some(input) = self.inputs.pop_front() {
                let before = (self.engine.view(), self.engine.is_changing_view());
                let cause = view_change_cause(&input);
                for e in self.engine.handle(input) {
                    match e {
                        // Among the kept effects, in order: after the commit of its block that
                        // may come in the same round, whose write it waits for (`effect`).
                        Effect::Persist(WalRecord::Stable(_)) => kept.push(e),
                        Effect::Persist(_) => self.effect(e),
                        e => kept.push(e),
                    }
                }
                let view = self.engine.view();
                if self.engine.is_changing_view() && (view > before.0 || !before.1) {
                    tracing::warn!(view = view.0, cause, "view change to view {}: {cause}", view.0);
                }
            }
            self.sync_wal();
            for e in kept.drain(..) {
                self.effect(e);
            }
            self.sync_wal();
        }
    }

    fn sync_wal(&mut self) {
        if self.wal_dirty {
            if let Err(e) = self.wal.sync() {
                (self.fatal)(&format!("WAL: {e}"));
            }
            self.wal_dirty = false;
        }
    }

    fn effect(&mut self, e: Effect) {
        match e {
            Effect::Persist(rec) => {
                if let WalRecord::Stable(_) = &rec {
                    // A stable checkpoint only over a ledger that holds its block: a restart
                    // whose ledger is below its last stable checkpoint fetches the state from
                    // its peers, and a node alone has none.
                    self.finish_write(true);
                }
                let bytes = encode_record(&rec);
                if let Err(e) = self.wal.append(&bytes) {
                    (self.fatal)(&format!("WAL: {e}"));
                }
                self.wal_dirty = true;
                self.wal_records.push(bytes);
                if let WalRecord::Stable(p) = &rec {
                    self.compact_wal(p.seq);
                }
            }
            Effect::Sign { token, payload } => self.signer.sign(token, payload),
            Effect::Send { to, envelope } => {
                self.links.send(to, &PeerMsg::Consensus(vpbox_consensus::wire::encode(&envelope)))
            }
            Effect::Broadcast(envelope) => {
                self.links.broadcast(&PeerMsg::Consensus(vpbox_consensus::wire::encode(&envelope)))
            }
            Effect::SetTimer { timer, after_ms } => {
                self.timers.insert(timer, self.clock.now() + Duration::from_millis(after_ms));
            }
            Effect::CancelTimer(timer) => {
                self.timers.remove(&timer);
            }
            Effect::Execute { seq, token, batch } => {
                self.parked = Some(Parked { seq, token, batch, asked: None });
                self.try_execute();
            }
            Effect::Rollback { to } => {
                let writing = self.writing;
                self.spec.retain(|e| {
                    let h = e.block.header.height;
                    h <= to.0 || Some(h) == writing
                });
                if self.parked.as_ref().is_some_and(|p| p.seq > to) {
                    self.parked = None;
                }
            }
            Effect::Commit { seq, batch, result, certificate } => {
                self.commit(seq, &batch, result, &encode_certificate(&certificate))
            }
            Effect::FetchState { seq, state } => {
                self.finish_write(true);
                self.spec.clear();
                self.parked = None;
                // A fetch asked for again (the engine does, on its timer) is not progress.
                if self.fetch.is_none() {
                    self.fetch_progress = Some(self.clock.now());
                }
                self.fetch = Some(Transfer::new(seq, state));
                self.retry();
            }
            Effect::Reconfigured { config } => {
                // The engine and the ledger derive the same configurations; say so if not.
                let derived = self.configs();
                let same = derived.contains(&config);
                let (epoch, seq) = (config.epoch(), config.after().0 + 1);
                let msg = format!(
                    "membership change: epoch {epoch} of {} nodes from sequence {seq} on{}",
                    config.n(),
                    if same { "" } else { " (differs from the ledger's record!)" }
                );
                if same {
                    tracing::info!(epoch, seq, "{msg}");
                } else {
                    tracing::error!(epoch, seq, "{msg}");
                }
            }
            Effect::ViewChanged { view, primary } => {
                self.metrics.view_changes += 1;
                tracing::warn!(
                    view = view.0,
                    primary = primary.0,
                    "entered view {} (primary node {})",
                    view.0,
                    primary.0
                );
            }
            Effect::Heard { from, height } => self.status.heard(from, height.0, self.clock.now()),
            _ => {}
        }
    }

    /// Rewrites the WAL without what a stable checkpoint at `stable` made obsolete, once it
    /// has grown by 8 MiB since the last rewrite.
    fn compact_wal(&mut self, stable: SeqNo) {
        if self.wal.bytes() < self.wal_compacted_at + (8 << 20) {
            return;
        }
        let mut keep: Vec<Vec<u8>> = Vec::new();
        let mut last_view = None;
        let mut last_stable = None;
        let view = self.engine.view();
        for bytes in &self.wal_records {
            match decode_record(bytes) {
                Ok(WalRecord::View { .. }) => last_view = Some(bytes.clone()),
                Ok(WalRecord::Stable(_)) => last_stable = Some(bytes.clone()),
                Ok(WalRecord::Intent(m)) if m.seq().is_some_and(|s| s <= stable) => {}
                // A view change or new view matters only while its view is current (the engine
                // re-signs it after a crash in that view change).
                Ok(WalRecord::Intent(Message::ViewChange(vc))) if vc.view < view => {}
                Ok(WalRecord::Intent(Message::NewView(nv))) if nv.view < view => {}
                Ok(WalRecord::Accepted(env)) if env.message.seq().is_some_and(|s| s <= stable) => {}
                Ok(_) => keep.push(bytes.clone()),
                Err(_) => {}
            }
        }
        let mut records: Vec<Vec<u8>> = last_view.into_iter().chain(last_stable).collect();
        records.extend(keep);
        self.sync_wal();
        match self.wal.rewrite(&mut records.iter().map(Vec::as_slice)) {
            Ok(()) => {
                self.wal_records = records;
                self.wal_compacted_at = self.wal.bytes();
            }
            Err(e) => (self.fatal)(&format!("WAL compaction: {e}")),
        }
    }

    fn body(&self, h: &Digest) -> Option<Tx> {
        if let Some(tx) = self.pool.tx(h) {
            return Some(tx.clone());
        }
        self.ledger.read().ok()?.transaction(h).ok().flatten().map(|(_, _, t)| t)
    }

    fn try_execute(&mut self) {
        let Some(p) = self.parked.as_mut() else { return };
        let (seq, token) = (p.seq, p.token);
        let mut txs = Vec::with_capacity(p.batch.txs.len());
        let mut missing = Vec::new();
        let wanted: Vec<Digest> = p.batch.txs.iter().map(|d| Digest(d.0)).collect();
        for h in &wanted {
            match self.body(h) {
                Some(t) => txs.push(t),
                None => missing.push(*h),
            }
        }
        if !missing.is_empty() {
            let now = self.clock.now();
            let due = self
                .parked
                .as_ref()
                .is_some_and(|p| p.asked.is_none_or(|t| now.saturating_duration_since(t) >= RETRY));
            if due {
                if let Some(p) = self.parked.as_mut() {
                    p.asked = Some(now);
                }
                self.links.broadcast(&PeerMsg::WantTxs { hashes: missing });
            }
            return;
        }
        self.parked = None;
        let tip = match self.ledger.read() {
            Ok(l) => l.tip().map_or(0, |t| t.height),
            Err(_) => return,
        };
        let expected = tip + self.spec.len() as u64 + 1;
        if seq.0 != expected {
            tracing::error!(seq = seq.0, "execute {} out of order (next is {expected})", seq.0);
            return;
        }
        let executed = match self.ledger.read().map(|l| l.execute(&self.spec, txs)) {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => (self.fatal)(&format!("execute {}: {e}", seq.0)),
            Err(_) => return,
        };
        let result = CDigest(executed.block.header.hash().0);
        // A configuration transaction that changes the nodes: the engine makes the new list
        // the next epoch's members at the first checkpoint at or after this block.
        let changed = executed.governance.is_some();
        let members = changed.then(|| self.governance_before()).flatten().and_then(|before| {
            executed.node_change(&before).map(|m| {
                m.into_iter()
                    .map(|(id, key)| Member { id: NodeId(id), public_key: CKey(key.to_vec()) })
                    .collect()
            })
        });
        self.spec.push(executed);
        self.inputs.push_back(Input::Executed { seq, token, result, members });
    }

    /// Commits the executed block `seq`: a block that only anchors, enough of them
    /// ([`Writes::beside`]), is staged and written beside the driver's work ([`Writes`]),
    /// finished once its write lands ([`Self::finish_write`]); any other (a few anchors;
    /// enrollments, CRLs, configuration: what changes admission or the members) is written and
    /// finished at once. One write at a time.
    fn commit(&mut self, seq: SeqNo, batch: &Batch, result: CDigest, certificate: &[u8]) {
        self.finish_write(true);
        let Some(pos) = self.spec.iter().position(|e| e.block.header.height == seq.0) else {
            tracing::error!(seq = seq.0, "commit of {} without its execution", seq.0);
            return;
        };
        let executed = &self.spec[pos];
        if executed.block.header.hash().0 != result.0
            || executed.block.tx_hashes.len() != batch.txs.len()
        {
            (self.fatal)(&format!("commit of {} differs from what this node executed", seq.0));
        }
        if pos == 0 && executed.anchors_only() && self.writes.beside(executed.anchors.len()) {
            let staged = match self.ledger.write() {
                Ok(mut l) => l.stage(executed, certificate),
                Err(_) => (self.fatal)("ledger lock poisoned"),
            };
            match staged {
                Ok(write) => {
                    self.writes.start(write);
                    self.writing = Some(seq.0);
                }
                Err(e) => (self.fatal)(&format!("commit {}: {e}", seq.0)),
            }
            return;
        }
        let executed = self.spec.remove(pos);
        self.write_block(&executed, certificate);
        self.committed_block(&executed);
    }

    /// Finishes the committed block being written once its write has landed (`wait`: waiting
    /// for it): the ledger's tip advances to it, and its clients are answered.
    fn finish_write(&mut self, wait: bool) {
        let Some(height) = self.writing else { return };
        let result = if wait { self.writes.wait() } else { self.writes.poll() };
        let Some(result) = result else {
            if wait {
                (self.fatal)(&format!("commit {height}: its write is lost"));
            }
            return;
        };
        self.writing = None;
        let written = result.unwrap_or_else(|e| (self.fatal)(&format!("commit {height}: {e}")));
        if self.spec.first().map(|e| e.block.header.height) != Some(height) {
            (self.fatal)(&format!(
                "commit {height}: the block written is not the first above the tip"
            ));
        }
        let executed = self.spec.remove(0);
        let finished = match self.ledger.write() {
            Ok(mut l) => l.finish(&executed, written),
            Err(_) => (self.fatal)("ledger lock poisoned"),
        };
        if let Err(e) = finished {
            (self.fatal)(&format!("commit {height}: {e}"));
        }
        self.committed_block(&executed);
    }

    /// The governance state the next speculative block executes on.
    fn governance_before(&self) -> Option<State> {
        self.spec
            .iter()
            .rev()
            .find_map(|e| e.governance.clone())
            .or_else(|| self.ledger.read().ok()?.governance().cloned())
    }

    /// The configurations the committed ledger's node changes lead to, oldest first, the last
    /// of each epoch — the same derivation as the engine's (`Effect::Reconfigured`): a change
    /// committed at `s` applies above the first checkpoint `c ≥ s`; another change at or before
    /// `c` replaces it in the same epoch.
    fn configs(&self) -> Vec<Config> {
        let Ok(genesis) = self.genesis.consensus_config() else { return Vec::new() };
        let changes = match self.ledger.read().map(|l| l.node_changes()) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => (self.fatal)(&format!("ledger: {e}")),
            Err(_) => return Vec::new(),
        };
        derive_configs(genesis, &changes, self.genesis.params.checkpoint_interval)
    }

    /// The configuration that certifies sequence number `seq`.
    fn config_for(&self, seq: u64) -> Option<Config> {
        let genesis = self.genesis.consensus_config().ok()?;
        let configs = self.configs();
        Some(vpbox_proof::epochs::config_for(&genesis, &configs, seq).clone())
    }

    /// Points the peer links at the members of the committed governance state.
    fn update_links(&self) {
        let Ok(ledger) = self.ledger.read() else { return };
        let Some(state) = ledger.governance() else { return };
        let peers = state
            .nodes
            .iter()
            .filter(|n| n.id != self.id.0)
            .filter_map(|n| self.genesis.entry(n).ok())
            .map(|e| crate::peer::Peer { id: e.id, key: e.consensus_key })
            .collect();
        self.links.set_peers(peers);
    }

    fn write_block(&self, executed: &Executed, certificate: &[u8]) {
        let Ok(mut ledger) = self.ledger.write() else { (self.fatal)("ledger lock poisoned") };
        if let Err(e) = ledger.commit(executed, certificate) {
            (self.fatal)(&format!("commit {}: {e}", executed.block.header.height));
        }
    }

    /// Forgets a committed block's transactions and answers whoever waits for them.
    fn committed_block(&mut self, executed: &Executed) {
        if executed.governance.is_some() {
            self.update_links();
        }
        let hashes = &executed.block.tx_hashes;
        let now = self.clock.now();
        self.metrics.blocks += 1;
        self.metrics.transactions += hashes.len() as u64;
        for h in hashes {
            if let Some(arrived) = self.pool.arrived(h) {
                self.metrics.commit_latency.observe(now.saturating_duration_since(arrived));
            }
            self.pool.remove(h);
            let Some(waiters) = self.waiters.remove(h) else { continue };
            let receipt = executed
                .receipts
                .iter()
                .find(|(t, _)| t == h)
                .map(|(_, r)| r.clone())
                .or_else(|| self.committed_receipt(h));
            // Committed, but its receipt not readable now: told pending (a client asks for
            // the receipt again), never left without an answer.
            let outcome = match receipt {
                Some(receipt) => Outcome::Committed { hash: *h, receipt, duplicate: false },
                None => Outcome::Accepted(*h),
            };
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
        if let Err(e) = self.intake.committed(hashes) {
            (self.fatal)(&format!("intake: {e}"));
        }
    }

    fn retry(&mut self) {
        if self.parked.is_some() {
            self.try_execute();
        }
        self.regossip();
        self.ask_blocks();
    }

    /// Sends a state transfer's request for the blocks above this node's tip, if one is due
    /// ([`Transfer::request`]).
    fn ask_blocks(&mut self) {
        let peers = self.fetch_peers();
        let height = self.height();
        let now = self.clock.now();
        if let Some((to, msg)) =
            self.fetch.as_mut().and_then(|f| f.request(now, RETRY, &peers, height))
        {
            self.links.send(to, &msg);
        }
    }

    /// Gossips old transactions again when due ([`crate::mempool`]).
    fn regossip(&mut self) {
        let now = self.clock.now();
        let Some(old) = self.pool.regossip(now, self.intake.pending().map(|(h, _)| h)) else {
            return;
        };
        for frame in PeerMsg::txs_in_frames(old) {
            self.links.broadcast(&frame);
        }
    }

    /// The nodes a state fetch asks, in turn.
    fn fetch_peers(&self) -> Vec<NodeId> {
        self.genesis.nodes.iter().map(|n| n.id).filter(|i| *i != self.id).collect()
    }

    fn height(&self) -> u64 {
        self.ledger.read().ok().and_then(|l| l.tip().map(|t| t.height)).unwrap_or(0)
    }

    fn serve_txs(&self, from: NodeId, hashes: &[Digest]) {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for h in hashes.iter().take(10_000) {
            let enc = match self.pool.bytes(h) {
                Some(b) => b.as_ref().clone(),
                None => match self.body(h) {
                    Some(t) => t.encode(),
                    None => continue,
                },
            };
            bytes += enc.len() + 4;
            if bytes > FRAME_BUDGET {
                break;
            }
            out.push(enc);
        }
        if !out.is_empty() {
            self.links.send(from, &PeerMsg::Txs(out));
        }
    }

    /// Certified blocks for a state fetch ([`crate::transfer`]): each is checked (certificate,
    /// transactions, re-execution to the same header) before it is written.
    fn on_blocks(&mut self, blocks: Vec<(Vec<u8>, Vec<Vec<u8>>)>) {
        let Some(target) = self.fetch.as_ref().map(|f| (f.seq, f.state)) else { return };
        // These are written at once, in order: after the write under way, if any.
        self.finish_write(true);
        // An answer with a block that does not decode is refused whole: the transfer asks
        // again, another peer, after its retry period.
        let blocks = match blocks
            .into_iter()
            .map(|(b, txs)| Block::decode(&b).map(|b| (b, txs)))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(blocks) => blocks,
            Err(e) => {
                tracing::warn!("state transfer: refused a block that does not decode: {e}");
                return;
            }
        };
        // The next range is asked for now, while these execute ([`crate::transfer`]), when
        // the last block here is whole and after this node's tip. (Only its header is
        // trusted so far, to name a height: its certificate is checked in turn below.)
        let last = blocks
            .last()
            .filter(|(b, txs)| b.tx_hashes.len() == txs.len())
            .map(|(b, _)| b.header.height);
        if let Some(last) = last.filter(|l| *l > self.height()) {
            let peers = self.fetch_peers();
            let now = self.clock.now();
            if let Some((to, msg)) = self.fetch.as_mut().and_then(|f| f.prefetch(now, &peers, last))
            {
                self.links.send(to, &msg);
            }
        }
        // Whether this answer brought anything new (a block, or parts of the staged one).
        let mut moved = false;
        for (block, tx_bytes) in blocks {
            let height = self.height();
            if height >= target.0.0 {
                break;
            }
            let Some(mut fetch) = self.fetch.take() else { return };
            let part =
                fetch.part(block, &tx_bytes, height, |b| self.check_block(b), |h| self.body(h));
            self.fetch = Some(fetch);
            let (block, txs) = match part {
                Part::Ready(block, txs) => (block, txs),
                Part::Staged => {
                    // New parts of a large block are progress too (`Driver::catching_up`).
                    self.fetch_progress = Some(self.clock.now());
                    moved = true;
                    continue;
                }
                Part::Skipped => continue,
                Part::Refused(why) => {
                    tracing::warn!("state transfer: refused {why}");
                    return;
                }
            };
            let executed = match self.ledger.read().map(|l| l.execute(&[], txs)) {
                Ok(Ok(e)) => e,
                _ => return,
            };
            if executed.block.header != block.header {
                tracing::error!(
                    seq = block.header.height,
                    "block {} re-executes differently",
                    block.header.height
                );
                return;
            }
            self.write_block(&executed, &block.certificate);
            self.committed_block(&executed);
            self.fetch_progress = Some(self.clock.now());
            moved = true;
        }
        let (tip_h, tip_hash) = match self.ledger.read().ok().and_then(|l| l.tip().copied()) {
            Some(t) => (t.height, t.hash()),
            None => return,
        };
        if tip_h >= target.0.0 {
            self.fetch = None;
            if tip_h == target.0.0 && tip_hash.0 != target.1.0 {
                tracing::error!("state transfer reached the checkpoint with a different state");
            }
            let txs: Vec<CDigest> = self
                .ledger
                .read()
                .ok()
                .and_then(|l| l.block(tip_h).ok().flatten())
                .map(|b| b.tx_hashes.iter().map(|h| CDigest(h.0)).collect())
                .unwrap_or_default();
            self.inputs.push_back(Input::StateFetched {
                seq: SeqNo(tip_h),
                state: CDigest(tip_hash.0),
                txs,
                configs: self.configs(),
            });
        } else if moved {
            // An answer is one frame ([`crate::blocks`]): this one is over. When a prefetch
            // already asked for what comes next while these executed, its retry period starts
            // now (a long execution would have it asked for twice); otherwise the rest of a
            // staged block, or the blocks after these, are asked for now. An answer that
            // brought nothing new (a late copy) leaves the outstanding request to its retry.
            let now = self.clock.now();
            let Some(f) = self.fetch.as_mut() else { return };
            if f.prefetched(tip_h) && !f.is_staged() {
                f.asked_at(now);
            } else {
                f.ask_now();
                self.ask_blocks();
            }
        }
    }

    fn check_block(&self, block: &Block) -> Result<(), String> {
        let cert = decode_certificate(&block.certificate).map_err(|e| e.to_string())?;
        let config =
            self.config_for(block.header.height).ok_or("no configuration for this height")?;
        verify_certificate(&config, &self.verifier, &cert).map_err(|e| e.to_string())?;
        let batch = Batch { txs: block.tx_hashes.iter().map(|h| CDigest(h.0)).collect() };
        let bd = batch_digest(&self.verifier, &batch);
        let expected = block_digest(
            &self.verifier,
            SeqNo(block.header.height),
            &bd,
            &CDigest(block.header.hash().0),
        );
        if cert.seq.0 != block.header.height || cert.block != expected {
            return Err("certificate is for another block".into());
        }
        Ok(())
    }

    fn nodes(&self) -> Value {
        let primary = self.engine.config().primary(self.engine.view());
        let height = self.height();
        let members: Vec<NodeEntry> = match self.ledger.read() {
            Ok(l) => l
                .governance()
                .map(|g| g.nodes.iter().filter_map(|n| self.genesis.entry(n).ok()).collect())
                .unwrap_or_else(|| self.genesis.nodes.clone()),
            Err(_) => self.genesis.nodes.clone(),
        };
        let now = self.clock.now();
        let list: Vec<Value> = members
            .iter()
            .map(|n| {
                let me = n.id == self.id;
                let peer = self.status.peer(n.id, now);
                let status = if me {
                    self.status.own(now, self.engine.is_changing_view())
                } else {
                    peer.status
                };
                json!({
                    "id": n.id.0,
                    "name": n.name,
                    "bank": n.bank,
                    "isPrimary": n.id == primary,
                    "isSelf": me,
                    "status": status,
                    "delay": if me { Some(0) } else { peer.delay },
                    // Its clock minus this node's (ms), from its link's Clock frames.
                    "clockOffsetMs": if me { Some(0) } else { self.link_stats.clock_offset(n.id, now) },
                    "height": if me { height } else { peer.height },
                })
            })
            .collect();
        json!({
            "self": self.id.0,
            "view": self.engine.view().0,
            "primary": primary.0,
            "epoch": self.engine.config().epoch(),
            "height": height,
            "pending": self.pool.len(),
            "signer": self.status.signer_json(),
            "links": self.link_stats.json(),
            "metrics": self.metrics.json(),
            "nodes": list,
        })
    }
}

fn entry_of(block: &Block) -> Option<CommittedEntry> {
    let certificate = decode_certificate(&block.certificate).ok()?;
    Some(CommittedEntry {
        batch: Batch { txs: block.tx_hashes.iter().map(|h| CDigest(h.0)).collect() },
        result: CDigest(block.header.hash().0),
        certificate,
    })
}

/// A failure the node cannot continue past without risking its state (a full disk under the
/// WAL or the ledger, a block that does not match its own execution). It stops; systemd
/// restarts it, and the WAL, the intake and the ledger bring it back where it was.
pub(crate) fn fatal(msg: &str) -> ! {
    tracing::error!("fatal: {msg}; stopping");
    std::process::exit(70)
}

/// Why a view change that `input` started started, for the operator's log: the engine decides,
/// the host only knows what it handed it.
fn view_change_cause(input: &Input) -> &'static str {
    match input {
        Input::Timeout(Timer::Request) => {
            "a pending request was not committed in time (request timer): suspecting the primary"
        }
        Input::Timeout(Timer::NullRequest) => {
            "nothing heard from the primary in time (null-request timer)"
        }
        Input::Timeout(Timer::NewView) => "no valid new view in time (new-view timer): next view",
        Input::Message(env) if matches!(env.message, Message::ViewChange(_)) => {
            "f + 1 replicas asked for a later view"
        }
        Input::Executed { .. } => "the primary's execution result differs from this node's",
        _ => "the consensus engine's decision",
    }
}
