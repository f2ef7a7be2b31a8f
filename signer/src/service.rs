use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use vpbox_signer_client::link::LinkProof;
use vpbox_signer_client::protocol::{Request, Response, Status, read_frame, write_frame};
use vpbox_sm::{Domain, Signer};

use crate::guard::{Guard, GuardError, Limits, Position, Verdict, classify};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A guard log could not be opened or is corrupt.
    #[error(transparent)]
    Guard(#[from] GuardError),
    /// Another error, described.
    #[error("{0}")]
    Other(String),
}

/// One key the service signs with.
pub struct ServiceKey {
    /// The name clients use.
    pub name: String,
    /// The key (the HSM's in production).
    pub signer: Arc<dyn Signer>,
    /// The consensus node this key signs for; `None`: no consensus signatures.
    pub node: Option<u32>,
    /// The users allowed TLS 1.3 CertificateVerify signatures with it (the proxy's).
    pub tls_uids: Vec<u32>,
}

/// Refusals counted since the service started, by reason, and the last one.
#[derive(Default)]
struct Refusals {
    conflict: AtomicU64,
    too_old: AtomicU64,
    out_of_range: AtomicU64,
    wrong_sender: AtomicU64,
    malformed: AtomicU64,
    last: Mutex<Option<(SystemTime, String)>>,
}

struct Key {
    signer: Arc<dyn Signer>,
    node: Option<u32>,
    tls_uids: Vec<u32>,
    /// The consensus domain's guard. Other domains are served without positions.
    guard: Mutex<Guard>,
    signed: AtomicU64,
    refusals: Refusals,
}

/// The signer's request handling, independent of sockets: tests drive it directly.
pub struct Service {
    keys: HashMap<String, Key>,
    allowed_uids: Vec<u32>,
    max_connections: usize,
    active: AtomicUsize,
    /// The audit log on disk ([`crate::audit`]), when one is kept.
    audit: Option<Mutex<crate::audit::AuditLog>>,
}

/// The caller, as the kernel reports it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// User ID.
    pub uid: u32,
    /// Process ID.
    pub pid: i32,
}

impl Service {
    /// A service over `keys`, with guard logs in `state_dir`.
    pub fn new(
        keys: Vec<ServiceKey>,
        state_dir: &std::path::Path,
        limits: Limits,
        allowed_uids: Vec<u32>,
        max_connections: usize,
    ) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| ServiceError::Other(format!("{}: {e}", state_dir.display())))?;
        let mut map = HashMap::new();
        for ServiceKey { name, signer, node, tls_uids } in keys {
            let path = state_dir.join(format!("{name}.consensus.guard"));
            let (guard, torn) = Guard::open(&path, limits)?;
            if let Some(t) = torn {
                log(&format!(
                    "guard {}: truncated a torn tail of {} bytes at byte {} ({}): a record a \
                     crash interrupted before its signature was returned",
                    path.display(),
                    t.bytes,
                    t.offset,
                    t.reason
                ));
            }
            let key = Key {
                signer,
                node,
                tls_uids,
                guard: Mutex::new(guard),
                signed: AtomicU64::new(0),
                refusals: Refusals::default(),
            };
            map.insert(name, key);
        }
        Ok(Self {
            keys: map,
            allowed_uids,
            max_connections: max_connections.max(1),
            active: AtomicUsize::new(0),
            audit: None,
        })
    }

    /// Keeps the audit lines in `log` too (as well as on standard error).
    pub fn with_audit_log(mut self, log: crate::audit::AuditLog) -> Self {
        self.audit = Some(Mutex::new(log));
        self
    }

    /// Answers one request from `peer`, writing one audit line. When the audit log on disk
    /// cannot take the line, the answer is an error instead: no signature leaves before its line
    /// is written (successful TLS handshake signatures are journal events only: see
    /// [`crate::audit`]).
    pub fn handle(&self, peer: Peer, request: &Request) -> Response {
        let (response, what) = self.answer(peer, request);
        let body = audit_body(request, &what, &response);
        if matches!(response, Response::Error(..)) {
            tracing::warn!(uid = peer.uid, pid = peer.pid, "audit {body}");
        } else {
            tracing::info!(uid = peer.uid, pid = peer.pid, "audit {body}");
        }
        // A TLS handshake's CertificateVerify is signed before its client is authenticated:
        // anyone who reaches the proxy's listeners can ask for one, so the file (never deleted)
        // keeps only the refused ones; each is still an event in the journal, which rotates.
        let tls_signed = matches!(request, Request::Sign { domain, .. }
            if domain.as_str() == vpbox_signer_client::tls13::DOMAIN)
            && !matches!(response, Response::Error(..));
        if tls_signed {
            return response;
        }
        if let Err(e) = self.audit_file(peer, &body) {
            let msg = format!("the audit log cannot be written: {e}");
            tracing::error!("{msg}");
            return Response::Error(Status::Internal, msg);
        }
        response
    }

    /// Appends `STAMP audit uid=… pid=… BODY` to the audit log on disk, if one is kept.
    fn audit_file(&self, peer: Peer, body: &str) -> std::io::Result<()> {
        let Some(a) = &self.audit else { return Ok(()) };
        let line = format!("{} audit uid={} pid={} {body}", stamp(), peer.uid, peer.pid);
        match a.lock() {
            Ok(mut a) => a.write(&line),
            Err(_) => Err(std::io::Error::other("the audit log's lock is poisoned")),
        }
    }

    /// The answer, and what the request was as the signer understood it (for the audit line).
    fn answer(&self, peer: Peer, request: &Request) -> (Response, String) {
        match request {
            Request::Health => {
                for (name, key) in &self.keys {
                    let payload = b"vpbox signer health";
                    let ok = key.signer.sign(Domain::SELFTEST, payload).is_ok_and(|sig| {
                        key.signer
                            .public_key()
                            .verify_in(Domain::SELFTEST, payload, &sig)
                            .is_valid()
                    });
                    if !ok {
                        let msg = format!("key {name}: self-test signature failed");
                        return (Response::Error(Status::HsmFailure, msg), String::new());
                    }
                }
                (Response::Healthy, String::new())
            }
            Request::PublicKey { key } => match self.keys.get(key) {
                Some(k) => (
                    Response::PublicKey(k.signer.public_key().to_sec1_uncompressed()),
                    String::new(),
                ),
                None => (unknown_key(key), String::new()),
            },
            Request::Guard { key } => match self.keys.get(key) {
                Some(k) => (Response::Guard(k.state().to_string()), String::new()),
                None => (unknown_key(key), String::new()),
            },
            Request::Sign { key, domain, payload } => {
                let Some(k) = self.keys.get(key) else {
                    return (unknown_key(key), String::new());
                };
                if domain == vpbox_signer_client::tls13::DOMAIN {
                    return k.sign_tls13(peer, payload);
                }
                let Some(domain) = Domain::from_tag(domain) else {
                    let msg = format!("unknown domain {domain:?}");
                    return (Response::Error(Status::BadRequest, msg), String::new());
                };
                let digest = vpbox_sm::sm3::hash(payload).0;
                let what = match domain {
                    Domain::CONSENSUS => match k.admit_consensus(payload, digest) {
                        Ok(what) => what,
                        Err((refusal, what)) => return (refusal, what),
                    },
                    Domain::SELFTEST => "selftest".to_string(),
                    Domain::LINK => match k.admit_link(payload) {
                        Ok(what) => what,
                        Err(refusal) => return (refusal, String::new()),
                    },
                    _ => {
                        let msg = format!("the signer does not sign in {}", domain.tag());
                        return (Response::Error(Status::BadRequest, msg), String::new());
                    }
                };
                let response = match k.signer.sign(domain, &digest) {
                    Ok(sig) => {
                        k.signed.fetch_add(1, Ordering::Relaxed);
                        Response::Signature(sig.to_raw())
                    }
                    Err(e) => Response::Error(Status::HsmFailure, e.to_string()),
                };
                (response, format!("{what} digest={}", hex::encode(digest)))
            }
        }
    }

    fn allowed(&self, uid: u32) -> bool {
        self.allowed_uids.contains(&uid)
    }
}

fn unknown_key(key: &str) -> Response {
    Response::Error(Status::UnknownKey, format!("no key named {key:?}"))
}

impl Key {
    /// Decides whether a consensus payload may be signed: it must decode, name this key's node
    /// as its sender, and (for the kinds that can conflict) pass the guard, durably recorded
    /// before this returns. `Ok` carries what it is, for the audit line.
    fn admit_consensus(
        &self,
        payload: &[u8],
        digest: [u8; 32],
    ) -> Result<String, (Response, String)> {
        let refuse = |status: Status, msg: String, what: String| {
            self.refusals.count(status);
            self.refusals.note(&msg);
            Err((Response::Error(status, msg), what))
        };
        let Some(node) = self.node else {
            let msg = "this key signs for no consensus node (no `node` in its config)";
            return Err((Response::Error(Status::BadRequest, msg.into()), String::new()));
        };
        let c = match classify(payload) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("not a consensus signing payload: {e}");
                return refuse(Status::BadRequest, msg, String::new());
            }
        };
        let what = match c.position {
            Some(p) => format!("msg={} epoch={} from={} position=({p})", c.what, c.epoch, c.from),
            None => format!("msg={} epoch={} from={} unguarded", c.what, c.epoch, c.from),
        };
        if c.from != node {
            let msg =
                format!("the payload is from node {}, this key signs for node {node}", c.from);
            return refuse(Status::WrongSender, msg, what);
        }
        let Some(position) = c.position else {
            return Ok(what);
        };
        match self.guard_check(position, digest) {
            Ok(Verdict::Recorded | Verdict::Repeat) => Ok(what),
            Ok(Verdict::Conflict) => {
                let msg = format!("refused: something different was signed at {position}");
                refuse(Status::Conflict, msg, what)
            }
            Ok(Verdict::TooOld) => {
                let msg = format!("refused: {position} is at or below what the guard forgot");
                refuse(Status::TooOld, msg, what)
            }
            Ok(Verdict::OutOfRange) => {
                let msg = format!("refused: {position} is too far above what the guard signed");
                refuse(Status::OutOfRange, msg, what)
            }
            Err(e) => Err((Response::Error(Status::Internal, e.to_string()), what)),
        }
    }

    /// A TLS 1.3 CertificateVerify signature for a caller the key's `tls_uids` lists, over a
    /// payload of that form only (see `vpbox_signer_client::tls13`).
    fn sign_tls13(&self, peer: Peer, content: &[u8]) -> (Response, String) {
        use vpbox_signer_client::tls13;
        if !self.tls_uids.contains(&peer.uid) {
            let msg = format!("user {} may not sign TLS handshakes with this key", peer.uid);
            return (Response::Error(Status::Forbidden, msg), "tls13".into());
        }
        let side = match tls13::check_content(content) {
            Ok(side) => side,
            Err(e) => return (Response::Error(Status::BadRequest, e.into()), "tls13".into()),
        };
        let what = format!("tls13 {side:?} CertificateVerify");
        let e = match tls13::digest(self.signer.public_key(), content) {
            Ok(e) => e,
            Err(err) => return (Response::Error(Status::Internal, err.to_string()), what),
        };
        let response = match self.signer.sign_digest(&e) {
            Ok(sig) => {
                self.signed.fetch_add(1, Ordering::Relaxed);
                Response::Signature(sig.to_raw())
            }
            Err(err) => Response::Error(Status::HsmFailure, err.to_string()),
        };
        (response, format!("{what} digest={}", hex::encode(e.0)))
    }

    /// Decides whether a link proof may be signed: it must decode as one and name this key's
    /// node as the prover. Proofs answer fresh challenges and cannot conflict: unguarded.
    fn admit_link(&self, payload: &[u8]) -> Result<String, Response> {
        let Some(node) = self.node else {
            let msg = "this key signs for no consensus node (no `node` in its config)";
            return Err(Response::Error(Status::BadRequest, msg.into()));
        };
        let p = match LinkProof::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                self.refusals.count(Status::BadRequest);
                return Err(Response::Error(Status::BadRequest, e.to_string()));
            }
        };
        if p.from != node {
            let msg =
                format!("the link proof is from node {}, this key signs for node {node}", p.from);
            self.refusals.count(Status::WrongSender);
            self.refusals.note(&msg);
            return Err(Response::Error(Status::WrongSender, msg));
        }
        Ok(format!("link-proof role={:?} from={} to={}", p.role, p.from, p.to))
    }

    /// Checks and writes under the lock; fsyncs outside it, so concurrent votes share one fsync
    /// (group commit); a signature is made only once the record is durable.
    fn guard_check(&self, position: Position, digest: [u8; 32]) -> Result<Verdict, GuardError> {
        let (verdict, file) = {
            let mut g = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let v = g.check_unsynced(position, digest)?;
            (v, g.sync_handle()?)
        };
        if matches!(verdict, Verdict::Recorded | Verdict::Repeat) {
            if let Err(e) = file.sync_data() {
                // What reached the disk is unknown, and a later fsync would not say: nothing
                // more is signed until a restart re-reads the log.
                self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fail();
                return Err(GuardError::Sync(e));
            }
        }
        Ok(verdict)
    }

    fn state(&self) -> serde_json::Value {
        let mut state = match self.guard.lock() {
            Ok(g) => g.state(),
            Err(p) => p.into_inner().state(),
        };
        let r = &self.refusals;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        state["node"] = serde_json::json!(self.node);
        state["signed"] = serde_json::json!(n(&self.signed));
        state["refused"] = serde_json::json!({
            "conflict": n(&r.conflict),
            "tooOld": n(&r.too_old),
            "outOfRange": n(&r.out_of_range),
            "wrongSender": n(&r.wrong_sender),
            "malformed": n(&r.malformed),
        });
        let last = r.last.lock().ok().and_then(|l| l.clone());
        state["lastRefusal"] = match last {
            Some((at, msg)) => serde_json::json!({
                "at": humantime::format_rfc3339_millis(at).to_string(),
                "reason": msg,
            }),
            None => serde_json::Value::Null,
        };
        state
    }
}

impl Refusals {
    fn count(&self, status: Status) {
        let counter = match status {
            Status::Conflict => &self.conflict,
            Status::TooOld => &self.too_old,
            Status::OutOfRange => &self.out_of_range,
            Status::WrongSender => &self.wrong_sender,
            _ => &self.malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn note(&self, msg: &str) {
        if let Ok(mut last) = self.last.lock() {
            #[allow(clippy::disallowed_methods)] // when a refusal happened: shown to operators
            let now = SystemTime::now();
            *last = Some((now, msg.to_string()));
        }
    }
}

/// Now, RFC 3339 UTC with milliseconds.
fn stamp() -> String {
    #[allow(clippy::disallowed_methods)] // a log stamp is I/O, like writing the line
    let now = SystemTime::now();
    humantime::format_rfc3339_millis(now).to_string()
}

/// An event of the signer (`vpbox_log` sends it to journald or standard error).
fn log(line: &str) {
    tracing::info!("{line}");
}

/// What an audit line says of one request: `op=… result=…` (the caller's UID and PID go
/// beside it: fields of the event, words of the file's line).
fn audit_body(request: &Request, what: &str, response: &Response) -> String {
    let result = match response {
        Response::Error(status, msg) => format!("{status:?}: {msg}"),
        _ => "ok".into(),
    };
    let line = match request {
        Request::Health => "op=health".to_string(),
        Request::PublicKey { key } => format!("op=public-key key={key}"),
        Request::Guard { key } => format!("op=guard key={key}"),
        Request::Sign { key, domain, payload } => {
            format!("op=sign key={key} domain={domain} bytes={} {what}", payload.len())
        }
    };
    format!("{line} result={result}")
}

/// Serves `service` on `listener` until `shutdown` is set: one thread per connection, up to the
/// connection cap; callers whose UID is not allowed are logged and disconnected unanswered.
pub fn serve(
    service: Arc<Service>,
    listener: UnixListener,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    serve_beating(service, listener, shutdown, &|| {})
}

/// [`serve`], calling `turn` each time the accept loop comes round (at least every 5 ms): a
/// supervisor's proof that the signer still serves (the appliance feeds systemd's watchdog
/// with it).
pub fn serve_beating(
    service: Arc<Service>,
    listener: UnixListener,
    shutdown: Arc<AtomicBool>,
    turn: &dyn Fn(),
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    while !shutdown.load(Ordering::Relaxed) {
        turn();
        match listener.accept() {
            Ok((stream, _)) => {
                let service = Arc::clone(&service);
                std::thread::spawn(move || connection(&service, stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn connection(service: &Service, mut stream: UnixStream) {
    let Ok(cred) = rustix::net::sockopt::socket_peercred(&stream) else {
        log("audit refused: no peer credentials");
        return;
    };
    let peer = Peer { uid: cred.uid.as_raw(), pid: cred.pid.as_raw_nonzero().get() };
    if !service.allowed(peer.uid) {
        tracing::warn!(uid = peer.uid, pid = peer.pid, "audit refused: UID not allowed");
        // Kept as evidence too; a log that cannot take it changes nothing here (the caller
        // is refused either way).
        let _ = service.audit_file(peer, "refused: UID not allowed");
        return;
    }
    let active = service.active.fetch_add(1, Ordering::SeqCst) + 1;
    let _slot = ActiveSlot(&service.active);
    if active > service.max_connections {
        let busy = Response::Error(Status::Busy, "too many connections".into());
        let _ = write_frame(&mut stream, &busy.encode());
        return;
    }
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    // A caller that never reads its answers does not hold this thread for ever.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    loop {
        let body = match read_frame(&mut stream) {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(e) => {
                let resp = Response::Error(Status::BadRequest, e.to_string());
                let _ = write_frame(&mut stream, &resp.encode());
                return;
            }
        };
        let response = match Request::decode(&body) {
            Ok(request) => service.handle(peer, &request),
            Err(e) => {
                tracing::warn!(uid = peer.uid, pid = peer.pid, "audit bad frame: {e}");
                Response::Error(Status::BadRequest, e.to_string())
            }
        };
        if write_frame(&mut stream, &response.encode()).is_err() {
            return;
        }
    }
}

struct ActiveSlot<'a>(&'a AtomicUsize);

impl Drop for ActiveSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
