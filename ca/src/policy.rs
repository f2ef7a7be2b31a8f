//! Admission policy: may this certificate take part, in this role, now? Sans-IO: the chain,
//! the trust store (roots and CRLs) and the time are inputs; the answer is a value.
//!
//! Checks, in order, each with its own [`DenyReason`]: the certificate decodes; its issuer is
//! one of the consortium's roots; the root's signature over it verifies (SM2, standard ID); it
//! is inside its validity period, and so is the root; it is an end-entity certificate whose
//! profile (OU and extended key usage) is the role asked for and whose O is its root's bank;
//! it is not on its root's CRL — and that CRL, if the root has published one, is still current.
//!
//! A root that has published no CRL has revoked nothing. A CRL past its nextUpdate denies
//! everything its root issued (`StaleCrl`): a bank that stops publishing cannot be trusted to
//! have revoked nothing.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use vpbox_sm::sm3::Digest;
use x509_cert::certificate::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};

use crate::cert::{CertProfile, name_attr, verify_certificate, verify_crl};

const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const ID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// Who was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The member bank (the O of the certificate and its root).
    pub bank: String,
    /// The CN: a node ID, a POSP ID, an admin's name.
    pub name: String,
    /// The role.
    pub role: CertProfile,
    /// The serial, big-endian.
    pub serial: Vec<u8>,
    /// SM3 of the certificate's SPKI: the key the identity signs with.
    pub key_fingerprint: Digest,
}

/// Why a certificate was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DenyReason {
    /// Not a certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// Its issuer is not a consortium root.
    #[error("issued by {0}, which is not a consortium root")]
    UnknownRoot(String),
    /// The signature does not verify: tampered, or forged under a root's name.
    #[error("the certificate's signature does not verify")]
    BadSignature,
    /// Before its notBefore.
    #[error("not valid yet")]
    NotYetValid,
    /// After its notAfter.
    #[error("expired")]
    Expired,
    /// The root itself is outside its validity.
    #[error("its root is not valid at this time")]
    RootNotValid,
    /// The certificate's profile is not the role asked for.
    #[error("profile {found:?} where {expected} is required")]
    WrongProfile {
        /// The role required.
        expected: &'static str,
        /// What the certificate says.
        found: String,
    },
    /// A CA certificate used as an end entity.
    #[error("a CA certificate cannot be admitted as an end entity")]
    NotEndEntity,
    /// The certificate's O is not its root's bank.
    #[error("O {found:?} is not the issuing bank {bank:?}")]
    WrongBank {
        /// The root's bank.
        bank: String,
        /// The certificate's O.
        found: String,
    },
    /// On its root's CRL.
    #[error("revoked")]
    Revoked,
    /// Its root's CRL is past nextUpdate.
    #[error("the issuing bank's CRL is out of date")]
    StaleCrl,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admitted, as this identity.
    Allow(Identity),
    /// Refused, for this reason.
    Deny(DenyReason),
}

#[derive(Clone)]
struct Root {
    cert: Certificate,
    bank: String,
    crl: Option<CertificateList>,
}

/// The consortium's roots (one or more per bank) and their current CRLs.
///
/// It remembers which certificates' signatures it has verified (by SM3 of the DER and the
/// root), so that admitting the same submitter again — every transaction it signs — costs a
/// parse and the validity and revocation checks, not an SM2 verification.
#[derive(Default)]
pub struct TrustStore {
    roots: Vec<Root>,
    verified: Mutex<HashSet<(Digest, usize)>>,
}

/// Most remembered signature checks; the memory is cleared when full.
const VERIFIED_MAX: usize = 100_000;

impl Clone for TrustStore {
    fn clone(&self) -> Self {
        let verified = self.verified.lock().map(|v| v.clone()).unwrap_or_default();
        Self { roots: self.roots.clone(), verified: Mutex::new(verified) }
    }
}

/// Why a root or CRL could not be added.
#[derive(Debug, thiserror::Error)]
#[error("trust store: {0}")]
pub struct StoreError(String);

impl TrustStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a root (DER). It must be a self-signed CA certificate with an O.
    pub fn add_root(&mut self, der: &[u8]) -> Result<(), StoreError> {
        let (cert, bank) = parse_root(der)?;
        self.roots.push(Root { cert, bank, crl: None });
        Ok(())
    }

    /// Installs a CRL (DER), replacing an older one of the same root. Its signature must verify
    /// with that root; a CRL with a lower CRL number than the installed one is refused.
    pub fn add_crl(&mut self, der: &[u8]) -> Result<(), StoreError> {
        let crl = CertificateList::from_der(der).map_err(|e| StoreError(e.to_string()))?;
        let root = self
            .roots
            .iter_mut()
            .find(|r| {
                r.cert.tbs_certificate().subject() == &crl.tbs_cert_list.issuer
                    && verify_crl(&crl, &r.cert).is_valid()
            })
            .ok_or_else(|| {
                StoreError(
                    "the CRL's issuer is not a root, or its signature does not verify".into(),
                )
            })?;
        if let Some(old) = &root.crl {
            if crl_number(old) > crl_number(&crl) {
                return Err(StoreError("an older CRL cannot replace a newer one".into()));
            }
        }
        root.crl = Some(crl);
        Ok(())
    }

    /// Decides on a DER certificate for `role` at `now`.
    pub fn admit(&self, der: &[u8], role: CertProfile, now: SystemTime) -> Decision {
        match self.check(der, role, now) {
            Ok(id) => Decision::Allow(id),
            Err(reason) => Decision::Deny(reason),
        }
    }

    fn check(
        &self,
        der: &[u8],
        role: CertProfile,
        now: SystemTime,
    ) -> Result<Identity, DenyReason> {
        let cert = Certificate::from_der(der).map_err(|e| DenyReason::Malformed(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let (index, root) = self
            .roots
            .iter()
            .enumerate()
            .find(|(_, r)| r.cert.tbs_certificate().subject() == tbs.issuer())
            .ok_or_else(|| DenyReason::UnknownRoot(tbs.issuer().to_string()))?;
        let key = (vpbox_sm::sm3::hash(der), index);
        let known = self.verified.lock().is_ok_and(|v| v.contains(&key));
        if !known {
            if !verify_certificate(&cert, &root.cert).is_valid() {
                return Err(DenyReason::BadSignature);
            }
            if let Ok(mut v) = self.verified.lock() {
                if v.len() >= VERIFIED_MAX {
                    v.clear();
                }
                v.insert(key);
            }
        }
        let v = tbs.validity();
        if now < v.not_before.to_system_time() {
            return Err(DenyReason::NotYetValid);
        }
        if now > v.not_after.to_system_time() {
            return Err(DenyReason::Expired);
        }
        let rv = root.cert.tbs_certificate().validity();
        if now < rv.not_before.to_system_time() || now > rv.not_after.to_system_time() {
            return Err(DenyReason::RootNotValid);
        }
        if is_ca(&cert) {
            return Err(DenyReason::NotEndEntity);
        }
        let ou = name_attr(tbs.subject(), OU).unwrap_or_default();
        let eku_ok = match role {
            CertProfile::VpNode => has_eku(&cert, &[ID_KP_SERVER_AUTH, ID_KP_CLIENT_AUTH]),
            CertProfile::Posp | CertProfile::Admin => has_eku(&cert, &[ID_KP_CLIENT_AUTH]),
            CertProfile::Root => false,
        };
        if ou != role.name() || !eku_ok {
            return Err(DenyReason::WrongProfile { expected: role.name(), found: ou });
        }
        let bank = name_attr(tbs.subject(), O).unwrap_or_default();
        if bank != root.bank {
            return Err(DenyReason::WrongBank { bank: root.bank.clone(), found: bank });
        }
        let serial = tbs.serial_number().as_bytes().to_vec();
        if let Some(crl) = &root.crl {
            if crl.tbs_cert_list.next_update.is_some_and(|n| now > n.to_system_time()) {
                return Err(DenyReason::StaleCrl);
            }
            let revoked = crl
                .tbs_cert_list
                .revoked_certificates
                .iter()
                .flatten()
                .any(|r| r.serial_number.as_bytes() == serial.as_slice());
            if revoked {
                return Err(DenyReason::Revoked);
            }
        }
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| DenyReason::Malformed(e.to_string()))?;
        Ok(Identity {
            bank,
            name: name_attr(tbs.subject(), CN).unwrap_or_default(),
            role,
            serial,
            key_fingerprint: vpbox_sm::sm3::hash(spki),
        })
    }
}

fn parse_root(der: &[u8]) -> Result<(Certificate, String), StoreError> {
    let cert = Certificate::from_der(der).map_err(|e| StoreError(e.to_string()))?;
    if !verify_certificate(&cert, &cert).is_valid() {
        return Err(StoreError("a root must be self-signed with SM2".into()));
    }
    if !is_ca(&cert) {
        return Err(StoreError("a root must be a CA certificate".into()));
    }
    let bank = name_attr(cert.tbs_certificate().subject(), O)
        .ok_or_else(|| StoreError("a root needs an O".into()))?;
    Ok((cert, bank))
}

/// A root certificate (DER) that [`TrustStore::add_root`] would take: its bank (O) and its
/// validity (not before, not after).
pub fn root_info(der: &[u8]) -> Result<(String, SystemTime, SystemTime), StoreError> {
    let (cert, bank) = parse_root(der)?;
    let v = cert.tbs_certificate().validity();
    Ok((bank, v.not_before.to_system_time(), v.not_after.to_system_time()))
}

fn is_ca(cert: &Certificate) -> bool {
    matches!(cert.tbs_certificate().get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}

fn has_eku(cert: &Certificate, wanted: &[ObjectIdentifier]) -> bool {
    match cert.tbs_certificate().get_extension::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) => wanted.iter().all(|w| eku.0.contains(w)),
        _ => false,
    }
}

/// The CRL number as a comparable key: (length, big-endian bytes without leading zeros).
fn crl_number(crl: &CertificateList) -> (usize, Vec<u8>) {
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::ext::pkix::crl::CrlNumber;
    let value = crl
        .tbs_cert_list
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == CrlNumber::OID)
        .and_then(|e| CrlNumber::from_der(e.extn_value.as_bytes()).ok())
        .map(|n| n.0.as_bytes().iter().copied().skip_while(|b| *b == 0).collect::<Vec<u8>>())
        .unwrap_or_default();
    (value.len(), value)
}
