//! The token's persistent state: one JSON file per token, replaced atomically on every change.
//!
//! Nothing secret is stored in the clear: PINs only as salted PBKDF2-HMAC-SM3 verifiers, the
//! token's master key wrapped (SM4-GCM) under a key derived from each PIN, and private key
//! scalars sealed (SM4-GCM) under the master key.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use cryptoki_sys::{CK_ATTRIBUTE_TYPE, CK_OBJECT_HANDLE};
use serde::{Deserialize, Serialize};
use vpbox_sm::sm4::{self, Sm4Key};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::kdf;
use crate::object::Object;

/// PBKDF2 iterations for new PIN records (the count is stored with each record).
pub const PIN_ITERATIONS: u32 = 10_000;
const FILE: &str = "token.json";

/// Everything that survives a restart.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// How many times the token was initialised; part of the slot ID.
    pub generation: u64,
    /// The label given to C_InitToken; `None` until then.
    pub label: Option<String>,
    /// The SO PIN.
    pub so: Option<PinRecord>,
    /// The user PIN, once the SO set it.
    pub user: Option<PinRecord>,
    /// Consecutive wrong user PINs.
    pub user_pin_failures: u32,
    /// The next object handle.
    pub next_handle: CK_OBJECT_HANDLE,
    /// Token objects by handle.
    pub objects: BTreeMap<CK_OBJECT_HANDLE, StoredObject>,
}

/// An object as stored: attributes and the sealed secret in hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredObject {
    attributes: BTreeMap<CK_ATTRIBUTE_TYPE, String>,
    sealed: Option<String>,
}

impl StoredObject {
    /// The stored form of a token object.
    pub fn from_object(object: &Object) -> Self {
        Self {
            attributes: object.attributes.iter().map(|(k, v)| (*k, hex::encode(v))).collect(),
            sealed: object.sealed.as_ref().map(hex::encode),
        }
    }

    /// The object back; a file that does not decode is local corruption.
    pub fn to_object(&self) -> Result<Object, Error> {
        let attributes = self
            .attributes
            .iter()
            .map(|(k, v)| hex::decode(v).map(|v| (*k, v)))
            .collect::<Result<_, _>>()
            .map_err(|_| Error::GeneralError)?;
        let sealed =
            self.sealed.as_ref().map(hex::decode).transpose().map_err(|_| Error::GeneralError)?;
        Ok(Object { attributes, sealed, session: None })
    }
}

/// A PIN: a salted, iterated verifier and the master key wrapped under a key derived from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRecord {
    salt: String,
    iterations: u32,
    verifier: String,
    wrapped_master: String,
}

/// The keys one PBKDF2 run over a PIN yields.
struct PinKeys {
    verifier: Zeroizing<[u8; 32]>,
    kek: Sm4Key,
}

fn pin_keys(pin: &[u8], salt: &[u8], iterations: u32) -> Result<PinKeys, Error> {
    let mut derived = Zeroizing::new([0u8; kdf::OUT_LEN]);
    kdf::pbkdf2_sm3(pin, salt, iterations, derived.as_mut());
    let verifier = kdf::hmac_sm3(derived.as_ref(), &[b"vpbox-test-token/pin-verifier"]);
    let kek = kdf::hmac_sm3(derived.as_ref(), &[b"vpbox-test-token/key-encryption-key"]);
    let kek = Sm4Key::from_slice(&kek[..sm4::KEY_LEN]).map_err(|_| Error::GeneralError)?;
    Ok(PinKeys { verifier, kek })
}

impl PinRecord {
    /// A record for `pin` wrapping `master`; `role` binds the wrapping to SO or user.
    pub fn new(pin: &[u8], master: &Sm4Key, role: &str) -> Result<Self, Error> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|_| Error::FunctionFailed)?;
        let keys = pin_keys(pin, &salt, PIN_ITERATIONS)?;
        let wrapped = sm4::seal(&keys.kek, &aad(role), master.expose_secret())
            .map_err(|_| Error::FunctionFailed)?;
        Ok(Self {
            salt: hex::encode(salt),
            iterations: PIN_ITERATIONS,
            verifier: hex::encode(keys.verifier.as_ref()),
            wrapped_master: hex::encode(wrapped),
        })
    }

    /// The master key if `pin` is right, [`Error::PinIncorrect`] if not.
    pub fn open(&self, pin: &[u8], role: &str) -> Result<Sm4Key, Error> {
        let corrupt = |_| Error::GeneralError;
        let salt = hex::decode(&self.salt).map_err(corrupt)?;
        let expected = hex::decode(&self.verifier).map_err(corrupt)?;
        let keys = pin_keys(pin, &salt, self.iterations)?;
        let difference = expected
            .iter()
            .zip(keys.verifier.iter())
            .fold(u8::from(expected.len() != 32), |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return Err(Error::PinIncorrect);
        }
        let wrapped = hex::decode(&self.wrapped_master).map_err(corrupt)?;
        let master = Zeroizing::new(
            sm4::open(&keys.kek, &aad(role), &wrapped).map_err(|_| Error::GeneralError)?,
        );
        Sm4Key::from_slice(&master).map_err(|_| Error::GeneralError)
    }
}

fn aad(role: &str) -> Vec<u8> {
    format!("vpbox-test-token/master-key/{role}").into_bytes()
}

/// Seals a private key scalar for the object `handle`.
pub fn seal_secret(
    master: &Sm4Key,
    handle: CK_OBJECT_HANDLE,
    scalar: &[u8],
) -> Result<Vec<u8>, Error> {
    sm4::seal(master, &secret_aad(handle), scalar).map_err(|_| Error::FunctionFailed)
}

/// Opens what [`seal_secret`] sealed; a failure means corruption or a foreign file.
pub fn open_secret(
    master: &Sm4Key,
    handle: CK_OBJECT_HANDLE,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    sm4::open(master, &secret_aad(handle), sealed)
        .map(Zeroizing::new)
        .map_err(|_| Error::GeneralError)
}

fn secret_aad(handle: CK_OBJECT_HANDLE) -> Vec<u8> {
    format!("vpbox-test-token/sm2-private-key/{handle}").into_bytes()
}

/// Where one token's file lives.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|_| Error::GeneralError)?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// The directory, canonical where possible.
    pub fn dir(&self) -> PathBuf {
        fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone())
    }

    /// The stored state, or a fresh one.
    pub fn load(&self) -> Result<TokenFile, Error> {
        match fs::read(self.dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| Error::GeneralError),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(_) => Err(Error::GeneralError),
        }
    }

    /// Replaces the stored state: write a temporary file, sync it, rename it over the old one.
    pub fn save(&self, file: &TokenFile) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(file).map_err(|_| Error::GeneralError)?;
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(FILE))
        };
        write().map_err(|_| Error::FunctionFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_record_opens_only_with_its_pin_and_role() {
        let master = Sm4Key::generate().unwrap();
        let record = PinRecord::new(b"123456", &master, "user").unwrap();
        let opened = record.open(b"123456", "user").unwrap();
        assert_eq!(opened.expose_secret(), master.expose_secret());
        assert_eq!(record.open(b"654321", "user").unwrap_err(), Error::PinIncorrect);
        assert!(record.open(b"123456", "so").is_err());
        // The file holds neither the PIN nor the master key.
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains(&hex::encode(master.expose_secret())));
        assert!(!json.contains(&hex::encode(b"123456")));
    }

    #[test]
    fn sealed_secrets_are_bound_to_their_handle() {
        let master = Sm4Key::generate().unwrap();
        let sealed = seal_secret(&master, 7, &[9; 32]).unwrap();
        assert_eq!(open_secret(&master, 7, &sealed).unwrap().as_slice(), &[9; 32]);
        assert!(open_secret(&master, 8, &sealed).is_err());
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("slot-0")).unwrap();
        assert_eq!(store.load().unwrap().generation, 0);
        let mut file = TokenFile { generation: 3, label: Some("L".into()), ..TokenFile::default() };
        let mut object = Object::new([(1, vec![1, 2, 3])].into_iter().collect());
        object.sealed = Some(vec![4, 5]);
        file.objects.insert(5, StoredObject::from_object(&object));
        store.save(&file).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.generation, 3);
        assert_eq!(loaded.objects[&5].to_object().unwrap(), object);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.path().join("slot-0/token.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
