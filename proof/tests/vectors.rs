//! The test vectors of `docs/proof-format.md`, in `testdata/proofs/`:
//! - `valid.json` lists bundles a live cluster produced across two membership changes (the
//!   cluster test writes them with `VPBOX_UPDATE_VECTORS=1`) and the verdict each must give;
//! - `invalid.json` lists one bundle per failure reason, each made here from a valid one by
//!   one change, and the reason it must be refused with. `VPBOX_UPDATE_VECTORS=1` rewrites
//!   them; otherwise the committed files must be exactly what this test makes, so the vectors
//!   an outside implementer reads are the ones checked here.

use std::path::PathBuf;

use serde_json::{Value, json};
use vpbox_consensus::Signature as CSig;
use vpbox_consensus::wire::{decode_certificate, encode_certificate};
use vpbox_proof::bundle::{AnchorPart, Body, Bundle, ConsistencyPart, StatePart};
use vpbox_proof::verify::{TrustAnchor, verify_bytes};
use vpbox_sm::sm3::{Digest, hash};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/proofs")
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn anchor(hex_hash: &str) -> TrustAnchor {
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut d).unwrap();
    TrustAnchor::GenesisHash(Digest(d))
}

#[test]
fn every_valid_vector_verifies_with_its_documented_verdict() {
    let m = manifest("valid.json");
    let chain = m["genesisHash"].as_str().unwrap();
    let genesis = std::fs::read(dir().join("genesis.json")).unwrap();
    assert_eq!(hash(&genesis).to_hex(), chain, "genesis.json is the vectors' genesis");
    let valid = m["valid"].as_array().unwrap();
    assert!(valid.len() >= 3);
    for v in valid {
        let file = v["file"].as_str().unwrap();
        let bytes = std::fs::read(dir().join(file)).unwrap();
        let got =
            verify_bytes(&bytes, &anchor(chain), None).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut want = v["verdict"].clone();
        want.as_object_mut().unwrap().remove("slip");
        assert_eq!(got.to_json(), want, "{file}");
        // The encoding is canonical: decoding and encoding again gives the same bytes.
        assert_eq!(Bundle::decode(&bytes).unwrap().encode(), bytes, "{file}");
    }
}

fn early_of_bank_c() -> Bundle {
    Bundle::decode(&std::fs::read(dir().join("bank-c-epoch0.proof")).unwrap()).unwrap()
}

fn anchor_of(b: &mut Bundle) -> &mut AnchorPart {
    match &mut b.body {
        Body::Anchor(a) => a,
        _ => panic!("an anchor bundle"),
    }
}

fn state_of(b: &mut Bundle) -> &mut StatePart {
    match &mut b.body {
        Body::State(s) => s,
        _ => panic!("a state bundle"),
    }
}

fn heads_of(b: &mut Bundle) -> &mut ConsistencyPart {
    match &mut b.body {
        Body::Consistency(c) => c,
        _ => panic!("a consistency bundle"),
    }
}

/// Re-encodes the anchor block's certificate after `f` changed it.
fn with_certificate(b: &mut Bundle, f: impl FnOnce(&mut vpbox_consensus::CommitCertificate)) {
    let a = anchor_of(b);
    let mut c = decode_certificate(&a.evidence.certificate).unwrap();
    f(&mut c);
    a.evidence.certificate = encode_certificate(&c);
}

/// One invalid bundle per reason, each one change away from the epoch-2 vector: (file name,
/// the reason, the bytes, the genesis hash to verify against).
fn invalid_vectors(chain: &str) -> Vec<(&'static str, &'static str, Vec<u8>, String)> {
    let base = std::fs::read(dir().join("epoch2.proof")).unwrap();
    let good = Bundle::decode(&base).unwrap();
    assert_eq!(good.governance.len(), 3, "add root, add node 5, remove node 1");
    let mut out = Vec::new();
    let mut add = |name: &'static str, reason: &'static str, f: &dyn Fn(&mut Bundle)| {
        let mut b = good.clone();
        f(&mut b);
        out.push((name, reason, b.encode(), chain.to_string()));
    };
    add("other-chain", "other-chain", &|b| b.genesis.push(b'\n'));
    add("governance-order", "governance-order", &|b| b.governance.swap(0, 1));
    // Without the change that added node 5, block 24 is checked against the genesis members
    // in epoch 0, and the signatures (made in epoch 1) do not verify.
    add("missing-change", "signature", &|b| {
        b.governance.remove(1);
    });
    add("governance-not-applied", "governance-not-applied", &|b| {
        b.governance[1].configs[0].index += 1;
    });
    add("governance-not-approved", "governance-not-approved", &|b| {
        // Bank A's admin's certificate is missing: its approval cannot be checked.
        let g = &mut b.governance[2];
        g.admins.retain(|c| !String::from_utf8_lossy(c).contains("bank-a"));
    });
    add("governance-refused", "governance-refused", &|b| {
        // Bank B's admin submitted the removal: without its certificate the submitter is no
        // admin the verifier can admit.
        let g = &mut b.governance[2];
        g.admins.retain(|c| !String::from_utf8_lossy(c).contains("bank-b"));
    });
    add("tx-root", "tx-root", &|b| anchor_of(b).evidence.tx_hashes[0].0[0] ^= 1);
    add("tx-count", "tx-root", &|b| anchor_of(b).evidence.header.tx_count += 1);
    add("result-outside-block", "results-root", &|b| {
        anchor_of(b).evidence.results[0].index = 5;
    });
    add("result-of-a-repeat", "results-root", &|b| {
        // The block's one transaction, twice: its result belongs at its first index only.
        let e = &mut anchor_of(b).evidence;
        let d = e.tx_hashes[0];
        e.tx_hashes.push(d);
        e.header.tx_count += 1;
        e.header.tx_root = vpbox_ledger::merkle::root(&e.tx_hashes);
        e.results[0].index = 1;
    });
    add("proven-out-of-order", "governance-order", &|b| {
        let first = b.governance[1].configs[0].clone();
        b.governance[1].configs.push(first);
    });
    add("results-root", "results-root", &|b| anchor_of(b).evidence.results[0].codes[0] ^= 1);
    add("certificate-malformed", "certificate-malformed", &|b| {
        anchor_of(b).evidence.certificate.pop();
    });
    add("certificate-other-block", "certificate-other-block", &|b| {
        anchor_of(b).evidence.certificate = b.governance[2].evidence.certificate.clone();
    });
    add("certificate-other-seq", "certificate-other-block", &|b| {
        with_certificate(b, |c| c.seq.0 += 1);
    });
    add("signature", "signature", &|b| {
        with_certificate(b, |c| c.signatures[0].1.0[10] ^= 1);
    });
    add("below-quorum", "below-quorum", &|b| {
        with_certificate(b, |c| c.signatures.truncate(2));
    });
    add("duplicate-signer", "duplicate-signer", &|b| {
        with_certificate(b, |c| {
            let first = c.signatures[0].clone();
            c.signatures.push(first);
        });
    });
    add("signer-not-member", "signer-not-member", &|b| {
        // Node 1 was removed in epoch 2: its signature does not count there.
        with_certificate(b, |c| {
            c.signatures[0] = (vpbox_consensus::NodeId(1), CSig(vec![1; 64]));
        });
    });
    add("signature-before-member", "signature", &|b| {
        // Entry by entry: the first entry's bad signature decides, not the second's non-member.
        with_certificate(b, |c| {
            c.signatures[0].1.0[10] ^= 1;
            c.signatures[1].0 = vpbox_consensus::NodeId(1);
        });
    });
    add("tx-not-in-block", "tx-not-in-block", &|b| {
        anchor_of(b).tx.index += 1;
    });
    add("tx-signature", "tx-signature", &|b| {
        let tx = &mut anchor_of(b).tx.tx;
        let n = tx.len();
        tx[n - 1] ^= 1;
    });
    // Bank C's POSP's enrollment, not this submitter's: another key.
    let other = Bundle::decode(&std::fs::read(dir().join("bank-c-epoch0.proof")).unwrap()).unwrap();
    let Body::Anchor(other) = other.body else { panic!("an anchor bundle") };
    add("submitter-refused", "submitter-refused", &|b| {
        anchor_of(b).enrollment = other.enrollment.clone();
    });
    add("enrollment-not-in-block", "submitter-refused", &|b| {
        anchor_of(b).enrollment.tx.index += 1;
    });
    // The same key's earlier anchor, shown as its "enrollment": not an Enroll.
    let put = Bundle::decode(&std::fs::read(dir().join("epoch1.proof")).unwrap()).unwrap();
    let Body::Anchor(put) = put.body else { panic!("an anchor bundle") };
    add("enrollment-not-an-enroll", "submitter-refused", &|b| {
        anchor_of(b).enrollment =
            vpbox_proof::bundle::Enrollment { evidence: put.evidence.clone(), tx: put.tx.clone() };
    });
    add("enrollment-after-anchor", "submitter-refused", &|b| {
        let a = anchor_of(b);
        a.enrollment =
            vpbox_proof::bundle::Enrollment { evidence: a.evidence.clone(), tx: a.tx.clone() };
    });
    add("not-anchored", "not-anchored", &|b| anchor_of(b).key[31] ^= 1);
    // A change left out: the last one before the anchor (its header counts it), or the
    // transaction of a configuration block.
    let mut b = early_of_bank_c();
    b.governance.clear();
    out.push(("missing-trailing-change", "governance-missing", b.encode(), chain.to_string()));
    let mut b = good.clone();
    b.governance[0].configs.clear();
    out.push(("govblock-incomplete", "governance-missing", b.encode(), chain.to_string()));
    // A configuration block above the anchor's.
    let mut b = early_of_bank_c();
    b.governance.push(good.governance[2].clone());
    out.push(("governance-after-anchor", "governance-order", b.encode(), chain.to_string()));
    // A consistency proof whose headers do not link, and one that lacks a header.
    let heads = Bundle::decode(&std::fs::read(dir().join("consistency.proof")).unwrap()).unwrap();
    let mut b = heads.clone();
    heads_of(&mut b).headers[0].timestamp_ms += 1;
    out.push(("not-extending", "not-extending", b.encode(), chain.to_string()));
    let mut b = heads;
    heads_of(&mut b).headers.pop();
    out.push(("missing-header", "not-extending", b.encode(), chain.to_string()));
    // State proofs: a sibling changed; an absent key's proof shown for a key that is anchored
    // (its path leads elsewhere); a present key's leaf shown at the end of another key's path.
    let absent = Bundle::decode(&std::fs::read(dir().join("state-absent.proof")).unwrap()).unwrap();
    let present =
        Bundle::decode(&std::fs::read(dir().join("state-present.proof")).unwrap()).unwrap();
    let mut b = absent.clone();
    state_of(&mut b).path.siblings[0].0[0] ^= 1;
    out.push(("state-sibling", "state-path", b.encode(), chain.to_string()));
    let mut b = absent;
    state_of(&mut b).key = state_of(&mut present.clone()).key;
    out.push(("state-absent-for-present", "state-path", b.encode(), chain.to_string()));
    let mut b = present.clone();
    state_of(&mut b).key[0] ^= 0x80;
    out.push(("state-leaf-off-path", "state-path", b.encode(), chain.to_string()));
    let mut b = present;
    state_of(&mut b).evidence.header.state_root.0[0] ^= 1;
    out.push(("state-root-changed", "certificate-other-block", b.encode(), chain.to_string()));
    let mut truncated = base;
    truncated.pop();
    out.push(("malformed", "malformed", truncated, chain.to_string()));
    let mut b = good.clone();
    b.genesis = b"{\"chain_id\": \"no nodes, no roots\"}".to_vec();
    out.push(("genesis", "genesis", b.encode(), hash(&b.genesis).to_hex()));
    out
}

#[test]
fn every_invalid_vector_is_refused_with_its_reason() {
    let chain = manifest("valid.json")["genesisHash"].as_str().unwrap().to_string();
    let vectors = invalid_vectors(&chain);
    let update = std::env::var_os("VPBOX_UPDATE_VECTORS").is_some();
    let inv = dir().join("invalid");
    if update {
        std::fs::create_dir_all(&inv).unwrap();
    }
    // Where several checks share a reason, the one that must have refused.
    let details = [
        ("enrollment-not-in-block", "not the one at index"),
        ("enrollment-not-an-enroll", "not an enrollment"),
        ("enrollment-after-anchor", "does not come before the anchor"),
        ("submitter-refused", "another key"),
        ("result-outside-block", "a result for index 5"),
        ("result-of-a-repeat", "a repeat of an earlier transaction"),
        ("proven-out-of-order", "indices out of order"),
        ("governance-after-anchor", "out of order"),
        ("tx-count", "do not make its tx_root"),
        ("missing-header", "headers given"),
        ("missing-trailing-change", "counts 1 configuration changes, the bundle shows 0"),
        ("state-sibling", "does not lead to block"),
        ("state-leaf-off-path", "not on the key's path"),
    ];
    let mut listed = Vec::new();
    for (name, reason, bytes, genesis_hash) in &vectors {
        let file = format!("invalid/{name}.proof");
        match verify_bytes(bytes, &anchor(genesis_hash), None) {
            Ok(v) => panic!("{name}: accepted: {v:?}"),
            Err(r) => {
                assert_eq!(r.reason.name(), *reason, "{name}: {r}");
                if let Some((_, d)) = details.iter().find(|(n, _)| n == name) {
                    assert!(r.detail.contains(d), "{name}: {r}");
                }
            }
        }
        if update {
            std::fs::write(dir().join(&file), bytes).unwrap();
        } else {
            let committed = std::fs::read(dir().join(&file)).unwrap();
            assert!(committed == *bytes, "{file} is not what this test makes");
        }
        listed.push(json!({"file": file, "genesisHash": genesis_hash, "reason": reason}));
    }
    let m = json!({ "invalid": listed });
    let path = dir().join("invalid.json");
    if update {
        std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
    } else {
        assert_eq!(manifest("invalid.json"), m, "invalid.json lists every vector");
    }
    // Every reason the verifier has is covered, but the slip's (a slip is another input).
    let mut covered: Vec<&str> = vectors.iter().map(|v| v.1).collect();
    covered.sort_unstable();
    covered.dedup();
    let mut all: Vec<&str> = vpbox_proof::verify::Reason::ALL
        .iter()
        .map(|r| r.name())
        .filter(|n| *n != "slip-mismatch")
        .collect();
    all.sort_unstable();
    assert_eq!(covered, all);
}

/// Every valid vector's bytes and genesis hash, read once.
fn valid_vectors() -> &'static [(String, Vec<u8>, String)] {
    static V: std::sync::OnceLock<Vec<(String, Vec<u8>, String)>> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let m = manifest("valid.json");
        let chain = m["genesisHash"].as_str().unwrap().to_string();
        m["valid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let file = v["file"].as_str().unwrap().to_string();
                let bytes = std::fs::read(dir().join(&file)).unwrap();
                (file, bytes, chain.clone())
            })
            .collect()
    })
}

/// Where a state bundle's key lies (it is followed by the path alone).
fn state_key_at(bytes: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut b = Bundle::decode(bytes).ok()?;
    let Body::State(st) = &mut b.body else { return None };
    let leaf = match st.path.terminal {
        vpbox_ledger::state::Terminal::Empty => 0,
        vpbox_ledger::state::Terminal::Leaf(_) => 104,
    };
    let start = bytes.len() - (32 + 2 + 32 * st.path.siblings.len() + 1 + leaf);
    Some(start..start + 32)
}

/// A changed bundle is refused — but for a state proof's key: a path proves as much of every
/// key that shares its prefix (a lone leaf's subtree holds no other anchor, an empty one none),
/// so a changed key may still verify, and then the verdict is about that key and no other.
fn refused_or_about_the_changed_key(
    file: &str,
    original: &[u8],
    changed: &[u8],
    i: usize,
    chain: &str,
) -> Result<(), String> {
    let Ok(v) = verify_bytes(changed, &anchor(chain), None) else { return Ok(()) };
    let in_key = state_key_at(original).is_some_and(|r| r.contains(&i));
    let key = state_key_at(original).map(|r| format!("0x{}", hex::encode(&changed[r])));
    if in_key && v.to_json()["key"] == json!(key) {
        return Ok(());
    }
    Err(format!("{file}: byte {i} changed and it still verifies: {}", v.to_json()))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Any byte of any valid bundle changed, to any other value: refused (see
    /// [`refused_or_about_the_changed_key`] for a state proof's key).
    #[test]
    fn changing_any_byte_of_a_valid_bundle_is_refused(
        which in proptest::prelude::any::<proptest::sample::Index>(),
        at in proptest::prelude::any::<proptest::sample::Index>(),
        x in 1u8..=255,
    ) {
        let vectors = valid_vectors();
        let (file, bytes, chain) = &vectors[which.index(vectors.len())];
        let i = at.index(bytes.len());
        let mut b = bytes.clone();
        b[i] ^= x;
        let r = refused_or_about_the_changed_key(file, bytes, &b, i, chain);
        proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}

/// A state proof's own part (the key and its path, after the block's evidence), byte by byte:
/// every change of the path refused; a change of the key refused or a proof
/// about the changed key — and one that turns the absent key beside the epoch-2 key into that
/// key proves it anchored, with its value.
#[test]
fn every_bit_of_a_state_path_counts() {
    let mut other_keys = 0;
    for (file, bytes, chain) in valid_vectors().iter().filter(|v| v.0.starts_with("state-")) {
        let key = state_key_at(bytes).unwrap();
        // One bit of each byte, a different one from byte to byte (all eight in the key).
        for i in key.start..bytes.len() {
            let bits = if key.contains(&i) { 0..8 } else { i % 8..i % 8 + 1 };
            for bit in bits {
                let mut c = bytes.clone();
                c[i] ^= 1 << bit;
                refused_or_about_the_changed_key(file, bytes, &c, i, chain).unwrap();
                other_keys += usize::from(verify_bytes(&c, &anchor(chain), None).is_ok());
            }
        }
        if file == "state-absent-beside.proof" {
            let mut c = bytes.clone();
            c[key.end - 1] ^= 1;
            let v = verify_bytes(&c, &anchor(chain), None).unwrap().to_json();
            assert_eq!(v["anchored"], true, "{v}");
        }
    }
    assert!(other_keys > 0, "the key bits below a path's depth prove other keys");
}
