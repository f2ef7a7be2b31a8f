use std::path::{Path, PathBuf};

use super::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

fn config(text: &str) -> BoxConfig {
    toml::from_str(text).unwrap()
}

fn example(name: &str) -> BoxConfig {
    config(&std::fs::read_to_string(testdata().join(format!("{name}.toml"))).unwrap())
}

const EXAMPLES: [&str; 2] = ["two-banks", "dual-stack"];

/// Each example renders exactly its golden file (`VPBOX_UPDATE_GOLDEN=1` writes them anew,
/// for review in the diff).
#[test]
fn examples_render_their_golden_rulesets() {
    for name in EXAMPLES {
        let text = render(&example(name)).unwrap();
        let golden = testdata().join(format!("{name}.nft"));
        if std::env::var_os("VPBOX_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &text).unwrap();
        }
        assert_eq!(text, std::fs::read_to_string(&golden).unwrap(), "{name}");
    }
}

/// `nft -c` (nftables 1.0.6, Debian 12) accepts every golden ruleset. Needs root (the check
/// asks the kernel), as the CI runs.
#[test]
fn nft_accepts_the_golden_rulesets() {
    for name in EXAMPLES {
        let golden = testdata().join(format!("{name}.nft"));
        let out = std::process::Command::new("nft")
            .args(["-c", "-f"])
            .arg(&golden)
            .output()
            .expect("nft (Debian's nftables; scripts/deps.sh installs it)");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// What the rules say, checked on the example as the spec states it (not as text).
#[test]
fn each_listener_is_opened_to_its_own_sources_only() {
    let text = render(&example("two-banks")).unwrap();
    let rules: Vec<&str> = text.lines().map(str::trim).collect();
    let has = |r: &str| rules.contains(&r);
    assert!(has("type filter hook input priority filter; policy drop;"));
    assert!(has("type filter hook forward priority filter; policy drop;"));
    assert!(has("type filter hook output priority filter; policy drop;"));
    assert!(has("ip saddr @peers_v4 tcp dport 7443 goto admit"), "P2P from peers");
    assert!(has("ip saddr @posp_v4 tcp dport 8443 goto admit"), "API from POSPs");
    assert!(has("ip saddr @management_v4 tcp dport 8443 goto admit"), "API from admins");
    assert!(has("ip saddr @management_v4 ip daddr 10.99.0.11 tcp dport 9443 accept"));
    assert!(has("ip saddr @management_v4 tcp dport 22 accept"));
    assert!(has("ip daddr . tcp dport @peer_endpoints_v4 accept"), "egress to peers only");
    assert!(text.contains("elements = { 10.1.0.12 . 7443, 192.0.2.13 . 7443, 192.0.2.14 . 7443 }"));
    assert!(text.contains(
        "set posp_v4 { type ipv4_addr; flags interval; auto-merge; elements = { 10.20.0.0/16, 172.16.8.0/24 } }"
    ));
    assert!(text.contains("set ntp_v4 { type ipv4_addr; elements = { 10.99.0.1, 10.99.0.2 } }"));
    // No rule opens a listener port to every source.
    for port in ["7443", "8443", "9443", "22"] {
        let opened = |r: &&&str| {
            r.contains(&format!("dport {port} accept")) || r.contains(&format!("dport {port} goto"))
        };
        for r in rules.iter().filter(opened) {
            assert!(r.contains("saddr @"), "{r}");
        }
    }
    // The rates bind listed sources only, after the drop of strangers; management's own
    // services are not rate-limited.
    let admit = text.find("chain admit {").unwrap();
    let input = text.find("chain input {").unwrap();
    assert!(admit < input && text[admit..input].contains("limit rate over 500/second"));
    assert!(!text[input..].contains("limit rate over 500/second"));
    assert!(has("ip saddr @management_v4 tcp dport 22 accept"));
    // An IPv4-mapped peer address is its IPv4 address.
    let mut c = example("two-banks");
    c.peers[0].address = "[::ffff:10.1.0.12]:7443".into();
    assert!(render(&c).unwrap().contains("elements = { 10.1.0.12, 192.0.2.13"));
    // A loopback admin listener is not opened at all.
    let mut c = example("two-banks");
    c.proxy.as_mut().unwrap().admin = Some("127.0.0.1:9443".into());
    assert!(!render(&c).unwrap().contains("dport 9443"));
}

#[test]
fn configurations_that_lock_out_or_open_up_are_refused_with_every_reason() {
    let refused = |edit: &dyn Fn(&mut BoxConfig), want: &str| {
        let mut c = example("two-banks");
        edit(&mut c);
        let errors = plan(&c).unwrap_err();
        assert!(errors.iter().any(|e| e.contains(want)), "{want}: {errors:?}");
    };
    fn fw(c: &mut BoxConfig) -> &mut vpbox_config::FirewallConfig {
        c.firewall.as_mut().unwrap()
    }
    refused(&|c| c.firewall = None, "no [firewall]");
    refused(&|c| c.proxy = None, "no [proxy]");
    refused(&|c| c.peers.clear(), "would admit nobody");
    refused(&|c| c.peers[0].address = "vp2.bank-a.example:7443".into(), "DNS answer");
    refused(&|c| fw(c).management_networks.clear(), "could not be managed");
    refused(&|c| fw(c).management_networks = vec!["0.0.0.0/0".into()], "everyone");
    refused(
        &|c| {
            fw(c).ssh_port = None;
            c.proxy.as_mut().unwrap().admin = Some("127.0.0.1:9443".into());
        },
        "locked out",
    );
    refused(
        &|c| {
            fw(c).ssh_port = None;
            c.proxy.as_mut().unwrap().admin = None;
        },
        "locked out",
    );
    refused(&|c| fw(c).posp_networks.clear(), "no POSP could reach");
    refused(&|c| fw(c).posp_networks = vec!["10.20.0.1/16".into()], "host bits set");
    refused(&|c| fw(c).posp_networks = vec!["10.20.0.0/33".into()], "prefix length");
    refused(&|c| fw(c).posp_networks = vec!["posp.example".into()], "not an IP network");
    refused(&|c| fw(c).ntp = vec!["ntp.example".into()], "not an IP address");
    refused(&|c| fw(c).syn_per_s = Some(0), "rate of 0");
    refused(&|c| fw(c).ssh_port = Some(0), "not a port");
    refused(&|c| c.proxy.as_mut().unwrap().p2p = "box.example:7443".into(), "needs an IP");
    refused(
        &|c| c.proxy.as_mut().unwrap().p2p = "[2001:db8::1]:7443".into(),
        "another address family",
    );
    refused(
        &|c| {
            fw(c).ssh_port = None;
            c.proxy.as_mut().unwrap().admin = Some("[2001:db8::1]:9443".into());
        },
        "locked out",
    );
    // Every reason at once.
    let mut c = example("two-banks");
    c.peers.clear();
    fw(&mut c).management_networks.clear();
    fw(&mut c).posp_networks.clear();
    assert_eq!(plan(&c).unwrap_err().len(), 3);
    // Without SSH, an admin listener on the management network is enough.
    let mut c = example("two-banks");
    fw(&mut c).ssh_port = None;
    assert!(plan(&c).is_ok());
}

#[test]
fn networks_parse_as_cidr_with_host_bits_clear() {
    let n = Network::parse("10.20.0.0/16").unwrap();
    assert!(n.contains("10.20.255.1".parse().unwrap()));
    assert!(!n.contains("10.21.0.1".parse().unwrap()));
    assert!(!n.contains("::ffff:10.20.0.1".parse().unwrap()), "families never mix");
    assert_eq!(Network::parse("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
    assert_eq!(Network::parse("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
    assert!(Network::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
    let e = Network::parse("10.20.0.1/16").unwrap_err();
    assert!(e.contains("10.20.0.0/16"), "{e}");
    for bad in ["10.20.0.0/", "10.20.0.0/-1", "10.0.0.0/+8", "2001:db8::/129", "10.0/8", ""] {
        assert!(Network::parse(bad).is_err(), "{bad}");
    }
}
