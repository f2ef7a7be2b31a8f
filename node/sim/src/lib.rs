//! A deterministic simulator of the real node host: N [`vpbox_node::node::Driver`]s, each on a
//! real RocksDB ledger, with their mempools, WALs, intakes, state transfer and link checks,
//! joined by a seeded network and clock (the seams of [`vpbox_node::host`]).
//!
//! Everything that varies — delays, loss, duplication, partitions, crashes and torn journal
//! tails, the compromised node's attacks, client load — derives from one seed, so any failure
//! replays exactly with `vpbox-node-sim --nodes N --seeds S..S+1`. See [`world`] for what is
//! checked.

pub mod disk;
pub mod keys;
pub mod world;

pub use world::{CHAOS_MS, Faults, LIVENESS_MS, Report, SimConfig, World, run_seed};
