use core::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::Error;

/// A token PIN, zeroized on drop and never printed.
///
/// PINs come from a file that only its owner can read (a `0400` file, or a systemd credential
/// under `$CREDENTIALS_DIRECTORY`), never from argv or the environment.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A PIN from memory (an interactive prompt, a test).
    pub fn new(pin: impl Into<String>) -> Self {
        Self(Zeroizing::new(pin.into()))
    }

    /// Reads a PIN file: refuses one that group or others may read, strips one trailing newline.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::PinSource(format!("{}: {e}", path.display())))?;
        if meta.mode() & 0o077 != 0 {
            return Err(Error::PinSource(format!(
                "{}: mode {:o} lets others read it; chmod 0400",
                path.display(),
                meta.mode() & 0o777
            )));
        }
        let raw = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| Error::PinSource(format!("{}: {e}", path.display())))?,
        );
        let text = std::str::from_utf8(&raw)
            .map_err(|_| Error::PinSource(format!("{}: not UTF-8", path.display())))?;
        let pin = text.strip_suffix('\n').unwrap_or(text);
        let pin = pin.strip_suffix('\r').unwrap_or(pin);
        if pin.is_empty() {
            return Err(Error::PinSource(format!("{}: empty", path.display())));
        }
        Ok(Self::new(pin))
    }

    pub(crate) fn auth(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::from(self.0.as_str())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn pin_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, "123456\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Pin::from_file(&p), Err(Error::PinSource(m)) if m.contains("chmod 0400")));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        let pin = Pin::from_file(&p).unwrap();
        assert_eq!(pin.0.as_str(), "123456");
        assert_eq!(format!("{pin:?}"), "Pin(..)");
    }
}
