//! Certificates and CRLs by profile, signed through any [`vpbox_sm::Signer`].

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use spki::SubjectPublicKeyInfoRef;
use vpbox_sm::Signer;
use vpbox_sm::sm2::PublicKey;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder, CrlBuilder};
use x509_cert::certificate::{Certificate, TbsCertificate};
use x509_cert::crl::{CertificateList, RevokedCert};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, DecodePem, Encode, EncodePem, pem::LineEnding};
use x509_cert::ext::pkix::crl::CrlNumber;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
pub use x509_cert::request::CertReq;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use crate::sign::{X509Signer, verify_x509};

const ID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const ID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// What a certificate is for. The role is carried twice: in the subject's OU (so people and
/// policies read it the same way) and in the extended key usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertProfile {
    /// A member bank's root CA.
    Root,
    /// A validating node: TLS server and client; the key is the node's consensus key.
    VpNode,
    /// A POSP server: TLS client; submits anchors.
    Posp,
    /// A bank admin: signs governance approvals.
    Admin,
    /// A bank's issuing CA under one of its roots (an intermediate): signs leaves and its own
    /// CRL, never another CA (path length 0).
    Ca,
}

impl CertProfile {
    /// The profile's name, which is also the subject's OU.
    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::VpNode => "vp-node",
            Self::Posp => "posp",
            Self::Admin => "admin",
            Self::Ca => "ca",
        }
    }

    /// A leaf profile by name.
    pub fn leaf(name: &str) -> Option<Self> {
        match name {
            "vp-node" => Some(Self::VpNode),
            "posp" => Some(Self::Posp),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// A profile a CA may issue by name: a leaf profile, or `ca` for an issuing CA.
    pub fn issuable(name: &str) -> Option<Self> {
        if name == "ca" { Some(Self::Ca) } else { Self::leaf(name) }
    }
}

/// Why a certificate could not be made or a request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The request's own signature does not verify.
    #[error("the request's signature does not verify")]
    BadRequestSignature,
    /// The request's key is not an SM2 key.
    #[error("the request's key is not SM2: {0}")]
    NotSm2(String),
    /// The subject does not fit the profile.
    #[error("subject {subject:?} does not fit profile {profile}: {why}")]
    Subject {
        /// The subject.
        subject: String,
        /// The profile.
        profile: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A CRL would be out of date too soon (see [`CRL_HOURS_MIN`]).
    #[error(
        "a CRL valid for {hours} h would be out of date before a renewal replaced it, and then \
         every certificate its CA issued is refused: sign it for {CRL_HOURS_MIN} h at least"
    )]
    CrlTooShort {
        /// The validity asked for.
        hours: u32,
    },
    /// A CRL's nextUpdate is absent, past, or too near to publish it (see [`crl_fresh_for`]).
    #[error("{0}")]
    CrlStale(String),
    /// Encoding, decoding or building failed.
    #[error("{0}")]
    Encoding(String),
}

/// The nextUpdate of the CRL `der` (the first DER object of a CRL and its issuer's chain).
fn crl_next_update(der: &[u8]) -> Result<Option<SystemTime>, CertError> {
    let first = split_der(der)?;
    let first = first.first().ok_or_else(|| enc("no CRL"))?;
    let crl: CertificateList = CertificateList::from_der(first).map_err(enc)?;
    Ok(crl.tbs_cert_list.next_update.map(|t| t.to_system_time()))
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (seconds; the DER time type's own rendering).
fn humantime_utc(t: SystemTime) -> String {
    Time::try_from(t).map_or_else(|_| format!("{t:?}"), |t| t.to_date_time().to_string())
}

/// The shortest validity (nextUpdate − thisUpdate) [`crl`] signs, in hours. Past its
/// nextUpdate a CRL denies every certificate of its CA (the policy's `StaleCrl`: a bank that
/// stops publishing cannot keep revoked certificates alive), so a CRL must outlive the time a
/// renewal takes to be signed and published; six hours is also what `vpbox ca crl`'s default
/// renewal margin assumes.
pub const CRL_HOURS_MIN: u32 = 6;

/// Checks that the CRL `der` (the first DER object of a CRL and its issuer's chain) stays in
/// date for `margin` after `now`: what `vpbox cert publish-crl` checks before it publishes.
/// A CRL without nextUpdate is refused too: no monitoring could warn of it, and its CA's
/// revocations would never be required to be renewed.
pub fn crl_fresh_for(der: &[u8], now: SystemTime, margin: Duration) -> Result<(), CertError> {
    let Some(next) = crl_next_update(der)? else {
        return Err(CertError::CrlStale(
            "the CRL has no nextUpdate: it could never be told out of date; sign a new one \
             (`vpbox ca crl`)"
                .into(),
        ));
    };
    let when = humantime_utc(next);
    if next <= now {
        return Err(CertError::CrlStale(format!(
            "the CRL's nextUpdate, {when}, is past: published, it would refuse every \
             certificate of its CA at once; sign a new one (`vpbox ca crl`)"
        )));
    }
    if next <= now + margin {
        return Err(CertError::CrlStale(format!(
            "the CRL's nextUpdate, {when}, is less than {} min away: published, it would \
             refuse every certificate of its CA by then; sign a new one (`vpbox ca crl`)",
            margin.as_secs() / 60
        )));
    }
    Ok(())
}

fn enc<E: std::fmt::Display>(e: E) -> CertError {
    CertError::Encoding(e.to_string())
}

/// What monitoring needs of an end-entity certificate: its bank (O), profile (OU) and notAfter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSummary {
    /// Its subject's O.
    pub bank: String,
    /// Its subject's OU (`posp`, `admin`, `vp-node`, …).
    pub profile: String,
    /// Its subject's CN.
    pub name: String,
    /// Its notAfter.
    pub not_after: SystemTime,
}

/// The [`LeafSummary`] of the first certificate of `chain` (DER). Nothing is verified.
pub fn leaf_summary(chain: &[u8]) -> Result<LeafSummary, CertError> {
    let leaf = split_der(chain)?.first().copied().ok_or_else(|| enc("no certificate"))?;
    let cert = Certificate::from_der(leaf).map_err(enc)?;
    let tbs = cert.tbs_certificate();
    Ok(LeafSummary {
        bank: name_attr(tbs.subject(), O).unwrap_or_default(),
        profile: name_attr(tbs.subject(), OU).unwrap_or_default(),
        name: name_attr(tbs.subject(), CN).unwrap_or_default(),
        not_after: tbs.validity().not_after.to_system_time(),
    })
}

/// The value of the first attribute `oid` in `name`.
pub fn name_attr(name: &Name, oid: ObjectIdentifier) -> Option<String> {
    name.iter().find(|a| a.oid == oid).and_then(|a| {
        let der = a.value.to_der().ok()?;
        // Directory strings: UTF8String, PrintableString, IA5String — the content after the
        // tag and (short) length.
        let (tag, rest) = der.split_first()?;
        let (len, content) = rest.split_first()?;
        (matches!(tag, 0x0c | 0x13 | 0x16) && usize::from(*len) == content.len())
            .then(|| String::from_utf8_lossy(content).into_owned())
    })
}

struct Issuance {
    profile: CertProfile,
    subject: Name,
    issuer: Name,
    dns_names: Vec<String>,
}

impl BuilderProfile for Issuance {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> Result<Vec<Extension>, x509_cert::builder::Error> {
        let subject = tbs.subject();
        let mut out = Vec::new();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let (basic, usage) = match self.profile {
            CertProfile::Root => (
                BasicConstraints { ca: true, path_len_constraint: Some(1) },
                KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            ),
            CertProfile::Ca => (
                BasicConstraints { ca: true, path_len_constraint: Some(0) },
                KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            ),
            _ => (
                BasicConstraints { ca: false, path_len_constraint: None },
                KeyUsage(KeyUsages::DigitalSignature.into()),
            ),
        };
        out.push(basic.to_extension(subject, &out)?);
        out.push(usage.to_extension(subject, &out)?);
        out.push(ski.to_extension(subject, &out)?);
        if self.profile != CertProfile::Root {
            let issuer_ski = SubjectKeyIdentifier::try_from(issuer_spk)?;
            let aki =
                AuthorityKeyIdentifier { key_identifier: Some(issuer_ski.0), ..Default::default() };
            out.push(aki.to_extension(subject, &out)?);
        }
        let eku = match self.profile {
            CertProfile::VpNode => Some(vec![ID_KP_SERVER_AUTH, ID_KP_CLIENT_AUTH]),
            CertProfile::Posp | CertProfile::Admin => Some(vec![ID_KP_CLIENT_AUTH]),
            CertProfile::Root | CertProfile::Ca => None,
        };
        if let Some(eku) = eku {
            out.push(ExtendedKeyUsage(eku).to_extension(subject, &out)?);
        }
        if !self.dns_names.is_empty() {
            let names = self
                .dns_names
                .iter()
                .map(|d| Ok(GeneralName::DnsName(x509_cert::der::asn1::Ia5String::new(d)?)))
                .collect::<x509_cert::der::Result<Vec<_>>>()?;
            out.push(SubjectAltName(names).to_extension(subject, &out)?);
        }
        Ok(out)
    }
}

fn validity(now: SystemTime, days: u32) -> Result<Validity, CertError> {
    // Backdated five minutes for clock skew between banks.
    let start = now.checked_sub(Duration::from_secs(300)).unwrap_or(now);
    let end = now + Duration::from_secs(u64::from(days) * 86_400);
    Ok(Validity::new(Time::try_from(start).map_err(enc)?, Time::try_from(end).map_err(enc)?))
}

/// A 16-byte positive serial from fresh randomness.
pub fn random_serial(random: [u8; 16]) -> Result<SerialNumber, CertError> {
    let mut bytes = random;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::new(&bytes).map_err(enc)
}

/// A self-signed root for `bank`, signed by `signer` (the CA key, in the HSM in production).
pub fn self_signed_root(
    signer: &dyn Signer,
    bank: &str,
    country: &str,
    serial: SerialNumber,
    now: SystemTime,
    days: u32,
) -> Result<String, CertError> {
    let subject =
        Name::from_str(&format!("CN={bank} Root CA,OU=root,O={bank},C={country}")).map_err(enc)?;
    let spki =
        SubjectPublicKeyInfoOwned::from_der(&signer.public_key().to_spki_der()).map_err(enc)?;
    let profile = Issuance {
        profile: CertProfile::Root,
        subject: subject.clone(),
        issuer: subject,
        dns_names: vec![],
    };
    let builder =
        CertificateBuilder::new(profile, serial, validity(now, days)?, spki).map_err(enc)?;
    let cert =
        builder.build::<_, crate::sign::DerSignature>(&X509Signer::new(signer)).map_err(enc)?;
    cert.to_pem(LineEnding::LF).map_err(enc)
}

/// Checks a PEM request: its signature, its SM2 key, and that its subject fits `profile` for
/// `bank` (O = the bank, OU = the profile, a CN). Returns the request.
pub fn check_request(pem: &str, profile: CertProfile, bank: &str) -> Result<CertReq, CertError> {
    let req = CertReq::from_pem(pem.as_bytes()).map_err(enc)?;
    let spki_der = req.info.public_key.to_der().map_err(enc)?;
    let public =
        PublicKey::from_spki_der(&spki_der).map_err(|e| CertError::NotSm2(e.to_string()))?;
    let tbs = req.info.to_der().map_err(enc)?;
    if !verify_x509(&public, &tbs, &req.signature).is_valid()
        || req.algorithm.oid != crate::SM2_WITH_SM3
    {
        return Err(CertError::BadRequestSignature);
    }
    let subject = req.info.subject.to_string();
    let bad =
        |why: String| CertError::Subject { subject: subject.clone(), profile: profile.name(), why };
    match name_attr(&req.info.subject, CN) {
        Some(cn) if !cn.is_empty() => {}
        _ => return Err(bad("no CN".into())),
    }
    if name_attr(&req.info.subject, O).as_deref() != Some(bank) {
        return Err(bad(format!("O must be the issuing bank {bank:?}")));
    }
    if name_attr(&req.info.subject, OU).as_deref() != Some(profile.name()) {
        return Err(bad(format!("OU must be {:?}", profile.name())));
    }
    Ok(req)
}

/// The terms of one certificate.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Its profile.
    pub profile: CertProfile,
    /// Its serial.
    pub serial: SerialNumber,
    /// The issuing time (an input: the core reads no clock).
    pub now: SystemTime,
    /// Days of validity.
    pub days: u32,
    /// DNS names for the subject alternative name.
    pub dns_names: Vec<String>,
}

/// Issues a certificate for a checked request.
pub fn issue(
    ca: &dyn Signer,
    ca_cert_pem: &str,
    req: &CertReq,
    grant: Grant,
) -> Result<String, CertError> {
    let ca_cert = Certificate::from_pem(ca_cert_pem.as_bytes()).map_err(enc)?;
    let issuance = Issuance {
        profile: grant.profile,
        subject: req.info.subject.clone(),
        issuer: ca_cert.tbs_certificate().subject().clone(),
        dns_names: grant.dns_names,
    };
    let builder = CertificateBuilder::new(
        issuance,
        grant.serial,
        validity(grant.now, grant.days)?,
        req.info.public_key.clone(),
    )
    .map_err(enc)?;
    let cert = builder.build::<_, crate::sign::DerSignature>(&X509Signer::new(ca)).map_err(enc)?;
    cert.to_pem(LineEnding::LF).map_err(enc)
}

/// A revoked certificate for a CRL.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// Its serial, big-endian bytes.
    pub serial: Vec<u8>,
    /// When it was revoked.
    pub at: SystemTime,
}

/// A CRL of `revoked`, valid until `now + next_update_hours`, signed by the CA.
pub fn crl(
    ca: &dyn Signer,
    ca_cert_pem: &str,
    number: u64,
    revoked: &[Revocation],
    now: SystemTime,
    next_update_hours: u32,
) -> Result<String, CertError> {
    if next_update_hours < CRL_HOURS_MIN {
        return Err(CertError::CrlTooShort { hours: next_update_hours });
    }
    let ca_cert = Certificate::from_pem(ca_cert_pem.as_bytes()).map_err(enc)?;
    let this_update = Time::try_from(now).map_err(enc)?;
    let next = Time::try_from(now + Duration::from_secs(u64::from(next_update_hours) * 3600))
        .map_err(enc)?;
    let number = CrlNumber(x509_cert::der::asn1::Uint::new(&number.to_be_bytes()).map_err(enc)?);
    let mut builder =
        CrlBuilder::new_with_this_update(&ca_cert, number, this_update).map_err(enc)?;
    builder = builder.with_next_update(Some(next));
    let certs = revoked
        .iter()
        .map(|r| {
            Ok(RevokedCert {
                serial_number: SerialNumber::new(&r.serial).map_err(enc)?,
                revocation_date: Time::try_from(r.at).map_err(enc)?,
                crl_entry_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, CertError>>()?;
    builder = builder.with_certificates(certs.into_iter());
    let list: CertificateList =
        builder.build::<_, crate::sign::DerSignature>(&X509Signer::new(ca)).map_err(enc)?;
    list.to_pem(LineEnding::LF).map_err(enc)
}

/// Most certificates in one chain (leaf, issuing CAs and a root).
pub const CHAIN_MAX: usize = 5;

/// Splits concatenated DER structures — a chain `leaf ‖ issuing CA ‖ …`, or a CRL followed by
/// its issuer's chain — into its parts, without decoding them. Bounded: at most [`CHAIN_MAX`]
/// parts, each a SEQUENCE whose length fits the input.
pub fn split_der(mut bytes: &[u8]) -> Result<Vec<&[u8]>, CertError> {
    let mut parts = Vec::new();
    while !bytes.is_empty() {
        if parts.len() == CHAIN_MAX {
            return Err(CertError::Encoding(format!("more than {CHAIN_MAX} DER structures")));
        }
        let len = der_len(bytes)
            .ok_or_else(|| CertError::Encoding("not a sequence of DER structures".into()))?;
        let (one, rest) = bytes.split_at(len);
        parts.push(one);
        bytes = rest;
    }
    if parts.is_empty() {
        return Err(CertError::Encoding("empty".into()));
    }
    Ok(parts)
}

/// The length of the DER SEQUENCE at the start of `b`, header included, if it fits in `b`.
fn der_len(b: &[u8]) -> Option<usize> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)), 2 + n)
    };
    let total = header.checked_add(len)?;
    (total <= b.len()).then_some(total)
}

/// The SM2 public key a certificate (DER) certifies; of a chain, the first certificate's.
pub fn certificate_key(der: &[u8]) -> Result<PublicKey, CertError> {
    let leaf = split_der(der)?[0];
    let cert = Certificate::from_der(leaf).map_err(enc)?;
    let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(enc)?;
    PublicKey::from_spki_der(&spki).map_err(|e| CertError::NotSm2(e.to_string()))
}

/// Whether `issuer`'s key signed `cert` (SM2, default ID). Chain and policy checks are the
/// admission policy's job; this is the signature alone.
pub fn verify_certificate(cert: &Certificate, issuer: &Certificate) -> vpbox_sm::Verification {
    let check = || -> Option<vpbox_sm::Verification> {
        let issuer_key = PublicKey::from_spki_der(
            &issuer.tbs_certificate().subject_public_key_info().to_der().ok()?,
        )
        .ok()?;
        let tbs = cert.tbs_certificate().to_der().ok()?;
        (cert.signature_algorithm().oid == crate::SM2_WITH_SM3)
            .then(|| verify_x509(&issuer_key, &tbs, cert.signature()))
    };
    check().unwrap_or(vpbox_sm::Verification::Invalid)
}

/// Whether `issuer`'s key signed `crl` (SM2, default ID). OpenSSL 3.0 cannot check this for SM2
/// CRLs signed with the standard ID (docs/reference/sm-tls-x509.md); vpbox does.
pub fn verify_crl(crl: &CertificateList, issuer: &Certificate) -> vpbox_sm::Verification {
    let check = || -> Option<vpbox_sm::Verification> {
        let issuer_key = PublicKey::from_spki_der(
            &issuer.tbs_certificate().subject_public_key_info().to_der().ok()?,
        )
        .ok()?;
        let tbs = crl.tbs_cert_list.to_der().ok()?;
        (crl.signature_algorithm.oid == crate::SM2_WITH_SM3)
            .then(|| verify_x509(&issuer_key, &tbs, &crl.signature))
    };
    check().unwrap_or(vpbox_sm::Verification::Invalid)
}
