//! `vpbox ca`: a member bank's certificate authority.
//!
//! A CA is a directory: `ca.toml` (bank, where the key is, its pinned fingerprint), `ca.pem`
//! (its certificate), `db.json` (every serial issued, its subject, profile and status, and the
//! CRL number), and `audit.log` (one JSON line per operation). The key lives in the bank's HSM
//! and signs there; `--software-key-insecure` keeps it in a 0600 file, for development only.
//!
//! A CA is either a bank's self-signed root, or an *issuing CA* under a root the bank already
//! has: `init --issuing-csr` writes the request (subject `CN=<bank> Issuing CA, OU=ca, O=<bank>`),
//! the bank's root signs it with its own tools, and `install` checks and installs the
//! certificate (`root.pem`, and `chain.pem` for any CAs between). An issuing CA writes the CAs
//! above it after every certificate and CRL it makes, so that a leaf's file is its full chain
//! (without the root) and a CRL carries its issuer: the ledger and TLS peers need both.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use vpbox_ca::cert::{self, CertProfile, Grant, Revocation};
use vpbox_pkcs11::{Pin, Pkcs11Signer, SignerConfig, TokenSelector};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Signer, SoftwareSigner};

use crate::Outcome;
use crate::files::write_output;

/// `vpbox ca …`
#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a bank's root CA: a self-signed SM2 certificate for a key in the HSM.
    #[command(after_help = "Example:
  vpbox hsm keygen --module M --token bank-a-ca --pin-file pin --label ca --id ca01
  vpbox ca init --dir /var/lib/vpbox-ca --bank 'Bank A' \\\\
      --module M --token bank-a-ca --key-id ca01 --pin-file pin")]
    Init(InitArgs),
    /// Install the certificate the bank's root issued for an issuing CA (`init --issuing-csr`).
    #[command(after_help = "Example:
  vpbox ca init --dir /var/lib/vpbox-ca --bank 'Bank B' --issuing-csr ca.csr --module M ...
  openssl x509 -req -in ca.csr -CA root.pem -CAkey root.key -sigopt distid:1234567812345678 \\
      -vfyopt distid:1234567812345678 -extfile v3_ca.ext -days 1825 -out ca.pem
  vpbox ca install --dir /var/lib/vpbox-ca --cert ca.pem --root root.pem")]
    Install {
        /// The CA directory, made by `init --issuing-csr`.
        #[arg(long)]
        dir: PathBuf,
        /// The issuing CA's certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The bank's root (PEM): the consortium trusts it through the genesis or governance.
        #[arg(long)]
        root: PathBuf,
        /// Any CAs between the root and this one (PEM, nearest first).
        #[arg(long)]
        chain: Option<PathBuf>,
    },
    /// Issue a certificate from a CSR, by profile (vp-node, posp, admin; a root also ca).
    ///
    /// The request must be signed (SM2 with SM3) by the SM2 key it certifies, and its subject
    /// must read `CN=<name>,OU=<profile>,O=<this CA's bank>` (a C may follow). `--explain`
    /// prints that rule for a profile with this CA's bank filled in, and the commands that make
    /// such a request. The serial, subject and expiry of what was issued are printed on stderr.
    #[command(after_help = "Example:
  vpbox ca issue --dir /var/lib/vpbox-ca --profile posp --explain
  vpbox ca issue --dir /var/lib/vpbox-ca --csr node1.csr --profile vp-node --dns node1.bank-a --out node1.pem
  openssl verify -vfyopt distid:1234567812345678 -CAfile /var/lib/vpbox-ca/ca.pem node1.pem")]
    Issue {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The PKCS#10 request (PEM).
        #[arg(long, required_unless_present = "explain")]
        csr: Option<PathBuf>,
        /// Print what a request for this profile must contain, and how to make one; issue
        /// nothing.
        #[arg(long, conflicts_with_all = ["csr", "out"])]
        explain: bool,
        /// vp-node, posp or admin; or ca, for an issuing CA under this root.
        #[arg(long)]
        profile: String,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// DNS names for the subject alternative name (vp-node).
        #[arg(long)]
        dns: Vec<String>,
        /// Write the certificate here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Issue a new certificate in place of one this CA issued: same subject and profile (and
    /// DNS names, unless --dns gives others), for the key of a new request.
    ///
    /// The old certificate stays valid, so that a box or client is not refused before it
    /// installs the new one; revoke it afterwards (`--reason superseded`). `ca list` shows it
    /// as renewed.
    #[command(after_help = "Example:
  vpbox hsm csr --module M --token bank-a-node1 --pin-file pin --id 01 \\
      --subject 'CN=node1,OU=vp-node,O=Bank A' --out node1.csr
  vpbox ca renew --dir /var/lib/vpbox-ca 5f3a… --csr node1.csr --out node1.crt
  # install node1.crt on the box (systemctl reload vpbox-proxy), then:
  vpbox ca revoke --dir /var/lib/vpbox-ca 5f3a… --reason superseded")]
    Renew {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The serial of the certificate to renew, hex as `list` shows it.
        serial: String,
        /// The PKCS#10 request (PEM): the same subject, the same key or a new one.
        #[arg(long)]
        csr: PathBuf,
        /// Days of validity (default: the old certificate's).
        #[arg(long)]
        days: Option<u32>,
        /// DNS names for the subject alternative name (default: the old certificate's).
        #[arg(long)]
        dns: Vec<String>,
        /// Write the certificate here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate by serial (hex). The ledger refuses it once a CRL that lists it is
    /// published: `vpbox ca crl` signs one, `vpbox cert publish-crl` publishes it.
    Revoke {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The serial, hex as `list` shows it.
        serial: String,
        /// Why (RFC 5280 §5.3.1), kept in the CA's records and audit log.
        #[arg(long, value_enum)]
        reason: Reason,
    },
    /// Sign and print a CRL of every revoked certificate.
    Crl {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Hours until nextUpdate: at least 6 (past nextUpdate the CRL refuses every
        /// certificate of the CA, so it must outlive its renewal).
        #[arg(long, default_value_t = 24)]
        hours: u32,
        /// Write the CRL here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Sign only if a CRL is due: none signed yet, the last one's nextUpdate within this
        /// margin (e.g. `6h`), a certificate revoked since, or no file at --out; otherwise say
        /// so, write nothing and exit 0 (for a timer: systemd/vpbox-crl-renew.service). Must be
        /// shorter than --hours.
        #[arg(long)]
        renew_before: Option<humantime::Duration>,
    },
    /// List what the CA issued.
    List {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Why a certificate is revoked: the reason codes of RFC 5280 §5.3.1 that apply to a
/// certificate this CA issued (not certificateHold: a revocation here is never undone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Reason {
    /// No reason given.
    Unspecified,
    /// The subject's private key is, or may be, known to someone else.
    KeyCompromise,
    /// The key of a CA of the certificate's chain is compromised.
    CaCompromise,
    /// The subject's name or affiliation changed (e.g. a POSP operator changed bank).
    AffiliationChanged,
    /// Replaced by another certificate (`ca renew`).
    Superseded,
    /// The subject is retired: a box, a POSP server or an admin no longer in service.
    CessationOfOperation,
    /// The subject no longer has the rights its profile grants.
    PrivilegeWithdrawn,
}

impl Reason {
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map_or_else(String::new, |v| v.get_name().into())
    }
}

/// `vpbox ca init` arguments.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The CA directory (created).
    #[arg(long)]
    dir: PathBuf,
    /// The bank's name (the root's O and the O every leaf must carry).
    #[arg(long)]
    bank: String,
    /// The country code.
    #[arg(long, default_value = "CN")]
    country: String,
    /// Days of validity of the root.
    #[arg(long, default_value_t = 3650)]
    days: u32,
    /// PKCS#11 module of the bank's HSM.
    #[arg(long, required_unless_present = "software_key_insecure")]
    module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "module")]
    token: Option<String>,
    /// CKA_ID (hex) of the CA key, made with `vpbox hsm keygen`.
    #[arg(long, requires = "module")]
    key_id: Option<String>,
    /// The user PIN file (0400) the CA reads whenever it signs.
    #[arg(long, requires = "module")]
    pin_file: Option<PathBuf>,
    /// Keep the CA key in a software file instead (development only: not for a bank).
    #[arg(long, conflicts_with = "module")]
    software_key_insecure: bool,
    /// Make an issuing CA under the bank's existing root instead of a root: write its request
    /// here, have the root sign it, then run `vpbox ca install`.
    #[arg(long)]
    issuing_csr: Option<PathBuf>,
}

/// `ca.toml`. Unknown fields are refused, not ignored: a `token_dir` or a misspelt key here
/// would otherwise be silently without effect (the test token's own configuration is the file
/// `VPBOX_TEST_TOKEN_CONF` names, not this one).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaConfig {
    bank: String,
    fingerprint_sm3: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hsm: Option<HsmKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    software_key: Option<PathBuf>,
    /// An issuing CA waiting for its certificate (`vpbox ca install`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HsmKey {
    module: PathBuf,
    token: String,
    key_id: String,
    pin_file: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Db {
    crl_number: u64,
    /// The last CRL's nextUpdate (Unix seconds) and how many revocations it lists, for
    /// `--renew-before` (revocations are never undone, so a larger count is a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crl_next_update: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crl_revoked: Option<usize>,
    issued: Vec<Issued>,
}

/// Why a new CRL is due at `now` with a renewal margin of `margin` seconds, or None when the
/// last one stays in date past the margin and nothing was revoked since it was signed.
fn crl_due(db: &Db, now: u64, margin: u64) -> Option<String> {
    let (Some(listed), Some(next)) = (db.crl_revoked, db.crl_next_update) else {
        return Some(if db.crl_number == 0 {
            "no CRL signed yet".into()
        } else {
            format!(
                "CRL {}'s nextUpdate is not recorded (signed before --renew-before)",
                db.crl_number
            )
        });
    };
    if next <= now.saturating_add(margin) {
        return Some(format!("CRL {} runs out within the margin", db.crl_number));
    }
    if db.issued.iter().filter(|i| i.revoked_at.is_some()).count() > listed {
        return Some(format!("a certificate was revoked since CRL {}", db.crl_number));
    }
    None
}

#[derive(Debug, Serialize, Deserialize)]
struct Issued {
    serial: String,
    subject: String,
    profile: String,
    issued_at: u64,
    not_after: u64,
    revoked_at: Option<u64>,
    reason: Option<String>,
    /// The DNS names of its subject alternative name (recorded since `ca renew` exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dns: Vec<String>,
    /// The serial of the certificate `ca renew` issued in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renewed_by: Option<String>,
}

/// A date as `ca list` and the messages show it: RFC 3339 UTC, to the second.
fn date(unix_secs: u64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs),
    )
    .to_string()
}

/// The subject a request for `profile` to `bank`'s CA must have, as a rule a person reads.
fn subject_rule(profile: CertProfile, bank: &str) -> String {
    let name = match profile {
        CertProfile::VpNode => "<the node's name, e.g. node1>",
        CertProfile::Posp => "<the POSP server's ID>",
        CertProfile::Admin => "<the administrator's name>",
        _ => "<bank> Issuing CA",
    };
    format!("CN={name},OU={},O={bank}", profile.name())
}

/// `ca issue --explain`: what a request must contain, and two ways to make one.
fn explain(profile: CertProfile, bank: &str, dir: &Path) -> String {
    let example = match profile {
        CertProfile::VpNode => "node1",
        CertProfile::Posp => "posp-1",
        CertProfile::Admin => "alice",
        _ => "x",
    };
    let subject = format!("CN={example},OU={},O={bank}", profile.name());
    let slashed = format!("/CN={example}/OU={}/O={bank}", profile.name());
    let dns = if profile == CertProfile::VpNode {
        "\nA vp-node certificate also needs the box's DNS name: pass --dns (e.g. --dns node1.bank-a).\n"
    } else {
        ""
    };
    format!(
        "A {p} request to {bank:?}'s CA is a PKCS#10 request signed (SM2 with SM3, the default \
         ID) by the SM2 key it certifies, with the subject\n  {rule}\n(a C attribute may \
         follow; nothing else is taken from the request).{dns}\n\
         With the key in a token:\n  vpbox hsm csr --module M --token T --pin-file PIN --id ID \
         --subject '{subject}' --out req.csr\n\
         With a software key (OpenSSL 3):\n  openssl req -new -key key.pem -sigopt \
         distid:1234567812345678 -subj '{slashed}' -out req.csr\n\
         Then:\n  vpbox ca issue --dir {dir} --csr req.csr --profile {p} --out cert.pem\n",
        p = profile.name(),
        rule = subject_rule(profile, bank),
        dir = dir.display(),
    )
}

/// The host's clock, read here and passed to the CA core.
#[allow(clippy::disallowed_methods)]
fn now() -> SystemTime {
    SystemTime::now()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: corrupt", path.display()))
}

/// Writes `value` atomically: a temporary file, fsynced, renamed over the old one.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn audit(dir: &Path, event: serde_json::Value) -> Result<()> {
    use std::io::Write;
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("audit.log"))?;
    // `at` (Unix seconds) for tools that read it already; `time` is what a person reads.
    let at = now();
    let mut line = serde_json::json!({
        "at": unix(at),
        "time": humantime::format_rfc3339_millis(at).to_string(),
    });
    if let (Some(obj), serde_json::Value::Object(ev)) = (line.as_object_mut(), event) {
        obj.extend(ev);
    }
    writeln!(f, "{line}")?;
    f.sync_all()?;
    Ok(())
}

fn random16() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(b)
}

/// The CA's signer: the HSM key (pinned), or the insecure software key.
fn ca_signer(dir: &Path, config: &CaConfig) -> Result<Box<dyn Signer>> {
    let pinned =
        vpbox_sm::Digest::from_hex(&config.fingerprint_sm3).context("ca.toml: bad fingerprint")?;
    if let Some(h) = &config.hsm {
        let signer = Pkcs11Signer::open(SignerConfig {
            module: h.module.clone(),
            token: TokenSelector::Label(h.token.clone()),
            key_id: hex::decode(&h.key_id).context("ca.toml: key_id is not hex")?,
            pin: Pin::from_file(&h.pin_file)?,
            profile: None,
            pinned: Some(pinned),
            sessions: 1,
        })?;
        return Ok(Box::new(signer));
    }
    let path = dir.join(config.software_key.as_deref().context("ca.toml: no key")?);
    let key = SecretKey::from_pem(&std::fs::read_to_string(&path)?)
        .with_context(|| path.display().to_string())?;
    if key.public_key().fingerprint() != pinned {
        bail!("{}: not the CA key pinned in ca.toml", path.display());
    }
    Ok(Box::new(SoftwareSigner::new(key)))
}

fn read_config(dir: &Path) -> Result<CaConfig> {
    let path = dir.join("ca.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: not a CA directory", dir.display()))?;
    toml::from_str(&text).map_err(|e| {
        let hint = if e.message().contains("unknown field") {
            " (ca.toml holds bank, fingerprint_sm3, [hsm] module, token, key_id, pin_file, or \
             software_key; the vpbox test token's configuration is the file \
             VPBOX_TEST_TOKEN_CONF names)"
        } else {
            ""
        };
        anyhow::anyhow!("{}: {}{hint}", path.display(), e.message().trim())
    })
}

fn open(dir: &Path) -> Result<(CaConfig, String, Db)> {
    let config = read_config(dir)?;
    if config.pending {
        bail!(
            "{}: this issuing CA has no certificate yet: have the bank's root sign its request, \
             then run `vpbox ca install`",
            dir.display()
        );
    }
    let pem = std::fs::read_to_string(dir.join("ca.pem")).context("ca.pem")?;
    let db = read_json(&dir.join("db.json"))?;
    Ok((config, pem, db))
}

/// For an issuing CA, its certificate and the CAs between it and the root (PEM), which follow
/// everything it signs; nothing for a root.
fn above(dir: &Path, ca_pem: &str) -> Result<String> {
    if !dir.join("root.pem").exists() {
        return Ok(String::new());
    }
    let between = match std::fs::read_to_string(dir.join("chain.pem")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context("chain.pem"),
    };
    Ok(format!("{ca_pem}{between}"))
}

pub(crate) fn run(cmd: &CaCommand) -> Result<Outcome> {
    match cmd {
        CaCommand::Init(a) => init(a),
        CaCommand::Install { dir, cert, root, chain } => install(dir, cert, root, chain.as_deref()),
        CaCommand::Issue { dir, csr, explain: _, profile, days, dns, out } => {
            let profile = CertProfile::issuable(profile).with_context(|| {
                format!("unknown profile {profile:?}: vp-node, posp, admin or ca")
            })?;
            let (config, ca_pem, mut db) = open(dir)?;
            let above = above(dir, &ca_pem)?;
            if profile == CertProfile::Ca && !above.is_empty() {
                bail!("an issuing CA issues end-entity certificates only (path length 0)");
            }
            let Some(csr) = csr else {
                print!("{}", explain(profile, &config.bank, dir));
                return Ok(Outcome::Ok);
            };
            let req = checked_request(dir, &config, csr, profile)?;
            let terms = Terms { profile, days: *days, dns: dns.clone(), renews: None };
            let (serial, pem) = issue_one(dir, &config, &ca_pem, &mut db, &req, terms)?;
            write_output(out.as_deref(), format!("{pem}{above}").as_bytes(), false)?;
            let i = db.issued.iter().find(|i| i.serial == serial).context("just issued")?;
            eprintln!(
                "issued {serial}: {} {}, valid until {}{}",
                i.profile,
                i.subject,
                date(i.not_after),
                out.as_ref().map_or(String::new(), |o| format!(", written to {}", o.display()))
            );
            Ok(Outcome::Ok)
        }
        CaCommand::Renew { dir, serial, csr, days, dns, out } => {
            let (config, ca_pem, mut db) = open(dir)?;
            let serial = serial.to_lowercase();
            let old = db
                .issued
                .iter()
                .find(|i| i.serial == serial)
                .with_context(|| format!("no certificate with serial {serial}"))?;
            if let Some(by) = &old.renewed_by {
                bail!("{serial} was renewed already, as {by}: renew that one");
            }
            if old.revoked_at.is_some() {
                bail!(
                    "{serial} is revoked: its subject gets a new certificate with `vpbox ca issue`"
                );
            }
            let profile = CertProfile::issuable(&old.profile)
                .with_context(|| format!("db.json: {serial} has an unknown profile"))?;
            let dns = if dns.is_empty() { old.dns.clone() } else { dns.clone() };
            if profile == CertProfile::VpNode && dns.is_empty() {
                bail!("{serial} was issued before the CA recorded DNS names: give them with --dns");
            }
            let days = match days {
                Some(d) => *d,
                None => u32::try_from(old.not_after.saturating_sub(old.issued_at) / 86_400)
                    .unwrap_or(365)
                    .max(1),
            };
            let (old_subject, old_end) = (old.subject.clone(), old.not_after);
            let req = checked_request(dir, &config, csr, profile)?;
            if req.info.subject.to_string() != old_subject {
                bail!(
                    "{}: its subject {:?} is not {serial}'s, {old_subject:?}",
                    csr.display(),
                    req.info.subject.to_string()
                );
            }
            let terms = Terms { profile, days, dns, renews: Some(serial.clone()) };
            let (new, pem) = issue_one(dir, &config, &ca_pem, &mut db, &req, terms)?;
            write_output(
                out.as_deref(),
                format!("{pem}{}", above(dir, &ca_pem)?).as_bytes(),
                false,
            )?;
            let end = db.issued.iter().find(|i| i.serial == new).map_or(0, |i| i.not_after);
            eprintln!(
                "renewed {serial} as {new}: {old_subject}, valid until {}. The old certificate \
                 stays valid until {}: once the new one is installed (and enrolled, for a POSP \
                 or an admin), revoke the old one with `vpbox ca revoke --dir {} {serial} \
                 --reason superseded`",
                date(end),
                date(old_end),
                dir.display()
            );
            Ok(Outcome::Ok)
        }
        CaCommand::Revoke { dir, serial, reason } => {
            let (_, _, mut db) = open(dir)?;
            let serial = serial.to_lowercase();
            let entry = db
                .issued
                .iter_mut()
                .find(|i| i.serial == serial)
                .with_context(|| format!("no certificate with serial {serial}"))?;
            if entry.revoked_at.is_some() {
                bail!("{serial} is revoked already");
            }
            entry.revoked_at = Some(unix(now()));
            entry.reason = Some(reason.name());
            write_json(&dir.join("db.json"), &db)?;
            audit(
                dir,
                serde_json::json!({"op": "revoke", "serial": serial, "reason": reason.name(), "result": "ok"}),
            )?;
            println!(
                "revoked {serial} ({}) in the CA's records. The ledger refuses it only once a \
                 CRL that lists it is published:\n  vpbox ca crl --dir {} --out crl.pem\n  \
                 vpbox cert publish-crl crl.pem --posp POSP.toml   (or --key-file, or a token's \
                 --module …; with --url … or --rpc …)",
                reason.name(),
                dir.display()
            );
            Ok(Outcome::Ok)
        }
        CaCommand::Crl { dir, hours, out, renew_before } => {
            // Refused before the token is opened (and no CRL number spent).
            if *hours < cert::CRL_HOURS_MIN {
                return Err(cert::CertError::CrlTooShort { hours: *hours }.into());
            }
            let margin = renew_before.map(|m| std::time::Duration::from(m).as_secs());
            if margin.is_some_and(|m| m >= u64::from(*hours) * 3600) {
                bail!(
                    "--renew-before must be shorter than --hours: every CRL would be due at once"
                );
            }
            let (config, ca_pem, mut db) = open(dir)?;
            if let Some(margin) = margin {
                // The file a timer keeps current (and publishes) is missing: sign one, due or
                // not, so that the publishing step has the CRL in force.
                let missing = out.as_ref().filter(|o| !o.exists());
                let due = crl_due(&db, unix(now()), margin)
                    .or_else(|| missing.map(|o| format!("{} does not exist", o.display())));
                // On stderr: stdout may be the CRL itself (no --out).
                match due {
                    Some(why) => eprintln!("renewing: {why}"),
                    None => {
                        eprintln!(
                            "CRL {} is in date past the margin and nothing was revoked since: \
                             not renewed",
                            db.crl_number
                        );
                        return Ok(Outcome::Ok);
                    }
                }
            }
            let signer = ca_signer(dir, &config)?;
            db.crl_number += 1;
            let revoked = db
                .issued
                .iter()
                .filter_map(|i| {
                    let at = i.revoked_at?;
                    Some(hex::decode(&i.serial).map(|serial| Revocation {
                        serial,
                        at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at),
                    }))
                })
                .collect::<Result<Vec<_>, _>>()
                .context("db.json: bad serial")?;
            let signed_at = now();
            let pem =
                cert::crl(signer.as_ref(), &ca_pem, db.crl_number, &revoked, signed_at, *hours)?;
            db.crl_revoked = Some(revoked.len());
            db.crl_next_update = Some(unix(signed_at) + u64::from(*hours) * 3600);
            let pem = format!("{pem}{}", above(dir, &ca_pem)?);
            // The CRL first, then the record that it was signed: a failed write leaves the
            // renewal due, not marked done.
            write_output(out.as_deref(), pem.as_bytes(), false)?;
            write_json(&dir.join("db.json"), &db)?;
            audit(
                dir,
                serde_json::json!({"op": "crl", "number": db.crl_number, "revoked": revoked.len(), "result": "ok"}),
            )?;
            Ok(Outcome::Ok)
        }
        CaCommand::List { dir, json } => {
            let (_, _, db) = open(dir)?;
            if *json {
                println!("{}", serde_json::to_string(&db.issued)?);
            } else {
                let at = unix(now());
                println!(
                    "{:<32}  {:<8} {:<20}  {:<24} SUBJECT",
                    "SERIAL", "PROFILE", "NOT AFTER (UTC)", "STATUS"
                );
                for i in &db.issued {
                    println!(
                        "{}  {:<8} {:<20}  {:<24} {}",
                        i.serial,
                        i.profile,
                        date(i.not_after),
                        status(i, at),
                        i.subject
                    );
                }
            }
            Ok(Outcome::Ok)
        }
    }
}

/// What `ca list` says of a certificate at `now`: revoked (why), expired, renewed (by which
/// serial; still valid), or valid.
fn status(i: &Issued, now: u64) -> String {
    if i.revoked_at.is_some() {
        format!("revoked ({})", i.reason.as_deref().unwrap_or("unspecified"))
    } else if i.not_after < now {
        "expired".into()
    } else if let Some(by) = &i.renewed_by {
        format!("renewed by {}…", by.get(..8).unwrap_or(by))
    } else {
        "valid".into()
    }
}

/// Reads `csr` and checks it fits `profile` at this CA; a refusal is audited and says the rule.
fn checked_request(
    dir: &Path,
    config: &CaConfig,
    csr: &Path,
    profile: CertProfile,
) -> Result<cert::CertReq> {
    let csr_pem = std::fs::read_to_string(csr).with_context(|| csr.display().to_string())?;
    match cert::check_request(&csr_pem, profile, &config.bank) {
        Ok(r) => Ok(r),
        Err(e) => {
            audit(
                dir,
                serde_json::json!({"op": "issue", "result": "refused", "why": e.to_string()}),
            )?;
            let rule = match e {
                cert::CertError::Subject { .. } => format!(
                    "\nthe subject of a {} request must read {} (`vpbox ca issue --dir {} \
                     --profile {} --explain` says how to make one)",
                    profile.name(),
                    subject_rule(profile, &config.bank),
                    dir.display(),
                    profile.name()
                ),
                _ => String::new(),
            };
            bail!("{}: {e}{rule}", csr.display())
        }
    }
}

/// The terms of a certificate to issue.
struct Terms {
    profile: CertProfile,
    days: u32,
    dns: Vec<String>,
    /// The serial it replaces (`ca renew`).
    renews: Option<String>,
}

/// Issues a certificate for a checked request under a fresh serial, records it (and, for a
/// renewal, the old one's successor) and audits it. The serial (hex) and the certificate (PEM,
/// without the CAs above).
fn issue_one(
    dir: &Path,
    config: &CaConfig,
    ca_pem: &str,
    db: &mut Db,
    req: &cert::CertReq,
    terms: Terms,
) -> Result<(String, String)> {
    let signer = ca_signer(dir, config)?;
    let serial_bytes = loop {
        let mut b = random16()?;
        b[0] = (b[0] & 0x7f) | 0x01;
        let hex = hex::encode(b);
        if !db.issued.iter().any(|i| i.serial == hex) {
            break b;
        }
    };
    let serial = hex::encode(serial_bytes);
    let when = now();
    let grant = Grant {
        profile: terms.profile,
        serial: cert::random_serial(serial_bytes)?,
        now: when,
        days: terms.days,
        dns_names: terms.dns.clone(),
    };
    let pem = cert::issue(signer.as_ref(), ca_pem, req, grant)?;
    let subject = req.info.subject.to_string();
    if let Some(old) = &terms.renews
        && let Some(entry) = db.issued.iter_mut().find(|i| &i.serial == old)
    {
        entry.renewed_by = Some(serial.clone());
    }
    db.issued.push(Issued {
        serial: serial.clone(),
        subject: subject.clone(),
        profile: terms.profile.name().into(),
        issued_at: unix(when),
        not_after: unix(when) + u64::from(terms.days) * 86_400,
        revoked_at: None,
        reason: None,
        dns: terms.dns,
        renewed_by: None,
    });
    write_json(&dir.join("db.json"), db)?;
    let mut event = serde_json::json!({"op": "issue", "serial": serial, "subject": subject, "profile": terms.profile.name(), "result": "ok"});
    if let Some(old) = terms.renews {
        event["renews"] = old.into();
    }
    audit(dir, event)?;
    Ok((serial, pem))
}

fn init(a: &InitArgs) -> Result<Outcome> {
    if a.dir.join("ca.toml").exists() {
        bail!("{} holds a CA already", a.dir.display());
    }
    std::fs::create_dir_all(&a.dir)?;
    let (signer, hsm, software_key): (Box<dyn Signer>, _, _) = if a.software_key_insecure {
        let key = SecretKey::generate()?;
        write_output(Some(&a.dir.join("ca.key")), key.to_pkcs8_pem()?.as_bytes(), true)?;
        (Box::new(SoftwareSigner::new(key)), None, Some(PathBuf::from("ca.key")))
    } else {
        let (Some(module), Some(token), Some(key_id), Some(pin_file)) =
            (&a.module, &a.token, &a.key_id, &a.pin_file)
        else {
            bail!("an HSM CA needs --module, --token, --key-id and --pin-file");
        };
        let signer = Pkcs11Signer::open(SignerConfig {
            module: module.clone(),
            token: TokenSelector::Label(token.clone()),
            key_id: hex::decode(key_id).context("--key-id is not hex")?,
            pin: Pin::from_file(pin_file)?,
            profile: None,
            pinned: None,
            sessions: 1,
        })?;
        let hsm = HsmKey {
            module: module.clone(),
            token: token.clone(),
            key_id: key_id.clone(),
            pin_file: pin_file.clone(),
        };
        (Box::new(signer) as Box<dyn Signer>, Some(hsm), None)
    };
    let fingerprint = signer.public_key().fingerprint().to_hex();
    let mut config = CaConfig {
        bank: a.bank.clone(),
        fingerprint_sm3: fingerprint.clone(),
        hsm,
        software_key,
        pending: false,
    };
    if let Some(csr_out) = &a.issuing_csr {
        let subject = format!("CN={} Issuing CA,OU=ca,O={},C={}", a.bank, a.bank, a.country);
        let csr = vpbox_ca::build_csr(signer.as_ref(), &subject)?;
        config.pending = true;
        std::fs::write(a.dir.join("ca.toml"), toml::to_string(&config)?)?;
        write_json(&a.dir.join("db.json"), &Db::default())?;
        write_output(Some(csr_out), csr.as_bytes(), false)?;
        audit(
            &a.dir,
            serde_json::json!({"op": "init", "kind": "issuing", "bank": a.bank, "fingerprint_sm3": fingerprint, "result": "pending"}),
        )?;
        eprintln!(
            "wrote the issuing CA's request to {}: have the bank's root sign it as a CA \
             (basicConstraints CA:TRUE, pathlen:0; keyUsage keyCertSign, cRLSign), then run \
             `vpbox ca install --dir {} --cert CA.pem --root ROOT.pem`",
            csr_out.display(),
            a.dir.display()
        );
        return Ok(Outcome::Ok);
    }
    let pem = cert::self_signed_root(
        signer.as_ref(),
        &a.bank,
        &a.country,
        cert::random_serial(random16()?)?,
        now(),
        a.days,
    )?;
    std::fs::write(a.dir.join("ca.toml"), toml::to_string(&config)?)?;
    std::fs::write(a.dir.join("ca.pem"), &pem)?;
    write_json(&a.dir.join("db.json"), &Db::default())?;
    audit(
        &a.dir,
        serde_json::json!({"op": "init", "kind": "root", "bank": a.bank, "fingerprint_sm3": fingerprint, "result": "ok"}),
    )?;
    print!("{pem}");
    Ok(Outcome::Ok)
}

/// Installs an issuing CA's certificate once it certifies the pinned key, chains to `root` as
/// a CA of this bank, and is valid now.
fn install(
    dir: &Path,
    cert_path: &Path,
    root_path: &Path,
    chain: Option<&Path>,
) -> Result<Outcome> {
    use vpbox_ca::pem::chain_der;
    use vpbox_ca::policy::TrustStore;
    let mut config = read_config(dir)?;
    if !config.pending {
        bail!("{}: this CA has its certificate already", dir.display());
    }
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| p.display().to_string());
    let (cert_pem, root_pem) = (read(cert_path)?, read(root_path)?);
    let between_pem = chain.map(read).transpose()?.unwrap_or_default();
    let cert_der = chain_der(&cert_pem).with_context(|| cert_path.display().to_string())?;
    if cert::split_der(&cert_der)?.len() != 1 {
        bail!("{}: one certificate is expected (the CAs above go in --chain)", cert_path.display());
    }
    let key = cert::certificate_key(&cert_der)?;
    if key.fingerprint().to_hex() != config.fingerprint_sm3 {
        bail!("{}: it certifies another key than this CA's", cert_path.display());
    }
    let mut store = TrustStore::new();
    store
        .add_root(&chain_der(&root_pem).with_context(|| root_path.display().to_string())?)
        .with_context(|| root_path.display().to_string())?;
    let mut path = cert_der;
    if !between_pem.is_empty() {
        path.extend(chain_der(&between_pem).context("--chain")?);
    }
    let bank = store
        .admit_ca(&path, now())
        .map_err(|r| anyhow::anyhow!("{}: refused: {r}", cert_path.display()))?;
    if bank != config.bank {
        bail!("{}: a CA of {bank:?}, not of {:?}", cert_path.display(), config.bank);
    }
    std::fs::write(dir.join("ca.pem"), &cert_pem)?;
    std::fs::write(dir.join("root.pem"), &root_pem)?;
    if !between_pem.is_empty() {
        std::fs::write(dir.join("chain.pem"), &between_pem)?;
    }
    config.pending = false;
    std::fs::write(dir.join("ca.toml"), toml::to_string(&config)?)?;
    audit(dir, serde_json::json!({"op": "install", "bank": bank, "result": "ok"}))?;
    println!("installed the issuing CA of {bank}");
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::{Db, Issued, crl_due};

    fn issued(revoked_at: Option<u64>) -> Issued {
        Issued {
            serial: "01".into(),
            subject: "CN=x".into(),
            profile: "posp".into(),
            issued_at: 0,
            not_after: u64::MAX,
            revoked_at,
            reason: None,
            dns: vec![],
            renewed_by: None,
        }
    }

    /// A renewal is due with no CRL yet, when the last one's nextUpdate falls within the
    /// margin (at its edge included), or after a revocation since it was signed; else not.
    #[test]
    fn a_crl_is_due_when_none_was_signed_it_runs_out_or_something_was_revoked_since() {
        let mut db = Db { crl_number: 0, crl_next_update: None, crl_revoked: None, issued: vec![] };
        assert!(crl_due(&db, 1000, 60).unwrap().contains("no CRL"));
        db = Db { crl_number: 3, crl_next_update: Some(5000), crl_revoked: Some(1), ..db };
        assert_eq!(crl_due(&db, 1000, 3999), None);
        assert!(crl_due(&db, 1000, 4000).unwrap().contains("runs out"));
        assert!(crl_due(&db, 5001, 0).unwrap().contains("runs out"));
        db.issued = vec![issued(Some(999)), issued(None)];
        assert_eq!(crl_due(&db, 1000, 60), None, "the one revocation is on CRL 3 already");
        db.issued.push(issued(Some(999)));
        assert!(crl_due(&db, 1000, 60).unwrap().contains("revoked since CRL 3"));
    }
}
