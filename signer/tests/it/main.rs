//! The signer service over a real Unix socket, with the kernel's real `SO_PEERCRED`. The keys
//! here are software keys (the service is generic over `Signer`); the same service over the
//! PKCS#11 test token runs in the appliance's end-to-end tests.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vpbox_consensus::{Checkpoint, Digest, Message, SeqNo};
use vpbox_signer::guard::Limits;
use vpbox_signer::protocol::Status;
use vpbox_signer::test_support::{guarded_pairs, payload, unguarded_pairs};
use vpbox_signer::{Client, ClientError, Service, ServiceKey, serve};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Domain, Signer, SoftwareSigner};

struct Running {
    _dir: tempfile::TempDir,
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
    let keys =
        vec![ServiceKey { name: "consensus".into(), signer, node: Some(NODE), tls_uids: vec![] }];
    start_keys(keys, state, allowed)
}

fn start_keys(keys: Vec<ServiceKey>, state: &Path, allowed: Vec<u32>) -> Running {
    let service = Service::new(keys, state, Limits::default(), allowed, 4).unwrap();
    run_service(service)
}

fn run_service(service: Service) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signer.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let thread = std::thread::spawn(move || serve(Arc::new(service), listener, flag).unwrap());
    Running { _dir: dir, socket, shutdown, thread: Some(thread) }
}

fn key() -> Arc<dyn Signer> {
    Arc::new(SoftwareSigner::new(SecretKey::generate().unwrap()))
}

/// The node the test key signs for.
const NODE: u32 = 1;

fn refused(result: Result<vpbox_sm::sm2::Signature, ClientError>) -> Option<Status> {
    match result {
        Err(ClientError::Refused(status, _)) => Some(status),
        Ok(_) => None,
        Err(e) => panic!("not a refusal: {e}"),
    }
}

/// Asks for `conflicting` (a different message at a position where another was signed) in
/// every framing a compromised node could try; each must be refused, or give a signature that
/// is no consensus signature.
fn every_framing_is_refused(
    c: &mut Client,
    signer: &dyn Signer,
    name: &str,
    conflicting: &Message,
) {
    let plain = payload(0, NODE, conflicting);
    let mut trailing = plain.clone();
    trailing.push(0);
    // A view change or new view names its configuration and is keyed by it (see the guard's
    // docs): in another epoch it is another position, where it conflicts in turn.
    let by_epoch = matches!(conflicting, Message::ViewChange(_) | Message::NewView(_));
    let other_epoch = payload(1, NODE, conflicting);
    if by_epoch {
        sign_consensus(c, signer, &other_epoch);
        let first_there =
            payload(1, NODE, &guarded_pairs(0).into_iter().find(|p| p.0 == name).unwrap().1);
        assert_eq!(
            refused(c.sign("consensus", Domain::CONSENSUS, &first_there)),
            Some(Status::Conflict),
            "{name} in epoch 1"
        );
    }
    let framings: [(&str, Domain, Vec<u8>, Status); 7] = [
        ("as it is", Domain::CONSENSUS, plain.clone(), Status::Conflict),
        (
            "in another epoch",
            Domain::CONSENSUS,
            other_epoch,
            if by_epoch { Status::Ok } else { Status::Conflict },
        ),
        ("with a trailing byte", Domain::CONSENSUS, trailing, Status::BadRequest),
        (
            "as another node's",
            Domain::CONSENSUS,
            payload(0, NODE + 1, conflicting),
            Status::WrongSender,
        ),
        (
            "as its digest",
            Domain::CONSENSUS,
            vpbox_sm::sm3::hash(&plain).0.to_vec(),
            Status::BadRequest,
        ),
        ("in the tx domain", Domain::TX, plain.clone(), Status::BadRequest),
        ("in the governance domain", Domain::GOVERNANCE, plain.clone(), Status::BadRequest),
    ];
    for (how, domain, bytes, want) in framings {
        let want = (want != Status::Ok).then_some(want);
        assert_eq!(refused(c.sign("consensus", domain, &bytes)), want, "{name} {how}");
    }
    // The self-test domain signs anything, framed so that it never verifies as consensus.
    let sig = c.sign("consensus", Domain::SELFTEST, &plain).unwrap();
    let digest = vpbox_sm::sm3::hash(&plain).0;
    assert!(!signer.public_key().verify_in(Domain::CONSENSUS, &digest, &sig).is_valid(), "{name}");
}

fn sign_consensus(c: &mut Client, signer: &dyn Signer, payload: &[u8]) {
    let sig = c.sign("consensus", Domain::CONSENSUS, payload).unwrap();
    let digest = vpbox_sm::sm3::hash(payload).0;
    assert!(signer.public_key().verify_in(Domain::CONSENSUS, &digest, &sig).is_valid());
}

#[test]
fn every_guarded_kind_refuses_a_conflict_in_every_framing_across_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let signer = key();
    {
        let run = start(Arc::clone(&signer), state.path(), vec![my_uid()]);
        let mut c = Client::connect(&run.socket).unwrap();
        assert_eq!(&c.public_key("consensus").unwrap(), signer.public_key());
        c.health().unwrap();
        for (name, first, second) in guarded_pairs(0) {
            sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &first));
            // The same message again (a retransmission, a restart) is signed again.
            sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &first));
            every_framing_is_refused(&mut c, signer.as_ref(), name, &second);
        }
        for (_, first, second) in unguarded_pairs() {
            sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &first));
            sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &second));
        }
        let state: serde_json::Value =
            serde_json::from_str(&c.guard("consensus").unwrap()).unwrap();
        // Six positions, and the view change and new view again in epoch 1.
        assert_eq!(state["positions"], 8, "{state}");
        assert_eq!(state["refused"]["conflict"], 12, "{state}");
        assert_eq!(state["refused"]["wrongSender"], 6, "{state}");
    }
    // A new service on the same state: the guard remembers.
    let run = start(Arc::clone(&signer), state.path(), vec![my_uid()]);
    let mut c = Client::connect(&run.socket).unwrap();
    for (name, first, second) in guarded_pairs(0) {
        every_framing_is_refused(&mut c, signer.as_ref(), name, &second);
        sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &first));
    }
}

#[test]
fn a_poisoning_request_is_refused_and_the_node_still_votes() {
    let state = tempfile::tempdir().unwrap();
    let signer = key();
    let run = start(Arc::clone(&signer), state.path(), vec![my_uid()]);
    let mut c = Client::connect(&run.socket).unwrap();
    for (_, first, _) in guarded_pairs(0) {
        sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &first));
    }
    let far =
        |seq: u64| Message::Checkpoint(Checkpoint { seq: SeqNo(seq), state: Digest([9; 32]) });
    let poison = payload(0, NODE, &far(1 << 62));
    assert_eq!(refused(c.sign("consensus", Domain::CONSENSUS, &poison)), Some(Status::OutOfRange));
    let far_view = Message::Heartbeat { view: vpbox_consensus::View(1 << 62) };
    // Heartbeats are unguarded: they move nothing.
    sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &far_view));
    for (_, first, _) in guarded_pairs(1) {
        sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, &first));
    }
    let state: serde_json::Value = serde_json::from_str(&c.guard("consensus").unwrap()).unwrap();
    assert_eq!(state["refused"]["outOfRange"], 1, "{state}");
    assert!(state["lastRefusal"]["reason"].as_str().unwrap().contains("too far above"), "{state}");
}

/// Every request is a line of the audit log on disk, refusals too; the log rotates into a
/// chain that verifies. A line that cannot be written (here: the rotation's target exists)
/// fails the request: no signature leaves unaudited.
#[test]
fn every_request_is_audited_on_disk_and_an_unwritable_log_refuses_to_sign() {
    let state = tempfile::tempdir().unwrap();
    let audit = state.path().join("audit");
    let signer = key();
    let keys = vec![ServiceKey {
        name: "consensus".into(),
        signer: Arc::clone(&signer),
        node: Some(NODE),
        tls_uids: vec![],
    }];
    let service = Service::new(keys, state.path(), Limits::default(), vec![my_uid()], 4)
        .unwrap()
        .with_audit_log(vpbox_signer::audit::AuditLog::open(&audit, 2000).unwrap());
    let run = run_service(service);
    let mut c = Client::connect(&run.socket).unwrap();
    for (_, m, _) in guarded_pairs(0).iter().take(3) {
        sign_consensus(&mut c, signer.as_ref(), &payload(0, NODE, m));
    }
    assert_eq!(refused(c.sign("other", Domain::CONSENSUS, b"x")), Some(Status::UnknownKey));
    c.health().unwrap();
    let text = std::fs::read_to_string(audit.join("audit.log")).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines.iter().filter(|l| l.contains("op=sign key=consensus")).count(), 3, "{text}");
    assert!(lines[3].contains("key=other") && lines[3].contains("UnknownKey"), "{text}");
    for l in &lines {
        let stamp = l.split(' ').next().unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{l}");
        assert!(l.contains(&format!("uid={} pid={}", my_uid(), std::process::id())), "{l}");
    }
    // Past 2000 bytes it rotates; block the rotation's target and the next request that
    // needs it fails, with the reason.
    std::fs::write(audit.join("audit-000001.log"), "in the way").unwrap();
    let mut failed = None;
    for _ in 0..40 {
        if let Err(e) = c.health() {
            failed = Some(e.to_string());
            break;
        }
    }
    let failed = failed.expect("a request fails once the log cannot rotate");
    assert!(failed.contains("the audit log cannot be written"), "{failed}");
    // A vote then gets no signature either: none leaves unaudited.
    let vote = payload(0, NODE, &guarded_pairs(0)[3].1);
    match c.sign("consensus", Domain::CONSENSUS, &vote) {
        Err(ClientError::Refused(Status::Internal, msg)) => {
            assert!(msg.contains("the audit log cannot be written"), "{msg}");
        }
        other => panic!("a signature left unaudited: {other:?}"),
    }
    std::fs::remove_file(audit.join("audit-000001.log")).unwrap();
    c.health().unwrap();
    assert!(vpbox_signer::audit::verify(&audit).is_ok_and(|v| v.files == 2));
}

#[test]
fn refuses_what_it_must_not_sign() {
    let state = tempfile::tempdir().unwrap();
    let run = start(key(), state.path(), vec![my_uid()]);
    let mut c = Client::connect(&run.socket).unwrap();
    let vote = payload(0, NODE, &guarded_pairs(0)[1].1);
    let cases = [
        (c.sign("consensus", Domain::CONSENSUS, b"not a consensus message"), Status::BadRequest),
        (c.sign("consensus", Domain::TX, &vote), Status::BadRequest),
        (c.sign("consensus", Domain::GOVERNANCE, &vote), Status::BadRequest),
        (c.sign("other", Domain::CONSENSUS, &vote), Status::UnknownKey),
    ];
    for (result, want) in cases {
        assert_eq!(refused(result), Some(want));
    }
}

#[test]
fn a_version_one_request_with_a_position_label_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let run = start(key(), state.path(), vec![my_uid()]);
    let mut raw = UnixStream::connect(&run.socket).unwrap();
    // Version 1: Sign key "consensus", the consensus domain, a digest, position 5 ("another
    // message, not guarded") — the label a compromised node chose for a prepare's digest.
    let mut v1 = vec![1u8, 2, 9];
    v1.extend_from_slice(b"consensus");
    v1.push(18);
    v1.extend_from_slice(Domain::CONSENSUS.tag().as_bytes());
    v1.extend_from_slice(&[7; 32]);
    v1.push(5);
    raw.write_all(&(v1.len() as u32).to_be_bytes()).unwrap();
    raw.write_all(&v1).unwrap();
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut body).unwrap();
    assert_eq!(body[1], Status::BadRequest as u8);
    assert!(String::from_utf8_lossy(&body).contains("unsupported version"));
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
fn a_key_without_a_node_signs_no_consensus_message() {
    let state = tempfile::tempdir().unwrap();
    let keys =
        vec![ServiceKey { name: "consensus".into(), signer: key(), node: None, tls_uids: vec![] }];
    let run = start_keys(keys, state.path(), vec![my_uid()]);
    let vote = payload(0, NODE, &guarded_pairs(0)[1].1);
    let mut c = Client::connect(&run.socket).unwrap();
    assert_eq!(refused(c.sign("consensus", Domain::CONSENSUS, &vote)), Some(Status::BadRequest));
}

#[test]
fn link_proofs_are_signed_for_the_keys_node_only_and_never_as_votes() {
    use vpbox_signer::link::{LinkProof, Role};
    let state = tempfile::tempdir().unwrap();
    let signer = key();
    let public = signer.public_key().clone();
    let run = start(signer, state.path(), vec![my_uid()]);
    let mut c = Client::connect(&run.socket).unwrap();
    let proof = |from: u32| LinkProof {
        role: Role::Dial,
        chain: [1; 32],
        from,
        to: 9,
        challenge: [2; 32],
        nonce: [3; 32],
    };
    let mine = proof(NODE).encode();
    let sig = c.sign("consensus", Domain::LINK, &mine).unwrap();
    let digest = vpbox_sm::sm3::hash(&mine).0;
    assert!(public.verify_in(Domain::LINK, &digest, &sig).is_valid());
    assert!(!public.verify_in(Domain::CONSENSUS, &digest, &sig).is_valid(), "never a vote");
    // Another node's proof, or bytes that are no proof (a vote among them), are refused.
    assert_eq!(
        refused(c.sign("consensus", Domain::LINK, &proof(NODE + 1).encode())),
        Some(Status::WrongSender)
    );
    let vote = payload(0, NODE, &guarded_pairs(0)[1].1);
    for bytes in [&vote[..], b"", &mine[..mine.len() - 1]] {
        assert_eq!(refused(c.sign("consensus", Domain::LINK, bytes)), Some(Status::BadRequest));
    }
    // A link proof is no consensus payload either.
    assert_eq!(refused(c.sign("consensus", Domain::CONSENSUS, &mine)), Some(Status::BadRequest));
}

#[test]
fn tls_signatures_go_only_to_the_proxy_user_and_only_over_certificate_verify_contents() {
    use vpbox_signer::tls13::{Side, content, digest};
    let state = tempfile::tempdir().unwrap();
    let (tls_key, vote_key) = (key(), key());
    let public = tls_key.public_key().clone();
    let keys = vec![
        ServiceKey {
            name: "consensus".into(),
            signer: tls_key,
            node: Some(NODE),
            tls_uids: vec![my_uid()],
        },
        ServiceKey {
            name: "other".into(),
            signer: vote_key,
            node: Some(NODE + 1),
            tls_uids: vec![],
        },
    ];
    let run = start_keys(keys, state.path(), vec![my_uid()]);
    let mut c = Client::connect(&run.socket).unwrap();
    for side in [Side::Server, Side::Client] {
        let cv = content(side, &[9; 32]);
        let sig = c.sign_tls13("consensus", &cv).unwrap();
        // sm2sig_sm3 with the RFC 8998 ID, as a TLS peer verifies it; in no vpbox domain.
        assert!(public.verify(b"TLSv1.3+GM+Cipher+Suite", &cv, &sig).is_valid());
        assert!(public.verify_digest(&digest(&public, &cv).unwrap(), &sig).is_valid());
        for d in Domain::ALL {
            assert!(!public.verify_in(d, &vpbox_sm::sm3::hash(&cv).0, &sig).is_valid());
        }
    }
    // Anything that is not a CertificateVerify content is refused: a vote, a link proof, a
    // digest alone, a content cut short.
    let vote = payload(0, NODE, &guarded_pairs(0)[1].1);
    let cv = content(Side::Server, &[9; 32]);
    for bytes in [&vote[..], &[7; 32][..], b"", &cv[..cv.len() - 1]] {
        assert_eq!(refused(c.sign_tls13("consensus", bytes)), Some(Status::BadRequest));
    }
    // A key whose tls_uids does not list the caller signs no handshake.
    assert_eq!(refused(c.sign_tls13("other", &cv)), Some(Status::Forbidden));
}
