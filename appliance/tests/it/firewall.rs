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
    assert!(listed.contains("ip saddr @posp_v4 tcp dport 8443 accept"), "{listed}");
    // The host's own tables are untouched.
    let host = Command::new("nft").args(["list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("inet vpbox"));
}

/// The hosts of the flow test, each in its own namespace on one bridge (itself in a namespace
/// of its own, so nothing touches the host's network): `(name, address)`.
const HOSTS: [(&str, &str); 5] = [
    ("box", "10.77.0.1"),
    ("peer", "10.77.0.2"),
    ("posp", "10.77.0.3"),
    ("mgmt", "10.77.0.4"),
    ("stranger", "10.77.0.5"),
];

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

/// What a connection attempt met.
#[derive(Debug, PartialEq, Eq)]
enum Met {
    /// The handshake completed.
    Open,
    /// Nothing came back: the firewall dropped it.
    Dropped,
}

fn connect(from: &str, to: &str) -> Met {
    let to: std::net::SocketAddr = to.parse().unwrap();
    within(from, move || {
        match std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(700)) {
            Ok(_) => Met::Open,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Met::Dropped,
            Err(e) => panic!("{to}: {e} (neither open nor dropped)"),
        }
    })
}

/// The rendered rules, loaded in a box's namespace, judge real connections: each listener from
/// each kind of source, and the box's own connections out.
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
    for (i, (name, address)) in HOSTS.iter().enumerate() {
        let ns = Namespace(format!("{tag}-{name}"));
        ip(&["netns", "add", &ns.0]);
        let port = format!("port{i}");
        ip(&[
            "-n", &lan.0, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.0,
        ]);
        ip(&["-n", &lan.0, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns.0, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        hosts.push(ns);
    }
    let ns = |name: &str| format!("{tag}-{name}");
    // Listeners: the box's P2P, API, admin and SSH ports; a peer's P2P port and another of
    // its ports; a stranger's.
    let listen = |host: &str, address: &'static str| {
        within(&ns(host), move || std::net::TcpListener::bind(address).unwrap())
    };
    let _listeners = [
        listen("box", "0.0.0.0:7443"),
        listen("box", "0.0.0.0:8443"),
        listen("box", "10.77.0.1:9443"),
        listen("box", "0.0.0.0:22"),
        listen("peer", "0.0.0.0:7443"),
        listen("peer", "0.0.0.0:8000"),
        listen("stranger", "0.0.0.0:7443"),
    ];
    // Before the rules, everything is open.
    assert_eq!(connect(&ns("stranger"), "10.77.0.1:8443"), Met::Open);

    let scratch = Scratch::new();
    let text = std::fs::read_to_string(testdata("two-banks.toml")).unwrap();
    let text = text
        .replace(
            "[[peers]]\nid = 2\naddress = \"10.1.0.12:7443\"\n\n[[peers]]\nid = 3\naddress = \"192.0.2.13:7443\"\n\n[[peers]]\nid = 4\naddress = \"192.0.2.14:7443\"\n",
            "[[peers]]\nid = 2\naddress = \"10.77.0.2:7443\"\n",
        )
        .replace("admin = \"10.99.0.11:9443\"", "admin = \"10.77.0.1:9443\"")
        .replace("[\"10.20.0.0/16\", \"172.16.8.0/24\"]", "[\"10.77.0.3/32\"]")
        .replace("[\"10.99.0.0/24\"]", "[\"10.77.0.4/32\"]");
    assert!(text.contains("10.77.0.2:7443") && text.contains("10.77.0.3/32"), "{text}");
    let config = scratch.write("box.toml", text);
    let exe = env!("CARGO_BIN_EXE_vpbox");
    let out = in_namespace(&ns("box"), &[exe, "firewall", "apply", "--config", s(&config)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    use Met::{Dropped, Open};
    let flows = [
        ("peer", "10.77.0.1:7443", Open),
        ("posp", "10.77.0.1:7443", Dropped),
        ("mgmt", "10.77.0.1:7443", Dropped),
        ("stranger", "10.77.0.1:7443", Dropped),
        ("posp", "10.77.0.1:8443", Open),
        ("peer", "10.77.0.1:8443", Dropped),
        ("mgmt", "10.77.0.1:8443", Dropped),
        ("stranger", "10.77.0.1:8443", Dropped),
        ("mgmt", "10.77.0.1:9443", Open),
        ("posp", "10.77.0.1:9443", Dropped),
        ("stranger", "10.77.0.1:9443", Dropped),
        ("mgmt", "10.77.0.1:22", Open),
        ("peer", "10.77.0.1:22", Dropped),
        ("stranger", "10.77.0.1:22", Dropped),
        // The box's own connections: to its peer's P2P port only.
        ("box", "10.77.0.2:7443", Open),
        ("box", "10.77.0.2:8000", Dropped),
        ("box", "10.77.0.5:7443", Dropped),
    ];
    let judged: Vec<_> = flows
        .iter()
        .map(|(from, to, want)| {
            let (from, to) = (ns(from), to.to_string());
            let want = want == &Open;
            std::thread::spawn(move || {
                (from.clone(), to.clone(), connect(&from, &to) == Open, want)
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for j in judged {
        let (from, to, open, want) = j.join().unwrap();
        if open != want {
            wrong.push(format!("{from} -> {to}: open {open}, wanted {want}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // Drops are counted in the log rule's limit, not silently lost: the ruleset is the one
    // rendered, still whole.
    let listed = in_namespace(&ns("box"), &["nft", "list", "table", "inet", "vpbox"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("vpbox-drop-in: "));
    drop(hosts);
}
