//! Command-line definitions and dispatch.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_ERROR;
use crate::{Outcome, anchor_cmd, sm2_cmd, sm3_cmd};

/// vpbox — the consortium anchoring appliance: operator tools and services.
#[derive(Debug, Parser)]
#[command(name = "vpbox", version, max_term_width = 100)]
#[command(after_help = "Exit status: 0 ok, 1 checked and invalid, 2 usage or I/O error.")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print or check SM3 checksums (like sha256sum).
    #[command(after_help = "Examples:
  vpbox sm3 slip.json                 # <64 hex>  slip.json
  cat slip.json | vpbox sm3           # reads stdin
  vpbox sm3 *.json > SM3SUMS && vpbox sm3 --check SM3SUMS
  vpbox sm3 --json a b                # [{\"file\":\"a\",\"sm3\":\"…\"},…]")]
    Sm3(Sm3Args),
    /// SM2 keys and signatures, interoperable with `openssl pkeyutl`.
    #[command(subcommand)]
    Sm2(Sm2Command),
    /// Sales-slip anchors: what a POSP puts on the ledger.
    #[command(subcommand)]
    Anchor(AnchorCommand),
    /// Proofs an outsider checks offline: get an anchor's bundle, verify one, show one.
    #[command(subcommand)]
    Proof(crate::proof_cmd::ProofCommand),
    /// HSM keys for security officers: tokens, keygen, keys, inspect, selftest, retire.
    #[command(subcommand)]
    Hsm(crate::hsm_cmd::HsmCommand),
    /// The signer service (the only holder of the HSM PIN) and probes of a running one.
    #[command(subcommand)]
    Signer(crate::signer_cmd::SignerCommand),
    /// A member bank's certificate authority: init, install, issue, revoke, crl, list.
    #[command(subcommand)]
    Ca(crate::ca_cmd::CaCommand),
    /// Certificates on the ledger: enroll a POSP's, publish a bank's CRL.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Consortium governance: propose, approve and submit changes of banks, roots and nodes.
    #[command(subcommand)]
    Gov(crate::gov_cmd::GovCommand),
    /// Benchmarks against real parts, with their peers measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The VP node service.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The box's configuration file (its node, sockets and peers' addresses).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The box's proxy: the only process with a network (P2P links over mutual TLS).
    #[command(subcommand)]
    Proxy(ProxyCommand),
    /// The box's nftables firewall, rendered from its box.toml ([firewall], [proxy], [[peers]]).
    #[command(subcommand)]
    Firewall(FirewallCommand),
    /// A local consortium for development: `up` creates and starts it (default ./vpbox-dev).
    #[command(subcommand)]
    Cluster(crate::cluster_cmd::ClusterCommand),
    /// The local consortium's nodes, primary, heights and health at a glance.
    #[command(after_help = "Exit status: 0 healthy; 1 unhealthy, each reason on an `unhealthy:` \
line — no quorum, no failure to spare (one more box down stops commits), a member that does not \
answer, or one whose status is not `up` (a view change, its signer refusing); 2 usage or I/O error.")]
    Status(crate::cluster_cmd::StatusArgs),
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Enroll a certificate (signed with its own key): the submitter's transactions are
    /// admitted from its block on, while the certificate is valid and not revoked.
    #[command(after_help = "Example:
  vpbox cert enroll posp/bank-a.crt --key-file posp/bank-a.pem")]
    Enroll(crate::client_cmd::CertTxArgs),
    /// Publish a bank's CRL (from `vpbox ca crl`): every node refuses the revoked
    /// certificates' transactions from its block on.
    #[command(after_help = "Example:
  vpbox ca revoke --dir ca 5f3a… --reason key-compromise
  vpbox ca crl --dir ca --out bank-a.crl
  vpbox cert publish-crl bank-a.crl --key-file posp/bank-a.pem
As the hourly renewal (systemd/vpbox-crl-renew.service) runs it:
  vpbox cert publish-crl /var/lib/vpbox-ca/crl.pem --posp /etc/vpbox/crl-publisher.toml --unless-published")]
    PublishCrl(crate::client_cmd::PublishCrlArgs),
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Run a node with the box's configuration (`vpbox config check` checks it).
    Run(crate::cluster_cmd::NodeRunArgs),
}

#[derive(Debug, Subcommand)]
enum ProxyCommand {
    /// Run the proxy of a box (its `[proxy]` table; its TLS key is signed by the box's signer).
    #[command(after_help = "Example:\n  vpbox proxy run --config /etc/vpbox/box.toml")]
    Run(crate::cluster_cmd::NodeRunArgs),
    /// The proxy's API shell with a P-256 key in a file, for `vpbox bench proxy` only.
    #[command(hide = true)]
    BenchServe(crate::bench_proxy::BenchServeArgs),
}

#[derive(Debug, Subcommand)]
enum FirewallCommand {
    /// Print the ruleset (table inet vpbox), or every reason the configuration is refused.
    #[command(after_help = "Example:\n  vpbox firewall render --config /etc/vpbox/box.toml")]
    Render(crate::firewall_cmd::FirewallArgs),
    /// Render the ruleset and have `nft -c` check it; nothing is changed.
    Check(crate::firewall_cmd::FirewallArgs),
    /// Render the ruleset and load it with `nft -f`, atomically (the table replaced whole).
    Apply(crate::firewall_cmd::FirewallArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a box's configuration against itself and its genesis: every error is printed,
    /// each naming its field; exit 1 if any.
    #[command(after_help = "Example:\n  vpbox config check --config /etc/vpbox/box.toml")]
    Check(crate::cluster_cmd::NodeRunArgs),
    /// Print an annotated example of the box's configuration (docs/examples/box.toml): every
    /// section and field, with what it is for.
    #[command(
        after_help = "Example:\n  vpbox config example > /etc/vpbox/box.toml   # then edit it"
    )]
    Example,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// SM2 signatures/s through each layer of the signer, against one token.
    #[command(after_help = "Example:
  vpbox bench signer --module ./libvpbox_test_token.so --token node1 --pin-file pin --id 01")]
    Signer(crate::bench_cmd::SignerBenchArgs),
    /// Committed anchors/s (batch and signed paths), commit latency and bytes on disk per
    /// anchor (after a clean stop) on a fresh local cluster, with raw RocksDB measured in the
    /// same run.
    #[command(after_help = "Example:\n  vpbox bench anchors --nodes 4 --batch 5000 --count 200000")]
    Anchors(crate::client_cmd::BenchAnchorsArgs),
    /// How costs grow with the ledger: `anchor_get` latency on a loaded ledger, a stopped
    /// node's catch-up rate and bytes on disk per anchor, on a fresh local cluster.
    #[command(after_help = "Example:\n  vpbox bench growth --anchors 10000000 --catch-up 1000000")]
    Growth(crate::bench_growth::BenchGrowthArgs),
    /// What hostile and slow clients cost a node (its peak memory) and what an honest client
    /// sees meanwhile, on a fresh local cluster.
    #[command(after_help = "Example:\n  vpbox bench rpc --hostile 256 --slow 1000")]
    Rpc(crate::bench_rpc::BenchRpcArgs),
    /// vpbox-proxy against nginx in one run, in front of the same upstream: requests/s and
    /// p99 with wrk at several connection counts (TLS 1.3, ECDSA P-256, AES-128-GCM), and
    /// full mutual handshakes/s.
    #[command(after_help = "Example:\n  vpbox bench proxy --seconds 10 --connections 1,16,256")]
    Proxy(crate::bench_proxy::BenchProxyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct Sm3Args {
    /// Files to hash; `-` or none reads stdin. With --check, checksum lists to verify.
    pub(crate) files: Vec<String>,
    /// Read `<hex>  <name>` lines from the FILEs and check them.
    #[arg(short = 'c', long)]
    pub(crate) check: bool,
    /// With --check: print nothing for files that match.
    #[arg(long, requires = "check")]
    pub(crate) quiet: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
enum Sm2Command {
    /// Generate a key pair in software (for tests and client tools; node keys live in the HSM).
    #[command(after_help = "Examples:
  vpbox sm2 keygen --out posp.key --pub-out posp.pub
  openssl pkey -in posp.key -text -noout     # OpenSSL reads it")]
    Keygen(KeygenArgs),
    /// Print the public key (SPKI PEM) of a private key.
    #[command(after_help = "Example:\n  vpbox sm2 pub --key posp.key > posp.pub")]
    Pub(PubArgs),
    /// Sign a file (or stdin) with SM2/SM3 and the signer ID.
    #[command(after_help = "Examples:
  vpbox sm2 sign --key posp.key slip.json > slip.sig
  openssl pkeyutl -verify -rawin -digest sm3 -pubin -inkey posp.pub \\
      -pkeyopt distid:1234567812345678 -in slip.json -sigfile slip.sig")]
    Sign(SignArgs),
    /// Verify an SM2 signature over a file (or stdin); prints `Verified OK` or
    /// `Verification failure`.
    #[command(after_help = "Examples:
  vpbox sm2 verify --pub posp.pub --sig slip.sig slip.json && echo good
  vpbox sm2 verify --pub posp.pub --sig slip.raw --raw slip.json")]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600, never overwritten).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Where to write the public key (SPKI PEM).
    #[arg(long)]
    pub(crate) pub_out: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    /// The private key (PKCS#8 or SEC1 PEM).
    #[arg(long)]
    pub(crate) key: String,
    /// Write the PEM here instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Print JSON (PEM, SEC1 point, SM3 fingerprint) instead of PEM.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SignArgs {
    /// The private key (PKCS#8 or SEC1 PEM).
    #[arg(long)]
    pub(crate) key: String,
    /// The signer ID hashed into Z.
    #[arg(long, default_value = "1234567812345678")]
    pub(crate) id: String,
    /// Write raw 64-byte r‖s instead of DER.
    #[arg(long)]
    pub(crate) raw: bool,
    /// Write the signature here instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// The data to sign; `-` or none reads stdin.
    pub(crate) file: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The public key (SPKI PEM; a private key PEM also works).
    #[arg(long = "pub")]
    pub(crate) public: String,
    /// The signature file (DER, or raw r‖s with --raw).
    #[arg(long)]
    pub(crate) sig: String,
    /// The signer ID hashed into Z.
    #[arg(long, default_value = "1234567812345678")]
    pub(crate) id: String,
    /// The signature is raw 64-byte r‖s.
    #[arg(long)]
    pub(crate) raw: bool,
    /// The signed data; `-` or none reads stdin.
    pub(crate) file: Option<String>,
}

#[derive(Debug, Subcommand)]
enum AnchorCommand {
    /// Compute the anchor key and value of sales slips (see docs/slip-format.md).
    #[command(after_help = "Examples:
  vpbox anchor hash slip.json          # 0x<key>  0x<value>  slip.json
  vpbox anchor hash --raw slip.pdf     # value only, for slips that are not vpbox JSON
  vpbox anchor hash --json *.json")]
    Hash(AnchorHashArgs),
    /// Anchor a key and value (or a CSV of them) on the ledger through a node.
    #[command(after_help = "Examples:
  vpbox anchor put --posp posp.toml 0x<key> 0x<value>   # (true, \"Success\") or (false, \"the key exist\")
  vpbox anchor put --posp posp.toml --file day-end.csv  # key,value lines; resumes after an interruption
  vpbox anchor put --module M --token T --key-id 01 --pin-file pin --url https://… 0x… 0x…
  vpbox anchor put --rpc /run/vpbox/node/rpc.sock --key-file posp.pem 0x… 0x…
The signing key is required (no default): --key-file, a token, or a POSP file (--posp) naming
one; `vpbox cluster up` writes one per bank (vpbox-dev/posp/bank-a.toml).")]
    Put(Box<crate::client_cmd::PutArgs>),
    /// Read an anchor: (true, \"Success\", value) or (false, \"the key is not exist\", 0x00…00).
    Get(crate::client_cmd::GetArgs),
    /// Check a slip file against the ledger: anchored, and with exactly these bytes?
    Verify(crate::client_cmd::VerifyArgs),
    /// Confirm that every pair of a day-end file is anchored with its value (exit 0), or name
    /// the lines that are not (exit 1).
    #[command(after_help = "Example:
  vpbox anchor put --posp posp.toml --file day-end.csv
  vpbox anchor check --dir vpbox-dev --file day-end.csv
  vpbox anchor check --url https://box1:8443 --server-name node1.bank-a --roots roots.pem \\
      --tls-cert posp.crt --tls-key posp.pem --file day-end.csv")]
    Check(crate::client_cmd::CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AnchorHashArgs {
    /// Slip files; `-` reads stdin.
    #[arg(required = true)]
    pub(crate) slips: Vec<String>,
    /// Hash raw bytes (value only) instead of parsing a vpbox JSON slip.
    #[arg(long)]
    pub(crate) raw: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Parses `args`, runs the command, prints any error, and returns the exit status.
pub fn main(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_ERROR } else { 0 });
        }
    };
    // The node and the signer log through `vpbox_log` (journald under systemd, else stamped
    // lines on stderr), their fatal error too; the proxy writes its own JSON lines, and its
    // error is a stamped line like them.
    let traced = match cli.command {
        Command::Node(NodeCommand::Run(_)) => Some("vpbox-node"),
        Command::Signer(crate::signer_cmd::SignerCommand::Run { .. }) => Some("vpbox-signer"),
        _ => None,
    };
    if let Some(name) = traced {
        vpbox_log::init(name);
    }
    let service = traced.is_some() || matches!(cli.command, Command::Proxy(ProxyCommand::Run(_)));
    match run(cli) {
        Ok(outcome) => outcome.into(),
        Err(e) if traced.is_some() => {
            vpbox_log::error!("{e:#}");
            ExitCode::from(EXIT_ERROR)
        }
        Err(e) if service => {
            let _ = writeln!(std::io::stderr(), "{} vpbox: {e:#}", crate::stamp::now());
            ExitCode::from(EXIT_ERROR)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "vpbox: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Sm3(a) => sm3_cmd::run(&a),
        Command::Sm2(Sm2Command::Keygen(a)) => sm2_cmd::keygen(&a),
        Command::Sm2(Sm2Command::Pub(a)) => sm2_cmd::public(&a),
        Command::Sm2(Sm2Command::Sign(a)) => sm2_cmd::sign(&a),
        Command::Sm2(Sm2Command::Verify(a)) => sm2_cmd::verify(&a),
        Command::Cert(CertCommand::Enroll(a)) => crate::client_cmd::cert_tx(&a, false),
        Command::Cert(CertCommand::PublishCrl(a)) => crate::client_cmd::publish_crl(&a),
        Command::Anchor(AnchorCommand::Hash(a)) => anchor_cmd::hash(&a),
        Command::Anchor(AnchorCommand::Put(a)) => crate::client_cmd::put(&a),
        Command::Anchor(AnchorCommand::Get(a)) => crate::client_cmd::get(&a),
        Command::Anchor(AnchorCommand::Verify(a)) => crate::client_cmd::verify(&a),
        Command::Anchor(AnchorCommand::Check(a)) => crate::client_cmd::check(&a),
        Command::Proof(cmd) => crate::proof_cmd::run(&cmd),
        Command::Node(NodeCommand::Run(a)) => crate::cluster_cmd::node_run(&a),
        Command::Config(ConfigCommand::Check(a)) => crate::cluster_cmd::config_check(&a.config),
        Command::Config(ConfigCommand::Example) => {
            print!("{}", vpbox_node::config::EXAMPLE);
            Ok(Outcome::Ok)
        }
        Command::Firewall(cmd) => {
            use crate::firewall_cmd::{Action, run};
            match cmd {
                FirewallCommand::Render(a) => run(Action::Render, &a),
                FirewallCommand::Check(a) => run(Action::Check, &a),
                FirewallCommand::Apply(a) => run(Action::Apply, &a),
            }
        }
        Command::Proxy(ProxyCommand::Run(a)) => crate::cluster_cmd::proxy_run(&a),
        Command::Proxy(ProxyCommand::BenchServe(a)) => crate::bench_proxy::bench_serve(&a),
        Command::Cluster(cmd) => crate::cluster_cmd::run(&cmd),
        Command::Status(a) => crate::cluster_cmd::status(&a),
        Command::Hsm(cmd) => crate::hsm_cmd::run(&cmd),
        Command::Signer(cmd) => crate::signer_cmd::run(&cmd),
        Command::Ca(cmd) => crate::ca_cmd::run(&cmd),
        Command::Gov(cmd) => crate::gov_cmd::run(&cmd),
        Command::Bench(BenchCommand::Signer(a)) => crate::bench_cmd::signer(&a),
        Command::Bench(BenchCommand::Anchors(a)) => crate::client_cmd::bench_anchors(&a),
        Command::Bench(BenchCommand::Growth(a)) => crate::bench_growth::bench_growth(&a),
        Command::Bench(BenchCommand::Rpc(a)) => crate::bench_rpc::bench_rpc(&a),
        Command::Bench(BenchCommand::Proxy(a)) => crate::bench_proxy::bench_proxy(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
