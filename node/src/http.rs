//! HTTP/1.1 for JSON-RPC over a Unix socket, on hyper: `POST` with a `Content-Length` body,
//! keep-alive and pipelining. The proxy terminates TLS and speaks this to the node; nothing
//! else does.
//!
//! **Who is calling.** The socket is the box's console: whoever may connect to it (its file
//! mode and group) is the box's operator and may call every method. A request the proxy
//! forwards carries the client it admitted in [`vpbox_api::HEADER`]; the node believes that
//! header only on a connection whose peer (`SO_PEERCRED`, from the kernel, not from anything
//! the peer sends) is one of the [`serve`]'s `forwarders` users, and then answers as that
//! client's [`vpbox_api::Role`] may be answered: a POSP calling an admin's method gets -32007
//! and HTTP 403 from the node too, whatever the proxy in front decided. The header from any
//! other user, given twice, or not in its exact form is refused (403 and -32007, or 400 and
//! -32600) and nothing in the body runs.
//!
//! **Where calls run.** A single small call whose answer is ready at once
//! ([`crate::rpc::Methods::call_now`]: a read from memory that no commit holds up) is
//! answered on the connection's own task. So is a single small `anchor_put`
//! ([`crate::rpc::Methods::call_later`]) while no commit holds or waits for the ledger: its
//! checks (decoding, admission, one signature's verification, tens of microseconds) run on
//! the task, which then awaits the driver's answer (the transaction stored, or committed)
//! without holding a thread or its parsing's memory; if the driver's queue is full it is told
//! -32004 (retry) rather than waited for. Every other call runs on tokio's blocking threads,
//! since it may wait for the ledger's lock, the disk or a commit. A panic in a call is
//! answered 500 and -32603 wherever it ran.
//!
//! Framing is hyper's (RFC 9112): a missing or malformed `Content-Length`, two that disagree,
//! or a head over [`Limits::head_max`] are refused by hyper with a bare 400 or 431 and the
//! connection closed, so no request can be smuggled past a proxy in front. Chunked bodies get
//! 501 (send `Content-Length`).
//!
//! Time and memory are bounded per request and in total:
//! - the head must arrive within [`Limits::head_timeout`] of its first byte, the body within
//!   [`Limits::request_timeout`] of the head (408 otherwise): a client sending a byte a second
//!   holds no thread (connections are tasks) and is cut off;
//! - every write must make progress within [`Limits::write_timeout`]: a client that never
//!   reads its answers is disconnected;
//! - an idle keep-alive connection is closed after [`Limits::idle_timeout`];
//! - at most [`Limits::connections_max`] connections; past it a connection gets 503 with
//!   `Retry-After` and a JSON-RPC -32004 body, and is closed;
//! - memory comes from a budget of [`Limits::memory_max`] (requests of up to 1 MiB from an
//!   eighth of it kept for them, so that ordinary calls never queue behind large bodies): a
//!   request reserves its body's bytes as they arrive (a head that announces 4 MiB and stalls
//!   holds nothing), then four times its body plus 64 KiB while it is parsed (see
//!   [`crate::rpc::handle_bytes`]), then its answer's size until hyper has written it. A
//!   request that cannot get its share by its deadline gets 503 and -32004. So under any load
//!   the node's request memory stays below `memory_max`.

use std::convert::Infallible;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, TRANSFER_ENCODING};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

use crate::rpc::{self, Methods, RpcError};

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (a day-end batch of 10,000 anchors is ~1.4 MiB of JSON).
    pub body_max: usize,
    /// Largest request head (request line and headers).
    pub head_max: usize,
    /// Concurrent connections.
    pub connections_max: usize,
    /// Idle time of a keep-alive connection between requests, and the longest pause in a read.
    pub idle_timeout: Duration,
    /// Time for a request's head to arrive, from its first byte.
    pub head_timeout: Duration,
    /// Time for a request's body to arrive (and its share of memory to be granted), from the
    /// end of its head.
    pub request_timeout: Duration,
    /// The longest a write of an answer may make no progress.
    pub write_timeout: Duration,
    /// Memory all requests in flight may reserve together (bodies and their parsing).
    pub memory_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_max: 4 << 20,
            head_max: 16 << 10,
            connections_max: 2048,
            idle_timeout: Duration::from_secs(60),
            head_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            memory_max: 256 << 20,
        }
    }
}

/// What every request may reserve beyond five times its body: the parsing's fixed costs.
const RESERVE_FIXED: usize = 64 << 10;
/// Memory is reserved in KiB permits (a semaphore counts in `u32`).
const PERMIT: usize = 1024;

/// Serves JSON-RPC on `listener` until `shutdown` is set. A client identity is believed only
/// from a connection of one of the `forwarders` users (the box's proxy: see the module's docs).
///
/// Once `shutdown` is set it takes no new connection, lets the requests in flight finish and
/// write their answers (a node that stops answers its waiting writes "the node is stopping"
/// rather than dropping them), closes each connection after its current request (an idle one
/// at once) and returns — within [`DRAIN_MAX`] of seeing the flag, and a blocking call still
/// running then gets [`DRAIN_MAX`] more before it is abandoned.
pub fn serve(
    listener: UnixListener,
    methods: Arc<dyn Methods>,
    limits: Limits,
    forwarders: Vec<u32>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rpc-http")
        .enable_all()
        .build()?;
    let served = runtime.block_on(run(listener, methods, limits, forwarders, shutdown));
    // Blocking calls still running (a long poll) are abandoned past this, not awaited.
    runtime.shutdown_timeout(DRAIN_MAX);
    served
}

/// How long a stopping server waits for its requests in flight to finish.
pub const DRAIN_MAX: Duration = Duration::from_secs(2);

struct Shared {
    methods: Arc<dyn Methods>,
    limits: Limits,
    /// The users whose connections may carry a client identity.
    forwarders: Vec<u32>,
    /// The budget of requests whose reservation is above [`SMALL_MAX`].
    memory: Arc<Semaphore>,
    /// The budget of small requests (an eighth of the whole): they never queue behind large
    /// ones, so a flood of large hostile bodies does not hold up ordinary calls.
    memory_small: Arc<Semaphore>,
}

/// Reservations up to this (bodies up to about 190 KiB) draw from the small requests' budget.
const SMALL_MAX: usize = 1 << 20;

async fn run(
    listener: UnixListener,
    methods: Arc<dyn Methods>,
    limits: Limits,
    forwarders: Vec<u32>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let connections = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let permits =
        |bytes: usize| (bytes / PERMIT).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let small = limits.memory_max / 8;
    let shared = Arc::new(Shared {
        methods,
        limits,
        forwarders,
        memory: Arc::new(Semaphore::new(permits(limits.memory_max - small))),
        memory_small: Arc::new(Semaphore::new(permits(small))),
    });
    // Told to each connection when the server stops: it finishes its request and closes.
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    while !shutdown.load(Ordering::Relaxed) {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = tokio::time::sleep(Duration::from_millis(100)) => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of descriptors or memory for one more: the others go on being served.
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match Arc::clone(&connections).try_acquire_owned() {
            Ok(slot) => {
                let shared = Arc::clone(&shared);
                let stop = stop_seen.clone();
                tokio::spawn(async move {
                    connection(stream, &shared, stop).await;
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(overloaded(stream));
            }
        }
    }
    // The drain: every connection's slot back, or the time is up.
    drop(listener);
    let _ = stopping.send(true);
    let all = u32::try_from(limits.connections_max.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_MAX, connections.acquire_many(all)).await;
    Ok(())
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::OutOfMemory
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23) // EMFILE, ENFILE
}

/// One connection: hyper's HTTP/1.1 with the timeouts above; when `stop` turns true it
/// finishes the request in hand (its answer written) and closes.
async fn connection(
    stream: tokio::net::UnixStream,
    shared: &Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let limits = shared.limits;
    // The kernel's word for who is at the other end; none if it cannot say.
    let peer = stream.peer_cred().ok().map(|c| c.uid());
    let mut io = TimeoutStream::new(stream);
    io.set_read_timeout(Some(limits.idle_timeout));
    io.set_write_timeout(Some(limits.write_timeout));
    let io = TokioIo::new(Box::pin(io));
    let service = hyper::service::service_fn(|req| {
        let shared = Arc::clone(shared);
        async move { Ok::<_, Infallible>(request(req, &shared, peer).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.head_max.max(8192))
        .keep_alive(true)
        // A client may shut its side once its request is sent and still get the answer.
        .half_close(true)
        .serve_connection(io, service);
    let mut served = std::pin::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    served.as_mut().graceful_shutdown();
    let _ = served.await;
}

/// Past the connection cap: a short answer, then the connection is closed.
async fn overloaded(mut stream: tokio::net::UnixStream) {
    let body = error_body(RpcError::BUSY, "too many connections; retry shortly");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \
         {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

fn error_body(code: i64, message: &str) -> Vec<u8> {
    serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

/// An answer's body, holding its request's share of memory until hyper has written it (or
/// the connection is gone). Handed to hyper in 64 KiB slices: hyper asks for the next only
/// when its write buffer has room, so the share is given back as the last bytes go out, not
/// when the answer is first queued.
struct Held {
    data: Bytes,
    _reserved: Option<OwnedSemaphorePermit>,
}

const SLICE: usize = 64 << 10;

impl hyper::body::Body for Held {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.data.len().min(SLICE);
        let slice = self.data.split_to(n);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(slice))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.data.len() as u64)
    }
}

type Answer = Response<Held>;

fn answer(
    status: StatusCode,
    body: Vec<u8>,
    close: bool,
    reserved: Option<OwnedSemaphorePermit>,
) -> Answer {
    let mut r = Response::new(Held { data: Bytes::from(body), _reserved: reserved });
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    if close {
        r.headers_mut().insert(CONNECTION, hyper::header::HeaderValue::from_static("close"));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(RETRY_AFTER, hyper::header::HeaderValue::from_static("1"));
    }
    r
}

fn refuse(status: StatusCode, code: i64, message: &str) -> Answer {
    // The body may be left unread: the connection cannot be reused.
    answer(status, error_body(code, message), true, None)
}

fn busy() -> Answer {
    refuse(StatusCode::SERVICE_UNAVAILABLE, RpcError::BUSY, "the node is busy; retry shortly")
}

/// Grows `held` to `kib` KiB of `pool`, by the deadline.
async fn reserve(
    pool: &Arc<Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
    kib: u32,
    deadline: tokio::time::Instant,
) -> bool {
    let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
    if kib <= have {
        return true;
    }
    match tokio::time::timeout_at(deadline, Arc::clone(pool).acquire_many_owned(kib - have)).await {
        Ok(Ok(more)) => {
            match held {
                Some(h) => h.merge(more),
                None => *held = Some(more),
            }
            true
        }
        _ => false,
    }
}

/// The client a request speaks for: none (the box's operator), or the one its
/// [`vpbox_api::HEADER`] names on a connection from a forwarder; an answer if it is refused.
fn client_of(
    req: &Request<Incoming>,
    shared: &Shared,
    peer: Option<u32>,
) -> Result<Option<vpbox_api::Client>, Box<Answer>> {
    let mut values = req.headers().get_all(vpbox_api::HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Box::new(refuse(
            StatusCode::BAD_REQUEST,
            RpcError::INVALID_REQUEST,
            &format!("{} given twice", vpbox_api::HEADER),
        )));
    }
    if !peer.is_some_and(|uid| shared.forwarders.contains(&uid)) {
        let who = peer.map_or_else(|| "an unknown user".to_string(), |uid| format!("uid {uid}"));
        return Err(Box::new(refuse(
            StatusCode::FORBIDDEN,
            RpcError::NOT_ALLOWED,
            &format!(
                "{} is believed only from the box's proxy; this connection is from {who}",
                vpbox_api::HEADER
            ),
        )));
    }
    vpbox_api::Client::parse(value.as_bytes()).map(Some).map_err(|e| {
        Box::new(refuse(StatusCode::BAD_REQUEST, RpcError::INVALID_REQUEST, &e.to_string()))
    })
}

/// The node's methods as a client of `role` may call them: another role's are -32007.
struct AsRole<'a> {
    methods: &'a dyn Methods,
    role: vpbox_api::Role,
}

impl AsRole<'_> {
    /// -32007 unless the role may call `method`. A method the shared list does not know is
    /// allowed to no role but an admin: one added to the node and forgotten there is closed
    /// to POSPs, not open.
    fn allowed(&self, method: &str) -> Result<(), RpcError> {
        let allowed = match vpbox_api::Method::from_name(method) {
            Some(m) => self.role.allows(m),
            None => self.role == vpbox_api::Role::Admin,
        };
        if allowed {
            Ok(())
        } else {
            Err(RpcError::new(
                RpcError::NOT_ALLOWED,
                format!("method {method} is not allowed for role {}", self.role.name()),
            ))
        }
    }

    /// `answer` as the role sees it: how many clients each bank has enrolled, and the box's
    /// disk, are for operators and admins, not POSPs.
    fn filtered(&self, method: &str, answer: serde_json::Value) -> serde_json::Value {
        Self::filter(self.role, method, answer)
    }

    fn filter(
        role: vpbox_api::Role,
        method: &str,
        mut answer: serde_json::Value,
    ) -> serde_json::Value {
        if method == "node_getNodes"
            && role == vpbox_api::Role::Posp
            && let Some(o) = answer.as_object_mut()
        {
            o.remove("certificates");
            o.remove("disk");
        }
        answer
    }
}

impl Methods for AsRole<'_> {
    fn call(
        &self,
        method: &str,
        params: &serde_json::Value,
    ) -> Result<serde_json::Value, RpcError> {
        self.allowed(method)?;
        Ok(self.filtered(method, self.methods.call(method, params)?))
    }

    fn call_now(
        &self,
        method: &str,
        params: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, RpcError>> {
        if let Err(e) = self.allowed(method) {
            return Some(Err(e));
        }
        Some(self.methods.call_now(method, params)?.map(|a| self.filtered(method, a)))
    }

    fn ready_now(&self, method: &str) -> bool {
        self.methods.ready_now(method)
    }

    fn call_later(&self, method: &str, params: &serde_json::Value) -> Option<rpc::Later> {
        if let Err(e) = self.allowed(method) {
            return Some(Box::pin(std::future::ready(Err(e))));
        }
        let later = self.methods.call_later(method, params)?;
        let (role, method) = (self.role, method.to_string());
        Some(Box::pin(async move { later.await.map(|a| Self::filter(role, &method, a)) }))
    }

    fn ready_later(&self, method: &str) -> bool {
        self.methods.ready_later(method)
    }
}

async fn request(req: Request<Incoming>, shared: &Shared, peer: Option<u32>) -> Answer {
    let limits = shared.limits;
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let client = match client_of(&req, shared, peer) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    if req.headers().contains_key(TRANSFER_ENCODING) {
        return refuse(
            StatusCode::NOT_IMPLEMENTED,
            RpcError::INVALID_REQUEST,
            "chunked bodies are not accepted; send Content-Length",
        );
    }
    if req.method() != Method::POST {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            RpcError::INVALID_REQUEST,
            "JSON-RPC is POST",
        );
    }
    // hyper has checked the header's syntax and that there is only one value.
    let Some(len) = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return refuse(
            StatusCode::LENGTH_REQUIRED,
            RpcError::INVALID_REQUEST,
            "Content-Length required",
        );
    };
    if len > limits.body_max as u64 {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            RpcError::TOO_LARGE,
            &format!("body larger than {} bytes", limits.body_max),
        );
    }
    let len = len as usize;
    let pool =
        if 5 * len + RESERVE_FIXED <= SMALL_MAX { &shared.memory_small } else { &shared.memory };
    // Memory is reserved as the body's bytes arrive, never for a length only announced: a
    // client that sends a head and stalls holds nothing of the budget.
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut body: Vec<u8> = Vec::new();
    let mut incoming = req.into_body();
    loop {
        let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Err(_) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    RpcError::INVALID_REQUEST,
                    "the body did not arrive in time",
                );
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    RpcError::INVALID_REQUEST,
                    "body cut short",
                );
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        let need = body.len() + data.len();
        if need > len {
            return refuse(
                StatusCode::BAD_REQUEST,
                RpcError::INVALID_REQUEST,
                "body longer than its length",
            );
        }
        if need > body.capacity() {
            let cap = (body.capacity() * 2).max(need).min(len);
            if !reserve(pool, &mut held, cap.div_ceil(PERMIT) as u32, deadline).await {
                return busy();
            }
            body.reserve_exact(cap - body.len());
        }
        body.extend_from_slice(&data);
    }
    if body.len() < len {
        return refuse(StatusCode::BAD_REQUEST, RpcError::INVALID_REQUEST, "body cut short");
    }
    // The parsing's share: at most four times the body (see `rpc::handle_bytes`).
    let parse = (5 * len + RESERVE_FIXED).div_ceil(PERMIT) as u32;
    if !reserve(pool, &mut held, parse, deadline).await {
        return busy();
    }
    let methods = Arc::clone(&shared.methods);
    // A call whose answer is ready (a read from memory) is answered here, and a small
    // `anchor_put` is checked here and its answer awaited without a thread
    // (`Methods::call_later`); the others may wait (for a lock, the disk, a commit): a
    // blocking thread, not the reactor. A panic here is caught as a blocking thread's is: 500
    // and -32603 (and the connection closed, as after every refusal).
    enum Here {
        Now(Option<Vec<u8>>),
        Later(rpc::LaterAnswer),
        Elsewhere,
    }
    let here = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let run = |m: &dyn Methods| match rpc::handle_now(m, &body) {
            Some(answer) => Here::Now(answer),
            None => rpc::handle_later(m, &body).map_or(Here::Elsewhere, Here::Later),
        };
        match &client {
            None => run(methods.as_ref()),
            Some(c) => run(&AsRole { methods: methods.as_ref(), role: c.role }),
        }
    }));
    let handled = match here {
        Err(_) => Err(()),
        Ok(Here::Now(answer)) => Ok(answer),
        Ok(Here::Later(later)) => {
            // Parsed: while its answer is awaited (up to 30 s) the request keeps its body's
            // share and one permit more, for what the call still holds (its params and id, at
            // most the body) and for its answer (the id again and a small result), not its
            // parsing's share.
            let keep = len.div_ceil(PERMIT) + 1;
            drop(body);
            if let Some(h) = held.as_mut()
                && h.num_permits() > keep
            {
                drop(h.split(h.num_permits() - keep));
            }
            std::panic::AssertUnwindSafe(later).catch_unwind().await.map_err(|_| ())
        }
        Ok(Here::Elsewhere) => tokio::task::spawn_blocking(move || match client {
            None => rpc::handle_bytes(methods.as_ref(), &body),
            Some(c) => {
                rpc::handle_bytes(&AsRole { methods: methods.as_ref(), role: c.role }, &body)
            }
        })
        .await
        .map_err(|_| ()),
    };
    match handled {
        Ok(Some(bytes)) => {
            // The answer keeps a share of its own size until it is written.
            if !reserve(pool, &mut held, bytes.len().div_ceil(PERMIT) as u32, deadline).await {
                return busy();
            }
            if let Some(h) = held.as_mut() {
                let keep = bytes.len().div_ceil(PERMIT).max(1);
                if h.num_permits() > keep {
                    drop(h.split(h.num_permits() - keep));
                }
            }
            answer(StatusCode::OK, bytes, false, held)
        }
        Ok(None) => answer(StatusCode::NO_CONTENT, Vec::new(), false, None),
        Err(_) => {
            refuse(StatusCode::INTERNAL_SERVER_ERROR, RpcError::INTERNAL, "the handler failed")
        }
    }
}
