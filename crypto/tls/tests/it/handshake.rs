//! Mutual TLS 1.3 handshakes between vpbox peers, and the peers that must be refused.

use std::io::Write;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::client::Resumption;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{
    CertificateError, CipherSuite, ClientConfig, HandshakeKind, NamedGroup, PeerIncompatible,
    ServerConfig, SignatureAlgorithm, SignatureScheme,
};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::{DenyReason, TrustStore};
use vpbox_sm::sm2::{DEFAULT_ID, SecretKey};
use vpbox_sm::{Signer, SoftwareSigner};
use vpbox_tls::sign::{SM2SIG_SM3, Sm2SigningKey};
use vpbox_tls::verify::ServerVerifier;
use vpbox_tls::{Admission, Credentials, Error, Profile, client_config, server_config};

use crate::pki::{Bank, DAY, Leaf, NODE_NAME, admission, trust};
use crate::wire::{Failure, Seen, connect, raw_client};

/// A node of Bank A serving clients in `client_role`, in `profile`.
struct Setup {
    bank_a: Bank,
    node: Leaf,
    server: Arc<ServerConfig>,
}

fn setup(profile: Profile, client_role: CertProfile) -> Setup {
    let bank_a = Bank::new("Bank A");
    let node = bank_a.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let server =
        server_config(profile, &node.credentials(), admission(&[&bank_a], client_role)).unwrap();
    Setup { bank_a, node, server: Arc::new(server) }
}

/// A client that trusts Bank A's nodes. Resumption is off unless asked for, so that every
/// connection is a full handshake that runs the verifiers.
fn client(profile: Profile, banks: &[&Bank], leaf: &Leaf, resume: bool) -> Arc<ClientConfig> {
    let mut config =
        client_config(profile, &leaf.credentials(), admission(banks, CertProfile::VpNode)).unwrap();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

/// A node of `bank`'s serving POSP clients in the SM profile, with the trust store it admits
/// them by (shared: a CRL added to it applies to the next handshake).
fn posp_server(bank: &Bank, node: &Leaf) -> (Arc<ServerConfig>, Arc<RwLock<TrustStore>>) {
    let clients = trust(&[bank]);
    let admission = Admission::new(clients.clone(), CertProfile::Posp);
    (Arc::new(server_config(Profile::Sm, &node.credentials(), admission).unwrap()), clients)
}

fn ok(side: Result<Seen, Failure>, which: &str) -> Seen {
    match side {
        Ok(seen) => seen,
        Err(e) => panic!("{which} failed: {e:?}"),
    }
}

fn refused(side: Result<Seen, Failure>, which: &str) -> Failure {
    match side {
        Ok(seen) => panic!("{which} was not refused: {seen:?}"),
        Err(e) => e,
    }
}

// RFC 8998 §2 and §3: TLS_SM4_GCM_SM3 with curveSM2 and sm2sig_sm3, both sides authenticated.
#[test]
fn sm_profile_mutual_handshake_and_data() {
    let s = setup(Profile::Sm, CertProfile::VpNode);
    let peer = s.bank_a.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    let (server, client) =
        connect(&s.server, &client(Profile::Sm, &[&s.bank_a], &peer, false), NODE_NAME);
    let (server, client) = (ok(server, "server"), ok(client, "client"));
    for side in [&server, &client] {
        assert_eq!(side.suite, Some(CipherSuite::Unknown(0x00C6)));
        assert_eq!(side.group, Some(NamedGroup::Unknown(0x0029)));
        assert_eq!(side.kind, Some(HandshakeKind::Full));
    }
    assert_eq!(server.peer_cert.as_deref(), Some(peer.der.as_slice()));
    assert_eq!(client.peer_cert.as_deref(), Some(s.node.der.as_slice()));
    // The host can name the peer from the certificate the verifier admitted.
    let id = admission(&[&s.bank_a], CertProfile::VpNode)
        .admit(&server.peer_cert.unwrap(), SystemTime::now())
        .unwrap();
    assert_eq!((id.bank.as_str(), id.name.as_str()), ("Bank A", "node2"));
}

#[test]
fn hybrid_profile_mutual_handshake_and_data() {
    let s = setup(Profile::Hybrid, CertProfile::Posp);
    let posp = s.bank_a.leaf(CertProfile::Posp, "posp7", 12, SystemTime::now() - DAY, 365);
    let (server, client) =
        connect(&s.server, &client(Profile::Hybrid, &[&s.bank_a], &posp, false), NODE_NAME);
    let (server, client) = (ok(server, "server"), ok(client, "client"));
    for side in [&server, &client] {
        assert_eq!(side.suite, Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(side.group, Some(NamedGroup::X25519));
    }
    assert_eq!(server.peer_cert.as_deref(), Some(posp.der.as_slice()));
}

// RFC 8446 §2.2: a PSK from a NewSessionTicket resumes; the server keeps the session state.
#[test]
fn resumption_in_both_profiles() {
    for (profile, suite) in [
        (Profile::Sm, CipherSuite::Unknown(0x00C6)),
        (Profile::Hybrid, CipherSuite::TLS13_AES_128_GCM_SHA256),
    ] {
        let s = setup(profile, CertProfile::VpNode);
        let peer = s.bank_a.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
        let cfg = client(profile, &[&s.bank_a], &peer, true);
        let (server, client) = connect(&s.server, &cfg, NODE_NAME);
        assert_eq!(ok(client, "client").kind, Some(HandshakeKind::Full), "{profile:?}");
        ok(server, "server");
        let (server, client) = connect(&s.server, &cfg, NODE_NAME);
        let (server, client) = (ok(server, "server"), ok(client, "client"));
        for side in [&server, &client] {
            assert_eq!(side.kind, Some(HandshakeKind::Resumed), "{profile:?}");
            assert_eq!(side.suite, Some(suite));
        }
        // The server still knows who the client is.
        assert_eq!(server.peer_cert.as_deref(), Some(peer.der.as_slice()));
    }
}

// Resumption does not run the verifiers: the host re-admits the peer's certificates, and a
// CRL published since the session was made refuses it.
#[test]
fn a_resumed_session_is_readmitted_by_the_host() {
    let bank_a = Bank::new("Bank A");
    let issuing = bank_a.issuing_ca(50);
    let node = bank_a.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let posp = issuing.leaf(CertProfile::Posp, "posp7", 51, SystemTime::now() - DAY, 365);
    let (server, store) = posp_server(&bank_a, &node);
    let clients = Admission::new(store.clone(), CertProfile::Posp);
    let cfg = client(Profile::Sm, &[&bank_a], &posp, true);
    let (server_seen, _) = connect(&server, &cfg, NODE_NAME);
    let full = ok(server_seen, "server, full handshake");
    assert_eq!(full.peer_chain.len(), 2, "the client sent its issuing CA");
    let id = clients.admit_certificates(&full.peer_chain, SystemTime::now()).unwrap();
    assert_eq!(id.name, "posp7");

    store.write().unwrap().add_crl(&issuing.crl(1, &[&posp])).unwrap();
    let (server_seen, _) = connect(&server, &cfg, NODE_NAME);
    let resumed = ok(server_seen, "server, resumed");
    assert_eq!(resumed.kind, Some(HandshakeKind::Resumed));
    let err = clients.admit_certificates(&resumed.peer_chain, SystemTime::now()).unwrap_err();
    assert_eq!(Failure::from(err).denied(), Some(DenyReason::Revoked));
    assert!(clients.admit_certificates(&[], SystemTime::now()).is_err());
}

#[test]
fn client_from_an_unknown_root_is_refused() {
    let s = setup(Profile::Sm, CertProfile::VpNode);
    let bank_b = Bank::new("Bank B");
    let stranger = bank_b.leaf(CertProfile::VpNode, "node9", 13, SystemTime::now() - DAY, 365);
    let (server, client) =
        connect(&s.server, &client(Profile::Sm, &[&s.bank_a], &stranger, false), NODE_NAME);
    assert!(matches!(refused(server, "server").denied(), Some(DenyReason::UnknownRoot(_))));
    refused(client, "client");
}

#[test]
fn server_from_an_unknown_root_is_refused() {
    let s = setup(Profile::Hybrid, CertProfile::VpNode);
    let bank_b = Bank::new("Bank B");
    let peer = bank_b.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    // The client trusts only Bank B; the server is Bank A's.
    let cfg = client(Profile::Hybrid, &[&bank_b], &peer, false);
    let (server, client) = connect(&s.server, &cfg, NODE_NAME);
    assert!(matches!(refused(client, "client").denied(), Some(DenyReason::UnknownRoot(_))));
    refused(server, "server");
}

// The CRL is installed in the server's running trust store: the next handshake is refused.
#[test]
fn revoked_client_is_refused() {
    let bank_a = Bank::new("Bank A");
    let node = bank_a.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let posp = bank_a.leaf(CertProfile::Posp, "posp7", 12, SystemTime::now() - DAY, 365);
    let (server, clients) = posp_server(&bank_a, &node);
    let cfg = client(Profile::Sm, &[&bank_a], &posp, false);
    let (server_seen, client_seen) = connect(&server, &cfg, NODE_NAME);
    ok(server_seen, "server before revocation");
    ok(client_seen, "client before revocation");

    clients.write().unwrap().add_crl(&bank_a.crl(1, &[&posp])).unwrap();
    let (server_seen, client_seen) = connect(&server, &cfg, NODE_NAME);
    assert_eq!(refused(server_seen, "server").denied(), Some(DenyReason::Revoked));
    refused(client_seen, "client");
}

// A bank issuing from a CA under its root: the client sends the CA with its certificate. The
// CA's own CRL revokes a leaf; the root's CRL revokes the CA and every leaf under it.
#[test]
fn client_under_an_issuing_ca_is_admitted_until_its_ca_is_revoked() {
    let bank_a = Bank::new("Bank A");
    let issuing = bank_a.issuing_ca(40);
    let node = bank_a.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let posp = issuing.leaf(CertProfile::Posp, "posp7", 41, SystemTime::now() - DAY, 365);
    let other = issuing.leaf(CertProfile::Posp, "posp8", 42, SystemTime::now() - DAY, 365);
    let (server, clients) = posp_server(&bank_a, &node);
    let cfg = client(Profile::Sm, &[&bank_a], &posp, false);
    let (server_seen, client_seen) = connect(&server, &cfg, NODE_NAME);
    ok(server_seen, "server");
    ok(client_seen, "client");

    // Without its CA, the certificate leads to no root.
    let bare = Credentials::new(posp.chain()[..1].to_vec(), posp.key.clone()).unwrap();
    let bare = Arc::new({
        let mut c =
            client_config(Profile::Sm, &bare, admission(&[&bank_a], CertProfile::VpNode)).unwrap();
        c.resumption = Resumption::disabled();
        c
    });
    let (server_seen, _) = connect(&server, &bare, NODE_NAME);
    assert!(matches!(
        refused(server_seen, "server, no CA sent").denied(),
        Some(DenyReason::UnknownRoot(_))
    ));

    clients.write().unwrap().add_crl(&issuing.crl(1, &[&posp])).unwrap();
    let (server_seen, _) = connect(&server, &cfg, NODE_NAME);
    assert_eq!(refused(server_seen, "server, leaf revoked").denied(), Some(DenyReason::Revoked));
    let other_cfg = client(Profile::Sm, &[&bank_a], &other, false);
    let (server_seen, _) = connect(&server, &other_cfg, NODE_NAME);
    ok(server_seen, "server, a sibling still admitted");

    clients.write().unwrap().add_crl(&bank_a.crl_revoking_cas(1, &[&issuing])).unwrap();
    let (server_seen, _) = connect(&server, &other_cfg, NODE_NAME);
    assert!(matches!(
        refused(server_seen, "server, CA revoked").denied(),
        Some(DenyReason::IssuerRevoked(_))
    ));
}

#[test]
fn expired_client_is_refused() {
    let s = setup(Profile::Sm, CertProfile::Posp);
    let old = s.bank_a.leaf(CertProfile::Posp, "posp7", 12, SystemTime::now() - 10 * DAY, 1);
    let (server, client) =
        connect(&s.server, &client(Profile::Sm, &[&s.bank_a], &old, false), NODE_NAME);
    assert_eq!(refused(server, "server").denied(), Some(DenyReason::Expired));
    refused(client, "client");
}

#[test]
fn posp_certificate_cannot_pass_as_a_node() {
    let s = setup(Profile::Hybrid, CertProfile::VpNode);
    let posp = s.bank_a.leaf(CertProfile::Posp, "posp7", 12, SystemTime::now() - DAY, 365);
    let (server, _) =
        connect(&s.server, &client(Profile::Hybrid, &[&s.bank_a], &posp, false), NODE_NAME);
    assert!(matches!(
        refused(server, "server").denied(),
        Some(DenyReason::WrongProfile { expected: "vp-node", .. })
    ));
}

#[test]
fn server_with_another_name_is_refused() {
    let s = setup(Profile::Sm, CertProfile::VpNode);
    let peer = s.bank_a.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    let cfg = client(Profile::Sm, &[&s.bank_a], &peer, false);
    for name in ["node2.bank-a.example", "bank-a.example", "127.0.0.1"] {
        let (server, client) = connect(&s.server, &cfg, name);
        let err = refused(client, "client");
        assert_eq!(
            err.tls(),
            Some(&rustls::Error::InvalidCertificate(CertificateError::NotValidForName)),
            "{name}"
        );
        refused(server, "server");
    }
    // Names compare case-insensitively (RFC 6125 §6.4.1).
    let (server, client) = connect(&s.server, &cfg, "NODE1.Bank-A.example");
    ok(server, "server");
    ok(client, "client");
}

/// A client that presents a stolen certificate must prove possession of its key: signing with
/// any other key fails CertificateVerify (RFC 8446 §4.4.3).
#[test]
fn client_whose_key_is_not_its_certificates_is_refused() {
    let s = setup(Profile::Sm, CertProfile::VpNode);
    let victim = s.bank_a.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    let thief = Arc::new(SoftwareSigner::new(SecretKey::generate().unwrap()));
    // Our own builder refuses to pair them...
    assert!(matches!(Credentials::new(victim.chain(), thief.clone()), Err(Error::KeyMismatch)));
    // ...so the attacker assembles rustls by hand.
    let key = Sm2SigningKey::new(thief).unwrap();
    let cfg = handmade_client(Profile::Sm, &s.bank_a, victim.chain(), Arc::new(key));
    let (server, client) = connect(&s.server, &cfg, NODE_NAME);
    assert_eq!(
        refused(server, "server").tls(),
        Some(&rustls::Error::InvalidCertificate(CertificateError::BadSignature))
    );
    refused(client, "client");
}

/// CertificateVerify signed with the certificate's own key but the default SM2 ID
/// (1234567812345678) instead of RFC 8998's TLS ID is refused: the ID is part of the check.
#[test]
fn certificate_verify_with_the_wrong_sm2_id_is_refused() {
    let s = setup(Profile::Sm, CertProfile::VpNode);
    let peer = s.bank_a.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    let key = WrongIdKey(peer.key.clone());
    let cfg = handmade_client(Profile::Sm, &s.bank_a, peer.chain(), Arc::new(key));
    let (server, _) = connect(&s.server, &cfg, NODE_NAME);
    assert_eq!(
        refused(server, "server").tls(),
        Some(&rustls::Error::InvalidCertificate(CertificateError::BadSignature))
    );
}

#[test]
fn profiles_do_not_mix() {
    let s = setup(Profile::Hybrid, CertProfile::VpNode);
    let peer = s.bank_a.leaf(CertProfile::VpNode, "node2", 11, SystemTime::now() - DAY, 365);
    let (server, client) =
        connect(&s.server, &client(Profile::Sm, &[&s.bank_a], &peer, false), NODE_NAME);
    assert_eq!(
        refused(server, "server").tls(),
        Some(&rustls::Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon))
    );
    refused(client, "client");
}

/// Bytes that are not TLS, or a ClientHello cut short, end the connection with an error; the
/// server does not panic.
#[test]
fn garbage_from_the_network_is_refused() {
    let s = setup(Profile::Sm, CertProfile::VpNode);
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0xff, 0xff, 0xff],
        &[0x16, 0x03, 0x03, 0x40, 0x01],
        &[0x17; 300],
    ];
    for bytes in garbage {
        let result = raw_client(&s.server, |sock| {
            let _ = sock.write_all(bytes);
        });
        assert!(result.is_err(), "{bytes:?}");
    }
}

fn handmade_client(
    profile: Profile,
    bank: &Bank,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
) -> Arc<ClientConfig> {
    let verifier = ServerVerifier::new(admission(&[bank], CertProfile::VpNode));
    let mut config = ClientConfig::builder_with_provider(Arc::new(profile.provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(CertifiedKey::new(chain, key))));
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// Signs CertificateVerify with the default ID: what a naive SM2 port would do.
#[derive(Debug)]
struct WrongIdKey(Arc<SoftwareSigner>);

impl SigningKey for WrongIdKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SM2SIG_SM3)
            .then(|| Box::new(WrongIdSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        None
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Unknown(0xF2)
    }
}

#[derive(Debug)]
struct WrongIdSigner(Arc<SoftwareSigner>);

impl rustls::sign::Signer for WrongIdSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let z = self.0.public_key().z(DEFAULT_ID).unwrap();
        let e = vpbox_sm::sm2::message_digest(&z, &[message]);
        Ok(self.0.sign_digest(&e).unwrap().to_der())
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3
    }
}
