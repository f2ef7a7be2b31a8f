//! `vpbox anchor put|get|verify`: a POSP's client of a running node, and
//! `vpbox bench anchors`.
//!
//! The node is found through `--rpc SOCKET`, or the cluster folder's genesis (`--dir`,
//! default `./vpbox-dev`: the first node that answers). Transactions are signed here with the
//! client's own SM2 key, which every signing command requires — `--key-file`, a key in a token
//! (`--module`, `--token`, `--key-id`, `--pin-file`), or a POSP's client file (`--posp FILE`,
//! [`PospFile`]) that names either and the box to call — so nobody signs as another bank's POSP
//! by leaving a flag out.
//!
//! `put --file` and `check --file` take a day-end file: see [`crate::day_end`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde_json::{Value, json};
use vpbox_ledger::tx::{Payload, Tx, TxBody};
use vpbox_node::client::{CallError, RpcClient};
use vpbox_node::genesis::Genesis;
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::sm3::Digest;
use vpbox_sm::{Signer, SoftwareSigner};

use crate::Outcome;

/// How to reach a node and sign.
///
/// API calls (anchors) go over HTTPS to a box's proxy, as a POSP's do: `--url` with
/// `--tls-cert` and `--tls-key`, or, in a development cluster's folder, the first box whose
/// proxy answers, with the folder's bank-a POSP's TLS identity unless `--tls-cert` and
/// `--tls-key` (or a `--posp` file) name another. `--rpc` talks to a node's own Unix socket
/// instead (an operator on the box). Certificate, CRL and governance writes go to `--url`
/// when given (as an admin's TLS identity), else to a node's socket.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct Conn {
    /// The cluster's folder (its genesis lists the nodes).
    #[arg(long, default_value = "vpbox-dev")]
    pub(crate) dir: PathBuf,
    /// A node's JSON-RPC socket (instead of the folder's boxes).
    #[arg(long, conflicts_with = "url")]
    pub(crate) rpc: Option<PathBuf>,
    /// A box's API, `https://HOST:PORT` (mutual TLS; needs --tls-cert and --tls-key).
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// The name the box's certificate carries, when the URL's host is an address.
    #[arg(long)]
    pub(crate) server_name: Option<String>,
    /// This client's certificate chain (PEM) for the API.
    #[arg(long)]
    pub(crate) tls_cert: Option<PathBuf>,
    /// This client's SM2 key (PKCS#8 PEM) for the API.
    #[arg(long)]
    pub(crate) tls_key: Option<PathBuf>,
    /// The consortium's root certificates (PEM) the box's certificate must chain to (default:
    /// the folder's genesis's).
    #[arg(long)]
    pub(crate) roots: Option<PathBuf>,
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
    /// Pairs per batch transaction with --file (1 to 10,000). The default is the most a
    /// transaction holds: one signature, one receipt and one path through the state map's top
    /// levels for more pairs (250,000 lines on a fresh 4-node cluster: 4.9-5.0 s against
    /// 5.3-5.5 s in batches of 5,000).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) batch: usize,
    /// Batch transactions in flight at once with --file (1 to 16): while the node commits
    /// one, the next wait in its pool.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub(crate) in_flight: u64,
    /// Whose key signs.
    #[command(flatten)]
    pub(crate) signer: KeyArgs,
    /// Return once the node has stored the transaction, without waiting for its commit.
    #[arg(long)]
    pub(crate) no_wait: bool,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox cert enroll` and `vpbox cert publish-crl`.
#[derive(Debug, Args)]
pub(crate) struct CertTxArgs {
    /// The certificate to enroll, or the CRL to publish (PEM).
    pub(crate) file: PathBuf,
    /// The submitter's key: for an enrollment, the certified key; for a CRL, any enrolled
    /// POSP's or admin's.
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox cert publish-crl`.
#[derive(Debug, Args)]
pub(crate) struct PublishCrlArgs {
    #[command(flatten)]
    pub(crate) tx: CertTxArgs,
    /// Publish nothing, and exit 0, when the ledger holds this very CRL already (a renewal
    /// timer runs this every hour, whether `vpbox ca crl --renew-before` signed a new one or
    /// not).
    #[arg(long)]
    pub(crate) unless_published: bool,
}

/// Whose key signs (one is required): a software key file, a key in an HSM token, or a POSP's
/// client file naming one of them.
#[derive(Debug, Args, Clone)]
pub(crate) struct KeyArgs {
    /// The SM2 key (PKCS#8 PEM).
    #[arg(long, conflicts_with_all = ["module", "posp"])]
    pub(crate) key_file: Option<PathBuf>,
    /// Or a POSP's client file (TOML): its key (`key_file`, or a `[token]` table) and, when
    /// the flags do not say, the box to call (`url`, `server_name`, `roots`, `tls_cert`,
    /// `tls_key`). Paths in it are relative to the file. `vpbox cluster up` writes one per
    /// bank: `posp/BANK.toml`.
    #[arg(long, conflicts_with = "module")]
    pub(crate) posp: Option<PathBuf>,
    /// Or the PKCS#11 module of the token that holds the key.
    #[arg(long, requires_all = ["token", "key_id", "pin_file"])]
    pub(crate) module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, requires = "module")]
    pub(crate) token: Option<String>,
    /// The key's CKA_ID (hex).
    #[arg(long, requires = "module")]
    pub(crate) key_id: Option<String>,
    /// The user PIN file (0400).
    #[arg(long, requires = "module")]
    pub(crate) pin_file: Option<PathBuf>,
}

/// A POSP's client file (`--posp FILE`): everything a POSP server's operator would otherwise
/// repeat on every command. Relative paths are relative to the file's folder.
///
/// ```toml
/// key_file = "posp.pem"            # the signing key (or, in a token: the [token] table below)
/// url = "https://10.1.0.11:8443"   # a box's API
/// server_name = "node1.bank-a"     # the DNS name in the box's certificate
/// roots = "roots.pem"              # the consortium's roots
/// tls_cert = "posp.crt"            # this client's certificate chain
/// tls_key = "posp-tls.pem"         # and its TLS key (a software key, for now)
///
/// # Instead of key_file (a TOML table comes after the top-level keys):
/// # [token]
/// # module = "/usr/lib/softhsm/libsofthsm2.so"
/// # label = "bank-a-posp"
/// # key_id = "01"
/// # pin_file = "/etc/vpbox/posp-pin"   # mode 0400
/// ```
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PospFile {
    /// The signing key, a PKCS#8 PEM file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_file: Option<PathBuf>,
    /// Or the signing key in a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<TokenKey>,
    /// A box's API, `https://HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    /// The name in the box's certificate, when the URL's host is an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server_name: Option<String>,
    /// The consortium's roots (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) roots: Option<PathBuf>,
    /// This client's certificate chain (PEM) for the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// This client's TLS key (PKCS#8 PEM) for the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_key: Option<PathBuf>,
}

/// A signing key in a token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenKey {
    /// The PKCS#11 module.
    pub(crate) module: PathBuf,
    /// The token's label.
    pub(crate) label: String,
    /// The key's CKA_ID (hex).
    pub(crate) key_id: String,
    /// The user PIN file (0400).
    pub(crate) pin_file: PathBuf,
}

impl PospFile {
    /// Reads `path`, its relative paths made relative to its folder; exactly one key.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let mut f: Self = toml::from_str(&text).with_context(|| path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in
            [&mut f.key_file, &mut f.roots, &mut f.tls_cert, &mut f.tls_key].into_iter().flatten()
        {
            *p = base.join(&*p);
        }
        if let Some(t) = &mut f.token {
            t.pin_file = base.join(&t.pin_file);
            t.module = base.join(&t.module); // (an absolute path stays as it is)
        }
        match (&f.key_file, &f.token) {
            (Some(_), None) | (None, Some(_)) => Ok(f),
            _ => bail!("{}: give exactly one of key_file and [token]", path.display()),
        }
    }

    /// `conn` with what its flags leave out taken from this file.
    pub(crate) fn fill(&self, conn: &Conn) -> Conn {
        let mut c = conn.clone();
        if c.rpc.is_none() {
            c.url = c.url.or_else(|| self.url.clone());
        }
        c.server_name = c.server_name.or_else(|| self.server_name.clone());
        c.roots = c.roots.or_else(|| self.roots.clone());
        c.tls_cert = c.tls_cert.or_else(|| self.tls_cert.clone());
        c.tls_key = c.tls_key.or_else(|| self.tls_key.clone());
        c
    }
}

fn open_token(module: &Path, label: &str, id: &str, pin: &Path) -> Result<Box<dyn Signer>> {
    let signer = vpbox_pkcs11::Pkcs11Signer::open(vpbox_pkcs11::SignerConfig {
        module: module.to_path_buf(),
        token: vpbox_pkcs11::TokenSelector::Label(label.to_string()),
        key_id: hex::decode(id.strip_prefix("0x").unwrap_or(id))
            .context("the key id is not hex")?,
        pin: vpbox_pkcs11::Pin::from_file(pin)?,
        profile: None,
        pinned: None,
        sessions: 1,
    })?;
    Ok(Box::new(signer))
}

impl KeyArgs {
    /// The signer these arguments name, and the connection with what a POSP file adds. With
    /// none named, an error that says how to name one (there is no default key).
    pub(crate) fn signer(&self, conn: &Conn) -> Result<(Box<dyn Signer>, Conn)> {
        if let (Some(module), Some(token), Some(id), Some(pin)) =
            (&self.module, &self.token, &self.key_id, &self.pin_file)
        {
            return Ok((open_token(module, token, id, pin)?, conn.clone()));
        }
        if let Some(path) = &self.key_file {
            return Ok((Box::new(signer_from_file(path)?), conn.clone()));
        }
        let Some(path) = &self.posp else {
            let example = conn.dir.join("posp/bank-a.toml");
            bail!(
                "whose key signs? give --key-file KEY, a key in a token (--module, --token, \
                 --key-id, --pin-file), or a POSP's client file --posp FILE (in a development \
                 cluster: --posp {})",
                example.display()
            );
        };
        let f = PospFile::load(path)?;
        let s = match (&f.key_file, &f.token) {
            (Some(k), _) => Box::new(signer_from_file(k)?) as Box<dyn Signer>,
            (None, Some(t)) => open_token(&t.module, &t.label, &t.key_id, &t.pin_file)?,
            (None, None) => bail!("{}: no key", path.display()),
        };
        Ok((s, f.fill(conn)))
    }
}

/// Sends an enrollment (`crl` false) or a CRL (`crl` true) and waits for its block.
/// `vpbox cert publish-crl`.
pub(crate) fn publish_crl(a: &PublishCrlArgs) -> Result<Outcome> {
    if a.unless_published {
        let pem =
            std::fs::read_to_string(&a.tx.file).with_context(|| a.tx.file.display().to_string())?;
        let der = vpbox_ca::pem::crl_der(&pem).with_context(|| a.tx.file.display().to_string())?;
        let (_, conn) = a.tx.key.signer(&a.tx.conn)?;
        let state = write_client(&conn)?.call("gov_getState", json!([])).map_err(rpc_error)?;
        let published = format!("0x{}", hex::encode(&der));
        if state["crls"].as_array().into_iter().flatten().any(|c| c.as_str() == Some(&published)) {
            println!("{}: on the ledger already; nothing published", a.tx.file.display());
            return Ok(Outcome::Ok);
        }
    }
    cert_tx(&a.tx, true)
}

pub(crate) fn cert_tx(a: &CertTxArgs, crl: bool) -> Result<Outcome> {
    let (s, conn) = a.key.signer(&a.conn)?;
    let pem = std::fs::read_to_string(&a.file).with_context(|| a.file.display().to_string())?;
    // A certificate may be followed by its issuing CAs, a CRL by its issuing CA's chain.
    let (der, method) = if crl {
        (vpbox_ca::pem::crl_der(&pem), "cert_publishCrl")
    } else {
        (vpbox_ca::pem::chain_der(&pem), "cert_enroll")
    };
    let der = der.with_context(|| a.file.display().to_string())?;
    if crl {
        // A CRL past (or within the hour of) its nextUpdate would lock its CA's certificates
        // out the moment it is committed: refused here, with its date.
        #[allow(clippy::disallowed_methods)] // the CLI's own clock, for this check alone
        let now = std::time::SystemTime::now();
        vpbox_ca::cert::crl_fresh_for(&der, now, std::time::Duration::from_secs(3600))
            .with_context(|| a.file.display().to_string())?;
    }
    let payload = if crl { Payload::Crl(der) } else { Payload::Enroll(der) };
    let tx = sign(s.as_ref(), payload)?;
    let r = write_client(&conn)?
        .call(method, json!({"tx": hex::encode(tx.encode()), "wait": true}))
        .map_err(rpc_error)?;
    Ok(print_committed(&conn, &r))
}

/// Prints a write's answer: the JSON, or `(ok, "message") in block N`, or pending.
pub(crate) fn print_committed(conn: &Conn, r: &Value) -> Outcome {
    if conn.json {
        println!("{r}");
    } else if r["status"] == "committed" {
        println!(
            "({}, {:?}) in block {}",
            r["ok"],
            r["message"].as_str().unwrap_or(""),
            r["blockNumber"]
        );
    } else {
        println!("pending {}", r["txHash"].as_str().unwrap_or(""));
    }
    if r["ok"] == json!(false) { Outcome::Invalid } else { Outcome::Ok }
}

/// `vpbox anchor get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The anchor key (32 bytes, hex).
    pub(crate) key: String,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// `vpbox anchor check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The day-end file (`key,value` lines, as `anchor put --file` takes).
    #[arg(long)]
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

pub(crate) fn check(a: &CheckArgs) -> Result<Outcome> {
    crate::day_end::check(&mut client(&a.conn)?, &a.file, a.conn.json)
}

/// `vpbox anchor verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The slip file.
    pub(crate) slip: PathBuf,
    #[command(flatten)]
    pub(crate) conn: Conn,
}

/// A client of the API: over HTTPS to a box's proxy (see [`Conn`]), or a node's socket.
pub(crate) fn client(conn: &Conn) -> Result<RpcClient> {
    if conn.rpc.is_some() {
        return local_client(conn);
    }
    let roots = || -> Result<vpbox_ca::policy::TrustStore> {
        match &conn.roots {
            Some(file) => {
                let pem =
                    std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
                let certs: Vec<String> = pem
                    .split_inclusive("-----END CERTIFICATE-----")
                    .filter(|c| c.contains("BEGIN CERTIFICATE"))
                    .map(|c| c.trim().to_string())
                    .collect();
                crate::https::roots(certs.iter().map(String::as_str))
            }
            None => cluster_roots(&conn.dir),
        }
    };
    if let Some(url) = &conn.url {
        let address = url.strip_prefix("https://").context("--url must be https://HOST:PORT")?;
        let address = address.trim_end_matches('/');
        let (Some(cert), Some(key)) = (&conn.tls_cert, &conn.tls_key) else {
            bail!("--url needs --tls-cert and --tls-key (the client's certificate and SM2 key)");
        };
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        let name = conn.server_name.as_deref().unwrap_or(host);
        return crate::https::client(address, name, roots()?, cert, key);
    }
    // A development cluster: the first box whose proxy's API answers, as the bank-a POSP.
    let Ok(genesis) = Genesis::load(&conn.dir.join("genesis.json")) else {
        return local_client(conn);
    };
    let cert = conn.tls_cert.clone().unwrap_or_else(|| conn.dir.join("posp/bank-a.crt"));
    let key = conn.tls_key.clone().unwrap_or_else(|| conn.dir.join("posp/bank-a.pem"));
    let mut last: Option<String> = None;
    for n in &genesis.nodes {
        let Some((api, mut c)) = box_client(&conn.dir, n.id.0, &cert, &key)? else { continue };
        match c.call("block_getChainHeight", json!([])) {
            Ok(_) => return Ok(c),
            Err(e) => last = Some(format!("{api}: {e}")),
        }
    }
    // Boxes with proxies are reached through them only: no quiet way around their gate.
    match last {
        Some(e) => bail!("no box's API of {} answers (last: {e})", conn.dir.display()),
        None => local_client(conn),
    }
}

/// The roots of the cluster in `dir`: its genesis's, and the root of each bank the folder
/// provisioned since (`ca/BANK/ca/ca.pem`: a bank governance admitted later, whose boxes'
/// certificates chain to it).
pub(crate) fn cluster_roots(dir: &Path) -> Result<vpbox_ca::policy::TrustStore> {
    let g = Genesis::load(&dir.join("genesis.json"))
        .with_context(|| "no roots: give --roots, or a cluster folder with --dir".to_string())?;
    let mut ders: Vec<Vec<u8>> = g.roots.iter().map(|r| r.der.clone()).collect();
    for bank in std::fs::read_dir(dir.join("ca")).into_iter().flatten().flatten() {
        let Ok(pem) = std::fs::read_to_string(bank.path().join("ca/ca.pem")) else { continue };
        if let Ok((_, der)) = pem_rfc7468::decode_vec(pem.as_bytes())
            && !ders.contains(&der)
        {
            ders.push(der);
        }
    }
    crate::https::roots_der(ders.iter().map(Vec::as_slice))
}

/// A client of box `i`'s API in the cluster at `dir` (its `[proxy] api` address, the server
/// name in its node's certificate, the cluster's roots) presenting `cert` and `key`; `None` if
/// the box has no API listener.
/// Box `i`'s API listener (`HOST:PORT`) and the DNS name in its certificate; none when the
/// box has no API listener.
pub(crate) fn box_api(dir: &Path, i: u32) -> Result<Option<(String, String)>> {
    let Ok(config) = crate::cluster_cmd::box_config(dir, i) else { return Ok(None) };
    let Some(api) = config.proxy.and_then(|p| p.api) else { return Ok(None) };
    let node_crt = dir.join(format!("node{i}/node.crt"));
    let name = std::fs::read_to_string(&node_crt)
        .ok()
        .and_then(|pem| vpbox_ca::pem::chain_der(&pem).ok())
        .and_then(|der| vpbox_proxy::trust::dns_names(&der).into_iter().next())
        .with_context(|| format!("{}: no DNS name", node_crt.display()))?;
    Ok(Some((api, name)))
}

pub(crate) fn box_client(
    dir: &Path,
    i: u32,
    cert: &Path,
    key: &Path,
) -> Result<Option<(String, RpcClient)>> {
    let Some((api, name)) = box_api(dir, i)? else { return Ok(None) };
    let c = crate::https::client(&api, &name, cluster_roots(dir)?, cert, key)?;
    Ok(Some((api, c)))
}

/// The client of an admin's write (enrollment, CRL, governance): a box's API when `--url` (or
/// a POSP file's `url`) names one, as an admin's certificate (mutual TLS); otherwise the node's
/// own socket, as the box's operator.
pub(crate) fn write_client(conn: &Conn) -> Result<RpcClient> {
    if conn.url.is_some() && conn.rpc.is_none() { client(conn) } else { local_client(conn) }
}

/// A client of a node's own Unix socket: `--rpc`, or the folder's first node that answers.
pub(crate) fn local_client(conn: &Conn) -> Result<RpcClient> {
    if let Some(p) = &conn.rpc {
        return Ok(RpcClient::new(p));
    }
    let genesis = Genesis::load(&conn.dir.join("genesis.json")).with_context(|| {
        format!("no cluster in {} (run `vpbox cluster up`, or give --rpc)", conn.dir.display())
    })?;
    // Each box's configuration names its node's socket.
    for n in &genesis.nodes {
        if let Ok(p) = crate::cluster_cmd::rpc_path(&conn.dir, n.id.0) {
            let mut c = RpcClient::new(&p);
            if c.call("block_getChainHeight", json!([])).is_ok() {
                return Ok(c);
            }
        }
    }
    bail!("no node of {} answers", conn.dir.display())
}

fn signer_from_file(path: &Path) -> Result<SoftwareSigner> {
    let pem = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(SoftwareSigner::new(SecretKey::from_pem(&pem).with_context(|| path.display().to_string())?))
}

pub(crate) fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
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
pub(crate) fn sign(s: &dyn Signer, payload: Payload) -> Result<Tx> {
    let body = TxBody {
        submitter: s.public_key().fingerprint(),
        nonce: nonce()?,
        timestamp_ms: now_ms(),
        payload,
    };
    Ok(body.sign(s)?)
}

pub(crate) fn rpc_error(e: CallError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub(crate) fn put(a: &PutArgs) -> Result<Outcome> {
    let (s, conn) = a.signer.signer(&a.conn)?;
    let mut c = client(&conn)?;
    if let Some(file) = &a.file {
        let (batch, depth) = (a.batch.clamp(1, 10_000), a.in_flight as usize);
        return crate::day_end::put(&mut c, s.as_ref(), file, batch, depth, conn.json);
    }
    let (Some(k), Some(v)) = (&a.key, &a.value) else { bail!("give KEY VALUE or --file") };
    let tx =
        sign(s.as_ref(), Payload::AnchorPut { key: hex32(k, "KEY")?, value: hex32(v, "VALUE")? })?;
    let r = c
        .call("anchor_put", json!({"tx": hex::encode(tx.encode()), "wait": !a.no_wait}))
        .map_err(rpc_error)?;
    if conn.json {
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

/// `vpbox bench anchors`.
#[derive(Debug, Args)]
pub(crate) struct BenchAnchorsArgs {
    /// Nodes in the fresh cluster the benchmark brings up (in a temporary folder).
    #[arg(long, default_value_t = 4)]
    pub(crate) nodes: u32,
    /// Pairs per batch transaction on the batch path.
    #[arg(long, default_value_t = 5000)]
    pub(crate) batch: usize,
    /// Anchors on the batch path.
    #[arg(long, default_value_t = 200_000)]
    pub(crate) count: usize,
    /// Individually signed anchors on the signed path.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) signed: usize,
    /// Offered rate (anchors/s) of the latency run, for 5 seconds.
    #[arg(long, default_value_t = 200)]
    pub(crate) rate: u64,
    /// The PKCS#11 module (default: the test token beside this binary).
    #[arg(long)]
    pub(crate) module: Option<PathBuf>,
    /// The cluster's consensus pipeline depth (`cluster up --pipeline-depth`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) pipeline_depth: Option<u64>,
    /// Lines of the day-end CSV sent with `vpbox anchor put --file` (0: none).
    #[arg(long, default_value_t = 250_000)]
    pub(crate) csv: usize,
    /// Submitters on the signed path, spread over the nodes: each sends its next anchor when
    /// the last one is acknowledged. (A day's POSP servers submit side by side; with 16, the
    /// benchmark's own round trips were the limit and the cluster sat a fifth idle.)
    #[arg(long, default_value_t = 256)]
    pub(crate) clients: usize,
    /// Batch transactions in flight on the batch path, spread over the nodes: each submitter
    /// sends its next batch when the last one committed (0: four a node, as a day-end's
    /// POSP servers upload side by side, each as `anchor put --file` does, with 4 in flight;
    /// two a node left a single node a fifth idle between its blocks). A number other than
    /// 0 is the total, over all the nodes.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub(crate) batch_clients: u16,
}

pub(crate) fn bench_key(tag: u64, i: u64) -> [u8; 32] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&tag.to_be_bytes());
    b[8..].copy_from_slice(&i.to_be_bytes());
    vpbox_sm::sm3::hash(b).0
}

/// Sends `txs` (encoded) with `threads` clients spread over the nodes; returns when each has
/// been answered (with `wait`, committed). Returns per-transaction latencies.
pub(crate) fn drive(
    sockets: &[PathBuf],
    method: &str,
    txs: Vec<Vec<u8>>,
    threads: usize,
    wait: bool,
) -> Result<Vec<Duration>> {
    let txs = std::sync::Arc::new(std::sync::Mutex::new(txs.into_iter()));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (txs, sock, method) =
            (txs.clone(), sockets[t % sockets.len()].clone(), method.to_string());
        handles.push(std::thread::spawn(move || -> Result<Vec<Duration>> {
            let mut c = RpcClient::new(&sock);
            let mut lat = Vec::new();
            loop {
                let next = txs.lock().map_err(|_| anyhow::anyhow!("lock"))?.next();
                let Some(tx) = next else { return Ok(lat) };
                let start = Instant::now();
                loop {
                    match c.call(&method, json!({"tx": hex::encode(&tx), "wait": wait})) {
                        Ok(r) if !wait || r["status"] == "committed" => break,
                        Ok(_) | Err(CallError::Rpc { code: -32004, .. }) => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(e) => return Err(rpc_error(e)),
                    }
                }
                lat.push(start.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
    }
    Ok(all)
}

/// `x` rounded to `places` decimals, as the benchmarks' JSON lines give their figures.
pub(crate) fn rounded(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

pub(crate) fn percentile(lat: &mut [Duration], p: f64) -> f64 {
    lat.sort();
    let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
    lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A fresh local cluster in a temporary folder, stopped when dropped: what the cluster
/// benchmarks measure.
pub(crate) struct BenchCluster {
    exe: PathBuf,
    pub(crate) dir: PathBuf,
    /// `None` once [`BenchCluster::keep`] kept the folder.
    tmp: Option<tempfile::TempDir>,
}

impl BenchCluster {
    pub(crate) fn up(
        nodes: u32,
        module: Option<&Path>,
        pipeline_depth: Option<u64>,
    ) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("cluster");
        let exe = crate::process::own_exe()?;
        let mut up = std::process::Command::new(&exe);
        up.args(["cluster", "up", "--nodes", &nodes.to_string(), "--dir"]).arg(&dir);
        if let Some(m) = module {
            up.arg("--module").arg(m);
        }
        if let Some(d) = pipeline_depth {
            up.args(["--pipeline-depth", &d.to_string()]);
        }
        let out = up.output()?;
        if !out.status.success() {
            // What did start is stopped; the folder is kept, for the logs the error names.
            let _ = std::process::Command::new(&exe)
                .args(["cluster", "down", "--dir"])
                .arg(&dir)
                .output();
            let kept = tmp.keep();
            bail!("cluster up (in {}): {}", kept.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(Self { exe, dir, tmp: Some(tmp) })
    }

    /// Stops every node cleanly (each flushes its tables and leaves its state map's
    /// checkpoint), keeping the folder until the cluster is dropped.
    pub(crate) fn down(&self) -> Result<()> {
        let out = std::process::Command::new(&self.exe)
            .args(["cluster", "down", "--dir"])
            .arg(&self.dir)
            .output()?;
        if !out.status.success() {
            bail!("cluster down: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Keeps the folder after the cluster is dropped (stopped), for the logs an error names;
    /// its path.
    pub(crate) fn keep(mut self) -> PathBuf {
        self.tmp.take().map_or_else(|| self.dir.clone(), tempfile::TempDir::keep)
    }

    /// A stopped node's ledger on disk ([`vpbox_ledger::disk::stopped_bytes`]): an error
    /// when the node did not stop cleanly (`cluster down` kills a node that takes more than
    /// 20 s).
    pub(crate) fn ledger_bytes(&self, node: u32) -> Result<vpbox_ledger::disk::StoppedBytes> {
        let ledger = self.dir.join(format!("node{node}/data/ledger"));
        vpbox_ledger::disk::stopped_bytes(&ledger).with_context(|| format!("node{node}"))
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

pub(crate) fn bench_anchors(a: &BenchAnchorsArgs) -> Result<Outcome> {
    let cluster = BenchCluster::up(a.nodes, a.module.as_deref(), a.pipeline_depth)?;
    let dir = cluster.dir.clone();
    let sockets: Vec<PathBuf> =
        (1..=a.nodes).map(|i| dir.join(format!("node{i}/rpc.sock"))).collect();
    let s = SoftwareSigner::new(SecretKey::from_pem(&std::fs::read_to_string(
        dir.join("posp/bank-a.pem"),
    )?)?);
    println!(
        "vpbox bench anchors: {} nodes on this machine, each with its test-token signer",
        a.nodes
    );

    // Batch path.
    let batch = a.batch.clamp(1, 10_000);
    let txs: Vec<Vec<u8>> = (0..a.count.div_ceil(batch))
        .map(|t| {
            let pairs = (0..batch as u64)
                .map(|i| (bench_key(1, t as u64 * batch as u64 + i), bench_key(2, i)))
                .collect();
            sign(&s, Payload::AnchorPutBatch(pairs)).map(|t| t.encode())
        })
        .collect::<Result<_>>()?;
    let n_batch = txs.len() * batch;
    let start = Instant::now();
    let batch_clients =
        if a.batch_clients == 0 { 4 * a.nodes as usize } else { usize::from(a.batch_clients) };
    drive(&sockets, "anchor_putBatch", txs, batch_clients, true)?;
    let batch_rate = n_batch as f64 / start.elapsed().as_secs_f64();
    println!(
        "batch path ({batch} pairs per tx):      {batch_rate:>10.0} anchors/s committed   \
         (goal: >= 0.5x raw RocksDB, below; {batch_clients} in flight)"
    );

    // A POSP's day-end file, as its operator sends it: `vpbox anchor put --file` (its own
    // process, defaults: batches of 10,000, 4 in flight, the progress record beside the file),
    // timed from start to exit (every batch committed).
    let csv_s = if a.csv > 0 {
        let file = dir.join("day-end.csv");
        let mut text = String::with_capacity(a.csv * 132 + 10);
        text.push_str("key,value\n");
        for i in 0..a.csv as u64 {
            text.push_str(&format!(
                "{},{}\n",
                hex::encode(bench_key(7, i)),
                hex::encode(bench_key(8, i))
            ));
        }
        std::fs::write(&file, text)?;
        let start = Instant::now();
        let out = std::process::Command::new(crate::process::own_exe()?)
            .args(["anchor", "put", "--dir"])
            .arg(&dir)
            .arg("--posp")
            .arg(dir.join("posp/bank-a.toml"))
            .arg("--file")
            .arg(&file)
            .output()?;
        let took = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("anchor put --file: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        println!(
            "day-end CSV, {} lines (anchor put --file): {took:>6.1} s   (goal <= 5 s for 250,000)",
            a.csv
        );
        Some(took)
    } else {
        None
    };

    // Signed path: one signature per anchor, submitted without waiting, then the last awaited.
    let txs: Vec<Vec<u8>> = (0..a.signed as u64)
        .map(|i| {
            sign(&s, Payload::AnchorPut { key: bench_key(3, i), value: bench_key(4, i) })
                .map(|t| t.encode())
        })
        .collect::<Result<_>>()?;
    let start = Instant::now();
    drive(&sockets, "anchor_put", txs, a.clients.max(1), false)?;
    let mut c = RpcClient::new(&sockets[0]);
    let last: Vec<[u8; 32]> =
        (0..a.signed as u64).rev().step_by(97).map(|i| bench_key(3, i)).collect();
    while !last.iter().all(|k| {
        c.call("anchor_get", json!([hex::encode(k)])).is_ok_and(|v| v["ok"] == json!(true))
    }) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Done when every node's pool is empty too: each anchor committed everywhere, none left
    // behind by a sample's gaps, and no backlog to spill into the latency run.
    let mut clients: Vec<RpcClient> = sockets.iter().map(|s| RpcClient::new(s)).collect();
    let drained = Instant::now();
    let mut last = String::new();
    while !clients.iter_mut().all(|c| match c.call("node_getNodes", json!([])) {
        Ok(v) => v["pending"] == json!(0),
        Err(e) => {
            last = format!(" (last error: {})", rpc_error(e));
            false
        }
    }) {
        if drained.elapsed() > Duration::from_secs(300) {
            bail!("the nodes' pools did not empty within 300 s of the last acknowledgement{last}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let signed_rate = a.signed as f64 / start.elapsed().as_secs_f64();
    println!(
        "signed path (1 SM2 signature each):   {signed_rate:>10.0} anchors/s committed   \
         (goal >= 4,500 on this machine kind; {} submitters)",
        a.clients.max(1)
    );

    // Latency at an offered rate: an open loop of individually signed puts, each waiting for commit.
    let n = (a.rate * 5) as usize;
    let txs: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| {
            sign(&s, Payload::AnchorPut { key: bench_key(5, i), value: bench_key(6, i) })
                .map(|t| t.encode())
        })
        .collect::<Result<_>>()?;
    let gap = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let begin = Instant::now();
    let mut handles = Vec::new();
    for (i, tx) in txs.into_iter().enumerate() {
        let due = begin + gap * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let sock = sockets[i % sockets.len()].clone();
        handles.push(std::thread::spawn(move || -> Option<Duration> {
            let t0 = Instant::now();
            let r = RpcClient::new(&sock)
                .call("anchor_put", json!({"tx": hex::encode(&tx), "wait": true}))
                .ok()?;
            (r["status"] == "committed").then(|| t0.elapsed())
        }));
    }
    let mut lat: Vec<Duration> =
        handles.into_iter().filter_map(|h| h.join().ok().flatten()).collect();
    let (p50, p99) = (percentile(&mut lat, 0.50), percentile(&mut lat, 0.99));
    println!(
        "commit latency at {}/s:               p50 {p50:.1} ms, p99 {p99:.1} ms \
         ({} of {n} committed; goal p99 <= 50 ms)",
        a.rate,
        lat.len()
    );

    // Bytes on disk per anchor: node 1's ledger once the cluster is stopped cleanly (a
    // running node's newest writes are in its write-ahead log, not yet in tables). The state
    // map's checkpoint that a clean stop leaves is apart: a bounded size, not a cost per anchor
    // ([`BenchCluster::ledger_bytes`]).
    cluster.down()?;
    let total = (n_batch + a.csv + a.signed + lat.len()) as f64;
    let disk = cluster.ledger_bytes(1)?;
    let per_anchor = disk.of_records() as f64 / total;
    let checkpoint = disk.checkpoint;
    println!(
        "bytes on disk per anchor (node1 ledger): {per_anchor:>9.1}                (goal <= 150)\n\
         \x20 apart, the state map's checkpoint of a clean stop: {:.1} MB ({:.0} bytes per anchor \
         here; at most {:.0} MB),\n\
         \x20 and RocksDB's log and options files: {:.2} MB ({:.1} bytes per anchor here; at most \
         about 20 MB)",
        checkpoint as f64 / 1e6,
        checkpoint as f64 / total,
        vpbox_ledger::state::CHECKPOINT_MAX as f64 / 1e6,
        disk.engine_text as f64 / 1e6,
        disk.engine_text as f64 / total
    );
    // The ceiling: raw RocksDB writing the same records in the same synced batches, once the
    // cluster is gone (its nodes' compactions would share the machine with it).
    let raw_write = |path: &Path| -> Result<()> {
        // RocksDB's performance counters off, as the ledger runs it: a like-for-like peer.
        vpbox_ledger::without_perf_counters();
        let db = rocksdb::DB::open_default(path)?;
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        for t in 0..n_batch.div_ceil(batch) {
            let mut wb = rocksdb::WriteBatch::default();
            for i in 0..batch as u64 {
                // The record a ledger writes for a batch's anchor: its value and the batch's
                // number, or, under 256 pairs, the batch's hash and height.
                let value = bench_key(2, i);
                let rec = if batch >= vpbox_ledger::NUMBERED_FROM {
                    vpbox_ledger::numbered_anchor_record(&value, t as u64)
                } else {
                    vpbox_ledger::inline_anchor_record(
                        &value,
                        &Digest(bench_key(3, t as u64)),
                        t as u64,
                    )
                };
                wb.put(bench_key(9, t as u64 * batch as u64 + i), rec);
            }
            db.write_opt(wb, &wo)?;
        }
        Ok(())
    };
    // `stores` fresh stores written at once, each by a thread of its own, with every record:
    // a store's rate, timed to the last one's end.
    let raw_at_once = |stores: u32| -> Result<f64> {
        let dirs = (0..stores).map(|_| tempfile::tempdir()).collect::<std::io::Result<Vec<_>>>()?;
        let start = Instant::now();
        std::thread::scope(|scope| -> Result<()> {
            let writers: Vec<_> =
                dirs.iter().map(|d| scope.spawn(|| raw_write(d.path()))).collect();
            // Every writer joined, its error or panic named by its store.
            let mut first = Ok(());
            for (i, w) in writers.into_iter().enumerate() {
                let r = w.join().unwrap_or_else(|p| {
                    let why = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(anyhow!("panicked: {why}"))
                });
                if first.is_ok() {
                    first = r.with_context(|| format!("raw RocksDB, store {} of {stores}", i + 1));
                }
            }
            first
        })?;
        Ok(n_batch as f64 / start.elapsed().as_secs_f64())
    };
    // One store alone (the goal's peer), and as many stores as the cluster has ledgers written
    // at once, as every node writes every block on this one machine: what the storage alone
    // allows the cluster here, for the reader of the goal's ratio (the goal stays on the one
    // store). The cluster's rate is every ledger's too (to within the nodes that lag the one
    // each batch was awaited on: a little in the cluster's favour). Each is the median of
    // three, taken in turns: one store's figure varied by a quarter between two runs.
    let (mut one, mut all) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        one.push(raw_at_once(1)?);
        all.push(raw_at_once(a.nodes)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw_rate, raw_node_rate) = (median(one), median(all));
    println!(
        "raw RocksDB, same records and batches:{raw_rate:>10.0} anchors/s   (one store, median \
         of 3; the cluster runs {} and consensus)",
        a.nodes
    );
    println!(
        "batch path / raw RocksDB:               {:>6.2}x              (goal >= 0.5x)",
        batch_rate / raw_rate
    );
    println!(
        "{:<38}{raw_node_rate:>10.0} anchors/s   (a store's, each with all the records, median of \
         3; batch path {:.2}x this)",
        "raw RocksDB, a store a node, at once:",
        batch_rate / raw_node_rate
    );
    println!(
        "{}",
        json!({"bench": "anchors", "nodes": a.nodes, "batch": batch, "clients": a.clients.max(1),
               "batch_clients": batch_clients, "batch_per_s": batch_rate.round(),
               "csv_lines": a.csv, "csv_s": csv_s,
               "signed_per_s": signed_rate.round(), "rate": a.rate, "p50_ms": p50, "p99_ms": p99,
               "bytes_per_anchor": rounded(per_anchor, 1),
               "checkpoint_bytes": checkpoint, "engine_text_bytes": disk.engine_text,
               "raw_rocksdb_per_s": raw_rate.round(),
               "ratio_batch_to_raw": rounded(batch_rate / raw_rate, 2),
               "raw_rocksdb_store_a_node_per_s": raw_node_rate.round(),
               "ratio_batch_to_raw_store_a_node": rounded(batch_rate / raw_node_rate, 2)})
    );
    Ok(Outcome::Ok)
}
