//! `vpbox-node-sim`: sweeps seeds over the real node host and reports violations.
//!
//! ```text
//! vpbox-node-sim --nodes 4 --seeds 0..500            # every fault kind and attack
//! vpbox-node-sim --nodes 7 --seeds 17..18 --verbose  # replay one seed
//! ```
//! Exit status 1 if any seed violated an invariant; the failing seeds are printed, ready to
//! be added to the regression list in `node/sim/tests/sweep.rs`.

use std::process::ExitCode;

use clap::Parser;
use vpbox_node_sim::{Faults, SimConfig, run_seed};

#[derive(Parser)]
#[command(about = "Runs the real node host under seeded faults and attacks")]
struct Args {
    /// Nodes in the consortium.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Seeds, as START..END (END excluded).
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Client transactions per run.
    #[arg(long, default_value_t = 40)]
    txs: usize,
    /// Real SM2 signatures instead of keyed tags.
    #[arg(long)]
    sm2: bool,
    /// Batch transactions of 10,000 pairs, submitted together while a node is cut off (from
    /// seven on, their block is fetched in parts). With it, no crashes and no other partition
    /// (either could bring the node the block another way).
    #[arg(long, default_value_t = 0)]
    big: usize,
    /// No faults or attacks (a baseline).
    #[arg(long)]
    calm: bool,
    /// Print every seed's report.
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some((a, b)) = args.seeds.split_once("..") else {
        eprintln!("--seeds: START..END");
        return ExitCode::from(2);
    };
    let (Ok(start), Ok(end)) = (a.parse::<u64>(), b.parse::<u64>()) else {
        eprintln!("--seeds: START..END");
        return ExitCode::from(2);
    };
    let faults = match (args.calm, args.big) {
        (true, _) => Faults::default(),
        (false, 0) => Faults::all(),
        (false, _) => Faults { crash: false, partition: false, ..Faults::all() },
    };
    let cfg = SimConfig { nodes: args.nodes, txs: args.txs, faults, sm2: args.sm2, big: args.big };
    let mut failed = Vec::new();
    let mut crashes = 0;
    for seed in start..end {
        match run_seed(&cfg, seed) {
            Ok(r) => {
                crashes += r.crashes;
                if args.verbose || !r.violations.is_empty() {
                    println!("{r:?}");
                }
                if !r.violations.is_empty() {
                    failed.push(seed);
                }
            }
            Err(e) => {
                println!("seed {seed}: could not run: {e:#}");
                failed.push(seed);
            }
        }
    }
    println!(
        "{} seeds, N = {}, {} crashes, {} failing: {failed:?}",
        end.saturating_sub(start),
        args.nodes,
        crashes,
        failed.len()
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
