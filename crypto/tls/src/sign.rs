//! sm2sig_sm3 (RFC 8998 §3.2): CertificateVerify signed through a [`TlsKey`], so the private
//! key may live in an HSM: an SM2 [`vpbox_sm::Signer`] in this process ([`LocalKey`]: a PKCS#11
//! session, a software key in tests), or the box's signer service ([`SignerServiceKey`]), so
//! that the proxy holds no key and no PIN at all.
//!
//! RFC 8998 §3.2.1 fixes the SM2 signer ID for TLS 1.3 at `TLSv1.3+GM+Cipher+Suite`; the
//! signed pre-hash is `e = SM3(Z ‖ M)` with `Z` computed over that ID and `M` the content of
//! RFC 8446 §4.4.3 (64 spaces, context string, 0x00, transcript hash). Certificates themselves
//! are signed by the CA with the default ID `1234567812345678`.

use core::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::crypto::KeyProvider;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer as TlsSigner, SigningKey};
use rustls::{Error, SignatureAlgorithm, SignatureScheme};
use vpbox_sm::sm2::{PublicKey, SecretKey, Signature, message_digest, z_value};
use vpbox_sm::sm3::Digest;
use vpbox_sm::{Signer, SoftwareSigner};

/// The code point of sm2sig_sm3 (RFC 8998 §3.2, IANA TLS SignatureScheme).
pub const SM2SIG_SM3: SignatureScheme = SignatureScheme::Unknown(0x0708);

/// The SM2 signer ID of TLS 1.3 CertificateVerify (RFC 8998 §3.2.1).
pub const TLS13_SM2_ID: &[u8] = vpbox_signer_client::tls13::SM2_ID;

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

/// An SM2 key that signs TLS 1.3 CertificateVerify contents (RFC 8446 §4.4.3) with
/// sm2sig_sm3: `e = SM3(Z ‖ content)`, `Z` over [`TLS13_SM2_ID`].
pub trait TlsKey: Send + Sync {
    /// The key's public half (the certificate's).
    fn public_key(&self) -> &PublicKey;
    /// Signs one CertificateVerify content.
    fn sign_certificate_verify(&self, content: &[u8]) -> Result<Signature, String>;
}

/// A [`TlsKey`] over an SM2 [`Signer`] in this process, which computes the pre-hash itself and
/// has the signer sign it.
pub struct LocalKey {
    signer: Arc<dyn Signer>,
    z: Digest,
}

impl LocalKey {
    /// Wraps `signer`.
    pub fn new(signer: Arc<dyn Signer>) -> Result<Self, Error> {
        let z = tls13_z(signer.public_key())?;
        Ok(Self { signer, z })
    }
}

impl TlsKey for LocalKey {
    fn public_key(&self) -> &PublicKey {
        self.signer.public_key()
    }

    fn sign_certificate_verify(&self, content: &[u8]) -> Result<Signature, String> {
        self.signer.sign_digest(&tls13_digest(&self.z, content)).map_err(|e| e.to_string())
    }
}

/// A [`TlsKey`] in the box's signer service (`vpbox signer run`), in its TLS domain: the
/// signer checks that what it signs is a CertificateVerify content and that the caller's user
/// is one its key's `tls_uids` lists, and writes each signature to its audit log. One
/// connection, reopened once after a failure; a handshake waits for its signature (a few
/// milliseconds through an HSM).
pub struct SignerServiceKey {
    socket: PathBuf,
    name: String,
    public: PublicKey,
    timeout: std::time::Duration,
    client: Mutex<Option<vpbox_signer_client::Client>>,
}

impl SignerServiceKey {
    /// The key `name` of the signer at `socket` (its public key is fetched now).
    pub fn connect(socket: &Path, name: &str) -> Result<Self, String> {
        let mut client = vpbox_signer_client::Client::connect(socket)
            .map_err(|e| format!("signer {}: {e}", socket.display()))?;
        let public = client
            .public_key(name)
            .map_err(|e| format!("signer {}: key {name}: {e}", socket.display()))?;
        Ok(Self {
            socket: socket.to_path_buf(),
            name: name.to_string(),
            public,
            timeout: std::time::Duration::from_secs(30),
            client: Mutex::new(Some(client)),
        })
    }

    /// Gives each signature at most `timeout` (a handshake waits for it; 30 s by default).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        if let Ok(mut c) = self.client.lock() {
            if let Some(client) = c.as_mut() {
                if client.set_timeout(timeout).is_err() {
                    *c = None;
                }
            }
        }
        self
    }
}

impl TlsKey for SignerServiceKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_certificate_verify(&self, content: &[u8]) -> Result<Signature, String> {
        use vpbox_signer_client::ClientError;
        let mut client = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut last = String::from("the signer is unreachable");
        for _ in 0..2 {
            if client.is_none() {
                let fresh = vpbox_signer_client::Client::connect(&self.socket).and_then(|mut c| {
                    c.set_timeout(self.timeout)?;
                    Ok(c)
                });
                match fresh {
                    Ok(c) => *client = Some(c),
                    Err(e) => {
                        last = format!("signer {}: {e}", self.socket.display());
                        continue;
                    }
                }
            }
            let Some(c) = client.as_mut() else { continue };
            match c.sign_tls13(&self.name, content) {
                Ok(sig) => return Ok(sig),
                // A refusal is the signer's decision: asking again would not change it.
                Err(ClientError::Refused(status, msg)) => {
                    return Err(format!("the signer refused: {status:?}: {msg}"));
                }
                Err(e) => {
                    last = e.to_string();
                    *client = None;
                }
            }
        }
        Err(last)
    }
}

impl fmt::Debug for SignerServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerServiceKey")
            .field("socket", &self.socket)
            .field("name", &self.name)
            .field("public_key", &self.public)
            .finish()
    }
}

/// A rustls [`SigningKey`] over a [`TlsKey`]: a PKCS#11 token or the signer service in
/// production, a [`SoftwareSigner`] in tests and tools. It offers sm2sig_sm3 and nothing else.
///
/// `Debug` shows the public key's fingerprint only.
pub struct Sm2SigningKey {
    key: Arc<dyn TlsKey>,
    spki: Vec<u8>,
}

impl Sm2SigningKey {
    /// Wraps an SM2 `signer` in this process.
    pub fn new(signer: Arc<dyn Signer>) -> Result<Self, Error> {
        Ok(Self::with_key(Arc::new(LocalKey::new(signer)?)))
    }

    /// Wraps any [`TlsKey`].
    pub fn with_key(key: Arc<dyn TlsKey>) -> Self {
        let spki = key.public_key().to_spki_der();
        Self { key, spki }
    }
}

impl SigningKey for Sm2SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn TlsSigner>> {
        offered
            .contains(&SM2SIG_SM3)
            .then(|| Box::new(Sm2TlsSigner { key: Arc::clone(&self.key) }) as Box<dyn TlsSigner>)
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
        f.debug_struct("Sm2SigningKey").field("public_key", self.key.public_key()).finish()
    }
}

/// One CertificateVerify signature. Blocking by design: rustls calls it from the handshake, and
/// an HSM round trip is a few milliseconds.
struct Sm2TlsSigner {
    key: Arc<dyn TlsKey>,
}

impl TlsSigner for Sm2TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.key
            .sign_certificate_verify(message)
            .map(|sig| sig.to_der())
            .map_err(|err| Error::General(format!("SM2 signing failed: {err}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SM2SIG_SM3
    }
}

impl fmt::Debug for Sm2TlsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm2TlsSigner").field("public_key", self.key.public_key()).finish()
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
    use vpbox_sm::sm2::DEFAULT_ID;

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
