//! `vpbox cluster up --netns`: each box of a local cluster in a network namespace of its own,
//! so that its proxy listens on an address of its own and its links cross a real network, as
//! between banks' boxes, while the whole consortium still runs on one machine.
//!
//! For a cluster whose tag is `1a2b3c` on the /24 `10.X.Y.0`:
//!
//! ```text
//! root namespace (the operator's CLI, POSP clients)
//!   vpbr-1a2b3c  10.X.Y.1/24   a Linux bridge
//!     ├─ vp1a2b3c-1 ══ veth ══ eth0 10.X.Y.11/24, lo    namespace vpbox-1a2b3c-node1
//!     │                                                 signer, node, proxy (P2P :7051, API :8443)
//!     ├─ vp1a2b3c-2 ══ veth ══ eth0 10.X.Y.12/24, lo    namespace vpbox-1a2b3c-node2
//!     …
//! ```
//!
//! Names and addresses are chosen so that clusters live side by side (parallel tests, an
//! operator's second cluster):
//! - the tag is the first 6 hex digits of the SM3 hash of the cluster's canonical folder, so two
//!   folders give two tags (a 24-bit clash is possible but unlikely, and refused, not shared:
//!   see [`plan`]); interface names stay within Linux's 15 bytes (`IFNAMSIZ` less its NUL): the
//!   bridge is `vpbr-` + tag (11), a box's host end `vp` + tag + `-` + id (at most 11);
//! - the /24 is taken from 10.128.0.0/9, starting at a place the tag's hash picks and skipping
//!   every /24 that overlaps an address on an interface of the machine (`ip -j -4 addr`); the
//!   bridge is claimed (created with `.1`) as soon as it is chosen, so that a cluster planned a
//!   moment later sees it;
//! - box I is `.(10+I)`, its proxy on fixed ports ([`P2P_PORT`], [`API_PORT`]): each box has
//!   the address to itself, as a real box has.
//!
//! The choice is recorded in `DIR/netns.toml` ([`Network`]): a restart (`cluster up`),
//! `add-node`, `join` and `down` read it; the boxes' own files (`box.toml`) carry the addresses
//! their proxies listen on and dial, and the client commands reach an API there from the root
//! namespace through the bridge. The nodes and signers need no network at all: their Unix
//! sockets live on the filesystem, which the namespaces share.

use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The proxy's P2P listener port on its box's address (the address is the box's alone).
pub(crate) const P2P_PORT: u16 = 7051;

/// The proxy's API listener port on its box's address.
pub(crate) const API_PORT: u16 = 8443;

/// The record of a cluster's network, in its folder.
const FILE: &str = "netns.toml";

/// Where `ip netns` keeps its named namespaces (iproute2's `NETNS_RUN_DIR`).
const NETNS_RUN_DIR: &str = "/run/netns";

/// The /24s a cluster may take: 10.128.0.0/9, the second octet from here up to 255.
const SECOND_OCTET_MIN: u8 = 128;

/// How many /24s that block holds.
const SUBNETS: u32 = (256 - SECOND_OCTET_MIN as u32) * 256;

/// The highest box id with an address (`.(10+id)` stays below the broadcast `.255`).
const BOX_ID_MAX: u32 = 200;

/// A cluster's network, as `DIR/netns.toml` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Network {
    /// Six lowercase hex digits naming the cluster's namespaces and interfaces.
    pub(crate) tag: String,
    /// The cluster's /24, as its network address (`10.X.Y.0`): the bridge is `.1`, box I
    /// `.(10+I)`.
    pub(crate) subnet: Ipv4Addr,
}

impl Network {
    /// The bridge in the root namespace.
    pub(crate) fn bridge(&self) -> String {
        format!("vpbr-{}", self.tag)
    }

    /// The prefix of the names of this cluster's namespaces.
    fn namespace_prefix(&self) -> String {
        format!("vpbox-{}-", self.tag)
    }

    /// Box `i`'s namespace.
    pub(crate) fn namespace(&self, i: u32) -> String {
        format!("{}node{i}", self.namespace_prefix())
    }

    /// The prefix of the names of the veths' root-namespace ends.
    fn host_veth_prefix(&self) -> String {
        format!("vp{}-", self.tag)
    }

    /// The root-namespace end of box `i`'s veth pair (the other end is `eth0` in its
    /// namespace).
    fn host_veth(&self, i: u32) -> String {
        format!("{}{i}", self.host_veth_prefix())
    }

    fn octets(&self, last: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.octets();
        Ipv4Addr::new(a, b, c, last)
    }

    /// The bridge's address: the root namespace's on the cluster's /24.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        self.octets(1)
    }

    /// Box `i`'s address.
    pub(crate) fn address(&self, i: u32) -> Result<Ipv4Addr> {
        if i == 0 || i > BOX_ID_MAX {
            bail!("box {i} has no address on a --netns cluster (ids 1 to {BOX_ID_MAX})");
        }
        Ok(self.octets(10 + i as u8))
    }

    /// Box `i`'s proxy listeners: P2P and API.
    pub(crate) fn listeners(&self, i: u32) -> Result<(String, String)> {
        let a = self.address(i)?;
        Ok((format!("{a}:{P2P_PORT}"), format!("{a}:{API_PORT}")))
    }

    /// Checks what a hand-edited file could get wrong: names that would exceed `IFNAMSIZ` or
    /// carry odd bytes, and a subnet that is not a /24's network address.
    fn check(&self) -> Result<()> {
        let tag_ok = self.tag.len() == 6
            && self.tag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !tag_ok {
            bail!("tag {:?} is not 6 lowercase hex digits", self.tag);
        }
        if self.subnet.octets()[3] != 0 {
            bail!("subnet {} is not a /24's network address (x.y.z.0)", self.subnet);
        }
        Ok(())
    }
}

/// The network recorded in cluster folder `dir`, or none for a loopback cluster.
pub(crate) fn load(dir: &Path) -> Result<Option<Network>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let net: Network = toml::from_str(&text).with_context(|| path.display().to_string())?;
    net.check().with_context(|| path.display().to_string())?;
    Ok(Some(net))
}

/// Fails unless this process is root: namespaces, bridges and veths are the kernel's to give
/// only to root (CAP_NET_ADMIN and CAP_SYS_ADMIN), and `what` should say so plainly rather
/// than fail halfway with EPERM.
pub(crate) fn require_root(what: &str) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "{what} needs root: only root may create, enter and delete network namespaces, \
             bridges and veth pairs (run it as root, or use a loopback cluster: no --netns)"
        );
    }
    Ok(())
}

/// Chooses the network of a new cluster in `dir` (canonical), records it in `dir/netns.toml`
/// and claims its /24 by creating the bridge. A recorded network is returned as it is.
pub(crate) fn plan(dir: &Path) -> Result<Network> {
    if let Some(net) = load(dir)? {
        return Ok(net);
    }
    require_root("`vpbox cluster up --netns`")?;
    let mut seed = b"vpbox cluster netns\n".to_vec();
    seed.extend_from_slice(dir.as_os_str().as_bytes());
    let hash = vpbox_sm::sm3::hash(&seed).0;
    let tag = hex::encode(&hash[..3]);
    let start = u32::from(u16::from_be_bytes([hash[3], hash[4]])) % SUBNETS;
    // Another folder whose tag is the same (a 24-bit clash), or this folder's cluster that was
    // deleted without `cluster down`: either way the names are taken, and sharing them would
    // tangle two clusters.
    let bridge = format!("vpbr-{tag}");
    if interface_exists(&bridge) {
        bail!(
            "the bridge {bridge} that a cluster in {} would use exists already: another \
             cluster's (bring it down), or one deleted without `vpbox cluster down` (`ip link \
             del {bridge}` and `ip netns del` its vpbox-{tag}-node* namespaces)",
            dir.display()
        );
    }
    let used = addresses()?;
    let subnet = choose_subnet(start, &used).context("no /24 in 10.128.0.0/9 is free")?;
    let net = Network { tag, subnet };
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let text = format!(
        "# The network of this --netns cluster: names and addresses (see `vpbox cluster up \
         --help`).\n{}",
        toml::to_string(&net)?
    );
    std::fs::write(&tmp, text).with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, &path).with_context(|| path.display().to_string())?;
    ensure_bridge(&net)?;
    Ok(net)
}

/// The first /24 from `start` (an index into 10.128.0.0/9) that overlaps none of `used`.
fn choose_subnet(start: u32, used: &[Used]) -> Option<Ipv4Addr> {
    (0..SUBNETS)
        .map(|k| (start + k) % SUBNETS)
        .map(subnet_at)
        .find(|candidate| !used.iter().any(|u| overlaps(u.address, u.prefix_len, *candidate)))
}

/// The `index`th /24 of 10.128.0.0/9.
fn subnet_at(index: u32) -> Ipv4Addr {
    // index < SUBNETS = 128 * 256: both quotient and remainder fit a byte.
    Ipv4Addr::new(10, SECOND_OCTET_MIN + (index / 256) as u8, (index % 256) as u8, 0)
}

/// Whether `address/prefix_len` and the /24 at `subnet` share an address.
fn overlaps(address: Ipv4Addr, prefix_len: u8, subnet: Ipv4Addr) -> bool {
    let bits = u32::from(prefix_len.min(24));
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    u32::from(address) & mask == u32::from(subnet) & mask
}

/// An IPv4 address on one of the machine's interfaces.
#[derive(Debug)]
struct Used {
    address: Ipv4Addr,
    prefix_len: u8,
}

/// Every IPv4 address on the machine's interfaces (root namespace), from `ip -j -4 addr`.
fn addresses() -> Result<Vec<Used>> {
    #[derive(Deserialize)]
    struct Interface {
        #[serde(default)]
        addr_info: Vec<AddrInfo>,
    }
    #[derive(Deserialize)]
    struct AddrInfo {
        local: Option<Ipv4Addr>,
        prefixlen: Option<u8>,
    }
    let json = ip(&["-j", "-4", "addr", "show"])?;
    let interfaces: Vec<Interface> =
        serde_json::from_str(&json).context("reading the output of `ip -j -4 addr show`")?;
    Ok(interfaces
        .into_iter()
        .flat_map(|i| i.addr_info)
        .filter_map(|a| Some(Used { address: a.local?, prefix_len: a.prefixlen.unwrap_or(32) }))
        .collect())
}

fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn namespace_exists(name: &str) -> bool {
    Path::new(NETNS_RUN_DIR).join(name).exists()
}

/// Makes sure the cluster's network in `dir` reaches box `i`, and returns the namespace its
/// processes run in; none for a loopback cluster. Whatever exists is kept: a restart after
/// `down` builds it again from the record.
pub(crate) fn enter(dir: &Path, i: u32) -> Result<Option<String>> {
    let Some(net) = load(dir)? else { return Ok(None) };
    require_root("a --netns cluster")?;
    ensure_bridge(&net)?;
    ensure_box(&net, i)?;
    Ok(Some(net.namespace(i)))
}

/// Creates the bridge with the gateway's address unless it exists. A /24 that something
/// else took while the cluster was down is refused: the boxes' files carry its addresses.
fn ensure_bridge(net: &Network) -> Result<()> {
    let bridge = net.bridge();
    if interface_exists(&bridge) {
        return Ok(());
    }
    if let Some(u) = addresses()?.iter().find(|u| overlaps(u.address, u.prefix_len, net.subnet)) {
        bail!(
            "the cluster's network {}/24 (its netns.toml) overlaps {}/{} on this machine now: \
             free it, or create a new cluster",
            net.subnet,
            u.address,
            u.prefix_len
        );
    }
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    let gateway = format!("{}/24", net.gateway());
    let configured = ip(&["addr", "add", &gateway, "dev", &bridge])
        .and_then(|_| ip(&["link", "set", &bridge, "up"]));
    if configured.is_err() {
        let _ = ip(&["link", "del", &bridge]);
    }
    configured.map(drop)
}

/// Creates box `i`'s namespace and its veth pair on the bridge unless they exist. The pair
/// is made with its box end inside the namespace already (`peer … netns`), so no `eth0`
/// ever appears in the root namespace; a veth's ends live and die together, so a host end
/// that exists means a configured box.
fn ensure_box(net: &Network, i: u32) -> Result<()> {
    let ns = net.namespace(i);
    let address = format!("{}/24", net.address(i)?);
    if !namespace_exists(&ns) {
        ip(&["netns", "add", &ns])?;
    }
    let veth = net.host_veth(i);
    if interface_exists(&veth) {
        return Ok(());
    }
    ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    let bridge = net.bridge();
    let configured = ip(&["link", "set", &veth, "master", &bridge, "up"])
        .and_then(|_| ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]))
        .and_then(|_| ip(&["-n", &ns, "link", "set", "eth0", "up"]))
        .and_then(|_| ip(&["-n", &ns, "link", "set", "lo", "up"]));
    if configured.is_err() {
        let _ = ip(&["link", "del", &veth]);
    }
    configured.map(drop)
}

/// Deletes every namespace, veth and the bridge of the cluster in `dir` (none for a loopback
/// cluster). Run once its processes are stopped: a namespace that a process still holds
/// outlives `ip netns del`. What is gone already is fine; every failure is reported.
pub(crate) fn remove(dir: &Path) -> Result<()> {
    let Some(net) = load(dir)? else { return Ok(()) };
    require_root("`vpbox cluster down` of a --netns cluster")?;
    let mut errors = Vec::new();
    let names = |folder: &str, prefix: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(folder) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names
    };
    // The veths first: deleting one end deletes its pair at once, while the kernel tears a
    // deleted namespace's interfaces down later, in the background (a `down` that returned
    // with the host ends still listed would not be done). One that vanishes meanwhile is fine.
    for veth in names("/sys/class/net", &net.host_veth_prefix()) {
        if let Err(e) = ip(&["link", "del", &veth]) {
            if interface_exists(&veth) {
                errors.push(e.to_string());
            }
        }
    }
    for ns in names(NETNS_RUN_DIR, &net.namespace_prefix()) {
        if let Err(e) = ip(&["netns", "del", &ns]) {
            if namespace_exists(&ns) {
                errors.push(e.to_string());
            }
        }
    }
    let bridge = net.bridge();
    if interface_exists(&bridge) {
        if let Err(e) = ip(&["link", "del", &bridge]) {
            errors.push(e.to_string());
        }
    }
    if !errors.is_empty() {
        bail!("removing the cluster's network: {}", errors.join("; "));
    }
    Ok(())
}

/// A command that runs `program` in namespace `ns` (`ip netns exec`, which execs: the
/// child's pid is `program`'s), or directly for none.
pub(crate) fn command(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new(ip_binary());
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// iproute2's `ip`, where Debian puts it (root's PATH has it; a test harness's may not).
fn ip_binary() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

/// Runs `ip ARGS` and returns its standard output; a failure names the command and carries
/// its standard error.
fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new(ip_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `ip {}` (is iproute2 installed?)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(a: [u8; 4], prefix_len: u8) -> Used {
        Used { address: Ipv4Addr::from(a), prefix_len }
    }

    #[test]
    fn a_subnet_skips_every_overlapping_address() {
        let taken = [
            used([127, 0, 0, 1], 8),
            used([10, 128, 0, 1], 24),   // the exact /24
            used([10, 128, 1, 77], 16),  // a wider net over the next ones
            used([10, 129, 0, 200], 32), // a single address inside a /24
        ];
        // 10.128.0.0/24 and all of 10.128.0.0/16 are taken; 10.129.0.0/24 holds a host.
        assert_eq!(choose_subnet(0, &taken), Some(Ipv4Addr::new(10, 129, 1, 0)));
        assert_eq!(choose_subnet(300, &[]), Some(Ipv4Addr::new(10, 129, 44, 0)));
        // The search wraps around the block.
        assert_eq!(choose_subnet(SUBNETS - 1, &taken[..1]), Some(Ipv4Addr::new(10, 255, 255, 0)));
        assert_eq!(choose_subnet(SUBNETS - 1, &[used([10, 255, 255, 9], 24)]), Some(subnet_at(0)));
        // A 10.0.0.0/8 on the machine leaves no room.
        assert_eq!(choose_subnet(0, &[used([10, 0, 0, 1], 8)]), None);
    }

    #[test]
    fn names_fit_ifnamsiz_and_addresses_follow_the_ids() {
        let net = Network { tag: "1a2b3c".into(), subnet: Ipv4Addr::new(10, 200, 7, 0) };
        net.check().unwrap();
        assert_eq!(net.bridge(), "vpbr-1a2b3c");
        assert_eq!(net.host_veth(BOX_ID_MAX), "vp1a2b3c-200");
        assert!(net.bridge().len() <= 15 && net.host_veth(BOX_ID_MAX).len() <= 15);
        assert_eq!(net.namespace(3), "vpbox-1a2b3c-node3");
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 200, 7, 1));
        assert_eq!(
            net.listeners(2).unwrap(),
            ("10.200.7.12:7051".into(), "10.200.7.12:8443".into())
        );
        assert!(net.address(0).is_err() && net.address(BOX_ID_MAX + 1).is_err());
        let text = toml::to_string(&net).unwrap();
        assert_eq!(toml::from_str::<Network>(&text).unwrap(), net);
        assert!(Network { tag: "1A2B3C".into(), ..net }.check().is_err());
        assert!(Network { tag: "1a2b3c4".into(), ..net }.check().is_err());
        assert!(Network { subnet: Ipv4Addr::new(10, 200, 7, 1), ..net }.check().is_err());
    }
}
