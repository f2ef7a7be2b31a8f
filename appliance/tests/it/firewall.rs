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
    // `vpbox config check` names it too, beside what else it finds (here: no genesis file).
    let r = vpbox(&["config", "check", "--config", s(&config)]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stderr.contains("could not be managed from the network"), "{}", r.stderr);
    assert!(r.stderr.contains("genesis"), "{}", r.stderr);
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
    assert!(listed.contains("ip saddr @posp_v4 tcp dport 8443 goto admit"), "{listed}");
    // The host's own tables are untouched.
    let host = Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("inet vpbox"));
}

/// The hosts of the flow test, each in its own namespace on one bridge (itself in a namespace
/// of its own, so nothing touches the host's network): `(name, last byte of its addresses)`,
/// each host at `10.77.0.N/24` and `fd77::N/64`.
const HOSTS: [(&str, u8); 6] =
    [("box", 1), ("peer", 2), ("posp", 3), ("mgmt", 4), ("stranger", 5), ("peer6", 6)];

/// The box's configuration in the flow test: peer 2 by its IPv4 address, peer 3 (host
/// `peer6`) by its IPv6 one; the POSP and management hosts by both; a low per-source rate so
/// a flood of a few dozen connections goes over it.
const FLOW_BOX: &str = r#"
node_id = 1
genesis = "/etc/vpbox/genesis.json"
data_dir = "/var/lib/vpbox/node"

[signer]
socket = "/run/vpbox/signer.sock"
key = "consensus"

[sockets]
rpc = "/run/vpbox/node/rpc.sock"
peer = "/run/vpbox/node/peer.sock"
egress = "/run/vpbox/egress"

[[peers]]
id = 2
address = "10.77.0.2:7443"

[[peers]]
id = 3
address = "[fd77::6]:7443"

[proxy]
p2p = "[::]:7443"
certificate = "/etc/vpbox/node.crt"
api = "[::]:8443"
admin = "10.77.0.1:9443"

[firewall]
posp_networks = ["10.77.0.3/32", "fd77::3/128"]
management_networks = ["10.77.0.4/32", "fd77::4/128"]
ssh_port = 22
ntp = ["10.77.0.4"]
dns = ["fd77::4"]
new_per_source_per_s = 5
"#;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `f` on a thread moved into namespace `ns` (sockets it opens stay there).
fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Whether a connection from namespace `from` to `to` completes its handshake: false if
/// nothing came back within 700 ms (the firewall dropped it). A refusal (RST) is neither, and
/// fails the test: every port here has a listener.
fn opens(from: &str, to: &str) -> bool {
    let to: std::net::SocketAddr = to.parse().unwrap();
    within(from, move || {
        match std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(700)) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => false,
            Err(e) => panic!("{to}: {e} (neither open nor dropped)"),
        }
    })
}

/// The rendered rules, loaded in a box's namespace, judge real connections over IPv4 and IPv6:
/// each listener from each kind of source, the box's own connections out, a flood over the
/// per-source rate, and one from two sources over the box-wide SYN rate. Prints the table and
/// `N passed, N failed`.
#[test]
fn the_rules_admit_each_listener_from_its_own_sources_and_the_box_reaches_only_its_peers() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: not root, and `ip netns` needs root");
        return;
    }
    let tag = format!("vpbox-fwf{}", std::process::id());
    let lan = Namespace(format!("{tag}-lan"));
    ip(&["netns", "add", &lan.0]);
    ip(&["-n", &lan.0, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &lan.0, "link", "set", "br0", "up"]);
    let mut hosts = Vec::new();
    for (i, (name, n)) in HOSTS.iter().enumerate() {
        let ns = Namespace(format!("{tag}-{name}"));
        ip(&["netns", "add", &ns.0]);
        let port = format!("port{i}");
        ip(&[
            "-n", &lan.0, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.0,
        ]);
        ip(&["-n", &lan.0, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns.0, "addr", "add", &format!("10.77.0.{n}/24"), "dev", "eth0"]);
        ip(&["-n", &ns.0, "-6", "addr", "add", &format!("fd77::{n}/64"), "dev", "eth0", "nodad"]);
        ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        hosts.push(ns);
    }
    let ns = |name: &str| format!("{tag}-{name}");
    // Listeners (dual-stack where the address is `[::]`): the box's P2P, API, admin and SSH
    // ports; the peers' P2P ports and another port; a stranger's.
    let listen = |host: &str, address: &'static str| {
        within(&ns(host), move || std::net::TcpListener::bind(address).unwrap())
    };
    let _listeners = [
        listen("box", "[::]:7443"),
        listen("box", "[::]:8443"),
        listen("box", "10.77.0.1:9443"),
        listen("box", "[::]:22"),
        listen("peer", "[::]:7443"),
        listen("peer", "[::]:8000"),
        listen("peer6", "[::]:7443"),
        listen("stranger", "[::]:7443"),
    ];
    // Before the rules, everything is open.
    assert!(opens(&ns("stranger"), "10.77.0.1:8443"));
    assert!(opens(&ns("stranger"), "[fd77::1]:8443"));

    let scratch = Scratch::new();
    let config = scratch.write("box.toml", FLOW_BOX);
    let exe = env!("CARGO_BIN_EXE_vpbox");
    let out = in_namespace(&ns("box"), &[exe, "firewall", "apply", "--config", s(&config)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    const OPEN: bool = true;
    const DROP: bool = false;
    let flows = [
        ("peer", "10.77.0.1:7443", OPEN),
        ("peer6", "[fd77::1]:7443", OPEN),
        ("peer", "[fd77::1]:7443", DROP), // peer 2 is listed by its IPv4 address only
        ("posp", "10.77.0.1:7443", DROP),
        ("mgmt", "[fd77::1]:7443", DROP),
        ("stranger", "10.77.0.1:7443", DROP),
        ("posp", "10.77.0.1:8443", OPEN),
        ("posp", "[fd77::1]:8443", OPEN),
        ("peer", "10.77.0.1:8443", DROP),
        ("mgmt", "[fd77::1]:8443", OPEN), // admins use the API too
        ("stranger", "10.77.0.1:8443", DROP),
        ("stranger", "[fd77::1]:8443", DROP),
        ("mgmt", "10.77.0.1:9443", OPEN),
        ("posp", "10.77.0.1:9443", DROP),
        ("stranger", "10.77.0.1:9443", DROP),
        ("mgmt", "10.77.0.1:22", OPEN),
        ("mgmt", "[fd77::1]:22", OPEN),
        ("peer", "10.77.0.1:22", DROP),
        ("stranger", "[fd77::1]:22", DROP),
        // The box's own connections: to its peers' P2P addresses and ports only.
        ("box", "10.77.0.2:7443", OPEN),
        ("box", "[fd77::6]:7443", OPEN),
        ("box", "10.77.0.2:8000", DROP),
        ("box", "[fd77::2]:7443", DROP),
        ("box", "10.77.0.5:7443", DROP),
        ("box", "[fd77::5]:7443", DROP),
    ];
    let judged: Vec<_> = flows
        .iter()
        .map(|(from, to, want)| {
            let (from, to, want) = (ns(from), to.to_string(), *want);
            std::thread::spawn(move || {
                let open = opens(&from, &to);
                (from, to, open, want)
            })
        })
        .collect();
    let mut failed = 0;
    let word = |open: bool| if open { "pass" } else { "drop" };
    for j in judged {
        let (from, to, open, want) = j.join().unwrap();
        let verdict = if open == want { "ok" } else { "FAILED" };
        failed += usize::from(open != want);
        let from = from.rsplit('-').next().unwrap_or_default();
        eprintln!("{from:>9} -> {to:<16} {:<5} (expected {:<5}) {verdict}", word(open), word(want));
    }
    // A flood from the POSP host, 40 connections at once, over its 5/s (burst 10): most are
    // dropped; the ones within the burst pass.
    let tries: Vec<_> = (0..40)
        .map(|_| {
            let from = ns("posp");
            std::thread::spawn(move || opens(&from, "10.77.0.1:8443"))
        })
        .collect();
    let passed = tries.into_iter().map(|t| t.join().unwrap()).filter(|open| *open).count();
    let flood_ok = (1..=15).contains(&passed);
    failed += usize::from(!flood_ok);
    eprintln!(
        "     posp -> 40 at once to 10.77.0.1:8443: {passed} passed, {} dropped (expected 1 to 15 \
         passed) {}",
        40 - passed,
        if flood_ok { "ok" } else { "FAILED" }
    );
    // The box-wide SYN cap: the same box at 5 new connections/s in all (burst 10) and the
    // default 50/s per source; 20 at once from each of two sources (each far within its own
    // rate, 40 together over the box's): most are dropped.
    let capped = FLOW_BOX.replace("new_per_source_per_s = 5", "syn_per_s = 5");
    assert_ne!(capped, FLOW_BOX);
    let config = scratch.write("capped.toml", capped);
    let out = in_namespace(&ns("box"), &[exe, "firewall", "apply", "--config", s(&config)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tries: Vec<_> = ["posp", "mgmt"]
        .iter()
        .flat_map(|host| std::iter::repeat_n(*host, 20))
        .map(|host| {
            let from = ns(host);
            std::thread::spawn(move || opens(&from, "10.77.0.1:8443"))
        })
        .collect();
    let passed = tries.into_iter().map(|t| t.join().unwrap()).filter(|open| *open).count();
    let cap_ok = (1..=15).contains(&passed);
    failed += usize::from(!cap_ok);
    eprintln!(
        "posp+mgmt -> 20 + 20 at once to 10.77.0.1:8443 under a box cap of 5/s: {passed} passed, \
         {} dropped (expected 1 to 15 passed) {}",
        40 - passed,
        if cap_ok { "ok" } else { "FAILED" }
    );
    let total = flows.len() + 2;
    eprintln!("{} passed, {failed} failed", total - failed);
    assert_eq!(failed, 0, "see the table above");
    drop(hosts);
}
