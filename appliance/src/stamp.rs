//! RFC 3339 UTC time stamps for the services' log lines: journald stamps what it receives, but
//! outside systemd (the local cluster's logs, a shell) the line's own stamp is the only record
//! of when something happened.

use std::time::SystemTime;

/// Now, as `2026-11-24T02:15:30.042Z`.
#[allow(clippy::disallowed_methods)] // a log stamp is I/O, like writing the line
pub(crate) fn now() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(SystemTime::now())
}
