//! `vpbox cluster up --netns`: four boxes (two banks, two boxes each), each in a network
//! namespace of its own on a bridge, their proxies on the boxes' own addresses. One grouped
//! scenario, as in `cluster.rs`: the boxes commit the same chain over real links, the
//! listeners live in the boxes' namespaces, a POSP in the root namespace reaches an API, a box
//! whose proxy is killed (-9) is cut off and catches up once `up` restarts it, and `down`
//! leaves no namespace, veth or bridge behind, and `up` builds them again from the folder's
//! record. Needs root (`ip netns`), as `--netns` does.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use vpbox_node::client::RpcClient;

use crate::{Scratch, s, vpbox};

/// The cluster under test (stopped however the test ends).
pub(crate) struct Cluster(pub(crate) crate::ClusterDir);

impl std::ops::Deref for Cluster {
    type Target = crate::ClusterDir;
    fn deref(&self) -> &crate::ClusterDir {
        &self.0
    }
}

/// `DIR/netns.toml`, as the test reads it.
#[derive(Deserialize)]
pub(crate) struct Network {
    tag: String,
    pub(crate) subnet: Ipv4Addr,
}

impl Network {
    pub(crate) fn address(&self, i: u32) -> Ipv4Addr {
        let [a, b, c, _] = self.subnet.octets();
        Ipv4Addr::new(a, b, c, 10 + i as u8)
    }

    pub(crate) fn namespace(&self, i: u32) -> String {
        format!("vpbox-{}-node{i}", self.tag)
    }
}

impl Cluster {
    pub(crate) fn up(&self, extra: &[&str]) {
        let mut args = vec!["cluster", "up", "--dir", s(&self.dir)];
        let module = crate::token::module();
        args.extend(["--module", &module]);
        args.extend(extra);
        let r = vpbox(&args);
        assert_eq!(r.code, 0, "cluster up: {}\n{}", r.text(), r.stderr);
    }

    pub(crate) fn network(&self) -> Network {
        toml::from_str(&std::fs::read_to_string(self.dir.join("netns.toml")).unwrap()).unwrap()
    }

    pub(crate) fn rpc(&self, i: u32) -> RpcClient {
        RpcClient::new(&self.dir.join(format!("node{i}/rpc.sock")))
    }

    /// Node `i`'s chain height: the blocks it stores, block 0 included.
    pub(crate) fn height(&self, i: u32) -> u64 {
        self.rpc(i).call("block_getChainHeight", json!([])).unwrap().as_u64().unwrap()
    }

    /// Node `i`'s hash of block `h`.
    pub(crate) fn hash(&self, i: u32, h: u64) -> String {
        let block = self.rpc(i).call("block_getBlockByNumber", json!([h])).unwrap();
        block["hash"].as_str().unwrap().to_string()
    }

    pub(crate) fn pid(&self, i: u32, process: &str) -> u32 {
        let file = self.dir.join(format!("node{i}/{process}.pid"));
        std::fs::read_to_string(&file).unwrap().trim().parse().unwrap()
    }

    /// Waits until every node in `nodes` stores block `h`, and checks that they hold the same
    /// block there.
    pub(crate) fn same_block(&self, nodes: &[u32], h: u64, timeout: Duration) -> String {
        wait(&format!("nodes {nodes:?} to store block {h}"), timeout, || {
            nodes.iter().all(|i| self.height(*i) > h)
        });
        let hashes: Vec<String> = nodes.iter().map(|i| self.hash(*i, h)).collect();
        assert!(hashes.iter().all(|x| *x == hashes[0]), "block {h} differs: {hashes:?}");
        hashes[0].clone()
    }
}

pub(crate) fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The TCP listeners in a `/proc/net/tcp` table (state 0A), IPv4.
fn tcp_listeners(table: &str) -> Vec<SocketAddrV4> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let (ip, port) = f.get(1)?.split_once(':')?;
            // The kernel prints the address's bytes as one native-endian word.
            let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
            Some(SocketAddrV4::new(ip.into(), u16::from_str_radix(port, 16).ok()?))
        })
        .collect()
}

/// `/proc/net/tcp` as seen from inside namespace `ns`.
fn tcp_table_in(ns: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/tcp"]).output();
    let out = out.expect("the ip command (iproute2) must be installed");
    assert!(out.status.success(), "ip netns exec {ns}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The namespaces and links of the machine whose names carry `tag`.
fn leftovers(tag: &str) -> Vec<String> {
    let mut found = Vec::new();
    for args in [&["netns", "list"][..], &["-o", "link"][..]] {
        let out = Command::new("ip").args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        found.extend(text.lines().filter(|l| l.contains(tag)).map(str::to_string));
    }
    found
}

fn same_file(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[test]
fn four_boxes_in_their_own_namespaces_commit_one_chain_and_a_cut_off_box_catches_up() {
    if !rustix::process::geteuid().is_root() {
        // `--netns` refuses without root, and says so.
        let scratch = Scratch::new();
        let r = vpbox(&["cluster", "up", "--netns", "--dir", s(&scratch.path("c"))]);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("needs root"), "{}", r.stderr);
        eprintln!("skipped: not root, and `ip netns` needs root");
        return;
    }
    let begun = Instant::now();
    let c = Cluster(crate::ClusterDir::new());
    c.up(&["--netns"]);
    eprintln!("cluster up --netns: {:?}", begun.elapsed());
    let net = c.network();
    let dir = s(&c.dir);
    let bridge = format!("vpbr-{}", net.tag);
    assert!(Path::new("/sys/class/net").join(&bridge).exists(), "no bridge {bridge}");

    // Each box's proxy is on the box's own address with fixed ports; its peers are the others'.
    for i in 1..=4u32 {
        let config =
            vpbox_config::BoxConfig::load(&c.dir.join(format!("node{i}/box.toml"))).unwrap();
        let proxy = config.proxy.unwrap();
        assert_eq!(proxy.p2p, format!("{}:7051", net.address(i)));
        assert_eq!(proxy.api, Some(format!("{}:8443", net.address(i))));
        let peers: Vec<(u32, String)> =
            config.peers.iter().map(|p| (p.id, p.address.clone())).collect();
        let others: Vec<(u32, String)> =
            (1..=4).filter(|j| *j != i).map(|j| (j, format!("{}:7051", net.address(j)))).collect();
        assert_eq!(peers, others, "node{i}'s peers");
        let file = c.dir.join(format!("node{i}/box.toml"));
        let r = vpbox(&["config", "check", "--config", s(&file)]);
        assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    }

    // The three processes of each box run in its namespace, and the pid files name them, not
    // an `ip netns exec` that went away (it execs).
    let vpbox_exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_vpbox")).unwrap();
    for i in 1..=4u32 {
        let ns = Path::new("/run/netns").join(net.namespace(i));
        for process in ["signer", "node", "proxy"] {
            let pid = c.pid(i, process);
            let proc = PathBuf::from(format!("/proc/{pid}"));
            assert_eq!(std::fs::read_link(proc.join("exe")).unwrap(), vpbox_exe, "{process}{i}");
            assert!(same_file(&proc.join("ns/net"), &ns), "node{i}'s {process} is not in {ns:?}");
        }
    }

    // The listeners are in the boxes' namespaces, on their own addresses; the root namespace
    // has none on those ports (its loopback included).
    let root = tcp_listeners(&std::fs::read_to_string("/proc/self/net/tcp").unwrap());
    assert!(
        !root.iter().any(|a| [7051, 8443].contains(&a.port())),
        "the root namespace listens on a box's port: {root:?}"
    );
    for i in 1..=4u32 {
        let inside = tcp_listeners(&tcp_table_in(&net.namespace(i)));
        for port in [7051, 8443] {
            let want = SocketAddrV4::new(net.address(i), port);
            assert!(inside.contains(&want), "node{i}'s namespace does not listen on {want}");
        }
    }

    // Anchors through a proxy (the CLI's default: the first box's API, as bank-a's POSP, from
    // the root namespace over the bridge) commit, and every node holds the same block.
    let put = |n: u32| {
        let (k, v) = (format!("0x{:064x}", 0xA000 + n), format!("0x{:064x}", n));
        let posp = format!("{dir}/posp/bank-a.toml");
        let r = vpbox(&["anchor", "put", &k, &v, "--dir", dir, "--json", "--posp", &posp]);
        assert_eq!(r.code, 0, "put {n}: {}{}", r.text(), r.stderr);
        let answer: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(answer["ok"], json!(true), "{answer}");
        answer["blockNumber"].as_u64().unwrap()
    };
    let mut last = 0;
    for n in 0..3 {
        last = last.max(put(n));
    }
    let all = [1, 2, 3, 4];
    c.same_block(&all, last, Duration::from_secs(30));

    // A POSP of the other bank reaches box 3's API on its address (given as a URL).
    let api = format!("https://{}:8443", net.address(3));
    let r = vpbox(&[
        "anchor",
        "get",
        &format!("0x{:064x}", 0xA000),
        "--url",
        &api,
        "--server-name",
        "node3.bank-b",
        "--tls-cert",
        s(&c.dir.join("posp/bank-b.crt")),
        "--tls-key",
        s(&c.dir.join("posp/bank-b.pem")),
        "--dir",
        dir,
    ]);
    assert_eq!(r.code, 0, "{api}: {}{}", r.text(), r.stderr);
    assert!(r.text().starts_with("(true, \"Success\""), "{}", r.text());

    // kill -9 of a box's proxy (a bank-b box that is not the primary) cuts it off: its node
    // stops while the other three commit.
    let primary = c.rpc(1).call("node_getNodes", json!([])).unwrap()["primary"].as_u64().unwrap();
    let cut = [4u32, 3].into_iter().find(|i| u64::from(*i) != primary).unwrap();
    let status = Command::new("kill").args(["-9", &c.pid(cut, "proxy").to_string()]).status();
    assert!(status.unwrap().success());
    let p2p = SocketAddrV4::new(net.address(cut), 7051);
    wait("the proxy to die", Duration::from_secs(10), || {
        std::net::TcpStream::connect_timeout(&p2p.into(), Duration::from_secs(1)).is_err()
    });
    // (What reached the node before the kill may still commit: let it settle.)
    std::thread::sleep(Duration::from_millis(500));
    let stuck = c.height(cut);
    let mut ahead = 0;
    for n in 10..13 {
        ahead = ahead.max(put(n));
    }
    let others: Vec<u32> = all.into_iter().filter(|i| *i != cut).collect();
    c.same_block(&others, ahead, Duration::from_secs(30));
    assert!(stuck <= ahead, "node{cut} stores {stuck} blocks, block {ahead} among them");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.height(cut), stuck, "node{cut} committed without its proxy");

    // `cluster up` again (the network is the folder's record: no flag) restarts the proxy, in
    // the box's namespace, and the box catches up to the same chain.
    c.up(&[]);
    let ns = Path::new("/run/netns").join(net.namespace(cut));
    assert!(same_file(&PathBuf::from(format!("/proc/{}/ns/net", c.pid(cut, "proxy"))), &ns));
    let head = c.same_block(&all, ahead, Duration::from_secs(60));
    eprintln!("node{cut} caught up to block {ahead} ({head}): {:?}", begun.elapsed());

    // `down` stops everything and removes the cluster's network; again, it has nothing to do.
    for _ in 0..2 {
        let r = vpbox(&["cluster", "down", "--dir", dir]);
        assert_eq!(r.code, 0, "cluster down: {}{}", r.text(), r.stderr);
    }
    assert_eq!(leftovers(&net.tag), Vec::<String>::new(), "left behind by cluster down");

    // `up` after `down` builds the same network again from the record, and the chain goes on.
    c.up(&[]);
    assert_eq!(c.network().subnet, net.subnet);
    let next = put(20);
    assert!(next > ahead);
    c.same_block(&all, next, Duration::from_secs(30));
    let r = vpbox(&["cluster", "down", "--dir", dir]);
    assert_eq!(r.code, 0, "cluster down: {}{}", r.text(), r.stderr);
    assert_eq!(leftovers(&net.tag), Vec::<String>::new(), "left behind by cluster down");
    eprintln!("done: {:?}", begun.elapsed());
}
