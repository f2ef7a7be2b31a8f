//! Random seeds across N ∈ {4, 7, 8} with every fault kind: 2,000 seeds in all, split into
//! tests so that the harness runs them in parallel. More on demand:
//! `vpbox-sim --nodes N --seeds A..B --faults all`.

use vpbox_consensus_sim::{Faults, run_seed};

fn sweep(nodes: usize, seeds: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    for seed in seeds {
        let o = run_seed(nodes, seed, Faults::all()).unwrap();
        if !o.violations.is_empty() || o.liveness.is_some() {
            failures.push(format!(
                "seed {seed}: {:?} {:?} (replay: vpbox-sim --nodes {nodes} --seeds {seed} --faults all)",
                o.violations, o.liveness
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sweep_n4_all_faults_a() {
    sweep(4, 0..400);
}

#[test]
fn sweep_n4_all_faults_b() {
    sweep(4, 400..800);
}

#[test]
fn sweep_n7_all_faults_a() {
    sweep(7, 0..300);
}

#[test]
fn sweep_n7_all_faults_b() {
    sweep(7, 300..600);
}

#[test]
fn sweep_n8_all_faults_a() {
    sweep(8, 0..300);
}

#[test]
fn sweep_n8_all_faults_b() {
    sweep(8, 300..600);
}

#[test]
fn a_seed_replays_identically() {
    // Every failure must be replayable from its seed: two runs of one seed agree on every
    // counter, and a different seed gives a different run.
    let key = |o: &vpbox_consensus_sim::Outcome| {
        (o.events, o.batches, o.view_changes, o.end_ms, o.crashes, o.state_transfers)
    };
    let a = run_seed(7, 42, Faults::all()).unwrap();
    let b = run_seed(7, 42, Faults::all()).unwrap();
    let c = run_seed(7, 43, Faults::all()).unwrap();
    assert_eq!(key(&a), key(&b));
    assert_ne!(key(&a), key(&c));
}

fn sweep_reconfig(nodes: usize, seeds: std::ops::Range<u64>) {
    let faults = Faults { reconfig: true, ..Faults::all() };
    let mut failures = Vec::new();
    let mut changed = 0;
    for seed in seeds.clone() {
        let o = run_seed(nodes, seed, faults).unwrap();
        changed += u64::from(o.epoch >= 1);
        if !o.violations.is_empty() || o.liveness.is_some() {
            failures.push(format!(
                "seed {seed}: {:?} {:?} (replay: vpbox-sim --nodes {nodes} --seeds {seed} --faults all,reconfig)",
                o.violations, o.liveness
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(changed, seeds.end - seeds.start, "every seed must change its membership");
}

/// Membership changes (a node added, often one removed: the initial primary or a Byzantine
/// node) on top of every other fault kind.
#[test]
fn sweep_n4_reconfig_all_faults() {
    sweep_reconfig(4, 0..150);
}

#[test]
fn sweep_n7_reconfig_all_faults() {
    sweep_reconfig(7, 0..100);
}

/// The same random plans with real SM2 signatures on every message, proof and certificate
/// (the sweeps above stub them for speed).
#[test]
fn sweep_real_sm2_with_membership_changes() {
    let mut failures = Vec::new();
    for (nodes, seeds, reconfig) in [(4, 0..8u64, true), (7, 0..4, false), (7, 4..8, true)] {
        for seed in seeds {
            let mut cfg = vpbox_consensus_sim::SimConfig::new(nodes, seed);
            cfg.crypto = vpbox_consensus_sim::CryptoKind::Sm2;
            let mut w = vpbox_consensus_sim::World::new(cfg).unwrap();
            w.plan_random(Faults { reconfig, ..Faults::all() });
            let o = w.run();
            if !o.violations.is_empty() || o.liveness.is_some() {
                failures
                    .push(format!("N={nodes} seed {seed}: {:?} {:?}", o.violations, o.liveness));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
