//! The trust state the proxy admits by, read from the ledger (sans-IO): the node's
//! `gov_getState` answer turned into a certificate trust store (the member banks' roots, then
//! every committed CRL in publication order, as the ledger builds its own) and the
//! [`Membership`].
//!
//! The shell holds a `gov_waitState` call open on the node, which answers when a committed
//! block changes the trust state (or after [`WAIT`]), and swaps the new state in; so a root
//! added, a node removed or a CRL published applies to the proxy's next handshake as the box's
//! node commits it, and its open connections are checked again at once. When the node refuses
//! the wait, `gov_getState` every [`POLL`] stands in. Until the first answer,
//! the proxy admits nobody (it fails closed), and a CRL past its nextUpdate denies what its CA
//! issued (the trust store's rule).

use std::time::Duration;

use serde_json::Value;
use vpbox_ca::policy::TrustStore;
use vpbox_sm::sm2::PublicKey;
use vpbox_sm::sm3::Digest;
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::p2p::{Member, Membership};

/// How often the proxy asks the node for the trust state when it cannot wait for a change.
pub const POLL: Duration = Duration::from_secs(1);
/// How long each `gov_waitState` waits for a change (the node's longest).
pub const WAIT: Duration = Duration::from_secs(30);

/// The trust state at one moment.
pub struct TrustState {
    /// Roots and CRLs.
    pub store: TrustStore,
    /// The chain and its current members.
    pub membership: Membership,
    /// The governance state's sequence number.
    pub seq: u64,
    /// How many CRLs it holds.
    pub crls: usize,
    /// Each CRL in force (the latest of each CA), for monitoring.
    pub crls_in_force: Vec<vpbox_ca::policy::CrlInForce>,
    /// The notAfter of each member bank's root, for monitoring ([`CertExpiry`]). (Not the
    /// members' `vp-node` certificates in the governance state: a box renews its own without a
    /// vote, so the copy there may be older than the one it presents. Each box's page shows
    /// its own chain instead.)
    pub certificates: Vec<CertExpiry>,
}

/// A certificate's notAfter, for monitoring: past it the certificate is refused, so a box
/// whose `vp-node` certificate lapses loses its links, and a bank whose root or issuing CA
/// lapses loses every certificate under it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertExpiry {
    /// `root` (a member bank's), `box` (the certificate this proxy presents) or `ca` (an
    /// issuing CA in that chain).
    pub kind: &'static str,
    /// Its subject (RFC 4514).
    pub subject: String,
    /// Its serial number, hex: a bank's old and new root share a subject.
    pub serial: String,
    /// Its notAfter.
    pub not_after: std::time::SystemTime,
}

/// The notAfter of each certificate of `chain` (DER, leaf first): the leaf as `leaf`, the
/// others as `ca`; a certificate that does not parse is left out (admission refuses it).
pub fn expiries(chain: &[u8], leaf: &'static str) -> Vec<CertExpiry> {
    let Ok(parts) = vpbox_ca::cert::split_der(chain) else { return Vec::new() };
    parts
        .iter()
        .enumerate()
        .filter_map(|(i, der)| {
            let cert = Certificate::from_der(der).ok()?;
            let tbs = cert.tbs_certificate();
            Some(CertExpiry {
                kind: if i == 0 { leaf } else { "ca" },
                subject: tbs.subject().to_string(),
                serial: hex::encode(tbs.serial_number().as_bytes()),
                not_after: tbs.validity().not_after.to_system_time(),
            })
        })
        .collect()
}

fn hex_bytes(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    let s = v.as_str().ok_or_else(|| format!("{what}: not a string"))?;
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(|_| format!("{what}: not hex"))
}

/// The DNS names of the end-entity certificate of `chain` (DER, leaf first).
pub fn dns_names(chain: &[u8]) -> Vec<String> {
    let Some(leaf) = vpbox_ca::cert::split_der(chain).ok().and_then(|p| p.first().copied()) else {
        return Vec::new();
    };
    let Ok(cert) = Certificate::from_der(leaf) else { return Vec::new() };
    match cert.tbs_certificate().get_extension::<SubjectAltName>() {
        Ok(Some((_, san))) => san
            .0
            .iter()
            .filter_map(|g| match g {
                GeneralName::DnsName(d) => Some(d.as_str().to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl TrustState {
    /// Reads a `gov_getState` result.
    pub fn from_governance(state: &Value) -> Result<Self, String> {
        let chain = hex_bytes(&state["chain"], "chain")?;
        let chain: [u8; 32] = chain.try_into().map_err(|_| "chain: not 32 bytes".to_string())?;
        let mut store = TrustStore::new();
        let mut certificates = Vec::new();
        for (i, root) in state["roots"].as_array().ok_or("roots: not a list")?.iter().enumerate() {
            let pem = root["certificate"].as_str().ok_or_else(|| format!("root {i}: no PEM"))?;
            let (_, der) = pem_rfc7468::decode_vec(pem.as_bytes())
                .map_err(|e| format!("root {i}: not PEM: {e}"))?;
            store.add_root(&der).map_err(|e| format!("root {i}: {e}"))?;
            certificates.extend(expiries(&der, "root"));
        }
        let crls = state["crls"].as_array().ok_or("crls: not a list")?;
        for (i, crl) in crls.iter().enumerate() {
            // Each was accepted when its block executed; one whose root governance removed
            // since no longer applies to anything (as in the ledger's own trust store).
            let _ = store.add_crl(&hex_bytes(crl, &format!("crl {i}"))?);
        }
        let crls_in_force = store.crls_in_force();
        let mut members = Vec::new();
        for n in state["nodes"].as_array().ok_or("nodes: not a list")? {
            let id = n["id"].as_u64().and_then(|i| u32::try_from(i).ok());
            let id = id.ok_or("a node without an id")?;
            let key = hex_bytes(&n["consensusKey"], &format!("node {id}: consensusKey"))?;
            let key = PublicKey::from_sec1(&key).map_err(|e| format!("node {id}: {e}"))?;
            let certificate = hex_bytes(&n["certificate"], &format!("node {id}: certificate"))?;
            members.push(Member {
                id,
                name: n["name"].as_str().unwrap_or_default().to_string(),
                bank: n["bank"].as_str().unwrap_or_default().to_string(),
                key_fingerprint: key.fingerprint(),
                dns_name: dns_names(&certificate).into_iter().next(),
            });
        }
        certificates.sort();
        certificates.dedup();
        Ok(Self {
            store,
            membership: Membership { chain, members },
            seq: state["seq"].as_u64().unwrap_or(0),
            crls: crls.len(),
            crls_in_force,
            certificates,
        })
    }
}

/// SM3 of an answer's bytes: whether the trust state changed since the last poll.
pub fn fingerprint(answer: &[u8]) -> Digest {
    vpbox_sm::sm3::hash(answer)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn malformed_states_are_refused_with_the_field() {
        let good_chain = format!("0x{}", "07".repeat(32));
        for (state, want) in [
            (json!({}), "chain"),
            (json!({"chain": "0x07"}), "chain: not 32 bytes"),
            (json!({"chain": good_chain, "roots": 5}), "roots"),
            (json!({"chain": good_chain, "roots": [{"certificate": "x"}]}), "root 0"),
            (json!({"chain": good_chain, "roots": [], "crls": [], "nodes": [{}]}), "without an id"),
            (
                json!({"chain": good_chain, "roots": [], "crls": [],
                       "nodes": [{"id": 3, "consensusKey": "04ab"}]}),
                "node 3",
            ),
        ] {
            let e = TrustState::from_governance(&state).err().unwrap();
            assert!(e.contains(want), "{e} / {want}");
        }
        let empty = json!({"chain": good_chain, "roots": [], "crls": [], "nodes": [], "seq": 4});
        let t = TrustState::from_governance(&empty).unwrap();
        assert_eq!((t.seq, t.crls, t.membership.chain), (4, 0, [7; 32]));
    }

    #[test]
    fn dns_names_of_garbage_are_none() {
        assert!(dns_names(b"").is_empty());
        assert!(dns_names(&[0x30, 0x03, 1, 2, 3]).is_empty());
    }
}
