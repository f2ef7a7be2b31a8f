//! The signer service: the only holder of the HSM session and PIN, serving SM2 signatures over
//! a Unix socket behind a persisted double-sign guard.
//!
//! - [`guard`]: the per-key double-sign guard over decoded consensus payloads, persisted before
//!   answering.
//! - [`Service`]: request handling over any [`vpbox_sm::Signer`] (the PKCS#11 signer in
//!   production); [`serve`] runs it on a Unix socket, checking each caller's UID with
//!   `SO_PEERCRED` and writing an audit line per operation.
//! - [`audit`]: the audit log on disk, rotated into a chain of files that [`audit::verify`]
//!   checks; never deleted by the signer.
//! - The protocol and the client live in `vpbox-signer-client`, re-exported here.

pub mod audit;
mod config;
pub mod guard;
mod service;

pub use config::{Config, KeyConfig};
pub use service::{Service, ServiceError, ServiceKey, serve, serve_beating};
pub use vpbox_signer_client::{Client, ClientError, link, protocol, tls13};

#[doc(hidden)]
pub mod test_support;
