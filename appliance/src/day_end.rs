//! A POSP's day-end file: `vpbox anchor put --file` sends it, `vpbox anchor check --file`
//! confirms it.
//!
//! The file is CSV of `key,value` lines (32 bytes each, hex, `0x` optional). Blank lines and
//! `#` comments are skipped, and so is a first line that is a header (`key,value`: both fields
//! have characters no hex number has; broken hex is an error, never skipped): spreadsheets
//! write one.
//!
//! `put --file` keeps several batches in flight (`--in-flight`, 4 by default): while the node
//! commits one, the next are already stored in its pool, so blocks follow each other without
//! waiting for the client's round trip. A batch the node has stored is then awaited by its
//! hash (`tx_getTransactionReceipt` with `wait`), not sent a second time. It records its
//! progress beside the file, in `FILE.vpbox-progress` (JSON, [`Progress`]): the pairs
//! committed from the file's first (a prefix: a batch that commits before an older one counts
//! once the older has), the batches in flight, in file order, and the SM3 of the file they
//! belong to. Each batch is recorded before it is sent, by what makes its body — its number of
//! pairs, nonce and timestamp — and the body's hash, not by its bytes: a batch of 10,000 pairs
//! is 1.3 MB of hex, and the record is written (synced) again at each commit. Run again after
//! an interruption, it makes each recorded body again from the file, checks it has the
//! recorded hash, signs it and sends it: a transaction's hash is its body's (the signature is
//! not in it), so the node takes it as the same transaction (a duplicate gets its first result,
//! never a second execution), and goes on from there. A body can be made again only with the
//! key that signed it (its fingerprint is in the body): another key is refused, naming it. A
//! file that changed since is refused rather than resumed at a wrong line. When the whole file is
//! committed the record stays, marked finished: running the same file again sends nothing and says
//! so (delete the record to send it again). The progress display is a bar redrawn in place on a
//! terminal, and a plain line per tenth of the file otherwise (no carriage returns in logs).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vpbox_ledger::tx::{Payload, Tx, TxBody};
use vpbox_node::client::{CallError, RpcClient};
use vpbox_sm::Signer;
use vpbox_sm::sm3::Digest;

use crate::Outcome;
use crate::client_cmd::{rpc_error, sign};

/// The largest day-end file read (bytes): 8 million pairs of 131-byte lines, well past a
/// bank's day.
const FILE_MAX: u64 = 1 << 30;

/// A pair of the file, with its line number (1-based) for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) number: usize,
    pub(crate) key: [u8; 32],
    pub(crate) value: [u8; 32],
}

/// A file's pairs, and whether a header line was skipped.
#[derive(Debug)]
pub(crate) struct Pairs {
    pub(crate) lines: Vec<Line>,
    pub(crate) header: Option<usize>,
    /// SM3 of the file's bytes.
    pub(crate) digest: Digest,
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    Digest::from_hex(s.trim()).map(|d| d.0)
}

/// Whether a field is a column's name: it has a character no hex number has.
fn words(field: &str) -> bool {
    field.trim().chars().any(|c| !(c.is_ascii_hexdigit() || c == 'x' || c == 'X'))
}

/// Parses a day-end file's text (see the module's docs).
pub(crate) fn parse(text: &str) -> Result<(Vec<Line>, Option<usize>)> {
    let mut lines = Vec::new();
    let mut header = None;
    for (n, raw) in text.lines().enumerate() {
        let number = n + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((k, v)) = t.split_once(',') else {
            bail!("line {number}: expected key,value, not {t:?}");
        };
        match (hex32(k), hex32(v)) {
            (Some(key), Some(value)) => lines.push(Line { number, key, value }),
            // The first line of data naming its columns (words, not broken hex: a mistyped or
            // truncated pair is an error, never skipped) is a header, not a pair.
            (None, None) if lines.is_empty() && header.is_none() && words(k) && words(v) => {
                header = Some(number);
            }
            (None, _) => bail!(
                "line {number}: the key must be 32 bytes as 64 hex digits (0x optional), not {:?}",
                k.trim()
            ),
            (_, None) => bail!(
                "line {number}: the value must be 32 bytes as 64 hex digits (0x optional), not {:?}",
                v.trim()
            ),
        }
    }
    Ok((lines, header))
}

/// Reads and parses a day-end file. Its SM3 is computed on a thread of its own while the lines
/// are parsed: both come before the first batch is sent, and at 250,000 lines (33 MB) each
/// takes a tenth of a second or more.
pub(crate) fn read(file: &Path) -> Result<Pairs> {
    let bytes = crate::files::read_all(&file.display().to_string(), FILE_MAX)?;
    let text =
        std::str::from_utf8(&bytes).with_context(|| format!("{}: not text", file.display()))?;
    let hash = || vpbox_sm::sm3::hash(&bytes);
    let (parsed, digest) = std::thread::scope(|s| {
        // (Hashed here, after the parse, when no thread can be had.)
        let hashing = std::thread::Builder::new().spawn_scoped(s, hash).ok();
        let parsed = parse(text);
        let digest = match hashing.map(|h| h.join()) {
            Some(Ok(d)) => d,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => hash(),
        };
        (parsed, digest)
    });
    let (lines, header) = parsed.with_context(|| file.display().to_string())?;
    Ok(Pairs { lines, header, digest })
}

/// What `put --file` records of its progress (`FILE.vpbox-progress`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// Pairs committed, from the file's first.
    done: u64,
    /// The signed transaction sent and not known committed (hex), as runs of one batch in
    /// flight recorded it; read for their resumption, never written.
    #[serde(default, skip_serializing)]
    inflight: Option<String>,
    /// The signed transactions sent and not known committed (hex), in file order from `done`,
    /// as earlier versions recorded them; read for their resumption, never written.
    #[serde(default, skip_serializing)]
    in_flight: Vec<String>,
    /// The batches sent and not known committed, in file order after those of `in_flight`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    batches: Vec<Recorded>,
    /// SM3 of the file (hex); absent in records of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_sm3: Option<String>,
    /// When the whole file was committed (RFC 3339), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finished: Option<String>,
}

/// A batch in flight as the progress record holds it: what makes its body again from the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    /// Its pairs: the file's next ones after the batch before it.
    pairs: u64,
    /// The body's nonce and timestamp.
    nonce: u64,
    timestamp_ms: u64,
    /// SM3 of the body (hex): the transaction's hash.
    hash: String,
}

fn progress_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".vpbox-progress");
    PathBuf::from(p)
}

fn save(path: &Path, p: &Progress) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string(p)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[allow(clippy::disallowed_methods)] // the shell reads the clock for the record
fn now() -> SystemTime {
    SystemTime::now()
}

/// How the progress is shown: a bar redrawn in place on a terminal, else a line per tenth.
struct Display {
    terminal: bool,
    total: usize,
    tenth: usize,
}

impl Display {
    fn new(total: usize) -> Self {
        Self { terminal: std::io::stderr().is_terminal(), total, tenth: 0 }
    }

    /// `done` of the file's pairs are committed, `sent` of them by this run in `elapsed`.
    fn show(&mut self, done: usize, sent: usize, elapsed: Duration) {
        let rate = sent as f64 / elapsed.as_secs_f64().max(1e-3);
        let total = self.total.max(1);
        if self.terminal {
            let width = 30;
            let filled = done * width / total;
            eprint!(
                "\r[{}{}] {done}/{} anchors ({rate:.0}/s)",
                "#".repeat(filled),
                ".".repeat(width - filled),
                self.total
            );
        } else {
            let tenth = done * 10 / total;
            if tenth > self.tenth {
                self.tenth = tenth;
                eprintln!("{done}/{} anchors ({}%, {rate:.0}/s)", self.total, tenth * 10);
            }
        }
    }

    fn end(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// `vpbox anchor put --file`: sends the file's pairs in `AnchorPutBatch` transactions of
/// `batch` pairs, up to `depth` of them in flight, resuming an interrupted run.
pub(crate) fn put(
    c: &mut RpcClient,
    s: &dyn Signer,
    file: &Path,
    batch: usize,
    depth: usize,
    json_out: bool,
) -> Result<Outcome> {
    let pairs = read(file)?;
    if let Some(h) = pairs.header {
        eprintln!("{}: line {h} is a header: skipped", file.display());
    }
    let total = pairs.lines.len();
    let path = progress_path(file);
    let mut progress = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<Progress>(&text)
            .with_context(|| format!("{}: corrupt (delete it to start anew)", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Progress::default(),
        Err(e) => return Err(e).context(path.display().to_string()),
    };
    let digest = pairs.digest.to_hex();
    if progress.file_sm3.as_ref().is_some_and(|d| *d != digest) {
        bail!(
            "{} changed since the run that wrote {} ({} of its pairs were committed then): if \
             this is another file, delete {} and send it again",
            file.display(),
            path.display(),
            progress.done,
            path.display()
        );
    }
    let mut done = usize::try_from(progress.done).unwrap_or(usize::MAX).min(total);
    if let Some(at) = &progress.finished {
        let msg = format!(
            "{} was anchored completely at {at} ({total} pairs): nothing sent. `vpbox anchor \
             check --file {}` confirms each pair; delete {} to send it again",
            file.display(),
            file.display(),
            path.display()
        );
        if json_out {
            println!("{}", json!({"anchors": total, "resumedAt": total, "finished": at}));
        } else {
            println!("{msg}");
        }
        return Ok(Outcome::Ok);
    }
    let resumed_at = done;
    if done > 0 {
        eprintln!("resuming after {done} of {total} anchors (committed by an earlier run)");
    }
    progress.file_sm3 = Some(digest);
    let (mut anchored, mut existed) = (0u64, 0u64);
    let start = Instant::now();
    let mut display = Display::new(total);
    let all: Vec<([u8; 32], [u8; 32])> = pairs.lines.iter().map(|l| (l.key, l.value)).collect();
    // The transactions in flight when the last run stopped are re-sent as they are, as long as
    // they cover the pairs from `done` on in order, whatever their size (a run with another
    // --batch, or another default, resumes them too); from the first that does not, signed
    // anew.
    let recorded: Vec<String> =
        progress.inflight.take().into_iter().chain(progress.in_flight.drain(..)).collect();
    let mut flight: VecDeque<InFlight> = VecDeque::new();
    let mut next = done;
    for hex_tx in recorded {
        let Some(tx) = hex::decode(&hex_tx).ok().and_then(|b| Tx::decode(&b).ok()) else { break };
        match &tx.body().payload {
            Payload::AnchorPutBatch(p) if all.get(next..next + p.len()) == Some(&p[..]) => {
                next += p.len();
                flight.push_back(InFlight::new(&tx)?);
            }
            _ => break,
        }
    }
    // The batches recorded by their bodies are made again and signed: each must come out with
    // its recorded hash (the same key, the same pairs), or the transaction the node may hold
    // under that hash would be lost track of.
    for r in std::mem::take(&mut progress.batches) {
        let Some(tx) = remake(s, &r, &all, next)? else {
            bail!(
                "{}: its batch in flight from pair {} has {} pairs, and the file has not that \
                 many from there: delete it to send the file again",
                path.display(),
                next + 1,
                r.pairs
            );
        };
        next += r.pairs as usize;
        flight.push_back(InFlight::new(&tx)?);
    }
    let depth = depth.max(1);
    while done < total {
        // Fill the window: sign, record, then submit without waiting for the commit. A
        // submission the node or the proxy holds back (backpressure, rate limit) stops the
        // filling; that transaction is sent again when its turn to be awaited comes.
        let mut open = true;
        let signed = flight.len();
        while next < total && flight.len() < depth {
            let end = (next + batch).min(total);
            let tx = sign(s, Payload::AnchorPutBatch(all[next..end].to_vec()))?;
            flight.push_back(InFlight::new(&tx)?);
            next = end;
        }
        if flight.len() > signed {
            // One synced record for the round, before any of its new batches is sent.
            record(&path, &mut progress, done, &flight)?;
        }
        for f in flight.iter_mut().filter(|f| !f.submitted) {
            if !open {
                break;
            }
            open = submit(c, &f.hex, &path)?;
            f.submitted = open;
        }
        // Await the oldest: its commit moves `done` on. One the node has stored is awaited by
        // its hash; one it has not (held back, or unknown to it) is sent until committed.
        let Some(oldest) = flight.front() else { break };
        let committed = if oldest.submitted { await_commit(c, &oldest.hash)? } else { None };
        let r = match committed {
            Some(r) => r,
            None => send(c, &oldest.hex, &path)?,
        };
        for res in r["results"].as_array().into_iter().flatten() {
            if res["ok"] == json!(true) { anchored += 1 } else { existed += 1 }
        }
        done += oldest.len;
        flight.pop_front();
        // The next round's record carries this commit; with nothing left to sign there is
        // none, so the file's last batches record theirs here.
        if next >= total {
            record(&path, &mut progress, done, &flight)?;
        }
        display.show(done, done - resumed_at, start.elapsed());
    }
    display.end();
    progress.finished = Some(humantime::format_rfc3339_seconds(now()).to_string());
    save(&path, &progress)?;
    let elapsed = start.elapsed().as_secs_f64();
    let sent = total - resumed_at;
    if json_out {
        println!(
            "{}",
            json!({"anchors": total, "resumedAt": resumed_at, "sent": sent, "success": anchored, "keyExists": existed, "seconds": elapsed})
        );
    } else {
        let before = if resumed_at > 0 {
            format!("{resumed_at} committed by an earlier run; ")
        } else {
            String::new()
        };
        println!(
            "{total} anchors: {before}this run sent {sent} in {elapsed:.1} s ({:.0}/s): \
             {anchored} (true, \"Success\"), {existed} (false, \"the key exist\")",
            sent as f64 / elapsed.max(1e-3)
        );
    }
    let _ = std::io::stdout().flush();
    Ok(Outcome::Ok)
}

/// A batch transaction sent (or about to be) and not yet known committed.
struct InFlight {
    /// Pairs it covers (from the end of the one before it).
    len: usize,
    /// Its hash (of the body: the signature is not in it).
    hash: Digest,
    /// Its encoding in hex, as sent (made once: a batch of 10,000 pairs is 1.3 MB of it).
    hex: String,
    /// What the progress record holds of it.
    recorded: Recorded,
    /// Whether the node has stored it (answered `pending` or committed).
    submitted: bool,
}

impl InFlight {
    /// A signed batch, not yet submitted. (Another payload covers no pairs.)
    fn new(tx: &Tx) -> Result<Self> {
        let len = match &tx.body().payload {
            Payload::AnchorPutBatch(p) => p.len(),
            _ => 0,
        };
        let hash = tx.hash();
        let recorded = Recorded {
            pairs: len as u64,
            nonce: tx.body().nonce,
            timestamp_ms: tx.body().timestamp_ms,
            hash: hash.to_hex(),
        };
        Ok(Self { len, hash, hex: hex::encode(tx.encode()), recorded, submitted: false })
    }
}

/// The recorded batch `r`, made again from the file's pairs `all` from `next` on and signed
/// with `s`; `None` when the file has not that many pairs left (not a record of this file),
/// an error when the body made again has not the recorded hash: `s` is not the key that
/// signed it, and the batch may be on the ledger or in a node's pool under the old hash.
fn remake(
    s: &dyn Signer,
    r: &Recorded,
    all: &[([u8; 32], [u8; 32])],
    next: usize,
) -> Result<Option<Tx>> {
    let Some(pairs) = usize::try_from(r.pairs)
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| all.get(next..next.checked_add(n)?))
    else {
        return Ok(None);
    };
    let body = TxBody {
        submitter: s.public_key().fingerprint(),
        nonce: r.nonce,
        timestamp_ms: r.timestamp_ms,
        payload: Payload::AnchorPutBatch(pairs.to_vec()),
    };
    if body.hash().to_hex() != r.hash {
        bail!(
            "the batch in flight from pair {} (transaction 0x{}) does not come out of this \
             file and this key (fingerprint 0x{}) again: run again with the key that started \
             the file",
            next + 1,
            r.hash,
            body.submitter.to_hex()
        );
    }
    Ok(Some(body.sign(s)?))
}

/// Writes `done` and the batches in flight to the progress record (synced).
fn record(path: &Path, p: &mut Progress, done: usize, flight: &VecDeque<InFlight>) -> Result<()> {
    p.done = done as u64;
    p.batches = flight.iter().map(|f| f.recorded.clone()).collect();
    save(path, p)
}

/// Submits one signed batch without waiting for its commit: true once the node has stored it
/// (or already had it), false when the node's backpressure or the proxy's rate limit holds it
/// back for now.
fn submit(c: &mut RpcClient, hex: &str, progress: &Path) -> Result<bool> {
    match c.call("anchor_putBatch", json!({"tx": hex, "wait": false})) {
        Ok(_) => Ok(true),
        Err(CallError::Rpc { code: -32004 | -32008, .. }) => Ok(false),
        Err(CallError::Rpc { code: -32003, .. }) => bail!(
            "a transaction in flight expired; delete {} to start those batches anew",
            progress.display()
        ),
        Err(e) => Err(rpc_error(e)),
    }
}

/// Waits for a batch the node has stored, by its hash (`tx_getTransactionReceipt` with
/// `wait`): its receipt once committed, or `None` when the node knows it neither committed nor
/// pending (a node that restarted without it, or one that does not wait by hash), and then the
/// caller sends it again. A wait that ran out asks again.
fn await_commit(c: &mut RpcClient, hash: &Digest) -> Result<Option<Value>> {
    loop {
        match c.call("tx_getTransactionReceipt", json!([format!("0x{}", hash.to_hex()), true])) {
            Ok(r) if r["results"].is_array() => return Ok(Some(r)),
            Ok(_) => {} // still pending after the node's wait
            Err(CallError::Rpc { code: -32602, .. }) => return Ok(None),
            Err(CallError::Rpc { code: -32004, .. }) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(CallError::Rpc { code: -32008, data, .. }) => retry_after(data.as_ref()),
            Err(e) => return Err(rpc_error(e)),
        }
    }
}

/// Waits as long as the proxy's rate limit asks (`retryAfterMs` in its -32008 error's data;
/// a second if it does not say, at most a minute).
fn retry_after(data: Option<&Value>) {
    let wait = data.and_then(|d| d["retryAfterMs"].as_u64());
    std::thread::sleep(Duration::from_millis(wait.unwrap_or(1_000).min(60_000)));
}

/// Sends one signed batch until it is committed, waiting out the node's backpressure and the
/// proxy's rate limit; its committed answer.
fn send(c: &mut RpcClient, hex: &str, progress: &Path) -> Result<Value> {
    let mut limited: Option<Instant> = None;
    loop {
        match c.call("anchor_putBatch", json!({"tx": hex, "wait": true})) {
            Ok(r) if r["status"] == "committed" => return Ok(r),
            Ok(_) => {} // still pending after the node's wait: ask again (same transaction)
            Err(CallError::Rpc { code: -32004, .. }) => {
                std::thread::sleep(Duration::from_millis(500));
            }
            // The proxy's rate limit: nothing of the batch ran; the same transaction is sent
            // again when the client's bucket holds it (at most a minute's wait).
            Err(CallError::Rpc { code: -32008, data, .. }) => {
                // Other traffic of the same certificate may keep the bucket below this batch:
                // give up after ten minutes of waiting for one batch.
                let since = *limited.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(600) {
                    bail!(
                        "the proxy's rate limit held this batch back for 10 minutes; run again \
                         later (the file resumes where it stopped)"
                    );
                }
                retry_after(data.as_ref());
            }
            Err(CallError::Rpc { code: -32003, .. }) => bail!(
                "the transaction in flight expired; delete {} to start that batch anew",
                progress.display()
            ),
            Err(e) => return Err(rpc_error(e)),
        }
    }
}

/// Reads per JSON-RPC batch of `anchor check` (the node takes up to 1,000 requests a body).
const CHECK_BATCH: usize = 1000;

/// How one pair of the file stands on the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Anchored, with the file's value.
    Same,
    /// Anchored with another value.
    Other([u8; 32]),
    /// Not anchored.
    Absent,
}

/// What `anchor_get` answered, for a pair whose file value is `want`.
fn found(answer: &Value, want: &[u8; 32]) -> Result<Found> {
    if answer["ok"] != json!(true) {
        return Ok(Found::Absent);
    }
    let value = answer["value"].as_str().and_then(hex32).context("anchor_get: no value")?;
    Ok(if value == *want { Found::Same } else { Found::Other(value) })
}

/// `vpbox anchor check --file`: confirms every pair of the file is anchored with its value.
/// Exit 0 when all are; 1, naming the first lines that are not, otherwise.
pub(crate) fn check(c: &mut RpcClient, file: &Path, json_out: bool) -> Result<Outcome> {
    let pairs = read(file)?;
    if let Some(h) = pairs.header {
        eprintln!("{}: line {h} is a header: skipped", file.display());
    }
    let (mut same, mut other, mut absent) = (0usize, Vec::new(), Vec::new());
    for chunk in pairs.lines.chunks(CHECK_BATCH) {
        let body: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, l)| {
                json!({"jsonrpc": "2.0", "id": i, "method": "anchor_get", "params": [format!("0x{}", hex::encode(l.key))]})
            })
            .collect();
        let body = serde_json::to_vec(&body)?;
        let answers = read_batch(c, &body)?;
        let mut by_id = vec![None; chunk.len()];
        for a in answers {
            let id = a["id"].as_u64().and_then(|i| usize::try_from(i).ok());
            if let Some(slot) = id.and_then(|i| by_id.get_mut(i)) {
                *slot = Some(a);
            }
        }
        for (l, a) in chunk.iter().zip(by_id) {
            let a = a.with_context(|| format!("line {}: no answer", l.number))?;
            if let Some(e) = a.get("error") {
                bail!("line {}: {e}", l.number);
            }
            match found(&a["result"], &l.value)? {
                Found::Same => same += 1,
                Found::Other(v) => other.push((l.number, v)),
                Found::Absent => absent.push(l.number),
            }
        }
    }
    let total = pairs.lines.len();
    if json_out {
        println!(
            "{}",
            json!({
                "anchors": total,
                "matching": same,
                "otherValue": other.iter().map(|(n, v)| json!({"line": n, "anchoredValue": format!("0x{}", hex::encode(v))})).collect::<Vec<_>>(),
                "notAnchored": absent,
            })
        );
    } else {
        println!("{}: {same} of {total} pairs anchored with their value", file.display());
        if !other.is_empty() {
            println!("{} anchored with another value:", other.len());
            for (n, v) in other.iter().take(10) {
                println!("  line {n}: the ledger holds 0x{}", hex::encode(v));
            }
        }
        if !absent.is_empty() {
            let shown: Vec<String> = absent.iter().take(10).map(usize::to_string).collect();
            let more = if absent.len() > 10 { ", …" } else { "" };
            println!("{} not anchored: lines {}{more}", absent.len(), shown.join(", "));
        }
    }
    Ok(if same == total { Outcome::Ok } else { Outcome::Invalid })
}

/// Posts a JSON-RPC batch of reads; its answers. The proxy's rate limit (one error object,
/// -32008, instead of the batch's answers: nothing was read) is waited out as `put` does.
fn read_batch(c: &mut RpcClient, body: &[u8]) -> Result<Vec<Value>> {
    let start = Instant::now();
    loop {
        let raw = c.post(body).map_err(rpc_error)?;
        let answer: Value = serde_json::from_slice(&raw).context("the node's answer")?;
        let error = match answer {
            Value::Array(answers) => return Ok(answers),
            other => other["error"].clone(),
        };
        if error["code"] != json!(-32008) || start.elapsed() > Duration::from_secs(600) {
            bail!("the reads were refused: {error}");
        }
        retry_after(Some(&error["data"]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: u8) -> String {
        format!("0x{}", hex::encode([b; 32]))
    }

    /// Records of earlier versions, with the signed transactions in flight (`inflight`: one;
    /// `in_flight`: a list), are read for their resumption; a record is written with the
    /// batches' bodies (`batches`) only, emptied when nothing is in flight.
    #[test]
    fn progress_records_of_every_form_are_read_and_the_batches_are_written() {
        let old: Progress =
            serde_json::from_str(r#"{"done":200,"inflight":"aa","file_sm3":"00"}"#).unwrap();
        assert_eq!((old.done, old.inflight.as_deref(), old.in_flight.len()), (200, Some("aa"), 0));
        let list: Progress =
            serde_json::from_str(r#"{"done":200,"in_flight":["bb","cc"],"file_sm3":"00"}"#)
                .unwrap();
        assert_eq!(list.in_flight, ["bb", "cc"]);
        let batch = Recorded { pairs: 7, nonce: 9, timestamp_ms: 11, hash: "dd".into() };
        let mut p = Progress { done: 5, batches: vec![batch.clone()], ..list };
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            text.contains(r#""batches":[{"pairs":7,"nonce":9,"timestamp_ms":11,"hash":"dd"}]"#),
            "{text}"
        );
        assert!(!text.contains("flight"), "{text}");
        let back: Progress = serde_json::from_str(&text).unwrap();
        assert_eq!((back.done, back.batches), (5, vec![batch]));
        p.batches.clear();
        assert!(!serde_json::to_string(&p).unwrap().contains("batches"));
    }

    fn signer() -> vpbox_sm::SoftwareSigner {
        vpbox_sm::SoftwareSigner::new(vpbox_sm::sm2::SecretKey::generate().unwrap())
    }

    /// A batch recorded by its body is made again from the file with the same hash (another
    /// signature: the hash is the body's), its pairs the file's from where it starts; another
    /// key is refused, naming the batch; a record past the file's end is not this file's.
    #[test]
    fn a_recorded_batch_is_made_again_with_its_hash_only_by_its_key() {
        let all: Vec<([u8; 32], [u8; 32])> = (0..10u8).map(|i| ([i; 32], [i + 100; 32])).collect();
        let key = signer();
        let tx = sign(&key, Payload::AnchorPutBatch(all[4..7].to_vec())).unwrap();
        let first = InFlight::new(&tx).unwrap();
        assert_eq!((first.len, first.hash), (3, tx.hash()));
        let r = first.recorded;
        assert_eq!(
            (r.pairs, r.nonce, r.timestamp_ms),
            (3, tx.body().nonce, tx.body().timestamp_ms)
        );
        let again = remake(&key, &r, &all, 4).unwrap().unwrap();
        assert_eq!(again.hash(), tx.hash());
        assert_eq!(again.body(), tx.body());
        assert_eq!(again.verify(key.public_key()), vpbox_sm::Verification::Valid);
        let remade = InFlight::new(&again).unwrap();
        assert_eq!((remade.len, remade.hash, remade.recorded), (3, tx.hash(), r.clone()));
        // From another place in the file the pairs differ: not the recorded body.
        let e = remake(&key, &r, &all, 5).unwrap_err().to_string();
        assert!(e.contains("from pair 6") && e.contains(&r.hash), "{e}");
        let e = remake(&signer(), &r, &all, 4).unwrap_err().to_string();
        assert!(e.contains("with the key that started"), "{e}");
        assert!(remake(&key, &r, &all, 8).unwrap().is_none(), "past the file's end");
        let empty = Recorded { pairs: 0, ..r };
        assert!(remake(&key, &empty, &all, 4).unwrap().is_none(), "no pairs");
    }

    /// Pairs in order with their line numbers; comments and blank lines skipped; a first line
    /// naming the columns is a header; a bad field names its line.
    #[test]
    fn a_day_end_file_is_parsed_with_its_header_and_line_numbers() {
        let text = format!(
            "key,value\n# a comment\n\n{},{}\r\n {} , {} \n",
            hex(1),
            hex(2),
            &hex(3)[2..],
            hex(4)
        );
        let (lines, header) = parse(&text).unwrap();
        assert_eq!(header, Some(1));
        assert_eq!(
            lines,
            [
                Line { number: 4, key: [1; 32], value: [2; 32] },
                Line { number: 5, key: [3; 32], value: [4; 32] },
            ]
        );
        let (lines, header) = parse(&format!("{},{}\n", hex(1), hex(2))).unwrap();
        assert_eq!((lines.len(), header), (1, None), "no header");
        // Only the first line of data can be a header.
        let late = format!("{},{}\nkey,value\n", hex(1), hex(2));
        assert!(parse(&late).unwrap_err().to_string().starts_with("line 2: the key"));
        let bad_value = format!("{},0x12\n", hex(1));
        assert!(parse(&bad_value).unwrap_err().to_string().starts_with("line 1: the value"));
        // Broken hex on the first line is an error, not a header.
        assert!(parse("0x12,0x34\n").unwrap_err().to_string().starts_with("line 1: the key"));
        assert!(parse("abc,def\n").unwrap_err().to_string().starts_with("line 1: the key"));
        let one_bad = format!("key,{}\n", hex(1));
        assert!(parse(&one_bad).unwrap_err().to_string().starts_with("line 1: the key"));
        assert!(parse("no comma\n").unwrap_err().to_string().contains("expected key,value"));
    }

    #[test]
    fn a_pair_is_found_with_its_value_another_or_absent() {
        let v = format!("0x{}", hex::encode([7u8; 32]));
        let ok = json!({"ok": true, "message": "Success", "value": v});
        assert_eq!(found(&ok, &[7; 32]).unwrap(), Found::Same);
        assert_eq!(found(&ok, &[8; 32]).unwrap(), Found::Other([7; 32]));
        let absent = json!({"ok": false, "message": "the key is not exist", "value": hex(0)});
        assert_eq!(found(&absent, &[0; 32]).unwrap(), Found::Absent, "the zero value is absence");
        assert!(found(&json!({"ok": true}), &[7; 32]).is_err());
    }
}
