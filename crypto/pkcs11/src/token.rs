use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::KeyType;
use cryptoki::slot::Slot;
use serde::Serialize;

use crate::{Error, Profile};

/// How a token is named in a config. Never by slot number: slot numbers change when a token is
/// re-initialised or another is plugged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    /// `CK_TOKEN_INFO.label`, trimmed.
    Label(String),
    /// `CK_TOKEN_INFO.serialNumber`, trimmed.
    Serial(String),
}

impl std::fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Label(l) => write!(f, "label {l:?}"),
            Self::Serial(s) => write!(f, "serial {s:?}"),
        }
    }
}

/// What `vpbox hsm tokens` shows of a token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenSummary {
    /// The slot it sits in now (informational only).
    pub slot: u64,
    /// Label.
    pub label: String,
    /// Serial number.
    pub serial: String,
    /// Manufacturer ID.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Token flags worth knowing.
    pub flags: Vec<&'static str>,
    /// The built-in profile that matches, if any.
    pub profile: Option<String>,
}

/// The variable naming the vpbox test token's configuration file (its `token_dir`, slots and
/// faults; see `crypto/test-token/README.md`), as `SOFTHSM2_CONF` does for SoftHSM2.
pub const TEST_TOKEN_CONF: &str = "VPBOX_TEST_TOKEN_CONF";

/// What to add to a failed `C_Initialize` of the vpbox test token: it fails without a valid
/// configuration file, and says no more than CKR_GENERAL_ERROR. Nothing for other modules.
fn test_token_hint(module: &Path, conf: Option<&std::ffi::OsStr>) -> String {
    let test_token =
        module.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("vpbox_test_token"));
    if !test_token {
        return String::new();
    }
    match conf {
        None => format!(
            " (the vpbox test token needs {TEST_TOKEN_CONF} to name its TOML configuration, \
             e.g. a file with `token_dir = \"/var/lib/vpbox-token\"`; see \
             crypto/test-token/README.md)"
        ),
        Some(c) => format!(
            " (the vpbox test token could not use its configuration {TEST_TOKEN_CONF}={}: it \
             must exist and hold valid TOML, e.g. `token_dir = \"/var/lib/vpbox-token\"`; see \
             crypto/test-token/README.md)",
            Path::new(c).display()
        ),
    }
}

/// A loaded, initialised PKCS#11 module. Clones share it (one `C_Initialize` per process).
#[derive(Clone)]
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
}

impl Module {
    /// Loads the module at `path` and calls `C_Initialize` with OS locking.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let fail = |reason: String| Error::ModuleLoad { path: path.display().to_string(), reason };
        let ctx = Pkcs11::new(path).map_err(|e| fail(e.to_string()))?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).map_err(|e| {
            let conf = std::env::var_os(TEST_TOKEN_CONF);
            fail(format!("{e}{}", test_token_hint(path, conf.as_deref())))
        })?;
        Ok(Self { ctx, path: path.to_path_buf() })
    }

    /// The cryptoki context.
    pub fn context(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// The module's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token present.
    pub fn tokens(&self) -> Result<Vec<TokenSummary>, Error> {
        let mut out = Vec::new();
        for slot in self.ctx.get_slots_with_token()? {
            let info = self.ctx.get_token_info(slot)?;
            let mut flags = Vec::new();
            for (on, name) in [
                (info.token_initialized(), "initialized"),
                (info.user_pin_initialized(), "user-pin-initialized"),
                (info.login_required(), "login-required"),
                (info.user_pin_count_low(), "user-pin-count-low"),
                (info.user_pin_final_try(), "user-pin-final-try"),
                (info.user_pin_locked(), "user-pin-locked"),
                (info.so_pin_locked(), "so-pin-locked"),
                (info.write_protected(), "write-protected"),
            ] {
                if on {
                    flags.push(name);
                }
            }
            out.push(TokenSummary {
                slot: slot.id(),
                label: info.label().trim().to_string(),
                serial: info.serial_number().trim().to_string(),
                manufacturer: info.manufacturer_id().trim().to_string(),
                model: info.model().trim().to_string(),
                flags,
                profile: Profile::for_manufacturer(info.manufacturer_id()).ok().map(|p| p.name),
            });
        }
        Ok(out)
    }

    /// The slot holding the one token that matches `selector`.
    pub fn find(&self, selector: &TokenSelector) -> Result<(Slot, TokenSummary), Error> {
        let tokens = self.tokens()?;
        let mut matching = tokens.into_iter().filter(|t| match selector {
            TokenSelector::Label(l) => &t.label == l,
            TokenSelector::Serial(s) => &t.serial == s,
        });
        let first = matching.next().ok_or_else(|| Error::TokenNotFound(selector.to_string()))?;
        if matching.next().is_some() {
            return Err(Error::AmbiguousToken(selector.to_string()));
        }
        let slot = self
            .ctx
            .get_slots_with_token()?
            .into_iter()
            .find(|s| s.id() == first.slot)
            .ok_or_else(|| Error::TokenNotFound(selector.to_string()))?;
        Ok((slot, first))
    }

    /// Initialises the first uninitialised token as `label` with the security officer's PIN,
    /// then sets the user PIN. Refuses if a token already carries `label` (a re-initialisation
    /// destroys every key on a token: that is done with the vendor's tools, on purpose).
    pub fn init_token(
        &self,
        label: &str,
        so_pin: &crate::Pin,
        user_pin: &crate::Pin,
    ) -> Result<TokenSummary, Error> {
        let tokens = self.tokens()?;
        if tokens.iter().any(|t| t.label == label) {
            return Err(Error::TokenExists(label.to_string()));
        }
        let fresh = tokens
            .iter()
            .find(|t| !t.flags.contains(&"initialized"))
            .ok_or_else(|| Error::TokenNotFound("an uninitialised token".into()))?;
        let slot = self
            .ctx
            .get_slots_with_token()?
            .into_iter()
            .find(|s| s.id() == fresh.slot)
            .ok_or_else(|| Error::TokenNotFound("an uninitialised token".into()))?;
        self.ctx.init_token(slot, &so_pin.auth(), label)?;
        let session = self.ctx.open_rw_session(slot)?;
        session.login(cryptoki::session::UserType::So, Some(&so_pin.auth()))?;
        session.init_pin(&user_pin.auth())?;
        session.logout()?;
        drop(session);
        self.find(&TokenSelector::Label(label.to_string())).map(|(_, t)| t)
    }

    /// Whether the token in `slot` supports mechanism `code`, asked with
    /// `C_GetMechanismInfo` (`C_GetMechanismList` through cryptoki drops vendor codes).
    pub fn supports(&self, slot: Slot, code: u64) -> bool {
        mechanism_type(code).is_ok_and(|m| self.ctx.get_mechanism_info(slot, m).is_ok())
    }
}

pub(crate) fn mechanism_type(code: u64) -> Result<MechanismType, Error> {
    let r = if code >= 0x8000_0000 {
        MechanismType::new_vendor_defined(code)
    } else {
        MechanismType::try_from(code)
    };
    r.map_err(|e| Error::Profile(format!("mechanism 0x{code:x}: {e}")))
}

pub(crate) fn key_type(code: u64) -> Result<KeyType, Error> {
    let r = if code >= 0x8000_0000 {
        KeyType::new_vendor_defined(code)
    } else {
        KeyType::try_from(code)
    };
    r.map_err(|e| Error::Profile(format!("key type 0x{code:x}: {e}")))
}

/// A token found by label or serial, with its vendor profile.
pub struct OpenToken {
    /// The loaded module.
    pub module: Module,
    /// The slot the token is in now.
    pub slot: Slot,
    /// What the token says of itself.
    pub summary: TokenSummary,
    /// Its vendor profile.
    pub profile: Profile,
}

impl OpenToken {
    /// Loads `module`, finds the token, and picks the profile (named, or by manufacturer ID).
    pub fn open(
        module: &Path,
        token: &TokenSelector,
        profile: Option<&str>,
    ) -> Result<Self, Error> {
        Self::in_module(Module::load(module)?, token, profile)
    }

    /// Finds the token in an already loaded module.
    pub fn in_module(
        module: Module,
        token: &TokenSelector,
        profile: Option<&str>,
    ) -> Result<Self, Error> {
        let (slot, summary) = module.find(token)?;
        let profile = match profile {
            Some(name) => Profile::named(name)?,
            None => Profile::for_manufacturer(&summary.manufacturer)?,
        };
        Ok(Self { module, slot, summary, profile })
    }

    /// A session logged in as the user (read-write for key generation and retirement).
    pub fn login(
        &self,
        pin: &crate::Pin,
        read_write: bool,
    ) -> Result<cryptoki::session::Session, Error> {
        let ctx = self.module.context();
        let session = if read_write {
            ctx.open_rw_session(self.slot)?
        } else {
            ctx.open_ro_session(self.slot)?
        };
        crate::signer::login(&session, pin)?;
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::test_token_hint;
    use std::path::Path;

    /// The test token's failed initialisation names the variable it lacks, or the file it
    /// could not use; another module's gets nothing added.
    #[test]
    fn a_test_token_without_its_configuration_says_which_variable() {
        let token = Path::new("/usr/lib/vpbox/libvpbox_test_token.so");
        assert!(test_token_hint(token, None).contains("needs VPBOX_TEST_TOKEN_CONF"));
        let named = test_token_hint(token, Some("/etc/t.toml".as_ref()));
        assert!(named.contains("VPBOX_TEST_TOKEN_CONF=/etc/t.toml"), "{named}");
        assert_eq!(test_token_hint(Path::new("/usr/lib/softhsm/libsofthsm2.so"), None), "");
    }
}
