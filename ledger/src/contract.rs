//! The write-once anchor contract, with the exact answers of the system it replaces
//! (DESIGN.md §1):
//!
//! | call | answer |
//! |---|---|
//! | `put(key, value)` | `(true, "Success")`, or `(false, "the key exist")` — the old value stays |
//! | `get(key)` | `(true, "Success", value)`, or `(false, "the key is not exist", 0x00…00)` |

/// The success message.
pub const SUCCESS: &str = "Success";
/// A put of a key anchored before.
pub const KEY_EXISTS: &str = "the key exist";
/// A get of a key never anchored.
pub const KEY_NOT_EXIST: &str = "the key is not exist";
/// A transaction whose submitter is not admitted at its block (not enrolled, revoked,
/// expired), or an enrollment or CRL the admission policy refused.
pub const NOT_ADMITTED: &str = "the submitter is not admitted";
/// A configuration transaction governance refused (approvals, quorum or the change itself).
pub const CONFIG_REFUSED: &str = "the configuration change is refused";

/// The outcome of one `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Anchored now.
    Success,
    /// The key was anchored before; nothing changed.
    KeyExists,
    /// Refused by admission; nothing changed.
    NotAdmitted,
    /// A configuration change refused by governance; nothing changed.
    ConfigRefused,
}

impl PutOutcome {
    /// The seed's `(bool, message)` pair.
    pub fn answer(self) -> (bool, &'static str) {
        match self {
            Self::Success => (true, SUCCESS),
            Self::KeyExists => (false, KEY_EXISTS),
            Self::NotAdmitted => (false, NOT_ADMITTED),
            Self::ConfigRefused => (false, CONFIG_REFUSED),
        }
    }

    /// The code the block's `results_root` commits to (and a proof bundle carries).
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::KeyExists => 1,
            Self::NotAdmitted => 2,
            Self::ConfigRefused => 3,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Self::Success),
            1 => Some(Self::KeyExists),
            2 => Some(Self::NotAdmitted),
            3 => Some(Self::ConfigRefused),
            _ => None,
        }
    }
}

/// The seed's answer to `get`.
pub fn get_answer(found: Option<[u8; 32]>) -> (bool, &'static str, [u8; 32]) {
    match found {
        Some(v) => (true, SUCCESS, v),
        None => (false, KEY_NOT_EXIST, [0; 32]),
    }
}
