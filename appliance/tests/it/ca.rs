//! `vpbox ca` end to end: the CA key in the test token, a node's request signed in its token,
//! OpenSSL checking every certificate and parsing the CRL.

use crate::token::TestToken;
use crate::{openssl, s};

/// Generates each `(label, id)` key inside the token; `t` names the module, token and PIN.
fn keygen(token: &TestToken, t: &[&str], keys: &[(&str, &str)]) {
    for (label, id) in keys {
        let made = token.vpbox(&[&["hsm", "keygen"], t, &["--label", label, "--id", id]].concat());
        assert_eq!(made.code, 0, "{}", made.stderr);
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // the test plays the host, which reads the clock
fn a_bank_ca_in_the_hsm_issues_revokes_and_publishes() {
    let token = TestToken::new("bank-a", "");
    let pin = token.pin_file("pin", "123456");
    let t = ["--module", token.module.as_str(), "--token", "bank-a", "--pin-file", pin.as_str()];
    keygen(&token, &t, &[("ca", "ca01"), ("node1", "01")]);
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
    // It says what it issued: the serial, the subject and until when.
    assert!(
        issued.stderr.starts_with("issued ")
            && issued.stderr.contains("vp-node CN=node1,OU=vp-node,O=Bank A,C=CN, valid until 20"),
        "{}",
        issued.stderr
    );
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
    // The refusal states the rule, and `--explain` says how to make a request that fits.
    assert!(
        refused
            .stderr
            .contains("a posp request must read CN=<the POSP server's ID>,OU=posp,O=Bank A"),
        "{}",
        refused.stderr
    );
    let explained = token.vpbox(&["ca", "issue", "--dir", d, "--profile", "admin", "--explain"]);
    assert_eq!(explained.code, 0, "{}", explained.stderr);
    for want in [
        "CN=<the administrator's name>,OU=admin,O=Bank A",
        "vpbox hsm csr --module M --token T --pin-file PIN --id ID --subject 'CN=alice,OU=admin,O=Bank A'",
        "-subj '/CN=alice/OU=admin/O=Bank A'",
    ] {
        assert!(explained.text().contains(want), "{want} not in {}", explained.text());
    }
    // A request made as --explain says, with OpenSSL, is issued.
    let admin_key = token.dir.path("admin.key");
    assert_eq!(openssl(&["genpkey", "-algorithm", "SM2", "-out", s(&admin_key)]).code, 0);
    let admin_csr = token.dir.path("admin.csr");
    let line = explained.text().lines().find(|l| l.contains("openssl req")).unwrap().to_string();
    let subj = line.split('\'').nth(1).unwrap();
    let run = openssl(&[
        "req",
        "-new",
        "-key",
        s(&admin_key),
        "-sigopt",
        "distid:1234567812345678",
        "-subj",
        subj,
        "-out",
        s(&admin_csr),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let admin =
        token.vpbox(&["ca", "issue", "--dir", d, "--csr", s(&admin_csr), "--profile", "admin"]);
    assert_eq!(admin.code, 0, "{}", admin.stderr);

    let list: serde_json::Value =
        serde_json::from_slice(&token.vpbox(&["ca", "list", "--dir", d, "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "only what was issued is recorded");
    let serial = list[0]["serial"].as_str().unwrap().to_string();

    // A renewal: a new certificate for the same subject, profile and DNS name, from a new
    // request; the old one stays valid (so the box is not refused before it installs the new
    // one), shown as renewed.
    let renewed = token.dir.path("node1-renewed.pem");
    let r =
        token.vpbox(&["ca", "renew", "--dir", d, &serial, "--csr", s(&csr), "--out", s(&renewed)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("renewed {serial} as ")), "{}", r.stderr);
    assert!(r.stderr.contains("--reason superseded"), "{}", r.stderr);
    let text = openssl(&["x509", "-in", s(&renewed), "-noout", "-text"]).text();
    assert!(text.contains("DNS:node1.bank-a.example") && text.contains("OU = vp-node"), "{text}");
    let again = token.vpbox(&["ca", "renew", "--dir", d, &serial, "--csr", s(&csr)]);
    assert!(again.code == 2 && again.stderr.contains("renewed already"), "{}", again.stderr);
    let other = token.vpbox(&["ca", "renew", "--dir", d, &serial, "--csr", s(&admin_csr)]);
    assert_eq!(other.code, 2, "another profile's request");
    let table = token.vpbox(&["ca", "list", "--dir", d]).text();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "a header and three certificates: {table}");
    for col in ["SERIAL", "PROFILE", "NOT AFTER (UTC)", "STATUS", "SUBJECT"] {
        assert!(rows[0].contains(col), "{table}");
    }
    let year = |days: u64| {
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(days * 86_400);
        humantime::format_rfc3339_seconds(t).to_string()[..10].to_string()
    };
    assert!(rows[1].starts_with(&serial) && rows[1].contains("renewed by"), "{table}");
    assert!(rows[1].contains(&year(365)), "the expiry date: {table}");
    assert!(rows[3].contains(" valid ") && rows[3].contains("OU=vp-node"), "{table}");

    // Revocation: a reason of RFC 5280's list (the help lists them); the message says how the
    // ledger learns of it, with the commands that sign and publish the CRL.
    let bogus = token.vpbox(&["ca", "revoke", "--dir", d, &serial, "--reason", "again"]);
    assert!(bogus.code == 2 && bogus.stderr.contains("key-compromise"), "{}", bogus.stderr);
    let help = token.vpbox(&["ca", "revoke", "--help"]).text();
    assert!(help.contains("cessation-of-operation") && !help.contains('…'), "{help}");
    let revoked = token.vpbox(&["ca", "revoke", "--dir", d, &serial, "--reason", "key-compromise"]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    for want in
        [&format!("vpbox ca crl --dir {d} --out crl.pem")[..], "vpbox cert publish-crl crl.pem"]
    {
        assert!(revoked.text().contains(want), "{want} not in {}", revoked.text());
    }
    let again = token.vpbox(&["ca", "revoke", "--dir", d, &serial, "--reason", "superseded"]);
    assert!(again.code == 2 && again.stderr.contains("revoked already"), "{}", again.stderr);
    let table = token.vpbox(&["ca", "list", "--dir", d]).text();
    assert!(table.lines().nth(1).unwrap().contains("revoked (key-compromise)"), "{table}");
    let crl = token.dir.path("bank-a.crl");
    // A CRL out of date at once (or within hours) would refuse every certificate of the bank:
    // not signed, and the CRL number not spent.
    let quick = token.vpbox(&["ca", "crl", "--dir", d, "--hours", "0", "--out", s(&crl)]);
    assert_eq!(quick.code, 2, "{}", quick.stderr);
    assert!(quick.stderr.contains("sign it for 6 h at least"), "{}", quick.stderr);
    assert!(!crl.exists());
    // A renewal (as a timer runs it): due, since none was signed; then not due, and nothing
    // written; due again when the margin reaches the last nextUpdate.
    let renew = |extra: &[&str]| {
        let mut args = vec!["ca", "crl", "--dir", d, "--out", s(&crl), "--renew-before"];
        args.extend(extra);
        token.vpbox(&args)
    };
    let first = renew(&["6h"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("renewing: no CRL signed yet"), "{}", first.stderr);
    let signed = std::fs::read(&crl).unwrap();
    let quiet = renew(&["6h"]);
    assert!(quiet.code == 0 && quiet.stderr.contains("not renewed"), "{}", quiet.stderr);
    assert_eq!(std::fs::read(&crl).unwrap(), signed);
    let refused = renew(&["24h"]);
    assert!(
        refused.code == 2 && refused.stderr.contains("shorter than --hours"),
        "{}",
        refused.stderr
    );
    let due = renew(&["25h", "--hours", "30"]);
    assert!(due.code == 0 && due.stderr.contains("runs out within the margin"), "{}", due.stderr);
    assert_ne!(std::fs::read(&crl).unwrap(), signed);
    let crl_text = openssl(&["crl", "-in", s(&crl), "-noout", "-text"]).text();
    assert!(crl_text.to_lowercase().contains(&serial[..8]), "{crl_text}");

    // Every operation is in the audit log; no key and no PIN is anywhere in the CA directory.
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    for op in ["\"init\"", "\"issue\"", "\"refused\"", "\"revoke\"", "\"crl\""] {
        assert!(audit.contains(op), "{op} missing from {audit}");
    }
    // Each line says when, in RFC 3339 UTC, the same instant as its Unix `at`.
    for line in audit.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let time = v["time"].as_str().unwrap_or_else(|| panic!("no time in {line}"));
        let at = humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time:?}: {e}"));
        let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(Some(secs), v["at"].as_u64(), "{line}");
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
    // A field ca.toml does not have is refused, naming it, not silently ignored.
    let toml = dir.path().join("ca/ca.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("token_dir = \"/tmp/x\"\n{text}")).unwrap();
    let list = crate::vpbox(&["ca", "list", "--dir", d]);
    assert_eq!(list.code, 2);
    assert!(
        list.stderr.contains("unknown field `token_dir`")
            && list.stderr.contains("VPBOX_TEST_TOKEN_CONF"),
        "{}",
        list.stderr
    );
}

/// A bank that already has a root (made and kept with OpenSSL, outside vpbox) runs its vpbox CA
/// as an issuing CA under it: the key in the HSM, the request from `ca init --issuing-csr`, the
/// root's signature by `openssl x509 -req`, then `ca install`. What it issues and its CRLs carry
/// the CA, and the admission policy accepts them under the bank's root alone.
#[test]
#[allow(clippy::disallowed_methods)] // the test plays the host, which reads the clock
fn an_issuing_ca_under_a_banks_existing_root() {
    use vpbox_ca::CertProfile;
    use vpbox_ca::pem::{chain_der, crl_der};
    use vpbox_ca::policy::{Decision, DenyReason, TrustStore};
    const DISTID: &str = "distid:1234567812345678";

    let token = TestToken::new("bank-b", "");
    let pin = token.pin_file("pin", "123456");
    let t = ["--module", token.module.as_str(), "--token", "bank-b", "--pin-file", pin.as_str()];
    keygen(&token, &t, &[("ca", "ca01"), ("other", "ca02")]);
    // The bank's existing root.
    let root_key = token.dir.path("root.key");
    let root = token.dir.path("root.pem");
    let run = openssl(&["genpkey", "-algorithm", "SM2", "-out", s(&root_key)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&root_key),
        "-sigopt",
        DISTID,
        "-subj",
        "/C=CN/O=Bank B/OU=Corporate PKI/CN=Bank B Root",
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        s(&root),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let dir = token.dir.path("ca");
    let d = s(&dir);
    let csr = token.dir.path("ca.csr");
    let init = |dir: &str, id: &str, csr: &str| {
        token.vpbox(&[
            "ca",
            "init",
            "--dir",
            dir,
            "--bank",
            "Bank B",
            "--module",
            &token.module,
            "--token",
            "bank-b",
            "--key-id",
            id,
            "--pin-file",
            &pin,
            "--issuing-csr",
            csr,
        ])
    };
    let made = init(d, "ca01", s(&csr));
    assert_eq!(made.code, 0, "{}", made.stderr);
    let run = openssl(&["req", "-in", s(&csr), "-noout", "-verify", "-vfyopt", DISTID, "-subject"]);
    assert!(run.code == 0 && run.text().contains("OU = ca"), "{} {}", run.text(), run.stderr);
    let pending = token.vpbox(&["ca", "crl", "--dir", d]);
    assert_eq!(pending.code, 2);
    assert!(pending.stderr.contains("no certificate yet"), "{}", pending.stderr);

    // The root signs it as a CA with its own tools.
    let ext = token.dir.write(
        "v3_ca.ext",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
    );
    let sign = |csr: &std::path::Path, out: &std::path::Path, ext: Option<&std::path::Path>| {
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            s(csr),
            "-CA",
            s(&root),
            "-CAkey",
            s(&root_key),
            "-sigopt",
            DISTID,
            "-vfyopt",
            DISTID,
            "-days",
            "1825",
            "-out",
            s(out),
        ];
        if let Some(ext) = ext {
            args.extend(["-extfile", s(ext)]);
        }
        let run = openssl(&args);
        assert_eq!(run.code, 0, "{}", run.stderr);
    };
    let ca_cert = token.dir.path("issuing.pem");
    sign(&csr, &ca_cert, Some(&ext));

    // Install refuses a certificate that is not a CA, or not for this CA's key.
    let (dir2, csr2) = (token.dir.path("ca2"), token.dir.path("ca2.csr"));
    assert_eq!(init(s(&dir2), "ca02", s(&csr2)).code, 0);
    let not_ca = token.dir.path("not-ca.pem");
    sign(&csr2, &not_ca, None);
    let refused = token.vpbox(&[
        "ca",
        "install",
        "--dir",
        s(&dir2),
        "--cert",
        s(&not_ca),
        "--root",
        s(&root),
    ]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("not a CA"), "{}", refused.stderr);
    let refused =
        token.vpbox(&["ca", "install", "--dir", d, "--cert", s(&not_ca), "--root", s(&root)]);
    assert!(refused.stderr.contains("another key"), "{}", refused.stderr);
    let ok = token.vpbox(&["ca", "install", "--dir", d, "--cert", s(&ca_cert), "--root", s(&root)]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let again =
        token.vpbox(&["ca", "install", "--dir", d, "--cert", s(&ca_cert), "--root", s(&root)]);
    assert_eq!(again.code, 2, "installed once");

    // It issues a POSP certificate; the file is the full chain.
    let posp_key = token.dir.path("posp.key");
    openssl(&["genpkey", "-algorithm", "SM2", "-out", s(&posp_key)]);
    let posp_csr = token.dir.path("posp.csr");
    let run = openssl(&[
        "req",
        "-new",
        "-key",
        s(&posp_key),
        "-sigopt",
        DISTID,
        "-subj",
        "/C=CN/O=Bank B/OU=posp/CN=posp-b1",
        "-out",
        s(&posp_csr),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let posp = token.dir.path("posp.pem");
    let run = token.vpbox(&[
        "ca",
        "issue",
        "--dir",
        d,
        "--csr",
        s(&posp_csr),
        "--profile",
        "posp",
        "--out",
        s(&posp),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let refused = token.vpbox(&["ca", "issue", "--dir", d, "--csr", s(&csr), "--profile", "ca"]);
    assert!(refused.stderr.contains("end-entity certificates only"), "{}", refused.stderr);
    let posp_text = std::fs::read_to_string(&posp).unwrap();
    assert_eq!(posp_text.matches("BEGIN CERTIFICATE").count(), 2, "{posp_text}");
    // OpenSSL 3.0 checks SM2 signatures above depth 0 with the empty ID: one link at a time.
    let run = openssl(&["verify", "-vfyopt", DISTID, "-CAfile", s(&root), s(&ca_cert)]);
    assert!(run.code == 0 && run.text().contains(": OK"), "{}", run.stderr);
    let run =
        openssl(&["verify", "-vfyopt", DISTID, "-partial_chain", "-CAfile", s(&ca_cert), s(&posp)]);
    assert!(run.code == 0 && run.text().contains(": OK"), "{}", run.stderr);

    let mut store = TrustStore::new();
    store.add_root(&chain_der(&std::fs::read_to_string(&root).unwrap()).unwrap()).unwrap();
    let chain = chain_der(&posp_text).unwrap();
    let now = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    assert!(
        matches!(store.admit(&chain, CertProfile::Posp, now), Decision::Allow(id) if id.name == "posp-b1")
    );

    // Revoked, then published: the CRL file carries the issuing CA, and the store takes it.
    let list: serde_json::Value =
        serde_json::from_slice(&token.vpbox(&["ca", "list", "--dir", d, "--json"]).stdout).unwrap();
    let serial = list[0]["serial"].as_str().unwrap().to_string();
    assert_eq!(
        token.vpbox(&["ca", "revoke", "--dir", d, &serial, "--reason", "key-compromise"]).code,
        0
    );
    let crl = token.dir.path("bank-b.crl");
    assert_eq!(token.vpbox(&["ca", "crl", "--dir", d, "--out", s(&crl)]).code, 0);
    let crl_text = std::fs::read_to_string(&crl).unwrap();
    assert!(crl_text.starts_with("-----BEGIN X509 CRL") && crl_text.contains("BEGIN CERTIFICATE"));
    let run = openssl(&["crl", "-in", s(&crl), "-noout", "-text"]);
    assert!(run.code == 0 && run.text().to_lowercase().contains(&serial[..8]), "{}", run.stderr);
    store.add_crl(&crl_der(&crl_text).unwrap()).unwrap();
    assert_eq!(store.admit(&chain, CertProfile::Posp, now), Decision::Deny(DenyReason::Revoked));
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    for op in ["\"init\"", "\"install\"", "\"issue\"", "\"revoke\"", "\"crl\""] {
        assert!(audit.contains(op), "{op} missing from {audit}");
    }
}
