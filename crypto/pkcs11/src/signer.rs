use std::path::PathBuf;
use std::sync::Mutex;

use cryptoki::error::RvError;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use vpbox_sm::sm2::{PublicKey, Signature};
use vpbox_sm::sm3::Digest;
use vpbox_sm::{Signer, Verification};

use crate::keys;
use crate::token::OpenToken;
use crate::token::mechanism_type;
use crate::{Error, Module, Pin, Profile, SignatureEncoding, TokenSelector};

/// Where the signing key is and how to reach it.
#[derive(Debug)]
pub struct SignerConfig {
    /// The PKCS#11 module, loaded by path.
    pub module: PathBuf,
    /// The token, by label or serial.
    pub token: TokenSelector,
    /// The key's `CKA_ID`.
    pub key_id: Vec<u8>,
    /// The user PIN.
    pub pin: Pin,
    /// A built-in profile by name; `None` picks it from the token's manufacturer ID.
    pub profile: Option<String>,
    /// The SM3 fingerprint (of the SPKI) the key must have; `None` trusts the token's key on
    /// first use (for `vpbox hsm` tools, never for a node).
    pub pinned: Option<Digest>,
    /// Sessions kept open for concurrent signing.
    pub sessions: usize,
}

struct Conn {
    slot: Slot,
    key: ObjectHandle,
}

/// An SM2 [`Signer`] whose key lives in a PKCS#11 token.
///
/// One `C_Login` for the process; a pool of sessions, one per concurrent signature; `e` computed
/// here; the raw SM2 mechanism of the profile; every signature verified in software before it
/// is returned. On session, handle and device errors it reconnects (finding the token again by
/// label or serial, logging in again, finding the key again and re-checking its public key) and
/// retries once; PIN errors fail closed at once.
pub struct Pkcs11Signer {
    module: Module,
    config: SignerConfig,
    profile: Profile,
    mechanism: MechanismType,
    public: PublicKey,
    conn: Mutex<Conn>,
    pool: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("module", &self.module.path())
            .field("token", &self.config.token)
            .field("key_id", &hex::encode(&self.config.key_id))
            .field("profile", &self.profile.name)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Loads the module, finds the token and the key, logs in, audits the key's attributes and
    /// public point, and checks the token really signs (one test signature, verified).
    pub fn open(config: SignerConfig) -> Result<Self, Error> {
        Self::open_in(Module::load(&config.module)?, config)
    }

    /// As [`Self::open`], in a module already loaded (several keys share one module;
    /// `config.module` is then informational).
    pub fn open_in(module: Module, config: SignerConfig) -> Result<Self, Error> {
        let OpenToken { module, slot, profile, .. } =
            OpenToken::in_module(module, &config.token, config.profile.as_deref())?;
        let code = profile.sign_mechanism()?;
        if !module.supports(slot, code) {
            return Err(Error::Unsupported {
                profile: profile.name,
                what: format!("the token does not offer mechanism 0x{code:x}"),
            });
        }
        let mechanism = mechanism_type(code)?;
        let session = module.context().open_ro_session(slot)?;
        login(&session, &config.pin)?;
        let (key, public) = audit_key(&session, &profile, &config)?;
        let signer = Self {
            module,
            profile,
            mechanism,
            public,
            conn: Mutex::new(Conn { slot, key }),
            pool: Mutex::new(vec![session]),
            config,
        };
        signer.self_test()?;
        Ok(signer)
    }

    /// The profile in use.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Signs a fixed self-test payload in the `SELFTEST` domain and verifies it: the health
    /// check (session state alone proves nothing after a token wipe).
    pub fn self_test(&self) -> Result<(), Error> {
        let e = vpbox_sm::Domain::SELFTEST.digest(&self.public, b"vpbox signer self-test");
        self.sign_digest_checked(&e).map(|_| ())
    }

    fn sign_digest_checked(&self, e: &Digest) -> Result<Signature, Error> {
        match self.try_sign(e) {
            Err(err) if err.is_retryable() => {
                self.reconnect_patiently()?;
                self.try_sign(e)
            }
            other => other,
        }
    }

    /// The signature is retried once; the reconnect before it may itself meet the device
    /// still resetting, so it gets a few attempts with backoff — for the retryable errors only.
    /// A PIN error ends it at once (a retry loop would lock the token).
    fn reconnect_patiently(&self) -> Result<(), Error> {
        let mut last = None;
        for backoff_ms in [0u64, 20, 100, 500] {
            std::thread::sleep(std::time::Duration::from_millis(backoff_ms));
            match self.reconnect() {
                Ok(()) => return Ok(()),
                Err(err) if err.is_retryable() => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| Error::Malformed("reconnect failed".into())))
    }

    fn try_sign(&self, e: &Digest) -> Result<Signature, Error> {
        let key = self.lock_conn()?.key;
        let session = self.take_session()?;
        let mechanism =
            Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(self.mechanism, None));
        let result = session.sign(&mechanism, key, e.as_bytes());
        match result {
            Ok(bytes) => {
                self.return_session(session);
                let sig = match self.profile.signature_encoding {
                    SignatureEncoding::Raw => Signature::from_raw(&bytes),
                    SignatureEncoding::Der => Signature::from_der(&bytes),
                }
                .map_err(|err| Error::Malformed(format!("signature from the token: {err}")))?;
                match self.public.verify_digest(e, &sig) {
                    Verification::Valid => Ok(sig),
                    Verification::Invalid => Err(Error::BadSignatureFromToken),
                }
            }
            // A session that failed is not returned to the pool: the next call opens a fresh one.
            Err(err) => Err(err.into()),
        }
    }

    fn take_session(&self) -> Result<Session, Error> {
        if let Some(s) = self.pool.lock().map_err(|_| poisoned())?.pop() {
            return Ok(s);
        }
        let slot = self.lock_conn()?.slot;
        Ok(self.module.context().open_ro_session(slot)?)
    }

    fn return_session(&self, session: Session) {
        if let Ok(mut pool) = self.pool.lock() {
            if pool.len() < self.config.sessions.max(1) {
                pool.push(session);
            }
        }
    }

    fn lock_conn(&self) -> Result<std::sync::MutexGuard<'_, Conn>, Error> {
        self.conn.lock().map_err(|_| poisoned())
    }

    /// Drops every session, finds the token again (its slot may have changed), logs in, finds
    /// the key again and re-checks it against the pinned public key.
    fn reconnect(&self) -> Result<(), Error> {
        let mut conn = self.lock_conn()?;
        self.pool.lock().map_err(|_| poisoned())?.clear();
        let (slot, _) = self.module.find(&self.config.token)?;
        let session = self.module.context().open_ro_session(slot)?;
        login(&session, &self.config.pin)?;
        let (key, public) = audit_key(&session, &self.profile, &self.config)?;
        if public != self.public {
            return Err(Error::PinnedKeyMismatch {
                id: hex::encode(&self.config.key_id),
                pinned: self.public.fingerprint().to_hex(),
                found: public.fingerprint().to_hex(),
            });
        }
        *conn = Conn { slot, key };
        self.pool.lock().map_err(|_| poisoned())?.push(session);
        Ok(())
    }
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_digest(&self, e: &Digest) -> Result<Signature, vpbox_sm::Error> {
        self.sign_digest_checked(e).map_err(|err| vpbox_sm::Error::Signer(err.to_string()))
    }
}

fn poisoned() -> Error {
    Error::Malformed("signer state poisoned by a panic".into())
}

/// Logs the user in once; an application already logged in is fine. PIN errors are returned
/// as they are, never retried.
pub(crate) fn login(session: &Session, pin: &Pin) -> Result<(), Error> {
    match session.login(UserType::User, Some(&pin.auth())) {
        Ok(()) => Ok(()),
        Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Finds the key, refuses it if its attributes break the custody policy or its public key is
/// not the pinned one.
fn audit_key(
    session: &Session,
    profile: &Profile,
    config: &SignerConfig,
) -> Result<(ObjectHandle, PublicKey), Error> {
    let key = keys::find_private(session, profile, &config.key_id)?;
    let report = keys::inspect(session, key)?;
    if !report.problems.is_empty() {
        return Err(Error::WeakKey { id: report.id, problems: report.problems.join(", ") });
    }
    let public = keys::public_key(session, profile, &config.key_id)?;
    if let Some(pinned) = config.pinned {
        if public.fingerprint() != pinned {
            return Err(Error::PinnedKeyMismatch {
                id: hex::encode(&config.key_id),
                pinned: pinned.to_hex(),
                found: public.fingerprint().to_hex(),
            });
        }
    }
    Ok((key, public))
}
