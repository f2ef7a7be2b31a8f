//! The [`Signer`] trait, signing domains, and [`Verification`].
//!
//! Every vpbox signature is made *in a domain*: the signed message is
//! `tag ‖ 0x00 ‖ payload` with the default signer ID. Tags contain no NUL and none is a prefix
//! of another, so a signature made for one purpose (a consensus vote) can never pass as another
//! (a transaction). The framed message is an ordinary SM2 message, so OpenSSL verifies it too:
//! `openssl pkeyutl -verify -rawin -digest sm3 -pkeyopt distid:1234567812345678`.

use core::fmt;

use crate::Error;
use crate::sm2::{DEFAULT_ID, PublicKey, SecretKey, Signature, message_digest};
use crate::sm3::Digest;

/// The outcome of a signature check. Not a `bool`, so that it is never confused with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verification {
    /// The signature is valid for this key, message and ID.
    Valid,
    /// It is not.
    Invalid,
}

impl Verification {
    /// `true` only for [`Verification::Valid`].
    pub fn is_valid(self) -> bool {
        self == Self::Valid
    }
}

/// What a signature is for. The set is closed: every purpose is a constant here, so the tags
/// can be reviewed together for prefix-freedom.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Domain(&'static str);

impl Domain {
    /// Consensus messages: pre-prepare, prepare, commit, checkpoint, view change, new view.
    pub const CONSENSUS: Self = Self("VPBOX/consensus/v1");
    /// Client transactions (anchor puts, batches).
    pub const TX: Self = Self("VPBOX/tx/v1");
    /// Governance approvals of configuration changes by bank admins.
    pub const GOVERNANCE: Self = Self("VPBOX/governance/v1");
    /// Self-test signatures of HSM health checks; never valid for anything else.
    pub const SELFTEST: Self = Self("VPBOX/selftest/v1");
    /// Peer-link handshakes: a node's consensus key answers a fresh challenge, proving which
    /// node is at the other end of a link (never a vote, never valid for anything else).
    pub const LINK: Self = Self("VPBOX/link/v1");

    /// Every domain.
    pub const ALL: [Self; 5] =
        [Self::CONSENSUS, Self::TX, Self::GOVERNANCE, Self::SELFTEST, Self::LINK];

    /// The tag, as it appears in the signed message and on the signer's wire.
    pub fn tag(self) -> &'static str {
        self.0
    }

    /// The domain with this tag, if there is one.
    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.0 == tag)
    }

    /// `e = SM3(Z ‖ tag ‖ 0x00 ‖ payload)` for `key` with the default ID: what an HSM signs.
    pub fn digest(self, key: &PublicKey, payload: &[u8]) -> Digest {
        // `z` cannot fail for the default ID; it is cached at key construction.
        let z = key.z(DEFAULT_ID).unwrap_or_default();
        message_digest(&z, &[self.0.as_bytes(), &[0], payload])
    }

    /// The framed message `tag ‖ 0x00 ‖ payload`, for tools that hash it themselves (OpenSSL).
    pub fn frame(self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 1 + payload.len());
        out.extend_from_slice(self.0.as_bytes());
        out.push(0);
        out.extend_from_slice(payload);
        out
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Domain({})", self.0)
    }
}

/// Something that holds an SM2 private key and signs with it: a PKCS#11 token (production) or a
/// [`SoftwareSigner`] (tests and client tools).
///
/// Implementors provide only [`Signer::sign_digest`], the raw form every HSM profile offers;
/// the domain framing is done here once for all of them.
pub trait Signer: Send + Sync {
    /// The public half of the signing key.
    fn public_key(&self) -> &PublicKey;

    /// Signs a pre-hash `e = SM3(Z ‖ M)`. Implementations must verify the result before
    /// returning it when the key lives in hardware.
    fn sign_digest(&self, e: &Digest) -> Result<Signature, Error>;

    /// Signs `payload` in `domain`.
    fn sign(&self, domain: Domain, payload: &[u8]) -> Result<Signature, Error> {
        self.sign_digest(&domain.digest(self.public_key(), payload))
    }
}

impl PublicKey {
    /// Verifies a signature made with [`Signer::sign`] in `domain`.
    pub fn verify_in(&self, domain: Domain, payload: &[u8], sig: &Signature) -> Verification {
        self.verify_digest(&domain.digest(self, payload), sig)
    }
}

/// A [`Signer`] over a key in memory. Never for keys that belong in the HSM.
#[derive(Debug)]
pub struct SoftwareSigner {
    key: SecretKey,
}

impl SoftwareSigner {
    /// Wraps `key`.
    pub fn new(key: SecretKey) -> Self {
        Self { key }
    }
}

impl Signer for SoftwareSigner {
    fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    fn sign_digest(&self, e: &Digest) -> Result<Signature, Error> {
        self.key.sign_digest(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_prefix_free_and_nul_free() {
        for a in Domain::ALL {
            assert!(!a.tag().contains('\0'));
            assert_eq!(Domain::from_tag(a.tag()), Some(a));
            for b in Domain::ALL {
                if a != b {
                    assert!(!a.tag().starts_with(b.tag()), "{a:?} starts with {b:?}");
                }
            }
        }
        assert_eq!(Domain::from_tag("VPBOX/tx"), None);
    }

    #[test]
    fn a_signature_is_valid_only_in_its_domain() {
        let signer = SoftwareSigner::new(SecretKey::generate().unwrap());
        let pk = signer.public_key();
        for made_in in Domain::ALL {
            let sig = signer.sign(made_in, b"payload").unwrap();
            for checked_in in Domain::ALL {
                let expected =
                    if made_in == checked_in { Verification::Valid } else { Verification::Invalid };
                assert_eq!(pk.verify_in(checked_in, b"payload", &sig), expected);
            }
            // The same bytes signed without a domain are a different message.
            assert_eq!(pk.verify(DEFAULT_ID, b"payload", &sig), Verification::Invalid);
            assert_eq!(
                pk.verify(DEFAULT_ID, &made_in.frame(b"payload"), &sig),
                Verification::Valid
            );
        }
    }
}
