//! RFC 8998 against an independent implementation: Tongsuo's `openssl s_server` and
//! `s_client` (built by `scripts/tongsuo.sh`), with certificates from `vpbox-ca`.
//!
//! Both directions: a vpbox client with a Tongsuo server, and a Tongsuo client with a vpbox
//! server, each in the strict RFC 8998 profile (TLS 1.3 only, TLS_SM4_GCM_SM3, curveSM2,
//! sm2sig_sm3), both sides authenticated; and a Tongsuo client under an unknown root refused by
//! vpbox's admission policy during the handshake.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConnection, NamedGroup, ServerConnection, StreamOwned};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::DenyReason;
use vpbox_tls::{Profile, client_config, server_config};

use crate::pki::{Bank, DAY, Leaf, NODE_NAME, admission};
use crate::wire::Failure;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The RFC 8998 options both Tongsuo tools take.
const STRICT: [&str; 9] = [
    "-tls1_3",
    "-enable_sm_tls13_strict",
    "-ciphersuites",
    "TLS_SM4_GCM_SM3",
    "-groups",
    "curveSM2",
    "-sigalgs",
    "sm2sig_sm3",
    "-verify_return_error",
];

fn tongsuo() -> PathBuf {
    let path = std::env::var_os("VPBOX_TONGSUO")
        .map_or_else(|| PathBuf::from("/usr/local/lib/vpbox-tongsuo/openssl"), PathBuf::from);
    assert!(
        path.exists(),
        "{}: Tongsuo is needed for the RFC 8998 interop tests: run scripts/deps.sh (it builds it) \
         or point VPBOX_TONGSUO at its openssl command",
        path.display()
    );
    path
}

/// Writes a leaf's chain and key, and a bank's root, for Tongsuo.
fn files(dir: &Path, leaf: &Leaf, root: &Bank) -> [PathBuf; 3] {
    let write = |name: &str, data: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    [
        write("cert.pem", &leaf.chain_pem()),
        write("key.pem", &leaf.key_pem),
        write("root.pem", root.pem()),
    ]
}

/// A child process killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_vpbox_client_with_a_tongsuo_server() {
    let dir = tempfile::tempdir().unwrap();
    let bank_a = Bank::new("Bank A");
    let node = bank_a.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let posp = bank_a.leaf(CertProfile::Posp, "posp7", 11, SystemTime::now() - DAY, 365);
    let [cert, key, root] = files(dir.path(), &node, &bank_a);
    // `-rev` answers each line reversed; `-Verify 1` demands a client certificate.
    let mut server = Peer(
        Command::new(tongsuo())
            .args(["s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-rev", "-Verify", "1"])
            .args(STRICT)
            .args(["-cert", s(&cert), "-key", s(&key), "-CAfile", s(&root)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "s_server exited before listening");
        if let Some(addr) = line.trim().strip_prefix("ACCEPT ") {
            break addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };

    let config =
        client_config(Profile::Sm, &posp.credentials(), admission(&[&bank_a], CertProfile::VpNode))
            .unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let name = ServerName::try_from(NODE_NAME).unwrap();
    let mut tls = StreamOwned::new(ClientConnection::new(Arc::new(config), name).unwrap(), sock);
    tls.write_all(b"anchored by vpbox\n").unwrap();
    tls.flush().unwrap();
    let mut reply = String::new();
    BufReader::new(&mut tls).read_line(&mut reply).unwrap();
    assert_eq!(reply, "xobpv yb derohcna\n");
    assert_eq!(tls.conn.negotiated_cipher_suite().unwrap().suite(), CipherSuite::Unknown(0x00C6));
    assert_eq!(
        tls.conn.negotiated_key_exchange_group().unwrap().name(),
        NamedGroup::Unknown(0x0029)
    );
    assert_eq!(tls.conn.peer_certificates().unwrap()[0].as_ref(), node.der.as_slice());
}

/// A vpbox server on a fresh port answering one connection: the client's first line, with
/// "ack " before it. Returns the port and the server's outcome (the client's CN).
fn vpbox_server(
    bank_a: &Bank,
    node: &Leaf,
) -> (u16, std::thread::JoinHandle<Result<String, Failure>>) {
    let config = Arc::new(
        server_config(Profile::Sm, &node.credentials(), admission(&[bank_a], CertProfile::Posp))
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(config)?, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte != *b"\n" {
            tls.read_exact(&mut byte)?;
            line.push(byte[0]);
        }
        tls.write_all(b"ack ")?;
        tls.write_all(&line)?;
        tls.flush()?;
        tls.conn.send_close_notify();
        tls.conn.complete_io(&mut tls.sock)?;
        let client = tls.conn.peer_certificates().map(|c| c[0].to_vec()).unwrap_or_default();
        Ok(String::from_utf8_lossy(&client).contains("posp7").to_string())
    });
    (port, handle)
}

/// Runs Tongsuo's s_client against `port` with `leaf`, sending one line; returns its output.
fn tongsuo_client(dir: &Path, port: u16, leaf: &Leaf, trusted: &Bank) -> (bool, String) {
    let [cert, key, root] = files(dir, leaf, trusted);
    let mut child = Peer(
        Command::new(tongsuo())
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-quiet"])
            .args(["-servername", NODE_NAME, "-verify_hostname", NODE_NAME])
            .args(STRICT)
            .args(["-cert", s(&cert), "-key", s(&key), "-CAfile", s(&root)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    child.0.stdin.take().unwrap().write_all(b"hello from tongsuo\n").unwrap();
    let mut out = String::new();
    child.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let ok = child.0.wait().unwrap().success();
    (ok, format!("{out}{err}"))
}

#[test]
fn a_tongsuo_client_with_a_vpbox_server() {
    let dir = tempfile::tempdir().unwrap();
    let bank_a = Bank::new("Bank A");
    let node = bank_a.leaf(CertProfile::VpNode, "node1", 10, SystemTime::now() - DAY, 365);
    let posp = bank_a.leaf(CertProfile::Posp, "posp7", 11, SystemTime::now() - DAY, 365);
    let (port, server) = vpbox_server(&bank_a, &node);
    let (_, out) = tongsuo_client(dir.path(), port, &posp, &bank_a);
    assert!(out.contains("ack hello from tongsuo"), "{out}");
    assert_eq!(server.join().unwrap().expect("the vpbox server's side"), "true");

    // A client under a root the consortium does not know is refused in the handshake.
    let stranger = Bank::new("Bank X");
    let rogue = stranger.leaf(CertProfile::Posp, "posp7", 12, SystemTime::now() - DAY, 365);
    let (port, server) = vpbox_server(&bank_a, &node);
    let (_, out) = tongsuo_client(dir.path(), port, &rogue, &bank_a);
    assert!(!out.contains("ack hello"), "{out}");
    let refused = server.join().unwrap().expect_err("an unknown root is refused");
    assert!(matches!(refused.denied(), Some(DenyReason::UnknownRoot(_))), "{refused:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
