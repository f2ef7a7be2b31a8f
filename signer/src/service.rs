use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vpbox_sm::{Domain, Signer};

use crate::guard::{Guard, GuardError, Position, Verdict};
use crate::protocol::{Request, Response, Status, read_frame, write_frame};

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

struct Key {
    signer: Arc<dyn Signer>,
    /// The consensus domain's guard. Other domains are served without positions.
    guard: Mutex<Guard>,
}

/// The signer's request handling, independent of sockets: tests drive it directly.
pub struct Service {
    keys: HashMap<String, Key>,
    allowed_uids: Vec<u32>,
    max_connections: usize,
    active: AtomicUsize,
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
    /// A service over `keys` (name → signer), with guard logs in `state_dir`.
    pub fn new(
        keys: Vec<(String, Arc<dyn Signer>)>,
        state_dir: &std::path::Path,
        window: u64,
        allowed_uids: Vec<u32>,
        max_connections: usize,
    ) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| ServiceError::Other(format!("{}: {e}", state_dir.display())))?;
        let mut map = HashMap::new();
        for (name, signer) in keys {
            let guard = Guard::open(&state_dir.join(format!("{name}.consensus.guard")), window)?;
            map.insert(name, Key { signer, guard: Mutex::new(guard) });
        }
        Ok(Self {
            keys: map,
            allowed_uids,
            max_connections: max_connections.max(1),
            active: AtomicUsize::new(0),
        })
    }

    /// Answers one request from `peer`, writing one audit line.
    pub fn handle(&self, peer: Peer, request: &Request) -> Response {
        let response = self.answer(request);
        audit(peer, request, &response);
        response
    }

    fn answer(&self, request: &Request) -> Response {
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
                        return Response::Error(
                            Status::HsmFailure,
                            format!("key {name}: self-test signature failed"),
                        );
                    }
                }
                Response::Healthy
            }
            Request::PublicKey { key } => match self.keys.get(key) {
                Some(k) => Response::PublicKey(k.signer.public_key().to_sec1_uncompressed()),
                None => Response::Error(Status::UnknownKey, format!("no key named {key:?}")),
            },
            Request::Sign { key, domain, digest, position } => {
                let Some(k) = self.keys.get(key) else {
                    return Response::Error(Status::UnknownKey, format!("no key named {key:?}"));
                };
                let Some(domain) = Domain::from_tag(domain) else {
                    return Response::Error(
                        Status::BadRequest,
                        format!("unknown domain {domain:?}"),
                    );
                };
                match (domain, position) {
                    (Domain::CONSENSUS, None) => {
                        return Response::Error(
                            Status::BadRequest,
                            "a consensus signature needs its position".into(),
                        );
                    }
                    (Domain::CONSENSUS, Some(Position::Message)) => {}
                    (Domain::CONSENSUS, Some(pos)) => {
                        // Check and write under the lock; fsync outside it, so concurrent
                        // votes share one fsync (group commit); sign only once durable.
                        let checked = match k.guard.lock() {
                            Ok(mut g) => g
                                .check_unsynced(*pos, *digest)
                                .and_then(|v| Ok((v, g.sync_handle()?))),
                            Err(_) => {
                                return Response::Error(Status::Internal, "guard poisoned".into());
                            }
                        };
                        let verdict = checked.and_then(|(v, file)| {
                            if matches!(v, Verdict::Recorded | Verdict::Repeat) {
                                file.sync_data().map_err(|source| GuardError::Io {
                                    path: format!("{key}.consensus.guard").into(),
                                    source,
                                })?;
                            }
                            Ok(v)
                        });
                        match verdict {
                            Ok(Verdict::Recorded | Verdict::Repeat) => {}
                            Ok(Verdict::Conflict) => {
                                return Response::Error(
                                    Status::Conflict,
                                    format!("refused: a different digest was signed at {pos:?}"),
                                );
                            }
                            Ok(Verdict::TooOld) => {
                                return Response::Error(
                                    Status::TooOld,
                                    format!("refused: {pos:?} is behind the remembered window"),
                                );
                            }
                            Err(e) => return Response::Error(Status::Internal, e.to_string()),
                        }
                    }
                    (Domain::SELFTEST, None) => {}
                    (_, _) => {
                        return Response::Error(
                            Status::BadRequest,
                            format!("the signer does not sign in {}", domain.tag()),
                        );
                    }
                }
                match k.signer.sign(domain, digest) {
                    Ok(sig) => Response::Signature(sig.to_raw()),
                    Err(e) => Response::Error(Status::HsmFailure, e.to_string()),
                }
            }
        }
    }

    fn allowed(&self, uid: u32) -> bool {
        self.allowed_uids.contains(&uid)
    }
}

fn audit(peer: Peer, request: &Request, response: &Response) {
    let result = match response {
        Response::Error(status, msg) => format!("{status:?}: {msg}"),
        _ => "ok".into(),
    };
    let line = match request {
        Request::Health => "op=health".to_string(),
        Request::PublicKey { key } => format!("op=public-key key={key}"),
        Request::Sign { key, domain, digest, position } => format!(
            "op=sign key={key} domain={domain} digest={} position={position:?}",
            hex::encode(digest)
        ),
    };
    let _ = writeln!(
        std::io::stderr(),
        "audit uid={} pid={} {line} result={result}",
        peer.uid,
        peer.pid
    );
}

/// Serves `service` on `listener` until `shutdown` is set: one thread per connection, up to the
/// connection cap; callers whose UID is not allowed are logged and disconnected unanswered.
pub fn serve(
    service: Arc<Service>,
    listener: UnixListener,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    while !shutdown.load(Ordering::Relaxed) {
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
        let _ = writeln!(std::io::stderr(), "audit refused: no peer credentials");
        return;
    };
    let peer = Peer { uid: cred.uid.as_raw(), pid: cred.pid.as_raw_nonzero().get() };
    if !service.allowed(peer.uid) {
        let _ = writeln!(
            std::io::stderr(),
            "audit uid={} pid={} refused: UID not allowed",
            peer.uid,
            peer.pid
        );
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
                let _ = writeln!(
                    std::io::stderr(),
                    "audit uid={} pid={} bad frame: {e}",
                    peer.uid,
                    peer.pid
                );
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
