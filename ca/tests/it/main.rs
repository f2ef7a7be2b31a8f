//! The CA core against the `openssl` command: OpenSSL accepts what vpbox makes, and vpbox
//! accepts what OpenSSL makes (with the standard SM2 ID, `distid:1234567812345678`).

// The tests play the host, which is where the clock is read; the CA core takes time as input.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

mod craft;
mod policy;
mod rules;

use vpbox_ca::cert::{self, CertProfile, Grant, Revocation};
use vpbox_ca::{CertError, build_csr};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{SoftwareSigner, Verification};
use x509_cert::certificate::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::der::DecodePem;

const DISTID: &str = "distid:1234567812345678";

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().expect("openssl must be installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn key() -> SoftwareSigner {
    SoftwareSigner::new(SecretKey::generate().unwrap())
}

pub(crate) fn serial(n: u8) -> x509_cert::serial_number::SerialNumber {
    cert::random_serial([n; 16]).unwrap()
}

struct Ca {
    key: SoftwareSigner,
    pem: String,
}

fn bank_a() -> Ca {
    let key = key();
    let pem =
        cert::self_signed_root(&key, "Bank A", "CN", serial(1), SystemTime::now(), 3650).unwrap();
    Ca { key, pem }
}

#[test]
fn openssl_accepts_our_root_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let ca = bank_a();
    let root = write(dir.path(), "root.pem", &ca.pem);
    let (ok, text) = openssl(&["x509", "-in", s(&root), "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("CA:TRUE") && text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("SM2") || text.contains("sm2"), "{text}");

    for profile in [CertProfile::VpNode, CertProfile::Posp, CertProfile::Admin] {
        let node = key();
        let csr =
            build_csr(&node, &format!("CN=node1,OU={},O=Bank A,C=CN", profile.name())).unwrap();
        let req = cert::check_request(&csr, profile, "Bank A").unwrap();
        let dns = if profile == CertProfile::VpNode {
            vec!["node1.bank-a.example".to_string()]
        } else {
            vec![]
        };
        let grant =
            Grant { profile, serial: serial(2), now: SystemTime::now(), days: 365, dns_names: dns };
        let leaf = cert::issue(&ca.key, &ca.pem, &req, grant).unwrap();
        let leaf_path = write(dir.path(), "leaf.pem", &leaf);
        let (ok, text) =
            openssl(&["verify", "-vfyopt", DISTID, "-CAfile", s(&root), s(&leaf_path)]);
        assert!(ok && text.contains(": OK"), "{profile:?}: {text}");
        let (_, text) = openssl(&["x509", "-in", s(&leaf_path), "-noout", "-text"]);
        let eku = if profile == CertProfile::VpNode {
            "TLS Web Server Authentication, TLS Web Client Authentication"
        } else {
            "TLS Web Client Authentication"
        };
        assert!(text.contains(eku), "{profile:?}: {text}");
        assert!(text.contains("CA:FALSE"), "{text}");
        // Our own verifier agrees.
        let (leaf_cert, root_cert) =
            (Certificate::from_pem(&leaf).unwrap(), Certificate::from_pem(&ca.pem).unwrap());
        assert_eq!(cert::verify_certificate(&leaf_cert, &root_cert), Verification::Valid);
        let other = bank_a();
        assert_eq!(
            cert::verify_certificate(&leaf_cert, &Certificate::from_pem(&other.pem).unwrap()),
            Verification::Invalid
        );
    }
}

#[test]
fn requests_that_do_not_fit_are_refused() {
    let node = key();
    let csr = build_csr(&node, "CN=node1,OU=posp,O=Bank A,C=CN").unwrap();
    assert!(matches!(
        cert::check_request(&csr, CertProfile::VpNode, "Bank A"),
        Err(CertError::Subject { .. })
    ));
    assert!(matches!(
        cert::check_request(&csr, CertProfile::Posp, "Bank B"),
        Err(CertError::Subject { .. })
    ));
    let no_cn = build_csr(&node, "OU=posp,O=Bank A,C=CN").unwrap();
    assert!(matches!(
        cert::check_request(&no_cn, CertProfile::Posp, "Bank A"),
        Err(CertError::Subject { .. })
    ));

    // A request whose content was changed after signing.
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.pem", &csr);
    let der = dir.path().join("req.der");
    openssl(&["req", "-in", s(&good), "-outform", "DER", "-out", s(&der)]);
    let mut bytes = std::fs::read(&der).unwrap();
    let at = bytes.windows(5).position(|w| w == b"node1").unwrap();
    bytes[at + 4] = b'2';
    std::fs::write(&der, &bytes).unwrap();
    let (_, tampered) = openssl(&["req", "-inform", "DER", "-in", s(&der)]);
    let tampered = &tampered[tampered.find("-----BEGIN").unwrap()..];
    assert!(matches!(
        cert::check_request(tampered, CertProfile::Posp, "Bank A"),
        Err(CertError::BadRequestSignature)
    ));

    // A P-256 request made by OpenSSL.
    let p256 = dir.path().join("p256.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        s(&p256),
    ]);
    let (ok, req) =
        openssl(&["req", "-new", "-key", s(&p256), "-subj", "/C=CN/O=Bank A/OU=posp/CN=p1"]);
    assert!(ok, "{req}");
    assert!(matches!(
        cert::check_request(&req, CertProfile::Posp, "Bank A"),
        Err(CertError::NotSm2(_))
    ));
}

/// Issues a certificate for a fresh software key with subject `CN=cn,OU=<profile>,O=bank,C=CN`
/// from the CA `(ca_key, ca_pem)`: (the key, the certificate PEM).
fn issue_fresh(
    ca_key: &SoftwareSigner,
    ca_pem: &str,
    profile: CertProfile,
    cn: &str,
    bank: &str,
    n: u8,
) -> (SoftwareSigner, String) {
    let key = key();
    let csr = build_csr(&key, &format!("CN={cn},OU={},O={bank},C=CN", profile.name())).unwrap();
    let req = cert::check_request(&csr, profile, bank).unwrap();
    let grant =
        Grant { profile, serial: serial(n), now: SystemTime::now(), days: 365, dns_names: vec![] };
    let pem = cert::issue(ca_key, ca_pem, &req, grant).unwrap();
    (key, pem)
}

/// OpenSSL verifies a three-level chain one link at a time: 3.0 applies `-vfyopt distid` at
/// depth 0 only and checks the certificates above with the empty ID, so it cannot verify the
/// whole SM2 chain in one call (its own `x509 -req -sigopt distid` output included).
fn openssl_verifies_each_link(root: &Path, ca: &Path, leaf: &Path) {
    let (ok, text) = openssl(&["verify", "-vfyopt", DISTID, "-CAfile", s(root), s(ca)]);
    assert!(ok && text.contains(": OK"), "the root signed the issuing CA: {text}");
    let (ok, text) =
        openssl(&["verify", "-vfyopt", DISTID, "-partial_chain", "-CAfile", s(ca), s(leaf)]);
    assert!(ok && text.contains(": OK"), "the issuing CA signed the leaf: {text}");
}

/// A bank root made by OpenSSL in `dir`: (its key file, its certificate file).
fn openssl_root(dir: &Path, subject: &str) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("root.key"), dir.join("root.pem"));
    let (ok, text) = openssl(&["genpkey", "-algorithm", "SM2", "-out", s(&key)]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        s(&key),
        "-sigopt",
        DISTID,
        "-subj",
        subject,
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        s(&cert),
    ]);
    assert!(ok, "{text}");
    (key, cert)
}

#[test]
fn we_accept_chains_and_requests_that_openssl_made() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_key, ca_pem) = openssl_root(dir.path(), "/C=CN/O=Bank B/OU=root/CN=Bank B Root CA");
    let leaf_key = dir.path().join("leaf.key");
    openssl(&["genpkey", "-algorithm", "SM2", "-out", s(&leaf_key)]);
    let req = dir.path().join("leaf.csr");
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-key",
        s(&leaf_key),
        "-sigopt",
        DISTID,
        "-subj",
        "/C=CN/O=Bank B/OU=posp/CN=posp7",
        "-out",
        s(&req),
    ]);
    assert!(ok, "{text}");
    // OpenSSL's request passes our checks...
    let req_pem = std::fs::read_to_string(&req).unwrap();
    cert::check_request(&req_pem, CertProfile::Posp, "Bank B").unwrap();
    // ...and OpenSSL's certificate chain verifies with our verifier.
    let leaf = dir.path().join("leaf.pem");
    let (ok, text) = openssl(&[
        "x509",
        "-req",
        "-in",
        s(&req),
        "-CA",
        s(&ca_pem),
        "-CAkey",
        s(&ca_key),
        "-sigopt",
        DISTID,
        "-vfyopt",
        DISTID,
        "-days",
        "30",
        "-out",
        s(&leaf),
        "-set_serial",
        "7",
    ]);
    assert!(ok, "{text}");
    let leaf = Certificate::from_pem(std::fs::read(&leaf).unwrap()).unwrap();
    let ca = Certificate::from_pem(std::fs::read(&ca_pem).unwrap()).unwrap();
    assert_eq!(cert::verify_certificate(&leaf, &ca), Verification::Valid);
    assert_eq!(cert::verify_certificate(&ca, &ca), Verification::Valid);
}

#[test]
fn crls_parse_in_openssl_and_verify_in_vpbox() {
    let dir = tempfile::tempdir().unwrap();
    let ca = bank_a();
    let now = SystemTime::now();
    let revoked = [Revocation { serial: vec![0x12, 0x34], at: now - Duration::from_secs(60) }];
    let pem = cert::crl(&ca.key, &ca.pem, 1, &revoked, now, 24).unwrap();
    let path = write(dir.path(), "crl.pem", &pem);
    let (ok, text) = openssl(&["crl", "-in", s(&path), "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains("1234") && text.contains("Next Update"), "{text}");
    let crl = CertificateList::from_pem(pem.as_bytes()).unwrap();
    let root = Certificate::from_pem(&ca.pem).unwrap();
    assert_eq!(cert::verify_crl(&crl, &root), Verification::Valid);
    assert_eq!(
        cert::verify_crl(&crl, &Certificate::from_pem(&bank_a().pem).unwrap()),
        Verification::Invalid
    );
}

/// A CRL denies its whole CA once past nextUpdate (policy `StaleCrl`), so the CA signs none
/// that would be out of date before a renewal (`CRL_HOURS_MIN`), and a CRL is checked before
/// it is published: past, or within the margin, refused with the date; in date, taken.
#[test]
fn no_crl_is_signed_or_published_that_would_soon_lock_its_ca_out() {
    let ca = bank_a();
    let now = SystemTime::now();
    for hours in [0, 1, cert::CRL_HOURS_MIN - 1] {
        let e = cert::crl(&ca.key, &ca.pem, 1, &[], now, hours).unwrap_err();
        assert!(matches!(e, cert::CertError::CrlTooShort { .. }), "{hours}: {e}");
        assert!(e.to_string().contains("6 h at least"), "{e}");
    }
    let pem = cert::crl(&ca.key, &ca.pem, 1, &[], now, cert::CRL_HOURS_MIN).unwrap();
    let der = vpbox_ca::pem::crl_der(&pem).unwrap();
    let hour = Duration::from_secs(3600);
    cert::crl_fresh_for(&der, now, hour).unwrap();
    // Five and a half hours on, it has half an hour left: not enough to publish it.
    let late = now + 11 * hour / 2;
    let e = cert::crl_fresh_for(&der, late, hour).unwrap_err();
    assert!(matches!(e, cert::CertError::CrlStale(_)) && e.to_string().contains("60 min"), "{e}");
    let e = cert::crl_fresh_for(&der, now + 7 * hour, hour).unwrap_err();
    assert!(e.to_string().contains("is past") && e.to_string().contains("at once"), "{e}");
}

fn der_of(pem: &str) -> Vec<u8> {
    use x509_cert::der::Encode;
    Certificate::from_pem(pem.as_bytes()).unwrap().to_der().unwrap()
}

/// A bank that already has a root made with OpenSSL asks for an issuing CA with a vpbox key;
/// its root signs with `openssl ca`; vpbox issues from that CA, and both sides accept
/// the chain. The other way round: a vpbox root's issuing CA, verified by OpenSSL.
#[test]
fn issuing_cas_under_an_openssl_root_and_under_ours() {
    use vpbox_ca::policy::{Decision, TrustStore};
    let dir = tempfile::tempdir().unwrap();
    let (root_key, root) =
        openssl_root(dir.path(), "/C=CN/O=Bank B/OU=IT/CN=Bank B Enterprise Root");

    // The issuing CA's request, made with its (here software) key.
    let ca_key = key();
    let csr = build_csr(&ca_key, "CN=Bank B Issuing CA,OU=ca,O=Bank B,C=CN").unwrap();
    cert::check_request(&csr, CertProfile::Ca, "Bank B").unwrap();
    let csr_path = write(dir.path(), "ca.csr", &csr);
    // `openssl ca`, as a bank's PKI team runs it: a database, a serial file and a policy.
    write(dir.path(), "index.txt", "");
    write(dir.path(), "serial", "1000\n");
    let config = write(
        dir.path(),
        "ca.cnf",
        &format!(
            "[ca]\ndefault_ca = bank\n[bank]\ndatabase = {d}/index.txt\nserial = {d}/serial\n\
             new_certs_dir = {d}\ncertificate = {root}\nprivate_key = {key}\ndefault_md = sm3\n\
             default_days = 1825\npolicy = bank_policy\nx509_extensions = issuing\n\
             [bank_policy]\ncountryName = optional\norganizationName = supplied\n\
             organizationalUnitName = optional\ncommonName = supplied\n\
             [issuing]\nbasicConstraints = critical,CA:TRUE,pathlen:0\n\
             keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n",
            d = s(dir.path()),
            root = s(&root),
            key = s(&root_key),
        ),
    );
    let ca_path = dir.path().join("ca.pem");
    let (ok, text) = openssl(&[
        "ca",
        "-batch",
        "-config",
        s(&config),
        "-in",
        s(&csr_path),
        "-out",
        s(&ca_path),
        "-sigopt",
        DISTID,
        "-vfyopt",
        DISTID,
    ]);
    assert!(ok, "{text}");
    let ca_pem = std::fs::read_to_string(&ca_path).unwrap();

    let (_, posp) = issue_fresh(&ca_key, &ca_pem, CertProfile::Posp, "posp9", "Bank B", 9);
    let posp_path = write(dir.path(), "posp.pem", &posp);
    openssl_verifies_each_link(&root, &ca_path, &posp_path);
    let (ok, text) = openssl(&["verify", "-vfyopt", DISTID, "-CAfile", s(&root), s(&posp_path)]);
    assert!(!ok, "without the issuing CA there is no path: {text}");

    let mut store = TrustStore::new();
    store.add_root(&der_of(&std::fs::read_to_string(&root).unwrap())).unwrap();
    let chain = [der_of(&posp), der_of(&ca_pem)].concat();
    match store.admit(&chain, CertProfile::Posp, SystemTime::now()) {
        Decision::Allow(id) => {
            assert_eq!((id.bank.as_str(), id.name.as_str()), ("Bank B", "posp9"))
        }
        Decision::Deny(r) => panic!("{r}"),
    }
    assert_eq!(store.admit_ca(&der_of(&ca_pem), SystemTime::now()).unwrap(), "Bank B");

    // Our own root's issuing CA: OpenSSL reads its constraints and verifies the chain.
    let ours = bank_a();
    let (sub_key, sub) =
        issue_fresh(&ours.key, &ours.pem, CertProfile::Ca, "Bank A Issuing CA", "Bank A", 5);
    let sub_path = write(dir.path(), "sub.pem", &sub);
    let (_, text) = openssl(&["x509", "-in", s(&sub_path), "-noout", "-text"]);
    assert!(
        text.contains("CA:TRUE, pathlen:0") && text.contains("Certificate Sign, CRL Sign"),
        "{text}"
    );
    let (_, admin) = issue_fresh(&sub_key, &sub, CertProfile::Admin, "admin1", "Bank A", 6);
    let leaf = write(dir.path(), "admin.pem", &admin);
    let our_root = write(dir.path(), "ours.pem", &ours.pem);
    openssl_verifies_each_link(&our_root, &sub_path, &leaf);
}
