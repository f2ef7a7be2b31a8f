//! The simulator's integration tests: named fault scenarios, the seed sweep and the
//! regression seeds.

mod regression;
mod scenarios;
mod sweep;

use vpbox_consensus_sim::Outcome;

/// Fails the test with the run's findings unless it was safe and live.
pub(crate) fn assert_safe_and_live(o: &Outcome) {
    assert!(o.violations.is_empty(), "seed {}: safety violations: {:#?}", o.seed, o.violations);
    assert!(o.liveness.is_none(), "seed {}: liveness: {:?}", o.seed, o.liveness);
}
