//! The simulated world: N real node hosts ([`Driver`]) on real RocksDB ledgers, joined by a
//! seeded network and clock, with faults, a compromised node's attacks, and invariant checks.
//!
//! Per node, the world plays what the node process's threads and the box's other processes
//! would: the links (each runs the real [`PeerFilter`] on what arrives, as the real link
//! does), the block server (the real [`answer`]), the signer (the real double-sign guard of
//! `vpbox-signer` on a file; the signature itself is a keyed test tag, see [`crate::keys`]),
//! and the disks under the WAL and the intake ([`SimLog`]).
//!
//! A run has two phases. Until [`CHAOS_MS`] the plan's faults act (clients submit transactions
//! to random nodes for the first 6 s of it): message loss, duplication and delay; a node
//! partitioned away (both ways or one way); crashes of up to `f` nodes at a time that tear their journals' unsynced tails (and sometimes kill
//! the signer too); and the attacks of one compromised node (below). Then everything heals:
//! crashed nodes restart and the network is reliable. The run ends when every node has
//! committed every acknowledged transaction at the same chain, or fails at [`LIVENESS_MS`].
//!
//! Checked throughout: **agreement** (every node's block at a height is the same block),
//! **validity** (only submitted transactions are committed, each once), **guard discipline**
//! (an honest host never asks its signer for a vote that conflicts with one it signed, even
//! after a torn WAL), and the **attacks' containment**: a spoofed envelope, a replayed frame, an
//! oversized frame and a forged height never reach the driver or its peer view, and a poisoning
//! signer request is refused while the node goes on voting. Checked at the end: **durability
//! and liveness** (every acknowledged transaction committed everywhere).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vpbox_consensus::wire::{encode, signing_payload};
use vpbox_consensus::{Checkpoint, Digest as CDigest, Envelope, Message, NodeId, SeqNo, Signature};
use vpbox_consensus_sim::rng::Rng;
use vpbox_ledger::block::Block;
use vpbox_ledger::tx::{BATCH_MAX, Payload, Tx, TxBody};
use vpbox_ledger::{BlockWrite, Ledger, Written};
use vpbox_node::blocks::answer;
use vpbox_node::genesis::{Genesis, NodeEntry};
use vpbox_node::host::{Admitted, Clock, PeerFilter, SignQueue, Transport, Writes};
use vpbox_node::intake::Intake;
use vpbox_node::node::{Driver, Event, Host, Outcome, Stored};
use vpbox_node::peer::{FRAME_MAX, LinkStats, Peer, PeerMsg, Replays};
use vpbox_signer::guard::{Guard, Limits, Verdict, classify};
use vpbox_sm::sm2::PublicKey;
use vpbox_sm::sm3::{Digest, hash};
use vpbox_sm::{Signer, SoftwareSigner};

use crate::disk::SimLog;
use crate::keys::{Keys, SimVerifier};

/// Faults and attacks act until this virtual time (ms).
pub const CHAOS_MS: u64 = 8_000;
/// Clients submit until this time.
const SUBMIT_MS: u64 = 6_000;
/// A run that has not converged by this virtual time has lost liveness.
pub const LIVENESS_MS: u64 = CHAOS_MS + 90_000;
/// When a run's big batches ([`SimConfig::big`]) are submitted, 100 ms after a node is cut
/// off for them.
pub const BIG_AT_MS: u64 = 1_000;
/// When the node cut off for the big batches rejoins: long after they commit.
pub const BIG_BACK_MS: u64 = 4_000;
/// More parts of blocks than this sent to the node cut off for the big batches is a transfer
/// that does not move on (a block of eight batches takes two; each retry of a lost answer a
/// few more): a violation, and the run stops there rather than resending until
/// [`LIVENESS_MS`], which takes minutes of real time with blocks this large.
const BIG_PARTS_MAX: u64 = 64;
/// The genesis timestamp (ms since the epoch).
const GENESIS_MS: u64 = 1_764_000_000_000;

/// What a run's plan may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Message loss, duplication and long delays.
    pub network: bool,
    /// A node cut off from the others for a while.
    pub partition: bool,
    /// Crashes and restarts (up to `f` nodes down at a time).
    pub crash: bool,
    /// A crash tears the journals' unsynced tails at a random byte (else keeps all or none).
    pub torn: bool,
    /// A compromised node: spoofed senders, replay floods, an oversized frame, a forged height,
    /// a poisoning request to its signer.
    pub attacks: bool,
}

impl Faults {
    /// Every fault kind and every attack.
    pub fn all() -> Self {
        Self { network: true, partition: true, crash: true, torn: true, attacks: true }
    }
}

/// A run's parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// How many nodes.
    pub nodes: usize,
    /// Client transactions.
    pub txs: usize,
    /// Which faults.
    pub faults: Faults,
    /// Real SM2 signatures instead of keyed tags.
    pub sm2: bool,
    /// Batch transactions of [`BATCH_MAX`] pairs, submitted together at [`BIG_AT_MS`] to one
    /// node while another is cut off both ways until [`BIG_BACK_MS`]: a day-end upload. From
    /// seven on, the block that holds them is larger than an answer's budget
    /// ([`FRAME_BUDGET`](vpbox_node::peer::FRAME_BUDGET)), so the node cut off fetches it in
    /// parts over several answers ([`Report::partial_blocks`]). 0: none, and the plan is the
    /// seed's as before.
    pub big: usize,
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Invariant violations (empty when correct).
    pub violations: Vec<String>,
    /// The common height at the end.
    pub height: u64,
    /// Transactions acknowledged to clients.
    pub acknowledged: usize,
    /// Crashes.
    pub crashes: u64,
    /// Virtual time at the end (ms).
    pub virtual_ms: u64,
    /// Attack frames that reached a live victim, and how many the links dropped.
    pub attack_frames: u64,
    /// Attack frames dropped by the receiving link's checks.
    pub attack_dropped: u64,
    /// Whether the poisoning signer request was made and refused.
    pub poison_refused: bool,
    /// Votes the compromised node's signer signed after the poisoning request.
    pub signed_after_poison: u64,
    /// Block requests of state transfers that reached a peer.
    pub block_requests: u64,
    /// Ticks after which a node said it was catching up (`Driver::catching_up`).
    pub catching_up: u64,
    /// Submissions that reached a node together with others (in one event batch: one
    /// intake write and fsync for all).
    pub grouped: u64,
    /// Parts of blocks (an answer's block with fewer of its transactions than it lists: a
    /// block larger than an answer's budget) that reached the node cut off for the big batches
    /// ([`SimConfig::big`]).
    pub partial_blocks: u64,
    /// Committed blocks written beside the driver ([`Writes`]), those whose write landed at
    /// once (the driver worked on over their records in the store, the ledger's tip below
    /// them, until it heard), and those a crash caught before their write landed.
    pub writes: u64,
    /// See [`Self::writes`].
    pub writes_landed_early: u64,
    /// See [`Self::writes`].
    pub writes_lost: u64,
    /// Batches of events a driver handled while a write of its had landed and it had not heard
    /// (the readers of its ledger leaving the block's records in the store out).
    pub fed_over_landed: u64,
    /// Answers to waiting clients whose flag said their transaction was stored.
    pub waits_stored: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// Another node's envelope, sent on the compromised node's link.
    Spoof,
    /// A copy of a frame the link just carried.
    Replay,
    /// A frame above the link's limit.
    Oversized,
    /// A checkpoint claiming a huge height, with a bad signature.
    ForgedHeight,
}

enum Kind {
    Deliver {
        from: usize,
        to: usize,
        incs: (u64, u64),
        sent: u64,
        bytes: Rc<Vec<u8>>,
        attack: Option<Attack>,
    },
    Tick {
        node: usize,
        inc: u64,
    },
    Sign {
        node: usize,
        inc: u64,
        token: u64,
        payload: Vec<u8>,
    },
    /// A host's block write lands (if it has not yet) and the host hears of it.
    Written {
        node: usize,
        inc: u64,
    },
    Submit(usize),
    Crash {
        node: usize,
        signer: bool,
    },
    Restart(usize),
    /// Cut a node's links: outgoing, incoming, or both (`(out, in)`).
    Isolate(usize, (bool, bool)),
    Rejoin(usize),
    Poison,
    Oversize,
    ForgeHeight,
    Heal,
}

/// The virtual clock every host of a world reads.
#[derive(Clone)]
struct SimClock {
    base: Instant,
    now: Rc<Cell<u64>>,
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now.get())
    }

    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(GENESIS_MS + self.now.get())
    }
}

/// Frames a host queued: `None` is a broadcast.
type Outbox = Rc<RefCell<Vec<(Option<NodeId>, PeerMsg)>>>;

/// A host's links, as the world sees them: frames queue here and the world carries them.
struct SimTransport(Outbox);

impl Transport for SimTransport {
    fn send(&self, to: NodeId, msg: &PeerMsg) {
        self.0.borrow_mut().push((Some(to), msg.clone()));
    }

    fn broadcast(&self, msg: &PeerMsg) {
        self.0.borrow_mut().push((None, msg.clone()));
    }

    fn set_peers(&self, _peers: Vec<Peer>) {}
}

/// Signing jobs a host queued: the engine's token and the payload.
type Jobs = Rc<RefCell<Vec<(u64, Vec<u8>)>>>;

/// A host's signing jobs, for the world's signer.
struct SimSigns(Jobs);

impl SignQueue for SimSigns {
    fn sign(&self, token: u64, payload: Vec<u8>) {
        self.0.borrow_mut().push((token, payload));
    }
}

/// A host's committed block write ([`Writes`]): staged by its driver, landed when the world
/// says — at once (then the driver works on over its records in the store, as over a real
/// write that landed while it executed), or when its [`Kind::Written`] comes, or when the
/// driver waits for it —, and never if the node crashes first. The driver's poll sees it only
/// once its `Kind::Written` came.
#[derive(Default)]
struct SimWriting {
    /// The write, until it lands.
    write: Option<BlockWrite>,
    /// The landed write's result, until the driver takes it.
    landed: Option<Result<Written, String>>,
    /// Its [`Kind::Written`] came: [`Writes::poll`] gives the result.
    reported: bool,
    /// Started since the world last looked ([`World::after`]).
    new: bool,
}

impl SimWriting {
    fn land(&mut self) {
        if let Some(w) = self.write.take() {
            self.landed = Some(w.write().map_err(|e| e.to_string()));
        }
    }
}

/// A host's writes, shared with the world.
type Writing = Rc<RefCell<SimWriting>>;

struct SimWrites(Writing);

impl Writes for SimWrites {
    fn start(&mut self, write: BlockWrite) {
        *self.0.borrow_mut() =
            SimWriting { write: Some(write), landed: None, reported: false, new: true };
    }

    fn poll(&mut self) -> Option<Result<Written, String>> {
        let mut w = self.0.borrow_mut();
        if w.reported { w.landed.take() } else { None }
    }

    fn wait(&mut self) -> Option<Result<Written, String>> {
        let mut w = self.0.borrow_mut();
        w.land();
        w.landed.take()
    }

    /// Every block that only anchors (the simulator's are small): the path under test.
    fn beside(&self, _anchors: usize) -> bool {
        true
    }
}

struct Node {
    id: NodeId,
    dir: PathBuf,
    inc: u64,
    driver: Option<Driver<SimVerifier>>,
    ledger: Option<Arc<RwLock<Ledger>>>,
    wal: SimLog,
    intake: SimLog,
    out: Outbox,
    signs: Jobs,
    writing: Writing,
    guard: Option<Guard>,
    /// Whether its guard has recorded a sequence-numbered position.
    signed_seq: bool,
    filters: HashMap<usize, PeerFilter>,
    /// When the link from a peer was last closed (a bad frame): what was in flight is lost.
    closed: HashMap<usize, u64>,
    /// When each consensus or transaction frame last passed the link from a peer.
    admitted: HashMap<usize, HashMap<Digest, u64>>,
    stats: Arc<LinkStats>,
    next_tick: Option<u64>,
    /// Heights already checked against the world's chain.
    checked: u64,
    /// Each submission's answer to come, and its wait's flag (every other one waits).
    replies: Vec<(usize, Receiver<Outcome>, Option<Stored>)>,
}

/// One seeded run.
pub struct World {
    cfg: SimConfig,
    rng: Rng,
    /// When each block write lands.
    write_rng: Rng,
    now: Rc<Cell<u64>>,
    clock: SimClock,
    /// Pending events by (time, order of scheduling).
    queue: BTreeMap<(u64, u64), Kind>,
    next_id: u64,
    genesis: Arc<Genesis>,
    keys: Rc<Keys>,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    client: SoftwareSigner,
    txs: Vec<(Tx, Vec<u8>)>,
    by_hash: HashMap<Digest, usize>,
    acked: HashSet<usize>,
    tx_ok: RefCell<HashMap<Digest, bool>>,
    chain: BTreeMap<u64, Digest>,
    committed: HashMap<Digest, u64>,
    /// Links cut by a partition, as (from, to).
    blocked: HashSet<(usize, usize)>,
    /// The node cut off while the big batches are submitted: they go to another.
    big_cut: Option<usize>,
    healed: bool,
    compromised: Option<usize>,
    /// The chain's height when the poisoning request was refused.
    poisoned: Option<u64>,
    report: Report,
}

fn fatal(msg: &str) -> ! {
    panic!("node host stopped: {msg}")
}

impl World {
    /// A world for `seed`, its nodes started.
    pub fn new(cfg: SimConfig, seed: u64) -> anyhow::Result<Self> {
        let n = cfg.nodes;
        let keys = Rc::new(Keys::new(n, seed, cfg.sm2)?);
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new().prefix("vpbox-node-sim").tempdir_in(shm)?
        } else {
            tempfile::Builder::new().prefix("vpbox-node-sim").tempdir()?
        };
        let nodes_entries: Vec<NodeEntry> = (0..n)
            .map(|i| NodeEntry {
                id: NodeId(i as u32 + 1),
                bank: format!("bank-{}", i % 2),
                name: format!("node{}", i + 1),
                consensus_key: keys.public_key(i),
                certificate: Vec::new(),
            })
            .collect();
        let name = format!("vpbox-node-sim {n} {seed}");
        let genesis = Arc::new(Genesis {
            chain_id: "vpbox-node-sim".into(),
            hash: hash(&name),
            bytes: name.into_bytes(),
            timestamp_ms: GENESIS_MS,
            tx_window_ms: 600_000,
            params: vpbox_consensus_sim::sim_params(),
            nodes: nodes_entries,
            roots: Vec::new(),
        });
        let now = Rc::new(Cell::new(0));
        #[allow(clippy::disallowed_methods)] // the origin of virtual time; only offsets matter
        let clock = SimClock { base: Instant::now(), now: Rc::clone(&now) };
        let mut rng = Rng::new(seed);
        let client_key = vpbox_sm::sm2::SecretKey::from_bytes(&keys.client_secret())?;
        let client = SoftwareSigner::new(client_key);
        let mut nodes = Vec::new();
        for i in 0..n {
            let node_dir = dir.path().join(format!("node{}", i + 1));
            std::fs::create_dir_all(&node_dir)?;
            let (guard, _) = Guard::open(&node_dir.join("guard.log"), Limits::default())?;
            nodes.push(Node {
                id: NodeId(i as u32 + 1),
                dir: node_dir,
                inc: 0,
                driver: None,
                ledger: None,
                wal: SimLog::new(),
                intake: SimLog::new(),
                out: Rc::default(),
                signs: Rc::default(),
                writing: Rc::default(),
                guard: Some(guard),
                signed_seq: false,
                filters: HashMap::new(),
                closed: HashMap::new(),
                admitted: HashMap::new(),
                stats: Arc::default(),
                next_tick: None,
                checked: 0,
                replies: Vec::new(),
            });
        }
        let mut txs = Vec::new();
        let mut by_hash = HashMap::new();
        for i in 0..cfg.txs {
            let key = hash(format!("slip {seed} {i}")).0;
            let value = hash(format!("value {seed} {i}")).0;
            let body = TxBody {
                submitter: client.public_key().fingerprint(),
                nonce: i as u64,
                timestamp_ms: GENESIS_MS + rng.below(SUBMIT_MS),
                payload: Payload::AnchorPut { key, value },
            };
            let tx = body.sign(&client)?;
            by_hash.insert(tx.hash(), i);
            let bytes = tx.encode();
            txs.push((tx, bytes));
        }
        // The big batches, after the single anchors (their own nonces and keys).
        for b in 0..cfg.big {
            let pairs = (0..BATCH_MAX)
                .map(|p| (hash(format!("batch {seed} {b} {p}")).0, hash(format!("v {p}")).0))
                .collect();
            let body = TxBody {
                submitter: client.public_key().fingerprint(),
                nonce: (cfg.txs + b) as u64,
                timestamp_ms: GENESIS_MS + BIG_AT_MS,
                payload: Payload::AnchorPutBatch(pairs),
            };
            let tx = body.sign(&client)?;
            by_hash.insert(tx.hash(), txs.len());
            let bytes = tx.encode();
            txs.push((tx, bytes));
        }
        let compromised = cfg.faults.attacks.then(|| rng.below(n as u64) as usize);
        let mut w = Self {
            report: Report { seed, ..Report::default() },
            cfg,
            rng,
            write_rng: Rng::new(seed ^ 0x5772_6974_6573),
            now,
            clock,
            queue: BTreeMap::new(),
            next_id: 0,
            genesis,
            keys,
            nodes,
            _dir: dir,
            client,
            txs,
            by_hash,
            acked: HashSet::new(),
            tx_ok: RefCell::new(HashMap::new()),
            chain: BTreeMap::new(),
            committed: HashMap::new(),
            blocked: HashSet::new(),
            big_cut: None,
            healed: false,
            compromised,
            poisoned: None,
        };
        for i in 0..n {
            w.start(i)?;
        }
        w.plan();
        Ok(w)
    }

    fn at(&mut self, time: u64, kind: Kind) {
        self.next_id += 1;
        self.queue.insert((time, self.next_id), kind);
    }

    /// The plan: submissions, crashes, partitions and attacks, all from the seed.
    fn plan(&mut self) {
        let mut last = None;
        for i in 0..self.cfg.txs {
            let t = self.rng.below(SUBMIT_MS);
            // About one in four comes at the same moment as the one before (a burst: they
            // reach a node in one event batch, which picks one node for them all), decided by
            // the time drawn rather than by a draw of its own.
            let t = match last {
                Some(before) if t % 4 == 0 => before,
                _ => t,
            };
            last = Some(t);
            self.at(t, Kind::Submit(i));
        }
        let n = self.nodes.len();
        let f = (n - 1) / 3;
        let faults = self.cfg.faults;
        if faults.crash {
            // Up to f nodes down at once: crash windows of one node each, never overlapping
            // more than f.
            let mut t = self.rng.range(300, 2_000);
            while t < CHAOS_MS - 500 {
                let mut down = Vec::new();
                for _ in 0..f.max(1).min(1 + self.rng.below(f as u64) as usize) {
                    let node = self.rng.below(n as u64) as usize;
                    if !down.contains(&node) {
                        down.push(node);
                    }
                }
                let len = self.rng.range(200, 3_000);
                for node in down {
                    let signer = self.rng.chance(0.3);
                    self.at(t, Kind::Crash { node, signer });
                    self.at(t + len, Kind::Restart(node));
                }
                t += len + self.rng.range(200, 2_500);
            }
        }
        if faults.partition {
            let node = self.rng.below(n as u64) as usize;
            let t = self.rng.range(500, CHAOS_MS - 2_000);
            // Cut off both ways, or one way only (it hears but is not heard, or the reverse),
            // drawn apart from the main stream so that earlier seeds keep their schedules.
            let ways = match Rng::new(self.report.seed ^ 0x09e_0a1).below(3) {
                0 => (true, true),
                1 => (true, false),
                _ => (false, true),
            };
            self.at(t, Kind::Isolate(node, ways));
            let back = t + self.rng.range(500, 3_000);
            self.at(back, Kind::Rejoin(node));
        }
        if faults.attacks {
            let t = self.rng.range(200, CHAOS_MS / 2);
            self.at(t, Kind::Poison);
            let t = self.rng.range(200, CHAOS_MS - 500);
            self.at(t, Kind::Oversize);
            let t = self.rng.range(200, CHAOS_MS - 500);
            self.at(t, Kind::ForgeHeight);
        }
        if self.cfg.big > 0 {
            // Drawn apart from the main stream, so that the rest of the plan is the seed's.
            let node = Rng::new(self.report.seed ^ 0xb16).below(n as u64) as usize;
            self.big_cut = Some(node);
            self.at(BIG_AT_MS - 100, Kind::Isolate(node, (true, true)));
            for i in self.cfg.txs..self.txs.len() {
                self.at(BIG_AT_MS, Kind::Submit(i));
            }
            self.at(BIG_BACK_MS, Kind::Rejoin(node));
        }
        self.at(CHAOS_MS, Kind::Heal);
    }

    fn violation(&mut self, what: String) {
        if self.report.violations.len() < 20 {
            self.report.violations.push(format!("t={}ms: {what}", self.now.get()));
        }
    }

    /// Starts (or restarts) node `i` from its disk: the ledger, the WAL and intake images
    /// after the crash, and the guard's file.
    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let genesis = Arc::clone(&self.genesis);
        let node = &mut self.nodes[i];
        let mut ledger = Ledger::open(&node.dir.join("ledger"))?;
        ledger.init_genesis(&genesis.block())?;
        let ledger = Arc::new(RwLock::new(ledger));
        let wal_path = node.dir.join("consensus.wal");
        let raw = node.wal.reopen(&wal_path).map_err(anyhow::Error::msg)?;
        let wal_records =
            vpbox_node::log::decode_wal(&wal_path, raw).map_err(anyhow::Error::msg)?;
        let intake_path = node.dir.join("intake.log");
        let raw = node.intake.reopen(&intake_path).map_err(anyhow::Error::msg)?;
        let intake = Intake::from_log(Box::new(node.intake.clone()), raw, &intake_path, |b| {
            Tx::decode(b).ok().map(|t| t.hash())
        })?;
        if node.guard.is_none() {
            let (guard, _) = Guard::open(&node.dir.join("guard.log"), Limits::default())?;
            node.guard = Some(guard);
        }
        // A new process: new links (what was in flight to the old one is gone).
        node.inc += 1;
        node.stats = Arc::default();
        node.filters.clear();
        node.admitted.clear();
        node.checked = 0;
        let driver = Driver::start(Host {
            id: node.id,
            genesis,
            verifier: SimVerifier(Rc::clone(&self.keys)),
            ledger: Arc::clone(&ledger),
            wal: (Box::new(node.wal.clone()), wal_records),
            intake,
            transport: Box::new(SimTransport(Rc::clone(&node.out))),
            signer: Box::new(SimSigns(Rc::clone(&node.signs))),
            writes: Box::new(SimWrites(Rc::clone(&node.writing))),
            clock: Box::new(self.clock.clone()),
            link_stats: Arc::clone(&node.stats),
            fatal,
        })
        .map_err(|e| anyhow::anyhow!("node {} start: {e}", i + 1))?;
        node.driver = Some(driver);
        node.ledger = Some(ledger);
        node.next_tick = None;
        self.after(i);
        Ok(())
    }

    fn crash(&mut self, i: usize, signer: bool) {
        let torn = self.cfg.faults.torn;
        let keep_wal = self.keep(self.nodes[i].wal.unsynced(), torn);
        let keep_intake = self.keep(self.nodes[i].intake.unsynced(), torn);
        let node = &mut self.nodes[i];
        if node.driver.is_none() {
            return;
        }
        node.driver = None;
        node.ledger = None;
        // A write that has not landed never will (and its hold on the store goes).
        if std::mem::take(&mut *node.writing.borrow_mut()).write.is_some() {
            self.report.writes_lost += 1;
        }
        node.inc += 1;
        node.wal.crash(keep_wal);
        node.intake.crash(keep_intake);
        node.out.borrow_mut().clear();
        node.signs.borrow_mut().clear();
        // Clients still waiting for the commit see their connection drop. One whose
        // transaction the driver had said is stored counts as acknowledged (its node would
        // have answered it "pending" had its wait run out): it must commit without being sent
        // again. The others send it again.
        let mut unanswered = Vec::new();
        for (tx, _, wait) in node.replies.drain(..) {
            match wait {
                Some(flag) if flag.is_set() => {
                    self.acked.insert(tx);
                }
                _ => unanswered.push(tx),
            }
        }
        if signer {
            node.guard = None;
        }
        self.report.crashes += 1;
        for tx in unanswered {
            let t = self.now.get() + 500;
            self.at(t, Kind::Submit(tx));
        }
    }

    /// How much of an unsynced tail of `n` bytes a crash leaves.
    fn keep(&mut self, n: usize, torn: bool) -> usize {
        if n == 0 {
            0
        } else if torn {
            self.rng.below(n as u64 + 1) as usize
        } else if self.rng.chance(0.5) {
            n
        } else {
            0
        }
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].driver.is_some()
    }

    /// Feeds events to node `i`'s host, then runs its timers (as the real loop does after each
    /// batch), then carries out what it queued.
    fn feed(&mut self, i: usize, events: Vec<Event>) {
        {
            let w = self.nodes[i].writing.borrow();
            if w.landed.is_some() && !w.reported && self.nodes[i].driver.is_some() {
                self.report.fed_over_landed += 1;
            }
        }
        let Some(d) = self.nodes[i].driver.as_mut() else { return };
        if !events.is_empty() {
            d.handle(events);
        }
        d.tick();
        if d.catching_up().load(std::sync::atomic::Ordering::Relaxed) {
            self.report.catching_up += 1;
        }
        self.after(i);
    }

    /// Carries node `i`'s queued frames and signing jobs into the world, collects client
    /// answers, checks its new blocks, and schedules its next tick.
    fn after(&mut self, i: usize) {
        let out: Vec<(Option<NodeId>, PeerMsg)> =
            std::mem::take(&mut *self.nodes[i].out.borrow_mut());
        for (to, msg) in out {
            let bytes = Rc::new(msg.encode());
            match to {
                Some(to) => self.send(i, to.0 as usize - 1, &bytes, None),
                None => {
                    for j in 0..self.nodes.len() {
                        if j != i {
                            self.send(i, j, &bytes, None);
                        }
                    }
                }
            }
        }
        let signs: Vec<(u64, Vec<u8>)> = std::mem::take(&mut *self.nodes[i].signs.borrow_mut());
        let inc = self.nodes[i].inc;
        for (token, payload) in signs {
            let t = self.now.get() + self.rng.range(0, 2);
            self.at(t, Kind::Sign { node: i, inc, token, payload });
        }
        // A block write started: it lands now or later (its own draws, so that the rest of
        // a seed's run is drawn as before).
        if std::mem::take(&mut self.nodes[i].writing.borrow_mut().new) {
            self.report.writes += 1;
            if self.write_rng.chance(0.5) {
                self.nodes[i].writing.borrow_mut().land();
                self.report.writes_landed_early += 1;
            }
            // Most within a few ms; some late (a slow disk), so that a crash finds them.
            let late = self.write_rng.chance(0.2);
            let t = self.now.get()
                + if late { self.write_rng.range(20, 400) } else { self.write_rng.range(0, 10) };
            self.at(t, Kind::Written { node: i, inc });
        }
        let replies = std::mem::take(&mut self.nodes[i].replies);
        for (tx, rx, wait) in replies {
            match rx.try_recv() {
                Ok(o @ (Outcome::Accepted(_) | Outcome::Committed { .. })) => {
                    // A waiting client told pending must have been told its transaction is
                    // stored (what its node's RPC answers on when the wait runs out).
                    match &wait {
                        Some(flag) if flag.is_set() => self.report.waits_stored += 1,
                        Some(_) if matches!(o, Outcome::Accepted(_)) => self.violation(format!(
                            "node {i}: tx {tx}'s waiting client told pending, not told stored"
                        )),
                        _ => {}
                    }
                    self.acked.insert(tx);
                }
                // (`Unknown` answers a wait by hash, never a submission: sent again as a
                // client would.)
                Ok(Outcome::Busy | Outcome::Failed(_) | Outcome::Unknown) => {
                    let t = self.now.get() + 500;
                    self.at(t, Kind::Submit(tx));
                }
                Err(_) => self.nodes[i].replies.push((tx, rx, wait)),
            }
        }
        self.check_chain(i);
        if let Some(d) = &self.nodes[i].driver {
            let deadline = d.deadline().saturating_duration_since(self.clock.base);
            let t = (deadline.as_millis() as u64).max(self.now.get());
            if self.nodes[i].next_tick.is_none_or(|n| t < n) {
                self.nodes[i].next_tick = Some(t);
                self.at(t, Kind::Tick { node: i, inc: self.nodes[i].inc });
            }
        }
    }

    /// Agreement and validity over node `i`'s blocks not checked yet.
    fn check_chain(&mut self, i: usize) {
        let Some(ledger) = self.nodes[i].ledger.clone() else { return };
        let Ok(l) = ledger.read() else { return };
        let tip = l.tip().map_or(0, |t| t.height);
        let mut problems = Vec::new();
        for h in self.nodes[i].checked + 1..=tip {
            let Ok(Some(block)) = l.block(h) else {
                problems.push(format!("node {} lost block {h} below its tip {tip}", i + 1));
                continue;
            };
            let bh = block.header.hash();
            match self.chain.get(&h) {
                Some(known) if *known != bh => {
                    problems.push(format!("node {} committed a different block at {h}", i + 1))
                }
                Some(_) => {}
                None => {
                    self.chain.insert(h, bh);
                    for t in &block.tx_hashes {
                        if !self.by_hash.contains_key(t) {
                            problems.push(format!("block {h} holds a transaction never submitted"));
                        }
                        // A transaction proposed again (a client's retry, an intake replay
                        // racing its commit) may be listed by a later block too; it executes
                        // only in the first, which the ledger's index must name.
                        let first = *self.committed.entry(*t).or_insert(h);
                        let indexed = l.transaction(t).ok().flatten().map(|(at, _, _)| at);
                        if indexed != Some(first) {
                            problems.push(format!(
                                "a transaction first committed at {first} is indexed at {indexed:?}"
                            ));
                        }
                    }
                }
            }
        }
        drop(l);
        self.nodes[i].checked = tip;
        for p in problems {
            self.violation(p);
        }
    }

    /// Puts a frame from `from` to `to` on the network, with the plan's faults.
    fn send(&mut self, from: usize, to: usize, bytes: &Rc<Vec<u8>>, attack: Option<Attack>) {
        // No link to or from a node that is down, or cut off.
        if self.blocked.contains(&(from, to)) || !self.up(to) {
            return;
        }
        let chaos = !self.healed;
        let network = chaos && self.cfg.faults.network;
        if network && attack.is_none() && self.rng.chance(0.03) {
            return;
        }
        let mut delay = self.rng.range(1, 15);
        if network && self.rng.chance(0.05) {
            delay += self.rng.range(50, 400);
        }
        let incs = (self.nodes[from].inc, self.nodes[to].inc);
        let sent = self.now.get();
        let t = sent + delay;
        let kind = Kind::Deliver { from, to, incs, sent, bytes: Rc::clone(bytes), attack };
        self.at(t, kind);
        if network && attack.is_none() && self.rng.chance(0.03) {
            // A duplicate, later: within the replay window it is dropped by the link.
            let t = t + self.rng.range(0, 3_000);
            self.at(t, Kind::Deliver { from, to, incs, sent, bytes: Rc::clone(bytes), attack });
        }
        // The compromised node replays its own consensus and transaction frames in floods (a
        // request frame may be repeated by an honest retry and is not filtered).
        let replayable =
            || matches!(PeerMsg::decode(bytes), Ok(PeerMsg::Consensus(_) | PeerMsg::Txs(_)));
        if chaos
            && Some(from) == self.compromised
            && attack.is_none()
            && self.rng.chance(0.05)
            && replayable()
        {
            for k in 0..self.rng.range(2, 20) {
                let kind = Kind::Deliver {
                    from,
                    to,
                    incs,
                    sent,
                    bytes: Rc::clone(bytes),
                    attack: Some(Attack::Replay),
                };
                self.at(t + 1 + k, kind);
            }
        }
    }

    /// A frame arrives at `to` on its link from `from`.
    fn deliver(
        &mut self,
        from: usize,
        to: usize,
        incs: (u64, u64),
        sent: u64,
        bytes: &[u8],
        attack: Option<Attack>,
    ) {
        // A crash at either end, or a bad frame, broke the link: what was in flight is gone.
        if incs != (self.nodes[from].inc, self.nodes[to].inc)
            || !self.up(to)
            || self.nodes[to].closed.get(&from).is_some_and(|c| sent <= *c)
        {
            return;
        }
        if attack.is_some() {
            self.report.attack_frames += 1;
        }
        let stats = Arc::clone(&self.nodes[to].stats);
        // The link's reader refuses a frame above the limit and closes the link.
        if bytes.len() > FRAME_MAX {
            stats.malformed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.close_link(to, from);
            if attack.is_some() {
                self.report.attack_dropped += 1;
            }
            return;
        }
        let Ok(msg) = PeerMsg::decode(bytes) else {
            stats.malformed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.close_link(to, from);
            return;
        };
        // Parts of blocks the node cut off for the big batches is sent (a link admits an
        // answer of blocks as it is: the state transfer checks it).
        if let (PeerMsg::Blocks(items), true) = (&msg, self.big_cut == Some(to)) {
            let partial = |(b, txs): &(Vec<u8>, Vec<Vec<u8>>)| {
                Block::decode(b).is_ok_and(|b| b.tx_hashes.len() > txs.len())
            };
            self.report.partial_blocks += items.iter().filter(|i| partial(i)).count() as u64;
            if self.transfer_stuck() {
                let n = self.report.partial_blocks;
                self.violation(format!("node {}: sent {n} parts of blocks, no end", to + 1));
            }
        }
        let now = self.clock.now();
        let (tx_ok, client) = (&self.tx_ok, self.client.public_key());
        let window = Replays::window_for(self.genesis.params.heartbeat_interval_ms);
        let verify = |tx: &Tx| verify_tx(tx_ok, client, tx);
        let filter = self.nodes[to]
            .filters
            .entry(from)
            .or_insert_with(|| PeerFilter::new(NodeId(from as u32 + 1), stats, window));
        let admitted = filter.admit(msg, now, GENESIS_MS + self.now.get(), &verify);
        // No consensus or transaction frame passes twice on one link within the window.
        if matches!(admitted, Admitted::Event(Event::Envelope(_) | Event::PeerTxs(_))) {
            let d = hash(bytes);
            let now_ms = self.now.get();
            let seen = self.nodes[to].admitted.entry(from).or_default();
            if let Some(prev) = seen.insert(d, now_ms) {
                if now_ms.saturating_sub(prev) < window.as_millis() as u64 {
                    let msg = format!(
                        "a frame from node {} passed node {}'s link twice within the replay \
                         window ({}): first at {prev}",
                        from + 1,
                        to + 1,
                        describe(bytes)
                    );
                    self.violation(msg);
                }
            }
        }
        match (attack, &admitted) {
            (Some(_), Admitted::Nothing) => self.report.attack_dropped += 1,
            // A copy after the window, or after a link was re-made, is a new frame.
            (Some(Attack::Replay), _) => {}
            (Some(Attack::ForgedHeight), Admitted::Event(_)) => {
                // Reaches the engine, which must refuse its signature: checked at the end.
                self.report.attack_dropped += 1;
            }
            (Some(a), _) => self.violation(format!(
                "{a:?} frame from node {} passed node {}'s link checks (sent at {sent}: {})",
                from + 1,
                to + 1,
                describe(bytes)
            )),
            (None, _) => {}
        }
        match admitted {
            Admitted::Event(ev) => {
                if let Event::Envelope(env) = &ev {
                    self.maybe_forward(to, env);
                }
                self.feed(to, vec![ev]);
            }
            Admitted::WantBlocks { after, upto, skip } => {
                self.report.block_requests += 1;
                let Some(ledger) = self.nodes[to].ledger.clone() else { return };
                let frame = ledger.read().ok().and_then(|l| answer(&l, after, upto, skip as usize));
                if let Some(f) = frame {
                    let bytes = Rc::new(f.encode());
                    self.send(to, from, &bytes, None);
                }
            }
            Admitted::Nothing => {}
        }
    }

    /// Node `at` closes its link from `peer`; the peer reconnects (a new handshake, a new
    /// filter) for what it sends next.
    fn close_link(&mut self, at: usize, peer: usize) {
        let now = self.now.get();
        self.nodes[at].filters.remove(&peer);
        self.nodes[at].admitted.remove(&peer);
        self.nodes[at].closed.insert(peer, now);
    }

    /// The compromised node sends an envelope it received from another node on to a third, on
    /// its own link, as if it were its own.
    fn maybe_forward(&mut self, at: usize, env: &Envelope) {
        if self.healed || self.compromised != Some(at) || env.from.0 as usize == at + 1 {
            return;
        }
        if matches!(env.message, Message::NewView(_) | Message::Heartbeat { .. })
            || !self.rng.chance(0.2)
        {
            return;
        }
        let n = self.nodes.len();
        let to = (at + 1 + self.rng.below(n as u64 - 1) as usize) % n;
        let bytes = Rc::new(PeerMsg::Consensus(encode(env)).encode());
        self.send(at, to, &bytes, Some(Attack::Spoof));
    }

    /// The box's signer for node `i`: decodes the payload, refuses another node's, checks the
    /// guard (durably), and signs.
    fn sign(&mut self, i: usize, payload: &[u8]) -> Result<Signature, (bool, String)> {
        let me = self.nodes[i].id.0;
        let c = classify(payload).map_err(|e| (false, format!("not a signing payload: {e}")))?;
        if c.from != me {
            return Err((false, format!("payload from node {}, signer of node {me}", c.from)));
        }
        if let Some(position) = c.position {
            let guard = self.nodes[i].guard.as_mut().ok_or((false, "signer down".to_string()))?;
            match guard.check(position, hash(payload).0) {
                Ok(Verdict::Recorded | Verdict::Repeat) => {
                    self.nodes[i].signed_seq |= position.seq > 0;
                }
                Ok(v) => return Err((true, format!("{v:?} at {position}"))),
                Err(e) => return Err((false, e.to_string())),
            }
        }
        Ok(self.keys.sign(i, payload))
    }

    fn on_sign(&mut self, i: usize, token: u64, payload: &[u8]) {
        match self.sign(i, payload) {
            Ok(sig) => {
                if self.poisoned.is_some() && self.compromised == Some(i) {
                    self.report.signed_after_poison += 1;
                }
                self.feed(i, vec![Event::Signed(token, Some(sig.0))]);
            }
            Err((guard, why)) => {
                if guard {
                    self.violation(format!(
                        "node {}'s host asked its signer for a refused vote: {why}",
                        i + 1
                    ));
                }
                let mut events = vec![Event::Signed(token, None)];
                if guard {
                    events.insert(0, Event::SignerRefused(why));
                }
                self.feed(i, events);
            }
        }
    }

    fn submit(&mut self, tx: usize) {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.up(i)).collect();
        if live.is_empty() {
            let t = self.now.get() + 200;
            self.at(t, Kind::Submit(tx));
            return;
        }
        // The submissions due at the same moment reach one node in one event batch, as the
        // RPC threads' do under load: they share the intake's write and fsync (group commit),
        // and each must still be answered and, once acknowledged, never lost.
        let mut due = vec![tx];
        while let Some((&(t, _), Kind::Submit(_))) = self.queue.first_key_value() {
            if t != self.now.get() {
                break;
            }
            if let Some((_, Kind::Submit(next))) = self.queue.pop_first() {
                due.push(next);
            }
        }
        // Big batches among them go to a node that is not cut off for them.
        let live: Vec<usize> = match self.big_cut {
            Some(cut) if due.iter().any(|&t| t >= self.cfg.txs) && live.len() > 1 => {
                live.into_iter().filter(|&i| i != cut).collect()
            }
            _ => live,
        };
        let i = live[self.rng.below(live.len() as u64) as usize];
        let grouped = due.len();
        let syncs = self.nodes[i].intake.syncs();
        let events = due
            .into_iter()
            .map(|tx| {
                let (reply, rx) = channel();
                // Every other client waits for the commit (no draw: a seed runs as before).
                let wait = (tx % 2 == 1).then(Stored::default);
                self.nodes[i].replies.push((tx, rx, wait.clone()));
                let (t, b) = self.txs[tx].clone();
                Event::Submit { txs: vec![(t, b)], wait, reply: reply.into() }
            })
            .collect();
        self.feed(i, events);
        if grouped > 1 {
            self.report.grouped += grouped as u64;
            let took = self.nodes[i].intake.syncs() - syncs;
            if took > 1 {
                self.violation(format!(
                    "node {}: {grouped} submissions that arrived together took {took} fsyncs",
                    i + 1
                ));
            }
        }
    }

    /// The compromised node asks its own signer to sign a checkpoint at 2^62, which would move
    /// a naive guard out of range for every later vote.
    fn poison(&mut self) {
        let Some(c) = self.compromised else { return };
        // A fresh guard takes its first sequence-numbered position anywhere (a box joining a
        // long chain; see the guard's docs): the attack is made on a guard that has signed one.
        if self.nodes[c].guard.is_none() || !self.nodes[c].signed_seq {
            let t = self.now.get() + 200;
            if t < CHAOS_MS {
                self.at(t, Kind::Poison);
            }
            return;
        }
        let msg = Message::Checkpoint(Checkpoint { seq: SeqNo(1 << 62), state: CDigest([7; 32]) });
        let payload = signing_payload(0, self.nodes[c].id, &msg);
        match self.sign(c, &payload) {
            Ok(_) => self.violation("the signer signed a checkpoint at 2^62".into()),
            Err(_) => {
                self.report.poison_refused = true;
                self.poisoned = Some(self.chain.len() as u64);
            }
        }
    }

    /// The compromised node sends each peer a frame one byte above the links' limit.
    fn oversize(&mut self) {
        let Some(c) = self.compromised else { return };
        let bytes = Rc::new(vec![0u8; FRAME_MAX + 1]);
        for j in 0..self.nodes.len() {
            if j != c {
                self.send(c, j, &bytes, Some(Attack::Oversized));
            }
        }
    }

    /// The compromised node claims a huge height in a checkpoint with a bad signature.
    fn forge_height(&mut self) {
        let Some(c) = self.compromised else { return };
        let env = Envelope {
            from: self.nodes[c].id,
            message: Message::Checkpoint(Checkpoint {
                seq: SeqNo(999_999_999_999),
                state: CDigest([9; 32]),
            }),
            signature: Signature(vec![1; 32]),
        };
        let bytes = Rc::new(PeerMsg::Consensus(encode(&env)).encode());
        for j in 0..self.nodes.len() {
            if j != c {
                self.send(c, j, &bytes, Some(Attack::ForgedHeight));
            }
        }
    }

    fn heal(&mut self) -> anyhow::Result<()> {
        self.healed = true;
        self.blocked.clear();
        for i in 0..self.nodes.len() {
            if !self.up(i) {
                self.start(i)?;
            }
        }
        Ok(())
    }

    /// Whether every node is up, at the same height, with every acknowledged transaction
    /// committed.
    fn converged(&self) -> bool {
        let all_acked =
            self.acked.iter().all(|t| self.committed.contains_key(&self.txs[*t].0.hash()));
        let tips: Vec<u64> = self.nodes.iter().map(|n| n.checked).collect();
        self.healed
            && all_acked
            && self.acked.len() == self.txs.len()
            && tips.iter().all(|t| *t == tips[0])
            && (0..self.nodes.len()).all(|i| self.up(i))
    }

    /// Whether the node cut off for the big batches was sent more than [`BIG_PARTS_MAX`]
    /// parts of blocks: a violation when it happens, and the end of the run.
    fn transfer_stuck(&self) -> bool {
        self.report.partial_blocks > BIG_PARTS_MAX
    }

    /// Runs the world to the end; the report.
    pub fn run(mut self) -> anyhow::Result<Report> {
        let mut steps: u64 = 0;
        while let Some(((time, _), kind)) = self.queue.pop_first() {
            if time > LIVENESS_MS || self.transfer_stuck() {
                break;
            }
            self.now.set(self.now.get().max(time));
            steps += 1;
            match kind {
                Kind::Deliver { from, to, incs, sent, bytes, attack } => {
                    self.deliver(from, to, incs, sent, &bytes, attack)
                }
                Kind::Tick { node, inc } => {
                    if self.nodes[node].inc == inc && self.nodes[node].next_tick == Some(time) {
                        self.nodes[node].next_tick = None;
                        self.feed(node, Vec::new());
                    }
                }
                Kind::Sign { node, inc, token, payload } => {
                    if self.nodes[node].inc == inc && self.up(node) {
                        self.on_sign(node, token, &payload);
                    }
                }
                Kind::Written { node, inc } => {
                    if self.nodes[node].inc == inc && self.up(node) {
                        let mut w = self.nodes[node].writing.borrow_mut();
                        w.land();
                        w.reported = true;
                        drop(w);
                        self.feed(node, vec![Event::Written]);
                    }
                }
                Kind::Submit(tx) => self.submit(tx),
                Kind::Crash { node, signer } => self.crash(node, signer),
                Kind::Restart(node) => {
                    if !self.healed && !self.up(node) {
                        self.start(node)?;
                    }
                }
                Kind::Isolate(node, (out, inward)) => {
                    if !self.healed {
                        for j in (0..self.nodes.len()).filter(|&j| j != node) {
                            if out {
                                self.blocked.insert((node, j));
                            }
                            if inward {
                                self.blocked.insert((j, node));
                            }
                        }
                    }
                }
                Kind::Rejoin(node) => {
                    self.blocked.retain(|(a, b)| *a != node && *b != node);
                }
                Kind::Poison => self.poison(),
                Kind::Oversize => self.oversize(),
                Kind::ForgeHeight => self.forge_height(),
                Kind::Heal => self.heal()?,
            }
            if self.healed && steps % 64 == 0 && self.converged() {
                break;
            }
        }
        self.finish()
    }

    fn finish(mut self) -> anyhow::Result<Report> {
        self.report.virtual_ms = self.now.get();
        self.report.acknowledged = self.acked.len();
        if !self.converged() {
            let missing = self
                .acked
                .iter()
                .filter(|t| !self.committed.contains_key(&self.txs[**t].0.hash()))
                .count();
            let tips: Vec<u64> = self.nodes.iter().map(|n| n.checked).collect();
            self.violation(format!(
                "no convergence by {LIVENESS_MS} ms: {missing} acknowledged transactions not \
                 committed, {} of {} acknowledged, heights {tips:?}",
                self.acked.len(),
                self.txs.len()
            ));
        }
        self.report.height = self.nodes.iter().map(|n| n.checked).min().unwrap_or(0);
        // No node believes a peer above the real chain (a forged height never counts).
        let top = self.chain.keys().next_back().copied().unwrap_or(0);
        for i in 0..self.nodes.len() {
            let (reply, rx) = channel();
            self.feed(i, vec![Event::Nodes(reply)]);
            let Ok(v) = rx.try_recv() else { continue };
            for peer in v["nodes"].as_array().into_iter().flatten() {
                // A peer's height comes from its verified votes, which run ahead of what is
                // committed by at most the window.
                let h = peer["height"].as_u64().unwrap_or(0);
                if h > top + self.genesis.params.window {
                    let msg = format!("node {} shows a peer at height {h} above {top}", i + 1);
                    self.violation(msg);
                }
            }
        }
        // The node goes on voting after the refusal (when the chain went on long enough for it
        // to have to: it may have been down meanwhile).
        let grew = self.poisoned.is_some_and(|h| self.chain.len() as u64 >= h + 8);
        if grew && self.report.signed_after_poison == 0 {
            self.violation("the compromised node never voted again after the poisoning".into());
        }
        if self.cfg.faults.attacks && self.report.attack_dropped == 0 {
            self.violation("no attack frame reached a victim: the attacks did not run".into());
        }
        Ok(self.report)
    }
}

/// A transaction's signature, checked once per world (the client's real SM2 key).
fn verify_tx(cache: &RefCell<HashMap<Digest, bool>>, key: &PublicKey, tx: &Tx) -> bool {
    let h = tx.hash();
    if let Some(ok) = cache.borrow().get(&h) {
        return *ok;
    }
    let ok = tx.verify(key).is_valid();
    cache.borrow_mut().insert(h, ok);
    ok
}

/// A frame, in a few words, for a violation's message.
fn describe(bytes: &[u8]) -> String {
    match PeerMsg::decode(bytes) {
        Ok(PeerMsg::Consensus(b)) => match vpbox_consensus::wire::decode(&b) {
            Ok(env) => format!("{:?} from node {}", env.message, env.from.0),
            Err(e) => format!("an undecodable envelope: {e}"),
        },
        Ok(PeerMsg::Txs(list)) => format!("{} transactions", list.len()),
        Ok(_) => "a request".into(),
        Err(e) => format!("a bad frame: {e}"),
    }
}

/// Runs one seed.
pub fn run_seed(cfg: &SimConfig, seed: u64) -> anyhow::Result<Report> {
    World::new(cfg.clone(), seed)?.run()
}
