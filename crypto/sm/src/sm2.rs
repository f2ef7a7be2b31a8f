//! SM2 digital signatures (GB/T 32918.2-2016) on the recommended curve (GB/T 32918.5-2017).
//!
//! Signing follows the standard's steps A1–A7 over RustCrypto's constant-time curve arithmetic,
//! with the pre-hash `e = SM3(Z ‖ M)` exposed separately because HSMs sign `e`, not `M`
//! (see `docs/reference/pkcs11-sm.md`). Verification checks the same steps B1–B7 with the
//! crate's own variable-time arithmetic ([`crate::curve`]: combs, wNAF, per-key tables), several
//! times faster than RustCrypto's generic verifier, which the tests keep as the reference.
//!
//! Encodings are the ones OpenSSL 3 uses: private keys as PKCS#8 (`id-ecPublicKey` with the
//! curve OID `1.2.156.10197.1.301`), public keys as SPKI, signatures as DER `SEQUENCE {r, s}` or
//! raw 64-byte `r ‖ s`.

use core::fmt;

use sm2::dsa::signature::hazmat::PrehashVerifier;
use sm2::elliptic_curve::{
    Curve, Generate, Group, PrimeField, ops::Reduce, point::AffineCoordinates, sec1::ToSec1Point,
};
use sm2::pkcs8::der::{Decode, asn1::ObjectIdentifier};
use sm2::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sm2::{FieldBytes, NonZeroScalar, ProjectivePoint, Scalar, Sm2, U256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Reason};
use crate::signer::Verification;
use crate::sm3::{Digest, Sm3};

/// The signer ID that GB/T 35276 and every vendor default to, and that vpbox always uses for
/// its own signatures.
pub const DEFAULT_ID: &[u8] = b"1234567812345678";

/// The longest signer ID: ENTL is the ID's length in *bits* as 16 bits.
pub const MAX_ID_LEN: usize = 8191;

/// `id-ecPublicKey` (RFC 5480), the algorithm OpenSSL 3 writes for SM2 keys.
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The SM2 curve, `1.2.156.10197.1.301`; some tools also use it as the key algorithm.
pub const SM2_CURVE_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");

// Curve parameters a, b, Gx, Gy of GB/T 32918.5-2017 §3, as hashed into Z.
const CURVE_A: [u8; 32] = hex32("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC");
const CURVE_B: [u8; 32] = hex32("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93");
const GEN_X: [u8; 32] = hex32("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7");
const GEN_Y: [u8; 32] = hex32("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0");

pub(crate) const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not hex"),
        }
    }
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// `Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ Gx ‖ Gy ‖ xA ‖ yA)` (GB/T 32918.2-2016 §5.5).
pub fn z_value(id: &[u8], public: &PublicKey) -> Result<Digest, Error> {
    if id.len() > MAX_ID_LEN {
        return Err(Error::IdTooLong { len: id.len() });
    }
    // Cannot overflow: id.len() ≤ 8191, so the bit length fits 16 bits.
    let entl = u16::try_from(id.len() * 8).map_err(|_| Error::IdTooLong { len: id.len() })?;
    let point = public.to_sec1_uncompressed();
    let mut h = Sm3::new();
    h.update(entl.to_be_bytes())
        .update(id)
        .update(CURVE_A)
        .update(CURVE_B)
        .update(GEN_X)
        .update(GEN_Y)
        .update(&point[1..]);
    Ok(h.finalize())
}

/// `e = SM3(Z ‖ M)` for a message given in parts (GB/T 32918.2-2016 §6.1 A1–A2).
pub fn message_digest(z: &Digest, message: &[&[u8]]) -> Digest {
    let mut h = Sm3::new();
    h.update(z);
    for part in message {
        h.update(part);
    }
    h.finalize()
}

/// An SM2 private key, held in memory: for tests, client tools and the CA's software mode only.
/// Production keys live in an HSM (see [`crate::Signer`]).
///
/// The scalar and its derived inverse are zeroized on drop; `Debug` shows only the public key.
pub struct SecretKey {
    d: NonZeroScalar,
    /// (1 + d)⁻¹, precomputed for step A6.
    d1_inv: Scalar,
    public: PublicKey,
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, Error> {
        let d = NonZeroScalar::try_generate().map_err(|e| Error::Random(e.to_string()))?;
        Self::from_scalar(d)
    }

    /// A key from its 32-byte big-endian scalar; refuses 0, n−1 (for which 1 + d is not
    /// invertible) and values ≥ n.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let repr: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::InvalidPrivateKey(Reason::Length { expected: 32, got: bytes.len() })
        })?;
        let d = Option::<NonZeroScalar>::from(NonZeroScalar::from_repr(repr.into()))
            .ok_or(Error::InvalidPrivateKey(Reason::Range))?;
        Self::from_scalar(d)
    }

    fn from_scalar(d: NonZeroScalar) -> Result<Self, Error> {
        let d1_inv = Option::<Scalar>::from((*d + Scalar::ONE).invert())
            .ok_or(Error::InvalidPrivateKey(Reason::Range))?;
        let point = sm2::PublicKey::from_secret_scalar(&d);
        Ok(Self { d, d1_inv, public: PublicKey::from_point(point)? })
    }

    /// Reads a private key from PEM: PKCS#8 (`PRIVATE KEY`, as `openssl genpkey -algorithm SM2`
    /// writes) or SEC1 (`SM2 PRIVATE KEY`, as `openssl ec` writes SM2 keys, or `EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let label = pem_label(pem)
            .ok_or_else(|| Error::InvalidPrivateKey(Reason::Pem("no PEM header found".into())))?;
        match label {
            "PRIVATE KEY" => {
                let (_, der) = decode_pem(pem, Error::InvalidPrivateKey)?;
                Self::from_pkcs8_der(&der)
            }
            "EC PRIVATE KEY" | "SM2 PRIVATE KEY" => {
                let (_, der) = decode_pem(pem, Error::InvalidPrivateKey)?;
                let sec1 = sec1::EcPrivateKey::from_der(&der)
                    .map_err(|e| Error::InvalidPrivateKey(Reason::Der(e.to_string())))?;
                if let Some(curve) = sec1.parameters.and_then(|p| p.named_curve()) {
                    check_curve(curve)?;
                }
                let key = sm2::SecretKey::from_sec1_der(&der)
                    .map_err(|e| Error::InvalidPrivateKey(Reason::Der(e.to_string())))?;
                Self::from_scalar(key.to_nonzero_scalar())
            }
            "ENCRYPTED PRIVATE KEY" => Err(Error::InvalidPrivateKey(Reason::Pem(
                "encrypted PKCS#8 is not supported; keys that need a password belong in the HSM"
                    .into(),
            ))),
            "RSA PRIVATE KEY" => Err(Error::NotSm2 { found: "an RSA private key".into() }),
            "PUBLIC KEY" => Err(Error::InvalidPrivateKey(Reason::Pem(
                "this is a public key, not a private key".into(),
            ))),
            other => Err(Error::InvalidPrivateKey(Reason::Pem(format!(
                "unexpected PEM label {other:?}"
            )))),
        }
    }

    /// Reads a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let info = sm2::pkcs8::PrivateKeyInfoRef::from_der(der)
            .map_err(|e| Error::InvalidPrivateKey(Reason::Der(e.to_string())))?;
        check_algorithm(info.algorithm.oid, info.algorithm.parameters_oid().ok())?;
        let key = sm2::SecretKey::from_pkcs8_der(der)
            .map_err(|e| Error::InvalidPrivateKey(Reason::Der(e.to_string())))?;
        Self::from_scalar(key.to_nonzero_scalar())
    }

    /// The key as PKCS#8 DER, in memory that is zeroized on drop.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let doc = sm2::SecretKey::from(self.d)
            .to_pkcs8_der()
            .map_err(|e| Error::InvalidPrivateKey(Reason::Der(e.to_string())))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), zeroized on drop.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        sm2::SecretKey::from(self.d)
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| Error::InvalidPrivateKey(Reason::Der(e.to_string())))
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message` with signer ID `id`: `e = SM3(Z ‖ M)`, then [`Self::sign_digest`].
    pub fn sign(&self, id: &[u8], message: &[u8]) -> Result<Signature, Error> {
        let z = self.public.z(id)?;
        self.sign_digest(&message_digest(&z, &[message]))
    }

    /// Signs a pre-hash `e = SM3(Z ‖ M)` (GB/T 32918.2-2016 §6.1 A3–A7), the raw form HSMs
    /// offer. The nonce k is hedged: RFC 6979 over the key and `e`, mixed with 32 fresh random
    /// bytes, so neither a weak random source nor a fault leaks the key on its own.
    pub fn sign_digest(&self, e: &Digest) -> Result<Signature, Error> {
        let e_scalar = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(e.0));
        let mut extra = Zeroizing::new([0u8; 32]);
        crate::sm4::random(extra.as_mut())?;
        let d_repr = Zeroizing::new(self.d.to_repr());
        let mut kgen = rfc6979::KGenerator::<sm3::Sm3, U256>::new(
            &d_repr,
            &e.0,
            extra.as_ref(),
            &<Sm2 as Curve>::ORDER,
        );
        // Each retry is a ~2⁻²⁵⁶ event; the bound keeps the loop finite regardless.
        for _ in 0..8 {
            let mut k_bytes = Zeroizing::new(FieldBytes::default());
            kgen.fill_next_k(&mut k_bytes);
            let Some(mut k) = Option::<NonZeroScalar>::from(NonZeroScalar::from_repr(*k_bytes))
            else {
                continue;
            };
            let sig = sign_with_k(&self.d, &self.d1_inv, &e_scalar, &k);
            k.zeroize();
            if let Some(sig) = sig {
                return Ok(sig);
            }
        }
        Err(Error::DegenerateSignature)
    }
}

/// Steps A4–A7 with a given k. Returns `None` on the degenerate cases the standard says to
/// retry (r = 0, r + k = n, s = 0).
fn sign_with_k(d: &Scalar, d1_inv: &Scalar, e: &Scalar, k: &Scalar) -> Option<Signature> {
    let x1 = ProjectivePoint::mul_by_generator(k).to_affine().x();
    let r = *e + <Scalar as Reduce<FieldBytes>>::reduce(&x1);
    if bool::from(r.is_zero() | (r + k).is_zero()) {
        return None;
    }
    let s = *d1_inv * (*k - r * d);
    if bool::from(s.is_zero()) {
        return None;
    }
    sm2::dsa::Signature::from_scalars(r.to_repr(), s.to_repr()).ok().map(Signature)
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.d.zeroize();
        self.d1_inv.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("public", &self.public).finish_non_exhaustive()
    }
}

/// An SM2 public key, with the `Z` of the default ID cached (every vpbox signature uses it).
#[derive(Clone)]
pub struct PublicKey {
    point: sm2::PublicKey,
    /// `x ‖ y`, big-endian: what the verifier and its table cache are keyed by.
    xy: [u8; 64],
    default_z: Digest,
    /// [`Self::fingerprint`], taken once: a transaction's check compares it with the body's
    /// submitter on every verification.
    fingerprint: Digest,
}

impl PublicKey {
    fn from_point(point: sm2::PublicKey) -> Result<Self, Error> {
        // The identity cannot be encoded as SEC1 `04 ‖ x ‖ y`; the parsers never produce it.
        let encoded = point.to_sec1_point(false);
        let xy: [u8; 64] = encoded
            .as_bytes()
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or(Error::InvalidPublicKey(Reason::Range))?;
        let mut key =
            Self { point, xy, default_z: Digest::default(), fingerprint: Digest::default() };
        key.default_z = z_value(DEFAULT_ID, &key)?;
        key.fingerprint = crate::sm3::hash(key.to_spki_der());
        Ok(key)
    }

    /// A key from a SEC1 point: 65 bytes `04 ‖ x ‖ y` or 33 compressed bytes.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, Error> {
        let point = sm2::PublicKey::from_sec1_bytes(bytes)
            .map_err(|_| Error::InvalidPublicKey(Reason::Range))?;
        Self::from_point(point)
    }

    /// The uncompressed SEC1 point `04 ‖ x ‖ y`.
    pub fn to_sec1_uncompressed(&self) -> [u8; 65] {
        let encoded = self.point.to_sec1_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(encoded.as_bytes());
        out
    }

    /// Reads an SPKI public key from PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let (label, der) = decode_pem(pem, Error::InvalidPublicKey)?;
        match label.as_str() {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => Err(Error::NotSm2 { found: "an RSA public key".into() }),
            "CERTIFICATE" => Err(Error::InvalidPublicKey(Reason::Pem(
                "this is a certificate; extract its key with `openssl x509 -pubkey -noout`".into(),
            ))),
            other => Err(Error::InvalidPublicKey(Reason::Pem(format!(
                "expected PUBLIC KEY, found {other:?}"
            )))),
        }
    }

    /// Reads an SPKI DER public key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let spki = sm2::pkcs8::spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| Error::InvalidPublicKey(Reason::Der(e.to_string())))?;
        check_algorithm(spki.algorithm.oid, spki.algorithm.parameters_oid().ok())?;
        let point = sm2::PublicKey::from_public_key_der(der)
            .map_err(|e| Error::InvalidPublicKey(Reason::Der(e.to_string())))?;
        Self::from_point(point)
    }

    /// The key as SPKI DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        // Encoding a valid point cannot fail; an empty result would fail every later parse.
        self.point.to_public_key_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// The key as SPKI PEM.
    pub fn to_spki_pem(&self) -> String {
        self.point.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// SM3 of the SPKI DER: the fingerprint operators compare and configs pin.
    pub fn fingerprint(&self) -> Digest {
        self.fingerprint
    }

    /// `Z` for signer ID `id` (cached for [`DEFAULT_ID`]).
    pub fn z(&self, id: &[u8]) -> Result<Digest, Error> {
        if id == DEFAULT_ID { Ok(self.default_z) } else { z_value(id, self) }
    }

    /// Verifies `sig` over `message` with signer ID `id`.
    pub fn verify(&self, id: &[u8], message: &[u8], sig: &Signature) -> Verification {
        match self.z(id) {
            Ok(z) => self.verify_digest(&message_digest(&z, &[message]), sig),
            Err(_) => Verification::Invalid,
        }
    }

    /// Verifies `sig` over a pre-hash `e = SM3(Z ‖ M)` (GB/T 32918.2-2016 §7.1 B1–B7).
    /// B1–B2 hold by construction ([`Signature`] keeps r and s in [1, n−1]); B5 refuses
    /// t = 0; B6–B7 are [`crate::curve::check`] with `c = (r − e) mod n`.
    pub fn verify_digest(&self, e: &Digest, sig: &Signature) -> Verification {
        self.verify_with(e, sig, true)
    }

    /// [`Self::verify_digest`] as for a key never seen before: no per-key table is used or
    /// made. For the benchmark's first-sight figure.
    #[doc(hidden)]
    pub fn verify_digest_first_sight(&self, e: &Digest, sig: &Signature) -> Verification {
        self.verify_with(e, sig, false)
    }

    fn verify_with(&self, e: &Digest, sig: &Signature, tables: bool) -> Verification {
        let (r, s) = (*sig.0.r(), *sig.0.s());
        let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(e.0));
        let t = r + s;
        if bool::from(t.is_zero()) {
            return Verification::Invalid;
        }
        let c = r - e;
        let be = |k: Scalar| -> [u8; 32] { k.to_repr().into() };
        if crate::curve::check(&self.xy, &be(s), &be(t), &be(c), tables) {
            Verification::Valid
        } else {
            Verification::Invalid
        }
    }

    /// The same check by RustCrypto's generic verifier: the reference the tests and the
    /// benchmark hold [`Self::verify_digest`] to.
    #[doc(hidden)]
    pub fn verify_digest_reference(&self, e: &Digest, sig: &Signature) -> Verification {
        let Ok(verifying) = sm2::dsa::VerifyingKey::new("", self.point) else {
            return Verification::Invalid;
        };
        match verifying.verify_prehash(&e.0, &sig.0) {
            Ok(()) => Verification::Valid,
            Err(_) => Verification::Invalid,
        }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.point == other.point
    }
}

impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(sm3:{})", self.fingerprint())
    }
}

/// An SM2 signature `(r, s)`, both in [1, n−1].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(sm2::dsa::Signature);

impl Signature {
    /// Length of the raw `r ‖ s` form.
    pub const RAW_LEN: usize = 64;
    /// Longest DER form: two 33-byte INTEGERs and their headers.
    pub const DER_MAX_LEN: usize = 72;

    /// Parses strict DER `SEQUENCE { r INTEGER, s INTEGER }` (what OpenSSL writes).
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        if der.len() > Self::DER_MAX_LEN {
            return Err(Error::InvalidSignature(Reason::Length {
                expected: Self::DER_MAX_LEN,
                got: der.len(),
            }));
        }
        sm2::dsa::Signature::from_der(der).map(Self).map_err(|_| {
            Error::InvalidSignature(Reason::Der(
                "not SEQUENCE { r, s } with r, s in [1, n-1]".into(),
            ))
        })
    }

    /// The DER form.
    pub fn to_der(&self) -> Vec<u8> {
        self.0.to_der().to_vec()
    }

    /// Parses raw 64-byte `r ‖ s`.
    pub fn from_raw(raw: &[u8]) -> Result<Self, Error> {
        if raw.len() != Self::RAW_LEN {
            return Err(Error::InvalidSignature(Reason::Length {
                expected: Self::RAW_LEN,
                got: raw.len(),
            }));
        }
        sm2::dsa::Signature::from_slice(raw)
            .map(Self)
            .map_err(|_| Error::InvalidSignature(Reason::Range))
    }

    /// The raw 64-byte `r ‖ s` form.
    pub fn to_raw(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.0.to_bytes());
        out
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.to_raw()))
    }
}

fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = pem[start..].find("-----")?;
    Some(&pem[start..start + end])
}

fn decode_pem(pem: &str, wrap: fn(Reason) -> Error) -> Result<(String, Zeroizing<Vec<u8>>), Error> {
    let start =
        pem.find("-----BEGIN ").ok_or_else(|| wrap(Reason::Pem("no PEM header found".into())))?;
    let (label, der) = pem_rfc7468::decode_vec(&pem.as_bytes()[start..])
        .map_err(|e| wrap(Reason::Pem(e.to_string())))?;
    Ok((label.to_string(), Zeroizing::new(der)))
}

fn check_algorithm(alg: ObjectIdentifier, curve: Option<ObjectIdentifier>) -> Result<(), Error> {
    if alg != ID_EC_PUBLIC_KEY && alg != SM2_CURVE_OID {
        return Err(Error::NotSm2 { found: format!("{} ({alg})", oid_name(alg)) });
    }
    match curve {
        Some(curve) => check_curve(curve),
        None => Err(Error::NotSm2 { found: "an EC key without a named curve".into() }),
    }
}

fn check_curve(curve: ObjectIdentifier) -> Result<(), Error> {
    if curve == SM2_CURVE_OID {
        Ok(())
    } else {
        Err(Error::NotSm2 { found: format!("EC curve {} ({curve})", oid_name(curve)) })
    }
}

fn oid_name(oid: ObjectIdentifier) -> &'static str {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "rsaEncryption",
        "1.2.840.10045.2.1" => "id-ecPublicKey",
        "1.2.840.10045.3.1.7" => "prime256v1",
        "1.3.132.0.34" => "secp384r1",
        "1.3.132.0.35" => "secp521r1",
        "1.3.132.0.10" => "secp256k1",
        "1.3.101.112" => "Ed25519",
        "1.3.101.110" => "X25519",
        "1.2.840.10040.4.1" => "DSA",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GB/T 32918.5-2017 (GM/T 0003.5-2012) Annex A: the worked signature on the recommended
    // curve, message "message digest", ID "1234567812345678".
    const STD_D: &str = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
    const STD_PX: &str = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020";
    const STD_PY: &str = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
    const STD_Z: &str = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3";
    const STD_E: &str = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640";
    const STD_K: &str = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21";
    const STD_R: &str = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
    const STD_S: &str = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";

    fn std_key() -> SecretKey {
        SecretKey::from_bytes(&hex::decode(STD_D).unwrap()).unwrap()
    }

    #[test]
    fn standard_example_public_key_z_and_e() {
        let key = std_key();
        let point = key.public_key().to_sec1_uncompressed();
        assert_eq!(hex::encode_upper(&point[1..33]), STD_PX);
        assert_eq!(hex::encode_upper(&point[33..]), STD_PY);
        let z = key.public_key().z(DEFAULT_ID).unwrap();
        assert_eq!(z.to_hex().to_uppercase(), STD_Z);
        assert_eq!(z_value(DEFAULT_ID, key.public_key()).unwrap(), z, "cache equals fresh");
        let e = message_digest(&z, &[b"message digest"]);
        assert_eq!(e.to_hex().to_uppercase(), STD_E);
        // The fingerprint kept with the key is SM3 of its SPKI DER, whichever way it was made.
        let spki = key.public_key().to_spki_der();
        let fingerprint = crate::sm3::hash(&spki);
        assert_eq!(key.public_key().fingerprint(), fingerprint);
        assert_eq!(PublicKey::from_spki_der(&spki).unwrap().fingerprint(), fingerprint);
        assert_eq!(PublicKey::from_sec1(&point).unwrap().fingerprint(), fingerprint);
    }

    #[test]
    fn standard_example_signature_with_given_k() {
        let key = std_key();
        let e = Digest::from_hex(STD_E).unwrap();
        let e = <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(e.0));
        let k_bytes: [u8; 32] = hex::decode(STD_K).unwrap().try_into().unwrap();
        let k = Option::<Scalar>::from(Scalar::from_repr(k_bytes.into())).unwrap();
        let sig = sign_with_k(&key.d, &key.d1_inv, &e, &k).unwrap();
        assert_eq!(hex::encode_upper(sig.to_raw()), format!("{STD_R}{STD_S}"));
        assert_eq!(
            key.public_key().verify(DEFAULT_ID, b"message digest", &sig),
            Verification::Valid
        );
    }

    #[test]
    fn our_signatures_verify_and_tampering_fails() {
        let key = SecretKey::generate().unwrap();
        let sig = key.sign(DEFAULT_ID, b"slip").unwrap();
        let pk = key.public_key();
        assert_eq!(pk.verify(DEFAULT_ID, b"slip", &sig), Verification::Valid);
        assert_eq!(pk.verify(DEFAULT_ID, b"slap", &sig), Verification::Invalid);
        assert_eq!(pk.verify(b"other-id", b"slip", &sig), Verification::Invalid);
        let other = SecretKey::generate().unwrap();
        assert_eq!(other.public_key().verify(DEFAULT_ID, b"slip", &sig), Verification::Invalid);
    }

    #[test]
    fn hedged_signatures_differ_but_all_verify() {
        let key = std_key();
        let a = key.sign(DEFAULT_ID, b"m").unwrap();
        let b = key.sign(DEFAULT_ID, b"m").unwrap();
        assert_ne!(a, b, "fresh randomness goes into every k");
        assert!(key.public_key().verify(DEFAULT_ID, b"m", &b).is_valid());
    }

    #[test]
    fn encodings_round_trip() {
        let key = SecretKey::generate().unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SecretKey::from_pem(&pem).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let der = key.to_pkcs8_der().unwrap();
        assert_eq!(SecretKey::from_pkcs8_der(&der).unwrap().public_key(), key.public_key());

        let spki = key.public_key().to_spki_pem();
        assert_eq!(&PublicKey::from_pem(&spki).unwrap(), key.public_key());
        let sec1 = key.public_key().to_sec1_uncompressed();
        assert_eq!(&PublicKey::from_sec1(&sec1).unwrap(), key.public_key());

        let sig = key.sign(DEFAULT_ID, b"x").unwrap();
        assert_eq!(Signature::from_der(&sig.to_der()).unwrap(), sig);
        assert_eq!(Signature::from_raw(&sig.to_raw()).unwrap(), sig);
    }

    #[test]
    fn bad_encodings_are_errors() {
        assert!(matches!(SecretKey::from_pem("hello"), Err(Error::InvalidPrivateKey(_))));
        assert!(matches!(SecretKey::from_bytes(&[0u8; 32]), Err(Error::InvalidPrivateKey(_))));
        assert!(matches!(SecretKey::from_bytes(&[1u8; 31]), Err(Error::InvalidPrivateKey(_))));
        assert!(Signature::from_raw(&[0u8; 64]).is_err(), "r = s = 0 is out of range");
        assert!(Signature::from_raw(&[1u8; 63]).is_err());
        let key = SecretKey::generate().unwrap();
        let der = key.sign(DEFAULT_ID, b"x").unwrap().to_der();
        for cut in 0..der.len() {
            assert!(Signature::from_der(&der[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = der;
        trailing.push(0);
        assert!(Signature::from_der(&trailing).is_err(), "trailing byte");
        assert!(matches!(
            z_value(&[0u8; 8192], key.public_key()),
            Err(Error::IdTooLong { len: 8192 })
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = std_key();
        let shown = format!("{key:?}");
        assert!(!shown.to_uppercase().contains(&STD_D[..16]), "{shown}");
        assert!(shown.contains("PublicKey(sm3:"));
    }
}
