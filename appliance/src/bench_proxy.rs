//! `vpbox bench proxy`: vpbox-proxy against nginx (Debian's), in one run, in front of the same
//! upstream, driven by wrk (Debian's).
//!
//! - **Parity.** Both terminate TLS 1.3 with the same ECDSA P-256 certificate, its key in a
//!   file, TLS_AES_128_GCM_SHA256 only, no session tickets (nginx cannot load SM2 keys with
//!   Debian's OpenSSL 3.0); both forward HTTP/1.1 to the same Unix socket over kept-alive
//!   upstream connections (nginx `keepalive 512` per worker; the proxy's pool of at most 512
//!   idle); both
//!   write an access log line per request; both have two worker threads (nginx
//!   `worker_processes 2`) on this machine's cores, shared with the load generator.
//! - **What the proxy's figure leaves out**: a box's API admits each request's client
//!   certificate again against the trust store (a chain check with SM2 verifications); the
//!   benchmark's clients present no consortium certificate, so that cost is not in it.
//! - **Upstream.** The node's own HTTP server (`vpbox_node::http`) on a Unix socket, answering
//!   `block_getChainHeight` from memory on its event loop as the node does (ready at once:
//!   `Methods::call_now`), so the figures are the proxies', not a ledger's.
//! - **Requests.** wrk, keep-alive, the same small JSON-RPC `POST` at each connection count,
//!   requests/s and p99 latency from its `--latency` report; any non-2xx answer or socket
//!   error fails the run rather than being counted.
//! - **Handshakes.** Full mutual handshakes/s (a client certificate from the bench CA, no
//!   resumption), from this process, against each server's mutual listener; the proxy's bench
//!   listener verifies the client's chain as nginx's `ssl_verify_client on` does.
//!
//! The proxy's path is its API shell ([`vpbox_proxy::bench`]): TLS, the gate (classification,
//! allow-list, bucket), the forward with the client's identity, the access log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use vpbox_node::rpc::{Methods, RpcError};

use crate::Outcome;
use crate::process::Vpbox;

/// `vpbox bench proxy`.
#[derive(Debug, Args)]
pub(crate) struct BenchProxyArgs {
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u64,
    /// Connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 256])]
    pub(crate) connections: Vec<u32>,
    /// Seconds of each handshake run.
    #[arg(long, default_value_t = 5)]
    pub(crate) handshake_seconds: u64,
    /// Runs of each server at each connection count, alternating, their medians reported (a
    /// shared machine's noise moves one run by ±20 %).
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: u32,
}

/// `vpbox proxy bench-serve`: the proxy's API shell for the benchmark (not for a box).
#[derive(Debug, Args)]
pub(crate) struct BenchServeArgs {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    mutual: String,
    #[arg(long)]
    certificate: PathBuf,
    #[arg(long)]
    key: PathBuf,
    #[arg(long)]
    client_ca: PathBuf,
    #[arg(long)]
    upstream: PathBuf,
}

pub(crate) fn bench_serve(a: &BenchServeArgs) -> Result<Outcome> {
    // Ends with the benchmark that started it, however that one ends.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
    vpbox_proxy::bench::serve(&vpbox_proxy::bench::BenchServer {
        listen: a.listen.clone(),
        mutual: a.mutual.clone(),
        certificate: a.certificate.clone(),
        key: a.key.clone(),
        client_ca: a.client_ca.clone(),
        upstream: a.upstream.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    Ok(Outcome::Ok)
}

/// The upstream's one method.
struct Height;

impl Methods for Height {
    fn call(&self, method: &str, _: &Value) -> Result<Value, RpcError> {
        match method {
            "block_getChainHeight" => Ok(json!(42)),
            _ => Err(RpcError::new(RpcError::METHOD_NOT_FOUND, format!("no method {method}"))),
        }
    }

    /// Ready at once, as the node's own height is (the node answers it on its event loop).
    fn call_now(&self, method: &str, params: &Value) -> Option<Result<Value, RpcError>> {
        Some(self.call(method, params))
    }

    fn ready_now(&self, _: &str) -> bool {
        true
    }
}

const BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"block_getChainHeight","params":[]}"#;

fn free_address() -> Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{what}: is it installed?"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("openssl").args(args).current_dir(dir), &format!("openssl {}", args[0]))
        .map(drop)
}

/// The bench CA, a server certificate for 127.0.0.1 and a client certificate, all P-256.
fn credentials(dir: &Path) -> Result<()> {
    let p256 = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    for key in ["ca.key", "server.key", "client.key"] {
        openssl(dir, &[&["genpkey"][..], &p256, &["-out", key]].concat())?;
    }
    let ca = ["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=vpbox bench CA"];
    openssl(dir, &[&ca[..], &["-days", "2", "-out", "ca.crt"]].concat())?;
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\n{ext}"),
        )?;
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        openssl(
            dir,
            &["req", "-new", "-key", &key, "-subj", &format!("/CN={name}"), "-out", &csr],
        )?;
        let (crt, ext) = (format!("{name}.crt"), format!("{name}.ext"));
        let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key"];
        openssl(dir, &[&sign[..], &["-days", "2", "-extfile", &ext, "-out", &crt]].concat())?;
    }
    Ok(())
}

/// Stops its process when dropped: SIGTERM (nginx's master then stops its workers; a SIGKILL
/// would leave them running), SIGKILL after 5 s.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // Already reaped: its pid may be another process's now.
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(address: &str, what: &str, child: &mut Child) -> Result<()> {
    let start = Instant::now();
    while TcpStream::connect(address).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited ({status})");
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("{what} did not listen on {address} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// nginx's configuration: a server without client certificates and one with, both in front of
/// `upstream`. (nginx reads only its own syntax: the text is written here.)
fn nginx_conf(dir: &Path, plain: &str, mutual: &str, upstream: &Path) -> String {
    let d = dir.display();
    let tls = format!(
        "ssl_certificate {d}/server.crt; ssl_certificate_key {d}/server.key;\n    \
         ssl_protocols TLSv1.3; ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;\n    \
         ssl_session_tickets off; ssl_session_cache off;\n    \
         location / {{ proxy_pass http://node; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; }}"
    );
    format!(
        "user root;\ndaemon off;\nworker_processes 2;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\nevents {{ worker_connections 8192; }}\n\
         http {{\n  access_log {d}/nginx-access.log;\n  client_body_temp_path {d}/t1;\n  \
         proxy_temp_path {d}/t2;\n  fastcgi_temp_path {d}/t3;\n  uwsgi_temp_path {d}/t4;\n  \
         scgi_temp_path {d}/t5;\n  \
         upstream node {{ server unix:{}; keepalive 512; }}\n  \
         server {{\n    listen {plain} ssl;\n    {tls}\n  }}\n  \
         server {{\n    listen {mutual} ssl;\n    {tls}\n    \
         ssl_client_certificate {d}/ca.crt; ssl_verify_client on;\n  }}\n}}\n",
        upstream.display()
    )
}

/// One wrk run's figures.
struct WrkRun {
    requests_per_s: f64,
    p99_ms: f64,
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.01s`) in milliseconds.
fn millis(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(out: &str) -> Result<WrkRun> {
    if let Some(line) = out.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")) {
        bail!("wrk saw errors: {}\n{out}", line.trim());
    }
    let requests_per_s = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's report:\n{out}"))?;
    let p99_ms = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| millis(v.trim()))
        .with_context(|| format!("no 99% latency in wrk's report:\n{out}"))?;
    Ok(WrkRun { requests_per_s, p99_ms })
}

fn wrk(dir: &Path, address: &str, connections: u32, seconds: u64) -> Result<WrkRun> {
    let threads = connections.clamp(1, 2).to_string();
    let out = run(
        Command::new("wrk").args([
            "-t",
            &threads,
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
            &dir.join("post.lua").display().to_string(),
            &format!("https://{address}/"),
        ]),
        "wrk",
    )?;
    parse_wrk(&out)
}

/// The bench client's TLS: its P-256 certificate, the bench CA, AES-128-GCM, no resumption.
fn bench_client_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let der = |file: &str| -> Result<Vec<u8>> {
        let text = std::fs::read_to_string(dir.join(file))?;
        Ok(pem_rfc7468::decode_vec(text.as_bytes()).map_err(anyhow::Error::msg)?.1)
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der("ca.crt")?))?;
    let key = PrivateKeyDer::Pkcs8(der("client.key")?.into());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![CertificateDer::from(der("client.crt")?)], key)?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Full mutual handshakes/s against `address` (whose certificate names `name`) for
/// `seconds`, from 2 threads, each handshake followed by one request whose answer must be 200.
fn handshakes(
    config: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
    address: &str,
    seconds: u64,
) -> Result<f64> {
    let (done, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (config, done, stop, failed) =
                (Arc::clone(config), Arc::clone(&done), Arc::clone(&stop), Arc::clone(&failed));
            let name = name.clone();
            let address = address.to_string();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = (|| -> Option<()> {
                        let mut tcp = TcpStream::connect(&address).ok()?;
                        tcp.set_nodelay(true).ok()?;
                        let mut conn =
                            rustls::ClientConnection::new(Arc::clone(&config), name.clone())
                                .ok()?;
                        while conn.is_handshaking() {
                            conn.complete_io(&mut tcp).ok()?;
                        }
                        // The server's verdict on our certificate arrives after our Finished:
                        // one round trip proves the server took it.
                        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                        let head = format!(
                            "POST / HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{BODY}",
                            BODY.len()
                        );
                        tls.write_all(head.as_bytes()).ok()?;
                        let mut buf = [0u8; 12];
                        tls.read_exact(&mut buf).ok()?;
                        (&buf[9..12] == b"200").then_some(())
                    })();
                    match ok {
                        Some(()) => done.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let failures = failed.load(Ordering::Relaxed);
    if failures > 0 {
        bail!("{failures} mutual handshakes with {address} failed");
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn bench_proxy(a: &BenchProxyArgs) -> Result<Outcome> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    credentials(dir)?;
    std::fs::write(
        dir.join("post.lua"),
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{BODY}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    // The upstream, in this process.
    let upstream = dir.join("upstream.sock");
    let listener = std::os::unix::net::UnixListener::bind(&upstream)?;
    let uid = rustix::process::getuid().as_raw();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let limits = vpbox_node::http::Limits::default();
        vpbox_node::http::serve(listener, Arc::new(Height), limits, vec![uid], flag)
    });
    let (proxy_plain, proxy_mutual) = (free_address()?, free_address()?);
    let log = std::fs::File::create(dir.join("proxy.log"))?;
    let mut proxy = Reaped(
        Command::new(crate::process::own_exe()?)
            .args(["proxy", "bench-serve", "--listen", &proxy_plain, "--mutual", &proxy_mutual])
            .args(["--certificate", &dir.join("server.crt").display().to_string()])
            .args(["--key", &dir.join("server.key").display().to_string()])
            .args(["--client-ca", &dir.join("ca.crt").display().to_string()])
            .args(["--upstream", &upstream.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    wait_listening(&proxy_plain, "vpbox-proxy", &mut proxy.0)?;
    let (nginx_plain, nginx_mutual) = (free_address()?, free_address()?);
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, &nginx_plain, &nginx_mutual, &upstream))?;
    let mut nginx = Reaped(
        Command::new("nginx")
            .args(["-c", &conf.display().to_string(), "-p", &dir.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("nginx (Debian's nginx package; scripts/deps.sh --test installs it)")?,
    );
    wait_listening(&nginx_plain, "nginx", &mut nginx.0).with_context(|| {
        std::fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default()
    })?;

    println!(
        "vpbox-proxy vs nginx {}: TLS 1.3, ECDSA P-256 (key in a file), AES-128-GCM, \
         keep-alive, one small JSON-RPC POST, {} s per run (wrk)",
        Command::new("nginx")
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().replace("nginx version: ", ""))
            .unwrap_or_default(),
        a.seconds
    );
    println!(
        "| connections | vpbox-proxy req/s | nginx req/s | ratio | vpbox-proxy p99 ms | nginx p99 ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Every round's pair, printed below the table: a median hides how far the rounds spread.
    let mut rounds = Vec::new();
    for c in &a.connections {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..a.rounds.max(1) {
            ours.push(wrk(dir, &proxy_plain, *c, a.seconds)?);
            theirs.push(wrk(dir, &nginx_plain, *c, a.seconds)?);
        }
        let pairs: Vec<String> = ours
            .iter()
            .zip(&theirs)
            .map(|(o, t)| {
                format!(
                    "{:.0}/{:.0} req/s, p99 {:.3}/{:.3} ms",
                    o.requests_per_s, t.requests_per_s, o.p99_ms, t.p99_ms
                )
            })
            .collect();
        rounds.push(format!("{c} connections: {}", pairs.join("; ")));
        let (ours, theirs) = (median(&ours), median(&theirs));
        println!(
            "| {c} | {:.0} | {:.0} | {:.2}x | {:.2} | {:.2} | {:.2}x |",
            ours.requests_per_s,
            theirs.requests_per_s,
            ours.requests_per_s / theirs.requests_per_s,
            ours.p99_ms,
            theirs.p99_ms,
            ours.p99_ms / theirs.p99_ms
        );
    }
    println!("each round, vpbox-proxy/nginx:");
    for r in rounds {
        println!("  {r}");
    }
    let client = bench_client_config(dir)?;
    let ip = ServerName::try_from("127.0.0.1")?;
    let ours = handshakes(&client, &ip, &proxy_mutual, a.handshake_seconds)?;
    let theirs = handshakes(&client, &ip, &nginx_mutual, a.handshake_seconds)?;
    println!(
        "full mutual handshakes/s (2 client threads, no resumption): vpbox-proxy {ours:.0}, \
         nginx {theirs:.0}, ratio {:.2}x",
        ours / theirs
    );
    stop.store(true, Ordering::Relaxed);
    drop((proxy, nginx));
    box_api(a)
}

/// The medians of `runs`' requests/s and of their p99s.
fn median(runs: &[WrkRun]) -> WrkRun {
    let at_middle = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    WrkRun {
        requests_per_s: at_middle(runs.iter().map(|r| r.requests_per_s).collect()),
        p99_ms: at_middle(runs.iter().map(|r| r.p99_ms).collect()),
    }
}

/// The limits the box's benchmark proxy runs with: its one client opens every connection at
/// once, past the default caps per client (64) and per source in handshake (32), and sends
/// past a client's default rate (50,000 calls/s, a burst of 100,000: a box's protection, not
/// what is measured here; runs back to back at 256 connections drained it into 429s).
const BOX_LIMITS: &str = "handshakes_per_source = 1024\n[connections]\nlistener_max = 2048\n\
                          client_max = 1024\n[rate]\nper_s = 10000000\nburst = 20000000\n";

/// Sets box 1's API profile and the benchmark's limits, and restarts its proxy to take them.
fn configure_box(dir: &Path, profile: &str) -> Result<()> {
    let path = dir.join("node1/box.toml");
    let mut config: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)?;
    let proxy = config
        .get_mut("proxy")
        .and_then(toml::Value::as_table_mut)
        .context("box 1 has no [proxy]")?;
    proxy.insert("api_profile".into(), profile.into());
    proxy.insert("limits".into(), toml::from_str::<toml::Table>(BOX_LIMITS)?.into());
    std::fs::write(&path, toml::to_string(&config)?)?;
    Vpbox::from_pid_file(&dir.join("node1/proxy.pid"))?.stop_and_wait("proxy 1")?;
    let up = Command::new(crate::process::own_exe()?)
        .args(["cluster", "up", "--dir"])
        .arg(dir)
        .output()?;
    if !up.status.success() {
        bail!("cluster up: {}", String::from_utf8_lossy(&up.stderr));
    }
    Ok(())
}

/// Part two, the proxy's own figures as a box runs it (no peer here: wrk's OpenSSL 3.0
/// loads no SM2 client certificate): a 1-node consortium; the proxy's TLS key in the test
/// token, each handshake signed through the signer; the client a POSP whose certificate the
/// ledger's trust store admits (again after a trust change, at least once a second); the node answering
/// `block_getChainHeight`; the load from [`vpbox_proxy::bench::load`] in this process.
fn box_api(a: &BenchProxyArgs) -> Result<Outcome> {
    let cluster = crate::client_cmd::BenchCluster::up(1, None, None)?;
    let dir = cluster.dir.clone();
    println!(
        "\nvpbox-proxy of a box: TLS key in the HSM (test token, through the signer), a POSP \
         admitted by the ledger's trust store, the node answering; {} s per run",
        a.seconds
    );
    println!("| API profile | connections | req/s | p99 ms |\n|---|---|---|---|");
    let mut handshake_rows = Vec::new();
    for (profile, name) in [(vpbox_tls::Profile::Sm, "sm"), (vpbox_tls::Profile::Hybrid, "hybrid")]
    {
        configure_box(&dir, name)?;
        let (address, server) =
            crate::client_cmd::box_api(&dir, 1)?.context("box 1 has no API listener")?;
        let server = ServerName::try_from(server)?;
        let config = crate::https::tls_config(
            profile,
            crate::client_cmd::cluster_roots(&dir)?,
            &dir.join("posp/bank-a.crt"),
            &dir.join("posp/bank-a.pem"),
        )?;
        for c in &a.connections {
            let load = vpbox_proxy::bench::load(
                &address,
                server.clone(),
                Arc::clone(&config),
                *c,
                a.seconds as f64,
                BODY,
            )
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{name} profile, {c} connections"))?;
            println!("| {name} | {c} | {:.0} | {:.2} |", load.requests_per_s, load.p99_ms);
        }
        let mut fresh = (*config).clone();
        fresh.resumption = rustls::client::Resumption::disabled();
        let rate = handshakes(&Arc::new(fresh), &server, &address, a.handshake_seconds)?;
        handshake_rows.push(format!("{name} {rate:.0}"));
    }
    println!(
        "full mutual handshakes/s with the key in the HSM (2 client threads, no resumption): {}",
        handshake_rows.join(", ")
    );
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read_and_errors_refuse_the_run() {
        let report = "Running 1s test @ https://127.0.0.1:1/\n  Latency Distribution\n     \
                      50%  312.00us\n     99%    1.52ms\n  1000 requests in 1.00s\n\
                      Requests/sec:   9876.54\nTransfer/sec:      1.2MB\n";
        let r = parse_wrk(report).unwrap();
        assert_eq!((r.requests_per_s, r.p99_ms), (9876.54, 1.52));
        assert_eq!(millis("812.00us"), Some(0.812));
        assert_eq!(millis("2.5s"), Some(2500.0));
        assert_eq!(millis("12"), None);
        let bad = format!("{report}  Non-2xx or 3xx responses: 3\n");
        assert!(parse_wrk(&bad).is_err());
        assert!(parse_wrk("Requests/sec: 5\n").is_err(), "no latency");
    }
}
