//! `vpbox-sim`: runs seeded consensus simulations and reports violations.

use std::process::ExitCode;

use clap::Parser;
use vpbox_consensus_sim::{Faults, run_seed};

/// Runs N replicas under seeded faults, checks safety after every step and liveness after the
/// heal. Signature verification is stubbed (keyed SM3); digests are real SM3.
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
    /// Print one JSON line per seed as well.
    #[arg(long)]
    json: bool,
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
    let (a, b) = parse_range(&args.seeds)?;
    let faults = Faults::parse(&args.faults).map_err(anyhow::Error::msg)?;
    let (mut violations, mut liveness, mut committed, mut batches) = (0u64, 0u64, 0u64, 0u64);
    for seed in a..b {
        let mut cfg = vpbox_consensus_sim::SimConfig::new(args.nodes, seed);
        if let Some(s) = args.steps {
            cfg.max_events = s;
        }
        if let Some(t) = args.txs {
            cfg.txs = t;
        }
        let mut w = vpbox_consensus_sim::World::new(cfg)?;
        w.plan_random(faults);
        let o = w.run();
        let replay = format!(
            "vpbox-sim --nodes {} --seeds {seed} --faults {}",
            args.nodes,
            faults.to_arg()
        );
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
        batches += o.batches;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"seed": seed, "violations": o.violations.len(),
                    "liveness_failure": o.liveness.is_some(), "committed": o.committed_txs,
                    "batches": o.batches, "events": o.events, "view_changes": o.view_changes,
                    "end_ms": o.end_ms})
            );
        }
    }
    let _ = run_seed;
    println!(
        "{}",
        serde_json::json!({"seeds": b.saturating_sub(a), "violations": violations,
            "liveness_failures": liveness, "committed": committed, "batches": batches,
            "signatures": "stubbed (keyed SM3)"})
    );
    Ok(if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
