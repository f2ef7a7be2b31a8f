//! Client and server configurations: TLS 1.3 only, mutual authentication, one profile.

use core::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ServerConfig};
use vpbox_sm::Signer;
use x509_cert::certificate::Certificate;
use x509_cert::der::{Decode, Encode};

use crate::error::Error;
use crate::sign::{LocalKey, Sm2SigningKey, TlsKey};
use crate::suite::TLS_SM4_GCM_SM3;
use crate::verify::{Admission, ClientVerifier, ServerVerifier};
use crate::{kx, sign};

/// Which algorithms protect the connection. Both authenticate with SM2 certificates and
/// sm2sig_sm3 signatures; they differ in the key exchange and the record protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Profile {
    /// RFC 8998 throughout: TLS_SM4_GCM_SM3 and curveSM2. For links a regulator audits as
    /// "national crypto" end to end (POSP to node, links that cross to another bank).
    Sm,
    /// TLS_AES_128_GCM_SHA256 (then AES-256-GCM, ChaCha20-Poly1305) with X25519 from ring,
    /// SM2 for authentication. ~20× the bulk throughput of SM4-GCM in software; for internal
    /// links where only the identities must be SM2.
    Hybrid,
}

/// Any WebPKI verifier built from these providers refuses everything: SM2 is verified by
/// [`ServerVerifier`] and [`ClientVerifier`], never by webpki.
static NO_WEBPKI: rustls::crypto::WebPkiSupportedAlgorithms =
    rustls::crypto::WebPkiSupportedAlgorithms { all: &[], mapping: &[] };

impl Profile {
    /// The rustls provider for this profile.
    pub fn provider(self) -> CryptoProvider {
        let ring = rustls::crypto::ring::default_provider();
        let (cipher_suites, kx_groups) = match self {
            Self::Sm => (vec![TLS_SM4_GCM_SM3], vec![kx::CURVE_SM2]),
            Self::Hybrid => (
                vec![
                    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
                    rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
                    rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                ],
                vec![rustls::crypto::ring::kx_group::X25519],
            ),
        };
        CryptoProvider {
            cipher_suites,
            kx_groups,
            signature_verification_algorithms: NO_WEBPKI,
            secure_random: ring.secure_random,
            key_provider: &sign::Sm2KeyProvider,
        }
    }
}

/// Our certificate chain (end entity first) and the key that signs our handshakes.
#[derive(Clone)]
pub struct Credentials {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn TlsKey>,
}

impl Credentials {
    /// Pairs `chain` with an SM2 `signer` in this process, refusing a chain whose end-entity
    /// key is not the signer's.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        signer: Arc<dyn Signer>,
    ) -> Result<Self, Error> {
        Self::with_key(chain, Arc::new(LocalKey::new(signer)?))
    }

    /// Pairs `chain` with any [`TlsKey`] (the signer service's, for the proxy), refusing a
    /// chain whose end-entity key is not the key's.
    pub fn with_key(
        chain: Vec<CertificateDer<'static>>,
        key: Arc<dyn TlsKey>,
    ) -> Result<Self, Error> {
        let leaf = chain.first().ok_or(Error::EmptyChain)?;
        let cert =
            Certificate::from_der(leaf.as_ref()).map_err(|e| Error::Certificate(e.to_string()))?;
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| Error::Certificate(e.to_string()))?;
        if spki != key.public_key().to_spki_der() {
            return Err(Error::KeyMismatch);
        }
        Ok(Self { chain, key })
    }

    /// The chain and key as rustls resolves them.
    pub fn resolver(&self) -> Result<Arc<SingleCertAndKey>, Error> {
        let key = Sm2SigningKey::with_key(Arc::clone(&self.key));
        Ok(Arc::new(SingleCertAndKey::from(CertifiedKey::new(self.chain.clone(), Arc::new(key)))))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("certificates", &self.chain.len())
            .field("public_key", self.key.public_key())
            .finish()
    }
}

/// A client configuration: TLS 1.3 in `profile`, presenting `ours`, accepting servers that
/// `servers` admits (normally in `CertProfile::VpNode`) under the name dialled.
pub fn client_config(
    profile: Profile,
    ours: &Credentials,
    servers: Admission,
) -> Result<ClientConfig, Error> {
    Ok(ClientConfig::builder_with_provider(Arc::new(profile.provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerVerifier::new(servers)))
        .with_client_cert_resolver(ours.resolver()?))
}

/// A server configuration: TLS 1.3 in `profile`, presenting `ours`, requiring a client
/// certificate that `clients` admits. Resumption is stateful (rustls's in-memory session
/// cache), so no ticket key exists outside this process.
pub fn server_config(
    profile: Profile,
    ours: &Credentials,
    clients: Admission,
) -> Result<ServerConfig, Error> {
    Ok(ServerConfig::builder_with_provider(Arc::new(profile.provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(ClientVerifier::new(clients)))
        .with_cert_resolver(ours.resolver()?))
}
