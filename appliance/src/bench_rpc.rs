//! `vpbox bench rpc`: what hostile and slow clients cost a real node, and what an honest client
//! sees meanwhile. A fresh local cluster; node 1's resident memory sampled from `/proc` every
//! 5 ms (its peak over each phase); an honest `anchor_get` client timing every call.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde_json::json;
use vpbox_node::client::RpcClient;

use crate::Outcome;
use crate::client_cmd::BenchCluster;
use crate::process::Vpbox;

/// `vpbox bench rpc`.
#[derive(Debug, Args)]
pub(crate) struct BenchRpcArgs {
    /// Hostile requests sent at once, each a body of `[{"a":0},…]` at the 4 MiB limit.
    #[arg(long, default_value_t = 256)]
    pub(crate) hostile: usize,
    /// Slow connections held open, each sending a byte of its head a second.
    #[arg(long, default_value_t = 1000)]
    pub(crate) slow: usize,
    /// How long the slow connections drip, in seconds (past the node's 5 s head deadline).
    #[arg(long, default_value_t = 8)]
    pub(crate) slow_seconds: u64,
    /// The PKCS#11 module (default: the test token beside this binary).
    #[arg(long)]
    pub(crate) module: Option<PathBuf>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples `pid`'s resident set until stopped; the peak in KiB.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop, peak, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// An honest client calling `anchor_get` in a loop until stopped: its latencies.
fn honest(socket: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut lat = Vec::new();
        let key = hex::encode([0xab; 32]);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ok = RpcClient::new(&socket).call("anchor_get", json!([key])).is_ok();
            lat.push(if ok { t.elapsed() } else { Duration::from_secs(3600) });
            std::thread::sleep(Duration::from_millis(20));
        }
        lat
    })
}

fn summary(mut lat: Vec<Duration>) -> (usize, f64, f64, f64, usize) {
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).copied().map_or(0.0, ms)
    };
    let failed = lat.iter().filter(|d| **d >= Duration::from_secs(3600)).count();
    (lat.len(), at(0.5), at(0.99), lat.last().copied().map_or(0.0, ms), failed)
}

fn hostile_body(n: usize) -> Vec<u8> {
    let mut b = br#"{"jsonrpc":"2.0","method":"anchor_get","id":1,"params":["#.to_vec();
    while b.len() + 17 <= n {
        b.extend_from_slice(br#"{"a":0},"#);
    }
    b.extend_from_slice(br#"{"a":0}]}"#);
    b
}

pub(crate) fn bench_rpc(a: &BenchRpcArgs) -> Result<Outcome> {
    let cluster = BenchCluster::up(4, a.module.as_deref(), None)?;
    let socket = cluster.dir.join("node1/rpc.sock");
    let pid = u32::try_from(Vpbox::from_pid_file(&cluster.dir.join("node1/node.pid"))?.pid())?;
    // Settle: a few honest calls, then the baseline.
    for _ in 0..20 {
        let _ = RpcClient::new(&socket).call("block_getChainHeight", json!([]));
    }
    let base = rss_kib(pid);
    println!(
        "vpbox bench rpc: node1 (pid {pid}) of a fresh 4-node cluster; resident {} MiB",
        base / 1024
    );

    // 1. Hostile bodies, all at once.
    let body = Arc::new(hostile_body(4 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = Sampler::start(pid);
    let watcher = honest(socket.clone(), Arc::clone(&stop));
    let start = Instant::now();
    let senders: Vec<_> = (0..a.hostile)
        .map(|_| {
            let (socket, body) = (socket.clone(), Arc::clone(&body));
            std::thread::spawn(move || -> String {
                let Ok(mut s) = UnixStream::connect(&socket) else { return "connect".into() };
                let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                let text = String::from_utf8_lossy(&out);
                ["-32600", "-32004", "-32005"]
                    .iter()
                    .find(|c| text.contains(*c))
                    .map_or_else(|| text.chars().take(40).collect(), |c| (*c).to_string())
            })
        })
        .collect();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for s in senders {
        let a = s.join().unwrap_or_else(|_| "panic".into());
        *answers.entry(a).or_default() += 1;
    }
    let hostile_secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (n1, p50_1, p99_1, max_1, failed_1) = summary(watcher.join().unwrap_or_default());
    let peak1 = sampler.finish();
    println!(
        "{} hostile 4 MiB bodies at once:  node1 peak {} MiB (+{} MiB), {hostile_secs:.1} s; \
         answers {answers:?}; honest anchor_get x{n1}: p50 {p50_1:.1} ms, p99 {p99_1:.1} ms, \
         max {max_1:.1} ms, {failed_1} failed",
        a.hostile,
        peak1 / 1024,
        peak1.saturating_sub(base) / 1024
    );

    // 2. Slow connections, each dripping a byte of a head that never ends.
    let base2 = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = Sampler::start(pid);
    let watcher = honest(socket.clone(), Arc::clone(&stop));
    let mut slow: Vec<UnixStream> = Vec::with_capacity(a.slow);
    for _ in 0..a.slow {
        let mut s = UnixStream::connect(&socket)?;
        s.write_all(b"POST / HTTP/1.1\r\nX-Slow: ")?;
        s.set_nonblocking(true)?;
        slow.push(s);
    }
    let begin = Instant::now();
    let mut closed = 0usize;
    while begin.elapsed() < Duration::from_secs(a.slow_seconds) {
        closed = 0;
        for s in &mut slow {
            if s.write_all(b"a").is_err() {
                closed += 1;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    let (n2, p50_2, p99_2, max_2, failed_2) = summary(watcher.join().unwrap_or_default());
    let peak2 = sampler.finish();
    drop(slow);
    println!(
        "{} slow connections for {} s:     node1 peak {} MiB (+{} MiB); {closed} cut off by the \
         node's head deadline; honest anchor_get x{n2}: p50 {p50_2:.1} ms, p99 {p99_2:.1} ms, \
         max {max_2:.1} ms, {failed_2} failed",
        a.slow,
        a.slow_seconds,
        peak2 / 1024,
        peak2.saturating_sub(base2) / 1024
    );
    println!(
        "{}",
        json!({"bench": "rpc", "base_rss_mib": base / 1024,
               "hostile": a.hostile, "hostile_peak_rss_mib": peak1 / 1024,
               "hostile_honest_p50_ms": p50_1, "hostile_honest_p99_ms": p99_1,
               "hostile_honest_max_ms": max_1, "hostile_honest_failed": failed_1,
               "slow": a.slow, "slow_peak_rss_mib": peak2 / 1024, "slow_cut_off": closed,
               "slow_honest_p50_ms": p50_2, "slow_honest_p99_ms": p99_2,
               "slow_honest_max_ms": max_2, "slow_honest_failed": failed_2})
    );
    println!(
        "summary: node1 peak +{} MiB under {} hostile bodies, +{} MiB under {} slow connections; \
         honest p99 {p99_1:.1} ms and {p99_2:.1} ms",
        peak1.saturating_sub(base) / 1024,
        a.hostile,
        peak2.saturating_sub(base2) / 1024,
        a.slow
    );
    Ok(Outcome::Ok)
}
