//! TLS 1.3 with the SM suites for vpbox: a rustls CryptoProvider (RFC 8998), SM2 signing
//! through any HSM, and certificate verification by the consortium's admission policy.
//!
//! # Profiles
//! Both profiles are TLS 1.3 only, mutually authenticated, with SM2 certificates (issued by
//! `vpbox-ca`) and sm2sig_sm3 CertificateVerify signatures. They differ in what protects the
//! bytes:
//!
//! | [`Profile`] | cipher suite | key exchange | when |
//! |---|---|---|---|
//! | [`Profile::Sm`] | TLS_SM4_GCM_SM3 (0x00C6) | curveSM2 (0x0029) | links that must be national crypto end to end: POSP → node, anything crossing to another bank |
//! | [`Profile::Hybrid`] | TLS_AES_128_GCM_SHA256 (+AES-256, ChaCha20) | X25519 | internal links where only the identities must be SM2 and throughput matters |
//!
//! SM4-GCM runs in software at a few tens of MiB/s; AES-GCM (ring, AES-NI) at hundreds. Both ends
//! must pick the same profile: an SM client and a hybrid server share no cipher suite.
//!
//! # Where the HSM plugs in
//! Our key is a [`sign::TlsKey`]: any [`vpbox_sm::Signer`] in this process ([`sign::LocalKey`]:
//! a PKCS#11 token through `vpbox-pkcs11`, a [`vpbox_sm::SoftwareSigner`] in tests), which
//! computes `e = SM3(Z ‖ M)` with the TLS 1.3 ID `TLSv1.3+GM+Cipher+Suite` (RFC 8998 §3.2.1)
//! and signs it; or the box's signer service ([`sign::SignerServiceKey`]), which receives the
//! CertificateVerify content `M` itself in its TLS domain, checks its form and the caller's
//! user, and signs it there. The proxy uses the latter, so it holds no key and no PIN.
//!
//! # Peers
//! [`verify::ServerVerifier`] and [`verify::ClientVerifier`] accept a peer only if
//! `vpbox_ca::policy::TrustStore::admit` admits its certificate in the configured role at the
//! handshake's time, its CertificateVerify verifies with SM2/SM3 and the TLS ID, and (servers)
//! the dialled name is one of its DNS SANs. A refusal carries an [`error::Denied`] with the
//! policy's reason. WebPKI is never used: it does not know SM2.
//!
//! ```no_run
//! # use std::sync::{Arc, RwLock};
//! # use vpbox_ca::{CertProfile, policy::TrustStore};
//! # use vpbox_tls::{Admission, Credentials, Profile, server_config};
//! # fn f(chain: Vec<rustls::pki_types::CertificateDer<'static>>,
//! #      hsm: Arc<dyn vpbox_sm::Signer>, trust: TrustStore) -> Result<(), vpbox_tls::Error> {
//! let trust = Arc::new(RwLock::new(trust)); // roots and CRLs; CRLs are replaced in place
//! let ours = Credentials::new(chain, hsm)?;
//! let posp = server_config(Profile::Sm, &ours, Admission::new(trust, CertProfile::Posp))?;
//! # Ok(()) }
//! ```
//!
//! Limitations: rustls does not verify a resumed session again: the host re-admits its peer
//! with [`Admission::admit_peer`] (chain included); the refusal reason reaches the peer only as
//! `bad_certificate`; no QUIC, no TLS 1.2, no kTLS with the SM suite.

mod config;
pub mod error;
pub mod kx;
pub mod sign;
pub mod suite;
pub mod verify;

pub use config::{Credentials, Profile, client_config, server_config};
pub use error::{Denied, Error};
pub use verify::Admission;
