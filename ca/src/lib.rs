//! X.509 for the consortium: SM2-signed certification requests, certificates and CRLs by
//! profile, PEM chains, and the admission policy.
//!
//! Every X.509 signature here is a plain SM2 signature (signer ID `1234567812345678`, no vpbox
//! domain framing) over the DER of the signed structure, DER-encoded as `SEQUENCE {r, s}`:
//! OpenSSL rejects raw `r ‖ s` (docs/reference/sm-tls-x509.md). Signing goes through
//! [`vpbox_sm::Signer::sign_digest`], so the key may live in an HSM.

pub mod cert;
mod csr;
pub mod pem;
pub mod policy;
pub mod sign;

pub use cert::{CertError, CertProfile};
pub use csr::{CsrError, SM2_WITH_SM3, build_csr};
