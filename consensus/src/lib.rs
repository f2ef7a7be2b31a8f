//! RBFT consensus (Hyperchain's rules) as a pure state machine: inputs in, effects out.
//!
//! The engine ([`Engine`]) never touches the world: no clock, no randomness, no I/O, no
//! signing key. Messages, transactions, timer expiries, signatures, execution results and the
//! restored WAL arrive as [`Input`]s; everything it wants done leaves as [`Effect`]s that the
//! host carries out *in order* (a [`Effect::Persist`] is durable before any later
//! [`Effect::Send`]). Signatures are checked through the [`Verifier`] trait; the host asks its
//! HSM for them when the engine emits [`Effect::Sign`].
//!
//! - Quorum `Q = ⌈(N + f + 1) / 2⌉`, `f = ⌊(N − 1) / 3⌋` ([`quorum`], [`max_faulty`]).
//! - Normal case: pre-prepare (with the primary's execution result) → prepare → execute and
//!   compare → commit; each committed block carries a [`CommitCertificate`].
//! - Checkpoints every `K`, the `(h, h + L]` window, garbage collection.
//! - View change with signed prepared certificates, new view with the O set and null
//!   requests, timer doubling, joining after `f + 1`; heartbeats; request timers.
//! - Catch-up of a lagging replica: certified committed entries, or a stable checkpoint and
//!   state transfer first.
//! - [`wire`]: the deterministic, versioned, bounded binary encoding.
//!
//! See the root `ARCHITECTURE.md` ("Consensus") for the Input/Effect tables and the message
//! flow.

// House style: no unwrap/expect/panic in the core outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod effect;
mod engine;
mod error;
mod message;
mod types;
pub mod wire;

pub use effect::{Effect, Input, Timer, WalRecord};
pub use engine::{Engine, verify_certificate, verify_prepared};
pub use error::Error;
pub use message::{
    Batch, Checkpoint, CheckpointProof, CommitCertificate, CommittedEntry, Entries, Envelope,
    Message, NewView, Phase, PrePrepare, PreparedProof, ViewChange, Vote,
};
pub use types::{
    Config, Digest, Member, NodeId, Params, PublicKey, SIGNATURE_MAX_LEN, SeqNo, Signature,
    Verification, Verifier, View, max_faulty, quorum,
};

#[cfg(test)]
mod tests {
    /// The lines of a manifest's `[dependencies]` table.
    fn dependencies(manifest: &str) -> Vec<&str> {
        let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
        deps.lines()
            .take_while(|l| !l.starts_with('['))
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn the_core_depends_on_nothing_that_does_io() {
        // STYLE "Sans-IO cores": no tokio, clock, RNG or I/O in the dependency tree. The only
        // normal dependencies are `thiserror` (a proc macro) and `vpbox-wire` (the bounded
        // cursor; std only, itself without dependencies); `cargo tree -p vpbox-consensus -e
        // normal -i tokio` must fail.
        let deps = dependencies(include_str!("../Cargo.toml"));
        assert_eq!(deps, ["thiserror.workspace = true", "vpbox-wire.workspace = true"]);
        assert!(dependencies(include_str!("../../wire/Cargo.toml")).is_empty());
    }
}
