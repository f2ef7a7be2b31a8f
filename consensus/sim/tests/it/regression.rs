//! Every seed that ever failed (`testdata/regression-seeds.txt`), replayed.

use vpbox_consensus_sim::{Faults, run_seed};

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
        assert_eq!(parts.len(), 3, "bad line {line:?}");
        let nodes: usize = parts[0].parse().unwrap();
        let seed: u64 = parts[1].parse().unwrap();
        let faults = Faults::parse(parts[2]).unwrap();
        let o = run_seed(nodes, seed, faults).unwrap();
        assert_safe_and_live(&o);
        n += 1;
    }
    assert!(n >= 10, "the regression file lost its seeds");
}
