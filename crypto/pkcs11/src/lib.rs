//! SM2 signing inside PKCS#11 HSMs through vendor profiles, with software verification of every
//! signature.
//!
//! PKCS#11 defines no SM2 mechanism; each vendor has its own codes ([`Profile`], chosen from
//! the token's manufacturer ID). Keys are generated inside the token with a locked template
//! ([`keys`]), found by `CKA_ID`, and audited at start: a key that is not LOCAL,
//! ALWAYS_SENSITIVE and NEVER_EXTRACTABLE, or whose public point is not the pinned one, is
//! refused. [`Pkcs11Signer`] computes `e = SM3(Z ‖ M)` itself, asks the token for a raw SM2
//! signature, and verifies it in software before returning it. It reconnects and retries once
//! on session, handle and device errors, and never retries a PIN error (a retry loop would lock
//! the token).
//!
//! Tokens are found by label or serial, never by slot number (slot numbers change when a token
//! is re-initialised).

mod error;
pub mod keys;
mod pin;
mod profile;
mod signer;
mod token;

pub use error::Error;
pub use pin::Pin;
pub use profile::{Profile, SignatureEncoding};
pub use signer::{Pkcs11Signer, SignerConfig};
pub use token::{Module, OpenToken, TEST_TOKEN_CONF, TokenSelector, TokenSummary};
