//! Proofs per second and their size: verification of each valid vector of `testdata/proofs/`
//! (an anchor, a consistency proof, state proofs), and the making of state proofs (a key's
//! first value or its absence) on a ledger of `VPBOX_BENCH_ANCHORS` anchors (default 200,000,
//! in blocks of ten 1,000-pair transactions), with the time to open that ledger (its state map
//! is rebuilt from the anchors).
//!
//! `cargo bench -p vpbox-proof --bench proofs`; `VPBOX_BENCH_ANCHORS=20000
//! VPBOX_BENCH_SECONDS=0.1` for a smoke run. One thread; the figures are per core.

use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use vpbox_ledger::Ledger;
use vpbox_ledger::block::Block;
use vpbox_ledger::state::Lookup;
use vpbox_ledger::tx::{Payload, TxBody};
use vpbox_proof::bundle::{Body, Bundle};
use vpbox_proof::verify::{TrustAnchor, verify_bytes};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::sm3::{Digest, hash};
use vpbox_sm::{Signer, SoftwareSigner};

/// Runs `f` for about `secs`; calls per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while n == 0 || start.elapsed() < Duration::from_secs_f64(secs) {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 =
        std::env::var("VPBOX_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let anchors: u64 =
        std::env::var("VPBOX_BENCH_ANCHORS").ok().and_then(|s| s.parse().ok()).unwrap_or(200_000);

    // Verification of the committed vectors.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/proofs");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("valid.json")).expect("valid.json"))
            .expect("valid.json is JSON");
    let chain = Digest::from_hex(manifest["genesisHash"].as_str().expect("genesisHash"))
        .expect("genesis hash");
    let anchor = TrustAnchor::GenesisHash(chain);
    println!("{:<28} {:>11} {:>9} {:>12}", "vector", "kind", "bytes", "verified/s");
    let mut out = Vec::new();
    for v in manifest["valid"].as_array().expect("valid") {
        let file = v["file"].as_str().expect("file");
        let bytes = std::fs::read(dir.join(file)).expect("vector");
        let kind = match Bundle::decode(&bytes).expect("bundle").body {
            Body::Anchor(_) => "anchor",
            Body::Consistency(_) => "consistency",
            Body::State(_) => "state",
        };
        let per_s = rate(secs, || {
            verify_bytes(&bytes, &anchor, None).expect("valid");
        });
        println!("{file:<28} {kind:>11} {:>9} {per_s:>12.0}", bytes.len());
        out.push(serde_json::json!({"file": file, "kind": kind, "bytes": bytes.len(),
            "verified_per_s": per_s.round()}));
    }

    // Making state proofs on a ledger of `anchors` anchors.
    let signer = SoftwareSigner::new(SecretKey::generate().expect("random source"));
    let key = |i: u64| hash(i.to_be_bytes()).0;
    let path = tempfile::tempdir().expect("tempdir");
    let genesis = b"{\"bench\": true}".to_vec();
    {
        let mut ledger = Ledger::open(path.path()).expect("open");
        ledger.init_genesis(&Block::genesis(hash(&genesis), 0)).expect("genesis");
        let batch = 1000;
        for b in 0..anchors.div_ceil(batch * 10) {
            let txs = (0..10)
                .map(|t| {
                    let first = (b * 10 + t) * batch;
                    let pairs = (first..(first + batch).min(anchors))
                        .map(|i| (key(i), hash(key(i)).0))
                        .collect();
                    TxBody {
                        submitter: signer.public_key().fingerprint(),
                        nonce: b * 10 + t,
                        timestamp_ms: 1,
                        payload: Payload::AnchorPutBatch(pairs),
                    }
                    .sign(&signer)
                    .expect("sign")
                })
                .collect();
            let e = ledger.execute(&[], txs).expect("execute");
            ledger.commit(&e, &[0; 300]).expect("commit");
        }
    }
    let start = Instant::now();
    let ledger = RwLock::new(Ledger::open(path.path()).expect("reopen"));
    let open_s = start.elapsed().as_secs_f64();
    let mut i = 0u64;
    let (mut bytes, mut depth, mut made) = (0usize, 0usize, 0usize);
    let mut present = 0usize;
    let build_per_s = rate(secs, || {
        // Alternately a present key and an absent one.
        let k = if i % 2 == 0 { key(i / 2 % anchors) } else { key(anchors + i) };
        i += 1;
        let b = vpbox_proof::build::state(&ledger, &genesis, &k).expect("state proof");
        let Body::State(st) = &b.body else { unreachable!() };
        let (root, what) = st.path.evaluate(&k).expect("a path of the key");
        assert_eq!(root, st.evidence.header.state_root);
        present += usize::from(matches!(what, Lookup::Present(_)));
        bytes += b.encode().len();
        depth += st.path.siblings.len();
        made += 1;
    });
    let (avg_bytes, avg_depth) = (bytes / made, depth as f64 / made as f64);
    println!(
        "state proofs on {anchors} anchors: {build_per_s:.0} made/s ({present} of {made} \
         present), {avg_bytes} bytes each, paths of {avg_depth:.1} hashes on average; \
         opening the ledger (state map rebuilt): {open_s:.2} s"
    );
    println!(
        "{}",
        serde_json::json!({"bench": "proofs", "verify": out, "anchors": anchors,
            "state_made_per_s": build_per_s.round(), "state_bytes": avg_bytes,
            "state_path_avg": avg_depth, "open_s": open_s})
    );
}
