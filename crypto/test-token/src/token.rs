//! The safe core: slots, tokens, sessions, login state and the operations of PKCS#11 v2.40, with
//! the configured faults. The FFI layer turns C arguments into calls on [`Module`] and its
//! results back into C; nothing here touches a raw pointer.

use std::collections::BTreeMap;
use std::time::Duration;

use cryptoki_sys::*;
use sm2::pkcs8::DecodePrivateKey as _;
use vpbox_sm::sm2::{self as vsm2, DEFAULT_ID, PublicKey, SecretKey, Signature};
use vpbox_sm::sm3::{self, Digest};
use vpbox_sm::sm4::Sm4Key;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::Error;
use crate::mechanism::{self, CKM_SM2_KEY_PAIR_GEN, CKM_SM3, SignMechanism};
use crate::object::{self, Object, Template};
use crate::store::{self, PinRecord, Store, StoredObject, TokenFile};

/// `CK_INFO.manufacturerID`.
pub const LIBRARY_MANUFACTURER: &str = "vpbox test token";
/// `CK_INFO.libraryDescription` (32 bytes at most).
pub const LIBRARY_DESCRIPTION: &str = "Sansec-style SM2 PKCS#11 token";
/// `CK_TOKEN_INFO.manufacturerID`: what a signer selects its vendor profile by.
pub const TOKEN_MANUFACTURER: &str = "vpbox-sansec-compatible";
/// `CK_TOKEN_INFO.model`.
pub const TOKEN_MODEL: &str = "TESTTOKEN";
/// PIN length bounds in bytes.
pub const PIN_LEN: std::ops::RangeInclusive<usize> = 4..=64;
/// Open sessions across all slots, at most.
pub const SESSIONS_MAX: usize = 4096;

const ROLE_SO: &str = "so";
const ROLE_USER: &str = "user";

/// What a call that returns bytes produced, under the two-call convention (v2.40 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The caller passed no buffer: here is the length it needs.
    Length(usize),
    /// The caller's buffer is too small: this many bytes are needed.
    TooSmall(usize),
    /// The result; the operation is finished.
    Bytes(Vec<u8>),
}

/// Hands out `bytes` to a buffer of `capacity` (`None` for a null buffer); whether the
/// operation is finished follows from the variant.
fn deliver(bytes: &[u8], capacity: Option<usize>) -> Output {
    match capacity {
        None => Output::Length(bytes.len()),
        Some(c) if c < bytes.len() => Output::TooSmall(bytes.len()),
        Some(_) => Output::Bytes(bytes.to_vec()),
    }
}

/// Who is logged in to a token, with what that unlocked.
enum Login {
    Public,
    So { master: Sm4Key },
    User { master: Sm4Key, keys: BTreeMap<CK_OBJECT_HANDLE, SecretKey> },
}

/// One slot's token.
struct Token {
    store: Store,
    file: TokenFile,
    /// Token objects (mirrored in `file`) and session objects.
    objects: BTreeMap<CK_OBJECT_HANDLE, Object>,
    slot_id: CK_SLOT_ID,
    serial: String,
    login: Login,
}

/// An operation in progress on a session.
struct SignOp {
    mechanism: SignMechanism,
    key: CK_OBJECT_HANDLE,
    data: Vec<u8>,
    multipart: bool,
    /// Computed on the first C_Sign / C_SignFinal, kept for the call that fetches it.
    signature: Option<Vec<u8>>,
}

struct VerifyOp {
    mechanism: SignMechanism,
    key: PublicKey,
    data: Vec<u8>,
}

struct DigestOp {
    data: Vec<u8>,
    multipart: bool,
}

struct Session {
    slot: usize,
    rw: bool,
    find: Option<std::vec::IntoIter<CK_OBJECT_HANDLE>>,
    sign: Option<SignOp>,
    verify: Option<VerifyOp>,
    digest: Option<DigestOp>,
}

/// The module's whole state: what C_Initialize creates and C_Finalize drops.
pub struct Module {
    config: Config,
    tokens: Vec<Token>,
    sessions: BTreeMap<CK_SESSION_HANDLE, Session>,
    next_session: CK_SESSION_HANDLE,
    counters: Counters,
}

/// The fault-injection counters.
#[derive(Default)]
struct Counters {
    /// Session operations since the last (injected) reset.
    operations: u64,
    reset_pending: bool,
    /// Signature computations, for the device-error fault.
    signatures: u64,
    latency_pending: bool,
}

/// Looks up a session for an operation, counting it towards `reset_every` (which takes effect
/// in [`Module::after_call`], once the call has returned).
fn enter<'a>(
    sessions: &'a mut BTreeMap<CK_SESSION_HANDLE, Session>,
    tokens: &'a mut [Token],
    counters: &mut Counters,
    reset_every: u64,
    handle: CK_SESSION_HANDLE,
) -> Result<(&'a mut Session, &'a mut Token), Error> {
    let session = sessions.get_mut(&handle).ok_or(Error::SessionHandleInvalid)?;
    let token = tokens.get_mut(session.slot).ok_or(Error::GeneralError)?;
    counters.operations += 1;
    if reset_every != 0 && counters.operations >= reset_every {
        counters.reset_pending = true;
    }
    Ok((session, token))
}

fn pad<const N: usize>(text: &str) -> [CK_UTF8CHAR; N] {
    let mut out = [b' '; N];
    let bytes = text.as_bytes();
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

fn check_pin(pin: &[u8]) -> Result<(), Error> {
    if PIN_LEN.contains(&pin.len()) { Ok(()) } else { Err(Error::PinLenRange) }
}

/// The scalar of a key, for sealing or for `CKA_VALUE` of an extractable key.
fn scalar(key: &SecretKey) -> Result<Zeroizing<Vec<u8>>, Error> {
    let der = key.to_pkcs8_der().map_err(|_| Error::GeneralError)?;
    let key = sm2::SecretKey::from_pkcs8_der(&der).map_err(|_| Error::GeneralError)?;
    Ok(Zeroizing::new(key.to_bytes().to_vec()))
}

fn public_key(object: &Object) -> Result<PublicKey, Error> {
    let point = object.attributes.get(&CKA_EC_POINT).ok_or(Error::KeyTypeInconsistent)?;
    match point.as_slice() {
        [0x04, 0x41, sec1 @ ..] => PublicKey::from_sec1(sec1).map_err(|_| Error::GeneralError),
        _ => Err(Error::GeneralError),
    }
}

/// `e` for a signature mechanism: the input itself for the raw mechanism, else `SM3(Z‖M)`
/// with Z over the default ID (GB/T 32918.2 §6.1 A1–A2).
fn message_digest(mechanism: SignMechanism, key: &PublicKey, data: &[u8]) -> Result<Digest, Error> {
    match mechanism {
        SignMechanism::Raw => {
            let e: [u8; 32] = data.try_into().map_err(|_| Error::DataLenRange)?;
            Ok(Digest(e))
        }
        SignMechanism::Sm3Raw | SignMechanism::Sm3Der => {
            let z = key.z(DEFAULT_ID).map_err(|_| Error::GeneralError)?;
            Ok(vsm2::message_digest(&z, &[data]))
        }
    }
}

impl Token {
    fn load(config: &Config, index: usize) -> Result<Self, Error> {
        let store = Store::open(&config.token_dir.join(format!("slot-{index}")))?;
        let file = store.load()?;
        let objects = file
            .objects
            .iter()
            .map(|(handle, stored)| stored.to_object().map(|o| (*handle, o)))
            .collect::<Result<_, _>>()?;
        let mut seed = store.dir().into_os_string().into_encoded_bytes();
        seed.extend_from_slice(format!("/{index}").as_bytes());
        let serial = sm3::hash(&seed).to_hex()[..16].to_uppercase();
        // Index in the low 4 bits, initialisation count above: re-initialising the token gives
        // it a new slot ID from the next C_Initialize on, as SoftHSM2 does.
        let slot_id = (file.generation << 4) | index as CK_SLOT_ID;
        Ok(Self { store, file, objects, slot_id, serial, login: Login::Public })
    }

    fn initialized(&self) -> bool {
        self.file.label.is_some()
    }

    fn user_logged_in(&self) -> bool {
        matches!(self.login, Login::User { .. })
    }

    fn master(&self) -> Option<&Sm4Key> {
        match &self.login {
            Login::Public => None,
            Login::So { master } | Login::User { master, .. } => Some(master),
        }
    }

    fn pin_locked(&self, lockout: u32) -> bool {
        self.file.user_pin_failures >= lockout
    }

    fn visible(&self, handle: CK_OBJECT_HANDLE) -> Option<&Object> {
        self.objects.get(&handle).filter(|o| !o.is_private() || self.user_logged_in())
    }

    fn save(&mut self) -> Result<(), Error> {
        self.file.objects = self
            .objects
            .iter()
            .filter(|(_, o)| o.session.is_none())
            .map(|(h, o)| (*h, StoredObject::from_object(o)))
            .collect();
        self.store.save(&self.file)
    }

    fn allocate_handle(&mut self) -> CK_OBJECT_HANDLE {
        self.file.next_handle = self.file.next_handle.max(1);
        let handle = self.file.next_handle;
        self.file.next_handle += 1;
        handle
    }

    /// Checks a user PIN, counting failures; the counter is persisted before answering.
    fn check_user_pin(&mut self, pin: &[u8], lockout: u32) -> Result<Sm4Key, Error> {
        let record = self.file.user.as_ref().ok_or(Error::UserPinNotInitialized)?;
        if self.pin_locked(lockout) {
            return Err(Error::PinLocked);
        }
        match record.open(pin, ROLE_USER) {
            Ok(master) => {
                if self.file.user_pin_failures != 0 {
                    self.file.user_pin_failures = 0;
                    self.save()?;
                }
                Ok(master)
            }
            Err(Error::PinIncorrect) => {
                self.file.user_pin_failures = self.file.user_pin_failures.saturating_add(1);
                self.save()?;
                Err(Error::PinIncorrect)
            }
            Err(e) => Err(e),
        }
    }

    fn token_info(&self, lockout: u32, sessions: (usize, usize)) -> CK_TOKEN_INFO {
        let mut flags = CKF_LOGIN_REQUIRED;
        if self.initialized() {
            flags |= CKF_TOKEN_INITIALIZED;
        }
        if self.file.user.is_some() {
            flags |= CKF_USER_PIN_INITIALIZED;
        }
        let failures = self.file.user_pin_failures;
        if failures >= lockout {
            flags |= CKF_USER_PIN_LOCKED;
        } else if failures > 0 {
            flags |= CKF_USER_PIN_COUNT_LOW;
            if failures + 1 == lockout {
                flags |= CKF_USER_PIN_FINAL_TRY;
            }
        }
        let count = |n: usize| CK_ULONG::try_from(n).unwrap_or(CK_UNAVAILABLE_INFORMATION);
        CK_TOKEN_INFO {
            label: pad(self.file.label.as_deref().unwrap_or("")),
            manufacturerID: pad(TOKEN_MANUFACTURER),
            model: pad(TOKEN_MODEL),
            serialNumber: pad(&self.serial),
            flags,
            ulMaxSessionCount: count(SESSIONS_MAX),
            ulSessionCount: count(sessions.0),
            ulMaxRwSessionCount: count(SESSIONS_MAX),
            ulRwSessionCount: count(sessions.1),
            ulMaxPinLen: count(*PIN_LEN.end()),
            ulMinPinLen: count(*PIN_LEN.start()),
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: CK_VERSION { major: 1, minor: 0 },
            firmwareVersion: CK_VERSION { major: 1, minor: 0 },
            utcTime: [b' '; 16],
        }
    }
}

impl Module {
    /// Loads every slot's token from the configured directory.
    pub fn load(config: Config) -> Result<Self, Error> {
        let tokens =
            (0..config.slots).map(|i| Token::load(&config, i)).collect::<Result<_, _>>()?;
        Ok(Self {
            config,
            tokens,
            sessions: BTreeMap::new(),
            next_session: 1,
            counters: Counters::default(),
        })
    }

    /// Called by the FFI layer after every call: carries out a due device reset and returns
    /// the latency to add (outside the lock) if the call computed a signature.
    pub fn after_call(&mut self) -> Option<Duration> {
        if self.counters.reset_pending {
            self.reset();
        }
        let latency = std::mem::take(&mut self.counters.latency_pending)
            .then(|| self.config.faults.latency());
        latency.filter(|d| !d.is_zero())
    }

    /// An injected device reset: every session is gone and every login lost.
    fn reset(&mut self) {
        self.sessions.clear();
        for token in &mut self.tokens {
            token.objects.retain(|_, o| o.session.is_none());
            token.login = Login::Public;
        }
        self.counters.operations = 0;
        self.counters.reset_pending = false;
    }

    /// [`enter`] for calls that need nothing else of the module.
    fn enter(&mut self, handle: CK_SESSION_HANDLE) -> Result<(&mut Session, &mut Token), Error> {
        let every = self.config.faults.reset_every;
        enter(&mut self.sessions, &mut self.tokens, &mut self.counters, every, handle)
    }

    fn slot_index(&self, slot_id: CK_SLOT_ID) -> Result<usize, Error> {
        self.tokens.iter().position(|t| t.slot_id == slot_id).ok_or(Error::SlotIdInvalid)
    }

    fn session_counts(&self, slot: usize) -> (usize, usize) {
        let mine = self.sessions.values().filter(|s| s.slot == slot);
        let rw = mine.clone().filter(|s| s.rw).count();
        (mine.count(), rw)
    }

    /// C_GetInfo.
    pub fn info() -> CK_INFO {
        CK_INFO {
            cryptokiVersion: CK_VERSION { major: 2, minor: 40 },
            manufacturerID: pad(LIBRARY_MANUFACTURER),
            flags: 0,
            libraryDescription: pad(LIBRARY_DESCRIPTION),
            libraryVersion: CK_VERSION { major: 0, minor: 1 },
        }
    }

    /// C_GetSlotList: every slot holds a token.
    pub fn slot_list(&self) -> Vec<CK_SLOT_ID> {
        self.tokens.iter().map(|t| t.slot_id).collect()
    }

    /// C_GetSlotInfo.
    pub fn slot_info(&self, slot_id: CK_SLOT_ID) -> Result<CK_SLOT_INFO, Error> {
        let index = self.slot_index(slot_id)?;
        Ok(CK_SLOT_INFO {
            slotDescription: pad(&format!("vpbox test token slot {index}")),
            manufacturerID: pad(LIBRARY_MANUFACTURER),
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: CK_VERSION { major: 1, minor: 0 },
            firmwareVersion: CK_VERSION { major: 1, minor: 0 },
        })
    }

    /// C_GetTokenInfo.
    pub fn token_info(&self, slot_id: CK_SLOT_ID) -> Result<CK_TOKEN_INFO, Error> {
        let index = self.slot_index(slot_id)?;
        let counts = self.session_counts(index);
        Ok(self.tokens[index].token_info(self.config.faults.pin_lockout, counts))
    }

    /// C_GetMechanismList.
    pub fn mechanisms(&self, slot_id: CK_SLOT_ID) -> Result<&'static [CK_MECHANISM_TYPE], Error> {
        self.slot_index(slot_id)?;
        Ok(&mechanism::ALL)
    }

    /// C_GetMechanismInfo.
    pub fn mechanism_info(
        &self,
        slot_id: CK_SLOT_ID,
        code: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO, Error> {
        self.slot_index(slot_id)?;
        mechanism::info(code).ok_or(Error::MechanismInvalid)
    }

    /// C_InitToken: sets the label and SO PIN and wipes every object; needs the old SO PIN
    /// once the token was initialised.
    pub fn init_token(
        &mut self,
        slot_id: CK_SLOT_ID,
        so_pin: &[u8],
        label: &str,
    ) -> Result<(), Error> {
        let index = self.slot_index(slot_id)?;
        if self.session_counts(index).0 != 0 {
            return Err(Error::SessionExists);
        }
        check_pin(so_pin)?;
        let token = &mut self.tokens[index];
        if let Some(so) = &token.file.so {
            so.open(so_pin, ROLE_SO)?;
        }
        let master = Sm4Key::generate().map_err(|_| Error::FunctionFailed)?;
        token.file = TokenFile {
            generation: token.file.generation + 1,
            label: Some(label.trim_end_matches(' ').to_owned()),
            so: Some(PinRecord::new(so_pin, &master, ROLE_SO)?),
            ..TokenFile::default()
        };
        token.objects.clear();
        token.login = Login::Public;
        token.save()
    }

    /// C_OpenSession.
    pub fn open_session(
        &mut self,
        slot_id: CK_SLOT_ID,
        flags: CK_FLAGS,
    ) -> Result<CK_SESSION_HANDLE, Error> {
        let slot = self.slot_index(slot_id)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(Error::ParallelNotSupported);
        }
        let token = &self.tokens[slot];
        if !token.initialized() {
            return Err(Error::TokenNotRecognized);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && matches!(token.login, Login::So { .. }) {
            return Err(Error::SoSessionExists);
        }
        if self.sessions.len() >= SESSIONS_MAX {
            return Err(Error::SessionCount);
        }
        let handle = self.next_session;
        self.next_session += 1;
        let session = Session { slot, rw, find: None, sign: None, verify: None, digest: None };
        self.sessions.insert(handle, session);
        Ok(handle)
    }

    /// C_CloseSession: its session objects go; the last session's close logs out.
    pub fn close_session(&mut self, handle: CK_SESSION_HANDLE) -> Result<(), Error> {
        let session = self.sessions.remove(&handle).ok_or(Error::SessionHandleInvalid)?;
        let token = self.tokens.get_mut(session.slot).ok_or(Error::GeneralError)?;
        token.objects.retain(|_, o| o.session != Some(handle));
        if !self.sessions.values().any(|s| s.slot == session.slot) {
            token.login = Login::Public;
        }
        Ok(())
    }

    /// C_CloseAllSessions.
    pub fn close_all_sessions(&mut self, slot_id: CK_SLOT_ID) -> Result<(), Error> {
        let slot = self.slot_index(slot_id)?;
        let mine: Vec<_> =
            self.sessions.iter().filter(|(_, s)| s.slot == slot).map(|(h, _)| *h).collect();
        for handle in mine {
            self.close_session(handle)?;
        }
        self.tokens[slot].login = Login::Public;
        Ok(())
    }

    /// C_GetSessionInfo.
    pub fn session_info(&mut self, handle: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO, Error> {
        let (session, token) = self.enter(handle)?;
        let state = match (&token.login, session.rw) {
            (Login::Public, false) => CKS_RO_PUBLIC_SESSION,
            (Login::Public, true) => CKS_RW_PUBLIC_SESSION,
            (Login::User { .. }, false) => CKS_RO_USER_FUNCTIONS,
            (Login::User { .. }, true) => CKS_RW_USER_FUNCTIONS,
            (Login::So { .. }, _) => CKS_RW_SO_FUNCTIONS,
        };
        let mut flags = CKF_SERIAL_SESSION;
        if session.rw {
            flags |= CKF_RW_SESSION;
        }
        Ok(CK_SESSION_INFO { slotID: token.slot_id, state, flags, ulDeviceError: 0 })
    }

    /// C_Login. A wrong user PIN counts towards the lockout; at `pin_lockout` consecutive
    /// failures every later login, even with the right PIN, is `CKR_PIN_LOCKED`.
    pub fn login(
        &mut self,
        handle: CK_SESSION_HANDLE,
        user: CK_USER_TYPE,
        pin: &[u8],
    ) -> Result<(), Error> {
        let lockout = self.config.faults.pin_lockout;
        let (_, token) = self.enter(handle)?;
        let slot_id = token.slot_id;
        match (user, &token.login) {
            (CKU_SO | CKU_USER, Login::Public) => {}
            (CKU_SO, Login::So { .. }) | (CKU_USER, Login::User { .. }) => {
                return Err(Error::UserAlreadyLoggedIn);
            }
            (CKU_SO | CKU_USER, _) => return Err(Error::AnotherUserLoggedIn),
            (CKU_CONTEXT_SPECIFIC, _) => return Err(Error::OperationNotInitialized),
            _ => return Err(Error::UserTypeInvalid),
        }
        if user == CKU_SO {
            let slot = self.slot_index(slot_id)?;
            if self.sessions.values().any(|s| s.slot == slot && !s.rw) {
                return Err(Error::SessionReadOnlyExists);
            }
            let token = &mut self.tokens[slot];
            let record = token.file.so.as_ref().ok_or(Error::TokenNotRecognized)?;
            let master = record.open(pin, ROLE_SO)?;
            token.login = Login::So { master };
            return Ok(());
        }
        let master = token.check_user_pin(pin, lockout)?;
        let mut keys = BTreeMap::new();
        for (handle, object) in &token.objects {
            if let Some(sealed) = &object.sealed {
                let scalar = store::open_secret(&master, *handle, sealed)?;
                keys.insert(
                    *handle,
                    SecretKey::from_bytes(&scalar).map_err(|_| Error::GeneralError)?,
                );
            }
        }
        token.login = Login::User { master, keys };
        Ok(())
    }

    /// C_Logout: decrypted keys are dropped (and zeroized).
    pub fn logout(&mut self, handle: CK_SESSION_HANDLE) -> Result<(), Error> {
        let (_, token) = self.enter(handle)?;
        if matches!(token.login, Login::Public) {
            return Err(Error::UserNotLoggedIn);
        }
        token.login = Login::Public;
        Ok(())
    }

    /// C_InitPIN: the SO sets the user PIN, which also clears a lockout.
    pub fn init_pin(&mut self, handle: CK_SESSION_HANDLE, pin: &[u8]) -> Result<(), Error> {
        let (session, token) = self.enter(handle)?;
        let Login::So { master } = &token.login else {
            return Err(Error::UserNotLoggedIn);
        };
        if !session.rw {
            return Err(Error::SessionReadOnly);
        }
        check_pin(pin)?;
        token.file.user = Some(PinRecord::new(pin, master, ROLE_USER)?);
        token.file.user_pin_failures = 0;
        token.save()
    }

    /// C_SetPIN: changes the logged-in SO's PIN, else the user's (rewrapping the master key
    /// the private keys are sealed under).
    pub fn set_pin(
        &mut self,
        handle: CK_SESSION_HANDLE,
        old: &[u8],
        new: &[u8],
    ) -> Result<(), Error> {
        let lockout = self.config.faults.pin_lockout;
        let (session, token) = self.enter(handle)?;
        if !session.rw {
            return Err(Error::SessionReadOnly);
        }
        check_pin(new)?;
        if matches!(token.login, Login::So { .. }) {
            let master = token.file.so.as_ref().ok_or(Error::GeneralError)?.open(old, ROLE_SO)?;
            token.file.so = Some(PinRecord::new(new, &master, ROLE_SO)?);
        } else {
            let master = token.check_user_pin(old, lockout)?;
            token.file.user = Some(PinRecord::new(new, &master, ROLE_USER)?);
        }
        token.save()
    }

    /// C_GenerateKeyPair with `CKM_SM2_KEY_PAIR_GEN`; needs the user logged in, since the
    /// private key is sealed under the master key that login unlocks.
    pub fn generate_key_pair(
        &mut self,
        handle: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        public_template: &Template,
        private_template: &Template,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), Error> {
        let (session, token) = self.enter(handle)?;
        if mechanism != CKM_SM2_KEY_PAIR_GEN {
            return Err(Error::MechanismInvalid);
        }
        if !token.user_logged_in() {
            return Err(Error::UserNotLoggedIn);
        }
        let key = SecretKey::generate().map_err(|_| Error::FunctionFailed)?;
        let point = key.public_key().to_sec1_uncompressed();
        let (public, private) = object::sm2_key_pair(public_template, private_template, &point)?;
        let mut public = Object::new(public);
        let mut private = Object::new(private);
        if (public.is_token() || private.is_token()) && !session.rw {
            return Err(Error::SessionReadOnly);
        }
        let public_handle = token.allocate_handle();
        let private_handle = token.allocate_handle();
        let master = token.master().ok_or(Error::UserNotLoggedIn)?;
        private.sealed = Some(store::seal_secret(master, private_handle, &scalar(&key)?)?);
        for object in [&mut public, &mut private] {
            if !object.is_token() {
                object.session = Some(handle);
            }
        }
        token.objects.insert(public_handle, public);
        token.objects.insert(private_handle, private);
        if let Login::User { keys, .. } = &mut token.login {
            keys.insert(private_handle, key);
        }
        token.save()?;
        Ok((public_handle, private_handle))
    }

    /// C_DestroyObject; refused when `CKA_DESTROYABLE` is false.
    pub fn destroy_object(
        &mut self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<(), Error> {
        let (session, token) = self.enter(handle)?;
        let found = token.visible(object).ok_or(Error::ObjectHandleInvalid)?;
        if found.is_token() && !session.rw {
            return Err(Error::SessionReadOnly);
        }
        if !found.flag(CKA_DESTROYABLE) {
            return Err(Error::ActionProhibited);
        }
        token.objects.remove(&object);
        if let Login::User { keys, .. } = &mut token.login {
            keys.remove(&object);
        }
        token.save()
    }

    /// C_GetAttributeValue: one result per requested type. A private key's `CKA_VALUE` is
    /// `CKR_ATTRIBUTE_SENSITIVE` unless the key is neither sensitive nor unextractable.
    pub fn attribute_values(
        &mut self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        kinds: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<Result<Vec<u8>, Error>>, Error> {
        let (_, token) = self.enter(handle)?;
        let found = token.visible(object).ok_or(Error::ObjectHandleInvalid)?;
        let value = |kind: CK_ATTRIBUTE_TYPE| -> Result<Vec<u8>, Error> {
            if kind == CKA_VALUE && found.class() == Some(CKO_PRIVATE_KEY) {
                if found.flag(CKA_SENSITIVE) || !found.flag(CKA_EXTRACTABLE) {
                    return Err(Error::AttributeSensitive);
                }
                return match &token.login {
                    Login::User { keys, .. } => match keys.get(&object) {
                        Some(key) => Ok(scalar(key)?.to_vec()),
                        None => Err(Error::AttributeSensitive),
                    },
                    _ => Err(Error::AttributeSensitive),
                };
            }
            found.attributes.get(&kind).cloned().ok_or(Error::AttributeTypeInvalid)
        };
        Ok(kinds.iter().map(|k| value(*k)).collect())
    }

    /// C_SetAttributeValue (rules in [`Object::set`]).
    pub fn set_attribute_values(
        &mut self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<(), Error> {
        let (session, token) = self.enter(handle)?;
        let visible = token.visible(object).ok_or(Error::ObjectHandleInvalid)?;
        if visible.is_token() && !session.rw {
            return Err(Error::SessionReadOnly);
        }
        let found = token.objects.get_mut(&object).ok_or(Error::ObjectHandleInvalid)?;
        found.set(template)?;
        if found.is_token() { token.save() } else { Ok(()) }
    }

    /// C_FindObjectsInit: objects whose attributes equal every entry of the template; private
    /// objects only while the user is logged in.
    pub fn find_init(
        &mut self,
        handle: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<(), Error> {
        let (session, token) = self.enter(handle)?;
        if session.find.is_some() {
            return Err(Error::OperationActive);
        }
        let found: Vec<_> = token
            .objects
            .keys()
            .filter(|h| token.visible(**h).is_some_and(|o| o.matches(template)))
            .copied()
            .collect();
        session.find = Some(found.into_iter());
        Ok(())
    }

    /// C_FindObjects: up to `max` more handles.
    pub fn find(
        &mut self,
        handle: CK_SESSION_HANDLE,
        max: usize,
    ) -> Result<Vec<CK_OBJECT_HANDLE>, Error> {
        let (session, _) = self.enter(handle)?;
        let find = session.find.as_mut().ok_or(Error::OperationNotInitialized)?;
        Ok(find.take(max).collect())
    }

    /// C_FindObjectsFinal.
    pub fn find_final(&mut self, handle: CK_SESSION_HANDLE) -> Result<(), Error> {
        let (session, _) = self.enter(handle)?;
        session.find.take().map(drop).ok_or(Error::OperationNotInitialized)
    }

    /// C_SignInit.
    pub fn sign_init(
        &mut self,
        handle: CK_SESSION_HANDLE,
        code: CK_MECHANISM_TYPE,
        parameter: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), Error> {
        let (session, token) = self.enter(handle)?;
        if session.sign.is_some() {
            return Err(Error::OperationActive);
        }
        let mechanism = SignMechanism::from_code(code).ok_or(Error::MechanismInvalid)?;
        if !parameter.is_empty() {
            return Err(Error::MechanismParamInvalid);
        }
        let object = token.visible(key).ok_or(Error::KeyHandleInvalid)?;
        if !object.is_sm2(CKO_PRIVATE_KEY) {
            return Err(Error::KeyTypeInconsistent);
        }
        if !object.flag(CKA_SIGN) {
            return Err(Error::KeyFunctionNotPermitted);
        }
        if !object.allows(code) {
            return Err(Error::MechanismInvalid);
        }
        if !token.user_logged_in() {
            return Err(Error::UserNotLoggedIn);
        }
        session.sign =
            Some(SignOp { mechanism, key, data: Vec::new(), multipart: false, signature: None });
        Ok(())
    }

    /// C_Sign: single-part.
    pub fn sign(
        &mut self,
        handle: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Result<Output, Error> {
        self.finish_sign(handle, Some(data), capacity)
    }

    /// C_SignUpdate: accumulates the message (the token hashes at the end).
    pub fn sign_update(&mut self, handle: CK_SESSION_HANDLE, data: &[u8]) -> Result<(), Error> {
        let (session, _) = self.enter(handle)?;
        let op = session.sign.as_mut().ok_or(Error::OperationNotInitialized)?;
        if !op.mechanism.hashes() {
            // The raw mechanism signs one 32-byte `e`: single-part only.
            session.sign = None;
            return Err(Error::KeyFunctionNotPermitted);
        }
        op.multipart = true;
        op.data.extend_from_slice(data);
        Ok(())
    }

    /// C_SignFinal.
    pub fn sign_final(
        &mut self,
        handle: CK_SESSION_HANDLE,
        capacity: Option<usize>,
    ) -> Result<Output, Error> {
        self.finish_sign(handle, None, capacity)
    }

    fn finish_sign(
        &mut self,
        handle: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        capacity: Option<usize>,
    ) -> Result<Output, Error> {
        let period = self.config.faults.device_error_period();
        let every = self.config.faults.reset_every;
        let counters = &mut self.counters;
        let (session, token) =
            enter(&mut self.sessions, &mut self.tokens, counters, every, handle)?;
        let op = session.sign.as_mut().ok_or(Error::OperationNotInitialized)?;
        let computed = match (&op.signature, data, op.multipart) {
            (Some(signature), _, _) => Ok((signature.clone(), false)),
            // C_Sign cannot finish a multi-part operation, nor C_SignFinal a single-part one.
            (None, Some(_), true) => Err(Error::OperationActive),
            (None, data, _) => {
                let message = data.unwrap_or(&op.data);
                compute_signature(op, message, token).map(|s| (s, true))
            }
        };
        let (signature, fresh) = match computed {
            Ok(c) => c,
            Err(e) => {
                session.sign = None;
                return Err(e);
            }
        };
        if fresh {
            counters.latency_pending = true;
            counters.signatures += 1;
            if period != 0 && counters.signatures % period == 0 {
                session.sign = None;
                return Err(Error::DeviceError);
            }
        }
        let output = deliver(&signature, capacity);
        match output {
            Output::Bytes(_) => session.sign = None,
            _ => {
                if let Some(op) = session.sign.as_mut() {
                    op.signature = Some(signature);
                }
            }
        }
        Ok(output)
    }

    /// C_VerifyInit.
    pub fn verify_init(
        &mut self,
        handle: CK_SESSION_HANDLE,
        code: CK_MECHANISM_TYPE,
        parameter: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), Error> {
        let (session, token) = self.enter(handle)?;
        if session.verify.is_some() {
            return Err(Error::OperationActive);
        }
        let mechanism = SignMechanism::from_code(code).ok_or(Error::MechanismInvalid)?;
        if !parameter.is_empty() {
            return Err(Error::MechanismParamInvalid);
        }
        let object = token.visible(key).ok_or(Error::KeyHandleInvalid)?;
        if !object.is_sm2(CKO_PUBLIC_KEY) {
            return Err(Error::KeyTypeInconsistent);
        }
        if !object.flag(CKA_VERIFY) {
            return Err(Error::KeyFunctionNotPermitted);
        }
        if !object.allows(code) {
            return Err(Error::MechanismInvalid);
        }
        let key = public_key(object)?;
        session.verify = Some(VerifyOp { mechanism, key, data: Vec::new() });
        Ok(())
    }

    /// C_Verify.
    pub fn verify(
        &mut self,
        handle: CK_SESSION_HANDLE,
        data: &[u8],
        signature: &[u8],
    ) -> Result<(), Error> {
        let (session, _) = self.enter(handle)?;
        let op = session.verify.take().ok_or(Error::OperationNotInitialized)?;
        check_signature(&op, data, signature)
    }

    /// C_VerifyUpdate.
    pub fn verify_update(&mut self, handle: CK_SESSION_HANDLE, data: &[u8]) -> Result<(), Error> {
        let (session, _) = self.enter(handle)?;
        let op = session.verify.as_mut().ok_or(Error::OperationNotInitialized)?;
        if !op.mechanism.hashes() {
            session.verify = None;
            return Err(Error::KeyFunctionNotPermitted);
        }
        op.data.extend_from_slice(data);
        Ok(())
    }

    /// C_VerifyFinal.
    pub fn verify_final(
        &mut self,
        handle: CK_SESSION_HANDLE,
        signature: &[u8],
    ) -> Result<(), Error> {
        let (session, _) = self.enter(handle)?;
        let op = session.verify.take().ok_or(Error::OperationNotInitialized)?;
        check_signature(&op, &op.data, signature)
    }

    /// C_DigestInit (SM3 only).
    pub fn digest_init(
        &mut self,
        handle: CK_SESSION_HANDLE,
        code: CK_MECHANISM_TYPE,
        parameter: &[u8],
    ) -> Result<(), Error> {
        let (session, _) = self.enter(handle)?;
        if session.digest.is_some() {
            return Err(Error::OperationActive);
        }
        if code != CKM_SM3 {
            return Err(Error::MechanismInvalid);
        }
        if !parameter.is_empty() {
            return Err(Error::MechanismParamInvalid);
        }
        session.digest = Some(DigestOp { data: Vec::new(), multipart: false });
        Ok(())
    }

    /// C_Digest.
    pub fn digest(
        &mut self,
        handle: CK_SESSION_HANDLE,
        data: &[u8],
        capacity: Option<usize>,
    ) -> Result<Output, Error> {
        self.finish_digest(handle, Some(data), capacity)
    }

    /// C_DigestUpdate.
    pub fn digest_update(&mut self, handle: CK_SESSION_HANDLE, data: &[u8]) -> Result<(), Error> {
        let (session, _) = self.enter(handle)?;
        let op = session.digest.as_mut().ok_or(Error::OperationNotInitialized)?;
        op.multipart = true;
        op.data.extend_from_slice(data);
        Ok(())
    }

    /// C_DigestFinal.
    pub fn digest_final(
        &mut self,
        handle: CK_SESSION_HANDLE,
        capacity: Option<usize>,
    ) -> Result<Output, Error> {
        self.finish_digest(handle, None, capacity)
    }

    fn finish_digest(
        &mut self,
        handle: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        capacity: Option<usize>,
    ) -> Result<Output, Error> {
        let (session, _) = self.enter(handle)?;
        let op = session.digest.as_ref().ok_or(Error::OperationNotInitialized)?;
        if data.is_some() && op.multipart {
            session.digest = None;
            return Err(Error::OperationActive);
        }
        let digest = sm3::hash(data.unwrap_or(&op.data));
        let output = deliver(digest.as_bytes(), capacity);
        if matches!(output, Output::Bytes(_)) {
            session.digest = None;
        }
        Ok(output)
    }

    /// C_GenerateRandom, from the operating system.
    pub fn random(&mut self, handle: CK_SESSION_HANDLE, len: usize) -> Result<Vec<u8>, Error> {
        self.enter(handle)?;
        let mut out = vec![0u8; len];
        getrandom::fill(&mut out).map_err(|_| Error::FunctionFailed)?;
        Ok(out)
    }
}

fn compute_signature(op: &SignOp, message: &[u8], token: &Token) -> Result<Vec<u8>, Error> {
    let Login::User { keys, .. } = &token.login else {
        return Err(Error::UserNotLoggedIn);
    };
    let key = keys.get(&op.key).ok_or(Error::KeyHandleInvalid)?;
    let e = message_digest(op.mechanism, key.public_key(), message)?;
    let signature = key.sign_digest(&e).map_err(|_| Error::FunctionFailed)?;
    Ok(match op.mechanism {
        SignMechanism::Raw | SignMechanism::Sm3Raw => signature.to_raw().to_vec(),
        SignMechanism::Sm3Der => signature.to_der(),
    })
}

fn check_signature(op: &VerifyOp, data: &[u8], signature: &[u8]) -> Result<(), Error> {
    let e = message_digest(op.mechanism, &op.key, data)?;
    let signature = match op.mechanism {
        SignMechanism::Raw | SignMechanism::Sm3Raw => {
            if signature.len() != Signature::RAW_LEN {
                return Err(Error::SignatureLenRange);
            }
            Signature::from_raw(signature).map_err(|_| Error::SignatureInvalid)?
        }
        SignMechanism::Sm3Der => {
            if signature.len() > Signature::DER_MAX_LEN {
                return Err(Error::SignatureLenRange);
            }
            Signature::from_der(signature).map_err(|_| Error::SignatureInvalid)?
        }
    };
    if op.key.verify_digest(&e, &signature).is_valid() {
        Ok(())
    } else {
        Err(Error::SignatureInvalid)
    }
}
