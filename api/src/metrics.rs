//! A histogram of durations as the node reports it in `node_getNodes.metrics` and the proxy
//! renders it for Prometheus: fixed buckets in milliseconds, counts, and the sum.

use std::time::Duration;

use serde_json::{Value, json};

/// The histogram's upper bounds in milliseconds (Prometheus `le`, ending in +Inf): a box
/// commits in tens of milliseconds when healthy; seconds mean a view change or an overload.
pub const BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// A histogram of durations, as Prometheus reads one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Observations at or below each bound of [`BUCKETS_MS`], not cumulative; the last counts
    /// those above every bound.
    counts: [u64; BUCKETS_MS.len() + 1],
    /// The sum of all observations, in microseconds.
    sum_us: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1_000.0;
        let i = BUCKETS_MS.iter().position(|b| ms <= *b as f64).unwrap_or(BUCKETS_MS.len());
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// As JSON: `{"bucketsMs", "cumulative", "count", "sumMs"}`: `cumulative[i]` counts the
    /// observations at or below `bucketsMs[i]` (Prometheus `le`); `count` all of them.
    pub fn json(&self) -> Value {
        let mut running = 0;
        let cumulative: Vec<u64> = self.counts[..BUCKETS_MS.len()]
            .iter()
            .map(|c| {
                running += c;
                running
            })
            .collect();
        json!({
            "bucketsMs": BUCKETS_MS,
            "cumulative": cumulative,
            "count": self.count(),
            "sumMs": self.sum_us as f64 / 1_000.0,
        })
    }
}

impl Histogram {
    /// Reads the JSON of [`Histogram::json`] (as a node sent it): `None` unless its buckets
    /// are [`BUCKETS_MS`] and its counts never decrease.
    pub fn from_json(v: &Value) -> Option<Self> {
        let bounds: Vec<u64> =
            v.get("bucketsMs")?.as_array()?.iter().map(Value::as_u64).collect::<Option<_>>()?;
        if bounds != BUCKETS_MS {
            return None;
        }
        let cumulative: Vec<u64> =
            v.get("cumulative")?.as_array()?.iter().map(Value::as_u64).collect::<Option<_>>()?;
        let count = v.get("count")?.as_u64()?;
        let sum_ms = v.get("sumMs")?.as_f64()?;
        if cumulative.len() != BUCKETS_MS.len() || sum_ms.is_nan() || sum_ms < 0.0 {
            return None;
        }
        let mut h = Self::default();
        let mut below = 0;
        for (i, c) in cumulative.iter().chain(std::iter::once(&count)).enumerate() {
            h.counts[i] = c.checked_sub(below)?;
            below = *c;
        }
        h.sum_us = (sum_ms * 1_000.0).round() as u64;
        Some(h)
    }

    /// The Prometheus text of the histogram `name` (in seconds, as Prometheus names its
    /// durations), its `_bucket` lines, `_sum` and `_count`, each with `labels` (`k="v"`
    /// pairs, already escaped, or empty).
    pub fn prometheus(&self, name: &str, labels: &str) -> String {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut out = String::new();
        let mut running = 0;
        for (bound, c) in BUCKETS_MS.iter().zip(&self.counts) {
            running += c;
            let le = *bound as f64 / 1_000.0;
            out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"{le}\"}} {running}\n"));
        }
        out.push_str(&format!("{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}\n", self.count()));
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        out.push_str(&format!("{name}_sum{braces} {}\n", self.sum_us as f64 / 1e6));
        out.push_str(&format!("{name}_count{braces} {}\n", self.count()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_fall_in_the_first_bucket_that_holds_them_and_sum_up() {
        let mut h = Histogram::default();
        for ms in [0, 5, 6, 50, 51, 10_000, 10_001, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        h.observe(Duration::from_micros(5_001));
        let j = h.json();
        // le=5: 0 and 5; le=10: +6 and 5.001; le=50: +50; le=100: +51; … le=10000: +10000.
        assert_eq!(j["cumulative"], json!([2, 4, 4, 5, 6, 6, 6, 6, 6, 6, 7]));
        assert_eq!(j["count"], 9, "two above every bound count in the total only");
        assert_eq!(
            j["sumMs"],
            json!(0.0 + 5.0 + 6.0 + 50.0 + 51.0 + 10_000.0 + 10_001.0 + 60_000.0 + 5.001)
        );
        assert_eq!(
            j["bucketsMs"].as_array().unwrap().len(),
            j["cumulative"].as_array().unwrap().len()
        );
    }
}
