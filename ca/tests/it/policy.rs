//! The admission policy: each kind of bad certificate is denied with its own reason.

use std::time::{Duration, SystemTime};

use vpbox_ca::build_csr;
use vpbox_ca::cert::{self, CertProfile, Grant, Revocation};
use vpbox_ca::policy::{Decision, DenyReason, TrustStore};
use vpbox_sm::SoftwareSigner;
use vpbox_sm::sm2::SecretKey;
use x509_cert::crl::CertificateList;
use x509_cert::der::{DecodePem, Encode};

fn crl_der(pem: &str) -> Vec<u8> {
    CertificateList::<x509_cert::certificate::Rfc5280>::from_pem(pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap()
}

use crate::serial;

struct Bank {
    key: SoftwareSigner,
    pem: String,
}

fn bank(name: &str, now: SystemTime) -> Bank {
    let key = SoftwareSigner::new(SecretKey::generate().unwrap());
    let pem = cert::self_signed_root(&key, name, "CN", serial(1), now, 3650).unwrap();
    Bank { key, pem }
}

fn der(pem: &str) -> Vec<u8> {
    x509_cert::certificate::Certificate::from_pem(pem.as_bytes()).unwrap().to_der().unwrap()
}

fn leaf(
    bank: &Bank,
    bank_name: &str,
    profile: CertProfile,
    subject_ou: &str,
    n: u8,
    now: SystemTime,
    days: u32,
) -> Vec<u8> {
    let key = SoftwareSigner::new(SecretKey::generate().unwrap());
    let csr = build_csr(&key, &format!("CN=member{n},OU={subject_ou},O={bank_name},C=CN")).unwrap();
    let req = x509_cert::request::CertReq::from_pem(csr.as_bytes()).unwrap();
    let grant = Grant { profile, serial: serial(n), now, days, dns_names: vec![] };
    der(&cert::issue(&bank.key, &bank.pem, &req, grant).unwrap())
}

fn deny(store: &TrustStore, der: &[u8], role: CertProfile, now: SystemTime) -> DenyReason {
    match store.admit(der, role, now) {
        Decision::Deny(r) => r,
        Decision::Allow(id) => panic!("admitted {id:?}"),
    }
}

#[test]
fn each_bad_certificate_is_denied_with_its_own_reason() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let day = Duration::from_secs(86_400);
    let a = bank("Bank A", now - 10 * day);
    let b = bank("Bank B", now - 10 * day);
    let mut store = TrustStore::new();
    store.add_root(&der(&a.pem)).unwrap();

    let good = leaf(&a, "Bank A", CertProfile::Posp, "posp", 2, now - day, 30);
    match store.admit(&good, CertProfile::Posp, now) {
        Decision::Allow(id) => {
            assert_eq!(
                (id.bank.as_str(), id.name.as_str(), id.role),
                ("Bank A", "member2", CertProfile::Posp)
            );
        }
        Decision::Deny(r) => panic!("denied: {r}"),
    }

    let expired = leaf(&a, "Bank A", CertProfile::Posp, "posp", 3, now - 5 * day, 1);
    assert_eq!(deny(&store, &expired, CertProfile::Posp, now), DenyReason::Expired);
    assert_eq!(deny(&store, &good, CertProfile::Posp, now - 2 * day), DenyReason::NotYetValid);
    assert!(matches!(
        deny(&store, &good, CertProfile::VpNode, now),
        DenyReason::WrongProfile { expected: "vp-node", .. }
    ));
    let other_bank = leaf(&b, "Bank B", CertProfile::Posp, "posp", 4, now - day, 30);
    assert!(matches!(
        deny(&store, &other_bank, CertProfile::Posp, now),
        DenyReason::UnknownRoot(_)
    ));

    // Tampered: one byte of the subject changed after signing.
    let mut tampered = good.clone();
    let at = tampered.windows(7).position(|w| w == b"member2").unwrap();
    tampered[at + 6] = b'9';
    assert_eq!(deny(&store, &tampered, CertProfile::Posp, now), DenyReason::BadSignature);
    // A forgery: Bank B's key signing under Bank A's name.
    let forged_root = Bank { key: b.key, pem: a.pem.clone() };
    let forged = leaf(&forged_root, "Bank A", CertProfile::Posp, "posp", 5, now - day, 30);
    assert_eq!(deny(&store, &forged, CertProfile::Posp, now), DenyReason::BadSignature);
    assert!(matches!(
        deny(&store, b"not a certificate", CertProfile::Posp, now),
        DenyReason::Malformed(_)
    ));
    assert_eq!(deny(&store, &der(&a.pem), CertProfile::Posp, now), DenyReason::NotEndEntity);

    // Revoked, through a CRL the root signed; a stale CRL denies everything of its root.
    let revoked = [Revocation {
        serial: cert::random_serial([2; 16]).unwrap().as_bytes().to_vec(),
        at: now - day,
    }];
    let crl = cert::crl(&a.key, &a.pem, 1, &revoked, now - day / 2, 24).unwrap();
    let first_crl = crl_der(&crl);
    store.add_crl(&first_crl).unwrap();
    assert_eq!(deny(&store, &good, CertProfile::Posp, now), DenyReason::Revoked);
    let other = leaf(&a, "Bank A", CertProfile::Posp, "posp", 6, now - day, 30);
    assert!(matches!(store.admit(&other, CertProfile::Posp, now), Decision::Allow(_)));
    assert_eq!(deny(&store, &other, CertProfile::Posp, now + 2 * day), DenyReason::StaleCrl);

    // An older CRL cannot roll a newer one back; a CRL from outside the consortium is refused.
    let newer = cert::crl(&a.key, &a.pem, 5, &[], now, 24).unwrap();
    store.add_crl(&crl_der(&newer)).unwrap();
    assert!(store.add_crl(&first_crl).is_err());
    let b2 = bank("Bank B", now);
    let foreign = cert::crl(&b2.key, &b2.pem, 1, &[], now, 24).unwrap();
    assert!(store.add_crl(&crl_der(&foreign)).is_err());
}

#[test]
fn subjects_must_name_their_roots_bank_and_roots_must_be_real_cas() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let a = bank("Bank A", now);
    let mut store = TrustStore::new();
    store.add_root(&der(&a.pem)).unwrap();
    let wrong_o = leaf(&a, "Bank Z", CertProfile::Posp, "posp", 7, now, 30);
    assert!(matches!(
        deny(&store, &wrong_o, CertProfile::Posp, now + Duration::from_secs(600)),
        DenyReason::WrongBank { .. }
    ));
    let not_root = leaf(&a, "Bank A", CertProfile::Posp, "posp", 8, now, 30);
    assert!(store.add_root(&not_root).is_err(), "a leaf is not a root");
}

/// An issuing CA of `root`'s bank `name`, serial `n`, valid from `from` for `days`.
fn issuing_ca(root: &Bank, name: &str, n: u8, from: SystemTime, days: u32) -> Bank {
    let key = SoftwareSigner::new(SecretKey::generate().unwrap());
    let csr = build_csr(&key, &format!("CN={name} Issuing CA {n},OU=ca,O={name},C=CN")).unwrap();
    let req = x509_cert::request::CertReq::from_pem(csr.as_bytes()).unwrap();
    let grant =
        Grant { profile: CertProfile::Ca, serial: serial(n), now: from, days, dns_names: vec![] };
    let pem = cert::issue(&root.key, &root.pem, &req, grant).unwrap();
    Bank { key, pem }
}

fn chain(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn revoking(serials: &[u8], now: SystemTime) -> Vec<Revocation> {
    serials.iter().map(|n| Revocation { serial: serial(*n).as_bytes().to_vec(), at: now }).collect()
}

#[test]
fn chains_through_an_issuing_ca_are_admitted_and_each_fault_has_its_reason() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let day = Duration::from_secs(86_400);
    let a = bank("Bank A", now - 10 * day);
    let mut store = TrustStore::new();
    store.add_root(&der(&a.pem)).unwrap();
    let ca = issuing_ca(&a, "Bank A", 30, now - 5 * day, 100);
    let ca_der = der(&ca.pem);

    let posp = leaf(&ca, "Bank A", CertProfile::Posp, "posp", 31, now - day, 30);
    match store.admit(&chain(&[&posp, &ca_der]), CertProfile::Posp, now) {
        Decision::Allow(id) => {
            assert_eq!((id.bank.as_str(), id.name.as_str()), ("Bank A", "member31"))
        }
        Decision::Deny(r) => panic!("denied: {r}"),
    }
    assert_eq!(store.admit_ca(&ca_der, now), Ok("Bank A".to_string()));
    // Without its CA the leaf leads nowhere; a CA of another, unknown root leads nowhere.
    assert!(matches!(deny(&store, &posp, CertProfile::Posp, now), DenyReason::UnknownRoot(_)));
    let z = bank("Bank A", now - 10 * day); // same name, other key: not a consortium root
    let z_ca = issuing_ca(&z, "Bank A", 32, now - day, 100);
    let z_leaf = leaf(&z_ca, "Bank A", CertProfile::Posp, "posp", 33, now - day, 30);
    assert_eq!(
        deny(&store, &chain(&[&z_leaf, &der(&z_ca.pem)]), CertProfile::Posp, now),
        DenyReason::BadSignature,
        "a CA under a forged root"
    );

    // The CA is outside its validity.
    let young = issuing_ca(&a, "Bank A", 34, now + day, 100);
    let under_young = leaf(&young, "Bank A", CertProfile::Posp, "posp", 35, now - day, 30);
    assert!(matches!(
        deny(&store, &chain(&[&under_young, &der(&young.pem)]), CertProfile::Posp, now),
        DenyReason::IssuerNotValid(_)
    ));
    // A leaf cannot issue: signed by a POSP's key, the "CA" is not a CA.
    let posp_key = SoftwareSigner::new(SecretKey::generate().unwrap());
    let fake_ca_cert = {
        let csr = build_csr(&posp_key, "CN=member36,OU=posp,O=Bank A,C=CN").unwrap();
        let req = x509_cert::request::CertReq::from_pem(csr.as_bytes()).unwrap();
        let g = Grant {
            profile: CertProfile::Posp,
            serial: serial(36),
            now: now - day,
            days: 30,
            dns_names: vec![],
        };
        cert::issue(&ca.key, &ca.pem, &req, g).unwrap()
    };
    let fake_ca = Bank { key: posp_key, pem: fake_ca_cert.clone() };
    let under_leaf = leaf(&fake_ca, "Bank A", CertProfile::Posp, "posp", 37, now - day, 30);
    let got =
        deny(&store, &chain(&[&under_leaf, &der(&fake_ca_cert), &ca_der]), CertProfile::Posp, now);
    assert!(matches!(got, DenyReason::IssuerNotCa(_)), "{got:?}");
    // An issuing CA (path length 0) under another issuing CA: the path is too long.
    let sub = issuing_ca(&ca, "Bank A", 38, now - day, 30);
    let under_sub = leaf(&sub, "Bank A", CertProfile::Posp, "posp", 39, now - day, 30);
    assert!(matches!(
        deny(&store, &chain(&[&under_sub, &der(&sub.pem), &ca_der]), CertProfile::Posp, now),
        DenyReason::PathTooLong(_)
    ));
    // `ca install` asks `admit_ca`, which checks the CA itself like the CAs above it.
    assert!(matches!(
        store.admit_ca(&chain(&[&der(&sub.pem), &ca_der]), now),
        Err(DenyReason::PathTooLong(_))
    ));
    assert!(matches!(store.admit_ca(&der(&young.pem), now), Err(DenyReason::IssuerNotValid(_))));
    assert!(matches!(
        store.admit_ca(&chain(&[&posp, &ca_der]), now),
        Err(DenyReason::IssuerNotCa(_))
    ));
    // A peer sending more certificates than any chain needs is refused before any is checked.
    let padded = [posp.clone(), ca_der.repeat(5)].concat();
    assert!(matches!(
        store.admit_chain(&posp, &[ca_der.as_slice(); 5], CertProfile::Posp, now),
        Decision::Deny(DenyReason::Malformed(_))
    ));
    assert!(matches!(deny(&store, &padded, CertProfile::Posp, now), DenyReason::Malformed(_)));
    // A CA of another bank under Bank A's root.
    let foreign_ca = issuing_ca(&a, "Bank Z", 40, now - day, 30);
    let under_foreign = leaf(&foreign_ca, "Bank A", CertProfile::Posp, "posp", 41, now - day, 30);
    assert!(matches!(
        deny(&store, &chain(&[&under_foreign, &der(&foreign_ca.pem)]), CertProfile::Posp, now),
        DenyReason::WrongBank { .. }
    ));

    // The CA's CRL (carrying the CA's certificate) revokes one of its leaves.
    let sibling = leaf(&ca, "Bank A", CertProfile::Posp, "posp", 42, now - day, 30);
    let ca_crl = crl_der(&cert::crl(&ca.key, &ca.pem, 1, &revoking(&[31], now), now, 24).unwrap());
    assert!(store.add_crl(&ca_crl).is_err(), "an issuing CA's CRL needs the CA's certificate");
    store.add_crl(&chain(&[&ca_crl, &ca_der])).unwrap();
    assert_eq!(
        deny(&store, &chain(&[&posp, &ca_der]), CertProfile::Posp, now),
        DenyReason::Revoked
    );
    let sibling_chain = chain(&[&sibling, &ca_der]);
    assert!(matches!(store.admit(&sibling_chain, CertProfile::Posp, now), Decision::Allow(_)));
    assert_eq!(
        deny(&store, &sibling_chain, CertProfile::Posp, now + 2 * day),
        DenyReason::StaleCrl,
        "the CA's CRL is out of date"
    );
    // A leaf cannot publish a CRL, even one its own key signed and its chain supports.
    let leaf_crl = {
        let own = SoftwareSigner::new(SecretKey::generate().unwrap());
        let csr = build_csr(&own, "CN=member43,OU=posp,O=Bank A,C=CN").unwrap();
        let req = x509_cert::request::CertReq::from_pem(csr.as_bytes()).unwrap();
        let g = Grant {
            profile: CertProfile::Posp,
            serial: serial(43),
            now: now - day,
            days: 30,
            dns_names: vec![],
        };
        let own_pem = cert::issue(&ca.key, &ca.pem, &req, g).unwrap();
        let crl = crl_der(&cert::crl(&own, &own_pem, 1, &revoking(&[42], now), now, 24).unwrap());
        chain(&[&crl, &der(&own_pem), &ca_der])
    };
    assert!(store.add_crl(&leaf_crl).is_err(), "a POSP's CRL");
    assert!(matches!(store.admit(&sibling_chain, CertProfile::Posp, now), Decision::Allow(_)));
    // A CRL under a forged root's CA is refused; so is an older CRL of the CA.
    let z_crl = crl_der(&cert::crl(&z_ca.key, &z_ca.pem, 9, &[], now, 24).unwrap());
    assert!(store.add_crl(&chain(&[&z_crl, &der(&z_ca.pem)])).is_err());
    let older = crl_der(&cert::crl(&ca.key, &ca.pem, 0, &[], now, 24).unwrap());
    assert!(store.add_crl(&chain(&[&older, &ca_der])).is_err());

    // The root's CRL revokes the CA: every leaf under it is denied.
    let root_crl = crl_der(&cert::crl(&a.key, &a.pem, 1, &revoking(&[30], now), now, 24).unwrap());
    store.add_crl(&root_crl).unwrap();
    assert!(matches!(
        deny(&store, &sibling_chain, CertProfile::Posp, now),
        DenyReason::IssuerRevoked(_)
    ));
    assert!(matches!(store.admit_ca(&ca_der, now), Err(DenyReason::IssuerRevoked(_))));
    assert!(matches!(
        deny(&store, b"\x30\x03\x02\x01\x01garbage", CertProfile::Posp, now),
        DenyReason::Malformed(_)
    ));
}
