//! `vpbox anchor put|get|verify`: a POSP's client of a running node, and
//! `vpbox bench anchors`.
//!
//! The node is found through `--rpc SOCKET`, or the cluster folder's genesis (`--dir`,
//! default `./vpbox-dev`: the first node that answers). Transactions are signed here with the
//! POSP's SM2 key (`--key`, default the folder's `posp/bank-a.pem`): a POSP's key is its own,
//! not the node's.
//!
//! `put --file batch.csv` reads `key,value` lines (hex, `0x` optional; blank lines and `#`
//! comments skipped), sends them as `anchor_putBatch` transactions of `--batch` pairs, shows a
//! progress bar on stderr, and records its progress in `batch.csv.vpbox-progress`: the lines
//! committed, and the signed transaction in flight. Run again after an interruption, it
//! re-sends that same transaction (a duplicate gets its first result, never a second
//! execution) and goes on from there.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use vpbox_ledger::tx::{Payload, Tx, TxBody};
use vpbox_node::client::{CallError, RpcClient};
use vpbox_node::genesis::{Address, Genesis};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::sm3::Digest;
use vpbox_sm::{Signer, SoftwareSigner};

use crate::Outcome;

/// How to reach a node and sign.
#[derive(Debug, Args, Clone)]
pub(crate) struct Conn {
    /// The cluster's folder (its genesis lists the nodes).
    #[arg(long, default_value = "vpbox-dev")]
    pub(crate) dir: PathBuf,
    /// A node's JSON-RPC socket (instead of the folder's first node that answers).
    #[arg(long)]
    pub(crate) rpc: Option<PathBuf>,
    /// Print the JSON-RPC result.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `vpbox anchor put`.
#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    /// The anchor key (32 bytes, hex).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub(crate) key: Option<String>,
    /// The anchor value (32 bytes, hex).
    #[arg(required_unless_present = "file")]
    pub(crate) value: Option<String>,
    /// A CSV of `key,value` lines to anchor in batches.
    #[arg(long)]
    pub(crate) file: Option<PathBuf>,
    /// Pairs per batch transaction with --file.
    #[arg(long, default_value_t = 5000)]
    pub(crate) batch: usize,
    /// The POSP's SM2 key (PKCS#8 PEM). Default: DIR/posp/bank-a.pem.
    #[arg(long)]
    pub(crate) key_file: Option<PathBuf>,
    /// Return once the node has stored the transaction, without waiting for its commit.
    #[arg(long)]
    pub(crate) no_wait: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox anchor get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The anchor key (32 bytes, hex).
    pub(crate) key: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox anchor verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The slip file.
    pub(crate) slip: PathBuf,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

fn client(conn: &Conn) -> Result<RpcClient> {
    if let Some(p) = &conn.rpc {
        return Ok(RpcClient::new(p));
    }
    let genesis = Genesis::load(&conn.dir.join("genesis.json")).with_context(|| {
        format!("no cluster in {} (run `vpbox cluster up`, or give --rpc)", conn.dir.display())
    })?;
    for n in &genesis.nodes {
        if let Address::Unix(p) = &n.rpc {
            let mut c = RpcClient::new(p);
            if c.call("block_getChainHeight", json!([])).is_ok() {
                return Ok(c);
            }
        }
    }
    bail!("no node of {} answers", conn.dir.display())
}

fn signer(conn: &Conn, key_file: &Option<PathBuf>) -> Result<SoftwareSigner> {
    let path = key_file.clone().unwrap_or_else(|| conn.dir.join("posp/bank-a.pem"));
    let pem = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(SoftwareSigner::new(SecretKey::from_pem(&pem).with_context(|| path.display().to_string())?))
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
    Digest::from_hex(s.trim()).map(|d| d.0).with_context(|| {
        format!("{what} must be 32 bytes as 64 hex digits (0x optional), not {:?}", s.trim())
    })
}

#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn nonce() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(u64::from_be_bytes(b))
}

/// Signs a transaction of `payload` now.
pub(crate) fn sign(s: &SoftwareSigner, payload: Payload) -> Result<Tx> {
    let body = TxBody {
        submitter: s.public_key().fingerprint(),
        nonce: nonce()?,
        timestamp_ms: now_ms(),
        payload,
    };
    Ok(body.sign(s)?)
}

fn rpc_error(e: CallError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub(crate) fn put(a: &PutArgs) -> Result<Outcome> {
    let s = signer(&a.conn, &a.key_file)?;
    let mut c = client(&a.conn)?;
    if let Some(file) = &a.file {
        return put_file(&mut c, &s, file, a.batch.clamp(1, 10_000), a.conn.json);
    }
    let (Some(k), Some(v)) = (&a.key, &a.value) else { bail!("give KEY VALUE or --file") };
    let tx = sign(&s, Payload::AnchorPut { key: hex32(k, "KEY")?, value: hex32(v, "VALUE")? })?;
    let r = c
        .call("anchor_put", json!({"tx": hex::encode(tx.encode()), "wait": !a.no_wait}))
        .map_err(rpc_error)?;
    if a.conn.json {
        println!("{r}");
    } else if r["status"] == "committed" {
        println!("({}, {:?})", r["ok"], r["message"].as_str().unwrap_or(""));
    } else {
        println!("pending {}", r["txHash"].as_str().unwrap_or(""));
    }
    Ok(if r["ok"] == json!(false) { Outcome::Invalid } else { Outcome::Ok })
}

pub(crate) fn get(a: &GetArgs) -> Result<Outcome> {
    let key = hex32(&a.key, "KEY")?;
    let r = client(&a.conn)?
        .call("anchor_get", json!([format!("0x{}", hex::encode(key))]))
        .map_err(rpc_error)?;
    if a.conn.json {
        println!("{r}");
    } else {
        println!(
            "({}, {:?}, {})",
            r["ok"],
            r["message"].as_str().unwrap_or(""),
            r["value"].as_str().unwrap_or("")
        );
    }
    Ok(if r["ok"] == json!(true) { Outcome::Ok } else { Outcome::Invalid })
}

pub(crate) fn verify(a: &VerifyArgs) -> Result<Outcome> {
    use base64::Engine as _;
    let bytes = std::fs::read(&a.slip).with_context(|| a.slip.display().to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let r = client(&a.conn)?.call("anchor_verify", json!([b64])).map_err(rpc_error)?;
    if a.conn.json {
        println!("{r}");
    } else if r["match"] == json!(true) {
        println!("anchored: the slip matches block {}", r["blockNumber"]);
    } else if r["anchored"] == json!(true) {
        println!("MISMATCH: this key was anchored with another value {}", r["anchoredValue"]);
    } else {
        println!("not anchored: key {}", r["key"].as_str().unwrap_or(""));
    }
    Ok(if r["match"] == json!(true) { Outcome::Ok } else { Outcome::Invalid })
}

fn progress_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".vpbox-progress");
    PathBuf::from(p)
}

fn save_progress(path: &Path, done: u64, inflight: Option<&[u8]>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let v = json!({"done": done, "inflight": inflight.map(hex::encode)});
    std::fs::write(&tmp, v.to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn put_file(
    c: &mut RpcClient,
    s: &SoftwareSigner,
    file: &Path,
    batch: usize,
    json_out: bool,
) -> Result<Outcome> {
    let f = std::fs::File::open(file).with_context(|| file.display().to_string())?;
    let mut pairs = Vec::new();
    for (n, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) =
            t.split_once(',').with_context(|| format!("line {}: expected key,value", n + 1))?;
        let at = format!("line {}", n + 1);
        pairs.push((hex32(k, &format!("{at}: key"))?, hex32(v, &format!("{at}: value"))?));
    }
    let progress = progress_path(file);
    let (mut done, inflight) = match std::fs::read_to_string(&progress) {
        Ok(text) => {
            let v: Value = serde_json::from_str(&text).context("progress file")?;
            let inflight = v["inflight"].as_str().and_then(|h| hex::decode(h).ok());
            (v["done"].as_u64().unwrap_or(0) as usize, inflight)
        }
        Err(_) => (0, None),
    };
    if done > 0 {
        eprintln!("resuming after {done} of {} anchors", pairs.len());
    }
    let (mut anchored, mut existed) = (0u64, 0u64);
    let start = Instant::now();
    let mut inflight = inflight;
    while done < pairs.len() {
        let chunk = &pairs[done..(done + batch).min(pairs.len())];
        // The transaction in flight when the last run stopped is re-sent as is, if it still
        // covers these pairs; otherwise sign a new one.
        let bytes = match inflight.take().and_then(|b| Tx::decode(&b).ok()) {
            Some(tx) if matches!(&tx.body.payload, Payload::AnchorPutBatch(p) if p == chunk) => {
                tx.encode()
            }
            _ => sign(s, Payload::AnchorPutBatch(chunk.to_vec()))?.encode(),
        };
        save_progress(&progress, done as u64, Some(&bytes))?;
        let r = loop {
            match c.call("anchor_putBatch", json!({"tx": hex::encode(&bytes), "wait": true})) {
                Ok(r) if r["status"] == "committed" => break r,
                Ok(_) => {} // still pending after the node's wait: ask again (same transaction)
                Err(CallError::Rpc { code: -32004, .. }) => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Err(CallError::Rpc { code: -32003, .. }) => {
                    bail!(
                        "the transaction in flight expired; delete {} to start that batch anew",
                        progress.display()
                    )
                }
                Err(e) => return Err(rpc_error(e)),
            }
        };
        for res in r["results"].as_array().into_iter().flatten() {
            if res["ok"] == json!(true) { anchored += 1 } else { existed += 1 }
        }
        done += chunk.len();
        save_progress(&progress, done as u64, None)?;
        let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-3);
        let width = 30;
        let filled = done * width / pairs.len().max(1);
        eprint!(
            "\r[{}{}] {done}/{} anchors ({rate:.0}/s)",
            "#".repeat(filled),
            ".".repeat(width - filled),
            pairs.len()
        );
    }
    eprintln!();
    let _ = std::fs::remove_file(&progress);
    if json_out {
        println!("{}", json!({"anchors": pairs.len(), "success": anchored, "keyExists": existed}));
    } else {
        println!(
            "{} anchors: {anchored} (true, \"Success\"), {existed} (false, \"the key exist\")",
            pairs.len()
        );
    }
    let _ = std::io::stdout().flush();
    Ok(Outcome::Ok)
}
