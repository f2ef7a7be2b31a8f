//! SM2 signatures, SM3 hashes and SM4 encryption for vpbox, in the encodings OpenSSL 3 reads and
//! writes.
//!
//! The crate is the software half of the product's "national crypto": verification everywhere,
//! signing for client tools and tests only (production keys live in the HSM and are reached
//! through the [`Signer`] trait). It has no I/O beyond the operating system's random source.
//!
//! - [`sm3`]: one-shot and streaming SM3 (GB/T 32905).
//! - [`sm2`]: keys, signatures and the `Z`/`e` pre-hash of GB/T 32918.2, PKCS#8 / SPKI / DER.
//! - [`sm4`]: SM4-CBC (PKCS#7 padding) and SM4-GCM (12-byte nonce, 16-byte tag) for data at rest.
//! - [`signer`]: the [`Signer`] trait, signing domains and [`Verification`].
//!
//! ```
//! use vpbox_sm::{sm2::SecretKey, signer::{Domain, Signer, SoftwareSigner, Verification}};
//!
//! let signer = SoftwareSigner::new(SecretKey::generate()?);
//! let sig = signer.sign(Domain::TX, b"anchor 0x00..")?;
//! assert_eq!(signer.public_key().verify_in(Domain::TX, b"anchor 0x00..", &sig), Verification::Valid);
//! // A signature made for one purpose never passes as another.
//! assert_eq!(signer.public_key().verify_in(Domain::CONSENSUS, b"anchor 0x00..", &sig),
//!            Verification::Invalid);
//! # Ok::<(), vpbox_sm::Error>(())
//! ```

mod curve;
mod error;
pub mod signer;
pub mod sm2;
pub mod sm3;
pub mod sm4;

pub use error::Error;
pub use signer::{Domain, Signer, SoftwareSigner, Verification};
pub use sm3::Digest;

/// Valid signatures a key shows before verification builds its comb table: the fast
/// verifier's differential tests ask more times than this, so the table path runs.
#[doc(hidden)]
pub const VERIFY_TABLE_AFTER: u32 = curve::BUILD_AFTER;
