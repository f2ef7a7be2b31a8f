//! Who may hold a P2P link through the proxy (sans-IO): the consortium's current members as the
//! ledger knows them, a TLS peer identified as one of them, and the node its link claims to be.
//!
//! A P2P connection is mutual TLS between two boxes' proxies, with each box's `vp-node`
//! certificate. The TLS layer (`vpbox_tls`) admits the certificate by the consortium's roots
//! and CRLs; this module then decides:
//! - [`Membership::identify`]: the certificate must belong to a *current member*: the member
//!   whose name (CN), bank (O) and consensus key the certificate certifies. A bank's valid
//!   `vp-node` certificate for a box that governance removed, or never added, is refused.
//! - [`Membership::check_claim`]: the link handshake inside the tunnel (`vpbox_node::link`)
//!   opens with the dialer's hello naming its node; the accepting proxy reads that first frame
//!   and refuses a hello that names another node than the certificate's, or another chain. The
//!   handshake itself still proves the node with its consensus key end to end, so a
//!   compromised proxy cannot impersonate a node either way.

use vpbox_ca::policy::Identity;
use vpbox_signer_client::link::{HELLO_LEN, Hello};
use vpbox_sm::sm3::Digest;

/// The largest first frame of a link handshake (as `vpbox_node::link::HANDSHAKE_MAX`).
pub const HANDSHAKE_FRAME_MAX: usize = 256;

/// A current member node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its consensus id.
    pub id: u32,
    /// Its name: its certificate's CN.
    pub name: String,
    /// Its bank: its certificate's O.
    pub bank: String,
    /// SM3 of its consensus key's SPKI: the key its `vp-node` certificate certifies.
    pub key_fingerprint: Digest,
    /// The DNS name its certificate carries, which a proxy dials it by (TLS SNI and check).
    pub dns_name: Option<String>,
}

/// The members and the chain, as the ledger's committed governance state has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// The chain (the genesis hash) the links prove themselves in.
    pub chain: [u8; 32],
    /// The current members.
    pub members: Vec<Member>,
}

/// Why a P2P peer was refused after its certificate was admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum P2pRefusal {
    /// The certificate is a valid `vp-node` certificate, but of no current member.
    #[error("{name} of {bank} is not a current member node")]
    NotAMember {
        /// The certificate's CN.
        name: String,
        /// The certificate's O.
        bank: String,
    },
    /// The link's hello names another node than the certificate.
    #[error("the certificate of node {certified} claims to be node {claimed}")]
    ClaimsAnother {
        /// The node the certificate belongs to.
        certified: u32,
        /// The node the hello names.
        claimed: u32,
    },
    /// The link's hello is for another chain.
    #[error("the link is for another chain")]
    WrongChain,
    /// The first frame is not a link hello.
    #[error("not a link handshake: {0}")]
    Malformed(&'static str),
}

impl Membership {
    /// The member node `id`.
    pub fn member(&self, id: u32) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The current member an admitted `vp-node` certificate belongs to.
    pub fn identify(&self, who: &Identity) -> Result<&Member, P2pRefusal> {
        self.members
            .iter()
            .find(|m| {
                m.key_fingerprint == who.key_fingerprint && m.name == who.name && m.bank == who.bank
            })
            .ok_or_else(|| P2pRefusal::NotAMember {
                name: who.name.clone(),
                bank: who.bank.clone(),
            })
    }

    /// Checks the body of the dialer's first link frame (its hello, then its proof): it must
    /// be for this chain and name `certified`, the member its certificate belongs to.
    pub fn check_claim(&self, certified: &Member, first: &[u8]) -> Result<(), P2pRefusal> {
        let hello = first
            .get(..HELLO_LEN)
            .ok_or(P2pRefusal::Malformed("the first frame is shorter than a hello"))
            .and_then(|b| Hello::decode(b).map_err(|_| P2pRefusal::Malformed("not a hello")))?;
        if hello.chain != self.chain {
            return Err(P2pRefusal::WrongChain);
        }
        if hello.id != certified.id {
            return Err(P2pRefusal::ClaimsAnother { certified: certified.id, claimed: hello.id });
        }
        Ok(())
    }
}

/// Reads a frame's length prefix (`len:u32be`): the body's length, if it is at most
/// [`HANDSHAKE_FRAME_MAX`].
pub fn handshake_frame_len(prefix: [u8; 4]) -> Result<usize, P2pRefusal> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 || len > HANDSHAKE_FRAME_MAX {
        return Err(P2pRefusal::Malformed("a handshake frame of a length no hello has"));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use vpbox_ca::CertProfile;

    use super::*;

    fn member(id: u32, name: &str, key: u8) -> Member {
        Member {
            id,
            name: name.into(),
            bank: "bank-a".into(),
            key_fingerprint: Digest([key; 32]),
            dns_name: Some(format!("{name}.bank-a")),
        }
    }

    fn membership() -> Membership {
        Membership { chain: [7; 32], members: vec![member(1, "node1", 1), member(2, "node2", 2)] }
    }

    fn identity(name: &str, bank: &str, key: u8) -> Identity {
        Identity {
            bank: bank.into(),
            name: name.into(),
            role: CertProfile::VpNode,
            serial: vec![1],
            key_fingerprint: Digest([key; 32]),
        }
    }

    fn hello(chain: [u8; 32], id: u32) -> Vec<u8> {
        let mut b = Hello { chain, id, nonce: [3; 32] }.encode();
        b.extend_from_slice(&[0; 64]);
        b
    }

    #[test]
    fn a_certificate_is_a_member_only_with_its_name_bank_and_key() {
        let m = membership();
        assert_eq!(m.identify(&identity("node2", "bank-a", 2)).unwrap().id, 2);
        for other in [
            identity("node2", "bank-a", 1), // node1's key under node2's name
            identity("node2", "bank-b", 2), // another bank
            identity("node3", "bank-a", 2), // another name
            identity("node9", "bank-a", 9), // a box governance never added
        ] {
            assert!(matches!(m.identify(&other), Err(P2pRefusal::NotAMember { .. })), "{other:?}");
        }
    }

    #[test]
    fn the_hello_must_name_the_certificates_node_on_this_chain() {
        let m = membership();
        let node2 = m.member(2).unwrap().clone();
        assert_eq!(m.check_claim(&node2, &hello([7; 32], 2)), Ok(()));
        assert_eq!(
            m.check_claim(&node2, &hello([7; 32], 1)),
            Err(P2pRefusal::ClaimsAnother { certified: 2, claimed: 1 })
        );
        assert_eq!(m.check_claim(&node2, &hello([8; 32], 2)), Err(P2pRefusal::WrongChain));
        assert!(matches!(m.check_claim(&node2, b"GET / HTTP/1.1"), Err(P2pRefusal::Malformed(_))));
        let mut bad = hello([7; 32], 2);
        bad[0] = b'X';
        assert!(matches!(m.check_claim(&node2, &bad), Err(P2pRefusal::Malformed(_))));
    }

    #[test]
    fn handshake_frames_are_bounded() {
        assert_eq!(handshake_frame_len(144u32.to_be_bytes()), Ok(144));
        assert!(handshake_frame_len(0u32.to_be_bytes()).is_err());
        assert!(handshake_frame_len(257u32.to_be_bytes()).is_err());
        assert!(handshake_frame_len(u32::MAX.to_be_bytes()).is_err());
    }
}
