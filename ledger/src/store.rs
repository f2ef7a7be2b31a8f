use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, IteratorMode,
    Options, WriteBatch, WriteOptions,
};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::{Decision, Identity, TrustStore};
use vpbox_sm::sm3::Digest;

use crate::Error;
use crate::block::{Block, Header, results_root};
use crate::contract::PutOutcome;
use crate::governance::{ConfigTx, Member, Proposal, State};
use crate::merkle;
use crate::record::{self, NUMBERED_FROM, Numbered};
use crate::state::{self, Changes, Leaf, TOP_DEPTH};
use crate::tx::{Payload, Tx};
use crate::txrecord;
use crate::wire::Reader;

/// The block cache the looked-up column families share (index, filter and data blocks). A
/// block added to reads its buckets' anchors, spread over the whole anchors family: at ten
/// million anchors (1.2 GB of it) a catch-up of a million reads a third of its blocks, several
/// times each, and with 64 MiB almost every read missed (a copy from the page cache, a checksum
/// and an eviction). Filled only as read.
const BLOCK_CACHE: usize = 512 << 20;

/// The most write-ahead log kept on disk. A log file is deleted once every column family with
/// writes in it has flushed them; the small families (the tip, CRLs) fill their memtables so
/// slowly that, unbounded, RocksDB kept up to four times the sum of all write buffers (4 GiB):
/// measured, ten 88 MB logs at six million anchors. Past this size the families holding the
/// oldest log are flushed.
const WAL_MAX: u64 = 256 << 20;

/// The largest RocksDB's information log (`LOG`) grows before it is set aside as
/// `LOG.old.<time>`, and ([`ENGINE_LOGS_KEPT`]) how many set aside are kept: at most 20 MiB in
/// all. Unbounded before: RocksDB writes every family's statistics there every ten minutes, for
/// as long as the node runs, into one file.
pub const ENGINE_LOG_MAX: usize = 4 << 20;

/// See [`ENGINE_LOG_MAX`].
pub const ENGINE_LOGS_KEPT: usize = 4;

const CF_BLOCKS: &str = "blocks"; // height:u64be → block encoding
const CF_BLOCK_INDEX: &str = "block_index"; // block hash → height:u64be
const CF_TXS: &str = "txs"; // tx hash → place, receipt's outcomes, tx encoding (`txrecord`)
const CF_RECEIPTS: &str = "receipts"; // written before: tx hash → height:u64 index:u32 codes
const CF_ANCHORS: &str = "anchors"; // key → value:[32] (tx:[32] height | number) (`record`)
const CF_ANCHOR_TXS: &str = "anchor_txs"; // number:u64be → height:u64be tx:[32] (`record`)
const CF_META: &str = "meta"; // "tip" → height:u64 hash:[32]
const CF_CERTS: &str = "certs"; // key fingerprint → enrolled certificate DER
const CF_CRLS: &str = "crls"; // height:u64be index:u32be → CRL DER, in publication order

/// Every column family, in the order they are opened.
const CFS: [&str; 9] = [
    CF_BLOCKS,
    CF_BLOCK_INDEX,
    CF_TXS,
    CF_RECEIPTS,
    CF_ANCHORS,
    CF_ANCHOR_TXS,
    CF_META,
    CF_CERTS,
    CF_CRLS,
];
const TIP: &[u8] = b"tip";
const GOVERNANCE: &[u8] = b"governance"; // the governance state (see `governance`)
const NUMBERED: &[u8] = b"numbered"; // → count:u64be, the numbers given (`anchor_txs`'s length)
const NODES_AT: &[u8] = b"nodes@"; // ‖ height:u64be → the member list a change set there
const CONFIG_AT: &[u8] = b"config@"; // ‖ height:u64be → count:u32 (index:u32)*: applied changes
const ENROLL_AT: &[u8] = b"enroll@"; // ‖ key fingerprint ‖ height:u64be ‖ index:u32be → (empty)

/// The numbered transactions' table ([`Numbered`]), read whole.
fn load_numbered(db: &DB) -> Result<Numbered, Error> {
    let cf = db
        .cf_handle(CF_ANCHOR_TXS)
        .ok_or_else(|| Error::Corrupt(format!("column family {CF_ANCHOR_TXS} missing")))?;
    Numbered::from_entries(db.iterator_cf(cf, IteratorMode::Start).map(|e| e.map_err(Error::from)))
}

/// Fewer new anchors than this in a block are hashed on its executing thread alone.
const PARALLEL_MIN: usize = 2048;

/// The threads a block's leaf hashing, its write-once look-ups and an open's top levels are
/// spread over: this machine's cores, at most 4 (its buckets: [`read_depth`]).
fn workers() -> usize {
    static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WORKERS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}

/// How many first bits of a key split `anchors` new anchors into parts, one per worker: 0
/// (no split) for a small block or a machine of one core.
fn split_depth(anchors: usize) -> usize {
    if anchors < PARALLEL_MIN { 0 } else { workers().ilog2() as usize }
}

/// How many first bits of a key split `anchors` new anchors into parts for
/// [`Ledger::state_changes`], one thread each: 0 (no split) for a small block, else
/// [`READ_DEPTH`], whatever the cores. A large block's buckets are each one random read of a
/// table block once the ledger outgrows the page cache (ten million anchors on this machine),
/// and a thread reading them one after the other waits on the disk most of its time: more
/// threads than cores keep that many reads in flight. On a 2-core machine with a virtio disk,
/// 4 KiB random reads measured 21,800/s from one thread, 34,200/s from two, 61,500/s from
/// eight and 65,900/s from sixteen; a catch-up at ten million anchors, 50.3 k/s with 16 parts
/// and 46.8 k/s with 32. Keys that share their first bits fall in one part (a part with no
/// keys gets no thread): the split is by key, as the state map is.
fn read_depth(anchors: usize) -> usize {
    if anchors < PARALLEL_MIN { 0 } else { READ_DEPTH }
}

/// A large block's state map work in 16 parts ([`read_depth`]); at least the workers' split.
const READ_DEPTH: usize = 4;
const _: () = assert!(READ_DEPTH <= TOP_DEPTH && 1 << READ_DEPTH >= 4);

/// The state map's top levels from its `buckets` (sorted by index, as a checkpoint and a
/// scan give them): [`state::Top::build`], with the levels below one node per worker computed
/// on the cores (3.8 million buckets at ten million anchors).
fn build_top(buckets: Vec<(u32, state::Node)>) -> state::Top {
    build_top_in(buckets, workers().ilog2() as usize)
}

/// [`build_top`] in `2^depth` parts.
fn build_top_in(buckets: Vec<(u32, state::Node)>, depth: usize) -> state::Top {
    debug_assert!(buckets.is_sorted_by_key(|(i, _)| *i), "buckets in index order");
    if depth == 0 || buckets.len() < PARALLEL_MIN {
        return state::Top::build(buckets);
    }
    let mut top = state::Top::new();
    let shift = TOP_DEPTH - depth;
    let parts = split_sorted(&buckets, depth, |(i, _)| i >> shift);
    let parts = parallel(&parts, |part| state::Changes::below(&top, &[], part.to_vec(), depth));
    top.apply(&state::Changes::join(&top, &[], parts, depth));
    top
}

/// The `2^depth` parts of `items`, in order: part `j` holds the items whose `part_of` is `j`
/// (`items` sorted by it; a part may be empty).
fn split_sorted<T>(items: &[T], depth: usize, part_of: impl Fn(&T) -> u32) -> Vec<&[T]> {
    let mut parts = Vec::with_capacity(1 << depth);
    let mut rest = items;
    for j in 0..1u32 << depth {
        let (part, after) = rest.split_at(rest.partition_point(|t| part_of(t) <= j));
        parts.push(part);
        rest = after;
    }
    debug_assert!(rest.is_empty(), "every item in one of the parts");
    parts
}

/// Turns RocksDB's performance counters off on the calling thread (they are per thread).
///
/// By default RocksDB counts every key comparison and more in a thread-local `PerfContext`
/// (`PerfLevel::kEnableCount`). In the shared library the ledger links (Debian's
/// `librocksdb`), each count goes through the dynamic TLS model (`__tls_get_addr` and the
/// context's initialiser): a memtable insert pays it at every comparison of its skip-list
/// search. vpbox reads none of these counters. Off, synced batches of 5,000 sorted 32-byte keys
/// went from 295,000 to 357,000 records/s on the build machine (three alternating pairs,
/// 1.19–1.23×). Called where the ledger is opened (a rebuild of the state map reads every
/// anchor), writes a block (the `ledger-write` thread), executes one (the node's driver),
/// checks its state map's checkpoint (the `ledger-check` thread) and in the threads
/// [`parallel`] starts: a few nanoseconds each. The RPC's point reads still count, and so do
/// RocksDB's own flush and compaction threads, which this setting cannot reach.
pub fn without_perf_counters() {
    rocksdb::perf::set_perf_stats(rocksdb::perf::PerfStatsLevel::Disable);
}

/// `f` of every part, in order: the first on this thread, each other on one of its own (or
/// on this one too, when no thread can be had).
fn parallel<P: Sync, R: Send>(parts: &[P], f: impl Fn(&P) -> R + Sync) -> Vec<R> {
    let Some((first, rest)) = parts.split_first() else { return Vec::new() };
    std::thread::scope(|s| {
        let others: Vec<_> = rest
            .iter()
            .map(|p| {
                let run = || {
                    without_perf_counters();
                    f(p)
                };
                (p, std::thread::Builder::new().spawn_scoped(s, run).ok())
            })
            .collect();
        let mut out = vec![f(first)];
        out.extend(others.into_iter().map(|(p, h)| match h.map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => f(p),
        }));
        out
    })
}

/// The leaves of whole buckets [`Ledger::hash_buckets`] (a block's new, speculative and
/// committed ones) and [`scan_buckets`] gather before they hash them together: enough to fill
/// the SIMD lanes many times over, and a bounded memory however large the block or the ledger
/// (at ten anchors a bucket, a block of 40,000 new anchors reads 400,000; a bucket holds 2.4
/// at ten million).
const LEAVES_AT_ONCE: usize = 4096;

/// How far ahead a scan of every anchor reads its table files ([`scan_options`]).
const SCAN_READAHEAD: usize = 2 << 20;

/// The nodes of the buckets `parts` describes (index, its new or speculative leaves' range in
/// `hashed`, its committed leaves' range in `committed`), appended to `buckets`: the committed
/// leaves hashed together first.
fn hash_parts(
    parts: &[(u32, std::ops::Range<usize>, std::ops::Range<usize>)],
    hashed: &[([u8; 32], Digest)],
    committed: &[Leaf],
    buckets: &mut Vec<(u32, state::Node)>,
) -> Result<(), Error> {
    let committed_hashes = Leaf::hash_each(committed);
    // Every bucket's leaves, sorted, one after the other; then their trees, all at once.
    let mut all: Vec<([u8; 32], Digest)> = Vec::with_capacity(hashed.len() + committed.len());
    let mut ranges = Vec::with_capacity(parts.len());
    for (b, new, old) in parts {
        let from = all.len();
        all.extend_from_slice(&hashed[new.clone()]);
        let keys = committed[old.clone()].iter().map(|l| l.key);
        all.extend(keys.zip(committed_hashes[old.clone()].iter().copied()));
        let in_bucket = &mut all[from..];
        in_bucket.sort_unstable_by_key(|(k, _)| *k);
        if in_bucket.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(Error::Corrupt(format!(
                "state bucket {b}: a key anchored twice (committed and speculative)"
            )));
        }
        ranges.push(from..all.len());
    }
    let lists: Vec<&[([u8; 32], Digest)]> = ranges.into_iter().map(|r| &all[r]).collect();
    let nodes = state::subtrees(&lists, TOP_DEPTH);
    buckets.extend(parts.iter().map(|(b, _, _)| *b).zip(nodes));
    Ok(())
}

/// A stored anchor: its value and where it was anchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorRecord {
    /// The anchored value.
    pub value: [u8; 32],
    /// The transaction that anchored it.
    pub tx: Digest,
    /// The block height.
    pub height: u64,
}

/// A receipt: where a transaction executed and each put's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u32,
    /// One outcome per pair of an anchor put; one for a configuration, enrollment or CRL
    /// transaction.
    pub outcomes: Vec<PutOutcome>,
}

/// A block executed on top of the tip (and any speculative blocks between), not yet written:
/// what [`Ledger::execute`] returns and [`Ledger::commit`] makes durable.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The block (without its certificate).
    pub block: Block,
    /// Its transactions, in block order.
    pub txs: Vec<Tx>,
    /// A receipt for each transaction that executed here (not for repeats of earlier ones).
    pub receipts: Vec<(Digest, Receipt)>,
    /// The keys this block anchors: value and the anchoring transaction.
    pub anchors: HashMap<[u8; 32], ([u8; 32], Digest)>,
    /// Certificates this block enrolls, by key fingerprint.
    pub certs: Vec<(Digest, Vec<u8>)>,
    /// CRLs this block publishes, in order.
    pub crls: Vec<Vec<u8>>,
    /// The governance state after this block, when a configuration transaction changed it.
    pub governance: Option<State>,
    /// The block indices of the configuration transactions applied here, in order.
    pub configs: Vec<u32>,
    /// The enrollments applied here: the key fingerprint and the transaction's index.
    pub enrolls: Vec<(Digest, u32)>,
    /// This block's new anchors as the state map holds them: key and leaf hash, by key.
    pub leaves: Vec<([u8; 32], Digest)>,
    /// The state map's top levels this block changed.
    pub state: Changes,
}

impl Executed {
    /// Whether the block only anchors: it enrolls no certificate, publishes no CRL and changes
    /// no configuration, so committing it changes nothing but the anchors, the transactions
    /// and the chain (no admission, no membership).
    pub fn anchors_only(&self) -> bool {
        self.certs.is_empty()
            && self.crls.is_empty()
            && self.governance.is_none()
            && self.configs.is_empty()
            && self.enrolls.is_empty()
    }

    /// The consensus members (id, key) this block's configuration change names, when it
    /// changes the node set relative to `before`.
    pub fn node_change(&self, before: &State) -> Option<Vec<Member>> {
        self.governance.as_ref().map(State::members).filter(|m| *m != before.members())
    }
}

/// Counts the commits that changed the trust state (the governance state — roots, banks,
/// members — or the CRLs), and wakes whoever waits for the next one: the node's
/// `gov_waitState`, through which the box's proxy learns of a revocation at its commit rather
/// than at its next poll.
#[derive(Debug, Default)]
pub struct TrustChanges {
    count: Mutex<u64>,
    changed: Condvar,
    /// The node is stopping: no wait waits any more.
    closed: std::sync::atomic::AtomicBool,
}

impl TrustChanges {
    /// Commits that changed the trust state since this ledger was opened.
    pub fn count(&self) -> u64 {
        self.count.lock().map_or(0, |c| *c)
    }

    fn bump(&self) {
        if let Ok(mut c) = self.count.lock() {
            *c += 1;
            self.changed.notify_all();
        }
    }

    /// Waits until the count is no longer `seen`, or `timeout` has passed, or the waits are
    /// [closed](Self::close): the count then.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> u64 {
        use std::sync::atomic::Ordering::Acquire;
        let Ok(c) = self.count.lock() else { return seen };
        let waiting = |c: &mut u64| *c == seen && !self.closed.load(Acquire);
        match self.changed.wait_timeout_while(c, timeout, waiting) {
            Ok((c, _)) => *c,
            Err(_) => seen,
        }
    }

    /// Ends every wait, now and later (the node is stopping: its long polls are answered
    /// before it goes, not left to their timeout).
    pub fn close(&self) {
        // Under the lock, so that a waiter between its check and its sleep is not missed.
        let _held = self.count.lock();
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        self.changed.notify_all();
    }
}

/// The ledger on RocksDB.
pub struct Ledger {
    db: Arc<DB>,
    /// Bumped by every commit that changed the trust state.
    trust_changes: Arc<TrustChanges>,
    tip: Option<Header>,
    /// The consortium's roots and the CRLs committed so far; `None` admits every submitter
    /// (ledger tools and benchmarks only: a node always sets the genesis roots).
    trust: Option<TrustStore>,
    /// The committed governance state (`None` with admission off).
    gov: Option<State>,
    /// The state map's top levels, as of the tip (rebuilt at open from the anchors, or from
    /// the checkpoint a clean stop left).
    state: state::Top,
    /// The ledger's directory.
    dir: PathBuf,
    /// Where the state map came from at open.
    state_source: StateSource,
    /// The checkpoint the map came from, until [`CheckpointCheck`] has compared it with the
    /// anchors on disk.
    unchecked: Option<Loaded>,
    /// Whether that checkpoint's file is still on disk: it stays until the first commit, so
    /// that a start which fails after the open (its signer down, say) opens from it again.
    checkpoint_kept: bool,
    /// The transactions anchor records name by number (`record`), as committed.
    numbered: Numbered,
    /// The block staged by [`Ledger::stage`] and not yet finished: its records may be in the
    /// store already, and every reader leaves them out until [`Ledger::finish`].
    writing: Option<Writing>,
}

/// A block staged for its write ([`Ledger::stage`]): what readers leave out until it is
/// finished, and what finishing it adds.
#[derive(Debug)]
pub(crate) struct Writing {
    /// Its height and header hash.
    pub(crate) height: u64,
    hash: Digest,
    /// The numbers its batch transactions get (`record`), in order: `numbers.start` is the
    /// table's next.
    pub(crate) numbers: std::ops::Range<u64>,
    numbered: Vec<Digest>,
}

impl Writing {
    /// Whether an anchor record naming its transaction this way is one of this block's.
    pub(crate) fn names(&self, names: record::Names) -> bool {
        match names {
            record::Names::Tx { height, .. } => height == self.height,
            record::Names::Number(n) => self.numbers.contains(&n),
        }
    }
}

/// A committed block's synced write batch, staged by [`Ledger::stage`]: [`BlockWrite::write`]
/// carries it out on any thread, while the ledger executes the blocks above it; what it returns
/// lets [`Ledger::finish`] advance the tip.
pub struct BlockWrite {
    db: Arc<DB>,
    batch: WriteBatch,
    height: u64,
}

impl std::fmt::Debug for BlockWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockWrite").field("height", &self.height).finish_non_exhaustive()
    }
}

/// A block's write that landed, durably ([`BlockWrite::write`]).
#[derive(Debug)]
pub struct Written {
    height: u64,
}

impl BlockWrite {
    /// The block's height.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Writes the block's batch, synced: once this returns, the block is durable (the store's
    /// readers see all of it or none of it; the ledger's own readers see none of it until
    /// [`Ledger::finish`]).
    pub fn write(self) -> Result<Written, Error> {
        without_perf_counters();
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(self.batch, &wo)?;
        Ok(Written { height: self.height })
    }
}

/// A checkpoint the state map was taken from, as the comparison with the anchors needs it.
#[derive(Debug, Clone, Copy)]
struct Loaded {
    /// Its block's height and hash.
    height: u64,
    block: Digest,
    /// SM3 of its encoding's body: the checksum it ends with (checked when it was decoded).
    digest: Digest,
}

/// The comparison of a state map checkpoint the ledger opened from with the anchors on disk
/// ([`Ledger::checkpoint_check`]): one scan of the anchors stored by the checkpoint's block
/// (their records name their block, inline or through the numbered transactions' table, read
/// again after the scan's iterator takes its view; later ones are left out, so commits may go
/// on meanwhile),
/// hashed into buckets that must be the checkpoint's, bucket for bucket. This is what the
/// open's own scan would have checked: an anchor changed on disk, or a checkpoint whose
/// buckets hash to the right root from the wrong places, is found — a minute late at ten
/// million anchors rather than before the open.
///
/// It holds the store open until it is dropped.
pub struct CheckpointCheck {
    db: Arc<DB>,
    loaded: Loaded,
}

impl CheckpointCheck {
    /// Runs the scan: `Err` (corruption) when the anchors do not give the checkpoint's
    /// buckets.
    pub fn run(&self) -> Result<(), Error> {
        self.run_pausing(|| {})
    }

    /// [`Self::run`], calling `pause` between rounds of leaves (every [`LEAVES_AT_ONCE`]
    /// or so): it may wait there while the node has more urgent use for the disk.
    pub fn run_pausing(&self, pause: impl FnMut()) -> Result<(), Error> {
        without_perf_counters();
        let cf = self
            .db
            .cf_handle(CF_ANCHORS)
            .ok_or_else(|| Error::Corrupt(format!("column family {CF_ANCHORS} missing")))?;
        let mut it = self.db.raw_iterator_cf_opt(cf, scan_options());
        it.seek_to_first();
        // Read after the iterator took its view of the anchors, so that it holds every number
        // their records name (both are written in one batch).
        let numbered = load_numbered(&self.db)?;
        let Loaded { height, block, digest } = self.loaded;
        let buckets = scan_buckets(&mut it, &numbered, |leaf| leaf.height <= height, pause)?;
        let c = state::Checkpoint { height, block, buckets };
        if c.encode().last_chunk::<32>() != Some(digest.as_bytes()) {
            return Err(Error::Corrupt(format!(
                "the anchors on disk do not give the state map's checkpoint of block {}: an \
                 anchor changed on disk, or the checkpoint is not this ledger's",
                height
            )));
        }
        Ok(())
    }
}

/// The buckets of the anchors from `it` (positioned at the first, read in key order) that
/// `keep` keeps, by index.
///
/// The kept leaves of whole buckets are hashed together, [`LEAVES_AT_ONCE`] at a time, in SIMD
/// lanes ([`hash_parts`]).
fn scan_buckets(
    it: &mut rocksdb::DBRawIterator<'_>,
    numbered: &Numbered,
    keep: impl Fn(&Leaf) -> bool,
    mut between: impl FnMut(),
) -> Result<Vec<(u32, state::Node)>, Error> {
    let mut buckets = Vec::new();
    // The buckets read and not yet hashed: index and range in `leaves`.
    let mut parts = Vec::new();
    let mut leaves: Vec<Leaf> = Vec::new();
    let mut from = 0;
    let mut current = None;
    loop {
        let next = match (it.key(), it.value()) {
            (Some(k), Some(v)) => {
                let Ok(key) = <[u8; 32]>::try_from(k) else {
                    return Err(Error::Corrupt("an anchor key is not 32 bytes".into()));
                };
                Some(numbered.leaf(key, v)?)
            }
            _ => None,
        };
        let b = next.map(|l| state::prefix(&l.key, TOP_DEPTH));
        if let Some(c) = current
            && b != Some(c)
        {
            if leaves.len() > from {
                parts.push((c, 0..0, from..leaves.len()));
            }
            if leaves.len() >= LEAVES_AT_ONCE || next.is_none() {
                hash_parts(&parts, &[], &leaves, &mut buckets)?;
                parts.clear();
                leaves.clear();
                if next.is_some() {
                    between();
                }
            }
            from = leaves.len();
        }
        let Some(leaf) = next else { break };
        current = b;
        if keep(&leaf) {
            leaves.push(leaf);
        }
        it.next();
    }
    it.status()?;
    Ok(buckets)
}

/// Read options for a scan of every anchor (at open, or the checkpoint's check): its blocks
/// are read ahead and not kept in the block cache, which holds what the node's work reads
/// again (a catch-up's buckets, `anchor_get`s) and would be emptied by ten million anchors
/// read once.
fn scan_options() -> rocksdb::ReadOptions {
    let mut o = rocksdb::ReadOptions::default();
    o.fill_cache(false);
    o.set_readahead_size(SCAN_READAHEAD);
    o
}

/// The state map checkpoint's file, in the ledger's directory (RocksDB leaves the names it
/// does not own alone).
pub const STATE_CHECKPOINT: &str = "vpbox-state-map";

/// Where [`Ledger::open`] took the state map from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSource {
    /// The checkpoint [`Ledger::save_state`] wrote at the tip.
    Checkpoint,
    /// One scan of every anchor; `refused` says why a checkpoint found was not used.
    Scan {
        /// Why the checkpoint was not used (none was found: `None`).
        refused: Option<String>,
    },
}

/// The identity `der` is admitted as, in the first of `roles` that admits it.
fn admitted(
    trust: &TrustStore,
    der: &[u8],
    roles: &[CertProfile],
    when: SystemTime,
) -> Option<Identity> {
    roles.iter().find_map(|r| match trust.admit(der, *r, when) {
        Decision::Allow(id) => Some(id),
        Decision::Deny(_) => None,
    })
}

/// Judges a configuration transaction's payload against `gov`: the submitter and every
/// approval must be enrolled admins admitted by `trust` at `when`, the approving banks more
/// than two thirds of the members, and the proposal must apply. The state it leads to, or why
/// not.
fn judge_config(
    gov: &State,
    trust: &TrustStore,
    bytes: &[u8],
    submitter: &Digest,
    when: SystemTime,
    enrolled: &mut dyn FnMut(&Digest) -> Option<Vec<u8>>,
) -> Result<State, String> {
    let der = enrolled(submitter).ok_or("the submitter is not an enrolled admin")?;
    if let Decision::Deny(r) = trust.admit(&der, CertProfile::Admin, when) {
        return Err(format!("the submitter is not admitted as an admin: {r}"));
    }
    let tx = ConfigTx::decode(bytes).map_err(|e| e.to_string())?;
    let proposal = Proposal::decode(&tx.proposal).map_err(|e| e.to_string())?;
    gov.check_target(&proposal)?;
    let banks = gov.approving_banks(&tx, trust, enrolled, when)?;
    if !gov.quorate(banks.len()) {
        return Err(format!(
            "approved by {} of {} member banks ({}); more than two thirds must approve",
            banks.len(),
            gov.banks().len(),
            banks.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    gov.apply(&proposal, when)
}

/// The time a transaction is judged at: its own timestamp, which every node sees alike.
fn at(timestamp_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(timestamp_ms)
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` and checks the tip: the stored tip block must
    /// exist, hash to the recorded tip hash, and link to its parent.
    ///
    /// The column families looked up by key (anchors, transactions, receipts, the block index,
    /// certificates) carry a filter in every table file, and all share one block cache of
    /// [`BLOCK_CACHE`] bytes with their index and filter blocks in it: an anchor's write-once
    /// check is a look-up of a key that is usually absent, which without filters reads an
    /// index and a data block of every level, a cost that grows with the ledger (`vpbox bench
    /// growth`). The filters and indexes are partitioned (4 KiB partitions
    /// under a top-level index pinned in the cache): a table file's whole filter (10 bits per key:
    /// about 600 KB for a 64 MB file of anchors) took most of a shard of the cache (1 MiB of 64,
    /// when it was 64 MiB), so whole filters were evicted by data blocks and read from the file
    /// again on almost every look-up — at six million anchors a third of a node's time went to
    /// copying filter blocks in from the page cache. The filters are Ribbon filters as
    /// selective as a bloom filter of 10 bits per key (about 1 % false positives) in about 30 %
    /// less space, at some more CPU to build (RocksDB's documentation): as bloom filters, the
    /// anchors' took 1.27 bytes per anchor on the mix of `vpbox bench anchors` (measured on
    /// 2026-12-06), and that mix went from 151 to 150 bytes per anchor with Ribbon filters.
    /// Options only: ledgers written before open as they are (RocksDB reads either kind of
    /// filter), and new table files get the filters.
    pub fn open(path: &Path) -> Result<Self, Error> {
        without_perf_counters();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_total_wal_size(WAL_MAX);
        opts.set_max_log_file_size(ENGINE_LOG_MAX);
        opts.set_keep_log_file_num(ENGINE_LOGS_KEPT);
        let cache = Cache::new_lru_cache(BLOCK_CACHE)?;
        let looked_up = || {
            let mut table = BlockBasedOptions::default();
            table.set_ribbon_filter(10.0);
            table.set_block_cache(&cache);
            table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
            table.set_partition_filters(true);
            table.set_metadata_block_size(4096);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_top_level_index_and_filter(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&table);
            // A bloom filter over the memtable's whole keys too (2 % of its size): a look-up
            // of an absent key — every write-once check of a new anchor — skips the skip
            // list instead of searching it.
            o.set_memtable_prefix_bloom_ratio(0.02);
            o.set_memtable_whole_key_filtering(true);
            o
        };
        // Those read in key order or by a few keys (blocks by height, the tip, CRLs in
        // publication order) keep RocksDB's defaults.
        let cfs = CFS.map(|name| match name {
            CF_BLOCKS | CF_ANCHOR_TXS | CF_META | CF_CRLS => {
                ColumnFamilyDescriptor::new(name, Options::default())
            }
            _ => ColumnFamilyDescriptor::new(name, looked_up()),
        });
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?);
        let numbered = load_numbered(&db)?;
        let mut ledger = Self {
            db,
            trust_changes: Arc::default(),
            tip: None,
            trust: None,
            gov: None,
            state: state::Top::new(),
            dir: path.to_path_buf(),
            state_source: StateSource::Scan { refused: None },
            unchecked: None,
            checkpoint_kept: false,
            numbered,
            writing: None,
        };
        ledger.tip = ledger.check_tip()?;
        ledger.check_numbered()?;
        let refused = match ledger.load_checkpoint() {
            Ok(Some((top, unchecked))) => {
                ledger.state = top;
                ledger.state_source = StateSource::Checkpoint;
                ledger.unchecked = Some(unchecked);
                ledger.checkpoint_kept = true;
                return Ok(ledger);
            }
            Ok(None) => None,
            Err(why) => Some(why),
        };
        ledger.state = ledger.rebuild_state()?;
        let (height, want) = ledger.tip.map_or((0, state::ZERO), |t| (t.height, t.state_root));
        if ledger.state.root() != want {
            return Err(Error::Corrupt(format!(
                "the anchors do not hash to block {height}'s state root"
            )));
        }
        ledger.state_source = StateSource::Scan { refused };
        Ok(ledger)
    }

    /// Where this ledger's state map came from when it was opened.
    pub fn state_source(&self) -> &StateSource {
        &self.state_source
    }

    /// The state map from the checkpoint a clean stop left, if one is there, is of the tip,
    /// and hashes to the tip's `state_root`; `Err` says why one found was not used, and that
    /// one is removed. One used stays until the first commit after the open (it is of the tip
    /// until then): a checkpoint is used by the opens that follow the stop that wrote it and
    /// precede the next block.
    fn load_checkpoint(&self) -> Result<Option<(state::Top, Loaded)>, String> {
        let file = self.dir.join(STATE_CHECKPOINT);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        self.checkpoint_of_tip(&bytes).map(Some).map_err(|why| match std::fs::remove_file(&file) {
            Ok(()) => why,
            Err(e) => format!("{why}; removing {}: {e}", file.display()),
        })
    }

    /// The map a checkpoint's `bytes` hold, if it is of the tip and hashes to its root.
    fn checkpoint_of_tip(&self, bytes: &[u8]) -> Result<(state::Top, Loaded), String> {
        let c = state::Checkpoint::decode(bytes)?;
        let tip = self.tip.as_ref().ok_or("the ledger has no blocks")?;
        if (c.height, c.block) != (tip.height, tip.hash()) {
            return Err(format!(
                "it is of block {}, not of the tip (block {}): the node did not stop cleanly \
                 after it was written",
                c.height, tip.height
            ));
        }
        // The checksum `decode` checked, not another pass over the file.
        let digest = Digest(*bytes.last_chunk::<32>().ok_or("truncated")?);
        let top = build_top(c.buckets);
        if top.root() != tip.state_root {
            return Err(format!("its buckets do not hash to block {}'s state root", tip.height));
        }
        Ok((top, Loaded { height: c.height, block: c.block, digest }))
    }

    /// The comparison still owed between the checkpoint this ledger opened from and the
    /// anchors on disk, to run beside the ledger's use (a node runs it on a thread of its own
    /// and stops, as for any corruption, if it fails); `None` after an open that scanned.
    pub fn checkpoint_check(&self) -> Option<CheckpointCheck> {
        self.unchecked.map(|loaded| CheckpointCheck { db: Arc::clone(&self.db), loaded })
    }

    /// What a node does when it stops: flushes RocksDB's memtables to table files (so the
    /// next open has no write-ahead log to replay: up to 256 MiB of it, seconds at a million
    /// anchors) and writes the state map's checkpoint as of the tip (replacing any), synced,
    /// so that the next open takes the map from it instead of hashing every anchor again.
    /// No checkpoint when there is no block.
    pub fn save_state(&self) -> Result<(), Error> {
        if let Some(w) = &self.writing {
            return Err(Error::Checkpoint(format!("block {} is still being written", w.height)));
        }
        for name in CFS {
            self.db.flush_cf(self.cf(name)?)?;
        }
        let Some(tip) = self.tip.as_ref() else { return Ok(()) };
        let bytes = state::Checkpoint::of(&self.state, tip.height, tip.hash()).encode();
        let file = self.dir.join(STATE_CHECKPOINT);
        let part = self.dir.join(format!("{STATE_CHECKPOINT}.part"));
        let io = |what: &str, e: std::io::Error| Error::Checkpoint(format!("{what}: {e}"));
        {
            let mut f = std::fs::File::create(&part).map_err(|e| io("create", e))?;
            std::io::Write::write_all(&mut f, &bytes).map_err(|e| io("write", e))?;
            f.sync_all().map_err(|e| io("sync", e))?;
        }
        std::fs::rename(&part, &file).map_err(|e| io("rename", e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the directory", e))
    }

    /// Turns certificate admission on with these roots only (no governance chain, no nodes):
    /// for tools and tests. A node calls [`Ledger::set_governance`].
    pub fn set_roots(&mut self, roots: &[Vec<u8>]) -> Result<(), Error> {
        self.set_governance(State {
            chain: Digest([0; 32]),
            seq: 0,
            roots: roots.to_vec(),
            nodes: Vec::new(),
            max_node_id: 0,
        })
    }

    /// Turns certificate admission and governance on: `genesis` is the founding state (roots
    /// and nodes from the genesis file); a state committed since, if any, replaces it. The
    /// trust store holds its roots and every CRL the ledger holds, in publication order.
    pub fn set_governance(&mut self, genesis: State) -> Result<(), Error> {
        let state = match self.db.get_cf(self.cf(CF_META)?, GOVERNANCE)? {
            Some(raw) => {
                let stored = State::decode(&raw)?;
                if stored.chain != genesis.chain {
                    return Err(Error::Corrupt(
                        "the governance state is another consortium's".into(),
                    ));
                }
                stored
            }
            None => genesis,
        };
        self.trust = Some(self.trust_of(&state, [])?);
        self.gov = Some(state);
        Ok(())
    }

    /// The trust store of the governance state `state`: its roots, every committed CRL, then
    /// `later` (the speculative blocks' and a block's own), in publication order. Each CRL
    /// was accepted when its block executed; one whose root governance removed since no
    /// longer applies to anything, and is left out.
    fn trust_of<'c>(
        &self,
        state: &State,
        later: impl IntoIterator<Item = &'c Vec<u8>>,
    ) -> Result<TrustStore, Error> {
        let mut trust =
            state.trust().map_err(|e| Error::Corrupt(format!("governance roots: {e}")))?;
        for der in &self.crls()? {
            let _ = trust.add_crl(der);
        }
        for der in later {
            let _ = trust.add_crl(der);
        }
        Ok(trust)
    }

    /// The committed governance state (`None` with admission off).
    pub fn governance(&self) -> Option<&State> {
        self.gov.as_ref()
    }

    /// Every change of the node set committed so far: the height of its block and the members
    /// (id, consensus key) it named, oldest first.
    pub fn node_changes(&self) -> Result<Vec<(u64, Vec<Member>)>, Error> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(NODES_AT, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_META)?, mode) {
            let (k, v) = item?;
            let Some(h) = k.strip_prefix(NODES_AT) else { break };
            let height = u64::from_be_bytes(
                h.try_into().map_err(|_| Error::Corrupt("node change key".into()))?,
            );
            let mut r = Reader::new(&v, "node change");
            let n = r.u32()? as usize;
            if n > r.rest_len() / 69 {
                return Err(Error::Corrupt("node change count".into()));
            }
            let members =
                (0..n).map(|_| Ok((r.u32()?, r.array()?))).collect::<Result<Vec<_>, Error>>()?;
            r.finish()?;
            out.push((height, members));
        }
        Ok(out)
    }

    /// Every block that applied configuration transactions (whatever they changed: roots,
    /// banks or nodes): its height and the block indices of those transactions, oldest first.
    /// What a proof bundle carries so that its verifier can follow the consortium from its
    /// genesis. (Ledgers written before this record existed have none for their earlier
    /// changes; such a chain's proofs across them fail closed at the first changed epoch.)
    pub fn config_changes(&self) -> Result<Vec<(u64, Vec<u32>)>, Error> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(CONFIG_AT, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_META)?, mode) {
            let (k, v) = item?;
            let Some(h) = k.strip_prefix(CONFIG_AT) else { break };
            let height = u64::from_be_bytes(
                h.try_into().map_err(|_| Error::Corrupt("configuration change key".into()))?,
            );
            let mut r = Reader::new(&v, "configuration change");
            let n = r.u32()? as usize;
            if n > r.rest_len() / 4 {
                return Err(Error::Corrupt("configuration change count".into()));
            }
            let indices = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, Error>>()?;
            r.finish()?;
            out.push((height, indices));
        }
        Ok(out)
    }

    /// Where the certificate that admitted `submitter` at (`height`, `index`) was enrolled: the
    /// last enrollment of that key before that position, as (height, index of the Enroll
    /// transaction). What a proof bundle carries to bind a submitter to the certificate the
    /// ledger admitted it by. (Ledgers written before this record existed have none.)
    pub fn enrollment_before(
        &self,
        submitter: &Digest,
        height: u64,
        index: u32,
    ) -> Result<Option<(u64, u32)>, Error> {
        let mut prefix = ENROLL_AT.to_vec();
        prefix.extend_from_slice(submitter.as_bytes());
        let mode = IteratorMode::From(&prefix, rocksdb::Direction::Forward);
        let mut found = None;
        for item in self.db.iterator_cf(self.cf(CF_META)?, mode) {
            let (k, _) = item?;
            let Some(at) = k.strip_prefix(prefix.as_slice()) else { break };
            let mut r = Reader::new(at, "enrollment key");
            let (h, i) = (r.u64()?, r.u32()?);
            r.finish()?;
            if (h, i) >= (height, index) {
                break;
            }
            found = Some((h, i));
        }
        Ok(found)
    }

    /// Checks a configuration transaction against the committed state, as its block will:
    /// `Ok` with the state it leads to, or the reason it would be refused.
    pub fn check_config(&self, tx: &Tx) -> Result<State, String> {
        let (Some(gov), Some(trust)) = (&self.gov, &self.trust) else {
            return Err("governance is off".into());
        };
        let Payload::Config(bytes) = &tx.body().payload else {
            return Err("not a configuration transaction".into());
        };
        let mut enrolled = |d: &Digest| self.certificate(d).ok().flatten();
        judge_config(
            gov,
            trust,
            bytes,
            &tx.body().submitter,
            at(tx.body().timestamp_ms),
            &mut enrolled,
        )
    }

    /// Whether `submitter` is admitted in `role` at `timestamp_ms` by the committed state: its
    /// enrolled certificate, the roots and the committed CRLs. `None` when admission is off.
    pub fn admit(
        &self,
        submitter: &Digest,
        role: CertProfile,
        timestamp_ms: u64,
    ) -> Result<Option<Decision>, Error> {
        let Some(trust) = &self.trust else { return Ok(None) };
        let Some(der) = self.db.get_pinned_cf(self.cf(CF_CERTS)?, submitter.as_bytes())? else {
            return Ok(Some(Decision::Deny(vpbox_ca::policy::DenyReason::NotEnrolled)));
        };
        Ok(Some(trust.admit(&der, role, at(timestamp_ms))))
    }

    /// Decides on a certificate (DER) as the committed state would: for enrollments.
    pub fn admit_certificate(
        &self,
        der: &[u8],
        role: CertProfile,
        timestamp_ms: u64,
    ) -> Option<Decision> {
        self.trust.as_ref().map(|t| t.admit(der, role, at(timestamp_ms)))
    }

    /// Whether a CRL (DER) would be accepted on top of the committed state.
    pub fn check_crl(&self, der: &[u8]) -> Result<(), String> {
        match &self.trust {
            Some(t) => t.clone().add_crl(der).map_err(|e| e.to_string()),
            None => Err("certificate admission is off".into()),
        }
    }

    /// Whether `submitter`'s enrolled certificate is admitted in one of `roles` at `when`
    /// (always, when admission is off).
    fn admitted_submitter(
        &self,
        trust: Option<&TrustStore>,
        submitter: &Digest,
        certs: &[(Digest, Vec<u8>)],
        above: &[Executed],
        roles: &[CertProfile],
        when: SystemTime,
    ) -> Result<bool, Error> {
        let Some(t) = trust else { return Ok(true) };
        let der = self.enrolled(submitter, certs, above)?;
        Ok(der.is_some_and(|der| admitted(t, &der, roles, when).is_some()))
    }

    /// The certificate `submitter` enrolled: in this block so far, a speculative block below
    /// it, or the committed state.
    fn enrolled(
        &self,
        submitter: &Digest,
        certs: &[(Digest, Vec<u8>)],
        above: &[Executed],
    ) -> Result<Option<Vec<u8>>, Error> {
        let latest = |c: &[(Digest, Vec<u8>)]| {
            c.iter().rev().find(|(k, _)| k == submitter).map(|(_, d)| d.clone())
        };
        if let Some(der) = latest(certs) {
            return Ok(Some(der));
        }
        if let Some(der) = above.iter().rev().find_map(|e| latest(&e.certs)) {
            return Ok(Some(der));
        }
        self.certificate(submitter)
    }

    /// Every committed CRL, in publication order, as it was published (the CRL's DER, followed
    /// by its issuing CA's chain when a bank issues from one): what a trust store is built from.
    pub fn crls(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_CRLS)?, IteratorMode::Start) {
            out.push(item?.1.to_vec());
        }
        Ok(out)
    }

    /// Every enrolled certificate (DER, with its issuing CA when it has one), for monitoring.
    /// Reads them all: called at most once a minute ([`crate`]'s users cache the summary).
    pub fn enrolled_certificates(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_CERTS)?, IteratorMode::Start) {
            out.push(item?.1.to_vec());
        }
        Ok(out)
    }

    /// The enrolled certificate of `submitter`, if any.
    pub fn certificate(&self, submitter: &Digest) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get_cf(self.cf(CF_CERTS)?, submitter.as_bytes())?)
    }

    /// Takes the state map's memory (its top levels, 277 MB) from the system at once
    /// ([`state::Top::populate`]): a node calls it after the open, so that its blocks do not
    /// take it one page fault at a time. A ledger opened for a tool, a test or the node
    /// simulator (many ledgers in one process, each with a few anchors) does not, and takes
    /// only the pages it writes.
    pub fn populate_state(&self) -> std::io::Result<()> {
        self.state.populate()
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, Error> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Error::Corrupt(format!("column family {name} missing")))
    }

    fn check_tip(&self) -> Result<Option<Header>, Error> {
        let Some(raw) = self.db.get_cf(self.cf(CF_META)?, TIP)? else { return Ok(None) };
        let mut r = Reader::new(&raw, "tip");
        let (height, hash) = (r.u64()?, Digest(r.array()?));
        let block = self
            .block(height)?
            .ok_or_else(|| Error::Corrupt(format!("tip block {height} missing")))?;
        if block.header.hash() != hash {
            return Err(Error::Corrupt(format!(
                "block {height} does not hash to the recorded tip"
            )));
        }
        if height > 0 {
            let parent = self
                .block(height - 1)?
                .ok_or_else(|| Error::Corrupt(format!("block {} missing", height - 1)))?;
            if parent.header.hash() != block.header.parent {
                return Err(Error::Corrupt(format!("block {height} does not link to its parent")));
            }
        }
        Ok(Some(block.header))
    }

    /// Checks the numbered transactions' table against the count committed with it and the
    /// tip: an entry lost or added on disk would otherwise go unseen until a record names it
    /// (or, lost last, until the next commit gave its number to another transaction).
    fn check_numbered(&self) -> Result<(), Error> {
        let count = match self.db.get_cf(self.cf(CF_META)?, NUMBERED)? {
            Some(raw) => {
                let mut r = Reader::new(&raw, "numbered count");
                let count = r.u64()?;
                r.finish()?;
                count
            }
            None => 0, // none given yet (or a ledger from before numbered records)
        };
        if count != self.numbered.next() {
            return Err(Error::Corrupt(format!(
                "{} numbered transactions in their table, {count} committed",
                self.numbered.next()
            )));
        }
        let tip = self.tip.map_or(0, |t| t.height);
        if let Some(last) = self.numbered.last_height()
            && (self.tip.is_none() || last > tip)
        {
            return Err(Error::Corrupt(format!(
                "a numbered transaction at height {last}, above the tip (block {tip})"
            )));
        }
        Ok(())
    }

    /// The tip's header, if any block is stored.
    pub fn tip(&self) -> Option<&Header> {
        self.tip.as_ref()
    }

    /// The chain height: blocks stored (0 when empty).
    pub fn height(&self) -> u64 {
        self.tip.map_or(0, |t| t.height + 1)
    }

    /// Writes block 0 of a fresh ledger (see [`Block::genesis`]); a ledger that has it already
    /// must hold the same one.
    pub fn init_genesis(&mut self, genesis: &Block) -> Result<(), Error> {
        if let Some(existing) = self.block(0)? {
            return if existing.header == genesis.header {
                Ok(())
            } else {
                Err(Error::Corrupt("this ledger was founded by a different genesis".into()))
            };
        }
        let executed = Executed {
            block: genesis.clone(),
            txs: Vec::new(),
            receipts: Vec::new(),
            anchors: HashMap::new(),
            certs: Vec::new(),
            crls: Vec::new(),
            governance: None,
            configs: Vec::new(),
            enrolls: Vec::new(),
            leaves: Vec::new(),
            state: Changes::default(),
        };
        let (batch, _) = self.batch(&executed, &[])?;
        BlockWrite { db: Arc::clone(&self.db), batch, height: 0 }.write()?;
        self.tip = Some(executed.block.header);
        Ok(())
    }

    /// Executes `txs` on top of `parent` and the speculative blocks `above` it (oldest first,
    /// above the tip: a block staged by [`Self::stage`] and not yet finished must be the first
    /// of them), without writing: the block, its receipts and its new anchors. Every honest node
    /// computes the same block from the same inputs.
    pub fn execute(&self, above: &[Executed], txs: Vec<Tx>) -> Result<Executed, Error> {
        without_perf_counters();
        if let Some(w) = &self.writing
            && above.first().is_none_or(|e| e.block.header.hash() != w.hash)
        {
            // Its keys and transactions would count as taken once its write lands and not
            // before: it is judged as one of `above`, the same either way.
            return Err(Error::NotNext {
                height: w.height + 1,
                why: format!("block {} is being written: execute above it", w.height),
            });
        }
        let parent = match above.last() {
            Some(e) => e.block.header,
            None => *self.tip.as_ref().ok_or_else(|| Error::Corrupt("no genesis block".into()))?,
        };
        let committed_tx = |h: &Digest| -> Result<bool, Error> {
            Ok(self.db.get_pinned_cf(self.cf(CF_TXS)?, h.as_bytes())?.is_some())
        };
        let tx_hashes: Vec<Digest> = txs.iter().map(Tx::hash).collect();
        // The transactions the speculative blocks below executed, and this block's so far: a
        // repeat of one is skipped. (A set: scanning the blocks' receipts for each transaction
        // was quadratic in the pipeline's depth, 6 % of a four-node cluster's CPU on the
        // signed path.)
        let mut executed_txs: HashSet<&Digest> =
            above.iter().flat_map(|e| e.receipts.iter().map(|(t, _)| t)).collect();
        let height = parent.height + 1;
        let mut anchors: HashMap<[u8; 32], ([u8; 32], Digest)> = HashMap::new();
        let mut receipts = Vec::new();
        let mut results = Vec::new();
        let mut timestamp_ms = parent.timestamp_ms;
        // Admission as of this block: the committed CRLs, then those of the speculative blocks
        // below it, then this block's own, in order. When a block below changed the
        // governance state (the last that did), its roots, with every CRL up to it, as
        // `set_governance` rebuilds the store once that block is committed: this block is
        // judged the same whether the blocks below it are committed yet or not.
        let mut trust = self.trust.clone();
        let mut after = 0;
        let last_change =
            above.iter().enumerate().rev().find_map(|(k, e)| e.governance.as_ref().map(|g| (k, g)));
        if let Some((k, g)) = last_change {
            trust = Some(self.trust_of(g, above[..=k].iter().flat_map(|e| &e.crls))?);
            after = k + 1;
        }
        if let Some(t) = &mut trust {
            for crl in above[after..].iter().flat_map(|e| &e.crls) {
                t.add_crl(crl).map_err(|e| Error::Corrupt(format!("speculative CRL: {e}")))?;
            }
        }
        let mut certs: Vec<(Digest, Vec<u8>)> = Vec::new();
        let mut crls: Vec<Vec<u8>> = Vec::new();
        // A governance state this block's configuration transactions produced (the state as of
        // a transaction is this, else a speculative block's below, else the committed one —
        // looked up only when a configuration transaction needs it).
        let mut changed: Option<State> = None;
        let mut configs = Vec::new();
        let mut enrolls = Vec::new();
        // A repeat of a transaction below or earlier in this block, or of a committed one, is
        // skipped; its keys are not looked up.
        let mut skipped = Vec::with_capacity(txs.len());
        for tx_hash in &tx_hashes {
            skipped.push(!executed_txs.insert(tx_hash) || committed_tx(tx_hash)?);
        }
        let run = txs.iter().zip(&skipped).filter(|(_, s)| !**s).map(|(tx, _)| tx);
        let stored = self.stored_anchors(run)?;
        for (((index, tx), tx_hash), skip) in txs.iter().enumerate().zip(&tx_hashes).zip(skipped) {
            timestamp_ms = timestamp_ms.max(tx.body().timestamp_ms);
            if skip {
                continue;
            }
            let tx_hash = *tx_hash;
            let submitter = &tx.body().submitter;
            let when = at(tx.body().timestamp_ms);
            // Who may do what (each refusal is `NotAdmitted`, the same at every node):
            // anchors need an enrolled POSP certificate admitted at the transaction's time;
            // a CRL needs an enrolled POSP or admin; an enrollment needs a POSP or admin
            // certificate for the very key that signed it.
            const ANYONE: [CertProfile; 2] = [CertProfile::Posp, CertProfile::Admin];
            let mut outcomes = Vec::new();
            let pairs: &[([u8; 32], [u8; 32])] = match &tx.body().payload {
                Payload::AnchorPut { key, value } => &[(*key, *value)],
                Payload::AnchorPutBatch(p) => p,
                Payload::Config(bytes) => {
                    let gov = changed
                        .clone()
                        .or_else(|| above.iter().rev().find_map(|e| e.governance.clone()))
                        .or_else(|| self.gov.clone());
                    let verdict = match (&gov, &trust) {
                        (Some(g), Some(t)) => {
                            let mut enrolled =
                                |d: &Digest| self.enrolled(d, &certs, above).ok().flatten();
                            judge_config(g, t, bytes, submitter, when, &mut enrolled)
                        }
                        _ => Err("governance is off".into()),
                    };
                    match verdict {
                        Ok(next) => {
                            // The roots changed: rebuild the trust store with every CRL so far.
                            let later = above.iter().flat_map(|e| &e.crls).chain(&crls);
                            trust = Some(self.trust_of(&next, later)?);
                            changed = Some(next);
                            configs.push(index as u32);
                            outcomes.push(PutOutcome::Success);
                        }
                        Err(_) => outcomes.push(PutOutcome::ConfigRefused),
                    }
                    &[]
                }
                Payload::Enroll(der) => {
                    let id = trust.as_ref().and_then(|t| admitted(t, der, &ANYONE, when));
                    // A key enrolled before may enroll again (a renewed certificate) only as
                    // the same name of the same bank: whichever of its enrollments a proof
                    // shows, the submitter it names is the one the ledger admitted.
                    let old = self.enrolled(submitter, &certs, above)?;
                    let same = |id: &Identity| {
                        old.as_ref().is_none_or(|old| {
                            vpbox_ca::cert::leaf_summary(old)
                                .is_ok_and(|o| o.name == id.name && o.bank == id.bank)
                        })
                    };
                    let ok = id.is_some_and(|id| id.key_fingerprint == *submitter && same(&id));
                    if ok {
                        certs.push((*submitter, der.clone()));
                        enrolls.push((*submitter, index as u32));
                    }
                    outcomes.push(if ok { PutOutcome::Success } else { PutOutcome::NotAdmitted });
                    &[]
                }
                Payload::Crl(der) => {
                    let ok = self.admitted_submitter(
                        trust.as_ref(),
                        submitter,
                        &certs,
                        above,
                        &ANYONE,
                        when,
                    )? && trust.as_mut().is_some_and(|t| t.add_crl(der).is_ok());
                    if ok {
                        crls.push(der.clone());
                    }
                    outcomes.push(if ok { PutOutcome::Success } else { PutOutcome::NotAdmitted });
                    &[]
                }
            };
            let posp = [CertProfile::Posp];
            let refused = !pairs.is_empty()
                && !self.admitted_submitter(
                    trust.as_ref(),
                    submitter,
                    &certs,
                    above,
                    &posp,
                    when,
                )?;
            for (key, value) in pairs {
                if refused {
                    outcomes.push(PutOutcome::NotAdmitted);
                    continue;
                }
                let exists = anchors.contains_key(key)
                    || above.iter().any(|e| e.anchors.contains_key(key))
                    || stored.contains(key);
                if exists {
                    outcomes.push(PutOutcome::KeyExists);
                } else {
                    anchors.insert(*key, (*value, tx_hash));
                    outcomes.push(PutOutcome::Success);
                }
            }
            results.push((tx_hash, outcomes.iter().map(|o| o.code()).collect()));
            receipts.push((tx_hash, Receipt { height, index: index as u32, outcomes }));
        }
        let mut records: Vec<Leaf> = anchors
            .iter()
            .map(|(key, (value, tx))| Leaf { key: *key, value: *value, tx: *tx, height })
            .collect();
        records.sort_unstable_by_key(|l| l.key);
        let chunks: Vec<&[Leaf]> = records
            .chunks(records.len().div_ceil(1 << split_depth(records.len())).max(1))
            .collect();
        let leaves: Vec<([u8; 32], Digest)> = parallel(&chunks, |c| {
            c.iter().map(|l| l.key).zip(Leaf::hash_each(c)).collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let state = self.state_changes(above, &leaves)?;
        let above_state: Vec<&Changes> = above.iter().map(|e| &e.state).collect();
        let header = Header {
            height,
            parent: parent.hash(),
            tx_root: merkle::root(&tx_hashes),
            results_root: results_root(&results),
            tx_count: tx_hashes.len() as u32,
            timestamp_ms,
            gov_seq: parent.gov_seq + configs.len() as u64,
            state_root: state.root(&self.state, &above_state),
        };
        let block = Block { header, tx_hashes, certificate: Vec::new() };
        Ok(Executed {
            block,
            txs,
            receipts,
            anchors,
            certs,
            crls,
            governance: changed,
            configs,
            enrolls,
            leaves,
            state,
        })
    }

    /// The state map's changes for a block whose new anchors are `leaves` (sorted), above the
    /// committed tip and `above`: each bucket it adds to is hashed again from the committed
    /// anchors in it (one seek in key order), the speculative blocks' and its own. A large
    /// block's keys are split by their first bits into parts ([`read_depth`], [`parallel`]):
    /// each part's buckets and levels up to its subtree's root are computed on its own
    /// thread, the levels above them here — the same changes whatever the split.
    fn state_changes(
        &self,
        above: &[Executed],
        leaves: &[([u8; 32], Digest)],
    ) -> Result<Changes, Error> {
        let above_state: Vec<&Changes> = above.iter().map(|e| &e.state).collect();
        let depth = read_depth(leaves.len());
        if depth == 0 {
            let buckets = self.hash_buckets(above, leaves)?;
            return Ok(Changes::compute(&self.state, &above_state, buckets));
        }
        // In index order, the parts without keys left out (they change nothing below `depth`).
        let mut parts = split_sorted(leaves, depth, |(k, _)| state::prefix(k, depth));
        parts.retain(|part| !part.is_empty());
        let parts = parallel(&parts, |part| {
            let buckets = self.hash_buckets(above, part)?;
            Ok(Changes::below(&self.state, &above_state, buckets, depth))
        })
        .into_iter()
        .collect::<Result<Vec<_>, Error>>()?;
        Ok(Changes::join(&self.state, &above_state, parts, depth))
    }

    /// The keys `txs` put that are committed anchors, looked up all at once before the contract
    /// runs: sorted, with RocksDB's MultiGet (each table file's filter and index consulted once
    /// for the batch), in parts on the machine's cores. One look-up per pair, in the pairs'
    /// order, was the longest serial part of a block's execution (a sixth of it in a catch-up
    /// at ten million anchors). The committed anchors do not change while a block executes.
    fn stored_anchors<'t>(
        &self,
        txs: impl Iterator<Item = &'t Tx>,
    ) -> Result<HashSet<[u8; 32]>, Error> {
        let mut keys: Vec<[u8; 32]> = Vec::new();
        for tx in txs {
            match &tx.body().payload {
                Payload::AnchorPut { key, .. } => keys.push(*key),
                Payload::AnchorPutBatch(pairs) => keys.extend(pairs.iter().map(|(k, _)| *k)),
                _ => {}
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let parts: Vec<&[[u8; 32]]> =
            keys.chunks(keys.len().div_ceil(1 << split_depth(keys.len())).max(1)).collect();
        let found = parallel(&parts, |part| -> Result<Vec<[u8; 32]>, Error> {
            let answers = self.db.batched_multi_get_cf(self.cf(CF_ANCHORS)?, part.iter(), true);
            let mut stored = Vec::new();
            for (key, answer) in part.iter().zip(answers) {
                if answer?.is_some() {
                    stored.push(*key);
                }
            }
            Ok(stored)
        });
        let mut stored = HashSet::new();
        for part in found {
            stored.extend(part?);
        }
        Ok(stored)
    }

    /// The new nodes of the buckets `leaves` (sorted) add to, by index: each hashed from the
    /// committed anchors in it, the speculative blocks' (`above`) and these. The committed
    /// anchors' leaves are read first and hashed together, [`LEAVES_AT_ONCE`] at a time, in
    /// SIMD lanes: at several anchors a bucket they are most of a block's hashing.
    fn hash_buckets(
        &self,
        above: &[Executed],
        leaves: &[([u8; 32], Digest)],
    ) -> Result<Vec<(u32, state::Node)>, Error> {
        let Some(first) = leaves.first() else { return Ok(Vec::new()) };
        let mut buckets = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(CF_ANCHORS)?);
        // Each bucket: its index, its hashed leaves' range in `hashed` and its committed
        // leaves' range in `committed`; hashed and emptied every LEAVES_AT_ONCE leaves of both.
        let mut parts = Vec::new();
        let mut hashed: Vec<([u8; 32], Digest)> = Vec::with_capacity(leaves.len());
        let mut committed: Vec<Leaf> = Vec::new();
        // One cursor per speculative block into its sorted leaves: the buckets come in order.
        let start = state::prefix(&first.0, TOP_DEPTH);
        let mut cursors: Vec<usize> = above
            .iter()
            .map(|e| e.leaves.partition_point(|(k, _)| state::prefix(k, TOP_DEPTH) < start))
            .collect();
        let mut i = 0;
        while i < leaves.len() {
            let b = state::prefix(&leaves[i].0, TOP_DEPTH);
            let end = i + leaves[i..].partition_point(|(k, _)| state::prefix(k, TOP_DEPTH) == b);
            let (hashed_from, committed_from) = (hashed.len(), committed.len());
            hashed.extend_from_slice(&leaves[i..end]);
            for (e, c) in above.iter().zip(cursors.iter_mut()) {
                while e.leaves.get(*c).is_some_and(|(k, _)| state::prefix(k, TOP_DEPTH) < b) {
                    *c += 1;
                }
                while let Some(l) =
                    e.leaves.get(*c).filter(|(k, _)| state::prefix(k, TOP_DEPTH) == b)
                {
                    hashed.push(*l);
                    *c += 1;
                }
            }
            // Committed anchors in this bucket, if the committed map has any there.
            let in_map = self.state.get(TOP_DEPTH, b) != state::Node::Empty;
            if in_map {
                it.seek(state::first_key(TOP_DEPTH, b));
            }
            while let (true, Some(k), Some(v)) = (in_map, it.key(), it.value()) {
                let Ok(key) = <[u8; 32]>::try_from(k) else {
                    return Err(Error::Corrupt("an anchor key is not 32 bytes".into()));
                };
                if state::prefix(&key, TOP_DEPTH) != b {
                    break;
                }
                if let Some(leaf) = self.numbered.committed_leaf(key, v, self.writing.as_ref())? {
                    committed.push(leaf);
                }
                it.next();
            }
            if in_map {
                it.status()?;
            }
            parts.push((b, hashed_from..hashed.len(), committed_from..committed.len()));
            i = end;
            if hashed.len() + committed.len() >= LEAVES_AT_ONCE || i == leaves.len() {
                hash_parts(&parts, &hashed, &committed, &mut buckets)?;
                parts.clear();
                hashed.clear();
                committed.clear();
            }
        }
        Ok(buckets)
    }

    /// The state map's top levels from every committed anchor (one scan in key order).
    fn rebuild_state(&self) -> Result<state::Top, Error> {
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_ANCHORS)?, scan_options());
        it.seek_to_first();
        Ok(build_top(scan_buckets(&mut it, &self.numbered, |_| true, || {})?))
    }

    /// The path of `key` in the state map as of the tip: its first value, or its absence,
    /// against the tip's `state_root`.
    pub fn state_path(&self, key: &[u8; 32]) -> Result<(Header, state::Path), Error> {
        let tip = *self.tip.as_ref().ok_or_else(|| Error::Corrupt("no genesis block".into()))?;
        let read = |depth: usize, index: u32| -> Result<Vec<Leaf>, Error> {
            let mut out = Vec::new();
            let mut it = self.db.raw_iterator_cf(self.cf(CF_ANCHORS)?);
            it.seek(state::first_key(depth, index));
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let Ok(key) = <[u8; 32]>::try_from(k) else {
                    return Err(Error::Corrupt("an anchor key is not 32 bytes".into()));
                };
                if state::prefix(&key, depth) != index {
                    break;
                }
                if let Some(leaf) = self.numbered.committed_leaf(key, v, self.writing.as_ref())? {
                    out.push(leaf);
                }
                it.next();
            }
            it.status()?;
            Ok(out)
        };
        let path = state::Path::build(&self.state, key, read, |why| Error::Corrupt(why.into()))?;
        Ok((tip, path))
    }

    /// Makes `executed` (the block right above the tip) durable with its commit certificate,
    /// in one synced write batch: [`Self::stage`], [`BlockWrite::write`], [`Self::finish`].
    pub fn commit(&mut self, executed: &Executed, certificate: &[u8]) -> Result<(), Error> {
        let write = self.stage(executed, certificate)?;
        match write.write() {
            Ok(written) => self.finish(executed, written),
            Err(e) => {
                self.writing = None;
                Err(e)
            }
        }
    }

    /// Stages `executed` (the block right above the tip) for its synced write, with its
    /// commit certificate: the write batch, to be carried out by [`BlockWrite::write`] beside
    /// the execution of the blocks above it, then [`Self::finish`]ed. Until then the tip stays
    /// where it is and every reader of the ledger leaves the block's records out (an anchor, a
    /// bucket's leaves, a transaction, a receipt, the block itself): it reads the ledger as of
    /// the tip whether the write has landed or not. One block at a time.
    pub fn stage(&mut self, executed: &Executed, certificate: &[u8]) -> Result<BlockWrite, Error> {
        let h = &executed.block.header;
        if let Some(w) = &self.writing {
            return Err(Error::NotNext {
                height: h.height,
                why: format!("block {} is still being written", w.height),
            });
        }
        let next = self.height();
        if h.height != next {
            return Err(Error::NotNext { height: h.height, why: format!("expected {next}") });
        }
        if Some(h.parent) != self.tip.map(|t| t.hash()) {
            return Err(Error::NotNext {
                height: h.height,
                why: "parent hash differs from the tip".into(),
            });
        }
        if executed.state.root(&self.state, &[]) != h.state_root {
            // Executed against another state than the one it would extend.
            return Err(Error::Corrupt(format!(
                "block {}'s state root does not follow from the committed state map",
                h.height
            )));
        }
        if self.checkpoint_kept {
            // Stale from this block on. Should the removal fail, the file is refused as not of
            // the tip at the next open (and removed then).
            let _ = std::fs::remove_file(self.dir.join(STATE_CHECKPOINT));
            self.checkpoint_kept = false;
        }
        let (batch, numbered) = self.batch(executed, certificate)?;
        let first = self.numbered.next();
        self.writing = Some(Writing {
            height: h.height,
            hash: h.hash(),
            numbers: first..first + numbered.len() as u64,
            numbered,
        });
        Ok(BlockWrite { db: Arc::clone(&self.db), batch, height: h.height })
    }

    /// Finishes the block staged by [`Self::stage`] once its write landed (`written`): the tip,
    /// the state map, the numbered transactions and the trust state advance to it.
    pub fn finish(&mut self, executed: &Executed, written: Written) -> Result<(), Error> {
        let h = &executed.block.header;
        let Some(w) = self.writing.take_if(|w| w.height == written.height && w.hash == h.hash())
        else {
            return Err(Error::NotNext {
                height: h.height,
                why: "not the block being written".into(),
            });
        };
        for tx in w.numbered {
            self.numbered.push(h.height, tx);
        }
        self.tip = Some(*h);
        self.state.apply(&executed.state);
        if let Some(state) = &executed.governance {
            // Roots may have changed: the store is rebuilt from the new state and every CRL.
            self.set_governance(state.clone())?;
        } else if let Some(t) = &mut self.trust {
            for crl in &executed.crls {
                t.add_crl(crl).map_err(|e| Error::Corrupt(format!("committed CRL: {e}")))?;
            }
        }
        if executed.governance.is_some() || !executed.crls.is_empty() {
            self.trust_changes.bump();
        }
        Ok(())
    }

    /// The counter of commits that changed the trust state, to wait on outside the ledger's
    /// lock.
    pub fn trust_changes(&self) -> Arc<TrustChanges> {
        Arc::clone(&self.trust_changes)
    }

    /// The synced write batch of `executed`, and the transactions it numbers, in order.
    fn batch(
        &self,
        executed: &Executed,
        certificate: &[u8],
    ) -> Result<(WriteBatch, Vec<Digest>), Error> {
        let h = &executed.block.header;
        if executed.leaves.len() != executed.anchors.len() {
            return Err(Error::Corrupt(format!(
                "block {}: {} anchors but {} state leaves",
                h.height,
                executed.anchors.len(),
                executed.leaves.len()
            )));
        }
        let mut batch = WriteBatch::default();
        // The transactions that anchor NUMBERED_FROM keys or more here get the next numbers,
        // in block order, and their anchors' records name them by number (`record`). A put's
        // anchors in this block are its receipt's `Success` outcomes (one per pair it
        // anchored; a pair whose key was taken is `KeyExists`); any other transaction has a
        // single outcome, so it never reaches the threshold.
        let mut numbers: HashMap<Digest, u64> = HashMap::new();
        let mut numbered: Vec<Digest> = Vec::new();
        for (tx, receipt) in &executed.receipts {
            const _: () = assert!(NUMBERED_FROM > 1, "a lone outcome must never be numbered");
            let anchored = receipt.outcomes.iter().filter(|o| **o == PutOutcome::Success).count();
            if anchored >= NUMBERED_FROM {
                if let Entry::Vacant(e) = numbers.entry(*tx) {
                    let number = self.numbered.next() + numbered.len() as u64;
                    let (k, v) = Numbered::entry(number, h.height, tx);
                    batch.put_cf(self.cf(CF_ANCHOR_TXS)?, k, v);
                    e.insert(number);
                    numbered.push(*tx);
                }
            }
        }
        if !numbered.is_empty() {
            let count = self.numbered.next() + numbered.len() as u64;
            batch.put_cf(self.cf(CF_META)?, NUMBERED, count.to_be_bytes());
        }
        // In key order (the leaves are sorted): the memtable's skip list inserts a sorted run
        // from where the last insert ended instead of searching from the top for each.
        let anchors =
            executed.leaves.iter().filter_map(|(k, _)| executed.anchors.get(k).map(|a| (k, a)));
        for (key, (value, tx)) in anchors {
            let rec = match numbers.get(tx) {
                Some(number) => record::numbered(value, *number),
                None => record::inline(value, tx, h.height),
            };
            batch.put_cf(self.cf(CF_ANCHORS)?, key, rec);
        }
        for (tx_hash, receipt) in &executed.receipts {
            let tx = executed
                .txs
                .get(receipt.index as usize)
                .ok_or_else(|| Error::Corrupt("receipt index out of range".into()))?;
            let codes = receipt.outcomes.iter().map(|o| o.code());
            let rec = txrecord::encode(h.height, receipt.index, codes, &tx.encode());
            batch.put_cf(self.cf(CF_TXS)?, tx_hash.as_bytes(), rec);
        }
        for (key, der) in &executed.certs {
            batch.put_cf(self.cf(CF_CERTS)?, key.as_bytes(), der);
        }
        for (key, index) in &executed.enrolls {
            let mut k = ENROLL_AT.to_vec();
            k.extend_from_slice(key.as_bytes());
            k.extend_from_slice(&h.height.to_be_bytes());
            k.extend_from_slice(&index.to_be_bytes());
            batch.put_cf(self.cf(CF_META)?, k, []);
        }
        for (i, der) in executed.crls.iter().enumerate() {
            let mut key = h.height.to_be_bytes().to_vec();
            key.extend_from_slice(&(i as u32).to_be_bytes());
            batch.put_cf(self.cf(CF_CRLS)?, key, der);
        }
        if let Some(state) = &executed.governance {
            if let Some(members) = self.gov.as_ref().and_then(|g| executed.node_change(g)) {
                let mut key = NODES_AT.to_vec();
                key.extend_from_slice(&h.height.to_be_bytes());
                let mut v = (members.len() as u32).to_be_bytes().to_vec();
                for (id, k) in &members {
                    v.extend_from_slice(&id.to_be_bytes());
                    v.extend_from_slice(k);
                }
                batch.put_cf(self.cf(CF_META)?, key, v);
            }
            batch.put_cf(self.cf(CF_META)?, GOVERNANCE, state.encode());
            let mut key = CONFIG_AT.to_vec();
            key.extend_from_slice(&h.height.to_be_bytes());
            let mut v = (executed.configs.len() as u32).to_be_bytes().to_vec();
            for i in &executed.configs {
                v.extend_from_slice(&i.to_be_bytes());
            }
            batch.put_cf(self.cf(CF_META)?, key, v);
        }
        let mut block = executed.block.clone();
        block.certificate = certificate.to_vec();
        let hash = h.hash();
        batch.put_cf(self.cf(CF_BLOCKS)?, h.height.to_be_bytes(), block.encode());
        batch.put_cf(self.cf(CF_BLOCK_INDEX)?, hash.as_bytes(), h.height.to_be_bytes());
        let mut tip = h.height.to_be_bytes().to_vec();
        tip.extend_from_slice(hash.as_bytes());
        batch.put_cf(self.cf(CF_META)?, TIP, tip);
        Ok((batch, numbered))
    }

    /// Whether `height` is the block being written ([`Self::stage`]), whose records readers
    /// leave out.
    fn is_writing(&self, height: u64) -> bool {
        self.writing.as_ref().is_some_and(|w| w.height == height)
    }

    /// The anchor at `key`, if any.
    pub fn anchor(&self, key: &[u8; 32]) -> Result<Option<AnchorRecord>, Error> {
        let Some(raw) = self.db.get_pinned_cf(self.cf(CF_ANCHORS)?, key)? else { return Ok(None) };
        let leaf = self.numbered.committed_leaf(*key, &raw, self.writing.as_ref())?;
        Ok(leaf.map(|Leaf { value, tx, height, .. }| AnchorRecord { value, tx, height }))
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, Error> {
        if self.is_writing(height) {
            return Ok(None);
        }
        match self.db.get_pinned_cf(self.cf(CF_BLOCKS)?, height.to_be_bytes())? {
            Some(raw) => Ok(Some(Block::decode(&raw).map_err(|e| Error::Corrupt(e.to_string()))?)),
            None => Ok(None),
        }
    }

    /// The header of the block at `height` (without decoding the rest of the block).
    pub fn header(&self, height: u64) -> Result<Option<Header>, Error> {
        if self.is_writing(height) {
            return Ok(None);
        }
        match self.db.get_pinned_cf(self.cf(CF_BLOCKS)?, height.to_be_bytes())? {
            Some(raw) => {
                let head = raw
                    .get(..crate::block::HEADER_LEN)
                    .ok_or_else(|| Error::Corrupt("short block".into()))?;
                Ok(Some(Header::decode_exact(head).map_err(|e| Error::Corrupt(e.to_string()))?))
            }
            None => Ok(None),
        }
    }

    /// The block with hash `hash`.
    pub fn block_by_hash(&self, hash: &Digest) -> Result<Option<Block>, Error> {
        match self.db.get_pinned_cf(self.cf(CF_BLOCK_INDEX)?, hash.as_bytes())? {
            Some(raw) => self.block(Reader::new(&raw, "block index").u64()?),
            None => Ok(None),
        }
    }

    /// A committed transaction and where it is.
    pub fn transaction(&self, hash: &Digest) -> Result<Option<(u64, u32, Tx)>, Error> {
        let Some(raw) = self.db.get_pinned_cf(self.cf(CF_TXS)?, hash.as_bytes())? else {
            return Ok(None);
        };
        let rec = txrecord::decode(&raw)?;
        if self.is_writing(rec.height) {
            return Ok(None);
        }
        let tx = Tx::decode(rec.tx).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(Some((rec.height, rec.index, tx)))
    }

    /// A transaction's receipt: from its record in `txs`, or for a transaction committed
    /// before receipts moved there, from the `receipts` family ([`txrecord`]).
    pub fn receipt(&self, hash: &Digest) -> Result<Option<Receipt>, Error> {
        let Some(raw) = self.db.get_pinned_cf(self.cf(CF_TXS)?, hash.as_bytes())? else {
            return Ok(None);
        };
        let rec = txrecord::decode(&raw)?;
        if self.is_writing(rec.height) {
            return Ok(None);
        }
        let (height, index, codes) = match rec.codes {
            Some(codes) => (rec.height, rec.index, codes),
            None => {
                let Some(old) = self.db.get_pinned_cf(self.cf(CF_RECEIPTS)?, hash.as_bytes())?
                else {
                    return Err(Error::Corrupt(format!(
                        "transaction {} has no receipt",
                        hash.to_hex()
                    )));
                };
                let mut r = Reader::new(&old, "receipt");
                let (height, index) = (r.u64()?, r.u32()?);
                (height, index, r.take(r.rest_len())?.to_vec())
            }
        };
        let outcomes = codes
            .iter()
            .map(|c| {
                PutOutcome::from_code(*c).ok_or_else(|| Error::Corrupt("bad outcome code".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Receipt { height, index, outcomes }))
    }
}

#[cfg(test)]
mod tests {
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;
    use crate::contract::{self, PutOutcome::*};
    use crate::tx::TxBody;

    fn tx(s: &SoftwareSigner, nonce: u64, payload: Payload) -> Tx {
        TxBody { submitter: s.public_key().fingerprint(), nonce, timestamp_ms: 1, payload }
            .sign(s)
            .unwrap()
    }

    fn put(s: &SoftwareSigner, nonce: u64, k: u8, v: u8) -> Tx {
        tx(s, nonce, Payload::AnchorPut { key: [k; 32], value: [v; 32] })
    }

    fn open(path: &Path) -> Ledger {
        let mut ledger = Ledger::open(path).unwrap();
        ledger.init_genesis(&Block::genesis(vpbox_sm::sm3::hash(b"test genesis"), 0)).unwrap();
        ledger
    }

    fn commit(ledger: &mut Ledger, txs: &[Tx]) -> Vec<(Digest, Receipt)> {
        let executed = ledger.execute(&[], txs.to_vec()).unwrap();
        ledger.commit(&executed, b"certificate").unwrap();
        executed.receipts
    }

    #[test]
    fn the_top_levels_built_on_the_cores_are_the_ones_built_on_one() {
        // Buckets spread over the whole range, then all in the first half (the other parts
        // empty), then too few to split: each as `Top::build` makes them.
        let node = |i: u32| {
            let h = vpbox_sm::sm3::hash(i.to_be_bytes());
            if i % 3 == 0 { state::Node::Leaf(h) } else { state::Node::Inner(h) }
        };
        let spread: Vec<u32> = (0..3 * PARALLEL_MIN as u32).map(|i| i * 163 + i % 7).collect();
        let low: Vec<u32> = (0..3 * PARALLEL_MIN as u32).map(|i| i * 5).collect();
        let few: Vec<u32> = vec![0, 1, (1 << TOP_DEPTH) - 1];
        // In 2, 4 and 8 parts, whatever this machine's cores.
        for (indices, depth) in [spread, low, few].iter().flat_map(|i| (1..=3).map(move |d| (i, d)))
        {
            let buckets: Vec<(u32, state::Node)> = indices.iter().map(|&i| (i, node(i))).collect();
            let one = state::Top::build(buckets.clone());
            let cores = build_top_in(buckets.clone(), depth);
            assert_eq!(cores.root(), one.root());
            for level in 0..=TOP_DEPTH {
                for &i in indices.iter().step_by(97) {
                    let index = i >> (TOP_DEPTH - level);
                    assert_eq!(cores.get(level, index), one.get(level, index), "{level} {index}");
                }
            }
            assert!(cores.buckets().eq(buckets.iter().copied()));
        }
    }

    #[test]
    fn anchors_are_write_once_with_the_seeds_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let r = commit(&mut ledger, &[put(&s, 1, 1, 10), put(&s, 2, 1, 11)]);
        assert_eq!(r[0].1.outcomes, vec![Success]);
        assert_eq!(r[1].1.outcomes, vec![KeyExists], "the second put in the same block loses");
        assert_eq!(KeyExists.answer(), (false, "the key exist"));
        let r = commit(&mut ledger, &[put(&s, 3, 1, 12), put(&s, 4, 2, 20)]);
        assert_eq!(r[0].1.outcomes, vec![KeyExists]);
        assert_eq!(r[1].1.outcomes, vec![Success]);
        let rec = ledger.anchor(&[1; 32]).unwrap().unwrap();
        assert_eq!((rec.value, rec.height), ([10; 32], 1), "the old value stays");
        assert_eq!(contract::get_answer(Some(rec.value)), (true, "Success", [10; 32]));
        assert_eq!(ledger.anchor(&[9; 32]).unwrap(), None);
        assert_eq!(contract::get_answer(None), (false, "the key is not exist", [0; 32]));
    }

    /// A receipt read back from the store (what `anchor_getReceipt`-style reads serve) carries
    /// every outcome the block's execution gave, in order — one per pair of a batch — with the
    /// seed's answers (the table of contract.rs's module docs) for each.
    #[test]
    fn receipts_read_back_with_each_outcome_of_their_execution() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let txs = vec![
            put(&s, 1, 1, 10),
            put(&s, 2, 1, 11),
            tx(&s, 3, Payload::AnchorPutBatch(vec![([2; 32], [1; 32]), ([1; 32], [1; 32])])),
            tx(&s, 4, Payload::Enroll(b"not a certificate".to_vec())),
            tx(&s, 5, Payload::Crl(b"not a CRL".to_vec())),
            tx(&s, 6, Payload::Config(b"not a configuration".to_vec())),
        ];
        let executed = commit(&mut ledger, &txs);
        let expected = [
            vec![Success],
            vec![KeyExists],
            vec![Success, KeyExists],
            vec![NotAdmitted],
            vec![NotAdmitted],
            vec![ConfigRefused],
        ];
        for (i, (t, want)) in txs.iter().zip(&expected).enumerate() {
            let (hash, receipt) = &executed[i];
            assert_eq!(*hash, t.hash());
            assert_eq!(&receipt.outcomes, want, "executed, tx {i}");
            let back = ledger.receipt(&t.hash()).unwrap().unwrap();
            assert_eq!((back.height, back.index), (1, i as u32), "tx {i}");
            assert_eq!(&back.outcomes, want, "read back, tx {i}");
        }
        let answers: Vec<_> =
            [Success, KeyExists, NotAdmitted, ConfigRefused].iter().map(|o| o.answer()).collect();
        assert_eq!(
            answers,
            [
                (true, "Success"),
                (false, "the key exist"),
                (false, "the submitter is not admitted"),
                (false, "the configuration change is refused"),
            ]
        );
        assert!(ledger.receipt(&put(&s, 9, 9, 9).hash()).unwrap().is_none());
    }

    #[test]
    fn rocksdbs_information_log_is_bounded_and_the_filters_are_ribbon() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        // The options RocksDB took, as it wrote them down at open.
        let options = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("OPTIONS-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .max_by_key(String::len)
            .unwrap();
        let set = |line: &str| options.lines().any(|l| l.trim() == line);
        assert!(set(&format!("max_log_file_size={ENGINE_LOG_MAX}")), "{options}");
        assert!(set(&format!("keep_log_file_num={ENGINE_LOGS_KEPT}")), "{options}");
        // Each family looked up by key: a Ribbon filter (RocksDB names it by its bloom
        // equivalent bits).
        let ribbon = options.lines().filter(|l| l.contains("filter_policy=ribbonfilter")).count();
        assert_eq!(ribbon, 5, "{options}");
    }

    #[test]
    fn transactions_and_receipts_written_before_read_back_beside_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let old = [put(&s, 1, 1, 10), put(&s, 2, 1, 11)];
        let new = put(&s, 3, 2, 12);
        {
            let mut ledger = open(dir.path());
            commit(&mut ledger, &old);
            // Block 1's records as a ledger from before wrote them: the place and the
            // transaction in `txs`, the receipt in `receipts`.
            for (i, t) in old.iter().enumerate() {
                let mut loc = 1u64.to_be_bytes().to_vec();
                loc.extend_from_slice(&(i as u32).to_be_bytes());
                let txs = ledger.db.cf_handle(CF_TXS).unwrap();
                ledger
                    .db
                    .put_cf(txs, t.hash().as_bytes(), [&loc[..], &t.encode()].concat())
                    .unwrap();
                let receipts = ledger.db.cf_handle(CF_RECEIPTS).unwrap();
                ledger
                    .db
                    .put_cf(receipts, t.hash().as_bytes(), [&loc[..], &[i as u8]].concat())
                    .unwrap();
            }
        }
        let mut ledger = Ledger::open(dir.path()).unwrap();
        commit(&mut ledger, std::slice::from_ref(&new));
        for (t, height, index, outcome) in
            [(&old[0], 1, 0, Success), (&old[1], 1, 1, KeyExists), (&new, 2, 0, Success)]
        {
            let r = ledger.receipt(&t.hash()).unwrap().unwrap();
            assert_eq!((r.height, r.index, r.outcomes), (height, index, vec![outcome]));
            assert_eq!(ledger.transaction(&t.hash()).unwrap().unwrap(), (height, index, t.clone()));
        }
        // The new record holds its receipt: nothing was written to `receipts`.
        let receipts = ledger.db.cf_handle(CF_RECEIPTS).unwrap();
        assert!(ledger.db.get_cf(receipts, new.hash().as_bytes()).unwrap().is_none());
        // A record from before whose receipt is missing is corruption, said so.
        ledger.db.delete_cf(receipts, old[0].hash().as_bytes()).unwrap();
        let err = ledger.receipt(&old[0].hash()).unwrap_err();
        assert!(matches!(err, Error::Corrupt(ref m) if m.contains("has no receipt")), "{err}");
    }

    /// RocksDB's performance counters are off ([`without_perf_counters`]) on a thread that
    /// executed a block, and on another that wrote one, as the driver and the `ledger-write`
    /// thread do: a write on either counts no key comparison, where the same write counting
    /// (the default of a new thread) counts some.
    #[test]
    fn executing_or_writing_a_block_leaves_rocksdb_counting_nothing() {
        use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let probe = |db: &DB, key: &[u8]| {
            let mut ctx = PerfContext::default();
            ctx.reset();
            db.put_cf(db.cf_handle(CF_META).unwrap(), key, b"probe").unwrap();
            ctx.metric(PerfMetric::UserKeyComparisonCount)
        };
        set_perf_stats(PerfStatsLevel::EnableCount);
        assert!(probe(&ledger.db, b"probe 1") > 0, "the control: counting, a write counts");
        let executed = ledger.execute(&[], vec![put(&s, 1, 5, 50)]).unwrap();
        assert_eq!(probe(&ledger.db, b"probe 2"), 0, "after executing a block, nothing");
        let write = ledger.stage(&executed, b"certificate").unwrap();
        let db = ledger.db.clone();
        let (written, counted) = std::thread::spawn(move || {
            set_perf_stats(PerfStatsLevel::EnableCount);
            let control = probe(&db, b"probe 3");
            let written = write.write().unwrap();
            (written, (control, probe(&db, b"probe 4")))
        })
        .join()
        .unwrap();
        assert!(counted.0 > 0, "the control on the writing thread");
        assert_eq!(counted.1, 0, "after writing a block, nothing");
        ledger.finish(&executed, written).unwrap();
    }

    #[test]
    fn batches_get_a_result_per_pair_and_transactions_execute_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let first = put(&s, 1, 5, 50);
        commit(&mut ledger, std::slice::from_ref(&first));
        let batch = tx(
            &s,
            2,
            Payload::AnchorPutBatch(vec![
                ([5; 32], [1; 32]),
                ([6; 32], [60; 32]),
                ([6; 32], [61; 32]),
            ]),
        );
        let r = commit(&mut ledger, std::slice::from_ref(&batch));
        assert_eq!(r[0].1.outcomes, vec![KeyExists, Success, KeyExists]);
        // The same transactions again (a replay, or a resubmission after a crash) are skipped.
        let r = commit(&mut ledger, &[first.clone(), batch.clone()]);
        assert!(r.is_empty());
        assert_eq!(
            ledger.receipt(&batch.hash()).unwrap().unwrap().height,
            2,
            "the first receipt stands"
        );
        assert_eq!(ledger.transaction(&first.hash()).unwrap().unwrap().2, first);
        assert_eq!(ledger.height(), 4, "genesis and three blocks");
        // Twice in one block, or again above a speculative block that executed it: once.
        let (third, fourth) = (put(&s, 3, 7, 70), put(&s, 4, 8, 80));
        let e = ledger.execute(&[], vec![third.clone(), third.clone()]).unwrap();
        assert_eq!(e.receipts.len(), 1);
        assert_eq!(e.receipts[0].0, third.hash());
        let above = ledger.execute(std::slice::from_ref(&e), vec![fourth.clone(), third]).unwrap();
        let executed: Vec<Digest> = above.receipts.iter().map(|(h, _)| *h).collect();
        assert_eq!(executed, vec![fourth.hash()]);
        assert_eq!(above.block.tx_hashes.len(), 2, "the block still lists what it was given");
    }

    /// The state root follows every anchor, speculative blocks included; a key's path proves
    /// its first value or its absence against the tip; the map is rebuilt at open, and an
    /// anchor record changed on disk stops the open.
    #[test]
    fn the_state_root_proves_first_values_and_absence_and_guards_the_anchors() {
        use crate::state::{Lookup, Terminal};
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let pairs: Vec<([u8; 32], [u8; 32])> =
            (0..300u32).map(|i| (vpbox_sm::sm3::hash(i.to_be_bytes()).0, [i as u8; 32])).collect();
        let root = {
            let mut ledger = open(dir.path());
            assert_eq!(ledger.tip().unwrap().state_root, state::ZERO);
            commit(&mut ledger, &[tx(&s, 1, Payload::AnchorPutBatch(pairs[..100].to_vec()))]);
            let first = ledger
                .execute(&[], vec![tx(&s, 2, Payload::AnchorPutBatch(pairs[100..200].to_vec()))])
                .unwrap();
            let second = ledger
                .execute(
                    std::slice::from_ref(&first),
                    vec![tx(&s, 3, Payload::AnchorPutBatch(pairs[150..].to_vec()))],
                )
                .unwrap();
            ledger.commit(&first, b"c").unwrap();
            ledger.commit(&second, b"c").unwrap();
            // The same anchors at other heights give another root: a leaf names its block.
            let other = tempfile::tempdir().unwrap();
            let one = open(other.path());
            let all: Vec<Tx> = [(1, 0..100), (2, 100..200), (3, 200..300)]
                .into_iter()
                .map(|(n, r)| tx(&s, n, Payload::AnchorPutBatch(pairs[r].to_vec())))
                .collect();
            let e = one.execute(&[], all).unwrap();
            assert_ne!(e.block.header.state_root, second.block.header.state_root, "heights differ");
            let tip = *ledger.tip().unwrap();
            for (i, (k, v)) in pairs.iter().enumerate() {
                let (h, path) = ledger.state_path(k).unwrap();
                assert_eq!(h, tip);
                let (root, what) = path.evaluate(k).unwrap();
                assert_eq!(root, tip.state_root);
                let Lookup::Present(leaf) = what else { panic!("key {i} absent") };
                assert_eq!(leaf.value, *v);
                assert_eq!(leaf.height, 1 + (i as u64) / 100, "key {i}: its first block");
            }
            for i in 300..400u32 {
                let k = vpbox_sm::sm3::hash(i.to_be_bytes()).0;
                let (_, path) = ledger.state_path(&k).unwrap();
                assert_eq!(path.evaluate(&k).unwrap(), (tip.state_root, Lookup::Absent));
                assert!(
                    !matches!(path.terminal, Terminal::Leaf(l) if l.key == k),
                    "an absent key's path ends elsewhere"
                );
            }
            tip.state_root
        };
        let mut ledger = open(dir.path());
        assert_eq!(ledger.state.root(), root, "rebuilt at open");
        // A later block extends the rebuilt map.
        commit(&mut ledger, &[put(&s, 9, 7, 7)]);
        let k = [7u8; 32];
        let (tip, path) = ledger.state_path(&k).unwrap();
        assert!(
            matches!(path.evaluate(&k).unwrap(), (r, Lookup::Present(_)) if r == tip.state_root)
        );
        // An anchor's value changed on disk: the next open refuses the ledger.
        let cf = ledger.cf(CF_ANCHORS).unwrap();
        let mut rec = ledger.db.get_cf(cf, pairs[5].0).unwrap().unwrap();
        rec[0] ^= 1;
        ledger.db.put_cf(cf, pairs[5].0, rec).unwrap();
        drop(ledger);
        let Err(err) = Ledger::open(dir.path()) else { panic!("a changed anchor was opened") };
        assert!(err.to_string().contains("state root"), "{err}");
        // Anchors in a ledger without a block: not the empty map block 0 would need.
        let bare = tempfile::tempdir().unwrap();
        {
            let l = Ledger::open(bare.path()).unwrap();
            let cf = l.cf(CF_ANCHORS).unwrap();
            l.db.put_cf(cf, [1u8; 32], [0u8; 72]).unwrap();
        }
        let Err(err) = Ledger::open(bare.path()) else { panic!("stray anchors were opened") };
        assert!(err.to_string().contains("block 0's state root"), "{err}");
    }

    /// A clean stop's checkpoint opens the map without a scan until the next block commits,
    /// and only when it is of the tip and hashes to its state root; any other is refused with
    /// its reason, removed, and the map is rebuilt from the anchors as without one.
    #[test]
    fn the_state_checkpoint_is_used_until_the_next_block_and_only_when_it_is_the_tips() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(STATE_CHECKPOINT);
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let pairs: Vec<([u8; 32], [u8; 32])> =
            (0..500u32).map(|i| (vpbox_sm::sm3::hash(i.to_be_bytes()).0, [i as u8; 32])).collect();
        let reopen = |why: Option<&str>| {
            let l = Ledger::open(dir.path()).unwrap();
            match (why, l.state_source()) {
                (None, StateSource::Checkpoint) => {}
                // "": none found; "*": any refusal; otherwise the refusal's words.
                (Some(""), StateSource::Scan { refused: None }) => {}
                (Some(w), StateSource::Scan { refused: Some(r) })
                    if !w.is_empty() && (w == "*" || r.contains(w)) => {}
                (w, got) => panic!("expected {w:?}, got {got:?}"),
            }
            assert_eq!(file.exists(), why.is_none(), "a refused checkpoint is removed");
            l
        };
        let ledger = open(dir.path());
        ledger.save_state().unwrap();
        drop(ledger);
        let mut ledger = reopen(None);
        assert_eq!(ledger.state.root(), state::ZERO, "block 0's empty map");
        commit(&mut ledger, &[tx(&s, 1, Payload::AnchorPutBatch(pairs[..300].to_vec()))]);
        let root = ledger.tip().unwrap().state_root;
        ledger.save_state().unwrap();
        drop(ledger);
        drop(reopen(None));
        // A start that failed after the open (its signer down, say) opens from it again.
        let mut ledger = reopen(None);
        assert_eq!(ledger.state.root(), root);
        // Paths and the next block work on the loaded map as on a scanned one; that block
        // makes the checkpoint stale, and it goes.
        let (tip, path) = ledger.state_path(&pairs[7].0).unwrap();
        assert_eq!(path.evaluate(&pairs[7].0).unwrap().0, tip.state_root);
        commit(&mut ledger, &[tx(&s, 2, Payload::AnchorPutBatch(pairs[250..400].to_vec()))]);
        assert!(!file.exists(), "removed by the first commit");
        let root = ledger.tip().unwrap().state_root;
        drop(ledger);
        let mut ledger = reopen(Some(""));
        assert_eq!(ledger.state.root(), root, "no checkpoint: a scan");
        // A checkpoint of an earlier block (a stop that was not clean came after it).
        ledger.save_state().unwrap();
        let stale = std::fs::read(&file).unwrap();
        commit(&mut ledger, &[tx(&s, 3, Payload::AnchorPutBatch(pairs[400..].to_vec()))]);
        let root = ledger.tip().unwrap().state_root;
        drop(ledger);
        std::fs::write(&file, &stale).unwrap();
        let ledger = reopen(Some("not of the tip"));
        assert_eq!(ledger.state.root(), root);
        ledger.save_state().unwrap();
        let good = std::fs::read(&file).unwrap();
        drop(ledger);
        // A damaged one: every byte changed in turn is refused (a sample of the positions).
        for at in (0..good.len()).step_by(good.len() / 40) {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            std::fs::write(&file, &bad).unwrap();
            assert_eq!(reopen(Some("*")).state.root(), root, "byte {at} changed");
        }
        // Whole and well formed, but not the tip's map: a bucket dropped.
        let mut c = state::Checkpoint::decode(&good).unwrap();
        c.buckets.pop();
        std::fs::write(&file, c.encode()).unwrap();
        assert_eq!(reopen(Some("do not hash")).state.root(), root);
        std::fs::write(&file, &good[..good.len() - 1]).unwrap();
        assert_eq!(reopen(Some("checksum")).state.root(), root);
        // Whole, but written at another depth (as builds before 2026-12-06 wrote, at 20).
        let mut other = good[..good.len() - 32].to_vec();
        assert_eq!(usize::from(other[48]), state::TOP_DEPTH, "the depth's byte");
        other[48] = 20;
        let sum = vpbox_sm::sm3::hash(&other);
        other.extend_from_slice(sum.as_bytes());
        std::fs::write(&file, &other).unwrap();
        assert_eq!(reopen(Some("another number of levels")).state.root(), root);
        std::fs::write(&file, &good).unwrap();
        let ledger = reopen(None);
        assert_eq!(ledger.state.root(), root);
        // The comparison with the anchors on disk passes, and goes on passing as blocks commit.
        let check = ledger.checkpoint_check().expect("owed after a checkpoint");
        check.run().unwrap();
        let mut ledger = ledger;
        commit(&mut ledger, &[put(&s, 4, 9, 9)]);
        check.run().unwrap();
        drop(check); // it holds the store open
        ledger.save_state().unwrap();
        let good = std::fs::read(&file).unwrap();
        // An anchor changed on disk after the stop: the open takes the checkpoint, the
        // comparison finds it.
        let cf = ledger.cf(CF_ANCHORS).unwrap();
        let original = ledger.db.get_cf(cf, pairs[3].0).unwrap().unwrap();
        let mut changed = original.clone();
        changed[0] ^= 1;
        ledger.db.put_cf(cf, pairs[3].0, &changed).unwrap();
        drop(ledger);
        let ledger = reopen(None);
        let err = ledger.checkpoint_check().unwrap().run().unwrap_err();
        assert!(err.to_string().contains("do not give the state map's checkpoint"), "{err}");
        let cf = ledger.cf(CF_ANCHORS).unwrap();
        ledger.db.put_cf(cf, pairs[3].0, &original).unwrap();
        drop(ledger);
        std::fs::remove_file(&file).unwrap();
        assert!(reopen(Some("")).checkpoint_check().is_none(), "a scan owes none");
        // A checkpoint whose lone leaf sits in the wrong, empty, sibling bucket hashes to the
        // same root (a lone leaf moves up): the open takes it, the comparison does not.
        let mut c = state::Checkpoint::decode(&good).unwrap();
        let buckets: std::collections::BTreeMap<u32, state::Node> =
            c.buckets.iter().copied().collect();
        let (from, to) = c
            .buckets
            .iter()
            .find_map(|(i, n)| {
                (matches!(n, state::Node::Leaf(_)) && !buckets.contains_key(&(i ^ 1)))
                    .then_some((*i, i ^ 1))
            })
            .expect("a lone leaf beside an empty bucket");
        c.buckets.retain(|(i, _)| *i != from);
        c.buckets.push((to, buckets[&from]));
        c.buckets.sort_by_key(|(i, _)| *i);
        std::fs::write(&file, c.encode()).unwrap();
        let ledger = reopen(None);
        assert_eq!(ledger.state.root(), ledger.tip().unwrap().state_root);
        assert!(ledger.checkpoint_check().unwrap().run().is_err(), "a moved leaf is found");
    }

    /// A transaction that anchors NUMBERED_FROM keys or more in its block is named by number
    /// in their records, one under it by hash: both read back alike, by `anchor`, by a scan at
    /// the next open and by the checkpoint's comparison; a damaged or missing table entry is
    /// found.
    #[test]
    fn a_block_being_written_is_left_out_by_every_reader_until_it_is_finished() {
        use crate::state::Lookup;
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        // Keys that differ in their last byte only: every block below adds to the buckets of
        // the first (a bucket's committed leaves are read from the store when a block adds to
        // it, and the staged block's leaves must not be read there twice).
        let key = |i: u32, last: u8| {
            let mut k = vpbox_sm::sm3::hash(i.to_be_bytes()).0;
            k[31] = last;
            k
        };
        let batch = |nonce, last: u8| {
            let pairs = (0..300).map(|i| (key(i, last), [last; 32])).collect();
            tx(&s, nonce, Payload::AnchorPutBatch(pairs))
        };
        let mut ledger = open(dir.path());
        commit(&mut ledger, &[batch(1, 0)]);
        // Block 2, staged: a numbered batch and an inline put. Block 3 executes above it.
        let block2 =
            vec![batch(2, 1), tx(&s, 3, Payload::AnchorPut { key: key(0, 2), value: [2; 32] })];
        let block3 =
            vec![batch(4, 3), tx(&s, 5, Payload::AnchorPut { key: key(1, 2), value: [3; 32] })];
        let second = ledger.execute(&[], block2.clone()).unwrap();
        let third = ledger.execute(std::slice::from_ref(&second), block3.clone()).unwrap();
        let tip = *ledger.tip().unwrap();
        let raw = |l: &Ledger, k: &[u8; 32]| l.db.get_cf(l.cf(CF_ANCHORS).unwrap(), k).unwrap();
        let as_of_tip = |l: &Ledger| {
            for k in [key(5, 1), key(0, 2)] {
                assert_eq!(l.anchor(&k).unwrap(), None);
                let (at, path) = l.state_path(&k).unwrap();
                assert_eq!(at, tip);
                assert_eq!(path.evaluate(&k).unwrap(), (tip.state_root, Lookup::Absent));
            }
            assert!(l.anchor(&key(5, 0)).unwrap().is_some());
            for t in &block2 {
                assert!(l.transaction(&t.hash()).unwrap().is_none());
                assert!(l.receipt(&t.hash()).unwrap().is_none());
            }
            assert!(l.block(2).unwrap().is_none() && l.header(2).unwrap().is_none());
            assert!(l.block_by_hash(&second.block.header.hash()).unwrap().is_none());
            assert_eq!((l.tip(), l.height()), (Some(&tip), 2));
            // The block above executes the same whether the write has landed or not.
            let again = l.execute(std::slice::from_ref(&second), block3.clone()).unwrap();
            assert_eq!(again.block.header, third.block.header);
            assert_eq!(again.receipts, third.receipts);
        };
        let write = ledger.stage(&second, b"c").unwrap();
        assert_eq!(write.height(), 2);
        let twice = ledger.stage(&second, b"c").unwrap_err();
        assert!(twice.to_string().contains("still being written"), "{twice}");
        as_of_tip(&ledger);
        assert!(raw(&ledger, &key(5, 1)).is_none(), "not landed yet");
        let written = write.write().unwrap();
        assert!(raw(&ledger, &key(5, 1)).is_some() && raw(&ledger, &key(0, 2)).is_some());
        as_of_tip(&ledger);
        let refused = ledger.save_state().unwrap_err();
        assert!(refused.to_string().contains("still being written"), "{refused}");
        // Finished: every reader sees it, and the block above commits on it.
        ledger.finish(&second, written).unwrap();
        assert_eq!(ledger.tip(), Some(&second.block.header));
        let rec = ledger.anchor(&key(5, 1)).unwrap().unwrap();
        assert_eq!((rec.tx, rec.height), (block2[0].hash(), 2));
        assert_eq!(ledger.anchor(&key(0, 2)).unwrap().unwrap().tx, block2[1].hash());
        assert_eq!(ledger.transaction(&block2[1].hash()).unwrap().unwrap().0, 2);
        assert_eq!(ledger.receipt(&block2[0].hash()).unwrap().unwrap().height, 2);
        assert_eq!(ledger.block(2).unwrap().unwrap().header, second.block.header);
        ledger.commit(&third, b"c").unwrap();
        assert_eq!(ledger.state.root(), third.block.header.state_root);
        let (_, path) = ledger.state_path(&key(5, 3)).unwrap();
        let Lookup::Present(leaf) = path.evaluate(&key(5, 3)).unwrap().1 else { panic!("absent") };
        assert_eq!(leaf.height, 3);
        drop(ledger);
        // The anchors on disk give the same root to the open's scan.
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.state.root(), third.block.header.state_root);
        // A block finished with another block's write is refused.
        let mut ledger = ledger;
        let fourth = ledger.execute(&[], vec![batch(6, 4)]).unwrap();
        let fifth_dir = tempfile::tempdir().unwrap();
        let mut other = open(fifth_dir.path());
        let elsewhere = other.execute(&[], vec![batch(7, 5)]).unwrap();
        let foreign = other.stage(&elsewhere, b"c").unwrap().write().unwrap();
        let write = ledger.stage(&fourth, b"c").unwrap();
        let wrong = ledger.finish(&fourth, foreign).unwrap_err();
        assert!(wrong.to_string().contains("not the block being written"), "{wrong}");
        drop(write);
    }

    #[test]
    fn batches_of_many_anchors_name_their_transaction_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let pairs: Vec<([u8; 32], [u8; 32])> = (0..4 * NUMBERED_FROM as u32 + 1)
            .map(|i| (vpbox_sm::sm3::hash(i.to_be_bytes()).0, [i as u8; 32]))
            .collect();
        let n = NUMBERED_FROM;
        let batch = |nonce, r: std::ops::Range<usize>| {
            tx(&s, nonce, Payload::AnchorPutBatch(pairs[r].to_vec()))
        };
        // Block 1: one batch at the threshold, one just under it (with a key the first one
        // anchors: that pair fails, so only n - 1 anchor), a signed put.
        let block1 = [batch(1, 0..n), batch(2, n - 1..2 * n - 1), put(&s, 3, 7, 7)];
        // Block 2: two batches at and over it, numbered in block order.
        let block2 = [batch(4, 2 * n..3 * n), batch(5, 3 * n..4 * n + 1)];
        let (a, b, c, d, e) = (0..n, n..2 * n - 1, 2 * n..3 * n, 3 * n..4 * n + 1, [7u8; 32]);
        let mut ledger = open(dir.path());
        commit(&mut ledger, &block1);
        commit(&mut ledger, &block2);
        let raw = |l: &Ledger, k: &[u8; 32]| l.db.get_cf(l.cf(CF_ANCHORS).unwrap(), k).unwrap();
        let expect = [
            (a, 33, block1[0].hash(), 1),
            (b, 65, block1[1].hash(), 1),
            (c, 33, block2[0].hash(), 2),
            (d, 33, block2[1].hash(), 2),
        ];
        let check = |l: &Ledger| {
            for (range, len, tx, height) in expect.iter().cloned() {
                for (k, v) in &pairs[range] {
                    assert_eq!(raw(l, k).unwrap().len(), len);
                    let rec = l.anchor(k).unwrap().unwrap();
                    assert_eq!(rec, AnchorRecord { value: *v, tx, height });
                }
            }
            let signed = l.anchor(&e).unwrap().unwrap();
            assert_eq!((signed.tx, signed.height), (block1[2].hash(), 1));
            assert_eq!(raw(l, &e).unwrap().len(), 65);
        };
        check(&ledger);
        let numbers =
            [&pairs[0].0, &pairs[2 * n].0, &pairs[3 * n].0].map(|k| {
                match record::decode(&raw(&ledger, k).unwrap()).unwrap().names {
                    record::Names::Number(m) => m,
                    other => panic!("{other:?}"),
                }
            });
        assert_eq!(numbers, [0, 1, 2]);
        assert_eq!(ledger.numbered.next(), 3);
        drop(ledger);
        // A scan at the open resolves the numbers; so does the checkpoint's comparison.
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.state_source(), &StateSource::Scan { refused: None });
        assert_eq!(ledger.state.root(), ledger.tip().unwrap().state_root);
        check(&ledger);
        ledger.save_state().unwrap();
        drop(ledger);
        let mut ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.state_source(), &StateSource::Checkpoint);
        let checkpoint_check = ledger.checkpoint_check().unwrap();
        check(&ledger);
        // The next numbers follow on after a reopen; a numbered block committed while the
        // comparison is owed does not upset it.
        let more: Vec<([u8; 32], [u8; 32])> = (0..n as u32)
            .map(|i| (vpbox_sm::sm3::hash((i + 1_000_000).to_be_bytes()).0, [1; 32]))
            .collect();
        let last = tx(&s, 6, Payload::AnchorPutBatch(more.clone()));
        commit(&mut ledger, std::slice::from_ref(&last));
        checkpoint_check.run().unwrap();
        drop(checkpoint_check);
        assert_eq!(ledger.numbered.next(), 4);
        assert_eq!(ledger.anchor(&more[9].0).unwrap().unwrap().tx, last.hash());
        let root = ledger.tip().unwrap().state_root;
        let table = ledger.cf(CF_ANCHOR_TXS).unwrap();
        let (k1, good) = Numbered::entry(1, 2, &block2[0].hash());
        // Entry 1 names another transaction: the scan's root is not the tip's.
        let (_, wrong) = Numbered::entry(1, 2, &block2[1].hash());
        ledger.db.put_cf(table, k1, wrong).unwrap();
        drop(ledger);
        let Err(err) = Ledger::open(dir.path()) else { panic!("a changed entry was opened") };
        assert!(err.to_string().contains("state root"), "{err}");
        let raw_db = || DB::open_cf(&Options::default(), dir.path(), CFS).unwrap();
        // The last entry gone: the records that name it are refused, naming the number.
        {
            let db = raw_db();
            let table = db.cf_handle(CF_ANCHOR_TXS).unwrap();
            db.put_cf(table, k1, good).unwrap();
            db.delete_cf(table, 3u64.to_be_bytes()).unwrap();
        }
        let Err(err) = Ledger::open(dir.path()) else { panic!("a missing entry was opened") };
        assert!(err.to_string().contains("3 numbered transactions in their table, 4"), "{err}");
        // Without the count to tell, the records that name it are refused, naming the number.
        {
            let db = raw_db();
            db.put_cf(db.cf_handle(CF_META).unwrap(), NUMBERED, 3u64.to_be_bytes()).unwrap();
        }
        let Err(err) = Ledger::open(dir.path()) else { panic!("a missing entry was opened") };
        assert!(err.to_string().contains("transaction number 3"), "{err}");
        {
            let db = raw_db();
            db.put_cf(db.cf_handle(CF_META).unwrap(), NUMBERED, 4u64.to_be_bytes()).unwrap();
        }
        // The first entry gone: the table has a gap.
        {
            let db = raw_db();
            let table = db.cf_handle(CF_ANCHOR_TXS).unwrap();
            let (k3, v3) = Numbered::entry(3, 3, &last.hash());
            db.put_cf(table, k3, v3).unwrap();
            db.delete_cf(table, 0u64.to_be_bytes()).unwrap();
        }
        let Err(err) = Ledger::open(dir.path()) else { panic!("a table with a gap was opened") };
        assert!(err.to_string().contains("where number 0 belongs"), "{err}");
        {
            let db = raw_db();
            let table = db.cf_handle(CF_ANCHOR_TXS).unwrap();
            let (k0, v0) = Numbered::entry(0, 1, &block1[0].hash());
            db.put_cf(table, k0, v0).unwrap();
        }
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.state.root(), root, "mended, it opens");
        drop(ledger);
        // An entry added above the tip, the count with it.
        {
            let db = raw_db();
            let (k4, v4) = Numbered::entry(4, 9, &Digest([4; 32]));
            db.put_cf(db.cf_handle(CF_ANCHOR_TXS).unwrap(), k4, v4).unwrap();
            db.put_cf(db.cf_handle(CF_META).unwrap(), NUMBERED, 5u64.to_be_bytes()).unwrap();
        }
        let Err(err) = Ledger::open(dir.path()) else { panic!("an added entry was opened") };
        assert!(err.to_string().contains("at height 9, above the tip (block 3)"), "{err}");
    }

    /// Blocks large enough to be hashed on several threads (one over a speculative one)
    /// commit the roots one scan of their anchors gives at the next open.
    #[test]
    fn large_blocks_hashed_in_parts_commit_the_roots_a_scan_gives() {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let pairs: Vec<([u8; 32], [u8; 32])> = (0..3 * PARALLEL_MIN as u32)
            .map(|i| (vpbox_sm::sm3::hash(i.to_be_bytes()).0, [i as u8; 32]))
            .collect();
        let (a, b) = pairs.split_at(PARALLEL_MIN + 100);
        let root = {
            let mut ledger = open(dir.path());
            commit(&mut ledger, &[put(&s, 1, 1, 1)]);
            let first =
                ledger.execute(&[], vec![tx(&s, 2, Payload::AnchorPutBatch(a.to_vec()))]).unwrap();
            let second = ledger
                .execute(
                    std::slice::from_ref(&first),
                    vec![tx(&s, 3, Payload::AnchorPutBatch(b.to_vec()))],
                )
                .unwrap();
            ledger.commit(&first, b"c").unwrap();
            ledger.commit(&second, b"c").unwrap();
            // Every committed key put again (looked up in parts, all at once) exists; the new
            // ones among them, spread over the parts, do not.
            let mut again = pairs.clone();
            let fresh: Vec<([u8; 32], [u8; 32])> =
                (0..8u32).map(|i| ([0x11 * i as u8; 32], [1; 32])).collect();
            again.extend_from_slice(&fresh);
            again.sort_unstable();
            let e = ledger.execute(&[], vec![tx(&s, 4, Payload::AnchorPutBatch(again.clone()))]);
            let outcomes = &e.unwrap().receipts[0].1.outcomes;
            for ((key, _), outcome) in again.iter().zip(outcomes) {
                let want = if fresh.iter().any(|(k, _)| k == key) {
                    PutOutcome::Success
                } else {
                    PutOutcome::KeyExists
                };
                assert_eq!(*outcome, want, "{key:?}");
            }
            assert_eq!(outcomes.len(), again.len());
            ledger.tip().unwrap().state_root
        };
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.state_source(), &StateSource::Scan { refused: None });
        assert_eq!(ledger.state.root(), root);
    }

    /// A block whose buckets hold more committed anchors than are hashed at once (each of its
    /// parts reads more than LEAVES_AT_ONCE) commits the root a scan gives.
    #[test]
    fn buckets_of_many_committed_anchors_are_hashed_in_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let n = 4 * LEAVES_AT_ONCE as u32 + 500;
        // Anchor i in bucket 3i (the first TOP_DEPTH bits); the second block's in the same
        // buckets, told apart by the next bit (so that a bucket's two leaves meet right below
        // it: a path of over 200 levels each, as when they differed in their last bit, took
        // most of a minute of hashing and added nothing this test is about).
        const { assert!(state::TOP_DEPTH < 32) };
        let key = |i: u32, second: u32| {
            let mut k = vpbox_sm::sm3::hash(i.to_be_bytes()).0;
            let bits = (3 * i) << (32 - state::TOP_DEPTH) | second << (31 - state::TOP_DEPTH);
            k[..4].copy_from_slice(&bits.to_be_bytes());
            k
        };
        assert!(3 * n < 1 << state::TOP_DEPTH);
        let first: Vec<_> = (0..n).map(|i| (key(i, 0), [1; 32])).collect();
        let second: Vec<_> = (0..n).map(|i| (key(i, 1), [2; 32])).collect();
        let root = {
            let mut ledger = open(dir.path());
            commit(&mut ledger, &[tx(&s, 1, Payload::AnchorPutBatch(first))]);
            let e = ledger.execute(&[], vec![tx(&s, 2, Payload::AnchorPutBatch(second))]).unwrap();
            ledger.commit(&e, b"c").unwrap();
            assert_eq!(ledger.state.buckets().count(), n as usize, "two anchors a bucket");
            ledger.tip().unwrap().state_root
        };
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.state_source(), &StateSource::Scan { refused: None });
        assert_eq!(ledger.state.root(), root);
        // From the checkpoint of a clean stop, its check pauses between its rounds of leaves
        // (two leaves a bucket: rounds of exactly LEAVES_AT_ONCE), not after the last.
        ledger.save_state().unwrap();
        drop(ledger);
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.state_source(), &StateSource::Checkpoint);
        let mut pauses = 0;
        ledger.checkpoint_check().unwrap().run_pausing(|| pauses += 1).unwrap();
        assert_eq!(pauses, 2 * n as usize / LEAVES_AT_ONCE, "between rounds");
    }

    #[test]
    fn blocks_must_extend_the_tip_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let tip_hash = {
            let mut ledger = open(dir.path());
            commit(&mut ledger, &[put(&s, 1, 1, 1)]);
            let first = ledger.execute(&[], vec![put(&s, 2, 2, 2)]).unwrap();
            let second =
                ledger.execute(std::slice::from_ref(&first), vec![put(&s, 3, 2, 9)]).unwrap();
            assert_eq!(second.receipts[0].1.outcomes, vec![KeyExists], "speculation sees above");
            assert!(
                matches!(ledger.commit(&second, b"c"), Err(Error::NotNext { .. })),
                "a block two above the tip"
            );
            ledger.commit(&first, b"c").unwrap();
            assert!(matches!(ledger.commit(&first, b"c"), Err(Error::NotNext { .. })));
            let again = ledger.execute(&[], vec![put(&s, 2, 2, 2)]).unwrap();
            assert!(again.receipts.is_empty(), "a committed transaction does not execute twice");
            let other = Block::genesis(vpbox_sm::sm3::hash(b"another"), 0);
            assert!(matches!(ledger.init_genesis(&other), Err(Error::Corrupt(_))));
            ledger.tip().unwrap().hash()
        };
        let ledger = open(dir.path());
        assert_eq!(ledger.height(), 3);
        assert_eq!(ledger.tip().unwrap().hash(), tip_hash);
        assert_eq!(ledger.block_by_hash(&tip_hash).unwrap().unwrap().header.height, 2);
        assert_eq!(ledger.block(2).unwrap().unwrap().certificate, b"c");
        assert_eq!(ledger.anchor(&[2; 32]).unwrap().unwrap().value, [2; 32]);
    }

    #[test]
    fn a_trust_change_wakes_its_waiters_and_anchors_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(dir.path());
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let changes = ledger.trust_changes();
        commit(&mut ledger, &[put(&s, 1, 1, 1)]);
        assert_eq!(changes.count(), 0, "an anchor is no trust change");
        // Nothing changes: the wait ends at its timeout with the count it was given.
        assert_eq!(changes.wait_past(0, Duration::from_millis(20)), 0);
        assert_eq!(changes.wait_past(7, Duration::from_secs(60)), 0, "already past 7");
        let waiter = {
            let changes = Arc::clone(&changes);
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                (changes.wait_past(0, Duration::from_secs(60)), start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(100)); // waiting by now
        changes.bump();
        let (count, waited) = waiter.join().unwrap();
        assert_eq!(count, 1);
        assert!(waited < Duration::from_secs(10), "woken by the change, not at 60 s: {waited:?}");
        // Closed: a wait in progress ends with the count as it is, and a later one at once.
        let waiter = {
            let changes = Arc::clone(&changes);
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                (changes.wait_past(1, Duration::from_secs(60)), start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        changes.close();
        let (count, waited) = waiter.join().unwrap();
        assert_eq!(count, 1, "no change: the count it waited past");
        assert!(waited < Duration::from_secs(10), "ended by the close, not at 60 s: {waited:?}");
        let start = std::time::Instant::now();
        assert_eq!(changes.wait_past(1, Duration::from_secs(60)), 1);
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    }

    #[test]
    fn every_node_computes_the_same_block_from_the_same_transactions() {
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let txs = vec![put(&s, 1, 1, 1), put(&s, 2, 1, 2), put(&s, 3, 3, 3)];
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (la, lb) = (open(a.path()), open(b.path()));
        let ea = la.execute(&[], txs.clone()).unwrap();
        let eb = lb.execute(&[], txs.clone()).unwrap();
        assert_eq!(ea.block.header.hash(), eb.block.header.hash());
        let mut other = txs;
        other.swap(0, 1);
        let ec = la.execute(&[], other).unwrap();
        assert_ne!(ec.block.header.results_root, ea.block.header.results_root, "outcomes differ");
    }
}
