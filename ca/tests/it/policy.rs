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
