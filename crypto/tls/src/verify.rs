//! Peer verification by the consortium's admission policy, not by WebPKI (which knows no SM2).
//!
//! A peer is accepted when (a) [`TrustStore::admit`] admits its end-entity certificate in the
//! configured role at the handshake's time — root, SM2 signature, validity, profile, bank, CRL;
//! (b) its CertificateVerify is a valid sm2sig_sm3 signature with the TLS 1.3 ID under the
//! certificate's key; and (c) for a server, the name the client dialled is one of the
//! certificate's DNS SANs. vpbox roots issue leaves directly, so any further certificates the
//! peer sends are ignored.

use core::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, PeerMisbehaved,
};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::{Decision, Identity, TrustStore};
use vpbox_sm::sm2::{PublicKey, Signature};
use x509_cert::certificate::Certificate;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::error::Denied;
use crate::sign::{SM2SIG_SM3, tls13_digest, tls13_z};

/// The admission policy for one kind of peer: the shared trust store (roots and CRLs, updated
/// in place when a bank publishes a new CRL) and the role the peer must hold (or, for
/// [`Admission::any_of`], one of several).
#[derive(Clone)]
pub struct Admission {
    trust: Arc<RwLock<TrustStore>>,
    role: CertProfile,
    /// Further roles a peer may hold instead of `role`.
    also: Vec<CertProfile>,
}

impl Admission {
    /// Peers must be admitted by `trust` in `role` (`VpNode` for nodes, `Posp` for POSP
    /// clients).
    pub fn new(trust: Arc<RwLock<TrustStore>>, role: CertProfile) -> Self {
        Self { trust, role, also: Vec::new() }
    }

    /// Peers must be admitted by `trust` in `role` or one of `also` (the API's clients: a
    /// POSP or an admin). A refusal names `role` and the first role's reason.
    pub fn any_of(trust: Arc<RwLock<TrustStore>>, role: CertProfile, also: &[CertProfile]) -> Self {
        Self { trust, role, also: also.to_vec() }
    }

    /// The role peers must hold.
    pub fn role(&self) -> CertProfile {
        self.role
    }

    /// Admits `der` (issued by a root directly) at `now`, or says why not.
    pub fn admit(&self, der: &[u8], now: SystemTime) -> Result<Identity, Error> {
        self.admit_chain(der, &[], now)
    }

    /// Admits again the certificates a connection's peer presented, at `now`. rustls runs the
    /// verifiers in full handshakes only: a resumed session carries the certificates admitted
    /// when it was made, so a host calls this on every resumed connection (or simply on every
    /// connection: repeated signature checks are remembered) to apply the CRLs published since.
    pub fn admit_peer(
        &self,
        conn: &rustls::CommonState,
        now: SystemTime,
    ) -> Result<Identity, Error> {
        self.admit_certificates(conn.peer_certificates().unwrap_or_default(), now)
    }

    /// Admits a peer's certificates as TLS carries them (end entity first, then its issuing
    /// CAs), at `now`.
    pub fn admit_certificates(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<Identity, Error> {
        let (leaf, cas) = chain.split_first().ok_or(Error::NoCertificatesPresented)?;
        self.admit_chain(leaf.as_ref(), cas, now)
    }

    /// Admits the end-entity certificate `der`, issued under the issuing CAs `intermediates`
    /// that the peer sent, at `now`.
    pub fn admit_chain(
        &self,
        der: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<Identity, Error> {
        let trust =
            self.trust.read().map_err(|_| Error::General("trust store lock poisoned".into()))?;
        let cas: Vec<&[u8]> = intermediates.iter().map(|c| c.as_ref()).collect();
        for role in &self.also {
            if let Decision::Allow(identity) = trust.admit_chain(der, &cas, *role, now) {
                return Ok(identity);
            }
        }
        match trust.admit_chain(der, &cas, self.role, now) {
            Decision::Allow(identity) => Ok(identity),
            Decision::Deny(reason) => Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(Denied { role: self.role, reason })),
            ))),
        }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission").field("role", &self.role).finish_non_exhaustive()
    }
}

fn system_time(now: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs())
}

fn bad_encoding() -> Error {
    Error::InvalidCertificate(CertificateError::BadEncoding)
}

/// Checks a TLS 1.3 CertificateVerify: sm2sig_sm3, DER signature, TLS 1.3 ID, key from `cert`.
fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SM2SIG_SM3 {
        return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    let cert = Certificate::from_der(cert.as_ref()).map_err(|_| bad_encoding())?;
    let spki =
        cert.tbs_certificate().subject_public_key_info().to_der().map_err(|_| bad_encoding())?;
    let key = PublicKey::from_spki_der(&spki)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?;
    let sig = Signature::from_der(dss.signature())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadSignature))?;
    let e = tls13_digest(&tls13_z(&key)?, message);
    if key.verify_digest(&e, &sig).is_valid() {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(Error::InvalidCertificate(CertificateError::BadSignature))
    }
}

/// Whether `name` is one of the certificate's DNS SANs (exact, ASCII case-insensitive; vpbox
/// issues no wildcards). IP addresses are not accepted: nodes are dialled by name.
fn check_server_name(der: &[u8], name: &ServerName<'_>) -> Result<(), Error> {
    let ServerName::DnsName(dns) = name else {
        return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
    };
    let wanted = dns.as_ref().trim_end_matches('.');
    let cert = Certificate::from_der(der).map_err(|_| bad_encoding())?;
    let san = match cert.tbs_certificate().get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => san,
        Ok(None) => return Err(Error::InvalidCertificate(CertificateError::NotValidForName)),
        Err(_) => return Err(bad_encoding()),
    };
    let found = san.0.iter().any(|g| match g {
        GeneralName::DnsName(d) => d.as_str().eq_ignore_ascii_case(wanted),
        _ => false,
    });
    if found { Ok(()) } else { Err(Error::InvalidCertificate(CertificateError::NotValidForName)) }
}

/// A client's view of servers: admitted in the configured role, named as dialled, proving
/// possession of the key with sm2sig_sm3.
#[derive(Debug)]
pub struct ServerVerifier {
    admission: Admission,
}

impl ServerVerifier {
    /// Servers must pass `admission` (normally `CertProfile::VpNode`).
    pub fn new(admission: Admission) -> Self {
        Self { admission }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.admission.admit_chain(end_entity.as_ref(), intermediates, system_time(now))?;
        check_server_name(end_entity.as_ref(), server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Configurations made here enable TLS 1.3 only.
        Err(Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![SM2SIG_SM3]
    }
}

/// A server's view of clients: a certificate is mandatory, admitted in the configured role,
/// with possession of the key proven by sm2sig_sm3.
#[derive(Debug)]
pub struct ClientVerifier {
    admission: Admission,
}

impl ClientVerifier {
    /// Clients must pass `admission` (`CertProfile::VpNode` for peers, `Posp` for POSPs).
    pub fn new(admission: Admission) -> Self {
        Self { admission }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Each client holds one certificate; naming the roots would only advertise the members.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.admission.admit_chain(end_entity.as_ref(), intermediates, system_time(now))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![SM2SIG_SM3]
    }
}
