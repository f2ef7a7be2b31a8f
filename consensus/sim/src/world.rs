//! The simulated world: N engines, a seeded virtual clock and network, faults, Byzantine
//! doubles, and the invariant checks of `pbft.md` after every step.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use vpbox_consensus::wire::{
    batch_digest, block_digest, decode_record, encode_record, signing_payload,
};
use vpbox_consensus::{
    Config, Digest, Effect, Engine, Envelope, Input, Member, Message, NodeId, Params, Phase, SeqNo,
    Timer, View, verify_certificate,
};

use crate::app::{App, ConfigTxs};
use crate::crypto::{Crypto, CryptoKind};
use crate::rng::Rng;

/// How often clients re-send transactions that no honest replica has committed yet (a PBFT
/// client retransmits after a timeout; the replicas' deduplication makes that harmless).
const CLIENT_RETRY_MS: u64 = 3_000;

/// Keys made beyond the initial members, for nodes added by a configuration change.
pub const SPARE_KEYS: usize = 4;

/// A Byzantine test double: an honest engine whose outputs (or inputs) are tampered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Byzantine {
    /// As primary, sends two different pre-prepares for one slot to two halves of the cluster.
    Equivocate,
    /// As primary, proposes a wrong execution result.
    WrongResult,
    /// As primary, never proposes some transactions.
    Censor,
    /// Everything it sends arrives seconds late.
    Slow,
    /// Sends votes under other nodes' names (bad signatures) and conflicting votes of its own.
    Forger,
    /// Re-sends old messages of other nodes.
    Replayer,
    /// Two honest-code processes with one identity and key, each talking to part of the
    /// cluster (the Twins method).
    Twin,
    /// Answers catch-up requests with forged entries and checkpoint proofs.
    Liar,
}

impl Byzantine {
    /// Every kind.
    pub const ALL: [Self; 8] = [
        Self::Equivocate,
        Self::WrongResult,
        Self::Censor,
        Self::Slow,
        Self::Forger,
        Self::Replayer,
        Self::Twin,
        Self::Liar,
    ];
}

/// Which fault kinds a random plan may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Crash and restart from the WAL.
    pub crash: bool,
    /// Torn last WAL write at a crash.
    pub torn: bool,
    /// Partitions, including one-way links.
    pub partition: bool,
    /// Up to `f` Byzantine doubles.
    pub byzantine: bool,
    /// Message drop, duplication and reordering (random delays).
    pub network: bool,
    /// Membership changes: a node added by a configuration transaction (and joining from a
    /// member's snapshot), then often one removed — the initial primary, or a Byzantine node.
    /// Not part of `all`, so that recorded seeds keep their schedules.
    pub reconfig: bool,
}

impl Faults {
    /// Every kind.
    pub fn all() -> Self {
        Self {
            crash: true,
            torn: true,
            partition: true,
            byzantine: true,
            network: true,
            reconfig: false,
        }
    }

    /// Parses `crash,partition,byzantine,network,torn` or `all` or `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => f = Self::all(),
                "none" => {}
                "crash" => f.crash = true,
                "torn" => f.torn = true,
                "partition" => f.partition = true,
                "byzantine" => f.byzantine = true,
                "network" | "drop" | "duplicate" | "reorder" => f.network = true,
                "reconfig" | "membership" => f.reconfig = true,
                other => return Err(format!("unknown fault kind {other:?}")),
            }
        }
        Ok(f)
    }

    /// The canonical spelling.
    pub fn to_arg(self) -> String {
        let mut v = Vec::new();
        for (on, name) in [
            (self.crash, "crash"),
            (self.torn, "torn"),
            (self.partition, "partition"),
            (self.byzantine, "byzantine"),
            (self.network, "network"),
            (self.reconfig, "reconfig"),
        ] {
            if on {
                v.push(name);
            }
        }
        if v.is_empty() { "none".into() } else { v.join(",") }
    }
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// `N`.
    pub nodes: usize,
    /// The seed everything derives from.
    pub seed: u64,
    /// Signature scheme.
    pub crypto: CryptoKind,
    /// Event budget; running out is reported as a liveness failure.
    pub max_events: u64,
    /// Client transactions submitted during the fault phase.
    pub txs: usize,
    /// Length of the fault phase (virtual ms); everything heals at its end.
    pub fault_ms: u64,
    /// How long after the heal every transaction must have committed everywhere.
    pub heal_ms: u64,
    /// Engine parameters (shortened timeouts keep runs small).
    pub params: Params,
    /// How long each execution of a batch takes (virtual ms; 0 by default): a node executes
    /// one batch at a time, so a slow ledger delays proposals, votes and the re-execution of
    /// a new view's O set.
    pub exec_ms: u64,
    /// Version of the random fault-plan generator, so that recorded seeds keep replaying the
    /// schedule they failed with: 1 = the original; 2 adds crashes at protocol moments, rolling
    /// primary isolation, twins and liars.
    pub plan: u32,
}

/// The fault-plan generator version new runs use.
pub const PLAN_VERSION: u32 = 2;

impl SimConfig {
    /// Defaults for a seed sweep.
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            nodes,
            seed,
            crypto: CryptoKind::Stub,
            max_events: 400_000,
            txs: 60,
            fault_ms: 8_000,
            heal_ms: 120_000,
            params: sim_params(),
            exec_ms: 0,
            plan: PLAN_VERSION,
        }
    }
}

/// Engine parameters for simulation: small batches and windows so that checkpoints, window
/// limits and garbage collection happen often; timeouts scaled down from Hyperchain's.
pub fn sim_params() -> Params {
    Params {
        batch_size_max: 8,
        batch_timeout_ms: 100,
        pipeline_depth: u64::MAX,
        checkpoint_interval: 4,
        window: 16,
        request_timeout_ms: 2_000,
        null_request_timeout_ms: 3_000,
        heartbeat_interval_ms: 1_000,
        new_view_timeout_ms: 2_000,
        view_change_resend_ms: 1_500,
        fetch_timeout_ms: 1_500,
        fetch_entries_max: 16,
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Safety violations (empty when correct).
    pub violations: Vec<String>,
    /// Why liveness failed, if it did.
    pub liveness: Option<String>,
    /// Transactions committed at every honest node.
    pub committed_txs: usize,
    /// Highest committed height among honest nodes.
    pub batches: u64,
    /// Events processed.
    pub events: u64,
    /// New views entered (summed over nodes).
    pub view_changes: u64,
    /// Virtual time at the end (ms).
    pub end_ms: u64,
    /// When an honest node first committed a block (ms).
    pub first_commit_ms: Option<u64>,
    /// State transfers completed.
    pub state_transfers: u64,
    /// Highest view any honest node reached.
    pub max_view: u64,
    /// Crashes that happened.
    pub crashes: u64,
    /// Honest replicas still waiting in a view change at the end (a replica that alone
    /// suspected the primary waits for the others; see ARCHITECTURE.md, "Consensus").
    pub stuck_in_view_change: u64,
    /// Highest configuration epoch an honest node applied.
    pub epoch: u64,
}

#[derive(Debug)]
enum Kind {
    Deliver { to: usize, env: Envelope },
    Timer { node: usize, inc: u64, timer: Timer, generation: u64 },
    Local { node: usize, inc: u64, input: Input },
    Transfer { node: usize, inc: u64, seq: SeqNo, state: Digest },
    Submit(Digest),
    Crash { node: usize, torn: bool },
    Restart(usize),
    Block(Vec<(usize, usize)>),
    Unblock(Vec<(usize, usize)>),
    Heal,
    ClientRetry,
    Join(usize),
}

struct Ev {
    time: u64,
    id: u64,
    kind: Kind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.id) == (o.time, o.id)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.id).cmp(&(o.time, o.id))
    }
}

struct Node {
    /// The member this process runs as (twins share one).
    identity: usize,
    engine: Option<Engine<Crypto>>,
    app: App,
    wal: Vec<Vec<u8>>,
    timers: HashMap<Timer, u64>,
    inc: u64,
    byz: Option<Byzantine>,
    max_view: View,
    max_low: SeqNo,
    committed_txs: HashSet<Digest>,
    torn_next: bool,
    rebaseline: bool,
    ledger: BTreeMap<u64, vpbox_consensus::CommittedEntry>,
    sent: HashMap<Phase, u32>,
    captured: Vec<Envelope>,
}

impl Node {
    /// A replica process that has not started yet: empty WAL, no timers, genesis state.
    fn fresh(identity: usize, genesis: Digest, byz: Option<Byzantine>) -> Self {
        Self {
            identity,
            engine: None,
            app: App::new(genesis),
            wal: Vec::new(),
            timers: HashMap::new(),
            inc: 0,
            byz,
            max_view: View(0),
            max_low: SeqNo(0),
            committed_txs: HashSet::new(),
            torn_next: false,
            rebaseline: false,
            ledger: BTreeMap::new(),
            sent: HashMap::new(),
            captured: Vec::new(),
        }
    }
}

/// Crash `victim` when `node` sends its `nth` message of `phase` (1-based), right after the
/// send.
#[derive(Clone, Copy, Debug)]
pub struct CrashOnSend {
    /// Whose message triggers the crash.
    pub node: usize,
    /// Which node crashes.
    pub victim: usize,
    /// Which phase.
    pub phase: Phase,
    /// The how-manyth such message.
    pub nth: u32,
    /// Restart it this long after the crash.
    pub restart_after_ms: u64,
}

/// The simulation.
pub struct World {
    cfg: SimConfig,
    rng: Rng,
    crypto: Crypto,
    config: Config,
    now: u64,
    next_id: u64,
    queue: BinaryHeap<Reverse<Ev>>,
    nodes: Vec<Node>,
    blocked: HashSet<(usize, usize)>,
    /// Links cut for twins' split brain; never healed (the twins stay Byzantine).
    blocked_twin: HashSet<(usize, usize)>,
    drop_p: f64,
    dup_p: f64,
    delay: (u64, u64),
    canon: BTreeMap<u64, (Digest, Digest)>,
    votes: HashMap<(usize, u64, View, SeqNo, Phase), Digest>,
    signed: HashMap<(usize, u64, View, SeqNo, Phase), Digest>,
    /// View changes and new views each node asked to sign: (node, epoch, view, is new view) →
    /// the payload's digest. A signer guard allows one of each per view and epoch.
    signed_views: HashMap<(usize, u64, View, bool), Digest>,
    submitted: Vec<Digest>,
    crash_on_send: Vec<CrashOnSend>,
    /// Configuration transactions and the identities each names.
    config_txs: ConfigTxs,
    /// Committed configuration changes, by the height of their block (from the first honest
    /// node to commit it; agreement makes it everyone's).
    changes: BTreeMap<u64, Vec<usize>>,
    /// Identities waiting to join from a member's snapshot.
    joining: Vec<usize>,
    healed: bool,
    trace: bool,
    out: Outcome,
}

impl World {
    /// A world of `cfg.nodes` fresh replicas and no faults planned.
    pub fn new(cfg: SimConfig) -> anyhow::Result<Self> {
        let crypto = Crypto::new(cfg.crypto, cfg.nodes + SPARE_KEYS, cfg.seed)?;
        let members = (0..cfg.nodes)
            .map(|i| Member { id: NodeId(i as u32), public_key: crypto.public_key(i) })
            .collect();
        let genesis = Digest(vpbox_sm::sm3::hash(b"sim-genesis").0);
        let config = Config::new(members, genesis)?;
        let nodes = (0..cfg.nodes).map(|identity| Node::fresh(identity, genesis, None)).collect();
        let mut w = Self {
            rng: Rng::new(cfg.seed),
            out: Outcome { seed: cfg.seed, ..Outcome::default() },
            cfg,
            crypto,
            config,
            now: 0,
            next_id: 0,
            queue: BinaryHeap::new(),
            nodes,
            blocked: HashSet::new(),
            blocked_twin: HashSet::new(),
            drop_p: 0.0,
            dup_p: 0.0,
            delay: (2, 20),
            canon: BTreeMap::new(),
            votes: HashMap::new(),
            signed: HashMap::new(),
            signed_views: HashMap::new(),
            submitted: Vec::new(),
            crash_on_send: Vec::new(),
            config_txs: ConfigTxs::new(),
            changes: BTreeMap::new(),
            joining: Vec::new(),
            healed: false,
            trace: std::env::var_os("VPBOX_SIM_TRACE").is_some(),
        };
        for i in 0..w.cfg.nodes {
            w.start(i);
        }
        let heal = w.cfg.fault_ms;
        w.push(heal, Kind::Heal);
        w.push(CLIENT_RETRY_MS, Kind::ClientRetry);
        Ok(w)
    }

    /// `f` for this world.
    pub fn f(&self) -> usize {
        self.config.f()
    }

    /// Makes `node` a Byzantine double of `kind`. For [`Byzantine::Twin`] a second process
    /// with `node`'s identity starts; each peer talks to exactly one of the two.
    pub fn byzantine(&mut self, node: usize, kind: Byzantine) {
        self.nodes[node].byz = Some(kind);
        if kind != Byzantine::Twin {
            return;
        }
        let genesis = self.config.genesis_state();
        self.nodes.push(Node::fresh(node, genesis, Some(Byzantine::Twin)));
        let twin = self.nodes.len() - 1;
        let mut links = Vec::new();
        for peer in (0..self.cfg.nodes).filter(|p| *p != node) {
            let cut = if self.rng.chance(0.5) { node } else { twin };
            links.push((cut, peer));
            links.push((peer, cut));
        }
        self.blocked_twin.extend(links);
        self.start(twin);
    }

    /// Crashes `node` at `at_ms` (tearing its last WAL write if `torn`), restarting it after
    /// `down_ms` (or at the heal).
    pub fn crash(&mut self, node: usize, at_ms: u64, down_ms: u64, torn: bool) {
        self.push(at_ms, Kind::Crash { node, torn });
        self.push(at_ms + down_ms, Kind::Restart(node));
    }

    /// Crashes a node when it sends a given message.
    pub fn crash_on_send(&mut self, c: CrashOnSend) {
        self.crash_on_send.push(c);
    }

    /// Blocks the directed links from `from_ms` to `to_ms`.
    pub fn block(&mut self, links: Vec<(usize, usize)>, from_ms: u64, to_ms: u64) {
        self.push(from_ms, Kind::Block(links.clone()));
        self.push(to_ms, Kind::Unblock(links));
    }

    /// Splits the cluster into `group` and the rest, both ways.
    pub fn partition(&mut self, group: &[usize], from_ms: u64, to_ms: u64) {
        let mut links = Vec::new();
        for a in 0..self.cfg.nodes {
            for b in 0..self.cfg.nodes {
                if group.contains(&a) != group.contains(&b) {
                    links.push((a, b));
                }
            }
        }
        self.block(links, from_ms, to_ms);
    }

    /// Submits, at `at_ms`, a configuration transaction naming `members` (identities; those
    /// at or above the initial `N` are new nodes, which must also [`World::join`]). It applies
    /// at the first checkpoint after the block that carries it.
    pub fn reconfigure(&mut self, at_ms: u64, members: Vec<usize>) {
        let k = self.config_txs.len();
        let tx = Digest(vpbox_sm::sm3::hash(format!("config-{}-{k}", self.cfg.seed)).0);
        self.config_txs.insert(tx, members);
        self.submitted.push(tx);
        self.push(at_ms, Kind::Submit(tx));
    }

    /// Starts new node `identity` from `at_ms` on, as soon as a member has applied a
    /// configuration that includes it: the operator installs the box from that member's
    /// snapshot (committed ledger and configurations), and it catches up from there.
    pub fn join(&mut self, identity: usize, at_ms: u64) {
        self.joining.push(identity);
        self.push(at_ms, Kind::Join(identity));
    }

    /// The configurations the committed changes imply (genesis first), computed here
    /// independently of the engines: a change in block `s` applies above the first checkpoint
    /// at or after `s`; a later change before the same checkpoint replaces it.
    fn expected_configs(&self) -> Vec<Config> {
        self.expected_configs_upto(u64::MAX)
    }

    /// The same, from the changes in blocks up to `height` only.
    fn expected_configs_upto(&self, height: u64) -> Vec<Config> {
        let k = self.cfg.params.checkpoint_interval;
        let mut out = vec![self.config.clone()];
        for (s, ids) in self.changes.range(..=height) {
            let after = SeqNo(s.div_ceil(k) * k);
            if out.len() > 1 && out.last().is_some_and(|c| c.after() == after) {
                // A later change before the same checkpoint replaces the pending one.
                out.pop();
            }
            let base = &out[out.len() - 1];
            if let Ok(c) = base.successor(self.members_of(ids.clone()), after) {
                out.push(c);
            }
        }
        out
    }

    fn expected_config_for(&self, seq: SeqNo) -> Config {
        let all = self.expected_configs();
        all.iter().rev().find(|c| c.after() < seq).unwrap_or(&all[0]).clone()
    }

    /// Whether identity `i` is a member of the latest configuration the ledger implies.
    fn is_final_member(&self, identity: usize) -> bool {
        self.expected_configs().last().is_some_and(|c| c.is_member(NodeId(identity as u32)))
    }

    fn members_of(&self, ids: Vec<usize>) -> Vec<Member> {
        ids.into_iter()
            .map(|i| Member { id: NodeId(i as u32), public_key: self.crypto.public_key(i) })
            .collect()
    }

    fn on_join(&mut self, identity: usize) {
        let source = (0..self.nodes.len()).find(|j| {
            self.honest(*j)
                && self.nodes[*j]
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.config().is_member(NodeId(identity as u32)))
        });
        let Some(j) = source else {
            self.push(self.now + 200, Kind::Join(identity));
            return;
        };
        let mut app = self.nodes[j].app.clone();
        app.crash();
        let mut node = Node::fresh(identity, self.config.genesis_state(), None);
        node.committed_txs =
            app.committed_chain().iter().flat_map(|e| e.fresh.iter().copied()).collect();
        node.ledger = self.nodes[j].ledger.clone();
        node.app = app;
        self.nodes.push(node);
        self.joining.retain(|x| *x != identity);
        let i = self.nodes.len() - 1;
        if self.trace {
            eprintln!("t={} JOIN n{i} from n{j}", self.now);
        }
        self.start(i);
    }

    /// Sets message loss, duplication and the delay range.
    pub fn network(&mut self, drop_p: f64, dup_p: f64, delay: (u64, u64)) {
        self.drop_p = drop_p;
        self.dup_p = dup_p;
        self.delay = delay;
    }

    /// Submits `count` transactions at times spread over `[from_ms, to_ms)`.
    pub fn submit(&mut self, count: usize, from_ms: u64, to_ms: u64) {
        for _ in 0..count {
            let id = self.submitted.len() as u64;
            let tx = Digest(vpbox_sm::sm3::hash(format!("tx-{}-{id}", self.cfg.seed)).0);
            self.submitted.push(tx);
            let at = self.rng.range(from_ms, to_ms.saturating_sub(1).max(from_ms));
            self.push(at, Kind::Submit(tx));
        }
    }

    /// A random fault plan from the seed.
    pub fn plan_random(&mut self, faults: Faults) {
        let n = self.cfg.nodes;
        let f = self.f();
        let end = self.cfg.fault_ms;
        let mut byz = Vec::new();
        if faults.byzantine && f > 0 {
            let count = self.rng.range(1, f as u64) as usize;
            while byz.len() < count {
                let i = self.rng.below(n as u64) as usize;
                if !byz.contains(&i) {
                    byz.push(i);
                    // Plan 1 knew the first six kinds only.
                    let kinds = if self.cfg.plan >= 2 { Byzantine::ALL.len() } else { 6 };
                    let k = Byzantine::ALL[self.rng.below(kinds as u64) as usize];
                    if self.trace {
                        eprintln!("byzantine n{i} {k:?}");
                    }
                    self.byzantine(i, k);
                }
            }
        }
        if faults.network {
            let drop_p = self.rng.below(12) as f64 / 100.0;
            let dup_p = self.rng.below(6) as f64 / 100.0;
            let lo = self.rng.range(1, 10);
            let hi = self.rng.range(lo + 1, 250);
            self.network(drop_p, dup_p, (lo, hi));
        }
        if faults.crash {
            let crashes = self.rng.range(1, 3);
            for _ in 0..crashes {
                let node = self.rng.below(n as u64) as usize;
                if byz.contains(&node) {
                    continue;
                }
                let at = self.rng.below(end);
                let down = self.rng.range(100, 6_000);
                let torn = faults.torn && self.rng.chance(0.5);
                self.crash(node, at, down, torn);
            }
            if self.rng.chance(0.1) {
                // Whole-cluster restart.
                let at = self.rng.below(end);
                for node in 0..n {
                    if !byz.contains(&node) {
                        self.crash(node, at, 500, false);
                    }
                }
            }
        }
        if self.cfg.plan >= 2 && faults.crash && self.rng.chance(0.5) {
            // Crashes at protocol moments: right after a given vote or checkpoint goes out.
            let phases = [Phase::PrePrepare, Phase::Prepare, Phase::Commit, Phase::Checkpoint];
            for _ in 0..self.rng.range(1, 3) {
                let node = self.rng.below(n as u64) as usize;
                let victim =
                    if self.rng.chance(0.5) { node } else { self.rng.below(n as u64) as usize };
                if byz.contains(&victim) {
                    continue;
                }
                let phase = phases[self.rng.below(4) as usize];
                let nth = self.rng.range(1, 6) as u32;
                let restart_after_ms = self.rng.range(200, 4_000);
                self.crash_on_send(CrashOnSend { node, victim, phase, nth, restart_after_ms });
            }
        }
        if self.cfg.plan >= 2 && faults.partition && self.rng.chance(0.3) {
            // Rolling isolation of successive primaries: cascading view changes.
            let mut at = self.rng.below(end / 2);
            for v in 0..self.rng.range(2, 4) {
                let until = at + self.rng.range(500, 3_000);
                self.partition(&[(v as usize) % n], at, until);
                at = until + self.rng.range(0, 1_000);
            }
        }
        if faults.partition {
            let parts = self.rng.range(1, 3);
            for _ in 0..parts {
                let at = self.rng.below(end);
                let until = at + self.rng.range(300, 5_000);
                match self.rng.below(3) {
                    0 => {
                        let group: Vec<usize> = (0..n).filter(|_| self.rng.chance(0.5)).collect();
                        self.partition(&group, at, until);
                    }
                    1 => {
                        let one = self.rng.below(n as u64) as usize;
                        self.partition(&[one], at, until);
                    }
                    _ => {
                        let mut links = Vec::new();
                        for a in 0..n {
                            for b in 0..n {
                                if a != b && self.rng.chance(0.25) {
                                    links.push((a, b));
                                }
                            }
                        }
                        self.block(links, at, until);
                    }
                }
            }
        }
        if faults.reconfig {
            // Drawn last, so that the rest of the plan is the same with or without it.
            let t1 = self.rng.below(end / 2);
            let mut members: Vec<usize> = (0..=n).collect();
            self.reconfigure(t1, members.clone());
            self.join(n, t1);
            if self.rng.chance(0.6) {
                let gone = byz.first().copied().unwrap_or(0);
                members.retain(|m| *m != gone);
                let t2 = t1 + self.rng.range(500, end / 2);
                self.reconfigure(t2, members);
            }
        }
        let txs = self.cfg.txs;
        self.submit(txs, 0, end.max(1));
    }

    fn push(&mut self, time: u64, kind: Kind) {
        self.next_id += 1;
        self.queue.push(Reverse(Ev { time, id: self.next_id, kind }));
    }

    fn violation(&mut self, what: String) {
        if self.out.violations.len() < 20 {
            self.out.violations.push(format!("t={}ms {what}", self.now));
        }
    }

    fn start(&mut self, i: usize) {
        let engine = match Engine::new(
            NodeId(self.nodes[i].identity as u32),
            self.config.clone(),
            self.cfg.params.clone(),
            self.crypto.clone(),
        ) {
            Ok(e) => e,
            Err(e) => {
                self.violation(format!("node {i} cannot start: {e}"));
                return;
            }
        };
        let node = &mut self.nodes[i];
        node.inc += 1;
        let records = node.wal.iter().filter_map(|b| decode_record(b).ok()).collect();
        let committed = node.app.committed();
        let state = node.app.state_at(committed).unwrap_or_default();
        let window = self.cfg.params.window;
        let recent = node
            .ledger
            .range(committed.0.saturating_sub(window)..)
            .filter(|(s, _)| **s <= committed.0)
            .map(|(_, e)| e.clone())
            .collect();
        let configs = node.app.configs();
        node.engine = Some(engine);
        if node.rebaseline {
            node.rebaseline = false;
            node.max_view = View(0);
            node.max_low = SeqNo(0);
        }
        self.feed(i, Input::Restore { records, committed, state, recent, configs });
    }

    fn crash_now(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.engine.take().is_some() {
            self.out.crashes += 1;
            node.app.crash();
            node.inc += 1;
            node.timers.clear();
        }
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].engine.is_some()
    }

    fn honest(&self, i: usize) -> bool {
        self.nodes[i].byz.is_none()
    }

    fn feed(&mut self, i: usize, input: Input) {
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let low_before = engine.low_watermark();
        let effects = engine.handle(input);
        let (view, low) = (engine.view(), engine.low_watermark());
        // pbft.md: nothing outside (h, h + L] is accepted into the log.
        let window = self.cfg.params.window;
        for e in &effects {
            if let Effect::Persist(vpbox_consensus::WalRecord::Accepted(env)) = e {
                let seq = match &env.message {
                    Message::PrePrepare(p) => Some(p.seq),
                    Message::Prepare(v) | Message::Commit(v) => Some(v.seq),
                    _ => None,
                };
                if let Some(seq) = seq {
                    if seq <= low_before || seq.0 > low.0 + window {
                        let msg = format!(
                            "node {i} accepted {seq:?} outside ({low_before:?}, {low:?}+L]"
                        );
                        self.violation(msg);
                    }
                }
            }
        }
        let node = &mut self.nodes[i];
        // pbft.md: view, stable checkpoint and low watermark never decrease, even across a
        // crash (they are restored from the WAL).
        if view < node.max_view || low < node.max_low {
            let (mv, ml) = (node.max_view, node.max_low);
            if node.byz.is_none() {
                self.violation(format!(
                    "node {i}: view/low went back {mv:?}/{ml:?} -> {view:?}/{low:?}"
                ));
            }
        }
        let node = &mut self.nodes[i];
        node.max_view = node.max_view.max(view);
        if node.byz.is_none() {
            self.out.max_view = self.out.max_view.max(view.0);
        }
        node.max_low = node.max_low.max(low);
        self.apply(i, effects);
    }

    fn apply(&mut self, i: usize, effects: Vec<Effect>) {
        let inc = self.nodes[i].inc;
        for e in effects {
            if self.nodes[i].inc != inc || !self.alive(i) {
                return;
            }
            match e {
                Effect::Persist(rec) => {
                    if self.trace {
                        if let vpbox_consensus::WalRecord::View { view, changing } = &rec {
                            eprintln!("t={} n{i} view {} changing={changing}", self.now, view.0);
                        }
                        if let vpbox_consensus::WalRecord::Stable(p) = &rec {
                            eprintln!("t={} n{i} stable {}", self.now, p.seq.0);
                        }
                    }
                    let bytes = encode_record(&rec);
                    if self.nodes[i].torn_next {
                        self.nodes[i].torn_next = false;
                        let cut = bytes.len() / 2;
                        self.nodes[i].wal.push(bytes[..cut].to_vec());
                        // The torn record never became durable and nothing after it was done,
                        // so what it recorded (a view, a stable checkpoint) may be lost.
                        self.nodes[i].rebaseline = true;
                        self.crash_now(i);
                        return;
                    }
                    self.nodes[i].wal.push(bytes);
                }
                Effect::Reconfigured { config } => {
                    if self.honest(i) {
                        let height = self.nodes[i].app.committed().0;
                        let expected = self.expected_configs_upto(height);
                        if expected.last() != Some(&config) {
                            let ids: Vec<u32> = config.members().iter().map(|m| m.id.0).collect();
                            self.violation(format!(
                                "node {i} reconfigured to epoch {} {ids:?} after {:?}, not what \
                                 its ledger implies",
                                config.epoch(),
                                config.after()
                            ));
                        }
                    }
                    self.nodes[i].app.record_config(config);
                }
                Effect::Sign { token, payload } => {
                    self.check_signing(i, &payload);
                    let signature = self.crypto.sign(self.nodes[i].identity, &payload);
                    self.push(
                        self.now,
                        Kind::Local { node: i, inc, input: Input::Signed { token, signature } },
                    );
                }
                Effect::Send { to, envelope } => {
                    let to = (0..self.nodes.len())
                        .filter(|j| self.nodes[*j].identity == to.0 as usize)
                        .collect();
                    self.emit(i, to, envelope);
                }
                Effect::Broadcast(envelope) => {
                    let me = self.nodes[i].identity;
                    let to =
                        (0..self.nodes.len()).filter(|j| self.nodes[*j].identity != me).collect();
                    self.emit(i, to, envelope);
                }
                Effect::SetTimer { timer, after_ms } => {
                    let g = self.nodes[i].timers.entry(timer).or_insert(0);
                    *g += 1;
                    let generation = *g;
                    self.push(self.now + after_ms, Kind::Timer { node: i, inc, timer, generation });
                }
                Effect::CancelTimer(timer) => {
                    *self.nodes[i].timers.entry(timer).or_insert(0) += 1;
                }
                Effect::Execute { seq, token, batch } => {
                    match self.nodes[i].app.execute(seq, &batch) {
                        Ok(result) => {
                            let members = self.nodes[i]
                                .app
                                .members_named(seq, &self.config_txs)
                                .map(|ids| self.members_of(ids));
                            let result = if self.nodes[i].byz == Some(Byzantine::WrongResult) {
                                Digest([0xee; 32])
                            } else {
                                result
                            };
                            self.push(
                                self.now + self.cfg.exec_ms,
                                Kind::Local {
                                    node: i,
                                    inc,
                                    input: Input::Executed { seq, token, result, members },
                                },
                            );
                        }
                        Err(e) => {
                            if self.honest(i) {
                                self.violation(format!("node {i}: {e}"));
                            }
                        }
                    }
                }
                Effect::Rollback { to } => {
                    if let Err(e) = self.nodes[i].app.rollback(to) {
                        if self.honest(i) {
                            self.violation(format!("node {i}: {e}"));
                        }
                    }
                }
                Effect::Commit { seq, batch, result, certificate } => {
                    self.on_commit(i, seq, &batch, result, &certificate);
                }
                Effect::FetchState { seq, state } => {
                    let at = self.now + 20;
                    self.push(at, Kind::Transfer { node: i, inc, seq, state });
                }
                Effect::ViewChanged { .. } => {
                    self.out.view_changes += 1;
                    if self.trace {
                        if let Some(e) = &self.nodes[i].engine {
                            eprintln!("t={} n{i} entered: {}", self.now, e.status());
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn on_commit(
        &mut self,
        i: usize,
        seq: SeqNo,
        batch: &vpbox_consensus::Batch,
        result: Digest,
        cert: &vpbox_consensus::CommitCertificate,
    ) {
        let honest = self.honest(i);
        let r = self.nodes[i].app.commit(seq, batch, &result);
        if r.is_ok() {
            let entry = vpbox_consensus::CommittedEntry {
                batch: batch.clone(),
                result,
                certificate: cert.clone(),
            };
            self.nodes[i].ledger.insert(seq.0, entry);
        }
        if !honest {
            return;
        }
        if let Err(e) = r {
            self.violation(format!("node {i}: {e}"));
            return;
        }
        // Every commit certificate has ≥ Q valid member signatures over its block digest.
        let bd = batch_digest(&self.crypto, batch);
        if cert.seq != seq || cert.block != block_digest(&self.crypto, seq, &bd, &result) {
            self.violation(format!("node {i}: certificate of {seq:?} is for another block"));
        }
        if !self.changes.contains_key(&seq.0) {
            if let Some(ids) = self.nodes[i].app.members_named(seq, &self.config_txs) {
                self.changes.insert(seq.0, ids);
            }
        }
        let config = self.expected_config_for(seq);
        if let Err(e) = verify_certificate(&config, &self.crypto, cert) {
            self.violation(format!("node {i}: certificate of {seq:?} invalid: {e}"));
        }
        self.check_agreement(i, seq.0, bd, result);
        if self.trace {
            eprintln!("t={} n{i} commit {} view {}", self.now, seq.0, cert.view.0);
        }
        // Each transaction executes at most once in the committed chain.
        let fresh = self.nodes[i].app.committed_chain()[seq.0 as usize - 1].fresh.clone();
        for tx in fresh {
            if !self.nodes[i].committed_txs.insert(tx) {
                self.violation(format!("node {i}: transaction {tx:?} executed twice"));
            }
        }
        self.out.batches = self.out.batches.max(seq.0);
        self.out.first_commit_ms.get_or_insert(self.now);
    }

    /// An honest node never *signs* two different votes for one (view, seq, phase), even
    /// across crashes: checked where the signer sees the request, before anything is sent.
    fn check_signing(&mut self, i: usize, payload: &[u8]) {
        let Ok((epoch, from, m)) = vpbox_consensus::wire::decode_signing_payload(payload) else {
            self.violation(format!("node {i} asked to sign an unparsable payload"));
            return;
        };
        if self.honest(i) {
            let configs = self.expected_configs();
            if configs.get(epoch as usize).is_some_and(|c| !c.is_member(from)) {
                self.violation(format!("node {i} signed in epoch {epoch}, not a member of it"));
            }
        }
        let view_kind = match &m {
            vpbox_consensus::Message::ViewChange(vc) => Some((vc.view, false)),
            vpbox_consensus::Message::NewView(nv) => Some((nv.view, true)),
            _ => None,
        };
        if let Some((view, new_view)) = view_kind {
            let d = vpbox_consensus::Verifier::digest(&self.crypto, payload);
            let prev = self.signed_views.insert((from.0 as usize, epoch, view, new_view), d);
            if self.honest(i) && prev.is_some_and(|p| p != d) {
                let what = if new_view { "new views" } else { "view changes" };
                self.violation(format!(
                    "EQUIVOCATION honest node {i} asked to sign two different {what} for {view:?} (epoch {epoch})"
                ));
            }
        }
        let bd = |b: &vpbox_consensus::Batch| batch_digest(&self.crypto, b);
        if let Some((v, s, ph, d)) = m.vote_key(bd) {
            let prev = self.signed.insert((from.0 as usize, epoch, v, s, ph), d);
            if self.honest(i) && prev.is_some_and(|p| p != d) {
                self.violation(format!(
                    "EQUIVOCATION honest node {i} asked to sign two {ph:?} at {v:?}/{s:?}"
                ));
            }
        }
    }

    /// No two honest nodes commit different batches (or states) at one sequence number.
    fn check_agreement(&mut self, i: usize, seq: u64, bd: Digest, result: Digest) {
        match self.canon.get(&seq) {
            None => {
                self.canon.insert(seq, (bd, result));
            }
            Some(c) if *c == (bd, result) => {}
            Some(c) => {
                let c = *c;
                self.violation(format!(
                    "AGREEMENT node {i} committed {bd:?}/{result:?} at {seq}, others {:?}/{:?}",
                    c.0, c.1
                ));
            }
        }
    }

    fn on_transfer(&mut self, i: usize, seq: SeqNo, state: Digest) {
        let source = (0..self.nodes.len()).find(|j| {
            *j != i
                && self.honest(*j)
                && self.nodes[*j].app.committed() >= seq
                && self.nodes[*j].app.state_at(seq) == Some(state)
        });
        let Some(j) = source else { return };
        if self.nodes[i].app.committed() >= seq {
            // Already there (committed meanwhile); report the state as fetched.
        } else {
            let src = self.nodes[j].app.clone();
            self.nodes[i].app.transfer_from(&src, seq);
            let blocks: Vec<_> =
                self.nodes[j].ledger.range(..=seq.0).map(|(k, v)| (*k, v.clone())).collect();
            self.nodes[i].ledger.extend(blocks);
        }
        let txs: Vec<Digest> = self.nodes[i]
            .app
            .committed_chain()
            .iter()
            .flat_map(|e| e.batch.txs.iter().copied())
            .collect();
        let chain: Vec<(Digest, Digest)> = self.nodes[i]
            .app
            .committed_chain()
            .iter()
            .map(|e| (batch_digest(&self.crypto, &e.batch), e.state))
            .collect();
        if self.honest(i) {
            for (k, (bd, st)) in chain.into_iter().enumerate() {
                self.check_agreement(i, k as u64 + 1, bd, st);
            }
            let all: Vec<Digest> = self.nodes[i]
                .app
                .committed_chain()
                .iter()
                .flat_map(|e| e.fresh.iter().copied())
                .collect();
            self.nodes[i].committed_txs = all.into_iter().collect();
        }
        let got = self.nodes[i].app.state_at(seq).unwrap_or_default();
        self.out.state_transfers += 1;
        let configs = self.nodes[i].app.configs();
        self.feed(i, Input::StateFetched { seq, state: got, txs, configs });
    }

    /// Sends from node `i`, through its Byzantine double if it has one, and checks that an
    /// honest node never signs two different votes for one (view, seq, phase).
    fn emit(&mut self, i: usize, to: Vec<usize>, env: Envelope) {
        if env.from.0 as usize == self.nodes[i].identity {
            let bd = |b: &vpbox_consensus::Batch| batch_digest(&self.crypto, b);
            let epoch = self.nodes[i].engine.as_ref().map_or(0, |e| e.epoch_of(&env.message));
            if let Some((v, s, ph, d)) = env.message.vote_key(bd) {
                let prev = self.votes.insert((i, epoch, v, s, ph), d);
                if self.honest(i) && prev.is_some_and(|p| p != d) {
                    self.violation(format!(
                        "EQUIVOCATION honest node {i} signed two {ph:?} at {v:?}/{s:?}"
                    ));
                }
                *self.nodes[i].sent.entry(ph).or_insert(0) += 1;
            }
        }
        match self.nodes[i].byz {
            None | Some(Byzantine::Censor) | Some(Byzantine::Twin) => {
                self.send_all(i, &to, &env, 0)
            }
            Some(Byzantine::Slow) => {
                let extra = self.rng.range(500, 3_000);
                self.send_all(i, &to, &env, extra);
            }
            Some(Byzantine::Equivocate) => match &env.message {
                Message::PrePrepare(pp) if env.from.0 as usize == i => {
                    let mut alt = pp.clone();
                    if alt.batch.txs.len() >= 2 {
                        alt.batch.txs.reverse();
                    } else {
                        alt.batch.txs.push(Digest([0xab; 32]));
                    }
                    let alt = self.resign(i, Message::PrePrepare(alt));
                    let (a, b): (Vec<usize>, Vec<usize>) = to.iter().partition(|j| *j % 2 == 0);
                    self.send_all(i, &a, &env, 0);
                    self.send_all(i, &b, &alt, 0);
                    // And (from plan 2 on) one replica sees both, in either order.
                    let pick = if self.cfg.plan >= 2 {
                        Some(self.rng.below(to.len() as u64) as usize)
                    } else {
                        None
                    };
                    if let Some(&k) = pick.and_then(|p| to.get(p)) {
                        let other = if k % 2 == 0 { alt } else { env };
                        self.send_all(i, &[k], &other, 0);
                    }
                }
                _ => self.send_all(i, &to, &env, 0),
            },
            Some(Byzantine::WrongResult) => self.send_all(i, &to, &env, 0),
            Some(Byzantine::Forger) => {
                self.send_all(i, &to, &env, 0);
                if let Message::Prepare(v) | Message::Commit(v) = &env.message {
                    let mut bad = *v;
                    bad.digest.0[0] ^= 0xff;
                    let m = match &env.message {
                        Message::Prepare(_) => Message::Prepare(bad),
                        _ => Message::Commit(bad),
                    };
                    // A vote under another member's name with our signature: must be refused.
                    let victim = NodeId(((i + 1) % self.cfg.nodes) as u32);
                    let forged = Envelope {
                        from: victim,
                        message: m.clone(),
                        signature: env.signature.clone(),
                    };
                    self.send_all(i, &to, &forged, 0);
                    // A validly signed conflicting vote of our own, to half the cluster.
                    let own = self.resign(i, m);
                    let half: Vec<usize> = to.iter().copied().filter(|j| j % 2 == 1).collect();
                    self.send_all(i, &half, &own, 0);
                }
            }
            Some(Byzantine::Liar) => match &env.message {
                Message::Entries(e) => {
                    let mut forged = e.clone();
                    for entry in &mut forged.entries {
                        // Another result under the same signatures: the certificate no longer
                        // matches the block.
                        entry.result.0[0] ^= 1;
                        entry.batch.txs.push(Digest([0x11; 32]));
                    }
                    if let Some(p) = &mut forged.checkpoint {
                        p.state.0[0] ^= 1;
                    }
                    let m = Message::Entries(forged);
                    let env = Envelope { message: m, ..env.clone() };
                    self.send_all(i, &to, &env, 0);
                }
                _ => self.send_all(i, &to, &env, 0),
            },
            Some(Byzantine::Replayer) => {
                self.send_all(i, &to, &env, 0);
                if !self.nodes[i].captured.is_empty() && self.rng.chance(0.3) {
                    let k = self.rng.below(self.nodes[i].captured.len() as u64) as usize;
                    let old = self.nodes[i].captured[k].clone();
                    let j = self.rng.below(self.nodes.len() as u64) as usize;
                    if j != i {
                        self.send_all(i, &[j], &old, 0);
                    }
                }
            }
        }
    }

    fn resign(&self, i: usize, message: Message) -> Envelope {
        let from = NodeId(self.nodes[i].identity as u32);
        let epoch = self.nodes[i].engine.as_ref().map_or(0, |e| e.epoch_of(&message));
        let payload = signing_payload(epoch, from, &message);
        let signature = self.crypto.sign(self.nodes[i].identity, &payload);
        Envelope { from, message, signature }
    }

    fn send_all(&mut self, i: usize, to: &[usize], env: &Envelope, extra: u64) {
        for &j in to {
            let (a, b) = (self.nodes[i].identity, self.nodes[j].identity);
            if a == b
                || self.blocked.contains(&(a, b))
                || self.blocked_twin.contains(&(i, j))
                || self.rng.chance(self.drop_p)
            {
                continue;
            }
            let d = self.rng.range(self.delay.0, self.delay.1) + extra;
            self.push(self.now + d, Kind::Deliver { to: j, env: env.clone() });
            if self.rng.chance(self.dup_p) {
                let d2 = self.rng.range(self.delay.0, self.delay.1 * 3) + extra;
                self.push(self.now + d2, Kind::Deliver { to: j, env: env.clone() });
            }
        }
        for c in self.crash_on_send.clone() {
            if c.node == i && env.from.0 as usize == i {
                let sent = self.nodes[i].sent.get(&c.phase).copied().unwrap_or(0);
                let is_phase =
                    env.message.vote_key(|_| Digest::default()).is_some_and(|k| k.2 == c.phase);
                if is_phase && sent == c.nth {
                    self.crash_on_send
                        .retain(|x| !(x.node == c.node && x.phase == c.phase && x.nth == c.nth));
                    let at = self.now;
                    self.push(at, Kind::Crash { node: c.victim, torn: false });
                    self.push(at + c.restart_after_ms, Kind::Restart(c.victim));
                }
            }
        }
    }

    fn step(&mut self, ev: Ev) {
        self.now = ev.time;
        if self.trace {
            match &ev.kind {
                Kind::Crash { node, torn } => eprintln!("t={} CRASH n{node} torn={torn}", ev.time),
                Kind::Restart(node) => eprintln!("t={} RESTART n{node}", ev.time),
                Kind::Heal => eprintln!("t={} HEAL", ev.time),
                Kind::Block(l) => eprintln!("t={} BLOCK {l:?}", ev.time),
                Kind::Unblock(l) => eprintln!("t={} UNBLOCK {l:?}", ev.time),
                Kind::Transfer { node, seq, .. } => {
                    eprintln!("t={} TRANSFER n{node} {}", ev.time, seq.0)
                }
                _ => {}
            }
        }
        match ev.kind {
            Kind::Deliver { to, env } => {
                if self.alive(to) {
                    if self.nodes[to].byz == Some(Byzantine::Replayer)
                        && self.nodes[to].captured.len() < 256
                    {
                        self.nodes[to].captured.push(env.clone());
                    }
                    self.feed(to, Input::Message(env));
                }
            }
            Kind::Timer { node, inc, timer, generation } => {
                let n = &self.nodes[node];
                if n.inc == inc && n.timers.get(&timer) == Some(&generation) {
                    self.feed(node, Input::Timeout(timer));
                }
            }
            Kind::Local { node, inc, input } => {
                if self.nodes[node].inc == inc {
                    self.feed(node, input);
                }
            }
            Kind::Transfer { node, inc, seq, state } => {
                if self.nodes[node].inc == inc && self.alive(node) {
                    self.on_transfer(node, seq, state);
                }
            }
            Kind::Submit(tx) => {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].byz == Some(Byzantine::Censor) && tx.0[0] % 2 == 0 {
                        continue;
                    }
                    self.feed(i, Input::Transaction(tx));
                }
            }
            Kind::Crash { node, torn } => {
                if torn {
                    self.nodes[node].torn_next = true;
                } else {
                    self.crash_now(node);
                }
            }
            Kind::Restart(node) => {
                if !self.alive(node) {
                    self.nodes[node].torn_next = false;
                    self.start(node);
                }
            }
            Kind::Block(links) => self.blocked.extend(links),
            Kind::Unblock(links) => {
                for l in links {
                    self.blocked.remove(&l);
                }
            }
            Kind::ClientRetry => {
                let pending: Vec<Digest> = self
                    .submitted
                    .iter()
                    .filter(|t| {
                        (0..self.nodes.len())
                            .all(|i| !self.honest(i) || !self.nodes[i].committed_txs.contains(*t))
                    })
                    .copied()
                    .collect();
                for tx in pending {
                    self.push(self.now, Kind::Submit(tx));
                }
                self.push(self.now + CLIENT_RETRY_MS, Kind::ClientRetry);
            }
            Kind::Join(identity) => self.on_join(identity),
            Kind::Heal => {
                self.healed = true;
                self.blocked.clear();
                self.drop_p = 0.0;
                for i in 0..self.nodes.len() {
                    self.nodes[i].torn_next = false;
                    if !self.alive(i) {
                        self.start(i);
                    }
                }
            }
        }
    }

    /// Honest nodes that the liveness check covers: members of the final configuration.
    fn live_set(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.honest(*i) && self.is_final_member(self.nodes[*i].identity))
            .collect()
    }

    fn all_committed(&self) -> bool {
        self.joining.is_empty()
            && self.live_set().into_iter().all(|i| {
                self.alive(i)
                    && self.submitted.iter().all(|t| self.nodes[i].committed_txs.contains(t))
            })
    }

    /// Runs to the end: the fault phase, the heal, and the liveness window.
    pub fn run(mut self) -> Outcome {
        let deadline = self.cfg.fault_ms + self.cfg.heal_ms;
        let mut next_check = self.cfg.fault_ms;
        while let Some(Reverse(ev)) = self.queue.pop() {
            if ev.time > deadline {
                break;
            }
            if self.out.events >= self.cfg.max_events {
                self.out.liveness =
                    Some(format!("event budget of {} exhausted", self.cfg.max_events));
                break;
            }
            self.out.events += 1;
            self.step(ev);
            if self.healed && self.now >= next_check {
                next_check = self.now + 250;
                if self.all_committed() {
                    break;
                }
            }
        }
        self.out.end_ms = self.now;
        if self.trace {
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(e) = &n.engine {
                    eprintln!("END n{i} epoch {} {}", e.config().epoch(), e.status());
                }
            }
        }
        if self.out.liveness.is_none() && !self.all_committed() {
            let mut worst = Vec::new();
            if !self.joining.is_empty() {
                worst.push(format!("never joined: {:?}", self.joining));
            }
            for i in self.live_set() {
                let missing = self
                    .submitted
                    .iter()
                    .filter(|t| !self.nodes[i].committed_txs.contains(t))
                    .count();
                if missing > 0 {
                    let e = self.nodes[i].engine.as_ref();
                    worst.push(format!(
                        "node {i} misses {missing} (view {:?}{}, committed {:?}, pool {})",
                        e.map(|e| e.view().0).unwrap_or(0),
                        if e.is_some_and(|e| e.is_changing_view()) { " changing" } else { "" },
                        e.map(|e| e.committed().0).unwrap_or(0),
                        e.map(|e| e.pending_transactions()).unwrap_or(0),
                    ));
                }
            }
            self.out.liveness = Some(format!("after heal: {}", worst.join("; ")));
        }
        self.out.epoch = (0..self.nodes.len())
            .filter(|i| self.honest(*i))
            .filter_map(|i| self.nodes[i].engine.as_ref().map(|e| e.config().epoch()))
            .max()
            .unwrap_or(0);
        self.out.stuck_in_view_change = self
            .live_set()
            .into_iter()
            .filter(|i| self.nodes[*i].engine.as_ref().is_some_and(|e| e.is_changing_view()))
            .count() as u64;
        self.out.committed_txs = (0..self.nodes.len())
            .filter(|i| self.honest(*i))
            .map(|i| {
                self.submitted.iter().filter(|t| self.nodes[i].committed_txs.contains(t)).count()
            })
            .min()
            .unwrap_or(0);
        self.out
    }
}

/// Runs one random seed with `faults`.
pub fn run_seed(nodes: usize, seed: u64, faults: Faults) -> anyhow::Result<Outcome> {
    let cfg = SimConfig::new(nodes, seed);
    let mut w = World::new(cfg)?;
    w.plan_random(faults);
    Ok(w.run())
}
