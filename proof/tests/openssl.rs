//! The OpenSSL commands of `docs/proof-format.md` §9, run on a vector: OpenSSL 3.0 agrees with
//! the bundle's submitter chain (at the transaction's time), its transaction signature and a
//! commit signature — and refuses each once a byte changes. A second, independent SM2.

use std::path::{Path, PathBuf};
use std::process::Command;

use vpbox_consensus::wire::decode_certificate;
use vpbox_proof::bundle::{Body, Bundle};
use vpbox_sm::sm3::hash;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/proofs")
}

fn pem(label: &str, der: &[u8]) -> String {
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap()
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().expect("the openssl command");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `r ‖ s` as DER.
fn der_sig(raw: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().take_while(|x| **x == 0).count()..];
        let mut v = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        v.push((b.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let body = [int(&raw[..32]), int(&raw[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

/// `openssl pkeyutl -verify` of `msg` under the public key `pub_pem` with the standard ID.
fn pkeyutl_verify(tmp: &Path, pub_pem: &str, msg: &[u8], sig_der: &[u8]) -> bool {
    let (k, m, s) = (tmp.join("pub.pem"), tmp.join("msg.bin"), tmp.join("sig.der"));
    std::fs::write(&k, pub_pem).unwrap();
    std::fs::write(&m, msg).unwrap();
    std::fs::write(&s, sig_der).unwrap();
    let str = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, text) = openssl(&[
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        &str(&k),
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        "distid:1234567812345678",
        "-in",
        &str(&m),
        "-sigfile",
        &str(&s),
    ]);
    ok && text.contains("Signature Verified Successfully")
}

#[test]
fn openssl_checks_the_chain_the_transaction_and_a_commit_signature_of_a_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bytes = std::fs::read(dir().join("epoch2.proof")).unwrap();
    let b = Bundle::decode(&bytes).unwrap();
    let Body::Anchor(a) = &b.body else { panic!("an anchor bundle") };
    let genesis: serde_json::Value = serde_json::from_slice(&b.genesis).unwrap();

    // The submitter's chain under its bank's root, at the transaction's time (and not at a
    // time before the certificate existed).
    let enroll = vpbox_ledger::tx::Tx::decode(&a.enrollment.tx.tx).unwrap();
    let vpbox_ledger::tx::Payload::Enroll(enrolled) = &enroll.body().payload else {
        panic!("an Enroll transaction")
    };
    let chain = vpbox_ca::cert::split_der(enrolled).unwrap();
    let leaf = t.join("leaf.pem");
    std::fs::write(&leaf, pem("CERTIFICATE", chain[0])).unwrap();
    let roots: String = genesis["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["certificate"].as_str().unwrap().to_string())
        .collect();
    let root = t.join("roots.pem");
    std::fs::write(&root, roots).unwrap();
    let body_len = a.tx.tx.len() - 64;
    let ts = u64::from_be_bytes(a.tx.tx[42..50].try_into().unwrap()) / 1000;
    let verify_at = |when: u64| {
        openssl(&[
            "verify",
            "-vfyopt",
            "distid:1234567812345678",
            "-CAfile",
            root.to_str().unwrap(),
            "-attime",
            &when.to_string(),
            leaf.to_str().unwrap(),
        ])
    };
    let (ok, text) = verify_at(ts);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = verify_at(ts - 10 * 365 * 86_400);
    assert!(!ok, "valid ten years before: {text}");

    // The transaction's signature: `VPBOX/tx/v1 ‖ 0 ‖ body` under the leaf's key.
    let (ok, pub_pem) = openssl(&["x509", "-in", leaf.to_str().unwrap(), "-pubkey", "-noout"]);
    assert!(ok, "{pub_pem}");
    let body = &a.tx.tx[..body_len];
    let sig = der_sig(&a.tx.tx[body_len..]);
    let msg = [b"VPBOX/tx/v1\0".as_slice(), body].concat();
    assert!(pkeyutl_verify(t, &pub_pem, &msg, &sig), "the transaction's signature");
    let mut other = msg;
    *other.last_mut().unwrap() ^= 1;
    assert!(!pkeyutl_verify(t, &pub_pem, &other, &sig), "a changed body");

    // A commit signature of a founding node that signed the epoch-2 block: its consensus key
    // from the genesis as an SPKI, over `VPBOX/consensus/v1 ‖ 0 ‖ SM3(P)`.
    let cert = decode_certificate(&a.evidence.certificate).unwrap();
    let (id, sig) = cert
        .signatures
        .iter()
        .find(|(id, _)| id.0 <= 4)
        .expect("a founding node among the signers");
    let node = genesis["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id.0).unwrap();
    let point = hex::decode(node["consensus_key"].as_str().unwrap()).unwrap();
    let spki =
        [hex::decode("3059301306072a8648ce3d020106082a811ccf5501822d034200").unwrap(), point]
            .concat();
    let mut p = b"vpbox/consensus/msg/v2\0".to_vec();
    p.extend_from_slice(&2u64.to_be_bytes()); // epoch 2
    p.extend_from_slice(&id.0.to_be_bytes());
    p.push(2);
    p.extend_from_slice(&cert.view.0.to_be_bytes());
    p.extend_from_slice(&cert.seq.0.to_be_bytes());
    p.extend_from_slice(&cert.block.0);
    let msg = [b"VPBOX/consensus/v1\0".as_slice(), &hash(&p).0].concat();
    let key = pem("PUBLIC KEY", &spki);
    assert!(pkeyutl_verify(t, &key, &msg, &der_sig(&sig.0)), "node {}'s commit signature", id.0);
    // The same signature does not count in another epoch.
    p[23..31].copy_from_slice(&1u64.to_be_bytes());
    let msg = [b"VPBOX/consensus/v1\0".as_slice(), &hash(&p).0].concat();
    assert!(!pkeyutl_verify(t, &key, &msg, &der_sig(&sig.0)), "epoch 1");
}
