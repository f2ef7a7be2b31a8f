//! A PKCS#11 test token with Sansec-style SM2/SM3 mechanisms and fault injection, loaded by path
//! like a vendor HSM module.
//!
//! Production HSMs expose SM2 only through vendor-defined mechanisms; SoftHSM2 has none. This
//! `cdylib` implements the Sansec profile of `docs/reference/pkcs11-sm.md` so that the
//! signer can be built and tested against the codes, attributes and failure modes of a real
//! token: `CKK_SM2`, key-pair generation, raw and SM3-with-SM2 signatures (raw `r‖s` and DER),
//! SM3 digests, persistent objects sealed with SM4-GCM under a PIN-derived key, PIN lockout,
//! and injected resets, latency and device errors.
//!
//! - [`config`]: the TOML file named by `VPBOX_TEST_TOKEN_CONF`.
//! - [`token`]: the safe core, a state machine with ordinary unit tests.
//! - `ffi`: the C ABI (`C_GetFunctionList`), the only module with `unsafe` code.
//!
//! The profile a signer needs: manufacturer ID `vpbox-sansec-compatible`, model `TESTTOKEN`;
//! `CKA_EC_POINT` is readable on the private key as well as the public key; signatures are raw
//! 64-byte `r‖s` except for [`mechanism::CKM_SM3_SM2_DER`].

// A module that panics inside a host process is worse than one that fails a call; the FFI
// boundary also catches panics, but the code should not rely on it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod error;
mod ffi;
mod kdf;
pub mod mechanism;
pub mod object;
pub mod store;
pub mod token;

pub use config::Config;
pub use error::Error;
pub use ffi::C_GetFunctionList;
pub use token::Module;
