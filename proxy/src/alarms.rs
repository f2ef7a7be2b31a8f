//! The alarms an operator is shown — by `vpbox status` and by the admin listener's status
//! page ([`crate::status_page`]) alike: what runs out (CRLs, roots, enrolled certificates),
//! a disk filling, a clock off. Sans-IO: the time and the figures are inputs.

use std::time::Duration;

use serde_json::Value;

/// A CRL this close to its nextUpdate is a warning in `vpbox status` and the status page: two
/// hourly runs after `systemd/vpbox-crl-renew.service` (margin 8 h) should have replaced it, so
/// a renewal that works never shows one.
pub const CRL_WARN: Duration = Duration::from_secs(6 * 3600);
/// A certificate this close to its notAfter is a warning in `vpbox status` and the status page.
pub const CERT_WARN: Duration = Duration::from_secs(30 * 86_400);

/// What runs out, at `now`: warnings (a CRL within [`CRL_WARN`] of its nextUpdate, a root or
/// enrolled certificates within [`CERT_WARN`] of their notAfter) and problems (a CRL past its
/// nextUpdate: every certificate of its CA is refused; a root past its notAfter). `enrolled`
/// is `node_getNodes`'s `certificates` (or null).
pub fn expiry_alarms(
    crls: &[vpbox_ca::policy::CrlInForce],
    roots: &[crate::trust::CertExpiry],
    enrolled: &Value,
    now: std::time::SystemTime,
) -> (Vec<String>, Vec<String>) {
    let (mut warnings, mut problems) = (Vec::new(), Vec::new());
    let left = |t: std::time::SystemTime| t.duration_since(now).ok();
    let span = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs() / 60 * 60));
    let date = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    for crl in crls {
        let Some(next) = crl.next_update else { continue };
        match left(next) {
            None => problems.push(format!(
                "the CRL of {} ran out at {}: every certificate that CA issued is refused; sign \
                 and publish a new one (vpbox ca crl, vpbox cert publish-crl)",
                crl.issuer,
                date(next)
            )),
            Some(d) if d <= CRL_WARN => warnings.push(format!(
                "the CRL of {} runs out in {} ({}); past it every certificate that CA issued is \
                 refused: is its renewal (vpbox-crl-renew.timer) running?",
                crl.issuer,
                span(d),
                date(next)
            )),
            Some(_) => {}
        }
    }
    for c in roots {
        // A root lapsing loses every certificate under it; this box's own chain (`box`, an
        // issuing `ca` in it) lapsing cuts the box off.
        let (what, then, renew) = match c.kind {
            "root" => {
                ("the root", "nothing under it is admitted", "admit its successor by governance")
            }
            "box" => (
                "this box's certificate",
                "its peers and clients refuse it",
                "renew it (vpbox ca renew) and reload the proxy",
            ),
            _ => (
                "the issuing CA of this box's certificate",
                "its peers and clients refuse the box",
                "renew the CA and the box's certificate under it",
            ),
        };
        match left(c.not_after) {
            None => problems.push(format!(
                "{what} {} expired at {}: {then}",
                c.subject,
                date(c.not_after)
            )),
            Some(d) if d <= CERT_WARN => warnings.push(format!(
                "{what} {} expires in {} ({}): {renew}",
                c.subject,
                span(d),
                date(c.not_after)
            )),
            Some(_) => {}
        }
    }
    for r in enrolled.as_array().into_iter().flatten() {
        let n = r["expiringWithin30Days"].as_u64().unwrap_or(0);
        if n == 0 {
            continue;
        }
        let first = r["earliestNotAfter"]
            .as_u64()
            .map(|s| date(std::time::UNIX_EPOCH + Duration::from_secs(s)))
            .unwrap_or_default();
        warnings.push(format!(
            "{}: {n} enrolled {} certificate(s) expire within 30 days (the first at {first}): \
             renew them (vpbox ca renew, vpbox cert enroll)",
            r["bank"].as_str().unwrap_or("?"),
            r["profile"].as_str().unwrap_or("?")
        ));
    }
    (warnings, problems)
}

/// What `vpbox status` and the status page says of a node's disk (`node_getNodes.disk`): a problem (true) under 2 % free
/// (commits stop when it is full), a warning under 10 %, else nothing.
pub fn disk_alarm(disk: &Value) -> Option<(bool, String)> {
    let (free, total) = (disk["freeBytes"].as_u64()?, disk["totalBytes"].as_u64()?);
    if total == 0 {
        return None;
    }
    let percent = free as f64 * 100.0 / total as f64;
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let said = format!(
        "{percent:.1} % of its data directory's disk is free ({:.1} GiB of {:.1} GiB; the \
         ledger and journals take {:.1} GiB): a full disk stops its commits",
        gib(free),
        gib(total),
        gib(disk["dataBytes"].as_u64().unwrap_or(0))
    );
    if percent < 2.0 {
        Some((true, said))
    } else if percent < 10.0 {
        Some((false, said))
    } else {
        None
    }
}

/// A clock this far (ms) from the others' is named by `vpbox status` and the status page; half the transaction window
/// or more makes the consortium unhealthy.
pub const CLOCK_WARN_MS: u64 = 10_000;

/// The boxes whose clocks are off, and by how much (ms, + ahead), from what the nodes report
/// of each other: `(reporter, about, offset of about's clock from reporter's)`. A box's drift is
/// the median of the others' reports about it (so one box with a wrong clock, which sees every
/// other as off, is not mistaken for them; of an even count, the middle value nearer zero); it
/// needs two reports, and is named from [`CLOCK_WARN_MS`] on.
pub fn clock_drift(reports: &[(u64, u64, i64)]) -> Vec<(u64, i64)> {
    let mut about: Vec<u64> = reports.iter().map(|r| r.1).collect();
    about.sort_unstable();
    about.dedup();
    about
        .into_iter()
        .filter_map(|id| {
            let mut seen: Vec<i64> =
                reports.iter().filter(|r| r.1 == id && r.0 != id).map(|r| r.2).collect();
            if seen.len() < 2 {
                return None;
            }
            seen.sort_unstable();
            // Of two middle values, the nearer to agreement: a box is named only when most of
            // the others see it off.
            let mid = seen.len() / 2;
            let median = if seen.len() % 2 == 1 {
                seen[mid]
            } else if seen[mid - 1].unsigned_abs() < seen[mid].unsigned_abs() {
                seen[mid - 1]
            } else {
                seen[mid]
            };
            (median.unsigned_abs() >= CLOCK_WARN_MS).then_some((id, median))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Duration, Value, clock_drift, disk_alarm, expiry_alarms};
    use serde_json::json;

    #[test]
    fn a_disk_under_ten_percent_free_warns_and_under_two_is_a_problem() {
        let disk = |free: u64| json!({"dataBytes": 1u64 << 30, "freeBytes": free, "totalBytes": 1000u64 << 30});
        assert_eq!(disk_alarm(&disk(100 << 30)), None, "10 % free");
        let (problem, said) = disk_alarm(&disk(99 << 30)).unwrap();
        assert!(!problem && said.starts_with("9.9 % of its data directory's disk is free (99.0 GiB of 1000.0 GiB; the ledger and journals take 1.0 GiB)"), "{said}");
        assert!(disk_alarm(&disk(19 << 30)).unwrap().0, "1.9 % free");
        assert_eq!(disk_alarm(&json!({"dataBytes": 5})), None, "no filesystem figures");
        assert_eq!(disk_alarm(&Value::Null), None);
    }
    use crate::trust::CertExpiry;
    use std::time::UNIX_EPOCH;
    use vpbox_ca::policy::CrlInForce;

    /// A CRL past its nextUpdate is a problem (its bank is locked out), one within 6 h a
    /// warning, one further off nothing; the same for roots at 30 days; enrolled certificates
    /// expiring within 30 days are a warning with their bank, profile and first date.
    #[test]
    fn what_runs_out_is_a_warning_and_what_ran_out_a_problem() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let h = |hours: i64| {
            if hours >= 0 {
                now + Duration::from_secs(hours as u64 * 3600)
            } else {
                now - Duration::from_secs((-hours) as u64 * 3600)
            }
        };
        let crl = |issuer: &str, at| CrlInForce {
            ca: "00".into(),
            issuer: issuer.into(),
            next_update: Some(at),
        };
        let crls = [crl("O=late", h(-1)), crl("O=soon", h(5)), crl("O=fine", h(7))];
        let root = |subject: &str, days: i64| CertExpiry {
            kind: "root",
            subject: subject.into(),
            serial: "01".into(),
            not_after: h(days * 24),
        };
        let mut roots = vec![root("O=old", -1), root("O=ending", 29), root("O=young", 31)];
        // This box's own certificate counts too.
        roots.push(CertExpiry { kind: "box", ..root("CN=node1", 10) });
        let enrolled = json!([
            {"bank": "bank-a", "profile": "posp", "expiringWithin30Days": 2,
             "earliestNotAfter": 1_800_000_000u64 + 86_400},
            {"bank": "bank-b", "profile": "admin", "expiringWithin30Days": 0},
        ]);
        let (warnings, problems) = expiry_alarms(&crls, &roots, &enrolled, now);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("the CRL of O=late ran out at "), "{problems:?}");
        assert!(problems[1].starts_with("the root O=old expired"), "{problems:?}");
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("this box's certificate CN=node1 expires in 10days")),
            "{warnings:?}"
        );
        let warnings: Vec<String> =
            warnings.into_iter().filter(|w| !w.starts_with("this box's")).collect();
        assert!(warnings[0].starts_with("the CRL of O=soon runs out in 5h ("), "{warnings:?}");
        assert!(warnings[1].starts_with("the root O=ending expires in 29days"), "{warnings:?}");
        assert!(
            warnings[2].starts_with("bank-a: 2 enrolled posp certificate(s) expire within 30 days")
                && warnings[2].contains("2027-01-16T08:00:00Z"),
            "{warnings:?}"
        );
        assert_eq!(expiry_alarms(&[], &[], &Value::Null, now), (vec![], vec![]));
    }

    /// Node 3's clock 4m 12s ahead: every other node sees it so and it sees all others behind;
    /// only node 3 is named. Jitter of milliseconds names nobody; one report is not enough, and
    /// of three boxes with one off, the two correct ones are not accused.
    #[test]
    fn the_box_whose_clock_is_off_is_named_not_the_others() {
        let off = 252_000;
        let mut reports = Vec::new();
        for a in 1..=4u64 {
            for b in (1..=4u64).filter(|b| *b != a) {
                let jitter = (a * 7 + b) as i64 % 5 - 2;
                let skew = match (a, b) {
                    (3, _) => -off,
                    (_, 3) => off,
                    _ => 0,
                };
                reports.push((a, b, skew + jitter));
            }
        }
        let named = clock_drift(&reports);
        assert_eq!(named.len(), 1, "{named:?}");
        assert_eq!(named[0].0, 3);
        assert!((named[0].1 - off).abs() <= 2, "{named:?}");
        // Behind, by exactly the threshold: named, negative.
        let behind: Vec<_> = reports
            .iter()
            .map(|&(a, b, _)| match (a, b) {
                (3, _) => (a, b, 10_000),
                (_, 3) => (a, b, -10_000),
                _ => (a, b, 0),
            })
            .collect();
        assert_eq!(clock_drift(&behind), vec![(3, -10_000)]);
        let below: Vec<_> = behind.iter().map(|&(a, b, o)| (a, b, o / 10_000 * 9_999)).collect();
        assert_eq!(clock_drift(&below), vec![], "under the threshold");
        // Three boxes, node 3 off: nodes 1 and 2 each have one report off of two.
        let three: Vec<_> = reports.iter().copied().filter(|r| r.0 != 4 && r.1 != 4).collect();
        assert_eq!(clock_drift(&three).iter().map(|d| d.0).collect::<Vec<_>>(), vec![3]);
        assert_eq!(clock_drift(&[(1, 2, off)]), vec![], "one report");
    }
}
