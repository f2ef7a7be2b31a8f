//! Certificates with exactly the extensions a test asks for — a CA without keyCertSign, a leaf
//! without an extended key usage, any path length, a validity to the second — which the CA's
//! own issuance (by profile) never makes. Signed with SM2 through the CA module's signer. They
//! carry only the extensions a spec names (no key identifiers, which the policy does not read),
//! so a test decides exactly which of basicConstraints, keyUsage and extendedKeyUsage exist.

use std::str::FromStr;
use std::time::SystemTime;

use spki::SubjectPublicKeyInfoRef;
use vpbox_ca::sign::{DerSignature, X509Signer};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Signer, SoftwareSigner};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

use crate::serial;

pub(crate) const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
pub(crate) const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// What the certificate says.
#[derive(Clone)]
pub(crate) struct Spec {
    /// RFC 4514 subject, e.g. `CN=x,OU=posp,O=Bank A,C=CN`.
    pub subject: String,
    /// basicConstraints: `None` leaves the extension out; `Some((ca, pathLen))`.
    pub basic: Option<(bool, Option<u8>)>,
    /// keyUsage: `None` leaves the extension out.
    pub usage: Option<KeyUsage>,
    /// extendedKeyUsage: `None` leaves the extension out.
    pub eku: Option<Vec<ObjectIdentifier>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial: u8,
}

impl Spec {
    /// A CA of `bank` with path length `path_len`, keyCertSign and cRLSign.
    pub(crate) fn ca(
        cn: &str,
        bank: &str,
        path_len: Option<u8>,
        from: SystemTime,
        to: SystemTime,
        n: u8,
    ) -> Self {
        Self {
            subject: format!("CN={cn},OU=ca,O={bank},C=CN"),
            basic: Some((true, path_len)),
            usage: Some(KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)),
            eku: None,
            not_before: from,
            not_after: to,
            serial: n,
        }
    }

    /// A POSP client of `bank`: clientAuth.
    pub(crate) fn posp(cn: &str, bank: &str, from: SystemTime, to: SystemTime, n: u8) -> Self {
        Self {
            subject: format!("CN={cn},OU=posp,O={bank},C=CN"),
            basic: Some((false, None)),
            usage: Some(KeyUsage(KeyUsages::DigitalSignature.into())),
            eku: Some(vec![CLIENT_AUTH]),
            not_before: from,
            not_after: to,
            serial: n,
        }
    }
}

/// A key and its certificate (PEM and DER).
pub(crate) struct Made {
    pub key: SoftwareSigner,
    pub pem: String,
    pub der: Vec<u8>,
}

struct Profile {
    subject: Name,
    issuer: Name,
    spec: Spec,
}

impl BuilderProfile for Profile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> Result<Vec<Extension>, x509_cert::builder::Error> {
        let subject = tbs.subject();
        let mut out = Vec::new();
        if let Some((ca, path_len)) = self.spec.basic {
            let bc = BasicConstraints { ca, path_len_constraint: path_len };
            out.push(bc.to_extension(subject, &out)?);
        }
        if let Some(usage) = self.spec.usage {
            out.push(usage.to_extension(subject, &out)?);
        }
        if let Some(eku) = &self.spec.eku {
            out.push(ExtendedKeyUsage(eku.clone()).to_extension(subject, &out)?);
        }
        Ok(out)
    }
}

/// Makes `spec` with a fresh key, signed by `issuer` (key and certificate PEM), or self-signed.
pub(crate) fn make(spec: Spec, issuer: Option<(&SoftwareSigner, &str)>) -> Made {
    make_with(SoftwareSigner::new(SecretKey::generate().unwrap()), spec, issuer)
}

/// As [`make`], for the given key.
pub(crate) fn make_with(
    key: SoftwareSigner,
    spec: Spec,
    issuer: Option<(&SoftwareSigner, &str)>,
) -> Made {
    use x509_cert::der::{DecodePem, EncodePem, pem::LineEnding};
    let subject = Name::from_str(&spec.subject).unwrap();
    let (signer, issuer_name) = match issuer {
        Some((k, pem)) => {
            let c = x509_cert::certificate::Certificate::from_pem(pem.as_bytes()).unwrap();
            (k, c.tbs_certificate().subject().clone())
        }
        None => (&key, subject.clone()),
    };
    let spki = SubjectPublicKeyInfoOwned::from_der(&key.public_key().to_spki_der()).unwrap();
    let validity = Validity::new(
        Time::try_from(spec.not_before).unwrap(),
        Time::try_from(spec.not_after).unwrap(),
    );
    let n = spec.serial;
    let profile = Profile { subject, issuer: issuer_name, spec };
    let builder = CertificateBuilder::new(profile, serial(n), validity, spki).unwrap();
    let cert = builder.build::<_, DerSignature>(&X509Signer::new(signer)).unwrap();
    let pem = cert.to_pem(LineEnding::LF).unwrap();
    let der = cert.to_der().unwrap();
    Made { key, pem, der }
}
