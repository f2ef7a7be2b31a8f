//! vpbox-tls over real localhost TCP, both profiles: full mutual handshakes per second, resumed
//! handshakes per second, and one-way bulk throughput.
//!
//! `cargo bench -p vpbox-tls --bench tls` (about a minute on 2 cores). `VPBOX_BENCH_QUICK=1` (or
//! the argument `--quick`) makes a smoke run of a few seconds. Prints a table, a JSON line
//! (`{"bench":"tls",...}`) and a one-line summary.
//!
//! Client and server run in one process, a thread each, one connection at a time: a handshake
//! figure is 1 / (connect + handshake + first byte + close), both sides' CPU on one machine.
//!
//! The peer, measured in the same run when `scripts/tongsuo.sh` has built it: Tongsuo 8.5's
//! `s_server`/`s_time` in the strict RFC 8998 profile with the same certificates (see
//! `tongsuo_peer`); a JSON line `{"bench":"tls-peer",...}` gives its figures and the ratios.

// The benchmark is the host: it reads the clock to issue its certificates.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection, StreamOwned,
};
use vpbox_ca::CertProfile;
use vpbox_ca::build_csr;
use vpbox_ca::cert::{self, Grant};
use vpbox_ca::policy::TrustStore;
use vpbox_sm::SoftwareSigner;
use vpbox_sm::sm2::SecretKey;
use vpbox_tls::{Admission, Credentials, Profile, client_config, server_config};
use x509_cert::certificate::Certificate;
use x509_cert::der::{DecodePem, Encode};

const MIB: usize = 1024 * 1024;
const NAME: &str = "node1.bank-a.example";
const CHUNK: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Sizes {
    full: usize,
    resumed: usize,
    bulk_mib: usize,
}

struct Row {
    profile: &'static str,
    full_per_s: f64,
    resumed_per_s: f64,
    resumed_share: f64,
    bulk_mib_s: f64,
}

fn main() -> Result<(), BoxError> {
    let quick = std::env::var_os("VPBOX_BENCH_QUICK").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--quick");
    let sizes = if quick {
        Sizes { full: 10, resumed: 20, bulk_mib: 4 }
    } else {
        Sizes { full: 1000, resumed: 2000, bulk_mib: 64 }
    };
    let pki = Pki::new()?;
    let mut rows = Vec::new();
    for (profile, label) in [(Profile::Sm, "sm"), (Profile::Hybrid, "hybrid")] {
        rows.push(measure(profile, label, &pki, &sizes)?);
    }
    let peer = tongsuo_peer(&pki, if quick { 1 } else { 10 })?;

    println!(
        "{:<8} {:>16} {:>18} {:>12} {:>14}",
        "profile", "full hs/s", "resumed hs/s", "resumed %", "bulk MiB/s"
    );
    for r in &rows {
        println!(
            "{:<8} {:>16.0} {:>18.0} {:>11.0}% {:>14.1}",
            r.profile,
            r.full_per_s,
            r.resumed_per_s,
            r.resumed_share * 100.0,
            r.bulk_mib_s
        );
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "\"{}\":{{\"full_handshakes_per_s\":{:.1},\"resumed_handshakes_per_s\":{:.1},\
                 \"bulk_mib_per_s\":{:.1}}}",
                r.profile, r.full_per_s, r.resumed_per_s, r.bulk_mib_s
            )
        })
        .collect();
    println!(
        "{{\"bench\":\"tls\",\"quick\":{quick},\"full_n\":{},\"resumed_n\":{},\"bulk_mib\":{},{}}}",
        sizes.full,
        sizes.resumed,
        sizes.bulk_mib,
        json.join(",")
    );
    let summary: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {:.0} full/s ({:.1} ms), {:.0} resumed/s, {:.0} MiB/s",
                r.profile,
                r.full_per_s,
                1000.0 / r.full_per_s,
                r.resumed_per_s,
                r.bulk_mib_s
            )
        })
        .collect();
    let mut summary = summary.join("; ");
    match &peer {
        Some(p) => {
            let sm = &rows[0];
            println!(
                "peer: Tongsuo 8.5 s_time/s_server, RFC 8998 strict, mutual: {:.0} full/s, {:.0} \
                 resumed/s; its SM4-GCM cipher alone (speed -evp, 16 KiB) {:.0} MiB/s",
                p.full_per_s, p.resumed_per_s, p.sm4_gcm_mib_s
            );
            println!(
                "{{\"bench\":\"tls-peer\",\"peer\":\"tongsuo-8.5\",\"full_handshakes_per_s\":{:.1},\
                 \"resumed_handshakes_per_s\":{:.1},\"sm4_gcm_mib_per_s\":{:.1},\
                 \"ratio_full\":{:.2},\"ratio_resumed\":{:.2},\"ratio_bulk_to_cipher\":{:.2}}}",
                p.full_per_s,
                p.resumed_per_s,
                p.sm4_gcm_mib_s,
                sm.full_per_s / p.full_per_s,
                sm.resumed_per_s / p.resumed_per_s,
                sm.bulk_mib_s / p.sm4_gcm_mib_s
            );
            summary.push_str(&format!(
                "; vs Tongsuo: sm full {:.2}x, resumed {:.2}x, bulk {:.2}x its bare SM4-GCM",
                sm.full_per_s / p.full_per_s,
                sm.resumed_per_s / p.resumed_per_s,
                sm.bulk_mib_s / p.sm4_gcm_mib_s
            ));
        }
        None => println!("peer: Tongsuo not found (scripts/tongsuo.sh builds it); no ratio"),
    }
    println!("summary: {summary}");
    Ok(())
}

struct Peer {
    full_per_s: f64,
    resumed_per_s: f64,
    sm4_gcm_mib_s: f64,
}

/// Tongsuo 8.5, an independent RFC 8998 implementation, on the same machine in the same run:
/// `s_server -www` in the strict SM profile demanding a client certificate, and `s_time`
/// opening new (`-new`) then resumed (`-reuse`) mutual connections for `seconds` each, with the
/// same certificates and keys. Each fetches `/` (about 5 KiB: without reading, s_time never
/// receives TLS 1.3 tickets and cannot resume). Rate = connections / wall time of `s_time`
/// (both ends are Tongsuo processes on the same cores, as both ends of vpbox's figures share
/// them). Bulk has no like-for-like Tongsuo tool here, so its SM4-GCM cipher speed is the
/// reference.
fn tongsuo_peer(pki: &Pki, seconds: u32) -> Result<Option<Peer>, BoxError> {
    use std::process::{Command, Stdio};
    let bin = std::env::var_os("VPBOX_TONGSUO").map_or_else(
        || std::path::PathBuf::from("/usr/local/lib/vpbox-tongsuo/openssl"),
        std::path::PathBuf::from,
    );
    if !bin.exists() {
        return Ok(None);
    }
    let dir = pki.files.path();
    let f = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = Command::new(&bin)
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-quiet", "-www", "-tls1_3"])
        .args(["-enable_sm_tls13_strict", "-ciphersuites", "TLS_SM4_GCM_SM3"])
        .args(["-groups", "curveSM2", "-sigalgs", "sm2sig_sm3", "-Verify", "1"])
        .args(["-cert", &f("node1.pem"), "-key", &f("node1.key"), "-CAfile", &f("root.pem")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = server.kill();
            return Err("Tongsuo s_server did not start".into());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let time = |mode: &str| -> Result<f64, BoxError> {
        let start = Instant::now();
        let out = Command::new(&bin)
            .args([
                "s_time",
                "-connect",
                &format!("127.0.0.1:{port}"),
                mode,
                "-www",
                "/",
                "-tls1_3",
            ])
            .args(["-ciphersuites", "TLS_SM4_GCM_SM3", "-time", &seconds.to_string()])
            .args(["-cert", &f("node2.pem"), "-key", &f("node2.key"), "-CAfile", &f("root.pem")])
            .stderr(Stdio::null())
            .output()?;
        let elapsed = start.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout);
        // "N connections in X real seconds": the last such line is the total.
        let n = text
            .lines()
            .rev()
            .filter(|l| l.contains("real seconds"))
            .find_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .ok_or_else(|| format!("s_time {mode}: no result in {text:?}"))?;
        Ok(n / elapsed)
    };
    let result = time("-new").and_then(|full| Ok((full, time("-reuse")?)));
    let _ = server.kill();
    let _ = server.wait();
    let (full_per_s, resumed_per_s) = result?;
    let speed = Command::new(&bin)
        .args(["speed", "-evp", "sm4-gcm", "-seconds", "1", "-bytes", "16384"])
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&speed.stdout);
    let k = text
        .lines()
        .find(|l| l.starts_with("SM4-GCM"))
        .and_then(|l| l.split_whitespace().nth(1)?.trim_end_matches('k').parse::<f64>().ok())
        .ok_or_else(|| format!("speed: no SM4-GCM figure in {text:?}"))?;
    Ok(Some(Peer { full_per_s, resumed_per_s, sm4_gcm_mib_s: k * 1000.0 / MIB as f64 }))
}

/// One bank, a server node and a client node, with software keys.
struct Pki {
    trust: Arc<RwLock<TrustStore>>,
    server: Credentials,
    client: Credentials,
    /// The same root, certificates and keys as PEM files, for the peer.
    files: tempfile::TempDir,
}

impl Pki {
    fn new() -> Result<Self, BoxError> {
        let now = SystemTime::now() - Duration::from_secs(3600);
        let ca = SoftwareSigner::new(SecretKey::generate()?);
        let root =
            cert::self_signed_root(&ca, "Bank A", "CN", cert::random_serial([1; 16])?, now, 30)?;
        let mut store = TrustStore::new();
        store.add_root(&Certificate::from_pem(root.as_bytes())?.to_der()?)?;
        let files = tempfile::tempdir()?;
        std::fs::write(files.path().join("root.pem"), &root)?;
        let leaf = |cn: &str, n: u8| -> Result<Credentials, BoxError> {
            let secret = SecretKey::generate()?;
            std::fs::write(
                files.path().join(format!("{cn}.key")),
                secret.to_pkcs8_pem()?.as_bytes(),
            )?;
            let key = Arc::new(SoftwareSigner::new(secret));
            let csr = build_csr(&*key, &format!("CN={cn},OU=vp-node,O=Bank A,C=CN"))?;
            let req = x509_cert::request::CertReq::from_pem(csr.as_bytes())?;
            let grant = Grant {
                profile: CertProfile::VpNode,
                serial: cert::random_serial([n; 16])?,
                now,
                days: 30,
                dns_names: vec![NAME.into()],
            };
            let pem = cert::issue(&ca, &root, &req, grant)?;
            std::fs::write(files.path().join(format!("{cn}.pem")), &pem)?;
            let der = Certificate::from_pem(pem.as_bytes())?.to_der()?;
            Ok(Credentials::new(vec![CertificateDer::from(der)], key)?)
        };
        let (server, client) = (leaf("node1", 2)?, leaf("node2", 3)?);
        Ok(Self { trust: Arc::new(RwLock::new(store)), server, client, files })
    }

    fn configs(&self, profile: Profile) -> Result<(Arc<ServerConfig>, ClientConfig), BoxError> {
        let admission = Admission::new(self.trust.clone(), CertProfile::VpNode);
        let server = server_config(profile, &self.server, admission.clone())?;
        let client = client_config(profile, &self.client, admission)?;
        Ok((Arc::new(server), client))
    }
}

/// Server side of every connection: handshake, send `!` (after the session tickets), count
/// what the client sends until it closes, answer `.`.
fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    connections: usize,
) -> Result<(), BoxError> {
    for _ in 0..connections {
        let (sock, _) = listener.accept()?;
        sock.set_nodelay(true)?;
        let mut tls = StreamOwned::new(ServerConnection::new(config.clone())?, sock);
        tls.write_all(b"!")?;
        let mut buf = vec![0u8; CHUNK];
        while tls.read(&mut buf)? != 0 {}
        tls.write_all(b".")?;
        tls.conn.send_close_notify();
        tls.flush()?;
    }
    Ok(())
}

fn dial(
    addr: std::net::SocketAddr,
    config: &Arc<ClientConfig>,
) -> Result<StreamOwned<ClientConnection, TcpStream>, BoxError> {
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let conn = ClientConnection::new(config.clone(), ServerName::try_from(NAME)?)?;
    let mut tls = StreamOwned::new(conn, sock);
    let mut bang = [0u8; 1];
    tls.read_exact(&mut bang)?;
    Ok(tls)
}

fn close(mut tls: StreamOwned<ClientConnection, TcpStream>) -> Result<(), BoxError> {
    tls.conn.send_close_notify();
    tls.flush()?;
    let mut dot = [0u8; 1];
    tls.read_exact(&mut dot)?;
    Ok(())
}

fn measure(
    profile: Profile,
    label: &'static str,
    pki: &Pki,
    sizes: &Sizes,
) -> Result<Row, BoxError> {
    let (server, client) = pki.configs(profile)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let total = 1 + sizes.full + 1 + sizes.resumed + 1;
    let server_thread = thread::spawn(move || serve(listener, server, total));

    // Full handshakes: no resumption at all. One warm-up connection first.
    let mut full_cfg = client.clone();
    full_cfg.resumption = Resumption::disabled();
    let full_cfg = Arc::new(full_cfg);
    close(dial(addr, &full_cfg)?)?;
    let start = Instant::now();
    for _ in 0..sizes.full {
        close(dial(addr, &full_cfg)?)?;
    }
    let full_per_s = sizes.full as f64 / start.elapsed().as_secs_f64();

    // Resumed: the first connection fetches tickets, every later one spends one and gets more.
    let resume_cfg = Arc::new(client);
    close(dial(addr, &resume_cfg)?)?;
    let mut resumed = 0usize;
    let start = Instant::now();
    for _ in 0..sizes.resumed {
        let tls = dial(addr, &resume_cfg)?;
        if tls.conn.handshake_kind() == Some(HandshakeKind::Resumed) {
            resumed += 1;
        }
        close(tls)?;
    }
    let resumed_per_s = sizes.resumed as f64 / start.elapsed().as_secs_f64();

    // Bulk, client to server, on a fresh full handshake; timed until the server's answer.
    let mut tls = dial(addr, &full_cfg)?;
    let chunk = vec![0x5au8; CHUNK];
    let bytes = sizes.bulk_mib * MIB;
    let start = Instant::now();
    for _ in 0..bytes / CHUNK {
        tls.write_all(&chunk)?;
    }
    close(tls)?;
    let bulk_mib_s = sizes.bulk_mib as f64 / start.elapsed().as_secs_f64();

    server_thread.join().map_err(|_| "server thread panicked")??;
    Ok(Row {
        profile: label,
        full_per_s,
        resumed_per_s,
        resumed_share: resumed as f64 / sizes.resumed.max(1) as f64,
        bulk_mib_s,
    })
}
