//! The services under systemd (`Type=notify`, `WatchdogSec=`): readiness once a service
//! serves, and a watchdog fed only while the service shows it is alive. The sd_notify protocol
//! is the `sd-notify` crate's; outside systemd (no `NOTIFY_SOCKET`) nothing is sent.
//!
//! What "alive" means for each service is a proof from its own serving path, not a timer:
//! - the signer: its accept loop came round ([`Heartbeat::beat`] on each turn);
//! - the node: its JSON-RPC socket answered `block_getChainHeight` (the RPC thread and a read
//!   of the ledger), probed from the watchdog thread. Consensus progress is not asked: a node
//!   that cannot commit because the consortium lacks a quorum is a monitoring alarm, not a
//!   reason to restart it;
//! - the proxy: its main runtime ran a task (`vpbox_proxy::net::Supervisor::alive`), which
//!   also runs the trust wait, the P2P links and the API's accepting task.
//!
//! The feeder sends `WATCHDOG=1` every quarter of the interval systemd set, while the last
//! beat is younger than half of it; a service that stops beating is killed by systemd (and
//! restarted, `Restart=on-failure`) within the interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// When the service last showed it was alive.
pub(crate) struct Heartbeat {
    origin: Instant,
    /// Milliseconds since `origin`, plus one (zero: never).
    last: AtomicU64,
}

impl Heartbeat {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { origin: Instant::now(), last: AtomicU64::new(0) })
    }

    /// The service is alive now.
    pub(crate) fn beat(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// How long since the last beat; none if there was none.
    fn age(&self) -> Option<Duration> {
        let last = self.last.load(Ordering::Relaxed).checked_sub(1)?;
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(now.saturating_sub(last)))
    }
}

/// Tells systemd the service is ready, with a status line (`systemctl status` shows it).
pub(crate) fn ready(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The watchdog interval systemd set for this process, if any: `WATCHDOG_USEC`, unless
/// `WATCHDOG_PID` names another process (sd_watchdog_enabled(3); the `sd-notify` crate's
/// version also refuses an unset `WATCHDOG_PID`, which systemd does not always set).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok().filter(|u| *u > 0)?;
    match std::env::var("WATCHDOG_PID") {
        Ok(pid) if pid.parse::<u32>().ok() != Some(std::process::id()) => None,
        _ => Some(Duration::from_micros(usec)),
    }
}

/// How often a service should beat: an eighth of its watchdog interval, at most a second.
pub(crate) fn beat_every() -> Duration {
    watchdog_interval().map_or(Duration::from_secs(1), |i| (i / 8).min(Duration::from_secs(1)))
}

/// Whether to feed the watchdog of `interval` when the last beat is `age` old (none: never).
fn feeds(age: Option<Duration>, interval: Duration) -> bool {
    age.is_some_and(|a| a < interval / 2)
}

/// Starts the feeder if systemd asked for a watchdog: every quarter interval it calls
/// `probe` (which may beat `heartbeat` itself), then feeds systemd if the last beat is
/// younger than half the interval.
pub(crate) fn watchdog(heartbeat: Arc<Heartbeat>, probe: impl Fn(&Heartbeat) + Send + 'static) {
    let Some(interval) = watchdog_interval() else { return };
    let _ = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        loop {
            probe(&heartbeat);
            if feeds(heartbeat.age(), interval) {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
            std::thread::sleep(interval / 4);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_only_while_the_last_beat_is_younger_than_half_the_interval() {
        let interval = Duration::from_secs(30);
        assert!(feeds(Some(Duration::ZERO), interval));
        assert!(feeds(Some(Duration::from_millis(14_999)), interval));
        assert!(!feeds(Some(Duration::from_secs(15)), interval));
        assert!(!feeds(None, interval), "a service that never beat is not fed");
    }

    #[test]
    fn a_heartbeat_ages_from_its_last_beat_and_none_is_never() {
        let h = Heartbeat::new();
        assert_eq!(h.age(), None);
        h.beat();
        assert!(h.age().unwrap() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.age().unwrap() >= Duration::from_millis(30));
        h.beat();
        assert!(h.age().unwrap() < Duration::from_millis(30));
    }
}
