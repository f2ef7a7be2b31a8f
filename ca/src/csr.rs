use std::str::FromStr;

use vpbox_sm::Signer;
use vpbox_sm::sm2::{DEFAULT_ID, message_digest};
use x509_cert::der::asn1::{BitString, ObjectIdentifier, SetOfVec};
use x509_cert::der::{Decode, Encode, EncodePem, pem::LineEnding};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// `SM2-with-SM3` (GM/T 0006), the signature algorithm of SM2 certificates and requests.
pub const SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The subject is not an RFC 4514 distinguished name.
    #[error(
        "subject {subject:?} is not a distinguished name like \"CN=node1,O=Bank A,C=CN\": {reason}"
    )]
    Subject {
        /// What was given.
        subject: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The signer failed.
    #[error("signing the request: {0}")]
    Sign(#[from] vpbox_sm::Error),
    /// DER encoding failed.
    #[error("encoding the request: {0}")]
    Encode(String),
}

/// A PKCS#10 request for `signer`'s public key, signed with it, as PEM.
///
/// `subject` is an RFC 4514 string (`CN=node1,O=Bank A,C=CN`; the most significant RDN last).
pub fn build_csr(signer: &dyn Signer, subject: &str) -> Result<String, CsrError> {
    let enc = |e: x509_cert::der::Error| CsrError::Encode(e.to_string());
    let name = Name::from_str(subject)
        .map_err(|e| CsrError::Subject { subject: subject.into(), reason: e.to_string() })?;
    let public = signer.public_key();
    let public_key = SubjectPublicKeyInfoOwned::from_der(&public.to_spki_der()).map_err(enc)?;
    let info = CertReqInfo {
        version: Version::V1,
        subject: name,
        public_key,
        attributes: SetOfVec::new(),
    };
    let tbs = info.to_der().map_err(enc)?;
    let z = public.z(DEFAULT_ID)?;
    let signature = signer.sign_digest(&message_digest(&z, &[&tbs]))?;
    let req = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned { oid: SM2_WITH_SM3, parameters: None },
        signature: BitString::from_bytes(&signature.to_der()).map_err(enc)?,
    };
    req.to_pem(LineEnding::LF).map_err(enc)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use vpbox_sm::SoftwareSigner;
    use vpbox_sm::sm2::SecretKey;

    use super::*;

    #[test]
    fn openssl_verifies_the_request_with_the_standard_id() {
        let signer = SoftwareSigner::new(SecretKey::generate().unwrap());
        let pem = build_csr(&signer, "CN=node1,OU=consensus,O=Bank A,C=CN").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("req.pem");
        std::fs::write(&path, &pem).unwrap();
        let out = Command::new("openssl")
            .args(["req", "-in", path.to_str().unwrap(), "-verify", "-noout", "-subject"])
            .args(["-vfyopt", "distid:1234567812345678"])
            .output()
            .expect("openssl must be installed");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        // OpenSSL 3.0's `req -verify` exits 0 whatever the outcome: the message is the verdict.
        assert!(text.contains("self-signature verify OK"), "{text}");
        assert!(text.contains("CN = node1"), "{text}");
        // A request altered after signing (the subject's CN) fails verification.
        let der = x509_cert::der::Document::from_pem(&pem).unwrap().1.as_bytes().to_vec();
        let at = der.windows(5).position(|w| w == b"node1").unwrap();
        let mut bad = der;
        bad[at + 4] = b'2';
        let bad_path = dir.path().join("bad.der");
        std::fs::write(&bad_path, &bad).unwrap();
        let verdict = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
        };
        let bad_text = verdict(&[
            "req",
            "-inform",
            "DER",
            "-in",
            bad_path.to_str().unwrap(),
            "-verify",
            "-noout",
            "-vfyopt",
            "distid:1234567812345678",
        ]);
        assert!(bad_text.contains("verify failure"), "a tampered request verified: {bad_text}");
        // OpenSSL 3.0 defaults to an empty ID: without the standard one the signature fails.
        let no_id = verdict(&["req", "-in", path.to_str().unwrap(), "-verify", "-noout"]);
        assert!(no_id.contains("verify failure"), "{no_id}");
    }

    #[test]
    fn bad_subjects_are_explained() {
        let signer = SoftwareSigner::new(SecretKey::generate().unwrap());
        assert!(matches!(build_csr(&signer, "not a dn"), Err(CsrError::Subject { .. })));
    }
}
