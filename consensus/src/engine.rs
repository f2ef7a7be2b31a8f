//! The replica state machine: normal case, checkpoints, view change, catch-up.
//!
//! Section references are to Castro & Liskov, "Practical Byzantine Fault Tolerance and
//! Proactive Recovery", TOCS 2002; "RBFT" refers to Hyperchain's rules in `pbft.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::Error;
use crate::effect::{Effect, Input, Timer, WalRecord};
use crate::message::{
    Batch, Checkpoint, CheckpointProof, CommitCertificate, CommittedEntry, Entries, Envelope,
    Message, NewView, Phase, PrePrepare, PreparedProof, ViewChange, Vote,
};
use crate::types::{Config, Digest, Member, NodeId, Params, SeqNo, Verification, Verifier, View};
use crate::wire::{batch_digest, block_digest, signing_payload};

/// How many committed transaction digests are remembered for deduplication.
const DEDUP_TXS_MAX: usize = 1 << 20;
/// Most transactions waiting in the pool; later ones are refused until it drains.
const POOL_MAX: usize = 1 << 20;
/// The suspicion timers grow at most 2⁴-fold: with the default 6 s request timeout, a replica
/// that went through four fruitless view changes in a row waits 96 s before the next one.
const BACKOFF_SHIFT_MAX: u32 = 4;

/// Per `(seq, view)`: what the log holds (§4.2).
#[derive(Debug, Default)]
struct Slot {
    pre_prepare: Option<(Envelope, Digest)>,
    prepares: BTreeMap<NodeId, (Digest, Envelope)>,
    commits: BTreeMap<NodeId, (Digest, Envelope)>,
    /// Our execution result for this slot's batch on the current speculative chain.
    result: Option<Digest>,
    sent_prepare: bool,
    sent_commit: bool,
}

#[derive(Debug)]
enum ExecPurpose {
    /// The primary executes a fresh batch before proposing it (RBFT).
    Propose(Batch),
    /// A replica executes a prepared batch and compares results.
    Prepared,
    /// A catching-up replica executes a certified committed entry.
    CatchUp,
}

#[derive(Debug)]
struct NvBuild {
    view: View,
    view_changes: Vec<Envelope>,
    pre_prepares: Vec<Option<Envelope>>,
    tokens: BTreeMap<u64, usize>,
}

/// One replica's consensus state. Drive it with [`Engine::handle`]; start it with
/// [`Input::Restore`] (an empty WAL for a fresh node).
pub struct Engine<V: Verifier> {
    id: NodeId,
    /// The current epoch's configuration (the last of `history`).
    config: Config,
    /// Every applied configuration, genesis first.
    history: Vec<Config>,
    /// A committed configuration that applies from its checkpoint on.
    pending_config: Option<Config>,
    /// Members named by configuration transactions in executed, uncommitted batches.
    spec_members: BTreeMap<SeqNo, Vec<Member>>,
    params: Params,
    verifier: V,

    view: View,
    changing: bool,
    vc_attempts: u32,
    /// View changes since the cluster last made progress: each entered view change adds one,
    /// each checkpoint that becomes stable above the current view's start takes one away. The
    /// request and null-request timers wait `2^stalled_views` times their base (capped), the
    /// doubling of Castro & Liskov §4.5.2 carried into the new view: entering a view rolls
    /// speculative execution back and the O set is executed again, so under a deep backlog the
    /// first request of a new view can take longer than the base timeout, and a fixed timeout
    /// would start the next view change before it commits, over and over (a livelock that
    /// `vpbox bench growth` met at six million anchors). Not persisted: a restarted replica
    /// starts from the base timeouts.
    stalled_views: u32,
    /// The highest sequence number the current view's new-view message carried (its O set):
    /// progress in this view is a stable checkpoint above it.
    view_start: SeqNo,
    nv_timer_armed: bool,
    /// Proposals and votes of the view this replica is changing into that arrived before the
    /// new-view message (links reorder: a new primary proposes as soon as its new view is
    /// signed, and the other backups vote as soon as they enter it). Kept once per sender,
    /// sequence number and phase, only within the window (pruned as it moves), pre-prepares
    /// only from the primary and prepares only from backups, so at most `(2·N + 1)·L` of them;
    /// replayed on entering the view. Dropping them would leave gaps that only the next view
    /// change fills, one view change per view.
    early: BTreeMap<(SeqNo, Phase, NodeId), Envelope>,
    my_view_change: Option<Envelope>,
    view_changes: BTreeMap<NodeId, (View, Envelope)>,
    last_new_view: Option<Envelope>,
    nv_build: Option<NvBuild>,

    low: SeqNo,
    stable: CheckpointProof,
    committed: SeqNo,
    executed: SeqNo,
    exec_pending: Option<(SeqNo, u64, ExecPurpose)>,
    next_seq: SeqNo,
    batch_due: bool,
    batch_armed: bool,
    pending_stable: Option<CheckpointProof>,
    restored_state: (SeqNo, Digest),

    slots: BTreeMap<(SeqNo, View), Slot>,
    checkpoints: BTreeMap<SeqNo, BTreeMap<NodeId, (Digest, Envelope)>>,
    /// Our own signed checkpoints above the low watermark, re-sent until one is stable.
    own_checkpoints: BTreeMap<SeqNo, Envelope>,
    committed_log: BTreeMap<SeqNo, CommittedEntry>,
    catch_up: BTreeMap<SeqNo, CommittedEntry>,
    fetching_state: Option<CheckpointProof>,
    /// Bridges over each epoch start `c`: the last stable checkpoint at or below `c` (signed
    /// by the old members), whose certified entries up to `c` are kept too. A node that missed
    /// a membership change can verify only the old epoch's proofs: it transfers to that
    /// checkpoint, commits the entries up to `c`, and so learns the new members.
    bridges: BTreeMap<SeqNo, CheckpointProof>,
    voted: BTreeMap<(SeqNo, View, Phase), Digest>,

    next_token: u64,
    signing: BTreeMap<u64, Message>,

    /// Pending transactions in arrival order; may hold stale (committed) entries, which
    /// `pool_set`, the truth, no longer has.
    pool: VecDeque<Digest>,
    pool_set: BTreeSet<Digest>,
    /// Transactions the primary has not proposed yet, oldest first (stale entries skipped).
    proposable: VecDeque<Digest>,
    inflight: BTreeSet<Digest>,
    request_watch: Option<Digest>,
    committed_txs: BTreeSet<Digest>,
    committed_txs_order: VecDeque<Digest>,
}

impl<V: Verifier> Engine<V> {
    /// A replica `id` of the genesis configuration `config` (the configurations adopted since
    /// arrive with [`Input::Restore`]). It does nothing until it receives the restore. A node
    /// that is not a member of the current configuration (not yet added, or removed) stays
    /// passive: it signs, proposes and votes nothing.
    pub fn new(id: NodeId, config: Config, params: Params, verifier: V) -> Result<Self, Error> {
        if params.checkpoint_interval == 0
            || params.window == 0
            || params.window % params.checkpoint_interval != 0
            || params.batch_size_max == 0
        {
            return Err(Error::Config("window must be a positive multiple of the interval"));
        }
        if params.pipeline_depth == 0 {
            return Err(Error::Config("pipeline depth must be at least 1"));
        }
        let config_genesis = config.genesis_state();
        let genesis = CheckpointProof { seq: SeqNo(0), state: config_genesis, signed: vec![] };
        Ok(Self {
            id,
            history: vec![config.clone()],
            config,
            pending_config: None,
            spec_members: BTreeMap::new(),
            params,
            verifier,
            view: View(0),
            changing: false,
            vc_attempts: 0,
            stalled_views: 0,
            view_start: SeqNo(0),
            nv_timer_armed: false,
            early: BTreeMap::new(),
            my_view_change: None,
            view_changes: BTreeMap::new(),
            last_new_view: None,
            nv_build: None,
            low: SeqNo(0),
            stable: genesis,
            committed: SeqNo(0),
            executed: SeqNo(0),
            exec_pending: None,
            next_seq: SeqNo(0),
            batch_due: false,
            batch_armed: false,
            pending_stable: None,
            restored_state: (SeqNo(0), config_genesis),
            slots: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            committed_log: BTreeMap::new(),
            catch_up: BTreeMap::new(),
            fetching_state: None,
            bridges: BTreeMap::new(),
            voted: BTreeMap::new(),
            next_token: 0,
            signing: BTreeMap::new(),
            pool: VecDeque::new(),
            pool_set: BTreeSet::new(),
            proposable: VecDeque::new(),
            inflight: BTreeSet::new(),
            request_watch: None,
            committed_txs: BTreeSet::new(),
            committed_txs_order: VecDeque::new(),
        })
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current view (or the one being changed to).
    pub fn view(&self) -> View {
        self.view
    }

    /// Whether a view change is in progress.
    pub fn is_changing_view(&self) -> bool {
        self.changing
    }

    /// The low watermark `h`: the latest stable checkpoint.
    pub fn low_watermark(&self) -> SeqNo {
        self.low
    }

    /// The highest committed sequence number.
    pub fn committed(&self) -> SeqNo {
        self.committed
    }

    /// Transactions waiting to be committed.
    pub fn pending_transactions(&self) -> usize {
        self.pool_set.len()
    }

    /// A one-line summary of the engine's progress, for traces.
    pub fn status(&self) -> String {
        format!(
            "view {}{} low {} committed {} executed {} next {} exec_pending {:?} fetching {:?} \
             pending_stable {:?} pool {} slots {} catch_up {:?}",
            self.view.0,
            if self.changing { " (changing)" } else { "" },
            self.low.0,
            self.committed.0,
            self.executed.0,
            self.next_seq.0,
            self.exec_pending.as_ref().map(|(s, _, _)| s.0),
            self.fetching_state.as_ref().map(|p| p.seq.0),
            self.pending_stable.as_ref().map(|p| p.seq.0),
            self.pool_set.len(),
            self.slots.len(),
            self.catch_up.keys().map(|s| s.0).collect::<Vec<_>>(),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Feeds one input; returns the effects to carry out, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Message(env) => self.on_envelope(env, &mut out),
            Input::Transaction(tx) => self.on_transaction(tx, &mut out),
            Input::Timeout(t) => self.on_timeout(t, &mut out),
            Input::Signed { token, signature } => {
                if let Some(message) = self.signing.remove(&token) {
                    let env = Envelope { from: self.id, message, signature };
                    self.on_own_signed(token, env, &mut out);
                }
            }
            Input::Executed { seq, token, result, members } => {
                self.on_executed(seq, token, result, members, &mut out)
            }
            Input::StateFetched { seq, state, txs, configs } => {
                let epoch = self.config.epoch();
                if self.fetching_state.as_ref().is_some_and(|p| p.seq == seq && p.state == state) {
                    self.adopt_configs(configs, seq);
                }
                self.on_state_fetched(seq, state, &txs, &mut out);
                if self.config.epoch() != epoch {
                    self.enter_epoch(&mut out);
                }
            }
            Input::Restore { records, committed, state, recent, configs } => {
                self.adopt_configs(configs, committed);
                for e in recent {
                    let seq = e.certificate.seq;
                    if seq <= committed {
                        self.committed_log.insert(seq, e);
                    }
                }
                self.on_restore(records, committed, state, &mut out);
            }
        }
        self.drive(&mut out);
        out
    }

    // ----- helpers ---------------------------------------------------------------------------

    fn f(&self) -> usize {
        self.config.f()
    }

    /// Whether this node is a member of the current configuration (a removed or not yet added
    /// node only follows).
    fn active(&self) -> bool {
        self.config.is_member(self.id)
    }

    /// The configuration of the epoch that `seq` belongs to, as far as this node knows.
    pub fn config_for(&self, seq: SeqNo) -> &Config {
        self.history.iter().rev().find(|c| c.after() < seq).unwrap_or(&self.history[0])
    }

    /// The epoch a message of this node is signed under (for hosts that re-sign, such as a
    /// simulator's Byzantine doubles).
    pub fn epoch_of(&self, m: &Message) -> u64 {
        self.config_of(m).epoch()
    }

    /// The configuration a message is signed and checked under: its sequence number's for
    /// votes and checkpoints, the current one for everything else.
    fn config_of(&self, m: &Message) -> &Config {
        match m.seq() {
            Some(seq) => self.config_for(seq),
            None => &self.config,
        }
    }

    /// The first checkpoint above which execution and proposals wait for a configuration
    /// change: a committed one, or one in an executed batch that may still commit.
    fn fence(&self) -> Option<SeqNo> {
        if let Some(c) = &self.pending_config {
            return Some(c.after());
        }
        self.spec_members.keys().next().map(|s| self.boundary(*s))
    }

    /// The first checkpoint at or after `seq`.
    fn boundary(&self, seq: SeqNo) -> SeqNo {
        let k = self.params.checkpoint_interval;
        SeqNo(seq.0.div_ceil(k).saturating_mul(k))
    }

    /// The host's record of configurations (from the ledger): the applied ones become the
    /// history, one above `committed` is pending.
    fn adopt_configs(&mut self, configs: Vec<Config>, committed: SeqNo) {
        for c in configs {
            if c.epoch() <= self.config.epoch() {
                continue;
            }
            if c.after() <= committed {
                self.history.push(c.clone());
                self.config = c;
                self.pending_config = None;
            } else {
                self.pending_config = Some(c);
            }
        }
    }

    fn is_primary(&self) -> bool {
        self.config.primary(self.view) == self.id
    }

    fn in_window(&self, seq: SeqNo) -> bool {
        seq > self.low && seq.0 <= self.low.0.saturating_add(self.params.window)
    }

    /// In the window and not beyond a configuration fence: nothing above a pending change's
    /// checkpoint is accepted until the change applies (it would be checked under the wrong
    /// membership).
    fn accepts(&self, seq: SeqNo) -> bool {
        self.in_window(seq) && self.fence().is_none_or(|c| seq <= c)
    }

    fn bdigest(&self, b: &Batch) -> Digest {
        batch_digest(&self.verifier, b)
    }

    fn verify_env(&self, e: &Envelope) -> bool {
        verify_one(self.config_of(&e.message), &self.verifier, e)
    }

    fn token(&mut self) -> u64 {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token
    }

    /// Signs without an intent record (messages whose content is not a vote).
    fn sign(&mut self, message: Message, out: &mut Vec<Effect>) -> u64 {
        let token = self.token();
        let payload = signing_payload(self.config_of(&message).epoch(), self.id, &message);
        self.signing.insert(token, message);
        out.push(Effect::Sign { token, payload });
        token
    }

    /// Records the intent durably, then asks for the signature: an honest replica never signs
    /// two different votes for one slot, even across a crash (pbft.md, list item 9).
    fn vote(&mut self, message: Message, out: &mut Vec<Effect>) -> Option<u64> {
        if !self.config_of(&message).is_member(self.id) {
            return None;
        }
        let bd = |b: &Batch| batch_digest(&self.verifier, b);
        let (view, seq, phase, digest) = message.vote_key(bd)?;
        match self.voted.get(&(seq, view, phase)) {
            Some(d) if *d != digest => return None,
            Some(_) => {}
            None => {
                self.voted.insert((seq, view, phase), digest);
                out.push(Effect::Persist(WalRecord::Intent(message.clone())));
            }
        }
        Some(self.sign(message, out))
    }

    fn set_timer(&self, timer: Timer, after_ms: u64, out: &mut Vec<Effect>) {
        out.push(Effect::SetTimer { timer, after_ms });
    }

    /// Arms a timer whose expiry suspects the primary ([`Timer::Request`] or
    /// [`Timer::NullRequest`]): its base, doubled for each fruitless view change in a row.
    fn set_suspicion_timer(&self, timer: Timer, out: &mut Vec<Effect>) {
        let base = match timer {
            Timer::NullRequest => self.params.null_request_timeout_ms,
            _ => self.params.request_timeout_ms,
        };
        let after_ms = base.saturating_mul(1 << self.stalled_views);
        self.set_timer(timer, after_ms, out);
    }

    // ----- inputs ----------------------------------------------------------------------------

    fn on_transaction(&mut self, tx: Digest, out: &mut Vec<Effect>) {
        if !self.active()
            || self.committed_txs.contains(&tx)
            || self.pool_set.contains(&tx)
            || self.pool_set.len() >= POOL_MAX
        {
            return;
        }
        self.pool.push_back(tx);
        self.pool_set.insert(tx);
        self.proposable.push_back(tx);
        if self.changing {
            return;
        }
        if !self.is_primary() && self.request_watch.is_none() {
            // §4.5.2: a backup that knows of a request starts a timer; the primary must get it
            // committed before it fires.
            self.request_watch = Some(tx);
            self.set_suspicion_timer(Timer::Request, out);
        }
    }

    fn on_timeout(&mut self, timer: Timer, out: &mut Vec<Effect>) {
        if !self.active() {
            return;
        }
        match timer {
            Timer::Batch => {
                self.batch_armed = false;
                if !self.changing && self.is_primary() {
                    self.batch_due = true;
                }
            }
            Timer::Request => {
                // A pending membership change waits like a request: a primary that does not
                // seal the epoch (its sealing batch lost, say, with no client waiting) is
                // replaced.
                let waiting = !self.pool_set.is_empty() || self.fence().is_some();
                if !self.changing && !self.is_primary() && waiting {
                    self.start_view_change(self.view.next(), out);
                }
            }
            Timer::NullRequest => {
                if !self.changing && !self.is_primary() {
                    self.start_view_change(self.view.next(), out);
                }
            }
            Timer::Heartbeat => {
                if !self.changing && self.is_primary() {
                    self.sign(Message::Heartbeat { view: self.view }, out);
                    self.set_timer(Timer::Heartbeat, self.params.heartbeat_interval_ms, out);
                }
            }
            Timer::NewView => {
                if self.changing && self.nv_timer_armed {
                    // §4.5.2: if the new view does not arrive in time, try the next one with a
                    // doubled timeout.
                    self.start_view_change(self.view.next(), out);
                }
            }
            Timer::ViewChangeResend => {
                if self.changing {
                    if let Some(vc) = self.my_view_change.clone() {
                        out.push(Effect::Broadcast(vc));
                    }
                    self.set_timer(Timer::ViewChangeResend, self.params.view_change_resend_ms, out);
                }
            }
            Timer::Fetch => {
                if let Some(p) = self.pending_stable.take() {
                    self.adopt_checkpoint(p, true, out);
                }
                out.push(Effect::Broadcast(self.fetch_message()));
                // Checkpoint messages get lost too; without a stable one the window stays
                // shut, so re-send ours until one is stable.
                for env in self.own_checkpoints.values() {
                    out.push(Effect::Broadcast(env.clone()));
                }
                if let Some(p) = &self.fetching_state {
                    out.push(Effect::FetchState { seq: p.seq, state: p.state });
                }
                self.set_timer(Timer::Fetch, self.params.fetch_timeout_ms, out);
            }
        }
    }

    fn fetch_message(&self) -> Envelope {
        // Fetch and Entries travel unsigned: a fetch only asks, and everything in a reply is
        // checked against checkpoint proofs and commit certificates.
        Envelope {
            from: self.id,
            message: Message::Fetch { after: self.committed, view: self.view },
            signature: Default::default(),
        }
    }

    fn on_envelope(&mut self, env: Envelope, out: &mut Vec<Effect>) {
        if env.from == self.id || !self.active() {
            return;
        }
        // Votes and checkpoints are checked against the membership of their sequence number's
        // epoch (a removed node's checkpoint for the last block of its epoch still counts);
        // everything else, and unsigned requests, only from current members.
        let current = self.config.is_member(env.from);
        match &env.message {
            _ if !current && env.message.seq().is_none() => return,
            Message::Fetch { after, view } => {
                let (after, view) = (*after, *view);
                out.push(Effect::Heard { from: env.from, height: after });
                self.on_fetch(env.from, after, view, out);
                return;
            }
            Message::Entries(_) => {}
            _ => {
                if !self.verify_env(&env) {
                    return;
                }
                let height = match &env.message {
                    Message::Commit(v) => v.seq,
                    Message::Checkpoint(c) => c.seq,
                    _ => SeqNo(0),
                };
                out.push(Effect::Heard { from: env.from, height });
            }
        }
        if self.changing {
            // Only what the handlers could take: a pre-prepare from the view's primary with its
            // result and a batch that fits, prepares from backups, commits.
            let primary = |seq, view| self.config_for(seq).primary(view);
            let early = match &env.message {
                Message::PrePrepare(pp)
                    if env.from == primary(pp.seq, pp.view)
                        && pp.result.is_some()
                        && pp.batch.txs.len() <= self.params.batch_size_max =>
                {
                    Some((pp.view, pp.seq, Phase::PrePrepare))
                }
                Message::Prepare(v) if env.from != primary(v.seq, v.view) => {
                    Some((v.view, v.seq, Phase::Prepare))
                }
                Message::Commit(v) => Some((v.view, v.seq, Phase::Commit)),
                _ => None,
            };
            if let Some((view, seq, phase)) = early {
                if view == self.view && self.accepts(seq) {
                    self.early.entry((seq, phase, env.from)).or_insert(env);
                }
                return;
            }
        }
        let from = env.from;
        match env.message.clone() {
            Message::PrePrepare(pp) => self.on_pre_prepare(env, pp, out),
            Message::Prepare(v) => self.on_prepare(env, v, out),
            Message::Commit(v) => self.on_commit(env, v, out),
            Message::Checkpoint(c) => self.on_checkpoint(env, c, out),
            Message::ViewChange(vc) => self.on_view_change(env, vc, out),
            Message::NewView(nv) => self.on_new_view(env, nv, out),
            Message::Heartbeat { view } => {
                if view == self.view && !self.changing && from == self.config.primary(view) {
                    self.set_suspicion_timer(Timer::NullRequest, out);
                }
            }
            Message::Entries(e) => self.on_entries(e, out),
            Message::Fetch { .. } => {}
        }
    }

    fn on_pre_prepare(&mut self, env: Envelope, pp: PrePrepare, out: &mut Vec<Effect>) {
        if pp.view != self.view
            || self.changing
            || env.from != self.config_for(pp.seq).primary(pp.view)
            || !self.accepts(pp.seq)
            || pp.result.is_none()
            || pp.batch.txs.len() > self.params.batch_size_max
        {
            return;
        }
        self.set_suspicion_timer(Timer::NullRequest, out);
        let digest = self.bdigest(&pp.batch);
        let slot = self.slots.entry((pp.seq, pp.view)).or_default();
        if slot.pre_prepare.is_some() {
            // §4.2: a backup accepts at most one pre-prepare per view and sequence number.
            return;
        }
        slot.pre_prepare = Some((env.clone(), digest));
        out.push(Effect::Persist(WalRecord::Accepted(env)));
        self.send_prepare(pp.seq, pp.view, digest, out);
        self.after_vote(pp.seq, pp.view, out);
    }

    fn send_prepare(&mut self, seq: SeqNo, view: View, digest: Digest, out: &mut Vec<Effect>) {
        if self.config_for(seq).primary(view) == self.id {
            return;
        }
        let Some(slot) = self.slots.get_mut(&(seq, view)) else {
            return;
        };
        if slot.sent_prepare {
            return;
        }
        slot.sent_prepare = true;
        self.vote(Message::Prepare(Vote { view, seq, digest }), out);
    }

    fn on_prepare(&mut self, env: Envelope, v: Vote, out: &mut Vec<Effect>) {
        if v.view != self.view
            || self.changing
            || !self.accepts(v.seq)
            || env.from == self.config_for(v.seq).primary(v.view)
        {
            return;
        }
        let slot = self.slots.entry((v.seq, v.view)).or_default();
        if slot.prepares.contains_key(&env.from) {
            return;
        }
        slot.prepares.insert(env.from, (v.digest, env.clone()));
        out.push(Effect::Persist(WalRecord::Accepted(env)));
        self.after_vote(v.seq, v.view, out);
    }

    fn on_commit(&mut self, env: Envelope, v: Vote, out: &mut Vec<Effect>) {
        if v.view != self.view || self.changing || !self.accepts(v.seq) {
            return;
        }
        let slot = self.slots.entry((v.seq, v.view)).or_default();
        if slot.commits.contains_key(&env.from) {
            return;
        }
        slot.commits.insert(env.from, (v.digest, env.clone()));
        out.push(Effect::Persist(WalRecord::Accepted(env)));
        self.after_vote(v.seq, v.view, out);
    }

    fn prepared(&self, seq: SeqNo, view: View) -> bool {
        let Some(slot) = self.slots.get(&(seq, view)) else {
            return false;
        };
        let Some((_, d)) = &slot.pre_prepare else {
            return false;
        };
        let n = slot.prepares.values().filter(|(pd, _)| pd == d).count();
        n + 1 >= self.config_for(seq).quorum()
    }

    /// Sends the commit once the slot is prepared and our execution agrees (RBFT).
    fn after_vote(&mut self, seq: SeqNo, view: View, out: &mut Vec<Effect>) {
        if view != self.view || self.changing || !self.prepared(seq, view) {
            return;
        }
        let Some(slot) = self.slots.get_mut(&(seq, view)) else {
            return;
        };
        let (Some(result), Some((_, bd))) = (slot.result, &slot.pre_prepare) else {
            return;
        };
        if slot.sent_commit {
            return;
        }
        slot.sent_commit = true;
        let block = block_digest(&self.verifier, seq, bd, &result);
        self.vote(Message::Commit(Vote { view, seq, digest: block }), out);
    }

    fn on_own_signed(&mut self, token: u64, env: Envelope, out: &mut Vec<Effect>) {
        if let Some(b) = &mut self.nv_build {
            if let Some(i) = b.tokens.remove(&token) {
                if let Some(slot) = b.pre_prepares.get_mut(i) {
                    *slot = Some(env);
                }
                if b.tokens.is_empty() {
                    let nv = NewView {
                        view: b.view,
                        view_changes: b.view_changes.clone(),
                        pre_prepares: b.pre_prepares.iter().flatten().cloned().collect(),
                    };
                    self.sign_new_view(nv, out);
                }
                return;
            }
        }
        match env.message.clone() {
            Message::PrePrepare(pp) => {
                if pp.view != self.view || self.changing || !self.in_window(pp.seq) {
                    return;
                }
                let digest = self.bdigest(&pp.batch);
                let slot = self.slots.entry((pp.seq, pp.view)).or_default();
                if slot.pre_prepare.is_some() {
                    return;
                }
                slot.pre_prepare = Some((env.clone(), digest));
                out.push(Effect::Persist(WalRecord::Accepted(env.clone())));
                out.push(Effect::Broadcast(env));
                self.after_vote(pp.seq, pp.view, out);
            }
            // A vote decided before a checkpoint became stable may come back signed after it:
            // the slot is gone, and nothing at or below the low watermark enters the log.
            Message::Prepare(v) | Message::Commit(v) if !self.in_window(v.seq) => {}
            Message::Prepare(v) => {
                if let Some(slot) = self.slots.get_mut(&(v.seq, v.view)) {
                    slot.prepares.insert(self.id, (v.digest, env.clone()));
                }
                out.push(Effect::Persist(WalRecord::Accepted(env.clone())));
                out.push(Effect::Broadcast(env));
                self.after_vote(v.seq, v.view, out);
            }
            Message::Commit(v) => {
                if let Some(slot) = self.slots.get_mut(&(v.seq, v.view)) {
                    slot.commits.insert(self.id, (v.digest, env.clone()));
                }
                out.push(Effect::Persist(WalRecord::Accepted(env.clone())));
                out.push(Effect::Broadcast(env));
            }
            Message::Checkpoint(c) => {
                out.push(Effect::Broadcast(env.clone()));
                if c.seq > self.low {
                    self.own_checkpoints.insert(c.seq, env.clone());
                    self.checkpoints.entry(c.seq).or_default().insert(self.id, (c.state, env));
                    self.check_stable(c.seq, out);
                }
            }
            Message::ViewChange(vc) => {
                if !self.changing || vc.view != self.view {
                    return;
                }
                self.my_view_change = Some(env.clone());
                out.push(Effect::Broadcast(env.clone()));
                self.view_changes.insert(self.id, (vc.view, env));
                self.maybe_build_new_view(out);
            }
            Message::NewView(nv) => {
                if !self.changing || nv.view != self.view {
                    return;
                }
                out.push(Effect::Broadcast(env.clone()));
                if let Ok((cp, _)) = self.compute_o(&nv.view_changes) {
                    self.enter_view(env, nv, cp, out);
                }
            }
            Message::Heartbeat { .. } => out.push(Effect::Broadcast(env)),
            _ => {}
        }
    }

    fn on_executed(
        &mut self,
        seq: SeqNo,
        token: u64,
        result: Digest,
        members: Option<Vec<Member>>,
        out: &mut Vec<Effect>,
    ) {
        match &self.exec_pending {
            Some((s, t, _)) if *s == seq && *t == token => {}
            _ => return,
        }
        let Some((_, _, purpose)) = self.exec_pending.take() else {
            return;
        };
        self.executed = seq;
        if let Some(m) = members {
            self.spec_members.insert(seq, m);
        }
        match purpose {
            ExecPurpose::Propose(batch) => {
                if self.changing || !self.is_primary() {
                    return;
                }
                self.next_seq = seq;
                for tx in &batch.txs {
                    self.inflight.insert(*tx);
                }
                let view = self.view;
                let slot = self.slots.entry((seq, view)).or_default();
                slot.result = Some(result);
                let pp = PrePrepare { view, seq, batch, result: Some(result) };
                self.vote(Message::PrePrepare(pp), out);
            }
            ExecPurpose::Prepared => {
                let view = self.view;
                let Some(slot) = self.slots.get_mut(&(seq, view)) else {
                    return;
                };
                let proposed = match &slot.pre_prepare {
                    Some((e, _)) => match &e.message {
                        Message::PrePrepare(pp) => pp.result,
                        _ => None,
                    },
                    None => None,
                };
                slot.result = Some(result);
                if proposed.is_some_and(|r| r != result) {
                    // RBFT: the primary's execution result disagrees with ours.
                    self.start_view_change(view.next(), out);
                    return;
                }
                self.after_vote(seq, view, out);
            }
            ExecPurpose::CatchUp => {
                let Some(entry) = self.catch_up.remove(&seq) else {
                    return;
                };
                if entry.result != result || seq != self.committed.next() {
                    // Our state disagrees with a certified block: local corruption. Stop
                    // catching up; the operator must investigate.
                    return;
                }
                self.deliver(seq, entry.batch, result, entry.certificate, out);
            }
        }
    }

    fn on_state_fetched(
        &mut self,
        seq: SeqNo,
        state: Digest,
        txs: &[Digest],
        out: &mut Vec<Effect>,
    ) {
        let Some(proof) = self.fetching_state.take() else {
            return;
        };
        if proof.seq != seq || proof.state != state {
            self.fetching_state = Some(proof);
            return;
        }
        self.committed = seq;
        self.executed = seq;
        self.exec_pending = None;
        for s in self.slots.values_mut() {
            s.result = None;
        }
        for tx in txs {
            self.note_committed_tx(*tx);
        }
        self.reset_request_watch(out);
        if self.next_seq < seq {
            self.next_seq = seq;
        }
        self.make_stable(proof, out);
        out.push(Effect::Broadcast(self.fetch_message()));
    }

    fn on_restore(
        &mut self,
        records: Vec<WalRecord>,
        committed: SeqNo,
        state: Digest,
        out: &mut Vec<Effect>,
    ) {
        self.committed = committed;
        self.executed = committed;
        self.next_seq = committed;
        self.restored_state = (committed, state);
        let mut intents = Vec::new();
        for r in records {
            match r {
                WalRecord::View { view, changing } => {
                    self.view = view;
                    self.changing = changing;
                }
                WalRecord::Intent(m) => {
                    intents.push(m.clone());
                    let bd = |b: &Batch| batch_digest(&self.verifier, b);
                    if let Some((view, seq, phase, d)) = m.vote_key(bd) {
                        self.voted.insert((seq, view, phase), d);
                        let slot = self.slots.entry((seq, view)).or_default();
                        match phase {
                            Phase::Prepare => slot.sent_prepare = true,
                            Phase::Commit => slot.sent_commit = true,
                            Phase::PrePrepare if seq > self.next_seq => self.next_seq = seq,
                            _ => {}
                        }
                    }
                }
                WalRecord::Accepted(env) => self.restore_accepted(env),
                WalRecord::Stable(p) => {
                    self.note_bridge(&p);
                    if p.seq > self.low {
                        self.low = p.seq;
                        self.stable = p;
                    }
                }
            }
        }
        let low = self.low;
        self.slots.retain(|(s, _), _| *s > low);
        self.committed_log.retain(|s, _| *s > low);
        self.voted.retain(|(s, _, _), _| *s > low);
        if self.next_seq < low {
            self.next_seq = low;
        }
        if committed < self.low {
            self.fetching_state = Some(self.stable.clone());
            out.push(Effect::FetchState { seq: self.stable.seq, state: self.stable.state });
        } else if committed == self.low && state != self.stable.state && self.low > SeqNo(0) {
            // The application's state disagrees with a stable checkpoint: local corruption.
            self.fetching_state = Some(self.stable.clone());
            out.push(Effect::FetchState { seq: self.stable.seq, state: self.stable.state });
        }
        if self.changing {
            self.changing = false;
            let v = self.view;
            // Re-enter the view change we were in with the very view change (and, for its
            // primary, the very new view) signed before the crash, if there was one: a second,
            // different one for the same view would be refused by the signer's guard.
            let recorded_vc = intents.iter().rev().find_map(|m| match m {
                Message::ViewChange(vc) if vc.view == v => Some(vc.clone()),
                _ => None,
            });
            let recorded_nv = intents.iter().rev().find_map(|m| match m {
                Message::NewView(nv) if nv.view == v => Some(nv.clone()),
                _ => None,
            });
            self.view = View(v.0.saturating_sub(1));
            self.enter_view_change(v, recorded_vc, out);
            if let Some(nv) = recorded_nv {
                if self.config.primary(v) == self.id {
                    // Built already: the view changes arriving meanwhile build no other one.
                    self.nv_build = Some(NvBuild {
                        view: v,
                        view_changes: nv.view_changes.clone(),
                        pre_prepares: Vec::new(),
                        tokens: BTreeMap::new(),
                    });
                    self.sign(Message::NewView(nv), out);
                }
            }
        } else {
            self.arm_normal_timers(out);
            self.resign_intents(intents, out);
        }
        out.push(Effect::Broadcast(self.fetch_message()));
        self.set_timer(Timer::Fetch, self.params.fetch_timeout_ms, out);
    }

    /// A crash between recording an intent and sending the signed vote loses the vote: sign
    /// the very same message again (the intent is already durable, so this is no
    /// equivocation) if it still matters — its slot is in the window and in the current view.
    fn resign_intents(&mut self, intents: Vec<Message>, out: &mut Vec<Effect>) {
        for m in intents {
            let done = match &m {
                Message::PrePrepare(p) => {
                    p.view != self.view
                        || p.result.is_none()
                        || self.slots.get(&(p.seq, p.view)).is_none_or(|s| s.pre_prepare.is_some())
                }
                Message::Prepare(v) => {
                    v.view != self.view
                        || self
                            .slots
                            .get(&(v.seq, v.view))
                            .is_none_or(|s| s.prepares.contains_key(&self.id))
                }
                Message::Commit(v) => {
                    v.view != self.view
                        || self
                            .slots
                            .get(&(v.seq, v.view))
                            .is_none_or(|s| s.commits.contains_key(&self.id))
                }
                Message::Checkpoint(c) => c.seq > self.committed,
                _ => true,
            };
            let live = m.seq().is_some_and(|s| self.in_window(s));
            if !done && live {
                self.sign(m, out);
            }
        }
    }

    fn restore_accepted(&mut self, env: Envelope) {
        // A record above the epoch's start may have been accepted under the old membership
        // before the node learned of the change: keep only what the current one signed.
        let above = env.message.seq().is_none_or(|s| s > self.config.after());
        if self.config.epoch() > 0 && above && !self.verify_env(&env) {
            return;
        }
        let bd = |b: &Batch| batch_digest(&self.verifier, b);
        match env.message.clone() {
            Message::PrePrepare(pp) => {
                let d = bd(&pp.batch);
                let slot = self.slots.entry((pp.seq, pp.view)).or_default();
                slot.pre_prepare.get_or_insert((env, d));
            }
            Message::Prepare(v) => {
                let slot = self.slots.entry((v.seq, v.view)).or_default();
                slot.prepares.insert(env.from, (v.digest, env));
            }
            Message::Commit(v) => {
                let slot = self.slots.entry((v.seq, v.view)).or_default();
                slot.commits.insert(env.from, (v.digest, env));
            }
            Message::NewView(nv) => {
                for pe in &nv.pre_prepares {
                    if let Message::PrePrepare(pp) = &pe.message {
                        let d = bd(&pp.batch);
                        let slot = self.slots.entry((pp.seq, pp.view)).or_default();
                        slot.pre_prepare.get_or_insert((pe.clone(), d));
                        if pp.seq > self.next_seq {
                            self.next_seq = pp.seq;
                        }
                    }
                }
                self.last_new_view = Some(env);
            }
            _ => {}
        }
    }

    fn arm_normal_timers(&mut self, out: &mut Vec<Effect>) {
        self.batch_armed = false;
        self.batch_due = false;
        out.push(Effect::CancelTimer(Timer::NewView));
        out.push(Effect::CancelTimer(Timer::ViewChangeResend));
        if self.is_primary() {
            out.push(Effect::CancelTimer(Timer::NullRequest));
            out.push(Effect::CancelTimer(Timer::Request));
            self.set_timer(Timer::Heartbeat, self.params.heartbeat_interval_ms, out);
        } else {
            out.push(Effect::CancelTimer(Timer::Heartbeat));
            out.push(Effect::CancelTimer(Timer::Batch));
            self.set_suspicion_timer(Timer::NullRequest, out);
        }
        self.request_watch = None;
        self.reset_request_watch(out);
    }

    /// Watches the oldest pending request; the timer restarts only when that request commits,
    /// so a primary that commits others but censors one is still caught (§4.5.2).
    fn reset_request_watch(&mut self, out: &mut Vec<Effect>) {
        if self.request_watch.is_some_and(|t| self.pool_set.contains(&t)) {
            return;
        }
        while self.pool.front().is_some_and(|t| !self.pool_set.contains(t)) {
            self.pool.pop_front();
        }
        self.request_watch = self.pool.front().copied();
        if self.changing {
            return;
        }
        match (self.request_watch, self.is_primary()) {
            (Some(_), false) => self.set_suspicion_timer(Timer::Request, out),
            (None, false) if self.fence().is_some() => {
                self.set_suspicion_timer(Timer::Request, out)
            }
            (None, false) => out.push(Effect::CancelTimer(Timer::Request)),
            (_, true) => {}
        }
    }

    // ----- progress --------------------------------------------------------------------------

    fn drive(&mut self, out: &mut Vec<Effect>) {
        self.try_deliver(out);
        self.try_execute(out);
        self.try_propose(out);
    }

    fn try_execute(&mut self, out: &mut Vec<Effect>) {
        if self.exec_pending.is_some() || self.fetching_state.is_some() {
            return;
        }
        let next = self.executed.next();
        if self.executed == self.committed {
            if let Some(entry) = self.catch_up.get(&next) {
                let batch = entry.batch.clone();
                let token = self.token();
                self.exec_pending = Some((next, token, ExecPurpose::CatchUp));
                out.push(Effect::Execute { seq: next, token, batch });
                return;
            }
        } else if self.catch_up.contains_key(&self.committed.next()) {
            // A certified entry is waiting but we executed speculatively past it; go back.
            self.rollback(out);
            return self.try_execute(out);
        }
        if self.fence().is_some_and(|c| next > c) {
            // The next epoch's batches wait until the change applies at the checkpoint.
            return;
        }
        if self.changing || !self.prepared(next, self.view) {
            return;
        }
        let Some(slot) = self.slots.get(&(next, self.view)) else {
            return;
        };
        if slot.result.is_some() {
            // Our own proposal: executed before it was proposed.
            self.executed = next;
            return self.try_execute(out);
        }
        let Some((env, _)) = &slot.pre_prepare else {
            return;
        };
        let Message::PrePrepare(pp) = &env.message else {
            return;
        };
        let batch = pp.batch.clone();
        let token = self.token();
        self.exec_pending = Some((next, token, ExecPurpose::Prepared));
        out.push(Effect::Execute { seq: next, token, batch });
    }

    fn rollback(&mut self, out: &mut Vec<Effect>) {
        if self.executed > self.committed || self.exec_pending.is_some() {
            out.push(Effect::Rollback { to: self.committed });
        }
        self.executed = self.committed;
        self.exec_pending = None;
        for s in self.slots.values_mut() {
            s.result = None;
        }
        let committed = self.committed;
        self.spec_members.retain(|s, _| *s <= committed);
    }

    fn try_propose(&mut self, out: &mut Vec<Effect>) {
        if self.changing
            || !self.is_primary()
            || self.exec_pending.is_some()
            || self.fetching_state.is_some()
            || self.executed != self.next_seq
            || self.next_seq < self.committed
        {
            return;
        }
        let seq = self.next_seq.next();
        let fence = self.fence();
        if !self.accepts(seq) {
            return;
        }
        while self
            .proposable
            .front()
            .is_some_and(|t| !self.pool_set.contains(t) || self.inflight.contains(t))
        {
            self.proposable.pop_front();
        }
        let mut txs = Vec::new();
        let mut taken = BTreeSet::new();
        let mut scanned = 0;
        for t in &self.proposable {
            if txs.len() == self.params.batch_size_max {
                break;
            }
            scanned += 1;
            if self.pool_set.contains(t) && !self.inflight.contains(t) && taken.insert(*t) {
                txs.push(*t);
            }
        }
        // A pending configuration change is sealed promptly: batches up to its checkpoint are
        // cut at once, null batches if nothing waits.
        let sealing = fence.is_some();
        if txs.is_empty() && !sealing {
            return;
        }
        // RBFT: a partial batch waits for the batch timeout, and also while `pipeline_depth`
        // of this primary's blocks await commit: under load the batch grows instead of the
        // number of rounds, each of which costs every node signatures, verifications and
        // fsyncs. A full batch, or one that seals an epoch, goes at once, so a backlog is
        // still proposed without delay (and no waiting request makes a backup suspect us).
        let busy = self.next_seq.0.saturating_sub(self.committed.0) >= self.params.pipeline_depth;
        if txs.len() < self.params.batch_size_max && !sealing && (busy || !self.batch_due) {
            if !self.batch_armed && !self.batch_due {
                self.batch_armed = true;
                self.set_timer(Timer::Batch, self.params.batch_timeout_ms, out);
            }
            return;
        }
        self.proposable.drain(..scanned);
        self.batch_due = false;
        if !self.proposable.is_empty() && !self.batch_armed {
            self.batch_armed = true;
            self.set_timer(Timer::Batch, self.params.batch_timeout_ms, out);
        }
        let token = self.token();
        let batch = Batch { txs };
        out.push(Effect::Execute { seq, token, batch: batch.clone() });
        self.exec_pending = Some((seq, token, ExecPurpose::Propose(batch)));
    }

    fn try_deliver(&mut self, out: &mut Vec<Effect>) {
        loop {
            let next = self.committed.next();
            if self.executed < next {
                return;
            }
            let q = self.config_for(next).quorum();
            let mut found = None;
            for ((_, view), slot) in self.slots.range((next, View(0))..=(next, View(u64::MAX))) {
                let (Some(result), Some((env, bd))) = (slot.result, &slot.pre_prepare) else {
                    continue;
                };
                let block = block_digest(&self.verifier, next, bd, &result);
                let sigs: Vec<_> = slot
                    .commits
                    .iter()
                    .filter(|(_, (d, _))| *d == block)
                    .map(|(id, (_, e))| (*id, e.signature.clone()))
                    .collect();
                if sigs.len() >= q {
                    let Message::PrePrepare(pp) = &env.message else {
                        continue;
                    };
                    let certificate =
                        CommitCertificate { view: *view, seq: next, block, signatures: sigs };
                    found = Some((pp.batch.clone(), result, certificate));
                    break;
                }
            }
            let Some((batch, result, certificate)) = found else {
                return;
            };
            self.deliver(next, batch, result, certificate, out);
        }
    }

    fn deliver(
        &mut self,
        seq: SeqNo,
        batch: Batch,
        result: Digest,
        certificate: CommitCertificate,
        out: &mut Vec<Effect>,
    ) {
        self.committed = seq;
        if self.executed < seq {
            self.executed = seq;
        }
        if self.next_seq < seq {
            self.next_seq = seq;
        }
        for tx in &batch.txs {
            self.note_committed_tx(*tx);
        }
        self.catch_up.remove(&seq);
        out.push(Effect::Commit {
            seq,
            batch: batch.clone(),
            result,
            certificate: certificate.clone(),
        });
        self.committed_log.insert(seq, CommittedEntry { batch, result, certificate });
        if let Some(members) = self.spec_members.remove(&seq) {
            self.note_config_change(seq, members, out);
        }
        self.reset_request_watch(out);
        if seq.0 % self.params.checkpoint_interval == 0 {
            self.vote(Message::Checkpoint(Checkpoint { seq, state: result }), out);
        }
        if self.pending_config.as_ref().is_some_and(|c| c.after() == seq) {
            self.apply_config(out);
        }
        self.check_stable(seq, out);
        if let Some(p) = self.pending_stable.take() {
            if p.seq <= self.committed {
                self.adopt_checkpoint(p, false, out);
            } else {
                self.pending_stable = Some(p);
            }
        }
    }

    // ----- membership (pbft.md, "Membership") -------------------------------------------------

    /// A configuration transaction committed at `seq`: the next epoch starts above the first
    /// checkpoint at or after it. A second change before that checkpoint replaces the first.
    fn note_config_change(&mut self, seq: SeqNo, members: Vec<Member>, out: &mut Vec<Effect>) {
        let after = self.boundary(seq);
        let Ok(next) = self.config.successor(members, after) else {
            // An empty or duplicated member list: the application should have refused it.
            return;
        };
        out.push(Effect::Reconfigured { config: next.clone() });
        self.pending_config = Some(next);
    }

    /// The committed height reached the pending configuration's checkpoint: switch epochs.
    /// Nothing above the checkpoint was executed or committed in the old epoch (the fence), so
    /// the old epoch's log above it is dropped; votes of the new epoch sign a different payload,
    /// so dropping the old ones' records cannot lead to equivocation.
    fn apply_config(&mut self, out: &mut Vec<Effect>) {
        let Some(next) = self.pending_config.take() else {
            return;
        };
        self.history.push(next.clone());
        self.config = next;
        let stable = self.stable.clone();
        self.note_bridge(&stable);
        self.enter_epoch(out);
    }

    /// Drops what belonged to the old epoch above the new one's start and takes up the new
    /// role (primary, backup, or removed).
    fn enter_epoch(&mut self, out: &mut Vec<Effect>) {
        let c = self.config.after();
        if self.executed > self.committed || self.exec_pending.is_some() {
            // Speculation ran past the fence (it does not in the normal flow): undo it.
            self.rollback(out);
        }
        self.spec_members.clear();
        self.slots.retain(|(s, _), _| *s <= c);
        self.voted.retain(|(s, _, _), _| *s <= c);
        self.catch_up.retain(|s, _| *s <= c);
        self.checkpoints.retain(|s, _| *s <= c);
        self.own_checkpoints.retain(|s, _| *s <= c);
        self.view_changes.clear();
        self.early.clear();
        self.my_view_change = None;
        self.nv_build = None;
        self.last_new_view = None;
        self.inflight.clear();
        self.batch_due = false;
        if self.next_seq > c {
            self.next_seq = c.max(self.committed);
        }
        self.rebuild_proposable();
        if !self.active() {
            // Removed: stop every timer and fall silent.
            for t in [
                Timer::Batch,
                Timer::Request,
                Timer::NullRequest,
                Timer::Heartbeat,
                Timer::NewView,
                Timer::ViewChangeResend,
                Timer::Fetch,
            ] {
                out.push(Effect::CancelTimer(t));
            }
            return;
        }
        // An epoch begins with a view change among the new members: it gives the epoch a new
        // view signed under the new membership (which nodes that switch late are shown), and
        // a primary of the new member list. A view change in progress was signed under the
        // old membership, so it is signed again.
        let target = if self.changing { self.view } else { self.view.next() };
        self.view = View(target.0.saturating_sub(1));
        self.changing = false;
        self.start_view_change(target, out);
    }

    /// Every pending transaction not in flight, once, oldest first.
    fn rebuild_proposable(&mut self) {
        let mut seen = BTreeSet::new();
        self.proposable = self
            .pool
            .iter()
            .filter(|t| {
                self.pool_set.contains(*t) && !self.inflight.contains(*t) && seen.insert(**t)
            })
            .copied()
            .collect();
    }

    fn note_committed_tx(&mut self, tx: Digest) {
        if self.pool_set.remove(&tx) && self.pool.len() > 2 * self.pool_set.len() + 64 {
            // Amortised compaction: stale entries are otherwise skipped lazily.
            let live = &self.pool_set;
            self.pool.retain(|t| live.contains(t));
        }
        if self.proposable.len() > 2 * self.pool_set.len() + 64 {
            let live = &self.pool_set;
            self.proposable.retain(|t| live.contains(t));
        }
        self.inflight.remove(&tx);
        if self.committed_txs.insert(tx) {
            self.committed_txs_order.push_back(tx);
            if self.committed_txs_order.len() > DEDUP_TXS_MAX {
                if let Some(old) = self.committed_txs_order.pop_front() {
                    self.committed_txs.remove(&old);
                }
            }
        }
    }

    // ----- checkpoints (§4.3) ------------------------------------------------------------------

    fn on_checkpoint(&mut self, env: Envelope, c: Checkpoint, out: &mut Vec<Effect>) {
        if c.seq <= self.low
            || c.seq.0 > self.low.0.saturating_add(self.params.window)
            || c.seq.0 % self.params.checkpoint_interval != 0
        {
            return;
        }
        self.checkpoints.entry(c.seq).or_default().insert(env.from, (c.state, env));
        self.check_stable(c.seq, out);
    }

    fn check_stable(&mut self, seq: SeqNo, out: &mut Vec<Effect>) {
        let Some(votes) = self.checkpoints.get(&seq) else {
            return;
        };
        let mut by_state: BTreeMap<Digest, Vec<Envelope>> = BTreeMap::new();
        for (state, e) in votes.values() {
            by_state.entry(*state).or_default().push(e.clone());
        }
        let q = self.config_for(seq).quorum();
        let Some((state, signed)) = by_state.into_iter().find(|(_, v)| v.len() >= q) else {
            return;
        };
        let proof = CheckpointProof { seq, state, signed };
        self.adopt_checkpoint(proof, false, out);
    }

    /// A valid stable-checkpoint proof: make it ours if we reached it; if we are behind, fetch
    /// its state now (`now`) or when the fetch timer finds us still behind (RBFT's fetch
    /// checkpoint timeout), so that a replica only briefly behind is not sent into a transfer.
    fn adopt_checkpoint(&mut self, proof: CheckpointProof, now: bool, out: &mut Vec<Effect>) {
        if proof.seq <= self.low {
            return;
        }
        if proof.seq <= self.committed {
            let ours = if self.restored_state.0 == proof.seq {
                Some(self.restored_state.1)
            } else {
                self.committed_log.get(&proof.seq).map(|e| e.result)
            };
            if ours == Some(proof.state) {
                self.make_stable(proof, out);
            }
            return;
        }
        if !now {
            if self.pending_stable.as_ref().is_none_or(|p| p.seq < proof.seq) {
                self.pending_stable = Some(proof);
            }
            return;
        }
        if self.fetching_state.as_ref().is_some_and(|p| p.seq >= proof.seq) {
            return;
        }
        // §5.3.2 state transfer: we are behind a stable checkpoint.
        self.rollback(out);
        out.push(Effect::FetchState { seq: proof.seq, state: proof.state });
        self.fetching_state = Some(proof);
    }

    /// Keeps `p` as the bridge of every later epoch start it is the best proof for.
    fn note_bridge(&mut self, p: &CheckpointProof) {
        for c in self.history.iter().skip(1).map(Config::after) {
            if p.seq <= c && self.bridges.get(&c).is_none_or(|b| b.seq < p.seq) {
                self.bridges.insert(c, p.clone());
            }
        }
    }

    fn make_stable(&mut self, proof: CheckpointProof, out: &mut Vec<Effect>) {
        let seq = proof.seq;
        if !self.changing && seq > self.view_start {
            self.stalled_views = self.stalled_views.saturating_sub(1);
        }
        self.note_bridge(&proof);
        self.low = seq;
        // The window moves while a view change waits too: what was kept below it goes.
        self.early.retain(|(s, _, _), _| *s > seq);
        self.stable = proof.clone();
        out.push(Effect::Persist(WalRecord::Stable(proof)));
        self.slots.retain(|(s, _), _| *s > seq);
        self.checkpoints.retain(|s, _| *s > seq);
        self.own_checkpoints.retain(|s, _| *s > seq);
        let bridges = &self.bridges;
        self.committed_log
            .retain(|s, _| *s > seq || bridges.iter().any(|(c, p)| *s > p.seq && *s <= *c));
        self.catch_up.retain(|s, _| *s > seq);
        self.voted.retain(|(s, _, _), _| *s > seq);
    }

    fn verify_checkpoint_proof(&self, p: &CheckpointProof) -> Result<(), Error> {
        if p.seq == SeqNo(0) {
            return if p.state == self.config.genesis_state() && p.signed.is_empty() {
                Ok(())
            } else {
                Err(Error::Proof("bad genesis checkpoint"))
            };
        }
        if p.seq.0 % self.params.checkpoint_interval != 0 {
            return Err(Error::Proof("checkpoint off the interval"));
        }
        let mut seen = BTreeSet::new();
        for e in &p.signed {
            match &e.message {
                Message::Checkpoint(c) if c.seq == p.seq && c.state == p.state => {}
                _ => return Err(Error::Proof("checkpoint proof mixes checkpoints")),
            }
            if !seen.insert(e.from) || !self.verify_env(e) {
                return Err(Error::Signature(e.from));
            }
        }
        if seen.len() < self.config_for(p.seq).quorum() {
            return Err(Error::Proof("checkpoint proof below quorum"));
        }
        Ok(())
    }

    // ----- catch-up --------------------------------------------------------------------------

    fn on_fetch(&mut self, from: NodeId, after: SeqNo, view: View, out: &mut Vec<Effect>) {
        if view < self.view && !self.changing {
            if let Some(nv) = &self.last_new_view {
                out.push(Effect::Send { to: from, envelope: nv.clone() });
            }
        }
        if after >= self.committed {
            return;
        }
        // A requester below an epoch's start may not know its members yet: lead it over the
        // bridge (the old epoch's last checkpoint and the entries up to the start), which the
        // old members signed, rather than to the latest checkpoint.
        let (checkpoint, end) = if after < self.low {
            match self.bridges.range(after.next()..=self.low).next() {
                Some((c, p)) => ((p.seq > after).then(|| p.clone()), *c),
                None => (Some(self.stable.clone()), SeqNo(u64::MAX)),
            }
        } else {
            (None, SeqNo(u64::MAX))
        };
        let start = checkpoint.as_ref().map_or(after, |p| p.seq);
        let entries: Vec<CommittedEntry> = self
            .committed_log
            .range(start.next()..=end.max(start.next()))
            .take(self.params.fetch_entries_max)
            .map(|(_, e)| e.clone())
            .collect();
        let env = Envelope {
            from: self.id,
            message: Message::Entries(Entries { checkpoint, entries }),
            signature: Default::default(),
        };
        out.push(Effect::Send { to: from, envelope: env });
    }

    fn on_entries(&mut self, e: Entries, out: &mut Vec<Effect>) {
        if let Some(p) = e.checkpoint {
            if p.seq > self.committed && self.verify_checkpoint_proof(&p).is_ok() {
                self.adopt_checkpoint(p, true, out);
            }
        }
        let horizon = self.committed.0.saturating_add(2 * self.params.fetch_entries_max as u64);
        for entry in e.entries {
            let seq = entry.certificate.seq;
            if seq <= self.committed || seq.0 > horizon || self.catch_up.contains_key(&seq) {
                continue;
            }
            if self.verify_certificate(&entry).is_ok() {
                self.catch_up.insert(seq, entry);
            }
        }
    }

    /// Checks a commit certificate against its entry: `Q` distinct members signed the commit
    /// for `block_digest(seq, batch, result)`.
    fn verify_certificate(&self, entry: &CommittedEntry) -> Result<(), Error> {
        let c = &entry.certificate;
        let bd = self.bdigest(&entry.batch);
        if block_digest(&self.verifier, c.seq, &bd, &entry.result) != c.block {
            return Err(Error::Proof("certificate for another block"));
        }
        verify_certificate(&self.config, &self.verifier, c)
    }

    // ----- view change (§4.4, §4.5) --------------------------------------------------------------

    fn start_view_change(&mut self, target: View, out: &mut Vec<Effect>) {
        self.enter_view_change(target, None, out);
    }

    /// Moves to `target` and signs this replica's view change for it: `recorded`, the one its
    /// WAL holds from before a crash, or a new one. Each is recorded as an intent before it is
    /// signed, so that across a crash the replica signs one view change per view, as a signer
    /// guard demands (Castro & Liskov §4.4: one VIEW-CHANGE per view).
    fn enter_view_change(
        &mut self,
        target: View,
        recorded: Option<ViewChange>,
        out: &mut Vec<Effect>,
    ) {
        if target <= self.view {
            return;
        }
        self.view = target;
        self.changing = true;
        self.vc_attempts = self.vc_attempts.saturating_add(1);
        // Capped where the timers stop growing, so that one checkpoint after a long run of
        // view changes already shortens them.
        self.stalled_views = (self.stalled_views + 1).min(BACKOFF_SHIFT_MAX);
        self.early.clear();
        self.nv_build = None;
        self.batch_due = false;
        out.push(Effect::Persist(WalRecord::View { view: target, changing: true }));
        for t in [Timer::Batch, Timer::Request, Timer::NullRequest, Timer::Heartbeat] {
            out.push(Effect::CancelTimer(t));
        }
        let vc = match recorded {
            Some(vc) => vc,
            None => {
                let prepared = self.prepared_proofs();
                let vc = ViewChange { view: target, checkpoint: self.stable.clone(), prepared };
                out.push(Effect::Persist(WalRecord::Intent(Message::ViewChange(vc.clone()))));
                vc
            }
        };
        self.sign(Message::ViewChange(vc), out);
        self.nv_timer_armed = false;
        out.push(Effect::CancelTimer(Timer::NewView));
        self.set_timer(Timer::ViewChangeResend, self.params.view_change_resend_ms, out);
        self.view_changes.retain(|_, (v, _)| *v >= target);
    }

    /// For each sequence number above the stable checkpoint, the prepared certificate of the
    /// highest view we prepared it in (§4.4, the `P` component).
    fn prepared_proofs(&self) -> Vec<PreparedProof> {
        let mut best: BTreeMap<SeqNo, PreparedProof> = BTreeMap::new();
        for ((seq, view), slot) in &self.slots {
            // Below the epoch's start everything is committed by every member of the epoch.
            if !self.in_window(*seq) || *seq <= self.config.after() || *view >= self.view {
                continue;
            }
            let need = self.config_for(*seq).quorum().saturating_sub(1);
            let Some((pp, d)) = &slot.pre_prepare else {
                continue;
            };
            let prepares: Vec<Envelope> = slot
                .prepares
                .values()
                .filter(|(pd, _)| pd == d)
                .map(|(_, e)| e.clone())
                .take(need)
                .collect();
            if prepares.len() < need {
                continue;
            }
            // Slots iterate in (seq, view) order, so a later one has a higher view.
            best.insert(*seq, PreparedProof { pre_prepare: pp.clone(), prepares });
        }
        best.into_values().collect()
    }

    fn verify_view_change(&self, vc: &ViewChange) -> Result<(), Error> {
        self.verify_checkpoint_proof(&vc.checkpoint)?;
        let low = vc.checkpoint.seq;
        let mut last = low;
        for p in &vc.prepared {
            let Message::PrePrepare(pp) = &p.pre_prepare.message else {
                return Err(Error::Proof("prepared proof without pre-prepare"));
            };
            if pp.seq <= last || pp.seq.0 > low.0.saturating_add(self.params.window) {
                return Err(Error::Window { seq: pp.seq, low });
            }
            last = pp.seq;
            if pp.view >= vc.view {
                return Err(Error::Proof("prepared in a view not below the new one"));
            }
            verify_prepared(self.config_for(pp.seq), &self.verifier, p)?;
        }
        Ok(())
    }

    fn on_view_change(&mut self, env: Envelope, vc: ViewChange, out: &mut Vec<Effect>) {
        if vc.view < self.view || (vc.view == self.view && !self.changing) {
            // The sender is behind: show it the view we are in.
            if !self.changing {
                if let Some(nv) = &self.last_new_view {
                    out.push(Effect::Send { to: env.from, envelope: nv.clone() });
                }
            }
            if vc.checkpoint.seq < self.low {
                let fetch = Envelope {
                    from: self.id,
                    message: Message::Entries(Entries {
                        checkpoint: Some(self.stable.clone()),
                        entries: vec![],
                    }),
                    signature: Default::default(),
                };
                out.push(Effect::Send { to: env.from, envelope: fetch });
            }
            return;
        }
        if self.view_changes.get(&env.from).is_some_and(|(v, _)| *v >= vc.view) {
            return;
        }
        if self.verify_view_change(&vc).is_err() {
            return;
        }
        self.view_changes.insert(env.from, (vc.view, env));
        // §4.5.2: join once f + 1 replicas want a higher view, at the smallest view such that
        // f + 1 of them want at least that.
        let mut higher: Vec<View> = self
            .view_changes
            .iter()
            .filter(|(id, (v, _))| **id != self.id && *v > self.view)
            .map(|(_, (v, _))| *v)
            .collect();
        let f1 = self.f() + 1;
        if higher.len() >= f1 {
            higher.sort_unstable_by(|a, b| b.cmp(a));
            let target = higher[f1 - 1];
            self.start_view_change(target, out);
        }
        self.maybe_build_new_view(out);
    }

    /// §4.5.2: the new-view timer starts only once `N − f` replicas (us included) want this
    /// view, so a lone replica that suspected the primary waits for the others instead of
    /// running ahead through ever higher views.
    fn maybe_arm_new_view_timer(&mut self, out: &mut Vec<Effect>) {
        if !self.changing || self.nv_timer_armed {
            return;
        }
        let n = self.view_changes.values().filter(|(v, _)| *v == self.view).count();
        if n >= self.config.n() - self.f() && self.view_changes.contains_key(&self.id) {
            self.nv_timer_armed = true;
            let shift = self.vc_attempts.saturating_sub(1).min(6);
            self.set_timer(Timer::NewView, self.params.new_view_timeout_ms << shift, out);
        }
    }

    fn maybe_build_new_view(&mut self, out: &mut Vec<Effect>) {
        self.maybe_arm_new_view_timer(out);
        if !self.changing || !self.is_primary() || self.nv_build.is_some() {
            return;
        }
        let need = self.config.n() - self.f();
        let mut vcs: Vec<Envelope> = self
            .view_changes
            .iter()
            .filter(|(_, (v, _))| *v == self.view)
            .map(|(_, (_, e))| e.clone())
            .collect();
        if vcs.len() < need || !self.view_changes.contains_key(&self.id) {
            return;
        }
        vcs.truncate(need);
        let Ok((_, o)) = self.compute_o(&vcs) else {
            return;
        };
        let view = self.view;
        let mut build = NvBuild {
            view,
            view_changes: vcs,
            pre_prepares: vec![None; o.len()],
            tokens: BTreeMap::new(),
        };
        for (i, (seq, batch)) in o.into_iter().enumerate() {
            let pp = PrePrepare { view, seq, batch, result: None };
            if let Some(t) = self.vote(Message::PrePrepare(pp), out) {
                build.tokens.insert(t, i);
            }
        }
        let done = build.tokens.is_empty();
        let nv = NewView { view, view_changes: build.view_changes.clone(), pre_prepares: vec![] };
        self.nv_build = Some(build);
        if done {
            self.sign_new_view(nv, out);
        }
    }

    /// Records the new view as an intent, then signs it: a primary signs one new view per
    /// view, and re-signs that very one after a crash (see `on_restore`).
    fn sign_new_view(&mut self, nv: NewView, out: &mut Vec<Effect>) {
        let m = Message::NewView(nv);
        out.push(Effect::Persist(WalRecord::Intent(m.clone())));
        self.sign(m, out);
    }

    /// The new view's starting checkpoint and its O set (§4.4): for every sequence number
    /// between the highest checkpoint and the highest prepared one, the batch prepared in the
    /// highest view, or the null batch. Primary and backups compute it alike.
    fn compute_o(&self, vcs: &[Envelope]) -> Result<(CheckpointProof, Vec<(SeqNo, Batch)>), Error> {
        let mut cp: Option<&CheckpointProof> = None;
        let mut proofs: Vec<&PreparedProof> = Vec::new();
        for e in vcs {
            let Message::ViewChange(vc) = &e.message else {
                return Err(Error::Proof("not a view change"));
            };
            if cp.is_none_or(|c| vc.checkpoint.seq > c.seq) {
                cp = Some(&vc.checkpoint);
            }
            proofs.extend(vc.prepared.iter());
        }
        let Some(cp) = cp else {
            return Err(Error::Proof("no view changes"));
        };
        // Every sender of a view change of this epoch committed up to the epoch's start.
        let min_s = cp.seq.max(self.config.after());
        let mut chosen: BTreeMap<SeqNo, (View, Digest, Batch)> = BTreeMap::new();
        for p in proofs {
            let Message::PrePrepare(pp) = &p.pre_prepare.message else {
                continue;
            };
            if pp.seq <= min_s || pp.seq.0 > min_s.0.saturating_add(self.params.window) {
                continue;
            }
            let d = self.bdigest(&pp.batch);
            let better = match chosen.get(&pp.seq) {
                None => true,
                Some((v, cd, _)) => pp.view > *v || (pp.view == *v && d < *cd),
            };
            if better {
                chosen.insert(pp.seq, (pp.view, d, pp.batch.clone()));
            }
        }
        let max_s = chosen.keys().next_back().copied().unwrap_or(min_s);
        let mut o = Vec::new();
        let mut s = min_s.next();
        while s <= max_s {
            let batch = chosen.remove(&s).map(|(_, _, b)| b).unwrap_or_default();
            o.push((s, batch));
            s = s.next();
        }
        Ok((cp.clone(), o))
    }

    fn on_new_view(&mut self, env: Envelope, nv: NewView, out: &mut Vec<Effect>) {
        if nv.view < self.view || (nv.view == self.view && !self.changing) {
            return;
        }
        if env.from != self.config.primary(nv.view) {
            return;
        }
        let Ok(cp) = self.verify_new_view(&nv) else {
            return;
        };
        self.enter_view(env, nv, cp, out);
    }

    fn verify_new_view(&self, nv: &NewView) -> Result<CheckpointProof, Error> {
        let need = self.config.n() - self.f();
        let mut seen = BTreeSet::new();
        for e in &nv.view_changes {
            let Message::ViewChange(vc) = &e.message else {
                return Err(Error::Proof("new view holds a non-view-change"));
            };
            if vc.view != nv.view || !seen.insert(e.from) || !self.verify_env(e) {
                return Err(Error::Proof("bad view change in new view"));
            }
            self.verify_view_change(vc)?;
        }
        if seen.len() < need {
            return Err(Error::Proof("new view below N - f view changes"));
        }
        // §4.4: backups recompute O and accept only the same.
        let (cp, o) = self.compute_o(&nv.view_changes)?;
        if o.len() != nv.pre_prepares.len() {
            return Err(Error::Proof("O set differs"));
        }
        let primary = self.config.primary(nv.view);
        for ((seq, batch), e) in o.iter().zip(&nv.pre_prepares) {
            let Message::PrePrepare(pp) = &e.message else {
                return Err(Error::Proof("O set holds a non-pre-prepare"));
            };
            if e.from != primary
                || pp.view != nv.view
                || pp.seq != *seq
                || pp.batch != *batch
                || pp.result.is_some()
                || !self.verify_env(e)
            {
                return Err(Error::Proof("O set differs"));
            }
        }
        Ok(cp)
    }

    fn enter_view(
        &mut self,
        env: Envelope,
        nv: NewView,
        cp: CheckpointProof,
        out: &mut Vec<Effect>,
    ) {
        self.view = nv.view;
        self.changing = false;
        self.vc_attempts = 0;
        // The checkpoint adopted below is the old views' progress, not this one's.
        self.view_start = SeqNo(u64::MAX);
        self.nv_build = None;
        self.my_view_change = None;
        out.push(Effect::Persist(WalRecord::View { view: nv.view, changing: false }));
        out.push(Effect::Persist(WalRecord::Accepted(env.clone())));
        self.last_new_view = Some(env);
        let view = nv.view;
        self.view_changes.retain(|_, (v, _)| *v > view);
        out.push(Effect::ViewChanged { view, primary: self.config.primary(view) });
        // Speculative execution above the committed height belongs to the old view.
        self.rollback(out);
        self.inflight.clear();
        self.batch_due = false;
        if cp.seq > self.low {
            self.adopt_checkpoint(cp.clone(), true, out);
        }
        let mut max_s = cp.seq.max(self.committed);
        for pe in nv.pre_prepares {
            let Message::PrePrepare(pp) = &pe.message else {
                continue;
            };
            let (seq, batch) = (pp.seq, pp.batch.clone());
            max_s = max_s.max(seq);
            if !self.in_window(seq) {
                continue;
            }
            for tx in &batch.txs {
                self.inflight.insert(*tx);
            }
            let d = self.bdigest(&batch);
            let committed_result = self
                .committed_log
                .get(&seq)
                .filter(|e| self.bdigest(&e.batch) == d)
                .map(|e| e.result);
            let slot = self.slots.entry((seq, view)).or_default();
            slot.pre_prepare = Some((pe.clone(), d));
            if seq <= self.committed {
                // Already committed here; vote again in the new view so others can commit.
                slot.result = committed_result;
            }
            self.send_prepare(seq, view, d, out);
            self.after_vote(seq, view, out);
        }
        self.next_seq = max_s;
        self.view_start = max_s;
        // Everything pending that the O set does not carry is proposable again.
        self.rebuild_proposable();
        self.arm_normal_timers(out);
        // In (sequence number, phase) order: each pre-prepare before its votes.
        for env in std::mem::take(&mut self.early).into_values() {
            match env.message.clone() {
                Message::PrePrepare(pp) => self.on_pre_prepare(env, pp, out),
                Message::Prepare(v) => self.on_prepare(env, v, out),
                Message::Commit(v) => self.on_commit(env, v, out),
                _ => {}
            }
        }
    }
}

/// Checks a prepared certificate: a pre-prepare signed by its view's primary and `Q − 1`
/// matching prepares from distinct other members.
pub fn verify_prepared(
    config: &Config,
    verifier: &dyn Verifier,
    p: &PreparedProof,
) -> Result<(), Error> {
    let Message::PrePrepare(pp) = &p.pre_prepare.message else {
        return Err(Error::Proof("prepared proof without pre-prepare"));
    };
    let primary = config.primary(pp.view);
    if p.pre_prepare.from != primary || !verify_one(config, verifier, &p.pre_prepare) {
        return Err(Error::Signature(p.pre_prepare.from));
    }
    let d = batch_digest(verifier, &pp.batch);
    let mut seen = BTreeSet::new();
    for e in &p.prepares {
        match &e.message {
            Message::Prepare(v) if v.view == pp.view && v.seq == pp.seq && v.digest == d => {}
            _ => return Err(Error::Proof("prepare does not match")),
        }
        if e.from == primary || !seen.insert(e.from) || !verify_one(config, verifier, e) {
            return Err(Error::Signature(e.from));
        }
    }
    if seen.len() + 1 < config.quorum() {
        return Err(Error::Proof("prepared proof below quorum"));
    }
    Ok(())
}

/// Checks a commit certificate: `Q` distinct members signed the commit vote for its block.
/// Anyone holding the configuration can run it (DESIGN §4).
pub fn verify_certificate(
    config: &Config,
    verifier: &dyn Verifier,
    c: &CommitCertificate,
) -> Result<(), Error> {
    let message = Message::Commit(Vote { view: c.view, seq: c.seq, digest: c.block });
    let mut seen = BTreeSet::new();
    for (id, sig) in &c.signatures {
        let Some(key) = config.key(*id) else {
            return Err(Error::NotMember(*id));
        };
        if !seen.insert(*id) {
            return Err(Error::Proof("duplicate signer"));
        }
        let payload = signing_payload(config.epoch(), *id, &message);
        if verifier.verify(key, &payload, sig) != Verification::Valid {
            return Err(Error::Signature(*id));
        }
    }
    if seen.len() < config.quorum() {
        return Err(Error::Proof("certificate below quorum"));
    }
    Ok(())
}

fn verify_one(config: &Config, verifier: &dyn Verifier, e: &Envelope) -> bool {
    let Some(key) = config.key(e.from) else {
        return false;
    };
    let payload = signing_payload(config.epoch(), e.from, &e.message);
    verifier.verify(key, &payload, &e.signature) == Verification::Valid
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Member, PublicKey, Signature};

    /// Not cryptography: a deterministic stand-in so that the core's tests need no crypto
    /// crate. A "signature" is the digest of the key and the payload.
    struct TestVerifier;

    fn fnv(seed: u64, bytes: &[u8]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    impl Verifier for TestVerifier {
        fn digest(&self, bytes: &[u8]) -> Digest {
            let mut d = [0u8; 32];
            for (i, chunk) in d.chunks_mut(8).enumerate() {
                chunk.copy_from_slice(&fnv(i as u64, bytes).to_be_bytes());
            }
            Digest(d)
        }
        fn verify(&self, key: &PublicKey, payload: &[u8], sig: &Signature) -> Verification {
            if sign_with(key, payload) == *sig {
                Verification::Valid
            } else {
                Verification::Invalid
            }
        }
    }

    fn sign_with(key: &PublicKey, payload: &[u8]) -> Signature {
        let mut b = key.0.clone();
        b.extend_from_slice(payload);
        Signature(TestVerifier.digest(&b).0.to_vec())
    }

    fn key(i: u32) -> PublicKey {
        PublicKey(vec![i as u8; 4])
    }

    fn config(n: u32) -> Config {
        let members = (0..n).map(|i| Member { id: NodeId(i), public_key: key(i) }).collect();
        Config::new(members, Digest([7; 32])).unwrap()
    }

    fn signed(from: u32, message: Message) -> Envelope {
        let signature = sign_with(&key(from), &signing_payload(0, NodeId(from), &message));
        Envelope { from: NodeId(from), message, signature }
    }

    fn engine(id: u32) -> Engine<TestVerifier> {
        engine_with(id, Params { checkpoint_interval: 4, window: 8, ..Params::default() })
    }

    /// Replica `id` of 4, restored empty.
    fn engine_with(id: u32, params: Params) -> Engine<TestVerifier> {
        engine_in(config(4), id, params)
    }

    /// Replica `id` of `config`, restored empty.
    fn engine_in(config: Config, id: u32, params: Params) -> Engine<TestVerifier> {
        let mut e = Engine::new(NodeId(id), config, params, TestVerifier).unwrap();
        let _ = e.handle(Input::Restore {
            records: vec![],
            committed: SeqNo(0),
            state: Digest([7; 32]),
            recent: vec![],
            configs: vec![],
        });
        e
    }

    fn batch(x: u8) -> Batch {
        Batch { txs: vec![Digest([x; 32])] }
    }

    fn pre_prepare(view: u64, seq: u64, b: Batch, result: Option<Digest>) -> Envelope {
        let primary = (view % 4) as u32;
        signed(
            primary,
            Message::PrePrepare(PrePrepare { view: View(view), seq: SeqNo(seq), batch: b, result }),
        )
    }

    fn prepared(view: u64, seq: u64, b: Batch, by: &[u32]) -> PreparedProof {
        let d = batch_digest(&TestVerifier, &b);
        let prepares = by
            .iter()
            .map(|i| {
                signed(*i, Message::Prepare(Vote { view: View(view), seq: SeqNo(seq), digest: d }))
            })
            .collect();
        PreparedProof { pre_prepare: pre_prepare(view, seq, b, Some(Digest([1; 32]))), prepares }
    }

    fn genesis() -> CheckpointProof {
        CheckpointProof { seq: SeqNo(0), state: Digest([7; 32]), signed: vec![] }
    }

    fn view_change(from: u32, view: u64, prepared: Vec<PreparedProof>) -> Envelope {
        signed(
            from,
            Message::ViewChange(ViewChange { view: View(view), checkpoint: genesis(), prepared }),
        )
    }

    #[test]
    fn votes_are_persisted_before_they_are_signed_and_sent() {
        // pbft.md list item 9; C&L §4.2 (a backup accepts the pre-prepare, then prepares).
        let mut e = engine(1);
        let out = e.handle(Input::Message(pre_prepare(0, 1, batch(1), Some(Digest([9; 32])))));
        let intent = out
            .iter()
            .position(|x| matches!(x, Effect::Persist(WalRecord::Intent(Message::Prepare(_)))));
        let sign = out.iter().position(|x| matches!(x, Effect::Sign { .. }));
        assert!(intent.is_some() && intent < sign, "{out:?}");
        let Some(Effect::Sign { token, payload }) = sign.map(|i| out[i].clone()) else {
            unreachable!()
        };
        let out = e.handle(Input::Signed { token, signature: sign_with(&key(1), &payload) });
        let persist = out.iter().position(|x| matches!(x, Effect::Persist(WalRecord::Accepted(_))));
        let send = out.iter().position(|x| matches!(x, Effect::Broadcast(_)));
        assert!(persist.is_some() && persist < send, "{out:?}");
    }

    /// A verified message that the engine otherwise ignores.
    fn only_heard(e: &Effect) -> bool {
        matches!(e, Effect::Heard { .. })
    }

    #[test]
    fn pre_prepares_outside_the_window_or_badly_signed_are_refused() {
        // C&L §4.2: only sequence numbers in (h, h + L] are accepted.
        let mut e = engine(1);
        assert!(
            e.handle(Input::Message(pre_prepare(0, 9, batch(1), Some(Digest([9; 32])))))
                .iter()
                .all(only_heard)
        );
        assert!(
            e.handle(Input::Message(pre_prepare(0, 0, batch(1), Some(Digest([9; 32])))))
                .iter()
                .all(only_heard)
        );
        let mut forged = pre_prepare(0, 1, batch(1), Some(Digest([9; 32])));
        forged.signature.0[0] ^= 1;
        // A bad signature is not even heard: the host shows nothing of its sender from it.
        assert!(e.handle(Input::Message(forged)).is_empty());
        // Not from the primary of view 0.
        let wrong = signed(
            2,
            Message::PrePrepare(PrePrepare {
                view: View(0),
                seq: SeqNo(1),
                batch: batch(1),
                result: Some(Digest([9; 32])),
            }),
        );
        assert!(e.handle(Input::Message(wrong)).iter().all(only_heard));
    }

    #[test]
    fn a_pre_prepare_must_be_of_this_view_carry_its_result_and_fit_a_batch() {
        // C&L §4.2: a backup accepts a pre-prepare "in view v" (its current one, and not
        // while changing views, §4.4); RBFT's pre-prepare carries the primary's execution
        // result; a batch holds at most `batch_size_max` transactions.
        let params =
            Params { checkpoint_interval: 4, window: 8, batch_size_max: 2, ..Params::default() };
        let mut e = engine_with(2, params);
        let big = Batch { txs: vec![Digest([1; 32]), Digest([2; 32]), Digest([3; 32])] };
        for (what, pp) in [
            (
                "another view's, from its primary",
                pre_prepare(1, 1, batch(1), Some(Digest([9; 32]))),
            ),
            ("without a result", pre_prepare(0, 1, batch(1), None)),
            ("over the batch size", pre_prepare(0, 1, big, Some(Digest([9; 32])))),
        ] {
            let out = e.handle(Input::Message(pp));
            assert!(out.iter().all(only_heard), "{what}: {out:?}");
        }
        let two = Batch { txs: vec![Digest([1; 32]), Digest([2; 32])] };
        assert!(accepted(&e.handle(Input::Message(pre_prepare(0, 1, two, Some(Digest([9; 32])))))));
        // While changing views, even the current view's primary is not followed.
        let mut e = engine(2);
        let _ = e.handle(Input::Timeout(Timer::NullRequest));
        assert!(e.is_changing_view());
        let out = e.handle(Input::Message(pre_prepare(1, 1, batch(1), Some(Digest([9; 32])))));
        assert!(!accepted(&out), "{out:?}");
    }

    #[test]
    fn second_pre_prepare_for_a_slot_gets_no_second_prepare() {
        // C&L §4.2: at most one pre-prepare per (view, seq) is accepted.
        let mut e = engine(1);
        let _ = e.handle(Input::Message(pre_prepare(0, 1, batch(1), Some(Digest([9; 32])))));
        let out = e.handle(Input::Message(pre_prepare(0, 1, batch(2), Some(Digest([9; 32])))));
        assert!(!out.iter().any(|x| matches!(x, Effect::Sign { .. })), "{out:?}");
    }

    #[test]
    fn o_set_takes_the_highest_view_and_fills_gaps_with_null_requests() {
        // C&L §4.4: for each n the request prepared in the highest view; null where none.
        let e = engine(1);
        let vcs = vec![
            view_change(1, 2, vec![prepared(0, 1, batch(0xa), &[1, 2])]),
            view_change(
                2,
                2,
                vec![prepared(1, 1, batch(0xb), &[2, 3]), prepared(0, 3, batch(0xc), &[1, 3])],
            ),
            view_change(3, 2, vec![]),
        ];
        let (cp, o) = e.compute_o(&vcs).unwrap();
        assert_eq!(cp.seq, SeqNo(0));
        assert_eq!(
            o,
            vec![(SeqNo(1), batch(0xb)), (SeqNo(2), Batch::default()), (SeqNo(3), batch(0xc))]
        );
    }

    #[test]
    fn the_o_set_starts_at_the_highest_checkpoint_and_spans_the_window() {
        // C&L §4.4: min-s is the latest stable checkpoint in V, max-s the highest prepared
        // sequence number; O re-proposes each n in (min-s, max-s]: certificates at or below
        // min-s are dropped, one at the window's edge (min-s + L) is kept, one past it
        // dropped (it cannot have prepared: no replica's window reached it).
        let e = engine(1);
        let cp4 = checkpoint_proof(4, Digest([3; 32]), &[0, 1, 2]);
        let vc_at = |from: u32, checkpoint: CheckpointProof, prepared| {
            signed(from, Message::ViewChange(ViewChange { view: View(1), checkpoint, prepared }))
        };
        for order in [[0, 1, 2], [2, 1, 0]] {
            let all = [
                vc_at(1, genesis(), vec![prepared(0, 3, batch(3), &[1, 2])]),
                vc_at(2, cp4.clone(), vec![prepared(0, 12, batch(12), &[1, 2])]),
                vc_at(3, genesis(), vec![prepared(0, 13, batch(13), &[1, 2])]),
            ];
            let vcs: Vec<Envelope> = order.iter().map(|i| all[*i].clone()).collect();
            let (cp, o) = e.compute_o(&vcs).unwrap();
            assert_eq!(cp.seq, SeqNo(4), "{order:?}");
            let seqs: Vec<u64> = o.iter().map(|(s, _)| s.0).collect();
            assert_eq!(seqs, (5..=12).collect::<Vec<_>>(), "{order:?}");
            assert_eq!(o.last().unwrap().1, batch(12));
            assert!(o[..7].iter().all(|(_, b)| b.txs.is_empty()), "nulls fill the gap");
        }
    }

    #[test]
    fn two_certificates_of_one_view_for_a_slot_resolve_alike_on_every_replica() {
        // C&L §4.4 takes, for each n, the certificate of the highest view; two of the same
        // view (possible only with more than f faulty replicas) must still give every replica
        // the same O, whatever the order of V: the smaller batch digest wins.
        let e = engine(1);
        let (a, b) = (batch(0xa), batch(0xb));
        let (da, db) = (batch_digest(&TestVerifier, &a), batch_digest(&TestVerifier, &b));
        let smaller = if da < db { a.clone() } else { b.clone() };
        let vca = view_change(1, 1, vec![prepared(0, 1, a, &[1, 2])]);
        let vcb = view_change(2, 1, vec![prepared(0, 1, b, &[1, 2])]);
        let later = view_change(3, 1, vec![prepared(1, 1, batch(0xc), &[2, 3])]);
        for vcs in [vec![vca.clone(), vcb.clone()], vec![vcb, vca.clone()]] {
            let (_, o) = e.compute_o(&vcs).unwrap();
            assert_eq!(o, vec![(SeqNo(1), smaller.clone())]);
        }
        for vcs in [vec![vca.clone(), later.clone()], vec![later, vca]] {
            let (_, o) = e.compute_o(&vcs).unwrap();
            assert_eq!(o, vec![(SeqNo(1), batch(0xc))], "the higher view wins");
        }
    }

    #[test]
    fn the_new_primary_waits_for_n_minus_f_view_changes_before_building() {
        // C&L §4.4: the primary of v + 1 multicasts NEW-VIEW once it has 2f + 1 (N − f) valid
        // view changes for v + 1, its own included — not with two.
        let mut e = engine(1);
        let out = host(&mut e, 1, Input::Timeout(Timer::NullRequest));
        assert!(e.is_changing_view() && new_view_sent(&out).is_none());
        let out = host(&mut e, 1, Input::Message(view_change(2, 1, vec![])));
        assert!(new_view_sent(&out).is_none(), "two of three");
        let out = host(&mut e, 1, Input::Message(view_change(3, 1, vec![])));
        assert!(new_view_sent(&out).is_some(), "three");
        assert_eq!(view_changed(&out), Some((View(1), NodeId(1))));
    }

    #[test]
    fn new_view_must_carry_the_recomputed_o_set() {
        // C&L §4.4: backups recompute O from the view changes and refuse anything else.
        let e = engine(1);
        let vcs = vec![
            view_change(1, 1, vec![prepared(0, 1, batch(0xa), &[1, 2])]),
            view_change(2, 1, vec![]),
            view_change(3, 1, vec![]),
        ];
        let pp = |b| {
            signed(
                1,
                Message::PrePrepare(PrePrepare {
                    view: View(1),
                    seq: SeqNo(1),
                    batch: b,
                    result: None,
                }),
            )
        };
        let good = NewView {
            view: View(1),
            view_changes: vcs.clone(),
            pre_prepares: vec![pp(batch(0xa))],
        };
        assert!(e.verify_new_view(&good).is_ok());
        let swapped = NewView { pre_prepares: vec![pp(batch(0xd))], ..good.clone() };
        assert!(e.verify_new_view(&swapped).is_err());
        let dropped = NewView { pre_prepares: vec![], ..good.clone() };
        assert!(e.verify_new_view(&dropped).is_err());
        let short = NewView { view_changes: vcs[..2].to_vec(), ..good };
        assert!(e.verify_new_view(&short).is_err(), "N - f = 3 view changes are needed");
    }

    #[test]
    fn prepared_proof_below_quorum_or_with_the_primary_as_preparer_is_refused() {
        // Q = 3 at N = 4: the pre-prepare and Q - 1 = 2 prepares from backups.
        let c = config(4);
        assert!(verify_prepared(&c, &TestVerifier, &prepared(0, 1, batch(1), &[1, 2])).is_ok());
        assert!(verify_prepared(&c, &TestVerifier, &prepared(0, 1, batch(1), &[1])).is_err());
        assert!(verify_prepared(&c, &TestVerifier, &prepared(0, 1, batch(1), &[0, 1])).is_err());
        assert!(verify_prepared(&c, &TestVerifier, &prepared(0, 1, batch(1), &[1, 1])).is_err());
    }

    #[test]
    fn lone_suspicion_does_not_climb_views() {
        // C&L §4.5.2: the new-view timer only starts after N - f view changes, so a replica
        // alone in suspecting the primary stays at view 1.
        let mut e = engine(1);
        let out = e.handle(Input::Timeout(Timer::NullRequest));
        assert!(e.is_changing_view() && e.view() == View(1));
        assert!(!out.iter().any(|x| matches!(x, Effect::SetTimer { timer: Timer::NewView, .. })));
        let out = e.handle(Input::Timeout(Timer::NewView));
        assert_eq!(e.view(), View(1), "{out:?}");
    }

    #[test]
    fn view_change_reports_the_prepared_certificate_of_the_highest_view() {
        // C&L §4.4: P holds, for each n, the certificate of the highest view it prepared in.
        // Seq 1 prepared with batch A in view 0 and batch B in view 1, from the WAL.
        let mut records = vec![];
        for (view, b) in [(0u64, batch(0xa)), (1, batch(0xb))] {
            let p = prepared(view, 1, b, &[2, 3]);
            records.push(WalRecord::Accepted(p.pre_prepare.clone()));
            records.extend(p.prepares.into_iter().map(WalRecord::Accepted));
        }
        records.push(WalRecord::View { view: View(2), changing: true });
        let params = Params { checkpoint_interval: 4, window: 8, ..Params::default() };
        let mut e = Engine::new(NodeId(3), config(4), params, TestVerifier).unwrap();
        let out = e.handle(Input::Restore {
            records,
            committed: SeqNo(0),
            state: Digest([7; 32]),
            recent: vec![],
            configs: vec![],
        });
        assert!(e.is_changing_view() && e.view() == View(2));
        let Some(Effect::Sign { token, payload }) =
            out.into_iter().find(|x| matches!(x, Effect::Sign { .. }))
        else {
            panic!("no view change signed");
        };
        let out = e.handle(Input::Signed { token, signature: sign_with(&key(3), &payload) });
        let vc = out.iter().find_map(|x| match x {
            Effect::Broadcast(Envelope { message: Message::ViewChange(vc), .. }) => {
                Some(vc.clone())
            }
            _ => None,
        });
        let vc = vc.expect("view change broadcast");
        assert_eq!(vc.prepared.len(), 1);
        let Message::PrePrepare(pp) = &vc.prepared[0].pre_prepare.message else { unreachable!() };
        assert_eq!((pp.view, &pp.batch), (View(1), &batch(0xb)));
    }

    #[test]
    fn a_view_change_reports_only_slots_prepared_with_a_quorum() {
        // C&L §4.4: P holds prepared certificates — a pre-prepare and 2f matching prepares —
        // and nothing for a slot with fewer. (Replica 3's own prepares are left unsigned here,
        // so only the others' count.)
        let mut e = engine(3);
        for (seq, by) in [(1u64, &[1u32, 2][..]), (2, &[1][..])] {
            let b = batch(seq as u8);
            let _ = e.handle(Input::Message(pre_prepare(0, seq, b.clone(), Some(result_of(seq)))));
            let pd = batch_digest(&TestVerifier, &b);
            for from in by {
                let _ = e.handle(Input::Message(signed(*from, vote_msg(false, seq, pd))));
            }
        }
        let out = e.handle(Input::Timeout(Timer::NullRequest));
        let out = with_signatures(&mut e, 3, out);
        let vc = out.iter().find_map(|x| match x {
            Effect::Broadcast(Envelope { message: Message::ViewChange(vc), .. }) => {
                Some(vc.clone())
            }
            _ => None,
        });
        let vc = vc.expect("a view change");
        let seqs: Vec<SeqNo> = vc
            .prepared
            .iter()
            .filter_map(|p| match &p.pre_prepare.message {
                Message::PrePrepare(pp) => Some(pp.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![SeqNo(1)]);
        assert_eq!(vc.prepared[0].prepares.len(), 2);
    }

    #[test]
    fn messages_from_non_members_are_ignored() {
        // A removed (or never admitted) node that keeps talking: its key is not in the
        // configuration, so even well-formed, self-consistently signed votes do nothing.
        let mut e = engine(1);
        let outsider = |m: Message| {
            let signature = sign_with(&key(9), &signing_payload(0, NodeId(9), &m));
            Envelope { from: NodeId(9), message: m, signature }
        };
        let vote = Vote { view: View(0), seq: SeqNo(1), digest: Digest([1; 32]) };
        for m in [
            Message::Prepare(vote),
            Message::Commit(vote),
            Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: Digest([1; 32]) }),
            Message::Fetch { after: SeqNo(0), view: View(0) },
            Message::ViewChange(ViewChange {
                view: View(1),
                checkpoint: genesis(),
                prepared: vec![],
            }),
        ] {
            assert!(e.handle(Input::Message(outsider(m))).is_empty());
        }
        assert!(!e.is_changing_view());
    }

    #[test]
    fn a_vote_lost_in_a_crash_is_signed_again_unchanged() {
        // pbft.md list item 9: the intent is durable before the signature is asked for; a
        // crash in between must not lose the vote for good, nor change it.
        let pp = pre_prepare(0, 1, batch(1), Some(Digest([9; 32])));
        let vote = Message::Prepare(Vote {
            view: View(0),
            seq: SeqNo(1),
            digest: batch_digest(&TestVerifier, &batch(1)),
        });
        let params = Params { checkpoint_interval: 4, window: 8, ..Params::default() };
        let mut e = Engine::new(NodeId(1), config(4), params, TestVerifier).unwrap();
        let out = e.handle(Input::Restore {
            records: vec![WalRecord::Accepted(pp), WalRecord::Intent(vote.clone())],
            committed: SeqNo(0),
            state: Digest([7; 32]),
            recent: vec![],
            configs: vec![],
        });
        let signed: Vec<_> = out
            .iter()
            .filter_map(|x| match x {
                Effect::Sign { payload, .. } => Some(payload.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(signed, vec![signing_payload(0, NodeId(1), &vote)]);
        assert!(!out.iter().any(|x| matches!(x, Effect::Persist(WalRecord::Intent(_)))));
    }

    #[test]
    fn a_configuration_change_applies_at_the_next_checkpoint_and_changes_the_signed_epoch() {
        // pbft.md "Membership": a configuration transaction applied at a checkpoint. Node 3
        // is removed by a change committed at seq 1; with K = 4 it applies above seq 4.
        let mut e = engine(1);
        let b1 = batch(1);
        let r1 = Digest([1; 32]);
        let _ = e.handle(Input::Message(pre_prepare(0, 1, b1.clone(), Some(r1))));
        let d = batch_digest(&TestVerifier, &b1);
        for i in [2, 3] {
            let v = Vote { view: View(0), seq: SeqNo(1), digest: d };
            let _ = e.handle(Input::Message(signed(i, Message::Prepare(v))));
        }
        // Executed, naming members 0..=2.
        let members: Vec<Member> =
            (0..3).map(|i| Member { id: NodeId(i), public_key: key(i) }).collect();
        let token = e.exec_pending.as_ref().map(|(_, t, _)| *t).expect("asked to execute");
        let _ = e.handle(Input::Executed {
            seq: SeqNo(1),
            token,
            result: r1,
            members: Some(members.clone()),
        });
        assert_eq!(e.fence(), Some(SeqNo(4)));
        // Nothing beyond the fence is accepted meanwhile.
        let out = e.handle(Input::Message(pre_prepare(0, 5, batch(5), Some(r1))));
        assert!(out.iter().all(only_heard), "{out:?}");
        // Seq 1 commits: the change is reported with its epoch and start.
        let block = block_digest(&TestVerifier, SeqNo(1), &d, &r1);
        let mut out = vec![];
        for i in [0, 2, 3] {
            let v = Vote { view: View(0), seq: SeqNo(1), digest: block };
            out.extend(e.handle(Input::Message(signed(i, Message::Commit(v)))));
        }
        let cfg = out.iter().find_map(|x| match x {
            Effect::Reconfigured { config } => Some(config.clone()),
            _ => None,
        });
        let cfg = cfg.expect("reconfigured");
        assert_eq!((cfg.epoch(), cfg.after(), cfg.members()), (1, SeqNo(4), &members[..]));
        // Seqs up to 4 still belong to epoch 0, above it to epoch 1.
        assert_eq!(e.config_for(SeqNo(4)).epoch(), 0);
        assert_eq!(e.config_for(SeqNo(5)).epoch(), 0, "not applied before seq 4 commits");
    }

    /// Hands `id`'s engine its own signature for every `Sign` in `out`, until none is asked;
    /// returns every effect seen.
    fn with_signatures(e: &mut Engine<TestVerifier>, id: u32, mut out: Vec<Effect>) -> Vec<Effect> {
        let mut all = Vec::new();
        while !out.is_empty() {
            let mut next = Vec::new();
            for x in out {
                if let Effect::Sign { token, payload } = &x {
                    let signature = sign_with(&key(id), payload);
                    next.extend(e.handle(Input::Signed { token: *token, signature }));
                }
                all.push(x);
            }
            out = next;
        }
        all
    }

    fn proposal(out: &[Effect]) -> Option<(SeqNo, u64, Batch)> {
        out.iter().find_map(|x| match x {
            Effect::Execute { seq, token, batch } => Some((*seq, *token, batch.clone())),
            _ => None,
        })
    }

    #[test]
    fn a_partial_batch_waits_for_the_block_in_flight_and_a_full_one_does_not() {
        // vpbox's pipeline depth 1: batches grow with the load, not the rounds.
        let params = Params {
            checkpoint_interval: 4,
            window: 8,
            batch_size_max: 3,
            pipeline_depth: 1,
            ..Params::default()
        };
        let mut e = engine_with(0, params);
        let tx = |x: u8| Digest([x; 32]);
        let propose = |e: &mut Engine<TestVerifier>, out: Vec<Effect>, result: Digest| {
            let (seq, token, batch) = proposal(&out).expect("a proposal");
            let out = e.handle(Input::Executed { seq, token, result, members: None });
            let out = with_signatures(e, 0, out);
            assert!(out.iter().any(|x| matches!(x, Effect::Broadcast(env)
                if matches!(env.message, Message::PrePrepare(_)))));
            (seq, batch)
        };
        // Tx 1 waits for the batch timeout, then seq 1 is proposed.
        assert!(proposal(&e.handle(Input::Transaction(tx(1)))).is_none());
        let out = e.handle(Input::Timeout(Timer::Batch));
        let (_, b1) = propose(&mut e, out, Digest([1; 32]));
        // Seq 1 awaits commit: tx 2's partial batch waits, even once its timeout fires.
        let out = e.handle(Input::Transaction(tx(2)));
        assert!(out.iter().any(|x| matches!(x, Effect::SetTimer { timer: Timer::Batch, .. })));
        assert!(proposal(&e.handle(Input::Timeout(Timer::Batch))).is_none());
        assert!(proposal(&e.handle(Input::Transaction(tx(3)))).is_none());
        // Seq 1 commits: the waiting batch, with tx 3, is proposed at once.
        let d = batch_digest(&TestVerifier, &b1);
        let mut out = vec![];
        for i in [1, 2] {
            let v = Vote { view: View(0), seq: SeqNo(1), digest: d };
            out.extend(e.handle(Input::Message(signed(i, Message::Prepare(v)))));
        }
        let _ = with_signatures(&mut e, 0, out);
        let block = block_digest(&TestVerifier, SeqNo(1), &d, &Digest([1; 32]));
        let mut out = vec![];
        for i in [1, 2] {
            let v = Vote { view: View(0), seq: SeqNo(1), digest: block };
            out.extend(e.handle(Input::Message(signed(i, Message::Commit(v)))));
        }
        assert!(out.iter().any(|x| matches!(x, Effect::Commit { seq: SeqNo(1), .. })), "{out:?}");
        let (seq, b2) = propose(&mut e, out, Digest([2; 32]));
        assert_eq!((seq, b2.txs), (SeqNo(2), vec![tx(2), tx(3)]));
        // Seq 2 awaits commit, yet a full batch goes without waiting for it or the timeout.
        assert!(proposal(&e.handle(Input::Transaction(tx(4)))).is_none());
        assert!(proposal(&e.handle(Input::Transaction(tx(5)))).is_none());
        let out = e.handle(Input::Transaction(tx(6)));
        let (seq, b3) = propose(&mut e, out, Digest([3; 32]));
        assert_eq!((seq, b3.txs), (SeqNo(3), vec![tx(4), tx(5), tx(6)]));
    }

    /// Replica `id` of `n`, restored empty.
    fn engine_of(n: u32, id: u32) -> Engine<TestVerifier> {
        let params = Params { checkpoint_interval: 4, window: 8, ..Params::default() };
        engine_in(config(n), id, params)
    }

    /// The Prepare and Commit payloads the engine asked to sign in `out`.
    fn votes_signed(out: &[Effect]) -> Vec<Message> {
        out.iter()
            .filter_map(|x| match x {
                Effect::Sign { payload, .. } => {
                    crate::wire::decode_signing_payload(payload).ok().map(|(_, _, m)| m)
                }
                _ => None,
            })
            .filter(|m| matches!(m, Message::Prepare(_) | Message::Commit(_)))
            .collect()
    }

    fn accepted(out: &[Effect]) -> bool {
        out.iter().any(|x| matches!(x, Effect::Persist(WalRecord::Accepted(_))))
    }

    /// The state after executing the batch at `seq`, as every honest replica computes it.
    fn result_of(seq: u64) -> Digest {
        Digest([seq as u8 + 100; 32])
    }

    /// Plays the host of replica `id`: signs what the engine asks with the replica's key and
    /// executes what it asks (the state after `seq` being `result_of(seq)`), until it asks for
    /// nothing more. Every effect, in order.
    fn host(e: &mut Engine<TestVerifier>, id: u32, input: Input) -> Vec<Effect> {
        let mut all = Vec::new();
        let mut pending = std::collections::VecDeque::from([input]);
        while let Some(i) = pending.pop_front() {
            for x in e.handle(i) {
                match &x {
                    Effect::Sign { token, payload } => pending.push_back(Input::Signed {
                        token: *token,
                        signature: sign_with(&key(id), payload),
                    }),
                    Effect::Execute { seq, token, .. } => pending.push_back(Input::Executed {
                        seq: *seq,
                        token: *token,
                        result: result_of(seq.0),
                        members: None,
                    }),
                    _ => {}
                }
                all.push(x);
            }
        }
        all
    }

    /// The block digest honest replicas commit at `seq` (batch `batch(seq)`).
    fn block_at(seq: u64) -> Digest {
        let bd = batch_digest(&TestVerifier, &batch(seq as u8));
        block_digest(&TestVerifier, SeqNo(seq), &bd, &result_of(seq))
    }

    fn vote_msg(commit: bool, seq: u64, digest: Digest) -> Message {
        let v = Vote { view: View(0), seq: SeqNo(seq), digest };
        if commit { Message::Commit(v) } else { Message::Prepare(v) }
    }

    fn committed_at(out: &[Effect]) -> Option<(SeqNo, CommitCertificate)> {
        out.iter().find_map(|x| match x {
            Effect::Commit { seq, certificate, .. } => Some((*seq, certificate.clone())),
            _ => None,
        })
    }

    /// Replica 1 of 4 commits `seq` of view 0 with the votes of replicas 0, 2 and 3.
    fn commit_slot(e: &mut Engine<TestVerifier>, seq: u64) -> Vec<Effect> {
        let pp = pre_prepare(0, seq, batch(seq as u8), Some(result_of(seq)));
        let mut out = host(e, 1, Input::Message(pp));
        let pd = batch_digest(&TestVerifier, &batch(seq as u8));
        out.extend(host(e, 1, Input::Message(signed(2, vote_msg(false, seq, pd)))));
        for from in [0, 2] {
            out.extend(host(
                e,
                1,
                Input::Message(signed(from, vote_msg(true, seq, block_at(seq)))),
            ));
        }
        out
    }

    #[test]
    fn a_slot_prepares_with_a_quorum_and_commits_with_a_quorum_certificate() {
        // C&L §4.2–4.3 with n = 4 (Q = 3): prepared(m, v, n) is the pre-prepare and 2f
        // matching prepares — the backup's own counting — and only then does it send its
        // commit, over the block digest (RBFT: the batch and the result it executed);
        // committed-local needs Q matching commits, which become the block's certificate.
        let mut e = engine(1);
        let pd = batch_digest(&TestVerifier, &batch(1));
        let out = host(&mut e, 1, Input::Message(pre_prepare(0, 1, batch(1), Some(result_of(1)))));
        assert_eq!(votes_signed(&out), vec![vote_msg(false, 1, pd)], "its prepare only");
        let other = host(&mut e, 1, Input::Message(signed(3, vote_msg(false, 1, Digest([5; 32])))));
        assert!(votes_signed(&other).is_empty(), "a prepare of another digest does not count");
        let out = host(&mut e, 1, Input::Message(signed(2, vote_msg(false, 1, pd))));
        assert_eq!(votes_signed(&out), vec![vote_msg(true, 1, block_at(1))], "prepared: commit");
        let out = host(&mut e, 1, Input::Message(signed(2, vote_msg(true, 1, block_at(1)))));
        assert_eq!(committed_at(&out), None, "two commits of three");
        let wrong = signed(3, vote_msg(true, 1, Digest([6; 32])));
        assert_eq!(committed_at(&host(&mut e, 1, Input::Message(wrong))), None);
        let out = host(&mut e, 1, Input::Message(signed(0, vote_msg(true, 1, block_at(1)))));
        let (seq, cert) = committed_at(&out).expect("committed with three");
        assert_eq!(
            (seq, cert.view, cert.seq, cert.block),
            (SeqNo(1), View(0), SeqNo(1), block_at(1))
        );
        let signers: Vec<u32> = cert.signatures.iter().map(|(id, _)| id.0).collect();
        assert_eq!(signers, vec![0, 1, 2]);
        assert_eq!(e.committed(), SeqNo(1));
    }

    #[test]
    fn a_slot_commits_while_execution_runs_ahead_of_it() {
        // RBFT's speculative execution: a backup executes prepared batches in order before
        // they commit, so seq 2 may be executed when seq 1's commits arrive; seq 1 commits
        // then, and seq 2 when its own do.
        let mut e = engine(1);
        for seq in 1..=2 {
            let pp = pre_prepare(0, seq, batch(seq as u8), Some(result_of(seq)));
            let _ = host(&mut e, 1, Input::Message(pp));
            let pd = batch_digest(&TestVerifier, &batch(seq as u8));
            let out = host(&mut e, 1, Input::Message(signed(2, vote_msg(false, seq, pd))));
            assert_eq!(votes_signed(&out), vec![vote_msg(true, seq, block_at(seq))], "seq {seq}");
        }
        let mut out = Vec::new();
        for from in [0, 2] {
            out.extend(host(
                &mut e,
                1,
                Input::Message(signed(from, vote_msg(true, 1, block_at(1)))),
            ));
        }
        assert_eq!(committed_at(&out).map(|c| c.0), Some(SeqNo(1)));
        let mut out = Vec::new();
        for from in [0, 2] {
            out.extend(host(
                &mut e,
                1,
                Input::Message(signed(from, vote_msg(true, 2, block_at(2)))),
            ));
        }
        assert_eq!(committed_at(&out).map(|c| c.0), Some(SeqNo(2)));
    }

    #[test]
    fn the_primary_commits_only_after_2f_prepares_like_every_replica() {
        // C&L §4.2: the primary's pre-prepare stands for its prepare, and like the backups it
        // sends its commit only once prepared — the pre-prepare and 2f prepares from backups —
        // even though it executed the batch before proposing it.
        let mut e = engine(0);
        let _ = host(&mut e, 0, Input::Transaction(Digest([1; 32])));
        let out = host(&mut e, 0, Input::Timeout(Timer::Batch));
        let pp = out.iter().find_map(|x| match x {
            Effect::Broadcast(Envelope { message: Message::PrePrepare(pp), .. }) => {
                Some(pp.clone())
            }
            _ => None,
        });
        let pp = pp.expect("proposed");
        assert!(votes_signed(&out).is_empty(), "no commit with the pre-prepare alone: {out:?}");
        let d = batch_digest(&TestVerifier, &pp.batch);
        let result = pp.result.unwrap();
        let out = host(&mut e, 0, Input::Message(signed(1, vote_msg(false, 1, d))));
        assert!(votes_signed(&out).is_empty(), "one prepare of two");
        let out = host(&mut e, 0, Input::Message(signed(2, vote_msg(false, 1, d))));
        let block = block_digest(&TestVerifier, SeqNo(1), &d, &result);
        assert_eq!(votes_signed(&out), vec![vote_msg(true, 1, block)]);
    }

    #[test]
    fn checkpoints_beyond_the_window_are_not_taken_and_at_its_edge_are() {
        // C&L §4.3: the window (h, h + L] bounds what a replica accepts; Q checkpoints at
        // h + L (8) make it fetch that state when its fetch timer fires, while those at 12,
        // beyond the window, are ignored.
        let fetched = |seq: u64| {
            let mut e = engine(1);
            let state = Digest([0x42; 32]);
            for from in [0, 2, 3] {
                let c = Message::Checkpoint(Checkpoint { seq: SeqNo(seq), state });
                let _ = host(&mut e, 1, Input::Message(signed(from, c)));
            }
            let out = host(&mut e, 1, Input::Timeout(Timer::Fetch));
            out.iter().any(|x| matches!(x, Effect::FetchState { seq: s, .. } if s.0 == seq))
        };
        assert!(fetched(8));
        assert!(!fetched(12));
    }

    #[test]
    fn a_checkpoint_becomes_stable_with_a_quorum_of_matching_states_at_the_interval() {
        // C&L §4.3: a replica multicasts a checkpoint every K sequence numbers; with Q
        // checkpoint messages of one state it is stable and the low watermark moves to it.
        // Checkpoints off the interval, at or below the low watermark, or of another state
        // never count.
        let mut e = engine(1);
        let mut own = Vec::new();
        for seq in 1..=4 {
            let out = commit_slot(&mut e, seq);
            assert_eq!(committed_at(&out).map(|c| c.0), Some(SeqNo(seq)), "seq {seq}");
            own.extend(out.iter().filter_map(|x| match x {
                Effect::Broadcast(env) if matches!(env.message, Message::Checkpoint(_)) => {
                    Some((seq, env.message.clone()))
                }
                _ => None,
            }));
        }
        let ck = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: result_of(4) });
        assert_eq!(own, vec![(4, ck.clone())], "its own checkpoint at K = 4, not before");
        let stable =
            |out: &[Effect]| out.iter().any(|x| matches!(x, Effect::Persist(WalRecord::Stable(_))));
        // Off the interval: three matching checkpoints of seq 2 make nothing stable.
        for from in [0, 2, 3] {
            let c2 = Message::Checkpoint(Checkpoint { seq: SeqNo(2), state: result_of(2) });
            assert!(!stable(&host(&mut e, 1, Input::Message(signed(from, c2)))));
        }
        assert_eq!(e.low_watermark(), SeqNo(0));
        let other = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: Digest([1; 32]) });
        assert!(!stable(&host(&mut e, 1, Input::Message(signed(3, other)))));
        assert!(!stable(&host(&mut e, 1, Input::Message(signed(2, ck.clone())))));
        assert_eq!(e.low_watermark(), SeqNo(0), "two matching of three");
        let out = host(&mut e, 1, Input::Message(signed(0, ck.clone())));
        let proof = out.iter().find_map(|x| match x {
            Effect::Persist(WalRecord::Stable(p)) => Some(p.clone()),
            _ => None,
        });
        let proof = proof.expect("stable with three");
        assert_eq!((proof.seq, proof.state), (SeqNo(4), result_of(4)));
        let mut from: Vec<u32> = proof.signed.iter().map(|x| x.from.0).collect();
        from.sort_unstable();
        assert_eq!(from, vec![0, 1, 2]);
        assert_eq!(e.low_watermark(), SeqNo(4));
        // At or below the low watermark: nothing more happens.
        assert!(host(&mut e, 1, Input::Message(signed(3, ck))).iter().all(only_heard));
    }

    fn checkpoint_proof(seq: u64, state: Digest, by: &[u32]) -> CheckpointProof {
        let signed = by
            .iter()
            .map(|i| signed(*i, Message::Checkpoint(Checkpoint { seq: SeqNo(seq), state })))
            .collect();
        CheckpointProof { seq: SeqNo(seq), state, signed }
    }

    #[test]
    fn a_checkpoint_proof_is_a_quorum_of_distinct_members_signing_one_state() {
        // C&L §4.3–4.4: the proof of a stable checkpoint is 2f + 1 (Q) checkpoint messages
        // from distinct replicas for the same sequence number and state; the genesis
        // checkpoint (seq 0) is the configuration's genesis state, unsigned; checkpoints are
        // taken every K (here 4) sequence numbers only.
        let e = engine(1);
        let s = Digest([3; 32]);
        assert_eq!(e.verify_checkpoint_proof(&genesis()), Ok(()));
        assert_eq!(e.verify_checkpoint_proof(&checkpoint_proof(4, s, &[0, 1, 2])), Ok(()));
        assert_eq!(e.verify_checkpoint_proof(&checkpoint_proof(8, s, &[1, 2, 3, 0])), Ok(()));
        let bad_genesis_state = CheckpointProof { state: Digest([8; 32]), ..genesis() };
        let signed_genesis = checkpoint_proof(0, Digest([7; 32]), &[0, 1, 2]);
        let mut mixed_seq = checkpoint_proof(4, s, &[0, 1, 2]);
        mixed_seq.signed[2] =
            signed(2, Message::Checkpoint(Checkpoint { seq: SeqNo(8), state: s }));
        let mut mixed_state = checkpoint_proof(4, s, &[0, 1, 2]);
        mixed_state.signed[1] =
            signed(1, Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: Digest([4; 32]) }));
        let mut not_checkpoint = checkpoint_proof(4, s, &[0, 1, 2]);
        not_checkpoint.signed[0] = signed(0, vote_msg(false, 4, s));
        let mut forged = checkpoint_proof(4, s, &[0, 1, 2]);
        forged.signed[1].signature.0[0] ^= 1;
        let outsider = {
            let m = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: s });
            let signature = sign_with(&key(9), &signing_payload(0, NodeId(9), &m));
            let mut p = checkpoint_proof(4, s, &[0, 1]);
            p.signed.push(Envelope { from: NodeId(9), message: m, signature });
            p
        };
        for (what, proof) in [
            ("genesis with another state", bad_genesis_state),
            ("genesis with signatures", signed_genesis),
            ("off the interval", checkpoint_proof(6, s, &[0, 1, 2])),
            ("below the quorum", checkpoint_proof(4, s, &[0, 1])),
            ("a signer twice", checkpoint_proof(4, s, &[0, 1, 1])),
            ("another sequence number inside", mixed_seq),
            ("another state inside", mixed_state),
            ("a vote inside", not_checkpoint),
            ("a forged signature", forged),
            ("a non-member", outsider),
        ] {
            assert!(e.verify_checkpoint_proof(&proof).is_err(), "{what}");
        }
    }

    #[test]
    fn a_commit_certificate_is_a_quorum_of_distinct_members_signing_the_commit() {
        // C&L §4.2 (the commit phase) and `verify_certificate`'s contract: Q commit signatures
        // of distinct members over the commit vote
        // for the block digest, which binds the sequence number, the batch and the result.
        let c = config(4);
        let cert = |by: &[u32], block: Digest| {
            let m = vote_msg(true, 1, block);
            let signatures = by
                .iter()
                .map(|i| (NodeId(*i), sign_with(&key(*i), &signing_payload(0, NodeId(*i), &m))))
                .collect();
            CommitCertificate { view: View(0), seq: SeqNo(1), block, signatures }
        };
        assert_eq!(verify_certificate(&c, &TestVerifier, &cert(&[0, 1, 2], block_at(1))), Ok(()));
        assert!(verify_certificate(&c, &TestVerifier, &cert(&[0, 1], block_at(1))).is_err());
        assert!(verify_certificate(&c, &TestVerifier, &cert(&[0, 1, 1], block_at(1))).is_err());
        assert_eq!(
            verify_certificate(&c, &TestVerifier, &cert(&[0, 1, 9], block_at(1))),
            Err(Error::NotMember(NodeId(9)))
        );
        let mut forged = cert(&[0, 1, 2], block_at(1));
        forged.signatures[2].1.0[0] ^= 1;
        assert_eq!(
            verify_certificate(&c, &TestVerifier, &forged),
            Err(Error::Signature(NodeId(2)))
        );
        // The engine also checks that the certificate is for the entry's block.
        let e = engine(1);
        let entry = |batch_n: u8, result: Digest| CommittedEntry {
            batch: batch(batch_n),
            result,
            certificate: cert(&[0, 1, 2], block_at(1)),
        };
        assert_eq!(e.verify_certificate(&entry(1, result_of(1))), Ok(()));
        assert!(e.verify_certificate(&entry(2, result_of(1))).is_err(), "another batch");
        assert!(e.verify_certificate(&entry(1, result_of(2))).is_err(), "another result");
    }

    #[test]
    fn a_prepared_proof_needs_the_primarys_pre_prepare_and_matching_backup_prepares() {
        // C&L §4.4: a prepared certificate is the pre-prepare signed by the view's primary
        // and 2f prepares from distinct backups for the same view, sequence number and digest.
        let c = config(4);
        let good = prepared(0, 1, batch(1), &[1, 2]);
        assert_eq!(verify_prepared(&c, &TestVerifier, &good), Ok(()));
        assert_eq!(
            verify_prepared(&c, &TestVerifier, &prepared(0, 1, batch(1), &[1, 2, 3])),
            Ok(())
        );
        let d = batch_digest(&TestVerifier, &batch(1));
        let with = |i: usize, m: Message| {
            let mut p = good.clone();
            let from = p.prepares[i].from.0;
            p.prepares[i] = signed(from, m);
            p
        };
        let mut not_primary = good.clone();
        not_primary.pre_prepare = signed(
            2,
            Message::PrePrepare(PrePrepare {
                view: View(0),
                seq: SeqNo(1),
                batch: batch(1),
                result: Some(Digest([1; 32])),
            }),
        );
        let mut forged_pp = good.clone();
        forged_pp.pre_prepare.signature.0[0] ^= 1;
        let mut forged = good.clone();
        forged.prepares[0].signature.0[0] ^= 1;
        let mut not_pp = good.clone();
        not_pp.pre_prepare = signed(0, vote_msg(false, 1, d));
        for (what, p) in [
            (
                "another view's prepare",
                with(0, Message::Prepare(Vote { view: View(1), seq: SeqNo(1), digest: d })),
            ),
            ("another seq's prepare", with(0, vote_msg(false, 2, d))),
            ("another digest's prepare", with(1, vote_msg(false, 1, Digest([2; 32])))),
            ("a commit for a prepare", with(1, vote_msg(true, 1, d))),
            ("a pre-prepare not from the primary", not_primary),
            ("a forged pre-prepare", forged_pp),
            ("a forged prepare", forged),
            ("no pre-prepare", not_pp),
        ] {
            assert!(verify_prepared(&c, &TestVerifier, &p).is_err(), "{what}");
        }
    }

    #[test]
    fn a_view_change_carries_a_valid_checkpoint_and_ordered_lower_view_certificates() {
        // C&L §4.4: VIEW-CHANGE(v + 1, n, C, P): C proves the stable checkpoint n; P holds one
        // prepared certificate per sequence number above n (here in increasing order, at most
        // a window above n), each from a view below v + 1.
        let e = engine(1);
        let vc = |view, checkpoint, prepared| ViewChange { view: View(view), checkpoint, prepared };
        let p = |view: u64, seq| {
            let backups = [(view as u32 + 1) % 4, (view as u32 + 2) % 4];
            prepared(view, seq, batch(seq as u8), &backups)
        };
        let cp4 = checkpoint_proof(4, Digest([3; 32]), &[0, 1, 2]);
        assert_eq!(e.verify_view_change(&vc(2, genesis(), vec![p(0, 1), p(1, 3)])), Ok(()));
        assert_eq!(e.verify_view_change(&vc(1, cp4.clone(), vec![p(0, 5), p(0, 12)])), Ok(()));
        let mut no_pp = p(0, 2);
        no_pp.pre_prepare = signed(0, vote_msg(false, 2, Digest([0; 32])));
        for (what, v) in [
            (
                "a bad checkpoint proof",
                vc(1, checkpoint_proof(4, Digest([3; 32]), &[0, 1]), vec![]),
            ),
            ("a certificate at the checkpoint", vc(1, cp4.clone(), vec![p(0, 4)])),
            ("a certificate beyond the window", vc(1, cp4, vec![p(0, 13)])),
            ("out of order", vc(2, genesis(), vec![p(0, 3), p(1, 1)])),
            ("a sequence number twice", vc(2, genesis(), vec![p(0, 1), p(1, 1)])),
            ("prepared in the new view", vc(1, genesis(), vec![p(1, 1)])),
            ("prepared above the new view", vc(1, genesis(), vec![p(2, 1)])),
            ("an invalid certificate", vc(1, genesis(), vec![prepared(0, 1, batch(1), &[1])])),
            ("no pre-prepare", vc(1, genesis(), vec![no_pp])),
        ] {
            assert!(e.verify_view_change(&v).is_err(), "{what}");
        }
    }

    fn view_changed(out: &[Effect]) -> Option<(View, NodeId)> {
        out.iter().find_map(|x| match x {
            Effect::ViewChanged { view, primary } => Some((*view, *primary)),
            _ => None,
        })
    }

    fn new_view_sent(out: &[Effect]) -> Option<NewView> {
        out.iter().find_map(|x| match x {
            Effect::Broadcast(Envelope { message: Message::NewView(nv), .. }) => Some(nv.clone()),
            _ => None,
        })
    }

    #[test]
    fn the_new_primary_builds_the_new_view_from_n_minus_f_view_changes() {
        // C&L §4.4–4.5.2: replica 1, primary of view 1, joins after f + 1 = 2 view changes,
        // and with N − f = 3 of them (its own included) multicasts NEW-VIEW(1, V, O) and
        // enters the view; with one prepared certificate, O re-proposes its batch unexecuted.
        let mut e = engine(1);
        let p = prepared(0, 1, batch(0xa), &[1, 2]);
        let out = host(&mut e, 1, Input::Message(view_change(2, 1, vec![p])));
        assert!(!e.is_changing_view() && new_view_sent(&out).is_none());
        let out = host(&mut e, 1, Input::Message(view_change(3, 1, vec![])));
        let nv = new_view_sent(&out).expect("new view multicast");
        assert_eq!(nv.view, View(1));
        let mut senders: Vec<u32> = nv.view_changes.iter().map(|x| x.from.0).collect();
        senders.sort_unstable();
        assert_eq!(senders, vec![1, 2, 3]);
        let pps: Vec<_> = nv.pre_prepares.iter().map(|x| (x.from, x.message.clone())).collect();
        let want = PrePrepare { view: View(1), seq: SeqNo(1), batch: batch(0xa), result: None };
        assert_eq!(pps, vec![(NodeId(1), Message::PrePrepare(want))]);
        assert_eq!(view_changed(&out), Some((View(1), NodeId(1))));
        assert!(!e.is_changing_view() && e.view() == View(1));
        // A backup checks it and enters the view too.
        let mut b = engine(2);
        let _ = host(&mut b, 2, Input::Message(view_change(1, 1, vec![])));
        let _ = host(&mut b, 2, Input::Message(view_change(3, 1, vec![])));
        assert!(b.is_changing_view());
        let env = out
            .iter()
            .find_map(|x| match x {
                Effect::Broadcast(env) if matches!(env.message, Message::NewView(_)) => {
                    Some(env.clone())
                }
                _ => None,
            })
            .unwrap();
        let got = host(&mut b, 2, Input::Message(env));
        assert_eq!(view_changed(&got), Some((View(1), NodeId(1))));
        assert!(!b.is_changing_view() && b.view() == View(1));
        // It prepares the re-proposed batch in the new view.
        let d = batch_digest(&TestVerifier, &batch(0xa));
        let prepare = Message::Prepare(Vote { view: View(1), seq: SeqNo(1), digest: d });
        assert_eq!(votes_signed(&got), vec![prepare]);
    }

    #[test]
    fn entering_a_view_adopts_its_checkpoint_and_keeps_view_changes_for_later_views() {
        // C&L §4.4: a backup whose log is behind the new view's checkpoint fetches that state.
        let mut e = engine(2);
        let cp4 = checkpoint_proof(4, Digest([3; 32]), &[0, 1, 3]);
        let vc4 = signed(
            3,
            Message::ViewChange(ViewChange { view: View(1), checkpoint: cp4, prepared: vec![] }),
        );
        let _ = host(&mut e, 2, Input::Message(view_change(1, 1, vec![])));
        let _ = host(&mut e, 2, Input::Message(vc4.clone()));
        let vcs = vec![view_change(1, 1, vec![]), vc4, view_change(0, 1, vec![])];
        let nv = NewView { view: View(1), view_changes: vcs, pre_prepares: vec![] };
        let out = host(&mut e, 2, Input::Message(signed(1, Message::NewView(nv))));
        assert_eq!(view_changed(&out), Some((View(1), NodeId(1))));
        assert!(
            out.iter().any(|x| matches!(x, Effect::FetchState { seq, .. } if *seq == SeqNo(4))),
            "{out:?}"
        );
        // View changes received for a later view still count once it is in view 1: with one
        // more, f + 1 want view 2 and it joins.
        let mut e = engine(2);
        let _ = host(&mut e, 2, Input::Message(view_change(1, 1, vec![])));
        let _ = host(&mut e, 2, Input::Message(view_change(3, 1, vec![])));
        let _ = host(&mut e, 2, Input::Message(view_change(0, 2, vec![])));
        let vcs =
            vec![view_change(1, 1, vec![]), view_change(3, 1, vec![]), view_change(2, 1, vec![])];
        let nv = NewView { view: View(1), view_changes: vcs, pre_prepares: vec![] };
        let out = host(&mut e, 2, Input::Message(signed(1, Message::NewView(nv))));
        assert_eq!(view_changed(&out), Some((View(1), NodeId(1))));
        // (Replica 2 is view 2's primary: with its own, three view changes, and it enters it.)
        let out = host(&mut e, 2, Input::Message(view_change(3, 2, vec![])));
        assert_eq!(view_changed(&out), Some((View(2), NodeId(2))));
    }

    #[test]
    fn the_new_view_timer_starts_with_n_minus_f_view_changes_including_ones_own() {
        // C&L §4.5.2: a replica starts its timer only after it has 2f + 1 (N − f) view changes
        // for the view, its own among them.
        let mut e = engine(2);
        let armed = |out: &[Effect]| {
            out.iter().any(|x| matches!(x, Effect::SetTimer { timer: Timer::NewView, .. }))
        };
        assert!(!armed(&host(&mut e, 2, Input::Timeout(Timer::NullRequest))));
        assert!(e.is_changing_view() && e.view() == View(1));
        assert!(!armed(&host(&mut e, 2, Input::Message(view_change(3, 1, vec![])))), "two");
        assert!(armed(&host(&mut e, 2, Input::Message(view_change(0, 1, vec![])))), "three");
        // Once armed it runs out: a late fourth view change does not restart it.
        assert!(!armed(&host(&mut e, 2, Input::Message(view_change(1, 1, vec![])))), "four");
        // Joining with f + 1 others: the timer waits for its own view change to be signed.
        let mut f = engine(2);
        let _ = host(&mut f, 2, Input::Message(view_change(3, 1, vec![])));
        let out = f.handle(Input::Message(view_change(0, 1, vec![])));
        assert!(f.is_changing_view(), "joined with f + 1");
        assert!(!armed(&out), "its own view change is not signed yet");
        let Some(Effect::Sign { token, payload }) =
            out.into_iter().find(|x| matches!(x, Effect::Sign { .. }))
        else {
            panic!("no view change to sign");
        };
        let signature = sign_with(&key(2), &payload);
        assert!(armed(&host(&mut f, 2, Input::Signed { token, signature })), "now three");
    }

    #[test]
    fn each_failed_view_change_doubles_the_new_view_timeout() {
        // C&L §4.5.2: "If the timer of replica i expires before it receives a valid new-view
        // message for v + 1 ... it starts the view change for v + 2 but this time it will wait
        // 2T before starting a view change for v + 3."
        // Replica 3, a backup in views 1 and 2.
        let mut e = engine(3);
        let t = Params::default().new_view_timeout_ms;
        let timer = |out: &[Effect]| {
            out.iter().find_map(|x| match x {
                Effect::SetTimer { timer: Timer::NewView, after_ms } => Some(*after_ms),
                _ => None,
            })
        };
        let _ = host(&mut e, 3, Input::Timeout(Timer::NullRequest));
        let _ = host(&mut e, 3, Input::Message(view_change(0, 1, vec![])));
        assert_eq!(timer(&host(&mut e, 3, Input::Message(view_change(2, 1, vec![])))), Some(t));
        let _ = host(&mut e, 3, Input::Timeout(Timer::NewView));
        assert_eq!(e.view(), View(2));
        let _ = host(&mut e, 3, Input::Message(view_change(0, 2, vec![])));
        let out = host(&mut e, 3, Input::Message(view_change(1, 2, vec![])));
        assert_eq!(timer(&out), Some(2 * t));
    }

    #[test]
    fn suspicion_timers_double_with_each_fruitless_view_change_and_relax_with_progress() {
        // C&L §4.5.2 doubles the wait after each view change that brings no progress. A new
        // view rolls speculative execution back and runs its O set again, so under a deep
        // backlog its first request may take longer than the base timeout; a fixed timeout
        // would start the next view change before that request commits, forever.
        // Replica 3 is a backup in views 0, 1 and 2.
        let (t, tn) =
            (Params::default().request_timeout_ms, Params::default().null_request_timeout_ms);
        let timer = |out: &[Effect], which: Timer| {
            out.iter().rev().find_map(|x| match x {
                Effect::SetTimer { timer, after_ms } if *timer == which => Some(*after_ms),
                _ => None,
            })
        };
        let mut e = engine(3);
        // The request of batch 1 is watched first, then batch 5's, then one never proposed.
        let mut out = Vec::new();
        for tx in [batch(1).txs[0], batch(5).txs[0], Digest([0xaa; 32])] {
            out.extend(host(&mut e, 3, Input::Transaction(tx)));
        }
        assert_eq!(timer(&out, Timer::Request), Some(t));
        for (view, factor) in [(1u64, 2), (2, 4)] {
            let _ = host(&mut e, 3, Input::Timeout(Timer::Request));
            let primary = view as u32;
            let others: Vec<u32> = (0..4).filter(|i| *i != 3 && *i != primary).collect();
            let vcs: Vec<Envelope> =
                [primary, others[0], 3].iter().map(|i| view_change(*i, view, vec![])).collect();
            let nv = NewView { view: View(view), view_changes: vcs, pre_prepares: vec![] };
            let out = host(&mut e, 3, Input::Message(signed(primary, Message::NewView(nv))));
            assert_eq!(view_changed(&out), Some((View(view), NodeId(primary))));
            assert_eq!(timer(&out, Timer::Request), Some(factor * t), "view {view}");
            assert_eq!(timer(&out, Timer::NullRequest), Some(factor * tn), "view {view}");
        }
        // View 2 commits blocks 1 to 5 (primary 2; replicas 0 and 1 vote).
        fn commit(e: &mut Engine<TestVerifier>, seq: u64) -> Vec<Effect> {
            let b = batch(seq as u8);
            let pp = signed(
                2,
                Message::PrePrepare(PrePrepare {
                    view: View(2),
                    seq: SeqNo(seq),
                    batch: b.clone(),
                    result: Some(result_of(seq)),
                }),
            );
            let mut out = host(e, 3, Input::Message(pp));
            let pd = batch_digest(&TestVerifier, &b);
            let vote = |digest| Vote { view: View(2), seq: SeqNo(seq), digest };
            out.extend(host(e, 3, Input::Message(signed(0, Message::Prepare(vote(pd))))));
            for from in [0, 1] {
                let c = signed(from, Message::Commit(vote(block_at(seq))));
                out.extend(host(e, 3, Input::Message(c)));
            }
            assert_eq!(committed_at(&out).map(|c| c.0), Some(SeqNo(seq)));
            out
        }
        // Progress alone, before a checkpoint is stable, does not relax the timers.
        assert_eq!(timer(&commit(&mut e, 1), Timer::Request), Some(4 * t), "batch 1's done");
        for seq in 2..=4 {
            let _ = commit(&mut e, seq);
        }
        for from in [0, 1] {
            let cp = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: result_of(4) });
            let _ = host(&mut e, 3, Input::Message(signed(from, cp)));
        }
        assert_eq!(e.low, SeqNo(4), "checkpoint 4 is stable");
        let out = commit(&mut e, 5);
        assert_eq!(timer(&out, Timer::Request), Some(2 * t), "one stable checkpoint: halved");
        // The count stops where the timers stop growing (16×), so that a long run of view
        // changes is not remembered for as many checkpoints.
        e.stalled_views = BACKOFF_SHIFT_MAX;
        let _ = host(&mut e, 3, Input::Timeout(Timer::Request));
        assert!(e.is_changing_view());
        assert_eq!(e.stalled_views, BACKOFF_SHIFT_MAX);
    }

    #[test]
    fn votes_of_a_new_view_that_arrive_before_it_are_replayed_on_entering_it() {
        // C&L §4.4: a replica enters view v + 1 on its new-view message; links reorder, so the
        // new primary's pre-prepare and the others' votes may come first. Replica 3 keeps
        // them (signed, in the window, of the view it is changing into) and uses them once
        // it enters the view: it commits block 1 with nothing sent again.
        let mut e = engine(3);
        let _ = host(&mut e, 3, Input::Timeout(Timer::NullRequest));
        assert!(e.is_changing_view());
        let b = batch(1);
        let pd = batch_digest(&TestVerifier, &b);
        let vote = |digest| Vote { view: View(1), seq: SeqNo(1), digest };
        let pp = PrePrepare { view: View(1), seq: SeqNo(1), batch: b, result: Some(result_of(1)) };
        let early = [
            signed(1, Message::PrePrepare(pp)),
            signed(2, Message::Prepare(vote(pd))),
            signed(1, Message::Commit(vote(block_at(1)))),
            signed(2, Message::Commit(vote(block_at(1)))),
            // Of another view, beyond the window (L = 8), a prepare from the primary or a
            // pre-prepare from a backup: not kept.
            signed(2, Message::Prepare(Vote { view: View(2), ..vote(pd) })),
            signed(2, Message::Prepare(Vote { seq: SeqNo(9), ..vote(pd) })),
            signed(1, Message::Prepare(Vote { seq: SeqNo(2), ..vote(pd) })),
            signed(
                2,
                Message::PrePrepare(PrePrepare {
                    view: View(1),
                    seq: SeqNo(2),
                    batch: batch(2),
                    result: Some(result_of(2)),
                }),
            ),
        ];
        for env in early {
            let out = host(&mut e, 3, Input::Message(env));
            assert!(votes_signed(&out).is_empty(), "nothing happens before the new view");
        }
        assert_eq!(e.early.len(), 4);
        let vcs: Vec<Envelope> = [1, 2, 3].iter().map(|i| view_change(*i, 1, vec![])).collect();
        let nv = NewView { view: View(1), view_changes: vcs, pre_prepares: vec![] };
        let out = host(&mut e, 3, Input::Message(signed(1, Message::NewView(nv))));
        assert_eq!(view_changed(&out), Some((View(1), NodeId(1))));
        assert_eq!(
            votes_signed(&out),
            vec![Message::Prepare(vote(pd)), Message::Commit(vote(block_at(1)))]
        );
        assert_eq!(committed_at(&out).map(|c| c.0), Some(SeqNo(1)));
        assert!(e.early.is_empty());
        // What was kept for a view that never came is dropped when a later one is sought.
        let mut e = engine(3);
        let _ = host(&mut e, 3, Input::Timeout(Timer::NullRequest));
        let _ = host(&mut e, 3, Input::Message(signed(2, Message::Prepare(vote(pd)))));
        assert_eq!(e.early.len(), 1);
        let _ = host(&mut e, 3, Input::Timeout(Timer::NewView));
        let _ = host(&mut e, 3, Input::Message(view_change(0, 1, vec![])));
        let _ = host(&mut e, 3, Input::Message(view_change(1, 1, vec![])));
        let _ = host(&mut e, 3, Input::Timeout(Timer::NewView));
        assert_eq!(e.view(), View(2));
        assert!(e.early.is_empty());
        // And what falls below the window while the view change waits (replica 1 committed
        // blocks 1 to 4 in view 0; checkpoint 4 becomes stable after it left the view).
        let mut e = engine(1);
        for seq in 1..=4 {
            let _ = commit_slot(&mut e, seq);
        }
        let _ = host(&mut e, 1, Input::Timeout(Timer::NullRequest));
        assert!(e.is_changing_view());
        for seq in [2, 6] {
            let v = Vote { view: View(1), seq: SeqNo(seq), digest: pd };
            let _ = host(&mut e, 1, Input::Message(signed(2, Message::Prepare(v))));
        }
        assert_eq!(e.early.len(), 2);
        for from in [0, 2] {
            let cp = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: result_of(4) });
            let _ = host(&mut e, 1, Input::Message(signed(from, cp)));
        }
        assert_eq!(e.low, SeqNo(4));
        assert_eq!(e.early.keys().map(|k| k.0).collect::<Vec<_>>(), vec![SeqNo(6)]);
    }

    #[test]
    fn a_new_view_is_taken_only_from_the_views_primary_with_valid_view_changes() {
        // C&L §4.4: a backup accepts NEW-VIEW for v + 1 if it is signed by the primary of
        // v + 1, its view changes are valid and for v + 1, from N − f distinct replicas, and
        // its O is the one the backup computes.
        let e = engine(2);
        let vcs =
            vec![view_change(1, 1, vec![]), view_change(2, 1, vec![]), view_change(3, 1, vec![])];
        let nv = |view_changes: Vec<Envelope>, pre_prepares| NewView {
            view: View(1),
            view_changes,
            pre_prepares,
        };
        assert!(e.verify_new_view(&nv(vcs.clone(), vec![])).is_ok());
        let mut forged = vcs.clone();
        forged[1].signature.0[0] ^= 1;
        let mut twice = vcs.clone();
        twice[2] = view_change(1, 1, vec![]);
        let mut other_view = vcs.clone();
        other_view[0] = view_change(1, 2, vec![]);
        let mut not_vc = vcs.clone();
        not_vc[0] = signed(1, Message::Heartbeat { view: View(1) });
        let mut bad_vc = vcs.clone();
        bad_vc[0] = view_change(1, 1, vec![prepared(0, 1, batch(1), &[1])]);
        let stray_pp = |from: u32, view: u64, seq: u64, result| {
            signed(
                from,
                Message::PrePrepare(PrePrepare {
                    view: View(view),
                    seq: SeqNo(seq),
                    batch: Batch::default(),
                    result,
                }),
            )
        };
        for (what, bad) in [
            ("a forged view change", nv(forged, vec![])),
            ("a sender twice", nv(twice, vec![])),
            ("a view change for another view", nv(other_view, vec![])),
            ("not a view change", nv(not_vc, vec![])),
            ("an invalid view change", nv(bad_vc, vec![])),
            ("a pre-prepare O does not hold", nv(vcs.clone(), vec![stray_pp(1, 1, 1, None)])),
        ] {
            assert!(e.verify_new_view(&bad).is_err(), "{what}");
        }
        // O = {1: null, 2: batch B} from a certificate at seq 2: each field of the re-proposal
        // must be the primary's, for this view, at its sequence number, unexecuted.
        let p2 = prepared(0, 2, batch(0xb), &[1, 2]);
        let vcs2 =
            vec![view_change(1, 1, vec![p2]), view_change(2, 1, vec![]), view_change(3, 1, vec![])];
        let pp = |from: u32, view: u64, seq: u64, b: Batch, result| {
            signed(
                from,
                Message::PrePrepare(PrePrepare {
                    view: View(view),
                    seq: SeqNo(seq),
                    batch: b,
                    result,
                }),
            )
        };
        let good = vec![stray_pp(1, 1, 1, None), pp(1, 1, 2, batch(0xb), None)];
        assert!(e.verify_new_view(&nv(vcs2.clone(), good.clone())).is_ok());
        let mut forged_pp = good.clone();
        forged_pp[1].signature.0[0] ^= 1;
        for (what, pps) in [
            ("from another replica", vec![good[0].clone(), pp(2, 1, 2, batch(0xb), None)]),
            ("for another view", vec![good[0].clone(), pp(1, 2, 2, batch(0xb), None)]),
            ("at another seq", vec![good[0].clone(), pp(1, 1, 3, batch(0xb), None)]),
            ("another batch", vec![good[0].clone(), pp(1, 1, 2, batch(0xc), None)]),
            (
                "with a result",
                vec![good[0].clone(), pp(1, 1, 2, batch(0xb), Some(Digest([1; 32])))],
            ),
            ("forged", forged_pp),
            (
                "not a pre-prepare",
                vec![good[0].clone(), signed(1, Message::Heartbeat { view: View(1) })],
            ),
        ] {
            assert!(e.verify_new_view(&nv(vcs2.clone(), pps)).is_err(), "{what}");
        }
        // Through the engine: a new view signed by another replica, or for a lower view, is
        // ignored; the primary's is taken.
        let mut b = engine(2);
        let _ = host(&mut b, 2, Input::Message(view_change(1, 1, vec![])));
        let _ = host(&mut b, 2, Input::Message(view_change(3, 1, vec![])));
        let msg = Message::NewView(nv(vcs, vec![]));
        assert_eq!(view_changed(&host(&mut b, 2, Input::Message(signed(3, msg.clone())))), None);
        let low =
            Message::NewView(NewView { view: View(0), view_changes: vec![], pre_prepares: vec![] });
        assert_eq!(view_changed(&host(&mut b, 2, Input::Message(signed(0, low)))), None);
        assert!(b.is_changing_view());
        let got = host(&mut b, 2, Input::Message(signed(1, msg.clone())));
        assert_eq!(view_changed(&got), Some((View(1), NodeId(1))));
        // The same new view again (a replay) changes nothing.
        let again = host(&mut b, 2, Input::Message(signed(1, msg.clone())));
        assert_eq!(view_changed(&again), None, "{again:?}");
        // A replica that missed the view change (still in view 0, not changing) follows the
        // valid new view of a higher view.
        let mut late = engine(2);
        let got = host(&mut late, 2, Input::Message(signed(1, msg)));
        assert_eq!(view_changed(&got), Some((View(1), NodeId(1))));
        assert!(!late.is_changing_view() && late.view() == View(1));
    }

    fn sent_to(out: &[Effect], to: u32) -> Vec<Message> {
        out.iter()
            .filter_map(|x| match x {
                Effect::Send { to: t, envelope } if t.0 == to => Some(envelope.message.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replica_behind_is_shown_the_current_view_and_the_stable_checkpoint() {
        // A view change for a view at or below ours (when we are not changing) comes from a
        // replica that missed the new view: it is sent the new view, and — when its
        // checkpoint is below our stable one — our checkpoint proof, to fetch from.
        let mut e = engine(2);
        let _ = host(&mut e, 2, Input::Message(view_change(1, 1, vec![])));
        let _ = host(&mut e, 2, Input::Message(view_change(3, 1, vec![])));
        let vcs =
            vec![view_change(1, 1, vec![]), view_change(2, 1, vec![]), view_change(3, 1, vec![])];
        let nv =
            Message::NewView(NewView { view: View(1), view_changes: vcs, pre_prepares: vec![] });
        let _ = host(&mut e, 2, Input::Message(signed(1, nv.clone())));
        assert_eq!(e.view(), View(1));
        for (what, vc) in
            [("its view", view_change(0, 1, vec![])), ("a lower view", view_change(0, 0, vec![]))]
        {
            let out = host(&mut e, 2, Input::Message(vc));
            assert_eq!(sent_to(&out, 0), vec![nv.clone()], "{what}");
        }
        // A view change for the next view is no sign of being behind: it is counted.
        let out = host(&mut e, 2, Input::Message(view_change(0, 2, vec![])));
        assert!(sent_to(&out, 0).is_empty());

        // Replica 1 with a stable checkpoint at 4, in view 0 (no new view to show).
        let mut e = engine(1);
        for seq in 1..=4 {
            let _ = commit_slot(&mut e, seq);
        }
        let ck = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: result_of(4) });
        for from in [0, 2] {
            let _ = host(&mut e, 1, Input::Message(signed(from, ck.clone())));
        }
        assert_eq!(e.low_watermark(), SeqNo(4));
        let out = host(&mut e, 1, Input::Message(view_change(3, 0, vec![])));
        let sent = sent_to(&out, 3);
        assert!(
            matches!(&sent[..], [Message::Entries(Entries { checkpoint: Some(p), entries })]
                if p.seq == SeqNo(4) && entries.is_empty()),
            "{sent:?}"
        );
        let at_ours = signed(
            3,
            Message::ViewChange(ViewChange {
                view: View(0),
                checkpoint: checkpoint_proof(4, result_of(4), &[0, 1, 2]),
                prepared: vec![],
            }),
        );
        assert!(sent_to(&host(&mut e, 1, Input::Message(at_ours)), 3).is_empty(), "not behind");
    }

    #[test]
    fn a_replicas_latest_view_change_replaces_its_earlier_ones() {
        // This engine's rule on top of C&L §4.5.2 (join at the smallest view that f + 1
        // replicas want at least): a replica that moved on to view 2 counts for view 2, not 1: replica 3
        // holding 1's view changes for 1 then 2, and 2's for 2, joins view 2. An older view
        // change arriving late changes nothing.
        let mut e = engine(3);
        let _ = host(&mut e, 3, Input::Message(view_change(1, 1, vec![])));
        let _ = host(&mut e, 3, Input::Message(view_change(1, 2, vec![])));
        let _ = host(&mut e, 3, Input::Message(view_change(1, 1, vec![])));
        assert!(!e.is_changing_view());
        let _ = host(&mut e, 3, Input::Message(view_change(2, 2, vec![])));
        assert!(e.is_changing_view());
        assert_eq!(e.view(), View(2));
    }

    #[test]
    fn with_seven_replicas_f_plus_one_is_three() {
        // C&L §4.5.2 with n = 7, f = 2: two view changes are not enough to join, three are.
        let mut e = engine_of(7, 6);
        let _ = e.handle(Input::Message(view_change(1, 1, vec![])));
        let _ = e.handle(Input::Message(view_change(2, 1, vec![])));
        assert!(!e.is_changing_view());
        let _ = e.handle(Input::Message(view_change(3, 1, vec![])));
        assert!(e.is_changing_view() && e.view() == View(1));
    }

    #[test]
    fn a_vote_recorded_before_a_crash_is_never_changed_after_it() {
        // SECURITY.md (a compromised or restarted node cannot make its HSM sign two different
        // votes for one (view, seq, phase)): an intent recorded before a crash binds the replica. A
        // pre-prepare for the same slot with another batch (the primary equivocating) gets no
        // prepare; one with the same batch is accepted, its prepare (signed again at the
        // restore) not signed a third time and no new intent recorded.
        let vote_a = Message::Prepare(Vote {
            view: View(0),
            seq: SeqNo(1),
            digest: batch_digest(&TestVerifier, &batch(1)),
        });
        let restored = || {
            let params = Params { checkpoint_interval: 4, window: 8, ..Params::default() };
            let mut e = Engine::new(NodeId(1), config(4), params, TestVerifier).unwrap();
            let _ = e.handle(Input::Restore {
                records: vec![WalRecord::Intent(vote_a.clone())],
                committed: SeqNo(0),
                state: Digest([7; 32]),
                recent: vec![],
                configs: vec![],
            });
            e
        };
        let mut e = restored();
        let out = e.handle(Input::Message(pre_prepare(0, 1, batch(2), Some(Digest([9; 32])))));
        assert!(votes_signed(&out).is_empty(), "a second, different prepare: {out:?}");
        let mut e = restored();
        let out = e.handle(Input::Message(pre_prepare(0, 1, batch(1), Some(Digest([9; 32])))));
        assert!(accepted(&out), "the pre-prepare itself is accepted: {out:?}");
        assert!(votes_signed(&out).is_empty(), "its prepare was signed again at the restore");
        assert!(!out.iter().any(|x| matches!(x, Effect::Persist(WalRecord::Intent(_)))));
    }

    #[test]
    fn a_checkpoint_recorded_before_a_crash_is_never_changed_after_it() {
        // SECURITY.md's double-sign rule, for checkpoints: a replica that recorded its checkpoint for
        // seq 4 before a crash signs that very one again when it commits seq 4 anew, and
        // never a checkpoint of another state for seq 4 (its state after the crash
        // disagrees: the signer's guard would refuse it too).
        let checkpoint_signed = |recorded: Digest| {
            let params = Params { checkpoint_interval: 4, window: 8, ..Params::default() };
            let mut e = Engine::new(NodeId(1), config(4), params, TestVerifier).unwrap();
            let record = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: recorded });
            let _ = host(
                &mut e,
                1,
                Input::Restore {
                    records: vec![WalRecord::Intent(record)],
                    committed: SeqNo(0),
                    state: Digest([7; 32]),
                    recent: vec![],
                    configs: vec![],
                },
            );
            let mut out = Vec::new();
            for seq in 1..=4 {
                out.extend(commit_slot(&mut e, seq));
            }
            assert_eq!(e.committed(), SeqNo(4));
            let new_intent = out
                .iter()
                .any(|x| matches!(x, Effect::Persist(WalRecord::Intent(Message::Checkpoint(_)))));
            let signed: Vec<Message> = out
                .iter()
                .filter_map(|x| match x {
                    Effect::Broadcast(env) if matches!(env.message, Message::Checkpoint(_)) => {
                        Some(env.message.clone())
                    }
                    _ => None,
                })
                .collect();
            (signed, new_intent)
        };
        let same = Message::Checkpoint(Checkpoint { seq: SeqNo(4), state: result_of(4) });
        assert_eq!(checkpoint_signed(result_of(4)), (vec![same], false));
        assert_eq!(checkpoint_signed(Digest([0xee; 32])), (vec![], false));
    }

    #[test]
    fn prepares_and_commits_count_only_in_the_current_view_window_and_role() {
        // C&L §4.2: a replica accepts prepare and commit messages "provided that their
        // signatures are correct, their view number equals the replica's current view, and
        // their sequence number is between h and H"; a prepare is from a backup, not the
        // primary; none is accepted while the replica is changing views (§4.4).
        let d = batch_digest(&TestVerifier, &batch(1));
        let prepare = |from, view, seq| {
            signed(from, Message::Prepare(Vote { view: View(view), seq: SeqNo(seq), digest: d }))
        };
        let commit = |from, view, seq| {
            signed(from, Message::Commit(Vote { view: View(view), seq: SeqNo(seq), digest: d }))
        };
        let mut e = engine(1);
        assert!(accepted(&e.handle(Input::Message(prepare(2, 0, 1)))));
        assert!(accepted(&e.handle(Input::Message(commit(2, 0, 1)))));
        for (what, env) in [
            ("a prepare of another view", prepare(3, 1, 1)),
            ("a prepare above the window", prepare(3, 0, 9)),
            ("a prepare at the low watermark", prepare(3, 0, 0)),
            ("a prepare from the primary", prepare(0, 0, 2)),
            ("a commit of another view", commit(3, 1, 1)),
            ("a commit above the window", commit(3, 0, 9)),
        ] {
            let out = e.handle(Input::Message(env));
            assert!(out.iter().all(only_heard), "{what}: {out:?}");
        }
        // Changing views: the new view's votes wait for its new-view message.
        let _ = e.handle(Input::Message(view_change(2, 1, vec![])));
        let _ = e.handle(Input::Message(view_change(3, 1, vec![])));
        assert!(e.is_changing_view() && e.view() == View(1));
        for env in [prepare(2, 1, 1), commit(2, 1, 1), prepare(3, 1, 2)] {
            let out = e.handle(Input::Message(env));
            assert!(!accepted(&out), "during a view change: {out:?}");
        }
    }

    #[test]
    fn joins_a_view_change_after_f_plus_one() {
        // C&L §4.5.2: f + 1 = 2 view changes for higher views make a replica join.
        let mut e = engine(3);
        let _ = e.handle(Input::Message(view_change(1, 1, vec![])));
        assert!(!e.is_changing_view());
        let _ = e.handle(Input::Message(view_change(2, 1, vec![])));
        assert!(e.is_changing_view() && e.view() == View(1));
    }
}
