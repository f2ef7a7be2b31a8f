//! vpbox-tls over real localhost TCP, both profiles: full mutual handshakes per second, resumed
//! handshakes per second, and one-way bulk throughput.
//!
//! `cargo bench -p vpbox-tls --bench tls` (under a minute on 2 cores). `VPBOX_BENCH_QUICK=1` (or
//! the argument `--quick`) makes a smoke run of a few seconds. Prints a table, a JSON line
//! (`{"bench":"tls",...}`) and a one-line summary.
//!
//! Client and server run in one process, a thread each, one connection at a time: a handshake
//! figure is 1 / (connect + handshake + first byte + close), both sides' CPU on one machine.

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
    println!("summary: {}", summary.join("; "));
    Ok(())
}

/// One bank, a server node and a client node, with software keys.
struct Pki {
    trust: Arc<RwLock<TrustStore>>,
    server: Credentials,
    client: Credentials,
}

impl Pki {
    fn new() -> Result<Self, BoxError> {
        let now = SystemTime::now() - Duration::from_secs(3600);
        let ca = SoftwareSigner::new(SecretKey::generate()?);
        let root =
            cert::self_signed_root(&ca, "Bank A", "CN", cert::random_serial([1; 16])?, now, 30)?;
        let mut store = TrustStore::new();
        store.add_root(&Certificate::from_pem(root.as_bytes())?.to_der()?)?;
        let leaf = |cn: &str, n: u8| -> Result<Credentials, BoxError> {
            let key = Arc::new(SoftwareSigner::new(SecretKey::generate()?));
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
            let der = Certificate::from_pem(pem.as_bytes())?.to_der()?;
            Ok(Credentials::new(vec![CertificateDer::from(der)], key)?)
        };
        Ok(Self {
            trust: Arc::new(RwLock::new(store)),
            server: leaf("node1", 2)?,
            client: leaf("node2", 3)?,
        })
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
