//! `vpbox firewall render|check|apply` as an operator runs them: the golden rulesets, nft's
//! own check, a refused configuration, and a ruleset loaded into a network namespace's
//! kernel tables (never the host's).

use std::path::PathBuf;
use std::process::Command;

use crate::{Scratch, s, vpbox};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../firewall/testdata").join(name)
}

#[test]
fn render_prints_the_golden_ruleset_and_nft_checks_it() {
    let config = testdata("two-banks.toml");
    let r = vpbox(&["firewall", "render", "--config", s(&config)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.text(), std::fs::read_to_string(testdata("two-banks.nft")).unwrap());
    let scratch = Scratch::new();
    let out = scratch.path("rules.nft");
    let r = vpbox(&["firewall", "render", "--config", s(&config), "--out", s(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(std::fs::read_to_string(&out).unwrap().contains("table inet vpbox {"));
    let r = vpbox(&["firewall", "check", "--config", s(&config)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.text().contains("accepted by nft -c"), "{}", r.text());
}

#[test]
fn a_configuration_that_would_lock_out_the_management_network_is_refused() {
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(testdata("two-banks.toml"))
        .unwrap()
        .replace("ssh_port = 22\n", "")
        .replace("admin = \"10.99.0.11:9443\"", "admin = \"127.0.0.1:9443\"")
        .replace("management_networks = [\"10.99.0.0/24\"]", "management_networks = []");
    let config = scratch.write("box.toml", text);
    for action in ["render", "check", "apply"] {
        let r = vpbox(&["firewall", action, "--config", s(&config)]);
        assert_eq!(r.code, 1, "{action}: {}", r.text());
        assert!(r.stderr.contains("could not be managed from the network"), "{}", r.stderr);
        assert!(r.stderr.contains("1 error(s); no ruleset"), "{}", r.stderr);
        assert!(r.stdout.is_empty(), "nothing rendered");
    }
}

/// A network namespace removed on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn in_namespace(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().unwrap()
}

#[test]
fn apply_loads_the_ruleset_atomically_and_again_replaces_it_whole() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: not root, and `ip netns` needs root");
        return;
    }
    let ns = Namespace(format!("vpbox-fw-{}", std::process::id()));
    let added = Command::new("ip").args(["netns", "add", &ns.0]).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let config = testdata("two-banks.toml");
    let exe = env!("CARGO_BIN_EXE_vpbox");
    for _ in 0..2 {
        let out = in_namespace(&ns.0, &[exe, "firewall", "apply", "--config", s(&config)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let listed = in_namespace(&ns.0, &["nft", "list", "ruleset"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(listed.matches("table inet vpbox").count(), 1, "one table: {listed}");
    assert_eq!(listed.matches("policy drop;").count(), 3, "{listed}");
    assert!(listed.contains("ip saddr @posp_v4 tcp dport 8443 accept"), "{listed}");
    // The host's own tables are untouched.
    let host = Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("inet vpbox"));
}
