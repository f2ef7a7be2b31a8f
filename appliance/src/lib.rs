//! The vpbox binary: the operators' CLI today, and the node, signer and proxy services as they
//! land.
//!
//! `main.rs` is a thin shell over [`cli::main`], so tests drive the same code paths. Commands
//! follow coreutils and OpenSSL conventions: results on stdout, diagnostics on stderr, exit
//! status 0 (ok), 1 (checked and invalid) or 2 (usage or I/O error).

mod anchor_cmd;
mod bench_cmd;
mod bench_growth;
mod bench_proxy;
mod bench_rpc;
mod ca_cmd;
pub mod cli;
mod client_cmd;
mod cluster_cmd;
mod day_end;
mod exit;
mod files;
mod firewall_cmd;
mod gov_cmd;
mod harden;
mod hsm_cmd;
mod https;
mod netns;
mod process;
mod proof_cmd;
mod signer_cmd;
mod sm2_cmd;
mod sm3_cmd;
mod stamp;
mod supervise;

pub use exit::Outcome;
