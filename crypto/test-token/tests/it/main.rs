//! Integration tests: the built `libvpbox_test_token.so` loaded by path through `cryptoki`, as
//! the signer loads a vendor module, and through OpenSC's `pkcs11-tool`.
//!
//! Isolation: a PKCS#11 module is initialised once per process and reads its configuration
//! from a process-global environment variable, so every scenario runs its token work in a
//! **child process**: the test re-executes this binary with `--exact <its own name>`, a
//! `VPBOX_TEST_TOKEN_CONF` naming a configuration in its own temporary directory, and
//! `VPBOX_IT_PHASE` naming the step to run. Tests therefore stay parallel, and a scenario
//! with several phases (persistence, re-initialisation) gets a fresh process, and a fresh
//! C_Initialize, for each. A child proves it ran by leaving a marker file, so a misspelt test
//! name cannot pass by running nothing.

mod c_abi;
mod faults;
mod pkcs11_tool;
mod token;

use std::path::PathBuf;
use std::process::Command;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

const PHASE_ENV: &str = "VPBOX_IT_PHASE";
const DIR_ENV: &str = "VPBOX_IT_DIR";
const CONF_ENV: &str = "VPBOX_TEST_TOKEN_CONF";

/// The SO PIN every scenario initialises its token with.
pub const SO_PIN: &str = "87654321";
/// The user PIN the SO sets.
pub const USER_PIN: &str = "123456";
/// The token label.
pub const LABEL: &str = "vpbox-it";

/// Sansec vendor codes (pkcs11-sm.md), as the signer will configure them.
pub const CKK_SM2: u64 = 0x8000_0004;
/// SM2 key-pair generation.
pub const CKM_SM2_KEY_PAIR_GEN: u64 = 0x8000_8001;
/// SM3-with-SM2, raw `r‖s`.
pub const CKM_SM3_SM2: u64 = 0x8000_8102;
/// SM3-with-SM2, DER.
pub const CKM_SM3_SM2_DER: u64 = 0x8000_8103;
/// Raw SM2 over a 32-byte `e`.
pub const CKM_SM2_RAW: u64 = 0x8000_8104;
/// SM3 digest.
pub const CKM_SM3: u64 = 0x8000_9001;
/// DER of the SM2 curve OID.
pub const SM2_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];

/// The module under test, found next to this test executable: `target/<profile>/deps/it-…`
/// sits beside `libvpbox_test_token.so` in `deps/`, and cargo also copies it one level up.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("the test binary lives in target/<profile>/deps");
    let candidates = [deps.join("libvpbox_test_token.so"), deps.join("../libvpbox_test_token.so")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libvpbox_test_token.so not found in {candidates:?}"))
        .clone()
}

/// The parent's view of a scenario: a temporary token directory and configuration.
pub struct Scenario {
    dir: tempfile::TempDir,
    test: &'static str,
}

impl Scenario {
    /// A scenario for the test named `test` (its libtest name, `module::function`), with
    /// `faults` as the body of the configuration's `[faults]` table.
    pub fn new(test: &'static str, faults: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_dir = dir.path().join("token");
        let conf = format!("token_dir = {:?}\nslots = 1\n[faults]\n{faults}\n", token_dir);
        std::fs::write(dir.path().join("conf.toml"), conf).expect("write conf");
        Self { dir, test }
    }

    /// The configuration file.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("conf.toml")
    }

    /// A file in the scenario directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `phase` of this test in a child process and checks that it passed.
    pub fn run(&self, phase: &str) {
        let out = Command::new(std::env::current_exe().expect("current_exe"))
            .args([self.test, "--exact", "--nocapture", "--test-threads=1"])
            .env(PHASE_ENV, phase)
            .env(DIR_ENV, self.dir.path())
            .env(CONF_ENV, self.conf())
            .output()
            .expect("spawn the test binary");
        let log = format!(
            "phase {phase} of {}:\n--- stdout\n{}\n--- stderr\n{}",
            self.test,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{log}");
        assert!(self.path(&format!("done-{phase}")).is_file(), "the child ran nothing: {log}");
    }

    /// Runs a command with this scenario's configuration; returns stdout and stderr.
    pub fn command(&self, program: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(program)
            .args(args)
            .env(CONF_ENV, self.conf())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// The child's view: which phase to run, and the scenario's directory.
pub struct Child {
    /// The phase to run.
    pub phase: String,
    /// The scenario directory (shared by all phases and the parent).
    pub dir: PathBuf,
}

impl Child {
    /// A file in the scenario directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Records that the phase ran to the end.
    pub fn done(self) {
        std::fs::write(self.path(&format!("done-{}", self.phase)), b"").expect("marker");
    }
}

/// `Some` when this process is a scenario's child.
pub fn child() -> Option<Child> {
    let phase = std::env::var(PHASE_ENV).ok()?;
    let dir = PathBuf::from(std::env::var_os(DIR_ENV)?);
    Some(Child { phase, dir })
}

/// Loads and initialises the module (OS locking, as the signer does).
pub fn open() -> Pkcs11 {
    let pkcs11 = Pkcs11::new(module_path()).expect("load the module");
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).expect("C_Initialize");
    pkcs11
}

/// The one slot.
pub fn slot(pkcs11: &Pkcs11) -> Slot {
    let slots = pkcs11.get_slots_with_token().expect("C_GetSlotList");
    assert_eq!(slots.len(), 1);
    slots[0]
}

/// A PIN for cryptoki.
pub fn pin(pin: &str) -> AuthPin {
    AuthPin::from(pin)
}

/// C_InitToken, then the SO sets the user PIN.
pub fn init_token(pkcs11: &Pkcs11) -> Slot {
    let slot = slot(pkcs11);
    pkcs11.init_token(slot, &pin(SO_PIN), LABEL).expect("C_InitToken");
    let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    session.login(UserType::So, Some(&pin(SO_PIN))).expect("SO C_Login");
    session.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
    session.logout().expect("C_Logout");
    slot
}

/// A read-write session with the user logged in.
pub fn user_session(pkcs11: &Pkcs11, slot: Slot) -> Session {
    let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    session.login(UserType::User, Some(&pin(USER_PIN))).expect("user C_Login");
    session
}

/// A vendor mechanism without parameters.
pub fn mechanism(code: u64) -> Mechanism<'static> {
    let kind = MechanismType::new_vendor_defined(code).expect("vendor code");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(kind, None))
}

/// `CKK_SM2` for cryptoki.
pub fn sm2_key_type() -> KeyType {
    KeyType::new_vendor_defined(CKK_SM2).expect("vendor key type")
}

/// Generates an SM2 key pair with the key policy of the reference (token, private, sensitive,
/// unextractable, sign only, unmodifiable, uncopyable).
pub fn generate(session: &Session, id: &[u8], label: &str) -> (ObjectHandle, ObjectHandle) {
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(SM2_EC_PARAMS.to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    session
        .generate_key_pair(&mechanism(CKM_SM2_KEY_PAIR_GEN), &public, &private)
        .expect("C_GenerateKeyPair")
}

/// The one object of `class` with `id`.
pub fn find(session: &Session, class: ObjectClass, id: &[u8]) -> ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .expect("C_FindObjects");
    assert_eq!(found.len(), 1, "{class:?} {id:?}");
    found[0]
}

/// `CKA_EC_POINT` as an SM2 public key.
pub fn public_key(session: &Session, key: ObjectHandle) -> vpbox_sm::sm2::PublicKey {
    let attributes = session
        .get_attributes(key, &[cryptoki::object::AttributeType::EcPoint])
        .expect("C_GetAttributeValue");
    let [Attribute::EcPoint(point)] = attributes.as_slice() else { panic!("{attributes:?}") };
    assert_eq!(point[..3], [0x04, 0x41, 0x04], "DER OCTET STRING around 04‖x‖y");
    vpbox_sm::sm2::PublicKey::from_sec1(&point[2..]).expect("an SM2 point")
}

/// The `CKR_*` of a failed call.
pub fn rv<T: std::fmt::Debug>(result: cryptoki::error::Result<T>) -> cryptoki::error::RvError {
    match result {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}
