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
/// Bytes a multi-part operation accumulates, at most (the token hashes at the end).
pub const DATA_MAX: usize = 16 << 20;

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
            return Err(Error::MechanismInvalid);
        }
        if op.data.len() + data.len() > DATA_MAX {
            session.sign = None;
            return Err(Error::DataLenRange);
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
            return Err(Error::MechanismInvalid);
        }
        if op.data.len() + data.len() > DATA_MAX {
            session.verify = None;
            return Err(Error::DataLenRange);
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
        if op.data.len() + data.len() > DATA_MAX {
            session.digest = None;
            return Err(Error::DataLenRange);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::{CKK_SM2, CKM_SM2_RAW, CKM_SM3_SM2, CKM_SM3_SM2_DER};
    use crate::object::{bbool, ulong};

    const SO_PIN: &[u8] = b"87654321";
    const PIN: &[u8] = b"123456";
    const RW: CK_FLAGS = CKF_SERIAL_SESSION | CKF_RW_SESSION;

    fn module_in(dir: &std::path::Path, faults: &str) -> Module {
        let text = format!("token_dir = {:?}\n[faults]\n{faults}", dir.join("token"));
        Module::load(Config::parse(&text).unwrap()).unwrap()
    }

    /// An initialised token with a user PIN, and a read-write session logged in as the user.
    fn ready(faults: &str) -> (tempfile::TempDir, Module, CK_SESSION_HANDLE) {
        let dir = tempfile::tempdir().unwrap();
        let mut m = module_in(dir.path(), faults);
        let slot = m.slot_list()[0];
        m.init_token(slot, SO_PIN, "unit").unwrap();
        let s = m.open_session(slot, RW).unwrap();
        m.login(s, CKU_SO, SO_PIN).unwrap();
        m.init_pin(s, PIN).unwrap();
        m.logout(s).unwrap();
        m.login(s, CKU_USER, PIN).unwrap();
        (dir, m, s)
    }

    fn key_pair(
        m: &mut Module,
        s: CK_SESSION_HANDLE,
        private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
        let public = vec![(CKA_TOKEN, bbool(true)), (CKA_ID, b"k1".to_vec())];
        let mut private_template = vec![(CKA_TOKEN, bbool(true)), (CKA_ID, b"k1".to_vec())];
        private_template.extend_from_slice(private);
        m.generate_key_pair(s, CKM_SM2_KEY_PAIR_GEN, &public, &private_template).unwrap()
    }

    fn public_key_of(m: &mut Module, s: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> PublicKey {
        let point = m.attribute_values(s, object, &[CKA_EC_POINT]).unwrap().remove(0).unwrap();
        assert_eq!(point[..3], [0x04, 0x41, 0x04]);
        PublicKey::from_sec1(&point[2..]).unwrap()
    }

    fn sign(
        m: &mut Module,
        s: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>, Error> {
        m.sign_init(s, mechanism, &[], key)?;
        match m.sign(s, data, Some(128))? {
            Output::Bytes(b) => Ok(b),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_uninitialised_token_has_no_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = module_in(dir.path(), "");
        let slot = m.slot_list()[0];
        assert_eq!(m.open_session(slot, RW), Err(Error::TokenNotRecognized));
        assert_eq!(m.token_info(slot).unwrap().flags & CKF_TOKEN_INITIALIZED, 0);
        assert_eq!(m.open_session(slot + 1, RW), Err(Error::SlotIdInvalid));
    }

    #[test]
    fn token_info_carries_the_vendor_profile() {
        let (_dir, m, _) = ready("");
        let slot = m.slot_list()[0];
        let info = m.token_info(slot).unwrap();
        assert_eq!(&info.manufacturerID, b"vpbox-sansec-compatible         ");
        assert_eq!(&info.model[..9], b"TESTTOKEN");
        assert_eq!(&info.label[..5], b"unit ");
        assert!(info.serialNumber.iter().all(u8::is_ascii_hexdigit));
        let want = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED;
        assert_eq!(info.flags, want);
        assert_eq!(info.ulSessionCount, 1);
        assert!(
            String::from_utf8_lossy(&Module::info().libraryDescription)
                .contains("Sansec-style SM2")
        );
        for code in mechanism::ALL {
            m.mechanism_info(slot, code).unwrap();
        }
        assert_eq!(m.mechanism_info(slot, CKM_ECDSA).err(), Some(Error::MechanismInvalid));
    }

    /// GB/T 32918.2 §6.1: the raw mechanism signs the given `e`; the SM3 mechanisms compute
    /// `e = SM3(Z‖M)` with the default ID, so the software verifier accepts the message itself.
    #[test]
    fn signatures_verify_in_software_and_on_the_token() {
        let (_dir, mut m, s) = ready("");
        let (public, private) = key_pair(&mut m, s, &[]);
        let key = public_key_of(&mut m, s, public);
        assert_eq!(public_key_of(&mut m, s, private), key, "CKA_EC_POINT on the private key");

        let e = sm3::hash(b"e");
        let raw = sign(&mut m, s, CKM_SM2_RAW, private, e.as_bytes()).unwrap();
        assert!(key.verify_digest(&e, &Signature::from_raw(&raw).unwrap()).is_valid());
        assert_eq!(sign(&mut m, s, CKM_SM2_RAW, private, b"short"), Err(Error::DataLenRange));

        let raw = sign(&mut m, s, CKM_SM3_SM2, private, b"message").unwrap();
        assert!(key.verify(DEFAULT_ID, b"message", &Signature::from_raw(&raw).unwrap()).is_valid());
        let der = sign(&mut m, s, CKM_SM3_SM2_DER, private, b"message").unwrap();
        assert!(key.verify(DEFAULT_ID, b"message", &Signature::from_der(&der).unwrap()).is_valid());

        m.verify_init(s, CKM_SM3_SM2_DER, &[], public).unwrap();
        m.verify(s, b"message", &der).unwrap();
        m.verify_init(s, CKM_SM3_SM2, &[], public).unwrap();
        assert_eq!(m.verify(s, b"other", &raw), Err(Error::SignatureInvalid));
        m.verify_init(s, CKM_SM3_SM2, &[], public).unwrap();
        assert_eq!(m.verify(s, b"message", &raw[..63]), Err(Error::SignatureLenRange));
    }

    /// v2.40 §5.2: a null buffer asks for the length, a short one gets CKR_BUFFER_TOO_SMALL,
    /// neither ends the operation, and the signature fetched is the one computed first.
    #[test]
    fn sign_follows_the_two_call_convention() {
        let (_dir, mut m, s) = ready("");
        let (_, private) = key_pair(&mut m, s, &[]);
        m.sign_init(s, CKM_SM3_SM2_DER, &[], private).unwrap();
        let Output::Length(n) = m.sign(s, b"m", None).unwrap() else { panic!() };
        assert_eq!(m.sign(s, b"m", Some(n - 1)).unwrap(), Output::TooSmall(n));
        let Output::Bytes(sig) = m.sign(s, b"m", Some(n)).unwrap() else { panic!() };
        assert_eq!(sig.len(), n);
        assert_eq!(m.sign(s, b"m", Some(n)), Err(Error::OperationNotInitialized));
    }

    #[test]
    fn multi_part_signing_equals_single_part() {
        let (_dir, mut m, s) = ready("");
        let (public, private) = key_pair(&mut m, s, &[]);
        m.sign_init(s, CKM_SM3_SM2, &[], private).unwrap();
        m.sign_update(s, b"mess").unwrap();
        m.sign_update(s, b"age").unwrap();
        let Output::Bytes(sig) = m.sign_final(s, Some(64)).unwrap() else { panic!() };
        m.verify_init(s, CKM_SM3_SM2, &[], public).unwrap();
        m.verify(s, b"message", &sig).unwrap();
        m.sign_init(s, CKM_SM2_RAW, &[], private).unwrap();
        assert_eq!(m.sign_update(s, b"x"), Err(Error::MechanismInvalid));
        m.sign_init(s, CKM_SM3_SM2, &[], private).unwrap();
        assert_eq!(m.sign_update(s, &vec![0; DATA_MAX + 1]), Err(Error::DataLenRange));
        assert_eq!(m.sign_final(s, None), Err(Error::OperationNotInitialized));
    }

    #[test]
    fn digest_is_sm3() {
        let (_dir, mut m, s) = ready("");
        m.digest_init(s, CKM_SM3, &[]).unwrap();
        assert_eq!(
            m.digest(s, b"abc", Some(32)).unwrap(),
            Output::Bytes(sm3::hash(b"abc").0.to_vec())
        );
        m.digest_init(s, CKM_SM3, &[]).unwrap();
        m.digest_update(s, b"a").unwrap();
        m.digest_update(s, b"bc").unwrap();
        assert_eq!(
            m.digest_final(s, Some(32)).unwrap(),
            Output::Bytes(sm3::hash(b"abc").0.to_vec())
        );
        assert_eq!(m.digest_init(s, CKM_SHA256, &[]), Err(Error::MechanismInvalid));
    }

    #[test]
    fn key_policy_is_enforced() {
        let (_dir, mut m, s) = ready("");
        let (_, private) = key_pair(&mut m, s, &[]);
        let values =
            m.attribute_values(s, private, &[CKA_VALUE, CKA_SENSITIVE, CKA_MODULUS]).unwrap();
        assert_eq!(values[0], Err(Error::AttributeSensitive));
        assert_eq!(values[1], Ok(bbool(true)));
        assert_eq!(values[2], Err(Error::AttributeTypeInvalid));
        let set =
            |m: &mut Module, kind, on| m.set_attribute_values(s, private, &vec![(kind, bbool(on))]);
        assert_eq!(set(&mut m, CKA_EXTRACTABLE, true), Err(Error::AttributeReadOnly));
        assert_eq!(set(&mut m, CKA_SENSITIVE, false), Err(Error::AttributeReadOnly));
        set(&mut m, CKA_SIGN, false).unwrap();
        assert_eq!(m.sign_init(s, CKM_SM2_RAW, &[], private), Err(Error::KeyFunctionNotPermitted));

        let (_, locked) =
            key_pair(&mut m, s, &[(CKA_DESTROYABLE, bbool(false)), (CKA_MODIFIABLE, bbool(false))]);
        assert_eq!(m.destroy_object(s, locked), Err(Error::ActionProhibited));
        assert_eq!(
            m.set_attribute_values(s, locked, &vec![(CKA_LABEL, b"x".to_vec())]),
            Err(Error::ActionProhibited)
        );
        m.destroy_object(s, private).unwrap();
        assert_eq!(m.sign_init(s, CKM_SM2_RAW, &[], private), Err(Error::KeyHandleInvalid));
    }

    #[test]
    fn an_extractable_key_reveals_its_value() {
        let (_dir, mut m, s) = ready("");
        let template = [(CKA_SENSITIVE, bbool(false)), (CKA_EXTRACTABLE, bbool(true))];
        let (public, private) = key_pair(&mut m, s, &template);
        let value = m.attribute_values(s, private, &[CKA_VALUE]).unwrap().remove(0).unwrap();
        let key = SecretKey::from_bytes(&value).unwrap();
        assert_eq!(*key.public_key(), public_key_of(&mut m, s, public));
        let flags =
            m.attribute_values(s, private, &[CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE]).unwrap();
        assert_eq!(flags, vec![Ok(bbool(false)), Ok(bbool(false))]);
    }

    #[test]
    fn private_objects_are_invisible_without_login() {
        let (_dir, mut m, s) = ready("");
        let (public, private) = key_pair(&mut m, s, &[]);
        let by_id = vec![(CKA_ID, b"k1".to_vec())];
        let find = |m: &mut Module, template: &Template| {
            m.find_init(s, template).unwrap();
            let found = m.find(s, 10).unwrap();
            m.find_final(s).unwrap();
            found
        };
        assert_eq!(find(&mut m, &by_id), vec![public, private]);
        let private_sm2 = vec![(CKA_CLASS, ulong(CKO_PRIVATE_KEY)), (CKA_KEY_TYPE, ulong(CKK_SM2))];
        assert_eq!(find(&mut m, &private_sm2), vec![private]);
        m.logout(s).unwrap();
        assert_eq!(find(&mut m, &by_id), vec![public]);
        assert_eq!(m.attribute_values(s, private, &[CKA_ID]), Err(Error::ObjectHandleInvalid));
        assert_eq!(m.sign_init(s, CKM_SM2_RAW, &[], private), Err(Error::KeyHandleInvalid));
    }

    #[test]
    fn session_objects_vanish_with_their_session() {
        let (_dir, mut m, s) = ready("");
        let slot = m.slot_list()[0];
        let other = m.open_session(slot, RW).unwrap();
        let (public, _) =
            m.generate_key_pair(other, CKM_SM2_KEY_PAIR_GEN, &vec![], &vec![]).unwrap();
        assert!(m.attribute_values(s, public, &[CKA_ID]).is_ok());
        m.close_session(other).unwrap();
        assert_eq!(m.attribute_values(s, public, &[CKA_ID]), Err(Error::ObjectHandleInvalid));
    }

    #[test]
    fn login_rules_follow_the_session_states() {
        let (_dir, mut m, s) = ready("");
        let slot = m.slot_list()[0];
        assert_eq!(m.login(s, CKU_USER, PIN), Err(Error::UserAlreadyLoggedIn));
        assert_eq!(m.login(s, CKU_SO, SO_PIN), Err(Error::AnotherUserLoggedIn));
        assert_eq!(m.session_info(s).unwrap().state, CKS_RW_USER_FUNCTIONS);
        let ro = m.open_session(slot, CKF_SERIAL_SESSION).unwrap();
        assert_eq!(m.session_info(ro).unwrap().state, CKS_RO_USER_FUNCTIONS);
        assert_eq!(m.open_session(slot, CKF_RW_SESSION), Err(Error::ParallelNotSupported));
        m.logout(s).unwrap();
        assert_eq!(m.login(s, CKU_SO, SO_PIN), Err(Error::SessionReadOnlyExists));
        assert_eq!(m.login(s, 7, PIN), Err(Error::UserTypeInvalid));
        // Closing the last session logs out (v2.40 §5.6 C_CloseSession).
        m.login(s, CKU_USER, PIN).unwrap();
        m.close_all_sessions(slot).unwrap();
        let s = m.open_session(slot, RW).unwrap();
        assert_eq!(m.session_info(s).unwrap().state, CKS_RW_PUBLIC_SESSION);
        assert_eq!(m.init_token(slot, SO_PIN, "x"), Err(Error::SessionExists));
    }

    #[test]
    fn wrong_pins_lock_the_user_pin_until_the_so_resets_it() {
        let (dir, mut m, s) = ready("pin_lockout = 3");
        let slot = m.slot_list()[0];
        m.logout(s).unwrap();
        assert_eq!(m.login(s, CKU_USER, b"000000"), Err(Error::PinIncorrect));
        // A right PIN resets the counter.
        m.login(s, CKU_USER, PIN).unwrap();
        m.logout(s).unwrap();
        for _ in 0..2 {
            assert_eq!(m.login(s, CKU_USER, b"000000"), Err(Error::PinIncorrect));
        }
        assert_ne!(m.token_info(slot).unwrap().flags & CKF_USER_PIN_FINAL_TRY, 0);
        assert_eq!(m.login(s, CKU_USER, b"000000"), Err(Error::PinIncorrect));
        assert_eq!(m.login(s, CKU_USER, PIN), Err(Error::PinLocked));
        assert_ne!(m.token_info(slot).unwrap().flags & CKF_USER_PIN_LOCKED, 0);
        drop(m);
        // The lock is persisted.
        let mut m = module_in(dir.path(), "pin_lockout = 3");
        let slot = m.slot_list()[0];
        let s = m.open_session(slot, RW).unwrap();
        assert_eq!(m.login(s, CKU_USER, PIN), Err(Error::PinLocked));
        m.login(s, CKU_SO, SO_PIN).unwrap();
        m.init_pin(s, b"24682468").unwrap();
        m.logout(s).unwrap();
        m.login(s, CKU_USER, b"24682468").unwrap();
    }

    #[test]
    fn keys_survive_a_restart_and_a_pin_change() {
        let (dir, mut m, s) = ready("");
        let (public, private) = key_pair(&mut m, s, &[]);
        let key = public_key_of(&mut m, s, public);
        m.set_pin(s, PIN, b"abcdef").unwrap();
        drop(m);
        let file = std::fs::read_to_string(dir.path().join("token/slot-0/token.json")).unwrap();
        assert!(!file.contains("123456") && !file.contains(&hex::encode(PIN)));

        let mut m = module_in(dir.path(), "");
        let slot = m.slot_list()[0];
        let s = m.open_session(slot, RW).unwrap();
        assert_eq!(m.login(s, CKU_USER, PIN), Err(Error::PinIncorrect));
        m.login(s, CKU_USER, b"abcdef").unwrap();
        let raw = sign(&mut m, s, CKM_SM3_SM2, private, b"after restart").unwrap();
        let raw = Signature::from_raw(&raw).unwrap();
        assert!(key.verify(DEFAULT_ID, b"after restart", &raw).is_valid());
    }

    #[test]
    fn re_initialisation_wipes_objects_and_changes_the_slot_id() {
        let (dir, mut m, s) = ready("");
        key_pair(&mut m, s, &[]);
        let before = m.token_info(m.slot_list()[0]).unwrap();
        let old_slot = m.slot_list()[0];
        m.close_session(s).unwrap();
        assert_eq!(m.init_token(old_slot, b"wrong-pin", "unit"), Err(Error::PinIncorrect));
        m.init_token(old_slot, SO_PIN, "unit").unwrap();
        drop(m);
        let mut m = module_in(dir.path(), "");
        let slot = m.slot_list()[0];
        assert_ne!(slot, old_slot);
        let after = m.token_info(slot).unwrap();
        assert_eq!((after.label, after.serialNumber), (before.label, before.serialNumber));
        assert_eq!(after.flags & CKF_USER_PIN_INITIALIZED, 0);
        let s = m.open_session(slot, RW).unwrap();
        m.find_init(s, &vec![]).unwrap();
        assert!(m.find(s, 10).unwrap().is_empty());
    }

    #[test]
    fn n5_reset_every_invalidates_sessions_and_login() {
        let (_dir, mut m, s) = ready("reset_every = 5");
        // `ready` left operations pending; start from a fresh count.
        m.reset();
        let slot = m.slot_list()[0];
        let s2 = m.open_session(slot, RW).unwrap();
        assert_ne!(s, s2);
        m.login(s2, CKU_USER, PIN).unwrap();
        for _ in 0..4 {
            m.session_info(s2).unwrap();
            assert_eq!(m.after_call(), None);
        }
        assert!(m.sessions.is_empty(), "the 5th operation reset the token");
        assert_eq!(m.session_info(s2).err(), Some(Error::SessionHandleInvalid));
        let s3 = m.open_session(slot, RW).unwrap();
        assert_eq!(m.session_info(s3).unwrap().state, CKS_RW_PUBLIC_SESSION);
    }

    #[test]
    fn device_errors_hit_every_nth_signature() {
        let (_dir, mut m, s) = ready("device_error_rate = 0.34");
        let (_, private) = key_pair(&mut m, s, &[]);
        let results: Vec<_> =
            (0..6).map(|_| sign(&mut m, s, CKM_SM2_RAW, private, &[1; 32]).map(|_| ())).collect();
        let errors: Vec<_> = results.iter().map(|r| r.is_err()).collect();
        assert_eq!(errors, [false, false, true, false, false, true]);
        assert_eq!(results[2], Err(Error::DeviceError));
    }

    #[test]
    fn each_slot_holds_its_own_token() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("token_dir = {:?}\nslots = 2\n", dir.path());
        let mut m = Module::load(Config::parse(&text).unwrap()).unwrap();
        let slots = m.slot_list();
        assert_eq!(slots.len(), 2);
        m.init_token(slots[1], SO_PIN, "second").unwrap();
        assert_eq!(m.open_session(slots[0], RW), Err(Error::TokenNotRecognized));
        let (a, b) = (m.token_info(slots[0]).unwrap(), m.token_info(slots[1]).unwrap());
        assert_ne!(a.serialNumber, b.serialNumber);
        assert_eq!(&b.label[..7], b"second ");
        drop(m);
        let m = Module::load(Config::parse(&text).unwrap()).unwrap();
        let reloaded = m.slot_list();
        assert_eq!(reloaded[0], slots[0]);
        assert_ne!(reloaded[1], slots[1]);
        assert_ne!(reloaded[0], reloaded[1]);
    }
}
