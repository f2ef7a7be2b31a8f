//! The local consortium end to end, with real processes: four nodes, their test-token HSMs and
//! signers, started by `vpbox cluster up` as an operator would. One grouped scenario (a cluster
//! is eight processes on a 2-core machine): the seed's answers, bad input, kill -9 of the
//! primary under load, catch-up, two of four nodes down, a full restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vpbox_ledger::tx::{Payload, Tx, TxBody};
use vpbox_node::client::{CallError, RpcClient};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Signer, SoftwareSigner};

use crate::{s, vpbox, vpbox_env};

/// The cluster under test (stopped however the test ends).
struct Cluster(crate::ClusterDir);

impl std::ops::Deref for Cluster {
    type Target = crate::ClusterDir;
    fn deref(&self) -> &crate::ClusterDir {
        &self.0
    }
}

/// A node's JSON-RPC client that holds every answer to docs/openrpc.json: a result to its
/// method's result schema, an error to the codes the method documents.
struct Rpc(RpcClient);

impl Rpc {
    fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        let answer = self.0.call(method, params);
        let checked = match &answer {
            Ok(result) => crate::openrpc::spec().check_result(method, result),
            Err(CallError::Rpc { code, .. }) => crate::openrpc::spec().check_error(method, *code),
            Err(_) => Ok(()), // no answer at all (a node down): nothing to hold to the documents
        };
        checked.unwrap_or_else(|e| panic!("{}: {e}", self.0.path().display()));
        answer
    }

    fn post(&mut self, body: &[u8]) -> Result<Vec<u8>, CallError> {
        self.0.post(body)
    }
}

impl Cluster {
    /// `vpbox cluster up`; what it printed.
    fn up(&self) -> String {
        let r =
            vpbox(&["cluster", "up", "--dir", s(&self.dir), "--module", &crate::token::module()]);
        assert_eq!(r.code, 0, "cluster up: {}\n{}", r.text(), r.stderr);
        r.text()
    }

    fn rpc(&self, i: u32) -> Rpc {
        Rpc(RpcClient::new(&self.dir.join(format!("node{i}/rpc.sock"))))
    }

    fn kill9(&self, i: u32) {
        let pid = std::fs::read_to_string(self.dir.join(format!("node{i}/node.pid"))).unwrap();
        let status = std::process::Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        assert!(status.success());
        // Wait until it is gone (its socket stops answering).
        wait("the node to die", Duration::from_secs(10), || {
            self.rpc(i).call("block_getChainHeight", json!([])).is_err()
        });
    }

    fn kill9_proxy(&self, i: u32) {
        let pid = std::fs::read_to_string(self.dir.join(format!("node{i}/proxy.pid"))).unwrap();
        let status = std::process::Command::new("kill").args(["-9", pid.trim()]).status().unwrap();
        assert!(status.success());
        let p2p = crate::p2p::p2p_address(&self.dir, i);
        wait("the proxy to die", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&p2p).is_err()
        });
    }

    fn height(&self, i: u32) -> u64 {
        self.rpc(i).call("block_getChainHeight", json!([])).unwrap().as_u64().unwrap()
    }

    fn primary(&self, i: u32) -> u64 {
        self.rpc(i).call("node_getNodes", json!([])).unwrap()["primary"].as_u64().unwrap()
    }
}

/// The sockets a process holds: how many are Unix sockets, and a description of every other
/// (TCP, UDP, raw, over IPv4 or IPv6), found by inode in its network namespace's tables.
fn sockets_of(pid_file: &Path) -> (usize, Vec<String>) {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    let table =
        |name: &str| std::fs::read_to_string(proc.join("net").join(name)).unwrap_or_default();
    let unix = table("unix");
    let mut network = String::new();
    for t in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        network += &table(t);
    }
    let mut count = 0;
    let mut others = Vec::new();
    for fd in std::fs::read_dir(proc.join("fd")).unwrap() {
        let Ok(target) = std::fs::read_link(fd.unwrap().path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) else {
            continue;
        };
        let has = |t: &str| t.lines().any(|l| l.split_whitespace().any(|w| w == inode));
        if has(&network) {
            others.push(target);
        } else if has(&unix) {
            count += 1;
        } else {
            others.push(format!("{target} (in no table)"));
        }
    }
    (count, others)
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn posp(dir: &Path) -> SoftwareSigner {
    let pem = std::fs::read_to_string(dir.join("posp/bank-a.pem")).unwrap();
    SoftwareSigner::new(SecretKey::from_pem(&pem).unwrap())
}

fn tx(signer: &SoftwareSigner, nonce: u64, ts: u64, payload: Payload) -> Tx {
    TxBody { submitter: signer.public_key().fingerprint(), nonce, timestamp_ms: ts, payload }
        .sign(signer)
        .unwrap()
}

fn key(n: u64) -> [u8; 32] {
    vpbox_sm::sm3::hash(n.to_be_bytes()).0
}

fn put(c: &mut Rpc, t: &Tx, wait: bool) -> Result<Value, CallError> {
    c.call("anchor_put", json!({"tx": hex::encode(t.encode()), "wait": wait}))
}

fn code(r: Result<Value, CallError>) -> i64 {
    match r {
        Err(CallError::Rpc { code, .. }) => code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn anchored(c: &mut Rpc, k: &[u8; 32]) -> bool {
    c.call("anchor_get", json!([hex::encode(k)])).is_ok_and(|v| v["ok"] == json!(true))
}

/// The hashes of blocks `1..=height` on node `i`.
fn chain(c: &Cluster, i: u32, height: u64) -> Vec<String> {
    let mut rpc = c.rpc(i);
    (1..=height)
        .map(|h| {
            rpc.call("block_getBlockByNumber", json!([h])).unwrap()["hash"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_four_node_cluster_anchors_through_faults_and_restarts() {
    let c = Cluster(crate::ClusterDir::new());
    let printed = c.up();
    let dir = s(&c.dir);

    // The commands `up` suggests work as printed, from another working directory: each
    // `vpbox` line, then the curl one through a shell.
    let hints: Vec<&str> = printed.lines().skip_while(|l| *l != "Try:").skip(1).collect();
    assert_eq!(hints.len(), 4, "{printed}");
    let (k, v) = ("11".repeat(32), "22".repeat(32));
    let want = [
        "(true, \"Success\")\n".to_string(),
        format!("(true, \"Success\", 0x{v})\n"),
        "4 of 4 boxes answer".into(),
        "\"result\":".into(),
    ];
    for (hint, want) in hints.iter().zip(want) {
        let line = hint.trim();
        let out = if let Some(args) = line.strip_prefix("vpbox ") {
            assert!(line.contains(&format!("--dir {dir}")), "{line}");
            let args: Vec<&str> = args.split_whitespace().collect();
            let r = Command::new(env!("CARGO_BIN_EXE_vpbox"))
                .args(&args)
                .current_dir(std::env::temp_dir())
                .output()
                .unwrap();
            assert!(r.status.success(), "{line}: {}", String::from_utf8_lossy(&r.stderr));
            String::from_utf8(r.stdout).unwrap()
        } else {
            assert!(line.starts_with("curl "), "{line}");
            let r = Command::new("sh").args(["-c", line]).output().unwrap();
            assert!(r.status.success(), "{line}: {}", String::from_utf8_lossy(&r.stderr));
            String::from_utf8(r.stdout).unwrap()
        };
        assert!(out.contains(&want), "{line}: {want:?} not in {out}");
    }
    assert!(hints[0].contains(&format!("0x{k} 0x{v}")), "{}", hints[0]);
    // The status page as a person sees it, while the consortium is settled. (Later, right
    // after a killed primary restarts, that node can stay in its view change: observed under
    // CI load and not understood yet; see the session note.)
    crate::metrics::status_page_in_a_browser(&c.dir);

    // The services run with core dumps off, and their log lines are stamped in RFC 3339 UTC.
    for (pid, log, tag) in [
        ("node1/node.pid", "node1/node.log", "vpbox-node:"),
        ("node1/signer.pid", "node1/signer.log", "vpbox-signer:"),
    ] {
        let pid = std::fs::read_to_string(c.dir.join(pid)).unwrap();
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", pid.trim())).unwrap();
        let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
        assert_eq!(core.split_whitespace().nth(4), Some("0"), "{pid}: {core}");
        assert_eq!(core.split_whitespace().nth(5), Some("0"), "{pid}: {core}");
        let log = std::fs::read_to_string(c.dir.join(log)).unwrap();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(tag)).collect();
        assert!(!lines.is_empty(), "{log}");
        for l in &lines {
            let stamp = l.split(' ').next().unwrap();
            assert!(humantime::parse_rfc3339(stamp).is_ok(), "not stamped: {l}");
            // Then the level (vpbox_log's lines off journald).
            let level = l.split(' ').nth(1).unwrap_or("");
            assert!(["INFO", "WARN", "ERROR"].contains(&level), "no level: {l}");
        }
    }

    // Each signer keeps its audit log on disk too, a chain `signer audit-verify` checks.
    let audit = c.dir.join("node1/signer-state/audit");
    let log = std::fs::read_to_string(audit.join("audit.log")).unwrap();
    assert!(log.lines().any(|l| l.contains("op=sign key=consensus domain=")), "{log}");
    let r = vpbox(&["signer", "audit-verify", "--dir", s(&audit)]);
    assert!(
        r.code == 0 && r.text().contains("the chain holds: 1 files"),
        "{}{}",
        r.text(),
        r.stderr
    );

    // The node opens no network socket: every socket it holds is a Unix one (and there are
    // some, its listeners and links, so the check sees them).
    for i in 1..=4 {
        let (unix, network) = sockets_of(&c.dir.join(format!("node{i}/node.pid")));
        assert!(unix >= 2, "node{i}: {unix} Unix sockets");
        assert_eq!(network, Vec::<String>::new(), "node{i} holds network sockets");
    }

    // Each box's configuration passes `vpbox config check`; a broken one is refused with
    // every error named.
    let config = c.dir.join("node1/box.toml");
    let r = vpbox(&["config", "check", "--config", s(&config)]);
    assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    assert!(r.text().contains("ok (node 1, 3 peers)"), "{}", r.text());
    let text = std::fs::read_to_string(&config).unwrap();
    let at = text.find("id = 2\naddress = \"").unwrap() + "id = 2\naddress = \"".len();
    let end = at + text[at..].find('"').unwrap();
    let broken =
        format!("{}node2.bank-a{}", &text[..at], &text[end..]).replace("id = 4\n", "id = 3\n");
    assert_ne!(broken, text);
    let bad = c.dir.join("node1/broken.toml");
    std::fs::write(&bad, broken).unwrap();
    let r = vpbox(&["config", "check", "--config", s(&bad)]);
    assert_eq!(r.code, 1, "{}{}", r.text(), r.stderr);
    for want in [
        "node 2: address \"node2.bank-a\": expected HOST:PORT",
        "node 3 is listed twice",
        "founding member node 4 (node4, bank-b) has no [[peers]] entry",
        "3 error(s)",
    ] {
        assert!(r.stderr.contains(want), "{want} not in {}", r.stderr);
    }
    std::fs::remove_file(&bad).unwrap();

    // The cluster's certificates come from `vpbox ca` with each bank's key in its token, and
    // OpenSSL accepts them: the nodes' vp-node certificates and the POSPs'.
    for (cert, bank) in
        [("node1/node.crt", "bank-a"), ("node4/node.crt", "bank-b"), ("posp/bank-a.crt", "bank-a")]
    {
        let ca = c.dir.join("ca").join(bank).join("ca/ca.pem");
        let r = crate::openssl(&[
            "verify",
            "-vfyopt",
            "distid:1234567812345678",
            "-CAfile",
            s(&ca),
            s(&c.dir.join(cert)),
        ]);
        assert!(r.text().contains(": OK"), "{cert}: {}{}", r.text(), r.stderr);
    }

    // The seed's answers through the CLI.
    let (k, v1, v2) = ("0x".to_string() + &"ab".repeat(32), "cd".repeat(32), "ef".repeat(32));
    // Without a key nothing is signed (no silent default POSP): usage error, and the way.
    let r = vpbox(&["anchor", "put", &k, &v1, "--dir", dir]);
    assert_eq!(r.code, 2, "{}{}", r.text(), r.stderr);
    assert!(r.stderr.contains("whose key signs?") && r.stderr.contains("--posp"), "{}", r.stderr);
    let bank_a = c.dir.join("posp/bank-a.toml");
    let posp_a = ["--posp", s(&bank_a)];
    let r = vpbox(&[&["anchor", "put", &k, &v1, "--dir", dir][..], &posp_a].concat());
    assert_eq!((r.code, r.text()), (0, "(true, \"Success\")\n".into()), "{}", r.stderr);
    let r = vpbox(&[&["anchor", "put", &k, &v2, "--dir", dir][..], &posp_a].concat());
    posp_in_token(&c);
    assert_eq!((r.code, r.text()), (1, "(false, \"the key exist\")\n".into()));
    let r = vpbox(&["anchor", "get", &k, "--dir", dir]);
    assert_eq!(r.text(), format!("(true, \"Success\", 0x{v1})\n"), "the old value stays");
    let r = vpbox(&["anchor", "get", &"00".repeat(32), "--dir", dir]);
    assert_eq!(r.text(), format!("(false, \"the key is not exist\", 0x{})\n", "00".repeat(32)));

    // Bad input: each a documented error, and the node keeps serving.
    let signer = posp(&c.dir);
    let mut n2 = c.rpc(2);
    let body = n2.post(b"{\"jsonrpc\":").unwrap();
    assert!(String::from_utf8_lossy(&body).contains("-32700"), "malformed JSON");
    let body = n2.post(&vec![b' '; 10 << 20]).unwrap_or_default();
    assert!(String::from_utf8_lossy(&body).contains("-32005") || body.is_empty(), "10 MB body");
    n2 = c.rpc(2);
    assert_eq!(code(n2.call("anchor_nope", json!([]))), -32601);
    let good = tx(&signer, 1, now_ms(), Payload::AnchorPut { key: key(1), value: key(2) });
    let mut bad_sig = good.encode();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(code(n2.call("anchor_put", json!({"tx": hex::encode(bad_sig)}))), -32001);
    let mut out_of_range = good.encode();
    let end = out_of_range.len();
    out_of_range[end - 64..].fill(0xff);
    let r = n2.call("anchor_put", json!({"tx": hex::encode(out_of_range)}));
    assert_eq!(code(r), -32001, "r and s not below n: a bad signature, as documented");
    let r = n2.call("anchor_put", json!({"tx": hex::encode(good.encode()), "wait": "false"}));
    assert_eq!(code(r), -32602, "wait is a JSON boolean");
    let stranger = SoftwareSigner::new(SecretKey::generate().unwrap());
    let unknown = tx(&stranger, 1, now_ms(), Payload::AnchorPut { key: key(1), value: key(2) });
    assert_eq!(code(put(&mut n2, &unknown, true)), -32002);
    let old =
        tx(&signer, 2, now_ms() - 3_600_000, Payload::AnchorPut { key: key(1), value: key(2) });
    assert_eq!(code(put(&mut n2, &old, true)), -32003, "a replay from an hour ago");
    assert_eq!(code(n2.call("anchor_get", json!(["0x1234"]))), -32602, "a key not 32 bytes");
    let first = put(&mut n2, &good, true).unwrap();
    let again = put(&mut n2, &good, true).unwrap();
    assert_eq!((first["ok"].clone(), again["ok"].clone()), (json!(true), json!(true)));
    assert_eq!(again["duplicate"], json!(true), "a replayed transaction gets its first result");
    assert_eq!(again["blockNumber"], first["blockNumber"]);

    // A compromised node process asks node 3's signer for what a node must not get signed:
    // the guard refuses a request that would poison it, but cannot tell junk votes at
    // positions the node has not reached from real ones (SECURITY.md). The node's real votes
    // there are then refused: the cluster commits without it, `vpbox status` shows it, and it
    // votes again past those positions.
    compromised_signer_requests(&c, 3, &signer);

    // Certificate admission: bank B's POSP (enrolled at `up`) anchors; bank B's CA revokes it
    // (its key in bank B's token) and the CRL is published on the ledger; from then on every
    // node refuses it, and bank A's POSP is unaffected.
    let b_key = c.dir.join("posp/bank-b.pem");
    let (kb, vb) = ("0x".to_string() + &"b1".repeat(32), "b2".repeat(32));
    let r = vpbox(&["anchor", "put", &kb, &vb, "--key-file", s(&b_key), "--dir", dir]);
    assert_eq!((r.code, r.text()), (0, "(true, \"Success\")\n".into()), "{}", r.stderr);
    // bank-b's POSP keeps an HTTPS connection to a proxy open across its revocation.
    let read = br#"{"jsonrpc":"2.0","id":1,"method":"block_getChainHeight","params":[]}"#;
    let mut kept =
        crate::api::KeepAlive::open(&c.dir, 1, "bank-a", &crate::api::posp(&c.dir, "bank-b"));
    assert_eq!(kept.call(read).0, 200);
    // A long poll on node 1's socket, as the box's proxy holds one: answered by the CRL's
    // commit, not by its 30 s wait running out.
    let before = c.rpc(1).call("gov_getState", json!([])).unwrap();
    let waiting = {
        let (mut rpc, since) = (c.rpc(1), before["fingerprint"].clone());
        std::thread::spawn(move || {
            let answer = rpc.call("gov_waitState", json!([since, 30_000])).unwrap();
            (answer, Instant::now())
        })
    };
    let crl_block = revoke_and_publish(&c, "bank-b", "CN=bank-b-posp,");
    let published = Instant::now();
    // Its next request on the open connection is refused, and the connection closed: at once,
    // since node 1's proxy took the CRL from its own long poll as node 1 committed it (a
    // once-a-second poll would take up to a second).
    wait("node 1 to commit the CRL", Duration::from_secs(30), || c.height(1) > crl_block);
    let committed = Instant::now();
    loop {
        let (status, answer, closes) = kept.call(read);
        if status == 403 {
            assert_eq!(answer["error"]["code"], json!(-32002), "{answer}");
            assert!(answer["error"]["message"].as_str().unwrap().contains("revoked"), "{answer}");
            assert!(closes, "the connection of a revoked client is closed");
            break;
        }
        let late = committed.elapsed();
        assert!(late < Duration::from_millis(500), "still served {late:?} after: {answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (changed, answered) = waiting.join().unwrap();
    let after = answered.saturating_duration_since(published);
    assert!(after < Duration::from_secs(3), "answered by the commit, not the 30 s: {after:?}");
    assert_ne!(changed["fingerprint"], before["fingerprint"]);
    let crls = |v: &Value| v["crls"].as_array().unwrap().len();
    assert_eq!(crls(&changed), crls(&before) + 1, "with bank-b's CRL");
    // Through a proxy nobody may hold the node's waiting turns (`Role::allows`: an admin
    // neither).
    let posp = crate::api::posp(&c.dir, "bank-a");
    let poll = br#"{"jsonrpc":"2.0","id":1,"method":"gov_waitState","params":[]}"#;
    let (status, answer) = crate::api::post(&c.dir, 1, "bank-a", &posp, poll).unwrap();
    assert_eq!((status, answer["error"]["code"].clone()), (403, json!(-32007)), "{answer}");
    // A POSP sees the nodes' state, not how many clients each bank enrolled; the box's
    // operator does.
    let nodes = br#"{"jsonrpc":"2.0","id":1,"method":"node_getNodes","params":[]}"#;
    let (status, answer) = crate::api::post(&c.dir, 1, "bank-a", &posp, nodes).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer["result"]["height"].is_u64() && answer["result"].get("certificates").is_none());
    let own = c.rpc(1).call("node_getNodes", json!([])).unwrap();
    assert!(own["certificates"].as_array().is_some_and(|l| !l.is_empty()), "{own}");
    let start = Instant::now();
    while !(1..=4).all(|i| c.height(i) > crl_block) {
        if start.elapsed() > Duration::from_secs(60) {
            for i in 1..=4 {
                let log = std::fs::read_to_string(c.dir.join(format!("node{i}/node.log")));
                let log = log.unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("node{i} height {}:\n{}", c.height(i), tail.join("\n"));
            }
            panic!("timed out waiting for every node to commit the CRL's block {crl_block}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    refused_as_revoked_by_every_node(&c, &b_key, 1000, 900);
    for i in 1..=4 {
        let t = tx(
            &signer,
            1000 + u64::from(i),
            now_ms(),
            Payload::AnchorPut { key: key(910 + u64::from(i)), value: key(1) },
        );
        assert_eq!(put(&mut c.rpc(i), &t, true).unwrap()["ok"], json!(true), "node {i}");
    }

    // kill -9 of the primary under load: every acknowledged anchor commits after a view change.
    let primary = c.primary(2) as u32;
    let entry = if primary == 2 { 3 } else { 2 };
    let mut rpc = c.rpc(entry);
    let mut acked = Vec::new();
    for n in 100..300u64 {
        if n == 150 {
            c.kill9(primary);
        }
        let t = tx(&signer, n, now_ms(), Payload::AnchorPut { key: key(n), value: key(n + 1) });
        if put(&mut rpc, &t, false).is_ok() {
            acked.push(key(n));
        }
    }
    assert!(acked.len() >= 150, "the surviving nodes kept acknowledging ({})", acked.len());
    // The dead node's proxy answers its POSPs 503 and -32004: retry elsewhere or later.
    let read = br#"{"jsonrpc":"2.0","id":1,"method":"block_getChainHeight","params":[]}"#;
    let bank = if primary <= 2 { "bank-a" } else { "bank-b" };
    let posp_a = crate::api::posp(&c.dir, "bank-a");
    let (status, answer) = crate::api::post(&c.dir, primary, bank, &posp_a, read).unwrap();
    assert_eq!((status, answer["error"]["code"].as_i64()), (503, Some(-32004)), "{answer}");
    crate::metrics::node_down_checks(&c.dir, primary);
    wait("every acknowledged anchor to commit", Duration::from_secs(90), || {
        acked.iter().all(|k| anchored(&mut rpc, k))
    });
    assert_ne!(c.primary(entry) as u32, primary, "a view change replaced the primary");
    // The survivors' logs say why: at least one suspected the dead primary by a timer, the
    // others joined it or did the same.
    let logs: Vec<String> = (1..=4)
        .filter(|i| *i != primary)
        .map(|i| std::fs::read_to_string(c.dir.join(format!("node{i}/node.log"))).unwrap())
        .collect();
    assert!(logs.iter().all(|l| l.contains("view change to view ")), "{logs:#?}");
    assert!(
        logs.iter().any(|l| l.contains("(request timer)") || l.contains("(null-request timer)")),
        "{logs:#?}"
    );

    // The dead primary's box taken over (its signer still answers): strangers and the
    // compromised node attack the peer socket of a live node, which keeps committing.
    hostile_peers(&c, entry, primary, &signer);

    // The killed node restarts and catches up; all four hold identical blocks.
    c.up();
    let target = c.height(entry);
    wait("the restarted node to catch up", Duration::from_secs(60), || {
        c.rpc(primary)
            .call("block_getChainHeight", json!([]))
            .is_ok_and(|h| h.as_u64() >= Some(target))
    });
    let reference = chain(&c, entry, target - 1);
    for i in 1..=4 {
        assert_eq!(chain(&c, i, target - 1), reference, "node {i} holds the same blocks");
    }

    // The boxes reach each other only through their proxies (mutual TLS, RFC 8998), which
    // refuse a POSP certificate and a box's certificate claiming another node.
    crate::p2p::p2p_refusals(&c.dir);
    // POSPs reach the API only through a proxy's HTTPS listener, with mutual TLS.
    let t = tx(&signer, 540, now_ms(), Payload::AnchorPut { key: key(540), value: key(541) });
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "anchor_put",
                      "params": {"tx": hex::encode(t.encode()), "wait": true}});
    crate::api::api_checks(&c.dir, body.to_string().as_bytes());
    // The box's monitoring: /metrics (promtool accepts it) counts those refusals; /health.
    crate::metrics::admin_checks(&c.dir);
    crate::abuse::api_abuse(&c.dir, 1);
    // A renewed certificate is taken on SIGHUP; one for another key is refused.
    crate::p2p::certificate_reload(&c.dir);
    crate::p2p::flood(&c.dir, entry, || {
        let mut rpc = c.rpc(entry);
        for n in 550..555u64 {
            let t = tx(&signer, n, now_ms(), Payload::AnchorPut { key: key(n), value: key(n) });
            assert_eq!(put(&mut rpc, &t, true).unwrap()["ok"], json!(true), "during the flood");
        }
    });
    // kill -9 of one box's proxy cuts that box off while the others commit; restarted, the box
    // catches up.
    let leader = c.primary(entry) as u32;
    let cut = (1..=4).find(|i| *i != entry && *i != leader).unwrap();
    c.kill9_proxy(cut);
    let mut rpc = c.rpc(entry);
    for n in 600..610u64 {
        let t = tx(&signer, n, now_ms(), Payload::AnchorPut { key: key(n), value: key(n) });
        assert_eq!(put(&mut rpc, &t, true).unwrap()["ok"], json!(true), "the others commit");
    }
    let ahead = c.height(entry);
    assert!(c.height(cut) < ahead, "the box without its proxy is cut off");
    // `vpbox status` asks each box through its proxy, as a monitoring host would: the cut box
    // is down from the network; on the box itself (--local) its node still answers.
    let row = |out: &str| {
        out.lines().find(|l| l.starts_with(&format!("node{cut} "))).unwrap_or_default().to_string()
    };
    let r = vpbox(&["status", "--dir", s(&c.dir)]);
    let through = r.text();
    assert!(row(&through).contains("down"), "{through}");
    // Three of four answer: the consortium commits, with no failure to spare; exit 1, and why.
    assert_eq!(r.code, 1, "{through}");
    assert!(
        through.contains("unhealthy: no failure to spare: 3 of the members answer"),
        "{through}"
    );
    assert!(through.contains(&format!("unhealthy: node{cut} (")), "{through}");
    let local = vpbox(&["status", "--dir", s(&c.dir), "--local"]).text();
    assert!(!row(&local).contains("down"), "{local}");
    c.up();
    wait("the box to catch up once its proxy is back", Duration::from_secs(60), || {
        c.height(cut) >= ahead
    });
    // A proxy stopped by SIGTERM answers what it owes first; restarted, it serves again.
    crate::api::graceful_stop(&c.dir, 1);
    // Restarted with a low rate for its clients: a day-end file waits out the 429s and lands.
    // (The second batch needs the bucket refilled for 10 s: limited unless the first took
    // that long to commit.)
    let config = c.dir.join("node1/box.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[proxy.limits.rate]\nper_s = 500\nburst = 5000\n");
    std::fs::write(&config, text).unwrap();
    c.up();
    let csv = c.dir.join("day-end.csv");
    let lines: String =
        (0..10_000u64).map(|n| format!("0x{:064x},0x{:064x}\n", 900_000 + n, n)).collect();
    std::fs::write(&csv, lines).unwrap();
    let bank_a = c.dir.join("posp/bank-a.toml");
    let args = ["anchor", "put", "--dir", s(&c.dir), "--file", s(&csv), "--batch", "5000"];
    let r = vpbox(&[&args[..], &["--posp", s(&bank_a)]].concat());
    assert_eq!(r.code, 0, "{}\n{}", r.text(), r.stderr);
    let log = std::fs::read_to_string(c.dir.join("node1/proxy.log")).unwrap();
    assert!(log.contains("\"status\":429"), "the file was rate limited on its way");
    let mut last = [0u8; 32];
    last[24..].copy_from_slice(&(900_000u64 + 9_999).to_be_bytes());
    assert!(anchored(&mut c.rpc(2), &last), "the last line is anchored");
    // The same file again sends nothing and says so.
    let r = vpbox(&[&args[..], &["--posp", s(&bank_a)]].concat());
    assert!(
        r.code == 0 && r.text().contains("was anchored completely"),
        "{}{}",
        r.text(),
        r.stderr
    );
    day_end_interrupted_and_checked(&c);

    // Two of four down: nothing commits, intake goes on; all commits once they return.
    let (a, b) = if primary == 4 { (1, 3) } else { (primary, 4) };
    c.kill9(a);
    c.kill9(b);
    let live = (1..=4).find(|i| *i != a && *i != b).unwrap();
    let mut rpc = c.rpc(live);
    let mut pending = Vec::new();
    for n in 1000..1010u64 {
        let t = tx(&signer, n, now_ms(), Payload::AnchorPut { key: key(n), value: key(n) });
        let r = put(&mut rpc, &t, false).unwrap();
        assert_eq!(r["status"], json!("pending"));
        pending.push(key(n));
    }
    // A client waits for one of them by its hash (`tx_getTransactionReceipt` with `wait`):
    // answered at its commit, after the quorum returns, without sending it again.
    let last = tx(&signer, 1010, now_ms(), Payload::AnchorPut { key: key(1010), value: key(1) });
    assert_eq!(put(&mut rpc, &last, false).unwrap()["status"], json!("pending"));
    let hash = format!("0x{}", last.hash().to_hex());
    let awaited = {
        let (mut waiter, hash) = (c.rpc(live), hash.clone());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            loop {
                let r = waiter.call("tx_getTransactionReceipt", json!([hash, true])).unwrap();
                if r["status"] != json!("pending") || start.elapsed() > Duration::from_secs(90) {
                    return (r, start.elapsed());
                }
            }
        })
    };
    // Without `wait`, or for a hash the node has neither committed nor pending: -32602 at once.
    assert_eq!(code(rpc.call("tx_getTransactionReceipt", json!([hash]))), -32602);
    let unknown = format!("0x{}", "ab".repeat(32));
    assert_eq!(
        code(rpc.call("tx_getTransactionReceipt", json!({"hash": unknown, "wait": true}))),
        -32602
    );
    assert_eq!(code(rpc.call("tx_getTransactionReceipt", json!([hash, "true"]))), -32602);
    std::thread::sleep(Duration::from_secs(3));
    assert!(pending.iter().all(|k| !anchored(&mut rpc, k)), "no quorum, no commit");
    assert!(!awaited.is_finished(), "the wait holds while nothing commits");
    c.up();
    wait("the pending anchors to commit after the quorum returns", Duration::from_secs(90), || {
        pending.iter().all(|k| anchored(&mut rpc, k))
    });
    let (receipt, took) = awaited.join().unwrap();
    assert_eq!(receipt["results"], json!([{"ok": true, "message": "Success"}]), "{receipt}");
    assert_eq!(receipt["txHash"], json!(hash));
    assert!(took > Duration::from_secs(3), "answered at the commit, not before ({took:?})");

    // A full restart keeps everything.
    let height = c.height(live);
    let r = vpbox(&["cluster", "down", "--dir", dir]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    c.up();
    assert!(c.height(1) >= height);
    let r = vpbox(&["anchor", "get", &k, "--dir", dir]);
    assert_eq!(r.text(), format!("(true, \"Success\", 0x{v1})\n"));
    let mut rpc = c.rpc(1);
    assert!(acked.iter().chain(&pending).all(|k| anchored(&mut rpc, k)));
    // Healthy once every restarted node has settled (until then status says which is not).
    wait("status to find the restarted consortium healthy", Duration::from_secs(30), || {
        vpbox(&["status", "--dir", dir]).code == 0
    });

    // A box's vp-node certificate revoked on the ledger: as their nodes commit it the other proxies
    // cut its open links (and refuse new ones), and the others commit on without it.
    let crl_block = revoke_and_publish(&c, "bank-b", "CN=node4,");
    wait("nodes 1 to 3 to commit the CRL", Duration::from_secs(60), || {
        (1..=3).all(|i| c.height(i) > crl_block)
    });
    // bank-b's second CRL replaced its first: one series for its CA on the page, not two.
    wait("box 1's page to show bank-b's one CRL in force", Duration::from_secs(10), || {
        crate::metrics::crl_lines(&c.dir, 1, "bank-b").len() == 1
    });
    wait("node1's proxy to cut node4's links", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(c.dir.join("node1/proxy.log")).unwrap_or_default();
        log.lines().any(|l| {
            l.contains("\"p2p-closed\"")
                && l.contains("\"node\":4")
                && l.contains("cut: ")
                && l.contains("revoked")
        })
    });
    let mut rpc = c.rpc(1);
    for n in 700..705u64 {
        let t = tx(&signer, n, now_ms(), Payload::AnchorPut { key: key(n), value: key(n) });
        assert_eq!(put(&mut rpc, &t, true).unwrap()["ok"], json!(true), "1 to 3 commit");
    }
    assert!(c.height(4) < c.height(1), "the revoked box is cut off");
    crl_renewal_as_the_timer_runs_it(&c);
}

/// The commands of `systemd/vpbox-crl-renew.service`, as shipped but for the paths (the CA is
/// bank-b's of the cluster, the publisher bank-a's POSP file): the first run signs (no CRL at
/// its path yet) and publishes; the next signs nothing and publishes nothing; after a
/// revocation the next run signs and publishes again, and every node refuses the revoked POSP.
fn crl_renewal_as_the_timer_runs_it(c: &Cluster) {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/vpbox-crl-renew.service"),
    )
    .unwrap();
    let ca_dir = c.dir.join("ca/bank-b");
    let ca = ca_dir.join("ca");
    let publisher = format!("{} --dir {}", s(&c.dir.join("posp/bank-a.toml")), s(&c.dir));
    let commands: Vec<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .map(|l| {
            l.replace("/var/lib/vpbox-ca", s(&ca))
                .replace("/etc/vpbox/crl-publisher.toml", &publisher)
        })
        .collect();
    assert_eq!(commands.len(), 2, "{unit}");
    let token = ca_dir.join("token.toml");
    let env = [("VPBOX_TEST_TOKEN_CONF", s(&token))];
    let run = || -> Vec<crate::Run> {
        commands
            .iter()
            .map(|cmd| {
                let args: Vec<&str> = cmd.split_whitespace().collect();
                assert_eq!(args[0], "/usr/bin/vpbox", "{cmd}");
                let r = vpbox_env(&args[1..], &env);
                assert_eq!(r.code, 0, "{cmd}: {}{}", r.text(), r.stderr);
                r
            })
            .collect()
    };
    let crls = || -> Vec<String> {
        let state = c.rpc(1).call("gov_getState", json!([])).unwrap();
        state["crls"].as_array().unwrap().iter().map(|v| v.to_string()).collect()
    };
    let before = crls();
    let first = run();
    assert!(first[0].stderr.contains("crl.pem does not exist"), "{}", first[0].stderr);
    assert!(first[1].text().starts_with("(true, \"Success\") in block"), "{}", first[1].text());
    let published = crls();
    assert_ne!(published, before, "a CRL was published");
    let second = run();
    assert!(second[0].stderr.contains("not renewed"), "{}", second[0].stderr);
    assert!(second[1].text().contains("on the ledger already"), "{}", second[1].text());
    assert_eq!(crls(), published, "nothing published");
    // A revocation (bank-b's admin: the scenario ends here) goes out at the next run.
    let list = vpbox_env(&["ca", "list", "--dir", s(&ca), "--json"], &env);
    let list: Value = serde_json::from_str(&list.text()).unwrap();
    let serial = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["profile"] == "admin" && e["revoked_at"].is_null())
        .and_then(|e| e["serial"].as_str())
        .unwrap_or_else(|| panic!("no admin of bank-b in {list}"))
        .to_string();
    let r = vpbox_env(&["ca", "revoke", "--dir", s(&ca), &serial, "--reason", "superseded"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let third = run();
    assert!(third[0].stderr.contains("revoked since CRL"), "{}", third[0].stderr);
    assert!(third[1].text().starts_with("(true, \"Success\") in block"), "{}", third[1].text());
    let now = crls();
    let new: Vec<&String> = now.iter().filter(|c| !published.contains(c)).collect();
    assert_eq!(new.len(), 1, "{now:?}");
    assert!(new[0].contains(&serial), "the new CRL lists {serial}: {}", new[0]);

    // A CRL signed for 6 h only (the shortest `ca crl` signs): status warns of it, naming the
    // CA, and the timer's next run renews it (it is within the 8 h margin).
    let short = c.dir.join("bank-b-short.crl");
    let r = vpbox_env(&["ca", "crl", "--dir", s(&ca), "--hours", "6", "--out", s(&short)], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let posp = c.dir.join("posp/bank-a.toml");
    let r = vpbox(&["cert", "publish-crl", s(&short), "--dir", s(&c.dir), "--posp", s(&posp)]);
    assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    let block: u64 = r.text().trim().rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap();
    wait("node 1 to commit the short CRL", Duration::from_secs(30), || c.height(1) > block);
    let out = vpbox(&["status", "--dir", s(&c.dir)]).text();
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning: the CRL of "))
        .unwrap_or_else(|| panic!("no CRL warning in:\n{out}"));
    assert!(warning.contains("bank-b") && warning.contains("runs out in 5h"), "{warning}");
    let fourth = run();
    assert!(fourth[0].stderr.contains("runs out within the margin"), "{}", fourth[0].stderr);
}

/// A day-end file with a header line, killed (SIGKILL) after its first batches, run again:
/// it resumes where it stopped and its summary adds up; with stderr not a terminal, progress
/// comes as plain lines. `anchor check --file` confirms it, and names the lines of a file that
/// differs from the ledger; the file changed after its run is not resumed.
fn day_end_interrupted_and_checked(c: &Cluster) {
    let rpc = c.dir.join("node2/rpc.sock");
    let csv = c.dir.join("day-end-2.csv");
    let total = 6000u64;
    let mut text = String::from("key,value\n");
    text.extend((0..total).map(|n| format!("{:064x},{:064x}\n", 950_000 + n, n + 1)));
    std::fs::write(&csv, &text).unwrap();
    let bank_a = c.dir.join("posp/bank-a.toml");
    let put = ["anchor", "put", "--rpc", s(&rpc), "--posp", s(&bank_a), "--file", s(&csv)];
    let args = [&put[..], &["--batch", "200"]].concat();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpbox"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = c.dir.join("day-end-2.csv.vpbox-progress");
    let record = || -> Value {
        let text = std::fs::read_to_string(&progress).unwrap_or_default();
        serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
    };
    let done = || record()["done"].as_u64().unwrap_or(0);
    // Several batches in flight at once (--in-flight, 4 by default), each recorded before it
    // is sent; the kill leaves some of them in the record for the next run.
    let mut most = 0;
    wait("the first batches to commit", Duration::from_secs(60), || {
        most = most.max(record()["batches"].as_array().map_or(0, Vec::len));
        done() >= 400
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(most >= 2, "at most {most} batch in flight");
    let before = done();
    assert!(before < total, "killed before the end ({before})");

    // Resumed with another batch size: the recorded transactions are re-sent as they are (a
    // pair signed again in a new batch while its old one committed would answer "the key
    // exist", below).
    let again = [&put[..], &["--batch", "300"]].concat();
    let r = vpbox(&again);
    assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    assert!(r.stderr.contains("line 1 is a header: skipped"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("resuming after {before} of {total}")), "{}", r.stderr);
    assert!(!r.stderr.contains('\r'), "no carriage returns off a terminal: {:?}", r.stderr);
    assert!(r.stderr.contains(&format!("{total}/{total} anchors (100%")), "{}", r.stderr);
    // "6000 anchors: B committed by an earlier run; this run sent S in T s (R/s): A (true,
    // "Success"), E (false, "the key exist")", with A + E = S = 6000 - B (the batch in flight
    // when killed, committed or not, counts once: a duplicate gets its first result).
    let out = r.text();
    let sent = total - before;
    let head =
        format!("{total} anchors: {before} committed by an earlier run; this run sent {sent} in ");
    assert!(out.starts_with(&head), "{out}");
    let number = |after: &str| -> u64 {
        let at = out.find(after).unwrap_or_else(|| panic!("{after} not in {out}")) + after.len();
        out[at..].split(|ch: char| !ch.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let (ok, exist) = (number("/s): "), number("\"Success\"), "));
    assert_eq!(ok + exist, sent, "{out}");
    assert_eq!(exist, 0, "no pair of the file was anchored before: {out}");

    // Checked: all anchored with their values.
    let check = |file: &Path| vpbox(&["anchor", "check", "--rpc", s(&rpc), "--file", s(file)]);
    let r = check(&csv);
    assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    assert!(r.text().contains(&format!("{total} of {total} pairs anchored with their value")));
    // A file that differs: line 3 (the second pair) with another value, and a pair never sent.
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[2] = format!("{:064x},{:064x}", 950_001, 77);
    lines.push(format!("{:064x},{:064x}", 990_000, 1));
    let other = c.dir.join("day-end-other.csv");
    std::fs::write(&other, lines.join("\n") + "\n").unwrap();
    let r = check(&other);
    assert_eq!(r.code, 1, "{}{}", r.text(), r.stderr);
    let out = r.text();
    assert!(out.contains(&format!("{} of {} pairs anchored", total - 1, total + 1)), "{out}");
    assert!(out.contains(&format!("line 3: the ledger holds 0x{:064x}", 2)), "{out}");
    assert!(out.contains(&format!("1 not anchored: lines {}", total + 2)), "{out}");
    // The sent file, changed afterwards, is not resumed (nor sent again) at a wrong line.
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let r = vpbox(&args);
    assert!(r.code == 2 && r.stderr.contains("changed since the run"), "{}", r.stderr);
}

/// A POSP whose key lives in a token (bank-a's, CKA_ID 05): generated there, certified by
/// bank-a's CA, enrolled with the token's flags, then anchoring through a POSP client file that
/// names the token. The anchor's submitter is that key (not the folder's software POSP key).
fn posp_in_token(c: &Cluster) {
    let dir = s(&c.dir);
    let cd = c.dir.join("ca/bank-a");
    let conf = cd.join("token.toml");
    let env = [("VPBOX_TEST_TOKEN_CONF", s(&conf))];
    let (module, pin) = (crate::token::module(), cd.join("hsm-pin"));
    let token = ["--module", module.as_str(), "--token", "bank-a-ca", "--pin-file", s(&pin)];
    let run = |args: &[&str]| {
        let r = vpbox_env(args, &env);
        assert_eq!(r.code, 0, "{args:?}: {}{}", r.text(), r.stderr);
        r.text()
    };
    run(&[&["hsm", "keygen"][..], &token, &["--label", "posp-in-token", "--id", "05"]].concat());
    let subject = "CN=posp-in-token,OU=posp,O=bank-a";
    let csr =
        run(&[&["hsm", "csr", "--json"][..], &token, &["--id", "05", "--subject", subject]]
            .concat());
    let csr: Value = serde_json::from_str(&csr).unwrap();
    let (csr_file, crt) = (c.dir.join("posp-in-token.csr"), c.dir.join("posp/in-token.crt"));
    std::fs::write(&csr_file, csr["csr_pem"].as_str().unwrap()).unwrap();
    let ca = cd.join("ca");
    run(&[
        "ca",
        "issue",
        "--dir",
        s(&ca),
        "--csr",
        s(&csr_file),
        "--profile",
        "posp",
        "--out",
        s(&crt),
    ]);
    run(&[&["cert", "enroll", s(&crt), "--dir", dir, "--key-id", "05"][..], &token].concat());
    // Its client file: the key in the token; TLS as the folder's bank-a POSP (a software key).
    let file = c.dir.join("posp/in-token.toml");
    let toml = format!(
        "tls_cert = \"bank-a.crt\"\ntls_key = \"bank-a.pem\"\n[token]\nmodule = \"{module}\"\n\
         label = \"bank-a-ca\"\nkey_id = \"05\"\npin_file = \"../ca/bank-a/hsm-pin\"\n"
    );
    std::fs::write(&file, toml).unwrap();
    let (k, v) = (format!("0x{:064x}", 0x70c), format!("0x{:064x}", 1));
    let out = run(&["anchor", "put", &k, &v, "--dir", dir, "--posp", s(&file), "--json"]);
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["ok"], json!(true), "{answer}");
    let tx = c.rpc(1).call("tx_getTransactionByHash", json!([answer["txHash"]])).unwrap();
    let fingerprint = csr["fingerprint_sm3"].as_str().unwrap();
    assert_eq!(tx["submitter"].as_str().unwrap().trim_start_matches("0x"), fingerprint, "{tx}");
}

/// Revokes the certificate whose subject starts with `subject` at `bank`'s CA, and publishes
/// the bank's new CRL on the ledger: the block it is in.
fn revoke_and_publish(c: &Cluster, bank: &str, subject: &str) -> u64 {
    let ca_dir = c.dir.join("ca").join(bank);
    let token = ca_dir.join("token.toml");
    let env = [("VPBOX_TEST_TOKEN_CONF", s(&token))];
    let ca = ca_dir.join("ca");
    let list = vpbox_env(&["ca", "list", "--dir", s(&ca), "--json"], &env);
    let list: Value = serde_json::from_str(&list.text()).expect("ca list --json");
    let serial = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"].as_str().is_some_and(|n| n.starts_with(subject)))
        .and_then(|e| e["serial"].as_str())
        .unwrap_or_else(|| panic!("{subject} is not in {bank}'s list: {list}"))
        .to_string();
    let r =
        vpbox_env(&["ca", "revoke", "--dir", s(&ca), &serial, "--reason", "key-compromise"], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let crl = c.dir.join(format!("{bank}.crl"));
    let r = vpbox_env(&["ca", "crl", "--dir", s(&ca), "--out", s(&crl)], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let posp = c.dir.join("posp/bank-a.toml"); // any enrolled member may carry a CRL
    let r = vpbox(&["cert", "publish-crl", s(&crl), "--dir", s(&c.dir), "--posp", s(&posp)]);
    assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    assert!(r.text().starts_with("(true, \"Success\") in block"), "{}", r.text());
    r.text().trim().rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap()
}

fn compromised_signer_requests(c: &Cluster, node: u32, posp: &SoftwareSigner) {
    use vpbox_consensus::{Checkpoint, Digest, Message, SeqNo, View, Vote};
    use vpbox_signer::protocol::Status;
    use vpbox_signer::test_support::payload;
    let sock = c.dir.join(format!("node{node}/signer.sock"));
    let mut signer = vpbox_signer::Client::connect(&sock).unwrap();
    let sign = |s: &mut vpbox_signer::Client, m: &Message| {
        s.sign("consensus", vpbox_sm::Domain::CONSENSUS, &payload(0, node, m))
    };
    let poison = Message::Checkpoint(Checkpoint { seq: SeqNo(1 << 62), state: Digest([9; 32]) });
    match sign(&mut signer, &poison) {
        Err(vpbox_signer::ClientError::Refused(Status::OutOfRange, _)) => {}
        other => panic!("the poisoning request was not refused: {other:?}"),
    }
    let nodes = c.rpc(node).call("node_getNodes", json!([])).unwrap();
    let (view, height) = (nodes["view"].as_u64().unwrap(), nodes["height"].as_u64().unwrap());
    for seq in height + 1..=height + 3 {
        let junk = Vote { view: View(view), seq: SeqNo(seq), digest: Digest([0xee; 32]) };
        sign(&mut signer, &Message::Prepare(junk)).unwrap();
        sign(&mut signer, &Message::Commit(junk)).unwrap();
    }
    let mut rpc = c.rpc(1);
    for n in 0..6u64 {
        let t =
            tx(posp, 500 + n, now_ms(), Payload::AnchorPut { key: key(500 + n), value: key(1) });
        assert_eq!(put(&mut rpc, &t, true).unwrap()["ok"], json!(true), "the others commit");
    }
    let nodes = c.rpc(node).call("node_getNodes", json!([])).unwrap();
    assert!(nodes["signer"]["refused"].as_u64().unwrap() > 0, "{nodes}");
    let me = nodes["nodes"].as_array().unwrap().iter().find(|n| n["isSelf"] == json!(true));
    assert_eq!(me.unwrap()["status"], json!("signer-refusing"), "{nodes}");
    let r = vpbox(&["status", "--dir", s(&c.dir)]);
    assert!(r.text().contains("signer-refusing"), "{}", r.text());
    assert_eq!(r.code, 1, "a member not voting as it should is unhealthy: {}", r.text());
    assert!(r.text().contains(") is signer-refusing"), "{}", r.text());
    assert!(r.text().contains(&format!("node{node}: its signer refused")), "{}", r.text());
    // Past the junk, the node votes again: its guard records its votes at higher positions.
    let guard = |s: &mut vpbox_signer::Client| -> Value {
        serde_json::from_str(&s.guard("consensus").unwrap()).unwrap()
    };
    let before = guard(&mut signer)["highSeq"].as_u64().unwrap();
    for n in 6..12u64 {
        let t =
            tx(posp, 500 + n, now_ms(), Payload::AnchorPut { key: key(500 + n), value: key(1) });
        assert_eq!(put(&mut rpc, &t, true).unwrap()["ok"], json!(true));
    }
    wait("the node to vote again", Duration::from_secs(30), || {
        guard(&mut signer)["highSeq"].as_u64().unwrap() > before.max(height + 3)
    });
}

/// Proves a node's identity on a peer link with its signer (as a compromised node process
/// would), or with a stranger's key.
type Prove = Box<dyn FnMut(&[u8]) -> Result<[u8; 64], String> + Send>;

struct LinkProver(std::sync::Mutex<Prove>);

impl vpbox_node::link::Prover for LinkProver {
    fn prove(&self, payload: &[u8]) -> Result<[u8; 64], String> {
        (self.0.lock().unwrap())(payload)
    }
}

fn links(c: &Cluster, i: u32) -> Value {
    c.rpc(i).call("node_getNodes", json!([])).unwrap()["links"].clone()
}

fn counter(v: &Value, name: &str) -> u64 {
    v[name].as_u64().unwrap()
}

/// Attacks node `target`'s peer socket: a stranger's idle connections, frames without a
/// handshake, a stranger claiming to be a member, then node `taken` (its node process dead,
/// its signer answering) proving itself and sending spoofed, replayed, forged and oversized
/// frames. Each is refused and counted; the node commits throughout.
fn hostile_peers(c: &Cluster, target: u32, taken: u32, posp: &SoftwareSigner) {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use vpbox_consensus::{Digest, Envelope, Message, NodeId, SeqNo, Signature, View, Vote};
    use vpbox_node::link::Identity;
    use vpbox_node::peer::{PeerMsg, read_frame, write_frame};

    let sock = c.dir.join(format!("node{target}/peer.sock"));
    let genesis = vpbox_node::genesis::Genesis::load(&c.dir.join("genesis.json")).unwrap();
    let target_key = genesis.nodes.iter().find(|n| n.id.0 == target).unwrap().consensus_key.clone();
    let mut rpc = c.rpc(target);
    let mut next = 5000u64;
    let mut commit_one = |rpc: &mut Rpc| {
        next += 1;
        let t = tx(posp, next, now_ms(), Payload::AnchorPut { key: key(next), value: key(7) });
        assert_eq!(put(rpc, &t, true).unwrap()["ok"], json!(true), "the node commits");
    };
    let before = links(c, target);

    // 63 idle connections from a stranger: at most 16 wait in their handshake, each is closed
    // within 5 s, and the node commits meanwhile.
    let opened = Instant::now();
    let idle: Vec<UnixStream> = (0..63).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    commit_one(&mut rpc);
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).expect("closed by the node, not timed out");
    }
    assert!(opened.elapsed() < Duration::from_secs(8), "closed within 5 s: {:?}", opened.elapsed());
    let after = links(c, target);
    assert!(counter(&after, "evicted") >= counter(&before, "evicted") + 47, "{after}");

    // A frame without a handshake (a version-1 `WantBlocks` naming another node as the
    // requester): the node sends its hello and closes the link, nothing else.
    let mut conn = UnixStream::connect(&sock).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut v1 = vec![1u8, 4, 0, 0, 0, 2];
    v1.extend_from_slice(&0u64.to_be_bytes());
    v1.extend_from_slice(&100u64.to_be_bytes());
    write_frame(&mut conn, &v1).unwrap();
    let hello = read_frame(&mut conn, 1 << 20).unwrap().expect("the node's hello");
    assert_eq!(&hello[..12], b"VPBOX-HELO/1");
    assert!(!matches!(read_frame(&mut conn, 1 << 20), Ok(Some(_))), "nothing but the hello");

    // A stranger's key claiming to be the taken node: refused.
    let stranger = SoftwareSigner::new(SecretKey::generate().unwrap());
    let soft = move |p: &[u8]| -> Result<[u8; 64], String> {
        let digest = vpbox_sm::sm3::hash(p).0;
        stranger
            .sign(vpbox_sm::Domain::LINK, &digest)
            .map(|s| s.to_raw())
            .map_err(|e| e.to_string())
    };
    let me = |prove: Prove| Identity {
        chain: genesis.hash.0,
        id: NodeId(taken),
        prover: std::sync::Arc::new(LinkProver(std::sync::Mutex::new(prove))),
    };
    let refused_before = counter(&links(c, target), "refused");
    let mut conn = UnixStream::connect(&sock).unwrap();
    let r =
        vpbox_node::link::dial(&mut conn, &me(Box::new(soft)), NodeId(target), target_key.clone());
    assert!(r.is_err(), "a stranger's proof");
    wait("the refusal to be counted", Duration::from_secs(5), || {
        counter(&links(c, target), "refused") > refused_before
    });

    // The taken node proves itself with its own signer, then lies.
    let signer_sock = c.dir.join(format!("node{taken}/signer.sock"));
    let mut client = vpbox_signer::Client::connect(&signer_sock).unwrap();
    let real = move |p: &[u8]| -> Result<[u8; 64], String> {
        client
            .sign("consensus", vpbox_sm::Domain::LINK, p)
            .map(|s| s.to_raw())
            .map_err(|e| e.to_string())
    };
    let mut conn = UnixStream::connect(&sock).unwrap();
    vpbox_node::link::dial(&mut conn, &me(Box::new(real)), NodeId(target), target_key).unwrap();
    let before = links(c, target);
    let nodes = c.rpc(target).call("node_getNodes", json!([])).unwrap();
    let view = nodes["view"].as_u64().unwrap();
    let frame = |env: &Envelope| PeerMsg::Consensus(vpbox_consensus::wire::encode(env)).encode();
    let vote = |seq: u64| Vote { view: View(view), seq: SeqNo(seq), digest: Digest([0xab; 32]) };
    // Another node's vote sent as its own: dropped and counted, never verified.
    let spoofed = Envelope {
        from: NodeId(if taken == 1 { 2 } else { 1 }),
        message: Message::Prepare(vote(1)),
        signature: Signature(vec![1; 64]),
    };
    write_frame(&mut conn, &frame(&spoofed)).unwrap();
    // A forged commit far ahead: its signature fails, so the node shows no such height.
    let forged = Envelope {
        from: NodeId(taken),
        message: Message::Commit(vote(999_999_999_999)),
        signature: Signature(vec![2; 64]),
    };
    let forged = frame(&forged);
    // Replayed 2,000 times: one is verified, the rest dropped unverified.
    for _ in 0..2000 {
        write_frame(&mut conn, &forged).unwrap();
    }
    conn.flush().unwrap();
    wait("the spoofed and replayed frames to be counted", Duration::from_secs(10), || {
        let now = links(c, target);
        counter(&now, "mismatched") > counter(&before, "mismatched")
            && counter(&now, "replayed") >= counter(&before, "replayed") + 1999
    });
    commit_one(&mut rpc);
    let nodes = c.rpc(target).call("node_getNodes", json!([])).unwrap();
    let seen = nodes["nodes"].as_array().unwrap().iter().find(|n| n["id"] == json!(taken)).unwrap();
    assert!(seen["height"].as_u64().unwrap() < 1_000_000, "height from a forged commit: {seen}");
    // A frame over the cap: the link is closed before its body is read.
    conn.write_all(&(64u32 << 20).to_be_bytes()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).expect("the node closes the link");
    commit_one(&mut rpc);
}

/// The admin of `bank` approves (or, with `submit`, submits) the proposal in `file` with the
/// admin key in the bank's token, as its security officer would.
fn as_admin(c: &Cluster, bank: &str, args: &[&str]) -> crate::Run {
    let cd = c.dir.join("ca").join(bank);
    let token = cd.join("token.toml");
    let (pin, module, label) = (cd.join("hsm-pin"), crate::token::module(), format!("{bank}-ca"));
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--module", &module, "--token", &label, "--key-id", "ad01", "--pin-file", s(&pin)]);
    vpbox_env(&all, &[("VPBOX_TEST_TOKEN_CONF", s(&token))])
}

/// Each of nodes 1–4 refuses an anchor signed with the key in `key_file` (-32002 "revoked");
/// nonces and anchor keys start at `nonce` and `anchor`.
fn refused_as_revoked_by_every_node(c: &Cluster, key_file: &Path, nonce: u64, anchor: u64) {
    let pem = std::fs::read_to_string(key_file).unwrap();
    let signer = SoftwareSigner::new(SecretKey::from_pem(&pem).unwrap());
    for i in 1..=4 {
        let n = u64::from(i);
        let put_tx = Payload::AnchorPut { key: key(anchor + n), value: key(1) };
        let t = tx(&signer, nonce + n, now_ms(), put_tx);
        let err = put(&mut c.rpc(i), &t, true).expect_err("a revoked POSP is refused");
        assert!(
            err.to_string().contains("-32002") && err.to_string().contains("revoked"),
            "node {i}: {err}"
        );
    }
    // Its other writes too (a CRL, which a POSP or an admin may publish): told "revoked", not
    // that its certificate is no admin's.
    let crl = tx(&signer, nonce + 10, now_ms(), Payload::Crl(b"any".to_vec()));
    let params = json!({"tx": hex::encode(crl.encode()), "wait": false});
    let err = c.rpc(1).call("cert_publishCrl", params).expect_err("refused");
    assert!(
        err.to_string().contains("-32002") && err.to_string().contains("not admitted: revoked"),
        "{err}"
    );
}

/// A box whose clock is off: node 3 restarted with libfaketime preloaded, its wall clock 6 minutes
/// ahead (its monotonic clock left alone). The other nodes measure it from its links' clock
/// frames: box 1's `/metrics` shows node 3's offset, and `vpbox status` names node 3 — not the
/// others, which node 3 sees as behind — and, 6 minutes being more than half the 10-minute
/// transaction window, calls the consortium unhealthy.
#[test]
fn a_box_whose_clock_is_off_is_named_by_status_and_on_metrics() {
    use std::os::unix::process::CommandExt;
    let c = Cluster(crate::ClusterDir::new());
    c.up();
    let dir = s(&c.dir);
    c.kill9(3);
    let nd = c.dir.join("node3");
    let log = std::fs::OpenOptions::new().append(true).open(nd.join("node.log")).unwrap();
    // libfaketime preloaded into the node itself (the `faketime` wrapper would fork and keep
    // the pid `cluster down` stops).
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        Path::new(lib).exists(),
        "{lib}: Debian's libfaketime (scripts/deps.sh --test installs faketime)"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpbox"))
        .args(["node", "run", "--config"])
        .arg(nd.join("box.toml"))
        .env("LD_PRELOAD", lib)
        .env("FAKETIME", "+6m")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("VPBOX_TEST_TOKEN_CONF", nd.join("token.toml"))
        .current_dir(&nd)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    // The pid is the node's: `cluster down` stops it.
    std::fs::write(nd.join("node.pid"), child.id().to_string()).unwrap();
    let offset = |page: &str, peer: &str| {
        let name = format!("vpbox_node_peer_clock_offset_seconds{{peer=\"{peer}\"}}");
        crate::metrics::sample(page, &name)
    };
    let mut page = String::new();
    wait("box 1 to measure node 3's clock", Duration::from_secs(30), || {
        page = crate::metrics::get(&c.dir, 1, "/metrics").1;
        offset(&page, "node3").is_some_and(|o| (o - 360.0).abs() < 5.0)
    });
    assert!(offset(&page, "node2").is_some_and(|o| o.abs() < 5.0), "{page}");
    let mut out = String::new();
    wait("status to name node 3's clock", Duration::from_secs(30), || {
        let r = vpbox(&["status", "--dir", dir]);
        out = r.text();
        r.code == 1 && out.contains("unhealthy: node3's clock is ")
    });
    let line = out.lines().find(|l| l.contains("node3's clock is ")).unwrap();
    assert!(
        (line.contains("6m ahead of the others'") || line.contains("5m 59s ahead of the others'"))
            && line.contains("transaction window of 10m"),
        "{out}"
    );
    for other in ["node1's clock", "node2's clock", "node4's clock"] {
        assert!(!out.contains(other), "{out}");
    }
    // The status page shows it too, as a warning, and its table the offset.
    let (_, html) = crate::metrics::get(&c.dir, 1, "/status");
    assert!(
        html.contains("node3&#39;s clock is 6m ahead of this box&#39;s")
            || html.contains("node3&#39;s clock is 5m 59s ahead of this box&#39;s"),
        "{html}"
    );
    let r = vpbox(&["cluster", "down", "--dir", dir]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    child.wait().unwrap();
}

/// `(epoch, member ids)` as node `i` reports them.
fn membership(c: &Cluster, i: u32) -> (u64, Vec<u64>) {
    let r = c.rpc(i).call("node_getNodes", json!([])).unwrap();
    let ids = r["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_u64().unwrap()).collect();
    (r["epoch"].as_u64().unwrap(), ids)
}

#[test]
fn governance_admits_a_bank_and_a_node_and_removes_a_node() {
    let c = Cluster(crate::ClusterDir::new());
    c.up();
    let dir = s(&c.dir);
    let module = crate::token::module();
    let file = |name: &str| c.dir.join(name);
    let ok = |r: crate::Run, what: &str| {
        assert_eq!(r.code, 0, "{what}: {}{}", r.text(), r.stderr);
        r.text()
    };

    // A third bank: its CA and admin keys in its own token. Not a member yet: its POSP cannot
    // enroll.
    let out = ok(
        vpbox(&["cluster", "add-bank", "--dir", dir, "--name", "bank-c", "--module", &module]),
        "add-bank",
    );
    assert!(out.contains(&format!("vpbox cluster enroll --dir {dir} --bank bank-c")), "{out}");
    let (c_crt, c_key) = (file("posp/bank-c.crt"), file("posp/bank-c.pem"));
    let r = vpbox(&["cert", "enroll", s(&c_crt), "--key-file", s(&c_key), "--dir", dir]);
    assert!(r.code != 0 && r.stderr.contains("not a consortium root"), "{}", r.stderr);
    let r = vpbox(&["cluster", "enroll", "--dir", dir, "--bank", "bank-c", "--module", &module]);
    assert!(r.code == 2 && r.stderr.contains("not a member bank yet"), "{}", r.stderr);

    // Propose its root; one of two banks is not more than two thirds: refused with the reason,
    // before ordering; with both, committed.
    let add_c = file("add-bank-c.json");
    let root = file("ca/bank-c/ca/ca.pem");
    ok(
        vpbox(&["gov", "propose", "--dir", dir, "--add-root", s(&root), "--out", s(&add_c)]),
        "propose",
    );
    ok(as_admin(&c, "bank-a", &["gov", "approve", s(&add_c)]), "approve a");
    let r = as_admin(&c, "bank-a", &["gov", "submit", s(&add_c), "--dir", dir]);
    assert!(
        r.code != 0 && r.stderr.contains("-32006") && r.stderr.contains("1 of 2"),
        "{}",
        r.stderr
    );
    ok(as_admin(&c, "bank-b", &["gov", "approve", s(&add_c)]), "approve b");
    let out = ok(as_admin(&c, "bank-a", &["gov", "submit", s(&add_c), "--dir", dir]), "submit");
    assert!(out.starts_with("(true, \"Success\") in block"), "{out}");
    // A proposal applies once.
    let r = as_admin(&c, "bank-b", &["gov", "submit", s(&add_c), "--dir", dir]);
    assert!(r.code != 0 && r.stderr.contains("governance state 0"), "{}", r.stderr);

    // Bank C's admin and POSP enroll as `add-bank` said (refused before the bank was a
    // member, with the way); the POSP anchors at every node.
    let out = ok(
        vpbox(&["cluster", "enroll", "--dir", dir, "--bank", "bank-c", "--module", &module]),
        "enroll",
    );
    assert!(out.contains("bank-c-admin enrolled") && out.contains("bank-c-posp enrolled"), "{out}");
    let r = vpbox(&["cert", "enroll", s(&c_crt), "--key-file", s(&c_key), "--dir", dir]);
    assert!(
        r.code == 0 && r.text().contains("(true, \"Success\")"),
        "enrolled again: {}",
        r.stderr
    );
    let (kc, vc) = ("0x".to_string() + &"c1".repeat(32), "c2".repeat(32));
    let out = ok(vpbox(&["anchor", "put", &kc, &vc, "--key-file", s(&c_key), "--dir", dir]), "put");
    assert_eq!(out, "(true, \"Success\")\n");

    // Bank C also issues from an issuing CA under its root, its key in bank C's token: a POSP
    // enrolls with its full chain and anchors; the issuing CA's CRL, which carries the CA, cuts
    // it off at every node.
    let cd = file("ca/bank-c");
    let token_conf = cd.join("token.toml");
    let env = [("VPBOX_TEST_TOKEN_CONF", s(&token_conf))];
    let pin = cd.join("hsm-pin");
    let hsm = ["--module", module.as_str(), "--token", "bank-c-ca", "--pin-file", s(&pin)];
    let run = |args: &[&str], what: &str| ok(vpbox_env(args, &env), what);
    run(
        &[&["hsm", "keygen"], &hsm[..], &["--label", "issuing", "--id", "1c01"]].concat(),
        "keygen",
    );
    let (issuing, ic_csr, ic_pem) = (cd.join("issuing"), file("ic.csr"), file("ic.pem"));
    let init =
        ["ca", "init", "--dir", s(&issuing), "--bank", "bank-c", "--issuing-csr", s(&ic_csr)];
    run(&[&init[..], &hsm[..], &["--key-id", "1c01"]].concat(), "init issuing CA");
    let ca_dir = cd.join("ca");
    let sign = ["--csr", s(&ic_csr), "--profile", "ca", "--out", s(&ic_pem)];
    run(&[&["ca", "issue", "--dir", s(&ca_dir)], &sign[..]].concat(), "the root signs it");
    let install = ["--cert", s(&ic_pem), "--root", s(&root)];
    run(&[&["ca", "install", "--dir", s(&issuing)], &install[..]].concat(), "install");
    let (k2, csr2, crt2) = (file("posp-c2.key"), file("posp-c2.csr"), file("posp-c2.crt"));
    ok(vpbox(&["sm2", "keygen", "--out", s(&k2)]), "posp key");
    let req = crate::openssl(&[
        "req",
        "-new",
        "-key",
        s(&k2),
        "-sigopt",
        "distid:1234567812345678",
        "-subj",
        "/C=CN/O=bank-c/OU=posp/CN=posp-c2",
        "-out",
        s(&csr2),
    ]);
    assert_eq!(req.code, 0, "{}", req.stderr);
    let issue = ["--csr", s(&csr2), "--profile", "posp", "--out", s(&crt2)];
    run(&[&["ca", "issue", "--dir", s(&issuing)], &issue[..]].concat(), "issue posp-c2");
    ok(vpbox(&["cert", "enroll", s(&crt2), "--key-file", s(&k2), "--dir", dir]), "enroll chain");
    let (k, v) = ("0x".to_string() + &"c3".repeat(32), "c4".repeat(32));
    let out = ok(vpbox(&["anchor", "put", &k, &v, "--key-file", s(&k2), "--dir", dir]), "put");
    assert_eq!(out, "(true, \"Success\")\n");
    let list: Value =
        serde_json::from_str(&run(&["ca", "list", "--dir", s(&issuing), "--json"], "list"))
            .unwrap();
    let serial = list[0]["serial"].as_str().unwrap().to_string();
    run(&["ca", "revoke", "--dir", s(&issuing), &serial, "--reason", "key-compromise"], "revoke");
    let crl = file("bank-c-issuing.crl");
    run(&["ca", "crl", "--dir", s(&issuing), "--out", s(&crl)], "crl");
    let carrier = file("posp/bank-a.toml");
    let out = ok(
        vpbox(&["cert", "publish-crl", s(&crl), "--dir", dir, "--posp", s(&carrier)]),
        "publish",
    );
    let crl_block: u64 = out.trim().rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap();
    wait("every node commits the CRL", Duration::from_secs(60), || {
        (1..=4).all(|i| c.height(i) > crl_block)
    });
    refused_as_revoked_by_every_node(&c, &k2, 100, 700);

    // A fifth box, run by bank C: provisioned, added by all three banks (two of three are not
    // enough), switched in at the next checkpoint, started from node 1's ledger.
    ok(
        vpbox(&["cluster", "add-node", "--dir", dir, "--bank", "bank-c", "--module", &module]),
        "add-node",
    );
    // Status shows it, not joined; not a member yet, it is nobody's problem.
    let r = vpbox(&["status", "--dir", dir]);
    let row = r.text().lines().find(|l| l.starts_with("node5")).map(str::to_string);
    assert!(row.as_deref().is_some_and(|l| l.contains("not joined")), "{}", r.text());
    assert_eq!(r.code, 0, "{}", r.text());
    let add5 = file("add-node5.json");
    let entry = file("node5/node.json");
    ok(
        vpbox(&["gov", "propose", "--dir", dir, "--add-node", s(&entry), "--out", s(&add5)]),
        "propose",
    );
    for bank in ["bank-a", "bank-c"] {
        ok(as_admin(&c, bank, &["gov", "approve", s(&add5)]), bank);
    }
    let r = as_admin(&c, "bank-c", &["gov", "submit", s(&add5), "--dir", dir]);
    assert!(r.code != 0 && r.stderr.contains("2 of 3"), "{}", r.stderr);
    ok(as_admin(&c, "bank-b", &["gov", "approve", s(&add5)]), "approve b");
    ok(as_admin(&c, "bank-c", &["gov", "submit", s(&add5), "--dir", dir]), "submit node 5");
    wait("every node to switch to epoch 1 with node 5", Duration::from_secs(60), || {
        (1..=4).all(|i| membership(&c, i) == (1, vec![1, 2, 3, 4, 5]))
    });
    // A member now that has not joined: status says so, with the way, and exits 1.
    let r = vpbox(&["status", "--dir", dir]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(
        r.text().contains("unhealthy: node5 (bank-c) is a member but has not joined"),
        "{}",
        r.text()
    );
    ok(vpbox(&["cluster", "join", "--dir", dir, "--node", "5", "--from", "1"]), "join");
    let signer = posp(&c.dir);
    for (n, i) in (2000u64..).zip([5, 1, 5]) {
        let t = tx(&signer, n, now_ms(), Payload::AnchorPut { key: key(n), value: key(n) });
        assert_eq!(put(&mut c.rpc(i), &t, true).unwrap()["ok"], json!(true), "via node {i}");
    }
    let h = c.height(1);
    wait("node 5 to hold every block", Duration::from_secs(30), || c.height(5) >= h);
    assert_eq!(chain(&c, 5, h - 1), chain(&c, 1, h - 1), "node 5 holds the same blocks");

    // Remove node 1, the first primary (the three banks approve). Then node 5 is a voting
    // member: with nodes 1 and 4 down, nodes 2, 3 and 5 are the quorum of the four members
    // {2, 3, 4, 5} and still commit, under another primary.
    let rm1 = file("remove-node1.json");
    ok(vpbox(&["gov", "propose", "--dir", dir, "--remove-node", "1", "--out", s(&rm1)]), "propose");
    for bank in ["bank-a", "bank-b", "bank-c"] {
        ok(as_admin(&c, bank, &["gov", "approve", s(&rm1)]), bank);
    }
    ok(as_admin(&c, "bank-b", &["gov", "submit", s(&rm1), "--dir", dir]), "submit removal");
    wait("nodes 2, 3, 4 and 5 to switch to epoch 2", Duration::from_secs(60), || {
        [2, 3, 4, 5].iter().all(|i| membership(&c, *i) == (2, vec![2, 3, 4, 5]))
    });
    c.kill9(1);
    c.kill9(4);
    for (n, i) in (3000u64..).zip([5, 2, 3]) {
        let t = tx(&signer, n, now_ms(), Payload::AnchorPut { key: key(n), value: key(n) });
        assert_eq!(put(&mut c.rpc(i), &t, true).unwrap()["ok"], json!(true), "via node {i}");
    }
    // Restarted, node 4 comes back in epoch 2 from its own ledger (node 1, removed, refuses
    // to start once its ledger has its removal). `up` counts and lists the nodes it started:
    // node 5 among them.
    let printed = c.up();
    let listed: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("  node") && l.ends_with("rpc.sock"))
        .map(|l| l.trim().split(':').next().unwrap())
        .collect();
    let removed = printed.contains("node1 was removed by governance");
    let mut want = vec!["node1", "node2", "node3", "node4", "node5"];
    want.retain(|n| !removed || *n != "node1");
    assert_eq!(listed, want, "{printed}");
    assert!(printed.contains(&format!("{} nodes up", want.len())), "{printed}");
    wait("node 4 to catch up in epoch 2", Duration::from_secs(60), || {
        membership(&c, 4).0 == 2 && c.height(4) >= c.height(5)
    });
    // A node just restarted may still report its view change for a moment: status says so
    // (exit 1) until it has settled.
    let mut out = String::new();
    wait("status to find the consortium healthy", Duration::from_secs(30), || {
        let r = vpbox(&["status", "--dir", dir]);
        out = r.text();
        r.code == 0
    });
    assert!(out.contains("node5") && out.contains("of 4 members"), "{out}");
    proofs_across_the_membership_changes(&c, &kc, &key(2000), &key(3000));
    // Anchored through bank C's issuing CA (a two-certificate chain), before its revocation.
    let kc2 = "0x".to_string() + &"c3".repeat(32);
    proof_verifies(&c, "bank-c-issuing-ca", &kc2, 0, "bank-c");
    // Every node's engine and ledger agreed on each epoch.
    for i in 1..=5 {
        let log = std::fs::read_to_string(c.dir.join(format!("node{i}/node.log"))).unwrap();
        assert!(!log.contains("differs from the ledger"), "node {i}:\n{log}");
    }
}

/// Proof bundles of three anchors — bank C's first (after its root was added, epoch 0), one in
/// epoch 1 (node 5 added) and one in epoch 2 (node 1, the first primary, removed) — fetched
/// through a box's proxy and verified offline with only the genesis hash, or the founding
/// roots; refused, with the reason, for another consortium's hash or roots and for a slip that
/// is not the one anchored. `VPBOX_UPDATE_VECTORS=1` writes them to `testdata/proofs/` (the
/// valid vectors that vpbox-proof's tests and the independent verifier check).
/// Fetches the proof of `key` through a box's proxy into `NAME.proof` and verifies it with
/// the genesis hash: valid, in `epoch`, submitted by a POSP of `bank`, signed by a quorum of
/// that epoch's members; the verdict as JSON.
fn proof_verifies(c: &Cluster, name: &str, key: &str, epoch: u64, bank: &str) -> Value {
    let posp = match bank {
        "bank-a" => "bank-a-posp",
        _ if name.contains("issuing") => "posp-c2",
        _ => "bank-c-posp",
    };
    let genesis = std::fs::read(c.dir.join("genesis.json")).unwrap();
    let chain = vpbox_sm::sm3::hash(&genesis).to_hex();
    let file = c.dir.join(format!("{name}.proof"));
    let r = vpbox(&["proof", "get", key, "--out", s(&file), "--dir", s(&c.dir)]);
    assert_eq!(r.code, 0, "proof get {name}: {}{}", r.text(), r.stderr);
    let r = vpbox(&["proof", "verify", s(&file), "--genesis-hash", &chain, "--json"]);
    assert_eq!(r.code, 0, "{name}: {}{}", r.text(), r.stderr);
    let v: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(v["key"], json!(key), "{name}: {v}");
    assert_eq!(v["epoch"], json!(epoch), "{name}: {v}");
    assert_eq!(v["submitter"], json!({"name": posp, "bank": bank}), "{name}: {v}");
    let signers: Vec<u64> =
        v["signers"].as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect();
    let members: &[u64] = match epoch {
        0 => &[1, 2, 3, 4],
        1 => &[1, 2, 3, 4, 5],
        _ => &[2, 3, 4, 5],
    };
    assert!(signers.iter().all(|i| members.contains(i)), "{name}: {signers:?}");
    assert!(signers.len() as u64 >= v["quorum"].as_u64().unwrap(), "{name}: {v}");
    assert_eq!(v["members"], json!(members.len()), "{name}: {v}");
    // The independent verifier gives the same verdict on this live bundle.
    assert_eq!(independent_verdict(&file, &chain), v, "{name}: the two verifiers disagree");
    // What the ledger itself says: the value, the block and its hash.
    let got = c.rpc(2).call("anchor_get", json!([key])).unwrap();
    assert_eq!((&v["value"], &v["height"]), (&got["value"], &got["blockNumber"]), "{name}");
    let block = c.rpc(2).call("block_getBlockByNumber", json!([got["blockNumber"]])).unwrap();
    assert_eq!(v["blockHash"], block["hash"], "{name}");
    // For a person: the verdict names the value, the block, the banks and the submitter.
    let r = vpbox(&["proof", "verify", s(&file), "--genesis-hash", &chain]);
    let text = r.text();
    assert!(text.starts_with("VALID: key") && text.contains(&format!("of epoch {epoch}")));
    assert!(text.contains(&format!("of {bank}, transaction signed at")), "{text}");
    if std::env::var_os("VPBOX_UPDATE_VECTORS").is_some() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/proofs");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::copy(&file, out.join(format!("{name}.proof"))).unwrap();
        std::fs::write(out.join("genesis.json"), &genesis).unwrap();
        let listed = out.join("valid.json");
        let mut m: Value = std::fs::read(&listed)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|m: &Value| m["genesisHash"] == json!(chain))
            .unwrap_or_else(|| json!({"genesisHash": chain, "valid": []}));
        let list = m["valid"].as_array_mut().unwrap();
        list.retain(|e| e["file"] != json!(format!("{name}.proof")));
        list.push(json!({"file": format!("{name}.proof"), "verdict": v}));
        list.sort_by_key(|e| e["file"].as_str().unwrap().to_string());
        std::fs::write(&listed, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
    }
    v
}

fn proofs_across_the_membership_changes(c: &Cluster, kc: &str, k1: &[u8; 32], k2: &[u8; 32]) {
    let dir = s(&c.dir);
    let genesis = std::fs::read(c.dir.join("genesis.json")).unwrap();
    let chain = vpbox_sm::sm3::hash(&genesis).to_hex();
    let hex = |k: &[u8; 32]| format!("0x{}", hex_of(k));
    proof_verifies(c, "bank-c-epoch0", kc, 0, "bank-c");
    proof_verifies(c, "epoch1", &hex(k1), 1, "bank-a");
    let epoch2 = proof_verifies(c, "epoch2", &hex(k2), 2, "bank-a");
    // A batch that carries a key twice: the first pair anchors it, the second gets "the key
    // exist"; the proof names the first value.
    let (kb, kb2) = (vpbox_sm::sm3::hash(b"batch key").0, vpbox_sm::sm3::hash(b"batch key 2").0);
    let pairs = vec![(kb, [0xb1; 32]), (kb2, [0xb2; 32]), (kb, [0xb3; 32])];
    let t = tx(&posp(&c.dir), 4000, now_ms(), Payload::AnchorPutBatch(pairs));
    let r = c.rpc(2).call("anchor_putBatch", json!({"tx": hex::encode(t.encode()), "wait": true}));
    let oks: Vec<bool> =
        r.unwrap()["results"].as_array().unwrap().iter().map(|x| x["ok"] == json!(true)).collect();
    assert_eq!(oks, [true, true, false]);
    let v = proof_verifies(c, "batch-first-value", &hex(&kb), 2, "bank-a");
    assert_eq!(v["value"], json!(hex(&[0xb1; 32])), "{v}");
    // An auditor's old head (block 2, epoch 0) and the epoch-2 anchor's block: the later
    // extends the earlier across both membership changes.
    let to = epoch2["height"].as_u64().unwrap().to_string();
    let heads = c.dir.join("consistency.proof");
    let r = vpbox(&[
        "proof",
        "consistency",
        "--from",
        "2",
        "--to",
        &to,
        "--out",
        s(&heads),
        "--dir",
        dir,
        "--genesis-hash",
        &chain,
    ]);
    let text = r.text();
    assert_eq!(r.code, 0, "{text}{}", r.stderr);
    assert!(text.contains(&format!("VALID: block {to} extends block 2")), "{text}");
    let r = vpbox(&["proof", "verify", s(&heads), "--genesis-hash", &chain, "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    let consistency: Value = serde_json::from_str(&r.text()).unwrap();
    let theirs = independent_verdict(&heads, &chain);
    assert_eq!(theirs, consistency, "the two verifiers disagree on the consistency proof");
    assert_eq!(consistency["from"]["epoch"], 0, "{consistency}");
    assert_eq!(consistency["to"]["epoch"], 2, "{consistency}");
    let r = vpbox(&[
        "proof",
        "consistency",
        "--from",
        &to,
        "--to",
        "2",
        "--out",
        s(&heads),
        "--dir",
        dir,
    ]);
    assert!(r.code == 2 && r.stderr.contains("1 ≤ from < to"), "{}", r.stderr);
    // State proofs against the last block: the epoch-2 key's first value, and a key never
    // anchored ("the key is not exist", proven).
    // A key that differs from the epoch-2 key in its last bit only: its path ends at that
    // key's leaf (alone under their 255 shared bits), another key's, so it is absent.
    let never = vpbox_sm::sm3::hash(b"never anchored").0;
    let mut beside = *k2;
    beside[31] ^= 1;
    for (name, key, anchored) in [
        ("state-present", *k2, true),
        ("state-absent", never, false),
        ("state-absent-beside", beside, false),
    ] {
        let out = c.dir.join(format!("{name}.proof"));
        let r = vpbox(&[
            "proof",
            "state",
            &hex(&key),
            "--out",
            s(&out),
            "--dir",
            dir,
            "--genesis-hash",
            &chain,
        ]);
        let text = r.text();
        assert_eq!(r.code, 0, "{name}: {text}{}", r.stderr);
        let said = if anchored { "is anchored with value" } else { "is not anchored" };
        assert!(text.contains(&format!("VALID: key {} {said}", hex(&key))), "{text}");
        let r = vpbox(&["proof", "verify", s(&out), "--genesis-hash", &chain, "--json"]);
        assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
        let v: Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(v["anchored"], json!(anchored), "{name}: {v}");
        let got = c.rpc(2).call("anchor_get", json!([hex(&key)])).unwrap();
        assert_eq!(got["ok"], json!(anchored), "{name}: the ledger says otherwise: {got}");
        if anchored {
            assert_eq!((&v["value"], &v["height"]), (&got["value"], &got["blockNumber"]));
            assert_eq!(v["value"], epoch2["value"], "{v}");
        }
        assert_eq!(v["asOf"]["epoch"], 2, "{v}");
        let shown: Value =
            serde_json::from_str(&vpbox(&["proof", "show", s(&out)]).text()).unwrap();
        let end = &shown["state"]["leaf"]["key"];
        match name {
            "state-absent" => assert_ne!(end, &json!(hex(&key)), "{shown}"),
            _ => assert_eq!(end, &json!(hex(k2)), "{name}: the epoch-2 key's leaf: {shown}"),
        }
        assert_eq!(independent_verdict(&out, &chain), v, "{name}: the two verifiers disagree");
        if std::env::var_os("VPBOX_UPDATE_VECTORS").is_some() {
            let dest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/proofs");
            std::fs::copy(&out, dest.join(format!("{name}.proof"))).unwrap();
            let listed = dest.join("valid.json");
            let mut m: Value = serde_json::from_slice(&std::fs::read(&listed).unwrap()).unwrap();
            let list = m["valid"].as_array_mut().unwrap();
            list.retain(|e| e["file"] != json!(format!("{name}.proof")));
            list.push(json!({"file": format!("{name}.proof"), "verdict": v}));
            list.sort_by_key(|e| e["file"].as_str().unwrap().to_string());
            std::fs::write(&listed, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
        }
    }
    let file = c.dir.join("epoch2.proof");
    let other = vpbox_sm::sm3::hash(b"another consortium").to_hex();
    let r = vpbox(&["proof", "verify", s(&file), "--genesis-hash", &other, "--json"]);
    let v: Value = serde_json::from_str(&r.text()).unwrap();
    assert!(r.code == 1 && v["reason"] == "other-chain", "{v}");
    let slip = c.dir.join("not-the-slip.pdf");
    std::fs::write(&slip, b"%PDF-1.7 another slip").unwrap();
    let r = vpbox(&["proof", "verify", s(&file), "--genesis-hash", &chain, "--slip", s(&slip)]);
    assert!(r.code == 1 && r.text().contains("(slip-mismatch)"), "{}", r.text());
    let r = vpbox(&["proof", "verify", s(&file)]);
    assert_eq!(r.code, 2, "no trust anchor is a usage error: {}", r.stderr);
    let r = vpbox(&["proof", "verify", s(&file), "--genesis-hash", &chain, "--roots", "r.pem"]);
    assert!(
        r.code == 2 && r.stderr.contains("unexpected argument '--roots'"),
        "founding roots are no trust anchor: {}",
        r.stderr
    );
    if std::env::var_os("VPBOX_UPDATE_VECTORS").is_some() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/proofs");
        std::fs::copy(&heads, out.join("consistency.proof")).unwrap();
        let listed = out.join("valid.json");
        let mut m: Value = serde_json::from_slice(&std::fs::read(&listed).unwrap()).unwrap();
        let list = m["valid"].as_array_mut().unwrap();
        list.retain(|e| e["file"] != json!("consistency.proof"));
        list.push(json!({"file": "consistency.proof", "verdict": consistency}));
        std::fs::write(&listed, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
    }
}

/// The verdict of the independent verifier (Python with gmssl, written from
/// docs/proof-format.md alone: proof/tests/independent_verifier.py) on `file`, as JSON.
fn independent_verdict(file: &Path, chain: &str) -> Value {
    let python =
        std::env::var("VPBOX_PYTHON").unwrap_or_else(|_| "/opt/vpbox-pytest/bin/python3".into());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proof/tests/independent_verifier.py");
    let out = Command::new(&python)
        .args([s(&script), "verify", s(file), "--genesis-hash", chain, "--json"])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/deps.sh --test makes its venv)"));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
