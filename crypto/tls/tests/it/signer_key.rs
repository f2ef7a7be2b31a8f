//! Handshakes whose CertificateVerify is signed by the signer service over its real Unix
//! socket (the kernel's `SO_PEERCRED` deciding who may ask), as the proxy makes them: the
//! process that speaks TLS holds no private key.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use rustls::{CipherSuite, HandshakeKind};
use vpbox_ca::CertProfile;
use vpbox_signer::guard::Limits;
use vpbox_signer::{Service, ServiceKey, serve};
use vpbox_sm::Signer;
use vpbox_tls::sign::SignerServiceKey;
use vpbox_tls::{Credentials, Profile, client_config, server_config};

use crate::pki::{Bank, DAY, Leaf, NODE_NAME, admission};
use crate::wire::connect;

/// A signer service holding `leaf`'s key as "tls", for the users `tls_uids`.
struct SignerService {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignerService {
    fn start(leaf: &Leaf, tls_uids: Vec<u32>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("signer.sock");
        let me = rustix::process::getuid().as_raw();
        let key = ServiceKey {
            name: "tls".into(),
            signer: leaf.key.clone() as Arc<dyn Signer>,
            node: None,
            tls_uids,
        };
        let service =
            Service::new(vec![key], &dir.path().join("state"), Limits::default(), vec![me], 4)
                .unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || serve(Arc::new(service), listener, flag).unwrap());
        Self { _dir: dir, socket, stop, thread: Some(thread) }
    }

    /// `leaf`'s chain with its key in this signer.
    fn credentials(&self, leaf: &Leaf) -> Credentials {
        let key = SignerServiceKey::connect(&self.socket, "tls").unwrap();
        Credentials::with_key(leaf.chain(), Arc::new(key)).unwrap()
    }
}

impl Drop for SignerService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn both_ends_sign_their_handshakes_through_the_signer_service() {
    let me = rustix::process::getuid().as_raw();
    let bank = Bank::new("Bank A");
    let server_leaf = bank.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let client_leaf = bank.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    let (server_signer, client_signer) = (
        SignerService::start(&server_leaf, vec![me]),
        SignerService::start(&client_leaf, vec![me]),
    );
    for profile in [Profile::Sm, Profile::Hybrid] {
        let server = server_config(
            profile,
            &server_signer.credentials(&server_leaf),
            admission(&[&bank], CertProfile::VpNode),
        )
        .unwrap();
        let client = client_config(
            profile,
            &client_signer.credentials(&client_leaf),
            admission(&[&bank], CertProfile::VpNode),
        )
        .unwrap();
        let (s, c) = connect(&Arc::new(server), &Arc::new(client), NODE_NAME);
        let (s, c) = (s.unwrap(), c.unwrap());
        assert_eq!(s.kind, Some(HandshakeKind::Full));
        assert_eq!(s.peer_cert.as_deref(), Some(client_leaf.der.as_slice()));
        assert_eq!(c.peer_cert.as_deref(), Some(server_leaf.der.as_slice()));
        if profile == Profile::Sm {
            assert_eq!(c.suite, Some(CipherSuite::Unknown(0x00C6)));
        }
    }
}

#[test]
fn a_signer_that_does_not_list_the_caller_makes_the_handshake_fail() {
    let bank = Bank::new("Bank A");
    let leaf = bank.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let peer = bank.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    // The key is served, but no user may sign TLS handshakes with it.
    let signer = SignerService::start(&leaf, vec![]);
    let server = server_config(
        Profile::Sm,
        &signer.credentials(&leaf),
        admission(&[&bank], CertProfile::VpNode),
    )
    .unwrap();
    let client =
        client_config(Profile::Sm, &peer.credentials(), admission(&[&bank], CertProfile::VpNode))
            .unwrap();
    let (s, c) = connect(&Arc::new(server), &Arc::new(client), NODE_NAME);
    let err = format!("{:?}", s.expect_err("the server could not sign"));
    assert!(err.contains("Forbidden"), "{err}");
    assert!(c.is_err(), "the client saw no finished handshake");
}
