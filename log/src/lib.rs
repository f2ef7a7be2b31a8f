//! How the box's services log: through [`tracing`], each event with its level and structured
//! fields (`view`, `seq`, `peer`, `node`, `uid`, `op`, …).
//!
//! - **Under systemd** (the service's standard error is the journal: systemd sets
//!   `JOURNAL_STREAM` to its device and inode, and they are stderr's), events go to journald natively ([`tracing_journald`]): `MESSAGE`, a
//!   `PRIORITY` from the level, `SYSLOG_IDENTIFIER` the service's name, and each field as
//!   `VPBOX_<NAME>` (`journalctl -u vpbox-node VPBOX_VIEW=3`).
//! - **Otherwise** (a development cluster's `node.log`, a shell), one line per event on
//!   standard error: `TIME LEVEL SERVICE: MESSAGE key=value …`, TIME in RFC 3339 UTC with
//!   milliseconds ([`line`]): the line's own stamp is the only record of when, and UTC reads
//!   the same at every bank.
//!
//! The proxy keeps its own JSON lines (`{"at", "event", …}`): already structured, and its access
//! log is on a measured fast path (an API worker's lines gathered, 4 KiB a `write(2)`).

use std::fmt::Write as _;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;

pub use tracing::{error, info, warn};

/// The prefix of the service's own fields in the journal.
pub const JOURNAL_FIELD_PREFIX: &str = "VPBOX";

/// Where [`init`] sent the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// journald, natively.
    Journald,
    /// Standard error, one [`line`] per event.
    Stderr,
}

/// Installs the process's subscriber for `service` (`vpbox-node`, `vpbox-signer`): journald
/// when the service runs under systemd with its standard error in the journal, else standard
/// error. Once per process; a second call changes nothing and says where the first sent them.
pub fn init(service: &'static str) -> Sink {
    let journal = std::env::var("JOURNAL_STREAM").is_ok_and(|v| stderr_is(&v));
    if journal && let Ok(layer) = tracing_journald::layer() {
        let layer = layer
            .with_syslog_identifier(service.to_string())
            .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()));
        let subscriber = tracing_subscriber::registry().with(layer);
        if tracing::subscriber::set_global_default(subscriber).is_ok() {
            return Sink::Journald;
        }
        return Sink::Stderr;
    }
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Lines { service })
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    Sink::Stderr
}

/// Whether standard error is the stream `JOURNAL_STREAM` names (`DEVICE:INODE`, as systemd
/// sets it): the variable alone is inherited by children whose stderr goes elsewhere (a node
/// that `vpbox cluster up` started from a shell under systemd writes to its `node.log`).
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// The standard-error line of an event of `service` at `at`: `TIME LEVEL SERVICE: MESSAGE
/// key=value …` (fields in the order the event gives them; a value with a space is quoted).
pub fn line(
    at: SystemTime,
    level: Level,
    service: &str,
    message: &str,
    fields: &[(&str, String)],
) -> String {
    let mut out = format!("{} {level} {service}: {message}", humantime::format_rfc3339_millis(at));
    for (k, v) in fields {
        if v.contains(' ') || v.is_empty() {
            let _ = write!(out, " {k}={v:?}");
        } else {
            let _ = write!(out, " {k}={v}");
        }
    }
    out
}

/// The stderr format: [`line`].
struct Lines {
    service: &'static str,
}

/// An event's message and fields, as text.
#[derive(Default)]
struct Collected {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Collected {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut c = Collected::default();
        event.record(&mut c);
        #[allow(clippy::disallowed_methods)] // a log stamp is I/O, like writing the line
        let now = SystemTime::now();
        let fields: Vec<(&str, String)> = c.fields.iter().map(|(k, v)| (*k, v.clone())).collect();
        writeln!(
            writer,
            "{}",
            line(now, *event.metadata().level(), self.service, &c.message, &fields)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// Only the stream stderr is counts as the journal; a name of another, or garbage, not.
    #[test]
    fn journal_stream_must_name_stderr_itself() {
        let st = rustix::fs::fstat(std::io::stderr()).unwrap();
        assert!(stderr_is(&format!("{}:{}", st.st_dev, st.st_ino)));
        assert!(!stderr_is(&format!("{}:{}", st.st_dev, st.st_ino + 1)));
        assert!(!stderr_is("garbage") && !stderr_is("1:x") && !stderr_is(""));
    }

    #[test]
    fn a_line_has_its_stamp_level_service_message_and_fields() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_486_530_042);
        let l = line(
            at,
            Level::WARN,
            "vpbox-node",
            "entered view 3",
            &[("view", "3".into()), ("why", "a timer fired".into())],
        );
        assert_eq!(
            l,
            "2026-11-24T02:15:30.042Z WARN vpbox-node: entered view 3 view=3 why=\"a timer fired\""
        );
    }

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Events through the real subscriber come out as [`line`]s: stamped now, with the level
    /// and every field.
    #[test]
    fn events_are_formatted_as_lines() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .event_format(Lines { service: "vpbox-test" })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            info!(view = 7u64, peer = 3u32, "entered view {}", 7);
            error!(seq = 12u64, "fatal: {}; stopping", "disk full");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (stamp, rest) = lines[0].split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        assert_eq!(rest, "INFO vpbox-test: entered view 7 view=7 peer=3");
        assert!(
            lines[1].ends_with(" ERROR vpbox-test: fatal: disk full; stopping seq=12"),
            "{text}"
        );
    }
}
