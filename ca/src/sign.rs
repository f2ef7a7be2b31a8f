//! The bridge from [`vpbox_sm::Signer`] (software or HSM) to the RustCrypto traits x509-cert's
//! builders sign with. Signatures are plain SM2 with the default ID over the DER of the signed
//! structure, encoded as DER `SEQUENCE {r, s}` (OpenSSL rejects raw `r ‖ s`).

use spki::der::asn1::BitString;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding,
};
use vpbox_sm::sm2::{DEFAULT_ID, PublicKey, Signature, message_digest};
use vpbox_sm::{Signer, Verification};

use crate::SM2_WITH_SM3;

/// The issuer's key as the builders need it.
pub struct X509Signer<'a> {
    signer: &'a dyn Signer,
}

impl<'a> X509Signer<'a> {
    /// Wraps `signer`.
    pub fn new(signer: &'a dyn Signer) -> Self {
        Self { signer }
    }
}

/// An SPKI in DER, as the builders' "verifying key".
#[derive(Clone, Debug)]
pub struct SpkiDer(Vec<u8>);

impl EncodePublicKey for SpkiDer {
    fn to_public_key_der(&self) -> spki::Result<spki::Document> {
        Ok(spki::Document::try_from(self.0.as_slice())?)
    }
}

/// A DER-encoded SM2 signature.
#[derive(Clone, Debug)]
pub struct DerSignature(Vec<u8>);

impl SignatureBitStringEncoding for DerSignature {
    fn to_bitstring(&self) -> spki::der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl signature::Keypair for X509Signer<'_> {
    type VerifyingKey = SpkiDer;

    fn verifying_key(&self) -> SpkiDer {
        SpkiDer(self.signer.public_key().to_spki_der())
    }
}

impl DynSignatureAlgorithmIdentifier for X509Signer<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(sm2_algorithm())
    }
}

impl signature::Signer<DerSignature> for X509Signer<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, signature::Error> {
        let public = self.signer.public_key();
        let z = public.z(DEFAULT_ID).map_err(|_| signature::Error::new())?;
        let sig = self
            .signer
            .sign_digest(&message_digest(&z, &[msg]))
            .map_err(|_| signature::Error::new())?;
        Ok(DerSignature(sig.to_der()))
    }
}

/// `SM2-with-SM3`, no parameters.
pub fn sm2_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid: SM2_WITH_SM3, parameters: None }
}

/// Verifies an X.509-style signature (DER in a BIT STRING) over `signed` with the default ID.
pub fn verify_x509(public: &PublicKey, signed: &[u8], signature: &BitString) -> Verification {
    let Some(bytes) = signature.as_bytes() else { return Verification::Invalid };
    match Signature::from_der(bytes) {
        Ok(sig) => public.verify(DEFAULT_ID, signed, &sig),
        Err(_) => Verification::Invalid,
    }
}
