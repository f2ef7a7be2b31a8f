//! The API as a POSP reaches it: HTTPS with mutual TLS to a box's proxy, over real TCP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::Value;
use vpbox_ca::CertProfile;
use vpbox_ca::cert::{Grant, check_request, issue, random_serial, self_signed_root};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Signer, SoftwareSigner};
use vpbox_tls::verify::ServerVerifier;
use vpbox_tls::{Admission, Credentials, Profile, client_config};

use crate::p2p::{chain, trust};

/// Box `i`'s API address.
pub(crate) fn api_address(dir: &Path, i: u32) -> String {
    let config = vpbox_config::BoxConfig::load(&dir.join(format!("node{i}/box.toml"))).unwrap();
    config.proxy.unwrap().api.unwrap()
}

/// A client presenting the cluster's POSP certificate of `bank`.
pub(crate) fn posp(dir: &Path, bank: &str) -> Arc<ClientConfig> {
    let key = std::fs::read_to_string(dir.join(format!("posp/{bank}.pem"))).unwrap();
    let ours = Credentials::new(
        chain(&dir.join(format!("posp/{bank}.crt"))),
        Arc::new(SoftwareSigner::new(SecretKey::from_pem(&key).unwrap())),
    )
    .unwrap();
    let servers = Admission::new(trust(dir), CertProfile::VpNode);
    Arc::new(client_config(Profile::Sm, &ours, servers).unwrap())
}

/// A client that presents no certificate.
pub(crate) fn anonymous(dir: &Path) -> Arc<ClientConfig> {
    let servers = Admission::new(trust(dir), CertProfile::VpNode);
    let config = ClientConfig::builder_with_provider(Arc::new(Profile::Sm.provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier::new(servers)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A POSP of a bank no member knows: its own root, its own certificate.
fn stranger(dir: &Path) -> Arc<ClientConfig> {
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    let ca = SoftwareSigner::new(SecretKey::generate().unwrap());
    let root = self_signed_root(&ca, "bank-x", "CN", random_serial([1; 16]).unwrap(), now, 30);
    let root = root.unwrap();
    let key = Arc::new(SoftwareSigner::new(SecretKey::generate().unwrap()));
    let csr = vpbox_ca::build_csr(&*key, "CN=x-posp,OU=posp,O=bank-x").unwrap();
    let req = check_request(&csr, CertProfile::Posp, "bank-x").unwrap();
    let grant = Grant {
        profile: CertProfile::Posp,
        serial: random_serial([2; 16]).unwrap(),
        now,
        days: 30,
        dns_names: vec![],
    };
    let pem = issue(&ca, &root, &req, grant).unwrap();
    let der = vpbox_ca::pem::chain_der(&pem).unwrap();
    let ours = Credentials::new(vec![der.into()], key as Arc<dyn Signer>).unwrap();
    let servers = Admission::new(trust(dir), CertProfile::VpNode);
    Arc::new(client_config(Profile::Sm, &ours, servers).unwrap())
}

/// A POSP of bank-a whose certificate, issued by bank-a's CA (its key in the bank's token),
/// expired as it was issued (`--days 0`: valid from five minutes ago until now).
fn expired(dir: &Path) -> Arc<ClientConfig> {
    let key = Arc::new(SoftwareSigner::new(SecretKey::generate().unwrap()));
    let csr = vpbox_ca::build_csr(&*key, "CN=bank-a-posp-expired,OU=posp,O=bank-a").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (csr_path, crt) = (scratch.path().join("p.csr"), scratch.path().join("p.crt"));
    std::fs::write(&csr_path, csr).unwrap();
    let (ca, token) = (dir.join("ca/bank-a/ca"), dir.join("ca/bank-a/token.toml"));
    let args = ["ca", "issue", "--dir", crate::s(&ca), "--csr", crate::s(&csr_path)];
    let args = [&args[..], &["--profile", "posp", "--days", "0", "--out", crate::s(&crt)]].concat();
    let r = crate::vpbox_env(&args, &[("VPBOX_TEST_TOKEN_CONF", crate::s(&token))]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::thread::sleep(Duration::from_millis(1100));
    let ours = Credentials::new(chain(&crt), key as Arc<dyn Signer>).unwrap();
    let servers = Admission::new(trust(dir), CertProfile::VpNode);
    Arc::new(client_config(Profile::Sm, &ours, servers).unwrap())
}

/// POSTs `body` to box `i`'s API with `client`: the HTTP status and the JSON answer, or why
/// there was none.
pub(crate) fn post(
    dir: &Path,
    i: u32,
    bank: &str,
    client: &Arc<ClientConfig>,
    body: &[u8],
) -> Result<(u16, Value), String> {
    let tcp = TcpStream::connect(api_address(dir, i)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let name = ServerName::try_from(format!("node{i}.{bank}")).unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(client), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: node{i}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    tls.write_all(body).map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // The server's close_notify may be missing once it has closed: what came is the answer.
        Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP: {text}"))?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    Ok((status, json))
}

/// What the API listener owes a POSP and refuses others, each with its documented answer.
pub(crate) fn api_checks(dir: &Path, anchor_put: &[u8]) {
    let client = posp(dir, "bank-a");
    let (status, answer) = post(dir, 1, "bank-a", &client, anchor_put).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"]["ok"], Value::Bool(true), "{answer}");
    // A POSP may not call an admin's method: 403 and -32007, nothing run.
    let crl = br#"{"jsonrpc":"2.0","id":7,"method":"cert_publishCrl","params":["00"]}"#;
    let (status, answer) = post(dir, 1, "bank-a", &client, crl).unwrap();
    assert_eq!((status, answer["error"]["code"].as_i64()), (403, Some(-32007)), "{answer}");
    assert_eq!(answer["id"], 7);
    // Reads are a POSP's.
    let read = br#"{"jsonrpc":"2.0","id":1,"method":"block_getChainHeight","params":[]}"#;
    let (status, answer) = post(dir, 2, "bank-a", &client, read).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer["result"].as_u64().is_some(), "{answer}");
    // No client certificate, or one under a root no member bank holds: no answer at all.
    assert!(post(dir, 1, "bank-a", &anonymous(dir), read).is_err(), "an anonymous client");
    assert!(post(dir, 1, "bank-a", &stranger(dir), read).is_err(), "an unknown root");
    // A POSP certificate bank-a's own CA issued, past its notAfter.
    assert!(post(dir, 1, "bank-a", &expired(dir), read).is_err(), "an expired certificate");
    // The proxy logs each refusal with its reason (a moment after the client saw the alert).
    let refused = |what: &str| {
        let log = std::fs::read_to_string(dir.join("node1/proxy.log")).unwrap();
        log.lines().any(|l| l.contains("\"api-refused\"") && l.contains(what))
    };
    for why in ["peer sent no certificates", "certificate denied for role posp", "expired"] {
        let start = std::time::Instant::now();
        while !refused(why) {
            assert!(start.elapsed() < Duration::from_secs(5), "no refusal logged with {why:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let log = std::fs::read_to_string(dir.join("node1/proxy.log")).unwrap();
    assert!(log.contains("\"event\":\"api\""), "the access log: {log}");
    // A 100 MB body is refused from its head, before a byte of it is read.
    let (status, answer) = declare_body(dir, 1, "bank-a", 100_000_000);
    assert_eq!((status, answer["error"]["code"].as_i64()), (413, Some(-32005)), "{answer}");
}

/// A kept-alive HTTPS connection to a box's API.
pub(crate) struct KeepAlive(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl KeepAlive {
    pub(crate) fn open(dir: &Path, i: u32, bank: &str, client: &Arc<ClientConfig>) -> Self {
        let tcp = TcpStream::connect(api_address(dir, i)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        let name = ServerName::try_from(format!("node{i}.{bank}")).unwrap();
        let conn = rustls::ClientConnection::new(Arc::clone(client), name).unwrap();
        Self(rustls::StreamOwned::new(conn, tcp))
    }

    /// One request on the connection: the status, the JSON answer and whether the server
    /// said it closes the connection.
    pub(crate) fn call(&mut self, body: &[u8]) -> (u16, Value, bool) {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        self.0.write_all(head.as_bytes()).unwrap();
        self.0.write_all(body).unwrap();
        self.0.flush().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.0.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        (status, serde_json::from_slice(&body).unwrap(), head.contains("connection: close"))
    }
}

/// Sends only a head declaring a body of `declared` bytes: the proxy must answer from the head.
pub(crate) fn declare_body(dir: &Path, i: u32, bank: &str, declared: u64) -> (u16, Value) {
    let client = posp(dir, "bank-a");
    let tcp = TcpStream::connect(api_address(dir, i)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from(format!("node{i}.{bank}")).unwrap();
    let conn = rustls::ClientConnection::new(client, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.flush().unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tls.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= at + 4 + len {
                let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
                return (status, serde_json::from_slice(&raw[at + 4..at + 4 + len]).unwrap());
            }
        }
    }
    panic!("no answer to a head alone: {}", String::from_utf8_lossy(&raw));
}

/// SIGTERM to box `i`'s proxy while a POSP's request is half sent: the listener closes at
/// once, the request is still answered (with `Connection: close`), and the proxy then exits by
/// itself, its log saying nothing was left unfinished.
pub(crate) fn graceful_stop(dir: &Path, i: u32) {
    let client = posp(dir, "bank-a");
    let tcp = TcpStream::connect(api_address(dir, i)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from(format!("node{i}.bank-a")).unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(&client), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"block_getChainHeight","params":[]}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: node{i}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&body[..10]).unwrap();
    tls.flush().unwrap();
    let pid_file = dir.join(format!("node{i}/proxy.pid"));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let proc = rustix::process::Pid::from_raw(pid).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    rustix::process::kill_process(proc, rustix::process::Signal::TERM).unwrap();
    // The listener is closed: a new client is refused at once.
    let start = std::time::Instant::now();
    while TcpStream::connect(api_address(dir, i)).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(5), "the API still accepts after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The request in flight is finished and answered.
    tls.write_all(&body[10..]).unwrap();
    tls.flush().unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // Then the proxy exits by itself, well within its grace.
    let start = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "the proxy did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(dir.join(format!("node{i}/proxy.log"))).unwrap();
    assert!(log.contains("\"proxy-stopping\""), "{log}");
    assert!(log.contains("\"unfinished_api_connections\":0"), "{log}");
}
