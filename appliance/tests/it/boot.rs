//! The box's units under systemd, for real: box 1 of a four-box `--netns` cluster is booted in
//! a container (`systemd-nspawn`, systemd as its PID 1) in the box's own network namespace,
//! with the units of `systemd/` as shipped, the users of `systemd/vpbox.sysusers`, the HSM PIN
//! as a credential and the box's state in its `StateDirectory=`s. The test sees the firewall
//! loaded, then signer → node → proxy started in that order under their own users, a POSP's
//! anchors committed through the box's API, and, after a SIGKILL of each service in turn,
//! systemd restarting it and the box committing again with the other three; a JSON-RPC call
//! made while the node is dead waits on the node's socket (`vpbox-node.socket`) and is
//! answered once systemd has restarted it.
//!
//! The container's root is a folder of the test's (`stage`): the host's `/etc` with the box's
//! units in place of the host's enabled services, its accounts made by `systemd-sysusers
//! --root` (as an image build makes them), `/etc/vpbox`, the state directories; its `/usr` the
//! host's Debian 12 `/usr`, read-only, with the built binary and the test token's module laid
//! over it. Only the test token differs from a bank's box: one drop-in names its
//! configuration, as a vendor's HSM would name its own; and another makes the node's restart
//! wait 5 s, so that the test sees it dead.
//!
//! Needs root (namespaces, nspawn) and `systemd-nspawn` (systemd-container, which the test
//! dependencies install).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use vpbox_config::{BoxConfig, FirewallConfig};

use crate::netns::{Cluster, wait};
use crate::{Scratch, s, vpbox};

/// The static UIDs of `systemd/vpbox.sysusers`.
const SIGNER_UID: u32 = 951;
const NODE_UID: u32 = 952;
const PROXY_UID: u32 = 953;

/// Where the container finds the test token's module.
const MODULE: &str = "/usr/lib/vpbox/libvpbox_test_token.so";

/// The services in the order systemd must start them.
const SERVICES: [&str; 3] = ["vpbox-signer", "vpbox-node", "vpbox-proxy"];

/// Every unit of the box.
const UNITS: [&str; 4] = ["vpbox-firewall", "vpbox-signer", "vpbox-node", "vpbox-proxy"];

/// A booted container: stopped (an orderly shutdown, SIGKILL past 30 s) however the test ends.
pub(crate) struct Container {
    nspawn: Child,
    /// The container's PID 1 (systemd), as the host numbers it.
    leader: u32,
    console: PathBuf,
}

impl Container {
    /// Boots the root folder `root` with systemd-nspawn's options `options` (mounts, network).
    pub(crate) fn boot(name: &str, root: &Path, options: &[String], console: PathBuf) -> Self {
        let mut cmd = Command::new("systemd-nspawn");
        cmd.args(["--quiet", "--register=no", "--keep-unit", "--link-journal=no"])
            .arg(format!("--directory={}", s(root)))
            .arg(format!("--machine={name}"))
            .arg("--console=pipe")
            .args(options)
            // /tmp is what the root's own units make of it (nspawn would mount a tmpfs there).
            .env("SYSTEMD_NSPAWN_TMPFS_TMP", "0");
        cmd.args(["--boot", "systemd.unit=multi-user.target", "systemd.firstboot=off"]);
        let log = fs::File::create(&console).unwrap();
        let nspawn = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn (systemd-container) must be installed");
        let mut c = Self { leader: 0, nspawn, console };
        let parent = c.nspawn.id();
        let start = Instant::now();
        while c.leader == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no container: {}",
                c.console_text()
            );
            if let Ok(Some(status)) = c.nspawn.try_wait() {
                panic!("systemd-nspawn exited ({status}): {}", c.console_text());
            }
            c.leader = children(parent)
                .into_iter()
                .find(|p| {
                    fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|n| n == "systemd\n")
                })
                .unwrap_or(0);
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn console_text(&self) -> String {
        fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// Runs `program ARGS` inside the container (its mounts and PID namespace).
    pub(crate) fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-m", "-p", "--", program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `systemctl show -p PROPERTY --value UNIT`.
    pub(crate) fn show(&self, unit: &str, property: &str) -> String {
        let out = self.run("systemctl", &["show", "-p", property, "--value", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A path inside the container, as the host reaches it.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.leader))
    }

    /// What systemd and the box's services said: for a failure's message.
    pub(crate) fn journal(&self) -> String {
        let mut args = vec!["--no-pager", "-b", "-n", "150", "-o", "short-monotonic"];
        for u in UNITS {
            args.extend(["-u", u]);
        }
        let out = self.run("journalctl", &args);
        let status = self.run("systemctl", &["--no-pager", "status", "vpbox-*"]);
        format!(
            "{}\n{}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until `unit` is active, or fails with the journal.
    pub(crate) fn wait_active(&self, unit: &str, timeout: Duration) {
        let start = Instant::now();
        while self.show(unit, "ActiveState") != "active" {
            let failed = UNITS.iter().find(|u| self.show(u, "ActiveState") == "failed");
            assert!(failed.is_none(), "{failed:?} failed:\n{}", self.journal());
            assert!(
                start.elapsed() < timeout,
                "{unit} not active within {timeout:?}: {}\n{}",
                self.show(unit, "ActiveState"),
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM: nspawn asks the container's systemd for an orderly poweroff.
        let pid = rustix::process::Pid::from_raw(self.nspawn.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Past it: the container's PID 1 (its whole PID namespace dies with it), then nspawn.
        if let Some(leader) = rustix::process::Pid::from_raw(self.leader as i32) {
            let _ = rustix::process::kill_process(leader, rustix::process::Signal::KILL);
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // pid (comm) state ppid …: comm may hold spaces, so split after its closing paren.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        if rest.split_whitespace().nth(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn chown_tree(path: &Path, uid: u32) {
    let st = Command::new("chown").args(["-R", &format!("{uid}:{uid}"), s(path)]).status();
    assert!(st.unwrap().success());
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let st = Command::new("cp").args(["-a", &format!("{}/.", s(from)), s(to)]).status();
    assert!(st.unwrap().success());
}

/// Stops box `i`'s processes of the cluster (SIGTERM, then waits for them).
fn stop_box(c: &Cluster, i: u32) {
    for process in ["proxy", "node", "signer"] {
        let pid = c.pid(i, process);
        let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        wait(&format!("node{i}'s {process} to stop"), Duration::from_secs(20), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
    }
}

/// A root folder for the container holding box `i` of the cluster as an appliance holds it:
/// the host's `/etc` with the box's units in place of the host's enabled services, the box's
/// accounts, `/etc/vpbox`, and the state directories; `/usr` stays empty (the host's is
/// mounted there, read-only, with `usr` on top: the binary and the test token's module).
fn stage(c: &Cluster, i: u32, root: &Path, usr: &Path) {
    let nd = c.dir.join(format!("node{i}"));
    for d in ["dev", "proc", "sys", "run", "tmp", "var/lib", "var/log", "usr"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (link, to) in
        [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]
    {
        symlink(to, root.join(link)).unwrap();
    }
    copy_tree(Path::new("/etc"), &root.join("etc"));
    // (nspawn looks for it before /usr is mounted: the file, not Debian's link into /usr.)
    fs::remove_file(root.join("etc/os-release")).unwrap();
    fs::copy("/usr/lib/os-release", root.join("etc/os-release")).unwrap();
    // A machine of its own (nspawn refuses the host's id).
    let mut id = [0u8; 16];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut id).unwrap();
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(root.join("etc/machine-id"), format!("{id}\n")).unwrap();
    let units = root.join("etc/systemd/system");
    fs::remove_dir_all(&units).unwrap();
    fs::create_dir_all(&units).unwrap();

    let etc = root.join("etc/vpbox");
    fs::create_dir_all(etc.join("credentials")).unwrap();
    fs::copy(c.dir.join("genesis.json"), etc.join("genesis.json")).unwrap();
    fs::copy(nd.join("node.crt"), etc.join("node.crt")).unwrap();
    fs::copy(nd.join("hsm-pin"), etc.join("credentials/hsm-pin")).unwrap();
    fs::set_permissions(etc.join("credentials/hsm-pin"), fs::Permissions::from_mode(0o400))
        .unwrap();
    fs::write(etc.join("token.toml"), "token_dir = \"/var/lib/vpbox-signer/token\"\n").unwrap();

    // The node's configuration with the appliance's paths, its proxy's user, and a firewall:
    // the API open to the bridge's /24 (POSP clients in the root namespace), the management
    // network the root namespace's own address.
    let mut config = BoxConfig::load(&nd.join("box.toml")).unwrap();
    config.genesis = "/etc/vpbox/genesis.json".into();
    config.data_dir = "/var/lib/vpbox/node".into();
    config.signer.socket = "/run/vpbox/signer.sock".into();
    config.sockets.rpc = "/run/vpbox/node/rpc.sock".into();
    config.sockets.peer = "/run/vpbox/node/peer.sock".into();
    config.sockets.egress = "/run/vpbox/egress".into();
    let proxy = config.proxy.as_mut().unwrap();
    proxy.certificate = "/etc/vpbox/node.crt".into();
    proxy.uid = Some(PROXY_UID);
    // The admin listener on the box's address, where the management network reaches it.
    proxy.admin = Some(format!("{}:9443", c.network().address(i)));
    let [a, b, x, _] = c.network().subnet.octets();
    config.firewall = Some(FirewallConfig {
        posp_networks: vec![format!("{a}.{b}.{x}.0/24")],
        management_networks: vec![format!("{a}.{b}.{x}.1/32")],
        ssh_port: None,
        ntp: vec![],
        dns: vec![],
        syn_per_s: None,
        new_per_source_per_s: None,
    });
    fs::write(etc.join("box.toml"), toml::to_string(&config).unwrap()).unwrap();

    // The signer's: the module and state where the unit has them, the PIN from its credential
    // (no pin_file), the node's and the proxy's users as its callers.
    let mut signer: toml::Table =
        toml::from_str(&fs::read_to_string(nd.join("signer.toml")).unwrap()).unwrap();
    signer.insert("socket".into(), "/run/vpbox/signer.sock".into());
    signer.insert("module".into(), MODULE.into());
    signer.insert("state_dir".into(), "/var/lib/vpbox-signer".into());
    signer.remove("pin_file");
    let uids = |u: &[u32]| toml::Value::Array(u.iter().map(|x| i64::from(*x).into()).collect());
    signer.insert("allowed_uids".into(), uids(&[NODE_UID, PROXY_UID]));
    for key in signer["keys"].as_array_mut().unwrap() {
        key.as_table_mut().unwrap().insert("tls_uids".into(), uids(&[PROXY_UID]));
    }
    fs::write(etc.join("signer.toml"), toml::to_string(&signer).unwrap()).unwrap();

    // State: the ledger (with the enrollments the cluster made) and the signer's guard and
    // token, owned by their services' users.
    let state = root.join("var/lib");
    copy_tree(&nd.join("data"), &state.join("vpbox/node"));
    chown_tree(&state.join("vpbox/node"), NODE_UID);
    copy_tree(&nd.join("signer-state"), &state.join("vpbox-signer"));
    copy_tree(&nd.join("token"), &state.join("vpbox-signer/token"));
    chown_tree(&state.join("vpbox-signer"), SIGNER_UID);

    // The units as shipped, enabled as `systemctl enable` would, and the test token's drop-in.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let enable = |name: &str, target: &str| {
        fs::copy(shipped.join(name), units.join(name)).unwrap();
        let wants = units.join(format!("{target}.wants"));
        fs::create_dir_all(&wants).unwrap();
        symlink(format!("/etc/systemd/system/{name}"), wants.join(name)).unwrap();
    };
    for u in UNITS {
        enable(&format!("{u}.service"), "multi-user.target");
    }
    enable("vpbox-node.socket", "sockets.target");
    let drop_in = |unit: &str, name: &str, text: &str| {
        let dir = units.join(format!("{unit}.d"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    };
    drop_in(
        "vpbox-signer.service",
        "test-token.conf",
        "[Service]\nEnvironment=VPBOX_TEST_TOKEN_CONF=/etc/vpbox/token.toml\n",
    );
    drop_in("vpbox-node.service", "test-restart.conf", "[Service]\nRestartSec=5s\n");
    fs::create_dir_all(root.join("etc/tmpfiles.d")).unwrap();
    fs::copy(shipped.join("vpbox.tmpfiles"), root.join("etc/tmpfiles.d/vpbox.conf")).unwrap();
    // No mount of the host's: the container mounts nothing of its own.
    fs::write(root.join("etc/fstab"), "").unwrap();

    // The accounts: the host's, and the box's users from its sysusers.d file, added as an
    // image build adds them.
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", s(root)))
        .arg(shipped.join("vpbox.sysusers"))
        .output()
        .unwrap();
    assert!(out.status.success(), "sysusers: {}", String::from_utf8_lossy(&out.stderr));

    // What the container's /usr adds to the host's.
    fs::create_dir_all(usr.join("bin")).unwrap();
    fs::create_dir_all(usr.join("lib/vpbox")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_vpbox"), usr.join("bin/vpbox")).unwrap();
    fs::copy(crate::token::module(), usr.join(&MODULE[5..])).unwrap();
}

#[test]
fn the_units_start_in_order_under_their_users_and_systemd_restarts_a_killed_service() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: not root (network namespaces and systemd-nspawn need root)");
        return;
    }
    let begun = Instant::now();
    let c = Cluster(crate::ClusterDir::new());
    c.up(&["--netns"]);
    let net = c.network();
    let dir = s(&c.dir);
    stop_box(&c, 1);

    let scratch = Scratch::new();
    let (root, usr) = (scratch.path("root"), scratch.path("usr"));
    stage(&c, 1, &root, &usr);
    let name = format!("vpbox-boot-{}", std::process::id());
    let options = [
        format!("--overlay-ro=/usr:{}:/usr", s(&usr)),
        format!("--network-namespace-path=/run/netns/{}", net.namespace(1)),
        // The box's network namespace is its own: its firewall unit loads rules there.
        "--capability=CAP_NET_ADMIN".to_string(),
    ];
    let box1 = Container::boot(&name, &root, &options, scratch.path("console.log"));
    eprintln!("container booting: {:?}", begun.elapsed());

    // Ready in order: the firewall (a oneshot) loaded, then each service started only once the
    // one before it said READY=1.
    box1.wait_active("vpbox-proxy", Duration::from_secs(120));
    eprintln!("box up under systemd: {:?}", begun.elapsed());
    let stamp = |unit: &str, p: &str| -> u64 {
        box1.show(unit, p).parse().unwrap_or_else(|_| panic!("{unit} {p}: {}", box1.journal()))
    };
    let mut ready_before = stamp("vpbox-firewall", "ActiveEnterTimestampMonotonic");
    assert!(ready_before > 0);
    for u in SERVICES {
        let started = stamp(u, "ExecMainStartTimestampMonotonic");
        assert!(started >= ready_before, "{u} started before the unit before it was ready");
        ready_before = stamp(u, "ActiveEnterTimestampMonotonic");
    }
    let rules = Command::new("ip")
        .args(["netns", "exec", &net.namespace(1), "nft", "list", "table", "inet", "vpbox"])
        .output()
        .unwrap();
    assert!(rules.status.success(), "no firewall: {}", String::from_utf8_lossy(&rules.stderr));

    // Each service runs as its own user.
    for (u, uid) in SERVICES.iter().zip([SIGNER_UID, NODE_UID, PROXY_UID]) {
        let pid = box1.show(u, "MainPID");
        let out = box1.run("ps", &["-o", "uid=", "-p", &pid]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), uid.to_string(), "{u}");
    }

    // The node and the signer log to journald natively: each event's fields beside its
    // MESSAGE (VPBOX_NODE, VPBOX_BANK on the node's start; VPBOX_UID on each audit line), a
    // PRIORITY from its level and the service as SYSLOG_IDENTIFIER.
    for (ident, fields) in [
        ("vpbox-node", &["\"VPBOX_NODE\":\"1\"", "\"VPBOX_BANK\":\"bank-a\""][..]),
        ("vpbox-signer", &["\"VPBOX_UID\":"][..]),
    ] {
        let filter = format!("SYSLOG_IDENTIFIER={ident}");
        let mut text = String::new();
        let found = (0..50).any(|_| {
            let out = box1.run("journalctl", &["--no-pager", "-b", "-o", "json", &filter]);
            text = String::from_utf8_lossy(&out.stdout).into_owned();
            let hit = text.lines().any(|l| fields.iter().all(|f| l.contains(f)));
            if !hit {
                std::thread::sleep(Duration::from_millis(200));
            }
            hit
        });
        assert!(found, "{ident}: no entry with {fields:?}:\n{text}");
        assert!(text.contains("\"PRIORITY\":\""), "{text}");
    }

    // The node's sockets: systemd's (vpbox-node.socket), the node's user's and group's alone,
    // in directories made by vpbox.tmpfiles.
    use std::os::unix::fs::MetadataExt;
    for (path, uid, mode) in [
        ("/run/vpbox", SIGNER_UID, 0o750),
        ("/run/vpbox/node", NODE_UID, 0o750),
        ("/run/vpbox/node/rpc.sock", NODE_UID, 0o660),
        ("/run/vpbox/node/peer.sock", NODE_UID, 0o660),
    ] {
        let meta = fs::metadata(box1.path(path)).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (uid, uid, mode), "{path}");
    }

    // The cluster's helpers reach box 1's node through the container's root.
    let rpc = c.dir.join("node1/rpc.sock");
    let _ = fs::remove_file(&rpc);
    symlink(box1.path("/run/vpbox/node/rpc.sock"), &rpc).unwrap();

    // A POSP of bank-a puts anchors through box 1's API (from the root namespace, over the
    // bridge and the box's firewall); each commits on all four boxes.
    let api = format!("https://{}:8443", net.address(1));
    let put = |n: u32| -> u64 {
        let (k, v) = (format!("0x{:064x}", 0xB000 + n), format!("0x{:064x}", n));
        let mut last = String::new();
        let start = Instant::now();
        // The box catches up with the others after each start: until then its API answers
        // with an error, and the put is tried again.
        while start.elapsed() < Duration::from_secs(60) {
            let r = vpbox(&[
                "anchor",
                "put",
                &k,
                &v,
                "--url",
                &api,
                "--server-name",
                "node1.bank-a",
                "--tls-cert",
                s(&c.dir.join("posp/bank-a.crt")),
                "--tls-key",
                s(&c.dir.join("posp/bank-a.pem")),
                "--key-file",
                s(&c.dir.join("posp/bank-a.pem")),
                "--dir",
                dir,
                "--json",
            ]);
            if r.code == 0 {
                let answer: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
                assert_eq!(answer["ok"], json!(true), "{answer}");
                return answer["blockNumber"].as_u64().unwrap();
            }
            last = format!("{}{}", r.text(), r.stderr);
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("put {n} through {api}: {last}\n{}", box1.journal());
    };
    let all = [1, 2, 3, 4];
    let h = put(0);
    c.same_block(&all, h, Duration::from_secs(30));

    // SIGKILL of each service in turn: systemd sees it die, restarts it (Restart=on-failure),
    // and the box commits again.
    let mut pids: std::collections::HashMap<&str, String> =
        SERVICES.iter().map(|u| (*u, box1.show(u, "MainPID"))).collect();
    for (n, u) in (1..).zip(SERVICES) {
        let before = box1.show(u, "MainPID");
        let out = box1.run("kill", &["-KILL", &before]);
        assert!(out.status.success(), "kill {u}: {}", String::from_utf8_lossy(&out.stderr));
        if u == "vpbox-node" {
            // The node is dead for RestartSec= (2 s) at least, but its sockets are systemd's
            // (vpbox-node.socket): a call made now waits, and the restarted node answers it.
            let dead = || box1.show(u, "SubState") == "auto-restart";
            wait("systemd to see the node dead", Duration::from_secs(5), dead);
            let mut call = UnixStream::connect(c.dir.join("node1/rpc.sock"))
                .expect("the node's socket refused a call while the node was down");
            assert!(dead(), "the node came back before the call: the test proves nothing");
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"block_getChainHeight","params":[]}"#;
            write!(
                call,
                "POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            call.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut answer = String::new();
            call.read_to_string(&mut answer).unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.contains(r#""result":"#),
                "{answer}"
            );
        }
        wait(&format!("{u} restarted"), Duration::from_secs(60), || {
            box1.show(u, "NRestarts") == "1"
                && box1.show(u, "ActiveState") == "active"
                && box1.show(u, "MainPID") != before
        });
        // Only the killed service restarted: the others (Wants=, not Requires=, on the
        // signer) kept their processes, links and connections.
        for other in SERVICES.iter().filter(|o| **o != u) {
            assert_eq!(box1.show(other, "MainPID"), pids[other], "{other} restarted with {u}");
        }
        pids.insert(u, box1.show(u, "MainPID"));
        let h = put(n);
        c.same_block(&all, h, Duration::from_secs(30));
        eprintln!("{u} killed, restarted, block {h} committed: {:?}", begun.elapsed());
    }

    // A clean restart of the node: its stop writes the state map's checkpoint, its start opens
    // from it and compares it with the anchors on disk on a thread of its own, which lowers
    // its priority first: the unit's syscall filter lets it (`setpriority`, back from
    // `@resources`), else it would say it cannot.
    let before = box1.show("vpbox-node", "MainPID");
    let out = box1.run("systemctl", &["restart", "vpbox-node.service"]);
    assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    wait("the node's clean restart", Duration::from_secs(60), || {
        box1.show("vpbox-node", "ActiveState") == "active"
            && box1.show("vpbox-node", "MainPID") != before
    });
    let mut text = String::new();
    wait("the checkpoint's check", Duration::from_secs(60), || {
        let args = ["--no-pager", "-b", "-o", "cat", "SYSLOG_IDENTIFIER=vpbox-node"];
        text = String::from_utf8_lossy(&box1.run("journalctl", &args).stdout).into_owned();
        text.contains("the anchors on disk match the state map's checkpoint")
    });
    assert!(!text.contains("cannot lower its priority"), "{text}");
    let h = put(SERVICES.len() as u32 + 1);
    c.same_block(&all, h, Duration::from_secs(30));
}
