//! `vpbox proof`: get an anchor's proof bundle from a box, and check one offline, with only
//! the consortium's genesis hash — what a dispute platform, an auditor or a court runs
//! (docs/proof-format.md).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use vpbox_proof::bundle::{Body, Bundle};
use vpbox_proof::verify::{Extension, Head, Proof, StateVerdict, TrustAnchor, Verdict, verify};
use vpbox_sm::sm3::Digest;

use crate::Outcome;
use crate::client_cmd::{Conn, client, hex32, rpc_error};

#[derive(Debug, Subcommand)]
pub(crate) enum ProofCommand {
    /// Fetch the proof bundle of an anchored key from a box and write it to a file.
    #[command(after_help = "Example:
  vpbox proof get 0x<key> --out anchor.proof --dir vpbox-dev
  vpbox proof get 0x<key> --out anchor.proof --url https://box1:8443 --server-name node1.bank-a \\
      --roots roots.pem --tls-cert posp.crt --tls-key posp.pem")]
    Get(GetArgs),
    /// Check a proof bundle offline (no node): anchored value, block, time, the banks whose
    /// nodes signed, the submitter and its bank — or the exact reason it fails.
    #[command(after_help = "Examples:
  vpbox proof verify anchor.proof --genesis-hash 0x<sm3 of genesis.json>
  vpbox proof verify anchor.proof --genesis-hash 0x… --slip slip.json
  vpbox proof verify anchor.proof --genesis-hash 0x… --json
The genesis hash is `vpbox sm3 genesis.json`, or gov_getState's `chain`.
Exit status: 0 valid, 1 invalid (the reason is printed), 2 usage or I/O error.")]
    Verify(VerifyArgs),
    /// Fetch a consistency proof from a box: the certified block TO extends the certified
    /// block FROM (an auditor holding an old head checks that no history was rewritten).
    #[command(after_help = "Example:
  vpbox proof consistency --from 120 --to 4500 --out heads.proof --dir vpbox-dev
  vpbox proof verify heads.proof --genesis-hash 0x…
With --genesis-hash, the proof is also verified at once (as `proof verify` would).")]
    Consistency(ConsistencyArgs),
    /// Fetch a state proof of a key from a box: its first value, or that it was never
    /// anchored, as of the box's last committed block (a bank proves a slip was never
    /// anchored).
    #[command(after_help = "Example:
  vpbox proof state 0x<key> --out absent.proof --dir vpbox-dev --genesis-hash 0x…
  vpbox proof verify absent.proof --genesis-hash 0x…
With --genesis-hash, the proof is also verified at once (as `proof verify` would).")]
    State(StateArgs),
    /// Print a proof bundle as JSON (every field; the binary file is what is verified).
    Show(ShowArgs),
}

/// `vpbox proof get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The anchor key (32 bytes, hex).
    pub(crate) key: String,
    /// Where to write the bundle.
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox proof consistency`.
#[derive(Debug, Args)]
pub(crate) struct ConsistencyArgs {
    /// The earlier block's height (the head an auditor holds).
    #[arg(long)]
    pub(crate) from: u64,
    /// The later block's height.
    #[arg(long)]
    pub(crate) to: u64,
    /// Where to write the bundle.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Verify it at once against this genesis hash.
    #[arg(long, value_name = "HEX")]
    pub(crate) genesis_hash: Option<String>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox proof state`.
#[derive(Debug, Args)]
pub(crate) struct StateArgs {
    /// The key (32 bytes, hex), anchored or not.
    pub(crate) key: String,
    /// Where to write the bundle.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Verify it at once against this genesis hash.
    #[arg(long, value_name = "HEX")]
    pub(crate) genesis_hash: Option<String>,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox proof verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The proof bundle.
    pub(crate) bundle: PathBuf,
    /// The consortium's genesis hash (SM3 of its genesis file, hex): the one trust anchor. (Its
    /// founding roots alone would not do: any founding bank's CA can certify nodes of its own,
    /// so a genesis over the same roots could hold only that bank's keys.)
    #[arg(long, value_name = "HEX")]
    pub(crate) genesis_hash: String,
    /// The slip file: it must be the one anchored (its identity names the key, its SM3 is
    /// the value; a file that is not a vpbox JSON slip is compared by its SM3 alone).
    #[arg(long)]
    pub(crate) slip: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `vpbox proof show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The proof bundle.
    pub(crate) bundle: PathBuf,
}

pub(crate) fn run(cmd: &ProofCommand) -> Result<Outcome> {
    match cmd {
        ProofCommand::Get(a) => get(a),
        ProofCommand::Verify(a) => verify_cmd(a),
        ProofCommand::Consistency(a) => consistency(a),
        ProofCommand::State(a) => state(a),
        ProofCommand::Show(a) => {
            let bytes = read(&a.bundle)?;
            let b = Bundle::decode(&bytes).with_context(|| a.bundle.display().to_string())?;
            println!("{}", serde_json::to_string_pretty(&b.to_json())?);
            Ok(Outcome::Ok)
        }
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).with_context(|| path.display().to_string())?.len();
    if len > vpbox_proof::bundle::BUNDLE_MAX as u64 {
        bail!("{}: {len} bytes, above the bundle limit", path.display());
    }
    std::fs::read(path).with_context(|| path.display().to_string())
}

fn get(a: &GetArgs) -> Result<Outcome> {
    let key = hex32(&a.key, "KEY")?;
    let r = client(&a.conn)?
        .call("anchor_getProof", json!([format!("0x{}", hex::encode(key))]))
        .map_err(rpc_error)?;
    let Some(hex) = r["bundle"].as_str().and_then(|s| s.strip_prefix("0x")) else {
        bail!("the box answered without a proof bundle (a vpbox node older than the format?)");
    };
    let bytes = hex::decode(hex).context("the bundle is not hex")?;
    let b = Bundle::decode(&bytes).context("the box's bundle")?;
    crate::files::write_output(Some(&a.out), &bytes, false)?;
    println!(
        "wrote {} ({} bytes): key 0x{} in block {}, {} configuration block(s) since the genesis",
        a.out.display(),
        bytes.len(),
        hex::encode(key),
        b.height(),
        b.governance.len()
    );
    Ok(Outcome::Ok)
}

fn consistency(a: &ConsistencyArgs) -> Result<Outcome> {
    let anchor = match &a.genesis_hash {
        Some(h) => Some(TrustAnchor::GenesisHash(Digest(hex32(h, "--genesis-hash")?))),
        None => None,
    };
    let r = client(&a.conn)?
        .call("block_getConsistencyProof", json!([a.from, a.to]))
        .map_err(rpc_error)?;
    let Some(hex) = r["bundle"].as_str().and_then(|s| s.strip_prefix("0x")) else {
        bail!("the box answered without a proof bundle");
    };
    let bytes = hex::decode(hex).context("the bundle is not hex")?;
    let b = Bundle::decode(&bytes).context("the box's bundle")?;
    if !matches!(b.body, Body::Consistency(_)) {
        bail!("the box answered with another kind of proof");
    }
    crate::files::write_output(Some(&a.out), &bytes, false)?;
    println!(
        "wrote {} ({} bytes): block {} extends block {}",
        a.out.display(),
        bytes.len(),
        a.to,
        a.from
    );
    match anchor {
        None => Ok(Outcome::Ok),
        Some(anchor) => Ok(print_verdict(verify(&b, &anchor, None), false, false)),
    }
}

fn state(a: &StateArgs) -> Result<Outcome> {
    let anchor = match &a.genesis_hash {
        Some(h) => Some(TrustAnchor::GenesisHash(Digest(hex32(h, "--genesis-hash")?))),
        None => None,
    };
    let key = hex32(&a.key, "KEY")?;
    let r = client(&a.conn)?
        .call("anchor_getStateProof", json!([format!("0x{}", hex::encode(key))]))
        .map_err(rpc_error)?;
    let Some(hex) = r["bundle"].as_str().and_then(|s| s.strip_prefix("0x")) else {
        bail!("the box answered without a proof bundle");
    };
    let bytes = hex::decode(hex).context("the bundle is not hex")?;
    let b = Bundle::decode(&bytes).context("the box's bundle")?;
    let Body::State(st) = &b.body else {
        bail!("the box answered with another kind of proof");
    };
    if st.key != key {
        bail!("the box answered with the state proof of another key");
    }
    // What the path says (not the box's word; `proof verify` checks the path).
    let says = match st.path.terminal {
        vpbox_ledger::state::Terminal::Leaf(l) if l.key == key => "anchored",
        _ => "not anchored",
    };
    crate::files::write_output(Some(&a.out), &bytes, false)?;
    println!(
        "wrote {} ({} bytes): key 0x{} {says}, as the path says, as of block {}",
        a.out.display(),
        bytes.len(),
        hex::encode(key),
        b.height()
    );
    match anchor {
        None => Ok(Outcome::Ok),
        Some(anchor) => Ok(print_verdict(verify(&b, &anchor, None), false, false)),
    }
}

fn verify_cmd(a: &VerifyArgs) -> Result<Outcome> {
    let anchor = TrustAnchor::GenesisHash(Digest(hex32(&a.genesis_hash, "--genesis-hash")?));
    let bytes = read(&a.bundle)?;
    let slip = match &a.slip {
        Some(p) => Some(std::fs::read(p).with_context(|| p.display().to_string())?),
        None => None,
    };
    let verdict = Bundle::decode(&bytes)
        .map_err(|e| vpbox_proof::verify::Refusal {
            reason: vpbox_proof::verify::Reason::Malformed,
            detail: e.to_string(),
        })
        .and_then(|b| verify(&b, &anchor, slip.as_deref()));
    Ok(print_verdict(verdict, a.json, a.slip.is_some()))
}

/// Prints a verdict (text or JSON) and says how to exit: valid 0, invalid 1.
fn print_verdict(
    verdict: Result<Proof, vpbox_proof::verify::Refusal>,
    json: bool,
    slip: bool,
) -> Outcome {
    match verdict {
        Ok(v) if json => {
            let mut j = v.to_json();
            if let Proof::Anchor(_) = v {
                j["slip"] = json!(slip);
            }
            println!("{j}");
            Outcome::Ok
        }
        Ok(Proof::Anchor(v)) => {
            print!("{}", describe(&v, slip));
            Outcome::Ok
        }
        Ok(Proof::Consistency(e)) => {
            print!("{}", describe_extension(&e));
            Outcome::Ok
        }
        Ok(Proof::State(s)) => {
            print!("{}", describe_state(&s));
            Outcome::Ok
        }
        Err(r) if json => {
            println!("{}", json!({"valid": false, "reason": r.reason.name(), "detail": r.detail}));
            Outcome::Invalid
        }
        Err(r) => {
            println!("INVALID: {} ({})", r.detail, r.reason.name());
            Outcome::Invalid
        }
    }
}

/// A certified block for a person.
fn head(h: &Head) -> String {
    let signers: Vec<String> =
        h.signers.iter().map(|s| format!("{} ({})", s.name, s.bank)).collect();
    format!(
        "{} at {}, hash 0x{}, signed in epoch {} by {}",
        h.height,
        time(h.time_ms),
        h.hash.to_hex(),
        h.epoch,
        signers.join(", ")
    )
}

/// A state verdict for a person.
fn describe_state(s: &StateVerdict) -> String {
    let what = match &s.found {
        Some(l) => format!(
            "VALID: key 0x{} is anchored with value 0x{} (its first), in block {} by transaction 0x{}\n",
            hex::encode(s.key),
            hex::encode(l.value),
            l.height,
            l.tx.to_hex()
        ),
        None => format!(
            "VALID: key 0x{} is not anchored: the key is not exist as of block {}\n",
            hex::encode(s.key),
            s.at.height
        ),
    };
    format!(
        "{what}\
         \x20 consortium  {} (genesis 0x{})\n\
         \x20 as of       {}\n\
         \x20 followed    {} configuration change(s) from the genesis\n",
        s.chain_id,
        s.chain.to_hex(),
        head(&s.at),
        s.changes,
    )
}

/// A consistency verdict for a person.
fn describe_extension(e: &Extension) -> String {
    format!(
        "VALID: block {} extends block {}: nothing up to block {} was rewritten\n\
         \x20 consortium  {} (genesis 0x{})\n\
         \x20 from        {}\n\
         \x20 to          {}\n\
         \x20 followed    {} configuration change(s) from the genesis\n",
        e.to.height,
        e.from.height,
        e.from.height,
        e.chain_id,
        e.chain.to_hex(),
        head(&e.from),
        head(&e.to),
        e.changes,
    )
}

fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The verdict for a person.
fn describe(v: &Verdict, slip: bool) -> String {
    let signers: Vec<String> =
        v.signers.iter().map(|s| format!("{} ({})", s.name, s.bank)).collect();
    let mut out = format!(
        "VALID: key 0x{} is anchored with value 0x{}\n\
         \x20 consortium  {} (genesis 0x{})\n\
         \x20 block       {} at {}, hash 0x{}\n\
         \x20 signed by   {}: {} of {} members (quorum {}) of epoch {}; banks {}\n\
         \x20 submitter   {} of {}, transaction signed at {}\n\
         \x20 followed    {} configuration change(s) from the genesis\n",
        hex::encode(v.key),
        hex::encode(v.value),
        v.chain_id,
        v.chain.to_hex(),
        v.height,
        time(v.block_time_ms),
        v.block_hash.to_hex(),
        signers.join(", "),
        v.signers.len(),
        v.quorum.1,
        v.quorum.0,
        v.epoch,
        v.banks().join(", "),
        v.submitter.0,
        v.submitter.1,
        time(v.tx_time_ms),
        v.changes,
    );
    if slip {
        out.push_str("  slip        is the one anchored (its identity and its SM3 match)\n");
    }
    out
}
