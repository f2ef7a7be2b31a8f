//! Per-client token buckets. Sans-IO: the time is the caller's monotonic clock in
//! milliseconds, passed to every call.
//!
//! Each client (the identity its certificate was admitted as) has a bucket of
//! [`RateConfig::burst`] tokens, refilled at [`RateConfig::per_s`] tokens a second; a body
//! takes its cost ([`crate::Envelope::cost`]: 1 a request, the pairs of an `anchor_putBatch`)
//! all at once or not at all. A refusal says how long until the bucket holds enough, for a
//! `Retry-After`; a cost above the whole bucket can never pass and says so instead.
//!
//! Tokens are counted in thousandths, so the refill of any whole number of milliseconds is
//! exact, with no floating point. A clock that steps back refills nothing and takes nothing
//! back.
//!
//! Memory: at most [`RateConfig::clients_max`] clients are tracked; when a new one comes and
//! the table is full, the least recently seen is forgotten. A forgotten client that returns
//! starts with a full bucket, so the bound should exceed the number of certificates active at
//! once (identities come from admitted certificates: a client cannot make new ones at will).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::num::{NonZeroU32, NonZeroUsize};

use serde::Deserialize;

/// Thousandths of a token in a token.
const MILLI: u64 = 1000;

/// The buckets' parameters: a `[proxy.rate]` table of the box's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Tokens added each second: the sustained rate a client may keep, in requests (or
    /// anchored pairs) a second. Default 50,000: a POSP's day-end batch of 250,000 slips
    /// passes in seconds (the node commits some 30,000 a second through the proxies), while
    /// one client cannot keep the node busy alone for long.
    pub per_s: NonZeroU32,
    /// The bucket's size: the most a client may spend at once. Default 100,000 — ten full
    /// `anchor_putBatch` calls (10,000 pairs each), so a day-end batch passes whole.
    pub burst: NonZeroU32,
    /// The most clients tracked at once; the least recently seen is forgotten first.
    /// Default 10,000.
    pub clients_max: NonZeroUsize,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            per_s: NonZeroU32::MIN.saturating_add(49_999),
            burst: NonZeroU32::MIN.saturating_add(99_999),
            clients_max: NonZeroUsize::MIN.saturating_add(9_999),
        }
    }
}

/// Why a cost was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateRefusal {
    /// Not enough tokens now; enough after `retry_after_ms` if nothing else is taken.
    #[error("rate limited: retry in {retry_after_ms} ms")]
    Wait {
        /// Milliseconds until the bucket holds the cost.
        retry_after_ms: u64,
    },
    /// The cost exceeds the whole bucket: it can never pass; split it.
    #[error("a cost of {cost} exceeds the burst of {burst}: split it")]
    OverBurst {
        /// What was asked.
        cost: u64,
        /// The bucket's size.
        burst: u64,
    },
}

impl RateRefusal {
    /// Whole seconds to wait, rounded up, at least 1: a `Retry-After` header's value. `None`
    /// for a cost that can never pass.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::Wait { retry_after_ms } => Some(retry_after_ms.div_ceil(1000).max(1)),
            Self::OverBurst { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token held at `at_ms`.
    milli: u64,
    /// When `milli` was last brought up to date.
    at_ms: u64,
    /// Its position in the recency order (0: not placed yet).
    seen: u64,
}

impl Bucket {
    /// Thousandths held at `now_ms`.
    fn level(&self, config: &RateConfig, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        // Tokens a second are thousandths a millisecond.
        let refill = elapsed.saturating_mul(u64::from(config.per_s.get()));
        self.milli.saturating_add(refill).min(capacity(config))
    }
}

fn capacity(config: &RateConfig) -> u64 {
    u64::from(config.burst.get()) * MILLI
}

/// The buckets of every client seen, up to [`RateConfig::clients_max`].
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    config: RateConfig,
    buckets: HashMap<K, Bucket>,
    /// The clients by when each was last seen, oldest first.
    order: BTreeMap<u64, K>,
    /// The last recency stamp given.
    stamp: u64,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// No client seen yet.
    pub fn new(config: RateConfig) -> Self {
        Self { config, buckets: HashMap::new(), order: BTreeMap::new(), stamp: 0 }
    }

    /// The parameters.
    pub fn config(&self) -> &RateConfig {
        &self.config
    }

    /// Takes `cost` tokens from `client`'s bucket at `now_ms`, all or none. A client not seen
    /// before (or forgotten) starts full. Every call but an [`RateRefusal::OverBurst`] counts as
    /// the client being seen.
    pub fn take(&mut self, client: &K, cost: u64, now_ms: u64) -> Result<(), RateRefusal> {
        let burst = u64::from(self.config.burst.get());
        if cost > burst {
            return Err(RateRefusal::OverBurst { cost, burst });
        }
        let config = self.config;
        let bucket = self.touch(client, now_ms);
        let level = bucket.level(&config, now_ms);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        let need = cost * MILLI;
        if level >= need {
            bucket.milli = level - need;
            Ok(())
        } else {
            bucket.milli = level;
            Err(RateRefusal::Wait { retry_after_ms: wait_ms(&config, need - level) })
        }
    }

    /// Milliseconds from `now_ms` until `client`'s bucket holds `cost` tokens (0: it does now),
    /// if nothing is taken meanwhile; `None` if it never will (`cost` above the burst).
    /// Looking does not count as the client being seen.
    pub fn wait_ms(&self, client: &K, cost: u64, now_ms: u64) -> Option<u64> {
        if cost > u64::from(self.config.burst.get()) {
            return None;
        }
        let level = self
            .buckets
            .get(client)
            .map_or(capacity(&self.config), |b| b.level(&self.config, now_ms));
        Some(wait_ms(&self.config, (cost * MILLI).saturating_sub(level)))
    }

    /// Whole tokens `client` holds at `now_ms`, if it is tracked.
    pub fn tokens(&self, client: &K, now_ms: u64) -> Option<u64> {
        self.buckets.get(client).map(|b| b.level(&self.config, now_ms) / MILLI)
    }

    /// How many clients are tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// `client`'s bucket, made the most recently seen; a new one starts full, and takes the
    /// place of the least recently seen when the table is full.
    fn touch(&mut self, client: &K, now_ms: u64) -> &mut Bucket {
        if !self.buckets.contains_key(client) && self.buckets.len() >= self.config.clients_max.get()
        {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.buckets.remove(&oldest);
            }
        }
        self.stamp += 1;
        let full = Bucket { milli: capacity(&self.config), at_ms: now_ms, seen: 0 };
        let bucket = self.buckets.entry(client.clone()).or_insert(full);
        if bucket.seen != 0 {
            self.order.remove(&bucket.seen);
        }
        bucket.seen = self.stamp;
        self.order.insert(self.stamp, client.clone());
        bucket
    }
}

/// Milliseconds for `deficit` thousandths to refill, rounded up.
fn wait_ms(config: &RateConfig, deficit: u64) -> u64 {
    deficit.div_ceil(u64::from(config.per_s.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_s: u32, burst: u32, clients_max: usize) -> RateConfig {
        RateConfig {
            per_s: NonZeroU32::new(per_s).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            clients_max: NonZeroUsize::new(clients_max).unwrap(),
        }
    }

    #[test]
    fn the_burst_is_spent_then_refilled_by_passing_time() {
        let mut rl = RateLimiter::new(config(10, 5, 8));
        for _ in 0..5 {
            assert_eq!(rl.take(&"posp", 1, 1_000), Ok(()));
        }
        assert_eq!(rl.tokens(&"posp", 1_000), Some(0));
        // 10 a second is one every 100 ms.
        assert_eq!(rl.take(&"posp", 1, 1_000), Err(RateRefusal::Wait { retry_after_ms: 100 }));
        assert_eq!(rl.take(&"posp", 1, 1_099), Err(RateRefusal::Wait { retry_after_ms: 1 }));
        assert_eq!(rl.take(&"posp", 1, 1_100), Ok(()));
        assert_eq!(rl.take(&"posp", 1, 1_100), Err(RateRefusal::Wait { retry_after_ms: 100 }));
        // A long pause fills the bucket to the burst, not beyond.
        assert_eq!(rl.tokens(&"posp", 1_000_000), Some(5));
        assert_eq!(rl.take(&"posp", 5, 1_000_000), Ok(()));
        assert_eq!(rl.take(&"posp", 1, 1_000_000), Err(RateRefusal::Wait { retry_after_ms: 100 }));
    }

    #[test]
    fn a_cost_is_taken_whole_or_not_at_all_and_the_wait_is_for_all_of_it() {
        let mut rl = RateLimiter::new(config(1000, 10_000, 8));
        assert_eq!(rl.take(&1u8, 9_000, 0), Ok(()));
        // 1,000 left; 3,000 asked: 2,000 more take two seconds.
        assert_eq!(rl.take(&1u8, 3_000, 0), Err(RateRefusal::Wait { retry_after_ms: 2_000 }));
        assert_eq!(rl.tokens(&1u8, 0), Some(1_000), "nothing taken");
        assert_eq!(rl.wait_ms(&1u8, 3_000, 0), Some(2_000));
        assert_eq!(rl.wait_ms(&1u8, 3_000, 1_500), Some(500));
        assert_eq!(rl.take(&1u8, 3_000, 1_999), Err(RateRefusal::Wait { retry_after_ms: 1 }));
        assert_eq!(rl.take(&1u8, 3_000, 2_000), Ok(()));
    }

    #[test]
    fn the_wait_rounds_up_and_retry_after_is_at_least_a_second() {
        // 3 a second: a token every 333⅓ ms.
        let mut rl = RateLimiter::new(config(3, 1, 8));
        assert_eq!(rl.take(&0, 1, 0), Ok(()));
        let refusal = rl.take(&0, 1, 0).unwrap_err();
        assert_eq!(refusal, RateRefusal::Wait { retry_after_ms: 334 });
        assert_eq!(refusal.retry_after_s(), Some(1));
        assert_eq!(rl.take(&0, 1, 333), Err(RateRefusal::Wait { retry_after_ms: 1 }));
        assert_eq!(rl.take(&0, 1, 334), Ok(()));
        assert_eq!(RateRefusal::Wait { retry_after_ms: 2_001 }.retry_after_s(), Some(3));
        assert_eq!(RateRefusal::Wait { retry_after_ms: 0 }.retry_after_s(), Some(1));
    }

    #[test]
    fn a_cost_above_the_burst_never_passes() {
        let mut rl = RateLimiter::new(config(1000, 10_000, 8));
        assert_eq!(rl.take(&0, 10_000, 0), Ok(()), "exactly the burst passes from full");
        let refusal = rl.take(&0, 10_001, 1_000_000).unwrap_err();
        assert_eq!(refusal, RateRefusal::OverBurst { cost: 10_001, burst: 10_000 });
        assert_eq!(refusal.retry_after_s(), None);
        assert_eq!(rl.wait_ms(&0, 10_001, 0), None);
        assert_eq!(rl.tokens(&0, 1_000_000), Some(10_000), "nothing taken");
    }

    #[test]
    fn clients_have_their_own_buckets() {
        let mut rl = RateLimiter::new(config(1, 2, 8));
        assert_eq!(rl.take(&"a", 2, 0), Ok(()));
        assert!(rl.take(&"a", 1, 0).is_err());
        assert_eq!(rl.take(&"b", 2, 0), Ok(()), "b is not a's");
        assert_eq!(rl.wait_ms(&"c", 2, 0), Some(0), "an unseen client is full");
        assert_eq!(rl.tokens(&"c", 0), None, "and looking did not track it");
    }

    #[test]
    fn the_least_recently_seen_client_is_forgotten_at_the_bound() {
        let mut rl = RateLimiter::new(config(1, 3, 3));
        for c in [1, 2, 3] {
            rl.take(&c, 3, 0).unwrap();
        }
        // 1 is seen again: 2 is now the oldest.
        assert!(rl.take(&1, 1, 0).is_err());
        rl.take(&4, 1, 0).unwrap();
        assert_eq!(rl.len(), 3);
        assert_eq!(rl.tokens(&2, 0), None, "2 forgotten");
        assert_eq!(rl.tokens(&1, 0), Some(0), "1 kept, still empty");
        assert_eq!(rl.tokens(&3, 0), Some(0));
        // A forgotten client returns with a full bucket (the bound's documented price), and
        // pushes out the next oldest, 3.
        assert_eq!(rl.take(&2, 3, 0), Ok(()));
        assert_eq!(rl.tokens(&3, 0), None);
        assert_eq!(rl.len(), 3);
    }

    #[test]
    fn memory_stays_within_the_bound_under_a_stream_of_new_clients() {
        let mut rl = RateLimiter::new(config(5, 5, 100));
        for c in 0..10_000u32 {
            let _ = rl.take(&c, 1, u64::from(c));
            assert!(rl.len() <= 100);
            assert_eq!(rl.order.len(), rl.buckets.len());
        }
        // The last hundred are the ones kept.
        assert!((9_900..10_000).all(|c| rl.tokens(&c, 10_000).is_some()));
        assert_eq!(rl.tokens(&9_899, 10_000), None);
    }

    #[test]
    fn a_clock_that_steps_back_refills_nothing() {
        let mut rl = RateLimiter::new(config(10, 2, 8));
        rl.take(&0, 2, 5_000).unwrap();
        assert!(rl.take(&0, 1, 1_000).is_err(), "earlier: nothing refilled");
        // Refill counts from the latest time seen, not from the earlier one.
        assert!(rl.take(&0, 1, 5_099).is_err());
        assert_eq!(rl.take(&0, 1, 5_100), Ok(()));
    }

    #[test]
    fn huge_times_and_rates_saturate_instead_of_overflowing() {
        let mut rl = RateLimiter::new(config(u32::MAX, u32::MAX, 1));
        assert_eq!(rl.take(&0, u64::from(u32::MAX), 0), Ok(()));
        assert_eq!(rl.tokens(&0, u64::MAX), Some(u64::from(u32::MAX)));
        assert_eq!(rl.take(&0, 1, u64::MAX), Ok(()));
    }
}
