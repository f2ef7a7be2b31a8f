//! The module's configuration: a TOML file named by `VPBOX_TEST_TOKEN_CONF`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The environment variable naming the configuration file (compare `SOFTHSM2_CONF`).
pub const CONF_ENV: &str = "VPBOX_TEST_TOKEN_CONF";
/// Slots are numbered into 4 bits of the slot ID, so at most 16.
pub const SLOTS_MAX: usize = 16;

/// The parsed configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Persistent objects and token state live here, one subdirectory per slot.
    pub token_dir: PathBuf,
    /// Number of slots, each with one token.
    #[serde(default = "one")]
    pub slots: usize,
    /// Fault injection; all off by default.
    #[serde(default)]
    pub faults: Faults,
}

/// Fault injection settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// After every N session operations all sessions become invalid and login is lost, as on a
    /// device reset (0 = never).
    #[serde(default)]
    pub reset_every: u64,
    /// Delay added to each C_Sign / C_SignFinal call that computes a signature.
    #[serde(default)]
    pub latency_ms: u64,
    /// Fraction of signature computations that fail with CKR_DEVICE_ERROR: every
    /// `round(1 / rate)`-th one, so runs are repeatable.
    #[serde(default)]
    pub device_error_rate: f64,
    /// Consecutive wrong user PINs before the PIN locks (persisted).
    #[serde(default = "three")]
    pub pin_lockout: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Self { reset_every: 0, latency_ms: 0, device_error_rate: 0.0, pin_lockout: 3 }
    }
}

fn one() -> usize {
    1
}

fn three() -> u32 {
    3
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The environment variable is not set.
    #[error("{CONF_ENV} is not set")]
    Unset,
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Range(&'static str),
}

impl Config {
    /// Reads the file named by [`CONF_ENV`].
    pub fn from_env() -> Result<Self, ConfigError> {
        let path = std::env::var_os(CONF_ENV).ok_or(ConfigError::Unset)?;
        Self::from_file(Path::new(&path))
    }

    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        if config.slots == 0 || config.slots > SLOTS_MAX {
            return Err(ConfigError::Range("slots must be 1 to 16"));
        }
        let rate = config.faults.device_error_rate;
        if !(0.0..=1.0).contains(&rate) {
            return Err(ConfigError::Range("faults.device_error_rate must be within 0..=1"));
        }
        if config.faults.pin_lockout == 0 {
            return Err(ConfigError::Range("faults.pin_lockout must be at least 1"));
        }
        if config.token_dir.as_os_str().is_empty() {
            return Err(ConfigError::Range("token_dir must not be empty"));
        }
        Ok(config)
    }
}

impl Faults {
    /// Every how many signature computations one fails (0 = never).
    pub fn device_error_period(&self) -> u64 {
        if self.device_error_rate <= 0.0 {
            return 0;
        }
        // The rate is checked to lie in (0, 1], so the period is a small positive number.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let period = (1.0 / self.device_error_rate).round() as u64;
        period.max(1)
    }

    /// The delay added to each signature computation.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_only_the_directory_is_given() {
        let c = Config::parse("token_dir = \"/tmp/t\"").unwrap();
        assert_eq!(c.slots, 1);
        assert_eq!(c.faults, Faults::default());
        assert_eq!(c.faults.pin_lockout, 3);
        assert_eq!(c.faults.device_error_period(), 0);
    }

    #[test]
    fn faults_parse_and_the_error_period_rounds() {
        let c = Config::parse(
            "token_dir = \"/t\"\nslots = 2\n[faults]\nreset_every = 5\nlatency_ms = 7\n\
             device_error_rate = 0.3\npin_lockout = 5\n",
        )
        .unwrap();
        assert_eq!(c.slots, 2);
        assert_eq!(c.faults.reset_every, 5);
        assert_eq!(c.faults.latency(), Duration::from_millis(7));
        assert_eq!(c.faults.device_error_period(), 3);
        assert_eq!(c.faults.pin_lockout, 5);
    }

    #[test]
    fn bad_configurations_are_refused() {
        for text in [
            "",
            "token_dir = 3",
            "token_dir = \"/t\"\nslots = 0",
            "token_dir = \"/t\"\nslots = 17",
            "token_dir = \"/t\"\n[faults]\ndevice_error_rate = 1.5",
            "token_dir = \"/t\"\n[faults]\npin_lockout = 0",
            "token_dir = \"/t\"\nunknown = 1",
        ] {
            assert!(Config::parse(text).is_err(), "{text:?}");
        }
    }
}
