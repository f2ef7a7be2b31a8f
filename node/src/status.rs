//! What the node knows of its peers and of its own signer, for `node_getNodes` and
//! `vpbox status`: sans-IO (time is an input), owned by the driver.
//!
//! - A peer's liveness and height come only from messages that passed their checks
//!   (`Effect::Heard`): a peer heard within [`UP_MS`] is `up`, otherwise `unreachable`; its height
//!   only grows.
//! - A guard refusal of one of this node's own messages marks the node `signer-refusing` for
//!   [`REFUSING_MS`]: a node whose votes its signer refuses does not look healthy.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};
use vpbox_consensus::NodeId;

/// A peer heard this recently is up.
pub const UP_MS: u64 = 10_000;
/// A guard refusal this recent marks the node as one whose signer refuses its votes.
pub const REFUSING_MS: u64 = 60_000;

/// What this node last heard from a peer.
struct Seen {
    at: Instant,
    height: u64,
}

/// The peer view and the signer's refusals.
#[derive(Default)]
pub struct Status {
    seen: HashMap<NodeId, Seen>,
    refused: u64,
    last_refusal: Option<(Instant, SystemTime, String)>,
}

/// How a node looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerState {
    /// `up`, `unreachable` (peers), or `up`, `view-change`, `signer-refusing` (this node).
    pub status: &'static str,
    /// Milliseconds since it was last heard (`None`: never).
    pub delay: Option<u64>,
    /// The highest sequence number it was heard at.
    pub height: u64,
}

fn ms_since(now: Instant, then: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

impl Status {
    /// `from` passed its checks at `height`, at `now`.
    pub fn heard(&mut self, from: NodeId, height: u64, now: Instant) {
        let e = self.seen.entry(from).or_insert(Seen { at: now, height: 0 });
        e.at = now;
        e.height = e.height.max(height);
    }

    /// The signer's guard refused one of this node's messages.
    pub fn refused(&mut self, reason: String, now: Instant, wall: SystemTime) {
        self.refused += 1;
        self.last_refusal = Some((now, wall, reason));
    }

    /// A peer's state at `now`.
    pub fn peer(&self, id: NodeId, now: Instant) -> PeerState {
        let seen = self.seen.get(&id);
        let delay = seen.map(|s| ms_since(now, s.at));
        let status = if delay.is_some_and(|d| d < UP_MS) { "up" } else { "unreachable" };
        PeerState { status, delay, height: seen.map_or(0, |s| s.height) }
    }

    /// This node's own status at `now`.
    pub fn own(&self, now: Instant, changing_view: bool) -> &'static str {
        let refusing =
            self.last_refusal.as_ref().is_some_and(|(at, _, _)| ms_since(now, *at) < REFUSING_MS);
        if refusing {
            "signer-refusing"
        } else if changing_view {
            "view-change"
        } else {
            "up"
        }
    }

    /// `node_getNodes.signer`: the refusals since start and the last one.
    pub fn signer_json(&self) -> Value {
        json!({
            "refused": self.refused,
            "lastRefusal": self.last_refusal.as_ref().map(|(_, at, reason)| json!({
                "at": humantime::format_rfc3339_millis(*at).to_string(),
                "reason": reason,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn peers_are_up_only_while_heard_and_heights_only_grow() {
        #[allow(clippy::disallowed_methods)] // an origin; only offsets matter
        let t0 = Instant::now();
        let ms = |m| t0 + Duration::from_millis(m);
        let mut s = Status::default();
        let p = NodeId(2);
        assert_eq!(s.peer(p, t0), PeerState { status: "unreachable", delay: None, height: 0 });
        s.heard(p, 7, ms(0));
        s.heard(p, 5, ms(1_000));
        assert_eq!(s.peer(p, ms(1_500)), PeerState { status: "up", delay: Some(500), height: 7 });
        assert_eq!(s.peer(p, ms(1_000 + UP_MS)).status, "unreachable");
        assert_eq!(s.peer(NodeId(3), ms(0)).status, "unreachable", "another peer is not heard");
    }

    #[test]
    fn a_refusal_marks_the_node_for_a_minute() {
        #[allow(clippy::disallowed_methods)] // an origin; only offsets matter
        let t0 = Instant::now();
        let mut s = Status::default();
        assert_eq!(s.own(t0, false), "up");
        assert_eq!(s.own(t0, true), "view-change");
        s.refused("Conflict at prepare view 0 seq 3".into(), t0, UNIX_EPOCH);
        assert_eq!(s.own(t0 + Duration::from_millis(REFUSING_MS - 1), true), "signer-refusing");
        assert_eq!(s.own(t0 + Duration::from_millis(REFUSING_MS), false), "up");
        let j = s.signer_json();
        assert_eq!(j["refused"], 1);
        assert_eq!(j["lastRefusal"]["at"], "1970-01-01T00:00:00.000Z");
    }
}
