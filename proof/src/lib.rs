//! Proofs an outsider can check: a dispute platform, an auditor or a court checks that a slip
//! was anchored, when and by whom, with nothing but the consortium's genesis hash (or its
//! founding roots) — no node, no trust in the bank that shows the proof.
//!
//! - [`genesis`]: the consortium's founding file, whose SM3 hash is the chain's identity.
//! - [`epochs`]: which members certify which block, as node changes move the membership.
//! - [`bundle`]: the proof bundle, one self-contained file in a canonical binary encoding
//!   (`docs/proof-format.md` describes every byte).
//! - [`verify`]: the verifier: every step of `docs/proof-format.md`, failing closed with the
//!   exact reason.

pub mod build;
pub mod bundle;
pub mod epochs;
pub mod genesis;
pub mod verify;
