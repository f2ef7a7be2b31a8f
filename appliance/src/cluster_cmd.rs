//! `vpbox node run`, `vpbox cluster up|down|status` and `vpbox status`.
//!
//! `cluster up` builds a local consortium in a folder (default `./vpbox-dev`), the way four
//! boxes would be set up, all on one machine:
//!
//! ```text
//! vpbox-dev/
//!   genesis.json                 members, their consensus keys, the banks' root certificates
//!   ca/bank-a/, ca/bank-b/       each bank's CA: a test-token HSM holding the CA key and
//!                                the bank's governance admin key (CKA_ID ad01)
//!     token.toml, token/, hsm-so-pin, hsm-pin, ca/ (`vpbox ca` directory: ca.pem, db, audit)
//!     admin.crt                  the admin's certificate, enrolled at the first `up`
//!   posp/bank-a.pem, bank-b.pem  the POSP submitters' SM2 keys (software: a POSP is a client)
//!   posp/bank-a.crt, bank-b.crt  their `posp` certificates, issued by `vpbox ca issue` and
//!                                enrolled on the ledger (`cert_enroll`) at the first `up`
//!   node1/ … node4/
//!     token.toml, token/         the node's test-token HSM (its own token store)
//!     node.crt                   its vp-node certificate for the consensus key, from its bank's CA
//!     hsm-so-pin, hsm-pin        random PINs, mode 0400
//!     signer.toml, signer.sock   `vpbox signer run`: the only process that holds the PIN
//!     box.toml                   the box's configuration (`vpbox_node::config`): its node,
//!                                its sockets, its peers' P2P addresses
//!     rpc.sock, peer.sock, data/ `vpbox node run --config box.toml`
//!     proxy.log, proxy.pid       `vpbox proxy run --config box.toml`: P2P on a free loopback
//!                                port, mutual TLS (RFC 8998) with node.crt, its handshakes
//!                                signed by the box's signer (`tls_uids`)
//!     egress/N.sock              the proxy's socket through which the node reaches node N
//!     signer.log, node.log, signer.pid, node.pid
//!   netns.toml                   (`--netns` only) the cluster's namespaces' tag and /24
//! ```
//!
//! With `--netns` (root only) each box runs in a network namespace of its own, its proxy
//! listening on the box's own address on a bridge (P2P 7051, API 8443) rather than on loopback
//! ports: see [`crate::netns`] for the names and addresses; `down` deletes that network too.
//!
//! Governance in the local cluster: `cluster add-bank --name bank-c` provisions a bank (CA and
//! admin keys in its own token, a POSP) for `vpbox gov propose --add-root`; `cluster add-node
//! --bank B` provisions node N+1 (token, key, signer, vp-node certificate) and writes
//! `nodeN/node.json` for `vpbox gov propose --add-node`; once governance added it, `cluster
//! join --node N --from M` copies member M's ledger (M stops for the copy) and starts it.
//! `up` starts joined nodes too, and skips a node governance removed (it refuses to start).
//!
//! Each node's consensus key is generated inside its token and never leaves it. Running `up`
//! again on an existing folder restarts whatever is not running and keeps all data; `down`
//! stops the processes (SIGTERM, then SIGKILL) and keeps the folder.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vpbox_ledger::tx::Payload;
use vpbox_node::client::{CallError, RpcClient};
use vpbox_node::config::{BoxConfig, PeerBox, ProxyConfig, SignerConfig, Sockets, TlsProfile};
use vpbox_node::genesis::Genesis;
use vpbox_sm::SoftwareSigner;
use vpbox_sm::sm2::SecretKey;

use crate::Outcome;
use crate::process::Vpbox;

/// The banks of the development consortium, in node order (two boxes each).
const BANKS: [&str; 2] = ["bank-a", "bank-b"];

/// `vpbox cluster …`
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Create (first time) and start a local consortium: test-token HSMs, signers, nodes.
    #[command(
        after_help = "Example:\n  vpbox cluster up && vpbox anchor put --posp vpbox-dev/posp/bank-a.toml 0x01…01 0x02…02"
    )]
    Up(UpArgs),
    /// Stop the local consortium's processes (the folder and its data stay).
    Down(DirArgs),
    /// The nodes, the primary, heights and health.
    Status(StatusArgs),
    /// Provision a new bank (CA and admin keys in its own token, a POSP) to be admitted by
    /// governance (`vpbox gov propose --add-root DIR/ca/NAME/ca/ca.pem`).
    AddBank {
        #[command(flatten)]
        dir: DirArgs,
        /// The bank's name (the O of its certificates).
        #[arg(long)]
        name: String,
        /// The PKCS#11 module (default: the vpbox test token).
        #[arg(long)]
        module: Option<PathBuf>,
    },
    /// Provision a new box for a member bank (token, consensus key, signer, vp-node
    /// certificate) and write its node entry for `vpbox gov propose --add-node`.
    AddNode(BankArgs),
    /// Enroll the admin (key in its token) and the POSP of a bank that governance admitted,
    /// so that it approves governance changes and anchors.
    Enroll(BankArgs),
    /// Start a node that governance added: install a member's ledger as its snapshot (the
    /// member stops for the copy and restarts), then start it.
    Join {
        #[command(flatten)]
        dir: DirArgs,
        /// The added node's id.
        #[arg(long)]
        node: u32,
        /// The member whose ledger it starts from.
        #[arg(long)]
        from: u32,
    },
}

/// A member bank of the cluster (`add-node`, `enroll`).
#[derive(Debug, Args)]
pub(crate) struct BankArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The member bank (as `add-bank --name` or the genesis names it).
    #[arg(long)]
    bank: String,
    /// The PKCS#11 module (default: the vpbox test token).
    #[arg(long)]
    module: Option<PathBuf>,
}

/// Where the cluster lives.
#[derive(Debug, Args, Clone)]
pub(crate) struct DirArgs {
    /// The cluster's folder.
    #[arg(long, default_value = "vpbox-dev")]
    pub(crate) dir: PathBuf,
}

/// `vpbox cluster up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) dir: DirArgs,
    /// Number of nodes (a new cluster only).
    #[arg(long, default_value_t = 4)]
    pub(crate) nodes: u32,
    /// The PKCS#11 module (default: the vpbox test token installed beside this binary).
    #[arg(long)]
    pub(crate) module: Option<PathBuf>,
    /// Transactions per consensus batch (a new cluster only).
    #[arg(long, default_value_t = 500)]
    pub(crate) batch_size: usize,
    /// How many uncommitted blocks the primary may have before a partial batch waits (a new
    /// cluster only; default unlimited). 1 lowers commit latency under a steady load and
    /// slows bursts: see the consensus `Params::pipeline_depth`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) pipeline_depth: Option<u64>,
    /// Give each box a network namespace of its own, on a bridge with an address per box
    /// (root only; a new cluster only: a restart finds it in DIR/netns.toml).
    #[arg(long)]
    pub(crate) netns: bool,
}

/// `vpbox cluster status` / `vpbox status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) dir: DirArgs,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Ask each node on its own socket (an operator on the box) instead of through its box's
    /// proxy.
    #[arg(long)]
    pub(crate) local: bool,
}

/// `vpbox node run`.
#[derive(Debug, Args)]
pub(crate) struct NodeRunArgs {
    /// The box's configuration (TOML): `vpbox config example` prints an annotated one,
    /// `vpbox config check` checks it.
    #[arg(long)]
    pub(crate) config: PathBuf,
}

pub(crate) fn proxy_run(a: &NodeRunArgs) -> Result<Outcome> {
    crate::harden::no_core_dumps()?;
    let heartbeat = crate::supervise::Heartbeat::new();
    crate::supervise::watchdog(std::sync::Arc::clone(&heartbeat), |_| {});
    let supervisor = vpbox_proxy::net::Supervisor {
        ready: Box::new(crate::supervise::ready),
        alive: std::sync::Arc::new(move || heartbeat.beat()),
        every: crate::supervise::beat_every(),
    };
    vpbox_proxy::net::run(&a.config, supervisor).map_err(anyhow::Error::msg)?;
    Ok(Outcome::Ok)
}

pub(crate) fn node_run(a: &NodeRunArgs) -> Result<Outcome> {
    crate::harden::no_core_dumps()?;
    let config = BoxConfig::load(&a.config).map_err(anyhow::Error::msg)?;
    // The sockets systemd holds for the node (vpbox-node.socket), taken before any thread.
    let passed = vpbox_node::service::activated()?;
    // Ready once the node answers on its JSON-RPC socket; alive while it goes on answering
    // (`supervise`). The probe runs beside the node, which blocks this thread.
    let socket = config.sockets.rpc.clone();
    std::thread::spawn(move || {
        let answers = |s: &Path| {
            vpbox_node::client::RpcClient::new(s)
                .call("block_getChainHeight", serde_json::json!([]))
                .is_ok()
        };
        while !answers(&socket) {
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::supervise::ready(&format!("JSON-RPC on {}", socket.display()));
        let heartbeat = crate::supervise::Heartbeat::new();
        heartbeat.beat();
        crate::supervise::watchdog(heartbeat, move |h| {
            if answers(&socket) {
                h.beat();
            }
        });
    });
    vpbox_node::service::run(&config, passed)?;
    Ok(Outcome::Ok)
}

/// `vpbox config check`: reads a box's configuration and checks it against itself and its
/// genesis; every error is printed, each naming its field.
pub(crate) fn config_check(path: &Path) -> Result<Outcome> {
    let config = match BoxConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Outcome::Invalid);
        }
    };
    // A [firewall] table is judged as `vpbox firewall render` would judge it.
    let firewall = match config.firewall {
        Some(_) => vpbox_firewall::plan(&config).err().unwrap_or_default(),
        None => Vec::new(),
    };
    let checked = match vpbox_node::config::check(&config) {
        Ok(c) if firewall.is_empty() => Ok(c),
        Ok(_) => Err(firewall),
        Err(mut errors) => {
            errors.extend(firewall);
            Err(errors)
        }
    };
    match checked {
        Ok(checked) => {
            for n in &checked.notes {
                println!("note: {n}");
            }
            println!(
                "{}: ok (node {}, {} peers)",
                path.display(),
                config.node_id,
                config.peers.len()
            );
            Ok(Outcome::Ok)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}: {e}", path.display());
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            Ok(Outcome::Invalid)
        }
    }
}

pub(crate) fn run(cmd: &ClusterCommand) -> Result<Outcome> {
    match cmd {
        ClusterCommand::Up(a) => up(a),
        ClusterCommand::Down(a) => down(&a.dir),
        ClusterCommand::Status(a) => status(a),
        ClusterCommand::AddBank { dir, name, module } => {
            add_bank(&dir.dir, name, module.as_deref())
        }
        ClusterCommand::AddNode(a) => add_node(&a.dir.dir, &a.bank, a.module.as_deref()),
        ClusterCommand::Enroll(a) => enroll_bank(&a.dir.dir, &a.bank, a.module.as_deref()),
        ClusterCommand::Join { dir, node, from } => join(&dir.dir, *node, *from),
    }
}

fn exe() -> Result<PathBuf> {
    crate::process::own_exe()
}

/// The test token: beside this binary (a cargo build), or where `scripts/run.sh` installs it.
fn default_module() -> Result<PathBuf> {
    let exe = exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for p in [
        dir.join("libvpbox_test_token.so"),
        dir.join("../lib/vpbox/libvpbox_test_token.so"),
        PathBuf::from("/usr/local/lib/vpbox/libvpbox_test_token.so"),
    ] {
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("no PKCS#11 module given and no vpbox test token found beside {}", exe.display())
}

fn random_secret() -> Result<String> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    Ok(hex::encode(b))
}

fn write_private(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Runs `vpbox ARGS` against node `dir`'s token and returns its standard output.
fn vpbox_in(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(exe()?)
        .args(args)
        .env("VPBOX_TEST_TOKEN_CONF", dir.join("token.toml"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running vpbox {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("vpbox {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `vpbox ARGS` in the background, in its own process group, logging to `log`; in
/// network namespace `ns` if one is given (`ip netns exec` execs vpbox in the same process, so
/// the pid recorded is vpbox's).
fn spawn(dir: &Path, ns: Option<&str>, args: &[&str], log: &str, pid: &str) -> Result<u32> {
    let log_file = OpenOptions::new().create(true).append(true).open(dir.join(log))?;
    let child = crate::netns::command(ns, &exe()?)
        .args(args)
        .current_dir(dir)
        .env("VPBOX_TEST_TOKEN_CONF", dir.join("token.toml"))
        // Its log is this file, not the journal of whatever started `cluster up`.
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting vpbox {}", args.join(" ")))?;
    fs::write(dir.join(pid), child.id().to_string())?;
    Ok(child.id())
}

/// The running vpbox process `dir`'s `pid_file` names, held ([`Vpbox::open`]): not a
/// zombie, nor another program the pid went to; none without a pid file; an error if the
/// system cannot hold a process.
fn alive(dir: &Path, pid_file: &str) -> Result<Option<Vpbox>> {
    let Ok(text) = fs::read_to_string(dir.join(pid_file)) else { return Ok(None) };
    let Ok(pid) = text.trim().parse() else { return Ok(None) };
    Vpbox::open(pid)
}

/// Whether the process `dir`'s `pid_file` names is gone: [`alive`] holds none (an error
/// counts as not gone, so a caller waiting for an exit keeps waiting).
fn exited(dir: &Path, pid_file: &str) -> bool {
    matches!(alive(dir, pid_file), Ok(None))
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not come up within {timeout:?}")
}

fn node_dir(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("node{i}"))
}

/// Creates a test-token HSM in `dir` labelled `label`, with random PINs in 0400 files, and an
/// SM2 key `key_label`/`id` generated inside it. Returns the module and PIN file as strings.
fn provision_token(
    dir: &Path,
    module: &Path,
    label: &str,
    key_label: &str,
    id: &str,
) -> Result<(String, String)> {
    fs::create_dir_all(dir.join("token"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    fs::write(dir.join("token.toml"), format!("token_dir = {:?}\n", dir.join("token")))?;
    write_private(&dir.join("hsm-so-pin"), &random_secret()?, 0o400)?;
    write_private(&dir.join("hsm-pin"), &random_secret()?, 0o400)?;
    let module = module.to_str().context("module path is not UTF-8")?;
    let so = dir.join("hsm-so-pin");
    let so = so.to_str().context("path is not UTF-8")?;
    let pin = dir.join("hsm-pin");
    let pin = pin.to_str().context("path is not UTF-8")?;
    vpbox_in(
        dir,
        &[
            "hsm",
            "init",
            "--module",
            module,
            "--label",
            label,
            "--so-pin-file",
            so,
            "--pin-file",
            pin,
        ],
    )?;
    let target = ["--module", module, "--token", label, "--pin-file", pin];
    let mut args = vec!["hsm", "keygen"];
    args.extend(target);
    args.extend(["--label", key_label, "--id", id]);
    vpbox_in(dir, &args)?;
    Ok((module.to_string(), pin.to_string()))
}

/// Writes `posp/BANK.toml`, the bank's POSP client file (`--posp`): its key and TLS identity
/// in the folder (relative paths), the box found through the folder.
fn write_posp_file(dir: &Path, bank: &str) -> Result<()> {
    let f = crate::client_cmd::PospFile {
        key_file: Some(format!("{bank}.pem").into()),
        tls_cert: Some(format!("{bank}.crt").into()),
        tls_key: Some(format!("{bank}.pem").into()),
        ..Default::default()
    };
    let text = format!(
        "# {bank}'s POSP: vpbox anchor put --posp {} --dir {} KEY VALUE\n{}",
        dir.join("posp").join(format!("{bank}.toml")).display(),
        dir.display(),
        toml::to_string(&f)?
    );
    fs::write(dir.join("posp").join(format!("{bank}.toml")), text)?;
    Ok(())
}

/// Creates `bank`'s CA in `dir`: its key generated in the bank's own token, its root made by
/// `vpbox ca init`, and a POSP certificate for `posp` issued by `vpbox ca issue` into
/// `cert_out`. Returns the root certificate (PEM).
fn provision_bank(
    dir: &Path,
    module: &Path,
    bank: &str,
    posp: &SoftwareSigner,
    cert_out: &Path,
) -> Result<String> {
    let label = format!("{bank}-ca");
    let (module, pin) = provision_token(dir, module, &label, "ca", "ca01")?;
    let ca = dir.join("ca");
    let ca_s = ca.to_str().context("path is not UTF-8")?;
    vpbox_in(
        dir,
        &[
            "ca",
            "init",
            "--dir",
            ca_s,
            "--bank",
            bank,
            "--module",
            &module,
            "--token",
            &label,
            "--key-id",
            "ca01",
            "--pin-file",
            &pin,
        ],
    )?;
    let csr = vpbox_ca::build_csr(posp, &format!("CN={bank}-posp,OU=posp,O={bank}"))?;
    let csr_path = dir.join("posp.csr");
    fs::write(&csr_path, csr)?;
    let out = cert_out.to_str().context("path is not UTF-8")?;
    let csr_s = csr_path.to_str().context("path is not UTF-8")?;
    vpbox_in(
        dir,
        &["ca", "issue", "--dir", ca_s, "--csr", csr_s, "--profile", "posp", "--out", out],
    )?;
    // The bank's governance admin: a key in the bank's token, an `admin` certificate.
    let target = ["--module", &module, "--token", &label, "--pin-file", &pin];
    let mut args = vec!["hsm", "keygen"];
    args.extend(target);
    args.extend(["--label", "admin", "--id", ADMIN_KEY_ID]);
    vpbox_in(dir, &args)?;
    let admin_csr = dir.join("admin.csr");
    let admin_csr = admin_csr.to_str().context("path is not UTF-8")?;
    let subject = format!("CN={bank}-admin,OU=admin,O={bank}");
    let mut args = vec!["hsm", "csr"];
    args.extend(target);
    args.extend(["--id", ADMIN_KEY_ID, "--subject", &subject, "--out", admin_csr]);
    vpbox_in(dir, &args)?;
    let admin_crt = dir.join("admin.crt");
    let admin_crt = admin_crt.to_str().context("path is not UTF-8")?;
    vpbox_in(
        dir,
        &[
            "ca",
            "issue",
            "--dir",
            ca_s,
            "--csr",
            admin_csr,
            "--profile",
            "admin",
            "--out",
            admin_crt,
        ],
    )?;
    fs::read_to_string(ca.join("ca.pem")).context("the CA wrote no ca.pem")
}

/// The admin key's CKA_ID in each bank's token.
const ADMIN_KEY_ID: &str = "ad01";

/// Enrolls `bank`'s admin certificate (`ca/BANK/admin.crt`), signed inside the bank's token,
/// through the node at `rpc`.
fn enroll_admin(dir: &Path, bank: &str, module: &Path, rpc: &Path) -> Result<u64> {
    let cd = dir.join("ca").join(bank);
    let utf8 = |p: &Path| p.to_str().map(str::to_string).context("path is not UTF-8");
    let (crt, pin, module, rpc) =
        (utf8(&cd.join("admin.crt"))?, utf8(&cd.join("hsm-pin"))?, utf8(module)?, utf8(rpc)?);
    let label = format!("{bank}-ca");
    let out = vpbox_in(
        &cd,
        &[
            "cert",
            "enroll",
            &crt,
            "--module",
            &module,
            "--token",
            &label,
            "--key-id",
            ADMIN_KEY_ID,
            "--pin-file",
            &pin,
            "--rpc",
            &rpc,
            "--json",
        ],
    )?;
    let r: Value = serde_json::from_str(&out).context("cert enroll --json")?;
    if r["ok"] != json!(true) {
        bail!("enrolling {bank}'s admin: {r}");
    }
    Ok(r["blockNumber"].as_u64().unwrap_or(0))
}

/// Node `i`'s `vp-node` certificate (PEM): a request for its consensus key made inside its
/// token (`vpbox hsm csr`), issued by its bank's CA (`vpbox ca issue`).
fn node_certificate(dir: &Path, i: u32, bank: &str, module: &Path) -> Result<String> {
    let nd = node_dir(dir, i);
    let utf8 = |p: &Path| p.to_str().map(str::to_string).context("path is not UTF-8");
    let (csr, crt, pin) = (nd.join("node.csr"), nd.join("node.crt"), nd.join("hsm-pin"));
    let (module, csr_s, crt_s, pin) = (utf8(module)?, utf8(&csr)?, utf8(&crt)?, utf8(&pin)?);
    let subject = format!("CN=node{i},OU=vp-node,O={bank}");
    let label = format!("node{i}");
    vpbox_in(
        &nd,
        &[
            "hsm",
            "csr",
            "--module",
            &module,
            "--token",
            &label,
            "--pin-file",
            &pin,
            "--id",
            "01",
            "--subject",
            &subject,
            "--out",
            &csr_s,
        ],
    )?;
    let cd = dir.join("ca").join(bank);
    let ca = utf8(&cd.join("ca"))?;
    let dns = format!("node{i}.{bank}");
    vpbox_in(
        &cd,
        &[
            "ca",
            "issue",
            "--dir",
            &ca,
            "--csr",
            &csr_s,
            "--profile",
            "vp-node",
            "--dns",
            &dns,
            "--out",
            &crt_s,
        ],
    )?;
    fs::read_to_string(&crt).with_context(|| crt_s.clone())
}

/// Enrolls each bank's POSP certificate on the ledger (the first `up`), and waits until every
/// node has committed the enrollments, so that any node admits the POSPs when `up` returns.
fn enroll_members(dir: &Path, genesis: &Genesis, module: &Path) -> Result<()> {
    let rpc = rpc_path(dir, 1)?;
    let mut last = 0;
    for bank in BANKS {
        let block = enroll_admin(dir, bank, module, &rpc)?;
        println!("  {bank}-admin enrolled in block {block} (key in {bank}'s token)");
        last = last.max(block);
    }
    for bank in BANKS {
        last = last.max(enroll_posp(dir, bank, &rpc)?);
    }
    let ids: Vec<u32> = genesis.nodes.iter().map(|n| n.id.0).collect();
    committed_everywhere(dir, &ids, last)
}

/// Enrolls `bank`'s POSP of the folder (`posp/BANK.pem`, `.crt`) through `rpc`: its block.
fn enroll_posp(dir: &Path, bank: &str, rpc: &Path) -> Result<u64> {
    let posp = dir.join("posp");
    let key = SecretKey::from_pem(&fs::read_to_string(posp.join(format!("{bank}.pem")))?)?;
    let pem = fs::read_to_string(posp.join(format!("{bank}.crt")))?;
    let der = vpbox_ca::pem::chain_der(&pem).with_context(|| format!("{bank}.crt"))?;
    let tx = crate::client_cmd::sign(&SoftwareSigner::new(key), Payload::Enroll(der))?;
    let r = RpcClient::new(rpc)
        .call("cert_enroll", json!({"tx": hex::encode(tx.encode()), "wait": true}))
        .map_err(|e| anyhow::anyhow!("enrolling {bank}'s POSP: {e}"))?;
    if r["ok"] != json!(true) {
        bail!("enrolling {bank}'s POSP: {r}");
    }
    println!("  {bank}-posp enrolled in block {}", r["blockNumber"]);
    Ok(r["blockNumber"].as_u64().unwrap_or(0))
}

/// Waits until each of the nodes `ids` has committed block `last`.
fn committed_everywhere(dir: &Path, ids: &[u32], last: u64) -> Result<()> {
    let mut clients = Vec::new();
    for i in ids {
        clients.push(RpcClient::new(&rpc_path(dir, *i)?));
    }
    wait_for("every node to commit the enrollments", Duration::from_secs(120), || {
        clients.iter_mut().all(|c| {
            c.call("block_getChainHeight", json!([])).ok().and_then(|h| h.as_u64()) > Some(last)
        })
    })
}

/// `cluster enroll`: a bank that governance admitted enrolls its admin (the key in its token)
/// and its POSP, so that it can approve governance changes and anchor. Refused, with the way,
/// while its root is not a member.
fn enroll_bank(dir: &Path, bank: &str, module: Option<&Path>) -> Result<Outcome> {
    let dir = fs::canonicalize(dir).with_context(|| format!("no cluster in {}", dir.display()))?;
    let cd = dir.join("ca").join(bank);
    if !cd.join("ca/ca.pem").exists() {
        bail!("{bank} has no CA in this cluster (vpbox cluster add-bank --name {bank})");
    }
    let module = module_or_default(module)?;
    let genesis = Genesis::load(&dir.join("genesis.json"))?;
    let running: Vec<u32> = genesis
        .nodes
        .iter()
        .map(|n| n.id.0)
        .chain(added_nodes(&dir, &genesis))
        .filter_map(|i| alive(&node_dir(&dir, i), "node.pid").map(|p| p.map(|_| i)).transpose())
        .collect::<Result<Vec<_>>>()?;
    let first = running.first().with_context(|| format!("no node of {} runs", dir.display()))?;
    let rpc = rpc_path(&dir, *first)?;
    let state = RpcClient::new(&rpc)
        .call("gov_getState", json!([]))
        .map_err(|e| anyhow::anyhow!("node{first}: {e}"))?;
    let member = state["banks"].as_array().into_iter().flatten().any(|b| b.as_str() == Some(bank));
    if !member {
        bail!(
            "{bank} is not a member bank yet: governance must admit its root first \
             (`vpbox gov propose --dir {d} --add-root {root}`, approvals, `vpbox gov submit`)",
            d = dir.display(),
            root = cd.join("ca/ca.pem").display()
        );
    }
    let block = enroll_admin(&dir, bank, &module, &rpc)?;
    println!("  {bank}-admin enrolled in block {block} (key in {bank}'s token)");
    let last = block.max(enroll_posp(&dir, bank, &rpc)?);
    committed_everywhere(&dir, &running, last)?;
    println!("{bank} can approve governance changes and anchor");
    Ok(Outcome::Ok)
}

/// Creates node `i`'s token, key and signer configuration.
fn provision(dir: &Path, i: u32, module: &Path) -> Result<()> {
    let nd = node_dir(dir, i);
    let label = format!("node{i}");
    let (module, pin) = provision_token(&nd, module, &label, "consensus", "01")?;
    let (module, pin) = (module.as_str(), pin.as_str());
    let target = ["--module", module, "--token", &label, "--pin-file", pin];
    let mut args = vec!["hsm", "inspect"];
    args.extend(target);
    args.extend(["--id", "01", "--json"]);
    let report: Value = serde_json::from_str(&vpbox_in(&nd, &args)?)?;
    let fingerprint =
        report["fingerprint_sm3"].as_str().context("inspect gave no fingerprint")?.to_string();
    let uid = rustix::process::getuid().as_raw();
    // The proxy (same user here) may have its TLS handshakes signed with the consensus key.
    let config = vpbox_signer::Config::new(
        nd.join("signer.sock"),
        module.into(),
        label,
        pin.into(),
        nd.join("signer-state"),
        vec![uid],
        vec![vpbox_signer::KeyConfig {
            name: "consensus".into(),
            id: "01".into(),
            fingerprint: Some(fingerprint),
            node: Some(i),
            tls_uids: vec![uid],
        }],
    );
    fs::write(nd.join("signer.toml"), toml::to_string(&config)?)?;
    Ok(())
}

/// The boxes provisioned in `dir` (those with a box configuration), by id.
fn boxes(dir: &Path) -> Vec<u32> {
    (1..=64).filter(|i| node_dir(dir, *i).join("box.toml").exists()).collect()
}

/// A box's listeners: P2P and API.
type Listeners = (String, String);

/// The listeners of each of the boxes `all`: those its configuration has, or, for a box not
/// configured yet, free loopback ports (so that clusters side by side do not collide), or on
/// a `--netns` cluster the box's own address with fixed ports.
fn listeners(dir: &Path, all: &[u32]) -> Result<HashMap<u32, Listeners>> {
    let network = crate::netns::load(dir)?;
    let fresh = |i: u32| -> Result<Listeners> {
        match &network {
            Some(net) => net.listeners(i),
            None => Ok((free_loopback()?, free_loopback()?)),
        }
    };
    let mut out = HashMap::new();
    for i in all {
        let existing = box_config(dir, *i).ok().and_then(|c| c.proxy);
        let pair = match existing {
            Some(p) => {
                let api = match p.api {
                    Some(a) => a,
                    None => fresh(*i)?.1,
                };
                (p.p2p, api)
            }
            None => fresh(*i)?,
        };
        out.insert(*i, pair);
    }
    Ok(out)
}

/// A loopback address whose port no one listens on, below the kernel's range of ephemeral
/// ports (`net.ipv4.ip_local_port_range`). A port from that range, free when probed, may
/// become the source port of any outgoing connection before the proxy binds it — seen when
/// clusters start side by side, a proxy then exits with "address in use"; a port below the
/// range is taken only by another bind. The kernel's own pick if none is found in 64 tries.
///
/// A port is handed out once per process: the probe is closed before the proxy binds, so
/// without that record two listeners of one `cluster up` could be given the same free port
/// (a proxy then exited with "address in use" in a benchmark's cluster).
fn free_loopback() -> Result<String> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let from = low.saturating_sub(16384).max(1024);
    for _ in 0..64 {
        if low <= from {
            break;
        }
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        let port = from + u16::from_le_bytes(b) % (low - from);
        if given.contains(&port) {
            continue;
        }
        if let Ok(probe) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            given.push(port);
            return Ok(probe.local_addr()?.to_string());
        }
    }
    for _ in 0..64 {
        let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        if !given.contains(&address.port()) {
            given.push(address.port());
            return Ok(address.to_string());
        }
    }
    bail!("no free loopback port")
}

/// Writes the configuration of each of the boxes `all`: its proxy listens on loopback and
/// carries its node's links to the other boxes' proxies over mutual TLS.
fn write_boxes(dir: &Path, all: &[u32]) -> Result<()> {
    let addresses = listeners(dir, all)?;
    for i in all {
        write_box(dir, *i, &addresses)?;
    }
    Ok(())
}

fn write_box(dir: &Path, i: u32, addresses: &HashMap<u32, Listeners>) -> Result<()> {
    let nd = node_dir(dir, i);
    // The admin listener (/metrics, /health) on loopback: kept across rewrites.
    let admin = match box_config(dir, i).ok().and_then(|c| c.proxy).and_then(|p| p.admin) {
        Some(a) => a,
        None => free_loopback()?,
    };
    let config = BoxConfig {
        node_id: i,
        genesis: "../genesis.json".into(),
        data_dir: "data".into(),
        signer: SignerConfig { socket: "signer.sock".into(), key: "consensus".into() },
        sockets: Sockets {
            rpc: "rpc.sock".into(),
            peer: "peer.sock".into(),
            egress: "egress".into(),
        },
        peers: {
            let mut peers: Vec<PeerBox> = addresses
                .iter()
                .filter(|(j, _)| **j != i)
                .map(|(j, a)| PeerBox { id: *j, address: a.0.clone() })
                .collect();
            peers.sort_by_key(|p| p.id);
            peers
        },
        proxy: Some(ProxyConfig {
            p2p: addresses.get(&i).context("no address")?.0.clone(),
            certificate: "node.crt".into(),
            profile: TlsProfile::Sm,
            api: Some(addresses.get(&i).context("no address")?.1.clone()),
            api_profile: TlsProfile::Sm,
            admin: Some(admin),
            uid: None,
            limits: toml::Table::new(),
        }),
        // An operator's [firewall] is kept across rewrites.
        firewall: box_config(dir, i).ok().and_then(|c| c.firewall),
    };
    let tmp = nd.join("box.toml.tmp");
    fs::write(&tmp, toml::to_string(&config)?)?;
    fs::rename(&tmp, nd.join("box.toml"))?;
    fs::create_dir_all(nd.join("egress"))?;
    Ok(())
}

/// Box `i`'s configuration.
pub(crate) fn box_config(dir: &Path, i: u32) -> Result<BoxConfig> {
    BoxConfig::load(&node_dir(dir, i).join("box.toml")).map_err(anyhow::Error::msg)
}

fn start_signer(dir: &Path, i: u32) -> Result<()> {
    let nd = node_dir(dir, i);
    if alive(&nd, "signer.pid")?.is_some() {
        return Ok(());
    }
    let _ = fs::remove_file(nd.join("signer.sock"));
    let ns = crate::netns::enter(dir, i)?;
    spawn(
        &nd,
        ns.as_deref(),
        &["signer", "run", "--config", "signer.toml"],
        "signer.log",
        "signer.pid",
    )?;
    let sock = nd.join("signer.sock");
    wait_for(&format!("node{i}'s signer"), Duration::from_secs(30), || {
        vpbox_signer::Client::connect(&sock).and_then(|mut c| c.health()).is_ok()
    })
    .with_context(|| format!("see {}", nd.join("signer.log").display()))
}

/// Starts box `i`'s proxy (if it is not running) and waits until its P2P listener answers.
fn start_proxy(dir: &Path, i: u32) -> Result<()> {
    let nd = node_dir(dir, i);
    if alive(&nd, "proxy.pid")?.is_some() {
        return Ok(());
    }
    let config = box_config(dir, i)?;
    let p2p = config.proxy.context("the box has no [proxy]")?.p2p;
    let ns = crate::netns::enter(dir, i)?;
    spawn(&nd, ns.as_deref(), &["proxy", "run", "--config", "box.toml"], "proxy.log", "proxy.pid")?;
    let begun = Instant::now();
    let mut exited = false;
    let _ = wait_for(&format!("node{i}'s proxy"), Duration::from_secs(30), || {
        exited = begun.elapsed() > Duration::from_millis(500) && self::exited(&nd, "proxy.pid");
        exited || listening(&p2p)
    });
    if exited || !listening(&p2p) {
        bail!(
            "node{i}'s proxy {}; see {}",
            if exited { "exited" } else { "did not listen within 30 s" },
            nd.join("proxy.log").display()
        );
    }
    Ok(())
}

/// Whether something accepts TCP connections at `address` (HOST:PORT). A second at most: on a
/// `--netns` cluster the address is a box's on the bridge, where a lost SYN would otherwise
/// hold the probe for the kernel's two minutes of retries.
fn listening(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Some(a) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else { return false };
    std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok()
}

/// Starts box `i`'s node and then its proxy (if they are not running).
fn start_node(dir: &Path, i: u32) -> Result<()> {
    start_node_only(dir, i)?;
    start_proxy(dir, i)
}

fn start_node_only(dir: &Path, i: u32) -> Result<()> {
    let nd = node_dir(dir, i);
    if alive(&nd, "node.pid")?.is_some() {
        return Ok(());
    }
    let ns = crate::netns::enter(dir, i)?;
    spawn(&nd, ns.as_deref(), &["node", "run", "--config", "box.toml"], "node.log", "node.pid")?;
    let rpc = rpc_path(dir, i)?;
    let mut exited = false;
    let begun = Instant::now();
    let _ = wait_for(&format!("node{i}"), Duration::from_secs(30), || {
        // (Right after the spawn, /proc/PID/cmdline can still be empty while the kernel sets
        // up the new image: give the process a moment before calling it gone.)
        exited = begun.elapsed() > Duration::from_millis(500) && self::exited(&nd, "node.pid");
        exited || RpcClient::new(&rpc).call("block_getChainHeight", json!([])).is_ok()
    });
    if exited || RpcClient::new(&rpc).call("block_getChainHeight", json!([])).is_err() {
        bail!(
            "node{i} {}; see {}",
            if exited { "exited" } else { "did not come up within 30 s" },
            nd.join("node.log").display()
        );
    }
    Ok(())
}

/// Box `i`'s JSON-RPC socket, as its configuration names it.
pub(crate) fn rpc_path(dir: &Path, i: u32) -> Result<PathBuf> {
    Ok(box_config(dir, i)?.sockets.rpc)
}

/// Nodes provisioned by `cluster add-node` (not in the genesis), by id.
fn added_nodes(dir: &Path, genesis: &Genesis) -> Vec<u32> {
    boxes(dir).into_iter().filter(|i| genesis.node(vpbox_consensus::NodeId(*i)).is_none()).collect()
}

fn module_or_default(module: Option<&Path>) -> Result<PathBuf> {
    let m = match module {
        Some(m) => m.to_path_buf(),
        None => default_module()?,
    };
    fs::canonicalize(&m).with_context(|| m.display().to_string())
}

fn add_bank(dir: &Path, name: &str, module: Option<&Path>) -> Result<Outcome> {
    let dir = fs::canonicalize(dir).with_context(|| format!("no cluster in {}", dir.display()))?;
    let cd = dir.join("ca").join(name);
    if cd.exists() {
        bail!("{} exists: {name} was provisioned already", cd.display());
    }
    let module = module_or_default(module)?;
    let key = SecretKey::generate()?;
    let posp = dir.join("posp");
    write_private(&posp.join(format!("{name}.pem")), &key.to_pkcs8_pem()?, 0o600)?;
    let cert = posp.join(format!("{name}.crt"));
    provision_bank(&cd, &module, name, &SoftwareSigner::new(key), &cert)?;
    write_posp_file(&dir, name)?;
    println!("{name}: root CA and admin keys in its token ({})", cd.display());
    println!("  root:  {}", cd.join("ca/ca.pem").display());
    println!("  admin: {}   POSP: {}", cd.join("admin.crt").display(), cert.display());
    println!(
        "Admit it by governance (every member bank's admin approves):
           vpbox gov propose --dir {d} --add-root {root} --out add-{name}.json
           vpbox gov approve add-{name}.json --module … --token BANK-ca --key-id {ADMIN_KEY_ID} --pin-file …
           vpbox gov submit add-{name}.json --dir {d} --module … (an enrolled admin)
         Then enroll its admin and POSP (without its admin, every later change waits for
         more than two thirds of the other banks):
           vpbox cluster enroll --dir {d} --bank {name}",
        d = dir.display(),
        root = cd.join("ca/ca.pem").display(),
    );
    Ok(Outcome::Ok)
}

fn add_node(dir: &Path, bank: &str, module: Option<&Path>) -> Result<Outcome> {
    let dir = fs::canonicalize(dir).with_context(|| format!("no cluster in {}", dir.display()))?;
    let genesis = Genesis::load(&dir.join("genesis.json"))?;
    if !dir.join("ca").join(bank).join("ca/ca.toml").exists() {
        bail!("{bank} has no CA in this cluster (vpbox cluster add-bank --name {bank})");
    }
    let module = module_or_default(module)?;
    let max = genesis.nodes.iter().map(|n| n.id.0).chain(added_nodes(&dir, &genesis)).max();
    let i = max.unwrap_or(0) + 1;
    provision(&dir, i, &module)?;
    // Every box learns the new one's address (no vote: topology is each box's own file).
    let mut all = boxes(&dir);
    all.push(i);
    write_boxes(&dir, &all)?;
    // The running proxies read their files again (SIGHUP): the new box's address applies
    // without a restart.
    for j in all.iter().filter(|j| **j != i) {
        if let Some(proxy) = alive(&node_dir(&dir, *j), "proxy.pid")? {
            let _ = proxy.signal(rustix::process::Signal::HUP, "proxy");
        }
    }
    start_signer(&dir, i)?;
    let mut c = vpbox_signer::Client::connect(&node_dir(&dir, i).join("signer.sock"))?;
    let pk = c.public_key("consensus")?;
    let certificate = node_certificate(&dir, i, bank, &module)?;
    let entry = json!({
        "id": i, "bank": bank, "name": format!("node{i}"),
        "consensus_key": hex::encode(pk.to_sec1_uncompressed()),
        "certificate": certificate,
    });
    let path = node_dir(&dir, i).join("node.json");
    fs::write(&path, serde_json::to_string_pretty(&entry)? + "\n")?;
    println!("node{i} ({bank}): consensus key {} in its token", pk.fingerprint().to_hex());
    println!("  node entry: {}", path.display());
    println!(
        "Add it by governance, then start it from a member's ledger:
           vpbox gov propose --dir {d} --add-node {p} --out add-node{i}.json   (approve, submit)
           vpbox cluster join --dir {d} --node {i} --from 1",
        d = dir.display(),
        p = path.display()
    );
    Ok(Outcome::Ok)
}

/// Copies a directory tree (a stopped member's RocksDB ledger).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else {
            fs::copy(e.path(), &target)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

fn join(dir: &Path, node: u32, from: u32) -> Result<Outcome> {
    let dir = fs::canonicalize(dir).with_context(|| format!("no cluster in {}", dir.display()))?;
    let target = node_dir(&dir, node);
    if !target.join("box.toml").exists() {
        bail!("node{node} was not provisioned (vpbox cluster add-node)");
    }
    if target.join("data/ledger").exists() {
        bail!("node{node} has a ledger already; `vpbox cluster up` starts it");
    }
    let state = RpcClient::new(&rpc_path(&dir, from)?)
        .call("gov_getState", json!([]))
        .map_err(|e| anyhow::anyhow!("node{from}: {e}"))?;
    let member = state["nodes"].as_array().into_iter().flatten().any(|n| n["id"] == json!(node));
    if !member {
        bail!("node{node} is not a member yet: governance must add it first");
    }
    // The member stops for a consistent copy of its ledger (a crash-safe stop: its WAL and
    // the quorum of the others carry on), then restarts.
    let source = node_dir(&dir, from);
    stop(std::slice::from_ref(&source), "node.pid")?;
    let copied = copy_tree(&source.join("data/ledger"), &target.join("data/ledger"));
    start_node(&dir, from)?;
    copied?;
    start_signer(&dir, node)?;
    start_node(&dir, node)?;
    println!("node{node} started from node{from}'s ledger");
    Ok(Outcome::Ok)
}

#[allow(clippy::disallowed_methods)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn create(a: &UpArgs) -> Result<()> {
    let dir = &a.dir.dir;
    if a.nodes == 0 || a.nodes > 16 {
        bail!("--nodes must be 1 to 16");
    }
    let module = match &a.module {
        Some(m) => m.clone(),
        None => default_module()?,
    };
    let module = fs::canonicalize(&module).with_context(|| module.display().to_string())?;
    fs::create_dir_all(dir.join("posp"))?;
    let dir = fs::canonicalize(dir)?;
    println!("creating a {}-node consortium in {}", a.nodes, dir.display());
    let mut roots = Vec::new();
    for bank in BANKS {
        let key = SecretKey::generate()?;
        write_private(&dir.join("posp").join(format!("{bank}.pem")), &key.to_pkcs8_pem()?, 0o600)?;
        let cert = dir.join("posp").join(format!("{bank}.crt"));
        let root = provision_bank(
            &dir.join("ca").join(bank),
            &module,
            bank,
            &SoftwareSigner::new(key),
            &cert,
        )?;
        write_posp_file(&dir, bank)?;
        println!("  {bank}: root CA key in its token; POSP certificate {}", cert.display());
        roots.push(json!({"bank": bank, "certificate": root}));
    }
    let mut nodes = Vec::new();
    for i in 1..=a.nodes {
        provision(&dir, i, &module)?;
        start_signer(&dir, i)?;
        let mut c = vpbox_signer::Client::connect(&node_dir(&dir, i).join("signer.sock"))?;
        let pk = c.public_key("consensus")?;
        let bank = BANKS[((i - 1) as usize * BANKS.len()) / a.nodes as usize];
        let certificate = node_certificate(&dir, i, bank, &module)?;
        println!(
            "  node{i} ({bank}): consensus key {} in its token, vp-node certificate from {bank}'s CA",
            pk.fingerprint().to_hex()
        );
        nodes.push(json!({
            "id": i, "bank": bank, "name": format!("node{i}"),
            "consensus_key": hex::encode(pk.to_sec1_uncompressed()),
            "certificate": certificate,
        }));
    }
    let all: Vec<u32> = (1..=a.nodes).collect();
    write_boxes(&dir, &all)?;
    let mut consensus = json!({
        "batch_size_max": a.batch_size, "batch_timeout_ms": 5,
        "checkpoint_interval": 10, "window": 40,
        "request_timeout_ms": 3000, "null_request_timeout_ms": 4000,
        "heartbeat_interval_ms": 1000, "new_view_timeout_ms": 4000,
        "view_change_resend_ms": 2000, "fetch_timeout_ms": 1000, "fetch_entries_max": 20
    });
    if let Some(depth) = a.pipeline_depth {
        consensus["pipeline_depth"] = json!(depth);
    }
    let genesis = json!({
        "chain_id": "vpbox-dev",
        "timestamp_ms": now_ms(),
        "tx_window_ms": 600_000,
        "consensus": consensus,
        "nodes": nodes,
        "roots": roots,
    });
    let mut f = File::create(dir.join("genesis.json"))?;
    f.write_all(serde_json::to_string_pretty(&genesis)?.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn up(a: &UpArgs) -> Result<Outcome> {
    let fresh = !a.dir.dir.join("genesis.json").exists();
    if a.netns {
        crate::netns::require_root("`vpbox cluster up --netns`")?;
        if !fresh && crate::netns::load(&a.dir.dir)?.is_none() {
            bail!(
                "{} holds a loopback cluster: --netns applies when a cluster is created",
                a.dir.dir.display()
            );
        }
    }
    if crate::netns::load(&a.dir.dir)?.is_some() {
        crate::netns::require_root("`vpbox cluster up` of a --netns cluster")?;
    }
    if fresh && a.netns {
        // The network first: the boxes' files carry its addresses.
        fs::create_dir_all(&a.dir.dir)?;
        crate::netns::plan(&fs::canonicalize(&a.dir.dir)?)?;
    }
    if fresh {
        create(a)?;
    }
    let dir = fs::canonicalize(&a.dir.dir)?;
    // A folder made before POSP client files existed gets them (each bank with a POSP key).
    for entry in fs::read_dir(dir.join("posp"))?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pem")
            && let Some(bank) = path.file_stem().and_then(|s| s.to_str())
            && !path.with_extension("toml").exists()
            && dir.join("ca").join(bank).exists()
        {
            write_posp_file(&dir, bank)?;
        }
    }
    let genesis = Genesis::load(&dir.join("genesis.json"))?;
    let n = genesis.nodes.len() as u32;
    for i in 1..=n {
        start_signer(&dir, i)?;
    }
    // The nodes running when `up` returns: the founders (less any governance removed) and the
    // added ones that joined.
    let mut started = Vec::new();
    for i in 1..=n {
        if let Err(e) = start_node(&dir, i) {
            // A box that governance removed refuses to start, and says so in its log.
            let log = fs::read_to_string(node_dir(&dir, i).join("node.log")).unwrap_or_default();
            match log.lines().last() {
                Some(l) if l.contains("is not a member") => {
                    println!("  node{i} was removed by governance: not started");
                }
                _ => return Err(e),
            }
        } else {
            started.push(i);
        }
    }
    for i in added_nodes(&dir, &genesis) {
        if node_dir(&dir, i).join("data/ledger").exists() {
            start_signer(&dir, i)?;
            start_node(&dir, i)?;
            started.push(i);
        } else {
            println!(
                "  node{i} is provisioned but has not joined: once governance adds it, \
                 `vpbox cluster join --dir {} --node {i} --from 1`",
                dir.display()
            );
        }
    }
    if fresh {
        let module = match &a.module {
            Some(m) => m.clone(),
            None => default_module()?,
        };
        enroll_members(&dir, &genesis, &fs::canonicalize(&module)?)?;
    }
    if let Some(net) = crate::netns::load(&dir)? {
        println!(
            "Each box in its own network namespace, on bridge {} ({}/24):",
            net.bridge(),
            net.gateway()
        );
        for i in boxes(&dir) {
            println!("  node{i}: {} in {}", net.address(i)?, net.namespace(i));
        }
    }
    println!("{} nodes up. JSON-RPC (HTTP/1.1 on Unix sockets):", started.len());
    for i in &started {
        println!("  node{i}: {}", rpc_path(&dir, *i)?.display());
    }
    let rpc = rpc_path(&dir, started.first().copied().unwrap_or(1))?;
    print!("{}", hints(&dir, &rpc));
    Ok(Outcome::Ok)
}

/// What `up` suggests trying: commands that work as printed, from any working directory (the
/// folder named, absolute).
fn hints(dir: &Path, rpc: &Path) -> String {
    let d = dir.display();
    let (k, v) = ("11".repeat(32), "22".repeat(32));
    format!(
        "Try:\n  vpbox anchor put --dir {d} --posp {posp} 0x{k} 0x{v}\n  \
         vpbox anchor get --dir {d} 0x{k}\n  vpbox status --dir {d}\n  \
         curl -s --unix-socket {rpc} http://node/ -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"block_getChainHeight\",\"params\":[]}}'\n",
        posp = dir.join("posp/bank-a.toml").display(),
        rpc = rpc.display(),
    )
}

/// How long `cluster down` waits for a process to stop on SIGTERM before SIGKILL: a node's
/// own limit for a clean stop (a second signal, or 20 s, ends it). Killed, it loses nothing
/// committed (every block is a synced write), only its state map's checkpoint, so its next
/// start scans every anchor.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Stops the processes that the pid file `pid_file` names in each of the node folders `nds`:
/// SIGTERM to all of them first, then up to [`STOP_GRACE`] in all for them to exit (so a box
/// whose every process ignored SIGTERM takes 20 s, not 20 s each); those still running then get
/// SIGKILL and are waited for (5 s in all), so that they are gone before what follows (a copy
/// of a ledger, a start in its place). The pid files of those stopped are removed; an error
/// names each process that could not be held, signalled or stopped, and its pid file stays.
fn stop(nds: &[PathBuf], pid_file: &str) -> Result<()> {
    use rustix::process::Signal;
    let mut failed = Vec::new();
    let mut procs: Vec<(&PathBuf, String, Vpbox)> = Vec::new();
    for nd in nds {
        let what = nd.join(pid_file).display().to_string();
        match alive(nd, pid_file) {
            Ok(Some(p)) => procs.push((nd, what, p)),
            Ok(None) => {}
            Err(e) => failed.push((nd, format!("{what}: {e:#}"))),
        }
    }
    // One that refuses the signal (another user's) is not waited for.
    procs.retain(|(nd, what, p)| match p.signal(Signal::TERM, what) {
        Ok(()) => true,
        Err(e) => {
            failed.push((*nd, format!("{e:#}")));
            false
        }
    });
    let deadline = Instant::now() + STOP_GRACE;
    let mut killed = Vec::new();
    for (nd, what, p) in &procs {
        let left = deadline.saturating_duration_since(Instant::now());
        // Judged by the process held above, not by the file read again: a file removed or
        // rewritten meanwhile must not leave running a process that ignored SIGTERM.
        if !p.wait_gone(left) {
            eprintln!("{what}: still running {STOP_GRACE:?} after SIGTERM; sending SIGKILL");
            match p.signal(Signal::KILL, what) {
                Ok(()) => killed.push((nd, what, p)),
                Err(e) => failed.push((*nd, format!("{e:#}"))),
            }
        }
    }
    // Every straggler killed first, then waited for together: 5 s in all.
    let deadline = Instant::now() + Duration::from_secs(5);
    for (nd, what, p) in killed {
        if !p.wait_gone(deadline.saturating_duration_since(Instant::now())) {
            failed.push((*nd, format!("{what}: still running 5 s after SIGKILL")));
        }
    }
    for nd in nds {
        if !failed.iter().any(|(f, _)| *f == nd) {
            let _ = fs::remove_file(nd.join(pid_file));
        }
    }
    if !failed.is_empty() {
        let why: Vec<String> = failed.into_iter().map(|(_, why)| why).collect();
        bail!("not stopped: {}", why.join("; "));
    }
    Ok(())
}

fn down(dir: &Path) -> Result<Outcome> {
    let network = crate::netns::load(dir)?;
    if network.is_some() {
        // The processes are root's, and so is the network: without root nothing would stop.
        crate::netns::require_root("`vpbox cluster down` of a --netns cluster")?;
    }
    let ids: Vec<u32> = if dir.join("genesis.json").exists() {
        let genesis = Genesis::load(&dir.join("genesis.json"))?;
        genesis.nodes.iter().map(|n| n.id.0).chain(added_nodes(dir, &genesis)).collect()
    } else if network.is_some() {
        // A `--netns` creation that failed halfway: its network was claimed first, and the
        // signers it started run in their namespaces.
        (1..=64).filter(|i| node_dir(dir, *i).exists()).collect()
    } else {
        bail!("{} holds no cluster", dir.display());
    };
    // The proxies first (no more traffic in), then the nodes (each saves its state map), then
    // the signers.
    let nds: Vec<PathBuf> = ids.into_iter().map(|i| node_dir(dir, i)).collect();
    let mut left = Vec::new();
    for pid_file in ["proxy.pid", "node.pid", "signer.pid"] {
        if let Err(e) = stop(&nds, pid_file) {
            left.push(format!("{e:#}"));
        }
    }
    if !left.is_empty() {
        bail!("{}", left.join("; "));
    }
    if let Some(net) = network {
        crate::netns::remove(dir)?;
        println!(
            "removed the namespaces vpbox-{}-node*, their veths and {}",
            net.tag,
            net.bridge()
        );
    }
    println!("stopped; the data stays in {}", dir.display());
    Ok(Outcome::Ok)
}

/// How long `vpbox status` waits for each node, connection, request and answer together. A
/// stopped node (SIGSTOP, hung) keeps its socket and its backlog takes connections that are
/// never answered: without a deadline the command waited for the client's 120 s timeout.
const STATUS_DEADLINE: Duration = Duration::from_secs(2);

/// Why a node gave no status.
enum Down {
    /// It failed: no socket, connection refused, an error answer.
    Refused(String),
    /// It did not answer within the deadline.
    Silent,
}

/// `node_getNodes` of every node at once, each given `deadline` from now; in `sockets`' order.
fn ask_nodes(clients: Vec<RpcClient>, deadline: Duration) -> Vec<Result<Value, Down>> {
    let end = Instant::now() + deadline;
    let (tx, rx) = std::sync::mpsc::channel();
    let n = clients.len();
    for (i, mut c) in clients.into_iter().enumerate() {
        let tx = tx.clone();
        // A thread per node: `connect` itself can block on a hung node, so a node that misses
        // its deadline is left behind (the command exits right after) rather than waited for.
        std::thread::spawn(move || {
            c.set_timeout(deadline);
            let answer = c.call("node_getNodes", json!([]));
            let _ = tx.send((i, answer));
        });
    }
    drop(tx);
    let mut out: Vec<Result<Value, Down>> = (0..n).map(|_| Err(Down::Silent)).collect();
    while let Ok((i, answer)) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        out[i] = match answer {
            Ok(v) => Ok(v),
            // The socket's own timeout fired a moment before ours.
            Err(CallError::Io { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(Down::Silent)
            }
            Err(e) => Err(Down::Refused(e.to_string())),
        };
    }
    out
}

pub(crate) fn status(a: &StatusArgs) -> Result<Outcome> {
    let dir = &a.dir.dir;
    let genesis = Genesis::load(&dir.join("genesis.json"))
        .with_context(|| format!("no cluster in {} (run `vpbox cluster up`)", dir.display()))?;
    // The genesis's nodes and those governance added that joined (their entry is node.json).
    let mut boxes: Vec<(u32, String, String)> =
        genesis.nodes.iter().map(|n| (n.id.0, n.name.clone(), n.bank.clone())).collect();
    for i in added_nodes(dir, &genesis) {
        let nd = node_dir(dir, i);
        let entry: Value = fs::read_to_string(nd.join("node.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        // One that has not joined is shown too: once governance added it, it is a member
        // that does not answer.
        let bank = entry["bank"].as_str().unwrap_or("?").to_string();
        boxes.push((i, format!("node{i}"), bank));
    }
    // Each box through its proxy's API, as the cluster's bank-a POSP (`node_getNodes` is a
    // read), as a monitoring host would; its node's socket with --local, or for a box without
    // an API listener.
    let (cert, key) = (dir.join("posp/bank-a.crt"), dir.join("posp/bank-a.pem"));
    let mut clients = Vec::new();
    for n in &boxes {
        let through_proxy = if a.local || !cert.exists() {
            None
        } else {
            // A box whose client cannot be made (no DNS name in its certificate, …) is asked
            // on its node's socket rather than failing the whole table.
            crate::client_cmd::box_client(dir, n.0, &cert, &key).ok().flatten().map(|(_, c)| c)
        };
        clients.push(match through_proxy {
            Some(c) => c,
            None => RpcClient::new(&rpc_path(dir, n.0)?),
        });
    }
    let mut answers = ask_nodes(clients, STATUS_DEADLINE);
    for (n, answer) in boxes.iter().zip(answers.iter_mut()) {
        let added = genesis.node(vpbox_consensus::NodeId(n.0)).is_none();
        if added && !node_dir(dir, n.0).join("data/ledger").exists() {
            *answer = Err(Down::Refused(NOT_JOINED.into()));
        }
    }
    let rows: Vec<_> = boxes.iter().zip(answers).collect();
    let silent = format!("no answer within {} s", STATUS_DEADLINE.as_secs());
    if a.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(n, r)| match r {
                Ok(v) => v.clone(),
                Err(Down::Refused(e)) => json!({"self": n.0, "error": e}),
                Err(Down::Silent) => json!({"self": n.0, "error": silent}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<7} {:<8} {:<16} {:>7} {:>6} {:>8} {:>8}",
            "node", "bank", "status", "height", "view", "primary", "pending"
        );
        for (n, r) in &rows {
            match r {
                Ok(v) => println!(
                    "{:<7} {:<8} {:<16} {:>7} {:>6} {:>8} {:>8}",
                    n.1,
                    n.2,
                    v["nodes"]
                        .as_array()
                        .and_then(|l| l.iter().find(|x| x["isSelf"] == json!(true)))
                        .and_then(|x| x["status"].as_str())
                        .unwrap_or("?"),
                    v["height"].to_string(),
                    v["view"].to_string(),
                    format!("node{}", v["primary"]),
                    v["pending"].to_string(),
                ),
                Err(Down::Refused(e)) if e == NOT_JOINED => {
                    println!("{:<7} {:<8} {:<16}", n.1, n.2, NOT_JOINED);
                }
                Err(Down::Refused(_)) => println!("{:<7} {:<8} {:<16}", n.1, n.2, "down"),
                Err(Down::Silent) => println!("{:<7} {:<8} down ({silent})", n.1, n.2),
            }
        }
    }
    if !a.json {
        // A node whose signer refuses its messages is not voting as it should: say why.
        for (n, r) in &rows {
            let Ok(v) = r else { continue };
            let refused = v["signer"]["refused"].as_u64().unwrap_or(0);
            if refused > 0 {
                let last = &v["signer"]["lastRefusal"];
                println!(
                    "{}: its signer refused {refused} of its messages; last at {}: {}",
                    n.1,
                    last["at"].as_str().unwrap_or("?"),
                    last["reason"].as_str().unwrap_or("?")
                );
            }
        }
    }
    let up = rows.iter().filter(|(_, r)| r.is_ok()).count();
    // The membership is the governance state's, as the nodes that answer report it.
    let member_ids: Option<Vec<u64>> =
        rows.iter().find_map(|(_, r)| r.as_ref().ok()).and_then(|v| {
            v["nodes"].as_array().map(|l| l.iter().filter_map(|n| n["id"].as_u64()).collect())
        });
    let members = member_ids.as_ref().map_or(rows.len(), Vec::len);
    let quorum = vpbox_consensus::quorum(members);
    println!(
        "{up} of {} boxes answer; {quorum} of {members} members are needed to commit",
        rows.len()
    );
    let mut problems = health_problems(&rows, member_ids.as_deref(), quorum);
    // Clocks, as the nodes see each other's: a box whose clock is off is named.
    let reports: Vec<(u64, u64, i64)> = rows
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flat_map(|v| {
            let me = v["self"].as_u64().unwrap_or(0);
            v["nodes"].as_array().into_iter().flatten().filter_map(move |p| {
                let about = p["id"].as_u64()?;
                (about != me).then_some((me, about, p["clockOffsetMs"].as_i64()?))
            })
        })
        .collect();
    for (id, drift) in vpbox_proxy::alarms::clock_drift(&reports) {
        let name = rows
            .iter()
            .find(|(n, _)| u64::from(n.0) == id)
            .map_or(format!("node{id}"), |(n, _)| n.1.clone());
        let said = format!(
            "{name}'s clock is {} {} the others'",
            humantime::format_duration(Duration::from_secs(drift.unsigned_abs() / 1000)),
            if drift > 0 { "ahead of" } else { "behind" }
        );
        if drift.unsigned_abs() >= genesis.tx_window_ms / 2 {
            problems.push(format!(
                "{said}: with the transaction window of {}, it refuses transactions that \
                 correct clocks stamp, or admits stale ones; fix its time sync (NTP)",
                humantime::format_duration(Duration::from_secs(genesis.tx_window_ms / 1000))
            ));
        } else {
            println!("clock: {said} (check its time sync)");
        }
    }
    // What runs out: the CRLs in force and the roots (the governance state), the enrolled
    // certificates (a node's own summary, which only its operator sees: asked on its socket).
    if let Some((n, _)) = rows.iter().find(|(_, r)| r.is_ok()) {
        let mut c = RpcClient::new(&rpc_path(dir, n.0)?);
        c.set_timeout(STATUS_DEADLINE);
        let state = c.call("gov_getState", json!([])).ok();
        let trust =
            state.as_ref().and_then(|s| vpbox_proxy::trust::TrustState::from_governance(s).ok());
        let enrolled = c.call("node_getNodes", json!([])).ok().map(|v| v["certificates"].clone());
        if let Some(t) = trust {
            let (warnings, failing) = vpbox_proxy::alarms::expiry_alarms(
                &t.crls_in_force,
                &t.certificates,
                enrolled.as_ref().unwrap_or(&Value::Null),
                wall_now(),
            );
            for w in warnings {
                println!("warning: {w}");
            }
            problems.extend(failing);
        }
    }
    // Each box's disk, on its node's socket (an operator's figure, not shown to POSPs).
    for (n, _) in rows.iter().filter(|(_, r)| r.is_ok()) {
        let mut c = RpcClient::new(&rpc_path(dir, n.0)?);
        c.set_timeout(STATUS_DEADLINE);
        let Ok(v) = c.call("node_getNodes", json!([])) else { continue };
        match vpbox_proxy::alarms::disk_alarm(&v["disk"]) {
            Some((true, said)) => problems.push(format!("{}: {said}", n.1)),
            Some((false, said)) => println!("warning: {}: {said}", n.1),
            None => {}
        }
    }
    for p in &problems {
        println!("unhealthy: {p}");
    }
    Ok(if problems.is_empty() { Outcome::Ok } else { Outcome::Invalid })
}

#[allow(clippy::disallowed_methods)] // the command's own clock, for what runs out when
fn wall_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// A box provisioned by `cluster add-node` that has no ledger yet (`cluster join` gives it one).
const NOT_JOINED: &str = "not joined";

/// A box (id, name, bank) and its `node_getNodes` answer.
type StatusRow<'a> = (&'a (u32, String, String), Result<Value, Down>);

/// Why the consortium, seen from these answers, needs an operator: no quorum, or none to
/// spare (one more failure stops commits; said of four members or more, as a smaller one never
/// has one to spare); a member's box that does not answer; a member
/// whose own status is not `up` (a view change, its signer refusing). A box governance
/// removed is not a member: its state is nobody's problem. None: healthy.
fn health_problems(rows: &[StatusRow<'_>], members: Option<&[u64]>, quorum: usize) -> Vec<String> {
    let is_member = |id: u32| members.is_none_or(|m| m.contains(&u64::from(id)));
    let mut problems = Vec::new();
    let answering = rows.iter().filter(|(n, r)| is_member(n.0) && r.is_ok()).count();
    if answering < quorum {
        problems.push(format!(
            "no quorum: {answering} of the members answer and {quorum} are needed, so nothing \
             commits"
        ));
    } else if answering == quorum && members.map_or(rows.len(), <[u64]>::len) >= 4 {
        problems.push(format!(
            "no failure to spare: {answering} of the members answer, exactly the {quorum} \
             needed; one more down and nothing commits"
        ));
    }
    for (n, r) in rows.iter().filter(|(n, _)| is_member(n.0)) {
        match r {
            Err(Down::Refused(e)) if e == NOT_JOINED => problems.push(format!(
                "{} ({}) is a member but has not joined: `vpbox cluster join --node {} --from 1`",
                n.1, n.2, n.0
            )),
            Err(_) => problems.push(format!("{} ({}) does not answer", n.1, n.2)),
            Ok(v) => {
                let own = v["nodes"]
                    .as_array()
                    .and_then(|l| l.iter().find(|x| x["isSelf"] == json!(true)))
                    .and_then(|x| x["status"].as_str())
                    .unwrap_or("?");
                if own != "up" {
                    problems.push(format!("{} ({}) is {own}", n.1, n.2));
                }
            }
        }
    }
    problems
}
