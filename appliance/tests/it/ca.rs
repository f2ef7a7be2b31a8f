//! `vpbox ca` end to end: the CA key in the test token, a node's request signed in its token,
//! OpenSSL checking every certificate and parsing the CRL.

use crate::token::TestToken;
use crate::{openssl, s};

#[test]
fn a_bank_ca_in_the_hsm_issues_revokes_and_publishes() {
    let token = TestToken::new("bank-a", "");
    let pin = token.pin_file("pin", "123456");
    let t = ["--module", token.module.as_str(), "--token", "bank-a", "--pin-file", pin.as_str()];
    for (label, id) in [("ca", "ca01"), ("node1", "01")] {
        let made =
            token.vpbox(&[&["hsm", "keygen"], &t[..], &["--label", label, "--id", id]].concat());
        assert_eq!(made.code, 0, "{}", made.stderr);
    }
    let dir = token.dir.path("ca");
    let d = s(&dir);
    let init = token.vpbox(&[
        "ca",
        "init",
        "--dir",
        d,
        "--bank",
        "Bank A",
        "--module",
        &token.module,
        "--token",
        "bank-a",
        "--key-id",
        "ca01",
        "--pin-file",
        &pin,
    ]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    let root = dir.join("ca.pem");
    let text = openssl(&["x509", "-in", s(&root), "-noout", "-text"]).text();
    assert!(text.contains("CA:TRUE") && text.contains("O = Bank A"), "{text}");
    assert_eq!(
        token
            .vpbox(&["ca", "init", "--dir", d, "--bank", "Bank A", "--software-key-insecure"])
            .code,
        2,
        "never over an existing CA"
    );

    let csr = token.dir.path("node1.csr");
    let made = token.vpbox(
        &[
            &["hsm", "csr"],
            &t[..],
            &["--id", "01", "--subject", "CN=node1,OU=vp-node,O=Bank A,C=CN", "--out", s(&csr)],
        ]
        .concat(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let cert = token.dir.path("node1.pem");
    let issued = token.vpbox(&[
        "ca",
        "issue",
        "--dir",
        d,
        "--csr",
        s(&csr),
        "--profile",
        "vp-node",
        "--dns",
        "node1.bank-a.example",
        "--out",
        s(&cert),
    ]);
    assert_eq!(issued.code, 0, "{}", issued.stderr);
    let verify =
        openssl(&["verify", "-vfyopt", "distid:1234567812345678", "-CAfile", s(&root), s(&cert)]);
    assert!(
        verify.code == 0 && verify.text().contains(": OK"),
        "{} {}",
        verify.text(),
        verify.stderr
    );
    assert!(
        openssl(&["x509", "-in", s(&cert), "-noout", "-text"])
            .text()
            .contains("DNS:node1.bank-a.example")
    );

    // The same request under another profile does not fit (its OU says vp-node).
    let refused = token.vpbox(&["ca", "issue", "--dir", d, "--csr", s(&csr), "--profile", "posp"]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("does not fit profile posp"), "{}", refused.stderr);

    let list: serde_json::Value =
        serde_json::from_slice(&token.vpbox(&["ca", "list", "--dir", d, "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "only what was issued is recorded");
    let serial = list[0]["serial"].as_str().unwrap().to_string();
    assert_eq!(
        token.vpbox(&["ca", "revoke", "--dir", d, &serial, "--reason", "key-compromise"]).code,
        0
    );
    assert_eq!(token.vpbox(&["ca", "revoke", "--dir", d, &serial, "--reason", "again"]).code, 2);
    let crl = token.dir.path("bank-a.crl");
    assert_eq!(token.vpbox(&["ca", "crl", "--dir", d, "--out", s(&crl)]).code, 0);
    let crl_text = openssl(&["crl", "-in", s(&crl), "-noout", "-text"]).text();
    assert!(crl_text.to_lowercase().contains(&serial[..8]), "{crl_text}");

    // Every operation is in the audit log; no key and no PIN is anywhere in the CA directory.
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    for op in ["\"init\"", "\"issue\"", "\"refused\"", "\"revoke\"", "\"crl\""] {
        assert!(audit.contains(op), "{op} missing from {audit}");
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains("123456"),
            "secret material in the CA directory"
        );
    }
}

#[test]
fn a_software_ca_is_possible_for_development_and_refuses_a_swapped_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ca");
    let d = s(&d);
    assert_eq!(
        crate::vpbox(&["ca", "init", "--dir", d, "--bank", "Dev Bank", "--software-key-insecure"])
            .code,
        0
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("ca/ca.key")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Swap the key file: the CA refuses to sign with a key that is not the pinned one.
    std::fs::remove_file(dir.path().join("ca/ca.key")).unwrap();
    assert_eq!(crate::vpbox(&["sm2", "keygen", "--out", s(&dir.path().join("ca/ca.key"))]).code, 0);
    let crl = crate::vpbox(&["ca", "crl", "--dir", d]);
    assert_eq!(crl.code, 2);
    assert!(crl.stderr.contains("not the CA key pinned"), "{}", crl.stderr);
}
