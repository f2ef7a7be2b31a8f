//! Refused connections, logged without letting a flood flood the log (sans-IO: the host gives
//! the time). Within each window, the first refusal of each reason is logged whole — who, and
//! why — and the others of that reason are only counted; when the window is over, the counts
//! are logged as one summary line. So a ClientHello flood or a thousand slowloris connections
//! cost a line per reason per window, while a lone refusal (a POSP whose certificate was just
//! revoked, a peer with a wrong name) is still logged at once, with its address. Every refusal
//! is counted in `/metrics` whatever is logged.
//!
//! Memory: one counter per reason; reasons are the metrics' fixed labels.

use std::collections::BTreeMap;

/// How long a window lasts: 10 s (the P2P listener's shed line had this period already).
pub const WINDOW_MS: u64 = 10_000;

/// The refusals of one listener.
#[derive(Debug, Default)]
pub struct Refusals {
    /// When the current window began, if one is open.
    since_ms: Option<u64>,
    /// Refusals in it by reason, the first of each (logged whole) included.
    counts: BTreeMap<&'static str, u64>,
}

/// A closed window's refusals by reason, those logged whole excluded: what the summary line
/// says. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// When the window began (milliseconds, the host's clock).
    pub since_ms: u64,
    /// The refusals not logged whole, by reason.
    pub unlogged: BTreeMap<&'static str, u64>,
}

impl Refusals {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection refused for `reason` at `now_ms`: whether to log it whole, and the
    /// summary of the window it closed, if it closed one with anything unlogged.
    pub fn refused(&mut self, reason: &'static str, now_ms: u64) -> (bool, Option<Summary>) {
        let summary = self.close_if_over(now_ms);
        let since = *self.since_ms.get_or_insert(now_ms);
        debug_assert!(since <= now_ms);
        let n = self.counts.entry(reason).or_insert(0);
        *n += 1;
        (*n == 1, summary)
    }

    /// The summary of the window, once it is over (for the host's timer, so the last window
    /// of a flood is reported without waiting for another refusal).
    pub fn tick(&mut self, now_ms: u64) -> Option<Summary> {
        self.close_if_over(now_ms)
    }

    fn close_if_over(&mut self, now_ms: u64) -> Option<Summary> {
        let since_ms = self.since_ms?;
        if now_ms.saturating_sub(since_ms) < WINDOW_MS {
            return None;
        }
        self.since_ms = None;
        let unlogged: BTreeMap<&'static str, u64> = std::mem::take(&mut self.counts)
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(r, n)| (r, n - 1))
            .collect();
        (!unlogged.is_empty()).then_some(Summary { since_ms, unlogged })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_reason_is_logged_and_the_rest_summed_once_the_window_is_over() {
        let mut r = Refusals::new();
        assert_eq!(r.refused("tls", 1_000), (true, None));
        assert_eq!(r.refused("tls", 1_001), (false, None));
        assert_eq!(r.refused("revoked", 2_000), (true, None), "another reason: logged too");
        for t in 0..997 {
            assert_eq!(r.refused("tls", 3_000 + t), (false, None));
        }
        assert_eq!(r.tick(1_000 + WINDOW_MS - 1), None, "the window is not over");
        let summary = Summary { since_ms: 1_000, unlogged: [("tls", 998)].into() };
        assert_eq!(r.tick(1_000 + WINDOW_MS), Some(summary));
        assert_eq!(r.tick(1_000 + 3 * WINDOW_MS), None, "nothing since");
        // The next refusal opens a window of its own, and is logged whole again.
        assert_eq!(r.refused("tls", 50_000), (true, None));
        assert_eq!(r.refused("tls", 50_001), (false, None));
        // A refusal after the window closes it (no timer needed) and starts the next.
        let (logged, closed) = r.refused("tls", 50_000 + WINDOW_MS);
        assert!(logged);
        assert_eq!(closed, Some(Summary { since_ms: 50_000, unlogged: [("tls", 1)].into() }));
    }

    #[test]
    fn a_window_of_lone_refusals_needs_no_summary() {
        let mut r = Refusals::new();
        for (i, reason) in ["tls", "revoked", "timeout"].into_iter().enumerate() {
            assert_eq!(r.refused(reason, i as u64), (true, None));
        }
        assert_eq!(r.tick(WINDOW_MS + 5), None, "each was logged whole");
        assert_eq!(r.refused("tls", WINDOW_MS + 6), (true, None), "a new window");
    }
}
