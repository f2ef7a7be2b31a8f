//! `vpbox bench growth`: how a node's costs grow with its ledger, on a fresh local cluster.
//!
//! 1. **Load**: `--anchors` anchors through the batch path (signed batches of `--batch` pairs,
//!    several clients, each batch awaited until committed), made and sent in slices so the
//!    benchmark's own memory stays bounded whatever the count.
//! 2. **Reads**: `anchor_get` through node 1's JSON-RPC socket, one client, `--reads` keys
//!    drawn across everything loaded (a deterministic spread, not the last few written):
//!    p50, p99 and max, in ms.
//! 3. **Catch-up**: the last node is stopped (SIGTERM), `--catch-up` more anchors commit
//!    on the others, and the node is started again; the figure is those anchors over the time
//!    from its start to its height equal to node 1's.
//! 4. **Bytes on disk per anchor**: node 1's ledger once the cluster is stopped cleanly,
//!    without the state map's checkpoint that a clean stop leaves (a bounded size, given
//!    apart).
//!
//! Prints the figures, their goals (issue 18: `anchor_get` p99 ≤ 1 ms on 10 million anchors,
//! catch-up ≥ 50,000 anchors/s after 1 million) and a JSON line.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use vpbox_ledger::tx::Payload;
use vpbox_node::client::RpcClient;
use vpbox_sm::SoftwareSigner;
use vpbox_sm::sm2::SecretKey;

use crate::Outcome;
use crate::client_cmd::{BenchCluster, bench_key, drive, percentile, sign};

/// `vpbox bench growth …`
#[derive(Debug, Args)]
pub(crate) struct BenchGrowthArgs {
    /// Nodes in the fresh cluster (the last one is stopped for the catch-up).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(4..=7))]
    nodes: u32,
    /// Anchors loaded before the reads.
    #[arg(long, default_value_t = 1_000_000)]
    anchors: u64,
    /// Anchors committed while the last node is stopped.
    #[arg(long, default_value_t = 200_000)]
    catch_up: u64,
    /// Pairs per batch transaction.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch: u64,
    /// `anchor_get` calls timed.
    #[arg(long, default_value_t = 10_000)]
    reads: u64,
    /// The PKCS#11 module (default: the test token beside this binary).
    #[arg(long)]
    module: Option<PathBuf>,
}

/// Batches made and sent at a time (about 100 MiB of encoded transactions at 5,000 pairs).
const SLICE: u64 = 300;

/// Sends anchors `from..to` (keys `bench_key(11, i)`) through the batch path, slice by slice.
fn load(
    sockets: &[PathBuf],
    s: &SoftwareSigner,
    batch: u64,
    from: u64,
    to: u64,
    what: &str,
) -> Result<f64> {
    let start = Instant::now();
    let mut next = from;
    let mut shown = 0;
    while next < to {
        let mut txs = Vec::new();
        while next < to && (txs.len() as u64) < SLICE {
            let end = (next + batch).min(to);
            let pairs = (next..end).map(|i| (bench_key(11, i), bench_key(12, i))).collect();
            txs.push(sign(s, Payload::AnchorPutBatch(pairs))?.encode());
            next = end;
        }
        drive(sockets, "anchor_putBatch", txs, 2 * sockets.len(), true)?;
        let tenth = (next - from) * 10 / (to - from).max(1);
        if tenth > shown {
            shown = tenth;
            eprintln!("{what}: {} of {} anchors", next - from, to - from);
        }
    }
    Ok((to - from) as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

fn height(rpc: &Path) -> Option<u64> {
    RpcClient::new(rpc).call("block_getChainHeight", json!([])).ok()?.as_u64()
}

pub(crate) fn bench_growth(a: &BenchGrowthArgs) -> Result<Outcome> {
    let cluster = BenchCluster::up(a.nodes, a.module.as_deref(), None)?;
    let dir = cluster.dir.clone();
    let socket = |i: u32| dir.join(format!("node{i}/rpc.sock"));
    let s = SoftwareSigner::new(SecretKey::from_pem(&std::fs::read_to_string(
        dir.join("posp/bank-a.pem"),
    )?)?);
    println!("vpbox bench growth: {} nodes on this machine, batches of {}", a.nodes, a.batch);

    // 1. Load.
    let all: Vec<PathBuf> = (1..=a.nodes).map(socket).collect();
    let load_rate = load(&all, &s, a.batch, 0, a.anchors, "load")?;
    println!("load: {} anchors committed at {load_rate:.0}/s", a.anchors);
    // Each batch was awaited on the node it went to: the node read below may be a block or
    // two behind that one. It is waited for (a node that does not get there is an error).
    let top = all.iter().filter_map(|s| height(s)).max().unwrap_or(0);
    let waited = Instant::now();
    while height(&socket(1)).is_none_or(|h| h < top) {
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("node1 did not reach height {top} within 60 s of the load's end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // 2. Reads, spread over everything loaded (a multiplicative walk modulo the count).
    let mut c = RpcClient::new(&socket(1));
    let mut lat = Vec::with_capacity(a.reads as usize);
    let n = a.anchors.max(1);
    for r in 0..a.reads {
        let i = (r.wrapping_mul(2_654_435_761) ^ (r >> 3)) % n;
        let key = hex::encode(bench_key(11, i));
        let t0 = Instant::now();
        let v = c.call("anchor_get", json!([key]))?;
        lat.push(t0.elapsed());
        if a.anchors > 0 && v["ok"] != json!(true) {
            bail!("anchor {i} of the load is not found: {v}");
        }
    }
    let (p50, p99) = (percentile(&mut lat, 0.50), percentile(&mut lat, 0.99));
    let max = lat.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!(
        "anchor_get on {} anchors ({} reads, one client, JSON-RPC socket): p50 {p50:.3} ms, \
         p99 {p99:.3} ms, max {max:.3} ms   (goal p99 <= 1 ms on 10,000,000)",
        a.anchors, a.reads
    );

    // 3. Catch-up: the last node stopped while `catch_up` anchors commit on the others.
    let last = a.nodes;
    let node_dir = dir.join(format!("node{last}"));
    let pid: i32 = std::fs::read_to_string(node_dir.join("node.pid"))?.trim().parse()?;
    let Some(p) = rustix::process::Pid::from_raw(pid) else { bail!("node{last}: no pid") };
    rustix::process::kill_process(p, rustix::process::Signal::TERM)?;
    let stopped = Instant::now();
    while std::fs::metadata(format!("/proc/{pid}")).is_ok() {
        if stopped.elapsed() > Duration::from_secs(30) {
            bail!("node{last} did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let others: Vec<PathBuf> = (1..last).map(socket).collect();
    let end = a.anchors + a.catch_up;
    load(&others, &s, a.batch, a.anchors, end, "while node stopped")?;
    let target = height(&socket(1)).unwrap_or(0);
    let restart = Instant::now();
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["cluster", "up", "--dir"])
        .arg(&dir)
        .output()?;
    if !out.status.success() {
        bail!("cluster up: {}", String::from_utf8_lossy(&out.stderr));
    }
    loop {
        if height(&socket(last)).is_some_and(|h| h >= target) {
            break;
        }
        if restart.elapsed() > Duration::from_secs(1800) {
            bail!("node{last} did not reach height {target} within 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = restart.elapsed().as_secs_f64();
    let catch_rate = a.catch_up as f64 / took.max(1e-9);
    println!(
        "catch-up: node{last} restarted {} anchors behind (to height {target}), level in \
         {took:.1} s: {catch_rate:.0} anchors/s   (goal >= 50,000 after 1,000,000)",
        a.catch_up
    );

    // 4. The cost on disk: node 1's ledger, stopped cleanly, and apart the state map's
    // checkpoint a clean stop leaves ([`BenchCluster::ledger_bytes`]). Measured last: a
    // failure here loses none of the figures above (printed already; `null` in the JSON).
    let anchors = (a.anchors + a.catch_up).max(1) as f64;
    let disk = cluster.down().and_then(|()| cluster.ledger_bytes(1));
    let (per_anchor, checkpoint) = match &disk {
        Ok(vpbox_ledger::disk::StoppedBytes { all, checkpoint }) => {
            let per_anchor = all.saturating_sub(*checkpoint) as f64 / anchors;
            println!(
                "bytes on disk per anchor (node1 ledger): {per_anchor:.0}, and the state map's \
                 checkpoint of a clean stop: {:.1} MB",
                *checkpoint as f64 / 1e6
            );
            (Some(per_anchor.round()), Some(*checkpoint))
        }
        Err(e) => {
            eprintln!("bytes on disk per anchor: not measured: {e:#}");
            (None, None)
        }
    };
    println!(
        "{}",
        json!({"bench": "growth", "nodes": a.nodes, "anchors": a.anchors, "load_per_s": load_rate.round(),
               "reads": a.reads, "get_p50_ms": p50, "get_p99_ms": p99, "get_max_ms": max,
               "catch_up": a.catch_up, "catch_up_s": took, "catch_up_per_s": catch_rate.round(),
               "bytes_per_anchor": per_anchor, "checkpoint_bytes": checkpoint})
    );
    Ok(Outcome::Ok)
}
