//! The proxy's limits: sizes, deadlines, connection caps and rates, with their defaults. It is
//! meant to be the `[proxy]` table of the box's TOML configuration: every field may be left
//! out (its default applies), an unknown one is an error, and zero is refused where it would
//! make no sense.
//!
//! ```toml
//! [proxy]
//! # At least 1.3 MB: a batch of 10,000 pairs (what `anchor put --file` sends) in hex.
//! body_bytes_max = 2097152
//! request_deadline_ms = 5000
//!
//! [proxy.connections]
//! client_max = 16
//!
//! [proxy.rate]
//! per_s = 500
//! ```

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use serde::Deserialize;

use crate::conn::ConnectionCaps;
use crate::rate::RateConfig;

/// Sizes, deadlines, caps and rates, each with a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The request line and headers of one request, in bytes; more is refused (HTTP 431) and
    /// the connection closed. Default 16 KiB, as the node's.
    pub header_bytes_max: NonZeroU32,
    /// One request body, in bytes, from its `Content-Length` before it is read; more is
    /// refused (HTTP 413, -32005). Default 4 MiB, as the node's: a larger one would reach the
    /// node only to be refused there. It bounds [`crate::classify`]'s work.
    pub body_bytes_max: NonZeroU32,
    /// From a connection's accept to the end of its TLS handshake. Default 5 s.
    pub handshake_deadline_ms: NonZeroU64,
    /// Connections from one source address in their TLS handshake at once; one more is
    /// closed at once. Default 32: a POSP server opening its pool at once fits; one address
    /// cannot fill the listener's handshake slots (256, the oldest evicted past them).
    pub handshakes_per_source: NonZeroU32,
    /// From a request's first byte until its head and body are whole (the slowloris defence;
    /// HTTP 408), and the longest a kept-alive connection may sit idle before its next
    /// request's head (hyper's header timer runs from the end of the last answer). Default
    /// 10 s, as the node's body deadline.
    pub request_deadline_ms: NonZeroU64,
    /// From a request's head until the node's answer is whole (the body's time included,
    /// itself at most `request_deadline_ms`). Default 45 s: a body's 10 s, then the 30 s an
    /// `anchor_put` may wait for its commit, and a margin.
    pub answer_deadline_ms: NonZeroU64,
    /// Connections per listener and per client.
    pub connections: ConnectionCaps,
    /// Per-client token buckets.
    pub rate: RateConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_bytes_max: NonZeroU32::MIN.saturating_add((16 << 10) - 1),
            body_bytes_max: NonZeroU32::MIN.saturating_add((4 << 20) - 1),
            handshake_deadline_ms: NonZeroU64::MIN.saturating_add(5_000 - 1),
            handshakes_per_source: NonZeroU32::MIN.saturating_add(32 - 1),
            request_deadline_ms: NonZeroU64::MIN.saturating_add(10_000 - 1),
            answer_deadline_ms: NonZeroU64::MIN.saturating_add(45_000 - 1),
            connections: ConnectionCaps::default(),
            rate: RateConfig::default(),
        }
    }
}

impl Limits {
    /// [`Limits::handshake_deadline_ms`] as a duration.
    pub fn handshake_deadline(&self) -> Duration {
        Duration::from_millis(self.handshake_deadline_ms.get())
    }

    /// [`Limits::request_deadline_ms`] as a duration.
    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.request_deadline_ms.get())
    }

    /// [`Limits::answer_deadline_ms`] as a duration.
    pub fn answer_deadline(&self) -> Duration {
        Duration::from_millis(self.answer_deadline_ms.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Box_ {
        proxy: Limits,
    }

    fn parse(toml_text: &str) -> Result<Limits, toml::de::Error> {
        toml::from_str::<Box_>(toml_text).map(|b| b.proxy)
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let l = Limits::default();
        assert_eq!(l.header_bytes_max.get(), 16_384);
        assert_eq!(l.body_bytes_max.get(), 4_194_304);
        assert_eq!(l.handshake_deadline(), Duration::from_secs(5));
        assert_eq!(l.handshakes_per_source.get(), 32);
        assert_eq!(l.request_deadline(), Duration::from_secs(10));
        assert_eq!(l.answer_deadline(), Duration::from_secs(45));
        assert_eq!((l.connections.listener_max.get(), l.connections.client_max.get()), (1024, 64));
        assert_eq!((l.rate.per_s.get(), l.rate.burst.get()), (50_000, 100_000));
        assert_eq!(l.rate.clients_max.get(), 10_000);
        // A full anchor_putBatch must fit the default bucket.
        assert!(l.rate.burst.get() >= vpbox_ledger::tx::BATCH_MAX);
        // Counted from the request's start, the answer deadline covers the slowest body and
        // then the node's longest wait for a commit (30 s).
        assert!(l.answer_deadline() > l.request_deadline() + Duration::from_secs(30));
    }

    #[test]
    fn an_empty_table_is_all_defaults_and_fields_override_one_by_one() {
        assert_eq!(parse("[proxy]\n").unwrap(), Limits::default());
        let l = parse(
            "[proxy]\nbody_bytes_max = 1048576\nrequest_deadline_ms = 5000\n\
             [proxy.connections]\nclient_max = 16\n[proxy.rate]\nper_s = 500\n",
        )
        .unwrap();
        let want = Limits {
            body_bytes_max: NonZeroU32::new(1 << 20).unwrap(),
            request_deadline_ms: NonZeroU64::new(5_000).unwrap(),
            connections: ConnectionCaps {
                client_max: NonZeroU32::new(16).unwrap(),
                ..ConnectionCaps::default()
            },
            rate: RateConfig { per_s: NonZeroU32::new(500).unwrap(), ..RateConfig::default() },
            ..Limits::default()
        };
        assert_eq!(l, want);
    }

    #[test]
    fn unknown_fields_zeros_and_wrong_types_are_refused() {
        for bad in [
            "[proxy]\nbody_max = 1\n",
            "[proxy.rate]\nburst_size = 5\n",
            "[proxy.connections]\nmax = 5\n",
            "[proxy]\nbody_bytes_max = 0\n",
            "[proxy.rate]\nper_s = 0\n",
            "[proxy.rate]\nclients_max = 0\n",
            "[proxy]\nrequest_deadline_ms = -1\n",
            "[proxy]\nrequest_deadline_ms = \"10s\"\n",
            "[proxy]\nheader_bytes_max = 4294967296\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
