use core::fmt;

/// Everything that can go wrong in this crate.
///
/// Variants describe what was wrong with the input, never its secret content.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A private key could not be decoded.
    #[error("invalid SM2 private key: {0}")]
    InvalidPrivateKey(Reason),
    /// A public key could not be decoded.
    #[error("invalid SM2 public key: {0}")]
    InvalidPublicKey(Reason),
    /// The key decodes, but it belongs to another algorithm or curve.
    #[error("not an SM2 key: {found}")]
    NotSm2 {
        /// What the key is (an algorithm or curve OID, or a PEM label).
        found: String,
    },
    /// A signature could not be decoded.
    #[error("invalid SM2 signature encoding: {0}")]
    InvalidSignature(Reason),
    /// A signer ID longer than the 8,191 bytes that ENTL (16 bits of bit length) can express.
    #[error("SM2 signer ID is {len} bytes; at most 8191 are allowed")]
    IdTooLong {
        /// The ID's length in bytes.
        len: usize,
    },
    /// The signing equations hit a degenerate value (probability ~2⁻²⁵⁶); the caller may retry.
    #[error("SM2 signing produced a degenerate value")]
    DegenerateSignature,
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
    /// An SM4 key, IV or nonce of the wrong length.
    #[error("SM4 {what} must be {expected} bytes, got {got}")]
    BadLength {
        /// Which parameter.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The given length.
        got: usize,
    },
    /// Decryption failed: wrong key, tampered ciphertext, or bad padding.
    #[error("SM4 decryption failed (wrong key, or the data was altered)")]
    Decrypt,
    /// A signer backend (an HSM, a signer service) failed.
    #[error("signer failed: {0}")]
    Signer(String),
}

/// Why a decoder refused its input, without echoing the input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Not valid PEM, or the wrong PEM label.
    Pem(String),
    /// Not valid DER for the expected structure.
    Der(String),
    /// The wrong number of bytes.
    Length {
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// A value out of range (a scalar ≥ n or zero, a point not on the curve).
    Range,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem(m) => write!(f, "bad PEM ({m})"),
            Self::Der(m) => write!(f, "bad DER ({m})"),
            Self::Length { expected, got } => write!(f, "expected {expected} bytes, got {got}"),
            Self::Range => f.write_str("value out of range"),
        }
    }
}
