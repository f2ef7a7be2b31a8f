//! sm2sig_sm3 (RFC 8998 §3.2): CertificateVerify signed through any [`vpbox_sm::Signer`], so
//! the private key may live in an HSM.
//!
//! RFC 8998 §3.2.1 fixes the SM2 signer ID for TLS 1.3 at `TLSv1.3+GM+Cipher+Suite`; the
//! signed pre-hash is `e = SM3(Z ‖ M)` with `Z` computed over that ID and `M` the content of
//! RFC 8446 §4.4.3 (64 spaces, context string, 0x00, transcript hash). Certificates themselves
//! are signed by the CA with the default ID `1234567812345678`.

use core::fmt;
use std::sync::Arc;

use rustls::crypto::KeyProvider;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer as TlsSigner, SigningKey};
use rustls::{Error, SignatureAlgorithm, SignatureScheme};
use vpbox_sm::sm2::{PublicKey, SecretKey, message_digest, z_value};
use vpbox_sm::sm3::Digest;
use vpbox_sm::{Signer, SoftwareSigner};

/// The code point of sm2sig_sm3 (RFC 8998 §3.2, IANA TLS SignatureScheme).
pub const SM2SIG_SM3: SignatureScheme = SignatureScheme::Unknown(0x0708);

/// The SM2 signer ID of TLS 1.3 CertificateVerify (RFC 8998 §3.2.1).
pub const TLS13_SM2_ID: &[u8] = b"TLSv1.3+GM+Cipher+Suite";

/// SM2 has no TLS 1.2 `SignatureAlgorithm` code; rustls consults it only for TLS 1.2 suites,
/// which vpbox never enables.
const SM2_SIGNATURE_ALGORITHM: SignatureAlgorithm = SignatureAlgorithm::Unknown(0xF2);

/// `e = SM3(Z ‖ message)` with `Z` over the TLS 1.3 ID: what is signed and verified.
pub(crate) fn tls13_digest(z: &Digest, message: &[u8]) -> Digest {
    message_digest(z, &[message])
}

/// `Z` for `key` with the TLS 1.3 ID. The ID is 23 bytes, far below the 8,191-byte limit, so
/// this never fails; the error arm exists only because `z_value` is fallible in general.
pub(crate) fn tls13_z(key: &PublicKey) -> Result<Digest, Error> {
    z_value(TLS13_SM2_ID, key).map_err(|e| Error::General(format!("SM2 Z value: {e}")))
}

/// A rustls [`SigningKey`] over an SM2 [`Signer`]: a PKCS#11 token in production, a
/// [`SoftwareSigner`] in tests and tools. It offers sm2sig_sm3 and nothing else.
///
/// `Debug` shows the public key's fingerprint only.
pub struct Sm2SigningKey {
    signer: Arc<dyn Signer>,
    spki: Vec<u8>,
    z: Digest,
}

impl Sm2SigningKey {
    /// Wraps `signer`.
    pub fn new(signer: Arc<dyn Signer>) -> Result<Self, Error> {
        let public = signer.public_key();
        let z = tls13_z(public)?;
        let spki = public.to_spki_der();
        Ok(Self { signer, spki, z })
    }
}

impl SigningKey for Sm2SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn TlsSigner>> {
        offered.contains(&SM2SIG_SM3).then(|| {
            Box::new(Sm2TlsSigner { signer: Arc::clone(&self.signer), z: self.z })
                as Box<dyn TlsSigner>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.spki.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SM2_SIGNATURE_ALGORITHM
    }
}

impl fmt::Debug for Sm2SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm2SigningKey").field("public_key", self.signer.public_key()).finish()
    }
}

/// One CertificateVerify signature. Blocking by design: rustls calls it from the handshake, and
/// an HSM round trip is a few milliseconds.
struct Sm2TlsSigner {
    signer: Arc<dyn Signer>,
    z: Digest,
}

impl TlsSigner for Sm2TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let e = tls13_digest(&self.z, message);
        self.signer
            .sign_digest(&e)
            .map(|sig| sig.to_der())
            .map_err(|err| Error::General(format!("SM2 signing failed: {err}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3
    }
}

impl fmt::Debug for Sm2TlsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm2TlsSigner").field("public_key", self.signer.public_key()).finish()
    }
}

/// Loads SM2 PKCS#8 keys (as `openssl genpkey -algorithm SM2` writes them) into a
/// [`SoftwareSigner`], for rustls's `with_single_cert` paths. Production keys stay in the HSM
/// and come in through [`Sm2SigningKey::new`] instead.
#[derive(Debug)]
pub(crate) struct Sm2KeyProvider;

impl KeyProvider for Sm2KeyProvider {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        let PrivateKeyDer::Pkcs8(der) = key_der else {
            return Err(Error::General("only PKCS#8 SM2 private keys are supported".into()));
        };
        // The error describes the encoding, never the key bytes.
        let key = SecretKey::from_pkcs8_der(der.secret_pkcs8_der())
            .map_err(|e| Error::General(format!("not an SM2 private key: {e}")))?;
        Ok(Arc::new(Sm2SigningKey::new(Arc::new(SoftwareSigner::new(key)))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpbox_sm::sm2::{DEFAULT_ID, Signature};

    fn key() -> (Arc<SoftwareSigner>, Sm2SigningKey) {
        let signer = Arc::new(SoftwareSigner::new(SecretKey::generate().unwrap()));
        let key = Sm2SigningKey::new(signer.clone()).unwrap();
        (signer, key)
    }

    // RFC 8998 §3.2.1: CertificateVerify uses the ID "TLSv1.3+GM+Cipher+Suite".
    #[test]
    fn certificate_verify_is_signed_with_the_tls13_id() {
        let (signer, key) = key();
        assert!(key.choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256]).is_none());
        let tls = key.choose_scheme(&[SignatureScheme::ED25519, SM2SIG_SM3]).unwrap();
        assert_eq!(tls.scheme(), SM2SIG_SM3);
        let message = b"                                                                \
                        TLS 1.3, client CertificateVerify\x00transcript-hash";
        let sig = Signature::from_der(&tls.sign(message).unwrap()).unwrap();
        let public = signer.public_key();
        assert!(public.verify(TLS13_SM2_ID, message, &sig).is_valid());
        assert!(!public.verify(DEFAULT_ID, message, &sig).is_valid());
        assert!(!public.verify(TLS13_SM2_ID, b"another message", &sig).is_valid());
    }

    #[test]
    fn debug_shows_no_private_key_and_spki_matches() {
        let (signer, key) = key();
        let text = format!("{key:?}");
        assert!(text.contains("PublicKey(sm3:"), "{text}");
        assert_eq!(key.public_key().unwrap().as_ref(), signer.public_key().to_spki_der());
    }

    #[test]
    fn key_provider_loads_pkcs8_and_refuses_the_rest() {
        let secret = SecretKey::generate().unwrap();
        let public = secret.public_key().clone();
        let der = secret.to_pkcs8_der().unwrap().to_vec();
        let loaded = Sm2KeyProvider.load_private_key(PrivateKeyDer::Pkcs8(der.into())).unwrap();
        assert_eq!(loaded.public_key().unwrap().as_ref(), public.to_spki_der());
        let junk = PrivateKeyDer::Pkcs8(vec![0x30, 0x03, 0x02, 0x01, 0x00].into());
        assert!(Sm2KeyProvider.load_private_key(junk).is_err());
        let sec1 = PrivateKeyDer::Sec1(vec![0x30].into());
        assert!(Sm2KeyProvider.load_private_key(sec1).is_err());
    }
}
