//! The signer's wire protocol and its client: what the node and the CLI link to reach the
//! signer, without linking PKCS#11.
//!
//! - [`protocol`]: the framed binary protocol (sans-IO, bounded, never panics).
//! - [`Client`]: a blocking client over the signer's Unix socket.
//! - [`link`]: the peer-link proof a node's consensus key signs in the link domain.
//! - [`tls13`]: the TLS domain: CertificateVerify contents the proxy's handshakes sign.

mod client;
pub mod link;
pub mod protocol;
pub mod tls13;

pub use client::{Client, ClientError};
