//! Certificate admission on the ledger: enrollments, CRLs and the transactions they admit or
//! refuse, decided alike by every node from the same block on.

mod common;

use std::time::{Duration, SystemTime};

use common::{der, key, ms, now, outcomes, put, tx};
use vpbox_ca::cert::{
    Grant, Revocation, check_request, crl, issue, random_serial, self_signed_root,
};
use vpbox_ca::policy::{Decision, DenyReason};
use vpbox_ca::{CertProfile, build_csr};
use vpbox_ledger::Ledger;
use vpbox_ledger::block::Block;
use vpbox_ledger::contract::PutOutcome::*;
use vpbox_ledger::tx::Payload;
use vpbox_sm::sm3::Digest;
use vpbox_sm::{Signer, SoftwareSigner};

struct Bank {
    ca: SoftwareSigner,
    root: String,
}

impl Bank {
    fn new(name: &str) -> Self {
        let ca = key();
        let root = self_signed_root(&ca, name, "CN", random_serial([1; 16]).unwrap(), now(), 3650)
            .unwrap();
        Self { ca, root }
    }

    fn issue(
        &self,
        bank: &str,
        who: &SoftwareSigner,
        cn: &str,
        serial: u8,
        from: SystemTime,
        days: u32,
    ) -> Vec<u8> {
        let csr = build_csr(who, &format!("CN={cn},OU=posp,O={bank}")).unwrap();
        let req = check_request(&csr, CertProfile::Posp, bank).unwrap();
        let grant = Grant {
            profile: CertProfile::Posp,
            serial: random_serial([serial; 16]).unwrap(),
            now: from,
            days,
            dns_names: vec![],
        };
        der(&issue(&self.ca, &self.root, &req, grant).unwrap())
    }
}

fn ledger(dir: &tempfile::TempDir, roots: &[Vec<u8>]) -> Ledger {
    let mut l = Ledger::open(dir.path()).unwrap();
    l.set_roots(roots).unwrap();
    l.init_genesis(&Block::genesis(Digest([3; 32]), 0)).unwrap();
    l
}

#[test]
fn enrollment_admits_and_a_published_crl_refuses_from_its_block_on_at_every_node() {
    let bank = Bank::new("bank-a");
    let roots = vec![der(&bank.root)];
    let (p1, p2, p3) = (key(), key(), key());
    let c1 = bank.issue("bank-a", &p1, "posp-1", 2, now(), 365);
    let c2 = bank.issue("bank-a", &p2, "posp-2", 3, now(), 365);
    let crl_der = der(&crl(
        &bank.ca,
        &bank.root,
        1,
        &[Revocation { serial: random_serial([3; 16]).unwrap().as_bytes().to_vec(), at: now() }],
        now(),
        24,
    )
    .unwrap());
    let block1 = vec![
        tx(&p1, 1, Payload::Enroll(c1.clone())),
        tx(&p2, 1, Payload::Enroll(c2)),
        put(&p1, 2, 1),
        put(&p3, 1, 2),                  // never enrolled
        tx(&p3, 2, Payload::Enroll(c1)), // someone else's certificate
    ];
    let block2 = vec![
        put(&p2, 2, 3),
        tx(&p1, 3, Payload::Crl(crl_der)),
        put(&p2, 3, 4), // revoked from here on
        put(&p1, 4, 5),
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut hashes = Vec::new();
    for dir in [&d1, &d2] {
        let mut l = ledger(dir, &roots);
        let e1 = l.execute(&[], block1.clone()).unwrap();
        assert_eq!(
            outcomes(&e1),
            vec![vec![Success], vec![Success], vec![Success], vec![NotAdmitted], vec![NotAdmitted]]
        );
        // Speculatively on top of the uncommitted block 1: the enrollment already counts.
        let e2 = l.execute(std::slice::from_ref(&e1), block2.clone()).unwrap();
        assert_eq!(
            outcomes(&e2),
            vec![vec![Success], vec![Success], vec![NotAdmitted], vec![Success]]
        );
        // Enrollments and anchors leave the trust state as it was; a CRL changes it.
        let changes = l.trust_changes();
        l.commit(&e1, &[]).unwrap();
        assert_eq!(changes.count(), 0, "block 1 enrolls: no trust change");
        l.commit(&e2, &[]).unwrap();
        assert_eq!(changes.count(), 1, "block 2 publishes a CRL");
        hashes.push((e1.block.header.hash(), e2.block.header.hash()));
        drop(l);
        // After a restart the committed CRL still holds.
        let mut l = Ledger::open(dir.path()).unwrap();
        l.set_roots(&roots).unwrap();
        let t = ms(now()) + 5_000;
        let p2_fp = p2.public_key().fingerprint();
        assert_eq!(
            l.admit(&p2_fp, CertProfile::Posp, t).unwrap(),
            Some(Decision::Deny(DenyReason::Revoked))
        );
        assert!(matches!(
            l.admit(&p1.public_key().fingerprint(), CertProfile::Posp, t).unwrap(),
            Some(Decision::Allow(id)) if id.name == "posp-1"
        ));
        assert_eq!(
            l.admit(&p3.public_key().fingerprint(), CertProfile::Posp, t).unwrap(),
            Some(Decision::Deny(DenyReason::NotEnrolled))
        );
        // An older CRL cannot be replayed over the newer one.
        let older = der(&crl(&bank.ca, &bank.root, 0, &[], now(), 24).unwrap());
        assert!(l.check_crl(&older).is_err());
    }
    assert_eq!(hashes[0], hashes[1], "both nodes built the same blocks");
}

#[test]
fn expired_and_foreign_certificates_are_not_enrolled() {
    let bank = Bank::new("bank-a");
    let other = Bank::new("bank-x");
    let roots = vec![der(&bank.root)];
    let (p1, p2) = (key(), key());
    let old = now() - Duration::from_secs(400 * 86_400);
    let expired = bank.issue("bank-a", &p1, "posp-1", 2, old, 30);
    let foreign = other.issue("bank-x", &p2, "posp-2", 3, now(), 365);
    let dir = tempfile::tempdir().unwrap();
    let l = ledger(&dir, &roots);
    let e = l
        .execute(
            &[],
            vec![
                tx(&p1, 1, Payload::Enroll(expired)),
                tx(&p2, 1, Payload::Enroll(foreign)),
                put(&p1, 2, 1),
            ],
        )
        .unwrap();
    assert_eq!(outcomes(&e), vec![vec![NotAdmitted], vec![NotAdmitted], vec![NotAdmitted]]);
    // A CRL from a bank that is not a member is refused too.
    let rogue = der(&crl(&other.ca, &other.root, 5, &[], now(), 24).unwrap());
    assert!(l.check_crl(&rogue).is_err());
}

/// A bank that issues from an issuing CA under its root: enrollments carry the CA after the
/// certificate; the CA's CRL (carrying the CA) revokes a leaf, the root's CRL revokes the CA.
#[test]
fn chains_through_an_issuing_ca_enroll_and_both_cas_revoke() {
    let bank = Bank::new("bank-b");
    let roots = vec![der(&bank.root)];
    let ca_key = key();
    let ca_req = check_request(
        &build_csr(&ca_key, "CN=bank-b Issuing CA,OU=ca,O=bank-b").unwrap(),
        CertProfile::Ca,
        "bank-b",
    )
    .unwrap();
    let grant = Grant {
        profile: CertProfile::Ca,
        serial: random_serial([9; 16]).unwrap(),
        now: now(),
        days: 365,
        dns_names: vec![],
    };
    let ca_pem = issue(&bank.ca, &bank.root, &ca_req, grant).unwrap();
    let ca_der = der(&ca_pem);
    let issuing = Bank { ca: ca_key, root: ca_pem };
    let (p1, p2, p3) = (key(), key(), key());
    let chain = |c: Vec<u8>| [c, ca_der.clone()].concat();
    let c1 = chain(issuing.issue("bank-b", &p1, "posp-1", 2, now(), 365));
    let c2 = chain(issuing.issue("bank-b", &p2, "posp-2", 3, now(), 365));
    let bare = issuing.issue("bank-b", &p3, "posp-3", 4, now(), 365);
    let revoke = |n: u8| {
        vec![Revocation { serial: random_serial([n; 16]).unwrap().as_bytes().to_vec(), at: now() }]
    };
    let ca_crl =
        [der(&crl(&issuing.ca, &issuing.root, 1, &revoke(3), now(), 24).unwrap()), ca_der.clone()]
            .concat();
    let root_crl = der(&crl(&bank.ca, &bank.root, 1, &revoke(9), now(), 24).unwrap());
    let blocks = [
        vec![
            tx(&p1, 1, Payload::Enroll(c1)),
            tx(&p2, 1, Payload::Enroll(c2)),
            tx(&p3, 1, Payload::Enroll(bare)), // no issuing CA: no path to a root
            put(&p1, 2, 1),
            put(&p2, 2, 2),
            put(&p3, 2, 3),
        ],
        vec![tx(&p1, 3, Payload::Crl(ca_crl)), put(&p2, 3, 4), put(&p1, 4, 5)],
        vec![tx(&p1, 5, Payload::Crl(root_crl)), put(&p1, 6, 6)],
    ];
    let expected = [
        vec![Success, Success, NotAdmitted, Success, Success, NotAdmitted],
        vec![Success, NotAdmitted, Success],
        vec![Success, NotAdmitted],
    ];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut hashes = Vec::new();
    for dir in [&d1, &d2] {
        let mut l = ledger(dir, &roots);
        let mut mine = Vec::new();
        for (txs, want) in blocks.iter().zip(&expected) {
            let e = l.execute(&[], txs.clone()).unwrap();
            assert_eq!(outcomes(&e).concat(), *want);
            l.commit(&e, &[]).unwrap();
            mine.push(e.block.header.hash());
        }
        hashes.push(mine);
        drop(l);
        let mut l = Ledger::open(dir.path()).unwrap();
        l.set_roots(&roots).unwrap();
        assert!(matches!(
            l.admit(&p1.public_key().fingerprint(), CertProfile::Posp, ms(now()) + 5_000).unwrap(),
            Some(Decision::Deny(DenyReason::IssuerRevoked(_)))
        ));
    }
    assert_eq!(hashes[0], hashes[1], "both nodes built the same blocks");
}

/// A key enrolled once may enroll a renewed certificate only as the same name of the same bank,
/// so every enrollment a proof can show names the submitter the ledger admitted; the ledger
/// finds the enrollment in force before any position.
#[test]
fn a_key_re_enrolls_only_as_itself_and_its_enrollments_are_found_by_position() {
    let (a, b) = (Bank::new("bank-a"), Bank::new("bank-b"));
    let roots = vec![der(&a.root), der(&b.root)];
    let (p, q) = (key(), key());
    let first = a.issue("bank-a", &p, "posp-1", 2, now(), 365);
    let renewed = a.issue("bank-a", &p, "posp-1", 3, now(), 730);
    let renamed = a.issue("bank-a", &p, "posp-9", 4, now(), 365);
    let rebanked = b.issue("bank-b", &p, "posp-1", 5, now(), 365);
    let other = a.issue("bank-a", &q, "posp-2", 6, now(), 365);
    let dir = tempfile::tempdir().unwrap();
    let mut l = ledger(&dir, &roots);
    let e = l
        .execute(
            &[],
            vec![
                tx(&q, 1, Payload::Enroll(other)),
                tx(&p, 1, Payload::Enroll(first)),
                tx(&p, 2, Payload::Enroll(renamed)),
                tx(&p, 3, Payload::Enroll(rebanked)),
                put(&p, 4, 1),
            ],
        )
        .unwrap();
    let all =
        vec![vec![Success], vec![Success], vec![NotAdmitted], vec![NotAdmitted], vec![Success]];
    assert_eq!(outcomes(&e), all);
    l.commit(&e, b"cert").unwrap();
    let e = l.execute(&[], vec![tx(&p, 5, Payload::Enroll(renewed)), put(&p, 6, 2)]).unwrap();
    assert_eq!(outcomes(&e), vec![vec![Success], vec![Success]]);
    l.commit(&e, b"cert").unwrap();
    let fp = p.public_key().fingerprint();
    assert_eq!(l.enrollment_before(&fp, 1, 1).unwrap(), None, "not before its own enrollment");
    assert_eq!(l.enrollment_before(&fp, 1, 2).unwrap(), Some((1, 1)));
    assert_eq!(l.enrollment_before(&fp, 2, 0).unwrap(), Some((1, 1)));
    assert_eq!(l.enrollment_before(&fp, 2, 1).unwrap(), Some((2, 0)), "the renewal");
    assert_eq!(l.enrollment_before(&fp, 9, 0).unwrap(), Some((2, 0)));
    let fq = q.public_key().fingerprint();
    assert_eq!(l.enrollment_before(&fq, 9, 0).unwrap(), Some((1, 0)), "each key its own");
}
