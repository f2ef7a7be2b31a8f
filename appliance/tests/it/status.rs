//! `vpbox status` against a consortium folder whose nodes are stand-ins: one answers, one takes
//! connections and never answers (a stopped node), one is gone.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use vpbox_ca::CertProfile;
use vpbox_ca::cert::{Grant, check_request, issue, random_serial, self_signed_root};
use vpbox_node::rpc::{Methods, RpcError};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Signer, SoftwareSigner};

use crate::{Scratch, s};

/// Writes `dir/genesis.json` for nodes `node1..=nodeN` of bank-a, each certified by bank-a's
/// root, and each box's `dir/nodeI/box.toml` naming its RPC socket `dir/nodeI/rpc.sock`.
fn write_genesis(dir: &Path, n: u32) {
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    let ca = SoftwareSigner::new(SecretKey::generate().unwrap());
    let root = self_signed_root(&ca, "bank-a", "CN", random_serial([7; 16]).unwrap(), now, 30);
    let root = root.unwrap();
    let nodes: Vec<Value> = (1..=n)
        .map(|i| {
            let key = SoftwareSigner::new(SecretKey::generate().unwrap());
            let subject = format!("CN=node{i},OU=vp-node,O=bank-a");
            let csr = vpbox_ca::build_csr(&key, &subject).unwrap();
            let req = check_request(&csr, CertProfile::VpNode, "bank-a").unwrap();
            let grant = Grant {
                profile: CertProfile::VpNode,
                serial: random_serial([i as u8; 16]).unwrap(),
                now,
                days: 30,
                dns_names: vec![format!("node{i}.bank-a")],
            };
            json!({
                "id": i, "bank": "bank-a", "name": format!("node{i}"),
                "consensus_key": hex::encode(key.public_key().to_sec1_uncompressed()),
                "certificate": issue(&ca, &root, &req, grant).unwrap(),
            })
        })
        .collect();
    let ms = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    let genesis = json!({
        "chain_id": "status-test", "timestamp_ms": ms, "nodes": nodes,
        "roots": [{"bank": "bank-a", "certificate": root}],
    });
    std::fs::write(dir.join("genesis.json"), genesis.to_string()).unwrap();
    for i in 1..=n {
        let nd = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&nd).unwrap();
        let config = format!(
            "node_id = {i}\ngenesis = \"../genesis.json\"\ndata_dir = \"data\"\n\
             [signer]\nsocket = \"signer.sock\"\n\
             [sockets]\nrpc = \"rpc.sock\"\npeer = \"peer.sock\"\negress = \"egress\"\n"
        );
        std::fs::write(nd.join("box.toml"), config).unwrap();
    }
}

/// A node that answers `node_getNodes` as node 2 of three.
struct Answering;

impl Methods for Answering {
    fn call(&self, method: &str, _: &Value) -> Result<Value, RpcError> {
        let member = |id: u32| {
            json!({"id": id, "name": format!("node{id}"), "bank": "bank-a", "isPrimary": id == 2,
                   "isSelf": id == 2, "status": if id == 2 { "up" } else { "unreachable" },
                   "delay": null, "height": 0})
        };
        match method {
            "node_getNodes" => Ok(json!({
                "self": 2, "view": 1, "primary": 2, "epoch": 0, "height": 7, "pending": 0,
                "nodes": [member(1), member(2), member(3)],
            })),
            _ => Err(RpcError::new(RpcError::METHOD_NOT_FOUND, method)),
        }
    }
}

#[test]
fn status_gives_each_node_two_seconds_and_shows_the_others() {
    let scratch = Scratch::new();
    let dir = scratch.path("cluster");
    std::fs::create_dir(&dir).unwrap();
    write_genesis(&dir, 3);
    // node1 is stopped: its socket takes connections and never answers.
    let silent = UnixListener::bind(dir.join("node1/rpc.sock")).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    // node2 answers; node3 has no socket at all.
    let answering = UnixListener::bind(dir.join("node2/rpc.sock")).unwrap();
    std::thread::spawn(move || {
        let (methods, limits) = (Arc::new(Answering), vpbox_node::http::Limits::default());
        vpbox_node::http::serve(
            answering,
            methods,
            limits,
            vec![],
            Arc::new(AtomicBool::new(false)),
        )
    });

    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpbox"))
        .args(["status", "--dir", s(&dir)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("vpbox status still waits for the silent node after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(took < Duration::from_secs(3), "took {took:?}:\n{out}");
    let line = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or("").to_string();
    assert!(line("node1").ends_with("down (no answer within 2 s)"), "{out}");
    assert!(line("node2").contains(" up ") && line("node2").contains("node2"), "{out}");
    assert!(line("node3").trim_end().ends_with("down"), "{out}");
    assert!(out.contains("1 of 3 boxes answer"), "{out}");
    assert_eq!(status.code(), Some(1), "no quorum: {out}");
    for why in [
        "unhealthy: no quorum: 1 of the members answer and 2 are needed",
        "unhealthy: node1 (bank-a) does not answer",
        "unhealthy: node3 (bank-a) does not answer",
    ] {
        assert!(out.contains(why), "{why} not in:\n{out}");
    }
    assert!(!out.contains("unhealthy: node2"), "node2 answers, up: {out}");
}
