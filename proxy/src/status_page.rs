//! The box's status page (`GET /status` on the admin listener): what a person on the bank's
//! monitoring desk looks at rather than reads — this box's health, the alarms, the members of
//! the consortium with their status, the primary, heights and clocks, and the node's figures.
//!
//! One self-contained HTML document (inline CSS, no script, no outside resource: the admin
//! network may reach nothing else), refreshed by the browser every 10 s. Rendered here, sans-IO:
//! the node's `node_getNodes` answer, the trust state's CRLs and certificates and the time are
//! inputs; every text that comes from outside is HTML-escaped. The alarms are those of
//! `vpbox status` ([`crate::alarms`]), seen from this box.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::alarms;

/// How often the page asks the browser to load it again.
pub const REFRESH_S: u32 = 10;

/// What the page shows besides the node's answer.
pub struct Inputs<'a> {
    /// The CRL in force of each CA.
    pub crls: &'a [vpbox_ca::policy::CrlInForce],
    /// The member banks' roots and this box's own chain.
    pub certificates: &'a [crate::trust::CertExpiry],
    /// Whether the proxy has a trust state.
    pub trust_loaded: bool,
    /// Now.
    pub now: SystemTime,
}

/// `text` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An alarm: a problem (the box or the consortium cannot do its job, or soon not) or a
/// warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// A problem, not a warning.
    pub problem: bool,
    /// What, in words.
    pub text: String,
}

/// The alarms from this box's point of view: the health problems of `/health`, what runs out,
/// the disk, a peer's clock off from this box's, the signer's refusals, view changes.
pub fn alarms(node: Option<&Value>, inputs: &Inputs<'_>) -> Vec<Alarm> {
    let mut out = Vec::new();
    let (_, health) = crate::metrics::health(node, inputs.trust_loaded);
    for p in health["problems"].as_array().into_iter().flatten() {
        out.push(Alarm { problem: true, text: p.as_str().unwrap_or_default().to_string() });
    }
    let enrolled = node.and_then(|n| n.get("certificates")).cloned().unwrap_or(Value::Null);
    let (warnings, problems) =
        alarms::expiry_alarms(inputs.crls, inputs.certificates, &enrolled, inputs.now);
    out.extend(problems.into_iter().map(|text| Alarm { problem: true, text }));
    out.extend(warnings.into_iter().map(|text| Alarm { problem: false, text }));
    let Some(n) = node else { return out };
    if let Some((problem, text)) = n.get("disk").and_then(alarms::disk_alarm) {
        out.push(Alarm { problem, text: format!("this box: {text}") });
    }
    for p in n["nodes"].as_array().into_iter().flatten() {
        let Some(ms) = p["clockOffsetMs"].as_i64() else { continue };
        if ms.unsigned_abs() >= alarms::CLOCK_WARN_MS {
            out.push(Alarm {
                problem: false,
                text: format!(
                    "{}'s clock is {} {} this box's (check the time sync of both)",
                    p["name"].as_str().unwrap_or("?"),
                    humantime::format_duration(Duration::from_secs(ms.unsigned_abs() / 1000)),
                    if ms > 0 { "ahead of" } else { "behind" }
                ),
            });
        }
    }
    let refused = n["signer"]["refused"].as_u64().unwrap_or(0);
    if refused > 0 {
        out.push(Alarm {
            problem: true,
            text: format!(
                "the signer refused {refused} of this node's messages; last: {}",
                n["signer"]["lastRefusal"]["reason"].as_str().unwrap_or("?")
            ),
        });
    }
    out
}

/// The page.
pub fn render(node: Option<&Value>, inputs: &Inputs<'_>) -> String {
    let alarms = alarms(node, inputs);
    let unhealthy = alarms.iter().any(|a| a.problem);
    let me = node.and_then(|n| {
        n["nodes"].as_array()?.iter().find(|p| p["isSelf"] == Value::Bool(true)).cloned()
    });
    let title = match &me {
        Some(m) => {
            format!("{} ({})", m["name"].as_str().unwrap_or("?"), m["bank"].as_str().unwrap_or("?"))
        }
        None => "this box".to_string(),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>vpbox · {t}</title><style>{CSS}</style></head><body>\n\
         <header><h1>vpbox · {t}</h1><p id=\"health\" class=\"{class}\">{word}</p>\
         <p class=\"at\">{at} UTC · refreshed every {REFRESH_S} s</p></header>\n",
        t = escape(&title),
        class = if unhealthy { "unhealthy" } else { "ok" },
        word = if unhealthy { "UNHEALTHY" } else { "HEALTHY" },
        at = humantime::format_rfc3339_seconds(inputs.now),
    );
    h.push_str("<section><h2>Alarms</h2>");
    if alarms.is_empty() {
        h.push_str("<p id=\"alarms\" class=\"none\">None.</p>");
    } else {
        h.push_str("<ul id=\"alarms\">");
        for a in &alarms {
            let _ = write!(
                h,
                "<li class=\"alarm {}\">{}</li>",
                if a.problem { "problem" } else { "warning" },
                escape(&a.text)
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>\n");
    match node {
        None => {
            h.push_str("<section><h2>Consortium</h2><p>The node does not answer.</p></section>")
        }
        Some(n) => render_node(&mut h, n),
    }
    h.push_str("\n</body></html>\n");
    h
}

fn render_node(h: &mut String, n: &Value) {
    let num = |v: &Value| v.as_u64().map_or("—".to_string(), |x| x.to_string());
    h.push_str("<section><h2>Consortium</h2><table id=\"boxes\"><thead><tr>");
    for col in ["node", "bank", "status", "role", "height", "heard", "clock"] {
        let _ = write!(h, "<th>{col}</th>");
    }
    h.push_str("</tr></thead><tbody>");
    for p in n["nodes"].as_array().into_iter().flatten() {
        let status = p["status"].as_str().unwrap_or("?");
        let class = if status == "up" { "up" } else { "down" };
        let role = match (p["isPrimary"].as_bool(), p["isSelf"].as_bool()) {
            (Some(true), Some(true)) => "primary · this box",
            (Some(true), _) => "primary",
            (_, Some(true)) => "this box",
            _ => "",
        };
        let heard = p["delay"].as_u64().map_or("never".to_string(), |ms| format!("{ms} ms ago"));
        let clock =
            p["clockOffsetMs"].as_i64().map_or("—".to_string(), |ms| format!("{ms:+} ms"));
        let _ = write!(
            h,
            "<tr data-node=\"{id}\" class=\"{class}\"><td>{name}</td><td>{bank}</td>\
             <td class=\"status\">{status}</td><td>{role}</td><td>{height}</td><td>{heard}</td>\
             <td>{clock}</td></tr>",
            id = num(&p["id"]),
            name = escape(p["name"].as_str().unwrap_or("?")),
            bank = escape(p["bank"].as_str().unwrap_or("?")),
            status = escape(status),
            height = num(&p["height"]),
        );
    }
    h.push_str("</tbody></table></section>\n<section><h2>This node</h2><dl id=\"figures\">");
    let m = &n["metrics"];
    for (label, v) in [
        ("height", num(&n["height"])),
        ("view", num(&n["view"])),
        ("epoch", num(&n["epoch"])),
        ("pending transactions", num(&n["pending"])),
        ("blocks committed", num(&m["blocksCommitted"])),
        ("transactions committed", num(&m["transactionsCommitted"])),
        ("view changes", num(&m["viewChanges"])),
        ("signer refusals", num(&n["signer"]["refused"])),
    ] {
        let _ = write!(h, "<dt>{label}</dt><dd>{v}</dd>");
    }
    if let (Some(free), Some(total)) =
        (n["disk"]["freeBytes"].as_u64(), n["disk"]["totalBytes"].as_u64())
    {
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        let _ = write!(h, "<dt>disk free</dt><dd>{:.1} of {:.1} GiB</dd>", gib(free), gib(total));
    }
    h.push_str("</dl></section>");
}

/// The page's look: readable at a glance, red for a problem, amber for a warning.
const CSS: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;gap:24px;align-items:center}\
h1{font-size:20px;margin:0}h2{font-size:16px;margin:0 0 8px}\
section{background:#fff;margin:16px 24px;padding:14px 18px;border-radius:6px;box-shadow:0 1px 2px #0002}\
#health{font-weight:700;padding:4px 12px;border-radius:4px;margin:0}\
#health.ok{background:#1e8e3e}#health.unhealthy{background:#c5221f}\
.at{margin:0 0 0 auto;opacity:.8;font-size:13px}\
ul#alarms{margin:0;padding:0;list-style:none}\
.alarm{padding:6px 10px;margin:4px 0;border-left:6px solid;border-radius:3px}\
.alarm.problem{border-color:#c5221f;background:#fce8e6}.alarm.warning{border-color:#f9ab00;background:#fef7e0}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e5e8}\
tr.up td.status{color:#1e8e3e;font-weight:600}tr.down td.status{color:#c5221f;font-weight:600}\
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px;margin:0}dd{margin:0;font-weight:600}";

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node() -> Value {
        json!({
            "self": 1, "view": 2, "epoch": 0, "height": 42, "pending": 3, "primary": 2,
            "signer": {"refused": 0, "lastRefusal": null},
            "metrics": {"blocksCommitted": 40, "transactionsCommitted": 900, "viewChanges": 2},
            "disk": {"dataBytes": 1u64 << 30, "freeBytes": 50u64 << 30, "totalBytes": 100u64 << 30},
            "nodes": [
                {"id": 1, "name": "node1", "bank": "bank-a", "isPrimary": false, "isSelf": true,
                 "status": "up", "delay": 0, "clockOffsetMs": 0, "height": 42},
                {"id": 2, "name": "node2", "bank": "bank-a", "isPrimary": true, "isSelf": false,
                 "status": "up", "delay": 120, "clockOffsetMs": -3, "height": 42},
                {"id": 3, "name": "<node3>", "bank": "bank-b", "isPrimary": false, "isSelf": false,
                 "status": "unreachable", "delay": null, "clockOffsetMs": 252_000, "height": 40},
            ],
        })
    }

    /// The page names the box, shows each member with its status, role, height and clock, and
    /// lists the alarms: here a peer's clock off (a warning) and a CRL out of date (a problem,
    /// so the box reads UNHEALTHY). Outside text is escaped.
    #[test]
    fn the_page_shows_the_members_and_the_alarms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let crls = [vpbox_ca::policy::CrlInForce {
            ca: "00aa".into(),
            issuer: "O=bank-b".into(),
            next_update: Some(now - Duration::from_secs(60)),
        }];
        let inputs = Inputs { crls: &crls, certificates: &[], trust_loaded: true, now };
        let n = node();
        let page = render(Some(&n), &inputs);
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains("<title>vpbox · node1 (bank-a)</title>"), "{page}");
        assert!(page.contains("<p id=\"health\" class=\"unhealthy\">UNHEALTHY</p>"), "{page}");
        assert!(page.contains("<tr data-node=\"2\" class=\"up\"><td>node2</td><td>bank-a</td><td class=\"status\">up</td><td>primary</td><td>42</td><td>120 ms ago</td><td>-3 ms</td></tr>"), "{page}");
        assert!(page.contains("<td>&lt;node3&gt;</td>") && !page.contains("<node3>"), "escaped");
        assert!(page.contains("class=\"down\""), "{page}");
        let alarms = alarms(Some(&n), &inputs);
        assert_eq!(alarms.len(), 2, "{alarms:?}");
        assert!(alarms[0].problem && alarms[0].text.starts_with("the CRL of O=bank-b ran out"));
        assert!(
            !alarms[1].problem
                && alarms[1].text.starts_with("<node3>'s clock is 4m 12s ahead of this box's")
        );
        assert!(
            page.contains("<li class=\"alarm warning\">&lt;node3&gt;&#39;s clock is 4m 12s ahead"),
            "{page}"
        );
        assert!(page.contains("<dt>view changes</dt><dd>2</dd>"), "{page}");
        assert!(page.contains("<dt>disk free</dt><dd>50.0 of 100.0 GiB</dd>"), "{page}");
        // Healthy, without alarms; and a node that does not answer.
        let calm = Inputs { crls: &[], certificates: &[], trust_loaded: true, now };
        let mut quiet = node();
        quiet["nodes"][2]["clockOffsetMs"] = json!(5);
        quiet["nodes"][2]["status"] = json!("up");
        let page = render(Some(&quiet), &calm);
        assert!(
            page.contains("class=\"ok\">HEALTHY") && page.contains("id=\"alarms\" class=\"none\"")
        );
        let page = render(None, &calm);
        assert!(page.contains("UNHEALTHY") && page.contains("the node does not answer"));
    }
}
