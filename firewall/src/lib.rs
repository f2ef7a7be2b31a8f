//! The box's firewall: its configuration (`box.toml`'s `[proxy]` listeners, `[[peers]]`
//! addresses and `[firewall]` networks and servers) rendered into one nftables ruleset. Pure:
//! a configuration in, the ruleset's text out; `vpbox firewall check` hands the text to
//! `nft -c`, `vpbox firewall apply` to `nft -f`.
//!
//! The ruleset is one table, `inet vpbox` (IPv4 and IPv6 alike):
//!
//! - **input**, policy drop: established and related traffic; loopback; IPv6 neighbour
//!   discovery (without it IPv6 stops on the link); the admin listener and SSH from the
//!   management network only; the P2P listener from the consortium's peer addresses only and
//!   the API listener from the POSP networks (and the management network: admin certificates
//!   use the API too), these two through chain `admit`, which caps SYNs for the whole box
//!   (`syn_per_s`, default 500/s) and new connections per source address
//!   (`new_per_source_per_s`, default 50/s, a dynamic set that forgets a source after a
//!   minute) — counted after strangers are dropped, so their floods cannot spend the budget;
//!   ping from the management network (10/s); whatever else arrives is dropped, logged at
//!   most 10 times a minute (`vpbox-drop-in: `).
//! - **forward**, policy drop: a box routes nothing.
//! - **output**, policy drop: established and related traffic (the answers to the above);
//!   loopback; neighbour discovery; new connections to each peer's P2P address and port, to
//!   the NTP servers (UDP 123) and the DNS servers (UDP and TCP 53) only; the rest dropped and
//!   logged as above (`vpbox-drop-out: `).
//!
//! It is applied atomically: the file creates the table if it is missing, deletes it and
//! creates it whole, in one `nft -f` transaction, so no packet ever meets half a ruleset, and a
//! ruleset `nft` refuses changes nothing.
//!
//! What [`plan`] refuses, every reason at once: a box without `[firewall]` or `[proxy]`; no
//! peer (the P2P listener would admit nobody); a peer named by DNS (a rule needs an address:
//! DNS answers would decide who reaches the ledger); a network that is not CIDR or has host
//! bits set; a management network that would lock the management network out — none listed,
//! `/0` (everyone), or nothing on the box for it to reach (no SSH port and no admin listener
//! off loopback on an address of the management network's family); a peer of another address
//! family than a P2P listener bound to one address; an API listener with no POSP network; rate
//! limits of zero. Overlapping networks are merged (`auto-merge`), repeated servers listed
//! once, IPv4-mapped IPv6 addresses taken as the IPv4 addresses they are.
//!
//! The text is written here rather than through nftables' JSON dialect: the text is what a
//! security officer reviews and what the golden files under `testdata/` hold, and `nft -c`
//! judges exactly that text.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use vpbox_config::BoxConfig;

/// The default cap on SYNs per second for the whole box.
pub const SYN_PER_S: u32 = 500;
/// The default cap on new connections per second from one source address.
pub const NEW_PER_SOURCE_PER_S: u32 = 50;

/// An IP network in CIDR form, its host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.20.0.0/16`, `2001:db8::/48`, or a single address (a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr =
            addr.parse().map_err(|_| format!("`{text}` is not an IP network (CIDR)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        let network = Self { addr, prefix };
        if network.masked() != addr {
            return Err(format!(
                "`{text}` has host bits set: the network is {}",
                Self { addr: network.masked(), prefix }
            ));
        }
        Ok(network)
    }

    /// The address with its host bits cleared.
    fn masked(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// True if `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && Self { addr: ip, prefix: self.prefix }.masked() == self.addr
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A listener the firewall opens: the address it is bound to (none: every address of the
/// box) and its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listener {
    addr: Option<IpAddr>,
    port: u16,
}

impl Listener {
    fn parse(what: &str, text: &str) -> Result<Self, String> {
        let a: SocketAddr = text
            .parse()
            .map_err(|_| format!("{what} `{text}`: the firewall needs an IP address and a port"))?;
        let addr = (!a.ip().is_unspecified()).then_some(a.ip());
        Ok(Self { addr, port: a.port() })
    }

    /// Reachable only from the box itself.
    fn loopback_only(&self) -> bool {
        self.addr.is_some_and(|a| a.is_loopback())
    }
}

/// Everything the ruleset is rendered from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    node_id: u32,
    p2p: Listener,
    api: Option<Listener>,
    admin: Option<Listener>,
    ssh: Option<u16>,
    peers: Vec<SocketAddr>,
    posp: Vec<Network>,
    management: Vec<Network>,
    ntp: Vec<IpAddr>,
    dns: Vec<IpAddr>,
    syn_per_s: u32,
    new_per_source_per_s: u32,
}

/// Checks `config` for a firewall: the plan, or every reason it is refused.
pub fn plan(config: &BoxConfig) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let (Some(fw), Some(proxy)) = (&config.firewall, &config.proxy) else {
        if config.firewall.is_none() {
            errors.push("box.toml has no [firewall] table".into());
        }
        if config.proxy.is_none() {
            errors.push("box.toml has no [proxy]: the firewall opens its listeners".into());
        }
        return Err(errors);
    };
    let mut keep = |r: Result<Listener, String>| r.map_err(|e| errors.push(e)).ok();
    let p2p = keep(Listener::parse("[proxy] p2p", &proxy.p2p));
    let api = proxy.api.as_deref().map(|a| keep(Listener::parse("[proxy] api", a)));
    let admin = proxy.admin.as_deref().map(|a| keep(Listener::parse("[proxy] admin", a)));
    let networks = |field: &str, list: &[String], errors: &mut Vec<String>| -> Vec<Network> {
        list.iter()
            .filter_map(|n| {
                Network::parse(n).map_err(|e| errors.push(format!("[firewall] {field}: {e}"))).ok()
            })
            .collect()
    };
    let posp = networks("posp_networks", &fw.posp_networks, &mut errors);
    let management = networks("management_networks", &fw.management_networks, &mut errors);
    let addresses = |field: &str, list: &[String], errors: &mut Vec<String>| -> Vec<IpAddr> {
        list.iter()
            .filter_map(|a| {
                a.parse::<IpAddr>()
                    .map(|a| a.to_canonical())
                    .map_err(|_| {
                        errors.push(format!("[firewall] {field}: `{a}` is not an IP address"))
                    })
                    .ok()
            })
            .collect()
    };
    // (Sorted and without repeats: nftables refuses an element given twice.)
    let unique = |mut v: Vec<IpAddr>| {
        v.sort();
        v.dedup();
        v
    };
    let ntp = unique(addresses("ntp", &fw.ntp, &mut errors));
    let dns = unique(addresses("dns", &fw.dns, &mut errors));
    if config.peers.is_empty() {
        errors.push(
            "[[peers]]: none listed; the P2P listener admits only peers and would admit nobody"
                .into(),
        );
    }
    let mut peers = Vec::new();
    for p in &config.peers {
        match p.address.parse::<SocketAddr>() {
            // An IPv4-mapped IPv6 address is the IPv4 address it maps (its packets are IPv4).
            Ok(a) => {
                let a = SocketAddr::new(a.ip().to_canonical(), a.port());
                // A listener bound to one address takes only its family.
                if let Some(Listener { addr: Some(bound), .. }) = p2p
                    && a.is_ipv4() != bound.is_ipv4()
                {
                    errors.push(format!(
                        "peer {}: {a} cannot reach [proxy] p2p, bound to {bound} (another \
                         address family); bind p2p to a wildcard or list the peer by its other \
                         address",
                        p.id
                    ));
                }
                peers.push(a);
            }
            Err(_) => errors.push(format!(
                "peer {}: `{}` is not an IP address and port; the firewall admits peers by \
                 address, so a DNS answer would decide who reaches the ledger",
                p.id, p.address
            )),
        }
    }
    if fw.posp_networks.is_empty() && proxy.api.is_some() {
        errors.push(
            "[firewall] posp_networks: none listed, so no POSP could reach [proxy] api".into(),
        );
    }
    // The management network must be someone, not everyone, with something to reach.
    if fw.management_networks.is_empty() {
        errors.push(
            "[firewall] management_networks: none listed; the box could not be managed from \
             the network"
                .into(),
        );
    }
    if management.iter().any(|n| n.prefix == 0) {
        errors.push(
            "[firewall] management_networks: /0 is everyone, not a management network".into(),
        );
    }
    // Reachable: off loopback, and on an address of a family some management network has.
    let admin_reachable = admin.flatten().is_some_and(|a| {
        !a.loopback_only()
            && a.addr.is_none_or(|ip| management.iter().any(|n| n.addr.is_ipv4() == ip.is_ipv4()))
    });

    if !fw.management_networks.is_empty() && fw.ssh_port.is_none() && !admin_reachable {
        errors.push(
            "[firewall]: the management network would reach nothing on the box (no ssh_port, \
             and [proxy] admin is absent or on loopback): it would be locked out"
                .into(),
        );
    }
    if fw.ssh_port == Some(0) {
        errors.push("[firewall] ssh_port: 0 is not a port".into());
    }
    let syn_per_s = fw.syn_per_s.unwrap_or(SYN_PER_S);
    let new_per_source_per_s = fw.new_per_source_per_s.unwrap_or(NEW_PER_SOURCE_PER_S);
    if syn_per_s == 0 || new_per_source_per_s == 0 {
        errors.push("[firewall]: a rate of 0 would refuse every connection".into());
    }
    match (errors.is_empty(), p2p) {
        (true, Some(p2p)) => Ok(Plan {
            node_id: config.node_id,
            p2p,
            api: api.flatten(),
            admin: admin.flatten(),
            ssh: fw.ssh_port,
            peers,
            posp,
            management,
            ntp,
            dns,
            syn_per_s,
            new_per_source_per_s,
        }),
        _ => Err(errors),
    }
}

/// Renders `config`'s ruleset, or says why not.
pub fn render(config: &BoxConfig) -> Result<String, Vec<String>> {
    plan(config).map(|p| p.render())
}

/// One address family's names in nftables.
#[derive(Clone, Copy)]
struct Family {
    /// `v4` or `v6`: the sets' suffix.
    suffix: &'static str,
    /// `ip` or `ip6`: the header matched.
    header: &'static str,
    /// `ipv4_addr` or `ipv6_addr`: the sets' element type.
    addr_type: &'static str,
    v4: bool,
}

const FAMILIES: [Family; 2] = [
    Family { suffix: "v4", header: "ip", addr_type: "ipv4_addr", v4: true },
    Family { suffix: "v6", header: "ip6", addr_type: "ipv6_addr", v4: false },
];

/// A set's declaration: `elements` only when there are some (nftables refuses `{ }`).
fn set(out: &mut String, name: &str, f: Family, kind: &str, flags: &str, elements: &[String]) {
    let _ = write!(out, "\tset {name}_{} {{ type {kind}; ", f.suffix);
    if !flags.is_empty() {
        let _ = write!(out, "flags {flags}; ");
    }
    if flags == "interval" {
        // Overlapping networks (10.0.0.0/8 with 10.1.0.0/16) are merged, not refused.
        out.push_str("auto-merge; ");
    }
    if !elements.is_empty() {
        let _ = write!(out, "elements = {{ {} }} ", elements.join(", "));
    }
    out.push_str("}\n");
}

impl Plan {
    /// The ruleset's text, for `nft -f`.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "#!/usr/sbin/nft -f\n# The firewall of vpbox node {}, rendered by `vpbox firewall render` from \
             box.toml.\n# Do not edit: change box.toml and render again. Applied atomically (the \
             table is replaced whole).\ntable inet vpbox\ndelete table inet vpbox\n\ntable inet vpbox {{",
            self.node_id
        );
        for f in FAMILIES {
            let of = |ips: &[IpAddr]| -> Vec<String> {
                ips.iter().filter(|a| a.is_ipv4() == f.v4).map(ToString::to_string).collect()
            };
            let nets = |ns: &[Network]| -> Vec<String> {
                ns.iter().filter(|n| n.addr.is_ipv4() == f.v4).map(ToString::to_string).collect()
            };
            let peer_ips: std::collections::BTreeSet<IpAddr> =
                self.peers.iter().map(SocketAddr::ip).collect();
            let peer_ips = of(&peer_ips.into_iter().collect::<Vec<_>>());
            let endpoints: Vec<String> = self
                .peers
                .iter()
                .filter(|p| p.is_ipv4() == f.v4)
                .map(|p| format!("{} . {}", p.ip(), p.port()))
                .collect();
            set(&mut o, "peers", f, f.addr_type, "", &peer_ips);
            let endpoint_type = format!("{} . inet_service", f.addr_type);
            set(&mut o, "peer_endpoints", f, &endpoint_type, "", &endpoints);
            set(&mut o, "posp", f, f.addr_type, "interval", &nets(&self.posp));
            set(&mut o, "management", f, f.addr_type, "interval", &nets(&self.management));
            set(&mut o, "ntp", f, f.addr_type, "", &of(&self.ntp));
            set(&mut o, "dns", f, f.addr_type, "", &of(&self.dns));
            let _ = writeln!(
                o,
                "\tset new_per_source_{} {{ type {}; flags dynamic; timeout 1m; size 65535; }}",
                f.suffix, f.addr_type
            );
        }
        let nd = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, \
                  nd-router-advert } accept";
        let log = |chain: &str| {
            format!(
                "\t\tlimit rate 10/minute burst 20 packets log prefix \"vpbox-drop-{chain}: \" level info\n"
            )
        };
        // The rates apply to connections from listed sources only (`admit`): strangers are
        // dropped by the policy before they can spend the box's SYN budget, and the
        // management network's own services are not rate-limited at all.
        let _ = writeln!(
            o,
            "\n\tchain admit {{\n\
             \t\ttcp flags & (fin|syn|rst|ack) == syn limit rate over {syn}/second burst {burst} packets drop",
            syn = self.syn_per_s,
            burst = self.syn_per_s.saturating_mul(2),
        );
        for f in FAMILIES {
            let _ = writeln!(
                o,
                "\t\tct state new update @new_per_source_{s} {{ {h} saddr limit rate over {n}/second \
                 burst {b} packets }} drop",
                s = f.suffix,
                h = f.header,
                n = self.new_per_source_per_s,
                b = self.new_per_source_per_s.saturating_mul(2),
            );
        }
        let _ = writeln!(
            o,
            "\t\taccept\n\t}}\n\n\tchain input {{\n\t\ttype filter hook input priority filter; policy drop;\n\
             \t\tct state established,related accept\n\t\tct state invalid drop\n\
             \t\tiif \"lo\" accept\n\t\t{nd}"
        );
        let open = |o: &mut String, sources: &str, to: Listener, verdict: &str| {
            for f in FAMILIES {
                let daddr = match to.addr {
                    Some(a) if a.is_ipv4() != f.v4 => continue,
                    Some(a) => format!("{} daddr {a} ", f.header),
                    None => String::new(),
                };
                let _ = writeln!(
                    o,
                    "\t\t{h} saddr @{sources}_{s} {daddr}tcp dport {p} {verdict}",
                    h = f.header,
                    s = f.suffix,
                    p = to.port
                );
            }
        };
        if let Some(admin) = self.admin.filter(|a| !a.loopback_only()) {
            o.push_str("\t\t# /metrics and /health from the management network\n");
            open(&mut o, "management", admin, "accept");
        }
        if let Some(port) = self.ssh {
            o.push_str("\t\t# SSH from the management network\n");
            open(&mut o, "management", Listener { addr: None, port }, "accept");
        }
        o.push_str("\t\t# P2P from the consortium's peers, within the rates\n");
        open(&mut o, "peers", self.p2p, "goto admit");
        if let Some(api) = self.api {
            // Admin certificates use the API too: from the management network.
            o.push_str("\t\t# the API from the POSP and management networks, within the rates\n");
            open(&mut o, "posp", api, "goto admit");
            open(&mut o, "management", api, "goto admit");
        }
        o.push_str(
            "\t\tip saddr @management_v4 icmp type echo-request limit rate 10/second accept\n\
             \t\tip6 saddr @management_v6 icmpv6 type echo-request limit rate 10/second accept\n",
        );
        o.push_str(&log("in"));
        o.push_str(
            "\t}\n\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n\n\
             \tchain output {\n\t\ttype filter hook output priority filter; policy drop;\n\
             \t\tct state established,related accept\n\t\tct state invalid drop\n\
             \t\toif \"lo\" accept\n",
        );
        let _ = writeln!(o, "\t\t{nd}");
        for f in FAMILIES {
            let (h, s) = (f.header, f.suffix);
            let _ = writeln!(
                o,
                "\t\t{h} daddr . tcp dport @peer_endpoints_{s} accept\n\
                 \t\t{h} daddr @ntp_{s} udp dport 123 accept\n\
                 \t\t{h} daddr @dns_{s} udp dport 53 accept\n\
                 \t\t{h} daddr @dns_{s} tcp dport 53 accept"
            );
        }
        o.push_str(&log("out"));
        o.push_str("\t}\n}\n");
        o
    }
}

#[cfg(test)]
mod tests;
