//! The proxy's API shell set up to be measured against nginx (`vpbox bench proxy`): the same
//! request path as a box's API listener — TLS, the gate, the forward to the node's socket with
//! the client's identity, the access log — with the TLS parameters nginx can also serve:
//! TLS 1.3, an ECDSA P-256 certificate whose key is in a file, TLS_AES_128_GCM_SHA256 only
//! (rustls's ring provider; Debian's nginx cannot load SM2 keys).
//!
//! Two listeners: `listen` asks no client certificate (wrk presents none) and every
//! connection counts as one benchmark client; `mutual` requires a client certificate issued by
//! `client_ca` (full mutual handshakes). What a box runs (`[proxy]`) never comes through here:
//! it admits clients only by the ledger's trust store.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use vpbox_ca::CertProfile;
use vpbox_ca::policy::Identity;

use crate::Limits;
use crate::api::{Api, ApiParts, Clients};
use crate::metrics::Metrics;
use crate::net::log;

/// What the benchmark's proxy serves.
#[derive(Debug, Clone)]
pub struct BenchServer {
    /// The listener without client certificates, `HOST:PORT`.
    pub listen: String,
    /// The listener that requires one.
    pub mutual: String,
    /// The server's certificate (PEM, ECDSA P-256).
    pub certificate: PathBuf,
    /// Its key (PKCS#8 PEM), in a file, as nginx's.
    pub key: PathBuf,
    /// The CA of the mutual listener's clients (PEM).
    pub client_ca: PathBuf,
    /// The upstream's JSON-RPC socket.
    pub upstream: PathBuf,
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn tls(b: &BenchServer, mutual: bool) -> Result<rustls::ServerConfig, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let provider = Arc::new(provider);
    let pem = read(&b.key)?;
    let (label, key) =
        pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|e| format!("{}: {e}", b.key.display()))?;
    if label != "PRIVATE KEY" {
        return Err(format!("{}: a PKCS#8 PRIVATE KEY, not {label}", b.key.display()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::net::read_chain(&b.client_ca)? {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(crate::net::read_chain(&b.certificate)?, key)
        .map_err(|e| e.to_string())?;
    // As nginx: no session tickets or resumption, so every handshake is a full one.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The one client every benchmark connection counts as: an admin (every method), so the
/// gate's allow-list passes and its classification and bucket still run.
fn bench_client() -> Identity {
    Identity {
        bank: "bench".into(),
        name: "bench-client".into(),
        role: CertProfile::Admin,
        serial: vec![1],
        key_fingerprint: vpbox_sm::sm3::hash(b"vpbox bench proxy"),
    }
}

/// Serves both listeners until the process is killed.
pub fn serve(b: &BenchServer) -> Result<(), String> {
    // One client holds every connection: caps and rate far above what the benchmark offers.
    let limits: Limits = toml::from_str(
        "handshakes_per_source = 8192\n[connections]\nlistener_max = 8192\nclient_max = 8192\n\
         [rate]\nper_s = 4000000000\nburst = 4000000000\n",
    )
    .map_err(|e| e.to_string())?;
    let configs = [(b.listen.clone(), tls(b, false)?), (b.mutual.clone(), tls(b, true)?)];
    // As a box's: the main runtime (accepts, handshakes) on two threads; requests on the
    // API's worker threads.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // The benchmark's proxy is killed when done: it never stops gracefully.
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for (address, config) in configs {
            let listener =
                TcpListener::bind(&address).await.map_err(|e| format!("{address}: {e}"))?;
            let api = Api::new(ApiParts {
                acceptor: Arc::new(std::sync::RwLock::new(TlsAcceptor::from(Arc::new(config)))),
                clients: Clients::Fixed(bench_client()),
                limits,
                node: b.upstream.clone(),
                metrics: Arc::new(Metrics::default()),
                stopping: stopping.clone(),
                // The benchmark's clients are fixed: its trust never changes.
                trust: tokio::sync::watch::channel(0).1,
                workers: crate::api::workers(),
            });
            log("bench-listening", json!({"address": address}));
            let workers = crate::api::start_workers(&api)?;
            tasks.push(tokio::spawn(crate::api::serve(listener, api, workers)));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

/// What [`load`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Answers per second over the measured window.
    pub requests_per_s: f64,
    /// The 99th percentile of the answers' latencies, in milliseconds.
    pub p99_ms: f64,
}

/// A load generator for a box's API, which wrk cannot drive (its OpenSSL 3.0 loads no SM2
/// client certificate): `connections` kept-alive HTTPS connections to `address` (TLS
/// `config`, server `name`) are opened first (8 handshakes at a time), then each POSTs `body`
/// for `seconds`, its next
/// request when the last answer is whole, as wrk does. Requests/s and the p99 latency; an
/// answer but 200 or a failed connection fails the run rather than being counted.
pub fn load(
    address: &str,
    name: rustls::pki_types::ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    connections: u32,
    seconds: f64,
    body: &'static str,
) -> Result<Load, String> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let connector = tokio_rustls::TlsConnector::from(config);
        // At most 64 handshakes at once, as a client pool ramps up: a box's proxy has at most
        // 8 HSM signatures in flight and makes the others wait their turn for 0.5 s at most
        // (its signer's protection), which a burst of 256 would outlast.
        let ramp = Arc::new(tokio::sync::Semaphore::new(64));
        let mut opened = Vec::new();
        for _ in 0..connections {
            let (connector, name, address) = (connector.clone(), name.clone(), address.to_string());
            let ramp = Arc::clone(&ramp);
            opened.push(tokio::spawn(async move {
                let _turn = ramp.acquire_owned().await.map_err(|e| e.to_string())?;
                let tcp =
                    tokio::net::TcpStream::connect(&address).await.map_err(|e| e.to_string())?;
                tcp.set_nodelay(true).map_err(|e| e.to_string())?;
                let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
                let (send, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Ok::<_, String>(send)
            }));
        }
        let mut senders = Vec::new();
        for o in opened {
            senders.push(o.await.map_err(|e| e.to_string())??);
        }
        let start = tokio::time::Instant::now();
        let end = start + std::time::Duration::from_secs_f64(seconds);
        let runs: Vec<_> = senders
            .into_iter()
            .map(|mut send| {
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while tokio::time::Instant::now() < end {
                        let t = tokio::time::Instant::now();
                        let request = hyper::Request::post("/")
                            .header("host", "box")
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .map_err(|e| e.to_string())?;
                        let answer = send.send_request(request).await.map_err(|e| e.to_string())?;
                        let status = answer.status();
                        answer.into_body().collect().await.map_err(|e| e.to_string())?;
                        if status != hyper::StatusCode::OK {
                            return Err(format!("answered {status}"));
                        }
                        latencies.push(t.elapsed());
                    }
                    Ok::<_, String>(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for r in runs {
            all.extend(r.await.map_err(|e| e.to_string())??);
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        let p99 = all
            .get((all.len() * 99).div_ceil(100).saturating_sub(1))
            .ok_or("no request was answered")?;
        Ok(Load { requests_per_s: all.len() as f64 / elapsed, p99_ms: p99.as_secs_f64() * 1000.0 })
    })
}
