//! The signer service over a real Unix socket, with the kernel's real `SO_PEERCRED`. The keys
//! here are software keys (the service is generic over `Signer`); the same service over the
//! PKCS#11 test token runs in the appliance's end-to-end tests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vpbox_signer::guard::{Phase, Position};
use vpbox_signer::protocol::Status;
use vpbox_signer::{Client, ClientError, Service, serve};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Domain, Signer, SoftwareSigner};

struct Running {
    dir: tempfile::TempDir,
    socket: PathBuf,
    shutdown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn start(signer: Arc<dyn Signer>, state: &Path, allowed: Vec<u32>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signer.sock");
    let service = Service::new(vec![("consensus".into(), signer)], state, 100, allowed, 4).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let thread = std::thread::spawn(move || serve(Arc::new(service), listener, flag).unwrap());
    Running { dir, socket, shutdown, thread: Some(thread) }
}

fn key() -> Arc<dyn Signer> {
    Arc::new(SoftwareSigner::new(SecretKey::generate().unwrap()))
}

fn vote(seq: u64) -> Option<Position> {
    Some(Position::Vote { view: 0, seq, phase: Phase::Prepare })
}

#[test]
fn signs_consensus_votes_and_refuses_to_equivocate() {
    let state = tempfile::tempdir().unwrap();
    let signer = key();
    let run = start(Arc::clone(&signer), state.path(), vec![my_uid()]);
    let mut c = Client::connect(&run.socket).unwrap();
    assert_eq!(&c.public_key("consensus").unwrap(), signer.public_key());
    c.health().unwrap();

    let sig = c.sign("consensus", Domain::CONSENSUS, [1; 32], vote(7)).unwrap();
    assert!(signer.public_key().verify_in(Domain::CONSENSUS, &[1; 32], &sig).is_valid());
    // The same vote again (a retransmission) is signed again.
    c.sign("consensus", Domain::CONSENSUS, [1; 32], vote(7)).unwrap();
    // A different digest for the same (view, seq, phase) is the equivocation the guard stops.
    let err = c.sign("consensus", Domain::CONSENSUS, [2; 32], vote(7)).unwrap_err();
    assert!(matches!(err, ClientError::Refused(Status::Conflict, _)), "{err}");
    // The connection stays usable after a refusal.
    c.sign("consensus", Domain::CONSENSUS, [2; 32], vote(8)).unwrap();
}

#[test]
fn refuses_what_it_must_not_sign() {
    let state = tempfile::tempdir().unwrap();
    let run = start(key(), state.path(), vec![my_uid()]);
    let mut c = Client::connect(&run.socket).unwrap();
    let cases = [
        (c.sign("consensus", Domain::CONSENSUS, [1; 32], None), Status::BadRequest),
        (c.sign("consensus", Domain::TX, [1; 32], None), Status::BadRequest),
        (c.sign("consensus", Domain::GOVERNANCE, [1; 32], None), Status::BadRequest),
        (c.sign("other", Domain::CONSENSUS, [1; 32], vote(1)), Status::UnknownKey),
    ];
    for (result, want) in cases {
        match result {
            Err(ClientError::Refused(status, _)) => assert_eq!(status, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
    c.sign("consensus", Domain::CONSENSUS, [1; 32], vote(500)).unwrap();
    let err = c.sign("consensus", Domain::CONSENSUS, [1; 32], vote(10)).unwrap_err();
    assert!(matches!(err, ClientError::Refused(Status::TooOld, _)), "{err}");
}

#[test]
fn an_unauthorised_uid_is_disconnected_unanswered() {
    let state = tempfile::tempdir().unwrap();
    let run = start(key(), state.path(), vec![my_uid().wrapping_add(4242)]);
    let mut c = Client::connect(&run.socket).unwrap();
    let err = c.health().unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err}");
}

#[test]
fn malformed_frames_get_an_error_and_the_signer_keeps_serving() {
    let state = tempfile::tempdir().unwrap();
    let run = start(key(), state.path(), vec![my_uid()]);
    let mut raw = UnixStream::connect(&run.socket).unwrap();
    let garbage = [1u8, 2, 0xff, 0xfe];
    raw.write_all(&(garbage.len() as u32).to_be_bytes()).unwrap();
    raw.write_all(&garbage).unwrap();
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut body).unwrap();
    assert_eq!(body[1], Status::BadRequest as u8);
    // A frame over the limit: an error, then the connection is closed.
    raw.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).unwrap();
    assert_eq!(rest[5], Status::BadRequest as u8);
    // Others are still served.
    Client::connect(&run.socket).unwrap().health().unwrap();
}

#[test]
fn the_guard_outlives_the_service() {
    let state = tempfile::tempdir().unwrap();
    let signer = key();
    {
        let run = start(Arc::clone(&signer), state.path(), vec![my_uid()]);
        Client::connect(&run.socket)
            .unwrap()
            .sign("consensus", Domain::CONSENSUS, [1; 32], vote(3))
            .unwrap();
    }
    let run = start(signer, state.path(), vec![my_uid()]);
    let err = Client::connect(&run.socket)
        .unwrap()
        .sign("consensus", Domain::CONSENSUS, [9; 32], vote(3))
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused(Status::Conflict, _)), "{err}");
    assert!(run.dir.path().exists());
}
