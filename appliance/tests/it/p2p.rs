//! What a box's proxy refuses on its P2P listener, tried against a running cluster's proxy
//! over real TCP and TLS: a POSP certificate, and one box's certificate claiming another node.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::TrustStore;
use vpbox_signer_client::link::{HELLO_LEN, Hello};
use vpbox_sm::SoftwareSigner;
use vpbox_sm::sm2::SecretKey;
use vpbox_tls::sign::SignerServiceKey;
use vpbox_tls::{Admission, Credentials, Profile, client_config};

/// The trust store of the cluster's founding banks.
pub(crate) fn trust(dir: &Path) -> Arc<RwLock<TrustStore>> {
    let genesis: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("genesis.json")).unwrap()).unwrap();
    let mut store = TrustStore::new();
    for root in genesis["roots"].as_array().unwrap() {
        let pem = root["certificate"].as_str().unwrap();
        store.add_root(&pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1).unwrap();
    }
    Arc::new(RwLock::new(store))
}

pub(crate) fn chain(pem_file: &Path) -> Vec<CertificateDer<'static>> {
    let der = vpbox_ca::pem::chain_der(&std::fs::read_to_string(pem_file).unwrap()).unwrap();
    vpbox_ca::cert::split_der(&der)
        .unwrap()
        .into_iter()
        .map(|d| CertificateDer::from(d.to_vec()))
        .collect()
}

/// Box `i`'s P2P address, from its configuration.
pub(crate) fn p2p_address(dir: &Path, i: u32) -> String {
    let config = vpbox_config::BoxConfig::load(&dir.join(format!("node{i}/box.toml"))).unwrap();
    config.proxy.unwrap().p2p
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client of `target`'s proxy presenting `ours`, and the first 4 bytes the proxy sent
/// (a link frame's length); `None` if the handshake failed. (A server that refuses a client's
/// certificate says so after its own Finished: only a read tells.)
fn dial(dir: &Path, target: u32, target_bank: &str, ours: &Credentials) -> Option<(Tls, [u8; 4])> {
    let admission = Admission::new(trust(dir), CertProfile::VpNode);
    let config = Arc::new(client_config(Profile::Sm, ours, admission).unwrap());
    let name = ServerName::try_from(format!("node{target}.{target_bank}")).unwrap();
    let tcp = TcpStream::connect(p2p_address(dir, target)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut first = [0u8; 4];
    tls.read_exact(&mut first).ok().map(|()| (tls, first))
}

/// The proxy's log lines of box `i` that contain `what`.
fn logged(dir: &Path, i: u32, what: &str) -> bool {
    let log = std::fs::read_to_string(dir.join(format!("node{i}/proxy.log"))).unwrap_or_default();
    log.lines().any(|l| l.contains("p2p-refused") && l.contains(what))
}

fn wait_logged(dir: &Path, i: u32, what: &str) {
    for _ in 0..100 {
        if logged(dir, i, what) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.join(format!("node{i}/proxy.log"))).unwrap_or_default();
    panic!("node{i}'s proxy did not log a refusal with {what:?}:\n{log}");
}

/// Each refusal the P2P listener owes, with its reason in the proxy's log.
pub(crate) fn p2p_refusals(dir: &Path) {
    // A POSP's certificate (a client of the API, never a box) is refused by the TLS layer.
    let posp_key = std::fs::read_to_string(dir.join("posp/bank-a.pem")).unwrap();
    let posp = Credentials::new(
        chain(&dir.join("posp/bank-a.crt")),
        Arc::new(SoftwareSigner::new(SecretKey::from_pem(&posp_key).unwrap())),
    )
    .unwrap();
    assert!(dial(dir, 1, "bank-a", &posp).is_none(), "a POSP certificate got a P2P link");
    wait_logged(dir, 1, "certificate denied for role vp-node");

    // Node 2's own certificate and key (through node 2's signer), claiming to be node 3 in
    // its link's hello: the certificate is a member's, the claim is not its node's.
    let key = SignerServiceKey::connect(&dir.join("node2/signer.sock"), "consensus").unwrap();
    let node2 = Credentials::with_key(chain(&dir.join("node2/node.crt")), Arc::new(key)).unwrap();
    let (mut tls, prefix) = dial(dir, 1, "bank-a", &node2).expect("node 2's certificate passes");
    let len = u32::from_be_bytes(prefix) as usize;
    assert_eq!(len, HELLO_LEN, "node 1's hello comes first");
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).unwrap();
    let theirs = Hello::decode(&body).unwrap();
    let mut claim = Hello { chain: theirs.chain, id: 3, nonce: [9; 32] }.encode();
    claim.extend_from_slice(&[0; 64]);
    tls.write_all(&(claim.len() as u32).to_be_bytes()).unwrap();
    tls.write_all(&claim).unwrap();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the proxy passed the false claim on: {} bytes came back", rest.len());
    wait_logged(dir, 1, "the certificate of node 2 claims to be node 3");
}

/// The resident memory of box `i`'s proxy, in KiB.
pub(crate) fn proxy_rss_kib(dir: &Path, i: u32) -> u64 {
    let pid = std::fs::read_to_string(dir.join(format!("node{i}/proxy.pid"))).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Strangers at box `i`'s P2P listener: 1,000 connections that never speak and 100 that send
/// TLS garbage. `commit` runs while they hold on (the box's existing links carry on); the
/// proxy sheds what its handshake places cannot hold, and its memory stays bounded; its log
/// has one line for the first of them and sums up the rest once the 10 s window is over.
pub(crate) fn flood(dir: &Path, i: u32, commit: impl FnOnce()) {
    let address = p2p_address(dir, i);
    let before = proxy_rss_kib(dir, i);
    let mut held = Vec::new();
    for _ in 0..1000 {
        if let Ok(c) = TcpStream::connect(&address) {
            held.push(c);
        }
    }
    for _ in 0..100 {
        if let Ok(mut c) = TcpStream::connect(&address) {
            let _ = c.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00]);
            let _ = c.write_all(&[0xAB; 4096]);
            held.push(c);
        }
    }
    commit();
    let grown = proxy_rss_kib(dir, i).saturating_sub(before);
    assert!(grown < 64 * 1024, "1,100 hostile connections cost the proxy {grown} KiB");
    drop(held);
    wait_for_log(dir, i, "\"p2p-refused-summary\"");

    // Handshake places taken by strangers from many addresses (8 each, the per-source cap,
    // from 127.0.0.2 to 127.0.0.21: 160, past the 128 places) do not keep a member out: its
    // handshake evicts the oldest of them, and gets the node's hello.
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let mut idle = Vec::new();
    for source in 2..=21u8 {
        for _ in 0..8 {
            idle.push(connect_from([127, 0, 0, source], port));
        }
    }
    std::thread::sleep(Duration::from_millis(500)); // all of them accepted, each in a place
    let m = if i == 1 { 2 } else { 1 };
    let key = SignerServiceKey::connect(&dir.join(format!("node{m}/signer.sock")), "consensus");
    let member = Credentials::with_key(
        chain(&dir.join(format!("node{m}/node.crt"))),
        Arc::new(key.unwrap()),
    )
    .unwrap();
    let bank = if i <= 2 { "bank-a" } else { "bank-b" }; // the cluster's 4 boxes, 2 per bank
    let (_, prefix) = dial(dir, i, bank, &member).expect("a member's handshake past strangers");
    assert_eq!(u32::from_be_bytes(prefix) as usize, HELLO_LEN, "the node's hello came");
    wait_logged(dir, i, "evicted: 128 newer handshakes");
    drop(idle);
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from` (any 127/8 address
/// is this host's).
fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    use rustix::net::{AddressFamily, SocketAddrV4, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &SocketAddrV4::new(from.into(), 0)).unwrap();
    connect(&fd, &SocketAddrV4::new([127, 0, 0, 1].into(), port)).unwrap();
    TcpStream::from(fd)
}

fn wait_for_log(dir: &Path, i: u32, what: &str) {
    for _ in 0..150 {
        let log = std::fs::read_to_string(dir.join(format!("node{i}/proxy.log")));
        if log.unwrap_or_default().contains(what) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("node{i}'s proxy never logged {what}");
}

/// The leaf certificate box `i`'s proxy presents on its P2P listener now.
fn presented(dir: &Path, i: u32, bank: &str) -> Vec<u8> {
    let key = SignerServiceKey::connect(&dir.join("node2/signer.sock"), "consensus").unwrap();
    let node2 = Credentials::with_key(chain(&dir.join("node2/node.crt")), Arc::new(key)).unwrap();
    let (tls, _) = dial(dir, i, bank, &node2).expect("node 2 is admitted");
    tls.conn.peer_certificates().unwrap()[0].to_vec()
}

/// Box 1's certificate renewed (a new one for the same key from bank-a's CA) and SIGHUP: every
/// new handshake presents the new one, and the links go on. A certificate for another key is
/// refused and the renewed one kept.
pub(crate) fn certificate_reload(dir: &Path) {
    let nd = dir.join("node1");
    let (csr, renewed) = (nd.join("renew.csr"), nd.join("renewed.crt"));
    let module = crate::token::module();
    let token = [("VPBOX_TEST_TOKEN_CONF", nd.join("token.toml"))];
    let token: Vec<(&str, &str)> = token.iter().map(|(k, v)| (*k, crate::s(v))).collect();
    let pin = nd.join("hsm-pin");
    let args = [
        "hsm",
        "csr",
        "--module",
        &module,
        "--token",
        "node1",
        "--pin-file",
        crate::s(&pin),
        "--id",
        "01",
        "--subject",
        "CN=node1,OU=vp-node,O=bank-a",
        "--out",
        crate::s(&csr),
    ];
    let r = crate::vpbox_env(&args, &token);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (ca, ca_token) = (dir.join("ca/bank-a/ca"), dir.join("ca/bank-a/token.toml"));
    let args = [
        "ca",
        "issue",
        "--dir",
        crate::s(&ca),
        "--csr",
        crate::s(&csr),
        "--profile",
        "vp-node",
        "--dns",
        "node1.bank-a",
        "--out",
        crate::s(&renewed),
    ];
    let r = crate::vpbox_env(&args, &[("VPBOX_TEST_TOKEN_CONF", crate::s(&ca_token))]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = presented(dir, 1, "bank-a");
    let new_leaf = chain(&renewed)[0].to_vec();
    assert_ne!(before, new_leaf);

    let pid: i32 = std::fs::read_to_string(nd.join("proxy.pid")).unwrap().trim().parse().unwrap();
    let hup = || {
        let p = rustix::process::Pid::from_raw(pid).unwrap();
        rustix::process::kill_process(p, rustix::process::Signal::HUP).unwrap();
    };
    // Another node's certificate (another key): refused, the one in use kept.
    std::fs::copy(dir.join("node2/node.crt"), nd.join("node.crt")).unwrap();
    hup();
    wait_for_log(dir, 1, "\"certificate-refused\"");
    assert_eq!(presented(dir, 1, "bank-a"), before);
    // The renewal: new handshakes present it.
    std::fs::copy(&renewed, nd.join("node.crt")).unwrap();
    hup();
    wait_for_log(dir, 1, "\"certificate-reloaded\"");
    assert_eq!(presented(dir, 1, "bank-a"), new_leaf);
}
