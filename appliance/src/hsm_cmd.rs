//! `vpbox hsm`: the security officer's key tools (tokens, keygen, keys, inspect, selftest, csr,
//! retire). Keys are generated inside the token with the
//! locked template and never leave it: no command exports a private key. The PIN comes from a
//! 0400 file, a systemd credential (`$CREDENTIALS_DIRECTORY/hsm-pin`) or a no-echo prompt —
//! never from argv or the environment.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use vpbox_pkcs11::keys::{self, KeyPolicy, KeyReport};
use vpbox_pkcs11::{Module, OpenToken, Pin, Pkcs11Signer, SignerConfig, TokenSelector};
use vpbox_sm::Signer;

use crate::Outcome;

/// `vpbox hsm …`
#[derive(Debug, Subcommand)]
pub(crate) enum HsmCommand {
    /// List the tokens a module offers (label, serial, manufacturer, flags, profile).
    #[command(after_help = "Example:\n  vpbox hsm tokens --module /usr/lib/softhsm/libsofthsm2.so")]
    Tokens {
        /// The PKCS#11 module (vendor library, SoftHSM2, or the vpbox test token).
        #[arg(long)]
        module: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Initialise a fresh token: its label, the security officer's PIN and the user PIN, both
    /// read from 0400 files (never argv). Refuses a label that exists already.
    #[command(after_help = "Example:
  vpbox hsm init --module /usr/local/lib/vpbox/libvpbox_test_token.so --label node1 \\
      --so-pin-file so-pin --pin-file hsm-pin")]
    Init {
        /// The PKCS#11 module.
        #[arg(long)]
        module: PathBuf,
        /// The new token's label.
        #[arg(long)]
        label: String,
        /// A 0400 file with the security officer's PIN.
        #[arg(long)]
        so_pin_file: PathBuf,
        /// A 0400 file with the user PIN.
        #[arg(long)]
        pin_file: PathBuf,
    },
    /// Generate an SM2 key pair inside the token (locked template) and print its public key.
    #[command(after_help = "Example:
  vpbox hsm keygen --module /usr/lib/vendor/libsdf.so --token bank-a-node1 \\
      --pin-file /run/credentials/hsm-pin --label node1-consensus --id 01")]
    Keygen {
        #[command(flatten)]
        target: Target,
        /// CKA_LABEL of the new key.
        #[arg(long)]
        label: String,
        /// CKA_ID of the new key, in hex (how the node's config finds it).
        #[arg(long)]
        id: String,
        /// Mark the key non-destroyable (blocks `retire` until the token is re-initialised).
        #[arg(long)]
        non_destroyable: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the private keys on the token and flag any that break the custody policy.
    Keys {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a key's attributes, public key and fingerprint; exit 1 if it breaks the policy.
    Inspect {
        #[command(flatten)]
        target: Target,
        /// CKA_ID in hex.
        #[arg(long)]
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign and verify with a key through its vendor profile, after the attribute audit.
    Selftest {
        #[command(flatten)]
        target: Target,
        /// CKA_ID in hex.
        #[arg(long)]
        id: String,
        /// How many signatures to make and verify.
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a PKCS#10 certification request for a key, signed inside the HSM.
    #[command(after_help = "Example:
  vpbox hsm csr --module M --token bank-a-node1 --pin-file pin --id 01 \\
      --subject 'CN=node1,OU=vp-node,O=Bank A,C=CN' --out node1.csr
  openssl req -in node1.csr -verify -noout -vfyopt distid:1234567812345678")]
    Csr {
        #[command(flatten)]
        target: Target,
        /// CKA_ID in hex.
        #[arg(long)]
        id: String,
        /// The subject, RFC 4514 (`CN=node1,O=Bank A,C=CN`).
        #[arg(long)]
        subject: String,
        /// Write the PEM here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON (the PEM and the key's fingerprint).
        #[arg(long)]
        json: bool,
    },
    /// Destroy a key pair (refused by the token for non-destroyable keys).
    Retire {
        #[command(flatten)]
        target: Target,
        /// CKA_ID in hex.
        #[arg(long)]
        id: String,
        /// Confirm: retiring a node's key takes the node out of consensus.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which token, and how to log in.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The PKCS#11 module (vendor library, SoftHSM2, or the vpbox test token).
    #[arg(long)]
    module: PathBuf,
    /// The token's label.
    #[arg(long, required_unless_present = "serial", conflicts_with = "serial")]
    token: Option<String>,
    /// The token's serial number.
    #[arg(long)]
    serial: Option<String>,
    /// A file with the user PIN, mode 0400. Default: `$CREDENTIALS_DIRECTORY/hsm-pin`, then a
    /// prompt.
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Vendor profile (default: chosen from the token's manufacturer ID).
    #[arg(long)]
    profile: Option<String>,
}

impl Target {
    fn selector(&self) -> TokenSelector {
        match (&self.token, &self.serial) {
            (Some(label), _) => TokenSelector::Label(label.clone()),
            (None, Some(serial)) => TokenSelector::Serial(serial.clone()),
            // clap requires one of the two.
            (None, None) => TokenSelector::Label(String::new()),
        }
    }

    fn open(&self) -> Result<OpenToken> {
        Ok(OpenToken::open(&self.module, &self.selector(), self.profile.as_deref())?)
    }

    /// A signer over key `id` (hex), trusting the token's key (operator tools, not the node).
    fn signer(&self, id: &str) -> Result<Pkcs11Signer> {
        Ok(Pkcs11Signer::open(SignerConfig {
            module: self.module.clone(),
            token: self.selector(),
            key_id: parse_id(id)?,
            pin: self.pin()?,
            profile: self.profile.clone(),
            pinned: None,
            sessions: 1,
        })?)
    }

    fn pin(&self) -> Result<Pin> {
        if let Some(path) = &self.pin_file {
            return Ok(Pin::from_file(path)?);
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let cred = PathBuf::from(dir).join("hsm-pin");
            if cred.exists() {
                return Ok(Pin::from_file(&cred)?);
            }
        }
        if std::io::stdin().is_terminal() {
            let pin = rpassword::prompt_password("User PIN: ").context("reading the PIN")?;
            return Ok(Pin::new(pin));
        }
        bail!(
            "no PIN: pass --pin-file (mode 0400), provide the hsm-pin credential, or run on a terminal"
        )
    }
}

fn parse_id(id: &str) -> Result<Vec<u8>> {
    let bytes = hex::decode(id.strip_prefix("0x").unwrap_or(id))
        .with_context(|| format!("--id {id:?} is not hex"))?;
    if bytes.is_empty() {
        bail!("--id must not be empty");
    }
    Ok(bytes)
}

#[derive(Serialize)]
struct KeyView {
    #[serde(flatten)]
    report: KeyReport,
    public_key_pem: Option<String>,
    fingerprint_sm3: Option<String>,
}

fn key_view(
    token: &OpenToken,
    session: &cryptoki::session::Session,
    handle: cryptoki::object::ObjectHandle,
) -> Result<KeyView> {
    let report = keys::inspect(session, handle)?;
    let id = hex::decode(&report.id).unwrap_or_default();
    let public = keys::public_key(session, &token.profile, &id).ok();
    Ok(KeyView {
        public_key_pem: public.as_ref().map(|p| p.to_spki_pem()),
        fingerprint_sm3: public.as_ref().map(|p| p.fingerprint().to_hex()),
        report,
    })
}

fn print_key(view: &KeyView) {
    let color = std::io::stdout().is_terminal();
    let (red, reset) = if color { ("\x1b[31m", "\x1b[0m") } else { ("", "") };
    println!("key id={} label={:?}", view.report.id, view.report.label);
    for (name, value) in &view.report.attributes {
        let weak = view.report.problems.iter().any(|p| p == &format!("{name}={value}"));
        if weak {
            println!("  {red}{name:<18} {value}  WEAK{reset}");
        } else {
            println!("  {name:<18} {value}");
        }
    }
    println!("  {:<18} {}", "value readable", !view.report.value_unreadable);
    for p in &view.report.problems {
        println!("  {red}policy: {p}{reset}");
    }
    if let Some(fp) = &view.fingerprint_sm3 {
        println!("  fingerprint        sm3:{fp}");
    }
    if let Some(pem) = &view.public_key_pem {
        print!("{pem}");
    }
}

pub(crate) fn run(cmd: &HsmCommand) -> Result<Outcome> {
    match cmd {
        HsmCommand::Tokens { module, json } => {
            let tokens = Module::load(module)?.tokens()?;
            if *json {
                println!("{}", serde_json::to_string(&tokens)?);
            } else {
                for t in &tokens {
                    println!(
                        "slot {:<12} label {:?} serial {:?} manufacturer {:?} profile {} [{}]",
                        t.slot,
                        t.label,
                        t.serial,
                        t.manufacturer,
                        t.profile.as_deref().unwrap_or("none"),
                        t.flags.join(",")
                    );
                }
            }
            Ok(Outcome::Ok)
        }
        HsmCommand::Init { module, label, so_pin_file, pin_file } => {
            let so = Pin::from_file(so_pin_file)?;
            let user = Pin::from_file(pin_file)?;
            let t = Module::load(module)?.init_token(label, &so, &user)?;
            println!("initialised token {:?} (serial {:?}, {})", t.label, t.serial, t.manufacturer);
            Ok(Outcome::Ok)
        }
        HsmCommand::Keygen { target, label, id, non_destroyable, json } => {
            let id = parse_id(id)?;
            let token = target.open()?;
            let session = token.login(&target.pin()?, true)?;
            let policy = KeyPolicy { destroyable: !non_destroyable };
            let (_, private) = keys::generate(&session, &token.profile, label, &id, policy)?;
            let view = key_view(&token, &session, private)?;
            if *json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print_key(&view);
            }
            Ok(if view.report.problems.is_empty() { Outcome::Ok } else { Outcome::Invalid })
        }
        HsmCommand::Keys { target, json } => {
            let token = target.open()?;
            let session = token.login(&target.pin()?, false)?;
            let mut views = Vec::new();
            for handle in keys::list_private(&session, &token.profile)? {
                views.push(key_view(&token, &session, handle)?);
            }
            if *json {
                println!("{}", serde_json::to_string(&views)?);
            } else {
                views.iter().for_each(print_key);
            }
            let weak = views.iter().any(|v| !v.report.problems.is_empty());
            Ok(if weak { Outcome::Invalid } else { Outcome::Ok })
        }
        HsmCommand::Inspect { target, id, json } => {
            let id = parse_id(id)?;
            let token = target.open()?;
            let session = token.login(&target.pin()?, false)?;
            let handle = keys::find_private(&session, &token.profile, &id)?;
            let view = key_view(&token, &session, handle)?;
            if *json {
                println!("{}", serde_json::to_string(&view)?);
            } else {
                print_key(&view);
            }
            Ok(if view.report.problems.is_empty() { Outcome::Ok } else { Outcome::Invalid })
        }
        HsmCommand::Selftest { target, id, count, json } => {
            let signer = target.signer(id)?;
            let start = std::time::Instant::now();
            for i in 0..*count {
                let payload = format!("vpbox hsm selftest {i}");
                let sig = signer.sign(vpbox_sm::Domain::SELFTEST, payload.as_bytes())?;
                if !signer
                    .public_key()
                    .verify_in(vpbox_sm::Domain::SELFTEST, payload.as_bytes(), &sig)
                    .is_valid()
                {
                    bail!("signature {i} does not verify");
                }
            }
            let per_sig_us = start.elapsed().as_micros() / u128::from((*count).max(1));
            if *json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "profile": signer.profile().name, "signatures": count,
                        "fingerprint_sm3": signer.public_key().fingerprint().to_hex(), "us_per_signature": per_sig_us})
                );
            } else {
                println!(
                    "selftest OK: profile {}, {count} signatures made in the token and verified in software ({per_sig_us} µs each), key sm3:{}",
                    signer.profile().name,
                    signer.public_key().fingerprint()
                );
            }
            Ok(Outcome::Ok)
        }
        HsmCommand::Csr { target, id, subject, out, json } => {
            let signer = target.signer(id)?;
            let pem = vpbox_ca::build_csr(&signer, subject)?;
            if *json {
                let fp = signer.public_key().fingerprint().to_hex();
                let v =
                    serde_json::json!({"csr_pem": pem, "subject": subject, "fingerprint_sm3": fp});
                crate::files::write_output(out.as_deref(), format!("{v}\n").as_bytes(), false)?;
            } else {
                crate::files::write_output(out.as_deref(), pem.as_bytes(), false)?;
            }
            Ok(Outcome::Ok)
        }
        HsmCommand::Retire { target, id, yes, json } => {
            if !yes {
                bail!("retiring a key is final; pass --yes to confirm");
            }
            let id = parse_id(id)?;
            let token = target.open()?;
            let session = token.login(&target.pin()?, true)?;
            let handle = keys::find_private(&session, &token.profile, &id)?;
            session
                .destroy_object(handle)
                .context("the token refused to destroy the private key")?;
            for public in session.find_objects(&[
                cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::PUBLIC_KEY),
                cryptoki::object::Attribute::Id(id.clone()),
            ])? {
                session.destroy_object(public)?;
            }
            if *json {
                println!("{}", serde_json::json!({"retired": hex::encode(&id)}));
            } else {
                println!("retired key {}", hex::encode(&id));
            }
            Ok(Outcome::Ok)
        }
    }
}
