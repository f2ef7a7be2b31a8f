//! What a node's consensus key signs to prove, at the start of a peer link, which node is at
//! the other end (in [`vpbox_sm::Domain::LINK`], so a link proof is never a vote).
//!
//! ```text
//! proof payload = "VPBOX-LINK/1" role:u8 chain:[32] from:u32 to:u32 challenge:[32] nonce:[32]
//!   role 1 Dial    the node that opened the connection
//!   role 2 Accept  the node that accepted it
//! ```
//!
//! Before the proofs, each side sends a [`Hello`] naming its chain, its node and its nonce (see
//! `vpbox_node::link` for the exchange); the box's proxy reads the dialer's to check that the
//! node it claims is the one its TLS certificate names.
//!
//! ```text
//! hello = "VPBOX-HELO/1" chain:[32] id:u32 nonce:[32]
//! ```
//!
//! `challenge` is the fresh nonce the other side sent, `nonce` the signer's side's own: each
//! side signs the other's challenge, so a proof cannot be replayed on another connection, to
//! another node, in another chain, or in the other role. The signer decodes the payload and
//! signs it only if `from` is its key's node.

/// The payload's fixed prefix.
pub const MAGIC: &[u8; 12] = b"VPBOX-LINK/1";
/// A proof payload's length.
pub const PROOF_LEN: usize = 12 + 1 + 32 + 4 + 4 + 32 + 32;

/// A hello's fixed prefix.
pub const HELLO_MAGIC: &[u8; 12] = b"VPBOX-HELO/1";
/// A hello's length.
pub const HELLO_LEN: usize = 12 + 32 + 4 + 32;

/// The first message of each side of a link: which chain, which node, and its fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The chain (its genesis block's hash).
    pub chain: [u8; 32],
    /// The node that says hello.
    pub id: u32,
    /// Its fresh nonce (the other side's challenge).
    pub nonce: [u8; 32],
}

impl Hello {
    /// The bytes sent.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_LEN);
        out.extend_from_slice(HELLO_MAGIC);
        out.extend_from_slice(&self.chain);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Decodes exactly [`HELLO_LEN`] bytes that start with the magic.
    pub fn decode(b: &[u8]) -> Result<Self, LinkProofError> {
        if b.len() != HELLO_LEN || &b[..12] != HELLO_MAGIC {
            return Err(LinkProofError("not a hello"));
        }
        let mut chain = [0; 32];
        chain.copy_from_slice(&b[12..44]);
        let id = u32::from_be_bytes([b[44], b[45], b[46], b[47]]);
        let mut nonce = [0; 32];
        nonce.copy_from_slice(&b[48..80]);
        Ok(Self { chain, id, nonce })
    }
}

/// Which side of a link a proof is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node that opened the connection.
    Dial,
    /// The node that accepted it.
    Accept,
}

/// A link proof's signed content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkProof {
    /// The prover's side.
    pub role: Role,
    /// The chain both nodes run (its genesis block's hash).
    pub chain: [u8; 32],
    /// The prover's node.
    pub from: u32,
    /// The node it proves itself to.
    pub to: u32,
    /// The other side's fresh challenge.
    pub challenge: [u8; 32],
    /// The prover's own nonce (sent in its hello).
    pub nonce: [u8; 32],
}

/// A payload that is not a link proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a link proof payload: {0}")]
pub struct LinkProofError(&'static str);

impl LinkProof {
    /// The bytes signed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROOF_LEN);
        out.extend_from_slice(MAGIC);
        out.push(match self.role {
            Role::Dial => 1,
            Role::Accept => 2,
        });
        out.extend_from_slice(&self.chain);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.challenge);
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Decodes a payload: exactly [`PROOF_LEN`] bytes, the magic, a known role, two distinct
    /// nodes.
    pub fn decode(b: &[u8]) -> Result<Self, LinkProofError> {
        if b.len() != PROOF_LEN {
            return Err(LinkProofError("wrong length"));
        }
        if &b[..12] != MAGIC {
            return Err(LinkProofError("wrong magic"));
        }
        let role = match b[12] {
            1 => Role::Dial,
            2 => Role::Accept,
            _ => return Err(LinkProofError("unknown role")),
        };
        let arr = |at: usize| -> [u8; 32] {
            let mut a = [0; 32];
            a.copy_from_slice(&b[at..at + 32]);
            a
        };
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let p = Self {
            role,
            chain: arr(13),
            from: u32_at(45),
            to: u32_at(49),
            challenge: arr(53),
            nonce: arr(85),
        };
        if p.from == p.to {
            return Err(LinkProofError("a node does not link to itself"));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_round_trip_and_nothing_else_decodes() {
        let p = LinkProof {
            role: Role::Accept,
            chain: [1; 32],
            from: 3,
            to: 4,
            challenge: [5; 32],
            nonce: [6; 32],
        };
        let b = p.encode();
        assert_eq!(b.len(), PROOF_LEN);
        assert_eq!(LinkProof::decode(&b).unwrap(), p);
        for cut in 0..b.len() {
            assert!(LinkProof::decode(&b[..cut]).is_err());
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(LinkProof::decode(&longer).is_err());
        let mut bad = b.clone();
        bad[12] = 3;
        assert!(LinkProof::decode(&bad).is_err(), "unknown role");
        let mut bad = b;
        bad[0] ^= 1;
        assert!(LinkProof::decode(&bad).is_err(), "magic");
        let same = LinkProof { to: 3, ..p };
        assert!(LinkProof::decode(&same.encode()).is_err(), "to itself");
    }
}
