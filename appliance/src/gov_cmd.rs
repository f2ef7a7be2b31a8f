//! `vpbox gov`: consortium governance — propose a change, collect the admins' approvals, submit.
//!
//! A proposal file (JSON) travels between the banks' security officers:
//!
//! ```json
//! { "proposal": "<hex of the canonical proposal>",
//!   "changes": ["add root of bank-c (sm3 …)", "add node 5 node5 of bank-c"],
//!   "approvals": [ { "admin": "<key fingerprint hex>", "signature": "<DER hex>" } ] }
//! ```
//!
//! `propose` writes it against the committed governance state (`gov_getState`: the chain and
//! the state's sequence number, so it applies once and only there). `approve` shows the changes
//! as decoded from the signed bytes (not from the `changes` summary, which is for people) and
//! adds the admin's SM2 signature in the `GOVERNANCE` domain, made in the admin's HSM token or
//! with a key file. `submit` sends the configuration transaction, signed by an enrolled admin;
//! the node refuses it at once if the approvals do not reach more than two thirds of the member
//! banks or the change cannot apply, and says why.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use vpbox_ledger::governance::{Approval, Change, ConfigTx, Proposal};
use vpbox_ledger::tx::Payload;
use vpbox_sm::sm3::{Digest, hash};

use crate::Outcome;
use crate::client_cmd::{Conn, KeyArgs, client, print_committed, rpc_error, sign};

/// `vpbox gov …`
#[derive(Debug, Subcommand)]
pub(crate) enum GovCommand {
    /// Show the committed governance state: banks, roots, nodes, sequence number.
    Show {
        #[command(flatten)]
        conn: Conn,
    },
    /// Write a proposal against the committed state.
    #[command(after_help = "Example:
  vpbox gov propose --add-root bank-c/ca.pem --add-node node5.json --out add-bank-c.json")]
    Propose(ProposeArgs),
    /// Add an admin's approval to a proposal file (shows what is approved).
    #[command(after_help = "Example:
  vpbox gov approve add-bank-c.json --module M --token bank-a-ca --key-id ad01 --pin-file pin")]
    Approve {
        /// The proposal file (rewritten with the approval).
        file: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Submit an approved proposal as a configuration transaction signed by an enrolled admin.
    Submit {
        /// The proposal file.
        file: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `vpbox gov propose`.
#[derive(Debug, Args)]
pub(crate) struct ProposeArgs {
    /// A root certificate (PEM) to add; a new O makes a new member bank.
    #[arg(long)]
    add_root: Vec<PathBuf>,
    /// A root to remove, by the SM3 of its DER (hex, as `gov show` prints it).
    #[arg(long)]
    remove_root: Vec<String>,
    /// A bank to remove (all its roots; its nodes must be removed too).
    #[arg(long)]
    remove_bank: Vec<String>,
    /// A node to add: a JSON file in the genesis's node format (id, bank, name,
    /// consensus_key as SEC1 hex, certificate PEM; no address: those live in each box's
    /// box.toml). `vpbox cluster add-node` writes one.
    #[arg(long)]
    add_node: Vec<PathBuf>,
    /// A node to remove, by id.
    #[arg(long)]
    remove_node: Vec<u32>,
    /// Where to write the proposal file.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Serialize, Deserialize)]
struct ProposalFile {
    proposal: String,
    changes: Vec<String>,
    approvals: Vec<ApprovalJson>,
}

#[derive(Serialize, Deserialize)]
struct ApprovalJson {
    admin: String,
    signature: String,
}

fn pem_der(path: &Path, want: &str) -> Result<Vec<u8>> {
    let pem = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    pem_der_str(&pem, want).with_context(|| path.display().to_string())
}

fn pem_der_str(pem: &str, want: &str) -> Result<Vec<u8>> {
    let (label, der) =
        pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|e| anyhow::anyhow!("not PEM: {e}"))?;
    if label != want {
        bail!("a {label}, where a {want} is needed");
    }
    Ok(der)
}

/// One line per change, for people.
fn describe(c: &Change) -> String {
    match c {
        Change::AddRoot(der) => {
            let bank = vpbox_ca::policy::root_info(der).map_or_else(|e| e.to_string(), |i| i.0);
            format!("add root of {bank} (sm3 {})", hash(der).to_hex())
        }
        Change::RemoveRoot(d) => format!("remove root sm3 {}", d.to_hex()),
        Change::RemoveBank(b) => format!("remove bank {b}"),
        Change::AddNode(n) => format!(
            "add node {} {} of {} (consensus key sm3 {})",
            n.id,
            n.name,
            n.bank,
            hash(n.consensus_key).to_hex()
        ),
        Change::RemoveNode(id) => format!("remove node {id}"),
    }
}

fn read_file(path: &Path) -> Result<(ProposalFile, Proposal)> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let f: ProposalFile = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a proposal", path.display()))?;
    let bytes = hex::decode(&f.proposal).context("proposal is not hex")?;
    let p = Proposal::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((f, p))
}

fn write_file(path: &Path, f: &ProposalFile) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(f)? + "\n")?;
    std::fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

pub(crate) fn run(cmd: &GovCommand) -> Result<Outcome> {
    match cmd {
        GovCommand::Show { conn } => {
            let r = client(conn)?.call("gov_getState", json!([])).map_err(rpc_error)?;
            if conn.json {
                println!("{r}");
                return Ok(Outcome::Ok);
            }
            println!("governance state {} at block {}", r["seq"], r["height"]);
            for root in r["roots"].as_array().into_iter().flatten() {
                println!(
                    "root  {:<12} sm3 {}",
                    root["bank"].as_str().unwrap_or(""),
                    root["sm3"].as_str().unwrap_or("")
                );
            }
            for n in r["nodes"].as_array().into_iter().flatten() {
                println!(
                    "node  {:<3} {:<10} {:<10}",
                    n["id"],
                    n["name"].as_str().unwrap_or(""),
                    n["bank"].as_str().unwrap_or("")
                );
            }
            Ok(Outcome::Ok)
        }
        GovCommand::Propose(a) => propose(a),
        GovCommand::Approve { file, key } => {
            let (mut f, p) = read_file(file)?;
            let conn = Conn { dir: "vpbox-dev".into(), ..Conn::default() };
            let (signer, _) = key.signer(&conn)?;
            eprintln!("approving governance change {} of chain {}:", p.seq, p.chain.to_hex());
            for c in &p.changes {
                eprintln!("  - {}", describe(c));
            }
            let Approval { admin, signature } = p.approve(signer.as_ref())?;
            f.approvals.retain(|x| x.admin != admin.to_hex());
            f.approvals
                .push(ApprovalJson { admin: admin.to_hex(), signature: hex::encode(signature) });
            write_file(file, &f)?;
            println!("approved by {} ({} approvals)", admin.to_hex(), f.approvals.len());
            Ok(Outcome::Ok)
        }
        GovCommand::Submit { file, key, conn } => {
            let (f, p) = read_file(file)?;
            let approvals = f
                .approvals
                .iter()
                .map(|a| {
                    Ok(Approval {
                        admin: Digest::from_hex(&a.admin).context("approval: bad admin")?,
                        signature: hex::decode(&a.signature).context("approval: bad signature")?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let payload = ConfigTx { proposal: p.encode(), approvals }.encode();
            let (signer, conn) = key.signer(conn)?;
            let tx = sign(signer.as_ref(), Payload::Config(payload))?;
            let r = crate::client_cmd::write_client(&conn)?
                .call("gov_submit", json!({"tx": hex::encode(tx.encode()), "wait": true}))
                .map_err(rpc_error)?;
            Ok(print_committed(&conn, &r))
        }
    }
}

fn propose(a: &ProposeArgs) -> Result<Outcome> {
    let state = client(&a.conn)?.call("gov_getState", json!([])).map_err(rpc_error)?;
    let chain = Digest::from_hex(state["chain"].as_str().unwrap_or(""))
        .context("gov_getState: no chain")?;
    let seq = state["seq"].as_u64().context("gov_getState: no seq")?;
    let mut changes = Vec::new();
    for path in &a.add_root {
        changes.push(Change::AddRoot(pem_der(path, "CERTIFICATE")?));
    }
    for h in &a.remove_root {
        changes
            .push(Change::RemoveRoot(Digest::from_hex(h).context("--remove-root: not SM3 hex")?));
    }
    for b in &a.remove_bank {
        changes.push(Change::RemoveBank(b.clone()));
    }
    for path in &a.add_node {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let spec = vpbox_node::genesis::parse_node_entry(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        changes.push(Change::AddNode(spec));
    }
    for id in &a.remove_node {
        changes.push(Change::RemoveNode(*id));
    }
    if changes.is_empty() {
        bail!(
            "nothing to propose: give --add-root, --remove-root, --remove-bank, --add-node or --remove-node"
        );
    }
    let p = Proposal { chain, seq, changes };
    let f = ProposalFile {
        proposal: hex::encode(p.encode()),
        changes: p.changes.iter().map(describe).collect(),
        approvals: Vec::new(),
    };
    write_file(&a.out, &f)?;
    for c in &f.changes {
        println!("{c}");
    }
    Ok(Outcome::Ok)
}
