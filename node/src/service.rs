//! `vpbox node run`: wires the driver, the ledger, the peer links, the signer thread and the
//! JSON-RPC server together, and the write methods of the API.
//!
//! The node opens no network socket: its JSON-RPC and its peer links are Unix sockets, named
//! with everything else it needs by the box's configuration ([`crate::config::BoxConfig`]). The
//! box's proxy puts mutual TLS in front of both, and dials the peers' boxes; so the node's unit
//! can run with no network at all.

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::time::Duration;

use serde_json::{Value, json};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::{Decision, DenyReason};
use vpbox_consensus::NodeId;
use vpbox_ledger::tx::{Payload, Tx};
use vpbox_ledger::{Ledger, StateSource, TrustChanges};
use vpbox_sm::sm2::PublicKey;

use crate::api::ReadApi;
use crate::blocks::BlockServer;
use crate::config::BoxConfig;
use crate::genesis::Genesis;
use crate::host::{Admitted, PeerFilter};
use crate::http::{Limits, serve};
use crate::inbox::{Inbox, Outbox, Source};
use crate::link::{Identity, Members, Prover};
use crate::node::{Driver, Event, Outcome, Reply, StartError, Stored, Threads, signer_thread};
use crate::peer::{LinkHandler, LinkStats, Links, Peer, Replays, listen};
use crate::rpc::{Later, Methods, RpcError, param};
use crate::verified::Verified;

/// The longest the checkpoint's check waits, in all, for the node to catch up: a node held
/// behind for longer (its peers gone, say) has its anchors checked all the same.
const CHECK_PAUSE_MAX: Duration = Duration::from_secs(600);

/// How long `anchor_put` waits for its commit before answering "pending".
pub const WAIT_MAX: Duration = Duration::from_secs(30);
/// The longest `gov_waitState` waits for a change, and its default: under the proxy's 45 s
/// answer deadline, so an admin may call it through the proxy too.
pub const STATE_WAIT_MAX: Duration = Duration::from_secs(30);
/// How many `gov_waitState` calls may wait at once (each holds one of the RPC server's
/// blocking threads): the box's proxy needs one; past these the call is refused with -32004
/// (and the proxy falls back to `gov_getState` once a second).
pub const STATE_WAITERS_MAX: usize = 4;

/// The node's clock, in milliseconds since the Unix epoch (the only place it is read).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The sockets systemd passed to this process (socket activation:
/// `systemd/vpbox-node.socket`), by the path each is bound to, for [`run`]. While the node
/// restarts, systemd keeps them listening, so the proxy's connections wait in their backlog
/// instead of being refused. Taken only when `LISTEN_PID` names this process (the protocol's
/// own rule; `listenfd` alone would also take them without it); a passed descriptor that is
/// not a Unix stream socket bound to a path is an error.
///
/// Call it first, before the process starts any thread: taking them clears `LISTEN_FDS` and
/// `LISTEN_PID` from the environment, which is only sound while no other thread reads it.
pub fn activated() -> Result<HashMap<PathBuf, UnixListener>, StartError> {
    let pid = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return Ok(HashMap::new());
    }
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = HashMap::new();
    for i in 0..fds.len() {
        let bad = |e: &dyn std::fmt::Display| {
            StartError(format!("socket activation: descriptor {}: {e}", i + 3))
        };
        let listener =
            fds.take_unix_listener(i).map_err(|e| bad(&e))?.ok_or_else(|| bad(&"passed twice"))?;
        let address = listener.local_addr().map_err(|e| bad(&e))?;
        let path = address.as_pathname().ok_or_else(|| bad(&"not bound to a path"))?;
        out.insert(path.to_path_buf(), listener);
    }
    Ok(out)
}

/// The listener at `path`: the one systemd passed for it, or a new one.
fn listener(
    passed: &mut HashMap<PathBuf, UnixListener>,
    path: &Path,
    what: &str,
) -> Result<UnixListener, StartError> {
    match passed.remove(path) {
        // Its owner and mode are the socket unit's (SocketGroup=, SocketMode=).
        Some(l) => Ok(l),
        None => bind(path, what),
    }
}

fn bind(path: &Path, what: &str) -> Result<UnixListener, StartError> {
    // A socket left by a killed node is removed; anything else at the path is refused.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(StartError(format!(
                "{what} {}: exists and is not a socket",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| StartError(format!("{what} {}: {e}", path.display())))?;
    // Group access: the proxy's user, in the node's group, connects (a unit's UMask=0077 would
    // leave the socket to the node's user alone); the JSON-RPC socket still checks who calls
    // by SO_PEERCRED, and every peer link proves its node by its handshake.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| StartError(format!("{what} {}: {e}", path.display())))?;
    Ok(listener)
}

/// Runs the node until it is killed, on the sockets systemd `passed` ([`activated`]; empty
/// outside systemd) or sockets of its own.
pub fn run(
    config: &BoxConfig,
    mut passed: HashMap<PathBuf, UnixListener>,
) -> Result<(), StartError> {
    let genesis = Arc::new(Genesis::load(&config.genesis).map_err(|e| StartError(e.to_string()))?);
    let id = NodeId(config.node_id);
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError(format!("{}: {e}", config.data_dir.display())))?;
    let opening = std::time::Instant::now();
    let mut ledger = Ledger::open(&config.data_dir.join("ledger"))
        .map_err(|e| StartError(format!("ledger: {e}")))?;
    let ms = opening.elapsed().as_millis() as u64;
    match ledger.state_source() {
        StateSource::Checkpoint => {
            tracing::info!(ms, "ledger opened; the state map from the checkpoint of the last stop")
        }
        StateSource::Scan { refused: None } => {
            tracing::info!(ms, "ledger opened; the state map rebuilt from the anchors")
        }
        StateSource::Scan { refused: Some(why) } => tracing::warn!(
            ms,
            "ledger opened; the state map's checkpoint was not used ({why}): rebuilt from the \
             anchors"
        ),
    }
    // The state map's memory taken now, not one page fault at a time by the first blocks;
    // without it the node works as well, a fresh ledger's blocks more slowly.
    if let Err(e) = ledger.populate_state() {
        tracing::warn!("the state map's memory is taken as it is written: {e}");
    }
    ledger.init_genesis(&genesis.block()).map_err(|e| StartError(format!("ledger: {e}")))?;
    ledger
        .set_governance(genesis.governance_state())
        .map_err(|e| StartError(format!("ledger: {e}")))?;
    // Who this node and its peers are: the governance state the ledger holds (the genesis
    // founds it; configuration transactions change it). A node added by governance starts
    // from a member's ledger, so it finds itself there.
    let (me, peers) = {
        let state = ledger.governance().cloned().unwrap_or_else(|| genesis.governance_state());
        let mut entries = Vec::new();
        for n in &state.nodes {
            entries.push(genesis.entry(n).map_err(StartError)?);
        }
        let me = entries.iter().find(|n| n.id == id).cloned().ok_or_else(|| {
            StartError(format!(
                "node {} is not a member at block {}: not in the genesis, or removed by \
                 governance, or added by governance after this ledger (start it from a \
                 member's ledger)",
                config.node_id,
                ledger.height().saturating_sub(1)
            ))
        })?;
        let peers: Vec<Peer> = entries
            .into_iter()
            .filter(|n| n.id != id)
            .map(|n| Peer { id: n.id, key: n.consensus_key })
            .collect();
        (me, peers)
    };
    // Started once the driver is, which says when the node is catching up.
    let check = ledger.checkpoint_check();
    let trust_changes = ledger.trust_changes();
    let ledger = Arc::new(RwLock::new(ledger));

    for p in &peers {
        if config.address_of(p.id.0).is_none() {
            tracing::warn!(
                peer = p.id.0,
                "member node {} has no [[peers]] address in this box's configuration: the box's \
                 proxy cannot reach it",
                p.id.0
            );
        }
    }
    let peer_listener = listener(&mut passed, &config.sockets.peer, "peer socket")?;
    let rpc_listener = listener(&mut passed, &config.sockets.rpc, "rpc socket")?;
    if let Some(path) = passed.keys().next() {
        return Err(StartError(format!(
            "socket activation: systemd passed a socket at {}, which is neither [sockets] rpc \
             nor peer",
            path.display()
        )));
    }
    let identity = Identity {
        chain: genesis.hash.0,
        id,
        prover: Arc::new(SignerProver {
            socket: config.signer.socket.clone(),
            key: config.signer.key.clone(),
            client: Mutex::new(None),
        }),
    };
    let members = Members::default();
    let stats = Arc::new(LinkStats::default());
    let links =
        Links::start(identity.clone(), members.clone(), config.sockets.egress.clone(), peers);
    let inbox = Inbox::new();
    let events = inbox.outbox(Source::Local);
    let verified = Arc::new(Verified::default());
    let (jobs, job_rx) = channel();
    {
        let (socket, key, events) =
            (config.signer.socket.clone(), config.signer.key.clone(), events.clone());
        std::thread::Builder::new()
            .name("signer".into())
            .spawn(move || signer_thread(socket, key, job_rx, events))
            .map_err(|e| StartError(format!("thread: {e}")))?;
    }
    let blocks = BlockServer::start(Arc::clone(&ledger), links.clone(), Arc::clone(&stats))
        .map_err(|e| StartError(format!("thread: {e}")))?;
    let driver = Driver::open(
        id,
        Arc::clone(&genesis),
        &config.data_dir,
        Arc::clone(&ledger),
        Threads { links, link_stats: Arc::clone(&stats), signer: jobs, wake: events.clone() },
    )?;
    if let Some(check) = check {
        // The checkpoint's buckets against the anchors on disk, beside the node's work: a
        // difference is corruption and stops the node, as the open's own scan would have.
        // At a lower priority (nice 10, this thread only; the node's unit allows the
        // `setpriority` call back from `@resources` for it): it yields most of the cores to the
        // node's own work — a restarted node's catch-up first of all: at ten million anchors
        // it took a third of the machine during one — and still weighs a tenth of a busy
        // thread of the node's (nice 19 would weigh 1.5 %: a long catch-up could hold the
        // check, and the table files its scan keeps, for hours). And it pauses while the node
        // catches up (a state fetch that commits blocks: one that stalls, as a corrupt ledger
        // makes it, does not hold the check), for at most CHECK_PAUSE_MAX in all: its scan
        // reads every anchor, from the disk the catch-up reads its buckets from at random (at
        // ten million anchors a catch-up ran at 50.3 k/s beside the check and 52.9 k/s without
        // it, one run each: within the runs' spread, but the scan's reads are all extra).
        // Until it ends, the anchors are as the checkpoint's root says they are: every block
        // executed meanwhile re-hashes its buckets from them and must give the certified
        // state root.
        let catching_up = driver.catching_up();
        std::thread::Builder::new()
            .name("ledger-check".into())
            .spawn(move || {
                if let Err(e) =
                    rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10)
                {
                    tracing::warn!("ledger-check: cannot lower its priority: {e}");
                }
                let started = std::time::Instant::now();
                let mut paused = Duration::ZERO;
                let pause = || {
                    let from = std::time::Instant::now();
                    while catching_up.load(Ordering::Relaxed)
                        && paused + from.elapsed() < CHECK_PAUSE_MAX
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    paused += from.elapsed();
                };
                match check.run_pausing(pause) {
                    Ok(()) => tracing::info!(
                        ms = started.elapsed().as_millis() as u64,
                        paused_ms = paused.as_millis() as u64,
                        "the anchors on disk match the state map's checkpoint"
                    ),
                    Err(e) => crate::node::fatal(&format!("ledger: {e}")),
                }
            })
            .map_err(|e| StartError(format!("thread: {e}")))?;
    }
    {
        let window = Replays::window_for(genesis.params.heartbeat_interval_ms);
        let on_link = peer_handler(
            Arc::clone(&ledger),
            Arc::clone(&verified),
            &inbox,
            blocks,
            Arc::clone(&stats),
            window,
        );
        std::thread::Builder::new()
            .name("peer-accept".into())
            .spawn(move || listen(peer_listener, identity, members, stats, on_link))
            .map_err(|e| StartError(format!("thread: {e}")))?;
    }
    let api = NodeApi {
        read: ReadApi::new(Arc::clone(&ledger), genesis.bytes.clone().into()),
        trust_changes: Arc::clone(&trust_changes),
        ledger,
        genesis: Arc::clone(&genesis),
        events,
        state_waiters: AtomicUsize::new(0),
        enrolled: Mutex::new(None),
        verified,
        data_dir: config.data_dir.clone(),
        disk: Mutex::new(None),
    };
    // The proxy's user may speak for the clients it admitted; without one named, the node's
    // own (a box whose processes share a user).
    let forwarders = vec![
        config
            .proxy
            .as_ref()
            .and_then(|p| p.uid)
            .unwrap_or_else(|| rustix::process::getuid().as_raw()),
    ];
    let rpc_stop = Arc::new(AtomicBool::new(false));
    let rpc = {
        let stop = Arc::clone(&rpc_stop);
        std::thread::Builder::new()
            .name("rpc".into())
            .spawn(move || serve(rpc_listener, Arc::new(api), Limits::default(), forwarders, stop))
            .map_err(|e| StartError(format!("thread: {e}")))?
    };
    tracing::info!(
        node = id.0,
        bank = %me.bank,
        "node {} ({}, {}) serving JSON-RPC on {} and peers on {}; reaching peers through {}",
        id.0,
        me.name,
        me.bank,
        config.sockets.rpc.display(),
        config.sockets.peer.display(),
        config.sockets.egress.display()
    );
    let stop = inbox.outbox(Source::Local);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || on_signals(stop))
        .map_err(|e| StartError(format!("thread: {e}")))?;
    let saved = driver.run(inbox);
    DRIVER_DONE.store(saved, Ordering::Release);
    // The driver is gone, and with it every client's channel: the calls waiting on one are
    // answered "the node is stopping" (retry), and the long polls of `gov_waitState` end now
    // with the state as it is. The RPC server writes those answers, closes its connections
    // and returns (bounded: twice `http::DRAIN_MAX`) before the process ends.
    trust_changes.close();
    rpc_stop.store(true, Ordering::Relaxed);
    if let Ok(Err(e)) = rpc.join() {
        tracing::warn!("the JSON-RPC server ended with an error: {e}");
    }
    Ok(())
}

/// Set once the driver has stopped and saved the state map: what a forced end says it skipped.
static DRIVER_DONE: AtomicBool = AtomicBool::new(false);

/// How long a stop may take once asked before the process ends anyway.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits for SIGTERM or SIGINT. The first asks the driver to stop ([`Event::Stop`]: it saves
/// the state map's checkpoint and returns, and the process exits); a second, or no exit within
/// [`STOP_GRACE`], ends the process at once — everything acknowledged is durable already, so
/// that costs only the next start's rebuild of the map.
fn on_signals(stop: Outbox) {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else {
        tracing::warn!("no signal handling: SIGTERM ends the node without saving the state map");
        return;
    };
    runtime.block_on(async {
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            tracing::warn!(
                "no signal handling: SIGTERM ends the node without saving the state map"
            );
            return;
        };
        // SIGINT too when it can be had (a terminal's Ctrl-C); SIGTERM is what systemd sends.
        let mut int = signal(SignalKind::interrupt()).ok();
        either(&mut term, &mut int).await;
        tracing::info!("asked to stop");
        // Queued from a thread of its own: a full queue must not keep a second signal, or the
        // grace period, from ending the process.
        let queued = std::thread::Builder::new().name("stop".into()).spawn(move || {
            if stop.send(Event::Stop).is_err() {
                std::process::exit(0);
            }
        });
        if queued.is_err() {
            std::process::exit(1);
        }
        let why = match tokio::time::timeout(STOP_GRACE, either(&mut term, &mut int)).await {
            Ok(()) => "asked again",
            Err(_) => "the stop took too long",
        };
        if DRIVER_DONE.load(Ordering::Acquire) {
            tracing::warn!("{why}: ending now, the state map saved, answers in flight dropped");
        } else {
            tracing::warn!("{why}: ending now, without saving the state map");
        }
        std::process::exit(1);
    });
}

/// The next SIGTERM, or SIGINT if it is handled.
async fn either(
    term: &mut tokio::signal::unix::Signal,
    int: &mut Option<tokio::signal::unix::Signal>,
) {
    let interrupt = async {
        match int.as_mut() {
            Some(i) => drop(i.recv().await),
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        () = interrupt => {}
    }
}

/// Signs this node's link proofs with its consensus key in the signer (one connection,
/// shared by every link; a proof is signed once per connection).
struct SignerProver {
    socket: PathBuf,
    key: String,
    client: Mutex<Option<vpbox_signer_client::Client>>,
}

impl Prover for SignerProver {
    fn prove(&self, payload: &[u8]) -> Result<[u8; 64], String> {
        let mut client = self.client.lock().map_err(|_| "signer client lock".to_string())?;
        for _ in 0..2 {
            if client.is_none() {
                *client = Some(
                    vpbox_signer_client::Client::connect(&self.socket)
                        .map_err(|e| e.to_string())?,
                );
            }
            let Some(c) = client.as_mut() else { continue };
            match c.sign(&self.key, vpbox_sm::Domain::LINK, payload) {
                Ok(sig) => return Ok(sig.to_raw()),
                Err(vpbox_signer_client::ClientError::Refused(status, msg)) => {
                    return Err(format!("{status:?}: {msg}"));
                }
                Err(_) => *client = None,
            }
        }
        Err("the signer is unreachable".into())
    }
}

/// Makes, for each authenticated link, the handler that checks what its peer sends before the
/// driver sees it, on the link's own thread: replays within a short window are dropped before
/// anything is verified, envelopes must be the link's node's own (but for relayed kinds),
/// transactions are verified here, block requests go to the block server. Events go to the
/// peer's own bounded queue in the driver's inbox.
fn peer_handler(
    ledger: Arc<RwLock<Ledger>>,
    verified: Arc<Verified>,
    inbox: &Inbox,
    blocks: BlockServer,
    stats: Arc<LinkStats>,
    window: Duration,
) -> Arc<dyn Fn(vpbox_consensus::NodeId) -> LinkHandler + Send + Sync> {
    let outboxes: Mutex<std::collections::HashMap<vpbox_consensus::NodeId, Outbox>> =
        Mutex::new(std::collections::HashMap::new());
    let local = inbox.outbox(Source::Local);
    Arc::new(move |peer| {
        let events = outboxes.lock().ok().map(|mut o| {
            o.entry(peer).or_insert_with(|| local.for_source(Source::Peer(peer))).clone()
        });
        let (ledger, blocks, verified) =
            (Arc::clone(&ledger), blocks.clone(), Arc::clone(&verified));
        let mut filter = PeerFilter::new(peer, Arc::clone(&stats), window);
        Box::new(move |msg| {
            let Some(events) = events.as_ref() else { return };
            // The signature is checked here; whether the submitter is admitted is decided at
            // execution, the same at every node.
            let verify = |tx: &Tx| {
                ledger
                    .read()
                    .ok()
                    .and_then(|l| signing_key(&l, &verified, tx).ok())
                    .is_some_and(|key| verified.verify(tx, &key))
            };
            #[allow(clippy::disallowed_methods)] // the replay window runs on the real clock
            let now = std::time::Instant::now();
            match filter.admit(msg, now, crate::peer::wall_ms(), &verify) {
                Admitted::Event(ev) => {
                    let _ = events.send(ev);
                }
                Admitted::WantBlocks { after, upto, skip } => {
                    blocks.request(peer, after, upto, skip)
                }
                Admitted::Nothing => {}
            }
        })
    })
}

/// -32603 for a poisoned ledger lock (a thread panicked holding it).
fn poisoned() -> RpcError {
    RpcError::new(RpcError::INTERNAL, "ledger lock poisoned")
}

/// The key that must have signed `tx`: the one its enrollment certifies, or the one its
/// submitter enrolled (committed; remembered in `verified`).
pub fn signing_key(ledger: &Ledger, verified: &Verified, tx: &Tx) -> Result<PublicKey, String> {
    let key_of = |der: &[u8]| vpbox_ca::cert::certificate_key(der).map_err(|e| e.to_string());
    match &tx.body().payload {
        Payload::Enroll(der) => key_of(der),
        _ => verified.submitter_key(&tx.body().submitter, || {
            let der = ledger.certificate(&tx.body().submitter).map_err(|e| e.to_string())?;
            key_of(&der.ok_or_else(|| {
                format!("submitter {} is not enrolled", tx.body().submitter.to_hex())
            })?)
        }),
    }
}

/// The `wait` parameter of a write: a JSON boolean, true when absent. Anything else is refused
/// rather than guessed at (a string "false" read as true would make a client wait 30 s).
fn wait(params: &Value) -> Result<bool, RpcError> {
    wait_or(params, true)
}

/// The `wait` parameter (second by position), `absent` when absent.
fn wait_or(params: &Value, absent: bool) -> Result<bool, RpcError> {
    match param(params, 1, "wait") {
        None => Ok(absent),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => {
            let kind = match other {
                Value::Null => "null",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                _ => "an object",
            };
            Err(RpcError::new(
                RpcError::INVALID_PARAMS,
                format!("wait must be a JSON boolean (true or false), not {kind}"),
            ))
        }
    }
}

/// Which write a JSON-RPC method takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Anchor,
    Batch,
    Enroll,
    Crl,
    Config,
}

impl Write {
    fn accepts(self, p: &Payload) -> bool {
        matches!(
            (self, p),
            (Self::Anchor, Payload::AnchorPut { .. })
                | (Self::Batch, Payload::AnchorPutBatch(_))
                | (Self::Enroll, Payload::Enroll(_))
                | (Self::Crl, Payload::Crl(_))
                | (Self::Config, Payload::Config(_))
        )
    }

    fn method(self) -> &'static str {
        match self {
            Self::Anchor => "anchor_put takes an AnchorPut transaction",
            Self::Batch => "anchor_putBatch takes an AnchorPutBatch transaction",
            Self::Enroll => "cert_enroll takes an Enroll transaction",
            Self::Crl => "cert_publishCrl takes a Crl transaction",
            Self::Config => "gov_submit takes a Config transaction",
        }
    }
}

/// The JSON-RPC API of a running node: the read methods over the ledger, and the writes that go
/// through intake and consensus.
pub struct NodeApi {
    read: ReadApi,
    ledger: Arc<RwLock<Ledger>>,
    genesis: Arc<Genesis>,
    events: Outbox,
    /// Bumped by every commit that changes the trust state: what `gov_waitState` waits on.
    trust_changes: Arc<TrustChanges>,
    /// `gov_waitState` calls waiting now.
    state_waiters: AtomicUsize,
    /// The enrolled certificates' summary and when it was made ([`ENROLLED_EVERY_MS`]).
    enrolled: Mutex<Option<(std::time::Instant, Value)>>,
    /// The signatures verified, shared with the peer links.
    verified: Arc<Verified>,
    /// The node's data directory (ledger, journals): what `disk` measures.
    data_dir: PathBuf,
    /// The disk figures and when they were taken ([`ENROLLED_EVERY_MS`]).
    disk: Mutex<Option<(std::time::Instant, Value)>>,
}

/// The node's data directory on disk, for `node_getNodes.disk`: the bytes its files take
/// (`dataBytes`), and its filesystem's bytes free to the node and in all (`freeBytes`,
/// `totalBytes`; absent if the filesystem cannot be asked). A full disk stops commits, so an
/// operator needs to see it coming.
fn disk_usage(dir: &Path) -> Value {
    let fs = rustix::fs::statvfs(dir).ok();
    json!({
        "dataBytes": vpbox_ledger::disk::tree_bytes(dir),
        "freeBytes": fs.as_ref().map(|s| s.f_bavail.saturating_mul(s.f_frsize)),
        "totalBytes": fs.as_ref().map(|s| s.f_blocks.saturating_mul(s.f_frsize)),
    })
}

/// How long the enrolled certificates' summary in `node_getNodes` stands before it is made
/// again (it reads every enrolled certificate).
const ENROLLED_EVERY_MS: u64 = 60_000;
/// How far ahead a certificate counts as expiring in that summary: a month, as the proxy's
/// `certificate-expiring` warning.
const EXPIRING_WITHIN_MS: u64 = 30 * 24 * 3600 * 1000;

/// The enrolled certificates by bank and profile at `now_ms`: how many are still valid, the
/// earliest notAfter among them (Unix seconds; absent when none is), how many of them expire
/// within [`EXPIRING_WITHIN_MS`], and how many have expired. An enrollment stays on the ledger
/// for good (a retired POSP's too), so expired ones are counted apart rather than alarming
/// forever; a revoked one counts until it expires. One that does not parse counts under bank
/// and profile `?`, as expired.
fn enrolled_summary(certs: &[Vec<u8>], now_ms: u64) -> Value {
    #[derive(Default)]
    struct Row {
        valid: u64,
        earliest: Option<u64>,
        expiring: u64,
        expired: u64,
    }
    let mut by: std::collections::BTreeMap<(String, String), Row> =
        std::collections::BTreeMap::new();
    let now = now_ms / 1000;
    for der in certs {
        let (key, not_after) = match vpbox_ca::cert::leaf_summary(der) {
            Ok(s) => {
                let at =
                    s.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                ((s.bank, s.profile), at)
            }
            Err(_) => (("?".to_string(), "?".to_string()), 0),
        };
        let row = by.entry(key).or_default();
        if not_after <= now {
            row.expired += 1;
            continue;
        }
        row.valid += 1;
        row.earliest = Some(row.earliest.map_or(not_after, |e| e.min(not_after)));
        if not_after <= now.saturating_add(EXPIRING_WITHIN_MS / 1000) {
            row.expiring += 1;
        }
    }
    Value::Array(
        by.into_iter()
            .map(|((bank, profile), r)| {
                let mut v = json!({"bank": bank, "profile": profile, "count": r.valid,
                                   "expiringWithin30Days": r.expiring, "expired": r.expired});
                if let (Some(o), Some(e)) = (v.as_object_mut(), r.earliest) {
                    o.insert("earliestNotAfter".into(), json!(e));
                }
                v
            })
            .collect(),
    )
}

/// A turn among the [`STATE_WAITERS_MAX`], handed back when dropped (a panicking call too).
struct WaitTurn<'a>(&'a AtomicUsize);

impl<'a> WaitTurn<'a> {
    fn take(count: &'a AtomicUsize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < STATE_WAITERS_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for WaitTurn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a transaction stamped `stamped` is refused by a node whose clock reads `now`: said as
/// a clock difference (the usual cause is a client whose clock drifted, or a replay), with the
/// window, not as raw timestamps.
fn stale(stamped: u64, now: u64, genesis: &Genesis) -> String {
    let off = std::time::Duration::from_secs(stamped.abs_diff(now) / 1000);
    let window = std::time::Duration::from_secs(genesis.tx_window_ms / 1000);
    let (off, window) = (humantime::format_duration(off), humantime::format_duration(window));
    if stamped > now {
        format!(
            "the transaction is stamped {off} ahead of the node's clock (the window is \
             {window}): is the sender's clock ahead? (check its time sync)"
        )
    } else {
        format!(
            "the transaction is stamped {off} behind the node's clock (the window is {window}): \
             an old transaction replayed, or the sender's clock is behind (check its time sync)"
        )
    }
}

/// `gov_waitState`'s parameters: the fingerprint the caller holds (none: answer at once) and
/// how long to wait for another.
fn state_wait(params: &Value) -> Result<(Option<String>, Duration), RpcError> {
    let bad = |m: &str| RpcError::new(RpcError::INVALID_PARAMS, m.to_string());
    let since = match param(params, 0, "since") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let d = v
                .as_str()
                .and_then(vpbox_sm::Digest::from_hex)
                .ok_or_else(|| bad("since must be a fingerprint: 32 bytes as 64 hex digits"))?;
            Some(hex0x(d.as_bytes()))
        }
    };
    let wait = match param(params, 1, "waitMs") {
        None | Some(Value::Null) => STATE_WAIT_MAX,
        Some(v) => v
            .as_u64()
            .filter(|ms| *ms <= STATE_WAIT_MAX.as_millis() as u64)
            .map(Duration::from_millis)
            .ok_or_else(|| bad("waitMs must be an integer from 0 to 30000"))?,
    };
    Ok((since, wait))
}

fn hex0x(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

impl NodeApi {
    fn send(&self, ev: Event) -> Result<(), RpcError> {
        self.offer(ev, || RpcError::new(RpcError::INTERNAL, "node stopping"))
    }

    /// Decodes a write's signed transaction: its form and kind (no ledger needed).
    fn decode(params: &Value, write: Write) -> Result<(Tx, Vec<u8>), RpcError> {
        let text = param(params, 0, "tx").and_then(Value::as_str).ok_or_else(|| {
            RpcError::new(RpcError::INVALID_PARAMS, "missing string parameter \"tx\" (hex)")
        })?;
        let text = text.strip_prefix("0x").unwrap_or(text);
        if text.len() > 2 * vpbox_ledger::tx::TX_MAX {
            return Err(RpcError::new(
                RpcError::TOO_LARGE,
                "transaction larger than the node accepts",
            ));
        }
        let bytes = hex::decode(text)
            .map_err(|_| RpcError::new(RpcError::INVALID_PARAMS, "tx is not hex"))?;
        let tx = Tx::decode(&bytes).map_err(|e| match e {
            // r or s out of range is a signature that cannot verify: documented as -32001.
            vpbox_ledger::Error::SignatureOutOfRange => RpcError::new(
                RpcError::BAD_SIGNATURE,
                format!("the signature does not verify: {e}"),
            ),
            e => RpcError::new(RpcError::INVALID_PARAMS, e.to_string()),
        })?;
        if !write.accepts(&tx.body().payload) {
            return Err(RpcError::new(RpcError::INVALID_PARAMS, write.method()));
        }
        Ok((tx, bytes))
    }

    /// Checks a decoded transaction against the committed `ledger`: signature, admission,
    /// a CRL's or a configuration change's validity, age.
    fn check(&self, ledger: &Ledger, tx: &Tx, write: Write) -> Result<(), RpcError> {
        let now = now_ms();
        let not_admitted = |why: String| RpcError::new(RpcError::UNKNOWN_SUBMITTER, why);
        let key = signing_key(ledger, &self.verified, tx).map_err(not_admitted)?;
        if !self.verified.verify(tx, &key) {
            return Err(RpcError::new(RpcError::BAD_SIGNATURE, "the signature does not verify"));
        }
        // Admission as the committed state decides it now; execution decides again at the
        // transaction's block, the same at every node.
        let roles = match write {
            Write::Anchor | Write::Batch => &[CertProfile::Posp][..],
            Write::Enroll | Write::Crl => &[CertProfile::Posp, CertProfile::Admin][..],
            Write::Config => &[CertProfile::Admin][..],
        };
        let decide = |role| match &tx.body().payload {
            Payload::Enroll(der) => ledger.admit_certificate(der, role, now),
            _ => ledger.admit(&tx.body().submitter, role, now).ok().flatten(),
        };
        if let Some(refusal) = refusal(roles.iter().map(|r| decide(*r))) {
            return Err(not_admitted(format!(
                "submitter {} is not admitted: {refusal}",
                tx.body().submitter.to_hex()
            )));
        }
        if let Payload::Crl(der) = &tx.body().payload {
            ledger.check_crl(der).map_err(|e| {
                RpcError::new(RpcError::INVALID_PARAMS, format!("CRL refused: {e}"))
            })?;
        }
        if let Payload::Config(_) = &tx.body().payload {
            // Approvals, quorum and the change itself, against the committed state; its block
            // decides again (another change may land first).
            ledger.check_config(tx).map_err(|e| {
                RpcError::new(RpcError::CONFIG_REFUSED, format!("configuration refused: {e}"))
            })?;
        }
        if tx.body().timestamp_ms.abs_diff(now) > self.genesis.tx_window_ms {
            return Err(RpcError::new(
                RpcError::STALE,
                stale(tx.body().timestamp_ms, now, &self.genesis),
            ));
        }
        Ok(())
    }

    /// The enrolled certificates' summary, made again when older than [`ENROLLED_EVERY_MS`].
    fn enrolled(&self) -> Result<Value, RpcError> {
        let mut cached = self.enrolled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, v)) = cached.as_ref()
            && at.elapsed() < Duration::from_millis(ENROLLED_EVERY_MS)
        {
            return Ok(v.clone());
        }
        let certs = self
            .ledger
            .read()
            .map_err(|_| poisoned())?
            .enrolled_certificates()
            .map_err(|e| RpcError::new(RpcError::INTERNAL, e.to_string()))?;
        let v = enrolled_summary(&certs, now_ms());
        *cached = Some((std::time::Instant::now(), v.clone()));
        Ok(v)
    }

    /// The disk figures ([`disk_usage`]), measured again when older than a minute.
    fn disk(&self) -> Value {
        let mut cached = self.disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, v)) = cached.as_ref()
            && at.elapsed() < Duration::from_millis(ENROLLED_EVERY_MS)
        {
            return v.clone();
        }
        let v = disk_usage(&self.data_dir);
        *cached = Some((std::time::Instant::now(), v.clone()));
        v
    }

    /// `gov_waitState`: the governance state once its fingerprint differs from `since`, or
    /// when the wait is over, whichever is first. The box's proxy holds one of these open at
    /// all times, so a committed CRL or membership change reaches it at once.
    fn wait_state(&self, params: &Value) -> Result<Value, RpcError> {
        let (since, wait) = state_wait(params)?;
        let _turn = WaitTurn::take(&self.state_waiters).ok_or_else(|| {
            RpcError::new(
                RpcError::BUSY,
                format!("{STATE_WAITERS_MAX} gov_waitState calls wait already; retry"),
            )
        })?;
        // Read before the state: a change committed while it is built still wakes the wait.
        let seen = self.trust_changes.count();
        let state = self.governance_state()?;
        if since.is_none() || state.get("fingerprint").and_then(Value::as_str) != since.as_deref() {
            return Ok(state);
        }
        self.trust_changes.wait_past(seen, wait);
        self.governance_state()
    }

    /// `gov_getState`: the committed governance state — what a proposal is written against —
    /// with its `fingerprint`: SM3 of the answer's JSON without `height` and `fingerprint`,
    /// which moves with every change of roots, banks, members or CRLs and with nothing else.
    fn governance_state(&self) -> Result<Value, RpcError> {
        let ledger = self.ledger.read().map_err(|_| poisoned())?;
        let state = ledger
            .governance()
            .ok_or_else(|| RpcError::new(RpcError::INTERNAL, "governance is off"))?;
        let pem = |der: &[u8]| {
            pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der)
                .unwrap_or_default()
        };
        let roots: Vec<Value> = state
            .roots
            .iter()
            .map(|r| {
                json!({
                    "bank": vpbox_ca::policy::root_info(r).map(|i| i.0).unwrap_or_default(),
                    "sm3": hex0x(vpbox_sm::sm3::hash(r).as_bytes()),
                    "certificate": pem(r),
                })
            })
            .collect();
        let nodes: Vec<Value> = state
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "id": n.id, "bank": n.bank, "name": n.name,
                    "consensusKey": hex::encode(n.consensus_key),
                    "certificate": hex0x(&n.certificate),
                })
            })
            .collect();
        let crls = ledger.crls().map_err(|e| RpcError::new(RpcError::INTERNAL, e.to_string()))?;
        let mut answer = json!({
            "chain": hex0x(state.chain.as_bytes()),
            "crls": crls.iter().map(|c| hex0x(c)).collect::<Vec<_>>(),
            "seq": state.seq,
            "banks": state.banks(),
            "maxNodeId": state.max_node_id,
            "roots": roots,
            "nodes": nodes,
        });
        let fingerprint = vpbox_sm::sm3::hash(answer.to_string().as_bytes());
        if let Some(o) = answer.as_object_mut() {
            o.insert("height".into(), json!(ledger.height().saturating_sub(1)));
            o.insert("fingerprint".into(), json!(hex0x(fingerprint.as_bytes())));
        }
        Ok(answer)
    }

    /// `tx_getTransactionReceipt` with `wait` true: the receipt once the transaction commits
    /// (a client that submitted it without waiting, or whose wait ran out, waits by its hash
    /// instead of sending it again); `pending` after [`WAIT_MAX`] if the driver holds it (-32004,
    /// retry, if the driver had not got to the wait); -32602 when this node has it neither
    /// committed nor pending.
    fn await_receipt(&self, params: &Value) -> Result<Value, RpcError> {
        self.await_receipt_within(params, WAIT_MAX)
    }

    /// [`Self::await_receipt`], waiting at most `wait_max`.
    fn await_receipt_within(&self, params: &Value, wait_max: Duration) -> Result<Value, RpcError> {
        let hash = vpbox_sm::Digest(crate::rpc::bytes32(params, 0, "hash")?);
        let (reply, answer) = channel();
        let stored = Stored::default();
        let event = Event::Await { hash, reply: Reply::Thread(reply), stored: stored.clone() };
        self.offer(event, stopping)?;
        match answer.recv_timeout(wait_max) {
            Ok(Outcome::Committed { hash, receipt, .. }) => {
                Ok(crate::api::receipt_json(&hash, &receipt))
            }
            Ok(Outcome::Busy) => {
                Err(RpcError::new(RpcError::BUSY, "too many clients wait for this transaction"))
            }
            // Committed, its receipt not readable at that moment: as a wait that ran out.
            Ok(Outcome::Accepted(_)) => {
                Ok(json!({"txHash": hex0x(hash.as_bytes()), "status": "pending"}))
            }
            Ok(_) => Err(RpcError::new(
                RpcError::INVALID_PARAMS,
                "no receipt: the transaction is neither committed nor pending on this node",
            )),
            // Held by the driver, among the transaction's waiters: it will commit.
            Err(RecvTimeoutError::Timeout) if stored.is_set() => {
                Ok(json!({"txHash": hex0x(hash.as_bytes()), "status": "pending"}))
            }
            // The driver had not got to the wait: it cannot say.
            Err(RecvTimeoutError::Timeout) => Err(timed_out()),
            Err(RecvTimeoutError::Disconnected) => Err(stopping()),
        }
    }

    /// A write (`anchor_put`, `anchor_putBatch`, …) on a thread that may block: checked,
    /// handed to the driver, and answered when the driver does (or the wait runs out).
    fn put(&self, params: &Value, write: Write) -> Result<Value, RpcError> {
        let wait = wait(params)?;
        let (tx, bytes) = Self::decode(params, write)?;
        let ledger = self.ledger.read().map_err(|_| poisoned())?;
        self.check(&ledger, &tx, write)?;
        // Not held while the driver stores or commits it: a commit takes the ledger.
        drop(ledger);
        let (reply, answer) = channel();
        let put = self.submit(tx, bytes, wait, write, Reply::Thread(reply))?;
        let outcome = put.await_on_thread(&answer);
        put.answer(outcome)
    }

    /// `anchor_put` without a thread held while it waits ([`Methods::call_later`]): decoded,
    /// checked against the committed ledger (its signature verified: tens of microseconds),
    /// handed to the driver without waiting for room (a full queue is -32004, retry), and its
    /// answer awaited. `None` (left to [`Self::put`] on a blocking thread) while a commit holds
    /// the ledger or waits for it: the event loop never waits for its lock.
    fn put_later(&self, params: &Value) -> Option<Later> {
        let ready =
            |r: Result<Value, RpcError>| -> Option<Later> { Some(Box::pin(std::future::ready(r))) };
        let decoded =
            wait(params).and_then(|wait| Self::decode(params, Write::Anchor).map(|tx| (wait, tx)));
        let (wait, (tx, bytes)) = match decoded {
            Ok(d) => d,
            Err(e) => return ready(Err(e)),
        };
        let ledger = match self.ledger.try_read() {
            Ok(l) => l,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(_)) => return ready(Err(poisoned())),
        };
        let checked = self.check(&ledger, &tx, Write::Anchor);
        drop(ledger);
        if let Err(e) = checked {
            return ready(Err(e));
        }
        let (reply, mut answer) = tokio::sync::mpsc::unbounded_channel();
        let put = match self.submit(tx, bytes, wait, Write::Anchor, Reply::Task(reply)) {
            Ok(p) => p,
            Err(e) => return ready(Err(e)),
        };
        Some(Box::pin(async move {
            let outcome = put.await_on_task(&mut answer).await;
            put.answer(outcome)
        }))
    }

    /// Hands a checked write to the driver, whose answer goes to `reply`.
    fn submit(
        &self,
        tx: Tx,
        bytes: Vec<u8>,
        wait: bool,
        write: Write,
        reply: Reply,
    ) -> Result<Submitted, RpcError> {
        let hash = tx.hash();
        let stored = wait.then(Stored::default);
        self.offer(
            Event::Submit { txs: vec![(tx, bytes)], wait: stored.clone(), reply },
            stopping,
        )?;
        Ok(Submitted { hash, stored, batch: write == Write::Batch })
    }

    /// Queues `event` for the driver without waiting for room: a full queue (the driver far
    /// behind) is -32004 at once, on every path, so that no RPC thread waits on it unbounded;
    /// a driver that is gone is `gone`'s error.
    fn offer(&self, event: Event, gone: fn() -> RpcError) -> Result<(), RpcError> {
        match self.events.offer(event) {
            Ok(true) => Ok(()),
            Ok(false) => Err(RpcError::new(RpcError::BUSY, "the node is busy; retry")),
            Err(_) => Err(gone()),
        }
    }
}

/// How a wait for the driver's answer ended without one.
enum NoAnswer {
    /// The wait ran out; `stored`: the driver had said the transaction is durable
    /// ([`Stored`]).
    TimedOut { stored: bool },
    /// The driver dropped the channel unanswered: it is stopping.
    Closed,
}

/// -32004 for a wait that ran out before the driver said it holds the transaction: retry (a
/// transaction sent twice is stored once).
fn timed_out() -> RpcError {
    RpcError::new(RpcError::BUSY, "the node did not answer in time; retry")
}

/// -32603 (documented: the node failed or is stopping) for a node that stops before it
/// answers: the client retries, here once the node is back or at another node (a transaction
/// sent twice is stored once).
fn stopping() -> RpcError {
    RpcError::new(
        RpcError::INTERNAL,
        "the node is stopping; retry (a transaction sent twice is stored once)",
    )
}

/// A write handed to the driver: what its answer needs.
struct Submitted {
    hash: vpbox_sm::Digest,
    /// The client waits for the commit (`Some`): the driver's word that the transaction is
    /// stored meanwhile.
    stored: Option<Stored>,
    /// `anchor_putBatch`: the answer lists each pair's result.
    batch: bool,
}

impl Submitted {
    /// How long the client waits for the driver's answer.
    fn wait_max(&self) -> Duration {
        if self.stored.is_some() { WAIT_MAX } else { Duration::from_secs(10) }
    }

    /// The driver's answer, awaited by a thread (a call on one of the blocking threads) for
    /// at most [`Self::wait_max`].
    fn await_on_thread(&self, answer: &Receiver<Outcome>) -> Result<Outcome, NoAnswer> {
        answer.recv_timeout(self.wait_max()).map_err(|e| match e {
            RecvTimeoutError::Timeout => self.timed_out(),
            RecvTimeoutError::Disconnected => NoAnswer::Closed,
        })
    }

    /// [`Self::await_on_thread`] for a task of the event loop, on its (tokio) clock.
    async fn await_on_task(
        &self,
        answer: &mut tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    ) -> Result<Outcome, NoAnswer> {
        match tokio::time::timeout(self.wait_max(), answer.recv()).await {
            Ok(Some(o)) => Ok(o),
            Ok(None) => Err(NoAnswer::Closed),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> NoAnswer {
        NoAnswer::TimedOut { stored: self.stored.as_ref().is_some_and(Stored::is_set) }
    }

    /// The answer, from the driver's `outcome`. A wait for the commit that runs out after the
    /// driver said the transaction is durable answers "pending": the client asks again with
    /// the same transaction, or for its receipt. Any other wait that runs out is -32004,
    /// retry: the driver has not said it stored the transaction (it may still, later; a
    /// transaction sent twice is stored once). A driver that dropped the channel unanswered
    /// is stopping (the transaction may not be stored): -32603, retry.
    fn answer(self, outcome: Result<Outcome, NoAnswer>) -> Result<Value, RpcError> {
        let Self { hash, stored, batch } = self;
        let wait = stored.is_some();
        let outcome = match outcome {
            Ok(o) => o,
            Err(NoAnswer::TimedOut { stored: true }) if wait => Outcome::Accepted(hash),
            Err(NoAnswer::TimedOut { .. }) => return Err(timed_out()),
            Err(NoAnswer::Closed) => return Err(stopping()),
        };
        Ok(match outcome {
            Outcome::Accepted(h) => json!({"txHash": hex0x(h.as_bytes()), "status": "pending"}),
            Outcome::Committed { hash, receipt, duplicate } => {
                let mut v = json!({
                    "txHash": hex0x(hash.as_bytes()),
                    "status": "committed",
                    "blockNumber": receipt.height,
                    "duplicate": duplicate,
                });
                if let Some(obj) = v.as_object_mut() {
                    if batch {
                        obj.insert(
                            "results".into(),
                            Value::Array(crate::api::results_json(&receipt)),
                        );
                    } else if let Some(first) = receipt.outcomes.first() {
                        let (ok, message) = first.answer();
                        obj.insert("ok".into(), json!(ok));
                        obj.insert("message".into(), json!(message));
                    }
                }
                v
            }
            Outcome::Busy => {
                return Err(RpcError::new(RpcError::BUSY, "too many pending transactions; retry"));
            }
            Outcome::Failed(e) => {
                return Err(RpcError::new(RpcError::INTERNAL, format!("not stored: {e}")));
            }
            Outcome::Unknown => {
                return Err(RpcError::new(RpcError::INTERNAL, "the node lost the transaction"));
            }
        })
    }
}

impl Methods for NodeApi {
    fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        match method {
            "anchor_put" => self.put(params, Write::Anchor),
            "anchor_putBatch" => self.put(params, Write::Batch),
            "cert_enroll" => self.put(params, Write::Enroll),
            "cert_publishCrl" => self.put(params, Write::Crl),
            "gov_submit" => self.put(params, Write::Config),
            "gov_getState" => self.governance_state(),
            "gov_waitState" => self.wait_state(params),
            "tx_getTransactionReceipt" if wait_or(params, false)? => self.await_receipt(params),
            "node_getNodes" => {
                let (reply, answer) = channel();
                self.send(Event::Nodes(reply))?;
                let mut nodes = answer.recv_timeout(Duration::from_secs(10)).map_err(|_| {
                    RpcError::new(RpcError::BUSY, "the node did not answer in time")
                })?;
                // Read here, on the RPC thread, not by the driver (consensus); a failure leaves
                // the field out rather than failing the node's whole state.
                if let (Some(o), Ok(certs)) = (nodes.as_object_mut(), self.enrolled()) {
                    o.insert("certificates".into(), certs);
                }
                if let Some(o) = nodes.as_object_mut() {
                    o.insert("disk".into(), self.disk());
                }
                Ok(nodes)
            }
            _ => self.read.call(method, params),
        }
    }

    fn call_now(&self, method: &str, params: &Value) -> Option<Result<Value, RpcError>> {
        self.ready_now(method).then(|| self.read.call_now(method, params)).flatten()
    }

    fn ready_now(&self, method: &str) -> bool {
        // Only reads are ready at once, and none of those handled above (they ask the driver).
        method == "block_getChainHeight" && self.read.ready_now(method)
    }

    /// See [`Self::put_later`].
    fn call_later(&self, method: &str, params: &Value) -> Option<Later> {
        if self.ready_later(method) { self.put_later(params) } else { None }
    }

    /// `anchor_put` only: one small transaction, one signature to verify. The others are
    /// rare (enrolment, CRLs, governance) or costly to check (a batch's 320 KB to hash), and
    /// run on a blocking thread.
    fn ready_later(&self, method: &str) -> bool {
        method == "anchor_put"
    }
}

/// Why a submitter tried in each of its allowed roles is refused, or `None` when one role
/// admits it. A role the ledger cannot decide (admission off, or its state unreadable)
/// refuses: fail closed. When every role refuses, the reason told is the first that is not the
/// mere role mismatch of a certificate tried in another role: a revoked POSP publishing a CRL
/// (a POSP's or an admin's right) hears "revoked", not "profile posp where admin is required".
fn refusal(decisions: impl IntoIterator<Item = Option<Decision>>) -> Option<String> {
    let mut told: Option<(bool, String)> = None;
    for d in decisions {
        let (mismatch, why) = match d {
            Some(Decision::Allow(_)) => return None,
            Some(Decision::Deny(r)) => {
                (matches!(r, DenyReason::WrongProfile { .. }), r.to_string())
            }
            None => (false, "admission is off".to_string()),
        };
        if told.as_ref().is_none_or(|(m, _)| *m && !mismatch) {
            told = Some((mismatch, why));
        }
    }
    Some(told.map_or_else(|| "no role may submit this".into(), |(_, why)| why))
}

#[cfg(test)]
mod tests {
    use vpbox_ledger::tx::TxBody;
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;

    fn api(dir: &Path) -> (NodeApi, Inbox) {
        let ledger = Arc::new(RwLock::new(Ledger::open(dir).unwrap()));
        let genesis = Genesis {
            chain_id: "t".into(),
            hash: vpbox_sm::sm3::hash(b"t"),
            bytes: b"t".to_vec(),
            timestamp_ms: 0,
            tx_window_ms: 600_000,
            params: vpbox_consensus::Params::default(),
            nodes: vec![],
            roots: vec![],
        };
        let inbox = Inbox::new();
        let trust_changes = ledger.read().unwrap().trust_changes();
        let api = NodeApi {
            read: ReadApi::new(Arc::clone(&ledger), genesis.bytes.clone().into()),
            ledger,
            genesis: Arc::new(genesis),
            events: inbox.outbox(Source::Local),
            trust_changes,
            state_waiters: AtomicUsize::new(0),
            enrolled: Mutex::new(None),
            verified: Arc::default(),
            data_dir: dir.to_path_buf(),
            disk: Mutex::new(None),
        };
        (api, inbox)
    }

    #[test]
    fn wait_state_answers_on_a_new_fingerprint_waits_on_the_same_and_has_four_turns() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _inbox) = api(dir.path());
        let (c, m) = code(api.call("gov_waitState", &json!([])));
        assert_eq!((c, m.as_str()), (RpcError::INTERNAL, "governance is off"));
        api.ledger.write().unwrap().set_roots(&[]).unwrap();
        let state = api.call("gov_getState", &json!([])).unwrap();
        let fp = state["fingerprint"].as_str().unwrap().to_string();
        // The fingerprint is SM3 of the answer without its height and itself.
        let mut bare = state.clone();
        bare.as_object_mut().unwrap().retain(|k, _| k != "height" && k != "fingerprint");
        assert_eq!(fp, hex0x(vpbox_sm::sm3::hash(bare.to_string().as_bytes()).as_bytes()));
        // No fingerprint, or another one: at once, although the wait asked for is long.
        let other = format!("0x{}", "ab".repeat(32));
        for params in [json!([]), json!([null, 30000]), json!({"since": other, "waitMs": 30000})] {
            let start = std::time::Instant::now();
            assert_eq!(api.call("gov_waitState", &params).unwrap(), state, "{params}");
            assert!(start.elapsed() < Duration::from_secs(5), "{params}");
        }
        // The same one: after the wait, unchanged (`0x` optional, as everywhere).
        let start = std::time::Instant::now();
        let same = json!([fp.trim_start_matches("0x"), 300]);
        assert_eq!(api.call("gov_waitState", &same).unwrap(), state);
        assert!(start.elapsed() >= Duration::from_millis(300));
        for bad in
            [json!(["0x12"]), json!([7]), json!([fp, 30001]), json!([fp, -1]), json!([fp, "5"])]
        {
            assert_eq!(code(api.call("gov_waitState", &bad)).0, RpcError::INVALID_PARAMS, "{bad}");
        }
        // Four wait at once; the fifth is told to retry, and gets a turn once one is over.
        std::thread::scope(|scope| {
            let waits: Vec<_> = (0..STATE_WAITERS_MAX)
                .map(|_| scope.spawn(|| api.call("gov_waitState", &json!([fp, 1500]))))
                .collect();
            while api.state_waiters.load(Ordering::Acquire) < STATE_WAITERS_MAX {
                std::thread::yield_now();
            }
            let (c, m) = code(api.call("gov_waitState", &json!([fp, 1500])));
            assert_eq!(c, RpcError::BUSY, "{m}");
            assert_eq!(api.call("gov_getState", &json!([])).unwrap(), state, "reads still answer");
            for w in waits {
                assert_eq!(w.join().unwrap().unwrap(), state);
            }
        });
        assert_eq!(api.state_waiters.load(Ordering::Acquire), 0, "every turn handed back");
        assert_eq!(api.call("gov_waitState", &json!([fp, 0])).unwrap(), state);
    }

    /// The summary counts by bank and profile, with the earliest notAfter and those within a
    /// month (an expired one too); garbage counts apart. Certificates are real, issued by a
    /// test CA.
    #[test]
    fn enrolled_certificates_are_summed_up_by_bank_and_profile() {
        use vpbox_ca::CertProfile;
        use vpbox_ca::cert::{Grant, check_request, issue, random_serial, self_signed_root};
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now_ms = 1_800_000_000_000;
        let ca = SoftwareSigner::new(SecretKey::generate().unwrap());
        let root =
            self_signed_root(&ca, "bank-a", "CN", random_serial([1; 16]).unwrap(), now, 3650)
                .unwrap();
        let leaf = |profile: CertProfile, cn: &str, serial: u8, days_ago: u64, days: u32| {
            let key = SoftwareSigner::new(SecretKey::generate().unwrap());
            let subject = format!("CN={cn},OU={},O=bank-a", profile.name());
            let csr = vpbox_ca::build_csr(&key, &subject).unwrap();
            let req = check_request(&csr, profile, "bank-a").unwrap();
            let grant = Grant {
                profile,
                serial: random_serial([serial; 16]).unwrap(),
                now: now - Duration::from_secs(days_ago * 86_400),
                days,
                dns_names: vec![],
            };
            let pem = issue(&ca, &root, &req, grant).unwrap();
            pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1
        };
        let certs = vec![
            leaf(CertProfile::Posp, "p1", 2, 0, 365),
            leaf(CertProfile::Posp, "p2", 3, 350, 365), // 15 days left
            leaf(CertProfile::Posp, "p3", 4, 400, 365), // expired 35 days ago
            leaf(CertProfile::Admin, "a1", 5, 0, 100),
            b"not a certificate".to_vec(),
        ];
        let day = 86_400;
        let at = |days_from_now: i64| (1_800_000_000 + days_from_now * day) as u64;
        let summary = enrolled_summary(&certs, now_ms);
        let rows = summary.as_array().unwrap();
        assert_eq!(rows.len(), 3, "{summary}");
        let row = |bank: &str, profile: &str| {
            rows.iter().find(|r| r["bank"] == bank && r["profile"] == profile).unwrap().clone()
        };
        let posp = row("bank-a", "posp");
        let counts = |r: &Value| {
            (r["count"].clone(), r["expiringWithin30Days"].clone(), r["expired"].clone())
        };
        assert_eq!(counts(&posp), (json!(2), json!(1), json!(1)), "{posp}");
        // The earliest of the valid ones (p2's, 15 days left), not the expired p3's; a day
        // either side of the computed date.
        let earliest = posp["earliestNotAfter"].as_u64().unwrap();
        assert!(earliest.abs_diff(at(15)) <= day as u64, "{posp}");
        let admin = row("bank-a", "admin");
        assert_eq!(counts(&admin), (json!(1), json!(0), json!(0)));
        assert!(admin["earliestNotAfter"].as_u64().unwrap().abs_diff(at(100)) <= day as u64);
        let garbage = row("?", "?");
        assert_eq!(counts(&garbage), (json!(0), json!(0), json!(1)));
        assert!(garbage.get("earliestNotAfter").is_none(), "none valid: {garbage}");
        assert_eq!(enrolled_summary(&[], now_ms), json!([]));
    }

    /// The data directory's files are counted, nested ones too; its filesystem's free and
    /// total bytes are there, free not above total.
    #[test]
    fn disk_usage_counts_the_files_and_asks_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(dir.path().join("ledger/x")).unwrap();
        std::fs::write(dir.path().join("ledger/x/b"), vec![0u8; 234]).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).unwrap();
        let v = disk_usage(dir.path());
        assert_eq!(v["dataBytes"], 1234, "{v}");
        let (free, total) = (v["freeBytes"].as_u64().unwrap(), v["totalBytes"].as_u64().unwrap());
        assert!(total > 0 && free <= total, "{v}");
        assert_eq!(disk_usage(&dir.path().join("missing"))["dataBytes"], 0);
    }

    /// A submitter refused in every role hears the real reason, not the role mismatch of the
    /// other role; one role that admits is enough; an undecidable role refuses.
    #[test]
    fn a_refusal_names_the_reason_not_the_other_roles_mismatch() {
        use vpbox_ca::policy::Identity;
        let wrong = || {
            Some(Decision::Deny(DenyReason::WrongProfile {
                expected: "admin",
                found: "posp".into(),
            }))
        };
        let revoked = || Some(Decision::Deny(DenyReason::Revoked));
        assert_eq!(refusal([revoked(), wrong()]).as_deref(), Some("revoked"));
        assert_eq!(refusal([wrong(), revoked()]).as_deref(), Some("revoked"));
        assert_eq!(refusal([wrong()]).as_deref(), Some("profile \"posp\" where admin is required"));
        assert_eq!(refusal([wrong(), None]).as_deref(), Some("admission is off"));
        let allow = Some(Decision::Allow(Identity {
            bank: "bank-a".into(),
            name: "p".into(),
            role: CertProfile::Posp,
            serial: vec![1],
            key_fingerprint: vpbox_sm::sm3::hash(b"p"),
        }));
        assert_eq!(refusal([wrong(), allow]), None);
        assert!(refusal([]).is_some(), "no role: refused");
    }

    /// A stale transaction is told as a clock difference, ahead or behind, with the window.
    #[test]
    fn stale_transactions_name_the_clock_difference() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _inbox) = api(dir.path());
        let now = 1_800_000_000_000;
        let ahead = stale(now + 4 * 60_000 + 12_000 + 600_000, now, &api.genesis);
        assert!(
            ahead.starts_with(
                "the transaction is stamped 14m 12s ahead of the node's clock (the window is 10m)"
            ),
            "{ahead}"
        );
        let behind = stale(now - 3_600_000, now, &api.genesis);
        assert!(behind.starts_with("the transaction is stamped 1h behind"), "{behind}");
        assert!(behind.contains("replayed"), "{behind}");
    }

    fn code(r: Result<Value, RpcError>) -> (i64, String) {
        let e = r.expect_err("an error");
        (e.code, e.message)
    }

    /// The height is ready at once (answered on the HTTP server's event loop) unless a commit
    /// holds the ledger; every other method, reads of RocksDB and the driver's among them, is
    /// left to `call` on a thread that may block.
    #[test]
    fn only_the_height_is_ready_at_once_and_not_while_a_commit_holds_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _inbox) = api(dir.path());
        let height = api.call("block_getChainHeight", &json!([])).unwrap();
        assert!(api.ready_now("block_getChainHeight"));
        assert_eq!(api.call_now("block_getChainHeight", &json!([])), Some(Ok(height)));
        let key = json!([format!("0x{}", "ab".repeat(32))]);
        for method in ["anchor_get", "tx_getTransactionReceipt", "node_getNodes", "anchor_put"] {
            assert!(!api.ready_now(method), "{method}");
            assert_eq!(api.call_now(method, &key), None, "{method}");
        }
        let commit = api.ledger.write().unwrap();
        assert_eq!(api.call_now("block_getChainHeight", &json!([])), None);
        drop(commit);
    }

    /// `tx_getTransactionReceipt` with `wait` asks the driver and answers what it says: the
    /// receipt, -32004 past the waiters' cap, -32602 for a transaction it does not have, pending
    /// for one committed whose receipt it could not read at that moment.
    /// Without `wait` (absent or false) the driver is not asked.
    #[test]
    fn a_wait_by_hash_answers_what_the_driver_says() {
        let dir = tempfile::tempdir().unwrap();
        let (api, inbox) = api(dir.path());
        let api = Arc::new(api);
        let hash = vpbox_sm::sm3::hash(b"a batch");
        let h = format!("0x{}", hash.to_hex());
        let receipt = vpbox_ledger::Receipt {
            height: 7,
            index: 2,
            outcomes: vec![vpbox_ledger::contract::PutOutcome::Success],
        };
        let answers = [
            Outcome::Committed { hash, receipt, duplicate: false },
            Outcome::Busy,
            Outcome::Unknown,
            Outcome::Accepted(hash),
        ];
        let mut got = Vec::new();
        for answer in answers {
            let (caller, h) = (Arc::clone(&api), h.clone());
            let call = std::thread::spawn(move || {
                caller.call("tx_getTransactionReceipt", &json!({"hash": h, "wait": true}))
            });
            let events = inbox.recv(Duration::from_secs(5), 1).unwrap();
            match events.into_iter().next() {
                Some(Event::Await { hash: asked, reply, .. }) => {
                    assert_eq!(asked, hash);
                    reply.send(answer).unwrap();
                }
                _ => panic!("the driver was not asked"),
            }
            got.push(call.join().unwrap());
        }
        let committed = got.remove(0).unwrap();
        assert_eq!(committed["blockNumber"], 7);
        assert_eq!(committed["transactionIndex"], 2);
        assert_eq!(committed["results"], json!([{"ok": true, "message": "Success"}]));
        assert_eq!(code(got.remove(0)).0, RpcError::BUSY);
        let (c, m) = code(got.remove(0));
        assert_eq!(c, RpcError::INVALID_PARAMS);
        assert!(m.contains("neither committed nor pending"), "{m}");
        // Committed, its receipt not readable at that moment: pending, ask again.
        assert_eq!(got.remove(0).unwrap()["status"], "pending");
        // No answer in time: pending once the driver holds the wait, retry before.
        for held in [true, false] {
            let params = json!({"hash": h, "wait": true});
            let answer = std::thread::scope(|scope| {
                let call =
                    scope.spawn(|| api.await_receipt_within(&params, Duration::from_secs(2)));
                let events = inbox.recv(Duration::from_secs(5), 1).unwrap();
                let Some(Event::Await { reply, stored, .. }) = events.into_iter().next() else {
                    panic!("the driver was not asked")
                };
                if held {
                    stored.set();
                }
                let answer = call.join().unwrap();
                drop(reply);
                answer
            });
            match answer {
                Ok(v) => assert!(held && v["status"] == "pending", "{v}"),
                Err(e) => {
                    assert!(!held && e.code == RpcError::BUSY, "{e:?}");
                    assert!(e.message.contains("did not answer in time"), "{e:?}");
                }
            }
        }
        // Not waiting: the ledger answers (it has no such receipt), the driver is not asked.
        for params in [json!([h]), json!([h, false])] {
            assert_eq!(
                code(api.call("tx_getTransactionReceipt", &params)).0,
                RpcError::INVALID_PARAMS
            );
        }
        assert!(inbox.recv(Duration::from_millis(50), 1).unwrap().is_empty());
        let (c, m) = code(api.call("tx_getTransactionReceipt", &json!([h, "true"])));
        assert_eq!(c, RpcError::INVALID_PARAMS);
        assert!(m.contains("wait must be a JSON boolean"), "{m}");
    }

    #[test]
    fn writes_answer_the_documented_codes() {
        let dir = tempfile::tempdir().unwrap();
        let (api, _inbox) = api(dir.path());
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let body = TxBody {
            submitter: s.public_key().fingerprint(),
            nonce: 1,
            timestamp_ms: now_ms(),
            payload: Payload::AnchorPut { key: [1; 32], value: [2; 32] },
        };
        let good = body.sign(&s).unwrap().encode();
        let tx = |bytes: &[u8]| hex::encode(bytes);
        // Not enrolled: -32002 (this ledger has no members), with wait absent or a boolean.
        for params in [json!([tx(&good)]), json!([tx(&good), false]), json!({"tx": tx(&good)})] {
            assert_eq!(code(api.call("anchor_put", &params)).0, RpcError::UNKNOWN_SUBMITTER);
        }
        // `wait` is a boolean or nothing: strings, numbers and null are refused, by position
        // and by name.
        for wait in [json!("false"), json!("true"), json!(0), json!(1), json!(null), json!([])] {
            for params in [json!([tx(&good), wait.clone()]), json!({"tx": tx(&good), "wait": wait})]
            {
                let (c, m) = code(api.call("anchor_putBatch", &params));
                assert_eq!(c, RpcError::INVALID_PARAMS, "{params}");
                assert!(m.contains("wait must be a JSON boolean"), "{m}");
            }
        }
        // A signature whose r or s is out of range (zero, or not below n) is a bad signature,
        // as documented; a transaction cut short is not a transaction.
        for sig in [[0u8; 64], [0xff; 64]] {
            let mut bad = good[..good.len() - 64].to_vec();
            bad.extend_from_slice(&sig);
            let (c, m) = code(api.call("anchor_put", &json!([tx(&bad)])));
            assert_eq!(c, RpcError::BAD_SIGNATURE, "{m}");
        }
        let (c, _) = code(api.call("anchor_put", &json!([tx(&good[..good.len() - 1])])));
        assert_eq!(c, RpcError::INVALID_PARAMS);
    }

    /// A POSP signer whose certificate `api`'s ledger has committed under a bank root it
    /// trusts: its anchors are admitted.
    fn enrolled_posp(api: &NodeApi) -> SoftwareSigner {
        use vpbox_ca::cert::{Grant, check_request, issue, random_serial, self_signed_root};
        let now = std::time::UNIX_EPOCH + Duration::from_millis(now_ms());
        let ca = SoftwareSigner::new(SecretKey::generate().unwrap());
        let root = self_signed_root(&ca, "bank-a", "CN", random_serial([1; 16]).unwrap(), now, 30)
            .unwrap();
        let posp = SoftwareSigner::new(SecretKey::generate().unwrap());
        let csr = vpbox_ca::build_csr(&posp, "CN=posp-1,OU=posp,O=bank-a").unwrap();
        let req = check_request(&csr, CertProfile::Posp, "bank-a").unwrap();
        let grant = Grant {
            profile: CertProfile::Posp,
            serial: random_serial([2; 16]).unwrap(),
            now,
            days: 30,
            dns_names: vec![],
        };
        let der = |pem: &str| pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1;
        let cert = der(&issue(&ca, &root, &req, grant).unwrap());
        let mut ledger = api.ledger.write().unwrap();
        ledger.set_roots(&[der(&root)]).unwrap();
        ledger.init_genesis(&vpbox_ledger::block::Block::genesis(api.genesis.hash, 0)).unwrap();
        let enroll = signed(&posp, 1, Payload::Enroll(cert));
        let executed = ledger.execute(&[], vec![Tx::decode(&enroll).unwrap()]).unwrap();
        ledger.commit(&executed, &[]).unwrap();
        posp
    }

    fn signed(s: &SoftwareSigner, nonce: u64, payload: Payload) -> Vec<u8> {
        let body = TxBody {
            submitter: s.public_key().fingerprint(),
            nonce,
            timestamp_ms: now_ms(),
            payload,
        };
        body.sign(s).unwrap().encode()
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    /// `anchor_put` is checked on the calling thread and its answer awaited: the same answers
    /// as on a blocking thread, with `wait` and without, for each of the driver's outcomes, a
    /// driver that drops the channel (stopping) and a bad transaction; a full queue is -32004
    /// at once, not a wait for room. Declined while a commit holds the ledger; no other method
    /// is taken.
    #[test]
    fn an_anchor_put_answered_later_answers_as_a_blocking_call() {
        let dir = tempfile::tempdir().unwrap();
        let (api, inbox) = api(dir.path());
        let posp = enrolled_posp(&api);
        let put = |nonce: u64, wait: bool| {
            let key = [nonce as u8; 32];
            let tx = signed(&posp, nonce, Payload::AnchorPut { key, value: key });
            json!([hex::encode(tx), wait])
        };
        // The driver's part: the submission answered with `outcome` (or its channel dropped).
        let answer_with = |wait: bool, outcome: Option<fn(vpbox_sm::Digest) -> Outcome>| {
            let events = inbox.recv(Duration::from_secs(5), 1).unwrap();
            match events.into_iter().next() {
                Some(Event::Submit { txs, wait: w, reply }) if w.is_some() == wait => {
                    let task = matches!(reply, Reply::Task(_));
                    if let Some(o) = outcome {
                        reply.send(o(txs[0].0.hash())).unwrap();
                    }
                    task
                }
                _ => panic!("not submitted"),
            }
        };
        let committed: fn(_) -> _ = |hash| Outcome::Committed {
            hash,
            receipt: vpbox_ledger::Receipt {
                height: 7,
                index: 2,
                outcomes: vec![vpbox_ledger::contract::PutOutcome::Success],
            },
            duplicate: false,
        };
        type Answers = Option<fn(vpbox_sm::Digest) -> Outcome>;
        // The status answered, or the error's code and a part of its message.
        type Due = Result<&'static str, (i64, &'static str)>;
        let cases: [(bool, Answers, Due); 8] = [
            (false, Some(Outcome::Accepted), Ok("pending")),
            (true, Some(committed), Ok("committed")),
            (true, Some(Outcome::Accepted), Ok("pending")),
            (false, Some(|_| Outcome::Busy), Err((RpcError::BUSY, "too many pending"))),
            (false, Some(|_| Outcome::Failed("disk full".into())), Err((-32603, "disk full"))),
            (true, Some(|_| Outcome::Unknown), Err((-32603, "lost the transaction"))),
            (true, None, Err((RpcError::INTERNAL, "the node is stopping"))),
            (false, None, Err((RpcError::INTERNAL, "the node is stopping"))),
        ];
        for (nonce, (wait, outcome, expected)) in (2..).zip(cases) {
            let params = put(nonce, wait);
            let blocking = std::thread::scope(|scope| {
                let call = scope.spawn(|| api.call("anchor_put", &params));
                assert!(!answer_with(wait, outcome), "a thread's channel");
                call.join().unwrap()
            });
            let later = api.call_later("anchor_put", &params).expect("taken");
            assert!(answer_with(wait, outcome), "a task's channel");
            let later = run(later);
            assert_eq!(later, blocking, "{nonce}");
            match (later, expected) {
                (Ok(v), Ok(status)) => assert_eq!(v["status"], status, "{v}"),
                (Err(e), Err((code, m))) => {
                    assert!(e.code == code && e.message.contains(m), "{e:?}")
                }
                (got, _) => panic!("{nonce}: {got:?} where {expected:?} was due"),
            }
        }
        // A committed anchor's answer: its block and its outcome.
        let later = api.call_later("anchor_put", &put(20, true)).unwrap();
        answer_with(true, Some(committed));
        let answer = run(later).unwrap();
        assert_eq!(answer["blockNumber"], 7);
        assert_eq!(
            (answer["ok"].clone(), answer["message"].clone()),
            (json!(true), json!("Success"))
        );
        // No answer in time: with `wait`, pending once the driver said the transaction is
        // stored, retry if it had not; without `wait`, retry. (The tokio clock, paused, runs
        // ahead while nothing else is due.)
        let mut held = vec![];
        for (wait, stored, nonce) in [(true, true, 21), (true, false, 23), (false, false, 22)] {
            let later = api.call_later("anchor_put", &put(nonce, wait)).unwrap();
            match inbox.recv(Duration::from_secs(5), 1).unwrap().pop() {
                Some(Event::Submit { reply, wait: flag, .. }) => {
                    assert_eq!(flag.is_some(), wait);
                    if stored {
                        flag.unwrap().set();
                    }
                    held.push(reply)
                }
                _ => panic!("not submitted"),
            }
            let paused = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let start = paused.block_on(async { tokio::time::Instant::now() });
            // Bounded: a wait without its timeout fails here rather than hangs.
            let answer = paused
                .block_on(async move { tokio::time::timeout(2 * WAIT_MAX, later).await })
                .expect("the wait has a timeout");
            let waited = paused.block_on(async move { start.elapsed() });
            match answer {
                Ok(v) => assert!(stored && v["status"] == "pending" && waited >= WAIT_MAX, "{v}"),
                Err(e) => {
                    assert!(!stored && e.code == RpcError::BUSY, "{e:?}");
                    assert!(e.message.contains("did not answer in time"), "{e:?}");
                    let due = if wait { WAIT_MAX.as_secs() } else { 10 };
                    assert!((due..due + 1).contains(&waited.as_secs()), "{waited:?}");
                }
            }
        }
        // Decoded before the ledger is taken: a malformed write is told at once while a
        // commit holds the ledger, on both paths.
        std::thread::scope(|scope| {
            let commit = api.ledger.write().unwrap();
            let later = api.call_later("anchor_put", &json!(["zz"])).expect("told at once");
            let (tx, rx) = channel();
            let api = &api;
            scope.spawn(move || tx.send(api.call("anchor_put", &json!(["zz"]))));
            let told = rx.recv_timeout(Duration::from_secs(5));
            // Let go before any assertion: a blocked call would otherwise hang the scope.
            drop(commit);
            assert_eq!(run(later).unwrap_err().code, RpcError::INVALID_PARAMS);
            let told = told.expect("not held up by the lock");
            assert_eq!(told.unwrap_err().code, RpcError::INVALID_PARAMS);
        });
        // A bad signature: told at once, nothing submitted.
        let mut bad = signed(&posp, 30, Payload::AnchorPut { key: [6; 32], value: [6; 32] });
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let later = api.call_later("anchor_put", &json!([hex::encode(&bad)])).unwrap();
        assert_eq!(run(later).unwrap_err().code, RpcError::BAD_SIGNATURE);
        assert!(inbox.recv(Duration::from_millis(10), 1).unwrap().is_empty());
        // While a commit holds the ledger, left to a blocking thread; other methods always.
        let commit = api.ledger.write().unwrap();
        assert!(api.call_later("anchor_put", &put(31, false)).is_none());
        drop(commit);
        for method in ["anchor_putBatch", "cert_enroll", "gov_submit", "anchor_get"] {
            assert!(!api.ready_later(method) && api.call_later(method, &put(32, false)).is_none());
        }
        // The driver's queue full: -32004 at once, the transaction not queued.
        let mut queued = 0;
        while api.events.try_send(Event::Written) {
            queued += 1;
        }
        assert_eq!(queued, Inbox::LOCAL_CAP);
        let later = api.call_later("anchor_put", &put(33, false)).unwrap();
        let busy = run(later).unwrap_err();
        assert_eq!((busy.code, busy.message.as_str()), (RpcError::BUSY, "the node is busy; retry"));
        let events = inbox.recv(Duration::from_millis(10), usize::MAX).unwrap();
        assert!(events.iter().all(|e| matches!(e, Event::Written)));
        // The driver gone: both paths say the node is stopping.
        drop(inbox);
        let params = put(34, false);
        let later = run(api.call_later("anchor_put", &params).unwrap());
        assert_eq!(later, api.call("anchor_put", &params));
        let e = later.unwrap_err();
        assert!(e.code == RpcError::INTERNAL && e.message.starts_with("the node is stopping"));
    }
}
