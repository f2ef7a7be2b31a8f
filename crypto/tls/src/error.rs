//! Errors of this crate, and the admission refusal that verifiers hand to rustls.

use vpbox_ca::CertProfile;
use vpbox_ca::policy::DenyReason;

/// Everything that can go wrong while building a TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// No certificate was given.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// The end-entity certificate does not decode.
    #[error("the end-entity certificate does not decode: {0}")]
    Certificate(String),
    /// The certificate's key is not the signer's key.
    #[error("the certificate's public key is not the signer's public key")]
    KeyMismatch,
}

/// A peer's certificate refused by the admission policy. Verifiers return it inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`, so the host can log the
/// reason (`downcast_ref::<Denied>()`); the peer sees only a `bad_certificate` alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate denied for role {}: {reason}", role.name())]
pub struct Denied {
    /// The role the peer had to hold.
    pub role: CertProfile,
    /// Why the policy said no.
    pub reason: DenyReason,
}
