//! The box's own configuration: which node it runs, where its files and sockets are, and where
//! its peers are on the network. One TOML file per box (`/etc/vpbox/box.toml` in the appliance;
//! `vpbox-dev/nodeN/box.toml` in a development cluster), typed here and checked by
//! `vpbox config check`.
//!
//! The annotated example, `docs/examples/box.toml` (which `vpbox config example` prints, and a
//! test parses and checks):
//!
//! ```toml
#![doc = include_str!("../../docs/examples/box.toml")]
//! ```
//!
//! Relative paths resolve against the file's folder.
//!
//! **Topology is not consortium state.** The genesis and the governance records name each node
//! (id, bank, certificate, consensus key) and nothing of where it runs; addresses live here, so
//! moving a box is an edit of the boxes' files and needs no vote. The node itself never dials
//! an address: it connects to `egress/N.sock` and the box's proxy (which listens there) dials
//! peer N's `address` over mutual TLS. (Without a proxy, anything that listens on
//! `egress/N.sock` and reaches node N's peer socket will do: the link handshake inside proves
//! the node either way.)
//!
//! What [`BoxConfig::check`] refuses, each with the field and the reason: unknown fields, a
//! peer listed twice or listed as itself, an address that is not `HOST:PORT` (a DNS name, an
//! IPv4 address or a bracketed IPv6 one; port 1 to 65535), a socket path longer than a Unix
//! socket address holds (107 bytes), a `[proxy]` profile that is not `sm` or `hybrid`.
//! `vpbox config check` adds the checks against the genesis (`vpbox_node::config`): it loads,
//! and every founding member other than this box's node has a `[[peers]]` entry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The annotated example configuration (`docs/examples/box.toml`).
pub const EXAMPLE: &str = include_str!("../../docs/examples/box.toml");

/// The longest path a Unix socket address holds (`sun_path` less its terminating NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// The box's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoxConfig {
    /// This box's node: its consensus id.
    pub node_id: u32,
    /// The genesis file.
    pub genesis: PathBuf,
    /// Where the node keeps its state.
    pub data_dir: PathBuf,
    /// The box's signer.
    pub signer: SignerConfig,
    /// The node's Unix sockets.
    pub sockets: Sockets,
    /// The other members' boxes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerBox>,
    /// The box's proxy; none for a node whose egress sockets something else provides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyConfig>,
    /// Who may reach the box and what it may reach (`vpbox firewall render`); none: the box
    /// has no firewall of its own (a development cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallConfig>,
}

/// The `[firewall]` table: the networks the box's firewall admits to each listener, and the
/// services it lets the box reach besides its peers (`vpbox_firewall`, which renders it with
/// `[proxy]` and `[[peers]]` into one nftables ruleset).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Networks of the POSP servers (CIDR, `10.20.0.0/16` or `2001:db8::/48`): the only
    /// sources admitted to the API listener.
    pub posp_networks: Vec<String>,
    /// The management network (CIDR): the only sources admitted to the admin listener and to
    /// SSH. At least one, and something on it to reach: without it the box could not be
    /// managed from the network.
    pub management_networks: Vec<String>,
    /// The SSH port admitted from the management network; none: no SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// NTP servers the box may query (IP addresses, UDP 123).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<String>,
    /// DNS servers the box may query (IP addresses, UDP and TCP 53).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// New TCP connections (SYNs) per second the box takes in all; past it they are dropped.
    /// Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syn_per_s: Option<u32>,
    /// New connections per second from one source address; past it they are dropped.
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_per_source_per_s: Option<u32>,
}

/// The `[proxy]` table: the proxy's listeners and TLS identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The P2P listener, `HOST:PORT`.
    pub p2p: String,
    /// The node's `vp-node` certificate chain (PEM, end entity first): the proxy's TLS identity
    /// on P2P links. Its key is the signer's `[signer] key`.
    pub certificate: PathBuf,
    /// The TLS profile between boxes.
    #[serde(default)]
    pub profile: TlsProfile,
    /// The API listener for POSP and admin clients, `HOST:PORT`; none: no API from the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// The API listener's TLS profile (`hybrid` for clients whose TLS has no RFC 8998, such
    /// as OpenSSL 3.0).
    #[serde(default)]
    pub api_profile: TlsProfile,
    /// The admin listener, `HOST:PORT` (plain HTTP: `/metrics` in Prometheus text format and
    /// `/health`); loopback or the management network only (the box's firewall admits only
    /// the management network to it). None: no admin listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The proxy's user (uid): the node believes the client identity a request carries
    /// (`x-vpbox-client`) only on a connection from this user (`SO_PEERCRED`). None: the
    /// node's own user (a box whose processes share one user, such as a development cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The API's limits (`vpbox_proxy::Limits`: sizes, deadlines, connection caps, rates);
    /// every field optional.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub limits: toml::Table,
}

/// Which TLS 1.3 profile (see `vpbox_tls::Profile`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsProfile {
    /// RFC 8998: TLS_SM4_GCM_SM3 over curveSM2.
    #[default]
    Sm,
    /// AES-GCM over X25519, SM2 identities.
    Hybrid,
}

/// How the node reaches its signer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// The signer's socket.
    pub socket: PathBuf,
    /// The consensus key's name in the signer.
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "consensus".into()
}

/// The node's sockets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sockets {
    /// Its JSON-RPC.
    pub rpc: PathBuf,
    /// Where incoming peer links arrive.
    pub peer: PathBuf,
    /// The folder of the sockets through which it reaches each peer (`N.sock` for node N).
    pub egress: PathBuf,
}

impl Sockets {
    /// The socket through which the node reaches node `peer`.
    pub fn egress_to(&self, peer: u32) -> PathBuf {
        egress_socket(&self.egress, peer)
    }
}

/// The socket in `egress` through which a node reaches node `peer`.
pub fn egress_socket(egress: &Path, peer: u32) -> PathBuf {
    egress.join(format!("{peer}.sock"))
}

/// Another member's box.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerBox {
    /// Its node's consensus id.
    pub id: u32,
    /// Its P2P listener, `HOST:PORT` (its proxy's).
    pub address: String,
}

/// What [`BoxConfig::check`] found that is worth saying but not wrong.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Remarks for the operator.
    pub notes: Vec<String>,
}

impl BoxConfig {
    /// Reads the file at `path`; relative paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a configuration; relative paths resolve against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut c: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for p in [
            &mut c.genesis,
            &mut c.data_dir,
            &mut c.signer.socket,
            &mut c.sockets.rpc,
            &mut c.sockets.peer,
            &mut c.sockets.egress,
        ]
        .into_iter()
        .chain(c.proxy.as_mut().map(|p| &mut p.certificate))
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    /// Checks the configuration against itself; every error is returned at once, each naming
    /// its field.
    pub fn check(&self) -> Result<Checked, Vec<String>> {
        let mut errors = Vec::new();
        let notes = Vec::new();
        for (what, p) in [
            ("signer.socket", self.signer.socket.clone()),
            ("sockets.rpc", self.sockets.rpc.clone()),
            ("sockets.peer", self.sockets.peer.clone()),
            // The longest egress socket: a node id has at most 10 digits.
            ("sockets.egress", egress_socket(&self.sockets.egress, u32::MAX)),
        ] {
            let len = p.as_os_str().len();
            if len > SOCKET_PATH_MAX {
                errors.push(format!(
                    "{what}: {} is {len} bytes; a Unix socket path holds at most \
                     {SOCKET_PATH_MAX}",
                    p.display()
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for p in &self.peers {
            if p.id == self.node_id {
                errors.push(format!("peers: node {} is this box's own node", p.id));
            }
            if !seen.insert(p.id) {
                errors.push(format!("peers: node {} is listed twice", p.id));
            }
            if let Err(e) = check_address(&p.address) {
                errors.push(format!("peers: node {}: address {:?}: {e}", p.id, p.address));
            }
        }
        if let Some(p) = &self.proxy {
            if let Err(e) = check_address(&p.p2p) {
                errors.push(format!("proxy.p2p: {:?}: {e}", p.p2p));
            }
            if let Some(Err(e)) = p.api.as_ref().map(|a| check_address(a)) {
                errors.push(format!("proxy.api: {e}"));
            }
            if let Some(admin) = &p.admin {
                if let Err(e) = check_address(admin) {
                    errors.push(format!("proxy.admin: {admin:?}: {e}"));
                } else if let Some((host, _)) = admin.rsplit_once(':') {
                    // Plain HTTP that tells the box's state: never on every network at once.
                    let ip = host.trim_start_matches('[').trim_end_matches(']');
                    // (A bare number such as "0", which would resolve to 0.0.0.0, is not an
                    // address `check_address` accepts.)
                    if ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_unspecified()) {
                        errors.push(format!(
                            "proxy.admin: {admin:?} listens on every network; name the \
                             loopback or the management network's address"
                        ));
                    }
                }
                if Some(admin) == p.api.as_ref() || *admin == p.p2p {
                    errors.push(format!("proxy.admin: {admin:?} is another listener's address"));
                }
            }
        }
        if errors.is_empty() { Ok(Checked { notes }) } else { Err(errors) }
    }

    /// The P2P address of node `peer`'s box, if this file names it.
    pub fn address_of(&self, peer: u32) -> Option<&str> {
        self.peers.iter().find(|p| p.id == peer).map(|p| p.address.as_str())
    }
}

/// Checks a `HOST:PORT` without resolving it: the host is a DNS name (letters, digits and
/// hyphens in dot-separated labels of 1 to 63 characters, 253 in all), an IPv4 address, or an
/// IPv6 address in brackets; the port is 1 to 65535.
pub fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address.rsplit_once(':').ok_or("expected HOST:PORT")?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('+') => {}
        _ => return Err(format!("port {port:?} is not 1 to 65535")),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("{v6:?} is not an IPv6 address"));
    }
    if host.contains(':') {
        return Err("an IPv6 address must be in brackets, as [::1]:7443".into());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric = host.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) || numeric {
        return Err(format!("{host:?} is not a DNS name or an IP address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
node_id = 1
genesis = "genesis.json"
data_dir = "data"
[signer]
socket = "signer.sock"
[sockets]
rpc = "/run/n/rpc.sock"
peer = "peer.sock"
egress = "egress"
[[peers]]
id = 2
address = "vp2.bank-a.example:7443"
"#;

    /// The annotated example operators are shown parses and passes the checks.
    #[test]
    fn the_annotated_example_is_a_valid_configuration() {
        let c = BoxConfig::parse(EXAMPLE, Path::new("/etc/vpbox")).unwrap();
        assert_eq!(c.check().map(|c| c.notes), Ok(vec![]));
        assert_eq!(c.address_of(2), Some("vp2.bank-a.example:7443"));
        let proxy = c.proxy.as_ref().unwrap();
        assert_eq!(proxy.limits.get("body_bytes_max").and_then(|v| v.as_integer()), Some(4194304));
        assert!(c.firewall.is_some());
    }

    #[test]
    fn parses_and_resolves_relative_paths() {
        let c = BoxConfig::parse(BASE, Path::new("/etc/vpbox")).unwrap();
        assert_eq!(c.genesis, Path::new("/etc/vpbox/genesis.json"));
        assert_eq!(c.sockets.rpc, Path::new("/run/n/rpc.sock"), "absolute stays");
        assert_eq!(c.signer.key, "consensus", "the default key name");
        assert_eq!(c.sockets.egress_to(3), Path::new("/etc/vpbox/egress/3.sock"));
        assert_eq!(c.address_of(2), Some("vp2.bank-a.example:7443"));
        assert_eq!(c.address_of(3), None);
    }

    #[test]
    fn refuses_unknown_and_missing_fields() {
        let e = BoxConfig::parse(&format!("{BASE}\nsurprise = 1"), Path::new("/")).unwrap_err();
        assert!(e.contains("surprise"), "{e}");
        let e = BoxConfig::parse(&BASE.replace("egress = \"egress\"\n", ""), Path::new("/"))
            .unwrap_err();
        assert!(e.contains("egress"), "{e}");
        // The first format's endpoints-in-genesis era had `id`: it is named, not guessed.
        let e = BoxConfig::parse(&BASE.replace("node_id", "id"), Path::new("/")).unwrap_err();
        assert!(e.contains("`id`"), "{e}");
    }

    #[test]
    fn addresses() {
        for good in ["vp2.bank-a.example:7443", "10.0.0.2:1", "[fd00::2]:65535", "localhost:80"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "vp2.bank-a.example",
            "vp2:0",
            "vp2:65536",
            "vp2:+80",
            "fd00::2:7443",
            "[fd00::zz]:7443",
            "-vp2.example:7443",
            "vp_2.example:7443",
            "10.0.0.256:7443",
            ":7443",
            "a..b:7443",
            "unix:/run/peer.sock",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_reports_every_error_at_once() {
        let text = format!(
            "{BASE}\n[[peers]]\nid = 2\naddress = \"x:1\"\n[[peers]]\nid = 1\naddress = \"nope\"\n"
        );
        let long = "s".repeat(SOCKET_PATH_MAX);
        let text = text.replace("/run/n/rpc.sock", &format!("/{long}"));
        let c = BoxConfig::parse(&text, Path::new("/nonexistent")).unwrap();
        let errors = c.check().unwrap_err();
        let all = errors.join("\n");
        for want in [
            "sockets.rpc",
            "node 2 is listed twice",
            "node 1 is this box's own node",
            "node 1: address \"nope\"",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        assert_eq!(errors.len(), 4, "{all}");
    }

    #[test]
    fn the_admin_listener_is_never_on_every_network_nor_on_another_listener() {
        let with = |admin: &str| {
            let text = format!(
                "{BASE}\n[proxy]\np2p = \"0.0.0.0:7443\"\ncertificate = \"n.crt\"\n\
                 api = \"0.0.0.0:8443\"\nadmin = \"{admin}\"\n"
            );
            BoxConfig::parse(&text, Path::new("/"))
                .unwrap()
                .check()
                .map(|_| ())
                .map_err(|e| e.join("\n"))
        };
        assert_eq!(with("127.0.0.1:9443"), Ok(()));
        assert_eq!(with("10.9.0.5:9443"), Ok(()), "a management network's address");
        for (bad, why) in [
            ("0.0.0.0:9443", "every network"),
            ("[::]:9443", "every network"),
            ("[::0]:9443", "every network"),
            ("0:9443", "not a DNS name or an IP address"),
            ("0.0.0.0:8443", "another listener"),
            ("admin", "proxy.admin"),
        ] {
            let e = with(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
