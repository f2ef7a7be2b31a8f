//! A deterministic simulator that runs vpbox consensus engines under seeded faults and checks their invariants.
//!
//! Everything that varies — message delays, loss, duplication, partitions, crashes, torn WAL
//! writes, Byzantine behaviour, client load — derives from one seed, so any failure replays
//! exactly with `vpbox-sim --nodes N --seeds S..S+1 --faults …`. After every step the world
//! checks the safety invariants of `pbft.md`; after the heal it checks liveness.
//!
//! Signature verification is real SM2 when [`CryptoKind::Sm2`] is chosen and a keyed-SM3 stub
//! otherwise (the sweep and throughput runs); digests are always real SM3.

pub mod app;
pub mod crypto;
pub mod rng;
pub mod world;

pub use crypto::CryptoKind;
pub use world::{
    Byzantine, CrashOnSend, Faults, Outcome, PLAN_VERSION, SimConfig, World, run_seed, sim_params,
};
