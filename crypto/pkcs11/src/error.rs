use cryptoki::error::RvError;

/// Everything that can go wrong talking to a token. Never carries a PIN or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The PKCS#11 module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    ModuleLoad {
        /// The module's path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No token matches the selector.
    #[error("no token with {0}")]
    TokenNotFound(String),
    /// A token with this label exists already.
    #[error("a token labelled {0:?} exists already")]
    TokenExists(String),
    /// More than one token matches the selector.
    #[error("{0} matches more than one token; select by serial")]
    AmbiguousToken(String),
    /// The PIN was refused. Not retried: retries lock the token.
    #[error("the token refused the PIN (not retried)")]
    PinIncorrect,
    /// The PIN is locked; a security officer must re-initialise it.
    #[error("the token's user PIN is locked; the security officer must reset it")]
    PinLocked,
    /// The PIN could not be read.
    #[error("cannot read the PIN: {0}")]
    PinSource(String),
    /// A key with this `CKA_ID` exists already; generation refuses to shadow it.
    #[error("a key with CKA_ID {0} exists already")]
    KeyExists(String),
    /// No key with this `CKA_ID`.
    #[error("no private key with CKA_ID {0}")]
    KeyNotFound(String),
    /// A key exists, but its attributes break the custody policy.
    #[error("key {id} refused: {problems}")]
    WeakKey {
        /// The key's `CKA_ID` in hex.
        id: String,
        /// The policy violations, comma-separated.
        problems: String,
    },
    /// The key's public point is not the one pinned in the configuration.
    #[error("key {id}: public key sm3:{found} is not the pinned sm3:{pinned}")]
    PinnedKeyMismatch {
        /// The key's `CKA_ID` in hex.
        id: String,
        /// The configured fingerprint.
        pinned: String,
        /// The token's fingerprint.
        found: String,
    },
    /// The profile cannot do what was asked (SoftHSM2 cannot sign SM2).
    #[error("profile {profile}: {what}")]
    Unsupported {
        /// The profile's name.
        profile: String,
        /// What it lacks.
        what: String,
    },
    /// A profile file is malformed, or none matches the token.
    #[error("vendor profile: {0}")]
    Profile(String),
    /// The token returned a signature that does not verify: never passed on.
    #[error("the token returned an SM2 signature that does not verify; refusing it")]
    BadSignatureFromToken,
    /// The token's answer could not be decoded.
    #[error("unexpected data from the token: {0}")]
    Malformed(String),
    /// A PKCS#11 call failed.
    #[error("PKCS#11 {function} failed: {rv}")]
    Pkcs11 {
        /// The function, e.g. `C_Sign`.
        function: String,
        /// The return value's name.
        rv: String,
        /// The return value, for classification.
        #[source]
        source: Option<cryptoki::error::Error>,
    },
}

impl Error {
    /// Errors after which reconnecting and retrying once may succeed (docs/reference/
    /// pkcs11-sm.md, "A long-running signer").
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::ObjectHandleInvalid
                    | RvError::KeyHandleInvalid
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::DeviceError
            )
        )
    }

    fn rv(&self) -> Option<RvError> {
        match self {
            Self::Pkcs11 { source: Some(cryptoki::error::Error::Pkcs11(rv, _)), .. } => Some(*rv),
            _ => None,
        }
    }
}

impl From<cryptoki::error::Error> for Error {
    fn from(e: cryptoki::error::Error) -> Self {
        match e {
            cryptoki::error::Error::Pkcs11(RvError::PinIncorrect, _) => Self::PinIncorrect,
            cryptoki::error::Error::Pkcs11(RvError::PinLocked, _) => Self::PinLocked,
            cryptoki::error::Error::Pkcs11(rv, f) => {
                Self::Pkcs11 { function: format!("{f:?}"), rv: format!("{rv:?}"), source: Some(e) }
            }
            other => {
                Self::Pkcs11 { function: "cryptoki".into(), rv: other.to_string(), source: None }
            }
        }
    }
}
