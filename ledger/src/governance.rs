//! Governance: who is in the consortium, and the configuration transactions that change it
//! (DESIGN.md §5: "adding a bank, a node or a CA root is a configuration transaction that
//! needs approval signatures from more than two thirds of the member banks' admins, applied at
//! a checkpoint").
//!
//! [`State`] is the consortium as the ledger knows it: its roots (one or more per bank; a bank
//! is a member while it has a root) and its nodes. The genesis founds it; every change is a
//! [`ConfigTx`] in a `Config` transaction:
//!
//! ```text
//! config    = proposal_len:u32 proposal approvals:u8 (admin:[32] sig_len:u8 sig:DER)*
//! proposal  = version:u8=2 chain:[32] seq:u64 count:u8 change*
//! change    = 1 AddRoot    der:bytes          (a new O is a new member bank)
//!           | 2 RemoveRoot sm3:[32]           (SM3 of the root's DER)
//!           | 3 RemoveBank bank:str           (every root of the bank; its nodes must go too)
//!           | 4 AddNode    node
//!           | 5 RemoveNode id:u32
//! node      = id:u32 bank:str name:str consensus_key:[65] certificate:bytes
//! bytes     = len:u32 data      str = len:u16 UTF-8
//! ```
//!
//! A node record holds its identity only. Where a node is reached (its box's P2P address, its
//! sockets) is each box's own configuration, outside the replicated state, so moving a box to
//! another address needs no vote and no two boxes need to share a file system.
//!
//! Rules (each refusal names its reason, so the node can tell the submitter before ordering):
//! - `chain` is the genesis hash and `seq` the number of changes applied so far: a proposal
//!   applies once, to the state it was written for, on this consortium only.
//! - Each approval is an SM2 signature in the `GOVERNANCE` domain over the proposal's bytes by
//!   an enrolled `admin` certificate admitted at the transaction's time; more than two thirds
//!   of the member banks (before the change) must approve, each bank counted once. Any approval
//!   that does not verify refuses the whole transaction (a forged or stale approval is a sign
//!   of trouble an operator should see, not noise to skip).
//! - The submitter must itself be an enrolled admin.
//! - An added root must be a self-signed SM2 CA certificate valid at the transaction's time and
//!   new; an added node's `vp-node` certificate must be admitted under the resulting roots,
//!   name the node (CN) and its bank (O), and certify its consensus key. Node ids are never
//!   reused (each is above every id seen before), names are unique.
//! - After the change every bank keeps at least one root, every node's bank is a member, and —
//!   when the change touches the nodes — at least four nodes remain (`3f + 1` with `f ≥ 1`).
//!
//! The consensus engine applies a node change at the first checkpoint at or after its block
//! (the node hands it the new member list); root and bank changes apply from the next
//! transaction on, like CRLs.

use std::collections::BTreeSet;
use std::time::SystemTime;

use vpbox_ca::CertProfile;
use vpbox_ca::policy::{Decision, TrustStore, root_info};
use vpbox_sm::sm2::{PublicKey, Signature};
use vpbox_sm::sm3::{Digest, hash};
use vpbox_sm::{Domain, Signer};

use crate::Error;
use crate::wire::Reader;

/// A consensus member: its id and SEC1 consensus key.
pub type Member = (u32, [u8; 65]);

/// Most changes in one proposal.
pub const CHANGES_MAX: usize = 32;
/// Most approvals on one transaction.
pub const APPROVALS_MAX: usize = 64;
/// The fewest nodes a change may leave (`3f + 1` with `f = 1`).
pub const NODES_MIN: usize = 4;

const STR_MAX: usize = 256;
const DER_MAX: u32 = 16 * 1024;

/// The version of the proposal and state encodings. Version 1 also carried each node's `peer`
/// and `rpc` endpoints; endpoints are now each box's own configuration, not replicated state,
/// so a version 1 proposal or state is refused.
const VERSION: u8 = 2;

/// A node as the consortium knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Its consensus id.
    pub id: u32,
    /// Its bank (its certificate's O).
    pub bank: String,
    /// Its name (its certificate's CN).
    pub name: String,
    /// Its consensus key, SEC1 uncompressed.
    pub consensus_key: [u8; 65],
    /// Its `vp-node` certificate, DER.
    pub certificate: Vec<u8>,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add a root certificate (DER); a new O makes a new member bank.
    AddRoot(Vec<u8>),
    /// Remove the root whose DER hashes (SM3) to this.
    RemoveRoot(Digest),
    /// Remove a bank: all its roots.
    RemoveBank(String),
    /// Add a node.
    AddNode(NodeSpec),
    /// Remove the node with this id.
    RemoveNode(u32),
}

/// A proposed set of changes to one state of one consortium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The genesis hash of the consortium.
    pub chain: Digest,
    /// The state's sequence number it applies to.
    pub seq: u64,
    /// The changes, applied in order.
    pub changes: Vec<Change>,
}

/// An admin's approval of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The admin's key fingerprint (SM3 of its SPKI), as enrolled.
    pub admin: Digest,
    /// SM2 (DER) in the `GOVERNANCE` domain over the proposal's encoding.
    pub signature: Vec<u8>,
}

/// The payload of a `Config` transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTx {
    /// The proposal's encoding, exactly as approved.
    pub proposal: Vec<u8>,
    /// The approvals.
    pub approvals: Vec<Approval>,
}

/// The consortium as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The genesis hash.
    pub chain: Digest,
    /// How many proposals were applied.
    pub seq: u64,
    /// The root certificates (DER), in the order they were added.
    pub roots: Vec<Vec<u8>>,
    /// The nodes, by id.
    pub nodes: Vec<NodeSpec>,
    /// Every id up to this was used once and is never used again.
    pub max_node_id: u32,
}

// ----- encoding ---------------------------------------------------------------------------------

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn get_bytes(r: &mut Reader<'_>, max: u32) -> Result<Vec<u8>, Error> {
    let n = r.u32()?;
    if n > max {
        return Err(r.fail("field too large"));
    }
    Ok(r.take(n as usize)?.to_vec())
}

fn get_str(r: &mut Reader<'_>) -> Result<String, Error> {
    let n = u16::from_be_bytes(r.array()?) as usize;
    if n > STR_MAX {
        return Err(r.fail("string too long"));
    }
    String::from_utf8(r.take(n)?.to_vec()).map_err(|_| r.fail("not UTF-8"))
}

impl NodeSpec {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        put_str(out, &self.bank);
        put_str(out, &self.name);
        out.extend_from_slice(&self.consensus_key);
        put_bytes(out, &self.certificate);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Self {
            id: r.u32()?,
            bank: get_str(r)?,
            name: get_str(r)?,
            consensus_key: r.array()?,
            certificate: get_bytes(r, DER_MAX)?,
        })
    }
}

impl Proposal {
    /// The canonical encoding, which approvals sign.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(self.chain.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(self.changes.len() as u8);
        for c in &self.changes {
            match c {
                Change::AddRoot(der) => {
                    out.push(1);
                    put_bytes(&mut out, der);
                }
                Change::RemoveRoot(d) => {
                    out.push(2);
                    out.extend_from_slice(d.as_bytes());
                }
                Change::RemoveBank(b) => {
                    out.push(3);
                    put_str(&mut out, b);
                }
                Change::AddNode(n) => {
                    out.push(4);
                    n.encode_into(&mut out);
                }
                Change::RemoveNode(id) => {
                    out.push(5);
                    out.extend_from_slice(&id.to_be_bytes());
                }
            }
        }
        out
    }

    /// Strict, bounded decoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "proposal");
        if r.u8()? != VERSION {
            return Err(r.fail("unknown version"));
        }
        let chain = Digest(r.array()?);
        let seq = r.u64()?;
        let count = r.u8()? as usize;
        if count == 0 || count > CHANGES_MAX {
            return Err(r.fail("a proposal holds 1 to 32 changes"));
        }
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            changes.push(match r.u8()? {
                1 => Change::AddRoot(get_bytes(&mut r, DER_MAX)?),
                2 => Change::RemoveRoot(Digest(r.array()?)),
                3 => Change::RemoveBank(get_str(&mut r)?),
                4 => Change::AddNode(NodeSpec::decode_from(&mut r)?),
                5 => Change::RemoveNode(r.u32()?),
                _ => return Err(r.fail("unknown change")),
            });
        }
        r.finish()?;
        Ok(Self { chain, seq, changes })
    }

    /// An admin's approval: `signer` signs the encoding in the `GOVERNANCE` domain.
    pub fn approve(&self, signer: &dyn Signer) -> Result<Approval, vpbox_sm::Error> {
        let sig = signer.sign(Domain::GOVERNANCE, &self.encode())?;
        Ok(Approval { admin: signer.public_key().fingerprint(), signature: sig.to_der() })
    }
}

impl ConfigTx {
    /// The `Config` payload's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, &self.proposal);
        out.push(self.approvals.len() as u8);
        for a in &self.approvals {
            out.extend_from_slice(a.admin.as_bytes());
            out.push(a.signature.len() as u8);
            out.extend_from_slice(&a.signature);
        }
        out
    }

    /// Strict, bounded decoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "configuration transaction");
        let proposal = get_bytes(&mut r, crate::tx::CONFIG_MAX)?;
        let count = r.u8()? as usize;
        if count > APPROVALS_MAX {
            return Err(r.fail("too many approvals"));
        }
        let mut approvals = Vec::with_capacity(count);
        for _ in 0..count {
            let admin = Digest(r.array()?);
            let n = r.u8()? as usize;
            approvals.push(Approval { admin, signature: r.take(n)?.to_vec() });
        }
        r.finish()?;
        Ok(Self { proposal, approvals })
    }
}

impl State {
    /// The encoding stored in the ledger.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(self.chain.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.max_node_id.to_be_bytes());
        out.extend_from_slice(&(self.roots.len() as u32).to_be_bytes());
        for r in &self.roots {
            put_bytes(&mut out, r);
        }
        out.extend_from_slice(&(self.nodes.len() as u32).to_be_bytes());
        for n in &self.nodes {
            n.encode_into(&mut out);
        }
        out
    }

    /// Decodes a stored state.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes, "governance state");
        if r.u8()? != VERSION {
            return Err(r.fail("unknown version"));
        }
        let chain = Digest(r.array()?);
        let seq = r.u64()?;
        let max_node_id = r.u32()?;
        let nroots = r.u32()? as usize;
        if nroots > r.rest_len() / 4 {
            return Err(r.fail("root count exceeds the bytes left"));
        }
        let roots = (0..nroots).map(|_| get_bytes(&mut r, DER_MAX)).collect::<Result<_, _>>()?;
        let nnodes = r.u32()? as usize;
        if nnodes > r.rest_len() / 4 {
            return Err(r.fail("node count exceeds the bytes left"));
        }
        let nodes = (0..nnodes).map(|_| NodeSpec::decode_from(&mut r)).collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self { chain, seq, roots, nodes, max_node_id })
    }

    /// A trust store of these roots (CRLs are added by the caller).
    pub fn trust(&self) -> Result<TrustStore, String> {
        let mut t = TrustStore::new();
        for der in &self.roots {
            t.add_root(der).map_err(|e| e.to_string())?;
        }
        Ok(t)
    }

    /// The member banks: the O of every root.
    pub fn banks(&self) -> BTreeSet<String> {
        self.roots.iter().filter_map(|d| root_bank(d).ok()).collect()
    }

    /// The consensus members' (id, key) pairs.
    pub fn members(&self) -> Vec<Member> {
        self.nodes.iter().map(|n| (n.id, n.consensus_key)).collect()
    }

    /// The banks that approve `tx`'s proposal: every approval must verify with an enrolled
    /// `admin` certificate (`enrolled` looks one up by key fingerprint) admitted by `trust` at
    /// `at`. Returns the distinct member banks.
    pub fn approving_banks(
        &self,
        tx: &ConfigTx,
        trust: &TrustStore,
        enrolled: &mut dyn FnMut(&Digest) -> Option<Vec<u8>>,
        at: SystemTime,
    ) -> Result<BTreeSet<String>, String> {
        let members = self.banks();
        let mut banks = BTreeSet::new();
        for a in &tx.approvals {
            let what = format!("approval by {}", &a.admin.to_hex()[..16]);
            let der = enrolled(&a.admin).ok_or_else(|| format!("{what}: admin not enrolled"))?;
            let id = match trust.admit(&der, CertProfile::Admin, at) {
                Decision::Allow(id) => id,
                Decision::Deny(r) => return Err(format!("{what}: admin refused: {r}")),
            };
            let key = vpbox_ca::cert::certificate_key(&der).map_err(|e| format!("{what}: {e}"))?;
            let ok = Signature::from_der(&a.signature)
                .is_ok_and(|s| key.verify_in(Domain::GOVERNANCE, &tx.proposal, &s).is_valid());
            if !ok {
                return Err(format!("{what}: the signature does not verify"));
            }
            if members.contains(&id.bank) {
                banks.insert(id.bank);
            }
        }
        Ok(banks)
    }

    /// Whether `approving` banks are more than two thirds of the member banks.
    pub fn quorate(&self, approving: usize) -> bool {
        3 * approving > 2 * self.banks().len()
    }

    /// Whether `p` was written for this consortium and this very state (so it applies once).
    pub fn check_target(&self, p: &Proposal) -> Result<(), String> {
        if p.chain != self.chain {
            return Err("the proposal is for another consortium".into());
        }
        if p.seq != self.seq {
            return Err(format!(
                "the proposal was written for governance state {}, the ledger is at {}",
                p.seq, self.seq
            ));
        }
        Ok(())
    }

    /// The state after `p`, or why `p` is refused. `at` is the transaction's time.
    pub fn apply(&self, p: &Proposal, at: SystemTime) -> Result<Self, String> {
        self.check_target(p)?;
        let mut next = self.clone();
        next.seq += 1;
        let mut nodes_touched = false;
        for c in &p.changes {
            match c {
                Change::AddRoot(der) => {
                    let (bank, from, to) = root_info(der).map_err(|e| e.to_string())?;
                    if at < from || at > to {
                        return Err(format!("the root of {bank} is not valid now"));
                    }
                    if next.roots.iter().any(|r| r == der) {
                        return Err(format!("the root of {bank} is a member already"));
                    }
                    next.roots.push(der.clone());
                }
                Change::RemoveRoot(d) => {
                    let before = next.roots.len();
                    next.roots.retain(|r| hash(r) != *d);
                    if next.roots.len() == before {
                        return Err(format!("no root hashes to {}", d.to_hex()));
                    }
                }
                Change::RemoveBank(bank) => {
                    let before = next.roots.len();
                    next.roots.retain(|r| root_bank(r).ok().as_ref() != Some(bank));
                    if next.roots.len() == before {
                        return Err(format!("{bank} is not a member bank"));
                    }
                }
                Change::AddNode(n) => {
                    nodes_touched = true;
                    if n.id <= next.max_node_id {
                        return Err(format!(
                            "node id {} was used before: a new node takes an id above {}",
                            n.id, next.max_node_id
                        ));
                    }
                    if next.nodes.iter().any(|m| m.name == n.name) {
                        return Err(format!("a node named {} is a member already", n.name));
                    }
                    next.max_node_id = n.id;
                    next.nodes.push(n.clone());
                }
                Change::RemoveNode(id) => {
                    nodes_touched = true;
                    let before = next.nodes.len();
                    next.nodes.retain(|m| m.id != *id);
                    if next.nodes.len() == before {
                        return Err(format!("node {id} is not a member"));
                    }
                }
            }
        }
        next.nodes.sort_by_key(|n| n.id);
        // Every bank keeps a root it can be admitted under, and the nodes' certificates stand.
        let trust = next.trust()?;
        let banks = next.banks();
        if banks.is_empty() {
            return Err("the consortium would have no bank".into());
        }
        for n in &next.nodes {
            if !banks.contains(&n.bank) {
                return Err(format!(
                    "node {} belongs to {}, which would not be a member",
                    n.id, n.bank
                ));
            }
        }
        for c in &p.changes {
            if let Change::AddNode(n) = c {
                check_node(&trust, n, at)?;
            }
        }
        if nodes_touched && next.nodes.len() < NODES_MIN {
            return Err(format!(
                "{} nodes would remain; the consortium needs at least {NODES_MIN}",
                next.nodes.len()
            ));
        }
        Ok(next)
    }
}

/// The bank (O) of a root certificate, which must be a self-signed SM2 CA.
fn root_bank(der: &[u8]) -> Result<String, String> {
    root_info(der).map(|(bank, _, _)| bank).map_err(|e| e.to_string())
}

/// Whether `n`'s certificate is a `vp-node` certificate admitted by `trust` at `at` for that
/// node's name, bank and consensus key. The genesis's founding nodes are held to the same.
pub fn check_node(trust: &TrustStore, n: &NodeSpec, at: SystemTime) -> Result<(), String> {
    let what = format!("node {}", n.id);
    let key = PublicKey::from_sec1(&n.consensus_key)
        .map_err(|_| format!("{what}: the consensus key is not an SM2 point"))?;
    match trust.admit(&n.certificate, CertProfile::VpNode, at) {
        Decision::Allow(id)
            if id.bank == n.bank
                && id.name == n.name
                && id.key_fingerprint == key.fingerprint() =>
        {
            Ok(())
        }
        Decision::Allow(id) => Err(format!(
            "{what}: its certificate names {} of {} with another key, not {} of {} with its \
             consensus key",
            id.name, id.bank, n.name, n.bank
        )),
        Decision::Deny(r) => Err(format!("{what}: certificate refused: {r}")),
    }
}
