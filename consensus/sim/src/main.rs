//! `vpbox-sim`: runs seeded consensus simulations and reports violations.

use std::process::ExitCode;

use clap::Parser;
use vpbox_consensus_sim::{Faults, run_seed};

/// Runs N replicas under seeded faults, checks safety after every step and liveness after the
/// heal. Signature verification is stubbed (keyed SM3) unless `--crypto sm2`; digests are real
/// SM3.
#[derive(Parser, Debug)]
#[command(name = "vpbox-sim")]
struct Args {
    /// Number of replicas.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Seed range `A..B` (B exclusive) or a single seed.
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Fault kinds: crash,torn,partition,byzantine,network, or all / none.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Event budget per seed.
    #[arg(long)]
    steps: Option<u64>,
    /// Transactions per seed.
    #[arg(long)]
    txs: Option<usize>,
    /// Fault-plan generator version (recorded seeds keep theirs).
    #[arg(long, default_value_t = vpbox_consensus_sim::PLAN_VERSION)]
    plan: u32,
    /// Length of the fault phase in virtual ms.
    #[arg(long)]
    fault_ms: Option<u64>,
    /// Signatures: `stub` (keyed SM3, fast) or `sm2` (real SM2 through vpbox-sm).
    #[arg(long, default_value = "stub")]
    crypto: String,
    /// Print one JSON line per seed as well.
    #[arg(long)]
    json: bool,
    /// Instead of seeds: measure the core's throughput (N = 4 and 8, 500-transaction
    /// batches, no faults, stubbed signature verification).
    #[arg(long)]
    throughput: bool,
}

// The simulation itself runs on virtual time; only this measurement of it reads the wall clock.
#[allow(clippy::disallowed_methods)]
fn throughput() -> anyhow::Result<()> {
    for nodes in [4usize, 8] {
        let txs = 200_000;
        let mut cfg = vpbox_consensus_sim::SimConfig::new(nodes, 1);
        cfg.params = vpbox_consensus::Params::default();
        cfg.fault_ms = 1;
        cfg.heal_ms = 3_600_000;
        cfg.max_events = u64::MAX;
        let mut w = vpbox_consensus_sim::World::new(cfg)?;
        w.network(0.0, 0.0, (1, 5));
        w.submit(txs, 0, 2_000);
        let started = std::time::Instant::now();
        let o = w.run();
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(o.violations.is_empty() && o.liveness.is_none(), "{o:?}");
        println!(
            "{}",
            serde_json::json!({"nodes": nodes, "batch_size": 500, "txs": o.committed_txs,
                "batches": o.batches, "wall_s": secs,
                "batches_per_s": o.batches as f64 / secs,
                "txs_per_s": o.committed_txs as f64 / secs,
                "note": "all N replicas, the network and the application on one core; \
                         signature verification stubbed (keyed SM3), SM3 digests real"})
        );
    }
    Ok(())
}

fn parse_range(s: &str) -> anyhow::Result<(u64, u64)> {
    match s.split_once("..") {
        Some((a, b)) => Ok((a.parse()?, b.parse()?)),
        None => {
            let a: u64 = s.parse()?;
            Ok((a, a + 1))
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.throughput {
        throughput()?;
        return Ok(ExitCode::SUCCESS);
    }
    let (a, b) = parse_range(&args.seeds)?;
    let faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let crypto = match args.crypto.as_str() {
        "stub" => vpbox_consensus_sim::CryptoKind::Stub,
        "sm2" => vpbox_consensus_sim::CryptoKind::Sm2,
        other => anyhow::bail!("unknown --crypto {other:?}: stub or sm2"),
    };
    let (mut violations, mut liveness, mut committed, mut batches) = (0u64, 0u64, 0u64, 0u64);
    let mut stuck = 0u64;
    for seed in a..b {
        let mut cfg = vpbox_consensus_sim::SimConfig::new(args.nodes, seed);
        if let Some(s) = args.steps {
            cfg.max_events = s;
        }
        if let Some(t) = args.txs {
            cfg.txs = t;
        }
        if let Some(t) = args.fault_ms {
            cfg.fault_ms = t;
        }
        cfg.plan = args.plan;
        cfg.crypto = crypto;
        let mut w = vpbox_consensus_sim::World::new(cfg)?;
        w.plan_random(faults);
        let o = w.run();
        let mut replay =
            format!("vpbox-sim --nodes {} --seeds {seed} --faults {}", args.nodes, faults.to_arg());
        if args.crypto != "stub" {
            replay.push_str(&format!(" --crypto {}", args.crypto));
        }
        if args.plan != vpbox_consensus_sim::PLAN_VERSION {
            replay.push_str(&format!(" --plan {}", args.plan));
        }
        for (flag, v) in [
            ("--steps", args.steps),
            ("--txs", args.txs.map(|t| t as u64)),
            ("--fault-ms", args.fault_ms),
        ] {
            if let Some(v) = v {
                replay.push_str(&format!(" {flag} {v}"));
            }
        }
        if !o.violations.is_empty() {
            violations += 1;
            println!("seed {seed}: SAFETY VIOLATION (replay: {replay})");
            for v in &o.violations {
                println!("  {v}");
            }
        }
        if let Some(l) = &o.liveness {
            liveness += 1;
            println!("seed {seed}: LIVENESS FAILURE (replay: {replay}): {l}");
        }
        committed += o.committed_txs as u64;
        stuck += u64::from(o.stuck_in_view_change > 0);
        batches += o.batches;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"seed": seed, "violations": o.violations.len(),
                    "liveness_failure": o.liveness.is_some(), "committed": o.committed_txs,
                    "batches": o.batches, "events": o.events, "view_changes": o.view_changes,
                    "stuck_in_view_change": o.stuck_in_view_change,
                    "end_ms": o.end_ms})
            );
        }
    }
    let _ = run_seed;
    println!(
        "{}",
        serde_json::json!({"seeds": b.saturating_sub(a), "violations": violations,
            "liveness_failures": liveness, "committed": committed, "batches": batches,
            "seeds_with_a_replica_left_in_view_change": stuck,
            "signatures": if args.crypto == "sm2" { "SM2" } else { "stubbed (keyed SM3)" }})
    );
    Ok(if violations > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
