//! `vpbox firewall render|check|apply`: the box's nftables ruleset from its `box.toml`
//! (`vpbox_firewall` renders it; this shell reads the file and runs `nft`).
//!
//! - `render` prints the ruleset (or writes it with `--out`), or every reason the
//!   configuration is refused; exit 1 then.
//! - `check` renders it and has `nft -c` judge it: nothing is changed.
//! - `apply` renders it and loads it with `nft -f` in one transaction (the table `inet vpbox`
//!   replaced whole); a ruleset nft refuses changes nothing. The appliance's
//!   `vpbox-firewall.service` runs this before the network comes up.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use vpbox_config::BoxConfig;

use crate::Outcome;

/// `vpbox firewall render|check|apply`.
#[derive(Debug, Args)]
pub(crate) struct FirewallArgs {
    /// The box's configuration file.
    #[arg(long, default_value = "/etc/vpbox/box.toml")]
    pub(crate) config: PathBuf,
    /// (`render`) Write the ruleset to this file instead of standard output.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

/// What to do with the rendered ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Render,
    Check,
    Apply,
}

/// The ruleset of `path`, or the reasons it is refused (printed).
fn rendered(path: &Path) -> Result<Option<String>> {
    let config = match BoxConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(None);
        }
    };
    match vpbox_firewall::render(&config) {
        Ok(text) => Ok(Some(text)),
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", path.display());
            }
            eprintln!("{}: {} error(s); no ruleset", path.display(), errors.len());
            Ok(None)
        }
    }
}

/// Runs `nft` with `args` on `ruleset` given on its standard input.
fn nft(args: &[&str], ruleset: &str) -> Result<std::process::Output> {
    let mut child = Command::new("nft")
        .args(args)
        .arg("/dev/stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("nft (Debian's nftables package)")?;
    child.stdin.take().context("nft's stdin")?.write_all(ruleset.as_bytes())?;
    Ok(child.wait_with_output()?)
}

pub(crate) fn run(action: Action, a: &FirewallArgs) -> Result<Outcome> {
    let Some(ruleset) = rendered(&a.config)? else { return Ok(Outcome::Invalid) };
    match action {
        Action::Render => {
            match &a.out {
                Some(out) => {
                    std::fs::write(out, &ruleset).with_context(|| out.display().to_string())?
                }
                None => print!("{ruleset}"),
            }
            Ok(Outcome::Ok)
        }
        Action::Check | Action::Apply => {
            let args: &[&str] = if action == Action::Check { &["-c", "-f"] } else { &["-f"] };
            let out = nft(args, &ruleset)?;
            if !out.status.success() {
                bail!(
                    "nft refused the ruleset ({}); nothing was changed:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let what = if action == Action::Check { "accepted by nft -c" } else { "applied" };
            println!("{}: table inet vpbox {what}", a.config.display());
            Ok(Outcome::Ok)
        }
    }
}
