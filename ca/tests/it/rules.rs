//! The admission policy against the rules it implements, one rule per test, each citing its
//! source (RFC 5280, the consortium's profile in `ca/src/cert.rs`). The certificates are
//! crafted field by field (`craft`), so that each test changes exactly the field its rule is
//! about and the answer can only come from that rule.

use std::time::{Duration, SystemTime};

use vpbox_ca::cert::{self, CertProfile, Revocation};
use vpbox_ca::policy::{Decision, DenyReason, TrustStore};
use vpbox_sm::{Signer, SoftwareSigner};
use x509_cert::crl::CertificateList;
use x509_cert::der::{DecodePem, Encode};
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};

use crate::craft::{CLIENT_AUTH, Made, SERVER_AUTH, Spec, make, make_with};
use crate::serial;

const SECOND: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000)
}

fn root(bank: &str, path_len: Option<u8>, from: SystemTime, to: SystemTime) -> Made {
    make(Spec::ca(&format!("{bank} Root CA"), bank, path_len, from, to, 1), None)
}

fn under(spec: Spec, issuer: &Made) -> Made {
    make(spec, Some((&issuer.key, &issuer.pem)))
}

fn store_of(roots: &[&Made]) -> TrustStore {
    let mut s = TrustStore::new();
    for r in roots {
        s.add_root(&r.der).unwrap();
    }
    s
}

fn decide(store: &TrustStore, parts: &[&Made], role: CertProfile, at: SystemTime) -> Decision {
    let chain: Vec<u8> = parts.iter().flat_map(|m| m.der.clone()).collect();
    store.admit(&chain, role, at)
}

#[track_caller]
fn allowed(store: &TrustStore, parts: &[&Made], role: CertProfile, at: SystemTime) {
    match decide(store, parts, role, at) {
        Decision::Allow(_) => {}
        Decision::Deny(r) => panic!("denied: {r:?}"),
    }
}

#[track_caller]
fn denied(store: &TrustStore, parts: &[&Made], role: CertProfile, at: SystemTime) -> DenyReason {
    match decide(store, parts, role, at) {
        Decision::Deny(r) => r,
        Decision::Allow(id) => panic!("admitted {id:?}"),
    }
}

fn crl_der(pem: &str) -> Vec<u8> {
    CertificateList::<x509_cert::certificate::Rfc5280>::from_pem(pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap()
}

/// RFC 5280 §4.1.2.5: "The validity period for a certificate is the period of time from
/// notBefore through notAfter, inclusive" — for the end entity, each issuing CA and the root.
#[test]
fn validity_is_inclusive_at_both_ends_for_every_certificate_of_the_path() {
    let t = t0();
    let posp = CertProfile::Posp;
    // The end entity decides: its CA and root are valid long before and after.
    let r = root("Bank A", Some(1), t - 100 * DAY, t + 900 * DAY);
    let s = store_of(&[&r]);
    let leaf = under(Spec::posp("p1", "Bank A", t, t + 30 * DAY, 2), &r);
    allowed(&s, &[&leaf], posp, t);
    allowed(&s, &[&leaf], posp, t + 30 * DAY);
    assert_eq!(denied(&s, &[&leaf], posp, t - SECOND), DenyReason::NotYetValid);
    assert_eq!(denied(&s, &[&leaf], posp, t + 30 * DAY + SECOND), DenyReason::Expired);

    // The issuing CA decides: the leaf under it is valid longer on both sides.
    let ca = under(Spec::ca("Bank A CA", "Bank A", Some(0), t, t + 10 * DAY, 3), &r);
    let wide = under(Spec::posp("p2", "Bank A", t - 50 * DAY, t + 50 * DAY, 4), &ca);
    allowed(&s, &[&wide, &ca], posp, t);
    allowed(&s, &[&wide, &ca], posp, t + 10 * DAY);
    for at in [t - SECOND, t + 10 * DAY + SECOND] {
        assert_eq!(
            denied(&s, &[&wide, &ca], posp, at),
            DenyReason::IssuerNotValid("Bank A CA".into())
        );
        assert_eq!(s.admit_ca(&ca.der, at), Err(DenyReason::IssuerNotValid("Bank A CA".into())));
    }
    assert_eq!(s.admit_ca(&ca.der, t + 10 * DAY), Ok("Bank A".into()));

    // The root decides.
    let short = root("Bank B", Some(1), t, t + 10 * DAY);
    let s = store_of(&[&short]);
    let long = under(Spec::posp("p3", "Bank B", t - 50 * DAY, t + 50 * DAY, 5), &short);
    allowed(&s, &[&long], posp, t);
    allowed(&s, &[&long], posp, t + 10 * DAY);
    assert_eq!(denied(&s, &[&long], posp, t - SECOND), DenyReason::RootNotValid);
    assert_eq!(denied(&s, &[&long], posp, t + 10 * DAY + SECOND), DenyReason::RootNotValid);
}

/// RFC 5280 §5.1.2.5: nextUpdate is "the date by which the next CRL will be issued"; the
/// consortium's rule (module docs): a CRL is in force through its nextUpdate, and past it every
/// certificate its CA issued is refused (`StaleCrl`) — for the end entity's issuer and for the
/// CRL of the issuer of an issuing CA alike.
#[test]
fn a_crl_is_in_force_through_its_next_update_and_stale_after_it() {
    let t = t0();
    let r = root("Bank A", Some(1), t - 100 * DAY, t + 900 * DAY);
    let mut s = store_of(&[&r]);
    let leaf = under(Spec::posp("p1", "Bank A", t - DAY, t + 30 * DAY, 2), &r);
    let ca = under(Spec::ca("Bank A CA", "Bank A", Some(0), t - DAY, t + 30 * DAY, 3), &r);
    let below_ca = under(Spec::posp("p2", "Bank A", t - DAY, t + 30 * DAY, 4), &ca);
    let crl = cert::crl(&r.key, &r.pem, 1, &[], t, 24).unwrap();
    s.add_crl(&crl_der(&crl)).unwrap();
    let next = t + DAY;
    allowed(&s, &[&leaf], CertProfile::Posp, next);
    allowed(&s, &[&below_ca, &ca], CertProfile::Posp, next);
    assert_eq!(denied(&s, &[&leaf], CertProfile::Posp, next + SECOND), DenyReason::StaleCrl);
    assert_eq!(
        denied(&s, &[&below_ca, &ca], CertProfile::Posp, next + SECOND),
        DenyReason::StaleCrl,
        "the root's CRL, which would revoke the CA, is out of date"
    );
    assert_eq!(s.admit_ca(&ca.der, next + SECOND), Err(DenyReason::StaleCrl));
}

/// RFC 5280 §4.2.1.9: pathLenConstraint "gives the maximum number of non-self-issued
/// intermediate certificates that may follow this certificate in a valid certification path";
/// and the consortium's own bound of two issuing CAs (`INTERMEDIATES_MAX`).
#[test]
fn path_lengths_bound_the_issuing_cas_below_each_ca() {
    let t = t0();
    let (from, to) = (t - DAY, t + 30 * DAY);
    let posp = CertProfile::Posp;

    // A root of path length 0 may issue leaves, not CAs.
    let r0 = root("Bank A", Some(0), t - DAY, t + 900 * DAY);
    let s = store_of(&[&r0]);
    let direct = under(Spec::posp("p1", "Bank A", from, to, 2), &r0);
    allowed(&s, &[&direct], posp, t);
    let ca = under(Spec::ca("A CA", "Bank A", None, from, to, 3), &r0);
    let leaf = under(Spec::posp("p2", "Bank A", from, to, 4), &ca);
    assert_eq!(
        denied(&s, &[&leaf, &ca], posp, t),
        DenyReason::PathTooLong("Bank A Root CA".into())
    );

    // A root without a path length: two issuing CAs below it, as each CA's own length allows.
    let rn = root("Bank B", None, t - DAY, t + 900 * DAY);
    let s = store_of(&[&rn]);
    let ca1 = under(Spec::ca("B CA1", "Bank B", Some(1), from, to, 5), &rn);
    let ca2 = under(Spec::ca("B CA2", "Bank B", Some(0), from, to, 6), &ca1);
    let leaf2 = under(Spec::posp("p3", "Bank B", from, to, 7), &ca2);
    allowed(&s, &[&leaf2, &ca2, &ca1], posp, t);
    assert_eq!(s.admit_ca(&[&ca2.der[..], &ca1.der[..]].concat(), t), Ok("Bank B".into()));
    // The upper CA's length 0 forbids the CA below it: the CA's rule decides, not the root's.
    let tight = under(Spec::ca("B CA1 tight", "Bank B", Some(0), from, to, 8), &rn);
    let ca2t = under(Spec::ca("B CA2", "Bank B", Some(0), from, to, 9), &tight);
    let leaf3 = under(Spec::posp("p4", "Bank B", from, to, 10), &ca2t);
    assert_eq!(
        denied(&s, &[&leaf3, &ca2t, &tight], posp, t),
        DenyReason::PathTooLong("B CA1 tight".into())
    );
    assert_eq!(
        s.admit_ca(&[&ca2t.der[..], &tight.der[..]].concat(), t),
        Err(DenyReason::PathTooLong("B CA1 tight".into()))
    );
    // A third issuing CA exceeds the consortium's bound (`INTERMEDIATES_MAX`), though no
    // length in the path says so.
    let n1 = under(Spec::ca("B N1", "Bank B", None, from, to, 11), &rn);
    let n2 = under(Spec::ca("B N2", "Bank B", None, from, to, 12), &n1);
    let n3 = under(Spec::ca("B N3", "Bank B", None, from, to, 17), &n2);
    let at2 = under(Spec::posp("p5", "Bank B", from, to, 18), &n2);
    let at3 = under(Spec::posp("p8", "Bank B", from, to, 19), &n3);
    allowed(&s, &[&at2, &n2, &n1], posp, t);
    assert!(matches!(denied(&s, &[&at3, &n3, &n2, &n1], posp, t), DenyReason::PathTooLong(_)));
    assert!(matches!(
        s.admit_ca(&[&n3.der[..], &n2.der[..], &n1.der[..]].concat(), t),
        Err(DenyReason::PathTooLong(_))
    ));

    // A root of path length 1 allows one issuing CA, not two.
    let r1 = root("Bank C", Some(1), t - DAY, t + 900 * DAY);
    let s = store_of(&[&r1]);
    let c1 = under(Spec::ca("C CA1", "Bank C", None, from, to, 13), &r1);
    let c2 = under(Spec::ca("C CA2", "Bank C", None, from, to, 14), &c1);
    let under1 = under(Spec::posp("p6", "Bank C", from, to, 15), &c1);
    let under2 = under(Spec::posp("p7", "Bank C", from, to, 16), &c2);
    allowed(&s, &[&under1, &c1], posp, t);
    assert_eq!(
        denied(&s, &[&under2, &c2, &c1], posp, t),
        DenyReason::PathTooLong("Bank C Root CA".into())
    );
}

/// RFC 5280 §4.2.1.9 and §6.1.4 (k), (n): an issuer must be a CA (basicConstraints cA) and,
/// when it states a key usage, have keyCertSign; §4.2.1.3 and §6.3.3 (f): a CRL's issuer, when it
/// states a key usage, must have cRLSign.
#[test]
fn issuers_need_the_ca_flag_and_the_key_usage_for_what_they_sign() {
    let t = t0();
    let (from, to) = (t - DAY, t + 30 * DAY);
    let r = root("Bank A", Some(1), t - DAY, t + 900 * DAY);
    let mut s = store_of(&[&r]);

    let mut no_cert_sign = Spec::ca("No certSign", "Bank A", Some(0), from, to, 2);
    no_cert_sign.usage = Some(KeyUsage(KeyUsages::CRLSign.into()));
    let ca = under(no_cert_sign, &r);
    let leaf = under(Spec::posp("p1", "Bank A", from, to, 3), &ca);
    assert_eq!(
        denied(&s, &[&leaf, &ca], CertProfile::Posp, t),
        DenyReason::IssuerNotCa("No certSign".into())
    );
    assert_eq!(s.admit_ca(&ca.der, t), Err(DenyReason::IssuerNotCa("No certSign".into())));

    let mut not_ca = Spec::ca("Not a CA", "Bank A", None, from, to, 4);
    not_ca.basic = Some((false, None));
    let ca = under(not_ca, &r);
    let leaf = under(Spec::posp("p2", "Bank A", from, to, 5), &ca);
    assert_eq!(
        denied(&s, &[&leaf, &ca], CertProfile::Posp, t),
        DenyReason::IssuerNotCa("Not a CA".into())
    );

    // §6.1.4 (n) asks for keyCertSign only "if a key usage extension is present".
    let mut no_usage = Spec::ca("No usage", "Bank A", Some(0), from, to, 6);
    no_usage.usage = None;
    let ca = under(no_usage, &r);
    let leaf = under(Spec::posp("p3", "Bank A", from, to, 7), &ca);
    allowed(&s, &[&leaf, &ca], CertProfile::Posp, t);
    let crl = crl_der(&cert::crl(&ca.key, &ca.pem, 1, &[], t, 24).unwrap());
    s.add_crl(&[&crl[..], &ca.der[..]].concat()).unwrap();

    // A CA that may sign certificates but not CRLs: its leaves are admitted, its CRL refused.
    let mut no_crl_sign = Spec::ca("No cRLSign", "Bank A", Some(0), from, to, 8);
    no_crl_sign.usage = Some(KeyUsage(KeyUsages::KeyCertSign.into()));
    let ca = under(no_crl_sign, &r);
    let leaf = under(Spec::posp("p4", "Bank A", from, to, 9), &ca);
    allowed(&s, &[&leaf, &ca], CertProfile::Posp, t);
    let crl = crl_der(&cert::crl(&ca.key, &ca.pem, 1, &revoke(&[9], t), t, 24).unwrap());
    let e = s.add_crl(&[&crl[..], &ca.der[..]].concat()).unwrap_err().to_string();
    assert!(e.contains("cRLSign"), "{e}");
    allowed(&s, &[&leaf, &ca], CertProfile::Posp, t);

    // The same for a root.
    let mut root_spec = Spec::ca("Bank B Root CA", "Bank B", Some(1), t - DAY, t + 900 * DAY, 1);
    root_spec.usage = Some(KeyUsage(KeyUsages::KeyCertSign.into()));
    let rb = make(root_spec, None);
    s.add_root(&rb.der).unwrap();
    let crl = crl_der(&cert::crl(&rb.key, &rb.pem, 1, &[], t, 24).unwrap());
    assert!(s.add_crl(&crl).unwrap_err().to_string().contains("cRLSign"));
}

fn revoke(serials: &[u8], at: SystemTime) -> Vec<Revocation> {
    serials.iter().map(|n| Revocation { serial: serial(*n).as_bytes().to_vec(), at }).collect()
}

/// The consortium's profile (`ca/src/cert.rs`, after RFC 5280 §4.2.1.12): a node's certificate
/// carries serverAuth and clientAuth, a POSP's and an admin's clientAuth; a certificate
/// without the usage its role needs is refused even when its OU names the role.
#[test]
fn each_role_needs_its_extended_key_usage() {
    let t = t0();
    let (from, to) = (t - DAY, t + 30 * DAY);
    let r = root("Bank A", Some(1), t - DAY, t + 900 * DAY);
    let s = store_of(&[&r]);
    let with = |ou: &str, eku: Option<Vec<_>>, n: u8| {
        let mut spec = Spec::posp(&format!("m{n}"), "Bank A", from, to, n);
        spec.subject = format!("CN=m{n},OU={ou},O=Bank A,C=CN");
        spec.eku = eku;
        under(spec, &r)
    };
    let wrong = |d: DenyReason, role: &str| {
        assert!(
            matches!(&d, DenyReason::WrongProfile { expected, .. } if *expected == role),
            "{d:?}"
        );
    };
    allowed(&s, &[&with("posp", Some(vec![CLIENT_AUTH]), 2)], CertProfile::Posp, t);
    wrong(denied(&s, &[&with("posp", None, 3)], CertProfile::Posp, t), "posp");
    wrong(denied(&s, &[&with("posp", Some(vec![SERVER_AUTH]), 4)], CertProfile::Posp, t), "posp");
    allowed(&s, &[&with("admin", Some(vec![CLIENT_AUTH]), 5)], CertProfile::Admin, t);
    wrong(denied(&s, &[&with("admin", None, 6)], CertProfile::Admin, t), "admin");
    let both = Some(vec![SERVER_AUTH, CLIENT_AUTH]);
    allowed(&s, &[&with("vp-node", both, 7)], CertProfile::VpNode, t);
    wrong(
        denied(&s, &[&with("vp-node", Some(vec![CLIENT_AUTH]), 8)], CertProfile::VpNode, t),
        "vp-node",
    );
    wrong(
        denied(&s, &[&with("vp-node", Some(vec![SERVER_AUTH]), 9)], CertProfile::VpNode, t),
        "vp-node",
    );
    // The OU must say the role too: a clientAuth certificate of OU admin is not a POSP.
    let admin = with("admin", Some(vec![CLIENT_AUTH]), 10);
    let d = denied(&s, &[&admin], CertProfile::Posp, t);
    assert_eq!(d, DenyReason::WrongProfile { expected: "posp", found: "admin".into() });
    // A CA is never an end entity (RFC 5280 §4.2.1.9: cA asserts the key verifies certificates).
    let ca = under(Spec::ca("A CA", "Bank A", Some(0), from, to, 11), &r);
    assert_eq!(denied(&s, &[&ca], CertProfile::Posp, t), DenyReason::NotEndEntity);
    // Roots and CAs are not roles anyone is admitted in.
    let leaf = with("root", Some(vec![CLIENT_AUTH]), 12);
    assert!(matches!(denied(&s, &[&leaf], CertProfile::Root, t), DenyReason::WrongProfile { .. }));
}

/// RFC 5280 §6.1.3 (a)(1): every certificate of the path is verified with its issuer's key;
/// §6.3.3 (g): a CRL's signature with its issuer's. One byte changed anywhere after signing is
/// refused — under an issuing CA as under a root, in the CA's certificate itself, in a CRL.
#[test]
fn a_byte_changed_after_signing_is_refused_everywhere_in_the_path() {
    let t = t0();
    let (from, to) = (t - DAY, t + 30 * DAY);
    let r = root("Bank A", Some(1), t - DAY, t + 900 * DAY);
    let mut s = store_of(&[&r]);
    let ca = under(Spec::ca("A CA", "Bank A", Some(0), from, to, 2), &r);
    let leaf = under(Spec::posp("member77", "Bank A", from, to, 3), &ca);
    allowed(&s, &[&leaf, &ca], CertProfile::Posp, t);
    // One bit of the leaf's CN, or of the CA's serial, changed after signing.
    let flip = |der: &[u8], what: &[u8]| {
        let mut bad = der.to_vec();
        let at = bad.windows(what.len()).position(|w| w == what).unwrap();
        bad[at + what.len() - 1] ^= 0x01;
        bad
    };
    let admit = |parts: &[&[u8]]| s.admit(&parts.concat(), CertProfile::Posp, t);
    let tampered_leaf = flip(&leaf.der, b"member77");
    assert_eq!(admit(&[&tampered_leaf, &ca.der]), Decision::Deny(DenyReason::BadSignature));
    let tampered_ca = flip(&ca.der, serial(2).as_bytes());
    assert_eq!(admit(&[&leaf.der, &tampered_ca]), Decision::Deny(DenyReason::BadSignature));
    assert_eq!(s.admit_ca(&tampered_ca, t), Err(DenyReason::BadSignature));

    // A CRL whose signature does not verify is not installed, and revokes nothing.
    let good = crl_der(&cert::crl(&ca.key, &ca.pem, 1, &revoke(&[3], t), t, 24).unwrap());
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    let refused = |r: Result<(), _>| r.map_err(|e: vpbox_ca::policy::StoreError| e.to_string());
    let e = refused(s.add_crl(&[&bad[..], &ca.der[..]].concat())).unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");
    allowed(&s, &[&leaf, &ca], CertProfile::Posp, t);
    let root_crl = crl_der(&cert::crl(&r.key, &r.pem, 1, &revoke(&[2], t), t, 24).unwrap());
    let mut bad_root_crl = root_crl.clone();
    let last = bad_root_crl.len() - 1;
    bad_root_crl[last] ^= 0x01;
    let e = refused(s.add_crl(&bad_root_crl)).unwrap_err();
    assert!(e.contains("signature does not verify"), "{e}");
    allowed(&s, &[&leaf, &ca], CertProfile::Posp, t);
    s.add_crl(&[&good[..], &ca.der[..]].concat()).unwrap();
    assert_eq!(denied(&s, &[&leaf, &ca], CertProfile::Posp, t), DenyReason::Revoked);
    s.add_crl(&root_crl).unwrap();
    assert_eq!(
        denied(&s, &[&leaf, &ca], CertProfile::Posp, t),
        DenyReason::IssuerRevoked("A CA".into())
    );
}

/// What an admitted identity is made of (`policy::Identity`): the bank from O, the name from
/// CN, the serial, and SM3 of the subject public key info — the key the member signs with.
#[test]
fn an_admitted_identity_is_read_from_the_certificate() {
    let t = t0();
    let r = root("Bank A", Some(1), t - DAY, t + 900 * DAY);
    let s = store_of(&[&r]);
    let leaf = under(Spec::posp("posp-0042", "Bank A", t - DAY, t + DAY, 42), &r);
    let Decision::Allow(id) = decide(&s, &[&leaf], CertProfile::Posp, t) else { panic!() };
    assert_eq!(
        (id.bank.as_str(), id.name.as_str(), id.role),
        ("Bank A", "posp-0042", CertProfile::Posp)
    );
    assert_eq!(id.serial, serial(42).as_bytes().to_vec());
    let spki = leaf.key.public_key().to_spki_der();
    assert_eq!(id.key_fingerprint, vpbox_sm::sm3::hash(spki));
    // Admitting again (the signature check now remembered) gives the same identity, and a
    // tampered copy is still refused.
    let Decision::Allow(again) = decide(&s, &[&leaf], CertProfile::Posp, t) else { panic!() };
    assert_eq!(again, id);
    // A copy of the store (each block's execution works on one) decides the same.
    #[expect(clippy::redundant_clone, reason = "the copy is what is tested")]
    let copy = s.clone();
    let Decision::Allow(copied) = decide(&copy, &[&leaf], CertProfile::Posp, t) else { panic!() };
    assert_eq!(copied, id);
}

/// RFC 5280 §6.1.3 (a)(4) and §6.1.4 (c)–(d): a path chains by name — each certificate's issuer
/// is the subject of the next — and by key. A CA with the right key under another name is not
/// the issuer; a chain that ends at a self-signed certificate outside the consortium leads to
/// an unknown root, whatever else is attached.
#[test]
fn paths_chain_by_name_and_end_at_a_consortium_root() {
    let t = t0();
    let (from, to) = (t - DAY, t + 30 * DAY);
    let r = root("Bank A", Some(1), t - DAY, t + 900 * DAY);
    let s = store_of(&[&r]);
    let secret = vpbox_sm::sm2::SecretKey::generate().unwrap().to_pkcs8_der().unwrap();
    let key = || SoftwareSigner::new(vpbox_sm::sm2::SecretKey::from_pkcs8_der(&secret).unwrap());
    let by_root = Some((&r.key, r.pem.as_str()));
    let ca = make_with(key(), Spec::ca("A CA", "Bank A", Some(0), from, to, 2), by_root);
    let leaf = under(Spec::posp("p1", "Bank A", from, to, 3), &ca);
    allowed(&s, &[&leaf, &ca], CertProfile::Posp, t);
    // The same key certified by the root under another name.
    let renamed = make_with(key(), Spec::ca("A CA other", "Bank A", Some(0), from, to, 4), by_root);
    let d = denied(&s, &[&leaf, &renamed], CertProfile::Posp, t);
    let names = |n: &str| n.split(',').any(|part| part == "CN=A CA");
    assert!(matches!(d, DenyReason::UnknownRoot(ref n) if names(n)), "{d:?}");

    // A foreign bank's full chain, its self-signed root included, plus one of ours.
    let z = root("Bank Z", Some(1), t - DAY, t + 900 * DAY);
    let z_ca = under(Spec::ca("Z CA", "Bank Z", Some(0), from, to, 5), &z);
    let z_leaf = under(Spec::posp("z1", "Bank Z", from, to, 6), &z_ca);
    for parts in [vec![&z_leaf, &z_ca, &z], vec![&z_leaf, &z_ca, &z, &ca], vec![&z_leaf, &ca]] {
        let d = denied(&s, &parts, CertProfile::Posp, t);
        let of_z = |n: &str| n.split(',').any(|part| part == "O=Bank Z");
        assert!(matches!(d, DenyReason::UnknownRoot(ref n) if of_z(n)), "{d:?}");
    }
}

/// The CRLs in force, as monitoring reads them: one per CA that published, the newest, ordered
/// by the CA's key (16 hex digits of SM3(subject ‖ SPKI)), with issuer and nextUpdate.
#[test]
fn the_crls_in_force_are_the_newest_of_each_ca() {
    let t = t0();
    let r = root("Bank A", Some(1), t - DAY, t + 900 * DAY);
    let mut s = store_of(&[&r]);
    assert!(s.crls_in_force().is_empty());
    let ca = under(Spec::ca("A CA", "Bank A", Some(0), t - DAY, t + 30 * DAY, 2), &r);
    s.add_crl(&crl_der(&cert::crl(&r.key, &r.pem, 1, &[], t, 24).unwrap())).unwrap();
    s.add_crl(&crl_der(&cert::crl(&r.key, &r.pem, 2, &[], t, 48).unwrap())).unwrap();
    let ca_crl = crl_der(&cert::crl(&ca.key, &ca.pem, 1, &[], t, 12).unwrap());
    s.add_crl(&[&ca_crl[..], &ca.der[..]].concat()).unwrap();
    let got = s.crls_in_force();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].ca < got[1].ca);
    for c in &got {
        assert_eq!(c.ca.len(), 16);
        assert!(c.ca.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let root_entry = got.iter().find(|c| c.issuer.contains("Root")).unwrap();
    assert_eq!(root_entry.next_update, Some(t + 2 * DAY), "the newer CRL replaced the older");
    let ca_entry = got.iter().find(|c| !c.issuer.contains("Root")).unwrap();
    assert_eq!(ca_entry.next_update, Some(t + 12 * 3600 * SECOND));
    // RFC 5280 §5.2.3: CRL numbers only grow — an older one is refused — but the same CRL
    // published again (a resubmission) is no regression.
    let again = crl_der(&cert::crl(&r.key, &r.pem, 2, &[], t, 48).unwrap());
    s.add_crl(&again).unwrap();
    let older = crl_der(&cert::crl(&r.key, &r.pem, 1, &[], t, 72).unwrap());
    assert!(s.add_crl(&older).is_err());
    assert_eq!(s.crls_in_force(), got);
    let (bank, nb, na) = vpbox_ca::policy::root_info(&r.der).unwrap();
    assert_eq!((bank.as_str(), nb, na), ("Bank A", t - DAY, t + 900 * DAY));
}

/// The store's memory of admissions (`TrustStore` docs): an admitted chain is admitted again
/// without a parse only for the same role, the same certificates and inside the times every
/// check held for (the latest notBefore through the earliest notAfter or CRL nextUpdate of the
/// path); outside them, and after a CRL is added, it is decided afresh, with the same answers
/// as a store that never saw it.
#[test]
fn an_admission_is_remembered_for_its_chain_role_and_times_only() {
    let t = t0();
    let posp = CertProfile::Posp;
    let r = root("Bank A", Some(1), t - 100 * DAY, t + 900 * DAY);
    let mut s = store_of(&[&r]);
    // The root's CRL is in force through t + 2 days.
    s.add_crl(&crl_der(&cert::crl(&r.key, &r.pem, 1, &[], t, 48).unwrap())).unwrap();
    let leaf = under(Spec::posp("p1", "Bank A", t - DAY, t + 30 * DAY, 2), &r);
    let count = |s: &TrustStore| s.admissions();

    allowed(&s, &[&leaf], posp, t);
    assert_eq!(count(&s), (1, 0), "decided in full");
    allowed(&s, &[&leaf], posp, t + 2 * DAY);
    allowed(&s, &[&leaf], posp, t - DAY);
    assert_eq!(count(&s), (1, 2), "inside the window, both ends included: remembered");
    assert_eq!(denied(&s, &[&leaf], posp, t + 2 * DAY + SECOND), DenyReason::StaleCrl);
    assert_eq!(denied(&s, &[&leaf], posp, t - DAY - SECOND), DenyReason::NotYetValid);
    assert_eq!(count(&s), (3, 2), "outside it: decided again");
    assert!(matches!(denied(&s, &[&leaf], CertProfile::Admin, t), DenyReason::WrongProfile { .. }));
    assert_eq!(count(&s), (4, 2), "another role is another admission");

    // Through an issuing CA: its validity bounds the window too, and the same bytes cut into
    // certificates another way are another chain.
    let ca = under(Spec::ca("Bank A CA", "Bank A", Some(0), t, t + 10 * DAY, 3), &r);
    let below = under(Spec::posp("p2", "Bank A", t - 50 * DAY, t + 50 * DAY, 4), &ca);
    allowed(&s, &[&below, &ca], posp, t + DAY);
    assert_eq!(
        denied(&s, &[&below, &ca], posp, t - SECOND),
        DenyReason::IssuerNotValid("Bank A CA".into())
    );
    let joined = [&below.der[..], &ca.der[..]].concat();
    assert!(matches!(
        s.admit_chain(&joined, &[], posp, t + DAY),
        Decision::Deny(DenyReason::Malformed(_))
    ));
    assert_eq!(count(&s), (7, 2));

    // Several chains are remembered side by side, and a clone shares the memory.
    allowed(&s, &[&leaf], posp, t);
    allowed(&s, &[&below, &ca], posp, t);
    let c = s.clone();
    allowed(&c, &[&leaf], posp, t);
    assert_eq!((count(&s), count(&c)), ((7, 5), (7, 5)));

    // A CRL starts a new memory: the leaf it revokes is refused at a time it was remembered
    // for; the clone, which has not seen it, still admits it.
    let revoking = cert::crl(&r.key, &r.pem, 2, &revoke(&[2], t), t, 48).unwrap();
    s.add_crl(&crl_der(&revoking)).unwrap();
    assert_eq!(denied(&s, &[&leaf], posp, t + DAY), DenyReason::Revoked);
    assert_eq!(count(&s), (1, 0));
    allowed(&c, &[&leaf], posp, t + DAY);
    assert_eq!(count(&c), (7, 6));
    // So does a root (a path's link may now end at it), on the clone alone.
    let mut d = c.clone();
    d.add_root(&root("Bank B", Some(1), t - DAY, t + 900 * DAY).der).unwrap();
    assert_eq!((count(&c), count(&d)), ((7, 6), (0, 0)));
    allowed(&d, &[&leaf], posp, t + DAY);
    assert_eq!((count(&c), count(&d)), ((7, 6), (1, 0)));
}
