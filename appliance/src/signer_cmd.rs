//! `vpbox signer`: the signer service and its operator probes.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::Subcommand;
use vpbox_pkcs11::Pin;
use vpbox_signer::{Client, Config, serve_beating};

use crate::Outcome;

/// `vpbox signer …`
#[derive(Debug, Subcommand)]
pub(crate) enum SignerCommand {
    /// Run the signer service (the systemd unit's ExecStart).
    #[command(after_help = "Example:\n  vpbox signer run --config /etc/vpbox/signer.toml")]
    Run {
        /// The signer's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask a running signer for a health check (a self-test signature with every key) and
    /// the state of a key's double-sign guard: a signer refusing its node's votes says so.
    Ping {
        /// The signer's socket.
        #[arg(long, default_value = "/run/vpbox/signer.sock")]
        socket: PathBuf,
        /// The key whose guard to report.
        #[arg(long, default_value = "consensus")]
        key: String,
    },
    /// Print a key's double-sign guard state and refusals as JSON.
    Guard {
        /// The signer's socket.
        #[arg(long, default_value = "/run/vpbox/signer.sock")]
        socket: PathBuf,
        /// The key's name in the signer's config.
        #[arg(long, default_value = "consensus")]
        key: String,
    },
    /// Print the public key of one of the signer's keys (SPKI PEM).
    Pubkey {
        /// The signer's socket.
        #[arg(long, default_value = "/run/vpbox/signer.sock")]
        socket: PathBuf,
        /// The key's name in the signer's config.
        #[arg(long)]
        key: String,
    },
    /// Check the chain of the signer's audit log: each rotated file named, with its SM3, by
    /// the file after it. Exit 1 naming every file changed, missing or out of order.
    #[command(
        after_help = "Example:\n  vpbox signer audit-verify --dir /var/lib/vpbox-signer/audit"
    )]
    AuditVerify {
        /// The audit log's folder (the config's `audit_dir`; default `state_dir/audit`).
        #[arg(long)]
        dir: PathBuf,
    },
}

pub(crate) fn run(cmd: &SignerCommand) -> Result<Outcome> {
    match cmd {
        SignerCommand::Run { config } => {
            crate::harden::no_core_dumps()?;
            let config = Config::load(config).map_err(anyhow::Error::msg)?;
            let pin = match &config.pin_file {
                Some(p) => Pin::from_file(p)?,
                None => {
                    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").context(
                        "no pin_file in the config and no systemd credentials directory",
                    )?;
                    Pin::from_file(&PathBuf::from(dir).join("hsm-pin"))?
                }
            };
            let service = config.start(&pin).map_err(anyhow::Error::msg)?;
            drop(pin);
            if config.socket.exists() {
                std::fs::remove_file(&config.socket)
                    .with_context(|| format!("removing stale {}", config.socket.display()))?;
            }
            let listener = std::os::unix::net::UnixListener::bind(&config.socket)
                .with_context(|| format!("binding {}", config.socket.display()))?;
            // Group access lets the node's group connect; SO_PEERCRED still checks each UID.
            std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o660))?;
            vpbox_log::info!("serving {} keys on {}", config.keys.len(), config.socket.display());
            crate::supervise::ready(&format!("serving {} keys", config.keys.len()));
            let heartbeat = crate::supervise::Heartbeat::new();
            crate::supervise::watchdog(Arc::clone(&heartbeat), |_| {});
            let shutdown = Arc::new(AtomicBool::new(false));
            serve_beating(Arc::new(service), listener, shutdown, &|| heartbeat.beat())?;
            Ok(Outcome::Ok)
        }
        SignerCommand::Ping { socket, key } => {
            let mut client = Client::connect(socket)?;
            client.health()?;
            println!("signer OK");
            let state: serde_json::Value = serde_json::from_str(&client.guard(key)?)?;
            println!("guard {key}: {}", guard_summary(&state));
            Ok(Outcome::Ok)
        }
        SignerCommand::Guard { socket, key } => {
            println!("{}", Client::connect(socket)?.guard(key)?);
            Ok(Outcome::Ok)
        }
        SignerCommand::Pubkey { socket, key } => {
            let public = Client::connect(socket)?.public_key(key)?;
            print!("{}", public.to_spki_pem());
            Ok(Outcome::Ok)
        }
        SignerCommand::AuditVerify { dir } => match vpbox_signer::audit::verify(dir) {
            Ok(v) => {
                let start = v.follows.map_or(String::new(), |f| {
                    format!("; it starts after {f}, which is archived elsewhere")
                });
                println!(
                    "{}: the chain holds: {} files, {} lines{start}",
                    dir.display(),
                    v.files,
                    v.lines
                );
                Ok(Outcome::Ok)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{}: {e}", dir.display());
                }
                eprintln!("{}: {} break(s) in the chain", dir.display(), errors.len());
                Ok(Outcome::Invalid)
            }
        },
    }
}

/// One line on a guard's state: what it remembers, and whether it refuses the node's messages.
fn guard_summary(state: &serde_json::Value) -> String {
    let r = &state["refused"];
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    let refused = ["conflict", "tooOld", "outOfRange", "wrongSender", "malformed"]
        .iter()
        .map(|k| n(k))
        .sum::<u64>();
    let mut line = format!(
        "{} positions, highest seq {}, highest view {}, {} signed, {} refused",
        state["positions"], state["highSeq"], state["highView"], state["signed"], refused
    );
    if refused > 0 {
        line += &format!(
            " (conflict {}, too old {}, out of range {}, wrong sender {}, malformed {}); \
             REFUSING: last at {}: {}",
            n("conflict"),
            n("tooOld"),
            n("outOfRange"),
            n("wrongSender"),
            n("malformed"),
            state["lastRefusal"]["at"].as_str().unwrap_or("?"),
            state["lastRefusal"]["reason"].as_str().unwrap_or("?"),
        );
    }
    line
}
