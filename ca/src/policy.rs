//! Admission policy: may this certificate take part, in this role, now? Sans-IO: the chain,
//! the trust store (roots and CRLs) and the time are inputs; the answer is a value.
//!
//! A chain is the end-entity certificate, then the issuing CAs above it (at most
//! [`INTERMEDIATES_MAX`]), up to one of the consortium's roots: a bank may issue from its root
//! directly, or from an issuing CA under a root it already had. Checks, each with its own
//! [`DenyReason`]: the certificates decode; each certificate's issuer is an issuing CA of the
//! chain or a root; each signature verifies (SM2, standard ID); the end entity is inside its
//! validity period, and so is every CA above it; every issuing CA is a CA (basicConstraints,
//! keyCertSign) of the root's bank within its path length; the end entity's profile (OU and
//! extended key usage) is the role asked for and its O is its root's bank; no certificate of the
//! chain is on its issuer's CRL — and each such CRL, if its CA has published one, is current.
//!
//! CRLs are kept per CA (its name and key): a root's CRL can revoke an issuing CA, an issuing
//! CA's CRL its leaves. A CA that has published no CRL has revoked nothing. A CRL past its
//! nextUpdate denies everything its CA issued (`StaleCrl`): a bank that stops publishing cannot
//! be trusted to have revoked nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::SystemTime;

use vpbox_sm::sm3::Digest;
use x509_cert::certificate::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};

use crate::cert::{CHAIN_MAX, CertProfile, name_attr, split_der, verify_certificate, verify_crl};

const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const ID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const ID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// Most issuing CAs between an end entity and its root.
pub const INTERMEDIATES_MAX: usize = 2;

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
    /// The submitter has enrolled no certificate: there is nothing to admit.
    #[error("not enrolled")]
    NotEnrolled,
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
    /// On its issuer's CRL.
    #[error("revoked")]
    Revoked,
    /// The CRL of a CA of its chain is past nextUpdate.
    #[error("the issuing bank's CRL is out of date")]
    StaleCrl,
    /// An issuing CA of its chain is on its own issuer's CRL.
    #[error("its issuing CA {0:?} is revoked")]
    IssuerRevoked(String),
    /// An issuing CA of its chain is outside its validity.
    #[error("its issuing CA {0:?} is not valid at this time")]
    IssuerNotValid(String),
    /// A certificate that signed another one of the chain is not a CA allowed to sign
    /// certificates.
    #[error("{0:?} is not a CA that may issue certificates")]
    IssuerNotCa(String),
    /// More issuing CAs than a CA's path length (or [`INTERMEDIATES_MAX`]) allows.
    #[error("the chain is longer than {0:?} allows")]
    PathTooLong(String),
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
}

/// A CA as CRLs know it: SM3 of its subject's DER ‖ its SPKI's DER.
type CaKey = Digest;

fn ca_key(cert: &Certificate) -> Option<CaKey> {
    let tbs = cert.tbs_certificate();
    let mut bytes = tbs.subject().to_der().ok()?;
    bytes.extend(tbs.subject_public_key_info().to_der().ok()?);
    Some(vpbox_sm::sm3::hash(bytes))
}

/// The consortium's roots (one or more per bank) and the current CRL of every CA of theirs that
/// has published one.
///
/// It remembers which signatures it has verified (by SM3 of the certificate's DER and of its
/// issuer's key), so that admitting the same submitter again costs a parse and the validity
/// and revocation checks, not SM2 verifications.
///
/// It also remembers each chain it admitted ([`Admitted`]): the identity, and the times its
/// checks hold for. Every time condition of an admission is the time at or after an instant (a
/// notBefore) or at or before one (a notAfter, a CRL's nextUpdate), so an admission at one
/// time stands from the latest instant of the first kind through the earliest of the second;
/// the other checks depend only on the chain, the role and the store. So the same chain for
/// the same role inside that window is admitted again without a parse (on a node's signed
/// path every transaction is admitted at intake and again when its block executes: the parse
/// was a quarter of the executing thread's time). Denials are not remembered. A CRL or a
/// root added to the store starts a new memory (a CRL may revoke; a root may shorten a path,
/// since each link is sought among the roots first). Clones share the memory until either
/// adds one.
#[derive(Default)]
pub struct TrustStore {
    roots: Vec<Root>,
    crls: HashMap<CaKey, CertificateList>,
    verified: Mutex<HashSet<(Digest, Digest)>>,
    admitted: std::sync::Arc<Admitted>,
}

/// Most remembered signature checks; the memory is cleared when full.
const VERIFIED_MAX: usize = 100_000;

/// Most remembered admissions; the memory is cleared when full.
const ADMITTED_MAX: usize = 16_384;

/// Most bytes of remembered chains ([`chain_key`]s); the memory is cleared when full. A chain
/// may carry certificates its path does not use (they are only parsed), so a submitter could
/// otherwise make each remembered key as large as a request.
const ADMITTED_BYTES: usize = 16 << 20;

/// The admissions a store remembers, by the role and the chain themselves ([`chain_key`]), and
/// how many admissions were decided in full and from memory.
#[derive(Default)]
struct Admitted {
    chains: Mutex<Chains>,
    checked: std::sync::atomic::AtomicU64,
    remembered: std::sync::atomic::AtomicU64,
}

/// Remembered admissions, by [`chain_key`], and the bytes of their keys.
#[derive(Default)]
struct Chains {
    map: HashMap<Vec<u8>, (Identity, Window)>,
    bytes: usize,
}

impl Chains {
    /// Remembers an admission; first forgets all the others when the memory would hold more
    /// than `max` chains or `max_bytes` of keys ([`ADMITTED_MAX`], [`ADMITTED_BYTES`]). A chain
    /// remembered again (its window had passed) counts twice: the count may overstate, never
    /// understate.
    fn remember(&mut self, key: Vec<u8>, admission: (Identity, Window), max: (usize, usize)) {
        if self.map.len() >= max.0 || self.bytes + key.len() > max.1 {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += key.len();
        self.map.insert(key, admission);
    }
}

/// The times an admission's time checks hold for, inclusive at both ends (`None`: no bound).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    from: Option<SystemTime>,
    until: Option<SystemTime>,
}

impl Window {
    /// Whether `now` is at or after `t`; the window starts no earlier than `t`.
    fn at_or_after(&mut self, t: SystemTime, now: SystemTime) -> bool {
        self.from = Some(self.from.map_or(t, |f| f.max(t)));
        now >= t
    }

    /// Whether `now` is at or before `t`; the window ends no later than `t`.
    fn at_or_before(&mut self, t: SystemTime, now: SystemTime) -> bool {
        self.until = Some(self.until.map_or(t, |u| u.min(t)));
        now <= t
    }

    /// Whether `now` is inside `cert`'s validity (RFC 5280: inclusive at both ends).
    fn within(&mut self, cert: &Certificate, now: SystemTime) -> bool {
        let v = cert.tbs_certificate().validity();
        let after = self.at_or_after(v.not_before.to_system_time(), now);
        self.at_or_before(v.not_after.to_system_time(), now) && after
    }

    fn holds(&self, now: SystemTime) -> bool {
        self.from.is_none_or(|f| now >= f) && self.until.is_none_or(|u| now <= u)
    }
}

impl Clone for TrustStore {
    fn clone(&self) -> Self {
        let verified = self.verified.lock().map(|v| v.clone()).unwrap_or_default();
        Self {
            roots: self.roots.clone(),
            crls: self.crls.clone(),
            verified: Mutex::new(verified),
            admitted: std::sync::Arc::clone(&self.admitted),
        }
    }
}

/// The key of a chain's admission in a role: the role's name and a zero byte, then each
/// certificate's length and DER (so that the same bytes cut into certificates differently are
/// another chain). The bytes themselves, not a digest of them: the map's hash (SipHash, keyed
/// at random per process) finds the entry and the comparison is of every byte, so no chain can
/// pass for another, and a look-up costs no SM3 of the chain (on a node's signed path, SM3 of
/// a certificate for every transaction was about 2 % of a node's time). The memory holds at
/// most [`ADMITTED_BYTES`] of them (16 MiB), and [`ADMITTED_MAX`] chains.
fn chain_key(leaf: &[u8], intermediates: &[&[u8]], role: CertProfile) -> Vec<u8> {
    let mut key = role.name().as_bytes().to_vec();
    key.push(0);
    for part in std::iter::once(&leaf).chain(intermediates) {
        key.extend_from_slice(&(part.len() as u64).to_be_bytes());
        key.extend_from_slice(part);
    }
    key
}

/// Why a root or CRL could not be added.
#[derive(Debug, thiserror::Error)]
#[error("trust store: {0}")]
pub struct StoreError(String);

/// A certification path, issuers bottom-up: `cas[0]` signed the end entity; the root signed
/// the last of `cas` (or the end entity when `cas` is empty).
struct Path<'a> {
    cas: Vec<&'a Certificate>,
    root: &'a Root,
}

/// A CRL in force, as monitoring shows it ([`TrustStore::crls_in_force`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInForce {
    /// Its CA: the first 16 hex digits of SM3(subject ‖ key), which tells apart two CAs of
    /// one name (a bank's second root, a re-keyed issuing CA).
    pub ca: String,
    /// The CRL's issuer name (RFC 4514).
    pub issuer: String,
    /// Its nextUpdate, if it has one.
    pub next_update: Option<SystemTime>,
}

impl TrustStore {
    /// The current CRL of each CA that has published one (superseded CRLs are not in force),
    /// ordered by CA.
    pub fn crls_in_force(&self) -> Vec<CrlInForce> {
        let mut out: Vec<CrlInForce> = self
            .crls
            .iter()
            .map(|(key, crl)| CrlInForce {
                ca: key.0[..8].iter().map(|b| format!("{b:02x}")).collect(),
                issuer: crl.tbs_cert_list.issuer.to_string(),
                next_update: crl.tbs_cert_list.next_update.map(|t| t.to_system_time()),
            })
            .collect();
        out.sort_by(|a, b| a.ca.cmp(&b.ca));
        out
    }

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a root (DER). It must be a self-signed CA certificate with an O.
    pub fn add_root(&mut self, der: &[u8]) -> Result<(), StoreError> {
        let (cert, bank) = parse_root(der)?;
        self.roots.push(Root { cert, bank });
        // A path may now end at it sooner: admissions from now on are decided afresh.
        self.admitted = std::sync::Arc::default();
        Ok(())
    }

    /// Installs a CRL, replacing an older one of the same CA. `bytes` is the CRL's DER,
    /// followed — for an issuing CA's CRL — by that CA's certificate and any CAs above it
    /// (DER, concatenated). The CRL's signature must verify with its CA's key, and the CA must
    /// chain to a root as a CA of the root's bank (validity is checked when certificates are
    /// admitted, not here). A CRL with a lower CRL number than the installed one is refused.
    pub fn add_crl(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let err = |s: &str| StoreError(s.into());
        let parts = split_der(bytes).map_err(|e| StoreError(e.to_string()))?;
        let crl = CertificateList::from_der(parts[0]).map_err(|e| StoreError(e.to_string()))?;
        let chain = parts[1..]
            .iter()
            .map(|d| Certificate::from_der(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError(format!("the CRL's issuer chain: {e}")))?;
        let not_ours = "the CRL's issuer is not a consortium CA, or its signature does not verify";
        let issuer = match chain.first() {
            // A root's CRL.
            None => self
                .roots
                .iter()
                .map(|r| &r.cert)
                .find(|c| {
                    c.tbs_certificate().subject() == &crl.tbs_cert_list.issuer
                        && verify_crl(&crl, c).is_valid()
                })
                .ok_or_else(|| err(not_ours))?,
            // An issuing CA's CRL: the CA must chain to a root.
            Some(ca) => {
                if ca.tbs_certificate().subject() != &crl.tbs_cert_list.issuer
                    || !verify_crl(&crl, ca).is_valid()
                {
                    return Err(err(not_ours));
                }
                let path = self.ca_path(ca, &chain[1..]).map_err(|r| StoreError(r.to_string()))?;
                self.check_cas(&path, None, &mut Window::default())
                    .map_err(|r| StoreError(r.to_string()))?;
                ca
            }
        };
        if !can_sign_crls(issuer) {
            return Err(err("the CRL's issuer may not sign CRLs (keyUsage without cRLSign)"));
        }
        let key = ca_key(issuer).ok_or_else(|| err("the CRL's issuer does not encode"))?;
        if let Some(old) = self.crls.get(&key) {
            if crl_number(old) > crl_number(&crl) {
                return Err(err("an older CRL cannot replace a newer one"));
            }
        }
        self.crls.insert(key, crl);
        // It may revoke what was admitted: admissions from now on are decided afresh.
        self.admitted = std::sync::Arc::default();
        Ok(())
    }

    /// How many admissions this store (and the clones sharing its memory) decided in full,
    /// and how many it answered from its memory of admitted chains, since its last root or
    /// CRL. (A chain of more than `CHAIN_MAX` certificates is refused before either.)
    pub fn admissions(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.admitted.checked.load(Relaxed), self.admitted.remembered.load(Relaxed))
    }

    /// Decides on a certificate for `role` at `now`. `chain` is its DER, followed by the DER
    /// of the issuing CAs above it when it was not issued by a root directly.
    pub fn admit(&self, chain: &[u8], role: CertProfile, now: SystemTime) -> Decision {
        let parts = match split_der(chain) {
            Ok(p) => p,
            Err(e) => return Decision::Deny(DenyReason::Malformed(e.to_string())),
        };
        self.admit_chain(parts[0], &parts[1..], role, now)
    }

    /// Decides on the end-entity certificate `leaf` (DER), with the issuing CAs `intermediates`
    /// (DER, in any order; extra ones are ignored), for `role` at `now`.
    pub fn admit_chain(
        &self,
        leaf: &[u8],
        intermediates: &[&[u8]],
        role: CertProfile,
        now: SystemTime,
    ) -> Decision {
        use std::sync::atomic::Ordering::Relaxed;
        // A peer may add its root, never more: every extra candidate under a matching name
        // would cost an SM2 verification (and here, hashing it).
        if intermediates.len() >= CHAIN_MAX {
            return Decision::Deny(DenyReason::Malformed(format!(
                "{} certificates above the end entity; at most {}",
                intermediates.len(),
                CHAIN_MAX - 1
            )));
        }
        let key = chain_key(leaf, intermediates, role);
        let chains = &self.admitted.chains;
        if let Some((id, _)) =
            chains.lock().ok().and_then(|c| c.map.get(&key).filter(|(_, w)| w.holds(now)).cloned())
        {
            self.admitted.remembered.fetch_add(1, Relaxed);
            return Decision::Allow(id);
        }
        self.admitted.checked.fetch_add(1, Relaxed);
        let mut window = Window::default();
        match self.check(leaf, intermediates, role, now, &mut window) {
            Ok(id) => {
                if let Ok(mut c) = chains.lock() {
                    c.remember(key, (id.clone(), window), (ADMITTED_MAX, ADMITTED_BYTES));
                }
                Decision::Allow(id)
            }
            Err(reason) => Decision::Deny(reason),
        }
    }

    /// Checks an issuing CA's certificate `ca` (DER, followed by any CAs above it) as
    /// [`admit`](Self::admit) checks the CAs of a chain at `now`; answers its bank.
    pub fn admit_ca(&self, ca: &[u8], now: SystemTime) -> Result<String, DenyReason> {
        let parts = split_der(ca).map_err(|e| DenyReason::Malformed(e.to_string()))?;
        let certs = parse_all(&parts)?;
        let path = self.ca_path(&certs[0], &certs[1..])?;
        self.check_cas(&path, Some(now), &mut Window::default())?;
        Ok(path.root.bank.clone())
    }

    /// The path of the CA certificate `ca` itself: `ca` first among the path's CAs, so that
    /// [`check_cas`](Self::check_cas) checks it like every CA above it.
    fn ca_path<'a>(
        &'a self,
        ca: &'a Certificate,
        above: &'a [Certificate],
    ) -> Result<Path<'a>, DenyReason> {
        let mut path = self.path(ca, above)?;
        if path.cas.len() == INTERMEDIATES_MAX {
            return Err(DenyReason::PathTooLong(subject_cn(ca)));
        }
        path.cas.insert(0, ca);
        Ok(path)
    }

    /// The checks of an admission at `now`; every time condition narrows `window`.
    fn check(
        &self,
        der: &[u8],
        intermediates: &[&[u8]],
        role: CertProfile,
        now: SystemTime,
        window: &mut Window,
    ) -> Result<Identity, DenyReason> {
        let cert = Certificate::from_der(der).map_err(|e| DenyReason::Malformed(e.to_string()))?;
        let cas = parse_all(intermediates)?;
        let path = self.path(&cert, &cas)?;
        let tbs = cert.tbs_certificate();
        let v = tbs.validity();
        if !window.at_or_after(v.not_before.to_system_time(), now) {
            return Err(DenyReason::NotYetValid);
        }
        if !window.at_or_before(v.not_after.to_system_time(), now) {
            return Err(DenyReason::Expired);
        }
        if is_ca(&cert) {
            return Err(DenyReason::NotEndEntity);
        }
        self.check_cas(&path, Some(now), window)?;
        let ou = name_attr(tbs.subject(), OU).unwrap_or_default();
        let eku_ok = match role {
            CertProfile::VpNode => has_eku(&cert, &[ID_KP_SERVER_AUTH, ID_KP_CLIENT_AUTH]),
            CertProfile::Posp | CertProfile::Admin => has_eku(&cert, &[ID_KP_CLIENT_AUTH]),
            CertProfile::Root | CertProfile::Ca => false,
        };
        if ou != role.name() || !eku_ok {
            return Err(DenyReason::WrongProfile { expected: role.name(), found: ou });
        }
        let bank = name_attr(tbs.subject(), O).unwrap_or_default();
        if bank != path.root.bank {
            return Err(DenyReason::WrongBank { bank: path.root.bank.clone(), found: bank });
        }
        let issuer = path.cas.first().copied().unwrap_or(&path.root.cert);
        if let Some(crl) = self.current_crl(issuer, now, window)? {
            if on_crl(crl, &cert) {
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
            serial: tbs.serial_number().as_bytes().to_vec(),
            key_fingerprint: vpbox_sm::sm3::hash(spki),
        })
    }

    /// Builds the path from `cert` up to a root through `cas`, checking every signature on the
    /// way. A name that several candidates hold (a re-keyed CA) takes the one whose key signed.
    fn path<'a>(
        &'a self,
        cert: &'a Certificate,
        cas: &'a [Certificate],
    ) -> Result<Path<'a>, DenyReason> {
        let mut path = Vec::new();
        let mut child = cert;
        loop {
            let issuer = child.tbs_certificate().issuer();
            let mut named = false;
            if let Some(root) = self.roots.iter().find(|r| {
                let hit = r.cert.tbs_certificate().subject() == issuer;
                named |= hit;
                hit && self.signed(child, &r.cert)
            }) {
                return Ok(Path { cas: path, root });
            }
            let next = cas.iter().find(|c| {
                let hit = c.tbs_certificate().subject() == issuer && !std::ptr::eq(*c, child);
                named |= hit;
                hit && !path.iter().any(|p| std::ptr::eq(*p, *c)) && self.signed(child, c)
            });
            match next {
                Some(ca) if path.len() < INTERMEDIATES_MAX => {
                    path.push(ca);
                    child = ca;
                }
                Some(ca) => return Err(DenyReason::PathTooLong(subject_cn(ca))),
                None if named => return Err(DenyReason::BadSignature),
                None => return Err(DenyReason::UnknownRoot(issuer.to_string())),
            }
        }
    }

    /// Whether `issuer` signed `cert`, remembered once verified.
    fn signed(&self, cert: &Certificate, issuer: &Certificate) -> bool {
        let (Ok(der), Ok(key)) =
            (cert.to_der(), issuer.tbs_certificate().subject_public_key_info().to_der())
        else {
            return false;
        };
        let memo = (vpbox_sm::sm3::hash(der), vpbox_sm::sm3::hash(key));
        if self.verified.lock().is_ok_and(|v| v.contains(&memo)) {
            return true;
        }
        let ok = verify_certificate(cert, issuer).is_valid();
        if ok {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() >= VERIFIED_MAX {
                    v.clear();
                }
                v.insert(memo);
            }
        }
        ok
    }

    /// Checks the CAs of `path`: each a CA of the root's bank within its path
    /// length, and — when `now` is given — valid then and not revoked by its own issuer (each
    /// time condition narrowing `window`).
    fn check_cas(
        &self,
        path: &Path<'_>,
        now: Option<SystemTime>,
        window: &mut Window,
    ) -> Result<(), DenyReason> {
        for (below, ca) in path.cas.iter().enumerate() {
            let name = subject_cn(ca);
            if !is_ca(ca) || !can_sign_certs(ca) {
                return Err(DenyReason::IssuerNotCa(name));
            }
            if path_len(ca).is_some_and(|max| below > max) {
                return Err(DenyReason::PathTooLong(name));
            }
            let bank = name_attr(ca.tbs_certificate().subject(), O).unwrap_or_default();
            if bank != path.root.bank {
                return Err(DenyReason::WrongBank { bank: path.root.bank.clone(), found: bank });
            }
            if let Some(now) = now {
                if !window.within(ca, now) {
                    return Err(DenyReason::IssuerNotValid(name));
                }
                let issuer = path.cas.get(below + 1).copied().unwrap_or(&path.root.cert);
                if let Some(crl) = self.current_crl(issuer, now, window)? {
                    if on_crl(crl, ca) {
                        return Err(DenyReason::IssuerRevoked(name));
                    }
                }
            }
        }
        if path_len(&path.root.cert).is_some_and(|max| path.cas.len() > max) {
            return Err(DenyReason::PathTooLong(subject_cn(&path.root.cert)));
        }
        if let Some(now) = now {
            if !window.within(&path.root.cert, now) {
                return Err(DenyReason::RootNotValid);
            }
        }
        Ok(())
    }

    /// The CRL `ca` published, if any, provided it is current at `now` (its nextUpdate
    /// narrowing `window`).
    fn current_crl(
        &self,
        ca: &Certificate,
        now: SystemTime,
        window: &mut Window,
    ) -> Result<Option<&CertificateList>, DenyReason> {
        let Some(crl) = ca_key(ca).and_then(|k| self.crls.get(&k)) else { return Ok(None) };
        if let Some(next) = crl.tbs_cert_list.next_update {
            if !window.at_or_before(next.to_system_time(), now) {
                return Err(DenyReason::StaleCrl);
            }
        }
        Ok(Some(crl))
    }
}

fn parse_all(ders: &[&[u8]]) -> Result<Vec<Certificate>, DenyReason> {
    ders.iter()
        .map(|d| Certificate::from_der(d).map_err(|e| DenyReason::Malformed(e.to_string())))
        .collect()
}

fn on_crl(crl: &CertificateList, cert: &Certificate) -> bool {
    let serial = cert.tbs_certificate().serial_number().as_bytes();
    crl.tbs_cert_list
        .revoked_certificates
        .iter()
        .flatten()
        .any(|r| r.serial_number.as_bytes() == serial)
}

fn subject_cn(cert: &Certificate) -> String {
    let subject = cert.tbs_certificate().subject();
    name_attr(subject, CN).unwrap_or_else(|| subject.to_string())
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

/// The basicConstraints path length, if the certificate sets one.
fn path_len(cert: &Certificate) -> Option<usize> {
    match cert.tbs_certificate().get_extension::<BasicConstraints>() {
        Ok(Some((_, bc))) => bc.path_len_constraint.map(usize::from),
        _ => None,
    }
}

/// Whether a CA's key usage (if it states one) allows signing CRLs.
fn can_sign_crls(cert: &Certificate) -> bool {
    match cert.tbs_certificate().get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) => ku.0.contains(KeyUsages::CRLSign),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Whether a CA's key usage (if it states one) allows signing certificates.
fn can_sign_certs(cert: &Certificate) -> bool {
    match cert.tbs_certificate().get_extension::<KeyUsage>() {
        Ok(Some((_, ku))) => ku.0.contains(KeyUsages::KeyCertSign),
        Ok(None) => true,
        Err(_) => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(n: u8) -> (Identity, Window) {
        let id = Identity {
            bank: "Bank A".into(),
            name: format!("p{n}"),
            role: CertProfile::Posp,
            serial: vec![n],
            key_fingerprint: Digest([n; 32]),
        };
        (id, Window::default())
    }

    /// The memory of admissions is bounded by count and by the bytes of its keys: past either,
    /// it starts afresh with the new one (the bounds here small; [`ADMITTED_MAX`] and
    /// [`ADMITTED_BYTES`] in use).
    #[test]
    fn the_memory_of_admissions_is_bounded_by_count_and_bytes() {
        let mut c = Chains::default();
        let max = (3, 100);
        for n in 0..3 {
            c.remember(vec![n; 10], admission(n), max);
        }
        assert_eq!((c.map.len(), c.bytes), (3, 30), "three chains of 10 bytes");
        c.remember(vec![3; 10], admission(3), max);
        assert_eq!((c.map.len(), c.bytes), (1, 10), "a fourth starts afresh");
        assert!(c.map.contains_key(&vec![3; 10]));
        c.remember(vec![4; 70], admission(4), max);
        c.remember(vec![5; 20], admission(5), max);
        assert_eq!((c.map.len(), c.bytes), (3, 100), "exactly at the byte bound: kept");
        let mut c = Chains::default();
        c.remember(vec![4; 80], admission(4), max);
        c.remember(vec![5; 20], admission(5), max);
        assert_eq!((c.map.len(), c.bytes), (2, 100), "two chains, at the byte bound");
        c.remember(vec![6; 1], admission(6), max);
        assert_eq!((c.map.len(), c.bytes), (1, 1), "one byte over, under the count: afresh");
        assert_eq!(c.map.get(&vec![6; 1]), Some(&admission(6)));
    }
}
