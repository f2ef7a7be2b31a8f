//! The genesis file: the consortium's founding configuration, identical on every node.
//!
//! JSON, so that any bank's tooling can read it. Its SM3 hash (of the exact file bytes) is
//! block 0's `parent`, so two nodes founded by different files can never share a chain.
//!
//! ```json
//! {
//!   "chain_id": "vpbox-dev",
//!   "timestamp_ms": 1764000000000,
//!   "tx_window_ms": 600000,
//!   "consensus": { "batch_size_max": 500, "batch_timeout_ms": 10, "request_timeout_ms": 2000 },
//!   "nodes": [
//!     { "id": 1, "bank": "bank-a", "name": "node1", "consensus_key": "04…",
//!       "certificate": "-----BEGIN CERTIFICATE-----\n…" }
//!   ],
//!   "roots": [ { "bank": "bank-a", "certificate": "-----BEGIN CERTIFICATE-----\n…" } ]
//! }
//! ```
//!
//! - `consensus_key` is an SM2 point, uncompressed SEC1, in hex; `certificate` is the node's
//!   `vp-node` certificate from its bank's CA (PEM; followed by the bank's issuing CA when that
//!   CA is not the root), which must name the node (CN) and the bank (O) and certify that very
//!   key — every founding node is admitted by certificate.
//! - A node entry is an identity only. Where a node is reached is not consortium state: each
//!   box's own configuration ((`vpbox_node::config`)) names its sockets and its peers' addresses, so
//!   a box moves without a vote and the genesis holds nothing of one machine. (Genesis files of
//!   earlier versions carried `peer` and `rpc` endpoints; they are refused with a message saying
//!   so, and removing them founds a new chain, since the file's hash is the chain's identity.)
//! - `consensus` overrides [`Params`] fields by name; every node must run the same values, so
//!   they live here and not in a node's own configuration.
//! - `roots` are the founding banks' root CA certificates (PEM, inline so that the genesis
//!   hash covers them). Submitters are admitted by certificate: a POSP enrolls its certificate
//!   (`cert_enroll`), issued under one of these roots with the `posp` profile, and its
//!   transactions are admitted while the certificate is valid and not on its bank's latest CRL
//!   (`cert_publishCrl`) — decided at execution, from the same block at every node.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vpbox_consensus::{Config, Digest as CDigest, Member, NodeId, Params, PublicKey as CKey};
use vpbox_ledger::block::Block;
use vpbox_ledger::governance::{NodeSpec, State, check_node};
use vpbox_sm::sm2::PublicKey;
use vpbox_sm::sm3::{Digest, hash};

/// Genesis errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// The file could not be read.
    #[error("genesis {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The file is not a valid genesis.
    #[error("genesis {0}: {1}")]
    Invalid(PathBuf, String),
}

/// The DER of a PEM certificate.
fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let (label, der) =
        pem_rfc7468::decode_vec(pem.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    if label != "CERTIFICATE" {
        return Err(format!("a {label}, not a CERTIFICATE"));
    }
    Ok(der)
}

/// The DER of a PEM certificate followed by its issuing CAs (a node's full chain).
fn chain_der(pem: &str) -> Result<Vec<u8>, String> {
    vpbox_ca::pem::chain_der(pem).map_err(|e| e.to_string())
}

/// A member node.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// Its consensus id.
    pub id: NodeId,
    /// The bank that runs it.
    pub bank: String,
    /// Its name.
    pub name: String,
    /// Its consensus key.
    pub consensus_key: PublicKey,
    /// Its `vp-node` certificate (DER; followed by its issuing CAs when its bank issues from
    /// one), naming the node and the bank, certifying the consensus key.
    pub certificate: Vec<u8>,
}

impl NodeEntry {
    /// As the governance state keeps it.
    pub fn spec(&self) -> NodeSpec {
        NodeSpec {
            id: self.id.0,
            bank: self.bank.clone(),
            name: self.name.clone(),
            consensus_key: self.consensus_key.to_sec1_uncompressed(),
            certificate: self.certificate.clone(),
        }
    }
}

/// A founding bank's root CA.
#[derive(Debug, Clone)]
pub struct Root {
    /// The bank (the certificate's O).
    pub bank: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

/// A parsed genesis.
#[derive(Debug, Clone)]
pub struct Genesis {
    /// The consortium's name.
    pub chain_id: String,
    /// SM3 of the file's bytes.
    pub hash: Digest,
    /// The file's bytes, exactly (what a proof bundle carries).
    pub bytes: Vec<u8>,
    /// Block 0's timestamp.
    pub timestamp_ms: u64,
    /// How far a transaction's timestamp may be from a node's clock.
    pub tx_window_ms: u64,
    /// Consensus parameters.
    pub params: Params,
    /// The members, by id.
    pub nodes: Vec<NodeEntry>,
    /// The founding banks' root certificates.
    pub roots: Vec<Root>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenesis {
    chain_id: String,
    timestamp_ms: u64,
    #[serde(default = "default_window")]
    tx_window_ms: u64,
    #[serde(default)]
    consensus: RawParams,
    nodes: Vec<RawNode>,
    roots: Vec<RawRoot>,
}

fn default_window() -> u64 {
    10 * 60 * 1000
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawParams {
    batch_size_max: Option<usize>,
    batch_timeout_ms: Option<u64>,
    pipeline_depth: Option<u64>,
    checkpoint_interval: Option<u64>,
    window: Option<u64>,
    request_timeout_ms: Option<u64>,
    null_request_timeout_ms: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    new_view_timeout_ms: Option<u64>,
    view_change_resend_ms: Option<u64>,
    fetch_timeout_ms: Option<u64>,
    fetch_entries_max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: u32,
    bank: String,
    name: String,
    consensus_key: String,
    certificate: String,
    /// Endpoints of genesis files before version 2: read only to refuse them by name.
    #[serde(default)]
    peer: Option<serde::de::IgnoredAny>,
    /// As `peer`.
    #[serde(default)]
    rpc: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    bank: String,
    certificate: String,
}

impl Genesis {
    /// Reads and checks the genesis at `path`.
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let bytes = std::fs::read(path).map_err(|e| GenesisError::Io(path.to_path_buf(), e))?;
        Self::parse(&bytes).map_err(|e| GenesisError::Invalid(path.to_path_buf(), e))
    }

    /// Parses genesis bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawGenesis = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if raw.roots.is_empty() {
            return Err("roots: at least one bank root certificate is required".into());
        }
        let mut roots = Vec::new();
        let mut check = vpbox_ca::policy::TrustStore::new();
        for r in raw.roots {
            let der = pem_der(&r.certificate).map_err(|e| format!("root of {}: {e}", r.bank))?;
            check.add_root(&der).map_err(|e| format!("root of {}: {e}", r.bank))?;
            roots.push(Root { bank: r.bank, der });
        }
        // Every founding node is admitted by certificate: its bank's CA vouches for its name and
        // its consensus key (checked at the genesis time; renewal is a governance matter).
        let founded = std::time::UNIX_EPOCH + std::time::Duration::from_millis(raw.timestamp_ms);
        let mut nodes = Vec::new();
        for n in raw.nodes {
            let (spec, consensus_key) = raw_spec(&n)?;
            check_node(&check, &spec, founded)?;
            let certificate = spec.certificate;
            nodes.push(NodeEntry {
                id: NodeId(n.id),
                consensus_key,
                bank: n.bank,
                name: n.name,
                certificate,
            });
        }
        nodes.sort_by_key(|n| n.id);
        if nodes.is_empty() || nodes.windows(2).any(|w| w[0].id == w[1].id) {
            return Err("nodes must be non-empty with distinct ids".into());
        }
        let mut params = Params::default();
        let p = raw.consensus;
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = p.$f { params.$f = v; } )* };
        }
        set!(
            batch_size_max,
            batch_timeout_ms,
            pipeline_depth,
            checkpoint_interval,
            window,
            request_timeout_ms,
            null_request_timeout_ms,
            heartbeat_interval_ms,
            new_view_timeout_ms,
            view_change_resend_ms,
            fetch_timeout_ms,
            fetch_entries_max
        );
        Ok(Self {
            chain_id: raw.chain_id,
            hash: hash(bytes),
            bytes: bytes.to_vec(),
            timestamp_ms: raw.timestamp_ms,
            tx_window_ms: raw.tx_window_ms,
            params,
            nodes,
            roots,
        })
    }

    /// The founding governance state: the roots and the nodes, as the ledger keeps them.
    pub fn governance_state(&self) -> State {
        let nodes: Vec<NodeSpec> = self.nodes.iter().map(NodeEntry::spec).collect();
        State {
            chain: self.hash,
            seq: 0,
            roots: self.roots.iter().map(|r| r.der.clone()).collect(),
            max_node_id: nodes.iter().map(|n| n.id).max().unwrap_or(0),
            nodes,
        }
    }

    /// A node of the governance state.
    pub fn entry(&self, spec: &NodeSpec) -> Result<NodeEntry, String> {
        Ok(NodeEntry {
            id: NodeId(spec.id),
            bank: spec.bank.clone(),
            name: spec.name.clone(),
            consensus_key: PublicKey::from_sec1(&spec.consensus_key)
                .map_err(|_| format!("node {}: bad consensus key", spec.id))?,
            certificate: spec.certificate.clone(),
        })
    }

    /// Block 0.
    pub fn block(&self) -> Block {
        Block::genesis(self.hash, self.timestamp_ms)
    }

    /// The consensus configuration: the members and the state digest of block 0.
    pub fn consensus_config(&self) -> Result<Config, vpbox_consensus::Error> {
        let members = self
            .nodes
            .iter()
            .map(|n| Member {
                id: n.id,
                public_key: CKey(n.consensus_key.to_sec1_uncompressed().to_vec()),
            })
            .collect();
        Config::new(members, CDigest(self.block().header.hash().0))
    }

    /// The member `id`.
    pub fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// A node entry in the genesis's format (one element of `nodes`), as the governance state keeps
/// it: what `vpbox gov propose --add-node FILE` reads. Its certificate is checked when the
/// change applies.
pub fn parse_node_entry(json: &str) -> Result<NodeSpec, String> {
    let raw: RawNode = serde_json::from_str(json).map_err(|e| e.to_string())?;
    raw_spec(&raw).map(|(spec, _)| spec)
}

fn raw_spec(n: &RawNode) -> Result<(NodeSpec, PublicKey), String> {
    let what = format!("node {}", n.id);
    if n.peer.is_some() || n.rpc.is_some() {
        return Err(format!(
            "{what}: `peer` and `rpc` are no longer part of a node entry: endpoints are each \
             box's own configuration (box.toml, `vpbox config check`); remove them (a genesis \
             without them founds a new chain)"
        ));
    }
    let consensus_key = hex::decode(&n.consensus_key)
        .ok()
        .and_then(|b| PublicKey::from_sec1(&b).ok())
        .ok_or_else(|| format!("{what}: not an SM2 public key in hex"))?;
    let certificate = chain_der(&n.certificate).map_err(|e| format!("{what}: {e}"))?;
    let spec = NodeSpec {
        id: n.id,
        bank: n.bank.clone(),
        name: n.name.clone(),
        consensus_key: consensus_key.to_sec1_uncompressed(),
        certificate,
    };
    Ok((spec, consensus_key))
}

#[cfg(test)]
mod tests {
    use vpbox_ca::CertProfile;
    use vpbox_ca::cert::{Grant, check_request, issue, random_serial, self_signed_root};
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;

    const NOW_S: u64 = 1_790_000_000;

    fn now() -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW_S)
    }

    /// A bank's CA for the tests, with software keys.
    struct Bank {
        name: &'static str,
        ca: SoftwareSigner,
        root: String,
    }

    impl Bank {
        fn new(name: &'static str) -> Self {
            let ca = SoftwareSigner::new(SecretKey::generate().unwrap());
            let root =
                self_signed_root(&ca, name, "CN", random_serial([7; 16]).unwrap(), now(), 30)
                    .unwrap();
            Self { name, ca, root }
        }

        /// The roots entry, as JSON.
        fn roots(&self) -> String {
            format!(r#"[{{"bank":"{}","certificate":{}}}]"#, self.name, json(&self.root))
        }

        /// A node key (hex) and its vp-node certificate (a JSON string of PEM) for `cn`.
        fn node(&self, cn: &str) -> (String, String) {
            let key = SoftwareSigner::new(SecretKey::generate().unwrap());
            let csr =
                vpbox_ca::build_csr(&key, &format!("CN={cn},OU=vp-node,O={}", self.name)).unwrap();
            let req = check_request(&csr, CertProfile::VpNode, self.name).unwrap();
            let grant = Grant {
                profile: CertProfile::VpNode,
                serial: random_serial([9; 16]).unwrap(),
                now: now(),
                days: 30,
                dns_names: vec![format!("{cn}.{}", self.name)],
            };
            let cert = issue(&self.ca, &self.root, &req, grant).unwrap();
            (hex::encode(key.public_key().to_sec1_uncompressed()), json(&cert))
        }
    }

    fn json(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    fn node(id: u32, name: &str, key: &str, cert: &str) -> String {
        format!(
            r#"{{"id":{id},"bank":"a","name":"{name}","consensus_key":"{key}","certificate":{cert}}}"#
        )
    }

    fn genesis(nodes: &[String], roots: &str) -> String {
        format!(
            r#"{{"chain_id":"t","timestamp_ms":{},"consensus":{{"batch_timeout_ms":7,"pipeline_depth":2}},"nodes":[{}],"roots":{roots}}}"#,
            NOW_S * 1000 + 1000,
            nodes.join(",")
        )
    }

    #[test]
    fn parses_identities_in_id_order() {
        let bank = Bank::new("a");
        let (k1, c1) = bank.node("n1");
        let (k2, c2) = bank.node("n2");
        let text = genesis(&[node(2, "n2", &k2, &c2), node(1, "n1", &k1, &c1)], &bank.roots());
        let g = Genesis::parse(text.as_bytes()).unwrap();
        assert_eq!(g.nodes[0].id, NodeId(1), "sorted by id");
        assert_eq!((g.nodes[1].name.as_str(), g.nodes[1].bank.as_str()), ("n2", "a"));
        assert_eq!((g.params.batch_timeout_ms, g.params.pipeline_depth), (7, 2));
        assert_eq!(g.roots.len(), 1);
        assert!(!g.nodes[0].certificate.is_empty());
        assert_eq!(g.consensus_config().unwrap().n(), 2);
        assert_eq!(g.block().header.parent, hash(text.as_bytes()));
    }

    #[test]
    fn refuses_bad_keys_endpoints_and_unknown_fields() {
        let bank = Bank::new("a");
        let (k, c) = bank.node("n");
        let one = |key: &str| genesis(&[node(1, "n", key, &c)], &bank.roots());
        assert!(Genesis::parse(one("04ab").as_bytes()).is_err());
        let good = one(&k);
        // A node entry of the first format, with endpoints, is refused by name.
        let old =
            good.replace(r#""consensus_key""#, r#""peer":"unix:p","rpc":"unix:r","consensus_key""#);
        let e = Genesis::parse(old.as_bytes()).unwrap_err();
        assert!(e.contains("`peer` and `rpc` are no longer part of a node entry"), "{e}");
        assert!(Genesis::parse(good.as_bytes()).is_ok());
        let extra = good.replacen('{', r#"{"surprise":1,"#, 1);
        assert!(Genesis::parse(extra.as_bytes()).is_err());
        // No roots, or a root that is not a certificate, is refused.
        let none = good.replace(&bank.roots(), "[]");
        assert!(Genesis::parse(none.as_bytes()).unwrap_err().contains("roots"));
        let bad = good.replace("BEGIN CERTIFICATE", "BEGIN PRIVATE KEY");
        assert!(Genesis::parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn every_node_is_admitted_by_a_vp_node_certificate_for_its_key() {
        let bank = Bank::new("a");
        let (k, c) = bank.node("n");
        let (other_key, _) = bank.node("m");
        let parse = |nodes: &[String], roots: &str| {
            Genesis::parse(genesis(nodes, roots).as_bytes()).map(|_| ())
        };
        // Another key than the certified one.
        let e = parse(&[node(1, "n", &other_key, &c)], &bank.roots());
        assert!(e.unwrap_err().contains("another key"));
        // Another name than the certified one.
        assert!(parse(&[node(1, "x", &k, &c)], &bank.roots()).is_err());
        // A certificate from a bank that is not a founding member.
        let rogue = Bank::new("x");
        let (rk, rc) = rogue.node("n");
        let e = parse(&[node(1, "n", &rk, &rc)], &bank.roots());
        assert!(e.unwrap_err().contains("certificate refused"));
        // No certificate at all.
        let bare = genesis(&[node(1, "n", &k, &c)], &bank.roots())
            .replace(&format!(r#","certificate":{c}"#), "");
        assert!(Genesis::parse(bare.as_bytes()).is_err());
    }
}
