//! The API listener's shell (tokio, hyper): HTTPS with mutual TLS for POSP and admin clients,
//! each request judged by the [`Gate`] and forwarded to the node's JSON-RPC socket.
//!
//! - **Who.** A client presents a `posp` or `admin` certificate that the ledger's trust store
//!   admits (the same roots, CRLs and trust wait as the P2P links); it is admitted again
//!   during the connection, so a resumed session or a kept-alive connection is judged by
//!   today's CRLs:
//!   a certificate revoked while its connection is open gets 403 and -32002 on its next
//!   request, and the connection is closed (an idle one at the idle deadline). Its identity (role,
//!   bank, name, key fingerprint) goes to the node with each request in `x-vpbox-client`.
//!   (Admitted again, that is, whenever the trust state has changed since, and at least once a
//!   second: see [`READMIT_AFTER`].)
//! - **What.** Only `POST` with a `Content-Length` up to the body limit (413 and -32005 past
//!   it, before the body is read); the body whole within the request deadline (408); then the
//!   gate: the role's allow-list (-32007, 403), the client's token bucket (-32008, 429 with
//!   `Retry-After`), the classifier's bounds. What passes is forwarded unchanged.
//! - **Limits.** Connections per listener and per client identity, and at most a few in their
//!   handshake per source address; a handshake deadline; heads within the request deadline
//!   (hyper's header timer, which is also the idle bound between requests on a kept-alive
//!   connection); answers within the answer deadline. A node that does not
//!   answer gives 503 with `Retry-After: 1` and -32004.
//! - **Access log.** One JSON line per request on stderr: time, client, role, methods, status,
//!   bytes in and out, latency.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use vpbox_ca::policy::Identity;
use vpbox_tls::Admission;

use crate::metrics::Listener;
use crate::net::{Refused, denied_reason, log, tls_reason};
use crate::{Connections, Gate, Limits, Verdict};

/// A client's key: SM3 of its certificate's public key.
type Client = [u8; 32];

/// What the API's connections share.
pub(crate) struct Api {
    /// The TLS configuration; replaced when the proxy's certificate is reloaded.
    pub(crate) acceptor: Arc<std::sync::RwLock<TlsAcceptor>>,
    pub(crate) clients: Clients,
    pub(crate) limits: Limits,
    /// The node's socket, its connections kept alive: one pool per worker thread (a
    /// connection is driven by the runtime that opened it).
    pub(crate) upstreams: Vec<crate::upstream::Upstream>,
    /// The trust state's generation, moved on by every change the trust wait applies.
    pub(crate) trust: tokio::sync::watch::Receiver<u64>,
    /// Connections each worker thread is serving.
    pub(crate) load: Vec<std::sync::atomic::AtomicUsize>,
    /// When each worker thread last came round ([`Api::now_ms`]).
    pub(crate) beats: Vec<std::sync::atomic::AtomicU64>,
    pub(crate) gate: Mutex<Gate<Client>>,
    pub(crate) connections: Mutex<Connections<Client>>,
    /// Connections in their handshake per source address.
    pub(crate) sources: Arc<crate::net::Counts<std::net::IpAddr>>,
    /// The shell's monotonic clock's origin, for the gate's milliseconds.
    pub(crate) origin: tokio::time::Instant,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Connections in their handshake, the oldest evicted past [`HANDSHAKES_MAX`].
    pub(crate) pending: Arc<crate::net::InProgress>,
    /// The refusal lines, a flood summed up.
    pub(crate) refusals: Arc<crate::net::RefusalLog>,
    /// True once the proxy is stopping: no new connection is accepted, and each open one is
    /// closed after the answer it owes.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// Connections being served (past their accept).
    pub(crate) active: std::sync::atomic::AtomicUsize,
}

/// Counts a connection in [`Api::active`] while it lives, and in its worker's load once it
/// is handed to one.
struct Active {
    api: Arc<Api>,
    worker: Option<usize>,
}

impl Active {
    fn new(api: &Arc<Api>) -> Self {
        api.active.fetch_add(1, Ordering::SeqCst);
        Self { api: Arc::clone(api), worker: None }
    }

    /// Counted in `worker`'s load from now on.
    fn assign(&mut self, worker: usize) {
        self.api.load[worker].fetch_add(1, Ordering::Relaxed);
        self.worker = Some(worker);
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(w) = self.worker {
            self.api.load[w].fetch_sub(1, Ordering::Relaxed);
        }
        self.api.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Who the API's clients are.
pub(crate) enum Clients {
    /// Mutual TLS: each client's certificate admitted by the ledger's trust store, at its
    /// handshake and again during the connection ([`readmit`]).
    Admitted(Admission),
    /// A benchmark's listener ([`crate::bench`]): every connection is this identity, whatever
    /// the TLS layer asked of it. Never built from a box's configuration.
    Fixed(Identity),
}

impl Clients {
    /// The identity of the peer whose chain is `certs`, judged now.
    fn admit(&self, certs: &[CertificateDer<'_>]) -> Result<Identity, rustls::Error> {
        match self {
            #[allow(clippy::disallowed_methods)] // the shell reads the clock for admission
            Self::Admitted(a) => a.admit_certificates(certs, std::time::SystemTime::now()),
            Self::Fixed(who) => Ok(who.clone()),
        }
    }
}

/// The most API connections in their TLS handshake at once; one more evicts the oldest.
pub(crate) const HANDSHAKES_MAX: usize = 256;

/// A connection's count against the listener's caps ([`crate::Connections`]): its slot, then
/// its ticket once admitted. Given back when dropped, on every way out of the connection's
/// tasks (a panic included), so a connection can never keep the listener's room.
struct Counted {
    api: Arc<Api>,
    held: Option<Count>,
}

enum Count {
    Slot(crate::Slot),
    Ticket(crate::Ticket<Client>),
}

impl Counted {
    /// A slot against the listener's cap, if it has room.
    fn open(api: &Arc<Api>) -> Result<Self, Refused> {
        let slot = api
            .connections
            .lock()
            .map_err(|_| ("shed", "lock".to_string()))?
            .open()
            .map_err(|e| ("shed", e.to_string()))?;
        Ok(Self { api: Arc::clone(api), held: Some(Count::Slot(slot)) })
    }

    /// The slot counted against `client` too, if it has room (refused, the slot is given
    /// back by [`crate::Connections::admit`]).
    fn admit(&mut self, client: Client) -> Result<(), crate::ConnectionRefusal> {
        let slot = match self.held.take() {
            Some(Count::Slot(slot)) => slot,
            // Admitted already (or given back): kept as it is.
            other => {
                self.held = other;
                return Ok(());
            }
        };
        let mut c = self.api.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ticket = c.admit(slot, client)?;
        self.held = Some(Count::Ticket(ticket));
        self.api.metrics.open(Listener::Api, 1);
        Ok(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else { return };
        let mut c = self.api.connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match held {
            Count::Slot(slot) => c.close(slot),
            Count::Ticket(ticket) => {
                c.close_admitted(ticket);
                drop(c);
                self.api.metrics.open(Listener::Api, -1);
            }
        }
    }
}

/// What an API listener is built from.
pub(crate) struct ApiParts {
    pub(crate) acceptor: Arc<std::sync::RwLock<TlsAcceptor>>,
    pub(crate) clients: Clients,
    pub(crate) limits: Limits,
    /// The node's JSON-RPC socket.
    pub(crate) node: std::path::PathBuf,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// The trust state's generation.
    pub(crate) trust: tokio::sync::watch::Receiver<u64>,
    /// Worker threads serving the connections.
    pub(crate) workers: std::num::NonZeroU16,
}

impl Api {
    pub(crate) fn new(p: ApiParts) -> Arc<Self> {
        let workers = usize::from(p.workers.get());
        Arc::new(Self {
            acceptor: p.acceptor,
            clients: p.clients,
            upstreams: (0..workers)
                .map(|_| crate::upstream::Upstream::new(p.node.clone(), workers))
                .collect(),
            load: (0..workers).map(|_| std::sync::atomic::AtomicUsize::new(0)).collect(),
            beats: (0..workers).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
            gate: Mutex::new(Gate::new(p.limits.rate)),
            connections: Mutex::new(Connections::new(p.limits.connections)),
            sources: crate::net::Counts::new(),
            limits: p.limits,
            origin: tokio::time::Instant::now(),
            metrics: p.metrics,
            pending: crate::net::InProgress::new(HANDSHAKES_MAX),
            refusals: crate::net::RefusalLog::new("api"),
            stopping: p.stopping,
            trust: p.trust,
            active: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// True while every worker thread came round in the last 2 s (a supervisor's watchdog
    /// is fed only then).
    pub(crate) fn workers_alive(&self) -> bool {
        let now = self.now_ms();
        self.beats.iter().all(|b| now.saturating_sub(b.load(Ordering::Relaxed)) < 2_000)
    }

    fn now_ms(&self) -> u64 {
        self.ms_at(tokio::time::Instant::now())
    }

    /// `at` in the gate's milliseconds (since [`Api::origin`]).
    fn ms_at(&self, at: tokio::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }
}

/// The API's worker threads: one per core the process may use (at most 16).
pub(crate) fn workers() -> std::num::NonZeroU16 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    std::num::NonZeroU16::new(cores.clamp(1, 16) as u16).unwrap_or(std::num::NonZeroU16::MIN)
}

/// A TCP stream that can move from one runtime to another while a TLS session sits on it:
/// detached (its socket taken out) on the runtime that made the handshake, attached again on
/// the worker that serves the requests. Detached, it reads and writes nothing.
pub(crate) struct Movable(Option<TcpStream>);

impl Movable {
    fn detached() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotConnected, "the connection is moving")
    }
}

impl tokio::io::AsyncRead for Movable {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            None => std::task::Poll::Ready(Err(Self::detached())),
        }
    }
}

impl tokio::io::AsyncWrite for Movable {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(Self::detached())),
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            None => std::task::Poll::Ready(Err(Self::detached())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_flush(cx),
            None => std::task::Poll::Ready(Err(Self::detached())),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            None => std::task::Poll::Ready(Err(Self::detached())),
        }
    }
}

type Tls = tokio_rustls::server::TlsStream<Movable>;

/// A connection admitted on the main runtime, handed to a worker for its requests.
struct Job {
    /// The TLS session, its socket detached.
    tls: Tls,
    /// The socket, out of the main runtime's reactor.
    tcp: std::net::TcpStream,
    from: String,
    caller: Caller,
    certs: Vec<CertificateDer<'static>>,
    counted: Counted,
    active: Active,
}

/// Starts the worker threads: each runs a single-threaded runtime serving the requests of
/// the connections it is handed, as nginx's worker processes do. (On this machine kind
/// tokio's work-stealing runtime spent about a sixth more CPU per request, in cross-thread
/// wake-ups, than one runtime per thread.) The TLS handshakes stay on the proxy's main
/// (multi-thread) runtime: their signatures are asked of the HSM, which may block a thread
/// (`block_in_place`), and must not stall a worker's other connections. A worker lives as long
/// as the process: on a graceful stop its open connections finish what they owe while the
/// process waits for them; each beats [`Api::workers_alive`] four times a second.
pub(crate) fn start_workers(api: &Arc<Api>) -> Result<Workers, String> {
    let mut queues = Vec::new();
    for worker in 0..api.upstreams.len() {
        let (queue, mut jobs) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(crate::net::flush_log_lines)
            .build()
            .map_err(|e| format!("API worker runtime: {e}"))?;
        let api = Arc::clone(api);
        std::thread::Builder::new()
            .name(format!("api-{worker}"))
            .spawn(move || {
                crate::net::gather_log_lines();
                runtime.block_on(async move {
                    let beats = Arc::clone(&api);
                    tokio::spawn(async move {
                        loop {
                            beats.beats[worker].store(beats.now_ms(), Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    });
                    while let Some(job) = jobs.recv().await {
                        tokio::spawn(requests(job, Arc::clone(&api), worker));
                    }
                    std::future::pending::<()>().await;
                });
            })
            .map_err(|e| format!("API worker thread: {e}"))?;
        queues.push(queue);
    }
    Ok(Workers(queues))
}

/// The worker threads' queues.
pub(crate) struct Workers(Vec<tokio::sync::mpsc::UnboundedSender<Job>>);

/// Accepts API connections until the proxy stops: each one's handshake and admission on this
/// (main) runtime, then its requests on the worker serving the fewest.
pub(crate) async fn serve(listener: TcpListener, api: Arc<Api>, workers: Workers) {
    let workers = Arc::new(workers);
    let mut stopping = api.stopping.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = async { drop(stopping.wait_for(|s| *s).await) } => return,
        };
        let (tcp, from) = match accepted {
            Ok(c) => c,
            Err(e) => {
                log("api-accept-failed", json!({"reason": e.to_string()}));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // One source holds at most a few handshakes: it cannot fill the listener's slots.
        let per_source = api.limits.handshakes_per_source.get() as usize;
        let Some(source) = api.sources.take(from.ip(), per_source) else {
            drop(tcp);
            api.metrics.refused(Listener::Api, "shed");
            continue;
        };
        let (place, evicted) = api.pending.begin();
        let (api, workers) = (Arc::clone(&api), Arc::clone(&workers));
        tokio::spawn(async move {
            let active = Active::new(&api);
            let from = from.to_string();
            let handed = match handshake(tcp, &api, &from, source, place, evicted).await {
                Ok(admitted) => hand_off(admitted, &api, &workers, from.clone(), active),
                Err(refused) => Err(refused),
            };
            if let Err((label, reason)) = handed {
                api.metrics.refused(Listener::Api, label);
                api.refusals.refused(label, json!({"from": from, "reason": reason}));
            }
        });
    }
}

/// A connection past its handshake and admission.
struct Admitted {
    tls: tokio_rustls::server::TlsStream<Movable>,
    caller: Caller,
    certs: Vec<CertificateDer<'static>>,
    counted: Counted,
}

/// The TLS handshake and the client's admission (slot, certificate, ticket).
async fn handshake(
    tcp: TcpStream,
    api: &Arc<Api>,
    from: &str,
    source: crate::net::Held<std::net::IpAddr>,
    place: crate::net::Place,
    evicted: crate::net::Evicted,
) -> Result<Admitted, Refused> {
    // (The acceptor before the slot: nothing may fail between taking a slot and the handshake.)
    let acceptor =
        api.acceptor.read().map(|a| a.clone()).map_err(|_| ("tls", "lock".to_string()))?;
    let mut counted = Counted::open(api)?;
    let _ = tcp.set_nodelay(true);
    let accept = acceptor.accept(Movable(Some(tcp)));
    let handshake = async {
        match tokio::time::timeout(api.limits.handshake_deadline(), accept).await {
            Ok(Ok(tls)) => Ok(tls),
            Err(_) => Err(("timeout", "no TLS handshake within the deadline".into())),
            Ok(Err(e)) => Err(tls_reason(&e)),
        }
    };
    let tls = evicted.unless(handshake).await?;
    drop(place);
    let certs: Vec<CertificateDer<'static>> =
        tls.get_ref().1.peer_certificates().unwrap_or_default().to_vec();
    // The trust state's generation before the admission: a change during it is judged again
    // on the first request.
    let generation = *api.trust.borrow();
    let who = api
        .clients
        .admit(&certs)
        .map_err(|e| (crate::metrics::tls_reason(&e), denied_reason(&e)))?;
    let client = who.key_fingerprint.0;
    drop(source);
    counted.admit(client).map_err(|e| ("shed", format!("{} of {}: {e}", who.name, who.bank)))?;
    api.metrics.accepted(Listener::Api);
    log(
        "api-connected",
        json!({"from": from, "client": who.name, "bank": who.bank, "role": who.role.name()}),
    );
    // The identity the node is told, encoded once for the connection's requests (none for a
    // certificate without an API role: the gate refuses its every request).
    let checked = Mutex::new((generation, tokio::time::Instant::now()));
    let caller = Caller { header: client_header(&who).ok(), who, worker: 0, checked };
    Ok(Admitted { tls, caller, certs, counted })
}

/// Moves an admitted connection to the worker serving the fewest.
fn hand_off(
    admitted: Admitted,
    api: &Api,
    workers: &Workers,
    from: String,
    mut active: Active,
) -> Result<(), Refused> {
    let Admitted { mut tls, mut caller, certs, counted } = admitted;
    let tcp = match tls.get_mut().0.0.take().map(TcpStream::into_std) {
        Some(Ok(tcp)) => tcp,
        Some(Err(e)) => return Err(("shed", format!("moving to a worker: {e}"))),
        None => return Err(("shed", "moving to a worker: no socket".into())),
    };
    let least =
        (0..workers.0.len()).min_by_key(|w| api.load[*w].load(Ordering::Relaxed)).unwrap_or(0);
    active.assign(least);
    caller.worker = least;
    let job = Job { tls, tcp, from, caller, certs, counted, active };
    // A worker's queue closes only with its thread, which lives as long as the process.
    if workers.0[least].send(job).is_err() {
        return Err(("shed", "the worker is gone".into()));
    }
    Ok(())
}

/// An admitted connection's requests, on worker `worker`, until it closes.
async fn requests(job: Job, api: Arc<Api>, worker: usize) {
    let Job { mut tls, tcp, from, caller, certs, counted, active } = job;
    let client = caller.who.name.clone();
    let attached = tcp.set_nonblocking(true).and_then(|()| TcpStream::from_std(tcp));
    let served = match attached {
        Ok(tcp) => {
            tls.get_mut().0.0 = Some(tcp);
            serve_requests(tls, &api, Arc::new(caller), Arc::new(certs)).await
        }
        Err(e) => Err(format!("worker {worker}: {e}")),
    };
    let reason = served.map_or_else(|e| e, |()| "closed".into());
    log("api-closed", json!({"from": from, "client": client, "reason": reason}));
    // Its log lines written before it counts as finished (a graceful stop waits for that).
    crate::net::flush_log_lines();
    drop((counted, active));
}

/// hyper's HTTP/1.1 on an admitted connection, until it closes or the proxy stops.
async fn serve_requests(
    tls: Tls,
    api: &Arc<Api>,
    who: Arc<Caller>,
    certs: Arc<Vec<CertificateDer<'static>>>,
) -> Result<(), String> {
    let service = {
        let api = Arc::clone(api);
        hyper::service::service_fn(move |req| {
            let (api, who, certs) = (Arc::clone(&api), Arc::clone(&who), Arc::clone(&certs));
            async move { Ok::<_, std::convert::Infallible>(request(req, &api, &who, &certs).await) }
        })
    };
    let builder = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(api.limits.request_deadline())
            .max_buf_size((api.limits.header_bytes_max.get() as usize).max(8192))
            .keep_alive(true);
        b
    };
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut stopping = api.stopping.clone();
    let served = tokio::select! {
        r = conn.as_mut() => r,
        () = async { drop(stopping.wait_for(|s| *s).await) } => {
            // The answer in progress is finished and sent with `Connection: close`; an idle
            // connection is closed at once.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    served.map_err(|e| e.to_string())
}

/// An admitted connection's client: its identity and the header that tells the node.
struct Caller {
    who: Identity,
    header: Option<String>,
    /// The worker serving the connection (whose upstream pool it uses).
    worker: usize,
    /// When its certificate was last admitted: the trust state's generation and the time.
    checked: Mutex<(u64, tokio::time::Instant)>,
}

/// How long an admission stands while the trust state does not change: a certificate that
/// expires, or a CRL whose nextUpdate passes, is refused at most this late.
const READMIT_AFTER: Duration = Duration::from_secs(1);

/// Admits a connection's client again if the trust state has changed since it was last
/// admitted (a revocation, a bank removed: refused on the next request) or
/// [`READMIT_AFTER`] has passed by `now`. (Admitting on every request cost a quarter of the
/// proxy's CPU: the chain's DER decoded and hashed each time.)
fn readmit(
    api: &Api,
    caller: &Caller,
    certs: &[CertificateDer<'_>],
    now: tokio::time::Instant,
) -> Result<(), rustls::Error> {
    let generation = *api.trust.borrow();
    let mut checked = caller.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if checked.0 == generation && now.saturating_duration_since(checked.1) < READMIT_AFTER {
        return Ok(());
    }
    api.clients.admit(certs)?;
    *checked = (generation, now);
    Ok(())
}

/// One access log line.
#[derive(serde::Serialize)]
struct Access<'a> {
    at: String,
    event: &'static str,
    client: &'a str,
    bank: &'a str,
    role: &'static str,
    methods: &'a [&'static str],
    status: u16,
    #[serde(rename = "in")]
    bytes_in: usize,
    out: Option<u64>,
    ms: u64,
}

fn answer(
    status: StatusCode,
    body: impl Into<Bytes>,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let json = hyper::header::HeaderValue::from_static("application/json");
    let mut r = Response::builder().status(status).header(hyper::header::CONTENT_TYPE, json);
    if let Some(s) = retry_after {
        r = r.header("retry-after", s.to_string());
    }
    r.body(Full::new(body.into())).unwrap_or_default()
}

fn error_body(code: i64, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": null,
                                "error": {"code": code, "message": message}}))
    .unwrap_or_default()
}

async fn request(
    req: Request<Incoming>,
    api: &Api,
    caller: &Caller,
    certs: &[CertificateDer<'static>],
) -> Response<Full<Bytes>> {
    // The monotonic clock is read twice per request, here and at the end: on a VM each read
    // is a measurable share of a small request's CPU.
    let started = tokio::time::Instant::now();
    // Every request is judged by today's trust state: a certificate revoked (or its bank
    // removed) since the handshake gets this answer and the connection is closed.
    let (status, bytes_in, methods, response) = match readmit(api, caller, certs, started) {
        Err(e) => {
            api.metrics.refused(Listener::Api, crate::metrics::tls_reason(&e));
            let reason = denied_reason(&e);
            let body = error_body(-32002, &format!("the client certificate: {reason}"));
            let mut r = answer(StatusCode::FORBIDDEN, body, None);
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            (StatusCode::FORBIDDEN, 0, vec![], r)
        }
        Ok(_) => {
            let judged = judge_and_forward(req, api, caller, started).await;
            if let Some(label) = refusal_label(judged.0) {
                api.metrics.refused(Listener::Api, label);
            }
            judged
        }
    };
    let took = started.elapsed();
    api.metrics.request(status.as_u16(), took);
    let who = &caller.who;
    crate::net::log_line(&Access {
        at: crate::net::stamp(),
        event: "api",
        client: &who.name,
        bank: &who.bank,
        role: who.role.name(),
        methods: &methods,
        status: status.as_u16(),
        bytes_in,
        out: hyper::body::Body::size_hint(response.body()).exact(),
        ms: took.as_millis() as u64,
    });
    response
}

/// The `/metrics` label of a refusal the proxy answered with `status` (the node's own answers
/// are 200 whatever their JSON-RPC outcome).
fn refusal_label(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        200..=299 => None,
        403 => Some("not_allowed"),
        429 => Some("rate_limited"),
        413 => Some("too_large"),
        502..=504 => Some("node_down"),
        _ => Some("bad_request"),
    }
}

async fn judge_and_forward(
    req: Request<Incoming>,
    api: &Api,
    caller: &Caller,
    started: tokio::time::Instant,
) -> (StatusCode, usize, Vec<&'static str>, Response<Full<Bytes>>) {
    let who = &caller.who;
    let done = |status: StatusCode, n: usize, m: Vec<&'static str>, r| (status, n, m, r);
    if req.method() != hyper::Method::POST {
        let body = error_body(-32600, "only POST carries JSON-RPC");
        return done(
            StatusCode::METHOD_NOT_ALLOWED,
            0,
            vec![],
            answer(StatusCode::METHOD_NOT_ALLOWED, body, None),
        );
    }
    let max = api.limits.body_bytes_max.get() as usize;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_none_or(|n| n > max) {
        let (status, msg) = match declared {
            None => (StatusCode::LENGTH_REQUIRED, "a Content-Length is required"),
            Some(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body larger than the proxy accepts"),
        };
        return done(status, 0, vec![], answer(status, error_body(-32005, msg), None));
    }
    let body = Limited::new(req.into_body(), max).collect();
    // Deadlines counted from the request's start (no clock read of their own).
    let body = match tokio::time::timeout_at(started + api.limits.request_deadline(), body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            let status = StatusCode::PAYLOAD_TOO_LARGE;
            let body = error_body(-32005, "body larger than the proxy accepts");
            return done(status, 0, vec![], answer(status, body, None));
        }
        Err(_) => {
            let status = StatusCode::REQUEST_TIMEOUT;
            let body = error_body(-32600, "the body did not arrive within the request deadline");
            return done(status, 0, vec![], answer(status, body, None));
        }
    };
    let n = body.len();
    let verdict = match api.gate.lock() {
        Ok(mut g) => g.admit(&who.key_fingerprint.0, who.role, &body, api.ms_at(started)),
        Err(_) => {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            return done(status, n, vec![], answer(status, error_body(-32603, "gate"), None));
        }
    };
    let envelope = match verdict {
        Verdict::Forward(envelope) => envelope,
        Verdict::Refuse { reason, answer: body } => {
            let status =
                StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::FORBIDDEN);
            let r = answer(status, body.unwrap_or_default(), reason.retry_after_s());
            return done(status, n, vec![], r);
        }
    };
    let methods: Vec<&'static str> =
        envelope.requests().iter().map(|r| r.method().name()).collect();
    let deadline = started + api.limits.answer_deadline();
    match tokio::time::timeout_at(deadline, forward(api, caller, &body)).await {
        Ok(Ok((status, body))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            done(status, n, methods, answer(status, body, None))
        }
        Ok(Err(e)) => {
            log("node-unreachable", json!({"reason": e}));
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let body = error_body(-32004, "the node is not answering; retry");
            done(status, n, methods, answer(status, body, Some(1)))
        }
        Err(_) => {
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let body = error_body(-32004, "the node did not answer within the deadline; retry");
            done(status, n, methods, answer(status, body, Some(1)))
        }
    }
}

/// The identity the proxy admitted, as the node receives it ([`vpbox_api::HEADER`]).
fn client_header(who: &Identity) -> Result<String, String> {
    let role = crate::Role::of(who.role)
        .ok_or_else(|| format!("a {} certificate has no API role", who.role.name()))?;
    let client = vpbox_api::Client {
        role,
        bank: who.bank.clone(),
        name: who.name.clone(),
        key: who.key_fingerprint.0,
    };
    Ok(client.header_value())
}

/// Forwards one admitted body to the node's socket: its status and body.
async fn forward(api: &Api, caller: &Caller, body: &[u8]) -> Result<(u16, Bytes), String> {
    let header = caller.header.as_deref().ok_or("the client has no API role")?;
    api.upstreams[caller.worker].post(body, Some(header), 16 << 20).await
}
