//! The verifier of a proof bundle: `docs/proof-format.md` §4, step by step. Offline and
//! sans-IO: bytes in, a [`Verdict`] or a [`Refusal`] out. It trusts nothing in the bundle but
//! what the trust anchor (the genesis hash) vouches for, and it fails closed: anything it
//! cannot check is a refusal with its reason.
//!
//! What it does not check, and why (also in the format document):
//! - CRLs. Revocation is decided by the ledger at execution, and the outcome code the quorum
//!   certified says the submitter was admitted then. The verifier checks the submitter's
//!   certificate chain, validity at the transaction's time and profile under its bank's root,
//!   not the CRLs published later.
//! - Blocks between the configuration changes and the anchor's block. The certificate of a
//!   block binds it through the epoch's member keys, not through the header chain (a
//!   consistency proof, kind 2, is what binds one head to another).
//! - Other limits of version 1: `docs/proof-format.md` §10.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::{Decision, Identity};
use vpbox_consensus::wire::{batch_digest, block_digest, decode_certificate};
use vpbox_consensus::{
    Batch, Config, Digest as CDigest, Error as CError, PublicKey as CKey, SeqNo, Signature as CSig,
    Verification as CVer, Verifier, verify_certificate,
};
use vpbox_ledger::block::results_root;
use vpbox_ledger::governance::{ConfigTx, Member, Proposal, State};
use vpbox_ledger::merkle;
use vpbox_ledger::tx::{Payload, Tx};
use vpbox_sm::Domain;
use vpbox_sm::sm2::{PublicKey, Signature};
use vpbox_sm::sm3::{Digest, hash};

use vpbox_ledger::state::{Leaf, Lookup};

use crate::bundle::{AnchorPart, Body, Bundle, ConsistencyPart, Evidence, Proven, StatePart};
use crate::epochs::{config_for, derive_configs};
use crate::genesis::Genesis;

/// What the verifier is told to trust.
///
/// Only the genesis hash. The founding banks' roots alone are not enough: a genesis holds the
/// founding *nodes* as well, and any one founding bank's CA can certify nodes of its own, so
/// one bank could write a genesis over the very same roots whose nodes are all its own keys,
/// and certify any block it likes. A genesis hash names the one file every bank agreed to.
#[derive(Debug, Clone)]
pub enum TrustAnchor {
    /// The consortium's genesis hash (its chain identity).
    GenesisHash(Digest),
}

/// Why a bundle is refused: one reason per check, named as in `docs/proof-format.md` and in
/// `testdata/proofs/manifest.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The bytes are not a bundle of this version.
    Malformed,
    /// The bundle is of another consortium (genesis hash or founding roots differ).
    OtherChain,
    /// The genesis file does not parse or does not hold.
    Genesis,
    /// The configuration blocks are out of order or above the anchor's block.
    GovernanceOrder,
    /// A configuration transaction is not in its block, not a configuration, or not applied.
    GovernanceNotApplied,
    /// A configuration change is not approved by more than two thirds of the member banks,
    /// or one of its approvals does not verify.
    GovernanceNotApproved,
    /// A configuration change does not apply to the state before it (wrong target, an
    /// invalid change, a submitter that is not an admin).
    GovernanceRefused,
    /// The transaction hashes do not make the header's `tx_root` (or their count differs).
    TxRoot,
    /// The results do not make the header's `results_root`.
    ResultsRoot,
    /// The commit certificate does not decode.
    CertificateMalformed,
    /// The commit certificate is for another block.
    CertificateOtherBlock,
    /// A signer of the certificate is not a member of the block's epoch.
    SignerNotMember,
    /// A signer appears twice.
    DuplicateSigner,
    /// A signature of the certificate does not verify.
    Signature,
    /// Fewer distinct members signed than the epoch's quorum.
    BelowQuorum,
    /// The anchor's transaction is not the one at its index in the block.
    TxNotInBlock,
    /// The transaction's signature does not verify under the submitter's certificate.
    TxSignature,
    /// The submitter's certificate is not a POSP certificate of a member bank valid at the
    /// transaction's time, or it is not the key that signed.
    SubmitterRefused,
    /// The transaction did not anchor this key (not in it, not executed in this block, or
    /// its put did not succeed: the key had a value already).
    NotAnchored,
    /// The slip given does not match the anchor.
    SlipMismatch,
    /// The later head of a consistency proof does not extend the earlier one through the
    /// headers given.
    NotExtending,
    /// A block's header counts more (or fewer) configuration changes than the bundle shows:
    /// one was left out.
    GovernanceMissing,
    /// A state proof's path does not lead from its key to the block's `state_root` (or its
    /// leaf is off the key's path, or from a later block).
    StatePath,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Self; 23] = [
        Self::Malformed,
        Self::OtherChain,
        Self::Genesis,
        Self::GovernanceOrder,
        Self::GovernanceNotApplied,
        Self::GovernanceNotApproved,
        Self::GovernanceRefused,
        Self::TxRoot,
        Self::ResultsRoot,
        Self::CertificateMalformed,
        Self::CertificateOtherBlock,
        Self::SignerNotMember,
        Self::DuplicateSigner,
        Self::Signature,
        Self::BelowQuorum,
        Self::TxNotInBlock,
        Self::TxSignature,
        Self::SubmitterRefused,
        Self::NotAnchored,
        Self::SlipMismatch,
        Self::NotExtending,
        Self::GovernanceMissing,
        Self::StatePath,
    ];

    /// The reason's name, as documented.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::OtherChain => "other-chain",
            Self::Genesis => "genesis",
            Self::GovernanceOrder => "governance-order",
            Self::GovernanceNotApplied => "governance-not-applied",
            Self::GovernanceNotApproved => "governance-not-approved",
            Self::GovernanceRefused => "governance-refused",
            Self::TxRoot => "tx-root",
            Self::ResultsRoot => "results-root",
            Self::CertificateMalformed => "certificate-malformed",
            Self::CertificateOtherBlock => "certificate-other-block",
            Self::SignerNotMember => "signer-not-member",
            Self::DuplicateSigner => "duplicate-signer",
            Self::Signature => "signature",
            Self::BelowQuorum => "below-quorum",
            Self::TxNotInBlock => "tx-not-in-block",
            Self::TxSignature => "tx-signature",
            Self::SubmitterRefused => "submitter-refused",
            Self::NotAnchored => "not-anchored",
            Self::SlipMismatch => "slip-mismatch",
            Self::NotExtending => "not-extending",
            Self::GovernanceMissing => "governance-missing",
            Self::StatePath => "state-path",
        }
    }
}

/// A refused bundle: the reason and what exactly failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail} ({})", reason.name())]
pub struct Refusal {
    /// The reason.
    pub reason: Reason,
    /// What failed, for a person.
    pub detail: String,
}

fn refuse<T>(reason: Reason, detail: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal { reason, detail: detail.into() })
}

/// A node that signed the anchor's block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerNode {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its bank.
    pub bank: String,
}

/// What a valid bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The consortium: its genesis hash and name.
    pub chain: Digest,
    /// The genesis's `chain_id`.
    pub chain_id: String,
    /// The anchor key.
    pub key: [u8; 32],
    /// The value anchored under it (the first and only one).
    pub value: [u8; 32],
    /// The block.
    pub height: u64,
    /// The block's hash.
    pub block_hash: Digest,
    /// The block's time (ms since the Unix epoch).
    pub block_time_ms: u64,
    /// The transaction's time, as its submitter signed it.
    pub tx_time_ms: u64,
    /// The membership epoch that certified the block.
    pub epoch: u64,
    /// The nodes whose signatures certify it, and their banks.
    pub signers: Vec<SignerNode>,
    /// The quorum of that epoch, and its member count.
    pub quorum: (usize, usize),
    /// The submitter's certificate: its name (CN) and bank.
    pub submitter: (String, String),
    /// Configuration changes followed from the genesis.
    pub changes: usize,
}

impl Verdict {
    /// The distinct banks whose nodes signed.
    pub fn banks(&self) -> Vec<&str> {
        let mut b: Vec<&str> = self.signers.iter().map(|s| s.bank.as_str()).collect();
        b.sort_unstable();
        b.dedup();
        b
    }

    /// The verdict as JSON (`vpbox proof verify --json`).
    pub fn to_json(&self) -> Value {
        let hex0x = |b: &[u8]| format!("0x{}", hex::encode(b));
        json!({
            "valid": true,
            "chain": hex0x(self.chain.as_bytes()),
            "chainId": self.chain_id,
            "key": hex0x(&self.key),
            "value": hex0x(&self.value),
            "height": self.height,
            "blockHash": hex0x(self.block_hash.as_bytes()),
            "blockTimeMs": self.block_time_ms,
            "txTimeMs": self.tx_time_ms,
            "epoch": self.epoch,
            "quorum": self.quorum.0,
            "members": self.quorum.1,
            "signers": self.signers.iter().map(|s| json!({
                "id": s.id, "name": s.name, "bank": s.bank,
            })).collect::<Vec<_>>(),
            "banks": self.banks(),
            "submitter": { "name": self.submitter.0, "bank": self.submitter.1 },
            "configurationChanges": self.changes,
        })
    }
}

/// SM2 consensus signatures as the nodes make them: SM2 with the default ID in the
/// `CONSENSUS` domain over SM3 of the signing payload; keys SEC1, signatures raw `r ‖ s`.
struct Sm2;

impl Verifier for Sm2 {
    fn digest(&self, bytes: &[u8]) -> CDigest {
        CDigest(hash(bytes).0)
    }

    fn verify(&self, key: &CKey, payload: &[u8], sig: &CSig) -> CVer {
        let ok = PublicKey::from_sec1(&key.0).is_ok_and(|pk| {
            Signature::from_raw(&sig.0)
                .is_ok_and(|s| pk.verify_in(Domain::CONSENSUS, &hash(payload).0, &s).is_valid())
        });
        if ok { CVer::Valid } else { CVer::Invalid }
    }
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Verifies `bytes` as a proof bundle against `anchor`; `slip`, when given, must be the slip
/// the anchor is of.
pub fn verify_bytes(
    bytes: &[u8],
    anchor: &TrustAnchor,
    slip: Option<&[u8]>,
) -> Result<Proof, Refusal> {
    let b = Bundle::decode(bytes)
        .map_err(|e| Refusal { reason: Reason::Malformed, detail: e.to_string() })?;
    verify(&b, anchor, slip)
}

/// The consortium as the verifier follows it from the genesis.
struct Followed {
    genesis_config: Config,
    k: u64,
    state: State,
    node_changes: Vec<(u64, Vec<Member>)>,
    configs: Vec<Config>,
    /// Every node ever a member: (name, bank).
    nodes: BTreeMap<u32, (String, String)>,
    /// The governance `seq` after each configuration block: (height, seq).
    seqs: Vec<(u64, u64)>,
    /// The state as of the anchor's position (its block's changes after it excluded): what
    /// the ledger admitted the submitter by.
    at_anchor: Option<State>,
}

impl Followed {
    fn config(&self, height: u64) -> &Config {
        config_for(&self.genesis_config, &self.configs, height)
    }

    /// The governance `seq` after block `height`: what its header's `gov_seq` must say.
    fn seq_at(&self, height: u64) -> u64 {
        self.seqs.iter().rev().find(|(h, _)| *h <= height).map_or(0, |(_, s)| *s)
    }

    /// Every configuration change through block `e` is in the bundle: its header counts as
    /// many as were followed.
    fn check_seq(&self, e: &Evidence) -> Result<(), Refusal> {
        let (h, want) = (e.header.height, self.seq_at(e.header.height));
        if e.header.gov_seq != want {
            return refuse(
                Reason::GovernanceMissing,
                format!(
                    "block {h}'s header counts {} configuration changes, the bundle shows {want}",
                    e.header.gov_seq
                ),
            );
        }
        Ok(())
    }
}

/// What a valid bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// An anchor.
    Anchor(Verdict),
    /// That one certified block extends another.
    Consistency(Extension),
    /// What a certified block's state says of a key.
    State(StateVerdict),
}

impl Proof {
    /// The verdict as JSON (`vpbox proof verify --json`).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Anchor(v) => v.to_json(),
            Self::Consistency(e) => e.to_json(),
            Self::State(s) => s.to_json(),
        }
    }
}

/// What a valid state proof proves: as of the certified block `at`, the key's first value, or
/// that it was never anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateVerdict {
    /// The consortium.
    pub chain: Digest,
    /// The genesis's `chain_id`.
    pub chain_id: String,
    /// The key.
    pub key: [u8; 32],
    /// The block whose state root the path leads to.
    pub at: Head,
    /// The key's leaf (first value, transaction, height), or `None`: never anchored through
    /// block `at`.
    pub found: Option<Leaf>,
    /// Configuration changes followed from the genesis.
    pub changes: usize,
}

impl StateVerdict {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        let hex0x = |b: &[u8]| format!("0x{}", hex::encode(b));
        json!({
            "valid": true,
            "kind": "state",
            "chain": hex0x(self.chain.as_bytes()),
            "chainId": self.chain_id,
            "key": hex0x(&self.key),
            "anchored": self.found.is_some(),
            "value": self.found.map(|l| hex0x(&l.value)),
            "height": self.found.map(|l| l.height),
            "tx": self.found.map(|l| hex0x(l.tx.as_bytes())),
            "asOf": self.at.to_json(),
            "configurationChanges": self.changes,
        })
    }
}

/// A certified block, as a consistency proof names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: Digest,
    /// Its time (ms).
    pub time_ms: u64,
    /// The epoch that certified it.
    pub epoch: u64,
    /// The nodes whose signatures certify it.
    pub signers: Vec<SignerNode>,
}

impl Head {
    fn to_json(&self) -> Value {
        json!({
            "height": self.height,
            "blockHash": format!("0x{}", self.hash.to_hex()),
            "blockTimeMs": self.time_ms,
            "epoch": self.epoch,
            "signers": self.signers.iter().map(|s| json!({
                "id": s.id, "name": s.name, "bank": s.bank,
            })).collect::<Vec<_>>(),
        })
    }
}

/// What a valid consistency proof proves: `to` extends `from` (the ledger up to `from` is a
/// prefix of the ledger up to `to`: nothing before `from` was rewritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The consortium.
    pub chain: Digest,
    /// The genesis's `chain_id`.
    pub chain_id: String,
    /// The earlier head.
    pub from: Head,
    /// The later head.
    pub to: Head,
    /// Configuration changes followed from the genesis.
    pub changes: usize,
}

impl Extension {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "valid": true,
            "kind": "consistency",
            "chain": format!("0x{}", self.chain.to_hex()),
            "chainId": self.chain_id,
            "from": self.from.to_json(),
            "to": self.to.to_json(),
            "configurationChanges": self.changes,
        })
    }
}

/// Verifies a decoded bundle (see [`verify_bytes`]).
pub fn verify(b: &Bundle, anchor: &TrustAnchor, slip: Option<&[u8]>) -> Result<Proof, Refusal> {
    let (genesis, f) = follow(b, anchor)?;
    match &b.body {
        Body::Anchor(a) => verify_anchor(genesis, &f, a, slip).map(Proof::Anchor),
        Body::Consistency(c) => verify_consistency(genesis, &f, c).map(Proof::Consistency),
        Body::State(st) => verify_state(genesis, &f, st).map(Proof::State),
    }
}

/// Steps 1–4: the trust anchor, then the consortium followed from its genesis through every
/// configuration change the bundle carries.
fn follow(b: &Bundle, anchor: &TrustAnchor) -> Result<(Genesis, Followed), Refusal> {
    // 1. The trust anchor: the genesis is the consortium's.
    let chain = hash(&b.genesis);
    let TrustAnchor::GenesisHash(want) = anchor;
    if chain != *want {
        return refuse(
            Reason::OtherChain,
            format!("the bundle's genesis hashes to {}, not {}", chain.to_hex(), want.to_hex()),
        );
    }
    let genesis = Genesis::parse(&b.genesis)
        .map_err(|e| Refusal { reason: Reason::Genesis, detail: format!("genesis: {e}") })?;
    let genesis_config = genesis
        .consensus_config()
        .map_err(|e| Refusal { reason: Reason::Genesis, detail: format!("genesis: {e}") })?;
    let mut f = Followed {
        genesis_config,
        k: genesis.params.checkpoint_interval,
        state: genesis.governance_state(),
        node_changes: Vec::new(),
        configs: Vec::new(),
        nodes: genesis.nodes.iter().map(|n| (n.id.0, (n.name.clone(), n.bank.clone()))).collect(),
        seqs: Vec::new(),
        at_anchor: None,
    };

    // 2. Every configuration change from the genesis to the anchor's block, in order; the
    // state as of the anchor's position (before the changes of its own block that follow it)
    // is kept aside: the ledger admits a transaction by the state as of its position.
    let anchor_height = b.height();
    let before = match &b.body {
        Body::Anchor(a) => (a.evidence.header.height, a.tx.index),
        Body::Consistency(c) => (c.to.header.height, u32::MAX),
        Body::State(st) => (st.evidence.header.height, u32::MAX),
    };
    let mut last = 0;
    for g in &b.governance {
        let h = g.evidence.header.height;
        if h <= last || h > anchor_height {
            return refuse(
                Reason::GovernanceOrder,
                format!(
                    "configuration block {h} is out of order (after {last}, anchor at \
                     {anchor_height})"
                ),
            );
        }
        last = h;
    }
    for g in &b.governance {
        let h = g.evidence.header.height;
        check_block(&g.evidence, f.config(h))?;
        let members = f.state.members();
        // The admins' chains, parsed once: (key fingerprint, chain).
        let admins: Vec<(Digest, &[u8])> = g
            .admins
            .iter()
            .filter_map(|c| {
                let key = vpbox_ca::cert::certificate_key(c).ok()?;
                Some((key.fingerprint(), c.as_slice()))
            })
            .collect();
        let mut prev = None;
        for p in &g.configs {
            if prev.is_some_and(|i| p.index <= i) {
                return refuse(Reason::GovernanceOrder, format!("block {h}: indices out of order"));
            }
            prev = Some(p.index);
            if (h, p.index) > before && f.at_anchor.is_none() {
                f.at_anchor = Some(f.state.clone());
            }
            f.state = apply_config(&f.state, &g.evidence, p, &admins)?;
        }
        f.seqs.push((h, f.state.seq));
        f.check_seq(&g.evidence)?;
        let after = f.state.members();
        if after != members {
            for n in &f.state.nodes {
                f.nodes.entry(n.id).or_insert_with(|| (n.name.clone(), n.bank.clone()));
            }
            f.node_changes.push((h, after));
            f.configs = derive_configs(f.genesis_config.clone(), &f.node_changes, f.k);
        }
    }

    if f.at_anchor.is_none() {
        f.at_anchor = Some(f.state.clone());
    }
    Ok((genesis, f))
}

fn signers(f: &Followed, cert: &vpbox_consensus::CommitCertificate) -> Vec<SignerNode> {
    cert.signatures
        .iter()
        .map(|(n, _)| {
            let (name, bank) =
                f.nodes.get(&n.0).cloned().unwrap_or_else(|| (format!("node{}", n.0), "?".into()));
            SignerNode { id: n.0, name, bank }
        })
        .collect()
}

/// Steps 5–9: the anchor's block, transaction, outcome, submitter and slip.
fn verify_anchor(
    genesis: Genesis,
    f: &Followed,
    a: &AnchorPart,
    slip: Option<&[u8]>,
) -> Result<Verdict, Refusal> {
    let chain = genesis.hash;
    let anchor_height = a.evidence.header.height;
    // 3. The anchor's block, its transaction, its outcome, its submitter.
    let e = &a.evidence;
    let config = f.config(anchor_height);
    let cert = check_block(e, config)?;
    f.check_seq(e)?;
    let tx = proven_tx(e, &a.tx, Reason::TxNotInBlock)?;
    let codes = executed(e, a.tx.index, Reason::NotAnchored)?;
    let pairs: Vec<([u8; 32], [u8; 32])> = match &tx.body().payload {
        Payload::AnchorPut { key, value } => vec![(*key, *value)],
        Payload::AnchorPutBatch(p) => p.clone(),
        _ => return refuse(Reason::NotAnchored, "the transaction anchors nothing"),
    };
    let key = a.key;
    let Some(pos) = pairs.iter().position(|(k, _)| *k == key) else {
        return refuse(Reason::NotAnchored, "the transaction does not carry this key");
    };
    match codes.get(pos) {
        Some(0) => {}
        Some(1) => {
            return refuse(
                Reason::NotAnchored,
                "this put was refused: the key had a value already (it is not this one)",
            );
        }
        Some(c) => return refuse(Reason::NotAnchored, format!("this put's outcome is code {c}")),
        None => return refuse(Reason::NotAnchored, "the results hold no outcome for this put"),
    }
    let value = pairs[pos].1;
    let id = submitter(f.at_anchor.as_ref().unwrap_or(&f.state), f, a, &tx)?;
    if let Some(slip) = slip {
        check_slip(slip, &key, &value)?;
    }
    let signers = signers(f, &cert);
    Ok(Verdict {
        chain,
        chain_id: genesis.chain_id,
        key,
        value,
        height: anchor_height,
        block_hash: e.header.hash(),
        block_time_ms: e.header.timestamp_ms,
        tx_time_ms: tx.body().timestamp_ms,
        epoch: config.epoch(),
        signers,
        quorum: (config.quorum(), config.members().len()),
        submitter: (id.name, id.bank),
        changes: f.state.seq as usize,
    })
}

/// Steps 5–6 of a state proof: the block certified, and the key's path leads to its
/// `state_root`.
fn verify_state(genesis: Genesis, f: &Followed, st: &StatePart) -> Result<StateVerdict, Refusal> {
    let e = &st.evidence;
    let config = f.config(e.header.height);
    let cert = check_block(e, config)?;
    f.check_seq(e)?;
    let at = Head {
        height: e.header.height,
        hash: e.header.hash(),
        time_ms: e.header.timestamp_ms,
        epoch: config.epoch(),
        signers: signers(f, &cert),
    };
    let (root, lookup) = st
        .path
        .evaluate(&st.key)
        .map_err(|why| Refusal { reason: Reason::StatePath, detail: why.into() })?;
    if root != e.header.state_root {
        return refuse(
            Reason::StatePath,
            format!("the key's path does not lead to block {}'s state root", at.height),
        );
    }
    let found = match lookup {
        Lookup::Present(leaf) if leaf.height > at.height || leaf.height == 0 => {
            return refuse(
                Reason::StatePath,
                format!(
                    "the key's leaf names block {}, not one of 1 to {}",
                    leaf.height, at.height
                ),
            );
        }
        Lookup::Present(leaf) => Some(leaf),
        Lookup::Absent => None,
    };
    Ok(StateVerdict {
        chain: genesis.hash,
        chain_id: genesis.chain_id,
        key: st.key,
        at,
        found,
        changes: f.state.seq as usize,
    })
}

/// Steps 5–6 of a consistency proof: both heads certified, and the later one linked to the
/// earlier one by the parent hashes of the headers between them.
fn verify_consistency(
    genesis: Genesis,
    f: &Followed,
    c: &ConsistencyPart,
) -> Result<Extension, Refusal> {
    let head = |e: &Evidence| -> Result<Head, Refusal> {
        let config = f.config(e.header.height);
        let cert = check_block(e, config)?;
        f.check_seq(e)?;
        Ok(Head {
            height: e.header.height,
            hash: e.header.hash(),
            time_ms: e.header.timestamp_ms,
            epoch: config.epoch(),
            signers: signers(f, &cert),
        })
    };
    let (from, to) = (head(&c.from)?, head(&c.to)?);
    if from.height >= to.height {
        return refuse(
            Reason::NotExtending,
            format!("block {} does not come after block {}", to.height, from.height),
        );
    }
    let between = to.height - from.height - 1;
    if c.headers.len() as u64 != between {
        return refuse(
            Reason::NotExtending,
            format!("{} headers given, {between} lie between the two heads", c.headers.len()),
        );
    }
    let mut prev = c.from.header.hash();
    for (h, want) in c.headers.iter().chain([&c.to.header]).zip(from.height + 1..) {
        if h.height != want || h.parent != prev {
            return refuse(
                Reason::NotExtending,
                format!("block {want} does not link to block {}", want - 1),
            );
        }
        prev = h.hash();
    }
    Ok(Extension {
        chain: genesis.hash,
        chain_id: genesis.chain_id,
        from,
        to,
        changes: f.state.seq as usize,
    })
}

/// Checks a block against the configuration that certifies it: its transaction hashes and
/// results against its header, and its commit certificate against the header and the members.
fn check_block(
    e: &Evidence,
    config: &Config,
) -> Result<vpbox_consensus::CommitCertificate, Refusal> {
    let h = &e.header;
    let at = format!("block {}", h.height);
    if e.tx_hashes.len() != h.tx_count as usize || merkle::root(&e.tx_hashes) != h.tx_root {
        return refuse(
            Reason::TxRoot,
            format!("{at}: the transaction hashes do not make its tx_root"),
        );
    }
    // A transaction that occurs twice executes once, at its first index: a result belongs
    // there and nowhere else.
    let mut first = std::collections::HashMap::with_capacity(e.tx_hashes.len());
    for (i, d) in e.tx_hashes.iter().enumerate() {
        first.entry(d).or_insert(i);
    }
    let mut results = Vec::with_capacity(e.results.len());
    let mut prev = None;
    for r in &e.results {
        let Some(tx) = e.tx_hashes.get(r.index as usize) else {
            return refuse(Reason::ResultsRoot, format!("{at}: a result for index {}", r.index));
        };
        if prev.is_some_and(|p| r.index <= p) {
            return refuse(Reason::ResultsRoot, format!("{at}: results out of order"));
        }
        if first.get(tx) != Some(&(r.index as usize)) {
            return refuse(
                Reason::ResultsRoot,
                format!("{at}: a result at {}, a repeat of an earlier transaction", r.index),
            );
        }
        prev = Some(r.index);
        results.push((*tx, r.codes.clone()));
    }
    if results_root(&results) != h.results_root {
        return refuse(
            Reason::ResultsRoot,
            format!("{at}: the results do not make its results_root"),
        );
    }
    let cert = decode_certificate(&e.certificate).map_err(|err| Refusal {
        reason: Reason::CertificateMalformed,
        detail: format!("{at}: commit certificate: {err}"),
    })?;
    let v = Sm2;
    let batch = Batch { txs: e.tx_hashes.iter().map(|d| CDigest(d.0)).collect() };
    let want = block_digest(&v, SeqNo(h.height), &batch_digest(&v, &batch), &CDigest(h.hash().0));
    if cert.seq.0 != h.height || cert.block != want {
        return refuse(
            Reason::CertificateOtherBlock,
            format!("{at}: the certificate is for another block"),
        );
    }
    let epoch = config.epoch();
    verify_certificate(config, &v, &cert).map_err(|err| {
        let (reason, detail) = match err {
            CError::NotMember(id) => {
                (Reason::SignerNotMember, format!("node {} is not a member of epoch {epoch}", id.0))
            }
            CError::Signature(id) => (
                Reason::Signature,
                format!(
                    "node {}'s signature does not verify in epoch {epoch} (a bundle without \
                     every configuration change checks a block in the wrong epoch)",
                    id.0
                ),
            ),
            CError::Proof("duplicate signer") => {
                (Reason::DuplicateSigner, "a node signed twice".to_string())
            }
            _ => (
                Reason::BelowQuorum,
                format!(
                    "{} signatures; epoch {epoch} has {} members and needs {}",
                    cert.signatures.len(),
                    config.members().len(),
                    config.quorum()
                ),
            ),
        };
        Refusal { reason, detail: format!("{at}: {detail}") }
    })?;
    Ok(cert)
}

/// The transaction `p` claims is at its index: it must hash to the block's hash there.
fn proven_tx(e: &Evidence, p: &Proven, reason: Reason) -> Result<Tx, Refusal> {
    let at = format!("block {}", e.header.height);
    let tx = Tx::decode(&p.tx)
        .map_err(|err| Refusal { reason, detail: format!("{at}: transaction: {err}") })?;
    if e.tx_hashes.get(p.index as usize) != Some(&tx.hash()) {
        return refuse(
            reason,
            format!("{at}: the transaction is not the one at index {}", p.index),
        );
    }
    Ok(tx)
}

/// The outcome codes of the transaction at `index`, which must have executed in this block.
fn executed(e: &Evidence, index: u32, reason: Reason) -> Result<&[u8], Refusal> {
    // `check_block` has seen the indices strictly increasing.
    match e.results.binary_search_by_key(&index, |r| r.index) {
        Ok(i) => Ok(&e.results[i].codes),
        Err(_) => refuse(
            reason,
            format!("block {}: the transaction at {index} did not execute there", e.header.height),
        ),
    }
}

/// Checks one applied configuration transaction and returns the state after it.
fn apply_config(
    state: &State,
    e: &Evidence,
    p: &Proven,
    admins: &[(Digest, &[u8])],
) -> Result<State, Refusal> {
    let h = e.header.height;
    let tx = proven_tx(e, p, Reason::GovernanceNotApplied)?;
    if executed(e, p.index, Reason::GovernanceNotApplied)? != [0] {
        return refuse(
            Reason::GovernanceNotApplied,
            format!("block {h}: the change was not applied"),
        );
    }
    let Payload::Config(bytes) = &tx.body().payload else {
        return refuse(
            Reason::GovernanceNotApplied,
            format!("block {h}: not a configuration transaction"),
        );
    };
    let when = at(tx.body().timestamp_ms);
    let refused = |why: String| Refusal {
        reason: Reason::GovernanceRefused,
        detail: format!("block {h}: configuration change {}: {why}", state.seq + 1),
    };
    let trust = state.trust().map_err(refused)?;
    let chain = |d: &Digest| admins.iter().find(|(k, _)| k == d).map(|(_, c)| *c);
    let Some(der) = chain(&tx.body().submitter) else {
        return Err(refused("the submitter's admin certificate is not in the bundle".into()));
    };
    let key = vpbox_ca::cert::certificate_key(der).map_err(|e| refused(e.to_string()))?;
    if !tx.verify(&key).is_valid() {
        return Err(refused("the submitter's signature does not verify".into()));
    }
    if let Decision::Deny(r) = trust.admit(der, CertProfile::Admin, when) {
        return Err(refused(format!("the submitter is not admitted as an admin: {r}")));
    }
    let config = ConfigTx::decode(bytes).map_err(|e| refused(e.to_string()))?;
    let proposal = Proposal::decode(&config.proposal).map_err(|e| refused(e.to_string()))?;
    state.check_target(&proposal).map_err(refused)?;
    let mut enrolled = |d: &Digest| chain(d).map(<[u8]>::to_vec);
    let banks = state.approving_banks(&config, &trust, &mut enrolled, when).map_err(|why| {
        Refusal { reason: Reason::GovernanceNotApproved, detail: format!("block {h}: {why}") }
    })?;
    if !state.quorate(banks.len()) {
        return refuse(
            Reason::GovernanceNotApproved,
            format!(
                "block {h}: approved by {} of {} member banks; more than two thirds must approve",
                banks.len(),
                state.banks().len()
            ),
        );
    }
    state.apply(&proposal, when).map_err(refused)
}

/// The submitter's identity: the certificate chain of its enrollment — an Enroll transaction
/// signed by the same key, applied (code 0) in a certified block before the anchor — certifies
/// the key that signed `tx`, as a POSP of a member bank, valid at the transaction's time.
fn submitter(state: &State, f: &Followed, a: &AnchorPart, tx: &Tx) -> Result<Identity, Refusal> {
    let en = &a.enrollment;
    let h = en.evidence.header.height;
    if (h, en.tx.index) >= (a.evidence.header.height, a.tx.index) {
        return refuse(Reason::SubmitterRefused, "the enrollment does not come before the anchor");
    }
    check_block(&en.evidence, f.config(h))?;
    f.check_seq(&en.evidence)?;
    let etx = proven_tx(&en.evidence, &en.tx, Reason::SubmitterRefused)?;
    if executed(&en.evidence, en.tx.index, Reason::SubmitterRefused)? != [0] {
        return refuse(Reason::SubmitterRefused, format!("block {h}: the enrollment was refused"));
    }
    let Payload::Enroll(chain) = &etx.body().payload else {
        return refuse(Reason::SubmitterRefused, format!("block {h}: not an enrollment"));
    };
    if etx.body().submitter != tx.body().submitter {
        return refuse(Reason::SubmitterRefused, "the enrollment is of another key");
    }
    let key = vpbox_ca::cert::certificate_key(chain).map_err(|e| Refusal {
        reason: Reason::SubmitterRefused,
        detail: format!("the enrolled certificate: {e}"),
    })?;
    if !etx.verify(&key).is_valid() {
        return refuse(Reason::SubmitterRefused, "the enrollment is not signed by its key");
    }
    let key = vpbox_ca::cert::certificate_key(chain).map_err(|e| Refusal {
        reason: Reason::SubmitterRefused,
        detail: format!("the submitter's certificate: {e}"),
    })?;
    if key.fingerprint() != tx.body().submitter {
        return refuse(Reason::SubmitterRefused, "the submitter's certificate is for another key");
    }
    if !tx.verify(&key).is_valid() {
        return refuse(Reason::TxSignature, "the transaction's signature does not verify");
    }
    let trust =
        state.trust().map_err(|e| Refusal { reason: Reason::SubmitterRefused, detail: e })?;
    match trust.admit(chain, CertProfile::Posp, at(tx.body().timestamp_ms)) {
        Decision::Allow(id) if id.key_fingerprint == tx.body().submitter => Ok(id),
        Decision::Allow(_) => {
            refuse(Reason::SubmitterRefused, "the certificate is for another key")
        }
        Decision::Deny(r) => refuse(
            Reason::SubmitterRefused,
            format!("the submitter's certificate at the transaction's time: {r}"),
        ),
    }
}

/// The slip must be this anchor's: a vpbox JSON slip gives both key and value; any other file
/// is compared by its SM3 with the value.
fn check_slip(slip: &[u8], key: &[u8; 32], value: &[u8; 32]) -> Result<(), Refusal> {
    match vpbox_ledger::slip::parse(slip) {
        Ok((_, a)) if a.key.0 != *key => {
            refuse(Reason::SlipMismatch, "the slip's identity fields name another anchor key")
        }
        Ok((_, a)) if a.value.0 != *value => refuse(
            Reason::SlipMismatch,
            "the slip is not the one anchored: its SM3 differs from the anchored value",
        ),
        Ok(_) => Ok(()),
        Err(_) if hash(slip).0 == *value => Ok(()),
        Err(_) => refuse(
            Reason::SlipMismatch,
            "the file is not the one anchored: its SM3 differs from the anchored value",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Outcome;

    #[test]
    fn a_slip_must_name_the_key_and_hash_to_the_value() {
        let slip = br#"{"merchant_id":"M1","terminal_id":"T1","rrn":"R1","txn_time":"2026-12-04T10:00:00Z","amount":"1.00"}"#;
        let (_, a) = vpbox_ledger::slip::parse(slip).unwrap();
        let (key, value) = (a.key.0, a.value.0);
        assert_eq!(check_slip(slip, &key, &value), Ok(()));
        let reason = |r: Result<(), Refusal>| r.unwrap_err().reason;
        assert_eq!(reason(check_slip(slip, &[0; 32], &value)), Reason::SlipMismatch);
        assert_eq!(reason(check_slip(slip, &key, &[0; 32])), Reason::SlipMismatch);
        // Another file (not a vpbox slip): by its SM3 alone.
        let pdf = b"%PDF-1.7 a slip";
        assert_eq!(check_slip(pdf, &[0; 32], &hash(pdf).0), Ok(()));
        assert_eq!(reason(check_slip(pdf, &[0; 32], &value)), Reason::SlipMismatch);
    }

    #[test]
    fn only_a_transaction_executed_in_the_block_has_outcomes() {
        let mut e = Evidence::blank(3, 3);
        e.tx_hashes = vec![Digest([1; 32]); 3];
        e.results =
            vec![Outcome { index: 0, codes: vec![0, 1] }, Outcome { index: 2, codes: vec![2] }];
        assert_eq!(executed(&e, 0, Reason::NotAnchored), Ok(&[0u8, 1][..]));
        assert_eq!(executed(&e, 2, Reason::NotAnchored), Ok(&[2u8][..]));
        let missing = executed(&e, 1, Reason::NotAnchored).unwrap_err();
        assert_eq!(missing.reason, Reason::NotAnchored);
        assert!(missing.detail.contains("did not execute"), "{}", missing.detail);
    }
}
