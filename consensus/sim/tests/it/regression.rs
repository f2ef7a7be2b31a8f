//! Every seed that ever failed (`testdata/regression-seeds.txt`), replayed.

use vpbox_consensus_sim::{Faults, SimConfig, World};

use crate::assert_safe_and_live;

#[test]
fn regression_seeds_stay_fixed() {
    let text = include_str!("../../testdata/regression-seeds.txt");
    let mut n = 0;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert!(parts.len() == 4 || parts.len() == 6, "bad line {line:?}");
        let nodes: usize = parts[0].parse().unwrap();
        let seed: u64 = parts[1].parse().unwrap();
        let faults = Faults::parse(parts[2]).unwrap();
        let mut cfg = SimConfig::new(nodes, seed);
        cfg.plan = parts[3].parse().unwrap();
        if parts.len() == 6 {
            cfg.txs = parts[4].parse().unwrap();
            cfg.fault_ms = parts[5].parse().unwrap();
        }
        let mut w = World::new(cfg).unwrap();
        w.plan_random(faults);
        let o = w.run();
        assert_safe_and_live(&o);
        n += 1;
    }
    assert!(n >= 10, "the regression file lost its seeds");
}
