//! The node's log lines: `TIME vpbox-node: MESSAGE`, TIME in RFC 3339 UTC with milliseconds.
//!
//! journald stamps what it receives, but outside systemd (the local cluster's `node.log`, a
//! shell) the line's own stamp is the only record of when something happened, and UTC reads
//! the same at every bank.

use std::time::SystemTime;

/// The line for `msg`, stamped now.
pub fn line(msg: &str) -> String {
    #[allow(clippy::disallowed_methods)] // a log stamp is I/O, like writing the line
    let now = SystemTime::now();
    stamped(now, msg)
}

fn stamped(at: SystemTime, msg: &str) -> String {
    format!("{} vpbox-node: {msg}", humantime::format_rfc3339_millis(at))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_line_starts_with_an_rfc3339_utc_timestamp() {
        let l = line("entered view 3 (primary node 4)");
        let (stamp, rest) = l.split_once(' ').unwrap();
        let at = humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("{stamp:?}: {e}"));
        assert!(stamp.ends_with('Z'), "UTC: {stamp}");
        #[allow(clippy::disallowed_methods)]
        let age = SystemTime::now().duration_since(at).unwrap();
        assert!(age < Duration::from_secs(60), "stamped now, not {stamp}");
        assert_eq!(rest, "vpbox-node: entered view 3 (primary node 4)");
        let fixed = stamped(UNIX_EPOCH + Duration::from_millis(1_795_486_530_042), "x");
        assert_eq!(fixed, "2026-11-24T02:15:30.042Z vpbox-node: x");
    }
}
