//! What the proxy counts, and the box's `/metrics` page (Prometheus text format 0.0.4): the
//! proxy's own counters and its node's figures (`node_getNodes`, read over the node's socket
//! at each scrape). Sans-IO: the shell counts and passes the node's answer; nothing here reads
//! a clock or a socket.
//!
//! Labels take a bounded set of values: a listener (`p2p`, `api`), a refusal reason from
//! [`reason`] (one of [`REASONS`]), an HTTP status, a signing outcome. So a hostile client
//! cannot grow the page.
//!
//! The text is written here rather than with a metrics crate: the node's half arrives as a
//! JSON snapshot, not as live instruments, and the format is a handful of line shapes;
//! `promtool check metrics` checks the page in the tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use vpbox_api::metrics::Histogram;
use vpbox_ca::policy::DenyReason;

/// Every refusal reason a label may name.
pub const REASONS: [&str; 25] = [
    "no_certificate",
    "malformed_certificate",
    "not_enrolled",
    "unknown_root",
    "bad_signature",
    "not_yet_valid",
    "expired",
    "wrong_profile",
    "revoked",
    "stale_crl",
    "issuer_invalid",
    "not_a_member",
    "claims_another_node",
    "wrong_chain",
    "bad_hello",
    "tls",
    "timeout",
    "shed",
    "evicted",
    "link_cap",
    "node_down",
    "not_allowed",
    "rate_limited",
    "too_large",
    "bad_request",
];

/// The label of a certificate the trust store refused.
pub fn reason(denied: &DenyReason) -> &'static str {
    match denied {
        DenyReason::Malformed(_) => "malformed_certificate",
        DenyReason::NotEnrolled => "not_enrolled",
        DenyReason::UnknownRoot(_) => "unknown_root",
        DenyReason::BadSignature => "bad_signature",
        DenyReason::NotYetValid => "not_yet_valid",
        DenyReason::Expired => "expired",
        DenyReason::WrongProfile { .. }
        | DenyReason::NotEndEntity
        | DenyReason::WrongBank { .. } => "wrong_profile",
        DenyReason::Revoked => "revoked",
        DenyReason::StaleCrl => "stale_crl",
        _ => "issuer_invalid",
    }
}

/// The label of a failed TLS handshake: the trust store's reason, no certificate, or `tls`.
pub fn tls_reason(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::NoCertificatesPresented => "no_certificate",
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            match other.0.downcast_ref::<vpbox_tls::Denied>() {
                Some(d) => reason(&d.reason),
                None => "tls",
            }
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::Expired) => "expired",
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked) => "revoked",
        _ => "tls",
    }
}

/// A listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Listener {
    /// Links between boxes.
    P2p,
    /// POSP and admin clients.
    Api,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Self::P2p => "p2p",
            Self::Api => "api",
        }
    }
}

/// What the proxy counted since it started.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    accepted: BTreeMap<Listener, u64>,
    refused: BTreeMap<(Listener, &'static str), u64>,
    open: BTreeMap<Listener, i64>,
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
    signatures: BTreeMap<&'static str, u64>,
    trust_updates: u64,
    crls: Vec<vpbox_ca::policy::CrlInForce>,
    /// The trust state's certificates (the member banks' roots).
    certificates: Vec<crate::trust::CertExpiry>,
    /// The certificate chain this proxy presents.
    own: Vec<crate::trust::CertExpiry>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut c);
    }

    /// A connection admitted on `listener` (TLS, identity and, on P2P, the link's claim).
    pub fn accepted(&self, listener: Listener) {
        self.with(|c| *c.accepted.entry(listener).or_default() += 1);
    }

    /// A connection or request refused on `listener` for `reason` (one of [`REASONS`]).
    pub fn refused(&self, listener: Listener, reason: &'static str) {
        debug_assert!(REASONS.contains(&reason), "{reason}");
        self.with(|c| *c.refused.entry((listener, reason)).or_default() += 1);
    }

    /// A connection of `listener` opened (`+1`) or closed (`-1`).
    pub fn open(&self, listener: Listener, delta: i64) {
        self.with(|c| *c.open.entry(listener).or_default() += delta);
    }

    /// An API request answered with `status` after `took`.
    pub fn request(&self, status: u16, took: Duration) {
        self.with(|c| {
            *c.requests.entry(status).or_default() += 1;
            c.latency.observe(took);
        });
    }

    /// A handshake signature asked of the signer: `signed`, `refused` (by the signer, or
    /// failed) or `busy` (too many in flight).
    pub fn signature(&self, outcome: &'static str) {
        self.with(|c| *c.signatures.entry(outcome).or_default() += 1);
    }

    /// The trust state changed; `crls`: the CRL in force of each CA; `certificates`: the
    /// notAfter of its certificates.
    pub fn trust_updated(
        &self,
        crls: Vec<vpbox_ca::policy::CrlInForce>,
        certificates: Vec<crate::trust::CertExpiry>,
    ) {
        self.with(|c| {
            c.trust_updates += 1;
            c.crls = crls;
            c.certificates = certificates;
        });
    }

    /// The chain this proxy presents (at start, and after a reload took a new one).
    pub fn own_certificate(&self, chain: Vec<crate::trust::CertExpiry>) {
        self.with(|c| c.own = chain);
    }

    /// The CRLs in force, and the certificates whose notAfter matters (the roots and this
    /// proxy's own chain): for the status page.
    pub fn expiries(&self) -> (Vec<vpbox_ca::policy::CrlInForce>, Vec<crate::trust::CertExpiry>) {
        let mut out = (Vec::new(), Vec::new());
        self.with(|c| {
            out.0 = c.crls.clone();
            out.1 = c.certificates.iter().chain(&c.own).cloned().collect();
        });
        out
    }

    /// Whether a trust state was ever applied.
    pub fn trust_loaded(&self) -> bool {
        let mut loaded = false;
        self.with(|c| loaded = c.trust_updates > 0);
        loaded
    }

    /// The page: the proxy's counters, then the node's figures from its `node_getNodes`
    /// answer (`None`: the node did not answer, and `vpbox_node_up` is 0).
    pub fn render(&self, node: Option<&Value>) -> String {
        let mut out = String::new();
        self.with(|c| render_proxy(&mut out, c));
        render_node(&mut out, node);
        out
    }
}

/// `text` as a Prometheus label value: backslash, double quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_proxy(out: &mut String, c: &Counts) {
    head(out, "vpbox_proxy_handshakes_total", "counter", "Connections admitted, by listener.");
    for l in [Listener::P2p, Listener::Api] {
        let n = c.accepted.get(&l).copied().unwrap_or(0);
        let _ = writeln!(out, "vpbox_proxy_handshakes_total{{listener=\"{}\"}} {n}", l.name());
    }
    head(
        out,
        "vpbox_proxy_refusals_total",
        "counter",
        "Connections and requests refused, by listener and reason.",
    );
    for ((l, reason), n) in &c.refused {
        let _ = writeln!(
            out,
            "vpbox_proxy_refusals_total{{listener=\"{}\",reason=\"{reason}\"}} {n}",
            l.name()
        );
    }
    head(out, "vpbox_proxy_connections", "gauge", "Connections open now, by listener.");
    for l in [Listener::P2p, Listener::Api] {
        let n = c.open.get(&l).copied().unwrap_or(0);
        let _ = writeln!(out, "vpbox_proxy_connections{{listener=\"{}\"}} {n}", l.name());
    }
    head(out, "vpbox_proxy_requests_total", "counter", "API requests answered, by HTTP status.");
    for (status, n) in &c.requests {
        let _ = writeln!(out, "vpbox_proxy_requests_total{{status=\"{status}\"}} {n}");
    }
    let rate_limited = c.refused.get(&(Listener::Api, "rate_limited")).copied().unwrap_or(0);
    head(
        out,
        "vpbox_proxy_rate_limited_total",
        "counter",
        "API bodies refused by a client's rate.",
    );
    let _ = writeln!(out, "vpbox_proxy_rate_limited_total {rate_limited}");
    head(
        out,
        "vpbox_proxy_request_duration_seconds",
        "histogram",
        "API requests from their head to their answer.",
    );
    out.push_str(&c.latency.prometheus("vpbox_proxy_request_duration_seconds", ""));
    head(
        out,
        "vpbox_proxy_signatures_total",
        "counter",
        "TLS handshake signatures asked of the box's signer, by outcome.",
    );
    for outcome in ["signed", "refused", "busy"] {
        let n = c.signatures.get(outcome).copied().unwrap_or(0);
        let _ = writeln!(out, "vpbox_proxy_signatures_total{{outcome=\"{outcome}\"}} {n}");
    }
    head(out, "vpbox_proxy_trust_updates_total", "counter", "Trust state changes applied.");
    let _ = writeln!(out, "vpbox_proxy_trust_updates_total {}", c.trust_updates);
    // A timestamp, not a countdown: the page needs no clock, and an alert reads
    // `vpbox_crl_next_update_timestamp_seconds - time() < 6 * 3600`.
    head(
        out,
        "vpbox_crl_next_update_timestamp_seconds",
        "gauge",
        "When each CA's CRL in force goes out of date (its nextUpdate): past it, every \
         certificate the CA issued is refused.",
    );
    for crl in &c.crls {
        // (A CRL without nextUpdate never goes out of date: no sample.)
        let Some(next) = crl.next_update else { continue };
        let next = next.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let _ = writeln!(
            out,
            "vpbox_crl_next_update_timestamp_seconds{{ca=\"{}\",issuer=\"{}\"}} {next}",
            crl.ca,
            label_value(&crl.issuer)
        );
    }
    head(
        out,
        "vpbox_certificate_not_after_timestamp_seconds",
        "gauge",
        "When each certificate the box depends on expires (its notAfter): the member banks' \
         roots, and the chain this proxy presents (kind=\"box\", and \"ca\" for its issuing \
         CA). Each box shows its own vp-node certificate.",
    );
    let mut all: Vec<&crate::trust::CertExpiry> = c.certificates.iter().collect();
    for own in &c.own {
        // A root the box's chain carries along is shown once, as the root it is.
        if !all.iter().any(|x| x.subject == own.subject && x.serial == own.serial) {
            all.push(own);
        }
    }
    all.sort();
    for cert in all {
        let at = cert.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let _ = writeln!(
            out,
            "vpbox_certificate_not_after_timestamp_seconds{{kind=\"{}\",subject=\"{}\",serial=\"{}\"}} {at}",
            cert.kind,
            label_value(&cert.subject),
            cert.serial
        );
    }
}

fn render_node(out: &mut String, node: Option<&Value>) {
    head(out, "vpbox_node_up", "gauge", "Whether the box's node answered this scrape.");
    let _ = writeln!(out, "vpbox_node_up {}", u8::from(node.is_some()));
    let Some(n) = node else { return };
    let num = |path: &[&str]| {
        let mut v = n;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_u64()
    };
    for (name, kind, help, path) in [
        ("vpbox_node_height", "gauge", "The latest committed block.", &["height"][..]),
        ("vpbox_node_view", "gauge", "The consensus view.", &["view"]),
        ("vpbox_node_epoch", "gauge", "The consensus epoch (membership changes).", &["epoch"]),
        ("vpbox_node_pending", "gauge", "Transactions waiting for consensus.", &["pending"]),
        (
            "vpbox_node_blocks_committed_total",
            "counter",
            "Blocks committed since the node started.",
            &["metrics", "blocksCommitted"],
        ),
        (
            "vpbox_node_transactions_committed_total",
            "counter",
            "Transactions committed since the node started.",
            &["metrics", "transactionsCommitted"],
        ),
        (
            "vpbox_node_view_changes_total",
            "counter",
            "Views the node moved to since it started.",
            &["metrics", "viewChanges"],
        ),
        (
            "vpbox_node_signer_refusals_total",
            "counter",
            "The node's messages its signer refused (the double-sign guard).",
            &["signer", "refused"],
        ),
    ] {
        if let Some(v) = num(path) {
            head(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
    if let Some(links) = n.get("links").and_then(Value::as_object) {
        head(
            out,
            "vpbox_node_links_total",
            "counter",
            "The node's peer-link handshakes and frames, by outcome.",
        );
        for (outcome, v) in links {
            if let Some(v) = v.as_u64() {
                let _ = writeln!(
                    out,
                    "vpbox_node_links_total{{outcome=\"{}\"}} {v}",
                    label_value(outcome)
                );
            }
        }
    }
    if let Some(disk) = n.get("disk") {
        for (name, field, help) in [
            (
                "vpbox_node_data_bytes",
                "dataBytes",
                "Bytes the node's data directory (ledger, journals) takes on disk.",
            ),
            (
                "vpbox_node_filesystem_free_bytes",
                "freeBytes",
                "Bytes free to the node on its data directory's filesystem: when none are \
                 left, commits stop.",
            ),
            (
                "vpbox_node_filesystem_size_bytes",
                "totalBytes",
                "The size of the node's data directory's filesystem.",
            ),
        ] {
            if let Some(v) = disk.get(field).and_then(Value::as_u64) {
                head(out, name, "gauge", help);
                let _ = writeln!(out, "{name} {v}");
            }
        }
    }
    if let Some(rows) = n.get("certificates").and_then(Value::as_array) {
        for (name, field, kind, help) in [
            (
                "vpbox_enrolled_certificates",
                "count",
                "gauge",
                "Certificates enrolled on the ledger and still valid, by bank and profile.",
            ),
            (
                "vpbox_enrolled_certificate_earliest_not_after_timestamp_seconds",
                "earliestNotAfter",
                "gauge",
                "The earliest notAfter of the enrolled certificates still valid, by bank and \
                 profile: past it that client's transactions are refused.",
            ),
            (
                "vpbox_enrolled_certificates_expiring",
                "expiringWithin30Days",
                "gauge",
                "Enrolled certificates still valid that expire within 30 days, by bank and profile.",
            ),
            (
                "vpbox_enrolled_certificates_expired",
                "expired",
                "gauge",
                "Enrolled certificates past their notAfter (a retired client's stay enrolled).",
            ),
        ] {
            head(out, name, kind, help);
            for r in rows {
                let (Some(bank), Some(profile), Some(v)) = (
                    r.get("bank").and_then(Value::as_str),
                    r.get("profile").and_then(Value::as_str),
                    r.get(field).and_then(Value::as_u64),
                ) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "{name}{{bank=\"{}\",profile=\"{}\"}} {v}",
                    label_value(bank),
                    label_value(profile)
                );
            }
        }
    }
    if let Some(nodes) = n.get("nodes").and_then(Value::as_array) {
        let up = nodes
            .iter()
            .filter(|p| p.get("isSelf") != Some(&Value::Bool(true)))
            .filter(|p| p.get("status").and_then(Value::as_str) == Some("up"))
            .count();
        head(out, "vpbox_node_peers_up", "gauge", "Other members the node heard from lately.");
        let _ = writeln!(out, "vpbox_node_peers_up {up}");
        head(
            out,
            "vpbox_node_peer_clock_offset_seconds",
            "gauge",
            "Each peer's clock minus this node's, from its link's clock frames (its one-way \
             delay counts as behind); absent for a peer not heard from within a minute.",
        );
        for p in nodes.iter().filter(|p| p.get("isSelf") != Some(&Value::Bool(true))) {
            let (Some(name), Some(ms)) = (
                p.get("name").and_then(Value::as_str),
                p.get("clockOffsetMs").and_then(Value::as_i64),
            ) else {
                continue;
            };
            let _ = writeln!(
                out,
                "vpbox_node_peer_clock_offset_seconds{{peer=\"{}\"}} {}",
                label_value(name),
                ms as f64 / 1000.0
            );
        }
    }
    let latency = n.get("metrics").and_then(|m| m.get("commitLatency"));
    if let Some(h) = latency.and_then(Histogram::from_json) {
        head(
            out,
            "vpbox_node_commit_latency_seconds",
            "histogram",
            "Committed transactions from their arrival at the node to their block's commit.",
        );
        out.push_str(&h.prometheus("vpbox_node_commit_latency_seconds", ""));
    }
}

/// The box's `/health`: whether it can serve (true: HTTP 200) and why not, from its node's
/// `node_getNodes` answer (`None`: the node did not answer) and whether the proxy holds a
/// trust state. Unhealthy: the node does not answer; no trust state yet (nobody is admitted);
/// the signer refused the node's messages in the last minute; fewer members reachable than
/// the consensus quorum (`vpbox_consensus::quorum`: ⌈(n + f + 1) / 2⌉ of n), so nothing this
/// box is sent can commit. A view change in progress is
/// reported but healthy (it ends by itself or by a timeout).
pub fn health(node: Option<&Value>, trust_loaded: bool) -> (bool, Value) {
    let mut problems: Vec<String> = Vec::new();
    if !trust_loaded {
        problems.push("no trust state from the node yet: no client or peer is admitted".into());
    }
    let Some(n) = node else {
        problems.push("the node does not answer on its socket".into());
        return (false, serde_json::json!({"status": "unhealthy", "problems": problems}));
    };
    let nodes = n.get("nodes").and_then(Value::as_array).cloned().unwrap_or_default();
    let own = nodes
        .iter()
        .find(|p| p.get("isSelf") == Some(&Value::Bool(true)))
        .and_then(|p| p.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    if own == "signer-refusing" {
        problems.push("the signer refused the node's messages in the last minute".into());
    }
    let members = nodes.len();
    let reachable = 1 + nodes
        .iter()
        .filter(|p| p.get("isSelf") != Some(&Value::Bool(true)))
        .filter(|p| p.get("status").and_then(Value::as_str) == Some("up"))
        .count();
    let quorum = vpbox_consensus::quorum(members);
    if members > 0 && reachable < quorum {
        problems.push(format!(
            "{reachable} of {members} members reachable, fewer than a quorum of {quorum}: \
             nothing can commit"
        ));
    }
    let healthy = problems.is_empty();
    (
        healthy,
        serde_json::json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "problems": problems,
            "node": own,
            "height": n.get("height"),
            "view": n.get("view"),
            "membersReachable": reachable,
            "members": members,
        }),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Each CA's CRL in force is a sample of its nextUpdate, labelled by the CA and its
    /// issuer name (escaped as the text format requires; two CAs of one name stay two
    /// series); a later trust state replaces the list, not adds to it.
    #[test]
    fn each_crl_in_force_shows_its_next_update_by_ca() {
        use vpbox_ca::policy::CrlInForce;
        let at = |s: u64| Some(std::time::UNIX_EPOCH + Duration::from_secs(s));
        let crl = |ca: &str, issuer: &str, next| CrlInForce {
            ca: ca.into(),
            issuer: issuer.into(),
            next_update: next,
        };
        let m = Metrics::default();
        m.trust_updated(
            vec![
                crl("00aa", "CN=bank-a Root CA,O=bank-a", at(1_800_000_000)),
                crl("00bb", "CN=bank-a Root CA,O=bank-a", at(1_800_007_200)),
                crl("00cc", "CN=odd \"name\" \\ here", at(1_800_003_600)),
                crl("00dd", "CN=no next update", None),
            ],
            vec![],
        );
        let page = m.render(None);
        assert!(page.contains("# TYPE vpbox_crl_next_update_timestamp_seconds gauge"), "{page}");
        for line in [
            "vpbox_crl_next_update_timestamp_seconds{ca=\"00aa\",issuer=\"CN=bank-a Root CA,O=bank-a\"} 1800000000\n",
            "vpbox_crl_next_update_timestamp_seconds{ca=\"00bb\",issuer=\"CN=bank-a Root CA,O=bank-a\"} 1800007200\n",
            "vpbox_crl_next_update_timestamp_seconds{ca=\"00cc\",issuer=\"CN=odd \\\"name\\\" \\\\ here\"} 1800003600\n",
        ] {
            assert!(page.contains(line), "{line} not in {page}");
        }
        assert!(!page.contains("no next update"), "{page}");
        m.trust_updated(vec![], vec![]);
        assert!(!m.render(None).contains("vpbox_crl_next_update_timestamp_seconds{"));
    }

    /// Every certificate the box depends on is a sample of its notAfter, by kind, subject and
    /// serial (a bank's old and new root share a subject): the roots from the trust state, the
    /// box's own chain from its file; a root the box's chain carries along is shown once, as
    /// the root.
    #[test]
    fn each_certificate_shows_its_not_after_once() {
        use crate::trust::CertExpiry;
        let cert = |kind, subject: &str, serial: &str, s: u64| CertExpiry {
            kind,
            subject: subject.into(),
            serial: serial.into(),
            not_after: std::time::UNIX_EPOCH + Duration::from_secs(s),
        };
        let m = Metrics::default();
        m.trust_updated(
            vec![],
            vec![
                cert("root", "CN=bank-a Root CA,O=bank-a", "01", 2_000_000_000),
                cert("root", "CN=bank-a Root CA,O=bank-a", "02", 2_100_000_000),
                cert("root", "CN=bank-b Root CA,O=bank-b", "03", 2_000_000_100),
            ],
        );
        m.own_certificate(vec![
            cert("box", "CN=node1,OU=vp-node,O=bank-a", "0a", 1_800_000_000),
            cert("ca", "CN=bank-a Issuing CA,O=bank-a", "0b", 1_900_000_000),
            cert("ca", "CN=bank-a Root CA,O=bank-a", "01", 2_000_000_000),
        ]);
        let page = m.render(None);
        let name = "vpbox_certificate_not_after_timestamp_seconds";
        assert!(page.contains(&format!("# TYPE {name} gauge")), "{page}");
        let samples: Vec<&str> =
            page.lines().filter(|l| l.starts_with(&format!("{name}{{"))).collect();
        let s = |kind: &str, subject: &str, serial: &str, at: u64| {
            format!("{name}{{kind=\"{kind}\",subject=\"{subject}\",serial=\"{serial}\"}} {at}")
        };
        assert_eq!(
            samples,
            [
                s("box", "CN=node1,OU=vp-node,O=bank-a", "0a", 1_800_000_000),
                s("ca", "CN=bank-a Issuing CA,O=bank-a", "0b", 1_900_000_000),
                s("root", "CN=bank-a Root CA,O=bank-a", "01", 2_000_000_000),
                s("root", "CN=bank-a Root CA,O=bank-a", "02", 2_100_000_000),
                s("root", "CN=bank-b Root CA,O=bank-b", "03", 2_000_000_100),
            ]
        );
        // A new trust state replaces the roots; the box's chain stays until it is reloaded
        // (the root it carries is its `ca` then).
        m.trust_updated(vec![], vec![]);
        let page = m.render(None);
        assert_eq!(page.lines().filter(|l| l.starts_with(&format!("{name}{{"))).count(), 3);
    }

    #[test]
    fn health_needs_the_node_the_trust_state_the_signer_and_a_quorum() {
        let node = |statuses: &[&str], own: &str| {
            let mut nodes = vec![json!({"isSelf": true, "status": own})];
            nodes.extend(statuses.iter().map(|s| json!({"isSelf": false, "status": s})));
            json!({"height": 7, "view": 0, "nodes": nodes})
        };
        let four_up = node(&["up", "up", "up"], "up");
        assert!(health(Some(&four_up), true).0);
        // One of four down: 3 reachable is the quorum of 4 (f = 1).
        assert!(health(Some(&node(&["up", "up", "unreachable"], "up")), true).0);
        assert!(health(Some(&node(&["up", "up", "up"], "view-change")), true).0);
        for (n, trust, why) in [
            (None, true, "does not answer"),
            (Some(four_up), false, "no trust state"),
            (Some(node(&["up", "unreachable", "unreachable"], "up")), true, "2 of 4 members"),
            (Some(node(&["up", "up", "up"], "signer-refusing")), true, "signer refused"),
        ] {
            let (ok, v) = health(n.as_ref(), trust);
            assert!(!ok, "{v}");
            assert_eq!(v["status"], "unhealthy");
            assert!(v["problems"].to_string().contains(why), "{why}: {v}");
        }
        // Three members tolerate one down (quorum 2), six tolerate two (quorum 4, not 5).
        let of = |n: usize, down: usize| {
            let peers: Vec<&str> =
                (1..n).map(|i| if i <= down { "unreachable" } else { "up" }).collect();
            health(Some(&node(&peers, "up")), true).0
        };
        assert!(of(3, 1) && !of(3, 2));
        assert!(of(6, 2) && !of(6, 3));
        // Seven members tolerate two down (quorum 5), not three.
        let seven = |down: usize| {
            let peers: Vec<&str> =
                (0..6).map(|i| if i < down { "unreachable" } else { "up" }).collect();
            health(Some(&node(&peers, "up")), true).0
        };
        assert!(seven(2) && !seven(3));
    }

    #[test]
    fn every_deny_reason_has_a_listed_label() {
        for d in [
            DenyReason::Malformed(String::new()),
            DenyReason::NotEnrolled,
            DenyReason::UnknownRoot(String::new()),
            DenyReason::BadSignature,
            DenyReason::NotYetValid,
            DenyReason::Expired,
            DenyReason::RootNotValid,
            DenyReason::NotEndEntity,
            DenyReason::Revoked,
            DenyReason::StaleCrl,
            DenyReason::IssuerRevoked(String::new()),
            DenyReason::PathTooLong(String::new()),
        ] {
            assert!(REASONS.contains(&reason(&d)), "{d:?}");
        }
        assert_eq!(reason(&DenyReason::Revoked), "revoked");
        assert_eq!(reason(&DenyReason::Expired), "expired");
        assert_eq!(tls_reason(&rustls::Error::NoCertificatesPresented), "no_certificate");
    }

    #[test]
    fn the_page_counts_what_happened_and_reads_the_nodes_figures() {
        let m = Metrics::default();
        m.accepted(Listener::P2p);
        m.refused(Listener::Api, "revoked");
        m.refused(Listener::Api, "rate_limited");
        m.refused(Listener::Api, "rate_limited");
        m.open(Listener::Api, 1);
        m.request(200, Duration::from_millis(3));
        m.signature("signed");
        let down = m.render(None);
        assert!(down.contains("\nvpbox_node_up 0\n"), "{down}");
        assert!(!down.contains("vpbox_node_height"), "{down}");
        for line in [
            "vpbox_proxy_handshakes_total{listener=\"p2p\"} 1",
            "vpbox_proxy_refusals_total{listener=\"api\",reason=\"revoked\"} 1",
            "vpbox_proxy_rate_limited_total 2",
            "vpbox_proxy_connections{listener=\"api\"} 1",
            "vpbox_proxy_requests_total{status=\"200\"} 1",
            "vpbox_proxy_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "vpbox_proxy_signatures_total{outcome=\"signed\"} 1",
        ] {
            assert!(down.contains(&format!("{line}\n")), "{line} missing:\n{down}");
        }
        let node = json!({
            "height": 42, "view": 1, "epoch": 0, "pending": 3,
            "signer": {"refused": 0, "lastRefusal": null},
            "links": {"authenticated": 3, "refused": 1},
            "metrics": {"blocksCommitted": 40, "transactionsCommitted": 900, "viewChanges": 1,
                        "commitLatency": Histogram::default().json()},
            "nodes": [{"isSelf": true, "status": "up", "name": "node1", "clockOffsetMs": 0},
                      {"isSelf": false, "status": "up", "name": "node2", "clockOffsetMs": -252_500},
                      {"isSelf": false, "status": "down", "name": "node3", "clockOffsetMs": null}],
            "disk": {"dataBytes": 5_000_000, "freeBytes": 1_000_000_000u64, "totalBytes": 4_000_000_000u64},
            "certificates": [{"bank": "bank-a", "profile": "posp", "count": 12,
                              "earliestNotAfter": 1_800_000_000u64, "expiringWithin30Days": 2}],
        });
        let up = m.render(Some(&node));
        assert!(!up.contains("peer=\"node3\"") && !up.contains("peer=\"node1\""), "{up}");
        for line in [
            "vpbox_node_up 1",
            "vpbox_node_height 42",
            "vpbox_node_transactions_committed_total 900",
            "vpbox_node_view_changes_total 1",
            "vpbox_node_links_total{outcome=\"refused\"} 1",
            "vpbox_node_peers_up 1",
            "vpbox_node_peer_clock_offset_seconds{peer=\"node2\"} -252.5",
            "vpbox_node_data_bytes 5000000",
            "vpbox_node_filesystem_free_bytes 1000000000",
            "vpbox_node_filesystem_size_bytes 4000000000",
            "vpbox_node_commit_latency_seconds_count 0",
            "vpbox_enrolled_certificates{bank=\"bank-a\",profile=\"posp\"} 12",
            "vpbox_enrolled_certificate_earliest_not_after_timestamp_seconds{bank=\"bank-a\",profile=\"posp\"} 1800000000",
            "vpbox_enrolled_certificates_expiring{bank=\"bank-a\",profile=\"posp\"} 2",
        ] {
            assert!(up.contains(&format!("{line}\n")), "{line} missing:\n{up}");
        }
    }
}
