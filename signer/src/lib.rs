//! The signer service: the only holder of the HSM session and PIN, serving SM2 signatures over
//! a Unix socket behind a persisted double-sign guard.
//!
//! - [`protocol`]: the framed binary protocol (sans-IO, bounded, never panics).
//! - [`guard`]: the per-key, per-domain double-sign guard, persisted before answering.
//! - [`Service`]: request handling over any [`vpbox_sm::Signer`] (the PKCS#11 signer in
//!   production); [`serve`] runs it on a Unix socket, checking each caller's UID with
//!   `SO_PEERCRED` and writing an audit line per operation.
//! - [`Client`]: what the node (and `vpbox signer ping`) use.

mod client;
mod config;
pub mod guard;
pub mod protocol;
mod service;

pub use client::{Client, ClientError};
pub use config::{Config, KeyConfig};
pub use service::{Service, ServiceError, serve};
