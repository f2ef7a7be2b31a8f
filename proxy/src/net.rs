//! The proxy's I/O shell (tokio): the P2P listener, the egress sockets, the trust wait.
//!
//! - **Trust.** The proxy holds a `gov_waitState` call open on the node's RPC socket, which
//!   the node answers when a committed block changes the trust state; the proxy then rebuilds
//!   the trust store (roots, CRLs) and the membership, and asks again. When the node refuses
//!   the wait or is unreachable, `gov_getState` every [`trust::POLL`] stands in. Before the
//!   first answer it admits nobody.
//! - **Ingress** (`[proxy] p2p`, TCP): mutual TLS in the configured profile with the box's
//!   `vp-node` certificate; the peer must present a `vp-node` certificate the trust store
//!   admits ([`vpbox_tls::ClientVerifier`]), of a current member ([`Membership::identify`]); its
//!   link's first frame must name that member ([`Membership::check_claim`]). Then the
//!   connection is joined to the node's peer socket.
//! - **Egress** (`[sockets] egress`): one Unix socket `N.sock` per current member N that the
//!   box's file gives an address; a connection from the node is carried to N's box over TCP
//!   and mutual TLS, dialled by the DNS name in N's certificate, and kept only if the server's
//!   certificate is N's.
//! - **Open connections** are checked again whenever the trust state changes (so as the box's
//!   node commits a CRL or a removal): a peer no longer admitted, or no longer a member, is
//!   cut.
//! - **Reload** on SIGHUP: the box's file is read again and its `[[peers]]` addresses apply to
//!   the next connection (egress sockets appear for members that gained an address); the
//!   certificate file is read again and a new chain for the box's key (a renewal) serves every
//!   new handshake, P2P and API; open connections stay. Other fields (sockets, listeners, the
//!   certificate's path, profiles) are read at start only: a change to them is logged as
//!   needing a restart.
//! - **Stopping** (SIGTERM, SIGINT): the API listener stops accepting; each open API connection
//!   finishes the answer it owes (sent with `Connection: close`) and closes, an idle one at
//!   once; after at most [`GRACE`] (15 s) the process exits, P2P links with it (the nodes'
//!   links redial the box when it is back).
//! - **The proxy holds no private key**: its handshakes are signed by the box's signer in its
//!   TLS domain ([`vpbox_tls::sign::SignerServiceKey`]).
//!
//! Every accepted and closed connection is one JSON line on stderr, stamped in RFC 3339 UTC;
//! so is the first refused connection of each reason in a 10 s window, the others summed up
//! in one line when the window is over ([`RefusalLog`]). Deadlines: a TLS handshake 10 s, a
//! TCP connect 5 s, the first link frame 10 s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::TrustStore;
use vpbox_config::{BoxConfig, PeerBox, TlsProfile};
use vpbox_tls::sign::SignerServiceKey;
use vpbox_tls::{Admission, Credentials, Profile, client_config, server_config};

use crate::metrics::{Listener, Metrics};
use crate::p2p::{Member, Membership, P2pRefusal, handshake_frame_len};
use crate::trust::{self, TrustState};

/// A TLS handshake's deadline.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// A TCP connect's deadline.
const CONNECT: Duration = Duration::from_secs(5);
/// The largest `gov_getState` answer the proxy reads.
const STATE_MAX: usize = 64 << 20;
/// How long the proxy waits for `gov_getState`'s answer, and for `gov_waitState`'s past its wait.
const STATE_DEADLINE: Duration = Duration::from_secs(10);

/// The most handshakes whose CertificateVerify the signer is making at once. A TLS 1.3 server
/// signs before it sees the client's certificate, so a stranger's ClientHello costs an HSM
/// signature: this, and the handshake caps per source, bound what a flood of them costs the
/// box's HSM (which the node's votes share).
const SIGNING_MAX: usize = 8;
/// How long a handshake past [`SIGNING_MAX`] waits for a turn before it fails: a burst of
/// clients (a POSP's pool opening its connections at once, hundreds of them) is signed at the
/// HSM's pace (about 270/s here) instead of failing past the first eight, while a flood costs
/// at most this long per handshake (on a blocking thread, never a runtime's worker).
const SIGNING_WAIT: Duration = Duration::from_millis(500);
/// The longest a handshake waits for its signature.
const SIGNING_DEADLINE: Duration = Duration::from_secs(2);

/// Counted turns: at most `max` held at once, a taker waiting up to a bound for one.
struct Slots {
    held: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    max: usize,
}

impl Slots {
    fn new(max: usize) -> Self {
        Self { held: std::sync::Mutex::new(0), freed: std::sync::Condvar::new(), max }
    }

    /// Takes a turn, waiting up to `wait` for one (blocking the thread); none if none came.
    /// The turn is given back when dropped, on every way out (a panic included).
    #[allow(clippy::disallowed_methods)] // the shell's own wait, not a policy's decision
    fn take(&self, wait: Duration) -> Option<Turn<'_>> {
        let deadline = std::time::Instant::now() + wait;
        let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *held >= self.max {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            held = self
                .freed
                .wait_timeout(held, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        *held += 1;
        Some(Turn(self))
    }
}

/// A turn of [`Slots`], given back when dropped.
struct Turn<'a>(&'a Slots);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut held = self.0.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = held.saturating_sub(1);
        drop(held);
        self.0.freed.notify_one();
    }
}

/// The proxy's TLS key: the signer's, asked off the runtime's worker threads (rustls signs
/// synchronously, inside the handshake's poll) and at most [`SIGNING_MAX`] at a time.
struct HsmKey {
    inner: SignerServiceKey,
    slots: Slots,
    metrics: Arc<Metrics>,
}

impl vpbox_tls::sign::TlsKey for HsmKey {
    fn public_key(&self) -> &vpbox_sm::sm2::PublicKey {
        self.inner.public_key()
    }

    fn sign_certificate_verify(&self, content: &[u8]) -> Result<vpbox_sm::sm2::Signature, String> {
        // On a multi-thread runtime the wait and the signature leave the worker thread
        // (`block_in_place`); on a current-thread one nothing may block, so no wait.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let sign = |wait: Duration| {
            let Some(turn) = self.slots.take(wait) else {
                self.metrics.signature("busy");
                return Err(format!(
                    "{SIGNING_MAX} handshakes were being signed for {} ms",
                    wait.as_millis()
                ));
            };
            let result = self.inner.sign_certificate_verify(content);
            drop(turn);
            self.metrics.signature(if result.is_ok() { "signed" } else { "refused" });
            result
        };
        if multi_thread {
            tokio::task::block_in_place(|| sign(SIGNING_WAIT))
        } else {
            sign(Duration::ZERO)
        }
    }
}

/// How far ahead of a CRL's nextUpdate the proxy warns (on each trust change): past it the
/// CA's every certificate is refused, so its bank must publish a new CRL before. Shorter than
/// the renewal timer's margin (`vpbox ca crl --renew-before 8h`): a warning means renewals failed.
/// Between trust changes the page's `vpbox_crl_next_update_timestamp_seconds` is what alerts.
const CRL_WARN: Duration = Duration::from_secs(4 * 3600);

/// A `crl-expiring` line for each CA whose CRL in force has its nextUpdate within
/// [`CRL_WARN`] of `now` (or past), naming the CA, its issuer name and the time left.
fn warn_stale_crls(crls: &[vpbox_ca::policy::CrlInForce], now: SystemTime) {
    let secs = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = secs(now);
    for crl in crls {
        let Some(next) = crl.next_update.map(secs) else { continue };
        if next <= now.saturating_add(CRL_WARN.as_secs()) {
            log(
                "crl-expiring",
                json!({"ca": crl.ca, "issuer": crl.issuer, "nextUpdate": next,
                       "secondsLeft": i128::from(next) - i128::from(now),
                       "effect": "past nextUpdate every certificate of this CA is refused: \
                                  publish a new CRL (vpbox ca crl, vpbox cert publish-crl)"}),
            );
        }
    }
}

/// How far ahead of a certificate's notAfter the proxy warns (on each trust change, at start
/// and on a reload): a month, the time a bank needs to issue, enroll and install a renewal.
/// Between those moments `vpbox_certificate_not_after_timestamp_seconds` is what alerts.
const CERT_WARN: Duration = Duration::from_secs(30 * 24 * 3600);

/// A `certificate-expiring` line for each certificate whose notAfter is within [`CERT_WARN`]
/// of `now` (or past).
fn warn_expiring(certs: &[trust::CertExpiry], now: SystemTime) {
    let secs = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let now = secs(now);
    for cert in certs {
        let at = secs(cert.not_after);
        if at <= now.saturating_add(CERT_WARN.as_secs()) {
            log(
                "certificate-expiring",
                json!({"kind": cert.kind, "subject": cert.subject, "notAfter": at,
                       "secondsLeft": i128::from(at) - i128::from(now)}),
            );
        }
    }
}

/// Shows the chain this proxy presents on `/metrics`, and warns if it expires soon.
fn own_certificate(metrics: &Metrics, chain: &[CertificateDer<'_>]) {
    let der: Vec<u8> = chain.iter().flat_map(|c| c.as_ref().iter().copied()).collect();
    let own = trust::expiries(&der, "box");
    warn_expiring(&own, now());
    metrics.own_certificate(own);
}

/// The wall clock, which certificate admission is judged at (the shell's only clock).
#[allow(clippy::disallowed_methods)] // the shell reads the clock for the policy core
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

/// Now, in RFC 3339 UTC with milliseconds: every log line's `at`.
pub(crate) fn stamp() -> String {
    stamp_at(now())
}

/// `t` in RFC 3339 UTC with milliseconds (`2026-12-04T20:55:43.123Z`, as
/// `humantime::format_rfc3339_millis`). The date and time to the second are formatted once per
/// second and thread, as nginx caches its log time: the access log writes a line per request.
fn stamp_at(t: SystemTime) -> String {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    // A clock before 1970 (which humantime cannot format) is shown as the epoch.
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != secs {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            *prefix = humantime::format_rfc3339_seconds(whole).to_string();
            prefix.pop(); // the `Z`
            *second = secs;
        }
        format!("{prefix}.{millis:03}Z")
    })
}

/// One JSON line on stderr: `{"at": RFC 3339, "event": …, …fields}`.
pub fn log(event: &str, fields: Value) {
    let mut line = json!({
        "at": stamp(),
        "event": event,
    });
    if let (Some(l), Value::Object(f)) = (line.as_object_mut(), fields) {
        l.extend(f);
    }
    log_line(&line);
}

/// One serialized value as a JSON line on stderr (the access log's lines, without an
/// intermediate map): gathered on an API worker ([`gather_log_lines`]), else written at once.
pub(crate) fn log_line<T: serde::Serialize>(line: &T) {
    let Ok(mut text) = serde_json::to_vec(line) else { return };
    text.push(b'\n');
    GATHERED.with(|g| match g.borrow_mut().as_mut() {
        Some(gathered) => gathered.add(&text, write_stderr),
        None => write_stderr(&text),
    });
}

/// The most bytes of log lines an API worker holds before it writes them: a pipe's atomic
/// write (`PIPE_BUF`), so the lines of one write are never cut by another thread's.
pub(crate) const ACCESS_BUFFER: usize = 4096;

thread_local! {
    /// An API worker's log lines not yet written; `None` on every other thread, whose lines
    /// are written at once.
    static GATHERED: std::cell::RefCell<Option<Gathered>> = const { std::cell::RefCell::new(None) };
}

/// Makes this thread an API worker whose log lines (an access line per request, and its
/// connections' events) are gathered: written [`ACCESS_BUFFER`] bytes at a time, and whenever
/// the thread runs out of work ([`flush_log_lines`], called by its runtime before it parks,
/// and when a connection ends), in the order they were logged. Under load one write(2)
/// carries about twenty lines instead of one each (at 256 connections the access log's write
/// was a fifth of the proxy's system calls); when the worker is idle a line is written as soon
/// as its answer is, so the log lags by no more than the work in hand. What a crash (SIGKILL,
/// abort) loses is that work's lines: at most [`ACCESS_BUFFER`] bytes per worker, as nginx's
/// `access_log … buffer=` does; a graceful stop loses none (a connection's lines are written
/// before it counts as finished).
pub(crate) fn gather_log_lines() {
    GATHERED.with(|g| *g.borrow_mut() = Some(Gathered::default()));
}

/// Writes this thread's gathered log lines.
pub(crate) fn flush_log_lines() {
    GATHERED.with(|g| {
        if let Some(gathered) = g.borrow_mut().as_mut() {
            gathered.flush(write_stderr);
        }
    });
}

/// Whole lines held for one write of at most [`ACCESS_BUFFER`] bytes.
#[derive(Default)]
struct Gathered(Vec<u8>);

impl Gathered {
    /// Holds `line` (newline included), first writing what is held when it would not fit;
    /// a line longer than the buffer is written alone.
    fn add(&mut self, line: &[u8], mut write: impl FnMut(&[u8])) {
        if self.0.len() + line.len() > ACCESS_BUFFER {
            self.flush(&mut write);
        }
        if line.len() > ACCESS_BUFFER {
            write(line);
        } else {
            self.0.extend_from_slice(line);
        }
    }

    fn flush(&mut self, mut write: impl FnMut(&[u8])) {
        if !self.0.is_empty() {
            write(&self.0);
            self.0.clear();
        }
    }
}

/// `bytes` (whole lines) on stderr.
fn write_stderr(bytes: &[u8]) {
    // One write(2), without std's stderr lock: the API's worker threads would queue on that
    // lock while one of them is in the system call (measured: a futex wait every third
    // request at 256 connections). Whole lines in one write are not interleaved with another
    // thread's: a regular file's writes are serialized by the kernel, a pipe's up to 4 KiB
    // are atomic, and journald's stream socket takes each write whole.
    let stderr = std::io::stderr();
    let mut rest = bytes;
    while !rest.is_empty() {
        match rustix::io::write(std::os::fd::AsFd::as_fd(&stderr), rest) {
            Ok(0) => return,
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// A refusal: its label on `/metrics` (one of [`crate::metrics::REASONS`]) and its reason as
/// an operator reads it.
pub(crate) type Refused = (&'static str, String);

/// A TLS failure as an operator reads it (the admission policy's reason when the peer's
/// certificate was refused, else the TLS error), with its label.
pub(crate) fn tls_reason(e: &std::io::Error) -> Refused {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => (crate::metrics::tls_reason(tls), format!("TLS: {}", denied_reason(tls))),
        None => ("tls", format!("TLS: {e}")),
    }
}

/// The label of a link's refusal.
fn p2p_label(e: &P2pRefusal) -> &'static str {
    match e {
        P2pRefusal::NotAMember { .. } => "not_a_member",
        P2pRefusal::ClaimsAnother { .. } => "claims_another_node",
        P2pRefusal::WrongChain => "wrong_chain",
        P2pRefusal::Malformed(_) => "bad_hello",
    }
}

/// The admission policy's reason inside a rustls certificate error, or the error itself.
pub(crate) fn denied_reason(e: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = e {
        if let Some(denied) = other.0.downcast_ref::<vpbox_tls::Denied>() {
            return denied.to_string();
        }
    }
    e.to_string()
}

/// What every task shares.
struct Shared {
    /// The configuration read at start (sockets, node, listener).
    config: BoxConfig,
    /// The file, read again on SIGHUP.
    path: PathBuf,
    /// The peers' addresses: the start's, or the last reload's.
    peers: RwLock<Vec<PeerBox>>,
    /// Roots and CRLs, replaced in place on every change (the TLS verifiers read it).
    trust: Arc<RwLock<TrustStore>>,
    membership: RwLock<Arc<Membership>>,
    /// Bumped on every change of the trust state.
    generation: watch::Sender<u64>,
    /// The certificate chain in use and the TLS configurations made with it (replaced when a
    /// SIGHUP finds a new certificate).
    tls: RwLock<(Vec<CertificateDer<'static>>, TlsConfigs)>,
    tls_parts: TlsParts,
    /// The API listener's acceptor, replaced with the others.
    api_acceptor: Option<Arc<RwLock<TlsAcceptor>>>,
    admission: Admission,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// The P2P address of node `id`'s box, as the file last read says.
    fn address_of(&self, id: u32) -> Option<String> {
        let peers = self.peers.read().ok()?;
        peers.iter().find(|p| p.id == id).map(|p| p.address.clone())
    }

    fn membership(&self) -> Arc<Membership> {
        self.membership.read().map(|m| Arc::clone(&m)).unwrap_or_default()
    }

    /// The member the peer of `certs` is, judged now: admitted by the trust store and a
    /// current member.
    fn judge(&self, certs: &[CertificateDer<'_>]) -> Result<Member, Refused> {
        let who = self
            .admission
            .admit_certificates(certs, now())
            .map_err(|e| (crate::metrics::tls_reason(&e), denied_reason(&e)))?;
        self.membership().identify(&who).cloned().map_err(|e| (p2p_label(&e), e.to_string()))
    }
}

/// Raises the soft limit on open files to the hard one: each connection is a descriptor, and
/// the default soft limit (often 1,024) would let idle connections exhaust them before the
/// listeners' caps apply. Returns the limit in force.
fn raise_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current
}

/// The certificate chain (PEM, end entity first) in the file at `path`.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = vpbox_ca::pem::chain_der(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    let parts = vpbox_ca::cert::split_der(&der).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(parts.iter().map(|p| CertificateDer::from(p.to_vec())).collect())
}

fn tls_profile(p: TlsProfile) -> Profile {
    match p {
        TlsProfile::Sm => Profile::Sm,
        TlsProfile::Hybrid => Profile::Hybrid,
    }
}

/// The proxy's TLS configurations for one certificate chain: the P2P server and client, and
/// the API server.
struct TlsConfigs {
    p2p_server: TlsAcceptor,
    p2p_client: TlsConnector,
    api: Option<TlsAcceptor>,
}

/// What the TLS configurations are built from, to build them again for a new certificate.
struct TlsParts {
    key: Arc<dyn vpbox_tls::sign::TlsKey>,
    profile: Profile,
    peers: Admission,
    api: Option<(Profile, Admission)>,
}

impl TlsParts {
    fn build(&self, chain: Vec<CertificateDer<'static>>) -> Result<TlsConfigs, String> {
        let ours =
            Credentials::with_key(chain, Arc::clone(&self.key)).map_err(|e| e.to_string())?;
        let server =
            server_config(self.profile, &ours, self.peers.clone()).map_err(|e| e.to_string())?;
        let client =
            client_config(self.profile, &ours, self.peers.clone()).map_err(|e| e.to_string())?;
        let api = match &self.api {
            None => None,
            Some((profile, clients)) => {
                let tls =
                    server_config(*profile, &ours, clients.clone()).map_err(|e| e.to_string())?;
                Some(TlsAcceptor::from(Arc::new(tls)))
            }
        };
        Ok(TlsConfigs {
            p2p_server: TlsAcceptor::from(Arc::new(server)),
            p2p_client: TlsConnector::from(Arc::new(client)),
            api,
        })
    }
}

/// What a supervisor (systemd, through the appliance) is told: `ready` once, when every
/// listener is bound and the API's workers run, with a status line; `alive` every `every` from
/// a task of the proxy's main runtime (the one running the trust wait, the P2P links, the API's
/// accepting task and its handshakes) while every API worker thread also comes round, so a
/// stalled runtime or worker stops calling it.
pub struct Supervisor {
    /// The proxy serves.
    pub ready: Box<dyn FnOnce(&str) + Send>,
    /// The proxy's runtime still runs.
    pub alive: Arc<dyn Fn() + Send + Sync>,
    /// How often `alive` is called.
    pub every: Duration,
}

/// Runs the proxy of the box whose configuration is at `path` until it is stopped (SIGTERM).
pub fn run(path: &Path, supervisor: Supervisor) -> Result<(), String> {
    let config = BoxConfig::load(path)?;
    let files = raise_file_limit();
    let proxy = config.proxy.clone().ok_or("the box's configuration has no [proxy] table")?;
    let chain = read_chain(&proxy.certificate)?;
    let key = SignerServiceKey::connect(&config.signer.socket, &config.signer.key)?
        .with_timeout(SIGNING_DEADLINE);
    let metrics = Arc::new(Metrics::default());
    let key = HsmKey { inner: key, slots: Slots::new(SIGNING_MAX), metrics: Arc::clone(&metrics) };
    let profile = tls_profile(proxy.profile);
    let trust = Arc::new(RwLock::new(TrustStore::new()));
    let admission = Admission::new(Arc::clone(&trust), CertProfile::VpNode);
    let clients = Admission::any_of(Arc::clone(&trust), CertProfile::Posp, &[CertProfile::Admin]);
    let parts = TlsParts {
        key: Arc::new(key),
        profile,
        peers: admission.clone(),
        api: proxy.api.as_ref().map(|_| (tls_profile(proxy.api_profile), clients.clone())),
    };
    let configs = parts.build(chain.clone())?;
    let api_acceptor = configs.api.clone().map(|a| Arc::new(RwLock::new(a)));
    let api = match (&proxy.api, api_acceptor.clone()) {
        (Some(address), Some(tls)) => {
            let limits = crate::Limits::deserialize(toml::Value::Table(proxy.limits.clone()))
                .map_err(|e| format!("proxy.limits: {e}"))?;
            Some((address.clone(), limits, clients, tls))
        }
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let (stop, stopping) = watch::channel(false);
    runtime.block_on(async move {
        let listener = TcpListener::bind(&proxy.p2p)
            .await
            .map_err(|e| format!("proxy.p2p {}: {e}", proxy.p2p))?;
        own_certificate(&metrics, &chain);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            peers: RwLock::new(config.peers.clone()),
            config,
            trust,
            membership: RwLock::new(Arc::new(Membership::default())),
            generation: watch::channel(0).0,
            tls: RwLock::new((chain, configs)),
            tls_parts: parts,
            api_acceptor,
            admission,
            metrics: Arc::clone(&metrics),
        });
        log(
            "proxy-started",
            json!({"node": shared.config.node_id, "p2p": proxy.p2p, "profile": format!("{profile:?}"),
                   "open_files_max": files}),
        );
        let mut api_served = None;
        if let Some((address, limits, admission, tls)) = api {
            let listener = TcpListener::bind(&address)
                .await
                .map_err(|e| format!("proxy.api {address}: {e}"))?;
            let api = crate::api::Api::new(crate::api::ApiParts {
                acceptor: tls,
                clients: crate::api::Clients::Admitted(admission),
                limits,
                node: shared.config.sockets.rpc.clone(),
                metrics: Arc::clone(&metrics),
                stopping: stopping.clone(),
                trust: shared.generation.subscribe(),
                workers: crate::api::workers(),
            });
            log("api-listening", json!({"api": address}));
            api_served = Some(Arc::clone(&api));
            // The workers before `ready`: a proxy whose API cannot serve says so and stops.
            let workers = crate::api::start_workers(&api)?;
            tokio::spawn(crate::api::serve(listener, api, workers));
        }
        if let Some(address) = &proxy.admin {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|e| format!("proxy.admin {address}: {e}"))?;
            let admin = Arc::new(crate::admin::Admin {
                node_rpc: shared.config.sockets.rpc.clone(),
                metrics: Arc::clone(&metrics),
            });
            log("admin-listening", json!({"admin": address}));
            tokio::spawn(crate::admin::serve(listener, admin));
        }
        let (alive, every) = (Arc::clone(&supervisor.alive), supervisor.every);
        let api_workers = api_served.clone();
        tokio::spawn(async move {
            loop {
                // Alive: this runtime runs this task, and every API worker came round.
                if api_workers.as_ref().is_none_or(|a| a.workers_alive()) {
                    alive();
                }
                tokio::time::sleep(every).await;
            }
        });
        (supervisor.ready)(&format!("P2P on {}", proxy.p2p));
        tokio::spawn(poll_trust(Arc::clone(&shared)));
        tokio::spawn(egress(Arc::clone(&shared)));
        tokio::spawn(reload_on_hangup(Arc::clone(&shared)));
        tokio::select! {
            () = ingress(listener, shared) => {}
            signal = terminated() => log("proxy-stopping", json!({"signal": signal, "grace_s": GRACE.as_secs()})),
        }
        // Graceful: no new API connection; each open one finishes the answer it owes, then
        // closes. P2P links close when the runtime does (the nodes' links redial).
        let _ = stop.send(true);
        let begun = tokio::time::Instant::now();
        let unfinished = loop {
            let active = api_served
                .as_ref()
                .map_or(0, |a| a.active.load(std::sync::atomic::Ordering::SeqCst));
            if active == 0 || begun.elapsed() >= GRACE {
                break active;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        log("proxy-stopped", json!({"unfinished_api_connections": unfinished}));
        Ok(())
    })
}

/// How long a stopping proxy waits for its API connections to finish what they owe.
const GRACE: Duration = Duration::from_secs(15);

/// The first SIGTERM or SIGINT: its name.
async fn terminated() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        // Without handlers the default actions apply (the process ends at once).
        _ => std::future::pending().await,
    }
}

/// Calls `method` (no params) on the node as the box's proxy itself: its `result`.
pub(crate) async fn call_node(socket: &Path, method: &str, max: usize) -> Result<Value, String> {
    call_node_with(socket, method, json!([]), max).await
}

/// Calls `method` with `params` on the node as the box's proxy itself: its `result`.
async fn call_node_with(
    socket: &Path,
    method: &str,
    params: Value,
    max: usize,
) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    // A connection of its own: the trust wait and the admin page are a call a second at most.
    let (_, bytes) = crate::upstream::Upstream::new(socket.to_path_buf(), 1)
        .post(body.as_bytes(), None, max)
        .await?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    v.get("result").cloned().ok_or_else(|| format!("no result: {v}"))
}

/// The trust state from the node, kept current: a `gov_waitState` long poll held open at all
/// times, answered by the node when a committed block changes roots, members or CRLs (or
/// every [`trust::WAIT`] unchanged). When the node refuses the wait (its waiting turns are
/// taken) or is unreachable, a plain `gov_getState` once a [`trust::POLL`] stands in.
async fn poll_trust(shared: Arc<Shared>) {
    let socket = shared.config.sockets.rpc.clone();
    let mut last = None;
    let mut since: Option<String> = None;
    let (mut complained, mut waits_refused) = (false, false);
    loop {
        let params = json!([since, trust::WAIT.as_millis() as u64]);
        let asked = tokio::time::Instant::now();
        let wait = call_node_with(&socket, "gov_waitState", params, STATE_MAX);
        // A node that takes the call and never answers must not stall the trust state.
        let answer = match tokio::time::timeout(trust::WAIT + STATE_DEADLINE, wait).await {
            Ok(Ok(state)) => {
                waits_refused = false;
                Ok(state)
            }
            refused => {
                if !waits_refused {
                    let reason = match refused {
                        Ok(Err(e)) => e,
                        _ => "no answer within the wait".to_string(),
                    };
                    log(
                        "trust-polling",
                        json!({"reason": reason,
                               "effect": "gov_getState once a second until the wait is answered"}),
                    );
                    waits_refused = true;
                }
                let call = call_node(&socket, "gov_getState", STATE_MAX);
                tokio::time::timeout(STATE_DEADLINE, call)
                    .await
                    .unwrap_or_else(|_| Err("no answer within 10 s".into()))
            }
        };
        let mut pause = true;
        match answer.map(|mut result| {
            let fingerprint = result.get("fingerprint").and_then(Value::as_str).map(String::from);
            // The height moves with every block; the trust state only with governance and CRLs.
            if let Some(r) = result.as_object_mut() {
                r.remove("height");
                r.remove("fingerprint");
            }
            (trust::fingerprint(result.to_string().as_bytes()), fingerprint, result)
        }) {
            Ok((digest, fingerprint, state)) => {
                complained = false;
                // The next wait starts at once after a change, or after a full wait; a node
                // answering "unchanged" at once (no fingerprint, no wait) is asked a poll later.
                pause = fingerprint.is_none()
                    || (last == Some(digest) && asked.elapsed() < trust::POLL);
                since = fingerprint;
                if last != Some(digest) {
                    match TrustState::from_governance(&state) {
                        Ok(t) => {
                            log(
                                "trust-updated",
                                json!({"seq": t.seq, "members": t.membership.members.len(),
                                   "crls": t.crls}),
                            );
                            if let Ok(mut store) = shared.trust.write() {
                                *store = t.store;
                            }
                            if let Ok(mut m) = shared.membership.write() {
                                *m = Arc::new(t.membership);
                            }
                            shared.generation.send_modify(|g| *g += 1);
                            warn_stale_crls(&t.crls_in_force, now());
                            warn_expiring(&t.certificates, now());
                            shared.metrics.trust_updated(t.crls_in_force, t.certificates);
                            last = Some(digest);
                        }
                        Err(e) => {
                            log("trust-refused", json!({"reason": e}));
                            pause = true;
                        }
                    }
                }
            }
            Err(e) if !complained => {
                log(
                    "node-unreachable",
                    json!({"socket": socket.display().to_string(), "reason": e}),
                );
                complained = true;
            }
            Err(_) => {}
        }
        if pause {
            tokio::time::sleep(trust::POLL).await;
        }
    }
}

/// Reads the box's file again on every SIGHUP (see the module's docs).
async fn reload_on_hangup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        log("reload-unavailable", json!({"reason": "no SIGHUP handler"}));
        return;
    };
    while hangups.recv().await.is_some() {
        let fresh = match BoxConfig::load(&shared.path).and_then(|c| {
            c.check().map_err(|e| e.join("; "))?;
            Ok(c)
        }) {
            Ok(c) => c,
            Err(e) => {
                log("reload-refused", json!({"reason": e, "kept": "the configuration in use"}));
                continue;
            }
        };
        let old = &shared.config;
        let mut restart = Vec::new();
        if fresh.node_id != old.node_id {
            restart.push("node_id");
        }
        if fresh.sockets != old.sockets || fresh.signer != old.signer {
            restart.push("sockets or signer");
        }
        if fresh.proxy != old.proxy {
            restart.push("proxy");
        }
        if !restart.is_empty() {
            log("reload-needs-restart", json!({"changed": restart}));
        }
        if let Ok(mut peers) = shared.peers.write() {
            *peers = fresh.peers;
        }
        reload_certificate(&shared);
        log("reloaded", json!({"peers": shared.peers.read().map(|p| p.len()).unwrap_or(0)}));
        shared.generation.send_modify(|g| *g += 1);
    }
}

/// Reads the box's certificate again: a new chain (a renewal for the same key) is used for every
/// new handshake from now on, P2P and API; open connections keep theirs. A chain that does not
/// load, that the trust store does not admit now as this box's node, or that is not for the
/// box's key is refused and the one in use kept.
fn reload_certificate(shared: &Shared) {
    let Some(path) = shared.config.proxy.as_ref().map(|p| p.certificate.clone()) else { return };
    let same = |chain: &[CertificateDer<'static>]| {
        shared.tls.read().map(|t| t.0.as_slice() == chain).unwrap_or(false)
    };
    match read_chain(&path).and_then(|chain| {
        if same(&chain) {
            return Ok(None);
        }
        // The trust store must admit it now as this box's node: an expired renewal, one whose
        // chain lacks its CA, or one naming another node would fail every handshake.
        let me = shared.config.node_id;
        match shared.judge(&chain) {
            Ok(m) if m.id == me => {}
            Ok(m) => return Err(format!("it is node {}'s certificate, not node {me}'s", m.id)),
            Err((_, reason)) => return Err(format!("the trust store refuses it: {reason}")),
        }
        shared.tls_parts.build(chain.clone()).map(|c| Some((chain, c)))
    }) {
        Ok(None) => {}
        Ok(Some((chain, configs))) => {
            if let (Some(slot), Some(api)) = (&shared.api_acceptor, &configs.api) {
                if let Ok(mut a) = slot.write() {
                    *a = api.clone();
                }
            }
            own_certificate(&shared.metrics, &chain);
            if let Ok(mut t) = shared.tls.write() {
                *t = (chain, configs);
            }
            log("certificate-reloaded", json!({"certificate": path.display().to_string()}));
        }
        Err(e) => log(
            "certificate-refused",
            json!({"certificate": path.display().to_string(), "reason": e,
                   "kept": "the certificate in use"}),
        ),
    }
}

/// The most P2P connections in their handshake at once (TLS, then the link's first frame),
/// from all sources; one more evicts the oldest.
const HANDSHAKES_MAX: usize = 128;
/// The most of them from one source address.
const HANDSHAKES_PER_SOURCE: usize = 8;
/// The most established inbound links of one member (a node keeps one; a reconnect overlaps
/// its predecessor for a moment).
const LINKS_PER_MEMBER: usize = 4;

/// Connections in their handshake on one listener, at most a fixed number: one more cancels
/// the oldest ([`crate::Handshakes`], which says why eviction rather than refusal).
pub(crate) struct InProgress {
    max: usize,
    state: std::sync::Mutex<InProgressState>,
}

struct InProgressState {
    handshakes: crate::Handshakes,
    /// The sender whose drop cancels each.
    cancel: HashMap<u64, tokio::sync::oneshot::Sender<()>>,
}

impl InProgress {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        let handshakes = crate::Handshakes::new(max);
        let state = InProgressState { handshakes, cancel: HashMap::new() };
        Arc::new(Self { max, state: std::sync::Mutex::new(state) })
    }

    /// A new handshake: its place (which ends it when dropped) and what resolves if it is
    /// evicted. The oldest handshake is cancelled when the cap is reached.
    pub(crate) fn begin(self: &Arc<Self>) -> (Place, Evicted) {
        let (cancel, cancelled) = tokio::sync::oneshot::channel();
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (id, evicted) = state.handshakes.begin();
        // Removing the evicted handshake's sender drops it, which cancels it.
        if let Some(e) = evicted {
            state.cancel.remove(&e);
        }
        state.cancel.insert(id, cancel);
        (Place { of: Arc::clone(self), id }, Evicted { max: self.max, cancelled })
    }
}

/// A handshake's place among those in progress: ends it when dropped.
pub(crate) struct Place {
    of: Arc<InProgress>,
    id: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.of.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.handshakes.end(self.id);
        state.cancel.remove(&self.id);
    }
}

/// Resolves when its handshake is evicted (or its place ended).
pub(crate) struct Evicted {
    max: usize,
    cancelled: tokio::sync::oneshot::Receiver<()>,
}

impl Evicted {
    /// Runs `handshake` unless it is evicted first: then the refusal says so.
    pub(crate) async fn unless<T>(
        self,
        handshake: impl std::future::Future<Output = Result<T, Refused>>,
    ) -> Result<T, Refused> {
        tokio::select! {
            // A handshake that finished on the same poll as its eviction is kept.
            biased;
            h = handshake => h,
            // Only a drop of the sender ends this: an eviction (the place is held meanwhile).
            _ = self.cancelled => {
                Err(("evicted", format!("evicted: {} newer handshakes", self.max)))
            }
        }
    }
}

/// A listener's refusal lines, a flood summed up ([`crate::refusals`]): `{prefix}-refused`
/// for the first refusal of each reason in a window, `{prefix}-refused-summary` with the
/// others' counts when the window is over.
pub(crate) struct RefusalLog {
    prefix: &'static str,
    state: std::sync::Mutex<crate::Refusals>,
    origin: tokio::time::Instant,
}

impl RefusalLog {
    pub(crate) fn new(prefix: &'static str) -> Arc<Self> {
        let state = std::sync::Mutex::new(crate::Refusals::new());
        let log = Arc::new(Self { prefix, state, origin: tokio::time::Instant::now() });
        // The last window of a flood is summed up without waiting for another refusal.
        let ticks = Arc::downgrade(&log);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(log) = ticks.upgrade() else { return };
                let summary = log.lock().tick(log.now_ms());
                log.summarize(summary);
            }
        });
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::Refusals> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// A connection refused for `reason` (a metrics label): logged with `fields` if it is the
    /// first of its reason in the window.
    pub(crate) fn refused(&self, reason: &'static str, fields: Value) {
        let (whole, closed) = self.lock().refused(reason, self.now_ms());
        self.summarize(closed);
        if whole {
            let mut line = json!({"label": reason});
            if let (Some(l), Value::Object(f)) = (line.as_object_mut(), fields) {
                l.extend(f);
            }
            log(&format!("{}-refused", self.prefix), line);
        }
    }

    fn summarize(&self, summary: Option<crate::refusals::Summary>) {
        let Some(s) = summary else { return };
        let seconds = self.now_ms().saturating_sub(s.since_ms) / 1000;
        log(
            &format!("{}-refused-summary", self.prefix),
            json!({"seconds": seconds, "unlogged": s.unlogged,
                   "note": "refusals after the first of each reason in the window"}),
        );
    }
}

/// Counts held per key, each released when its [`Held`] is dropped.
pub(crate) struct Counts<K: std::hash::Hash + Eq + Copy>(std::sync::Mutex<HashMap<K, usize>>);

impl<K: std::hash::Hash + Eq + Copy> Counts<K> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(HashMap::new())))
    }

    /// Takes one for `key` if fewer than `max` are held.
    pub(crate) fn take(self: &Arc<Self>, key: K, max: usize) -> Option<Held<K>> {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Held { counts: Arc::clone(self), key })
    }
}

pub(crate) struct Held<K: std::hash::Hash + Eq + Copy> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Copy> Drop for Held<K> {
    fn drop(&mut self) {
        let mut m = self.counts.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// The P2P listener: each connection takes a handshake place (of [`HANDSHAKES_MAX`]: one
/// more evicts the oldest still in its handshake) if its address holds fewer than
/// [`HANDSHAKES_PER_SOURCE`], else it is closed at once. Refusals are logged through a
/// [`RefusalLog`] (a flood is summed up every 10 s). (The box's firewall admits only the
/// members' addresses to this port; these caps bound what gets past it.)
async fn ingress(listener: TcpListener, shared: Arc<Shared>) {
    let handshakes = InProgress::new(HANDSHAKES_MAX);
    let sources: Arc<Counts<std::net::IpAddr>> = Counts::new();
    let links: Arc<Counts<u32>> = Counts::new();
    let refusals = RefusalLog::new("p2p");
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log("p2p-accept-failed", json!({"reason": e.to_string()}));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(source) = sources.take(from.ip(), HANDSHAKES_PER_SOURCE) else {
            drop(tcp);
            shared.metrics.refused(Listener::P2p, "shed");
            let reason = format!("{HANDSHAKES_PER_SOURCE} handshakes from this address already");
            refusals.refused("shed", json!({"from": from.to_string(), "reason": reason}));
            continue;
        };
        let (place, evicted) = handshakes.begin();
        let (shared, links, refusals) =
            (Arc::clone(&shared), Arc::clone(&links), Arc::clone(&refusals));
        tokio::spawn(async move {
            let from = from.to_string();
            let admitted = evicted.unless(inbound(tcp, &shared, &from, &links)).await;
            drop((place, source));
            match admitted {
                Ok((tls, node, member, certs, held)) => {
                    shared.metrics.accepted(Listener::P2p);
                    let reason = relay(tls, node, &shared, certs).await;
                    drop(held);
                    log("p2p-closed", json!({"from": from, "node": member.id, "reason": reason}));
                }
                Err((label, reason)) => {
                    shared.metrics.refused(Listener::P2p, label);
                    refusals.refused(label, json!({"from": from, "reason": reason}));
                }
            }
        });
    }
}

/// A P2P connection through its handshake: the TLS stream, the node's socket, the member and
/// its certificates, and its hold on the member's link count.
type Inbound = (
    tokio_rustls::server::TlsStream<TcpStream>,
    UnixStream,
    Member,
    Vec<CertificateDer<'static>>,
    Held<u32>,
);

/// One incoming P2P connection through its handshake: TLS, a member (under its link cap),
/// its claim, then joined to the node.
async fn inbound(
    tcp: TcpStream,
    shared: &Arc<Shared>,
    from: &str,
    links: &Arc<Counts<u32>>,
) -> Result<Inbound, Refused> {
    let _ = tcp.set_nodelay(true);
    let acceptor = shared
        .tls
        .read()
        .map(|t| t.1.p2p_server.clone())
        .map_err(|_| ("tls", "lock".to_string()))?;
    let mut tls = tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp))
        .await
        .map_err(|_| ("timeout", "no TLS handshake within 10 s".to_string()))?
        .map_err(|e| tls_reason(&e))?;
    let certs: Vec<CertificateDer<'static>> =
        tls.get_ref().1.peer_certificates().unwrap_or_default().to_vec();
    let member = shared.judge(&certs)?;
    // The link's first frame (the dialer's hello and proof) must name the certified node. The
    // node speaks first (its own hello), so it is joined before that frame is read.
    let mut node = UnixStream::connect(&shared.config.sockets.peer)
        .await
        .map_err(|e| ("node_down", format!("the node's peer socket: {e}")))?;
    let mut first = [0u8; 4 + crate::p2p::HANDSHAKE_FRAME_MAX];
    let len = tokio::time::timeout(HANDSHAKE, async {
        let mut hello = [0u8; 256];
        // Relay the node's hello frame to the dialer while waiting for the dialer's.
        let mut prefix = [0u8; 4];
        node.read_exact(&mut prefix).await.map_err(|e| format!("node: {e}"))?;
        let n = handshake_frame_len(prefix).map_err(|e| format!("node: {e}"))?;
        node.read_exact(&mut hello[..n]).await.map_err(|e| format!("node: {e}"))?;
        tls.write_all(&prefix).await.map_err(|e| e.to_string())?;
        tls.write_all(&hello[..n]).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        tls.read_exact(&mut first[..4]).await.map_err(|e| e.to_string())?;
        let len = handshake_frame_len([first[0], first[1], first[2], first[3]])
            .map_err(|e| e.to_string())?;
        tls.read_exact(&mut first[4..4 + len]).await.map_err(|e| e.to_string())?;
        Ok::<usize, String>(len)
    })
    .await
    .map_err(|_| ("timeout", "no link hello within 10 s".to_string()))?
    .map_err(|e| ("bad_hello", e))?;
    shared
        .membership()
        .check_claim(&member, &first[4..4 + len])
        .map_err(|e: P2pRefusal| (p2p_label(&e), e.to_string()))?;
    let held = links.take(member.id, LINKS_PER_MEMBER).ok_or_else(|| {
        ("link_cap", format!("node {} holds {LINKS_PER_MEMBER} links already", member.id))
    })?;
    node.write_all(&first[..4 + len]).await.map_err(|e| ("node_down", format!("node: {e}")))?;
    log("p2p-accepted", json!({"from": from, "node": member.id, "name": member.name}));
    Ok((tls, node, member, certs, held))
}

/// Carries bytes both ways until either side closes, or until the peer's certificate is no
/// longer admitted or no longer a current member's (checked on every trust change).
async fn relay<S>(
    tls: S,
    mut node: UnixStream,
    shared: &Arc<Shared>,
    certs: Vec<CertificateDer<'static>>,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut tls = tls;
    let mut changes = shared.generation.subscribe();
    // A trust change between the peer's judgement and this subscription is not seen as a
    // change: judge once more now.
    if let Err((label, reason)) = shared.judge(&certs) {
        shared.metrics.refused(Listener::P2p, label);
        return format!("cut: {reason}");
    }
    shared.metrics.open(Listener::P2p, 1);
    let reason = carry(&mut tls, &mut node, shared, &certs, &mut changes).await;
    shared.metrics.open(Listener::P2p, -1);
    reason
}

async fn carry<S>(
    tls: &mut S,
    node: &mut UnixStream,
    shared: &Arc<Shared>,
    certs: &[CertificateDer<'static>],
    changes: &mut watch::Receiver<u64>,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(tls, node);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            r = &mut copy => {
                return match r {
                    Ok((up, down)) => format!("closed after {up} bytes out, {down} in"),
                    Err(e) => e.to_string(),
                };
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return "the proxy is stopping".into();
                }
                if let Err((label, reason)) = shared.judge(certs) {
                    shared.metrics.refused(Listener::P2p, label);
                    return format!("cut: {reason}");
                }
            }
        }
    }
}

/// Keeps one egress socket per current member with an address, and none for others.
async fn egress(shared: Arc<Shared>) {
    let mut running: HashMap<u32, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut changes = shared.generation.subscribe();
    let dir = shared.config.sockets.egress.clone();
    let made = std::fs::create_dir_all(&dir).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770))
    });
    if let Err(e) = made {
        log("egress-failed", json!({"dir": dir.display().to_string(), "reason": e.to_string()}));
    }
    loop {
        let membership = shared.membership();
        let me = shared.config.node_id;
        let wanted: Vec<u32> = membership
            .members
            .iter()
            .map(|m| m.id)
            .filter(|id| *id != me && shared.address_of(*id).is_some())
            .collect();
        for m in membership.members.iter().filter(|m| m.id != me) {
            if shared.address_of(m.id).is_none() && !running.contains_key(&m.id) {
                log("egress-no-address", json!({"node": m.id, "name": m.name}));
            }
        }
        running.retain(|id, task| {
            let keep = wanted.contains(id);
            if !keep {
                task.abort();
                let _ = std::fs::remove_file(vpbox_config::egress_socket(&dir, *id));
            }
            keep
        });
        for id in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(id) {
                match bind_unix(&vpbox_config::egress_socket(&dir, id)) {
                    Ok(listener) => {
                        slot.insert(tokio::spawn(egress_to(Arc::clone(&shared), id, listener)));
                    }
                    Err(e) => log("egress-failed", json!({"node": id, "reason": e})),
                }
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Binds a Unix socket at `path`, replacing a stale socket but nothing else.
fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() && !meta.file_type().is_symlink() {
            return Err(format!("{}: exists and is not a socket", path.display()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The node (which may run as another user of the box's group) connects here; no one else.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

async fn egress_to(shared: Arc<Shared>, id: u32, listener: UnixListener) {
    loop {
        let Ok((node, _)) = listener.accept().await else { continue };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(reason) = outbound(node, &shared, id).await {
                log("p2p-dial-failed", json!({"node": id, "reason": reason}));
            }
        });
    }
}

/// One outgoing P2P connection: dial member `id`'s box, TLS, check it is `id`, relay.
async fn outbound(node: UnixStream, shared: &Arc<Shared>, id: u32) -> Result<(), String> {
    let address = shared.address_of(id).ok_or("no address")?;
    let member = shared.membership().member(id).cloned().ok_or("no longer a member")?;
    let name = member.dns_name.clone().ok_or("its certificate names no DNS name")?;
    let server_name = ServerName::try_from(name.clone()).map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(CONNECT, TcpStream::connect(&address))
        .await
        .map_err(|_| format!("{address}: no connection within 5 s"))?
        .map_err(|e| format!("{address}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let connector = shared.tls.read().map(|t| t.1.p2p_client.clone()).map_err(|_| "lock")?;
    let tls = tokio::time::timeout(HANDSHAKE, connector.connect(server_name, tcp))
        .await
        .map_err(|_| format!("{address}: no TLS handshake within 10 s"))?
        .map_err(|e| format!("{address} ({name}): {}", tls_reason(&e).1))?;
    let certs: Vec<CertificateDer<'static>> =
        tls.get_ref().1.peer_certificates().unwrap_or_default().to_vec();
    let server = shared.judge(&certs).map_err(|(_, reason)| reason)?;
    if server.id != id {
        return Err(format!("{address} is node {}, not node {id}", server.id));
    }
    log("p2p-connected", json!({"node": id, "address": address}));
    let reason = relay(tls, node, shared, certs).await;
    log("p2p-closed", json!({"node": id, "address": address, "reason": reason}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use super::{ACCESS_BUFFER, Gathered, Slots};

    #[test]
    fn access_lines_are_written_whole_at_most_a_buffer_at_a_time_and_all_on_flush() {
        let mut writes: Vec<Vec<u8>> = Vec::new();
        let mut g = Gathered::default();
        let line = |n: usize, len: usize| {
            let mut l = format!("{n:06}").into_bytes();
            l.resize(len - 1, b'x');
            l.push(b'\n');
            l
        };
        let mut sent = Vec::new();
        for n in 0..100 {
            let l = line(n, 175);
            sent.extend_from_slice(&l);
            g.add(&l, |w| writes.push(w.to_vec()));
        }
        // 23 lines of 175 bytes fit in 4,096: four full writes so far, the rest held.
        assert_eq!(writes.len(), 4, "lines are gathered, not written one by one");
        assert!(writes.iter().all(|w| w.len() == 23 * 175));
        let long = line(100, ACCESS_BUFFER + 1);
        sent.extend_from_slice(&long);
        g.add(&long, |w| writes.push(w.to_vec()));
        // What was held goes first, then the long line alone.
        assert_eq!(writes.len(), 6);
        assert_eq!(writes[5], long);
        g.flush(|w| writes.push(w.to_vec()));
        g.flush(|w| writes.push(w.to_vec()));
        assert_eq!(writes.len(), 6, "nothing held: nothing written");
        let last = line(101, 60);
        sent.extend_from_slice(&last);
        g.add(&last, |w| writes.push(w.to_vec()));
        g.flush(|w| writes.push(w.to_vec()));
        assert_eq!(writes.concat(), sent, "every line, in order, once");
        for w in &writes {
            assert!(w.len() <= ACCESS_BUFFER || w == &long, "one atomic write");
            assert_eq!(w.last(), Some(&b'\n'), "whole lines only");
        }
    }

    #[test]
    fn log_stamps_are_rfc_3339_with_milliseconds_whatever_the_cached_second() {
        // Within one second, across a second, back in time, at the epoch and before it.
        let ms = |m: u64| UNIX_EPOCH + Duration::from_millis(m);
        let times = [
            ms(1_796_416_543_123),
            ms(1_796_416_543_999),
            ms(1_796_416_544_000),
            ms(1_796_416_544_007),
            ms(1_700_000_000_050),
            ms(1_796_416_544_999),
            ms(0),
        ];
        for t in times {
            assert_eq!(super::stamp_at(t), humantime::format_rfc3339_millis(t).to_string());
        }
        assert_eq!(
            super::stamp_at(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
        let t: SystemTime = ms(1_796_416_543_123);
        assert_eq!(super::stamp_at(t), "2026-12-04T20:35:43.123Z");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the test measures real waits
    fn a_taker_past_the_limit_waits_for_a_turn_and_gives_up_at_its_bound() {
        let slots = Slots::new(2);
        let first = slots.take(Duration::ZERO).expect("a turn");
        let second = slots.take(Duration::ZERO).expect("a turn");
        // Full: no turn at once, nor within 50 ms.
        assert!(slots.take(Duration::ZERO).is_none());
        let start = Instant::now();
        assert!(slots.take(Duration::from_millis(50)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(50));
        // A turn given back 30 ms into a 5 s wait is taken then, not at the bound.
        let third = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                drop(first);
            });
            let start = Instant::now();
            let third = slots.take(Duration::from_secs(5)).expect("the turn given back");
            assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
            third
        });
        // Still two held: full again.
        assert!(slots.take(Duration::ZERO).is_none());
        drop(third);
        let fourth = slots.take(Duration::ZERO).expect("a turn");
        drop(fourth);
        // A holder that panics gives its turn back as it unwinds.
        let panicked = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _turn = slots.take(Duration::ZERO).expect("a turn");
                    panic!("a signer call that panics");
                })
                .join()
        });
        assert!(panicked.is_err());
        let fifth = slots.take(Duration::ZERO).expect("the panicked holder's turn");
        drop((second, fifth));
        assert_eq!(*slots.held.lock().unwrap(), 0);
    }
}
