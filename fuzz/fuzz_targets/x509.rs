//! Certificates, chains, CRLs, CSRs and PEM from anyone: a TLS client's certificate before it
//! is authenticated, an enrolment's or a CRL's transaction bytes that every node executes, a
//! request handed to the CA operator, the PEM files of `cert enroll`, `cert publish-crl` and
//! the genesis. Nothing panics or over-allocates, whatever the bytes; the trust store is the
//! test consortium's (`testdata/proofs/genesis.json`), so that a chain under one of its roots
//! goes past the root look-up.
#![no_main]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use vpbox_ca::CertProfile;
use vpbox_ca::policy::TrustStore;

const GENESIS: &str = include_str!("../../testdata/proofs/genesis.json");

/// The test consortium's node certificates (DER): admitted as they are, so that a few bytes
/// changed in one reach the checks past parsing (names, extensions, validity, the signature).
fn nodes() -> &'static [Vec<u8>] {
    static NODES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    NODES.get_or_init(|| {
        let genesis: serde_json::Value = serde_json::from_str(GENESIS).expect("the test genesis");
        let nodes = genesis["nodes"].as_array().expect("nodes");
        nodes
            .iter()
            .map(|n| vpbox_ca::pem::chain_der(n["certificate"].as_str().expect("PEM")).expect("PEM"))
            .collect()
    })
}

/// An hour after the test genesis: within its certificates' validity, whenever they are made
/// again.
fn now() -> SystemTime {
    static NOW: OnceLock<SystemTime> = OnceLock::new();
    *NOW.get_or_init(|| {
        let genesis: serde_json::Value = serde_json::from_str(GENESIS).expect("the test genesis");
        let ms = genesis["timestamp_ms"].as_u64().expect("timestamp_ms");
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_secs(3600)
    })
}

fn store() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let genesis: serde_json::Value = serde_json::from_str(GENESIS).expect("the test genesis");
        let mut store = TrustStore::new();
        for root in genesis["roots"].as_array().expect("roots") {
            let pem = root["certificate"].as_str().expect("a root's PEM");
            store.add_root(&vpbox_ca::pem::chain_der(pem).expect("PEM")).expect("a root");
        }
        store
    })
}

const ROLES: [CertProfile; 4] =
    [CertProfile::VpNode, CertProfile::Posp, CertProfile::Admin, CertProfile::Ca];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let now = now();
    let store = store();
    for role in ROLES {
        let _ = store.admit(data, role, now);
    }
    let _ = store.admit_ca(data, now);
    // A node's certificate with the input's edits: (position:u16be, xor:u8) triples, and a
    // length it is cut to when the input's length is odd.
    if let Some((&pick, edits)) = data.split_first() {
        let nodes = nodes();
        let mut cert = nodes[pick as usize % nodes.len()].clone();
        for e in edits.chunks_exact(3) {
            let at = u16::from_be_bytes([e[0], e[1]]) as usize % cert.len();
            cert[at] ^= e[2];
        }
        if data.len() % 2 == 1 {
            cert.truncate(cert.len() - (pick as usize % 16));
        }
        let admitted = store.admit(&cert, CertProfile::VpNode, now);
        if edits.len() < 3 && data.len() % 2 == 0 {
            assert!(matches!(admitted, vpbox_ca::policy::Decision::Allow(_)), "{admitted:?}");
        }
    }
    if let Ok(parts) = vpbox_ca::cert::split_der(data) {
        assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= data.len()));
        if let Some((leaf, rest)) = parts.split_first() {
            let _ = store.admit_chain(leaf, rest, CertProfile::Posp, now);
        }
    }
    let _ = vpbox_ca::cert::leaf_summary(data);
    let _ = vpbox_ca::cert::crl_fresh_for(data, now, Duration::from_secs(3600));
    // A CRL is checked against the roots before it is kept: a clone takes it (or not).
    let _ = store.clone().add_crl(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vpbox_ca::pem::blocks(text);
        let _ = vpbox_ca::pem::chain_der(text);
        let _ = vpbox_ca::pem::crl_der(text);
        for role in ROLES {
            let _ = vpbox_ca::cert::check_request(text, role, "bank-a");
        }
    }
});
